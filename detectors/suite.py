"""All detectors of a deployment, run as one.

The pipeline sees a single detector: :class:`DetectorSuite` feeds every batch to each member,
concatenates their events in member order and ORs their status bits. ``tick(now)`` runs the
members that also watch the clock (a detector with a ``tick`` method — e.g. one that must
notice silence when no message arrives at all) and is called by the service about once a
second even when no telemetry comes in.

The members (each module's docstring says what it flags, why, and the source of its limits):

- ``detectors.limits`` — statutory alarm / power-off / restore limits (``limit_alarm``,
  ``limit_power_off``), fail-safe on device status;
- ``detectors.faults`` — ``sensor_fault``: device fault, out of range, spike, stuck;
- ``detectors.trend`` — ``trend``: forecast time to the alarm limit, level shift, working
  face / return airway mismatch;
- ``detectors.drift`` — ``sensor_fault`` / ``drift``: a sensor creeping away from the steady
  neighbours on its air path (a calibration suspicion, warning);
- ``detectors.silence`` — ``no_data``: silent sensors, whole silent substations (clock-driven);
- ``detectors.interlocks`` — ``feed_fault``: power still on after a methane power-off or with
  every local fan of a heading stopped.

Calibrating readings (标校) never raise anything in any of them.

Event time (issue 18): every reading-driven member judges readings on their own times, as if
each had arrived alone and in time order, so any split of the same readings into messages and
batches gives the same events with the same ``ts`` (``tests/test_detector_batching.py``). Only
``no_data`` depends on the service clock (``tick(now)``), by its nature.

Late events: ``update(batch, now)`` marks an event ``late`` when its reading (``ts``) is older
than ``now`` by more than :data:`LATE_AFTER_MS` — the alert then says it is about the past
(补传 / late) and still carries the reading's own time as ``started_at``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from config.model import DetectorConfig, Registry
from config.readings import ReadingBatch
from detectors.base import Detection, Detector
from detectors.drift import DriftDetector
from detectors.faults import SensorFaultDetector
from detectors.interlocks import InterlockDetector
from detectors.limits import LimitDetector
from detectors.silence import NoDataDetector
from detectors.trend import TrendDetector

__all__ = ["LATE_AFTER_MS", "DetectorSuite", "build_detectors"]

# A reading judged more than this after its own time makes a late event. jinmei's own: twice the
# longest patrol period AQ 6201-2019 allows (30 s), far above a live feed's delay (batching and
# network, about a second), so only buffered, resent or replayed readings are late.
LATE_AFTER_MS = 60_000


class DetectorSuite:
    """Several detectors behind the one :class:`~detectors.base.Detector` interface.

    Examples
    --------
    Every detector of a deployment, on the longwall: face methane (T1) at 1.6 % and 1.7 %, its
    return airway (T2) at 0.9 %, the feed sensor (KD) showing power. Events come in member
    order — the limit detector's alarm and power-off; then, at the second batch, the trend
    detector's face/return mismatch and the interlock's feed abnormality (still live 10 s
    after the power-off) — and the clock finds substation S01 silent when nothing more arrives
    (the value of a no-data event is the sensor's last reading, not a duration):

    >>> from detectors.examples import KD, T1, T2, at, longwall, print_events, readings
    >>> suite = build_detectors(longwall())
    >>> print_events(suite.update(readings([(T1, 0, 1.6), (T2, 0, 0.9), (KD, 0, 1)]), at(0)))
    ('T1-1101', 'alarm_high', True, 'alarm', 1.6)
    ('T1-1101', 'power_off', True, 'critical', 1.6)
    >>> print_events(suite.update(readings([(T1, 10, 1.7), (T2, 10, 0.9), (KD, 10, 1)]), at(10)))
    ('T1-1101', 'face_return_mismatch', True, 'warning', 0.75)
    ('KD-1101', 'feed_on_power_off', True, 'critical', 1.0)
    >>> print_events(suite.tick(at(60)))
    ('T1-1101', 'substation_silent', True, 'critical', 1.7)
    """

    def __init__(self, members: Sequence[Detector]) -> None:
        self.members = tuple(members)
        self.conditions = tuple(c for d in self.members for c in d.conditions)
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError(f"two detectors claim one condition name: {self.conditions}")

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        found = _merge([d.update(batch, now) for d in self.members], len(batch))
        if any(now - e.ts > LATE_AFTER_MS for e in found.events):
            found = Detection([replace(e, late=True) if now - e.ts > LATE_AFTER_MS else e
                               for e in found.events], found.status_bits)
        return found

    def tick(self, now: int) -> Detection:
        """Clock-driven findings (no readings involved): events only, no status bits."""
        ticking = [d.tick(now) for d in self.members if hasattr(d, "tick")]
        return _merge(ticking, 0)

    def active(self) -> list[tuple[int, str]]:
        return sorted(a for d in self.members for a in d.active())

    def restore(self, active: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Hand each carried-over condition to the detector that owns it; returns those no
        detector owns (one since removed from the configuration) for the caller to report."""
        for d in self.members:
            d.restore([a for a in active if a[1] in d.conditions])
        return [a for a in active if a[1] not in self.conditions]

    def recall(self, last_readings: Mapping[int, float]) -> None:
        """Hand the last readings that restored no-data episodes showed (sensor index → value)
        to the members that keep them (a detector with a ``recall`` method: the no-data one,
        whose endings may show them; see "Restart" in detectors/silence.py)."""
        for d in self.members:
            if hasattr(d, "recall"):
                d.recall(last_readings)


def _merge(detections: list[Detection], n: int) -> Detection:
    bits = np.zeros(n, dtype=np.uint16)
    for d in detections:
        if len(d.status_bits):
            bits |= d.status_bits
    return Detection([e for d in detections for e in d.events], bits)


def build_detectors(registry: Registry, config: DetectorConfig | None = None) -> DetectorSuite:
    """The detectors every deployment runs, in the order their events are reported.

    ``config`` is the deployment's ``[detectors]`` section (defaults when None). The limit
    detector comes first: the interlocks read its power-off state after it saw the batch.
    """
    config = DetectorConfig() if config is None else config
    limits = LimitDetector(registry)
    return DetectorSuite([limits, SensorFaultDetector(registry, config),
                          TrendDetector(registry, config), DriftDetector(registry, config),
                          NoDataDetector(registry, config),
                          InterlockDetector(registry, limits, config)])
