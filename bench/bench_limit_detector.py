"""Benchmark: LimitDetector throughput on 10,000 sensors × 100 readings per batch.

Target (design.md): ≥ 10 M readings/s on one core. Two workloads, each a run of batches fed
one after another to one detector, every batch timed on its own; the median is reported:

- ``normal``: a mixed registry (methane at every location type, CO, O2, temperature, air
  velocity) reporting values inside their limits, with 1 % of the sensors crossing their alarm
  or power-off limit and coming back during the batch, and 0.1 % of readings calibrating;
- ``all-firing``: every sensor beyond its limit for the whole batch (state held, no events):
  the worst case, where no sensor can skip the sort and forward fill.

Run: ``python bench/bench_limit_detector.py [--sensors 10000] [--per-sensor 100] [--batches 15]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from config.model import Limits, Registry, Sensor
from config.readings import ReadingBatch, Status
from detectors.limits import LimitDetector

# (kind, location, limits, typical value, crossing value) — rows of config/limits.toml.
PROFILES = [
    ("ch4", "longwall_face", Limits(alarm_high=1.0, power_off=1.5, restore=1.0), 0.3, 1.7),
    ("ch4", "longwall_return", Limits(alarm_high=1.0, power_off=1.0, restore=1.0), 0.4, 1.2),
    ("ch4", "heading_face", Limits(alarm_high=1.0, power_off=1.5, restore=1.0), 0.2, 1.7),
    ("ch4", "main_return", Limits(alarm_high=0.75), 0.3, 0.9),
    ("co", "belt_roadway", Limits(alarm_high=24.0), 5.0, 30.0),
    ("o2", "face_intake", Limits(alarm_low=20.0, inclusive=False), 20.9, 19.0),
    ("temperature", "longwall_face",
     Limits(warning_high=26.0, alarm_high=30.0, inclusive=False), 24.0, 33.0),
    ("wind_speed", "longwall_face",
     Limits(alarm_low=0.25, alarm_high=4.0, inclusive=False), 2.0, 0.1),
]


def registry(n_sensors: int) -> tuple[Registry, np.ndarray, np.ndarray]:
    """A mixed registry, with each sensor's typical and crossing value."""
    rows = [PROFILES[i % len(PROFILES)] for i in range(n_sensors)]
    sensors = [Sensor("dayan", f"S{i:05d}", kind, "", location, "", "a", "S1", 10.0, 0.0, 100.0,
                      limits) for i, (kind, location, limits, _, _) in enumerate(rows)]
    return (Registry.from_sensors(sensors), np.array([r[3] for r in rows]),
            np.array([r[4] for r in rows]))


def batches(n_sensors: int, per_sensor: int, count: int, workload: str,
            seed: int = 7) -> tuple[Registry, list[ReadingBatch]]:
    reg, typical, crossing = registry(n_sensors)
    rng = np.random.default_rng(seed)
    # One patrol round after another: every sensor once per round, in substation order.
    sensor = np.tile(np.arange(n_sensors, dtype=np.int32), per_sensor)
    rounds = np.repeat(np.arange(per_sensor), n_sensors)
    out = []
    for b in range(count):
        ts = (b * per_sensor + rounds).astype(np.int64) * 1000
        base = typical if workload == "normal" else crossing
        value = base[sensor] * rng.normal(1.0, 0.01, len(sensor))
        status = np.zeros(len(sensor), np.uint16)
        if workload == "normal":
            crossers = rng.random(n_sensors) < 0.01
            middle = (rounds >= per_sensor // 3) & (rounds < 2 * per_sensor // 3)
            value = np.where(crossers[sensor] & middle, crossing[sensor], value)
            status[rng.random(len(sensor)) < 0.001] = Status.CALIBRATION
        out.append(ReadingBatch(sensor, ts, value, status))
    return reg, out


def run(n_sensors: int, per_sensor: int, count: int, workload: str) -> dict[str, float]:
    reg, feed = batches(n_sensors, per_sensor, count, workload)
    detector = LimitDetector(reg)
    detector.update(feed[0], now=0)  # warm-up: first batch sets the states
    seconds, events = [], 0
    for batch in feed[1:]:
        start = time.perf_counter()
        found = detector.update(batch, now=int(batch.ts[-1]))
        seconds.append(time.perf_counter() - start)
        events += len(found.events)
    median = statistics.median(seconds)
    return {"readings_per_batch": len(feed[0]), "median_ms": median * 1e3,
            "median_readings_per_s": len(feed[0]) / median,
            "worst_ms": max(seconds) * 1e3, "events_per_batch": events / len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--per-sensor", type=int, default=100)
    parser.add_argument("--batches", type=int, default=15)
    args = parser.parse_args()
    for workload in ("normal", "all-firing"):
        r = run(args.sensors, args.per_sensor, args.batches, workload)
        print(f"{workload:>10}: {r['readings_per_batch']:,} readings/batch, "
              f"median {r['median_ms']:.1f} ms = {r['median_readings_per_s'] / 1e6:.1f} M "
              f"readings/s (worst {r['worst_ms']:.1f} ms, "
              f"{r['events_per_batch']:.0f} events/batch)")


if __name__ == "__main__":
    main()
