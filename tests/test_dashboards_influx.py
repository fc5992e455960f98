"""Every dashboard query runs on a real InfluxDB 1.6 against a simulated feed.

The feed goes in exactly as the sink writes it: simulators.feed → TelemetryCodec → detectors
(status bits) → ingest.lineprotocol.reading_lines / alert_lines → ``POST /write``. Dayan plays
``methane-rise`` cut at its peak (so T1-1201 is in power-off now) with one CO sensor falling
silent for the last 3 minutes; Qipanjing plays ``normal`` with one sensor reporting a fault at
the end. Queries are expanded as Grafana does (dashboards.influxql.expand) and each result is
checked against what was written.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from alerts.episodes import EpisodeBook
from alerts.wire import Alert
from config.loader import deployment_limits, load_deployment
from config.model import Deployment
from config.readings import ReadingBatch, Status
from dashboards.grafana import Dashboard
from dashboards.influxql import expand
from dashboards.mine import mine_dashboard, silence_window_s
from dashboards.overview import overview_dashboard
from dashboards.preview import render_preview, run_panel, table_rows
from dashboards.states import point_state
from detectors.suite import build_detectors
from ingest.codec import TelemetryCodec, encode_telemetry
from ingest.lineprotocol import alert_lines, reading_lines
from jinmei.service import names_from_limits
from simulators.feed import generate
from tests.servers import InfluxDB1, influxdb1

pytestmark = pytest.mark.integration

FEED_S = 600
SILENT = ("dayan", "CO-1201-4")  # stops reporting 180 s before the end
FAULTY = ("qipanjing", "CO-1101")  # its last reading says status "fault"


@dataclass
class Feed:
    deployment: Deployment
    influx: InfluxDB1
    batch: ReadingBatch
    alerts: list[Alert]
    start_ms: int
    end_ms: int

    def window(self, start_ms: int | None = None, **variables: list[str]) -> dict[str, Any]:
        selected = {"area": ["$__all"], "kind": ["$__all"], **variables}
        return {"start_ms": self.start_ms - 60_000 if start_ms is None else start_ms,
                "end_ms": self.end_ms + 5_000, "min_interval_ms": 10_000,
                "variables": selected, "all_values": {"area": ".*", "kind": ".*"}}

    def run(self, query: str) -> dict[str, Any]:
        return self.influx.query(query)

    def last_status(self) -> dict[tuple[str, str], int]:
        """Each sensor's latest written status, straight from the batch."""
        sensors = self.deployment.registry.sensors
        order = np.lexsort((self.batch.ts, self.batch.sensor))
        last = {}
        for i in order.tolist():
            s = sensors[int(self.batch.sensor[i])]
            last[(s.mine, s.id)] = int(self.batch.status[i])
        return last


def _messages(deployment: Deployment, start_ms: int, end_ms: int) -> list[Any]:
    out = []
    for mine in deployment.mines:
        scenario = "methane-rise" if mine.id == "dayan" else "normal"
        # twice as long as written, so the write stops at the scenario's peak
        for m in generate(mine, scenario, start_ms=start_ms, duration_s=2 * FEED_S, seed=3):
            if m.at_ms <= end_ms:
                out.append((m.at_ms, m.topic, m.payload))
    fault = encode_telemetry(end_ms, [(FAULTY[1], 0.0, "fault")])
    out.append((end_ms, f"jinmei/{FAULTY[0]}/telemetry", fault))
    return sorted(out, key=lambda m: m[0])


def write_feed(influx: InfluxDB1, deployment: Deployment,
               end_ms: int) -> tuple[ReadingBatch, list[Alert]]:
    """Write both mines' feed (see the module docstring) ending at ``end_ms``, as the sink
    does; returns the readings with their status bits and the alert transitions written.
    scripts/dashboard_previews.py uses it too."""
    registry = deployment.registry
    codec = TelemetryCodec(registry)
    detectors = build_detectors(registry)
    book = EpisodeBook(registry, names_from_limits(deployment))
    silent = registry.index[f"{SILENT[0]}/{SILENT[1]}"]
    batches, alerts = [], []
    for at_ms, topic, payload in _messages(deployment, end_ms - FEED_S * 1000, end_ms):
        decoded = codec.decode(topic, payload, at_ms)
        assert not decoded.rejects
        keep = ~((decoded.batch.sensor == silent) & (decoded.batch.ts > end_ms - 180_000))
        batch = ReadingBatch(*(column[keep] for column in (
            decoded.batch.sensor, decoded.batch.ts, decoded.batch.value, decoded.batch.status)))
        detection = detectors.update(batch, at_ms)
        batches.append(batch.with_status(batch.status | detection.status_bits))
        alerts += book.apply(detection.events)
    batch = ReadingBatch.concat(batches)
    influx.write(reading_lines(batch, registry))
    influx.write(alert_lines(alerts))
    return batch, alerts


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    deployment = load_deployment(None)
    end_ms = int(time.time() * 1000) - 1_000
    with influxdb1(tmp_path_factory.mktemp("influx")) as influx:
        batch, alerts = write_feed(influx, deployment, end_ms)
        yield Feed(deployment, influx, batch, alerts, end_ms - FEED_S * 1000, end_ms)


def _dashboards(feed: Feed) -> list[Dashboard]:
    table = deployment_limits(feed.deployment)
    return [*(mine_dashboard(m, table) for m in feed.deployment.mines),
            overview_dashboard(feed.deployment.mines)]


def test_the_feed_holds_what_the_checks_need(feed: Feed) -> None:
    last = feed.last_status()
    assert last[("dayan", "T1-1201")] & Status.POWER_OFF
    assert last[FAULTY] & Status.SENSOR_FAULT
    assert any(a.state == "firing" and a.sensor == "T1-1201" for a in feed.alerts)


def test_every_panel_query_returns_rows(feed: Feed) -> None:
    for dashboard in _dashboards(feed):
        for panel in dashboard.panels():
            window = feed.window()
            if panel.time_from == "now/d":
                window = feed.window(start_ms=_local_midnight_ms(feed.end_ms, dashboard.timezone))
            for ref, series in run_panel(panel, feed.run, window).items():
                assert series, f"{dashboard.uid} / {panel.title} / {ref} returned nothing"
                assert all(s["values"] for s in series)


def test_annotations_show_the_alert_transitions(feed: Feed) -> None:
    dashboard = _dashboards(feed)[0]
    [annotation] = dashboard.annotations
    [series] = feed.run(expand(annotation.query, **feed.window()))["series"]
    # One point per series and time; `condition` is a tag, so two conditions of one sensor
    # changing in the same millisecond are two points.
    expected = {(a.sensor, a.kind, a.rule, a.condition, a.severity, a.state, a.ts): a.message
                for a in feed.alerts if a.mine == "dayan"}
    # alert_lines writes a line break as the two characters \\n, and InfluxDB 1.6 keeps them
    assert sorted(row[1].replace("\\n", "\n") for row in series["values"]) == sorted(
        expected.values())


def test_state_table_shows_the_states_of_the_feed(feed: Feed) -> None:
    last = feed.last_status()
    for dashboard, mine in zip(_dashboards(feed), feed.deployment.mines, strict=False):
        table = next(p for p in dashboard.panels() if p.kind == "table")
        rows = {r["sensor"]: r for r in table_rows(table, feed.run, feed.window())}
        assert set(rows) == {s.id for s in mine.sensors}
        for sensor, row in rows.items():
            expected = None if (mine.id, sensor) == SILENT else last[(mine.id, sensor)]
            assert point_state(row["status"]) == point_state(expected), sensor
    dayan = {r["sensor"]: r for r in table_rows(
        next(p for p in _dashboards(feed)[0].panels() if p.kind == "table"), feed.run,
        feed.window())}
    assert point_state(dayan["T1-1201"]["status"]).name == "断电"
    assert point_state(dayan[SILENT[1]]["status"]).name == "无数据"


def test_template_variables_filter_the_table(feed: Feed) -> None:
    dashboard = _dashboards(feed)[0]
    table = next(p for p in dashboard.panels() if p.kind == "table")
    area = next(v for v in dashboard.variables if v.name == "area")
    value_1203 = dict(area.options)["1203"]
    rows = table_rows(table, feed.run, feed.window(area=[value_1203], kind=["ch4"]))
    mine = feed.deployment.mines[0]
    assert {r["sensor"] for r in rows} == {s.id for s in mine.sensors
                                          if s.area == "1203" and s.kind == "ch4"}


def test_methane_panel_peak_is_the_written_peak(feed: Feed) -> None:
    dashboard = _dashboards(feed)[0]
    panel = next(p for p in dashboard.panels() if p.title == "1201 甲烷")
    series = run_panel(panel, feed.run, feed.window())
    t1 = next(t.ref_id for t in panel.targets if t.alias == "T1-1201")
    index = feed.deployment.registry.index["dayan/T1-1201"]
    written = feed.batch.value[feed.batch.sensor == index]
    assert max(v[1] for v in series[t1][0]["values"]) == pytest.approx(written.max())


def _by_mine(series: list[dict[str, Any]]) -> dict[str, Any]:
    return {s["tags"]["mine"]: s["values"][-1][1] for s in series}


def test_overview_counts_match_the_feed(feed: Feed) -> None:
    overview = _dashboards(feed)[-1]
    panels = {p.title: p for p in overview.panels()}
    last = feed.last_status()

    def expected(bits: int) -> dict[str, int]:
        return {m.id: sum(1 for (mine, _), s in last.items() if mine == m.id and s & bits)
                for m in feed.deployment.mines}

    alarms = run_panel(panels["报警测点"], feed.run, feed.window())["A"]
    assert _by_mine(alarms) == expected(Status.ALARM)
    power_off = run_panel(panels["断电测点"], feed.run, feed.window())["A"]
    assert _by_mine(power_off) == expected(Status.POWER_OFF)
    assert _by_mine(power_off)["dayan"] >= 1
    fault = run_panel(panels["故障测点"], feed.run, feed.window())["A"]
    assert _by_mine(fault) == {k: v for k, v in expected(
        Status.SENSOR_FAULT | Status.SUBSTATION_FAULT | Status.OVER_RANGE).items() if v}
    no_data = run_panel(panels["无数据测点"], feed.run, feed.window())
    assert [s[0]["values"][0][1] for s in no_data.values()] == [1, 0]
    newest = run_panel(panels["最新数据时间"], feed.run, feed.window())["A"]
    assert {s["tags"]["mine"]: s["values"][-1][0] for s in newest} == {
        m.id: _newest(feed, m.id) for m in feed.deployment.mines}


def _newest(feed: Feed, mine: str) -> int:
    sensors = feed.deployment.registry.sensors
    return max(int(t) for i, t in zip(feed.batch.sensor.tolist(), feed.batch.ts.tolist(),
                                      strict=True) if sensors[i].mine == mine)


def _local_midnight_ms(now_ms: int, timezone: str) -> int:
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)


def test_preview_png_per_mine(feed: Feed, tmp_path: Path) -> None:
    for dashboard in _dashboards(feed)[:-1]:
        path = render_preview(dashboard, feed.run, feed.window(), tmp_path / f"{dashboard.uid}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 20_000


def test_silence_window_is_three_of_the_slowest_periods(feed: Feed) -> None:
    for mine in feed.deployment.mines:
        assert silence_window_s(mine) == 3 * max(s.period_s for s in mine.sensors)
