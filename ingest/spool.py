"""A durable first-in first-out queue of line-protocol chunks, in SQLite.

The InfluxDB sink appends each batch here and returns; a forwarder drains the queue oldest
first and deletes a chunk only once the server has accepted it. A chunk the server refuses
for good (its data is bad) moves to jinmei's dead letters (:mod:`ingest.deadletter`, origin
``spool``) with the server's message, where an operator can read it: never silently dropped.

File: ``<state_dir>/spool.db`` (the sink chooses it), WAL with ``synchronous=FULL`` so that an
appended chunk survives a power cut once :meth:`Spool.append` returns. Tables:
``chunk(id, queued_ms, body)`` — ids only grow (AUTOINCREMENT), so id order is arrival order
even after deletes. (A spool file of an earlier version may still hold a ``dead`` table of its
own; it is left as it was, and nothing new goes there.)

Failure behaviour: SQLite errors become :class:`~config.errors.DeliveryError` (see
:func:`config.durable.delivery_errors`). Safe to share between the writer and the forwarder
thread: one connection under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from config.durable import connect_durable, delivery_errors
from ingest.deadletter import DeadLetter, DeadLetters

__all__ = ["Spool"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk (
    id INTEGER PRIMARY KEY AUTOINCREMENT, queued_ms INTEGER NOT NULL, body TEXT NOT NULL);
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Spool:
    """Durable FIFO of text chunks; see the module docstring."""

    def __init__(self, path: str | Path, dead_letters: DeadLetters) -> None:
        self.path = Path(path)
        self.dead_letters = dead_letters
        self._target = f"spool:{self.path}"
        self._lock = threading.Lock()
        with delivery_errors(self._target):
            self._conn = connect_durable(self.path)
            self._conn.executescript(_SCHEMA)

    def append(self, chunk: str) -> None:
        """Queue one chunk; on disk when this returns."""
        with self._lock, delivery_errors(self._target), self._conn:
            self._conn.execute("INSERT INTO chunk (queued_ms, body) VALUES (?, ?)",
                               (_now_ms(), chunk))

    def peek(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` oldest (id, chunk) pairs, oldest first, left in the queue."""
        with self._lock, delivery_errors(self._target):
            return self._conn.execute("SELECT id, body FROM chunk ORDER BY id LIMIT ?",
                                      (limit,)).fetchall()

    def delete(self, ids: Sequence[int]) -> None:
        """Remove delivered chunks."""
        with self._lock, delivery_errors(self._target), self._conn:
            self._conn.executemany("DELETE FROM chunk WHERE id = ?", [(i,) for i in ids])

    def dead_letter(self, chunk_id: int, reason: str) -> None:
        """Move a chunk that can never be delivered to the dead letters, with the reason.
        The letter is on disk before the chunk leaves the spool; a crash between the two sets
        the same chunk aside again later, and the dead letters keep it once."""
        with self._lock, delivery_errors(self._target):
            row = self._conn.execute("SELECT body FROM chunk WHERE id = ?",
                                     (chunk_id,)).fetchone()
        if row is None:
            return
        self.dead_letters.add([DeadLetter("spool", "", row[0].encode(), reason)])
        self.delete([chunk_id])

    def depth(self) -> int:
        """Chunks waiting to be delivered."""
        with self._lock, delivery_errors(self._target):
            return int(self._conn.execute("SELECT count(*) FROM chunk").fetchone()[0])

    def oldest_ms(self) -> int | None:
        """When the oldest waiting chunk was queued (epoch ms), None when the queue is empty."""
        with self._lock, delivery_errors(self._target):
            row = self._conn.execute("SELECT queued_ms FROM chunk ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
