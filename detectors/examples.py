"""A tiny longwall for the detectors' docstring examples: three points, readings by the second.

Exists for the ``Examples`` sections of the detector docstrings (run as doctests by
``tests/test_docstring_examples.py``), so that each example shows in a few lines what its
detector flags instead of building sensors field by field. Not used by the pipeline.

The longwall is working face 1101 of Qipanjing (棋盘井), substation S01: methane at the face
(``T1-1101``, index :data:`T1`) and in its return airway (``T2-1101``, :data:`T2`), 10 s
periods, and the feed sensor of the area's switchgear (``KD-1101``, :data:`KD`, 馈电: 1 = the
load side is live), 15 s. Their limits, units and measuring ranges are the statutory rows of
the shipped ``config/limits.toml`` (T1: alarm 1.0 %, power-off 1.5 %, restore 1.0 %; T2:
alarm, power-off and restore 1.0 %; AQ 1029-2019 甲烷传感器设置表), each with its source.

Times are seconds after :data:`START_MS` (epoch milliseconds): :func:`at` turns them into the
``now`` a detector expects, :func:`readings` builds a batch from (sensor index, seconds,
value) rows, and :func:`print_events` prints each event of a detection as one tuple.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from config.limits_table import LimitsTable, with_release_defaults
from config.loader import load_limits
from config.model import Registry, Sensor
from config.readings import ReadingBatch
from detectors.base import Detection

__all__ = ["KD", "START_MS", "T1", "T2", "at", "longwall", "print_events", "readings"]

START_MS = 1_800_000_000_000  # 2027-01-15 08:00 UTC: the examples' second 0
T1, T2, KD = 0, 1, 2  # registry indexes of the longwall's points
# (id, kind, location type, place, period in s) of each point, in index order.
_POINTS = (("T1-1101", "ch4", "longwall_face", "1101综采工作面", 10.0),
           ("T2-1101", "ch4", "longwall_return", "1101回风顺槽", 10.0),
           ("KD-1101", "feed", "switchgear", "1101工作面总馈电开关", 15.0))


def _point(table: LimitsTable, id_: str, kind: str, location: str, place: str,
           period_s: float) -> Sensor:
    """A point of area 1101 on substation S01, governed by its statutory limit row."""
    info = table.kinds[kind]
    return Sensor("qipanjing", id_, kind, info.unit, location, place, "1101", "S01", period_s,
                  info.range_low, info.range_high,
                  with_release_defaults(table.resolve(kind, location).limits))


def longwall() -> Registry:
    """A fresh registry of the three points (T1, T2, KD), limits read from the shipped table."""
    table = load_limits()
    return Registry.from_sensors([_point(table, *point) for point in _POINTS])


def at(seconds: float) -> int:
    """Epoch milliseconds of the examples' second ``seconds``."""
    return START_MS + round(seconds * 1000)


def readings(rows: Iterable[tuple[int, float, float]], status: int = 0) -> ReadingBatch:
    """One batch of (sensor index, seconds, value) rows, in that order, all with ``status``."""
    sensor, seconds, value = (np.array(column) for column in zip(*rows, strict=True))
    return ReadingBatch(sensor.astype(np.int32), START_MS + np.round(seconds * 1000).astype(
        np.int64), value.astype(np.float64), np.full(len(sensor), status, dtype=np.uint16))


def print_events(detection: Detection) -> None:
    """Print each event as (sensor id, condition, firing, severity, value), the value to the
    0.01 of a methane reading; prints nothing when nothing changed."""
    for e in detection.events:
        print((_POINTS[e.sensor][0], e.condition, e.firing, e.severity, round(e.value, 2)))
