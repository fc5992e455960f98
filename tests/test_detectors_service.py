"""The full detector set through the running service and a real Mosquitto: one story per rule.

Telemetry goes in on ``jinmei/qipanjing/telemetry/...``; the alerts must come out on
``jinmei/qipanjing/alerts`` with the contract's rule, condition and severity:
device fault of a methane point guarding power-off (critical sensor_fault), a feed still live
after a methane power-off (feed_fault, with the limit alert as well: fail-safe), a steady
backdated rise (trend), a heading's return sensor creeping away from its steady face sensor
(sensor_fault drift, its window shortened to 20 min) and a substation falling silent (no_data,
one grouped condition).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from ingest.codec import encode_telemetry
from jinmei.service import Service
from tests.servers import Mosquitto
from tests.test_service import Listener, deployment_for, send

pytestmark = pytest.mark.integration

S01, S02 = "jinmei/qipanjing/telemetry/S01", "jinmei/qipanjing/telemetry/S02"
S04 = "jinmei/qipanjing/telemetry/S04"


def test_every_rule_reaches_the_alerts_topic(mosquitto: Mosquitto, tmp_path: Path) -> None:
    deployment = deployment_for(mosquitto, tmp_path)
    deployment = dataclasses.replace(
        deployment, detectors=dataclasses.replace(deployment.detectors, no_data_periods=1.0,
                                                  drift_window_s=1200.0))
    listener = Listener(mosquitto, "jinmei/+/alerts")
    service = Service(deployment)
    assert service.start(wait_subscribed_s=10)
    now = int(time.time() * 1000)
    rise_from = now - 600_000
    try:
        send(mosquitto, [
            (S01, encode_telemetry(now - 5_000, [("T0-1101", 0.3, "fault")])),
            (S01, encode_telemetry(now - 4_900, [("KD-1101", 1, "ok")])),
            (S01, encode_telemetry(now - 4_000, [("T1-1101", 1.62, "ok")])),
            # the feed still live 3 s after the power-off: more than the 2 s allowed
            (S01, encode_telemetry(now - 1_000, [("KD-1101", 1, "ok")])),
            # readings with their own ts (the contract allows it): ten minutes of a rise
            (S02, json.dumps({"ts": rise_from, "readings": [
                {"sensor": "T1-1103", "value": round(0.3 + 0.015 * k, 3),
                 "ts": rise_from + k * 10_000} for k in range(30)]}).encode()),
            # 25 minutes of heading 1107: the return creeps up 0.4 %, the face holds
            (S04, json.dumps({"ts": now, "readings": [
                {"sensor": sensor, "value": value, "ts": now - 1_500_000 + k * 10_000}
                for k in range(150) for sensor, value in (
                    ("T1-1107", round(0.30 + 0.01 * (k % 2), 2)),
                    ("T2-1107", round(0.25 + 0.4 * max(k - 30, 0) / 120, 2)))]}).encode()),
        ])

        def fired(rule: str, condition: str) -> dict:
            found = listener.wait_for(lambda m: m[1]["rule"] == rule
                                      and m[1]["condition"] == condition
                                      and m[1]["state"] == "firing", timeout=40)
            return found[0][1]

        fault = fired("sensor_fault", "device_fault")
        feed = fired("feed_fault", "feed_on_power_off")
        limit = fired("limit_power_off", "power_off")
        trend = fired("trend", "trend_high")
        drift = fired("sensor_fault", "drift")
        silent = fired("no_data", "substation_silent")
    finally:
        service.stop()
        listener.close()
    assert (fault["sensor"], fault["severity"]) == ("T0-1101", "critical")
    assert (feed["sensor"], feed["severity"], feed["value"]) == ("KD-1101", "critical", 1.0)
    assert limit["sensor"] == "T1-1101"
    assert trend["sensor"] == "T1-1103" and trend["severity"] == "warning"
    assert (drift["sensor"], drift["severity"], drift["limit"]) == ("T2-1107", "warning", 0.2)
    # Nothing at all came from Dayan: one condition per substation, not one per sensor.
    assert silent["severity"] in ("alarm", "critical") and silent["limit"] >= 10.0
