"""Never blind: nothing in one message stops ingest, and no store error blocks it for good.

On real servers: a real Mosquitto and the running service; a real process killed by a
message and restarted; real SQLite on a real full filesystem (a tmpfs mounted for the test)
and refusing a batch through a real trigger.

- a detector with a bug that raises on one sensor's reading: every other mine still alarms on
  time (a power-off alerts within 1 s), the message is rejected ``internal_error``, the error
  is logged once, every reading is stored;
- a message that kills the process: after ``quarantine_after`` deaths it is quarantined
  (dead letter, acknowledged, rejected) and the rest is ingested — no crash loop;
- a full disk under the alert record is the machine's fault, never a message's: nothing is
  rejected or quarantined, the batch waits unacknowledged for the next start;
- the store's filesystem is full: the readings are held unacknowledged, ``store_fault``'s
  inputs say so, and once space returns everything is stored, nothing lost;
- the store refuses a batch for good: it is dead-lettered and acknowledged, its alerts are
  in the record, and the next messages flow;
- InfluxDB unreachable: the readings wait in the spool and ``store_fault``'s inputs say so
  until it is back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.record import AlertRecord
from config.readings import ReadingBatch
from detectors.base import Detection
from detectors.suite import DetectorSuite, build_detectors
from ingest.codec import encode_telemetry
from ingest.deadletter import DeadLetters
from jinmei.service import Service
from tests.servers import Mosquitto, free_port, victoria_metrics, wait_until
from tests.test_service import Listener, deployment_for, methane_rise, send

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
POISONED = "dayan/T1-1201"  # the sensor whose reading sets off the injected bug
DAYAN = "jinmei/dayan/telemetry/S01"
QIPANJING = "jinmei/qipanjing/telemetry/S01"


class RaisesOn:
    """A detector with a bug: any batch holding a reading of ``sensor`` makes it raise."""

    conditions: tuple[str, ...] = ()

    def __init__(self, sensor: int) -> None:
        self.sensor = sensor

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        if (batch.sensor == self.sensor).any():
            raise RuntimeError(f"injected bug on sensor {self.sensor}")
        return Detection([], np.zeros(len(batch), dtype=np.uint16))

    def active(self) -> list[tuple[int, str]]:
        return []

    def restore(self, active: list[tuple[int, str]]) -> None:
        pass


@pytest.fixture
def listener(mosquitto: Mosquitto) -> Iterator[Listener]:
    listening = Listener(mosquitto, "jinmei/+/alerts", "jinmei/+/rejects")
    yield listening
    listening.close()


def poisoned(ts: int) -> tuple[str, bytes]:
    """A dayan message with the poisoned sensor's reading and a good one beside it."""
    return DAYAN, encode_telemetry(ts, [("T1-1201", 0.3, "ok"), ("T0-1201", 0.2, "ok")])


def test_a_detector_that_raises_on_one_reading_leaves_every_other_mine_alarming_on_time(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-isolation")
    registry = deployment.registry
    # The bug sits last in the suite: every real detector has taken the batch when it raises.
    suite = DetectorSuite([*build_detectors(registry, deployment.detectors).members,
                           RaisesOn(registry.index[POISONED])])
    warm = Service(deployment)
    assert warm.start(wait_subscribed_s=10)
    warm.stop()  # the broker keeps the session, and what comes for it, from here
    now = int(time.time() * 1000) - 30_000
    service = Service(deployment, detectors=suite)
    caplog.set_level(logging.ERROR, logger="jinmei.pipeline")
    # Sent while the service is down, so the first batch holds the culprit and good messages.
    send(mosquitto, [(DAYAN, encode_telemetry(now, [("T0-1201", 0.21, "ok")])), poisoned(now + 1),
                     (DAYAN, encode_telemetry(now + 2, [("T0-1201", 0.22, "ok")]))])
    assert service.start(wait_subscribed_s=10)
    try:
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["dayan"] == 4, 15)
        # The culprit comes again, and a power-off on another mine right behind it.
        mine = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="substations")
        mine.connect("127.0.0.1", mosquitto.port)
        mine.loop_start()
        try:
            mine.publish(*poisoned(now + 10_000), qos=1)
            published = time.monotonic()
            mine.publish(QIPANJING, encode_telemetry(now + 10_000, [("T1-1101", 1.62, "ok")]),
                         qos=1)
            listener.wait_for(lambda m: m[0] == "jinmei/qipanjing/alerts"
                              and m[1]["rule"] == "limit_power_off", timeout=5)
            alerted_after = time.monotonic() - published
        finally:
            mine.loop_stop()
            mine.disconnect()
        send(mosquitto, [(DAYAN, encode_telemetry(now + 20_000, [("T0-1201", 0.23, "ok")]))])
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["dayan"] == 7, 15)
        stored = service.sink.read_readings()  # type: ignore[attr-defined]
    finally:
        service.stop()
    assert alerted_after < 1.0, f"power-off alerted {alerted_after:.2f} s after it was sent"
    rejects = [m for t, m in listener.messages if t == "jinmei/dayan/rejects"]
    assert [r["reason"] for r in rejects] == ["internal_error", "internal_error"]
    assert all("RaisesOn" in r["detail"] and "injected bug" in r["detail"] for r in rejects)
    assert json.loads(rejects[0]["payload"]) == json.loads(poisoned(now + 1)[1])
    assert service.pipeline.stats.rejects_by_reason["internal_error"] == 2
    # every reading stored, the culprits' too: the other detectors judged them
    assert sorted((r[1], r[4]) for r in stored if r[0] == "dayan") == [
        ("T0-1201", now), ("T0-1201", now + 1), ("T0-1201", now + 2), ("T0-1201", now + 10_000),
        ("T0-1201", now + 20_000), ("T1-1201", now + 1), ("T1-1201", now + 10_000)]
    # logged in full once, however often it happens
    tracebacks = [r for r in caplog.records if r.exc_info and "injected bug" in str(r.exc_info[1])]
    assert len(tracebacks) == 1


def run_crashing(broker: Mosquitto, workdir: Path) -> subprocess.Popen[str]:
    """Start tests/crashing_service.py; returns once it is subscribed or already dead (the
    message that kills it may come before it says it is ready)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.crashing_service", broker.url, str(workdir), POISONED],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    with process.stdout:  # "ready", or nothing if it died first (its log goes to stderr)
        process.stdout.readline()
    return process


def outcome(process: subprocess.Popen[str], listener: Listener) -> int:
    """The exit code: of its death, or 0 once it has quarantined a message and is stopped."""
    deadline = time.monotonic() + 30
    while process.poll() is None:
        if time.monotonic() >= deadline:
            process.kill()  # never left behind holding the broker session
            process.wait()
            raise AssertionError("neither died nor quarantined anything")
        if any(m.get("reason") == "internal_error" for _, m in listener.messages):
            process.terminate()
            return process.wait(30)
        time.sleep(0.1)
    return process.returncode


def test_a_message_that_kills_the_process_is_quarantined_not_a_crash_loop(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path) -> None:
    """The bug here ends the process (``os._exit``, as a segfault would): no exception to
    catch. The message comes back after every restart; each time it is in hand when the
    process dies, and at the third death (``quarantine_after = 3``) it is set aside."""
    first = run_crashing(mosquitto, tmp_path)
    now = int(time.time() * 1000) - 60_000
    good = [(DAYAN, encode_telemetry(now + i, [("T0-1201", 0.2, "ok")])) for i in range(6)]
    send(mosquitto, [*good[:3], poisoned(now + 100), *good[3:]])
    exits = [outcome(first, listener)]
    while exits[-1] != 0 and len(exits) <= 4:  # up to quarantine_after + 1 starts
        exits.append(outcome(run_crashing(mosquitto, tmp_path), listener))
    assert exits == [1, 1, 1, 0]

    (reject,) = [m for t, m in listener.messages if t == "jinmei/dayan/rejects"]
    assert reject["reason"] == "internal_error"
    assert "quarantined after 3 deliveries" in reject["detail"]
    letters = DeadLetters(tmp_path / "state" / "deadletter.db")
    try:
        (letter,) = letters.list()
    finally:
        letters.close()
    assert (letter.origin, letter.topic, letter.body) == ("quarantine", *poisoned(now + 100))
    with sqlite3.connect(tmp_path / "readings.db") as db:
        stored = sorted(ts for (ts,) in db.execute("SELECT ts FROM reading WHERE mine = 'dayan'"))
    assert stored == [now + i for i in range(6)]  # the others all in, the culprit not
    # Acknowledged: one more start gets nothing again and lives.
    again = run_crashing(mosquitto, tmp_path)
    time.sleep(2)
    assert again.poll() is None
    again.terminate()
    assert again.wait(30) == 0


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs) that a test can fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no room left; returns it."""
    filler = directory / "filler"
    try:
        with filler.open("wb") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    except OSError:  # the write, or the close flushing what the failed write left buffered
        pass
    return filler


def test_a_full_filesystem_holds_the_readings_until_space_returns(
        mosquitto: Mosquitto, small_filesystem: Path, tmp_path: Path) -> None:
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-full")
    deployment = dataclasses.replace(deployment, store=dataclasses.replace(
        deployment.store, url=f"sqlite:///{small_filesystem / 'readings.db'}"))
    service = Service(deployment)
    assert service.start(wait_subscribed_s=10)
    pipeline = service.pipeline
    try:
        filler = fill(small_filesystem)
        start_ms = int(time.time() * 1000) - 60_000
        before = time.time() * 1000
        send(mosquitto, methane_rise(start_ms))
        assert wait_until(lambda: pipeline.store_failing_since_ms is not None, 15)
        assert "full" in pipeline.store_error
        assert before - 1000 <= (pipeline.store_failing_since_ms or 0) <= time.time() * 1000
        time.sleep(2)  # retried meanwhile, and still held
        assert pipeline.stats.store_retries >= 2
        assert service.source.counters["acked"] == 0
        assert pipeline.stats.readings_by_mine["qipanjing"] == 0
        filler.unlink()  # space returns
        assert wait_until(lambda: pipeline.stats.readings_by_mine["qipanjing"] == 5, 30)
        assert pipeline.store_failing_since_ms is None and pipeline.store_error == ""
        assert wait_until(lambda: service.source.counters["acked"] == 5, 5)
        stored = sorted(r[4] for r in service.sink.read_readings("qipanjing"))  # type: ignore[attr-defined]
    finally:
        service.stop()
    assert stored == [start_ms + i * 10_000 for i in range(5)]


def test_a_batch_the_store_refuses_for_good_is_set_aside_and_the_next_ones_flow(
        mosquitto: Mosquitto, listener: Listener, tmp_path: Path) -> None:
    """The real SQLite refuses: a trigger on the readings' table aborts any row of one sensor
    (SQLITE_CONSTRAINT), as a constraint the data breaks would."""
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-refused")
    service = Service(deployment)
    with sqlite3.connect(tmp_path / "readings.db") as db:
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON reading_data WHEN NEW.sensor_id IN "
                   "(SELECT id FROM sensor WHERE sensor = 'T1-1101') "
                   "BEGIN SELECT RAISE(ABORT, 'T1-1101 refused by the store'); END")
    assert service.start(wait_subscribed_s=10)
    start_ms = int(time.time() * 1000) - 60_000
    power_off = (QIPANJING, encode_telemetry(start_ms, [("T1-1101", 1.62, "ok"),
                                                        ("T0-1101", 0.3, "ok")]))
    try:
        send(mosquitto, [power_off])
        listener.wait_for(lambda m: m[1].get("rule") == "limit_power_off")
        assert wait_until(lambda: service.pipeline.stats.dead_letters == 1, 15)
        assert wait_until(lambda: service.source.counters["acked"] == 1, 5)
        later = [(QIPANJING, encode_telemetry(start_ms + i * 1000, [("T0-1101", 0.3, "ok")]))
                 for i in range(1, 4)]
        send(mosquitto, later)
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine["qipanjing"] == 3, 15)
        assert service.pipeline.store_failing_since_ms is None
        stored = sorted(r[4] for r in service.sink.read_readings("qipanjing"))  # type: ignore[attr-defined]
    finally:
        service.stop()
    assert stored == [start_ms + i * 1000 for i in range(1, 4)]
    letters = DeadLetters(tmp_path / "state" / "deadletter.db")
    try:
        (letter,) = letters.list()
    finally:
        letters.close()
    assert (letter.origin, letter.topic, letter.body) == ("store", *power_off)
    assert "T1-1101 refused by the store" in letter.reason
    record = AlertRecord(tmp_path / "state" / "alerts.db")
    try:
        rules = {(a.rule, a.state) for a in record.history(mine="qipanjing")}
    finally:
        record.close()
    assert ("limit_power_off", "firing") in rules  # the batch's alert is in the record


def test_an_unreachable_influxdb_is_a_store_fault_while_the_readings_wait_in_the_spool(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """With InfluxDB the worker's writes go to the spool and succeed; the forwarder's failure
    (connection refused: transient) is what ``store_fault`` must see, and its end."""
    port = free_port()
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-influx-down")
    deployment = dataclasses.replace(deployment, store=dataclasses.replace(
        deployment.store, url=f"influxdb://127.0.0.1:{port}?org=jinmei&bucket=jinmei"))
    service = Service(deployment)
    assert service.start(wait_subscribed_s=10)
    pipeline = service.pipeline
    try:
        send(mosquitto, methane_rise(int(time.time() * 1000) - 60_000))
        assert wait_until(lambda: pipeline.stats.readings_by_mine["qipanjing"] == 5, 15)
        assert wait_until(lambda: pipeline.store_failing_since_ms is not None, 15)
        assert "refused" in pipeline.store_error.lower()
        with victoria_metrics(tmp_path, port=port) as vm:
            assert wait_until(lambda: pipeline.store_failing_since_ms is None, 40)
            assert pipeline.store_error == ""
            assert wait_until(lambda: vm.export('{__name__="reading_value"}'), 15)
    finally:
        service.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_full_disk_under_the_alert_record_is_not_blamed_on_the_message(
        mosquitto: Mosquitto, listener: Listener, small_filesystem: Path, tmp_path: Path) -> None:
    """The alert record cannot take the power-off: no message is at fault, so none is rejected
    or marked; the worker stops with the batch unacknowledged (the supervisor's cue), and the
    next start — space back — records and publishes the alarm. Nothing lost, no false
    quarantine however often it happens."""
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-record-full")
    deployment = dataclasses.replace(deployment, ingest=dataclasses.replace(
        deployment.ingest, state_dir=str(small_filesystem / "state")))
    first = Service(deployment)
    assert first.start(wait_subscribed_s=10)
    filler = fill(small_filesystem)
    start_ms = int(time.time() * 1000) - 60_000
    send(mosquitto, [(QIPANJING, encode_telemetry(start_ms, [("T1-1101", 1.62, "ok")]))])
    assert wait_until(lambda: not first._worker.is_alive(), 15)
    assert first.source.counters["acked"] == 0
    assert first.pipeline.stats.rejects_by_reason.total() == 0
    filler.unlink()
    first.stop()

    second = Service(deployment)
    assert not second.pipeline._suspects  # no evidence against the message
    assert second.start(wait_subscribed_s=10)
    try:
        listener.wait_for(lambda m: m[1].get("rule") == "limit_power_off")
        assert wait_until(lambda: second.pipeline.stats.readings_by_mine["qipanjing"] == 1, 15)
    finally:
        second.stop()
    assert not [m for t, m in listener.messages if t.endswith("/rejects")]
