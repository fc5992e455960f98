"""Alerts about jinmei itself — ``monitoring_offline`` and ``store_fault`` — sent around the
parts that may be broken.

Rules (wire contract, second wave; every field of :class:`~alerts.wire.Alert`):

- ``monitoring_offline``, severity ``critical``: jinmei is blind. Conditions: ``broker_lost``
  and ``store_failing`` (lasting ``[ingest] offline_after_s``), ``worker_dead`` and
  ``worker_stalled`` (supervision; the service exits after sending it).
- ``store_fault``, severity ``alarm``: the store has failed transiently for
  ``[ingest] store_fault_after_s`` (condition ``store_error``) — the ingest worker's writes
  (which also blind it after ``offline_after_s``), or the InfluxDB forwarder's (readings wait
  in the spool and detection goes on: a fault, not blindness).

One alert per mine jinmei ingests (all of them: each condition blinds every mine), with
``sensor`` = ``"jinmei"`` (fixed: the alert is about the monitoring, not a measuring point; a
receiver keying on sensor sees one stable name), ``kind`` = ``"system"``, ``place`` = the
instance (``<client_id>@<host>``), ``scope`` = what failed (broker URL, store name, thread
name), ``started_at`` = when the condition began, ``value`` = seconds it has lasted, ``limit``
= seconds it may last. Ids are :func:`~alerts.episodes.episode_id` over (mine, "jinmei", rule,
condition, started_at). Messages in Chinese and English come from :mod:`alerts.messages`.

**Not depending on the broken part.** The dispatcher, its notifier and the ingest thread may
be what failed, so a system alert skips them: for every receiver whose route matches
(:func:`~alerts.notify.route_matches`; never silenced, inhibited or grouped — reason
``system``) a notification goes straight into the durable outbox through this module's *own*
SQLite connection (a hung worker holding the dispatcher's lock cannot block it; a locked file
fails after the busy timeout instead), and the delivery worker is woken. When the outbox
cannot be written, the notifications are sent directly by a thread of this module, retried
every ``DIRECT_RETRY_S`` until delivered. :meth:`SystemAlerts.deliver_now` sends what is owed
synchronously, bounded in time — the service calls it before exiting, when the delivery worker
may be the dead one (a notification that was also queued may reach a receiver twice, with one
idempotency key). Each transition is also appended to the alert record (own connection; best
effort: the record may be what fails) and published on ``jinmei/<mine>/alerts`` through the
status connections (:mod:`ingest.status`), not the ingest connection.

**Resolving.** :meth:`SystemAlerts.sync` takes the conditions that hold now; an open episode
whose condition no longer holds resolves only on evidence (``evidence(condition)``: the
service says the broker is subscribed, the store has stored a batch …). Episodes still open in
the alert record at start are taken back (same ids), so a ``monitoring_offline`` the service
raised before it exited resolves in the next run, once that run is online; if the record was
the broken part when it fired, the next run cannot know of it (the receivers were told
directly; the status topic says online again).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from alerts.channels.base import Channel, Notification
from alerts.db import StateDB
from alerts.dispatch import alerts_topic
from alerts.episodes import episode_id
from alerts.grouping import Reason
from alerts.messages import Names, render
from alerts.notify import route_matches
from alerts.outbox import Outbox, OutboxRow
from alerts.record import AlertRecord
from alerts.wire import SYSTEM_KIND, Alert, encode_alert
from config.errors import DeliveryError
from config.model import Mine, Route

__all__ = ["SYSTEM_SENSOR", "Condition", "SystemAlerts"]

log = logging.getLogger(__name__)

SYSTEM_SENSOR = "jinmei"
SEVERITY = {"monitoring_offline": "critical", "store_fault": "alarm"}
SOURCE = "jinmei's own: [ingest] offline_after_s, store_fault_after_s, stall_s"
DIRECT_RETRY_S = 5.0  # jinmei's own: retry of direct sends while the outbox is unwritable


@dataclass(frozen=True, slots=True)
class Condition:
    """Something that blinds jinmei, as the service observed it."""

    rule: str          # monitoring_offline | store_fault
    condition: str     # broker_lost | store_failing | worker_dead | worker_stalled | store_error
    scope: str         # what failed: the broker URL, the store's name, the thread's name
    since_ms: int      # when it began (epoch ms)
    limit_s: float     # how long it may last before it is an alert


def _key(receiver: str, alert: Alert) -> str:
    return hashlib.sha256(f"{receiver}\x1fsystem\x1f{alert.id}\x1f{alert.state}\x1f{alert.ts}"
                          .encode()).hexdigest()[:24]


class SystemAlerts:
    """Raises, resolves and delivers the system alerts of one deployment (module docstring).

    ``state_path`` is the alerts state file (``state_dir/alerts.db``); ``channels`` the
    delivery worker's, by receiver; ``publish(topic, payload)`` a QoS 1 publish that does not
    block; ``wake`` wakes the delivery worker; ``on_alert`` sees every transition.
    """

    def __init__(self, mines: Sequence[Mine], routes: Sequence[Route],
                 channels: Mapping[str, Channel], state_path: Path, *, config_hash: str,
                 instance: str, publish: Callable[[str, bytes], object],
                 wake: Callable[[], None] = lambda: None,
                 on_alert: Callable[[Alert], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.mines = {m.id: m for m in mines}
        self.routes = tuple(routes)
        self.channels = dict(channels)
        self.config_hash = config_hash
        self.instance = instance
        self.publish = publish
        self.wake = wake
        self.on_alert = on_alert
        self.clock = clock
        self.db = StateDB(state_path)
        self.outbox = Outbox(self.db)
        self.record = AlertRecord(state_path)
        self._lock = threading.Lock()
        self._open = {(a.mine, a.rule, a.condition): a for a in self.record.open_episodes()
                      if a.kind == SYSTEM_KIND}
        self._unqueued: dict[str, Notification] = {}  # owed, but the outbox failed
        self._direct: threading.Thread | None = None

    def open(self) -> list[Alert]:
        """The firing transition of every open system episode."""
        with self._lock:
            return sorted(self._open.values(), key=lambda a: (a.started_at, a.mine, a.rule))

    def sync(self, holding: Sequence[Condition], evidence: Callable[[str], bool],
             now_ms: int) -> list[Alert]:
        """Fire what holds and is not open; resolve what is open, no longer holds, and has
        ``evidence(condition)`` of its end. Returns the transitions."""
        held = {(c.rule, c.condition) for c in holding}
        alerts = [a for c in holding for a in self._fire(c, now_ms)]
        with self._lock:
            ending = [a for a in self._open.values()
                      if (a.rule, a.condition) not in held and evidence(a.condition)]
        alerts += [self._transition(a, now_ms) for a in ending]
        self._announce(alerts, now_ms)
        return alerts

    def fire(self, condition: Condition, now_ms: int) -> list[Alert]:
        """Fire ``condition`` for every mine where it is not open yet."""
        alerts = self._fire(condition, now_ms)
        self._announce(alerts, now_ms)
        return alerts

    def _fire(self, c: Condition, now_ms: int) -> list[Alert]:
        alerts = []
        for mine in self.mines:
            with self._lock:
                if (mine, c.rule, c.condition) in self._open:
                    continue
            alert = Alert(
                id=episode_id(mine, SYSTEM_SENSOR, c.rule, c.condition, c.since_ms),
                mine=mine, sensor=SYSTEM_SENSOR, kind=SYSTEM_KIND, rule=c.rule,
                severity=SEVERITY[c.rule], state="firing",
                value=round(max(0, now_ms - c.since_ms) / 1000, 1), limit=c.limit_s,
                started_at=c.since_ms, ts=now_ms, message="", condition=c.condition,
                place=self.instance, source=SOURCE, scope=c.scope)
            alerts.append(self._rendered(alert))
        return alerts

    def _transition(self, firing: Alert, now_ms: int) -> Alert:
        """The resolve of an open episode (ends no earlier than it started)."""
        ended = max(now_ms, firing.started_at)
        return self._rendered(msgspec.structs.replace(
            firing, state="resolved", ts=ended, ended_at=ended,
            value=round((ended - firing.started_at) / 1000, 1)))

    def _rendered(self, alert: Alert) -> Alert:
        mine = self.mines.get(alert.mine)
        message = render(alert, names=Names(),
                         mine_name=(mine.name, mine.name_en) if mine else (alert.mine,) * 2,
                         timezone=mine.timezone if mine and mine.timezone else "Asia/Shanghai")
        return msgspec.structs.replace(alert, message=message)

    def _announce(self, alerts: list[Alert], now_ms: int) -> None:
        if not alerts:
            return
        with self._lock:
            for a in alerts:
                key = (a.mine, a.rule, a.condition)
                if a.state == "firing":
                    self._open[key] = a
                else:
                    self._open.pop(key, None)
        for a in alerts:
            level = ((logging.CRITICAL if a.severity == "critical" else logging.ERROR)
                     if a.state == "firing" else logging.WARNING)
            log.log(level, "%s %s (%s) for %s: %s", a.rule, a.state, a.condition, a.mine,
                    a.message.splitlines()[-1])
        notes = [Notification(key=_key(receiver, a), receiver=receiver,
                              reason=Reason.SYSTEM.value, mine=a.mine, area="", alerts=(a,))
                 for a in alerts
                 for receiver in dict.fromkeys(r for route in self.routes
                                               if route_matches(route, a)
                                               for r in route.receivers)]
        queued = self._queue(notes, now_ms)
        if not queued:
            with self._lock:
                self._unqueued.update((n.key, n) for n in notes)
        try:
            self.record.append(alerts, self.config_hash, now_ms)
        except sqlite3.Error as exc:
            log.error("system alerts: the alert record is failing (%s); the alerts go out "
                      "all the same", exc)
        for a in alerts:
            self.publish(alerts_topic(a.mine), encode_alert(a))
        if queued:
            self.wake()
        elif notes:
            self._start_direct()
        if self.on_alert is not None:
            for a in alerts:
                self.on_alert(a)

    def _queue(self, notes: list[Notification], now_ms: int) -> bool:
        """Owe them in the outbox; False when it cannot be written (they go direct)."""
        try:
            with self.db.transaction() as c:
                for n in notes:
                    self.outbox.put(c, n, now_ms)
        except sqlite3.Error as exc:
            log.error("system alerts: the outbox is failing (%s); sending %d notification(s) "
                      "directly", exc, len(notes))
            return False
        return True

    def _start_direct(self) -> None:
        if self._direct is None or not self._direct.is_alive():
            self._direct = threading.Thread(target=self._deliver_direct, daemon=True,
                                            name="jinmei-system-alerts")
            self._direct.start()

    def _deliver_direct(self) -> None:
        """Send what could not be queued until it is delivered (the process may exit first)."""
        while True:
            with self._lock:
                owed = list(self._unqueued.values())
            if not owed:
                return
            self._send([(n, False) for n in owed])
            time.sleep(DIRECT_RETRY_S)

    def _send(self, notes: Sequence[tuple[Notification, bool]]) -> None:
        """One attempt at each (notification, whether it is in the outbox)."""
        for note, queued in notes:
            channel = self.channels.get(note.receiver)
            try:
                if channel is None:
                    raise DeliveryError(note.receiver, "no such receiver", retryable=False)
                channel.send(note)
            except DeliveryError as exc:
                log.warning("system alert to %s not delivered (%s)", note.receiver, exc)
                continue
            if not queued:
                with self._lock:
                    self._unqueued.pop(note.key, None)
                continue
            now_ms = int(self.clock() * 1000)
            try:
                self.outbox.delivered(
                    OutboxRow(note.key, note.receiver, note, 0, now_ms, None, ""), now_ms)
            except sqlite3.Error as exc:
                log.warning("system alerts: delivered %s, could not note it (%s)", note.key, exc)

    def _owed(self) -> list[tuple[Notification, bool]]:
        with self._lock:
            owed = [(n, False) for n in self._unqueued.values()]
        try:
            rows = self.outbox.owed()
        except sqlite3.Error as exc:
            log.error("system alerts: the outbox is unreadable (%s)", exc)
            rows = []
        return owed + [(r.notification, True) for r in rows
                       if r.notification.reason == Reason.SYSTEM.value]

    def deliver_now(self, timeout_s: float) -> int:
        """Send every owed system notification once, synchronously, within ``timeout_s`` (a
        send still under way then finishes on its own); returns how many are still owed.
        Before an exit: the delivery worker may be the dead thread."""
        sender = threading.Thread(target=lambda: self._send(self._owed()), daemon=True,
                                  name="jinmei-system-alerts-now")
        sender.start()
        sender.join(timeout_s)
        return len(self._owed())

    def close(self) -> None:
        self.record.close()
        self.db.close()

