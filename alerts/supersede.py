"""One incident, one story: early warnings that would only repeat an alarm or an earlier warning
do not open (issue 17).

A trend, level-shift or face/return mismatch warning (:data:`~alerts.inhibit.EARLY_WARNINGS`)
says "this point is heading for its alarm". Three rules keep a warning from opening when the
dispatcher already has that story, each on by default and switched in ``[alerts]``:

- ``supersede_warnings`` — **the point's alarm.** While one of the point's limit alarm or
  power-off episodes is open (:func:`~alerts.inhibit.is_alarm`), "0.91 % rising towards the alarm
  limit 1.00 %" beside an open 1.02 % alarm is plainly wrong. A warning of the point still open
  when the alarm opens is resolved at the alarm's reading, with ``reason: "superseded"`` and the
  message "被报警取代 / superseded by the alarm" (the alarm's value and limit) — recorded,
  published on ``jinmei/<mine>/alerts`` and told to receivers who were told of its firing, like
  any resolve; a warning of the point firing meanwhile opens nothing.
- ``supersede_warnings_under_power_off`` — **the area's power-off.** While a
  ``limit_power_off`` is open in an area (a working face or heading, ``Sensor.area``: the
  power-off area of the limits table), an early warning of the same gas at
  another point of that area opens nothing either: the area's power is cut and work there
  stopped (煤矿安全规程), so a forecast of that gas there has nothing left to prevent — the
  point's own alarm limit still fires if it is crossed, and the restore (复电) is the next news.
  Warnings already open when the power-off opens stay open and published; the
  ``area_alarm_over_warnings`` inhibition (alerts.inhibit) holds back their notifications. Not
  on a limit alarm without power-off: the gas at another point may still be heading for that
  point's own alarm, and the warning says so in time — measured on the simulated spontaneous
  combustion, where the face's CO trend warned of its own alarm 9 min ahead while the goaf's CO
  alarm had been open for two hours (two truth entries an alarm-wide rule lost). This narrows
  issue 17's item 2 ("recorded and published, marked inhibited") for the power-off's area: the
  warnings the inhibition would mark there are not raised at all — Alertmanager's way of not
  re-alerting on what an open alert explains, ISA-18.2's "redundant alarm" (one abnormal
  situation, one alarm). Switched off, item 2's marking is back unchanged. Only the same kind.
- ``supersede_level_shifts`` — **an earlier warning of the rise.** A level shift says "the
  gas here just stepped up". While the area (or, without an area, the point) already has an
  open rising warning of the same gas — a level shift, a rising trend or the pre-warning limit
  (``warning_high``) at any of its points — a level shift opens nothing: the gas released at
  the face reaches the upper corner and the return within seconds, and the dispatcher was told
  of it by the first warning (ISA-18.2's redundant alarm again). Trend warnings are never held
  back by this rule: each one forecasts a time to the limit, the lead issue 17 keeps.

Measured on every scenario (``bench/evaluate_incidents.py``, bench/RESULTS.md): the simulated
methane rise publishes 8 transitions instead of 18 at each pilot mine; every truth entry is
still shown in time, every trend warning before the first alarm stays with its lead, and the
incident's first warning keeps its lead. What the last rule removes is a level shift 10 s ahead
of the first alarm beside an open warning of the same rise. A ``for``-like persistence on level
shifts (``[alerts.for_s]``) was measured too and not chosen: it runs on the service clock, so a
replayed or back-filled feed (断电续传) would judge persistence by arrival, not by the readings.

Each held-back firing is recorded in table ``alert_suppressed`` of the alerts state file (mine,
sensor, rule, condition, the reading's ts and value, and why), never on the alerts topic:
:meth:`Supersede.suppressed`. The detector's condition is *swallowed*: the detector still holds
it as firing, so its later clear is dropped here too — it would otherwise be a resolve whose
start was never seen.

**When a warning may open again.** Only on the detector's next firing after the alarm episode
has closed (or the earlier warning has ended): a swallowed condition still held by the detector
stays swallowed until the detector lets go of it (its clear, dropped) and raises it anew. Why a
dispatcher wants this: re-opening at the close would have to re-stamp the detector's standing
judgement — a fitted level, a median or a face/return gap minutes old — with the close's time,
as a start no reading made; and a condition that has not ended since the alarm began is the gas
event the dispatcher has just watched through the alarm and its resolve. A fresh firing is a
fresh rise, with its own reading and time. The cost: while the gas hovers just under the limit
after a close without the detector letting go, no new warning — the alarm limit itself fires at
the next crossing.

Where it runs: in the dispatcher between debounce and episodes, on the events due now and the
episodes open before them; an alarm or warning opened earlier in the same batch counts. Limit
events pass unchanged (the safety floor).

Restart: the swallowed conditions are kept in table ``alert_superseded`` of the alerts state
file, written before the alert record, and :meth:`Supersede.restore` returns them to the
detectors as firing — so after a restart the detector's later clear is still dropped, and a
warning still waits for the detector's next firing. They cannot be derived from the alert record
alone: a clear dropped here leaves no row there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from alerts.db import StateDB
from alerts.inhibit import is_alarm, is_early_warning
from alerts.messages import Names, mine_labels, render
from alerts.wire import Alert
from config.model import Registry
from detectors.base import Event

__all__ = ["SUPERSEDED", "Supersede", "Suppressed"]

SUPERSEDED = "superseded"  # the wire's ``reason`` of a warning's resolve the alarm forced

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_superseded (
    sensor    TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    condition TEXT    NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (sensor, rule, condition)
);
CREATE TABLE IF NOT EXISTS alert_suppressed (
    mine      TEXT    NOT NULL,
    sensor    TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    condition TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    value     REAL    NOT NULL,
    reason    TEXT    NOT NULL
);
"""

_Key = tuple[int, str, str]  # sensor index, rule, condition
_Forced = dict[tuple[str, str, str, int], Event]  # (mine, sensor, condition, ts) → the alarm
_RISES = frozenset({"trend_high", "level_shift"})  # the early warnings of a rise
_PRE_WARNING = "warning_high"  # the limit_alarm condition of the pre-warning limit
_POWER_OFF = "limit_power_off"


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A detector's firing that opened no episode, and why (table ``alert_suppressed``)."""

    mine: str
    sensor: str
    rule: str
    condition: str
    ts: int
    value: float
    reason: str


@dataclass(slots=True)
class _Open:
    """What is open before and during one batch: per point, its alarms, its early warnings
    (condition → scope) and whether its pre-warning limit is in force."""

    alarms: defaultdict[int, set[tuple[str, str]]]
    warnings: defaultdict[int, dict[str, str]]
    pre_warning: set[int]


class Supersede:
    """The alarm, or an earlier warning, supersedes the early warnings that would repeat it;
    see the module docstring."""

    def __init__(self, registry: Registry, names: Names, db: StateDB, *, point: bool = True,
                 area: bool = True, level_shifts: bool = True) -> None:
        self.registry = registry
        self.names = names
        self.db = db
        self.point, self.area, self.level_shifts = point, area, level_shifts
        self._swallowed: dict[_Key, int] = {}  # → since (ts of the alarm or of the firing)
        # The points of the same mine, area and kind as each point (itself first; alone
        # without an area).
        members: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for index, s in enumerate(registry.sensors):
            if s.area:
                members[(s.mine, s.area, s.kind)].append(index)
        self._area = [(i, *(p for p in members[(s.mine, s.area, s.kind)] if p != i))
                      if s.area else (i,) for i, s in enumerate(registry.sensors)]
        db.ensure(SCHEMA)

    def restore(self) -> list[tuple[int, str]]:
        """Take the swallowed conditions back; the (sensor, condition) the detectors must hold
        as firing."""
        for sensor, rule, condition, since in self.db.query("SELECT * FROM alert_superseded"):
            index = self.registry.index.get(str(sensor))
            if index is not None:  # a sensor that left the configuration has nothing to drop
                self._swallowed[(index, str(rule), str(condition))] = int(since)
        return [(k[0], k[2]) for k in self._swallowed]

    def swallowed(self) -> list[tuple[int, str, str]]:
        """(sensor, rule, condition) of every detector condition held back now."""
        return sorted(self._swallowed)

    def suppressed(self) -> list[Suppressed]:
        """Every firing held back so far, oldest first."""
        return [Suppressed(str(m), str(s), str(r), str(c), int(t), float(v), str(why))
                for m, s, r, c, t, v, why in self.db.query(
                    "SELECT * FROM alert_suppressed ORDER BY ts, rowid")]

    def apply(self, events: Sequence[Event], open_episodes: Callable[[], Sequence[Alert]]
              ) -> tuple[list[Event], _Forced]:
        """The events for the episode book, and the warning resolves the alarm forced (by
        their mine, sensor, condition and ts → the alarm's event) for :meth:`mark`.
        ``open_episodes()`` gives the episodes open before these events (asked only when an
        alarm or a warning is among them)."""
        if not (self.point or self.area or self.level_shifts) or not any(
                is_alarm(e.rule, e.severity) or is_early_warning(e.rule, e.condition)
                for e in events):
            return list(events), {}  # the clock's ticks and other rules: nothing to look up
        now = _Open(defaultdict(set), defaultdict(dict), set())
        for alert in open_episodes():
            index = self.registry.index.get(f"{alert.mine}/{alert.sensor}")
            if index is not None:
                self._track(now, index, alert.rule, alert.condition, alert.severity, True,
                            alert.scope)
        out: list[Event] = []
        forced: _Forced = {}
        held: list[tuple[Event, str]] = []
        before = dict(self._swallowed)
        for e in events:
            key = (e.sensor, e.rule, e.condition)
            if is_early_warning(e.rule, e.condition):
                if (e.firing and e.condition not in now.warnings[e.sensor]
                        and (why := self._why_not(e, now)) is not None):
                    if key not in self._swallowed:
                        self._swallowed[key] = e.ts
                        held.append((e, why))
                    continue
                if not e.firing and self._swallowed.pop(key, None) is not None:
                    continue  # the detector lets go of a superseded condition: nothing is open
                # a fresh firing (the detector had lost it, or raises it after the alarm), or
                # the resolve of an open warning
                self._swallowed.pop(key, None)
            self._track(now, e.sensor, e.rule, e.condition, e.severity, e.firing, e.scope)
            out.append(e)
            if self.point and e.firing and is_alarm(e.rule, e.severity):
                for condition, scope in sorted(now.warnings.pop(e.sensor, {}).items()):
                    out.append(Event(e.sensor, "trend", condition, "warning", False, e.ts,
                                     e.value, e.limit, scope))
                    sensor = self.registry.sensors[e.sensor]
                    forced[(sensor.mine, sensor.id, condition, e.ts)] = e
                    self._swallowed.setdefault((e.sensor, "trend", condition), e.ts)
        if self._swallowed.keys() != before.keys():
            self._persist(before, held)
        return out, forced

    def _track(self, now: _Open, index: int, rule: str, condition: str, severity: str,
               firing: bool, scope: str) -> None:
        if is_alarm(rule, severity):
            (now.alarms[index].add if firing else now.alarms[index].discard)((rule, condition))
        elif is_early_warning(rule, condition):
            if firing:
                now.warnings[index][condition] = scope
            else:
                now.warnings[index].pop(condition, None)
        elif rule == "limit_alarm" and condition == _PRE_WARNING:
            (now.pre_warning.add if firing else now.pre_warning.discard)(index)

    def _why_not(self, e: Event, now: _Open) -> str | None:
        """Why this early warning's firing opens nothing (module docstring), or None."""
        sensors = self.registry.sensors
        area = sensors[e.sensor].area
        if self.point and now.alarms[e.sensor]:
            rule, _ = min(now.alarms[e.sensor])
            return f"superseded by the open {rule} of the point"
        others = self._area[e.sensor][1:]
        if self.area and (p := next((p for p in others
                                     if any(r == _POWER_OFF for r, _ in now.alarms[p])),
                                    None)) is not None:
            return f"superseded by the open power-off of {sensors[p].id} in area {area}"
        if not (self.level_shifts and e.condition == "level_shift"):
            return None
        for p in self._area[e.sensor]:
            rises = sorted(_RISES & now.warnings[p].keys())
            if p in now.pre_warning:
                rises.insert(0, _PRE_WARNING)
            if rises:
                where = f" in area {area}" if area else ""
                return f"the open {rises[0]} of {sensors[p].id}{where} already tells the rise"
        return None

    def mark(self, alerts: Sequence[Alert], forced: _Forced) -> list[Alert]:
        """The transitions with each forced resolve given its reason and message."""
        if not forced:
            return list(alerts)
        marked = []
        for alert in alerts:
            alarm = forced.get((alert.mine, alert.sensor, alert.condition, alert.ts))
            if alarm is not None and alert.state == "resolved":
                sensor = self.registry.sensors[alarm.sensor]
                mine_name, timezone = mine_labels(self.registry, sensor.mine)
                alert = msgspec.structs.replace(alert, reason=SUPERSEDED)
                alert = msgspec.structs.replace(alert, message=render(
                    alert, mine_name=mine_name, timezone=timezone, names=self.names,
                    inclusive=sensor.limits.inclusive, superseded_by=alarm.condition))
            marked.append(alert)
        return marked

    def _persist(self, before: dict[_Key, int], held: list[tuple[Event, str]]) -> None:
        sensors = self.registry.sensors
        with self.db.transaction() as c:
            for key in before.keys() - self._swallowed.keys():
                c.execute("DELETE FROM alert_superseded WHERE sensor=? AND rule=? AND"
                          " condition=?", (sensors[key[0]].key, key[1], key[2]))
            for key in self._swallowed.keys() - before.keys():
                c.execute("INSERT INTO alert_superseded VALUES (?, ?, ?, ?) ON CONFLICT DO"
                          " NOTHING", (sensors[key[0]].key, key[1], key[2],
                                       self._swallowed[key]))
            c.executemany("INSERT INTO alert_suppressed VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [(sensors[e.sensor].mine, sensors[e.sensor].id, e.rule, e.condition,
                            e.ts, e.value, why) for e, why in held])
