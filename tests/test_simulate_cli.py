"""``jinmei simulate`` into a live service on a real Mosquitto: progress on stderr, and a
non-zero exit when the service refused what was published (its rejects topic says so)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from jinmei import cli_simulate
from jinmei.cli import main
from jinmei.service import Service
from tests.servers import Mosquitto
from tests.test_service import deployment_for

pytestmark = pytest.mark.integration


def test_simulate_fails_loudly_when_the_service_refuses_the_feed(
        mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    service = Service(deployment_for(mosquitto, tmp_path))
    assert service.start(wait_subscribed_s=10)
    try:
        # a feed stamped an hour ahead: every reading is refused as future_timestamp
        ahead = int(time.time() * 1000) + 3_600_000
        code = main(["simulate", "--mine", "qipanjing", "--duration", "30", "--asap",
                     "--start-ms", str(ahead), "--broker", mosquitto.url])
    finally:
        service.stop()
    err = capsys.readouterr().err
    assert code == 1
    assert "the service refused" in err and "future_timestamp" in err
    assert "jinmei/qipanjing/rejects" in err


def test_simulate_shows_progress_and_exits_0_when_everything_was_taken(
        mosquitto: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_simulate, "PROGRESS_S", 0.0)  # a line per message: a "long" feed
    service = Service(deployment_for(mosquitto, tmp_path))
    assert service.start(wait_subscribed_s=10)
    try:
        code = main(["simulate", "--mine", "qipanjing", "--duration", "60", "--asap",
                     "--broker", mosquitto.url])
    finally:
        service.stop()
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "published" in out
    lines = [line for line in err.splitlines() if line.startswith("simulate: ")]
    assert lines and "readings published" in lines[-1] and "%" in lines[-1]
    assert service.pipeline.stats.rejects_by_reason.total() == 0


def test_simulate_speed_paces_the_feed_at_that_many_times_real_time(
        mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]) -> None:
    """``--speed 10`` plays a 30 s feed in a tenth of its span on the wall clock, and (its
    clock started 27 s in the past) no reading arrives stamped after the wall clock."""
    arrivals: list[tuple[float, int]] = []  # (wall ms at arrival, the message's ts)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="speed-watch")
    client.on_message = lambda c, u, m: arrivals.append(
        (time.time() * 1000, json.loads(m.payload)["ts"]))
    client.connect("127.0.0.1", mosquitto.port)
    client.subscribe("jinmei/qipanjing/telemetry/#", qos=1)
    client.loop_start()
    try:
        time.sleep(0.3)  # the subscription in place
        began = time.monotonic()
        code = main(["simulate", "--mine", "qipanjing", "--duration", "30", "--speed", "10",
                     "--broker", mosquitto.url])
        elapsed = time.monotonic() - began
        time.sleep(0.3)  # the last messages delivered
    finally:
        client.loop_stop()
        client.disconnect()
    assert code == 0, capsys.readouterr().err
    stamps = sorted(ts for _, ts in arrivals)
    span_s = (stamps[-1] - stamps[0]) / 1000
    assert 20 <= span_s <= 30  # the whole feed came (its ticks: every sensor's period, 5 s)
    # paced: its span at 10x, from the first message to the last as they arrive
    arrival_span_s = (max(at for at, _ in arrivals) - min(at for at, _ in arrivals)) / 1000
    assert 0.8 * span_s / 10 <= arrival_span_s <= span_s / 10 + 1.5, arrival_span_s
    assert elapsed < span_s / 2, elapsed  # far from real time (the reject watch's settle in)
    # never a reading from the future (50 ms: the two clocks are one, the rounding is not)
    assert max(ts - at for at, ts in arrivals) <= 50
