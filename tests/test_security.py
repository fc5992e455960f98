"""Security on the real broker: a Mosquitto started with the configuration `jinmei broker config`
generates (TLS only, no anonymous access, the generated ACL), with a CA and certificates made
here with the openssl CLI.

What is checked, as an attacker holding one mine's gateway login would try it:
- jinmei ingests and alerts over TLS, logging in with user name and password and, on the
  second listener, with a client certificate; a wrong CA or a wrong password is refused with a
  message naming the setting, and no traceback;
- the gateway of Dayan can publish Dayan's telemetry and nothing else: Qipanjing's telemetry,
  any alerts or status topic, and reading `jinmei/#` all fail, and nothing of it reaches the
  store or an alert subscriber;
- a dispatcher reads its own mine's alerts and nothing else;
- `jinmei simulate` and `jinmei replay` publish over TLS with the password from the
  environment, and no output of a whole run (service + simulate + replay) holds a secret.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config.loader import load_deployment
from config.model import Deployment
from ingest.codec import encode_telemetry
from ingest.sqlite import SQLiteSink
from jinmei.cli import main
from jinmei.service import Service
from tests.servers import MOSQUITTO, Pki, free_port, make_pki, wait_listening, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {"jinmei": "jinmei-pw-Zq81", "gw-dayan": "dayan-pw-Kx27",
             "gw-qipanjing": "qipanjing-pw-Lm55", "dispatch-qipanjing": "dispatch-pw-Tr40",
             "regulator": "regulator-pw-Wd93"}
T1 = "T1-1101"  # qipanjing longwall face: alarm 1.0, power-off 1.5 (limits.toml)
DAYAN_SENSOR = "T0-1201"


def deployment_text(port: int, pki: Pki, workdir: Path, *, port_key: str = "url") -> str:
    mines = ", ".join(f'"{ROOT / "config" / "mines" / m}.toml"' for m in ("dayan", "qipanjing"))
    return f"""mines = [{mines}]
[broker]
{port_key} = "mqtts://127.0.0.1:{port}"
username = "jinmei"
client_id = "jinmei-secure"
ca_file = "{pki.ca}"

[[broker.accounts]]
name = "gw-dayan"
role = "gateway"
mines = ["dayan"]

[[broker.accounts]]
name = "gw-qipanjing"
role = "gateway"
mines = ["qipanjing"]

[[broker.accounts]]
name = "dispatch-qipanjing"
role = "dispatcher"
mines = ["qipanjing"]

[[broker.accounts]]
name = "regulator"
role = "regulator"

[store]
url = "sqlite:///{workdir / 'readings.db'}"

[http]
listen = "127.0.0.1:0"

[ingest]
state_dir = "{workdir / 'state'}"

[alerts]
resolve_hold_s = 0.0
"""


@dataclass
class SecureBroker:
    """Mosquitto running the generated configuration: the accounts log in on ``port`` (or by
    certificate on ``cert_port``), jinmei on ``own_port`` (or by a certificate of ``own_pki``
    on ``own_cert_port``)."""

    port: int
    cert_port: int
    own_port: int
    own_cert_port: int
    pki: Pki
    own_pki: Pki
    config_file: Path
    out: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    workdir = tmp_path_factory.mktemp("secure-broker")
    own_pki = make_pki(workdir / "own-pki")  # the CA of jinmei's certificate alone
    port, cert_port, own_port, own_cert_port = (free_port() for _ in range(4))
    config_file = workdir / "deployment.toml"
    config_file.write_text(deployment_text(own_port, pki, workdir))
    out = workdir / "mosquitto"
    assert main(["broker", "config", "--config", str(config_file), "--out", str(out),
                 "--port", str(port), "--cert-port", str(cert_port), "--own-port",
                 str(own_port), "--own-cert-port", str(own_cert_port), "--own-ca-file",
                 str(own_pki.ca), "--bind", "127.0.0.1",
                 "--ca-file", str(pki.ca), "--server-cert", str(pki.server_cert),
                 "--server-key", str(pki.server_key), "--data-dir", str(workdir / "data"),
                 "--user", "root"]) == 0  # the tests run as root; production drops to mosquitto
    (workdir / "data").mkdir()
    for name, password in PASSWORDS.items():
        passwd = out / ("passwd.jinmei" if name == "jinmei" else "passwd")
        passwd.touch(mode=0o600)
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), name, password], check=True)
    log = (workdir / "mosquitto.log").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-v", "-c", str(out / "mosquitto.conf")],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        for listening in (port, cert_port, own_port, own_cert_port):
            wait_listening(listening, process)
        yield SecureBroker(port, cert_port, own_port, own_cert_port, pki, own_pki, config_file,
                           out, process)
    finally:
        process.terminate()
        process.wait(10)
        log.close()


class Account:
    """A raw paho client (MQTT 5, TLS) logged in as one account: what it received, and the
    broker's answer to each of its publishes and subscriptions."""

    def __init__(self, broker: SecureBroker, name: str, *, topics: tuple[str, ...] = (),
                 client_id: str = "", port: int = 0,
                 certificate: tuple[Path, Path] | None = None) -> None:
        """``name`` logs in with its password on the accounts' listener, or with
        ``certificate`` (its CN the account) on ``port``. On the accounts' listeners the broker
        makes the account name the client id: one Account of a name at a time."""
        self.received: list[tuple[str, bytes]] = []
        self.puback: dict[int, str] = {}
        self.suback: list[str] = []
        self.connack: list[str] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"{name}-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv5)
        if certificate is None:
            self.client.username_pw_set(name, PASSWORDS[name])
        self.client.tls_set(ca_certs=str(broker.pki.ca),
                            certfile=str(certificate[0]) if certificate else None,
                            keyfile=str(certificate[1]) if certificate else None)
        self.client.on_connect = lambda c, u, f, reason, p: self.connack.append(str(reason))
        self.client.on_disconnect = lambda c, u, f, reason, p: self.connack.append(
            f"disconnected: {reason}")  # e.g. a certificate the listener's CA did not sign
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        subscribed = threading.Event()

        def on_subscribe(client: mqtt.Client, u: object, mid: int, reasons: list, p: object
                         ) -> None:
            self.suback += [str(r) for r in reasons]
            subscribed.set()

        self.client.on_subscribe = on_subscribe
        self.client.connect("127.0.0.1", port or broker.port, clean_start=True)
        self.client.loop_start()
        if topics:
            self.client.subscribe([(t, 1) for t in topics])
            assert subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object,
                    properties: object) -> None:
        self.puback[mid] = str(reason)

    def publish(self, topic: str, payload: bytes) -> str:
        """The broker's PUBACK reason for a QoS 1 publish. (Mosquitto 2.0 then drops the TLS
        connection of a client whose publish it refused: use a fresh Account for each.)"""
        info = self.client.publish(topic, payload, qos=1)
        assert wait_until(lambda: info.mid in self.puback, 10)
        return self.puback[info.mid]

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self.received}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def deployment_of(broker: SecureBroker, workdir: Path, **changes: object) -> Deployment:
    deployment = load_deployment(broker.config_file,
                                 environ={"JINMEI_MQTT_PASSWORD": PASSWORDS["jinmei"]})
    return dataclasses.replace(
        deployment,
        broker=dataclasses.replace(deployment.broker, **changes),
        store=dataclasses.replace(deployment.store,
                                  url=f"sqlite:///{workdir / 'readings.db'}"),
        ingest=dataclasses.replace(deployment.ingest, state_dir=str(workdir / "state")))


def methane_rise(start_ms: int) -> list[tuple[str, bytes]]:
    """T1-1101 at 0.50 → 1.62 (power-off) → 0.90 %, 10 s apart."""
    return [("jinmei/qipanjing/telemetry/S01",
             encode_telemetry(start_ms + i * 10_000, [(T1, v, "ok")]))
            for i, v in enumerate([0.50, 1.62, 0.90])]


def stored(service: Service) -> dict[str, int]:
    assert isinstance(service.sink, SQLiteSink)
    return service.sink.count_readings()


@pytest.mark.parametrize("login", ["password", "certificate"])
def test_jinmei_ingests_and_alerts_over_tls(broker: SecureBroker, tmp_path: Path,
                                            login: str) -> None:
    """The service on the TLS listener (user name and password, or on the certificate listener
    a client certificate whose CN is its account); the Qipanjing gateway's methane rise is
    stored and its power-off reaches the Qipanjing dispatcher."""
    if login == "password":
        deployment = deployment_of(broker, tmp_path, client_id=f"jinmei-{login}")
    else:
        cert, key = broker.own_pki.client("jinmei")
        deployment = deployment_of(broker, tmp_path, client_id=f"jinmei-{login}",
                                   url=f"mqtts://127.0.0.1:{broker.own_cert_port}", username="",
                                   password="", cert_file=str(cert), key_file=str(key))
    dispatcher = Account(broker, "dispatch-qipanjing", topics=("jinmei/qipanjing/alerts",))
    gateway = Account(broker, "gw-qipanjing")
    service = Service(deployment)
    try:
        assert service.start(wait_subscribed_s=15), service.source.refusal
        for topic, payload in methane_rise(int(time.time() * 1000) - 60_000):
            assert gateway.publish(topic, payload) == "Success"
        assert wait_until(lambda: stored(service).get("qipanjing") == 3, 15)
        assert wait_until(lambda: any(b'"limit_power_off"' in p and b'"resolved"' in p
                                      for _, p in dispatcher.received), 15)
    finally:
        service.stop()
        dispatcher.close()
        gateway.close()


def test_a_gateway_writes_its_own_telemetry_and_nothing_else(broker: SecureBroker,
                                                             tmp_path: Path) -> None:
    """With Dayan's gateway login: Qipanjing's telemetry, a forged alert, a forged status and
    reading jinmei/# all fail; nothing of it is stored or reaches an alert subscriber. Dayan's
    own telemetry is stored."""
    service = Service(deployment_of(broker, tmp_path, client_id="jinmei-acl"))
    watcher = Account(broker, "regulator", topics=("jinmei/+/alerts", "jinmei/+/status"))
    attacker: Account | None = None
    try:
        assert service.start(wait_subscribed_s=15), service.source.refusal
        now = int(time.time() * 1000) - 60_000
        forged_alert = json.dumps({"id": "x", "mine": "qipanjing", "rule": "limit_power_off",
                                   "state": "resolved"}).encode()
        for topic, payload in (
                ("jinmei/qipanjing/telemetry/S01", encode_telemetry(now, [(T1, 1.9, "ok")])),
                ("jinmei/qipanjing/telemetry", encode_telemetry(now, [(T1, 1.8, "ok")])),
                ("jinmei/qipanjing/alerts", forged_alert),
                ("jinmei/dayan/alerts", forged_alert),
                ("jinmei/qipanjing/status", b'{"state": "offline"}'),
                ("jinmei/dayan/status", b'{"state": "offline"}'),
                ("jinmei/dayan/rejects", b"{}"),
                ("jinmei/dayan/notifications/desk", forged_alert)):
            forger = Account(broker, "gw-dayan")  # one at a time: its client id is gw-dayan
            assert forger.publish(topic, payload) == "Not authorized", topic
            forger.close()
        attacker = Account(broker, "gw-dayan", topics=("jinmei/#",))
        # its own mine's telemetry goes through, and is stored
        assert attacker.publish("jinmei/dayan/telemetry/S01",
                                encode_telemetry(now, [(DAYAN_SENSOR, 0.2, "ok")])) == "Success"
        assert wait_until(lambda: stored(service).get("dayan") == 1, 15)
        # the real power-off at Qipanjing (its own gateway) is published by jinmei meanwhile
        gateway = Account(broker, "gw-qipanjing")
        for topic, payload in methane_rise(now):
            gateway.publish(topic, payload)
        gateway.close()
        assert wait_until(lambda: any(b'"limit_power_off"' in p for _, p in watcher.received),
                          15)
        time.sleep(1.0)  # anything the attacker could see has arrived by now
        counts = stored(service)
    finally:
        service.stop()
        watcher.close()
        if attacker is not None:
            attacker.close()
    assert counts == {"dayan": 1, "qipanjing": 3}  # the forged 1.9 and 1.8 % are not there
    # jinmei's own status (online, then offline "stopped" at the end) comes through its own
    # account; the gateway's forged alert and status never do
    assert all(b'"id": "x"' not in p for _, p in watcher.received)
    statuses = [json.loads(p) for t, p in watcher.received if t.endswith("/status")]
    assert statuses and all(s.get("instance", "").endswith("@" + socket.gethostname())
                            for s in statuses)  # jinmei's, never the bare forged one
    assert attacker.received == []  # jinmei/# read nothing: not its telemetry, not the alerts


def test_a_dispatcher_reads_its_mines_alerts_and_nothing_else(broker: SecureBroker,
                                                              tmp_path: Path) -> None:
    service = Service(deployment_of(broker, tmp_path, client_id="jinmei-dispatch"))
    forger = Account(broker, "dispatch-qipanjing")  # a read-only account writes nothing
    assert forger.publish("jinmei/qipanjing/alerts", b"{}") == "Not authorized"
    forger.close()  # (before the reader logs in: its client id is the account name too)
    dispatcher = Account(broker, "dispatch-qipanjing", topics=("jinmei/#",))
    try:
        assert service.start(wait_subscribed_s=15), service.source.refusal
        now = int(time.time() * 1000) - 60_000
        dayan, qipanjing = Account(broker, "gw-dayan"), Account(broker, "gw-qipanjing")
        for topic, payload in methane_rise(now):
            qipanjing.publish(topic, payload)
        # a Dayan power-off (T0-1201) and a reject at Qipanjing
        dayan.publish("jinmei/dayan/telemetry/S01",
                      encode_telemetry(now, [(DAYAN_SENSOR, 2.0, "ok")]))
        qipanjing.publish("jinmei/qipanjing/telemetry/S01", b"{not json")
        assert wait_until(lambda: stored(service) == {"dayan": 1, "qipanjing": 3}, 15)
        assert wait_until(lambda: "jinmei/qipanjing/alerts" in dispatcher.topics(), 15)
        time.sleep(1.0)
        dayan.close()
        qipanjing.close()
    finally:
        service.stop()
        dispatcher.close()
    assert service.pipeline.stats.alerts.total() >= 3  # dayan's alert exists, unseen
    # its mine's alerts and status (jinmei's online/offline), nothing of Dayan, no telemetry
    assert dispatcher.topics() == {"jinmei/qipanjing/alerts", "jinmei/qipanjing/status"}


def test_no_account_takes_a_client_id_of_jinmeis(broker: SecureBroker, tmp_path: Path) -> None:
    """While jinmei runs, Dayan's gateway connects with jinmei's client ids (its ingest session,
    its status connections with their Last Will), clean start, by password and by certificate
    on the accounts' listeners, and tries jinmei's own listeners: the broker gives it its
    account name for client id there, and refuses it here. jinmei's connections are never cut:
    Qipanjing's telemetry published meanwhile is stored, its status stays online, no Last
    Will is published."""
    client_id = "jinmei-takeover"
    log = broker.out.parent / "mosquitto.log"
    start = log.stat().st_size
    service = Service(deployment_of(broker, tmp_path, client_id=client_id))
    watcher = Account(broker, "regulator", topics=("jinmei/+/status",))

    def states(mine: str, since: int = 0) -> list[str]:
        return [json.loads(p)["state"] for t, p in list(watcher.received)[since:]
                if t == f"jinmei/{mine}/status" and p]

    # jinmei's account reads status too (its instances re-assert online, ingest/status.py)
    own = Account(broker, "jinmei", topics=("jinmei/qipanjing/status",), port=broker.own_port)
    try:
        assert own.suback == ["Granted QoS 1"]
        assert service.start(wait_subscribed_s=15), service.source.refusal
        assert wait_until(lambda: any(b'"online"' in p for _, p in own.received), 10)
        assert wait_until(lambda: all(states(m)[-1:] == ["online"] for m in ("dayan",
                                                                            "qipanjing")), 10)
        online = len(watcher.received)  # (earlier tests left "offline" retained before)
        cert, key = broker.pki.client("gw-dayan")
        stolen = (client_id, f"{client_id}-status-qipanjing", f"{client_id}-status-dayan")
        gateway = Account(broker, "gw-qipanjing")
        rise = methane_rise(int(time.time() * 1000) - 60_000)
        for target, (topic, payload) in zip(stolen, rise, strict=True):
            for port, certificate in ((broker.port, None), (broker.cert_port, (cert, key))):
                intruder = Account(broker, "gw-dayan", client_id=target, port=port,
                                   certificate=certificate)
                assert wait_until(lambda i=intruder: i.connack, 10) == ["Success"]
                time.sleep(0.3)
                intruder.close()
            for port, certificate in ((broker.own_port, None),
                                      (broker.own_cert_port, (cert, key))):
                assert refused(broker, target, port, certificate), (target, port)
            assert gateway.publish(topic, payload) == "Success"  # Qipanjing, meanwhile
        gateway.close()
        assert wait_until(lambda: stored(service).get("qipanjing") == 3, 15)
        time.sleep(1.0)  # a Last Will or a reconnection would show by now
        during = states("qipanjing", online) + states("dayan", online)
    finally:
        service.stop()
        watcher.close()
        own.close()
    assert "offline" not in during  # no Last Will, no takeover
    with log.open("rb") as file:  # what the broker logged during this test (mosquitto -v)
        file.seek(start)
        text = file.read().decode(errors="replace")
    assert f"as {client_id} " in text  # jinmei's ingest session, connected once ...
    assert text.count(f"as {client_id} ") == 1
    assert "already connected, closing old connection" not in text, text  # never taken over
    assert text.count("as gw-dayan ") >= 6  # the broker named the intruder after its account


def refused(broker: SecureBroker, client_id: str, port: int,
            certificate: tuple[Path, Path] | None) -> bool:
    """Whether Dayan's gateway cannot log in on jinmei's listener ``port`` at all."""
    try:
        intruder = Account(broker, "gw-dayan", client_id=client_id, port=port,
                           certificate=certificate)
    except (OSError, ssl.SSLError):
        return True  # the certificate listener: not signed by jinmei's CA
    try:
        wait_until(lambda: intruder.connack, 3)
        return "Success" not in intruder.connack
    finally:
        intruder.close()


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jinmei.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=timeout, cwd=ROOT)


def test_a_wrong_ca_or_password_is_refused_naming_the_setting(broker: SecureBroker,
                                                             tmp_path: Path) -> None:
    rogue = make_pki(tmp_path / "rogue")
    url = f"mqtts://127.0.0.1:{broker.port}"
    wrong_ca = run_cli("simulate", "--mine", "dayan", "--duration", "20", "--asap",
                       "--broker", url, "--ca-file", str(rogue.ca), "--username", "gw-dayan",
                       env={"JINMEI_MQTT_PASSWORD": PASSWORDS["gw-dayan"]})
    assert wrong_ca.returncode == 1
    assert "broker.ca_file" in wrong_ca.stderr and str(rogue.ca) in wrong_ca.stderr
    wrong_password = run_cli("simulate", "--mine", "dayan", "--duration", "20", "--asap",
                             "--broker", url, "--ca-file", str(broker.pki.ca),
                             "--username", "gw-dayan", env={"JINMEI_MQTT_PASSWORD": "guess"})
    assert wrong_password.returncode == 1
    assert "broker.username 'gw-dayan'" in wrong_password.stderr
    assert "JINMEI_MQTT_PASSWORD" in wrong_password.stderr
    in_url = run_cli("replay", str(tmp_path / "none.jsonl"), "--broker",
                     f"mqtts://gw-dayan:{PASSWORDS['gw-dayan']}@127.0.0.1:{broker.port}", env={})
    assert in_url.returncode == 2 and "JINMEI_MQTT_PASSWORD" in in_url.stderr
    config = tmp_path / "deployment.toml"
    config.write_text(deployment_text(broker.own_port, broker.pki, tmp_path))
    service = run_cli("run", "--config", str(config), env={"JINMEI_MQTT_PASSWORD": "guess"})
    assert service.returncode == 2  # jinmei run stops at once: waiting cannot fix this
    assert "broker.username 'jinmei'" in service.stderr
    for run in (wrong_ca, wrong_password, in_url, service):
        assert "Traceback" not in run.stderr + run.stdout
        assert PASSWORDS["gw-dayan"] not in run.stderr + run.stdout
    # the service says the same, and keeps the reason for whoever started it
    for changes, setting in (({"ca_file": str(rogue.ca)}, "broker.ca_file"),
                             ({"password": "guess"}, "broker.username 'jinmei'")):
        service = Service(deployment_of(broker, tmp_path / setting, client_id="jinmei-wrong",
                                        **changes))
        try:
            assert not service.start(wait_subscribed_s=3)
            assert setting in (wait_until(lambda s=service: s.source.refusal, 5) or "")
        finally:
            service.stop()


def test_a_whole_run_over_tls_prints_no_secret(broker: SecureBroker, tmp_path: Path) -> None:
    """`jinmei run` and `jinmei record` (jinmei's account) beside `jinmei simulate` and `jinmei
    replay` (the Dayan gateway's), passwords from the environment: the feed is stored and
    recorded, and no output of any of them holds a password."""
    config = tmp_path / "deployment.toml"
    config.write_text(deployment_text(broker.own_port, broker.pki, tmp_path))
    service = subprocess.Popen([sys.executable, "-m", "jinmei.cli", "-v", "run", "--config",
                                str(config)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "JINMEI_MQTT_PASSWORD": PASSWORDS["jinmei"]})
    gateway = {"JINMEI_MQTT_PASSWORD": PASSWORDS["gw-dayan"]}
    tls = ("--broker", f"mqtts://gw-dayan@127.0.0.1:{broker.port}", "--ca-file",
           str(broker.pki.ca))
    own = {"JINMEI_MQTT_PASSWORD": PASSWORDS["jinmei"]}
    taped = tmp_path / "taped.jsonl"
    recorder = subprocess.Popen([sys.executable, "-m", "jinmei.cli", "record", "--config",
                                 str(config), "--out", str(taped), "--count", "5",
                                 "--duration", "60"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, **own})
    try:
        time.sleep(2)  # the service subscribes (its session then keeps what comes)
        simulate = run_cli("simulate", "--config", str(config), "--mine", "dayan",
                           "--duration", "30", "--asap", "--seed", "3", *tls, env=gateway)
        assert simulate.returncode == 0, simulate.stderr
        recording = tmp_path / "feed.jsonl"
        run_cli("simulate", "--mine", "dayan", "--duration", "10", "--start-ms",
                str(int(time.time() * 1000) - 20_000), "--out", str(recording), env={})
        replay = run_cli("replay", str(recording), "--asap", *tls, env=gateway)
        assert replay.returncode == 0, replay.stderr
        db = tmp_path / "readings.db"
        assert wait_until(lambda: db.exists() and _dayan_rows(db) > 0, 20)
        taped_output, _ = recorder.communicate(timeout=30)
    finally:
        service.terminate()
        output, _ = service.communicate(timeout=30)
        recorder.kill()
    assert recorder.returncode == 0 and len(taped.read_text().splitlines()) == 5, taped_output
    everything = "\n".join([output, simulate.stdout, simulate.stderr, replay.stdout,
                            replay.stderr, taped_output])
    assert "published" in simulate.stdout and "replayed" in replay.stdout
    assert f"mqtts://gw-dayan@127.0.0.1:{broker.port}" in simulate.stdout  # URL shown, no secret
    leaked = [name for name, password in PASSWORDS.items() if password in everything]
    assert not leaked, f"passwords of {leaked} printed"


def _dayan_rows(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM reading WHERE mine = 'dayan'")
                       .fetchone()[0])
        except sqlite3.OperationalError:  # the table is not made yet
            return 0


def test_tls_context_names_a_bad_certificate_file(tmp_path: Path) -> None:
    from config.broker import tls_context
    from config.errors import ConfigError
    from config.model import BrokerConfig

    bogus = tmp_path / "not-a-cert.pem"
    bogus.write_text("hello")
    with pytest.raises(ConfigError, match=r"broker\.cert_file"):
        tls_context(BrokerConfig(url="mqtts://h", cert_file=str(bogus)))
    with pytest.raises(ConfigError, match=r"broker\.ca_file"):
        tls_context(BrokerConfig(url="mqtts://h", ca_file=str(tmp_path / "missing.pem")))
    assert isinstance(tls_context(BrokerConfig(url="mqtts://h")), ssl.SSLContext)
