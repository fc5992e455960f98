"""``jinmei/<mine>/status``: whether jinmei ingests a mine, retained, with a Last Will.

Wire contract (design.md, second wave): topic ``jinmei/<mine>/status``, retained, QoS 1, JSON
``{"state": "online" | "offline", "reason": …, "since": epoch ms, "instance": …}``. ``reason``
is a code: ``subscribed`` (online); ``stopped`` (clean stop), ``broker_lost`` (the ingest
connection is down), ``store_failing`` (the store has refused writes for ``offline_after_s``),
``worker_dead`` / ``worker_stalled`` (supervision stopped the service; ``detail`` names the
thread), ``connection_lost`` (the Last Will: the process died or its network went). Additive
fields: ``detail`` (a sentence) and ``last_will`` (true on the will). ``instance`` is
``<client_id>@<host>``.

**One small connection per mine, each carrying only that mine's will.** MQTT allows one will
per connection and the contract wants every mine's status to turn offline when jinmei dies:
a kill -9 closes the sockets and the broker publishes each connection's will at once (a lost
network: after 1.5 keep-alives). The alternatives were worse: a will on the ingest connection
covers one mine; a per-instance topic is not the contract. The cost is one idle TCP connection
and one paho thread per mine (keep-alive pings only; a few mines per instance). The ingest
connection stays free of status traffic, and the status connections keep working when the
ingest side is the broken part, so they also carry the self-monitoring alerts' copies on
``jinmei/<mine>/alerts`` (:mod:`alerts.system`).

A will cannot carry the time of the loss, which only the broker sees: its ``since`` is the
start of the run that set it (``last_will: true`` says so); the loss came later.

Before a clean disconnect the explicit ``offline`` is published and its PUBACK awaited (the
broker drops the will on a clean DISCONNECT, so the explicit reason stays retained).

**Active-active** (README, "Scale-out and high availability"): two instances watching one mine
share its retained status, so the one that died would leave ``offline`` retained (its Last
Will, or its stop) while the other still ingests. Each status connection therefore subscribes
to its mine's status, and an instance that is online answers another instance's ``offline``
by publishing its own ``online`` (retained) again: the topic says whether the mine is watched,
and the other's ``offline`` was still published for whoever listens. An instance never answers
its own messages, and never answers while it is offline itself, so two instances cannot loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence

import paho.mqtt.client as mqtt

from config.broker import broker_address, new_client
from config.model import BrokerConfig

__all__ = ["MineStatus", "status_payload", "status_topic"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_S = 5.0  # jinmei's own: how long close() waits for the last PUBACKs


def status_topic(mine: str) -> str:
    return f"jinmei/{mine}/status"


def status_payload(state: str, reason: str, since_ms: int, instance: str, detail: str = "",
                   last_will: bool = False) -> bytes:
    body: dict[str, object] = {"state": state, "reason": reason, "since": since_ms,
                               "instance": instance, "detail": detail}
    if last_will:
        body["last_will"] = True
    return json.dumps(body, ensure_ascii=False).encode()


class MineStatus:
    """The status connections of one instance, one per mine; see the module docstring.

    ``start`` connects in the background (paho reconnects by itself); ``set`` publishes a
    state for every mine (retained); ``publish`` sends any message on a mine's connection;
    ``close`` publishes the last state, waits for the PUBACKs (bounded) and disconnects.
    """

    def __init__(self, broker: BrokerConfig, mines: Sequence[str], instance: str) -> None:
        self.instance = instance
        address = broker_address(broker.url)
        self.host, self.port = address.host, address.port
        now_ms = int(time.time() * 1000)
        self._clients: dict[str, mqtt.Client] = {}
        self._pending: list[mqtt.MQTTMessageInfo] = []  # not yet acknowledged
        self._lock = threading.Lock()
        self._closed = False
        self._online: dict[str, bytes] = {}  # mine → our retained online payload, while online
        for mine in mines:
            # the same login and TLS (CA, client certificate) as the ingest connection
            client = new_client(broker, client_id=f"{broker.client_id}-status-{mine}",
                                protocol=mqtt.MQTTv311, clean_session=True)
            client.will_set(status_topic(mine), status_payload(
                "offline", "connection_lost", now_ms, instance,
                "jinmei's connection was lost (process ended or network down); since is when "
                "that run of jinmei started", last_will=True), qos=1, retain=True)
            client.reconnect_delay_set(1, 30)
            client.max_queued_messages_set(0)
            client.on_connect = lambda c, *a, m=mine: c.subscribe(status_topic(m), qos=1)
            client.on_message = lambda c, u, message, m=mine: self._answer(m, message.payload)
            self._clients[mine] = client

    def start(self) -> None:
        for client in self._clients.values():
            client.connect_async(self.host, self.port, keepalive=30)
            client.loop_start()

    def set(self, state: str, reason: str, since_ms: int,
            detail: str = "") -> list[mqtt.MQTTMessageInfo]:
        """Publish this state for every mine (retained, QoS 1; queued while disconnected)."""
        payload = status_payload(state, reason, since_ms, self.instance, detail)
        with self._lock:
            self._online = dict.fromkeys(self._clients, payload) if state == "online" else {}
        return [self.publish(status_topic(mine), payload, retain=True) for mine in self._clients]

    def _answer(self, mine: str, payload: bytes) -> None:
        """Another instance said ``offline`` for ``mine`` while we ingest it: say online again
        (on paho's network thread of that mine's connection)."""
        try:
            status = json.loads(payload)
            theirs = status["state"] == "offline" and status["instance"] != self.instance
        except (ValueError, KeyError, TypeError):
            return  # not a status (or an empty retained message): nothing to answer
        with self._lock:
            ours = self._online.get(mine)
        if theirs and ours is not None and not self._closed:
            log.info("status: %s said offline for %s; %s ingests it: online again",
                     status["instance"], mine, self.instance)
            self._clients[mine].publish(status_topic(mine), ours, qos=1, retain=True)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        """Publish on the connection of the topic's mine (``jinmei/<mine>/…``), QoS 1."""
        mine = topic.split("/")[1]
        client = self._clients.get(mine) or next(iter(self._clients.values()))
        info = client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            self._pending = [p for p in self._pending if _published(p) is False] + [info]
        return info

    def close(self, reason: str, detail: str = "", timeout_s: float = CLOSE_TIMEOUT_S) -> bool:
        """Say ``offline`` with ``reason`` for every mine, wait for the PUBACKs of what is in
        flight (at most ``timeout_s``), disconnect; True when the offline reached the broker
        (else the sockets are dropped without DISCONNECT, and the Last Will says offline)."""
        if self._closed:
            return True
        self._closed = True
        last = self.set("offline", reason, int(time.time() * 1000), detail)
        deadline = time.monotonic() + timeout_s
        with self._lock:
            pending = [p for p in self._pending if _published(p) is False]
        for info in pending:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        sent = all(_published(info) for info in last)
        if not sent:
            log.error("status: the broker did not acknowledge offline (%s) within %g s; the "
                      "Last Will says offline once the connections drop", reason, timeout_s)
        for client in self._clients.values():
            if sent:
                client.disconnect()
            client.loop_stop()
            if not sent and (sock := client.socket()) is not None:
                sock.close()  # no DISCONNECT: the broker publishes the will
        return sent


def _published(info: mqtt.MQTTMessageInfo) -> bool | None:
    """Whether the broker acknowledged it; None when paho cannot tell (published while
    disconnected: paho sends it after reconnecting, without tracking it)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return None
