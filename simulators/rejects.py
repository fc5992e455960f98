"""Watch ``jinmei/<mine>/rejects`` while a feed is played, so a refused feed fails loudly.

A broker acknowledges a publish once it has taken it; whether the service *accepted* the
readings shows only on the rejects topic, where jinmei republishes every refused message or
reading with its reason (wire contract v1). ``jinmei simulate`` runs a :class:`RejectWatch`
beside the publisher and exits 1 when anything was refused — 60,000 readings rejected as
``future_timestamp`` must not end in exit 0.

The watch is a plain paho subscriber (QoS 1) on its own network thread. If it cannot connect
within ``CONNECT_TIMEOUT_S`` (e.g. a broker needing TLS or other credentials), ``start``
returns False and the caller says that rejects were not watched; it never stops the feed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt

from config.broker import broker_address, new_client
from config.model import BrokerConfig

__all__ = ["RejectWatch"]

CONNECT_TIMEOUT_S = 5.0
SETTLE_S = 2.0  # jinmei's own: after the last publish, rejects of the last batch still arrive


class RejectWatch:
    """Counts the rejects of one mine by reason while it runs."""

    def __init__(self, broker: BrokerConfig, mine: str) -> None:
        self.topic = f"jinmei/{mine}/rejects"
        self.by_reason: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        address = broker_address(broker.url)
        self._address = (address.host, address.port)
        # the same login and TLS as the publisher (the ACL must let this account read rejects)
        self._client = new_client(broker, protocol=mqtt.MQTTv311,
                                  client_id=f"jinmei-sim-rejects-{mine}-{time.monotonic_ns()}")
        self._client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._running = False

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        try:
            reason = str(json.loads(message.payload).get("reason", "unknown"))
        except (ValueError, AttributeError):
            reason = "unknown"
        with self._lock:
            self.by_reason[reason] += 1

    def start(self) -> bool:
        """Connect and subscribe; False when that did not happen within the time-out."""
        try:
            self._client.connect(*self._address)
        except OSError:
            return False
        self._client.loop_start()
        self._running = True
        return self._subscribed.wait(CONNECT_TIMEOUT_S)

    def stop(self, settle_s: float = SETTLE_S) -> Counter[str]:
        """Wait ``settle_s`` for the last rejects, disconnect; the rejects by reason."""
        if self._running:
            time.sleep(settle_s)
            self._client.disconnect()
            self._client.loop_stop()
            self._running = False
        with self._lock:
            return Counter(self.by_reason)
