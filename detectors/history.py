"""Per-sensor reading history: one preallocated numpy ring per sensor, sized from its period.

All rings live in two flat arrays (``ts`` int64 epoch ms, ``value`` float32) with a per-sensor
offset and capacity ``ceil(span_s / period_s) + 1`` — a 10 s methane point keeps 361 slots for
an hour, a 1 Hz point 3,601. Appending a batch and reading windows back are whole-array numpy
operations; there is no Python loop per reading or per sensor.

What goes in is the caller's choice (the trend detector keeps only clean, in-order readings);
a reading older than its sensor's newest one is never written (out of order: the ring stays
sorted by time). A batch bringing more readings for one sensor than its capacity keeps the
newest ones. Memory: 12 bytes a slot — 10,000 sensors × 1 h at 1 Hz is 432 MB.
"""

from __future__ import annotations

import numpy as np

from detectors.segments import Segments, running_max

__all__ = ["History"]


class History:
    """Rings of (ts, value) per sensor; see the module docstring."""

    def __init__(self, period_s: np.ndarray, span_s: float) -> None:
        self.period_ms = np.asarray(period_s, dtype=np.float64) * 1000.0
        self.capacity = (np.ceil(span_s * 1000.0 / self.period_ms).astype(np.int64) + 1)
        self.offset = np.zeros(len(self.capacity), dtype=np.int64)
        np.cumsum(self.capacity[:-1], out=self.offset[1:])
        total = int(self.capacity.sum())
        self.ts = np.zeros(total, dtype=np.int64)
        self.value = np.zeros(total, dtype=np.float32)
        self.count = np.zeros(len(self.capacity), dtype=np.int64)
        self.head = np.zeros(len(self.capacity), dtype=np.int64)  # next slot to write
        self.newest = np.zeros(len(self.capacity), dtype=np.int64)  # epoch ms; 0 = none yet

    def in_order(self, seg: Segments, ts: np.ndarray) -> np.ndarray:
        """Per sorted position: is the reading newer than every earlier one of its sensor
        (in the ring and before it in the batch)?"""
        previous = np.empty_like(ts)
        if len(ts):
            previous[1:] = running_max(ts, self.newest[seg.segment_sensor], seg)[:-1]
            previous[seg.starts] = self.newest[seg.segment_sensor]
        return ts > previous

    def append(self, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray) -> None:
        """Write readings given grouped by sensor in time order (as ``in_order`` keeps them)."""
        n = len(sensor)
        if n == 0:
            return
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(sensor[1:], sensor[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        added = np.diff(starts, append=n)
        who = sensor[starts]
        head, capacity = self.head[who], self.capacity[who]
        # Ring slot of each reading: head + its rank in the run, wrapped; per-run numbers are
        # repeated over the run instead of gathered per reading.
        slot = np.arange(n) + np.repeat(head - starts, added)
        slot %= np.repeat(capacity, added)
        slot += np.repeat(self.offset[who], added)
        self.ts[slot] = ts
        self.value[slot] = value
        self.head[who] = (head + added) % capacity
        self.count[who] = np.minimum(self.count[who] + added, capacity)
        self.newest[who] = ts[starts + added - 1]

    def pick(self, sensors: np.ndarray, skip_s: float, span_s: float,
             points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``points`` readings per sensor, evenly spread over the ``span_s`` before the
        newest reading minus ``skip_s``: (ts, value, valid), each ``len(sensors) × points``
        (ts int64 epoch ms, value float32 as stored).

        Spread is by position in the ring (readings come once a period); a reading outside the
        time span (after a gap) or beyond what the ring holds is marked invalid.
        """
        period = self.period_ms[sensors]
        count = self.count[sensors]
        cap = self.capacity[sensors]
        head = self.head[sensors]
        skip = np.ceil(skip_s * 1000.0 / period).astype(np.int64)
        span = np.ceil(span_s * 1000.0 / period).astype(np.int64)
        taken = np.minimum(span, np.clip(count - skip, 0, None))
        # Steps back from the newest: skip … skip + taken − 1, spread over `points` columns.
        # With readings to take that is below count ≤ capacity; without, the row is invalid
        # and its skip is capped so that its slots, too, stay inside the ring.
        fraction = np.linspace(1.0, 0.0, points)
        back = np.rint(np.multiply.outer(np.maximum(taken - 1, 0), fraction)).astype(np.int32)
        back += np.minimum(skip, cap - 1).astype(np.int32)[:, None]
        # slot = offset + (head − 1 − back) mod capacity, the modulo being one wrap at most.
        slot = (self.offset[sensors] + head - 1)[:, None] - back
        np.add(slot, cap[:, None], out=slot, where=back >= head[:, None])
        ts = self.ts[slot]
        value = self.value[slot]
        end = self.newest[sensors] - int(skip_s * 1000)
        # A row without readings to take gets an empty time span: nothing in it is valid.
        start = np.where(taken > 0, end - int(span_s * 1000), np.iinfo(np.int64).max)
        valid = (ts <= end[:, None]) & (ts > start[:, None])
        # Columns repeat when fewer readings than points: keep each slot once.
        valid[:, 1:] &= back[:, 1:] != back[:, :-1]
        return ts, value, valid
