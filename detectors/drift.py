"""Sensor drift (``sensor_fault`` / ``drift``, 传感器漂移): a sensor that creeps away on its own.

What a field engineer means by drift, and what this detector therefore flags: a sensor whose
reading moves slowly and steadily *on its own* while the other sensors on the same air path do
not follow. Real gas travels with the air: a rise at the working face shows up at the upper
corner and in the return airway too (later, and diluted), so the whole air path moves together
and that is never drift. A catalytic element that ages, is poisoned or lost its calibration
(domain.md §4: "expired calibration", negative drift 负漂) moves alone.

Air path (neighbours): the sensors of one mine, one ``area`` (working face or heading) and one
kind at the air-path locations :data:`AIR_PATH` — face, shearer, upper corner and return airway
of a longwall; face and return of a heading (the pairing ``detectors.trend`` uses for its
face/return check, widened to the whole path). Intakes carry fresh air the face has not yet
given gas to, so they are not neighbours. A sensor without a neighbour cannot be judged and
never fires (a main return, a chamber, a lone intake); neither can a kind with no drift amount.

How it decides, per sensor, once per bin of ``drift_window_s / 12`` (7.5 min of the default
90 min window) — at the bin's first reading, on the 12 complete bins before it, every bin a
batch begins judged in turn (event time: any split of a time-ordered feed into batches gives the
same events; the event's ``ts`` is that first reading):

- Its clean readings (calibrating 标校, faulty and over-range readings never enter; a reading
  below the range does — that is the negative drift itself) are averaged per bin; bins share
  one grid per air path, so neighbours' bins line up. State is a ring of 24 bin sums per
  watched sensor: no reading history, under 1 KB a sensor whatever its cadence.
- Over the last 12 complete bins, each sensor's own change is the Theil–Sen slope × the span
  of its bins. A neighbour is *steady* when it changed by at most half the kind's drift amount.
- The reference is the median, bin by bin, of the steady neighbours; the *deviation* is the
  sensor minus that reference. ``drift`` fires when the deviation's Theil–Sen line moved by at
  least the kind's amount (``drift_by_kind``, default ch4 0.2 %) over the window, standing out
  of its residuals by 4 robust σ (a steady creep, not wander), with at least 6 bins (half the
  window) of the sensor and of its reference — and the sensor itself moved that way by three
  quarters of the amount (not its reference away from it), and no neighbour followed (moved
  the same way by a third of the deviation's move: gas arrives diluted, not cut to a third).
  No steady neighbour (the whole path is moving, or every neighbour is itself drifting): not
  judged, the state holds.
- It clears when the deviation is back within half the amount of where it stood when the
  drift started (the line's start then: a recalibrated sensor clears at its next judgement). A
  condition carried over a restart has no such anchor: it clears once a whole window shows
  the deviation moving less than half the amount.

Why these numbers: jinmei's own, no statute, configurable. For scale, copies of the catalytic
methane sensor standard (AQ 6203) cite a basic error of ±0.10 % CH4 in 0–1.00 % (not in
domain.md, not verified here): 0.2 % is twice that, and a creep of 0.2 % towards or away from
the 1.0 % alarm limit is what a dispatcher must not miss. 90 min: three times the production
cycle's half-hour ramps (which move the whole path and leave no steady neighbour) and far
beyond the area's gas swings (minutes); a 60 min window saw the ``sensor-drift`` scenario's
return sensor (0.35 % in 96 min) cross 0.2 % only in some seeds before the 08:00 shift ramp.
Measured on the labelled scenarios (``bench/evaluate_scenarios.py``): 4/4 drifts found, no
false ``drift`` in any scenario; over seeds 0–9 of ``sensor-drift`` and ``emission-increase``,
40/40 found and one false ``drift`` (a face whose corner and return followed it by only a
quarter, seed 7).

Severity ``warning``: a suspicion that asks for calibration (标校), not a proven fault. It is not
故障闭锁-critical because the sensor still reports and still responds to gas; its limit
alarms stay in force (fail-safe: nothing here suppresses them), and a neighbour on the same air
path — the steady one it was judged against — still guards the area. A negative drift past the
range's bottom also raises ``out_of_range``. A lone real gas source (gas trapped at the upper
corner, rising slowly there only) looks the same as an upward drift; the warning then still
sends someone to look, which is right. No status bits are added; ``now`` is not used (every
decision is on the readings' own times).

Back-fill (readings older than the sensor's newest, a resend after an outage 断电续传): they
are added to their bin while the ring still holds it (a bin's mean does not depend on the order
its readings came in), so later judgements see them; a bin already judged is not judged again.
A batch carrying more than 10 bins (75 min) of one feed has its earliest bins judged on what
the ring still holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import ConditionRows, Detection, Event
from detectors.history import stable_phase
from detectors.robust import robust_median, theil_sen

__all__ = ["AIR_PATH", "CONDITIONS", "DriftDetector"]

CONDITIONS = ("drift",)
# Locations along one area's air path: face (and its shearer) → upper corner → return.
AIR_PATH = frozenset({"longwall_face", "shearer", "longwall_upper_corner", "longwall_return",
                      "heading_face", "heading_return"})
_BINS = 12  # complete bins per window: 66 pairwise slopes each
# Plus the bin being filled, one a neighbour may already have begun, and 10 more (75 min) so
# that a batch carrying that much of a feed is still judged bin by bin (event time).
_RING = _BINS + 12
_MIN_BINS = _BINS // 2
_STEADY = 0.5  # of the drift amount: a neighbour that changed less is steady
_FOLLOW = 1 / 3  # of the sensor's move: a neighbour moving the same way by more followed it
_OWN = 0.75  # of the drift amount: the sensor itself moved this far, the same way
_CLEAR = 0.5  # of the drift amount: back within this of where it stood, the drift is over
_SIGMAS = 4.0  # the move must stand this far out of the residuals' robust σ
_DEVICE_BITS = np.uint16(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT)


@dataclass(frozen=True, slots=True)
class _Line:
    """A Theil–Sen line through each row of bin levels (bins as the time unit)."""

    moved: np.ndarray  # slope × span of the valid bins: the change over the window
    end: np.ndarray  # the line's value at the newest complete bin
    judged: np.ndarray  # enough bins, and the move stands out of the residuals


def _line(level: np.ndarray) -> _Line:
    """Theil–Sen over the rows of ``level`` (NaN: no bin), vectorized over rows."""
    valid = ~np.isnan(level)
    at = np.broadcast_to(np.arange(_BINS, dtype=np.float32), level.shape)
    line = theil_sen(level, at, valid)
    first = np.where(valid, at, np.inf).min(axis=1)
    last = np.where(valid, at, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore"):
        moved = line.slope * (last - first)
        judged = (line.points >= _MIN_BINS) & (np.abs(moved) >= _SIGMAS * line.noise)
    return _Line(np.where(line.points >= _MIN_BINS, moved, np.nan),
                 line.intercept + line.slope * (_BINS - 1), judged)


class DriftDetector(ConditionRows):
    """Flag a sensor creeping away from its air path; see the module docstring.

    Parameters
    ----------
    registry : Registry
        Sensors: kind, mine, area and location make the air paths.
    config : DetectorConfig
        ``drift_window_s`` (5400 s: 12 bins of 450 s) and ``drift_by_kind`` (amount per kind,
        in its unit; kinds not named are never judged).

    Notes
    -----
    Cost per batch: a division and a few gathers per reading and two ``add.at`` into the
    batch's slots of the rings (nothing over the other sensors); once per bin per air path, 66
    pairwise slopes for each sensor (as a neighbour, as itself) and for its deviation, and a
    few small sorts. Memory: 24 bins × 32 bytes per watched sensor.

    Examples
    --------
    The return airway's methane (T2) creeps up 0.003 % a minute while the working face (T1), on
    the same air path, holds 0.5 %: after 80 minutes T2 has moved 0.2 % away from it — drift:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import T1, T2, at, longwall, print_events, readings
    >>> drift = DriftDetector(longwall(), DetectorConfig())
    >>> for minute in range(0, 90, 10):  # a batch of ten minutes, one reading every 10 s
    ...     rows = [(i, t, v) for t in range(60 * minute, 60 * minute + 600, 10)
    ...             for i, v in ((T1, 0.5), (T2, 0.3 + 0.003 * t / 60))]
    ...     print_events(drift.update(readings(rows), at(60 * minute + 590)))
    ('T2-1101', 'drift', True, 'warning', 0.2)
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, config: DetectorConfig) -> None:
        self.registry = registry
        n = len(registry)
        amounts = dict(config.drift_by_kind)
        self._amount = np.array([amounts.get(s.kind, np.nan) for s in registry.sensors])
        paths: dict[tuple[str, str, str], list[int]] = {}
        for i, s in enumerate(registry.sensors):
            if s.location in AIR_PATH and s.kind in amounts:
                paths.setdefault((s.mine, s.area, s.kind), []).append(i)
        paths = {key: members for key, members in paths.items() if len(members) > 1}
        width = max((len(m) - 1 for m in paths.values()), default=0)
        # Neighbours of each sensor (−1 pads the row); a sensor without any is not watched.
        self._neighbours = np.full((n, width), -1, dtype=np.int64)
        self._row = np.full(n, -1, dtype=np.int64)  # ring row of each watched sensor
        self._bin_ms = max(int(config.drift_window_s * 1000 / _BINS), 1)
        self._phase = np.zeros(n, dtype=np.int64)
        phases = stable_phase(["/".join(key) for key in paths])
        for phase, members in zip(phases.tolist(), paths.values(), strict=True):
            for k, i in enumerate(members):
                self._neighbours[i, :len(members) - 1] = members[:k] + members[k + 1:]
            self._phase[members] = int(phase * self._bin_ms)
        watched = np.flatnonzero(self._neighbours[:, 0] >= 0) if width else np.zeros(0, int)
        self._row[watched] = np.arange(len(watched))
        self._base = np.where(self._row >= 0, self._row * _RING, -1)  # first slot of its ring
        rows = len(watched) * _RING
        self._sum = np.zeros(rows)
        self._count = np.zeros(rows)
        self._bin = np.full(rows, -1, dtype=np.int64)  # which bin each slot holds
        self._first = np.zeros(rows, dtype=np.int64)  # its first reading: the judging instant
        self._judged_bin = np.full(n, -1, dtype=np.int64)  # the newest bin when last judged
        self._anchor = np.full(n, np.nan)  # the deviation when the drift started
        self._state = np.zeros((len(CONDITIONS), n), dtype=bool)

    def __repr__(self) -> str:
        return (f"DriftDetector(sensors={len(self.registry)}, "
                f"watched={int((self._row >= 0).sum())}, active={int(self._state.sum())})")

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        bits = np.zeros(len(batch), dtype=np.uint16)
        base = self._base[batch.sensor]
        take = (base >= 0) & ((batch.status & _DEVICE_BITS) == 0)
        sensor, ts, value = batch.sensor, batch.ts, batch.value
        if not take.all():  # gathers are dear: only when some reading stays out
            if not take.any():
                return Detection([], bits)
            sensor, ts, value, base = sensor[take], ts[take], value[take], base[take]
        bin_ = (ts - self._phase[sensor]) // self._bin_ms
        slot = base + bin_ % _RING
        # A slot holding an older bin starts afresh; a reading older than its slot's bin is
        # too late for the ring (out of order by more than the ring holds).
        newer = bin_ > self._bin[slot]
        if newer.any():
            np.maximum.at(self._bin, slot[newer], bin_[newer])
            self._sum[slot[newer]] = 0.0
            self._count[slot[newer]] = 0.0
            self._first[slot[newer]] = np.iinfo(np.int64).max
        keep = bin_ == self._bin[slot]
        # Into the batch's slots only, reading by reading in arrival order: the cost follows the
        # batch, not the registry, and a bin's sum is the same however its readings were split.
        np.add.at(self._sum, slot[keep], value[keep])
        np.add.at(self._count, slot[keep], 1.0)
        np.minimum.at(self._first, slot[keep], ts[keep])
        if not newer.any():
            return Detection([], bits)  # no bin began: nothing new to judge
        # Every bin begun since a sensor was last judged is judged, oldest first, as if its
        # readings had come alone: bin b on the 12 complete bins before it.
        begun = np.unique(sensor[newer])
        slots = self._row[begun][:, None] * _RING + np.arange(_RING)
        held = self._bin[slots]
        pending = np.sort(np.where(held > self._judged_bin[begun][:, None], held,
                                   np.iinfo(np.int64).max), axis=1)
        rounds = (pending < np.iinfo(np.int64).max).sum(axis=1)
        events = []
        for j in range(int(rounds.max())):  # one round per bin: one in live operation
            due = rounds > j
            events += self._judge(begun[due], pending[due, j])
        return Detection(events, bits)

    def _levels(self, sensors: np.ndarray, newest: np.ndarray) -> np.ndarray:
        """Mean of each sensor's readings in the 12 complete bins before ``newest`` (NaN: none)."""
        bins = newest[:, None] - _BINS + np.arange(_BINS)
        slots = self._row[sensors][:, None] * _RING + bins % _RING
        held = (self._bin[slots] == bins) & (self._count[slots] > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(held, self._sum[slots] / self._count[slots], np.nan)

    def _judge(self, due: np.ndarray, newest: np.ndarray) -> list[Event]:
        """Judge each sensor of ``due`` at its bin ``newest`` (the 12 bins before it)."""
        self._judged_bin[due] = newest
        neighbours = self._neighbours[due]
        amount = self._amount[due]
        # Each neighbour over the same 12 bins as the sensor judged; one air path shares one
        # grid, so a neighbour's line is worked out once however many sensors it neighbours.
        present = neighbours >= 0
        n = len(self.registry)
        key = (np.broadcast_to(newest[:, None], neighbours.shape) * n + neighbours)[present]
        unique, inverse = np.unique(key, return_inverse=True)
        around = self._levels(unique % n, unique // n)
        changed = np.full(neighbours.shape, np.nan)
        changed[present] = _line(around).moved[inverse]
        with np.errstate(invalid="ignore"):
            steady = np.abs(changed) <= _STEADY * amount[:, None]  # NaN (absent): not steady
        # The steady neighbours' median, bin by bin: (sensor, bin) rows × neighbour columns.
        levels = np.full((*neighbours.shape, _BINS), np.nan)
        levels[present] = around[inverse]
        levels[~steady] = np.nan
        by_bin = levels.transpose(0, 2, 1).reshape(-1, neighbours.shape[1])
        reference = robust_median(by_bin, ~np.isnan(by_bin)).reshape(len(due), _BINS)
        own = self._levels(due, newest)
        deviation = _line(own - reference)
        alone = np.sign(deviation.moved) * _line(own).moved >= _OWN * amount
        judged = steady.any(axis=1) & ~np.isnan(deviation.moved)
        with np.errstate(invalid="ignore"):
            # A neighbour that moved the same way by a third of the move followed: that is the
            # air (it brings gas diluted, not cut to a third).
            followed = (np.sign(deviation.moved)[:, None] * changed
                        > _FOLLOW * np.abs(deviation.moved)[:, None]).any(axis=1)
            sets = (judged & deviation.judged & ~followed & alone
                    & (np.abs(deviation.moved) >= amount))
            offset = np.where(np.isnan(self._anchor[due]), deviation.moved,
                              deviation.end - self._anchor[due])
            clears = judged & (np.abs(offset) < _CLEAR * amount)
        before = self._state[0, due]
        after = (before | sets) & ~(clears & ~sets)
        self._state[0, due] = after
        started = after & ~before
        self._anchor[due[started]] = (deviation.end - deviation.moved)[started]
        self._anchor[due[before & ~after]] = np.nan
        events = []
        for k in np.flatnonzero(after != before).tolist():  # the few transitions only
            i, firing = int(due[k]), bool(after[k])
            events.append(Event(i, "sensor_fault", "drift", "warning", firing,
                                int(self._first[self._base[i] + newest[k] % _RING]),
                                float(deviation.moved[k] if firing else offset[k]),
                                float(amount[k] if firing else _CLEAR * amount[k])))
        return events
