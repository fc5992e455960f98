"""Feed generation throughput of the simulator (brief target: ≥ 1 M readings/s, one core).

Builds a mine of ``--sensors`` sensors (default 10,000: 100 substations of 100 sensors, the
kinds of a longwall district, patrol periods 1 s for gases and 5 s for the rest), generates
``--duration`` feed seconds of the ``--scenario`` (default ``methane-rise``) and writes every
payload as a line to a temporary file — model, JSON encoding and the write, all included.
Repeats ``--runs`` times and prints each run and the median readings/s.
Run: ``python bench/bench_simulator.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from config.model import Limits, Mine, Sensor, Substation
from simulators.feed import generate

START_MS = 1_795_614_330_000
PER_SUBSTATION = 100
# (kind, location, period_s, range, limits): one substation's pattern, repeated.
_PATTERN = (
    ("ch4", "longwall_face", 1.0, (0.0, 4.0), Limits(alarm_high=1.0, power_off=1.5, restore=1.0)),
    ("ch4", "longwall_upper_corner", 1.0, (0.0, 4.0),
     Limits(alarm_high=1.0, power_off=1.5, restore=1.0)),
    ("ch4", "longwall_return", 1.0, (0.0, 4.0), Limits(alarm_high=1.0, power_off=1.0, restore=1.0)),
    ("co", "goaf", 1.0, (0.0, 500.0), Limits(alarm_high=24.0)),
    ("o2", "face_intake", 5.0, (0.0, 25.0), Limits(alarm_low=20.0, inclusive=False)),
    ("temperature", "longwall_face", 5.0, (0.0, 40.0),
     Limits(warning_high=26.0, alarm_high=30.0, inclusive=False)),
    ("wind_speed", "longwall_face", 5.0, (0.0, 15.0),
     Limits(alarm_low=0.25, alarm_high=4.0, inclusive=False)),
    ("local_fan", "heading_fan", 5.0, (0.0, 1.0), Limits()),
)


def mine(sensors: int) -> Mine:
    substations = tuple(Substation(f"S{k:03d}", f"分站 {k}")
                        for k in range(-(-sensors // PER_SUBSTATION)))
    return Mine("dayan", "大雁", "Dayan", "Asia/Shanghai", substations, tuple(
        Sensor("dayan", f"P{i:05d}", kind, "", location, f"point {i}", f"A{i // 40:03d}",
               substations[i // PER_SUBSTATION].id, period, low, high, limits)
        for i, (kind, location, period, (low, high), limits)
        in ((i, _PATTERN[i % len(_PATTERN)]) for i in range(sensors))))


def run(feed_mine: Mine, scenario: str, duration_s: float, out: Path) -> tuple[int, float]:
    """(readings written, seconds) of one whole generate-and-write pass."""
    began = time.perf_counter()
    readings = 0
    with out.open("wb") as f:
        for message in generate(feed_mine, scenario, start_ms=START_MS, duration_s=duration_s):
            f.write(message.payload + b"\n")
            readings += message.readings
    return readings, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="feed seconds per run")
    parser.add_argument("--scenario", default="methane-rise")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    feed_mine = mine(args.sensors)
    rates = []
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "feed.jsonl"
        for k in range(args.runs):
            readings, seconds = run(feed_mine, args.scenario, args.duration, out)
            rates.append(readings / seconds)
            print(f"run {k + 1}: {readings:,} readings in {seconds:.3f} s = "
                  f"{rates[-1]:,.0f} readings/s ({out.stat().st_size / 1e6:.1f} MB)")
    print(f"median: {statistics.median(rates):,.0f} readings/s "
          f"({args.sensors:,} sensors, {args.duration:g} feed s, {args.scenario})")


if __name__ == "__main__":
    main()
