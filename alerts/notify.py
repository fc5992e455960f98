"""Routing, muting, grouping and escalation: which receiver is told what, and when.

For each recorded transition the :class:`Notifier` runs the stages in this order::

    route → inhibit → silence → group (wait / interval / repeat) → dedup → outbox

- **route**: every ``[[alerts.routes]]`` entry whose matchers (mine, kind, rule, severity) all
  match names receivers; all matching routes apply. A transition no route names is logged as
  ``unrouted`` (it is in the record and on ``jinmei/<mine>/alerts`` all the same).
- **inhibit / silence**: one ``mutes`` check each (``alerts.inhibit``, its rules switched in
  ``[alerts.inhibit]``; ``alerts.silences``); the reason is logged. A muted firing alert is
  checked again each tick, and is notified if it is still firing when the silence expires or
  the inhibiting alert resolves — except an early warning an area's alarm held back
  (``inhibited_by`` set): it stays held back for its whole episode. A resolve is sent only
  to receivers that were told (or are about to be told) of the firing.
- **inhibit again before sending**: a firing transition still waiting in its group when an
  alert that inhibits it opens is held back then (with a waiting resolve of it).
- **safety floor**: a ``limit_power_off`` firing is never muted and sends its group at once;
  a silence that would have matched is logged as overridden.
- **group / dedup**: per (receiver, mine, area) — see ``alerts.grouping.should_notify``; each
  transition goes to a receiver once (log key: receiver, id, state, ts).
- **escalation**: a ``critical`` alert still firing and not acknowledged ``escalate_after_s``
  after its start (``ts`` of the firing transition) is re-sent to the route's receivers and sent
  to its ``escalate_to`` receivers, once per route.

Every decision is a row of ``alert_notification`` (receiver, transition, decision, reason,
outbox key) in the alerts state file; sending puts the notification in the outbox in the same
transaction. At start, :meth:`Notifier.restore` rebuilds the groups from that log, so waiting
transitions and group timers survive a restart.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import msgspec

from alerts.channels.base import Notification
from alerts.db import StateDB
from alerts.grouping import GroupState, Reason, Timing, should_notify
from alerts.inhibit import Inhibitor
from alerts.outbox import Outbox
from alerts.silences import SilenceBook
from alerts.wire import Alert, decode_alert, encode_alert
from config.model import InhibitConfig, Registry, Route

__all__ = ["Notifier", "route_matches"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_notification (
    receiver   TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    ts         INTEGER NOT NULL,
    mine       TEXT    NOT NULL,
    area       TEXT    NOT NULL,
    decision   TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    outbox_key TEXT    NOT NULL DEFAULT '',
    alert      BLOB    NOT NULL,
    PRIMARY KEY (receiver, id, state, ts)
);
CREATE INDEX IF NOT EXISTS alert_notification_decision ON alert_notification (decision);
CREATE TABLE IF NOT EXISTS alert_escalation (
    id    TEXT    NOT NULL,
    route INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    PRIMARY KEY (id, route)
);
"""

_Group = tuple[str, str, str]  # receiver, mine, area


def route_matches(route: Route, alert: Alert) -> bool:
    return all(not wanted or actual in wanted for wanted, actual in (
        (route.mines, alert.mine), (route.kinds, alert.kind), (route.rules, alert.rule),
        (route.severities, alert.severity)))


def _floor(alert: Alert) -> bool:
    return alert.rule == "limit_power_off" and alert.state == "firing"


def _one_transition_each(waiting: list[tuple[Alert, int]]
                         ) -> tuple[list[tuple[Alert, int]], list[tuple[Alert, int]]]:
    """Split the waiting transitions before the first that repeats an alert already in the
    message: (to send now, to wait for the group's next send).

    A notification tells at most one transition of each alert, so what goes into it does not
    depend on how readings were batched: an instance that took a power-off's firing and its
    resolve in one batch sends the firing now and the resolve a group interval later, as does
    an instance that took them in two. Two active-active instances then send the same
    notifications under the same idempotency keys (issue 15 item 2), and a receiver is told
    "fired" and "resolved" in that order, in two messages, whatever the load."""
    seen: set[str] = set()
    for i, (alert, _) in enumerate(waiting):
        if alert.id in seen:
            return waiting[:i], waiting[i:]
        seen.add(alert.id)
    return waiting, []


def _key(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:24]


class Notifier:
    def __init__(self, registry: Registry, db: StateDB, outbox: Outbox, silences: SilenceBook,
                 routes: Sequence[Route], timing: Timing,
                 acknowledged: Callable[[Sequence[str]], Mapping[str, object]],
                 inhibit: InhibitConfig | None = None) -> None:
        self.db = db
        self.outbox = outbox
        self.silences = silences
        self.inhibitor = Inhibitor(registry, inhibit)
        self.routes = tuple(routes)
        self.timing = timing
        self.acknowledged = acknowledged
        self._area = {(s.mine, s.id): s.area for s in registry.sensors}
        self._waiting: dict[_Group, list[tuple[Alert, int]]] = defaultdict(list)
        self._told: dict[_Group, dict[str, Alert]] = defaultdict(dict)
        self._muted: dict[tuple[str, str], tuple[Alert, str]] = {}  # (receiver, id)
        self._last_sent: dict[_Group, int] = {}
        self._escalated: set[tuple[str, int]] = set()
        self._open_seen: set[str] = set()  # ids of the open alerts at the last flush
        db.ensure(SCHEMA)

    # ── the stages ───────────────────────────────────────────────────────────────────────

    def accept(self, alerts: Sequence[Alert], open_alerts: Sequence[Alert], now_ms: int) -> None:
        """Route and mute recorded transitions, and queue them in their groups."""
        rows: list[tuple[str, Alert, str, str]] = []
        for alert in alerts:
            area = self.area(alert)
            receivers = list(dict.fromkeys(
                r for route in self.routes if route_matches(route, alert)
                for r in route.receivers))
            if not receivers:
                rows.append(("", alert, "unrouted", "no route matches"))
                continue
            silence = self.silences.mutes(alert, area, now_ms)
            if _floor(alert):
                mute = None
                note = f"safety floor; overrides {silence}" if silence else "safety floor"
            else:
                mute = self.inhibitor.mutes(alert, open_alerts) or silence
                note = ""
            for receiver in receivers:
                group = (receiver, alert.mine, area)
                if alert.state != "firing":
                    muted = self._muted.pop((receiver, alert.id), None)
                    told = alert.id in self._told[group] or any(
                        a.id == alert.id for a, _ in self._waiting[group])
                    if not told:
                        rows.append((receiver, alert, "muted",
                                     muted[1] if muted else "its firing was not notified"))
                        continue
                elif mute:
                    self._muted[(receiver, alert.id)] = (alert, mute)
                    rows.append((receiver, alert, "muted", mute))
                    continue
                self._waiting[group].append((alert, now_ms))
                rows.append((receiver, alert, "waiting", note))
        if rows:
            with self.db.transaction() as c:
                for receiver, alert, decision, reason in rows:
                    self._log(c, receiver, alert, decision, reason, now_ms)

    def flush(self, open_alerts: Sequence[Alert], now_ms: int) -> list[Notification]:
        """Unmute what is no longer muted, send the groups that are due, escalate; returns the
        notifications put in the outbox."""
        self._unmute(open_alerts, now_ms)
        # only an alert opened since the last flush can newly inhibit what waits
        opened = [a for a in open_alerts if a.id not in self._open_seen]
        self._open_seen = {a.id for a in open_alerts}
        if opened and self._waiting:
            self._inhibit_waiting(opened, now_ms)
        sent: list[Notification] = []
        for group in sorted(set(self._waiting) | set(self._told)):
            waiting = self._waiting.get(group, [])
            state = GroupState(first_waiting_at=min((at for _, at in waiting), default=None),
                               last_sent_at=self._last_sent.get(group),
                               firing_sent=bool(self._told.get(group)),
                               floor=any(_floor(a) for a, _ in waiting))
            reason = should_notify(state, now_ms, self.timing)
            if reason.send:
                sent.append(self._send(group, reason, now_ms))
        sent += self._escalate(open_alerts, now_ms)
        for group in [g for g, told in self._told.items() if not told]:
            del self._told[group]
        return sent

    # ── helpers ──────────────────────────────────────────────────────────────────────────

    def area(self, alert: Alert) -> str:
        return self._area.get((alert.mine, alert.sensor), "")

    def _unmute(self, open_alerts: Sequence[Alert], now_ms: int) -> None:
        open_ids = {a.id for a in open_alerts}
        rows = []
        for (receiver, episode), (alert, _) in list(self._muted.items()):
            if episode not in open_ids:
                del self._muted[(receiver, episode)]
                continue
            if alert.inhibited_by:
                continue  # an area's alarm holds it back for its whole episode (alerts.inhibit)
            area = self.area(alert)
            if not (self.inhibitor.mutes(alert, open_alerts)
                    or self.silences.mutes(alert, area, now_ms)):
                del self._muted[(receiver, episode)]
                self._waiting[(receiver, alert.mine, area)].append((alert, now_ms))
                rows.append((receiver, alert))
        if rows:
            with self.db.transaction() as c:
                for receiver, alert in rows:
                    c.execute("UPDATE alert_notification SET decision = 'waiting', reason = ?,"
                              " at = ? WHERE receiver = ? AND id = ? AND state = ? AND ts = ?",
                              ("no longer muted", now_ms, receiver, alert.id, alert.state,
                               alert.ts))

    def _inhibit_waiting(self, opened: Sequence[Alert], now_ms: int) -> None:
        """A firing transition still waiting in its group when an alert that inhibits it
        opens (one of ``opened``) is held back as if it had come after it — receivers get the
        alarm, not the warning of a few seconds before it — and so is a waiting resolve of a
        firing held back so (nothing of it was told)."""
        rows = []
        for group, waiting in list(self._waiting.items()):
            receiver = group[0]
            held: set[str] = set()
            keep = []
            for alert, at in waiting:
                mute = (self.inhibitor.mutes(alert, opened)
                        if alert.state == "firing" and not _floor(alert) else None)
                if mute:
                    if (alarm := self.inhibitor.area_alarm(alert, opened)) is not None:
                        alert = msgspec.structs.replace(alert, inhibited_by=alarm.id)
                    held.add(alert.id)
                    self._muted[(receiver, alert.id)] = (alert, mute)
                    rows.append((receiver, alert, mute))
                elif alert.state != "firing" and alert.id in held:
                    rows.append((receiver, alert, "its firing was not notified"))
                else:
                    keep.append((alert, at))
            if len(keep) < len(waiting):
                self._waiting[group] = keep
        if rows:
            with self.db.transaction() as c:
                for receiver, alert, reason in rows:
                    c.execute("UPDATE alert_notification SET decision = 'muted', reason = ?,"
                              " at = ?, alert = ? WHERE receiver = ? AND id = ? AND state = ?"
                              " AND ts = ?", (reason, now_ms, encode_alert(alert), receiver,
                                              alert.id, alert.state, alert.ts))

    def _send(self, group: _Group, reason: Reason, now_ms: int) -> Notification:
        receiver, mine, area = group
        waiting, later = _one_transition_each(self._waiting.pop(group, []))
        if later:
            self._waiting[group] = later
        alerts = ([a for a, _ in waiting] if waiting
                  else list(self._told[group].values()))  # a repeat: what is still firing
        identity = [(a.id, a.state, a.ts) for a in alerts]
        key = _key(receiver, *identity, now_ms if reason is Reason.REPEAT else "")
        notification = Notification(key=key, receiver=receiver, reason=reason.value,
                                    mine=mine, area=area, alerts=tuple(alerts))
        with self.db.transaction() as c:
            self.outbox.put(c, notification, now_ms)
            for a in alerts if waiting else ():
                c.execute("UPDATE alert_notification SET decision = 'sent', outbox_key = ?,"
                          " at = ? WHERE receiver = ? AND id = ? AND state = ? AND ts = ?",
                          (key, now_ms, receiver, a.id, a.state, a.ts))
        for a in alerts:
            if a.state == "firing":
                self._told[group][a.id] = a
            else:
                self._told[group].pop(a.id, None)
        self._last_sent[group] = now_ms
        return notification

    def _escalate(self, open_alerts: Sequence[Alert], now_ms: int) -> list[Notification]:
        due = [(a, i, route) for a in open_alerts if a.severity == "critical"
               for i, route in enumerate(self.routes)
               if route.escalate_after_s is not None and (a.id, i) not in self._escalated
               and route_matches(route, a)
               and now_ms >= a.ts + int(route.escalate_after_s * 1000)]
        if not due:
            return []
        acked = self.acknowledged([a.id for a, _, _ in due])
        sent = []
        with self.db.transaction() as c:
            for alert, index, route in due:
                self._escalated.add((alert.id, index))
                c.execute("INSERT INTO alert_escalation VALUES (?, ?, ?)"
                          " ON CONFLICT DO NOTHING", (alert.id, index, now_ms))
                if alert.id in acked:
                    continue  # acknowledged in time: someone is on it
                for receiver in dict.fromkeys((*route.receivers, *route.escalate_to)):
                    n = Notification(key=_key(receiver, "escalation", alert.id, index),
                                     receiver=receiver, reason=Reason.ESCALATION.value,
                                     mine=alert.mine, area=self.area(alert), alerts=(alert,))
                    self.outbox.put(c, n, now_ms)
                    sent.append(n)
        return sent

    def _log(self, c: sqlite3.Connection, receiver: str, alert: Alert, decision: str,
             reason: str, now_ms: int) -> None:
        c.execute("INSERT INTO alert_notification (receiver, id, state, ts, mine, area, decision,"
                  " reason, at, alert) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                  " ON CONFLICT DO NOTHING",
                  (receiver, alert.id, alert.state, alert.ts, alert.mine, self.area(alert),
                   decision, reason, now_ms, encode_alert(alert)))

    def restore(self, open_alerts: Sequence[Alert]) -> None:
        """Rebuild groups, what each receiver was told, and escalations from the log."""
        open_ids = {a.id for a in open_alerts}
        self._waiting.clear()
        self._told.clear()
        self._muted.clear()
        rows = self.db.query("SELECT receiver, mine, area, decision, reason, at, alert"
                             " FROM alert_notification WHERE decision IN ('waiting', 'muted')"
                             " OR (decision = 'sent' AND state = 'firing')")
        for receiver, mine, area, decision, reason, at, raw in rows:
            alert = decode_alert(bytes(raw))
            group = (str(receiver), str(mine), str(area))
            if decision == "waiting":
                self._waiting[group].append((alert, int(at)))
            elif alert.id in open_ids and decision == "sent":
                self._told[group][alert.id] = alert
            elif alert.id in open_ids and alert.state == "firing":
                self._muted[(group[0], alert.id)] = (alert, str(reason))
        for receiver, mine, area, at in self.db.query(
                "SELECT receiver, mine, area, MAX(at) FROM alert_notification"
                " WHERE decision = 'sent' GROUP BY receiver, mine, area"):
            self._last_sent[(str(receiver), str(mine), str(area))] = int(at)
        self._escalated = {(str(i), int(r))
                           for i, r in self.db.query("SELECT id, route FROM alert_escalation")}
