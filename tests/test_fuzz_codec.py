"""Property tests of the telemetry codec against hostile input (issue 11, item 7).

Whatever the topic and payload — random bytes, any JSON document, a valid payload with bytes
flipped, nesting thousands deep, integers of thousands of digits, unpaired surrogate escapes —
``decode_many`` returns (never raises), every reading present in a well-shaped message is either
accepted or refused, accepted values are finite, and what is refused becomes publishable JSON on
``jinmei/<mine>/rejects`` with one message per refused message. ``bench/fuzz_codec.py`` runs a
million such inputs; these run a few thousand on every test run.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codec import MAX_NESTING, Decoded, Reason, _nesting, reject_messages
from tests.test_codec import CODEC, NOW, READINGS, TIMESTAMPS, TOPIC

SENSOR = "T1-1101"
TOPICS = st.sampled_from([TOPIC, "jinmei/dayan/telemetry/S1", "jinmei/qipanjing/telemetry",
                          "jinmei/nowhere/telemetry", "jinmei/dayan/alerts", "", "jinmei/\ud800/t"])
# Any JSON value, numbers of every size and strings of every code point but lone surrogates.
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400)
    | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["ts", "readings", "sensor", "value", "status", "x"]) | st.text(max_size=4),
        inner, max_size=4),
    max_leaves=16)
VALID = {"ts": NOW, "readings": [{"sensor": SENSOR, "value": 0.5},
                                 {"sensor": "CO-1102", "value": 7, "status": "calibrating"},
                                 {"sensor": "F-1103", "value": 1, "ts": NOW - 500}]}
VALID_TEXT = json.dumps(VALID).encode()
HOSTILE = ["1e999", "NaN", "-Infinity", "9" * 5000, "-" + "9" * 400, '"\\ud800"', '"\\udc00x"',
           '"\\u0000"', "[" * 3000 + "]" * 3000, '{"a":' * 80 + "1" + "}" * 80, "[]", "{}",
           "null", "true", '"x"', "1.5", "-0", str(2**64), '"2026-11-25T13:45:32+23:59"',
           '"0001-01-01T00:00:00+23:59"', '"9999-12-31T23:59:59-23:59"']


def check(decoded: Decoded, messages: int) -> None:
    """What holds for every decode: finite values, sane rejects, publishable reject JSON."""
    assert decoded.messages == messages
    assert np.isfinite(decoded.batch.value).all()
    assert all(r.reason is not Reason.INTERNAL_ERROR for r in decoded.rejects)
    published = reject_messages(decoded.rejects, NOW)
    assert len(published) == len({r.message for r in decoded.rejects})
    counted = 0
    for topic, body in published:
        assert topic.startswith("jinmei/") and topic.endswith("/rejects")
        doc = msgspec.json.decode(body)
        assert doc["reason"] in Reason.__members__.values() and doc["count"] >= 1
        assert sum(doc["by_reason"].values()) == doc["count"]
        counted += doc["count"]
    assert counted == len(decoded.rejects)


@settings(max_examples=300)
@given(TOPICS, st.binary(max_size=400))
def test_random_bytes_on_any_topic_never_raise(topic: str, body: bytes) -> None:
    check(CODEC.decode(topic, body, NOW), 1)


@settings(max_examples=300)
@given(ANY_JSON)
def test_any_json_document_never_raises(doc: Any) -> None:
    check(CODEC.decode(TOPIC, json.dumps(doc).encode(), NOW), 1)


@settings(max_examples=150)
@given(st.fixed_dictionaries({"ts": TIMESTAMPS, "readings": st.lists(
    READINGS | ANY_JSON, max_size=8)}))
def test_every_reading_of_a_well_shaped_message_is_accepted_or_refused(doc: Any) -> None:
    decoded = CODEC.decode(TOPIC, json.dumps(doc).encode(), NOW)
    check(decoded, 1)
    whole = [r for r in decoded.rejects if r.payload is not None]
    if whole:  # only the message ts can refuse a well-shaped message whole
        assert [r.reason for r in whole] == [Reason.BAD_TIMESTAMP] and len(decoded.batch) == 0
    else:
        assert len(decoded.batch) + len(decoded.rejects) == len(doc["readings"])


@settings(max_examples=400)
@given(st.lists(st.tuples(st.integers(0, len(VALID_TEXT)), st.integers(0, 8),
                          st.binary(max_size=6) | st.sampled_from(HOSTILE).map(str.encode)),
                min_size=1, max_size=4))
def test_mutations_of_a_valid_payload_never_raise(edits: list[tuple[int, int, bytes]]) -> None:
    body = bytearray(VALID_TEXT)
    for at, cut, insert in edits:
        body[at:at + cut] = insert
    check(CODEC.decode(TOPIC, bytes(body), NOW), 1)


@settings(max_examples=200)
@given(st.sampled_from(["ts", "value", "status", "sensor", "extra", "reading", "key"]),
       st.sampled_from(HOSTILE))
def test_a_hostile_token_anywhere_in_a_valid_message_never_raises(place: str, token: str) -> None:
    hole = '"HOLE"'
    doc: dict[str, Any] = json.loads(VALID_TEXT)
    first = doc["readings"][0]
    if place in ("ts", "extra"):
        doc[place] = "HOLE"
    elif place == "reading":
        doc["readings"].insert(1, "HOLE")
    elif place == "key":
        first["note"] = "HOLE"
    else:
        first[place] = "HOLE"
    text = json.dumps(doc).replace(hole, token, 1).encode()
    decoded = CODEC.decode(TOPIC, text, NOW)
    check(decoded, 1)
    if place in ("value", "status", "sensor", "reading"):
        # one reading carries the token: the others are never lost with it, unless the message
        # is refused whole — too deep, or a lone surrogate that could never be republished
        whole = {Reason.BAD_SCHEMA, Reason.BAD_JSON}
        assert len(decoded.batch) >= 2 or decoded.rejects[0].reason in whole


@settings(max_examples=100)
@given(st.integers(1, 5000), st.sampled_from(["[", "{"]),
       st.sampled_from(["skipped key", "value", "reading key"]))
def test_any_nesting_depth_is_decoded_or_refused_whole(depth: int, opener: str,
                                                       where: str) -> None:
    deep = opener * depth + "]" * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth
    reading = f'{{"sensor": "{SENSOR}", "value": 1}}'
    if where == "value":
        reading = f'{{"sensor": "{SENSOR}", "value": {deep}}}'
    elif where == "reading key":
        reading = f'{{"sensor": "{SENSOR}", "value": 1, "x": {deep}}}'
    body = f'{{"ts": {NOW}, "x": {deep if where == "skipped key" else 1}, ' \
           f'"readings": [{reading}, {{"sensor": "CO-1102", "value": 2}}]}}'.encode()
    decoded = CODEC.decode(TOPIC, body, NOW)
    check(decoded, 1)
    if where == "value":
        # refused: a too-deep message whole (bad_schema), else the one reading (bad_value)
        expected = Reason.BAD_SCHEMA if depth + 3 > MAX_NESTING else Reason.BAD_VALUE
        assert [r.reason for r in decoded.rejects] == [expected]
    elif decoded.rejects:  # only where msgspec could not skip that deep
        assert [r.reason for r in decoded.rejects] == [Reason.BAD_SCHEMA] and depth > MAX_NESTING
    else:
        assert decoded.batch.value.tolist() == [1.0, 2.0]


@settings(max_examples=150)
@given(st.booleans(), st.integers(1, 9), st.integers(0, 6000) | st.integers(0, 400),
       st.integers(0, 9))
def test_an_integer_of_any_size_is_its_value_or_non_finite(negative: bool, first: int,
                                                           digits: int, fill: int) -> None:
    text = ("-" if negative else "") + str(first) + str(fill) * digits
    body = f'{{"ts": {NOW}, "readings": [{{"sensor": "{SENSOR}", "value": {text}}}]}}'.encode()
    decoded = CODEC.decode(TOPIC, body, NOW)
    check(decoded, 1)
    try:
        value = float(int(text))
    except (OverflowError, ValueError):  # past a double, or past Python's 4,300 digits
        assert [r.reason for r in decoded.rejects] == [Reason.NON_FINITE]
    else:
        assert decoded.batch.value.tolist() == [value]


@settings(max_examples=300)
@given(ANY_JSON)
def test_nesting_is_the_documents_depth_whatever_its_strings_hold(doc: Any) -> None:
    def depth(value: Any) -> int:
        if isinstance(value, list):
            return 1 + max(map(depth, value), default=0)
        if isinstance(value, dict):
            return 1 + max(map(depth, value.values()), default=0)
        return 0

    nesting = _nesting(json.dumps(doc).encode())
    # never less than the depth; exact past MAX_NESTING (below, a bound is all that is needed)
    assert nesting >= depth(doc)
    assert nesting == depth(doc) or nesting <= MAX_NESTING


@settings(max_examples=100)
@given(st.text(alphabet='"\\[]{}ab', max_size=30), st.integers(MAX_NESTING - 1, 90))
def test_brackets_quotes_and_backslashes_in_strings_never_count(key: str, depth: int) -> None:
    doc = {key: [key] * 2}
    for _ in range(depth):
        doc = {key: doc}
    text = json.dumps(doc).encode()
    assert _nesting(text) == depth + 2


@settings(max_examples=100)
@given(st.lists(st.tuples(TOPICS, st.sampled_from([VALID_TEXT, b"{", b"[]", b"[" * 2000])
                          | st.builds(lambda d: json.dumps(d).encode(), st.fixed_dictionaries(
                              {"ts": TIMESTAMPS, "readings": st.lists(READINGS, max_size=4)}))),
                max_size=40))
def test_a_batch_decodes_as_its_messages_one_by_one(messages: list[tuple[str, bytes]]) -> None:
    together = CODEC.decode_many(messages, NOW)
    check(together, len(messages))
    alone = [CODEC.decode(topic, body, NOW) for topic, body in messages]
    assert together.batch.value.tolist() == [v for d in alone for v in d.batch.value.tolist()]
    assert together.batch.sensor.tolist() == [s for d in alone for s in d.batch.sensor.tolist()]
    assert [(r.reason, r.detail, r.message) for r in together.rejects] == [
        (r.reason, r.detail, i) for i, d in enumerate(alone) for r in d.rejects]
