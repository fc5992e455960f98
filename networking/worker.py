"""The service's networking thread: writes the data files on time and uploads them.

Readings arrive through :meth:`NetworkingWorker.observe` (called by the pipeline once a batch
is stored; vectorized: the last value of every sensor and the current 5-minute window's
readings). :meth:`tick` (about once a second, time passed in) writes CDDY and FZDY at start,
CDSS and FZSS every ``cdss_period_s`` (default 10 s), TJSJ at every 5-minute boundary of the
clock (readings binned by their own time; one arriving after its window closed is left out
of the statistics and counted in ``late``), YCBJ for every alert transition of the record not
yet sent and calibration runs (007) closed in the window; then drains the upload queue. A
substation is reachable while one of its sensors reported within 3 of its periods. YCBJ
extremes and means are not filled (UNSURE/TODO: they need readings beyond the 5-minute
window); a configuration change reaches the regulator through the CDDY written at the next
start (the service restarts on a configuration change).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np

from alerts.record import AlertRecord
from config.limits_table import KindInfo
from config.model import Deployment
from config.readings import ReadingBatch
from networking import files
from networking.format import DataFile
from networking.queue import UploadQueue
from networking.upload import Target, drain

__all__ = ["NetworkingWorker"]

log = logging.getLogger(__name__)
WINDOW_MS = 300_000  # TJSJ: 5-minute statistics


class NetworkingWorker:
    def __init__(self, deployment: Deployment, kinds: Mapping[str, KindInfo],
                 queue: UploadQueue, target: Target | None, record: AlertRecord | None,
                 clock: Callable[[], float]) -> None:
        self.deployment, self.kinds, self.queue = deployment, kinds, queue
        self.target, self.record, self.clock = target, record, clock
        self.config = deployment.networking
        registry = deployment.registry
        n = len(registry)
        self.last_ts = np.full(n, -1, np.int64)
        self.last_value = np.zeros(n)
        self.last_status = np.zeros(n, np.uint16)
        self._window: list[ReadingBatch] = []
        self._window_start: int | None = None
        self._next_cdss = 0.0
        self._started = False
        self.late = 0
        self._lock = threading.Lock()
        offset = 0
        self._slices = {}
        for mine in deployment.mines:
            self._slices[mine.id] = slice(offset, offset + len(mine.sensors))
            offset += len(mine.sensors)
        self._sensors = {(s.mine, s.id): s for s in registry.sensors}

    def observe(self, batch: ReadingBatch) -> None:
        """Take a stored batch: latest value per sensor and the window's readings."""
        if not len(batch):
            return
        order = np.lexsort((batch.ts, batch.sensor))
        s = batch.sensor[order]
        last = np.r_[s[1:] != s[:-1], True]
        idx, ts = s[last], batch.ts[order][last]
        with self._lock:
            newer = ts >= self.last_ts[idx]
            self.last_ts[idx[newer]] = ts[newer]
            self.last_value[idx[newer]] = batch.value[order][last][newer]
            self.last_status[idx[newer]] = batch.status[order][last][newer]
            self._window.append(batch)

    def _add(self, file: DataFile, now: float,
             sent: list[tuple[str, str, int]] | None = None) -> None:
        # Two files of one type and mine in one second would share a name: the later one
        # goes out a second later rather than not at all.
        while not self.queue.add(file, self.config.encoding, now, sent or []):
            file = replace(file, ts=file.ts + 1000)

    def tick(self, now: float) -> None:
        now_ms = int(now * 1000)
        system = self.config.system_code
        if not self._started:
            for mine in self.deployment.mines:
                self._add(files.cddy(mine, self.kinds, system, now_ms), now)
                self._add(files.fzdy(mine, system, now_ms), now)
            self._started = True
            self._window_start = now_ms - now_ms % WINDOW_MS
        if now >= self._next_cdss:
            self._next_cdss = now + self.config.cdss_period_s
            self._write_state(now, now_ms)
        assert self._window_start is not None
        if now_ms >= self._window_start + WINDOW_MS:
            self._write_statistics(now, now_ms)
        if self.record is not None:
            self._write_events(now, now_ms)
        if self.target is not None:
            drain(self.queue, self.target, now)

    def _write_state(self, now: float, now_ms: int) -> None:
        with self._lock:
            last_ts, value, status = (self.last_ts.copy(), self.last_value.copy(),
                                      self.last_status.copy())
        period_ms = self.deployment.registry.period_s * 1000 * 3
        alive = (last_ts >= 0) & (now_ms - last_ts <= period_ms)
        for mine in self.deployment.mines:
            part = self._slices[mine.id]
            self._add(files.cdss(mine, self.kinds, last_ts[part], value[part], status[part],
                                 now_ms), now)
            reachable = {s.substation: False for s in mine.sensors}
            for sensor, ok in zip(mine.sensors, alive[part].tolist(), strict=True):
                reachable[sensor.substation] |= ok
            self._add(files.fzss(mine, reachable, now_ms), now)

    def _write_statistics(self, now: float, now_ms: int) -> None:
        assert self._window_start is not None
        start, end = self._window_start, self._window_start + WINDOW_MS
        with self._lock:
            batch = ReadingBatch.concat(self._window)
            keep = batch.ts >= end
            self.late += int(np.count_nonzero(batch.ts < start))
            self._window = [ReadingBatch(batch.sensor[keep], batch.ts[keep], batch.value[keep],
                                         batch.status[keep])]
        for mine in self.deployment.mines:
            part = self._slices[mine.id]
            local = batch.sensor.astype(np.int64) - part.start
            inside = (local >= 0) & (local < len(mine.sensors))
            stats = files.window_statistics(len(mine.sensors), local[inside], batch.ts[inside],
                                            batch.value[inside], batch.status[inside], start, end)
            self._add(files.tjsj(mine, self.kinds, stats, now_ms), now)
            runs = files.calibration_runs(local[inside], batch.ts[inside], batch.status[inside])
            events = [files.AbnormalEvent(mine.sensors[i], files.CALIBRATION_EVENT, first, last)
                      for i, first, last in runs if start <= first < end]
            if events:
                self._add(files.ycbj(mine, self.kinds, events, now_ms), now)
        self._window_start = now_ms - now_ms % WINDOW_MS

    def _write_events(self, now: float, now_ms: int) -> None:
        assert self.record is not None
        transitions = self.record.history(since_ms=now_ms - 86_400_000)
        keys = [(a.id, a.state, a.ts) for a in transitions]
        sent = self.queue.sent(keys)
        new = [a for a, k in zip(transitions, keys, strict=True) if k not in sent]
        if not new:
            return
        acks = self.record.acknowledgements([a.id for a in new])
        for mine in self.deployment.mines:
            mine_new = [a for a in new if a.mine == mine.id]
            events = files.events_from_alerts(mine_new, self._sensors, acks)
            marks = [(a.id, a.state, a.ts) for a in mine_new]
            if events:
                self._add(files.ycbj(mine, self.kinds, events, now_ms), now, marks)
            elif marks:  # none of them is networked: remember that they were looked at
                self.queue.add_marks(marks)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick(self.clock())
            except Exception:  # the networking thread must never take the service down
                log.exception("networking tick failed; retrying in a second")
            stop.wait(1.0)
