"""The README is a contract with newcomers and CI: keep what it quotes in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

from ingest.codec import Reason

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def shell_blocks() -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", README, re.DOTALL)]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    demo, tests = shell_blocks()[:2]
    assert demo.endswith("jinmei demo") and "python3 -m venv" in demo
    assert tests == "bash scripts/test.sh"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line and not line.startswith("#")]
    assert commands[-1] == shell_blocks()[1]
    assert "apt-get install" in ci and all(
        pkg in ci for pkg in ("mosquitto", "victoria-metrics", "influxdb"))


def test_readme_quotes_the_shipped_deployment_file_verbatim() -> None:
    example = (ROOT / "config" / "jinmei.example.toml").read_text(encoding="utf-8")
    assert f"```toml\n{example}```" in README


def test_readme_explains_every_reject_reason() -> None:
    missing = [r.value for r in Reason if f"| `{r.value}` |" not in README]
    assert not missing
