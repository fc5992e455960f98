"""Line protocol: what reading_lines / alert_lines write must parse back to what went in.

The parser below follows the line-protocol reference independently of the encoder: a
backslash escapes the next character, commas split tags and fields, the first unescaped
spaces split series, fields and timestamp, double quotes enclose string fields.
"""

from __future__ import annotations

import gc
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from influxdb_client import Point, WritePrecision

from alerts.wire import Alert
from config.model import Registry
from config.readings import ReadingBatch
from ingest.lineprotocol import alert_lines, escape_tag, reading_lines
from tests.servers import sample_sensor

Parsed = tuple[str, dict[str, str], dict[str, object], int]


def split_unescaped(text: str, sep: str, quotes: bool = False) -> list[str]:
    """Split on ``sep`` where it is neither escaped nor (with ``quotes``) inside "…"."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i:i + 2])
            i += 2
            continue
        if quotes and char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text, flags=re.DOTALL)


def field_value(text: str) -> object:
    if text.startswith('"'):
        assert text.endswith('"') and len(text) >= 2
        return re.sub(r'\\([\\"])', r"\1", text[1:-1])  # strings escape only \ and "
    if text.endswith("i"):
        return int(text[:-1])
    return float(text)


def parse_line(line: str) -> Parsed:
    series = split_unescaped(line, " ")[0]  # a quote in a tag is just a character
    fields, ts = split_unescaped(line[len(series) + 1:], " ", quotes=True)
    measurement, *tag_pairs = split_unescaped(series, ",")
    tags = {}
    for pair in tag_pairs:
        key, value = split_unescaped(pair, "=")
        tags[unescape(key)] = unescape(value)
    values = {}
    for pair in split_unescaped(fields, ",", quotes=True):
        key, value = split_unescaped(pair, "=", quotes=True)
        values[unescape(key)] = field_value(value)
    return unescape(measurement), tags, values, int(ts)


def test_parser_reads_the_reference_example() -> None:
    """The parser itself, on an example written by hand from the line-protocol reference."""
    line = (r"reading,location=1101\ return\,T2,mine=da\=yan "
            r'value=0.82,status=5i,note="a \"b\" c" 17')
    assert parse_line(line) == ("reading", {"location": "1101 return,T2", "mine": "da=yan"},
                                {"value": 0.82, "status": 5, "note": 'a "b" c'}, 17)


# Any text but a line break (line protocol has no escape for it) or a lone surrogate.
one_line_chars = st.characters(codec="utf-8", exclude_characters="\n\r")
tag_text = st.text(one_line_chars, min_size=1, max_size=12)
sensor_tags = st.tuples(tag_text, tag_text, tag_text, tag_text)  # mine, sensor, kind, location
finite = st.floats(allow_nan=False, allow_infinity=False)
readings = st.tuples(st.integers(0, 2**16 - 1), finite, st.integers(0, 2**16 - 1),
                     st.integers(-2**62, 2**62))  # sensor pick, value, status, ts


def registry_of(tags: list[tuple[str, str, str, str]]) -> Registry:
    return Registry.from_sensors([sample_sensor(mine, sensor, kind, location)
                                  for mine, sensor, kind, location in tags])


def batch_of(rows: list[tuple[int, float, int, int]], n_sensors: int) -> ReadingBatch:
    return ReadingBatch(np.array([r[0] % n_sensors for r in rows], dtype=np.int32),
                        np.array([r[3] for r in rows], dtype=np.int64),
                        np.array([r[1] for r in rows], dtype=np.float64),
                        np.array([r[2] for r in rows], dtype=np.uint16))


@given(st.lists(sensor_tags, min_size=1, max_size=4, unique_by=lambda t: (t[0], t[1])),
       st.lists(readings, min_size=1, max_size=30))
def test_readings_round_trip_through_a_parser(tags, rows) -> None:
    registry = registry_of(tags)
    lines = reading_lines(batch_of(rows, len(tags)), registry).split("\n")
    assert len(lines) == len(rows)
    for line, (pick, value, status, ts) in zip(lines, rows, strict=True):
        mine, sensor, kind, location = tags[pick % len(tags)]
        parsed = parse_line(line)
        assert parsed == ("reading",
                          {"kind": kind, "location": location, "mine": mine, "sensor": sensor},
                          {"value": value, "status": status}, ts)
        # exactly the same double, not just an equal-looking one (-0.0 stays -0.0)
        assert repr(parsed[2]["value"]) == repr(value)


@given(st.tuples(*[tag_text.filter(lambda t: not {"\\", "\t"} & set(t))] * 4), readings)
def test_readings_mean_what_influxdb_clients_point_means(tags, row) -> None:
    """Cross-check with the official client's encoder. Backslashes and tabs are left out:
    Point does not escape a backslash and writes a tab as backslash-t, neither of which the
    line-protocol reference defines."""
    mine, sensor, kind, location = tags
    _, value, status, ts = row
    ours = reading_lines(batch_of([(0, value, status, ts)], 1), registry_of([tags]))
    point = (Point("reading").tag("mine", mine).tag("sensor", sensor).tag("kind", kind)
             .tag("location", location).field("value", value).field("status", status)
             .time(ts, WritePrecision.MS).to_line_protocol())
    assert parse_line(ours) == parse_line(point)


def test_prefix_is_escaped_and_sorted() -> None:
    registry = registry_of([("dayan", "T2 1101,a=b", "ch4", "longwall_return")])
    batch = ReadingBatch(np.array([0], np.int32), np.array([1795614332500], np.int64),
                         np.array([0.1 + 0.2]), np.array([5], np.uint16))
    assert reading_lines(batch, registry) == (
        r"reading,kind=ch4,location=longwall_return,mine=dayan,sensor=T2\ 1101\,a\=b "
        "value=0.30000000000000004,status=5i 1795614332500")


def test_empty_batch_is_no_lines() -> None:
    assert reading_lines(ReadingBatch.empty(), registry_of([("m", "s", "k", "l")])) == ""


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_value_is_refused_naming_the_reading(bad: float) -> None:
    registry = registry_of([("dayan", "T0-1101", "ch4", "longwall_face")])
    batch = ReadingBatch(np.zeros(2, np.int32), np.array([1, 2], np.int64),
                         np.array([0.5, bad]), np.zeros(2, np.uint16))
    with pytest.raises(ValueError, match=r"dayan/T0-1101 at ts=2 is not finite"):
        reading_lines(batch, registry)


def test_line_break_in_a_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        escape_tag("T0\n1101")
    with pytest.raises(ValueError, match="line break"):
        reading_lines(ReadingBatch.empty(), registry_of([("dayan", "T0\r", "ch4", "x")]))


def test_prefix_cache_never_serves_another_registrys_tags() -> None:
    """Registries are cached by id; a collected registry's id may be reused at once."""
    for k in range(50):
        registry = registry_of([("dayan", f"T0-{k}", "ch4", "longwall_face")])
        batch = ReadingBatch(np.zeros(1, np.int32), np.array([k], np.int64), np.array([1.0]),
                             np.zeros(1, np.uint16))
        assert parse_line(reading_lines(batch, registry))[1]["sensor"] == f"T0-{k}"
        del registry
        gc.collect()


def an_alert(**changes: object) -> Alert:
    fields: dict[str, object] = dict(
        id="dayan/T0-1101/limit_alarm/1795614332500", mine="dayan", sensor="T0-1101",
        kind="ch4", rule="limit_alarm", severity="alarm", state="firing", value=1.23, limit=1.0,
        started_at=1795614332500, ts=1795614332500, message='甲烷超限 "T0" 1.23% ≥ 1.0%')
    return Alert(**{**fields, **changes})  # type: ignore[arg-type]


def test_alert_lines_carry_tags_and_fields() -> None:
    firing, resolved = an_alert(), an_alert(state="resolved", ts=1795614392500, value=0.7)
    parsed = [parse_line(line) for line in alert_lines([firing, resolved]).split("\n")]
    tags = {"kind": "ch4", "mine": "dayan", "rule": "limit_alarm", "sensor": "T0-1101",
            "severity": "alarm"}
    assert parsed == [
        ("alert", {**tags, "state": "firing"},
         {"id": firing.id, "limit": 1.0, "value": 1.23, "message": firing.message},
         1795614332500),
        ("alert", {**tags, "state": "resolved"},
         {"id": firing.id, "limit": 1.0, "value": 0.7, "message": firing.message},
         1795614392500)]


def test_alert_without_a_reading_leaves_value_out_and_keeps_line_breaks_visible() -> None:
    silent = an_alert(rule="no_data", value=math.nan, limit=math.nan,
                      message="无数据\nno data \\ 30 s")
    _, _, fields, _ = parse_line(alert_lines([silent]))
    assert fields == {"id": silent.id, "message": "无数据\\nno data \\ 30 s"}


@given(st.text(one_line_chars))
def test_alert_message_round_trips(message: str) -> None:
    _, _, fields, _ = parse_line(alert_lines([an_alert(message=message)]))
    assert fields["message"] == message
