"""The ``jinmei`` command: one entry point with a subcommand per job.

    jinmei run        the service: MQTT telemetry in, readings stored, alerts out
    jinmei demo       everything in one process on embedded defaults (no set-up needed)
    jinmei simulate   play a simulated mine feed to a broker or into a file
    jinmei config     check configuration files, or show the resolved sensor registry

Global options: ``--log-format text|json`` (jinmei/logs.py), ``--version [FILE]`` (the version
and the config hash of a deployment), ``-v``.

Exit codes: 0 success (also when the reader of the output went away, as ``| head`` does),
1 the job failed (e.g. the demo saw no alert, a service could not be reached), 2 bad
configuration or arguments (the message names the file and key, or the option), 3 ``jinmei
run`` stopped itself because a worker thread died or stalled (jinmei.supervisor), or a worker
process of ``[ingest] workers`` could not be kept alive (jinmei.workers): the supervisor
(systemd) should start it again.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.broker import with_url
from config.errors import ConfigError, JinmeiError, UsageError
from config.loader import check_file, load_deployment, registry_json
from config.model import Deployment
from jinmei.logs import LOG_FORMATS, setup_logging

if TYPE_CHECKING:
    from alerts.wire import Alert

__all__ = ["config_option", "formatter", "main"]

log = logging.getLogger("jinmei")

# Further subcommands, each a module with ``register(subparsers)`` that adds its parsers and
# sets ``func`` on them (one module per concern keeps this file small).
EXTENSIONS: tuple[str, ...] = ("jinmei.cli_simulate", "jinmei.cli_dashboards", "jinmei.cli_record",
                               "jinmei.cli_alerts", "jinmei.cli_networking",
                               "jinmei.cli_deadletter", "jinmei.cli_broker", "jinmei.cli_users")


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jinmei", formatter_class=formatter,
        description="jinmei (金煤) — coal-mine safety monitoring pipeline of the Golden Coal "
                    "Project.\nMine telemetry over MQTT → statutory limit checks → alerts to "
                    "dispatchers and regulators.",
        epilog="Run 'jinmei COMMAND --help' for the options of each command.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                        help="text (default): one line per record, times with their offset; "
                             "json: one object per line, for log shippers")
    parser.add_argument("--version", action=VersionAction, nargs="?", metavar="FILE",
                        help="print the version and the config hash of the deployment FILE "
                             "(default: the shipped one), then exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", formatter_class=formatter, help="run the monitoring service",
        description="Run the service: subscribe to jinmei/+/telemetry/#, store every accepted "
                    "reading,\ncheck it against its statutory limits, and publish alerts on "
                    "jinmei/<mine>/alerts.\nRejected input is republished with its reason on "
                    "jinmei/<mine>/rejects. Stop with Ctrl-C\nor SIGTERM: the batch in hand is "
                    "finished and acknowledged first. SIGHUP re-reads the\nconfiguration "
                    "and swaps it in (refused, with the file and key, if it is broken).")
    config_option(run)
    run.add_argument("--broker", metavar="URL", help="MQTT broker, e.g. mqtt://127.0.0.1:1883 "
                     "(overrides [broker] url)")
    run.add_argument("--store", metavar="URL", help="store, e.g. sqlite:///var/jinmei/readings.db "
                     "or influxdb://host:8086?org=O&bucket=B (overrides [store] url)")
    run.add_argument("--mines", metavar="A,B", help="run only these mines (ids of the "
                     "configuration), e.g. to spread mines over machines")
    # Internal: set by the parent of `[ingest] workers` on the command of worker K.
    run.add_argument("--worker", type=int, metavar="K", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", formatter_class=formatter, help="run a self-contained demonstration",
        description="Run everything in one process with no set-up: an embedded MQTT broker, "
                    "the two pilot\nmines (Dayan 大雁, Qipanjing 棋盘井), SQLite storage in a "
                    "fresh folder under var/demo,\nand simulators playing a methane rise past "
                    "the power-off limit and back. Alerts are\nprinted as they happen; a "
                    "summary per mine closes the run.")
    demo.add_argument("--duration", type=float, default=20.0, metavar="S",
                      help="wall-clock seconds to run (default 20)")
    demo.add_argument("--speed", type=float, default=30.0, metavar="X",
                      help="feed time runs X times faster than real time (default 30)")
    demo.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    demo.add_argument("--workdir", type=Path, default=Path("var/demo"), metavar="DIR",
                      help="where each run's folder is made (default var/demo)")
    from jinmei.cli_broker import broker_options  # that module builds on this one

    broker_options(demo, url_help="an external broker instead of the embedded one, e.g. "
                                  "mqtts://broker:8883")
    demo.set_defaults(func=cmd_demo)

    cfg = sub.add_parser("config", formatter_class=formatter,
                         help="check configuration or show the sensor registry",
                         description="Check configuration files, or print the resolved "
                                     "sensor registry.")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser(
        "check", formatter_class=formatter, help="validate a configuration file",
        description="Validate a deployment, mine or limits file (default: the shipped "
                    "deployment and\neverything it names). Prints a summary, or the first "
                    "problem with its file and key.")
    check.add_argument("file", nargs="?", type=Path, help="file to check")
    check.set_defaults(func=cmd_config_check)
    show = cfg_sub.add_parser(
        "show", formatter_class=formatter, help="print the resolved sensor registry",
        description="Print every sensor with its mine, kind, location, unit, range and "
                    "effective limits\n(and each limit's source).")
    config_option(show)
    show.add_argument("--json", action="store_true", help="machine-readable JSON")
    show.set_defaults(func=cmd_config_show)
    for module in EXTENSIONS:
        importlib.import_module(module).register(sub)
    return parser


class VersionAction(argparse.Action):
    """``--version [FILE]``: the package version and the config hash of the deployment (the
    same hash the alert record, the networking files and /metrics carry)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        from jinmei.metrics import jinmei_version

        try:
            deployment = load_deployment(values)
        except ConfigError as exc:
            print(f"jinmei {jinmei_version()}\nconfiguration error: {exc}", file=sys.stderr)
            parser.exit(2)
        print(f"jinmei {jinmei_version()}\nconfig {deployment.source_file} "
              f"hash {deployment.config_hash}")
        parser.exit(0)


def config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", type=Path, metavar="FILE",
                        help="deployment file (default: the shipped pilot mines, "
                             "config/jinmei.example.toml)")


def cmd_run(args: argparse.Namespace) -> int:
    from jinmei.parent import parent_server
    from jinmei.reload import describe_changes
    from jinmei.strays import StrayWatcher
    from jinmei.workers import WorkerParent, shares, worker_argv

    deployment = _run_deployment(args)
    if args.worker is not None:
        return _serve(deployment, args)
    workers = shares(deployment)
    n = len(workers)
    if n == 1:
        return _serve(deployment, args)
    given = [*(["-v"] if args.verbose else []),
             *(["--log-format", args.log_format] if getattr(args, "log_format", None) else []),
             "run",
             *(["--config", str(args.config)] if args.config else []),
             *(["--broker", args.broker] if args.broker else []),
             *(["--store", args.store] if args.store else [])]
    log.info("jinmei running %d workers for %d mines", n, len(deployment.mines))
    single = Path(deployment.ingest.state_dir) / "alerts.db"
    if single.exists():
        log.warning("%s holds the state of a single-process run (open episodes, notifications "
                    "owed); workers keep theirs in %s/worker-<k> and do not read it: run once "
                    "with [ingest] workers = 1 to finish it", single, single.parent)
    running = [deployment]  # the parent's console reads its accounts; SIGHUP rereads them

    def reload() -> bool:
        try:
            new = _run_deployment(args)
        except (ConfigError, UsageError) as exc:
            log.error("reload refused: %s — the workers keep running on config hash %s", exc,
                      running[0].config_hash)
            return False
        if new.config_hash == running[0].config_hash:
            log.info("reload: configuration unchanged (config hash %s); the workers run on",
                     new.config_hash)
            return False
        log.info("reload: %s; starting every worker again on config hash %s (open episodes "
                 "of removed sensors are resolved as removed from configuration)",
                 describe_changes(running[0], new), new.config_hash)
        running[0] = new
        return True

    parent = WorkerParent(workers, lambda k, mines: worker_argv(given, k, mines),
                          endpoints=bool(deployment.http.listen), on_reload=reload,
                          stall_s=deployment.ingest.stall_s)
    # The whole configuration here: telemetry of a mine no worker serves is refused by the
    # parent (jinmei.strays), as one process refuses it. With --mines, other machines serve
    # the other mines: nothing is stray, as in one process with --mines.
    strays = None if args.mines else StrayWatcher(deployment)
    server = (parent_server(lambda: running[0], parent, strays) if deployment.http.listen
              else None)
    if server is not None:
        server.start()  # first: an unusable address stops the start before any worker
        log.info("operator endpoint of %d workers on port %d", n, server.port)
    if strays is not None:
        strays.start()
    try:
        return parent.run()
    finally:
        if strays is not None:
            strays.stop()
        if server is not None:
            server.stop()


def _run_deployment(args: argparse.Namespace) -> Deployment:
    """The deployment ``jinmei run`` serves: the files, ``--broker``/``--store`` over them,
    only ``--mines`` if given, a worker's own share of state when ``--worker`` (hidden)."""
    from jinmei.workers import as_worker, select_mines

    deployment = overridden(load_deployment(args.config), args)
    if args.mines:
        deployment = select_mines(deployment, args.mines)
    return deployment if args.worker is None else as_worker(deployment, args.worker)


def _serve(deployment: Deployment, args: argparse.Namespace) -> int:
    """The service in this process until SIGTERM/SIGINT, or until its supervision fails (exit
    3). SIGHUP reloads the files in place; a worker of a parent (``--worker``) stops on it
    instead (the parent starts it again on the new files), and when its parent is gone."""
    from jinmei.http import WorkerEndpoint
    from jinmei.pipeline import PipelineStats
    from jinmei.reload import reload_service
    from jinmei.service import Service  # imported late: `jinmei config` needs no MQTT stack
    from jinmei.supervisor import Failure
    from jinmei.workers import beat, lost_from_environment, telemetry_topics

    worker = args.worker is not None
    parent = os.getppid()
    topic = telemetry_topics(deployment, not args.mines and not worker)
    stop, reload = threading.Event(), threading.Event()
    if worker:
        beat()  # the parent's sign that this process is not frozen
    service = Service(deployment, on_alert=log_alert, on_failure=lambda failure: stop.set(),
                      topic=topic, endpoint=WorkerEndpoint.from_environment() if worker else None)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: (stop if worker else reload).set())
    service.start()
    # A previous run that ended without saying so: its parent knows best why (a freeze it
    # ended), else the last sign it left in state_dir (jinmei.lastsign) says since when.
    lost = (lost_from_environment() if worker else None) or service.previous_run_lost()
    if lost is not None:
        service.report_lost(*lost)
    # Settings the broker refuses (an untrusted certificate, a wrong password) cannot come
    # right by waiting: say so and stop, rather than start "running" deaf.
    if refusal := wait_for_refusal(service, stop, REFUSAL_WAIT_S):
        service.stop()
        raise ConfigError(deployment.source_file, "broker", refusal)
    try:
        while not stop.wait(0.2):
            if not service.supervisor.alive() and service.failure is None:
                # the watcher of the watcher
                service.fail(Failure("jinmei-supervisor", "worker_dead",
                                     "the supervisor thread has ended", 0.0))
                break
            if worker and os.getppid() != parent:
                # Killed (-9) or crashed: nothing would restart this worker, and its mines go
                # unwatched until something restarts the whole — say so, as any failure.
                service.fail(Failure("jinmei-parent", "worker_dead", "the workers' parent "
                                     "process is gone (killed or crashed); this worker stops",
                                     0.0))
                break
            if reload.is_set():
                # SIGHUP: re-read the files and swap them in (jinmei/reload.py) from this
                # thread, so the ingest worker only pauses for the swap itself.
                reload.clear()
                log.info("SIGHUP: reloading %s", deployment.source_file)
                reload_service(service, lambda: _run_deployment(args), stop)
    finally:
        if service.failure is not None:
            _exit_failed()
        log.info("stopping: finishing the batch in hand")
        service.stop()
        log.info("stopped; since start: %s", service.pipeline.stats.since(PipelineStats()))
    return 0


def overridden(deployment: Deployment, args: argparse.Namespace) -> Deployment:
    """The deployment with ``--broker`` and ``--store`` applied."""
    if args.broker:  # checked: a password in it is refused; a user in it is the user name
        deployment = dataclasses.replace(deployment, broker=with_url(deployment.broker,
                                                                     args.broker))
    if args.store:
        deployment = dataclasses.replace(
            deployment, store=dataclasses.replace(deployment.store, url=args.store))
    return deployment


def log_alert(alert: Alert) -> None:
    """An alert transition as one log record: both languages on one line, and the fields as
    ``alert`` for the JSON format."""
    log.warning("ALERT %s %s %s %s/%s: %s", alert.state, alert.severity, alert.rule, alert.mine,
                alert.sensor, " | ".join(alert.message.splitlines()),
                extra={"alert": {"id": alert.id, "mine": alert.mine, "sensor": alert.sensor,
                                 "rule": alert.rule, "severity": alert.severity,
                                 "state": alert.state, "value": alert.value,
                                 "limit": alert.limit, "ts": alert.ts}})


def _exit_failed() -> None:
    """Leave at once with EXIT_FAILED: a hung thread cannot be joined, and the interpreter's
    shutdown could wait on a lock it holds. The failure was reported (log, status, alert)."""
    from jinmei.supervisor import EXIT_FAILED

    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_FAILED)


REFUSAL_WAIT_S = 10.0  # how long `jinmei run` waits at start for the broker to refuse it


def wait_for_refusal(service: Any, stop: threading.Event, timeout_s: float) -> str | None:
    """The broker's refusal of the service's settings, if it comes before the subscription."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline:
        if service.source.refusal:
            return str(service.source.refusal)
        if service.source.wait_subscribed(0.1):
            return None
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    from jinmei.cli_broker import broker_from_args
    from jinmei.demo import run_demo

    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)  # the console is for the alerts
    broker = broker_from_args(args) if args.broker else None
    summary = run_demo(args.duration, args.speed, args.workdir, args.seed, broker=broker)
    print(summary.render())
    if not summary.ok:
        print("demo FAILED: not every reading was stored, or no alert fired and resolved",
              file=sys.stderr)
        return 1
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    if args.file is None:
        deployment = load_deployment(None)
        print(_deployment_summary(deployment))
    else:
        print(check_file(args.file))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.config)
    data = registry_json(deployment)
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(f"{'mine':<10} {'sensor':<10} {'kind':<11} {'location':<22} {'unit':<4} "
          f"{'alarm':>6} {'power-off':>9} {'restore':>7}  place")
    for s in data["sensors"]:
        lim = s["limits"]
        print(f"{s['mine']:<10} {s['id']:<10} {s['kind']:<11} {s['location']:<22} "
              f"{s['unit']:<4} {_num(lim['alarm_high'] or lim['alarm_low']):>6} "
              f"{_num(lim['power_off']):>9} {_num(lim['restore']):>7}  {s['place']}")
    return 0


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _deployment_summary(deployment: Deployment) -> str:
    lines = [f"{deployment.source_file}: OK — {len(deployment.registry)} sensors, "
             f"config hash {deployment.config_hash}"]
    lines += [f"  {m.id} ({m.name}): {len(m.sensors)} sensors on {len(m.substations)} "
              f"substations" for m in deployment.mines]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, args.verbose)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`jinmei alerts history | head`): it has what it wanted. Point
        # stdout at /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except JinmeiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
