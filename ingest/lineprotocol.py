"""InfluxDB line protocol for readings and alert transitions, built in bulk.

Storage schema (design.md): measurement ``reading`` with tags ``kind``, ``location``, ``mine``,
``sensor`` and fields ``value`` (float) and ``status`` (integer bitmask, ``status=5i``);
measurement ``alert`` with tags ``kind``, ``mine``, ``rule``, ``sensor``, ``severity``, ``state``
and fields ``id``, ``value``, ``limit``, ``message``. Timestamps are epoch milliseconds (write
with precision ``ms``).

Speed: the tag part of a reading line depends only on the sensor, so it is escaped once per
registry and cached; a batch is then one list comprehension over ``tolist()`` columns and one
``join`` (no per-reading numpy scalar, no ``Point`` object: ``influxdb-client`` manages about
70k points/s through ``Point``, this well over 1M lines/s).

Escaping follows the line-protocol reference: in tag keys and values a backslash, comma,
equals sign and space are backslash-escaped; in string fields a backslash and double quote.
Failure behaviour: line protocol cannot carry a newline in a tag or a non-finite float, so a
tag with a line break and a non-finite reading value raise :class:`ValueError` (never a
silently corrupted line). A non-finite alert ``value``/``limit`` (a ``no_data`` alert has no
reading) is left out of that alert's line; a line break in an alert string field is written as
the two characters ``\\n``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import numpy as np

from alerts.wire import Alert
from config.model import Registry
from config.readings import ReadingBatch

__all__ = ["alert_lines", "escape_tag", "reading_lines"]

_TAG_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def escape_tag(text: str) -> str:
    """Escape a tag key or value; raises ValueError for a line break (no escape exists)."""
    if "\n" in text or "\r" in text:
        raise ValueError(f"line protocol cannot carry a line break in a tag: {text!r}")
    return text.translate(_TAG_ESCAPES)


def _escape_string(text: str) -> str:
    return text.translate(_STRING_ESCAPES)


def _tag_set(measurement: str, tags: dict[str, str]) -> str:
    """``measurement,k1=v1,k2=v2 `` with keys sorted (Influx's preferred order); empty tags
    are left out because line protocol has no empty tag value."""
    pairs = ",".join(f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)
    return f"{measurement},{pairs} "


# id(registry) → (weak reference proving it is still that registry, per-sensor prefixes)
_prefix_cache: dict[int, tuple[weakref.ref[Registry], list[str]]] = {}


def _reading_prefixes(registry: Registry) -> list[str]:
    key = id(registry)
    hit = _prefix_cache.get(key)
    if hit is not None and hit[0]() is registry:
        return hit[1]
    prefixes = [_tag_set("reading", {"kind": s.kind, "location": s.location, "mine": s.mine,
                                     "sensor": s.id}) for s in registry.sensors]
    # Registry is unhashable (it holds arrays), so the cache is keyed by id and the entry
    # is dropped when the registry is collected, before its id can be reused.
    ref = weakref.ref(registry, lambda _: _prefix_cache.pop(key, None))
    _prefix_cache[key] = (ref, prefixes)
    return prefixes


def reading_lines(batch: ReadingBatch, registry: Registry) -> str:
    """The batch as newline-separated ``reading`` lines (no trailing newline; "" when empty)."""
    if not np.isfinite(batch.value).all():
        bad = int(np.flatnonzero(~np.isfinite(batch.value))[0])
        sensor = registry.sensors[int(batch.sensor[bad])].key
        raise ValueError(f"reading of {sensor} at ts={int(batch.ts[bad])} is not finite: "
                         f"{batch.value[bad]!r}")
    prefixes = _reading_prefixes(registry)
    # repr(float) is the shortest string that parses back to the same double.
    return "\n".join([f"{prefixes[i]}value={v!r},status={s}i {t}"
                      for i, v, s, t in zip(batch.sensor.tolist(), batch.value.tolist(),
                                            batch.status.tolist(), batch.ts.tolist(),
                                            strict=True)])


def _alert_line(alert: Alert) -> str:
    # `condition` is a tag so that two conditions of one sensor changing in the same
    # millisecond (an alarm and a power-off) stay two points instead of overwriting each other.
    tags = _tag_set("alert", {"condition": alert.condition, "kind": alert.kind,
                              "mine": alert.mine, "rule": alert.rule, "sensor": alert.sensor,
                              "severity": alert.severity, "state": alert.state})
    fields = [f'id="{_escape_string(alert.id)}"']
    fields += [f"{name}={number!r}" for name, number in (("limit", float(alert.limit)),
                                                         ("value", float(alert.value)))
               if math.isfinite(number)]
    fields.append(f'message="{_escape_string(alert.message)}"')
    return f"{tags}{','.join(fields)} {alert.ts}"


def alert_lines(alerts: Sequence[Alert]) -> str:
    """Alert transitions as newline-separated ``alert`` lines (Grafana annotations)."""
    return "\n".join(_alert_line(a) for a in alerts)
