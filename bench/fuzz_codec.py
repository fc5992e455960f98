"""Fuzz benchmark: hostile (topic, payload) pairs through the telemetry codec, counting escapes.

An *escape* is any exception out of ``TelemetryCodec.decode_many`` or out of
``reject_messages`` (what the ingest worker calls on every decode), or an accepted value that
is not finite. The target is 0: one escape is a message that can stop ingest (issue 11).

The inputs come from a seeded generator (so a run can be repeated exactly, and an escape found
is reproduced by its seed and number), each one of:

- a **mutation of a valid payload** — bytes flipped, inserted, deleted, duplicated or cut;
- a **structural variant** — a valid message with one value replaced by a hostile token written
  as raw JSON text: arrays or objects nested up to 5,000 deep (under a skipped key, in a
  reading, as a value), integers of 20 to 5,000 digits, ``1e999``, ``NaN``, unpaired surrogate
  escapes, control characters, odd timestamps (year 0/9999, offsets ±23:59, epoch seconds);
- a **random JSON document** or random bytes.

Topics are mostly the contract's (known mine, with or without a substation), some hostile
(unknown mine, wrong shape, lone surrogates). Messages go through ``decode_many`` in calls of
``--batch`` (as the ingest worker does); a call that raises is replayed message by message to
name the culprit. With ``--engine atheris`` the same harness runs under atheris (coverage-guided
libFuzzer, ``pip install atheris``) for ``--inputs`` runs, seeded with valid payloads (its memory
grows with the run: use pieces of 500,000 with different seeds).

Run: ``python -m bench.fuzz_codec [--inputs 1000000] [--seed 11] [--engine seeded|atheris]``.
Prints inputs/s and the escape count; exits 1 on any escape, printing the first few inputs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence

import msgspec
import numpy as np

from config.model import Limits, Registry, Sensor
from ingest.codec import TelemetryCodec, reject_messages

NOW_MS = 1_795_614_332_500
MINE = "dayan"
SENSOR_IDS = [f"T1-{i:04d}" for i in range(40)] + ["CO-1102", "F-1103", "O2-1104"]
TOPICS = [f"jinmei/{MINE}/telemetry", f"jinmei/{MINE}/telemetry/S1", "jinmei/qipanjing/telemetry"]
HOSTILE_TOPICS = ["jinmei/nowhere/telemetry", "jinmei//telemetry", "jinmei/dayan/alerts",
                  "", "/", "jinmei/\ud800/telemetry", "jinmei/dayan/telemetry/S1/x",
                  "jinmei/dayan/telemetry/", "x" * 300]
CALL_MESSAGES = 32


def registry() -> Registry:
    """Two mines: dayan with the ids above, qipanjing with one sensor."""
    return Registry.from_sensors(
        [Sensor(MINE, sid, "ch4", "%", "longwall_face", "face", "1101", "S1", 15.0, 0.0, 4.0,
                Limits(alarm_high=1.0)) for sid in SENSOR_IDS]
        + [Sensor("qipanjing", "T0-2101", "ch4", "%", "longwall_face", "face", "2101", "S1",
                  15.0, 0.0, 4.0, Limits(alarm_high=1.0))])


def _deep(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    inner = "1" if opener == "[" else ""
    if opener == "{":
        return '{"a":' * depth + "1" + closer * depth
    return opener * depth + inner + closer * depth


# Raw JSON text a sender could put anywhere a value goes (json.dumps cannot write most of these).
def _hostile_tokens() -> list[str]:
    tokens = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "1e-400", "-0", "0.0",
              "1.7976931348623157e308", "9" * 20, "-" + "9" * 20, "9" * 400, "9" * 4300,
              "9" * 5000, "1" + "0" * 4299 + ".5", '"\\ud800"', '"\\udfff\\ud800"',
              '"\\u0000"', '"\x7f\\n"', '"\xe2\x80\xae"', "true", "false", "null", '""',
              "[]", "{}", '"ok"', '"calibrating"', '"fault"', '"OK"', "12345678901234567890123",
              str(NOW_MS), str(NOW_MS // 1000), str(-NOW_MS), str(2**63), str(2**64), str(-2**63),
              '"2026-11-25T13:45:32Z"', '"2026-11-25T21:45:32+08:00"', '"2026-11-25T13:45:32"',
              '"0000-01-01T00:00:00Z"', '"0001-01-01T00:00:00+23:59"',
              '"9999-12-31T23:59:59-23:59"', '"99999-01-01T00:00:00Z"', '"2026-02-30T00:00:00Z"',
              '"2026-11-25T24:00:00Z"', '"2026-11-25T13:45:32.9999999999Z"', '"x"',
              '"' + "é" * 200 + '"']
    for depth in (10, 63, 64, 65, 100, 500, 999, 1000, 1001, 3000, 5000):
        tokens += [_deep(depth, "["), _deep(depth, "{")]
    return tokens


TOKENS = _hostile_tokens()
HOLE = "\x01HOLE\x01"  # placeholder replaced in the encoded text by a raw token


class Generator:
    """Seeded inputs: the i-th input of a seed is always the same."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def topic(self) -> str:
        r = self.rng
        return r.choice(TOPICS) if r.random() < 0.9 else r.choice(HOSTILE_TOPICS)

    def valid_doc(self) -> dict[str, object]:
        r = self.rng
        readings: list[dict[str, object]] = []
        for _ in range(r.choice((1, 2, 3, 5, 10, 30))):
            reading: dict[str, object] = {
                "sensor": r.choice(SENSOR_IDS) if r.random() < 0.9 else f"X-{r.randrange(99)}",
                "value": round(r.uniform(-1, 5), 2)}
            if r.random() < 0.2:
                reading["status"] = r.choice(("ok", "calibrating", "fault"))
            if r.random() < 0.2:
                reading["ts"] = NOW_MS - r.randrange(10**6)
            readings.append(reading)
        ts: object = NOW_MS - r.randrange(10**7)
        if r.random() < 0.2:
            ts = "2026-11-25T13:45:32.5Z"
        return {"ts": ts, "readings": readings}

    def mutated(self) -> bytes:
        r = self.rng
        data = bytearray(msgspec.json.encode(self.valid_doc()))
        for _ in range(r.choice((1, 1, 2, 3, 8))):
            at = r.randrange(len(data) + 1)
            action = r.randrange(6)
            if action == 0 and data:
                data[min(at, len(data) - 1)] = r.randrange(256)
            elif action == 1:
                data[at:at] = bytes(r.randrange(256) for _ in range(r.randrange(1, 4)))
            elif action == 2:
                del data[at:at + r.randrange(1, 16)]
            elif action == 3:
                end = min(len(data), at + r.randrange(1, 64))
                data[at:at] = data[at:end] * r.randrange(1, 4)
            elif action == 4:
                data[at:at] = r.choice(TOKENS).encode("utf-8", "surrogatepass")
            else:
                del data[at:]
        return bytes(data)

    def structural(self) -> bytes:
        """A valid message with one place holding a hostile raw token."""
        r = self.rng
        doc = self.valid_doc()
        readings = doc["readings"]
        assert isinstance(readings, list)
        reading = r.choice(readings)
        place = r.randrange(8)
        if place == 0:
            doc["ts"] = HOLE
        elif place == 1:
            doc[r.choice(("extra", "ts_note", "readings2"))] = HOLE
        elif place == 2:
            reading["value"] = HOLE
        elif place == 3:
            reading["ts"] = HOLE
        elif place == 4:
            reading["status"] = HOLE
        elif place == 5:
            reading["sensor"] = HOLE
        elif place == 6:
            reading[r.choice(("unit", "note", "x"))] = HOLE
        else:
            readings.insert(r.randrange(len(readings) + 1), HOLE)  # type: ignore[arg-type]
        text = msgspec.json.encode(doc).decode()
        return text.replace(f'"{HOLE}"', r.choice(TOKENS), 1).encode("utf-8", "surrogatepass")

    def random_json(self, depth: int = 0) -> object:
        r = self.rng
        kind = r.randrange(8 if depth < 4 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return r.random() < 0.5
        if kind == 2:
            return r.choice((r.randrange(-10**20, 10**20), r.uniform(-1e308, 1e308)))
        if kind == 3:
            return "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(8)))
        if kind == 4:
            return r.choice(("sensor", "value", "ts", "readings", "status"))
        if kind == 5:
            return [self.random_json(depth + 1) for _ in range(r.randrange(4))]
        keys = ("ts", "readings", "sensor", "value", "status", "x")
        return {r.choice(keys): self.random_json(depth + 1) for _ in range(r.randrange(4))}

    def payload(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.45:
            return self.mutated()
        if roll < 0.85:
            return self.structural()
        if roll < 0.95:
            return msgspec.json.encode(self.random_json())
        return bytes(r.randrange(256) for _ in range(r.randrange(64)))


class Harness:
    """Runs messages through the codec the way the ingest worker does; records escapes."""

    def __init__(self) -> None:
        self.codec = TelemetryCodec(registry())
        self.inputs = 0
        self.escapes: Counter[str] = Counter()
        self.examples: list[tuple[str, bytes, str]] = []

    def _once(self, messages: Sequence[tuple[str, bytes]]) -> None:
        decoded = self.codec.decode_many(messages, NOW_MS)
        reject_messages(decoded.rejects, NOW_MS)
        if not np.isfinite(decoded.batch.value).all():
            raise AssertionError("an accepted value is not finite")

    def run(self, messages: Sequence[tuple[str, bytes]]) -> None:
        self.inputs += len(messages)
        try:
            self._once(messages)
        except Exception:  # any exception is what we count
            for message in messages:
                try:
                    self._once([message])
                except Exception as e:
                    kind = f"{type(e).__name__}: {str(e)[:70]}"
                    self.escapes[kind] += 1
                    if len(self.examples) < 5:
                        self.examples.append((message[0], message[1], kind))

    def report(self, elapsed: float) -> int:
        total = self.escapes.total()
        print(f"{self.inputs:,} inputs in {elapsed:.1f} s: {self.inputs / elapsed:,.0f} inputs/s; "
              f"escapes: {total}")
        for kind, n in self.escapes.most_common():
            print(f"  {n:>6}  {kind}")
        for topic, payload, kind in self.examples:
            cut = "…" if len(payload) > 200 else ""
            print(f"  e.g. {kind} on {topic!r}: {payload[:200]!r}{cut}")
        return 1 if total else 0


def seeded(harness: Harness, inputs: int, seed: int, batch: int) -> None:
    gen = Generator(seed)
    done = 0
    while done < inputs:
        count = min(batch, inputs - done)
        harness.run([(gen.topic(), gen.payload()) for _ in range(count)])
        done += count


def under_atheris(harness: Harness, inputs: int, seed: int) -> None:
    """libFuzzer mutates bytes; the first byte picks the topic. Reports and exits the process
    itself after ``inputs`` inputs (libFuzzer's own exit would skip the report)."""
    import atheris  # type: ignore[import-not-found]  # optional: pip install atheris

    corpus = tempfile.mkdtemp(prefix="jinmei-fuzz-")  # libFuzzer adds what it finds here
    gen = Generator(seed)
    for i in range(50):
        with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
            f.write(bytes([i % len(TOPICS)]) + gen.structural())
    topics = TOPICS + HOSTILE_TOPICS
    started: list[float] = []  # at the first input: instrumenting the modules takes a while

    def one(data: bytes) -> None:
        started[:] = started or [time.perf_counter()]
        if data:
            harness.run([(topics[data[0] % len(topics)], data[1:])])
        if harness.inputs >= inputs:
            sys.stdout.flush()
            os._exit(harness.report(time.perf_counter() - started[0]))

    atheris.instrument_all()
    # The instrumented interpreter grows: 4 GiB after 900 k inputs here, while the codec alone
    # replaying the corpus stays at 33 MB. Run atheris in pieces of 500 k (other seeds).
    atheris.Setup([sys.argv[0], f"-runs={2 * inputs}", f"-seed={seed}", "-max_len=70000",
                   "-rss_limit_mb=4096", f"-artifact_prefix={corpus}/", corpus], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--batch", type=int, default=CALL_MESSAGES, help="messages per call")
    parser.add_argument("--engine", choices=("seeded", "atheris"), default="seeded")
    args = parser.parse_args(argv)
    harness = Harness()
    start = time.perf_counter()
    engines: dict[str, Callable[[], None]] = {
        "seeded": lambda: seeded(harness, args.inputs, args.seed, args.batch),
        "atheris": lambda: under_atheris(harness, args.inputs, args.seed)}
    engines[args.engine]()
    return harness.report(time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
