"""MQTT source: the paho-mqtt 2 subscriber that feeds the ingest worker, acknowledging late.

Config keys (``[broker]`` of the deployment file, :class:`config.model.BrokerConfig`):

- ``url`` (``mqtt://host:1883``; ``mqtts://`` for TLS), ``ca_file``, ``cert_file``,
  ``key_file`` and ``username``; the password only from the environment
  (``JINMEI_MQTT_PASSWORD``). The client is built by ``config.broker.new_client``, as every
  jinmei MQTT client is; a certificate not trusted or a login refused is logged as an error
  naming the setting at every attempt, and kept in :attr:`MqttSource.refusal`.
- ``client_id`` (default ``jinmei-ingest``): fixed, because the broker keeps the session — the
  subscription and every unacknowledged message — under this id while the service is away.
- ``protocol`` ``"5"`` (default) or ``"3.1.1"`` (the embedded amqtt broker speaks only 3.1.1).
- ``in_flight`` (default 10,000): how many delivered but unacknowledged messages the broker may
  have out to us (MQTT 5 Receive Maximum). Mosquitto's default of 20 caps throughput at tens of
  messages per second when acks wait for a commit (design.md); deploy/mosquitto.conf raises the
  broker side too.

Failure behaviour: the paho callback only collects the message, and what one socket read
brought is handed to the worker as one list, so the network thread never blocks. The worker
takes batches with :meth:`MqttSource.take` and calls :meth:`ack` only
after the readings are committed, so a crash before the commit makes the broker deliver the
same messages again (persistent session: MQTT 5 ``clean_start=False`` with a session expiry, or
3.1.1 ``clean_session=False``). A PUBACK belongs to the connection that delivered the message:
after a reconnect, acks for messages of the old connection are skipped — the broker redelivers
those and they are acknowledged then. Connection loss is retried with backoff (1 s up to 30 s);
the first connection too, so the service can start before its broker.

Threading: one network thread owns the paho client. Other threads never call into it; their
acks and publishes go through a queue that the network thread empties between socket reads.
(Measured: acknowledging from the worker thread through paho's ``loop_start`` woke the network
thread once per PUBACK and spent half the worker's time handing the GIL back and forth.)
The thread drives paho through its external-loop API (``socket``, ``loop_read``,
``loop_write``, ``loop_misc``) rather than ``loop()``, which adds a wake-up socket pair that
costs a system call per PUBACK; the PUBACKs of a batch are queued, then written in one turn.
Each turn sets ``heartbeat`` (a reconnect backoff: the time it ends), which the service's
supervisor watches (:mod:`jinmei.supervisor`); ``jinmei/<mine>/status`` and its Last Will are
on connections of their own (:mod:`ingest.status`).
"""

from __future__ import annotations

import logging
import queue
import select
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.broker import broker_address, explain_failure, explain_refusal, new_client
from config.model import BrokerConfig
from ingest import mqtt_fast

__all__ = ["TELEMETRY_TOPIC", "Inbound", "MqttSource", "mine_topic"]

log = logging.getLogger(__name__)

# `#` also matches the parent level, so this covers jinmei/<mine>/telemetry and every
# jinmei/<mine>/telemetry/<substation>.
TELEMETRY_TOPIC = "jinmei/+/telemetry/#"
SESSION_EXPIRY_S = 7 * 24 * 3600  # keep queued telemetry for a week of downtime (AQ 6201: 7 days)
LOOP_TIMEOUT_S = 0.005  # how long the network thread waits on the socket before serving its queue
READS_PER_TURN = 1_000  # then the acks and publishes that other threads queued are served
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 30.0


def mine_topic(mine: str) -> str:
    """The telemetry filter of one mine (with and without a substation level)."""
    return f"jinmei/{mine}/telemetry/#"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message as received: its topic, bytes, and what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    connection: int


class MqttSource:
    """Subscribes to telemetry and hands messages to the worker; publishes rejects and alerts.

    ``start()`` connects (in the background, retrying); ``take()`` returns the next batch;
    ``ack()`` acknowledges a committed batch; ``stop()`` returns when the client is closed.
    """

    def __init__(self, broker: BrokerConfig,
                 topic: str | tuple[str, ...] = TELEMETRY_TOPIC) -> None:
        self.config = broker
        # One filter, or several (a worker of jinmei.workers: its mines' telemetry topics).
        self.topic = topic
        address = broker_address(broker.url)
        self.host, self.port = address.host, address.port
        # What each socket read brought: one hand-off per read, not one per message.
        self._inbox: queue.SimpleQueue[list[Inbound]] = queue.SimpleQueue()
        self._arrived: list[Inbound] = []  # filled by the paho callback during one read
        self._held: list[Inbound] = []  # taken from the inbox beyond a batch's size
        self._requests: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="jinmei-mqtt", daemon=True)
        self._connection = 0  # counts successful connections; tags messages for ack()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.counters = {"received": 0, "acked": 0, "ack_skipped": 0, "connections": 0}
        # Monotonic time by which the network thread turns again (read by jinmei.supervisor).
        self.heartbeat = time.monotonic()
        # Why the broker cannot be used with these settings (certificate, login), until a
        # connection succeeds: None while there is no such reason.
        self.refusal: str | None = None
        v5 = broker.protocol == "5"
        self._client = new_client(broker, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                                  clean_session=None if v5 else False, manual_ack=True)
        # paho keeps our own publishes (rejects, alerts) queued while disconnected: no limit.
        self._client.max_queued_messages_set(0)
        self._client.max_inflight_messages_set(1000)
        # Queued packets (PUBACKs, publishes) wait for _exchange to write them together,
        # instead of paho writing each one as it is queued.
        self._client.on_socket_register_write = lambda client, userdata, sock: None
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    # ── paho callbacks: run on paho's network thread, so they only record and hand on ──
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            failure = explain_refusal(reason, self.config)
            self.refusal = failure.message if failure.permanent else self.refusal
            log.error("%s", failure.message)
            return
        self.refusal = None
        self._connection += 1
        self.counters["connections"] += 1
        log.info("connected to %s:%d (session present: %s)", self.host, self.port,
                 flags.session_present)
        topics = (self.topic,) if isinstance(self.topic, str) else self.topic
        client.subscribe([(t, 1) for t in topics])
        self._connected.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            log.error("broker refused the subscription to %s: %s", self.topic, reasons)
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self._subscribed.clear()
        if reason.is_failure:
            log.warning("lost the broker %s:%d (%s); reconnecting", self.host, self.port, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._arrived.append(Inbound(message.topic, bytes(message.payload), message.mid,
                                     message.qos, self._connection))

    # ── the worker's side ──
    def start(self) -> None:
        properties = None
        if self.config.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.ReceiveMaximum = self.config.in_flight
        clean_start = False if properties else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        self._client.connect_async(self.host, self.port, keepalive=self.config.keepalive_s,
                                   clean_start=clean_start, properties=properties)
        self._thread.start()

    def _serve(self) -> None:
        """The network thread: connect (again), read the socket, serve the request queue."""
        mqtt_fast.install()  # MQTT 5 PUBLISHes without a Properties object each
        delay, need_connect = RECONNECT_MIN_S, True
        while not self._closing.is_set():
            self.heartbeat = time.monotonic()
            if need_connect:
                try:
                    self._client.reconnect()  # returns once the TCP connection is up
                    need_connect = False
                except OSError as exc:
                    failure = explain_failure(exc, self.config)
                    if failure.permanent:
                        self.refusal = failure.message
                    log.log(logging.ERROR if failure.permanent else logging.WARNING,
                            "%s; retrying in %.0f s", failure.message, delay)
                    self.heartbeat = time.monotonic() + delay
                    self._closing.wait(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    continue
            rc = self._exchange()
            if self._connected.is_set():
                delay = RECONNECT_MIN_S
            if rc != mqtt.MQTT_ERR_SUCCESS:  # lost or refused: back off, then connect again
                need_connect = True
                self.heartbeat = time.monotonic() + delay
                self._closing.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        self._serve_requests()
        self._client.disconnect()
        self._client.loop_write()  # send the DISCONNECT; paho closes the socket once it is out
        sock = self._client.socket()
        if sock is not None:  # it could not be sent (the broker is gone): close it ourselves
            sock.close()

    def _exchange(self) -> mqtt.MQTTErrorCode:
        """One turn of the network thread: wait for the socket, read, hand what came to the
        worker, serve the requests, write what they queued (acks, publishes), keep alive."""
        client = self._client
        sock = client.socket()
        if sock is None:
            return mqtt.MQTT_ERR_NO_CONN
        # TLS may hold decrypted bytes that select() cannot see: then do not wait.
        pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
        readable, _, _ = select.select([sock], [sock] if client.want_write() else [], [],
                                       0.0 if pending else LOOP_TIMEOUT_S)
        if readable or pending:
            rc = self._read(client)
            if self._arrived:
                self._inbox.put(self._arrived)
                self._arrived = []
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return rc
        self._serve_requests()
        if client.want_write():
            rc = client.loop_write()
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return rc
        return client.loop_misc()

    def _read(self, client: mqtt.Client) -> mqtt.MQTTErrorCode:
        """Read PUBLISHes while they keep coming, up to READS_PER_TURN: paho's ``loop_read``
        takes one packet when nothing of ours is in flight, and a turn of select per packet
        cost more than the packet."""
        for _ in range(READS_PER_TURN):
            before = len(self._arrived)
            rc = client.loop_read()
            if rc != mqtt.MQTT_ERR_SUCCESS or len(self._arrived) == before:
                return rc
        return mqtt.MQTT_ERR_SUCCESS

    def _serve_requests(self) -> None:
        while True:
            try:
                self._requests.get_nowait()()
            except queue.Empty:
                return

    def alive(self) -> bool:
        """Whether the network thread is running."""
        return self._thread.is_alive()

    @property
    def connected(self) -> bool:
        """True while the broker connection is up (for /metrics and /readyz)."""
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the telemetry subscription is in place on the current connection."""
        return self._subscribed.wait(timeout)

    def take(self, max_messages: int, wait_s: float) -> list[Inbound]:
        """What has arrived, up to ``max_messages`` in arrival order, without waiting for more;
        only when nothing has, the first read to come within ``wait_s`` ([] if none does).

        Adaptive batching: a batch closes when the worker is ready for it, not after a fixed
        wait. A lone reading is handled at once (publish → alert in milliseconds, not the
        tens a fixed wait for followers cost); under load, what arrived while the worker
        committed the previous batch makes the next, so batches grow by themselves and one
        commit carries many messages."""
        batch, self._held = self._held, []
        if not batch:
            try:
                batch = self._inbox.get(timeout=wait_s)
            except queue.Empty:
                return []
        while len(batch) < max_messages:
            try:
                batch += self._inbox.get_nowait()
            except queue.Empty:
                break
        batch, self._held = batch[:max_messages], batch[max_messages:]
        self.counters["received"] += len(batch)
        return batch

    def ack(self, messages: list[Inbound]) -> None:
        """Acknowledge committed messages to the broker (PUBACK), on their own connection only."""
        self._requests.put(lambda: self._ack(messages))

    def _ack(self, messages: list[Inbound]) -> None:
        current = self._connection
        for m in messages:
            if m.qos == 0:
                continue
            if m.connection != current:
                self.counters["ack_skipped"] += 1
                continue
            self._client.ack(m.mid, m.qos)
            self.counters["acked"] += 1

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish on the same session (rejects, alerts); queued by paho while disconnected."""
        self._requests.put(lambda: self._client.publish(topic, payload, qos=qos))

    def stop(self) -> None:
        """Serve what is queued (acks, publishes), disconnect, and return once closed."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
