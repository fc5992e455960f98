"""Benchmark: what a Mosquitto crash (kill -9) loses of broker-acknowledged QoS 1 messages.

Mosquitto keeps queued messages in memory and writes its whole database every
``autosave_interval`` seconds (or, with ``autosave_on_changes true``, every that many changes).
A publisher's PUBACK therefore means "in the broker's memory", not "on disk". This measures,
on the real broker, for each persistence setting:

1. a subscriber opens a persistent session (MQTT 5, session expiry one day), subscribes at
   QoS 1 and goes away — the broker now queues for it, as for jinmei's ingestor while it is
   down;
2. ``N`` QoS 1 messages are published, every one acknowledged by the broker;
3. ``delay`` seconds later the broker is killed with SIGKILL, then started again on the same
   persistence file;
4. the subscriber comes back to its session and counts what is delivered.

    python -m bench.bench_broker_durability [--messages 50000] [--delays 0 2]

Results in bench/RESULTS.md and README "Security". ``run_case`` is also what
tests/test_broker_durability.py runs, smaller, on the setting that jinmei ships.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from jinmei.broker_config import PERSISTENCE
from simulators.feed import Message
from simulators.publisher import publish
from tests.servers import MOSQUITTO, free_port, wait_listening

__all__ = ["SETTINGS", "Outcome", "run_case"]

# (name, mosquitto.conf lines) of every setting measured
SETTINGS: dict[str, str] = {
    "stock 30 s (shipped before)": "persistence true\nautosave_interval 30\n",
    "jinmei (autosave_interval 1)": PERSISTENCE,
    "autosave_on_changes, every 1000": "persistence true\nautosave_on_changes true\n"
                                       "autosave_interval 1000\n",
}
TOPIC = "durability/telemetry"


@dataclass(frozen=True)
class Outcome:
    setting: str
    published: int
    delay_s: float
    delivered: int
    publish_s: float

    @property
    def lost(self) -> int:
        return self.published - self.delivered


def _conf(workdir: Path, port: int, setting: str) -> Path:
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
                    f"persistence_location {workdir}/\n{setting}"
                    "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
                    f"log_dest file {workdir / 'mosquitto.log'}\n")
    return conf


def _start(conf: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_listening(port, process)
    return process


def _session(port: int, received: list[int] | None = None) -> mqtt.Client:
    """The persistent subscriber: subscribes on the first connection, then only resumes."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="durable-subscriber",
                         protocol=mqtt.MQTTv5)
    ready = threading.Event()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 86_400
    if received is None:
        client.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
        client.on_subscribe = lambda *a: ready.set()
    else:
        client.on_connect = lambda *a: ready.set()
        client.on_message = lambda c, u, m: received.append(1)
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    if not ready.wait(10):
        raise RuntimeError("the durable subscriber did not connect")
    return client


def run_case(setting: str, messages: int, delay_s: float, workdir: Path) -> Outcome:
    """One measurement (module docstring) with the mosquitto.conf lines ``setting``."""
    port = free_port()
    conf = _conf(workdir, port, setting)
    broker = _start(conf, port)
    try:
        subscriber = _session(port)
        subscriber.disconnect()
        subscriber.loop_stop()
        payload = b'{"ts": 1795614332500, "readings": [{"sensor": "T0-1101", "value": 0.82}]}'
        began = time.monotonic()
        publish((Message(0, TOPIC, payload) for _ in range(messages)),
                f"mqtt://127.0.0.1:{port}", speed=None, client_id="durability-publisher")
        publish_s = time.monotonic() - began
        time.sleep(delay_s)
        os.kill(broker.pid, signal.SIGKILL)
        broker.wait()
        broker = _start(conf, port)
        received: list[int] = []
        subscriber = _session(port, received)
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < 3.0 and len(received) < messages:
            if len(received) != last:
                last, quiet_since = len(received), time.monotonic()
            time.sleep(0.1)
        subscriber.disconnect()
        subscriber.loop_stop()
        return Outcome(setting, messages, delay_s, len(received), publish_s)
    finally:
        broker.terminate()
        broker.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--delays", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--only", default="", help="settings whose name contains this")
    args = parser.parse_args()
    print(f"{'setting':<36}{'delay':>7}{'published':>11}{'delivered':>11}{'lost':>8}"
          f"{'publish s':>11}")
    for name, setting in SETTINGS.items():
        if args.only not in name:
            continue
        for delay in args.delays:
            with tempfile.TemporaryDirectory() as tmp:
                o = run_case(setting, args.messages, delay, Path(tmp))
            print(f"{name:<36}{delay:>6g}s{o.published:>11,}{o.delivered:>11,}{o.lost:>8,}"
                  f"{o.publish_s:>11.1f}", flush=True)


if __name__ == "__main__":
    main()
