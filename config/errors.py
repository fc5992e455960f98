"""jinmei's one exception tree.

Every error that jinmei raises on purpose derives from :class:`JinmeiError` and carries the
context an operator needs to act on it without reading code: which file and key for a
configuration problem, which reason code for a rejected payload, whether a failed delivery
may be retried.

    JinmeiError
     ├── ConfigError        file, line / key, what was expected
     ├── UsageError         a command-line argument: which option, what was expected
     ├── PayloadRejected    reason code (see ``ingest.codec.Reason``) and detail
     └── DeliveryError      channel or sink, ``retryable``
"""

from __future__ import annotations

__all__ = ["ConfigError", "DeliveryError", "JinmeiError", "PayloadRejected", "UsageError"]


class JinmeiError(Exception):
    """Base of every error jinmei raises on purpose."""


class ConfigError(JinmeiError):
    """A configuration file is broken: says which file, where, and what was expected.

    ``location`` is a line number (``"line 12"``) when the TOML itself does not parse, or a
    dotted key path (``"sensors[3].kind"``) when a value is wrong.
    """

    def __init__(self, file: str, location: str, message: str) -> None:
        self.file = file
        self.location = location
        self.message = message
        where = f"{file}: {location}" if location else file
        super().__init__(f"{where}: {message}")


class UsageError(JinmeiError):
    """A command-line argument is wrong: names the option and what was expected (exit 2)."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"{option}: {message}")


class PayloadRejected(JinmeiError):
    """A telemetry message or reading was refused; ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class DeliveryError(JinmeiError):
    """Writing to a store or sending to a channel failed.

    ``retryable`` is True when the same write may succeed later (network down, server busy,
    5xx) and False when it never will (the server refused the data itself, 4xx).
    """

    def __init__(self, target: str, message: str, *, retryable: bool) -> None:
        self.target = target
        self.retryable = retryable
        super().__init__(f"{target}: {message}")
