"""``jinmei broker config``, and the broker options every MQTT command shares.

:func:`broker_options` adds ``--broker URL --ca-file --cert-file --key-file --username`` to a
command; :func:`broker_from_args` turns them, over the ``[broker]`` of ``--config`` (when the
command has one), into the :class:`~config.model.BrokerConfig` that ``config.broker`` connects
with. The password is only ever read from ``JINMEI_MQTT_PASSWORD``; a URL with a password in it
is refused (exit 2) with a message saying so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from config.broker import with_url
from config.loader import ENV_MQTT_PASSWORD, load_deployment
from config.model import BrokerConfig
from jinmei.cli import config_option, formatter

__all__ = ["broker_from_args", "broker_options", "register"]


def broker_options(parser: argparse.ArgumentParser, *, url_help: str) -> None:
    """The connection options of a command that talks to the broker."""
    group = parser.add_argument_group(
        "broker", f"TLS and login (over [broker] of --config); the password only from "
                  f"{ENV_MQTT_PASSWORD}")
    group.add_argument("--broker", metavar="URL", help=url_help)
    group.add_argument("--ca-file", metavar="PEM", help="CA that signed the broker's certificate")
    group.add_argument("--cert-file", metavar="PEM", help="client certificate (login by "
                                                          "certificate)")
    group.add_argument("--key-file", metavar="PEM", help="the client certificate's key")
    group.add_argument("--username", metavar="NAME", help="broker account")


def broker_from_args(args: argparse.Namespace) -> BrokerConfig:
    """The broker settings of ``--config`` (if the command has it) with the flags over them."""
    config = getattr(args, "config", None)
    base = load_deployment(config).broker if config else \
        BrokerConfig(password=os.environ.get(ENV_MQTT_PASSWORD, ""))
    flags = {key: getattr(args, key) for key in ("ca_file", "cert_file", "key_file", "username")
             if getattr(args, key, None)}
    base = dataclasses.replace(base, **flags)
    return with_url(base, args.broker) if args.broker else base


def register(sub: Any) -> None:
    """Add ``broker config`` to the ``jinmei`` subcommands."""
    broker = sub.add_parser("broker", formatter_class=formatter,
                            help="generate the MQTT broker's configuration",
                            description="Mosquitto configuration generated from the deployment.")
    what = broker.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    config = what.add_parser(
        "config", formatter_class=formatter, help="write mosquitto.conf, acl, passwd.accounts",
        description="Write a Mosquitto configuration for the deployment into DIR: TLS listeners "
                    "only (a\nplain one only with --plain-listener), no anonymous access, an ACL "
                    "in which every\naccount may do only what its role allows ([broker] username "
                    "and [[broker.accounts]]),\nand the names of the accounts to give passwords "
                    "with mosquitto_passwd.\njinmei's own account logs in on a listener of its own "
                    "(--own-port); on the others\nthe client id is the account name, so no "
                    "account can take one of jinmei's.")
    config_option(config)
    config.add_argument("--out", required=True, type=Path, metavar="DIR")
    config.add_argument("--port", type=int, default=8883,
                        help="TLS listener of gateways, dispatchers and regulators, login by user "
                             "name and password (8883)")
    config.add_argument("--cert-port", type=int, default=8884,
                        help="their TLS listener, login by client certificate (8884; 0: none)")
    config.add_argument("--own-port", type=int, default=8885,
                        help="jinmei's own TLS listener, login by user name and password "
                             "(8885)")
    config.add_argument("--own-cert-port", type=int, metavar="PORT",
                        help="jinmei's own TLS listener, login by client certificate (needs "
                             "--own-ca-file)")
    config.add_argument("--own-ca-file", default="", metavar="PEM",
                        help="CA that signs jinmei's client certificates and nothing else")
    config.add_argument("--plain-listener", type=int, metavar="PORT",
                        help="also listen unencrypted on 127.0.0.1:PORT (jinmei's account only)")
    config.add_argument("--bind", default="", metavar="ADDRESS",
                        help="address of the TLS listeners (default: all)")
    config.add_argument("--ca-file", default="/etc/mosquitto/certs/ca.crt", metavar="PEM",
                        help="CA of the server and client certificates")
    config.add_argument("--server-cert", default="/etc/mosquitto/certs/server.crt",
                        metavar="PEM")
    config.add_argument("--server-key", default="/etc/mosquitto/certs/server.key", metavar="PEM")
    config.add_argument("--data-dir", default="/var/lib/mosquitto/", metavar="DIR",
                        help="persistence location")
    config.add_argument("--user", default="mosquitto", metavar="NAME",
                        help="the user Mosquitto drops to when started as root")
    config.set_defaults(func=cmd_broker_config)


def cmd_broker_config(args: argparse.Namespace) -> int:
    from jinmei.broker_config import ListenerPlan, broker_files

    deployment = load_deployment(args.config)
    plan = ListenerPlan(port=args.port, cert_port=args.cert_port or None,
                        own_port=args.own_port, own_cert_port=args.own_cert_port or None,
                        own_ca_file=args.own_ca_file,
                        plain_port=args.plain_listener, bind=args.bind, ca_file=args.ca_file,
                        server_cert=args.server_cert, server_key=args.server_key,
                        data_dir=args.data_dir, run_as=args.user)
    generated = broker_files(deployment, plan, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generated.files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(generated.instructions)
    if args.plain_listener:
        print(f"warning: port {args.plain_listener} is unencrypted (127.0.0.1, jinmei's account "
              "only)",
              file=sys.stderr)
    return 0
