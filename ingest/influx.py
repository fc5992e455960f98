"""The InfluxDB sink: readings and alert transitions to InfluxDB 2.x through a durable spool.

Config: ``store.url = "influxdb://host:port?org=O&bucket=B"`` (``influxdbs://`` for https),
``store.influx_token``; the spool lives in ``ingest.state_dir/spool.db``. Written through
``influxdb-client``'s synchronous write API with millisecond precision; schema in
:mod:`ingest.lineprotocol`.

Why a spool: the database may be down for hours, readings already acknowledged to the broker
must never be lost, and the ingest worker must not block (alerts must keep flowing). So
:meth:`InfluxSink.write` only appends the batch's line protocol to the spool (durable when it
returns) and a forwarder thread drains it oldest first, deleting a chunk only after the server
accepted it. Delivery is at least once: a chunk whose answer was lost is sent again, which is
harmless because a point with the same series and timestamp overwrites itself.

Failure behaviour of the forwarder (the HTTP outcome decides; see :func:`_judge`):
connection error, timeout, 5xx → retry with exponential backoff and jitter, capped at 30 s;
429 / 503 → wait as long as ``Retry-After`` says; 401 / 403 / 404 → retry, logged loudly once
(a token or bucket fix recovers); any other 4xx → the data itself is refused, the chunk moves
to jinmei's dead letters (``<state_dir>/deadletter.db``, origin ``spool``; see
:mod:`ingest.deadletter`) with the server's message and is counted in ``stats()["dead"]``.
While deliveries fail, :meth:`InfluxSink.delivery_fault` says since when and why (the
pipeline's ``store_fault`` reads it: readings acknowledged into the spool are safe, but the
dashboards do not see them).
A repeated failure is logged once, and recovery once. :meth:`InfluxSink.close` makes one last
drain attempt bounded by ``close_timeout_s``; whatever is left stays in the spool and goes out
after the next start.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.write_api import SYNCHRONOUS

from alerts.wire import Alert
from config.errors import DeliveryError
from config.model import Registry
from config.readings import ReadingBatch
from config.redact import redact_url
from ingest.deadletter import DeadLetters
from ingest.lineprotocol import alert_lines, reading_lines
from ingest.spool import Spool

__all__ = ["InfluxSink"]

log = logging.getLogger(__name__)

_BACKOFF_BASE_S = 0.5
# Chunks are coalesced into requests of at most this many characters (a few MB of text).
_MAX_REQUEST_CHARS = 4_000_000
_PEEK_CHUNKS = 16


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What to do after a failed write: retry (after ``retry_after`` or backoff) or dead-letter."""

    problem: str  # groups repeated failures so each kind is logged once
    detail: str
    dead: bool = False
    loud: bool = False
    retry_after: float | None = None


def _retry_after_s(header: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _judge(exc: Exception) -> _Verdict:
    """Map a failed write to a decision; each branch says why."""
    if isinstance(exc, InfluxDBError) and getattr(exc, "status", None) is not None:
        status = int(getattr(exc, "status", 0))
        detail = f"HTTP {status}: {exc.message}"
        if status in (429, 503):
            # The server is alive but asks us to slow down: wait as long as it says.
            return _Verdict(f"HTTP {status}", detail, retry_after=_retry_after_s(exc.retry_after))
        if status in (401, 403, 404):
            # Wrong token or missing org/bucket: an operator fix recovers, the data is fine.
            return _Verdict(f"HTTP {status}", detail, loud=True)
        if status == 408:
            # Request timeout: the server gave up waiting, the data is fine.
            return _Verdict(f"HTTP {status}", detail)
        if 400 <= status < 500:
            # The server refused the data itself: resending it can never succeed.
            return _Verdict(f"HTTP {status}", detail, dead=True)
        # 5xx: the server is failing now and may recover.
        return _Verdict(f"HTTP {status}", detail)
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        # Connection refused, reset or timed out: the server is down or unreachable.
        return _Verdict(type(exc).__name__, str(exc))
    # Anything else is unexpected; keep the chunk and retry rather than lose data.
    return _Verdict(type(exc).__name__, repr(exc), loud=True)


def _coalesce(chunks: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The oldest chunks that fit in one request (always at least one)."""
    taken: list[tuple[int, str]] = []
    size = 0
    for chunk in chunks:
        if taken and size + len(chunk[1]) > _MAX_REQUEST_CHARS:
            break
        taken.append(chunk)
        size += len(chunk[1])
    return taken


class InfluxSink:
    """Spools readings and alerts durably and forwards them to InfluxDB; see the module doc."""

    def __init__(self, url: str, registry: Registry, *, org: str, bucket: str,
                 state_dir: str | Path, token: str = "", timeout_s: float = 10.0,
                 retry_cap_s: float = 30.0, close_timeout_s: float = 5.0) -> None:
        self.name = f"influxdb:{redact_url(url)}/{bucket}"
        self._registry = registry
        self._org = org
        self._bucket = bucket
        self._timeout_s = timeout_s
        self._retry_cap_s = retry_cap_s
        self._close_timeout_s = close_timeout_s
        self._dead_letters = DeadLetters(Path(state_dir) / "deadletter.db")
        self._spool = Spool(Path(state_dir) / "spool.db", self._dead_letters)
        self._client = InfluxDBClient(url=url, token=token, org=org,
                                      timeout=int(timeout_s * 1000))
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._readings = 0
        self._alerts = 0
        self._delivered = 0
        self._failed_attempts = 0
        self._failures_in_row = 0
        self._problem: str | None = None
        self._fault: tuple[int, str] | None = None  # (since epoch ms, error) while failing
        self._deadline = math.inf  # set by close(): the forwarder's last drain ends here
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._final_stats: dict[str, int] | None = None
        # Monotonic time by which the forwarder turns again, inf while it waits for chunks
        # (read by the service's supervisor).
        self.heartbeat = time.monotonic()
        # Daemon: if close() is never called nothing is lost, the spool keeps every chunk.
        self._thread = threading.Thread(target=self._run, name="jinmei-influx-forwarder",
                                        daemon=True)
        self._thread.start()

    # ── the ingest worker's side ─────────────────────────────────────────────────────────
    def write(self, batch: ReadingBatch) -> None:
        """Queue the batch durably for InfluxDB; returns once it is in the spool."""
        if not len(batch):
            return
        try:
            lines = reading_lines(batch, self._registry)
        except ValueError as exc:
            raise DeliveryError(self.name, str(exc), retryable=False) from exc
        self._spool.append(lines)
        self._readings += len(batch)
        self._wake.set()

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Queue alert transitions (measurement ``alert``) durably for InfluxDB."""
        if not alerts:
            return
        try:
            lines = alert_lines(alerts)
        except ValueError as exc:
            raise DeliveryError(self.name, str(exc), retryable=False) from exc
        self._spool.append(lines)
        self._alerts += len(alerts)
        self._wake.set()

    def alive(self) -> bool:
        """Whether the forwarder thread is running."""
        return self._thread.is_alive()

    @property
    def delivered(self) -> int:
        """Lines the server has accepted since open (a plain read, no lock)."""
        return self._delivered

    def use_registry(self, registry: Registry) -> None:
        """Map sensor indexes of later batches through ``registry`` (after a reload); what is
        in the spool is already line protocol."""
        self._registry = registry

    def stats(self) -> dict[str, int]:
        """readings/alerts accepted and lines delivered since open; pending and dead chunks
        in the spool, and when the oldest pending one was queued (``oldest_ms``, epoch ms, 0
        when none); failed delivery attempts, and ``failing`` 1 while the server refuses or
        cannot be reached. After close: the figures at close."""
        if self._final_stats is not None:
            return self._final_stats
        return {"readings": self._readings, "alerts": self._alerts,
                "delivered": self._delivered, "pending": self._spool.depth(),
                "oldest_ms": self._spool.oldest_ms() or 0,
                "dead": self._dead_letters.count("spool"), "failed_attempts": self._failed_attempts,
                "failing": int(self._fault is not None)}

    def delivery_fault(self) -> tuple[int, str] | None:
        """(since epoch ms, last error) while the forwarder cannot deliver; None when it can."""
        return self._fault

    def close(self) -> None:
        """Stop the forwarder after one last drain attempt of at most ``close_timeout_s``."""
        if self._closed:
            return
        self._closed = True
        self._deadline = time.monotonic() + self._close_timeout_s
        self._stop.set()
        self._wake.set()
        # A request already under way may take up to the client timeout to finish.
        self._thread.join(self._close_timeout_s + self._timeout_s + 1.0)
        if self._thread.is_alive():
            log.error("%s: forwarder did not stop; its chunks stay in the spool", self.name)
            return
        self._final_stats = self.stats()
        self._client.close()
        self._spool.close()
        self._dead_letters.close()

    # ── the forwarder thread ─────────────────────────────────────────────────────────────
    def _run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            self._wake.clear()
            try:
                delay = self._drain()
            except DeliveryError as exc:
                # The spool itself failed (disk full?): nothing was deleted, try again later.
                delay = self._failed(_Verdict("spool", str(exc), loud=True))
            if self._stop.is_set():
                return
            if delay is None:
                self.heartbeat = math.inf  # nothing to send: nothing to stall on
                self._wake.wait()
            else:
                self.heartbeat = time.monotonic() + delay
                self._stop.wait(delay)

    def _drain(self) -> float | None:
        """Send until the spool is empty (None), a send fails or close's deadline passes
        (seconds to wait before the next attempt)."""
        while time.monotonic() < self._deadline:
            self.heartbeat = time.monotonic()  # each request is bounded by the client timeout
            chunks = self._spool.peek(_PEEK_CHUNKS)
            if not chunks:
                return None
            delay = self._send(_coalesce(chunks))
            if delay is not None:
                return delay
        return 0.0

    def _send(self, chunks: list[tuple[int, str]]) -> float | None:
        """One request for these chunks: None when they left the spool, else a delay."""
        try:
            self._write_api.write(bucket=self._bucket, org=self._org,
                                  record="\n".join(body for _, body in chunks),
                                  # the client's annotation says str for its own enum
                                  write_precision=WritePrecision.MS)  # type: ignore[arg-type]
        except Exception as exc:  # every failure is judged; none may lose the chunk
            verdict = _judge(exc)
            if not verdict.dead:
                return self._failed(verdict)
            if len(chunks) > 1:
                # Only some of the coalesced chunks may be bad: find them one by one.
                for chunk in chunks:
                    delay = self._send([chunk])
                    if delay is not None:
                        return delay
                return None
            self._spool.dead_letter(chunks[0][0], verdict.detail)
            log.error("%s: server refused spool chunk %d, moved to dead letters: %s",
                      self.name, chunks[0][0], verdict.detail)
            return None
        self._spool.delete([chunk_id for chunk_id, _ in chunks])
        self._delivered += sum(body.count("\n") + 1 for _, body in chunks)
        if self._problem is not None:
            log.warning("%s: delivering again after %d failed attempts (%s)", self.name,
                        self._failures_in_row, self._problem)
        self._problem = None
        self._fault = None
        self._failures_in_row = 0
        return None

    def _failed(self, verdict: _Verdict) -> float:
        """Count a failed attempt, log it if it is a new kind of failure, return the wait."""
        self._failed_attempts += 1
        self._failures_in_row += 1
        self._fault = (self._fault[0] if self._fault else time.time_ns() // 1_000_000,
                       verdict.detail)
        if verdict.problem != self._problem:
            level = logging.ERROR if verdict.loud else logging.WARNING
            log.log(level, "%s: delivery failing, chunks kept in the spool and retried: %s",
                    self.name, verdict.detail)
            self._problem = verdict.problem
        if verdict.retry_after is not None:
            return verdict.retry_after
        doublings = min(self._failures_in_row - 1, 16)  # 2**16 × base is far past any cap
        backoff = min(self._retry_cap_s, _BACKOFF_BASE_S * 2.0**doublings)
        # Jitter spreads the retries of several ingestors after a shared outage.
        return backoff * random.uniform(0.5, 1.0)
