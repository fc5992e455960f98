"""The SQLite writer process: readings committed outside the ingest process's interpreter lock.

:class:`~ingest.sqlite.SQLiteSink` hands each batch's four columns (``sensor_id``, ``ts``,
``value``, ``status`` of the narrow schema) to a process of its own, ``python -m
ingest.sqlite_writer PATH``, and waits until that process has committed them; so ``write``
still returns only when the batch is on disk, and the pipeline still acknowledges a batch's
MQTT messages only after its commit.

Why a process: ``executemany`` binds each row in Python and must win the interpreter lock back
for every row, so in the ingest process the commit competes with paho's network thread for the
one lock (py-spy: ``SQLiteSink.write`` 31 % of the service's samples; a writer *thread* keeps the
same lock and measured no faster, see bench/RESULTS.md). While the writer process commits, the
ingest process waits on a pipe with its lock free, and the network thread reads the next
messages meanwhile. Measured end to end (bench/RESULTS.md, fourth session): the write waiting
for the commit gained as much as writing one batch behind (pipelined), so the simple form is
kept.

**Wire** (parent → writer, over the writer's stdin): 8 bytes little-endian row count *n*, then
the columns back to back, *n* × int64 ``sensor_id``, *n* × int64 ``ts``, *n* × float64
``value``, *n* × uint16 ``status`` — one copy of the arrays, ~1 ms for 100,000 readings
(a pipe measured 1.1 ms against 0.2 ms for a copy into shared memory: 1 % of the commit, not
worth shared memory's lifetime and sizing rules). Writer → parent, over its stdout: one byte
(``OK``, ``RETRY``: an error the store may get over, ``REFUSED``: refused for good, as
:func:`config.durable.refused_for_good` classes it), then for an error 4 bytes of length and the
error's text.

**Failure behaviour.** A writer that dies (kill -9, the OOM killer) before its answer: the
write raises a retryable :class:`~config.errors.DeliveryError` naming the process and its exit
status, nothing of the batch is acknowledged, and the next write starts a new writer, which
commits the batch again (the readings table is idempotent on its key). A writer that cannot be
started, or dies each time, keeps the writes failing: the pipeline holds the batch and retries
with backoff, and the service's store-failing state (``store_fault``, then
``monitoring_offline`` and ``/readyz`` 503) says so — it never stops storing silently. A writer
that hangs leaves the ingest worker waiting: the supervisor's stall check (``[ingest]
stall_s``) then fails the service loudly. The writer ignores SIGINT (Ctrl-C in a terminal
reaches the whole process group): it ends when the service closes its pipe, after the commit
in hand — or at once, with nothing half-written, when the service itself was killed.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import subprocess
import sys
from typing import IO, Any

import numpy as np

from config.durable import connect_durable, refused_for_good
from config.errors import DeliveryError

__all__ = ["WriterProcess", "configure"]

log = logging.getLogger(__name__)

INSERT_READING = "INSERT OR REPLACE INTO reading_data VALUES (?, ?, ?, ?)"
OK, RETRY, REFUSED = b"\0", b"\1", b"\2"
# sensor_id, ts, value, status
_COLUMNS: tuple[np.dtype[Any], ...] = (np.dtype("<i8"), np.dtype("<i8"), np.dtype("<f8"),
                                       np.dtype("<u2"))
_ROW_BYTES = sum(dt.itemsize for dt in _COLUMNS)


def configure(conn: sqlite3.Connection) -> None:
    """The write settings of the readings file, for the sink's connection and the writer's."""
    # 64 MiB page cache (default 2 MiB): a migration reads an old table while it writes the
    # new one.
    conn.execute("PRAGMA cache_size = -65536")
    # Checkpoint every 10,000 WAL pages (40 MiB; default 1,000): a page rewritten by several
    # batches is copied back once (measured 1.2x more rows/s). Only committed pages are copied,
    # so durability does not change.
    conn.execute("PRAGMA wal_autocheckpoint = 10000")


class WriterProcess:
    """The parent's end: a writer process for the readings file at ``path``, started at the
    first write and again after one died. ``command`` is the writer's command line without the
    path (tests give one that dies, to see the failure path)."""

    def __init__(self, path: str, command: list[str] | None = None) -> None:
        self.path = path
        self.command = command or [sys.executable, "-m", "ingest.sqlite_writer"]
        self.name = f"sqlite writer process for {path}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.started = 0  # writer processes started, for the logs and tests

    @property
    def pid(self) -> int | None:
        """The running writer's process id (None before the first write or after a death)."""
        return self._proc.pid if self._proc is not None else None

    def write(self, sensor_id: np.ndarray, ts: np.ndarray, value: np.ndarray,
              status: np.ndarray) -> None:
        """Commit the rows in the writer process; return once they are on disk. Raises
        DeliveryError (retryable unless the store refused the rows for good)."""
        frame = b"".join([len(ts).to_bytes(8, "little"),
                          *(np.asarray(column).astype(dt, copy=False).tobytes()
                            for column, dt in zip((sensor_id, ts, value, status), _COLUMNS,
                                                  strict=True))])
        proc = self._running()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(frame)
            proc.stdin.flush()
            answer = proc.stdout.read(1)
            if answer == OK:
                return
            if answer in (RETRY, REFUSED):
                size = int.from_bytes(_read_exactly(proc.stdout, 4), "little")
                error = _read_exactly(proc.stdout, size).decode("utf-8", "replace")
                raise DeliveryError(self.name, f"SQLite: {error}", retryable=answer == RETRY)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass
        raise self._died()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            raise self._died()
        try:
            self._proc = subprocess.Popen([*self.command, self.path], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE)
        except OSError as exc:
            raise DeliveryError(self.name, f"cannot start it: {exc}", retryable=True) from exc
        self.started += 1
        if self.started > 1:
            log.warning("%s started again (pid %d)", self.name, self._proc.pid)
        return self._proc

    def _died(self) -> DeliveryError:
        """The writer ended without answering: reap it, so the next write starts another."""
        assert self._proc is not None
        proc, self._proc = self._proc, None
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # alive but its pipe broke: end it
            proc.kill()
            code = proc.wait()
        said = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        log.error("%s (pid %d) died (%s) before committing a batch; the batch is held and "
                  "written again by a new writer", self.name, proc.pid, said)
        return DeliveryError(self.name, f"died ({said}, pid {proc.pid}) before committing; "
                             "the batch is held and written again", retryable=True)

    def close(self) -> None:
        """End the writer after the commit in hand (its input closed)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                # BrokenPipeError: it had died, nothing was waiting to be written
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) did not end in 30 s; killed", self.name, proc.pid)
            proc.kill()
            proc.wait()


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"{len(data)} of {size} bytes")
    return data


def serve(path: str, source: IO[bytes], answers: IO[bytes]) -> None:
    """The writer's loop: a frame in, its rows committed in key order, an answer out; returns
    at the end of ``source``."""
    conn = connect_durable(path)
    configure(conn)
    while header := source.read(8):
        n = int.from_bytes(header, "little")
        body = _read_exactly(source, n * _ROW_BYTES)
        columns, offset = [], 0
        for dt in _COLUMNS:
            columns.append(np.frombuffer(body, dt, n, offset))
            offset += n * dt.itemsize
        sensor_id, ts, value, status = columns
        # Inserting in key order touches each B-tree page once (measured 1.4x faster); the
        # sort is stable, so of two readings with one key the later one wins.
        order = np.lexsort((sensor_id, ts))
        rows = zip(sensor_id[order].tolist(), ts[order].tolist(), value[order].tolist(),
                   status[order].tolist(), strict=True)
        try:
            with conn:
                conn.executemany(INSERT_READING, rows)
        except sqlite3.Error as exc:
            text = str(exc).encode()
            answers.write((REFUSED if refused_for_good(exc) else RETRY)
                          + len(text).to_bytes(4, "little") + text)
        else:
            answers.write(OK)
        answers.flush()
    conn.close()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # see the module docstring
    serve(sys.argv[1], sys.stdin.buffer, sys.stdout.buffer)
