"""Early warnings stop being early once the alarm is in force (issue 17).

A trend, level-shift or face/return mismatch warning (:data:`~alerts.inhibit.EARLY_WARNINGS`)
says "this point is heading for its alarm". Once the point's limit alarm or power-off episode is
open (:func:`~alerts.inhibit.is_alarm`) that is no longer news, and "0.91 % rising towards the
alarm limit 1.00 %" beside an open 1.02 % alarm is plainly wrong. So, per point, while one of
its alarm or power-off episodes is open:

- a warning of the point still open is resolved at the alarm's reading, with ``reason:
  "superseded"`` and the message "被报警取代 / superseded by the alarm" (the alarm's value and
  limit) — recorded, published on ``jinmei/<mine>/alerts`` and told to receivers who were told
  of its firing, like any resolve;
- a warning of the point firing meanwhile opens nothing.

Either way the detector's condition is *swallowed*: the detector still holds it as firing, so
its later clear is dropped here too — it would otherwise be a resolve whose start was never seen.

**When a warning may open again.** Only on the detector's next firing after the alarm episode
has closed: a swallowed condition still held by the detector at the close stays swallowed until
the detector lets go of it (its clear, dropped) and raises it anew. Why a dispatcher wants this:
re-opening at the close would have to re-stamp the detector's standing judgement — a fitted
level, a median or a face/return gap minutes old — with the close's time, as a start no reading
made; and a condition that has not ended since the alarm began is the gas event the dispatcher
has just watched through the alarm and its resolve. A fresh firing is a fresh rise, with its own
reading and time. The cost: while the gas hovers just under the limit after a close without
the detector letting go, no new warning — the alarm limit itself fires at the next crossing.

Where it runs: in the dispatcher between debounce and episodes (``[alerts]
supersede_warnings``, default true), on the events due now and the episodes open before them;
an alarm opened earlier in the same batch counts. Limit events pass unchanged (the safety floor).

Restart: the swallowed conditions are kept in table ``alert_superseded`` of the alerts state
file, written before the alert record, and :meth:`Supersede.restore` returns them to the
detectors as firing — so after a restart the detector's later clear is still dropped, and a
warning still waits for the detector's next firing. They cannot be derived from the alert record
alone: a clear dropped here leaves no row there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import msgspec

from alerts.db import StateDB
from alerts.inhibit import is_alarm, is_early_warning
from alerts.messages import Names, mine_labels, render
from alerts.wire import Alert
from config.model import Registry
from detectors.base import Event

__all__ = ["SUPERSEDED", "Supersede"]

SUPERSEDED = "superseded"  # the wire's ``reason`` of a warning's resolve the alarm forced

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_superseded (
    sensor    TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    condition TEXT    NOT NULL,
    since     INTEGER NOT NULL,
    PRIMARY KEY (sensor, rule, condition)
);
"""

_Key = tuple[int, str, str]  # sensor index, rule, condition
_Forced = dict[tuple[str, str, str, int], Event]  # (mine, sensor, condition, ts) → the alarm


class Supersede:
    """The point's alarm supersedes its early warnings; see the module docstring."""

    def __init__(self, registry: Registry, names: Names, db: StateDB, *,
                 enabled: bool = True) -> None:
        self.registry = registry
        self.names = names
        self.db = db
        self.enabled = enabled
        self._swallowed: dict[_Key, int] = {}  # → since (ts of the alarm or of the firing)
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

    def apply(self, events: Sequence[Event], open_episodes: Callable[[], Sequence[Alert]]
              ) -> tuple[list[Event], _Forced]:
        """The events for the episode book, and the warning resolves the alarm forced (by
        their mine, sensor, condition and ts → the alarm's event) for :meth:`mark`.
        ``open_episodes()`` gives the episodes open before these events (asked only when an
        alarm or a warning is among them)."""
        if not self.enabled or not any(is_alarm(e.rule, e.severity)
                                       or is_early_warning(e.rule, e.condition) for e in events):
            return list(events), {}  # the clock's ticks and other rules: nothing to look up
        alarms: dict[int, set[tuple[str, str]]] = defaultdict(set)
        warnings: dict[int, dict[str, str]] = defaultdict(dict)  # → condition → scope
        for alert in open_episodes():
            index = self.registry.index.get(f"{alert.mine}/{alert.sensor}")
            if index is None:
                continue
            if is_alarm(alert.rule, alert.severity):
                alarms[index].add((alert.rule, alert.condition))
            elif is_early_warning(alert.rule, alert.condition):
                warnings[index][alert.condition] = alert.scope
        out: list[Event] = []
        forced: _Forced = {}
        before = dict(self._swallowed)
        for e in events:
            key = (e.sensor, e.rule, e.condition)
            if is_alarm(e.rule, e.severity):
                out.append(e)
                if not e.firing:
                    alarms[e.sensor].discard((e.rule, e.condition))
                    continue
                alarms[e.sensor].add((e.rule, e.condition))
                for condition, scope in sorted(warnings.pop(e.sensor, {}).items()):
                    out.append(Event(e.sensor, "trend", condition, "warning", False, e.ts,
                                     e.value, e.limit, scope))
                    sensor = self.registry.sensors[e.sensor]
                    forced[(sensor.mine, sensor.id, condition, e.ts)] = e
                    self._swallowed.setdefault((e.sensor, "trend", condition), e.ts)
            elif not is_early_warning(e.rule, e.condition):
                out.append(e)
            elif e.firing and alarms[e.sensor] and e.condition not in warnings[e.sensor]:
                self._swallowed.setdefault(key, e.ts)  # the alarm is in force: no warning
            elif not e.firing and self._swallowed.pop(key, None) is not None:
                pass  # the detector lets go of a superseded condition: nothing is open
            else:
                # a fresh firing (the detector had lost it, or raises it after the alarm), or
                # the resolve of an open warning
                self._swallowed.pop(key, None)
                if e.firing:
                    warnings[e.sensor][e.condition] = e.scope
                else:
                    warnings[e.sensor].pop(e.condition, None)
                out.append(e)
        if self._swallowed.keys() != before.keys():
            self._persist(before)
        return out, forced

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

    def _persist(self, before: dict[_Key, int]) -> None:
        with self.db.transaction() as c:
            for key in before.keys() - self._swallowed.keys():
                c.execute("DELETE FROM alert_superseded WHERE sensor=? AND rule=? AND"
                          " condition=?", (self.registry.sensors[key[0]].key, key[1], key[2]))
            for key in self._swallowed.keys() - before.keys():
                c.execute("INSERT INTO alert_superseded VALUES (?, ?, ?, ?) ON CONFLICT DO"
                          " NOTHING", (self.registry.sensors[key[0]].key, key[1], key[2],
                                       self._swallowed[key]))
