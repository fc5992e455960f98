"""EpisodeBook and alert messages: events → firing / resolved alert transitions."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.episodes import EpisodeBook, Names, episode_id
from alerts.wire import Alert
from config.model import Limits, Mine, Registry, Sensor
from detectors.base import Event

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 2026-11-25 22:15:03 in the mine's local time (CST, UTC+8).
TS = int(datetime(2026, 11, 25, 22, 15, 3, tzinfo=SHANGHAI).timestamp() * 1000)
SOURCE = "AQ 1029-2019 甲烷传感器设置表; 煤矿安全规程 第498条 — 采煤工作面 T1"

T1 = Sensor("qipanjing", "T1-1101", "ch4", "%", "longwall_face", "1101综采工作面", "1101", "S1",
            10.0, 0.0, 4.0, Limits(alarm_high=1.0, release_high=1.0, power_off=1.5,
                                   restore=1.0, source=SOURCE))
WIND = Sensor("qipanjing", "F-1102", "wind_speed", "m/s", "longwall_face", "", "1101", "S1",
              10.0, 0.0, 15.0, Limits(alarm_low=0.25, alarm_high=4.0, inclusive=False))
ORPHAN = Sensor("wuda", "CO-1", "co", "ppm", "belt_roadway", "", "x", "S9", 10.0, 0.0, 500.0,
                Limits(alarm_high=24.0))
QIPANJING = Mine("qipanjing", "棋盘井煤矿", "Qipanjing", "Asia/Shanghai", (), (T1, WIND))
REGISTRY = Registry.from_sensors([T1, WIND, ORPHAN], (QIPANJING,))
NAMES = Names(kind={"ch4": ("甲烷", "methane"), "wind_speed": ("风速", "air velocity")},
              location={"longwall_face": ("采煤工作面", "longwall working face")})


def power_off(firing: bool, value: float, ts: int, limit: float = 1.5) -> Event:
    return Event(0, "limit_power_off", "power_off", "critical", firing, ts, value, limit)


def book() -> EpisodeBook:
    return EpisodeBook(REGISTRY, NAMES, config_hash="cafe")


def test_firing_then_resolved_share_id_and_start() -> None:
    episodes = book()
    [fired] = episodes.apply([power_off(True, 1.62, TS)])
    [resolved] = episodes.apply([power_off(False, 0.95, TS + 60_000, limit=1.0)])
    assert (fired.state, resolved.state) == ("firing", "resolved")
    assert fired.id == resolved.id == episode_id("qipanjing", "T1-1101", "limit_power_off",
                                                 "power_off", TS)
    assert len(fired.id) == 16 and int(fired.id, 16) >= 0
    assert (fired.started_at, fired.ts, fired.ended_at) == (TS, TS, None)
    assert (resolved.started_at, resolved.ts, resolved.ended_at) == (TS, TS + 60_000,
                                                                     TS + 60_000)
    assert (resolved.value, resolved.limit) == (0.95, 1.0)
    assert fired.source == SOURCE and fired.version == 1
    assert (fired.mine, fired.sensor, fired.kind, fired.rule, fired.severity, fired.unit,
            fired.location, fired.place, fired.condition) == (
        "qipanjing", "T1-1101", "ch4", "limit_power_off", "critical", "%", "longwall_face",
        "1101综采工作面", "power_off")
    assert episodes.open() == []


def test_ids_are_deterministic_and_differ_per_episode() -> None:
    events = [power_off(True, 1.6, TS), power_off(False, 0.5, TS + 1000),
              power_off(True, 1.7, TS + 2000)]
    first, second = book().apply(events), book().apply(events)
    assert [a.id for a in first] == [a.id for a in second]
    assert first[0].id == first[1].id != first[2].id
    assert episode_id("a", "bc", "r", "c", 1) != episode_id("ab", "c", "r", "c", 1)


def test_power_off_message_matches_the_contract_example() -> None:
    [fired] = book().apply([power_off(True, 1.62, TS)])
    assert fired.message == (
        "【断电】棋盘井煤矿 T1-1101 1101综采工作面 甲烷 1.62% ≥ 断电值 1.50%"
        "（2026-11-25 22:15:03）\n"
        "[POWER-OFF] Qipanjing T1-1101 longwall working face methane 1.62 % ≥ power-off limit"
        " 1.50 % (2026-11-25 22:15:03 CST)")


@pytest.mark.parametrize(("event", "zh", "en"), [
    (power_off(False, 0.95, TS, limit=1.0),
     "【复电】棋盘井煤矿 T1-1101 1101综采工作面 甲烷 0.95% < 复电值 1.00%",
     "[RESTORED] Qipanjing T1-1101 longwall working face methane 0.95 % < restore limit 1.00 %"),
    (Event(0, "limit_alarm", "alarm_high", "alarm", True, TS, 1.0, 1.0),
     "【报警】棋盘井煤矿 T1-1101 1101综采工作面 甲烷 1.00% ≥ 报警值 1.00%",
     "[ALARM] Qipanjing T1-1101 longwall working face methane 1.00 % ≥ alarm limit 1.00 %"),
    (Event(0, "limit_alarm", "alarm_high", "alarm", False, TS, 0.99, 1.0), "【解除】",
     "[RESOLVED] Qipanjing T1-1101 longwall working face methane 0.99 % < release limit 1.00 %"),
    # Strict limits: 0.25–4 m/s allows both ends, so the relation shown is > / < and ≤ / ≥.
    (Event(1, "limit_alarm", "alarm_high", "alarm", True, TS, 4.1, 4.0),
     "【报警】棋盘井煤矿 F-1102 采煤工作面 风速 4.10m/s > 报警值 4.00m/s",
     "air velocity 4.10 m/s > alarm limit 4.00 m/s"),
    (Event(1, "limit_alarm", "alarm_high", "alarm", False, TS, 4.0, 4.0),
     "风速 4.00m/s ≤ 解除值 4.00m/s", "4.00 m/s ≤ release limit 4.00 m/s"),
    (Event(1, "limit_alarm", "alarm_low", "alarm", True, TS, 0.2, 0.25),
     "风速 0.20m/s < 下限报警值 0.25m/s", "[LOW ALARM] Qipanjing F-1102"),
    (Event(1, "limit_alarm", "alarm_low", "alarm", False, TS, 0.25, 0.25),
     "风速 0.25m/s ≥ 下限解除值 0.25m/s", "0.25 m/s ≥ low release limit 0.25 m/s"),
])
def test_message_wording(event: Event, zh: str, en: str) -> None:
    [alert] = book().apply([event])
    zh_line, en_line = alert.message.split("\n")
    assert zh in zh_line and zh_line.endswith("（2026-11-25 22:15:03）" if event.firing
                                               else "（2026-11-25 22:15:03，开始时间未知）")
    assert en in en_line


def test_resolve_without_open_episode_is_kept_and_says_start_unknown() -> None:
    [alert] = book().apply([power_off(False, 0.8, TS, limit=1.0)])
    assert alert.state == "resolved"
    assert alert.id == episode_id("qipanjing", "T1-1101", "limit_power_off", "power_off", TS)
    assert (alert.started_at, alert.ended_at) == (TS, TS)
    assert "开始时间未知" in alert.message and "start unknown" in alert.message


def test_firing_again_while_open_is_one_episode() -> None:
    episodes = book()
    [fired] = episodes.apply([power_off(True, 1.6, TS)])
    assert episodes.apply([power_off(True, 1.9, TS + 5000)]) == []
    assert episodes.open() == [fired]
    [resolved] = episodes.apply([power_off(False, 0.5, TS + 9000, limit=1.0)])
    assert resolved.id == fired.id and resolved.started_at == TS


def test_conditions_of_one_sensor_are_separate_episodes() -> None:
    episodes = book()
    low, high = episodes.apply([
        Event(1, "limit_alarm", "alarm_low", "alarm", True, TS, 0.1, 0.25),
        Event(1, "limit_alarm", "alarm_high", "alarm", True, TS + 1, 4.5, 4.0)])
    assert low.id != high.id
    assert [a.condition for a in episodes.open()] == ["alarm_low", "alarm_high"]
    [resolved] = episodes.apply([Event(1, "limit_alarm", "alarm_low", "alarm", False, TS + 2,
                                       0.3, 0.25)])
    assert resolved.id == low.id
    assert episodes.open() == [high]


def test_restore_after_restart_no_refire_and_resolve_keeps_id() -> None:
    before = book()
    [fired] = before.apply([power_off(True, 1.6, TS)])
    after = book()
    after.restore(before.open())
    assert after.open() == [fired]
    assert after.apply([power_off(True, 1.6, TS + 1000)]) == []
    [resolved] = after.apply([power_off(False, 0.2, TS + 2000, limit=1.0)])
    assert (resolved.id, resolved.started_at) == (fired.id, TS)
    assert "start unknown" not in resolved.message


def test_restore_refuses_a_resolved_alert() -> None:
    episodes = book()
    [resolved] = episodes.apply([power_off(False, 0.2, TS, limit=1.0)])
    with pytest.raises(ValueError, match="only open episodes"):
        episodes.restore([resolved])


def test_unknown_mine_and_names_fall_back_to_keys() -> None:
    [alert] = book().apply([Event(2, "limit_alarm", "alarm_high", "alarm", True, TS, 30.0,
                                  24.0)])
    assert isinstance(alert, Alert)
    assert alert.message == (
        "【报警】wuda CO-1 belt_roadway co 30.0ppm ≥ 报警值 24.0ppm（2026-11-25 22:15:03）\n"
        "[ALARM] wuda CO-1 belt_roadway co 30.0 ppm ≥ alarm limit 24.0 ppm"
        " (2026-11-25 22:15:03 CST)")


def test_config_hash_is_kept_for_the_record() -> None:
    assert book().config_hash == "cafe"
