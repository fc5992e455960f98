"""With workers, telemetry of a mine that is not configured is refused by the parent
(jinmei.strays) exactly as one process refuses it, rate-limited, counted, and never taken for a
configured mine's. On a real Mosquitto (and real ``jinmei run`` processes, a real SQLite file).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.broker import with_url
from config.loader import load_deployment
from ingest.codec import encode_telemetry
from jinmei.strays import WINDOW_S, StrayWatcher
from tests.servers import Mosquitto, free_port, wait_until
from tests.test_parent import metric, ready
from tests.test_service import Listener, send
from tests.test_workers import MINES, run, stop, stored, telemetry, write_config

STRAY = "jinmei/nosuchmine/telemetry/S01"
FIELDS = {"reason", "detail", "topic", "received_at", "count", "by_reason", "payload",
          "truncated"}  # the one-process form of a message refused whole (README, "Rejects")


def stray(k: int = 0) -> tuple[str, bytes]:
    return STRAY, encode_telemetry(int(time.time() * 1000) + k, [("T1-1101", 0.3, "ok")])


def rejects_of(listener: Listener, mine: str) -> list[dict[str, Any]]:
    return [body for topic, body in list(listener.messages) if topic == f"jinmei/{mine}/rejects"]


@pytest.fixture
def watcher(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[StrayWatcher]:
    deployment = load_deployment(write_config(tmp_path))
    watching = StrayWatcher(dataclasses.replace(
        deployment, broker=with_url(deployment.broker, mosquitto.url)))
    assert watching.broker.client_id == "jinmei-workers-strays"
    watching.start()
    try:
        assert watching.subscribed.wait(15)
        yield watching
    finally:
        watching.stop()


@pytest.mark.integration
def test_a_flood_of_strays_gives_about_one_reject_a_second_whose_counts_add_up(
        mosquitto: Mosquitto, watcher: StrayWatcher) -> None:
    listener = Listener(mosquitto, "jinmei/+/rejects")
    try:
        started = time.monotonic()
        send(mosquitto, [stray(k) for k in range(40)]
             + [("jinmei//telemetry", b"{}")]  # a hostile topic: bad_topic, as one process says
             + telemetry("dayan", range(3), int(time.time() * 1000)))  # a worker's: ignored
        assert wait_until(lambda: sum(r["count"] for r in rejects_of(listener, "nosuchmine"))
                          == 40, 15), listener.messages
        took = time.monotonic() - started
        refused = rejects_of(listener, "nosuchmine")
        assert refused[0].keys() == FIELDS and refused[0]["count"] == 1
        assert refused[0]["reason"] == "unknown_mine"
        assert refused[0]["detail"] == "mine 'nosuchmine' is not configured"
        assert refused[0]["topic"] == STRAY
        # at most one a window after the first (generous: the window may straddle the burst)
        assert len(refused) <= 2 + took / WINDOW_S, refused
        summary = refused[-1]
        assert summary["by_reason"] == {"unknown_mine": summary["count"]}
        assert listener.wait_for(lambda m: m[0] == "jinmei/unknown/rejects")[0][1]["reason"] \
            == "bad_topic"
        assert watcher.messages == 41
        assert watcher.rejects_by_reason == {"unknown_mine": 40, "bad_topic": 1}
        time.sleep(0.5)  # had dayan's been taken for a stray, its reject would be here now
        assert rejects_of(listener, "dayan") == []
    finally:
        listener.close()


@pytest.mark.integration
def test_the_watcher_comes_back_after_the_broker_restarts(mosquitto: Mosquitto,
                                                          watcher: StrayWatcher) -> None:
    mosquitto.stop()
    assert wait_until(lambda: not watcher.subscribed.is_set(), 10)
    mosquitto.start()
    assert watcher.subscribed.wait(15), "reconnected with the ingest backoff (1 s, 2 s, …)"
    listener = Listener(mosquitto, "jinmei/+/rejects")
    try:
        send(mosquitto, [stray()])
        assert listener.wait_for(lambda m: m[0] == "jinmei/nosuchmine/rejects")
    finally:
        listener.close()


@pytest.mark.integration
def test_with_workers_a_stray_mine_is_rejected_and_configured_mines_stored_once(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, listen=f"127.0.0.1:{port}")
    listener = Listener(mosquitto, "jinmei/+/rejects")
    proc = run(tmp_path, mosquitto, config)
    log = tmp_path / "jinmei.log"
    db = tmp_path / "readings.db"
    try:
        assert wait_until(lambda: ready(port), 30), log.read_text()[-3000:]
        start_ms = int(time.time() * 1000) - 600_000
        send(mosquitto, telemetry("dayan", range(5), start_ms)
             + telemetry("qipanjing", range(5), start_ms))

        def refused() -> bool:  # the parent's subscription may come after the workers'
            send(mosquitto, [stray()])
            return wait_until(lambda: bool(rejects_of(listener, "nosuchmine")), 1.0)
        assert wait_until(refused, 20), log.read_text()[-3000:]
        first = rejects_of(listener, "nosuchmine")[0]
        assert first.keys() == FIELDS and first["reason"] == "unknown_mine"
        assert first["topic"] == STRAY

        per_round = {m: len(telemetry(m, range(1), start_ms)[0][1].split(b'"sensor"')) - 1
                     for m in MINES}
        expected = {m: 5 * per_round[m] for m in MINES}
        assert wait_until(lambda: stored(db) == expected, 20), (stored(db), expected)
        counted = metric(port, "jinmei_rejects_total")
        assert counted[(("reason", "unknown_mine"),)] >= 1, counted  # the parent's: no worker
        assert metric(port, "jinmei_messages_received_total")[(("mine", ""),)] >= 1
        assert rejects_of(listener, "dayan") == rejects_of(listener, "qipanjing") == []
        assert stored(db) == expected, "each reading stored once"
    finally:
        listener.close()
        code = stop(proc)
    assert code == 0, log.read_text()[-3000:]
