"""Alert message text: one Chinese line, then one English line, for people who act on it.

Each line names the mine, the sensor, its place, the kind, the value with its unit, the limit
crossed (and which limit: alarm, power-off …) and the reading's time in the mine's own local
time (``Mine.timezone``, Asia/Shanghai for the pilots) as ``YYYY-MM-DD HH:MM:SS``::

    【断电】棋盘井煤矿 T1-1101 1101综采工作面 甲烷 1.62% ≥ 断电值 1.50%（2026-11-25 22:15:03）
    [POWER-OFF] Qipanjing T1-1101 longwall working face methane 1.62 % ≥ power-off limit 1.50 %
    (2026-11-25 22:15:03 CST)

(the English line is wrapped here only). Resolved transitions say 解除 / RESOLVED, or 复电 /
RESTORED for power-off, with the release or restore limit the value went back past.

Names of kinds and locations come from a :class:`Names` value, which the composition root
builds from ``config/limits.toml`` ([kinds.*] and [locations.*] ``name`` / ``name_en``); an
unknown key is shown as itself rather than failing, so a message is never lost to a missing name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alerts.wire import Alert

__all__ = ["Names", "render"]


@dataclass(frozen=True, slots=True)
class Names:
    """(Chinese, English) names of sensor kinds and location types, by their key."""

    kind: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    location: Mapping[str, tuple[str, str]] = field(default_factory=dict)


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

# Digits shown by unit: methane's resolution is 0.01 % (domain.md §4).
_DECIMALS = {"%": 2, "m/s": 2}


def _quantity(value: float, unit: str, gap: str) -> str:
    number = f"{value:.{_DECIMALS.get(unit, 1)}f}"
    return f"{number}{gap}{unit}" if unit else number


def _comparison(upper: bool, firing: bool, inclusive: bool) -> str:
    """The relation of value to limit that made this transition, as the rule states it."""
    if firing:
        return ("≥" if inclusive else ">") if upper else ("≤" if inclusive else "<")
    return ("<" if inclusive else "≤") if upper else (">" if inclusive else "≥")


def render(alert: Alert, *, mine_name: tuple[str, str], timezone: str, names: Names,
           inclusive: bool = True, start_known: bool = True) -> str:
    """The two-line message of ``alert`` (its own ``message`` field is ignored).

    ``mine_name`` is (Chinese, English); ``timezone`` an IANA name (``Asia/Shanghai``);
    ``inclusive`` whether the limit counts the value itself (``≥``) or not (``>``);
    ``start_known`` false adds that the episode's start was not seen (state lost).
    """
    wording = _WORDING.get(alert.condition, _GENERIC)
    firing = alert.state == "firing"
    tag = wording.firing if firing else wording.resolved
    limit_name = wording.fire_limit if firing else wording.clear_limit
    relation = _comparison(wording.upper, firing, inclusive)
    kind_zh, kind_en = names.kind.get(alert.kind, (alert.kind, alert.kind))
    where_zh, where_en = names.location.get(alert.location, (alert.location, alert.location))
    local = datetime.fromtimestamp(alert.ts / 1000, UTC).astimezone(ZoneInfo(timezone))
    when = local.strftime("%Y-%m-%d %H:%M:%S")
    unknown_zh, unknown_en = ("", "") if start_known else ("，开始时间未知", ", start unknown")
    zh = (f"【{tag[0]}】{mine_name[0]} {alert.sensor} {alert.place or where_zh} {kind_zh} "
          f"{_quantity(alert.value, alert.unit, '')} {relation} {limit_name[0]} "
          f"{_quantity(alert.limit, alert.unit, '')}"
          f"（{when}{unknown_zh}）")
    en = (f"[{tag[1]}] {mine_name[1]} {alert.sensor} {where_en} {kind_en} "
          f"{_quantity(alert.value, alert.unit, ' ')} {relation} {limit_name[1]} "
          f"{_quantity(alert.limit, alert.unit, ' ')} "
          f"({when} {local.strftime('%Z')}{unknown_en})")
    return f"{zh}\n{en}"
