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
not change). Run: ``python -m bench.bench_detectors [--sensors 10000] [--rounds 100]
[--batches 15] [--period 1]``
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import time
from collections.abc import Iterator

import numpy as np

from bench.synthetic import synthetic_mine
from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch
from detectors.suite import build_detectors

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--period", type=int, default=1, help="seconds between a sensor's "
                        "readings (1: 1 Hz; the history's memory should not depend on it)")
    args = parser.parse_args()
    mine = synthetic_mine(args.sensors)
    mine = dataclasses.replace(mine, sensors=tuple(
        dataclasses.replace(s, period_s=float(args.period)) for s in mine.sensors))
    registry = Registry.build([mine])
    suite = build_detectors(registry, DetectorConfig())
    rng = np.random.default_rng(1)
    fill = max(3600 // (args.rounds * args.period), 1)
    for batch in batches(args.sensors, args.rounds, fill, 0, rng, args.period):
        now = int(batch.ts.max())
        suite.update(batch, now)
        suite.tick(now)
    seconds = []
    for batch in batches(args.sensors, args.rounds, args.batches,
                         fill * args.rounds * args.period, rng, args.period):
        now = int(batch.ts.max())
        start = time.process_time()
        suite.update(batch, now)
        suite.tick(now)
        seconds.append(time.process_time() - start)
    median = statistics.median(seconds)
    n = args.sensors * args.rounds
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"all detectors, {args.sensors} sensors × {args.rounds} readings a batch: "
          f"median {median * 1000:.1f} ms a batch = {n / median / 1e6:.2f} M readings/s "
          f"(min {n / max(seconds) / 1e6:.2f}, max {n / min(seconds) / 1e6:.2f})")
    history = suite.members[2].history  # type: ignore[attr-defined]
    held, size = int((history.ts > 0).sum()), history.ts.nbytes + history.value.nbytes
    print(f"history held: {held:,} bins of {history.bin_ms / 1000:g} s ({args.sensors} sensors "
          f"× 1 h every {args.period} s), {size:,} bytes = {size / args.sensors:,.0f} bytes a "
          f"sensor; peak RSS {rss_mib:.0f} MiB")


if __name__ == "__main__":
    main()
