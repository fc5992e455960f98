"""Per-sensor reading history by time: one reading per time bin, whatever the sensor's cadence.

The windowed detectors read a few dozen points per window (``detectors.trend``), so the history
keeps the feed at that resolution and no finer. Time is cut into bins of ``bin_s`` (the trend
detector's ``trend_eval_s``, 10 s) on a grid of each sensor's own (``phase_ms``: sensors' bins
are staggered so their judging instants spread evenly over batches). A bin keeps the *first*
reading that falls in it (ts int64 epoch ms, value float32): a 10 s point keeps every reading, a
1 Hz or 2 s point one per 10 s — the same points for the same rise, whatever the cadence
(issue 11 item 6). The first, not the last or the mean, because that reading is the instant the
detectors judge the sensor at (:meth:`History.append` returns them): everything a judgement
reads is final once its reading has arrived, so any split of the same readings into batches
gives the same verdicts (event time, issue 18).

One ring of ``ceil(span_s / bin_s) + 1`` bins per sensor, the slot of bin ``k`` is
``k mod length``; appending a batch and reading windows back are whole-array numpy operations,
with no Python loop per reading or per sensor. Memory: 12 bytes a bin — one hour at 10 s bins
is 4.3 KB per sensor at 1 Hz, 10 s or any cadence (10,000 sensors: 43 MB; it was 12 bytes a
*reading*, 432 MB at 1 Hz).

Back-fill: a reading older than its sensor's newest one is never written. The bins it would
fill have been judged already (detectors/trend.py states the rule and why).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from detectors.segments import Segments, running_max

__all__ = ["History", "stable_phase"]


def stable_phase(keys: list[str]) -> np.ndarray:
    """A fraction in [0, 1) per key, from its CRC-32: spreads grids evenly over a bin, and a
    sensor keeps its grid whatever else the registry holds (a replay into another deployment,
    a sensor added to the configuration), so its instants and events stay the same."""
    return np.array([zlib.crc32(k.encode()) / 2**32 for k in keys], dtype=np.float64)


class History:
    """Rings of one (ts, value) per time bin per sensor; see the module docstring."""

    def __init__(self, phase_ms: np.ndarray, bin_s: float, span_s: float) -> None:
        self.bin_ms = max(int(bin_s * 1000), 1)
        self.phase_ms = np.asarray(phase_ms, dtype=np.int64) % self.bin_ms
        self.length = math.ceil(span_s * 1000 / self.bin_ms) + 1
        n = len(self.phase_ms)
        self.ts = np.zeros((n, self.length), dtype=np.int64)  # 0: an empty slot
        self.value = np.zeros((n, self.length), dtype=np.float32)
        self._ts_flat, self._value_flat = self.ts.ravel(), self.value.ravel()  # views
        self.newest = np.zeros(n, dtype=np.int64)  # newest reading taken, binned or not; 0: none

    def bin_of(self, sensors: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Bin index of each time ``ts`` on its sensor's grid."""
        return np.floor_divide(ts - self.phase_ms[sensors], self.bin_ms)

    def in_order(self, seg: Segments, ts: np.ndarray) -> np.ndarray:
        """Per sorted position: is the reading newer than every earlier one of its sensor
        (in the history and before it in the batch)?"""
        previous = np.empty_like(ts)
        if len(ts):
            previous[1:] = running_max(ts, self.newest[seg.segment_sensor], seg)[:-1]
            previous[seg.starts] = self.newest[seg.segment_sensor]
        return ts > previous

    def append(self, sensor: np.ndarray, ts: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Take readings given grouped by sensor in time order, each newer than its sensor's
        newest (as ``in_order`` keeps them); returns the positions of those that began a bin
        (the judging instants), grouped by sensor in time order."""
        n = len(sensor)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        k = self.bin_of(sensor, ts)
        first = np.empty(n, dtype=bool)
        first[0] = True
        np.not_equal(sensor[1:], sensor[:-1], out=first[1:])
        # The bin of a sensor's newest reading already holds its first reading.
        previous = np.empty_like(k)
        previous[1:] = k[:-1]
        held = self.newest[sensor[first]]
        previous[first] = np.where(held > 0, self.bin_of(sensor[first], held),
                                   np.iinfo(np.int64).min)
        began = np.flatnonzero(k != previous)
        rows, slots = sensor[began], k[began] % self.length
        self.ts[rows, slots] = ts[began]
        self.value[rows, slots] = value[began]
        last = np.empty(n, dtype=bool)
        last[-1] = True
        np.not_equal(sensor[1:], sensor[:-1], out=last[:-1])
        self.newest[sensor[last]] = ts[last]
        return began

    def pick(self, sensors: np.ndarray, end: np.ndarray, skip_s: float, span_s: float,
             points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to ``points`` held readings per row, evenly spread in time order over the
        ``span_s`` before ``end − skip_s`` (``end``: epoch ms per row): (ts, value, valid), each
        ``len(sensors) × points`` (or fewer columns when the span holds fewer bins).

        A column outside the time span (an empty bin, a gap, a slot already holding a newer
        bin) is invalid. The span plus ``skip_s`` must fit the ring (the caller sizes it).
        """
        hi = np.asarray(end, dtype=np.int64) - int(skip_s * 1000)
        lo = hi - int(span_s * 1000)
        bins = math.ceil(span_s * 1000 / self.bin_ms) + 1  # every bin that may hold (lo, hi]
        # Flat index of each bin's slot: one gather from the raveled rings, no 2-D fancy index.
        slot = (self.bin_of(sensors, hi) - (bins - 1)) % self.length
        flat = slot[:, None] + np.arange(bins)
        flat[flat >= self.length] -= self.length  # one wrap at most: bins <= length
        flat += (sensors * self.length)[:, None]
        ts = self._ts_flat[flat]
        valid = (ts > lo[:, None]) & (ts <= hi[:, None])
        if bins <= points:
            return ts, self._value_flat[flat], valid
        # Take `points` of the valid columns, evenly spread in time order. Where the valid
        # columns are one run (a feed at or faster than the bins: nearly every row) the r-th
        # is the run's start + r; rows with gaps (slower or irregular feeds) sort for theirs.
        held = valid.sum(axis=1)
        first = valid.argmax(axis=1)
        last = bins - 1 - valid[:, ::-1].argmax(axis=1)
        rank = np.rint(np.multiply.outer(np.maximum(held - 1, 0),
                                         np.linspace(0.0, 1.0, points))).astype(np.int64)
        column = first[:, None] + rank
        gaps = np.flatnonzero((held > 0) & (last - first + 1 != held))
        if gaps.size:
            order = np.argsort(~valid[gaps], axis=1, kind="stable")
            column[gaps] = np.take_along_axis(order, rank[gaps], axis=1)
        chosen_flat = np.take_along_axis(flat, column, axis=1)
        chosen = np.take_along_axis(valid, column, axis=1)
        # Columns repeat when fewer readings than points: keep each once.
        chosen[:, 1:] &= rank[:, 1:] != rank[:, :-1]
        return self._ts_flat[chosen_flat], self._value_flat[chosen_flat], chosen
