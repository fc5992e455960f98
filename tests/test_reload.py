"""Reload on SIGHUP: ``jinmei run`` as operators run it, on a real Mosquitto, logging JSON.

One story: T1-1101 goes to power-off and T0-1101 to alarm (episodes open). The mine file is
edited — T2-1101 gets a stricter alarm limit (0.7 %), a new point CH4-1101-9 appears, T0-1101 is
removed — and SIGHUP swaps it in: T0-1101's episode resolves "removed from configuration",
0.8 % at T2-1101 now alarms, the new point's readings are stored, and T1-1101's power-off
resolves with the id it fired with. Then a broken edit is refused with the file and the key in
the log, and the service still alerts on the configuration it kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.loader import DEFAULT_DEPLOYMENT, DEFAULT_LIMITS
from ingest.codec import encode_telemetry
from jinmei.reload import describe_changes, reload_service
from tests.servers import Mosquitto, wait_until
from tests.test_service import Listener, send

pytestmark = pytest.mark.integration

S01 = "jinmei/qipanjing/telemetry/S01"
NEW_POINT = '''
[[sensors]]
id = "CH4-1101-9"
point_code = "001A19"
kind = "ch4"
location = "shearer"
place = "1101综采工作面采煤机机尾"
area = "1101"
substation = "S01"
'''
T2_BLOCK = 'id = "T2-1101"\n'
STRICTER = ('limits = { alarm_high = 0.7, reason = "矿井规定回风巷甲烷 0.7 % 报警 '
            '(test: a stricter mine rule)" }\n')


class Service:
    """``jinmei --log-format json run`` in a subprocess; its log records as they come."""

    def __init__(self, config: Path, broker: Mosquitto, store: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jinmei.cli", "--log-format", "json", "run", "--config",
             str(config), "--broker", broker.url, "--store", f"sqlite:///{store}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.records: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.records.append(json.loads(line))  # every line is one JSON record

    def wait_log(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
        found = wait_until(lambda: next((r for r in list(self.records) if predicate(r)), None),
                           timeout)
        assert found, f"no such log record; got {[r['message'] for r in self.records]}"
        return found  # type: ignore[no-any-return]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "mines").mkdir()
    shutil.copy(DEFAULT_DEPLOYMENT.parent / "mines" / "qipanjing.toml", tmp_path / "mines")
    (tmp_path / "jinmei.toml").write_text(
        f'mines = ["mines/qipanjing.toml"]\nlimits = "{DEFAULT_LIMITS}"\n'
        '[broker]\nclient_id = "jinmei-reload-test"\n'
        f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n'
        '[alerts]\nresolve_hold_s = 0.0\n'
        '[http]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
    return tmp_path


@pytest.fixture
def alerts(mosquitto: Mosquitto) -> Iterator[Listener]:
    listening = Listener(mosquitto, "jinmei/+/alerts")
    yield listening
    listening.close()


def reading(sensor: str, value: float, at_ms: int) -> tuple[str, bytes]:
    return (S01, encode_telemetry(at_ms, [(sensor, value, "ok")]))


def alert(listener: Listener, sensor: str, rule: str, state: str) -> dict[str, Any]:
    return listener.wait_for(lambda m: m[1]["sensor"] == sensor and m[1]["rule"] == rule
                             and m[1]["state"] == state)[0][1]


def test_sighup_swaps_in_limits_and_sensors_keeping_open_episodes(
        mosquitto: Mosquitto, alerts: Listener, workdir: Path) -> None:
    mine_file = workdir / "mines" / "qipanjing.toml"
    service = Service(workdir / "jinmei.toml", mosquitto, workdir / "readings.db")
    try:
        service.wait_log(lambda r: "jinmei serving" in r["message"])
        t = int(time.time() * 1000) - 120_000
        deadline = time.monotonic() + 20
        while not any(m[1]["rule"] == "limit_power_off" for m in alerts.messages):
            assert time.monotonic() < deadline, "no power-off alert before the reload"
            send(mosquitto, [reading("T1-1101", 1.62, t), reading("T0-1101", 1.2, t)])
            time.sleep(0.5)
        fired = alert(alerts, "T1-1101", "limit_power_off", "firing")
        alert(alerts, "T0-1101", "limit_alarm", "firing")
        before = service.wait_log(lambda r: "jinmei serving" in r["message"])["message"]

        text = mine_file.read_text(encoding="utf-8")
        start = text.index('[[sensors]]\nid = "T0-1101"')
        text = text[:start] + text[text.index("[[sensors]]", start + 1):]  # T0-1101 removed
        text = text.replace(T2_BLOCK, T2_BLOCK + STRICTER) + NEW_POINT
        mine_file.write_text(text, encoding="utf-8")
        service.proc.send_signal(signal.SIGHUP)
        changed = service.wait_log(lambda r: r["message"].startswith("reload: config hash"))
        assert "sensors added: qipanjing/CH4-1101-9" in changed["message"]
        assert "sensors removed: qipanjing/T0-1101" in changed["message"]
        assert "qipanjing/T2-1101: limits.alarm_high 1.0 → 0.7" in changed["message"]
        done = service.wait_log(lambda r: r["message"].startswith("reload done"))
        new_hash = done["message"].split("config hash ")[1].split()[0]
        assert new_hash not in before

        removed = alert(alerts, "T0-1101", "limit_alarm", "resolved")
        assert "removed from configuration" in removed["message"]
        send(mosquitto, [reading("T2-1101", 0.8, t + 10_000),
                         reading("CH4-1101-9", 0.31, t + 10_000)])
        stricter = alert(alerts, "T2-1101", "limit_alarm", "firing")
        assert stricter["limit"] == 0.7 and stricter["value"] == 0.8
        send(mosquitto, [reading("T1-1101", 0.5, t + 20_000)])
        resolved = alert(alerts, "T1-1101", "limit_power_off", "resolved")
        assert resolved["id"] == fired["id"]  # the open episode kept its id

        # A broken edit: refused with file and key, and the service keeps alerting.
        mine_file.write_text(text.replace('kind = "ch4"', 'kind = "methane"', 1),
                             encoding="utf-8")
        service.proc.send_signal(signal.SIGHUP)
        refused = service.wait_log(lambda r: r["message"].startswith("reload refused"))
        assert refused["level"] == "ERROR"
        assert str(mine_file) in refused["message"] and ".kind" in refused["message"]
        assert new_hash in refused["message"]  # still running on the reloaded configuration
        send(mosquitto, [reading("T2-1101", 1.3, t + 30_000)])
        alert(alerts, "T2-1101", "limit_power_off", "firing")
        port = int(before.rsplit("operator endpoint on port ", 1)[1])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            metrics = {(s.name, s.labels.get("outcome")): s.value
                       for f in text_string_to_metric_families(reply.read().decode())
                       for s in f.samples}
        assert metrics[("jinmei_reloads_total", "applied")] == 1
        assert metrics[("jinmei_reloads_total", "refused")] == 1
        assert metrics[("jinmei_build_info", None)] == 1
    finally:
        code = service.stop()
    assert code == 0
    with sqlite3.connect(workdir / "readings.db") as db:
        stored = db.execute("SELECT value FROM reading WHERE sensor = 'CH4-1101-9'").fetchall()
    assert stored == [(0.31,)]
    assert not [r for r in service.records if r["level"] in ("ERROR", "CRITICAL")
                and not r["message"].startswith("reload refused")]


def test_restart_only_sections_keep_their_running_value(caplog: pytest.LogCaptureFixture) -> None:
    from config.loader import load_deployment
    from jinmei.reload import load_for_reload

    current = load_deployment(None)
    edited = dataclasses.replace(
        current, config_hash="other",
        broker=dataclasses.replace(current.broker, url="mqtt://elsewhere:1883"),
        alerts=dataclasses.replace(current.alerts, resolve_hold_s=5.0))
    with caplog.at_level("WARNING"):
        new, outcome = load_for_reload(lambda: edited, current)
    assert new is not None and outcome == "applied"
    assert new.broker == current.broker and new.alerts.resolve_hold_s == 5.0
    assert "[broker] changed" in caplog.text
    assert describe_changes(current, new) == "[alerts] changed"
    assert load_for_reload(lambda: current, current) == (None, "unchanged")


def test_reload_rebuilds_the_networking_files_on_the_new_sensor_list(
        mosquitto: Mosquitto, workdir: Path) -> None:
    """With regulator networking on (archive only: no url), a reload that adds a point sends
    the definitions again for the new config hash, and real-time files carry each point's own
    value — the new networking thread reads sensor indexes of the new registry."""
    from config.loader import load_deployment
    from jinmei.service import Service as InProcess

    conf = workdir / "jinmei.toml"
    conf.write_text(conf.read_text(encoding="utf-8").replace(
        "[broker]\n", f'[broker]\nurl = "{mosquitto.url}"\n') +
        f'[store]\nurl = "sqlite:///{workdir / "readings.db"}"\n'
        "[networking]\nenabled = true\ncdss_period_s = 1.0\n", encoding="utf-8")
    archive = workdir / "state" / "networking" / "archive"

    def records(kind: str, point: str) -> list[list[str]]:
        return [r.strip().split(";") for f in sorted(archive.glob(f"*_{kind}_*.txt"))
                for r in f.read_text(encoding="utf-8").split("~") if r.strip().startswith(point)]

    service = InProcess(load_deployment(conf))
    assert service.start(wait_subscribed_s=10)
    try:
        t = int(time.time() * 1000) - 5_000
        send(mosquitto, [reading("T1-1101", 0.41, t)])
        assert wait_until(lambda: any(r[3] == "0.41" for r in records("CDSS", "001A02")), 15)
        mine_file = workdir / "mines" / "qipanjing.toml"
        text = mine_file.read_text(encoding="utf-8")
        first = text.index("[[sensors]]")  # first: every other sensor's index moves by one
        mine_file.write_text(text[:first] + NEW_POINT.lstrip() + "\n" + text[first:],
                             encoding="utf-8")
        assert reload_service(service, lambda: load_deployment(conf), threading.Event())
        assert wait_until(lambda: any("001A19;" in f.read_text(encoding="utf-8")
                                      for f in archive.glob("*_CDDY_*.txt")), 10)
        send(mosquitto, [reading("CH4-1101-9", 0.31, t + 1_000),
                         reading("T1-1101", 0.42, t + 1_000)])
        assert wait_until(lambda: any(r[3] == "0.31" for r in records("CDSS", "001A19"))
                          and any(r[3] == "0.42" for r in records("CDSS", "001A02")), 15)
    finally:
        service.stop()
    assert not any(r[3] in ("0.31", "0.42") for point in ("001A01", "001A03")
                   for r in records("CDSS", point))  # no value landed on a neighbour
    with sqlite3.connect(workdir / "readings.db") as db:  # nor in the store
        assert db.execute("SELECT sensor FROM reading WHERE value IN (0.31, 0.42)"
                          " ORDER BY value").fetchall() == [("CH4-1101-9",), ("T1-1101",)]
