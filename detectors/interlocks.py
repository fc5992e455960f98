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
running again). Only feed readings decide: a feed sensor reporting before the response time
is up may legitimately still show power. The event is on the feed sensor, ``scope`` the area,
``value`` the feed value and ``limit`` 0 (power expected off). Calibrating and faulty readings
of fans and feeds decide nothing; a silent feed sensor is the no-data detector's. Sources:
煤矿安全规程 (local fan wind-electric lockout), AQ 6201-2019 (lockout execution ≤ 2 s),
domain.md §4.
"""

from __future__ import annotations

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.limits import LimitDetector
from detectors.segments import segment

__all__ = ["CONDITIONS", "InterlockDetector"]

CONDITIONS = ("feed_on_power_off", "feed_on_fan_stopped")
_UNTRUSTED = np.uint16(Status.CALIBRATION | Status.SENSOR_FAULT)


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
    Cost per batch: one pass over the batch to pick fan and feed readings, then per-area
    reductions with ``bincount`` — nothing per reading in Python. Adds no status bits.

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
        self._methane = kind == "ch4"
        self._fans_in_area = np.bincount(self._area[self._is_fan], minlength=self._n_areas)
        n = len(registry)
        self._switch = np.zeros(n, dtype=bool)  # last trusted value of fans and feeds: on?
        self._seen = np.zeros(n, dtype=bool)
        self._stopped_since = np.zeros(self._n_areas, dtype=np.int64)  # 0 = fans running
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)

    def __repr__(self) -> str:
        return f"InterlockDetector(areas={self._n_areas}, active={int(self._state.sum())})"

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        switch = np.flatnonzero((self._is_feed | self._is_fan)[batch.sensor]
                                & ((batch.status & _UNTRUSTED) == 0))
        if switch.size == 0 and not self._state.any():
            return Detection([], bits)
        seg = segment(batch.sensor, switch)
        latest = seg.order[seg.ends]  # batch row of each switch sensor's latest reading
        who = batch.sensor[latest]
        self._switch[who] = batch.value[latest] >= 0.5
        self._seen[who] = True
        fans = who[self._is_fan[who]]
        if fans.size:
            self._fans_moved(fans, batch.ts[latest][self._is_fan[who]])

        # What each area demands, after this batch.
        powered_off, since = self.limits.powered_off()
        demand = self._methane & powered_off
        demand_area = np.bincount(self._area[demand], minlength=self._n_areas) > 0
        demand_since = np.zeros(self._n_areas, dtype=np.int64)
        np.maximum.at(demand_since, self._area[demand], since[demand])
        causes = np.stack([
            np.where(demand_area, demand_since, -1),
            np.where(self._stopped_since > 0, self._stopped_since, -1)])

        feeds = np.flatnonzero(self._is_feed & self._seen)
        feed_row = np.full(len(self.registry), -1, dtype=np.int64)
        feed_row[who] = latest
        reading = feed_row[feeds]
        started = causes[:, self._area[feeds]]
        reported = reading >= 0
        reading_ts = np.append(batch.ts, 0)[reading]  # −1 (no reading) picks the 0
        live = self._switch[feeds]
        cause_on = started >= 0
        sets = cause_on & reported & live & (reading_ts >= started + self._response_ms)
        clears = ~cause_on | (reported & ~live)
        before = self._state[:, feeds]
        after = (before | sets) & ~clears
        self._state[:, feeds] = after
        events = []
        for c, k in zip(*np.nonzero(after != before), strict=True):
            i = int(feeds[k])
            row = int(reading[k])
            ts = int(batch.ts[row]) if row >= 0 else int(now)
            events.append(Event(i, "feed_fault", CONDITIONS[c], "critical", bool(after[c, k]),
                                ts, float(live[k]), 0.0, self.registry.sensors[i].area))
        return Detection(events, bits)

    def _fans_moved(self, fans: np.ndarray, ts: np.ndarray) -> None:
        """Start or end each area's all-fans-stopped time after new fan readings."""
        running = np.bincount(self._area[self._is_fan & self._switch & self._seen],
                              minlength=self._n_areas) > 0
        known = np.bincount(self._area[self._is_fan & self._seen], minlength=self._n_areas)
        areas = self._area[fans]
        stopped_now = ~running[areas] & (known[areas] == self._fans_in_area[areas])
        newly = stopped_now & (self._stopped_since[areas] == 0)
        np.maximum.at(self._stopped_since, areas[newly], ts[newly])
        self._stopped_since[areas[~stopped_now]] = 0

