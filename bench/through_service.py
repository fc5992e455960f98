"""A feed through a real Mosquitto and the service, and the alert set it gave (issue 18).

Used by ``bench/evaluate_scenarios.py --through-service`` and ``tests/test_replay_same_alerts.py``:
the same readings must give the same alerts however they arrive — paced or as fast as possible,
batched or one reading a message — and the same as the detectors in-process.

The alert set compared is every firing transition as (id, mine, sensor, rule, condition,
started_at) with ``no_data`` left out: silence is judged on the service's clock, which a replay
faster than real time does not follow. The service runs with ``resolve_hold_s = 0``: the
resolve hold (flapping merged into one episode) also runs on the service clock, so a feed
replayed 50× faster merges more; detection itself takes no time from the clock.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from config.model import AlertsConfig, Deployment, DetectorConfig, HttpConfig, Mine, Registry
from detectors.suite import build_detectors
from ingest.codec import TelemetryCodec
from jinmei.service import Service
from simulators.feed import Message
from simulators.publisher import publish
from tests.servers import Mosquitto

__all__ = ["AlertKey", "alert_set", "in_process", "one_reading_a_message", "through_service"]

AlertKey = tuple[str, str, str, str, str, int]  # id, mine, sensor, rule, condition, started_at


def alert_set(alerts: Iterable[object]) -> set[AlertKey]:
    """The firing transitions of ``alerts`` (Alert values) as comparable keys, no_data left out."""
    return {(a.id, a.mine, a.sensor, a.rule, a.condition, a.started_at)  # type: ignore[attr-defined]
            for a in alerts
            if a.state == "firing" and a.rule != "no_data"}  # type: ignore[attr-defined]


def in_process(mine: Mine, messages: Sequence[Message], config: DetectorConfig) -> set[AlertKey]:
    """The alert set of the same feed through codec, detectors and the alert dispatcher
    in-process (every alert stage the service runs, a warning superseded by its point's alarm
    included), a feed tick at a time (the evaluation's way; hold 0)."""
    registry = Registry.build((mine,))
    codec, suite = TelemetryCodec(registry), build_detectors(registry, config)
    with tempfile.TemporaryDirectory(prefix="jinmei-in-process-") as work:
        record = AlertRecord(Path(work) / "alerts.db")
        dispatcher = AlertDispatcher(registry, Names({}, {}), record, config_hash="",
                                     publish=lambda topic, payload: None,
                                     config=AlertsConfig(mqtt=False, resolve_hold_s=0.0))
        try:
            for at_ms, tick in itertools.groupby(messages, key=lambda m: m.at_ms):
                batch = codec.decode_many([(m.topic, m.payload) for m in tick], at_ms).batch
                events = [e for e in suite.update(batch, at_ms).events if e.rule != "no_data"]
                dispatcher.apply(events, at_ms)
            return alert_set(record.history())
        finally:
            dispatcher.close()
            record.close()


def one_reading_a_message(messages: Iterable[Message]) -> list[Message]:
    """Each reading of each message in a message of its own (its time made explicit)."""
    out = []
    for m in messages:
        try:
            payload = json.loads(m.payload)
            readings = payload["readings"]
        except (ValueError, KeyError, TypeError):
            out.append(m)  # a malformed payload goes as it is
            continue
        for r in readings:
            body = {"ts": r.get("ts", payload.get("ts")) if isinstance(r, dict) else None,
                    "readings": [r]}
            out.append(Message(m.at_ms, m.topic, json.dumps(body).encode(), 1))
    return out


def through_service(deployment: Deployment, messages: Sequence[Message], work: Path, *,
                    speed: float | None, timeout_s: float = 120.0) -> set[AlertKey]:
    """Publish ``messages`` (QoS 1, ``speed`` × their own pace, None: as fast as possible) to a
    fresh Mosquitto and a fresh service; once every message is in, the service's alert set."""
    work.mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(work)
    broker.start()
    try:
        config = dataclasses.replace(
            deployment,
            broker=dataclasses.replace(deployment.broker, url=broker.url,
                                       client_id=f"jinmei-{work.name}"),
            store=dataclasses.replace(deployment.store, url=f"sqlite:///{work / 'readings.db'}"),
            ingest=dataclasses.replace(deployment.ingest, state_dir=str(work / "state")),
            http=HttpConfig(listen=""),
            alerts=dataclasses.replace(deployment.alerts, resolve_hold_s=0.0,
                                       receivers=(), routes=()))
        service = Service(config)
        if not service.start(wait_subscribed_s=10):
            raise RuntimeError("the service did not subscribe within 10 s")
        try:
            publish(messages, broker.url, speed=speed, client_id=f"replay-{work.name}")
            deadline = time.monotonic() + timeout_s
            while service.pipeline.stats.messages < len(messages):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service.pipeline.stats.messages} of {len(messages)} "
                                       f"messages in after {timeout_s} s")
                time.sleep(0.05)
        finally:
            service.stop()
    finally:
        broker.stop()
    record = AlertRecord(work / "state" / "alerts.db")
    try:
        return alert_set(record.history())
    finally:
        record.close()
