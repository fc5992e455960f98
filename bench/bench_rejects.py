"""Reject cost: one message naming N unknown sensors (design.md: 30,000 in one 1 MiB message
in well under a second; issue 11 measured 0.8 s for 1,000 and 120 s for 10,000 before).

Times what the ingest worker does with such a message: ``decode_many`` (every reading refused
as ``unknown_sensor``) and ``reject_messages`` (the one summary published for it), in CPU time
of this process (the box is shared), median of ``--runs``. Run:
``python -m bench.bench_rejects [--sizes 1000 10000 30000] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.fuzz_codec import NOW_MS, registry
from ingest.codec import Reason, TelemetryCodec, encode_telemetry, reject_messages

TOPIC = "jinmei/dayan/telemetry/S1"


def unknown_sensors(count: int) -> bytes:
    """A v1 payload of ``count`` readings of sensors no mine has (30,000 fill ~1 MiB)."""
    return encode_telemetry(NOW_MS, [(f"X{i:05d}", 0.5 + i % 5, "ok")
                                     for i in range(count)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 30_000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    codec = TelemetryCodec(registry())
    for size in args.sizes:
        body = unknown_sensors(size)
        times = []
        for _ in range(args.runs):
            start = time.process_time()
            decoded = codec.decode_many([(TOPIC, body)], NOW_MS)
            published = reject_messages(decoded.rejects, NOW_MS)
            times.append(time.process_time() - start)
            assert len(decoded.rejects) == size and len(published) == 1
            assert {r.reason for r in decoded.rejects} == {Reason.UNKNOWN_SENSOR}
        print(f"{size:>7,} unknown sensors, {len(body) / 1024:,.0f} KiB: median "
              f"{statistics.median(times) * 1000:,.0f} ms (min {min(times) * 1000:,.0f}, "
              f"max {max(times) * 1000:,.0f}; one reject message of {len(published[0][1]):,} B)")


if __name__ == "__main__":
    main()
