"""Small typed builders for the Grafana dashboard JSON that jinmei provisions.

Why not grafana-foundation-sdk: it is installable here, but it versions itself as
``<build epoch>!<grafana version>`` (hundreds of builds per Grafana release), which makes a
pin in ``pyproject.toml`` awkward, and jinmei needs five panel types and InfluxQL targets —
a few frozen dataclasses keep every field we emit visible and tested.

Target: Grafana 10.4 / 11 (dashboard ``schemaVersion`` :data:`SCHEMA_VERSION`). Layout: panels
flow left to right in a 24-column grid; a :class:`Row` starts a new line. Panel ids are given
in layout order, so the same dashboard gives the same JSON every run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "GRID_COLUMNS",
    "SCHEMA_VERSION",
    "Annotation",
    "Dashboard",
    "Panel",
    "PromTarget",
    "Row",
    "Step",
    "Target",
    "Variable",
    "datasource_ref",
]

SCHEMA_VERSION = 39  # Grafana 10.4 – 11.x
GRID_COLUMNS = 24
DATASOURCE_TYPE = "influxdb"


def datasource_ref(uid: str, kind: str = DATASOURCE_TYPE) -> dict[str, str]:
    return {"type": kind, "uid": uid}


@dataclass(frozen=True, slots=True)
class Step:
    """One threshold step: from ``value`` upwards the colour is ``color`` (None = the base)."""

    color: str
    value: float | None

    def json(self) -> dict[str, Any]:
        return {"color": self.color, "value": self.value}


@dataclass(frozen=True, slots=True)
class Target:
    """One raw InfluxQL query of a panel; ``alias`` names its series (``$tag_sensor`` …)."""

    ref_id: str
    query: str
    result_format: str = "time_series"  # or "table"
    alias: str = ""
    datasource_type: ClassVar[str] = DATASOURCE_TYPE

    def json(self, datasource_uid: str) -> dict[str, Any]:
        out: dict[str, Any] = {"refId": self.ref_id, "datasource": datasource_ref(datasource_uid),
                               "query": self.query, "rawQuery": True,
                               "resultFormat": self.result_format}
        if self.alias:
            out["alias"] = self.alias
        return out


@dataclass(frozen=True, slots=True)
class PromTarget:
    """One PromQL query of a panel (Prometheus or VictoriaMetrics data source); ``legend``
    names its series (``{{mine}}`` …)."""

    ref_id: str
    expr: str
    legend: str = ""
    datasource_type: ClassVar[str] = "prometheus"

    def json(self, datasource_uid: str) -> dict[str, Any]:
        return {"refId": self.ref_id, "datasource": datasource_ref(datasource_uid, "prometheus"),
                "expr": self.expr, "legendFormat": self.legend or "__auto", "range": True}


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel: ``kind`` is the Grafana panel type (timeseries, table, state-timeline, stat …).

    ``defaults`` and ``overrides`` are the panel's fieldConfig; ``time_from`` a relative time
    override (``now/d`` = today so far, in the dashboard's time zone).
    """

    kind: str
    title: str
    description: str
    targets: tuple[Target, ...] | tuple[PromTarget, ...]
    width: int = 12
    height: int = 8
    defaults: Mapping[str, Any] = field(default_factory=dict)
    overrides: tuple[Mapping[str, Any], ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    transformations: tuple[Mapping[str, Any], ...] = ()
    time_from: str = ""

    def json(self, panel_id: int, x: int, y: int, datasource_uid: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": panel_id, "type": self.kind, "title": self.title,
            "description": self.description,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "datasource": datasource_ref(datasource_uid, self.targets[0].datasource_type
                                         if self.targets else DATASOURCE_TYPE),
            "targets": [t.json(datasource_uid) for t in self.targets],
            "fieldConfig": {"defaults": dict(self.defaults),
                            "overrides": [dict(o) for o in self.overrides]},
            "options": dict(self.options),
        }
        if self.transformations:
            out["transformations"] = [dict(t) for t in self.transformations]
        if self.time_from:
            out["timeFrom"] = self.time_from
        return out


@dataclass(frozen=True, slots=True)
class Row:
    """A row header: starts a new line of panels."""

    title: str


@dataclass(frozen=True, slots=True)
class Variable:
    """A custom template variable: ``options`` are (text, value) pairs; multi-select with All.

    ``all_value`` is what ``All`` stands for in a query (``.*`` inside a regex).
    """

    name: str
    label: str
    description: str
    options: tuple[tuple[str, str], ...]
    all_value: str = ".*"

    def json(self) -> dict[str, Any]:
        all_option = {"selected": True, "text": "All", "value": "$__all"}
        return {
            "type": "custom", "name": self.name, "label": self.label,
            "description": self.description, "multi": True, "includeAll": True,
            "allValue": self.all_value,
            "query": ",".join(f"{text} : {value}" for text, value in self.options),
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [all_option] + [{"selected": False, "text": text, "value": value}
                                       for text, value in self.options],
        }


@dataclass(frozen=True, slots=True)
class Annotation:
    """An InfluxQL annotation query; ``text_column`` holds each event's text."""

    name: str
    query: str
    text_column: str
    tags_column: str = ""
    color: str = "red"

    def json(self, datasource_uid: str) -> dict[str, Any]:
        return {"name": self.name, "datasource": datasource_ref(datasource_uid), "enable": True,
                "iconColor": self.color, "query": self.query, "textColumn": self.text_column,
                "tagsColumn": self.tags_column, "titleColumn": ""}


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A whole dashboard; ``uid`` must be stable (pushes update it in place)."""

    uid: str
    title: str
    description: str
    timezone: str
    items: tuple[Panel | Row, ...]
    variables: tuple[Variable, ...] = ()
    annotations: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = ()
    time_from: str = "now-6h"
    refresh: str = "10s"

    def panels(self) -> list[Panel]:
        return [item for item in self.items if isinstance(item, Panel)]

    def json(self, datasource_uid: str) -> dict[str, Any]:
        builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                   "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                   "name": "Annotations & Alerts", "type": "dashboard"}
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": list(self.tags), "timezone": self.timezone, "editable": False,
            "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": [v.json() for v in self.variables]},
            "annotations": {"list": [builtin] + [a.json(datasource_uid)
                                                 for a in self.annotations]},
            "panels": _layout(self.items, datasource_uid),
        }


def _layout(items: Sequence[Panel | Row], datasource_uid: str) -> list[dict[str, Any]]:
    """Grid positions: panels fill a line of 24 columns; a row header takes a line of its own."""
    out: list[dict[str, Any]] = []
    x = y = line_height = 0
    for panel_id, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line_height
            out.append({"id": panel_id, "type": "row", "title": item.title, "collapsed": False,
                        "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": y}, "panels": []})
            x, y, line_height = 0, y + 1, 0
            continue
        if x + item.width > GRID_COLUMNS:
            x, y, line_height = 0, y + line_height, 0
        out.append(item.json(panel_id, x, y, datasource_uid))
        x += item.width
        line_height = max(line_height, item.height)
    return out
