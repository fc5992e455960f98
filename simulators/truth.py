"""Ground truth of a scenario: which alerts the detectors must raise on its feed, and which not.

:func:`ground_truth` replays the feed of ``simulators.feed`` (same arguments, same seed, same
readings) and returns the JSON document described in ``simulators/README.md``: one entry per
alert episode that must fire (``fires: true``, with ``from_ms`` the earliest time it may fire,
``by_ms`` the latest time it must have fired, ``to_ms`` when it ends or ``null``) and the
conditions that must stay silent (``fires: false``), plus the rejects the malformed payloads
must cause, counted by reason.

How each rule's truth is found:
- ``limit_alarm`` / ``limit_power_off``: the feed's own crossings of each sensor's limits, with
  hysteresis as ``detectors.limits`` applies it (calibrating readings never alarm; over-range
  is over every upper limit). ``by_ms = from_ms``: a statutory limit fires on the reading.
- ``sensor_fault``: ``over_range`` / ``under_range`` from readings outside the measuring range
  (by the reading); ``device_fault`` over the readings sent with ``status: fault`` (by the
  first; they are left out of the limit episodes: a faulty reading never ends one, and the
  scenario's fault reads 0, which starts none); ``spike`` from each spiked reading, by the
  next one (until then a jump is indistinguishable from the start of an outburst — gas can
  rise that fast; the reading after it, back where it came from, is what makes it a spike);
  ``stuck`` from the freeze (by 15 min later); ``drift`` from its start (by the end of the
  feed).
- ``trend``: on every sensor of a ``warns`` excursion, from the start of the rise, by 5 minutes
  before that sensor's alarm (or the top of the rise if it never alarms).
- ``no_data``: every sensor of a silent substation, from 2 patrol periods after its last reading
  to 4 (domain.md: 2-3 periods silent is communication lost), until it reports again.
- ``feed_fault``: while power-off is required in the scenario's area (every local fan stopped,
  or methane at power-off) and the feed stays live; by the second feed reading of that time.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from config.model import Mine, Registry
from simulators.feed import Feed
from simulators.scenarios import get_scenario

__all__ = ["RULES", "STUCK_BY_MS", "TREND_LEAD_MS", "ground_truth"]

RULES = ("limit_alarm", "limit_power_off", "trend", "no_data", "sensor_fault", "feed_fault")
STUCK_BY_MS = 15 * 60_000  # a frozen value is unremarkable for a while: gas can be steady
TREND_LEAD_MS = 5 * 60_000  # issue 4: a trend warning at least 5 minutes before the alarm
# Limit conditions a detector checks: (condition = Limits field, rule, release field, upper?).
_CONDITIONS = (
    ("alarm_high", "limit_alarm", "release_high", True),
    ("power_off", "limit_power_off", "restore", True),
    ("warning_high", "limit_alarm", "warning_high", True),
    ("alarm_low", "limit_alarm", "release_low", False),
)


def ground_truth(mine: Mine, scenario: str, *, start_ms: int, duration_s: float | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """The ground-truth document of ``generate`` with the same arguments (module docstring)."""
    story = get_scenario(scenario)
    feed = Feed(mine, story, start_ms, duration_s or story.duration_s, seed)
    sensor, ts, value, calibrating, faulty = [], [], [], [], []
    for tick in feed.ticks():
        sent = ~tick.silent
        sensor.append(tick.due.index[sent])
        ts.append(np.full(int(sent.sum()), tick.at_ms, dtype=np.int64))
        value.append(tick.value[sent])
        calibrating.append(tick.calibrating[sent])
        faulty.append(tick.faulty[sent])
    order = np.argsort(np.concatenate(sensor), kind="stable")  # each sensor's series in time
    s, t, v, c, f = (np.concatenate(a)[order]
                     for a in (sensor, ts, value, calibrating, faulty))
    span = (start_ms, start_ms + feed.duration_ms)
    trusted = ~(c | f)
    limits = _episodes(mine, feed.registry, s[trusted], t[trusted], v[trusted], span)
    firing = [e for e in limits if e["fires"]]
    firing += _range_faults(mine, feed.registry, s, t, v)
    firing += _injected_faults(feed, s, t, v, span)
    firing += [_entry(mine, int(s[a]), "sensor_fault", "device_fault", t[a], t[a],
                      None if b is None else t[b]) for a, b in _runs(s, f)]
    firing += _trends(feed, s, t, firing)
    firing += _silences(feed, s, t)
    firing += _feed_faults(feed, s, t, v, c, f)
    quiet = [{"mine": mine.id, "sensor": "*", "rule": rule, "condition": "*", "fires": False,
              "from_ms": span[0], "to_ms": span[1]}
             for rule in RULES[2:] if rule not in story.may_fire]
    firing.sort(key=lambda e: (e["from_ms"], e["sensor"], e["rule"], e["condition"]))
    return {
        "version": 1, "mine": mine.id, "scenario": story.name, "seed": seed,
        "start_ms": span[0], "end_ms": span[1], "description": story.description,
        "alerts": firing + [e for e in limits if not e["fires"]] + quiet,
        "rejects": dict(sorted(Counter(
            reason for batch in feed.refused.values() for reason, _ in batch).items())),
    }


def _entry(mine: Mine, sensor: int, rule: str, condition: str, from_ms: int, by_ms: int,
           to_ms: int | None) -> dict[str, Any]:
    return {"mine": mine.id, "sensor": mine.sensors[sensor].id, "rule": rule,
            "condition": condition, "fires": True, "from_ms": int(from_ms), "by_ms": int(by_ms),
            "to_ms": None if to_ms is None else int(to_ms)}


def _runs(sensor: np.ndarray, state: np.ndarray) -> list[tuple[int, int | None]]:
    """(first index, index it ends at or None) of each run of ``state`` within one sensor."""
    first = np.r_[True, sensor[1:] != sensor[:-1]] if len(sensor) else np.empty(0, bool)
    before = np.r_[False, state[:-1]] & ~first
    starts = np.flatnonzero(state & ~before)
    ends = np.flatnonzero(~state & before)
    following = np.searchsorted(ends, starts)
    return [(start, int(ends[k]) if k < len(ends) and sensor[ends[k]] == sensor[start] else None)
            for start, k in zip(starts.tolist(), following.tolist(), strict=True)]


def _episodes(mine: Mine, registry: Registry, sensor: np.ndarray, ts: np.ndarray,
              value: np.ndarray, span: tuple[int, int]) -> list[dict[str, Any]]:
    """Limit episodes of readings grouped by sensor, in time order within each sensor."""
    first = np.r_[True, sensor[1:] != sensor[:-1]] if len(sensor) else np.empty(0, bool)
    found: list[dict[str, Any]] = []
    for condition, rule, release_name, upper in _CONDITIONS:
        limit_of = getattr(registry, condition)
        release_of = getattr(registry, release_name)
        limit = limit_of[sensor]
        release = np.where(np.isnan(release_of[sensor]), limit, release_of[sensor])
        inclusive = registry.inclusive[sensor]
        over_range = value > registry.range_high[sensor]  # over every upper limit (fail-safe)
        past = _past(value, limit, inclusive, upper) | (upper & over_range & np.isfinite(limit))
        back = ~_past(value, release, inclusive, upper) & ~over_range  # strict, as the detector
        # Hysteresis without a loop: the latest "past" or "back" reading decides the state;
        # each sensor's first reading starts it at "back" unless it is already past.
        step = np.where(past, 1, np.where(back | first, -1, 0))
        latest = np.maximum.accumulate(np.where(step != 0, np.arange(len(step)), 0))
        runs = _runs(sensor, step[latest] == 1)
        found += [_entry(mine, int(sensor[a]), rule, condition, ts[a], ts[a],
                         None if b is None else ts[b]) for a, b in runs]
        quiet = np.isfinite(limit_of)
        quiet[[int(sensor[a]) for a, _ in runs]] = False
        found += [{"mine": mine.id, "sensor": mine.sensors[i].id, "rule": rule,
                   "condition": condition, "fires": False, "from_ms": span[0], "to_ms": span[1]}
                  for i in np.flatnonzero(quiet).tolist()]
    return found


def _past(value: np.ndarray, limit: np.ndarray, inclusive: np.ndarray,
          upper: bool) -> np.ndarray:
    """Is each reading on the firing side of its limit (NaN limit: never)?"""
    if upper:
        return np.where(inclusive, value >= limit, value > limit)
    return np.where(inclusive, value <= limit, value < limit)


def _range_faults(mine: Mine, registry: Registry, sensor: np.ndarray, ts: np.ndarray,
                  value: np.ndarray) -> list[dict[str, Any]]:
    found = []
    for condition, outside in (("over_range", value > registry.range_high[sensor]),
                               ("under_range", value < registry.range_low[sensor])):
        found += [_entry(mine, int(sensor[a]), "sensor_fault", condition, ts[a], ts[a],
                         None if b is None else ts[b]) for a, b in _runs(sensor, outside)]
    return found


def _injected_faults(feed: Feed, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray,
                     span: tuple[int, int]) -> list[dict[str, Any]]:
    found = []
    for i in range(len(feed.mine.sensors)):
        mine_ts = ts[sensor == i] - feed.start_ms
        for condition, since, by in (("stuck", feed.stuck_from[i], STUCK_BY_MS),
                                     ("drift", feed.drift_from[i], None)):
            if np.isfinite(since) and (mine_ts >= since).any():
                at = int(mine_ts[mine_ts >= since][0]) + feed.start_ms
                found.append(_entry(feed.mine, i, "sensor_fault", condition, at,
                                    span[1] if by is None else at + by, None))
        for at_ms, _spike in feed.spike_at[i]:
            k = np.flatnonzero(mine_ts >= at_ms)
            if len(k):
                after = int(mine_ts[k[1]]) + feed.start_ms if len(k) > 1 else None
                at = int(mine_ts[k[0]]) + feed.start_ms
                found.append(_entry(feed.mine, i, "sensor_fault", "spike", at,
                                    at if after is None else after, after))
    return found


def _trends(feed: Feed, sensor: np.ndarray, ts: np.ndarray,
            firing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    alarms = {e["sensor"]: e["from_ms"] for e in reversed(firing)
              if e["condition"] == "alarm_high"}
    found = []
    for i in np.flatnonzero(feed.warns).tolist():
        mine_ts = ts[sensor == i]
        rising = mine_ts[mine_ts >= feed.start_ms + feed.knots_ms[i, 0]]
        if not len(rising):
            continue
        start = int(rising[0])
        alarm = alarms.get(feed.mine.sensors[i].id)
        top = feed.start_ms + int(min(feed.knots_ms[i, 1], feed.duration_ms))
        by = top if alarm is None else alarm - TREND_LEAD_MS
        found.append(_entry(feed.mine, i, "trend", "rise", start, max(start, by), None))
    return found


def _silences(feed: Feed, sensor: np.ndarray, ts: np.ndarray) -> list[dict[str, Any]]:
    found = []
    for i in np.flatnonzero(np.isfinite(feed.silent_from)).tolist():
        mine_ts = ts[sensor == i]
        gone = feed.start_ms + feed.silent_from[i]
        last = mine_ts[mine_ts < gone]
        back = mine_ts[mine_ts >= gone]
        if not len(last) or last[-1] + 2 * feed.period_ms[i] >= feed.start_ms + feed.duration_ms:
            continue  # never heard of, or the feed ends before it counts as silent
        entry = _entry(feed.mine, i, "no_data", "silent", last[-1] + 2 * feed.period_ms[i],
                       last[-1] + 4 * feed.period_ms[i], back[0] if len(back) else None)
        entry["substation"] = feed.mine.sensors[i].substation
        found.append(entry)
    return found


def _feed_faults(feed: Feed, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray,
                 calibrating: np.ndarray, faulty: np.ndarray) -> list[dict[str, Any]]:
    """While power-off is required in a failing-interlock area and its feed stays live."""
    found = []
    registry = feed.registry
    for area in np.flatnonzero(feed.lockout_fails).tolist():
        in_area = feed.area[sensor] == area
        fans = {int(i): True for i in np.flatnonzero(feed.fan & (feed.area == area))}
        cut: dict[int, bool] = {}
        required_since: int | None = None
        spells: list[tuple[int, int | None]] = []
        rows = np.flatnonzero(in_area)
        for k in rows[np.argsort(ts[rows], kind="stable")].tolist():  # a few sensors, not hot
            i, v = int(sensor[k]), float(value[k])
            if i in fans:
                fans[i] = v > 0.5
            elif feed.guard[i] and not calibrating[k]:
                cut[i] = bool(faulty[k]) or v >= registry.power_off[i] or (
                    cut.get(i, False) and v >= registry.restore[i])
            required = (bool(fans) and not any(fans.values())) or any(cut.values())
            if required and required_since is None:
                required_since = int(ts[k])
            elif not required and required_since is not None:
                spells.append((required_since, int(ts[k])))
                required_since = None
        if required_since is not None:
            spells.append((required_since, None))
        for i in np.flatnonzero(feed.feed & (feed.area == area)).tolist():
            feed_ts = ts[sensor == i]
            for since, until in spells:
                later = feed_ts[feed_ts >= since]
                by = int(later[1]) if len(later) > 1 else since + 2 * int(feed.period_ms[i])
                found.append(_entry(feed.mine, i, "feed_fault", "live_after_power_off", since,
                                    by, until))
    return found
