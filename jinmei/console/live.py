"""The console's live table: every sensor's newest reading and state, fed by the pipeline.

One row per sensor of the registry (numpy arrays indexed by the registry index, as the
detectors keep theirs): newest ``ts``, ``value``, ``status`` bits and a change sequence number.
:meth:`LiveTable.observe` takes every committed batch (the pipeline's taps, on the ingest
thread: a few vectorized operations, no loop per reading) and :meth:`LiveTable.alerts_changed`
every alert transition; both wake the server-sent-event streams, which push the points that
changed (:meth:`LiveTable.changes`) — so a reading is on the dispatcher's screen as soon as it
is stored.

A point's state (:data:`STATES`), worst first: ``power_off`` and ``alarm`` from the detectors'
status bits, ``fault`` (the device's own fault or over-range bits), ``calibrating``,
``no_data`` (nothing yet, or nothing for three sampling periods — the networking's own
reachability rule, MT/T 1201.1 CDSS), else ``ok``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from config.model import Registry
from config.readings import ReadingBatch, Status

__all__ = ["STATES", "LiveTable", "Point"]

STATES = ("ok", "power_off", "alarm", "fault", "calibrating", "no_data")
NO_DATA_PERIODS = 3  # as networking's CDSS: a point unheard for 3 periods is unreachable
_FAULT = int(Status.SENSOR_FAULT | Status.OVER_RANGE | Status.SUBSTATION_FAULT)


@dataclass(frozen=True, slots=True)
class Point:
    """A sensor's live row as pages and streams show it."""

    index: int
    ts: int  # -1: never heard
    value: float
    state: str


class LiveTable:
    """Newest reading and state of every sensor; thread-safe (ingest writes, HTTP reads)."""

    def __init__(self, registry: Registry) -> None:
        self._changed = threading.Condition()
        self.seq = 0  # bumped by every batch and every alert transition
        self.alert_seq: dict[str, int] = {}  # mine → seq of its last alert transition
        self._use(registry)

    def _use(self, registry: Registry) -> None:
        n = len(registry)
        self.registry = registry
        self.ts = np.full(n, -1, np.int64)
        self.value = np.full(n, np.nan)
        self.status = np.zeros(n, np.uint16)
        self.changed_at = np.zeros(n, np.int64)  # seq of the last change of each point
        self.period_ms = np.array([s.period_s * 1000 for s in registry.sensors], np.int64)
        mines = np.array([s.mine for s in registry.sensors], dtype=object)
        self._of_mine = {str(m): np.flatnonzero(mines == m) for m in dict.fromkeys(mines)}

    def indices(self, mine: str) -> np.ndarray:
        """Registry indices of a mine's sensors (empty for a mine with none)."""
        with self._changed:
            return self._of_mine.get(mine, np.empty(0, np.int64))

    def observe(self, batch: ReadingBatch, registry: Registry) -> None:
        """Take a committed batch (indexed by ``registry``, which a reload may have replaced)."""
        with self._changed:
            if registry is not self.registry:
                self._use(registry)
            if len(batch):
                order = np.lexsort((batch.ts, batch.sensor))
                s = batch.sensor[order]
                last = np.r_[s[1:] != s[:-1], True]
                idx, ts = s[last], batch.ts[order][last]
                newer = ts >= self.ts[idx]
                idx = idx[newer]
                self.ts[idx] = ts[newer]
                self.value[idx] = batch.value[order][last][newer]
                self.status[idx] = batch.status[order][last][newer]
                self.seq += 1
                self.changed_at[idx] = self.seq
            self._changed.notify_all()

    def alerts_changed(self, mines: set[str]) -> None:
        with self._changed:
            self.seq += 1
            for mine in mines:
                self.alert_seq[mine] = self.seq
            self._changed.notify_all()

    def wait(self, seq: int, timeout_s: float) -> int:
        """The current seq once it passed ``seq`` or ``timeout_s`` went by."""
        with self._changed:
            self._changed.wait_for(lambda: self.seq > seq, timeout_s)
            return self.seq

    def states(self, indices: np.ndarray, now_ms: int) -> np.ndarray:
        """Index into :data:`STATES` for these sensors at ``now_ms`` (vectorized)."""
        with self._changed:
            ts, status = self.ts[indices], self.status[indices].astype(np.int64)
            period = self.period_ms[indices]
        state = np.zeros(len(indices), np.int8)
        stale = (ts < 0) | (now_ms - ts > NO_DATA_PERIODS * period)
        # worst last, so it wins
        state[(status & int(Status.CALIBRATION)) != 0] = STATES.index("calibrating")
        state[(status & _FAULT) != 0] = STATES.index("fault")
        state[(status & int(Status.ALARM)) != 0] = STATES.index("alarm")
        state[(status & int(Status.POWER_OFF)) != 0] = STATES.index("power_off")
        state[stale] = STATES.index("no_data")
        return state

    def points(self, indices: np.ndarray, now_ms: int) -> list[Point]:
        states = self.states(indices, now_ms)
        with self._changed:
            ts, value = self.ts[indices].tolist(), self.value[indices].tolist()
        return [Point(i, t, v, STATES[s]) for i, t, v, s in
                zip(indices.tolist(), ts, value, states.tolist(), strict=True)]

    def changes(self, indices: np.ndarray, since_seq: int, last_states: np.ndarray,
                now_ms: int) -> tuple[list[Point], np.ndarray]:
        """Points of ``indices`` changed since ``since_seq`` or whose state differs from
        ``last_states`` (no data comes by the clock, not by a reading); and the new states."""
        states = self.states(indices, now_ms)
        with self._changed:
            moved = (self.changed_at[indices] > since_seq) | (states != last_states)
        chosen = indices[moved]
        return self.points(chosen, now_ms), states

    def newest_ms(self, indices: np.ndarray) -> int:
        with self._changed:
            return int(self.ts[indices].max(initial=-1))
