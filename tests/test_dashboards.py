"""Dashboards as code: the generated JSON, its limit lines, uids, states and macro expansion."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from config.loader import deployment_limits, load_deployment
from config.model import Deployment
from config.readings import Status
from dashboards.grafana import GRID_COLUMNS, SCHEMA_VERSION
from dashboards.influxql import expand, format_interval, round_interval
from dashboards.mine import limit_steps
from dashboards.provisioning import DATASOURCE_UID, dashboards_of
from dashboards.states import STATE_BITS, point_state, state_mappings
from jinmei.cli import main

PANEL_TYPES = {"row", "timeseries", "table", "state-timeline", "stat", "bargauge"}


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return load_deployment(None)


@pytest.fixture(scope="module")
def boards(deployment: Deployment) -> list[dict[str, Any]]:
    return [d.json(DATASOURCE_UID) for d in dashboards_of(deployment)]


def test_one_dashboard_per_mine_and_the_overview(boards: list[dict[str, Any]]) -> None:
    assert [b["uid"] for b in boards] == ["jinmei-mine-dayan", "jinmei-mine-qipanjing",
                                          "jinmei-overview"]


def test_json_is_valid_for_the_targeted_schema(boards: list[dict[str, Any]]) -> None:
    for board in boards:
        assert board["schemaVersion"] == SCHEMA_VERSION
        assert len(board["uid"]) <= 40 and re.fullmatch(r"[\w-]+", board["uid"])
        assert board["time"]["to"] == "now" and board["timezone"] == "Asia/Shanghai"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            assert panel["type"] in PANEL_TYPES
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= GRID_COLUMNS
            mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                    for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & mine, f"{panel['title']} overlaps another panel"
            cells |= mine
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": DATASOURCE_UID}
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs))
            assert all(t["rawQuery"] and t["query"].startswith("SELECT")
                       for t in panel["targets"])
            overridden = [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]
                          if o["matcher"]["id"] == "byFrameRefID"]
            assert set(overridden) <= set(refs)
        variables = {v["name"] for v in board["templating"]["list"]}
        used = {m for p in board["panels"] for t in p.get("targets", [])
                for m in re.findall(r"\$\{(\w+):", t["query"])}
        assert used <= variables
        json.dumps(board, allow_nan=False)  # no NaN/Infinity: Grafana's parser refuses them


def test_json_is_the_same_every_run(deployment: Deployment,
                                    boards: list[dict[str, Any]]) -> None:
    again = [d.json(DATASOURCE_UID) for d in dashboards_of(load_deployment(None))]
    assert json.dumps(again, sort_keys=True) == json.dumps(boards, sort_keys=True)


def test_every_limit_line_is_the_registry_limit(deployment: Deployment,
                                                boards: list[dict[str, Any]]) -> None:
    sensors = {(s.mine, s.id): s for s in deployment.registry.sensors}
    drawn = 0
    for board, mine in zip(boards, deployment.mines, strict=False):
        for panel in board["panels"]:
            if panel["type"] != "timeseries":
                continue
            targets = {t["refId"]: t["alias"] for t in panel["targets"]}
            for override in panel["fieldConfig"]["overrides"]:
                sensor = sensors[(mine.id, targets[override["matcher"]["options"]])]
                [steps] = [p["value"]["steps"] for p in override["properties"]
                           if p["id"] == "thresholds"]
                lines = {s["value"] for s in steps if s["value"] is not None}
                limits = sensor.limits
                assert lines == {v for v in (limits.alarm_low, limits.warning_high,
                                             limits.alarm_high, limits.power_off)
                                 if v is not None}, sensor.key
                drawn += 1
    analog = [s for s in deployment.registry.sensors if not s.is_switch]
    assert drawn == len(analog)


def test_methane_longwall_face_draws_alarm_and_power_off(deployment: Deployment) -> None:
    t1 = next(s for s in deployment.registry.sensors if s.key == "dayan/T1-1201")
    steps = limit_steps(t1.limits)
    assert [(s.color, s.value) for s in steps] == [("green", None), ("red", 1.0),
                                                   ("dark-red", 1.5)]


def test_every_sensor_is_in_its_mine_dashboard(deployment: Deployment,
                                               boards: list[dict[str, Any]]) -> None:
    for board, mine in zip(boards, deployment.mines, strict=False):
        aliases = {t.get("alias") for p in board["panels"] for t in p.get("targets", [])}
        assert {s.id for s in mine.sensors} <= aliases


@given(st.integers(0, 0xFFFF))
def test_state_precedence(status: int) -> None:
    state = point_state(status)
    if status & Status.POWER_OFF:
        assert state.name == "断电"
    elif status & Status.ALARM:
        assert state.name == "报警"
    elif status & (Status.SENSOR_FAULT | Status.SUBSTATION_FAULT | Status.OVER_RANGE):
        assert state.name == "故障"
    elif status & Status.CALIBRATION:
        assert state.name == "标校"
    else:
        assert state.name == "正常"
    assert point_state(status & STATE_BITS) == state  # the query's mask keeps the state


@given(st.integers(0, 0xFFFF))
def test_value_mappings_agree_with_point_state(status: int) -> None:
    values, null = state_mappings()
    text = values["options"][str(status & STATE_BITS)]["text"]
    assert text.startswith(point_state(status).name + " ")
    assert null["options"]["result"]["text"].startswith("无数据")


def test_expand_as_grafana_does() -> None:
    query = ('SELECT max("value") FROM "reading" WHERE "sensor" =~ /^(${area:pipe})$/ '
             "AND $timeFilter GROUP BY time($__interval)")
    out = expand(query, start_ms=1_000_000, end_ms=1_000_000 + 3_600_000,
                 variables={"area": ["a|b", "c"]}, all_values={"area": ".*"})
    assert out == ('SELECT max("value") FROM "reading" WHERE "sensor" =~ /^(a|b|c)$/ '
                   "AND time >= 1000000ms and time <= 4600000ms GROUP BY time(5s)")
    everything = expand(query, start_ms=0, end_ms=3_600_000, min_interval_ms=10_000,
                        variables={"area": ["$__all"]}, all_values={"area": ".*"})
    assert "/^(.*)$/" in everything and "time(10s)" in everything
    with pytest.raises(ValueError, match=r"\$kind"):
        expand("SELECT 1 WHERE $kind", start_ms=0, end_ms=1)


@pytest.mark.parametrize(("raw_ms", "nice"), [
    (3_499, 2_000), (3_500, 5_000), (7_499, 5_000), (7_500, 10_000),
    (86_400_000 / 1000, 60_000), (10**12, 31_536_000_000)])
def test_round_interval_follows_grafanas_table(raw_ms: float, nice: int) -> None:
    assert round_interval(raw_ms) == nice


def test_format_interval() -> None:
    assert [format_interval(ms) for ms in (500, 10_000, 60_000, 90_000, 7_200_000)] == [
        "500ms", "10s", "1m", "90s", "2h"]


def test_export_writes_grafana_provisioning(tmp_path: Path,
                                            boards: list[dict[str, Any]]) -> None:
    assert main(["dashboards", "export", str(tmp_path)]) == 0
    source = yaml.safe_load((tmp_path / "datasources" / "jinmei.yaml").read_text())
    [ds] = source["datasources"]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL" and ds["jsonData"]["dbName"] == "jinmei"
    provider = yaml.safe_load((tmp_path / "dashboards" / "jinmei.yaml").read_text())
    [p] = provider["providers"]
    files = sorted(Path(p["options"]["path"]).glob("*.json"))
    service = json.loads((Path(p["options"]["path"]) / "jinmei-service.json").read_text())
    assert [json.loads(f.read_text()) for f in files] == sorted(
        [*boards, service], key=lambda b: b["uid"])
    [prom] = yaml.safe_load((tmp_path / "datasources" / "jinmei-prometheus.yaml").read_text())[
        "datasources"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://127.0.0.1:9090"
    assert all(t["datasource"] == {"type": "prometheus", "uid": prom["uid"]} and t["expr"]
               for panel in service["panels"] for t in panel.get("targets", []))


def test_export_for_an_influxdb2_store_uses_the_token_env(tmp_path: Path) -> None:
    conf = tmp_path / "jinmei.toml"
    shipped = Path(load_deployment(None).source_file)
    conf.write_text(f'mines = ["{shipped.parent / "mines" / "dayan.toml"}"]\n'
                    f'limits = "{shipped.parent / "limits.toml"}"\n'
                    '[store]\nurl = "influxdbs://influx.example:8086?org=jinmei&bucket=mines"\n')
    assert main(["dashboards", "export", "--config", str(conf), str(tmp_path / "out")]) == 0
    [ds] = yaml.safe_load((tmp_path / "out" / "datasources" / "jinmei.yaml").read_text())[
        "datasources"]
    assert ds["url"] == "https://influx.example:8086" and ds["jsonData"]["dbName"] == "mines"
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"]["httpHeaderValue1"] == "Token $JINMEI_INFLUX_TOKEN"


def test_limits_come_from_the_limits_table_not_the_code(deployment: Deployment) -> None:
    table = deployment_limits(deployment)
    row = table.resolve("ch4", "longwall_return")
    assert row.limits.power_off is not None
    t2 = next(s for s in deployment.registry.sensors if s.key == "dayan/T2-1201")
    assert {s.value for s in limit_steps(t2.limits) if s.value is not None} == {
        row.limits.alarm_high, row.limits.power_off}
