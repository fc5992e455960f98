"""The alert as it goes out on ``jinmei/<mine>/alerts`` (wire contract v1, design.md).

The same JSON goes to every channel. Fields named by the contract are never renamed; new
fields may be added. ``started_at`` and ``ts`` are epoch milliseconds, UTC. A ``value`` or
``limit`` that is not there is NaN in Python and ``null`` on the wire (a no-data alert on a
sensor not heard since the service started has no reading); :func:`decode_alert` and
:func:`alert_fields` read ``null`` back as NaN.

Added for alert quality (issue 17), both empty on every other transition:

- ``reason``: why a transition happened beyond its own condition — ``"superseded"`` on the
  resolve of a trend, level-shift or face/return mismatch warning that the point's limit alarm
  or power-off ended (``alerts.supersede``).
- ``inhibited_by``: on a firing warning, the id of the open alarm or power-off episode in the
  same area whose notification covers it; the warning is recorded and published, receivers are
  not notified of it while that episode is open (``alerts.inhibit``).

``late`` (added field, issue 18): true when the transition's reading (``ts``; for a firing
transition that is ``started_at``) was already older than the service clock by more than
60 s (``detectors.suite.LATE_AFTER_MS``) when jinmei judged it — a back-filled resend after an
outage (断电续传) or a replayed old recording. The times stay the readings' own; the message
says 补传 / late. Absent in records and payloads written before the field existed: false.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

__all__ = ["SYSTEM_KIND", "Alert", "alert_fields", "decode_alert", "encode_alert"]

# The kind of alerts about jinmei itself (monitoring_offline, store_fault: alerts.system);
# every other kind is a sensor's.
SYSTEM_KIND = "system"


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert transition (an episode firing or resolving)."""

    id: str
    mine: str
    sensor: str
    kind: str
    rule: str
    severity: str
    state: str
    value: float
    limit: float
    started_at: int
    ts: int
    message: str
    condition: str = ""
    unit: str = ""
    location: str = ""
    place: str = ""
    source: str = ""
    scope: str = ""  # what a grouped condition covers: a substation id, an area
    ended_at: int | None = None
    version: int = 1
    reason: str = ""
    inhibited_by: str = ""
    late: bool = False


_encoder = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)


_FLOATS = ("value", "limit")


def alert_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Decoded JSON fields of an alert with ``null`` floats as NaN, ready for ``convert``."""
    return {**fields, **{k: math.nan for k in _FLOATS if fields.get(k, 0) is None}}


def decode_alert(payload: bytes) -> Alert:
    """The alert of :func:`encode_alert`'s JSON (``null`` value or limit → NaN)."""
    return msgspec.convert(alert_fields(msgspec.json.decode(payload)), Alert)
