"""The one small interface every detector has (ADTK / River style).

A detector keeps its state in numpy arrays indexed by the registry's sensor index and is fed
one :class:`~config.readings.ReadingBatch` at a time. ``update(batch, now)`` returns a
:class:`Detection`: the condition transitions it saw (each one an :class:`Event`) and the
status bits it adds to each reading (alarm 1, power-off 2). ``now`` is passed in, never read
from the clock, so a replay gives the same answer twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from config.readings import ReadingBatch

__all__ = ["ConditionRows", "Detection", "Detector", "Event"]


@dataclass(frozen=True, slots=True)
class Event:
    """One condition of one sensor starting (``firing``) or ending.

    ``rule`` is the alert contract's rule (``limit_alarm``, ``limit_power_off`` …);
    ``condition`` tells apart several conditions of one rule on one sensor (a wind-speed sensor
    can be too slow or too fast: ``alarm_low`` / ``alarm_high``). ``ts`` and ``value`` are the
    reading that caused the transition; ``limit`` the threshold it crossed. ``scope`` names
    what a grouped condition covers beyond its one (representative) sensor: the substation id
    of ``substation_silent``, the area of an interlock; empty otherwise. ``late``: the reading
    at ``ts`` was already older than the service clock by more than
    :data:`~detectors.suite.LATE_AFTER_MS` when it was judged (back-fill, a resend after an
    outage 断电续传, a replay of an old recording): the event is about the past. Set by
    :class:`~detectors.suite.DetectorSuite`, which knows ``now``; detectors leave it False.
    """

    sensor: int
    rule: str
    condition: str
    severity: str
    firing: bool
    ts: int
    value: float
    limit: float
    scope: str = ""
    late: bool = False


@dataclass(frozen=True, slots=True)
class Detection:
    """What one ``update`` found: transitions, and status bits per reading of the batch."""

    events: list[Event]
    status_bits: np.ndarray


class Detector(Protocol):
    """Flags conditions over a stream of reading batches; see the module docstring.

    ``conditions`` names every condition the detector can raise; names are unique across
    detectors, so a condition carried over a restart finds its detector again.
    """

    @property
    def conditions(self) -> tuple[str, ...]: ...  # read-only: a class constant satisfies it

    def update(self, batch: ReadingBatch, now: int) -> Detection: ...

    def active(self) -> list[tuple[int, str]]:
        """(sensor index, condition) of every condition currently firing."""
        ...

    def restore(self, active: list[tuple[int, str]]) -> None:
        """Mark these conditions as already firing (state carried over a restart)."""
        ...


class ConditionRows:
    """Detector state as one bool row per condition and one column per sensor (``_state``),
    with the protocol's ``active`` and ``restore`` over it. Subclasses set ``conditions`` and
    allocate ``_state`` as ``np.zeros((len(conditions), len(registry)), dtype=bool)``."""

    conditions: tuple[str, ...] = ()
    _state: np.ndarray

    def active(self) -> list[tuple[int, str]]:
        row, sensor = np.nonzero(self._state)
        return sorted((int(i), self.conditions[r])
                      for r, i in zip(row.tolist(), sensor.tolist(), strict=True))

    def restore(self, active: list[tuple[int, str]]) -> None:
        for sensor, condition in active:
            if condition not in self.conditions:
                raise ValueError(f"not a condition of {type(self).__name__}: {condition!r} "
                                 f"(one of {self.conditions})")
            self._state[self.conditions.index(condition), sensor] = True
