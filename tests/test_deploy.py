"""The files in deploy/: systemd units that systemd accepts, a Mosquitto config that starts.

``systemd-analyze verify`` parses a unit as systemd would and checks its executables exist; a
warning about our file (an unknown or misspelt setting) fails the test, not only an error.
Skipped where the tool is missing (it is on Debian 12 and in CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "deploy" / "systemd"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed here")


def verify(unit: Path, unit_path: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                          text=True, env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_path}:"})
    ours = [line for line in (done.stdout + done.stderr).splitlines()
            if str(unit_path) in line and "does not start with any known prefix" not in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


@needs_systemd
def test_jinmei_service_unit_verifies(tmp_path: Path) -> None:
    text = (SYSTEMD / "jinmei.service").read_text(encoding="utf-8")
    # verify checks that ExecStart exists: point it at this checkout's jinmei
    installed = Path(sys.executable).parent / "jinmei"
    assert "/opt/jinmei/.venv/bin/jinmei run --config /etc/jinmei/jinmei.toml" in text
    (tmp_path / "jinmei.service").write_text(
        text.replace("/opt/jinmei/.venv/bin/jinmei", str(installed)), encoding="utf-8")
    verify(tmp_path / "jinmei.service", tmp_path)
    settings = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
                if "=" in line and not line.startswith("#")}
    assert settings["Restart"] == "on-failure" and settings["User"] == "jinmei"
    assert settings["ProtectSystem"] == "strict" and settings["ReadWritePaths"] == "/var/lib/jinmei"
    assert settings["StateDirectory"] == "jinmei"
    assert all(settings[k] == "yes" for k in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"))


@needs_systemd
def test_mosquitto_drop_in_verifies_with_debians_unit(tmp_path: Path) -> None:
    debian = Path("/lib/systemd/system/mosquitto.service")
    if not debian.exists():
        pytest.skip("Debian's mosquitto.service is not installed here")
    shutil.copy(debian, tmp_path / "mosquitto.service")
    shutil.copytree(SYSTEMD / "mosquitto.service.d", tmp_path / "mosquitto.service.d")
    verify(tmp_path / "mosquitto.service", tmp_path)
