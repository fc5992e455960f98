"""InfluxQL for the dashboards, and Grafana's macro expansion, so tests run every panel's query.

Queries read the storage schema of design.md: measurement ``reading`` (tags ``mine``,
``sensor``, ``kind``, ``location``; fields ``value``, ``status``) and measurement ``alert``.
InfluxQL is the one query language InfluxDB 1.x, 2.x (v1 compatibility API) and 3.x all serve.

:func:`expand` does what Grafana's InfluxDB data source does before it sends a raw query:
``$timeFilter`` → ``time >= {from}ms and time <= {to}ms``; ``$__interval`` → the range divided
by the panel's max data points, rounded to Grafana's table of "nice" intervals
(:func:`round_interval`) and never below the data source's minimum interval;
``$__interval_ms`` the same in ms; ``${name:pipe}`` a template variable's selected values joined
by ``|`` (``All`` → the variable's all value). An unknown macro, variable or format raises
:class:`ValueError` — a query that Grafana would send half-expanded must not pass a test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["expand", "format_interval", "quote_string", "round_interval", "sensor_regex"]

# Grafana's rangeutil.roundInterval: (below this many ms, use this interval).
_NICE_INTERVALS_MS = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (150_000, 120_000), (450_000, 300_000),
    (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000),
    (5_400_000, 3_600_000), (9_000_000, 7_200_000), (16_200_000, 10_800_000),
    (32_400_000, 21_600_000), (86_400_000, 43_200_000), (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)
_YEAR_MS = 31_536_000_000
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1))
_MACRO = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def round_interval(interval_ms: float) -> int:
    """Grafana's rounding of a raw interval to a nice one (10 ms … 1 y)."""
    return next((nice for below, nice in _NICE_INTERVALS_MS if interval_ms < below), _YEAR_MS)


def format_interval(interval_ms: int) -> str:
    """``60000`` → ``1m``; the largest unit that divides it exactly (InfluxQL duration)."""
    unit, size = next((u, s) for u, s in _UNITS if interval_ms % s == 0)
    return f"{interval_ms // size}{unit}"


def quote_string(text: str) -> str:
    """An InfluxQL string literal (tag values in WHERE)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sensor_regex(sensor_ids: Sequence[str]) -> str:
    """The ids as a ``|``-joined regex alternation (ids escaped for the regex)."""
    return "|".join(re.escape(s) for s in sensor_ids)


def expand(query: str, *, start_ms: int, end_ms: int, max_data_points: int = 1000,
           min_interval_ms: int = 0, variables: Mapping[str, Sequence[str]] | None = None,
           all_values: Mapping[str, str] | None = None) -> str:
    """The query as Grafana sends it for the range [start_ms, end_ms] (see module docstring).

    ``variables`` maps a template variable to its selected values (``["$__all"]`` for All);
    ``all_values`` maps it to the value All stands for.
    """
    interval_ms = max(round_interval((end_ms - start_ms) / max_data_points), min_interval_ms)
    builtins = {"timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
                "__interval": format_interval(interval_ms),
                "__interval_ms": str(interval_ms)}
    variables = variables or {}
    all_values = all_values or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        if name in builtins and fmt is None:
            return builtins[name]
        if name not in variables:
            raise ValueError(f"query uses ${name}, which is neither a Grafana macro nor a "
                             f"template variable: {query}")
        if fmt != "pipe":
            raise ValueError(f"${{{name}}} needs the :pipe format (multi-value regex): {query}")
        selected = variables[name]
        if "$__all" in selected:
            return all_values[name]
        return "|".join(selected)

    return _MACRO.sub(replace, query)
