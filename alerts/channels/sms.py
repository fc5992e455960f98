"""SMS channel: any HTTP SMS gateway, through a request body template.

Receiver keys: ``url``, ``to`` (phone numbers; one request each), ``body`` (a template with
``$to``, ``$text`` and ``$key``), ``content_type`` (default ``application/json``; values are
JSON-escaped then, form-encoded for ``application/x-www-form-urlencoded``), ``timeout_s``
(default 10), ``secret_env`` (sent as ``Authorization: Bearer <secret>`` when set). ``$text``
is the Chinese line of each alert's message (an SMS is short), ``$key`` the idempotency key
with the number's position appended, so a gateway can drop a repeated request.
"""

from __future__ import annotations

import json
import urllib.parse
from string import Template

from alerts.channels.base import Notification
from alerts.channels.http import post
from config.model import Receiver

__all__ = ["SmsChannel", "sms_text"]

_FORM = "application/x-www-form-urlencoded"


def sms_text(notification: Notification) -> str:
    return "\n".join(a.message.split("\n", 1)[0] for a in notification.alerts)


class SmsChannel:
    def __init__(self, receiver: Receiver) -> None:
        self.name = receiver.name
        self.url = str(receiver.option("url"))
        self.to: tuple[str, ...] = receiver.option("to", ())  # type: ignore[assignment]
        self.template = Template(str(receiver.option("body")))
        self.content_type = str(receiver.option("content_type", "application/json"))
        self.timeout_s = float(receiver.option("timeout_s", 10.0))  # type: ignore[arg-type]
        self.secret = receiver.secret

    def send(self, notification: Notification) -> None:
        text = sms_text(notification)
        headers = {"Content-Type": self.content_type, "Idempotency-Key": notification.key}
        if self.secret:
            headers["Authorization"] = f"Bearer {self.secret}"
        for n, number in enumerate(self.to):
            values = {"to": number, "text": text, "key": f"{notification.key}-{n}"}
            quote = ((lambda v: urllib.parse.quote_plus(v)) if self.content_type == _FORM
                     else (lambda v: json.dumps(v, ensure_ascii=False)[1:-1]))
            body = self.template.substitute({k: quote(v) for k, v in values.items()})
            post(f"sms {self.name}", self.url, body.encode(), headers, self.timeout_s)
