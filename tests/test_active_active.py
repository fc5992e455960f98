"""Active-active: two jinmei instances watch the same mine (own client ids and state_dirs, one
store), one is killed with -9 mid-stream, and the receiver still gets every alert — on a real
Mosquitto, a real SQLite store and a real webhook receiver (an HTTP server on loopback).

What it shows: both instances store (the store is idempotent on (sensor, ts): the rows are
the published readings, once); the retained ``jinmei/<mine>/status`` goes back to ``online``
(the survivor's) after the killed one's Last Will; and both notify with the same
``Idempotency-Key`` for the same transition (alert ids and notification keys are functions of
the readings, not of the instance), so the receiver deduplicating by that key gets every
transition exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from alerts.db import StateDB
from alerts.outbox import Outbox
from config.loader import DEFAULT_DEPLOYMENT
from ingest.codec import encode_telemetry
from tests.servers import Mosquitto, ScriptedServer, scripted_http_server, wait_until
from tests.test_service import Listener, send
from tests.test_supervision import ok, retained_status, status_is

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = Path(DEFAULT_DEPLOYMENT).parent
T1 = "T1-1101"
TOPIC = "jinmei/qipanjing/telemetry/S01"
EPISODES = 6


def write_config(tmp_path: Path, name: str, webhook: ScriptedServer) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'mines = ["{SHIPPED / "mines" / "qipanjing.toml"}"]\n'
        f'[broker]\nclient_id = "jinmei-{name}"\n'
        '[http]\nlisten = ""\n'  # two instances on one host: no operator endpoint here
        f'[ingest]\nstate_dir = "{tmp_path / name}"\n'
        "[alerts]\ngroup_wait_s = 0.5\ngroup_interval_s = 0.5\nresolve_hold_s = 0.0\n"
        '[[alerts.receivers]]\nname = "regulator"\nchannel = "webhook"\n'
        f'url = "{webhook.url}"\nunsigned = true\n'
        '[[alerts.routes]]\nrules = ["limit_power_off"]\nreceivers = ["regulator"]\n',
        encoding="utf-8")
    return config


def start(tmp_path: Path, broker: Mosquitto, config: Path, name: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jinmei.cli", "run", "--config", str(config),
             "--broker", broker.url, "--store", f"sqlite:///{tmp_path / 'readings.db'}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def episode(start_ms: int) -> list[tuple[str, bytes]]:
    """T1-1101 at 0.50 → 1.62 (power-off) → 0.50 %, 10 s apart: one power-off episode."""
    return [(TOPIC, encode_telemetry(start_ms + i * 10_000, [(T1, v, "ok")]))
            for i, v in enumerate((0.50, 1.62, 0.50))]


def received(webhook: ScriptedServer) -> dict[str, list[tuple[tuple[str, str], ...]]]:
    """Idempotency-Key → the (alert id, state) pairs of each request carrying it."""
    by_key: dict[str, list[tuple[tuple[str, str], ...]]] = defaultdict(list)
    for request, headers in zip(list(webhook.requests), list(webhook.headers), strict=False):
        transitions = tuple((a["id"], a["state"]) for a in json.loads(request.body)["alerts"])
        by_key[headers["Idempotency-Key"]].append(transitions)
    return by_key


def outbox_keys(state_dir: Path) -> set[str]:
    db = StateDB(state_dir / "alerts.db")
    try:
        return {row.key for row in Outbox(db).rows()}
    finally:
        db.close()


def test_two_instances_one_killed_every_alert_reaches_the_receiver_once_per_key(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    with scripted_http_server(ok) as webhook:
        first = start(tmp_path, mosquitto, write_config(tmp_path, "a", webhook), "a")
        second = start(tmp_path, mosquitto, write_config(tmp_path, "b", webhook), "b")
        try:
            assert wait_until(lambda: status_is(mosquitto, "online"), 30)
            # Both subscribed: each has its persistent session, so each gets every message.
            assert wait_until(lambda: all(
                b"serving" in (tmp_path / f"{n}.log").read_bytes() for n in "ab"), 30)
            time.sleep(2.0)
            base_ms = int(time.time() * 1000) - 3_600_000
            starts = [base_ms + i * 60_000 for i in range(EPISODES)]
            for at in starts[:2]:
                send(mosquitto, episode(at))
                time.sleep(1.5)  # a group's resolve goes out before the next episode starts
            # Both told the receiver of the first power-off, under one key.
            assert wait_until(lambda: any(len(sent) >= 2 for sent in received(webhook).values()),
                              30), received(webhook)
            statuses = Listener(mosquitto, "jinmei/qipanjing/status")
            first.send_signal(signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
            # a's Last Will says offline; b, still ingesting, says online again (retained).
            assert wait_until(lambda: any(
                m["state"] == "offline" and m.get("last_will") and m["instance"].startswith(
                    "jinmei-a@") for _, m in list(statuses.messages)), 15), statuses.messages
            assert wait_until(lambda: (st := retained_status(mosquitto)) is not None and (
                st["state"], st["instance"].split("@")[0]) == ("online", "jinmei-b"), 15)
            statuses.close()
            for at in starts[2:]:
                send(mosquitto, episode(at))
                time.sleep(1.5)
            expected = 2 * EPISODES  # a firing and a resolve each
            assert wait_until(lambda: len({t for sent in received(webhook).values()
                                           for n in sent for t in n}) == expected, 60), \
                received(webhook)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, (tmp_path / "b.log").read_text()[-3000:]
            if first.poll() is None:
                first.kill()
                first.wait()

        by_key = received(webhook)
        # One key, one content: whichever instance sent it, a key means the same transitions.
        assert all(len(set(sent)) == 1 for sent in by_key.values()), by_key
        deduplicated = [t for sent in by_key.values() for t in sent[0]]
        assert len(deduplicated) == len(set(deduplicated)) == 2 * EPISODES
        assert sorted(state for _, state in deduplicated) == \
            ["firing"] * EPISODES + ["resolved"] * EPISODES
        assert any(len(sent) >= 2 for sent in by_key.values()), "both instances notified"
        # The killed instance's notifications are all among the survivor's, key for key.
        assert outbox_keys(tmp_path / "a") <= outbox_keys(tmp_path / "b") == set(by_key)

    with sqlite3.connect(tmp_path / "readings.db") as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT ts) FROM reading "
                            "WHERE sensor = ?", (T1,)).fetchone()
    assert rows == (3 * EPISODES, 3 * EPISODES), "each reading stored once by two writers"
