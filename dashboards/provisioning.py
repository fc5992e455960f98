"""Provisioning: the dashboards of a deployment as Grafana files, or pushed through its HTTP API.

What is provisioned: the folder ``jinmei`` (uid :data:`FOLDER_UID`), the InfluxDB data source
(uid :data:`DATASOURCE_UID`, InfluxQL mode) and one dashboard per configured mine plus the
regulator overview, each with a stable uid; and jinmei's own dashboard
(:mod:`dashboards.service`, uid ``jinmei-service``) on a Prometheus data source (uid
``jinmei-prometheus``) at ``prometheus_url`` — the Prometheus or VictoriaMetrics that scrapes
the service's ``/metrics`` (default :data:`PROMETHEUS_URL`).

The data source points at the deployment's store: for ``influxdb[s]://host:port?org=O&bucket=B``
the InfluxDB 2.x v1-compatibility API at ``http[s]://host:port`` with database ``B`` (a DBRP
mapping must exist) and an ``Authorization: Token …`` header from ``JINMEI_INFLUX_TOKEN``; for
an SQLite store (the embedded default) ``http://127.0.0.1:8086`` database ``jinmei`` — a
placeholder: Grafana has no data source that runs these InfluxQL dashboards on jinmei's SQLite
file, so a deployment whose dispatchers use Grafana stores in InfluxDB (:func:`sqlite_note`
says so where the commands run). Its minimum interval is the shortest sampling period of any
sensor.

:func:`export` writes file provisioning for ``/etc/grafana/provisioning``: ``datasources/
jinmei.yaml`` (the token as ``$JINMEI_INFLUX_TOKEN``, which Grafana expands from its own
environment), ``datasources/jinmei-prometheus.yaml``, ``dashboards/jinmei.yaml`` (the provider) and
``dashboards/jinmei/<uid>.json``.

:func:`push` creates or updates folder, data source and dashboards with ``grafana-client``; an
object already equal to ours is left alone (dashboards compared without Grafana's ``id`` and
``version``, the data source on the fields we set; secrets are write-only in Grafana, so the
token is sent only when the data source is created or otherwise changed). A second push
therefore changes nothing. Failure behaviour: any error answer from Grafana stops the push
with a :class:`~config.errors.DeliveryError` naming the object; what was done before is kept
and listed in the error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

from config.errors import DeliveryError
from config.loader import deployment_limits
from config.model import Deployment
from dashboards.grafana import Dashboard
from dashboards.influxql import format_interval
from dashboards.mine import mine_dashboard
from dashboards.overview import overview_dashboard
from dashboards.service import PROMETHEUS_UID, SERVICE_UID, service_dashboard

__all__ = ["DATASOURCE_UID", "FOLDER_TITLE", "FOLDER_UID", "PROMETHEUS_URL", "Change",
           "dashboards_of", "datasource_of", "export", "prometheus_datasource", "push",
           "sqlite_note"]

FOLDER_UID = "jinmei"
FOLDER_TITLE = "金煤工程 jinmei"
DATASOURCE_UID = "jinmei-influxdb"
TOKEN_ENV = "JINMEI_INFLUX_TOKEN"
_DEFAULT_INFLUX = ("http://127.0.0.1:8086", "jinmei")
PROMETHEUS_URL = "http://127.0.0.1:9090"  # Prometheus's own default port


@dataclass(frozen=True, slots=True)
class Change:
    """What a push did to one object: ``created``, ``updated`` or ``unchanged``."""

    action: str
    what: str  # folder, datasource or dashboard
    uid: str
    title: str

    def __str__(self) -> str:
        return f"{self.action:<9} {self.what:<10} {self.uid}  {self.title}"


def dashboards_of(deployment: Deployment) -> list[Dashboard]:
    """Every dashboard of the deployment: one per mine, then the regulator overview."""
    table = deployment_limits(deployment)
    return [*(mine_dashboard(m, table) for m in deployment.mines),
            overview_dashboard(deployment.mines)]


def _service_dashboard(deployment: Deployment) -> Dashboard:
    return service_dashboard(deployment.mines[0].timezone if deployment.mines else "browser")


def _uid_of_source(dashboard: Dashboard) -> str:
    return PROMETHEUS_UID if dashboard.uid == SERVICE_UID else DATASOURCE_UID


def prometheus_datasource(url: str) -> dict[str, Any]:
    """The Prometheus (or VictoriaMetrics) data source of jinmei's own dashboard."""
    return {"uid": PROMETHEUS_UID, "name": "jinmei Prometheus", "type": "prometheus",
            "access": "proxy", "url": url, "isDefault": False,
            "jsonData": {"httpMethod": "POST", "timeInterval": "15s"}}


def datasource_of(deployment: Deployment, token: str) -> dict[str, Any]:
    """The data source as Grafana's API takes it; ``token`` goes into the secure header."""
    parts = urlsplit(deployment.store.url)
    authorized = parts.scheme.startswith("influxdb")
    if authorized:
        scheme = "https" if parts.scheme == "influxdbs" else "http"
        url, database = f"{scheme}://{parts.netloc}", parse_qs(parts.query)["bucket"][0]
    else:
        url, database = _DEFAULT_INFLUX
    periods = [s.period_s for s in deployment.registry.sensors]
    json_data: dict[str, Any] = {"version": "InfluxQL", "dbName": database, "httpMode": "GET",
                                 "timeInterval": format_interval(int(min(periods or [10]) * 1000))}
    source: dict[str, Any] = {"uid": DATASOURCE_UID, "name": "jinmei InfluxDB",
                              "type": "influxdb", "access": "proxy", "url": url,
                              "isDefault": False, "jsonData": json_data}
    if authorized:
        json_data["httpHeaderName1"] = "Authorization"
        source["secureJsonData"] = {"httpHeaderValue1": f"Token {token}"}
    return source


def sqlite_note(deployment: Deployment) -> str | None:
    """What a user of ``export``/``push`` must know when the store is SQLite (else None)."""
    if not deployment.store.url.startswith("sqlite:"):
        return None
    return ("note: [store] url is SQLite, which Grafana does not read: the dashboards query "
            "InfluxQL, so their data source points at http://127.0.0.1:8086 (database jinmei) "
            "and shows nothing until the deployment stores in InfluxDB ([store] url = "
            "\"influxdb://host:8086?org=…&bucket=…\"); the console (/console/) and `jinmei "
            "report daily` read SQLite deployments")


def _yaml(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON scalar is a YAML scalar


def _datasource_yaml(source: dict[str, Any], comment: str) -> str:
    lines = [f"# Written by `jinmei dashboards export`: {comment}", "apiVersion: 1",
             "datasources:"]
    lines += [f"  - {key}: {_yaml(source[key])}" if i == 0 else f"    {key}: {_yaml(source[key])}"
              for i, key in enumerate(("name", "uid", "type", "access", "url", "isDefault"))]
    lines.append("    jsonData:")
    lines += [f"      {k}: {_yaml(v)}" for k, v in source["jsonData"].items()]
    if "secureJsonData" in source:
        lines.append("    secureJsonData:")
        lines += [f"      {k}: {_yaml(v)}" for k, v in source["secureJsonData"].items()]
    return "\n".join(lines) + "\n"


def export(deployment: Deployment, directory: Path, prometheus_url: str = PROMETHEUS_URL,
           provisioning_path: str | None = None) -> list[Path]:
    """Write the provisioning files under ``directory``; returns the paths written.

    ``provisioning_path``: where ``directory`` will be on the Grafana host (e.g.
    ``/etc/grafana/provisioning``): the dashboard provider reads its JSON files from
    ``<provisioning_path>/dashboards/jinmei``. Default: ``directory`` itself, for a Grafana on
    this machine reading the export where it was written."""
    directory = Path(directory)
    boards = directory / "dashboards" / "jinmei"
    boards.mkdir(parents=True, exist_ok=True)
    (directory / "datasources").mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in [*dashboards_of(deployment), _service_dashboard(deployment)]:
        path = boards / f"{dashboard.uid}.json"
        path.write_text(json.dumps(dashboard.json(_uid_of_source(dashboard)),
                                   ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    datasource_file = directory / "datasources" / "jinmei.yaml"
    datasource_file.write_text(_datasource_yaml(datasource_of(deployment, f"${TOKEN_ENV}"),
                                                "the InfluxDB data source (InfluxQL)."),
                               encoding="utf-8")
    prometheus_file = directory / "datasources" / "jinmei-prometheus.yaml"
    prometheus_file.write_text(_datasource_yaml(prometheus_datasource(prometheus_url),
                                                "the Prometheus data source of jinmei's own "
                                                "metrics (PromQL)."), encoding="utf-8")
    files_at = (PurePosixPath(provisioning_path) / "dashboards" / "jinmei" if provisioning_path
                else boards.resolve())
    provider_file = directory / "dashboards" / "jinmei.yaml"
    provider_file.write_text("\n".join([
        "# Written by `jinmei dashboards export`: load the jinmei dashboards from files.",
        "apiVersion: 1", "providers:",
        "  - name: jinmei", f"    folder: {_yaml(FOLDER_TITLE)}", f"    folderUid: {FOLDER_UID}",
        "    type: file", "    disableDeletion: true", "    allowUiUpdates: false",
        "    options:", f"      path: {_yaml(str(files_at))}"]) + "\n", encoding="utf-8")
    return [datasource_file, prometheus_file, provider_file, *written]


def _fetch(call: Any, *args: Any) -> Any:
    """The object, or None when Grafana answers 404."""
    from grafana_client.client import GrafanaClientError

    try:
        return call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _same(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Equal on every field we set (Grafana adds its own: id, version, orgId …)."""
    return all(current.get(k) == v for k, v in wanted.items())


def push(api: Any, deployment: Deployment, token: str,
         prometheus_url: str = PROMETHEUS_URL) -> list[Change]:
    """Create or update folder, data sources and dashboards through ``api`` (a GrafanaApi)."""
    from grafana_client.client import GrafanaException

    changes: list[Change] = []
    what, uid = "folder", FOLDER_UID
    try:
        folder = _fetch(api.folder.get_folder, FOLDER_UID)
        if folder is None:
            api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        elif folder.get("title") != FOLDER_TITLE:
            api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        changes.append(Change(_action(folder, folder is None or folder.get("title") ==
                                      FOLDER_TITLE), what, uid, FOLDER_TITLE))
        what = "datasource"
        for source in (datasource_of(deployment, token), prometheus_datasource(prometheus_url)):
            uid = source["uid"]
            public = {k: v for k, v in source.items() if k != "secureJsonData"}
            current = _fetch(api.datasource.get_datasource_by_uid, uid)
            if current is None:
                api.datasource.create_datasource(source)
            elif not _same(current, public):
                api.datasource.update_datasource_by_uid(uid, source)
            changes.append(Change(_action(current, current is None or _same(current, public)),
                                  what, uid, source["name"]))
        what = "dashboard"
        for dashboard in [*dashboards_of(deployment), _service_dashboard(deployment)]:
            uid = dashboard.uid
            wanted = {k: v for k, v in dashboard.json(_uid_of_source(dashboard)).items()
                      if k != "version"}
            found = _fetch(api.dashboard.get_dashboard, uid)
            same = found is not None and _same(found.get("dashboard", {}), wanted) and \
                found.get("meta", {}).get("folderUid") == FOLDER_UID
            if not same:
                api.dashboard.update_dashboard({"dashboard": wanted, "folderUid": FOLDER_UID,
                                                "overwrite": True,
                                                "message": "jinmei dashboards push"})
            changes.append(Change(_action(found, same), what, uid, dashboard.title))
    except GrafanaException as exc:
        done = "; ".join(str(c) for c in changes) or "nothing"
        raise DeliveryError(f"grafana {what} {uid}", f"{exc} (done before: {done})",
                            retryable=False) from exc
    return changes


def _action(found: Any, same: bool) -> str:
    if found is None:
        return "created"
    return "unchanged" if same else "updated"
