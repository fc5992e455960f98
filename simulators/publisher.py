"""Publish a feed to an MQTT broker, paced to the feed clock or as fast as possible, losing nothing.

:func:`publish` connects with paho-mqtt 2 (callback API version 2, MQTT 3.1.1 so that the
embedded amqtt broker takes it as well as Mosquitto), publishes every message at ``qos``
(default 1) in order and returns only when the broker has acknowledged each one.

Options: ``broker_url`` ``mqtt://[user:pass@]host[:port]`` (port 1883 by default) ·
``speed`` feed time per wall time (``10`` = ten times real time; ``None`` = as fast as
possible) · ``client_id`` (``jinmei-sim``) · ``window`` (100): at most this many publishes
wait for their acknowledgement, the oldest is awaited before the next goes out, so a fast
feed can neither outrun the broker nor fill memory (paho's own bookkeeping slows past a few
hundred in flight: measured 26 k single-reading msg/s into Mosquitto at 100, 15 k at 1,000)
· ``ack_timeout_s`` (30) · ``stop``: once set, nothing more is published, but what was
published is still awaited.

Failures are raised, never logged and dropped: a bad URL, ``qos`` or ``speed`` is a
``ValueError`` before any connection; a broker that cannot be reached, refuses the
connection or leaves a publish unacknowledged past ``ack_timeout_s`` raises
:class:`~config.errors.DeliveryError` (``retryable=True``). A connection lost mid-feed is
not resumed: the publishes it leaves unacknowledged fail the call.

The calling thread drives paho itself (its external-loop API: ``socket``, ``loop_read``,
``loop_write``, ``loop_misc``): each publish is written at once and acknowledgements are read
while waiting for the oldest. (Measured: with paho's ``loop_start`` thread every publish woke
that thread through a socket pair and every acknowledgement woke the caller — 73 µs of CPU per
message; driven from one thread, 38 µs. On a shared machine that CPU is the broker's and the
service's.)
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.errors import DeliveryError
from simulators.feed import Message

# Message re-exported: what publish takes
__all__ = ["Message", "PublishSummary", "broker_address", "publish"]

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
PACING_SLICE_S = 0.1  # while pacing, the socket is served (keepalive) and `stop` checked this often


@dataclass(frozen=True, slots=True)
class PublishSummary:
    """What one :func:`publish` call delivered: messages and readings acknowledged, wall time."""

    messages: int
    readings: int
    seconds: float


def publish(messages: Iterable[Message], broker_url: str, *, speed: float | None,
            client_id: str = "jinmei-sim", qos: int = 1,
            on_message: Callable[[Message], None] | None = None,
            stop: threading.Event | None = None, window: int = 100,
            ack_timeout_s: float = 30.0) -> PublishSummary:
    """Publish ``messages`` in order and wait for every acknowledgement (module docstring).

    ``on_message`` is called with each message once it is handed to the client.
    """
    host, port, username, password = broker_address(broker_url)
    if qos not in (0, 1, 2):
        raise ValueError(f"qos value must be 0, 1, or 2: {qos}")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be positive or None (as fast as possible): {speed}")
    if window < 1:
        raise ValueError(f"window must be at least 1: {window}")
    stop = stop or threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(window)  # paho's own window must not be the narrower one
    refusal: list[str] = []
    answered: list[bool] = []

    def on_connect(_client: mqtt.Client, _userdata: Any, _flags: Any,
                   reason: Any, _properties: Any) -> None:
        if reason.is_failure:
            refusal.append(str(reason))
        answered.append(True)

    client.on_connect = on_connect
    try:
        client.connect(host, port, KEEPALIVE_S)  # sends CONNECT: no loop thread to do it later
    except OSError as error:
        raise DeliveryError(broker_url, f"cannot connect: {error}", retryable=True) from error
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not answered and (left := deadline - time.monotonic()) > 0:
            _serve(client, left, broker_url)
        if not answered or refusal:
            why = refusal[0] if refusal else f"no CONNACK within {CONNECT_TIMEOUT_S:g} s"
            raise DeliveryError(broker_url, f"connection refused: {why}", retryable=True)
        return _publish_all(client, messages, broker_url, speed, qos, on_message, stop, window,
                            ack_timeout_s)
    finally:
        client.disconnect()  # written at once; paho closes the socket once it is out
        sock = client.socket()
        if sock is not None:  # the DISCONNECT could not be written: close it ourselves
            sock.close()


def _serve(client: mqtt.Client, timeout_s: float, broker_url: str) -> None:
    """Wait up to ``timeout_s`` for the socket, then read what came (CONNACK, PUBACKs), write
    what is queued and keep the connection alive; DeliveryError once the connection is lost."""
    sock = client.socket()
    if sock is None:
        raise DeliveryError(broker_url, "connection lost", retryable=True)
    readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [],
                                          timeout_s)
    rc = client.loop_read() if readable else mqtt.MQTT_ERR_SUCCESS
    if rc == mqtt.MQTT_ERR_SUCCESS and writable:
        rc = client.loop_write()
    if rc == mqtt.MQTT_ERR_SUCCESS:
        rc = client.loop_misc()
    if rc != mqtt.MQTT_ERR_SUCCESS:
        raise DeliveryError(broker_url, f"connection lost: {mqtt.error_string(rc)}",
                            retryable=True)


def _publish_all(client: mqtt.Client, messages: Iterable[Message], broker_url: str,
                 speed: float | None, qos: int, on_message: Callable[[Message], None] | None,
                 stop: threading.Event, window: int, ack_timeout_s: float) -> PublishSummary:
    pending: deque[mqtt.MQTTMessageInfo] = deque()
    sent = readings = 0
    began = time.monotonic()
    first_ms: int | None = None
    for message in messages:
        if stop.is_set():
            break
        if speed is not None:
            first_ms = message.at_ms if first_ms is None else first_ms
            due = began + (message.at_ms - first_ms) / 1000 / speed
            while not stop.is_set() and (delay := due - time.monotonic()) > 0:
                _serve(client, min(delay, PACING_SLICE_S), broker_url)
            if stop.is_set():
                break
        if len(pending) >= window:
            _acknowledged(client, pending.popleft(), broker_url, ack_timeout_s)
        pending.append(client.publish(message.topic, message.payload, qos=qos))
        sent += 1
        readings += message.readings
        if on_message is not None:
            on_message(message)
    while pending:
        _acknowledged(client, pending.popleft(), broker_url, ack_timeout_s)
    return PublishSummary(sent, readings, time.monotonic() - began)


def _acknowledged(client: mqtt.Client, info: mqtt.MQTTMessageInfo, broker_url: str,
                  timeout_s: float) -> None:
    """Serve the socket until one publish is acknowledged; DeliveryError if it fails or
    times out."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if info.is_published():
                return
        except (RuntimeError, ValueError) as error:  # paho: not queued, or connection lost
            raise DeliveryError(broker_url, f"publish {info.mid} failed: {error}",
                                retryable=True) from error
        if (left := deadline - time.monotonic()) <= 0:
            raise DeliveryError(broker_url, f"publish {info.mid} not acknowledged within "
                                f"{timeout_s:g} s", retryable=True)
        _serve(client, left, broker_url)


def broker_address(url: str) -> tuple[str, int, str, str]:
    """(host, port, username, password) of ``mqtt://[user:pass@]host[:port]``."""
    parts = urlsplit(url)
    try:
        port = parts.port or 1883
    except ValueError as error:
        raise ValueError(f"broker_url {url!r}: bad port") from error
    if parts.scheme != "mqtt" or not parts.hostname:
        raise ValueError(f"broker_url must look like mqtt://[user:pass@]host[:port]: {url!r}")
    return parts.hostname, port, parts.username or "", parts.password or ""
