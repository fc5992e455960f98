"""AlertRecord: the durable SQLite record of alert transitions."""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from alerts.episodes import EpisodeBook, Names
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.model import Limits, Registry, Sensor
from config.readings import ReadingBatch
from detectors.limits import LimitDetector
from detectors.suite import LATE_AFTER_MS, DetectorSuite


def alert(id_: str = "a1", state: str = "firing", ts: int = 1_000, mine: str = "dayan",
          rule: str = "limit_alarm", value: float = 1.2) -> Alert:
    return Alert(id=id_, mine=mine, sensor="T1-1101", kind="ch4", rule=rule, severity="alarm",
                 state=state, value=value, limit=1.0, started_at=1_000, ts=ts,
                 message="【报警】…\n[ALARM] …", condition="alarm_high", unit="%",
                 location="longwall_face", place="1101综采工作面", source="AQ 1029-2019",
                 ended_at=ts if state == "resolved" else None)


@pytest.fixture
def record(tmp_path: Path) -> Iterator[AlertRecord]:
    rec = AlertRecord(tmp_path / "alerts.db")
    yield rec
    rec.close()


def test_round_trip_keeps_every_field(record: AlertRecord) -> None:
    fired, resolved = alert(), alert(state="resolved", ts=5_000, value=0.4)
    assert record.append([fired, resolved], config_hash="h1", now_ms=9_000) == 2
    assert record.history() == [fired, resolved]


def test_schema_has_every_alert_field_plus_hash_and_time(tmp_path: Path) -> None:
    AlertRecord(tmp_path / "a.db").close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(alert_transition)")]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert columns == [*Alert.__struct_fields__, "config_hash", "recorded_at"]


def test_config_hash_and_recorded_at_are_stored(tmp_path: Path) -> None:
    with_path = tmp_path / "a.db"
    rec = AlertRecord(with_path)
    rec.append([alert()], config_hash="sha-of-config", now_ms=42)
    rec.close()
    with sqlite3.connect(with_path) as db:
        assert db.execute("SELECT config_hash, recorded_at FROM alert_transition"
                          ).fetchall() == [("sha-of-config", 42)]


def test_append_is_idempotent(record: AlertRecord) -> None:
    batch = [alert(), alert(state="resolved", ts=5_000)]
    assert record.append(batch, "h", 1) == 2
    assert record.append(batch, "h", 2) == 0
    assert record.append([alert(id_="a2")], "h", 3) == 1
    assert len(record.history()) == 3


def test_open_episodes_after_firing_and_resolved(record: AlertRecord) -> None:
    record.append([alert("a1"), alert("a2", ts=2_000), alert("a3", ts=3_000)], "h", 1)
    assert [a.id for a in record.open_episodes()] == ["a1", "a2", "a3"]
    record.append([alert("a2", state="resolved", ts=4_000)], "h", 2)
    assert [a.id for a in record.open_episodes()] == ["a1", "a3"]
    # A redelivered older firing after its resolve does not reopen the episode.
    record.append([alert("a2", ts=2_000)], "h", 3)
    assert [a.id for a in record.open_episodes()] == ["a1", "a3"]


def test_only_a_later_resolve_closes_an_episode(record: AlertRecord) -> None:
    record.append([alert("a1", state="resolved", ts=1_000), alert("a1", ts=2_000)], "h", 1)
    assert [a.ts for a in record.open_episodes()] == [2_000]


def test_open_episode_reports_its_latest_firing_transition(record: AlertRecord) -> None:
    record.append([alert("a1", ts=1_000), alert("a1", ts=1_500, value=1.4)], "h", 1)
    [open_] = record.open_episodes()
    assert (open_.ts, open_.value) == (1_500, 1.4)


def test_history_filters_by_mine_and_time(record: AlertRecord) -> None:
    record.append([alert("d1", ts=1_000), alert("q1", ts=2_000, mine="qipanjing"),
                   alert("d2", ts=3_000)], "h", 1)
    assert [a.id for a in record.history(mine="dayan")] == ["d1", "d2"]
    assert [a.id for a in record.history(since_ms=2_000)] == ["q1", "d2"]
    assert [a.id for a in record.history(mine="dayan", since_ms=2_000)] == ["d2"]


def test_counts_by_mine_rule_state(record: AlertRecord) -> None:
    record.append([alert("a1"), alert("a1", state="resolved", ts=2_000),
                   alert("p1", rule="limit_power_off"),
                   alert("q1", mine="qipanjing")], "h", 1)
    assert record.counts() == {("dayan", "limit_alarm", "firing"): 1,
                               ("dayan", "limit_alarm", "resolved"): 1,
                               ("dayan", "limit_power_off", "firing"): 1,
                               ("qipanjing", "limit_alarm", "firing"): 1}


def test_nan_value_reads_back_as_nan(record: AlertRecord) -> None:
    record.append([alert(value=math.nan)], "h", 1)
    [back] = record.history()
    assert math.isnan(back.value)


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    first = AlertRecord(path)
    first.append([alert("a1"), alert("a2", ts=2_000)], "h", 1)
    first.close()
    again = AlertRecord(path)
    try:
        assert [a.id for a in again.open_episodes()] == ["a1", "a2"]
        assert again.append([alert("a1")], "h", 2) == 0
    finally:
        again.close()


def test_failed_append_records_nothing(record: AlertRecord) -> None:
    broken = msgspec.structs.replace(alert("b1"), message=None)  # violates NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        record.append([alert("ok"), broken], "h", 1)
    assert record.history() == []


def test_concurrent_writer_and_reader(record: AlertRecord) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(200):
                record.append([alert(f"w{i}", ts=i)], "h", i)
        except BaseException as exc:  # surfaced below: a thread's error must fail the test
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        record.counts()
        record.open_episodes()
    writer.join()
    assert errors == []
    assert record.counts() == {("dayan", "limit_alarm", "firing"): 200}


def test_restart_keeps_episode_ids(tmp_path: Path) -> None:
    """Detector → episodes → record, a restart, then the resolve keeps the episode's id."""
    t1 = Sensor("dayan", "T1-1101", "ch4", "%", "longwall_face", "1101综采工作面", "1101",
                "S1", 10.0, 0.0, 4.0, Limits(alarm_high=1.0, power_off=1.5, restore=1.0))
    registry = Registry.from_sensors([t1])
    names = Names()

    def readings(value: float, ts: int) -> ReadingBatch:
        return ReadingBatch(np.zeros(1, np.int32), np.array([ts]), np.array([value]),
                            np.zeros(1, np.uint16))

    detector, book = LimitDetector(registry), EpisodeBook(registry, names, "h")
    record = AlertRecord(tmp_path / "alerts.db")
    fired = book.apply(detector.update(readings(1.7, 1_000), now=1_000).events)
    record.append(fired, book.config_hash, 1_000)
    record.close()

    record = AlertRecord(tmp_path / "alerts.db")
    detector, book = LimitDetector(registry), EpisodeBook(registry, names, "h")
    book.restore(record.open_episodes())
    detector.restore([(0, a.condition) for a in record.open_episodes()])
    resolved = book.apply(detector.update(readings(0.3, 9_000), now=9_000).events)
    record.append(resolved, book.config_hash, 9_000)
    assert sorted(a.id for a in resolved) == sorted(a.id for a in fired)
    assert record.open_episodes() == []
    record.close()


# The alert_transition table as jinmei wrote it before the ``late`` column (issue 18).
_SCHEMA_BEFORE_LATE = """
CREATE TABLE alert_transition (
    id TEXT NOT NULL, mine TEXT NOT NULL, sensor TEXT NOT NULL, kind TEXT NOT NULL,
    rule TEXT NOT NULL, severity TEXT NOT NULL, state TEXT NOT NULL, value REAL, "limit" REAL,
    started_at INTEGER NOT NULL, ts INTEGER NOT NULL, message TEXT NOT NULL,
    condition TEXT NOT NULL, unit TEXT NOT NULL, location TEXT NOT NULL, place TEXT NOT NULL,
    source TEXT NOT NULL, scope TEXT NOT NULL DEFAULT '', ended_at INTEGER,
    version INTEGER NOT NULL, config_hash TEXT NOT NULL, recorded_at INTEGER NOT NULL,
    PRIMARY KEY (id, state, ts));
INSERT INTO alert_transition VALUES ('old', 'dayan', 'T1-1101', 'ch4', 'limit_alarm', 'alarm',
    'firing', 1.2, 1.0, 1000, 1000, 'm', 'alarm_high', '%', 'longwall_face', 'p', 's', '',
    NULL, 1, 'h0', 1000);
"""


def test_a_file_from_before_the_late_field_is_migrated_and_keeps_its_alerts(
        tmp_path: Path) -> None:
    path = tmp_path / "alerts.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_BEFORE_LATE)
    rec = AlertRecord(path)
    try:
        (old,) = rec.history()
        assert old.id == "old" and old.late is False
        late = msgspec.structs.replace(alert("new", ts=2_000), late=True)
        assert rec.append([late], "h1", 3_000) == 1
        assert rec.history() == [old, late]
    finally:
        rec.close()
    AlertRecord(path).close()  # opening a migrated file again changes nothing
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(alert_transition)")]
    assert columns.count("late") == 1


def test_late_events_become_late_alerts_and_say_so() -> None:
    registry = Registry.from_sensors([Sensor("dayan", "T1-1101", "ch4", "%", "longwall_face",
                                             "", "1101", "S01", 10.0, 0.0, 4.0,
                                             Limits(alarm_high=1.0, release_high=1.0))])
    limits = LimitDetector(registry)
    suite = DetectorSuite([limits])
    now = 10_000_000
    live = suite.update(ReadingBatch(np.array([0], np.int32), np.array([now - 1_000]),
                                     np.array([1.2]), np.zeros(1, np.uint16)), now).events
    resent = suite.update(ReadingBatch(np.array([0], np.int32),
                                       np.array([now - LATE_AFTER_MS - 1]), np.array([0.4]),
                                       np.zeros(1, np.uint16)), now).events
    assert [e.late for e in live] == [False] and [e.late for e in resent] == [True]
    book = EpisodeBook(registry, Names({}, {}))
    fired, resolved = book.apply(live + resent)
    assert not fired.late and "补传" not in fired.message
    assert resolved.late and resolved.started_at == now - 1_000
    assert "补传" in resolved.message and ", late)" in resolved.message
    assert msgspec.json.decode(msgspec.json.encode(resolved))["late"] is True
