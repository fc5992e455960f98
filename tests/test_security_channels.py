"""Signed webhooks against a receiver built only from README "Security", FTPS uploads to a real
TLS FTP server, and the one redaction helper.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts.channels.base import Notification
from alerts.channels.webhook import WebhookChannel
from alerts.wire import Alert
from config.errors import DeliveryError
from config.model import Receiver
from config.redact import MASK, redact_headers, redact_url
from networking.upload import open_target
from tests.servers import free_port, ftp_server, make_pki

ROOT = Path(__file__).resolve().parent.parent
SECRET = "webhook-secret-Hq3"
NOTE = Notification(key="k1", receiver="regulator", reason="floor", mine="qipanjing", area="1101",
                    alerts=(Alert(id="e1", mine="qipanjing", sensor="T1-1101", kind="ch4",
                                  rule="limit_power_off", severity="critical", state="firing",
                                  value=1.62, limit=1.5, started_at=1_000, ts=1_000,
                                  message="断电 / power-off"),))


def readme_verify() -> Callable[..., bool]:
    """The `verify` function exactly as README "Security" prints it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
                 if "def verify(" in b)
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


@dataclass
class Receiver_:
    """A webhook receiver on loopback that checks requests with README's `verify`."""

    port: int
    clock_offset_s: float = 0.0
    answers: list[int] = field(default_factory=list)
    captured: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextmanager
def receiver() -> Iterator[Receiver_]:
    import time

    verify = readme_verify()
    state = Receiver_(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            ok = verify(SECRET.encode(), self.headers, body,
                        now=time.time() + state.clock_offset_s)
            state.captured.append((dict(self.headers.items()), body))
            state.answers.append(200 if ok else 401)
            self.send_response(state.answers[-1])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    httpd = ThreadingHTTPServer(("127.0.0.1", state.port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def resend(url: str, headers: dict[str, str], body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the socket
            return exc.code


@pytest.mark.integration
def test_a_receiver_following_the_readme_refuses_a_replay_after_the_window() -> None:
    with receiver() as hook:
        channel = WebhookChannel(Receiver("regulator", "webhook", (("url", hook.url),), SECRET))
        channel.send(NOTE)  # accepted, or send raises
        (headers, body), = hook.captured
        wanted = {k: v for k, v in headers.items() if k.startswith(("X-Jinmei", "Content-Type"))}
        hook.clock_offset_s = 301.0  # the attacker replays the captured request 5 min later
        assert resend(hook.url, wanted, body) == 401
        hook.clock_offset_s = 0.0
        assert resend(hook.url, wanted, body.replace(b"1.62", b"0.62")) == 401  # tampered
        assert resend(hook.url, {**wanted, "X-Jinmei-Timestamp": str(int(
            wanted["X-Jinmei-Timestamp"]) + 60)}, body) == 401  # a fresher stamp, same MAC
        forged = WebhookChannel(Receiver("regulator", "webhook", (("url", hook.url),), "guess"))
        with pytest.raises(DeliveryError, match="HTTP 401") as refused:
            forged.send(NOTE)
        assert not refused.value.retryable
    assert hook.answers == [200, 401, 401, 401, 401]


@pytest.mark.integration
def test_regulator_files_go_up_over_ftps(tmp_path: Path) -> None:
    pki, rogue = make_pki(tmp_path / "pki"), make_pki(tmp_path / "rogue")
    remote = tmp_path / "remote"
    remote.mkdir()
    report = tmp_path / "X_CDSS_20261125221503.txt"
    report.write_bytes(b"001A02;0.90~||")
    with ftp_server(remote, tls=pki) as port:
        url = f"ftps://jinmei@127.0.0.1:{port}/"
        assert open_target(url, "secret", ca_file=str(pki.ca)).upload(report) == "uploaded"
        with pytest.raises(DeliveryError, match="certificate not trusted"):
            open_target(url, "secret", ca_file=str(rogue.ca)).upload(report)
        with pytest.raises(DeliveryError):  # the server requires TLS: plain FTP gets nowhere
            open_target(f"ftp://jinmei@127.0.0.1:{port}/", "secret").upload(report)
    assert (remote / report.name).read_bytes() == report.read_bytes()


def test_plain_ftp_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="networking.upload"):
        target = open_target("ftp://jinmei@reg.example/in", "pw")
    assert "unencrypted" in caplog.text and target.name == "ftp://jinmei@reg.example/in"


@pytest.mark.parametrize(("url", "shown"), [
    ("mqtt://gw:s3cret@broker:8883", "mqtt://gw:***@broker:8883"),
    ("mqtts://gw-dayan@broker:8883", "mqtts://gw-dayan@broker:8883"),
    ("influxdb://db:8086?org=o&bucket=b&token=t0k", "influxdb://db:8086?org=o&bucket=b&token=***"),
    ("https://hook.example/x?sig=abc&mine=dayan", "https://hook.example/x?sig=***&mine=dayan"),
    ("sqlite:///var/jinmei/readings.db", "sqlite:///var/jinmei/readings.db"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_redaction_examples_hold() -> None:
    import doctest

    import config.redact

    assert doctest.testmod(config.redact).failed == 0


def test_redact_headers() -> None:
    headers = {"Authorization": "Bearer x", "X-Jinmei-Signature": "sha256=ab",
               "Content-Type": "application/json", "X-Api-Key": "k"}
    assert redact_headers(headers) == {"Authorization": MASK, "X-Jinmei-Signature": MASK,
                                       "Content-Type": "application/json", "X-Api-Key": MASK}


_SECRET = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=6,
                  max_size=20)


@given(user=st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), password=_SECRET,
       host=st.from_regex(r"[a-z]{1,10}(\.[a-z]{2,5})?", fullmatch=True),
       token=_SECRET)
def test_no_password_or_token_survives_redaction(user: str, password: str, host: str,
                                                 token: str) -> None:
    url = f"influxdbs://{user}:{password}@{host}:8086/x?bucket=b&token={token}"
    shown = redact_url(url)
    assert password not in shown.replace(user, "").replace(host, "").replace("bucket", "")
    assert token not in shown.split("?", 1)[1].replace("bucket=b", "")
    assert shown.startswith(f"influxdbs://{user}:{MASK}@{host}:8086/x?")
