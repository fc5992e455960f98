"""System alerts (alerts/system.py) on a real alerts state file: one per mine, fired once,
resolved only on evidence, kept across a restart under the same ids, routed by rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts.outbox import Outbox
from alerts.system import Condition, SystemAlerts
from config.loader import load_deployment
from config.model import Route

MINES = load_deployment(None).mines
T0 = 1_795_614_332_000
BROKER_LOST = Condition("monitoring_offline", "broker_lost", "mqtt://broker:1883", T0, 60.0)


def system(path: Path, published: list[str] | None = None,
           routes: tuple[Route, ...] = ()) -> SystemAlerts:
    sink = published if published is not None else []
    return SystemAlerts(MINES, routes, {}, path, config_hash="h", instance="jinmei@test",
                        publish=lambda topic, payload: sink.append(topic))


def test_a_condition_fires_once_per_mine_and_resolves_only_on_evidence(tmp_path: Path) -> None:
    published: list[str] = []
    alerts = system(tmp_path / "alerts.db", published)
    fired = alerts.sync([BROKER_LOST], lambda c: True, T0 + 75_000)
    assert sorted(a.mine for a in fired) == sorted(m.id for m in MINES)
    assert {(a.rule, a.severity, a.kind, a.sensor, a.state) for a in fired} == \
        {("monitoring_offline", "critical", "system", "jinmei", "firing")}
    assert {(a.value, a.limit, a.started_at) for a in fired} == {(75.0, 60.0, T0)}
    assert alerts.sync([BROKER_LOST], lambda c: True, T0 + 80_000) == []  # still the same one
    assert alerts.sync([], lambda c: False, T0 + 85_000) == []  # gone, but no evidence yet
    resolved = alerts.sync([], lambda c: c == "broker_lost", T0 + 90_000)
    assert sorted(a.id for a in resolved) == sorted(a.id for a in fired)
    assert {(a.state, a.value, a.ended_at) for a in resolved} == {("resolved", 90.0, T0 + 90_000)}
    assert alerts.open() == []
    assert published == [f"jinmei/{a.mine}/alerts" for a in fired + resolved]
    alerts.close()


def test_open_system_episodes_survive_a_restart_under_their_ids(tmp_path: Path) -> None:
    first = system(tmp_path / "alerts.db")
    stalled = Condition("monitoring_offline", "worker_stalled", "jinmei-ingest", T0, 30.0)
    fired = first.fire(stalled, T0 + 31_000)
    first.close()

    second = system(tmp_path / "alerts.db")
    assert [a.id for a in second.open()] == [a.id for a in sorted(
        fired, key=lambda a: (a.started_at, a.mine, a.rule))]
    assert second.fire(stalled, T0 + 40_000) == []  # known as open: not announced again
    resolved = second.sync([], lambda c: True, T0 + 50_000)
    assert {a.id for a in resolved} == {a.id for a in fired}
    assert all(a.ended_at == T0 + 50_000 and "重新上线" in a.message for a in resolved)
    second.close()


def test_notifications_go_to_routed_receivers_only_with_reason_system(tmp_path: Path) -> None:
    routes = (Route(("desk",), rules=("store_fault",)),
              Route(("regulator",), rules=("monitoring_offline",), mines=(MINES[0].id,)))
    alerts = system(tmp_path / "alerts.db", routes=routes)
    alerts.fire(Condition("store_fault", "store_error", "sqlite:x", T0, 30.0), T0 + 30_000)
    alerts.fire(BROKER_LOST, T0 + 60_000)
    rows = Outbox(alerts.db).owed()
    sent = sorted((r.receiver, r.notification.mine, r.notification.alerts[0].rule) for r in rows)
    assert sent == sorted([("desk", m.id, "store_fault") for m in MINES]
                          + [("regulator", MINES[0].id, "monitoring_offline")])
    assert {r.notification.reason for r in rows} == {"system"}
    alerts.close()


@pytest.mark.parametrize("condition", ["broker_lost", "store_failing", "worker_dead",
                                       "worker_stalled", "store_error"])
def test_every_condition_is_worded_in_both_languages(tmp_path: Path, condition: str) -> None:
    rule = "store_fault" if condition == "store_error" else "monitoring_offline"
    alerts = system(tmp_path / "alerts.db")
    fired = alerts.fire(Condition(rule, condition, "scope-x", T0, 30.0), T0 + 45_000)
    resolved = alerts.sync([], lambda c: True, T0 + 60_000)
    alerts.close()
    for a in fired + resolved:
        zh, en = a.message.split("\n")
        assert zh.startswith("【") and en.startswith("[") and "{" not in a.message
        assert "jinmei@test" in zh and "jinmei@test" in en
    if condition != "worker_dead":  # a dead thread has no duration to tell
        assert "45 s" in fired[0].message and "30 s" in fired[0].message
