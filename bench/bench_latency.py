"""Benchmark: latency from publish to alert on the alerts topic, at a steady 10,000 readings/s.

Target (design.md): p99 ≤ 500 ms. A publisher process sends 100-reading messages for a
synthetic mine of 1,000 methane points at a steady rate (10,000 readings/s by default), each
stamped with its wall-clock publish time; every few seconds one working-face point jumps past
its power-off limit and back. A subscriber on ``jinmei/+/alerts`` takes each firing alert's
``ts`` (the crossing reading's publish time) from its receive time. Percentiles over all
firing alerts are printed.

Run from the repository root: ``python -m bench.bench_latency [--seconds 30] [--rate 10000]``

``--workers 1,2`` runs the service as that many worker processes instead (as
``bench_e2e.py --workers`` does, the 1,000 points spread over that many synthetic mines, one
run per count) and prints each count's percentiles.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.bench_e2e import serve_worker
from bench.synthetic import PER_SUBSTATION, running_service, synthetic_deployment, synthetic_mine
from ingest.codec import encode_telemetry
from tests.servers import Mosquitto

SENSORS = 1_000
CROSSING_EVERY_S = 2.0


def steady_publisher(url: str, seconds: float, rate: float, n_mines: int = 0) -> None:
    """Publish whole patrol rounds at ``rate`` readings/s, stamped with the publish time: of
    the one ``bench`` mine, or of ``n_mines`` mines ``bench0``… (``--workers``)."""
    mines = (synthetic_deployment(SENSORS, n_mines).mines if n_mines
             else (synthetic_mine(SENSORS),))
    sensors = [s for mine in mines for s in mine.sensors]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-pub")
    host, port = url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port))
    client.loop_start()
    rng = np.random.default_rng(3)
    interval = PER_SUBSTATION / rate
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        lo = (sent * PER_SUBSTATION) % len(sensors)
        values = np.round(rng.normal(0.3, 0.03, PER_SUBSTATION), 2)
        crossing = int((now - start) // CROSSING_EVERY_S) % 2 == 1  # 2 s high, 2 s low
        values[0] = 1.8 if crossing else 0.3
        ts = int(time.time() * 1000)
        readings = [(sensors[lo + i].id, float(v), "ok") for i, v in enumerate(values)]
        payload = encode_telemetry(ts, readings)
        first = sensors[lo]  # a message holds one substation's 100 points, of one mine
        client.publish(f"jinmei/{first.mine}/telemetry/{first.substation}", payload, qos=1)
        sent += 1
        time.sleep(max(0.0, start + sent * interval - time.monotonic()))
    client.loop_stop()
    client.disconnect()


@contextlib.contextmanager
def running_workers(work: Path, n_workers: int) -> Iterator[Mosquitto]:
    """A Mosquitto and ``n_workers`` worker processes over ``n_workers`` synthetic mines."""
    spawn = multiprocessing.get_context("spawn")
    broker = Mosquitto(work)
    broker.start()
    ready, done = spawn.Barrier(n_workers + 1), spawn.Event()
    # Kept referenced here: a shared value collected before the child unpickles it is gone.
    counters = [(spawn.Value("q", 0), spawn.Value("d", 0.0)) for _ in range(n_workers)]
    workers = [spawn.Process(target=serve_worker, args=(
        k, n_workers, SENSORS, n_workers, broker.url, f"sqlite:///{work / 'readings.db'}",
        str(work / "state"), *counters[k], ready, done)) for k in range(n_workers)]
    for w in workers:
        w.start()
    ready.wait()
    try:
        yield broker
    finally:
        done.set()
        for w in workers:
            w.join()
        broker.stop()


def measure(args: argparse.Namespace, n_workers: int | None) -> None:
    latencies: list[float] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        alert = json.loads(msg.payload)
        if alert["state"] == "firing":
            with lock:
                latencies.append(time.time() * 1000 - alert["ts"])

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if n_workers is None:
            broker, _service = stack.enter_context(running_service(Path(tmp), SENSORS))
        else:
            broker = stack.enter_context(running_workers(Path(tmp), n_workers))
        listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-sub")
        listener.on_message = on_message
        listener.connect("127.0.0.1", broker.port)
        listener.subscribe("jinmei/+/alerts", qos=1)
        listener.loop_start()
        publisher = multiprocessing.get_context("spawn").Process(
            target=steady_publisher, args=(broker.url, args.seconds, args.rate,
                                           n_workers or 0))
        publisher.start()
        publisher.join()
        time.sleep(2.0)
        listener.loop_stop()
    p50, p99, worst = np.percentile(latencies, [50, 99, 100])
    who = "in-process service" if n_workers is None else f"{n_workers} worker(s)"
    print(f"publish → alert at {args.rate:,.0f} readings/s for {args.seconds:g} s, {who}: "
          f"{len(latencies)} firing alerts, p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
          f"max {worst:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings/s")
    parser.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")],
                        help="worker counts, e.g. 1,2 (default: the service in this process)")
    args = parser.parse_args()
    for n in args.workers or [None]:
        measure(args, n)


if __name__ == "__main__":
    main()
