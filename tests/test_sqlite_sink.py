"""SQLiteSink against a real SQLite file, and open_sink's URL handling."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ingest.sqlite as sqlite_module
from alerts.wire import Alert, encode_alert
from config.errors import ConfigError, DeliveryError
from config.model import Registry
from config.readings import ReadingBatch, Status
from ingest.influx import InfluxSink
from ingest.sink import open_sink
from ingest.sqlite import SQLiteSink
from tests.servers import sample_sensor

SENSORS = [sample_sensor("dayan", "CO-1102", "co", "longwall_return"),
           sample_sensor("dayan", "T0-1101", "ch4", "longwall_upper_corner"),
           sample_sensor("qipanjing", "T1-2201", "ch4", "heading_face")]
T0 = 1_795_614_332_500


@pytest.fixture
def registry() -> Registry:
    return Registry.from_sensors(SENSORS)


@pytest.fixture
def sink(tmp_path: Path, registry: Registry):
    store = SQLiteSink(tmp_path / "readings.db", registry)
    yield store
    store.close()


def make_batch(n: int, start: int = T0) -> ReadingBatch:
    rng = np.random.default_rng(n)
    sensor = np.arange(n, dtype=np.int32) % len(SENSORS)
    return ReadingBatch(sensor, start + np.arange(n, dtype=np.int64) * 1000,
                        rng.random(n) * 4,
                        (np.arange(n) % 3 * int(Status.CALIBRATION)).astype(np.uint16))


def expected_rows(batch: ReadingBatch) -> list[tuple]:
    """What read_readings must return, built one reading at a time (the slow, obvious way)."""
    rows = []
    for i, t, v, s in zip(batch.sensor, batch.ts, batch.value, batch.status, strict=True):
        sensor = SENSORS[int(i)]
        rows.append((sensor.mine, sensor.id, sensor.kind, sensor.location, int(t), float(v),
                     int(s)))
    return sorted(rows)


def an_alert(**changes) -> Alert:
    fields = dict(id="dayan/T0-1101/limit_alarm/1795614332500", mine="dayan", sensor="T0-1101",
                  kind="ch4", rule="limit_alarm", severity="alarm", state="firing", value=1.23,
                  limit=1.0, started_at=T0, ts=T0, message='甲烷超限 1.23% ≥ 1.0% / "CH4" over',
                  condition="alarm_high", unit="%", location="longwall_upper_corner",
                  place="1101上隅角", source="AQ 1029-2019 表1")
    return Alert(**{**fields, **changes})


def test_write_then_read_back_equal(sink: SQLiteSink) -> None:
    batch = make_batch(300)
    sink.write(batch)
    assert sink.read_readings() == expected_rows(batch)
    assert sink.stats() == {"readings": 300, "alerts": 0, "pending": 0, "dead": 0}


def test_readers_filter_by_mine_and_time(sink: SQLiteSink) -> None:
    batch = make_batch(30)
    sink.write(batch)
    since = T0 + 20_000
    assert sink.read_readings(mine="dayan", since_ms=since) == [
        row for row in expected_rows(batch) if row[0] == "dayan" and row[4] >= since]
    assert sink.count_readings() == {"dayan": 20, "qipanjing": 10}


def test_redelivery_is_idempotent_and_a_later_status_wins(sink: SQLiteSink) -> None:
    batch = make_batch(60)
    sink.write(batch)
    sink.write(batch)  # the broker redelivers after a crash before the ack
    assert sink.count_readings() == {"dayan": 40, "qipanjing": 20}
    flagged = batch.with_status(batch.status | Status.ALARM)
    sink.write(flagged)
    assert sink.read_readings() == expected_rows(flagged)


def test_database_is_wal_with_full_sync(sink: SQLiteSink) -> None:
    conn = sink._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_survives_reopening(tmp_path: Path, registry: Registry) -> None:
    batch = make_batch(50)
    first = SQLiteSink(tmp_path / "readings.db", registry)
    first.write(batch)
    first.close()
    again = SQLiteSink(tmp_path / "readings.db", registry)
    assert again.read_readings() == expected_rows(batch)
    again.close()


def test_readings_are_keyed_by_time_first(sink: SQLiteSink) -> None:
    """Each batch lands at the end of the key (write speed does not fall as the file grows)."""
    key = [row[2] for row in
           sink._conn.execute("PRAGMA index_info(sqlite_autoindex_reading_data_1)")]
    assert key == ["ts", "sensor_id"]
    columns = [row[1] for row in sink._conn.execute("PRAGMA table_info(reading_data)")]
    assert columns == ["sensor_id", "ts", "value", "status"]


# The wide readings table of jinmei before the narrow schema, time-first and sensor-first.
WIDE_TABLE = ("CREATE TABLE reading (mine TEXT NOT NULL, sensor TEXT NOT NULL, "
              "kind TEXT NOT NULL, location TEXT NOT NULL, ts INTEGER NOT NULL, "
              "value REAL NOT NULL, status INTEGER NOT NULL, PRIMARY KEY ({key})) WITHOUT ROWID")


def write_wide_file(path: Path, key: str, n: int) -> list[tuple]:
    """A file as the wide schema wrote it, with ``n`` readings of the three SENSORS plus
    readings the registry no longer knows: a sensor since removed, and CO-1102 at an earlier
    location. Returns its rows, ordered as read_readings orders them."""
    rows = expected_rows(make_batch(n))
    rows += [("dayan", "T9-1109", "ch4", "heading_face", T0 + k, 0.25, 0) for k in range(5)]
    rows += [("dayan", "CO-1102", "co", "heading_return", T0 - 1000 * k, 3.5, 4)
             for k in range(1, 4)]
    rows.sort()
    with sqlite3.connect(path) as old:
        old.execute(WIDE_TABLE.format(key=key))
        old.executemany("INSERT INTO reading VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    old.close()
    return rows


@pytest.mark.parametrize("key", ["ts, mine, sensor", "mine, sensor, ts"])
def test_a_file_of_the_wide_schema_is_migrated_and_every_reading_found(
        tmp_path: Path, registry: Registry, key: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "MIGRATE_CHUNK_ROWS", 7)  # many chunks, some ts split
    rows = write_wide_file(tmp_path / "readings.db", key, 200)
    store = SQLiteSink(tmp_path / "readings.db", registry)
    try:
        assert store.read_readings() == rows
        kinds = dict(store._conn.execute("SELECT name, type FROM sqlite_master "
                                         "WHERE name LIKE 'reading%'"))
        assert kinds == {"reading": "view", "reading_data": "table"}
        # New readings go into the migrated file; a redelivered old one is not doubled.
        store.write(make_batch(200))
        store.write(make_batch(10, start=T0 + 10_000_000))
        assert store.read_readings() == sorted(rows + expected_rows(
            make_batch(10, start=T0 + 10_000_000)))
    finally:
        store.close()


def test_a_migration_killed_midway_resumes_without_loss(tmp_path: Path) -> None:
    """SIGKILL after the third chunk's commit: the next open finds the copy half done,
    finishes it, and every reading is there once."""
    path = tmp_path / "readings.db"
    rows = write_wide_file(path, "ts, mine, sensor", 300)
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.test_sqlite_sink import SENSORS
        from config.model import Registry
        import ingest.sqlite as s
        s.MIGRATE_CHUNK_ROWS = 25
        copy, done = s._migrate_chunk, []
        def killing(conn):
            more = copy(conn)
            done.append(more)
            if len(done) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return more
        s._migrate_chunk = killing
        s.SQLiteSink({str(path)!r}, Registry.from_sensors(SENSORS))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=False)
    assert done.returncode == -9
    with sqlite3.connect(path) as half:
        legacy = half.execute("SELECT count(*) FROM reading_legacy").fetchone()[0]
        copied = half.execute("SELECT count(*) FROM reading_data").fetchone()[0]
        mark = half.execute("SELECT copied_to_ts FROM reading_migration").fetchone()[0]
    half.close()
    assert legacy == len(rows) and 0 < copied < len(rows)
    assert copied == sum(1 for r in rows if r[4] <= mark)  # whole chunks, up to the mark
    again = SQLiteSink(path, Registry.from_sensors(SENSORS))
    try:
        assert again.read_readings() == rows
    finally:
        again.close()


def test_written_batch_survives_a_killed_process(tmp_path: Path) -> None:
    """The writer is SIGKILLed right after write() returns, without close(): the rows must
    be in the file (committed, not waiting in a buffer)."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.test_sqlite_sink import SENSORS, make_batch
        from config.model import Registry
        from ingest.sqlite import SQLiteSink
        sink = SQLiteSink({str(tmp_path / "killed.db")!r}, Registry.from_sensors(SENSORS))
        sink.write(make_batch(90))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=False)
    assert done.returncode == -9
    reopened = SQLiteSink(tmp_path / "killed.db", Registry.from_sensors(SENSORS))
    assert reopened.read_readings() == expected_rows(make_batch(90))
    reopened.close()


def test_alerts_round_trip_with_every_field(sink: SQLiteSink) -> None:
    firing = an_alert()
    resolved = an_alert(state="resolved", ts=T0 + 60_000, value=0.8, ended_at=T0 + 60_000)
    silent = an_alert(id="dayan/CO-1102/no_data/1", sensor="CO-1102", kind="co", rule="no_data",
                      severity="warning", value=math.nan, limit=math.nan, ts=T0 + 5)
    sink.write_alerts([firing, resolved, silent])
    sink.write_alerts([firing])  # a transition sent twice is stored once
    stored = sink.read_alerts()
    # encode_alert compares every field, and NaN (no reading) as null on both sides
    assert [encode_alert(a) for a in stored] == [encode_alert(a) for a in
                                                 (firing, silent, resolved)]
    assert sink.read_alerts(mine="qipanjing") == []
    assert sink.stats()["alerts"] == 4


def test_write_after_close_is_a_permanent_delivery_error(tmp_path: Path,
                                                         registry: Registry) -> None:
    store = SQLiteSink(tmp_path / "readings.db", registry)
    store.close()
    with pytest.raises(DeliveryError) as caught:
        store.write(make_batch(3))
    assert caught.value.retryable is False


def test_a_locked_database_is_a_retryable_delivery_error(tmp_path: Path,
                                                         registry: Registry) -> None:
    store = SQLiteSink(tmp_path / "readings.db", registry)
    store._conn.execute("PRAGMA busy_timeout = 0")  # fail at once instead of waiting 10 s
    other = sqlite3.connect(tmp_path / "readings.db")
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    with pytest.raises(DeliveryError) as caught:
        store.write(make_batch(3))
    assert caught.value.retryable is True
    other.rollback()
    store.write(make_batch(3))  # the failed batch left nothing half-written; retry works
    assert store.count_readings() == {"dayan": 2, "qipanjing": 1}
    other.close()
    store.close()


@pytest.mark.parametrize("url, relative", [
    ("sqlite:///var/jinmei/readings.db", True),
    ("sqlite:////{tmp}/abs/readings.db", False),
])
def test_open_sink_sqlite_paths(url: str, relative: bool, tmp_path: Path, registry: Registry,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    store = open_sink(url.format(tmp=str(tmp_path).lstrip("/")), registry, state_dir=tmp_path)
    store.write(make_batch(3))
    store.close()
    expected = workdir / "var/jinmei/readings.db" if relative else tmp_path / "abs/readings.db"
    assert isinstance(store, SQLiteSink) and store.path.resolve() == expected
    assert expected.exists()


def test_open_sink_influx_url(tmp_path: Path, registry: Registry) -> None:
    store = open_sink("influxdbs://tsdb.example:8443?org=jinmei&bucket=mines", registry,
                      state_dir=tmp_path, influx_token="secret")
    store.close()
    assert isinstance(store, InfluxSink)
    assert store.name == "influxdb:https://tsdb.example:8443/mines"
    assert (tmp_path / "spool.db").exists()


@pytest.mark.parametrize("url, says", [
    ("postgres://db/jinmei", "expected a sqlite:///path.db or influxdb://"),
    ("sqlite://host/readings.db", "expected sqlite:///relative/path.db"),
    ("sqlite:///", "expected sqlite:///relative/path.db"),
    ("influxdb://127.0.0.1:8086?org=jinmei", "missing bucket"),
    ("influxdb://127.0.0.1:8086", "missing org; missing bucket"),
    ("influxdb://127.0.0.1:8086?org=o&bucket=b&precision=s", "unknown parameter precision"),
    ("influxdb://127.0.0.1:http?org=o&bucket=b", "bad port"),
    ("influxdb://?org=o&bucket=b", "missing host"),
])
def test_open_sink_rejects_bad_urls(url: str, says: str, tmp_path: Path,
                                    registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        open_sink(url, registry, state_dir=tmp_path)
    assert caught.value.file == "store.url" and caught.value.location == ""
    assert says in caught.value.message
    assert not (tmp_path / "spool.db").exists()


def test_readings_are_stored_from_a_worker_while_another_thread_reads(
        sink: SQLiteSink) -> None:
    """check_same_thread=False plus the lock: a CLI summary may read during ingest."""
    counts: list[dict[str, int]] = []

    def summarize() -> None:
        for _ in range(50):
            counts.append(sink.count_readings())

    reader = threading.Thread(target=summarize)
    reader.start()
    for k in range(20):
        sink.write(make_batch(30, start=T0 + k * 1_000_000))
    reader.join()
    assert sink.count_readings() == {"dayan": 400, "qipanjing": 200}
    seen = [c.get("dayan", 0) for c in counts]
    assert len(seen) == 50 and seen == sorted(seen)
    assert all(n % 20 == 0 for n in seen)  # a reader sees whole batches or nothing of one


def test_an_alert_table_from_before_the_late_field_gains_it_and_keeps_its_rows(
        tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "readings.db"
    with sqlite3.connect(path) as db:  # the alert table as written before ``late`` (issue 18)
        db.execute('CREATE TABLE alert (id TEXT NOT NULL, mine TEXT NOT NULL, sensor TEXT NOT '
                   'NULL, kind TEXT NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, state '
                   'TEXT NOT NULL, value REAL, "limit" REAL, started_at INTEGER NOT NULL, ts '
                   'INTEGER NOT NULL, message TEXT NOT NULL, condition TEXT NOT NULL, unit TEXT '
                   'NOT NULL, location TEXT NOT NULL, place TEXT NOT NULL, source TEXT NOT NULL, '
                   'scope TEXT NOT NULL, ended_at INTEGER, version INTEGER NOT NULL, '
                   'PRIMARY KEY (id, state, ts)) WITHOUT ROWID')
        db.execute("INSERT INTO alert VALUES ('old', 'dayan', 'T0-1101', 'ch4', 'limit_alarm', "
                   "'alarm', 'firing', 1.2, 1.0, 1, 1, 'm', 'alarm_high', '%', 'l', 'p', 's', "
                   "'', NULL, 1)")
    store = SQLiteSink(path, registry)
    try:
        late = an_alert(late=True)
        store.write_alerts([late])
        old, new = store.read_alerts()
        assert (old.id, old.late) == ("old", False) and new == late
    finally:
        store.close()


_OPEN_AT = """
import sys, time
from config.loader import load_deployment
from ingest.sqlite import SQLiteSink
registry = load_deployment(None).registry
while time.time() < float(sys.argv[2]):
    pass
SQLiteSink(sys.argv[1], registry).close()
"""


def test_two_processes_opening_one_new_store_at_once_both_open_it(tmp_path: Path) -> None:
    """Two workers starting on one new SQLite store: turning the file to WAL needs it alone,
    and SQLite refused the second opener at once ("database is locked": 13 of 15 such starts
    before the wait in config.durable)."""
    for attempt in range(5):
        db = tmp_path / f"try{attempt}" / "readings.db"
        at = time.time() + 1.0
        openers = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, str(db), str(at)],
                                    cwd=Path(__file__).parent.parent, stderr=subprocess.PIPE,
                                    text=True)
                   for _ in range(2)]
        for opener in openers:
            _, err = opener.communicate(timeout=60)
            assert opener.returncode == 0, err
