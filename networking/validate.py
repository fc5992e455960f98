"""``jinmei networking check``: parse any mine's networking files and report every violation.

Checks each file on its own — the name (``{mineCode}_{TYPE}_{yyyyMMddHHmmss}.txt``), the text
encoding (UTF-8, else GBK), the ``~`` / ``||`` structure, the field count of the header and of
every record, every time field, the sensor type codes, value types and YCBJ event types, YCBJ
and TJSJ intervals that end before they start, TJSJ min ≤ mean ≤ max — and then the files
together: a CDSS status must agree with the CDDY of the same mine given alongside (a value at
or above the upper alarm / power-off limit without the bit, an alarm bit with the value below
its release, a value outside the range without the over-range bit; calibrating and faulty
readings excepted). Signs of a dead or fabricated feed across CDSS files (domain.md §4): an
analog point whose value never changes, white noise (lag-1 autocorrelation near 0) inside a
narrow band, and every point stamped with its file's own time (a writer's clock, not polling).
Each finding names file, record (0 = header) and field (1-based).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from config.readings import Status
from networking.format import FIELDS, HEADER_FIELDS, NAME, parse_time

__all__ = ["Finding", "check_files"]

SENSOR_TYPES = frozenset({"0001", "0002", "0003", "0004", "0005", "0009", "0011", "0012", "0013",
                          "0014", "0019", "0043", "1001", "1002", "1003", "1008", "1009", "1010",
                          "1011"})
VALUE_TYPES = frozenset({"MN", "KG", "LJ", "DT"})
EVENT_TYPES = frozenset(f"{n:03d}" for n in range(1, 11))
# 1-based time fields of each record type; the optional ones may be empty (an open event).
_TIMES = {"CDDY": (24,), "CDSS": (7,), "YCBJ": (6, 7, 9, 11, 15, 17), "TJSJ": (5, 6, 8, 10, 12),
          "FZDY": (5,), "FZSS": (4,)}
_OPTIONAL_TIMES = {"YCBJ": (7, 9, 11, 15)}
_EXEMPT = int(Status.CALIBRATION | Status.OVER_RANGE | Status.SENSOR_FAULT | Status.NOT_POLLED)
LOCAL_ZONE = ZoneInfo("Asia/Shanghai")  # times in the files are the mine's local time
MIN_SERIES = 30  # readings of a point before its feed is judged
NOISE_AUTOCORRELATION = 0.2  # |lag-1 r| below this: no memory, unlike real air
NARROW_BAND = 0.1  # of the point's measuring range


@dataclass(frozen=True, slots=True)
class Finding:
    """A violation (``suspicious`` False) or a sign of a dead / fabricated feed (True)."""

    file: str
    record: int | None
    field: int | None
    message: str
    suspicious: bool = False

    def __str__(self) -> str:
        where = "".join(f" {k} {v}" for k, v in (("record", self.record), ("field", self.field))
                        if v is not None)
        return f"{self.file}:{where}: {'suspicious: ' if self.suspicious else ''}{self.message}"


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class _Parsed:
    path: Path
    type: str
    mine: str
    header: list[str]
    records: list[list[str]]


def _parse(path: Path, zone: ZoneInfo, out: list[Finding]) -> _Parsed | None:
    file = str(path)
    name = NAME.match(path.name)
    if not name or name["type"] not in FIELDS:
        out.append(Finding(file, None, None, "name is not {mineCode}_{TYPE}_{yyyyMMddHHmmss}.txt"
                           f" with TYPE one of {', '.join(FIELDS)}"))
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:  # missing, a directory, no permission: a finding, not a traceback
        out.append(Finding(file, None, None, f"cannot read the file: {exc.strerror}"))
        return None
    for encoding in ("utf-8", "gbk"):
        try:
            text = raw.decode(encoding).strip()
            break
        except UnicodeDecodeError:
            continue
    else:
        out.append(Finding(file, None, None, "text is neither UTF-8 nor GBK"))
        return None
    if not text.endswith("||"):
        out.append(Finding(file, None, None, "file does not end with ||"))
        return None
    body = text[:-2].strip()
    if not body.endswith("~"):
        out.append(Finding(file, None, None, "last record does not end with ~"))
        return None
    rows = [r.strip().split(";") for r in body[:-1].split("~")]
    kind = name["type"]
    header, records = rows[0], rows[1:]
    if len(header) != HEADER_FIELDS[kind]:
        out.append(Finding(file, 0, None, f"header has {len(header)} fields, "
                                          f"expected {HEADER_FIELDS[kind]}"))
    elif header[0] != name["mine"]:
        out.append(Finding(file, 0, 1, f"mine code {header[0]!r} differs from the file name's "
                                       f"{name['mine']!r}"))
    else:
        _time(file, 0, len(header), header[-1], zone, out)
    return _Parsed(path, kind, name["mine"], header, records)


def _time(file: str, record: int, field: int, text: str, zone: ZoneInfo,
          out: list[Finding]) -> int | None:
    try:
        return parse_time(text, zone)
    except ValueError:
        out.append(Finding(file, record, field, f"bad time {text!r}: expected "
                                                "yyyy-MM-dd HH:mm:ss"))
        return None


def _check_record(p: _Parsed, n: int, r: list[str], zone: ZoneInfo, out: list[Finding]) -> bool:
    file = str(p.path)
    if len(r) != FIELDS[p.type]:
        out.append(Finding(file, n, None, f"{len(r)} fields, expected {FIELDS[p.type]}"))
        return False
    times = {f: (None if not r[f - 1] and f in _OPTIONAL_TIMES.get(p.type, ())
                 else _time(file, n, f, r[f - 1], zone, out)) for f in _TIMES[p.type]}
    ok = all(v is not None or (f in _OPTIONAL_TIMES.get(p.type, ()) and not r[f - 1])
             for f, v in times.items())
    if p.type == "CDDY":
        if r[3] not in SENSOR_TYPES:
            out.append(Finding(file, n, 4, f"unknown sensor type code {r[3]!r}"))
        if r[4] not in VALUE_TYPES:
            out.append(Finding(file, n, 5, f"unknown value type {r[4]!r}"))
        for f in range(7, 17):
            if r[f - 1] and _float(r[f - 1]) is None:
                out.append(Finding(file, n, f, f"not a number: {r[f - 1]!r}"))
    elif p.type == "CDSS":
        # ASCII digits only: "²".isdigit() holds but int() refuses it, as any 4,300 digits
        if not (r[5].isascii() and r[5].isdigit() and len(r[5]) <= 3) or int(r[5]) > 255:
            out.append(Finding(file, n, 6, f"bad status {r[5]!r}: expected a bitmask 0–255"))
            return False
        if _float(r[3]) is None and not int(r[5]) & int(Status.NOT_POLLED):
            out.append(Finding(file, n, 4, f"not a number: {r[3]!r}"))
            return False
    elif p.type == "YCBJ":
        if r[4] not in EVENT_TYPES:
            out.append(Finding(file, n, 5, f"unknown event type {r[4]!r}"))
        if times[6] is not None and times[7] is not None and times[7] < times[6]:
            out.append(Finding(file, n, 7, f"event ends ({r[6]}) before it starts ({r[5]})"))
    elif p.type == "TJSJ":
        if times[5] is not None and times[6] is not None and times[6] < times[5]:
            out.append(Finding(file, n, 6, f"window ends ({r[5]}) before it starts ({r[4]})"))
        high, low, mean = _float(r[6]), _float(r[8]), _float(r[10])
        if None in (high, low, mean):
            out.append(Finding(file, n, 7, "max, min and mean must be numbers"))
        elif not low <= mean <= high:  # type: ignore[operator]
            out.append(Finding(file, n, 11, f"not min ≤ mean ≤ max: {r[8]} ≤ {r[10]} ≤ {r[6]}"))
    return ok


def _status_findings(file: str, n: int, r: list[str], limits: list[str],
                     out: list[Finding]) -> None:
    """A CDSS record against its CDDY definition (fields 7–16 of CDDY)."""
    value, status = float(r[3]), int(r[5])
    if status & _EXEMPT:
        return
    high, _, alarm, release, _, _, power_off, _ = (_float(x) if x else None
                                                      for x in limits[:8])
    if high is not None and value > high:
        out.append(Finding(file, n, 6, f"value {r[3]} is above the range {limits[0]} without "
                                       "the over-range bit (8)"))
    if alarm is not None and value >= alarm and not status & int(Status.ALARM):
        out.append(Finding(file, n, 6, f"value {r[3]} ≥ upper alarm {limits[2]} but the alarm "
                                       "bit (1) is not set"))
    if power_off is not None and value >= power_off and not status & int(Status.POWER_OFF):
        out.append(Finding(file, n, 6, f"value {r[3]} ≥ power-off {limits[6]} but the "
                                       "power-off bit (2) is not set"))
    lowest = release if release is not None else alarm
    if status & int(Status.ALARM) and lowest is not None and value < lowest and not limits[4]:
        out.append(Finding(file, n, 6, f"alarm bit (1) set but value {r[3]} is below the alarm "
                                       f"release {limits[3] or limits[2]}"))


def _feed_findings(series: dict[tuple[str, str], list[tuple[int, float, str]]],
                   ranges: dict[tuple[str, str], float], stamped: dict[str, list[bool]],
                   out: list[Finding]) -> None:
    for (mine, point), rows in sorted(series.items()):
        rows.sort()
        values = np.array([v for _, v, _ in rows])
        last_file = rows[-1][2]
        if len(values) < MIN_SERIES or set(np.unique(values)) <= {0.0, 1.0}:
            continue  # too short to judge, or a switch (a fan may run all day)
        where = f"point {point} of mine {mine} over {len(values)} readings"
        if np.all(values == values[0]):
            out.append(Finding(last_file, None, None, f"{where}: the value never changes "
                                                      f"({values[0]:g}) — a dead feed?", True))
            continue
        centred = values - values.mean()
        r1 = float(np.dot(centred[:-1], centred[1:]) / np.dot(centred, centred))
        span = ranges.get((mine, point))
        narrow = span is None or np.ptp(values) <= NARROW_BAND * span
        if abs(r1) < NOISE_AUTOCORRELATION and narrow:
            out.append(Finding(last_file, None, None, f"{where}: white noise in a narrow band "
                                                      f"(lag-1 autocorrelation {r1:.2f}) — "
                                                      "random values, not air?", True))
    for file_mine, flags in stamped.items():
        if len(flags) >= 3 and all(flags):
            out.append(Finding(file_mine, None, None, "every point of every CDSS file carries "
                                                      "its file's own time: times on the "
                                                      "writer's grid, not real polling", True))


def check_files(paths: Iterable[str | Path], zone: ZoneInfo = LOCAL_ZONE) -> list[Finding]:
    """Every finding in these files, file by file, then the feed signs across them."""
    out: list[Finding] = []
    parsed = [p for p in (_parse(Path(x), zone, out) for x in paths) if p is not None]
    definitions = {(p.mine, r[0]): r[6:16] for p in parsed if p.type == "CDDY"
                   for r in p.records if len(r) == FIELDS["CDDY"]}
    ranges = {k: (_float(v[0]) or 0.0) - (_float(v[1]) or 0.0) for k, v in definitions.items()
              if _float(v[0]) is not None}
    series: dict[tuple[str, str], list[tuple[int, float, str]]] = defaultdict(list)
    stamped: dict[str, list[bool]] = defaultdict(list)
    for p in parsed:
        all_at_file_time = bool(p.records)
        for n, r in enumerate(p.records, start=1):
            if not _check_record(p, n, r, zone, out) or p.type != "CDSS":
                continue
            all_at_file_time &= r[6] == p.header[-1]
            if int(r[5]) & int(Status.NOT_POLLED):
                continue
            if (p.mine, r[0]) in definitions:
                _status_findings(str(p.path), n, r, definitions[p.mine, r[0]], out)
            series[p.mine, r[0]].append((parse_time(r[6], zone), float(r[3]), str(p.path)))
        if p.type == "CDSS":
            stamped[f"mine {p.mine}"].append(all_at_file_time)
    _feed_findings(series, ranges, stamped, out)
    return out
