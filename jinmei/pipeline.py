"""The ingest worker: source → decode → detect → alert → store → acknowledge.

One worker thread runs :meth:`Pipeline.run`. Each step takes a batch of MQTT messages and:

1. decodes them (``ingest.codec``); every rejected message or reading is counted by reason and
   republished with its reason on ``jinmei/<mine>/rejects`` (a poison payload is acknowledged
   and set aside, never retried forever);
2. runs the detectors over the batch (``detectors``) and adds their status bits to the readings;
3. hands detector transitions to the alert dispatcher (``alerts.dispatch``), which commits
   them to the alert record and publishes them on ``jinmei/<mine>/alerts`` — before the
   readings are stored, so an alarm never waits for the time-series store;
4. writes the readings to the store (durable when ``write`` returns; retried with backoff while
   it fails, holding the acknowledgement);
5. acknowledges the messages to the broker.

About once a second, with or without telemetry, the detectors' clock-driven checks run too
(``DetectorSuite.tick``), so silence itself can raise an alert. Once a minute
(``STATUS_LOG_S``) the worker logs what the last minute brought — messages, readings stored per
mine, rejects by reason, alert transitions, store retries — so an operator sees the service
live and sees rejects go on after the first of each reason was logged in full.

A crash anywhere before 5 makes the broker redeliver the batch; the stores are idempotent on
(sensor, ts) and the alert record on (id, state, ts), and the detector state is restored from
the record's open episodes at start, so a redelivery neither loses nor duplicates anything.
"""

from __future__ import annotations

import copy
import logging
import operator
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.errors import DeliveryError
from config.model import Deployment
from config.readings import ReadingBatch
from detectors.suite import build_detectors
from ingest.codec import Reject, TelemetryCodec, reject_message
from ingest.mqtt import Inbound, MqttSource
from ingest.sink import Sink
from jinmei.metrics import LatencyBuckets

if TYPE_CHECKING:
    from jinmei.reload import Reload

__all__ = ["Pipeline", "PipelineStats"]

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0
TICK_S = 1.0
STATUS_LOG_S = 60.0  # jinmei's own: often enough to watch, rare enough to read
_TOPIC = operator.attrgetter("topic")


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
    # For /metrics (jinmei/metrics.py reads these at scrape time; nothing here is per reading):
    messages_by_mine: Counter[str] = field(default_factory=Counter)  # "" = not a configured mine
    received_by_mine: Counter[str] = field(default_factory=Counter)  # accepted, not yet stored
    # (rule, severity, state) of every transition
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    open_episodes: Counter[tuple[str, str]] = field(default_factory=Counter)  # rule, severity
    newest_ms_by_mine: dict[str, int] = field(default_factory=dict)  # newest reading time stored
    store_write_s: LatencyBuckets = field(default_factory=LatencyBuckets)
    store_failing: bool = False
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
                f"{self.store_retries - before.store_retries:,}")


class Pipeline:
    """Wires one deployment's codec, detectors, alerts and store to an MQTT source.

    ``clock`` returns epoch seconds and is the only place time is read; ``on_alert`` is called
    with every alert transition after it is recorded and published (the demo prints them);
    ``on_stored`` with every batch once it is committed (the regulator networking files).
    """

    def __init__(self, deployment: Deployment, source: MqttSource, sink: Sink,
                 record: AlertRecord, names: Names, *,
                 clock: Callable[[], float] = time.time,
                 on_alert: Callable[[Alert], None] | None = None,
                 on_stored: Callable[[ReadingBatch], None] | None = None) -> None:
        self.source = source
        self.sink = sink
        self.record = record
        self.clock = clock
        self.on_alert = on_alert
        self.on_stored = on_stored
        self.stats = PipelineStats()
        self._reload: Reload | None = None
        self._build(deployment, names)

    def _build(self, deployment: Deployment, names: Names) -> None:
        """Codec, detectors and dispatcher on the deployment's registry, the detectors given
        back the conditions of the open episodes and held events (at start, and at a reload)."""
        self.deployment = deployment
        self.registry = deployment.registry
        self.codec = TelemetryCodec(self.registry,
                                    max_future_ms=int(deployment.ingest.max_future_s * 1000))
        self.detectors = build_detectors(self.registry, deployment.detectors)
        self.dispatcher = AlertDispatcher(self.registry, names, self.record,
                                          config_hash=deployment.config_hash,
                                          publish=self.source.publish,
                                          config=deployment.alerts)
        for sensor, condition in self.detectors.restore(self.dispatcher.restore()):
            log.warning("open condition %r of %s is no detector's any more; it stays open",
                        condition, self.registry.sensors[sensor].key)
        self._count_open_episodes()
        self._mine_ids = sorted({s.mine for s in self.registry.sensors})
        mine_pos = {m: i for i, m in enumerate(self._mine_ids)}
        self._mine_of_sensor = np.array([mine_pos[s.mine] for s in self.registry.sensors],
                                        dtype=np.intp)

    def request_reload(self, reload: Reload) -> None:
        """Have the worker swap in ``reload.deployment`` at its next batch boundary
        (jinmei/reload.py); ``reload.done`` is set once it has."""
        self._reload = reload

    def _swap(self, reload: Reload, stop: threading.Event) -> None:
        """Retire the removed sensors' open episodes, then rebuild on the new registry."""
        now_ms = int(self.clock() * 1000)
        retired = self.dispatcher.retire(reload.removed, now_ms, reload.deployment.config_hash)
        if retired:
            if not self._store(ReadingBatch.empty(), retired, stop):
                return  # stopping: the next start loads the new configuration anyway
            self._announce(retired)
        reload.old_dispatcher = self.dispatcher
        self.sink.use_registry(reload.deployment.registry)
        self.on_stored = reload.on_stored
        self._build(reload.deployment, reload.names)
        reload.done.set()

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; returns when nothing more will be emitted."""
        ingest = self.deployment.ingest
        next_tick = 0.0
        next_status, reported = time.monotonic() + STATUS_LOG_S, copy.deepcopy(self.stats)
        while not stop.is_set():
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
        now_ms = int(self.clock() * 1000)
        decoded = self.codec.decode_many([(m.topic, m.payload) for m in messages], now_ms)
        self.stats.messages += decoded.messages
        # counted per distinct topic (a handful a batch), not per message
        for topic, n in Counter(map(_TOPIC, messages)).items():
            self.stats.messages_by_mine[self._topic_mine(topic)] += n
        counts = np.bincount(self._mine_of_sensor[decoded.batch.sensor],
                             minlength=len(self._mine_ids)).tolist()
        self.stats.received_by_mine.update(dict(zip(self._mine_ids, counts, strict=True)))
        self._set_aside(decoded.rejects, now_ms)

        detection = self.detectors.update(decoded.batch, now_ms)
        batch = decoded.batch.with_status(decoded.batch.status | detection.status_bits)
        alerts = self.dispatcher.apply(detection.events, now_ms)
        if not self._store(batch, alerts, stop):
            return False
        self.stats.readings_by_mine.update(dict(zip(self._mine_ids, counts, strict=True)))
        if len(batch):
            newest = np.full(len(self._mine_ids), -1, dtype=np.int64)
            np.maximum.at(newest, self._mine_of_sensor[batch.sensor], batch.ts)
            for mine, ts in zip(self._mine_ids, newest.tolist(), strict=True):
                if ts > self.stats.newest_ms_by_mine.get(mine, -1):
                    self.stats.newest_ms_by_mine[mine] = ts
        self.source.ack(messages)
        if self.on_stored is not None:
            self.on_stored(batch)
        self._announce(alerts)
        return True

    def tick(self, stop: threading.Event) -> None:
        """Run the clock-driven checks (no readings involved)."""
        now_ms = int(self.clock() * 1000)
        alerts = self.dispatcher.apply(self.detectors.tick(now_ms).events, now_ms)
        if alerts and self._store(ReadingBatch.empty(), alerts, stop):
            self._announce(alerts)

    def _topic_mine(self, topic: str) -> str:
        """The configured mine a telemetry topic names, else "" (a label per hostile topic
        would let any publisher grow the metrics without bound)."""
        parts = topic.split("/", 2)
        return parts[1] if len(parts) > 2 and parts[1] in self.registry.mine_ids else ""

    def _count_open_episodes(self) -> None:
        self.stats.open_episodes = Counter((a.rule, a.severity)
                                           for a in self.dispatcher.episodes.open())

    def _announce(self, alerts: list[Alert]) -> None:
        self.stats.alerts.update((a.mine, a.rule, a.state) for a in alerts)
        self.stats.transitions.update((a.rule, a.severity, a.state) for a in alerts)
        self._count_open_episodes()
        if self.on_alert:
            for alert in alerts:
                self.on_alert(alert)

    def _set_aside(self, rejects: list[Reject], now_ms: int) -> None:
        for reject in rejects:
            if self.stats.rejects_by_reason[reject.reason] == 0:
                # a repeated warning is logged once; the counters keep the totals
                log.warning("rejected (%s) on %s: %s — further ones only counted",
                            reject.reason, reject.topic, reject.detail)
            self.stats.rejects_by_reason[reject.reason] += 1
            self.stats.rejects_by_mine[reject.mine] += 1
            self.source.publish(*reject_message(reject, now_ms))

    def _store(self, batch: ReadingBatch, alerts: list[Alert], stop: threading.Event) -> bool:
        """Write until the store accepts; False if asked to stop first (nothing is acked then)."""
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                if len(batch):
                    self.sink.write(batch)
                if alerts:
                    self.sink.write_alerts(alerts)
                self.stats.store_write_s.observe(time.perf_counter() - started)
                self.stats.store_failing = False
                return True
            except DeliveryError as exc:
                self.stats.store_failing = True
                self.stats.store_retries += 1
                if self.stats.store_retries == 1 or not exc.retryable:
                    log.error("store %s failed (%s); holding %d readings and retrying",
                              self.sink.name, exc, len(batch))
            if stop.wait(delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)
