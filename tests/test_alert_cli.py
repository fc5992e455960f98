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


def test_history_times_are_the_mines_clock_with_offset(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("csv", "json"):
        code, out = run(capsys, "alerts", "history", "--format", fmt, "-c", str(config))
        rows = list(csv.DictReader(io.StringIO(out))) if fmt == "csv" else json.loads(out)
        assert code == 0
        # the power-off of the fixture: 01:00 to 01:05 local time on 2026-11-25
        assert rows[0]["started_at"] == "2026-11-25T01:00:00+08:00", fmt
        assert rows[1]["ended_at"] == "2026-11-25T01:05:00+08:00", fmt
        assert rows[0]["ended_at"] == "", fmt  # an open transition has no end


def test_list_puts_the_most_severe_first(config: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    deployment = load_deployment(config)
    registry = deployment.registry
    record = AlertRecord(Path(deployment.ingest.state_dir) / "alerts.db")
    d = AlertDispatcher(registry, Names(), record, config_hash=deployment.config_hash,
                        publish=lambda t, p: None)
    co = registry.index["qipanjing/CO-1101"]
    t2 = registry.index["qipanjing/T2-1101"]
    t1 = registry.index["qipanjing/T1-1101"]
    base = DAY_START + 7_200_000
    d.apply([Event(co, "limit_alarm", "alarm_high", "warning", True, base, 30.0, 24.0),
             Event(t2, "limit_alarm", "alarm_high", "alarm", True, base + 1000, 1.1, 1.0),
             Event(t1, "limit_power_off", "power_off", "critical", True, base + 2000, 1.6,
                   1.5)], base + 2000)
    d.close()
    record.close()
    code, out = run(capsys, "alerts", "list", "-c", str(config))
    section = out.split("open alerts")[1].split("pending:")[0]
    severities = [line.split()[0] for line in section.splitlines()[1:] if line.strip()]
    assert code == 0 and severities == ["critical", "alarm", "warning"]
    assert "critical 2026-11-25T02:00:02+08:00" in section  # 02:00 local, not epoch ms


@pytest.mark.parametrize(("option", "value"), [
    ("--mine", "nosuchmine"), ("--sensor", "T9-9999"), ("--kind", "methane"),
    ("--rule", "limit_alarms"), ("--severity", "urgent"), ("--area", "9999")])
def test_a_silence_that_could_never_match_is_refused(
        config: Path, capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    code = main(["alerts", "silence", option, value, "--duration", "2h", "--by", "li",
                 "--reason", "maintenance", "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {option}: no ") and repr(value) in err and "known:" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.parametrize(("argv", "option"), [
    (["report", "daily", "--mine", "qipanjing", "--date", "2026-13-01"], "--date"),
    (["report", "daily", "--mine", "nosuchmine", "--date", "2026-11-25"], "--mine"),
    (["alerts", "history", "--since", "yesterday-ish"], "--since"),
    (["alerts", "silence", "--duration", "2 hours", "--by", "li", "--reason", "x"], "--duration"),
])
def test_bad_arguments_exit_2_with_one_line(config: Path, capsys: pytest.CaptureFixture[str],
                                            argv: list[str], option: str) -> None:
    code = main([*argv, "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {option}: ") and err.count("\n") == 1


def test_unreachable_grafana_is_one_line_and_exit_1(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.servers import free_port

    url = f"http://admin:hunter2@127.0.0.1:{free_port()}"
    code = main(["dashboards", "push", "--url", url, "-c", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: cannot reach Grafana at http://127.0.0.1:")
    assert "hunter2" not in err and err.count("\n") == 1


def test_a_closed_pipe_ends_quietly(config: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    # Many rows, read by a reader that stops after the first line (as `| head -1` does).
    script = ("import sys; from jinmei.cli import main; "
              "sys.exit(main(['alerts', 'history', '--format', 'json', '-c', sys.argv[1]]))")
    deployment = load_deployment(config)
    record = AlertRecord(Path(deployment.ingest.state_dir) / "alerts.db")
    d = AlertDispatcher(deployment.registry, Names(), record,
                        config_hash=deployment.config_hash, publish=lambda t, p: None)
    t1 = deployment.registry.index["qipanjing/T1-1101"]
    for k in range(400):
        at = DAY_START + 10_000_000 + k * 120_000
        d.apply([Event(t1, "limit_power_off", "power_off", "critical", k % 2 == 0, at, 1.6,
                       1.5)], at)
    d.close()
    record.close()
    writer = subprocess.Popen([sys.executable, "-c", script, str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None
    writer.stdout.readline()
    writer.stdout.close()
    _, err = writer.communicate(timeout=60)
    assert writer.returncode == 0 and err == b""
