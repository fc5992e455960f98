"""Fault isolation inside the pipeline, step by step, fast: real codec, detectors, alert
record and SQLite store; the MQTT source is built but never started (its publishes and acks
wait in its queue), so these tests need no broker. The service-level guarantees on a real
Mosquitto are in tests/test_isolation.py.

A bug is brought in through the seams a test has: ``Pipeline(detectors=...)`` for a detector,
and the pipeline's ``codec`` and ``dispatcher`` attributes for the other steps.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.record import AlertRecord
from alerts.wire import Alert
from config.loader import load_deployment
from config.readings import ReadingBatch
from detectors.base import Detection, Event
from detectors.suite import DetectorSuite, build_detectors
from ingest.codec import Decoded, TelemetryCodec, encode_telemetry
from ingest.mqtt import Inbound, MqttSource
from ingest.sqlite import SQLiteSink
from jinmei.pipeline import Pipeline
from jinmei.service import names_from_limits

DEPLOYMENT = load_deployment(None)
POISONED = DEPLOYMENT.registry.index["dayan/T1-1201"]
NOW_MS = 1_795_614_332_500


class RaisesOn:
    """A detector with a bug: any batch holding a reading of ``sensor`` makes it raise."""

    conditions: tuple[str, ...] = ()

    def __init__(self, sensor: int) -> None:
        self.sensor = sensor

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        if (batch.sensor == self.sensor).any():
            raise RuntimeError("injected detector bug")
        return Detection([], np.zeros(len(batch), dtype=np.uint16))

    def active(self) -> list[tuple[int, str]]:
        return []

    def restore(self, active: list[tuple[int, str]]) -> None:
        pass


def message(topic: str, readings: list[tuple[str, float, str]], ts: int = NOW_MS) -> Inbound:
    return Inbound(topic, encode_telemetry(ts, readings), mid=1, qos=1, connection=1)


POWER_OFF = message("jinmei/qipanjing/telemetry/S01", [("T1-1101", 1.62, "ok")])
CULPRIT = message("jinmei/dayan/telemetry/S01", [("T1-1201", 0.3, "ok"), ("T0-1201", 0.2, "ok")])
GOOD = message("jinmei/dayan/telemetry/S01", [("T0-1201", 0.25, "ok")], NOW_MS + 1)


Build = Callable[..., Pipeline]


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Build]:
    """Makes pipelines (optionally with the given detectors) and closes them afterwards."""
    made: list[tuple[Pipeline, SQLiteSink, AlertRecord]] = []

    def pipeline(detectors: DetectorSuite | None = None) -> Pipeline:
        deployment = dataclasses.replace(DEPLOYMENT, ingest=dataclasses.replace(
            DEPLOYMENT.ingest, state_dir=str(tmp_path / "state")))
        sink = SQLiteSink(tmp_path / "readings.db", deployment.registry)
        (tmp_path / "state").mkdir(exist_ok=True)
        record = AlertRecord(tmp_path / "state" / "alerts.db")
        built = Pipeline(deployment, MqttSource(deployment.broker), sink, record,
                         names_from_limits(deployment), clock=lambda: NOW_MS / 1000 + 1,
                         detectors=detectors)
        made.append((built, sink, record))
        return built

    yield pipeline
    for built, sink, record in made:
        built.dispatcher.close()
        built.close()
        sink.close()
        record.close()


def stored(pipeline: Pipeline) -> list[tuple[str, int, int]]:
    rows = pipeline.sink.read_readings()  # type: ignore[attr-defined]
    return sorted((r[1], r[4], r[6]) for r in rows)


@pytest.mark.parametrize("first", [True, False], ids=["bug-first", "bug-last"])
def test_a_detector_bug_cannot_swallow_the_power_off_found_in_the_same_batch(
        build: Build, first: bool) -> None:
    members = list(build_detectors(DEPLOYMENT.registry, DEPLOYMENT.detectors).members)
    bug = RaisesOn(POISONED)
    pipeline = build(DetectorSuite([bug, *members] if first else [*members, bug]))
    assert pipeline.process([CULPRIT, POWER_OFF, GOOD], threading.Event())
    assert pipeline.stats.alerts[("qipanjing", "limit_power_off", "firing")] == 1
    assert pipeline.stats.rejects_by_reason == {"internal_error": 1}
    # every reading stored, the power-off with its detector bits (alarm 1 | power-off 2)
    assert stored(pipeline) == [("T0-1201", NOW_MS, 0), ("T0-1201", NOW_MS + 1, 0),
                                ("T1-1101", NOW_MS, 3), ("T1-1201", NOW_MS, 0)]


def test_a_detector_bug_on_a_message_alone_is_found_again_each_time(build: Build) -> None:
    members = build_detectors(DEPLOYMENT.registry, DEPLOYMENT.detectors).members
    pipeline = build(DetectorSuite([*members, RaisesOn(POISONED)]))
    for k in range(3):
        assert pipeline.process([CULPRIT], threading.Event())
        assert pipeline.stats.rejects_by_reason["internal_error"] == k + 1
    assert pipeline.process([GOOD], threading.Event())
    assert pipeline.stats.rejects_by_reason["internal_error"] == 3


class CodecWithABug(TelemetryCodec):
    """The real codec, but it raises on one payload (as RecursionError once escaped it)."""

    def decode_many(self, messages: Sequence[tuple[str, bytes]], now_ms: int) -> Decoded:
        if any(payload == CULPRIT.payload for _, payload in messages):
            raise RecursionError("injected codec bug")
        return super().decode_many(messages, now_ms)


def test_a_codec_bug_rejects_that_message_and_keeps_the_others(build: Build) -> None:
    pipeline = build()
    pipeline.codec = CodecWithABug(DEPLOYMENT.registry, max_future_ms=300_000)
    assert pipeline.process([GOOD, CULPRIT, POWER_OFF], threading.Event())
    assert pipeline.stats.rejects_by_reason == {"internal_error": 1}
    assert pipeline.stats.alerts[("qipanjing", "limit_power_off", "firing")] == 1
    assert stored(pipeline) == [("T0-1201", NOW_MS + 1, 0), ("T1-1101", NOW_MS, 3)]
    assert pipeline.stats.messages == 3


def test_an_alert_side_bug_loses_only_the_transition_it_raised_on(
        build: Build, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = build()
    apply = pipeline.dispatcher.apply
    dayan_alarm = message("jinmei/dayan/telemetry/S01", [("T1-1201", 1.2, "ok")])

    def apply_with_a_bug(events: Sequence[Event], now_ms: int) -> list[Alert]:
        if any(e.sensor == POISONED for e in events):
            raise KeyError("injected alert-side bug")
        return apply(events, now_ms)

    monkeypatch.setattr(pipeline.dispatcher, "apply", apply_with_a_bug)
    assert pipeline.process([dayan_alarm, POWER_OFF], threading.Event())
    assert pipeline.stats.alerts[("qipanjing", "limit_power_off", "firing")] == 1
    assert not [k for k in pipeline.stats.alerts if k[0] == "dayan"]
    assert [r[0] for r in stored(pipeline)] == ["T1-1101", "T1-1201"]  # readings all stored


EXAMPLES = itertools.count()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(culprits=st.lists(st.booleans(), min_size=1, max_size=12))
def test_exactly_the_culprits_are_rejected_and_every_reading_kept(
        build: Build, culprits: list[bool]) -> None:
    """Any mix of messages with and without the reading the bug raises on, in one batch."""
    pipeline = build(DetectorSuite([RaisesOn(POISONED)]))
    ts = NOW_MS + 100 * next(EXAMPLES)  # each example its own times (one store for all)
    batch = [message(CULPRIT.topic, [("T1-1201", 0.3, "ok"), ("T0-1201", 0.2, "ok")], ts + i)
             if bad else message(GOOD.topic, [("T0-1201", 0.25, "ok")], ts + i)
             for i, bad in enumerate(culprits)]
    rejected = pipeline.stats.rejects_by_reason["internal_error"]
    kept = len(stored(pipeline))
    assert pipeline.process(batch, threading.Event())
    assert pipeline.stats.rejects_by_reason["internal_error"] - rejected == sum(culprits)
    assert len(stored(pipeline)) - kept == len(culprits) + sum(culprits)


class SinkWithABug(SQLiteSink):
    """The real SQLite sink, with a bug of its own on one sensor's readings (an exception
    that is no DeliveryError: the sink cannot say whether the data or the store is at fault)."""

    def write(self, batch: ReadingBatch) -> None:
        if (batch.sensor == POISONED).any():
            raise OverflowError("injected store bug")
        super().write(batch)


def test_a_store_bug_sets_the_batch_aside_and_the_next_batch_flows(
        build: Build, tmp_path: Path) -> None:
    pipeline = build()
    pipeline.sink = SinkWithABug(tmp_path / "buggy.db", DEPLOYMENT.registry)
    try:
        assert pipeline.process([CULPRIT, GOOD], threading.Event())
        assert pipeline.stats.dead_letters == 2 and pipeline.store_failing_since_ms is not None
        assert "injected store bug" in pipeline.store_error
        assert pipeline.process([POWER_OFF], threading.Event())
        assert pipeline.store_failing_since_ms is None and pipeline.store_error == ""
        assert stored(pipeline) == [("T1-1101", NOW_MS, 3)]
        letters = pipeline.dead_letters.list("store")
    finally:
        pipeline.sink.close()
    assert [(d.topic, d.body) for d in letters] == [(CULPRIT.topic, CULPRIT.payload),
                                                    (GOOD.topic, GOOD.payload)]
    assert all("OverflowError: injected store bug" in d.reason for d in letters)
