"""The detectors scored on short labelled scenarios (bench/evaluate_scenarios.py, issue 4).

Statutory limits: every episode of the ground truth on its reading, no false limit alarm; every
``fires: true`` entry detected in time — a silent substation included, by 4 patrol periods of its
fastest sensors.
"""

from __future__ import annotations

import pytest

from bench.evaluate_scenarios import DETECTED_AS, LIMIT_RULES, Run, evaluate, limit_failures
from config.loader import load_deployment
from detectors.suite import build_detectors

SHORT = ("methane-rise", "local-fan-stop", "substation-silent", "normal", "sensor-spikes",
         "device-fault", "over-range", "calibration")


@pytest.fixture(scope="module")
def runs() -> list[Run]:
    deployment = load_deployment(None)
    return [evaluate(mine, scenario, deployment.detectors)
            for scenario in SHORT for mine in deployment.mines]


def test_statutory_limit_targets_are_met(runs: list[Run]) -> None:
    limits = [o for r in runs for o in r.outcomes if o.rule in LIMIT_RULES]
    assert {o.rule for o in limits} == set(LIMIT_RULES)  # the scenarios do cross both
    assert limit_failures(runs) == []
    assert all(o.detected_ms == o.from_ms for o in limits)  # on the reading itself


def test_every_firing_entry_is_detected(runs: list[Run]) -> None:
    outcomes = [o for r in runs for o in r.outcomes]
    assert {o.rule for o in outcomes} >= {"limit_alarm", "limit_power_off", "no_data",
                                          "feed_fault", "sensor_fault"}
    assert {o.condition for o in outcomes} >= {"spike", "device_fault", "over_range"}
    assert [o for o in outcomes if o.verdict != "hit"] == []


def test_clean_feed_raises_nothing(runs: list[Run]) -> None:
    clean = [r for r in runs if r.scenario == "normal"]
    assert len(clean) == 2 and all(r.sensor_days > 0 for r in clean)
    assert [s for r in clean for s in r.strays] == []


def test_no_alert_breaks_a_fires_false_entry(runs: list[Run]) -> None:
    assert [s for r in runs for s in r.strays if s.forbidden] == []


def test_names_map_onto_detector_conditions() -> None:
    registry = load_deployment(None).registry
    known = set(build_detectors(registry).conditions)
    assert {c for conditions in DETECTED_AS.values() for c in conditions} <= known
