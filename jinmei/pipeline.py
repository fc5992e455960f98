"""The ingest worker: source → decode → detect → alert → store → acknowledge.

One worker thread runs :meth:`Pipeline.run`. Each step takes a batch of MQTT messages and:

1. decodes them (``ingest.codec``); every rejected message or reading is counted by reason and
   republished with its reason on ``jinmei/<mine>/rejects`` (a poison payload is acknowledged
   and set aside, never retried forever);
2. runs the detectors over the batch (``detectors``) and adds their status bits to the readings;
3. hands detector transitions to the alert dispatcher (``alerts.dispatch``), which commits
   them to the alert record and publishes them on ``jinmei/<mine>/alerts`` — before the
   readings are stored, so an alarm never waits for the time-series store;
4. writes the readings to the store (durable when ``write`` returns);
5. acknowledges the messages to the broker.

About once a second, with or without telemetry, the detectors' clock-driven checks run too
(``DetectorSuite.tick``), so silence itself can raise an alert. Once a minute
(``STATUS_LOG_S``) the worker logs what the last minute brought — messages, readings stored per
mine, rejects by reason, alert transitions, store retries, dead letters — so an operator sees
the service live and sees rejects go on after the first of each reason was logged in full.

A crash anywhere before 5 makes the broker redeliver the batch; the stores are idempotent on
(sensor, ts) and the alert record on (id, state, ts), and the detector state is restored from
the record's open episodes at start, so a redelivery neither loses nor duplicates anything.

For the service's supervisor (:mod:`jinmei.supervisor`) the worker keeps ``heartbeat`` (set
each turn; during a store retry, the end of the backoff), ``write_failing_since_ms`` (while
its own writes fail and it holds the batch: jinmei is blind, ``monitoring_offline`` comes from
it) and ``store_failing_since_ms`` / ``store_error`` (its writes or the store's background
delivery failing: ``store_fault``).

**Fault isolation at the message boundary.** Nothing in one message may stop ingest for the
others. An unexpected exception (a bug of jinmei's, set off by one message) is caught in the
step it came from, and that step alone is done again in smaller parts so that the culprit is
found; the culprit is rejected with reason ``internal_error`` (``jinmei/<mine>/rejects``,
counted) and acknowledged with the rest, the error is logged once with its traceback per place
it was raised, and the other messages go on as usual:

- the codec raised → each message decoded alone; one it raises on is rejected whole;
- a detector raised → every detector runs behind a guard (:class:`_Guarded`), so the one that
  raised gives nothing for the batch while the others' findings stand — a bug in the trend
  detector cannot swallow the power-off the limit detector found in the same batch. The failed
  detector is then given the batch's messages one at a time; a message it raises on is
  rejected ``internal_error``, and its readings are still stored with the other detectors'
  findings (the good readings kept, as the contract asks). The failed detector may have taken
  part of the batch before it raised and then sees those readings again; jinmei accepts that
  for the one detector at fault rather than copy every detector's state (the history rings of
  every sensor) before each batch. It does not add its status bits to that batch;
- the alert side raised → the transitions one at a time; one it cannot take is logged with its
  sensor (the readings are stored all the same);
- anything else → the whole batch again message by message (decode, detect, alerts for each
  message alone).

A failure of the machine rather than of a message (a full disk or an I/O error under the alert
record: ``OSError``, a transient ``sqlite3.Error``) is never blamed on a message: a transition
cannot be recorded later without being detected again, so the worker stops with the batch
unacknowledged and without evidence against its messages; the supervisor restarts the service,
the record's open episodes are restored, and the broker delivers the batch again.

**Crash quarantine.** A message that kills the process (segfault, ``os._exit``, the OOM
killer) can not be caught; the broker would deliver it again after every restart. So before
a batch is handled its messages are marked in hand (:class:`ingest.deadletter.InHand`, one
write per batch in ``<state_dir>/inhand.db``) and cleared once it is handled. Marks a dead
process left are suspects: after a restart they are taken one at a time, so only the culprit
gathers deliveries, and one that has been in hand at ``[ingest] quarantine_after`` deaths is
not handled again — it is stored whole as a dead letter (``<state_dir>/deadletter.db``),
acknowledged, and rejected ``internal_error``. No message can hold jinmei in a crash loop.

**Store errors by class** (:meth:`Pipeline._store`). An error the store may get over (busy,
disk full, I/O, connection refused, 5xx, 429, time-out: ``DeliveryError.retryable``) holds the
batch unacknowledged and retries with backoff; :attr:`Pipeline.store_failing_since_ms` and
:attr:`Pipeline.store_error` say since when and why (the ``store_fault`` alert reads them). A
batch the store refuses for good (``retryable`` False, or an unexpected exception in the sink)
is moved whole to the dead letters with the store's message and acknowledged: never retried
forever, never blocking the other mines; its alert transitions are already in the alert record.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import operator
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from alerts.dispatch import AlertDispatcher, alerts_topic
from alerts.episodes import Names
from alerts.record import AlertRecord
from alerts.wire import Alert, encode_alert
from config.durable import refused_for_good
from config.errors import DeliveryError
from config.model import Deployment, Registry
from config.readings import ReadingBatch
from detectors.base import Detection, Detector, Event
from detectors.suite import DetectorSuite, build_detectors
from ingest.codec import Reason, Reject, TelemetryCodec, reject_messages
from ingest.deadletter import DeadLetter, DeadLetters, InHand, fingerprint
from ingest.mqtt import SESSION_EXPIRY_S, Inbound, MqttSource
from ingest.sink import Sink
from jinmei.metrics import LatencyBuckets

if TYPE_CHECKING:
    from jinmei.reload import Reload

__all__ = ["Pipeline", "PipelineStats", "Tap"]

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0
TICK_S = 1.0
STATUS_LOG_S = 60.0  # jinmei's own: often enough to watch, rare enough to read
DETAIL_CHARS = 200  # jinmei's own: an exception's text in a reject, enough to recognise it
_TOPIC = operator.attrgetter("topic")


class Tap(Protocol):
    """Something that watches the committed batches and the alert transitions (the console),
    called on the ingest thread after the commit: it must be quick and must not raise."""

    def readings(self, batch: ReadingBatch, registry: Registry) -> None: ...

    def alerts(self, alerts: list[Alert]) -> None: ...


class _Stored(enum.Enum):
    """How a batch left :meth:`Pipeline._store`."""

    STORED = "stored"
    SET_ASIDE = "set aside"  # refused for good: in the dead letters
    STOPPED = "stopped"  # asked to stop while the store failed: nothing acknowledged


@dataclass
class PipelineStats:
    """Counters since start: what came in, what was kept, what was refused and why.

    Counters only (``alerts`` counts transitions by (mine, rule, state)): a service that runs
    for months keeps no per-alert list; the alert record holds the alerts themselves.
    """

    messages: int = 0
    readings_by_mine: Counter[str] = field(default_factory=Counter)
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    rejects_by_mine: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    store_retries: int = 0
    dead_letters: int = 0
    # For /metrics (jinmei/metrics.py reads these at scrape time; nothing here is per reading):
    messages_by_mine: Counter[str] = field(default_factory=Counter)  # "" = not a configured mine
    received_by_mine: Counter[str] = field(default_factory=Counter)  # accepted, not yet stored
    # (rule, severity, state) of every transition
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    open_episodes: Counter[tuple[str, str]] = field(default_factory=Counter)  # rule, severity
    newest_ms_by_mine: dict[str, int] = field(default_factory=dict)  # newest reading time stored
    store_write_s: LatencyBuckets = field(default_factory=LatencyBuckets)
    reloads: Counter[str] = field(default_factory=Counter)  # applied, refused, unchanged

    def since(self, before: PipelineStats) -> str:
        """One line on what came since the ``before`` snapshot, for the operator's log."""
        def listed(now: Counter[str], then: Counter[str]) -> str:
            diff = now - then
            return f" ({', '.join(f'{k} {v:,}' for k, v in sorted(diff.items()))})" if diff else ""

        states: Counter[str] = Counter()
        for (_, _, state), n in (self.alerts - before.alerts).items():
            states[state] += n
        return (f"{self.messages - before.messages:,} messages; readings stored "
                f"{self.readings_by_mine.total() - before.readings_by_mine.total():,}"
                f"{listed(self.readings_by_mine, before.readings_by_mine)}; rejects "
                f"{self.rejects_by_reason.total() - before.rejects_by_reason.total():,}"
                f"{listed(self.rejects_by_reason, before.rejects_by_reason)}; alert transitions "
                f"{states.total():,}{listed(states, Counter())}; store retries "
                f"{self.store_retries - before.store_retries:,}; dead letters "
                f"{self.dead_letters - before.dead_letters:,}")


class _Guarded:
    """One detector of the suite with its exceptions caught, so that a bug in one cannot take
    the other detectors' findings with it: a failed ``update`` (or one whose status bits do
    not fit the batch) gives nothing and leaves the exception in ``failure`` for the pipeline.
    Everything else is the detector's own (``tick`` too, where it has one)."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.name = type(inner).__name__
        self.failure: Exception | None = None

    @property
    def conditions(self) -> tuple[str, ...]:
        return self.inner.conditions

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        try:
            found = self.inner.update(batch, now)
            if len(found.status_bits) not in (0, len(batch)):
                raise ValueError(f"{len(found.status_bits)} status bits for {len(batch)} "
                                 "readings")
            return found
        except Exception as exc:
            self.failure = exc
            return Detection([], np.zeros(len(batch), dtype=np.uint16))

    def active(self) -> list[tuple[int, str]]:
        return self.inner.active()

    def restore(self, active: list[tuple[int, str]]) -> None:
        self.inner.restore(active)

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")  # not self.inner: no recursion while unset
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)


class Pipeline:
    """Wires one deployment's codec, detectors, alerts and store to an MQTT source.

    ``clock`` returns epoch seconds and is the only place time is read; ``on_alert`` is called
    with every alert transition after it is recorded and published (the demo prints them);
    ``on_stored`` with every batch once it is committed (the regulator networking files).
    ``detectors`` replaces the deployment's own suite (tests give one with a detector of
    their own making); by default :func:`detectors.suite.build_detectors`.
    """

    def __init__(self, deployment: Deployment, source: MqttSource, sink: Sink,
                 record: AlertRecord, names: Names, *,
                 clock: Callable[[], float] = time.time,
                 on_alert: Callable[[Alert], None] | None = None,
                 on_stored: Callable[[ReadingBatch], None] | None = None,
                 detectors: DetectorSuite | None = None) -> None:
        self.source = source
        self.sink = sink
        self.record = record
        self.clock = clock
        self.on_alert = on_alert
        self.on_stored = on_stored
        self.taps: list[Tap] = []  # the console's live table (jinmei/console)
        self.stats = PipelineStats()
        # Read by the supervisor (jinmei.supervisor): the monotonic time by which the loop
        # turns again (the store's state: the properties below).
        self.heartbeat = time.monotonic()
        self._reload: Reload | None = None
        self._build(deployment, names, detectors)
        state_dir = Path(deployment.ingest.state_dir)
        self.dead_letters = DeadLetters(state_dir / "deadletter.db")
        self._in_hand = InHand(state_dir / "inhand.db")
        self._mark_id: int | None = None  # the in-hand mark of the batch in hand
        # Messages in hand when the process last died (fingerprint → deliveries); the broker
        # keeps a session's messages SESSION_EXPIRY_S, so older marks are never seen again.
        self._suspects = self._in_hand.left_over(
            int((clock() - SESSION_EXPIRY_S) * 1000))
        if self._suspects:
            log.warning("%d messages were in hand when jinmei last died; each is taken alone "
                        "when it comes again (quarantined after %d deliveries)",
                        len(self._suspects), deployment.ingest.quarantine_after)
        self._write_fault: tuple[int, str] | None = None  # (since epoch ms, error)
        self._errors_seen: set[tuple[str, str]] = set()  # internal errors logged in full

    def _build(self, deployment: Deployment, names: Names,
               detectors: DetectorSuite | None = None) -> None:
        """Codec, detectors (each behind its guard) and dispatcher on the deployment's registry,
        the detectors given back the conditions of the open episodes and held events (at
        start, and at a reload)."""
        self.deployment = deployment
        self.registry = deployment.registry
        self.codec = TelemetryCodec(self.registry,
                                    max_future_ms=int(deployment.ingest.max_future_s * 1000))
        suite = (build_detectors(self.registry, deployment.detectors)
                 if detectors is None else detectors)
        self._guards = [_Guarded(member) for member in suite.members]
        self.detectors = DetectorSuite(self._guards)
        self.dispatcher = AlertDispatcher(self.registry, names, self.record,
                                          config_hash=deployment.config_hash,
                                          publish=self.source.publish,
                                          config=deployment.alerts)
        for sensor, condition in self.detectors.restore(self.dispatcher.restore()):
            log.warning("open condition %r of %s is no detector's any more; it stays open",
                        condition, self.registry.sensors[sensor].key)
        # A restored silence may end showing the last reading it showed (detectors/silence.py).
        index = self.registry.index
        self.detectors.recall({index[f"{a.mine}/{a.sensor}"]: a.value
                               for a in self.dispatcher.episodes.open()
                               if a.rule == "no_data" and f"{a.mine}/{a.sensor}" in index})
        self._mine_ids = sorted({s.mine for s in self.registry.sensors})
        mine_pos = {m: i for i, m in enumerate(self._mine_ids)}
        self._mine_of_sensor = np.array([mine_pos[s.mine] for s in self.registry.sensors],
                                        dtype=np.intp)
        self._count_open_episodes()

    def request_reload(self, reload: Reload) -> None:
        """Have the worker swap in ``reload.deployment`` at its next batch boundary
        (jinmei/reload.py); ``reload.done`` is set once it has."""
        self._reload = reload

    def _retire(self, sensors: Collection[str], config_hash: str,
                stop: threading.Event) -> bool:
        """Resolve the open episodes of sensors removed from the configuration (recorded,
        stored, published, notified); False when stopping came first."""
        retired = self.dispatcher.retire(sensors, int(self.clock() * 1000), config_hash)
        if retired:
            if self._store(ReadingBatch.empty(), retired, [], stop) is _Stored.STOPPED:
                return False
            self._announce(retired)
        return True

    def _swap(self, reload: Reload, stop: threading.Event) -> None:
        """Retire the removed sensors' open episodes, then rebuild on the new registry."""
        if not self._retire(reload.removed, reload.deployment.config_hash, stop):
            return  # stopping: the next start loads the new configuration anyway
        reload.old_dispatcher = self.dispatcher
        self.sink.use_registry(reload.deployment.registry)
        self.on_stored = reload.on_stored
        self._build(reload.deployment, reload.names)
        reload.done.set()

    @property
    def write_failing_since_ms(self) -> int | None:
        """Epoch ms since when the worker's own writes fail and it holds the batch (ingest
        stands still: jinmei is blind); None while they work."""
        fault = self._write_fault
        return fault[0] if fault else None

    @property
    def store_failing_since_ms(self) -> int | None:
        """Epoch ms of the first failure of the store's ongoing failure — the worker's own
        writes or the store's background delivery, whichever began first; None while both
        work."""
        since = [f[0] for f in (self._write_fault, self.sink.delivery_fault()) if f]
        return min(since) if since else None

    @property
    def store_error(self) -> str:
        """The store's last error while it fails ("" while it works)."""
        faults = [f for f in (self._write_fault, self.sink.delivery_fault()) if f]
        return "; ".join(error for _, error in faults)

    def close(self) -> None:
        """Close the dead letters and the in-hand marks (the worker has stopped)."""
        self.dead_letters.close()
        self._in_hand.close()

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; returns when nothing more will be emitted."""
        ingest = self.deployment.ingest
        next_tick = 0.0
        next_status, reported = time.monotonic() + STATUS_LOG_S, copy.deepcopy(self.stats)
        # Sensors removed while jinmei was stopped (or by a reload that restarted a worker):
        # their open episodes end as a reload in place ends them, never left open for good.
        if gone := self.dispatcher.unconfigured():
            self._retire(gone, self.deployment.config_hash, stop)
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            if self._reload is not None:  # a batch boundary: nothing in hand
                reload, self._reload = self._reload, None
                self._swap(reload, stop)
            messages = self.source.take(ingest.batch_max_messages, ingest.batch_wait_ms / 1000)
            if messages:
                self.process(messages, stop)
            if time.monotonic() >= next_tick:
                self.tick(stop)
                next_tick = time.monotonic() + TICK_S
            if time.monotonic() >= next_status:
                log.info("last %.0f s: %s", STATUS_LOG_S, self.stats.since(reported))
                next_status, reported = time.monotonic() + STATUS_LOG_S, copy.deepcopy(self.stats)

    def process(self, messages: list[Inbound], stop: threading.Event) -> bool:
        """Run one batch through every stage; True when it was committed and acknowledged."""
        prints = [fingerprint(m.topic, m.payload) for m in messages]
        if self._suspects and not self._suspects.keys().isdisjoint(prints):
            return self._process_suspects(messages, prints, stop)
        return self._process(messages, prints, stop)

    def _process(self, messages: list[Inbound], prints: list[bytes],
                 stop: threading.Event) -> bool:
        now_ms = int(self.clock() * 1000)
        self._mark(prints)
        try:
            batch, alerts = self._take_in(messages, now_ms)
        except Exception as exc:
            if _environment(exc):  # the machine failed, not the messages: no evidence on them
                self._unmark()
                log.critical("cannot take a batch in: %s; the worker stops, the batch stays "
                             "unacknowledged for the next start", _said(exc))
            raise  # (a bug that escaped leaves the mark: the batch counts as in hand at a death)
        outcome = self._store(batch, alerts, messages, stop)
        self._unmark()  # the process lived through the batch
        if outcome is _Stored.STOPPED:
            return False
        self.source.ack(messages)
        try:
            if outcome is _Stored.STORED:
                self._count_stored(batch)
                if self.on_stored is not None:
                    self.on_stored(batch)
                for tap in self.taps:
                    tap.readings(batch, self.registry)
            self._announce(alerts)
        except Exception as exc:  # the batch is safe; a bug after it must not stop ingest
            self._internal_error(exc, "after the batch was committed")
        return True

    def _take_in(self, messages: list[Inbound],
                 now_ms: int) -> tuple[ReadingBatch, list[Alert]]:
        """Steps 1–3, each isolating its own failures (see the module docstring); should
        anything else raise, the whole batch again message by message."""
        rejects: list[Reject] = []
        try:
            batch = self._decode(messages, now_ms, rejects)
            batch, events = self._detect(batch, messages, now_ms, rejects)
            alerts = self._dispatch(events, now_ms)
        except Exception as exc:  # a bug of jinmei's set off by some message: find which
            if _environment(exc):
                raise
            self._internal_error(exc, f"a batch of {len(messages)} messages "
                                      "(now taken one by one)")
            rejects = []
            batch, alerts = self._one_by_one(messages, now_ms, rejects)
        self.stats.messages += len(messages)
        # counted per distinct topic (a handful a batch), not per message
        for topic, n in Counter(map(_TOPIC, messages)).items():
            self.stats.messages_by_mine[self._topic_mine(topic)] += n
        counts = np.bincount(self._mine_of_sensor[batch.sensor],
                             minlength=len(self._mine_ids)).tolist()
        self.stats.received_by_mine.update(dict(zip(self._mine_ids, counts, strict=True)))
        self._set_aside(rejects, now_ms)
        return batch, alerts

    def _count_stored(self, batch: ReadingBatch) -> None:
        """Readings stored per mine and the newest reading time per mine (ingest lag)."""
        counts = np.bincount(self._mine_of_sensor[batch.sensor],
                             minlength=len(self._mine_ids)).tolist()
        self.stats.readings_by_mine.update(dict(zip(self._mine_ids, counts, strict=True)))
        if len(batch):
            newest = np.full(len(self._mine_ids), -1, dtype=np.int64)
            np.maximum.at(newest, self._mine_of_sensor[batch.sensor], batch.ts)
            for mine, ts in zip(self._mine_ids, newest.tolist(), strict=True):
                if ts > self.stats.newest_ms_by_mine.get(mine, -1):
                    self.stats.newest_ms_by_mine[mine] = ts

    def _topic_mine(self, topic: str) -> str:
        """The configured mine a telemetry topic names, else "" (a label per hostile topic
        would let any publisher grow the metrics without bound)."""
        parts = topic.split("/", 2)
        return parts[1] if len(parts) > 2 and parts[1] in self.registry.mine_ids else ""

    def _count_open_episodes(self) -> None:
        """Open episodes by (rule, severity); a pair that was open once stays, at 0, so its
        gauge series reads "none open" on the dashboard rather than vanishing (no data)."""
        now = Counter((a.rule, a.severity) for a in self.dispatcher.episodes.open())
        self.stats.open_episodes = Counter({**dict.fromkeys(self.stats.open_episodes, 0), **now})

    def _decode(self, messages: list[Inbound], now_ms: int,
                rejects: list[Reject]) -> ReadingBatch:
        """Step 1; if the codec raises, each message alone, and those it raises on are
        rejected ``internal_error`` (nothing of them can be trusted)."""
        try:
            decoded = self.codec.decode_many([(m.topic, m.payload) for m in messages], now_ms)
        except Exception as exc:
            self._internal_error(exc, f"the codec on a batch of {len(messages)} messages "
                                      "(now taken one by one)")
        else:
            rejects += decoded.rejects
            return decoded.batch
        batches = []
        for k, m in enumerate(messages):
            try:
                decoded = self.codec.decode(m.topic, m.payload, now_ms)
            except Exception as exc:
                self._internal_error(exc, f"the codec on a message on {m.topic}")
                rejects.append(_internal_reject(m, f"jinmei's decoder failed on this message "
                                                   f"({_said(exc)}); it is set aside"))
                continue
            batches.append(decoded.batch)
            # numbered as in the batch: one reject message per message (reject_messages)
            rejects += [dataclasses.replace(r, message=k) for r in decoded.rejects]
        return ReadingBatch.concat(batches)

    def _detect(self, batch: ReadingBatch, messages: list[Inbound], now_ms: int,
                rejects: list[Reject]) -> tuple[ReadingBatch, list[Event]]:
        """Step 2. A detector that raised gave nothing for the batch while the others'
        findings stand; it is then given the batch's messages one at a time, and a message it
        raises on is rejected ``internal_error`` — its readings are still stored, with the
        other detectors' findings."""
        detection = self.detectors.update(batch, now_ms)
        events = list(detection.events)
        failed = [g for g in self._guards if g.failure is not None]
        for guard in failed:
            if guard.failure is not None:
                self._internal_error(guard.failure, f"detector {guard.name} on "
                                     f"{len(messages)} messages (now given them one by one)")
            guard.failure = None
        for m in messages if failed else []:
            try:
                alone = self.codec.decode(m.topic, m.payload, now_ms).batch
            except Exception:  # the codec's own culprit, rejected by _decode already
                continue
            failures = []
            for guard in failed:
                try:
                    events += guard.inner.update(alone, now_ms).events
                except Exception as exc:
                    self._internal_error(exc, f"detector {guard.name} on a message on {m.topic}")
                    failures.append(f"detector {guard.name} ({_said(exc)})")
            if failures:
                rejects.append(_internal_reject(
                    m, f"{', '.join(failures)} failed on this message; its readings are "
                       "stored with the other detectors' findings"))
        return batch.with_status(batch.status | detection.status_bits), events

    def _dispatch(self, events: list[Event], now_ms: int) -> list[Alert]:
        """Step 3; if the alert side raises, the transitions one at a time, and one it cannot
        take is logged (the readings are stored all the same)."""
        try:
            return self.dispatcher.apply(events, now_ms)
        except Exception as exc:
            if _environment(exc):
                raise
            self._internal_error(exc, f"the alert side with {len(events)} transitions "
                                      "(now taken one by one)")
        alerts: list[Alert] = []
        for event in events:
            try:
                alerts += self.dispatcher.apply([event], now_ms)
            except Exception as exc:
                if _environment(exc):
                    raise
                self._internal_error(exc, "the alert side")
                log.error("transition lost to an internal error: %s %s %s of %s at %d",
                          event.rule, event.condition, "firing" if event.firing else "ending",
                          self.registry.sensors[event.sensor].key, event.ts)
        return alerts

    def _one_by_one(self, messages: list[Inbound], now_ms: int,
                    rejects: list[Reject]) -> tuple[ReadingBatch, list[Alert]]:
        """The last resort: steps 1–3 for each message alone; one that raises is rejected
        ``internal_error`` and the others are kept."""
        batches: list[ReadingBatch] = []
        alerts: list[Alert] = []
        for k, m in enumerate(messages):
            own: list[Reject] = []
            try:
                batch = self._decode([m], now_ms, own)
                batch, events = self._detect(batch, [m], now_ms, own)
                alerts += self._dispatch(events, now_ms)
            except Exception as exc:
                if _environment(exc):
                    raise
                self._internal_error(exc, f"a message on {m.topic}")
                rejects.append(_internal_reject(m, f"jinmei failed on this message "
                                                   f"({_said(exc)}); it is set aside"))
                continue
            batches.append(batch)
            rejects += [dataclasses.replace(r, message=k) for r in own]
        return ReadingBatch.concat(batches), alerts

    def _process_suspects(self, messages: list[Inbound], prints: list[bytes],
                          stop: threading.Event) -> bool:
        """A batch holding messages that were in hand when the process died: the others go
        on in batches, each suspect alone, and one at its ``quarantine_after``-th delivery is
        quarantined instead."""
        limit = self.deployment.ingest.quarantine_after
        run: list[Inbound] = []
        run_prints: list[bytes] = []
        for message, print_ in zip(messages, prints, strict=True):
            deliveries = self._suspects.get(print_)
            if deliveries is None:
                run.append(message)
                run_prints.append(print_)
                continue
            if run and not self._process(run, run_prints, stop):
                return False
            run, run_prints = [], []
            if deliveries >= limit:
                self._quarantine(message, print_, deliveries)
            elif not self._process([message], [print_], stop):
                return False
            else:
                self._forget(print_)
            del self._suspects[print_]
        return not run or self._process(run, run_prints, stop)

    def _quarantine(self, message: Inbound, print_: bytes, deliveries: int) -> bool:
        """Store the message as a dead letter, acknowledge it and reject it; False (and the
        message left unacknowledged) when the dead letter cannot be written."""
        detail = (f"quarantined after {deliveries} deliveries: jinmei died each time it had "
                  "this message in hand; it is kept whole in the dead letters")
        try:
            self.dead_letters.add([DeadLetter("quarantine", message.topic, message.payload,
                                              detail)])
        except DeliveryError as exc:
            log.error("cannot quarantine a message on %s (%s); it stays unacknowledged",
                      message.topic, exc)
            return False
        log.error("quarantined a message on %s (fingerprint %s) after %d deliveries",
                  message.topic, print_.hex(), deliveries)
        self._forget(print_)
        self.source.ack([message])
        self.stats.messages += 1
        self.stats.dead_letters += 1
        self._set_aside([_internal_reject(message, detail)], int(self.clock() * 1000))
        return True

    def tick(self, stop: threading.Event) -> None:
        """Run the clock-driven checks (no readings involved)."""
        now_ms = int(self.clock() * 1000)
        try:
            alerts = self.dispatcher.apply(self.detectors.tick(now_ms).events, now_ms)
        except Exception as exc:  # the next tick may do better; ingest goes on meanwhile
            if _environment(exc):
                raise
            self._internal_error(exc, "the clock-driven checks")
            return
        if alerts and self._store(ReadingBatch.empty(), alerts, [], stop) is not _Stored.STOPPED:
            self._announce(alerts)

    def _announce(self, alerts: list[Alert]) -> None:
        self.stats.alerts.update((a.mine, a.rule, a.state) for a in alerts)
        self.stats.transitions.update((a.rule, a.severity, a.state) for a in alerts)
        self._count_open_episodes()
        if self.on_alert:
            for alert in alerts:
                self.on_alert(alert)
        for tap in self.taps:
            tap.alerts(alerts)

    def _internal_error(self, exc: Exception, where: str) -> None:
        """Log a bug of jinmei's with its traceback, once per place it was raised from."""
        frames = traceback.extract_tb(exc.__traceback__)
        key = (type(exc).__name__, f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "")
        if key not in self._errors_seen:
            self._errors_seen.add(key)
            log.error("internal error on %s — further ones raised at %s only counted", where,
                      key[1] or "the same place", exc_info=exc)

    def _mark(self, prints: list[bytes]) -> None:
        """Mark the batch's messages in hand (the crash quarantine's evidence)."""
        try:
            self._mark_id = self._in_hand.mark(prints)
        except DeliveryError as exc:  # only the quarantine's evidence is missing; go on
            log.warning("cannot mark messages in hand (%s); a crash now is not remembered", exc)

    def _unmark(self) -> None:
        """Drop the mark of the batch in hand: the process lived through it."""
        if self._mark_id is not None:
            try:
                self._in_hand.clear(self._mark_id)
            except DeliveryError as exc:
                log.warning("cannot clear an in-hand mark (%s)", exc)
            self._mark_id = None

    def _forget(self, print_: bytes) -> None:
        """A suspect handled (or quarantined) and the process lives: no longer a suspect."""
        try:
            self._in_hand.forget(print_)
        except DeliveryError as exc:
            log.warning("cannot clear a suspect (%s)", exc)

    def _set_aside(self, rejects: list[Reject], now_ms: int) -> None:
        """Count every reject by reason and mine; publish one reject message per message."""
        for reject in rejects:
            if self.stats.rejects_by_reason[reject.reason] == 0:
                # a repeated warning is logged once; the counters keep the totals
                log.warning("rejected (%s) on %s: %s — further ones only counted",
                            reject.reason, reject.topic, reject.detail)
            self.stats.rejects_by_reason[reject.reason] += 1
            self.stats.rejects_by_mine[reject.mine] += 1
        for topic, body in reject_messages(rejects, now_ms):
            self.source.publish(topic, body)

    def _store(self, batch: ReadingBatch, alerts: list[Alert], messages: list[Inbound],
               stop: threading.Event) -> _Stored:
        """Write until the store accepts (STORED); a batch it refuses for good goes to the dead
        letters (SET_ASIDE); STOPPED if asked to stop first (nothing is acknowledged then)."""
        delay = 0.5
        readings_written = not len(batch)
        while True:
            started = time.perf_counter()
            try:
                if not readings_written:
                    self.sink.write(batch)
                    readings_written = True
                if alerts:
                    self.sink.write_alerts(alerts)
                self.stats.store_write_s.observe(time.perf_counter() - started)
                self._write_fault = None
                return _Stored.STORED
            except DeliveryError as exc:
                error, for_good = str(exc), not exc.retryable
            except Exception as exc:  # a bug in the sink: the same data would hit it again
                for_good = not _environment(exc)  # ... unless the machine is at fault
                if for_good:
                    self._internal_error(exc, f"store {self.sink.name}")
                error = f"{self.sink.name}: {type(exc).__name__}: {exc}"
            self._unmark()  # the process lived through the batch; the store is not its fault
            outage_begins = self._write_fault is None
            now_ms = int(self.clock() * 1000)
            self._write_fault = (self._write_fault[0] if self._write_fault else now_ms, error)
            if for_good:
                letters = (_store_letters(messages, error) if not readings_written
                           else [DeadLetter("store", alerts_topic(a.mine), encode_alert(a), error)
                                 for a in alerts])
                try:
                    self.dead_letters.add(letters)
                except DeliveryError as dead:
                    error = f"{error}; the dead letters failed too: {dead}"
                else:
                    log.error("store %s refused %d readings for good (%s); %d messages set aside "
                              "in %s", self.sink.name, len(batch), error, len(letters),
                              self.dead_letters.path)
                    self.stats.dead_letters += len(letters)
                    return _Stored.SET_ASIDE
            self.stats.store_retries += 1
            if outage_begins:
                log.error("store %s failed (%s); holding %d readings and retrying",
                          self.sink.name, error, len(batch))
            self.heartbeat = time.monotonic() + delay  # a deliberate wait, not a stall
            if stop.wait(delay):
                return _Stored.STOPPED
            delay = min(delay * 2, RETRY_MAX_S)


def _environment(exc: Exception) -> bool:
    """A failure of the machine rather than of a message — a full disk, an I/O error, a
    locked database under the alert record — never blamed on a message: the step cannot be
    redone without losing a transition, so the worker stops (its supervisor restarts the
    service; the broker delivers the unacknowledged batch again)."""
    return isinstance(exc, OSError) or (isinstance(exc, sqlite3.Error)
                                        and not refused_for_good(exc))


def _said(exc: Exception) -> str:
    """An exception in a few words for a reject's detail."""
    return f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]


def _store_letters(messages: list[Inbound], reason: str) -> list[DeadLetter]:
    return [DeadLetter("store", m.topic, m.payload, reason) for m in messages]


def _internal_reject(message: Inbound, detail: str) -> Reject:
    """An ``internal_error`` reject of the whole message (the topic's second level is its
    mine: the subscription takes ``jinmei/+/telemetry/#`` only)."""
    parts = message.topic.split("/")
    return Reject(Reason.INTERNAL_ERROR, detail, parts[1] if len(parts) > 1 else "",
                  message.topic, payload=message.payload)
