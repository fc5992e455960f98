"""Assemble and run the jinmei service for one deployment (used by ``jinmei run`` and the demo).

:class:`Service` owns the long-lived parts — MQTT source, store, alert record, pipeline worker —
and starts and stops them in the right order: ``start`` connects and launches the worker;
``stop`` stops taking messages, lets the worker finish its batch, then closes the store (which
flushes what it can) and the record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from alerts.episodes import Names
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.loader import deployment_limits
from config.model import Deployment
from ingest.mqtt import MqttSource
from ingest.sink import open_sink
from jinmei.pipeline import Pipeline

__all__ = ["Service", "names_from_limits"]

log = logging.getLogger(__name__)


def names_from_limits(deployment: Deployment) -> Names:
    """Chinese and English names of kinds and locations, from the deployment's limits table."""
    table = deployment_limits(deployment)
    return Names(kind={k: (v.name, v.name_en) for k, v in table.kinds.items()},
                 location={k: (v.name, v.name_en) for k, v in table.locations.items()})


class Service:
    """The running pipeline of one deployment."""

    def __init__(self, deployment: Deployment, *,
                 on_alert: Callable[[Alert], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        state_dir = Path(deployment.ingest.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.deployment = deployment
        self.source = MqttSource(deployment.broker)
        self.sink = open_sink(deployment.store.url, deployment.registry, state_dir=state_dir,
                              influx_token=deployment.store.influx_token)
        self.record = AlertRecord(state_dir / "alerts.db")
        self.pipeline = Pipeline(deployment, self.source, self.sink, self.record,
                                 names_from_limits(deployment), clock=clock, on_alert=on_alert)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self.pipeline.run, args=(self._stop,),
                                        name="jinmei-ingest", daemon=True)

    def start(self, wait_subscribed_s: float = 0.0) -> bool:
        """Connect and start the worker; with a wait, True once the subscription is in place."""
        self.source.start()
        self._worker.start()
        log.info("jinmei serving %d sensors of %s; store %s", len(self.deployment.registry),
                 ", ".join(m.id for m in self.deployment.mines), self.sink.name)
        return self.source.wait_subscribed(wait_subscribed_s) if wait_subscribed_s else True

    def stop(self) -> None:
        self._stop.set()
        self._worker.join()
        self.source.stop()
        self.sink.close()
        self.record.close()
