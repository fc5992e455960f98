"""Assemble and run the jinmei service for one deployment (used by ``jinmei run`` and the demo).

:class:`Service` owns the long-lived parts — MQTT source, store, alert record, pipeline worker —
and starts and stops them in the right order: ``start`` connects and launches the worker and
the alert delivery thread (``alerts.outbox``), with ``[networking] enabled`` the regulator
networking thread (``networking.worker``: data files written and uploaded — by one
active-active instance at a time, the lease of :mod:`ingest.lease`), and with ``[http] listen``
the operator endpoint (``jinmei.http``); ``stop`` stops
taking messages, lets the worker finish its batch, stops the other threads (what they still
owe stays in the outbox and the upload queue for the next start), then closes the store
(which flushes what it can) and the record.

While it runs, the interpreter's thread switch interval is 20 ms instead of CPython's 5 ms
(``GIL_SWITCH_S``, jinmei's own; ``stop`` restores the previous value). The network thread
lets the GIL go at every socket call, so it still runs often; the worker, whose decoding and
detection hold the GIL, is preempted four times less, and fewer hand-offs leave more of two
shared cores to the work (measured on bench_e2e, default → 20 ms, two runs each: batched
209/217 k → 267/256 k readings/s; one reading a message 12.5/17.3 k → 17.6/18.1 k msg/s).

**Never blind.** A :class:`~jinmei.supervisor.Supervisor` thread watches every thread the
service needs (MQTT network, ingest worker, alert delivery, networking when enabled, the
InfluxDB forwarder when that store is used) and, once a second, what the service can see
(:meth:`Service._observe`): the ingest subscription and the store's failure. From that:

- ``jinmei/<mine>/status`` (:mod:`ingest.status`): ``online`` once subscribed; ``offline``
  at once when the subscription is lost (``broker_lost``), after ``offline_after_s`` of store
  failure (``store_failing``), on a clean stop (``stopped``), on a supervision failure, and by
  Last Will when the process or its network dies.
- system alerts (:mod:`alerts.system`): ``monitoring_offline`` after ``offline_after_s`` of
  broker loss or store failure, ``store_fault`` after ``store_fault_after_s`` of store failure;
  both resolve when the condition ends and the service sees evidence of it.
- a previous run that ended without saying so (``kill -9``, a crash, a power loss): its last
  sign of life in ``state_dir`` (:mod:`jinmei.lastsign`, rewritten by ``_observe`` every
  second) is read at construction; ``jinmei run`` raises ``monitoring_offline`` from it
  (:meth:`Service.report_lost`), resolved once online.
- a dead or stalled thread: :meth:`Service.fail` logs CRITICAL, raises ``monitoring_offline``
  (outbox, then a bounded synchronous delivery: the delivery worker may be the dead one),
  says offline, and calls ``on_failure``; ``jinmei run`` then exits with code 3
  (:data:`~jinmei.supervisor.EXIT_FAILED`). It never resolves in this process: the next start
  resolves it once it is online.

:meth:`Service.health` answers the HTTP health check from the same facts.
"""

from __future__ import annotations

import logging
import socket
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
from alerts.system import Condition, SystemAlerts
from alerts.wire import Alert
from config.loader import deployment_limits
from config.model import Deployment
from detectors.suite import DetectorSuite
from ingest.influx import InfluxSink
from ingest.lease import Lease, lease_topic
from ingest.mqtt import TELEMETRY_TOPIC, MqttSource
from ingest.sink import open_sink
from ingest.status import MineStatus
from jinmei.http import WorkerEndpoint, ops_server
from jinmei.lastsign import LastSign
from jinmei.pipeline import Pipeline
from jinmei.supervisor import Failure, Supervisor, Watch
from networking.queue import UploadQueue
from networking.upload import open_target
from networking.worker import NetworkingWorker

__all__ = ["GIL_SWITCH_S", "Service", "delivery_worker", "names_from_limits"]

log = logging.getLogger(__name__)

GIL_SWITCH_S = 0.020  # see the module docstring
EXIT_DELIVERY_S = 15.0  # jinmei's own: the longest a failing service tries to tell receivers


def names_from_limits(deployment: Deployment) -> Names:
    """Chinese and English names of kinds and locations, from the deployment's limits table;
    the spike limits of its detectors (which of them a spike alert names)."""
    table = deployment_limits(deployment)
    return Names(spike_jump=dict(deployment.detectors.spike_jump),
                 max_rate=dict(deployment.detectors.max_rate),
                 kind={k: (v.name, v.name_en) for k, v in table.kinds.items()},
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
                      clock: Callable[[], float],
                      active: Callable[[float], bool] | None = None) -> NetworkingWorker | None:
    """The regulator networking thread's worker, when ``[networking] enabled`` (else None):
    data files into ``state_dir/networking`` and up to ``[networking] url``, while
    ``active(now)`` (the lease: one active-active instance at a time)."""
    config = deployment.networking
    if not config.enabled:
        return None
    queue = UploadQueue(Path(deployment.ingest.state_dir) / "networking",
                        retry_max_s=config.retry_max_s)
    target = open_target(config.url, config.password, config.known_hosts,
                         config.ca_file) if config.url else None
    return NetworkingWorker(deployment, deployment_limits(deployment).kinds, queue, target,
                            record, clock, active)


class Service:
    """The running pipeline of one deployment.

    ``on_failure`` is called (on the supervisor's thread) once a watched thread died or
    stalled, after the failure was reported; ``failure`` then says which and why.
    ``detectors``: see :class:`Pipeline`. ``topic``: the telemetry filter(s) to subscribe to (a
    worker of :mod:`jinmei.workers`: its mines'). ``endpoint``: a worker's operator endpoint,
    handed over by its parent (:class:`jinmei.http.WorkerEndpoint`).
    """

    def __init__(self, deployment: Deployment, *,
                 on_alert: Callable[[Alert], None] | None = None,
                 on_failure: Callable[[Failure], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 detectors: DetectorSuite | None = None,
                 topic: str | tuple[str, ...] = TELEMETRY_TOPIC,
                 endpoint: WorkerEndpoint | None = None) -> None:
        state_dir = Path(deployment.ingest.state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        self.deployment = deployment
        # Read before anything of this run is written: how the previous run ended.
        self.last_sign = LastSign(state_dir)
        self.previous_end_ms = self.last_sign.left_over()
        self.clock = clock
        self.source = MqttSource(deployment.broker, topic)
        self.sink = open_sink(deployment.store.url, deployment.registry, state_dir=state_dir,
                              influx_token=deployment.store.influx_token)
        self.record = AlertRecord(state_dir / "alerts.db")
        self.instance = f"{deployment.broker.client_id}@{socket.gethostname()}"
        # Networking files are written by one of the instances watching these mines at a time;
        # the lease needs MQTT 5 (Message Expiry): on a 3.1.1 broker networking always runs.
        self.lease = (Lease(deployment.broker, lease_topic([m.id for m in deployment.mines]),
                            self.instance)
                      if deployment.networking.enabled and deployment.broker.protocol == "5"
                      else None)
        self.networking = networking_worker(deployment, self.record, clock,
                                            self.lease.held if self.lease else None)
        self.pipeline = Pipeline(deployment, self.source, self.sink, self.record,
                                 names_from_limits(deployment), clock=clock, on_alert=on_alert,
                                 on_stored=self.networking.observe if self.networking else None,
                                 detectors=detectors)
        self.delivery, self.notify_mqtt = delivery_worker(deployment, self.pipeline.dispatcher,
                                                          clock)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self.pipeline.run, args=(self._stop,),
                                        name="jinmei-ingest", daemon=True)
        self._networking_stop = threading.Event()  # its own: a reload replaces the thread
        self._networking_thread = self._networking_thread_for(self.networking)
        self._switch_interval_before: float | None = None
        self.status = MineStatus(deployment.broker, [m.id for m in deployment.mines],
                                 self.instance)
        self.system = SystemAlerts(deployment.mines, deployment.alerts.routes,
                                   self.delivery.channels, state_dir / "alerts.db",
                                   config_hash=deployment.config_hash, instance=self.instance,
                                   publish=self.status.publish, wake=self.delivery.wake,
                                   on_alert=on_alert, clock=clock)
        self.supervisor = Supervisor(self._watches(), deployment.ingest.stall_s,
                                     on_failure=self.fail, observe=self._observe)
        self.on_failure = on_failure
        self.failure: Failure | None = None
        self._started = False
        self._broker_lost_since_ms: int | None = int(clock() * 1000)  # not subscribed yet
        self._status: tuple[str, str] = ("offline", "starting")  # as last published
        self.endpoint = endpoint
        self.http = ops_server(self)  # [http] listen: /healthz, /readyz, /metrics (or None)

    def _watches(self) -> list[Watch]:
        """The threads the service needs, each with its loop's heartbeat."""
        pipeline, source = self.pipeline, self.source
        watches = [Watch("jinmei-mqtt", source.alive, lambda: source.heartbeat),
                   Watch("jinmei-ingest", self._worker.is_alive, lambda: pipeline.heartbeat),
                   # a reload replaces the delivery worker: watch whichever runs now
                   Watch("jinmei-delivery", lambda: self.delivery.alive(),
                         lambda: self.delivery.heartbeat)]
        if self.networking is not None:  # a reload may replace the thread and its worker
            watches.append(Watch(
                "jinmei-networking", lambda: self._networking_thread.is_alive(),
                lambda: self.networking.heartbeat if self.networking else float("inf")))
        if isinstance(sink := self.sink, InfluxSink):
            watches.append(Watch("jinmei-influx-forwarder", sink.alive, lambda: sink.heartbeat))
        return watches

    def _networking_thread_for(self, worker: NetworkingWorker | None) -> threading.Thread:
        return threading.Thread(target=worker.run if worker else lambda stop: None,
                                args=(self._networking_stop,), name="jinmei-networking",
                                daemon=True)

    def replace_networking(self, worker: NetworkingWorker | None) -> None:
        """Stop the networking thread (its queue and files are closed) and run ``worker``
        instead (a reload; None when networking is now disabled)."""
        self._networking_stop.set()
        self._networking_thread.join()
        self.networking = worker
        self._networking_stop = threading.Event()
        self._networking_thread = self._networking_thread_for(worker)
        self._networking_thread.start()

    def start(self, wait_subscribed_s: float = 0.0) -> bool:
        """Connect and start the worker; with a wait, True once the subscription is in place."""
        if self.http is not None:
            self.http.start()  # first: an unusable address stops the start before any thread
        self._switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_S)
        self.last_sign.beat(int(self.clock() * 1000), durable=True)
        self.status.start()
        self.source.start()
        self.delivery.start()
        self._worker.start()
        if self.lease is not None:
            self.lease.start()
        self._networking_thread.start()
        self.supervisor.start()
        self._started = True
        log.info("jinmei serving %d sensors of %s; store %s; config hash %s%s",
                 len(self.deployment.registry), ", ".join(m.id for m in self.deployment.mines),
                 self.sink.name, self.deployment.config_hash,
                 f"; operator endpoint on port {self.http.port}" if self.http else "")
        return self.source.wait_subscribed(wait_subscribed_s) if wait_subscribed_s else True

    def stop(self) -> None:
        """A clean stop: nothing more is taken, what is in hand is finished, status offline."""
        self.supervisor.stop()
        self._stop.set()
        self._networking_stop.set()
        self._worker.join()
        self._networking_thread.join()
        if self.lease is not None:
            self.lease.close()
        self.delivery.stop()
        if self.notify_mqtt is not None:
            self.notify_mqtt.close()
        self.pipeline.dispatcher.close()
        self.pipeline.close()
        self.source.stop()
        self.sink.close()
        self.record.close()
        self.status.close("stopped", "jinmei was stopped")
        self.system.close()
        if self.http is not None:
            self.http.stop()
        self.last_sign.clear()  # a clean end: the next start has no gap to report
        if self._switch_interval_before is not None:
            sys.setswitchinterval(self._switch_interval_before)

    # ── what the supervisor sees, once a second ─────────────────────────────────────────

    def _holding(self, now_ms: int) -> tuple[bool, list[Condition]]:
        """(subscribed, the system conditions that hold now)."""
        ingest = self.deployment.ingest
        subscribed = self.source.wait_subscribed(0)
        if subscribed:
            self._broker_lost_since_ms = None
        elif self._broker_lost_since_ms is None:
            self._broker_lost_since_ms = now_ms
        holding = []
        lost = self._broker_lost_since_ms
        if lost is not None and now_ms - lost >= ingest.offline_after_s * 1000:
            holding.append(Condition("monitoring_offline", "broker_lost",
                                     self.deployment.broker.url, lost, ingest.offline_after_s))
        # The ingest worker's writes failing hold ingest (blind); the InfluxDB forwarder
        # failing leaves the readings safe in the spool and detection running (a fault only).
        held = self.pipeline.write_failing_since_ms
        failing = self.pipeline.store_failing_since_ms  # held, or the forwarder failing
        if failing is not None and now_ms - failing >= ingest.store_fault_after_s * 1000:
            holding.append(Condition("store_fault", "store_error", self.sink.name, failing,
                                     ingest.store_fault_after_s))
        if held is not None and now_ms - held >= ingest.offline_after_s * 1000:
            holding.append(Condition("monitoring_offline", "store_failing", self.sink.name,
                                     held, ingest.offline_after_s))
        return subscribed, holding

    def _store_works(self) -> bool:
        """Evidence that the store works: a batch stored since start and no failure since
        (and, with InfluxDB, a delivery to the server and no failure since)."""
        # Plain reads only: the supervisor must not wait on a lock a hung worker may hold
        # (dict() copies the counter in one step under the GIL).
        stored = (self.pipeline.store_failing_since_ms is None
                  and sum(dict(self.pipeline.stats.readings_by_mine).values()) > 0)
        if isinstance(sink := self.sink, InfluxSink):  # and a delivery to the server since
            return stored and sink.delivered > 0
        return stored

    def _observe(self) -> None:
        """Raise and resolve the system alerts, and keep the status topic true."""
        now_ms = int(self.clock() * 1000)
        self.last_sign.beat(now_ms)
        subscribed, holding = self._holding(now_ms)

        def evidence(condition: str) -> bool:
            # A store condition ends when the store is seen working; the others (broker
            # lost, and a previous run's worker failure) when this run is online.
            return self._store_works() if condition.startswith("store") else subscribed

        self.system.sync(holding, evidence, now_ms)
        offline = [c for c in holding if c.rule == "monitoring_offline"]
        if not subscribed:
            status = ("offline", "broker_lost")
        elif offline:
            status = ("offline", offline[0].condition)
        else:
            status = ("online", "subscribed")
        # Until the first online, the previous run's retained offline (its reason) stands,
        # unless jinmei is blind for long enough to say so itself.
        starting = self._status == ("offline", "starting") and status[0] == "offline"
        if status != self._status and (not starting or offline):
            detail = ""
            if not subscribed:
                detail = f"the ingest connection to {self.deployment.broker.url} is down"
            elif offline:
                detail = (f"{offline[0].scope} failing for "
                          f"{(now_ms - offline[0].since_ms) / 1000:.0f} s: "
                          f"{self.pipeline.store_error}")
            self.status.set(*status, now_ms, detail)
            self._status = status

    def fail(self, failure: Failure) -> None:
        """A watched thread died or stalled: report it every way that does not need it
        (called by the supervisor, or by ``jinmei run`` when the supervisor itself ended)."""
        log.critical("%s %s: %s — raising monitoring_offline, going offline and exiting to be "
                     "restarted", failure.thread, failure.reason.removeprefix("worker_"),
                     failure.detail)
        now_ms = int(self.clock() * 1000)
        self.failure = failure
        try:
            self.system.fire(Condition("monitoring_offline", failure.reason, failure.thread,
                                       now_ms - int(failure.silent_s * 1000),
                                       self.deployment.ingest.stall_s), now_ms)
        except Exception:  # whatever else fails, say offline and exit
            log.exception("raising monitoring_offline failed")
        self.status.close(failure.reason, f"{failure.thread}: {failure.detail}")
        owed = self.system.deliver_now(EXIT_DELIVERY_S)
        if owed:
            log.error("%d monitoring_offline notification(s) not delivered before exit; "
                      "they stay in the outbox for the next start", owed)
        self.last_sign.clear()  # reported: the next start resolves it, and adds no gap
        if self.on_failure is not None:
            self.on_failure(failure)

    def previous_run_lost(self) -> tuple[Failure, int] | None:
        """(the failure, since when) if the previous run in this ``state_dir`` ended without
        saying so — killed, crashed, the machine down (:mod:`jinmei.lastsign`) — else None."""
        if self.previous_end_ms is None:
            return None
        return Failure("jinmei", "worker_dead", "the previous run ended without stopping "
                       "(killed, crashed, or the machine went down); nothing was watched from "
                       "its last sign of life until this start", 0.0), self.previous_end_ms

    def report_lost(self, failure: Failure, since_ms: int) -> None:
        """The previous run of this worker ended without reporting it — frozen and killed, or
        killed from outside — as its parent says (:mod:`jinmei.workers`): raise
        ``monitoring_offline`` for that gap now, from ``since_ms``; like a failure this process
        reported itself, it resolves once this run is subscribed."""
        log.critical("%s %s: %s — raising monitoring_offline for the gap", failure.thread,
                     failure.reason.removeprefix("worker_"), failure.detail)
        self.system.fire(Condition("monitoring_offline", failure.reason, failure.thread,
                                   since_ms, self.deployment.ingest.stall_s),
                         int(self.clock() * 1000))

    def health(self) -> tuple[bool, dict[str, object]]:
        """(True, {}) while every watched thread is alive and turning and jinmei is not
        blind; else (False, {"reasons": [...]}) — each reason a JSON-able dict."""
        if not self._started:
            return False, {"reasons": [{"reason": "not_started"}]}
        reasons: list[dict[str, object]] = []
        if (failure := self.supervisor.check()) is not None:
            reasons.append(failure.as_dict())
        elif not self.supervisor.alive():
            reasons.append({"reason": "supervisor_dead", "thread": "jinmei-supervisor"})
        reasons += [{"reason": a.condition, "rule": a.rule, "scope": a.scope,
                     "since": a.started_at} for a in self.system.open()
                    if a.rule == "monitoring_offline"]
        return (False, {"reasons": reasons}) if reasons else (True, {})
