"""``jinmei networking status|check|export``: the regulator networking files (networking/).

``status`` reads the upload queue in ``<state_dir>/networking/`` (also while the service runs);
``check FILE...`` validates any mine's files and exits 1 on any finding; ``export`` writes the
definition files (CDDY, FZDY) of every mine into the archive and the upload queue now (and
remembers the configuration, so the service's next start does not send them again).

With ``[ingest] workers`` each worker writes and uploads its own mines' files from its own
queue, ``<state_dir>/worker-<k>/networking/`` (jinmei.workers): ``status`` then shows every
worker's queue and their sum, and ``export`` queues each mine's definitions in the queue of the
worker that uploads them — the assignment ``jinmei run`` computes on this machine (a queue no
process reads would say "queued" of files that are never sent).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from config.loader import deployment_limits, load_deployment
from config.model import Deployment
from jinmei.cli import config_option, formatter
from jinmei.workers import as_worker, select_mines, shares
from networking.queue import QueueStatus, UploadQueue
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


def _shares(deployment: Deployment) -> list[tuple[str, Deployment]]:
    """(who, the part of the deployment it serves) for every process that keeps an upload
    queue: the one process, or each worker of ``jinmei run`` on this machine."""
    processes = shares(deployment)
    if len(processes) == 1:
        return [("", deployment)]
    return [(f"worker {k} ({', '.join(share)})",
             as_worker(select_mines(deployment, ",".join(share)), k))
            for k, share in enumerate(processes)]


def _queue(deployment: Deployment) -> UploadQueue:
    return UploadQueue(Path(deployment.ingest.state_dir) / "networking",
                       retry_max_s=deployment.networking.retry_max_s)


def _when(at: float | None) -> str:
    """A time for a person: the machine's local time with its offset."""
    return ("never" if at is None
            else datetime.fromtimestamp(at).astimezone().isoformat(" ", "seconds"))


def _print_status(status: QueueStatus, indent: str = "") -> None:
    print(f"{indent}queued (not yet confirmed): {status.pending}")
    print(f"{indent}uploaded: {status.uploaded}")
    print(f"{indent}last success: {_when(status.last_success)}")
    error = status.last_error
    print(f"{indent}last error: {'none' if error is None else f'{_when(error[0])} {error[2]}'}")


def cmd_status(args: argparse.Namespace) -> int:
    shares = _shares(load_deployment(args.config))
    statuses = []
    for who, deployment in shares:
        queue = _queue(deployment)
        statuses.append(queue.status())
        queue.close()
        if who:
            print(f"{who}:")
            _print_status(statuses[-1], "  ")
    if len(statuses) > 1:
        print("all workers:")
    successes = [s.last_success for s in statuses if s.last_success is not None]
    errors = [s.last_error for s in statuses if s.last_error is not None]
    _print_status(QueueStatus(sum(s.pending for s in statuses),
                              sum(s.uploaded for s in statuses),
                              max(successes, default=None),
                              max(errors, default=None)), "  " if len(statuses) > 1 else "")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    findings = check_files(args.files)
    for finding in findings:
        print(finding)
    print(f"{len(args.files)} files checked: {len(findings)} findings")
    return 1 if findings else 0


def cmd_export(args: argparse.Namespace) -> int:
    whole = load_deployment(args.config)
    kinds = deployment_limits(whole).kinds
    for _who, deployment in _shares(whole):
        queue = _queue(deployment)
        for file in queue_definitions(deployment, kinds, queue, time.time()):
            print(queue.archive / file.name)
        queue.close()
    return 0
