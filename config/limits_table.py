"""The statutory limits table as loaded from ``config/limits.toml``: vocabularies and rows.

:class:`LimitsTable` holds the sensor kinds (unit, Chinese / English names, MT/T 1201.1 type
code, default measuring range), the location types (names and conventional tag) and the
``[[limit]]`` rows, each naming its source. ``resolve(kind, location)`` picks the row that
governs a sensor: the exact (kind, location) row, else the kind's ``"*"`` row, else a
:class:`~config.errors.ConfigError` — a sensor without a governing row is a configuration
mistake, never "no limits". The loader (``config.loader``) builds these values; alerts read
the names from here for their messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property

from config.errors import ConfigError
from config.model import Limits

__all__ = [
    "ANY_LOCATION",
    "LOWER_THRESHOLDS",
    "THRESHOLDS",
    "UPPER_THRESHOLDS",
    "KindInfo",
    "LimitRow",
    "LimitsTable",
    "LocationInfo",
    "consistency_problem",
    "with_release_defaults",
]

ANY_LOCATION = "*"

# Stricter means lower for these (they fire, or keep firing, when the value is high) …
UPPER_THRESHOLDS = ("alarm_high", "release_high", "power_off", "restore", "warning_high")
# … and higher for these (they fire when the value is low).
LOWER_THRESHOLDS = ("alarm_low", "release_low")
THRESHOLDS = UPPER_THRESHOLDS + LOWER_THRESHOLDS


@dataclass(frozen=True, slots=True)
class KindInfo:
    """A sensor kind (``[kinds.<id>]``): Chinese ``name``, ``value_type`` MN analog / KG switch."""

    name: str
    name_en: str
    unit: str
    value_type: str
    type_code: str
    range_low: float
    range_high: float


@dataclass(frozen=True, slots=True)
class LocationInfo:
    """A location type (``[locations.<id>]``); ``tag`` is the conventional sensor tag (T0, T1 …)."""

    name: str
    name_en: str
    tag: str


@dataclass(frozen=True, slots=True)
class LimitRow:
    """One ``[[limit]]`` row: ``limits`` holds the values exactly as stated (an unstated release
    value stays ``None``, see :func:`with_release_defaults`)."""

    kind: str
    location: str
    limits: Limits
    note: str = ""


@dataclass(frozen=True)
class LimitsTable:
    """The whole table; ``source_file`` is the file it came from (named in its errors)."""

    kinds: Mapping[str, KindInfo]
    locations: Mapping[str, LocationInfo]
    rows: tuple[LimitRow, ...]
    source_file: str = ""

    @cached_property
    def _by_key(self) -> dict[tuple[str, str], LimitRow]:
        return {(row.kind, row.location): row for row in self.rows}

    def resolve(self, kind: str, location: str) -> LimitRow:
        """The row governing sensors of ``kind`` at ``location``; ConfigError if there is none."""
        row = self._by_key.get((kind, location)) or self._by_key.get((kind, ANY_LOCATION))
        if row is None:
            raise ConfigError(self.source_file, "",
                              f"no limit row for kind {kind!r} at location {location!r} and no "
                              f"({kind!r}, {ANY_LOCATION!r}) row: add one to the limits table")
        return row


def with_release_defaults(limits: Limits) -> Limits:
    """An alarm clears where it fired unless the rule says otherwise (limits.toml header)."""
    return replace(
        limits,
        release_high=limits.alarm_high if limits.release_high is None else limits.release_high,
        release_low=limits.alarm_low if limits.release_low is None else limits.release_low,
    )


# (lower, higher, why): each pair, when both are set, must satisfy lower <= higher.
_ORDER = (
    ("alarm_high", "power_off", "power-off must not come before the alarm"),
    ("restore", "power_off", "power is restored below the power-off limit"),
    ("release_high", "alarm_high", "an upper alarm clears at or below where it fired"),
    ("warning_high", "alarm_high", "the warning comes before the alarm"),
    ("alarm_low", "release_low", "a lower alarm clears at or above where it fired"),
    ("alarm_low", "alarm_high", "the allowed range must not be empty"),
)


def consistency_problem(limits: Limits) -> str | None:
    """Why these (defaulted) limits contradict each other, or None when they do not."""
    if (limits.power_off is None) != (limits.restore is None):
        return "power_off and restore go together: a power-off needs the value that restores power"
    for lower, higher, why in _ORDER:
        low, high = getattr(limits, lower), getattr(limits, higher)
        if low is not None and high is not None and low > high:
            return f"{lower} {low:g} > {higher} {high:g}: {why}"
    return None
