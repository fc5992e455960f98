"""The layering as design.md draws it, enforced on the imports themselves.

Every package may import ``config`` (the lowest layer: model, errors, shared vocabulary);
``detectors`` knows nothing of MQTT or storage; ``alerts`` consumes detector events but never
imports ``ingest``; only ``jinmei`` (the composition root) imports them all. Any import between
sibling packages that this table does not allow fails here, naming the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "ingest", "detectors", "alerts", "simulators", "dashboards", "networking",
            "jinmei")

# package → the sibling packages it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "config": frozenset(),
    "detectors": frozenset({"config"}),
    # ingest writes alert transitions to the store, so it knows the alert wire type.
    "ingest": frozenset({"config", "alerts"}),
    "alerts": frozenset({"config", "detectors"}),
    # the simulators speak the telemetry wire contract through ingest's codec
    "simulators": frozenset({"config", "ingest"}),
    "dashboards": frozenset({"config"}),
    # networking files are made of the alert record and the stored readings
    "networking": frozenset({"config", "alerts", "ingest"}),
    "jinmei": frozenset(PACKAGES) - {"jinmei"},
}

# Within the allowed packages, modules that must stay out of reach: alerts never sees ingest's
# internals through ingest → alerts either (only the wire type and the record cross).
ALERTS_SURFACE_FOR_INGEST = frozenset({"alerts.wire"})


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(root: Path = ROOT) -> list[str]:
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top not in PACKAGES or top == package:
                    continue
                where = f"{path.relative_to(root)}:{line} imports {module}"
                if top not in ALLOWED[package]:
                    problems.append(f"{where}: {package}/ may import only "
                                    f"{sorted(ALLOWED[package]) or 'nothing of ours'}")
                elif package == "ingest" and top == "alerts" and (
                        module not in ALERTS_SURFACE_FOR_INGEST):
                    problems.append(f"{where}: ingest/ may use only the alert wire type")
    return problems


def test_no_import_crosses_the_layering() -> None:
    assert _violations() == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_scanned(package: str) -> None:
    # A package renamed or moved must not silently drop out of the check.
    assert list((ROOT / package).rglob("*.py")), f"{package}/ has no Python files"


def test_the_check_fails_on_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "detectors").mkdir()
    (tmp_path / "detectors" / "bad.py").write_text(
        "import os\nfrom config.model import Registry\nfrom ingest.mqtt import MqttSource\n",
        encoding="utf-8")
    (tmp_path / "ingest").mkdir()
    (tmp_path / "ingest" / "peek.py").write_text("from alerts.outbox import Outbox\n",
                                                 encoding="utf-8")
    assert _violations(tmp_path) == [
        "ingest/peek.py:1 imports alerts.outbox: ingest/ may use only the alert wire type",
        "detectors/bad.py:3 imports ingest.mqtt: detectors/ may import only ['config']",
    ]
