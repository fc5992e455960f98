"""Property tests of the command line's time and duration options (issue 11, item 7).

``--since`` / ``--start`` (epoch ms or ISO 8601), ``--duration`` (30m, 2h, 1d) and ``--date``
(YYYY-MM-DD) take whatever a person types: any string gives a value or a UsageError naming the
option — through ``jinmei`` itself, exit status 0 or 2 with a one-line message, never a
traceback. Found and fixed this way: ``--duration ""`` (IndexError), ``--duration ²m`` and an
epoch of 5,000 digits (ValueError: ``str.isdigit`` holds for non-ASCII digits), a silence ending
past the year 9999 (SQLite OverflowError), ``--date 2026-13-01`` and ``--date 9999-12-31``
(ValueError, OverflowError).
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.record import AlertRecord
from config.errors import UsageError
from config.loader import CONFIG_DIR
from jinmei.cli import main
from jinmei.cli_alerts import parse_date, parse_duration, parse_when

TYPED = st.text(max_size=30) | st.sampled_from([
    "", " ", "²m", "１h", "1e5m", "-5m", "inf", "nan", "5", "m", "1.m", ".5h", "9" * 5000 + "d",
    "9" * 5000, "99999999999999999", "2026-13-01", "2026-02-30", "9999-12-31", "0000-01-01",
    "2026-11-25T25:00", "2026-11-25T10:00+25:00", "２０２６-１１-２５", "2026-11-25\x00",
    "99999999999d", "0s"])


@settings(max_examples=500)
@given(TYPED)
def test_any_text_is_a_time_or_a_usage_error(text: str) -> None:
    try:
        assert isinstance(parse_when(text, "--since"), int)
    except UsageError as exc:
        assert exc.option == "--since" and repr(text) in str(exc)


@settings(max_examples=500)
@given(TYPED)
def test_any_text_is_a_duration_or_a_usage_error(text: str) -> None:
    try:
        assert parse_duration(text) > 0
    except UsageError as exc:
        assert exc.option == "--duration"


@settings(max_examples=500)
@given(TYPED)
def test_any_text_is_a_date_or_a_usage_error(text: str) -> None:
    try:
        assert parse_date(text) < date.max
    except UsageError as exc:
        assert exc.option == "--date"


@given(st.integers(1, 10**9), st.sampled_from([("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]))
def test_a_duration_is_its_number_times_its_unit(number: int, unit: tuple[str, int]) -> None:
    assert parse_duration(f" {number}{unit[0]} ") == number * unit[1] * 1000


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC)))
def test_a_time_with_an_offset_is_that_instant(moment: datetime) -> None:
    expected = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_when(moment.isoformat(), "--start") == expected
    assert expected < 0 or parse_when(str(expected), "--start") == expected


@given(st.dates(max_value=date(9999, 12, 30)))
def test_a_date_is_that_day(day: date) -> None:
    assert parse_date(day.isoformat()) == day


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deployment of one mine with an (empty) alert record and readings store."""
    root = tmp_path_factory.mktemp("cli")
    path = root / "jinmei.toml"
    path.write_text(f'mines = ["{CONFIG_DIR}/mines/qipanjing.toml"]\n'
                    f'limits = "{CONFIG_DIR}/limits.toml"\n'
                    f'[store]\nurl = "sqlite:///{root}/readings.db"\n'
                    f'[ingest]\nstate_dir = "{root}/state"\n')
    (root / "state").mkdir()
    AlertRecord(root / "state" / "alerts.db").close()
    return path


def jinmei(*argv: str) -> tuple[int, str]:
    """Run ``jinmei`` in-process: exit status and stderr (a usage error exits 2 as well)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            return main(list(argv)), err.getvalue()
        except SystemExit as exc:  # argparse's usage error: clean, and exit status 2
            return int(exc.code or 0), err.getvalue()


@settings(max_examples=40, deadline=None)
@given(TYPED, TYPED | st.none(), TYPED, TYPED)
def test_the_commands_answer_any_time_with_a_status_never_a_traceback(
        config: Path, duration: str, start: str | None, since: str, day: str) -> None:
    starting = [] if start is None else [f"--start={start}"]
    runs = [("alerts", "silence", f"--duration={duration}", *starting, "--by", "fuzz",
             "--reason", "test", "-c", str(config)),
            ("alerts", "history", f"--since={since}", "-c", str(config)),
            ("report", "daily", "--mine", "qipanjing", f"--date={day}", "-c", str(config))]
    for argv in runs:
        code, err = jinmei(*argv)
        assert code in (0, 2), (argv, code, err)
        assert "Traceback" not in err
        if code == 2:
            assert err.startswith(("configuration error: ", "error: --", "usage: ")), err


def test_a_silence_of_no_length_is_a_usage_error() -> None:
    # "0s" passed the parser and then raised ValueError out of the silence book (fuzzing)
    for text in ("0s", "0m", "0.0h"):
        try:
            parse_duration(text)
        except UsageError as exc:
            assert exc.option == "--duration" and "longer than 0" in str(exc)
        else:
            raise AssertionError(f"{text!r} was accepted")
