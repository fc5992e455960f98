"""The daily report (日报) of one mine: per sensor, what the readings and the alerts were.

Per sensor over the mine's local day: readings, max / min / mean (calibration readings left
out: 标校 never counts), alarm and power-off counts and their total durations (episodes of the
alert record clipped to the day; an episode still open counts to the day's end), sensor-fault
and no-data episodes and time. Rendered as Markdown (for people) and CSV (for tools); the plot
— methane per working face over the day with its limits — is ``plot_methane`` (matplotlib,
PNG: titled, local clock times, labelled limits, gaps left as gaps). Input: reading rows
(sensor, ts, value, status) and alert transitions, passed in.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

from alerts.wire import Alert
from config.model import Mine

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SensorDay", "daily", "methane_figure", "plot_methane", "to_csv", "to_markdown"]

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


# Limit lines of the plot: (attribute of Limits, Chinese, English, line style, colour).
_LIMIT_LINES = (("alarm_high", "报警", "alarm", ":", "darkorange"),
                ("power_off", "断电", "power-off", "--", "red"),
                ("restore", "复电", "restore", "-.", "green"))
# CJK fonts matplotlib may find (Debian fonts-wqy-microhei, fonts-noto-cjk); without one the
# Chinese labels would be drawn as empty boxes, so the plot falls back to English alone.
_CJK_FONTS = ("WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC")
_MS_A_DAY = 86_400_000
_GAP_PERIODS = 3  # a pause longer than this many sampling periods is drawn as a gap (no_data's k)


def _cjk_font() -> str | None:
    """The first of ``_CJK_FONTS`` that matplotlib can use; a font installed after
    matplotlib's font cache was written is found by a scan of the system's font folders."""
    from matplotlib import font_manager

    def known() -> str | None:
        installed = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in _CJK_FONTS if name in installed), None)

    if (found := known()) is None:
        for path in font_manager.findSystemFonts():
            if any(mark in Path(path).name.lower() for mark in ("wqy", "notosanscjk", "sourcehan")):
                font_manager.fontManager.addfont(path)
        found = known()
    return found


def _with_gaps(ts: np.ndarray, value: np.ndarray, gap_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """The series with a NaN after every pause longer than ``gap_ms``: the line breaks there
    instead of joining readings across a stretch with no data."""
    order = np.argsort(ts, kind="stable")
    ts, value = ts[order], value[order]
    breaks = np.flatnonzero(np.diff(ts) > gap_ms) + 1
    return (np.insert(ts.astype(np.float64), breaks, np.nan),
            np.insert(value.astype(np.float64), breaks, np.nan))


def methane_figure(mine: Mine, day: tuple[int, int],
                   rows: Sequence[tuple[str, int, float, int]], date: str) -> Figure:
    """Methane of each working face / heading over the mine's local day, with its alarm,
    power-off and restore limits labelled (报警 / 断电 / 复电), local clock times on the x axis
    (the mine's zone, its UTC offset in the label), and gaps in the data left as gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    zone = ZoneInfo(mine.timezone or "Asia/Shanghai")
    offset = datetime.fromtimestamp(day[0] / 1000, zone).strftime("%z")
    font = _cjk_font()
    chinese = font is not None
    if chinese and plt.rcParams["font.sans-serif"][0] != font:
        # matplotlib resolves a text's font when the figure is drawn, not when the text is
        # made: the CJK font (it has Latin glyphs too) leads the process's sans-serif list.
        plt.rcParams["font.sans-serif"] = [font, *plt.rcParams["font.sans-serif"]]

    def label(zh: str, en: str) -> str:
        return f"{zh} {en}" if chinese else en

    methane = [s for s in mine.sensors if s.kind == "ch4"]
    areas = sorted({s.area for s in methane})
    fig, axes = plt.subplots(max(len(areas), 1), 1, figsize=(10, 1.2 + 2.2 * max(len(areas), 1)),
                             sharex=True, squeeze=False)
    fig.suptitle(f"{mine.name} {mine.name_en} — 甲烷 methane {date}" if chinese
                 else f"{mine.name_en} — methane {date}")
    for ax, area in zip(axes[:, 0], areas, strict=False):
        sensors = [s for s in methane if s.area == area]
        for s in sensors:
            points = [(ts, v) for sensor, ts, v, _ in rows if sensor == s.id
                      and day[0] <= ts < day[1]]
            if points:
                ts, v = np.array(points).T
                ts, v = _with_gaps(ts, v, _GAP_PERIODS * s.period_s * 1000)
                # matplotlib's dates are days since 1970-01-01 UTC; NaN keeps the gaps
                ax.plot(ts / _MS_A_DAY, v, label=s.id, linewidth=0.8)
        # One line per distinct limit of the area, naming the points it belongs to.
        for attribute, zh, en, style, colour in _LIMIT_LINES:
            by_limit: dict[float, list[str]] = {}
            for s in sensors:
                if (limit := getattr(s.limits, attribute)) is not None:
                    by_limit.setdefault(limit, []).append(s.id)
            for limit, owners in sorted(by_limit.items()):
                ax.axhline(limit, linestyle=style, color=colour, linewidth=0.7,
                           label=f"{label(zh, en)} {limit:g} % ({', '.join(owners)})")
        ax.set_ylabel(f"{area}\nCH4 %")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6)
    bottom = axes[-1, 0]
    bottom.set_xlim(day[0] / _MS_A_DAY, day[1] / _MS_A_DAY)
    bottom.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 2), tz=zone))
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=zone))
    bottom.set_xlabel(label("当地时间", "local time") + f" (UTC{offset[:3]}:{offset[3:]})")
    fig.tight_layout()
    return fig


def plot_methane(mine: Mine, day: tuple[int, int], rows: Sequence[tuple[str, int, float, int]],
                 path: Path, date: str) -> None:
    """:func:`methane_figure` written as a PNG to ``path``."""
    import matplotlib.pyplot as plt

    fig = methane_figure(mine, day, rows, date)
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legends stand right of the plots
    plt.close(fig)
