"""Silences: maintenance and calibration windows in which matching alerts are not notified.

A silence says who, why, which alerts (matchers on mine, sensor, kind, rule, severity and area;
an empty matcher matches anything) and from when to when (epoch ms). It applies while
``starts_at <= now < ends_at`` and stops applying by itself at ``ends_at``; ``unsilence`` ends it
early by moving ``ends_at`` to now. Silenced alerts are still recorded — a silence only holds
back notifications, and never a methane power-off (the dispatcher's safety floor).

Silences live in table ``silence`` of the alerts state file, so ``jinmei alerts silence`` (a
separate process) and the service share them; the service rereads them about once a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from alerts.db import StateDB
from alerts.wire import Alert

__all__ = ["Matchers", "Silence", "SilenceBook"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS silence (
    id         TEXT    PRIMARY KEY,
    mine       TEXT    NOT NULL,
    sensor     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    rule       TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    area       TEXT    NOT NULL,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    comment    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Matchers:
    """Which alerts a silence covers: equality on each non-empty field."""

    mine: str = ""
    sensor: str = ""
    kind: str = ""
    rule: str = ""
    severity: str = ""
    area: str = ""

    def matches(self, alert: Alert, area: str) -> bool:
        wanted = (self.mine, self.sensor, self.kind, self.rule, self.severity, self.area)
        actual = (alert.mine, alert.sensor, alert.kind, alert.rule, alert.severity, area)
        return all(not w or w == a for w, a in zip(wanted, actual, strict=True))

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name)) or "everything"


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    matchers: Matchers
    starts_at: int
    ends_at: int
    created_by: str
    comment: str
    created_at: int

    def active(self, now_ms: int) -> bool:
        return self.starts_at <= now_ms < self.ends_at


class SilenceBook:
    """The silences of a deployment, kept in the alerts state file."""

    def __init__(self, db: StateDB) -> None:
        self.db = db
        db.ensure(SCHEMA)
        self._cache: list[Silence] = []

    def add(self, matchers: Matchers, starts_at: int, ends_at: int, created_by: str,
            comment: str, now_ms: int) -> Silence:
        if ends_at <= starts_at:
            raise ValueError("a silence must end after it starts")
        identity = f"{matchers}\x1f{starts_at}\x1f{ends_at}\x1f{created_by}\x1f{now_ms}"
        silence = Silence(hashlib.sha256(identity.encode()).hexdigest()[:12], matchers,
                          starts_at, ends_at, created_by, comment, now_ms)
        m = matchers
        with self.db.transaction() as c:
            c.execute("INSERT INTO silence VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      (silence.id, m.mine, m.sensor, m.kind, m.rule, m.severity, m.area,
                       starts_at, ends_at, created_by, comment, now_ms))
        return silence

    def end(self, silence_id: str, now_ms: int) -> bool:
        """End a silence now (``unsilence``); False when no such silence is still to come or
        in force."""
        with self.db.transaction() as c:
            cursor = c.execute("UPDATE silence SET ends_at = ? WHERE id = ? AND ends_at > ?",
                               (now_ms, silence_id, now_ms))
            c.execute("UPDATE silence SET starts_at = ends_at WHERE id = ? AND starts_at > ends_at",
                      (silence_id,))
            return cursor.rowcount == 1

    def all(self) -> list[Silence]:
        rows = self.db.query("SELECT * FROM silence ORDER BY starts_at, id")
        return [Silence(str(r[0]), Matchers(*(str(x) for x in r[1:7])),
                        int(r[7]), int(r[8]),
                        str(r[9]), str(r[10]), int(r[11]))
                for r in rows]

    def refresh(self) -> None:
        """Reread the silences (another process may have added or ended one)."""
        self._cache = self.all()

    def mutes(self, alert: Alert, area: str, now_ms: int) -> str | None:
        """Why ``alert`` is silenced now (the silence's id, author and reason), or None."""
        for s in self._cache:
            if s.active(now_ms) and s.matchers.matches(alert, area):
                return f"silence {s.id} by {s.created_by}: {s.comment}"
        return None
