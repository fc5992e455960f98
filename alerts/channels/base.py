"""What every channel sends, and how a receiver's channel is built.

A :class:`Notification` is one message to one receiver: its idempotency ``key`` (the same on
every retry, so a receiver can drop duplicates), why it is sent (``reason``: first, update,
repeat, floor, escalation), the group (mine and area) and the alert transitions, each in the
wire contract's JSON shape. A channel's ``send`` returns when the receiver has accepted it and
raises :class:`~config.errors.DeliveryError` otherwise, ``retryable`` when trying again may
help (network down, timeout, 5xx, 429) and not when it will not (4xx: the receiver refused it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from alerts.wire import Alert, alert_fields
from config.model import Receiver

__all__ = [
    "Channel",
    "Notification",
    "Publish",
    "build_channel",
    "decode_notification",
    "encode_notification",
    "http_status_retryable",
]


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    receiver: str
    reason: str
    mine: str
    area: str
    alerts: tuple[Alert, ...]
    version: int = 1


_encoder = msgspec.json.Encoder()


def encode_notification(n: Notification) -> bytes:
    return _encoder.encode(n)


def decode_notification(payload: bytes) -> Notification:
    raw = msgspec.json.decode(payload)
    raw["alerts"] = [alert_fields(a) for a in raw["alerts"]]  # null value → NaN
    return msgspec.convert(raw, Notification)


class Channel(Protocol):
    def send(self, notification: Notification) -> None: ...


class _PublishResult(Protocol):
    def wait_for_publish(self, timeout: float | None = None) -> None: ...

    def is_published(self) -> bool: ...


# publish(topic, payload) with QoS 1; the result tells when the broker has acknowledged it.
Publish = Callable[[str, bytes], _PublishResult]


def http_status_retryable(status: int) -> bool:
    """5xx, 408 and 429 may pass later; any other 4xx is the receiver refusing the content."""
    return status >= 500 or status in (408, 429)


def build_channel(receiver: Receiver, publish: Publish | None = None) -> Channel:
    """The channel of a configured receiver (``publish`` is needed for ``mqtt`` ones)."""
    from alerts.channels import email, mqtt, sms, webhook  # one module per channel

    if receiver.channel == "webhook":
        return webhook.WebhookChannel(receiver)
    if receiver.channel == "email":
        return email.EmailChannel(receiver)
    if receiver.channel == "sms":
        return sms.SmsChannel(receiver)
    if receiver.channel == "mqtt":
        if publish is None:
            raise ValueError(f"receiver {receiver.name}: an mqtt channel needs a broker")
        return mqtt.MqttChannel(receiver, publish)
    raise ValueError(f"receiver {receiver.name}: unknown channel {receiver.channel!r}")
