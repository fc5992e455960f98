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

Both clear at the first reading heard (event ``ts`` and ``value`` of that reading); firing
events carry ``now`` as ``ts``, the silence in seconds as ``value`` and the allowed silence as
``limit``. A sensor's own ``silent`` waits until a sibling on its substation is heard after
its deadline (at most one sibling period later): sensors of a dying substation expire at
different times (10 s and 30 s periods), and that must become one condition, not a burst of
single ones first. The substation polls all its sensors in one cycle, so its own deadline is
paced by its fastest sensor (3 × 10 s), not by the slowest one it also carries (3 × 30 s): the
whole substation is reported within 4 periods of its fast methane points. A sensor already
reported silent on its own no longer sets that pace — else a dead fast sensor would make the
slow siblings' 30 s cadence look like a dead substation. When a substation comes back but
some of its sensors do not, those fire ``silent`` on their own.
"""

from __future__ import annotations

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch
from detectors.base import Detection, Event
from detectors.faults import guards_power_off

__all__ = ["CONDITIONS", "NoDataDetector"]

CONDITIONS = ("silent", "substation_silent")


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
    Cost: ``update`` is one scatter of ``now`` over the batch's sensors; ``tick`` a few passes
    over per-sensor arrays and one ``bincount`` per substation count. Adds no status bits.

    Examples
    --------
    The face methane (T1, 10 s period) is last heard at 20 s while the return airway (T2) and
    the feed sensor (KD) on the same substation report on: T1 is ``silent`` once a sibling is
    heard after its 30 s allowance, ``critical`` as it guards a power-off area. It comes back;
    then substation S01 falls silent as a whole, which the clock (``tick``) notices:

    >>> from config.model import DetectorConfig
    >>> from detectors.examples import KD, T1, T2, at, longwall, print_events, readings
    >>> silence = NoDataDetector(longwall(), DetectorConfig())
    >>> for t in range(0, 70, 10):
    ...     rows = [(T2, t, 0.4), (KD, t, 1)] + [(T1, t, 0.5)] * (t <= 20)
    ...     print_events(silence.update(readings(rows), at(t)))
    ('T1-1101', 'silent', True, 'critical', 40.0)
    >>> print_events(silence.update(readings([(T1, 70, 0.5)]), at(70)))
    ('T1-1101', 'silent', False, 'critical', 0.5)
    >>> found = silence.tick(at(110))
    >>> print_events(found)
    ('T1-1101', 'substation_silent', True, 'critical', 40.0)
    >>> found.events[0].scope
    'S01'
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
        # The representative of a substation: its first sensor.
        self._representative = np.unique(self._station, return_index=True)[1]
        guards = guards_power_off(registry)
        self._severity = np.where(guards, "critical", "alarm")
        self._station_severity = np.where(
            np.bincount(self._station, weights=guards, minlength=len(stations)) > 0,
            "critical", "alarm")
        self._heard = np.zeros(n, dtype=np.int64)
        self._armed = False
        self._silent = np.zeros(n, dtype=bool)             # reported per sensor
        self._station_silent = np.zeros(len(stations), dtype=bool)

    def __repr__(self) -> str:
        return (f"NoDataDetector(sensors={len(self.registry)}, silent={int(self._silent.sum())}"
                f", substations_silent={int(self._station_silent.sum())})")

    def _arm(self, now: int) -> None:
        if not self._armed:
            self._heard[:] = now
            self._armed = True

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        self._arm(now)
        bits = np.zeros(len(batch), dtype=np.uint16)
        if len(batch) == 0:
            return Detection([], bits)
        self._heard[batch.sensor] = now
        # The latest reading of each sensor heard: the one that ends its silence.
        last = np.zeros(len(self.registry), dtype=np.int64)
        last[batch.sensor] = np.arange(len(batch))
        return Detection(self._judge(now, batch, last), bits)

    def tick(self, now: int) -> Detection:
        self._arm(now)
        return Detection(self._judge(now, None, None), np.zeros(0, dtype=np.uint16))

    def _judge(self, now: int, batch: ReadingBatch | None,
               last: np.ndarray | None) -> list[Event]:
        quiet_ms = now - self._heard
        silent = quiet_ms > self._allowed_ms
        station_heard = np.zeros(len(self._station_size), dtype=np.int64)
        np.maximum.at(station_heard, self._station, self._heard)
        # The substation's own deadline: its fastest sensor still reporting on its own (one
        # already reported silent alone no longer sets the pace of its siblings' messages).
        never = np.iinfo(np.int64).max
        pace = np.full(len(self._station_size), never)
        np.minimum.at(pace, self._station, np.where(self._silent, never, self._allowed_ms))
        all_silent = ((now - station_heard > pace)
                      | (np.bincount(self._station, weights=silent,
                                     minlength=len(self._station_size)) == self._station_size))
        # A sensor is silent on its own only once a sibling was heard after its deadline;
        # until then its silence may be the first sign of the whole substation going.
        alone = (silent & ~all_silent[self._station]
                 & (station_heard[self._station] > self._heard + self._allowed_ms))
        events = []
        for k in np.flatnonzero(all_silent != self._station_silent).tolist():
            i = int(self._representative[k])
            events.append(self._event(i, "substation_silent", str(self._station_severity[k]),
                                      bool(all_silent[k]), now, quiet_ms, batch, last,
                                      self._station_name[k]))
        for i in np.flatnonzero(alone != self._silent).tolist():
            events.append(self._event(i, "silent", str(self._severity[i]), bool(alone[i]), now,
                                      quiet_ms, batch, last, ""))
        self._silent = alone
        self._station_silent = all_silent
        return events

    def _event(self, i: int, condition: str, severity: str, firing: bool, now: int,
               quiet_ms: np.ndarray, batch: ReadingBatch | None, last: np.ndarray | None,
               scope: str) -> Event:
        limit = float(self._allowed_ms[i] / 1000)
        # Resolved by a reading: of this sensor, or (substation) of whichever of its sensors.
        heard = (np.flatnonzero(self._station[batch.sensor] == self._station[i])
                 if batch is not None and not firing else np.zeros(0, np.int64))
        if batch is None or last is None or heard.size == 0:
            return Event(i, "no_data", condition, severity, firing, now,
                         float(quiet_ms[i] / 1000), limit, scope)
        row = int(last[i]) if self._heard[i] == now else int(heard[-1])
        return Event(i, "no_data", condition, severity, False, int(batch.ts[row]),
                     float(batch.value[row]), limit, scope)

    def active(self) -> list[tuple[int, str]]:
        silent = [(int(i), "silent") for i in np.flatnonzero(self._silent)]
        stations = [(int(self._representative[k]), "substation_silent")
                    for k in np.flatnonzero(self._station_silent)]
        return sorted(silent + stations)

    def restore(self, active: list[tuple[int, str]]) -> None:
        for sensor, condition in active:
            if condition == "silent":
                self._silent[sensor] = True
            elif condition == "substation_silent":
                self._station_silent[self._station[sensor]] = True
            else:
                raise ValueError(f"not a no-data condition: {condition!r}")
