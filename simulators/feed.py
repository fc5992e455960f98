"""Synthetic telemetry of one mine, deterministic for a seed, and the alerts it must raise.

:func:`generate` yields the feed as MQTT messages in time order: every configured sensor
reports at its own ``period_s`` from ``start_ms`` on, and at each tick every substation (分站)
with a sensor due sends one message on ``jinmei/<mine>/telemetry/<substation>`` (or
``jinmei/<mine>/telemetry`` for a sensor with no substation) in wire contract v1, whose
``ts`` is the tick time. Payloads are encoded by ``ingest.codec.encode_telemetry``, the
contract's own encoder.

The model, vectorized over all sensors due at a tick (numpy ``Generator(PCG64(seed))``):
value = baseline + scenario excursion + AR(1) noise (phi 0.9 per reading, bounded at ±4 σ),
quantised to the sensor's resolution and clipped to its range. Baselines come from the
sensor's kind and location (:data:`_MODELS`) and are kept 5 σ + one resolution step inside
every limit of the sensor, so the ``normal`` scenario never crosses one. A kind with no model
here is refused with ``ValueError`` rather than invented.

:func:`truth` replays the same model (same seed) and reports, per sensor and limit condition,
the episodes the detectors must raise (``fires: True``, ``from_ms`` = first reading past the
limit, ``to_ms`` = first reading back past the release, or ``None`` if still firing at the
end) or that the condition must stay silent for the whole feed (``fires: False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise, repeat
from typing import Any

import numpy as np

from config.model import Mine, Registry
from ingest.codec import encode_telemetry
from simulators.scenarios import Scenario, get_scenario

__all__ = ["Message", "generate", "truth"]

PHI = 0.9  # readings of a real gas sensor are strongly autocorrelated; white noise looks fabricated
NOISE_BOUND = 4.0  # in σ: with baselines 5 σ inside a limit, noise alone can never cross it


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message of the feed; ``at_ms`` is the feed's clock and the payload's ``ts``."""

    at_ms: int
    topic: str
    payload: bytes
    readings: int = 0  # readings the payload carries (0 when unknown, e.g. a replayed payload)


@dataclass(frozen=True, slots=True)
class _KindModel:
    """Baseline drawn uniformly from [low, high]; noise of stationary σ; reading resolution."""

    low: float
    high: float
    sigma: float
    resolution: float


def _steady(value: float) -> _KindModel:
    return _KindModel(value, value, 0.0, 1.0)


_CH4 = 0.01  # ch4 noise σ and resolution, % by volume
_MODELS: dict[tuple[str, str], _KindModel] = {
    ("ch4", "*"): _KindModel(0.05, 0.20, _CH4, _CH4),
    **{("ch4", loc): _KindModel(0.20, 0.40, _CH4, _CH4)  # the face gives off the gas
       for loc in ("longwall_face", "longwall_upper_corner", "heading_face", "shearer")},
    **{("ch4", loc): _KindModel(0.15, 0.35, _CH4, _CH4)
       for loc in ("longwall_return", "heading_return", "district_return")},
    ("ch4", "main_return"): _KindModel(0.25, 0.35, _CH4, _CH4),
    **{("ch4", loc): _KindModel(0.05, 0.10, _CH4, _CH4)  # fresh air: little methane yet
       for loc in ("longwall_intake", "series_intake", "face_intake")},
    ("co", "*"): _KindModel(0.0, 3.0, 0.5, 1.0),
    ("co", "goaf"): _KindModel(3.0, 6.0, 0.5, 1.0),  # slow oxidation of left coal (lignite: Dayan)
    ("o2", "*"): _KindModel(20.6, 20.9, 0.05, 0.1),
    ("co2", "*"): _KindModel(0.05, 0.30, 0.01, 0.01),
    ("h2s", "*"): _KindModel(0.0, 0.5, 0.1, 0.1),
    ("temperature", "*"): _KindModel(18.0, 24.0, 0.1, 0.1),
    ("wind_speed", "*"): _KindModel(1.5, 2.5, 0.05, 0.01),
    ("wind_speed", "main_airway"): _KindModel(3.0, 5.0, 0.05, 0.01),
    ("wind_speed", "fan_drift"): _KindModel(8.0, 10.0, 0.05, 0.01),
    **{(kind, "*"): _steady(1.0)  # running / live / air flowing
       for kind in ("local_fan", "main_fan", "feed", "air_duct")},
    **{(kind, "*"): _steady(0.0)  # closed / no smoke / not tripped
       for kind in ("air_door", "smoke", "power_off_relay")},
}

# Limit conditions a detector checks: (condition = Limits field, rule, release field, upper?).
_CONDITIONS = (
    ("alarm_high", "limit_alarm", "release_high", True),
    ("power_off", "limit_power_off", "restore", True),
    ("warning_high", "limit_alarm", "warning_high", True),
    ("alarm_low", "limit_alarm", "release_low", False),
)


@dataclass(frozen=True, slots=True)
class _Due:
    """The sensors due together at a tick, ordered by substation, and each substation's slice."""

    index: np.ndarray
    ids: list[str]
    messages: list[tuple[str, int, int]]  # (topic, first, stop) into index / ids


class _Feed:
    """The model's state for one run: per-sensor arrays, the schedule, the noise."""

    def __init__(self, mine: Mine, story: Scenario, start_ms: int, duration_s: float,
                 seed: int) -> None:
        sensors = mine.sensors
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive: {duration_s}")
        self.mine = mine
        self.start_ms = start_ms
        self.duration_ms = round(duration_s * 1000)
        n = len(sensors)
        models = [_model(mine, i) for i in range(n)]
        registry = Registry.build([mine])
        self.registry = registry
        self.sigma = np.array([m.sigma for m in models])
        self.resolution = np.array([m.resolution for m in models])
        self.rng = np.random.Generator(np.random.PCG64(seed))
        low = np.array([m.low for m in models])
        high = np.array([m.high for m in models])
        self.baseline = _inside_limits(self.rng.uniform(low, high), registry,
                                       (NOISE_BOUND + 1) * self.sigma + self.resolution)
        self.bound = NOISE_BOUND * self.sigma
        self.innovation = self.sigma * math.sqrt(1 - PHI**2)
        self.noise = np.clip(self.rng.standard_normal(n) * self.sigma, -self.bound, self.bound)
        self.period_ms = np.array([round(s.period_s * 1000) for s in sensors], dtype=np.int64)
        if n and self.period_ms.min() <= 0:
            bad = sensors[int(self.period_ms.argmin())]
            raise ValueError(f"sensor {bad.key}: period_s must be positive: {bad.period_s}")
        self.peak, self.delay_ms = _excursions(mine, story, self.period_ms)
        self.lifted = bool(np.isfinite(self.peak).any())
        self.knots_ms = np.array(story.shape) * self.duration_ms
        ranks = {sub.id: r for r, sub in enumerate(mine.substations)}
        self.rank = np.array([ranks.setdefault(s.substation, len(ranks)) for s in sensors])
        self.order = np.lexsort((np.arange(n), self.rank))
        self.periods = np.unique(self.period_ms)
        self.members = [self.period_ms == p for p in self.periods]
        self._due: dict[tuple[bool, ...], _Due] = {}

    def ticks(self) -> Iterator[tuple[int, _Due, np.ndarray]]:
        """(tick time, sensors due, their values) in time order."""
        offsets = np.unique(np.concatenate(
            [np.arange(0, self.duration_ms, p, dtype=np.int64) for p in self.periods]
            or [np.empty(0, np.int64)]))
        for offset in offsets.tolist():
            due = self._due_at(tuple(bool(offset % p == 0) for p in self.periods.tolist()))
            yield self.start_ms + offset, due, self._values(offset, due.index)

    def _due_at(self, key: tuple[bool, ...]) -> _Due:
        due = self._due.get(key)
        if due is None:
            member = np.logical_or.reduce(
                [m for m, on in zip(self.members, key, strict=True) if on])
            index = self.order[member[self.order]]
            cuts = [0, *(np.flatnonzero(np.diff(self.rank[index])) + 1).tolist(), len(index)]
            sensors = self.mine.sensors
            ids = [sensors[i].id for i in index.tolist()]
            messages = [(self._topic(sensors[int(index[a])].substation), a, b)
                        for a, b in pairwise(cuts)]
            due = self._due[key] = _Due(index, ids, messages)
        return due

    def _topic(self, substation: str) -> str:
        base = f"jinmei/{self.mine.id}/telemetry"
        return f"{base}/{substation}" if substation else base

    def _values(self, offset_ms: int, index: np.ndarray) -> np.ndarray:
        noise = PHI * self.noise[index] + self.innovation[index] * self.rng.standard_normal(
            len(index))
        noise = np.clip(noise, -self.bound[index], self.bound[index])
        self.noise[index] = noise
        value = self.baseline[index] + noise
        if self.lifted:
            peak = self.peak[index]
            lifted = np.isfinite(peak)
            envelope = np.interp(offset_ms - self.delay_ms[index][lifted], self.knots_ms,
                                 (0.0, 1.0, 1.0, 0.0))
            value[lifted] += envelope * (peak[lifted] - self.baseline[index][lifted])
        resolution = self.resolution[index]
        value = np.round(value / resolution) * resolution
        value = np.clip(value, self.registry.range_low[index], self.registry.range_high[index])
        return np.round(value, 6)  # 0.29, not 0.29000000000000004, on the wire


def _model(mine: Mine, i: int) -> _KindModel:
    sensor = mine.sensors[i]
    found = _MODELS.get((sensor.kind, sensor.location)) or _MODELS.get((sensor.kind, "*"))
    if found is None:
        raise ValueError(f"sensor {sensor.key}: the simulator has no model for kind "
                         f"{sensor.kind!r}; known kinds: "
                         f"{', '.join(sorted({k for k, _ in _MODELS}))}")
    return found


def _inside_limits(baseline: np.ndarray, registry: Registry, margin: np.ndarray) -> np.ndarray:
    """Move each baseline at least ``margin`` inside every limit of its sensor."""
    upper = np.fmin(np.fmin(registry.warning_high, registry.alarm_high), registry.power_off)
    below = np.fmin(baseline, upper - margin)  # fmin: an absent (NaN) limit leaves it alone
    return np.fmax(below, registry.alarm_low + margin)


def _excursions(mine: Mine, story: Scenario,
                period_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sensor: the scenario's peak value (NaN = not lifted) and its delay in ms."""
    peak = np.full(len(mine.sensors), np.nan)
    delay_ms = np.zeros(len(mine.sensors), dtype=np.int64)
    area: str | None = None
    for excursion in story.excursions:
        target = next((i for i, s in enumerate(mine.sensors)
                       if s.kind == excursion.kind and s.location == excursion.location
                       and area in (None, s.area)), None)
        if target is None and area is None:
            raise ValueError(f"scenario {story.name!r} needs a {excursion.kind} sensor at "
                             f"{excursion.location}; mine {mine.id!r} has none")
        if target is None:
            continue  # the area lacks this sensor: the plume passes unmeasured
        area = mine.sensors[target].area
        peak[target] = excursion.peak
        delay_ms[target] = excursion.delay_periods * period_ms[target]
    return peak, delay_ms


def generate(mine: Mine, scenario: str, *, start_ms: int, duration_s: float,
             seed: int = 0) -> Iterator[Message]:
    """The feed of ``mine`` under the named scenario, in time order (see the module docstring).

    Raises ``ValueError`` at once (not on first iteration) for an unknown scenario, a scenario
    the mine cannot play, a sensor kind without a model or a non-positive period or duration.
    """
    feed = _Feed(mine, get_scenario(scenario), start_ms, duration_s, seed)
    return _messages(feed)


def _messages(feed: _Feed) -> Iterator[Message]:
    for at_ms, due, values in feed.ticks():
        value = values.tolist()
        for topic, first, stop in due.messages:
            readings = list(zip(due.ids[first:stop], value[first:stop], repeat("ok")))
            yield Message(at_ms, topic, encode_telemetry(at_ms, readings), stop - first)


def truth(mine: Mine, scenario: str, *, start_ms: int, duration_s: float,
          seed: int = 0) -> list[dict[str, Any]]:
    """What the detectors must conclude from ``generate`` with the same arguments.

    One dict per limit episode (``fires: True``) and per limit condition of a sensor that must
    stay silent (``fires: False``, ``from_ms``/``to_ms`` spanning the feed); keys ``mine``,
    ``sensor``, ``rule``, ``condition``, ``fires``, ``from_ms``, ``to_ms``. Sensors without
    limits (switches, goaf O2) cannot raise a limit alert and are not listed.
    """
    feed = _Feed(mine, get_scenario(scenario), start_ms, duration_s, seed)
    sensor, ts, value = [], [], []
    for at_ms, due, values in feed.ticks():
        sensor.append(due.index)
        ts.append(np.full(len(due.index), at_ms, dtype=np.int64))
        value.append(values)
    by_sensor = np.argsort(np.concatenate(sensor), kind="stable")  # each sensor's series in time
    return _episodes(mine, feed.registry, np.concatenate(sensor)[by_sensor],
                     np.concatenate(ts)[by_sensor], np.concatenate(value)[by_sensor],
                     (start_ms, start_ms + feed.duration_ms))


def _episodes(mine: Mine, registry: Registry, sensor: np.ndarray, ts: np.ndarray,
              value: np.ndarray, span: tuple[int, int]) -> list[dict[str, Any]]:
    """Limit episodes of readings grouped by sensor, in time order within each sensor."""
    first = np.r_[True, sensor[1:] != sensor[:-1]] if len(sensor) else np.empty(0, bool)
    firing: list[tuple[int, int, dict[str, Any]]] = []
    silent: list[tuple[int, int, dict[str, Any]]] = []
    for order, (condition, rule, release_name, upper) in enumerate(_CONDITIONS):
        limit_of = getattr(registry, condition)
        release_of = getattr(registry, release_name)
        limit = limit_of[sensor]
        release = np.where(np.isnan(release_of[sensor]), limit, release_of[sensor])
        inclusive = registry.inclusive[sensor]
        past = _past(value, limit, inclusive, upper)
        back = ~_past(value, release, inclusive, upper)  # as detectors.limits: strict both ways
        # Hysteresis without a loop: the latest "past" or "back" reading decides the state;
        # each sensor's first reading starts it at "back" unless it is already past.
        step = np.where(past, 1, np.where(back | first, -1, 0))
        latest = np.maximum.accumulate(np.where(step != 0, np.arange(len(step)), 0))
        state = step[latest] == 1
        before = np.r_[False, state[:-1]] & ~first
        starts = np.flatnonzero(state & ~before)
        ends = np.flatnonzero(~state & before)
        following = np.searchsorted(ends, starts)
        for start, k in zip(starts.tolist(), following.tolist(), strict=True):
            s = int(sensor[start])
            end = int(ends[k]) if k < len(ends) and sensor[ends[k]] == s else None
            firing.append((int(ts[start]), s * len(_CONDITIONS) + order, {
                "mine": mine.id, "sensor": mine.sensors[s].id, "rule": rule,
                "condition": condition, "fires": True, "from_ms": int(ts[start]),
                "to_ms": None if end is None else int(ts[end])}))
        quiet = np.isfinite(limit_of)
        quiet[sensor[starts]] = False
        for s in np.flatnonzero(quiet).tolist():
            silent.append((0, s * len(_CONDITIONS) + order, {
                "mine": mine.id, "sensor": mine.sensors[s].id, "rule": rule,
                "condition": condition, "fires": False, "from_ms": span[0], "to_ms": span[1]}))
    return [entry for _, _, entry in sorted(firing, key=lambda e: e[:2])
            + sorted(silent, key=lambda e: e[:2])]


def _past(value: np.ndarray, limit: np.ndarray, inclusive: np.ndarray,
          upper: bool) -> np.ndarray:
    """Is each reading on the firing side of its limit (NaN limit: never)?"""
    if upper:
        return np.where(inclusive, value >= limit, value > limit)
    return np.where(inclusive, value <= limit, value < limit)
