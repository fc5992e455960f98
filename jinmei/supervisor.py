"""Supervision: every thread the service needs is watched; a dead or stalled one stops it.

**The heartbeat contract** (one attribute write a turn, nothing else on the hot path): every
watched loop keeps ``heartbeat``, the monotonic time by which it will turn again —
``time.monotonic()`` at the top of each turn (and before each bounded step of a long turn: an
HTTP request, an upload), ``time.monotonic() + delay`` before a deliberate wait of ``delay``
seconds (a retry backoff), ``math.inf`` while it waits for work it does not have. The loops
that keep one: the MQTT network thread (``MqttSource``), the ingest worker (``Pipeline.run``),
alert delivery (``DeliveryWorker``), regulator networking (``NetworkingWorker``) and the
InfluxDB forwarder (``InfluxSink``) when that store is used.

A thread is **dead** when it is no longer alive (an exception or a ``BaseException`` ended it)
and **stalled** when ``monotonic() > heartbeat + stall_s`` (``[ingest] stall_s``, default 30 s):
it had work and has not come back to its loop — a hang, a deadlock, an endless loop. Waiting
for work is never a stall; a loop that waits has said until when.

:class:`Supervisor` is a thread that every ``CHECK_S`` first calls ``observe`` (the service's
watch on the broker, the store and the status topic: :meth:`jinmei.service.Service._observe`)
and then :func:`check`. On the first dead or stalled thread it calls ``on_failure`` once and
ends; the service then logs CRITICAL, raises ``monitoring_offline``, says ``offline`` on
``jinmei/<mine>/status`` and ``jinmei run`` exits with :data:`EXIT_FAILED` so that systemd
(``Restart=on-failure``) starts it again. The supervisor itself is watched by the main thread
of ``jinmei run`` (:meth:`Supervisor.alive`). A process frozen whole (a C call that never
lets the GIL go) stops its MQTT keep-alives as well: the broker then publishes every mine's Last
Will within 1.5 keep-alives (45 s) — offline is still said, though no alert can be sent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["CHECK_S", "EXIT_FAILED", "Failure", "Supervisor", "Watch", "check"]

log = logging.getLogger(__name__)

CHECK_S = 1.0  # jinmei's own: a failure is seen within a second of stall_s
EXIT_FAILED = 3  # `jinmei run` exit code when supervision stopped the service


@dataclass(frozen=True, slots=True)
class Watch:
    """One watched thread: its name, whether it runs, and its loop's heartbeat."""

    name: str
    alive: Callable[[], bool]
    heartbeat: Callable[[], float]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the service must stop: ``reason`` is ``worker_dead`` or ``worker_stalled``;
    ``silent_s`` how long the thread is past the turn it promised (0 for a dead one that was
    not late)."""

    thread: str
    reason: str
    detail: str
    silent_s: float

    def as_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "thread": self.thread, "detail": self.detail,
                "silent_s": round(self.silent_s, 1)}


def check(watches: Sequence[Watch], now: float, stall_s: float) -> Failure | None:
    """The first dead or stalled thread of ``watches`` at monotonic time ``now``, or None."""
    for watch in watches:
        late = now - watch.heartbeat()
        late = late if math.isfinite(late) else 0.0
        if not watch.alive():
            return Failure(watch.name, "worker_dead", "the thread has ended", max(0.0, late))
        if late > stall_s:
            return Failure(watch.name, "worker_stalled",
                           f"no turn of its loop for {late:.0f} s while it had work "
                           f"(stall_s {stall_s:g})", late)
    return None


class Supervisor:
    """The watching thread; see the module docstring. ``failure`` is set once it fired."""

    def __init__(self, watches: Sequence[Watch], stall_s: float, *,
                 on_failure: Callable[[Failure], None], observe: Callable[[], None],
                 check_s: float = CHECK_S) -> None:
        self.watches = tuple(watches)
        self.stall_s = stall_s
        self.on_failure = on_failure
        self.observe = observe
        self.check_s = check_s
        self.failure: Failure | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jinmei-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def check(self) -> Failure | None:
        """The failure found, or what :func:`check` finds now (for the health endpoint)."""
        return self.failure or check(self.watches, time.monotonic(), self.stall_s)

    def stop(self) -> None:
        """Stop watching (a clean stop: the threads are about to end on purpose)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.check_s):
            try:
                self.observe()
            except Exception:  # a bug in the watch must not end the watching
                log.exception("supervisor: observing the service failed; watching on")
            failure = check(self.watches, time.monotonic(), self.stall_s)
            if failure is not None and not self._stop.is_set():
                self.failure = failure
                self.on_failure(failure)
                return
