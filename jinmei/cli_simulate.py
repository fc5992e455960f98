"""``jinmei simulate`` and ``jinmei scenarios list``: play a scenario's feed, say what each is.

``simulate`` publishes a scenario's feed to a broker (paced by ``--speed``, or ``--asap``) or
writes it to a recording (``--out``, JSON Lines, gzip for ``.gz``: what ``jinmei replay``
reads); ``--truth FILE`` writes the scenario's ground truth beside it. A bad mine, scenario or
option is a usage error (exit 2) naming what is known.

Publishing to a broker, it prints a progress line on stderr every ``PROGRESS_S`` of a long
feed, and watches ``jinmei/<mine>/rejects`` (:mod:`simulators.rejects`): when the service
refused readings it says how many and why and exits 1 (a broker that cannot be reached, or a
publish it does not acknowledge, exits 1 too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.errors import ConfigError
from config.loader import load_deployment
from config.model import BrokerConfig, Mine
from config.redact import redact_url
from jinmei.cli import config_option, formatter
from jinmei.cli_broker import broker_from_args, broker_options

if TYPE_CHECKING:
    from simulators.feed import Message
    from simulators.rejects import RejectWatch

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``simulate`` and ``scenarios`` to the ``jinmei`` subcommands."""
    simulate = sub.add_parser(
        "simulate", formatter_class=formatter, help="play a simulated mine feed",
        description="Publish a scenario's feed for every configured sensor of a mine, at each "
                    "sensor's\nsampling period, to an MQTT broker (or write it to a file). "
                    "With --speed X > 1 the\nfeed's clock starts in the past so that no "
                    "reading is stamped in the future.\nThe same --seed gives the same bytes. "
                    "'jinmei scenarios list' names the scenarios.")
    config_option(simulate)
    simulate.add_argument("--mine", required=True, help="mine id, e.g. qipanjing")
    simulate.add_argument("--scenario", default="normal",
                          help="scenario name (default normal), e.g. methane-rise")
    simulate.add_argument("--duration", type=float, metavar="S",
                          help="feed seconds to produce (default: the scenario's own)")
    pace = simulate.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="feed time per wall-clock time (default 1: real time)")
    pace.add_argument("--asap", action="store_true", help="publish as fast as possible")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    simulate.add_argument("--start-ms", type=int, metavar="MS",
                          help="feed clock start, epoch ms (default: now, or earlier so that "
                               "a fast feed never runs ahead of the wall clock)")
    simulate.add_argument("--out", type=Path, metavar="FILE",
                          help="write the feed as a recording (JSON Lines {at_ms, topic, "
                               "payload}; gzip if FILE ends in .gz) instead of publishing")
    simulate.add_argument("--truth", type=Path, metavar="FILE",
                          help="also write the scenario's ground truth (JSON) here")
    broker_options(simulate, url_help="broker (default: the config's [broker] url)")
    simulate.set_defaults(func=cmd_simulate)

    scenarios = sub.add_parser("scenarios", formatter_class=formatter,
                               help="the simulator's scenarios")
    what = scenarios.add_subparsers(dest="what", required=True, metavar="ACTION")
    listing = what.add_parser("list", formatter_class=formatter,
                              help="describe each scenario",
                              description="Name, natural duration and story of each scenario "
                                          "that 'jinmei simulate --scenario' plays.")
    listing.add_argument("--json", action="store_true", help="machine-readable JSON")
    listing.set_defaults(func=cmd_scenarios_list)


def cmd_scenarios_list(args: argparse.Namespace) -> int:
    from simulators.scenarios import SCENARIOS

    if args.json:
        print(json.dumps([{"name": s.name, "duration_s": s.duration_s,
                           "description": s.description} for s in SCENARIOS.values()],
                         ensure_ascii=False, indent=2))
        return 0
    for s in SCENARIOS.values():
        print(f"{s.name}  ({s.duration_s / 60:g} min)\n    {s.description}\n")
    return 0


def _mine(args: argparse.Namespace) -> Mine:
    deployment = load_deployment(args.config)
    mine = next((m for m in deployment.mines if m.id == args.mine), None)
    if mine is None:
        raise ConfigError(deployment.source_file, "mines",
                          f"no mine {args.mine!r}; configured: "
                          f"{', '.join(m.id for m in deployment.mines)}")
    return mine


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.feed import generate
    from simulators.publisher import publish
    from simulators.recording import writer
    from simulators.scenarios import get_scenario
    from simulators.truth import ground_truth

    mine = _mine(args)
    speed = None if args.asap else args.speed
    try:
        duration_s = args.duration or get_scenario(args.scenario).duration_s
        start_ms = args.start_ms
        if start_ms is None:
            # The feed's clock starts early enough that it never runs ahead of the wall clock
            # (a service refuses readings from the future): --asap plays a feed that ends now.
            lead_s = (0.0 if args.out else duration_s if speed is None
                      else max(0.0, duration_s * (1 - 1 / speed)))
            start_ms = int(time.time() * 1000) - int(lead_s * 1000)
        feed = generate(mine, args.scenario, start_ms=start_ms, duration_s=duration_s,
                        seed=args.seed)
        if args.truth:
            truth = ground_truth(mine, args.scenario, start_ms=start_ms, duration_s=duration_s,
                                 seed=args.seed)
            args.truth.write_text(json.dumps(truth, ensure_ascii=False, indent=1) + "\n",
                                  encoding="utf-8")
    except ValueError as error:
        print(f"jinmei simulate: {error}", file=sys.stderr)
        return 2
    if args.out:
        recording = writer(args.out)
        readings = 0
        try:
            for message in feed:
                recording.write(message)
                readings += message.readings
        finally:
            recording.close()
        print(f"wrote {recording.messages} messages ({readings} readings) to {args.out}")
        return 0
    broker = broker_from_args(args)
    watch = _watch_rejects(broker, mine.id)
    progress = _Progress(sum(int(duration_s // s.period_s) + 1 for s in mine.sensors))
    try:
        summary = publish(feed, broker, speed=speed, client_id=f"jinmei-sim-{mine.id}",
                          on_message=progress)
    finally:
        refused = watch.stop() if watch else None
    print(f"published {summary.messages} messages ({summary.readings} readings) to "
          f"{redact_url(broker.url)} in {summary.seconds:.1f} s")
    if refused:
        listed = ", ".join(f"{reason} {n:,}" for reason, n in refused.most_common())
        print(f"jinmei simulate: the service refused {refused.total():,} of them ({listed}); "
              f"each is on jinmei/{mine.id}/rejects with its reason", file=sys.stderr)
        return 1
    return 0


PROGRESS_S = 5.0  # jinmei's own: a line every 5 s on a long feed; a short one stays quiet


class _Progress:
    """``on_message`` of the publisher: a progress line on stderr every ``PROGRESS_S``."""

    def __init__(self, expected_readings: int) -> None:
        self.expected = max(expected_readings, 1)
        self.readings = 0
        self.next = time.monotonic() + PROGRESS_S

    def __call__(self, message: Message) -> None:
        self.readings += message.readings
        if (now := time.monotonic()) >= self.next:
            self.next = now + PROGRESS_S
            share = min(100, 100 * self.readings // self.expected)
            print(f"simulate: {self.readings:,} of about {self.expected:,} readings published "
                  f"({share} %)", file=sys.stderr, flush=True)


def _watch_rejects(broker: BrokerConfig, mine: str) -> RejectWatch | None:
    """A watch on the mine's rejects topic, or None (said on stderr) when it cannot run."""
    from simulators.rejects import RejectWatch

    watch = RejectWatch(broker, mine)
    if not watch.start():
        watch.stop(settle_s=0)
        print(f"jinmei simulate: cannot watch jinmei/{mine}/rejects on "
              f"{redact_url(broker.url)}: readings the service refuses will not be reported "
              "here", file=sys.stderr)
        return None
    return watch
