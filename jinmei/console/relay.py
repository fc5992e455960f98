"""The console in the parent of ``[ingest] workers``: one login, every mine, each mine's pages
from the worker that owns it.

Design (the simplest that keeps every check): the parent is the console's front door
(:class:`~jinmei.console.front.Front`) — sessions, login and its limiter, CSRF tokens, roles
and per-mine authorization all happen here, exactly as in one process, so a session is one
cookie for every mine and nothing about sessions is shared between processes. An authorized
request for ``/console/mine/<id>/…`` is then sent on to the worker that owns ``<id>``, on its
loopback port (:class:`jinmei.workers.WorkerState`), with three headers: the parent's key
(random at each start, handed to the workers in their environment — never on a command line),
the user's name and the session's CSRF token. The worker's console answers only requests that
carry the key, takes the user from its own copy of the accounts, and checks everything again
(CSRF token against the form, mine, role, the episode or silence belonging to the mine), so
a fault in the parent cannot widen what a user may do; it has no login of its own. The reply —
a page, a redirect after a form, an event stream — is passed back as it came, without the
worker's cookies. The overview asks each worker for the cards of its mines the user may see
(``/console/cards``) and shows them in the configuration's order; a mine whose worker is down
gets a card saying so, and its pages answer 503 until the worker is back.
A logout cuts the session's relayed event streams at once (the worker's end of them is
shut), and nothing the worker sends after it is passed on.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from config.model import ConsoleUser, Deployment, Mine
from jinmei.console.accounts import Session
from jinmei.console.front import CSRF_HEADER, KEY_HEADER, USER_HEADER, Front, Refused, Request
from jinmei.console.pages import Text
from jinmei.workers import WorkerParent, WorkerState

__all__ = ["RelayConsole"]

log = logging.getLogger(__name__)

PAGE_TIMEOUT_S = 10.0  # jinmei's own: a page from a busy worker (history of 500 rows) in time
STREAM_TIMEOUT_S = 40.0  # an event stream says something every 15 s (keepalive); past this: gone
# The worker's headers passed on (never its Set-Cookie: sessions are the parent's alone).
PASSED = frozenset({"content-type", "content-length", "location", "cache-control",
                    "content-security-policy", "x-content-type-options", "referrer-policy"})


class RelayConsole(Front):
    """The console of the workers' ``parent`` over the deployment ``deployment()``."""

    def __init__(self, deployment: Callable[[], Deployment], parent: WorkerParent,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(deployment, clock)
        self.parent = parent
        # the event streams being relayed, by session token: a logout cuts them at once
        # (the relay loop waits on the worker, which says something only every 15 s)
        self._streams: dict[str, set[socket.socket]] = {}
        self._streams_lock = threading.Lock()

    def _end(self, session: Session) -> None:
        super()._end(session)
        with self._streams_lock:
            streams = self._streams.pop(session.token, set())
        for sock in streams:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the relay loop's read

    def _owner(self, mine: str) -> WorkerState:
        state = next((s for s in self.parent.states() if mine in s.mines), None)
        if state is None:  # added by a reload: the assignment is the one made at start
            raise Refused(503, f"mine {mine} has no worker yet: restart jinmei to assign it")
        if state.pid is None or state.port is None:
            raise Refused(503, f"mine {mine} is watched by {state.name}, which is down and is "
                               f"started again in {state.restart_in_s or 0:.0f} s: reload "
                               f"this page in a moment")
        return state

    def _headers(self, request: Request, user: ConsoleUser, session: Session) -> dict[str, str]:
        lang = "en" if request.cookies.get("jinmei_lang") == "en" else "zh"
        return {KEY_HEADER: self.parent.key, USER_HEADER: urllib.parse.quote(user.name),
                CSRF_HEADER: session.csrf, "Cookie": f"jinmei_lang={lang}"}

    def _cards(self, t: Text, user: ConsoleUser, mines: list[Mine]) -> dict[str, str]:
        lang = "en" if t.lang == "en" else "zh"
        wanted = {m.id for m in mines}
        shares = [(s, [m for m in s.mines if m in wanted]) for s in self.parent.states()
                  if s.pid and s.port]
        shares = [(s, ids) for s, ids in shares if ids]

        def ask(share: tuple[WorkerState, list[str]]) -> dict[str, str]:
            state, ids = share
            conn = http.client.HTTPConnection("127.0.0.1", state.port or 0,
                                              timeout=PAGE_TIMEOUT_S)
            try:
                conn.request("GET", f"/console/cards?mines={','.join(ids)}", headers={
                    KEY_HEADER: self.parent.key, USER_HEADER: urllib.parse.quote(user.name),
                    "Cookie": f"jinmei_lang={lang}"})
                reply = conn.getresponse()
                body = reply.read()
                return dict(json.loads(body)) if reply.status == 200 else {}
            except (OSError, http.client.HTTPException, ValueError) as exc:
                log.warning("console: %s gave no overview cards: %s", state.name, exc)
                return {}
            finally:
                conn.close()

        cards: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(shares))) as pool:
            for found in pool.map(ask, shares):
                cards.update(found)
        return cards

    def _mine(self, request: Request, t: Text, mine: Mine, user: ConsoleUser,
              session: Session, action: str) -> None:
        state = self._owner(mine.id)
        h = request.handler
        stream = action == "events"
        headers = self._headers(request, user, session)
        body = None
        if h.command == "POST":
            body = urllib.parse.urlencode(request.form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection("127.0.0.1", state.port or 0,
                                          timeout=STREAM_TIMEOUT_S if stream else PAGE_TIMEOUT_S)
        sock: socket.socket | None = None
        try:
            try:
                conn.request(h.command, h.path, body, headers)
                sock = conn.sock  # the reply takes it over (getresponse clears conn.sock)
                reply = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise Refused(503, f"{state.name} did not answer: {exc}") from None
            h.send_response(reply.status)
            for name, value in reply.getheaders():
                if name.lower() in PASSED:
                    h.send_header(name, value)
            h.end_headers()
            if not stream:
                h.wfile.write(reply.read())
                return
            if sock is not None:
                with self._streams_lock:
                    self._streams.setdefault(session.token, set()).add(sock)
            while not self._closing.is_set() and self._still(session):
                chunk = reply.read1(65_536)
                if not chunk or not self._still(session):  # nothing after a logout
                    break
                h.wfile.write(chunk)
                h.wfile.flush()
        except (OSError, http.client.HTTPException):  # after the headers: the worker went away
            h.close_connection = True
        finally:
            with self._streams_lock:
                if sock is not None and (open_ := self._streams.get(session.token)):
                    open_.discard(sock)
                    if not open_:
                        del self._streams[session.token]
            conn.close()
