"""Extremes and mean of open YCBJ events: what the closing record of an event carries.

domain.md §6 / issue 7: an abnormal event is sent when it opens and again when it closes "with
its end, extremes and mean" — the max with its time, the min with its time and the mean of the
sensor's measured readings from the event's start up to its end (``start <= ts < end``, like
TJSJ's windows: the reading at the end is the one back to normal; calibrating, over-range and
faulty readings left out, as in TJSJ; on a tie the earlier time wins). An event is keyed like
YCBJ: (sensor, start, type).

How: readings of a sensor with an open event are *buffered* raw as they are observed
(vectorized over the batch). A buffered reading older than ``settle_ms`` (default 5 min) is
folded into the running max / min / sum / count of each open event of its sensor and dropped,
so memory stays bounded however long an event lasts, while the recent readings stay raw and
the close cuts them exactly at the event's end — the worker learns of an end a second or so
after it happened. (UNSURE edge: an end first seen more than ``settle_ms`` after it happened
gets readings past its end in its statistics.)

Durable: ``events.db`` (SQLite, WAL, fsynced) in the networking state folder holds the running
aggregates and the buffered readings; :meth:`EventExtremes.flush` (every worker tick) writes
what was observed since and drops what was folded, so a restart loses at most the last tick's
readings, never an open event. On disk a sensor is its key (``mine/sensor``), in memory its
registry index: a changed configuration that drops a sensor drops its buffered readings, not
its events' aggregates.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from config.durable import connect_durable

__all__ = ["EventExtremes", "EventKey", "EventSummary", "RunningExtremes"]

EventKey = tuple[str, int, str]  # (sensor key "mine/sensor", start epoch ms, YCBJ type)
Readings = tuple[np.ndarray, np.ndarray, np.ndarray]  # registry index, ts (epoch ms), value

_SCHEMA = """
CREATE TABLE IF NOT EXISTS open_event (
    sensor TEXT NOT NULL, start INTEGER NOT NULL, type TEXT NOT NULL,
    max REAL, max_ts INTEGER, min REAL, min_ts INTEGER,
    sum REAL NOT NULL DEFAULT 0, count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sensor, start, type));
CREATE TABLE IF NOT EXISTS buffered (
    sensor TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buffered_ts ON buffered (ts);
"""


@dataclass(frozen=True, slots=True)
class EventSummary:
    """An event's (max, its time), (min, its time) and mean; None when no measured reading."""

    max: tuple[float, int] | None
    min: tuple[float, int] | None
    mean: float | None


@dataclass(slots=True)
class RunningExtremes:
    """Running aggregate of one open event over the readings folded so far."""

    max: float = np.nan
    max_ts: int = -1
    min: float = np.nan
    min_ts: int = -1
    sum: float = 0.0
    count: int = 0

    def fold(self, ts: np.ndarray, value: np.ndarray) -> None:
        """Add readings (vectorized); on a tie the earliest time wins."""
        if not len(ts):
            return
        order = np.lexsort((ts, value))  # by value, then time
        low, high = order[0], np.lexsort((-ts, value))[-1]
        if self.count == 0 or (value[high], -ts[high]) > (self.max, -self.max_ts):
            self.max, self.max_ts = float(value[high]), int(ts[high])
        if self.count == 0 or (value[low], ts[low]) < (self.min, self.min_ts):
            self.min, self.min_ts = float(value[low]), int(ts[low])
        self.sum += float(value.sum())
        self.count += len(ts)

    def summary(self) -> EventSummary:
        if not self.count:
            return EventSummary(None, None, None)
        return EventSummary((self.max, self.max_ts), (self.min, self.min_ts),
                            self.sum / self.count)


class EventExtremes:
    """The open events' aggregates and buffered readings in ``directory/events.db``;
    ``sensors`` are the registry's sensor keys in index order."""

    def __init__(self, directory: str | Path, sensors: Sequence[str],
                 settle_ms: int = 300_000) -> None:
        self.settle_ms = settle_ms
        self._keys = np.array(sensors, dtype=object)
        self._index = {key: i for i, key in enumerate(sensors)}
        self._lock = threading.Lock()
        self._db = connect_durable(Path(directory) / "events.db")
        self._db.executescript(_SCHEMA)
        self._open: dict[EventKey, RunningExtremes] = {}
        for sensor, start, type_, *numbers in self._db.execute("SELECT * FROM open_event"):
            mx, mx_ts, mn, mn_ts, total, count = numbers
            self._open[(sensor, start, type_)] = RunningExtremes(
                np.nan if mx is None else mx, -1 if mx_ts is None else mx_ts,
                np.nan if mn is None else mn, -1 if mn_ts is None else mn_ts, total, count)
        rows = [(self._index[s], t, v) for s, t, v in self._db.execute(
            "SELECT sensor, ts, value FROM buffered ORDER BY rowid") if s in self._index]
        self._buffer = _readings(rows)  # in events.db
        self._fresh: list[Readings] = []  # observed since the last flush, not yet in events.db

    def watched(self) -> np.ndarray:
        """Per sensor index: has an open event (its readings are wanted by :meth:`observe`)."""
        with self._lock:
            return self._watched()

    def _watched(self) -> np.ndarray:
        return np.isin(np.arange(len(self._keys)),
                       [self._index[k[0]] for k in self._open if k[0] in self._index])

    def open(self, key: EventKey, ts: np.ndarray, value: np.ndarray) -> None:
        """Start tracking an event (no-op if it is tracked); ``ts``/``value`` are the sensor's
        measured readings observed so far (the worker's window), those from the start on kept."""
        with self._lock:
            if key in self._open:
                return
            # A sensor already watched (another of its events is open) has its readings in the
            # buffer: seeding them again would count them twice.
            seed = key[0] in self._index and not any(k[0] == key[0] for k in self._open)
            self._open[key] = RunningExtremes()
            with self._db:
                self._db.execute("INSERT OR IGNORE INTO open_event (sensor, start, type)"
                                 " VALUES (?, ?, ?)", key)
            if seed:
                since = ts >= key[1]
                self._add(np.full(int(since.sum()), self._index[key[0]]), ts[since], value[since])

    def observe(self, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """Buffer measured readings of watched sensors (``sensor``: registry indexes)."""
        with self._lock:
            self._add(sensor, ts, value)

    def _add(self, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        if len(ts):
            self._fresh.append((sensor.astype(np.int64), ts.astype(np.int64),
                                value.astype(np.float64)))

    def close(self, key: EventKey, end: int) -> EventSummary | None:
        """The event's summary from its start up to ``end``; it is no longer tracked.
        None when it was never opened here."""
        with self._lock:
            running = self._open.pop(key, None)
            if running is None:
                return None
            i = self._index.get(key[0], -1)
            sensor, ts, value = _concat([self._buffer, *self._fresh])
            mine = (sensor == i) & (ts >= key[1]) & (ts < end)
            running.fold(ts[mine], value[mine])
            still = self._watched()
            self._buffer, self._fresh = _only(self._buffer, still[self._buffer[0]]), [
                _only(part, still[part[0]]) for part in self._fresh]
            with self._db:
                self._db.execute("DELETE FROM open_event WHERE sensor = ? AND start = ?"
                                 " AND type = ?", key)
                if i >= 0 and not still[i]:
                    self._db.execute("DELETE FROM buffered WHERE sensor = ?", (key[0],))
            return running.summary()

    def flush(self, now_ms: int) -> None:
        """Fold readings older than ``settle_ms`` into the open events; persist what changed."""
        horizon = now_ms - self.settle_ms
        with self._lock:
            fresh = _concat(self._fresh)
            sensor, ts, value = _concat([self._buffer, fresh])
            settled = ts < horizon
            if not settled.any() and not len(fresh[1]):
                return
            for (key_sensor, start, _), running in self._open.items():
                mine = settled & (sensor == self._index.get(key_sensor, -1)) & (ts >= start)
                running.fold(ts[mine], value[mine])
            self._buffer, self._fresh = _only((sensor, ts, value), ~settled), []
            with self._db:
                self._db.execute("DELETE FROM buffered WHERE ts < ?", (horizon,))
                self._db.executemany("INSERT INTO buffered VALUES (?, ?, ?)",
                                     self._rows(_only(fresh, fresh[1] >= horizon)))
                if settled.any():
                    self._db.executemany(
                        "UPDATE open_event SET max = ?, max_ts = ?, min = ?, min_ts = ?, sum = ?,"
                        " count = ? WHERE sensor = ? AND start = ? AND type = ?",
                        [(r.max if r.count else None, r.max_ts, r.min if r.count else None,
                          r.min_ts, r.sum, r.count, *k) for k, r in self._open.items()])

    def _rows(self, readings: Readings) -> list[tuple[str, int, float]]:
        sensor, ts, value = readings
        return list(zip(self._keys[sensor].tolist(), ts.tolist(), value.tolist(), strict=True))

    def close_db(self) -> None:
        with self._lock:
            self._db.close()


def _readings(rows: Sequence[tuple[int, int, float]]) -> Readings:
    sensor, ts, value = zip(*rows, strict=True) if rows else ((), (), ())
    return (np.array(sensor, np.int64), np.array(ts, np.int64), np.array(value, np.float64))


def _concat(parts: Sequence[Readings]) -> Readings:
    if not parts:
        return _readings([])
    sensor, ts, value = zip(*parts, strict=True)
    return np.concatenate(sensor), np.concatenate(ts), np.concatenate(value)


def _only(readings: Readings, keep: np.ndarray) -> Readings:
    sensor, ts, value = readings
    return sensor[keep], ts[keep], value[keep]
