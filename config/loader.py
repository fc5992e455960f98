"""The configuration loader: TOML files in, the typed model of ``config.model`` out.

Three kinds of file, each validated completely before anything runs:

- the **limits table** (``config/limits.toml``, shipped): kinds, location types and the
  statutory ``[[limit]]`` rows → :class:`~config.limits_table.LimitsTable`;
- a **mine file** (``config/mines/<mine>.toml``): ``[mine]``, ``[defaults]``,
  ``[[substations]]``, ``[[sensors]]`` → :class:`~config.model.Mine`, every sensor carrying
  its effective :class:`~config.model.Limits` (the governing row, release values defaulted,
  per-sensor overrides applied — stricter only, unless the row is ``unsure``; any override
  needs a ``reason``, which becomes part of ``Limits.source``);
- a **deployment file** (``config/jinmei.example.toml`` is the commented sample and the
  default): the mine files, the limits file, ``[broker]``, ``[store]``, ``[ingest]``,
  ``[alerts]`` → :class:`~config.model.Deployment`. Secrets never come from files: the MQTT
  password from ``JINMEI_MQTT_PASSWORD``, the InfluxDB token from ``JINMEI_INFLUX_TOKEN``.

Failure: the first problem raises :class:`~config.errors.ConfigError` naming the file, where
(``line N`` for TOML syntax, else the key path, with the line of its ``[[sensors]]`` /
``[[substations]]`` / ``[[limit]]`` header when the file has one) and what was expected.
Unknown keys are errors, never ignored. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tomllib
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, fields, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from config.errors import ConfigError
from config.limits_table import (
    ANY_LOCATION,
    THRESHOLDS,
    UPPER_THRESHOLDS,
    KindInfo,
    LimitRow,
    LimitsTable,
    LocationInfo,
    consistency_problem,
    with_release_defaults,
)
from config.model import (
    ACCOUNT_ROLES,
    ROLES,
    AlertsConfig,
    BrokerAccount,
    BrokerConfig,
    ConsoleConfig,
    ConsoleUser,
    Deployment,
    DetectorConfig,
    HttpConfig,
    IngestConfig,
    InhibitConfig,
    Limits,
    Mine,
    MineNetworking,
    NetworkingConfig,
    Receiver,
    Route,
    Sensor,
    StoreConfig,
    Substation,
)

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "DEFAULT_LIMITS",
    "ENV_INFLUX_TOKEN",
    "ENV_MQTT_PASSWORD",
    "LOCAL_TZ",
    "check_file",
    "deployment_limits",
    "load_deployment",
    "load_limits",
    "load_mine",
    "registry_json",
]

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_LIMITS = CONFIG_DIR / "limits.toml"
DEFAULT_DEPLOYMENT = CONFIG_DIR / "jinmei.example.toml"
LOCAL_TZ = "Asia/Shanghai"
ENV_MQTT_PASSWORD = "JINMEI_MQTT_PASSWORD"
ENV_INFLUX_TOKEN = "JINMEI_INFLUX_TOKEN"

DEFAULT_PERIOD_S = 10.0
MAX_PERIOD_S = 30.0  # AQ 6201-2019: every sensor is patrolled at least every 30 s

_MINE_ID = re.compile(r"[a-z][a-z0-9_-]*\Z")  # goes into MQTT topics and store tags
_POINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
_NETWORK_CODE = re.compile(r"[A-Za-z0-9]+\Z")  # goes into `;`-separated networking files
_TOML_AT = re.compile(r"\s*\(at line (\d+), column \d+\)\s*$")
_ARRAY_HEADER = re.compile(r"\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_SECRET_HINTS = {
    "password": f"passwords are never read from files: set {ENV_MQTT_PASSWORD}",
    "token": f"tokens are never read from files: set {ENV_INFLUX_TOKEN}",
}
_MISSING: Any = object()


# ── Reading TOML with errors that say where ──────────────────────────────────────────────────

@dataclass(frozen=True)
class _Source:
    """One file as read: its bytes (for the config hash), its document, and the line of every
    ``[[array]]`` header (so errors inside a sensor block can point at it)."""

    path: Path
    raw: bytes
    doc: dict[str, Any]
    headers: Mapping[str, list[int]]

    @property
    def file(self) -> str:
        return str(self.path)

    def root(self) -> _Table:
        return _Table(self, self.doc, "", None)


def _read(path: str | Path) -> _Source:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read the file: {exc.strerror}") from exc
    except ValueError as exc:  # a NUL in the name: no file can have it
        raise ConfigError(repr(str(path)), "", f"cannot read the file: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"byte {exc.start}", "not UTF-8 text") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _TOML_AT.search(message)
        location = f"line {at.group(1)}" if at else ""
        raise ConfigError(str(path), location,
                          f"invalid TOML: {message[:at.start()] if at else message}") from exc
    headers: dict[str, list[int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _ARRAY_HEADER.match(line):
            headers.setdefault(header.group(1), []).append(number)
    return _Source(path, raw, doc, headers)


def _show(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


class _Table:
    """A TOML table being read: typed getters whose errors name file, line and key path."""

    def __init__(self, source: _Source, data: dict[str, Any], where: str,
                 line: int | None) -> None:
        self.source, self.data, self.where, self.line = source, data, where, line

    def error(self, key: str | None, message: str) -> ConfigError:
        path = ".".join(p for p in (self.where, key) if p)
        location = f"line {self.line} ({path})" if self.line else path
        return ConfigError(self.source.file, location, message)

    def allow(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                hint = _SECRET_HINTS.get(key) or "".join(
                    f"did you mean {m!r}?" for m in get_close_matches(key, keys, n=1))
                raise self.error(key, f"unknown key {key!r}{'; ' + hint if hint else ''}; "
                                      f"allowed keys: {', '.join(keys)}")

    def _get(self, key: str, default: Any, expected: str, ok: type | tuple[type, ...]) -> Any:
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, f"required key {key!r} is missing: expected {expected}")
            return default
        value = self.data[key]
        # TOML booleans are Python ints: never accept one as a number
        if not isinstance(value, ok) or (isinstance(value, bool) and ok is not bool):
            raise self.error(key, f"expected {expected}, got {_show(value)}")
        return value

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default, "a string", str)
        if default is _MISSING and not value.strip():
            raise self.error(key, "expected a non-empty string")
        return value

    def matching(self, key: str, pattern: re.Pattern[str], expected: str) -> str:
        value: str = self.text(key)
        if not pattern.match(value):
            raise self.error(key, f"expected {expected}, got {value!r}")
        return value

    def choice(self, key: str, options: Collection[str], what: str,
               default: Any = _MISSING) -> Any:
        value = self.text(key, default)
        if key in self.data and value not in options:
            raise self.error(key, f"{value!r} is not {what}: {', '.join(options)}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, default, "true or false", bool))

    def number(self, key: str, default: Any = _MISSING, *, above: float | None = None) -> Any:
        value = self._get(key, default, "a number", (int, float))
        if value is None:
            return None
        if not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value}")
        if above is not None and not value > above:
            raise self.error(key, f"expected a number above {above:g}, got {value:g}")
        return float(value)

    def integer(self, key: str, default: int, *, low: int = 1, high: int | None = None) -> int:
        value: int = self._get(key, default, "an integer", int)
        if value < low or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise self.error(key, f"expected an integer {bounds}, got {value}")
        return value

    def pair(self, key: str, default: tuple[float, float]) -> tuple[float, float]:
        value = self._get(key, default, "an array [low, high]", (list, tuple))
        if len(value) != 2 or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            raise self.error(key, f"expected [low, high] (two numbers), got {value!r}")
        low, high = float(value[0]), float(value[1])
        if not low < high:
            raise self.error(key, f"expected low < high, got [{low:g}, {high:g}]")
        return low, high

    def strings(self, key: str) -> list[str]:
        value = self._get(key, _MISSING, "an array of strings", list)
        if not value or not all(isinstance(v, str) and v for v in value):
            raise self.error(key, f"expected a non-empty array of strings, got {value!r}")
        return value

    def table(self, key: str, *, required: bool = False) -> _Table:
        value = self._get(key, _MISSING if required else {}, "a table", dict)
        return _Table(self.source, value, ".".join(p for p in (self.where, key) if p), self.line)

    def tables(self, key: str) -> list[_Table]:
        """The elements of an array of tables, each knowing the line of its header."""
        path = ".".join(p for p in (self.where, key) if p)
        value = self._get(key, [], "an array of tables ([[" + path + "]])", list)
        lines: list[int | None] = list(self.source.headers.get(path, []))
        if len(lines) != len(value):  # written inline, not as [[key]] blocks: no line to show
            lines = [None] * len(value)
        rows = []
        for i, (item, line) in enumerate(zip(value, lines, strict=True)):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{i}]", f"expected a table, got {_show(item)}")
            rows.append(_Table(self.source, item, f"{path}[{i}]", line or self.line))
        return rows

    def subtables(self, key: str) -> list[tuple[str, _Table]]:
        """``[key.<name>]`` tables, e.g. ``[kinds.ch4]``."""
        outer = self.table(key, required=True)
        return [(name, outer.table(name, required=True)) for name in outer.data]


# ── The limits table ─────────────────────────────────────────────────────────────────────────

_VALUE_TYPES = ("MN", "KG", "LJ", "DT")  # MT/T 1201.1: analog, switch, accumulator, multi-state
_ROW_KEYS = ("kind", "location", *THRESHOLDS, "inclusive", "power_off_area", "source", "unsure",
             "note")


def _parse_kind(t: _Table) -> KindInfo:
    t.allow("name", "name_en", "unit", "value_type", "type_code", "range")
    low, high = t.pair("range", _MISSING)
    return KindInfo(t.text("name"), t.text("name_en"), t.text("unit", ""),
                    t.choice("value_type", _VALUE_TYPES, "an MT/T 1201.1 value type"),
                    t.text("type_code"), low, high)


def _parse_location(t: _Table) -> LocationInfo:
    t.allow("name", "name_en", "tag")
    return LocationInfo(t.text("name"), t.text("name_en"), t.text("tag", ""))


def _parse_limits(src: _Source) -> LimitsTable:
    root = src.root()
    root.allow("kinds", "locations", "limit")
    kinds = {name: _parse_kind(t) for name, t in root.subtables("kinds")}
    locations = {name: _parse_location(t) for name, t in root.subtables("locations")}
    rows: dict[tuple[str, str], LimitRow] = {}
    for t in root.tables("limit"):
        t.allow(*_ROW_KEYS)
        kind = t.choice("kind", kinds, "a kind of this table")
        location = t.choice("location", [ANY_LOCATION, *locations], "a location of this table")
        if (kind, location) in rows:
            raise t.error(None, f"a second row for kind {kind!r} at location {location!r}")
        limits = Limits(**{k: t.number(k, None) for k in THRESHOLDS},
                        inclusive=t.flag("inclusive", True),
                        power_off_area=t.text("power_off_area", ""),
                        source=t.text("source"), unsure=t.flag("unsure", False))
        if problem := consistency_problem(with_release_defaults(limits)):
            raise t.error(None, problem)
        rows[kind, location] = LimitRow(kind, location, limits, t.text("note", ""))
    return LimitsTable(kinds, locations, tuple(rows.values()), src.file)


def load_limits(path: str | Path | None = None) -> LimitsTable:
    """Load a limits table; ``None`` loads the shipped statutory table."""
    return _parse_limits(_read(DEFAULT_LIMITS if path is None else path))


# ── Mine files ───────────────────────────────────────────────────────────────────────────────

def _period(t: _Table, default: float) -> float:
    period: float = t.number("period_s", default, above=0.0)
    if period > MAX_PERIOD_S:
        raise t.error("period_s", f"{period:g} s is too long: AQ 6201-2019 sets the maximum "
                                  f"patrol period at {MAX_PERIOD_S:g} s")
    return period


def _effective_limits(t: _Table, row: LimitRow, origin: str) -> Limits:
    """The row's limits with this sensor's override (if any) applied, release values defaulted."""
    limits = row.limits
    if "limits" in t.data:
        override = t.table("limits")
        override.allow(*THRESHOLDS, "reason")
        changes = {k: override.number(k) for k in THRESHOLDS if k in override.data}
        if not changes:
            raise override.error(None, f"an override needs at least one of {', '.join(THRESHOLDS)}")
        reason = override.text("reason")
        statutory = with_release_defaults(row.limits)
        for key, value in changes.items():
            law = getattr(statutory, key)
            looser = law is not None and (value > law if key in UPPER_THRESHOLDS else value < law)
            if looser and not row.limits.unsure:
                raise override.error(key, f"{value:g} is looser than the statutory {law:g} "
                                          f"({row.limits.source}); an override may only be "
                                          "stricter unless the row is marked unsure")
        limits = replace(limits, **changes,
                         source=f"{row.limits.source}; override in {origin}: {reason}")
    effective = with_release_defaults(limits)
    if problem := consistency_problem(effective):
        raise t.error("limits", problem)
    return effective


def _parse_sensor(t: _Table, mine_id: str, substations: Collection[str], default_period: float,
                  table: LimitsTable) -> Sensor:
    t.allow("id", "kind", "location", "place", "area", "substation", "unit", "period_s", "range",
            "limits", "point_code")
    sensor_id = t.matching("id", _POINT_ID, "a point code of letters, digits, '-', '_' or '.'")
    kind_id = t.choice("kind", table.kinds, "a kind of the limits table")
    kind = table.kinds[kind_id]
    location = t.choice("location", table.locations, "a location of the limits table")
    unit = t.text("unit", kind.unit)
    if unit != kind.unit:
        raise t.error("unit", f"{unit!r} differs from the unit of {kind_id}, {kind.unit!r}")
    try:
        row = table.resolve(kind_id, location)
    except ConfigError as exc:
        raise t.error("location", exc.message) from exc
    low, high = t.pair("range", (kind.range_low, kind.range_high))
    return Sensor(
        mine=mine_id, id=sensor_id, kind=kind_id, unit=unit, location=location,
        place=t.text("place"), area=t.text("area"),
        substation=t.choice("substation", substations, "a substation declared in this file"),
        period_s=_period(t, default_period), range_low=low, range_high=high,
        limits=_effective_limits(t, row, f"{t.source.path.name} sensors.{sensor_id}"),
        point_code=t.matching("point_code", _NETWORK_CODE, "a point code of letters and digits")
        if "point_code" in t.data else "",
    )


def _parse_mine(src: _Source, table: LimitsTable) -> Mine:
    root = src.root()
    root.allow("mine", "defaults", "substations", "sensors", "networking")
    head = root.table("mine", required=True)
    head.allow("id", "name", "name_en", "timezone")
    mine_id = head.matching("id", _MINE_ID, "a lowercase slug such as 'dayan'")
    name, name_en = head.text("name"), head.text("name_en")
    timezone: str = head.text("timezone", LOCAL_TZ)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: a 300-char name
        raise head.error("timezone", f"{timezone!r} is not a known time zone "
                                     "(expected a name such as 'Asia/Shanghai')") from exc
    defaults = root.table("defaults")
    defaults.allow("period_s")
    default_period = _period(defaults, DEFAULT_PERIOD_S)

    substations: dict[str, Substation] = {}
    for t in root.tables("substations"):
        t.allow("id", "name", "place", "code")
        station = Substation(t.matching("id", _POINT_ID, "a substation code"), t.text("name"),
                             t.text("place", ""),
                             t.matching("code", _NETWORK_CODE, "a substation code of letters "
                                        "and digits") if "code" in t.data else "")
        if station.id in substations:
            raise t.error("id", f"substation {station.id!r} is declared twice")
        substations[station.id] = station

    sensors: dict[str, Sensor] = {}
    for t in root.tables("sensors"):
        sensor = _parse_sensor(t, mine_id, substations, default_period, table)
        if sensor.id in sensors:
            raise t.error("id", f"sensor id {sensor.id!r} is used twice in mine {mine_id!r}")
        sensors[sensor.id] = sensor
    if not sensors:
        raise root.error("sensors", "a mine needs at least one [[sensors]] block")
    return Mine(mine_id, name, name_en, timezone,
                tuple(substations.values()), tuple(sensors.values()), src.file,
                _parse_mine_networking(root, substations.values(), sensors.values()))


def _parse_mine_networking(root: _Table, substations: Collection[Substation],
                           sensors: Collection[Sensor]) -> MineNetworking:
    """``[networking]``: with a mine code, every substation needs a ``code`` and every sensor
    a ``point_code``, unique in the mine (the regulator keys its records by them)."""
    if "networking" not in root.data:
        return MineNetworking()
    t = root.table("networking")
    t.allow("code", "system_model", "system_name", "manufacturer")
    net = MineNetworking(t.matching("code", _NETWORK_CODE, "a mine code (矿井编码) of letters "
                                    "and digits"), t.text("system_model", ""),
                         t.text("system_name", ""), t.text("manufacturer", ""))
    for what, items, key in (("substations", substations, "code"),
                             ("sensors", sensors, "point_code")):
        seen: dict[str, str] = {}
        for item in items:
            code = getattr(item, key)
            if not code:
                raise root.error(what, f"{item.id!r} has no {key}: with a [networking] mine "
                                       f"code every one of the {what} needs one")
            if code in seen:
                raise root.error(what, f"{key} {code!r} of {item.id!r} is already used by "
                                       f"{seen[code]!r}")
            seen[code] = item.id
    return net


def load_mine(path: str | Path, limits: LimitsTable) -> Mine:
    """Load one mine file, resolving every sensor's limits against ``limits``."""
    return _parse_mine(_read(path), limits)


# ── Deployment files ─────────────────────────────────────────────────────────────────────────

def _parse_broker(t: _Table, environ: Mapping[str, str], mines: Collection[Mine]) -> BrokerConfig:
    t.allow("url", "client_id", "protocol", "username", "in_flight", "keepalive_s", "ca_file",
            "cert_file", "key_file", "accounts")
    d = BrokerConfig()
    url: str = t.text("url", d.url)
    _check_url(t, url, ("mqtt", "mqtts"), "mqtt://host[:port] or mqtts://host[:port]")
    if urlsplit(url).password is not None:  # parsed above: urlsplit no longer raises
        raise t.error("url", "a password in the broker URL is refused: set the user name in "
                             f"`username` and the password in {ENV_MQTT_PASSWORD}")
    files = {key: _config_path(t, key) for key in ("ca_file", "cert_file", "key_file")}
    if files["key_file"] and not files["cert_file"]:
        raise t.error("key_file", "a key_file needs its cert_file (the client certificate)")
    if (tls_file := files["ca_file"] or files["cert_file"]) and not url.startswith("mqtts:"):
        key = "ca_file" if files["ca_file"] else "cert_file"
        raise t.error(key, f"{tls_file!r} is set but url {url!r} is not TLS: use mqtts://")
    username: str = t.text("username", d.username)
    accounts = tuple(_parse_account(a, mines) for a in t.tables("accounts"))
    names = [username, *(a.name for a in accounts)]
    if duplicate := next((n for n in names[1:] if names.count(n) > 1), None):
        raise t.error("accounts", f"account {duplicate!r} is defined twice (or is jinmei's own "
                                  "account, broker.username)")
    client_id: str = t.text("client_id", d.client_id)
    for index, account in enumerate(accounts):
        if account.name.startswith(client_id):
            raise t.error(f"accounts[{index}].name",
                          f"account {account.name!r} is (or starts with) jinmei's client id "
                          f"{client_id!r}: the broker makes an account's name its client id, so "
                          "it would take over jinmei's connections; name it otherwise")
    return BrokerConfig(
        url=url, client_id=client_id,
        protocol=t.choice("protocol", ("5", "3.1.1"), "an MQTT protocol version", d.protocol),
        username=username, password=environ.get(ENV_MQTT_PASSWORD, ""),
        in_flight=t.integer("in_flight", d.in_flight, high=65535),
        keepalive_s=t.integer("keepalive_s", d.keepalive_s),
        accounts=accounts, **files,
    )


def _config_path(t: _Table, key: str) -> str:
    """A file named by the configuration (relative to the deployment file), checked readable;
    "" when the key is absent."""
    name: str = t.text(key, "")
    if not name:
        return ""
    path = t.source.path.parent / os.path.expanduser(name)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise t.error(key, f"cannot read {str(path)!r}: {exc.strerror}") from exc
    return str(path)


# An account name goes into the broker's password and ACL files, one token a line.
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*\Z")


def _parse_account(t: _Table, mines: Collection[Mine]) -> BrokerAccount:
    """One ``[[broker.accounts]]``: a gateway of one mine (optionally of some substations), or
    a dispatcher / regulator reading the alerts and status of its mines."""
    t.allow("name", "role", "mines", "substations")
    name = t.matching("name", _ACCOUNT_NAME, "an account name of letters, digits, '_', '.', "
                                             "'@' and '-'")
    role = t.choice("role", ACCOUNT_ROLES, "a role")
    known = {m.id: m for m in mines}
    chosen = tuple(t.strings("mines")) if "mines" in t.data else ()
    for mine in chosen:
        if mine not in known:
            hint = "".join(f" (did you mean {m!r}?)" for m in get_close_matches(mine, known, 1))
            raise t.error("mines", f"no mine {mine!r} is configured{hint}; configured: "
                                   f"{', '.join(known)}")
    if role == "gateway" and len(chosen) != 1:
        raise t.error("mines", "a gateway account publishes the telemetry of exactly one mine: "
                               f"expected one mine, got {list(chosen)}")
    if role == "dispatcher" and not chosen:
        raise t.error("mines", "a dispatcher account needs the mines whose alerts it reads")
    substations: tuple[str, ...] = ()
    if "substations" in t.data:
        if role != "gateway":
            raise t.error("substations", "only a gateway account is limited to substations")
        substations = tuple(t.strings("substations"))
        declared = {s.id for s in known[chosen[0]].substations}
        if unknown := [s for s in substations if s not in declared]:
            raise t.error("substations", f"mine {chosen[0]!r} has no substation "
                                         f"{unknown[0]!r}; declared: {', '.join(sorted(declared))}")
    return BrokerAccount(name=name, role=role, mines=chosen, substations=substations)


def _check_url(t: _Table, url: str, schemes: tuple[str, ...], expected: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "mqtt://[::1": an unclosed IPv6 bracket
        raise t.error("url", f"bad host in {url!r}") from exc
    try:
        parts.port  # noqa: B018 — parsing the port is the check
    except ValueError as exc:
        raise t.error("url", f"bad port in {url!r}") from exc
    if parts.scheme not in schemes or not parts.hostname:
        raise t.error("url", f"expected {expected}, got {url!r}")


def _parse_store(t: _Table, environ: Mapping[str, str]) -> StoreConfig:
    t.allow("url")
    url: str = t.text("url", StoreConfig().url)
    if url.startswith("sqlite:"):
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise t.error("url", f"expected sqlite:///relative/path.db or "
                                 f"sqlite:////absolute/path.db, got {url!r}")
    else:
        _check_url(t, url, ("influxdb", "influxdbs"),
                   "sqlite:///path.db or influxdb[s]://host:port?org=..&bucket=..")
        query = parse_qs(urlsplit(url).query)
        if missing := [k for k in ("org", "bucket") if not query.get(k)]:
            raise t.error("url", f"{url!r} lacks {' and '.join(missing)}: "
                                 "expected influxdb://host:port?org=..&bucket=..")
    return StoreConfig(url=url, influx_token=environ.get(ENV_INFLUX_TOKEN, ""))


# jinmei's own: a process per core is the point; more than 64 on one machine is a typo, and
# each worker holds its own MQTT session, store connection and alert state.
MAX_WORKERS = 64

def _parse_ingest(t: _Table) -> IngestConfig:
    t.allow("state_dir", "batch_max_messages", "batch_wait_ms", "max_future_s", "stall_s",
            "offline_after_s", "store_fault_after_s", "quarantine_after", "workers")
    d = IngestConfig()
    state_dir: str = t.text("state_dir", d.state_dir)
    if not state_dir.strip():
        raise t.error("state_dir", "expected a directory, got an empty string")
    return IngestConfig(state_dir=state_dir,
                        batch_max_messages=t.integer("batch_max_messages", d.batch_max_messages),
                        batch_wait_ms=t.integer("batch_wait_ms", d.batch_wait_ms),
                        max_future_s=t.number("max_future_s", d.max_future_s, above=0.0),
                        stall_s=t.number("stall_s", d.stall_s, above=0.0),
                        offline_after_s=t.number("offline_after_s", d.offline_after_s,
                                                 above=0.0),
                        store_fault_after_s=t.number("store_fault_after_s",
                                                     d.store_fault_after_s, above=0.0),
                        # 1 would set aside every message of the batch in hand at a death:
                        # the first death cannot tell the culprit from its batch-mates.
                        quarantine_after=t.integer("quarantine_after", d.quarantine_after,
                                                   low=2),
                        workers=t.integer("workers", d.workers, low=0, high=MAX_WORKERS))


_CHANNEL_KEYS = {
    "webhook": ("url", "timeout_s", "secret_env", "unsigned"),
    "email": ("host", "port", "starttls", "username", "password_env", "sender", "to",
              "timeout_s"),
    "sms": ("url", "to", "body", "content_type", "timeout_s", "secret_env"),
    "mqtt": ("topic",),
}
_NO_DEBOUNCE = "limit_power_off"  # the safety floor: a power-off alert is never held back


def _parse_receiver(t: _Table, environ: Mapping[str, str]) -> Receiver:
    name = t.matching("name", _MINE_ID, "a name of lower-case letters, digits, - and _")
    channel = t.choice("channel", tuple(_CHANNEL_KEYS), "a channel")
    t.allow("name", "channel", *_CHANNEL_KEYS[channel])
    options: dict[str, object] = {}
    for key in _CHANNEL_KEYS[channel]:
        if key not in t.data or key.endswith("_env"):
            continue
        if key in ("port",):
            options[key] = t.integer(key, 25, high=65535)
        elif key == "timeout_s":
            options[key] = t.number(key, above=0.0)
        elif key in ("starttls", "unsigned"):
            options[key] = t.flag(key, key == "starttls")
        elif key == "to":
            options[key] = tuple(t.strings(key))
        else:
            options[key] = t.text(key)
    if channel in ("webhook", "sms"):
        _check_url(t, str(options.get("url", "")), ("http", "https"), "http(s)://host/path")
    if channel == "email":
        for key in ("host", "sender", "to"):
            if key not in options:
                raise t.error(key, f"required key {key!r} is missing for an email receiver")
    if channel == "sms" and ("to" not in options or "body" not in options):
        raise t.error("to" if "to" not in options else "body",
                      "an sms receiver needs `to` (numbers) and a `body` template")
    if channel == "webhook" and ("secret_env" in t.data) == bool(options.get("unsigned")):
        raise t.error("secret_env", "a webhook receiver signs every request: name the "
                                    "environment variable of its shared secret in secret_env, "
                                    "or mark it `unsigned = true` (anyone who can reach the "
                                    "receiver can then forge alerts)"
                      if "secret_env" not in t.data else
                      "secret_env and `unsigned = true` contradict each other")
    secret_env = next((k for k in ("secret_env", "password_env") if k in t.data), None)
    secret = ""
    if secret_env is not None:
        variable = t.text(secret_env)
        if variable not in environ:
            raise t.error(secret_env, f"environment variable {variable} is not set")
        secret = environ[variable]
    return Receiver(name=name, channel=channel, options=tuple(options.items()), secret=secret)


def _parse_route(t: _Table, receivers: Collection[str]) -> Route:
    t.allow("receivers", "mines", "kinds", "rules", "severities", "escalate_after_s",
            "escalate_to")

    def names(key: str, required: bool = False) -> tuple[str, ...]:
        if key not in t.data and not required:
            return ()
        values = tuple(t.strings(key))
        if key in ("receivers", "escalate_to"):
            for value in values:
                if value not in receivers:
                    raise t.error(key, f"no receiver {value!r}; defined: "
                                       f"{', '.join(receivers) or 'none'}")
        return values

    escalate_to = names("escalate_to")
    after = t.number("escalate_after_s", None, above=0.0)
    if bool(escalate_to) != (after is not None):
        raise t.error("escalate_after_s", "escalate_after_s and escalate_to go together")
    return Route(receivers=names("receivers", required=True), mines=names("mines"),
                 kinds=names("kinds"), rules=names("rules"),
                 severities=names("severities"), escalate_after_s=after,
                 escalate_to=escalate_to)


def _parse_alerts(t: _Table, environ: Mapping[str, str]) -> AlertsConfig:
    t.allow("mqtt", "group_wait_s", "group_interval_s", "repeat_interval_s", "resolve_hold_s",
            "for_s", "retry_max_s", "receivers", "routes", "supersede_warnings",
            "supersede_warnings_under_power_off", "supersede_level_shifts", "inhibit")
    d = AlertsConfig()
    inhibit = t.table("inhibit")
    rules = [f.name for f in fields(InhibitConfig)]
    inhibit.allow(*rules)
    for_table = t.table("for_s")
    for_s = []
    for rule in for_table.data:
        if rule == _NO_DEBOUNCE:
            raise for_table.error(rule, "limit_power_off is never debounced: a methane "
                                        "power-off alert goes out at once")
        for_s.append((rule, for_table.number(rule, above=0.0)))
    receivers = [_parse_receiver(r, environ) for r in t.tables("receivers")]
    names = [r.name for r in receivers]
    if duplicate := next((n for n in names if names.count(n) > 1), None):
        raise t.error("receivers", f"receiver {duplicate!r} is defined twice")
    return AlertsConfig(
        mqtt=t.flag("mqtt", d.mqtt),
        group_wait_s=t.number("group_wait_s", d.group_wait_s, above=-1e-9),
        group_interval_s=t.number("group_interval_s", d.group_interval_s, above=0.0),
        repeat_interval_s=t.number("repeat_interval_s", d.repeat_interval_s, above=0.0),
        resolve_hold_s=t.number("resolve_hold_s", d.resolve_hold_s, above=-1e-9),
        for_s=tuple(for_s),
        retry_max_s=t.number("retry_max_s", d.retry_max_s, above=0.0),
        receivers=tuple(receivers),
        routes=tuple(_parse_route(r, names) for r in t.tables("routes")),
        supersede_warnings=t.flag("supersede_warnings", d.supersede_warnings),
        supersede_warnings_under_power_off=t.flag("supersede_warnings_under_power_off",
                                                  d.supersede_warnings_under_power_off),
        supersede_level_shifts=t.flag("supersede_level_shifts", d.supersede_level_shifts),
        inhibit=InhibitConfig(**{r: inhibit.flag(r, getattr(d.inhibit, r)) for r in rules}))


def _parse_detectors(t: _Table) -> DetectorConfig:
    times = ("history_s", "trend_window_s", "trend_horizon_s", "trend_short_window_s",
             "trend_eval_s", "level_shift_recent_s",
             "level_shift_reference_s", "stuck_s", "feed_response_s", "drift_window_s")
    others = ("level_shift_sigmas", "level_shift_min_fraction", "face_return_tolerance",
              "no_data_periods")
    kind_tables = ("max_rate", "spike_jump", "stuck_s_by_kind", "drift_by_kind")
    t.allow(*times, *others, *kind_tables)
    d = DetectorConfig()
    values = {k: t.number(k, getattr(d, k), above=0.0) for k in (*times, *others)}
    if values["no_data_periods"] < 1:
        raise t.error("no_data_periods", "expected at least 1 patrol period, got "
                                         f"{values['no_data_periods']:g}")
    longest = max(values["trend_window_s"], values["trend_short_window_s"],
                  values["level_shift_recent_s"] + values["level_shift_reference_s"])
    if values["history_s"] < longest:
        raise t.error("history_s", f"{values['history_s']:g} s is shorter than the longest "
                                   f"window it feeds ({longest:g} s)")
    by_kind = []
    for name in kind_tables:  # a listed kind replaces its default
        table = t.table(name)
        merged = dict(getattr(d, name)) | {k: table.number(k, above=0.0) for k in table.data}
        by_kind.append(tuple(sorted(merged.items())))
    max_rate, spike_jump, stuck_s_by_kind, drift_by_kind = by_kind
    return DetectorConfig(**values, max_rate=max_rate, spike_jump=spike_jump,
                          stuck_s_by_kind=stuck_s_by_kind, drift_by_kind=drift_by_kind)


ENV_NETWORKING_PASSWORD = "JINMEI_NETWORKING_PASSWORD"


def _parse_networking(t: _Table, environ: Mapping[str, str],
                      mines: Collection[Mine]) -> NetworkingConfig:
    t.allow("enabled", "url", "password_env", "encoding", "cdss_period_s", "retry_max_s",
            "system_code", "known_hosts", "ca_file", "insecure")
    d = NetworkingConfig()
    enabled = t.flag("enabled", d.enabled)
    url: str = t.text("url", d.url)
    insecure = t.flag("insecure", d.insecure)
    if url:  # enabled without a url: the files are written and archived only
        _check_url(t, url, ("sftp", "ftps", "ftp"),
                   "sftp://user@host[:port]/dir or ftps://user@host[:port]/dir")
        if urlsplit(url).password is not None:
            raise t.error("url", "a password in the URL is refused: name its environment "
                                 "variable in password_env")
    if url.startswith("ftp:") and not insecure:
        raise t.error("url", "plain ftp:// sends the password and the files unencrypted: use "
                             "sftp:// or ftps://, or set `insecure = true` to accept that")
    if enabled and (uncoded := [m.id for m in mines if not m.networking.code]):
        raise t.error("enabled", f"mine {uncoded[0]!r} has no [networking] code (矿井编码)")
    variable: str = t.text("password_env", ENV_NETWORKING_PASSWORD)
    return NetworkingConfig(
        enabled=enabled, url=url, password=environ.get(variable, ""),
        encoding=t.choice("encoding", ("utf-8", "gbk"), "a text encoding", d.encoding),
        cdss_period_s=t.number("cdss_period_s", d.cdss_period_s, above=0.0),
        retry_max_s=t.number("retry_max_s", d.retry_max_s, above=0.0),
        system_code=t.choice("system_code", ("01", "02"), "an MT/T 1201.1 system code "
                             "(01 safety monitoring, 02 gas drainage)", d.system_code),
        known_hosts=os.path.expanduser(t.text("known_hosts", d.known_hosts)),
        ca_file=_config_path(t, "ca_file"), insecure=insecure)


def _parse_http(t: _Table) -> HttpConfig:
    t.allow("listen")
    listen: str = t.text("listen", HttpConfig().listen)
    if listen:
        host, colon, port = listen.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise t.error("listen", f"expected host:port (e.g. 127.0.0.1:9108, [::1]:9108; port "
                                    f"0: any free one) or \"\" to turn the endpoint off, got "
                                    f"{listen!r}")
    return HttpConfig(listen=listen)


_HASH = re.compile(r"scrypt\$n=\d+,r=\d+,p=\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\Z")
_USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


def _parse_console(root: _Table, mine_ids: Collection[str]) -> ConsoleConfig:
    t = root.table("console")
    t.allow("session_max_s", "users")
    users: list[ConsoleUser] = []
    for u in t.tables("users"):
        u.allow("name", "role", "mines", "password_hash")
        name = u.matching("name", _USER_NAME, "a user name of letters, digits, '.', '_' or '-'")
        if any(other.name == name for other in users):
            raise u.error("name", f"user {name!r} is defined twice")
        role = u.choice("role", ROLES, "role")
        mines = tuple(u.strings("mines")) if "mines" in u.data else ()
        for mine in mines:
            if mine not in mine_ids:
                raise u.error("mines", f"no mine {mine!r}; known: {', '.join(mine_ids)}")
        if role == "dispatcher" and not mines:
            raise u.error("mines", "a dispatcher needs the mines they dispatch, e.g. "
                                   "mines = [\"dayan\"]")
        password_hash = u.matching("password_hash", _HASH,
                                   "scrypt$n=…,r=…,p=…$salt$hash as `jinmei users add` prints it")
        users.append(ConsoleUser(name, role, password_hash, mines))
    return ConsoleConfig(session_max_s=t.number("session_max_s", ConsoleConfig().session_max_s,
                                                above=0),
                         users=tuple(users))


def _limits_path(src: _Source) -> Path:
    name = src.root().text("limits", None)
    return DEFAULT_LIMITS if name is None else src.path.parent / name


def _config_hash(sources: list[_Source]) -> str:
    digest = hashlib.sha256()
    for source in sources:  # length-prefixed, so moving bytes between files changes the hash
        digest.update(len(source.raw).to_bytes(8, "big"))
        digest.update(source.raw)
    return digest.hexdigest()[:16]


def _parse_deployment(src: _Source, environ: Mapping[str, str]) -> Deployment:
    root = src.root()
    root.allow("mines", "limits", "broker", "store", "ingest", "alerts", "detectors", "networking",
               "http", "console")
    limits_src = _read(_limits_path(src))
    table = _parse_limits(limits_src)
    mine_srcs = [_read(src.path.parent / name) for name in root.strings("mines")]
    mines = [_parse_mine(s, table) for s in mine_srcs]
    seen: dict[str, str] = {}
    for i, mine in enumerate(mines):
        if mine.id in seen:
            raise root.error(f"mines[{i}]", f"mine {mine.id!r} is already loaded from "
                                            f"{seen[mine.id]}")
        seen[mine.id] = mine.source_file
    return Deployment(
        broker=_parse_broker(root.table("broker"), environ, mines),
        store=_parse_store(root.table("store"), environ),
        ingest=_parse_ingest(root.table("ingest")),
        alerts=_parse_alerts(root.table("alerts"), environ),
        mines=tuple(mines), source_file=src.file,
        detectors=_parse_detectors(root.table("detectors")),
        networking=_parse_networking(root.table("networking"), environ, mines),
        http=_parse_http(root.table("http")),
        console=_parse_console(root, [m.id for m in mines]),
        config_hash=_config_hash([src, limits_src, *mine_srcs]),
    )


def load_deployment(path: str | Path | None = None, *,
                    environ: Mapping[str, str] = os.environ) -> Deployment:
    """Load a deployment and every file it names; ``None`` loads the shipped sample, which
    runs both pilot mines. Paths in the file are relative to the file itself."""
    return _parse_deployment(_read(DEFAULT_DEPLOYMENT if path is None else path), environ)


def deployment_limits(deployment: Deployment) -> LimitsTable:
    """The limits table the deployment was loaded with (kind and location names for messages);
    the shipped table for a Deployment built without a file."""
    if not deployment.source_file:
        return load_limits()
    return load_limits(_limits_path(_read(deployment.source_file)))


# ── Checking and showing ─────────────────────────────────────────────────────────────────────

def check_file(path: str | Path) -> str:
    """Validate a limits, mine or deployment file (told apart by its tables) and summarise it.

    A mine file is checked against the shipped limits table. Raises ConfigError on the first
    problem.
    """
    src = _read(path)
    if "limit" in src.doc or "kinds" in src.doc:
        table = _parse_limits(src)
        unsure = sum(row.limits.unsure for row in table.rows)
        return (f"{src.file}: limits table, {len(table.kinds)} kinds, {len(table.locations)} "
                f"location types, {len(table.rows)} limit rows ({unsure} marked unsure).")
    if "mine" in src.doc or "sensors" in src.doc:
        table = load_limits()
        mine = _parse_mine(src, table)
        kinds = Counter(s.kind for s in mine.sensors)
        overrides = sum(s.limits != with_release_defaults(table.resolve(s.kind, s.location).limits)
                        for s in mine.sensors)
        return (f"{src.file}: mine {mine.id} ({mine.name}, {mine.name_en}), "
                f"{len(mine.sensors)} sensors on {len(mine.substations)} substations; "
                f"{', '.join(f'{k} {n}' for k, n in kinds.most_common())}; "
                f"limit overrides: {overrides}; time zone {mine.timezone}.")
    if "mines" in src.doc:
        deployment = _parse_deployment(src, os.environ)
        per_mine = ", ".join(f"{m.id} {len(m.sensors)} sensors" for m in deployment.mines)
        return (f"{src.file}: deployment of {len(deployment.mines)} mines ({per_mine}), "
                f"{len(deployment.registry)} sensors in all; broker {deployment.broker.url} "
                f"(MQTT {deployment.broker.protocol}); store {deployment.store.url}; limits "
                f"{_limits_path(src)}; config hash {deployment.config_hash}.")
    raise ConfigError(src.file, "", "cannot tell what this file is: a limits table has "
                                    "[[limit]] rows, a mine file a [mine] table, a deployment a "
                                    "mines = [...] list")


def registry_json(deployment: Deployment) -> dict[str, Any]:
    """The resolved configuration as plain JSON-ready data (``jinmei config show --json``)."""
    return {
        "config_hash": deployment.config_hash,
        "mines": [{"id": m.id, "name": m.name, "name_en": m.name_en, "timezone": m.timezone,
                   "substations": [asdict(s) for s in m.substations]}
                  for m in deployment.mines],
        "sensors": [{"mine": s.mine, "id": s.id, "kind": s.kind, "unit": s.unit,
                     "location": s.location, "place": s.place, "area": s.area,
                     "substation": s.substation, "period_s": s.period_s,
                     "range": [s.range_low, s.range_high], "limits": asdict(s.limits)}
                    for s in deployment.registry.sensors],
    }
