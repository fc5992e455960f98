"""Replay a recording (or a simulated feed file) to a broker, in order and at its own timing.

:func:`replay` reads a recording (``simulators.recording``) and publishes every message with
``simulators.publisher.publish`` — QoS 1, the original order, paced by the recorded ``at_ms``
(``speed`` times faster; ``None`` = as fast as possible), waiting for every acknowledgement.
``shift_to_now`` moves the telemetry times so that the first message reads as ``now_ms``: every
integer ``ts`` of the payload and of its readings (epoch ms) gains the same offset; a payload
that is not JSON, or a ``ts`` that is not an integer, goes out unchanged — a replayed poison
message must stay poison. ``on_progress(done, total)`` follows each published message.
Failures are the publisher's: ``ValueError`` for bad options, ``DeliveryError`` for the broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

from config.model import BrokerConfig
from simulators.feed import Message
from simulators.publisher import PublishSummary, publish
from simulators.recording import count, read

__all__ = ["replay", "shifted"]


def replay(path: Path, broker: BrokerConfig | str, *, speed: float | None,
           shift_to_now: bool = False, now_ms: int = 0, client_id: str = "jinmei-replay",
           on_progress: Callable[[int, int], None] | None = None) -> PublishSummary:
    """Republish the recording at ``path`` (module docstring); ``now_ms`` for ``shift_to_now``."""
    total = count(path)
    messages: Iterator[Message] = read(path)
    if shift_to_now:
        first = next(read(path), None)
        messages = shifted(messages, now_ms - first.at_ms if first else 0)
    done = [0]

    def progressed(_message: Message) -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], total)

    return publish(messages, broker, speed=speed, client_id=client_id,
                   on_message=progressed)


def shifted(messages: Iterator[Message], offset_ms: int) -> Iterator[Message]:
    """The messages with ``at_ms`` and every integer payload ``ts`` moved by ``offset_ms``."""
    for message in messages:
        yield Message(message.at_ms + offset_ms, message.topic,
                      _shift_payload(message.payload, offset_ms))


def _shift_payload(payload: bytes, offset_ms: int) -> bytes:
    try:
        body = json.loads(payload)
    except ValueError:
        return payload
    if not isinstance(body, dict):
        return payload
    _shift_ts(body, offset_ms)
    for reading in body.get("readings") or ():
        if isinstance(reading, dict):
            _shift_ts(reading, offset_ms)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _shift_ts(item: dict[str, object], offset_ms: int) -> None:
    ts = item.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        item["ts"] = ts + offset_ms
