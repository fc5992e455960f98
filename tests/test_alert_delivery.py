"""Channels and the durable outbox against real servers: webhook and SMS on a loopback HTTP
server, e-mail through aiosmtpd with STARTTLS and login; retries after the receiver was down;
a delivery process killed mid-way and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alerts.channels.base import Notification, build_channel
from alerts.channels.email import EmailChannel
from alerts.channels.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from alerts.db import StateDB
from alerts.outbox import DeliveryWorker, Outbox, backoff_s
from alerts.wire import Alert
from config.model import Receiver
from tests.servers import scripted_http_server, smtp_server, wait_until

pytestmark = pytest.mark.integration

ALERT = Alert(id="e1", mine="qipanjing", sensor="T1-1101", kind="ch4", rule="limit_power_off",
              severity="critical", state="firing", value=1.62, limit=1.5, started_at=1_000,
              ts=1_000, message="【断电】棋盘井煤矿 T1-1101 甲烷 1.62% ≥ 断电值 1.50%（2026-11-25 "
              "22:15:03）\n[POWER-OFF] Qipanjing T1-1101 methane 1.62 % ≥ power-off limit "
              "1.50 % (2026-11-25 22:15:03 CST)", condition="power_off", unit="%")


def note(key: str, receiver: str = "regulator") -> Notification:
    return Notification(key=key, receiver=receiver, reason="floor", mine="qipanjing",
                        area="1101", alerts=(ALERT,))


def test_webhook_is_signed_and_retried_until_the_receiver_is_back(tmp_path: Path) -> None:
    answers = iter([503, 503, 200])
    with scripted_http_server(lambda n, body: (next(answers), {}, b"")) as server:
        receiver = Receiver("regulator", "webhook", (("url", server.url + "/hook"),),
                            secret="s3cret")
        outbox = Outbox(StateDB(tmp_path / "alerts.db"))
        with outbox.db.transaction() as c:
            outbox.put(c, note("k1"), 0)
        worker = DeliveryWorker(outbox, {"regulator": build_channel(receiver)},
                                retry_base_s=0.05, poll_s=0.02)
        worker.start()
        try:
            assert wait_until(lambda: not outbox.owed(), 10)
        finally:
            worker.stop()
    bodies = [r.body for r in server.requests]
    assert len(bodies) == 3 and len(set(bodies)) == 1       # the same message each time
    payload = json.loads(bodies[0])
    assert payload["key"] == "k1" and payload["alerts"][0]["rule"] == "limit_power_off"
    assert [o for _, _, _, o, _ in outbox.attempts("k1")] == ["retry", "retry", "delivered"]
    headers = server.headers[0]
    stamp = int(headers[TIMESTAMP_HEADER])
    assert abs(stamp - time.time()) < 60
    assert headers[SIGNATURE_HEADER] == signature("s3cret", stamp, bodies[0])
    assert headers["Idempotency-Key"] == "k1"


def test_a_refusal_is_kept_and_retried_not_dropped(tmp_path: Path) -> None:
    with scripted_http_server(lambda n, body: (401, {}, b"")) as server:
        outbox = Outbox(StateDB(tmp_path / "alerts.db"))
        with outbox.db.transaction() as c:
            outbox.put(c, note("k1"), 0)
        receiver = Receiver("regulator", "webhook", (("url", server.url),))
        worker = DeliveryWorker(outbox, {"regulator": build_channel(receiver)})
        assert worker.deliver_due() == 0
    (row,) = outbox.owed()
    assert "HTTP 401" in row.last_error and row.attempts == 1


def test_sms_gateway_gets_the_template_filled_in() -> None:
    with scripted_http_server(lambda n, body: (200, {}, b"")) as server:
        template = '{"to": "$to", "msg": "$text", "id": "$key"}'
        receiver = Receiver("duty", "sms", (("url", server.url), ("to", ("13800000000",)),
                                            ("body", template)))
        build_channel(receiver).send(note("k9", "duty"))
    sms = json.loads(server.requests[0].body)
    assert sms == {"to": "13800000000", "msg": ALERT.message.split("\n")[0], "id": "k9-0"}


def test_email_over_starttls_with_login(tmp_path: Path) -> None:
    with smtp_server(tmp_path) as smtp:
        receiver = Receiver("officer", "email", (
            ("host", "127.0.0.1"), ("port", smtp.port), ("username", "jinmei"),
            ("sender", "jinmei@mine.example"), ("to", ("officer@mine.example",))),
            secret="secret")
        EmailChannel(receiver, tls=smtp.client_tls).send(note("k2", "officer"))
    (message,) = smtp.messages
    assert message["Subject"].startswith("【断电】棋盘井煤矿 T1-1101")
    assert "[POWER-OFF] Qipanjing" in message["Subject"]
    body = message.get_content()
    assert "1.62% ≥ 断电值 1.50%" in body and "2026-11-25 22:15:03 CST" in body
    assert message["Message-ID"] == "<k2@jinmei>"


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert [backoff_s(n, 1.0, 30.0, 1.0) for n in (1, 2, 3, 6, 9)] == [1, 2, 4, 30, 30]
    assert backoff_s(3, 1.0, 30.0, 0.5) == 2.0


DELIVER = """
import sys
from alerts.channels.base import build_channel
from alerts.db import StateDB
from alerts.outbox import DeliveryWorker, Outbox
from config.model import Receiver
outbox = Outbox(StateDB(sys.argv[1]))
worker = DeliveryWorker(outbox, {"regulator": build_channel(
    Receiver("regulator", "webhook", (("url", sys.argv[2]),)))})
while outbox.owed():
    worker.deliver_due()
"""


def test_restart_in_the_middle_of_delivery(tmp_path: Path) -> None:
    def slow(n: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.05)
        return 200, {}, b""

    db = tmp_path / "alerts.db"
    outbox = Outbox(StateDB(db))
    with outbox.db.transaction() as c:
        for i in range(40):
            outbox.put(c, note(f"k{i:02d}"), i)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with scripted_http_server(slow) as server:
        first = subprocess.Popen([sys.executable, "-c", DELIVER, str(db), server.url], env=env)
        assert wait_until(lambda: len(server.requests) >= 10, 20)
        first.send_signal(signal.SIGKILL)                   # killed in the middle
        first.wait()
        assert 10 <= len(server.requests) < 40
        second = subprocess.run([sys.executable, "-c", DELIVER, str(db), server.url],
                                env=env, timeout=60)
        assert second.returncode == 0
    keys = [json.loads(r.body)["key"] for r in server.requests]
    assert set(keys) == {f"k{i:02d}" for i in range(40)}     # everything delivered
    assert len(keys) - len(set(keys)) <= 1                   # at most the one in flight, again
    assert not outbox.owed()
