"""From detector events to alerts that have reached their receivers.

:class:`AlertDispatcher` is the alerts side of the pipeline: detector events become alert
transitions (``alerts.episodes``), every transition is committed to the alert record first
(``alerts.record``: nothing announced is ever missing from the record), then sent to the
channels — for now the MQTT topic ``jinmei/<mine>/alerts`` of the wire contract, through the
``publish`` function the service hands in (the dispatcher knows nothing of MQTT clients).

At start, :meth:`AlertDispatcher.restore` takes the open episodes back from the record and
returns the detector conditions that were firing, so a restarted service neither forgets a
firing alert nor announces it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from alerts.episodes import EpisodeBook, Names
from alerts.record import AlertRecord
from alerts.wire import Alert, encode_alert
from config.model import Registry
from detectors.base import Event

__all__ = ["AlertDispatcher", "alerts_topic"]

log = logging.getLogger(__name__)


def alerts_topic(mine: str) -> str:
    return f"jinmei/{mine}/alerts"


class AlertDispatcher:
    """Episodes → record → channels, for one deployment.

    ``publish(topic, payload)`` sends one message with QoS 1 (queued by the client while the
    broker is away); ``mqtt`` False keeps alerts off the broker (they are still recorded).
    """

    def __init__(self, registry: Registry, names: Names, record: AlertRecord, *,
                 config_hash: str, publish: Callable[[str, bytes], object],
                 mqtt: bool = True) -> None:
        self.registry = registry
        self.record = record
        self.config_hash = config_hash
        self.episodes = EpisodeBook(registry, names, config_hash)
        self._publish = publish
        self._mqtt = mqtt

    def restore(self) -> list[tuple[int, str]]:
        """Reload open episodes from the record; the (sensor index, condition) still firing."""
        open_alerts = self.record.open_episodes()
        self.episodes.restore(open_alerts)
        if open_alerts:
            log.info("restored %d open alert episode(s) from the alert record", len(open_alerts))
        index = self.registry.index
        gone = [a for a in open_alerts if f"{a.mine}/{a.sensor}" not in index]
        for a in gone:
            log.warning("open episode %s of %s/%s: the sensor is no longer configured; it "
                        "stays open in the record", a.id, a.mine, a.sensor)
        return [(index[f"{a.mine}/{a.sensor}"], a.condition) for a in open_alerts
                if f"{a.mine}/{a.sensor}" in index]

    def apply(self, events: Sequence[Event], now_ms: int) -> list[Alert]:
        """Record and send the transitions these events make; returns them."""
        alerts = self.episodes.apply(events)
        if not alerts:
            return alerts
        self.record.append(alerts, self.config_hash, now_ms)
        if self._mqtt:
            for alert in alerts:
                self._publish(alerts_topic(alert.mine), encode_alert(alert))
        return alerts
