"""``jinmei alerts history|list|ack|silence|unsilence`` and ``jinmei report daily``.

They work on the alerts state file of the deployment (``<state_dir>/alerts.db``), also while
the service runs (SQLite WAL; the service rereads silences and acknowledgements about once a
second). Times: ``--since`` / ``--start`` / ``--date`` are read in the mine's local time
(Asia/Shanghai) unless they carry an offset; epoch ms is accepted too. Every time printed —
text, CSV and JSON — is ISO 8601 in the mine's zone with its offset
(``2026-11-25T22:26:21+08:00``); the alert record and the wire keep epoch ms UTC.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from alerts.db import StateDB
from alerts.outbox import Outbox
from alerts.record import AlertRecord
from alerts.silences import Matchers, SilenceBook
from alerts.wire import Alert, encode_alert
from config.errors import JinmeiError, UsageError
from config.loader import LOCAL_TZ, load_deployment
from config.model import Deployment
from jinmei.cli import config_option, formatter

__all__ = ["SENSOR_RULES", "check_matchers", "parse_date", "parse_duration", "parse_when",
           "register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# Most severe first: what a dispatcher must look at before anything else.
_SEVERITY_ORDER = {"critical": 0, "alarm": 1, "warning": 2}
# The alert contract's rules (design.md), the ones a silence may name.
SENSOR_RULES = ("limit_alarm", "limit_power_off", "trend", "no_data", "sensor_fault",
                "feed_fault")
_RULES = (*SENSOR_RULES, "monitoring_offline", "store_fault")
# Time columns of an alert transition, its acknowledgement and its cause and action (entered in
# the console: alert_cause of the record), printed as local times.
_TIME_FIELDS = ("started_at", "ts", "ended_at", "acknowledged_at", "entered_at")
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,6})?)([smhd])", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EPOCH_MS = re.compile(r"\d{1,15}", re.ASCII)  # 15 digits reach past the year 9999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last instant a datetime can show


def register(sub: Any) -> None:
    """Add ``alerts`` and ``report`` to the ``jinmei`` subcommands."""
    alerts = sub.add_parser("alerts", formatter_class=formatter, help="alert record, "
                            "acknowledgements and silences",
                            description="Read the alert record; acknowledge alerts; silence "
                                        "and unsilence them.")
    acts = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    history = acts.add_parser("history", formatter_class=formatter,
                              help="export every transition (报警记录 / 断电记录)")
    history.add_argument("--mine", help="one mine only")
    history.add_argument("--since", help="from this time (local, RFC 3339 or epoch ms)")
    history.add_argument("--format", choices=("csv", "json"), default="csv")
    history.set_defaults(func=cmd_history)
    listing = acts.add_parser("list", formatter_class=formatter,
                              help="open and pending alerts, silences, undelivered notifications")
    listing.set_defaults(func=cmd_list)
    ack = acts.add_parser("ack", formatter_class=formatter, help="acknowledge an alert episode")
    ack.add_argument("id", help="episode id")
    ack.add_argument("--by", required=True, help="who acknowledges")
    ack.add_argument("--note", default="", help="what is being done")
    ack.set_defaults(func=cmd_ack)
    silence = acts.add_parser("silence", formatter_class=formatter,
                              help="hold back notifications of matching alerts for a while",
                              description="Silence matching alerts (empty matchers match all). "
                                          "They are still recorded,\nand a methane power-off is "
                                          "never silenced.")
    for key in ("mine", "sensor", "kind", "rule", "severity", "area"):
        silence.add_argument(f"--{key}", default="")
    silence.add_argument("--duration", required=True, help="e.g. 30m, 2h, 1d")
    silence.add_argument("--start", help="when it starts (default now)")
    silence.add_argument("--by", required=True, help="who")
    silence.add_argument("--reason", required=True, help="why (maintenance, calibration …)")
    silence.set_defaults(func=cmd_silence)
    unsilence = acts.add_parser("unsilence", formatter_class=formatter, help="end a silence now")
    unsilence.add_argument("id", help="silence id")
    unsilence.set_defaults(func=cmd_unsilence)
    report = sub.add_parser("report", formatter_class=formatter, help="regulator reports")
    kinds = report.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    day = kinds.add_parser("daily", formatter_class=formatter, help="one mine's day per sensor",
                           description="Per sensor: max/min/mean, alarm and power-off counts "
                                       "and durations, faults and no-data\ntime; Markdown on "
                                       "stdout, CSV and a methane PNG with --out.")
    day.add_argument("--mine", required=True)
    day.add_argument("--date", required=True, help="YYYY-MM-DD, the mine's local day")
    day.add_argument("--out", type=Path, metavar="DIR", help="also write CSV and PNG here")
    day.set_defaults(func=cmd_daily)
    for parser in (history, listing, ack, silence, unsilence, day):
        config_option(parser)


def _state(deployment: Deployment) -> Path:
    return Path(deployment.ingest.state_dir) / "alerts.db"


def _states(deployment: Deployment) -> list[Path]:
    """Every alerts state file of the deployment: ``state_dir``'s and, with ``[ingest]
    workers``, each worker's (``state_dir/worker-<k>``, jinmei.workers) — those present."""
    base = Path(deployment.ingest.state_dir)
    return [p for p in (base / "alerts.db", *sorted(base.glob("worker-*/alerts.db")))
            if p.exists()]


class _Records:
    """The alert records of every state file, read as one (a mine's episodes are in one)."""

    def __init__(self, paths: list[Path]) -> None:
        self.records = [AlertRecord(p) for p in paths]

    def history(self, mine: str | None = None, since_ms: int | None = None) -> list[Alert]:
        return sorted((a for r in self.records for a in r.history(mine, since_ms)),
                      key=lambda a: a.ts)

    def open_episodes(self) -> list[Alert]:
        return [a for r in self.records for a in r.open_episodes()]

    def acknowledgements(self, episodes: Sequence[str] | None = None
                         ) -> dict[str, tuple[str, int, str]]:
        return {k: v for r in self.records for k, v in r.acknowledgements(episodes).items()}

    def config_hashes(self) -> dict[tuple[str, str, int], str]:
        return {k: v for r in self.records for k, v in r.config_hashes().items()}

    def causes(self) -> dict[str, tuple[str, str, str, int]]:
        return {k: v for r in self.records for k, v in r.causes().items()}

    def acknowledge(self, episode: str, by: str, now_ms: int, note: str = "") -> bool:
        return any([r.acknowledge(episode, by, now_ms, note) for r in self.records])


def _record(args: argparse.Namespace) -> tuple[Deployment, _Records]:
    deployment = load_deployment(args.config)
    paths = _states(deployment)
    if not paths:
        raise JinmeiError(f"no alert record at {_state(deployment)}: has the service run with "
                          "this configuration?")
    return deployment, _Records(paths)


def parse_when(text: str, option: str) -> int:
    """Epoch ms of ``--since``/``--start``: epoch ms, or ISO 8601 (local time without an offset);
    anything else is a UsageError naming ``option`` — never a traceback."""
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(option, f"not a time: {text!r} (expected epoch ms or "
                                 "YYYY-MM-DD[THH:MM[:SS]][+HH:MM])") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(LOCAL_TZ))
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: no float on the way


def parse_duration(text: str) -> int:
    """Milliseconds of a ``--duration`` like ``30m``, ``2h``, ``1.5d`` (ASCII digits, a unit of
    s, m, h or d); anything else is a UsageError."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise UsageError("--duration", f"expected e.g. 30m, 2h or 1d, got {text!r}")
    ms = int(float(found[1]) * _UNITS[found[2]] * 1000)
    if ms <= 0:  # a silence must end after it starts
        raise UsageError("--duration", f"must be longer than 0, got {text!r}")
    return ms


def parse_date(text: str) -> date:
    """``--date``: the day of ``YYYY-MM-DD`` (ASCII digits), or a UsageError."""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise UsageError("--date", f"expected YYYY-MM-DD, got {text!r}") from exc
    if day == date.max:  # its day has no end that a datetime can show
        raise UsageError("--date", f"{text!r} is past the last day jinmei can report")
    return day


def _zones(deployment: Deployment) -> dict[str, ZoneInfo]:
    return {m.id: ZoneInfo(m.timezone or LOCAL_TZ) for m in deployment.mines}


def _local(ms: int | None, zone: ZoneInfo) -> str:
    """An epoch-ms time as a person reads it: ISO 8601 in the mine's zone, with its offset."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="seconds")


def _now_ms() -> int:
    return int(time.time() * 1000)


def cmd_history(args: argparse.Namespace) -> int:
    deployment, record = _record(args)
    alerts = record.history(args.mine,
                            parse_when(args.since, "--since") if args.since else None)
    acks = record.acknowledgements()
    hashes = record.config_hashes()
    zones = _zones(deployment)
    # As on the wire: a value that is not there (NaN) is JSON null, an empty CSV cell.
    causes = record.causes()
    rows = [{**msgspec.json.decode(encode_alert(a)),
             "config_hash": hashes.get((a.id, a.state, a.ts), ""),
             "acknowledged_by": acks.get(a.id, ("", 0, ""))[0],
             "acknowledged_at": acks.get(a.id, ("", None, ""))[1],
             "acknowledged_note": acks.get(a.id, ("", 0, ""))[2],
             "cause": causes.get(a.id, ("", "", "", None))[0],
             "action": causes.get(a.id, ("", "", "", None))[1],
             "entered_by": causes.get(a.id, ("", "", "", None))[2],
             "entered_at": causes.get(a.id, ("", "", "", None))[3]} for a in alerts]
    for row in rows:
        zone = zones.get(str(row["mine"]), ZoneInfo(LOCAL_TZ))
        row.update({key: _local(row[key], zone) for key in _TIME_FIELDS})
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    deployment, record = _record(args)
    dbs = [StateDB(p) for p in _states(deployment)]
    acks = record.acknowledgements()
    zones = _zones(deployment)
    local = ZoneInfo(deployment.mines[0].timezone or LOCAL_TZ) if deployment.mines \
        else ZoneInfo(LOCAL_TZ)
    print("open alerts (most severe first, then oldest):")
    for a in sorted(record.open_episodes(),
                    key=lambda a: (_SEVERITY_ORDER.get(a.severity, 9), a.started_at, a.id)):
        state = f"acknowledged by {acks[a.id][0]}" if a.id in acks else "firing"
        print(f"  {a.severity:<8} {_local(a.started_at, zones.get(a.mine, local))} {a.id} "
              f"{a.mine}/{a.sensor} {a.rule} {state}: {a.message.splitlines()[0]}")
    print("pending:")
    holding = [db for db in dbs if db.query("SELECT 1 FROM sqlite_master WHERE name = ?",
                                            ("alert_hold",))]  # none before the service ran
    for sensor, rule, condition, held, due_at, _ in (
            row for db in holding for row in db.query("SELECT * FROM alert_hold")):
        print(f"  {sensor} {rule}/{condition} {held} until {_local(due_at, local)}")
    now = _now_ms()
    print("silences:")
    # Each silence is in every state file (cmd_silence): show it once.
    for s in {s.id: s for db in dbs for s in SilenceBook(db).all()}.values():
        if s.ends_at > now:
            zone = zones.get(s.matchers.mine, local)
            print(f"  {s.id} {s.matchers.describe()} {_local(s.starts_at, zone)} – "
                  f"{_local(s.ends_at, zone)} by {s.created_by}: {s.comment}")
    print("undelivered notifications:")
    for row in (row for db in dbs for row in Outbox(db).owed()):
        print(f"  {row.key} to {row.receiver}: {row.attempts} attempts; {row.last_error}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    _, record = _record(args)
    if not record.acknowledge(args.id, args.by, _now_ms(), args.note):
        known = args.id in record.acknowledgements([args.id])
        print(f"{args.id}: {'already acknowledged' if known else 'no such alert'}",
              file=sys.stderr)
        return 1
    print(f"{args.id} acknowledged by {args.by}")
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.config)
    start = parse_when(args.start, "--start") if args.start else _now_ms()
    end = start + parse_duration(args.duration)
    if end > _LAST_MS:
        raise UsageError("--duration", f"the silence would end after 9999-12-31 (from "
                                       f"{args.start or 'now'} for {args.duration})")
    matchers = Matchers(args.mine, args.sensor, args.kind, args.rule, args.severity, args.area)
    check_matchers(deployment, matchers)
    _state(deployment).parent.mkdir(parents=True, exist_ok=True)
    now = _now_ms()  # one id in every state file: a silence's id is a digest of this too
    for path in _states(deployment) or [_state(deployment)]:
        silence = SilenceBook(StateDB(path)).add(matchers, start, end, args.by, args.reason,
                                                 now)
    zone = _zones(deployment).get(args.mine, ZoneInfo(LOCAL_TZ))
    print(f"silence {silence.id}: {matchers.describe()} from {_local(start, zone)} "
          f"until {_local(end, zone)}")
    return 0


def check_matchers(deployment: Deployment, matchers: Matchers) -> None:
    """Refuse a silence that could never match: a typo would otherwise mute nothing while
    the dispatcher believes the maintenance work is covered; and a silence of power-offs
    (rule ``limit_power_off``), which the notifier's safety floor never mutes."""
    sensors = [s for s in deployment.registry.sensors
               if not matchers.mine or s.mine == matchers.mine]
    known = {
        "--mine": [m.id for m in deployment.mines],
        "--sensor": sorted({s.id for s in sensors}),
        "--kind": sorted({s.kind for s in sensors}),
        "--area": sorted({s.area for s in sensors}),
        "--rule": list(_RULES),
        "--severity": list(_SEVERITY_ORDER),
    }
    given = {"--mine": matchers.mine, "--sensor": matchers.sensor, "--kind": matchers.kind,
             "--area": matchers.area, "--rule": matchers.rule, "--severity": matchers.severity}
    if matchers.rule == "limit_power_off":  # the notifier's safety floor (alerts.notify)
        raise UsageError("--rule", "甲烷断电永不屏蔽 / a power-off (methane's included) is never "
                                   "silenced: every limit_power_off firing is notified "
                                   "whatever the silences (a silence of them would hold back "
                                   "only their all-clear)")
    for option, value in given.items():
        if value and value not in known[option]:
            scope = f" of mine {matchers.mine!r}" if matchers.mine and option in (
                "--sensor", "--kind", "--area") else ""
            choices = known[option]
            listed = ", ".join(choices[:12]) + (" …" if len(choices) > 12 else "")
            raise UsageError(option, f"no {option[2:]} {value!r}{scope}; known: {listed}")


def cmd_unsilence(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.config)
    now = _now_ms()
    if not any([SilenceBook(StateDB(p)).end(args.id, now) for p in _states(deployment)]):
        print(f"{args.id}: no such silence in force or to come", file=sys.stderr)
        return 1
    print(f"silence {args.id} ended")
    return 0


def cmd_daily(args: argparse.Namespace) -> int:
    from alerts.report import daily, plot_methane, to_csv, to_markdown
    from ingest.sqlite import SQLiteSink

    day_of = parse_date(args.date)  # before anything is opened: a typo is a usage error
    deployment, record = _record(args)
    mine = next((m for m in deployment.mines if m.id == args.mine), None)
    if mine is None:
        raise UsageError("--mine", f"no mine {args.mine!r}; known: "
                                   f"{', '.join(m.id for m in deployment.mines)}")
    if not deployment.store.url.startswith("sqlite:///"):
        raise JinmeiError("report daily reads readings from the SQLite store only")
    start = datetime.combine(day_of, dt_time(),
                             tzinfo=ZoneInfo(mine.timezone or LOCAL_TZ))
    day = (int(start.timestamp() * 1000), int((start + timedelta(days=1)).timestamp() * 1000))
    sink = SQLiteSink(deployment.store.url.removeprefix("sqlite:///"), deployment.registry)
    rows = [(r[1], int(r[4]), float(r[5]), int(r[6]))
            for r in sink.read_readings(mine.id, day[0]) if r[4] < day[1]]
    sink.close()
    report = daily(mine, day, rows, record.history(mine.id))
    print(to_markdown(mine, args.date, report))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{mine.id}_{args.date}.csv").write_text(to_csv(report), encoding="utf-8")
        plot_methane(mine, day, rows, args.out / f"{mine.id}_{args.date}_ch4.png", args.date)
    return 0
