"""What a broker crash loses, on the real Mosquitto (bench/bench_broker_durability.py).

QoS 1 messages queued for jinmei's persistent session, every one acknowledged by the broker,
then the broker killed with SIGKILL and started again on its persistence file: with the
persistence settings jinmei generates and ships (autosave every second) nothing published
2.5 s before the crash is lost; with the stock 30 s that deploy/ used to ship, all of it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_broker_durability import SETTINGS, run_case
from jinmei.broker_config import PERSISTENCE

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_persistence_keeps_what_was_acknowledged_a_second_before_a_crash(
        tmp_path: Path) -> None:
    outcome = run_case(PERSISTENCE, 3_000, 2.5, tmp_path)
    assert outcome.lost == 0, outcome


def test_the_stock_autosave_loses_everything_of_the_last_30_seconds(tmp_path: Path) -> None:
    outcome = run_case(SETTINGS["stock 30 s (shipped before)"], 3_000, 2.5, tmp_path)
    assert outcome.delivered == 0, outcome  # the measurement can tell the two apart


def test_deploy_mosquitto_conf_persists_as_the_generator_does() -> None:
    shipped = (ROOT / "deploy" / "mosquitto.conf").read_text()
    assert all(line in shipped.splitlines() for line in PERSISTENCE.splitlines())
