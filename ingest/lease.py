"""A lease on the broker: which of several active-active instances does a singular job.

Two jinmei instances watching the same mines both ingest, store and alert (idempotent
everywhere), but the regulator networking files (``networking``) must be written and uploaded
by one of them at a time. The lease is MQTT's own retained message with a Message Expiry
Interval (MQTT 5) — no new protocol, no extra server:

- topic ``jinmei/<first mine id, sorted>/networking/lease`` (instances watching the same mines
  compute the same topic), retained, QoS 1, JSON ``{"holder": instance, "until": epoch ms}``,
  published with Message Expiry Interval ``lease_s``, so the broker drops a dead holder's
  lease by itself; an empty retained message releases it (clean stop).
- the holder renews every ``lease_s / 3``; every instance subscribes and remembers the last
  lease it saw and *when it saw it* (its own monotonic clock: no trust in other clocks).
- an instance subscribed for ``SETTLE_S`` (the retained lease, if any, has arrived) that has
  seen no lease, or none renewed for ``lease_s``, claims it (publishes
  its own) and holds it once, ``SETTLE_S`` later, the last lease it saw is still its own.
  The broker delivers one topic's messages to every subscriber in one order, so of two
  instances claiming together both see the same claim last, and only its author holds.

:meth:`Lease.held` is polled by the networking thread once a turn, time passed in. What a
takeover costs: up to ``lease_s`` + ``SETTLE_S`` without networking files (the CDSS period is
10 s: ``LEASE_S`` 15 s is about two files missed), and the new holder sends its own definitions
and the abnormal events of its record not yet in its own upload queue (the regulator may see
an event twice, never none). In a network partition both sides may hold for a while; the
files are named by mine, type and time, so the regulator's platform keeps one of each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.broker import broker_address, new_client
from config.model import BrokerConfig

__all__ = ["LEASE_S", "SETTLE_S", "Lease", "lease_topic"]

log = logging.getLogger(__name__)

LEASE_S = 15.0  # jinmei's own: 1.5 CDSS periods (10 s) of networking at most lost to a takeover
SETTLE_S = 2.0  # jinmei's own: a claim's round trip through the broker, with a wide margin


def lease_topic(mines: list[str], job: str = "networking") -> str:
    return f"jinmei/{sorted(mines)[0]}/{job}/lease"


class Lease:
    """One instance's view of the lease; see the module docstring. ``start`` connects in the
    background, ``held(now)`` says (and renews) whether this instance holds it, ``close``
    releases it when held."""

    def __init__(self, broker: BrokerConfig, topic: str, instance: str,
                 lease_s: float = LEASE_S, settle_s: float = SETTLE_S) -> None:
        self.topic, self.instance = topic, instance
        self.lease_s, self.settle_s = lease_s, settle_s
        address = broker_address(broker.url)
        self.host, self.port = address.host, address.port
        self._lock = threading.Lock()
        self._seen: tuple[str, float] | None = None  # (holder, monotonic time seen)
        self._claimed_at: float | None = None
        self._renewed_at = -float("inf")
        self._holding = False
        self._subscribed_at: float | None = None  # retained lease arrives right after
        # the same login and TLS (CA, client certificate) as the ingest connection
        self._client = new_client(broker, client_id=f"{broker.client_id}-lease",
                                  protocol=mqtt.MQTTv5)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect

    def _on_subscribe(self, *args: object) -> None:
        self._subscribed_at = time.monotonic()

    def _on_disconnect(self, *args: object) -> None:
        self._subscribed_at = None

    def _on_message(self, client: mqtt.Client, userdata: object,
                    message: mqtt.MQTTMessage) -> None:
        try:
            holder = str(json.loads(message.payload)["holder"]) if message.payload else ""
        except (ValueError, KeyError, TypeError):
            log.warning("lease %s: ignoring a message that is not a lease", self.topic)
            return
        with self._lock:
            self._seen = (holder, time.monotonic()) if holder else None

    def start(self) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def _publish(self, now: float) -> None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = int(self.lease_s)
        payload = {"holder": self.instance, "until": int((now + self.lease_s) * 1000)}
        self._client.publish(self.topic, json.dumps(payload), qos=1, retain=True,
                             properties=properties)

    def held(self, now: float) -> bool:
        """Whether this instance holds the lease now (epoch s ``now`` is only written into
        the lease for people to read); renews or claims it as due."""
        mono = time.monotonic()
        subscribed = self._subscribed_at
        if subscribed is None or mono - subscribed < self.settle_s:
            # Not connected, or the retained lease (if any) may not have arrived yet.
            self._set_holding(False, "the broker is not reachable" if subscribed is None
                              else "just connected")
            return False
        with self._lock:
            seen = self._seen
        mine = seen is not None and seen[0] == self.instance
        if mine and self._claimed_at is not None and mono - self._claimed_at < self.settle_s:
            return False  # our claim is out; wait to see whether another came after it
        if mine:
            if mono - self._renewed_at >= self.lease_s / 3:
                self._renewed_at = mono
                self._publish(now)
            self._set_holding(True, "")
            return True
        self._claimed_at = None
        if seen is not None and mono - seen[1] < self.lease_s:
            self._set_holding(False, f"held by {seen[0]}")
            return False
        self._claimed_at = self._renewed_at = mono  # nobody holds it: claim
        self._publish(now)
        return False

    def _set_holding(self, holding: bool, why: str) -> None:
        if holding != self._holding:
            if holding:
                log.info("lease %s: held by this instance (%s)", self.topic, self.instance)
            else:
                log.info("lease %s: not held by this instance (%s)", self.topic, why)
        self._holding = holding

    def close(self) -> None:
        """Release the lease if held (so another instance takes over at once), disconnect."""
        if self._holding:
            with contextlib.suppress(RuntimeError, ValueError):  # not connected: it expires
                self._client.publish(self.topic, b"", qos=1, retain=True).wait_for_publish(5.0)
        self._client.disconnect()
        self._client.loop_stop()
