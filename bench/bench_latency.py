"""Benchmark: latency from publish to alert on the alerts topic, at a steady 10,000 readings/s.

Target (design.md): p99 ≤ 20 ms. A publisher process sends 100-reading messages for a
synthetic mine of 10,000 methane points at a steady rate (10,000 readings/s by default: each
point once a second, as a fast 1 Hz feed; until 2026-12 it was 1,000 points at 10 Hz each,
whose noise of ±0.03 % in 0.1 s set off the spike detector ~100 times a second, so the figure
was that of an alert storm — ``--sensors 1000`` still measures it), each stamped with its
wall-clock publish time; every few seconds one working-face point jumps past its power-off
limit and back. A listener process on ``jinmei/+/alerts`` takes each firing alert's ``ts`` (the
crossing reading's publish time) from its receive time (a process of its own: in the service's
process its paho thread would wait for the interpreter lock, and the figure would be the
benchmark's). Percentiles over all firing alerts are printed.

``--subscriber`` picks what is measured: ``jinmei`` (the service in this process), ``bare``
(the yardstick: a bare paho + msgspec subscriber of :mod:`bench.anchors` that decodes each
message and publishes an alert when a sensor first crosses the power-off limit — the least any
publish → alert path must do) or ``both`` (the default). ``--repeat N`` runs them N times
interleaved and prints medians.

``--workers 1,2`` runs jinmei as that many worker processes instead (as ``bench_e2e.py
--workers`` does, the points spread over that many synthetic mines, one run per count).

Run from the repository root:
``python -m bench.bench_latency [--seconds 30] [--rate 10000] [--repeat 1] [--subscriber both]
[--workers 1,2]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator
from multiprocessing import Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.anchors import bare_subscriber
from bench.bench_e2e import serve_worker
from bench.synthetic import PER_SUBSTATION, running_service, synthetic_deployment, synthetic_mine
from ingest.codec import encode_telemetry
from tests.servers import Mosquitto

CROSSING_EVERY_S = 2.0
_spawn = multiprocessing.get_context("spawn")


def steady_publisher(url: str, seconds: float, rate: float, n_sensors: int,
                     n_mines: int = 0) -> None:
    """Publish whole patrol rounds at ``rate`` readings/s, stamped with the publish time: of
    the one ``bench`` mine, or of ``n_mines`` mines ``bench0``… (``--workers``)."""
    mines = (synthetic_deployment(n_sensors, n_mines).mines if n_mines
             else (synthetic_mine(n_sensors),))
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


def listen(port: int, seconds: float, ready: EventType, out: Queue) -> None:  # type: ignore[type-arg]
    """Collect the latency of every firing alert for ``seconds``, then put the list on ``out``."""
    latencies: list[float] = []

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        alert = json.loads(msg.payload)
        if alert["state"] == "firing":
            latencies.append(time.time() * 1000 - alert["ts"])

    listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="latency-sub")
    listener.on_message = on_message
    listener.on_subscribe = lambda *a: ready.set()
    listener.connect("127.0.0.1", port)
    listener.subscribe("jinmei/+/alerts", qos=1)
    listener.loop_start()
    time.sleep(seconds)
    listener.loop_stop()
    out.put(latencies)


def measure(broker: Mosquitto, args: argparse.Namespace, n_mines: int = 0) -> list[float]:
    """Latencies of the firing alerts while the publisher runs ``--seconds`` at ``--rate``."""
    ready, out = _spawn.Event(), _spawn.Queue()
    listener = _spawn.Process(target=listen, args=(broker.port, args.seconds + 4.0, ready, out))
    listener.start()
    ready.wait(30)
    publisher = _spawn.Process(target=steady_publisher, args=(
        broker.url, args.seconds, args.rate, args.sensors, n_mines))
    publisher.start()
    publisher.join()
    latencies: list[float] = out.get(timeout=60)
    listener.join()
    return latencies


@contextlib.contextmanager
def running_workers(work: Path, n_workers: int, n_sensors: int) -> Iterator[Mosquitto]:
    """A Mosquitto and ``n_workers`` worker processes over ``n_workers`` synthetic mines."""
    broker = Mosquitto(work)
    broker.start()
    ready, done = _spawn.Barrier(n_workers + 1), _spawn.Event()
    # Kept referenced here: a shared value collected before the child unpickles it is gone.
    counters = [(_spawn.Value("q", 0), _spawn.Value("d", 0.0)) for _ in range(n_workers)]
    workers = [_spawn.Process(target=serve_worker, args=(
        k, n_workers, n_sensors, n_workers, broker.url, f"sqlite:///{work / 'readings.db'}",
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


@contextlib.contextmanager
def running_bare(work: Path) -> Iterator[Mosquitto]:
    """A Mosquitto and the bare yardstick subscribed to it."""
    broker = Mosquitto(work)
    broker.start()
    ready, done = _spawn.Event(), _spawn.Event()
    power_off = synthetic_mine(1).sensors[0].limits.power_off
    anchor = _spawn.Process(target=bare_subscriber,
                            args=(broker.port, 0, ready, done, power_off), daemon=True)
    anchor.start()
    try:
        ready.wait(30)
        yield broker
    finally:
        anchor.kill()
        broker.stop()


def run(kind: str, args: argparse.Namespace) -> list[float]:
    """One run of ``kind``: ``jinmei``, ``bare`` or ``N worker(s)``."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if kind == "jinmei":
            broker, _service = stack.enter_context(running_service(Path(tmp), args.sensors))
            return measure(broker, args)
        if kind == "bare":
            return measure(stack.enter_context(running_bare(Path(tmp))), args)
        n_workers = int(kind.split()[0])
        broker = stack.enter_context(running_workers(Path(tmp), n_workers, args.sensors))
        return measure(broker, args, n_mines=n_workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings/s")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sensors", type=int, default=10_000,
                        help="each reports rate/sensors times a second (1 Hz by default)")
    parser.add_argument("--subscriber", choices=("jinmei", "bare", "both"), default="both")
    parser.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")],
                        help="jinmei as worker processes, e.g. 1,2 (default: in this process)")
    args = parser.parse_args()

    jinmei = [f"{n} worker(s)" for n in args.workers] if args.workers else ["jinmei"]
    kinds = {"jinmei": jinmei, "bare": ["bare"], "both": [*jinmei, "bare"]}[args.subscriber]
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    for _ in range(args.repeat):
        for kind in kinds:
            latencies = run(kind, args)
            p50, p99, worst = np.percentile(latencies, [50, 99, 100])
            figures[kind].append((p50, p99))
            print(f"{kind}: publish → alert at {args.rate:,.0f} readings/s for "
                  f"{args.seconds:g} s: {len(latencies)} firing alerts, p50 {p50:.1f} ms, "
                  f"p99 {p99:.1f} ms, max {worst:.1f} ms", flush=True)
    for kind, runs in figures.items():
        print(f"median of {args.repeat}: {kind} p50 "
              f"{statistics.median(r[0] for r in runs):.1f} ms, p99 "
              f"{statistics.median(r[1] for r in runs):.1f} ms")


if __name__ == "__main__":
    main()
