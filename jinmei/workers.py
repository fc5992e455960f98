"""Workers by mine: ``jinmei run`` on every core, and on several machines by configuration.

One ``jinmei run`` process decodes, detects and stores on one core (the interpreter lock).
With ``[ingest] workers = N`` (default 0: one per core, never more than there are mines; 1:
everything in one process, as before) the command becomes a parent that starts N worker
processes, each the whole single-process service (:class:`jinmei.service.Service`) for a
fixed subset of the mines:

- **Assignment** (:func:`assign`): the sorted mine ids dealt round-robin — stable for a given
  configuration and N, predictable by an operator, and logged at start (``worker 0: dayan,
  …``). Changing N or the mine list moves mines between workers (see "Sessions" below).
- **Its own everything**: MQTT session ``<client_id>-<its mines>-w<k>`` subscribed only to
  ``jinmei/<mine>/telemetry/#`` of its mines (so a mine's unacknowledged messages wait in that
  worker's session while it is restarted), detector state, alert record, alert outbox and
  system alerts, and the InfluxDB spool, all under ``<state_dir>/worker-<k>/``. Telemetry of a
  mine that is not configured reaches no worker: the parent refuses it instead, with the
  reject one process gives (``unknown_mine`` on ``jinmei/<mine>/rejects``, rate-limited), by
  a light watcher of ``jinmei/+/telemetry/#`` at QoS 0 (:mod:`jinmei.strays`) — not with
  ``--mines``, where the other mines are other machines'.
- **The SQLite store is shared**: every worker writes the one ``[store] url`` file (WAL; a
  writer waits up to 10 s for the other's commit — ``ingest.sqlite.connect_durable``), so
  Grafana, ``jinmei report`` and every reader of readings find all mines in one place. Writes
  to one SQLite file are serialized: measured in bench/RESULTS.md ("Third session"), the
  InfluxDB store is the one that scales with workers.
- **Readers of the alert state**: ``jinmei alerts`` and ``jinmei report daily`` read every
  worker's state file, and a silence is written to each (jinmei.cli_alerts);
  ``jinmei networking status|export`` use every worker's upload queue (jinmei.cli_networking).

The parent supervises: a worker that exits — any code but 2, 3 (its own supervision failed)
or killed — is started again after a backoff (``RESTART_MIN_S`` doubling to
``RESTART_MAX_S``); more than ``RESTART_LIMIT`` exits of one worker within
``RESTART_WINDOW_S`` and the parent stops the others and exits with
:data:`~jinmei.supervisor.EXIT_FAILED` (3), for systemd to restart the whole. A worker that
exits 2 (its configuration, or the broker, refused it: a wrong password, an untrusted
certificate) is not restarted: the parent stops the others and exits 2 at once, as one
process does. SIGTERM and SIGINT are forwarded and the parent waits for every worker's clean
stop (batch finished and acknowledged); SIGHUP makes the parent reread the configuration and,
if it is valid, each worker stops cleanly and is started again at once on the new files (the
assignment stays the one computed at the parent's start); a broken file is refused and the
workers go on. A worker whose parent is gone (``kill -9`` of the parent) stops by itself
within a second, as a failure: ``monitoring_offline`` (``worker_dead``, scope
``jinmei-parent``) to the receivers, status ``offline``, exit 3; the next start resolves it
once online.

**A worker frozen whole** (``SIGSTOP``, a C call that never lets the interpreter lock go)
cannot report itself: its own supervisor thread is frozen with it. Each worker therefore
writes a byte every ``BEAT_S`` to a pipe its parent made for it (:func:`beat`, a thread of
its own); a running worker silent for ``[ingest] stall_s`` (for its first beat, at least
``START_GRACE_S``: start-up under load) is logged CRITICAL, killed
(``SIGKILL``) and started again like any exit. **A worker that went without saying so** —
killed so, killed by a signal from elsewhere (the OOM killer), or ended by anything but a
clean stop, a refusal (2) or its own supervision (3, which raised the alert itself) — is
reported by its next start: the parent hands it the loss (:data:`LOST_ENV`: condition
``worker_stalled`` or ``worker_dead``, since when, what), and the worker raises
``monitoring_offline`` for it at once through its outbox (its mines were unwatched meanwhile),
resolved as soon as it is subscribed again (:func:`report_lost`). Receivers thus hear of every
gap in the watching, with its start, even when the worker could not tell them itself.

**The operator endpoint** (``[http] listen``) is the parent's: each worker serves its own on
a loopback socket the parent made (:class:`jinmei.http.WorkerEndpoint`), and the parent
answers ``/healthz``, ``/readyz``, ``/metrics`` and the console for all of them
(:mod:`jinmei.parent`, :mod:`jinmei.console.relay`).

``jinmei run --mines a,b`` runs only the named mines (spread mines over machines by
configuration; an unknown id exits 2 naming the configured ones); its MQTT session is
``<client_id>-<a+b>`` (a digest of the ids when they are many) so machines sharing a
configuration file do not take over each other's session, and its workers split those mines.

Sessions: a worker's session holds what its mines' publishers sent while it was away. If N or
the mine list changes, a mine may move to a worker with another session; what the old session
still holds is not taken over (the old session expires after a week). Stop publishers or let
the service drain before changing either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from config.errors import UsageError
from config.model import Deployment
from ingest.mqtt import TELEMETRY_TOPIC, mine_topic
from jinmei.http import WORKER_FD_ENV, WORKER_KEY_ENV
from jinmei.supervisor import EXIT_FAILED, Failure

__all__ = ["BEAT_ENV", "BEAT_S", "LOST_ENV", "RESTART_LIMIT", "RESTART_WINDOW_S", "WorkerParent",
           "WorkerState", "as_worker", "assign", "beat", "cores", "lost_from_environment",
           "select_mines", "shares", "telemetry_topics", "worker_count"]

log = logging.getLogger(__name__)

# jinmei's own restart policy, after systemd's StartLimitBurst: a worker that keeps dying is a
# fault to report (exit 3), not to hide behind endless restarts.
RESTART_MIN_S, RESTART_MAX_S = 0.5, 30.0
EXIT_USAGE = 2  # `jinmei run`'s code for a configuration (or broker) refusal: no restart mends it
RESTART_LIMIT, RESTART_WINDOW_S = 5, 300.0
STABLE_S = 60.0  # a worker that ran this long starts its backoff again from RESTART_MIN_S
STOP_WAIT_S = 60.0  # a clean stop finishes a batch; past this the worker is killed
POLL_S = 0.2
MAX_ID_PART = 40  # mine ids in a session id: beyond this, a digest of them
BEAT_S = 0.5  # jinmei's own: a worker's beat to its parent; silence for stall_s is a freeze
START_GRACE_S = 30.0  # jinmei's own: a worker's first beat may wait for interpreter start-up
BEAT_ENV = "JINMEI_WORKER_BEAT_FD"  # the write end of the worker's beat pipe
LOST_ENV = "JINMEI_WORKER_LOST"  # what the previous run of this worker could not report


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def assign(mine_ids: Sequence[str], n: int) -> tuple[tuple[str, ...], ...]:
    """The mines of each of ``n`` workers: sorted ids dealt round-robin.

    >>> assign(["qipanjing", "dayan", "wuhai"], 2)
    (('dayan', 'wuhai'), ('qipanjing',))
    """
    ordered = sorted(mine_ids)
    return tuple(tuple(ordered[k::n]) for k in range(n))


def worker_count(configured: int, n_mines: int, available: int) -> int:
    """Workers to run: the configured number (0: one per core), at most one per mine."""
    return max(1, min(configured or available, n_mines))


def shares(deployment: Deployment) -> tuple[tuple[str, ...], ...]:
    """The mines of each process ``jinmei run`` starts for ``deployment`` on this machine:
    one share for a single process, else one per worker (:func:`assign`)."""
    mine_ids = [m.id for m in deployment.mines]
    return assign(mine_ids, worker_count(deployment.ingest.workers, len(mine_ids), cores()))


def select_mines(deployment: Deployment, names: str) -> Deployment:
    """The deployment with only the mines named in ``--mines a,b`` (in the configured order)."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [m.id for m in deployment.mines]
    unknown = [n for n in wanted if n not in known]
    if not wanted or unknown:
        what = f"unknown mine {', '.join(map(repr, unknown))}" if unknown else "no mine named"
        raise UsageError("--mines", f"{what}; the configuration has {', '.join(known)}")
    mines = tuple(m for m in deployment.mines if m.id in wanted)
    names = "+".join(m.id for m in mines)
    if len(names) > MAX_ID_PART:  # many mines: a digest keeps the session id short
        names = "m" + hashlib.sha256(names.encode()).hexdigest()[:12]
    broker = dataclasses.replace(deployment.broker,
                                 client_id=f"{deployment.broker.client_id}-{names}")
    return dataclasses.replace(deployment, mines=mines, broker=broker)


def as_worker(deployment: Deployment, index: int) -> Deployment:
    """Worker ``index``'s deployment: its own session id and state folder, and not the
    parent's ``[http] listen`` (it serves on the loopback socket its parent hands it, if any:
    :class:`jinmei.http.WorkerEndpoint`; the caller has already kept only its mines with
    :func:`select_mines`)."""
    broker = dataclasses.replace(deployment.broker,
                                 client_id=f"{deployment.broker.client_id}-w{index}")
    ingest = dataclasses.replace(deployment.ingest, workers=1,
                                 state_dir=str(Path(deployment.ingest.state_dir) /
                                               f"worker-{index}"))
    return dataclasses.replace(deployment, broker=broker, ingest=ingest,
                               http=dataclasses.replace(deployment.http, listen=""))


def telemetry_topics(deployment: Deployment, every_mine: bool) -> str | tuple[str, ...]:
    """What to subscribe to: everything (so unknown mines are rejected with their reason)
    for the whole deployment in one process, else only the deployment's mines (a worker's
    parent refuses the unknown ones: :mod:`jinmei.strays`)."""
    return TELEMETRY_TOPIC if every_mine else tuple(mine_topic(m.id) for m in deployment.mines)


@dataclass(frozen=True)
class WorkerState:
    """What the parent knows of one worker now (for its operator endpoint)."""

    index: int
    mines: tuple[str, ...]
    pid: int | None  # None: not running
    port: int | None  # its endpoint's loopback port (None: no endpoint)
    restarts: int  # starts after an exit (not counting SIGHUP's)
    restart_in_s: float | None  # while not running: when it is started again

    @property
    def name(self) -> str:
        return f"worker {self.index} ({', '.join(self.mines)})"


@dataclass
class _Slot:
    """One worker: its mines, its process and its restart history."""

    index: int
    mines: tuple[str, ...]
    sock: socket.socket | None = None  # its endpoint's listening socket, kept over restarts
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    exits: deque[float] = field(default_factory=deque)
    backoff_s: float = RESTART_MIN_S
    start_at: float = 0.0  # monotonic time of the next start while not running
    reload: bool = False  # stopped on purpose by SIGHUP: start again at once
    restarts: int = 0
    beats: int | None = None  # the read end of its beat pipe while it runs
    beat: float = 0.0  # monotonic time of its last beat (or of its start)
    beaten: bool = False  # a beat came since its start
    lost: Failure | None = None  # what its next start reports (set when the parent kills it)
    lost_at_ms: int = 0  # when the loss began (epoch ms)


class WorkerParent:
    """Starts and keeps alive one ``jinmei run --mines … --worker k`` process per share.

    ``command(index, mines)`` is the worker's argv. :meth:`run` returns the parent's exit code:
    0 after a forwarded SIGTERM/SIGINT, :data:`EXIT_FAILED` when a worker cannot be kept alive.
    With ``endpoints``, each worker serves its operator endpoint on a loopback socket the parent
    makes once and hands to every start of that worker (so its port never changes, and no other
    process can take it while the worker restarts), and its console answers requests carrying
    :attr:`key` only (:mod:`jinmei.parent`). ``on_reload`` runs on SIGHUP: it rereads the
    configuration, and only when it returns True (the files are valid) are the workers
    restarted — a broken file leaves them running, as a refused reload does in one process.
    A running worker whose beat is silent for ``stall_s`` is killed (module docstring).
    """

    def __init__(self, shares: Sequence[tuple[str, ...]],
                 command: Callable[[int, tuple[str, ...]], list[str]], *,
                 endpoints: bool = False, on_reload: Callable[[], bool] | None = None,
                 stall_s: float = 30.0) -> None:
        self.slots = [_Slot(k, mines, socket.create_server(("127.0.0.1", 0))
                            if endpoints else None) for k, mines in enumerate(shares)]
        self.command = command
        self.key = secrets.token_urlsafe(32)
        self.on_reload = on_reload
        self.stall_s = stall_s
        self._stopping: int | None = None  # the signal that asked us to stop
        self._reload = False

    def states(self) -> list[WorkerState]:
        """Every worker's state, as the supervision loop last saw it (any thread may ask)."""
        now = time.monotonic()
        states = []
        for slot in self.slots:
            process = slot.process  # one read: the loop may replace it meanwhile
            running = process is not None and process.returncode is None
            states.append(WorkerState(
                slot.index, slot.mines, process.pid if process and running else None,
                slot.sock.getsockname()[1] if slot.sock else None, slot.restarts,
                None if running else max(0.0, slot.start_at - now)))
        return states

    def _signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stopping = signum

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._signal)
        for slot in self.slots:
            log.info("worker %d: %s", slot.index, ", ".join(slot.mines))
            self._start(slot)
        while self._stopping is None:
            time.sleep(POLL_S)
            if self._reload:
                self._reload = False
                if self.on_reload is None or self.on_reload():
                    self._forward(signal.SIGHUP, reload=True)
            for slot in self.slots:
                code = self._keep(slot, time.monotonic())
                if code == EXIT_USAGE:
                    log.critical("worker %d (%s) exited %d: its configuration or the broker "
                                 "refused it (its message is above) and a restart cannot mend "
                                 "that; stopping the other workers and exiting %d", slot.index,
                                 ", ".join(slot.mines), code, code)
                elif code is not None:
                    log.critical("worker %d (%s) exited %d times within %.0f s: giving up; "
                                 "stopping the other workers and exiting %d", slot.index,
                                 ", ".join(slot.mines), len(slot.exits), RESTART_WINDOW_S,
                                 code)
                if code is not None:
                    self._stop_all(signal.SIGTERM)
                    return code
        log.info("%s: stopping %d workers", signal.Signals(self._stopping).name,
                 len(self.slots))
        return 0 if self._stop_all(self._stopping) else 1

    def _start(self, slot: _Slot) -> None:
        beats, beat_w = os.pipe()
        os.set_blocking(beats, False)
        env = {**os.environ, BEAT_ENV: str(beat_w)}
        env.pop(LOST_ENV, None)
        fds: tuple[int, ...] = (beat_w,)
        if slot.sock is not None:
            fd = slot.sock.fileno()
            env, fds = {**env, WORKER_FD_ENV: str(fd), WORKER_KEY_ENV: self.key}, (*fds, fd)
        if slot.lost is not None:
            env[LOST_ENV] = json.dumps({**slot.lost.as_dict(), "since_ms": slot.lost_at_ms})
        try:
            slot.process = subprocess.Popen(self.command(slot.index, slot.mines), env=env,
                                            pass_fds=fds)
        finally:
            os.close(beat_w)
        slot.beats, slot.beat, slot.beaten, slot.lost = beats, time.monotonic(), False, None
        slot.started = slot.beat
        slot.reload = False

    def _listen(self, slot: _Slot, process: subprocess.Popen[bytes], now: float) -> None:
        """Take ``slot``'s beats; kill the worker if it has been silent for ``stall_s``."""
        try:
            if slot.beats is not None and os.read(slot.beats, 65536):
                slot.beat, slot.beaten = now, True  # (b"": the worker closed it: ending)
        except BlockingIOError:  # nothing since the last look
            pass
        silent = now - slot.beat
        allowed = self.stall_s if slot.beaten else max(self.stall_s, START_GRACE_S)
        if silent > allowed and slot.lost is None:
            slot.lost = Failure(
                f"worker {slot.index} ({', '.join(slot.mines)})", "worker_stalled",
                f"the worker process gave no sign of life for {silent:.0f} s "
                f"(stall_s {self.stall_s:g}): frozen; killed and started again", silent)
            slot.lost_at_ms = int((time.time() - silent) * 1000)
            log.critical("worker %d (%s) gave no sign of life for %.0f s (stall_s %g): it is "
                         "frozen and its mines are unwatched; killing it (SIGKILL) to start it "
                         "again", slot.index, ", ".join(slot.mines), silent, self.stall_s)
            process.kill()

    def _ended(self, slot: _Slot, code: int) -> None:
        """Note what the worker's exit leaves unreported, for its next start to report."""
        if slot.beats is not None:
            os.close(slot.beats)
            slot.beats = None
        if slot.lost is None and code not in (0, EXIT_USAGE, EXIT_FAILED):
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            slot.lost = Failure(f"worker {slot.index} ({', '.join(slot.mines)})",
                                "worker_dead", f"the worker process ended ({how}) without "
                                "reporting it; started again", 0.0)
            slot.lost_at_ms = int(time.time() * 1000)

    def _keep(self, slot: _Slot, now: float) -> int | None:
        """Start ``slot`` again if it is due; the parent's exit code once it cannot be kept
        alive: :data:`EXIT_USAGE` when it exited so, :data:`EXIT_FAILED` after too many exits."""
        process = slot.process
        if process is not None:
            code = process.poll()
            if code is None:
                self._listen(slot, process, now)
                return None
            slot.process = None
            self._ended(slot, code)
            if code == EXIT_USAGE:
                return EXIT_USAGE
            if slot.reload and code == 0:
                slot.start_at = now
            else:
                if now - slot.started >= STABLE_S:
                    slot.backoff_s = RESTART_MIN_S
                slot.exits.append(now)
                while slot.exits and now - slot.exits[0] > RESTART_WINDOW_S:
                    slot.exits.popleft()
                if len(slot.exits) > RESTART_LIMIT:
                    return EXIT_FAILED
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                log.error("worker %d (%s) exited (%s); starting it again in %.1f s",
                          slot.index, ", ".join(slot.mines), how, slot.backoff_s)
                slot.start_at = now + slot.backoff_s
                slot.backoff_s = min(slot.backoff_s * 2, RESTART_MAX_S)
                slot.restarts += 1
        if now >= slot.start_at:
            self._start(slot)
        return None

    def _forward(self, signum: int, *, reload: bool = False) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.reload = reload
                slot.process.send_signal(signum)

    def _stop_all(self, signum: int) -> bool:
        """Forward ``signum`` and wait for every worker; True if all stopped cleanly."""
        self._forward(signum)
        clean = True
        deadline = time.monotonic() + STOP_WAIT_S
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                code = slot.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d did not stop within %.0f s: killing it", slot.index,
                          STOP_WAIT_S)
                slot.process.kill()
                code = slot.process.wait()
            clean = clean and code == 0
        return clean


def beat() -> None:
    """A worker's beat to its parent (module docstring): a byte every :data:`BEAT_S` on the
    pipe of :data:`BEAT_ENV`, from a daemon thread, for as long as the process lives — a clean
    stop that takes a while is no freeze; nothing without the pipe."""
    fd = os.environ.get(BEAT_ENV)
    if not fd:
        return
    beats = int(fd)
    os.set_blocking(beats, False)

    def run() -> None:
        while True:
            try:
                os.write(beats, b".")
            except BlockingIOError:  # the parent is behind: it has had its beats
                pass
            except OSError:  # the parent is gone: the worker's main loop stops on that
                return
            time.sleep(BEAT_S)

    threading.Thread(target=run, name="jinmei-beat", daemon=True).start()


def lost_from_environment() -> tuple[Failure, int] | None:
    """What the parent says the previous run of this worker could not report (and since when,
    epoch ms), or None."""
    given = os.environ.get(LOST_ENV)
    if not given:
        return None
    try:
        lost = json.loads(given)
        return (Failure(str(lost["thread"]), str(lost["reason"]), str(lost["detail"]),
                        float(lost["silent_s"])), int(lost["since_ms"]))
    except (ValueError, KeyError, TypeError):
        log.error("%s=%r is not what a parent writes: ignored", LOST_ENV, given)
        return None


def worker_argv(argv: Sequence[str], index: int, mines: tuple[str, ...]) -> list[str]:
    """The command line of worker ``index``: this interpreter, ``jinmei run`` with the
    options the parent was given, and the worker's mines."""
    return [sys.executable, "-m", "jinmei.cli", *argv, "--mines", ",".join(mines),
            "--worker", str(index)]
