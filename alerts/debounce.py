"""The ``pending`` state: a rule's ``for`` duration, and the minimum resolve hold.

- ``for_s`` (per rule, ``[alerts.for_s]``, default none): a firing event is held as *pending*
  until ``for`` has passed on the service clock; if the condition ends first, the episode never
  fires (the crossing was a blip). When it fires, the event keeps the time and value of the first
  crossing, so the episode id and ``started_at`` name the first crossing.
- ``resolve_hold_s`` (``[alerts] resolve_hold_s``, default 30 s): a resolve is held that long; if
  the condition comes back meanwhile, the episode simply goes on — flapping around a limit gives
  one episode, not dozens (on top of the detectors' hysteresis).

``limit_power_off`` is never held as pending (the loader refuses a ``for`` on it): the safety
floor. Time is the ``now_ms`` passed in; the dispatcher calls :meth:`Debounce.apply` with every
batch and about once a second with no events, which is when held events fall due.

Held events are persisted (table ``alert_hold`` of the alerts state file), so a restart neither
forgets a pending timer nor restarts it. Events are keyed by (sensor, rule, condition). After a
restart the detectors must see the world as they left it: a pending condition as firing (they
fired it), and an open episode whose resolve is held as *not* firing (they had ended it on a
reading) — else the first reading after the restart would end it a second time, as a resolve
whose start is unknown. :meth:`Debounce.restore` says which is which.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence

from alerts.db import StateDB
from config.model import Registry
from detectors.base import Event

__all__ = ["Debounce"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_hold (
    sensor    TEXT    NOT NULL,
    rule      TEXT    NOT NULL,
    condition TEXT    NOT NULL,
    held      TEXT    NOT NULL,
    due_at    INTEGER NOT NULL,
    event     TEXT    NOT NULL,
    PRIMARY KEY (sensor, rule, condition)
);
"""

_Key = tuple[int, str, str]
_PENDING, _RESOLVING = "pending", "resolving"


def _key(e: Event) -> _Key:
    return (e.sensor, e.rule, e.condition)


class Debounce:
    """Holds firing events for their rule's ``for`` and resolves for the resolve hold."""

    def __init__(self, registry: Registry, db: StateDB, *, for_ms: Mapping[str, int],
                 resolve_hold_ms: int) -> None:
        self.registry = registry
        self.db = db
        self.for_ms = {rule: ms for rule, ms in for_ms.items() if rule != "limit_power_off"}
        self.resolve_hold_ms = resolve_hold_ms
        self._held: dict[_Key, tuple[str, int, Event]] = {}
        db.ensure(SCHEMA)

    def restore(self) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        """Take held events back from the state file. Returns the (sensor, condition) held
        pending — the detector fired them: it must regard them as firing — and those held
        resolving — the detector ended them: it must not, though their episodes are open."""
        for sensor, _rule, _cond, held, due_at, raw in self.db.query("SELECT * FROM alert_hold"):
            index = self.registry.index.get(str(sensor))
            if index is None:
                continue  # the sensor left the configuration: nothing to hold for
            fields = json.loads(str(raw))
            event = Event(**{**fields, "sensor": index})
            self._held[_key(event)] = (str(held), int(due_at), event)
        held_as = {kind: [(k[0], k[2]) for k, (held, _, _) in self._held.items() if held == kind]
                   for kind in (_PENDING, _RESOLVING)}
        return held_as[_PENDING], held_as[_RESOLVING]

    def pending(self) -> list[tuple[Event, int]]:
        """Pending events and when each falls due."""
        return [(e, due) for held, due, e in self._held.values() if held == _PENDING]

    def apply(self, events: Sequence[Event], now_ms: int) -> list[Event]:
        """The events to act on now: those not held, then held ones that fell due."""
        out: list[Event] = []
        changed: list[tuple[_Key, tuple[str, int, Event] | None]] = []
        for event in events:
            key = _key(event)
            held = self._held.get(key)
            if held is not None and held[0] == (_RESOLVING if event.firing else _PENDING):
                # back before the hold ran out: the blip (or the gap) never happened
                del self._held[key]
                changed.append((key, None))
                continue
            wait = (self.for_ms.get(event.rule, 0) if event.firing else self.resolve_hold_ms)
            if wait > 0:
                entry = (_PENDING if event.firing else _RESOLVING, now_ms + wait, event)
                self._held[key] = entry
                changed.append((key, entry))
            else:
                out.append(event)
        for key, (_held, due, event) in sorted(self._held.items(), key=lambda kv: kv[1][1]):
            if due <= now_ms:
                out.append(event)
                del self._held[key]
                changed.append((key, None))
        if changed:
            self._persist(changed)
        return out

    def forget(self, sensors: Collection[str]) -> None:
        """Drop every held event of these sensors (``mine/id``: removed from the
        configuration); a pending one never fired, a resolving one is resolved by the caller."""
        gone = [k for k in self._held if self.registry.sensors[k[0]].key in sensors]
        if gone:
            self._persist([(k, None) for k in gone])
            for key in gone:
                del self._held[key]

    def _persist(self, changed: list[tuple[_Key, tuple[str, int, Event] | None]]) -> None:
        with self.db.transaction() as c:
            for key, entry in changed:
                sensor = self.registry.sensors[key[0]].key
                c.execute("DELETE FROM alert_hold WHERE sensor=? AND rule=? AND condition=?",
                          (sensor, key[1], key[2]))
                if entry is not None:
                    held, due, event = entry
                    c.execute("INSERT INTO alert_hold VALUES (?,?,?,?,?,?)",
                              (sensor, key[1], key[2], held, due,
                               json.dumps({**dataclasses.asdict(event), "sensor": 0})))
