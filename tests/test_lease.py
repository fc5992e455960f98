"""The networking lease (ingest.lease) on a real Mosquitto: of two instances one holds it,
the other takes over when the holder releases it or dies — and, through ``jinmei run``, only
one instance writes networking files while both run, the other after the first is killed -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.loader import DEFAULT_DEPLOYMENT
from config.model import BrokerConfig
from ingest.lease import Lease
from tests.servers import Mosquitto, free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = Path(DEFAULT_DEPLOYMENT).parent
TOPIC = "jinmei/qipanjing/networking/lease"


def lease(broker: Mosquitto, name: str, lease_s: float = 3.0) -> Lease:
    held = Lease(BrokerConfig(url=broker.url, client_id=f"jinmei-{name}"), TOPIC, name,
                 lease_s=lease_s, settle_s=0.5)
    held.start()
    return held


def holders(leases: list[Lease]) -> list[str]:
    now = time.time()
    return [x.instance for x in leases if x.held(now)]


def test_one_of_two_holds_and_the_other_takes_over_on_release(mosquitto: Mosquitto) -> None:
    a, b = lease(mosquitto, "a"), lease(mosquitto, "b")
    try:
        assert wait_until(lambda: len(holders([a, b])) == 1, 10)
        for _ in range(20):  # renewed, never both, never none, for several lease periods
            time.sleep(0.25)
            assert len(holders([a, b])) == 1
        first = holders([a, b])[0]
        holder, other = (a, b) if first == "a" else (b, a)
        holder.close()  # releases: the other holds within its settle time
        assert wait_until(lambda: other.held(time.time()), 5)
        late = lease(mosquitto, first)  # comes back: sees the lease held and waits
        time.sleep(2.0)
        assert holders([other, late]) == [other.instance]
        late.close()
    finally:
        a.close()
        b.close()


def write_config(tmp_path: Path, name: str) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(
        f'mines = ["{SHIPPED / "mines" / "qipanjing.toml"}"]\n'
        f'[broker]\nclient_id = "jinmei-{name}"\n'
        '[http]\nlisten = ""\n'  # two instances on one host: no operator endpoint here
        f'[ingest]\nstate_dir = "{tmp_path / name}"\n'
        # Nothing listens at the url: files stay archived and queued (what the test counts).
        f'[networking]\nenabled = true\ncdss_period_s = 1.0\n'
        f'url = "ftp://jinmei@127.0.0.1:{free_port()}/in"\ninsecure = true\n', encoding="utf-8")
    return config


def start(tmp_path: Path, broker: Mosquitto, name: str) -> subprocess.Popen[bytes]:
    with (tmp_path / f"{name}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "jinmei.cli", "run", "--config",
             str(write_config(tmp_path, name)), "--broker", broker.url,
             "--store", f"sqlite:///{tmp_path / 'readings.db'}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def files(tmp_path: Path, name: str) -> list[Path]:
    archive = tmp_path / name / "networking" / "archive"
    return sorted(p for p in archive.rglob("*") if p.is_file()) if archive.exists() else []


def test_networking_files_are_written_by_one_instance_then_by_the_survivor(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    first = start(tmp_path, mosquitto, "a")
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_until(lambda: files(tmp_path, "a"), 30), (tmp_path / "a.log").read_text()
        second = start(tmp_path, mosquitto, "b")
        assert wait_until(lambda: b"serving" in (tmp_path / "b.log").read_bytes(), 30)
        before = len(files(tmp_path, "a"))
        time.sleep(8.0)  # both run: a keeps writing (CDSS every second), b writes nothing
        assert len(files(tmp_path, "a")) >= before + 4
        assert files(tmp_path, "b") == [], (tmp_path / "b.log").read_text()[-2000:]

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        # The dead holder's lease is no longer renewed: b claims it after LEASE_S (15 s).
        assert wait_until(lambda: files(tmp_path, "b"), 40), (tmp_path / "b.log").read_text()
        assert time.monotonic() - killed_at >= 10.0, "took over while the lease was valid"
        assert "held by this instance" in (tmp_path / "b.log").read_text()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                if proc.wait(30) != 0:
                    pytest.fail(f"unclean stop: {proc.returncode}")
