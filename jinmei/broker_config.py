"""``jinmei broker config``: the Mosquitto configuration of a deployment, generated from it.

Who may publish what is a property of the deployment (its mines, substations and accounts), so
the broker's rules are generated from the deployment file rather than written by hand:

- ``mosquitto.conf`` — TLS listeners only, ``per_listener_settings true`` and, on every
  listener, ``allow_anonymous false`` and its password and ACL files:

  - the *accounts' listeners*, for gateways, dispatchers and regulators: user name and password
    (``passwd``) on one port, a client certificate signed by the CA (its CN being the account
    name) on another. Both have ``use_username_as_clientid true``: the broker replaces whatever
    client id such a client sends by its account name, so no account can take a client id of
    jinmei's (nor of another account);
  - *jinmei's own listener*: user name and password, its password file (``passwd.jinmei``)
    holding jinmei's account alone, client ids as sent (jinmei needs several fixed ones: its
    persistent ingest session, the status connections with their Last Will, the lease). Login
    by client certificate for jinmei on a listener of its own too, when asked for, checked
    against a CA of its own (``--own-ca-file``) that signs jinmei's certificates only: Mosquitto
    checks no password where the certificate names the account, so the common CA would let any
    gateway's certificate in there;
  - a plain listener only when asked for, loopback only, for jinmei's account alone;
  - jinmei's queue limits (deploy/mosquitto.conf explains them) and the persistence settings
    below;
- ``acl`` — per account: jinmei's own (``[broker] username``) reads every mine's telemetry and
  alone writes ``jinmei/+/alerts``, ``rejects``, ``status`` (which it also reads: active-active
  instances re-assert ``online``, ingest/status.py) and ``notifications/#``; a gateway writes
  only its mine's (or its substations') telemetry and reads nothing; a dispatcher or a regulator
  reads the ``alerts`` and ``status`` of its mines and writes nothing. An account not named has
  no rights at all;
- ``passwd.accounts`` — the account names, one a line, and how to give each a password with
  ``mosquitto_passwd``: jinmei's in ``passwd.jinmei``, every other in ``passwd`` (the hashes live
  only in the broker's files; no password is ever in the deployment file or in what this
  writes).

Client ids: without ``use_username_as_clientid`` any account could connect with jinmei's client
id and so cut jinmei's connection, discard its persistent session (the queued telemetry of every
mine) and make the broker publish jinmei's Last Will ``offline``. A gateway cannot reach
jinmei's listener (its account is not in ``passwd.jinmei``), and on the accounts' listeners its
client id is its account name, which config validation keeps from being jinmei's client id or
starting with it. The price: an account holds one connection at a time (a second login with it
replaces the first), so every gateway process needs an account of its own (one per substation
where a mine runs several). Mosquitto's dynamic-security plugin can fix a client id per account,
but not keep other accounts away from a client id, so it would not close this by itself; a
certificate must never be issued with a CN that is jinmei's client id or starts with it
(README "Security").

A static ACL file rather than Mosquitto's dynamic-security plugin: the deployment file stays
the one source of truth (dynamic security keeps its own JSON state, changed over MQTT, which
drifts from the file and needs an admin account on the broker); regenerating and sending the
broker SIGHUP applies a change.

Persistence (``PERSISTENCE``): Mosquitto holds queued QoS 1 messages in memory and writes its
whole database every ``autosave_interval`` seconds; a crash (kill -9, power loss) loses what
arrived since the last write, even though each message was acknowledged to its publisher.
``autosave_interval 1`` bounds that to about a second of traffic (measured:
``bench/bench_broker_durability.py``, figures in bench/RESULTS.md and the README's "Security").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config.errors import ConfigError, UsageError
from config.model import BrokerAccount, Deployment

__all__ = ["PERSISTENCE", "BrokerFiles", "ListenerPlan", "acl_text", "broker_files", "conf_text"]

# Chosen by measurement (bench/bench_broker_durability.py): stock 30 s lost every message of
# the last 30 s on kill -9; 1 s writes the queue every second, bounding a crash's loss to
# about a second of traffic at a cost of one database write a second.
PERSISTENCE = ("persistence true\n"
               "autosave_interval 1\n"
               "autosave_on_changes false\n")

# Raised or lifted broker limits that ack-after-commit needs (design.md, deploy/mosquitto.conf).
LIMITS = ("max_queued_messages 0\n"
          "max_queued_bytes 0\n"
          "max_inflight_messages 0\n"
          "persistent_client_expiration 7d\n")


@dataclass(frozen=True)
class ListenerPlan:
    """Where the broker listens and with which server certificate."""

    port: int = 8883  # accounts' listener, login by password
    cert_port: int | None = 8884  # accounts' client-certificate listener; None: none
    own_port: int = 8885  # jinmei's own listener, login by password (passwd.jinmei)
    own_cert_port: int | None = None  # jinmei's client-certificate listener; None: none
    own_ca_file: str = ""  # the CA of jinmei's certificates alone (with own_cert_port)
    plain_port: int | None = None  # unencrypted listener (loopback, jinmei only); None: none
    bind: str = ""  # address to bind the TLS listeners to; "": all
    ca_file: str = "/etc/mosquitto/certs/ca.crt"
    server_cert: str = "/etc/mosquitto/certs/server.crt"
    server_key: str = "/etc/mosquitto/certs/server.key"
    data_dir: str = "/var/lib/mosquitto/"
    run_as: str = "mosquitto"


@dataclass(frozen=True)
class BrokerFiles:
    """The generated files, by name, and the instructions to print."""

    files: dict[str, str]
    instructions: str


def _rules(account: BrokerAccount, mines: tuple[str, ...]) -> list[str]:
    if account.role == "gateway":
        mine = account.mines[0]
        if account.substations:
            return [f"topic write jinmei/{mine}/telemetry/{s}" for s in account.substations]
        return [f"topic write jinmei/{mine}/telemetry/#"]
    readable = account.mines or mines  # a regulator without mines reads every mine
    return [f"topic read jinmei/{mine}/{what}" for mine in readable for what in ("alerts",
                                                                                  "status")]


def acl_text(deployment: Deployment) -> str:
    """The ACL file of the deployment (module docstring)."""
    own = _own_account(deployment)
    mines = tuple(m.id for m in deployment.mines)
    lines = [f"# Generated by `jinmei broker config` from {deployment.source_file}",
             f"# (config hash {deployment.config_hash}). Regenerate; do not edit.",
             "# An account not named here has no rights. Mosquitto denies what no line allows.",
             "",
             "# jinmei: reads every mine's telemetry; alone writes alerts, rejects, status and",
             "# notifications (its Last Will on status included); reads status (an instance",
             "# re-asserts online, ingest/status.py); its instances share the networking",
             "# lease (ingest/lease.py).",
             f"user {own}",
             "topic read jinmei/+/telemetry/#",
             *(f"topic write jinmei/+/{what}" for what in ("alerts", "rejects")),
             "topic readwrite jinmei/+/status",
             "topic write jinmei/+/notifications/#",
             "topic readwrite jinmei/+/networking/lease"]
    for account in deployment.broker.accounts:
        lines += ["", f"# {_describe(account)}", f"user {account.name}",
                  *_rules(account, mines)]
    return "\n".join(lines) + "\n"


def _describe(account: BrokerAccount) -> str:
    mines = ", ".join(account.mines) or "every mine"
    if account.role == "gateway":
        where = f" substations {', '.join(account.substations)}" if account.substations else ""
        return f"gateway of {mines}{where}: writes its telemetry, reads nothing"
    return f"{account.role} of {mines}: reads alerts and status, writes nothing"


def _own_account(deployment: Deployment) -> str:
    if not deployment.broker.username:
        raise ConfigError(deployment.source_file, "broker.username",
                          "jinmei's own broker account is needed to generate the broker's "
                          "configuration: set [broker] username (e.g. \"jinmei\")")
    return deployment.broker.username


def _listener(port: int, plan: ListenerPlan, *, passwd: Path, acl: Path, certificate: bool,
              clientid_is_username: bool, ca_file: str = "") -> list[str]:
    head = f"listener {port} {plan.bind}".rstrip()
    lines = [head, f"cafile {ca_file or plan.ca_file}", f"certfile {plan.server_cert}",
             f"keyfile {plan.server_key}", "tls_version tlsv1.2"]
    if certificate:
        lines += ["require_certificate true", "use_identity_as_username true"]
    return lines + _auth(passwd, acl, clientid_is_username=clientid_is_username)


def _auth(passwd: Path, acl: Path, *, clientid_is_username: bool) -> list[str]:
    lines = ["allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}"]
    if clientid_is_username:
        lines.append("use_username_as_clientid true")
    return lines


def conf_text(deployment: Deployment, plan: ListenerPlan, out: Path) -> str:
    """mosquitto.conf for the deployment (module docstring); ``out``: where the files go."""
    out = out.resolve()
    passwd, own_passwd, acl = out / "passwd", out / "passwd.jinmei", out / "acl"
    if plan.own_cert_port is not None and not plan.own_ca_file:
        raise UsageError("--own-cert-port", "needs --own-ca-file, a CA that signs jinmei's "
                         "certificates alone (with the CA of the gateways' certificates any of "
                         "them could log in there and take jinmei's client ids)")
    parts = [f"# Mosquitto for the jinmei deployment {deployment.source_file}",
             f"# (config hash {deployment.config_hash}). Generated by `jinmei broker config`;",
             "# regenerate rather than edit. deploy/mosquitto.conf explains every setting.",
             "",
             "# Every listener has its own login and ACL settings (below each listener line).",
             "per_listener_settings true",
             f"user {plan.run_as}",
             "",
             "# Gateways, dispatchers, regulators: TLS, user name and password. The client id is",
             "# the account name, whatever the client sends: nobody takes jinmei's.",
             *_listener(plan.port, plan, passwd=passwd, acl=acl, certificate=False,
                        clientid_is_username=True)]
    if plan.cert_port is not None:
        parts += ["", "# The same accounts by client certificate signed by the CA: its CN is the "
                      "account name,", "# and the client id.",
                  *_listener(plan.cert_port, plan, passwd=passwd, acl=acl, certificate=True,
                             clientid_is_username=True)]
    parts += ["", "# jinmei alone (passwd.jinmei holds its account only): TLS, user name and "
                  "password", "# (JINMEI_MQTT_PASSWORD), its own client ids.",
              *_listener(plan.own_port, plan, passwd=own_passwd, acl=acl, certificate=False,
                         clientid_is_username=False)]
    if plan.own_cert_port is not None:
        parts += ["", "# jinmei alone by client certificate: only certificates signed by the CA "
                      "of jinmei's", "# certificates are accepted here.",
                  *_listener(plan.own_cert_port, plan, passwd=own_passwd, acl=acl,
                             certificate=True, clientid_is_username=False,
                             ca_file=plan.own_ca_file)]
    if plan.plain_port is not None:
        parts += ["", "# UNENCRYPTED, asked for with --plain-listener: loopback, jinmei alone",
                  f"listener {plan.plain_port} 127.0.0.1",
                  *_auth(own_passwd, acl, clientid_is_username=False)]
    parts += ["", "# A crash loses what arrived since the last save: 1 s, not the stock 30 s",
              "# (README \"Security\", bench/bench_broker_durability.py).",
              PERSISTENCE.rstrip("\n"), f"persistence_location {plan.data_dir}", "",
              "# ack-after-commit needs these (design.md; deploy/mosquitto.conf)",
              LIMITS.rstrip("\n")]
    return "\n".join(parts) + "\n"


def broker_files(deployment: Deployment, plan: ListenerPlan, out: Path) -> BrokerFiles:
    """Every generated file and what to run next."""
    own = _own_account(deployment)
    others = [a.name for a in deployment.broker.accounts]
    out = out.resolve()
    passwd, own_passwd = out / "passwd", out / "passwd.jinmei"
    names = "\n".join([own, *others]) + "\n"
    own_logins = [f"on port {plan.own_port} with its password in JINMEI_MQTT_PASSWORD"]
    if plan.own_cert_port is not None:
        own_logins.append(f"on port {plan.own_cert_port} with a client certificate whose CN is "
                          f"{own!r}, signed by {plan.own_ca_file}")
    lines = [f"Wrote {out / 'mosquitto.conf'}, {out / 'acl'} and {out / 'passwd.accounts'}.",
             "Give every account a password (asked for, never on the command line):",
             f"  touch {passwd} {own_passwd} && chmod 600 {passwd} {own_passwd}",
             f"  mosquitto_passwd {own_passwd} {own}",
             *(f"  mosquitto_passwd {passwd} {name}" for name in others),
             f"({passwd} and {own_passwd} must be readable by the user Mosquitto runs as, "
             f"{plan.run_as}.)",
             f"jinmei itself logs in as {own!r} " + ", or ".join(own_logins) + " (its account is "
             f"in {own_passwd.name} only).",
             f"Gateways, dispatchers and regulators log in on port {plan.port}"
             + (f" (or {plan.cert_port} with a client certificate whose CN is the account name)"
                if plan.cert_port is not None else "")
             + "; their client id is their account name, one connection per account.",
             f"Then: mosquitto -c {out / 'mosquitto.conf'}  (after a change: regenerate, "
             "then send Mosquitto SIGHUP)"]
    return BrokerFiles({"mosquitto.conf": conf_text(deployment, plan, out),
                        "acl": acl_text(deployment), "passwd.accounts": names},
                       "\n".join(lines))
