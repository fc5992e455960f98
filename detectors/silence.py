"""No data (``no_data``, 通讯中断): sensors and whole substations that fell silent.

A sensor is silent when nothing at all (any status, in any order) has been heard from it for
``no_data_periods`` (default 3, domain.md §3: "silent for 2–3 patrol periods is communication
lost") × its sampling period, on the service clock (``now``). The deadman is armed from the
configuration at the first ``update`` or ``tick``: a sensor already dead when the service starts
is reported too. ``tick(now)`` runs it when no message arrives at all.

=================  ===================================================  ========================
condition          fires when                                           severity
=================  ===================================================  ========================
silent             this sensor is silent, its substation is not         ``critical`` for methane
                   (see below)                                          guarding a power-off area
                                                                        (故障闭锁), else ``alarm``
substation_silent  nothing at all heard from a substation (分站) for k   ``critical`` if it has
                   × the period of its fastest sensor still reporting    such methane, else
                   (or every sensor silent): one condition on its first  ``alarm``
                   sensor, ``scope`` = the substation id — not fifty
=================  ===================================================  ========================

A sensor's own ``silent`` waits until a sibling on its substation is heard after its deadline
(at most one sibling period later): sensors of a dying substation expire at different times
(10 s and 30 s periods), and that must become one condition, not a burst of single ones first.
The substation polls all its sensors in one cycle, so its own deadline is paced by its fastest
sensor (3 × 10 s), not by the slowest one it also carries (3 × 30 s): the whole substation is
reported within 4 periods of its fast methane points. A sensor already reported silent on its
own no longer sets that pace — else a dead fast sensor would make the slow siblings' 30 s
cadence look like a dead substation. A sensor reported silent on its own stays so while its
whole substation falls silent too (it has not come back). When a substation comes back but
some of its sensors do not, those fire ``silent`` on their own once their allowance, counted
from its return, has passed.

What the events say — only what is known:

- **Evidence only.** A condition ends only when a reading arrives: of that sensor for
  ``silent``, of any sensor of that substation for ``substation_silent``. The clock alone never
  ends one. A calibrating (标校) or faulty reading is evidence too: it proves the sensor and its
  link talk, which is all this detector judges (whether the value is trusted is the other
  detectors' business).
- **Values are readings.** ``value`` is always a reading of the event's own sensor, never a
  duration: on firing its last reading before the silence (NaN — JSON null, "no reading" in
  the message — when none was heard since the service started); on a ``silent`` ending the
  oldest reading of the batch that ended it (below). Calibrating readings (standard gas on
  the head) are never shown as a reading: in their place the sensor's last measured one
  before (or NaN).
  ``substation_silent`` shows its representative sensor's last reading before the silence,
  on firing and on ending (NaN if none), never a sibling's value in another unit. ``limit``
  is the silence allowed, in seconds (for a substation, that of its fastest sensor: it has
  been silent at least that long).
- **Times: the span jinmei had no data.** An episode is the time the sensor (substation) was
  silent *at jinmei*: it starts at ``now``, the service-clock time the silence was noticed,
  and ends at ``now`` of the batch that brought the first reading after it — the moment
  jinmei could see the sensor again. Both ends are on the one service clock, so a duration is
  never negative (the episode book also never ends an episode before its start,
  ``alerts.episodes``, should the clock step back).
- **Back-fill (断电续传) does not shorten it.** A substation that buffered its readings and
  resends them proves that the mine *measured* through the outage; it does not undo the time
  nobody could see those readings — the dispatcher, jinmei's alarms and the regulator were
  blind then, and that is what 通讯中断 records. The resent readings are stored and judged by
  the other detectors on their own times (alerts about the past marked ``late``, 补传). So the
  record holds both truths: ``alerts history`` and ``report daily`` give the span with no data
  at jinmei; the readings give the span the mine had no data at all (a gap the resend did not
  fill stays a gap in the stored readings, drawn as such in ``report daily --out``).
- **Same readings, same episodes.** How a resend is cut into messages and batches changes
  nothing: an episode ends at the arrival of its first evidence, whatever reading that is, and
  the value of a ``silent`` ending is the oldest reading (by its own time) of the batch that
  ended it. A sensor's readings reach jinmei in time order across messages (MQTT keeps one
  topic's messages in order, and a substation resends its buffer oldest first; within a
  message any order), so that batch holds the oldest reading of the resend however it was
  cut. If that reading is calibration gas, the last measured one before it. A substation's
  ending shows no reading of the resend because its representative's may come in a later
  message. When a substation comes back, the deadlines of its sensors not yet heard restart
  at its return, as at service start: a resend cut between the sensors of one poll cycle must
  not make those of the later messages silent on their own in between. (This needs the
  substation known silent: the service ticks about once a second, so only a resend that
  arrives within that second after the substation's deadline comes before it is.)
- **Restart.** ``restore`` takes back the silent sensors and substations of the open
  episodes: they stay silent (not "heard at start", which would end them with no reading and
  raise them again a few periods later under new ids) until a reading of theirs arrives;
  ``recall`` takes back the last reading each showed (the open episode's value), which an
  ending may show. Nothing else is needed — the end is an arrival and the start stays in the
  episode book — so a restart in the middle of an episode gives the ending (time, value) that
  no restart gives. Not carried over: that last reading's own time, so a resend of readings
  older still may become the sensor's last reading (the value of a later firing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch, Status
from detectors.base import Detection, Event
from detectors.faults import guards_power_off

__all__ = ["CONDITIONS", "NoDataDetector"]

CONDITIONS = ("silent", "substation_silent")
_CALIBRATION = np.uint16(Status.CALIBRATION)
# "Not heard since the service started": far enough back that any deadline has passed, far
# enough from the int64 limit that adding an allowance cannot overflow.
_NOT_HEARD = np.iinfo(np.int64).min // 4


class NoDataDetector:
    """Per-sensor deadman with substation grouping; see the module docstring.

    Parameters
    ----------
    registry : Registry
        Sensors, their periods and substations.
    config : DetectorConfig
        ``no_data_periods`` (k, default 3).

    Notes
    -----
    Cost: ``update`` is one scatter of ``now`` over the batch's sensors and one
    ``maximum.at`` for each sensor's newest reading (~1 ms per 100,000 readings). Then only
    the substations that can change are judged, each over its own sensors: those of the
    batch's sensors, and those *due* — each substation keeps the service-clock time after
    which it could change with no reading of it (its pace running out, its last sensor's
    deadline passing), and the one comparison over all substations that finds the due ones runs
    only once ``now`` is past the soonest of those times: live, once in about two periods of the
    fastest points, not at every batch or tick. So a one-message batch costs the same with
    10,000 or 100,000 sensors (``bench/bench_detectors.py --message``), and the events are those
    of judging every substation at every call (``tests/test_silence_due.py``). Why due times
    and not a sweep once a second: a sweep would move a silence found in a batch to the next
    second (its event time is ``now``) and still cost the whole registry every second; a heap
    would need an entry moved at every reading. Adds no status bits. State per sensor: when it
    was last heard (service clock), its newest reading (ts, value), whether it is silent; per
    substation, its due time.

    Examples
    --------
    The face methane (T1, 10 s period) is last heard at 20 s (0.5 %) while the return airway
    (T2) and the feed sensor (KD) on the same substation report on: T1 is ``silent`` once a
    sibling is heard after its 30 s allowance, ``critical`` as it guards a power-off area; the
    event's value is its last reading. It comes back at 0.52 %; then substation S01 falls
    silent as a whole, which the clock (``tick``) notices:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import KD, T1, T2, at, longwall, print_events, readings
    >>> silence = NoDataDetector(longwall(), DetectorConfig())
    >>> for t in range(0, 70, 10):
    ...     rows = [(T2, t, 0.4), (KD, t, 1)] + [(T1, t, 0.5)] * (t <= 20)
    ...     print_events(silence.update(readings(rows), at(t)))
    ('T1-1101', 'silent', True, 'critical', 0.5)
    >>> print_events(silence.update(readings([(T1, 70, 0.52)]), at(70)))
    ('T1-1101', 'silent', False, 'critical', 0.52)
    >>> found = silence.tick(at(110))
    >>> print_events(found)
    ('T1-1101', 'substation_silent', True, 'critical', 0.52)
    >>> found.events[0].scope
    'S01'

    After a restart the open substation episode is restored with the last reading it showed
    (``recall``): the clock ends nothing, and it ends only when a reading of S01 arrives — here
    a resend of readings buffered from 100 s on. It ends when they arrive (401 s: S01 was
    silent at jinmei until then), with T1's last reading before the silence:

    >>> restarted = NoDataDetector(longwall(), DetectorConfig())
    >>> restarted.restore(silence.active())
    >>> restarted.recall({T1: found.events[0].value})
    >>> print_events(restarted.tick(at(400)))
    >>> back = restarted.update(readings([(T2, 100, 0.41), (T1, 100, 0.5), (KD, 100, 1)]),
    ...                         at(401))
    >>> print_events(back)
    ('T1-1101', 'substation_silent', False, 'critical', 0.52)
    >>> back.events[0].ts == at(401)
    True
    """

    conditions = CONDITIONS

    def __init__(self, registry: Registry, config: DetectorConfig) -> None:
        self.registry = registry
        n = len(registry)
        self._allowed_ms = (config.no_data_periods * registry.period_s * 1000).astype(np.int64)
        stations = {(s.mine, s.substation): None for s in registry.sensors}
        station_index = {key: k for k, key in enumerate(stations)}
        self._station = np.array([station_index[(s.mine, s.substation)]
                                  for s in registry.sensors], dtype=np.int64)
        self._station_name = [name for _, name in stations]
        self._station_size = np.bincount(self._station, minlength=len(stations))
        # The silence a substation's events name: its fastest sensor's. Never more than the
        # silence it has when it fires (its pace is never shorter), so "silent for more than"
        # it is always true; a slower representative's own allowance might not be.
        self._station_allowed_ms = np.full(len(stations), np.iinfo(np.int64).max)
        np.minimum.at(self._station_allowed_ms, self._station, self._allowed_ms)
        # The representative of a substation: its first sensor.
        self._representative = np.unique(self._station, return_index=True)[1]
        guards = guards_power_off(registry)
        self._severity = np.where(guards, "critical", "alarm")
        self._station_severity = np.where(
            np.bincount(self._station, weights=guards, minlength=len(stations)) > 0,
            "critical", "alarm")
        self._heard = np.zeros(n, dtype=np.int64)          # service clock, once armed
        self._armed = False
        self._last_ts = np.zeros(n, dtype=np.int64)        # each sensor's newest reading
        self._last_value = np.full(n, np.nan)
        self._silent = np.zeros(n, dtype=bool)             # reported per sensor
        self._station_silent = np.zeros(len(stations), dtype=bool)
        # Each substation's sensors, contiguous: a substation is judged over its own only.
        self._by_station = np.argsort(self._station, kind="stable")
        self._station_start = np.cumsum(self._station_size) - self._station_size
        # When each substation may next change with no reading of it (service clock; see
        # _due_after), and a time no later than the soonest of them.
        self._due = np.full(len(stations), np.iinfo(np.int64).max)
        self._next_due = np.iinfo(np.int64).min
        self._judge_all = True  # the next judgement covers every substation (arming, restore)
        self._in_batch = np.zeros(n, dtype=bool)  # scratch, all False between judgements

    def __repr__(self) -> str:
        return (f"NoDataDetector(sensors={len(self.registry)}, silent={int(self._silent.sum())}"
                f", substations_silent={int(self._station_silent.sum())})")

    def _arm(self, now: int) -> None:
        """Start every deadline at ``now`` — except for what is already known silent (restored
        over a restart), which must stay silent until it is heard."""
        if not self._armed:
            quiet = self._silent | self._station_silent[self._station]
            self._heard[:] = np.where(quiet, _NOT_HEARD, now)
            self._armed = True

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        self._arm(now)
        bits = np.zeros(len(batch), dtype=np.uint16)
        if len(batch) == 0:
            return Detection([], bits)
        self._heard[batch.sensor] = now
        # Judged before the batch's readings become the sensors' last ones: an ending may show
        # the last reading before the silence, and a firing never concerns a sensor heard now.
        events = self._judge(now, batch)
        # Each sensor's newest measured reading by its own time (a back-fill may come in any
        # order; of readings stamped alike, the last to arrive). Calibration gas is no reading
        # of the air: shown as a "last reading" it would read as methane at 2 %.
        measured = np.flatnonzero((batch.status & _CALIBRATION) == 0)
        np.maximum.at(self._last_ts, batch.sensor[measured], batch.ts[measured])
        newest = measured[batch.ts[measured] == self._last_ts[batch.sensor[measured]]]
        self._last_value[batch.sensor[newest]] = batch.value[newest]
        return Detection(events, bits)

    def tick(self, now: int) -> Detection:
        self._arm(now)
        return Detection(self._judge(now, None), np.zeros(0, dtype=np.uint16))

    def _judge(self, now: int, batch: ReadingBatch | None) -> list[Event]:
        """The transitions at ``now``. Only the substations that can change are judged: those
        of the batch's sensors and those due by the clock (``_due``); each over its own
        sensors, so a batch costs what it holds, not the registry (module docstring, "Cost")."""
        stations, swept = self._stations_to_judge(now, batch)
        members, at, starts = self._members_of(stations)
        heard, allowed = self._heard[members], self._allowed_ms[members]
        # Only a reading ends a silence — not the clock, even one stepped back.
        if batch is not None:
            self._in_batch[batch.sensor] = True
        heard_now = self._in_batch[members]
        if batch is not None:
            self._in_batch[batch.sensor] = False
        station_heard_now = np.logical_or.reduceat(heard_now, starts)
        silent = now - heard > allowed
        station_heard = np.maximum.reduceat(heard, starts)
        was_silent = self._silent[members]
        # The substation's own deadline: its fastest sensor still reporting on its own (one
        # already reported silent alone no longer sets the pace of its siblings' messages).
        never = np.iinfo(np.int64).max
        pace = np.minimum.reduceat(np.where(was_silent, never, allowed), starts)
        all_silent = ((now - station_heard > pace)
                      | (np.add.reduceat(silent, starts, dtype=np.int64)
                         == self._station_size[stations])
                      | (self._station_silent[stations] & ~station_heard_now))
        # A substation back: its sensors not heard yet get their deadlines from its return.
        waking = ((self._station_silent[stations] & ~all_silent)[at] & ~heard_now
                  & ~was_silent)
        if waking.any():
            self._heard[members[waking]] = now
            heard[waking] = now
            silent &= ~waking
        # A sensor is silent on its own only once a sibling was heard after its deadline;
        # until then its silence may be the first sign of the whole substation going.
        # One already reported stays so until it is heard, whatever its substation does.
        alone = ((silent & ~all_silent[at] & (station_heard[at] > heard + allowed))
                 | (was_silent & ~heard_now))
        events = []
        for j in np.flatnonzero(all_silent != self._station_silent[stations]).tolist():
            k = int(stations[j])
            i = int(self._representative[k])
            firing = bool(all_silent[j])
            if firing:
                events.append(self._firing(i, "substation_silent",
                                           str(self._station_severity[k]), now,
                                           float(self._station_allowed_ms[k] / 1000),
                                           self._station_name[k]))
            else:
                assert batch is not None  # only a reading ends a silence
                events.append(Event(i, "no_data", "substation_silent",
                                    str(self._station_severity[k]), False, now,
                                    _reading(self._last_value[i]),
                                    float(self._station_allowed_ms[k] / 1000),
                                    self._station_name[k]))
        moved = np.flatnonzero(alone != was_silent)
        for i, now_alone in sorted(zip(members[moved].tolist(), alone[moved].tolist(),
                                       strict=True)):  # in sensor order, as ever
            if now_alone:
                events.append(self._firing(i, "silent", str(self._severity[i]), now,
                                           float(self._allowed_ms[i] / 1000), ""))
            else:
                assert batch is not None  # only a reading ends a silence
                rows = np.flatnonzero(batch.sensor == i)
                first = int(rows[np.argmin(batch.ts[rows])])  # the oldest; of equals, first in
                events.append(Event(i, "no_data", "silent", str(self._severity[i]), False, now,
                                    self._value(i, batch, first),
                                    float(self._allowed_ms[i] / 1000)))
        self._silent[members] = alone
        self._station_silent[stations] = all_silent
        due = np.where(all_silent, never,
                       _due_after(heard + allowed, station_heard, alone, allowed, at, starts))
        self._due[stations] = due
        if swept:
            self._next_due = int(self._due.min())
        elif due.size:
            self._next_due = min(self._next_due, int(due.min()))
        return events

    def _stations_to_judge(self, now: int,
                           batch: ReadingBatch | None) -> tuple[np.ndarray, bool]:
        """The substations (ascending) whose state may change at ``now``: every one when
        armed or restored, else those of the batch's sensors and those due by the clock; and
        whether the due times were swept (``_next_due`` is then worked out afresh).

        The due ones are found by one comparison over the substations, only once ``now`` is
        past the soonest due time known (``_next_due``, a lower bound): live, that is about
        once per (3 − 1) periods of the fastest sensors, not once per batch."""
        if self._judge_all:
            self._judge_all = False
            return np.arange(len(self._station_size)), True
        stations = np.zeros(0, dtype=np.int64)
        if batch is not None:  # a mark per substation beats a sort once the batch is larger
            of_batch = self._station[batch.sensor]
            stations = (np.flatnonzero(np.bincount(of_batch, minlength=len(self._station_size)))
                        if len(batch) > len(self._station_size) else np.unique(of_batch))
        if now <= self._next_due:
            return stations, False
        return np.union1d(stations, np.flatnonzero(self._due < now)), True

    def _members_of(self, stations: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sensors of ``stations`` grouped by substation: (sensor, position of its
        substation in ``stations``, where each group starts)."""
        size = self._station_size[stations]
        starts = np.cumsum(size) - size
        offset = np.repeat(self._station_start[stations] - starts, size)
        members = self._by_station[offset + np.arange(int(size.sum()))]
        return members, np.repeat(np.arange(len(stations)), size), starts

    def _firing(self, i: int, condition: str, severity: str, now: int, allowed_s: float,
                scope: str) -> Event:
        return Event(i, "no_data", condition, severity, True, now, _reading(self._last_value[i]),
                     allowed_s, scope)

    def _value(self, i: int, batch: ReadingBatch, row: int) -> float:
        """The value an ending event of sensor ``i`` shows: the reading at ``row``, unless it
        is calibration gas — then its last measured one before the batch."""
        if batch.status[row] & _CALIBRATION:
            return _reading(self._last_value[i])
        return float(batch.value[row])

    def active(self) -> list[tuple[int, str]]:
        silent = [(int(i), "silent") for i in np.flatnonzero(self._silent)]
        stations = [(int(self._representative[k]), "substation_silent")
                    for k in np.flatnonzero(self._station_silent)]
        return sorted(silent + stations)

    def restore(self, active: list[tuple[int, str]]) -> None:
        """Know these as silent; see "Restart" in the module docstring. Call before the first
        ``update`` or ``tick``."""
        for sensor, condition in active:
            if condition == "silent":
                self._silent[sensor] = True
            elif condition == "substation_silent":
                self._station_silent[self._station[sensor]] = True
            else:
                raise ValueError(f"not a no-data condition: {condition!r}")
        if self._armed:  # restored into a running detector: silent from now on, too
            quiet = self._silent | self._station_silent[self._station]
            self._heard[quiet] = _NOT_HEARD
        self._judge_all = True

    def recall(self, last_readings: Mapping[int, float]) -> None:
        """Take back each sensor's last reading (sensor index → value, NaN: none) as the open
        no-data episodes showed it, after a restart; a reading heard since is not replaced.
        Its own time is not known: any measured reading heard later is newer."""
        for sensor, value in last_readings.items():
            if self._last_ts[sensor] == 0:
                self._last_value[sensor] = value


def _reading(value: float) -> float:
    """A reading's value for an event; a missing one is always the same NaN object, so two
    runs' events still compare equal (NaN != NaN, but equality of fields tries identity first)."""
    return math.nan if math.isnan(value) else float(value)


def _due_after(deadline: np.ndarray, station_heard: np.ndarray, alone: np.ndarray,
               allowed: np.ndarray, at: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per substation just judged (its sensors grouped, ``deadline`` = heard + allowed each):
    the service-clock time after which it may change with no reading of it — its own pace
    running out, its last sensor's deadline passing (every one silent), or the deadline of a
    sensor not yet silent alone though a sibling was heard after it (only when the clock
    stepped back). Until then, with no reading of it, ``_judge`` would find nothing new there.
    """
    never = np.iinfo(np.int64).max
    pace = np.minimum.reduceat(np.where(alone, never, allowed), starts)
    paced = np.where(pace == never, never, station_heard + np.where(pace == never, 0, pace))
    pending = np.where((station_heard[at] > deadline) & ~alone, deadline, never)
    return np.minimum(np.minimum(paced, np.maximum.reduceat(deadline, starts)),
                      np.minimum.reduceat(pending, starts))

