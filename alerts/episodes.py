"""Alert episodes: detector events become ``firing`` / ``resolved`` alert transitions.

An episode is one condition of one sensor from the reading that started it to the reading that
ended it. Its id is the first 16 hex digits of SHA-256 over (mine, sensor, rule, condition,
started_at), so replaying the same readings gives the same ids, and the resolved transition
carries the id and ``started_at`` of its firing one. The book keeps the open episodes in memory;
after a restart :meth:`EpisodeBook.restore` takes them back (from ``AlertRecord.open_episodes``)
so a condition still firing is not announced twice and its resolve keeps the id.

Failure behaviour: nothing is dropped. A resolve whose start was never seen (state lost) still
becomes a resolved alert, with an id derived from the resolving reading and a message saying the
start is unknown. A firing event for an episode already open (the detector's state was lost but
the book's was not) adds nothing: that episode is still the one in force and was announced.
No configuration of its own: names come from :class:`~alerts.messages.Names`, the mine's name
and time zone from the registry (the mine id and Asia/Shanghai when the registry has no mines).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from alerts.messages import Names, render
from alerts.wire import Alert
from config.model import Registry
from detectors.base import Event

__all__ = ["EpisodeBook", "Names", "episode_id"]

_DEFAULT_TIMEZONE = "Asia/Shanghai"

# Where a non-limit rule comes from (a limit rule names its limits.toml row instead).
RULE_SOURCES = {
    "trend": "jinmei trend early warning (瓦斯涌出异常预警, domain.md §5): no statutory algorithm",
    "no_data": "AQ 6201-2019 patrol period ≤ 30 s; silent 2–3 periods = communication lost "
               "(通讯中断, domain.md §3)",
    "sensor_fault": "AQ 6201-2019 / MT/T 1201.1 point states: sensor fault, over-range "
                    "(domain.md §4); stuck, spike and drift amounts jinmei's own",
    "feed_fault": "AQ 1029-2019 馈电异常 and 风电闭锁 interlocks (domain.md §4)",
}


def episode_id(mine: str, sensor: str, rule: str, condition: str, started_at: int) -> str:
    """Stable id of one episode: first 16 hex of SHA-256 over its identity and start time."""
    # A unit separator between fields: ("a", "bc") and ("ab", "c") must not collide.
    identity = "\x1f".join((mine, sensor, rule, condition, str(started_at)))
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class EpisodeBook:
    """Turns detector events into alert transitions and remembers which episodes are open.

    ``config_hash`` identifies the configuration the alerts were raised under; the book does
    not use it, the caller hands it on to ``AlertRecord.append`` with the alerts.
    """

    def __init__(self, registry: Registry, names: Names, config_hash: str = "") -> None:
        self.registry = registry
        self.names = names
        self.config_hash = config_hash
        self._open: dict[tuple[str, str, str, str], Alert] = {}

    def apply(self, events: Sequence[Event]) -> list[Alert]:
        """The alert transitions these events make, in event order."""
        transitions = []
        for event in events:
            sensor = self.registry.sensors[event.sensor]
            key = (sensor.mine, sensor.id, event.rule, event.condition)
            if event.firing:
                if key in self._open:
                    continue  # already firing and announced: the open episode goes on
                started_at, start_known = event.ts, True
            else:
                opened = self._open.pop(key, None)
                start_known = opened is not None
                started_at = opened.started_at if opened is not None else event.ts
            alert = Alert(
                id=episode_id(*key, started_at),
                mine=sensor.mine, sensor=sensor.id, kind=sensor.kind, rule=event.rule,
                severity=event.severity, state="firing" if event.firing else "resolved",
                value=event.value, limit=event.limit, started_at=started_at, ts=event.ts,
                message="", condition=event.condition, unit=sensor.unit,
                location=sensor.location, place=sensor.place, scope=event.scope,
                source=RULE_SOURCES.get(event.rule, sensor.limits.source),
                ended_at=None if event.firing else event.ts, version=1, late=event.late)
            mine = self.registry.mine(sensor.mine)
            message = render(
                alert, names=self.names, inclusive=sensor.limits.inclusive,
                mine_name=(mine.name, mine.name_en) if mine else (sensor.mine, sensor.mine),
                timezone=mine.timezone if mine and mine.timezone else _DEFAULT_TIMEZONE,
                start_known=start_known)
            alert = msgspec.structs.replace(alert, message=message)
            if event.firing:
                self._open[key] = alert
            transitions.append(alert)
        return transitions

    def open(self) -> list[Alert]:
        """The firing transition of every episode still open, oldest start first."""
        return sorted(self._open.values(), key=lambda a: (a.started_at, a.id))

    def restore(self, open_alerts: Sequence[Alert]) -> None:
        """Know these episodes as open (after a restart): no re-fire, and resolve keeps the id."""
        for alert in open_alerts:
            if alert.state != "firing":
                raise ValueError(f"episode {alert.id} is {alert.state!r}, not firing: "
                                 "only open episodes can be restored")
            self._open[(alert.mine, alert.sensor, alert.rule, alert.condition)] = alert
