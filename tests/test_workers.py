"""Workers by mine (jinmei.workers): the assignment, ``--mines``, and the parent keeping its
workers alive — a worker killed with -9 while it holds unacknowledged messages is started
again and every published reading of its mines ends up in the store; a worker that cannot be
kept alive makes the parent exit 3. On a real Mosquitto and a real SQLite file.
"""

from __future__ import annotations

import doctest
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import jinmei.workers
from alerts.db import StateDB
from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from alerts.silences import SilenceBook
from config.errors import ConfigError, UsageError
from config.loader import DEFAULT_DEPLOYMENT, load_deployment
from detectors.base import Event
from ingest.codec import encode_telemetry
from jinmei.cli import main
from jinmei.supervisor import EXIT_FAILED
from jinmei.workers import as_worker, assign, select_mines, worker_count
from tests.servers import Mosquitto, scripted_http_server, wait_until
from tests.test_service import Listener, send
from tests.test_supervision import ok, received, status_is
from tests.test_supervision import write_config as supervised_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = Path(DEFAULT_DEPLOYMENT).parent
MINES = ("dayan", "qipanjing")


# ── pure logic ──────────────────────────────────────────────────────────────────────────

@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), unique=True, min_size=1),
       st.integers(1, 8))
def test_assignment_covers_every_mine_once_balanced_and_stable(ids: list[str], n: int) -> None:
    shares = assign(ids, n)
    assert sorted(m for share in shares for m in share) == sorted(ids)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    assert assign(list(reversed(ids)), n) == shares  # from the ids, not their order in files


def test_docstring_example_of_the_assignment_holds() -> None:
    result = doctest.testmod(jinmei.workers)
    assert result.attempted >= 1 and result.failed == 0


def test_worker_count_defaults_to_cores_and_never_exceeds_the_mines() -> None:
    assert worker_count(0, 350, 2) == 2
    assert worker_count(0, 1, 8) == 1
    assert worker_count(4, 3, 2) == 3
    assert worker_count(1, 350, 8) == 1


def test_select_mines_names_the_unknown_and_the_known() -> None:
    deployment = load_deployment(None)
    with pytest.raises(UsageError, match=r"unknown mine 'wuhai'.*dayan, qipanjing"):
        select_mines(deployment, "qipanjing,wuhai")
    only = select_mines(deployment, "qipanjing")
    assert [m.id for m in only.mines] == ["qipanjing"]
    assert only.broker.client_id == "jinmei-ingest-qipanjing"
    assert {s.mine for s in only.registry.sensors} == {"qipanjing"}
    worker = as_worker(only, 1)
    assert worker.broker.client_id == "jinmei-ingest-qipanjing-w1"
    assert Path(worker.ingest.state_dir) == Path("var/jinmei/worker-1")


# ── jinmei run as processes ─────────────────────────────────────────────────────────────

def write_config(tmp_path: Path, workers: int = 2, listen: str = "127.0.0.1:0") -> Path:
    """Both pilot mines, ``workers`` workers; the endpoint on ``listen`` (default: a free
    port, so that nothing else's 9108 matters)."""
    config = tmp_path / "jinmei.toml"
    config.write_text(
        f'mines = ["{SHIPPED / "mines" / "dayan.toml"}", '
        f'"{SHIPPED / "mines" / "qipanjing.toml"}"]\n'
        '[broker]\nclient_id = "jinmei-workers"\n'
        f'[http]\nlisten = "{listen}"\n'
        f'[ingest]\nstate_dir = "{tmp_path / "state"}"\nworkers = {workers}\n',
        encoding="utf-8")
    return config


def run(tmp_path: Path, broker: Mosquitto, config: Path, *extra: str,
        store: str | None = None) -> subprocess.Popen[bytes]:
    with (tmp_path / "jinmei.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jinmei.cli", "run", "--config", str(config),
             "--broker", broker.url, "--store", store or f"sqlite:///{tmp_path / 'readings.db'}",
             *extra], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def children(pid: int) -> dict[int, list[str]]:
    """The processes whose parent is ``pid``: {pid: argv}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found[int(entry.name)] = [a.decode() for a in argv if a]
    return found


def worker_pid(parent: int, index: int) -> int | None:
    return next((pid for pid, argv in children(parent).items()
                 if argv[-2:] == ["--worker", str(index)]), None)


def wait_online(broker: Mosquitto, log: Path) -> None:
    """Until every mine's status says online (the workers are subscribed)."""
    for mine in MINES:
        assert wait_until(lambda m=mine: status_is(broker, "online", m), 30), log.read_text()


def telemetry(mine: str, rounds: range, start_ms: int) -> list[tuple[str, bytes]]:
    """One message per round with every methane point of ``mine`` at 0.30 % (no alarm)."""
    sensors = [s.id for s in load_deployment(None).registry.sensors
               if s.mine == mine and s.kind == "ch4"]
    return [(f"jinmei/{mine}/telemetry/S01",
             encode_telemetry(start_ms + r * 1000, [(s, 0.30, "ok") for s in sensors]))
            for r in rounds]


def stored(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    with sqlite3.connect(db, timeout=10) as conn:
        return dict(conn.execute("SELECT mine, count(*) FROM reading GROUP BY mine").fetchall())


def ended(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = ended(proc, 60)
    if code is None:
        proc.kill()
        proc.wait()
    return code



@pytest.mark.integration
def test_mines_option_runs_only_the_named_mines(mosquitto: Mosquitto, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    proc = run(tmp_path, mosquitto, config, "--mines", "qipanjing")
    try:
        assert wait_until(lambda: status_is(mosquitto, "online", "qipanjing"), 30), \
            (tmp_path / "jinmei.log").read_text()
        start_ms = int(time.time() * 1000) - 600_000
        send(mosquitto, telemetry("dayan", range(5), start_ms))
        send(mosquitto, telemetry("qipanjing", range(5), start_ms))
        per_round = len(telemetry("qipanjing", range(1), start_ms)[0][1].split(b'"sensor"')) - 1
        db = tmp_path / "readings.db"
        assert wait_until(lambda: stored(db).get("qipanjing") == 5 * per_round, 20), stored(db)
        time.sleep(1.0)  # dayan's came first: had it been taken, it would be stored by now
        assert "dayan" not in stored(db)
        assert len(children(proc.pid)) == 0, "one mine runs in the process itself"
    finally:
        assert stop(proc) == 0, (tmp_path / "jinmei.log").read_text()


def test_unknown_mine_in_mines_option_exits_2_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jinmei.cli", "run", "--config", str(write_config(tmp_path)),
         "--mines", "dayan,wuhai"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--mines: unknown mine 'wuhai'; the configuration has dayan, qipanjing" in \
        result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_a_worker_killed_with_unacknowledged_messages_is_restarted_and_loses_nothing(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    proc = run(tmp_path, mosquitto, write_config(tmp_path))
    log = tmp_path / "jinmei.log"
    db = tmp_path / "readings.db"
    try:
        wait_online(mosquitto, log)
        # assign(sorted ids, 2): worker 0 owns dayan, worker 1 qipanjing
        victim = worker_pid(proc.pid, 0)
        other = worker_pid(proc.pid, 1)
        assert victim and other, children(proc.pid)
        start_ms = int(time.time() * 1000) - 600_000
        send(mosquitto, telemetry("dayan", range(0, 50), start_ms)
             + telemetry("qipanjing", range(0, 50), start_ms))
        # Frozen, the worker cannot acknowledge what the broker now sends it: those
        # messages are in flight, unacknowledged, when it is killed.
        os.kill(victim, signal.SIGSTOP)
        send(mosquitto, telemetry("dayan", range(50, 150), start_ms)
             + telemetry("qipanjing", range(50, 150), start_ms))
        os.kill(victim, signal.SIGKILL)
        send(mosquitto, telemetry("dayan", range(150, 200), start_ms)
             + telemetry("qipanjing", range(150, 200), start_ms))

        per_round = {m: len(telemetry(m, range(1), start_ms)[0][1].split(b'"sensor"')) - 1
                     for m in MINES}
        expected = {m: 200 * per_round[m] for m in MINES}
        assert wait_until(lambda: stored(db) == expected, 60), (stored(db), expected,
                                                                log.read_text()[-3000:])
        restarted = worker_pid(proc.pid, 0)
        assert restarted is not None and restarted != victim
        assert worker_pid(proc.pid, 1) == other, "the other worker was left alone"
        assert "worker 0 (dayan) exited (killed by SIGKILL); starting it again" in \
            log.read_text()
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert children(proc.pid) == {}


@pytest.mark.integration
@pytest.mark.parametrize(("sig", "reason"), [(signal.SIGSTOP, "worker_stalled"),
                                             (signal.SIGKILL, "worker_dead")])
def test_a_frozen_or_killed_worker_is_restarted_and_its_gap_reaches_the_receivers(
        mosquitto: Mosquitto, tmp_path: Path, sig: signal.Signals, reason: str) -> None:
    """A worker that cannot say it is blind — frozen whole, or killed from outside — is
    started again by its parent, and its next start tells the receivers of the gap
    (``monitoring_offline`` from when it began, resolved once it is back); the readings sent
    meanwhile are stored; the other worker is left alone."""
    with scripted_http_server(ok) as webhook:
        config = supervised_config(tmp_path, webhook)
        config.write_text(config.read_text().replace("workers = 1", "workers = 2")
                          .replace("stall_s = 2.0", "stall_s = 3.0"))
        proc = run(tmp_path, mosquitto, config)
        log = tmp_path / "jinmei.log"
        db = tmp_path / "readings.db"
        try:
            wait_online(mosquitto, log)
            victim, other = worker_pid(proc.pid, 1), worker_pid(proc.pid, 0)  # qipanjing, dayan
            assert victim and other, children(proc.pid)
            before_ms = int(time.time() * 1000)
            os.kill(victim, sig)
            start_ms = before_ms - 600_000
            send(mosquitto, telemetry("qipanjing", range(20), start_ms))
            firing = wait_until(lambda: received(webhook, "monitoring_offline", reason,
                                                 "firing"), 40)
            assert firing, (webhook.requests, log.read_text()[-3000:])
            resolved = wait_until(lambda: received(webhook, "monitoring_offline", reason,
                                                   "resolved"), 30)
            assert resolved, (webhook.requests, log.read_text()[-3000:])
            per_round = len(telemetry("qipanjing", range(1), start_ms)[0][1]
                            .split(b'"sensor"')) - 1
            assert wait_until(lambda: stored(db).get("qipanjing") == 20 * per_round, 30), \
                stored(db)
            assert worker_pid(proc.pid, 1) not in (None, victim)
            assert worker_pid(proc.pid, 0) == other, "the other worker was left alone"
        finally:
            code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
    assert (firing["severity"], firing["scope"]) == ("critical", "worker 1 (qipanjing)")
    assert resolved["id"] == firing["id"] and resolved["started_at"] == firing["started_at"]
    # the gap starts when the worker went silent (the last beat the parent took) or ended
    assert before_ms - 1500 <= firing["started_at"] <= before_ms + 1500
    assert resolved["ended_at"] >= firing["started_at"]
    assert received(webhook, "monitoring_offline", reason, "firing", mine="dayan") is None
    text = log.read_text()
    if sig == signal.SIGSTOP:
        assert "worker 1 (qipanjing) gave no sign of life for" in text
    assert "worker 1 (qipanjing) exited (killed by SIGKILL); starting it again" in text


@pytest.mark.integration
def test_a_killed_parent_leaves_no_worker_running_silently(mosquitto: Mosquitto,
                                                           tmp_path: Path) -> None:
    """kill -9 of the parent: each worker stops within seconds and says why — monitoring_offline
    to the receivers, status offline — and the next start resolves it under the same id."""
    with scripted_http_server(ok) as webhook:
        config = supervised_config(tmp_path, webhook)
        config.write_text(config.read_text().replace("workers = 1", "workers = 2"))
        proc = run(tmp_path, mosquitto, config)
        log = tmp_path / "jinmei.log"
        wait_online(mosquitto, log)
        workers = list(children(proc.pid))
        assert len(workers) == 2, children(proc.pid)
        proc.kill()
        proc.wait()
        assert wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers),
                          30), log.read_text()[-3000:]
        for mine in MINES:
            firing = received(webhook, "monitoring_offline", "worker_dead", "firing", mine)
            assert firing is not None and firing["scope"] == "jinmei-parent", webhook.requests
            status = wait_until(lambda m=mine: status_is(mosquitto, "offline", m), 10)
            assert status and status["reason"] == "worker_dead", status
        again = run(tmp_path, mosquitto, config)
        try:
            assert wait_until(lambda: all(received(webhook, "monitoring_offline",
                                                   "worker_dead", "resolved", m)
                                          for m in MINES), 30), webhook.requests
        finally:
            assert stop(again) == 0, log.read_text()[-3000:]
    for mine in MINES:
        assert received(webhook, "monitoring_offline", "worker_dead", "resolved", mine)["id"] \
            == received(webhook, "monitoring_offline", "worker_dead", "firing", mine)["id"]


@pytest.mark.integration
def test_sighup_restarts_every_worker_on_a_changed_file_and_retires_removed_sensors(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A reload with workers: the parent logs what changed and starts each worker again
    cleanly on the new files; the open alarm of a sensor removed from the file is resolved as
    removed from configuration (never left open for good); ingest goes on; a SIGHUP with the
    files unchanged leaves the workers running."""
    (tmp_path / "mines").mkdir()
    for mine in MINES:
        shutil.copy(SHIPPED / "mines" / f"{mine}.toml", tmp_path / "mines")
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(SHIPPED / "mines"), str(tmp_path / "mines"))
                      + '[alerts]\nresolve_hold_s = 0.0\n')
    alerts = Listener(mosquitto, "jinmei/+/alerts")
    proc = run(tmp_path, mosquitto, config)
    log = tmp_path / "jinmei.log"
    db = tmp_path / "readings.db"
    try:
        wait_online(mosquitto, log)
        send(mosquitto, [("jinmei/qipanjing/telemetry/S01", encode_telemetry(
            int(time.time() * 1000) - 5000, [("T0-1101", 1.2, "ok")]))])
        (firing,) = [a for _, a in alerts.wait_for(
            lambda m: m[1]["sensor"] == "T0-1101" and m[1]["state"] == "firing")]
        before = {k: worker_pid(proc.pid, k) for k in (0, 1)}
        proc.send_signal(signal.SIGHUP)  # unchanged: nothing to restart
        assert wait_until(lambda: "configuration unchanged" in log.read_text(), 10)
        assert {k: worker_pid(proc.pid, k) for k in (0, 1)} == before

        mines_file = tmp_path / "mines" / "qipanjing.toml"
        text = mines_file.read_text()
        cut = text.index('[[sensors]]\nid = "T0-1101"')
        mines_file.write_text(text[:cut] + text[text.index("[[sensors]]", cut + 1):])
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: all(worker_pid(proc.pid, k) not in (None, before[k])
                                      for k in (0, 1)), 30), log.read_text()[-3000:]
        (resolved,) = [a for _, a in alerts.wait_for(
            lambda m: m[1]["sensor"] == "T0-1101" and m[1]["state"] == "resolved", 30)]
        start_ms = int(time.time() * 1000) - 600_000
        send(mosquitto, telemetry("dayan", range(5), start_ms)
             + telemetry("qipanjing", range(5), start_ms))
        assert wait_until(lambda: set(stored(db)) == set(MINES), 30), log.read_text()[-3000:]
        text = log.read_text()
        assert "reload: sensors removed: qipanjing/T0-1101" in text
        assert text.count("stopped; since start") == 2, "each worker stopped cleanly once"
        assert "exited (" not in text, "a reload is not a failure"
    finally:
        alerts.close()
        assert stop(proc) == 0, log.read_text()[-3000:]
    assert resolved["id"] == firing["id"]
    assert "removed from configuration" in resolved["message"]
    assert resolved["ended_at"] >= resolved["started_at"]


@pytest.mark.integration
def test_parent_exits_3_when_a_worker_cannot_be_kept_alive(mosquitto: Mosquitto,
                                                          tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the store's folder should be")
    proc = run(tmp_path, mosquitto, write_config(tmp_path),
               store=f"sqlite:///{tmp_path / 'not-a-folder' / 'readings.db'}")
    try:
        code = ended(proc, 120)  # backoff 0.5 + 1 + 2 + 4 + 8 s, and six interpreter starts
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = (tmp_path / "jinmei.log").read_text()
    assert code == EXIT_FAILED, output[-3000:]
    assert "giving up; stopping the other workers" in output


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "expected an integer from 0 to 64, got -1"),
    ("65", "expected an integer from 0 to 64, got 65"),
    ('"two"', "expected an integer, got 'two'")])
def test_workers_setting_is_validated_with_file_and_key(tmp_path: Path, value: str,
                                                        message: str) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("workers = 2", f"workers = {value}"))
    with pytest.raises(ConfigError) as caught:
        load_deployment(config)
    assert caught.value.file == str(config) and "ingest.workers" in caught.value.location
    assert message in caught.value.message


def test_alert_commands_see_every_workers_state(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``jinmei alerts`` reads and writes every worker's alerts state file: history and ack
    find a worker's episode, a silence reaches every worker (and ends in every one)."""
    config = write_config(tmp_path)
    deployment = load_deployment(config)
    registry = deployment.registry
    t1 = registry.index["qipanjing/T1-1101"]
    at = 1_795_536_000_000
    for worker in (0, 1):  # worker 1 holds qipanjing's episode, worker 0 nothing yet
        (tmp_path / "state" / f"worker-{worker}").mkdir(parents=True)
        dispatcher = AlertDispatcher(registry, Names(), AlertRecord(
            tmp_path / "state" / f"worker-{worker}" / "alerts.db"),
            config_hash=deployment.config_hash, publish=lambda t, p: None)
        events = [Event(t1, "limit_power_off", "power_off", "critical", True, at, 1.62, 1.5)]
        dispatcher.apply(events if worker == 1 else [], at)
        dispatcher.close()

    assert main(["alerts", "history", "-c", str(config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["mine"], r["state"]) for r in rows] == [("qipanjing", "firing")]
    assert main(["alerts", "ack", rows[0]["id"], "--by", "wang", "-c", str(config)]) == 0
    capsys.readouterr()
    assert main(["alerts", "silence", "--mine", "dayan", "--duration", "1h", "--by", "li",
                 "--reason", "maintenance", "-c", str(config)]) == 0
    silence = capsys.readouterr().out.split()[1].rstrip(":")
    books = [SilenceBook(StateDB(tmp_path / "state" / f"worker-{k}" / "alerts.db"))
             for k in (0, 1)]
    assert [[s.id for s in book.all()] for book in books] == [[silence], [silence]]
    assert not (tmp_path / "state" / "alerts.db").exists()
    assert main(["alerts", "list", "-c", str(config)]) == 0
    listing = capsys.readouterr().out
    assert listing.count(silence) == 1 and "acknowledged by wang" in listing
    assert main(["alerts", "unsilence", silence, "-c", str(config)]) == 0
    assert all(s.ends_at <= time.time() * 1000 + 1000 for book in books for s in book.all())
