"""The daily report's methane plot as a dispatcher reads it: title, clock, labelled limits, gaps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.lines import Line2D

from alerts.report import methane_figure, plot_methane
from config.loader import CONFIG_DIR, load_deployment
from config.model import Mine

DAY_START = 1_795_536_000_000  # 2026-11-25 00:00 Asia/Shanghai
DAY = (DAY_START, DAY_START + 86_400_000)


@pytest.fixture(scope="module")
def qipanjing() -> Mine:
    deployment = load_deployment(CONFIG_DIR / "jinmei.example.toml")
    return next(m for m in deployment.mines if m.id == "qipanjing")


def _rows(mine: Mine) -> list[tuple[str, int, float, int]]:
    """T1-1101 at its period from 01:00 to 02:00 and again from 03:00 to 03:10 (an hour gap)."""
    t1 = next(s for s in mine.sensors if s.id == "T1-1101")
    step = int(t1.period_s * 1000)
    first = [DAY_START + 3_600_000 + k * step for k in range(int(3_600_000 / step))]
    second = [DAY_START + 3 * 3_600_000 + k * step for k in range(int(600_000 / step))]
    return [("T1-1101", ts, 0.5, 0) for ts in first + second]


def _area_axes(fig, mine: Mine):  # type: ignore[no-untyped-def]
    area = next(s.area for s in mine.sensors if s.id == "T1-1101")
    return next(ax for ax in fig.axes if ax.get_ylabel().startswith(area))


def test_title_names_mine_and_date(qipanjing: Mine) -> None:
    fig = methane_figure(qipanjing, DAY, _rows(qipanjing), "2026-11-25")
    title = fig._suptitle.get_text()
    assert "棋盘井煤矿" in title and "2026-11-25" in title and "methane" in title


def test_limit_lines_are_labelled_in_both_languages(qipanjing: Mine) -> None:
    fig = methane_figure(qipanjing, DAY, _rows(qipanjing), "2026-11-25")
    labels = [t.get_text() for t in _area_axes(fig, qipanjing).get_legend().get_texts()]
    t1 = next(s for s in qipanjing.sensors if s.id == "T1-1101")
    assert any(x.startswith(f"报警 alarm {t1.limits.alarm_high:g} % (") and "T1-1101" in x
               for x in labels)
    assert f"断电 power-off {t1.limits.power_off:g} % (T0-1101, T1-1101, CH4-1101)" in labels
    assert any(x.startswith(f"复电 restore {t1.limits.restore:g} % (") for x in labels)
    assert "T1-1101" in labels


def test_time_axis_is_the_mines_clock(qipanjing: Mine) -> None:
    fig = methane_figure(qipanjing, DAY, _rows(qipanjing), "2026-11-25")
    fig.canvas.draw()
    bottom = fig.axes[-1]
    ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
    assert ticks[:3] == ["00:00", "02:00", "04:00"]  # local midnight, not 16:00 UTC
    assert "UTC+08:00" in bottom.get_xlabel()


def test_a_pause_in_the_data_is_drawn_as_a_gap(qipanjing: Mine) -> None:
    fig = methane_figure(qipanjing, DAY, _rows(qipanjing), "2026-11-25")
    line = next(line for line in _area_axes(fig, qipanjing).get_lines()
                if isinstance(line, Line2D) and line.get_label() == "T1-1101")
    y = np.asarray(line.get_ydata(), dtype=np.float64)
    assert np.isnan(y).sum() == 1  # one break: between 02:00 and 03:00, nowhere else
    assert np.count_nonzero(~np.isnan(y)) == len(_rows(qipanjing))


def test_png_is_written(qipanjing: Mine, tmp_path: Path) -> None:
    path = tmp_path / "day.png"
    plot_methane(qipanjing, DAY, _rows(qipanjing), path, "2026-11-25")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
