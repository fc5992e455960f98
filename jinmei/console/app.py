"""The console's requests: login, overview, mine page, live events, and the dispatcher's forms.

Routes (all under ``/console/``, mounted on the ``[http]`` endpoint; ``/`` redirects here):

========================================  =====================================================
``GET  /console/``                        overview of every mine the user may see
``GET|POST /console/login``               the login form; ``POST /console/logout``
``GET  /console/lang?to=en|zh``           language toggle (a cookie)
``GET  /console/mine/<id>``               areas and points (live), open alerts, silences
``GET  /console/mine/<id>/alerts``        the open-alerts part of the page (fetched on change)
``GET  /console/mine/<id>/events``        server-sent events: ``points`` and ``alerts``
``GET  /console/mine/<id>/history``       alert history, filters ``since``, ``rule``,
                                          ``severity``, ``sensor``
``POST /console/mine/<id>/ack``           acknowledge (``episode``, ``note``)
``POST /console/mine/<id>/cause``         cause and action (``episode``, ``cause``, ``action``)
``POST /console/mine/<id>/silence``       silence (matchers, ``duration``, ``reason``)
``POST /console/mine/<id>/unsilence``     end a silence (``id``)
========================================  =====================================================

Authorization, in this order, on every request: a session (else the login page, or 403 for a
POST); on a POST the session's CSRF token (else 403); the mine among the user's (else 403); for
a POST, a role that may act (a regulator never may: 403). An episode or silence named in a form
must belong to the mine of the URL (else 404), so a dispatcher cannot reach another mine's
alerts through their own mine's address. Every write carries the user's name and the time:
acknowledgements (``alert_ack``), causes and actions (``alert_cause``), silences
(``created_by``/``created_at``).

Responses carry ``Content-Security-Policy: default-src 'self'`` (no inline script, no frames),
``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime
from html import escape
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from alerts.db import StateDB
from alerts.silences import Matchers, SilenceBook
from alerts.wire import Alert
from config.errors import UsageError
from config.model import ConsoleUser, Mine, Registry
from config.readings import ReadingBatch
from jinmei.cli_alerts import SENSOR_RULES, check_matchers, parse_duration
from jinmei.console import assets, pages
from jinmei.console.accounts import LoginLimiter, Session, Sessions, authenticate
from jinmei.console.live import STATES, LiveTable
from jinmei.console.pages import Text, form, local_time, page
from jinmei.service import names_from_limits

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["Console"]

log = logging.getLogger(__name__)

_SEVERITY = {"critical": 0, "alarm": 1, "warning": 2}
_KEEPALIVE_S = 15.0  # an idle event stream says something this often (proxies close silent ones)
_MAX_FORM = 16_384  # bytes: the largest form the console takes
_SECURITY = (("Content-Security-Policy",
              "default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
             ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"))
_HISTORY_LIMIT = 500  # rows on a history page (newest first)


# What kind of place an area is, from its sensors' location types (limits table keys), first
# match wins: a face's area also holds its return and intake roadways.
_AREA_TYPES = ((("longwall", "shearer", "goaf", "face_intake"), ("采煤工作面", "working face")),
               (("heading",), ("掘进工作面", "heading")),
               (("chamber", "pump_station", "switchgear", "coal_bunker", "motor_vicinity"),
                ("硐室", "chamber")))


def area_type(locations: set[str]) -> tuple[str, str]:
    """(Chinese, English) kind of an area whose sensors stand at ``locations``."""
    for prefixes, names in _AREA_TYPES:
        if any(loc.startswith(prefixes) or loc.endswith(prefixes) for loc in locations):
            return names
    return ("巷道及其他", "roadways and other")


class _Request:
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
        size = int(length) if length.isdigit() else _MAX_FORM + 1
        self.too_large = size > _MAX_FORM  # not read: the connection closes after the answer
        if handler.command == "POST" and not self.too_large:
            raw = handler.rfile.read(size).decode("utf-8", "replace")
            self.form = {k: v[-1] for k, v in
                         urllib.parse.parse_qs(raw, keep_blank_values=True).items()}


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Console:
    """The dispatcher console of a running service; see the module docstring."""

    def __init__(self, service: Service, clock: Callable[[], float] = time.time) -> None:
        self.service, self.clock = service, clock
        deployment = service.deployment
        self.sessions = Sessions(deployment.console.session_max_s)
        self.limiter = LoginLimiter()
        self.live = LiveTable(service.pipeline.registry)
        self.state_db = service.record.path  # the alerts state file: silences live there
        self._closing = threading.Event()
        names = names_from_limits(deployment)
        self.kind_names = dict(names.kind)

    @property
    def users(self) -> dict[str, ConsoleUser]:
        """The accounts of the running configuration (a reload may change them)."""
        return {u.name: u for u in self.service.deployment.console.users}

    @property
    def mines(self) -> dict[str, Mine]:
        return {m.id: m for m in self.service.deployment.mines}

    # ── the pipeline's tap ──────────────────────────────────────────────────────────────

    def readings(self, batch: ReadingBatch, registry: Registry) -> None:
        self.live.observe(batch, registry)

    def alerts(self, alerts: list[Alert]) -> None:
        if alerts:
            self.live.alerts_changed({a.mine for a in alerts})

    def close(self) -> None:
        """End the event streams (the server is stopping)."""
        self._closing.set()
        self.live.alerts_changed(set())

    # ── dispatch ───────────────────────────────────────────────────────────────────────

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        request = _Request(handler)
        t = Text(request.cookies.get("jinmei_lang", "zh"))
        session = self.sessions.get(request.cookies.get("jinmei_session", ""))
        if session is not None and session.user is not None \
                and self.users.get(session.user.name) != session.user:
            self.sessions.end(session.token)  # removed or changed by a reload: log in again
            session = None
        try:
            self._route(request, t, session)
        except _Refused as refused:
            user = session.user if session else None
            body = page(t, str(refused.status), f'<p class="error">{escape(refused.message)}</p>',
                        user=user, csrf=session.csrf if session else "")
            self._send(request, refused.status, body)

    def _route(self, request: _Request, t: Text, session: Session | None) -> None:
        path, method = request.path, request.handler.command
        if request.too_large:
            raise _Refused(413, f"a form of at most {_MAX_FORM} bytes, please")
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
                raise _Refused(403, "not logged in")
            return self._redirect(request, "/console/login")
        user = session.user
        if method == "POST" and not session.csrf_ok(request.form.get("csrf", "")):
            raise _Refused(403, "CSRF token missing or wrong: reload the page and try again")
        if path == "/console/logout" and method == "POST":
            self.sessions.end(session.token)
            return self._send(request, 303, "", headers=(
                ("Location", "/console/login"),
                self._cookie(request, "jinmei_session", "", max_age=0)))
        if path in ("/console/", "/console") and method == "GET":
            return self._send(request, 200, self._overview(t, user, session))
        parts = path.removeprefix("/console/mine/").split("/")
        if not path.startswith("/console/mine/") or parts[0] not in self.mines:
            raise _Refused(404, f"no such page: {path}")
        mine = self.mines[parts[0]]
        if not user.sees(mine.id):
            raise _Refused(403, f"{user.name} may not see mine {mine.id}")
        action = parts[1] if len(parts) > 1 else ""
        if method == "POST":
            if not user.acts_on(mine.id):
                raise _Refused(403, f"{user.name} ({user.role}) may not change anything")
            handlers = {"ack": self._ack, "cause": self._cause, "silence": self._silence,
                        "unsilence": self._unsilence}
            if action not in handlers:
                raise _Refused(404, f"no such form: {path}")
            message = handlers[action](request, mine, user)
            return self._redirect(request, f"/console/mine/{mine.id}?done="
                                  f"{urllib.parse.quote(message)}")
        if action == "":
            return self._send(request, 200, self._mine_page(request, t, mine, user, session))
        if action == "alerts":
            return self._send(request, 200, self._alerts(t, mine, user, session))
        if action == "events":
            return self._events(request, t, mine, session)
        if action == "history":
            return self._send(request, 200, self._history(request, t, mine, user, session))
        raise _Refused(404, f"no such page: {path}")

    # ── replies ────────────────────────────────────────────────────────────────────────

    def _send(self, request: _Request, status: int, body: str,
              content_type: str = "text/html; charset=utf-8",
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = body.encode()
        h = request.handler
        h.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store"), *_SECURITY, *headers):
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _cookie(self, request: _Request, name: str, value: str, http_only: bool = True,
                max_age: int | None = None) -> tuple[str, str]:
        flags = "; Path=/; SameSite=Strict" + ("; HttpOnly" if http_only else "")
        flags += "; Secure" if request.tls else ""
        flags += f"; Max-Age={max_age}" if max_age is not None else ""
        return "Set-Cookie", f"{name}={value}{flags}"

    def _redirect(self, request: _Request, to: str,
                  cookie: tuple[str, str, bool] | None = None) -> None:
        target = urllib.parse.urlsplit(to)
        local = target.path or "/console/"  # only ever back to this site
        if target.query:
            local += f"?{target.query}"
        headers = [("Location", local)]
        if cookie:
            headers.append(self._cookie(request, cookie[0], cookie[1], cookie[2]))
        self._send(request, 303, "", headers=tuple(headers))

    # ── login ──────────────────────────────────────────────────────────────────────────

    def _login(self, request: _Request, t: Text, session: Session | None) -> None:
        error = ""
        if request.handler.command == "POST":
            if session is None or not session.csrf_ok(request.form.get("csrf", "")):
                raise _Refused(403, "CSRF token missing or wrong: reload the login page")
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
                                      max_age=int(self.service.deployment.console.session_max_s))
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

    # ── pages ──────────────────────────────────────────────────────────────────────────

    def _indices(self, mine: str) -> np.ndarray:
        return self.live.indices(mine)

    def _open_alerts(self, mine: str | None = None) -> list[Alert]:
        alerts = [a for a in self.service.record.open_episodes()
                  if mine is None or a.mine == mine]
        return sorted(alerts, key=lambda a: (_SEVERITY.get(a.severity, 9), a.started_at, a.id))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _overview(self, t: Text, user: ConsoleUser, session: Session) -> str:
        now = self._now_ms()
        open_by_mine: dict[str, Counter[str]] = defaultdict(Counter)
        for a in self._open_alerts():
            open_by_mine[a.mine][a.severity] += 1
        cards = []
        for mine in self.mines.values():
            if not user.sees(mine.id):
                continue
            indices = self._indices(mine.id)
            states = Counter(STATES[s] for s in self.live.states(indices, now).tolist())
            newest = self.live.newest_ms(indices)
            age = f"{(now - newest) / 1000:.0f} {t('seconds')}" if newest >= 0 else t("never")
            severities = "".join(
                f'<tr><td>{t(sev)}</td><td class="num" data-severity="{sev}">'
                f'{open_by_mine[mine.id][sev]}</td></tr>' for sev in _SEVERITY)
            counted = "".join(
                f'<tr><td>{pages.state_badge(t, st)}</td><td class="num" data-count="{st}">'
                f'{states[st]}</td></tr>' for st in STATES)
            cards.append(
                f'<section class="card" id="mine-{escape(mine.id)}"><h2><a href="/console/mine/'
                f'{escape(mine.id)}">{escape(t.pick((mine.name, mine.name_en)))}</a></h2>'
                f'<table><tr><th colspan="2">{t("open_alerts")}</th></tr>{severities}'
                f'<tr><th colspan="2">{t("points")} ({len(indices)})</th></tr>{counted}'
                f'<tr><td>{t("newest")}</td><td>{local_time(newest, mine.timezone)} '
                f'({t("age")} {age})</td></tr></table></section>')
        body = f'<div class="cards">{"".join(cards)}</div>'
        return page(t, t("overview"), body, user=user, csrf=session.csrf, refresh_s=10)

    def _mine_page(self, request: _Request, t: Text, mine: Mine, user: ConsoleUser,
                   session: Session) -> str:
        now = self._now_ms()
        registry = self.live.registry
        indices = self._indices(mine.id)
        points = {p.index: p for p in self.live.points(indices, now)}
        groups: dict[str, list[str]] = defaultdict(list)
        locations: dict[str, set[str]] = defaultdict(set)
        for sensor in mine.sensors:
            index = registry.index.get(sensor.key)
            if index is None:
                continue
            kind = t.pick(self.kind_names.get(sensor.kind, (sensor.kind, sensor.kind)))
            groups[sensor.area].append(pages.point_row(t, sensor, kind, points[index],
                                                       mine.timezone))
            locations[sensor.area].add(sensor.location)
        alert_seq = self.live.alert_seq.get(mine.id, 0)  # before the list is read (see JS)
        done = request.query.get("done", "")
        flash = f'<p class="flash" id="flash">{escape(done)}</p>' if done else ""
        offset = datetime.now(ZoneInfo(mine.timezone)).strftime("%z")
        body = (f'<h1>{escape(t.pick((mine.name, mine.name_en)))}</h1>'
                f'<p class="note">{t("timezone")}: {escape(mine.timezone)} (UTC{offset[:3]}:'
                f'{offset[3:]}) · {t("live")}'
                + ("" if user.acts_on(mine.id) else f' · <b>{t("read_only")}</b>')
                + f' · <a href="/console/mine/{mine.id}/history">{t("history")}</a></p>{flash}'
                f'<h2>{t("open_alerts")}</h2><p class="flash" id="alerts-changed" hidden>'
                f'{t("alerts_changed")}</p><div id="alerts">'
                f'{self._alerts(t, mine, user, session)}</div>'
                + pages.areas_html(t, [(a, t.pick(area_type(locations[a])), rows)
                                       for a, rows in groups.items()])
                + self._silences(t, mine, user, session))
        base = f"/console/mine/{mine.id}"
        return page(t, mine.name, body, user=user, csrf=session.csrf,
                    data=(("events", f"{base}/events"), ("alerts", f"{base}/alerts"),
                          ("alerts-seq", str(alert_seq))))

    def _alerts(self, t: Text, mine: Mine, user: ConsoleUser, session: Session) -> str:
        alerts = self._open_alerts(mine.id)
        ids = [a.id for a in alerts]
        record = self.service.record
        return pages.alerts_html(t, mine, alerts, record.acknowledgements(ids),
                                 record.causes(ids), may_act=user.acts_on(mine.id),
                                 csrf=session.csrf)

    def _silences(self, t: Text, mine: Mine, user: ConsoleUser, session: Session) -> str:
        now = self._now_ms()
        base = f"/console/mine/{mine.id}"
        db = StateDB(self.state_db)
        try:
            silences = [s for s in SilenceBook(db).all()
                        if s.ends_at > now and s.matchers.mine == mine.id]
        finally:
            db.close()
        rows = []
        for s in silences:
            end = ""
            if user.acts_on(mine.id):
                end = form(f"{base}/unsilence", session.csrf,
                           f'<input type="hidden" name="id" value="{escape(s.id)}">'
                           f'<button type="submit">{t("end_silence")}</button>',
                           confirm=t("end_confirm"))
            rows.append(f'<tr class="silence"><td>{escape(s.matchers.describe())}</td>'
                        f'<td>{local_time(s.starts_at, mine.timezone)} {t("until")} '
                        f'{local_time(s.ends_at, mine.timezone)}</td><td>{escape(s.created_by)} '
                        f'{local_time(s.created_at, mine.timezone)}</td>'
                        f'<td>{escape(s.comment)}</td><td>{end}</td></tr>')
        table = (f'<table><tr><th>matchers</th><th>{t("time")}</th><th>{t("by")}</th>'
                 f'<th>{t("reason")}</th><th></th></tr>{"".join(rows)}</table>'
                 if rows else f'<p>{t("no_silences")}</p>')
        create = ""
        if user.acts_on(mine.id):
            sensors = mine.sensors
            create = form(
                f"{base}/silence", session.csrf,
                f'{t("sensor")} {pages.options(t, "sensor", [s.id for s in sensors])} '
                f'{t("kind")} {pages.options(t, "kind", sorted({s.kind for s in sensors}))} '
                f'{t("area")} {pages.options(t, "area", sorted({s.area for s in sensors}))} '
                f'{t("rule")} {pages.options(t, "rule", SENSOR_RULES)} '
                f'{t("severity")} {pages.options(t, "severity", list(_SEVERITY))} '
                f'<input name="duration" placeholder="{t("duration")}" required size="22">'
                f'<input name="reason" placeholder="{t("reason")}" required>'
                f'<button type="submit">{t("create_silence")}</button>')
        return (f'<h2>{t("silences")}</h2><p class="note" id="silence-note">'
                f'{t("silence_note")}</p>{table}{create}')

    def _history(self, request: _Request, t: Text, mine: Mine, user: ConsoleUser,
                 session: Session) -> str:
        q = request.query
        since_ms = None
        if q.get("since"):
            try:
                day = datetime.strptime(q["since"], "%Y-%m-%d")
            except ValueError:
                raise _Refused(400, f"since: not a date {q['since']!r} (YYYY-MM-DD)") from None
            since_ms = int(day.replace(tzinfo=ZoneInfo(mine.timezone)).timestamp() * 1000)
        rows = [a for a in self.service.record.history(mine.id, since_ms)
                if all(not q.get(k) or getattr(a, k) == q[k]
                       for k in ("rule", "severity", "sensor"))]
        rows = rows[::-1][:_HISTORY_LIMIT]
        ids = list({a.id for a in rows})
        acks = self.service.record.acknowledgements(ids)
        causes = self.service.record.causes(ids)
        base = f"/console/mine/{mine.id}"
        lines = []
        for a in rows:
            ack, cause = acks.get(a.id), causes.get(a.id)
            acked = f"{escape(ack[0])} {local_time(ack[1], mine.timezone)} {escape(ack[2])}" \
                if ack else ""
            said = (f"{escape(cause[0])}; {escape(cause[1])} ({escape(cause[2])} "
                    f"{local_time(cause[3], mine.timezone)})" if cause else "")
            if user.acts_on(mine.id) and a.state == "resolved":
                said += pages.cause_form(t, base, a.id, session.csrf, cause)
            lines.append(f'<tr class="sev-{escape(a.severity)}"><td>'
                         f'{local_time(a.ts, mine.timezone)}</td><td>{t(a.state)}</td>'
                         f'<td>{t(a.severity)}</td><td>{escape(a.sensor)}</td>'
                         f'<td>{escape(a.rule)}</td><td>{escape(t.message(a))}</td>'
                         f'<td>{acked}</td><td>{said}</td></tr>')
        filters = (f'<form method="get" class="inline">{t("since")} <input name="since" '
                   f'type="date" value="{escape(q.get("since", ""))}"> '
                   f'{t("sensor")} {pages.options(t, "sensor", [s.id for s in mine.sensors])} '
                   f'{t("rule")} {pages.options(t, "rule", SENSOR_RULES)} '
                   f'{t("severity")} {pages.options(t, "severity", list(_SEVERITY))} '
                   f'<button type="submit">{t("filter")}</button></form>')
        body = (f'<h1>{escape(t.pick((mine.name, mine.name_en)))} · {t("history")}</h1>{filters}'
                f'<table id="history"><tr><th>{t("time")}</th><th>{t("transition")}</th>'
                f'<th>{t("severity")}</th><th>{t("sensor")}</th><th>{t("rule")}</th>'
                f'<th>{t("message")}</th><th>{t("acked_by")}</th><th>{t("cause")} / '
                f'{t("action")}</th></tr>{"".join(lines)}</table>')
        return page(t, t("history"), body, user=user, csrf=session.csrf)

    # ── live events ────────────────────────────────────────────────────────────────────

    def _events(self, request: _Request, t: Text, mine: Mine, session: Session) -> None:
        h = request.handler
        h.send_response(200)
        for name, value in (("Content-Type", "text/event-stream; charset=utf-8"),
                            ("Cache-Control", "no-store"), *_SECURITY):
            h.send_header(name, value)
        h.end_headers()
        registry = self.live.registry
        indices = self._indices(mine.id)
        states = np.full(len(indices), -1, np.int8)  # first turn: every point
        seq, said = 0, time.monotonic()
        while not self._closing.is_set() and self.sessions.get(session.token) is not None:
            if self.live.registry is not registry:  # a reload: start over on the new one
                registry, indices = self.live.registry, self._indices(mine.id)
                states = np.full(len(indices), -1, np.int8)
            current = self.live.seq  # what comes after this is caught on the next turn
            changed, states = self.live.changes(indices, seq, states, self._now_ms())
            chunks = []
            if changed:
                sensors = registry.sensors
                chunks.append("event: points\ndata: " + json.dumps(
                    [{"id": sensors[p.index].id, "v": pages.number(p.value), "st": p.state,
                      "label": t(p.state), "at": local_time(p.ts, mine.timezone)}
                     for p in changed], ensure_ascii=False) + "\n\n")
            if (alert_seq := self.live.alert_seq.get(mine.id, 0)) > seq:  # the page says if
                chunks.append(f"event: alerts\ndata: {{\"seq\": {alert_seq}}}\n\n")  # it is older
            if not chunks and time.monotonic() - said >= _KEEPALIVE_S:
                chunks.append(": keepalive\n\n")
            if chunks:
                h.wfile.write("".join(chunks).encode())
                h.wfile.flush()
                said = time.monotonic()
            seq = current
            self.live.wait(seq, 1.0)  # at least once a second: no data comes by the clock

    # ── forms ──────────────────────────────────────────────────────────────────────────

    def _episode(self, request: _Request, mine: Mine) -> str:
        episode = request.form.get("episode", "")
        if self.service.record.episode_mine(episode) != mine.id:
            raise _Refused(404, f"no alert {episode!r} at mine {mine.id}")
        return episode

    def _ack(self, request: _Request, mine: Mine, user: ConsoleUser) -> str:
        episode = self._episode(request, mine)
        note = request.form.get("note", "").strip()[:500]
        if not self.service.record.acknowledge(episode, user.name, self._now_ms(), note):
            return f"{episode} was already acknowledged"
        log.info("console: %s acknowledged %s: %s", user.name, episode, note)
        return f"{episode} acknowledged by {user.name}"

    def _cause(self, request: _Request, mine: Mine, user: ConsoleUser) -> str:
        episode = self._episode(request, mine)
        cause = request.form.get("cause", "").strip()[:200]
        action = request.form.get("action", "").strip()[:200]
        if not cause or not action:
            raise _Refused(400, "both the cause and the action taken are needed")
        self.service.record.enter_cause(episode, cause, action, user.name, self._now_ms())
        log.info("console: %s entered the cause of %s", user.name, episode)
        return f"cause and action of {episode} saved"

    def _silence(self, request: _Request, mine: Mine, user: ConsoleUser) -> str:
        f = request.form
        matchers = Matchers(mine.id, f.get("sensor", ""), f.get("kind", ""), f.get("rule", ""),
                            f.get("severity", ""), f.get("area", ""))
        reason = f.get("reason", "").strip()
        try:
            length = parse_duration(f.get("duration", ""))
            check_matchers(self.service.deployment, matchers)
            if not reason:
                raise UsageError("reason", "a silence needs a reason")
        except UsageError as exc:
            raise _Refused(400, str(exc)) from None
        now = self._now_ms()
        db = StateDB(self.state_db)
        try:
            silence = SilenceBook(db).add(matchers, now, now + length, user.name, reason, now)
        finally:
            db.close()
        log.info("console: %s silenced %s: %s", user.name, matchers.describe(), reason)
        return f"silence {silence.id} created"

    def _unsilence(self, request: _Request, mine: Mine, user: ConsoleUser) -> str:
        silence_id = request.form.get("id", "")
        db = StateDB(self.state_db)
        try:
            book = SilenceBook(db)
            if not any(s.id == silence_id and s.matchers.mine == mine.id for s in book.all()):
                raise _Refused(404, f"no silence {silence_id!r} at mine {mine.id}")
            book.end(silence_id, self._now_ms())
        finally:
            db.close()
        log.info("console: %s ended silence %s", user.name, silence_id)
        return f"silence {silence_id} ended"

