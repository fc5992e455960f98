"""Cost of the networking worker on the pipeline's hot path: ``observe`` of a patrol round of N
sensors with no open YCBJ event and with K open events (their readings buffered for the
events' extremes), and the per-tick ``flush`` of those readings to events.db.
Run: python -m bench.bench_networking"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from alerts.record import AlertRecord
from alerts.wire import Alert
from bench.synthetic import synthetic_deployment
from config.loader import deployment_limits
from config.model import IngestConfig, NetworkingConfig
from config.readings import ReadingBatch
from networking.queue import UploadQueue
from networking.worker import NetworkingWorker

START_MS = 1_764_000_000_000


def _round(n: int, k: int) -> ReadingBatch:
    rng = np.random.default_rng(k)
    return ReadingBatch(np.arange(n, dtype=np.int32), np.full(n, START_MS + 1000 * k),
                        rng.normal(0.3, 0.05, n), np.zeros(n, np.uint16))


def _median_us(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1e6:.0f} µs"


def main(n: int = 2000, k_open: int = 100, rounds: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        deployment = synthetic_deployment(n, ingest=IngestConfig(state_dir=str(state)),
                                          networking=NetworkingConfig(enabled=True))
        record = AlertRecord(state / "alerts.db")
        worker = NetworkingWorker(deployment, deployment_limits(deployment).kinds,
                                  UploadQueue(state / "networking"), None, record, time.time)
        batches = [_round(n, k) for k in range(rounds)]
        quiet = []
        for batch in batches[:rounds // 2]:
            t0 = time.perf_counter()
            worker.observe(batch)
            quiet.append(time.perf_counter() - t0)
        mine = deployment.mines[0]
        record.append([Alert(id=f"e{i}", mine=mine.id, sensor=s.id, kind="ch4",
                             rule="limit_alarm", severity="critical", state="firing", value=1.2,
                             limit=1.0, started_at=START_MS, ts=START_MS, message="",
                             condition="alarm_high")
                       for i, s in enumerate(mine.sensors[:k_open])], "x", START_MS)
        worker.tick(START_MS / 1000 + rounds // 2)  # opens the K events
        busy, flush = [], []
        for k, batch in enumerate(batches[rounds // 2:]):
            t0 = time.perf_counter()
            worker.observe(batch)
            busy.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            worker.extremes.flush(START_MS + 1000 * (rounds // 2 + k))
            flush.append(time.perf_counter() - t0)
        print(f"observe, {n} readings, no open event: {_median_us(quiet)}")
        print(f"observe, {n} readings, {k_open} open events: {_median_us(busy)}")
        print(f"flush of 1 s of {k_open} watched sensors' readings (fsynced; past 5 min also"
              f" folding and dropping the settled second): {_median_us(flush)}")


if __name__ == "__main__":
    main()
