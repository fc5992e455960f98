"""Benchmark: end to end through a real Mosquitto into the store, beside its yardsticks.

Targets (design.md): ≥ 350,000 readings/s batched (100 readings a message) and, with one
reading a message, ≥ 0.9× ``mosquitto_sub`` on the same broker; issue 16: SQLite ≥ 0.6× and the
InfluxDB spool ≥ 0.7× a bare paho + msgspec subscriber. A publisher process pushes pre-encoded
telemetry for a synthetic mine at QoS 1 as fast as the broker acknowledges; the subscriber
under test takes it:

- ``jinmei``: the service (`jinmei run` in-process: MQTT 5 source with ack after commit, codec,
  detectors, alert dispatcher, store). The figure is readings stored per second, from the first
  publish to the moment the last reading is committed and acknowledged;
- ``bare`` and ``mosquitto_sub``: the yardsticks of :mod:`bench.anchors`, timed from the same
  start to their last message, each on a fresh broker of its own.

``--repeat N`` runs the three N times interleaved (jinmei, bare, mosquitto_sub, jinmei, …) and
prints each run and the medians with jinmei's ratio to each yardstick — the machine is shared,
so only figures from one interleaved run are compared. The publishers are processes of their
own, as mines are: in the service's process they would compete with it for the interpreter
lock; each keeps at most 100 publishes unacknowledged (paho's own bookkeeping slows down past a
few hundred). The clock starts once every publisher process has started and holds its share.
Mosquitto runs with the limits of deploy/mosquitto.conf (no queue cap, no in-flight cap).

Run from the repository root:
``python -m bench.bench_e2e_anchors [--store sqlite|influx] [--per-message 100] [--readings 1000000]
[--repeat 3] [--subscribers jinmei,bare,mosquitto_sub]``
(``influx`` writes through the InfluxDB sink's spool to a real VictoriaMetrics.)

The one-worker figures beside their yardsticks (issue 16); bench/bench_e2e.py
(scale-out: ``--workers``) measures the multi-process service. The two are to be one script
again once both issues land.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

from bench.anchors import bare_subscriber, start_mosquitto_sub
from bench.synthetic import payloads, running_service, synthetic_mine
from simulators.feed import Message
from simulators.publisher import publish
from tests.servers import Mosquitto

SUBSCRIBERS = ("jinmei", "bare", "mosquitto_sub")
_spawn = multiprocessing.get_context("spawn")


def publish_share(messages: list[Message], url: str, client_id: str,
                  start: BarrierType) -> None:
    start.wait()  # every publisher is up: the clock starts now
    publish(messages, url, speed=None, client_id=client_id, window=100)


def timed_publish(messages: list[Message], url: str, publishers: int,
                  finished: Callable[[], bool]) -> float:
    """Seconds from the start of every publisher to ``finished()``."""
    start = _spawn.Barrier(publishers + 1)
    procs = [_spawn.Process(target=publish_share,
                            args=(messages[i::publishers], url, f"pub-{i}", start))
             for i in range(publishers)]
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    while not finished():
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return elapsed


def workload(args: argparse.Namespace) -> list[Message]:
    mine = synthetic_mine(args.sensors)
    rounds = -(-args.readings // args.sensors)
    start_ms = int(time.time() * 1000) - rounds * 1000 - 60_000
    return [Message(0, t, p, args.per_message)
            for t, p in payloads(mine, rounds, start_ms, per_message=args.per_message)]


def run_jinmei(args: argparse.Namespace, messages: list[Message]) -> float:
    total = sum(m.readings for m in messages)
    with tempfile.TemporaryDirectory() as tmp, running_service(
            Path(tmp), args.sensors, args.store, args.protocol) as (broker, service):
        stats = service.pipeline.stats
        elapsed = timed_publish(messages, broker.url, args.publishers,
                                lambda: sum(stats.readings_by_mine.values()) >= total)
        note = f"{stats.alerts.total()} alert transitions"
        if args.store == "influx":  # counted once durable in the spool; what has gone on since:
            sink = service.sink.stats()
            note += (f"; spool: {sink['delivered']:,} lines delivered to VictoriaMetrics, "
                     f"{sink['pending']} chunks pending")
    print(f"  jinmei ({args.store}, MQTT {args.protocol}): {total / elapsed:,.0f} readings/s, "
          f"{len(messages) / elapsed:,.0f} messages/s ({note})", flush=True)
    return total / elapsed


def run_anchor(kind: str, args: argparse.Namespace, messages: list[Message]) -> float:
    total = sum(m.readings for m in messages)
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            if kind == "bare":
                ready, done = _spawn.Event(), _spawn.Event()
                proc = _spawn.Process(target=bare_subscriber,
                                      args=(broker.port, total, ready, done), daemon=True)
                proc.start()
                ready.wait(30)
                elapsed = timed_publish(messages, broker.url, args.publishers, done.is_set)
                proc.kill()
            else:
                sub = start_mosquitto_sub(broker.port, len(messages))
                elapsed = timed_publish(messages, broker.url, args.publishers,
                                        lambda: sub.poll() is not None)
        finally:
            broker.stop()
    print(f"  {kind}: {total / elapsed:,.0f} readings/s, "
          f"{len(messages) / elapsed:,.0f} messages/s", flush=True)
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "influx"), default="sqlite")
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5",
                        help="jinmei's broker.protocol")
    parser.add_argument("--subscribers", default="jinmei",
                        help=f"comma-separated, of {', '.join(SUBSCRIBERS)}")
    args = parser.parse_args()
    kinds = args.subscribers.split(",")
    if unknown := set(kinds) - set(SUBSCRIBERS):
        parser.error(f"unknown subscribers: {', '.join(sorted(unknown))}")

    messages = workload(args)
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for run in range(args.repeat):
        print(f"run {run + 1}:", flush=True)
        for kind in kinds:
            rate = run_jinmei(args, messages) if kind == "jinmei" else \
                run_anchor(kind, args, messages)
            rates[kind].append(rate)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(f"medians of {args.repeat}, {args.per_message} readings/message, store {args.store}: "
          + "; ".join(f"{k} {m:,.0f} readings/s ({m / args.per_message:,.0f} msg/s)"
                      for k, m in medians.items()))
    if "jinmei" in medians:
        for kind in (k for k in kinds if k != "jinmei"):
            print(f"  jinmei / {kind}: {medians['jinmei'] / medians[kind]:.2f}×")


if __name__ == "__main__":
    main()
