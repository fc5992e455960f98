"""The statutory limit detector: alarm, power-off (断电), restore (复电) and warning thresholds.

Every sensor has four hysteresis channels, all taken from the :class:`~config.model.Registry`
limit arrays (NaN = the rule sets no such limit, so that channel never fires):

=============  =======================  ============================  ===============  ========
condition      fires when               clears when                   rule             severity
=============  =======================  ============================  ===============  ========
warning_high   v >= warning_high        v < warning_high              limit_alarm      warning
alarm_high     v >= alarm_high          v < release_high              limit_alarm      alarm
alarm_low      v <= alarm_low           v > release_low               limit_alarm      alarm
power_off      v >= power_off           v < restore                   limit_power_off  critical
=============  =======================  ============================  ===============  ========

(``>`` / ``<`` to fire and ``<=`` / ``>=`` to clear where the limit is not ``inclusive``.)
A missing release value falls back to its firing limit, as ``config/limits.toml`` documents.

Fail-safe rules on the device's own status bits: a calibrating reading (标校) sets and clears
nothing; a sensor-fault reading may set but never clear (a dead head reading 0 must not end a
methane alarm); an over-range reading (超量程, saturated catalytic element) counts as above
every upper limit and clears nothing. There is no configuration of its own and no failure mode:
bad thresholds are the loader's business, and an unknown sensor index raises IndexError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.segments import Segments, changes, hold, segment

__all__ = ["CONDITIONS", "LimitDetector"]


@dataclass(frozen=True, slots=True)
class _Channel:
    condition: str
    rule: str
    severity: str
    upper: bool
    status_bit: Status


# Channel order is the order of events raised by one reading and of the state columns.
_CHANNELS = (
    _Channel("warning_high", "limit_alarm", "warning", True, Status.NORMAL),
    _Channel("alarm_high", "limit_alarm", "alarm", True, Status.ALARM),
    _Channel("alarm_low", "limit_alarm", "alarm", False, Status.ALARM),
    _Channel("power_off", "limit_power_off", "critical", True, Status.POWER_OFF),
)
CONDITIONS: tuple[str, ...] = tuple(c.condition for c in _CHANNELS)
_LOW = CONDITIONS.index("alarm_low")
_POWER_OFF = CONDITIONS.index("power_off")
_UPPER = np.array([c.upper for c in _CHANNELS])
_SIGN = np.where(_UPPER, 1.0, -1.0)
_BITS = np.array([int(c.status_bit) for c in _CHANNELS], dtype=np.uint16)
_CALIBRATION = np.uint16(Status.CALIBRATION)
_OVER_RANGE = np.uint16(Status.OVER_RANGE)
_SENSOR_FAULT = np.uint16(Status.SENSOR_FAULT)
_DEVICE_BITS = _CALIBRATION | _OVER_RANGE | _SENSOR_FAULT


def _or_fallback(release: np.ndarray, limit: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(release), limit, release)


def _strict_above(limit: np.ndarray, strict: np.ndarray) -> np.ndarray:
    """The least float a strict limit lets through: ``v > x`` is ``v >= nextafter(x, inf)``."""
    return np.where(strict, np.nextafter(limit, np.inf), limit)


class LimitDetector(ConditionRows):
    """Flag statutory limit crossings, with hysteresis, over whole reading batches.

    What it flags: each sensor's warning, alarm (high and low) and power-off conditions as
    they start and end — one :class:`~detectors.base.Event` per transition — and, per reading,
    the alarm (1) and power-off (2) status bits while those conditions are active.

    How: thresholds are gathered per reading from the registry arrays and each reading gets a
    verdict per channel — set, clear, or indeterminate (between the firing and clearing
    thresholds, or masked by its status bits). Readings are stable-sorted by sensor (arrival
    order kept within a sensor) and the state after each reading is the last determinate verdict
    of that sensor so far, else the state carried from the previous batch: a segmented forward
    fill with ``np.maximum.accumulate`` over the indices of determinate readings (shared with
    the fault detector in ``detectors/segments.py``). Transitions
    are where that state differs from the one before it; only they become Python objects.

    Parameters
    ----------
    registry : Registry
        Sensors and their limits (``alarm_high``, ``release_high``, ``power_off``, ``restore``,
        ``warning_high``, ``alarm_low``, ``release_low``, ``inclusive``), indexed by sensor.

    Notes
    -----
    Cost: O(n) per batch of n readings. Quiet sensors (nothing active, no reading beyond a
    firing limit, no over-range) cost one comparison pass and are skipped; the others are
    radix-sorted (registry under 65,536 sensors) and take a few dozen passes over n×4 arrays.
    State is one bool per sensor and channel. Measured by ``bench/bench_limit_detector.py``
    (10,000 sensors × 100 readings a batch, one core): ~100 M readings/s in normal operation,
    ~12–16 M readings/s when every sensor is beyond its limit.
    Batching never changes the result: feeding one reading per batch gives the same events and
    bits. Time plays no part (``now`` is accepted for the protocol and ignored): a silent
    sensor keeps its state until it reports; losing contact is the no-data detector's job.

    References
    ----------
    AQ 1029-2019 《煤矿安全监控系统及检测仪器使用管理规范》 甲烷传感器设置表; 煤矿安全规程
    第498条 (methane), 第135条 (harmful gases, O2), 第136条 (air velocity), 第655条
    (temperature) — each sensor's row and source are in ``config/limits.toml``.

    Examples
    --------
    Methane at the working face (T1: alarm 1.0 %, power-off 1.5 %, restore below 1.0 %) rises to
    1.6 % while its return airway (T2) stays below its limits; then it falls back; a
    calibration (标校) with 1.8 % standard gas raises nothing:

    >>> from config.readings import Status
    >>> from detectors.examples import T1, T2, at, longwall, print_events, readings
    >>> limits = LimitDetector(longwall())
    >>> found = limits.update(readings([(T1, 0, 0.8), (T1, 10, 1.6), (T2, 10, 0.9)]), at(10))
    >>> print_events(found)
    ('T1-1101', 'alarm_high', True, 'alarm', 1.6)
    ('T1-1101', 'power_off', True, 'critical', 1.6)
    >>> found.status_bits.tolist()  # per reading: alarm 1 + power-off 2
    [0, 3, 0]
    >>> print_events(limits.update(readings([(T1, 20, 0.9)]), at(20)))
    ('T1-1101', 'alarm_high', False, 'alarm', 0.9)
    ('T1-1101', 'power_off', False, 'critical', 0.9)
    >>> print_events(limits.update(readings([(T1, 30, 1.8)], Status.CALIBRATION), at(30)))
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        strict = ~registry.inclusive.astype(bool)
        # Fold strictness and direction into the thresholds once, so that for every channel
        # "fires" is signed_value >= fire and "clears" is signed_value < clear; rows are the
        # channels in _CHANNELS order, columns the sensor index. Lower limits negate the value.
        self._fire = np.stack([
            _strict_above(registry.warning_high, strict),
            _strict_above(registry.alarm_high, strict),
            _strict_above(-registry.alarm_low, strict),
            _strict_above(registry.power_off, strict)])
        self._clear = np.stack([
            _strict_above(registry.warning_high, strict),
            _strict_above(_or_fallback(registry.release_high, registry.alarm_high), strict),
            _strict_above(-_or_fallback(registry.release_low, registry.alarm_low), strict),
            _strict_above(_or_fallback(registry.restore, registry.power_off), strict)])
        # The limits as written (for events and messages), in the same layout.
        self._fire_limit = np.stack([registry.warning_high, registry.alarm_high,
                                     registry.alarm_low, registry.power_off])
        self._clear_limit = np.stack([
            registry.warning_high, _or_fallback(registry.release_high, registry.alarm_high),
            _or_fallback(registry.release_low, registry.alarm_low),
            _or_fallback(registry.restore, registry.power_off)])
        # Lowest value that sets an upper limit: readings below it (and above the lower limit)
        # leave a quiet sensor quiet, so whole batches of normal readings skip the sort.
        self._can_fire_high = np.fmin.reduce(self._fire[_UPPER], axis=0)
        self._state = np.zeros((len(_CHANNELS), len(registry)), dtype=bool)
        # 0 until set by a reading: a power-off carried over a restart started long ago.
        self._power_off_since = np.zeros(len(registry), dtype=np.int64)
        self._power_off_changes: list[tuple[int, int, bool]] = []
        self._marked = np.zeros(len(registry), dtype=bool)  # scratch, all False between batches

    def __repr__(self) -> str:
        return f"LimitDetector(sensors={len(self.registry)}, active={int(self._state.sum())})"

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        status_bits = np.zeros(len(batch), dtype=np.uint16)
        self._power_off_changes = []
        if len(batch) == 0:
            return Detection([], status_bits)
        involved = self._involved(batch)
        rows = None if involved.all() else np.flatnonzero(involved)
        if rows is not None and rows.size == 0:
            return Detection([], status_bits)
        seg = segment(batch.sensor, rows)
        value = batch.value[seg.order]
        sets, determinate = self._verdicts(seg.segment_sensor, seg.length, value,
                                           batch.status[seg.order])
        state, before = hold(sets, determinate, self._state[:, seg.segment_sensor], seg)
        self._state[:, seg.segment_sensor] = state[:, seg.ends]

        bits = np.zeros(len(seg.order), dtype=np.uint16)
        for channel, bit in enumerate(_BITS):  # four channels, not a loop over readings
            np.bitwise_or(bits, bit, out=bits, where=state[channel])
        status_bits[seg.order] = bits
        return Detection(self._events(state, before, seg, value, batch.ts), status_bits)

    def power_off_changes(self) -> list[tuple[int, int, bool]]:
        """(sensor, ts, firing) of each power-off transition the last ``update`` found, in the
        order found (each sensor's in time order): the interlocks replay them in event time."""
        return list(self._power_off_changes)

    def powered_off(self) -> tuple[np.ndarray, np.ndarray]:
        """Per sensor: is its power-off (断电) condition active, and since when (epoch ms of the
        reading that set it; 0 for one carried over a restart, whose start is unknown)."""
        return self._state[_POWER_OFF].copy(), self._power_off_since.copy()

    def _involved(self, batch: ReadingBatch) -> np.ndarray:
        """Per reading: may its sensor's state change or be active in this batch (else the
        sensor stays quiet). Work over the batch, never over the whole registry for a small
        batch (one over every sensor is cheaper only for a batch larger than the registry)."""
        if len(batch) > len(self.registry):
            involved: np.ndarray = np.logical_or.reduce(self._state, axis=0)[batch.sensor]
        else:
            involved = np.logical_or.reduce(self._state[:, batch.sensor], axis=0)
        may_fire = ((batch.value >= self._can_fire_high[batch.sensor])
                    | (-batch.value >= self._fire[_LOW, batch.sensor])
                    | ((batch.status & _OVER_RANGE) != 0))
        if may_fire.any():  # every reading of a sensor that may fire takes part
            firing = batch.sensor[may_fire]
            self._marked[firing] = True
            involved |= self._marked[batch.sensor]
            self._marked[firing] = False
        return involved

    def _verdicts(self, segment_sensor: np.ndarray, length: np.ndarray, value: np.ndarray,
                  status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per channel and reading: does it set the condition, and does it decide anything.

        Readings come sorted by sensor, ``length[k]`` of them for ``segment_sensor[k]``: the
        thresholds are repeated per segment, much cheaper than gathered per reading.
        """
        fire = np.repeat(self._fire[:, segment_sensor], length, axis=1)
        signed = value * _SIGN[:, None]
        sets = signed >= fire
        clears = signed < np.repeat(self._clear[:, segment_sensor], length, axis=1)
        if not (status & _DEVICE_BITS).any():
            return sets, sets | clears
        calibrating = (status & _CALIBRATION) != 0
        over_range = (status & _OVER_RANGE) != 0
        faulty = (status & _SENSOR_FAULT) != 0
        # Over-range is above every upper limit there is, and says nothing about lower ones.
        sets = (sets & ~over_range | over_range & _UPPER[:, None] & ~np.isnan(fire)) & ~calibrating
        clears &= ~(calibrating | faulty | over_range)
        return sets, sets | clears

    def _events(self, state: np.ndarray, before: np.ndarray, seg: Segments, value: np.ndarray,
                ts: np.ndarray) -> list[Event]:
        events = []
        channel, position, arrival = changes(state, before, seg)
        for c, p, a in zip(channel.tolist(), position.tolist(), arrival.tolist(), strict=True):
            spec = _CHANNELS[c]
            firing = bool(state[c, p])
            i = int(seg.sensor[p])
            limit = (self._fire_limit if firing else self._clear_limit)[c, i]
            if c == _POWER_OFF:
                self._power_off_changes.append((i, int(ts[a]), firing))
                if firing:
                    self._power_off_since[i] = ts[a]
            events.append(Event(i, spec.rule, spec.condition, spec.severity, firing,
                                int(ts[a]), float(value[p]), float(limit)))
        return events

