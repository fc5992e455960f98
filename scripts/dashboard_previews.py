"""Render docs/dashboard-<mine>.png: each mine dashboard's preview on a simulated feed.

Starts InfluxDB 1.6 (Debian ``influxd``) in a temporary folder, writes the feed of
tests/test_dashboards_influx.py (Dayan's methane rise cut at its peak, a silent CO sensor,
Qipanjing normal with one faulty sensor) exactly as the sink does, and draws every mine
dashboard with dashboards.preview.render_preview — the dashboards' own queries.

    .venv/bin/python -m scripts.dashboard_previews [OUT_DIR]   (default: docs)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from config.loader import deployment_limits, load_deployment
from dashboards.mine import mine_dashboard
from dashboards.preview import render_preview
from tests.servers import influxdb1
from tests.test_dashboards_influx import FEED_S, write_feed


def main(out: Path) -> None:
    deployment = load_deployment(None)
    table = deployment_limits(deployment)
    out.mkdir(parents=True, exist_ok=True)
    end_ms = int(time.time() * 1000) - 1_000
    window = {"start_ms": end_ms - FEED_S * 1000, "end_ms": end_ms + 5_000,
              "min_interval_ms": 10_000, "variables": {"area": ["$__all"], "kind": ["$__all"]},
              "all_values": {"area": ".*", "kind": ".*"}}
    with tempfile.TemporaryDirectory() as tmp, influxdb1(Path(tmp)) as influx:
        write_feed(influx, deployment, end_ms)
        for mine in deployment.mines:
            path = render_preview(mine_dashboard(mine, table), influx.query, window,
                                  out / f"dashboard-{mine.id}.png")
            print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
