"""The drift detector (``sensor_fault`` / ``drift``): a sensor creeping away from its air path.

A small longwall (face T1 and a shearer, upper corner T0, return T2, an intake that is no
neighbour), a heading (face and return) and a lone main-return point, fed every 10 s for a few
hours with slow AR(1) noise; each case drives one story through :class:`DriftDetector` at the
shipped settings (a 90 min window, ch4 0.2 %).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import DetectorConfig, Limits, Registry, Sensor
from config.readings import ReadingBatch, Status
from detectors.base import Event
from detectors.drift import DriftDetector

T0 = 1_800_000_000_000
STEP_S = 10
CONFIG = DetectorConfig()
METHANE = Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)
# (id, location, area, baseline % CH4)
POINTS = (("T1-1", "longwall_face", "1", 0.40), ("T1S-1", "shearer", "1", 0.40),
          ("T0-1", "longwall_upper_corner", "1", 0.35),
          ("T2-1", "longwall_return", "1", 0.30), ("T3-1", "longwall_intake", "1", 0.08),
          ("T1-2", "heading_face", "2", 0.35), ("T2-2", "heading_return", "2", 0.25),
          ("T-ZH", "main_return", "ZH", 0.30))
REGISTRY = Registry.from_sensors([
    Sensor("m", sid, "ch4", "%", location, location, area, "S1", float(STEP_S), 0.0, 4.0,
           METHANE) for sid, location, area, _ in POINTS])
INDEX = {sid: i for i, (sid, *_rest) in enumerate(POINTS)}
BASE = np.array([base for *_rest, base in POINTS])

Story = Callable[[float, np.ndarray], np.ndarray]  # (minutes, values) → values


def play(story: Story | None = None, hours: float = 3.0, seed: int = 1,
         status: Callable[[float], np.ndarray] | None = None,
         detector: DriftDetector | None = None, start_s: int = 0) -> list[Event]:
    """Every sensor every 10 s around its baseline (AR(1) noise, σ 0.01 %, 0.01 steps)."""
    detector = DriftDetector(REGISTRY, CONFIG) if detector is None else detector
    rng = np.random.default_rng(seed)
    noise = np.zeros(len(POINTS))
    events: list[Event] = []
    everyone = np.arange(len(POINTS), dtype=np.int32)
    for t in range(start_s, start_s + int(hours * 3600), STEP_S):
        noise = 0.9 * noise + rng.normal(0, 0.01 * np.sqrt(1 - 0.81), len(POINTS))
        value = BASE + noise
        if story is not None:
            value = story(t / 60, value)
        flags = np.zeros(len(POINTS), np.uint16) if status is None else status(t / 60)
        batch = ReadingBatch(everyone, np.full(len(POINTS), T0 + t * 1000, np.int64),
                             np.round(value, 2), flags)
        events += detector.update(batch, T0 + t * 1000).events
    return events


def creep(sensor: str, per_hour: float, from_min: float = 30.0,
          until_min: float = np.inf) -> Story:
    """``sensor`` creeps by ``per_hour`` % CH4 an hour from ``from_min`` (to ``until_min``)."""
    def story(minute: float, v: np.ndarray) -> np.ndarray:
        v = v.copy()
        v[INDEX[sensor]] += per_hour * (np.clip(minute, from_min, until_min) - from_min) / 60
        return v
    return story


def fired(events: list[Event]) -> list[tuple[str, str]]:
    return [(POINTS[e.sensor][0], e.condition) for e in events if e.firing]


def test_a_sensor_creeping_alone_drifts_and_only_it() -> None:
    events = play(creep("T2-1", 0.25))
    assert fired(events) == [("T2-1", "drift")]
    first = events[0]
    assert (first.rule, first.severity, first.limit) == ("sensor_fault", "warning", 0.2)
    assert first.value >= 0.2
    # judged once per bin (7.5 min): by then it has crept at most a bin and a window past 0.2 %
    crept = 0.25 * ((first.ts - T0) / 60_000 - 30) / 60
    assert 0.2 <= crept <= 0.2 + 0.25 * 1.5 + 0.25 / 8


def test_negative_drift_fires_with_a_negative_value() -> None:
    events = play(creep("T0-1", -0.3))
    assert fired(events) == [("T0-1", "drift")] and events[0].value <= -0.2


def test_two_sensors_drifting_apart_are_both_found_and_their_neighbour_is_not() -> None:
    # the sensor-drift scenario: T2 up, T0 down, the face between them steady
    both = creep("T2-1", 0.25)
    events = play(lambda m, v: creep("T0-1", -0.4)(m, both(m, v)))
    assert sorted(fired(events)) == [("T0-1", "drift"), ("T2-1", "drift")]


def test_the_whole_air_path_rising_together_is_gas_not_drift() -> None:
    # gas from the face, carried on diluted: the face rises most, the return a half of it
    def emission(minute: float, v: np.ndarray) -> np.ndarray:
        v = v.copy()
        rise = 0.4 * max(minute - 30, 0) / 60
        for sensor, share in (("T1-1", 1.0), ("T0-1", 0.8), ("T2-1", 0.5), ("T1-2", 1.0),
                              ("T2-2", 0.6)):
            v[INDEX[sensor]] += share * rise
        return v
    assert fired(play(emission, hours=4)) == []


def test_a_rise_the_path_follows_is_gas_even_where_one_neighbour_stays_put() -> None:
    # the face rises, corner and return follow (diluted); the shearer's point does not move
    def emission(minute: float, v: np.ndarray) -> np.ndarray:
        v = v.copy()
        rise = 0.3 * max(minute - 30, 0) / 60
        for sensor, share in (("T1-1", 1.0), ("T0-1", 0.6), ("T2-1", 0.5)):
            v[INDEX[sensor]] += share * rise
        return v
    assert fired(play(emission, hours=4)) == []


def test_the_production_cycle_scales_the_whole_path_and_is_no_drift() -> None:
    # a maintenance shift: methane of the whole area × 0.6 over half an hour, and back
    def shifts(minute: float, v: np.ndarray) -> np.ndarray:
        factor = np.interp(minute % 240, [0, 60, 90, 180, 210, 240], [1, 1, 0.6, 0.6, 1, 1])
        return v * factor
    assert fired(play(shifts, hours=8)) == []


def test_a_sensor_without_neighbours_is_never_judged() -> None:
    lone = play(lambda m, v: creep("T3-1", 0.5)(m, creep("T-ZH", 0.5)(m, v)))
    assert fired(lone) == []
    assert "watched=6" in repr(DriftDetector(REGISTRY, CONFIG))  # the intake and ZH are not


def test_in_a_heading_the_one_that_moved_drifts_not_its_steady_partner() -> None:
    assert fired(play(creep("T1-2", 0.3))) == [("T1-2", "drift")]


def test_drift_clears_once_recalibrated() -> None:
    # creeps, then calibration (标校) sets it right at 150 min
    def story(minute: float, v: np.ndarray) -> np.ndarray:
        return creep("T2-1", 0.3)(minute, v) if minute < 150 else v
    events = [e for e in play(story, hours=4) if e.sensor == INDEX["T2-1"]]
    assert [e.firing for e in events] == [True, False]
    cleared = events[1]
    assert (cleared.ts - T0) / 60_000 >= 150 and abs(cleared.value) < cleared.limit == 0.1


def test_a_creep_that_stops_keeps_firing_while_the_offset_stays() -> None:
    events = play(creep("T2-1", 0.3, until_min=120), hours=5)
    assert [(POINTS[e.sensor][0], e.firing) for e in events] == [("T2-1", True)]


def test_calibrating_faulty_and_over_range_readings_never_enter() -> None:
    # the creep happens only in readings the device marks: none of them counts
    marks = [Status.CALIBRATION, Status.SENSOR_FAULT, Status.OVER_RANGE]

    def status(minute: float) -> np.ndarray:
        flags = np.zeros(len(POINTS), np.uint16)
        if minute >= 30:
            flags[INDEX["T2-1"]] = int(marks[int(minute) % 3])
        return flags
    assert fired(play(creep("T2-1", 0.5), status=status)) == []


def test_restored_drift_is_not_fired_again_and_clears_when_the_window_is_steady() -> None:
    detector = DriftDetector(REGISTRY, CONFIG)
    detector.restore([(INDEX["T2-1"], "drift")])
    assert detector.active() == [(INDEX["T2-1"], "drift")]
    events = play(hours=3, detector=detector)
    assert [(POINTS[e.sensor][0], e.firing) for e in events] == [("T2-1", False)]
    assert detector.active() == []


def test_readings_older_than_the_ring_holds_are_dropped() -> None:
    def run(late: bool) -> list[Event]:
        detector = DriftDetector(REGISTRY, CONFIG)
        events = play(creep("T2-1", 0.25, from_min=90), hours=2, detector=detector)
        if late:  # five minutes of T2, far off, from 14 bins before the one being filled
            stale = ReadingBatch(np.full(30, INDEX["T2-1"], np.int32),
                                 T0 + 460_000 + np.arange(30, dtype=np.int64) * 10_000,
                                 np.full(30, 3.0), np.zeros(30, np.uint16))
            events += detector.update(stale, T0 + 7_200_000).events
        return events + play(creep("T2-1", 0.25, from_min=90), hours=2, detector=detector,
                             start_s=7200)
    assert run(late=True) == run(late=False)
    assert fired(run(late=False)) == [("T2-1", "drift")]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 4.0), min_size=len(POINTS), max_size=len(POINTS)),
       st.integers(0, 3600))
def test_constant_series_never_drift(levels: list[float], start_s: int) -> None:
    constant = np.round(np.array(levels), 2)
    assert fired(play(lambda m, v: constant, hours=2.5, start_s=start_s)) == []
