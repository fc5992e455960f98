"""From detector events to alerts that have reached their receivers.

:class:`AlertDispatcher` is the alerts side of the pipeline, behind two calls: ``restore()`` at
start and ``apply(events, now_ms)`` with every batch and about once a second with no events
(the clock: pending timers, group waits, escalations and silence expiry all run on it). One
``apply`` is this pipeline, in order::

    debounce (pending / resolve hold) → supersede → episodes → mark inhibited → record
        → MQTT stream → route → inhibit → silence → group → dedup → outbox   (alerts.notify)

and the :class:`~alerts.outbox.DeliveryWorker` thread then delivers, retries and records.

- Every transition is committed to the alert record (``alerts.record``, with the config hash)
  before anything is announced: nothing announced is ever missing from the record, and muted
  alerts are recorded all the same.
- ``[alerts] mqtt`` (default true) publishes every transition at once on the wire contract's
  ``jinmei/<mine>/alerts`` through the ``publish`` function the service hands in (QoS 1; the
  dispatcher knows nothing of MQTT clients). Routed notifications go through the durable outbox.
- Safety floor: a ``limit_power_off`` is never pending (the loader refuses a ``for`` on it),
  never muted, and its group is sent at once.
- One incident, one story (issue 17): a point's open alarm or power-off supersedes its early
  warnings (``alerts.supersede``: the open one resolved with ``reason: "superseded"``, none
  opened meanwhile); so do an area's open power-off (the same gas's warnings at its other
  points) and an open rising warning of the area (a further level shift of the same gas) —
  held-back firings are written to ``alert_suppressed``, not published; and an open alarm or
  power-off in an area marks the firing early warnings of the same kind there ``inhibited_by``
  its id before they are recorded and published — the notifier's inhibit stage then holds
  them back from receivers (``alerts.inhibit``).

At start, :meth:`AlertDispatcher.restore` takes back the open episodes, the held (pending)
events, the notification groups, the escalations and the superseded conditions, and returns the
detector conditions that were firing, so a restarted service neither forgets a firing alert nor
announces it again. Open episodes stay open under their ids until a reading ends them: nothing
is resolved by the restart itself (``detectors.silence`` keeps restored silent sensors silent),
and an episode whose resolve was held when the service stopped is not firing for its detector,
so it is resolved once, when the hold runs out.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Collection, Sequence

import msgspec

from alerts.channels.base import Notification
from alerts.db import StateDB
from alerts.debounce import Debounce
from alerts.episodes import EpisodeBook, Names
from alerts.grouping import Timing
from alerts.notify import Notifier
from alerts.outbox import Outbox
from alerts.record import AlertRecord
from alerts.silences import SilenceBook
from alerts.supersede import Supersede
from alerts.wire import SYSTEM_KIND, Alert, encode_alert
from config.model import AlertsConfig, Registry
from detectors.base import Event

__all__ = ["AlertDispatcher", "alerts_topic"]

log = logging.getLogger(__name__)


_EVENT_TS = operator.attrgetter("ts")


def alerts_topic(mine: str) -> str:
    return f"jinmei/{mine}/alerts"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class AlertDispatcher:
    """Debounce → episodes → record → channels, for one deployment.

    ``publish(topic, payload)`` sends one message with QoS 1 (queued by the client while the
    broker is away). ``config`` carries the timers, receivers and routes, and ``mqtt`` (False
    keeps the stream off the broker; alerts are still recorded and routed); ``on_outbox`` is called
    when notifications were put in the outbox (the service wakes its delivery worker).
    """

    def __init__(self, registry: Registry, names: Names, record: AlertRecord, *,
                 config_hash: str, publish: Callable[[str, bytes], object],
                 config: AlertsConfig | None = None,
                 on_outbox: Callable[[], None] | None = None) -> None:
        config = config or AlertsConfig()
        self.registry = registry
        self.record = record
        self.config_hash = config_hash
        self.episodes = EpisodeBook(registry, names, config_hash)
        self.db = StateDB(record.path)
        self.debounce = Debounce(registry, self.db,
                                 for_ms={rule: _ms(s) for rule, s in config.for_s},
                                 resolve_hold_ms=_ms(config.resolve_hold_s))
        self.supersede = Supersede(registry, names, self.db, point=config.supersede_warnings,
                                   area=config.supersede_warnings_under_power_off,
                                   level_shifts=config.supersede_level_shifts)
        self.silences = SilenceBook(self.db)
        self.outbox = Outbox(self.db)
        self.notifier = Notifier(
            registry, self.db, self.outbox, self.silences, config.routes,
            Timing(_ms(config.group_wait_s), _ms(config.group_interval_s),
                   _ms(config.repeat_interval_s)),
            acknowledged=record.acknowledgements, inhibit=config.inhibit)
        self._publish = publish
        self._mqtt = config.mqtt
        self.on_outbox = on_outbox
        self._silences_read_at = -(2**62)

    def restore(self) -> list[tuple[int, str]]:
        """Reload open episodes, held events and notification state; the (sensor index,
        condition) still firing, for the detectors."""
        # System alerts (monitoring_offline, store_fault) are alerts.system's, not a detector's.
        open_alerts = [a for a in self.record.open_episodes() if a.kind != SYSTEM_KIND]
        self.episodes.restore(open_alerts)
        self.notifier.restore(open_alerts)
        held, resolving = self.debounce.restore()
        swallowed = self.supersede.restore()
        if open_alerts or held:
            log.info("restored %d open alert episode(s) and %d pending one(s)",
                     len(open_alerts), len(held))
        index, retiring = self.registry.index, self.unconfigured()
        for a in open_alerts:
            key = f"{a.mine}/{a.sensor}"
            if key in retiring:
                log.warning("open episode %s of %s: the sensor is no longer configured; it "
                            "is resolved as removed from configuration", a.id, key)
            elif key not in index:
                log.warning("open episode %s of %s: this process does not serve mine %s "
                            "(removed, or moved to another worker); it stays open in the "
                            "record", a.id, key, a.mine)
        firing = [(index[f"{a.mine}/{a.sensor}"], a.condition) for a in open_alerts
                  if f"{a.mine}/{a.sensor}" in index]
        # An open episode — or a warning swallowed under an alarm — whose resolve is held was
        # ended by its detector: not firing there (told firing, the detector would never send
        # the clear again, and the held one would end a warning that never opened).
        return sorted(((set(firing) | set(swallowed)) - set(resolving)) | set(held))

    def apply(self, events: Sequence[Event], now_ms: int) -> list[Alert]:
        """Record and send the transitions these events make (and the clock's); returns the
        recorded transitions."""
        # In the readings' time order (stable: one reading's events keep the detectors' order):
        # a batch holding minutes of a feed must give what the readings one by one would — an
        # alarm supersedes only the warnings after it, whatever else the batch brought.
        due, forced = self.supersede.apply(
            sorted(self.debounce.apply(events, now_ms), key=_EVENT_TS), self.episodes.open)
        return self._announce(self.supersede.mark(self.episodes.apply(due), forced), now_ms)

    def unconfigured(self) -> frozenset[str]:
        """The sensors (``mine/id``) of this process's mines with an open episode that the
        configuration no longer has (removed while jinmei was stopped, or by a reload that
        restarted a worker). A mine this process does not serve is not judged: it may have
        moved to another worker (a changed ``[ingest] workers``), where it is still watched."""
        index = self.registry.index
        return frozenset(key for a in self.episodes.open()
                         if (key := f"{a.mine}/{a.sensor}") not in index
                         and a.mine in self.registry.mine_ids)

    def retire(self, sensors: Collection[str], now_ms: int, config_hash: str) -> list[Alert]:
        """Resolve the open episodes of sensors (``mine/id``) a reload removed from the
        configuration, recorded under the new ``config_hash`` and sent like any transition
        (the message says ``removed from configuration``); held events of theirs are dropped.
        Returns the recorded transitions."""
        self.debounce.forget(sensors)
        self.config_hash = config_hash
        return self._announce(self.episodes.retire(sensors, now_ms), now_ms)

    def _announce(self, alerts: list[Alert], now_ms: int) -> list[Alert]:
        open_alerts = self.episodes.open()
        alerts = [self._mark_inhibited(a, open_alerts) for a in alerts]
        if alerts:
            self.record.append(alerts, self.config_hash, now_ms)
            if self._mqtt:
                for alert in alerts:
                    self._publish(alerts_topic(alert.mine), encode_alert(alert))
        if now_ms >= self._silences_read_at + 1000:  # another process may add or end one
            self.silences.refresh()
            self._silences_read_at = now_ms
        self.notifier.accept(alerts, open_alerts, now_ms)
        sent = self.notifier.flush(open_alerts, now_ms)
        if sent and self.on_outbox:
            self.on_outbox()
        return alerts

    def _mark_inhibited(self, alert: Alert, open_alerts: Sequence[Alert]) -> Alert:
        """The firing early warning with ``inhibited_by`` the area alarm that holds back its
        notification (as the notifier's inhibit stage will decide)."""
        alarm = self.notifier.inhibitor.area_alarm(alert, open_alerts)
        return alert if alarm is None else msgspec.structs.replace(alert, inhibited_by=alarm.id)

    def notifications(self) -> list[Notification]:
        """Everything ever put in the outbox, oldest first (for tests and ``alerts list``)."""
        return [row.notification for row in self.outbox.rows()]

    def close(self) -> None:
        self.db.close()
