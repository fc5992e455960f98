"""The durable SQLite connection every package uses, and how its errors are classed.

One place for what three packages (``ingest``, ``alerts``, ``networking``) had each written:
a database in WAL mode whose commits are fsynced before they return (``synchronous=FULL``: with
``NORMAL`` a WAL commit reaches the disk only at the next checkpoint, so a power cut could lose
what was already acknowledged), waiting up to ``BUSY_TIMEOUT_S`` for another process's lock
(the CLI reading while the service writes) instead of failing at once.

:func:`delivery_errors` turns SQLite's errors into :class:`~config.errors.DeliveryError` and
decides ``retryable`` by what went wrong (:func:`refused_for_good`): SQLite refused the data
itself (a constraint, a value too big) or was misused (a closed connection) → never retried;
everything else — busy or locked, disk full, I/O error, a file that cannot be opened, even a
corrupt file — may pass or be fixed by an operator, so the caller holds the data and retries.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from config.errors import DeliveryError

__all__ = ["BUSY_TIMEOUT_S", "connect_durable", "delivery_errors", "refused_for_good"]

BUSY_TIMEOUT_S = 10.0  # jinmei's own: far above a CLI read, short enough to report a stuck lock
WAL_RETRY_S = 0.02  # jinmei's own: a new file's switch to WAL takes milliseconds

# SQLite result codes that refuse the statement's data itself: sending it again cannot succeed.
_REFUSED_CODES = frozenset({sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG,
                            sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_RANGE})


def connect_durable(path: str | Path, *, synchronous: Literal["FULL", "NORMAL"] = "FULL",
                    isolation_level: Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"] | None
                    = "DEFERRED") -> sqlite3.Connection:
    """Open (creating folders) a WAL database; with ``synchronous="FULL"`` (the default) each
    commit is on disk when it returns. ``NORMAL`` survives a killed process but not a power
    cut — only for marks whose loss costs nothing but a repeat. ``isolation_level`` as in
    :func:`sqlite3.connect` (None: autocommit, the caller writes BEGIN itself)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                           isolation_level=isolation_level)
    _wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode, waiting up to ``BUSY_TIMEOUT_S`` for it: turning a new file
    to WAL needs it alone, and SQLite refuses a second process opening it at that moment at
    once, without its busy timeout (two workers starting on one new store: measured 13 of 15
    simultaneous starts refused "database is locked")."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY,
                                                                    sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_RETRY_S)


def refused_for_good(exc: sqlite3.Error) -> bool:
    """True when the same statement can never succeed: the data was refused or the
    connection misused (closed); False when it may work later (busy, full, I/O, corrupt)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # no result code: raised by the sqlite3 module itself, not by SQLite
        return isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError)
    return code & 0xFF in _REFUSED_CODES  # extended codes carry the primary code in the low byte


@contextmanager
def delivery_errors(target: str) -> Iterator[None]:
    """Turn SQLite errors into DeliveryError, retryable unless refused for good."""
    try:
        yield
    except sqlite3.Error as exc:
        raise DeliveryError(target, f"SQLite: {exc}",
                            retryable=not refused_for_good(exc)) from exc
