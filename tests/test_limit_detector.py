"""LimitDetector: statutory thresholds with hysteresis and fail-safe status handling.

Cases are data tables: a series of (value, status) for one sensor → the events it must raise
(reading index, condition, firing, limit) and the status bits of each reading. A property test
checks that batching never changes the result and that it matches a per-reading oracle.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import Limits, Registry, Sensor
from config.readings import ReadingBatch, Status
from detectors.base import Event
from detectors.limits import CONDITIONS, LimitDetector

CAL, OVER, FAULT = int(Status.CALIBRATION), int(Status.OVER_RANGE), int(Status.SENSOR_FAULT)


def sensor(id_: str, kind: str, location: str, limits: Limits) -> Sensor:
    return Sensor("qipanjing", id_, kind, "", location, "", "1101", "S1", 10.0, 0.0, 100.0,
                  limits)


SENSORS = [
    sensor("T1", "ch4", "longwall_face",
           Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)),
    # Not statutory: a release below the alarm value, to see the state hold in between.
    sensor("BAND", "ch4", "longwall_face", Limits(alarm_high=1.0, release_high=0.8)),
    sensor("TEMP", "temperature", "longwall_face",
           Limits(warning_high=26.0, alarm_high=30.0, inclusive=False)),
    sensor("WIND", "wind_speed", "longwall_face",
           Limits(alarm_low=0.25, alarm_high=4.0, inclusive=False)),
    sensor("O2", "o2", "face_intake", Limits(alarm_low=20.0, inclusive=False)),
    sensor("GOAF", "o2", "goaf", Limits()),
    # Release values left out: the limit itself is the release (config/limits.toml).
    sensor("BARE", "ch4", "heading_face", Limits(alarm_high=1.0, power_off=1.5)),
]
REGISTRY = Registry.from_sensors(SENSORS)
INDEX = {s.id: i for i, s in enumerate(SENSORS)}


def batch(sensors: list[int], values: list[float], statuses: list[int],
          first_ts: int = 1000) -> ReadingBatch:
    n = len(values)
    return ReadingBatch(np.array(sensors, np.int32),
                        first_ts + 1000 * np.arange(n, dtype=np.int64),
                        np.array(values, np.float64), np.array(statuses, np.uint16))


A, P = int(Status.ALARM), int(Status.POWER_OFF)

# (sensor, [(value, status)], [(reading, condition, firing, limit)], bits per reading)
TABLE = [
    ("T1", [(0.5, 0), (0.99, 0)], [], [0, 0]),
    ("T1", [(0.5, 0), (1.0, 0)], [(1, "alarm_high", True, 1.0)], [0, A]),
    ("T1", [(1.5, 0)], [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5)], [A | P]),
    ("T1", [(1.49, 0)], [(0, "alarm_high", True, 1.0)], [A]),
    # Restore is "< 1.0": exactly 1.0 keeps the power off; 0.99 restores and ends the alarm.
    ("T1", [(1.6, 0), (1.0, 0), (0.99, 0)],
     [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5),
      (2, "alarm_high", False, 1.0), (2, "power_off", False, 1.0)], [A | P, A | P, 0]),
    # Between power-off and restore the power stays off (hysteresis).
    ("T1", [(1.6, 0), (1.2, 0), (1.49, 0), (1.5, 0), (0.9, 0)],
     [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5),
      (4, "alarm_high", False, 1.0), (4, "power_off", False, 1.0)],
     [A | P, A | P, A | P, A | P, 0]),
    ("BAND", [(1.0, 0), (0.9, 0), (0.8, 0), (0.79, 0), (0.95, 0)],
     [(0, "alarm_high", True, 1.0), (3, "alarm_high", False, 0.8)], [A, A, A, 0, 0]),
    ("BARE", [(1.5, 0), (1.0, 0), (0.99, 0)],
     [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5),
      (1, "power_off", False, 1.5), (2, "alarm_high", False, 1.0)], [A | P, A, 0]),
    # Strict limits (煤矿安全规程 第655条 "> 26 °C"): the limit itself is allowed.
    ("TEMP", [(26.0, 0), (26.01, 0), (30.0, 0), (30.5, 0), (30.0, 0), (26.0, 0)],
     [(1, "warning_high", True, 26.0), (3, "alarm_high", True, 30.0),
      (4, "alarm_high", False, 30.0), (5, "warning_high", False, 26.0)], [0, 0, 0, A, 0, 0]),
    # Air velocity 0.25–4 m/s allows both ends; too slow and too fast are separate conditions.
    ("WIND", [(0.25, 0), (0.24, 0), (0.25, 0), (4.0, 0), (4.01, 0), (4.0, 0)],
     [(1, "alarm_low", True, 0.25), (2, "alarm_low", False, 0.25),
      (4, "alarm_high", True, 4.0), (5, "alarm_high", False, 4.0)], [0, A, 0, 0, A, 0]),
    ("O2", [(20.0, 0), (19.99, 0), (19.0, 0), (20.0, 0)],
     [(1, "alarm_low", True, 20.0), (3, "alarm_low", False, 20.0)], [0, A, A, 0]),
    ("GOAF", [(0.0, 0), (99.0, OVER)], [], [0, 0]),
    # Calibration (标校): standard gas at 1–2 % is stored but never alarms, nor clears.
    ("T1", [(1.8, CAL), (2.0, CAL), (0.3, 0)], [], [0, 0, 0]),
    ("T1", [(1.6, 0), (0.2, CAL), (0.3, 0)],
     [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5),
      (2, "alarm_high", False, 1.0), (2, "power_off", False, 1.0)], [A | P, A | P, 0]),
    # A faulty head reading 0 must not end a methane alarm, but a fault reading can start one.
    ("T1", [(1.6, 0), (0.0, FAULT), (0.0, 0)],
     [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5),
      (2, "alarm_high", False, 1.0), (2, "power_off", False, 1.0)], [A | P, A | P, 0]),
    ("T1", [(1.2, FAULT)], [(0, "alarm_high", True, 1.0)], [A]),
    # Over-range (超量程): a saturated element counts as above every upper limit, clears nothing.
    ("T1", [(0.3, 0), (0.0, OVER), (0.5, OVER), (0.5, 0)],
     [(1, "alarm_high", True, 1.0), (1, "power_off", True, 1.5),
      (3, "alarm_high", False, 1.0), (3, "power_off", False, 1.0)], [0, A | P, A | P, 0]),
    ("T1", [(4.0, OVER | CAL)], [], [0]),
    ("T1", [(4.0, OVER | FAULT)], [(0, "alarm_high", True, 1.0), (0, "power_off", True, 1.5)],
     [A | P]),
    ("WIND", [(0.1, 0), (30.0, OVER), (1.0, 0)],
     [(0, "alarm_low", True, 0.25), (1, "alarm_high", True, 4.0),
      (2, "alarm_high", False, 4.0), (2, "alarm_low", False, 0.25)], [A, A, 0]),
    ("O2", [(19.0, 0), (25.0, OVER), (20.5, 0)],
     [(0, "alarm_low", True, 20.0), (2, "alarm_low", False, 20.0)], [A, A, 0]),
]


@pytest.mark.parametrize(("sensor_id", "series", "expected", "bits"), TABLE)
def test_series(sensor_id: str, series: list[tuple[float, int]],
                expected: list[tuple[int, str, bool, float]], bits: list[int]) -> None:
    i = INDEX[sensor_id]
    readings = batch([i] * len(series), [v for v, _ in series], [s for _, s in series])
    found = LimitDetector(REGISTRY).update(readings, now=0)
    got = [(int((e.ts - 1000) // 1000), e.condition, e.firing, e.limit) for e in found.events]
    assert got == expected
    assert found.status_bits.tolist() == bits
    assert found.status_bits.dtype == np.uint16
    assert all(e.sensor == i and e.value == series[(e.ts - 1000) // 1000][0]
               for e in found.events)


def test_rules_and_severities() -> None:
    found = LimitDetector(REGISTRY).update(
        batch([INDEX["TEMP"], INDEX["TEMP"], INDEX["T1"]], [27.0, 31.0, 1.5], [0, 0, 0]), now=0)
    assert [(e.condition, e.rule, e.severity) for e in found.events] == [
        ("warning_high", "limit_alarm", "warning"),
        ("alarm_high", "limit_alarm", "alarm"),
        ("alarm_high", "limit_alarm", "alarm"),
        ("power_off", "limit_power_off", "critical"),
    ]


def test_events_in_arrival_order_across_sensors() -> None:
    t1, o2 = INDEX["T1"], INDEX["O2"]
    found = LimitDetector(REGISTRY).update(
        batch([o2, t1, o2, t1], [19.0, 1.2, 21.0, 0.5], [0, 0, 0, 0]), now=0)
    assert [(e.sensor, e.condition, e.firing) for e in found.events] == [
        (o2, "alarm_low", True), (t1, "alarm_high", True),
        (o2, "alarm_low", False), (t1, "alarm_high", False)]
    assert found.status_bits.tolist() == [A, A, 0, 0]


def test_state_carries_across_batches() -> None:
    detector = LimitDetector(REGISTRY)
    t1 = INDEX["T1"]
    assert len(detector.update(batch([t1], [1.7], [0]), now=0).events) == 2
    held = detector.update(batch([t1], [1.2], [0], first_ts=2000), now=0)
    assert held.events == [] and held.status_bits.tolist() == [A | P]
    assert detector.active() == [(t1, "alarm_high"), (t1, "power_off")]
    cleared = detector.update(batch([t1], [0.4], [0], first_ts=3000), now=0)
    assert [e.firing for e in cleared.events] == [False, False]
    assert detector.active() == []


def test_restore_carries_firing_conditions_over_a_restart() -> None:
    t1, wind = INDEX["T1"], INDEX["WIND"]
    before = LimitDetector(REGISTRY)
    before.update(batch([t1, wind], [1.7, 0.1], [0, 0]), now=0)
    after = LimitDetector(REGISTRY)
    after.restore(before.active())
    assert after.active() == before.active() == [
        (t1, "alarm_high"), (t1, "power_off"), (wind, "alarm_low")]
    # Still firing: no second start, bits set; a clearing reading resolves.
    still = after.update(batch([t1], [1.6], [0]), now=0)
    assert still.events == [] and still.status_bits.tolist() == [A | P]
    assert len(after.update(batch([t1], [0.1], [0]), now=0).events) == 2
    # Without the restore the same reading says nothing.
    assert LimitDetector(REGISTRY).update(batch([t1], [0.1], [0]), now=0).events == []


def test_restore_refuses_unknown_condition() -> None:
    with pytest.raises(ValueError, match="trend"):
        LimitDetector(REGISTRY).restore([(0, "trend")])


def test_empty_batch() -> None:
    found = LimitDetector(REGISTRY).update(ReadingBatch.empty(), now=0)
    assert found.events == [] and found.status_bits.shape == (0,)


def test_empty_batch_while_every_sensor_fires() -> None:
    detector = LimitDetector(REGISTRY)
    detector.restore([(i, "alarm_high") for i in range(len(SENSORS))])
    assert detector.update(ReadingBatch.empty(), now=0).events == []
    assert len(detector.active()) == len(SENSORS)


def test_repr_counts_active() -> None:
    detector = LimitDetector(REGISTRY)
    detector.update(batch([INDEX["T1"]], [1.6], [0]), now=0)
    assert repr(detector) == f"LimitDetector(sensors={len(SENSORS)}, active=2)"


# ── Property: batching never changes events or bits, and matches a per-reading oracle ────────

def oracle(readings: list[tuple[int, float, int]],
           restored: list[tuple[int, str]]) -> tuple[list[tuple], list[int]]:
    """The table of the brief, one reading at a time, straight from Limits."""
    state: dict[tuple[int, str], bool] = dict.fromkeys(restored, True)
    events, bits = [], []
    for n, (i, v, status) in enumerate(readings):
        lim = SENSORS[i].limits
        cal, over, fault = status & CAL, status & OVER, status & FAULT

        def ge(a: float, b: float | None, lim: Limits = lim) -> bool:
            return b is not None and (a >= b if lim.inclusive else a > b)

        channels = {
            "warning_high": (ge(v, lim.warning_high), lim.warning_high is not None
                             and not ge(v, lim.warning_high), True, lim.warning_high),
            "alarm_high": (ge(v, lim.alarm_high), lim.alarm_high is not None
                           and not ge(v, lim.release_high or lim.alarm_high), True,
                           lim.alarm_high),
            "alarm_low": (ge(-v, None if lim.alarm_low is None else -lim.alarm_low),
                          lim.alarm_low is not None
                          and not ge(-v, -(lim.release_low or lim.alarm_low)), False,
                          lim.alarm_low),
            "power_off": (ge(v, lim.power_off), lim.power_off is not None
                          and not ge(v, lim.restore or lim.power_off), True, lim.power_off),
        }
        for condition in CONDITIONS:
            fires, clears, upper, limit = channels[condition]
            if over:
                fires, clears = upper and limit is not None, False
            if cal:
                fires = clears = False
            if fault:
                clears = False
            was = state.get((i, condition), False)
            now = True if fires else False if clears else was
            if now != was:
                events.append((n, i, condition, now))
            state[(i, condition)] = now
        bits.append((A if state.get((i, "alarm_high")) or state.get((i, "alarm_low")) else 0)
                    | (P if state.get((i, "power_off")) else 0))
    return events, bits


def run(restored: list[tuple[int, str]], readings: list[tuple[int, float, int]],
        cuts: list[int]) -> tuple[list[tuple], list[int]]:
    detector = LimitDetector(REGISTRY)
    detector.restore(restored)
    events: list[Event] = []
    bits: list[int] = []
    bounds = [0, *sorted(set(cuts)), len(readings)]
    for lo, hi in itertools.pairwise(bounds):
        part = readings[lo:hi]
        b = ReadingBatch(np.array([r[0] for r in part], np.int32),
                         np.arange(lo, hi, dtype=np.int64),
                         np.array([r[1] for r in part], np.float64),
                         np.array([r[2] for r in part], np.uint16))
        found = detector.update(b, now=0)
        events += found.events
        bits += found.status_bits.tolist()
    return [(e.ts, e.sensor, e.condition, e.firing) for e in events], bits


# Values on and around every threshold of the table, so edges are hit often.
EDGES = sorted({x for s in SENSORS for x in (
    s.limits.alarm_high, s.limits.release_high, s.limits.power_off, s.limits.restore,
    s.limits.warning_high, s.limits.alarm_low) if x is not None})
VALUES = st.one_of(st.sampled_from(EDGES),
                   st.sampled_from([math.nextafter(x, d) for x in EDGES for d in (0, 99)]),
                   st.floats(-1.0, 40.0, allow_nan=False))
READINGS = st.lists(st.tuples(st.integers(0, len(SENSORS) - 1), VALUES,
                              st.sampled_from([0, 0, 0, CAL, OVER, FAULT, OVER | FAULT])),
                    max_size=60)


# Conditions firing before the first reading (a restart), including "every sensor fires".
RESTORED = st.one_of(
    st.lists(st.tuples(st.integers(0, len(SENSORS) - 1), st.sampled_from(CONDITIONS)),
             max_size=6),
    st.sampled_from(CONDITIONS).map(lambda c: [(i, c) for i in range(len(SENSORS))]))


@settings(max_examples=400, deadline=None)
@given(readings=READINGS, cuts=st.lists(st.integers(0, 60), max_size=10), restored=RESTORED)
def test_batching_never_changes_events_or_bits(readings: list[tuple[int, float, int]],
                                               cuts: list[int],
                                               restored: list[tuple[int, str]]) -> None:
    cuts = [c for c in cuts if c <= len(readings)]
    whole = run(restored, readings, [])
    one_by_one = run(restored, readings, list(range(len(readings))))
    split = run(restored, readings, cuts)
    assert whole == one_by_one == split
    expected_events, expected_bits = oracle(readings, restored)
    assert whole[0] == [(n, i, c, f) for n, i, c, f in expected_events]
    assert whole[1] == expected_bits
