"""The alert stage pipeline behind AlertDispatcher: pending, grouping, inhibition, silences,
escalation, safety floor — driven by a passed-in clock, notifications read from the outbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.grouping import GroupState, Reason, Timing, should_notify
from alerts.record import AlertRecord
from alerts.silences import Matchers
from config.model import AlertsConfig, Receiver, Registry, Route
from detectors.base import Event
from tests.servers import sample_sensor

REGISTRY = Registry.from_sensors([sample_sensor("qipanjing", "T1-1101"),
                                  sample_sensor("qipanjing", "T2-1101")])
T1, T2 = 0, 1
DESK = Receiver("desk", "webhook", (("url", "http://127.0.0.1:9/"),))
REGULATOR = Receiver("regulator", "webhook", (("url", "http://127.0.0.1:9/"),))
CONFIG = AlertsConfig(group_wait_s=10, group_interval_s=60, repeat_interval_s=600,
                      for_s=(("limit_alarm", 5.0),), receivers=(DESK, REGULATOR),
                      routes=(Route(receivers=("desk",), escalate_after_s=300,
                                    escalate_to=("regulator",), severities=("critical",)),
                              Route(receivers=("desk",), severities=("alarm",))))


def ev(sensor: int, rule: str, firing: bool, ts: int, value: float = 1.2) -> Event:
    condition = "power_off" if rule == "limit_power_off" else "alarm_high"
    severity = "critical" if rule == "limit_power_off" else "alarm"
    return Event(sensor, rule, condition, severity, firing, ts, value, 1.0)


def open_dispatcher(path: Path, config: AlertsConfig = CONFIG) -> AlertDispatcher:
    d = AlertDispatcher(REGISTRY, Names(), AlertRecord(path), config_hash="cafe",
                        publish=lambda t, p: None, config=config)
    d.restore()
    return d


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[AlertDispatcher]:
    d = open_dispatcher(tmp_path / "alerts.db")
    yield d
    d.close()
    d.record.close()


def sent(d: AlertDispatcher) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [(n.receiver, n.reason, [(a.rule, a.state) for a in n.alerts])
            for n in d.notifications()]


TIMING = Timing(group_wait_ms=10, group_interval_ms=60, repeat_interval_ms=600)


@pytest.mark.parametrize(("state", "now", "reason"), [
    (GroupState(None, None, False), 1000, Reason.NOTHING),   # nothing waits, nothing was sent
    (GroupState(100, None, False), 105, Reason.WAIT),        # a new group collects its storm
    (GroupState(100, None, False), 110, Reason.FIRST),       # ... until the group wait is over
    (GroupState(100, None, False, floor=True), 100, Reason.FLOOR),  # power-off: at once
    (GroupState(100, 90, True), 120, Reason.WAIT),           # a change waits for the interval
    (GroupState(100, 90, True), 150, Reason.UPDATE),         # ... then goes out
    (GroupState(100, 90, True, floor=True), 91, Reason.FLOOR),  # the floor ignores the interval
    (GroupState(200, 90, False), 205, Reason.WAIT),          # a quiet group wakes: group wait
    (GroupState(None, 90, True), 600, Reason.NOTHING),       # firing, not yet a repeat
    (GroupState(None, 90, True), 690, Reason.REPEAT),        # firing and unchanged: repeat
    (GroupState(None, 90, False), 5000, Reason.NOTHING),     # all resolved: nothing to repeat
])
def test_should_notify(state: GroupState, now: int, reason: Reason) -> None:
    assert should_notify(state, now, TIMING) is reason


def test_pending_then_firing_keeps_the_first_crossing(dispatcher: AlertDispatcher) -> None:
    assert dispatcher.apply([ev(T1, "limit_alarm", True, 1_000)], 1_000) == []
    assert dispatcher.apply([], 5_999) == []
    fired = dispatcher.apply([], 6_000)
    assert [(a.state, a.started_at) for a in fired] == [("firing", 1_000)]


def test_a_blip_shorter_than_for_never_fires(dispatcher: AlertDispatcher) -> None:
    dispatcher.apply([ev(T1, "limit_alarm", True, 1_000)], 1_000)
    dispatcher.apply([ev(T1, "limit_alarm", False, 3_000, 0.8)], 3_000)
    assert dispatcher.apply([], 60_000) == [] and dispatcher.record.history() == []


def test_storm_is_grouped_and_power_off_goes_at_once(dispatcher: AlertDispatcher) -> None:
    now = 1_000
    dispatcher.apply([ev(T2, "limit_alarm", True, now)], now)
    dispatcher.apply([], now + 5_000)                       # T2's alarm fires (for 5 s) ...
    assert sent(dispatcher) == []                           # ... and waits for its group
    dispatcher.apply([ev(T1, "limit_power_off", True, 7_000, 1.6)], 7_000)
    # the power-off goes out at once and takes the waiting alarm along: one message
    assert sent(dispatcher) == [("desk", "floor", [("limit_alarm", "firing"),
                                                   ("limit_power_off", "firing")])]


def test_a_firing_and_its_resolve_in_one_batch_go_as_two_batches_would(tmp_path: Path) -> None:
    """Active-active (issue 15): the same transitions give the same notifications and keys
    whether a busy instance took the power-off and its end in one batch or a quiet one in two."""
    config = AlertsConfig(group_wait_s=10, group_interval_s=60, resolve_hold_s=0.0,
                          receivers=(DESK,),
                          routes=(Route(receivers=("desk",), severities=("critical",)),))
    fired, ended = (ev(T1, "limit_power_off", True, 1_000, 1.6),
                    ev(T1, "limit_power_off", False, 2_000, 0.5))
    busy, quiet = (open_dispatcher(tmp_path / f"{n}.db", config) for n in ("busy", "quiet"))
    busy.apply([fired, ended], 2_000)
    quiet.apply([fired], 1_000)
    quiet.apply([ended], 2_000)
    for d in (busy, quiet):
        assert sent(d) == [("desk", "floor", [("limit_power_off", "firing")])]  # at once
        d.apply([], 59_000)
        assert len(sent(d)) == 1                   # the resolve waits for the group interval
        d.apply([], 62_000)
        assert sent(d)[1:] == [("desk", "update", [("limit_power_off", "resolved")])]
    assert [n.key for n in busy.notifications()] == [n.key for n in quiet.notifications()]
    for d in (busy, quiet):
        d.close()
        d.record.close()


def test_power_off_inhibits_the_alarm_of_its_sensor(dispatcher: AlertDispatcher) -> None:
    dispatcher.apply([ev(T1, "limit_power_off", True, 1_000, 1.6)], 1_000)
    dispatcher.apply([ev(T1, "limit_alarm", True, 1_000, 1.6)], 1_000)
    dispatcher.apply([], 30_000)
    assert [r for _, _, a in sent(dispatcher) for r in a] == [("limit_power_off", "firing")]
    reasons = dispatcher.db.query("SELECT decision, reason FROM alert_notification"
                                  " WHERE id IN (SELECT id FROM alert_transition"
                                  " WHERE rule = 'limit_alarm')")
    assert reasons[0][0] == "muted" and "inhibited by power-off" in reasons[0][1]


def test_silence_mutes_until_it_expires_but_never_the_floor(
        dispatcher: AlertDispatcher) -> None:
    dispatcher.silences.add(Matchers(mine="qipanjing"), 0, 100_000, "li", "calibration", 0)
    dispatcher.apply([ev(T1, "limit_power_off", True, 1_000, 1.6)], 1_000)
    dispatcher.apply([ev(T2, "limit_alarm", True, 1_000)], 1_000)
    dispatcher.apply([], 50_000)
    assert sent(dispatcher) == [("desk", "floor", [("limit_power_off", "firing")])]
    assert len(dispatcher.record.history()) == 2            # silenced alerts are recorded
    dispatcher.apply([], 100_000)                           # the silence has expired ...
    dispatcher.apply([], 110_000)                           # ... its group tells T2 now
    assert sent(dispatcher)[-1] == ("desk", "update", [("limit_alarm", "firing")])


def test_unacknowledged_critical_alert_escalates_once(dispatcher: AlertDispatcher) -> None:
    dispatcher.apply([ev(T1, "limit_power_off", True, 1_000, 1.6)], 1_000)
    dispatcher.apply([], 300_999)
    assert len(sent(dispatcher)) == 1
    dispatcher.apply([], 301_000)
    dispatcher.apply([], 400_000)
    escalations = [(r, why) for r, why, _ in sent(dispatcher) if why == "escalation"]
    assert escalations == [("desk", "escalation"), ("regulator", "escalation")]


def test_acknowledged_alert_does_not_escalate(dispatcher: AlertDispatcher) -> None:
    (fired,) = dispatcher.apply([ev(T1, "limit_power_off", True, 1_000, 1.6)], 1_000)
    assert dispatcher.record.acknowledge(fired.id, "wang", 2_000)
    assert not dispatcher.record.acknowledge(fired.id, "li", 3_000)  # first ack wins
    dispatcher.apply([], 400_000)
    assert [why for _, why, _ in sent(dispatcher)] == ["floor"]


def test_flapping_gives_one_episode(tmp_path: Path) -> None:
    config = AlertsConfig(resolve_hold_s=30, routes=CONFIG.routes[1:], receivers=(DESK,))
    d = open_dispatcher(tmp_path / "alerts.db", config)
    for k in range(10):
        t = 1_000 + 4_000 * k
        d.apply([ev(T2, "limit_alarm", True, t)], t)
        d.apply([ev(T2, "limit_alarm", False, t + 2_000, 0.9)], t + 2_000)
    d.apply([], 200_000)
    assert [a.state for a in d.record.history()] == ["firing", "resolved"]


def test_restart_keeps_pending_timers_groups_and_escalations(tmp_path: Path) -> None:
    first = open_dispatcher(tmp_path / "alerts.db")
    first.apply([ev(T2, "limit_alarm", True, 1_000)], 1_000)          # pending
    first.apply([ev(T1, "limit_power_off", True, 1_000, 1.6)], 1_000)  # sent at once
    first.close()
    first.record.close()
    second = open_dispatcher(tmp_path / "alerts.db")
    assert second.restore() == [(T1, "power_off"), (T2, "alarm_high")]
    second.apply([], 6_000)                                  # the pending alarm fires on time
    second.apply([], 61_000)                                 # the group interval passes
    assert sent(second) == [("desk", "floor", [("limit_power_off", "firing")]),
                            ("desk", "update", [("limit_alarm", "firing")])]
    second.apply([], 400_000)
    second.apply([], 500_000)
    assert [why for _, why, _ in sent(second)].count("escalation") == 2  # once per receiver


def test_a_start_retires_only_removed_sensors_of_its_own_mines(tmp_path: Path) -> None:
    """After a restart on another configuration: an open episode of a sensor of a mine this
    process serves, which the configuration no longer has, is to be retired (removed from
    configuration); one of a mine it does not serve (moved to another worker) is not judged."""
    first = open_dispatcher(tmp_path / "alerts.db")
    first.apply([ev(T1, "limit_power_off", True, 1_000, 1.6),
                 ev(T2, "limit_power_off", True, 1_000, 1.6)], 1_000)
    first.close()
    first.record.close()
    other = Registry.from_sensors([sample_sensor("qipanjing", "T1-1101"),
                                   sample_sensor("dayan", "T1-1201")])
    for registry, gone in ((other, {"qipanjing/T2-1101"}),
                           (Registry.from_sensors([sample_sensor("dayan", "T1-1201")]), set())):
        d = AlertDispatcher(registry, Names(), AlertRecord(tmp_path / "alerts.db"),
                            config_hash="beef", publish=lambda t, p: None, config=CONFIG)
        d.restore()
        assert d.unconfigured() == gone
        retired = d.retire(d.unconfigured(), 5_000, "beef")
        assert [(a.sensor, a.state, a.ended_at) for a in retired] == \
            [(key.split("/")[1], "resolved", 5_000) for key in sorted(gone)]
        assert all("removed from configuration" in a.message for a in retired)
        d.close()
        d.record.close()
