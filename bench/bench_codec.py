"""Decode throughput of the telemetry codec (design.md target: ≥ 3 M readings/s, one core).

Decodes 100-reading v1 payloads (realistic sensor ids, message ts only, a few calibrating)
through ``TelemetryCodec.decode_many`` in batches of ``--batch`` messages, repeats the whole
run ``--runs`` times and prints the median readings/s. Run: ``python bench/bench_codec.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from config.model import Limits, Registry, Sensor
from ingest.codec import TelemetryCodec, encode_telemetry

NOW_MS = 1_795_614_332_500
READINGS_PER_MESSAGE = 100


def registry(sensors: int) -> Registry:
    return Registry.from_sensors([
        Sensor("dayan", f"T1-{i:04d}", "ch4", "%", "longwall_face", f"face {i}", "1101", "S1",
               15.0, 0.0, 4.0, Limits(alarm_high=1.0, power_off=1.5))
        for i in range(sensors)])


def messages(count: int, sensors: int, seed: int = 1) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(count):
        ids = rng.integers(0, sensors, READINGS_PER_MESSAGE)
        values = rng.uniform(0.0, 1.2, READINGS_PER_MESSAGE).round(2)
        readings = [(f"T1-{i:04d}", float(v), "calibrating" if i % 97 == 0 else "ok")
                    for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
        out.append(("jinmei/dayan/telemetry/S1", encode_telemetry(NOW_MS - m * 1000, readings)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000, help="messages per decode_many")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--sensors", type=int, default=2_000)
    args = parser.parse_args()
    codec = TelemetryCodec(registry(args.sensors))
    feed = messages(args.messages, args.sensors)
    chunks = [feed[i:i + args.batch] for i in range(0, len(feed), args.batch)]
    rates = []
    for _ in range(args.runs):
        accepted = 0
        start = time.process_time()  # CPU time of this process: the box is shared
        for chunk in chunks:
            decoded = codec.decode_many(chunk, NOW_MS)
            accepted += len(decoded.batch)
        elapsed = time.process_time() - start
        assert accepted == args.messages * READINGS_PER_MESSAGE, "bench feed must be all valid"
        rates.append(accepted / elapsed)
    print(f"decode_many, {READINGS_PER_MESSAGE}-reading payloads, {args.batch} messages per call, "
          f"{args.runs} runs: median {statistics.median(rates) / 1e6:.2f} M readings/s "
          f"(min {min(rates) / 1e6:.2f}, max {max(rates) / 1e6:.2f})")


if __name__ == "__main__":
    main()
