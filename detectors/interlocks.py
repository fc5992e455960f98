"""Interlocks (``feed_fault``): the power of an area that should be off is still on.

Which sensors belong together is the mine file's ``area`` (a working face or heading): its
methane points, its feed sensors (``kind = "feed"``, 馈电: 1 = the load side is live) and its
local fans (``kind = "local_fan"``, 1 = running).

===================  ===========================================================  ========
condition            fires at a reading of an area's feed sensor that shows power  severity
===================  ===========================================================  ========
feed_on_power_off    while a methane point of the area is in power-off (断电,       critical
                     the limit detector's state), taken ``feed_response_s``
                     (default 2 s, AQ 6201-2019's ≤ 2 s execution) or more after
                     the power-off began — 馈电异常
feed_on_fan_stopped  while every local fan of the area is stopped (main and         critical
                     standby: the heading is unventilated), taken
                     ``feed_response_s`` or more after the last one stopped —
                     风电闭锁 failed
===================  ===========================================================  ========

Both clear at a feed reading showing no power, or when the cause ends (power restored, a fan
running again: the event is at that time). Only feed readings set: a feed sensor reporting
before the response time is up may legitimately still show power. A power-off demand is timed
from when the area's methane first demanded it (several points in power-off: the first).

Event time: each feed reading is judged against the causes as they stood at its own time —
the area's power-off demand replayed from the limit detector's transitions of the batch, the
fans' state replayed from their readings in time order — so any split of the same readings into
batches gives the same events. A reading older than its sensor's newest is judged the same way
against the causes as this batch knows them. The event is on the feed sensor, ``scope`` the area,
``value`` the feed value and ``limit`` 0 (power expected off). Calibrating and faulty readings
of fans and feeds decide nothing; a silent feed sensor is the no-data detector's. Sources:
煤矿安全规程 (local fan wind-electric lockout), AQ 6201-2019 (lockout execution ≤ 2 s),
domain.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.limits import LimitDetector
from detectors.segments import changes, hold, segment

__all__ = ["CONDITIONS", "InterlockDetector"]

CONDITIONS = ("feed_on_power_off", "feed_on_fan_stopped")
_UNTRUSTED = np.uint16(Status.CALIBRATION | Status.SENSOR_FAULT)


def _within(total: np.ndarray, step: np.ndarray, head: np.ndarray) -> np.ndarray:
    """A running sum restarted at each group's head (``total``: the running sum of ``step``)."""
    return total - total[head] + step[head]


@dataclass(frozen=True, slots=True)
class _Timeline:
    """One cause per area through a batch: its state before the batch (``before_on``,
    ``before_since`` per area) and each change (``area``, ``ts``, ``on``, ``since``: when the
    cause began, for a change to on), sorted by area then time."""

    before_on: np.ndarray
    before_since: np.ndarray
    area: np.ndarray
    ts: np.ndarray
    on: np.ndarray
    since: np.ndarray

    @classmethod
    def empty(cls, before_on: np.ndarray, before_since: np.ndarray) -> _Timeline:
        none = np.zeros(0, dtype=np.int64)
        return cls(before_on, before_since, none, none, np.zeros(0, bool), none)

    def with_changes(self, area: np.ndarray, ts: np.ndarray, on: np.ndarray,
                     since: np.ndarray) -> _Timeline:
        by = np.lexsort((ts, area))  # stable: changes at one time keep their order
        return _Timeline(self.before_on, self.before_since, area[by], ts[by], on[by], since[by])

    def at(self, area: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per (area, time): is the cause on, and since when — after every change at or
        before that time (a reading and a change at one instant: the change counts)."""
        on, since = self.before_on[area], self.before_since[area]
        if self.area.size == 0 or area.size == 0:
            return on, since
        low = min(int(self.ts.min()), int(ts.min()))
        span = max(int(self.ts.max()), int(ts.max())) - low + 1
        keys = self.area * span + (self.ts - low)
        latest = np.searchsorted(keys, area * span + (ts - low), side="right") - 1
        hit = (latest >= 0) & (self.area[np.maximum(latest, 0)] == area)
        pick = np.maximum(latest, 0)
        return np.where(hit, self.on[pick], on), np.where(hit, self.since[pick], since)


class InterlockDetector(ConditionRows):
    """Feed abnormality and wind-electric lockout per area; see the module docstring.

    Parameters
    ----------
    registry : Registry
        Sensors with their ``area`` and kind.
    limits : LimitDetector
        Whose power-off state says which methane points demand power off (the suite runs it
        first, so this batch's readings count).
    config : DetectorConfig
        ``feed_response_s``.

    Notes
    -----
    Cost per batch: one pass over the batch to pick fan and feed readings, a sort of those,
    per-area running counts and one ``searchsorted`` of each feed reading into the causes'
    changes; a Python loop only over the batch's power-off transitions and cause ends (a
    handful). Nothing per reading in Python. Adds no status bits.

    Examples
    --------
    Face methane (T1) at 1.6 % puts area 1101 in power-off (断电); the feed sensor of its
    switchgear (KD) may still show power for 2 s, but 5 s later it still does — feed
    abnormality (馈电异常) — until the load side goes dead at 6 s:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import KD, T1, at, longwall, print_events, readings
    >>> from detectors.limits import LimitDetector
    >>> registry = longwall()
    >>> limits = LimitDetector(registry)
    >>> interlocks = InterlockDetector(registry, limits, DetectorConfig())
    >>> def feed(rows, seconds):  # as the suite does: the limit detector sees the batch first
    ...     limits.update(readings(rows), at(seconds))
    ...     print_events(interlocks.update(readings(rows), at(seconds)))
    >>> feed([(T1, 0, 1.6), (KD, 0, 1)], 0)
    >>> feed([(KD, 5, 1)], 5)
    ('KD-1101', 'feed_on_power_off', True, 'critical', 1.0)
    >>> feed([(KD, 6, 0)], 6)
    ('KD-1101', 'feed_on_power_off', False, 'critical', 0.0)
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, limits: LimitDetector, config: DetectorConfig) -> None:
        self.registry = registry
        self.limits = limits
        self._response_ms = int(config.feed_response_s * 1000)
        areas = {(s.mine, s.area): None for s in registry.sensors}
        area_index = {key: k for k, key in enumerate(areas)}
        self._area = np.array([area_index[(s.mine, s.area)] for s in registry.sensors],
                              dtype=np.int64)
        self._n_areas = len(areas)
        kind = np.array([s.kind for s in registry.sensors], dtype=object)
        self._is_feed = kind == "feed"
        self._is_fan = kind == "local_fan"
        self._is_switch = self._is_feed | self._is_fan
        self._methane = kind == "ch4"
        self._fans_in_area = np.bincount(self._area[self._is_fan], minlength=self._n_areas)
        n = len(registry)
        self._switch = np.zeros(n, dtype=bool)  # last trusted value of fans and feeds: on?
        self._seen = np.zeros(n, dtype=bool)
        self._stopped_since = np.zeros(self._n_areas, dtype=np.int64)  # 0 = fans running
        self._demand_since = np.full(self._n_areas, -1, dtype=np.int64)  # −1: no power-off
        # Per area, kept through the batches so that none sweeps every fan: local fans heard
        # from and running. (The power-off demand is read from the limit detector at every
        # batch instead: it is that detector's state, and re-read it heals when that detector
        # failed on a batch and was given its messages again one by one, jinmei/pipeline.py.)
        self._fans_known = np.zeros(self._n_areas, dtype=np.int64)
        self._fans_running = np.zeros(self._n_areas, dtype=np.int64)
        feeds = np.flatnonzero(self._is_feed)
        self._feeds_of_area = [feeds[self._area[feeds] == a].tolist()
                               for a in range(self._n_areas)]
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)

    def __repr__(self) -> str:
        return f"InterlockDetector(areas={self._n_areas}, active={int(self._state.sum())})"

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        switch = np.flatnonzero(self._is_switch[batch.sensor]
                                & ((batch.status & _UNTRUSTED) == 0))
        power_off = self.limits.power_off_changes()
        if switch.size == 0 and not power_off:
            return Detection([], bits)
        # Fan and feed readings in event time: by sensor, then time.
        order = switch[np.lexsort((batch.ts[switch], batch.sensor[switch]))]
        sensor, ts, live = batch.sensor[order], batch.ts[order], batch.value[order] >= 0.5
        fan = self._is_fan[sensor]
        causes = (self._demand_timeline(power_off),
                  self._stopped_timeline(sensor[fan], ts[fan], live[fan]))
        if sensor.size:
            last = np.r_[sensor[1:] != sensor[:-1], True]
            self._count_fans(sensor[last], live[last])
            self._switch[sensor[last]] = live[last]
            self._seen[sensor[last]] = True
        # Each feed reading is judged at its time; where a cause ends, the feeds of its area
        # are judged there too (the fault ends with its cause, a reading or not).
        feed, feed_ts, feed_live = sensor[~fan], ts[~fan], live[~fan]
        ended = [(self._feeds_of_area[a], t) for timeline in causes
                 for a, t, on in zip(timeline.area.tolist(), timeline.ts.tolist(),
                                     timeline.on.tolist(), strict=True) if not on]
        extra = [f for feeds, _ in ended for f in feeds]
        rows_sensor = np.concatenate([feed, np.array(extra, dtype=feed.dtype)])
        rows_ts = np.concatenate([feed_ts, np.array([t for feeds, t in ended for _ in feeds],
                                                    dtype=np.int64)])
        reported = np.r_[np.ones(feed.size, bool), np.zeros(len(extra), bool)]
        rows_live = np.r_[feed_live, np.zeros(len(extra), bool)]
        if rows_sensor.size == 0:
            return Detection([], bits)
        by = np.lexsort((~reported, rows_ts, rows_sensor))
        seg = segment(rows_sensor[by])
        rows_ts, reported, rows_live = rows_ts[by], reported[by], rows_live[by]
        # A row without a reading shows the feed as its last reading did.
        latest = np.maximum.accumulate(np.where(reported, np.arange(len(by)), -1))
        carried_live = self._switch[seg.sensor]
        rows_live = np.where(reported, rows_live,
                             np.where(latest >= seg.segment_start,
                                      rows_live[np.maximum(latest, 0)], carried_live))
        area = self._area[seg.sensor]
        on, since = zip(*(timeline.at(area, rows_ts) for timeline in causes), strict=True)
        cause_on, started = np.stack(on), np.stack(since)
        sets = cause_on & reported & rows_live & (rows_ts >= started + self._response_ms)
        clears = ~cause_on | (reported & ~rows_live)
        state, before = hold(sets, sets | clears, self._state[:, seg.segment_sensor], seg)
        self._state[:, seg.segment_sensor] = state[:, seg.ends]
        events = []
        channel, position, _ = changes(state, before, seg)
        for c, p in zip(channel.tolist(), position.tolist(), strict=True):
            i = int(seg.sensor[p])
            events.append(Event(i, "feed_fault", CONDITIONS[c], "critical", bool(state[c, p]),
                                int(rows_ts[p]), float(rows_live[p]), 0.0,
                                self.registry.sensors[i].area))
        events.sort(key=lambda e: e.ts)  # stable: one feed's transitions stay in order
        return Detection(events, bits)

    def _demand_timeline(self, power_off: list[tuple[int, int, bool]]) -> _Timeline:
        """When each area's methane power-off demand began and ended in this batch, from the
        limit detector's transitions (a handful: a loop over them, not over readings)."""
        powered, _ = self.limits.powered_off()
        before = powered.copy()
        for sensor, _, firing in reversed(power_off):  # each sensor's first transition wins
            before[sensor] = not firing
        count = np.bincount(self._area[self._methane & before], minlength=self._n_areas)
        # 0: a demand carried over a restart, begun long ago.
        since = np.where(count > 0, np.maximum(self._demand_since, 0), -1)
        timeline = _Timeline.empty(count > 0, since.copy())
        area, at, on, began = [], [], [], []
        for sensor, t, firing in sorted(power_off, key=lambda change: change[1]):
            if not self._methane[sensor]:
                continue
            a = int(self._area[sensor])
            was = count[a] > 0
            count[a] += 1 if firing else -1
            if (count[a] > 0) != was:
                since[a] = t if not was else -1
                area.append(a)
                at.append(t)
                on.append(not was)
                began.append(since[a])
        self._demand_since = np.where(count > 0, since, -1)
        return timeline.with_changes(np.array(area, np.int64), np.array(at, np.int64),
                                     np.array(on, bool), np.array(began, np.int64))

    def _stopped_timeline(self, fan: np.ndarray, ts: np.ndarray, live: np.ndarray) -> _Timeline:
        """When each area's local fans all stopped and when one ran again, from its fans'
        readings (by fan, then time), vectorized: running and known fans counted per area
        through the readings in time order."""
        stopped_before = self._stopped_since > 0
        timeline = _Timeline.empty(stopped_before, self._stopped_since.copy())
        if fan.size == 0:
            return timeline
        n = fan.size
        first = np.r_[True, fan[1:] != fan[:-1]]
        was_live = np.empty(n, dtype=bool)
        was_live[1:] = live[:-1]
        was_live[first] = self._switch[fan[first]] & self._seen[fan[first]]
        d_running = live.astype(np.int64) - was_live
        d_known = np.zeros(n, dtype=np.int64)
        d_known[first] = ~self._seen[fan[first]]
        area = self._area[fan]
        by = np.lexsort((ts, area))
        area, ts, d_running, d_known = area[by], ts[by], d_running[by], d_known[by]
        start = np.r_[True, area[1:] != area[:-1]]
        head = np.maximum.accumulate(np.where(start, np.arange(n), 0))
        running = self._fans_running[area] + _within(np.cumsum(d_running), d_running, head)
        known = self._fans_known[area] + _within(np.cumsum(d_known), d_known, head)
        stopped = (known == self._fans_in_area[area]) & (running == 0)
        previous = np.empty(n, dtype=bool)
        previous[1:] = stopped[:-1]
        previous[start] = stopped_before[area[start]]
        moved = np.flatnonzero(stopped != previous)
        began = np.where(stopped[moved], ts[moved], 0)
        # The state each area is left in: its last change in the batch, if any.
        self._stopped_since[area[moved]] = began  # ascending per area: the last one stays
        return timeline.with_changes(area[moved], ts[moved], stopped[moved], began)

    def _count_fans(self, sensor: np.ndarray, live: np.ndarray) -> None:
        """Move the per-area fan counts on to the batch's last trusted readings (``sensor``
        unique: fans and feeds, ``live`` their last value)."""
        is_fan = self._is_fan[sensor]
        fan, area = sensor[is_fan], self._area[sensor[is_fan]]
        np.add.at(self._fans_known, area, ~self._seen[fan])
        was_running = self._switch[fan] & self._seen[fan]
        np.add.at(self._fans_running, area, live[is_fan].astype(np.int64) - was_running)
