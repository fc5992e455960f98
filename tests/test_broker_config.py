"""`jinmei broker config` and the security keys of the deployment file, without a broker.

The generated ACL is checked line by line (it is the security boundary; tests/test_security.py
checks it on the real broker), deploy/mosquitto.conf against the generator, and every security
setting's refusal for its message: accounts, TLS files, a password in a URL, an unsigned
webhook, plain FTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.errors import ConfigError
from config.loader import load_deployment
from jinmei.broker_config import ListenerPlan, acl_text, broker_files
from jinmei.cli import main

ROOT = Path(__file__).resolve().parent.parent
MINES = ROOT / "config" / "mines"

ACCOUNTS = """
[broker]
username = "jinmei"

[[broker.accounts]]
name = "gw-dayan"
role = "gateway"
mines = ["dayan"]

[[broker.accounts]]
name = "gw-qipanjing-s01"
role = "gateway"
mines = ["qipanjing"]
substations = ["S01", "S02"]

[[broker.accounts]]
name = "dispatch-dayan"
role = "dispatcher"
mines = ["dayan"]

[[broker.accounts]]
name = "regulator"
role = "regulator"
"""


def deployment(tmp_path: Path, body: str, **environ: str) -> Any:
    text = f'mines = ["{MINES / "dayan.toml"}", "{MINES / "qipanjing.toml"}"]\n' + body
    path = tmp_path / "deploy.toml"
    path.write_text(text, encoding="utf-8")
    return load_deployment(path, environ=environ)


def rules(acl: str) -> list[str]:
    return [line for line in acl.splitlines() if line and not line.startswith("#")]


def test_the_acl_gives_each_account_only_its_role(tmp_path: Path) -> None:
    assert rules(acl_text(deployment(tmp_path, ACCOUNTS))) == [
        "user jinmei",
        "topic read jinmei/+/telemetry/#",
        "topic write jinmei/+/alerts",
        "topic write jinmei/+/rejects",
        "topic readwrite jinmei/+/status",  # instances re-assert online (ingest/status.py)
        "topic write jinmei/+/notifications/#",
        "topic readwrite jinmei/+/networking/lease",
        "user gw-dayan",
        "topic write jinmei/dayan/telemetry/#",
        "user gw-qipanjing-s01",
        "topic write jinmei/qipanjing/telemetry/S01",
        "topic write jinmei/qipanjing/telemetry/S02",
        "user dispatch-dayan",
        "topic read jinmei/dayan/alerts",
        "topic read jinmei/dayan/status",
        "user regulator",
        "topic read jinmei/dayan/alerts",
        "topic read jinmei/dayan/status",
        "topic read jinmei/qipanjing/alerts",
        "topic read jinmei/qipanjing/status",
    ]


def test_deploy_mosquitto_conf_is_what_the_generator_writes(tmp_path: Path) -> None:
    """deploy/mosquitto.conf carries more comments; its settings are the generator's."""
    generated = broker_files(deployment(tmp_path, ACCOUNTS), ListenerPlan(),
                             Path("/etc/mosquitto/jinmei"))
    shipped = (ROOT / "deploy" / "mosquitto.conf").read_text(encoding="utf-8")
    assert rules(shipped) == rules(generated.files["mosquitto.conf"])


def test_broker_config_writes_the_files_and_says_how_to_set_passwords(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployment(tmp_path, ACCOUNTS)
    out = tmp_path / "broker"
    assert main(["broker", "config", "--config", str(tmp_path / "deploy.toml"), "--out",
                 str(out), "--cert-port", "0"]) == 0
    conf = (out / "mosquitto.conf").read_text()
    assert "listener 8883\n" in conf and "listener 8885\n" in conf
    assert "require_certificate" not in conf  # --cert-port 0: no certificate listener
    assert "listener 1883" not in conf  # no plain listener unless asked
    assert (out / "passwd.accounts").read_text().split() == [
        "jinmei", "gw-dayan", "gw-qipanjing-s01", "dispatch-dayan", "regulator"]
    printed = capsys.readouterr().out
    assert f"mosquitto_passwd {out.resolve() / 'passwd'} gw-dayan" in printed
    assert f"mosquitto_passwd {out.resolve() / 'passwd.jinmei'} jinmei" in printed
    assert f"mosquitto_passwd {out.resolve() / 'passwd'} jinmei" not in printed
    assert main(["broker", "config", "--config", str(tmp_path / "deploy.toml"), "--out",
                 str(out), "--plain-listener", "1883"]) == 0
    assert listeners((out / "mosquitto.conf").read_text())["listener 1883 127.0.0.1"] == [
        "allow_anonymous false", f"password_file {out.resolve() / 'passwd.jinmei'}",
        f"acl_file {out.resolve() / 'acl'}"]  # loopback, and jinmei's account alone
    # a certificate listener for jinmei only with a CA of its own
    assert main(["broker", "config", "--config", str(tmp_path / "deploy.toml"), "--out",
                 str(out), "--own-cert-port", "8886"]) == 2
    assert "--own-ca-file" in capsys.readouterr().err


def listeners(conf: str) -> dict[str, list[str]]:
    """The settings under each ``listener`` line, up to the next blank line."""
    found: dict[str, list[str]] = {}
    for block in conf.split("\n\n"):
        lines = rules(block)
        if lines and lines[0].startswith("listener "):
            found[lines[0]] = lines[1:]
    return found


def test_no_account_can_take_a_client_id_of_jinmeis(tmp_path: Path) -> None:
    """per_listener_settings: the accounts log in where the broker replaces their client id by
    their account name; jinmei alone (passwd.jinmei) where client ids are its own."""
    plan = ListenerPlan(own_cert_port=8886, own_ca_file="/etc/mosquitto/certs/jinmei-ca.crt")
    conf = broker_files(deployment(tmp_path, ACCOUNTS), plan,
                        Path("/etc/mosquitto/jinmei")).files["mosquitto.conf"]
    assert "per_listener_settings true" in rules(conf)
    found = listeners(conf)
    assert list(found) == ["listener 8883", "listener 8884", "listener 8885", "listener 8886"]
    etc = "/etc/mosquitto/jinmei"
    for port in ("8883", "8884"):
        assert found[f"listener {port}"][-4:] == [
            "allow_anonymous false", f"password_file {etc}/passwd", f"acl_file {etc}/acl",
            "use_username_as_clientid true"]
        assert "cafile /etc/mosquitto/certs/ca.crt" in found[f"listener {port}"]
    for port in ("8885", "8886"):
        assert found[f"listener {port}"][-3:] == [
            "allow_anonymous false", f"password_file {etc}/passwd.jinmei", f"acl_file {etc}/acl"]
    assert "require_certificate true" in found["listener 8886"]
    assert "cafile /etc/mosquitto/certs/jinmei-ca.crt" in found["listener 8886"]
    # nothing about logins before the first listener: it would be ignored per listener
    head = conf.split("\nlistener ")[0]
    assert not any(key in head for key in ("password_file", "acl_file", "allow_anonymous"))


@pytest.mark.parametrize("name", ["jinmei-ingest", "jinmei-ingest-status-dayan",
                                  "jinmei-ingest-w0"])
def test_an_account_named_as_jinmeis_client_id_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        deployment(tmp_path, f'[broker]\nusername = "jinmei"\n[[broker.accounts]]\n'
                             f'name = "{name}"\nrole = "gateway"\nmines = ["dayan"]')
    assert raised.value.location.endswith("broker.accounts[0].name"), raised.value
    assert "jinmei's client id 'jinmei-ingest'" in raised.value.message
    # with another client id the name is free
    deployment(tmp_path, f'[broker]\nusername = "jinmei"\nclient_id = "jm-1"\n'
                         f'[[broker.accounts]]\nname = "{name}"\nrole = "gateway"\n'
                         'mines = ["dayan"]')


def test_broker_config_needs_jinmeis_own_account(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    deployment(tmp_path, "")
    assert main(["broker", "config", "--config", str(tmp_path / "deploy.toml"), "--out",
                 str(tmp_path / "out")]) == 2
    assert "broker.username" in capsys.readouterr().err


@pytest.mark.parametrize(("body", "location", "message"), [
    ('[broker]\nurl = "mqtts://gw:pw@broker:8883"', "broker.url",
     "set the user name in `username` and the password in JINMEI_MQTT_PASSWORD"),
    ('[broker]\nca_file = "nowhere.pem"', "broker.ca_file", "cannot read"),
    ('[broker]\nca_file = "deploy.toml"', "broker.ca_file", "is not TLS: use mqtts://"),
    ('[broker]\nurl = "mqtts://b"\nkey_file = "deploy.toml"', "broker.key_file",
     "needs its cert_file"),
    ('[[broker.accounts]]\nname = "gw"\nrole = "gateway"\nmines = ["dayan", "qipanjing"]',
     "broker.accounts[0].mines", "exactly one mine"),
    ('[[broker.accounts]]\nname = "gw"\nrole = "gateway"\nmines = ["dayn"]',
     "broker.accounts[0].mines", "no mine 'dayn' is configured (did you mean 'dayan'?)"),
    ('[[broker.accounts]]\nname = "gw"\nrole = "gateway"\nmines = ["dayan"]\n'
     'substations = ["S99"]', "broker.accounts[0].substations", "no substation 'S99'"),
    ('[[broker.accounts]]\nname = "d"\nrole = "dispatcher"', "broker.accounts[0].mines",
     "needs the mines"),
    ('[[broker.accounts]]\nname = "d"\nrole = "admin"', "broker.accounts[0].role",
     "'admin' is not a role: gateway, dispatcher, regulator"),
    ('[[broker.accounts]]\nname = "a b"\nrole = "regulator"', "broker.accounts[0].name",
     "an account name"),
    ('[[broker.accounts]]\nname = "r"\nrole = "regulator"\npassword = "x"',
     "broker.accounts[0].password", "passwords are never read from files"),
    ('[broker]\nusername = "jinmei"\n[[broker.accounts]]\nname = "jinmei"\nrole = "regulator"',
     "broker.accounts", "account 'jinmei' is defined twice"),
    ('[[alerts.receivers]]\nname = "reg"\nchannel = "webhook"\nurl = "https://r.example/h"',
     "alerts.receivers[0].secret_env", "or mark it `unsigned = true`"),
    ('[networking]\nurl = "ftp://jinmei@reg.example/in"', "networking.url",
     "set `insecure = true`"),
    ('[networking]\nurl = "ftp://jinmei:pw@reg.example/in"\ninsecure = true', "networking.url",
     "a password in the URL is refused"),
])
def test_security_settings_are_refused_with_their_reason(tmp_path: Path, body: str,
                                                          location: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        deployment(tmp_path, body)
    where = raised.value.location  # "line N (key)" where the file has the table's header
    assert where == location or where.endswith(f"({location})"), raised.value
    assert message in raised.value.message
    assert "pw@" not in str(raised.value)


def test_security_settings_load(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-")
    body = ('[broker]\nurl = "mqtts://broker:8883"\nca_file = "ca.pem"\n'
            + ACCOUNTS.replace("[broker]\n", "") +
            '[[alerts.receivers]]\nname = "lab"\nchannel = "webhook"\n'
            'url = "http://127.0.0.1:9/h"\nunsigned = true\n'
            '[networking]\nurl = "ftps://jinmei@reg.example/in"\nca_file = "ca.pem"\n')
    loaded = deployment(tmp_path, body, JINMEI_MQTT_PASSWORD="pw")
    assert loaded.broker.ca_file == str(tmp_path / "ca.pem")
    assert [a.role for a in loaded.broker.accounts] == ["gateway", "gateway", "dispatcher",
                                                        "regulator"]
    assert loaded.alerts.receivers[0].option("unsigned") is True
    assert loaded.networking.ca_file == str(tmp_path / "ca.pem")
    assert "pw" not in repr(loaded.broker)  # secrets stay out of reprs (and so out of logs)
