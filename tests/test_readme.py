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


def demo_block() -> str:
    after = README.split("What the demo prints", 1)[1]
    return after.split("```\n", 2)[1]


def _untimed(line: str) -> str:
    """A printed alert line without its time (（…） in Chinese, (… CST) in English)."""
    return re.sub(r"[（(]\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( [A-Z]+)?[）)]$", "", line)


def test_readme_demo_block_is_what_the_demo_prints() -> None:
    """Every alert line of the README's demo block (both languages, times aside) is one the
    demo's feed gives, in the demo's order, and the summary's counts are the demo's: the feed
    replayed through codec, detectors and alert dispatcher without a broker."""
    from config.loader import load_deployment
    from jinmei.demo import REPLAY_START_MS, SCENARIO, alert_line, broken_messages, replay
    from simulators.feed import generate

    block = demo_block().splitlines()
    shown = [_untimed(line) for i, line in enumerate(block)
             if line[:1] in "▲▼" or (i and block[i - 1][:1] in "▲▼")]
    assert len(shown) >= 8 and len(shown) % 2 == 0, block
    transitions = replay()
    printed = [_untimed(line) for a in transitions for line in alert_line(a).splitlines()]
    # the README's lines, in their order, as a subsequence of what the demo prints
    rest = iter(printed)
    missing = [line for line in shown if line not in rest]
    assert not missing, "README lines the demo does not print (in this order):\n" + \
        "\n".join(missing) + "\n--- the demo prints:\n" + "\n".join(printed)
    summary = {m[0]: tuple(map(int, m[1:])) for m in re.findall(
        r"^(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)  \S+$", "\n".join(block), re.MULTILINE)}
    mines = load_deployment(None).mines  # the demo's: the shipped pilot mines
    assert set(summary) == {m.id for m in mines}
    for i, mine in enumerate(mines):  # the demo's defaults: 20 s at 30x, seed 0 + the index
        published = sum(m.readings for m in generate(mine, SCENARIO, start_ms=REPLAY_START_MS,
                                                     duration_s=20 * 30, seed=i))
        rejects = len(broken_messages(mine.id, REPLAY_START_MS))
        fired = sum(a.mine == mine.id and a.state == "firing" for a in transitions)
        resolved = sum(a.mine == mine.id and a.state == "resolved" for a in transitions)
        assert summary[mine.id] == (published, published, rejects, fired, resolved), mine.id
