"""The operator's endpoint on a running service, through real Mosquitto and VictoriaMetrics.

- ``/readyz`` waits for the broker; ``/healthz`` turns 503 with the reason when a worker stops;
- ``/metrics`` parses as Prometheus text and its counters are exactly what a test published:
  readings per mine, rejects per reason, messages of an unconfigured mine under ``mine=""``;
- VictoriaMetrics (``-promscrape.config`` with a static target) scrapes it, answers PromQL for
  the ingest rate, and every query of the self-dashboard returns data.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.errors import ConfigError
from config.model import HttpConfig, Receiver, Route
from dashboards.grafana import PromTarget
from dashboards.service import service_dashboard
from ingest.codec import encode_telemetry
from jinmei.service import Service
from tests.servers import (
    Mosquitto,
    free_port,
    scripted_http_server,
    victoria_metrics,
    wait_until,
)
from tests.test_service import deployment_for, methane_rise, send

pytestmark = pytest.mark.integration

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
QIPANJING, DAYAN = "jinmei/qipanjing/telemetry/S01", "jinmei/dayan/telemetry/S01"


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), parsed by prometheus_client."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def http_port(service: Service) -> int:
    assert service.http is not None
    return service.http.port


def test_readyz_waits_for_the_broker_and_healthz_turns_503_when_a_worker_stops(
        tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)  # not started yet
    service = Service(deployment_for(broker, tmp_path))
    service.start()
    port = http_port(service)
    try:
        status, body = get(port, "/readyz")
        assert (status, json.loads(body)) == (503, {"ok": False, "waiting_for": ["broker"]})
        broker.start()
        assert wait_until(lambda: get(port, "/readyz")[0] == 200, 20)
        assert get(port, "/healthz") == (200, b'{"ok": true}')

        service.delivery.stop()  # the alert delivery thread ends: notifications would wait
        status, body = get(port, "/healthz")
        assert status == 503
        reasons = json.loads(body)["reasons"]
        assert [(r["reason"], r["thread"]) for r in reasons] == [("worker_dead",
                                                                 "jinmei-delivery")]
        assert get(port, "/nowhere")[0] == 404
    finally:
        service.stop()
        broker.stop()


def test_metrics_count_exactly_what_was_published(mosquitto: Mosquitto, tmp_path: Path) -> None:
    service = Service(deployment_for(mosquitto, tmp_path))
    assert service.start(wait_subscribed_s=10)
    port = http_port(service)
    now = int(time.time() * 1000)
    try:
        send(mosquitto, [
            *[(QIPANJING, encode_telemetry(now - 9_000 + i, [("T1-1101", 0.3, "ok"),
                                                             ("T0-1101", 0.2, "ok")]))
              for i in range(7)],
            *[(DAYAN, encode_telemetry(now - 5_000 + i, [("T1-1201", 0.1, "ok")]))
              for i in range(4)],
            (QIPANJING, b"{not json"), (DAYAN, b"[1, 2"),
            *[(DAYAN, encode_telemetry(now, [("X-404", 0.1, "ok")])) for _ in range(3)],
            ("jinmei/nowhere/telemetry", encode_telemetry(now, [("T1-1101", 0.1, "ok")])),
        ])
        assert wait_until(lambda: service.pipeline.stats.messages == 17, 15)
        assert wait_until(lambda: service.pipeline.stats.readings_by_mine.total() == 18, 15)
        got = samples(port)
        families = {f.name + ("_total" if f.type == "counter" else "")
                    for f in text_string_to_metric_families(get(port, "/metrics")[1].decode())
                    if f.name.startswith("jinmei_")}  # with or without samples
    finally:
        service.stop()

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("jinmei_readings_stored_total", mine="qipanjing") == 14
    assert value("jinmei_readings_stored_total", mine="dayan") == 4
    assert value("jinmei_readings_received_total", mine="qipanjing") == 14
    assert value("jinmei_messages_received_total", mine="qipanjing") == 8
    assert value("jinmei_messages_received_total", mine="dayan") == 8
    assert value("jinmei_messages_received_total", mine="") == 1
    assert value("jinmei_rejects_total", reason="bad_json") == 2
    assert value("jinmei_rejects_total", reason="unknown_sensor") == 3
    assert value("jinmei_rejects_total", reason="unknown_mine") == 1
    assert value("jinmei_broker_connected") == 1
    assert value("jinmei_store_write_seconds_count") >= 1
    assert value("jinmei_store_write_seconds_bucket", le="+Inf") == \
        value("jinmei_store_write_seconds_count")
    assert value("jinmei_store_retries_total") == 0
    # the newest dayan reading is 5 s old at publication; allow for a slow machine
    assert 4.9 < value("jinmei_ingest_lag_seconds", mine="dayan") < 120
    assert value("process_resident_memory_bytes") > 10e6
    info = [labels for name, labels in got if name == "jinmei_build_info"]
    assert dict(info[0])["config_hash"] == service.deployment.config_hash
    # the README's metrics table is the operator's contract: it lists exactly these
    listed = set(re.findall(r"^\| `(jinmei_\w+)", README, re.MULTILINE))
    listed |= set(re.findall(r"`(jinmei_spool_\w+)`", README))
    assert families == listed - {"jinmei_networking_queue_depth"}  # networking is off here


def test_spool_depth_and_readiness_follow_an_influxdb_outage(mosquitto: Mosquitto,
                                                            tmp_path: Path) -> None:
    """The store is down: /readyz says so, /metrics shows the spool growing and ageing; the
    store comes up on that port and both recover."""
    port = free_port()
    base = deployment_for(mosquitto, tmp_path)
    service = Service(dataclasses.replace(base, store=dataclasses.replace(
        base.store, url=f"influxdb://127.0.0.1:{port}?org=jinmei&bucket=jinmei")))
    assert service.start(wait_subscribed_s=10)
    http = http_port(service)
    try:
        send(mosquitto, [(QIPANJING, encode_telemetry(int(time.time() * 1000) - 1_000,
                                                      [("T1-1101", 0.3, "ok")]))])
        assert wait_until(lambda: get(http, "/readyz")[0] == 503, 15)
        assert json.loads(get(http, "/readyz")[1])["waiting_for"] == ["store"]
        time.sleep(1.5)
        down = samples(http)
        assert down[("jinmei_spool_chunks", ())] >= 1
        assert down[("jinmei_spool_oldest_age_seconds", ())] >= 1.0
        with victoria_metrics(tmp_path, port=port):
            assert wait_until(lambda: get(http, "/readyz")[0] == 200, 30)
            up = samples(http)
        assert up[("jinmei_spool_chunks", ())] == 0
        assert up[("jinmei_spool_oldest_age_seconds", ())] == 0
    finally:
        service.stop()


def test_victoria_metrics_scrapes_the_endpoint_and_the_service_dashboard_has_data(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A power-off (routed to a real webhook) and a steady feed; VictoriaMetrics scrapes every
    second. The ingest rate comes back by PromQL, then every query of the self-dashboard."""
    with scripted_http_server(lambda n, body: (200, {}, b"ok")) as webhook:
        base = deployment_for(mosquitto, tmp_path)
        alerts = dataclasses.replace(base.alerts,
                                     receivers=(Receiver("regulator", "webhook",
                                                         (("url", webhook.url),)),),
                                     routes=(Route(("regulator",)),))
        service = Service(dataclasses.replace(base, alerts=alerts))
        assert service.start(wait_subscribed_s=10)
        scrape = tmp_path / "scrape.yml"
        scrape.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                          "  - job_name: jinmei\n    static_configs:\n"
                          f"      - targets: ['127.0.0.1:{http_port(service)}']\n",
                          encoding="utf-8")
        try:
            # instant queries see the last second, not only points older than 30 s (default)
            with victoria_metrics(tmp_path, flags=[f"-promscrape.config={scrape}",
                                                   "-search.latencyOffset=1s"]) as vm:
                send(mosquitto, [*methane_rise(int(time.time() * 1000) - 60_000),
                                 (DAYAN, b"{not json")])
                rate: list[dict[str, Any]] = []
                deadline = time.monotonic() + 60
                while not rate and time.monotonic() < deadline:
                    now = int(time.time() * 1000)
                    send(mosquitto, [(QIPANJING, encode_telemetry(
                        now + i, [("T1-1101", 0.3, "ok"), ("T0-1101", 0.2, "ok")]))
                        for i in range(10)])
                    time.sleep(1.0)
                    rate = vm.query('sum by (mine) (rate(jinmei_readings_stored_total'
                                    '{mine="qipanjing"}[10s])) > 0')
                assert rate, "VictoriaMetrics never answered a positive ingest rate"
                assert rate[0]["metric"] == {"mine": "qipanjing"}
                # 20 readings a second were published; the rate is of that order
                assert 1 < float(rate[0]["value"][1]) < 200

                queries = [t.expr.replace("$__rate_interval", "30s")
                           for panel in service_dashboard().panels() for t in panel.targets
                           if isinstance(t, PromTarget)]
                assert len(queries) >= 12
                assert wait_until(lambda: webhook.requests, 20)  # a delivery to count

                def without_data() -> list[str]:
                    return [q for q in queries if not vm.query(q)]

                assert wait_until(lambda: not without_data(), 30), \
                    f"self-dashboard queries without data: {without_data()}"
        finally:
            service.stop()


def test_an_address_in_use_stops_the_start_naming_http_listen(mosquitto: Mosquitto,
                                                              tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment = dataclasses.replace(deployment_for(mosquitto, tmp_path),
                                         http=HttpConfig(listen=f"127.0.0.1:{port}"))
        service = Service(deployment)
        with pytest.raises(ConfigError) as refused:
            service.start()
    assert refused.value.location == "http.listen" and "in use" in refused.value.message
    assert not service._worker.is_alive()  # nothing started before the refusal
    service.pipeline.dispatcher.close()
    service.sink.close()
    service.record.close()
