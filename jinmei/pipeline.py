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
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.errors import DeliveryError
from config.model import Deployment
from config.readings import ReadingBatch
from detectors.suite import build_detectors
from ingest.codec import Reject, TelemetryCodec, reject_messages
from ingest.mqtt import Inbound, MqttSource
from ingest.sink import Sink

__all__ = ["Pipeline", "PipelineStats"]

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0
TICK_S = 1.0
STATUS_LOG_S = 60.0  # jinmei's own: often enough to watch, rare enough to read


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
        self.deployment = deployment
        self.registry = deployment.registry
        self.source = source
        self.sink = sink
        self.clock = clock
        self.on_alert = on_alert
        self.on_stored = on_stored
        self.stats = PipelineStats()
        self.codec = TelemetryCodec(self.registry,
                                    max_future_ms=int(deployment.ingest.max_future_s * 1000))
        self.detectors = build_detectors(self.registry, deployment.detectors)
        self.dispatcher = AlertDispatcher(self.registry, names, record,
                                          config_hash=deployment.config_hash,
                                          publish=source.publish,
                                          config=deployment.alerts)
        for sensor, condition in self.detectors.restore(self.dispatcher.restore()):
            log.warning("open condition %r of %s is no detector's any more; it stays open",
                        condition, self.registry.sensors[sensor].key)
        self._mine_ids = sorted({s.mine for s in self.registry.sensors})
        mine_pos = {m: i for i, m in enumerate(self._mine_ids)}
        self._mine_of_sensor = np.array([mine_pos[s.mine] for s in self.registry.sensors],
                                        dtype=np.intp)

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; returns when nothing more will be emitted."""
        ingest = self.deployment.ingest
        next_tick = 0.0
        next_status, reported = time.monotonic() + STATUS_LOG_S, copy.deepcopy(self.stats)
        while not stop.is_set():
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
        self._set_aside(decoded.rejects, now_ms)

        detection = self.detectors.update(decoded.batch, now_ms)
        batch = decoded.batch.with_status(decoded.batch.status | detection.status_bits)
        alerts = self.dispatcher.apply(detection.events, now_ms)
        if not self._store(batch, alerts, stop):
            return False
        counts = np.bincount(self._mine_of_sensor[batch.sensor], minlength=len(self._mine_ids))
        for mine, n in zip(self._mine_ids, counts.tolist(), strict=True):
            self.stats.readings_by_mine[mine] += n
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

    def _announce(self, alerts: list[Alert]) -> None:
        self.stats.alerts.update((a.mine, a.rule, a.state) for a in alerts)
        if self.on_alert:
            for alert in alerts:
                self.on_alert(alert)

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

    def _store(self, batch: ReadingBatch, alerts: list[Alert], stop: threading.Event) -> bool:
        """Write until the store accepts; False if asked to stop first (nothing is acked then)."""
        delay = 0.5
        while True:
            try:
                if len(batch):
                    self.sink.write(batch)
                if alerts:
                    self.sink.write_alerts(alerts)
                return True
            except DeliveryError as exc:
                self.stats.store_retries += 1
                if self.stats.store_retries == 1 or not exc.retryable:
                    log.error("store %s failed (%s); holding %d readings and retrying",
                              self.sink.name, exc, len(batch))
            if stop.wait(delay):
                return False
            delay = min(delay * 2, RETRY_MAX_S)
