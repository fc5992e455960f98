"""How every jinmei MQTT client connects: one place for the broker URL, TLS and credentials.

The service's ingestor (``ingest/mqtt.py``), the MQTT alert channel, the simulator's publisher,
the recorder and replay all build their paho-mqtt 2 client with :func:`new_client` from one
:class:`~config.model.BrokerConfig`, so TLS and authentication work, and fail, the same way
everywhere. It sits in ``config/`` so that every package may use it.

- ``url``: ``mqtt://host[:port]`` (1883) or ``mqtts://host[:port]`` (8883, TLS). A user in the
  URL (``mqtts://gw-dayan@host``) is taken as the user name; **a password in the URL is refused**
  (it would end up in shell history, process lists and logs): the password comes only from
  ``JINMEI_MQTT_PASSWORD``.
- ``ca_file``: PEM file of the CA(s) that signed the broker's certificate; empty: the system's
  trusted CAs. The broker's host name is always checked against its certificate.
- ``cert_file`` / ``key_file``: jinmei's client certificate and key (PEM), for brokers that
  authenticate clients by certificate (Mosquitto ``require_certificate true``).
- ``username``; the password from the environment.

A failure is explained by :func:`explain_failure` in terms of the setting to fix (``broker.
ca_file``, ``broker.username`` / ``JINMEI_MQTT_PASSWORD`` …) and marked permanent when retrying
cannot help (a certificate not trusted, a login refused), so that a command stops with that
message instead of a traceback and the service says it loudly at every attempt.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.errors import ConfigError
from config.loader import ENV_MQTT_PASSWORD
from config.model import BrokerConfig
from config.redact import redact_url
from config.tls import client_context

__all__ = ["ENV_MQTT_PASSWORD", "Address", "Failure", "broker_address", "explain_failure",
           "explain_refusal", "new_client", "tls_context", "with_url"]

_PASSWORD_IN_URL = (f"a password in the broker URL is refused (it would be kept in shell "
                    f"history and logs): give the user name in [broker] username or "
                    f"--username and the password in the environment variable "
                    f"{ENV_MQTT_PASSWORD}")
# CONNACK reasons that no retry can cure: the account or its password is wrong.
_LOGIN_REFUSALS = ("bad user name or password", "not authorized", "bad username or password")


@dataclass(frozen=True, slots=True)
class Address:
    """Where the broker listens, whether over TLS, and the user named in the URL (if any)."""

    host: str
    port: int
    tls: bool
    username: str = ""


def broker_address(url: str) -> Address:
    """The :class:`Address` of ``mqtt[s]://[user@]host[:port]``; ConfigError (key ``broker.url``)
    for anything else, and for a password in the URL."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError("broker.url", "", f"bad port in {redact_url(url)!r}") from exc
    if parts.password is not None:
        raise ConfigError("broker.url", "", _PASSWORD_IN_URL)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError("broker.url", "", "expected mqtt://host[:port] or mqtts://host[:port], "
                                            f"got {redact_url(url)!r}")
    tls = parts.scheme == "mqtts"
    return Address(parts.hostname, port or (8883 if tls else 1883), tls,
                   unquote(parts.username or ""))


def with_url(broker: BrokerConfig, url: str) -> BrokerConfig:
    """``broker`` pointed at ``url`` (checked), a user named in the URL becoming the user name."""
    address = broker_address(url)
    return replace(broker, url=url, username=address.username or broker.username)


def tls_context(broker: BrokerConfig) -> ssl.SSLContext:
    """The TLS context of ``broker``: certificates verified against ``ca_file`` (or the system's
    CAs) with the host name checked, and the client certificate when one is set. A file that
    cannot be read or is not PEM is a ConfigError naming its key."""
    try:
        context = client_context(broker.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("broker.ca_file", "", f"cannot load the CA file "
                                                f"{broker.ca_file!r}: {exc}") from exc
    if broker.cert_file:
        try:
            context.load_cert_chain(broker.cert_file, broker.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("broker.cert_file", "",
                              f"cannot load the client certificate {broker.cert_file!r} with "
                              f"key {broker.key_file or '(in the certificate file)'!r}: "
                              f"{exc}") from exc
    return context


def new_client(broker: BrokerConfig, *, client_id: str | None = None,
               protocol: MQTTProtocolVersion | None = None, **options: Any) -> mqtt.Client:
    """A paho-mqtt 2 client for ``broker`` with its credentials and TLS set (not connected);
    ``protocol`` defaults to ``broker.protocol``, ``options`` go to ``paho.mqtt.client.Client``
    (``clean_session``, ``manual_ack`` …)."""
    if protocol is None:
        protocol = (MQTTProtocolVersion.MQTTv5 if broker.protocol == "5" else
                    MQTTProtocolVersion.MQTTv311)
    address = broker_address(broker.url)
    if (broker.ca_file or broker.cert_file) and not address.tls:
        key = "broker.ca_file" if broker.ca_file else "broker.cert_file"
        raise ConfigError(key, "", f"is set but the broker URL {redact_url(broker.url)!r} is "
                                   "not TLS: use mqtts://")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or broker.client_id,
                         protocol=protocol, **options)
    username = broker.username or address.username
    if username:
        client.username_pw_set(username, broker.password or None)
    if address.tls:
        client.tls_set_context(tls_context(broker))
    return client


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a connection failed, in terms of the setting to fix; ``permanent`` when trying again
    with the same settings cannot succeed."""

    message: str
    permanent: bool


def explain_failure(exc: BaseException, broker: BrokerConfig) -> Failure:
    """A socket or TLS error of a connection attempt, explained (module docstring)."""
    where = redact_url(broker.url)
    if isinstance(exc, ssl.SSLCertVerificationError):
        trusted = f"broker.ca_file {broker.ca_file!r}" if broker.ca_file else \
            "the system's CAs (broker.ca_file is empty)"
        return Failure(f"the certificate of {where} is not trusted by {trusted}: "
                       f"{exc.verify_message or exc}", True)
    if isinstance(exc, ssl.SSLError):
        if broker.cert_file:
            why = f"check broker.cert_file {broker.cert_file!r} and broker.key_file"
        else:
            why = "the broker may require a client certificate (broker.cert_file, key_file)"
        return Failure(f"the TLS handshake with {where} failed ({exc.reason or exc}): {why}",
                       True)
    if isinstance(exc, ConnectionRefusedError):
        return Failure(f"nothing accepts connections at {where} (broker.url)", False)
    return Failure(f"cannot reach {where} (broker.url): {exc}", False)


def explain_refusal(reason: object, broker: BrokerConfig) -> Failure:
    """A CONNACK refusal (paho reason code) explained: a refused login names the account."""
    text = str(reason)
    if text.lower() in _LOGIN_REFUSALS:
        who = (f"broker.username {broker.username!r}" if broker.username else
               "an anonymous client (broker.username is empty)")
        how = (f"with the password from {ENV_MQTT_PASSWORD}" if broker.password else
               f"without a password ({ENV_MQTT_PASSWORD} is not set)")
        if broker.cert_file:
            how += f" and the certificate broker.cert_file {broker.cert_file!r}"
        return Failure(f"{redact_url(broker.url)} refused the login of {who} {how}: {text}",
                       True)
    return Failure(f"{redact_url(broker.url)} refused the connection: {text}", False)
