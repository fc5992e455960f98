"""MQTT channel: the notification as JSON on a topic, QoS 1, confirmed by the broker.

Receiver key: ``topic`` (default ``jinmei/{mine}/notifications/{receiver}``; ``{mine}`` and
``{receiver}`` are filled in). ``send`` waits up to 10 s for the broker's PUBACK: an
unconfirmed publish is a retryable failure, so the outbox tries again (the payload carries its
idempotency ``key``). This is the routed channel; the unconditional stream of every transition
on ``jinmei/<mine>/alerts`` is published by the dispatcher itself.
"""

from __future__ import annotations

from typing import Any

from alerts.channels.base import Notification, Publish, encode_notification
from config.broker import broker_address, new_client
from config.errors import DeliveryError
from config.model import BrokerConfig, Receiver

__all__ = ["MqttChannel", "PahoPublisher"]

_DEFAULT_TOPIC = "jinmei/{mine}/notifications/{receiver}"
_PUBACK_WAIT_S = 10.0


class MqttChannel:
    def __init__(self, receiver: Receiver, publish: Publish) -> None:
        self.name = receiver.name
        self.topic = str(receiver.option("topic", _DEFAULT_TOPIC))
        self._publish = publish

    def send(self, notification: Notification) -> None:
        topic = self.topic.format(mine=notification.mine, receiver=self.name)
        try:
            result = self._publish(topic, encode_notification(notification))
            result.wait_for_publish(_PUBACK_WAIT_S)
            published = result.is_published()
        except (RuntimeError, ValueError) as exc:  # paho: queue full, not connected
            raise DeliveryError(f"mqtt {self.name}", str(exc), retryable=True) from exc
        if not published:
            raise DeliveryError(f"mqtt {self.name}", f"no PUBACK on {topic} within "
                                f"{_PUBACK_WAIT_S:g} s", retryable=True)


class _Confirmation:
    """A publish's outcome: acknowledged, or refused by the broker (an ACL that does not let
    jinmei's account write the topic), which ``is_published`` raises as RuntimeError."""

    def __init__(self, info: Any, refused: dict[int, str]) -> None:
        self._info, self._refused = info, refused

    def wait_for_publish(self, timeout: float | None = None) -> None:
        self._info.wait_for_publish(timeout)

    def is_published(self) -> bool:
        if not self._info.is_published():
            return False
        if (why := self._refused.pop(self._info.mid, None)) is not None:
            raise RuntimeError(f"the broker refused it: {why} (may the account "
                               "[broker] username write this topic?)")
        return True


class PahoPublisher:
    """A connection of its own for routed MQTT notifications, so a PUBACK can be awaited
    (the ingest session's publishes are fire-and-queue), with the broker settings (TLS,
    account) of the deployment (``config.broker``). Connects in the background and reconnects
    by itself; ``close`` disconnects."""

    def __init__(self, broker: BrokerConfig, client_id: str = "jinmei-notify") -> None:
        self._client = new_client(broker, client_id=client_id)
        self._refused: dict[int, str] = {}  # mid → why the broker refused it (MQTT 5 PUBACK)
        self._client.on_publish = self._on_publish
        address = broker_address(broker.url)
        self._client.connect_async(address.host, address.port)
        self._client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:  # paho marks the message published right after this call
            self._refused[mid] = str(reason)

    def __call__(self, topic: str, payload: bytes) -> Any:
        return _Confirmation(self._client.publish(topic, payload, qos=1), self._refused)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
