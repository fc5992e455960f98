"""Where readings and alert transitions are stored: the one interface, and the URL that picks it.

``store.url`` chooses the sink:

- ``sqlite:///relative/path.db`` (relative to the working directory) or
  ``sqlite:////absolute/path.db`` → :class:`~ingest.sqlite.SQLiteSink`, the embedded default;
- ``influxdb://host:port?org=O&bucket=B`` (http; port 8086 when left out) or
  ``influxdbs://…`` (https) → :class:`~ingest.influx.InfluxSink`, spooling in ``state_dir``,
  authenticated with ``store.influx_token``.

Errors: ``write`` and ``write_alerts`` raise :class:`~config.errors.DeliveryError`, with
``retryable`` False only when the store refused the data for good (the pipeline then sets
the batch aside as dead letters, see :mod:`ingest.deadletter`) and True when it may take it
later (the pipeline holds the messages unacknowledged and retries).

Failure behaviour: a URL that fits neither form raises :class:`~config.errors.ConfigError`
(``file="store.url"``) saying what was expected; nothing touches the network before that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from alerts.wire import Alert
from config.errors import ConfigError
from config.model import Registry
from config.readings import ReadingBatch
from ingest.influx import InfluxSink
from ingest.sqlite import SQLiteSink

__all__ = ["Sink", "open_sink"]

_INFLUX_FORM = ("influxdb://host:port[/path]?org=ORG&bucket=BUCKET (or influxdbs:// for https; "
                "a path is the server's prefix, e.g. /insert/0/influx of a vminsert)")
_INFLUX_SCHEMES = {"influxdb": "http", "influxdbs": "https"}


class Sink(Protocol):
    """A store of readings and alert transitions, written from one worker thread."""

    name: str

    def write(self, batch: ReadingBatch) -> None:
        """Store (or durably queue) the batch; durable when it returns. Raises DeliveryError."""
        ...

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store alert transitions (measurement ``alert``); durable when it returns."""
        ...

    def delivery_fault(self) -> tuple[int, str] | None:
        """(since epoch ms, last error) while the store's own background delivery fails
        (the InfluxDB forwarder); None when it delivers or there is none (SQLite writes in
        ``write`` itself, whose errors the caller sees)."""
        ...

    def use_registry(self, registry: Registry) -> None:
        """Read the sensor indexes of later batches through ``registry`` (after a reload)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters: ``readings`` written, ``pending`` spooled chunks, ``dead`` refused chunks."""
        ...

    def close(self) -> None:
        """Return when nothing more will be written, after flushing what can be flushed."""
        ...


def _bad_url(message: str) -> ConfigError:
    return ConfigError("store.url", "", message)


def _sqlite_path(url: str) -> Path:
    parts = urlsplit(url)
    # One slash separates the (empty) host from the path; a fourth makes the path absolute.
    if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2 or parts.query:
        raise _bad_url(f"expected sqlite:///relative/path.db or sqlite:////absolute/path.db, "
                       f"got {url!r}")
    return Path(parts.path[1:])


def _open_influx(url: str, registry: Registry, state_dir: str | Path, token: str) -> InfluxSink:
    parts = urlsplit(url)
    try:
        port = parts.port or 8086
    except ValueError as exc:
        raise _bad_url(f"expected {_INFLUX_FORM}: bad port in {url!r}") from exc
    query = parse_qs(parts.query, keep_blank_values=True)
    problems = [f"missing {key}" for key in ("org", "bucket") if not query.get(key, [""])[0]]
    problems += [f"unknown parameter {key}" for key in sorted(set(query) - {"org", "bucket"})]
    hostname = parts.hostname or ""
    if not hostname:
        problems.append("missing host")
    if problems:
        raise _bad_url(f"expected {_INFLUX_FORM}: {'; '.join(problems)} in {url!r}")
    host = f"[{hostname}]" if ":" in hostname else hostname  # an IPv6 literal needs brackets
    # the client adds /api/v2/write to the URL: a path goes before it (a cluster's vminsert)
    http_url = f"{_INFLUX_SCHEMES[parts.scheme]}://{host}:{port}{parts.path.rstrip('/')}"
    return InfluxSink(http_url, registry, org=query["org"][0], bucket=query["bucket"][0],
                      state_dir=state_dir, token=token)


def open_sink(url: str, registry: Registry, *, state_dir: str | Path,
              influx_token: str = "") -> Sink:
    """The sink that ``store.url`` names; raises ConfigError for a URL it does not fit."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        return SQLiteSink(_sqlite_path(url), registry)
    if scheme in _INFLUX_SCHEMES:
        return _open_influx(url, registry, state_dir, influx_token)
    raise _bad_url(f"expected a sqlite:///path.db or {_INFLUX_FORM} URL, got {url!r}")
