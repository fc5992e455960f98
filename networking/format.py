"""The networking file format (MT/T 1201.1 style, domain.md §6), shared by writer and validator.

A file is named ``{mineCode}_{TYPE}_{yyyyMMddHHmmss}.txt`` in the mine's local time; its text
is records whose fields are separated by ``;``, each record followed by ``~``, the whole file
followed by ``||``; the first record is the header. jinmei writes no line breaks; the parser
accepts whitespace between records (some platforms' files have them).

Times inside files are ``yyyy-MM-dd HH:mm:ss`` in the mine's local time (UNSURE: domain.md
does not give the in-field format; this is the common one). Headers: ``mineCode;mineName;
dataTime`` (domain.md, for CDSS; used for CDSS, TJSJ, YCBJ, FZSS) and, for the definition
files CDDY and FZDY, ``mineCode;mineName;systemModel;systemName;manufacturer;dataTime``
(UNSURE: where the system's model, name and manufacturer go is not in domain.md). FZDY and
FZSS fields are not in domain.md either (UNSURE): FZDY ``code;systemCode;name;location;
dataTime``, FZSS ``code;communication (0 normal, 1 interrupted);power (0 mains, 1 battery,
empty unknown);dataTime``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["FIELDS", "HEADER_FIELDS", "NAME", "DataFile", "clean", "file_time", "format_time",
           "parse_time"]

# Field count of each file type's records (domain.md §6; FZDY / FZSS UNSURE, see above).
FIELDS = {"CDDY": 24, "CDSS": 7, "YCBJ": 17, "TJSJ": 12, "FZDY": 5, "FZSS": 4}
HEADER_FIELDS = {t: (6 if t in ("CDDY", "FZDY") else 3) for t in FIELDS}
NAME = re.compile(r"(?P<mine>[A-Za-z0-9]+)_(?P<type>[A-Z]{4})_(?P<time>\d{14})\.txt\Z")
_TIME = "%Y-%m-%d %H:%M:%S"
# Characters that would break the record structure, replaced by their full-width forms.
_SEPARATORS = str.maketrans({";": "；", "~": "～", "|": "｜", "\n": " ", "\r": " "})


def format_time(ts_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, zone).strftime(_TIME)


def file_time(ts_ms: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, zone).strftime("%Y%m%d%H%M%S")


def parse_time(text: str, zone: ZoneInfo) -> int:
    """Epoch ms of a ``yyyy-MM-dd HH:mm:ss`` local time; ValueError if it is not one."""
    return int(datetime.strptime(text, _TIME).replace(tzinfo=zone).timestamp() * 1000)


def clean(text: str) -> str:
    """A field's text with the format's separators replaced (a place name may hold a ';')."""
    return text.translate(_SEPARATORS)


@dataclass(frozen=True, slots=True)
class DataFile:
    """One networking file: type, mine code, its time (epoch ms), header and records."""

    type: str
    mine_code: str
    ts: int
    zone: ZoneInfo
    header: tuple[str, ...]
    records: tuple[tuple[str, ...], ...]

    @property
    def name(self) -> str:
        return f"{self.mine_code}_{self.type}_{file_time(self.ts, self.zone)}.txt"

    def text(self) -> str:
        rows = (self.header, *self.records)
        return "".join(";".join(clean(f) for f in row) + "~" for row in rows) + "||"

    def encode(self, encoding: str = "utf-8") -> bytes:
        return self.text().encode(encoding)
