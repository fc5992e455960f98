"""No data judged by due times: the same events as judging every substation at every call.

``NoDataDetector`` judges only the substations of a batch's sensors and those due by the clock
(detectors/silence.py, "Cost"). The oracle here is the same detector made to judge every
substation at every call — what it did before — so any substation the due times miss shows as
a missing or late event. Random registries (1–5 substations of 1 Hz, 10 s and 30 s points),
random feeds with sensors and whole substations dying and coming back, back-fill, calibration,
ticks with no reading, a clock that steps back, and restores before and while running.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import DetectorConfig, Limits, Registry, Sensor
from config.readings import ReadingBatch, Status
from detectors.base import Event
from detectors.silence import NoDataDetector

T0 = 1_800_000_000_000
CH4 = Limits(alarm_high=1.0, release_high=1.0, power_off=1.5, restore=1.0)


class EverySubstation(NoDataDetector):
    """The oracle: judges every substation at every call."""

    def _judge(self, now: int, batch: ReadingBatch | None) -> list[Event]:
        self._judge_all = True
        return super()._judge(now, batch)


def random_registry(rng: np.random.Generator) -> Registry:
    sensors = []
    for station in range(int(rng.integers(1, 6))):
        for k in range(int(rng.integers(1, 6))):
            period = float(rng.choice([1.0, 10.0, 30.0]))
            guard = rng.random() < 0.5
            sensors.append(Sensor(f"m{station % 2}", f"X{station}-{k}", "ch4", "%",
                                  "longwall_face", "", "A", f"S{station}", period, 0.0, 4.0,
                                  CH4 if guard else Limits(alarm_high=1.0)))
    return Registry.from_sensors(sensors)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_due_times_give_the_events_of_judging_every_substation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    registry = random_registry(rng)
    n = len(registry)
    due, every = NoDataDetector(registry, DetectorConfig()), EverySubstation(registry,
                                                                            DetectorConfig())
    if rng.random() < 0.3:  # a restart with open episodes
        carried = [(i, "silent") for i in np.flatnonzero(rng.random(n) < 0.2).tolist()]
        carried += [(i, "substation_silent") for i in np.flatnonzero(rng.random(n) < 0.1)]
        due.restore(carried)
        every.restore(carried)
    now, alive, events = T0, rng.random(n) < 0.8, 0
    for _ in range(120):
        # Mostly forward by up to 25 s, sometimes a long gap, sometimes a step back.
        now += int(rng.integers(-3_000, 25_000) if rng.random() < 0.9
                   else rng.integers(0, 200_000))
        if rng.random() < 0.1:
            alive = rng.random(n) < rng.random()  # sensors and whole substations die, revive
        who = np.flatnonzero(alive & (rng.random(n) < 0.7))
        if who.size == 0 or rng.random() < 0.3:
            found, expected = due.tick(now), every.tick(now)
        else:
            batch = ReadingBatch(who.astype(np.int32),
                                 now - rng.integers(-1_000, 120_000, who.size),  # back-fill too
                                 np.round(rng.random(who.size), 2),
                                 np.where(rng.random(who.size) < 0.1, Status.CALIBRATION,
                                          0).astype(np.uint16))
            found, expected = due.update(batch, now), every.update(batch, now)
        assert found.events == expected.events
        events += len(found.events)
        if rng.random() < 0.02:  # restored into a running detector
            carried = [(i, "silent") for i in np.flatnonzero(rng.random(n) < 0.2).tolist()]
            due.restore(carried)
            every.restore(carried)
    assert due.active() == every.active()


# A large registry: 10,000 points at 10 s, 100 on each of 100 substations.
N, PER_STATION, PERIOD_MS = 10_000, 100, 10_000
LOST = 3_737  # the point that dies, on substation S37


def large_registry() -> Registry:
    return Registry.from_sensors([
        Sensor("bench", f"T1-{i:05d}", "ch4", "%", "longwall_face", "", f"A{i // 10}",
               f"S{i // PER_STATION:03d}", PERIOD_MS / 1000, 0.0, 4.0, CH4)
        for i in range(N)])


def messages(second: int, skip: int | None) -> list[ReadingBatch]:
    """One patrol round at ``second``: one message (batch) per substation, as a substation
    sends them, without ``skip``'s reading."""
    out = []
    for station in range(N // PER_STATION):
        sensor = np.arange(station * PER_STATION, (station + 1) * PER_STATION, dtype=np.int32)
        sensor = sensor[sensor != skip]
        ts = T0 + second * 1000 + station * 50  # the substations staggered over 5 s
        out.append(ReadingBatch(sensor, np.full(sensor.size, ts, np.int64),
                                np.full(sensor.size, 0.3), np.zeros(sensor.size, np.uint16)))
    return out


def test_a_point_going_silent_among_10000_reporting_ones_is_flagged_in_time() -> None:
    registry = large_registry()
    due, every = NoDataDetector(registry, DetectorConfig()), EverySubstation(registry,
                                                                            DetectorConfig())
    found: list[Event] = []
    for second in range(0, 80, 10):  # the lost point's last reading is at 0 s
        for batch in messages(second, None if second == 0 else LOST):
            now = int(batch.ts.max())
            events = due.update(batch, now).events
            assert events == every.update(batch, now).events
            found += events
        assert due.tick(T0 + second * 1000 + 9_999).events == []
    # 3 periods (30 s) after 0 s + 1.85 s (S37's stagger): flagged at the first of its
    # siblings' messages after that, at 40 s, and by nobody else.
    assert [(e.sensor, e.condition, e.firing, e.ts) for e in found] == [
        (LOST, "silent", True, T0 + 40_000 + 37 * 50)]
    assert found[0].severity == "critical"  # it guards a power-off area (故障闭锁)


def test_a_silent_mine_is_flagged_by_the_clock_alone() -> None:
    registry = large_registry()
    due, every = NoDataDetector(registry, DetectorConfig()), EverySubstation(registry,
                                                                            DetectorConfig())
    for second in (0, 10):
        for batch in messages(second, None):
            due.update(batch, int(batch.ts.max()))
            every.update(batch, int(batch.ts.max()))
    # Nothing arrives any more: only the one-second clock runs the detector.
    found: list[Event] = []
    for second in range(11, 60):
        events = due.tick(T0 + second * 1000).events
        assert events == every.tick(T0 + second * 1000).events
        found += events
    # Each substation once, as a whole (not 100 silent points), the second its 30 s ran out.
    assert sorted(e.scope for e in found) == [f"S{k:03d}" for k in range(N // PER_STATION)]
    assert {e.condition for e in found} == {"substation_silent"}
    for e in found:
        heard = T0 + 10_000 + int(e.scope[1:]) * 50
        assert heard + 30_000 < e.ts <= heard + 31_000
    assert due.tick(T0 + 600_000).events == []  # still silent: nothing new, nothing ended
    # One substation comes back: its episode ends at its reading, the others stay open.
    back = messages(600, None)[5]
    ended = due.update(back, int(back.ts.max())).events
    assert [(e.condition, e.firing, e.scope) for e in ended] == [
        ("substation_silent", False, "S005")]


def test_a_point_heard_after_the_clock_stepped_back_is_judged_by_its_own_deadline() -> None:
    # The one case where a point's own deadline, not its substation's pace, is due first:
    # a sibling was heard at 400 s, then the clock went back to 200 s, when the point was
    # heard. Its 30 s run out at 230 s while the clock is still behind its sibling's reading.
    registry = Registry.from_sensors([
        Sensor("m", f"T{k}", "ch4", "%", "longwall_face", "", "A", "S0", 10.0, 0.0, 4.0, CH4)
        for k in range(2)])
    due, every = NoDataDetector(registry, DetectorConfig()), EverySubstation(registry,
                                                                            DetectorConfig())
    found = []
    for detector in (due, every):
        for sensor, second in ((0, 400), (1, 200)):
            batch = ReadingBatch(np.array([sensor], np.int32), np.array([T0 + second * 1000]),
                                 np.array([0.3]), np.zeros(1, np.uint16))
            assert detector.update(batch, T0 + second * 1000).events == []
        found.append([(e.sensor, e.condition, e.ts) for e in detector.tick(T0 + 231_000).events])
    assert found[0] == found[1] == [(1, "silent", T0 + 231_000)]
