"""Early warning (超限预警, 瓦斯涌出异常): rising trends, sudden level shifts, face/return mismatch.

No regulation prescribes an algorithm (domain.md §5): these are jinmei's own, measured on
labelled scenarios by ``bench/evaluate_detectors.py``. All three look at each sensor's recent
history (:class:`~detectors.history.History`, clean in-order readings only: calibrating,
faulty and over-range readings never enter it) and are evaluated, vectorized over every sensor
that reported, once per batch at that sensor's newest reading.

=====================  ===================================================  =====  =======
condition              fires when                                           rule   severity
=====================  ===================================================  =====  =======
trend_high             the robust slope reaches ``alarm_high`` within        trend  warning
                       ``trend_horizon_s`` (default 600 s)
trend_low              the same towards ``alarm_low`` (O2, air velocity)      trend  warning
level_shift            the median of the last ``level_shift_recent_s``      trend  warning
                       (60 s) rose above the median of the
                       ``level_shift_reference_s`` (600 s) before it by
                       ``level_shift_sigmas`` (6) robust σ and by
                       ``level_shift_min_fraction`` (0.2) of ``alarm_high``
face_return_mismatch   a working face's and its return airway's methane     trend  warning
                       (same area) differ by more than
                       ``face_return_tolerance`` (0.5 %) over the recent
                       window: one of them is wrong, or gas is trapped
=====================  ===================================================  =====  =======

Trend: Theil–Sen slope (median of pairwise slopes) over up to 16 readings spread across
``trend_window_s`` (300 s), the level at the newest reading as the median of the residual-
corrected values, and the time to the limit = gap / slope. It needs 5 readings spanning half
the window (a sensor just added stays quiet) and a rise over the window of at least 4 robust σ
of the residuals (noise never trends). It clears once the forecast is beyond 2 × the horizon
or the slope turns. Level shift clears below half its threshold; mismatch below the tolerance.
Only sensors with the relevant limit are watched (switches never are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import Detection, Event
from detectors.history import History
from detectors.segments import segment

__all__ = ["CONDITIONS", "TrendDetector", "robust_median"]

CONDITIONS = ("trend_high", "trend_low", "level_shift", "face_return_mismatch")
_TREND_POINTS = 16
_RECENT_POINTS = 15
_REFERENCE_POINTS = 60
_MIN_POINTS = 5
_NOISE_SIGMAS = 4.0
_MAD_SIGMA = 1.4826  # MAD → σ for normal noise
_CLEAR_HORIZON = 2.0
_DEVICE_BITS = np.uint16(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT)
_FACES = {"longwall_face": "longwall_return", "heading_face": "heading_return"}
_I, _J = np.triu_indices(_TREND_POINTS, k=1)


def robust_median(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median of each row over its valid entries (NaN for a row with none), vectorized."""
    s = np.sort(np.where(valid, x, np.nan), axis=1)  # NaN sorts last
    n = valid.sum(axis=1)
    rows = np.arange(len(s))
    lo, hi = np.maximum((n - 1) // 2, 0), np.maximum(n // 2, 0)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, 0.5 * (s[rows, lo] + s[rows, hi]), np.nan)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """Per evaluated sensor: set / clear per condition, and the value and limit to report."""

    sets: np.ndarray
    clears: np.ndarray
    value: np.ndarray
    limit: np.ndarray


class TrendDetector:
    """Warn before a limit is reached; see the module docstring for what and how.

    Parameters
    ----------
    registry : Registry
        Sensors, their periods (ring sizes) and ``alarm_high`` / ``alarm_low`` limits.
    config : DetectorConfig
        ``history_s``, ``trend_window_s``, ``trend_horizon_s``, ``level_shift_*``,
        ``face_return_tolerance``.

    Notes
    -----
    Cost per batch: the history append (O(n)) and, per sensor that reported, about 120 pairwise
    slopes and three small sorts. Adds no status bits. ``now`` is not used: every decision is
    on the readings' own times.
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, config: DetectorConfig) -> None:
        self.registry = registry
        self.config = config
        self.history = History(registry.period_s, config.history_s)
        analog = np.array([not s.is_switch for s in registry.sensors], dtype=bool)
        self._watch_high = analog & ~np.isnan(registry.alarm_high)
        self._watch_low = analog & ~np.isnan(registry.alarm_low)
        self._gas = self._watch_high & np.isin([s.kind for s in registry.sensors],
                                               ("ch4", "co", "co2", "h2s"))
        # face_return partner of each face methane sensor (−1: none), first return of its area
        returns = {(s.mine, s.area, s.location): i for i, s in reversed(list(
            enumerate(registry.sensors))) if s.kind == "ch4"}
        self._partner = np.array([
            returns.get((s.mine, s.area, _FACES.get(s.location, "")), -1)
            if s.kind == "ch4" else -1 for s in registry.sensors], dtype=np.int64)
        self._state = np.zeros((len(CONDITIONS), len(registry)), dtype=bool)

    def __repr__(self) -> str:
        return f"TrendDetector(sensors={len(self.registry)}, active={int(self._state.sum())})"

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        clean = np.flatnonzero((batch.status & _DEVICE_BITS) == 0)
        if clean.size == 0:
            return Detection([], bits)
        seg = segment(batch.sensor, clean)
        ts = batch.ts[seg.order]
        keep = self.history.in_order(seg, ts)
        self.history.append(seg.sensor[keep], ts[keep], batch.value[seg.order][keep])
        reported = np.unique(seg.sensor[keep])
        # A face's mismatch is re-judged when its return airway reports too.
        partners = np.flatnonzero(np.isin(self._partner, reported))
        watched = reported[(self._watch_high | self._watch_low)[reported]]
        events: list[Event] = []
        if watched.size:
            trend = self._trend(watched)
            events += self._transitions(watched, [0, 1, 2], trend)
        faces = np.union1d(reported[self._partner[reported] >= 0], partners)
        if faces.size:
            events += self._transitions(faces, [3], self._mismatch(faces))
        return Detection(events, bits)

    def _trend(self, sensors: np.ndarray) -> _Verdict:
        cfg = self.config
        ts, value, valid = self.history.pick(sensors, 0.0, cfg.trend_window_s, _TREND_POINTS)
        dt = (ts[:, _J] - ts[:, _I]) / 1000.0
        pair_ok = valid[:, _I] & valid[:, _J] & (dt > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = robust_median((value[:, _J] - value[:, _I]) / dt, pair_ok)
        newest = self.history.newest[sensors]
        age = (ts - newest[:, None]) / 1000.0
        residual = value - slope[:, None] * age
        level = robust_median(residual, valid)
        noise = _MAD_SIGMA * robust_median(np.abs(residual - level[:, None]), valid)
        first = np.where(valid, ts, np.iinfo(np.int64).max).min(axis=1)
        span_s = (newest - first) / 1000.0
        enough = ((valid.sum(axis=1) >= _MIN_POINTS) & (span_s >= cfg.trend_window_s / 4)
                  & (np.abs(slope) * span_s >= _NOISE_SIGMAS * noise) & (slope != 0))
        high, low = self.registry.alarm_high[sensors], self.registry.alarm_low[sensors]
        with np.errstate(divide="ignore", invalid="ignore"):
            eta_high = np.where(slope > 0, np.maximum(high - level, 0) / slope, np.inf)
            eta_low = np.where(slope < 0, np.maximum(level - low, 0) / -slope, np.inf)
        horizon = cfg.trend_horizon_s
        watch_high, watch_low = self._watch_high[sensors], self._watch_low[sensors]

        _, ref, ref_ok = self.history.pick(sensors, cfg.level_shift_recent_s,
                                                cfg.level_shift_reference_s, _REFERENCE_POINTS)
        _, recent, recent_ok = self.history.pick(sensors, 0.0, cfg.level_shift_recent_s,
                                                 _RECENT_POINTS)
        baseline = robust_median(ref, ref_ok)
        spread = _MAD_SIGMA * robust_median(np.abs(ref - baseline[:, None]), ref_ok)
        shift = robust_median(recent, recent_ok) - baseline
        needed = np.maximum(cfg.level_shift_sigmas * spread, cfg.level_shift_min_fraction * high)
        judged = (self._gas[sensors] & (ref_ok.sum(axis=1) >= 2 * _MIN_POINTS)
                  & (recent_ok.sum(axis=1) >= 2))
        # A trend warning is a pre-alarm: it starts only while the level is still inside the
        # limit (past it, the limit alarm is in force); once started it lasts while the rise does.
        sets = np.stack([enough & watch_high & (level < high) & (eta_high <= horizon),
                         enough & watch_low & (level > low) & (eta_low <= horizon),
                         judged & (shift >= needed)])
        clears = np.stack([~watch_high | ~(eta_high <= _CLEAR_HORIZON * horizon),
                           ~watch_low | ~(eta_low <= _CLEAR_HORIZON * horizon),
                           ~self._gas[sensors] | (judged & (shift < needed / 2))])
        report = np.stack([level, level, baseline + shift])
        limit = np.stack([high, low, baseline + needed])
        return _Verdict(sets, clears, report, limit)

    def _mismatch(self, faces: np.ndarray) -> _Verdict:
        window = self.config.level_shift_recent_s
        partner = self._partner[faces]
        _, face, face_ok = self.history.pick(faces, 0.0, window, _RECENT_POINTS)
        _, ret, ret_ok = self.history.pick(partner, 0.0, window, _RECENT_POINTS)
        judged = (face_ok.sum(axis=1) >= 2) & (ret_ok.sum(axis=1) >= 2)
        gap = np.abs(robust_median(face, face_ok) - robust_median(ret, ret_ok))
        tolerance = self.config.face_return_tolerance
        return _Verdict((judged & (gap > tolerance))[None], (judged & (gap <= tolerance))[None],
                        gap[None], np.full((1, len(faces)), tolerance))

    def _transitions(self, sensors: np.ndarray, rows: list[int], v: _Verdict) -> list[Event]:
        before = self._state[rows][:, sensors]
        after = (before | v.sets) & ~(v.clears & ~v.sets)
        self._state[np.ix_(np.asarray(rows), sensors)] = after
        events = []
        for r, k in zip(*np.nonzero(after != before), strict=True):
            i, condition = int(sensors[k]), CONDITIONS[rows[r]]
            scope = self.registry.sensors[i].area if condition == "face_return_mismatch" else ""
            events.append(Event(i, "trend", condition, "warning", bool(after[r, k]),
                                int(self.history.newest[i]), float(v.value[r, k]),
                                float(v.limit[r, k]), scope))
        return events

    def active(self) -> list[tuple[int, str]]:
        row, sensor = np.nonzero(self._state)
        return sorted((int(i), CONDITIONS[r]) for r, i in zip(row, sensor, strict=True))

    def restore(self, active: list[tuple[int, str]]) -> None:
        for sensor, condition in active:
            self._state[CONDITIONS.index(condition), sensor] = True
