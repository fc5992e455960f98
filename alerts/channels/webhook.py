"""Webhook channel: the notification as JSON, POSTed, signed with HMAC-SHA256 over a timestamp.

Receiver keys: ``url`` (http or https), ``timeout_s`` (default 10), ``secret_env`` (the
environment variable holding the shared secret) — or ``unsigned = true``, which the loader
demands explicitly for a receiver without a secret (anyone who reaches it can forge alerts).
Headers: ``Content-Type: application/json``, ``Idempotency-Key`` (the notification key: the
same on every retry), ``X-Jinmei-Timestamp`` (the time of this attempt, epoch seconds) and
``X-Jinmei-Signature: sha256=<hex>`` — HMAC-SHA256 with the secret of
``"<timestamp>.<body>"`` (the timestamp's decimal digits, a dot, the exact body bytes). The
receiver recomputes it to know the message is jinmei's and whole, and refuses a timestamp
more than 5 minutes from its own clock, so a captured request cannot be replayed later
(README "Security" shows a receiver). Every retry is signed afresh with its own timestamp.
Retries with exponential backoff and jitter are the outbox's (``alerts.outbox``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from alerts.channels.base import Notification, encode_notification
from alerts.channels.http import post
from config.model import Receiver

__all__ = ["REPLAY_WINDOW_S", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "WebhookChannel",
           "signature"]

SIGNATURE_HEADER = "X-Jinmei-Signature"
TIMESTAMP_HEADER = "X-Jinmei-Timestamp"
# How old a signed request a receiver should still accept (design.md wire contract): long
# enough for clock skew and a slow hop, short enough that a captured request soon goes stale.
REPLAY_WINDOW_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


class WebhookChannel:
    def __init__(self, receiver: Receiver, clock: Callable[[], float] = time.time) -> None:
        self.name = receiver.name
        self.url = str(receiver.option("url"))
        self.timeout_s = float(receiver.option("timeout_s", 10.0))  # type: ignore[arg-type]
        self.secret = receiver.secret
        self._clock = clock

    def send(self, notification: Notification) -> None:
        body = encode_notification(notification)
        headers = {"Content-Type": "application/json", "Idempotency-Key": notification.key}
        if self.secret:
            timestamp = int(self._clock())
            headers[TIMESTAMP_HEADER] = str(timestamp)
            headers[SIGNATURE_HEADER] = signature(self.secret, timestamp, body)
        post(f"webhook {self.name}", self.url, body, headers, self.timeout_s)
