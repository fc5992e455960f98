"""Log records for operators and log shippers: one line per record, times with their offset.

``jinmei --log-format text`` (default) writes::

    2026-12-03T17:20:01.123+08:00 WARNING jinmei: ALERT firing critical limit_power_off …

and ``--log-format json`` one JSON object per line for journald, Vector, Fluent Bit or
Promtail: ``time`` (RFC 3339 with offset), ``level``, ``logger``, ``thread``, ``message``,
``exception`` when there is one, and any structured ``extra`` the caller attached (an alert
record carries ``alert``: id, mine, sensor, rule, severity, state, value, limit, ts).

One line per record, always: a message or traceback that spans lines (an alert's Chinese and
English text, a stack) is joined with `` | `` in text and kept whole in the JSON string, so a
shipper never splits a record and a ``grep`` finds all of it. Times are the host's local time
with its UTC offset (the offset makes them unambiguous; journald and shippers convert).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from typing import Any

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "setup_logging"]

LOG_FORMATS = ("text", "json")
JOIN = " | "
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<time with offset> <LEVEL> <logger>: <message>`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        return (f"{_time(record)} {record.levelname} {record.name}: "
                f"{JOIN.join(line for line in text.splitlines() if line.strip())}")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": _time(record), "level": record.levelname,
                               "logger": record.name, "thread": record.threadName,
                               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        out.update({k: v for k, v in vars(record).items()
                    if k not in _STANDARD and not k.startswith("_")})
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(log_format: str = "text", verbose: bool = False) -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``) at INFO, or DEBUG if verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
