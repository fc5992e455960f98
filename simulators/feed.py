"""Synthetic telemetry of one mine, deterministic for a seed: the feed a scenario tells.

:func:`generate` yields the feed as MQTT messages in time order: every configured sensor
reports at its own ``period_s`` from ``start_ms`` on, and at each tick every substation (分站)
with a sensor due sends one message on ``jinmei/<mine>/telemetry/<substation>`` (or
``jinmei/<mine>/telemetry`` for a sensor with no substation) in wire contract v1, whose ``ts``
is the tick time. Payloads are encoded by ``ingest.codec.encode_telemetry``, the contract's
own encoder; the same seed gives the same bytes.

A reading, vectorized over all sensors due at a tick (``simulators.model`` has the physics):
the modelled value (baseline × production cycle × area emission / airflow, carried downstream
with a transport delay) moved toward a scenario excursion's peak, plus the sensor's own AR(1)
noise (phi 0.9 per reading, bounded at ±4 σ), plus a fault's drift; quantised to the sensor's
resolution and clipped to its measuring range (except where the scenario goes past it), then
stuck or spiked by a fault. Baselines sit 5 σ + one resolution step inside every limit of the
sensor even at the model's extremes, so the ``normal`` scenario never crosses one.

The substation plays its part: a feed sensor (馈电) reads 0 while its area's power is cut — a
methane sensor at or over its power-off limit until it is back under the restore limit, or every
local fan of a heading stopped (风电闭锁), or such a methane sensor reporting a device fault
(故障闭锁) — unless the scenario says the interlock fails. Calibrating readings never cut
power. A kind with no model is refused with ``ValueError`` rather than invented.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise, repeat
from zoneinfo import ZoneInfo

import numpy as np

from config.model import Mine, Registry
from ingest.codec import encode_telemetry
from simulators import model
from simulators.scenarios import Excursion, Fault, Outage, Scenario, get_scenario

__all__ = ["Feed", "Message", "Tick", "generate"]

PHI = 0.9  # readings of a real gas sensor are strongly autocorrelated; white noise looks fabricated
NOISE_BOUND = 4.0  # in σ: with baselines 5 σ inside a limit, noise alone can never cross it
_NEVER = np.inf


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message of the feed; ``at_ms`` is the feed's clock and the payload's ``ts``."""

    at_ms: int
    topic: str
    payload: bytes
    readings: int = 0  # readings the payload carries (0 when unknown, e.g. a replayed payload)


@dataclass(frozen=True, slots=True)
class _Due:
    """The sensors due together at a tick, ordered by substation, and each substation's slice."""

    index: np.ndarray
    ids: list[str]
    messages: list[tuple[str, int, int]]  # (topic, first, stop) into index / ids


@dataclass(frozen=True, slots=True)
class Tick:
    """The readings of one tick: sensors due, values, which are calibrating, which report a
    device fault, which go unsent."""

    at_ms: int
    due: _Due
    value: np.ndarray
    calibrating: np.ndarray
    faulty: np.ndarray
    silent: np.ndarray


class Feed:
    """The model's state for one run of a scenario: per-sensor arrays, the schedule, the noise.

    Besides :meth:`ticks`, it exposes what the scenario did to which sensor (offsets in ms from
    ``start_ms``; ``inf`` = never) for the ground truth (``simulators.truth``).
    """

    def __init__(self, mine: Mine, scenario: Scenario, start_ms: int, duration_s: float,
                 seed: int) -> None:
        if not duration_s > 0:
            raise ValueError(f"duration_s must be positive: {duration_s}")
        sensors = mine.sensors
        n = len(sensors)
        self.mine, self.scenario, self.start_ms = mine, scenario, start_ms
        self.duration_ms = round(duration_s * 1000)
        self.registry = registry = Registry.build([mine])
        noise_seed, area_seed = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.Generator(np.random.PCG64(noise_seed))
        models = [_model(mine, i) for i in range(n)]
        self.sigma = np.array([m.sigma for m in models])
        self.resolution = np.array([m.resolution for m in models])
        self.period_ms = np.array([round(s.period_s * 1000) for s in sensors], dtype=np.int64)
        if n and self.period_ms.min() <= 0:
            bad = sensors[int(self.period_ms.argmin())]
            raise ValueError(f"sensor {bad.key}: period_s must be positive: {bad.period_s}")
        kinds = np.array([s.kind for s in sensors], dtype=object)
        self.gas = np.array([s.kind == "ch4" and s.location in model.EMITTING for s in sensors],
                            dtype=bool)
        self.wind = kinds == "wind_speed"
        self.fan = kinds == "local_fan"
        self.feed = kinds == "feed"
        self.guard = (kinds == "ch4") & np.isfinite(registry.power_off)
        areas = {a: k for k, a in enumerate(dict.fromkeys(s.area for s in sensors))}
        self.area = np.array([areas[s.area] for s in sensors], dtype=np.int64)
        self.areas = len(areas)
        # Baselines inside every limit even at the model's extremes (module docstring).
        rise = (1 + model.EMISSION_BOUND) / (1 - model.AIRFLOW_BOUND)
        fall = model.MAINTENANCE * (1 - model.EMISSION_BOUND) / (1 + model.AIRFLOW_BOUND)
        gain_up = np.where(self.gas, rise, np.where(self.wind, 1 + model.AIRFLOW_BOUND, 1.0))
        gain_down = np.where(self.gas, fall, np.where(self.wind, 1 - model.AIRFLOW_BOUND, 1.0))
        low = np.array([m.low for m in models])
        high = np.array([m.high for m in models])
        self.baseline = _inside_limits(self.rng.uniform(low, high), registry,
                                       (NOISE_BOUND + 1) * self.sigma + self.resolution,
                                       gain_up, gain_down)
        self.bound = NOISE_BOUND * self.sigma
        self.innovation = self.sigma * math.sqrt(1 - PHI**2)
        self.noise = np.clip(self.rng.standard_normal(n) * self.sigma, -self.bound, self.bound)
        # Air carries gas downstream: delay = distance / the area's mean air velocity.
        wind_sum = np.bincount(self.area[self.wind], self.baseline[self.wind], self.areas)
        wind_count = np.bincount(self.area[self.wind], minlength=self.areas)
        area_wind = np.where(wind_count > 0, wind_sum / np.maximum(wind_count, 1), 2.0)
        distance = np.array([model.DISTANCE_M.get(s.location, 0.0) for s in sensors])
        self.delay_ms = np.round(distance / area_wind[self.area] * 1000).astype(np.int64)
        area_rng = np.random.Generator(np.random.PCG64(area_seed))
        seconds = self.duration_ms // 1000 + 1
        self.emission = model.area_signal(area_rng, self.areas, seconds, "emission")
        self.airflow = model.area_signal(area_rng, self.areas, seconds, "airflow")
        start = datetime.fromtimestamp(start_ms / 1000, UTC)
        offset = ZoneInfo(mine.timezone).utcoffset(start) if mine.timezone else None
        self.local_ms = start_ms + (round(offset.total_seconds() * 1000) if offset else 0)
        self._apply(scenario)
        self.ceiling = np.where(self.peak > registry.range_high, _NEVER, registry.range_high)
        self.floor = np.where(np.isfinite(self.drift_from), -_NEVER, registry.range_low)
        self.frozen = np.full(n, np.nan)
        self.cut = np.zeros(n, dtype=bool)
        self.last = self.baseline.copy()  # the latest reading of each sensor (fans: running?)
        ranks = {sub.id: r for r, sub in enumerate(mine.substations)}
        self.rank = np.array([ranks.setdefault(s.substation, len(ranks)) for s in sensors])
        self.order = np.lexsort((np.arange(n), self.rank))
        self.periods = np.unique(self.period_ms)
        self.members = [self.period_ms == p for p in self.periods]
        self._due: dict[tuple[bool, ...], _Due] = {}
        self.refused = _refused(mine, scenario.malformed, self.start_ms, self.duration_ms,
                                int(self.periods.min()) if n else 1000)

    # ── what the scenario does, resolved to sensors ──────────────────────────────────────────
    def _apply(self, scenario: Scenario) -> None:
        n = len(self.mine.sensors)
        self.peak = np.full(n, np.nan)
        self.knots_ms = np.zeros((n, 4))
        self.calibration = np.zeros(n, dtype=bool)
        self.warns = np.zeros(n, dtype=bool)
        self.stuck_from = np.full(n, _NEVER)
        self.drift_from = np.full(n, _NEVER)
        self.drift_rate = np.zeros(n)  # per ms
        self.spike_at: list[list[tuple[float, float]]] = [[] for _ in range(n)]
        self.fault_from = np.full(n, _NEVER)  # device_fault: status fault over [from, to)
        self.fault_to = np.full(n, _NEVER)
        self.fault_value = np.zeros(n)
        self.silent_from = np.full(n, _NEVER)
        self.silent_to = np.full(n, _NEVER)
        self.lockout_fails = np.zeros(self.areas, dtype=bool)
        ms = self.duration_ms
        area: int | None = None
        rows: list[Excursion | Fault | Outage] = [*scenario.excursions, *scenario.faults,
                                                  *scenario.outages]
        for row in rows:
            match = np.flatnonzero([s.kind == row.kind and s.location == row.location
                                    for s in self.mine.sensors])
            if area is None and not len(match):
                raise ValueError(f"scenario {scenario.name!r} needs a {row.kind} sensor at "
                                 f"{row.location}; mine {self.mine.id!r} has none")
            area = int(self.area[match[0]]) if area is None else area
            match = match[self.area[match] == area]
            if not len(match):
                continue  # the area lacks this sensor: the change passes unmeasured
            if isinstance(row, Excursion):
                shape = np.array(row.shape or scenario.shape) * ms
                self.peak[match] = row.peak
                self.calibration[match] = row.calibrating
                self.warns[match] |= row.warns
                # standard gas is put on the sensor head: it is not carried downstream
                lag = 0 if row.calibrating else self.delay_ms[match]
                self.knots_ms[match] = shape[None, :] + np.reshape(lag, (-1, 1))
            elif isinstance(row, Fault):
                first = int(match[0])
                at = row.at * ms
                if row.condition == "stuck":
                    self.stuck_from[first] = at
                elif row.condition == "drift":
                    self.drift_from[first] = at
                    self.drift_rate[first] = row.value / max(ms - at, 1.0)
                elif row.condition == "device_fault":
                    self.fault_from[first], self.fault_to[first] = at, row.until * ms
                    self.fault_value[first] = row.value
                else:
                    self.spike_at[first].append((at, row.value))
            elif isinstance(row, Outage):
                substation = self.mine.sensors[int(match[0])].substation
                on = np.array([s.substation == substation for s in self.mine.sensors])
                self.silent_from[on] = row.at * ms
                self.silent_to[on] = row.until * ms
        if scenario.lockout_fails and area is not None:
            self.lockout_fails[area] = True
        self.spiked = np.array([bool(s) for s in self.spike_at])

    # ── the schedule ─────────────────────────────────────────────────────────────────────────
    def ticks(self) -> Iterator[Tick]:
        """Every tick of the feed in time order (see :class:`Tick`)."""
        offsets = np.unique(np.concatenate(
            [np.arange(0, self.duration_ms, p, dtype=np.int64) for p in self.periods]
            or [np.empty(0, np.int64)]))
        for offset in offsets.tolist():
            due = self._due_at(tuple(bool(offset % p == 0) for p in self.periods.tolist()))
            value, calibrating, faulty = self._values(offset, due.index)
            silent = ((offset >= self.silent_from[due.index])
                      & (offset < self.silent_to[due.index]))
            yield Tick(self.start_ms + offset, due, value, calibrating, faulty, silent)

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

    # ── the model ────────────────────────────────────────────────────────────────────────────
    def _values(self, offset_ms: int,
                index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values, calibrating and device-fault flags of the sensors ``index`` at ``offset_ms``."""
        noise = PHI * self.noise[index] + self.innovation[index] * self.rng.standard_normal(
            len(index))
        noise = np.clip(noise, -self.bound[index], self.bound[index])
        self.noise[index] = noise
        value = self._physical(offset_ms, index)
        peak = self.peak[index]
        lifted = np.isfinite(peak)
        calibrating = np.zeros(len(index), dtype=bool)
        if lifted.any():
            knots = self.knots_ms[index[lifted]]
            rise = (offset_ms - knots[:, 0]) / np.maximum(knots[:, 1] - knots[:, 0], 1.0)
            fall = (knots[:, 3] - offset_ms) / np.maximum(knots[:, 3] - knots[:, 2], 1.0)
            envelope = np.clip(np.minimum(rise, fall), 0.0, 1.0)
            value[lifted] += envelope * (peak[lifted] - value[lifted])
            calibrating[lifted] = (self.calibration[index[lifted]] & (offset_ms >= knots[:, 0])
                                   & (offset_ms < knots[:, 3]))
        value += noise + self.drift_rate[index] * np.maximum(offset_ms - self.drift_from[index],
                                                             0.0)
        resolution = self.resolution[index]
        value = np.round(value / resolution) * resolution
        value = np.clip(value, self.floor[index], self.ceiling[index])
        stuck = offset_ms >= self.stuck_from[index]
        if stuck.any():
            held = index[stuck]
            self.frozen[held] = np.where(np.isnan(self.frozen[held]), value[stuck],
                                         self.frozen[held])
            value[stuck] = self.frozen[held]
        for k in np.flatnonzero(self.spiked[index]).tolist():  # a handful of spiking sensors
            period = self.period_ms[index[k]]
            for at, spike in self.spike_at[int(index[k])]:
                if offset_ms - period < at <= offset_ms:
                    value[k] = spike
        faulty = (offset_ms >= self.fault_from[index]) & (offset_ms < self.fault_to[index])
        value = np.where(faulty, self.fault_value[index], value)
        self._substation(index, value, calibrating, faulty)
        # 0.29, not 0.29000000000000004, on the wire
        return np.round(value, 6), calibrating, faulty

    def _physical(self, offset_ms: int, index: np.ndarray) -> np.ndarray:
        """Baseline × production × emission / airflow (gas, delayed) or × airflow (wind)."""
        value = self.baseline[index].copy()
        gas, wind = self.gas[index], self.wind[index]
        if gas.any():
            at = offset_ms - self.delay_ms[index[gas]]
            second = np.clip(at // 1000, 0, self.emission.shape[1] - 1)
            area = self.area[index[gas]]
            value[gas] *= (model.production(self.local_ms + at)
                           * (1 + self.emission[area, second]) / (1 + self.airflow[area, second]))
        if wind.any():
            second = min(offset_ms // 1000, self.airflow.shape[1] - 1)
            value[wind] *= 1 + self.airflow[self.area[index[wind]], second]
        return value

    def _substation(self, index: np.ndarray, value: np.ndarray, calibrating: np.ndarray,
                    faulty: np.ndarray) -> None:
        """Track power-off state; a feed sensor reads 0 while its area's power is cut."""
        self.last[index] = value
        guard = self.guard[index] & ~calibrating
        if guard.any():
            g = index[guard]
            registry = self.registry
            # 故障闭锁: a faulty guard cannot be trusted, its area stays cut while it is faulty
            over = faulty[guard] | _past(value[guard], registry.power_off[g],
                                         registry.inclusive[g])
            back = ~_past(value[guard], registry.restore[g], registry.inclusive[g])
            self.cut[g] = over | (self.cut[g] & ~back)
        feed = self.feed[index]
        if feed.any():
            cut = np.bincount(self.area, self.cut, self.areas) > 0
            fans = np.bincount(self.area, self.fan, self.areas)
            running = np.bincount(self.area, self.fan & (self.last > 0.5), self.areas)
            cut |= (fans > 0) & (running == 0)  # 风电闭锁: no local fan running, no power
            area = self.area[index[feed]]
            value[feed] = np.where(cut[area] & ~self.lockout_fails[area], 0.0, value[feed])


def _model(mine: Mine, i: int) -> model.KindModel:
    sensor = mine.sensors[i]
    found = (model.KIND_MODELS.get((sensor.kind, sensor.location))
             or model.KIND_MODELS.get((sensor.kind, "*")))
    if found is None:
        raise ValueError(f"sensor {sensor.key}: the simulator has no model for kind "
                         f"{sensor.kind!r}; known kinds: "
                         f"{', '.join(sorted({k for k, _ in model.KIND_MODELS}))}")
    profile = model.PROFILES.get(mine.id, model.DEFAULT_PROFILE)
    if sensor.kind == "ch4":
        return model.KindModel(found.low * profile.ch4_scale, found.high * profile.ch4_scale,
                               found.sigma, found.resolution)
    if sensor.location == "goaf" and sensor.kind in ("co", "temperature"):
        low, high = profile.goaf_co if sensor.kind == "co" else profile.goaf_temperature
        return model.KindModel(low, high, found.sigma, found.resolution)
    return found


def _inside_limits(baseline: np.ndarray, registry: Registry, margin: np.ndarray,
                   gain_up: np.ndarray, gain_down: np.ndarray) -> np.ndarray:
    """Move each baseline so that, scaled by its gains, it stays ``margin`` inside its limits."""
    upper = np.fmin(np.fmin(registry.warning_high, registry.alarm_high), registry.power_off)
    below = np.fmin(baseline, (upper - margin) / gain_up)  # fmin: absent (NaN) limit: no change
    return np.fmax(below, (registry.alarm_low + margin) / gain_down)


def _past(value: np.ndarray, limit: np.ndarray, inclusive: np.ndarray) -> np.ndarray:
    """Is each reading at or over (``inclusive``) or strictly over its upper limit?"""
    return np.where(inclusive, value >= limit, value > limit)


def _refused(mine: Mine, count: int, start_ms: int, duration_ms: int,
             step_ms: int) -> dict[int, list[tuple[str, Message]]]:
    """``count`` payloads the ingestor must refuse, each with its reason, by feed time.

    They go out right after the regular messages of a tick, cycling through the reasons.
    """
    sensor = mine.sensors[0].id if mine.sensors else "T1-0000"
    topic = f"jinmei/{mine.id}/telemetry"
    out: dict[int, list[tuple[str, Message]]] = {}
    for k, fraction in enumerate(np.linspace(0.1, 0.9, count).tolist()):
        at = start_ms + int(fraction * duration_ms) // step_ms * step_ms

        def body(ts: int, reading: dict[str, object]) -> bytes:
            return json.dumps({"ts": ts, "readings": [reading]}, separators=(",", ":")).encode()

        reason, where, payload = [
            ("bad_json", topic, b'{"ts": %d, "readings": [' % at),
            ("bad_schema", topic, b'{"ts":%d,"values":[]}' % at),
            ("unknown_sensor", topic, encode_telemetry(at, [("X-9999", 0.5, "ok")])),
            ("unknown_mine", "jinmei/nowhere/telemetry",
             encode_telemetry(at, [(sensor, 0.3, "ok")])),
            ("bad_value", topic, body(at, {"sensor": sensor, "value": "0.31"})),
            ("non_finite", topic, b'{"ts":%d,"readings":[{"sensor":"%s","value":1e999}]}'
             % (at, sensor.encode())),
            ("bad_status", topic, body(at, {"sensor": sensor, "value": 0.3, "status": "broken"})),
            ("bad_timestamp", topic, body(at // 1000, {"sensor": sensor, "value": 0.3})),
        ][k % 8]
        out.setdefault(at, []).append((reason, Message(at, where, payload)))
    return out


def generate(mine: Mine, scenario: str, *, start_ms: int, duration_s: float | None = None,
             seed: int = 0) -> Iterator[Message]:
    """The feed of ``mine`` under the named scenario, in time order (module docstring).

    ``duration_s`` defaults to the scenario's own. Raises ``ValueError`` at once (not on first
    iteration) for an unknown scenario, a scenario the mine cannot play, a sensor kind without a
    model or a non-positive period or duration.
    """
    story = get_scenario(scenario)
    return _messages(Feed(mine, story, start_ms, duration_s or story.duration_s, seed))


def _messages(feed: Feed) -> Iterator[Message]:
    for tick in feed.ticks():
        due = tick.due
        value = tick.value.tolist()
        status = ([("fault" if f else "calibrating" if c else "ok")
                   for c, f in zip(tick.calibrating.tolist(), tick.faulty.tolist(), strict=True)]
                  if tick.calibrating.any() or tick.faulty.any() else None)
        silent = tick.silent.tolist()
        for topic, first, stop in due.messages:
            if silent[first]:  # the substation is down: nothing from any of its sensors
                continue
            statuses = repeat("ok") if status is None else status[first:stop]
            readings = list(zip(due.ids[first:stop], value[first:stop], statuses, strict=False))
            yield Message(tick.at_ms, topic, encode_telemetry(tick.at_ms, readings), stop - first)
        for _reason, message in feed.refused.get(tick.at_ms, ()):
            yield message
