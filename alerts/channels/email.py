"""E-mail channel: a bilingual message over SMTP with STARTTLS and login (``smtplib``).

Receiver keys: ``host``, ``port`` (default 587), ``starttls`` (default true: the session is
upgraded to TLS before login, and a server that cannot is a failure, never a plain-text
fallback), ``username`` and ``password_env`` (login, when a username is given), ``sender``,
``to`` (addresses), ``timeout_s`` (default 10).

Subject and body are Chinese, then English: each alert's two-line message (mine, sensor, place,
value, limit and the mine's local time) and its episode id, state and rule. ``Message-ID`` is
derived from the idempotency key, so a mail system can recognise a retried message. SMTP
answers 4xx and connection failures are retryable; 5xx (mailbox refused …) are not.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

from alerts.channels.base import Notification
from config.errors import DeliveryError
from config.model import Receiver

__all__ = ["EmailChannel", "render_email"]


def render_email(notification: Notification, sender: str, to: tuple[str, ...]) -> EmailMessage:
    alerts = notification.alerts
    first_zh, _, first_en = alerts[0].message.partition("\n")
    if len(alerts) == 1:
        subject = f"{first_zh} / {first_en}"
    else:
        subject = (f"{first_zh} 等{len(alerts)}条 / {first_en} and {len(alerts) - 1} more")
    if notification.reason == "escalation":
        subject = f"【升级 ESCALATED】{subject}"
    lines = []
    for a in alerts:
        lines += [a.message,
                  f"  编号 episode {a.id} · 状态 state {a.state} · 规则 rule {a.rule} · "
                  f"测点 sensor {a.mine}/{a.sensor} · 地点 place {a.place or a.location}", ""]
    lines.append(f"jinmei · {notification.reason} · {notification.key}")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Message-ID"] = f"<{notification.key}@jinmei>"
    message.set_content("\n".join(lines))
    return message


class EmailChannel:
    def __init__(self, receiver: Receiver, tls: ssl.SSLContext | None = None) -> None:
        self.name = receiver.name
        self.host = str(receiver.option("host"))
        self.port = int(receiver.option("port", 587))  # type: ignore[call-overload]
        self.starttls = bool(receiver.option("starttls", True))
        self.username = str(receiver.option("username", ""))
        self.password = receiver.secret
        self.sender = str(receiver.option("sender"))
        self.to: tuple[str, ...] = receiver.option("to", ())  # type: ignore[assignment]
        self.timeout_s = float(receiver.option("timeout_s", 10.0))  # type: ignore[arg-type]
        self.tls = tls or ssl.create_default_context()

    def send(self, notification: Notification) -> None:
        target = f"email {self.name}"
        message = render_email(notification, self.sender, self.to)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                if self.starttls:
                    smtp.starttls(context=self.tls)
                if self.username:
                    smtp.login(self.username, self.password)
                smtp.send_message(message)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(target, f"SMTP {exc.smtp_code} {exc.smtp_error!r}",
                                retryable=exc.smtp_code < 500) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(target, f"recipients refused: {exc.recipients}",
                                retryable=False) from exc
        except (smtplib.SMTPException, OSError) as exc:  # connection, TLS, timeouts
            raise DeliveryError(target, f"{self.host}:{self.port}: {exc}",
                                retryable=True) from exc
