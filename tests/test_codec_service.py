"""Hostile telemetry through the running service and a real Mosquitto (issue 11, item 1).

A message nested 1,000 deep under a key the typed decode skips (it used to raise
``RecursionError`` out of the codec and kill the ingest thread) and a ~1 MiB message of 30,000
unknown sensors (it used to cost minutes of re-parsing) are each refused with ONE summary on
``jinmei/dayan/rejects`` — reason and count — while every refused reading is still counted,
and a power-off on another mine published right after them alerts within a second.
"""

from __future__ import annotations

import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from ingest.codec import encode_telemetry
from jinmei.service import Service
from tests.servers import Mosquitto, wait_until
from tests.test_service import T1, Listener, deployment_for, send

pytestmark = pytest.mark.integration

DAYAN = "jinmei/dayan/telemetry/S1"
UNKNOWN = 30_000
POWER_OFF_WITHIN_S = 1.0  # issue 11: "a power-off on another mine alerts within 1 s"


class TimedListener(Listener):
    """A Listener that also notes when each message arrived (time.monotonic)."""

    def __init__(self, broker: Mosquitto, *topics: str) -> None:
        self.arrived: list[float] = []
        super().__init__(broker, *topics)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.arrived.append(time.monotonic())
        super()._on_message(client, userdata, msg)


def deep_nesting(now_ms: int) -> bytes:
    """2 KB of valid JSON: a good reading, and an array nested 1,000 deep under a skipped key."""
    return (b'{"ts": %d, "vendor": ' % now_ms + b"[" * 1000 + b"]" * 1000
            + b', "readings": [{"sensor": "T0-1201", "value": 0.3}]}')


def unknown_sensors(now_ms: int) -> bytes:
    return encode_telemetry(now_ms, [(f"X{i:05d}", 0.5, "ok") for i in range(UNKNOWN)])


def test_hostile_messages_get_one_summary_each_and_another_mine_still_alarms_on_time(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    listener = TimedListener(mosquitto, "jinmei/+/alerts", "jinmei/+/rejects")
    service = Service(deployment_for(mosquitto, tmp_path))
    assert service.start(wait_subscribed_s=10)
    now_ms = int(time.time() * 1000)
    big = unknown_sensors(now_ms)
    assert 900_000 < len(big) <= 1_048_576  # ~1 MiB, under the codec's size limit
    try:
        send(mosquitto, [(DAYAN, deep_nesting(now_ms)), (DAYAN, big)])
        published = time.monotonic()
        send(mosquitto, [("jinmei/qipanjing/telemetry/S01",
                          encode_telemetry(now_ms, [(T1, 1.62, "ok")]))])
        [(_, alert)] = listener.wait_for(lambda m: m[1].get("rule") == "limit_power_off")
        with listener._lock:
            arrived = next(t for t, m in zip(listener.arrived, listener.messages, strict=True)
                           if m[1].get("rule") == "limit_power_off")
        stats = service.pipeline.stats
        assert wait_until(lambda: stats.rejects_by_reason.total() == UNKNOWN + 1, 15)
        listener.wait_for(lambda m: len([r for r in listener.messages
                                         if r[0].endswith("/rejects")]) >= 2)
        time.sleep(0.5)  # nothing more may follow: one reject message per message
    finally:
        service.stop()
        listener.close()
    assert (alert["mine"], alert["sensor"], alert["state"]) == ("qipanjing", T1, "firing")
    assert arrived - published < POWER_OFF_WITHIN_S, f"{arrived - published:.2f} s"
    assert stats.rejects_by_reason == {"bad_schema": 1, "unknown_sensor": UNKNOWN}
    assert stats.rejects_by_mine == {"dayan": UNKNOWN + 1}
    rejects = [(t, m) for t, m in listener.messages if t.endswith("/rejects")]
    assert [t for t, _ in rejects] == ["jinmei/dayan/rejects"] * 2
    deep, many = (m for _, m in rejects)
    assert (deep["reason"], deep["count"], deep["by_reason"]) == ("bad_schema", 1,
                                                                  {"bad_schema": 1})
    assert "1001 levels deep" in deep["detail"] and deep["truncated"] is False
    assert deep["payload"] == deep_nesting(now_ms).decode()  # the original, whole (2 KB)
    assert (many["reason"], many["count"], many["omitted"]) == ("unknown_sensor", UNKNOWN,
                                                                UNKNOWN - 20)
    assert many["by_reason"] == {"unknown_sensor": UNKNOWN}
    assert [r["reading"]["sensor"] for r in many["readings"]] == [f"X{i:05d}" for i in range(20)]
    assert many["detail"] == "sensor 'X00000' is not configured for mine 'dayan'"
