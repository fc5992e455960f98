"""Trend, sensor-fault, no-data and interlock detectors: data tables of one-sensor stories.

Each case is a series of (seconds, value, status) for sensors of a small registry and the
(condition, firing) transitions it must raise, in order; laws (a constant series never trends)
are property tests.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.errors import ConfigError
from config.loader import CONFIG_DIR, load_deployment
from config.model import DetectorConfig, Limits, Registry, Sensor
from config.readings import ReadingBatch, Status
from detectors.faults import SensorFaultDetector
from detectors.interlocks import InterlockDetector
from detectors.limits import LimitDetector
from detectors.silence import NoDataDetector
from detectors.trend import TrendDetector

T0 = 1_800_000_000_000
CH4 = Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)
FAULT, CAL, OVER = int(Status.SENSOR_FAULT), int(Status.CALIBRATION), int(Status.OVER_RANGE)


def point(id_: str, kind: str = "ch4", location: str = "longwall_face", area: str = "1101",
          substation: str = "S01", period: float = 10.0, limits: Limits = CH4) -> Sensor:
    return Sensor("qipanjing", id_, kind, "%", location, "", area, substation, period, 0.0, 4.0,
                  limits)


REGISTRY = Registry.from_sensors([
    point("T1"), point("T2", location="longwall_return"),
    point("CO", kind="co", limits=Limits(alarm_high=24.0)),
    point("KD", kind="feed", location="switchgear", limits=Limits()),
    point("JF", kind="local_fan", location="heading_fan", area="1105", substation="S02",
          limits=Limits()),
    point("JF2", kind="local_fan", location="heading_fan", area="1105", substation="S02",
          limits=Limits()),
    point("KD2", kind="feed", location="switchgear", area="1105", substation="S02",
          limits=Limits()),
])
INDEX = {s.id: i for i, s in enumerate(REGISTRY.sensors)}
CONFIG = DetectorConfig()


def feed(detector: object, rows: list[tuple[str, float, float, int]],
         tick_at: list[float] = ()) -> list[tuple[str, str, bool]]:  # type: ignore[assignment]
    """rows: (sensor, seconds, value, status), one batch each; ticks at the given seconds."""
    out = []
    for sensor, t, value, status in rows:
        batch = ReadingBatch(np.array([INDEX[sensor]], np.int32), np.array([T0 + int(t * 1000)]),
                             np.array([value]), np.array([status], np.uint16))
        found = detector.update(batch, T0 + int(t * 1000))  # type: ignore[attr-defined]
        out += [(REGISTRY.sensors[e.sensor].id, e.condition, e.firing) for e in found.events]
    for t in tick_at:
        found = detector.tick(T0 + int(t * 1000))  # type: ignore[attr-defined]
        out += [(REGISTRY.sensors[e.sensor].id, e.condition, e.firing) for e in found.events]
    return out


def series(sensor: str, values: list[float], period: float = 10.0, status: int = 0,
           start: float = 0.0) -> list[tuple[str, float, float, int]]:
    return [(sensor, start + k * period, v, status) for k, v in enumerate(values)]


# ── trend ───────────────────────────────────────────────────────────────────────────────────

def test_steady_rise_warns_more_than_five_minutes_before_the_alarm_limit() -> None:
    # 0.3 % rising 0.1 % a minute: reaches 1.0 % at 420 s.
    rise = [0.3 + 0.1 * k / 6 for k in range(43)]
    events = feed(TrendDetector(REGISTRY, CONFIG), series("T1", rise))
    first = events.index(("T1", "trend_high", True))
    assert first * 10 <= 420 - 300


def test_a_rise_already_past_the_alarm_limit_is_the_alarm_s_not_a_trend_warning() -> None:
    # 1.1 % rising 0.1 % a minute: the limit alarm is in force; a "trend towards the alarm
    # limit" warning would only confuse the dispatcher.
    rise = [1.1 + 0.1 * k / 6 for k in range(43)]
    events = feed(TrendDetector(REGISTRY, CONFIG), series("T1", rise))
    assert ("T1", "trend_high", True) not in events


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 3.0), st.integers(1, 80))
def test_a_constant_series_never_trends_or_shifts(level: float, n: int) -> None:
    events = feed(TrendDetector(REGISTRY, CONFIG), series("T1", [level] * n))
    assert events == []


def test_a_sensor_just_added_does_not_trend_on_two_readings() -> None:
    assert feed(TrendDetector(REGISTRY, CONFIG), series("T1", [0.2, 0.9])) == []


def test_noise_around_a_level_does_not_trend() -> None:
    rng = np.random.default_rng(7)
    values = (0.5 + rng.normal(0, 0.02, 360)).round(2).tolist()
    assert feed(TrendDetector(REGISTRY, CONFIG), series("T1", values)) == []


def test_sudden_gas_level_shift_fires_and_clears() -> None:
    rng = np.random.default_rng(1)
    values = (0.3 + rng.normal(0, 0.01, 80)).tolist() + [0.6] * 10 + [0.3] * 12
    events = feed(TrendDetector(REGISTRY, CONFIG), series("T1", values))
    assert ("T1", "level_shift", True) in events
    assert events[-1] == ("T1", "level_shift", False) or ("T1", "level_shift", False) in events


def test_face_and_return_disagreeing_is_a_mismatch() -> None:
    rows = sorted(series("T1", [1.2] * 8) + series("T2", [0.2] * 8, start=1), key=lambda r: r[1])
    assert ("T1", "face_return_mismatch", True) in feed(TrendDetector(REGISTRY, CONFIG), rows)


def first_trend_s(config: DetectorConfig, rows: list[tuple[str, float, float, int]],
                  registry: Registry = REGISTRY) -> float:
    detector = TrendDetector(registry, config)  # T1 is sensor 0 of each registry
    return next(row[1] for row in rows if ("T1", "trend_high", True) in feed(detector, [row]))


def quiet_then_rising(period: float = 10.0) -> list[tuple[str, float, float, int]]:
    # 0.30 % ± 0.01 for 15 min, then rising 0.1 % a minute: reaches 1.0 % at 900 + 420 s.
    rng = np.random.default_rng(3)
    return [("T1", t, round(0.30 + rng.normal(0, 0.005) + max(t - 900, 0) * 0.1 / 60, 2), 0)
            for t in np.arange(0, 1320, period)]


def test_a_fresh_rise_from_a_quiet_level_warns_five_minutes_ahead_by_the_short_window() -> None:
    rows = quiet_then_rising()
    assert first_trend_s(CONFIG, rows) <= 1320 - 300
    # The 300 s window alone (a short window as long) is later: the short one earned its lead.
    assert first_trend_s(replace(CONFIG, trend_short_window_s=300), rows) > 1320 - 300


def test_the_short_window_does_not_fire_on_a_bump_within_twelve_steady_sigmas() -> None:
    # 0.70 % ± 0.01 (steady σ ≈ 0.007), then a 0.07 % bump up and down over 2 minutes: if it
    # went on it would reach 1.0 % within the horizon, but it stands only ~10 σ out.
    rng = np.random.default_rng(5)
    t = np.arange(0, 1200, 10.0)
    bump = np.clip(0.07 - np.abs(t - 960) * 0.07 / 60, 0, None)
    values = (0.70 + rng.normal(0, 0.005, len(t)) + bump).round(2)
    events = feed(TrendDetector(REGISTRY, CONFIG), series("T1", values.tolist()))
    assert ("T1", "trend_high", True) not in events


CADENCES = {"1 Hz": np.arange(0, 2400, 1.0), "2 s": np.arange(0, 2400, 2.0),
            "10 s": np.arange(0, 2400, 10.0),
            "30 s": np.arange(0, 2400, 30.0),  # slower than the bins: windows with gaps
            "irregular": np.cumsum(np.random.default_rng(4).uniform(0.5, 15.0, 400))}


def slow_rise(times: np.ndarray, seed: int) -> list[tuple[str, float, float, int]]:
    # Issue 11's case: 0.30 % (± 0.005) for 10 min, then rising to 0.90 % over 20 min.
    rng = np.random.default_rng(seed)
    values = (0.30 + np.clip((times - 600) / 1200, 0, 1) * 0.60
              + rng.normal(0, 0.005, len(times))).round(2)
    return [("T1", float(t), float(v), 0) for t, v in zip(times, values, strict=True)
            if t < 2400]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("cadence", list(CADENCES))
def test_a_rise_warns_the_same_on_any_cadence(cadence: str, seed: int) -> None:
    # A 10 s methane point (its configured period) fed at 1 Hz, 2 s, 10 s, 30 s or irregularly
    # (0.5-15 s): the history keeps one reading per trend_eval_s bin, so each feed warns, and
    # within a bin and a few noise steps of the 10 s feed (the slope reaches 1.0 % within the
    # 600 s horizon at ~0.70 %, ~1,400 s). Measured: 1,370-1,436 s over these seeds.
    registry = Registry.from_sensors([point("T1")])
    at = first_trend_s(CONFIG, slow_rise(CADENCES[cadence], seed), registry)
    reference = first_trend_s(CONFIG, slow_rise(CADENCES["10 s"], seed), registry)
    assert reference - 60 <= at <= reference + 90


def test_a_sensor_is_judged_once_per_trend_eval_s_bin_at_its_first_reading() -> None:
    detector = TrendDetector(REGISTRY, replace(CONFIG, trend_eval_s=30.0))
    judged: list[int] = []
    real = detector._trend
    detector._trend = (  # type: ignore[method-assign]
        lambda sensors, when: judged.extend(when.tolist()) or real(sensors, when))
    feed(detector, [("T1", float(t), 0.3, 0) for t in range(0, 300)])
    bins = (np.array(judged) - detector.history.phase_ms[0]) // 30_000
    assert np.all(np.diff(bins) == 1) and len(judged) >= 300 // 30


def test_history_memory_is_by_time_not_by_cadence() -> None:
    # One bin per trend_eval_s: an hour of history is 361 bins of 12 bytes (4.3 KB) per sensor,
    # for a 1 Hz point as for a 10 s one.
    fast = Registry.from_sensors([point("T1", period=1.0), point("T2", period=10.0)])
    history = TrendDetector(fast, CONFIG).history
    assert history.ts.shape == (2, 361)
    assert (history.ts.nbytes + history.value.nbytes) / 2 <= 8 * 1024


def test_history_picks_across_the_ring_wrap_in_time_order() -> None:
    detector = TrendDetector(REGISTRY, replace(CONFIG, history_s=660.0))
    feed(detector, series("T1", [float(k) for k in range(100)]))  # 67 slots: wrapped
    end = np.array([detector.history.newest[INDEX["T1"]]])
    ts, value, valid = detector.history.pick(np.array([INDEX["T1"]]), end, 0.0, 590.0, 59)
    assert valid.all() and value[0].tolist() == [float(k) for k in range(41, 100)]
    assert np.all(np.diff(ts[0]) == 10_000)


def test_out_of_order_reading_stays_out_of_the_history() -> None:
    detector = TrendDetector(REGISTRY, CONFIG)
    feed(detector, series("T1", [0.3, 0.3, 0.3]))
    feed(detector, [("T1", 5.0, 3.0, 0)])  # older than the newest: ignored
    assert detector.history.newest[INDEX["T1"]] == T0 + 20_000


# ── sensor faults ───────────────────────────────────────────────────────────────────────────

FAULT_TABLE = [
    # device fault: set by status, cleared by a clean reading, calibration decides nothing
    ([(0, 0.3, FAULT), (10, 0.3, CAL), (20, 0.3, 0)],
     [("T1", "device_fault", True), ("T1", "device_fault", False)]),
    # over range (status or value) and negative drift
    ([(0, 4.5, 0), (10, 0.3, 0), (20, -0.2, 0), (30, 0.3, 0)],
     [("T1", "out_of_range", True), ("T1", "out_of_range", False),
      ("T1", "out_of_range", True), ("T1", "out_of_range", False)]),
    # 0.3 → 3.0 in 1 s is faster than methane can change (1 %/s); exactly 1 %/s is not
    ([(0, 0.3, 0), (1, 3.0, 0), (2, 0.3, 0), (12, 0.35, 0), (13, 1.35, 0)],
     [("T1", "spike", True), ("T1", "spike", False)]),
    # a calibration reading in between is not compared
    ([(0, 0.3, 0), (1, 2.0, CAL), (2, 0.31, 0)], []),
]


@pytest.mark.parametrize(("rows", "expected"), FAULT_TABLE)
def test_fault_table(rows: list[tuple[float, float, int]],
                     expected: list[tuple[str, str, bool]]) -> None:
    detector = SensorFaultDetector(REGISTRY, CONFIG)
    assert feed(detector, [("T1", t, v, s) for t, v, s in rows]) == expected


def test_stuck_value_fires_after_the_configured_time_and_clears_on_change() -> None:
    config = DetectorConfig(stuck_s=60)
    events = feed(SensorFaultDetector(REGISTRY, config), series("T1", [0.42] * 8 + [0.43]))
    assert events == [("T1", "stuck", True), ("T1", "stuck", False)]
    assert feed(SensorFaultDetector(REGISTRY, config), series("T1", [0.42] * 6)) == []


def test_methane_guarding_power_off_faults_are_critical_co_faults_warnings() -> None:
    detector = SensorFaultDetector(REGISTRY, CONFIG)
    batch = ReadingBatch(np.array([INDEX["T1"], INDEX["CO"]], np.int32), np.array([T0, T0]),
                         np.array([0.3, 5.0]), np.array([FAULT, FAULT], np.uint16))
    severity = {REGISTRY.sensors[e.sensor].id: e.severity
                for e in detector.update(batch, T0).events}
    assert severity == {"T1": "critical", "CO": "warning"}


def test_a_spike_above_the_limit_raises_the_limit_alarm_too() -> None:
    rows = [(0, 0.3, 0), (1, 3.0, 0)]
    limits = feed(LimitDetector(REGISTRY), [("T1", t, v, s) for t, v, s in rows])
    assert ("T1", "power_off", True) in limits


def transitions(detector: SensorFaultDetector, batches: list[list[tuple[str, float, float, int]]]
                ) -> list[tuple[str, str, bool, float]]:
    """Feed each list of rows as one batch; (sensor, condition, firing, seconds) of each event."""
    out = []
    for rows in batches:
        batch = ReadingBatch(np.array([INDEX[r[0]] for r in rows], np.int32),
                             np.array([T0 + int(r[1] * 1000) for r in rows]),
                             np.array([r[2] for r in rows]), np.array([r[3] for r in rows],
                                                                      np.uint16))
        out += [(REGISTRY.sensors[e.sensor].id, e.condition, e.firing, (e.ts - T0) / 1000)
                for e in detector.update(batch, T0).events]
    return out


SPIKE_TABLE = [
    # one-reading spike up (10 s period, far below max_rate): found at the returning reading
    ("T1", [0.3, 3.2, 0.3, 0.31], [("spike", True, 20.0), ("spike", False, 30.0)]),
    ("T1", [0.3, 0.95, 0.3, 0.3], [("spike", True, 20.0), ("spike", False, 30.0)]),
    # ... and down; back within half the jump counts as back
    ("T1", [0.8, 0.1, 0.6, 0.6], [("spike", True, 20.0), ("spike", False, 30.0)]),
    # a jump of spike_jump (0.25 %) or less is the air moving; a little more is a spike
    ("T1", [0.3, 0.5, 0.3, 0.3], []),
    ("T1", [0.67, 0.95, 0.67, 0.68], [("spike", True, 20.0), ("spike", False, 30.0)]),
    # a sustained jump (outburst) is no spike, nor a fall in two steps
    ("T1", [0.3, 3.2, 3.1, 3.0], []),
    ("T1", [0.3, 3.2, 1.9, 0.3], []),
    # a sensor flapping between two values: every reading from the first return is one
    ("T1", [0.3, 2.0, 0.3, 2.0, 0.3, 0.3], [("spike", True, 20.0), ("spike", False, 50.0)]),
    # kinds without a spike_jump (CO) are not checked this way
    ("CO", [0.3, 3.2, 0.3, 0.3], []),
]


@pytest.mark.parametrize(("sensor", "values", "expected"), SPIKE_TABLE)
def test_one_reading_spikes_in_any_batching(sensor: str, values: list[float],
                                            expected: list[tuple[str, bool, float]]) -> None:
    rows = series(sensor, values)
    want = [(sensor, *e) for e in expected]
    assert transitions(SensorFaultDetector(REGISTRY, CONFIG), [[r] for r in rows]) == want
    assert transitions(SensorFaultDetector(REGISTRY, CONFIG), [rows]) == want
    for cut in range(1, len(rows)):  # the last two readings carry across batches
        assert transitions(SensorFaultDetector(REGISTRY, CONFIG),
                           [rows[:cut], rows[cut:]]) == want


def test_a_one_reading_spike_still_reaches_the_limit_detector_and_is_not_out_of_order() -> None:
    rows = series("T1", [0.3, 3.2, 0.3]) + series("T2", [0.3, 3.2, 0.3])
    assert ("T1", "power_off", True) in feed(LimitDetector(REGISTRY), rows)
    # interleaved sensors in one batch keep their own predecessors
    events = transitions(SensorFaultDetector(REGISTRY, CONFIG), [rows])
    assert [(e[0], e[1], e[2]) for e in events] == [("T1", "spike", True), ("T2", "spike", True)]


@given(st.lists(st.sampled_from([0.3, 0.32, 1.0, 3.2]), min_size=3, max_size=12),
       st.integers(min_value=1, max_value=11))
@settings(max_examples=60, deadline=None)
def test_batching_never_changes_the_faults(values: list[float], cut: int) -> None:
    rows = series("T1", values)
    whole = transitions(SensorFaultDetector(REGISTRY, CONFIG), [rows])
    assert transitions(SensorFaultDetector(REGISTRY, CONFIG), [rows[:cut], rows[cut:]]) == whole


STUCK_TABLE = [
    # methane: stuck after 900 s (stuck_s_by_kind), not 3600 s; clears on any change
    ("T1", [0.42] * 91 + [0.43], CONFIG, [("stuck", True, 900.0), ("stuck", False, 910.0)]),
    ("T1", [0.42] * 90, CONFIG, []),
    # exactly 0 (clean intake air) and the bottom of the range never are stuck
    ("T1", [0.0] * 200, CONFIG, []),
    ("T1", [0.0] * 200, replace(CONFIG, stuck_s=60.0), []),
    # other kinds keep stuck_s (3600 s)
    ("CO", [2.0] * 200, CONFIG, []),
    ("CO", [2.0] * 361, CONFIG, [("stuck", True, 3600.0)]),
    # stuck_s bounds every kind; a listed kind replaces its default
    ("T1", [0.42] * 8, replace(CONFIG, stuck_s=60.0), [("stuck", True, 60.0)]),
    ("CO", [2.0] * 8, replace(CONFIG, stuck_s_by_kind=(("co", 60.0),)), [("stuck", True, 60.0)]),
    ("T1", [0.42] * 91, replace(CONFIG, stuck_s_by_kind=(("co", 60.0),)), []),
]


@pytest.mark.parametrize(("sensor", "values", "config", "expected"), STUCK_TABLE)
def test_stuck_time_per_kind(sensor: str, values: list[float], config: DetectorConfig,
                             expected: list[tuple[str, bool, float]]) -> None:
    rows = series(sensor, values)
    events = transitions(SensorFaultDetector(REGISTRY, config), [[r] for r in rows])
    assert events == [(sensor, *e) for e in expected]
    assert transitions(SensorFaultDetector(REGISTRY, config), [rows]) == events


def test_fault_events_name_the_limit_that_decided_them() -> None:
    detector = SensorFaultDetector(REGISTRY, CONFIG)
    rows = [*series("T1", [0.3, 3.2, 0.3] + [0.42] * 91),
            ("T1", 1e4, 0.3, 0), ("T1", 1e4 + 1, 3.0, 0)]  # the last: 2.7 %/s, too fast
    limits: set[tuple[str, float]] = set()
    for sensor, t, value, status in rows:
        batch = ReadingBatch(np.array([INDEX[sensor]], np.int32), np.array([T0 + int(t * 1000)]),
                             np.array([value]), np.array([status], np.uint16))
        limits |= {(e.condition, e.limit) for e in detector.update(batch, T0).events if e.firing}
    # a returning spike names spike_jump, a too-fast change max_rate, stuck its kind's time
    assert limits == {("spike", 0.25), ("stuck", 900.0), ("spike", 1.0)}


def test_a_value_at_the_bottom_of_its_range_is_never_stuck() -> None:
    thermometer = Sensor("qipanjing", "WD", "temperature", "°C", "longwall_return", "", "1101",
                         "S01", 10.0, 5.0, 40.0, Limits(alarm_high=26.0))
    registry = Registry.from_sensors([thermometer])
    detector = SensorFaultDetector(registry, replace(CONFIG, stuck_s=60.0))
    for value, fires in ((5.0, False), (12.0, True)):  # the floor, then a live value
        batch = ReadingBatch(np.zeros(8, np.int32), T0 + 10_000 * np.arange(8) + int(value * 1e6),
                             np.full(8, value), np.zeros(8, np.uint16))
        assert bool(detector.update(batch, T0).events) == fires


# ── no data ─────────────────────────────────────────────────────────────────────────────────

def test_a_sensor_dead_at_start_is_reported_and_a_whole_substation_is_one_condition() -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    others = ("T2", "CO", "KD", "JF", "JF2", "KD2")  # T1 never talks
    talk = [(s, t, 0.3, 0) for t in (0.0, 25.0) for s in others]
    assert feed(detector, talk, tick_at=[31.0]) == []  # S01 may be dying: wait for a sibling
    assert feed(detector, [("T2", 32.0, 0.3, 0)]) == [("T1", "silent", True)]
    # S02 talks, S01 falls silent as a whole: one condition on its first sensor. T1 has not
    # come back, so its own episode goes on (no "data back" without a reading).
    assert feed(detector, [(s, 40.0, 0.3, 0) for s in ("JF", "JF2", "KD2")],
                tick_at=[63.0]) == [("T1", "substation_silent", True)]
    # CO is back, so S01 is; T2 and KD get their allowance from its return (the rest of its
    # poll may come in the next message) and are silent on their own once it has passed.
    assert feed(detector, [("CO", 64.0, 3.0, 0)]) == [("T1", "substation_silent", False)]
    assert feed(detector, [(s, t, 0.3, 0) for t in (64.5, 90.0) for s in ("JF", "JF2", "KD2")]
                + [("CO", 94.0, 3.0, 0)]) == []
    assert feed(detector, [("CO", 95.0, 3.0, 0)]) == [("T2", "silent", True),
                                                      ("KD", "silent", True)]


def test_silence_is_more_than_exactly_k_periods() -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    feed(detector, [(s.id, 0.0, 0.3, 0) for s in REGISTRY.sensors])
    feed(detector, [(s.id, 30.0, 0.3, 0) for s in REGISTRY.sensors if s.id != "T1"])
    assert feed(detector, [], tick_at=[30.0]) == []
    assert feed(detector, [("T2", 30.001, 0.3, 0)]) == [("T1", "silent", True)]


def test_a_substation_is_silent_by_its_fastest_sensor_still_reporting() -> None:
    registry = Registry.from_sensors([point("F"), point("S", kind="co", period=30.0,
                                                        limits=Limits(alarm_high=24.0))])
    detector = NoDataDetector(registry, CONFIG)

    def heard(rows: list[tuple[int, float]], tick: float) -> list[tuple[int, str, bool]]:
        found = []
        for i, t in rows:
            batch = ReadingBatch(np.array([i], np.int32), np.array([T0 + int(t * 1000)]),
                                 np.array([0.3]), np.zeros(1, np.uint16))
            found += detector.update(batch, T0 + int(t * 1000)).events
        found += detector.tick(T0 + int(tick * 1000)).events
        return [(e.sensor, e.condition, e.firing) for e in found]

    # Everything stops at 0: the substation is gone after 3 × 10 s, not after its 30 s sensor's 90.
    assert heard([(0, 0.0), (1, 0.0)], 30.0) == []
    assert heard([], 30.001) == [(0, "substation_silent", True)]
    assert heard([(0, 40.0), (1, 40.0)], 40.0) == [(0, "substation_silent", False)]
    # The fast sensor alone dies: reported alone; the slow one's 30 s cadence is then the pace.
    assert heard([(1, 75.0)], 75.0) == [(0, "silent", True)]
    assert heard([(1, 105.0)], 134.0) == []
    assert heard([], 195.0) == []
    assert heard([], 195.001) == [(0, "substation_silent", True)]  # F still silent too


# ── interlocks ──────────────────────────────────────────────────────────────────────────────

def interlocks() -> tuple[LimitDetector, InterlockDetector]:
    limits = LimitDetector(REGISTRY)
    return limits, InterlockDetector(REGISTRY, limits, CONFIG)


def both(pair: tuple[LimitDetector, InterlockDetector],
         rows: list[tuple[str, float, float, int]]) -> list[tuple[str, str, bool]]:
    out = []
    for row in rows:
        feed(pair[0], [row])
        out += feed(pair[1], [row])
    return out


def test_feed_still_live_after_methane_power_off_is_a_feed_fault() -> None:
    rows = [("KD", 0.0, 1, 0), ("T1", 10.0, 1.6, 0), ("KD", 11.0, 1, 0), ("KD", 12.0, 1, 0),
            ("KD", 13.0, 0, 0)]
    assert both(interlocks(), rows) == [("KD", "feed_on_power_off", True),
                                        ("KD", "feed_on_power_off", False)]


def test_an_empty_batch_while_a_feed_fault_is_active_changes_nothing() -> None:
    pair = interlocks()
    both(pair, [("KD", 0.0, 1, 0), ("T1", 10.0, 1.6, 0), ("KD", 13.0, 1, 0)])
    assert pair[1].update(ReadingBatch.empty(), T0 + 14_000).events == []
    assert pair[1].active() == [(INDEX["KD"], "feed_on_power_off")]


def test_feed_cut_in_time_is_no_fault() -> None:
    rows = [("KD", 0.0, 1, 0), ("T1", 10.0, 1.6, 0), ("KD", 11.5, 0, 0), ("T1", 20.0, 0.5, 0)]
    assert both(interlocks(), rows) == []


def test_all_local_fans_stopped_with_power_on_breaks_the_wind_electric_lockout() -> None:
    rows = [("JF", 0.0, 1, 0), ("JF2", 0.0, 0, 0), ("KD2", 0.0, 1, 0),
            ("JF", 10.0, 0, 0), ("KD2", 11.0, 1, 0), ("KD2", 12.0, 1, 0), ("JF2", 13.0, 1, 0)]
    assert both(interlocks(), rows) == [("KD2", "feed_on_fan_stopped", True),
                                        ("KD2", "feed_on_fan_stopped", False)]


def test_standby_fan_running_keeps_the_heading_ventilated() -> None:
    rows = [("JF", 0.0, 0, 0), ("JF2", 0.0, 1, 0), ("KD2", 5.0, 1, 0)]
    assert both(interlocks(), rows) == []


# ── the [detectors] section ─────────────────────────────────────────────────────────────────

def deployment_file(tmp_path: Path, section: str) -> Path:
    mines = ", ".join(f'"{CONFIG_DIR / "mines" / m}"' for m in ("dayan.toml", "qipanjing.toml"))
    path = tmp_path / "d.toml"
    path.write_text(f"mines = [{mines}]\n[detectors]\n{section}\n", encoding="utf-8")
    return path


def test_detectors_section_is_read_with_max_rate_merged_over_the_defaults(tmp_path: Path) -> None:
    config = load_deployment(deployment_file(
        tmp_path, "trend_horizon_s = 300\nno_data_periods = 2\nmax_rate = { ch4 = 0.5 }"),
        environ={}).detectors
    assert (config.trend_horizon_s, config.no_data_periods) == (300.0, 2.0)
    assert (config.trend_eval_s, config.trend_short_window_s) == (10.0, 90.0)  # defaults
    assert dict(config.max_rate)["ch4"] == 0.5 and dict(config.max_rate)["co"] == 100.0


def test_spike_jump_and_stuck_s_by_kind_merge_over_their_defaults(tmp_path: Path) -> None:
    config = load_deployment(deployment_file(
        tmp_path, "spike_jump = { o2 = 2.0 }\nstuck_s_by_kind = { ch4 = 600, co = 1800 }"),
        environ={}).detectors
    assert dict(config.spike_jump) == {"ch4": 0.25, "o2": 2.0}
    assert dict(config.stuck_s_by_kind) == {"ch4": 600.0, "co": 1800.0}
    with pytest.raises(ConfigError, match="stuck_s_by_kind"):
        load_deployment(deployment_file(tmp_path, "stuck_s_by_kind = { ch4 = 0 }"), environ={})


@pytest.mark.parametrize(("section", "key"), [
    ("no_data_periods = 0.5", "no_data_periods"),
    ("history_s = 100", "history_s"),
    ("stuck_s = -1", "stuck_s"),
    ("trend_horizon = 600", "trend_horizon"),
    ("trend_eval_s = 0", "trend_eval_s"),
    ("trend_short_window_s = 4000", "history_s"),
])
def test_bad_detector_settings_name_the_key(tmp_path: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_deployment(deployment_file(tmp_path, section), environ={})
    assert f"detectors.{key}" in caught.value.location
