"""Every scenario on the pilot mines: deterministic, physically sane, and its ground truth true.

The feed is decoded by the real telemetry codec (the service's own), so what these tests read
is what the service would admit; each ground-truth entry is then checked against those readings.
"""

from __future__ import annotations

from collections import Counter
from functools import cache
from typing import Any

import numpy as np
import pytest

from config.loader import load_deployment
from config.model import Mine, Registry
from config.readings import Status
from ingest.codec import TelemetryCodec
from simulators import model
from simulators.feed import Message, generate
from simulators.scenarios import SCENARIOS
from simulators.truth import ground_truth

START_MS = 1_795_614_330_000  # 2026-11-26 18:25 in Shanghai: a cutting shift
PLAYS = [(m, s) for m in ("dayan", "qipanjing") for s in SCENARIOS
         if (m, s) != ("qipanjing", "spontaneous-combustion")]


@cache
def _mines() -> dict[str, Mine]:
    return {m.id: m for m in load_deployment(None).mines}


@cache
def _play(mine_id: str, scenario: str, seed: int = 2) -> tuple[list[Message], dict[str, Any]]:
    mine = _mines()[mine_id]
    kwargs: dict[str, Any] = {"start_ms": START_MS, "seed": seed}
    return list(generate(mine, scenario, **kwargs)), ground_truth(mine, scenario, **kwargs)


class _Readings:
    """The admitted readings of a feed, per sensor id, and the codec's rejects by reason."""

    def __init__(self, mine: Mine, messages: list[Message]) -> None:
        registry = Registry.build([mine])
        codec = TelemetryCodec(registry, max_future_ms=10**12)
        decoded = codec.decode_many([(m.topic, m.payload) for m in messages], START_MS)
        self.rejects = Counter(str(r.reason) for r in decoded.rejects)
        b = decoded.batch
        self.series = {s.id: (b.ts[b.sensor == i], b.value[b.sensor == i],
                              b.status[b.sensor == i]) for i, s in enumerate(mine.sensors)}
        self.sensors = {s.id: s for s in mine.sensors}

    def at(self, sensor: str, ts: int) -> tuple[float, int]:
        times, values, status = self.series[sensor]
        k = int(np.flatnonzero(times == ts)[0])
        return float(values[k]), int(status[k])


def test_every_scenario_plays_on_the_pilots_that_have_its_sensors() -> None:
    assert set(SCENARIOS) >= {"normal", "methane-rise", "local-fan-stop", "gas-outburst",
                              "emission-increase", "spontaneous-combustion", "sensor-drift",
                              "sensor-stuck", "sensor-spikes", "over-range", "substation-silent",
                              "calibration", "malformed-payloads", "device-fault"}
    with pytest.raises(ValueError, match="goaf"):
        generate(_mines()["qipanjing"], "spontaneous-combustion", start_ms=START_MS)


@pytest.mark.parametrize("scenario", ["local-fan-stop", "sensor-drift", "malformed-payloads"])
def test_same_seed_same_bytes(scenario: str) -> None:
    mine = _mines()["dayan"]
    again = list(generate(mine, scenario, start_ms=START_MS, seed=2))
    assert again == _play("dayan", scenario)[0]
    other = list(generate(mine, scenario, start_ms=START_MS, seed=3))
    assert [m.payload for m in other] != [m.payload for m in again]


@pytest.mark.parametrize(("mine_id", "scenario"), PLAYS)
def test_ground_truth_is_consistent_with_the_feed(mine_id: str, scenario: str) -> None:
    messages, truth = _play(mine_id, scenario)
    mine = _mines()[mine_id]
    feed = _Readings(mine, messages)
    assert (truth["mine"], truth["scenario"], truth["start_ms"]) == (mine_id, scenario, START_MS)
    assert feed.rejects == Counter(truth["rejects"])
    registry = Registry.build([mine])
    for e in (e for e in truth["alerts"] if e["fires"]):
        assert e["from_ms"] <= e["by_ms"] and (e["to_ms"] is None or e["to_ms"] > e["from_ms"]), e
        rule, condition, sensor = e["rule"], e["condition"], feed.sensors[e["sensor"]]
        i = registry.index[sensor.key]
        times, values, status = feed.series[sensor.id]
        if rule.startswith("limit_"):
            value, bits = feed.at(sensor.id, e["from_ms"])
            limit = getattr(registry, condition)[i]
            past = value <= limit if condition == "alarm_low" else (
                value >= limit or bool(bits & Status.OVER_RANGE))
            assert past and not bits & Status.CALIBRATION, e
        elif condition in ("over_range", "under_range"):
            value, _ = feed.at(sensor.id, e["from_ms"])
            assert value > sensor.range_high if condition == "over_range" \
                else value < sensor.range_low, e
        elif condition == "stuck":
            assert len(set(values[times >= e["from_ms"]].tolist())) == 1, e
        elif condition == "spike":
            k = int(np.flatnonzero(times == e["from_ms"])[0])
            jump = abs(values[k] - values[k - 1])
            assert jump > 0.3 and abs(values[k + 1] - values[k - 1]) < jump / 4, e
        elif rule == "trend":
            assert values[times >= e["by_ms"]][0] > values[times >= e["from_ms"]][0] + 0.1, e
        elif rule == "no_data":
            gap = times[(times > e["from_ms"] - 2 * sensor.period_s * 1000)
                        & (times < (e["to_ms"] or truth["end_ms"]))]
            assert not len(gap), e
        elif rule == "feed_fault":
            live = values[(times >= e["from_ms"]) & (times < (e["to_ms"] or truth["end_ms"]))]
            assert len(live) and (live == 1).all(), e
    silent = [e for e in truth["alerts"] if not e["fires"] and e["sensor"] != "*"]
    for e in silent:  # a limit that must stay silent is never crossed by an admitted reading
        sensor = feed.sensors[e["sensor"]]
        limit = getattr(registry, e["condition"])[registry.index[sensor.key]]
        _, values, status = feed.series[sensor.id]
        counted = values[(status & Status.CALIBRATION) == 0]
        crossed = counted <= limit if e["condition"] == "alarm_low" else counted >= limit
        assert not crossed.any(), e


def _fires(truth: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["rule"], e["condition"]) for e in truth["alerts"] if e["fires"]}


@pytest.mark.parametrize("mine_id", ["dayan", "qipanjing"])
def test_each_scenario_tells_its_story_in_the_ground_truth(mine_id: str) -> None:
    def fires(scenario: str) -> set[tuple[str, str]]:
        return _fires(_play(mine_id, scenario)[1])

    for quiet in ("normal", "calibration", "malformed-payloads"):
        assert fires(quiet) == set(), quiet
    assert ("limit_power_off", "power_off") in fires("methane-rise")
    assert not any(rule == "feed_fault" for rule, _ in fires("methane-rise"))
    assert {("feed_fault", "live_after_power_off"), ("limit_alarm", "alarm_low"),
            ("limit_power_off", "power_off")} <= fires("local-fan-stop")
    assert ("limit_power_off", "power_off") in fires("gas-outburst")
    assert ("trend", "rise") in fires("emission-increase")
    assert ("sensor_fault", "under_range") in fires("sensor-drift")
    assert fires("sensor-stuck") == {("sensor_fault", "stuck")}
    assert ("sensor_fault", "spike") in fires("sensor-spikes")
    assert ("sensor_fault", "over_range") in fires("over-range")
    assert fires("substation-silent") == {("no_data", "silent")}
    assert fires("device-fault") == {("sensor_fault", "device_fault")}
    assert sum(_play(mine_id, "malformed-payloads")[1]["rejects"].values()) == 24
    if mine_id == "dayan":
        assert {("trend", "rise"), ("limit_alarm", "alarm_high")} <= fires(
            "spontaneous-combustion")


def test_calibration_crosses_the_limits_marked_calibrating_and_keeps_the_power_on() -> None:
    messages, _ = _play("dayan", "calibration")
    feed = _Readings(_mines()["dayan"], messages)
    _, t1, status = feed.series["T1-1201"]
    assert t1.max() >= 1.5
    assert (status[t1 >= 1.0] & Status.CALIBRATION).all()
    assert (feed.series["KD-1201"][1] == 1).all()


def test_methane_rise_cuts_the_feed_until_methane_is_restored() -> None:
    messages, truth = _play("dayan", "methane-rise")
    feed = _Readings(_mines()["dayan"], messages)
    cut = next(e for e in truth["alerts"] if e["condition"] == "power_off" and e["fires"])
    times, kd, _ = feed.series["KD-1201"]
    during = (times >= cut["from_ms"]) & (times < cut["to_ms"])
    assert (kd[during] == 0).all() and (kd[~during] == 1).all()


def test_a_device_fault_of_a_power_off_guard_cuts_the_feed_while_it_lasts() -> None:
    messages, truth = _play("qipanjing", "device-fault")
    feed = _Readings(_mines()["qipanjing"], messages)
    fault = next(e for e in truth["alerts"] if e["condition"] == "device_fault")
    times, t1, status = feed.series["T1-1101"]
    during = (times >= fault["from_ms"]) & (times < fault["to_ms"])
    assert during.any() and (~during).any()
    assert ((status & Status.SENSOR_FAULT) != 0).tolist() == during.tolist()
    assert (t1[during] == 0).all()
    kd_times, kd, _ = feed.series["KD-1101"]
    kd_during = (kd_times >= fault["from_ms"]) & (kd_times < fault["to_ms"])
    assert (kd[kd_during] == 0).all() and (kd[~kd_during] == 1).all()  # 故障闭锁, then back


def test_switches_change_only_on_events() -> None:
    mine = _mines()["qipanjing"]
    normal = _Readings(mine, _play("qipanjing", "normal")[0])
    stop = _Readings(mine, _play("qipanjing", "local-fan-stop")[0])
    for sensor in (s for s in mine.sensors if s.is_switch):
        assert len(set(normal.series[sensor.id][1].tolist())) == 1, sensor.id
    fan = stop.series["JF-1105"][1]
    assert set(fan.tolist()) == {0.0, 1.0} and np.count_nonzero(np.diff(fan)) == 2


@pytest.mark.parametrize(("mine_id", "scenario"), [p for p in PLAYS if p[1] not in (
    "over-range", "sensor-drift", "sensor-spikes", "malformed-payloads")])
def test_values_stay_within_the_measuring_range(mine_id: str, scenario: str) -> None:
    mine = _mines()[mine_id]
    feed = _Readings(mine, _play(mine_id, scenario)[0])
    for sensor in mine.sensors:
        values = feed.series[sensor.id][1]
        assert (values >= sensor.range_low).all() and (values <= sensor.range_high).all()


def test_t2_lags_t1_by_the_air_s_travel_time() -> None:
    mine = _mines()["qipanjing"]
    feed = _Readings(mine, list(generate(mine, "normal", start_ms=START_MS, duration_s=7200,
                                         seed=4)))
    t1, t2 = feed.series["T1-1101"][1], feed.series["T2-1101"][1]
    t1, t2 = t1 - t1.mean(), t2 - t2.mean()
    lags = [float(np.dot(t1[: len(t1) - k], t2[k:])) / (len(t1) - k) for k in range(12)]
    assert 2 <= int(np.argmax(lags)) <= 6  # 60 m at about 2 m/s: three 10-s readings
    assert np.corrcoef(t1, t2)[0, 1] > 0.5  # the same air: they move together


def test_maintenance_shift_gives_off_less_gas_than_cutting() -> None:
    local = np.array([3, 12, 20]) * 3_600_000  # 03:00 and 20:00 cutting, 12:00 maintenance
    np.testing.assert_allclose(model.production(local), [1.0, model.MAINTENANCE, 1.0])
    mine = _mines()["qipanjing"]
    shanghai_noon = START_MS - 6 * 3_600_000 - 25 * 60_000  # 12:00 in Shanghai, same day
    means = []
    for start in (START_MS, shanghai_noon):
        feed = _Readings(mine, list(generate(mine, "normal", start_ms=start, duration_s=1800,
                                             seed=4)))
        means.append(feed.series["T1-1101"][1].mean())
    assert means[1] < 0.8 * means[0]


def test_wind_and_gas_move_apart_when_the_ventilation_changes() -> None:
    feed = _Readings(_mines()["dayan"], _play("dayan", "local-fan-stop")[0])
    wind_ts, wind, _ = feed.series["FS-1203"]
    gas_ts, gas, _ = feed.series["T1-1203"]
    both, w, g = np.intersect1d(wind_ts, gas_ts, return_indices=True)
    assert len(both) > 10 and np.corrcoef(wind[w], gas[g])[0, 1] < -0.5
