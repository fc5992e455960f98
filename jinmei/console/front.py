"""The console's front door: who is asking, and whether they may — the same in one process and
in the parent of ``[ingest] workers``.

:class:`Front` owns the sessions, the login form and its limiter, the language cookie, the
static files, and the authorization of every request, in this order: a session (else the login
page, or 403 for a POST); on a POST the session's CSRF token (else 403); the mine among the
user's (else 403); for a POST, a role that may act (a regulator never may: 403) and a known
form (else 404). Only then does a subclass answer: :meth:`Front._cards` gives the overview's
card of each mine, :meth:`Front._mine` the pages and forms of one mine —
:class:`jinmei.console.app.Console` from the service in this process,
:class:`jinmei.console.relay.RelayConsole` (the workers' parent) by asking the worker that owns
the mine, which checks everything again (see ``relay.py``).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from html import escape
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler

from config.model import ConsoleUser, Deployment, Mine
from jinmei.console import assets
from jinmei.console.accounts import LoginLimiter, Session, Sessions, authenticate
from jinmei.console.pages import Text, form, page

__all__ = ["CSRF_HEADER", "FORMS", "KEY_HEADER", "USER_HEADER", "Front", "Refused", "Request",
           "local_target"]

log = logging.getLogger(__name__)

MAX_FORM = 16_384  # bytes: the largest form the console takes
SECURITY = (("Content-Security-Policy",
             "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"))
FORMS = ("ack", "cause", "silence", "unsilence")  # POST /console/mine/<id>/<form>
# How the workers' parent vouches for its session to a worker's console (jinmei.console.relay)
KEY_HEADER, USER_HEADER, CSRF_HEADER = "X-Jinmei-Worker-Key", "X-Jinmei-User", "X-Jinmei-Csrf"


class Request:
    """What a handler needs of one HTTP request."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self.handler = handler
        url = urllib.parse.urlsplit(handler.path)
        self.path = url.path
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        cookies = SimpleCookie(handler.headers.get("Cookie", ""))
        self.cookies = {k: m.value for k, m in cookies.items()}
        self.address = handler.client_address[0]
        self.tls = handler.headers.get("X-Forwarded-Proto", "") == "https"
        self.form: dict[str, str] = {}
        length = handler.headers.get("Content-Length") or "0"
        size = int(length) if length.isdigit() else MAX_FORM + 1
        self.too_large = size > MAX_FORM  # not read: the connection closes after the answer
        if handler.command == "POST" and not self.too_large:
            raw = handler.rfile.read(size).decode("utf-8", "replace")
            self.form = {k: v[-1] for k, v in
                         urllib.parse.parse_qs(raw, keep_blank_values=True).items()}


def local_target(to: str) -> str:
    """Where a redirect to ``to`` goes: its path and query when the path is one of the
    console's own (``/console`` or under ``/console/``), else ``/console/`` — never another
    site. ``to`` may be a Referer (the language toggle goes back to the page it was clicked
    on), so its scheme and host are dropped; a path starting ``//`` (another host to a
    browser), holding a backslash (``/\\evil.example`` is ``//evil.example`` to a browser) or a
    control character goes to ``/console/``.

    >>> local_target("http://127.0.0.1:8080/console/mine/dayan?done=ok")
    '/console/mine/dayan?done=ok'
    >>> local_target("http://127.0.0.1:8080//evil.example/console/")
    '/console/'
    """
    target = urllib.parse.urlsplit(to)
    path = target.path
    if (not (path == "/console" or path.startswith("/console/")) or "\\" in to
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in to)):
        return "/console/"
    return f"{path}?{target.query}" if target.query else path


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Front:
    """Sessions, login and authorization over the deployment ``deployment()`` returns (a
    reload may replace it); see the module docstring."""

    def __init__(self, deployment: Callable[[], Deployment],
                 clock: Callable[[], float] = time.time) -> None:
        self.deployment, self.clock = deployment, clock
        self.sessions = Sessions(deployment().console.session_max_s)
        self.limiter = LoginLimiter()
        self._closing = threading.Event()

    @property
    def users(self) -> dict[str, ConsoleUser]:
        """The accounts of the running configuration (a reload may change them)."""
        return {u.name: u for u in self.deployment().console.users}

    @property
    def mines(self) -> dict[str, Mine]:
        return {m.id: m for m in self.deployment().mines}

    def close(self) -> None:
        """End the event streams (the server is stopping)."""
        self._closing.set()

    # ── what a subclass answers ──────────────────────────────────────────────────────────

    def _cards(self, t: Text, user: ConsoleUser, mines: list[Mine]) -> dict[str, str]:
        """The overview's card (HTML) of each of ``mines`` that can be shown now."""
        raise NotImplementedError

    def _mine(self, request: Request, t: Text, mine: Mine, user: ConsoleUser,
              session: Session, action: str) -> None:
        """Answer ``/console/mine/<mine>/<action>``; the request is authorized already."""
        raise NotImplementedError

    def _session(self, request: Request) -> Session | None:
        """The request's session: its cookie's."""
        return self.sessions.get(request.cookies.get("jinmei_session", ""))

    def _end(self, session: Session) -> None:
        """End ``session`` (logout, or its account changed): its event streams stop."""
        self.sessions.end(session.token)

    def _still(self, session: Session) -> bool:
        """Whether ``session`` is still open (an event stream ends when it is not)."""
        return self.sessions.get(session.token) is not None

    # ── dispatch ───────────────────────────────────────────────────────────────────────

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        request = Request(handler)
        t = Text(request.cookies.get("jinmei_lang", "zh"))
        session = None
        try:
            session = self._session(request)
            if session is not None and session.user is not None \
                    and self.users.get(session.user.name) != session.user:
                self._end(session)  # removed or changed by a reload: log in again
                session = None
            self._route(request, t, session)
        except Refused as refused:
            user = session.user if session else None
            body = page(t, str(refused.status), f'<p class="error">{escape(refused.message)}</p>',
                        user=user, csrf=session.csrf if session else "")
            self._send(request, refused.status, body)

    def _route(self, request: Request, t: Text, session: Session | None) -> None:
        path, method = request.path, request.handler.command
        if request.too_large:
            raise Refused(413, f"a form of at most {MAX_FORM} bytes, please")
        if path == "/console/static/console.css":
            return self._send(request, 200, assets.CSS, "text/css; charset=utf-8")
        if path == "/console/static/console.js":
            return self._send(request, 200, assets.JS, "text/javascript; charset=utf-8")
        if path == "/console/lang":
            lang = "en" if request.query.get("to") == "en" else "zh"
            return self._redirect(request, request.handler.headers.get("Referer") or "/console/",
                                  cookie=("jinmei_lang", lang, False))
        if path == "/console/login":
            return self._login(request, t, session)
        if session is None or session.user is None:
            if method == "POST":
                raise Refused(403, "not logged in")
            return self._redirect(request, "/console/login")
        user = session.user
        if method == "POST" and not session.csrf_ok(request.form.get("csrf", "")):
            raise Refused(403, "CSRF token missing or wrong: reload the page and try again")
        if path == "/console/logout" and method == "POST":
            self._end(session)
            return self._send(request, 303, "", headers=(
                ("Location", "/console/login"),
                self._cookie(request, "jinmei_session", "", max_age=0)))
        if path in ("/console/", "/console") and method == "GET":
            return self._send(request, 200, self._overview(t, user, session))
        parts = path.removeprefix("/console/mine/").split("/")
        if not path.startswith("/console/mine/") or parts[0] not in self.mines:
            raise Refused(404, f"no such page: {path}")
        mine = self.mines[parts[0]]
        if not user.sees(mine.id):
            raise Refused(403, f"{user.name} may not see mine {mine.id}")
        action = parts[1] if len(parts) > 1 else ""
        if method == "POST":
            if not user.acts_on(mine.id):
                raise Refused(403, f"{user.name} ({user.role}) may not change anything")
            if action not in FORMS or len(parts) > 2:
                raise Refused(404, f"no such form: {path}")
        return self._mine(request, t, mine, user, session, action)

    def _overview(self, t: Text, user: ConsoleUser, session: Session) -> str:
        visible = [m for m in self.mines.values() if user.sees(m.id)]
        cards = self._cards(t, user, visible)
        body = "".join(cards.get(m.id) or self._unavailable(t, m) for m in visible)
        return page(t, t("overview"), f'<div class="cards">{body}</div>', user=user,
                    csrf=session.csrf, refresh_s=10)

    def _unavailable(self, t: Text, mine: Mine) -> str:
        """The card of a mine whose figures cannot be had now (its worker is down)."""
        return (f'<section class="card" id="mine-{escape(mine.id)}" data-unavailable="1"><h2>'
                f'<a href="/console/mine/{escape(mine.id)}">'
                f'{escape(t.pick((mine.name, mine.name_en)))}</a></h2>'
                f'<p class="error">{t("unavailable")}</p></section>')

    # ── replies ────────────────────────────────────────────────────────────────────────

    def _send(self, request: Request, status: int, body: str,
              content_type: str = "text/html; charset=utf-8",
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = body.encode()
        h = request.handler
        h.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *SECURITY, *headers):
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _cookie(self, request: Request, name: str, value: str, http_only: bool = True,
                max_age: int | None = None) -> tuple[str, str]:
        flags = "; Path=/; SameSite=Strict" + ("; HttpOnly" if http_only else "")
        flags += "; Secure" if request.tls else ""
        flags += f"; Max-Age={max_age}" if max_age is not None else ""
        return "Set-Cookie", f"{name}={value}{flags}"

    def _redirect(self, request: Request, to: str,
                  cookie: tuple[str, str, bool] | None = None) -> None:
        headers = [("Location", local_target(to))]
        if cookie:
            headers.append(self._cookie(request, cookie[0], cookie[1], cookie[2]))
        self._send(request, 303, "", headers=tuple(headers))

    # ── login ──────────────────────────────────────────────────────────────────────────

    def _login(self, request: Request, t: Text, session: Session | None) -> None:
        error = ""
        if request.handler.command == "POST":
            if session is None or not session.csrf_ok(request.form.get("csrf", "")):
                raise Refused(403, "CSRF token missing or wrong: reload the login page")
            name = request.form.get("user", "")
            wait = self.limiter.blocked_for(name, request.address)
            if wait > 0:
                minutes = int(wait // 60) + 1
                msg = (f"登录失败次数过多，请 {minutes} 分钟后再试 / Too many failed logins: "
                       f"try again in {minutes} min")
                return self._send(request, 429, self._login_page(t, session, msg))
            user = authenticate(self.users, name, request.form.get("password", ""))
            if user is not None:
                self.sessions.end(session.token)
                new = self.sessions.new(user)
                log.info("console: %s (%s) logged in from %s", user.name, user.role,
                         request.address)
                cookie = self._cookie(request, "jinmei_session", new.token,
                                      max_age=int(self.deployment().console.session_max_s))
                return self._send(request, 303, "", headers=(("Location", "/console/"), cookie))
            self.limiter.failed(name, request.address)
            log.warning("console: failed login for %r from %s", name, request.address)
            error = "用户名或密码错误 / Wrong user name or password"
            return self._send(request, 401, self._login_page(t, session, error))
        if session is None or session.user is not None:
            session = self.sessions.new(None)
        cookie = self._cookie(request, "jinmei_session", session.token)
        self._send(request, 200, self._login_page(t, session, error), headers=(cookie,))

    def _login_page(self, t: Text, session: Session, error: str) -> str:
        message = f'<p class="error" id="login-error">{escape(error)}</p>' if error else ""
        body = form("/console/login", session.csrf,
                    f'<h2>{t("login")}</h2>{message}'
                    f'<label>{t("user")}<input name="user" id="user" autocomplete="username" '
                    f'required></label><label>{t("password")}<input name="password" '
                    f'id="password" type="password" autocomplete="current-password" required>'
                    f'</label><button type="submit" id="login">{t("login")}</button>',
                    css="login")
        return page(t, t("login"), body)
