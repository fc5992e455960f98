"""Readings as the whole pipeline passes them: column arrays indexed by the sensor registry.

A :class:`ReadingBatch` is what the codec produces, the detectors consume and the sinks
store. The ``status`` column is the networking status bitmask of domain.md §4 (MT/T 1201.1):
the device's own bits (calibration, over-range, sensor fault) set by the codec, and the
alarm / power-off bits that the detectors add.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

__all__ = ["ReadingBatch", "Status"]


class Status(IntFlag):
    """Point status bits as networked upward (domain.md §4, MT/T 1201.1-2023)."""

    NORMAL = 0
    ALARM = 1
    POWER_OFF = 2
    CALIBRATION = 4
    OVER_RANGE = 8
    SUBSTATION_FAULT = 16
    NOT_POLLED = 32
    SUSPENDED = 64
    SENSOR_FAULT = 128


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Readings in arrival order, one row per reading, as parallel arrays.

    sensor: int32 registry index · ts: int64 epoch milliseconds, UTC · value: float64 ·
    status: uint16 status bitmask (:class:`Status`).
    """

    sensor: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    status: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.sensor)
        if not (len(self.ts) == len(self.value) == len(self.status) == n):
            raise ValueError("ReadingBatch columns differ in length")

    def __len__(self) -> int:
        return len(self.sensor)

    @classmethod
    def empty(cls) -> ReadingBatch:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64),
                   np.empty(0, np.uint16))

    @classmethod
    def concat(cls, batches: list[ReadingBatch]) -> ReadingBatch:
        if not batches:
            return cls.empty()
        return cls(np.concatenate([b.sensor for b in batches]),
                   np.concatenate([b.ts for b in batches]),
                   np.concatenate([b.value for b in batches]),
                   np.concatenate([b.status for b in batches]))

    def with_status(self, status: np.ndarray) -> ReadingBatch:
        return ReadingBatch(self.sensor, self.ts, self.value, status.astype(np.uint16))
