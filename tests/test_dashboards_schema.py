"""Every exported dashboard against Grafana's own schema: the ``grafana-foundation-sdk`` models
(generated from Grafana's schemas) decode each file and encode it back without losing or
changing anything we wrote — they only add the schema's defaults. And the provisioning path.

One gap is the SDK's, not ours: its ``AnnotationQuery`` types ``target`` after the built-in
"grafana" data source (its own TODO: "this should be a regular DataQuery") and has no
``builtIn`` — so Grafana's built-in annotation marker and an InfluxQL annotation's query fields
(``query``, ``textColumn``, ``tagsColumn``, ``titleColumn``, the form Grafana reads for InfluxDB
annotations) do not survive its decode. Those fields alone are checked by hand below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from jinmei.cli import main

# Where the SDK's model is narrower than Grafana (module docstring).
SDK_GAPS = re.compile(r"^annotations\.list\[\d+\]\.(builtIn|query|textColumn|tagsColumn|"
                      r"titleColumn)$")


def losses(ours: Any, back: Any, path: str = "") -> list[str]:
    """Paths of what ``back`` lost or changed of ``ours`` (keys it added are defaults)."""
    if isinstance(ours, dict) and isinstance(back, dict):
        return [p for k, v in ours.items()
                for p in ([f"{path}{k}"] if k not in back else losses(v, back[k], f"{path}{k}."))]
    if isinstance(ours, list) and isinstance(back, list):
        if len(ours) != len(back):
            return [path.rstrip(".")]
        return [p for i, (a, b) in enumerate(zip(ours, back, strict=True))
                for p in losses(a, b, f"{path.rstrip('.')}[{i}].")]
    return [] if ours == back else [path.rstrip(".")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("provisioning")
    assert main(["dashboards", "export", str(out), "--provisioning-path",
                 "/etc/grafana/provisioning"]) == 0
    return out


def test_every_dashboard_round_trips_through_grafanas_schema(exported: Path) -> None:
    files = sorted((exported / "dashboards" / "jinmei").glob("*.json"))
    assert len(files) == 4  # dayan, qipanjing, the overview, jinmei itself
    for file in files:
        ours = json.loads(file.read_text(encoding="utf-8"))
        back = json.loads(json.dumps(Dashboard.from_json(ours), cls=JSONEncoder))
        lost = [p for p in losses(ours, back) if not SDK_GAPS.match(p)]
        assert lost == [], f"{file.name}: {lost}"
        assert back["panels"] and len(back["panels"]) == len(ours["panels"])


def test_the_annotations_the_sdk_cannot_hold_have_grafanas_influxql_form(
        exported: Path) -> None:
    board = json.loads((exported / "dashboards" / "jinmei" / "jinmei-mine-dayan.json")
                       .read_text(encoding="utf-8"))
    builtin, alerts = board["annotations"]["list"]
    assert builtin["builtIn"] == 1 and builtin["datasource"]["type"] == "grafana"
    assert alerts["datasource"]["type"] == "influxdb"
    assert alerts["query"].startswith('SELECT "message" FROM "alert"') and "$timeFilter" in \
        alerts["query"]
    assert alerts["textColumn"] == "message"


def test_the_provisioning_path_is_where_grafana_reads_the_files(exported: Path,
                                                              tmp_path: Path) -> None:
    [provider] = yaml.safe_load((exported / "dashboards" / "jinmei.yaml").read_text())[
        "providers"]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/jinmei"
    assert main(["dashboards", "export", str(tmp_path)]) == 0  # default: where it was written
    [provider] = yaml.safe_load((tmp_path / "dashboards" / "jinmei.yaml").read_text())[
        "providers"]
    assert provider["options"]["path"] == str((tmp_path / "dashboards" / "jinmei").resolve())


def test_export_for_an_sqlite_store_says_grafana_cannot_read_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboards", "export", str(tmp_path)]) == 0  # the sample stores in SQLite
    err = capsys.readouterr().err
    assert "SQLite, which Grafana does not read" in err and "influxdb://" in err
