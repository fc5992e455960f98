"""The dispatcher's dashboard of one mine (调度员看板), generated from the sensor registry.

Layout, top to bottom: the state table of every sensor that reported in the range (current
value, kind and unit, location type, place, state decoded by :mod:`dashboards.states`); then a
row per area (working face, heading, or place code such as ``ZH`` main return) in the mine
file's order, holding one time-series panel per analog kind in that area — methane first, its
T0/T1/T2… as series — and a state timeline of the area's switches (fans, feed, air doors).

Limit lines are the sensor's effective limits from the registry (``Sensor.limits``: the
statutory row, or the mine's stricter override), drawn per series as threshold lines:
yellow from the warning, red from the alarm, dark red from the power-off (断电) limit; a
lower limit (O2, air velocity) makes the band below it red. Nothing is typed by hand.

Series are aggregated per ``$__interval`` towards danger: ``max`` where the sensor has only
upper limits (a short methane peak must not be averaged away), ``min`` with only lower limits
(an O2 dip), ``mean`` with both (air velocity).

No data (无数据): a sensor is silent when it sent nothing in the last 3 × the mine's longest
sampling period (domain.md §3: silent 2–3 patrol periods = communication lost); the table then
shows its last value with an empty state cell, mapped to 无数据. A sensor silent for the whole
range has no row at all: InfluxQL returns no series for it (the regulator overview counts it).

Template variables ``area`` and ``kind`` filter every query. Titles are Chinese with English in
the description; the dashboard shows times in the mine's time zone. Alert transitions from the
``alert`` measurement are annotations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from config.limits_table import LimitsTable
from config.model import Limits, Mine, Sensor
from dashboards.grafana import Annotation, Dashboard, Panel, Row, Step, Target, Variable
from dashboards.influxql import quote_string, sensor_regex
from dashboards.states import STATE_BITS, state_mappings

__all__ = ["limit_steps", "mine_dashboard", "mine_uid", "silence_window_s"]

# Grafana unit ids for the units of the limits table.
_UNITS = {"%": "percent", "ppm": "ppm", "°C": "celsius", "m/s": "velocityms"}
# Switch kinds: value → (Chinese, English, colour); 1 is the "on" state of domain.md §4.
_SWITCH_WORDS: dict[str, dict[int, tuple[str, str, str]]] = {
    "local_fan": {1: ("运行", "running", "green"), 0: ("停止", "stopped", "red")},
    "main_fan": {1: ("运行", "running", "green"), 0: ("停止", "stopped", "red")},
    "feed": {1: ("有电", "live", "green"), 0: ("无电", "dead", "blue")},
    "air_door": {1: ("开", "open", "yellow"), 0: ("关", "closed", "green")},
    "air_duct": {1: ("有风", "air", "green"), 0: ("无风", "no air", "red")},
    "smoke": {1: ("有烟", "smoke", "red"), 0: ("无烟", "clear", "green")},
    "power_off_relay": {1: ("断电", "tripped", "red"), 0: ("正常", "closed", "green")},
}
FILTERS = 'AND "sensor" =~ /^(${area:pipe})$/ AND "kind" =~ /^(${kind:pipe})$/'


def mine_uid(mine: Mine) -> str:
    """Stable dashboard uid (Grafana allows 40 characters)."""
    return f"jinmei-mine-{mine.id}"[:40]


def silence_window_s(mine: Mine) -> int:
    """Seconds without a reading after which a sensor shows 无数据."""
    return int(3 * max((s.period_s for s in mine.sensors), default=30.0))


def limit_steps(limits: Limits) -> tuple[Step, ...]:
    """Threshold steps drawing a sensor's limits (see the module docstring for colours)."""
    colours: dict[float, str] = {}
    if limits.alarm_low is not None:
        colours[limits.alarm_low] = "green"  # the allowed band starts here
    if limits.warning_high is not None:
        colours[limits.warning_high] = "yellow"
    if limits.alarm_high is not None:
        colours[limits.alarm_high] = "red"
    if limits.power_off is not None:
        colours[limits.power_off] = "dark-red"  # at the alarm limit too when they coincide
    base = "red" if limits.alarm_low is not None else "green"
    return (Step(base, None), *(Step(colours[v], v) for v in sorted(colours)))


def _aggregate(limits: Limits) -> str:
    upper = limits.alarm_high is not None or limits.power_off is not None
    lower = limits.alarm_low is not None
    return "mean" if upper == lower else ("max" if upper else "min")


@dataclass(frozen=True, slots=True)
class _Names:
    """Kind and location names from the limits table."""

    table: LimitsTable

    def kind(self, kind: str) -> tuple[str, str, str]:
        info = self.table.kinds.get(kind)
        return (info.name, info.name_en, info.unit) if info else (kind, kind, "")

    def location(self, location: str) -> str:
        info = self.table.locations.get(location)
        return f"{info.name} {info.name_en}" if info else location


def _where(mine: Mine, sensor: Sensor | None = None) -> str:
    where = f'"mine" = {quote_string(mine.id)}'
    if sensor is not None:
        where += f' AND "sensor" = {quote_string(sensor.id)}'
    return f"{where} {FILTERS}"


def _ref(i: int) -> str:
    """A, B, … Z, AA, AB …"""
    return chr(65 + i) if i < 26 else _ref(i // 26 - 1) + chr(65 + i % 26)


def _by_ref(ref: str, properties: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": properties}


def _analog_panel(mine: Mine, area: str, kind: str, sensors: list[Sensor],
                  names: _Names) -> Panel:
    name, name_en, unit = names.kind(kind)
    targets, overrides = [], []
    for i, s in enumerate(sensors):
        ref = _ref(i)
        targets.append(Target(ref, f'SELECT {_aggregate(s.limits)}("value") FROM "reading" '
                                   f"WHERE {_where(mine, s)} AND $timeFilter "
                                   f"GROUP BY time($__interval) fill(none)", alias=s.id))
        steps = {"mode": "absolute", "steps": [step.json() for step in limit_steps(s.limits)]}
        overrides.append(_by_ref(ref, [
            {"id": "displayName", "value": f"{s.id} {s.place}"},
            {"id": "thresholds", "value": steps},
            {"id": "custom.thresholdsStyle", "value": {"mode": "line+area"
                                                        if s.limits.alarm_low is not None
                                                        else "line"}}]))
    sources = sorted({s.limits.source for s in sensors if s.limits.source})
    return Panel(
        "timeseries", f"{area} {name}", f"Area {area}: {name_en} ({unit or 'no unit'}); "
        f"limit lines from the limits table: {'; '.join(sources) or 'none'}",
        tuple(targets), width=12, height=8,
        defaults={"unit": _UNITS.get(unit, "none"),
                  "custom": {"lineWidth": 1, "spanNulls": True, "showPoints": "never"}},
        overrides=tuple(overrides),
        options={"legend": {"displayMode": "list", "placement": "bottom"},
                 "tooltip": {"mode": "multi"}})


def _switch_panel(mine: Mine, area: str, sensors: list[Sensor], names: _Names) -> Panel:
    targets, overrides = [], []
    for i, s in enumerate(sensors):
        ref = _ref(i)
        targets.append(Target(ref, f'SELECT last("value") FROM "reading" WHERE '
                                   f"{_where(mine, s)} AND $timeFilter "
                                   f"GROUP BY time($__interval) fill(previous)", alias=s.id))
        words = _SWITCH_WORDS.get(s.kind, {1: ("开", "on", "green"), 0: ("关", "off", "red")})
        mapping = {"type": "value", "options": {
            str(v): {"text": f"{zh} {en}", "color": colour, "index": v}
            for v, (zh, en, colour) in words.items()}}
        overrides.append(_by_ref(ref, [
            {"id": "displayName", "value": f"{s.id} {names.kind(s.kind)[0]}"},
            {"id": "mappings", "value": [mapping]}]))
    return Panel(
        "state-timeline", f"{area} 开关量状态",
        f"Area {area}: fans, feed (load side live) and air doors, one lane per switch sensor",
        tuple(targets), width=24, height=max(4, 2 + 2 * len(sensors)),
        defaults={"color": {"mode": "thresholds"}}, overrides=tuple(overrides),
        options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.8})


def _state_table(mine: Mine, names: _Names) -> Panel:
    where = f'"mine" = {quote_string(mine.id)} {FILTERS}'
    window = silence_window_s(mine)
    latest = Target("A", f'SELECT last("value") AS "value" FROM "reading" WHERE {where} '
                         f'AND $timeFilter GROUP BY "sensor", "kind", "location"',
                    result_format="table")
    state = Target("B", f'SELECT last("status") & {STATE_BITS} AS "status" FROM "reading" '
                        f"WHERE {where} AND time > now() - {window}s GROUP BY \"sensor\"",
                   result_format="table")
    sensor_text = {s.id: f"{s.id} {s.place}" for s in mine.sensors}
    kind_text = {k: f"{n} {u}".strip() for k in {s.kind for s in mine.sensors}
                 for n, _, u in [names.kind(k)]}
    location_text = {loc: names.location(loc) for loc in {s.location for s in mine.sensors}}

    def text_mapping(texts: dict[str, str]) -> list[dict[str, Any]]:
        ordered = enumerate(sorted(texts.items()))
        return [{"type": "value", "options": {
            key: {"text": text, "index": i} for i, (key, text) in ordered}}]

    def column(name: str, properties: list[dict[str, Any]]) -> dict[str, Any]:
        return {"matcher": {"id": "byName", "options": name}, "properties": properties}

    return Panel(
        "table", "测点状态",
        f"Every sensor that reported in the range: last value, kind and unit, location type, "
        f"place and state (power-off, alarm, fault, calibration, normal; no data = nothing in "
        f"the last {window} s, 3 × the longest sampling period)",
        (latest, state), width=24, height=14,
        overrides=(
            column("sensor", [{"id": "displayName", "value": "测点 sensor"},
                              {"id": "mappings", "value": text_mapping(sensor_text)}]),
            column("kind", [{"id": "displayName", "value": "类型 kind"},
                            {"id": "mappings", "value": text_mapping(kind_text)}]),
            column("location", [{"id": "displayName", "value": "位置 location"},
                                {"id": "mappings", "value": text_mapping(location_text)}]),
            column("value", [{"id": "displayName", "value": "当前值 value"},
                             {"id": "decimals", "value": 2}]),
            column("status", [{"id": "displayName", "value": "状态 state"},
                              {"id": "mappings", "value": state_mappings()},
                              {"id": "custom.cellOptions",
                               "value": {"type": "color-background"}}]),
        ),
        options={"showHeader": True, "sortBy": [{"displayName": "状态 state", "desc": True}]},
        transformations=(
            {"id": "joinByField", "options": {"byField": "sensor", "mode": "outer"}},
            {"id": "organize", "options": {"excludeByName": {"Time 2": True},
                                           "renameByName": {"Time 1": "最后读数 last reading"}}},
        ))


def _areas(mine: Mine) -> dict[str, list[Sensor]]:
    """Sensors by area, areas in the order the mine file first names them."""
    areas: dict[str, list[Sensor]] = {}
    for s in mine.sensors:
        areas.setdefault(s.area, []).append(s)
    return areas


def _kinds_in_order(sensors: Iterable[Sensor]) -> list[str]:
    kinds = list(dict.fromkeys(s.kind for s in sensors if not s.is_switch))
    return sorted(kinds, key=lambda k: k != "ch4")  # methane first, then file order


def mine_dashboard(mine: Mine, table: LimitsTable) -> Dashboard:
    """The dispatcher's dashboard of ``mine`` (see the module docstring)."""
    names = _Names(table)
    areas = _areas(mine)
    items: list[Panel | Row] = [_state_table(mine, names)]
    for area, sensors in areas.items():
        items.append(Row(f"{area} 区域 (area {area})"))
        for kind in _kinds_in_order(sensors):
            items.append(_analog_panel(mine, area, kind, [s for s in sensors if s.kind == kind],
                                       names))
        switches = [s for s in sensors if s.is_switch]
        if switches:
            items.append(_switch_panel(mine, area, switches, names))
    kinds = list(dict.fromkeys(s.kind for s in mine.sensors))
    variables = (
        Variable("area", "区域 area", "Working faces, headings and places of the mine",
                 tuple((area, sensor_regex([s.id for s in sensors]))
                       for area, sensors in areas.items())),
        Variable("kind", "类型 kind", "Sensor kinds",
                 tuple((" ".join(names.kind(k)[:2]), k) for k in kinds)),
    )
    alerts = Annotation(
        "告警 alerts",
        f'SELECT "message" FROM "alert" WHERE "mine" = {quote_string(mine.id)} AND $timeFilter',
        text_column="message")
    return Dashboard(
        uid=mine_uid(mine), title=f"{mine.name} 安全监控",
        description=f"{mine.name_en} safety monitoring: every sensor's state and value, "
                    f"methane per working face with its statutory limits, switches, alerts",
        timezone=mine.timezone, items=tuple(items), variables=variables,
        annotations=(alerts,), tags=("jinmei", mine.id), time_from="now-1h")
