"""The durable outbox: every notification is delivered at least once, across outages and
restarts.

The dispatcher puts a notification in table ``outbox`` of the alerts state file in the same
transaction that marks its alerts as sent to that receiver — from then on it is owed.
:class:`DeliveryWorker`, a thread the service starts and stops, sends what is due through the
receiver's channel and records every attempt and its outcome in ``delivery_attempt``. A row is
done only when the channel returned (the receiver accepted it); a crash before that leaves it
owed, so after a restart it is sent again with the same idempotency ``key`` — at least once,
and receivers drop the duplicate by key.

Retries: exponential backoff from ``retry_base_s`` (1 s) doubling up to ``retry_max_s``
(``[alerts] retry_max_s``, default 300 s), each delay scaled by a random jitter in [0.5, 1)
so a recovered receiver is not hit by every sender at once. A refusal (not retryable: 4xx, a
removed receiver) is logged as an error and retried at the maximum interval: nothing owed to a
regulator is ever dropped; an operator sees it in ``jinmei alerts list``. After one retryable
failure the worker leaves that receiver's other rows for the next pass (it is down).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from alerts.channels.base import Channel, Notification, decode_notification, encode_notification
from alerts.db import StateDB
from config.errors import DeliveryError

__all__ = ["DeliveryWorker", "Outbox", "OutboxRow", "backoff_s"]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key             TEXT    PRIMARY KEY,
    receiver        TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    INTEGER,
    last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_attempt (
    key      TEXT    NOT NULL,
    receiver TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    outcome  TEXT    NOT NULL,
    error    TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS delivery_attempt_key ON delivery_attempt (key);
"""


def backoff_s(attempts: int, base_s: float, max_s: float, jitter: float) -> float:
    """Delay before the next try after ``attempts`` failures; ``jitter`` in [0.5, 1)."""
    return min(max_s, base_s * 2 ** min(attempts - 1, 30)) * jitter


@dataclass(frozen=True, slots=True)
class OutboxRow:
    key: str
    receiver: str
    notification: Notification
    attempts: int
    created_at: int
    delivered_at: int | None
    last_error: str


class Outbox:
    """The ``outbox`` and ``delivery_attempt`` tables."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.ensure(SCHEMA)

    @staticmethod
    def put(c: sqlite3.Connection, notification: Notification, now_ms: int) -> None:
        """Owe ``notification`` (inside the caller's transaction); a repeated key is ignored."""
        c.execute("INSERT INTO outbox (key, receiver, payload, created_at, next_attempt_at)"
                  " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                  (notification.key, notification.receiver, encode_notification(notification),
                   now_ms, now_ms))

    def due(self, now_ms: int, limit: int = 100) -> list[OutboxRow]:
        return self._rows("WHERE delivered_at IS NULL AND next_attempt_at <= ?"
                          " ORDER BY next_attempt_at, created_at LIMIT ?", (now_ms, limit))

    def owed(self) -> list[OutboxRow]:
        return self._rows("WHERE delivered_at IS NULL ORDER BY created_at", ())

    def rows(self) -> list[OutboxRow]:
        return self._rows("ORDER BY created_at", ())

    def depth(self) -> dict[str, int]:
        """Notifications still owed, per receiver (for /metrics)."""
        return {str(r): int(n) for r, n in self.db.query(
            "SELECT receiver, count(*) FROM outbox WHERE delivered_at IS NULL GROUP BY receiver")}

    def attempts(self, key: str | None = None) -> list[tuple[str, str, int, str, str]]:
        where, params = ("WHERE key = ?", (key,)) if key else ("", ())
        return [(str(k), str(r), int(a), str(o), str(e))
                for k, r, a, o, e in self.db.query(
                    f"SELECT key, receiver, at, outcome, error FROM delivery_attempt {where}"
                    " ORDER BY rowid", params)]

    def delivered(self, row: OutboxRow, now_ms: int) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1,"
                      " last_error = '' WHERE key = ?", (now_ms, row.key))
            c.execute("INSERT INTO delivery_attempt VALUES (?, ?, ?, 'delivered', '')",
                      (row.key, row.receiver, now_ms))

    def failed(self, row: OutboxRow, now_ms: int, error: str, retryable: bool,
               next_attempt_at: int) -> None:
        with self.db.transaction() as c:
            c.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?,"
                      " next_attempt_at = ? WHERE key = ?", (error, next_attempt_at, row.key))
            c.execute("INSERT INTO delivery_attempt VALUES (?, ?, ?, ?, ?)",
                      (row.key, row.receiver, now_ms, "retry" if retryable else "refused",
                       error))

    def _rows(self, clause: str, params: tuple[object, ...]) -> list[OutboxRow]:
        rows = self.db.query("SELECT key, receiver, payload, attempts, created_at, delivered_at,"
                             f" last_error FROM outbox {clause}", params)
        return [OutboxRow(str(k), str(r), decode_notification(bytes(p)),
                          int(a), int(c), None if d is None else int(d),
                          str(e)) for k, r, p, a, c, d, e in rows]


class DeliveryWorker:
    """Sends what the outbox owes; ``start`` launches the thread, ``stop`` returns once it
    has finished the send in hand (nothing half-recorded)."""

    def __init__(self, outbox: Outbox, channels: Mapping[str, Channel], *,
                 clock: Callable[[], float] = time.time, retry_base_s: float = 1.0,
                 retry_max_s: float = 300.0, poll_s: float = 0.5,
                 rng: random.Random | None = None) -> None:
        self.outbox = outbox
        self.channels = dict(channels)
        self.clock = clock
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.delivered = 0
        self.failures = 0
        # Attempts since start by (receiver, outcome: delivered / retry / refused), for /metrics.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Monotonic time by which the loop turns again (read by the service's supervisor).
        self.heartbeat = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="jinmei-delivery", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Something was put in the outbox: look now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.deliver_due()
            except sqlite3.Error:
                log.exception("delivery worker: the outbox is unreadable; trying again")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def deliver_due(self) -> int:
        """One pass over what is due now; returns how many were delivered."""
        down: set[str] = set()
        done = 0
        for row in self.outbox.due(int(self.clock() * 1000)):
            if self._stop.is_set():
                break
            self.heartbeat = time.monotonic()  # each send is bounded by its channel's timeout
            if row.receiver in down:
                continue
            channel = self.channels.get(row.receiver)
            try:
                if channel is None:
                    raise DeliveryError(row.receiver, "no such receiver in the configuration",
                                        retryable=False)
                channel.send(row.notification)
            except DeliveryError as exc:
                self._failed(row, exc)
                if exc.retryable:
                    down.add(row.receiver)
                continue
            self.outbox.delivered(row, int(self.clock() * 1000))
            self.delivered += 1
            self.outcomes[(row.receiver, "delivered")] += 1
            done += 1
        return done

    def _failed(self, row: OutboxRow, exc: DeliveryError) -> None:
        self.failures += 1
        self.outcomes[(row.receiver, "retry" if exc.retryable else "refused")] += 1
        now_ms = int(self.clock() * 1000)
        attempts = row.attempts + 1
        if exc.retryable:
            delay = backoff_s(attempts, self.retry_base_s, self.retry_max_s,
                              self.rng.uniform(0.5, 1.0))
            if attempts == 1:  # a repeated warning is logged once per notification
                log.warning("delivery to %s failed (%s); retrying with backoff", row.receiver,
                            exc)
        else:
            delay = self.retry_max_s
            log.error("delivery to %s refused (%s); retrying every %g s until it is fixed",
                      row.receiver, exc, delay)
        self.outbox.failed(row, now_ms, str(exc), exc.retryable, now_ms + int(delay * 1000))
