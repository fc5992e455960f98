"""InfluxDB line protocol for readings and alert transitions, built in bulk.

Storage schema (design.md): measurement ``reading`` with tags ``kind``, ``location``, ``mine``,
``sensor`` and fields ``value`` (float) and ``status`` (integer bitmask, ``status=5i``);
measurement ``alert`` with tags ``kind``, ``mine``, ``rule``, ``sensor``, ``severity``, ``state``
and fields ``id``, ``value``, ``limit``, ``message``. Timestamps are epoch milliseconds (write
with precision ``ms``).

Speed: the tag part of a reading line depends only on the sensor, so it is escaped once per
registry and cached. Numbers are formatted a column at a time — ``repr`` of one ``tolist()``
list, split, formats every number in C — and in a long column each distinct number only once
where the column repeats itself (one message's ``ts`` on all its readings; values quantized to
the sensors' resolution); status fields come from a table. The pieces are interleaved by list
slice assignment and joined once: no Python code per reading, no numpy scalar, no ``Point``
object (``influxdb-client`` manages about 70k points/s through ``Point``; this 3.6M lines/s on
100,000-reading batches, 2.2M on 100-reading ones: ``bench/bench_lineprotocol.py``).

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


# id(registry) → (weak reference proving it is still that registry, per-sensor line starts)
_prefix_cache: dict[int, tuple[weakref.ref[Registry], np.ndarray]] = {}
# A column is formatted by its distinct values when it repeats each one this often on average.
_REPEATS = 4
# Readings: the sample that tells whether values repeat enough; a shorter column is formatted
# directly (numpy's cost per call would outweigh what deduplication saves).
_SAMPLE = 1024
# The status field of every status below 256 (all the bits domain.md §4 defines), gathered.
_STATUS_FIELDS = np.array([f",status={s}i " for s in range(256)], dtype=object)


def _reading_prefixes(registry: Registry) -> np.ndarray:
    """Per sensor: a line break and ``reading,<tags> value=``, as an object array to gather
    per reading (the line break ends the line before)."""
    key = id(registry)
    hit = _prefix_cache.get(key)
    if hit is not None and hit[0]() is registry:
        return hit[1]
    prefixes = np.array([
        "\n" + _tag_set("reading", {"kind": s.kind, "location": s.location, "mine": s.mine,
                                    "sensor": s.id}) + "value=" for s in registry.sensors],
        dtype=object)
    # Registry is unhashable (it holds arrays), so the cache is keyed by id and the entry
    # is dropped when the registry is collected, before its id can be reused.
    ref = weakref.ref(registry, lambda _: _prefix_cache.pop(key, None))
    _prefix_cache[key] = (ref, prefixes)
    return prefixes


def _formatted(numbers: np.ndarray) -> list[str]:
    """The ``repr`` of each number, formatted in C: the shortest text that reads back as the
    same double (``repr`` of the whole list, split)."""
    return repr(numbers.tolist())[1:-1].split(", ")


def _texts(column: np.ndarray) -> list[str]:
    """:func:`_formatted` of a non-empty int or float column, each distinct value formatted
    once when a long column repeats itself."""
    n = len(column)
    if n < _SAMPLE:
        return _formatted(column)
    # Equal bits, not equal numbers: 0.0 and -0.0 are written differently.
    bits = column.view(f"i{column.itemsize}") if column.dtype.kind == "f" else column
    head = np.empty(n, dtype=bool)
    head[0] = True
    np.not_equal(bits[1:], bits[:-1], out=head[1:])
    starts = np.flatnonzero(head)
    if len(starts) * _REPEATS <= n:  # runs: one message's ts on all its readings
        texts = np.array(_formatted(column[starts]), dtype=object)
        return np.repeat(texts, np.diff(starts, append=n)).tolist()
    if len(np.unique(bits[:_SAMPLE])) * _REPEATS > _SAMPLE:
        return _formatted(column)
    # Quantized values (a sensor's resolution). A binary search among the few distinct values
    # is cheaper than the argsort behind np.unique's inverse.
    distinct = np.unique(bits)
    texts = np.array(_formatted(distinct.view(column.dtype)), dtype=object)
    return texts[np.searchsorted(distinct, bits)].tolist()


def _status_fields(status: np.ndarray) -> list[str]:
    """``,status=<s>i `` of each reading."""
    if int(status.max()) < len(_STATUS_FIELDS):
        return _STATUS_FIELDS[status].tolist()
    return [f",status={s}i " for s in status.tolist()]  # bits no producer sets: rare


def reading_lines(batch: ReadingBatch, registry: Registry) -> str:
    """The batch as newline-separated ``reading`` lines (no trailing newline; "" when empty)."""
    if not np.isfinite(batch.value).all():
        bad = int(np.flatnonzero(~np.isfinite(batch.value))[0])
        sensor = registry.sensors[int(batch.sensor[bad])].key
        raise ValueError(f"reading of {sensor} at ts={int(batch.ts[bad])} is not finite: "
                         f"{batch.value[bad]!r}")
    prefixes = _reading_prefixes(registry)
    n = len(batch)
    if n == 0:
        return ""
    # Four pieces a line, interleaved: line break and tags, value, status, ts.
    pieces: list[str] = [""] * (4 * n)
    pieces[0::4] = prefixes[batch.sensor].tolist()
    pieces[1::4] = _texts(batch.value)
    pieces[2::4] = _status_fields(batch.status)
    pieces[3::4] = _texts(batch.ts)
    pieces[0] = pieces[0][1:]  # no line break before the first line
    return "".join(pieces)


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
