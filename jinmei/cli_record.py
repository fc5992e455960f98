"""``jinmei record`` and ``jinmei replay``: capture what a broker carries, and play it back.

``record`` writes every telemetry message with its receive time and topic to a recording
(JSON Lines, gzip for ``.gz``, flushed per message) until Ctrl-C / SIGTERM, ``--duration`` or
``--count``. ``replay`` republishes a recording (or a ``jinmei simulate --out`` file) in its
original order and relative timing, with a progress bar on stderr and a summary; exit 1 if
the broker fails, 2 for a bad file or option.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from config.redact import redact_url
from jinmei.cli import config_option, formatter
from jinmei.cli_broker import broker_from_args, broker_options

__all__ = ["register"]

_BAR = 30  # characters of the progress bar


def register(sub: Any) -> None:
    """Add ``record`` and ``replay`` to the ``jinmei`` subcommands."""
    from simulators.recorder import TELEMETRY

    record = sub.add_parser(
        "record", formatter_class=formatter, help="record telemetry from a broker to a file",
        description="Subscribe to telemetry and write every message with its receive time and "
                    "topic\n(JSON Lines; gzip when FILE ends in .gz), flushing as it goes. Stop "
                    "with Ctrl-C.")
    config_option(record)
    broker_options(record, url_help="mqtt[s]://host:port (default: the config's)")
    record.add_argument("--out", required=True, type=Path, metavar="FILE")
    record.add_argument("--topic", default=TELEMETRY, help=f"topic filter (default {TELEMETRY})")
    record.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    record.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    record.set_defaults(func=cmd_record)

    replay = sub.add_parser(
        "replay", formatter_class=formatter, help="republish a recording to a broker",
        description="Republish a recording in its original order and relative timing "
                    "(QoS 1, every\nmessage acknowledged), with a progress bar and a summary.")
    replay.add_argument("file", type=Path, metavar="FILE")
    config_option(replay)
    broker_options(replay, url_help="mqtt[s]://host:port (default: the config's)")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="recorded time per wall-clock time (default 1)")
    pace.add_argument("--asap", action="store_true", help="publish as fast as possible")
    replay.add_argument("--shift-to-now", action="store_true",
                        help="move every payload ts so that the first message reads as now")
    replay.set_defaults(func=cmd_replay)


def cmd_record(args: argparse.Namespace) -> int:
    from simulators.recorder import record

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    broker = broker_from_args(args)
    where = redact_url(broker.url)
    summary = record(broker, args.out, topic=args.topic, stop=stop,
                     duration_s=args.duration, count=args.count,
                     on_ready=lambda: print(f"recording {args.topic} from {where} to "
                                            f"{args.out} (Ctrl-C to stop)", file=sys.stderr))
    print(f"recorded {summary.messages} messages ({summary.payload_bytes} payload bytes) to "
          f"{args.out} in {summary.seconds:.1f} s")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from simulators.replay import replay

    shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - shown[0] < 0.2:
            return
        shown[0] = now
        filled = _BAR * done // max(total, 1)
        print(f"\r[{'#' * filled}{'.' * (_BAR - filled)}] {done}/{total}", end="",
              file=sys.stderr, flush=True)

    broker = broker_from_args(args)
    try:
        summary = replay(args.file, broker, speed=None if args.asap else args.speed,
                         shift_to_now=args.shift_to_now, now_ms=int(time.time() * 1000),
                         on_progress=progress)
    except (ValueError, OSError) as error:
        print(f"jinmei replay: {error}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    rate = summary.messages / summary.seconds if summary.seconds else 0.0
    print(f"replayed {summary.messages} messages from {args.file} to {redact_url(broker.url)} in "
          f"{summary.seconds:.1f} s ({rate:,.0f} msg/s)")
    return 0
