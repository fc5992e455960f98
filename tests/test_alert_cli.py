"""``jinmei alerts …`` and ``jinmei report daily`` on a state file a dispatcher wrote."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from config.loader import CONFIG_DIR, load_deployment
from config.readings import ReadingBatch
from detectors.base import Event
from ingest.sqlite import SQLiteSink
from jinmei.cli import main

DAY_START = 1_795_536_000_000  # 2026-11-25 00:00 Asia/Shanghai


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "jinmei.toml"
    path.write_text(f'mines = ["{CONFIG_DIR}/mines/qipanjing.toml"]\n'
                    f'limits = "{CONFIG_DIR}/limits.toml"\n'
                    f'[store]\nurl = "sqlite:///{tmp_path}/readings.db"\n'
                    f'[ingest]\nstate_dir = "{tmp_path}/state"\n')
    deployment = load_deployment(path)
    (tmp_path / "state").mkdir()
    registry = deployment.registry
    t1 = registry.index["qipanjing/T1-1101"]
    d = AlertDispatcher(registry, Names(), AlertRecord(tmp_path / "state" / "alerts.db"),
                        config_hash=deployment.config_hash, publish=lambda t, p: None)
    d.apply([Event(t1, "limit_power_off", "power_off", "critical", True, DAY_START + 3_600_000,
                   1.62, 1.5)], DAY_START + 3_600_000)
    d.apply([Event(t1, "limit_power_off", "power_off", "critical", False,
                   DAY_START + 3_900_000, 0.9, 1.0)], DAY_START + 3_900_000)
    d.apply([], DAY_START + 3_930_000)  # the service's clock tick once the resolve hold ran out
    d.close()
    sink = SQLiteSink(tmp_path / "readings.db", registry)
    sink.write(ReadingBatch(np.full(10, t1, np.int32),
                            DAY_START + 3_600_000 + 60_000 * np.arange(10, dtype=np.int64),
                            0.5 + 0.1 * np.arange(10), np.zeros(10, np.uint16)))
    sink.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_history_has_every_transition_with_its_config_hash(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "alerts", "history", "-c", str(config), "--mine", "qipanjing",
                    "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["state"] for r in rows] == ["firing", "resolved"]
    assert rows[0]["config_hash"] == load_deployment(config).config_hash
    code, out = run(capsys, "alerts", "ack", rows[0]["id"], "--by", "wang", "-c", str(config))
    assert code == 0
    code, out = run(capsys, "alerts", "history", "-c", str(config))
    assert [r["acknowledged_by"] for r in csv.DictReader(io.StringIO(out))] == ["wang"] * 2
    assert run(capsys, "alerts", "ack", "nope", "--by", "li", "-c", str(config))[0] == 1


def test_silence_and_unsilence(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "alerts", "silence", "--mine", "qipanjing", "--kind", "co",
                    "--duration", "2h", "--by", "li", "--reason", "calibration", "-c",
                    str(config))
    silence_id = out.split()[1].rstrip(":")
    assert code == 0 and silence_id in run(capsys, "alerts", "list", "-c", str(config))[1]
    assert run(capsys, "alerts", "unsilence", silence_id, "-c", str(config))[0] == 0
    assert silence_id not in run(capsys, "alerts", "list", "-c", str(config))[1]


def test_daily_report(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "report", "daily", "--mine", "qipanjing", "--date", "2026-11-25",
                    "-c", str(config), "--out", str(tmp_path / "out"))
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| T1-1101"))
    assert "| 10 | 1.40 | 0.50 | 0.95 |" in row and "| 1 (300) |" in row  # 5 min power-off
    assert (tmp_path / "out" / "qipanjing_2026-11-25_ch4.png").stat().st_size > 1000
