"""The telemetry codec (ingest/codec.py): wire contract v1, every reject reason, properties."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.model import Limits, Mine, Registry, Sensor
from config.readings import Status
from ingest.codec import (
    Reason,
    Reject,
    TelemetryCodec,
    encode_telemetry,
    reject_message,
    reject_messages,
)

NOW = 1_795_614_332_500  # 2026-11-25T13:45:32.5Z, 21:45:32.5 in Shanghai
TOPIC = "jinmei/dayan/telemetry"


def sensor(mine: str, sid: str, kind: str, range_high: float) -> Sensor:
    return Sensor(mine, sid, kind, "%", "longwall_face", "1101工作面", "1101", "S1", 15.0,
                  0.0, range_high, Limits(alarm_high=1.0))


SENSORS = [sensor("dayan", "T1-1101", "ch4", 4.0), sensor("dayan", "CO-1102", "co", 500.0),
           sensor("dayan", "F-1103", "feed", 1.0), sensor("qipanjing", "T0-2101", "ch4", 4.0)]
REGISTRY = Registry.from_sensors(SENSORS)
CODEC = TelemetryCodec(REGISTRY)


def payload(doc: object) -> bytes:
    return json.dumps(doc).encode()


def reading(sid: object = "T1-1101", value: object = 0.5, **extra: object) -> dict[str, object]:
    return {"sensor": sid, "value": value, **extra}


# ── accepted readings ─────────────────────────────────────────────────────────────────────────
def test_design_example_decodes_with_statuses_and_reading_ts_override() -> None:
    doc = {"ts": NOW, "readings": [reading("T1-1101", 0.82),
                                   reading("CO-1102", 7.0, status="calibrating"),
                                   reading("F-1103", 1, ts=NOW - 500, status="fault")]}
    decoded = CODEC.decode("jinmei/dayan/telemetry/S1", payload(doc), NOW)
    assert decoded.rejects == [] and decoded.messages == 1
    batch = decoded.batch
    assert batch.sensor.tolist() == [0, 1, 2]
    assert batch.ts.tolist() == [NOW, NOW, NOW - 500]
    assert batch.value.tolist() == [0.82, 7.0, 1.0]
    assert batch.status.tolist() == [0, Status.CALIBRATION, Status.SENSOR_FAULT]
    assert (batch.sensor.dtype, batch.ts.dtype, batch.value.dtype, batch.status.dtype) == (
        np.int32, np.int64, np.float64, np.uint16)


@pytest.mark.parametrize("text", ["2026-11-25T13:45:32.5Z", "2026-11-25T21:45:32.500+08:00",
                                  "2026-11-25t13:45:32.500z"])
def test_rfc3339_timestamps_with_z_and_offset_are_the_same_instant(text: str) -> None:
    doc = {"ts": text, "readings": [reading(), reading("CO-1102", 3, ts=text)]}
    decoded = CODEC.decode(TOPIC, payload(doc), NOW)
    assert decoded.rejects == []
    assert decoded.batch.ts.tolist() == [NOW, NOW]


def test_old_timestamps_are_accepted_for_replays() -> None:
    decoded = CODEC.decode(TOPIC, payload({"ts": "2001-03-04T05:06:07Z",
                                           "readings": [reading()]}), NOW)
    assert decoded.rejects == [] and decoded.batch.ts.tolist() == [983682367000]


def test_over_range_is_flagged_and_the_value_kept() -> None:
    doc = {"ts": NOW, "readings": [reading("T1-1101", 4.5), reading("T1-1101", 4.0),
                                   reading("T1-1101", 5, status="calibrating")]}
    batch = CODEC.decode(TOPIC, payload(doc), NOW).batch
    assert batch.value.tolist() == [4.5, 4.0, 5.0]
    assert batch.status.tolist() == [Status.OVER_RANGE, 0,
                                     Status.OVER_RANGE | Status.CALIBRATION]


def test_good_readings_of_a_mixed_message_survive_in_order() -> None:
    doc = {"ts": NOW, "readings": [reading("T1-1101", 0.3), reading("T1-9999", 0.4),
                                   reading("CO-1102", "high"), reading("CO-1102", 8),
                                   7, reading("F-1103", 0, status="broken"),
                                   reading("F-1103", 1)]}
    decoded = CODEC.decode(TOPIC, payload(doc), NOW)
    assert decoded.batch.sensor.tolist() == [0, 1, 2]
    assert decoded.batch.value.tolist() == [0.3, 8.0, 1.0]
    assert [r.reason for r in decoded.rejects] == [
        Reason.UNKNOWN_SENSOR, Reason.BAD_VALUE, Reason.BAD_SCHEMA, Reason.BAD_STATUS]
    # The refused reading is republished as the sender wrote it.
    assert [r.reading for r in decoded.rejects] == [
        reading("T1-9999", 0.4), reading("CO-1102", "high"), 7,
        reading("F-1103", 0, status="broken")]
    assert all(r.payload is None and r.mine == "dayan" and r.topic == TOPIC
               for r in decoded.rejects)


def test_decode_many_keeps_arrival_order_and_counts_messages() -> None:
    messages = [(TOPIC, encode_telemetry(NOW - 2000, [("T1-1101", 0.1, "ok")])),
                ("jinmei/qipanjing/telemetry", encode_telemetry(NOW - 1000,
                                                                [("T0-2101", 0.2, "ok")])),
                (TOPIC, b"not json"),
                ("jinmei/qipanjing/telemetry", payload({"ts": NOW, "readings": []})),
                (TOPIC, encode_telemetry(NOW, [("CO-1102", 9.0, "ok"), ("T0-2101", 1, "ok")]))]
    decoded = CODEC.decode_many(messages, NOW)
    assert decoded.messages == 5
    assert decoded.batch.sensor.tolist() == [0, 3, 1]
    assert decoded.batch.ts.tolist() == [NOW - 2000, NOW - 1000, NOW]
    assert [(r.reason, r.topic) for r in decoded.rejects] == [
        (Reason.BAD_JSON, TOPIC), (Reason.UNKNOWN_SENSOR, TOPIC)]
    assert decoded.rejects[1].detail == "sensor 'T0-2101' is not configured for mine 'dayan'"


# ── every reason, with its detail ─────────────────────────────────────────────────────────────
WHOLE = [  # (topic, payload, reason, mine, words the detail must contain)
    ("jinmei/dayan/alerts", payload({"ts": NOW, "readings": []}), Reason.BAD_TOPIC, "dayan",
     "'jinmei/dayan/alerts' is not jinmei/<mine>/telemetry"),
    ("sensors/T1", b"{}", Reason.BAD_TOPIC, "unknown", "'sensors/T1'"),
    ("jinmei//telemetry", b"{}", Reason.BAD_TOPIC, "unknown", "'jinmei//telemetry'"),
    ("jinmei/dayan/telemetry/S1/x", b"{}", Reason.BAD_TOPIC, "dayan", "S1/x"),
    ("jinmei/wuda/telemetry", payload({"ts": NOW, "readings": []}), Reason.UNKNOWN_MINE,
     "wuda", "mine 'wuda' is not configured"),
    (TOPIC, b"\xff\xfe{}", Reason.BAD_JSON, "dayan", "not UTF-8"),
    (TOPIC, b'{"ts": 1, "readings": [', Reason.BAD_JSON, "dayan", "not JSON"),
    (TOPIC, b'{"ts": 1795614332500, "readings": [{"sensor": "\\ud800", "value": 1}]}',
     Reason.BAD_JSON, "dayan", "unpaired UTF-16 surrogate"),
    (TOPIC, b"[1, 2]", Reason.BAD_SCHEMA, "dayan", "a JSON list, not an object"),
    (TOPIC, payload({"readings": [reading()]}), Reason.BAD_SCHEMA, "dayan", "has no ts"),
    (TOPIC, payload({"ts": NOW, "readings": {"T1-1101": 1}}), Reason.BAD_SCHEMA, "dayan",
     "readings is {'T1-1101': 1}, not a list"),
    (TOPIC, payload({"ts": "yesterday", "readings": [reading(), reading(ts=NOW)]}),
     Reason.BAD_TIMESTAMP, "dayan", "message ts 'yesterday' is not RFC 3339"),
    (TOPIC, payload({"ts": 1795614332, "readings": [reading()]}), Reason.BAD_TIMESTAMP,
     "dayan", "looks like epoch seconds"),
    (TOPIC, payload({"ts": None, "readings": []}), Reason.BAD_TIMESTAMP, "dayan",
     "ts None is neither epoch ms nor an RFC 3339 string"),
    # issue 11: 2 KB of valid JSON, nested 1,000 deep under a key the typed decode skips
    (TOPIC, b'{"ts": 1795614332500, "x": ' + b"[" * 1000 + b"]" * 1000 + b', "readings": []}',
     Reason.BAD_SCHEMA, "dayan", "nests arrays/objects 1001 levels deep; jinmei reads at most 64"),
    (TOPIC, b'{"ts": 1795614332500, "readings": [{"sensor": "T1-1101", "value": '
     + b'{"a": ' * 65 + b"1" + b"}" * 65 + b"}]}", Reason.BAD_SCHEMA, "dayan", "68 levels deep"),
    (TOPIC, b"[" * 100_000, Reason.BAD_SCHEMA, "dayan", "100000 levels deep"),
]


@pytest.mark.parametrize(("topic", "body", "reason", "mine", "words"), WHOLE)
def test_whole_message_rejects(topic: str, body: bytes, reason: Reason, mine: str,
                               words: str) -> None:
    decoded = CODEC.decode(topic, body, NOW)
    assert len(decoded.batch) == 0
    [reject] = decoded.rejects
    assert (reject.reason, reject.mine, reject.topic, reject.payload) == (
        reason, mine, topic, body)
    assert words in reject.detail and reject.reading is None


def test_nesting_the_typed_decode_skips_is_no_reason_to_refuse_good_readings() -> None:
    # Only a payload read generically (the slow path) is held to MAX_NESTING (64).
    deep = b'{"a": ' * 100 + b"1" + b"}" * 100
    body = b'{"ts": 1795614332500, "x": ' + deep + b', "readings": [{"sensor": "T1-1101", ' \
        b'"value": 1, "note": ' + deep + b"}]}"
    decoded = CODEC.decode(TOPIC, body, NOW)
    assert decoded.rejects == [] and decoded.batch.value.tolist() == [1.0]


def test_brackets_and_escaped_quotes_inside_strings_are_not_nesting() -> None:
    sid = '\\"' + "[" * 200 + '\\'  # backslash, quote, 200 brackets, backslash
    body = payload({"ts": NOW, "readings": [reading(sid), reading(value="x" + "{" * 100)]})
    decoded = CODEC.decode(TOPIC, body, NOW)
    assert [r.reason for r in decoded.rejects] == [Reason.UNKNOWN_SENSOR, Reason.BAD_VALUE]
    assert decoded.rejects[0].reading == reading(sid)


def test_an_integer_past_4300_digits_is_non_finite_not_bad_json() -> None:
    body = b'{"ts": 1795614332500, "readings": [{"sensor": "T1-1101", "value": ' + \
        b"9" * 5000 + b'}, {"sensor": "CO-1102", "value": 3}]}'
    decoded = CODEC.decode(TOPIC, body, NOW)
    assert decoded.batch.value.tolist() == [3.0]
    [reject] = decoded.rejects
    assert (reject.reason, reject.detail) == (Reason.NON_FINITE,
                                              "sensor 'T1-1101': value inf is not finite")


def test_too_large_is_refused_unread() -> None:
    codec = TelemetryCodec(REGISTRY, max_payload_bytes=64)
    body = encode_telemetry(NOW, [("T1-1101", 0.5, "ok")] * 3)
    [reject] = codec.decode(TOPIC, body, NOW).rejects
    assert reject.reason is Reason.TOO_LARGE
    assert reject.detail == f"payload of {len(body)} bytes is over the 64-byte limit"


READING = [  # (the one reading, reason, the detail)
    (reading("T1-9999"), Reason.UNKNOWN_SENSOR,
     "sensor 'T1-9999' is not configured for mine 'dayan'"),
    (reading("T0-2101"), Reason.UNKNOWN_SENSOR,  # configured, but for another mine
     "sensor 'T0-2101' is not configured for mine 'dayan'"),
    (reading(value="0.5"), Reason.BAD_VALUE, "sensor 'T1-1101': value '0.5' is not a number"),
    (reading(value=True), Reason.BAD_VALUE, "sensor 'T1-1101': value True is not a number"),
    (reading(value=None), Reason.BAD_VALUE, "sensor 'T1-1101': value None is not a number"),
    (reading(value=math.inf), Reason.NON_FINITE, "sensor 'T1-1101': value inf is not finite"),
    (reading(value=-math.inf), Reason.NON_FINITE, "sensor 'T1-1101': value -inf is not finite"),
    (reading(value=math.nan), Reason.NON_FINITE, "sensor 'T1-1101': value nan is not finite"),
    (reading(value=10**400), Reason.NON_FINITE,
     "sensor 'T1-1101': value 1000000000000000000000000000000000000000000000000000000000000000"
     "0000000000000000… overflows a double"),
    (reading(status="alarm"), Reason.BAD_STATUS,
     "sensor 'T1-1101': status 'alarm' is not one of ok, calibrating, fault"),
    ({"value": 1}, Reason.BAD_SCHEMA, "reading 1: Object missing required field `sensor`"
     " (wants {sensor: str, value: number, status?, ts?})"),
    (reading(sid=12), Reason.BAD_SCHEMA, "reading 1: Expected `str`, got `int` - at `$.sensor`"
     " (wants {sensor: str, value: number, status?, ts?})"),
    ([1, 2], Reason.BAD_SCHEMA, "reading 1: Expected `object`, got `array`"
     " (wants {sensor: str, value: number, status?, ts?})"),
    (reading(ts=1795614332000.0), Reason.BAD_TIMESTAMP,
     "sensor 'T1-1101': ts 1795614332000.0 is neither epoch ms nor an RFC 3339 string"),
    (reading(ts=1795614332), Reason.BAD_TIMESTAMP,
     "sensor 'T1-1101': ts 1795614332 is before 2000-01-01; it looks like epoch seconds, "
     "the contract wants milliseconds"),
    (reading(ts=946684799999), Reason.BAD_TIMESTAMP,
     "sensor 'T1-1101': ts 946684799999 is before 2000-01-01"),
    (reading(ts="2026-11-25T13:45:32"), Reason.BAD_TIMESTAMP,
     "sensor 'T1-1101': ts '2026-11-25T13:45:32' has no UTC offset (RFC 3339 needs one)"),
    (reading(ts=NOW + 300_001), Reason.FUTURE_TIMESTAMP,
     f"sensor 'T1-1101': ts {NOW + 300_001} is 300001 ms ahead of now "
     "(at most 300000 ms allowed)"),
    (reading(ts="2026-11-25T21:55:32.5+08:00"), Reason.FUTURE_TIMESTAMP,
     "sensor 'T1-1101': ts '2026-11-25T21:55:32.5+08:00' is 600000 ms ahead of now "
     "(at most 300000 ms allowed)"),
]


@pytest.mark.parametrize(("bad", "reason", "detail"), READING)
def test_reading_rejects_keep_the_rest_of_the_message(bad: object, reason: Reason,
                                                      detail: str) -> None:
    body = json.dumps({"ts": NOW, "readings": [reading("CO-1102", 5), bad,
                                               reading("F-1103", 1)]}).encode()
    decoded = CODEC.decode(TOPIC, body, NOW)
    assert decoded.batch.sensor.tolist() == [1, 2]
    [reject] = decoded.rejects
    assert (reject.reason, reject.detail) == (reason, detail)
    assert reject.payload is None and reject.mine == "dayan"
    # stdlib json writes NaN for nan; equal_nan compares it with the original.
    assert json.dumps(reject.reading) == json.dumps(bad)


def test_integer_one_is_a_number_but_true_is_not() -> None:
    body = b'{"ts": 1795614332500, "readings": [{"sensor": "F-1103", "value": 1},' \
           b' {"sensor": "F-1103", "value": true}]}'
    decoded = CODEC.decode(TOPIC, body, NOW)
    assert decoded.batch.value.tolist() == [1.0]
    assert [r.reason for r in decoded.rejects] == [Reason.BAD_VALUE]


def test_a_future_message_ts_refuses_only_the_readings_that_inherit_it() -> None:
    doc = {"ts": NOW + 3_600_000, "readings": [reading("T1-1101"), reading("CO-1102", ts=NOW)]}
    decoded = CODEC.decode(TOPIC, payload(doc), NOW)
    assert decoded.batch.sensor.tolist() == [1]
    [reject] = decoded.rejects
    assert reject.reason is Reason.FUTURE_TIMESTAMP
    assert reject.detail.startswith(f"sensor 'T1-1101': message ts {NOW + 3_600_000} is")


def test_a_bad_message_ts_is_forgiven_when_every_reading_has_its_own() -> None:
    doc = {"ts": "garbage", "readings": [reading(ts=NOW - 1), reading("CO-1102", ts=NOW - 2)]}
    decoded = CODEC.decode(TOPIC, payload(doc), NOW)
    assert decoded.rejects == [] and decoded.batch.ts.tolist() == [NOW - 1, NOW - 2]


def test_a_mine_configured_without_sensors_refuses_readings_not_the_mine() -> None:
    wuda = Mine("wuda", "乌达", "Wuda", "Asia/Shanghai", (), ())
    codec = TelemetryCodec(Registry.from_sensors(SENSORS, (wuda,)))
    body = payload({"ts": NOW, "readings": [reading(), reading(value="x")]})
    decoded = codec.decode("jinmei/wuda/telemetry", body, NOW)
    assert [(r.reason, r.detail) for r in decoded.rejects] == [
        (Reason.UNKNOWN_SENSOR, "sensor 'T1-1101' is not configured for mine 'wuda'"),
        (Reason.BAD_VALUE, "sensor 'T1-1101': value 'x' is not a number")]


def test_every_reason_is_exercised_by_the_tables_above() -> None:
    produced = {row[2] for row in WHOLE} | {row[1] for row in READING} | {Reason.TOO_LARGE}
    assert produced == set(Reason) - {Reason.INTERNAL_ERROR}  # the pipeline's, not the codec's
    assert {r.value for r in Reason} == {r.name.lower() for r in Reason}


# ── the rejects topic ─────────────────────────────────────────────────────────────────────────
def test_reject_message_of_a_refused_reading() -> None:
    [reject] = CODEC.decode(TOPIC, payload({"ts": NOW, "readings": [reading("X-1")]}),
                            NOW).rejects
    [(topic, body)] = reject_messages([reject], NOW + 7)
    assert topic == "jinmei/dayan/rejects"
    detail = "sensor 'X-1' is not configured for mine 'dayan'"
    assert msgspec.json.decode(body) == {
        "reason": "unknown_sensor", "detail": detail, "topic": TOPIC, "received_at": NOW + 7,
        "reading": {"sensor": "X-1", "value": 0.5}, "count": 1,
        "by_reason": {"unknown_sensor": 1}, "omitted": 0,
        "readings": [{"reason": "unknown_sensor", "detail": detail,
                      "reading": {"sensor": "X-1", "value": 0.5}}]}


def test_the_refused_readings_of_one_message_make_one_summary_reject() -> None:
    unknown = [reading(f"X-{i}", i) for i in range(25)]
    many = payload({"ts": NOW, "readings": [reading(value="high"), *unknown, reading(),
                                            reading(value=None), reading(status="odd")]})
    one = payload({"ts": NOW, "readings": [reading("CO-1102", 1), reading("Y-1")]})
    messages = [(TOPIC, many), ("jinmei/qipanjing/telemetry", b"{"), (TOPIC, one)]
    decoded = CODEC.decode_many(messages, NOW)
    assert len(decoded.rejects) == 28 + 1 + 1 and len(decoded.batch) == 2
    published = reject_messages(decoded.rejects, NOW)
    assert [topic for topic, _ in published] == [
        "jinmei/dayan/rejects", "jinmei/qipanjing/rejects", "jinmei/dayan/rejects"]
    summary, whole, single = (msgspec.json.decode(body) for _, body in published)
    assert (summary["reason"], summary["reading"]) == ("bad_value", reading(value="high"))
    assert summary["detail"] == "sensor 'T1-1101': value 'high' is not a number"
    assert (summary["count"], summary["omitted"]) == (28, 8)
    assert summary["by_reason"] == {"bad_value": 2, "unknown_sensor": 25, "bad_status": 1}
    assert [r["reading"] for r in summary["readings"]] == [reading(value="high"), *unknown[:19]]
    assert summary["readings"][1] == {"reason": "unknown_sensor", "reading": unknown[0],
                                      "detail": "sensor 'X-0' is not configured for mine 'dayan'"}
    assert (whole["reason"], whole["payload"], whole["count"]) == ("bad_json", "{", 1)
    assert whole["by_reason"] == {"bad_json": 1} and "readings" not in whole
    assert (single["count"], single["reading"]) == (1, reading("Y-1"))


def test_reject_message_truncates_the_payload_to_4_kib_and_replaces_bad_utf8() -> None:
    big = Reject(Reason.BAD_JSON, "d", "dayan", TOPIC, payload=b"\xff" + b"x" * 5000)
    doc = msgspec.json.decode(reject_message(big, NOW)[1])
    assert doc["payload"] == "\ufffd" + "x" * 4095 and doc["truncated"] is True
    small = Reject(Reason.BAD_TOPIC, "d", "unknown", "a/b", payload=b"{}")
    topic, body = reject_message(small, NOW)
    assert topic == "jinmei/unknown/rejects"
    assert msgspec.json.decode(body)["payload"] == "{}"
    assert msgspec.json.decode(body)["truncated"] is False


# ── properties ────────────────────────────────────────────────────────────────────────────────
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
SENSOR_IDS = st.sampled_from(["T1-1101", "CO-1102", "F-1103", "T0-2101", "nope"])
# Mostly plausible times (else nearly every message would be refused whole), some anything.
TIMESTAMPS = st.one_of(
    st.integers(NOW - 10**11, NOW + 10**6), st.integers(NOW - 10**11, NOW + 10**6),
    st.sampled_from(["2026-11-25T13:45:32Z", "2026-11-25T21:45:32+08:00", "2026-11-25", "x"]),
    st.integers(), JSON_VALUES)
READINGS = st.one_of(
    st.fixed_dictionaries({"sensor": SENSOR_IDS, "value": st.one_of(
        st.floats(0, 10), st.floats(), st.integers(), JSON_VALUES)},
                          optional={"status": st.sampled_from(["ok", "calibrating", "fault",
                                                               "bad"]) | JSON_VALUES,
                                    "ts": TIMESTAMPS}),
    JSON_VALUES)
MESSAGES = st.one_of(
    st.fixed_dictionaries({"ts": TIMESTAMPS, "readings": st.lists(READINGS, max_size=6)}),
    JSON_VALUES)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.text(max_size=40))
def test_arbitrary_bytes_never_raise(body: bytes, topic: str) -> None:
    for t in (topic, TOPIC):
        decoded = CODEC.decode(t, body, NOW)
        for reject in decoded.rejects:
            msgspec.json.decode(reject_message(reject, NOW)[1])


@settings(max_examples=500)
@given(MESSAGES)
def test_arbitrary_json_never_raises_and_every_reading_is_accounted_for(doc: object) -> None:
    decoded = CODEC.decode(TOPIC, json.dumps(doc).encode(), NOW)
    whole = [r for r in decoded.rejects if r.payload is not None]
    if whole:
        assert len(decoded.rejects) == 1 and len(decoded.batch) == 0
    else:
        assert isinstance(doc, dict)
        assert len(decoded.batch) + len(decoded.rejects) == len(doc["readings"])
    assert np.isfinite(decoded.batch.value).all()
    for reject in decoded.rejects:
        msgspec.json.decode(reject_message(reject, NOW)[1])


FINITE = st.floats(allow_nan=False, allow_infinity=False)
STATUS = st.sampled_from(["ok", "calibrating", "fault"])
BITS = {"ok": 0, "calibrating": Status.CALIBRATION, "fault": Status.SENSOR_FAULT}


@given(st.integers(946_684_800_000, NOW + 300_000),
       st.lists(st.tuples(st.sampled_from(["T1-1101", "CO-1102", "F-1103"]), FINITE, STATUS),
                max_size=20))
def test_encode_then_decode_round_trips(ts_ms: int,
                                        readings: list[tuple[str, float, str]]) -> None:
    decoded = CODEC.decode(TOPIC, encode_telemetry(ts_ms, readings), NOW)
    assert decoded.rejects == []
    batch = decoded.batch
    assert [REGISTRY.sensors[i].id for i in batch.sensor] == [s for s, _, _ in readings]
    assert batch.value.tolist() == [v for _, v, _ in readings]
    assert batch.ts.tolist() == [ts_ms] * len(readings)
    over = [v > REGISTRY.range_high[REGISTRY.index[f"dayan/{s}"]] for s, v, _ in readings]
    assert batch.status.tolist() == [BITS[st_] | (Status.OVER_RANGE if o else 0)
                                     for (_, _, st_), o in zip(readings, over, strict=True)]
