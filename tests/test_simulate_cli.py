"""``jinmei simulate`` into a live service on a real Mosquitto: progress on stderr, and a
non-zero exit when the service refused what was published (its rejects topic says so)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
