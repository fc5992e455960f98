"""`jinmei demo` as a newcomer runs it: one command, embedded broker, exit 0, a true summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_stores_every_reading_and_fires_and_resolves_methane_alerts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jinmei.cli", "demo", "--duration", "20",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = {m[0]: tuple(map(int, m[1:])) for m in re.findall(
        r"^(dayan|qipanjing)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.MULTILINE)}
    assert set(rows) == {"dayan", "qipanjing"}, out
    for mine, (published, stored, rejects, fired, resolved) in rows.items():
        assert published > 1000 and stored == published, (mine, out)
        assert rejects == 2, (mine, out)  # the two deliberately broken messages per mine
        assert fired >= 1 and fired == resolved, (mine, out)
    assert re.search(r"FIRING\s+critical\s+limit_power_off\s+【断电】", out)
    assert re.search(r"RESOLVED\s+critical\s+limit_power_off\s+【复电】", out)
    # the work folder holds the SQLite store and the alert record
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "readings.db").exists() and (run_dir / "alerts.db").exists()
