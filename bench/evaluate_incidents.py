"""Alert quality per incident (issue 17): what a dispatcher is shown and told, before and after.

For every scenario × pilot mine, the feed plays through codec and detectors exactly as in
``evaluate_scenarios`` (same seed, the service clock ticking every second: its :func:`play`),
and each step's events go through the alerts dispatcher (``AlertDispatcher.apply(events,
now)``, its record and state in a temporary folder, the deployment's timers, one test receiver
``desk`` routed every alert — a webhook never called: the outbox holds what would be sent).
Three times (:data:`STAGES`): **before**, with the supersede rules (``supersede_warnings``,
``supersede_warnings_under_power_off``, ``supersede_level_shifts``) and the
``area_alarm_over_warnings`` inhibition off — the dispatcher before issue 17; **landed**, with
issue 17's first two items on (the point's alarm supersedes, the area's alarm inhibits) and the
area power-off and level-shift rules off; and **after**, with all on (the defaults). Once the
feed ends the clock runs on for ``TAIL_S`` so held resolves and group waits fall due.

An incident is one truth event: each scenario tells one story in one area (a methane rise at a
longwall, a fan stop in a heading, a stuck sensor …), so a run whose ground truth has an entry
that must fire is one incident; ``normal`` has none.

Per run:

- ``published``: alert transitions recorded and published on ``jinmei/<mine>/alerts``; in
  brackets those of warnings marked ``inhibited_by`` an area's alarm (a console may fold them
  away, as Alertmanager's does with inhibited alerts);
- ``notified``: notifications put in the outbox for the receiver (messages it gets);
- ``wrong``: early warnings published opening while their own point's alarm or power-off was
  open ("0.91 % rising towards the alarm limit" beside an open 1.02 % alarm) — target 0;
- ``noise``: early warnings firing in those notifications while an alarm or power-off of the
  same point, or of the same kind in the same area, was open — the target is 0;
- ``suppressed``: detector firings the supersede rules kept from opening (``alert_suppressed``);
- ``in time``: ``fires: true`` truth entries shown to the dispatcher in time: a *published*
  episode of the entry's sensor, rule and condition (evaluate_scenarios' matching) that fired
  by the entry's ``by_ms`` and had not ended before its ``from_ms`` (two crossings a few
  seconds apart are one episode, joined by the resolve hold) — must not drop;
- pre-alarm warnings: the early warnings published before the first alarm or power-off of the
  incident, each with its lead on that alarm — these are the valuable ones: every trend warning
  among them (a forecast of the time to the limit) must stay with its lead, and so must the lead
  of the incident's *first* warning (an early warning or the pre-warning limit ``warning_high``);
  a level shift beside an earlier open warning of the same rise may go (alerts.supersede), and
  the table shows which did.

Run: ``python -m bench.evaluate_incidents [--scenario S ...] [--seed 0]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alerts.dispatch import AlertDispatcher
from alerts.inhibit import is_alarm, is_early_warning
from alerts.messages import Names
from alerts.record import AlertRecord
from alerts.wire import Alert
from bench.evaluate_scenarios import START_MS, Fired, meets, play
from config.loader import load_deployment
from config.model import AlertsConfig, DetectorConfig, Mine, Receiver, Registry, Route
from simulators.scenarios import SCENARIOS
from simulators.truth import ground_truth

__all__ = ["STAGES", "Quality", "incident_config", "measure"]

STAGES = ("before", "landed", "after")  # issue 17: none of it, items 1–2, all of it

TAIL_S = 120  # past the feed's end: the 30 s resolve hold and the 60 s group interval
RECEIVER = Receiver("desk", "webhook", (("url", "http://127.0.0.1:9/never-called"),))


@dataclass(frozen=True, slots=True)
class Quality:
    """One scenario on one mine through one dispatcher configuration."""

    published: int
    inhibited: int  # of them: transitions of warnings marked inhibited_by an area's alarm
    notified: int
    wrong: int
    noise: int
    in_time: int
    entries: int
    pre_alarm: tuple[tuple[str, str, float], ...]  # (sensor, condition, lead in minutes)
    first_lead: float | None  # minutes from the incident's first warning to its first alarm
    suppressed: int  # detector firings the supersede rules kept from opening

    def keeps_warnings_of(self, before: Quality) -> bool:
        """Every pre-alarm trend warning of ``before`` is here with its lead, and the first
        warning's lead is the same."""
        trends = [w for w in before.pre_alarm if w[1].startswith("trend_")]
        return self.first_lead == before.first_lead and all(w in self.pre_alarm for w in trends)


def incident_config(shipped: AlertsConfig, stage: str) -> AlertsConfig:
    """The deployment's alert settings with the test receiver at one of :data:`STAGES`."""
    landed, after = stage != "before", stage == "after"
    return dataclasses.replace(
        shipped, mqtt=True, receivers=(RECEIVER,), routes=(Route(receivers=("desk",)),),
        supersede_warnings=landed, supersede_warnings_under_power_off=after,
        supersede_level_shifts=after,
        inhibit=dataclasses.replace(shipped.inhibit, area_alarm_over_warnings=landed))


def measure(mine: Mine, scenario: str, detectors: DetectorConfig, alerts: AlertsConfig, *,
            seed: int = 0) -> Quality:
    """Play one scenario on one mine through detectors and dispatcher (module docstring)."""
    registry = Registry.build((mine,))
    published: list[bytes] = []
    with tempfile.TemporaryDirectory() as folder:
        record = AlertRecord(Path(folder) / "alerts.db")
        dispatcher = AlertDispatcher(registry, Names(), record, config_hash="evaluation",
                                     publish=lambda topic, payload: published.append(payload),
                                     config=alerts)
        dispatcher.restore()
        now = START_MS
        for now, events in play(registry, mine, scenario, detectors, None, seed):
            dispatcher.apply(events, now)
        for tick in range(now + 1000, now + 1000 * TAIL_S, 1000):
            dispatcher.apply([], tick)
        history = record.history()
        rows = dispatcher.outbox.rows()
        suppressed = len(dispatcher.supersede.suppressed())
        dispatcher.close()
        record.close()
    truth = ground_truth(mine, scenario, start_ms=START_MS, seed=seed)
    must = [e for e in truth["alerts"] if e["fires"]]
    ended = {a.id: a.ts for a in history if a.state == "resolved"}
    shown = [(Fired(a.sensor, a.rule, a.condition, a.ts,
                    a.scope if a.condition == "substation_silent" else ""), ended.get(a.id))
             for a in history if a.state == "firing"]
    in_time = sum(any(meets(e, f) and f.ts <= e["by_ms"] and (end is None or end >= e["from_ms"])
                      for f, end in shown) for e in must)
    area = {s.id: s.area for s in registry.sensors}
    noise = sum(1 for row in rows for a in row.notification.alerts
                if a.state == "firing" and is_early_warning(a.rule, a.condition)
                and _alarm_open(history, a, area, row.created_at))
    alarms = [a.ts for a in history if a.state == "firing" and is_alarm(a.rule, a.severity)]
    first = min(alarms, default=None)
    pre = tuple((a.sensor, a.condition, (first - a.ts) / 60_000) for a in history
                if first is not None and a.state == "firing" and a.ts < first
                and is_early_warning(a.rule, a.condition))
    warned = [a.ts for a in history if a.state == "firing" and (
        is_early_warning(a.rule, a.condition) or a.condition == "warning_high")]
    first_lead = (None if first is None or not warned or min(warned) >= first
                  else (first - min(warned)) / 60_000)
    marked = {a.id for a in history if a.inhibited_by}
    return Quality(len(published), sum(a.id in marked for a in history), len(rows),
                   _wrong(history), noise, in_time, len(must), pre, first_lead, suppressed)


def _wrong(history: Sequence[Alert]) -> int:
    """Early warnings opening, in the record's order, while their point's alarm is open."""
    alarms: dict[str, set[str]] = {}
    wrong = 0
    for a in history:
        if is_alarm(a.rule, a.severity):
            points = alarms.setdefault(a.sensor, set())
            (points.add if a.state == "firing" else points.discard)(a.id)
        elif a.state == "firing" and is_early_warning(a.rule, a.condition):
            wrong += bool(alarms.get(a.sensor))
    return wrong


def _alarm_open(history: Sequence[Alert], warning: Alert, area: dict[str, str],
                at_ms: int) -> bool:
    """Was an alarm or power-off of the warning's point, or of its kind in its area, open at
    ``at_ms``?"""
    opened: dict[str, Alert] = {}
    for a in history:
        if a.ts > at_ms:
            break
        if not is_alarm(a.rule, a.severity):
            continue
        if a.state == "firing":
            opened[a.id] = a
        else:
            opened.pop(a.id, None)
    return any(a.sensor == warning.sensor or (a.kind == warning.kind
                                              and area.get(a.sensor) == area.get(warning.sensor))
               for a in opened.values())


def _lead(minutes: float | None) -> str:
    return "-" if minutes is None else f"{minutes:.1f}"


def _leads(pre: Sequence[tuple[str, str, float]]) -> str:
    return ", ".join(f"{s} {c} {lead:.1f}" for s, c, lead in pre) or "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="evaluate only this scenario (repeatable; default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    deployment = load_deployment(None)
    totals = {stage: [0, 0] for stage in STAGES}
    print("| scenario | mine | incidents | published before → landed → after"
          " | notified before → landed → after"
          " | suppressed | wrong before → after | noise before → after"
          " | truth in time before → after | first warning's lead (min) before → after"
          " | pre-alarm warnings (lead, min) before | after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    failures = []
    for scenario in args.scenario or list(SCENARIOS):
        for mine in deployment.mines:
            try:
                before, landed, after = (
                    measure(mine, scenario, deployment.detectors,
                            incident_config(deployment.alerts, stage), seed=args.seed)
                    for stage in STAGES)
            except ValueError as error:  # the mine cannot play it (no goaf points …)
                print(f"| {scenario} | {mine.id} | skipped: {error} ||||||||||")
                continue
            incidents = 1 if before.entries else 0
            for name, q in zip(STAGES, (before, landed, after), strict=True):
                totals[name][0] += q.published
                totals[name][1] += q.notified
            print(f"| {scenario} | {mine.id} | {incidents} | {before.published} → "
                  f"{landed.published} → {after.published} ({after.inhibited}) | "
                  f"{before.notified} → {landed.notified} → {after.notified} | "
                  f"{after.suppressed} | {before.wrong} → {after.wrong} | "
                  f"{before.noise} → {after.noise} | {before.in_time}/"
                  f"{before.entries} → {after.in_time}/{after.entries} | "
                  f"{_lead(before.first_lead)} → {_lead(after.first_lead)} | "
                  f"{_leads(before.pre_alarm)} | {_leads(after.pre_alarm)} |",
                  flush=True)
            if (after.wrong or after.noise or after.in_time < before.in_time
                    or not after.keeps_warnings_of(before)):
                failures.append(f"{scenario} {mine.id}")
    print("| all | | | " + " → ".join(str(totals[s][0]) for s in STAGES) + " | "
          + " → ".join(str(totals[s][1]) for s in STAGES) + " ||||||||")
    print("\ntargets (nothing wrong, no noise, truth in time, trend warnings and the first"
          " warning's lead kept): "
          + ("met" if not failures else "MISSED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
