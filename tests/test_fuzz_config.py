"""Property tests of the configuration loader against broken files (issue 11, item 7).

The shipped deployment (every commented-out default switched on) and a shipped mine file are
mutated — a value swapped for a hostile one, a line dropped or doubled, bytes flipped — and
written to a copy of ``config/``. Loading them must give a Deployment or a ``ConfigError`` that
names a file; never any other exception (a traceback for a user's mistake).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import ConfigError
from config.loader import DEFAULT_DEPLOYMENT, check_file, load_deployment
from config.model import Deployment

CONFIG = DEFAULT_DEPLOYMENT.parent
# The example with every "# key = value" default switched on: every key gets mutated.
DEPLOYMENT_TEXT = re.sub(r"(?m)^# ([a-z_]+ = )", r"\1", DEFAULT_DEPLOYMENT.read_text("utf-8"))
MINE_TEXT = (CONFIG / "mines" / "dayan.toml").read_text("utf-8")
ASSIGNMENT = re.compile(r"(?m)^(\s*[A-Za-z_][\w.\"-]* = )(.*)$")
HOSTILE_VALUES = [
    "-1", "0", "1e400", "-1e400", "inf", "-inf", "nan", "9" * 30, "-" + "9" * 30, "1.5",
    "true", '""', '"x"', '"\\u0000"', "'''\n'''", "[]", "[1, \"a\"]", "{}", "{a = 1}",
    "1979-05-27T07:32:00Z", "07:32:00", "1979-05-27", '"mqtt://"', '"sqlite:///"',
    '"http://[::1"', '"/"', '"../../../../etc/passwd"', '"mines/nowhere.toml"', '"\U0001f600"',
    '"Asia/Nowhere"', '"0x10"', '"' + "a" * 300 + '"', "[[1]]", '["mines/dayan.toml"]']


@pytest.fixture(scope="module")
def config_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of config/ (its TOML files only) to mutate; each example rewrites one file."""
    root = tmp_path_factory.mktemp("config") / "config"
    shutil.copytree(CONFIG, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    yield root


def mutate(text: str, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply edits: (kind, where, which, bytes) — a value swapped, a line dropped or doubled,
    or bytes spliced in."""
    for kind, where, which, insert in edits:
        assignments = list(ASSIGNMENT.finditer(text))
        lines = text.split("\n")
        if kind == 0 and assignments:
            found = assignments[where % len(assignments)]
            value = HOSTILE_VALUES[which % len(HOSTILE_VALUES)]
            text = text[:found.start(2)] + value + text[found.end(2):]
        elif kind == 1:
            del lines[where % len(lines)]
            text = "\n".join(lines)
        elif kind == 2:
            at = where % len(lines)
            lines.insert(at, lines[at])
            text = "\n".join(lines)
        else:
            at = where % (len(text) + 1)
            raw = text.encode("utf-8")
            return raw[:at] + insert + raw[at + which % 8:]
    return text.encode("utf-8")


EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 10**6),
                           st.binary(max_size=4)), min_size=1, max_size=3)


def load_or_config_error(path: Path) -> Deployment | ConfigError:
    try:
        return load_deployment(path, environ={})
    except ConfigError as exc:
        assert exc.file and str(exc).startswith(exc.file), str(exc)
        assert exc.message
        return exc


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EDITS)
def test_a_mutated_deployment_file_loads_or_names_the_file(config_copy: Path,
                                                           edits: list) -> None:
    path = config_copy / "fuzzed.toml"
    path.write_bytes(mutate(DEPLOYMENT_TEXT, edits))
    load_or_config_error(path)
    try:
        check_file(path)
    except ConfigError as exc:
        assert exc.file


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(EDITS)
def test_a_mutated_mine_file_loads_or_names_the_file(config_copy: Path, edits: list) -> None:
    mine = config_copy / "mines" / "dayan.toml"
    try:
        mine.write_bytes(mutate(MINE_TEXT, edits))
        outcome = load_or_config_error(config_copy / "jinmei.example.toml")
        if isinstance(outcome, ConfigError) and outcome.file == str(mine):
            assert outcome.location or outcome.message  # where, or what, in the mine file
        try:
            check_file(mine)
        except ConfigError as exc:
            assert exc.file == str(mine)
    finally:
        mine.write_text(MINE_TEXT, "utf-8")


def test_the_unmutated_files_load(config_copy: Path) -> None:
    (config_copy / "filled.toml").write_text(DEPLOYMENT_TEXT, "utf-8")
    assert isinstance(load_or_config_error(config_copy / "filled.toml"), Deployment)


@pytest.mark.parametrize(("url", "words"), [("mqtt://[::1", "bad host"),
                                            ("mqtt://[::1]:99999", "bad port")])
def test_a_broken_broker_url_is_a_config_error_on_its_key(config_copy: Path, url: str,
                                                          words: str) -> None:
    # "mqtt://[::1" made urlsplit raise ValueError out of the loader (found by the fuzzing)
    path = config_copy / "url.toml"
    path.write_text(DEPLOYMENT_TEXT.replace('url = "mqtt://127.0.0.1:1883"', f'url = "{url}"'),
                    "utf-8")
    outcome = load_or_config_error(path)
    assert isinstance(outcome, ConfigError) and outcome.file == str(path)
    assert outcome.location == "broker.url" and words in outcome.message


def test_a_time_zone_name_too_long_for_a_file_is_a_config_error(config_copy: Path) -> None:
    # ZoneInfo("a" * 300) raises OSError (name too long), not ZoneInfoNotFoundError (fuzzing)
    mine = config_copy / "mines" / "dayan.toml"
    try:
        mine.write_text(MINE_TEXT.replace('timezone = "Asia/Shanghai"',
                                          f'timezone = "{"a" * 300}"'), "utf-8")
        outcome = load_or_config_error(config_copy / "jinmei.example.toml")
    finally:
        mine.write_text(MINE_TEXT, "utf-8")
    assert isinstance(outcome, ConfigError) and outcome.file == str(mine)
    assert outcome.location == "mine.timezone" and "not a known time zone" in outcome.message


def test_a_mine_path_with_a_nul_is_a_config_error(config_copy: Path) -> None:
    # open() raises ValueError on an embedded NUL, not OSError (found by the fuzzing)
    path = config_copy / "nul.toml"
    path.write_text(DEPLOYMENT_TEXT.replace('"mines/dayan.toml"', '"mines/\\u0000.toml"'),
                    "utf-8")
    outcome = load_or_config_error(path)
    assert isinstance(outcome, ConfigError) and "\\x00" in outcome.file
    assert outcome.message == "cannot read the file: embedded null byte"
