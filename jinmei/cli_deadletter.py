"""``jinmei deadletter list|export``: what jinmei set aside instead of storing.

The dead letters live in ``<state_dir>/deadletter.db`` (:mod:`ingest.deadletter`): messages
quarantined after crashing the service, batches the store refused for good, spool chunks
InfluxDB refused. ``list`` shows them (readable while the service runs); ``export FILE`` writes
the MQTT messages among them (quarantined and store-refused) as a recording that ``jinmei
replay FILE --broker URL`` sends again once the cause is fixed.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from config.loader import load_deployment
from ingest.deadletter import DeadLetters, Origin
from jinmei.cli import config_option, formatter
from simulators.feed import Message
from simulators.recording import writer

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``deadletter`` to the ``jinmei`` subcommands."""
    dead = sub.add_parser("deadletter", formatter_class=formatter,
                          help="messages and batches set aside instead of stored",
                          description="What jinmei set aside instead of storing, kept in "
                                      "<state_dir>/deadletter.db: messages quarantined\n"
                                      "after crashing the service, batches the store refused "
                                      "for good, spool chunks\nInfluxDB refused. 'export' "
                                      "writes the MQTT messages among them as a recording\n"
                                      "that 'jinmei replay FILE --broker URL' sends again once "
                                      "the cause is fixed.")
    acts = dead.add_subparsers(dest="deadletter_command", required=True, metavar="ACTION")
    listing = acts.add_parser("list", formatter_class=formatter,
                              help="one line per dead letter, oldest first")
    config_option(listing)
    listing.add_argument("--origin", choices=get_args(Origin),
                         help="only those set aside this way")
    listing.set_defaults(func=cmd_list)
    export = acts.add_parser("export", formatter_class=formatter,
                             help="write the dead MQTT messages as a recording for replay")
    config_option(export)
    export.add_argument("out", type=Path, metavar="FILE", help="recording (.jsonl or .jsonl.gz)")
    export.set_defaults(func=cmd_export)


def _open(args: argparse.Namespace) -> DeadLetters:
    deployment = load_deployment(args.config)
    return DeadLetters(Path(deployment.ingest.state_dir) / "deadletter.db")


def cmd_list(args: argparse.Namespace) -> int:
    letters = _open(args)
    try:
        dead = letters.list(args.origin)
    finally:
        letters.close()
    for d in dead:
        when = datetime.fromtimestamp(d.at_ms / 1000).astimezone().isoformat(timespec="seconds")
        print(f"{d.id:>6}  {when}  {d.origin:<10}  {d.topic or '-'}  {len(d.body):,} bytes  "
              f"{d.reason}")
    print(f"{len(dead)} dead letters")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    letters = _open(args)
    try:
        messages = [d for d in letters.list() if d.origin != "spool"]
    finally:
        letters.close()
    recording = writer(args.out)
    try:
        for d in messages:
            recording.write(Message(d.at_ms, d.topic, d.body))
    finally:
        recording.close()
    print(f"{len(messages)} messages written to {args.out}")
    return 0
