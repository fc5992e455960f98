"""Benchmark: end to end through a real Mosquitto into the store, beside its yardsticks.

Targets (design.md): ≥ 350,000 readings/s batched (100 readings a message) and, with one
reading a message, ≥ 0.9× ``mosquitto_sub`` on the same broker; issue 16: SQLite ≥ 0.6× and the
InfluxDB spool ≥ 0.7× a bare paho + msgspec subscriber. Publisher processes push pre-encoded
telemetry for a synthetic mine at QoS 1 as fast as the broker acknowledges; the subscriber
under test takes it (``--subscribers``, comma-separated, default ``jinmei``):

- ``jinmei``: the service (`jinmei run` in-process: MQTT 5 source with ack after commit, codec,
  detectors, alert dispatcher, store). The figure is readings stored per second, from the first
  publish to the moment the last reading is committed and acknowledged;
- ``bare`` and ``mosquitto_sub``: the yardsticks of :mod:`bench.anchors`, timed from the same
  start to their last message, each on a fresh broker of its own.

``--repeat N`` runs them N times interleaved (jinmei, bare, mosquitto_sub, jinmei, …) and prints
each run and the medians with jinmei's ratio to each yardstick — the machine is shared, so only
figures from one interleaved run are compared. The publishers are processes of their own, as
mines are: in the service's process they would compete with it for the interpreter lock; each
keeps at most 100 publishes unacknowledged (paho's own bookkeeping slows down past a few
hundred: measured here 17k msg/s with 50, 6k with 1,000). The clock starts once every publisher
process has started and holds its share (a spawned interpreter importing the project took
1.5–2.7 s here, a quarter of a run that was once counted in). Mosquitto runs with the limits of
deploy/mosquitto.conf (no queue cap, no in-flight cap).

Run from the repository root:
``python -m bench.bench_e2e [--store sqlite|influx] [--per-message 100] [--readings 1000000]
[--repeat 3] [--subscribers jinmei,bare,mosquitto_sub] [--protocol 5|3.1.1]``
(``influx`` writes through the InfluxDB sink's spool to a real VictoriaMetrics.)

Workers (``[ingest] workers``, jinmei.workers): ``--workers 1,2`` runs the service as that many
worker processes — each a :class:`~jinmei.service.Service` for its share of the mines, made as
``jinmei run`` makes it (``select_mines``, ``as_worker``, per-mine subscriptions) — over the
same feed, for both stores (``--store both``, the default with ``--workers``), and prints each
figure and the ratio to the first worker count, with each worker's CPU seconds (on a busy
machine the wall-clock figure measures the neighbours too; the readings divided by the
busiest worker's CPU time is the rate with a core each, the broker and publishers aside);
``--repeat R`` runs the whole set R times
(interleaved, so the machine's load falls on each alike) and prints the medians. The feed is
``--sensors`` points spread over ``--mines`` synthetic mines (default: the largest worker
count), so every run takes the same readings and only the number of processes differs.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier as BarrierType
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

from bench.anchors import bare_subscriber, start_mosquitto_sub
from bench.synthetic import payloads, running_service, synthetic_deployment, synthetic_mine
from config.model import BrokerConfig, IngestConfig, StoreConfig
from jinmei.service import Service
from jinmei.workers import as_worker, assign, select_mines, telemetry_topics
from simulators.feed import Message
from simulators.publisher import publish
from tests.servers import Mosquitto, victoria_metrics

SUBSCRIBERS = ("jinmei", "bare", "mosquitto_sub")
_spawn = multiprocessing.get_context("spawn")


def publish_share(messages: list[Message], url: str, client_id: str,
                  start: BarrierType) -> None:
    start.wait()  # every publisher is up: the clock starts now
    publish(messages, url, speed=None, client_id=client_id, window=100)


def start_publishers(messages: list[Message], url: str, n: int
                     ) -> list[multiprocessing.process.BaseProcess]:
    """``n`` publisher processes holding their shares; returns once the clock may start."""
    start = _spawn.Barrier(n + 1)
    publishers = [_spawn.Process(target=publish_share,
                                 args=(messages[i::n], url, f"pub-{i}", start))
                  for i in range(n)]
    for p in publishers:
        p.start()
    start.wait()
    return publishers


def timed_publish(messages: list[Message], url: str, publishers: int,
                  finished: Callable[[], bool]) -> float:
    """Seconds from the start of every publisher to ``finished()``."""
    procs = start_publishers(messages, url, publishers)
    t0 = time.perf_counter()
    while not finished():
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    return elapsed


def workload(args: argparse.Namespace) -> list[Message]:
    """The feed of one synthetic mine of ``--sensors`` points, ``--readings`` in all."""
    mine = synthetic_mine(args.sensors)
    rounds = -(-args.readings // args.sensors)
    start_ms = int(time.time() * 1000) - rounds * 1000 - 60_000
    return [Message(0, t, p, args.per_message)
            for t, p in payloads(mine, rounds, start_ms, per_message=args.per_message)]


def run_jinmei(args: argparse.Namespace, messages: list[Message]) -> float:
    """Readings/s of the service in this process (one worker)."""
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
    """Readings/s of a yardstick (``bare`` or ``mosquitto_sub``) on a broker of its own."""
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


def beside_yardsticks(args: argparse.Namespace) -> None:
    """One worker and the yardsticks, interleaved ``--repeat`` times; medians and ratios."""
    kinds = args.subscribers
    messages = workload(args)
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    for run in range(args.repeat):
        print(f"run {run + 1}:", flush=True)
        for kind in kinds:
            rates[kind].append(run_jinmei(args, messages) if kind == "jinmei"
                               else run_anchor(kind, args, messages))
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(f"medians of {args.repeat}, {args.per_message} readings/message, store {args.store}: "
          + "; ".join(f"{k} {m:,.0f} readings/s ({m / args.per_message:,.0f} msg/s)"
                      for k, m in medians.items()))
    if "jinmei" in medians:
        for kind in (k for k in kinds if k != "jinmei"):
            ratios = [a / b for a, b in zip(rates["jinmei"], rates[kind], strict=True)]
            print(f"  jinmei / {kind}: {medians['jinmei'] / medians[kind]:.2f}× of the medians "
                  f"(per run {', '.join(f'{r:.2f}' for r in ratios)})")


def serve_worker(index: int, n_workers: int, n_sensors: int, n_mines: int, broker_url: str,
                 store_url: str, state_dir: str, stored: Synchronized[int],
                 cpu: Synchronized[float], ready: BarrierType, done: EventType) -> None:
    """One worker process: the service for its share of the synthetic mines, its readings
    stored so far copied to ``stored`` every 10 ms until ``done``; then the CPU seconds the
    process used from the start of the clock (``cpu``)."""
    deployment = synthetic_deployment(
        n_sensors, n_mines=n_mines, broker=BrokerConfig(url=broker_url, client_id="bench"),
        store=StoreConfig(url=store_url), ingest=IngestConfig(state_dir=state_dir))
    share = assign([m.id for m in deployment.mines], n_workers)[index]
    deployment = select_mines(deployment, ",".join(share))
    if n_workers > 1:
        deployment = as_worker(deployment, index)
    service = Service(deployment, topic=telemetry_topics(deployment, every_mine=False))
    assert service.start(wait_subscribed_s=30)
    counts = service.pipeline.stats.readings_by_mine
    ready.wait()
    cpu_before = process_cpu_s()
    try:
        while not done.wait(0.01):
            stored.value = sum(dict(counts).values())
    finally:
        cpu.value = process_cpu_s() - cpu_before
        service.stop()


def process_cpu_s() -> float:
    """CPU seconds (user + system) of this process and its threads so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def store_server(work: Path, store: str) -> Iterator[str]:
    """The store's URL: a SQLite file, or a running VictoriaMetrics behind the InfluxDB sink."""
    if store == "influx":
        with victoria_metrics(work / "vm") as vm:
            yield f"influxdb://127.0.0.1:{vm.port}?org=jinmei&bucket=jinmei"
    else:
        yield f"sqlite:///{work / 'readings.db'}"


def with_workers(args: argparse.Namespace, n_workers: int, store: str) -> float:
    """Readings/s end to end with the service as ``n_workers`` processes."""
    n_mines = args.mines or max(args.workers)
    mines = synthetic_deployment(args.sensors, n_mines).mines
    rounds = -(-args.readings // args.sensors)
    start_ms = int(time.time() * 1000) - rounds * 1000 - 60_000
    messages = [Message(0, t, p, args.per_message) for mine in mines
                for t, p in payloads(mine, rounds, start_ms, per_message=args.per_message)]
    total = sum(m.readings for m in messages)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        broker = Mosquitto(work)
        broker.start()
        stack.callback(broker.stop)
        store_url = stack.enter_context(store_server(work, store))
        ready, done = _spawn.Barrier(n_workers + 1), _spawn.Event()
        stored = [_spawn.Value("q", 0) for _ in range(n_workers)]
        cpu = [_spawn.Value("d", 0.0) for _ in range(n_workers)]
        workers = [_spawn.Process(target=serve_worker, args=(
            k, n_workers, args.sensors, n_mines, broker.url, store_url, str(work / "state"),
            stored[k], cpu[k], ready, done)) for k in range(n_workers)]
        for w in workers:
            w.start()
        ready.wait()
        publishers = start_publishers(messages, broker.url, args.publishers)
        t0 = time.perf_counter()
        while sum(v.value for v in stored) < total:
            time.sleep(0.01)
        elapsed = time.perf_counter() - t0
        done.set()
        for p in [*publishers, *workers]:
            p.join()
    rate = total / elapsed
    # The waiting loop's last turns are counted in; they are 10 ms sleeps, next to nothing.
    busiest = max(c.value for c in cpu)
    print(f"  store {store}, {n_workers} worker(s), {n_mines} mines: {total:,} readings in "
          f"{elapsed:.2f} s = {rate:,.0f} readings/s; worker CPU "
          f"{' + '.join(f'{c.value:.2f}' for c in cpu)} s "
          f"({sum(c.value for c in cpu) / total * 1e6:.2f} µs a reading; a core each: "
          f"{total / busiest:,.0f} readings/s)", flush=True)
    return rate


def scale_out(args: argparse.Namespace) -> None:
    stores = ("sqlite", "influx") if args.store == "both" else (args.store,)
    rates: dict[tuple[str, int], list[float]] = {(s, n): [] for s in stores for n in args.workers}
    for r in range(args.repeat):
        print(f"round {r + 1} of {args.repeat}", flush=True)
        for store in stores:
            for n in args.workers:
                rates[(store, n)].append(with_workers(args, n, store))
    base = args.workers[0]
    for store in stores:
        for n in args.workers:
            median = statistics.median(rates[(store, n)])
            ratios = [a / b for a, b in zip(rates[(store, n)], rates[(store, base)], strict=True)]
            print(f"store {store}, {n} worker(s): median {median:,.0f} readings/s "
                  f"({', '.join(f'{x / 1000:,.0f} k' for x in rates[(store, n)])}); "
                  f"× {statistics.median(ratios):.2f} of {base} worker(s)")


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "influx", "both"), default=None)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--workers", type=lambda text: [int(n) for n in text.split(",")],
                        help="worker counts to compare, e.g. 1,2")
    parser.add_argument("--mines", type=int, default=0,
                        help="synthetic mines with --workers (default: the largest count)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--protocol", choices=("5", "3.1.1"), default="5",
                        help="jinmei's broker.protocol (one worker)")
    parser.add_argument("--subscribers", type=lambda text: text.split(","), default=["jinmei"],
                        help=f"one worker beside yardsticks: of {', '.join(SUBSCRIBERS)}")
    args = parser.parse_args()
    if unknown := set(args.subscribers) - set(SUBSCRIBERS):
        parser.error(f"unknown subscribers: {', '.join(sorted(unknown))}")
    print(f"load average at start: {load_average()}", flush=True)
    try:
        if args.workers:
            args.store = args.store or "both"
            scale_out(args)
        else:
            args.store = args.store or "sqlite"
            if args.store == "both":
                parser.error("--store both needs --workers")
            beside_yardsticks(args)
    finally:
        print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
