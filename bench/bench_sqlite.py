"""Benchmark: SQLiteSink.write alone — rows/s, bytes per reading, and how much of the write
holds the interpreter lock.

10,000 sensors, one 10,000-reading batch a second of data (one commit each, ``synchronous=FULL``
as in service), into a file that already holds ``--prefill`` readings (a sink's speed on an
empty file flatters it). Figures: rows/s in wall time and in this process's CPU time (the box
is shared), file bytes per stored reading, and the GIL share: a pure-Python thread counts
while the writes run; the share of its solo rate it keeps is the share of the write spent
outside the interpreter lock (SQLite's own work; binding each row's parameters holds it).

Run from the repository root: ``python -m bench.bench_sqlite [--batches 50] [--prefill 1000000]``
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.synthetic import synthetic_mine
from config.model import Registry
from config.readings import ReadingBatch
from ingest.sqlite import SQLiteSink


def batches(sensors: int, count: int, start_ms: int) -> list[ReadingBatch]:
    """``count`` rounds: every sensor once a round, one round a second."""
    rng = np.random.default_rng(0)
    sensor = np.arange(sensors, dtype=np.int32)
    return [ReadingBatch(sensor, np.full(sensors, start_ms + 1000 * k, dtype=np.int64),
                         np.round(rng.normal(0.3, 0.05, sensors), 2),
                         np.zeros(sensors, dtype=np.uint16)) for k in range(count)]


def count_for(stop: threading.Event, out: list[int]) -> None:
    n = 0
    while not stop.is_set():
        n += 1
    out.append(n)


def counting_rate(seconds: float) -> float:
    """Iterations/s of the counting thread with nothing else running."""
    stop, out = threading.Event(), []  # type: ignore[var-annotated]
    thread = threading.Thread(target=count_for, args=(stop, out))
    thread.start()
    time.sleep(seconds)
    stop.set()
    thread.join()
    return out[0] / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--prefill", type=int, default=1_000_000)
    args = parser.parse_args()

    registry = Registry.build([synthetic_mine(args.sensors)])
    pre = -(-args.prefill // args.sensors)
    data = batches(args.sensors, pre + 2 * args.batches, 1_795_000_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        sink = SQLiteSink(Path(tmp) / "bench.db", registry)
        for batch in data[:pre]:
            sink.write(batch)
        timed, threaded = data[pre:pre + args.batches], data[pre + args.batches:]
        wall, cpu = time.perf_counter(), time.process_time()
        for batch in timed:
            sink.write(batch)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = sum(len(b) for b in timed)

        solo = counting_rate(1.0)
        stop, out = threading.Event(), []  # type: ignore[var-annotated]
        counter = threading.Thread(target=count_for, args=(stop, out))
        counter.start()
        t0 = time.perf_counter()
        for batch in threaded:
            sink.write(batch)
        took = time.perf_counter() - t0
        stop.set()
        counter.join()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
        stored = sum(sink.count_readings().values())
        sink.close()
    print(f"SQLiteSink.write, {args.sensors:,} sensors, {len(timed[0]):,}-reading commits "
          f"after {pre * args.sensors:,} stored: {rows / wall:,.0f} rows/s wall, "
          f"{rows / cpu:,.0f} rows/s CPU; {size / stored:.1f} bytes a reading on disk")
    print(f"GIL: a counting thread kept {out[0] / took / solo:.0%} of its solo rate during "
          f"writes (writes themselves {sum(len(b) for b in threaded) / took:,.0f} rows/s)")


if __name__ == "__main__":
    main()
