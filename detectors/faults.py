"""Sensor faults (``sensor_fault``): readings that say more about the sensor than about the air.

=============  ==========================================================  ==================
condition      fires at a reading that                                     clears at
=============  ==========================================================  ==================
device_fault   carries ``status: fault`` (the device reports itself)       a clean reading
out_of_range   is outside the sensor's measuring range (over-range 超量程,  a reading inside
               or below its low end: negative drift 负漂), or carries the
               over-range status
spike          changed from the sensor's previous reading faster than      a plausible change
               its kind can (``[detectors.max_rate]``, unit per second),
               or comes back from a one-reading spike: its previous
               reading jumped from the one before by more than the
               kind's ``spike_jump`` and this one is back within half
               that jump of where it came from (``0.3 → 3.2 → 0.3``)
stuck          repeats the value it has shown, unchanged, for its kind's   any change
               ``stuck_s_by_kind`` (default ch4 900 s) or ``stuck_s``
               (default 3600 s), the shorter, while the sensor keeps
               reporting (a dead or fabricated feed, domain.md §4);
               analog sensors only — switches legitimately hold — and
               never at exactly 0 or the bottom of the measuring range
               (CO at 0 ppm, clean intake air: a legitimately flat line)
=============  ==========================================================  ==================

A one-reading spike is known only at the reading after it, so that is where ``spike`` fires;
the spike reading itself has already gone to the limit detector like any other. A jump that
stays up (an outburst) is no spike.

Severity is ``critical`` for a methane sensor that guards a power-off area (it has a
power-off limit: 故障闭锁 — the area it protects must be de-energized while it cannot be
trusted), ``warning`` for every other sensor.

Fail-safe: this detector only adds conditions. It never changes what the limit detector sees,
so a spike above a limit raises the limit alert *and* the fault, and an over-range methane
reading still counts as above the power-off limit there. Calibrating readings (标校) decide
nothing here either — but a calibration in which the value moves restarts the stuck clock:
the head answered the standard gas, so the unchanged value before and after it is no sign of a
dead sensor (a calibration longer than ``stuck_s`` would otherwise raise ``stuck`` at the first
reading after it). Spike and stuck compare a reading with its sensor's previous one in time
order; a reading older than the previous (out of order) is judged by status and range only.
No status bits are added. Sources: domain.md §4 (AQ 6201-2019 point states, MT/T 1201.1
status bits); the plausible rates are jinmei's own, configurable.
"""

from __future__ import annotations

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.segments import Segments, changes, hold, running_max, segment, within

__all__ = ["CONDITIONS", "SensorFaultDetector", "guards_power_off"]

CONDITIONS = ("device_fault", "out_of_range", "spike", "stuck")
_CAL = np.uint16(Status.CALIBRATION)
_OVER = np.uint16(Status.OVER_RANGE)
_FAULT = np.uint16(Status.SENSOR_FAULT)
# A spike's next reading is "back" within this fraction of the jump from where it came from:
# half is far from a sustained step (fraction ~1) yet tolerant of the air's own movement.
_RETURN_FRACTION = 0.5


def guards_power_off(registry: Registry) -> np.ndarray:
    """Per sensor: a methane point with a power-off limit (its fault or silence is critical)."""
    kinds = np.array([s.kind for s in registry.sensors], dtype=object)
    return (kinds == "ch4") & ~np.isnan(registry.power_off)


class SensorFaultDetector(ConditionRows):
    """Flag readings from sick sensors, reading by reading; see the module docstring.

    Parameters
    ----------
    registry : Registry
        Measuring ranges (``range_low``, ``range_high``), kinds and power-off limits.
    config : DetectorConfig
        ``stuck_s`` and ``stuck_s_by_kind`` (kinds not named use ``stuck_s``), ``max_rate``
        and ``spike_jump`` (per kind; kinds not named are never checked by that test).

    Notes
    -----
    Cost: O(n) per batch — one sort by sensor and a few dozen passes over the batch; the
    segmented forward fill of the limit detector runs only over the sensors whose state can
    change (a condition active, or set by a reading of this batch). State per sensor: the
    previous reading (value, time) and the value before it, the time its value last changed,
    and one bool per condition.

    Examples
    --------
    The face methane (T1) leaps from 0.3 % to 3.2 % for one reading and is straight back — an
    electrical disturbance, not air: ``spike`` at the reading after it, ``critical`` because T1
    guards a power-off area. The return airway's T2 at 4.3 % is beyond its 0–4 % element:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import T1, T2, at, longwall, print_events, readings
    >>> faults = SensorFaultDetector(longwall(), DetectorConfig())
    >>> print_events(faults.update(readings([(T1, 0, 0.3), (T1, 10, 3.2), (T1, 20, 0.3)]), at(20)))
    ('T1-1101', 'spike', True, 'critical', 0.3)
    >>> print_events(faults.update(readings([(T1, 30, 0.31), (T2, 30, 4.3)]), at(30)))
    ('T1-1101', 'spike', False, 'critical', 0.31)
    ('T2-1101', 'out_of_range', True, 'critical', 4.3)
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, config: DetectorConfig) -> None:
        self.registry = registry
        self.config = config
        rates = dict(config.max_rate)
        self._max_rate = np.array([rates.get(s.kind, np.inf) for s in registry.sensors])
        jumps = dict(config.spike_jump)
        self._spike_jump = np.array([jumps.get(s.kind, np.inf) for s in registry.sensors])
        stuck = dict(config.stuck_s_by_kind)
        # stuck_s bounds every kind; a kind's own time can only be shorter.
        self._stuck_s = np.array([min(stuck.get(s.kind, np.inf), config.stuck_s)
                                  for s in registry.sensors])
        self._analog = np.array([not s.is_switch for s in registry.sensors], dtype=bool)
        self._severity = np.where(guards_power_off(registry), "critical", "warning")
        n = len(registry)
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)
        self._last_value = np.full(n, np.nan)
        self._before_last_value = np.full(n, np.nan)  # the compared reading before the last
        self._last_ts = np.zeros(n, dtype=np.int64)  # of the latest clean in-order reading
        self._changed_ts = np.zeros(n, dtype=np.int64)  # when its value last changed

    def __repr__(self) -> str:
        return (f"SensorFaultDetector(sensors={len(self.registry)}, "
                f"active={int(self._state.sum())})")

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        if len(batch) == 0:
            return Detection([], bits)
        seg = segment(batch.sensor)
        sensor, value = seg.sensor, batch.value[seg.order]
        ts, status = batch.ts[seg.order], batch.status[seg.order]

        def per_reading(of_sensor: np.ndarray) -> np.ndarray:
            # Repeated per segment: cheaper than a gather per reading.
            return np.repeat(of_sensor[seg.segment_sensor], seg.length)

        range_low = per_reading(self.registry.range_low)
        calibrating = (status & _CAL) != 0
        faulty = (status & _FAULT) != 0
        outside = (((status & _OVER) != 0) | (value > per_reading(self.registry.range_high))
                   | (value < range_low))
        clean = ~(calibrating | faulty | outside)

        # The previous clean in-order reading of each clean one: only those are compared.
        carried_ts = self._last_ts[seg.segment_sensor]
        latest = running_max(np.where(clean, ts, 0), carried_ts, seg)
        in_order = clean & (ts > np.concatenate(([0], latest[:-1])))
        in_order[seg.starts] = clean[seg.starts] & (ts[seg.starts] > carried_ts)
        compared = np.flatnonzero(in_order)
        # Each compared reading's predecessor: the compared reading before it in its segment,
        # else the carried one; and that one's predecessor in the same way.
        who = sensor[compared]
        order_in = np.concatenate(([-1], compared[:-1]))
        same = np.zeros(compared.size, dtype=bool)
        same[1:] = seg.segment_start[compared[1:]] == seg.segment_start[compared[:-1]]
        before = np.where(same, value[order_in], self._last_value[who])
        previous = _at(compared, before, len(value), np.nan)
        previous_ts = _at(compared, np.where(same, ts[order_in], self._last_ts[who]),
                          len(value), 0)
        previous2 = _at(compared, np.where(same, np.concatenate(([np.nan], before[:-1])),
                                           self._before_last_value[who]),
                        len(value), np.nan)  # the predecessor's predecessor
        has_previous = in_order & (previous_ts > 0)
        step = np.abs(value - previous)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = step / ((ts - previous_ts) / 1000.0)
            jump = np.abs(previous - previous2)
            returned = (has_previous & (jump > per_reading(self._spike_jump))
                        & (np.abs(value - previous2) <= _RETURN_FRACTION * jump))
        moved = self._moved_under_gas(calibrating, in_order, value, seg)
        changed = has_previous & (step > 0) | moved
        # A sensor first heard in this batch has been unchanged since its first reading.
        since = self._changed_ts[seg.segment_sensor]
        since = np.where(since == 0, ts[seg.starts], since)
        changed_ts = running_max(np.where(changed, ts, 0), since, seg)
        stuck_ms = per_reading(self._stuck_s) * 1000
        # A flat line at zero or the range's floor is clean air or gas-free, not a dead sensor.
        flat_floor = (value == 0) | (value <= range_low)

        decides = ~calibrating
        sets = np.stack([faulty, outside & ~faulty, (rate > per_reading(self._max_rate)) | returned,
                         (ts - changed_ts >= stuck_ms) & per_reading(self._analog) & ~flat_floor])
        determinate = np.stack([decides, decides & ~faulty, has_previous, in_order])
        self._remember(who, compared, value, ts, changed_ts, previous)
        if moved.any():  # a batch may end in calibration: keep the stuck clock it restarted
            gassed = np.logical_or.reduceat(moved, seg.starts)
            who_gassed = seg.segment_sensor[gassed]
            self._changed_ts[who_gassed] = np.maximum(self._changed_ts[who_gassed],
                                                      changed_ts[seg.ends[gassed]])
        # Only sensors with a condition active or set by a reading can change state: the
        # rest (nearly all) skip the forward fill.
        carried = self._state[:, seg.segment_sensor]
        moving = np.flatnonzero(np.logical_or.reduceat(sets.any(axis=0), seg.starts)
                                | carried.any(axis=0))
        if moving.size == 0:
            return Detection([], bits)
        sub, at_sub = within(seg, moving)
        state, before = hold(sets[:, at_sub], determinate[:, at_sub], carried[:, moving], sub)
        self._state[:, sub.segment_sensor] = state[:, sub.ends]

        events = []
        channel, changed_at, arrival = changes(state, before, sub)
        position = at_sub[changed_at]
        # The limit each event names, worked out for the (few) changes only.
        at, v = sensor[position], value[position]
        limits = np.stack([np.zeros(len(position)),
                           np.where(v < self.registry.range_low[at], self.registry.range_low[at],
                                    self.registry.range_high[at]),
                           np.where(returned[position], self._spike_jump[at], self._max_rate[at]),
                           self._stuck_s[at]])
        firing = state[channel, changed_at]
        for k, (c, p, a) in enumerate(zip(channel.tolist(), position.tolist(), arrival.tolist(),
                                          strict=True)):
            i = int(sensor[p])
            events.append(Event(i, "sensor_fault", CONDITIONS[c], str(self._severity[i]),
                                bool(firing[k]), int(batch.ts[a]), float(value[p]),
                                float(limits[c, k])))
        return Detection(events, bits)

    def _moved_under_gas(self, calibrating: np.ndarray, in_order: np.ndarray, value: np.ndarray,
                         seg: Segments) -> np.ndarray:
        """Per sorted position: a calibrating reading whose value differs from the sensor's
        last compared one — the head answered the standard gas, so it is not stuck."""
        if not calibrating.any():
            return calibrating
        position = np.arange(len(value))
        last = np.maximum.accumulate(np.where(in_order, position, -1))
        carried = last < seg.segment_start  # none earlier in this batch: the one kept from before
        reference = np.where(carried, np.repeat(self._last_value[seg.segment_sensor], seg.length),
                             value[np.maximum(last, 0)])
        moved: np.ndarray = calibrating & (value != reference) & ~np.isnan(reference)
        return moved

    def _remember(self, who: np.ndarray, compared: np.ndarray, value: np.ndarray,
                  ts: np.ndarray, changed_ts: np.ndarray, previous: np.ndarray) -> None:
        """Keep each sensor's latest compared reading and the one before it: ``compared`` are
        sorted positions and ``who`` their sensors, so the last of each run is the latest."""
        last = np.ones(len(who), dtype=bool)
        last[:-1] = who[1:] != who[:-1]
        at, sensor = compared[last], who[last]
        self._before_last_value[sensor] = previous[at]
        self._last_value[sensor] = value[at]
        self._last_ts[sensor] = ts[at]
        self._changed_ts[sensor] = changed_ts[at]


def _at(rows: np.ndarray, values: np.ndarray, n: int, fill: float) -> np.ndarray:
    """``values`` placed at ``rows`` (ascending) of an ``n``-array of ``fill``; ``values``
    itself when the rows are all of them (every reading compared: the usual batch)."""
    if len(rows) == n:
        return values
    spread = np.full(n, fill, dtype=values.dtype)
    spread[rows] = values
    return spread
