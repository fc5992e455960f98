"""``jinmei demo``: the whole pipeline in one process on embedded defaults.

An amqtt broker on a free loopback port, the shipped pilot mines, SQLite in a fresh work folder,
and one simulator per mine playing the ``methane-rise`` scenario faster than real time. Alerts
are printed as they fire and resolve; a summary per mine closes the run. To show the reject
path, the demo also sends two deliberately broken messages per mine (bad JSON, unknown sensor).

Feed time runs ``speed`` times faster than the wall clock. So that no reading is ever stamped
in the future (the ingestor rejects those), the feed's clock starts ``duration × (speed − 1)``
seconds in the past and reaches the present as the run ends. The service runs on the feed's
clock (:class:`FeedClock`: jinmei reads time only through its ``clock`` parameter), so silence
is judged and alerts are stamped as a live mine would have them — not ``late`` and not
``no_data`` for readings that are only compressed in time.
"""

from __future__ import annotations

import dataclasses
import heapq
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alerts.dispatch import AlertDispatcher
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.errors import DeliveryError
from config.loader import load_deployment
from config.model import BrokerConfig, Deployment, HttpConfig
from config.redact import redact_url
from ingest.codec import encode_telemetry
from ingest.sqlite import SQLiteSink
from jinmei.embedded_broker import EmbeddedBroker
from jinmei.playback import play
from jinmei.service import Service, names_from_limits
from simulators.feed import Message, generate
from simulators.publisher import publish

__all__ = ["DemoSummary", "replay", "run_demo"]

SCENARIO = "methane-rise"
# 2026-12-04 01:20:00 CST: a cutting shift, the hour of the README's demo block. The feed's
# methane follows the mine's shifts (simulators/model.py: less in the 08:00-16:00 maintenance
# shift), so what the demo prints depends on when it runs; :func:`replay` fixes the hour.
REPLAY_START_MS = 1_796_318_400_000


@dataclass(frozen=True)
class MineSummary:
    mine: str
    name: str
    published_readings: int
    stored_readings: int
    rejects: int
    fired: int
    resolved: int


@dataclass(frozen=True)
class DemoSummary:
    workdir: Path
    mines: list[MineSummary]

    @property
    def ok(self) -> bool:
        """Every published reading stored, and at least one alert fired and resolved."""
        return all(m.stored_readings == m.published_readings for m in self.mines) and \
            any(m.fired and m.resolved for m in self.mines)

    def render(self) -> str:
        head = (f"{'mine':<12}{'published':>10}{'stored':>10}{'rejects':>9}{'fired':>7}"
                f"{'resolved':>9}")
        rows = [f"{m.mine:<12}{m.published_readings:>10}{m.stored_readings:>10}{m.rejects:>9}"
                f"{m.fired:>7}{m.resolved:>9}  {m.name}" for m in self.mines]
        return "\n".join(["summary / 汇总", head, *rows, f"work folder: {self.workdir}"])


def demo_deployment(broker: BrokerConfig, workdir: Path) -> Deployment:
    """The shipped pilot mines, pointed at ``broker`` and a SQLite store in ``workdir``."""
    shipped = load_deployment(None)
    return dataclasses.replace(
        shipped,
        broker=dataclasses.replace(broker, client_id="jinmei-demo"),
        store=dataclasses.replace(shipped.store, url=f"sqlite:///{workdir / 'readings.db'}"),
        ingest=dataclasses.replace(shipped.ingest, state_dir=str(workdir)),
        # a 30 s resolve hold of feed time would hold the last resolves past the end of the
        # run: the demo shows them at once
        alerts=dataclasses.replace(shipped.alerts, resolve_hold_s=0.0),
        http=HttpConfig(listen=""),  # self-contained: no port of the host taken
    )


class FeedClock:
    """Epoch seconds of the feed: frozen at its start until :meth:`start`, then running
    ``speed`` times faster than the wall clock from there."""

    def __init__(self, start_ms: int, speed: float) -> None:
        self.start_s, self.speed = start_ms / 1000, speed
        self._wall0: float | None = None

    def start(self) -> None:
        self._wall0 = time.time()

    def __call__(self) -> float:
        if self._wall0 is None:
            return self.start_s
        return self.start_s + (time.time() - self._wall0) * self.speed


def broken_messages(mine: str, now_ms: int) -> list[Message]:
    """One message that is not JSON and one naming a sensor the mine does not have."""
    unknown = encode_telemetry(now_ms, [("X-0000", 0.5, "ok")])
    return [Message(now_ms, f"jinmei/{mine}/telemetry", b"{not json"),
            Message(now_ms, f"jinmei/{mine}/telemetry", unknown)]


def run_demo(duration_s: float = 20.0, speed: float = 30.0, workdir: Path | None = None,
             seed: int = 0, out: Callable[[str], None] = print,
             broker: BrokerConfig | None = None) -> DemoSummary:
    """Run the demo and return its summary (``out`` receives the live lines). ``broker``: an
    external broker (TLS, account) instead of the embedded one; its account must be allowed
    to publish every mine's telemetry and to read it."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = (workdir or Path("var/demo")) / stamp
    workdir.mkdir(parents=True, exist_ok=True)
    embedded = EmbeddedBroker() if broker is None else None
    if embedded is not None:
        embedded.start()
        broker = BrokerConfig(url=embedded.url, protocol="3.1.1")  # amqtt speaks 3.1.1 only
    assert broker is not None
    deployment = demo_deployment(broker, workdir)
    where = redact_url(broker.url)
    clock = FeedClock(int(time.time() * 1000) - int(duration_s * (speed - 1) * 1000), speed)
    service = Service(deployment, on_alert=lambda a: out(alert_line(a)), clock=clock)
    try:
        if not service.start(wait_subscribed_s=15):
            why = service.source.refusal or "no subscription within 15 s"
            raise DeliveryError(where, f"the ingestor could not subscribe: {why}",
                                retryable=False)
        out(f"jinmei demo: {len(deployment.registry)} sensors in "
            f"{', '.join(m.id for m in deployment.mines)}; broker {where}; "
            f"scenario {SCENARIO}, {duration_s:g} s at {speed:g}x ({duration_s * speed / 60:g} "
            f"feed minutes)")
        clock.start()
        published, messages = _simulate_all(deployment, duration_s, speed, seed,
                                            int(clock.start_s * 1000))
        # the broker has every message; wait until the service has processed them all
        deadline = time.monotonic() + 15
        while service.pipeline.stats.messages < messages and time.monotonic() < deadline:
            time.sleep(0.1)
        return _summarize(service, deployment, published, workdir)
    finally:
        service.stop()
        if embedded is not None:
            embedded.stop()


def _simulate_all(deployment: Deployment, duration_s: float, speed: float,
                  seed: int, start_ms: int) -> tuple[dict[str, int], int]:
    """One publisher thread per mine, its feed from ``start_ms``; returns the readings each
    published and the number of messages in all."""
    published: dict[str, int] = {}
    messages: list[int] = []

    def play(mine_index: int) -> None:
        mine = deployment.mines[mine_index]
        feed = generate(mine, SCENARIO, start_ms=start_ms, duration_s=duration_s * speed,
                        seed=seed + mine_index)
        broker = deployment.broker
        summary = publish(feed, broker, speed=speed, client_id=f"jinmei-sim-{mine.id}")
        broken = publish(broken_messages(mine.id, int(time.time() * 1000) - 1000), broker,
                         speed=None, client_id=f"jinmei-sim-{mine.id}-broken")
        published[mine.id] = summary.readings
        messages.extend((summary.messages, broken.messages))

    threads = [threading.Thread(target=play, args=(i,), name=f"sim-{m.id}")
               for i, m in enumerate(deployment.mines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return published, sum(messages)


def replay(duration_s: float = 20.0, speed: float = 30.0, seed: int = 0,
           start_ms: int = REPLAY_START_MS) -> list[Alert]:
    """The alert transitions ``jinmei demo`` prints, in order, without broker or service.

    The demo's feeds (one per mine, seed ``seed`` + the mine's index, ``duration_s × speed``
    feed seconds from ``start_ms``) merged in time order go a feed tick at a time through the
    codec, detectors and alert dispatcher of the demo's deployment (:func:`demo_deployment`:
    both mines in one registry, resolve hold 0), the detectors ticked every feed second as
    the service's clock ticks them. Same arguments, same answer: the README's demo block is
    checked against it (tests/test_readme.py). The broken messages are left out (they make
    rejects, not alerts); the live demo's batches are cut by the broker, not by the feed
    tick, which gives the same alerts (tests/test_replay_same_alerts.py).
    """
    shipped = load_deployment(None)
    with tempfile.TemporaryDirectory(prefix="jinmei-demo-replay-") as folder:
        deployment = demo_deployment(shipped.broker, Path(folder))
        record = AlertRecord(Path(folder) / "alerts.db")
        dispatcher = AlertDispatcher(deployment.registry, names_from_limits(deployment), record,
                                     config_hash=deployment.config_hash,
                                     publish=lambda topic, payload: None,
                                     config=deployment.alerts)
        dispatcher.restore()
        feeds = [generate(mine, SCENARIO, start_ms=start_ms, duration_s=duration_s * speed,
                          seed=seed + i) for i, mine in enumerate(deployment.mines)]
        out: list[Alert] = []
        try:
            for now, events in play(deployment.registry, deployment.detectors,
                                    heapq.merge(*feeds, key=lambda m: m.at_ms), start_ms):
                out += dispatcher.apply(events, now)
        finally:
            dispatcher.close()
            record.close()
    return out


def alert_line(alert: Alert) -> str:
    """One printed transition; a warning an area's alarm keeps from receivers says so."""
    mark = "▲ FIRING  " if alert.state == "firing" else "▼ RESOLVED"
    rule = f"{alert.rule}·inhibited" if alert.inhibited_by else alert.rule
    return f"{mark} {alert.severity:<8} {rule:<16} {alert.message}"


def _summarize(service: Service, deployment: Deployment, published: dict[str, int],
               workdir: Path) -> DemoSummary:
    stats = service.pipeline.stats
    assert isinstance(service.sink, SQLiteSink)  # the demo's store, by construction
    stored = service.sink.count_readings()
    rows = []
    for mine in deployment.mines:
        fired = sum(n for (m, _, state), n in stats.alerts.items()
                    if m == mine.id and state == "firing")
        resolved = sum(n for (m, _, state), n in stats.alerts.items()
                       if m == mine.id and state == "resolved")
        rows.append(MineSummary(mine.id, mine.name, published.get(mine.id, 0),
                                stored.get(mine.id, 0),
                                stats.rejects_by_mine[mine.id], fired, resolved))
    return DemoSummary(workdir, rows)
