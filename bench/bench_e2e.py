"""Benchmark: end to end through a real Mosquitto into the store, on this machine.

Targets (design.md): ≥ 200,000 readings/s with batched payloads (100 readings a message) and
≥ 15,000 messages/s with one reading a message. A publisher thread pushes pre-encoded
telemetry for a synthetic mine at QoS 1 as fast as the broker acknowledges; the service
(`jinmei run` in-process: MQTT 5 source with ack after commit, codec, detectors, alert
dispatcher, store) takes it. The publishers are processes of their own, as mines are: in the
service's process they would compete with it for the interpreter lock; each keeps at most 100
publishes unacknowledged (paho's own bookkeeping slows down past a few hundred: measured here
17k msg/s with 50, 6k with 1,000). The figure is readings stored per second, from the first publish
to the moment the last reading is committed and acknowledged: the clock starts once every
publisher process has started and holds its share (a spawned interpreter importing the
project took 1.5–2.7 s here, a quarter of a run that was once counted in). Mosquitto runs with
the limits of deploy/mosquitto.conf (no queue cap, no in-flight cap).

Run from the repository root:
``python -m bench.bench_e2e [--store sqlite|influx] [--per-message 100] [--readings 1000000]``
(``influx`` writes through the InfluxDB sink's spool to a real VictoriaMetrics.)
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

from bench.synthetic import payloads, running_service
from simulators.feed import Message
from simulators.publisher import publish


def publish_share(messages: list[Message], url: str, client_id: str,
                  start: BarrierType) -> None:
    start.wait()  # every publisher is up: the clock starts now
    publish(messages, url, speed=None, client_id=client_id, window=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "influx"), default="sqlite")
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--publishers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, \
            running_service(Path(tmp), args.sensors, args.store) as (broker, service):
        mine = service.deployment.mines[0]
        rounds = -(-args.readings // args.sensors)
        start_ms = int(time.time() * 1000) - rounds * 1000 - 60_000
        messages = [Message(0, t, p, args.per_message)
                    for t, p in payloads(mine, rounds, start_ms, per_message=args.per_message)]
        total = sum(m.readings for m in messages)

        spawn = multiprocessing.get_context("spawn")
        start = spawn.Barrier(args.publishers + 1)
        publishers = [spawn.Process(target=publish_share,
                                    args=(messages[i::args.publishers], broker.url, f"pub-{i}",
                                          start))
                      for i in range(args.publishers)]
        for p in publishers:
            p.start()
        start.wait()
        t0 = time.perf_counter()
        stats = service.pipeline.stats
        while sum(stats.readings_by_mine.values()) < total:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        for p in publishers:
            p.join()
        print(f"end to end, store {args.store}, "
              f"{args.per_message} readings/message: "
              f"{total} readings in {elapsed:.2f} s = {total / elapsed:,.0f} readings/s, "
              f"{len(messages) / elapsed:,.0f} messages/s; "
              f"{stats.alerts.total()} alert transitions")
        if args.store == "influx":  # counted once durable in the spool; what has gone on since:
            sink = service.sink.stats()
            print(f"spool: {sink['delivered']:,} lines delivered to VictoriaMetrics, "
                  f"{sink['pending']} chunks still pending")


if __name__ == "__main__":
    main()
