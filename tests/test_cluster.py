"""A clustered broker: three NATS nodes (Debian ``nats-server``, JetStream, MQTT 3.1.1 adapter
with sessions and QoS 1 messages replicated to 3 nodes) on loopback. A node is killed with -9
mid-stream; every reading acknowledged to the publisher is stored, and jinmei goes on
ingesting through the surviving nodes. Why NATS, and what else is needed: deploy/README.md.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config.loader import load_deployment
from config.model import BrokerConfig, IngestConfig, StoreConfig
from ingest.codec import encode_telemetry
from jinmei.service import Service
from tests.servers import free_port, stop_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"
MESSAGES = 600


@dataclasses.dataclass
class Node:
    name: str
    mqtt_port: int
    process: subprocess.Popen[bytes]


def _granted(port: int) -> bool:
    """Whether a QoS 1 subscription in a persistent session is granted (JetStream ready)."""
    granted: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{port}",
                         protocol=mqtt.MQTTv311, clean_session=True)
    client.on_subscribe = lambda c, u, mid, codes, p: granted.append(
        not any(code.is_failure for code in codes))
    try:
        client.connect("127.0.0.1", port)
    except OSError:
        return False
    client.loop_start()
    try:
        client.subscribe("jinmei/probe", qos=1)
        wait_until(lambda: granted, 10.0)
        return bool(granted and granted[0])
    finally:
        client.loop_stop()
        client.disconnect()


@contextmanager
def nats_cluster(tmp_path: Path, size: int = 3) -> Iterator[list[Node]]:
    routes_ports = [free_port() for _ in range(size)]
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes_ports)
    nodes = []
    try:
        for i in range(size):
            conf = tmp_path / f"nats{i}.conf"
            mqtt_port = free_port()
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{free_port()}\n"
                f'jetstream {{ store_dir: "{tmp_path / f"js{i}"}" }}\n'
                f"cluster {{ name: jinmei, listen: 127.0.0.1:{routes_ports[i]}, "
                f"routes: [{routes}] }}\n"
                f"mqtt {{ listen: 127.0.0.1:{mqtt_port}, stream_replicas: {size} }}\n",
                encoding="utf-8")
            with (tmp_path / f"nats{i}.log").open("ab") as log:
                nodes.append(Node(f"n{i}", mqtt_port, subprocess.Popen(
                    [NATS, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)))
        for node in nodes:
            assert wait_until(lambda n=node: _granted(n.mqtt_port), 90, 1.0), \
                (tmp_path / f"nats{node.name[1:]}.log").read_text()[-2000:]
        yield nodes
    finally:
        for node in nodes:
            if node.process.poll() is None:
                stop_process(node.process)


def test_a_node_killed_mid_stream_loses_nothing_acknowledged_and_ingest_goes_on(
        tmp_path: Path) -> None:
    with nats_cluster(tmp_path) as nodes:
        shipped = load_deployment(None)
        deployment = dataclasses.replace(
            shipped, mines=tuple(m for m in shipped.mines if m.id == "qipanjing"),
            broker=BrokerConfig(url=f"mqtt://127.0.0.1:{nodes[0].mqtt_port}",
                                client_id="jinmei-cluster", protocol="3.1.1"),
            store=StoreConfig(url=f"sqlite:///{tmp_path / 'readings.db'}"),
            ingest=IngestConfig(state_dir=str(tmp_path / "state")))
        service = Service(deployment)
        assert service.start(wait_subscribed_s=60)
        try:
            sensors = [s.id for s in deployment.registry.sensors if s.kind == "ch4"]
            publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="mine-qipanjing",
                                    protocol=mqtt.MQTTv311, clean_session=True)
            publisher.connect("127.0.0.1", nodes[1].mqtt_port)
            publisher.loop_start()
            base_ms = int(time.time() * 1000) - 3_600_000
            sent = []
            for r in range(MESSAGES):
                if r == MESSAGES // 2:
                    nodes[2].process.kill()  # -9: neither jinmei's node nor the publisher's
                sent.append(publisher.publish(
                    "jinmei/qipanjing/telemetry/S01",
                    encode_telemetry(base_ms + r * 1000, [(s, 0.30, "ok") for s in sensors]),
                    qos=1))
            for info in sent:
                info.wait_for_publish(30)
            publisher.loop_stop()
            publisher.disconnect()
            acknowledged = sum(info.is_published() for info in sent)
            expected = acknowledged * len(sensors)
            stored = service.pipeline.stats.readings_by_mine
            wait_until(lambda: stored["qipanjing"] >= expected, 60)
            print(f"cluster: {MESSAGES} published, {acknowledged} acknowledged to the publisher "
                  f"({expected} readings), {stored['qipanjing']} stored; node n2 killed -9 "
                  f"after {MESSAGES // 2}")
            assert acknowledged == MESSAGES, "the surviving quorum acknowledges every publish"
            assert stored["qipanjing"] == expected
            assert nodes[2].process.wait(5) < 0 and service.source.wait_subscribed(0)
        finally:
            service.stop()

