"""Building the networking files (domain.md §6) from the configuration, readings and alerts.

Pure functions: configuration, arrays and alert transitions in, :class:`~networking.format.
DataFile` out; the time of the file (``ts``, epoch ms) is passed in. Numbers: analog (MN)
values and limits with two decimals, switch (KG) values as 0 / 1; an absent limit is an empty
field. Switch texts (on / off) come from :data:`SWITCH_TEXT` by kind. CDDY relations name
the feed sensors of a methane sensor's power-off area as ``D-<point code>``, comma-separated
(UNSURE: the separator between several relations is not in domain.md).

YCBJ event types from the alert record's (rule, condition) — :func:`event_type`; a transition
whose rule has no event type (a spike, a stuck value, a face/return mismatch) is not networked
(it stays in the alert record). Calibration (007) comes from the readings' status bits
(:func:`calibration_runs`), not from alerts, since calibration never alarms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import numpy as np

from alerts.wire import Alert
from config.limits_table import KindInfo
from config.model import Mine, Sensor
from config.readings import Status
from networking.format import DataFile, format_time

__all__ = ["CALIBRATION_EVENT", "SWITCH_TEXT", "AbnormalEvent", "Statistics", "calibration_runs",
           "cddy", "cdss", "event_type", "events_from_alerts", "fzdy", "fzss", "measured", "tjsj",
           "window_statistics", "ycbj"]

SWITCH_TEXT = {"local_fan": ("开", "停"), "main_fan": ("开", "停"), "feed": ("有电", "无电"),
               "air_door": ("开", "关"), "air_duct": ("有风", "无风"), "smoke": ("有烟", "无烟"),
               "power_off_relay": ("断电", "复电")}
# Readings whose value is not a measurement: left out of statistics and event extremes.
_NOT_MEASURED = int(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT)
_EVENT_TYPES = {("limit_alarm", "warning_high"): "009", ("limit_alarm", "alarm_high"): "001",
                ("limit_alarm", "alarm_low"): "001", ("limit_power_off", "power_off"): "002",
                ("feed_fault", ""): "003", ("no_data", "silent"): "004",
                ("no_data", "substation_silent"): "006", ("sensor_fault", "device_fault"): "004",
                ("sensor_fault", "out_of_range"): "008", ("trend", "trend_high"): "009",
                ("trend", "level_shift"): "009", ("trend", "trend_low"): "010"}
CALIBRATION_EVENT = "007"


def event_type(rule: str, condition: str) -> str | None:
    """The YCBJ event type of an alert, or None when it is not networked."""
    return _EVENT_TYPES.get((rule, condition)) or _EVENT_TYPES.get((rule, ""))


def _num(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.2f}"


def _value(sensor: Sensor, kinds: Mapping[str, KindInfo], value: float) -> str:
    return str(round(value)) if kinds[sensor.kind].value_type == "KG" else _num(value)


def _header(mine: Mine, ts: int, definitions: bool = False) -> tuple[str, ...]:
    zone = ZoneInfo(mine.timezone)
    n = mine.networking
    system = (n.system_model, n.system_name, n.manufacturer) if definitions else ()
    return (n.code, mine.name, *system, format_time(ts, zone))


def _file(kind: str, mine: Mine, ts: int, records: Sequence[tuple[str, ...]]) -> DataFile:
    return DataFile(kind, mine.networking.code, ts, ZoneInfo(mine.timezone),
                    _header(mine, ts, kind in ("CDDY", "FZDY")), tuple(records))


def cddy(mine: Mine, kinds: Mapping[str, KindInfo], system_code: str, ts: int) -> DataFile:
    """Point definitions (24 fields), one record per sensor."""
    station = {s.id: s.code for s in mine.substations}
    feeds: dict[str, list[str]] = {}
    for s in mine.sensors:
        if s.kind == "feed":
            feeds.setdefault(s.area, []).append(f"D-{s.point_code}")
    now = format_time(ts, ZoneInfo(mine.timezone))
    records = []
    for s in mine.sensors:
        kind, lim = kinds[s.kind], s.limits
        switch = kind.value_type == "KG"
        on, off = SWITCH_TEXT.get(s.kind, ("", "")) if switch else ("", "")
        analog = () if switch else (s.range_high, s.range_low, lim.alarm_high, lim.release_high,
                                    lim.alarm_low, lim.release_low, lim.power_off, lim.restore)
        limits = [_num(v) for v in analog] if analog else [""] * 8
        relations = ",".join(feeds.get(s.area, [])) if lim.power_off is not None else ""
        records.append((s.point_code, system_code, station[s.substation], kind.type_code,
                        kind.value_type, s.unit, *limits, "", "", on, off, s.place, "", "", "",
                        relations, now))
    return _file("CDDY", mine, ts, records)


def fzdy(mine: Mine, system_code: str, ts: int) -> DataFile:
    """Substation definitions, one record per substation."""
    now = format_time(ts, ZoneInfo(mine.timezone))
    return _file("FZDY", mine, ts, [(s.code, system_code, s.name, s.place, now)
                                    for s in mine.substations])


def fzss(mine: Mine, reachable: Mapping[str, bool], ts: int) -> DataFile:
    """Substation state: communication from ``reachable`` (by substation id); power unknown."""
    now = format_time(ts, ZoneInfo(mine.timezone))
    return _file("FZSS", mine, ts, [(s.code, "0" if reachable.get(s.id) else "1", "", now)
                                    for s in mine.substations])


def cdss(mine: Mine, kinds: Mapping[str, KindInfo], last_ts: np.ndarray, value: np.ndarray,
         status: np.ndarray, ts: int) -> DataFile:
    """Real-time values: arrays in the order of ``mine.sensors``; a sensor never heard from
    (``last_ts < 0``) goes out with an empty value and status 32 (not polled)."""
    zone = ZoneInfo(mine.timezone)
    records = []
    for s, at, v, st in zip(mine.sensors, last_ts.tolist(), value.tolist(), status.tolist(),
                            strict=True):
        heard = at >= 0
        records.append((s.point_code, kinds[s.kind].name, s.place,
                        _value(s, kinds, v) if heard else "", s.unit,
                        str(int(st) if heard else int(Status.NOT_POLLED)),
                        format_time(at if heard else ts, zone)))
    return _file("CDSS", mine, ts, records)


@dataclass(frozen=True, slots=True)
class Statistics:
    """max / min (with their times) and mean of each sensor over one window; NaN where a
    sensor had no measured reading (``count`` 0). Arrays indexed like the sensors given."""

    start: int
    end: int
    count: np.ndarray
    max: np.ndarray
    max_ts: np.ndarray
    min: np.ndarray
    min_ts: np.ndarray
    mean: np.ndarray


def measured(status: np.ndarray) -> np.ndarray:
    """Which readings are measurements (not calibrating, over range or faulty)."""
    return (status.astype(np.int64) & _NOT_MEASURED) == 0


def window_statistics(n: int, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray,
                      status: np.ndarray, start: int, end: int) -> Statistics:
    """Statistics of sensors ``0..n-1`` over readings with ``start <= ts < end`` (vectorized);
    calibrating, over-range and faulty readings are left out (they are not measurements)."""
    keep = (ts >= start) & (ts < end) & measured(status)
    s, t, v = sensor[keep].astype(np.int64), ts[keep], value[keep]
    count = np.bincount(s, minlength=n)
    mean = np.bincount(s, weights=v, minlength=n) / np.maximum(count, 1)
    order = np.lexsort((t, v, s))  # by sensor, value, then time: the first time of a tie wins
    s_sorted = s[order]
    first = np.r_[True, s_sorted[1:] != s_sorted[:-1]] if len(s_sorted) else np.zeros(0, bool)
    last_of = np.r_[s_sorted[1:] != s_sorted[:-1], True] if len(s_sorted) else first
    order_max = np.lexsort((-t, v, s))  # the largest value, earliest time last in its group
    max_ = np.full(n, np.nan)
    max_ts = np.full(n, -1, np.int64)
    min_ = np.full(n, np.nan)
    min_ts = np.full(n, -1, np.int64)
    min_[s_sorted[first]] = v[order][first]
    min_ts[s_sorted[first]] = t[order][first]
    max_[s[order_max][last_of]] = v[order_max][last_of]
    max_ts[s[order_max][last_of]] = t[order_max][last_of]
    mean[count == 0] = np.nan
    return Statistics(start, end, count, max_, max_ts, min_, min_ts, mean)


def tjsj(mine: Mine, kinds: Mapping[str, KindInfo], stats: Statistics, ts: int) -> DataFile:
    """5-minute statistics: one record per analog sensor with a measured reading in the window
    (``stats`` indexed like ``mine.sensors``)."""
    zone = ZoneInfo(mine.timezone)
    start, end = format_time(stats.start, zone), format_time(stats.end, zone)
    records = [(s.point_code, kinds[s.kind].name, s.place, s.unit, start, end,
                _num(stats.max[i]), format_time(int(stats.max_ts[i]), zone),
                _num(stats.min[i]), format_time(int(stats.min_ts[i]), zone),
                _num(stats.mean[i]), format_time(ts, zone))
               for i, s in enumerate(mine.sensors)
               if stats.count[i] and kinds[s.kind].value_type == "MN"]
    return _file("TJSJ", mine, ts, records)


@dataclass(frozen=True, slots=True)
class AbnormalEvent:
    """One YCBJ record: a sensor's event of ``type`` from ``start`` (epoch ms) to ``end``
    (None while open), its extremes and mean (None when unknown), cause and what was done."""

    sensor: Sensor
    type: str
    start: int
    end: int | None = None
    max: tuple[float, int] | None = None
    min: tuple[float, int] | None = None
    mean: float | None = None
    cause: str = ""
    action: str = ""
    entered_at: int | None = None
    entered_by: str = ""

    @property
    def key(self) -> tuple[str, int, str]:
        """(point, start, type): a re-send (the close of an open event) keeps it."""
        return self.sensor.point_code, self.start, self.type


def ycbj(mine: Mine, kinds: Mapping[str, KindInfo], events: Sequence[AbnormalEvent],
         ts: int) -> DataFile:
    """Abnormal events (17 fields); an open event has an empty end."""
    zone = ZoneInfo(mine.timezone)

    def at(ms: int | None) -> str:
        return "" if ms is None else format_time(ms, zone)

    records = []
    for e in events:
        s = e.sensor
        high, low = e.max or (None, None), e.min or (None, None)
        records.append((s.point_code, kinds[s.kind].name, s.place, s.unit, e.type, at(e.start),
                        at(e.end), _num(high[0]), at(high[1]), _num(low[0]), at(low[1]),
                        _num(e.mean), e.cause, e.action, at(e.entered_at), e.entered_by,
                        at(ts)))
    return _file("YCBJ", mine, ts, records)


def events_from_alerts(alerts: Sequence[Alert], sensors: Mapping[tuple[str, str], Sensor],
                       acks: Mapping[str, tuple[str, int, str]],
                       causes: Mapping[str, tuple[str, str, str, int]] | None = None
                       ) -> list[AbnormalEvent]:
    """The YCBJ events of these alert transitions (firing → open, resolved → closed). The
    cause and action a dispatcher entered (``causes``: cause, action, by, at — the console)
    fill 原因, 处理措施, 录入人 and 录入时间; without them the acknowledgement (by, at, note) gives
    who entered it and the action."""
    events = []
    for a in alerts:
        code = event_type(a.rule, a.condition)
        sensor = sensors.get((a.mine, a.sensor))
        if code is None or sensor is None:
            continue
        by, at, note = acks.get(a.id, ("", None, ""))
        cause = ""
        if causes and a.id in causes:
            cause, note, by, at = causes[a.id]
        end = (a.ended_at or a.ts) if a.state == "resolved" else None
        events.append(AbnormalEvent(sensor, code, a.started_at, end, cause=cause, action=note,
                                    entered_at=at, entered_by=by))
    return events


def calibration_runs(sensor: np.ndarray, ts: np.ndarray, status: np.ndarray
                     ) -> list[tuple[int, int, int]]:
    """(sensor, first ts, last ts) of every run of calibrating readings (标校, 007), per sensor
    in time order; a run still calibrating at the last reading ends there."""
    order = np.lexsort((ts, sensor))
    s, t = sensor[order], ts[order]
    cal = (status[order].astype(np.int64) & int(Status.CALIBRATION)) != 0
    same = np.r_[False, s[1:] == s[:-1]]
    starts = cal & ~(same & np.r_[False, cal[:-1]])
    ends = cal & ~(np.r_[same[1:], False] & np.r_[cal[1:], False])
    return list(zip(s[starts].tolist(), t[starts].tolist(), t[ends].tolist(), strict=True))
