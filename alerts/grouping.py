"""When to notify a receiver about a group of alerts: a pure function of the group's state.

A group is one receiver's alerts of one mine and area (working face or heading): alerts that
start together are sent as one notification. :func:`should_notify` decides, like
Alertmanager's, from what is waiting, what was last sent and ``now`` (all epoch ms):

- a new group (nothing sent, or nothing firing at the last send) waits ``group_wait`` after
  its first transition, so a storm collects into one message;
- later changes go out at most every ``group_interval``;
- a group still firing with no change is re-sent every ``repeat_interval``;
- a methane power-off (``floor``) goes out at once: the safety floor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["GroupState", "Reason", "Timing", "should_notify"]


class Reason(enum.Enum):
    WAIT = "wait"                # transitions wait for the group wait / interval to pass
    NOTHING = "nothing"          # nothing new, nothing to repeat
    FIRST = "first"              # a new group's wait has passed
    UPDATE = "update"            # changes since the last send, interval passed
    REPEAT = "repeat"            # still firing, unchanged for a repeat interval
    FLOOR = "floor"              # a methane power-off: at once, whatever the timers say
    ESCALATION = "escalation"    # critical and unacknowledged for too long (dispatcher)
    SYSTEM = "system"            # about jinmei itself: at once, never muted (alerts.system)

    @property
    def send(self) -> bool:
        return self not in (Reason.WAIT, Reason.NOTHING)


@dataclass(frozen=True, slots=True)
class Timing:
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int


@dataclass(frozen=True, slots=True)
class GroupState:
    """``first_waiting_at``: when the oldest unsent transition arrived (None: none waits);
    ``last_sent_at``: the last notification (None: never); ``firing_sent``: alerts of the group
    still firing that the receiver was told about; ``floor``: a power-off is among the waiting."""

    first_waiting_at: int | None
    last_sent_at: int | None
    firing_sent: bool
    floor: bool = False


def should_notify(group: GroupState, now_ms: int, timing: Timing) -> Reason:
    if group.first_waiting_at is not None:
        if group.floor:
            return Reason.FLOOR
        if group.last_sent_at is None or not group.firing_sent:
            due = group.first_waiting_at + timing.group_wait_ms
            return Reason.FIRST if now_ms >= due else Reason.WAIT
        due = group.last_sent_at + timing.group_interval_ms
        return Reason.UPDATE if now_ms >= due else Reason.WAIT
    if (group.firing_sent and group.last_sent_at is not None
            and now_ms >= group.last_sent_at + timing.repeat_interval_ms):
        return Reason.REPEAT
    return Reason.NOTHING
