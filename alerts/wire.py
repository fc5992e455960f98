"""The alert as it goes out on ``jinmei/<mine>/alerts`` (wire contract v1, design.md).

The same JSON goes to every channel. Fields named by the contract are never renamed; new
fields may be added. ``started_at`` and ``ts`` are epoch milliseconds, UTC.

Added for alert quality (issue 17), both empty on every other transition:

- ``reason``: why a transition happened beyond its own condition — ``"superseded"`` on the
  resolve of a trend, level-shift or face/return mismatch warning that the point's limit alarm
  or power-off ended (``alerts.supersede``).
- ``inhibited_by``: on a firing warning, the id of the open alarm or power-off episode in the
  same area whose notification covers it; the warning is recorded and published, receivers are
  not notified of it while that episode is open (``alerts.inhibit``).
"""

from __future__ import annotations

import msgspec

__all__ = ["SYSTEM_KIND", "Alert", "encode_alert"]

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


_encoder = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)
