"""A PNG preview of a mine dashboard (matplotlib), drawn from the panels' own queries.

:func:`run_panel` expands a panel's queries as Grafana would (:func:`dashboards.influxql.expand`)
and runs them through ``run`` — any callable taking InfluxQL and returning the ``/query``
result of one statement (``{"series": [...]}``), e.g. an InfluxDB 1.x ``GET /query``.
:func:`render_preview` draws what a dispatcher sees first: the methane panels of the areas
with their limit lines (the panels' own threshold overrides) and the state table.

The preview's labels are English (sensor ids, English kind names, ``alarm`` / ``power-off`` …):
matplotlib here has no CJK font, and tofu boxes would hide what the picture is for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dashboards.grafana import Dashboard, Panel, Target
from dashboards.influxql import expand
from dashboards.states import point_state

__all__ = ["Run", "Window", "render_preview", "run_panel", "table_rows"]

Run = Callable[[str], dict[str, Any]]
Window = dict[str, Any]  # keyword arguments of dashboards.influxql.expand


def run_panel(panel: Panel, run: Run, window: Window) -> dict[str, list[dict[str, Any]]]:
    """refId → the series its expanded query returns."""
    return {t.ref_id: run(expand(t.query, **window)).get("series", []) for t in panel.targets
            if isinstance(t, Target)}


def table_rows(panel: Panel, run: Run, window: Window) -> list[dict[str, Any]]:
    """The state table as Grafana's outer join by sensor makes it: one dict per sensor."""
    frames = run_panel(panel, run, window)
    rows: dict[str, dict[str, Any]] = {}
    for series in frames["A"]:
        row = rows.setdefault(series["tags"]["sensor"], {"status": None})
        row.update(series["tags"])
        row["time"], row["value"] = series["values"][0]
    for series in frames["B"]:  # sensors heard within the silence window: their status
        rows.setdefault(series["tags"]["sensor"], {})["status"] = series["values"][0][1]
    return [rows[k] for k in sorted(rows)]


def _steps(panel: Panel, ref: str) -> list[tuple[str, float]]:
    for override in panel.overrides:
        if override["matcher"]["options"] == ref:
            for prop in override["properties"]:
                if prop["id"] == "thresholds":
                    return [(s["color"], s["value"]) for s in prop["value"]["steps"]
                            if s["value"] is not None]
    return []


_COLOURS = {"green": "tab:green", "yellow": "gold", "red": "tab:red", "dark-red": "darkred"}


def render_preview(dashboard: Dashboard, run: Run, window: Window, path: Path,
                   max_panels: int = 4) -> Path:
    """Draw the first ``max_panels`` methane panels and the state table into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = dashboard.panels()
    methane = [p for p in panels if p.kind == "timeseries" and "methane" in p.description]
    methane = methane[:max_panels]
    table = next(p for p in panels if p.kind == "table")
    rows = table_rows(table, run, window)
    figure = plt.figure(figsize=(14, 3.2 * len(methane) + 0.28 * len(rows) + 1.5))
    grid = figure.add_gridspec(len(methane) + 1, 1,
                               height_ratios=[3.0] * len(methane) + [0.28 * len(rows) + 0.5])
    for i, panel in enumerate(methane):
        axes = figure.add_subplot(grid[i])
        for target in panel.targets:
            assert isinstance(target, Target)  # InfluxQL: the mine dashboards
            for series in run_panel(panel, run, window)[target.ref_id]:
                times = np.array([v[0] for v in series["values"]], dtype="datetime64[ms]")
                axes.plot(times, [v[1] for v in series["values"]], label=target.alias,
                          linewidth=1)
            for colour, value in _steps(panel, target.ref_id):
                axes.axhline(value, color=_COLOURS.get(colour, colour), linestyle="--",
                             linewidth=0.8)
        axes.set_title(panel.description.split(";")[0], loc="left", fontsize=10)
        axes.set_ylabel("CH4 %")
        axes.legend(loc="upper left", fontsize=8)
    axes = figure.add_subplot(grid[len(methane)])
    axes.axis("off")
    cells = [[r["sensor"], r.get("kind", ""), r.get("location", ""),
              "" if r.get("value") is None else f"{r['value']:.2f}",
              point_state(r["status"]).name_en] for r in rows]
    colours = {"normal": "#c8e6c9", "alarm": "#ef9a9a", "power-off": "#e57373",
               "fault": "#ce93d8", "calibration": "#90caf9", "no data": "#e0e0e0"}
    shown = axes.table(cellText=cells, colLabels=["sensor", "kind", "location", "value",
                                                  "state"],
                       cellColours=[["white"] * 4 + [colours[c[4]]] for c in cells],
                       loc="upper center")
    shown.auto_set_font_size(False)
    shown.set_fontsize(8)
    axes.set_title(f"{dashboard.description.split(':')[0]} — sensor states", loc="left",
                   fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
