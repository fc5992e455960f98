"""The contract every detector keeps (ADTK / River style), run against each one the suite builds.

repr; unique, declared condition names; empty batches; status bits shaped like the batch; same
input → same output; save/restore of active conditions (a restored detector does not fire
again what was carried over); a sensor that appears late; calibrating readings never fire.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from config.loader import load_deployment
from config.readings import ReadingBatch, Status
from detectors.base import Detection
from detectors.suite import DetectorSuite, build_detectors

DEPLOYMENT = load_deployment(None)
REGISTRY = DEPLOYMENT.registry
# Drift is judged over an hour by default: its window scaled to the 400 s story.
CONFIG = dataclasses.replace(DEPLOYMENT.detectors, drift_window_s=240.0)
T0 = 1_800_000_000_000
NAMES = [type(d).__name__ for d in build_detectors(REGISTRY, CONFIG).members]


def fresh(name: str) -> object:
    suite = build_detectors(REGISTRY, CONFIG)
    return next(d for d in suite.members if type(d).__name__ == name)


def story(seed: int = 3) -> list[ReadingBatch]:
    """Forty rounds of every sensor but the last: rising values, a few faults and gaps."""
    rng = np.random.default_rng(seed)
    n = len(REGISTRY) - 1  # the last sensor appears only at the end
    batches = []
    for k in range(40):
        value = np.where(np.arange(n) % 5 == 0, 0.2 + 0.05 * k, rng.normal(0.3, 0.01, n))
        status = np.where(rng.random(n) < 0.05, int(Status.SENSOR_FAULT), 0).astype(np.uint16)
        batches.append(ReadingBatch(np.arange(n, dtype=np.int32),
                                    np.full(n, T0 + k * 10_000, np.int64), value, status))
    last = len(REGISTRY) - 1
    batches.append(ReadingBatch(np.array([last], np.int32), np.array([T0 + 400_000]),
                                np.array([5.0]), np.zeros(1, np.uint16)))
    return batches


def run(detector: object, batches: list[ReadingBatch]) -> list[Detection]:
    out = []
    for b in batches:
        now = int(b.ts.max()) if len(b) else T0
        out.append(detector.update(b, now))  # type: ignore[attr-defined]
        if hasattr(detector, "tick"):
            out.append(detector.tick(now + 45_000))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_repr_and_conditions(name: str) -> None:
    detector = fresh(name)
    assert repr(detector).startswith(name + "(")
    conditions = detector.conditions  # type: ignore[attr-defined]
    assert conditions and len(set(conditions)) == len(conditions)


def test_condition_names_are_unique_across_the_suite() -> None:
    suite = build_detectors(REGISTRY, CONFIG)
    assert len(set(suite.conditions)) == len(suite.conditions)


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_finds_nothing(name: str) -> None:
    found = fresh(name).update(ReadingBatch.empty(), T0)  # type: ignore[attr-defined]
    assert found.events == [] and len(found.status_bits) == 0


@pytest.mark.parametrize("name", NAMES)
def test_same_input_same_output_and_events_are_declared(name: str) -> None:
    first, second = run(fresh(name), story()), run(fresh(name), story())
    assert [d.events for d in first] == [d.events for d in second]
    detector = fresh(name)
    for d in run(detector, story()):
        assert {e.condition for e in d.events} <= set(detector.conditions)  # type: ignore[attr-defined]
        assert all(e.severity in ("warning", "alarm", "critical") for e in d.events)
    assert any(d.events for d in first), "the story should make every detector speak"


@pytest.mark.parametrize("name", NAMES)
def test_status_bits_match_the_batch(name: str) -> None:
    detector = fresh(name)
    for b in story():
        assert len(detector.update(b, int(b.ts.max())).status_bits) == len(b)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", NAMES)
def test_restored_conditions_are_not_fired_again(name: str) -> None:
    batches = story()
    original = fresh(name)
    run(original, batches[:30])
    active = original.active()  # type: ignore[attr-defined]
    assert active, "the story should leave something active"
    restored = fresh(name)
    restored.restore(active)  # type: ignore[attr-defined]
    assert restored.active() == active  # type: ignore[attr-defined]
    next_batch = batches[30]
    found = restored.update(next_batch, int(next_batch.ts.max()))  # type: ignore[attr-defined]
    refired = {(e.sensor, e.condition) for e in found.events if e.firing}
    assert not refired & set(active)


@pytest.mark.parametrize("name", NAMES)
def test_calibrating_readings_never_fire(name: str) -> None:
    detector = fresh(name)
    calibrating = [ReadingBatch(b.sensor, b.ts, b.value + 1.5,
                                np.full(len(b), int(Status.CALIBRATION), np.uint16))
                   for b in story()[:-1]]
    for b in calibrating:  # only the sensors calibrating: silence elsewhere is not theirs
        found = detector.update(b, int(b.ts.max()))  # type: ignore[attr-defined]
        assert [e for e in found.events if e.firing and e.sensor in set(b.sensor.tolist())] == []


def test_suite_restore_hands_back_what_no_detector_owns() -> None:
    suite: DetectorSuite = build_detectors(REGISTRY, CONFIG)
    left = suite.restore([(0, "silent"), (1, "trend_high"), (2, "no_such_condition")])
    assert left == [(2, "no_such_condition")]
    assert (0, "silent") in suite.active() and (1, "trend_high") in suite.active()
