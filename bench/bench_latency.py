"""Benchmark: latency from publish to alert on the alerts topic, at a steady 10,000 readings/s.

Target (design.md): p99 ≤ 500 ms. A publisher process sends 100-reading messages for a
synthetic mine of 1,000 methane points at a steady rate (10,000 readings/s by default), each
stamped with its wall-clock publish time; every few seconds one working-face point jumps past
its power-off limit and back. A subscriber on ``jinmei/+/alerts`` takes each firing alert's
``ts`` (the crossing reading's publish time) from its receive time. Percentiles over all
firing alerts are printed.

Run from the repository root: ``python -m bench.bench_latency [--seconds 30] [--rate 10000]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.synthetic import PER_SUBSTATION, running_service, synthetic_mine
from ingest.codec import encode_telemetry

SENSORS = 1_000
CROSSING_EVERY_S = 2.0


def steady_publisher(url: str, seconds: float, rate: float) -> None:
    """Publish whole patrol rounds at ``rate`` readings/s, stamped with the publish time."""
    mine = synthetic_mine(SENSORS)
    ids = [s.id for s in mine.sensors]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-pub")
    host, port = url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    rng = np.random.default_rng(3)
    interval = PER_SUBSTATION / rate
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        lo = (sent * PER_SUBSTATION) % SENSORS
        values = np.round(rng.normal(0.3, 0.03, PER_SUBSTATION), 2)
        crossing = int((now - start) // CROSSING_EVERY_S) % 2 == 1  # 2 s high, 2 s low
        values[0] = 1.8 if crossing else 0.3
        ts = int(time.time() * 1000)
        readings = [(ids[lo + i], float(v), "ok") for i, v in enumerate(values)]
        payload = encode_telemetry(ts, readings)
        client.publish(f"jinmei/{mine.id}/telemetry/{mine.sensors[lo].substation}", payload, qos=1)
        sent += 1
        time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    client.loop_stop()
    client.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings/s")
    args = parser.parse_args()

    latencies: list[float] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        alert = json.loads(msg.payload)
        if alert["state"] == "firing":
            with lock:
                latencies.append(time.time() * 1000 - alert["ts"])

    with tempfile.TemporaryDirectory() as tmp, \
            running_service(Path(tmp), SENSORS) as (broker, _service):
        listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-sub")
        listener.on_message = on_message
        listener.connect("127.0.0.1", broker.port)
        listener.subscribe("jinmei/+/alerts", qos=1)
        listener.loop_start()
        publisher = multiprocessing.get_context("spawn").Process(
            target=steady_publisher, args=(broker.url, args.seconds, args.rate))
        publisher.start()
        publisher.join()
        time.sleep(2.0)
        listener.loop_stop()
    p50, p99, worst = np.percentile(latencies, [50, 99, 100])
    print(f"publish → alert at {args.rate:,.0f} readings/s for {args.seconds:g} s: "
          f"{len(latencies)} firing alerts, p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {worst:.0f} ms")


if __name__ == "__main__":
    main()
