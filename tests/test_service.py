"""The service end to end through a real Mosquitto: telemetry in, readings stored, alerts out.

These are the vertical slice's guarantees, checked on real connections:
- a methane rise at a working face is stored and raises, then resolves, the contract's alerts;
- bad input is republished with its reason and the good readings beside it are kept;
- a batch the store did not commit is never acknowledged, so the broker delivers it again to
  the restarted service (ack after commit) — nothing accepted is lost;
- telemetry sent while the service is down waits in its persistent session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.record import AlertRecord
from alerts.wire import Alert
from config.errors import DeliveryError
from config.loader import DEFAULT_DEPLOYMENT, load_deployment
from config.model import Deployment, HttpConfig, NetworkingConfig, Receiver, Route
from config.readings import ReadingBatch
from ingest.codec import encode_telemetry
from ingest.sink import Sink
from ingest.sqlite import SQLiteSink
from jinmei.pipeline import PipelineStats
from jinmei.service import GIL_SWITCH_S, Service
from tests.servers import Mosquitto, ftp_server, scripted_http_server, wait_until

pytestmark = pytest.mark.integration

T1 = "T1-1101"  # qipanjing longwall face 1101: alarm 1.0, power-off 1.5, restore 1.0 (limits.toml)


def deployment_for(broker: Mosquitto, workdir: Path, client_id: str = "jinmei-test") -> Deployment:
    shipped = load_deployment(None)
    return dataclasses.replace(
        shipped,
        broker=dataclasses.replace(shipped.broker, url=broker.url, client_id=client_id),
        store=dataclasses.replace(shipped.store, url=f"sqlite:///{workdir / 'readings.db'}"),
        ingest=dataclasses.replace(shipped.ingest, state_dir=str(workdir / "state")),
        # resolves at once: these tests check transitions, not the flapping hold
        alerts=dataclasses.replace(shipped.alerts, resolve_hold_s=0.0),
        http=HttpConfig(listen="127.0.0.1:0"))  # a free port: tests run side by side


class Listener:
    """A QoS 1 subscriber recording every JSON message on the given topic filters."""

    def __init__(self, broker: Mosquitto, *topics: str) -> None:
        self.messages: list[tuple[str, dict]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"listener-{id(self)}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def wait_for(self, predicate, timeout: float = 15.0) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                found = [m for m in self.messages if predicate(m)]
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"nothing matched within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[Listener]:
    listening = Listener(mosquitto, "jinmei/+/alerts", "jinmei/+/rejects")
    yield listening
    listening.close()


def send(broker: Mosquitto, messages: Sequence[tuple[str, bytes]]) -> None:
    """Publish QoS 1 and wait until the broker has every message."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"mine-{time.monotonic_ns()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def methane_rise(start_ms: int) -> list[tuple[str, bytes]]:
    """T1-1101 at 0.50 → 1.20 → 1.62 → 1.10 → 0.90 %, 10 s apart (its sampling period)."""
    values = [0.50, 1.20, 1.62, 1.10, 0.90]
    topic = "jinmei/qipanjing/telemetry/S01"
    return [(topic, encode_telemetry(start_ms + i * 10_000, [(T1, v, "ok")]))
            for i, v in enumerate(values)]


def test_methane_rise_is_stored_and_raises_then_resolves_alerts(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path) -> None:
    service = Service(deployment_for(mosquitto, tmp_path))
    switch_interval = sys.getswitchinterval()
    assert service.start(wait_subscribed_s=10)
    start_ms = int(time.time() * 1000) - 60_000
    try:
        assert sys.getswitchinterval() == GIL_SWITCH_S
        send(mosquitto, methane_rise(start_ms))
        alerts = listener.wait_for(lambda m: m[0] == "jinmei/qipanjing/alerts"
                                   and m[1]["rule"] == "limit_power_off"
                                   and m[1]["state"] == "resolved")
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"] == 5, 15)
        rows = service.sink.read_readings(mine="qipanjing")  # type: ignore[attr-defined]
    finally:
        service.stop()
    assert sys.getswitchinterval() == switch_interval  # the host process gets its own back

    power_off = [a for _, a in listener.messages if a.get("rule") == "limit_power_off"]
    assert [a["state"] for a in power_off] == ["firing", "resolved"]
    firing, resolved = power_off
    assert firing["id"] == resolved["id"]
    assert (firing["mine"], firing["sensor"], firing["kind"], firing["severity"]) == \
        ("qipanjing", T1, "ch4", "critical")
    assert (firing["value"], firing["limit"]) == (1.62, 1.5)
    assert firing["started_at"] == start_ms + 20_000
    assert (resolved["value"], resolved["started_at"]) == (0.90, start_ms + 20_000)
    assert "断电" in firing["message"] and "power-off" in firing["message"]
    alarm = [a for _, a in listener.messages if a.get("condition") == "alarm_high"]
    assert [(a["state"], a["value"]) for a in alarm] == [("firing", 1.20), ("resolved", 0.90)]
    assert alerts  # the resolve arrived on the contract topic

    # every reading stored, with the detector's status bits (alarm 1, power-off 2)
    by_ts = {r[4]: r for r in rows}
    assert sorted(by_ts) == [start_ms + i * 10_000 for i in range(5)]
    assert [by_ts[start_ms + i * 10_000][6] for i in range(5)] == [0, 1, 3, 3, 0]
    # and the alert record kept every transition (reopened: the service closed it)
    history = AlertRecord(tmp_path / "state" / "alerts.db")
    try:
        states = sorted((a.rule, a.state) for a in history.history(mine="qipanjing"))
    finally:
        history.close()
    assert ("limit_power_off", "firing") in states and ("limit_power_off", "resolved") in states


def test_a_lone_reading_is_alerted_at_once_not_after_batch_wait_ms(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path) -> None:
    """Adaptive batching: one power-off reading, alone, is handled when it arrives; a fixed
    batch would have held it ``batch_wait_ms`` (8 s here) for followers."""
    deployment = deployment_for(mosquitto, tmp_path)
    deployment = dataclasses.replace(
        deployment, ingest=dataclasses.replace(deployment.ingest, batch_wait_ms=8_000))
    service = Service(deployment)
    assert service.start(wait_subscribed_s=10)
    try:
        sent = time.monotonic()
        send(mosquitto, [("jinmei/qipanjing/telemetry/S01",
                          encode_telemetry(int(time.time() * 1000), [(T1, 1.62, "ok")]))])
        listener.wait_for(lambda m: m[1].get("rule") == "limit_power_off", timeout=15)
        took = time.monotonic() - sent
    finally:
        service.stop()
    assert took < 4.0  # generous for a busy machine (milliseconds on a quiet one)


def test_bad_input_is_republished_with_its_reason_and_good_readings_kept(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path) -> None:
    service = Service(deployment_for(mosquitto, tmp_path))
    assert service.start(wait_subscribed_s=10)
    now_ms = int(time.time() * 1000)
    mixed = json.dumps({"ts": now_ms, "readings": [
        {"sensor": "T0-1101", "value": 0.4},
        {"sensor": "T9-9999", "value": 0.4},
        {"sensor": "T2-1101", "value": "high"}]}).encode()
    try:
        send(mosquitto, [("jinmei/qipanjing/telemetry/S01", mixed),
                         ("jinmei/qipanjing/telemetry", b"\xff not json"),
                         ("jinmei/nowhere/telemetry", encode_telemetry(now_ms, [(T1, 0.3, "ok")]))])
        rejects = listener.wait_for(lambda m: m[0].endswith("/rejects")
                                    and m[1]["reason"] == "unknown_mine")
        assert wait_until(lambda: sum(service.pipeline.stats.rejects_by_reason.values()) == 4, 15)
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"] == 1, 15)
    finally:
        service.stop()
    reasons = sorted(m[1]["reason"] for m in listener.messages if m[0].endswith("/rejects"))
    assert reasons == ["bad_json", "unknown_mine", "unknown_sensor"]  # one per message
    assert rejects[0][0] == "jinmei/nowhere/rejects"
    unknown = next(m[1] for m in listener.messages if m[1].get("reason") == "unknown_sensor")
    assert "T9-9999" in unknown["detail"]
    assert unknown["by_reason"] == {"unknown_sensor": 1, "bad_value": 1}


class BrokenStore:
    """A real SQLite sink behind a switch that makes every write fail like a full disk."""

    def __init__(self, inner: SQLiteSink) -> None:
        self.inner = inner
        self.name = "broken"

    def write(self, batch: ReadingBatch) -> None:
        raise DeliveryError(self.name, "disk full (injected)", retryable=True)

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        raise DeliveryError(self.name, "disk full (injected)", retryable=True)

    def delivery_fault(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.inner.close()


def test_uncommitted_batch_is_redelivered_to_the_restarted_service(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-redelivery")
    first = Service(deployment)
    broken: Sink = BrokenStore(first.sink)  # type: ignore[arg-type]
    first.sink = first.pipeline.sink = broken
    assert first.start(wait_subscribed_s=10)
    start_ms = int(time.time() * 1000) - 60_000
    send(mosquitto, methane_rise(start_ms))
    assert wait_until(lambda: first.pipeline.stats.store_retries > 0, 15)
    first.stop()  # the store never committed: nothing may have been acknowledged
    assert first.source.counters["acked"] == 0

    second = Service(deployment)
    assert second.start(wait_subscribed_s=10)
    try:
        assert wait_until(lambda: second.pipeline.stats.readings_by_mine["qipanjing"] == 5, 15)
        stored = sorted(r[4] for r in second.sink.read_readings(mine="qipanjing"))  # type: ignore[attr-defined]
    finally:
        second.stop()
    assert stored == [start_ms + i * 10_000 for i in range(5)]


def test_telemetry_sent_while_the_service_is_down_waits_in_its_session(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-session")
    first = Service(deployment)
    assert first.start(wait_subscribed_s=10)
    first.stop()

    start_ms = int(time.time() * 1000) - 60_000
    send(mosquitto, methane_rise(start_ms))  # nobody is connected now

    second = Service(deployment)
    assert second.start(wait_subscribed_s=10)
    try:
        assert wait_until(lambda: second.pipeline.stats.readings_by_mine["qipanjing"] == 5, 15)
    finally:
        second.stop()
    assert second.pipeline.stats.alerts[("qipanjing", "limit_power_off", "firing")] == 1


def test_jinmei_run_command_serves_until_sigterm(mosquitto: Mosquitto, listener: Listener,
                                                 tmp_path: Path) -> None:
    shipped = Path(DEFAULT_DEPLOYMENT).parent
    config = tmp_path / "jinmei.toml"
    config.write_text(
        f'mines = ["{shipped / "mines" / "qipanjing.toml"}"]\n'
        f'[broker]\nclient_id = "jinmei-cli-test"\n'
        f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[http]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jinmei.cli", "run", "--config", str(config),
         "--broker", mosquitto.url, "--store", f"sqlite:///{tmp_path / 'readings.db'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        start_ms = int(time.time() * 1000) - 60_000
        deadline = time.monotonic() + 20
        # publish until the service's subscription is in place (its startup time varies)
        while not any(m[1].get("rule") == "limit_power_off" for m in listener.messages):
            assert time.monotonic() < deadline, "jinmei run published no alert"
            send(mosquitto, methane_rise(start_ms))
            time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output.decode()
    lines = output.decode().splitlines()
    # one line per record, local time with its offset, counters by their plain names
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d [A-Z]+ ", line)
               for line in lines), lines
    alert = next(line for line in lines if "ALERT firing critical limit_power_off" in line)
    assert "【断电】" in alert and "[POWER-OFF]" in alert  # both languages, one line
    stopped = next(line for line in lines if "stopped; since start:" in line)
    assert "qipanjing" in stopped and "Reason" not in stopped


def test_service_starts_before_its_broker_and_rides_out_a_broker_restart(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # not started yet: the service must wait for it
    service = Service(deployment_for(broker, tmp_path, client_id="jinmei-reconnect"))
    service.start()
    start_ms = int(time.time() * 1000) - 60_000
    try:
        broker.start()
        assert service.source.wait_subscribed(15)
        send(broker, methane_rise(start_ms)[:2])
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"] == 2, 15)

        broker.stop()
        broker.start()
        # reconnects with backoff (1 s, doubling) and subscribes again
        assert wait_until(lambda: service.source.counters["connections"] == 2, 35)
        assert service.source.wait_subscribed(10)
        send(broker, methane_rise(start_ms)[2:])
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"] == 5, 15)
    finally:
        service.stop()
        broker.stop()
    assert service.source.counters["connections"] == 2


def test_regulator_networking_files_reach_the_ftp_server(mosquitto: Mosquitto,
                                                          tmp_path: Path) -> None:
    """With [networking] enabled the running service writes the MT/T 1201.1 files and uploads
    them: definitions at start, real-time values, and the power-off event (YCBJ 002)."""
    root = tmp_path / "regulator"
    root.mkdir()
    with ftp_server(root) as port:
        deployment = dataclasses.replace(
            deployment_for(mosquitto, tmp_path, client_id="jinmei-networking"),
            networking=NetworkingConfig(enabled=True, url=f"ftp://jinmei@127.0.0.1:{port}/",
                                        password="secret", cdss_period_s=1.0))
        service = Service(deployment)
        assert service.start(wait_subscribed_s=10)
        try:
            send(mosquitto, methane_rise(int(time.time() * 1000) - 60_000))

            def uploaded(kind: str) -> list[Path]:
                return sorted(root.glob(f"*_{kind}_*.txt"))

            # T1-1101 is point 001A02 (config/mines/qipanjing.toml); its last value is 0.90 %
            assert wait_until(lambda: uploaded("CDDY") and uploaded("YCBJ") and any(
                "001A02;" in p.read_text() and ";0.90;" in p.read_text()
                for p in uploaded("CDSS")), 20)
        finally:
            service.stop()
    mine_code = deployment.registry.mine("qipanjing").networking.code  # type: ignore[union-attr]
    ycbj = "".join(p.read_text(encoding="utf-8") for p in uploaded("YCBJ"))
    assert any(p.name.startswith(f"{mine_code}_CDDY_") for p in uploaded("CDDY"))
    assert ";002;" in ycbj  # the power-off event of T1-1101


def test_routed_notifications_reach_mqtt_and_webhook_receivers(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A route for critical qipanjing alerts names two receivers: the MQTT channel (its own
    connection, PUBACK awaited) and a webhook (HMAC-signed). The power-off reaches both at once
    (safety floor: no group wait), each with its idempotency key."""
    notified = Listener(mosquitto, "jinmei/+/notifications/#")
    with scripted_http_server(lambda n, body: (200, {}, b"ok")) as webhook:
        base = deployment_for(mosquitto, tmp_path, client_id="jinmei-routed")
        alerts = dataclasses.replace(
            base.alerts,
            receivers=(Receiver("desk", "mqtt"),
                       Receiver("regulator", "webhook", (("url", webhook.url),), "s3cret")),
            routes=(Route(("desk", "regulator"), mines=("qipanjing",),
                          severities=("critical",)),))
        service = Service(dataclasses.replace(base, alerts=alerts))
        assert service.start(wait_subscribed_s=10)
        try:
            send(mosquitto, methane_rise(int(time.time() * 1000) - 60_000))
            on_desk = notified.wait_for(lambda m: m[0] == "jinmei/qipanjing/notifications/desk")
            assert wait_until(lambda: webhook.requests, 15)
        finally:
            service.stop()
            notified.close()
    raw = webhook.requests[0].body
    headers = {k.lower(): v for k, v in webhook.headers[0].items()}
    signed = headers["x-jinmei-timestamp"].encode() + b"." + raw
    expected = "sha256=" + hmac.new(b"s3cret", signed, hashlib.sha256).hexdigest()
    assert headers["x-jinmei-signature"] == expected  # computed here, not by the sender's code
    assert headers["idempotency-key"]
    assert "limit_power_off" in raw.decode() and "limit_power_off" in json.dumps(on_desk[0][1])


def test_the_status_line_says_what_came_since_the_last_one() -> None:
    before = PipelineStats(messages=10, readings_by_mine=Counter(dayan=100),
                           rejects_by_reason=Counter(bad_json=1),
                           alerts=Counter({("dayan", "limit_alarm", "firing"): 1}))
    after = dataclasses.replace(before, messages=15, store_retries=2, dead_letters=3,
                                readings_by_mine=Counter(dayan=1_400, qipanjing=200),
                                rejects_by_reason=Counter(bad_json=3, unknown_sensor=1),
                                alerts=Counter({("dayan", "limit_alarm", "firing"): 2,
                                                ("dayan", "limit_alarm", "resolved"): 1}))
    assert after.since(before) == (
        "5 messages; readings stored 1,500 (dayan 1,300, qipanjing 200); rejects 3 "
        "(bad_json 2, unknown_sensor 1); alert transitions 2 (firing 1, resolved 1); "
        "store retries 2; dead letters 3")
    assert after.since(after) == ("0 messages; readings stored 0; rejects 0; "
                                  "alert transitions 0; store retries 0; dead letters 0")
