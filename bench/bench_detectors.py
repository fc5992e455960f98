"""Benchmark: every detector together (``build_detectors``) on 10,000 sensors, and its memory.

Targets (issue 4, design.md): ≥ 1,000,000 readings/s on one core over 10,000 sensors; 10,000
sensors with one hour of 1 Hz history in ≤ 1 GiB RSS.

The synthetic mine of ``bench/synthetic.py`` (working-face methane, 100 per substation) with a
1 s period; the trend history keeps one reading per 10 s bin (361 bins an hour per sensor).
Batches are one patrol round of every sensor per second of mine time, ``--rounds`` rounds a
batch (100 readings per sensor per batch, like the 100-reading payloads of the pipeline
target); values wander around 0.3 % with 0.5 % of them above the 1.0 % alarm limit. First the
history is filled with an hour of readings (untimed), then ``--batches`` batches are timed one
by one, in CPU time of this process (the box is shared: other processes' load must not count);
the median is reported, and the process's peak RSS (``ru_maxrss``) at the end.

``--period 10`` feeds each sensor every 10 s instead (the history's memory is by time: it should
not change).

``--message 1,100`` times instead what one MQTT message costs live: after the hour, batches of
one message each — ``N`` consecutive points of one substation at one instant, the substations
taking turns so that every point still reports once a period — and prints each detector's
median CPU time a batch. A batch's cost should follow the batch, not the registry: compare
``--sensors 10000`` and ``--sensors 100000`` (issue 16).

Memory: the bytes of every detector's numpy state (arrays owning their data, per member and
per sensor), and with ``--memory`` the suite's allocations traced by ``tracemalloc`` from its
construction through the hour (held at the end, and the peak while a batch is judged).

Run: ``python -m bench.bench_detectors [--sensors 10000] [--rounds 100] [--batches 15]
[--period 1] [--message 1,100] [--memory]``
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import statistics
import time
import tracemalloc
from collections.abc import Iterator

import numpy as np

from bench.synthetic import synthetic_mine
from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch
from detectors.suite import DetectorSuite, build_detectors

T0 = 1_800_000_000_000


def batches(n_sensors: int, rounds: int, count: int, start_s: int,
            rng: np.random.Generator, period_s: int = 1) -> Iterator[ReadingBatch]:
    """One at a time: the benchmark's own data must not count in the detectors' memory."""
    for b in range(count):
        sensor = np.tile(np.arange(n_sensors, dtype=np.int32), rounds)
        second = start_s + (b * rounds + np.repeat(np.arange(rounds), n_sensors)) * period_s
        value = np.round(rng.normal(0.3, 0.05, sensor.size), 2)
        value[rng.random(sensor.size) < 0.005] = 1.2
        yield ReadingBatch(sensor, T0 + second.astype(np.int64) * 1000, value,
                           np.zeros(sensor.size, np.uint16))


def messages(n_sensors: int, per_message: int, count: int, start_s: int, period_s: int,
             rng: np.random.Generator) -> Iterator[ReadingBatch]:
    """One message a batch: ``per_message`` consecutive points at one instant, the groups
    taking turns so that each point reports once every ``period_s``."""
    groups = max(n_sensors // per_message, 1)
    for m in range(count):
        group, round_ = m % groups, m // groups
        sensor = np.arange(group * per_message, (group + 1) * per_message, dtype=np.int32)
        ms = (start_s + round_ * period_s) * 1000 + group * period_s * 1000 // groups
        value = np.round(rng.normal(0.3, 0.05, sensor.size), 2)
        yield ReadingBatch(sensor, np.full(sensor.size, T0 + ms, np.int64), value,
                           np.zeros(sensor.size, np.uint16))


def time_messages(suite: DetectorSuite, args: argparse.Namespace, start_s: int,
                  rng: np.random.Generator) -> None:
    """Median CPU time of a one-message batch, whole suite and per detector."""
    for per_message in args.message:
        count = 2_000
        total: list[float] = []
        member: dict[str, list[float]] = {type(d).__name__: [] for d in suite.members}
        for batch in messages(args.sensors, per_message, count, start_s, args.period, rng):
            now = int(batch.ts.max())
            begin = time.process_time()
            for d in suite.members:  # the suite's own loop, timed member by member
                start = time.process_time()
                d.update(batch, now)
                member[type(d).__name__].append(time.process_time() - start)
            total.append(time.process_time() - begin)
        start_s += count * args.period // max(args.sensors // per_message, 1) + args.period
        print(f"one message of {per_message} readings, {args.sensors} sensors: median "
              f"{statistics.median(total) * 1e6:.0f} µs a batch (" + ", ".join(
                  f"{name} {statistics.median(t) * 1e6:.0f}" for name, t in member.items())
              + " µs)")


def state_bytes(obj: object, seen: set[int] | None = None) -> int:
    """Bytes of the numpy arrays an object holds that own their data (views not counted
    twice), through its attributes, lists and tuples, and the objects they name."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes if obj.base is None else 0
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(x, seen) for x in obj)
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith("detectors."):
        return sum(state_bytes(v, seen) for v in vars(obj).values())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--period", type=int, default=1, help="seconds between a sensor's "
                        "readings (1: 1 Hz; the history's memory should not depend on it)")
    parser.add_argument("--message", type=lambda v: [int(x) for x in v.split(",")],
                        default=[], help="time one-message batches of these sizes instead")
    parser.add_argument("--memory", action="store_true",
                        help="trace the suite's allocations (tracemalloc; slows it a little)")
    args = parser.parse_args()
    mine = synthetic_mine(args.sensors)
    mine = dataclasses.replace(mine, sensors=tuple(
        dataclasses.replace(s, period_s=float(args.period)) for s in mine.sensors))
    registry = Registry.build([mine])
    base_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # interpreter, registry
    if args.memory:
        gc.collect()
        tracemalloc.start()
    suite = build_detectors(registry, DetectorConfig())
    rng = np.random.default_rng(1)
    fill = max(3600 // (args.rounds * args.period), 1)
    for batch in batches(args.sensors, args.rounds, fill, 0, rng, args.period):
        now = int(batch.ts.max())
        suite.update(batch, now)
        suite.tick(now)
    del batch  # the last hour's batch is the benchmark's, not the detectors'
    if args.memory:
        gc.collect()
        held_bytes, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()  # not while timing: it traces every allocation
    if args.message:
        time_messages(suite, args, fill * args.rounds * args.period, rng)
    else:
        time_batches(suite, args, fill * args.rounds * args.period, rng)
    history = suite.members[2].history  # type: ignore[attr-defined]
    held, size = int((history.ts > 0).sum()), history.ts.nbytes + history.value.nbytes
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"history held: {held:,} bins of {history.bin_ms / 1000:g} s ({args.sensors} sensors "
          f"× 1 h every {args.period} s), {size:,} bytes = {size / args.sensors:,.0f} bytes a "
          f"sensor; peak RSS {rss_mib:.0f} MiB ({base_mib:.0f} MiB before the detectors)")
    seen: set[int] = set()  # the interlocks hold the limit detector: counted once, there
    members = {type(d).__name__: state_bytes(d, seen) for d in suite.members}
    print(f"detector state: {sum(members.values()) / args.sensors:,.0f} bytes a sensor (" +
          ", ".join(f"{name} {b / args.sensors:,.0f}" for name, b in members.items()) + ")")
    if args.memory:
        print(f"traced (tracemalloc) after 1 h: suite holds {held_bytes / 2**20:,.1f} MiB = "
              f"{held_bytes / args.sensors:,.0f} bytes a sensor; peak while judging "
              f"{peak_bytes / 2**20:,.1f} MiB")


def time_batches(suite: DetectorSuite, args: argparse.Namespace, start_s: int,
                 rng: np.random.Generator) -> None:
    """Median CPU time of a whole-suite batch of ``--rounds`` patrol rounds."""
    seconds = []
    for batch in batches(args.sensors, args.rounds, args.batches, start_s, rng, args.period):
        now = int(batch.ts.max())
        start = time.process_time()
        suite.update(batch, now)
        suite.tick(now)
        seconds.append(time.process_time() - start)
    median = statistics.median(seconds)
    n = args.sensors * args.rounds
    print(f"all detectors, {args.sensors} sensors × {args.rounds} readings a batch: "
          f"median {median * 1000:.1f} ms a batch = {n / median / 1e6:.2f} M readings/s "
          f"(min {n / max(seconds) / 1e6:.2f}, max {n / min(seconds) / 1e6:.2f})")


if __name__ == "__main__":
    main()
