"""Same readings, same events: detection does not depend on how readings are batched (issue 18).

A random feed of several mines — methane rising, spiking, stuck, drifting, shifting or just
noisy, feeds and local fans switching, each sensor at 1 Hz, 2 s, 10 s or an irregular cadence —
goes through every reading-driven detector of the suite (limits, faults, trend, drift,
interlocks) in time order,
split into random batches; the events (sensor, rule, condition, firing, ts, value) must be the
same for every split. The no-data detector is left out: it is driven by the service clock
(``tick(now)``), not by the readings; ``tests/test_no_data_splits.py`` holds its property (any
cut of an outage's back-fill gives the same no-data episodes).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import DetectorConfig, Limits, Registry, Sensor
from config.readings import ReadingBatch
from detectors.base import Event
from detectors.drift import DriftDetector
from detectors.faults import SensorFaultDetector
from detectors.interlocks import InterlockDetector
from detectors.limits import LimitDetector
from detectors.suite import DetectorSuite
from detectors.trend import TrendDetector

T0 = 1_800_000_000_000
DURATION_S = 2000  # under the 24 drift bins (100 s each) and the trend ring's reach for one batch
CH4 = Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)
# drift over 20 min (bins of 100 s) so that a 33 min feed can drift; the rest as shipped.
CONFIG = replace(DetectorConfig(), drift_window_s=1200.0)
LOCATIONS = ("longwall_face", "longwall_return", "longwall_upper_corner", "heading_face",
             "heading_return")


def registry() -> Registry:
    sensors = []
    for mine in ("dayan", "qipanjing"):
        for k, location in enumerate(LOCATIONS):
            area = "1101" if location.startswith("longwall") else "1105"
            sensors.append(Sensor(mine, f"T{k}", "ch4", "%", location, "", area, "S01", 10.0,
                                  0.0, 4.0, CH4))
        sensors.append(Sensor(mine, "CO", "co", "ppm", "longwall_face", "", "1101", "S01", 10.0,
                              0.0, 500.0, Limits(alarm_high=24.0)))
        for id_, kind, location, area in (("KD1", "feed", "switchgear", "1101"),
                                          ("JF1", "local_fan", "heading_fan", "1105"),
                                          ("JF2", "local_fan", "heading_fan", "1105"),
                                          ("KD2", "feed", "switchgear", "1105")):
            sensors.append(Sensor(mine, id_, kind, "", location, "", area, "S01", 10.0, 0.0,
                                  1.0, Limits()))
    return Registry.from_sensors(sensors)


REGISTRY = registry()


def suite() -> DetectorSuite:
    limits = LimitDetector(REGISTRY)
    return DetectorSuite([limits, SensorFaultDetector(REGISTRY, CONFIG),
                          TrendDetector(REGISTRY, CONFIG), DriftDetector(REGISTRY, CONFIG),
                          InterlockDetector(REGISTRY, limits, CONFIG)])


def cadence(rng: np.random.Generator) -> np.ndarray:
    """Reading times (s) of one sensor: 1 Hz, 2 s, 10 s or irregular (0.5-15 s apart)."""
    kind = rng.integers(4)
    if kind < 3:
        step = (1.0, 2.0, 10.0)[kind]
        times = np.arange(rng.uniform(0, step), DURATION_S, step)
    else:
        times = np.cumsum(rng.uniform(0.5, 15.0, DURATION_S))
    return np.round(times[times < DURATION_S], 3)


def switching(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A feed or fan: on (1), switched off and on again at a few random times."""
    flips = np.sort(rng.uniform(0, DURATION_S, rng.integers(0, 6)))
    return (1.0 - np.searchsorted(flips, t) % 2).astype(float)


def story(rng: np.random.Generator, t: np.ndarray, scale: float) -> np.ndarray:
    """Values at times ``t``: noise around a level, plus one of the stories the detectors judge."""
    level = rng.uniform(0.2, 0.5) * scale
    v = level + rng.normal(0, 0.005 * scale, len(t))
    kind = rng.integers(6)
    start = rng.uniform(200, 1200)
    if kind == 1:  # a rise through the alarm and power-off limits
        v += np.clip(t - start, 0, None) * rng.uniform(0.05, 0.3) * scale / 60
    elif kind == 2:  # one-reading spikes
        v[rng.choice(len(t), size=min(5, len(t)), replace=False)] += 0.8 * scale
    elif kind == 3:  # stuck: frozen for 1,000 s
        v[(t >= start) & (t < start + 1000)] = round(level + 0.03 * scale, 2)
    elif kind == 4:  # drift: creeping 0.3 in 20 min
        v += np.clip(t - start, 0, None) * 0.3 * scale / 1200
    elif kind == 5:  # a sudden level shift
        v += np.where(t >= start, 0.4 * scale, 0.0)
    return np.round(v, 2)


def feed(seed: int) -> ReadingBatch:
    """Every sensor's readings, merged in time order (ties in sensor order)."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, s in enumerate(REGISTRY.sensors):
        t = cadence(rng)
        v = (switching(rng, t) if s.is_switch
             else story(rng, t, 20.0 if s.kind == "co" else 1.0))
        parts.append((np.full(len(t), i, np.int32), T0 + (t * 1000).astype(np.int64), v))
    sensor = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    value = np.concatenate([p[2] for p in parts])
    order = np.lexsort((sensor, ts))
    return ReadingBatch(sensor[order], ts[order], value[order], np.zeros(len(ts), np.uint16))


def run(batch: ReadingBatch, cuts: list[int]) -> list[tuple[int, str, str, bool, int, float]]:
    detectors = suite()
    events: list[Event] = []
    bounds = [0, *sorted(set(cuts)), len(batch)]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            part = ReadingBatch(batch.sensor[lo:hi], batch.ts[lo:hi], batch.value[lo:hi],
                                batch.status[lo:hi])
            events += detectors.update(part, int(part.ts.max())).events
    return sorted((e.sensor, e.rule, e.condition, e.firing, e.ts, e.value) for e in events)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.floats(0.0, 1.0), max_size=60))
def test_any_split_into_batches_gives_the_same_events(seed: int, cuts: list[float]) -> None:
    batch = feed(seed)
    whole = run(batch, [])
    assert run(batch, [int(c * len(batch)) for c in cuts]) == whole


def test_one_reading_a_batch_gives_the_events_of_one_batch_and_they_are_many() -> None:
    # The strict reading of "as if each reading had arrived alone", on the first 4,000 readings
    # (9 min) of one fixed feed; and they do exercise the windowed detectors and the interlocks
    # (a property over event-free feeds would prove little).
    whole = feed(1)
    batch = ReadingBatch(whole.sensor[:4000], whole.ts[:4000], whole.value[:4000],
                         whole.status[:4000])
    together = run(batch, [])
    assert run(batch, list(range(1, len(batch)))) == together
    conditions = {e[2] for e in together}
    assert {"trend_high", "level_shift", "alarm_high", "power_off", "spike",
            "feed_on_power_off"} <= conditions, conditions


def test_the_random_feeds_raise_every_windowed_condition() -> None:
    found: set[str] = set()
    for seed in range(12):
        found |= {e[2] for e in run(feed(seed), [])}
    assert {"trend_high", "level_shift", "face_return_mismatch", "drift", "stuck", "spike",
            "alarm_high", "power_off", "feed_on_power_off", "feed_on_fan_stopped"} <= found, found


def deliver(batch: ReadingBatch, held: tuple[int, int] | None) -> list[Event]:
    """Live, 5 s of feed time a batch at the end of those 5 s; readings stamped within ``held``
    (ms, a substation's outage) come all at once at its end instead (断电续传)."""
    detectors = suite()
    events: list[Event] = []
    tick = (batch.ts - T0) // 5000
    if held is not None:
        inside = (batch.ts >= held[0]) & (batch.ts < held[1])
        tick = np.where(inside, (held[1] - T0) // 5000, tick)
    for k in np.unique(tick):
        rows = np.flatnonzero(tick == k)
        part = ReadingBatch(batch.sensor[rows], batch.ts[rows], batch.value[rows],
                            batch.status[rows])
        events += detectors.update(part, int(T0 + (k + 1) * 5000)).events
    return events


def test_a_substation_resending_ten_minutes_at_once_gives_the_live_alerts_marked_late() -> None:
    batch = feed(3)
    held = (T0 + 600_000, T0 + 1_200_000)
    live, resent = deliver(batch, None), deliver(batch, held)

    def key(e: Event) -> tuple[int, str, str, bool, int, float]:
        return (e.sensor, e.rule, e.condition, e.firing, e.ts, e.value)

    assert sorted(map(key, resent)) == sorted(map(key, live))
    assert not any(e.late for e in live)
    during = [e for e in resent if held[0] <= e.ts < held[1] - 60_000]
    assert during and all(e.late for e in during)
    assert not any(e.late for e in resent if e.ts >= held[1])


def test_back_fill_after_newer_readings_is_judged_by_limits_but_stays_out_of_the_trend() -> None:
    # The documented rule (detectors/trend.py): a reading older than its sensor's newest reaches
    # the limit detector (a limit crossing is never dropped; late), not the windowed ones.
    detectors = suite()
    t1 = 0
    steady = ReadingBatch(np.zeros(60, np.int32), T0 + np.arange(60) * 10_000,
                          np.full(60, 0.3), np.zeros(60, np.uint16))
    detectors.update(steady, int(steady.ts[-1]))
    old = ReadingBatch(np.full(3, t1, np.int32), T0 + np.array([100_000, 110_000, 120_000]),
                       np.array([1.2, 1.3, 1.4]), np.zeros(3, np.uint16))
    now = int(steady.ts[-1]) + 1_000
    found = detectors.update(old, now).events
    assert [(e.condition, e.firing, e.late) for e in found] == [("alarm_high", True, True)]
    assert detectors.members[2].history.newest[t1] == steady.ts[-1]  # type: ignore[attr-defined]
