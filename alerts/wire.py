"""The alert as it goes out on ``jinmei/<mine>/alerts`` (wire contract v1, design.md).

The same JSON goes to every channel. Fields named by the contract are never renamed; new
fields may be added. ``started_at`` and ``ts`` are epoch milliseconds, UTC.
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


_encoder = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)
