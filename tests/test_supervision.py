"""Never blind: a dead or hung worker, a kill -9, a lost broker and a failing store, each on a
real Mosquitto with a real webhook receiver (an HTTP server on loopback).

What each shows: the process exits with code 3 and its status topic says why
(``jinmei/<mine>/status``, read as a fresh subscriber reads the retained message); the Last
Will says offline when the process is killed; ``monitoring_offline`` and ``store_fault``
reach the receiver without the broken part, and resolve when it is back (a worker failure:
in the next run, once online).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.channels.base import Notification, build_channel
from alerts.db import StateDB
from alerts.outbox import Outbox
from alerts.system import Condition, SystemAlerts
from config.loader import DEFAULT_DEPLOYMENT, load_deployment
from config.model import Deployment, NetworkingConfig, Receiver, Route
from ingest.codec import encode_telemetry
from ingest.status import status_topic
from jinmei.service import Service
from jinmei.supervisor import EXIT_FAILED, Failure, Watch, check
from tests.faulty_service import POISON
from tests.servers import (
    Mosquitto,
    ScriptedServer,
    scripted_http_server,
    victoria_metrics,
    wait_until,
)
from tests.test_service import deployment_for, methane_rise, send

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
T1 = "T1-1101"
TOPIC = "jinmei/qipanjing/telemetry/S01"


def ok(n: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
    return 200, {}, b"ok"


def retained_status(broker: Mosquitto, mine: str = "qipanjing",
                    timeout_s: float = 3.0) -> dict[str, Any] | None:
    """The retained ``jinmei/<mine>/status`` as a new subscriber gets it (None: none)."""
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"status-reader-{time.monotonic_ns()}")
    client.on_message = lambda c, u, m: got.put(json.loads(m.payload))
    client.on_connect = lambda c, *a: c.subscribe(status_topic(mine), qos=1)
    try:
        client.connect("127.0.0.1", broker.port)
    except OSError:
        return None
    client.loop_start()
    try:
        return got.get(timeout=timeout_s)
    except queue.Empty:
        return None
    finally:
        client.loop_stop()
        client.disconnect()


def status_is(broker: Mosquitto, state: str, mine: str = "qipanjing") -> dict[str, Any] | None:
    status = retained_status(broker, mine)
    return status if status is not None and status["state"] == state else None


def system_alerts(webhook: ScriptedServer) -> list[dict[str, Any]]:
    """Every alert of rule monitoring_offline or store_fault the receiver got, in order."""
    return [a for r in list(webhook.requests) for a in json.loads(r.body)["alerts"]
            if a["rule"] in ("monitoring_offline", "store_fault")]


def received(webhook: ScriptedServer, rule: str, condition: str, state: str,
             mine: str = "qipanjing") -> dict[str, Any] | None:
    return next((a for a in system_alerts(webhook) if (a["rule"], a["condition"], a["state"],
                                                       a["mine"]) == (rule, condition, state,
                                                                      mine)), None)


# ── jinmei run as a process ──────────────────────────────────────────────────────────────

def write_config(tmp_path: Path, webhook: ScriptedServer) -> Path:
    shipped = Path(DEFAULT_DEPLOYMENT).parent
    config = tmp_path / "jinmei.toml"
    config.write_text(
        f'mines = ["{shipped / "mines" / "qipanjing.toml"}", '
        f'"{shipped / "mines" / "dayan.toml"}"]\n'
        '[broker]\nclient_id = "jinmei-supervised"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'  # a free port: nothing else's 9108 matters
        f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n'
        "stall_s = 2.0\noffline_after_s = 2.0\nstore_fault_after_s = 1.0\n"
        "workers = 1\n"  # the single process's own supervision (tests/test_workers.py: N)
        '[[alerts.receivers]]\nname = "regulator"\nchannel = "webhook"\n'
        f'url = "{webhook.url}"\n'
        'unsigned = true\n'  # the test receiver does not check signatures
        '[[alerts.routes]]\nrules = ["monitoring_offline", "store_fault"]\n'
        'receivers = ["regulator"]\n', encoding="utf-8")
    return config


def run(tmp_path: Path, broker: Mosquitto, config: Path, *module: str,
        log_name: str = "jinmei.log") -> subprocess.Popen[bytes]:
    """``python -m MODULE... run`` with this config; its output goes to tmp_path/log_name."""
    with (tmp_path / log_name).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *module, "run", "--config", str(config),
             "--broker", broker.url, "--store", f"sqlite:///{tmp_path / 'readings.db'}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def ended(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


@pytest.mark.parametrize(("fault", "reason"), [("hang", "worker_stalled"),
                                               ("die", "worker_dead")])
def test_a_hung_or_dead_ingest_worker_stops_the_service_offline_and_alerted(
        mosquitto: Mosquitto, tmp_path: Path, fault: str, reason: str) -> None:
    with scripted_http_server(ok) as webhook:
        config = write_config(tmp_path, webhook)
        proc = run(tmp_path, mosquitto, config, "tests.faulty_service", fault)
        try:
            assert wait_until(lambda: status_is(mosquitto, "online"), 20), "never online"
            send(mosquitto, [(TOPIC, encode_telemetry(int(time.time() * 1000),
                                                      [(T1, POISON, "ok")]))])
            code = ended(proc, 40)
        finally:
            if proc.poll() is None:
                proc.kill()
        output = (tmp_path / "jinmei.log").read_text()
        assert code == EXIT_FAILED, output
        assert "CRITICAL" in output and "jinmei-ingest" in output

        status = retained_status(mosquitto)
        assert status is not None, "no retained status"
        assert (status["state"], status["reason"]) == ("offline", reason)
        assert "jinmei-ingest" in status["detail"] and "last_will" not in status
        firing = received(webhook, "monitoring_offline", reason, "firing")
        assert firing is not None, webhook.requests
        assert (firing["severity"], firing["kind"], firing["sensor"], firing["scope"]) == \
            ("critical", "system", "jinmei", "jinmei-ingest")
        assert "监测离线" in firing["message"] and "MONITORING OFFLINE" in firing["message"]

        # The next start, once online, resolves the episode under the same id.
        again = run(tmp_path, mosquitto, config, "jinmei.cli", log_name="again.log")
        try:
            assert wait_until(lambda: received(webhook, "monitoring_offline", reason,
                                               "resolved"), 30), webhook.requests
        finally:
            again.send_signal(signal.SIGTERM)
            assert ended(again, 30) == 0, (tmp_path / "again.log").read_text()
    resolved = received(webhook, "monitoring_offline", reason, "resolved")
    assert resolved is not None and resolved["id"] == firing["id"]
    assert resolved["ended_at"] >= resolved["started_at"] == firing["started_at"]
    stopped = retained_status(mosquitto)
    assert stopped is not None and (stopped["state"], stopped["reason"]) == ("offline", "stopped")


def test_kill_9_turns_every_status_offline_by_last_will(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    with scripted_http_server(ok) as webhook:
        proc = run(tmp_path, mosquitto, write_config(tmp_path, webhook), "jinmei.cli")
        try:
            online = wait_until(lambda: status_is(mosquitto, "online"), 20)
            assert online and online["reason"] == "subscribed"
        finally:
            proc.kill()  # SIGKILL: nothing of jinmei runs after this
            proc.wait()
    for mine in ("qipanjing", "dayan"):  # every mine's own connection had its will
        will = wait_until(lambda m=mine: status_is(mosquitto, "offline", m), 10)
        assert will, f"the Last Will of {mine} was not published"
        assert will["reason"] == "connection_lost" and will["last_will"] is True
        assert will["instance"] == online["instance"]


def test_the_start_after_a_kill_9_tells_the_receivers_of_the_gap(mosquitto: Mosquitto,
                                                                  tmp_path: Path) -> None:
    """Nobody can report a kill -9 (or a crash, or a power loss) while it lasts: the next
    start does, from the killed run's last sign of life, and resolves it once online. A clean
    stop leaves nothing to report."""
    with scripted_http_server(ok) as webhook:
        config = write_config(tmp_path, webhook)
        first = run(tmp_path, mosquitto, config, "jinmei.cli")
        try:
            assert wait_until(lambda: status_is(mosquitto, "online"), 20), "never online"
            time.sleep(1.5)  # a sign of life or two after the start's
        finally:
            killed_ms = int(time.time() * 1000)
            first.kill()
            first.wait()
        again = run(tmp_path, mosquitto, config, "jinmei.cli", log_name="again.log")
        try:
            assert wait_until(lambda: received(webhook, "monitoring_offline", "worker_dead",
                                               "resolved"), 30), webhook.requests
        finally:
            again.send_signal(signal.SIGTERM)
            assert ended(again, 30) == 0, (tmp_path / "again.log").read_text()
        third = run(tmp_path, mosquitto, config, "jinmei.cli", log_name="third.log")
        try:
            assert wait_until(lambda: status_is(mosquitto, "online"), 20), "never online"
            time.sleep(2)
        finally:
            third.send_signal(signal.SIGTERM)
            assert ended(third, 30) == 0, (tmp_path / "third.log").read_text()
    for mine in ("qipanjing", "dayan"):
        firing = received(webhook, "monitoring_offline", "worker_dead", "firing", mine)
        resolved = received(webhook, "monitoring_offline", "worker_dead", "resolved", mine)
        assert firing is not None and resolved is not None and firing["id"] == resolved["id"]
        assert killed_ms - 2500 <= firing["started_at"] <= killed_ms  # its last sign of life
        assert firing["scope"] == "jinmei" and resolved["ended_at"] >= firing["started_at"]
    # one gap, one alert per mine: the clean stop of the second run left nothing to report
    assert len([a for a in system_alerts(webhook) if a["state"] == "firing"]) == 2


# ── the service in this process: broker and store failures it must ride out ───────────────

def supervised(broker: Mosquitto, tmp_path: Path, webhook: ScriptedServer,
               **ingest: float) -> Deployment:
    base = deployment_for(broker, tmp_path, client_id="jinmei-watched")
    return dataclasses.replace(
        base, ingest=dataclasses.replace(base.ingest, **ingest),
        alerts=dataclasses.replace(
            base.alerts, receivers=(Receiver("regulator", "webhook", (("url", webhook.url),)),),
            routes=(Route(("regulator",), rules=("monitoring_offline", "store_fault")),)))


def test_a_lost_broker_raises_monitoring_offline_at_the_webhook_and_resolves(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    with scripted_http_server(ok) as webhook:
        service = Service(supervised(mosquitto, tmp_path, webhook, offline_after_s=2.0))
        assert service.start(wait_subscribed_s=10)
        try:
            assert wait_until(lambda: status_is(mosquitto, "online", "dayan"), 10)
            assert service.health() == (True, {})
            mosquitto.stop()
            # the broker is gone: the receivers hear it over HTTP, for every mine
            assert wait_until(lambda: received(webhook, "monitoring_offline", "broker_lost",
                                               "firing", "dayan")
                              and received(webhook, "monitoring_offline", "broker_lost",
                                           "firing"), 15), webhook.requests
            healthy, why = service.health()
            assert not healthy and why["reasons"][0]["reason"] == "broker_lost"  # type: ignore[index]
            mosquitto.start()
            assert wait_until(lambda: received(webhook, "monitoring_offline", "broker_lost",
                                               "resolved"), 45), webhook.requests
            assert wait_until(lambda: status_is(mosquitto, "online"), 10)
            assert service.health() == (True, {})
        finally:
            service.stop()
    firing = received(webhook, "monitoring_offline", "broker_lost", "firing")
    resolved = received(webhook, "monitoring_offline", "broker_lost", "resolved")
    assert firing and resolved and firing["id"] == resolved["id"]
    assert firing["value"] >= firing["limit"] == 2.0  # lasted at least offline_after_s
    assert "断开" in firing["message"] and "cut off from the MQTT broker" in firing["message"]


def test_a_failing_store_raises_store_fault_then_monitoring_offline_and_both_resolve(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The SQLite store refuses writes as on a full disk (``PRAGMA max_page_count`` at its
    current size: SQLITE_FULL), longer than store_fault_after_s and offline_after_s, then
    has room again."""
    with scripted_http_server(ok) as webhook:
        service = Service(supervised(mosquitto, tmp_path, webhook, store_fault_after_s=1.0,
                                     offline_after_s=3.0))
        sink: Any = service.sink
        assert service.start(wait_subscribed_s=10)
        try:
            assert wait_until(lambda: status_is(mosquitto, "online"), 10)
            with sink._lock:
                pages = sink._conn.execute("PRAGMA page_count").fetchone()[0]
                sink._conn.execute(f"PRAGMA max_page_count = {pages}")
            start_ms = int(time.time() * 1000) - 600_000
            readings = [json.dumps({"ts": start_ms, "readings": [
                {"sensor": "T0-1101", "value": 0.3, "ts": start_ms + (m * 100 + i) * 100}
                for i in range(100)]}).encode() for m in range(20)]
            send(mosquitto, [(TOPIC, r) for r in readings])
            assert wait_until(lambda: received(webhook, "store_fault", "store_error", "firing")
                              and received(webhook, "monitoring_offline", "store_failing",
                                           "firing"), 20), webhook.requests
            offline = status_is(mosquitto, "offline")
            assert offline and offline["reason"] == "store_failing"
            assert "database or disk is full" in offline["detail"]  # the store's own words
            assert not service.health()[0]
            with sink._lock:
                sink._conn.execute("PRAGMA max_page_count = 1073741823")
            assert wait_until(lambda: received(webhook, "store_fault", "store_error",
                                               "resolved")
                              and received(webhook, "monitoring_offline", "store_failing",
                                           "resolved"), 30), webhook.requests
            assert wait_until(lambda: status_is(mosquitto, "online"), 10)
            assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"]
                              == 2000, 10)
        finally:
            service.stop()
    fault = received(webhook, "store_fault", "store_error", "firing")
    assert fault and fault["severity"] == "alarm" and fault["scope"].startswith("sqlite:")
    blind = received(webhook, "monitoring_offline", "store_failing", "firing")
    assert blind and blind["severity"] == "critical" and blind["ts"] >= fault["ts"]


# ── the supervisor's judgement, as a table ──────────────────────────────────────────────

@pytest.mark.parametrize(("alive", "heartbeat", "expected"), [
    (True, 99.0, None),             # turned a second ago
    (True, 71.0, None),             # 29 s late: within stall_s 30
    (True, 69.0, "worker_stalled"),  # 31 s late with work in hand
    (True, 500.0, None),            # in a deliberate wait that ends later
    (True, math.inf, None),         # waiting for work it does not have
    (False, 99.0, "worker_dead"),   # ended, however recent its last turn
    (False, math.inf, "worker_dead"),
])
def test_check_finds_dead_and_stalled_threads(alive: bool, heartbeat: float,
                                              expected: str | None) -> None:
    failure = check([Watch("w", lambda: alive, lambda: heartbeat)], now=100.0, stall_s=30.0)
    assert (failure.reason if failure else None) == expected
    if failure is not None:
        assert failure.thread == "w" and math.isfinite(failure.silent_s)


# ── the alert path around its own broken parts ──────────────────────────────────────────

class WorkerKilled(BaseException):
    """Ends the delivery thread from inside a channel's send."""


class DyingChannel:
    def send(self, notification: Notification) -> None:
        raise WorkerKilled("injected: the delivery worker dies sending")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_delivery_worker_still_gets_monitoring_offline_to_the_receiver(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The delivery thread dies sending a power-off to one receiver; the service sends its
    own monitoring_offline to the other synchronously before it gives up."""
    failures: list[Failure] = []
    with scripted_http_server(ok) as webhook:
        base = supervised(mosquitto, tmp_path, webhook)
        desk = Receiver("desk", "webhook", (("url", webhook.url + "/desk"),))
        deployment = dataclasses.replace(base, alerts=dataclasses.replace(
            base.alerts, receivers=(*base.alerts.receivers, desk),
            routes=(*base.alerts.routes, Route(("desk",), rules=("limit_power_off",)))))
        service = Service(deployment, on_failure=failures.append)
        service.delivery.channels["desk"] = DyingChannel()
        assert service.start(wait_subscribed_s=10)
        try:
            send(mosquitto, methane_rise(int(time.time() * 1000) - 60_000))
            assert wait_until(lambda: failures, 20), "the dead delivery worker went unseen"
            alert = received(webhook, "monitoring_offline", "worker_dead", "firing")
            healthy, why = service.health()  # what /healthz says: never healthy now
            assert not healthy and why["reasons"][0]["thread"] == "jinmei-delivery"  # type: ignore[index]
        finally:
            service.stop()
    assert (failures[0].thread, failures[0].reason) == ("jinmei-delivery", "worker_dead")
    assert alert is not None and alert["scope"] == "jinmei-delivery"
    assert not [r for r in webhook.requests if r.path == "/desk"]  # the dying one sent nothing
    outbox = Outbox(StateDB(tmp_path / "state" / "alerts.db"))
    owed = [row.notification.reason for row in outbox.owed()]
    assert "system" not in owed and "floor" in owed  # ours delivered; the power-off still owed
    outbox.db.close()


def test_system_alerts_reach_the_receiver_when_the_alerts_state_file_is_locked(
        tmp_path: Path) -> None:
    """Another process holds the write lock of alerts.db (outbox and record): the alert is
    sent directly, and published all the same."""
    state = tmp_path / "alerts.db"
    published: list[str] = []
    mines = load_deployment(None).mines
    with scripted_http_server(ok) as webhook:
        receiver = Receiver("regulator", "webhook", (("url", webhook.url),))
        system = SystemAlerts(mines, (Route(("regulator",)),),
                              {"regulator": build_channel(receiver)}, state, config_hash="h",
                              instance="jinmei@test", publish=lambda t, p: published.append(t))
        blocker = sqlite3.connect(state, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        now_ms = int(time.time() * 1000)
        try:
            fired = system.fire(Condition("monitoring_offline", "store_failing", "sqlite:x",
                                          now_ms - 5_000, 3.0), now_ms)
            assert wait_until(lambda: len(webhook.requests) == len(mines), 15)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        system.close()
    assert published == [f"jinmei/{m.id}/alerts" for m in mines]
    got = sorted((a["mine"], a["id"]) for a in system_alerts(webhook))
    assert got == sorted((a.mine, a.id) for a in fired)
    assert all(a.value == 5.0 and a.limit == 3.0 for a in fired)


def test_an_unreachable_influxdb_raises_store_fault_only_and_it_resolves(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """With InfluxDB (here VictoriaMetrics) down, readings wait in the spool and detection runs
    on: a store_fault, no monitoring_offline, status online; resolved once it delivers again."""
    with scripted_http_server(ok) as webhook:
        with victoria_metrics(tmp_path) as vm:
            base = supervised(mosquitto, tmp_path, webhook, store_fault_after_s=1.0,
                              offline_after_s=2.0)
            port = vm.port
            service = Service(dataclasses.replace(base, store=dataclasses.replace(
                base.store, url=f"influxdb://127.0.0.1:{port}?org=o&bucket=b")))
            assert service.start(wait_subscribed_s=10)
        try:  # VictoriaMetrics has stopped: nothing can be delivered
            send(mosquitto, methane_rise(int(time.time() * 1000) - 60_000))
            assert wait_until(lambda: received(webhook, "store_fault", "store_error",
                                               "firing"), 20), webhook.requests
            assert wait_until(lambda: service.pipeline.stats.alerts[
                ("qipanjing", "limit_power_off", "firing")] == 1, 10)  # alarms go on
            assert status_is(mosquitto, "online")
            assert service.health() == (True, {})
            with victoria_metrics(tmp_path, port=port):
                assert wait_until(lambda: received(webhook, "store_fault", "store_error",
                                                   "resolved"), 40), webhook.requests
        finally:
            service.stop()
    assert not [a for a in system_alerts(webhook) if a["rule"] == "monitoring_offline"]
    fault = received(webhook, "store_fault", "store_error", "firing")
    assert fault and fault["scope"].startswith("influxdb:")


def test_every_thread_the_service_needs_is_watched(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The optional threads are watched when they exist: networking when enabled, the
    InfluxDB forwarder when that is the store."""
    base = deployment_for(mosquitto, tmp_path)
    plain = Service(base)
    names = [w.name for w in plain.supervisor.watches]
    plain.sink.close()
    assert names == ["jinmei-mqtt", "jinmei-ingest", "jinmei-delivery"]
    full = Service(dataclasses.replace(
        base, networking=NetworkingConfig(enabled=True),
        store=dataclasses.replace(base.store, url="influxdb://127.0.0.1:9?org=o&bucket=b")))
    names = [w.name for w in full.supervisor.watches]
    full.sink.close()
    assert names[3:] == ["jinmei-networking", "jinmei-influx-forwarder"]
