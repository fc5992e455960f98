"""``jinmei alerts history|list|ack|silence|unsilence`` and ``jinmei report daily``.

They work on the alerts state file of the deployment (``<state_dir>/alerts.db``), also while
the service runs (SQLite WAL; the service rereads silences and acknowledgements about once a
second). Times: ``--since`` / ``--start`` / ``--date`` are read in the mine's local time
(Asia/Shanghai) unless they carry an offset; epoch ms is accepted too.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
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
from config.errors import ConfigError, JinmeiError
from config.loader import LOCAL_TZ, load_deployment
from config.model import Deployment
from jinmei.cli import config_option, formatter

__all__ = ["register"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
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


def _record(args: argparse.Namespace) -> tuple[Deployment, AlertRecord]:
    deployment = load_deployment(args.config)
    path = _state(deployment)
    if not path.exists():
        raise JinmeiError(f"no alert record at {path}: has the service run with this "
                          "configuration?")
    return deployment, AlertRecord(path)


def parse_when(text: str, option: str) -> int:
    """Epoch ms of ``--since``/``--start``: epoch ms, or ISO 8601 (local time without an offset);
    anything else is a ConfigError naming ``option`` — never a traceback."""
    if _EPOCH_MS.fullmatch(text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(option, "", f"not a time: {text!r} (expected epoch ms or "
                                      "YYYY-MM-DD[THH:MM[:SS]][+HH:MM])") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(LOCAL_TZ))
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: no float on the way


def parse_duration(text: str) -> int:
    """Milliseconds of a ``--duration`` like ``30m``, ``2h``, ``1.5d`` (ASCII digits, a unit of
    s, m, h or d); anything else is a ConfigError."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise ConfigError("--duration", "", f"expected e.g. 30m, 2h or 1d, got {text!r}")
    return int(float(found[1]) * _UNITS[found[2]] * 1000)


def parse_date(text: str) -> date:
    """``--date``: the day of ``YYYY-MM-DD`` (ASCII digits), or a ConfigError."""
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        day = date.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--date", "", f"expected YYYY-MM-DD, got {text!r}") from exc
    if day == date.max:  # its day has no end that a datetime can show
        raise ConfigError("--date", "", f"{text!r} is past the last day jinmei can report")
    return day


def _now_ms() -> int:
    return int(time.time() * 1000)


def cmd_history(args: argparse.Namespace) -> int:
    _, record = _record(args)
    alerts = record.history(args.mine,
                            parse_when(args.since, "--since") if args.since else None)
    acks = record.acknowledgements()
    hashes = record.config_hashes()
    rows = [{**msgspec.structs.asdict(a), "config_hash": hashes.get((a.id, a.state, a.ts), ""),
             "acknowledged_by": acks.get(a.id, ("", 0, ""))[0],
             "acknowledged_at": acks.get(a.id, ("", None, ""))[1]} for a in alerts]
    if args.format == "json":
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["id"])
        writer.writeheader()
        writer.writerows(rows)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    deployment, record = _record(args)
    db = StateDB(_state(deployment))
    acks = record.acknowledgements()
    print("open alerts:")
    for a in record.open_episodes():
        state = f"acknowledged by {acks[a.id][0]}" if a.id in acks else "firing"
        print(f"  {a.id} {a.mine}/{a.sensor} {a.rule} {a.severity} {state}: "
              f"{a.message.splitlines()[0]}")
    print("pending:")
    for sensor, rule, condition, held, due_at, _ in db.query("SELECT * FROM alert_hold"):
        print(f"  {sensor} {rule}/{condition} {held} until {due_at}")
    now = _now_ms()
    print("silences:")
    for s in SilenceBook(db).all():
        if s.ends_at > now:
            print(f"  {s.id} {s.matchers.describe()} {s.starts_at}–{s.ends_at} by "
                  f"{s.created_by}: {s.comment}")
    print("undelivered notifications:")
    for row in Outbox(db).owed():
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
        raise ConfigError("--duration", "", f"the silence would end after 9999-12-31 (from "
                                            f"{args.start or 'now'} for {args.duration})")
    _state(deployment).parent.mkdir(parents=True, exist_ok=True)
    book = SilenceBook(StateDB(_state(deployment)))
    matchers = Matchers(args.mine, args.sensor, args.kind, args.rule, args.severity, args.area)
    silence = book.add(matchers, start, end, args.by, args.reason, _now_ms())
    print(f"silence {silence.id}: {matchers.describe()} until {end}")
    return 0


def cmd_unsilence(args: argparse.Namespace) -> int:
    deployment = load_deployment(args.config)
    if not SilenceBook(StateDB(_state(deployment))).end(args.id, _now_ms()):
        print(f"{args.id}: no such silence in force or to come", file=sys.stderr)
        return 1
    print(f"silence {args.id} ended")
    return 0


def cmd_daily(args: argparse.Namespace) -> int:
    from alerts.report import daily, plot_methane, to_csv, to_markdown
    from ingest.sqlite import SQLiteSink

    deployment, record = _record(args)
    mine = next((m for m in deployment.mines if m.id == args.mine), None)
    if mine is None:
        raise ConfigError(deployment.source_file, "mines", f"no mine {args.mine!r}")
    if not deployment.store.url.startswith("sqlite:///"):
        raise JinmeiError("report daily reads readings from the SQLite store only")
    start = datetime.combine(parse_date(args.date), dt_time(),
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
        plot_methane(mine, day, rows, args.out / f"{mine.id}_{args.date}_ch4.png")
    return 0
