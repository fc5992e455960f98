"""The stray telemetry watcher: with workers, telemetry of a mine not configured is still refused.

One ``jinmei run`` process subscribes to ``jinmei/+/telemetry/#`` and rejects a message of a
mine it does not know as ``unknown_mine`` on ``jinmei/<that mine>/rejects``. Its workers
(:mod:`jinmei.workers`) each subscribe to their own mines only, so such a message — a gateway
with a typo in its mine id, a hostile publisher — would reach no process and vanish. A safety
system never drops input silently: when the parent runs the whole configuration (not
``--mines``, whose machines each see only part of it), it runs this watcher too.

- **One light MQTT client** built by :func:`config.broker.new_client` (the same URL, TLS and
  login as every jinmei client), client id ``<client_id>-strays``, subscribed to
  ``jinmei/+/telemetry/#`` at **QoS 0 on a clean session**: the broker keeps no session and
  no unacknowledged messages for it, and holds nothing for the workers on its account — a
  slow or absent watcher costs the workers nothing and nothing queues for it while it is
  away (what a stray publisher sent then is not refused: the watcher is a best-effort
  alarm about a misconfigured or hostile sender, not a store of its data).
- **Cheap for the configured mines**: only the topic's mine segment is looked at; a message
  of a mine some worker serves is dropped here without decoding (that worker handles it).
  Any other is handed to the same codec as one process's (:class:`ingest.codec.TelemetryCodec`
  of the deployment), so the reject is the one process's: ``bad_topic``, ``too_large`` or
  ``unknown_mine``, the same fields, on the same ``jinmei/<mine>/rejects`` topic, QoS 1.
- **Rate-limited per reject topic** (jinmei's own policy, as one process has none and a
  hostile publisher can send thousands a second): the first refusal of a mine is published at
  once; what follows within :data:`WINDOW_S` is held, and at the window's end one reject is
  published for the last held message with ``count`` (the refusals it stands for) and
  ``by_reason`` — so the counts of the published rejects add up to every refusal, none is
  lost, and one mine gets at most about one reject a second. A quiet mine's window is
  forgotten, so distinct hostile mine names cost memory only for a second.
- **Counted** in the parent's ``/metrics`` like one process counts them
  (:class:`jinmei.parent.ParentCollector`): ``jinmei_messages_received_total{mine=""}`` (one
  label for every stray: a label per hostile topic would grow the metrics without bound) and
  ``jinmei_rejects_total{reason}``, without a ``worker`` label.
- **Never harms the workers**: it runs in threads of the parent; an exception on one message
  is logged and the watcher goes on; a lost broker is reconnected by paho with the backoff of
  the ingest connection (:data:`ingest.mqtt.RECONNECT_MIN_S` doubling to
  :data:`~ingest.mqtt.RECONNECT_MAX_S`). The set of configured mines is the one at the
  parent's start, as the workers' assignment is (a mine added by SIGHUP is taken by no
  worker, and the watcher rejects its telemetry until the parent restarts).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from config.broker import broker_address, new_client
from config.model import Deployment
from ingest.codec import Reject, TelemetryCodec, reject_message
from ingest.mqtt import RECONNECT_MAX_S, RECONNECT_MIN_S, TELEMETRY_TOPIC

__all__ = ["WINDOW_S", "StrayWatcher"]

log = logging.getLogger(__name__)

WINDOW_S = 1.0  # jinmei's own: one reject per stray mine a second tells the operator enough
FLUSH_S = 0.2  # how often held refusals are looked at (a summary is at most this late)


@dataclass
class _Window:
    """One reject topic's rate-limit window: when it opened and what it holds since."""

    opened: float
    held: Reject | None = None
    held_at_ms: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)


class StrayWatcher:
    """Refuses telemetry of mines no worker serves (module docstring).

    ``start()`` connects in the background (retrying); ``stop()`` publishes what is held and
    disconnects. ``messages`` and ``rejects_by_reason`` are the counts for ``/metrics``.
    """

    def __init__(self, deployment: Deployment, *, clock: Callable[[], float] = time.time,
                 window_s: float = WINDOW_S) -> None:
        self.mines = frozenset(deployment.registry.mine_ids)
        self.codec = TelemetryCodec(deployment.registry,
                                    max_future_ms=int(deployment.ingest.max_future_s * 1000))
        self.broker = dataclasses.replace(deployment.broker,
                                          client_id=f"{deployment.broker.client_id}-strays")
        self.clock = clock
        self.window_s = window_s
        self.messages = 0  # stray messages taken (jinmei_messages_received_total{mine=""})
        self.rejects_by_reason: Counter[str] = Counter()
        self.published = 0  # reject messages sent (fewer than refusals under a flood)
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.subscribed = threading.Event()  # set while the subscription stands
        self._flusher = threading.Thread(target=self._flush_loop, name="jinmei-strays",
                                         daemon=True)
        v5 = self.broker.protocol == "5"
        self._client = new_client(self.broker, clean_session=None if v5 else True)
        self._client.reconnect_delay_set(int(RECONNECT_MIN_S), int(RECONNECT_MAX_S))
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *_: self.subscribed.set()
        self._client.on_disconnect = lambda *_: self.subscribed.clear()

    def start(self) -> None:
        address = broker_address(self.broker.url)
        options: dict[str, Any] = {"clean_start": True} if self.broker.protocol == "5" else {}
        self._client.connect_async(address.host, address.port,
                                   keepalive=self.broker.keepalive_s, **options)
        self._client.loop_start()
        self._flusher.start()

    def stop(self) -> None:
        self._closing.set()
        if self._flusher.is_alive():
            self._flusher.join()
        self._flush(final=True)
        self._client.disconnect()
        self._client.loop_stop()

    # ── paho's network thread ──
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("stray telemetry watcher: the broker refused the connection (%s)", reason)
            return
        client.subscribe(TELEMETRY_TOPIC, qos=0)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        topic = message.topic
        try:
            if topic.split("/", 2)[1] in self.mines:  # a worker's: no decode here
                return
            self.refuse(topic, bytes(message.payload))
        except Exception:  # a bug of ours must not end paho's thread (nor touch the workers)
            log.exception("stray telemetry watcher failed on a message of %r", topic)

    def refuse(self, topic: str, payload: bytes) -> None:
        """Count the refusal of one stray message; publish it now or hold it (rate limit)."""
        now_ms = int(self.clock() * 1000)
        rejects = self.codec.decode(topic, payload, now_ms).rejects
        with self._lock:
            self.messages += 1
            for reject in rejects:
                if self.rejects_by_reason[reject.reason] == 0:
                    log.warning("rejected (%s) on %s: %s — no worker serves this mine; further "
                                "ones only counted", reject.reason, reject.topic, reject.detail)
                self.rejects_by_reason[reject.reason] += 1
                window = self._windows.get(reject.mine)
                if window is None:
                    self._windows[reject.mine] = _Window(time.monotonic())
                    self._publish(reject, now_ms, None)
                else:
                    window.held, window.held_at_ms = reject, now_ms
                    window.by_reason[reject.reason] += 1

    # ── the flusher's thread ──
    def _flush_loop(self) -> None:
        while not self._closing.wait(FLUSH_S):
            try:
                self._flush()
            except Exception:
                log.exception("stray telemetry watcher: publishing held rejects failed")

    def _flush(self, final: bool = False) -> None:
        """Publish every window's held refusals once it has lasted ``window_s`` (all of them
        when ``final``); a window that held nothing is forgotten."""
        now = time.monotonic()
        with self._lock:
            for mine, window in list(self._windows.items()):
                if not final and now - window.opened < self.window_s:
                    continue
                if window.held is None:
                    del self._windows[mine]
                    continue
                self._publish(window.held, window.held_at_ms, window.by_reason)
                self._windows[mine] = _Window(now)

    def _publish(self, reject: Reject, received_at_ms: int,
                 by_reason: Counter[str] | None) -> None:
        topic, body = reject_message(reject, received_at_ms, by_reason)
        self._client.publish(topic, body, qos=1)  # queued by paho while disconnected
        self.published += 1
