"""Early warning (超限预警, 瓦斯涌出异常): rising trends, sudden level shifts, face/return mismatch.

No regulation prescribes an algorithm (domain.md §5): these are jinmei's own, measured on
labelled scenarios by ``bench/evaluate_detectors.py``. All three look at each sensor's recent
history (:class:`~detectors.history.History`, clean in-order readings only: calibrating,
faulty and over-range readings never enter it) and are evaluated, vectorized over every sensor
that reported, at that sensor's newest reading — trend and level shift at most once per
``trend_eval_s`` (10 s) of the sensor's own feed time, on instants staggered across sensors so
the work spreads evenly over batches. A 10 s point is thus judged at every reading; a faster
feed is not, and a warning comes at most ``trend_eval_s`` late: under 2 % of the 600 s horizon
it forecasts over (measured: ``tests/test_detectors_rules.py``).

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
of the residuals (noise never trends). A second, short window (``trend_short_window_s``, 90 s,
9 readings) sees a fresh rise sooner than the long one, whose median slope lags until half its
pairs are on the rise; it may warn only when its rise also reaches 12 × the sensor's steady σ
(interquartile σ of the level-shift reference window, known once that holds 30 readings) —
tuned on the evaluation's clean feeds to add no false warnings. It clears once both forecasts
are beyond 2 × the horizon or the slope turns. Level shift clears below half its threshold;
its reference median and σ are cached and refreshed once the window has moved a tenth of its
length (60 s of 600). Mismatch clears below the tolerance.
Only sensors with the relevant limit are watched (switches never are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.history import History
from detectors.robust import MAD_SIGMA, robust_median, theil_sen
from detectors.segments import segment

__all__ = ["CONDITIONS", "TrendDetector"]

CONDITIONS = ("trend_high", "trend_low", "level_shift", "face_return_mismatch")
_TREND_POINTS = 16
_SHORT_POINTS = 9  # every reading of a 10 s sensor over the 90 s default
_RECENT_POINTS = 15
_REFERENCE_POINTS = 60
_REFERENCE_REFRESH = 0.1  # of level_shift_reference_s: the cached reference is this stale at most
_MIN_POINTS = 5
_NOISE_SIGMAS = 4.0
_SHORT_SIGMAS = 12.0  # of the steady σ: the short window must stand out far (tuned on clean feeds)
_IQR_SIGMA = 1.349  # interquartile range / σ for normal noise
_CLEAR_HORIZON = 2.0
_GOLDEN = 0.6180339887  # spreads each sensor's judging instants evenly over the cadence
_DEVICE_BITS = np.uint16(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT)
_FACES = {"longwall_face": "longwall_return", "heading_face": "heading_return"}


def _next_instant(newest: np.ndarray, phase: np.ndarray, every_ms: int) -> np.ndarray:
    """The first instant after ``newest`` on each sensor's grid ``phase + k × every_ms``."""
    return newest - (newest - phase) % every_ms + every_ms


@dataclass(frozen=True, slots=True)
class _Verdict:
    """Per evaluated sensor: set / clear per condition, and the value and limit to report."""

    sets: np.ndarray
    clears: np.ndarray
    value: np.ndarray
    limit: np.ndarray


@dataclass(frozen=True, slots=True)
class _Fit:
    """A robust line through one window of each sensor's history."""

    slope: np.ndarray  # per second
    level: np.ndarray  # at the newest reading
    stands_out: np.ndarray  # enough readings, and a rise beyond the noise


class TrendDetector(ConditionRows):
    """Warn before a limit is reached; see the module docstring for what and how.

    Parameters
    ----------
    registry : Registry
        Sensors, their periods (ring sizes) and ``alarm_high`` / ``alarm_low`` limits.
    config : DetectorConfig
        ``history_s``, ``trend_window_s``, ``trend_short_window_s``, ``trend_horizon_s``,
        ``trend_eval_s``, ``level_shift_*``, ``face_return_tolerance``.

    Notes
    -----
    Cost per batch: the history append (O(n)) and, per sensor due for judging (once per
    ``trend_eval_s`` of its feed), 2 × 120 pairwise slopes and a few small sorts; the level-shift
    reference (60 readings) once per tenth of its window. Adds no status bits. ``now`` is not
    used: every decision is on the readings' own times.

    Examples
    --------
    Face methane (T1) rising steadily from 0.3 % by 0.1 % a minute would reach its 1.0 % alarm
    limit at 420 s; the warning comes at the 16th reading (150 s, at 0.55 %), 4½ minutes early:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import T1, at, longwall, print_events, readings
    >>> trend = TrendDetector(longwall(), DetectorConfig())
    >>> for k in range(16):  # one reading every 10 s
    ...     print_events(trend.update(readings([(T1, 10 * k, 0.3 + k / 60)]), at(10 * k)))
    ('T1-1101', 'trend_high', True, 'warning', 0.55)
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, config: DetectorConfig) -> None:
        self.registry = registry
        self.config = config
        self.history = History(registry.period_s, config.history_s)
        n = len(registry)
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
        self._faces = np.flatnonzero(self._partner >= 0)
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)
        self._phase = (np.arange(n) * _GOLDEN) % 1.0
        self._eval_ms = max(int(config.trend_eval_s * 1000), 1)
        self._due = np.zeros(n, dtype=np.int64)  # judge a sensor once its feed reaches this
        # Level-shift reference per sensor (median, robust σ, readings) and when to refresh it.
        self._refresh_ms = max(int(_REFERENCE_REFRESH * config.level_shift_reference_s * 1000), 1)
        self._baseline = np.full(n, np.nan)
        self._spread = np.full(n, np.nan)
        self._steady_sigma = np.full(n, np.inf)
        self._reference_points = np.zeros(n, dtype=np.int64)
        self._reference_due = np.zeros(n, dtype=np.int64)

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
        kept = seg.sensor[keep]
        self.history.append(kept, ts[keep], batch.value[seg.order][keep])
        if kept.size == 0:
            return Detection([], bits)
        reported = kept[np.r_[True, kept[1:] != kept[:-1]]]  # grouped by sensor: run heads
        # A face's mismatch is re-judged when its return airway reports too.
        partners = self._faces[np.isin(self._partner[self._faces], reported)]
        watched = reported[(self._watch_high | self._watch_low)[reported]]
        newest = self.history.newest[watched]
        due = newest >= self._due[watched]
        watched, newest = watched[due], newest[due]
        self._due[watched] = _next_instant(newest, self._phase[watched] * self._eval_ms,
                                           self._eval_ms)
        events: list[Event] = []
        if watched.size:
            trend = self._trend(watched)
            events += self._transitions(watched, [0, 1, 2], trend)
        faces = np.union1d(reported[self._partner[reported] >= 0], partners)
        if faces.size:
            events += self._transitions(faces, [3], self._mismatch(faces))
        return Detection(events, bits)

    def _fit(self, sensors: np.ndarray, window_s: float, points: int, sigmas: float,
             noise_floor: np.ndarray) -> _Fit:
        """Theil–Sen over up to ``points`` readings of the window; the rise over the readings'
        span must reach ``sigmas`` × the larger of the residuals' robust σ and ``noise_floor``."""
        ts, value, valid = self.history.pick(sensors, 0.0, window_s, points)
        newest = self.history.newest[sensors]
        # Age in seconds, 0 at the newest reading: the line's intercept is the level there.
        # (Readings in a ring are strictly increasing in time.)
        age = (ts - newest[:, None]) / 1000.0
        line = theil_sen(value, age, valid)
        span_s = -np.where(valid, age, 0.0).min(axis=1)
        stands_out = ((line.points >= _MIN_POINTS) & (span_s >= window_s / 2)
                      & (np.abs(line.slope) * span_s
                         >= sigmas * np.fmax(line.noise, noise_floor))
                      & (line.slope != 0))
        return _Fit(line.slope, line.intercept, stands_out)

    def _reference(self, sensors: np.ndarray) -> None:
        """Refresh the cached level-shift reference of the sensors whose copy is a tenth of its
        window old: it moves slowly, and its 60 readings are the dearest pick and sort."""
        cfg = self.config
        newest = self.history.newest[sensors]
        stale = newest >= self._reference_due[sensors]
        sensors, newest = sensors[stale], newest[stale]
        if sensors.size == 0:
            return
        _, ref, ref_ok = self.history.pick(sensors, cfg.level_shift_recent_s,
                                           cfg.level_shift_reference_s, _REFERENCE_POINTS)
        points = ref_ok.sum(axis=1)
        ordered = np.sort(np.where(ref_ok, ref, np.nan), axis=1)  # NaN sorts last
        rows, last = np.arange(len(sensors)), np.maximum(points - 1, 0)
        baseline = 0.5 * (ordered[rows, last // 2] + ordered[rows, (last + 1) // 2])
        self._baseline[sensors] = np.where(points > 0, baseline, np.nan)
        self._spread[sensors] = MAD_SIGMA * robust_median(np.abs(ref - baseline[:, None]),
                                                           ref_ok)
        # The MAD of a slow, 0.01-quantized feed is often a single step: the short window
        # weighs its rise against the interquartile σ, which sees the wander too.
        iqr = ordered[rows, (3 * last + 2) // 4] - ordered[rows, last // 4]
        self._steady_sigma[sensors] = np.where(points >= _REFERENCE_POINTS // 2, iqr / _IQR_SIGMA,
                                               np.inf)
        self._reference_points[sensors] = points
        self._reference_due[sensors] = _next_instant(
            newest, self._phase[sensors] * self._refresh_ms, self._refresh_ms)

    def _trend(self, sensors: np.ndarray) -> _Verdict:
        cfg = self.config
        self._reference(sensors)
        baseline, spread = self._baseline[sensors], self._spread[sensors]
        long = self._fit(sensors, cfg.trend_window_s, _TREND_POINTS, _NOISE_SIGMAS,
                         np.zeros(len(sensors)))
        # The short window sees a fresh rise sooner; it may fire only where its rise also stands
        # out against the sensor's steady noise (the reference window's σ).
        short = self._fit(sensors, cfg.trend_short_window_s, _SHORT_POINTS, _SHORT_SIGMAS,
                          self._steady_sigma[sensors])
        high, low = self.registry.alarm_high[sensors], self.registry.alarm_low[sensors]
        horizon = cfg.trend_horizon_s
        watch_high, watch_low = self._watch_high[sensors], self._watch_low[sensors]
        sets_high, sets_low = np.zeros(len(sensors), bool), np.zeros(len(sensors), bool)
        eta_high, eta_low = np.full(len(sensors), np.inf), np.full(len(sensors), np.inf)
        report = np.full(len(sensors), np.nan)
        # Two windows, each vectorized over every sensor; the short one's forecast also holds a
        # warning only while its rise stands out.
        for fit, counts in ((long, True), (short, short.stands_out)):
            with np.errstate(divide="ignore", invalid="ignore"):
                up = np.where(fit.slope > 0, np.maximum(high - fit.level, 0) / fit.slope, np.inf)
                down = np.where(fit.slope < 0, np.maximum(fit.level - low, 0) / -fit.slope,
                                np.inf)
            # A trend warning is a pre-alarm: it starts only while the level is still inside the
            # limit (past it, the limit alarm is in force); once started it lasts while the rise
            # does.
            fires_high = fit.stands_out & watch_high & (fit.level < high) & (up <= horizon)
            fires_low = fit.stands_out & watch_low & (fit.level > low) & (down <= horizon)
            report = np.where(np.isnan(report) & (fires_high | fires_low), fit.level, report)
            sets_high |= fires_high
            sets_low |= fires_low
            eta_high = np.fmin(eta_high, np.where(counts, up, np.inf))
            eta_low = np.fmin(eta_low, np.where(counts, down, np.inf))
        report = np.where(np.isnan(report), long.level, report)

        _, recent, recent_ok = self.history.pick(sensors, 0.0, cfg.level_shift_recent_s,
                                                 _RECENT_POINTS)
        shift = robust_median(recent, recent_ok) - baseline
        needed = np.maximum(cfg.level_shift_sigmas * spread, cfg.level_shift_min_fraction * high)
        judged = (self._gas[sensors] & (self._reference_points[sensors] >= 2 * _MIN_POINTS)
                  & (recent_ok.sum(axis=1) >= 2))
        sets = np.stack([sets_high, sets_low, judged & (shift >= needed)])
        clears = np.stack([~watch_high | ~(eta_high <= _CLEAR_HORIZON * horizon),
                           ~watch_low | ~(eta_low <= _CLEAR_HORIZON * horizon),
                           ~self._gas[sensors] | (judged & (shift < needed / 2))])
        return _Verdict(sets, clears, np.stack([report, report, baseline + shift]),
                        np.stack([high, low, baseline + needed]))

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

