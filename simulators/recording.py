"""Recordings: MQTT messages as JSON Lines files, gzip-compressed when the name ends in ``.gz``.

One message a line: ``{"at_ms": …, "topic": …, "payload": "<UTF-8 text>"}``, or
``"payload_b64"`` for a payload that is not UTF-8 (a poison message is recorded as it came).
``at_ms`` is the receive time of a recording, the feed clock of a simulated feed.
:func:`writer` flushes after every line, so a crash loses nothing already received;
:func:`read` stops quietly at the end of a gzip file cut short by a crash and raises
``ValueError`` naming the file and line for a line that is not a recorded message.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from simulators.feed import Message

__all__ = ["RecordingWriter", "count", "read", "writer"]


class RecordingWriter:
    """Appends messages to an open recording, one flushed line each."""

    def __init__(self, stream: IO[bytes] | gzip.GzipFile) -> None:
        self._stream = stream
        self.messages = 0

    def write(self, message: Message) -> None:
        line: dict[str, object] = {"at_ms": message.at_ms, "topic": message.topic}
        try:
            line["payload"] = message.payload.decode()
        except UnicodeDecodeError:
            line["payload_b64"] = base64.b64encode(message.payload).decode()
        self._stream.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        self._stream.flush()  # gzip: a sync flush, readable up to here after a crash
        self.messages += 1

    def close(self) -> None:
        self._stream.close()


def writer(path: Path) -> RecordingWriter:
    """A new recording at ``path`` (replacing any file there)."""
    if path.name.endswith(".gz"):
        return RecordingWriter(gzip.open(path, "wb"))
    return RecordingWriter(path.open("wb"))


def read(path: Path) -> Iterator[Message]:
    """The messages of a recording in file order (module docstring)."""
    with gzip.open(path, "rb") if path.name.endswith(".gz") else path.open("rb") as f:
        number = 0
        while True:
            try:
                line = f.readline()
            except EOFError:  # a gzip stream cut short: what was flushed is all there is
                return
            if not line:
                return
            number += 1
            if line.strip():
                yield _message(path, number, line)


def count(path: Path) -> int:
    """How many messages a recording holds (a pass over the file)."""
    return sum(1 for _ in read(path))


def _message(path: Path, number: int, line: bytes) -> Message:
    try:
        item = json.loads(line)
        payload = (item["payload"].encode() if "payload" in item
                   else base64.b64decode(item["payload_b64"], validate=True))
        return Message(int(item["at_ms"]), str(item["topic"]), payload)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}:{number}: not a recorded message: {error}") from error
