"""Alert episodes: detector events become ``firing`` / ``resolved`` alert transitions.

An episode is one condition of one sensor from the reading that started it to the reading that
ended it. Its id is the first 16 hex digits of SHA-256 over (mine, sensor, rule, condition,
started_at), so replaying the same readings gives the same ids, and the resolved transition
carries the id and ``started_at`` of its firing one. The book keeps the open episodes in memory;
after a restart :meth:`EpisodeBook.restore` takes them back (from ``AlertRecord.open_episodes``)
so a condition still firing is not announced twice and its resolve keeps the id.

An episode never ends before it started: a resolving event stamped earlier than the episode's
start (a reading back-filled by a substation after an outage, a replayed feed, a reading that
arrived out of order) ends it at its start — ``ts`` and ``ended_at`` of the resolved transition
are the later of the event's time and ``started_at`` — so durations in ``alerts history`` and
``report daily`` are never negative. The value stays the resolving reading's.

Failure behaviour: nothing is dropped. A resolve whose start was never seen (state lost) still
becomes a resolved alert, with an id derived from the resolving reading and a message saying the
start is unknown. A firing event for an episode already open (the detector's state was lost but
the book's was not) adds nothing: that episode is still the one in force and was announced.
No configuration of its own: names come from :class:`~alerts.messages.Names`, the mine's name
and time zone from the registry (the mine id and Asia/Shanghai when the registry has no mines).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import msgspec

from alerts.messages import Names, render
from alerts.wire import Alert
from config.model import Registry
from detectors.base import Event

__all__ = ["REMOVED", "EpisodeBook", "Names", "episode_id"]

REMOVED = "removed from configuration"  # the reason an episode ends when its sensor is removed

_DEFAULT_TIMEZONE = "Asia/Shanghai"

# Where a non-limit rule comes from (a limit rule names its limits.toml row instead).
# These travel in every alert's ``source``: they cite the standards, never a document of ours.
RULE_SOURCES = {
    "trend": "jinmei's own trend early warning (瓦斯涌出异常预警): AQ 1029-2019 and 煤矿安全规程 "
             "set limits, no forecasting algorithm",
    "no_data": "AQ 6201-2019 patrol period ≤ 30 s; silent 2–3 periods = communication lost "
               "(通讯中断)",
    "sensor_fault": "AQ 6201-2019 / MT/T 1201.1-2023 point states: sensor fault, over-range; "
                    "stuck, spike and drift amounts jinmei's own",
    "feed_fault": "AQ 1029-2019 馈电异常 and 风电闭锁 interlocks; AQ 6201-2019 execution ≤ 2 s",
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
            ts = event.ts if event.firing else max(event.ts, started_at)
            alert = Alert(
                id=episode_id(*key, started_at),
                mine=sensor.mine, sensor=sensor.id, kind=sensor.kind, rule=event.rule,
                severity=event.severity, state="firing" if event.firing else "resolved",
                value=event.value, limit=event.limit, started_at=started_at, ts=ts,
                message="", condition=event.condition, unit=sensor.unit,
                location=sensor.location, place=sensor.place, scope=event.scope,
                source=RULE_SOURCES.get(event.rule, sensor.limits.source),
                ended_at=None if event.firing else ts, version=1, late=event.late)
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

    def retire(self, sensors: Collection[str], now_ms: int) -> list[Alert]:
        """Resolve, at ``now_ms``, every open episode of these sensors (``mine/id``), which a
        reload removed from the configuration: the reason is said in both languages."""
        gone = [key for key in self._open if f"{key[0]}/{key[1]}" in sensors]
        transitions = []
        for key in sorted(gone, key=lambda k: self._open[k].started_at):
            firing = self._open.pop(key)
            mine = self.registry.mine(firing.mine)
            zh, en = (mine.name, mine.name_en) if mine else (firing.mine, firing.mine)
            message = (f"【解除】{zh} {firing.sensor} {firing.place}：测点已从配置中删除，"
                       f"{firing.rule} 报警结束\n[RESOLVED] {en} {firing.sensor} "
                       f"{firing.rule}: {REMOVED}")
            transitions.append(msgspec.structs.replace(
                firing, state="resolved", ts=now_ms, ended_at=now_ms, message=message))
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
