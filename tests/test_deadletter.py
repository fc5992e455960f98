"""The dead letters, the crash quarantine's in-hand marks, and SQLite's errors by class — on
real SQLite files (a real constraint, a real lock, a real full database)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.durable import connect_durable, delivery_errors
from config.errors import DeliveryError
from config.loader import DEFAULT_DEPLOYMENT
from ingest.deadletter import DeadLetter, DeadLetters, InHand, fingerprint
from jinmei.cli import main
from simulators.recording import read


@given(st.text(), st.binary(), st.text(), st.binary())
def test_a_fingerprint_is_the_same_for_the_same_message_and_differs_otherwise(
        topic: str, payload: bytes, other_topic: str, other_payload: bytes) -> None:
    assert fingerprint(topic, payload) == fingerprint(topic, payload)
    if (topic, payload) != (other_topic, other_payload):
        assert fingerprint(topic, payload) != fingerprint(other_topic, other_payload)


def test_topic_and_payload_cannot_trade_bytes() -> None:
    assert fingerprint("jinmei/a", b"b") != fingerprint("jinmei/", b"ab")


def test_dead_letters_keep_each_thing_once_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deadletter.db"
    letters = DeadLetters(path)
    poison = DeadLetter("quarantine", "jinmei/dayan/telemetry", b'{"ts": 1}', "crashed 3 times")
    refused = DeadLetter("store", "jinmei/dayan/telemetry", b'{"ts": 1}', "CHECK failed")
    letters.add([poison, refused])
    letters.add([poison])  # set aside again after a crash between the letter and the ack
    letters.close()

    reopened = DeadLetters(path)
    try:
        kept = reopened.list()
        assert reopened.count("quarantine") == 1 and reopened.count() == 2
    finally:
        reopened.close()
    assert [(d.origin, d.topic, d.body, d.reason) for d in kept] == [
        ("quarantine", "jinmei/dayan/telemetry", b'{"ts": 1}', "crashed 3 times"),
        ("store", "jinmei/dayan/telemetry", b'{"ts": 1}', "CHECK failed")]
    assert all(abs(d.at_ms - time.time() * 1000) < 60_000 for d in kept)


def test_in_hand_marks_count_the_deaths_each_message_was_in_hand_at(tmp_path: Path) -> None:
    path = tmp_path / "inhand.db"
    a, b, c = (fingerprint("t", bytes([i])) for i in range(3))
    marks = InHand(path)
    marks.clear(marks.mark([c]))  # handled, and the process lived: no evidence
    marks.mark([a, b, b])  # one message twice in a batch is one delivery
    marks.close()  # ... and the process "died" with a and b in hand

    again = InHand(path)
    assert again.left_over(0) == {a: 1, b: 1}
    again.mark([a])  # a suspect taken alone, and the process died again
    again.forget(b)  # b was handled alone and the process lived
    again.close()

    third = InHand(path)
    assert third.left_over(0) == {a: 2}
    assert third.left_over(int(time.time() * 1000) + 1) == {}  # too old: dropped
    third.close()


def test_in_hand_marks_survive_a_killed_process(tmp_path: Path) -> None:
    """synchronous=NORMAL in WAL: the commit is in the OS's hands once it returns, so a
    process that dies without closing anything leaves its marks."""
    script = ("from ingest.deadletter import InHand; import os; "
              f"InHand({str(tmp_path / 'inhand.db')!r}).mark([b'x' * 16]); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 9
    marks = InHand(tmp_path / "inhand.db")
    try:
        assert marks.left_over(0) == {b"x" * 16: 1}
    finally:
        marks.close()


def _failing(conn: sqlite3.Connection, sql: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught, delivery_errors("test"), conn:
        conn.execute(sql)
    return caught.value


def test_sqlite_errors_by_class(tmp_path: Path) -> None:
    conn = connect_durable(tmp_path / "db.sqlite")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.v = 'bad' "
                 "BEGIN SELECT RAISE(ABORT, 'refused by the store'); END")
    # the data itself refused: never retried
    assert _failing(conn, "INSERT INTO t VALUES (1, NULL)").retryable is False
    assert _failing(conn, "INSERT INTO t VALUES (2, 'bad')").retryable is False
    # a full database (max_page_count makes SQLite answer SQLITE_FULL): held and retried
    conn.execute("PRAGMA max_page_count = 3")
    full = _failing(conn, "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 400) INSERT INTO t SELECT i, hex(randomblob(500)) FROM n")
    assert full.retryable is True and "full" in str(full)
    # locked by another writer: held and retried
    other = sqlite3.connect(tmp_path / "db.sqlite", timeout=0)
    other.execute("BEGIN IMMEDIATE")
    conn.execute("PRAGMA busy_timeout = 0")
    assert _failing(conn, "INSERT INTO t VALUES (3, 'x')").retryable is True
    other.rollback()
    other.close()
    # a closed connection never works again
    conn.close()
    with pytest.raises(DeliveryError) as caught, delivery_errors("test"):
        conn.execute("SELECT 1")
    assert caught.value.retryable is False


def test_jinmei_deadletter_lists_and_exports_for_replay(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    shipped = Path(DEFAULT_DEPLOYMENT).parent
    config = tmp_path / "jinmei.toml"
    config.write_text(f'mines = ["{shipped / "mines" / "dayan.toml"}"]\n'
                      f'[ingest]\nstate_dir = "{tmp_path / "state"}"\n', encoding="utf-8")
    letters = DeadLetters(tmp_path / "state" / "deadletter.db")
    letters.add([DeadLetter("quarantine", "jinmei/dayan/telemetry", b'{"ts": 1, "readings": []}',
                            "quarantined after 3 deliveries"),
                 DeadLetter("spool", "", b"reading,mine=dayan value=1 1", "HTTP 400: bad"),
                 DeadLetter("store", "jinmei/dayan/telemetry/S01", b"\xff binary", "CHECK")])
    letters.close()

    assert main(["deadletter", "list", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "3 dead letters"
    assert "quarantine" in lines[0] and "jinmei/dayan/telemetry" in lines[0] \
        and "quarantined after 3 deliveries" in lines[0] and "+" in lines[0]  # zone offset
    assert main(["deadletter", "list", "--config", str(config), "--origin", "spool"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 dead letters"

    out = tmp_path / "dead.jsonl"
    assert main(["deadletter", "export", "--config", str(config), str(out)]) == 0
    assert [(m.topic, m.payload) for m in read(out)] == [
        ("jinmei/dayan/telemetry", b'{"ts": 1, "readings": []}'),
        ("jinmei/dayan/telemetry/S01", b"\xff binary")]  # the spool's lines are no message
