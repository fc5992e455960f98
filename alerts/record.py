"""The alert record: every alert transition ever raised, kept in SQLite.

Regulators must be able to trust that no alarm or power-off is lost, and AQ 6201-2019 asks
that alarm / power-off records be kept at least a year (domain.md §3): the record is the
durable answer to "what was raised, when, under which configuration". One table,
``alert_transition``: every field of :class:`~alerts.wire.Alert` plus ``config_hash`` (the
configuration in force) and ``recorded_at`` (epoch ms, passed in as ``now_ms``), primary key
(id, state, ts). A file from before a column was added (``late``, 0 / 1) gains it, with its
default, when opened. Table ``alert_ack`` keeps who acknowledged which episode and when (the
``acknowledged`` state of the lifecycle; first acknowledgement wins). Table ``alert_cause``
keeps every cause (原因) and action taken (处理措施) entered for an episode, with who entered it
and when (录入人, 录入时间; MT/T 1201.1's YCBJ fields): rows are only added, the latest is the
episode's. Appends ignore a row whose key is already there (``ON CONFLICT DO NOTHING``, the
key-only form of ``INSERT OR IGNORE``), so redelivering the same transitions is harmless. A
file written before a field was added to the alert gets that column on open (``ALTER TABLE …
ADD COLUMN`` with the field's default), so an older record keeps working and its rows read
back with the default.
The file runs in WAL mode with ``synchronous=FULL``: a transition that ``append`` returned for
survives a power cut. One connection shared under a lock, so the CLI summary can
read while the pipeline writes. Failures (disk full, unreadable file) raise ``sqlite3.Error``
to the caller, which must not ack what was not recorded.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec

from alerts.wire import Alert
from config.durable import connect_durable

__all__ = ["AlertRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_transition (
    id          TEXT    NOT NULL,
    mine        TEXT    NOT NULL,
    sensor      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    value       REAL,
    "limit"     REAL,
    started_at  INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    message     TEXT    NOT NULL,
    condition   TEXT    NOT NULL,
    unit        TEXT    NOT NULL,
    location    TEXT    NOT NULL,
    place       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    scope       TEXT    NOT NULL DEFAULT '',
    ended_at    INTEGER,
    version     INTEGER NOT NULL,
    reason      TEXT    NOT NULL DEFAULT '',
    inhibited_by TEXT   NOT NULL DEFAULT '',
    late        INTEGER NOT NULL DEFAULT 0,
    config_hash TEXT    NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (id, state, ts)
);
CREATE INDEX IF NOT EXISTS alert_transition_mine_ts ON alert_transition (mine, ts);
CREATE TABLE IF NOT EXISTS alert_ack (
    id     TEXT    PRIMARY KEY,
    by     TEXT    NOT NULL,
    at     INTEGER NOT NULL,
    note   TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_cause (
    id     TEXT    NOT NULL,
    cause  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    by     TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_cause_id ON alert_cause (id, at);
"""

_FIELDS: tuple[str, ...] = Alert.__struct_fields__
_COLUMNS = ", ".join(f'"{name}"' for name in _FIELDS)
# Only a repeat of the primary key is ignored: plain INSERT OR IGNORE would also drop rows
# that break NOT NULL silently, and nothing may be dropped silently here.
_INSERT = (f"INSERT INTO alert_transition ({_COLUMNS}, config_hash, recorded_at) "
           f"VALUES ({', '.join('?' * (len(_FIELDS) + 2))}) "
           "ON CONFLICT (id, state, ts) DO NOTHING")
_SELECT = f"SELECT {_COLUMNS} FROM alert_transition"
# Columns of fields added to the alert after the first record files were written.
_ADDED_COLUMNS = {"reason": "TEXT NOT NULL DEFAULT ''",
                  "inhibited_by": "TEXT NOT NULL DEFAULT ''",
                  "late": "INTEGER NOT NULL DEFAULT 0"}  # an alert from before it: not late
# SQLite stores a NaN REAL as NULL; these read back as NaN so the Alert stays a float.
_FLOATS = frozenset({"value", "limit"})


def _alert(row: tuple[object, ...]) -> Alert:
    fields = {name: (math.nan if cell is None and name in _FLOATS else cell)
              for name, cell in zip(_FIELDS, row, strict=True)}
    fields["late"] = bool(fields["late"])  # SQLite keeps a bool as 0 / 1
    return msgspec.convert(fields, Alert)


class AlertRecord:
    """Append-only SQLite record of alert transitions; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = connect_durable(self.path, isolation_level=None)
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(alert_transition)")}
        for name, column in _ADDED_COLUMNS.items():
            if name not in have:
                self._db.execute(f'ALTER TABLE alert_transition ADD COLUMN "{name}" {column}')

    def append(self, alerts: Sequence[Alert], config_hash: str, now_ms: int) -> int:
        """Record these transitions in one transaction; returns how many were new."""
        rows = [(*(getattr(a, name) for name in _FIELDS), config_hash, now_ms) for a in alerts]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(_INSERT, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def open_episodes(self) -> list[Alert]:
        """Latest firing transition of every episode with no resolve at or after it. A resolve
        stamped before its own start (written before episodes were kept from ending before
        they began) closes its episode too: else a restart would reopen it."""
        return self._query(
            f"{_SELECT} AS f WHERE state = 'firing' AND NOT EXISTS ("
            " SELECT 1 FROM alert_transition AS r"
            " WHERE r.id = f.id AND r.state = 'resolved'"
            "  AND (r.ts >= f.ts OR r.ts < r.started_at))"
            " AND f.ts = (SELECT MAX(l.ts) FROM alert_transition AS l"
            "             WHERE l.id = f.id AND l.state = 'firing')"
            " ORDER BY started_at, id")

    def history(self, mine: str | None = None, since_ms: int | None = None) -> list[Alert]:
        """Transitions in time order, optionally of one mine and from ``since_ms`` on."""
        where: list[str] = []
        params: list[object] = []
        if mine is not None:
            where.append("mine = ?")
            params.append(mine)
        if since_ms is not None:
            where.append("ts >= ?")
            params.append(since_ms)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self._query(f"{_SELECT}{clause} ORDER BY ts, rowid", tuple(params))

    def acknowledge(self, episode: str, by: str, now_ms: int, note: str = "") -> bool:
        """Mark an episode acknowledged; False if it is unknown or was already acknowledged."""
        with self._lock:
            known = self._db.execute("SELECT 1 FROM alert_transition WHERE id = ? LIMIT 1",
                                     (episode,)).fetchone()
            if known is None:
                return False
            cursor = self._db.execute(
                "INSERT INTO alert_ack (id, by, at, note) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING", (episode, by, now_ms, note))
            return cursor.rowcount == 1

    def acknowledgements(self, episodes: Sequence[str] | None = None
                         ) -> dict[str, tuple[str, int, str]]:
        """(by, at, note) by episode id, of these episodes or of all."""
        with self._lock:
            rows = self._db.execute("SELECT id, by, at, note FROM alert_ack").fetchall()
        wanted = None if episodes is None else set(episodes)
        return {i: (by, at, note) for i, by, at, note in rows if wanted is None or i in wanted}

    def episode_mine(self, episode: str) -> str | None:
        """The mine of an episode, None when there is no such episode."""
        with self._lock:
            row = self._db.execute("SELECT mine FROM alert_transition WHERE id = ? LIMIT 1",
                                   (episode,)).fetchone()
        return None if row is None else str(row[0])

    def enter_cause(self, episode: str, cause: str, action: str, by: str, now_ms: int) -> bool:
        """Record the cause and the action taken for an episode; False if it is unknown."""
        with self._lock:
            known = self._db.execute("SELECT 1 FROM alert_transition WHERE id = ? LIMIT 1",
                                     (episode,)).fetchone()
            if known is None:
                return False
            self._db.execute("INSERT INTO alert_cause (id, cause, action, by, at)"
                             " VALUES (?, ?, ?, ?, ?)", (episode, cause, action, by, now_ms))
            return True

    def causes(self, episodes: Sequence[str] | None = None
               ) -> dict[str, tuple[str, str, str, int]]:
        """The latest (cause, action, by, at) by episode id, of these episodes or of all."""
        with self._lock:
            rows = self._db.execute("SELECT id, cause, action, by, at FROM alert_cause"
                                    " ORDER BY at, rowid").fetchall()
        wanted = None if episodes is None else set(episodes)
        return {i: (cause, action, by, at) for i, cause, action, by, at in rows
                if wanted is None or i in wanted}

    def causes_entered_after(self, at_ms: int) -> list[tuple[str, int]]:
        """(episode, entered at) of every cause and action entered after ``at_ms``, in order."""
        with self._lock:
            rows = self._db.execute("SELECT id, at FROM alert_cause WHERE at > ?"
                                    " ORDER BY at, rowid", (at_ms,)).fetchall()
        return [(str(i), int(at)) for i, at in rows]

    def resolved(self, episode: str) -> Alert | None:
        """The resolving transition of an episode, None while it is open (or unknown)."""
        found = self._query(f"{_SELECT} WHERE id = ? AND state = 'resolved' ORDER BY ts DESC"
                            " LIMIT 1", (episode,))
        return found[0] if found else None

    def config_hashes(self) -> dict[tuple[str, str, int], str]:
        """The configuration hash each transition was raised under, by (id, state, ts)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, state, ts, config_hash FROM alert_transition").fetchall()
        return {(i, state, ts): h for i, state, ts, h in rows}

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Number of transitions by (mine, rule, state)."""
        with self._lock:
            rows = self._db.execute("SELECT mine, rule, state, COUNT(*) FROM alert_transition"
                                    " GROUP BY mine, rule, state").fetchall()
        return {(mine, rule, state): n for mine, rule, state, n in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Alert]:
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_alert(row) for row in rows]
