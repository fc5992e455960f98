"""``jinmei users add NAME --role R [--mines a,b] [--config FILE]``: a console account.

The password is asked twice at a terminal (getpass: not echoed, not in the shell history), or
read from the first line of stdin when stdin is not a terminal (scripts, provisioning). The
command prints the account as a ``[[console.users]]`` TOML block with the scrypt hash only —
it never edits the deployment file (its comments and layout are the operator's): append it
with ``>> deploy.toml`` or paste it, then reload (``systemctl reload jinmei`` / SIGHUP) or
restart. With ``--config`` the mines are checked against that deployment and a name already
there is refused.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from config.errors import UsageError
from config.loader import load_deployment
from config.model import ROLES
from jinmei.cli import config_option, formatter
from jinmei.console.accounts import hash_password

__all__ = ["register"]

MIN_PASSWORD = 8  # NIST SP 800-63B §5.1.1.2: at least 8 characters for a chosen secret


def register(sub: Any) -> None:
    users = sub.add_parser("users", formatter_class=formatter, help="console accounts")
    acts = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = acts.add_parser("add", formatter_class=formatter,
                          help="print a [[console.users]] entry with the password's hash",
                          description="Print a console account as TOML for the deployment "
                                      "file.\nThe password is asked at a terminal, or read "
                                      "from stdin's first line.")
    add.add_argument("name", help="login name (letters, digits, '.', '_', '-')")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="dispatcher: acknowledge, notes, silences of --mines; regulator: "
                          "read-only; admin: everything")
    add.add_argument("--mines", default="", help="comma-separated mine ids (default: all; a "
                                                 "dispatcher must name theirs)")
    config_option(add)
    add.set_defaults(func=cmd_add)


def _password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("password", "the two entries differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def cmd_add(args: argparse.Namespace) -> int:
    mines = [m.strip() for m in args.mines.split(",") if m.strip()]
    if args.role == "dispatcher" and not mines:
        raise UsageError("--mines", "a dispatcher needs the mines they dispatch, e.g. "
                                    "--mines dayan")
    if not all(c.isalnum() or c in "._-" for c in args.name) or not 0 < len(args.name) <= 64:
        raise UsageError("NAME", f"expected letters, digits, '.', '_' or '-', got {args.name!r}")
    deployment = load_deployment(args.config)
    known = [m.id for m in deployment.mines]
    for mine in mines:
        if mine not in known:
            raise UsageError("--mines", f"no mine {mine!r}; known: {', '.join(known)}")
    if any(u.name == args.name for u in deployment.console.users):
        raise UsageError("NAME", f"user {args.name!r} is already in {deployment.source_file}")
    password = _password()
    if len(password) < MIN_PASSWORD:
        raise UsageError("password", f"at least {MIN_PASSWORD} characters, please")
    lines = ["[[console.users]]", f"name = {json.dumps(args.name)}",
             f"role = {json.dumps(args.role)}"]
    if mines:
        lines.append(f"mines = {json.dumps(mines)}")
    lines.append(f"password_hash = {json.dumps(hash_password(password))}")
    print("\n".join(lines))
    return 0
