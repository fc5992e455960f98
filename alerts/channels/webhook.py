"""Webhook channel: the notification as JSON, POSTed and signed with HMAC-SHA256.

Receiver keys: ``url`` (http or https), ``timeout_s`` (default 10), ``secret_env`` (the
environment variable holding the shared secret; without one the request is unsigned).
Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the notification key: the
same on every retry), and ``X-Jinmei-Signature: sha256=<hex>`` — HMAC-SHA256 of the exact body
with the secret, which the receiver recomputes to know the message is jinmei's and whole.
Retries with exponential backoff and jitter are the outbox's (``alerts.outbox``).
"""

from __future__ import annotations

import hashlib
import hmac

from alerts.channels.base import Notification, encode_notification
from alerts.channels.http import post
from config.model import Receiver

__all__ = ["SIGNATURE_HEADER", "WebhookChannel", "signature"]

SIGNATURE_HEADER = "X-Jinmei-Signature"


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    def __init__(self, receiver: Receiver) -> None:
        self.name = receiver.name
        self.url = str(receiver.option("url"))
        self.timeout_s = float(receiver.option("timeout_s", 10.0))  # type: ignore[arg-type]
        self.secret = receiver.secret

    def send(self, notification: Notification) -> None:
        body = encode_notification(notification)
        headers = {"Content-Type": "application/json", "Idempotency-Key": notification.key}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        post(f"webhook {self.name}", self.url, body, headers, self.timeout_s)
