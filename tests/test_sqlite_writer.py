"""The SQLite writer process (ingest/sqlite_writer.py): the readings committed by a process of
their own, and what happens when it dies or cannot run — on real SQLite files, real writer
processes and, for the service, a real Mosquitto:

- the rows reach the file through another process, and ``write`` returns after the commit;
- a writer killed with SIGKILL is a retryable error, the next write starts another and
  nothing is lost; the service's writer killed mid-stream loses no reading;
- killing the service (SIGKILL) ends its writer, and the restarted service stores every
  reading the killed one had not committed (ack after commit);
- a writer that dies each time keeps the store failing (``/readyz``: not ready) until it runs
  again — never a silent stop;
- a row SQLite refuses for good and a full disk are answered as such.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.errors import DeliveryError
from config.loader import DEFAULT_DEPLOYMENT
from config.model import Registry
from ingest.sqlite import SQLiteSink
from ingest.sqlite_writer import OK, RETRY, serve
from jinmei.service import Service
from tests.servers import Mosquitto, wait_until
from tests.test_service import deployment_for, send
from tests.test_sqlite_sink import SENSORS, expected_rows, make_batch

DIES_AT_ONCE = [sys.executable, "-c", "import os; os._exit(3)"]  # a writer that cannot run
TOPIC = "jinmei/qipanjing/telemetry"


def telemetry(start_ms: int, messages: int, per_message: int = 100) -> list[tuple[str, bytes]]:
    """``messages`` messages of distinct T0-1101 readings, 10 ms apart, well below limits."""
    return [(TOPIC, json.dumps({"ts": start_ms, "readings": [
        {"sensor": "T0-1101", "value": 0.3, "ts": start_ms + (m * per_message + i) * 10}
        for i in range(per_message)]}).encode()) for m in range(messages)]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_readings_are_committed_by_a_process_of_their_own(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "readings.db", Registry.from_sensors(SENSORS))
    try:
        batch = make_batch(500)
        sink.write(batch)
        writer = sink._writer.pid
        assert writer is not None and writer != os.getpid()
        # committed when write returned: a connection of a third process sees every row
        seen = subprocess.run([sys.executable, "-c", (
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
            ".execute('SELECT count(*) FROM reading_data').fetchone()[0])"),
            str(tmp_path / "readings.db")], capture_output=True, text=True, check=True)
        assert seen.stdout.strip() == "500"
        assert sink.read_readings() == expected_rows(batch)
    finally:
        sink.close()
    assert wait_until(lambda: gone(writer), 10)  # closing the sink ends its writer


def test_a_killed_writer_is_started_again_and_nothing_is_lost(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "readings.db", Registry.from_sensors(SENSORS))
    try:
        first, second = make_batch(300), make_batch(300, start=make_batch(300).ts[-1] + 1000)
        sink.write(first)
        killed = sink._writer.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        assert wait_until(lambda: sink._writer._proc is not None
                          and sink._writer._proc.poll() is not None, 10)
        with pytest.raises(DeliveryError) as caught:
            sink.write(second)
        assert caught.value.retryable
        assert f"killed by signal 9, pid {killed}" in str(caught.value)
        sink.write(second)  # what the pipeline does after its backoff
        assert sink._writer.pid not in (None, killed) and sink._writer.started == 2
        assert sink.read_readings() == sorted(expected_rows(first) + expected_rows(second),
                                              key=lambda r: (r[0], r[1], r[4]))
    finally:
        sink.close()


def test_a_row_refused_for_good_is_a_permanent_error(tmp_path: Path) -> None:
    """A file whose readings table refuses a value (a CHECK constraint of the operator's):
    the writer answers "refused", and the pipeline will set the batch aside."""
    path = tmp_path / "readings.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE reading_data (sensor_id INTEGER NOT NULL, ts INTEGER NOT "
                     "NULL, value REAL CHECK (value < 1000), status INTEGER NOT NULL, "
                     "PRIMARY KEY (ts, sensor_id)) WITHOUT ROWID")
    conn.close()
    sink = SQLiteSink(path, Registry.from_sensors(SENSORS))
    try:
        batch = make_batch(10)
        sink.write(batch)
        with pytest.raises(DeliveryError) as caught:
            sink.write(dataclasses.replace(batch, value=np.full(len(batch), 5000.0)))
        assert not caught.value.retryable and "CHECK constraint failed" in str(caught.value)
        assert sink.read_readings() == expected_rows(batch)  # nothing of it half-written
    finally:
        sink.close()


def test_a_full_disk_is_answered_as_retryable(tmp_path: Path) -> None:
    """The writer's loop on a connection that may not grow (SQLITE_FULL, as on a full disk)."""
    path = tmp_path / "readings.db"
    SQLiteSink(path, Registry.from_sensors(SENSORS)).close()
    conn = sqlite3.connect(path)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    n = 5000
    frame = (n.to_bytes(8, "little") + bytes(8 * n) + b"".join(
        i.to_bytes(8, "little") for i in range(n)) + bytes(8 * n) + bytes(2 * n))
    answers = io.BytesIO()
    serve(conn, io.BytesIO(frame), answers)
    said = answers.getvalue()
    assert said[:1] == RETRY and b"database or disk is full" in said[5:]
    conn.execute("PRAGMA max_page_count = 1073741823")
    answers = io.BytesIO()
    serve(conn, io.BytesIO(frame), answers)  # room again: the same frame is committed
    assert answers.getvalue() == OK
    assert conn.execute("SELECT count(*) FROM reading_data").fetchone()[0] == n
    conn.close()


@pytest.mark.integration
def test_the_services_writer_killed_mid_stream_loses_no_reading(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    service = Service(deployment_for(mosquitto, tmp_path, client_id="jinmei-writer-kill"))
    sink: Any = service.sink
    assert service.start(wait_subscribed_s=10)
    try:
        start_ms = int(time.time() * 1000) - 3_600_000
        feed = telemetry(start_ms, 300)
        send(mosquitto, feed[:100])
        stats = service.pipeline.stats
        assert wait_until(lambda: stats.readings_by_mine["qipanjing"] == 10_000, 15)
        killed = sink._writer.pid
        sender = threading.Thread(target=send, args=(mosquitto, feed[100:200]))
        sender.start()  # killed while more streams in (or, on a fast machine, just after)
        assert wait_until(lambda: stats.readings_by_mine["qipanjing"] > 10_000, 15)
        os.kill(killed, signal.SIGKILL)
        sender.join()
        send(mosquitto, feed[200:])  # a batch after the kill, whenever the kill fell
        assert wait_until(lambda: stats.readings_by_mine["qipanjing"] >= 30_000, 30)
        assert sink._writer.pid != killed and sink._writer.started == 2
        stored = {r[4] for r in sink.read_readings(mine="qipanjing")}
    finally:
        service.stop()
    assert stored == {start_ms + i * 10 for i in range(30_000)}


@pytest.mark.integration
def test_a_killed_service_takes_its_writer_along_and_loses_nothing(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """The service in a process of its own (``jinmei run``), SIGKILLed while it stores: its
    writer ends (its pipe closed), and the restarted service stores every reading."""
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-writer-crash")
    first = Service(deployment)  # makes the persistent session the telemetry waits in
    assert first.start(wait_subscribed_s=10)
    first.stop()
    shipped = Path(DEFAULT_DEPLOYMENT).parent
    config = tmp_path / "jinmei.toml"
    config.write_text(f'mines = ["{shipped / "mines" / "qipanjing.toml"}"]\n'
                      f'[broker]\nclient_id = "jinmei-writer-crash"\n'
                      f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    db = tmp_path / "readings.db"
    run = [sys.executable, "-m", "jinmei.cli", "run", "--config", str(config),
           "--broker", mosquitto.url, "--store", f"sqlite:///{db}"]
    start_ms = int(time.time() * 1000) - 3_600_000

    def stored() -> int:
        with sqlite3.connect(db, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM reading_data").fetchone()[0])

    send(mosquitto, telemetry(start_ms, 2000))  # waits in the session
    with open(tmp_path / "run.log", "wb") as log:
        proc = subprocess.Popen(run, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: stored() > 0, 30)
        writers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "ingest.sqlite_writer"],
                                 capture_output=True, text=True).stdout.split()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert stored() < 200_000  # killed while it stored
        assert writers and wait_until(lambda: all(gone(int(w)) for w in writers), 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    service = Service(deployment)
    assert service.start(wait_subscribed_s=10)
    try:
        assert wait_until(lambda: stored() == 200_000, 60), stored()
    finally:
        service.stop()


@pytest.mark.integration
def test_a_writer_that_cannot_run_keeps_the_store_failing_until_it_can(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    deployment = deployment_for(mosquitto, tmp_path, client_id="jinmei-writer-dead")
    deployment = dataclasses.replace(deployment, ingest=dataclasses.replace(
        deployment.ingest, store_fault_after_s=1.0, offline_after_s=2.0))
    service = Service(deployment)
    writer = service.sink._writer  # type: ignore[attr-defined]
    real, writer.command = writer.command, DIES_AT_ONCE
    assert service.start(wait_subscribed_s=10)
    try:
        start_ms = int(time.time() * 1000) - 3_600_000
        send(mosquitto, telemetry(start_ms, 5))
        pipeline = service.pipeline
        assert wait_until(lambda: pipeline.write_failing_since_ms is not None, 15)
        assert "died (exit status 3" in pipeline.store_error
        assert wait_until(lambda: not service.health()[0], 15)  # /readyz: 503
        reasons = service.health()[1]["reasons"]
        assert any(r.get("reason") == "store_failing" for r in reasons), reasons  # type: ignore[union-attr]
        assert service.source.counters["acked"] == 0
        writer.command = real  # the writer can run again: the held batch is stored
        assert wait_until(lambda: pipeline.stats.readings_by_mine["qipanjing"] == 500, 30)
        assert wait_until(lambda: pipeline.write_failing_since_ms is None, 10)
        assert wait_until(lambda: service.health()[0], 15)
    finally:
        service.stop()
