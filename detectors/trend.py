"""Early warning (超限预警, 瓦斯涌出异常): rising trends, sudden level shifts, face/return mismatch.

No regulation prescribes an algorithm (domain.md §5): these are jinmei's own, measured on
labelled scenarios by ``bench/evaluate_detectors.py``. All three look at each sensor's recent
history by time (:class:`~detectors.history.History`: clean in-order readings only —
calibrating, faulty and over-range readings never enter it — one kept per ``trend_eval_s``
(10 s) bin of the sensor's own feed time, the first in the bin).

Event time: a sensor is judged at every bin's first reading, on the history up to that reading
and no further, and the conditions are carried through those instants in time order — every
instant a batch covers, vectorized over all sensors and instants at once. A 10 s point is judged
at every reading, a 1 Hz point at one reading in ten; any split of the same readings into
messages and batches gives the same events with the same ``ts`` (the instant's reading), and a
point warns the same way on the same rise at 1 Hz, 2 s, 10 s or an irregular cadence
(``tests/test_detectors_rules.py``, ``tests/test_detector_batching.py``). Face/return mismatch
is judged at the face's instants once the return airway's feed has reached them too.

Back-fill (a reading older than its sensor's newest: a resend after an outage, 断电续传) never
enters the history: the instants it belongs to have been judged already, and a trend about a
past the limit detector has already spoken for would only be noise. A substation that resends
its buffer *before* new readings (the usual 断电续传 order) is in order and judged in full,
alerts carrying the readings' own times. A batch carrying more than ``history_s`` minus the
longest window (49 min by default) of one feed has its earliest instants skipped.

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
``trend_window_s`` (300 s), the level at the instant as the median of the residual-
corrected values, and the time to the limit = gap / slope. It needs 5 readings spanning half
the window (a sensor just added stays quiet) and a rise over the window of at least 4 robust σ
of the residuals (noise never trends). A second, short window (``trend_short_window_s``, 90 s,
9 readings) sees a fresh rise sooner than the long one, whose median slope lags until half its
pairs are on the rise; it may warn only when its rise also reaches 12 × the sensor's steady σ
(interquartile σ of the level-shift reference window, known once that holds 30 readings) —
tuned on the evaluation's clean feeds to add no false warnings. It clears once both forecasts
are beyond 2 × the horizon or the slope turns. Level shift clears below half its threshold;
its reference median and σ are taken as of the latest bin whose index is a multiple of a tenth
of its window (60 s of 600), once per sensor and such bin. Mismatch clears below the tolerance.
Only sensors with the relevant limit are watched (switches never are).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.history import History, stable_phase
from detectors.robust import MAD_SIGMA, robust_median, theil_sen
from detectors.segments import changes, hold, segment

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
_INSTANTS_AT_ONCE = 20_000  # bounds the windows' memory (~100 MB) however long a batch is
_DEVICE_BITS = np.uint16(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT)
_FACES = {"longwall_face": "longwall_return", "heading_face": "heading_return"}


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
        Sensors and their ``alarm_high`` / ``alarm_low`` limits.
    config : DetectorConfig
        ``history_s``, ``trend_window_s``, ``trend_short_window_s``, ``trend_horizon_s``,
        ``trend_eval_s``, ``level_shift_*``, ``face_return_tolerance``.

    Notes
    -----
    Cost per batch: the history append (O(n)) and, per instant (a bin's first reading: once per
    ``trend_eval_s`` of each sensor's feed), 2 × 120 pairwise slopes and a few small sorts; the
    level-shift reference (60 readings) once per tenth of its window. Memory: 12 bytes per bin,
    4.3 KB per sensor-hour whatever the cadence. Adds no status bits. ``now`` is not used: every
    decision is on the readings' own times.

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
        self._is_face = self._partner >= 0
        self._faces = np.flatnonzero(self._is_face)
        # The faces grouped by their return airway, to find a reported return's faces by a
        # search instead of a pass over every face.
        by_return = np.argsort(self._partner[self._faces], kind="stable")
        self._faces_by_return = self._faces[by_return]
        self._return_of_faces = self._partner[self._faces_by_return]
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)
        # One bin (one judging instant) per trend_eval_s of each sensor's feed, on grids
        # staggered across sensors so the work spreads evenly over batches.
        eval_ms = max(int(config.trend_eval_s * 1000), 1)
        phase = (stable_phase([s.key for s in registry.sensors]) * eval_ms).astype(np.int64)
        longest = max(config.trend_window_s, config.trend_short_window_s,
                      config.level_shift_recent_s + config.level_shift_reference_s)
        self.history = History(phase, config.trend_eval_s, max(config.history_s, longest))
        # An instant is judged only while every bin its windows read is still in the ring.
        self._reach_ms = (self.history.length - 1) * self.history.bin_ms - int(longest * 1000)
        # Level-shift reference per sensor (rows: median, robust σ, steady σ, readings) as of
        # the reference bin ``_reference_bin`` (a bin whose index is a multiple of
        # ``_refresh_bins``).
        self._refresh_bins = max(round(_REFERENCE_REFRESH * config.level_shift_reference_s
                                       / config.trend_eval_s), 1)
        self._reference_bin = np.full(n, np.iinfo(np.int64).min)
        self._reference_cache = np.stack([np.full(n, np.nan), np.full(n, np.nan),
                                          np.full(n, np.inf), np.zeros(n)])
        self._mismatch_done = np.zeros(n, dtype=np.int64)  # per face: judged up to this time

    def __repr__(self) -> str:
        return f"TrendDetector(sensors={len(self.registry)}, active={int(self._state.sum())})"

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        clean = np.flatnonzero((batch.status & _DEVICE_BITS) == 0)
        if clean.size == 0:
            return Detection([], bits)
        seg = segment(batch.sensor, clean)
        ts = batch.ts[seg.order]
        keep = self.history.in_order(seg, ts)  # back-fill stays out: see the module docstring
        kept, kept_ts = seg.sensor[keep], ts[keep]
        if kept.size == 0:
            return Detection([], bits)
        began = self.history.append(kept, kept_ts, batch.value[seg.order][keep])
        # Every bin this batch began is an instant to judge, as if its reading came alone.
        who, when = kept[began], kept_ts[began]
        judged = ((self._watch_high | self._watch_low)[who]
                  & (when > self.history.newest[who] - self._reach_ms))
        who, when = who[judged], when[judged]
        events: list[Event] = []
        # In slices, in order: a batch of a long replay holds millions of instants, and each
        # takes a few hundred bytes of windows while it is judged (state carries across).
        for lo in range(0, who.size, _INSTANTS_AT_ONCE):
            at = slice(lo, lo + _INSTANTS_AT_ONCE)
            events += self._decide(who[at], when[at], [0, 1, 2], self._trend(who[at], when[at]))
        reported = kept[np.r_[True, kept[1:] != kept[:-1]]]  # grouped by sensor: run heads
        # A face's instants are judged once its return airway's feed has reached them too.
        faces = self._faces_of(reported)
        if faces.size:
            events += self._mismatch_instants(faces)
        events.sort(key=lambda e: e.ts)  # stable: one sensor's transitions stay in order
        return Detection(events, bits)

    def _faces_of(self, reported: np.ndarray) -> np.ndarray:
        """The faces (ascending) among ``reported`` sensors or whose return is among them."""
        lo = np.searchsorted(self._return_of_faces, reported, side="left")
        count = np.searchsorted(self._return_of_faces, reported, side="right") - lo
        start = np.repeat(lo - np.cumsum(count) + count, count)
        via_return = self._faces_by_return[start + np.arange(int(count.sum()))]
        return np.unique(np.concatenate([reported[self._is_face[reported]], via_return]))

    def _mismatch_instants(self, faces: np.ndarray) -> list[Event]:
        """Judge face/return mismatch at each face instant both feeds have now reached."""
        history = self.history
        reached = np.minimum(history.newest[faces], history.newest[self._partner[faces]])
        since = np.maximum(self._mismatch_done[faces], reached - self._reach_ms)
        due = reached > since
        faces, reached, since = faces[due], reached[due], since[due]
        if faces.size == 0:
            return []
        self._mismatch_done[faces] = reached
        first = history.bin_of(faces, since)
        count = history.bin_of(faces, reached) - first + 1
        who = np.repeat(faces, count)
        offset = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
        when = history.ts[who, (np.repeat(first, count) + offset) % history.length]
        ok = (when > np.repeat(since, count)) & (when <= np.repeat(reached, count))
        who, when = who[ok], when[ok]
        if who.size == 0:
            return []
        return self._decide(who, when, [3], self._mismatch(who, when))

    def _fit(self, sensors: np.ndarray, when: np.ndarray, window_s: float, points: int,
             sigmas: float, noise_floor: np.ndarray) -> _Fit:
        """Theil–Sen over up to ``points`` readings of the window ending at ``when``; the rise
        over the readings' span must reach ``sigmas`` × the larger of the residuals' robust σ
        and ``noise_floor``."""
        ts, value, valid = self.history.pick(sensors, when, 0.0, window_s, points)
        # Age in seconds, 0 at the instant: the line's intercept is the level there.
        # (Readings in a ring are strictly increasing in time.)
        age = (ts - when[:, None]) / 1000.0
        line = theil_sen(value, age, valid)
        span_s = -np.where(valid, age, 0.0).min(axis=1)
        stands_out = ((line.points >= _MIN_POINTS) & (span_s >= window_s / 2)
                      & (np.abs(line.slope) * span_s
                         >= sigmas * np.fmax(line.noise, noise_floor))
                      & (line.slope != 0))
        return _Fit(line.slope, line.intercept, stands_out)

    def _reference(self, sensors: np.ndarray, when: np.ndarray) -> np.ndarray:
        """Level-shift reference per instant: rows median, robust σ, steady σ, readings.

        It moves slowly, and its 60 readings are the dearest pick and sort: it is worked out
        as of the latest reference bin (a multiple of ``_refresh_bins``) at or before each
        instant — a tenth of its window stale at most, the same for any batching — once per
        sensor and reference bin, and cached per sensor.
        """
        cfg = self.config
        history = self.history
        k = history.bin_of(sensors, when)
        ref_bin = k - k % self._refresh_bins
        first = np.r_[True, sensors[1:] != sensors[:-1]]
        previous = np.empty_like(ref_bin)
        previous[1:] = ref_bin[:-1]
        previous[first] = self._reference_bin[sensors[first]]
        fresh = ref_bin != previous
        at = np.flatnonzero(fresh)
        value = self._reference_cache[:, sensors]
        if at.size:
            s = sensors[at]
            end = history.phase_ms[s] + ref_bin[at] * history.bin_ms
            _, ref, ref_ok = history.pick(s, end, cfg.level_shift_recent_s,
                                          cfg.level_shift_reference_s, _REFERENCE_POINTS)
            points = ref_ok.sum(axis=1)
            ordered = np.sort(np.where(ref_ok, ref, np.nan), axis=1)  # NaN sorts last
            rows, last = np.arange(len(s)), np.maximum(points - 1, 0)
            baseline = 0.5 * (ordered[rows, last // 2] + ordered[rows, (last + 1) // 2])
            baseline = np.where(points > 0, baseline, np.nan)
            spread = MAD_SIGMA * robust_median(np.abs(ref - baseline[:, None]), ref_ok)
            # The MAD of a slow, 0.01-quantized feed is often a single step: the short window
            # weighs its rise against the interquartile σ, which sees the wander too.
            iqr = ordered[rows, (3 * last + 2) // 4] - ordered[rows, last // 4]
            steady = np.where(points >= _REFERENCE_POINTS // 2, iqr / _IQR_SIGMA, np.inf)
            fresh_values = np.stack([baseline, spread, steady, points])
            # Each instant takes the latest fresh reference of its sensor, else the cached one.
            latest = np.maximum.accumulate(np.where(fresh, np.arange(len(k)), -1))
            start = np.maximum.accumulate(np.where(first, np.arange(len(k)), 0))
            value = np.where(latest >= start, fresh_values[:, np.cumsum(fresh) - 1], value)
        last_of = np.r_[sensors[1:] != sensors[:-1], True]
        self._reference_bin[sensors[last_of]] = ref_bin[last_of]
        self._reference_cache[:, sensors[last_of]] = value[:, last_of]
        return value

    def _trend(self, sensors: np.ndarray, when: np.ndarray) -> _Verdict:
        cfg = self.config
        baseline, spread, steady_sigma, reference_points = self._reference(sensors, when)
        long = self._fit(sensors, when, cfg.trend_window_s, _TREND_POINTS, _NOISE_SIGMAS,
                         np.zeros(len(sensors)))
        # The short window sees a fresh rise sooner; it may fire only where its rise also stands
        # out against the sensor's steady noise (the reference window's σ).
        short = self._fit(sensors, when, cfg.trend_short_window_s, _SHORT_POINTS, _SHORT_SIGMAS,
                          steady_sigma)
        high, low = self.registry.alarm_high[sensors], self.registry.alarm_low[sensors]
        horizon = cfg.trend_horizon_s
        watch_high, watch_low = self._watch_high[sensors], self._watch_low[sensors]
        sets_high, sets_low = np.zeros(len(sensors), bool), np.zeros(len(sensors), bool)
        eta_high, eta_low = np.full(len(sensors), np.inf), np.full(len(sensors), np.inf)
        report = np.full(len(sensors), np.nan)
        # Two windows, each vectorized over every instant; the short one's forecast also holds a
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

        _, recent, recent_ok = self.history.pick(sensors, when, 0.0, cfg.level_shift_recent_s,
                                                 _RECENT_POINTS)
        shift = robust_median(recent, recent_ok) - baseline
        needed = np.maximum(cfg.level_shift_sigmas * spread, cfg.level_shift_min_fraction * high)
        judged = (self._gas[sensors] & (reference_points >= 2 * _MIN_POINTS)
                  & (recent_ok.sum(axis=1) >= 2))
        sets = np.stack([sets_high, sets_low, judged & (shift >= needed)])
        clears = np.stack([~watch_high | ~(eta_high <= _CLEAR_HORIZON * horizon),
                           ~watch_low | ~(eta_low <= _CLEAR_HORIZON * horizon),
                           ~self._gas[sensors] | (judged & (shift < needed / 2))])
        return _Verdict(sets, clears, np.stack([report, report, baseline + shift]),
                        np.stack([high, low, baseline + needed]))

    def _mismatch(self, faces: np.ndarray, when: np.ndarray) -> _Verdict:
        window = self.config.level_shift_recent_s
        partner = self._partner[faces]
        _, face, face_ok = self.history.pick(faces, when, 0.0, window, _RECENT_POINTS)
        _, ret, ret_ok = self.history.pick(partner, when, 0.0, window, _RECENT_POINTS)
        judged = (face_ok.sum(axis=1) >= 2) & (ret_ok.sum(axis=1) >= 2)
        gap = np.abs(robust_median(face, face_ok) - robust_median(ret, ret_ok))
        tolerance = self.config.face_return_tolerance
        return _Verdict((judged & (gap > tolerance))[None], (judged & (gap <= tolerance))[None],
                        gap[None], np.full((1, len(faces)), tolerance))

    def _decide(self, sensors: np.ndarray, when: np.ndarray, rows: list[int],
                v: _Verdict) -> list[Event]:
        """Carry each condition through the instants (grouped by sensor, in time order) as one
        reading at a time would: a set fires, a clear without a set ends, else it holds."""
        seg = segment(sensors)
        sets, clears = v.sets[:, seg.order], v.clears[:, seg.order]
        index = np.ix_(np.asarray(rows), seg.segment_sensor)
        state, before = hold(sets, sets | clears, self._state[index], seg)
        self._state[index] = state[:, seg.ends]
        events = []
        channel, position, arrival = changes(state, before, seg)
        for c, p, a in zip(channel.tolist(), position.tolist(), arrival.tolist(), strict=True):
            i, condition = int(sensors[a]), CONDITIONS[rows[c]]
            scope = self.registry.sensors[i].area if condition == "face_return_mismatch" else ""
            events.append(Event(i, "trend", condition, "warning", bool(state[c, p]),
                                int(when[a]), float(v.value[c, a]), float(v.limit[c, a]), scope))
        return events
