"""``jinmei simulate``: play a simulated mine feed to a broker or into a file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from config.loader import load_deployment
from jinmei.cli import config_option, formatter

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``simulate`` to the ``jinmei`` subcommands."""
    simulate = sub.add_parser(
        "simulate", formatter_class=formatter, help="play a simulated mine feed",
        description="Publish a simulated feed for every configured sensor of a mine, at each "
                    "sensor's\nsampling period, to an MQTT broker (or write it to a file). "
                    "With --speed X > 1 the\nfeed's clock starts in the past so that no "
                    "reading is stamped in the future.")
    config_option(simulate)
    simulate.add_argument("--mine", required=True, help="mine id, e.g. qipanjing")
    simulate.add_argument("--scenario", default="normal",
                          help="scenario name (default normal), e.g. methane-rise")
    simulate.add_argument("--duration", type=float, default=600.0, metavar="S",
                          help="feed seconds to produce (default 600)")
    pace = simulate.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="feed time per wall-clock time (default 1: real time)")
    pace.add_argument("--asap", action="store_true", help="publish as fast as possible")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--broker", metavar="URL", help="broker (default: the config's)")
    simulate.add_argument("--out", type=Path, metavar="FILE",
                          help="write JSON Lines {at_ms, topic, payload} here instead of "
                               "publishing")
    simulate.set_defaults(func=cmd_simulate)



def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.feed import generate
    from simulators.publisher import publish

    deployment = load_deployment(args.config)
    mine = next((m for m in deployment.mines if m.id == args.mine), None)
    if mine is None:
        raise ConfigError(deployment.source_file, "mines",
                          f"no mine {args.mine!r}; configured: "
                          f"{', '.join(m.id for m in deployment.mines)}")
    speed = None if args.asap else args.speed
    now_ms = int(time.time() * 1000)
    # the feed's clock starts early enough that it never runs ahead of the wall clock
    lead_s = 0.0 if speed is None or args.out else max(0.0, args.duration * (1 - 1 / speed))
    feed = generate(mine, args.scenario, start_ms=now_ms - int(lead_s * 1000),
                    duration_s=args.duration, seed=args.seed)
    if args.out:
        with args.out.open("w", encoding="utf-8") as f:
            n = 0
            for m in feed:
                f.write(json.dumps({"at_ms": m.at_ms, "topic": m.topic,
                                    "payload": m.payload.decode()}, ensure_ascii=False) + "\n")
                n += 1
        print(f"wrote {n} messages to {args.out}")
        return 0
    url = args.broker or deployment.broker.url
    summary = publish(feed, url, speed=speed, client_id=f"jinmei-sim-{mine.id}")
    print(f"published {summary.messages} messages ({summary.readings} readings) to {url} "
          f"in {summary.seconds:.1f} s")
    return 0
