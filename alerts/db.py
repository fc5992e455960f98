"""The alerts state file: one SQLite database (``<state_dir>/alerts.db``) for everything the
alerts side must not forget across restarts — the alert record, acknowledgements, silences,
pending timers, the notification log and the delivery outbox.

WAL mode with ``synchronous=FULL`` (:func:`config.durable.connect_durable`): what a transaction
committed survives a power cut, and the ``jinmei alerts`` commands may read and write (ack,
silence) while the service runs; a writer waits up to ``busy_timeout`` (10 s) for the other.
Errors are ``sqlite3.Error`` for the caller.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from config.durable import connect_durable

__all__ = ["StateDB"]


class StateDB:
    """One connection to the alerts state file, shared by threads under a lock."""

    def __init__(self, path: str | Path, schema: str = "") -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._db = connect_durable(self.path, isolation_level=None)  # BEGIN IMMEDIATE below
        if schema:
            self._db.executescript(schema)

    def ensure(self, schema: str) -> None:
        """Create the tables and indexes of ``schema`` where missing."""
        with self.lock:
            self._db.executescript(schema)

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self._db.close()
