"""Per-reading condition state over a batch, without a Python loop per reading.

The detectors that decide reading by reading (limits, sensor faults) share three steps:
regroup the batch by sensor keeping arrival order (:func:`segment`), carry each condition's
state forward from the last reading that decided it (:func:`hold`), and list where the state
changed (:func:`changes`). Only those changes ever become Python objects. The fill can be
kept to the few sensors whose state may change (:func:`within`); :func:`running_max` takes a
shortcut when each sensor's values rise (times in arrival order, the usual batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Segments", "changes", "hold", "running_max", "segment", "within"]


@dataclass(frozen=True, slots=True)
class Segments:
    """The rows of a batch stable-sorted by sensor: one segment (run) per sensor.

    ``order[p]`` is the batch row at sorted position ``p``; ``sensor[p]`` its sensor;
    segment ``k`` covers positions ``starts[k] … starts[k] + length[k] - 1`` of sensor
    ``segment_sensor[k]``; ``segment_start[p]`` is the start of the segment of position ``p``.
    """

    order: np.ndarray
    sensor: np.ndarray
    starts: np.ndarray
    length: np.ndarray
    segment_sensor: np.ndarray
    segment_start: np.ndarray

    @property
    def ends(self) -> np.ndarray:
        """Last position of each segment (each sensor's latest reading in the batch)."""
        return self.starts + self.length - 1


def segment(batch_sensor: np.ndarray, rows: np.ndarray | None = None) -> Segments:
    """Group ``rows`` of a batch (all rows when None) by sensor, arrival order kept within one."""
    # uint16 keys let numpy's stable sort use radix sort: O(n), several times faster.
    key_dtype = np.uint16 if len(batch_sensor) == 0 or batch_sensor.max() < 1 << 16 else np.int64
    if rows is None:
        order = np.argsort(batch_sensor.astype(key_dtype), kind="stable")
    else:
        order = rows[np.argsort(batch_sensor[rows].astype(key_dtype), kind="stable")]
    sensor = batch_sensor[order]
    n = len(order)
    starts_segment = np.empty(n, dtype=bool)
    starts_segment[:1] = True
    np.not_equal(sensor[1:], sensor[:-1], out=starts_segment[1:])
    starts = np.flatnonzero(starts_segment).astype(np.int32)
    length = np.diff(starts, append=np.int32(n))
    return Segments(order, sensor, starts, length, sensor[starts], np.repeat(starts, length))


def within(seg: Segments, segments: np.ndarray) -> tuple[Segments, np.ndarray]:
    """Only some segments of ``seg`` (indices, ascending): their :class:`Segments`, and the
    positions in ``seg`` that its positions come from. A detector runs its per-reading work on
    the few sensors whose state can change instead of the whole batch."""
    length = seg.length[segments]
    starts = np.zeros(len(segments), dtype=np.int32)
    np.cumsum(length[:-1], out=starts[1:])
    segment_start = np.repeat(starts, length)
    positions = (np.arange(len(segment_start), dtype=np.int32)
                 + np.repeat(seg.starts[segments] - starts, length))
    return Segments(seg.order[positions], seg.sensor[positions], starts, length,
                    seg.segment_sensor[segments], segment_start), positions


def hold(sets: np.ndarray, determinate: np.ndarray, carried: np.ndarray,
         seg: Segments) -> tuple[np.ndarray, np.ndarray]:
    """State after and before each reading, per channel (rows) and sorted position (columns).

    ``sets`` / ``determinate`` are per channel and position: the reading's verdict, and whether
    it decides anything at all (else the state holds). ``carried`` is each channel's state per
    segment from before the batch. The state after a reading is the last determinate verdict of
    its sensor so far, else the carried state: a segmented forward fill.
    """
    n = sets.shape[1]
    # key = 2·position + verdict (−1 where indeterminate): a running maximum finds the latest
    # determinate reading and its verdict at once.
    key = np.add(2 * np.arange(n, dtype=np.int32), sets, dtype=np.int32)
    key += 1
    key *= determinate
    key -= 1
    latest = np.maximum.accumulate(key, axis=1)
    state = np.bitwise_and(latest, 1).astype(bool)
    np.copyto(state, np.repeat(carried, seg.length, axis=1),
              where=latest < 2 * seg.segment_start)
    before = np.empty_like(state)
    before[:, 1:] = state[:, :-1]
    before[:, seg.starts] = carried
    return state, before


def changes(state: np.ndarray, before: np.ndarray,
            seg: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(channel, sorted position, batch row) of every state change, in arrival order of the
    readings and then channel order — the order one-by-one feeding would give."""
    channel, position = np.divmod(np.flatnonzero(state != before), state.shape[1])
    arrival = seg.order[position]
    by_arrival = np.lexsort((channel, arrival))
    return channel[by_arrival], position[by_arrival], arrival[by_arrival]


def running_max(values: np.ndarray, carried: np.ndarray, seg: Segments) -> np.ndarray:
    """Per sorted position: the maximum of ``carried`` (per segment, from before the batch) and
    of its sensor's ``values`` (int64) up to and including it."""
    if len(values) == 0:
        return values.copy()
    falls = np.flatnonzero(values[1:] < values[:-1]) + 1
    if (seg.segment_start[falls] == falls).all():
        # Rising within every segment (readings in time order, the usual batch): each value is
        # its segment's maximum so far.
        rising: np.ndarray = np.maximum(values, np.repeat(carried, seg.length))
        return rising
    start = np.maximum(values[seg.starts], carried)
    values = values.copy()
    values[seg.starts] = start
    # Lift each segment above all earlier ones, take one running maximum, then undo the lift.
    base = int(values.min())
    stride = int(values.max()) - base + 1
    lift = np.repeat(np.arange(len(seg.starts), dtype=np.int64) * stride, seg.length)
    result: np.ndarray = np.maximum.accumulate(values - base + lift) - lift + base
    return result
