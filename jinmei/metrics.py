"""Prometheus metrics of a running service, read from the counters it already keeps.

:class:`ServiceCollector` is a ``prometheus_client`` custom collector: at every scrape it reads
the pipeline's :class:`~jinmei.pipeline.PipelineStats`, the store's ``stats()``, the MQTT
source's connection, the alert outbox and delivery worker, and the networking upload queue,
and turns them into metric families. Nothing is instrumented per reading: the worker keeps
plain counters per batch (as it did for its status line) and a scrape costs a few dictionary
copies and three small SQLite counts. Each service has its own ``CollectorRegistry``
(:func:`service_registry`), so two services in one process (tests) never share series.

Thread safety: the worker thread updates the counters while the HTTP thread reads them. Each
``Counter`` is copied with ``dict(...)`` — one C call under the GIL, so never torn mid-update —
and a scrape may see one batch's counters half-applied across families, which the next
scrape corrects; counters never go backwards.

The metric names are a contract (dashboards/service.py and operators' alert rules use them):
README "Operator endpoint" lists each with its type and meaning, and tests/test_ops.py checks
that the list and what is served agree. Two choices worth knowing: messages on a topic naming
no configured mine count under ``mine=""`` — one label for all, so hostile topics cannot grow
the series without bound; the spool families are 0 with the SQLite store (it has no spool).
"""

from __future__ import annotations

import bisect
import importlib.metadata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["STORE_WRITE_BUCKETS_S", "LatencyBuckets", "ServiceCollector", "jinmei_version",
           "service_registry"]

# Upper bounds (s) of the store-write histogram: an SQLite commit is one fsync (about a
# millisecond on an SSD), a spool append the same; a write that takes seconds is a disk or a
# lock in trouble. jinmei's own choice, covering 1 ms to 10 s.
STORE_WRITE_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                         5.0, 10.0)


def jinmei_version() -> str:
    """The installed package's version."""
    try:
        return importlib.metadata.version("jinmei")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class LatencyBuckets:
    """Counts of observations per bucket of :data:`STORE_WRITE_BUCKETS_S` (the last bucket is
    +Inf) and their sum; one ``observe`` per committed batch, from the worker thread."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(STORE_WRITE_BUCKETS_S) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(STORE_WRITE_BUCKETS_S, seconds)] += 1
        self.total_s += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(``le``, count at or below it) pairs as Prometheus histograms give them."""
        counts, running, out = list(self.counts), 0, []
        for bound, n in zip([*map(str, STORE_WRITE_BUCKETS_S), "+Inf"], counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out


class ServiceCollector(Collector):
    """Every ``jinmei_*`` metric of one service, read at scrape time (see the module doc)."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        pipeline = service.pipeline
        stats = pipeline.stats
        info = GaugeMetricFamily("jinmei_build_info", "Version and configuration hash running.",
                                 labels=["version", "config_hash"])
        info.add_metric([jinmei_version(), pipeline.deployment.config_hash], 1)
        yield info
        yield _counter("jinmei_messages_received", "MQTT telemetry messages taken, by mine "
                       "(mine=\"\": a topic naming no configured mine).", "mine",
                       dict(stats.messages_by_mine))
        yield _counter("jinmei_readings_received", "Readings accepted by the codec, by mine.",
                       "mine", dict(stats.received_by_mine))
        yield _counter("jinmei_readings_stored", "Readings committed to the store, by mine.",
                       "mine", dict(stats.readings_by_mine))
        yield _counter("jinmei_rejects", "Refused messages and readings, by reject reason.",
                       "reason", {str(k): v for k, v in dict(stats.rejects_by_reason).items()})
        latency = stats.store_write_s
        yield HistogramMetricFamily("jinmei_store_write_seconds",
                                    "Time of one committed store write (a batch).",
                                    buckets=latency.cumulative(), sum_value=latency.total_s)
        yield CounterMetricFamily("jinmei_store_retries", "Failed store writes (retried; the "
                                  "batch's acknowledgement held).", value=stats.store_retries)
        yield GaugeMetricFamily("jinmei_store_failing", "1 while the last store write failed.",
                                value=int(pipeline.write_failing_since_ms is not None))
        yield from self._spool()
        yield from self._alerts()
        now_s = pipeline.clock()
        lag = GaugeMetricFamily("jinmei_ingest_lag_seconds", "Service clock minus the newest "
                                "stored reading's time, by mine.", labels=["mine"])
        for mine, newest_ms in sorted(dict(stats.newest_ms_by_mine).items()):
            lag.add_metric([mine], now_s - newest_ms / 1000)
        yield lag
        yield _counter("jinmei_reloads", "SIGHUP reloads by outcome (applied, refused, "
                       "unchanged).", "outcome", dict(stats.reloads))
        yield GaugeMetricFamily("jinmei_broker_connected", "1 while the MQTT connection is up.",
                                value=int(service.source.connected))
        if service.networking is not None:
            yield GaugeMetricFamily("jinmei_networking_queue_depth", "Networking files "
                                    "waiting for upload.", value=service.networking.queue.pending())

    def _spool(self) -> Iterator[Metric]:
        store = self.service.sink.stats()  # SQLite has no spool: its figures are 0
        oldest_ms = store.get("oldest_ms", 0)
        age = self.service.pipeline.clock() - oldest_ms / 1000 if oldest_ms else 0.0
        yield GaugeMetricFamily("jinmei_spool_chunks", "InfluxDB spool: chunks waiting for the "
                                "server.", value=store["pending"])
        yield GaugeMetricFamily("jinmei_spool_oldest_age_seconds", "Age of the oldest chunk "
                                "waiting in the spool (0 when none).", value=max(0.0, age))
        yield GaugeMetricFamily("jinmei_spool_dead_chunks", "Spool chunks the server refused "
                                "as bad data (kept in the dead table).", value=store["dead"])

    def _alerts(self) -> Iterator[Metric]:
        service = self.service
        stats = service.pipeline.stats
        depth = GaugeMetricFamily("jinmei_outbox_depth", "Notifications owed to each receiver.",
                                  labels=["receiver"])
        owed = {r.name: 0 for r in service.pipeline.deployment.alerts.receivers}
        owed.update(service.delivery.outbox.depth())
        for receiver, n in sorted(owed.items()):
            depth.add_metric([receiver], n)
        yield depth
        deliveries = CounterMetricFamily("jinmei_deliveries", "Notification delivery attempts "
                                         "by receiver and outcome (delivered, retry, refused).",
                                         labels=["receiver", "outcome"])
        for (receiver, outcome), n in sorted(dict(service.delivery.outcomes).items()):
            deliveries.add_metric([receiver, outcome], n)
        yield deliveries
        transitions = CounterMetricFamily("jinmei_alert_transitions", "Alert transitions "
                                          "recorded, by rule, severity and state.",
                                          labels=["rule", "severity", "state"])
        for key, n in sorted(dict(stats.transitions).items()):
            transitions.add_metric(list(key), n)
        yield transitions
        episodes = GaugeMetricFamily("jinmei_open_episodes", "Alert episodes firing now, by "
                                     "rule and severity.", labels=["rule", "severity"])
        for (rule, severity), count in sorted(dict(stats.open_episodes).items()):
            episodes.add_metric([rule, severity], count)
        yield episodes


def _counter(name: str, documentation: str, label: str,
             values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, n in sorted(values.items()):
        family.add_metric([key], n)
    return family


def service_registry(service: Service) -> CollectorRegistry:
    """A registry of this service's metrics and the process metrics (RSS, CPU, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    ProcessCollector(registry=registry)
    return registry
