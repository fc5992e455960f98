"""Assemble and run the jinmei service for one deployment (used by ``jinmei run`` and the demo).

:class:`Service` owns the long-lived parts — MQTT source, store, alert record, pipeline worker —
and starts and stops them in the right order: ``start`` connects and launches the worker and
the alert delivery thread (``alerts.outbox``) and, with ``[networking] enabled``, the regulator
networking thread (``networking.worker``: data files written and uploaded); ``stop`` stops
taking messages, lets the worker finish its batch, stops the other threads (what they still
owe stays in the outbox and the upload queue for the next start), then closes the store
(which flushes what it can) and the record.

While it runs, the interpreter's thread switch interval is 20 ms instead of CPython's 5 ms
(``GIL_SWITCH_S``, jinmei's own; ``stop`` restores the previous value). The network thread
lets the GIL go at every socket call, so it still runs often; the worker, whose decoding and
detection hold the GIL, is preempted four times less, and fewer hand-offs leave more of two
shared cores to the work (measured on bench_e2e, default → 20 ms, two runs each: batched
209/217 k → 267/256 k readings/s; one reading a message 12.5/17.3 k → 17.6/18.1 k msg/s).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from alerts.channels.base import build_channel
from alerts.channels.mqtt import PahoPublisher
from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from alerts.outbox import DeliveryWorker
from alerts.record import AlertRecord
from alerts.wire import Alert
from config.loader import deployment_limits
from config.model import Deployment
from ingest.mqtt import MqttSource
from ingest.sink import open_sink
from jinmei.pipeline import Pipeline
from networking.queue import UploadQueue
from networking.upload import open_target
from networking.worker import NetworkingWorker

__all__ = ["GIL_SWITCH_S", "Service", "delivery_worker", "names_from_limits"]

log = logging.getLogger(__name__)

GIL_SWITCH_S = 0.020  # see the module docstring


def names_from_limits(deployment: Deployment) -> Names:
    """Chinese and English names of kinds and locations, from the deployment's limits table."""
    table = deployment_limits(deployment)
    return Names(kind={k: (v.name, v.name_en) for k, v in table.kinds.items()},
                 location={k: (v.name, v.name_en) for k, v in table.locations.items()})


def delivery_worker(deployment: Deployment, dispatcher: AlertDispatcher,
                    clock: Callable[[], float]) -> tuple[DeliveryWorker, PahoPublisher | None]:
    """The outbox's delivery thread with a channel per configured receiver, and the MQTT
    connection of routed notifications (only when a receiver uses the mqtt channel)."""
    config = deployment.alerts
    publish = None
    if any(r.channel == "mqtt" for r in config.receivers):
        publish = PahoPublisher(deployment.broker,
                                client_id=f"{deployment.broker.client_id}-notify")
    worker = DeliveryWorker(dispatcher.outbox,
                            {r.name: build_channel(r, publish) for r in config.receivers},
                            clock=clock, retry_max_s=config.retry_max_s)
    dispatcher.on_outbox = worker.wake
    return worker, publish


def networking_worker(deployment: Deployment, record: AlertRecord,
                      clock: Callable[[], float]) -> NetworkingWorker | None:
    """The regulator networking thread's worker, when ``[networking] enabled`` (else None):
    data files into ``state_dir/networking`` and up to ``[networking] url``."""
    config = deployment.networking
    if not config.enabled:
        return None
    queue = UploadQueue(Path(deployment.ingest.state_dir) / "networking",
                        retry_max_s=config.retry_max_s)
    target = open_target(config.url, config.password, config.known_hosts,
                         config.ca_file) if config.url else None
    return NetworkingWorker(deployment, deployment_limits(deployment).kinds, queue, target,
                            record, clock)


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
        self.networking = networking_worker(deployment, self.record, clock)
        self.pipeline = Pipeline(deployment, self.source, self.sink, self.record,
                                 names_from_limits(deployment), clock=clock, on_alert=on_alert,
                                 on_stored=self.networking.observe if self.networking else None)
        self.delivery, self._notify_mqtt = delivery_worker(deployment, self.pipeline.dispatcher,
                                                           clock)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self.pipeline.run, args=(self._stop,),
                                        name="jinmei-ingest", daemon=True)
        self._networking_thread = threading.Thread(
            target=self.networking.run if self.networking else lambda stop: None,
            args=(self._stop,), name="jinmei-networking", daemon=True)
        self._switch_interval_before: float | None = None

    def start(self, wait_subscribed_s: float = 0.0) -> bool:
        """Connect and start the worker; with a wait, True once the subscription is in place."""
        self._switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        self.source.start()
        self.delivery.start()
        self._worker.start()
        self._networking_thread.start()
        log.info("jinmei serving %d sensors of %s; store %s", len(self.deployment.registry),
                 ", ".join(m.id for m in self.deployment.mines), self.sink.name)
        return self.source.wait_subscribed(wait_subscribed_s) if wait_subscribed_s else True

    def stop(self) -> None:
        self._stop.set()
        self._worker.join()
        self._networking_thread.join()
        self.delivery.stop()
        if self._notify_mqtt is not None:
            self._notify_mqtt.close()
        self.pipeline.dispatcher.close()
        self.source.stop()
        self.sink.close()
        self.record.close()
        if self._switch_interval_before is not None:
            sys.setswitchinterval(self._switch_interval_before)
