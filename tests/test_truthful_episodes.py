"""Truthful episode states across a restart, on a real Mosquitto (issue 11 item 5, issue 18).

One service is stopped with three kinds of episode open — a statutory limit alarm (T1-1101 at
1.20 %), a sensor's own silence (T2-1101) and a whole substation's silence (S06) — and a new
service is started on the same ``state_dir``. Checked on the alerts stream and the record:

- nothing resolves and nothing fires again until readings come (the clock and the restart are
  no evidence), and every resolve keeps the id of its firing;
- a no-data transition's value is a reading of its own sensor (its last before the silence,
  the one that ended it) — never a duration;
- a no-data episode is the span jinmei had no data (detectors/silence.py): readings
  back-filled after the restart, stamped before the episodes started, close them when they
  arrive — not at their stamps, never before the start, never a negative duration — and so
  does a back-fill across the start of a silence that began after the restart; the value is
  the oldest reading resent (a substation: its representative's last reading before);
- a calibrating reading is evidence that a sensor talks: it ends that sensor's silence, showing
  the last measured reading before it — carried over the restart (``recall``), as without one.

The mine is Qipanjing cut down to two substations with 2 s sampling periods, so that silence
(3 periods) is noticed in seconds: S01 (T1-1101, T2-1101, CO-1101) and S06 (CH4-ZH, CO-ZH, FS-ZH).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.record import AlertRecord
from alerts.report import daily
from config.model import Deployment
from ingest.codec import encode_telemetry
from jinmei.pipeline import TICK_S
from jinmei.service import Service
from tests.servers import Mosquitto, wait_until
from tests.test_service import Listener, deployment_for, send

pytestmark = pytest.mark.integration

KEEP = ("T1-1101", "T2-1101", "CO-1101", "CH4-ZH", "CO-ZH", "FS-ZH")
S01, S06 = "jinmei/qipanjing/telemetry/S01", "jinmei/qipanjing/telemetry/S06"
PERIOD_S = 2.0  # silence after 6 s; the feeder's 0.5 s leaves a busy machine 5 s of slack
OUTAGE_S = 1.0  # how long CO-1101's outage goes on after it was reported, before the resend
NORMAL = {"T1-1101": 1.20, "T2-1101": 0.30, "CO-1101": 3.0, "CH4-ZH": 0.25, "CO-ZH": 1.0,
          "FS-ZH": 1.5}  # T1 at 1.20 % is past its 1.0 % alarm limit, below power-off 1.5 %


def small_deployment(broker: Mosquitto, workdir: Path) -> Deployment:
    base = deployment_for(broker, workdir, client_id="jinmei-truthful")
    shipped = next(m for m in base.mines if m.id == "qipanjing")
    sensors = tuple(dataclasses.replace(s, period_s=PERIOD_S) for s in shipped.sensors
                    if s.id in KEEP)
    return dataclasses.replace(base, mines=(dataclasses.replace(shipped, sensors=sensors),))


class Feeder:
    """Publishes the live sensors' readings, stamped now, every 0.5 s (a substation polling)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.live: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="feeder")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def set(self, live: dict[str, float]) -> None:
        with self._lock:
            self.live = dict(live)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                live = dict(self.live)
            now = int(time.time() * 1000)
            for topic in (S01, S06):
                rows = [(s, v, "ok") for s, v in live.items() if (topic == S06) == s.endswith("ZH")]
                if rows:
                    self.client.publish(topic, encode_telemetry(now, rows), qos=1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def feeder(mosquitto: Mosquitto) -> Iterator[Feeder]:
    feeding = Feeder(mosquitto)
    yield feeding
    feeding.close()


def transitions(listener: Listener) -> list[dict]:
    return [a for topic, a in list(listener.messages) if topic.endswith("/alerts")]


def find(listener: Listener, sensor: str, condition: str, state: str) -> list[dict]:
    return [a for a in transitions(listener)
            if (a["sensor"], a["condition"], a["state"]) == (sensor, condition, state)]


def test_open_episodes_survive_a_restart_and_end_only_on_readings_with_true_values_and_times(
        mosquitto: Mosquitto, tmp_path: Path, feeder: Feeder) -> None:
    deployment = small_deployment(mosquitto, tmp_path)
    listener = Listener(mosquitto, "jinmei/+/alerts")
    first = Service(deployment)
    assert first.start(wait_subscribed_s=10)
    try:
        # Every sensor reports once; then T2 and all of S06 fall silent while T1 stays high.
        feeder.set(NORMAL)
        assert wait_until(lambda: first.pipeline.stats.readings_by_mine["qipanjing"] >= 12, 15)
        feeder.set({"T1-1101": 1.20, "CO-1101": 3.0})
        assert wait_until(lambda: find(listener, "T2-1101", "silent", "firing")
                          and find(listener, "CH4-ZH", "substation_silent", "firing")
                          and find(listener, "T1-1101", "alarm_high", "firing"), 20)
    finally:
        first.stop()
    [t2_fired] = find(listener, "T2-1101", "silent", "firing")
    [s06_fired] = find(listener, "CH4-ZH", "substation_silent", "firing")
    [t1_fired] = find(listener, "T1-1101", "alarm_high", "firing")
    # The value of a no-data alert is the sensor's last reading, not seconds of silence.
    assert (t2_fired["value"], t2_fired["limit"]) == (0.30, 3 * PERIOD_S)
    assert s06_fired["value"] == 0.25 and s06_fired["scope"] == "S06"
    assert "最后读数 0.30%" in t2_fired["message"]
    before_restart = len(transitions(listener))

    second = Service(deployment)
    assert second.start(wait_subscribed_s=10)
    try:
        # The restart and several clock ticks with S01 alive: nothing ends, nothing re-fires.
        time.sleep(1.5 * 3 * PERIOD_S)  # long enough for the clock to end or re-fire them
        assert transitions(listener)[before_restart:] == []
        assert {t2_fired["id"], s06_fired["id"], t1_fired["id"]} <= {
            a.id for a in second.pipeline.dispatcher.episodes.open()}

        # S06 back-fills: its buffered readings, all stamped before its episode started, cut
        # between the sensors of its polls — CO-ZH and FS-ZH first, CH4-ZH's more than a clock
        # tick later: S06 is back at the first, and CH4-ZH is not silent on its own meanwhile.
        start = s06_fired["started_at"]
        resent_at = int(time.time() * 1000)
        send(mosquitto, [(S06, encode_telemetry(start - 2_000 + 500 * k,
                                                [("CO-ZH", 1.0, "ok"), ("FS-ZH", 1.5, "ok")]))
                         for k in range(3)])
        time.sleep(2 * TICK_S)  # spaces the two parts of the resend; asserts nothing
        send(mosquitto, [(S06, encode_telemetry(start - 2_000 + 500 * k,
                                                [("CH4-ZH", 0.26 + 0.01 * k, "ok")]))
                         for k in range(3)])
        # T2 comes back with a calibrating reading (标校) stamped before its episode started.
        send(mosquitto, [(S01, encode_telemetry(t2_fired["started_at"] - 1_000,
                                                [("T2-1101", 2.0, "calibrating")]))])
        # T1 falls below its release limit.
        feeder.set({**NORMAL, "T1-1101": 0.50})
        assert wait_until(lambda: find(listener, "CH4-ZH", "substation_silent", "resolved")
                          and find(listener, "T2-1101", "silent", "resolved")
                          and find(listener, "T1-1101", "alarm_high", "resolved"), 20)

        # Now, live, CO-1101 falls silent and is back-filled across its episode's start.
        feeder.set({k: v for k, v in {**NORMAL, "T1-1101": 0.50}.items() if k != "CO-1101"})
        assert wait_until(lambda: find(listener, "CO-1101", "silent", "firing"), 20)
        [co_fired] = find(listener, "CO-1101", "silent", "firing")
        co_start = co_fired["started_at"]
        # The substation resends its buffer in one message (readings with their own ts).
        buffered = [{"sensor": "CO-1101", "value": value, "ts": co_start + offset}
                    for offset, value in ((-500, 3.2), (-1_500, 3.1), (700, 3.3),
                                          (1_700, 3.4))]
        time.sleep(OUTAGE_S)  # the outage goes on a while after it was noticed; asserts nothing
        co_resent_at = int(time.time() * 1000)
        send(mosquitto, [(S01, json.dumps({"ts": co_start + 1_700,
                                           "readings": buffered}).encode())])
        assert wait_until(lambda: find(listener, "CO-1101", "silent", "resolved"), 20)
    finally:
        second.stop()
        listener.close()

    [s06_back] = find(listener, "CH4-ZH", "substation_silent", "resolved")
    [t2_back] = find(listener, "T2-1101", "silent", "resolved")
    [t1_back] = find(listener, "T1-1101", "alarm_high", "resolved")
    [co_back] = find(listener, "CO-1101", "silent", "resolved")
    # Same episodes: the resolves carry the ids and starts of the firings from before.
    for fired, back in ((s06_fired, s06_back), (t2_fired, t2_back), (t1_fired, t1_back),
                        (co_fired, co_back)):
        assert (back["id"], back["started_at"]) == (fired["id"], fired["started_at"])
        assert back["ts"] == back["ended_at"] >= back["started_at"]
    # Back-filled before the start: ended when the resend reached jinmei, not at its stamps;
    # the value is CH4-ZH's own last reading before the silence, never a sibling's or seconds.
    assert s06_back["ended_at"] >= resent_at > s06_fired["started_at"]
    assert s06_back["value"] == s06_fired["value"] == 0.25
    # T2 ended by calibration gas, which is no reading of the air: its last measured reading,
    # 0.30 %, carried over the restart — what it shows without a restart — never the gas.
    assert t2_back["ended_at"] >= resent_at and t2_back["value"] == 0.30
    assert "恢复上报，读数 0.30%" in t2_back["message"]
    assert t1_back["value"] == 0.50 and t1_back["ended_at"] > t1_fired["started_at"]
    # Back-filled across the start: closed when it arrived, showing its oldest reading.
    assert co_back["ended_at"] >= co_resent_at and co_back["value"] == 3.1
    for fired, back in ((s06_fired, s06_back), (t2_fired, t2_back), (co_fired, co_back)):
        lasted = (back["ended_at"] - fired["started_at"]) / 1000
        assert f"持续 {lasted:.0f} s" in back["message"]
    # Nothing fired twice: one firing per episode, no new ids for the restored ones; no S06
    # sensor was silent on its own while the rest of its resend was on its way.
    episodes = [(a["sensor"], a["condition"]) for a in transitions(listener)
                if a["state"] == "firing"]
    assert not {("CH4-ZH", "silent"), ("CO-ZH", "silent"), ("FS-ZH", "silent")} & set(episodes)
    for key in (("T2-1101", "silent"), ("CH4-ZH", "substation_silent"),
                ("T1-1101", "alarm_high"), ("CO-1101", "silent")):
        assert episodes.count(key) == 1, key

    # The record agrees: no negative duration anywhere, no no-data or limit episode left open
    # (the trend detector's face/return mismatch is not this test's business).
    record = AlertRecord(tmp_path / "state" / "alerts.db")
    try:
        history = record.history(mine="qipanjing")
        assert [a for a in record.open_episodes() if a.rule in ("no_data", "limit_alarm")] == []
    finally:
        record.close()
    assert all(a.ended_at is not None and a.ended_at >= a.started_at and a.ts == a.ended_at
               for a in history if a.state == "resolved")
    # ... and so does the daily report: the day's no-data and alarm time is never negative.
    day = (min(a.started_at for a in history) - 60_000, max(a.ts for a in history) + 60_000)
    report = {r.sensor: r for r in daily(deployment.mines[0], day, [], history)}
    assert (report["T2-1101"].no_data_count, report["T2-1101"].no_data_s) == (
        1, pytest.approx((t2_back["ended_at"] - t2_fired["started_at"]) / 1000, abs=0.1))
    assert report["CO-1101"].no_data_count == 1 and OUTAGE_S <= report["CO-1101"].no_data_s < 60
    assert report["T1-1101"].alarm_count >= 1 and report["T1-1101"].alarm_s > 0
    assert all(min(r.alarm_s, r.power_off_s, r.fault_s, r.no_data_s) >= 0
               for r in report.values())
