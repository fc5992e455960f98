"""Benchmark: line protocol built in bulk by ``ingest.lineprotocol.reading_lines``.

Target (design.md): the store's serialization must not hold the in-process pipeline below
1,000,000 readings/s on one core. Prints lines/s as the median of repeated runs, for large
batches (a busy ingest window) and 100-reading batches (one typical payload), and, for scale,
influxdb-client's ``Point`` on a small sample.

    /tmp/venv/bin/python bench/bench_lineprotocol.py [--runs 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from influxdb_client import Point, WritePrecision

from config.model import Limits, Registry, Sensor
from config.readings import ReadingBatch
from ingest.lineprotocol import reading_lines


def bench_registry(n_sensors: int) -> Registry:
    return Registry.from_sensors([
        Sensor(mine=("dayan", "qipanjing")[i % 2], id=f"T{i % 3}-{1100 + i}", kind="ch4",
               unit="%", location="longwall_face", place="1101综采工作面", area="1101",
               substation=f"S{i // 64:02d}", period_s=1.0, range_low=0.0, range_high=4.0,
               limits=Limits(alarm_high=1.0, power_off=1.5, restore=1.0))
        for i in range(n_sensors)])


def bench_batch(n: int, n_sensors: int, seed: int = 1) -> ReadingBatch:
    rng = np.random.default_rng(seed)
    return ReadingBatch(rng.integers(0, n_sensors, n).astype(np.int32),
                        1_795_614_332_500 + np.arange(n, dtype=np.int64) * 10,
                        np.round(rng.random(n) * 2, 2), rng.integers(0, 9, n).astype(np.uint16))


def median_rate(work: Callable[[], object], lines: int, runs: int) -> float:
    """Lines per second: ``lines`` divided by the median wall time of ``runs`` calls."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return lines / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    registry = bench_registry(1_000)
    reading_lines(bench_batch(1, 1_000), registry)  # warm the per-registry prefix cache

    big = bench_batch(100_000, 1_000)
    rate = median_rate(lambda: reading_lines(big, registry), len(big), args.runs)
    size = len(reading_lines(big, registry)) / len(big)
    print(f"reading_lines, 100,000-reading batches: {rate:,.0f} lines/s "
          f"(median of {args.runs}; {size:.0f} bytes/line)")

    payloads = [bench_batch(100, 1_000, seed) for seed in range(1_000)]
    rate = median_rate(lambda: [reading_lines(b, registry) for b in payloads], 100_000,
                       args.runs)
    print(f"reading_lines, 100-reading batches:     {rate:,.0f} lines/s (median of {args.runs})")

    sample = bench_batch(10_000, 1_000)
    sensors = registry.sensors

    def with_points() -> str:
        return "\n".join(
            Point("reading").tag("mine", sensors[i].mine).tag("sensor", sensors[i].id)
            .tag("kind", sensors[i].kind).tag("location", sensors[i].location)
            .field("value", v).field("status", s).time(t, WritePrecision.MS).to_line_protocol()
            for i, v, s, t in zip(sample.sensor.tolist(), sample.value.tolist(),
                                  sample.status.tolist(), sample.ts.tolist(), strict=True))

    rate = median_rate(with_points, len(sample), max(3, args.runs // 5))
    print(f"influxdb-client Point, for comparison:  {rate:,.0f} lines/s")


if __name__ == "__main__":
    main()
