"""The simulator: a deterministic, realistic feed; its ground truth; publishing it for real.

The feed is checked against the registry's own limit arrays (the ``normal`` scenario must never
cross one), against each sensor's period and resolution, and against the shape the
``methane-rise`` scenario promises. ``publish`` is exercised through a real Mosquitto.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.errors import ConfigError, DeliveryError
from config.model import Limits, Mine, Registry, Sensor, Substation
from config.readings import ReadingBatch
from detectors.limits import LimitDetector
from simulators.feed import Message, generate
from simulators.publisher import publish
from simulators.truth import _episodes, ground_truth
from tests.servers import Mosquitto, free_port

START_MS = 1_795_614_330_000
CH4_FACE = Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)
CH4_RETURN = Limits(alarm_high=1.0, release_high=1.0, power_off=1.0, restore=1.0)
# Resolution of each kind, stated here independently of the model (the task's figures).
RESOLUTION = {"ch4": 0.01, "co": 1.0, "o2": 0.1, "co2": 0.01, "temperature": 0.1,
              "wind_speed": 0.01, "local_fan": 1.0, "feed": 1.0}


def _sensor(sensor_id: str, kind: str, location: str, substation: str, limits: Limits, *,
            period_s: float = 1.0, area: str = "1101",
            span: tuple[float, float] = (0.0, 4.0)) -> Sensor:
    return Sensor("dayan", sensor_id, kind, "", location, f"{sensor_id} place", area,
                  substation, period_s, span[0], span[1], limits)


def _mine(*extra: Sensor) -> Mine:
    """A small longwall district: T0/T1/T2/T3 of face 1101, a second face, gases, switches."""
    sensors = (
        _sensor("T0-1101", "ch4", "longwall_upper_corner", "S01", CH4_FACE),
        _sensor("T1-1101", "ch4", "longwall_face", "S01", CH4_FACE),
        _sensor("T2-1101", "ch4", "longwall_return", "S01", CH4_RETURN),
        _sensor("T3-1101", "ch4", "longwall_intake", "S01",
                Limits(alarm_high=0.5, power_off=0.5, restore=0.5)),
        _sensor("T1-1102", "ch4", "longwall_face", "S02", CH4_FACE, area="1102"),
        _sensor("CH4-ZH", "ch4", "main_return", "S02", Limits(alarm_high=0.75)),
        _sensor("CO-1101", "co", "goaf", "S02", Limits(alarm_high=24.0), period_s=2.0,
                span=(0.0, 500.0)),
        _sensor("O2-1101", "o2", "face_intake", "S02", Limits(alarm_low=20.0, inclusive=False),
                period_s=2.0, span=(0.0, 25.0)),
        _sensor("CO2-1101", "co2", "face_intake", "S02", Limits(alarm_high=0.5, inclusive=False),
                period_s=5.0, span=(0.0, 5.0)),
        _sensor("WD-1101", "temperature", "longwall_face", "S01",
                Limits(warning_high=26.0, alarm_high=30.0, inclusive=False), period_s=5.0,
                span=(0.0, 40.0)),
        _sensor("FS-1101", "wind_speed", "longwall_face", "S01",
                Limits(alarm_low=0.25, alarm_high=4.0, inclusive=False), period_s=3.0,
                span=(0.0, 15.0)),
        _sensor("FJ-1101", "local_fan", "heading_fan", "S02", Limits(), period_s=1.5,
                span=(0.0, 1.0)),
        _sensor("KD-1101", "feed", "switchgear", "S02", Limits(), period_s=30.0,
                span=(0.0, 1.0)),
    )
    return Mine("dayan", "大雁", "Dayan", "Asia/Shanghai",
                (Substation("S01", "1101 分站"), Substation("S02", "1102 分站")),
                sensors + extra)


class _Readings(msgspec.Struct):
    sensor: str
    value: float


class _Payload(msgspec.Struct):
    ts: int
    readings: list[_Readings]


def truth(mine: Mine, scenario: str, **kwargs: Any) -> list[dict[str, Any]]:
    return list(ground_truth(mine, scenario, **kwargs)["alerts"])


def _columns(mine: Mine, messages: list[Message]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(registry index, ts, value) of every reading in the messages, in feed order."""
    registry = Registry.build([mine])
    sensor, ts, value = [], [], []
    for message in messages:
        payload = msgspec.json.decode(message.payload, type=_Payload)
        for reading in payload.readings:
            sensor.append(registry.index[f"{mine.id}/{reading.sensor}"])
            ts.append(payload.ts)
            value.append(reading.value)
    return np.array(sensor), np.array(ts, dtype=np.int64), np.array(value)


def _series(mine: Mine, messages: list[Message], sensor_id: str) -> tuple[np.ndarray, np.ndarray]:
    sensor, ts, value = _columns(mine, messages)
    mine_index = [s.id for s in mine.sensors].index(sensor_id)
    return ts[sensor == mine_index], value[sensor == mine_index]


# ── The feed ──────────────────────────────────────────────────────────────────────────────────
def test_same_seed_gives_byte_identical_messages_and_another_seed_does_not() -> None:
    def feed(seed: int) -> list[Message]:
        return list(generate(_mine(), "methane-rise", start_ms=START_MS, duration_s=120,
                             seed=seed))

    first = feed(7)
    assert first == feed(7)
    assert [m.payload for m in first] != [m.payload for m in feed(8)]


def test_every_sensor_reports_at_its_own_period() -> None:
    mine = _mine()
    duration_s = 95.0
    messages = list(generate(mine, "normal", start_ms=START_MS, duration_s=duration_s))
    sensor, ts, _ = _columns(mine, messages)
    for i, s in enumerate(mine.sensors):
        times = ts[sensor == i]
        assert len(times) == math.ceil(duration_s / s.period_s), s.id
        assert times[0] == START_MS
        assert set(np.diff(times).tolist()) == {round(s.period_s * 1000)}, s.id


def test_one_message_per_substation_per_tick_in_time_order() -> None:
    mine = _mine()
    messages = list(generate(mine, "normal", start_ms=START_MS, duration_s=60))
    substation = {s.id: s.substation for s in mine.sensors}
    at = [m.at_ms for m in messages]
    assert at == sorted(at)
    assert max(Counter((m.at_ms, m.topic) for m in messages).values()) == 1
    for message in messages:
        payload = msgspec.json.decode(message.payload, type=_Payload)
        assert payload.ts == message.at_ms
        assert message.readings == len(payload.readings) > 0
        assert {f"jinmei/dayan/telemetry/{substation[r.sensor]}"
                for r in payload.readings} == {message.topic}


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_normal_never_crosses_a_limit_of_its_sensor(seed: int) -> None:
    # A mine may set limits stricter than the statute: the baseline must move inside them.
    mine = _mine(_sensor("T1-1201", "ch4", "heading_face", "S02", area="1201",
                         limits=Limits(alarm_high=0.25, power_off=0.3, restore=0.25)),
                 _sensor("FS-1201", "wind_speed", "heading_coal", "S02", area="1201",
                         limits=Limits(alarm_low=2.2, alarm_high=4.0, inclusive=False),
                         span=(0.0, 15.0)))
    registry = Registry.build([mine])
    messages = list(generate(mine, "normal", start_ms=START_MS, duration_s=3600, seed=seed))
    sensor, _, value = _columns(mine, messages)
    upper = np.fmin(np.fmin(registry.warning_high, registry.alarm_high), registry.power_off)
    assert not (value >= upper[sensor]).any()  # NaN (no limit) compares false
    assert not (value <= registry.alarm_low[sensor]).any()


@pytest.mark.parametrize("scenario", ["normal", "methane-rise", "calibration", "sensor-spikes"])
def test_values_are_quantised_and_within_range(scenario: str) -> None:
    mine = _mine()
    registry = Registry.build([mine])
    messages = list(generate(mine, scenario, start_ms=START_MS, duration_s=600, seed=3))
    sensor, _, value = _columns(mine, messages)
    resolution = np.array([RESOLUTION[s.kind] for s in mine.sensors])[sensor]
    steps = value / resolution
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
    assert (value >= registry.range_low[sensor]).all()
    assert (value <= registry.range_high[sensor]).all()
    assert len(np.unique(value[sensor == 1])) > 5  # T1 is a live signal, not a constant


def test_noise_is_autocorrelated_like_a_real_sensor() -> None:
    mine = _mine()
    messages = list(generate(mine, "normal", start_ms=START_MS, duration_s=3600, seed=1))
    _, o2 = _series(mine, messages, "CO2-1101")
    _, ch4 = _series(mine, messages, "T1-1101")
    for series in (ch4, o2):
        centred = series - series.mean()
        lag1 = (centred[1:] * centred[:-1]).sum() / (centred**2).sum()
        assert lag1 > 0.6  # white noise would give ~0: a sign of a fabricated feed (domain §4)


def test_methane_rise_crosses_power_off_and_comes_back_with_the_plume_following() -> None:
    mine = _mine()
    duration_s = 600
    messages = list(generate(mine, "methane-rise", start_ms=START_MS, duration_s=duration_s))
    t1_ts, t1 = _series(mine, messages, "T1-1101")
    t0_ts, t0 = _series(mine, messages, "T0-1101")
    t2_ts, t2 = _series(mine, messages, "T2-1101")
    assert 1.7 <= t1.max() <= 1.9
    peak_ms = t1_ts[t1 >= 1.5]
    assert START_MS + 0.40 * duration_s * 1000 <= peak_ms.min()
    assert peak_ms.max() <= START_MS + 0.60 * duration_s * 1000
    assert (t1[t1_ts >= START_MS + 0.80 * duration_s * 1000] < 0.5).all()  # back at baseline
    assert (t1[t1_ts < START_MS + 0.25 * duration_s * 1000] < 0.5).all()
    assert 1.2 <= t0.max() <= 1.4
    assert 0.8 <= t2.max() < 1.0
    halfway = t1_ts[np.argmax(t1 >= 1.0)], t0_ts[np.argmax(t0 >= 0.8)], t2_ts[np.argmax(t2 >= 0.6)]
    assert halfway[0] < halfway[1] < halfway[2]  # T0 then T2 lag behind T1
    for quiet in ("T3-1101", "T1-1102", "CH4-ZH"):  # other areas and the intake stay put
        assert _series(mine, messages, quiet)[1].max() < 0.5


def test_methane_rise_truth_is_the_feed_s_own_crossings() -> None:
    mine = _mine()
    kwargs: dict[str, Any] = {"start_ms": START_MS, "duration_s": 300, "seed": 5}
    expected = truth(mine, "methane-rise", **kwargs)
    ts, t1 = _series(mine, list(generate(mine, "methane-rise", **kwargs)), "T1-1101")
    cleared = ts[(ts > ts[np.argmax(t1 >= 1.5)]) & (t1 < 1.0)][0]
    firing = {(e["sensor"], e["condition"]): e for e in expected if e["fires"]}
    assert set(firing) == {("T1-1101", "alarm_high"), ("T1-1101", "power_off"),
                           ("T0-1101", "alarm_high")}
    alarm, power_off = firing["T1-1101", "alarm_high"], firing["T1-1101", "power_off"]
    assert (alarm["rule"], alarm["from_ms"], alarm["to_ms"]) == (
        "limit_alarm", ts[np.argmax(t1 >= 1.0)], cleared)
    assert (power_off["rule"], power_off["from_ms"], power_off["to_ms"]) == (
        "limit_power_off", ts[np.argmax(t1 >= 1.5)], cleared)
    silent = {(e["sensor"], e["condition"]) for e in expected if not e["fires"]}
    assert {("T2-1101", "alarm_high"), ("T2-1101", "power_off"), ("T0-1101", "power_off"),
            ("T1-1102", "alarm_high"), ("O2-1101", "alarm_low")} <= silent


@pytest.mark.parametrize("scenario", ["normal", "methane-rise", "sensor-spikes"])
def test_truth_agrees_with_the_limit_detector_on_the_feed(scenario: str) -> None:
    mine = _mine()
    kwargs: dict[str, Any] = {"start_ms": START_MS, "duration_s": 300, "seed": 11}
    sensor, ts, value = _columns(mine, list(generate(mine, scenario, **kwargs)))
    batch = ReadingBatch(sensor.astype(np.int32), ts, value, np.zeros(len(ts), np.uint16))
    detected: dict[tuple[str, str], list[int | None]] = defaultdict(list)
    for event in LimitDetector(Registry.build([mine])).update(batch, int(ts[-1])).events:
        episodes = detected[mine.sensors[event.sensor].id, event.condition]
        if event.firing:
            episodes += [event.ts, None]
        else:
            episodes[-1] = event.ts
    expected: dict[tuple[str, str], list[int | None]] = defaultdict(list)
    for e in truth(mine, scenario, **kwargs):
        if e["fires"] and e["rule"].startswith("limit_"):
            expected[e["sensor"], e["condition"]] += [e["from_ms"], e["to_ms"]]
    assert detected == expected


def test_normal_truth_expects_every_limited_sensor_to_stay_silent() -> None:
    mine = _mine()
    expected = [e for e in truth(mine, "normal", start_ms=START_MS, duration_s=600)
                if e["sensor"] != "*"]
    assert not any(e["fires"] for e in expected)
    limited = {s.id for s in mine.sensors if s.limits.alarm_high or s.limits.alarm_low}
    assert {e["sensor"] for e in expected} == limited
    assert {(e["from_ms"], e["to_ms"]) for e in expected} == {(START_MS, START_MS + 600_000)}


def _reference_episodes(values: list[float], on: float, off: float) -> list[tuple[int, int | None]]:
    """Hysteresis the slow, obvious way: fire at >= on, clear below off."""
    episodes: list[tuple[int, int | None]] = []
    firing = False
    for i, v in enumerate(values):
        if not firing and v >= on:
            firing = True
            episodes.append((i, None))
        elif firing and v < off:
            firing = False
            episodes[-1] = (episodes[-1][0], i)
    return episodes


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.5, 0.9, 1.0, 1.2, 1.5, 1.7]), max_size=30),
                min_size=1, max_size=3))
def test_episodes_match_a_plain_hysteresis_loop(series: list[list[float]]) -> None:
    mine = _mine()
    chosen = [1, 2, 0][: len(series)]  # T1 (1.0 / 1.5 restore 1.0), T2, T0
    registry = Registry.build([mine])
    sensor = np.concatenate([np.full(len(v), i) for i, v in zip(chosen, series, strict=True)])
    ts = np.concatenate([np.arange(len(v)) for v in series]).astype(np.int64)
    value = np.concatenate([np.array(v, dtype=float) for v in series])
    found = defaultdict(list)
    for e in _episodes(mine, registry, sensor, ts, value, (0, 99)):
        if e["fires"]:
            found[e["sensor"], e["condition"]].append((e["from_ms"], e["to_ms"]))
    for i, values in zip(chosen, series, strict=True):
        limits = mine.sensors[i].limits
        for condition, on in (("alarm_high", limits.alarm_high), ("power_off", limits.power_off)):
            assert on is not None
            expected = _reference_episodes(values, on, limits.restore or on)
            assert sorted(found[mine.sensors[i].id, condition]) == expected


def test_unknown_scenario_is_refused_at_once_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match="normal, methane-rise"):
        generate(_mine(), "methane-fall", start_ms=START_MS, duration_s=10)


def test_scenario_needing_a_sensor_the_mine_lacks_is_refused() -> None:
    mine = _mine()
    no_face = Mine(mine.id, mine.name, mine.name_en, mine.timezone, mine.substations,
                   tuple(s for s in mine.sensors if s.location != "longwall_face"))
    with pytest.raises(ValueError, match="longwall_face"):
        generate(no_face, "methane-rise", start_ms=START_MS, duration_s=10)


def test_a_kind_without_a_model_is_refused_not_invented() -> None:
    dust = _sensor("DUST-1", "dust", "longwall_face", "S01", Limits())
    with pytest.raises(ValueError, match="'dust'"):
        generate(_mine(dust), "normal", start_ms=START_MS, duration_s=10)


# ── Publishing through a real Mosquitto ───────────────────────────────────────────────────────
class _Subscriber:
    """A QoS 1 subscriber to everything under jinmei/, recording (topic, payload) in order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sub",
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.on_message = lambda _c, _u, m: self.received.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("jinmei/#", qos=1)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything beyond `count` would show up now

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
def test_publish_delivers_a_whole_feed_in_order(mosquitto: Mosquitto) -> None:
    feed = list(generate(_mine(), "methane-rise", start_ms=START_MS, duration_s=30))
    subscriber = _Subscriber(mosquitto)
    try:
        summary = publish(iter(feed), mosquitto.url, speed=None, window=50)
        subscriber.wait_for(len(feed))
    finally:
        subscriber.close()
    assert subscriber.received == [(m.topic, m.payload) for m in feed]
    assert (summary.messages, summary.readings) == (len(feed), sum(m.readings for m in feed))


@pytest.mark.integration
def test_publish_paces_the_feed_and_stops_when_asked(mosquitto: Mosquitto) -> None:
    feed = list(generate(_mine(), "normal", start_ms=START_MS, duration_s=60))
    stop = threading.Event()
    seen: list[Message] = []

    def count(message: Message) -> None:
        seen.append(message)
        if message.at_ms >= START_MS + 10_000:
            stop.set()

    subscriber = _Subscriber(mosquitto)
    try:
        summary = publish(feed, mosquitto.url, speed=50, on_message=count, stop=stop)
        subscriber.wait_for(len(seen))
    finally:
        subscriber.close()
    assert summary.messages == len(seen) < len(feed)
    assert summary.seconds >= 10 / 50  # ten feed seconds at 50x take at least 0.2 s
    assert subscriber.received == [(m.topic, m.payload) for m in seen]


def test_publish_to_a_closed_port_is_a_retryable_delivery_error() -> None:
    feed = generate(_mine(), "normal", start_ms=START_MS, duration_s=5)
    with pytest.raises(DeliveryError) as raised:
        publish(feed, f"mqtt://127.0.0.1:{free_port()}", speed=None)
    assert raised.value.retryable


@pytest.mark.parametrize("url", ["http://127.0.0.1:1883", "mqtt://:1883", "mqtt://host:port"])
def test_publish_refuses_a_malformed_broker_url(url: str) -> None:
    with pytest.raises(ConfigError, match=r"broker\.url"):
        publish([], url, speed=None)


def test_publish_refuses_a_password_in_the_url_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="JINMEI_MQTT_PASSWORD") as raised:
        publish([], "mqtt://gw:hunter2@127.0.0.1:1883", speed=None)
    assert "hunter2" not in str(raised.value)
