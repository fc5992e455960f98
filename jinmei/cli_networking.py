"""``jinmei networking status|check|export``: the regulator networking files (networking/).

``status`` reads the upload queue in ``<state_dir>/networking/`` (also while the service runs);
``check FILE...`` validates any mine's files and exits 1 on any finding; ``export`` writes the
definition files (CDDY, FZDY) of every mine into the archive and the upload queue now (and
remembers the configuration, so the service's next start does not send them again).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from config.loader import deployment_limits, load_deployment
from jinmei.cli import config_option, formatter
from networking.queue import UploadQueue
from networking.validate import check_files
from networking.worker import queue_definitions

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``networking`` to the ``jinmei`` subcommands."""
    net = sub.add_parser("networking", formatter_class=formatter,
                         help="regulator data files (MT/T 1201.1): queue, check, export")
    acts = net.add_subparsers(dest="networking_command", required=True, metavar="ACTION")
    status = acts.add_parser("status", formatter_class=formatter,
                             help="queue depth, last success and last error of the uploads")
    config_option(status)
    status.set_defaults(func=cmd_status)
    check = acts.add_parser("check", formatter_class=formatter,
                            help="validate networking files (any mine's); exit 1 on a finding")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(func=cmd_check)
    export = acts.add_parser("export", formatter_class=formatter,
                             help="queue the definition files (CDDY, FZDY) of every mine now")
    config_option(export)
    export.set_defaults(func=cmd_export)


def _queue(args: argparse.Namespace) -> UploadQueue:
    deployment = load_deployment(args.config)
    return UploadQueue(Path(deployment.ingest.state_dir) / "networking",
                       retry_max_s=deployment.networking.retry_max_s)


def _when(at: float | None) -> str:
    return "never" if at is None else datetime.fromtimestamp(at).isoformat(" ", "seconds")


def cmd_status(args: argparse.Namespace) -> int:
    queue = _queue(args)
    status = queue.status()
    queue.close()
    print(f"queued (not yet confirmed): {status.pending}")
    print(f"uploaded: {status.uploaded}")
    print(f"last success: {_when(status.last_success)}")
    error = status.last_error
    print(f"last error: {'none' if error is None else f'{_when(error[0])} {error[2]}'}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    findings = check_files(args.files)
    for finding in findings:
        print(finding)
    print(f"{len(args.files)} files checked: {len(findings)} findings")
    return 1 if findings else 0


def cmd_export(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.config)
    kinds = deployment_limits(deployment).kinds
    queue = UploadQueue(Path(deployment.ingest.state_dir) / "networking")
    for file in queue_definitions(deployment, kinds, queue, time.time()):
        print(queue.archive / file.name)
    queue.close()
    return 0
