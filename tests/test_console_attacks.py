"""The dispatcher console tried as an attacker would, and as a dispatcher of the other mine:
plain HTTP (``http.client``) against a running service on a real Mosquitto.

Accounts: ``wang`` dispatches qipanjing, ``li`` dispatches dayan, ``zhao`` is a regulator of
both. Each mine has a methane power-off open, so each has an alert the other's dispatcher must
not reach.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from config.loader import CONFIG_DIR, load_deployment
from ingest.codec import encode_telemetry
from jinmei.console.accounts import hash_password
from jinmei.service import Service
from tests.servers import Mosquitto, wait_until
from tests.test_service import send

pytestmark = pytest.mark.integration

USERS = (("wang", "dispatcher", ("qipanjing",)), ("li", "dispatcher", ("dayan",)),
         ("zhao", "regulator", ()))
XSS = '"><img src=x onerror=alert(1)><script>alert(2)</script><a href="javascript:alert(3)">'


def password(name: str) -> str:
    return f"{name}-password-1"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    @property
    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


class Client:
    """One browser: its session cookie, the page's CSRF token."""

    def __init__(self, port: int) -> None:
        self.port, self.cookie, self.csrf = port, "", ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = self.cookie
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body, sent)
            reply = conn.getresponse()
            return Reply(reply.status, reply.msg, reply.read().decode())
        finally:
            conn.close()

    def get(self, path: str) -> Reply:
        reply = self.request("GET", path)
        found = re.search(r'name="csrf" value="([^"]+)"', reply.body)
        if found:
            self.csrf = found.group(1)
        for cookie in reply.cookies:
            if cookie.startswith("jinmei_session="):
                self.cookie = cookie.split(";", 1)[0]
        return reply

    def post(self, path: str, form: dict[str, str], csrf: bool = True) -> Reply:
        reply = self.request("POST", path, {**({"csrf": self.csrf} if csrf else {}), **form})
        for cookie in reply.cookies:
            if cookie.startswith("jinmei_session="):
                self.cookie = cookie.split(";", 1)[0]
        return reply

    def login(self, name: str, given: str | None = None) -> Reply:
        self.get("/console/login")
        reply = self.post("/console/login", {"user": name,
                                             "password": given or password(name)})
        if reply.status == 303:
            self.get("/console/")
        return reply


@dataclass
class Running:
    service: Service
    port: int
    episodes: dict[str, str]  # mine → its open methane power-off

    def client(self, name: str | None = None) -> Client:
        client = Client(self.port)
        if name is not None:
            assert client.login(name).status == 303
        return client


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("console-attacks")
    broker = Mosquitto(tmp)
    broker.start()
    users = "".join(
        f'[[console.users]]\nname = "{name}"\nrole = "{role}"\n'
        + (f'mines = {list(mines)!r}\n'.replace("'", '"') if mines else "")
        + f'password_hash = "{hash_password(password(name))}"\n' for name, role, mines in USERS)
    config = tmp / "jinmei.toml"
    config.write_text(
        f'mines = ["{CONFIG_DIR}/mines/dayan.toml", "{CONFIG_DIR}/mines/qipanjing.toml"]\n'
        f'limits = "{CONFIG_DIR}/limits.toml"\n'
        f'[broker]\nurl = "{broker.url}"\nclient_id = "jinmei-console-attacks"\n'
        f'[store]\nurl = "sqlite:///{tmp}/readings.db"\n[ingest]\nstate_dir = "{tmp}/state"\n'
        f'[alerts]\nresolve_hold_s = 0.0\n[http]\nlisten = "127.0.0.1:0"\n{users}',
        encoding="utf-8")
    service = Service(load_deployment(config))
    try:
        assert service.start(wait_subscribed_s=10)
        assert service.http is not None
        now = int(time.time() * 1000)
        send(broker, [("jinmei/qipanjing/telemetry/S01",
                       encode_telemetry(now, [("T1-1101", 1.62, "ok")])),
                      ("jinmei/dayan/telemetry/S01",
                       encode_telemetry(now, [("T1-1201", 1.62, "ok")]))])

        def power_offs() -> dict[str, str]:
            return {a.mine: a.id for a in service.record.open_episodes()
                    if a.rule == "limit_power_off"}

        assert wait_until(lambda: len(power_offs()) == 2, 15)
        yield Running(service, service.http.port, power_offs())
    finally:
        service.stop()
        broker.stop()


def _silences(running: Running, mine: str) -> list[tuple[str, str, str]]:
    from alerts.db import StateDB
    from alerts.silences import SilenceBook

    db = StateDB(running.service.record.path)
    try:
        return [(s.matchers.mine, s.matchers.rule, s.comment) for s in SilenceBook(db).all()
                if s.matchers.mine == mine]
    finally:
        db.close()


@pytest.mark.parametrize("form", [
    {"kind": "ch4", "rule": "limit_power_off"},
    {"sensor": "T1-1101", "rule": "limit_power_off"},
    {"rule": "limit_power_off"},
])
def test_a_power_off_silence_is_refused_with_the_reason_the_page_states(
        running: Running, form: dict[str, str]) -> None:
    """The page says a methane power-off is never silenced (the notifier's safety floor
    sends every power-off whatever the silences): a silence for power-offs is refused with
    that reason instead of being "created" while it mutes nothing the dispatcher meant."""
    wang = running.client("wang")
    wang.get("/console/mine/qipanjing")
    before = _silences(running, "qipanjing")
    reply = wang.post("/console/mine/qipanjing/silence",
                      {**form, "duration": "1h", "reason": "检修 maintenance"})
    assert reply.status == 400, reply.headers.get("Location")
    assert "甲烷断电永不屏蔽" in reply.body and "never silenced" in reply.body
    assert _silences(running, "qipanjing") == before


def test_cli_refuses_a_power_off_silence_too(running: Running,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from jinmei.cli import main

    config = running.service.deployment.source_file
    assert main(["alerts", "silence", "-c", config, "--mine", "qipanjing", "--rule",
                 "limit_power_off", "--duration", "1h", "--by", "wang",
                 "--reason", "x"]) == 2
    assert "never silenced" in capsys.readouterr().err


def test_the_flash_line_shows_only_what_the_console_said(running: Running) -> None:
    """The message after a form (``?done=``) is the console's own: a link crafted elsewhere
    with a ``done`` of its own must not put its words on the real mine page (a dispatcher
    would take "传感器已标校，断电可忽略" there for the console's)."""
    wang = running.client("wang")
    page = wang.get("/console/mine/qipanjing?done=" + urllib.parse.quote(
        "断电已解除，可恢复生产 power-off cleared"))
    assert page.status == 200
    assert "断电已解除" not in page.body and 'id="flash"' not in page.body
    # the console's own message, after a form, is still shown
    wang.get("/console/mine/qipanjing")
    reply = wang.post("/console/mine/qipanjing/ack", {"episode": running.episodes[
        "qipanjing"], "note": "已通知撤人"})
    assert reply.status == 303
    page = wang.get(reply.headers["Location"])
    assert 'id="flash"' in page.body and "acknowledged by wang" in page.body
    # … to the session it was made for only
    other = running.client("wang")
    assert 'id="flash"' not in other.get(reply.headers["Location"]).body


def test_logout_ends_a_relayed_event_stream_at_once(tmp_path: Path) -> None:
    """``jinmei run`` (the workers' parent relays each mine's pages): after a logout the
    mine's event stream ends within a moment — before, it ran on until the worker next said
    something (a keepalive 15 s later, or the next readings, which it passed on)."""
    import subprocess
    import sys

    from tests.servers import free_port

    broker = Mosquitto(tmp_path)
    broker.start()
    port = free_port()
    users = (f'[[console.users]]\nname = "wang"\nrole = "dispatcher"\nmines = ["qipanjing"]\n'
             f'password_hash = "{hash_password(password("wang"))}"\n')
    config = tmp_path / "jinmei.toml"
    config.write_text(
        f'mines = ["{CONFIG_DIR}/mines/dayan.toml", "{CONFIG_DIR}/mines/qipanjing.toml"]\n'
        f'limits = "{CONFIG_DIR}/limits.toml"\n'
        f'[broker]\nurl = "{broker.url}"\nclient_id = "jinmei-console-relay"\n'
        f'[store]\nurl = "sqlite:///{tmp_path}/readings.db"\n'
        f'[ingest]\nstate_dir = "{tmp_path}/state"\nworkers = 2\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n{users}', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "jinmei.cli", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wang = Client(port)

        def up() -> bool:
            try:
                return wang.login("wang").status == 303
            except OSError:
                return False

        assert wait_until(up, 60)
        # the worker answers once it is up (503 before)
        assert wait_until(lambda: wang.get("/console/mine/qipanjing").status == 200, 60)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/console/mine/qipanjing/events", headers={"Cookie": wang.cookie})
        reply = conn.getresponse()
        assert reply.status == 200
        reply.read1(65_536)  # the first turn: every point
        assert wang.post("/console/logout", {}).status == 303
        started, after = time.monotonic(), b""
        with contextlib.suppress(http.client.HTTPException, OSError):  # a timeout too
            while chunk := reply.read1(65_536):
                after += chunk
        assert time.monotonic() - started < 5, f"the stream ran on after the logout: {after!r}"
        conn.close()
    finally:
        proc.terminate()
        proc.wait(30)
        broker.stop()
