"""The daily report (日报) of one mine: per sensor, what the readings and the alerts were.

Per sensor over the mine's local day: readings, max / min / mean (calibration readings left
out: 标校 never counts), alarm and power-off counts and their total durations (episodes of the
alert record clipped to the day; an episode still open counts to the day's end), sensor-fault
and no-data episodes and time. Rendered as Markdown (for people) and CSV (for tools); the plot
— methane per working face over the day with its limits — is ``plot_methane`` (matplotlib,
PNG). Input: reading rows (sensor, ts, value, status) and alert transitions, passed in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alerts.wire import Alert
from config.model import Mine

__all__ = ["SensorDay", "daily", "plot_methane", "to_csv", "to_markdown"]

_CALIBRATION = 4  # status bit (domain.md §4)
_COUNTED = {"limit_alarm": "alarm", "limit_power_off": "power_off", "sensor_fault": "fault",
            "no_data": "no_data"}


@dataclass(frozen=True, slots=True)
class SensorDay:
    sensor: str
    kind: str
    place: str
    readings: int
    max: float
    min: float
    mean: float
    alarm_count: int
    alarm_s: float
    power_off_count: int
    power_off_s: float
    fault_count: int
    fault_s: float
    no_data_count: int
    no_data_s: float


def _episodes(alerts: Sequence[Alert], day: tuple[int, int]) -> dict[tuple[str, str], list[float]]:
    """Seconds within the day of each episode, by (sensor, counted rule)."""
    starts: dict[str, Alert] = {}
    ends: dict[str, int] = {}
    for a in alerts:
        if a.state == "firing":
            starts.setdefault(a.id, a)
        elif a.state == "resolved":
            ends[a.id] = a.ts
    out: dict[tuple[str, str], list[float]] = {}
    for episode, a in starts.items():
        counted = _COUNTED.get(a.rule)
        end = ends.get(episode, day[1])
        if counted is None or end < day[0] or a.started_at >= day[1]:
            continue
        seconds = (min(end, day[1]) - max(a.started_at, day[0])) / 1000
        out.setdefault((a.sensor, counted), []).append(seconds)
    return out


def daily(mine: Mine, day: tuple[int, int], rows: Sequence[tuple[str, int, float, int]],
          alerts: Sequence[Alert]) -> list[SensorDay]:
    """``day`` is [start, end) in epoch ms; ``rows`` (sensor, ts, value, status)."""
    data = np.array([(ts, value, status) for _, ts, value, status in rows],
                    dtype=np.float64).reshape(-1, 3)
    names = np.array([sensor for sensor, *_ in rows], dtype=object)
    inside = (data[:, 0] >= day[0]) & (data[:, 0] < day[1]) & \
             ((data[:, 2].astype(np.int64) & _CALIBRATION) == 0)
    episodes = _episodes(alerts, day)
    report = []
    for s in mine.sensors:
        values = data[inside & (names == s.id), 1]
        stats = (float(values.max()), float(values.min()), float(values.mean())) \
            if len(values) else (float("nan"),) * 3

        def ep(rule: str, sensor: str = s.id) -> tuple[int, float]:
            spans = episodes.get((sensor, rule), [])
            return len(spans), round(sum(spans), 1)

        report.append(SensorDay(s.id, s.kind, s.place, len(values), *stats, *ep("alarm"),
                                *ep("power_off"), *ep("fault"), *ep("no_data")))
    return report


def to_csv(report: Sequence[SensorDay]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(SensorDay.__slots__))
    writer.writeheader()
    writer.writerows(asdict(r) for r in report)
    return out.getvalue()


def to_markdown(mine: Mine, date: str, report: Sequence[SensorDay]) -> str:
    lines = [f"# {mine.name} {mine.name_en} — 日报 daily report {date}", "",
             "| 测点 sensor | 种类 kind | 地点 place | 读数 n | 最大 max | 最小 min | 平均 mean "
             "| 报警 alarms (s) | 断电 power-offs (s) | 故障 faults (s) | 无数据 no data (s) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report:
        lines.append(f"| {r.sensor} | {r.kind} | {r.place} | {r.readings} | {r.max:.2f} | "
                     f"{r.min:.2f} | {r.mean:.2f} | {r.alarm_count} ({r.alarm_s:g}) | "
                     f"{r.power_off_count} ({r.power_off_s:g}) | {r.fault_count} "
                     f"({r.fault_s:g}) | {r.no_data_count} ({r.no_data_s:g}) |")
    return "\n".join(lines) + "\n"


def plot_methane(mine: Mine, day: tuple[int, int], rows: Sequence[tuple[str, int, float, int]],
                 path: Path) -> None:
    """Methane of each working face / heading over the day, with its alarm and power-off
    limits, as a PNG (hours of the day on the x axis, UTC offset of the mine's local day)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methane = [s for s in mine.sensors if s.kind == "ch4"]
    areas = sorted({s.area for s in methane})
    fig, axes = plt.subplots(max(len(areas), 1), 1, figsize=(10, 2.2 * max(len(areas), 1)),
                             sharex=True, squeeze=False)
    for ax, area in zip(axes[:, 0], areas, strict=False):
        for s in (s for s in methane if s.area == area):
            points = [(ts, v) for sensor, ts, v, _ in rows if sensor == s.id
                      and day[0] <= ts < day[1]]
            if points:
                ts, v = np.array(points).T
                ax.plot((ts - day[0]) / 3.6e6, v, label=s.id, linewidth=0.8)
            for limit, style in ((s.limits.alarm_high, ":"), (s.limits.power_off, "--")):
                if limit is not None:
                    ax.axhline(limit, linestyle=style, color="red", linewidth=0.6)
        ax.set_ylabel(f"{area} CH4 %")
        if ax.get_legend_handles_labels()[0]:  # an area with no readings that day has none
            ax.legend(loc="upper right", fontsize=6)
    axes[-1, 0].set_xlabel("hour of the day (local)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
