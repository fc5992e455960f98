"""Truthful no-data and episode states (issue 11 item 5): the rules as data tables.

- a silence ends only on a reading of its own sensor (substation: of its substation) — never
  on the clock, a clock stepped back, or a restart; a calibrating reading is such evidence;
- the value of a no-data event is a reading of its own sensor (NaN when none), never seconds;
- a silence is the span jinmei had no data: it ends when the first reading after it arrives
  (service clock), however old that reading is — a back-fill (断电续传) does not shorten it —
  and shows the oldest reading of the batch that ended it, so a resend cut into messages any
  way ends it alike (the hypothesis property in ``tests/test_no_data_splits.py``); an episode
  never ends before it began, whatever rule resolves it;
- a resolve held over a restart resolves once, not again as "start unknown";
- calibrating readings open and close nothing in any detector but no-data; a calibration in
  which the value moves is no stuck sensor.

Detector-level cases use the registry of ``tests/test_detectors_rules.py``: substation S01
(T1, T2, CO, KD) and S02 (JF, JF2, KD2), 10 s periods, so a silence is more than 30 s.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.channels.base import Notification, decode_notification, encode_notification
from alerts.dispatch import AlertDispatcher
from alerts.episodes import EpisodeBook, Names
from alerts.record import AlertRecord
from alerts.wire import decode_alert, encode_alert
from config.model import AlertsConfig, Limits, Registry
from config.readings import ReadingBatch, Status
from detectors.base import Event
from detectors.faults import SensorFaultDetector
from detectors.silence import NoDataDetector
from detectors.suite import build_detectors
from tests.test_detectors_rules import CONFIG, INDEX, REGISTRY, T0, point

CAL = int(Status.CALIBRATION)
S01, S02 = ("T1", "T2", "CO", "KD"), ("JF", "JF2", "KD2")
Row = tuple[str, float, float, int]  # sensor, seconds, value, status


def batch(rows: list[Row]) -> ReadingBatch:
    return ReadingBatch(np.array([INDEX[s] for s, *_ in rows], np.int32),
                        np.array([T0 + round(t * 1000) for _, t, *_ in rows], np.int64),
                        np.array([v for _, _, v, _ in rows]),
                        np.array([st_ for *_, st_ in rows], np.uint16))


def talk(sensors: tuple[str, ...], t: float, value: float = 0.3) -> list[Row]:
    return [(s, t, value, 0) for s in sensors]


def run(detector: NoDataDetector, steps: list[tuple[float, list[Row]]]
        ) -> list[tuple[str, str, bool, float, float]]:
    """Each step: (service clock in s, rows) — an update, or a tick when there are no rows.
    Events as (sensor, condition, firing, ts in s, value)."""
    out = []
    for now, rows in steps:
        found = (detector.update(batch(rows), T0 + round(now * 1000)) if rows
                 else detector.tick(T0 + round(now * 1000)))
        out += [(REGISTRY.sensors[e.sensor].id, e.condition, e.firing, (e.ts - T0) / 1000,
                 e.value) for e in found.events]
    return out


# T1 last heard at 0 (0.42 %); its siblings keep talking: silent at 31 s, value its last reading.
T1_GOES_SILENT = [(0.0, [*talk(S01[1:] + S02, 0.0), ("T1", 0.0, 0.42, 0)]),
                  (10.0, talk(S01[1:] + S02, 10.0)), (20.0, talk(S01[1:] + S02, 20.0)),
                  (31.0, talk(S01[1:] + S02, 31.0))]
SILENT_AT_31 = [("T1", "silent", True, 31.0, 0.42)]


@pytest.mark.parametrize(("then", "expected"), [
    # A live reading ends it, at that reading, with its value.
    ([(40.0, [("T1", 40.0, 0.5, 0)])], [("T1", "silent", False, 40.0, 0.5)]),
    # A back-fill across the start (any order in its message) ends it when it arrives, 60 s:
    # jinmei was blind until then. Its value is the oldest reading it brought.
    ([(60.0, [("T1", 45.0, 0.46, 0), ("T1", 25.0, 0.44, 0), ("T1", 35.0, 0.45, 0)])],
     [("T1", "silent", False, 60.0, 0.44)]),
    # A back-fill all older than the start: the same, never before the start.
    ([(60.0, [("T1", 20.0, 0.44, 0), ("T1", 10.0, 0.43, 0)])],
     [("T1", "silent", False, 60.0, 0.43)]),
    # A calibrating reading proves the sensor talks: it ends the silence; its standard gas is
    # no reading of the air, so the value shown is the last measured one before it ...
    ([(40.0, [("T1", 40.0, 2.0, CAL)])], [("T1", "silent", False, 40.0, 0.42)]),
    # ... also when measured readings come after it in the same batch: were they cut into a
    # later message, the first message would show 0.42 too.
    ([(60.0, [("T1", 45.0, 0.46, 0), ("T1", 35.0, 2.0, CAL)])],
     [("T1", "silent", False, 60.0, 0.42)]),
    # The clock ends nothing: not time passing, not a clock stepped back, not siblings talking.
    ([(45.0, []), (20.0, []), (25.0, talk(S01[1:] + S02, 25.0)), (50.0, talk(S01[1:], 50.0))],
     []),
], ids=["live", "backfill-across-start", "backfill-before-start", "calibrating",
        "calibrating-first-in-backfill", "clock"])
def test_a_silence_ends_only_on_a_reading_of_its_sensor(
        then: list[tuple[float, list[Row]]], expected: list[tuple]) -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    assert run(detector, T1_GOES_SILENT) == SILENT_AT_31
    assert run(detector, then) == expected


def test_a_sensor_never_heard_has_no_value_rather_than_a_number() -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    steps = [(t, talk(S01[1:] + S02, t)) for t in (0.0, 10.0, 20.0, 31.0)]
    [(sensor, condition, firing, ts, value)] = run(detector, steps)
    assert (sensor, condition, firing, ts) == ("T1", "silent", True, 31.0)
    assert math.isnan(value)


def test_a_sensor_silent_alone_stays_silent_while_its_substation_is_too() -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    run(detector, T1_GOES_SILENT)
    # S01 goes quiet as a whole: one substation condition; T1's own episode is not "back".
    assert run(detector, [(70.0, talk(S02, 70.0))]) == [
        ("T1", "substation_silent", True, 70.0, 0.42)]
    # CO reports: the substation is back (value: T1's own last reading, not CO's 3.0 ppm);
    # T1 is still silent. T2 and KD get their allowance from the substation's return (the rest
    # of its poll may be in the next message) ...
    assert run(detector, [(75.0, [("CO", 74.0, 3.0, 0)])]) == [
        ("T1", "substation_silent", False, 75.0, 0.42)]
    assert run(detector, [(76.0, [("T2", 75.0, 0.3, 0)])]) == []
    # ... and KD, not heard once CO is heard after that allowance, is silent on its own.
    assert run(detector, [(100.0, talk(S02, 100.0)), (106.0, [("CO", 106.0, 3.0, 0)])]) == [
        ("KD", "silent", True, 106.0, 0.3)]


def test_a_substation_names_the_silence_of_its_fastest_sensor_not_its_representative() -> None:
    slow_first = Registry.from_sensors([point("S", kind="co", period=30.0,
                                              limits=Limits(alarm_high=24.0)), point("F")])
    detector = NoDataDetector(slow_first, CONFIG)
    detector.update(ReadingBatch(np.array([0, 1], np.int32), np.full(2, T0), np.array([5.0, 0.3]),
                                 np.zeros(2, np.uint16)), T0)
    [event] = detector.tick(T0 + 30_001).events  # 3 × 10 s of the fast sensor, not 3 × 30 s
    assert (event.sensor, event.condition, event.limit, event.value) == (
        0, "substation_silent", 30.0, 5.0)


@pytest.mark.parametrize(("restored", "then", "expected"), [
    # A restored silent sensor stays silent through ticks and its siblings' readings ...
    ([("T1", "silent")], [(1000.0, []), (1001.0, talk(S01[1:] + S02, 1001.0)),
                          (1100.0, talk(S01[1:] + S02, 1100.0))], []),
    # ... and ends when its first reading arrives, with the oldest reading that brought.
    ([("T1", "silent")], [(1000.0, talk(S01[1:] + S02, 1000.0)),
                          (1001.0, [("T1", 950.0, 0.6, 0), ("T1", 900.0, 0.5, 0)])],
     [("T1", "silent", False, 1001.0, 0.5)]),
    # Calibration gas first: the last reading the open episode showed (recalled), not none.
    ([("T1", "silent")], [(1001.0, [("T1", 900.0, 2.0, CAL), ("T1", 950.0, 0.6, 0)])],
     [("T1", "silent", False, 1001.0, 0.42)]),
    # A restored substation stays silent while another substation talks ...
    ([("T1", "substation_silent")], [(1000.0, talk(S02, 1000.0)), (1020.0, []),
                                     (1025.0, talk(S02, 1025.0))], []),
    # ... and ends on a reading of any of its sensors, with its representative's last reading
    # before the silence (recalled), whatever the resend brings first.
    ([("T1", "substation_silent")], [(1000.0, talk(S02, 1000.0)),
                                     (1001.0, talk(S01, 990.0, 0.35))],
     [("T1", "substation_silent", False, 1001.0, 0.42)]),
], ids=["sensor-stays", "sensor-ends", "sensor-ends-calibrating", "substation-stays",
        "substation-ends"])
def test_a_restart_keeps_silence_until_evidence(
        restored: list[tuple[str, str]], then: list[tuple[float, list[Row]]],
        expected: list[tuple]) -> None:
    detector = NoDataDetector(REGISTRY, CONFIG)
    detector.restore([(INDEX[s], c) for s, c in restored])
    detector.recall({INDEX[s]: 0.42 for s, _ in restored})  # the open episodes' values
    assert run(detector, then) == expected


# ── the episode book: never an end before the start ────────────────────────────────────────

BOOK_T0 = 1_795_614_330_000


@pytest.mark.parametrize(("rule", "condition", "resolved_at", "ended_at"), [
    ("no_data", "silent", BOOK_T0 + 5_000, BOOK_T0 + 5_000),    # after the start: as it is
    ("no_data", "silent", BOOK_T0 - 20_000, BOOK_T0),           # back-filled: at the start
    ("limit_alarm", "alarm_high", BOOK_T0 - 1, BOOK_T0),        # out of order: at the start
    ("limit_alarm", "alarm_high", BOOK_T0, BOOK_T0),            # same instant: zero length
])
def test_an_episode_never_ends_before_it_started(rule: str, condition: str, resolved_at: int,
                                                 ended_at: int) -> None:
    book = EpisodeBook(REGISTRY, Names())
    [fired] = book.apply([Event(0, rule, condition, "alarm", True, BOOK_T0, 0.4, 30.0)])
    [resolved] = book.apply([Event(0, rule, condition, "alarm", False, resolved_at, 0.5, 30.0)])
    assert (resolved.id, resolved.started_at) == (fired.id, BOOK_T0)
    assert resolved.ended_at == resolved.ts == ended_at
    assert resolved.value == 0.5  # the resolving reading's value stays


def test_a_resolve_recorded_before_its_start_closes_its_episode(tmp_path: Path) -> None:
    """A record written before this rule holds resolves stamped before their start (negative
    durations): a restart must not reopen those episodes."""
    book = EpisodeBook(REGISTRY, Names())
    [fired] = book.apply([Event(0, "no_data", "silent", "alarm", True, BOOK_T0, 0.4, 30.0)])
    legacy = msgspec.structs.replace(fired, state="resolved", ts=BOOK_T0 - 20_000,
                                     ended_at=BOOK_T0 - 20_000)
    record = AlertRecord(tmp_path / "alerts.db")
    try:
        record.append([fired], "x", BOOK_T0)
        assert [a.id for a in record.open_episodes()] == [fired.id]
        record.append([legacy], "x", BOOK_T0 + 1)
        assert record.open_episodes() == []
    finally:
        record.close()


# ── a resolve held over a restart ──────────────────────────────────────────────────────────

def test_a_resolve_held_over_a_restart_resolves_once(tmp_path: Path) -> None:
    config = AlertsConfig(resolve_hold_s=30.0)

    def dispatcher() -> AlertDispatcher:
        return AlertDispatcher(REGISTRY, Names(), AlertRecord(tmp_path / "alerts.db"),
                               config_hash="x", publish=lambda t, p: None, config=config)

    first = dispatcher()
    first.restore()
    silent = Event(0, "no_data", "silent", "alarm", True, BOOK_T0, 0.42, 30.0)
    back = Event(0, "no_data", "silent", "alarm", False, BOOK_T0 + 60_000, 0.5, 30.0)
    first.apply([silent], BOOK_T0)
    assert first.apply([back], BOOK_T0 + 60_000) == []  # held for 30 s
    first.close()
    first.record.close()

    second = dispatcher()
    # The episode is open, but its detector had ended it: not firing there after the restart.
    assert second.restore() == []
    detector = NoDataDetector(REGISTRY, CONFIG)
    detector.restore(second.restore())
    assert detector.active() == []
    [resolved] = second.apply([], BOOK_T0 + 95_000)
    assert (resolved.state, resolved.ended_at, resolved.value) == (
        "resolved", BOOK_T0 + 60_000, 0.5)
    assert "start unknown" not in resolved.message
    assert second.record.open_episodes() == []
    second.close()
    second.record.close()


# ── calibrating readings open and close nothing ────────────────────────────────────────────

# (sensor, seconds after the previous reading — 0 and negative: out of order, value, calibrating)
story = st.lists(st.tuples(st.sampled_from(["T1", "T2", "KD"]), st.sampled_from([10, 1, 0, -5]),
                           st.sampled_from([0.0, 0.3, 0.31, 0.6, 0.9, 1.2, 1.6, 3.2, 4.5]),
                           st.booleans()), min_size=1, max_size=14)


@given(story, st.lists(st.integers(1, 13), max_size=5))
@settings(max_examples=300, deadline=None)
def test_calibrating_readings_change_no_event_of_any_detector_but_no_data(
        rows: list[tuple[str, int, float, bool]], cuts: list[int]) -> None:
    """Whatever calibrating readings (标校) sit among the others — in any batches, in or out
    of time order — every detector raises exactly what it raises without them (no-data aside:
    a calibrating reading is evidence that the sensor talks; and the stories are shorter than
    ``stuck_s``: a calibration in which the value moves restarts the stuck clock, see
    ``test_a_calibration_longer_than_stuck_s_is_no_stuck_sensor``)."""
    t, timed = 100.0, []
    for sensor, step, value, calibrating in rows:
        t += step
        timed.append((sensor, t, value, CAL if calibrating else 0))
    bounds = sorted({0, len(timed), *(c for c in cuts if c < len(timed))})
    batches = [timed[a:b] for a, b in itertools.pairwise(bounds)]

    def events(batches: list[list[Row]]) -> list[tuple[int, str, bool, int, float]]:
        suite = build_detectors(REGISTRY, CONFIG)
        out = []
        for rows in batches:
            if rows:
                one = batch(rows)
                out += [(e.sensor, e.condition, e.firing, e.ts, e.value)
                        for e in suite.update(one, int(one.ts.max())).events
                        if e.rule != "no_data"]
        return out

    without = [[r for r in rows if not r[3] & CAL] for rows in batches]
    assert events(batches) == events(without)


# The interlock clears when its cause ends at the reading that ended it, not at the service
# clock ``now`` (which moves with any reading, a calibrating one too). A feed shows power at
# 20 s: KD 10 s into T1's power-off, KD2 with both fans of 1105 stopped; then each story ends it.
FEED_FAULT_AT_20 = [(10.0, [("KD", 0.0, 1, 0), ("T1", 10.0, 1.6, 0)]), (20.0, [("KD", 20.0, 1, 0)])]
FAN_FAULT_AT_20 = [(10.0, [("JF", 0.0, 0, 0), ("JF2", 0.0, 0, 0), ("KD2", 0.0, 1, 0)]),
                   (20.0, [("KD2", 20.0, 1, 0)])]


@pytest.mark.parametrize(("story", "then", "cleared"), [
    # Power restored (复电) at 30 s; a calibration at 35 s in the same batch moves no stamp.
    (FEED_FAULT_AT_20, [(35.0, [("T1", 30.0, 0.0, 0), ("T1", 35.0, 1.8, CAL)])],
     ("KD", "feed_on_power_off", 30.0)),
    # The same restore handled late (a back-fill, a busy service): still at 30 s.
    (FEED_FAULT_AT_20, [(90.0, [("T1", 30.0, 0.0, 0)])], ("KD", "feed_on_power_off", 30.0)),
    # The feed shows no power at 25 s: at that reading.
    (FEED_FAULT_AT_20, [(40.0, [("KD", 25.0, 0, 0), ("T1", 35.0, 1.8, CAL)])],
     ("KD", "feed_on_power_off", 25.0)),
    # A local fan runs again at 30 s; its calibrating sibling at 35 s moves no stamp.
    (FAN_FAULT_AT_20, [(35.0, [("JF", 30.0, 1, 0), ("JF2", 35.0, 1, CAL)])],
     ("KD2", "feed_on_fan_stopped", 30.0)),
], ids=["power-restored", "power-restored-late", "feed-cut", "fan-running"])
def test_an_interlock_clears_at_the_reading_that_ended_it(
        story: list[tuple[float, list[Row]]], then: list[tuple[float, list[Row]]],
        cleared: tuple[str, str, float]) -> None:
    suite = build_detectors(REGISTRY, CONFIG)
    found = [(REGISTRY.sensors[e.sensor].id, e.condition, e.firing, (e.ts - T0) / 1000)
             for now, rows in story + then
             for e in suite.update(batch(rows), T0 + round(now * 1000)).events
             if e.rule == "feed_fault"]
    sensor, condition, at = cleared
    assert found == [(sensor, condition, True, 20.0), (sensor, condition, False, at)]


# ── a calibration is no stuck sensor ───────────────────────────────────────────────────────

def calibration_story(gas: float) -> list[Row]:
    """T1 at 0.05 % for 2 min, 16 min of calibration reading ``gas``, then 0.05 % again."""
    return ([("T1", float(t), 0.05, 0) for t in range(0, 120, 10)]
            + [("T1", float(t), gas, CAL) for t in range(120, 1080, 10)]
            + [("T1", float(t), 0.05, 0) for t in range(1080, 1120, 10)])


@pytest.mark.parametrize("one_batch", [False, True], ids=["reading-by-reading", "one-batch"])
@pytest.mark.parametrize(("gas", "stuck"), [
    (2.0, False),   # the head answered the standard gas: 0.05 before and after is no dead sensor
    (0.05, True),   # a head that shows 0.05 under gas too is stuck: 900 s unchanged
])
def test_a_calibration_longer_than_stuck_s_is_no_stuck_sensor(gas: float, stuck: bool,
                                                              one_batch: bool) -> None:
    faults = SensorFaultDetector(REGISTRY, CONFIG)
    rows = calibration_story(gas)
    batches = [rows] if one_batch else [[r] for r in rows]
    found = [(e.condition, e.firing) for b in batches
             for e in faults.update(batch(b), T0 + round(b[-1][1] * 1000)).events]
    assert found == ([("stuck", True)] if stuck else [])


# ── a value that is not there, on the wire and back ─────────────────────────────────────────

def test_no_reading_goes_out_as_null_and_comes_back_as_nan() -> None:
    """The outbox and the notification state are JSON: a no-data alert with no reading must
    survive them (msgspec writes NaN as null and refuses null for a float on the way back)."""
    [fired] = EpisodeBook(REGISTRY, Names()).apply(
        [Event(0, "no_data", "silent", "alarm", True, BOOK_T0, math.nan, 30.0)])
    assert b'"value":null' in encode_alert(fired)
    assert math.isnan(decode_alert(encode_alert(fired)).value)
    notification = Notification(key="k", receiver="desk", reason="first", mine="qipanjing",
                                area="1101", alerts=(fired,))
    [back] = decode_notification(encode_notification(notification)).alerts
    assert math.isnan(back.value) and back.limit == 30.0 and back.id == fired.id
    assert "无读数" in fired.message and "no reading" in fired.message
