"""Record what a broker carries: subscribe and write every message with its receive time.

:func:`record` subscribes with paho-mqtt 2 (MQTT 3.1.1, clean session: a tap, not a consumer)
at QoS 1 to ``topic`` (default ``jinmei/+/telemetry/#``: every mine's telemetry) and writes each
message to a recording (``simulators.recording``: JSON Lines, gzip for ``.gz``) as it arrives,
flushed, in the order the broker delivered them. It returns when ``stop`` is set, after
``duration_s`` or after ``count`` messages, whichever comes first. A broker that cannot be
reached or refuses the connection raises :class:`~config.errors.DeliveryError`; a connection
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
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.errors import DeliveryError
from simulators.feed import Message
from simulators.publisher import CONNECT_TIMEOUT_S, KEEPALIVE_S, broker_address
from simulators.recording import writer

__all__ = ["TELEMETRY", "RecordSummary", "record"]

TELEMETRY = "jinmei/+/telemetry/#"  # `#` also matches jinmei/<mine>/telemetry itself


@dataclass(frozen=True, slots=True)
class RecordSummary:
    """What one :func:`record` call wrote: messages, payload bytes, wall seconds."""

    messages: int
    payload_bytes: int
    seconds: float


def record(broker_url: str, out: Path, *, topic: str = TELEMETRY,
           stop: threading.Event | None = None, duration_s: float | None = None,
           count: int | None = None, client_id: str = "jinmei-record",
           on_ready: Callable[[], None] | None = None,
           clock: Callable[[], float] = time.time) -> RecordSummary:
    """Record until stopped (module docstring); ``on_ready`` runs once subscribed."""
    host, port, username, password = broker_address(broker_url)
    stop = stop or threading.Event()
    recording = writer(out)
    subscribed = threading.Event()
    refusal: list[str] = []
    written = [0]
    lock = threading.Lock()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
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

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = on_message
    began = time.monotonic()
    try:
        try:
            client.connect(host, port, KEEPALIVE_S)
        except OSError as error:
            raise DeliveryError(broker_url, f"cannot connect: {error}", retryable=True) from error
        client.loop_start()
        if not subscribed.wait(CONNECT_TIMEOUT_S) or refusal:
            why = refusal[0] if refusal else f"no SUBACK within {CONNECT_TIMEOUT_S:g} s"
            raise DeliveryError(broker_url, f"cannot subscribe: {why}", retryable=True)
        if on_ready is not None:
            on_ready()
        stop.wait(duration_s)
    finally:
        client.disconnect()
        client.loop_stop()
        with lock:
            recording.close()
    return RecordSummary(recording.messages, written[0], time.monotonic() - began)
