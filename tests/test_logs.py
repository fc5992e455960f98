"""Log formats: one line per record with the time's offset; JSON for shippers; --version."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

from jinmei.logs import JsonFormatter, TextFormatter

OFFSET_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def record(message: str, *, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("jinmei", logging.WARNING, __file__, 1, message, (), exc_info)
    rec.__dict__.update(extra)
    return rec


def test_text_record_is_one_line_with_the_offset_and_both_languages() -> None:
    line = TextFormatter().format(record("ALERT 【断电】甲烷 1.56%\n[POWER-OFF] methane 1.56 %"))
    assert "\n" not in line
    assert re.fullmatch(rf"{OFFSET_TIME} WARNING jinmei: ALERT 【断电】甲烷 1.56% \| "
                        r"\[POWER-OFF\] methane 1.56 %", line)


def test_a_traceback_stays_on_the_record_line() -> None:
    line = TextFormatter().format(record("delivery failed", exc=True))
    assert "\n" not in line and "Traceback" in line and "ValueError: bad | thing" in line


def test_json_record_carries_the_structured_extra() -> None:
    out = json.loads(JsonFormatter().format(
        record("ALERT x\ny", exc=True, alert={"id": "ab12", "rule": "limit_alarm"})))
    assert re.fullmatch(OFFSET_TIME, out["time"])
    assert out["level"] == "WARNING" and out["logger"] == "jinmei"
    assert out["message"] == "ALERT x\ny"  # whole in the string: JSON lines never split
    assert out["alert"] == {"id": "ab12", "rule": "limit_alarm"}
    assert out["exception"].startswith("Traceback")


def test_version_prints_the_config_hash_of_the_deployment() -> None:
    from config.loader import load_deployment

    done = subprocess.run([sys.executable, "-m", "jinmei.cli", "--version"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("jinmei ")
    assert f"hash {load_deployment(None).config_hash}" in done.stdout
    broken = subprocess.run([sys.executable, "-m", "jinmei.cli", "--version", "/nonexistent.toml"],
                            capture_output=True, text=True)
    assert broken.returncode == 2 and "/nonexistent.toml" in broken.stderr
