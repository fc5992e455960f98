"""Benchmark: the in-process pipeline on one core — decode → validate → detect → serialize.

Target (design.md): ≥ 1,000,000 readings/s with 100-reading payloads. One step is what the
ingest worker does per batch of 1,000 MQTT messages, minus the I/O: the codec's
``decode_many`` (msgspec decode, validation, registry lookup), the ``update`` of every detector
``build_detectors`` makes (limits, sensor faults, trend, drift, no data, interlocks) and the
status bits, and the InfluxDB line protocol for the whole batch. Each batch is timed on its
own, in CPU time of this process (the box is shared: other processes' load must not count, as
in ``bench_codec.py``); the median is reported, with each stage's share.

Run from the repository root: ``python -m bench.bench_pipeline [--sensors 10000] [--batches 20]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.synthetic import payloads, synthetic_mine
from config.model import Registry
from detectors.suite import build_detectors
from ingest.codec import TelemetryCodec
from ingest.lineprotocol import reading_lines

MESSAGES_PER_BATCH = 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    mine = synthetic_mine(args.sensors)
    registry = Registry.build([mine])
    start_ms = int(time.time() * 1000) - 3_600_000
    rounds = -(-args.batches * MESSAGES_PER_BATCH * 100 // args.sensors)
    messages = payloads(mine, rounds, start_ms)
    codec = TelemetryCodec(registry)
    detector = build_detectors(registry)
    now_ms = int(time.time() * 1000)

    totals, shares = [], {"decode": [], "detect": [], "serialize": []}
    readings = 0
    for b in range(args.batches):
        chunk = messages[b * MESSAGES_PER_BATCH:(b + 1) * MESSAGES_PER_BATCH]
        t0 = time.process_time()
        decoded = codec.decode_many(chunk, now_ms)
        t1 = time.process_time()
        detection = detector.update(decoded.batch, now_ms)
        batch = decoded.batch.with_status(decoded.batch.status | detection.status_bits)
        t2 = time.process_time()
        lines = reading_lines(batch, registry)
        t3 = time.process_time()
        assert not decoded.rejects and lines
        readings = len(batch)
        totals.append(readings / (t3 - t0))
        for name, dt in zip(shares, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            shares[name].append(dt / (t3 - t0))
    print(f"pipeline, {args.sensors} sensors, {readings} readings per batch, "
          f"{args.batches} batches: median {statistics.median(totals) / 1e6:.2f} M readings/s "
          f"(min {min(totals) / 1e6:.2f}, max {max(totals) / 1e6:.2f})")
    print("  share of time: " + ", ".join(
        f"{name} {statistics.median(v) * 100:.0f} %" for name, v in shares.items()))


if __name__ == "__main__":
    main()
