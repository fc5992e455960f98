"""Networking files: golden files written by hand from domain.md §6, the validator, uploads."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from config.loader import load_limits
from config.model import Limits, Mine, MineNetworking, Sensor, Substation
from networking import files
from networking.format import DataFile
from networking.queue import UploadQueue
from networking.upload import drain, open_target
from networking.validate import check_files
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
    from config.loader import load_deployment
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


@pytest.mark.integration
@pytest.mark.parametrize("server", [ftp_server, sftp_server])
def test_upload_survives_server_down_and_restart(tmp_path: Path, server: object) -> None:
    remote, state = tmp_path / "remote", tmp_path / "state"
    remote.mkdir()
    port = free_port()
    scheme = "ftp" if server is ftp_server else "sftp"
    target = open_target(f"{scheme}://jinmei@127.0.0.1:{port}/", "secret")
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
    with server(remote, port):  # type: ignore[operator]
        for t in (10.0, 20.0, 40.0):
            drain(queue, target, t)
        assert queue.status().pending == 0
        assert drain(queue, target, 1000.0) == 0  # never re-uploaded once confirmed
    assert sorted(p.name for p in remote.iterdir()) == sorted(f.name for f in sent)
    assert all((remote / f.name).read_bytes() == f.encode() for f in sent)
    assert [ok for _, ok, _ in queue.log(sent[0].name)] == [False, True]
