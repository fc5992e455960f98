"""Record what a broker carries: subscribe and write every message with its receive time.

:func:`record` subscribes with paho-mqtt 2 (clean session: a tap, not a consumer)
at QoS 1 to ``topic`` (default ``jinmei/+/telemetry/#``: every mine's telemetry) and writes each
message to a recording (``simulators.recording``: JSON Lines, gzip for ``.gz``) as it arrives,
flushed, in the order the broker delivered them. It returns when ``stop`` is set, after
``duration_s`` or after ``count`` messages, whichever comes first. A broker that cannot be
reached or refuses the connection raises :class:`~config.errors.DeliveryError` (its message
names the setting to fix: ``config.broker``; ``broker`` is a BrokerConfig with TLS and
credentials, or a URL without a password); a connection
lost while recording is re-established by paho, and the recording goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from config.broker import explain_refusal
from config.errors import DeliveryError
from config.model import BrokerConfig
from config.redact import redact_url
from simulators.feed import Message
from simulators.publisher import CONNECT_TIMEOUT_S, broker_settings, open_client
from simulators.recording import writer

__all__ = ["TELEMETRY", "RecordSummary", "record"]

TELEMETRY = "jinmei/+/telemetry/#"  # `#` also matches jinmei/<mine>/telemetry itself


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What one :func:`record` call wrote: messages, payload bytes, wall seconds."""

    messages: int
    payload_bytes: int
    seconds: float


def record(broker: BrokerConfig | str, out: Path, *, topic: str = TELEMETRY,
           stop: threading.Event | None = None, duration_s: float | None = None,
           count: int | None = None, client_id: str = "jinmei-record",
           on_ready: Callable[[], None] | None = None,
           clock: Callable[[], float] = time.time) -> RecordSummary:
    """Record until stopped (module docstring); ``on_ready`` runs once subscribed."""
    settings = broker_settings(broker)
    target = redact_url(settings.url)
    stop = stop or threading.Event()
    recording = writer(out)
    subscribed = threading.Event()
    refusal: list[str] = []
    written = [0]
    lock = threading.Lock()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refusal.append(explain_refusal(reason, settings).message)
            subscribed.set()
        else:
            client.subscribe(topic, qos=1)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        with lock:
            if count is not None and recording.messages >= count:
                return
            recording.write(Message(int(clock() * 1000), message.topic, bytes(message.payload)))
            written[0] += len(message.payload)
            if count is not None and recording.messages >= count:
                stop.set()

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            refusal.append(f"the broker refused the subscription to {topic} (not allowed for "
                           f"this account?): {reasons[0]}")
        subscribed.set()

    began = time.monotonic()
    client = open_client(settings, client_id)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.loop_start()
        if not subscribed.wait(CONNECT_TIMEOUT_S) or refusal:
            why = refusal[0] if refusal else f"no SUBACK within {CONNECT_TIMEOUT_S:g} s"
            raise DeliveryError(target, f"cannot subscribe: {why}", retryable=not refusal)
        if on_ready is not None:
            on_ready()
        stop.wait(duration_s)
    finally:
        client.disconnect()
        client.loop_stop()
        with lock:
            recording.close()
    return RecordSummary(recording.messages, written[0], time.monotonic() - began)
