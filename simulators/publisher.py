"""Publish a feed to an MQTT broker, paced to the feed clock or as fast as possible, losing nothing.

:func:`publish` connects with paho-mqtt 2 (the broker settings' protocol: MQTT 5 by default, so
that a publish the broker refuses is known; ``"3.1.1"`` for the embedded amqtt broker),
publishes every message at ``qos`` (default 1) in order and returns only when the broker has
acknowledged each one.

Options: ``broker``: a :class:`~config.model.BrokerConfig` (TLS, client certificate, user name,
password from ``JINMEI_MQTT_PASSWORD``; ``config.broker``) or a URL ``mqtt[s]://[user@]host[:port]``
— never with a password in it (refused) ·
``speed`` feed time per wall time (``10`` = ten times real time; ``None`` = as fast as
possible) · ``client_id`` (``jinmei-sim``) · ``window`` (100): at most this many publishes
wait for their acknowledgement, the oldest is awaited before the next goes out, so a fast
feed can neither outrun the broker nor fill memory (paho's own bookkeeping slows past a few
hundred in flight: measured 26 k single-reading msg/s into Mosquitto at 100, 15 k at 1,000)
· ``ack_timeout_s`` (30) · ``stop``: once set, nothing more is published, but what was
published is still awaited.

Failures are raised, never logged and dropped: a bad ``qos`` or ``speed`` is a ``ValueError``
and a bad URL or TLS file a :class:`~config.errors.ConfigError` before any connection; a broker
that cannot be reached, refuses the connection or leaves a publish unacknowledged past
``ack_timeout_s`` raises :class:`~config.errors.DeliveryError` (``retryable`` unless the
certificate is not trusted or the login refused), its message naming the setting to fix and
its URL redacted. A connection lost mid-feed is
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

import paho.mqtt.client as mqtt

from config.broker import broker_address, explain_failure, explain_refusal, new_client, with_url
from config.errors import DeliveryError
from config.model import BrokerConfig
from config.redact import redact_url
from simulators.feed import Message

# Message re-exported: what publish takes
__all__ = ["Message", "PublishSummary", "broker_settings", "open_client", "publish"]

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
PACING_SLICE_S = 0.1  # while pacing, the socket is served (keepalive) and `stop` checked this often


@dataclass(frozen=True, slots=True)
class PublishSummary:
    """What one :func:`publish` call delivered: messages and readings acknowledged, wall time."""

    messages: int
    readings: int
    seconds: float


def publish(messages: Iterable[Message], broker: BrokerConfig | str, *, speed: float | None,
            client_id: str = "jinmei-sim", qos: int = 1,
            on_message: Callable[[Message], None] | None = None,
            stop: threading.Event | None = None, window: int = 100,
            ack_timeout_s: float = 30.0) -> PublishSummary:
    """Publish ``messages`` in order and wait for every acknowledgement (module docstring).

    ``on_message`` is called with each message once it is handed to the client.
    """
    settings = broker_settings(broker)
    if qos not in (0, 1, 2):
        raise ValueError(f"qos value must be 0, 1, or 2: {qos}")
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be positive or None (as fast as possible): {speed}")
    if window < 1:
        raise ValueError(f"window must be at least 1: {window}")
    stop = stop or threading.Event()
    client = open_client(settings, client_id, window)
    target = redact_url(settings.url)
    refusal: list[str] = []
    answered: list[bool] = []

    def on_connect(_client: mqtt.Client, _userdata: Any, _flags: Any,
                   reason: Any, _properties: Any) -> None:
        if reason.is_failure:
            refusal.append(explain_refusal(reason, settings).message)
        answered.append(True)

    client.on_connect = on_connect
    client.on_publish = _note_refusals
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while not answered and (left := deadline - time.monotonic()) > 0:
            try:
                _serve(client, left, target)
            except DeliveryError:
                if not refusal:  # the broker closes the connection it refused: say why
                    raise
        if not answered or refusal:
            why = refusal[0] if refusal else f"no CONNACK within {CONNECT_TIMEOUT_S:g} s"
            raise DeliveryError(target, f"connection refused: {why}", retryable=not refusal)
        return _publish_all(client, messages, target, speed, qos, on_message, stop, window,
                            ack_timeout_s)
    finally:
        client.disconnect()  # written at once; paho closes the socket once it is out
        sock = client.socket()
        if sock is not None:  # the DISCONNECT could not be written: close it ourselves
            sock.close()


def broker_settings(broker: BrokerConfig | str) -> BrokerConfig:
    """``broker`` itself, or a URL as settings (anonymous, the system's CAs); the URL checked."""
    if isinstance(broker, str):
        return with_url(BrokerConfig(), broker)
    broker_address(broker.url)
    return broker


def open_client(broker: BrokerConfig, client_id: str, window: int = 20) -> mqtt.Client:
    """A paho client with the TLS, credentials and protocol of ``broker`` (MQTT 5 by default:
    its PUBACK says when the broker refused a publish, where 3.1.1 drops it silently; the
    embedded amqtt broker needs ``protocol = "3.1.1"``), its CONNECT sent: the TCP and TLS
    handshakes are done, so a certificate or unreachable broker fails here, as DeliveryError
    naming the setting. ``window``: paho's own in-flight limit (it must not be narrower than
    the caller's)."""
    client = new_client(broker, client_id=client_id)
    client.max_inflight_messages_set(window)
    client.user_data_set({})  # mid → reason of each publish the broker refused (MQTT 5)
    address = broker_address(broker.url)
    try:
        client.connect(address.host, address.port, KEEPALIVE_S)
    except OSError as error:
        failure = explain_failure(error, broker)
        raise DeliveryError(redact_url(broker.url), f"cannot connect: {failure.message}",
                            retryable=not failure.permanent) from error
    return client


def _serve(client: mqtt.Client, timeout_s: float, target: str) -> None:
    """Wait up to ``timeout_s`` for the socket, then read what came (CONNACK, PUBACKs), write
    what is queued and keep the connection alive; DeliveryError once the connection is lost."""
    sock = client.socket()
    if sock is None:
        raise DeliveryError(target, "connection lost", retryable=True)
    readable, writable, _ = select.select([sock], [sock] if client.want_write() else [], [],
                                          timeout_s)
    rc = client.loop_read() if readable else mqtt.MQTT_ERR_SUCCESS
    if rc == mqtt.MQTT_ERR_SUCCESS and writable:
        rc = client.loop_write()
    if rc == mqtt.MQTT_ERR_SUCCESS:
        rc = client.loop_misc()
    if rc != mqtt.MQTT_ERR_SUCCESS:
        raise DeliveryError(target, f"connection lost: {mqtt.error_string(rc)}",
                            retryable=True)


def _publish_all(client: mqtt.Client, messages: Iterable[Message], target: str,
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
                _serve(client, min(delay, PACING_SLICE_S), target)
            if stop.is_set():
                break
        if len(pending) >= window:
            _acknowledged(client, pending.popleft(), target, ack_timeout_s)
        pending.append(client.publish(message.topic, message.payload, qos=qos))
        sent += 1
        readings += message.readings
        if on_message is not None:
            on_message(message)
    while pending:
        _acknowledged(client, pending.popleft(), target, ack_timeout_s)
    return PublishSummary(sent, readings, time.monotonic() - began)


def _note_refusals(client: mqtt.Client, refused: dict[int, str], mid: int, reason: Any,
                   _properties: Any) -> None:
    if reason.is_failure:
        refused[mid] = str(reason)


def _acknowledged(client: mqtt.Client, info: mqtt.MQTTMessageInfo, target: str,
                  timeout_s: float) -> None:
    """Serve the socket until one publish is acknowledged; DeliveryError if it fails, is
    refused by the broker (an account not allowed to write the topic) or times out."""
    deadline = time.monotonic() + timeout_s
    refused: dict[int, str] = client.user_data_get()
    while True:
        try:
            if info.is_published():
                if info.mid in refused:
                    raise DeliveryError(target, f"the broker refused publish {info.mid}: "
                                        f"{refused.pop(info.mid)} (is this account allowed to "
                                        "write the topic?)", retryable=False)
                return
        except (RuntimeError, ValueError) as error:  # paho: not queued, or connection lost
            raise DeliveryError(target, f"publish {info.mid} failed: {error}",
                                retryable=True) from error
        if (left := deadline - time.monotonic()) <= 0:
            raise DeliveryError(target, f"publish {info.mid} not acknowledged within "
                                f"{timeout_s:g} s", retryable=True)
        _serve(client, left, target)
