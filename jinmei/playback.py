"""A feed played through codec and detectors in one process, as the service would judge it.

The one loop that the demo's broker-free replay (:func:`jinmei.demo.replay`) and the
detector evaluations (bench/evaluate_scenarios.py, bench/evaluate_incidents.py) share: the
messages, in time order, go a feed tick at a time (all messages stamped with one ``at_ms``)
through :class:`~ingest.codec.TelemetryCodec` and the detectors, and the detectors are ticked
every second of the service clock in between, as :meth:`jinmei.pipeline.Pipeline.tick` does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from config.model import DetectorConfig, Registry
from detectors.base import Event
from detectors.suite import build_detectors
from ingest.codec import TelemetryCodec
from jinmei.pipeline import TICK_S
from simulators.feed import Message

__all__ = ["play"]

TICK_MS = int(TICK_S * 1000)  # the service clock's detector tick


def play(registry: Registry, config: DetectorConfig, messages: Iterable[Message],
         start_ms: int, end_ms: int | None = None) -> Iterator[tuple[int, list[Event]]]:
    """(the service clock's ms, the events of that feed tick or clock tick), in time order,
    for ``messages`` (sorted by ``at_ms``) played from ``start_ms``; with ``end_ms``, the clock
    ticks on to it after the last message."""
    codec = TelemetryCodec(registry)
    suite = build_detectors(registry, config)
    clock = start_ms  # the next second the service's clock ticks the detectors
    for at_ms, tick in itertools.groupby(messages, key=lambda m: m.at_ms):
        while clock < at_ms:
            yield clock, suite.tick(clock).events
            clock += TICK_MS
        batch = codec.decode_many([(m.topic, m.payload) for m in tick], at_ms).batch
        yield at_ms, suite.update(batch, at_ms).events
    while end_ms is not None and clock <= end_ms:
        yield clock, suite.tick(clock).events
        clock += TICK_MS
