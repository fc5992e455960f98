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

A worker's console (``delegate_key``) also answers ``GET /console/cards?mines=a,b`` — the
overview cards of those mines as JSON, for its parent's overview — and has no login.

Authorization, in this order, on every request (:class:`~jinmei.console.front.Front`,
shared with the workers' parent): a session (else the login page, or 403 for a
POST); on a POST the session's CSRF token (else 403); the mine among the user's (else 403); for
a POST, a role that may act (a regulator never may: 403). An episode or silence named in a form
must belong to the mine of the URL (else 404), so a dispatcher cannot reach another mine's
alerts through their own mine's address. Every write carries the user's name and the time:
acknowledgements (``alert_ack``), causes and actions (``alert_cause``), silences
(``created_by``/``created_at``). The message a form leaves on the mine page (``?done=``) is
sealed with an HMAC under the session's CSRF token (``&sig=``): a link crafted elsewhere cannot
put words of its own on the page.

Responses carry ``Content-Security-Policy: default-src 'self'`` (no inline script, no frames),
``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import datetime
from html import escape
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
from jinmei.console import pages
from jinmei.console.accounts import Session
from jinmei.console.front import (
    CSRF_HEADER,
    KEY_HEADER,
    SECURITY,
    USER_HEADER,
    Front,
    Refused,
    Request,
)
from jinmei.console.live import STATES, LiveTable
from jinmei.console.pages import Text, form, local_time, page
from jinmei.service import names_from_limits

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["Console"]

log = logging.getLogger(__name__)

_SEVERITY = {"critical": 0, "alarm": 1, "warning": 2}
_KEEPALIVE_S = 15.0  # an idle event stream says something this often (proxies close silent ones)
_HISTORY_LIMIT = 500  # rows on a history page (newest first)


# What kind of place an area is, from its sensors' location types (limits table keys), first
# match wins: a face's area also holds its return and intake roadways.
_AREA_TYPES = ((("longwall", "shearer", "goaf", "face_intake"), ("采煤工作面", "working face")),
               (("heading",), ("掘进工作面", "heading")),
               (("chamber", "pump_station", "switchgear", "coal_bunker", "motor_vicinity"),
                ("硐室", "chamber")))


def _flash_sig(session: Session, message: str) -> str:
    """The seal on the message after a form (``?done=…&sig=…``): an HMAC under the session's
    CSRF token, so the mine page shows only what the console said to this session — never the
    words of a link crafted elsewhere."""
    return hmac.new(session.csrf.encode(), message.encode(), "sha256").hexdigest()[:32]


def area_type(locations: set[str]) -> tuple[str, str]:
    """(Chinese, English) kind of an area whose sensors stand at ``locations``."""
    for prefixes, names in _AREA_TYPES:
        if any(loc.startswith(prefixes) or loc.endswith(prefixes) for loc in locations):
            return names
    return ("巷道及其他", "roadways and other")


class Console(Front):
    """The dispatcher console of the service in this process; see the module docstring.

    ``delegate_key`` (a worker of ``[ingest] workers``): the console answers its parent only
    — a request must carry the key in ``X-Jinmei-Worker-Key`` and the user and CSRF token of
    the parent's session in ``X-Jinmei-User`` and ``X-Jinmei-Csrf``; there is no login here.
    """

    def __init__(self, service: Service, clock: Callable[[], float] = time.time,
                 delegate_key: str | None = None) -> None:
        super().__init__(lambda: service.deployment, clock)
        self.service = service
        self.delegate_key = delegate_key
        self.live = LiveTable(service.pipeline.registry)
        self.state_db = service.record.path  # the alerts state file: silences live there
        self.kind_names = dict(names_from_limits(service.deployment).kind)

    # ── the pipeline's tap ──────────────────────────────────────────────────────────────

    def readings(self, batch: ReadingBatch, registry: Registry) -> None:
        self.live.observe(batch, registry)

    def alerts(self, alerts: list[Alert]) -> None:
        if alerts:
            self.live.alerts_changed({a.mine for a in alerts})

    def close(self) -> None:
        super().close()
        self.live.alerts_changed(set())

    # ── a worker's console: its parent's sessions ───────────────────────────────────────

    def _session(self, request: Request) -> Session | None:
        if self.delegate_key is None:
            return super()._session(request)
        headers = request.handler.headers
        if not hmac.compare_digest(headers.get(KEY_HEADER, "").encode(),
                                   self.delegate_key.encode()):
            raise Refused(403, "a worker's console answers its parent only")
        user = self.users.get(urllib.parse.unquote(headers.get(USER_HEADER, "")))
        if user is None:
            raise Refused(403, "no such user here")
        return Session("", headers.get(CSRF_HEADER, ""), user, float("inf"))

    def _still(self, session: Session) -> bool:
        return self.delegate_key is not None or super()._still(session)

    def _route(self, request: Request, t: Text, session: Session | None) -> None:
        if self.delegate_key is None or request.path.startswith("/console/mine/"):
            return super()._route(request, t, session)
        if request.path == "/console/cards" and session is not None and session.user:
            wanted = request.query.get("mines", "").split(",")
            cards = self._cards(t, session.user, [m for m in self.mines.values()
                                                  if m.id in wanted and session.user.sees(m.id)])
            return self._send(request, 200, json.dumps(cards, ensure_ascii=False),
                              "application/json; charset=utf-8")
        raise Refused(404, f"no such page on a worker: {request.path}")

    def _mine(self, request: Request, t: Text, mine: Mine, user: ConsoleUser,
              session: Session, action: str) -> None:
        if request.handler.command == "POST":
            handlers = {"ack": self._ack, "cause": self._cause, "silence": self._silence,
                        "unsilence": self._unsilence}
            message = handlers[action](request, mine, user)
            return self._redirect(request, f"/console/mine/{mine.id}?done="
                                  f"{urllib.parse.quote(message)}&sig="
                                  f"{_flash_sig(session, message)}")
        if action == "":
            return self._send(request, 200, self._mine_page(request, t, mine, user, session))
        if action == "alerts":
            return self._send(request, 200, self._alerts(t, mine, user, session))
        if action == "events":
            return self._events(request, t, mine, session)
        if action == "history":
            return self._send(request, 200, self._history(request, t, mine, user, session))
        raise Refused(404, f"no such page: {request.path}")

    # ── pages ──────────────────────────────────────────────────────────────────────────

    def _indices(self, mine: str) -> np.ndarray:
        return self.live.indices(mine)

    def _open_alerts(self, mine: str | None = None) -> list[Alert]:
        alerts = [a for a in self.service.record.open_episodes()
                  if mine is None or a.mine == mine]
        return sorted(alerts, key=lambda a: (_SEVERITY.get(a.severity, 9), a.started_at, a.id))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _cards(self, t: Text, user: ConsoleUser, mines: list[Mine]) -> dict[str, str]:
        now = self._now_ms()
        open_by_mine: dict[str, Counter[str]] = defaultdict(Counter)
        for a in self._open_alerts():
            open_by_mine[a.mine][a.severity] += 1
        cards = {}
        for mine in mines:
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
            cards[mine.id] = (
                f'<section class="card" id="mine-{escape(mine.id)}"><h2><a href="/console/mine/'
                f'{escape(mine.id)}">{escape(t.pick((mine.name, mine.name_en)))}</a></h2>'
                f'<table><tr><th colspan="2">{t("open_alerts")}</th></tr>{severities}'
                f'<tr><th colspan="2">{t("points")} ({len(indices)})</th></tr>{counted}'
                f'<tr><td>{t("newest")}</td><td>{local_time(newest, mine.timezone)} '
                f'({t("age")} {age})</td></tr></table></section>')
        return cards

    def _mine_page(self, request: Request, t: Text, mine: Mine, user: ConsoleUser,
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
        if not hmac.compare_digest(request.query.get("sig", "").encode(),
                                   _flash_sig(session, done).encode()):
            done = ""  # not what this console said to this session: a crafted link's words
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

    def _history(self, request: Request, t: Text, mine: Mine, user: ConsoleUser,
                 session: Session) -> str:
        q = request.query
        since_ms = None
        if q.get("since"):
            try:
                day = datetime.strptime(q["since"], "%Y-%m-%d")
            except ValueError:
                raise Refused(400, f"since: not a date {q['since']!r} (YYYY-MM-DD)") from None
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

    def _events(self, request: Request, t: Text, mine: Mine, session: Session) -> None:
        h = request.handler
        h.send_response(200)
        for name, value in (("Content-Type", "text/event-stream; charset=utf-8"),
                            ("Cache-Control", "no-store"), *SECURITY):
            h.send_header(name, value)
        h.end_headers()
        registry = self.live.registry
        indices = self._indices(mine.id)
        states = np.full(len(indices), -1, np.int8)  # first turn: every point
        seq, said = 0, time.monotonic()
        while not self._closing.is_set() and self._still(session):
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

    def _episode(self, request: Request, mine: Mine) -> str:
        episode = request.form.get("episode", "")
        if self.service.record.episode_mine(episode) != mine.id:
            raise Refused(404, f"no alert {episode!r} at mine {mine.id}")
        return episode

    def _ack(self, request: Request, mine: Mine, user: ConsoleUser) -> str:
        episode = self._episode(request, mine)
        note = request.form.get("note", "").strip()[:500]
        if not self.service.record.acknowledge(episode, user.name, self._now_ms(), note):
            return f"{episode} was already acknowledged"
        log.info("console: %s acknowledged %s: %s", user.name, episode, note)
        return f"{episode} acknowledged by {user.name}"

    def _cause(self, request: Request, mine: Mine, user: ConsoleUser) -> str:
        episode = self._episode(request, mine)
        cause = request.form.get("cause", "").strip()[:200]
        action = request.form.get("action", "").strip()[:200]
        if not cause or not action:
            raise Refused(400, "both the cause and the action taken are needed")
        self.service.record.enter_cause(episode, cause, action, user.name, self._now_ms())
        log.info("console: %s entered the cause of %s", user.name, episode)
        return f"cause and action of {episode} saved"

    def _silence(self, request: Request, mine: Mine, user: ConsoleUser) -> str:
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
            raise Refused(400, str(exc)) from None
        now = self._now_ms()
        db = StateDB(self.state_db)
        try:
            silence = SilenceBook(db).add(matchers, now, now + length, user.name, reason, now)
        finally:
            db.close()
        log.info("console: %s silenced %s: %s", user.name, matchers.describe(), reason)
        return f"silence {silence.id} created"

    def _unsilence(self, request: Request, mine: Mine, user: ConsoleUser) -> str:
        silence_id = request.form.get("id", "")
        db = StateDB(self.state_db)
        try:
            book = SilenceBook(db)
            if not any(s.id == silence_id and s.matchers.mine == mine.id for s in book.all()):
                raise Refused(404, f"no silence {silence_id!r} at mine {mine.id}")
            book.end(silence_id, self._now_ms())
        finally:
            db.close()
        log.info("console: %s ended silence %s", user.name, silence_id)
        return f"silence {silence_id} ended"

