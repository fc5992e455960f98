"""The regulator's overview (煤监局总览): every configured mine on one page.

Panels, each one bar per mine (grouped by the ``mine`` tag):

- sensors in alarm (报警) and in power-off (断电) now: each sensor's latest status in the range,
  its alarm bit (1) or power-off bit (2) counted per mine;
- sensors in fault (故障: sensor fault 128, substation fault 16, over-range 8), counted alike;
- sensors with no data (无数据): configured sensors (from the registry) minus those heard in the
  last 3 × the mine's longest sampling period — one query per mine, because the configured
  count is the mine's own; a sensor never heard at all counts too;
- age of the latest reading per mine (its time, shown as "x minutes ago");
- maximum methane per mine today (``now/d``: since midnight in the dashboard's time zone).

Times are shown in the time zone of the first mine (all pilot mines are Asia/Shanghai).
"""

from __future__ import annotations

from typing import Any

from config.model import Mine
from config.readings import Status
from dashboards.grafana import Dashboard, Panel, Target
from dashboards.influxql import quote_string
from dashboards.mine import silence_window_s
from dashboards.states import STATE_BITS

__all__ = ["OVERVIEW_UID", "overview_dashboard"]

OVERVIEW_UID = "jinmei-overview"
_FAULT_BITS = int(Status.SENSOR_FAULT | Status.SUBSTATION_FAULT | Status.OVER_RANGE)


def _count_bits(bits: int) -> str:
    """Per mine: how many sensors have one of ``bits`` in their latest status of the range."""
    inner = (f'SELECT last("status") & {bits} AS "flag" FROM "reading" WHERE $timeFilter '
             f'GROUP BY "mine", "sensor"')
    if bits & (bits - 1) == 0:  # one bit: flags are 0 or bits, so a sum also reports zeros
        return f'SELECT sum("flag") / {bits} AS "sensors" FROM ({inner}) GROUP BY "mine"'
    return f'SELECT count("flag") AS "sensors" FROM ({inner}) WHERE "flag" > 0 GROUP BY "mine"'


def _no_data(mine: Mine) -> str:
    heard = f'SELECT last("status") AS "s" FROM "reading" WHERE "mine" = ' \
            f'{quote_string(mine.id)} AND time > now() - {silence_window_s(mine)}s ' \
            f'GROUP BY "sensor"'
    return f'SELECT {len(mine.sensors)} - count("s") AS "sensors" FROM ({heard})'


def _bars(title: str, description: str, targets: tuple[Target, ...], colour: str,
          **defaults: Any) -> Panel:
    return Panel("bargauge", title, description, targets, width=8, height=8,
                 defaults={"color": {"mode": "fixed", "fixedColor": colour}, "min": 0,
                           "decimals": 0, "noValue": "0", **defaults},
                 options={"orientation": "horizontal", "displayMode": "basic",
                          "reduceOptions": {"calcs": ["lastNotNull"], "values": False},
                          "showUnfilled": True})


def overview_dashboard(mines: tuple[Mine, ...]) -> Dashboard:
    """The overview of ``mines`` (see the module docstring)."""
    by_mine = "$tag_mine"
    alarms = _bars("报警测点", "Sensors whose latest reading in the range is in alarm, per mine",
                   (Target("A", _count_bits(int(Status.ALARM)), alias=by_mine),), "red")
    power_off = _bars("断电测点", "Sensors whose latest reading in the range is in power-off "
                                  "(断电), per mine",
                      (Target("A", _count_bits(int(Status.POWER_OFF)), alias=by_mine),),
                      "dark-red")
    fault = _bars("故障测点", "Sensors whose latest reading is a sensor or substation fault or "
                              "over-range, per mine",
                  (Target("A", _count_bits(_FAULT_BITS & STATE_BITS), alias=by_mine),),
                  "purple")
    no_data = _bars("无数据测点", "Configured sensors that sent nothing in the last 3 sampling "
                                  "periods of the mine's slowest sensor (communication lost)",
                    tuple(Target(chr(65 + i), _no_data(m), alias=m.id)
                          for i, m in enumerate(mines)), "gray")
    age = Panel(
        "stat", "最新数据时间", "Age of the latest reading per mine (when the feed last spoke)",
        (Target("A", 'SELECT last("value") FROM "reading" WHERE $timeFilter GROUP BY "mine"',
                alias=by_mine),), width=12, height=6,
        defaults={"unit": "dateTimeFromNow", "color": {"mode": "fixed", "fixedColor": "text"}},
        options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/^Time$/",
                                   "values": False},
                 "textMode": "value_and_name", "colorMode": "none"})
    methane = Panel(
        "bargauge", "今日甲烷最大值", "Maximum methane per mine today (since local midnight)",
        (Target("A", 'SELECT max("value") FROM "reading" WHERE "kind" = \'ch4\' AND $timeFilter '
                     'GROUP BY "mine"', alias=by_mine),), width=12, height=6,
        defaults={"unit": "percent", "decimals": 2, "min": 0, "max": 4,
                  "thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}, {"color": "red", "value": 1.0}]}},
        options={"orientation": "horizontal", "displayMode": "gradient",
                 "reduceOptions": {"calcs": ["max"], "values": False}},
        time_from="now/d")
    return Dashboard(
        uid=OVERVIEW_UID, title="金煤工程 监管总览",
        description="Regulator overview of every mine: open alarms and power-offs, sensors in "
                    "fault or without data, age of the latest reading, maximum methane today",
        timezone=mines[0].timezone if mines else "Asia/Shanghai",
        items=(alarms, power_off, fault, no_data, age, methane), tags=("jinmei", "overview"),
        time_from="now-1h")
