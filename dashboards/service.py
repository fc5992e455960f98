"""jinmei's own dashboard (运行监控): the service watched through its Prometheus metrics.

Built from the metrics of ``jinmei/metrics.py`` as scraped by Prometheus or VictoriaMetrics
(data source uid :data:`PROMETHEUS_UID`, PromQL), for the operator rather than the dispatcher:

- ingest: readings stored per second and MQTT messages per second, per mine; the ingest lag
  per mine (service clock − newest stored reading: a substation clock running behind or a
  stalled store both show here);
- rejects per second by reason (a mine sending garbage, a clock running ahead);
- the store: write latency (p50, p99 from the histogram) and failed writes per second; the
  InfluxDB spool's depth and the age of its oldest chunk (0 with the SQLite store);
- alerts: transitions by rule and severity, episodes open now, and the notification outbox
  per receiver with delivery outcomes;
- the process: broker connection and resident memory.

Rates use Grafana's ``$__rate_interval`` (at least four scrape intervals), so a panel is never
empty because the range is shorter than two scrapes. The queries are tested against a real
VictoriaMetrics scraping a running service (tests/test_ops.py).
"""

from __future__ import annotations

from dashboards.grafana import Dashboard, Panel, PromTarget, Row

__all__ = ["PROMETHEUS_UID", "SERVICE_UID", "service_dashboard"]

SERVICE_UID = "jinmei-service"
PROMETHEUS_UID = "jinmei-prometheus"
RATE = "$__rate_interval"


def _series(title: str, description: str, *targets: PromTarget, unit: str = "short",
            width: int = 12) -> Panel:
    return Panel("timeseries", title, description, targets, width=width,
                 defaults={"unit": unit, "min": 0, "custom": {"fillOpacity": 10}},
                 options={"legend": {"displayMode": "table", "placement": "bottom",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi"}})


def service_dashboard(timezone: str = "browser") -> Dashboard:
    """The dashboard of jinmei itself (see the module docstring)."""
    items: tuple[Panel | Row, ...] = (
        Row("采集 ingest"),
        _series("入库速率 readings stored / s", "Readings committed to the store per second, by "
                "mine.", PromTarget("A", f"sum by (mine) (rate(jinmei_readings_stored_total"
                                          f"[{RATE}]))", "{{mine}}"), unit="reqps"),
        _series("消息速率 MQTT messages / s", "Telemetry messages taken per second, by mine "
                "(an empty mine: a topic naming no configured mine).",
                PromTarget("A", f"sum by (mine) (rate(jinmei_messages_received_total[{RATE}]))",
                           "{{mine}}"), unit="reqps"),
        _series("采集延迟 ingest lag", "Service clock minus the newest stored reading's time, "
                "by mine: a stalled ingest or a substation clock running behind.",
                PromTarget("A", "max by (mine) (jinmei_ingest_lag_seconds)", "{{mine}}"),
                unit="s"),
        _series("拒收 rejects / s", "Refused messages and readings per second, by reason "
                "(README: reject reasons).",
                PromTarget("A", f"sum by (reason) (rate(jinmei_rejects_total[{RATE}]))",
                           "{{reason}}"), unit="reqps"),
        Row("存储 store"),
        _series("写入耗时 store write latency", "Time of one committed store write (a batch): "
                "median and 99th percentile.",
                PromTarget("A", f"histogram_quantile(0.5, sum by (le) (rate("
                                f"jinmei_store_write_seconds_bucket[{RATE}])))", "p50"),
                PromTarget("B", f"histogram_quantile(0.99, sum by (le) (rate("
                                f"jinmei_store_write_seconds_bucket[{RATE}])))", "p99"),
                unit="s", width=8),
        _series("写入失败 store retries / s", "Failed store writes per second (the batch is "
                "held and retried; its messages are not acknowledged).",
                PromTarget("A", f"sum(rate(jinmei_store_retries_total[{RATE}]))", "retries"),
                unit="reqps", width=8),
        _series("缓存队列 spool", "InfluxDB spool: chunks waiting for the server and the age of "
                "the oldest (0 with the SQLite store).",
                PromTarget("A", "sum(jinmei_spool_chunks)", "chunks"),
                PromTarget("B", "max(jinmei_spool_oldest_age_seconds)", "oldest age (s)"),
                width=8),
        Row("报警 alerts"),
        _series("报警变化 alert transitions", "Alert transitions per rate interval, by rule, "
                "severity and state.",
                PromTarget("A", f"sum by (rule, severity, state) (increase("
                                f"jinmei_alert_transitions_total[{RATE}]))",
                           "{{rule}} {{severity}} {{state}}"), width=8),
        _series("未结束报警 open episodes", "Alert episodes firing now, by rule and severity.",
                PromTarget("A", "sum by (rule, severity) (jinmei_open_episodes)",
                           "{{rule}} {{severity}}"), width=8),
        _series("通知待发 outbox", "Notifications owed to each receiver, and delivery attempts "
                "per second by outcome.",
                PromTarget("A", "sum by (receiver) (jinmei_outbox_depth)", "owed {{receiver}}"),
                PromTarget("B", f"sum by (receiver, outcome) (rate(jinmei_deliveries_total"
                                f"[{RATE}]))", "{{receiver}} {{outcome}}"), width=8),
        Row("进程 process"),
        _series("代理连接 broker connection", "1 while the MQTT connection is up.",
                PromTarget("A", "min(jinmei_broker_connected)", "connected")),
        _series("内存 resident memory", "Resident memory of the jinmei process.",
                PromTarget("A", 'process_resident_memory_bytes and on (instance, job) '
                                'jinmei_build_info', "{{instance}}"), unit="bytes"),
    )
    return Dashboard(SERVICE_UID, "jinmei 运行监控 service", "jinmei itself: ingest, store, "
                     "alerts and process, from its Prometheus metrics.", timezone, items,
                     tags=("jinmei", "operations"), time_from="now-3h", refresh="30s")
