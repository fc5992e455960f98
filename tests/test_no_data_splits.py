"""Same readings, same no-data episodes, however a back-fill is cut (issue 18, issue 11 item 5).

One feed: substations S01 (T1, T2, CO, KD) and S02 (JF, JF2, KD2) poll every 10 s, handled as
they come (service clock = the readings' time, a tick every second). From ``A`` on, T1 alone,
the whole of S01, or T1 and then the rest of S01 stop reaching jinmei; at ``R`` the substation
resends what it buffered (断电续传) — from ``A + lost`` on, the start of its buffer may be lost —
together with its poll at ``R``, all in one burst. The burst is cut into random messages,
each in random order, grouped into random batches, with a tick between batches; sometimes the
service restarts in the middle (after the silences were reported: the episode book's open
episodes restore the detector, as ``jinmei.pipeline`` does).

Every way must give the same alert transitions as the burst in one message — ids, starts,
ends, durations, values, message text — and those are the truth of detectors/silence.py: the
silence ends when the burst arrives (``R``), never before it started and never on the clock;
a sensor's ending shows its oldest resent reading (its last measured one before the silence
when that is calibration gas); a substation's shows its representative's last reading.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.episodes import EpisodeBook, Names
from alerts.wire import Alert
from config.readings import Status
from detectors.silence import NoDataDetector
from tests.test_detectors_rules import CONFIG, INDEX, REGISTRY, T0
from tests.test_no_data_truth import Row, batch

CAL = int(Status.CALIBRATION)
S01, S02 = ("T1", "T2", "CO", "KD"), ("JF", "JF2", "KD2")
A = 100  # s: the first poll held back
AFTER_S = 60  # s of live feed after the burst


def value(sensor: str, t: int) -> float:
    """A reading that tells sensors and times apart."""
    return round(0.30 + INDEX[sensor] * 0.05 + (t // 10 % 9) * 0.01, 2)


@dataclass(frozen=True)
class Outage:
    who: str           # "T1", "S01" or "T1+S01" (T1 first, the rest of S01 60 s later)
    length_s: int      # R − A
    lost_s: int        # the substation's buffer starts at A + lost_s
    calibrating: bool  # T1's oldest resent reading is calibration gas

    @property
    def resent_at(self) -> int:
        return A + self.length_s

    def held_from(self, sensor: str) -> int | None:
        """From when this sensor's polls do not reach jinmei live (None: they all do)."""
        if (sensor == "T1" and self.who != "S01") or (sensor in S01 and self.who == "S01"):
            return A
        return A + 60 if sensor in S01 and self.who == "T1+S01" else None

    def resent(self) -> list[Row]:
        """The burst at R: the buffered polls in time order, then the poll at R."""
        rows = [(s, t, value(s, t), 0) for t in range(A, self.resent_at + 1, 10) for s in S01
                if (held := self.held_from(s)) is not None and t >= max(held, A + self.lost_s)]
        if self.calibrating:
            first = next(k for k, r in enumerate(rows) if r[0] == "T1")
            rows[first] = ("T1", rows[first][1], 2.0, CAL)
        return [(s, float(t), v, status) for s, t, v, status in rows]


outages = st.builds(Outage, st.sampled_from(["T1", "S01", "T1+S01"]),
                    st.integers(10, 25).map(lambda n: 10 * n),
                    st.integers(0, 26).map(lambda n: 10 * n), st.booleans()).filter(
    lambda o: o.lost_s <= o.length_s)


Step = tuple[int, list[list[Row]] | None]  # (service clock in s, batches of an update | a tick)


def timeline(outage: Outage, burst: list[list[Row]]) -> Iterator[Step]:
    """The live polls and ticks, with ``burst`` (batches) arriving at R after R's live polls."""
    for t in range(0, outage.resent_at + AFTER_S + 1):
        if t % 10 == 0:
            for station in (S01, S02):
                live = [(s, float(t), value(s, t), 0) for s in station
                        if t > outage.resent_at or (held := outage.held_from(s)) is None
                        or t < held]
                if live:
                    yield t, [live]
            if t == outage.resent_at:
                for rows in burst:
                    yield t, [rows]
                    yield t, None  # the clock runs between batches too
        yield t, None


def cut(rows: list[Row], rnd: random.Random) -> list[list[Row]]:
    """``rows`` in random messages (each shuffled) grouped into random batches."""
    bounds = sorted({0, len(rows), *rnd.sample(range(1, len(rows)), rnd.randint(
        0, len(rows) - 1))})
    messages = [rows[a:b] for a, b in itertools.pairwise(bounds)]
    for message in messages:
        rnd.shuffle(message)
    batches, k = [], 0
    while k < len(messages):
        n = rnd.randint(1, 3)
        batches.append([r for m in messages[k:k + n] for r in m])
        k += n
    return batches


# (id, condition, state, started_at, ts, ended_at, value, message), and the sensors of the
# batch that made it (none: a tick) — which depends on the cut, so it is compared apart.
Seen = tuple[str, str, str, int, int, int | None, float, str, frozenset[str]]


def run(outage: Outage, burst: list[list[Row]], restart_at: int | None = None) -> list[Seen]:
    """Every alert transition, with the sensors of the batch that made it (none: a tick).
    ``restart_at``: the step before which the service restarts on its open episodes."""
    detector, book = NoDataDetector(REGISTRY, CONFIG), EpisodeBook(REGISTRY, Names())
    seen: list[Seen] = []
    for k, (t, rows) in enumerate(timeline(outage, burst)):
        if k == restart_at:
            detector, book = restarted(book)
        now = T0 + t * 1000
        found = detector.tick(now) if rows is None else detector.update(batch(rows[0]), now)
        heard = frozenset() if rows is None else frozenset(r[0] for r in rows[0])
        seen += [transition(a, heard) for a in book.apply(found.events)]
    return seen


def restarted(book: EpisodeBook) -> tuple[NoDataDetector, EpisodeBook]:
    """A new detector and episode book on the open episodes of ``book`` (jinmei.pipeline)."""
    open_episodes = book.open()
    detector, again = NoDataDetector(REGISTRY, CONFIG), EpisodeBook(REGISTRY, Names())
    again.restore(open_episodes)
    detector.restore([(INDEX[a.sensor], a.condition) for a in open_episodes])
    detector.recall({INDEX[a.sensor]: a.value for a in open_episodes})
    return detector, again


def transition(a: Alert, heard: frozenset[str]) -> Seen:
    return (a.id, a.condition, a.state, a.started_at, a.ts, a.ended_at, a.value, a.message,
            heard)


def steps_after_the_last_firing(outage: Outage, burst: list[list[Row]],
                                seen: list[Seen]) -> list[int]:
    last_firing = max(s[3] for s in seen if s[2] == "firing")
    return [k for k, (t, _) in enumerate(timeline(outage, burst))
            if T0 + t * 1000 > last_firing]


@given(outages, st.randoms(use_true_random=False), st.data())
@settings(max_examples=60, deadline=None)
def test_any_cut_of_a_back_fill_and_a_restart_give_the_same_episodes(
        outage: Outage, rnd: random.Random, data: st.DataObject) -> None:
    resent = outage.resent()
    whole = run(outage, [resent])
    assert_the_truth(outage, resent, whole)
    burst = cut(resent, rnd)
    assert episodes(whole) == episodes(run(outage, burst))
    restart_at = data.draw(st.sampled_from(steps_after_the_last_firing(outage, [resent], whole)))
    assert episodes(whole) == episodes(run(outage, [resent], restart_at))
    restart_at = data.draw(st.sampled_from(steps_after_the_last_firing(outage, burst, whole)))
    assert episodes(whole) == episodes(run(outage, burst, restart_at))


def episodes(seen: list[Seen]) -> list[tuple]:
    """The transitions without the batch that made each (which the cut decides)."""
    return [s[:-1] for s in seen]


def assert_the_truth(outage: Outage, resent: list[Row], seen: list[Seen]) -> None:
    """What the episodes must say, independently of how the burst came."""
    r_ms = T0 + outage.resent_at * 1000
    expected = {"T1": "silent", "S01": "substation_silent"}
    conditions = {c for w, c in expected.items() if w in outage.who}
    assert {s[1] for s in seen} == conditions  # nothing else fell silent, not even for a moment
    for condition in conditions:
        [fired, back] = [s for s in seen if s[1] == condition]
        assert (fired[2], back[2], fired[0]) == ("firing", "resolved", back[0])
        # Silent at jinmei from when it was noticed until the burst arrived: never shorter for
        # the back-fill, never negative, and only on a batch that brought a reading of it.
        assert fired[3] < r_ms and back[4] == back[5] == r_ms
        assert back[8] & ({"T1"} if condition == "silent" else set(S01))
        assert f"lasted {(r_ms - fired[3]) // 1000} s" in back[7]
        t1_last = value("T1", A - 10)  # T1's last reading before it was held
        if condition == "substation_silent":
            assert back[6] == fired[6] == t1_last
        else:
            first = next(r for r in resent if r[0] == "T1")
            assert back[6] == (t1_last if first[3] & CAL else first[2])
            assert f"reporting again: {back[6]:.2f} %" in back[7]
