"""Evaluation on the simulators' labelled scenarios: per rule, recall, delay and false alerts.

For every scenario × pilot mine that can play it (the shipped configuration), the feed and its
ground truth (``simulators.feed.generate`` / ``simulators.truth.ground_truth``, fixed seed) are
generated; the messages go in feed order, a feed tick at a time, through
``TelemetryCodec.decode_many`` into the deployment's detectors (``update(batch, now=message
time)``), and the clock ticks them once per feed second (no-data needs the clock). Each mine
runs on its own registry, so a mine's sensors are never "silent" for lack of the other's feed.

Scoring (simulators/README.md): a ``fires: true`` entry is *hit* by the first firing event of
its mine, sensor, rule and condition (through :data:`DETECTED_AS`) at or after ``from_ms`` —
in time if at the latest at ``by_ms`` (delay = event ts − ``from_ms``), *late* if after, a
*miss* if none comes before the entry ends. A firing event inside no ``fires: true`` entry's
span [``from_ms``, ``to_ms`` or the feed's end] is a false alert; ``forbidden`` counts those
that also break a ``fires: false`` entry (the rest fall on rules the truth leaves open, e.g. a
trend warning on a real rise of gas). False alerts are per sensor-day of the mine's sensors.

Targets (issue 4): recall 100 % on statutory limits with no delay beyond one sample; zero false
limit alarms; trend warnings at least 5 minutes before the alarm limit (the truth's ``by_ms``
for ``trend``). The exit status is 1 when a statutory-limit target is missed.

``--through-service`` (issue 18) instead replays each scenario's feed through a fresh Mosquitto
and a fresh ``jinmei`` service twice — as fast as possible, and paced at ``--speed`` × the feed's
own pace (1 = live; default 50: the whole set is ~14 h of feed per mine) — and requires both to
give the alert set of the in-process run (``bench/through_service.py``: firing transitions by
id, rule, condition and started_at, ``no_data`` left out). Exit status 1 on any difference.

Run: ``python -m bench.evaluate_scenarios [--scenario S ...] [--seed 0] [--duration S]
[--through-service [--speed 50]]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.loader import load_deployment
from config.model import Deployment, DetectorConfig, Mine, Registry
from detectors.base import Event
from jinmei import playback
from simulators.feed import generate
from simulators.scenarios import SCENARIOS
from simulators.truth import ground_truth

__all__ = ["DETECTED_AS", "LIMIT_RULES", "START_MS", "Fired", "Outcome", "Run", "Stray",
           "evaluate", "limit_failures", "meets", "play"]

START_MS = 1_795_614_330_000  # 2026-11-25 06:25:30 CST: a cutting shift (fixed, reproducible)
LIMIT_RULES = ("limit_alarm", "limit_power_off")  # statutory: the hard targets
# The one place truth names meet detector names: truth (rule, condition) → the detector
# conditions of that rule that satisfy it; absent pairs are detected under their own name.
DETECTED_AS: dict[tuple[str, str], tuple[str, ...]] = {
    ("trend", "rise"): ("trend_high",),
    ("no_data", "silent"): ("silent", "substation_silent"),  # a grouped alert covers all
    ("sensor_fault", "over_range"): ("out_of_range",),
    ("sensor_fault", "under_range"): ("out_of_range",),
    # Power-off is required by methane or by every local fan stopped: either interlock names it.
    ("feed_fault", "live_after_power_off"): ("feed_on_power_off", "feed_on_fan_stopped"),
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One ``fires: true`` entry and the first matching firing event (``None``: none)."""

    scenario: str
    mine: str
    sensor: str
    rule: str
    condition: str
    from_ms: int
    by_ms: int
    detected_ms: int | None

    @property
    def verdict(self) -> str:
        if self.detected_ms is None:
            return "miss"
        return "hit" if self.detected_ms <= self.by_ms else "late"


@dataclass(frozen=True, slots=True)
class Stray:
    """A firing event no ``fires: true`` entry explains; ``forbidden``: a ``fires: false`` one
    says it must not fire."""

    scenario: str
    mine: str
    sensor: str
    rule: str
    condition: str
    ts: int
    forbidden: bool


@dataclass(frozen=True, slots=True)
class Run:
    """One scenario on one mine, scored."""

    scenario: str
    mine: str
    sensor_days: float
    outcomes: list[Outcome]
    strays: list[Stray]


@dataclass(frozen=True, slots=True)
class Fired:
    """A firing event (or alert transition) as the scoring sees it."""

    sensor: str
    rule: str
    condition: str
    ts: int
    substation: str  # of substation_silent (its scope); empty otherwise


def play(registry: Registry, mine: Mine, scenario: str, config: DetectorConfig,
         duration_s: float | None, seed: int) -> Iterator[tuple[int, list[Event]]]:
    """Play the feed through codec and detectors of ``registry`` (the mine's own): (the
    service clock's ms, the events of that feed tick or clock tick), in time order."""
    messages = generate(mine, scenario, start_ms=START_MS, duration_s=duration_s, seed=seed)
    end_ms = START_MS + int(1000 * (duration_s or SCENARIOS[scenario].duration_s))
    return playback.play(registry, config, messages, START_MS, end_ms)


def _detect(mine: Mine, scenario: str, config: DetectorConfig, duration_s: float | None,
            seed: int) -> tuple[list[Fired], Registry]:
    """Play the feed through codec and detectors; the firing events, in order."""
    registry = Registry.build((mine,))
    events = [e for _, step in play(registry, mine, scenario, config, duration_s, seed)
              for e in step]
    return [Fired(registry.sensors[e.sensor].id, e.rule, e.condition, e.ts,
                   e.scope if e.condition == "substation_silent" else "")
            for e in events if e.firing], registry


def meets(entry: dict[str, Any], fired: Fired) -> bool:
    """Does a firing event stand for this truth entry (sensor ``*`` / condition ``*``: any)?"""
    if fired.rule != entry["rule"]:
        return False
    if entry["condition"] != "*" and fired.condition not in DETECTED_AS.get(
            (entry["rule"], entry["condition"]), (entry["condition"],)):
        return False
    if fired.substation:
        return entry["sensor"] == "*" or fired.substation == entry.get("substation")
    return entry["sensor"] in ("*", fired.sensor)


def evaluate(mine: Mine, scenario: str, config: DetectorConfig, *,
             duration_s: float | None = None, seed: int = 0) -> Run:
    """Score the detectors on one scenario of one mine (module docstring). ``ValueError`` if
    the mine cannot play the scenario (as ``generate``)."""
    fired, registry = _detect(mine, scenario, config, duration_s, seed)
    truth = ground_truth(mine, scenario, start_ms=START_MS, duration_s=duration_s, seed=seed)
    end_ms = truth["end_ms"]
    must = [e for e in truth["alerts"] if e["fires"]]
    outcomes = []
    for e in must:
        first = next((f.ts for f in fired if meets(e, f) and e["from_ms"] <= f.ts
                      <= (end_ms if e["to_ms"] is None else e["to_ms"])), None)
        outcomes.append(Outcome(scenario, mine.id, e["sensor"], e["rule"], e["condition"],
                                e["from_ms"], e["by_ms"], first))
    strays = []
    for f in fired:
        if any(meets(e, f) and e["from_ms"] <= f.ts <= (e["to_ms"] or end_ms) for e in must):
            continue
        forbidden = any(meets(e, f) and e["from_ms"] <= f.ts <= e["to_ms"]
                        for e in truth["alerts"] if not e["fires"])
        strays.append(Stray(scenario, mine.id, f.sensor, f.rule, f.condition, f.ts, forbidden))
    days = (end_ms - truth["start_ms"]) / 86_400_000
    return Run(scenario, mine.id, len(registry) * days, outcomes, strays)


def limit_failures(runs: Iterable[Run]) -> list[str]:
    """Every statutory-limit target missed, one line each (empty: all met)."""
    lines = []
    for run in runs:
        lines += [f"{o.verdict} {o.scenario} {o.mine}/{o.sensor} {o.rule}/{o.condition} "
                  f"from {o.from_ms} by {o.by_ms} detected {o.detected_ms}"
                  for o in run.outcomes if o.rule in LIMIT_RULES and o.verdict != "hit"]
        lines += [f"false {s.scenario} {s.mine}/{s.sensor} {s.rule}/{s.condition} at {s.ts}"
                  for s in run.strays if s.rule in LIMIT_RULES]
    return lines


def table(runs: Sequence[Run]) -> str:
    """Per rule and condition: recall, delay, false alerts per sensor-day (one table)."""
    sensor_days = sum(r.sensor_days for r in runs)
    rows: dict[tuple[str, str], tuple[list[Outcome], list[Stray]]] = {}
    for run in runs:
        for o in run.outcomes:
            rows.setdefault((o.rule, o.condition), ([], []))[0].append(o)
        for s in run.strays:
            rows.setdefault((s.rule, s.condition), ([], []))[1].append(s)
    head = (f"{'rule':<16}{'condition':<22}{'entries':>8}{'hit':>5}{'late':>5}{'miss':>5}"
            f"{'recall':>8}{'delay med s':>12}{'max s':>8}{'margin s':>9}{'false':>7}{'forbid':>7}"
            f"{'false/sensor-day':>17}")
    lines = [head, "-" * len(head)]
    for (rule, condition), (outcomes, strays) in sorted(rows.items()):
        n = {v: sum(o.verdict == v for o in outcomes) for v in ("hit", "late", "miss")}
        delays = [(o.detected_ms - o.from_ms) / 1000 for o in outcomes
                  if o.detected_ms is not None]
        recall = f"{100 * n['hit'] / len(outcomes):.0f} %" if outcomes else "-"
        med = f"{statistics.median(delays):.0f}" if delays else "-"
        top = f"{max(delays):.0f}" if delays else "-"
        # The least time to spare before by_ms (a trend's lead on its alarm is this + 5 min).
        spare = [(o.by_ms - o.detected_ms) / 1000 for o in outcomes if o.verdict == "hit"
                 and o.detected_ms is not None]
        margin = f"{min(spare):.0f}" if spare else "-"
        lines.append(f"{rule:<16}{condition:<22}{len(outcomes):>8}{n['hit']:>5}{n['late']:>5}"
                     f"{n['miss']:>5}{recall:>8}{med:>12}{top:>8}{margin:>9}{len(strays):>7}"
                     f"{sum(s.forbidden for s in strays):>7}"
                     f"{len(strays) / sensor_days:>17.2f}")
    limit = sum(s.rule in LIMIT_RULES for r in runs for s in r.strays)
    lines.append(f"{len(runs)} runs, {sensor_days:.2f} sensor-days; false limit alarms: {limit}"
                 f" ({limit / sensor_days:.2f} per sensor-day)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="evaluate only this scenario (repeatable; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--duration", type=float, help="seconds (default: each scenario's)")
    parser.add_argument("--through-service", action="store_true",
                        help="replay through Mosquitto and the service, asap and paced, and "
                             "require the in-process alert set")
    parser.add_argument("--speed", type=float, default=50.0,
                        help="pace of the paced replay (× the feed's own; 1 = live)")
    args = parser.parse_args(argv)
    deployment = load_deployment(None)
    if args.through_service:
        return _through_service(deployment, args.scenario or list(SCENARIOS), args.duration,
                                args.seed, args.speed)
    runs = []
    for scenario in args.scenario or list(SCENARIOS):
        for mine in deployment.mines:
            try:
                run = evaluate(mine, scenario, deployment.detectors,
                               duration_s=args.duration, seed=args.seed)
            except ValueError as error:  # the mine cannot play it (no goaf points …)
                print(f"{scenario:<24}{mine.id:<11}skipped: {error}")
                continue
            runs.append(run)
            n = {v: sum(o.verdict == v for o in run.outcomes) for v in ("hit", "late", "miss")}
            print(f"{scenario:<24}{mine.id:<11}entries {len(run.outcomes):>3}  hit {n['hit']:>3}"
                  f"  late {n['late']:>2}  miss {n['miss']:>2}  false {len(run.strays):>3}")
    print()
    print(table(runs))
    verdicts = [o for r in runs for o in r.outcomes if o.verdict != "hit"]
    if verdicts:
        print("\nnot detected in time:")
        for o in verdicts:
            delay = ("" if o.detected_ms is None
                     else f", at +{(o.detected_ms - o.from_ms) / 1000:g} s")
            print(f"  {o.verdict:<5}{o.scenario:<24}{o.mine}/{o.sensor} {o.rule}/{o.condition}"
                  f" (by +{(o.by_ms - o.from_ms) / 1000:g} s{delay})")
    forbidden = [s for r in runs for s in r.strays if s.forbidden]
    if forbidden:
        print("\nfalse alerts against a fires: false entry:")
        for s in forbidden:
            print(f"  {s.scenario:<24}{s.mine}/{s.sensor} {s.rule}/{s.condition}"
                  f" at +{(s.ts - START_MS) / 1000:g} s")
    failures = limit_failures(runs)
    print("\nstatutory-limit targets: " + ("met" if not failures else "MISSED"))
    for line in failures:
        print("  " + line)
    return 1 if failures else 0


def _through_service(deployment: Deployment, scenarios: Sequence[str], duration_s: float | None,
                     seed: int, speed: float) -> int:
    """The ``--through-service`` mode (module docstring): one line per scenario and mine."""
    from bench.through_service import in_process, through_service  # starts servers: only here

    differ = 0
    print(f"{'scenario':<24}{'mine':<11}{'alerts':>7}  {'asap':<6}{f'x{speed:g}':<6}")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in scenarios:
            for mine in deployment.mines:
                try:
                    messages = list(generate(mine, scenario, start_ms=START_MS,
                                             duration_s=duration_s, seed=seed))
                except ValueError as error:
                    print(f"{scenario:<24}{mine.id:<11}skipped: {error}")
                    continue
                expected = in_process(mine, messages, deployment.detectors)
                work = Path(tmp) / f"{scenario}-{mine.id}"
                found = [through_service(deployment, messages, work / "asap", speed=None),
                         through_service(deployment, messages, work / "paced", speed=speed)]
                verdicts = ["same" if f == expected else "DIFF" for f in found]
                differ += verdicts.count("DIFF")
                print(f"{scenario:<24}{mine.id:<11}{len(expected):>7}  "
                      f"{verdicts[0]:<6}{verdicts[1]:<6}")
                for f in found:
                    for key in sorted(f ^ expected):
                        print(f"    {'extra' if key in f else 'missing'}: {key}")
    print("\nthrough the service: " + ("the in-process alert set every time" if not differ
                                       else f"{differ} replays differ"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
