"""Cost of AlertDispatcher.apply on the hot path: a batch with no events (the common case, run
per MQTT batch and per clock tick) with N open episodes, and a storm of N firing events routed to
a webhook receiver (record → group → outbox). Run: python -m bench.bench_alerts"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from config.loader import load_deployment
from config.model import AlertsConfig, Receiver, Route
from detectors.base import Event


def main(n_open: int = 100, repeats: int = 2000) -> None:
    registry = load_deployment(None).registry
    config = AlertsConfig(receivers=(Receiver("desk", "webhook", (("url", "http://x/"),)),),
                          routes=(Route(receivers=("desk",)),))
    with tempfile.TemporaryDirectory() as tmp:
        d = AlertDispatcher(registry, Names(), AlertRecord(Path(tmp) / "alerts.db"),
                            config_hash="x", publish=lambda t, p: None, config=config)
        d.restore()
        storm = [Event(i, "limit_alarm", "alarm_high", "alarm", True, 1_000, 1.2, 1.0)
                 for i in range(min(n_open, len(registry)))]
        t0 = time.perf_counter()
        d.apply(storm, 1_000)
        storm_ms = (time.perf_counter() - t0) * 1000
        samples = []
        for k in range(repeats):
            t0 = time.perf_counter()
            d.apply([], 2_000 + k)
            samples.append((time.perf_counter() - t0) * 1e6)
        print(f"storm of {len(storm)} firing events: {storm_ms:.1f} ms (record + group + log)")
        print(f"apply([]) with {len(storm)} open episodes: median {statistics.median(samples):.0f}"
              f" µs, p99 {sorted(samples)[int(0.99 * len(samples))]:.0f} µs")


if __name__ == "__main__":
    main()
