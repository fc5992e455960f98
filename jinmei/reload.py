"""Reload on SIGHUP: the deployment, mines and limits re-read and swapped in while running.

``kill -HUP <pid>`` (``systemctl reload jinmei``) makes ``jinmei run`` call
:func:`reload_service`, which:

1. loads and checks every file again (the same loader as at start). If anything is wrong it
   logs ``reload refused`` with the file, the key and what was expected, and the service goes
   on with the configuration it has — a typo never stops the monitoring;
2. logs what changed (mines and sensors added, removed, changed with each changed field;
   changed sections) and the new config hash — the hash the alert record, the networking
   definitions (CDDY is sent again for a new hash) and ``jinmei_build_info`` carry;
3. hands the new deployment to the ingest worker, which swaps it in at its next batch boundary
   (:meth:`jinmei.pipeline.Pipeline.request_reload`): the open episodes of removed sensors are
   resolved with the reason ``removed from configuration``; then codec, detectors and alert
   dispatcher are rebuilt on the new registry and the detectors are given back the conditions
   of the open episodes and pending timers, exactly as at a restart; the store maps sensor
   indexes through the new registry from then on;
4. replaces the alert delivery thread (receivers may have changed) and the regulator
   networking thread on the new configuration.

What survives: everything in the alerts state file (open episodes and their ids, alert
history, pending timers, notification groups, acknowledgements, silences, the outbox) and the
networking queue — because a rebuilt dispatcher restores from them as a restarted service
does, and the swap happens between batches, with nothing decoded but unstored. New sensors
start with empty state.

Decision — detector state is rebuilt, not carried over by key: every detector keeps numpy
arrays indexed by registry position (history rings, stuck timers, trend windows) and has no
export/import of that state; adding one to six detectors for a rare operation would be much
code to get subtly wrong. The cost: after a reload the windowed detectors (trend, level
shift, drift, stuck) refill their windows before they judge again, and a sensor already
silent is found silent ``no_data_periods`` after the reload — the same as after a restart,
which the pipeline is built and tested to survive. Firing conditions are not lost: they come
back from the open episodes, so nothing fires twice and every resolve keeps its episode id.
The 5-minute networking statistics of the window in progress cover only the part after the
reload.

Needs a restart (the reload keeps the running value and logs a warning): ``[broker]``,
``[store]``, ``[ingest]`` and ``[http]`` — connections, files and threads the service opened
at start. A reload that changed nothing (same config hash) is logged and does nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alerts.dispatch import AlertDispatcher
from alerts.episodes import Names
from config.errors import ConfigError
from config.model import Deployment, Limits, Sensor
from config.readings import ReadingBatch

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["RESTART_ONLY", "Reload", "describe_changes", "load_for_reload", "reload_service"]

log = logging.getLogger(__name__)

RESTART_ONLY = ("broker", "store", "ingest", "http")
_SECTIONS = ("alerts", "detectors", "networking")


@dataclass
class Reload:
    """A validated new deployment on its way to the ingest worker."""

    deployment: Deployment
    names: Names
    removed: frozenset[str]  # sensor keys (mine/id) no longer configured
    on_stored: Callable[[ReadingBatch], None] | None
    done: threading.Event = field(default_factory=threading.Event)
    old_dispatcher: AlertDispatcher | None = None  # set by the worker when it swapped


def _sensor_changes(old: Sensor, new: Sensor) -> list[str]:
    out = []
    for f in dataclasses.fields(Sensor):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name == "limits":
            out += [f"limits.{g.name} {getattr(before, g.name)} → {getattr(after, g.name)}"
                    for g in dataclasses.fields(Limits)
                    if getattr(before, g.name) != getattr(after, g.name)]
        elif before != after:
            out.append(f"{f.name} {before} → {after}")
    return out


def describe_changes(old: Deployment, new: Deployment) -> str:
    """What a reload changes, in one line for the log."""
    before = {s.key: s for s in old.registry.sensors}
    after = {s.key: s for s in new.registry.sensors}
    parts = []
    old_mines, new_mines = {m.id for m in old.mines}, {m.id for m in new.mines}
    if added_mines := sorted(new_mines - old_mines):
        parts.append(f"mines added: {', '.join(added_mines)}")
    if removed_mines := sorted(old_mines - new_mines):
        parts.append(f"mines removed: {', '.join(removed_mines)}")
    if added := sorted(after.keys() - before.keys()):
        parts.append(f"sensors added: {', '.join(added)}")
    if removed := sorted(before.keys() - after.keys()):
        parts.append(f"sensors removed: {', '.join(removed)}")
    for key in sorted(before.keys() & after.keys()):
        if changes := _sensor_changes(before[key], after[key]):
            parts.append(f"{key}: {', '.join(changes)}")
    parts += [f"[{name}] changed" for name in _SECTIONS
              if getattr(old, name) != getattr(new, name)]
    return "; ".join(parts) or "no sensor or section changed"


def load_for_reload(load: Callable[[], Deployment],
                    current: Deployment) -> tuple[Deployment | None, str]:
    """(the new deployment, "applied"), or (None, "refused" | "unchanged") — logged — when it
    is broken or the same as the current one."""
    try:
        new = load()
    except ConfigError as exc:
        log.error("reload refused: %s — still running on config hash %s", exc,
                  current.config_hash)
        return None, "refused"
    except Exception:  # a reload must never take the monitoring down
        log.exception("reload failed — still running on config hash %s", current.config_hash)
        return None, "refused"
    if new.config_hash == current.config_hash:
        log.info("reload: configuration unchanged (config hash %s)", current.config_hash)
        return None, "unchanged"
    if kept := [name for name in RESTART_ONLY if getattr(new, name) != getattr(current, name)]:
        log.warning("reload: [%s] changed; the running value is kept until the next restart",
                    "], [".join(kept))
    return dataclasses.replace(
        new, **{name: getattr(current, name) for name in RESTART_ONLY}), "applied"


def reload_service(service: Service, load: Callable[[], Deployment],
                   stop: threading.Event) -> bool:
    """Re-read the configuration with ``load`` and swap it into ``service`` (see the module
    docstring); False when it was refused or unchanged. Returns early if ``stop`` is set
    while the worker finishes its batch."""
    from jinmei.service import delivery_worker, names_from_limits, networking_worker

    current = service.deployment
    new, outcome = load_for_reload(load, current)
    if new is None:
        service.pipeline.stats.reloads[outcome] += 1
        return False
    log.info("reload: config hash %s → %s: %s", current.config_hash, new.config_hash,
             describe_changes(current, new))
    before = {s.key for s in current.registry.sensors}
    networking = networking_worker(new, service.record, service.pipeline.clock)
    reload = Reload(new, names_from_limits(new),
                    frozenset(before - {s.key for s in new.registry.sensors}),
                    networking.observe if networking else None)
    service.pipeline.request_reload(reload)
    waited = 0
    while not reload.done.wait(1.0):
        if stop.is_set():  # shutting down: the next start reads the new files anyway
            return False
        waited += 1
        if waited == 10:  # the worker holds a batch it cannot store, or it is stuck
            log.warning("reload waits for the ingest worker to finish its batch in hand "
                        "(is the store failing? see /readyz)")
    # Delivery: the old thread finishes the send in hand, then the new one takes the outbox;
    # it becomes the service's (which the supervisor watches) only once it runs.
    old_delivery, old_mqtt = service.delivery, service.notify_mqtt
    delivery, notify_mqtt = delivery_worker(new, service.pipeline.dispatcher,
                                            service.pipeline.clock)
    old_delivery.stop()
    delivery.outcomes.update(old_delivery.outcomes)
    delivery.start()
    service.delivery, service.notify_mqtt = delivery, notify_mqtt
    if old_mqtt is not None:
        old_mqtt.close()
    if reload.old_dispatcher is not None:
        reload.old_dispatcher.close()
    service.replace_networking(networking)
    service.deployment = new
    service.pipeline.stats.reloads["applied"] += 1
    log.info("reload done: running config hash %s (%d sensors)", new.config_hash,
             len(new.registry))
    return True
