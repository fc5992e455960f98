"""A substation that buffers its readings through an outage and resends them at once (断电续传,
issue 18) gives, through the real service, the alerts a live feed would have given — same ids,
conditions and started_at — marked ``late``, and the no-data episode of its silence closed by the
back-fill with real times, never left open.

Ten minutes of feed are played at 50× on a service whose clock runs 50× too (its clock is a
parameter, as everywhere in jinmei), so the other substations are live while S01 — the one
with the longwall's methane points T0/T1/T2 — is held and sent in one go at the end.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from alerts.record import AlertRecord
from bench.through_service import alert_set, in_process
from config.loader import load_deployment
from config.model import HttpConfig
from jinmei.service import Service
from simulators.feed import generate
from simulators.publisher import publish
from tests.servers import Mosquitto, wait_until

pytestmark = pytest.mark.integration

SPEED = 50.0
HELD = "jinmei/dayan/telemetry/S01"


def test_a_substation_held_ten_minutes_gives_the_live_alerts_marked_late(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    deployment = load_deployment(None)
    mine = next(m for m in deployment.mines if m.id == "dayan")
    started = time.time()

    def clock() -> float:  # the service's clock runs at the feed's pace
        return started + (time.time() - started) * SPEED

    messages = list(generate(mine, "methane-rise", start_ms=int(started * 1000),
                             duration_s=600, seed=11))
    live = [m for m in messages if m.topic != HELD]
    held = [m for m in messages if m.topic == HELD]
    expected = in_process(mine, messages, deployment.detectors)
    assert {k[2] for k in expected} & {"T0-1201", "T1-1201", "T2-1201"}  # S01 raises alerts

    config = dataclasses.replace(
        deployment, http=HttpConfig(listen=""),
        broker=dataclasses.replace(deployment.broker, url=mosquitto.url,
                                   client_id="jinmei-backfill"),
        store=dataclasses.replace(deployment.store, url=f"sqlite:///{tmp_path / 'r.db'}"),
        ingest=dataclasses.replace(deployment.ingest, state_dir=str(tmp_path / "state")),
        alerts=dataclasses.replace(deployment.alerts, resolve_hold_s=0.0, receivers=(),
                                   routes=()))
    service = Service(config, clock=clock)
    assert service.start(wait_subscribed_s=10)
    try:
        publish(live, mosquitto.url, speed=SPEED, client_id="substations-live")
        publish(held, mosquitto.url, speed=None, client_id="substation-s01-resend")
        assert wait_until(lambda: service.pipeline.stats.messages >= len(messages), 60)
        time.sleep(0.5)  # the batch in hand is recorded
    finally:
        service.stop()

    record = AlertRecord(tmp_path / "state" / "alerts.db")
    try:
        alerts = record.history()
    finally:
        record.close()
    assert alert_set(alerts) == expected  # the live feed's alerts, ids and started_at too
    s01 = {s.id for s in mine.sensors if s.substation == "S01"}
    firing = [a for a in alerts if a.state == "firing" and a.rule != "no_data"
              and a.mine == "dayan"]
    assert firing and all(a.late == (a.sensor in s01) for a in firing), [
        (a.sensor, a.rule, a.late) for a in firing]
    # S01's silence was seen (on the clock) and closed by the back-fill, never left open;
    # it ends no earlier than it started.
    silence = [a for a in alerts if a.rule == "no_data" and a.mine == "dayan" and a.scope == "S01"]
    assert [a.state for a in silence] == ["firing", "resolved"], silence
    assert silence[1].ended_at is not None and silence[1].ended_at >= silence[0].started_at
