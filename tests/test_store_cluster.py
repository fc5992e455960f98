"""Stores that scale out (deploy/victoriametrics-cluster, deploy/README.md): the cluster files
route jinmei's paths and keep every point twice, and jinmei's write path works with the URL
shape a cluster gives it — a path before ``/api/v2/write``.

What runs here is VictoriaMetrics' single node (no cluster binaries are packaged): it serves
the same InfluxDB v2 write under a prefix (``/influx/api/v2/write``) and the same queries
under ``/prometheus/api/v1/…``, which is what vminsert and vmselect serve after their tenant
part (``/insert/0/influx/…``, ``/select/0/prometheus/…``). The tenant part itself is not
served by a single node, so it is checked in the files (it reaches vmauth and the vminserts
unchanged), not on a server.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from config.model import Registry
from config.readings import ReadingBatch
from ingest.influx import InfluxSink
from ingest.sink import open_sink
from tests.servers import sample_sensor, victoria_metrics, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "deploy" / "victoriametrics-cluster"
SENSORS = [sample_sensor("dayan", "T0-1101", "ch4", "longwall_upper_corner"),
           sample_sensor("qipanjing", "T1-2201", "ch4", "heading_face")]
REGISTRY = Registry.from_sensors(SENSORS)
T0 = (time.time_ns() // 3_600_000_000_000 - 24) * 3_600_000  # a day ago: VM keeps a month


def flags(service: dict[str, Any]) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) for arg in service["command"])


def test_cluster_files_keep_every_point_twice_and_route_jinmeis_paths() -> None:
    compose = yaml.safe_load((CLUSTER / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    storage = sorted(n for n in services if n.startswith("vmstorage"))
    assert len(storage) == 3
    for role, port in (("vminsert", 8400), ("vmselect", 8401)):
        nodes = [n for n in services if n.startswith(role)]
        assert len(nodes) == 2, f"two {role}s: one may go"
        for name in nodes:
            given = flags(services[name])
            assert sorted(given["storageNode"].split(",")) == [f"{s}:{port}" for s in storage]
            assert int(given["replicationFactor"]) >= 2
    assert flags(services["vmselect-1"])["dedup.minScrapeInterval"] == "1ms"

    auth = yaml.safe_load((CLUSTER / "vmauth.yaml").read_text(encoding="utf-8"))
    routes = auth["unauthorized_user"]["url_map"]

    def backends(path: str) -> list[str]:
        return next(r["url_prefix"] for r in routes
                    if any(re.fullmatch(p, path) for p in r["src_paths"]))
    assert backends("/insert/0/influx/api/v2/write") == ["http://vminsert-1:8480/",
                                                         "http://vminsert-2:8480/"]
    assert backends("/select/0/prometheus/api/v1/query") == ["http://vmselect-1:8481/",
                                                             "http://vmselect-2:8481/"]


def test_the_cluster_store_url_of_the_docs_is_jinmeis_write_path_to_vmauth(
        tmp_path: Path) -> None:
    """The URL the files and the README give for the cluster loads, and the client posts to
    vmauth's ``/insert/0/influx/api/v2/write``."""
    text = (CLUSTER / "compose.yaml").read_text(encoding="utf-8")
    url = re.search(r'url = "(influxdb://vmauth[^"]+)"', text)
    assert url is not None
    assert url.group(1) in (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    sink = open_sink(url.group(1), REGISTRY, state_dir=tmp_path)
    try:
        assert isinstance(sink, InfluxSink)
        assert sink.name == "influxdb:http://vmauth:8427/insert/0/influx/jinmei"  # + bucket
    finally:
        sink.close()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Any]:
    with victoria_metrics(tmp_path) as server:
        yield server


@pytest.mark.integration
def test_readings_written_under_a_path_prefix_are_stored_and_read_under_the_query_prefix(
        vm: Any, tmp_path: Path) -> None:
    sink = open_sink(f"influxdb://127.0.0.1:{vm.port}/influx/?org=jinmei&bucket=jinmei",
                     REGISTRY, state_dir=tmp_path / "state")
    try:
        n = 40
        sink.write(ReadingBatch(np.arange(n, dtype=np.int32) % 2,
                                T0 + np.arange(n, dtype=np.int64) * 1000,
                                np.round(np.linspace(0.1, 1.2, n), 2),
                                np.zeros(n, np.uint16)))
        assert wait_until(lambda: sink.stats()["delivered"] == n, 15), sink.stats()
    finally:
        sink.close()

    def query(path: str, **params: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{vm.url}/prometheus{path}?"
                                    f"{urllib.parse.urlencode(params)}", timeout=5) as reply:
            return dict(json.loads(reply.read()))
    # what a dashboard asks of vmselect: the newest methane value per mine at a time
    at = str((T0 + n * 1000) / 1000)

    def newest() -> dict[str, float]:
        answer = query("/api/v1/query", query='max by (mine) (reading_value{kind="ch4"})',
                       time=at)
        return {r["metric"]["mine"]: float(r["value"][1]) for r in answer["data"]["result"]}
    assert wait_until(lambda: newest() == {"dayan": 1.17, "qipanjing": 1.2}, 15), newest()
