"""The archive and the durable upload queue of networking files.

State lives in ``<state_dir>/networking/``: ``archive/`` holds every file ever written, and
``queue.db`` (SQLite, WAL, ``synchronous=FULL``) holds one row per file — ``pending`` until
the target confirmed it, then ``uploaded`` with the time — and ``upload_log``, one row per
attempt with its outcome (the upload log per file). :meth:`UploadQueue.add` writes the file to
the archive and fsyncs it *before* the row is committed, so a queued file always exists; the
row commits with whatever the caller marks in the same transaction (``extra``), so a file
and the marker that it was made are never one without the other. ``remembered`` keeps named
values across restarts (``config_hash``: the configuration of the last definitions sent).

Retries: a failed attempt sets ``next_at`` to now + min(retry_max_s, 2^(attempts-1)) s with
±20 % jitter; nothing is ever dropped. A confirmed file is never offered again. Time is passed
in (``now``, epoch seconds).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from config.durable import connect_durable
from networking.format import DataFile

__all__ = ["QueueStatus", "QueuedFile", "UploadQueue"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS upload (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
    uploaded_at REAL, last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS upload_due ON upload (state, next_at);
CREATE TABLE IF NOT EXISTS upload_log (
    name TEXT NOT NULL, at REAL NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sent_event (
    id TEXT NOT NULL, state TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (id, state, ts));
CREATE TABLE IF NOT EXISTS remembered (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class QueuedFile:
    name: str
    path: Path
    attempts: int


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """What ``jinmei networking status`` shows."""

    pending: int
    uploaded: int
    last_success: float | None
    last_error: tuple[float, str, str] | None  # (at, file, message)


class UploadQueue:
    """Archive + queue in ``directory``; see the module docstring."""

    def __init__(self, directory: str | Path, *, retry_max_s: float = 300.0,
                 jitter: Callable[[], float] = random.random) -> None:
        self.directory = Path(directory)
        self.archive = self.directory / "archive"
        self.archive.mkdir(parents=True, exist_ok=True)
        self.retry_max_s = retry_max_s
        self._jitter = jitter
        self._lock = threading.Lock()
        self._db = connect_durable(self.directory / "queue.db")
        self._db.executescript(_SCHEMA)

    def add(self, file: DataFile, encoding: str, now: float,
            sent_events: Sequence[tuple[str, str, int]] = ()) -> bool:
        """Archive and queue ``file``; False if a file of that name is already queued (two
        files of one type within a second). ``sent_events`` (alert id, state, ts) are marked
        in the same transaction."""
        path = self.archive / file.name
        with self._lock:
            if self._db.execute("SELECT 1 FROM upload WHERE name = ?", (file.name,)).fetchone():
                return False
            temporary = path.with_suffix(".part")
            with open(temporary, "wb") as out:
                out.write(file.encode(encoding))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
            with self._db:
                self._db.execute("INSERT INTO upload (name, type, created_at, state, next_at)"
                                 " VALUES (?, ?, ?, 'pending', ?)",
                                 (file.name, file.type, now, now))
                self._db.executemany("INSERT OR IGNORE INTO sent_event VALUES (?, ?, ?)",
                                     sent_events)
        return True

    def add_marks(self, sent_events: Sequence[tuple[str, str, int]]) -> None:
        """Mark alert transitions handled that went into no file (not networked)."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO sent_event VALUES (?, ?, ?)",
                                 sent_events)

    def sent(self, keys: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        """Which of these alert transitions (id, state, ts) are already in a queued file."""
        with self._lock:
            return {k for k in keys if self._db.execute(
                "SELECT 1 FROM sent_event WHERE id = ? AND state = ? AND ts = ?", k).fetchone()}

    def remember(self, name: str, value: str) -> None:
        """Keep a value across restarts (the configuration hash of the last CDDY)."""
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO remembered VALUES (?, ?)", (name, value))

    def recall(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM remembered WHERE name = ?",
                                   (name,)).fetchone()
        return None if row is None else str(row[0])

    def due(self, now: float, limit: int = 100) -> list[QueuedFile]:
        """Pending files whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT name, attempts FROM upload WHERE state = 'pending'"
                                    " AND next_at <= ? ORDER BY created_at, name LIMIT ?",
                                    (now, limit)).fetchall()
        return [QueuedFile(name, self.archive / name, attempts) for name, attempts in rows]

    def confirmed(self, name: str, now: float, detail: str = "uploaded") -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE upload SET state = 'uploaded', uploaded_at = ?,"
                             " attempts = attempts + 1 WHERE name = ?", (now, name))
            self._db.execute("INSERT INTO upload_log VALUES (?, ?, 1, ?)", (name, now, detail))

    def failed(self, name: str, now: float, error: str) -> float:
        """Record a failed attempt; returns when the next one is due."""
        with self._lock, self._db:
            (attempts,) = self._db.execute("SELECT attempts + 1 FROM upload WHERE name = ?",
                                           (name,)).fetchone()
            delay = min(self.retry_max_s, 2.0 ** (attempts - 1)) * (0.8 + 0.4 * self._jitter())
            self._db.execute("UPDATE upload SET attempts = ?, next_at = ?, last_error = ?"
                             " WHERE name = ?", (attempts, now + delay, error, name))
            self._db.execute("INSERT INTO upload_log VALUES (?, ?, 0, ?)", (name, now, error))
        return now + delay

    def next_due(self) -> float | None:
        with self._lock:
            (at,) = self._db.execute("SELECT MIN(next_at) FROM upload WHERE state = 'pending'"
                                     ).fetchone()
        return at

    def log(self, name: str) -> list[tuple[float, bool, str]]:
        with self._lock:
            rows = self._db.execute("SELECT at, ok, detail FROM upload_log WHERE name = ?"
                                    " ORDER BY rowid", (name,)).fetchall()
        return [(at, bool(ok), detail) for at, ok, detail in rows]

    def status(self) -> QueueStatus:
        with self._lock:
            counts = dict(self._db.execute("SELECT state, COUNT(*) FROM upload GROUP BY state"))
            (success,) = self._db.execute("SELECT MAX(at) FROM upload_log WHERE ok = 1").fetchone()
            error = self._db.execute("SELECT at, name, detail FROM upload_log WHERE ok = 0"
                                     " ORDER BY at DESC, rowid DESC LIMIT 1").fetchone()
        return QueueStatus(counts.get("pending", 0), counts.get("uploaded", 0), success,
                           tuple(error) if error else None)

    def pending(self) -> int:
        """Files waiting for upload (cheap: the ``upload_due`` index; for /metrics)."""
        with self._lock:
            return int(self._db.execute(
                "SELECT count(*) FROM upload WHERE state = 'pending'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

