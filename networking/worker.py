"""The service's networking thread: writes the data files on time and uploads them.

Readings arrive through :meth:`NetworkingWorker.observe` (called by the pipeline once a batch
is stored; vectorized: the last value of every sensor, the current 5-minute window's readings,
and the measured readings of sensors with an open YCBJ event for its extremes —
:mod:`networking.extremes`). :meth:`tick` (about once a second, time passed in) writes, at
start, CDDY and FZDY when the configuration differs from the one of the last definitions sent
(``Deployment.config_hash`` remembered in the queue; a service restarts on a configuration
change, so every change is sent and a plain restart sends nothing; no hash known: always
sent); CDSS and FZSS every ``cdss_period_s`` (default 10 s); YCBJ for every alert transition
of the record not yet sent — an opening event starts its extremes from the window's readings
since its start (a start before the current 5-minute window, e.g. a trend's, leaves the earlier
readings out: UNSURE edge), a closing one carries its max, min (with their times) and mean
(empty for an event opened before this state existed) — and, should a cause and action be
entered after that (the console), the closing record again with them (same key; the extremes
it was closed with are remembered in the queue); TJSJ at
every 5-minute boundary of the clock (readings binned by their own time; one arriving after
its window closed is left out of the statistics and counted in ``late``) and calibration runs
(007) closed in the window; then persists the events' extremes and drains the upload queue.
A substation is reachable while one of its sensors reported within 3 of its periods.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from alerts.record import AlertRecord
from config.limits_table import KindInfo
from config.model import Deployment
from config.readings import ReadingBatch
from networking import files
from networking.extremes import EventExtremes
from networking.format import DataFile
from networking.queue import UploadQueue
from networking.upload import Target, drain

__all__ = ["NetworkingWorker", "queue_definitions"]

log = logging.getLogger(__name__)
WINDOW_MS = 300_000  # TJSJ: 5-minute statistics
CONFIG_HASH = "config_hash"  # remembered in the queue: the configuration of the last CDDY
CAUSES_SEEN = "causes_seen_at"  # remembered: the entry time of the last cause looked at


def _queue(queue: UploadQueue, file: DataFile, encoding: str, now: float,
           sent: Sequence[tuple[str, str, int]] = ()) -> DataFile:
    # Two files of one type and mine in one second would share a name: the later one
    # goes out a second later rather than not at all.
    while not queue.add(file, encoding, now, sent):
        file = replace(file, ts=file.ts + 1000)
    return file


def queue_definitions(deployment: Deployment, kinds: Mapping[str, KindInfo],
                      queue: UploadQueue, now: float) -> list[DataFile]:
    """Queue every mine's point and substation definitions (CDDY, FZDY) and remember the
    configuration they describe."""
    config, now_ms = deployment.networking, int(now * 1000)
    written = [_queue(queue, file, config.encoding, now)
               for mine in deployment.mines
               for file in (files.cddy(mine, kinds, config.system_code, now_ms),
                            files.fzdy(mine, config.system_code, now_ms))]
    if deployment.config_hash:
        queue.remember(CONFIG_HASH, deployment.config_hash)
    return written


class NetworkingWorker:
    def __init__(self, deployment: Deployment, kinds: Mapping[str, KindInfo],
                 queue: UploadQueue, target: Target | None, record: AlertRecord | None,
                 clock: Callable[[], float],
                 active: Callable[[float], bool] | None = None) -> None:
        """``active(now)``: whether this instance does the networking now (the lease of
        active-active instances, ``ingest.lease``); None: always."""
        self.deployment, self.kinds, self.queue = deployment, kinds, queue
        self.active = active
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
        # Monotonic time by which the loop turns again (read by the service's supervisor).
        self.heartbeat = time.monotonic()
        offset = 0
        self._slices = {}
        for mine in deployment.mines:
            self._slices[mine.id] = slice(offset, offset + len(mine.sensors))
            offset += len(mine.sensors)
        self._sensors = {(s.mine, s.id): s for s in registry.sensors}
        self.extremes = EventExtremes(queue.directory, [s.key for s in registry.sensors])
        self._watched = self.extremes.watched()

    def observe(self, batch: ReadingBatch) -> None:
        """Take a stored batch: latest value per sensor, the window's readings, and the
        measured readings of sensors with an open event (for its extremes)."""
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
            events = self._watched[batch.sensor] & files.measured(batch.status)
            if events.any():
                self.extremes.observe(batch.sensor[events], batch.ts[events],
                                      batch.value[events])

    def _add(self, file: DataFile, now: float, sent: Sequence[tuple[str, str, int]] = ()
             ) -> None:
        _queue(self.queue, file, self.config.encoding, now, sent)

    def tick(self, now: float) -> None:
        now_ms = int(now * 1000)
        if not self._started:
            known = self.queue.recall(CONFIG_HASH)
            if not self.deployment.config_hash or known != self.deployment.config_hash:
                queue_definitions(self.deployment, self.kinds, self.queue, now)
                log.info("networking: definitions (CDDY, FZDY) queued for configuration %s",
                         self.deployment.config_hash or "(no hash)")
            self._started = True
            self._window_start = now_ms - now_ms % WINDOW_MS
        if now >= self._next_cdss:
            self._next_cdss = now + self.config.cdss_period_s
            self._write_state(now, now_ms)
        if self.record is not None:  # before the window rolls: an opening event takes its readings
            self._write_events(now, now_ms)
            self._write_late_causes(now, now_ms)
        assert self._window_start is not None
        if now_ms >= self._window_start + WINDOW_MS:
            self._write_statistics(now, now_ms)
        self.extremes.flush(now_ms)
        if self.target is not None:
            drain(self.queue, self.target, now, self._beat)

    def _beat(self) -> None:
        self.heartbeat = time.monotonic()  # an upload is bounded by its timeout

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
        causes = self.record.causes([a.id for a in new])
        for mine in self.deployment.mines:
            mine_new = [a for a in new if a.mine == mine.id]
            events = [self._with_extremes(e) for e in
                      files.events_from_alerts(mine_new, self._sensors, acks, causes)]
            marks = [(a.id, a.state, a.ts) for a in mine_new]
            if events:
                self._add(files.ycbj(mine, self.kinds, events, now_ms), now, marks)
            elif marks:  # none of them is networked: remember that they were looked at
                self.queue.add_marks(marks)

    def _write_late_causes(self, now: float, now_ms: int) -> None:
        """Send the closing record again for a cause and action entered after the event's
        closing record went out (the console's history; the same key, so the regulator's
        record is completed), with the extremes it was closed with."""
        assert self.record is not None
        seen = int(self.queue.recall(CAUSES_SEEN) or 0)
        entered = self.record.causes_entered_after(seen)
        if not entered:
            return
        episodes = list(dict.fromkeys(episode for episode, _ in entered))
        causes = self.record.causes(episodes)
        acks = self.record.acknowledgements(episodes)
        for episode in episodes:
            closing = self.record.resolved(episode)
            if closing is None or not self.queue.sent([(closing.id, closing.state, closing.ts)]):
                continue  # still open, or not sent yet: its closing record will carry it
            mine = next((m for m in self.deployment.mines if m.id == closing.mine), None)
            for event in files.events_from_alerts([closing], self._sensors, acks, causes):
                remembered = self.queue.recall(_summary_name(event))
                if mine is None or remembered is None:
                    continue  # closed before jinmei kept summaries: not sent without them
                event, closed_at = _with_summary(event, remembered)
                if event.entered_at is not None and event.entered_at > closed_at:
                    self._add(files.ycbj(mine, self.kinds, [event], now_ms), now)
        self.queue.remember(CAUSES_SEEN, str(entered[-1][1]))

    def _with_extremes(self, event: files.AbnormalEvent) -> files.AbnormalEvent:
        """Start the extremes of an opening event; fill them into a closing one."""
        key = (event.sensor.key, event.start, event.type)
        i = self.deployment.registry.index[event.sensor.key]
        with self._lock:
            if event.end is None:
                window = ReadingBatch.concat(self._window)
                mine = (window.sensor == i) & files.measured(window.status)
                self.extremes.open(key, window.ts[mine], window.value[mine])
                self._watched[i] = True
                return event
            summary = self.extremes.close(key, event.end)
            self._watched = self.extremes.watched()
        if summary is not None:
            event = replace(event, max=summary.max, min=summary.min, mean=summary.mean)
        # (opened before networking ran: extremes unknown, left empty)
        self.queue.remember(_summary_name(event), json.dumps(
            [event.max, event.min, event.mean, int(self.clock() * 1000)]))
        return event

    def standby(self, now: float) -> None:
        """Another instance does the networking: write nothing, keep only the current
        5-minute window's readings (a takeover writes its statistics), and check the
        definitions again on taking over."""
        now_ms = int(now * 1000)
        start = now_ms - now_ms % WINDOW_MS
        if self._window_start is None or start > self._window_start:
            with self._lock:
                batch = ReadingBatch.concat(self._window)
                keep = batch.ts >= start
                self._window = [ReadingBatch(batch.sensor[keep], batch.ts[keep],
                                             batch.value[keep], batch.status[keep])]
            self._window_start = start
        self._started = False

    def run(self, stop: threading.Event) -> None:
        """Tick once a second until ``stop``; then close the queue and the event store."""
        while not stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                now = self.clock()
                if self.active is None or self.active(now):
                    self.tick(now)
                else:
                    self.standby(now)
            except Exception:  # the networking thread must never take the service down
                log.exception("networking tick failed; retrying in a second")
            stop.wait(1.0)
        self.extremes.close_db()
        self.queue.close()


def _summary_name(event: files.AbnormalEvent) -> str:
    """The name under which a closed event's extremes are remembered (its YCBJ key)."""
    return f"closed:{event.sensor.key}:{event.start}:{event.type}"


def _with_summary(event: files.AbnormalEvent, remembered: str
                  ) -> tuple[files.AbnormalEvent, int]:
    """The event with the extremes it was closed with; and when its closing record was made."""
    high, low, mean, closed_at = json.loads(remembered)
    return replace(event, max=tuple(high) if high else None, min=tuple(low) if low else None,
                   mean=mean), int(closed_at)
