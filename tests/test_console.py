"""The dispatcher console: accounts and limits (fast), and the whole console in real Chromium.

The browser tests run ``jinmei``'s service on a real Mosquitto with a deployment file that has
console accounts, drive Debian's ``chromium`` through ``chromedriver`` with Selenium (pointed
at /usr/bin/chromedriver explicitly: Selenium Manager never downloads anything), and check
what a dispatcher and a regulator can and cannot do — at the test webhook (escalation), in the
YCBJ closing record (networking) and in ``jinmei alerts history``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config.errors import ConfigError
from config.loader import CONFIG_DIR, load_deployment
from config.model import ConsoleUser
from config.readings import ReadingBatch, Status
from ingest.codec import encode_telemetry
from jinmei.cli import main
from jinmei.console import mount
from jinmei.console.accounts import (
    FAIL_WINDOW_S,
    USER_FAILS,
    LoginLimiter,
    Sessions,
    authenticate,
    hash_password,
    verify_password,
)
from jinmei.console.front import Front, local_target
from jinmei.console.live import LiveTable
from jinmei.http import OpsServer
from jinmei.service import Service
from tests.servers import Mosquitto, scripted_http_server, wait_until
from tests.test_service import send

T = TypeVar("T")
DOCS = Path(__file__).resolve().parent.parent / "docs"
# The README's screenshots are written again only on request (they change with every run):
#   JINMEI_UPDATE_SCREENSHOTS=1 .venv/bin/pytest tests/test_console.py
UPDATE_SCREENSHOTS = os.environ.get("JINMEI_UPDATE_SCREENSHOTS") == "1"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PASSWORDS = {"wang": "wang-password-1", "zhao": "zhao-password-1"}
QIPANJING, DAYAN = "jinmei/qipanjing/telemetry/S01", "jinmei/dayan/telemetry/S01"
ESCALATE_AFTER_S = 12.0  # long enough to log in and ack in a browser on a busy machine


# ── accounts, fast ───────────────────────────────────────────────────────────────────────────

def test_password_hash_carries_its_parameters_and_only_its_password_matches() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$n=16384,r=8,p=1$") and "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert hash_password("correct horse") != stored  # a new salt each time
    assert not verify_password("x", "scrypt$n=16384$broken")  # malformed: never a match


def test_failed_logins_are_limited_per_account_and_per_address() -> None:
    now = [1000.0]
    limiter = LoginLimiter(clock=lambda: now[0])
    for _ in range(USER_FAILS):
        assert limiter.blocked_for("wang", "10.0.0.1") == 0
        limiter.failed("wang", "10.0.0.1")
    assert limiter.blocked_for("wang", "10.0.0.1") == pytest.approx(FAIL_WINDOW_S)
    # the dispatcher at the control room's own machine is not locked out from elsewhere
    assert limiter.blocked_for("wang", "10.0.0.2") == 0
    assert limiter.blocked_for("li", "10.0.0.1") == 0  # another account from there: not yet
    now[0] += FAIL_WINDOW_S
    assert limiter.blocked_for("wang", "10.0.0.1") == 0  # the failures left the window
    for i in range(20):  # a guesser trying many names from one address
        limiter.failed(f"user{i}", "10.0.0.9")
    assert limiter.blocked_for("newname", "10.0.0.9") > 0


def test_open_login_forms_are_bounded_and_a_login_outlives_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from jinmei.console import accounts

    monkeypatch.setattr(accounts, "MAX_ANONYMOUS", 3)
    sessions = Sessions(max_s=60)
    user = ConsoleUser("wang", "dispatcher", hash_password("pw-wang-1"), ("dayan",))
    logged_in = sessions.new(user)
    forms = [sessions.new(None) for _ in range(5)]
    assert [sessions.get(f.token) is not None for f in forms] == [False, False, True, True, True]
    assert sessions.get(logged_in.token) is logged_in


def test_authenticate_checks_the_password_and_unknown_names() -> None:
    users = {"wang": ConsoleUser("wang", "dispatcher", hash_password("pw-wang-1"), ("dayan",))}
    assert authenticate(users, "wang", "pw-wang-1") == users["wang"]
    assert authenticate(users, "wang", "pw-wang-2") is None
    assert authenticate(users, "nobody", "pw-wang-1") is None


def test_live_table_keeps_the_newest_reading_and_the_worst_state() -> None:
    registry = load_deployment(None).registry
    live = LiveTable(registry)
    t1, t0 = registry.index["qipanjing/T1-1101"], registry.index["qipanjing/T0-1101"]
    co = registry.index["qipanjing/CO-1101"]
    period = int(registry.sensors[t1].period_s * 1000)
    bits = np.array([Status.ALARM | Status.POWER_OFF, 0, Status.CALIBRATION, Status.ALARM],
                    np.uint16)
    # T1 at 2000 (power-off) then an older reading at 1000 arriving late; T0 calibrating; CO
    live.observe(ReadingBatch(np.array([t1, t1, t0, co], np.int32),
                              np.array([2000, 1000, 2000, 2000], np.int64),
                              np.array([1.62, 0.3, 2.0, 30.0]), bits), registry)
    indices = np.array([t1, t0, co], np.int64)
    points = live.points(indices, now_ms=2500)
    assert [(p.value, p.state) for p in points] == [
        (1.62, "power_off"), (2.0, "calibrating"), (30.0, "alarm")]
    seq = live.seq
    changed, states = live.changes(indices, seq, live.states(indices, 2500), now_ms=2500)
    assert changed == []  # nothing new since seq
    later = 2000 + 3 * period + 1  # three sampling periods without a reading: no data
    changed, _ = live.changes(indices, seq, states, now_ms=later)
    assert {p.index for p in changed} >= {t1} and all(p.state == "no_data" for p in changed)
    assert live.points(np.array([registry.index["dayan/T1-1201"]]), 0)[0].state == "no_data"
    assert list(live.indices("qipanjing")) == [i for i, s in enumerate(registry.sensors)
                                               if s.mine == "qipanjing"]


@pytest.mark.parametrize(("to", "goes"), [
    # the language toggle's Referer: back to the page, on this site
    ("http://127.0.0.1:8080/console/mine/dayan", "/console/mine/dayan"),
    ("https://jinmei.example/console/mine/dayan/history?rule=trend",
     "/console/mine/dayan/history?rule=trend"),
    ("http://127.0.0.1:8080/console", "/console"),
    ("/console/mine/dayan?done=%E5%B7%B2", "/console/mine/dayan?done=%E5%B7%B2"),  # a form's
    # another host to a browser (scheme-relative, backslash read as slash): never
    ("//evil.example/console/", "/console/"),
    ("http://127.0.0.1:8080//evil.example/console/", "/console/"),
    ("/\\evil.example/console/", "/console/"),
    ("http://127.0.0.1:8080/\\evil.example", "/console/"),
    ("/console/\\..\\..\\evil", "/console/"),
    # a scheme of its own, or a page that is not the console's: the overview
    ("javascript:alert(1)", "/console/"),
    ("https://evil.example/", "/console/"),
    ("http:evil.example", "/console/"),
    ("evil.example/console/", "/console/"),
    ("/healthz", "/console/"),
    ("", "/console/"),
    ("/console/\r\nSet-Cookie: x=1", "/console/"),  # a header of its own: never
])
def test_redirects_stay_on_the_console(to: str, goes: str) -> None:
    assert local_target(to) == goes


def test_language_toggle_never_sends_the_browser_to_another_site() -> None:
    """``/console/lang`` goes back to the Referer's console page, and to ``/console/`` for a
    Referer naming another host the way a browser would read it (``//``, ``/\\``)."""
    deployment = load_deployment(None)
    server = OpsServer("127.0.0.1:0", {})
    mount(server, Front(lambda: deployment))
    server.start()
    try:
        def toggle(referer: str, query: str = "?to=en") -> tuple[int, str, str]:
            request = urllib.request.Request(f"http://127.0.0.1:{server.port}/console/lang"
                                             f"{query}", headers={"Referer": referer})
            opener = urllib.request.build_opener(_NoRedirect())
            try:
                opener.open(request, timeout=10)
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers["Location"], exc.headers["Set-Cookie"]
            raise AssertionError("no redirect")

        base = f"http://127.0.0.1:{server.port}"
        status, where, cookie = toggle(f"{base}/console/mine/dayan")
        assert (status, where) == (303, "/console/mine/dayan")
        assert cookie.startswith("jinmei_lang=en;")
        for referer in (f"{base}//evil.example/", f"{base}/\\evil.example/",
                        "//evil.example/console/", "https://evil.example/"):
            assert toggle(referer, "?to=zh")[:2] == (303, "/console/"), referer
        # a next= of the toggle's own is no way out either (the Referer decides)
        assert toggle(f"{base}/console/", "?to=en&next=//evil.example")[:2] == (303, "/console/")
    finally:
        server.stop()


def _deployment_text(tmp_path: Path, users: str, extra: str = "") -> Path:
    path = tmp_path / "jinmei.toml"
    path.write_text(f'mines = ["{CONFIG_DIR}/mines/dayan.toml", "{CONFIG_DIR}/mines/'
                    f'qipanjing.toml"]\nlimits = "{CONFIG_DIR}/limits.toml"\n{extra}\n{users}',
                    encoding="utf-8")
    return path


@pytest.mark.parametrize(("users", "where", "says"), [
    ('[[console.users]]\nname = "wang"\nrole = "dispatcher"\npassword_hash = "{h}"\n',
     "mines", "a dispatcher needs the mines"),
    ('[[console.users]]\nname = "wang"\nrole = "dispatcher"\nmines = ["nowhere"]\n'
     'password_hash = "{h}"\n', "mines", "no mine 'nowhere'"),
    ('[[console.users]]\nname = "wang"\nrole = "boss"\npassword_hash = "{h}"\n', "role",
     "'boss' is not role"),
    ('[[console.users]]\nname = "wang"\nrole = "admin"\npassword_hash = "secret"\n',
     "password_hash", "scrypt$n="),
    ('[[console.users]]\nname = "wang"\nrole = "admin"\npassword_hash = "{h}"\n'
     '[[console.users]]\nname = "wang"\nrole = "regulator"\npassword_hash = "{h}"\n',
     "name", "defined twice"),
])
def test_console_accounts_are_checked_at_load(tmp_path: Path, users: str, where: str,
                                              says: str) -> None:
    path = _deployment_text(tmp_path, users.replace("{h}", hash_password("pw-123456")))
    with pytest.raises(ConfigError) as err:
        load_deployment(path)
    assert err.value.location.endswith(where) or where in str(err.value)
    assert says in str(err.value)


def test_users_add_prints_an_entry_the_loader_takes(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    config = _deployment_text(tmp_path, "")
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret-pass\n"))
    assert main(["users", "add", "wang", "--role", "dispatcher", "--mines", "qipanjing",
                 "-c", str(config)]) == 0
    entry = capsys.readouterr().out
    assert "s3cret-pass" not in entry
    with config.open("a", encoding="utf-8") as f:
        f.write(entry)
    (user,) = load_deployment(config).console.users
    assert (user.name, user.role, user.mines) == ("wang", "dispatcher", ("qipanjing",))
    assert verify_password("s3cret-pass", user.password_hash)
    monkeypatch.setattr(sys, "stdin", io.StringIO("another-pass\n"))
    assert main(["users", "add", "wang", "--role", "admin", "-c", str(config)]) == 2
    assert "already in" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["users", "add", "li", "--role", "regulator", "-c", str(config)]) == 2


# ── the console in Chromium, on a running service ────────────────────────────────────────────

needs_browser = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian chromium and chromium-driver are not installed (scripts/test.sh installs "
           "them)")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options,
                              service=DriverService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def _write_deployment(tmp_path: Path, broker: Mosquitto, hook: str) -> Path:
    users = (f'[[console.users]]\nname = "wang"\nrole = "dispatcher"\nmines = ["qipanjing"]\n'
             f'password_hash = "{hash_password(PASSWORDS["wang"])}"\n'
             f'[[console.users]]\nname = "zhao"\nrole = "regulator"\n'
             f'password_hash = "{hash_password(PASSWORDS["zhao"])}"\n')
    extra = (f'[broker]\nurl = "{broker.url}"\nclient_id = "jinmei-console-test"\n'
             f'[store]\nurl = "sqlite:///{tmp_path}/readings.db"\n'
             f'[ingest]\nstate_dir = "{tmp_path}/state"\n'
             f'[alerts]\nresolve_hold_s = 0.0\ngroup_wait_s = 0.0\n'
             f'[[alerts.receivers]]\nname = "desk"\nchannel = "webhook"\nurl = "{hook}/desk"\n'
             'unsigned = true\n'  # the test receiver checks no signature
             f'[[alerts.receivers]]\nname = "regulator"\nchannel = "webhook"\n'
             f'url = "{hook}/regulator"\nunsigned = true\n'
             f'[[alerts.routes]]\nseverities = ["critical"]\nreceivers = ["desk"]\n'
             f'escalate_after_s = {ESCALATE_AFTER_S}\nescalate_to = ["regulator"]\n'
             f'[networking]\nenabled = true\n'
             f'[http]\nlisten = "127.0.0.1:0"\n')
    return _deployment_text(tmp_path, users, extra)


def _normal_readings(service: Service, ts: int) -> list[tuple[str, bytes]]:
    """A reading well inside the limits for every measuring point (switches left unheard),
    one message per substation: the pages show live values, not only "no data"."""
    by_topic: dict[str, list[tuple[str, float, str]]] = {}
    for s in service.deployment.registry.sensors:
        if s.is_switch:
            continue
        lim = s.limits
        value = (lim.alarm_low + 1.0 if lim.alarm_low is not None
                 else 0.3 * lim.alarm_high if lim.alarm_high is not None else s.range_low)
        by_topic.setdefault(f"jinmei/{s.mine}/telemetry/{s.substation}", []).append(
            (s.id, round(value, 2), "ok"))
    return [(topic, encode_telemetry(ts, readings)) for topic, readings in by_topic.items()]


def _login(driver: object, base: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    d = driver  # type: ignore[assignment]
    d.delete_all_cookies()  # type: ignore[attr-defined]
    d.get(f"{base}/console/login")  # type: ignore[attr-defined]
    d.find_element(By.ID, "user").send_keys(user)  # type: ignore[attr-defined]
    d.find_element(By.ID, "password").send_keys(password)  # type: ignore[attr-defined]
    d.find_element(By.ID, "login").click()  # type: ignore[attr-defined]


def _state_of(driver: object, sensor: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        row = driver.find_element(By.ID, f"p-{sensor}")  # type: ignore[attr-defined]
        return str(row.find_element(By.CSS_SELECTOR, ".state").get_attribute("data-state"))
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _screenshot(driver: Any, name: str, tmp_path: Path) -> None:
    """A PNG of the page: into docs/ with JINMEI_UPDATE_SCREENSHOTS=1, else beside the test."""
    path = (DOCS if UPDATE_SCREENSHOTS else tmp_path) / name
    assert driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def _wait(driver: Any, timeout_s: float) -> Any:
    """A WebDriverWait that also rides out a page being replaced while a condition reads it
    (an element found on the old page goes stale when the form's redirect lands)."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException))


def _in_row(driver: Any, selector: str, act: Callable[[Any], T]) -> T:
    """``act`` on the row ``selector`` picks, found again should the list be refetched
    between two steps (the page does that when an alert changes)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + 10
    while True:
        try:
            return act(driver.find_element(By.CSS_SELECTOR, selector))
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise


def _fill(row: Any, button: str, **fields: str) -> None:
    from selenium.webdriver.common.by import By

    for name, text in fields.items():
        row.find_element(By.NAME, name).send_keys(text)
    row.find_element(By.CSS_SELECTOR, f"button.{button}").click()


class Session:
    """A plain HTTP client with its own cookie jar (the forged requests)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())

    def request(self, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as reply:
                return int(reply.status), reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self, user: str, password: str) -> int:
        _, page = self.request("/console/login")
        csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        return self.request("/console/login", {"csrf": csrf, "user": user,
                                                "password": password})[0]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def _ycbj_records(state: Path) -> list[list[str]]:
    folder = state / "networking"
    texts = [p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*_YCBJ_*"))]
    return [r.split(";") for text in texts for r in text.removesuffix("~||").split("~")[1:]]


@pytest.mark.integration
@needs_browser
def test_dispatcher_sees_a_power_off_live_acks_it_and_records_cause_and_action(
        mosquitto: Mosquitto, tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    with scripted_http_server(lambda n, body: (200, {}, b"ok")) as hook:
        config = _write_deployment(tmp_path, mosquitto, hook.url)
        service = Service(load_deployment(config))
        assert service.start(wait_subscribed_s=10)
        assert service.http is not None
        base = f"http://127.0.0.1:{service.http.port}"
        try:
            # a wrong password is refused, the right one lets in
            _login(d, base, "wang", "not-the-password")
            # the click submits the form; the refusal page arrives a moment later
            _wait(d, 10).until(lambda d: d.find_elements(By.ID, "login-error"))
            error = d.find_element(By.ID, "login-error").text  # type: ignore[attr-defined]
            assert "Wrong user name or password" in error
            _login(d, base, "wang", PASSWORDS["wang"])
            _wait(d, 10).until(lambda d: "/console/" in d.current_url
                                       and d.find_elements(By.ID, "mine-qipanjing"))
            assert not d.find_elements(By.ID, "mine-dayan")  # type: ignore[attr-defined]
            d.get(f"{base}/console/mine/qipanjing")  # type: ignore[attr-defined]
            assert wait_until(lambda: _state_of(d, "T1-1101") == "no_data", 10)
            send(mosquitto, _normal_readings(service, int(time.time() * 1000) - 2000))
            assert wait_until(lambda: _state_of(d, "T1-1101") == "ok", 5)  # live: no reload

            # a methane power-off at qipanjing (wang's) and one at dayan (nobody acks it)
            # (from a connected client: `send` spends a second on connecting and closing)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="console-test-mine")
            client.connect("127.0.0.1", mosquitto.port)
            client.loop_start()
            try:
                now = int(time.time() * 1000)
                published = time.monotonic()
                for topic, sensor in ((QIPANJING, "T1-1101"), (DAYAN, "T1-1201")):
                    client.publish(topic, encode_telemetry(now, [(sensor, 1.62, "ok")]),
                                   qos=1).wait_for_publish(5)
                assert wait_until(lambda: _state_of(d, "T1-1101") == "power_off", 2.0,
                                  interval_s=0.02), "the power-off did not show within 2 s"
                seen_s = time.monotonic() - published
            finally:
                client.loop_stop()
                client.disconnect()
            _wait(d, 5).until(lambda d: d.find_elements(
                By.CSS_SELECTOR, 'tr.alert[data-rule="limit_power_off"]'))
            _screenshot(d, "console-mine.png", tmp_path)

            # acknowledge it with a note
            power_off = 'tr.alert[data-rule="limit_power_off"]'
            episode = _in_row(d, power_off, lambda row: row.get_attribute("data-episode"))
            _in_row(d, power_off, lambda row: _fill(row, "ack", note="已通知撤人 evacuated"))
            _wait(d, 10).until(lambda d: d.find_elements(By.ID, "flash"))
            assert "wang" in _in_row(d, power_off, lambda row: row.find_element(
                By.CSS_SELECTOR, ".acked").text)

            # cause and action
            _in_row(d, power_off, lambda row: _fill(
                row, "save-cause", cause="回风流瓦斯涌出 gas outburst",
                action="停电撤人，加强通风 power cut, vented"))
            _wait(d, 10).until(lambda d: "saved" in d.find_element(By.ID, "flash").text)

            # an alert changing while the dispatcher types: the text stays, a notice says so
            time.sleep(1.5)  # the reloaded page's event stream is open
            alarm = 'tr.alert[data-rule="limit_alarm"]'
            note = _in_row(d, alarm, lambda row: row.find_element(By.NAME, "note"))
            note.send_keys("正在核实 checking")
            send(mosquitto, [(QIPANJING, encode_telemetry(int(time.time() * 1000),
                                                          [("T2-1101", 1.2, "ok")]))])
            notice = d.find_element(By.ID, "alerts-changed")  # type: ignore[attr-defined]
            _wait(d, 10).until(lambda d: notice.is_displayed())
            assert note.get_attribute("value") == "正在核实 checking"  # not replaced
            assert not d.find_elements(  # type: ignore[attr-defined]
                By.CSS_SELECTOR, 'tr.alert[data-sensor="T2-1101"]')
            notice.click()
            _wait(d, 10).until(lambda d: d.find_elements(
                By.CSS_SELECTOR, 'tr.alert[data-sensor="T2-1101"]'))
            assert not notice.is_displayed()

            d.get(f"{base}/console/")  # type: ignore[attr-defined]
            _wait(d, 5).until(lambda d: d.find_elements(By.ID, "mine-qipanjing"))
            critical = d.find_element(  # type: ignore[attr-defined]
                By.CSS_SELECTOR, '#mine-qipanjing [data-severity="critical"]').text
            assert int(critical) >= 1

            # escalation: the unacknowledged dayan power-off goes to the regulator, the
            # acknowledged qipanjing one does not
            def escalations() -> list[dict]:
                found = []
                for r in list(hook.requests):
                    body = json.loads(r.body)
                    if body.get("reason") == "escalation":
                        found.append({"path": r.path, "mine": body["alerts"][0]["mine"],
                                      "id": body["alerts"][0]["id"]})
                return found
            assert wait_until(lambda: any(e["mine"] == "dayan" and e["path"] == "/regulator"
                                          for e in escalations()), ESCALATE_AFTER_S + 20)
            time.sleep(3)  # the same tick would have escalated the other one too
            assert not [e for e in escalations() if e["id"] == episode]

            # the point back to normal: the closing YCBJ record carries cause and action
            send(mosquitto, [(QIPANJING, encode_telemetry(int(time.time() * 1000),
                                                          [("T1-1101", 0.40, "ok")]))])
            state = tmp_path / "state"

            def closing() -> list[str] | None:
                for r in _ycbj_records(state):
                    if r[0] == "001A02" and r[4] == "002" and r[6]:
                        return r
                return None
            record = wait_until(closing, 20)
            assert record is not None, "no closing YCBJ record of the power-off"
            assert record[12:14] == ["回风流瓦斯涌出 gas outburst",
                                     "停电撤人，加强通风 power cut, vented"]
            assert record[15] == "wang" and record[14]  # 录入人, 录入时间
        finally:
            service.stop()
    print(f"power-off on the mine page {seen_s:.2f} s after the publish")  # for the record
    assert seen_s < 2.0
    history = subprocess.run([sys.executable, "-m", "jinmei.cli", "alerts", "history",
                              "--format", "json", "-c", str(config)],
                             capture_output=True, text=True, timeout=60, check=True)
    rows = [r for r in json.loads(history.stdout) if r["id"] == episode]
    assert rows and all(r["cause"] == "回风流瓦斯涌出 gas outburst" and r["entered_by"] == "wang"
                        and r["acknowledged_by"] == "wang"
                        and r["acknowledged_note"] == "已通知撤人 evacuated" for r in rows)
    assert rows[0]["entered_at"].endswith("+08:00")


@pytest.mark.integration
@needs_browser
def test_regulator_reads_but_cannot_act_and_forged_or_tokenless_posts_are_refused(
        mosquitto: Mosquitto, tmp_path: Path, browser: object) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    with scripted_http_server(lambda n, body: (200, {}, b"ok")) as hook:
        service = Service(load_deployment(_write_deployment(tmp_path, mosquitto, hook.url)))
        assert service.start(wait_subscribed_s=10)
        assert service.http is not None
        base = f"http://127.0.0.1:{service.http.port}"
        try:
            now = int(time.time() * 1000)
            send(mosquitto, _normal_readings(service, now - 2000))
            send(mosquitto, [(QIPANJING, encode_telemetry(now, [("T1-1101", 1.62, "ok")]))])
            assert wait_until(lambda: any(a.rule == "limit_power_off"
                                          for a in service.record.open_episodes()), 10)
            episode = next(a.id for a in service.record.open_episodes()
                           if a.rule == "limit_power_off")

            # the regulator sees the mine and the alert, with no button to ack
            _login(d, base, "zhao", PASSWORDS["zhao"])
            _wait(d, 10).until(lambda d: d.find_elements(By.ID, "mine-qipanjing"))
            assert d.find_elements(By.ID, "mine-dayan")  # type: ignore[attr-defined]
            _screenshot(d, "console-overview.png", tmp_path)
            d.get(f"{base}/console/mine/qipanjing")  # type: ignore[attr-defined]
            _wait(d, 10).until(lambda d: d.find_elements(
                By.CSS_SELECTOR, f'tr.alert[data-episode="{episode}"]'))
            assert not d.find_elements(By.CSS_SELECTOR, "button.ack")  # type: ignore
            assert not d.find_elements(By.CSS_SELECTOR, "form.cause-form")  # type: ignore
            assert "只读" in d.find_element(By.TAG_NAME, "main").text  # type: ignore
            d.find_element(By.ID, "lang").click()  # type: ignore[attr-defined]
            _wait(d, 5).until(lambda d: "Open alerts" in d.find_element(
                By.TAG_NAME, "main").text)
            assert "read-only (regulator)" in d.find_element(By.TAG_NAME, "main").text  # type: ignore
            assert d.current_url.endswith("/console/mine/qipanjing")  # type: ignore

            # a forged POST with the regulator's own valid session and token: 403
            zhao = Session(base)
            assert zhao.login("zhao", PASSWORDS["zhao"]) == 303
            status, page = zhao.request("/console/mine/qipanjing")
            assert status == 200
            status, _ = zhao.request("/console/mine/qipanjing/ack",
                                     {"csrf": _csrf(page), "episode": episode, "note": "x"})
            assert status == 403

            # the dispatcher: no token → 403; another mine's page or form → 403
            wang = Session(base)
            assert wang.login("wang", PASSWORDS["wang"]) == 303
            status, page = wang.request("/console/mine/qipanjing")
            assert status == 200
            assert wang.request("/console/mine/qipanjing/ack",
                                {"episode": episode, "note": "no token"})[0] == 403
            assert wang.request("/console/mine/qipanjing/ack",
                                {"csrf": "forged", "episode": episode})[0] == 403
            assert wang.request("/console/mine/dayan")[0] == 403
            assert wang.request("/console/mine/dayan/silence",
                                {"csrf": _csrf(page), "duration": "1h", "reason": "x"})[0] == 403
            assert service.record.acknowledgements([episode]) == {}  # nothing got through

            # a silence from the dispatcher is recorded with name and time; a typo is refused
            status, _ = wang.request("/console/mine/qipanjing/silence",
                                     {"csrf": _csrf(page), "sensor": "T2-1101",
                                      "duration": "2h", "reason": "标校 calibration"})
            assert status == 303
            status, body = wang.request("/console/mine/qipanjing/silence",
                                        {"csrf": _csrf(page), "sensor": "T9-9999",
                                         "duration": "2h", "reason": "x"})
            assert status == 400 and "T9-9999" in body
            status, page = wang.request("/console/mine/qipanjing")
            assert "sensor=T2-1101" in page and "wang" in page and "甲烷断电永不屏蔽" in page

            # the history, filtered
            status, page = wang.request("/console/mine/qipanjing/history?rule=limit_power_off")
            assert status == 200 and "limit_power_off" in page
            assert "<td>limit_alarm</td>" not in page
            status, page = wang.request("/console/mine/qipanjing/history?severity=warning")
            assert "<td>limit_alarm</td>" in page and "limit_power_off</td>" not in page
            assert wang.request("/console/mine/qipanjing/history?since=yesterday")[0] == 400

            # a wrong password: refused, and after the limit even the right one waits
            stranger = Session(base)
            assert stranger.request("/console/login", {"user": "wang", "password": PASSWORDS[
                "wang"]})[0] == 403  # the login form's own token is missing
            for _ in range(USER_FAILS):
                assert stranger.login("wang", "guess") == 401
            assert stranger.login("wang", PASSWORDS["wang"]) == 429

            # a reload that removes an account ends its sessions; the others go on
            deployment = service.deployment
            service.deployment = dataclasses.replace(deployment, console=dataclasses.replace(
                deployment.console, users=tuple(u for u in deployment.console.users
                                                if u.name != "zhao")))
            assert zhao.request("/console/mine/qipanjing")[0] == 303  # to the login page
            assert wang.request("/console/mine/qipanjing")[0] == 200
        finally:
            service.stop()
