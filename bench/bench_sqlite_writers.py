"""Benchmark: several worker processes writing one SQLite store (jinmei.workers) — how.

Each of ``--writers`` processes stores ``--batches`` batches of ``--rows`` readings of its own
mine through :class:`ingest.sqlite.SQLiteSink` (WAL, ``synchronous=FULL``) into one file, as
the workers of ``[ingest] workers`` do. Compared, interleaved ``--repeat`` times:

- ``busy``: SQLite's own locking — a writer that finds the WAL write lock taken sleeps in
  SQLite's busy handler (1, 2, 5, 10 … 100 ms steps) and tries again;
- ``files``: one file per writer (no contention: the ceiling).

Prints rows/s for each (median). A third strategy, an exclusive ``flock`` around each
transaction (the kernel hands it to the waiting writer at once, where SQLite's handler polls),
measured the same as ``busy`` here (2 writers: 121 k vs 131 k rows/s, load average 8) and was
left out. Run: ``python -m bench.bench_sqlite_writers``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.synchronize import Barrier as BarrierType
from pathlib import Path

import numpy as np

from bench.synthetic import synthetic_deployment
from config.readings import ReadingBatch
from ingest.sqlite import SQLiteSink


def write(path: str, index: int, writers: int, batches: int, rows: int,
          start: BarrierType) -> None:
    deployment = synthetic_deployment(rows, n_mines=writers) if writers > 1 else \
        synthetic_deployment(rows)
    registry = deployment.registry
    mine = [i for i, s in enumerate(registry.sensors) if s.mine == deployment.mines[index].id]
    sensor = np.array(mine, dtype=np.int32)
    sink = SQLiteSink(path, registry)
    start.wait()
    for b in range(batches):
        sink.write(ReadingBatch(sensor, np.full(len(sensor), 1_700_000_000_000 + b * 1000,
                                                dtype=np.int64),
                                np.full(len(sensor), 0.3), np.zeros(len(sensor), np.uint16)))
    sink.close()


def run(strategy: str, args: argparse.Namespace) -> float:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(args.writers + 1)
    with tempfile.TemporaryDirectory() as tmp:
        procs = [spawn.Process(target=write, args=(
            str(Path(tmp) / (f"readings-{k}.db" if strategy == "files" else "readings.db")),
            k, args.writers, args.batches, args.rows * args.writers, start))
            for k in range(args.writers)]
        for p in procs:
            p.start()
        start.wait()
        t0 = time.perf_counter()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
    total = args.writers * args.batches * args.rows
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5_000, help="readings a batch")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"busy": [], "files": []}
    for _ in range(args.repeat):
        for strategy in rates:
            rates[strategy].append(run(strategy, args))
    for strategy, values in rates.items():
        print(f"{strategy:>5}: {args.writers} writers, median {statistics.median(values):,.0f} "
              f"rows/s ({', '.join(f'{v / 1000:,.0f} k' for v in values)})")
    with open("/proc/loadavg", encoding="ascii") as f:
        print(f"load average: {' '.join(f.read().split()[:3])}")


if __name__ == "__main__":
    main()
