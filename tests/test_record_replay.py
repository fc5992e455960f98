"""Recorder and replay: every message, in order, through a real Mosquitto; recordings survive.

The round trip publishes a scenario feed (with poison payloads, one not even UTF-8), records it,
replays the recording through ``jinmei replay`` and records again: both recordings must hold
exactly what was published, in order.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from pathlib import Path

import pytest

from config.loader import load_deployment
from jinmei.cli import main
from simulators.feed import Message, generate
from simulators.publisher import publish
from simulators.recorder import RecordSummary, record
from simulators.recording import read, writer
from simulators.replay import shifted
from tests.servers import Mosquitto

START_MS = 1_795_614_330_000


class _Recording:
    """``record`` running in a thread until ``count`` messages arrived."""

    def __init__(self, broker: Mosquitto, out: Path, count: int) -> None:
        ready = threading.Event()
        self.summary: list[RecordSummary] = []
        self.thread = threading.Thread(target=lambda: self.summary.append(record(
            broker.url, out, count=count, duration_s=60, on_ready=ready.set)))
        self.thread.start()
        assert ready.wait(10)

    def join(self) -> RecordSummary:
        self.thread.join(60)
        return self.summary[0]


def _feed() -> list[Message]:
    mine = next(m for m in load_deployment(None).mines if m.id == "dayan")
    feed = list(generate(mine, "malformed-payloads", start_ms=START_MS, duration_s=120))
    return [*feed, Message(START_MS + 120_000, "jinmei/dayan/telemetry", b"\xff\xfe not utf-8")]


@pytest.mark.integration
def test_record_then_replay_delivers_every_message_in_order(
        mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feed = _feed()
    sent = [(m.topic, m.payload) for m in feed]
    first, second = tmp_path / "first.jsonl.gz", tmp_path / "second.jsonl"
    recording = _Recording(mosquitto, first, len(feed))
    before = int(time.time() * 1000)
    publish(feed, mosquitto.url, speed=None, window=50)
    assert recording.join().messages == len(feed)
    recorded = list(read(first))
    assert [(m.topic, m.payload) for m in recorded] == sent
    assert all(before <= m.at_ms <= time.time() * 1000 for m in recorded)  # receive times

    again = _Recording(mosquitto, second, len(feed))
    assert main(["replay", str(first), "--broker", mosquitto.url, "--asap"]) == 0
    assert again.join().messages == len(feed)
    assert [(m.topic, m.payload) for m in read(second)] == sent
    out = capsys.readouterr()
    assert f"replayed {len(feed)} messages" in out.out and f"{len(feed)}/{len(feed)}" in out.err


@pytest.mark.integration
def test_replay_keeps_the_relative_timing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "paced.jsonl"
    recording = writer(path)
    for k in range(5):
        recording.write(Message(START_MS + 1000 * k, "jinmei/dayan/telemetry", b"{}"))
    recording.close()
    began = time.monotonic()
    assert main(["replay", str(path), "--broker", mosquitto.url, "--speed", "10"]) == 0
    assert time.monotonic() - began >= 0.4  # four recorded seconds at 10x


def test_shift_to_now_moves_every_epoch_ms_and_leaves_poison_alone() -> None:
    payload = b'{"ts":1000,"readings":[{"sensor":"T1","value":0.5,"ts":900},{"sensor":"T2",' \
              b'"value":0.4,"ts":"2026-01-01T00:00:00+08:00"}]}'
    messages = [Message(1000, "t", payload), Message(1500, "t", b"{not json"),
                Message(1600, "t", b"[1, 2]")]
    moved = list(shifted(iter(messages), 10_000))
    assert [m.at_ms for m in moved] == [11_000, 11_500, 11_600]
    body = json.loads(moved[0].payload)
    assert body["ts"] == 11_000 and body["readings"][0]["ts"] == 10_900
    assert body["readings"][1]["ts"] == "2026-01-01T00:00:00+08:00"
    assert [m.payload for m in moved[1:]] == [b"{not json", b"[1, 2]"]


def test_a_gzip_recording_cut_short_by_a_crash_keeps_what_was_flushed(tmp_path: Path) -> None:
    path = tmp_path / "crash.jsonl.gz"
    recording = writer(path)
    for k in range(3):
        recording.write(Message(k, "jinmei/dayan/telemetry", b"\x00\xff" if k == 1 else b"{}"))
    flushed = path.read_bytes()  # the file as a crash would leave it: no gzip trailer
    recording.close()
    path.write_bytes(flushed)
    assert [(m.at_ms, m.payload) for m in read(path)] == [(0, b"{}"), (1, b"\x00\xff"), (2, b"{}")]


def test_a_line_that_is_not_a_message_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write('{"at_ms": 1, "topic": "t", "payload": "{}"}\n{"topic": "t"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl\.gz:2"):
        list(read(path))
    assert main(["replay", str(path), "--broker", "mqtt://127.0.0.1:1", "--asap"]) == 2


def test_simulate_writes_a_replayable_feed_and_its_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "feed.jsonl", tmp_path / "truth.json"
    argv = ["simulate", "--mine", "qipanjing", "--scenario", "methane-rise", "--duration", "300",
            "--seed", "5", "--start-ms", str(START_MS), "--out", str(out), "--truth", str(truth)]
    assert main(argv) == 0
    first = out.read_bytes()
    assert main(argv) == 0 and out.read_bytes() == first  # same seed, same bytes
    doc = json.loads(truth.read_text(encoding="utf-8"))
    assert doc["scenario"] == "methane-rise" and any(e["fires"] for e in doc["alerts"])
    assert all(m.at_ms >= START_MS for m in read(out))
    assert main(["simulate", "--mine", "qipanjing", "--scenario", "nope", "--out",
                 str(out)]) == 2


@pytest.mark.integration
def test_simulate_asap_into_a_broker_never_stamps_a_reading_in_the_future(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    # 10 minutes of feed played as fast as the broker takes it: a live service would refuse
    # every reading stamped after its clock (future_timestamp), so the feed must end by now.
    out = tmp_path / "sim.jsonl"
    messages = 600 // 10 + 1  # dayan's feed: one message a 10 s cycle over 600 s, at least
    recording = _Recording(mosquitto, out, messages)
    before = int(time.time() * 1000)
    assert main(["simulate", "--mine", "dayan", "--duration", "600", "--asap",
                 "--broker", mosquitto.url]) == 0
    recording.join()
    after = int(time.time() * 1000)
    stamps = [json.loads(m.payload)["ts"] for m in read(out)]
    assert len(stamps) >= messages
    assert max(stamps) <= after  # nothing ahead of the clock …
    assert min(stamps) >= before - 600_000 - 10_000  # … and the whole feed within its span
