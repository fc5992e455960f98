"""Telemetry wire contract v1: decode MQTT payloads into a ReadingBatch, reject with a reason.

Topic ``jinmei/<mine>/telemetry`` or ``jinmei/<mine>/telemetry/<substation>``; payload UTF-8
JSON ``{"ts": <epoch ms | RFC 3339>, "readings": [{"sensor", "value", "status"?, "ts"?}]}``
(design.md). A reading's own ``ts`` overrides the message's.

Configuration (constructor keywords): ``max_future_ms`` (default 300 000, i.e. ingest
``max_future_s`` × 1000) — a timestamp later than ``now + max_future_ms`` is refused, old ones
are fine (replays); ``max_payload_bytes`` (default 1 MiB) — larger payloads are refused unread.

Failure behaviour: nothing in a topic or payload raises out of :meth:`TelemetryCodec.decode`
or :meth:`~TelemetryCodec.decode_many` (``bench/fuzz_codec.py`` runs a million hostile inputs;
tests/test_fuzz_codec.py the properties). Whatever is refused becomes a :class:`Reject` with a
stable :class:`Reason` (for counting) and a detail naming the sensor and the offending value.
A whole message is refused only when nothing in it can be trusted (topic, size, JSON, shape,
mine, message ts); otherwise each bad reading is refused alone and the good readings of the
message are kept. Hostile shapes get precise reasons too: a payload that must be read
generically and nests arrays/objects deeper than ``MAX_NESTING`` (64) is ``bad_schema`` before
any recursive decoder sees it (msgspec recurses even into keys it skips, and a 1,000-deep array
raised ``RecursionError``; the typed fast path keeps what it can decode); an integer literal
past the 4,300 digits Python converts is the infinity it overflows to (``non_finite``).

Rejects topic: :func:`reject_messages` turns one ``decode_many``'s rejects into the
``jinmei/<mine>/rejects`` messages — one per refused message, never one per reading. Its JSON::

    {"reason": "unknown_sensor",                   # the (first) refusal's reason …
     "detail": "sensor 'X-1' is not configured for mine 'dayan'",   # … and detail
     "topic": "jinmei/dayan/telemetry/S1", "received_at": 1795614332500,   # epoch ms
     "count": 30000,                               # refusals this message stands for
     "by_reason": {"unknown_sensor": 29990, "bad_value": 10},
     # a message refused whole: the payload (first 4 KiB, as UTF-8 with replacements)
     "payload": "...", "truncated": false,
     # refused readings, the rest of the message kept: the first as the sender wrote it, the
     # first REJECT_SUMMARY_READINGS (20) named, and how many more were refused
     "reading": {"sensor": "X-1", "value": 0.5},
     "readings": [{"reason": "unknown_sensor", "detail": "...", "reading": {...}}, ...],
     "omitted": 29980}

A message refused whole has ``payload``/``truncated`` and ``count`` 1; a summary of readings
has ``reading``/``readings``/``omitted``. The first four fields are the contract's since v1.

Work is linear in the payload: the generic decode of a message that the fast path accepted
but whose readings are refused (an unknown sensor) runs at most once per message
(``_Admitted.raw``), so 30,000 unknown sensors in one 1 MiB message cost ~0.2 s, not minutes.

Fast path: one typed msgspec decode per message (it validates shape and types as it decodes;
the mine's own decoder knows its sensor ids, and a message naming an unconfigured sensor is
decoded again by the generic typed decoder), then column arrays built with C-level ``map`` and
numpy checks over chunks of 32 messages of a :meth:`~TelemetryCodec.decode_many` call; the
status and per-reading ts columns are not even read when the payloads' bytes prove that every
reading takes the defaults (:func:`_defaults_only`). Only a
message the typed decode refuses takes the slow path: decoded generically (stdlib ``json``, so
``NaN``/``Infinity``/``1e999`` reach the per-reading check) and each reading validated alone
against the same typed struct. Timestamps are checked once per message, and per reading only
for readings that carry their own ``ts``.
"""

from __future__ import annotations

import enum
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, groupby, repeat
from operator import attrgetter
from typing import Any, Literal

import msgspec
import numpy as np

from config.errors import PayloadRejected
from config.model import Registry
from config.readings import ReadingBatch, Status

__all__ = [
    "Decoded",
    "Reason",
    "Reject",
    "TelemetryCodec",
    "encode_telemetry",
    "reject_message",
    "reject_messages",
]


class Reason(enum.StrEnum):
    """Why a message or a reading was refused: stable codes, counted per reason."""

    BAD_TOPIC = "bad_topic"
    """The topic is not ``jinmei/<mine>/telemetry[/<substation>]``."""
    TOO_LARGE = "too_large"
    """The payload is longer than ``max_payload_bytes``; it is not read."""
    BAD_JSON = "bad_json"
    """The payload is not UTF-8 JSON (or holds an unpaired UTF-16 surrogate escape)."""
    BAD_SCHEMA = "bad_schema"
    """The message is not an object with ``ts`` and a ``readings`` list, or a reading lacks
    ``sensor``/``value`` or is not an object, or the message nests arrays/objects deeper than
    ``MAX_NESTING`` levels where the typed decode cannot skip them."""
    UNKNOWN_MINE = "unknown_mine"
    """The topic's mine is not in the configuration."""
    UNKNOWN_SENSOR = "unknown_sensor"
    """The reading's sensor is not configured for the topic's mine."""
    BAD_VALUE = "bad_value"
    """The reading's value is not a JSON number (strings and booleans included)."""
    NON_FINITE = "non_finite"
    """The reading's value is NaN or ±infinity, or overflows a double (``1e999``)."""
    BAD_STATUS = "bad_status"
    """The reading's status is not ``ok``, ``calibrating`` or ``fault``."""
    BAD_TIMESTAMP = "bad_timestamp"
    """A ts is not epoch ms or RFC 3339 with an offset, or is before 2000-01-01."""
    FUTURE_TIMESTAMP = "future_timestamp"
    """A ts is later than now + ``max_future_ms``."""
    INTERNAL_ERROR = "internal_error"
    """jinmei failed on the message for a reason of its own (a bug, not the sender's fault):
    the message is rejected, its good readings kept where they can be separated."""


@dataclass(frozen=True, slots=True)
class Reject:
    """One refused message (``payload`` set) or one refused reading (``reading`` set).

    ``message`` numbers the message within its ``decode_many`` call, so that
    :func:`reject_messages` can summarise a message's refused readings in one reject message.
    """

    reason: Reason
    detail: str
    mine: str
    topic: str
    payload: bytes | None = None
    reading: object | None = None
    message: int = 0


@dataclass(frozen=True, slots=True)
class Decoded:
    """Accepted readings of one or more messages in arrival order, and what was refused."""

    batch: ReadingBatch
    rejects: list[Reject]
    messages: int


# ── The contract as typed structs: msgspec validates these while it decodes ──────────────────
class _Reading(msgspec.Struct, gc=False, omit_defaults=True):
    sensor: str
    value: float
    status: Literal["ok", "calibrating", "fault"] = "ok"
    ts: int | str | None = None


class _Message(msgspec.Struct, gc=False):
    ts: int | str
    readings: list[_Reading]


_MESSAGE_DECODER = msgspec.json.Decoder(_Message)


def _mine_decoder(sensor_ids: Sequence[str]) -> msgspec.json.Decoder[_Message]:
    """The typed decoder of one mine: ``sensor`` is the mine's ids as a Literal, so msgspec
    hands back interned ids (a faster index lookup, measured +8 %) and refuses unknown ones."""
    if not sensor_ids:
        return _MESSAGE_DECODER
    reading = msgspec.defstruct("MineReading", [("sensor", Literal[tuple(sensor_ids)])],
                                bases=(_Reading,), gc=False)
    readings = list[reading]  # type: ignore[valid-type]
    message = msgspec.defstruct("MineMessage", [("readings", readings)], bases=(_Message,),
                                gc=False)
    return msgspec.json.Decoder(message)


_ENCODER = msgspec.json.Encoder()

_STATUS_BITS = {"ok": int(Status.NORMAL), "calibrating": int(Status.CALIBRATION),
                "fault": int(Status.SENSOR_FAULT)}
# Which reading field a msgspec validation error points at: "... - at `$.value`".
_FIELD = re.compile(r"at `\$\.(\w+)`")
_FIELD_REASON = {"value": Reason.BAD_VALUE, "status": Reason.BAD_STATUS,
                 "ts": Reason.BAD_TIMESTAMP}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00Z: nothing this pipeline stores is older
_REJECT_TEXT_BYTES = 4096
REJECT_SUMMARY_READINGS = 20  # jinmei's own: enough to see the pattern, and a reject stays small
MAX_NESTING = 64  # jinmei's own: the contract needs 3 levels; far below Python's recursion limit
_UNKNOWN_MINE = "unknown"
_CHUNK_MESSAGES = 32  # ~3 200 readings: their structs stay in cache (measured: +5 % over 1 000)

_SENSOR = attrgetter("sensor")
_VALUE = attrgetter("value")
_STATUS = attrgetter("status")
_TS = attrgetter("ts")


def _show(value: object, limit: int = 80) -> str:
    """repr() of an offending value, cut short so a detail never carries a whole payload."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _not_a_ts(raw: object) -> str:
    return f"ts {_show(raw)} is neither epoch ms nor an RFC 3339 string"


def _ts_ms(raw: object, now_ms: int, max_future_ms: int) -> int:
    """Epoch ms of a wire ts; raises PayloadRejected (BAD_/FUTURE_TIMESTAMP) naming ``raw``."""
    if isinstance(raw, str):
        try:
            when = msgspec.convert(raw, datetime)
        except msgspec.ValidationError:
            raise PayloadRejected(Reason.BAD_TIMESTAMP,
                                  f"ts {_show(raw)} is not RFC 3339") from None
        if when.tzinfo is None:
            raise PayloadRejected(Reason.BAD_TIMESTAMP,
                                  f"ts {_show(raw)} has no UTC offset (RFC 3339 needs one)")
        ms = (when - _EPOCH) // _MS
    elif isinstance(raw, int) and not isinstance(raw, bool):
        ms = raw
    else:
        raise PayloadRejected(Reason.BAD_TIMESTAMP, _not_a_ts(raw))
    if ms < _EARLIEST_MS:
        # The commonest sender mistake: epoch seconds where the contract says milliseconds.
        hint = ("; it looks like epoch seconds, the contract wants milliseconds"
                if _EARLIEST_MS <= ms * 1000 <= now_ms + max_future_ms else "")
        raise PayloadRejected(Reason.BAD_TIMESTAMP, f"ts {_show(raw)} is before 2000-01-01{hint}")
    if ms > now_ms + max_future_ms:
        raise PayloadRejected(Reason.FUTURE_TIMESTAMP,
                              f"ts {_show(raw)} is {ms - now_ms} ms ahead of now "
                              f"(at most {max_future_ms} ms allowed)")
    return ms


def _topic_mine(topic: str) -> tuple[str, bool]:
    """The topic's mine segment (``unknown`` if it has none) and whether it fits the contract."""
    parts = topic.split("/")
    mine = parts[1] if len(parts) > 1 and parts[0] == "jinmei" and parts[1] else _UNKNOWN_MINE
    fits = len(parts) in (3, 4) and parts[0] == "jinmei" and parts[2] == "telemetry" and all(parts)
    return mine, fits


def _nesting(payload: bytes) -> int:
    """How deep a JSON text nests arrays and objects (brackets inside strings do not count).

    Linear, in numpy: a quote ends or starts a string unless an odd run of backslashes precedes
    it; brackets outside strings step the depth up or down. A text with at most
    ``MAX_NESTING`` opening brackets is answered by their count, a bound that is enough here.
    """
    openers = payload.count(b"[") + payload.count(b"{")
    if openers <= MAX_NESTING:
        return openers
    text = np.frombuffer(payload, np.uint8)
    quote = text == ord('"')
    backslash = text == ord("\\")
    if backslash.any():
        at = np.arange(len(text))
        last_plain = np.maximum.accumulate(np.where(backslash, -1, at))
        quotes = np.flatnonzero(quote[1:]) + 1
        escapes = quotes - 1 - last_plain[quotes - 1]
        quote[quotes[escapes % 2 == 1]] = False
    step = ((text == ord("[")) | (text == ord("{"))).astype(np.int32)
    step -= (text == ord("]")) | (text == ord("}"))
    step[np.cumsum(quote) % 2 == 1] = 0
    return int(np.cumsum(step).max(initial=0))


def _json_int(text: str) -> int | float:
    """An integer literal as an int, or, past the digits Python converts (4,300), as the
    infinity it overflows to — refused as ``non_finite`` like ``1e999``, not as bad JSON."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _parse_json(payload: bytes) -> Any:
    """Generic decode for the slow path: UTF-8 JSON (``NaN``/``Infinity`` allowed) or BAD_JSON,
    nested at most ``MAX_NESTING`` deep or BAD_SCHEMA (so no caller's stack can overflow)."""
    depth = _nesting(payload)
    if depth > MAX_NESTING:
        raise PayloadRejected(Reason.BAD_SCHEMA,
                              f"payload nests arrays/objects {depth} levels deep; jinmei reads "
                              f"at most {MAX_NESTING} (the contract needs 3)")
    try:
        doc = json.loads(payload.decode("utf-8"), parse_int=_json_int)
        # stdlib json lets "\ud800" through; such text could never be republished as UTF-8.
        _ENCODER.encode(doc)
    except UnicodeDecodeError as e:
        raise PayloadRejected(Reason.BAD_JSON,
                              f"payload is not UTF-8: {e.reason} at byte {e.start}") from None
    except UnicodeEncodeError:
        raise PayloadRejected(Reason.BAD_JSON,
                              "payload holds an unpaired UTF-16 surrogate escape") from None
    except (ValueError, RecursionError) as e:
        raise PayloadRejected(Reason.BAD_JSON, f"payload is not JSON: {_show(str(e))}") from None
    return doc


def _message_shape(doc: Any) -> tuple[Any, list[Any]]:
    """(ts, readings) of a generically decoded message, or BAD_SCHEMA saying what is missing."""
    if not isinstance(doc, dict):
        problem = f"the message is a JSON {type(doc).__name__}, not an object"
    elif "ts" not in doc:
        problem = "the message has no ts"
    elif not isinstance(doc.get("readings"), list):
        problem = f"the message's readings is {_show(doc.get('readings'))}, not a list"
    else:
        return doc["ts"], doc["readings"]
    raise PayloadRejected(Reason.BAD_SCHEMA, problem)


def _who(raw: object, position: int) -> str:
    """How a reading's reject detail names it: by sensor when it has one."""
    sensor = raw.get("sensor") if isinstance(raw, dict) else None
    return f"sensor {sensor!r}" if isinstance(sensor, str) else f"reading {position}"


def _typed_reading(raw: Any, position: int) -> _Reading:
    """One generically decoded reading checked against the same struct as the fast path."""
    try:
        return msgspec.convert(raw, _Reading)
    except msgspec.ValidationError as e:
        found = _FIELD.search(str(e))
        field = found.group(1) if found else ""
        reason = _FIELD_REASON.get(field, Reason.BAD_SCHEMA)
        who = _who(raw, position)
        offending = raw.get(field) if isinstance(raw, dict) else None
        if reason is Reason.BAD_VALUE and type(offending) is int:
            # An integer literal too large for a double: the same overflow as 1e999.
            reason, why = Reason.NON_FINITE, f"value {_show(offending)} overflows a double"
        elif reason is Reason.BAD_VALUE:
            why = f"value {_show(offending)} is not a number"
        elif reason is Reason.BAD_STATUS:
            why = f"status {_show(offending)} is not one of ok, calibrating, fault"
        elif reason is Reason.BAD_TIMESTAMP:
            why = _not_a_ts(offending)
        else:
            why = f"{e} (wants {{sensor: str, value: number, status?, ts?}})"
        raise PayloadRejected(reason, f"{who}: {why}") from None


@dataclass(slots=True)  # not frozen: one per message, and a frozen __init__ costs 4× as much
class _Admitted:
    """A message that passed the whole-message checks, waiting to become batch rows."""

    order: int  # message number within one decode_many call
    mine: str
    topic: str
    payload: bytes
    sensors: dict[str, int]
    readings: list[_Reading]
    positions: list[int] | None  # place in the payload's list when the slow path dropped some
    raw: list[Any] | None  # the generically decoded readings, once a refusal needed them
    ts: int | PayloadRejected  # message ts, or the refusal a reading inheriting it gets
    defaults_only: bool  # no reading carries its own status or ts (see _defaults_only)


def _defaults_only(payload: bytes) -> bool:
    """Does the payload's text prove that no reading has a ``status`` or a ``ts`` of its own?

    Without a backslash no key can be escaped, so a ``status`` or ``ts`` key shows its letter
    ``t``; the message's own ``ts`` key holds one. A payload with a single ``t`` therefore has
    no such reading. Two byte searches (memchr) cost far less than a pass over the decoded
    readings; a payload they cannot prove plain (a sensor id with a ``t``) gets that pass.
    """
    return b"\\" not in payload and payload.find(b"t", payload.find(b"t") + 1) < 0


# (message number, reading position or -1 for the whole message, reject): sorts to arrival order
_Numbered = tuple[int, int, Reject]


class TelemetryCodec:
    """Decodes telemetry of the registry's mines; see the module docstring for the rules."""

    def __init__(self, registry: Registry, *, max_future_ms: int = 300_000,
                 max_payload_bytes: int = 1_048_576) -> None:
        self._max_future_ms = max_future_ms
        self._max_payload_bytes = max_payload_bytes
        self._range_high = registry.range_high
        # mine → sensor id → registry index, built once: the per-reading lookup is one dict get.
        self._sensors: dict[str, dict[str, int]] = {mine: {} for mine in registry.mine_ids}
        for index, sensor in enumerate(registry.sensors):
            self._sensors[sensor.mine][sensor.id] = index
        self._decoders = {mine: _mine_decoder(list(ids)) for mine, ids in self._sensors.items()}

    def decode(self, topic: str, payload: bytes, now_ms: int) -> Decoded:
        """Decode one message received at ``now_ms`` (epoch ms)."""
        return self.decode_many([(topic, payload)], now_ms)

    def decode_many(self, messages: Sequence[tuple[str, bytes]], now_ms: int) -> Decoded:
        """Decode ``(topic, payload)`` messages into one batch, arrival order kept."""
        numbered: list[_Numbered] = []
        batches = []
        # A chunk's decoded structs stay in cache while its columns are built and freed.
        for first in range(0, len(messages), _CHUNK_MESSAGES):
            admitted: list[_Admitted] = []
            for order, (topic, payload) in enumerate(messages[first:first + _CHUNK_MESSAGES],
                                                     first):
                outcome = self._admit(order, topic, payload, now_ms, numbered)
                if isinstance(outcome, Reject):
                    numbered.append((order, -1, outcome))
                else:
                    admitted.append(outcome)
            batches.append(self._rows(admitted, now_ms, numbered))
        batch = ReadingBatch.concat(batches)
        numbered.sort(key=lambda n: (n[0], n[1]))
        return Decoded(batch, [reject for _, _, reject in numbered], len(messages))

    def _admit(self, order: int, topic: str, payload: bytes, now_ms: int,
               numbered: list[_Numbered]) -> _Admitted | Reject:
        """Whole-message checks; adds the slow path's reading rejects only if the message stays."""
        mine, fits = _topic_mine(topic)

        def refuse(reason: Reason, detail: str) -> Reject:
            return Reject(reason, detail, mine, topic, payload=payload, message=order)

        if not fits:
            return refuse(Reason.BAD_TOPIC,
                          f"topic {topic!r} is not jinmei/<mine>/telemetry[/<substation>]")
        if len(payload) > self._max_payload_bytes:
            return refuse(Reason.TOO_LARGE, f"payload of {len(payload)} bytes is over the "
                                            f"{self._max_payload_bytes}-byte limit")
        sensors = self._sensors.get(mine)
        if sensors is None:
            return refuse(Reason.UNKNOWN_MINE, f"mine {mine!r} is not configured")
        reading_rejects: list[_Numbered] = []
        positions: list[int] | None = None
        raw_readings: list[Any] | None = None
        try:
            message = self._typed(mine, payload)
            ts_raw, readings = message.ts, message.readings
            defaults_only = _defaults_only(payload)
        except (msgspec.MsgspecError, RecursionError):
            # RecursionError: msgspec recurses into what it skips; _parse_json bounds the depth.
            defaults_only = False
            # Slow path: find what the typed decode refused, keep every reading that is fine.
            try:
                ts_raw, raw_readings = _message_shape(_parse_json(payload))
            except PayloadRejected as e:
                return refuse(Reason(e.reason), e.detail)
            readings, positions = [], []
            for position, raw in enumerate(raw_readings):
                try:
                    readings.append(_typed_reading(raw, position))
                    positions.append(position)
                except PayloadRejected as e:
                    reading_rejects.append((order, position, Reject(
                        Reason(e.reason), e.detail, mine, topic, reading=raw, message=order)))
        ts: int | PayloadRejected
        try:
            ts = _ts_ms(ts_raw, now_ms, self._max_future_ms)
        except PayloadRejected as e:
            ts = e  # readings that inherit a future ts are refused one by one
            if e.reason == Reason.BAD_TIMESTAMP and not (
                    readings and all(self._valid_ts(r.ts, now_ms) for r in readings)):
                return refuse(Reason.BAD_TIMESTAMP, f"message {e.detail}, and not every "
                                                    "reading has a valid ts of its own")
        numbered.extend(reading_rejects)
        return _Admitted(order, mine, topic, payload, sensors, readings, positions, raw_readings,
                         ts, defaults_only)

    def _typed(self, mine: str, payload: bytes) -> _Message:
        """The fast path: the mine's decoder; on refusal the generic typed one, so a sensor
        missing from the configuration costs a second decode, not the slow path."""
        decoder = self._decoders[mine]
        try:
            return decoder.decode(payload)
        except (msgspec.MsgspecError, RecursionError):
            if decoder is _MESSAGE_DECODER:
                raise
        return _MESSAGE_DECODER.decode(payload)

    def _valid_ts(self, raw: object, now_ms: int) -> bool:
        try:
            _ts_ms(raw, now_ms, self._max_future_ms)
        except PayloadRejected:
            return False
        return True

    def _rows(self, admitted: list[_Admitted], now_ms: int,
              numbered: list[_Numbered]) -> ReadingBatch:
        """Column arrays of all admitted readings; refuses the bad rows, marks over-range."""
        counts = [len(a.readings) for a in admitted]
        total = sum(counts)
        readings = list(chain.from_iterable(a.readings for a in admitted))
        sensor = np.fromiter(chain.from_iterable(
            map(a.sensors.get, map(_SENSOR, a.readings), repeat(-1)) for a in admitted),
            np.int32, total)
        value = np.fromiter(map(_VALUE, readings), np.float64, total)
        # The usual batch: every status "ok" and every ts the message's — proven by the
        # payloads' bytes, else seen by one pass over the readings per column.
        defaults_only = all(a.defaults_only for a in admitted)
        statuses = [] if defaults_only else list(map(_STATUS, readings))
        status = (np.zeros(total, np.uint16) if defaults_only or statuses.count("ok") == total
                  else np.fromiter(map(_STATUS_BITS.__getitem__, statuses), np.uint16, total))
        starts = np.zeros(len(admitted), np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        ts = np.repeat(np.array([a.ts if isinstance(a.ts, int) else 0 for a in admitted],
                                np.int64), counts)
        ts_refused: dict[int, PayloadRejected] = {}
        inherits_refusal = any(isinstance(a.ts, PayloadRejected) for a in admitted)
        if inherits_refusal or not defaults_only:
            own = list(map(_TS, readings))
            if inherits_refusal or own.count(None) != total:
                for a, start, count in zip(admitted, starts.tolist(), counts, strict=True):
                    self._own_times(a, start, own[start:start + count], now_ms, ts, ts_refused)

        bad = (sensor < 0) | ~np.isfinite(value)
        bad[list(ts_refused)] = True
        if bad.any():
            for row in np.flatnonzero(bad).tolist():
                owner = int(np.searchsorted(starts, row, "right")) - 1
                numbered.append(_refuse_row(admitted[owner], row - int(starts[owner]),
                                            int(sensor[row]), ts_refused.get(row)))
            keep = ~bad
            sensor, ts, value, status = sensor[keep], ts[keep], value[keep], status[keep]
        # A catalytic element saturates above its range (domain.md §4): keep the value, flag it.
        status[value > self._range_high[sensor]] |= np.uint16(Status.OVER_RANGE)
        return ReadingBatch(sensor, ts, value, status)

    def _own_times(self, a: _Admitted, start: int, own: list[int | str | None], now_ms: int,
                   ts: np.ndarray, ts_refused: dict[int, PayloadRejected]) -> None:
        """Overwrite the message ts in ``ts`` where readings carry their own; note refusals."""
        inherited = a.ts if isinstance(a.ts, PayloadRejected) else None
        if inherited is None and own.count(None) == len(own):
            return  # every reading takes the message ts already in place
        for j, raw in enumerate(own):
            if raw is None:
                if inherited is not None:
                    ts_refused[start + j] = inherited
                continue
            try:
                ts[start + j] = _ts_ms(raw, now_ms, self._max_future_ms)
            except PayloadRejected as e:
                ts_refused[start + j] = e


def _refuse_row(a: _Admitted, local: int, index: int,
                ts_refusal: PayloadRejected | None) -> _Numbered:
    """The reject of one typed reading that a column check refused (rare: a loop is fine)."""
    reading = a.readings[local]
    position = a.positions[local] if a.positions is not None else local
    who = f"sensor {reading.sensor!r}"
    if index < 0:
        reason, detail = Reason.UNKNOWN_SENSOR, f"{who} is not configured for mine {a.mine!r}"
    elif ts_refusal is None:
        reason, detail = Reason.NON_FINITE, f"{who}: value {reading.value!r} is not finite"
    else:
        inherited = "message " if reading.ts is None else ""
        reason, detail = Reason(ts_refusal.reason), f"{who}: {inherited}{ts_refusal.detail}"
    return a.order, position, Reject(reason, detail, a.mine, a.topic,
                                     reading=_original(a, position, reading), message=a.order)


def _original(a: _Admitted, position: int, reading: _Reading) -> object:
    """The refused reading as the sender wrote it, or as typed-decoded if that cannot be had.

    The payload is decoded generically at most once per message (kept in ``a.raw``): a message
    of 30,000 refused readings costs one more decode, not 30,000.
    """
    if a.raw is None:
        try:
            a.raw = _message_shape(_parse_json(a.payload))[1]
        except PayloadRejected:
            a.raw = []  # a payload only the typed decode reads (nested deep where it skips)
    if position < len(a.raw):
        return a.raw[position]
    return msgspec.to_builtins(reading)


def _clean(text: str) -> str:
    """Text safe to encode as UTF-8 (a topic is a str and could hold a lone surrogate)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _reject_doc(reject: Reject, received_at_ms: int) -> dict[str, object]:
    doc: dict[str, object] = {"reason": str(reject.reason), "detail": reject.detail,
                              "topic": _clean(reject.topic), "received_at": received_at_ms,
                              "count": 1, "by_reason": {str(reject.reason): 1}}
    if reject.payload is not None:
        doc["payload"] = reject.payload[:_REJECT_TEXT_BYTES].decode("utf-8", errors="replace")
        doc["truncated"] = len(reject.payload) > _REJECT_TEXT_BYTES
    else:
        doc["reading"] = reject.reading
    return doc


def reject_message(reject: Reject, received_at_ms: int,
                   by_reason: Mapping[str, int] | None = None) -> tuple[str, bytes]:
    """The ``jinmei/<mine>/rejects`` message republishing one ``reject`` with its reason;
    with ``by_reason``, it stands for that many refused messages (``count`` their sum: a
    rate-limited summary, :mod:`jinmei.strays`)."""
    doc = _reject_doc(reject, received_at_ms)
    if by_reason:
        doc.update(count=sum(by_reason.values()), by_reason=dict(by_reason))
    return f"jinmei/{_clean(reject.mine)}/rejects", _ENCODER.encode(doc)


def reject_messages(rejects: Sequence[Reject], received_at_ms: int) -> list[tuple[str, bytes]]:
    """The ``jinmei/<mine>/rejects`` messages of one ``decode_many``: one per message refused.

    A message refused whole gives :func:`reject_message`'s form. The refused readings of one
    message give one summary: the first's ``reason``, ``detail`` and ``reading`` as before, plus
    ``count`` (readings refused), ``by_reason``, ``readings`` (the first
    ``REJECT_SUMMARY_READINGS`` as ``{reason, detail, reading}``) and ``omitted`` (the rest).
    ``rejects`` must be in ``decode_many``'s order (by message).
    """
    out = []
    for _, group in groupby(rejects, key=attrgetter("message")):
        refused = list(group)
        readings = [r for r in refused if r.payload is None]
        docs = [_reject_doc(r, received_at_ms) for r in refused if r.payload is not None]
        if readings:
            named = readings[:REJECT_SUMMARY_READINGS]
            summary = _reject_doc(readings[0], received_at_ms)
            summary.update(
                count=len(readings), by_reason=dict(Counter(str(r.reason) for r in readings)),
                readings=[{"reason": str(r.reason), "detail": r.detail, "reading": r.reading}
                          for r in named],
                omitted=len(readings) - len(named))
            docs.append(summary)
        out += [(f"jinmei/{_clean(refused[0].mine)}/rejects", _ENCODER.encode(doc))
                for doc in docs]
    return out


def encode_telemetry(ts_ms: int, readings: Sequence[tuple[str, float, str]]) -> bytes:
    """A v1 telemetry payload of ``(sensor, value, status)`` readings sharing ``ts_ms``.

    For simulators and tests: nothing is validated, so a bad status can be sent on purpose;
    ``ok`` is the contract's default and is left out; a NaN value goes out as ``null`` (JSON
    has no NaN).
    """
    return _ENCODER.encode({"ts": ts_ms, "readings": [
        {"sensor": sensor, "value": value} if status == "ok"
        else {"sensor": sensor, "value": value, "status": status}
        for sensor, value, status in readings]})
