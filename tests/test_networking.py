"""Networking files: golden files written by hand from domain.md §6, the validator, uploads."""

from __future__ import annotations

import functools
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncssh
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.record import AlertRecord
from alerts.wire import Alert
from config.loader import load_deployment, load_limits
from config.model import (
    AlertsConfig,
    BrokerConfig,
    Deployment,
    IngestConfig,
    Limits,
    Mine,
    MineNetworking,
    NetworkingConfig,
    Sensor,
    StoreConfig,
    Substation,
)
from config.readings import ReadingBatch, Status
from jinmei.cli import main
from networking import files
from networking.extremes import RunningExtremes
from networking.format import DataFile
from networking.queue import UploadQueue
from networking.upload import drain, open_target
from networking.validate import check_files
from networking.worker import NetworkingWorker
from tests.servers import free_port, ftp_server, sftp_server

GOLDEN = Path(__file__).parent / "golden" / "networking"
ZONE = ZoneInfo("Asia/Shanghai")
KINDS = load_limits().kinds


def at(hms: str) -> int:
    h, m, s = map(int, hms.split(":"))
    return int(datetime(2026, 11, 25, h, m, s, tzinfo=ZONE).timestamp() * 1000)


NOW = at("22:25:20")
CH4 = Sensor("t", "T1-1201", "ch4", "%", "longwall_face", "1201工作面", "1201", "S01", 10.0, 0.0,
             4.0, Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0),
             point_code="001A01")
FEED = Sensor("t", "KD-1201", "feed", "", "longwall_face", "1201馈电", "1201", "S01", 15.0, 0.0,
              1.0, Limits(), point_code="001D01")
MINE = Mine("t", "测试煤矿", "Test mine", "Asia/Shanghai",
            (Substation("S01", "1201分站", "1201回风顺槽口", code="001"),), (CH4, FEED),
            networking=MineNetworking("150782010001", "KJ90X", "KJ90X煤矿安全监控系统",
                                      "重庆研究院"))


def golden(file: DataFile) -> None:
    assert (GOLDEN / file.name).read_bytes() == file.encode()


def test_cddy_golden() -> None:
    golden(files.cddy(MINE, KINDS, "01", NOW))


def test_cdss_golden() -> None:
    golden(files.cdss(MINE, KINDS, np.array([at("22:25:18"), at("22:25:15")]),
                      np.array([1.23, 1.0]), np.array([1, 0], np.uint16), NOW))


def test_tjsj_golden_leaves_calibration_out() -> None:
    ts = np.array([at("22:21:00"), at("22:22:00"), at("22:23:00"), at("22:24:00"),
                   at("22:25:00")])
    stats = files.window_statistics(2, np.zeros(5, np.int32), ts,
                                    np.array([0.5, 0.9, 0.7, 1.8, 3.0]),
                                    np.array([0, 0, 0, 4, 0], np.uint16),
                                    at("22:20:00"), at("22:25:00"))
    golden(files.tjsj(MINE, KINDS, stats, NOW))


def test_ycbj_golden_closed_and_open() -> None:
    events = [files.AbnormalEvent(CH4, "002", at("22:10:00"), at("22:15:00"),
                                  (1.62, at("22:12:00")), (1.5, at("22:10:00")), 1.55, "",
                                  "撤人断电", at("22:16:00"), "张三"),
              files.AbnormalEvent(CH4, "001", at("22:24:00"))]
    golden(files.ycbj(MINE, KINDS, events, NOW))


@pytest.mark.parametrize(("rule", "condition", "code"), [
    ("limit_alarm", "alarm_high", "001"), ("limit_power_off", "power_off", "002"),
    ("feed_fault", "feed_on_power_off", "003"), ("no_data", "silent", "004"),
    ("sensor_fault", "out_of_range", "008"), ("trend", "trend_high", "009"),
    ("limit_alarm", "warning_high", "009"), ("sensor_fault", "spike", None)])
def test_event_types(rule: str, condition: str, code: str | None) -> None:
    assert files.event_type(rule, condition) == code


def test_validator_accepts_golden_and_shipped_mines(tmp_path: Path) -> None:
    assert check_files(sorted(GOLDEN.iterdir())) == []
    for mine in load_deployment().mines:
        file = files.cddy(mine, KINDS, "01", NOW)
        (tmp_path / file.name).write_bytes(file.encode("gbk"))
    assert check_files(sorted(tmp_path.iterdir())) == []


def _broken(tmp_path: Path, kind: str, old: str, new: str) -> Path:
    source = next(GOLDEN.glob(f"*_{kind}_*"))
    path = tmp_path / source.name
    path.write_text(source.read_text().replace(old, new, 1))
    return path


@pytest.mark.parametrize(("kind", "old", "new", "message"), [
    ("CDDY", ";0001;", ";0999;", "record 1 field 4: unknown sensor type code '0999'"),
    ("CDDY", ";1.50;", ";1.50;;", "record 1: 25 fields, expected 24"),
    ("CDSS", "22:25:18", "22:61:18", "record 1 field 7: bad time"),
    ("YCBJ", "22:15:00", "22:05:00", "record 1 field 7: event ends"),
    ("YCBJ", ";002;", ";011;", "record 1 field 5: unknown event type '011'"),
    ("TJSJ", ";0.70;", ";0.95;", "record 1 field 11: not min ≤ mean ≤ max"),
    ("CDSS", "~||", "~", "does not end with ||"),
    ("CDSS", "1.23;%;1;", "1.23;%;0;", "record 1 field 6: value 1.23 ≥ upper alarm 1.00 but"),
    ("CDSS", "1.23;%;1;", "0.50;%;1;", "record 1 field 6: alarm bit (1) set but value 0.50"),
])
def test_validator_rejects_each_break(tmp_path: Path, kind: str, old: str, new: str,
                                      message: str) -> None:
    paths = [_broken(tmp_path, kind, old, new)]
    if kind == "CDSS":
        paths.append(GOLDEN / "150782010001_CDDY_20261125222520.txt")
    findings = [str(f) for f in check_files(paths)]
    assert len(findings) == 1 and message in findings[0], findings


def _cdss_series(tmp_path: Path, values: np.ndarray, stamped: bool = False) -> list[Path]:
    paths = []
    for k, v in enumerate(values):
        now = NOW + 10_000 * k
        file = files.cdss(MINE, KINDS, np.array([now if stamped else now - 1234, -1]),
                          np.array([v, 0.0]), np.zeros(2, np.uint16), now)
        paths.append(tmp_path / file.name)
        paths[-1].write_bytes(file.encode())
    return paths


def test_validator_flags_a_fabricated_feed(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    (tmp_path / "a").mkdir()
    noise = check_files(_cdss_series(tmp_path / "a", rng.uniform(0.30, 0.40, 60)))
    assert [f.suspicious for f in noise] == [True] and "white noise" in noise[0].message
    (tmp_path / "b").mkdir()
    dead = check_files(_cdss_series(tmp_path / "b", np.full(40, 0.3)))
    assert "never changes" in str(dead)


def test_validator_accepts_a_plausible_feed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    drift = 0.3 + 0.05 * np.sin(np.arange(60) / 8) + np.random.default_rng(1).normal(0, .003, 60)
    assert check_files(_cdss_series(tmp_path / "a", drift)) == []
    (tmp_path / "b").mkdir()
    grid = check_files(_cdss_series(tmp_path / "b", drift, stamped=True))
    assert len(grid) == 1 and "writer's grid" in grid[0].message


def _known_hosts(tmp_path: Path, port: int, key: asyncssh.SSHKey) -> str:
    path = tmp_path / "known_hosts"
    path.write_bytes(f"[127.0.0.1]:{port} ".encode() + key.export_public_key())
    return str(path)


@pytest.mark.integration
@pytest.mark.parametrize("server", [ftp_server, sftp_server])
def test_upload_survives_server_down_and_restart(tmp_path: Path, server: Any) -> None:
    remote, state = tmp_path / "remote", tmp_path / "state"
    remote.mkdir()
    port = free_port()
    scheme = "ftp" if server is ftp_server else "sftp"
    key = asyncssh.generate_private_key("ssh-ed25519")
    if server is sftp_server:  # the regulator's host key, known to jinmei
        server = functools.partial(sftp_server, host_key=key)
    target = open_target(f"{scheme}://jinmei@127.0.0.1:{port}/", "secret",
                         _known_hosts(tmp_path, port, key))
    queue = UploadQueue(state, jitter=lambda: 0.5)
    sent = [files.cdss(MINE, KINDS, np.array([NOW, NOW]), np.array([0.3, 1.0]),
                       np.zeros(2, np.uint16), NOW + 10_000 * k) for k in range(3)]
    for file in sent[:2]:
        assert queue.add(file, "utf-8", 0.0)
    assert drain(queue, target, 0.0) == 0  # server down: kept, retried later
    assert queue.status().pending == 2 and queue.status().last_error is not None
    queue.close()
    queue = UploadQueue(state, jitter=lambda: 0.5)  # jinmei restarted meanwhile
    queue.add(sent[2], "utf-8", 5.0)
    with server(remote, port):
        for t in (10.0, 20.0, 40.0):
            drain(queue, target, t)
        assert queue.status().pending == 0
        assert drain(queue, target, 1000.0) == 0  # never re-uploaded once confirmed
    assert sorted(p.name for p in remote.iterdir()) == sorted(f.name for f in sent)
    assert all((remote / f.name).read_bytes() == f.encode() for f in sent)
    assert [ok for _, ok, _ in queue.log(sent[0].name)] == [False, True]


@pytest.mark.integration
def test_sftp_refuses_an_unknown_host_key_loudly(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A server whose key is not in known_hosts gets nothing: the file stays queued (retryable:
    the regulator may fix it), an error is logged; with its key known the file goes up."""
    remote = tmp_path / "remote"
    remote.mkdir()
    key, other = (asyncssh.generate_private_key("ssh-ed25519") for _ in range(2))
    queue = UploadQueue(tmp_path / "state", jitter=lambda: 0.5)
    file = files.cdss(MINE, KINDS, np.array([NOW, NOW]), np.array([0.3, 1.0]),
                      np.zeros(2, np.uint16), NOW)
    queue.add(file, "utf-8", 0.0)
    with sftp_server(remote, host_key=key) as port:
        url = f"sftp://jinmei@127.0.0.1:{port}/"
        with caplog.at_level(logging.ERROR, "networking.upload"):
            assert drain(queue, open_target(url, "secret", _known_hosts(tmp_path, port, other)),
                         0.0) == 0
        assert "host key" in caplog.text and "host key" in str(queue.status().last_error)
        assert queue.status().pending == 1 and list(remote.iterdir()) == []
        assert drain(queue, open_target(url, "secret", _known_hosts(tmp_path, port, key)),
                     10.0) == 1
    assert (remote / file.name).read_bytes() == file.encode()


# ── the worker: YCBJ extremes, definitions on a configuration change ─────────────────────────

def _worker(state: Path, config_hash: str = "h1") -> tuple[NetworkingWorker, AlertRecord]:
    deployment = Deployment(BrokerConfig(), StoreConfig(), IngestConfig(state_dir=str(state)),
                            AlertsConfig(), (MINE,), config_hash=config_hash,
                            networking=NetworkingConfig(enabled=True))
    record = AlertRecord(state / "alerts.db")
    queue = UploadQueue(state / "networking")
    return NetworkingWorker(deployment, KINDS, queue, None, record, lambda: 0.0), record


def _ch4(*readings: tuple[str, float, int]) -> ReadingBatch:
    hms, value, status = zip(*readings, strict=True)
    return ReadingBatch(np.zeros(len(readings), np.int32), np.array([at(t) for t in hms]),
                        np.array(value), np.array(status, np.uint16))


def _alarm(state: str, ts: str) -> Alert:
    return Alert(id="e1", mine="t", sensor="T1-1201", kind="ch4", rule="limit_alarm",
                 severity="critical", state=state, value=1.2, limit=1.0,
                 started_at=at("22:20:10"), ts=at(ts), message="甲烷超限",
                 condition="alarm_high", ended_at=at(ts) if state == "resolved" else None)


def _records(state: Path, kind: str) -> list[list[str]]:
    texts = [p.read_text() for p in sorted((state / "networking" / "archive").glob(f"*_{kind}_*"))]
    return [r.split(";") for text in texts for r in text.removesuffix("~||").split("~")[1:]]


def test_closing_ycbj_carries_the_extremes_and_mean_across_a_restart(tmp_path: Path) -> None:
    """An over-limit alarm 22:20:10–22:29:00 on T1-1201; jinmei restarts at 22:26:30, when
    the first readings are already folded (older than 5 min) and later ones only buffered.
    Measured readings inside [start, end): 1.2, 1.6 (22:20:20), 1.4, 1.0 (22:24:00), 1.6, 1.6 —
    max 1.60 first at 22:20:20, min 1.00 at 22:24:00, mean 8.4 / 6 = 1.40. Left out: 0.5
    before the start, the calibrating 3.0, the 0.8 at the end and the 0.6 after it."""
    worker, record = _worker(tmp_path)
    worker.observe(_ch4(("22:20:00", 0.5, 0), ("22:20:10", 1.2, 1)))
    record.append([_alarm("firing", "22:20:10")], "h1", at("22:20:10"))
    worker.tick(at("22:20:11") / 1000)
    worker.observe(_ch4(("22:20:20", 1.6, 1), ("22:20:30", 1.4, 1),
                        ("22:20:40", 3.0, int(Status.CALIBRATION))))
    worker.tick(at("22:20:41") / 1000)
    worker.observe(_ch4(("22:24:00", 1.0, 1)))
    worker.tick(at("22:26:30") / 1000)
    worker, record = _worker(tmp_path)  # restarted
    worker.observe(_ch4(("22:27:00", 1.6, 1), ("22:28:00", 1.6, 1), ("22:29:00", 0.8, 0),
                        ("22:29:10", 0.6, 0)))
    record.append([_alarm("resolved", "22:29:00")], "h1", at("22:29:00"))
    worker.tick(at("22:29:11") / 1000)
    events = [r[4:12] for r in _records(tmp_path, "YCBJ") if r[4] == "001"]  # not the 007
    assert events == [
        ["001", "2026-11-25 22:20:10", "", "", "", "", "", ""],
        ["001", "2026-11-25 22:20:10", "2026-11-25 22:29:00", "1.60", "2026-11-25 22:20:20",
         "1.00", "2026-11-25 22:24:00", "1.40"]]


def test_definitions_are_sent_again_only_when_the_configuration_changes(tmp_path: Path) -> None:
    def definitions_after_start(config_hash: str, hms: str) -> int:
        worker, _ = _worker(tmp_path, config_hash)
        worker.tick(at(hms) / 1000)
        return len(_records(tmp_path, "CDDY")), len(_records(tmp_path, "FZDY"))

    assert definitions_after_start("h1", "22:00:00") == (2, 1)  # first start: both points
    assert definitions_after_start("h1", "22:10:00") == (2, 1)  # restart, same configuration
    assert definitions_after_start("h2", "22:20:00") == (4, 2)  # changed: sent again
    assert definitions_after_start("h2", "22:30:00") == (4, 2)
    assert definitions_after_start("", "22:40:00") == (6, 3)  # no hash known: always sent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from([0.5, 1.0, 1.5, 2.0])),
                min_size=1, max_size=30),
       st.integers(0, 30))
def test_running_extremes_do_not_depend_on_how_readings_are_folded(
        readings: list[tuple[int, float]], split: int) -> None:
    """Folding in two parts (settled, then at the close) gives the extremes of all readings:
    the largest and smallest value, each at its earliest time, and the plain mean."""
    ts = np.array([t for t, _ in readings], np.int64)
    value = np.array([v for _, v in readings])
    running = RunningExtremes()
    running.fold(ts[:split], value[:split])
    running.fold(ts[split:], value[split:])
    summary = running.summary()
    high, low = max(value.tolist()), min(value.tolist())
    assert summary.max == (high, min(t for t, v in readings if v == high))
    assert summary.min == (low, min(t for t, v in readings if v == low))
    assert summary.mean == pytest.approx(sum(value.tolist()) / len(readings))


def test_export_queues_the_definitions_and_the_next_start_does_not_resend(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "jinmei.toml"
    shipped = Path(load_deployment(None).source_file)
    conf.write_text(f'mines = ["{shipped.parent / "mines" / "dayan.toml"}"]\n'
                    f'limits = "{shipped.parent / "limits.toml"}"\n'
                    f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["networking", "export", "--config", str(conf)]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name.split("_")[1] for p in printed] == ["CDDY", "FZDY"]
    deployment = load_deployment(conf)
    queue = UploadQueue(tmp_path / "state" / "networking")
    NetworkingWorker(deployment, KINDS, queue, None, None, lambda: 0.0).tick(NOW / 1000 + 5)
    assert sorted(p.name.split("_")[1] for p in queue.archive.iterdir()) == [
        "CDDY", "CDSS", "FZDY", "FZSS"]  # the definitions once, then the real-time values


def test_with_workers_export_and_status_use_the_queue_each_worker_uploads_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``[ingest] workers = 2`` each worker uploads its mines' files from its own queue:
    export puts each mine's definitions there (not in a queue no process reads), and status
    shows every worker's queue and the sum."""
    conf = tmp_path / "jinmei.toml"
    shipped = Path(load_deployment(None).source_file)
    conf.write_text(f'mines = ["{shipped.parent / "mines" / "dayan.toml"}", '
                    f'"{shipped.parent / "mines" / "qipanjing.toml"}"]\n'
                    f'limits = "{shipped.parent / "limits.toml"}"\n'
                    f'[ingest]\nstate_dir = "{tmp_path / "state"}"\nworkers = 2\n')
    assert main(["networking", "export", "--config", str(conf)]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert len(printed) == 4
    codes = {m.networking.code: m.id for m in load_deployment(conf).mines}
    for path in printed:  # dayan → worker 0, qipanjing → worker 1 (jinmei.workers.assign)
        worker = {"dayan": "worker-0", "qipanjing": "worker-1"}[codes[path.name.split("_")[0]]]
        assert tmp_path / "state" / worker / "networking" in path.parents
    assert not (tmp_path / "state" / "networking").exists()
    assert main(["networking", "status", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "worker 0 (dayan):\n  queued (not yet confirmed): 2" in out
    assert "worker 1 (qipanjing):\n  queued (not yet confirmed): 2" in out
    assert "all workers:\n  queued (not yet confirmed): 4\n  uploaded: 0\n" \
        "  last success: never\n  last error: none" in out


def test_a_cause_entered_after_the_close_sends_the_closing_record_again(tmp_path: Path) -> None:
    """The console lets a dispatcher enter the cause and action of an event already over: the
    closing YCBJ record goes out again with them (same key, the same extremes); a cause
    entered before the close rides on the closing record itself, sent once."""
    now = [0.0]
    deployment = Deployment(BrokerConfig(), StoreConfig(), IngestConfig(state_dir=str(tmp_path)),
                            AlertsConfig(), (MINE,), config_hash="h1",
                            networking=NetworkingConfig(enabled=True))
    record = AlertRecord(tmp_path / "alerts.db")
    worker = NetworkingWorker(deployment, KINDS, UploadQueue(tmp_path / "networking"), None,
                              record, lambda: now[0])

    def tick(hms: str) -> None:
        now[0] = at(hms) / 1000
        worker.tick(now[0])

    worker.observe(_ch4(("22:20:10", 1.2, 1)))
    record.append([_alarm("firing", "22:20:10")], "h1", at("22:20:10"))
    tick("22:20:11")
    worker.observe(_ch4(("22:20:20", 1.6, 1), ("22:20:30", 0.8, 0)))
    record.append([_alarm("resolved", "22:20:30")], "h1", at("22:20:30"))
    tick("22:20:31")
    record.enter_cause("e1", "瓦斯涌出", "加强通风", "wang", at("22:40:00"))
    tick("22:40:01")
    tick("22:40:02")  # nothing new: not sent twice
    closings = [r[4:16] for r in _records(tmp_path, "YCBJ") if r[4] == "001" and r[6]]
    extremes = ["001", "2026-11-25 22:20:10", "2026-11-25 22:20:30", "1.60",
                "2026-11-25 22:20:20", "1.20", "2026-11-25 22:20:10", "1.40"]
    assert closings == [[*extremes, "", "", "", ""],
                        [*extremes, "瓦斯涌出", "加强通风", "2026-11-25 22:40:00", "wang"]]

    # a cause entered while the event is open goes out with its close, once
    record.append([msgspec.structs.replace(_alarm("firing", "22:50:10"), id="e2",
                                       started_at=at("22:50:10"))], "h1", at("22:50:10"))
    tick("22:50:11")
    record.enter_cause("e2", "标校不当", "重新标校", "li", at("22:51:00"))
    record.append([msgspec.structs.replace(_alarm("resolved", "22:52:00"), id="e2",
                                       started_at=at("22:50:10"))], "h1", at("22:52:00"))
    tick("22:52:01")
    tick("22:52:02")
    second = [r[12:16] for r in _records(tmp_path, "YCBJ")
              if r[4] == "001" and r[5] == "2026-11-25 22:50:10" and r[6]]
    assert second == [["标校不当", "重新标校", "2026-11-25 22:51:00", "li"]]
