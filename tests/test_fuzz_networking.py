"""Property tests of ``jinmei networking check`` against broken files (issue 11, item 7).

The golden networking files (tests/golden/networking) are mutated — a field swapped for a
hostile one (superscript or full-width digits, thousands of digits, NaN, year 0 or 9999, the
format's own separators), bytes spliced in, CDSS records repeated so the feed checks run — and
checked together. The validator must answer with findings, and the command with exit 0 or 1:
never a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from jinmei.cli import main
from networking.validate import Finding, check_files

GOLDEN = Path(__file__).parent / "golden" / "networking"
FILES = {path.name: path.read_bytes() for path in sorted(GOLDEN.iterdir())}
HOSTILE = ["²", "１２", "9" * 5000, "999999999999999999999", "nan", "inf", "-1e400", "256", "-1",
           "", ";", "~", "||", "9999-12-31 23:59:59", "0001-01-01 00:00:00",
           "0000-00-00 00:00:00", "2026-02-30 00:00:00", "\x00", "甲烷" * 50]
EDIT = st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.sampled_from(HOSTILE),
                 st.binary(max_size=3))


def mutate(data: bytes, edits: list[tuple[int, int, str, bytes]], repeat: int) -> bytes:
    for kind, where, token, raw in edits:
        if kind == 0:  # a field replaced
            fields = data.split(b";")
            fields[where % len(fields)] = token.encode("utf-8")
            data = b";".join(fields)
        elif kind == 1:  # bytes spliced in
            at = where % (len(data) + 1)
            data = data[:at] + raw + data[at + len(raw):]
        else:  # a GBK-encoded token, as an old monitoring system would write
            at = where % (len(data) + 1)
            data = data[:at] + token.encode("gbk", "replace") + data[at:]
    records = data.split(b"~")
    if repeat and len(records) > 2:  # enough records of a point for the feed checks
        data = b"~".join([records[0], *records[1:-1] * repeat, records[-1]])
    return data


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(FILES)), st.lists(EDIT, max_size=3),
                          st.sampled_from([0, 0, 40])), min_size=1, max_size=4))
def test_mutated_files_give_findings_never_a_traceback(
        picks: list[tuple[str, list[tuple[int, int, str, bytes]], int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for n, (name, edits, repeat) in enumerate(picks):
            path = Path(tmp) / str(n) / name
            path.parent.mkdir()
            path.write_bytes(mutate(FILES[name], edits, repeat))
            paths.append(path)
        findings = check_files(paths)
        assert all(isinstance(f, Finding) and f.message for f in findings)
        assert main(["networking", "check", *map(str, paths)]) == (1 if findings else 0)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(FILES)), st.binary(max_size=300))
def test_random_bytes_under_a_valid_name_give_findings(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        assert all(f.file == str(path) for f in check_files([path]))


def test_a_status_of_superscript_digits_is_a_finding(tmp_path: Path) -> None:
    # "²".isdigit() is True but int("²") raises: it escaped as ValueError (found by fuzzing)
    name = next(n for n in FILES if "_CDSS_" in n)
    fields = FILES[name].split(b";")
    fields[7] = "²".encode()  # the first record's status
    (tmp_path / name).write_bytes(b";".join(fields))
    [finding] = check_files([tmp_path / name])
    assert (finding.record, finding.field) == (1, 6)
    assert finding.message == "bad status '²': expected a bitmask 0–255"


def test_a_file_that_cannot_be_read_is_a_finding(tmp_path: Path) -> None:
    missing = tmp_path / next(iter(FILES))
    [finding] = check_files([missing])
    assert finding.message == "cannot read the file: No such file or directory"
    assert main(["networking", "check", str(missing)]) == 1
