"""The alert as it goes out on ``jinmei/<mine>/alerts`` (wire contract v1, design.md).

The same JSON goes to every channel. Fields named by the contract are never renamed; new
fields may be added. ``started_at`` and ``ts`` are epoch milliseconds, UTC.

``late`` (added field, issue 18): true when the transition's reading (``ts``; for a firing
transition that is ``started_at``) was already older than the service clock by more than
60 s (``detectors.suite.LATE_AFTER_MS``) when jinmei judged it — a back-filled resend after an
outage (断电续传) or a replayed old recording. The times stay the readings' own; the message
says 补传 / late. Absent in records and payloads written before the field existed: false.
"""

from __future__ import annotations

import msgspec

__all__ = ["Alert", "encode_alert"]


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
    late: bool = False


_encoder = msgspec.json.Encoder()


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)
