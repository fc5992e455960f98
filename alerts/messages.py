"""Alert message text: one Chinese line, then one English line, for people who act on it.

Each line names the mine, the sensor, its place, the kind, the value with its unit, the limit
crossed (and which limit: alarm, power-off …) and the reading's time in the mine's own local
time (``Mine.timezone``, Asia/Shanghai for the pilots) as ``YYYY-MM-DD HH:MM:SS``::

    【断电】棋盘井煤矿 T1-1101 1101综采工作面 甲烷 1.62% ≥ 断电值 1.50%（2026-11-25 22:15:03）
    [POWER-OFF] Qipanjing T1-1101 longwall working face methane 1.62 % ≥ power-off limit 1.50 %
    (2026-11-25 22:15:03 CST)

(the English line is wrapped here only). Resolved transitions say 解除 / RESOLVED, or 复电 /
RESTORED for power-off, with the release or restore limit the value went back past. A ``late``
transition (its reading reached jinmei more than a minute after its own time: back-fill, 补传)
says so after the time: ``（2026-11-25 22:15:03，补传）`` / ``(2026-11-25 22:15:03 CST, late)``.

Conditions of the other rules (trend, no data, sensor faults, interlocks) are not limit
crossings, so they are worded by what their ``value`` and ``limit`` mean — a rate against the
plausible rate, a face/return gap against its tolerance, the silence allowed — never as "value
≥ limit". A condition with no wording of its own falls back to the generic form rather than
being dropped. A value that is not there (NaN: a no-data alert on a sensor not heard since the
service started) reads 无读数 / "no reading", never as a number. A no-data alert's value is
the sensor's last reading; the silence is told in words (more than the seconds allowed on
firing, how long the alert lasted on resolving), never as a value with the sensor's unit.

A warning ended because the point's alarm is in force (``reason: "superseded"``,
alerts.supersede) says so, with the reading and the limit that alarm crossed::

    【趋势解除】大雁煤矿 T0-1201 … 甲烷 被报警取代：1.02% ≥ 报警值 1.00%（…）
    [TREND ENDED] Dayan T0-1201 … methane superseded by the alarm: 1.02 % ≥ alarm limit 1.00 % (…)

Names of kinds and locations come from a :class:`Names` value, which the composition root
builds from ``config/limits.toml`` ([kinds.*] and [locations.*] ``name`` / ``name_en``); an
unknown key is shown as itself rather than failing, so a message is never lost to a missing name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alerts.wire import Alert
from config.model import Registry

__all__ = ["DEFAULT_TIMEZONE", "Names", "mine_labels", "render"]

DEFAULT_TIMEZONE = "Asia/Shanghai"  # the pilots' zone, for a mine the registry does not know


@dataclass(frozen=True, slots=True)
class Names:
    """(Chinese, English) names of sensor kinds and location types, by their key; and the
    ``[detectors] spike_jump`` and ``max_rate`` per kind, which tell the two origins of a
    spike's limit apart (detectors/faults.py: the jump of a one-reading spike that came back,
    in the kind's unit, or else the fastest plausible change, in the unit per second)."""

    kind: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    location: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    spike_jump: Mapping[str, float] = field(default_factory=dict)
    max_rate: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Wording:
    firing: tuple[str, str]           # tag when the condition starts (zh, en)
    resolved: tuple[str, str]         # tag when it ends
    fire_limit: tuple[str, str]       # the limit a firing value crossed
    clear_limit: tuple[str, str]      # the limit a resolving value went back past
    upper: bool


_WORDING = {
    "warning_high": _Wording(("预警", "WARNING"), ("解除", "RESOLVED"),
                             ("预警值", "warning limit"), ("预警值", "warning limit"), True),
    "alarm_high": _Wording(("报警", "ALARM"), ("解除", "RESOLVED"),
                           ("报警值", "alarm limit"), ("解除值", "release limit"), True),
    "alarm_low": _Wording(("下限报警", "LOW ALARM"), ("解除", "RESOLVED"),
                          ("下限报警值", "low alarm limit"), ("下限解除值", "low release limit"),
                          False),
    "power_off": _Wording(("断电", "POWER-OFF"), ("复电", "RESTORED"),
                          ("断电值", "power-off limit"), ("复电值", "restore limit"), True),
}
# Other rules (trend, no_data …) bring their own conditions: worded generically, never dropped.
_GENERIC = _Wording(("报警", "ALARM"), ("解除", "RESOLVED"), ("限值", "limit"),
                    ("限值", "limit"), True)

@dataclass(frozen=True, slots=True)
class _Described:
    """Tags and sentence templates of a non-limit condition: ``{v}`` value, ``{l}`` limit
    (both with the sensor's unit), ``{sl}`` the limit as plain seconds, ``{d}`` the seconds
    from the episode's start to this transition, ``{scope}``."""

    tag: tuple[str, str]
    cleared: tuple[str, str]
    fire: tuple[str, str]
    clear: tuple[str, str]
    # (firing, resolved) sentences for a transition with no value (NaN), where "{v}" would not
    # read well; None: the sentences above, the value shown as 无读数 / no reading.
    no_reading: tuple[tuple[str, str], tuple[str, str]] | None = None


_DESCRIBED = {
    "trend_high": _Described(
        ("趋势预警", "TREND"), ("趋势解除", "TREND ENDED"),
        ("{v} 持续上升，趋近报警值 {l}", "{v} rising towards the alarm limit {l}"),
        ("{v} 不再趋近报警值 {l}", "{v} no longer heading for the alarm limit {l}")),
    "trend_low": _Described(
        ("趋势预警", "TREND"), ("趋势解除", "TREND ENDED"),
        ("{v} 持续下降，趋近下限报警值 {l}", "{v} falling towards the low alarm limit {l}"),
        ("{v} 不再趋近下限报警值 {l}", "{v} no longer heading for the low alarm limit {l}")),
    "level_shift": _Described(
        ("涌出突变", "LEVEL SHIFT"), ("突变解除", "SHIFT ENDED"),
        ("突变至 {v}，超过突变阈 {l}", "jumped to {v}, past the shift threshold {l}"),
        ("回落至 {v}", "back to {v}")),
    "face_return_mismatch": _Described(
        ("工作面与回风不一致", "FACE/RETURN MISMATCH"), ("一致性恢复", "MISMATCH ENDED"),
        ("工作面与回风巷读数相差 {v}，超过容差 {l}",
         "face and return airway differ by {v}, more than the tolerance {l}"),
        ("相差 {v}，在容差 {l} 以内", "difference {v}, within the tolerance {l}")),
    "silent": _Described(
        ("通讯中断", "NO DATA"), ("通讯恢复", "DATA BACK"),
        ("超过 {sl} s 无数据，最后读数 {v}",
         "no data for more than {sl} s; last reading {v}"),
        ("恢复上报，读数 {v}（中断告警持续 {d} s）",
         "reporting again: {v} (the no-data alert lasted {d} s)"),
        (("超过 {sl} s 无数据，无读数", "no data for more than {sl} s; no reading"),
         ("恢复上报，无测量读数（中断告警持续 {d} s）",
          "reporting again, no measured reading (the no-data alert lasted {d} s)"))),
    "substation_silent": _Described(
        ("分站中断", "SUBSTATION SILENT"), ("分站恢复", "SUBSTATION BACK"),
        ("分站 {scope} 全部测点超过 {sl} s 无数据",
         "every point of substation {scope} silent for more than {sl} s"),
        ("分站 {scope} 恢复上报（中断告警持续 {d} s）",
         "substation {scope} reporting again (the no-data alert lasted {d} s)")),
    "device_fault": _Described(
        ("传感器故障", "SENSOR FAULT"), ("故障解除", "FAULT CLEARED"),
        ("设备自报故障，读数 {v}", "the device reports a fault (reading {v})"),
        ("设备恢复正常，读数 {v}", "the device reports normal again ({v})")),
    "out_of_range": _Described(
        ("超量程", "OUT OF RANGE"), ("量程恢复", "BACK IN RANGE"),
        ("读数 {v} 超出测量范围（界限 {l}）",
         "reading {v} outside the measuring range (bound {l})"),
        ("读数 {v} 回到测量范围内", "reading {v} back inside the measuring range")),
    "spike": _Described(  # the limit is a rate (max_rate); the jump's sentence is _SPIKE_JUMP
        ("数据跳变", "SPIKE"), ("跳变解除", "SPIKE ENDED"),
        ("读数 {v} 变化速率超过 {l}/s", "reading {v} changed faster than {l}/s"),
        ("读数 {v} 变化恢复正常", "reading {v} changes plausibly again")),
    "stuck": _Described(
        ("数值不变", "STUCK"), ("恢复变化", "MOVING AGAIN"),
        ("读数 {v} 已 {sl} s 未变化", "reading {v} unchanged for {sl} s"),
        ("读数恢复变化：{v}", "reading moving again: {v}")),
    "drift": _Described(
        ("传感器漂移", "DRIFT"), ("漂移解除", "DRIFT ENDED"),
        ("相对同风路测点漂移 {v}，超过 {l}，需标校",
         "drifted {v} away from its air-path neighbours, more than {l}: calibrate it"),
        ("与同风路测点的偏差回到 {v}，在 {l} 以内",
         "back to {v} from its air-path neighbours, within {l}")),
    "feed_on_power_off": _Described(
        ("馈电异常", "FEED FAULT"), ("馈电异常解除", "FEED FAULT CLEARED"),
        ("区域 {scope} 甲烷断电后负荷侧仍有电",
         "area {scope}: load side still live after methane power-off"),
        ("区域 {scope} 负荷侧已断电", "area {scope}: load side de-energized")),
    "feed_on_fan_stopped": _Described(
        ("风电闭锁失效", "WIND-ELECTRIC LOCKOUT FAILED"), ("风电闭锁恢复", "LOCKOUT RESTORED"),
        ("掘进 {scope} 局部通风机全部停止而负荷侧仍有电",
         "heading {scope}: every local fan stopped but the load side is still live"),
        ("掘进 {scope} 负荷侧已断电或局扇已恢复",
         "heading {scope}: load side off or fan running again")),
}

# Alerts about jinmei itself (kind "system", alerts.system): tags by rule, sentences by
# condition; {s} how long it has lasted, {sl} how long it may, {scope} what failed.
_SYSTEM_TAGS = {
    "monitoring_offline": (("监测离线", "MONITORING OFFLINE"), ("监测恢复", "MONITORING BACK")),
    "store_fault": (("存储故障", "STORE FAULT"), ("存储恢复", "STORE BACK")),
}
_SYSTEM = {
    "broker_lost": (
        ("与 MQTT 服务器 {scope} 断开已 {s} s（允许 {sl} s），测点数据无法接收",
         "cut off from the MQTT broker {scope} for {s} s (allowed {sl} s): no telemetry "
         "is received"),
        ("已重新连接 MQTT 服务器 {scope}", "connected to the MQTT broker {scope} again")),
    "store_failing": (
        ("存储 {scope} 写入失败已 {s} s（允许 {sl} s），数据处理暂停",
         "the store {scope} has refused writes for {s} s (allowed {sl} s): ingest is held"),
        ("存储 {scope} 恢复写入，数据处理继续",
         "the store {scope} accepts writes again: ingest goes on")),
    "store_error": (
        ("存储 {scope} 写入失败已 {s} s（允许 {sl} s）",
         "writes to the store {scope} failing for {s} s (allowed {sl} s)"),
        ("存储 {scope} 恢复写入", "writes to the store {scope} succeed again")),
    "worker_dead": (
        ("工作线程 {scope} 已终止，服务退出待重启",
         "worker thread {scope} died: the service exits to be restarted"),
        ("服务已重新上线", "the service is back online")),
    "worker_stalled": (
        ("工作线程 {scope} 已 {s} s 无进展（允许 {sl} s），服务退出待重启",
         "worker thread {scope} made no progress for {s} s (allowed {sl} s): the service "
         "exits to be restarted"),
        ("服务已重新上线", "the service is back online")),
}
_SYSTEM_FALLBACK = (("{scope} 异常", "{scope} failing"), ("{scope} 恢复", "{scope} back"))


def mine_labels(registry: Registry, mine_id: str) -> tuple[tuple[str, str], str]:
    """The mine's (Chinese, English) name and time zone (the id and Asia/Shanghai when the
    registry has no such mine)."""
    mine = registry.mine(mine_id)
    return ((mine.name, mine.name_en) if mine else (mine_id, mine_id),
            mine.timezone if mine and mine.timezone else DEFAULT_TIMEZONE)


# Digits shown by unit: methane's resolution is 0.01 % (domain.md §4).
_DECIMALS = {"%": 2, "m/s": 2}


_NO_READING = {"": "无读数", " ": "no reading"}  # by the gap: Chinese, English


def _quantity(value: float, unit: str, gap: str) -> str:
    """``value`` with its unit (no space in Chinese: ``gap`` "", one in English: " ")."""
    if math.isnan(value):
        return _NO_READING[gap]
    number = f"{value:.{_DECIMALS.get(unit, 1)}f}"
    return f"{number}{gap}{unit}" if unit else number


def _comparison(upper: bool, firing: bool, inclusive: bool) -> str:
    """The relation of value to limit that made this transition, as the rule states it."""
    if firing:
        return ("≥" if inclusive else ">") if upper else ("≤" if inclusive else "<")
    return ("<" if inclusive else "≤") if upper else (">" if inclusive else "≥")


def render(alert: Alert, *, mine_name: tuple[str, str], timezone: str, names: Names,
           inclusive: bool = True, start_known: bool = True, superseded_by: str = "") -> str:
    """The two-line message of ``alert`` (its own ``message`` field is ignored).

    ``mine_name`` is (Chinese, English); ``timezone`` an IANA name (``Asia/Shanghai``);
    ``inclusive`` whether the limit counts the value itself (``≥``) or not (``>``);
    ``start_known`` false adds that the episode's start was not seen (state lost);
    ``superseded_by`` the condition of the alarm that ended this warning (``alarm_high``,
    ``power_off`` …; ``value`` and ``limit`` are then that alarm's).
    """
    firing = alert.state == "firing"
    if alert.kind == "system":
        return _render_system(alert, firing, mine_name, timezone)
    described = _DESCRIBED.get(alert.condition)
    if described is not None:
        sentence = described.fire if firing else described.clear
        if described.no_reading is not None and math.isnan(alert.value):
            sentence = described.no_reading[0 if firing else 1]
        if firing and alert.condition == "spike":
            sentence = _spike_sentence(alert, names)
        if superseded_by:
            sentence = _superseded(superseded_by, inclusive)
        return _render_described(alert, described.tag if firing else described.cleared,
                                 sentence, mine_name, timezone, names, start_known)
    wording = _WORDING.get(alert.condition, _GENERIC)
    tag = wording.firing if firing else wording.resolved
    limit_name = wording.fire_limit if firing else wording.clear_limit
    relation = _comparison(wording.upper, firing, inclusive)
    kind_zh, kind_en = names.kind.get(alert.kind, (alert.kind, alert.kind))
    where_zh, where_en = names.location.get(alert.location, (alert.location, alert.location))
    local = datetime.fromtimestamp(alert.ts / 1000, UTC).astimezone(ZoneInfo(timezone))
    when = local.strftime("%Y-%m-%d %H:%M:%S")
    unknown_zh, unknown_en = _notes(alert, start_known)
    zh = (f"【{tag[0]}】{mine_name[0]} {alert.sensor} {alert.place or where_zh} {kind_zh} "
          f"{_quantity(alert.value, alert.unit, '')} {relation} {limit_name[0]} "
          f"{_quantity(alert.limit, alert.unit, '')}"
          f"（{when}{unknown_zh}）")
    en = (f"[{tag[1]}] {mine_name[1]} {alert.sensor} {where_en} {kind_en} "
          f"{_quantity(alert.value, alert.unit, ' ')} {relation} {limit_name[1]} "
          f"{_quantity(alert.limit, alert.unit, ' ')} "
          f"({when} {local.strftime('%Z')}{unknown_en})")
    return f"{zh}\n{en}"


def _notes(alert: Alert, start_known: bool) -> tuple[str, str]:
    """(Chinese, English) notes after the time: start unknown, and late (补传: a reading that
    reached jinmei long after its own time, e.g. resent after an outage)."""
    zh, en = ("", "") if start_known else ("，开始时间未知", ", start unknown")
    return (zh + "，补传", en + ", late") if alert.late else (zh, en)


# A spike whose limit is the kind's spike_jump: a one-reading jump and straight back, in the
# kind's unit; when spike_jump and max_rate are the same number, words true of either.
_SPIKE_JUMP = ("读数跳变超过 {l} 后立即回落，当前 {v}",
               "jumped by more than {l} for one reading and straight back, now {v}")
_SPIKE_EITHER = ("读数 {v} 跳变超过 {l} 或变化速率超过 {l}/s",
                 "reading {v}: a jump beyond {l} or a change faster than {l}/s")


def _spike_sentence(alert: Alert, names: Names) -> tuple[str, str]:
    """The firing sentence of a spike, by the origin of its limit (detectors/faults.py)."""
    jump = names.spike_jump.get(alert.kind)
    if jump is None or not math.isclose(jump, alert.limit):
        return _DESCRIBED["spike"].fire  # max_rate, a rate per second
    if math.isclose(names.max_rate.get(alert.kind, math.inf), alert.limit):
        return _SPIKE_EITHER
    return _SPIKE_JUMP


def _when(alert: Alert, timezone: str) -> tuple[str, str]:
    local = datetime.fromtimestamp(alert.ts / 1000, UTC).astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M:%S"), local.strftime("%Z")


def _superseded(alarm_condition: str, inclusive: bool) -> tuple[str, str]:
    """The sentence of a warning the alarm ended: the alarm's own crossing, as a template."""
    wording = _WORDING.get(alarm_condition, _GENERIC)
    relation = _comparison(wording.upper, True, inclusive)
    return (f"被报警取代：{{v}} {relation} {wording.fire_limit[0]} {{l}}",
            f"superseded by the alarm: {{v}} {relation} {wording.fire_limit[1]} {{l}}")


def _render_described(alert: Alert, tag: tuple[str, str], sentence: tuple[str, str],
                      mine_name: tuple[str, str], timezone: str, names: Names,
                      start_known: bool) -> str:
    kind_zh, kind_en = names.kind.get(alert.kind, (alert.kind, alert.kind))
    where_zh, where_en = names.location.get(alert.location, (alert.location, alert.location))
    when, zone = _when(alert, timezone)
    lasted = 0 if alert.ended_at is None else (alert.ended_at - alert.started_at) / 1000
    fields = {"sl": f"{alert.limit:.0f}", "d": f"{lasted:.0f}",
              "scope": alert.scope or alert.sensor}
    unknown_zh, unknown_en = _notes(alert, start_known)
    zh = sentence[0].format(v=_quantity(alert.value, alert.unit, ""),
                            l=_quantity(alert.limit, alert.unit, ""), **fields)
    en = sentence[1].format(v=_quantity(alert.value, alert.unit, " "),
                            l=_quantity(alert.limit, alert.unit, " "), **fields)
    return (f"【{tag[0]}】{mine_name[0]} {alert.sensor} {alert.place or where_zh} {kind_zh} {zh}"
            f"（{when}{unknown_zh}）\n"
            f"[{tag[1]}] {mine_name[1]} {alert.sensor} {where_en} {kind_en} {en} "
            f"({when} {zone}{unknown_en})")


def _render_system(alert: Alert, firing: bool, mine_name: tuple[str, str],
                   timezone: str) -> str:
    """An alert about jinmei itself: the rule's tag, the mine, ``jinmei`` and its instance,
    what failed and for how long (``value``) against how long it may (``limit``)."""
    tags = _SYSTEM_TAGS.get(alert.rule, (("系统告警", "SYSTEM"), ("系统恢复", "SYSTEM BACK")))
    tag = tags[0] if firing else tags[1]
    sentence = _SYSTEM.get(alert.condition, _SYSTEM_FALLBACK)[0 if firing else 1]
    fields = {"s": f"{alert.value:.0f}", "sl": f"{alert.limit:.0f}", "scope": alert.scope}
    when, zone = _when(alert, timezone)
    return (f"【{tag[0]}】{mine_name[0]} {alert.sensor}（{alert.place}）"
            f"{sentence[0].format(**fields)}（{when}）\n"
            f"[{tag[1]}] {mine_name[1]} {alert.sensor} ({alert.place}) "
            f"{sentence[1].format(**fields)} ({when} {zone})")
