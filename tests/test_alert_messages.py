"""Every condition any detector can raise is worded for people, in Chinese and English."""

from __future__ import annotations

import msgspec
import pytest

from alerts.messages import _DESCRIBED, _WORDING, Names, render
from alerts.wire import Alert
from config.loader import load_deployment
from detectors.suite import build_detectors

CONDITIONS = build_detectors(load_deployment(None).registry).conditions
SILENT = Alert(id="x", mine="qipanjing", sensor="T1-1105", kind="ch4", rule="no_data",
               severity="critical", state="firing", value=45.2, limit=30.0, started_at=0,
               ts=1_795_617_858_387, message="", condition="substation_silent", unit="%",
               location="heading_face", place="1105煤巷掘进工作面", scope="S03")


def text(alert: Alert) -> str:
    return render(alert, mine_name=("棋盘井煤矿", "Qipanjing"), timezone="Asia/Shanghai",
                  names=Names(kind={"ch4": ("甲烷", "methane")}))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_every_detector_condition_has_its_own_wording(condition: str) -> None:
    assert condition in _WORDING or condition in _DESCRIBED


@pytest.mark.parametrize("condition", sorted(_DESCRIBED))
@pytest.mark.parametrize("state", ["firing", "resolved"])
def test_non_limit_conditions_never_read_as_a_limit_crossing(condition: str, state: str) -> None:
    zh, en = text(msgspec.structs.replace(SILENT, condition=condition, state=state)).split("\n")
    assert "限值" not in zh and " limit " not in en.replace("alarm limit", "")
    assert "2026-11-25 22:44:18" in zh and "CST" in en


def test_substation_silence_names_the_substation_and_the_seconds() -> None:
    zh, en = text(SILENT).split("\n")
    assert zh.startswith("【分站中断】棋盘井煤矿 T1-1105")
    assert "分站 S03" in zh and "超过 30 s" in zh
    assert "substation S03 silent for more than 30 s" in en
    assert "45" not in zh + en  # the value is a reading of the sensor, not seconds


@pytest.mark.parametrize(("value", "zh", "en"), [
    (0.31, "最后读数 0.31%", "last reading 0.31 %"),
    (float("nan"), "无数据，无读数", "more than 30 s; no reading"),
])
def test_a_silent_sensor_shows_its_last_reading_or_says_there_is_none(
        value: float, zh: str, en: str) -> None:
    firing = msgspec.structs.replace(SILENT, condition="silent", value=value)
    zh_line, en_line = text(firing).split("\n")
    assert zh in zh_line and "超过 30 s 无数据" in zh_line
    assert en in en_line and "nan" not in en_line.lower().replace("no reading", "")


def test_a_resolved_silence_says_the_reading_and_how_long_the_alert_lasted() -> None:
    resolved = msgspec.structs.replace(SILENT, condition="silent", state="resolved", value=0.42,
                                       started_at=SILENT.ts - 95_000, ended_at=SILENT.ts)
    zh, en = text(resolved).split("\n")
    assert zh.startswith("【通讯恢复】") and "读数 0.42%" in zh and "持续 95 s" in zh
    assert "reporting again: 0.42 % (the no-data alert lasted 95 s)" in en


@pytest.mark.parametrize(("limit", "zh_says", "en_says"), [
    # the detector's default spike_jump for methane (0.25 %): a jump that came back, no "/s"
    (0.25, "跳变超过 0.25% 后立即回落", "jumped by more than 0.25 % for one reading and straight "
                                    "back, now 1.20 %"),
    # the default max_rate for methane (1.0 %/s): a rate
    (1.0, "变化速率超过 1.00%/s", "changed faster than 1.00 %/s"),
])
def test_a_spike_names_its_limit_with_the_unit_of_its_origin(limit: float, zh_says: str,
                                                           en_says: str) -> None:
    deployment = load_deployment(None)
    names = Names(kind={"ch4": ("甲烷", "methane")},
                  spike_jump=dict(deployment.detectors.spike_jump),
                  max_rate=dict(deployment.detectors.max_rate))
    spike = msgspec.structs.replace(SILENT, rule="sensor_fault", condition="spike", value=1.2,
                                    limit=limit)
    zh, en = render(spike, mine_name=("棋盘井煤矿", "Qipanjing"), timezone="Asia/Shanghai",
                    names=names).split("\n")
    assert zh_says in zh and en_says in en
    assert ("/s" in en) == (limit == 1.0)


def test_a_spike_whose_two_limits_are_equal_is_worded_true_of_both() -> None:
    names = Names(spike_jump={"ch4": 0.5}, max_rate={"ch4": 0.5})
    spike = msgspec.structs.replace(SILENT, rule="sensor_fault", condition="spike", limit=0.5)
    en = render(spike, mine_name=("x", "X"), timezone="Asia/Shanghai", names=names)
    assert "a jump beyond 0.50 % or a change faster than 0.50 %/s" in en
