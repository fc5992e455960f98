"""The embedded store: readings and alert transitions in one SQLite file.

Config: ``store.url = "sqlite:///relative/path.db"`` (relative to the working directory) or
``"sqlite:////absolute/path.db"``; the folder is created if missing.

Schema. Readings are stored narrow, keyed by integers: table ``sensor(id, mine, sensor, kind,
location)`` holds each sensor's tags once, table ``reading_data(sensor_id, ts, value, status)``
one row a reading, keyed by (ts, sensor_id) without a rowid. Readers see the same shape as the
InfluxDB schema (design.md) through the view ``reading(mine, sensor, kind, location, ts, value,
status)`` (``jinmei report daily``, the tests, an operator's ``sqlite3``). Measured with 10,000
sensors and 10,000-reading commits (``bench/bench_sqlite.py``): the narrow row takes 0.57 of
the CPU time of the old seven-column one with four text tags, and two thirds of the bytes.
A sensor's id stands for its four tags together: a reload that moves a sensor to another
location gives it a new id, so stored readings keep the location they were taken at.
Time leads the readings' key, as in a time-series store: each batch then lands at the end of
the B-tree instead of in every sensor's part of it (measured with 10,000 sensors, once 1 M
readings are stored: 250 k rows/s against 31 k with the sensor first); windows of time are the
common query. Table ``alert`` has every :class:`~alerts.wire.Alert` field as a column, keyed by
(id, state, ts); a file whose ``alert`` table predates a field gets that column on open, with
the field's default.

Migration. A file of an earlier version (a wide ``reading`` table, keyed time-first or the
still older sensor-first) is migrated when it is opened, before anything is written: the table
is renamed ``reading_legacy`` and copied into the narrow tables in chunks of
``MIGRATE_CHUNK_ROWS`` readings in time order, each chunk in a transaction of its own that also
records the last time copied (table ``reading_migration``). Killed at any point, the next open
resumes after the last committed chunk; a chunk copied twice writes the same rows again.
Only when everything is copied does the last transaction drop the old table and create the
view. Nothing is lost and nothing is deleted before its copy is committed; the file needs room
for both copies meanwhile (a full disk is a retryable error, the next open goes on). A file
migrated this way cannot be written by an older jinmei (the view is read-only).

Durability: :meth:`SQLiteSink.write` returns only after its transaction is on disk. The
database runs in WAL mode with ``synchronous=FULL``: with ``NORMAL`` a WAL commit is not
fsynced until the next checkpoint, so a power cut could lose batches whose MQTT messages were
already acknowledged. One ``executemany`` in one transaction per batch keeps that to one
fsync per batch. Rows are written with ``INSERT OR REPLACE``: the broker redelivers
unacknowledged messages after a crash, and a redelivered reading must not be stored twice.

Failure behaviour: every SQLite error becomes :class:`~config.errors.DeliveryError`
(:func:`config.durable.delivery_errors`): not retryable when SQLite refused the data itself
(a constraint, a value too big) or the sink is closed — the pipeline then sets the batch aside
as a dead letter; retryable otherwise — busy or locked, disk full (``SQLITE_FULL``), I/O error,
a file it cannot open or a corrupt one: the pipeline holds the messages unacknowledged and
retries until the operator has made room or repaired the file. The transaction is rolled
back, so a failed batch leaves nothing half-written.

Threads: the sink is written from one worker thread; the connection is shared under a lock
so that a CLI summary may read from another thread.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import typing
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from alerts.wire import Alert
from config.durable import connect_durable, delivery_errors
from config.model import Registry
from config.readings import ReadingBatch

__all__ = ["SQLiteSink", "StoredReading"]

log = logging.getLogger(__name__)

# One stored reading: (mine, sensor, kind, location, ts, value, status).
StoredReading = tuple[str, str, str, str, int, float, int]

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}
_ALERT_COLUMNS: tuple[str, ...] = Alert.__struct_fields__


def _alert_column(name: str, hint: typing.Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]  # `int | None` → int
    # Floats stay nullable: SQLite stores NaN (a no_data alert has no value) as NULL.
    null = "" if args or hint is float else " NOT NULL"
    return f'"{name}" {_SQL_TYPES[args[0] if args else hint]}{null}'


_HINTS = typing.get_type_hints(Alert)
_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(Alert)}


def _added_alert_column(name: str) -> str:
    """The column of an alert field added since the file was made, with the field's default."""
    default = _DEFAULTS[name]
    literal = ("NULL" if default is None else
               "'" + default.replace("'", "''") + "'" if isinstance(default, str) else
               str(int(default)))
    return f"{_alert_column(name, _HINTS[name])} DEFAULT {literal}"

_NAN_COLUMNS = frozenset(n for n in _ALERT_COLUMNS if _HINTS[n] is float)
_BOOL_COLUMNS = frozenset(n for n in _ALERT_COLUMNS if _HINTS[n] is bool)

# Statements, not a script: executescript() would commit the migration's open transaction.
_NARROW_TABLES = ("""
CREATE TABLE IF NOT EXISTS sensor (
    id INTEGER PRIMARY KEY, mine TEXT NOT NULL, sensor TEXT NOT NULL, kind TEXT NOT NULL,
    location TEXT NOT NULL, UNIQUE (mine, sensor, kind, location))""", """
CREATE TABLE IF NOT EXISTS reading_data (
    sensor_id INTEGER NOT NULL REFERENCES sensor (id), ts INTEGER NOT NULL,
    value REAL NOT NULL, status INTEGER NOT NULL,
    PRIMARY KEY (ts, sensor_id)) WITHOUT ROWID""")
_SCHEMA = (*_NARROW_TABLES, """
CREATE VIEW IF NOT EXISTS reading AS
    SELECT s.mine, s.sensor, s.kind, s.location, r.ts, r.value, r.status
    FROM reading_data AS r JOIN sensor AS s ON s.id = r.sensor_id""", f"""
CREATE TABLE IF NOT EXISTS alert (
    {", ".join(_alert_column(n, _HINTS[n]) for n in _ALERT_COLUMNS)},
    PRIMARY KEY (id, state, ts)) WITHOUT ROWID""")
_INSERT_READING = "INSERT OR REPLACE INTO reading_data VALUES (?, ?, ?, ?)"
_ALERT_COLUMN_LIST = ", ".join(f'"{n}"' for n in _ALERT_COLUMNS)  # "limit" is an SQL keyword
_INSERT_ALERT = (f"INSERT OR REPLACE INTO alert ({_ALERT_COLUMN_LIST}) "
                 f"VALUES ({', '.join('?' * len(_ALERT_COLUMNS))})")

# Readings copied per migration transaction: large enough that a 100 M-reading file takes
# minutes rather than hours of commits, small enough that a kill loses seconds of work
# (jinmei's own choice).
MIGRATE_CHUNK_ROWS = 200_000


def _object_type(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Move readings of the wide schema of earlier versions into the narrow tables (see the
    module docstring); does nothing for a new or already migrated file."""
    if _object_type(conn, "reading") == "table":
        with conn:  # one transaction: either still the old file, or ready to copy
            conn.execute("BEGIN IMMEDIATE")
            for statement in _NARROW_TABLES:
                conn.execute(statement)
            conn.execute("ALTER TABLE reading RENAME TO reading_legacy")
            first = [row[1] for row in conn.execute("PRAGMA table_info(reading_legacy)")
                     if row[5] == 1]  # the first column of the primary key
            if first != ["ts"]:  # the older sensor-first key: chunks need a time index
                conn.execute("CREATE INDEX reading_legacy_ts ON reading_legacy (ts)")
            conn.execute("CREATE TABLE reading_migration (copied_to_ts INTEGER)")
            conn.execute("INSERT INTO reading_migration VALUES (NULL)")
        log.warning("%s: migrating readings to the narrow schema (resumable if stopped)", path)
    if _object_type(conn, "reading_legacy") != "table":
        return
    copied = 0
    while _migrate_chunk(conn):
        copied += 1
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TABLE reading_legacy")
        conn.execute("DROP TABLE reading_migration")
        for statement in _SCHEMA:
            conn.execute(statement)
    log.warning("%s: readings migrated to the narrow schema (%d chunks this run)", path, copied)


def _migrate_chunk(conn: sqlite3.Connection) -> bool:
    """Copy the next ``MIGRATE_CHUNK_ROWS`` or so readings after the recorded time, in one
    transaction with the new record; False when nothing was left to copy. Whole timestamps
    only, so that a chunk's end is a time and never splits one."""
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        after = conn.execute("SELECT copied_to_ts FROM reading_migration").fetchone()[0]
        after = -(2**63) if after is None else after
        end = conn.execute("SELECT ts FROM reading_legacy WHERE ts > ? ORDER BY ts "
                           "LIMIT 1 OFFSET ?", (after, MIGRATE_CHUNK_ROWS - 1)).fetchone()
        if end is None:
            end = conn.execute("SELECT max(ts) FROM reading_legacy WHERE ts > ?",
                               (after,)).fetchone()
        if end[0] is None:
            return False
        span = (after, end[0])
        conn.execute("INSERT OR IGNORE INTO sensor (mine, sensor, kind, location) "
                     "SELECT DISTINCT mine, sensor, kind, location FROM reading_legacy "
                     "WHERE ts > ? AND ts <= ?", span)
        conn.execute("INSERT OR REPLACE INTO reading_data "
                     "SELECT s.id, r.ts, r.value, r.status FROM reading_legacy AS r "
                     "JOIN sensor AS s USING (mine, sensor, kind, location) "
                     "WHERE r.ts > ? AND r.ts <= ? ORDER BY r.ts, s.id", span)
        conn.execute("UPDATE reading_migration SET copied_to_ts = ?", (end[0],))
    return True


class SQLiteSink:
    """Stores readings and alert transitions in one SQLite file; see the module docstring."""

    def __init__(self, path: str | Path, registry: Registry) -> None:
        self.name = f"sqlite:{path}"
        self.path = Path(path)
        self._lock = threading.Lock()
        self._readings = 0
        self._alerts = 0
        self._tags: list[tuple[str, str, str, str]] = []  # (mine, sensor, kind, location)
        self._sensor_ids: np.ndarray | None = None  # their ids in ``sensor``, once looked up
        with delivery_errors(self.name):
            self._conn = connect_durable(self.path)
            # 64 MiB page cache (default 2 MiB): a migration reads an old table while it
            # writes the new one.
            self._conn.execute("PRAGMA cache_size = -65536")
            # Checkpoint every 10,000 WAL pages (40 MiB; default 1,000): a page rewritten by
            # several batches is copied back once (measured 1.2x more rows/s). Only committed
            # pages are copied, so durability does not change.
            self._conn.execute("PRAGMA wal_autocheckpoint = 10000")
            _migrate(self._conn, self.path)
            for statement in _SCHEMA:
                self._conn.execute(statement)
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(alert)")}
            for name in _ALERT_COLUMNS:
                if name not in have:
                    self._conn.execute(f"ALTER TABLE alert ADD COLUMN {_added_alert_column(name)}")
            self._conn.commit()
        self.use_registry(registry)

    def write(self, batch: ReadingBatch) -> None:
        """Store the batch in one transaction; on disk when this returns."""
        with self._lock, delivery_errors(self.name):
            ids = self._sensor_ids if self._sensor_ids is not None else self._resolve_ids()
            sensor_id = ids[batch.sensor]
            # Inserting in key order touches each B-tree page once (measured 1.4x faster);
            # the sort is stable, so of two readings with one key the later one wins.
            order = np.lexsort((sensor_id, batch.ts))
            # Rows zipped from whole columns: no Python code per reading.
            rows = zip(sensor_id[order].tolist(), batch.ts[order].tolist(),
                       batch.value[order].tolist(), batch.status[order].tolist(), strict=True)
            with self._conn:
                self._conn.executemany(_INSERT_READING, rows)
        self._readings += len(order)

    def _resolve_ids(self) -> np.ndarray:
        """The ``sensor`` id of each sensor of the registry, adding the sensors (with their
        tags) the file does not know yet; committed on its own, since ids never change."""
        with self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO sensor (mine, sensor, kind, location) VALUES (?, ?, ?, ?)",
                self._tags)
        known = {tuple(row[1:]): row[0] for row in self._conn.execute(
            "SELECT id, mine, sensor, kind, location FROM sensor")}
        self._sensor_ids = np.array([known[tags] for tags in self._tags], dtype=np.int64)
        return self._sensor_ids

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store alert transitions in one transaction; on disk when this returns."""
        rows = [tuple(getattr(a, n) for n in _ALERT_COLUMNS) for a in alerts]
        with self._lock, delivery_errors(self.name), self._conn:
            self._conn.executemany(_INSERT_ALERT, rows)
        self._alerts += len(rows)

    def read_readings(self, mine: str | None = None,
                      since_ms: int | None = None) -> list[StoredReading]:
        """(mine, sensor, kind, location, ts, value, status) rows ordered by mine, sensor, ts."""
        sql = "SELECT * FROM reading WHERE (?1 IS NULL OR mine = ?1) AND (?2 IS NULL OR ts >= ?2)"
        with self._lock, delivery_errors(self.name):
            return self._conn.execute(f"{sql} ORDER BY mine, sensor, ts",
                                      (mine, since_ms)).fetchall()

    def count_readings(self) -> dict[str, int]:
        """Number of stored readings per mine."""
        with self._lock, delivery_errors(self.name):
            return dict(self._conn.execute(
                "SELECT s.mine, sum(r.n) FROM (SELECT sensor_id, count(*) AS n FROM reading_data "
                "GROUP BY sensor_id) AS r JOIN sensor AS s ON s.id = r.sensor_id GROUP BY s.mine"))

    def read_alerts(self, mine: str | None = None) -> list[Alert]:
        """Stored alert transitions, oldest first."""
        with self._lock, delivery_errors(self.name):
            rows = self._conn.execute(
                f"SELECT {_ALERT_COLUMN_LIST} FROM alert "
                "WHERE ?1 IS NULL OR mine = ?1 ORDER BY ts, id, state", (mine,)).fetchall()
        return [msgspec.convert({n: math.nan if v is None and n in _NAN_COLUMNS
                                 else bool(v) if n in _BOOL_COLUMNS else v
                                 for n, v in zip(_ALERT_COLUMNS, row, strict=True)}, Alert)
                for row in rows]

    def delivery_fault(self) -> None:
        """Never: every write is synchronous, its error goes to the caller."""
        return None

    def use_registry(self, registry: Registry) -> None:
        """Map sensor indexes of later batches through ``registry`` (at start, and when a
        reload swapped the configuration). Their ids are looked up by the next write, so that
        an error there is that write's error."""
        tags = [(s.mine, s.id, s.kind, s.location) for s in registry.sensors]
        with self._lock:
            self._tags, self._sensor_ids = tags, None

    def stats(self) -> dict[str, int]:
        """Readings and alerts written since open; nothing is ever pending or dead here."""
        return {"readings": self._readings, "alerts": self._alerts, "pending": 0, "dead": 0}

    def close(self) -> None:
        """Close the database; every write has already been committed."""
        with self._lock:
            self._conn.close()
