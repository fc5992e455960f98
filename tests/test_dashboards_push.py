"""`jinmei dashboards push` against a small HTTP server on loopback.

This is a CONTRACT TEST OF REQUESTS, NOT OF GRAFANA: the server implements only the endpoints
grafana-client calls for a push (folders, data sources by uid, dashboards by uid and
``POST /api/dashboards/db``), keeps what it is sent and answers 404 for what it does not hold,
the way Grafana's HTTP API documents. It proves which requests a push makes, that a second
push makes no writes, and that a changed object is updated in place — not that a real
Grafana renders the result.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jinmei.cli import main
from tests.servers import free_port


class FakeGrafana:
    """State and request log of the loopback server."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.auth: list[str] = []

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            uid = m.group(1)
            if method == "GET":
                return (200, self.folders[uid]) if uid in self.folders else (404, {})
            self.folders[uid] = {**self.folders[uid], "title": body["title"]}
            return 200, self.folders[uid]
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": 1}
            return 200, self.folders[body["uid"]]
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            uid = m.group(1)
            if method == "GET":
                if uid not in self.datasources:
                    return 404, {"message": "Data source not found"}
                public = {k: v for k, v in self.datasources[uid].items()
                          if k != "secureJsonData"}
                return 200, {**public, "id": 7, "orgId": 1}
            self.datasources[uid] = body
            return 200, {"message": "Datasource updated"}
        if path == "/api/datasources" and method == "POST":
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource added", "id": 7}
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            found = self.dashboards.get(m.group(1))
            return (200, found) if found else (404, {"message": "Dashboard not found"})
        if path == "/api/dashboards/db" and method == "POST":
            dashboard = body["dashboard"]
            old = self.dashboards.get(dashboard["uid"])
            version = old["dashboard"]["version"] + 1 if old else 1
            self.dashboards[dashboard["uid"]] = {
                "dashboard": {**dashboard, "id": 11, "version": version},
                "meta": {"folderUid": body["folderUid"]}}
            return 200, {"status": "success", "uid": dashboard["uid"], "version": version}
        return 404, {"message": f"not implemented here: {method} {path}"}


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                fake.auth.append(self.headers.get("Authorization", ""))
                status, reply = fake.handle(self.command, self.path,
                                            json.loads(raw) if raw else None)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads fake.requests."""

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _writes(fake: FakeGrafana) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in fake.requests if m != "GET"]


def test_first_push_creates_everything_and_second_changes_nothing(
        grafana: tuple[FakeGrafana, str], capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = grafana
    assert main(["dashboards", "push", "--url", url, "--token", "glsa_test"]) == 0
    first = capsys.readouterr().out
    assert "7 of 7 objects changed" in first
    assert _writes(fake) == [("POST", "/api/folders")] + [("POST", "/api/datasources")] * 2 + [
        ("POST", "/api/dashboards/db")] * 4
    assert set(fake.dashboards) == {"jinmei-mine-dayan", "jinmei-mine-qipanjing",
                                    "jinmei-overview", "jinmei-service"}
    assert fake.datasources["jinmei-prometheus"]["type"] == "prometheus"
    assert all(d["meta"]["folderUid"] == "jinmei" for d in fake.dashboards.values())
    assert fake.datasources["jinmei-influxdb"]["jsonData"]["version"] == "InfluxQL"
    assert set(fake.auth) == {"Bearer glsa_test"}

    fake.requests.clear()
    assert main(["dashboards", "push", "--url", url, "--token", "glsa_test"]) == 0
    assert "0 of 7 objects changed" in capsys.readouterr().out
    assert _writes(fake) == []
    assert all(d["dashboard"]["version"] == 1 for d in fake.dashboards.values())


def test_a_dashboard_changed_in_grafana_is_put_back(grafana: tuple[FakeGrafana, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = grafana
    assert main(["dashboards", "push", "--url", url]) == 0
    fake.dashboards["jinmei-overview"]["dashboard"]["title"] = "edited by hand"
    fake.folders["jinmei"]["title"] = "renamed"
    fake.requests.clear()
    capsys.readouterr()
    assert main(["dashboards", "push", "--url", url]) == 0
    out = capsys.readouterr().out
    assert "2 of 7 objects changed" in out
    assert re.search(r"updated\s+dashboard\s+jinmei-overview", out)
    assert _writes(fake) == [("PUT", "/api/folders/jinmei"), ("POST", "/api/dashboards/db")]
    assert fake.dashboards["jinmei-overview"]["dashboard"]["title"] == "金煤工程 监管总览"


def test_grafana_error_is_reported_with_what_was_done(grafana: tuple[FakeGrafana, str],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake, url = grafana
    original = fake.handle

    def refuse_datasources(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/api/datasources":
            return 403, {"message": "permission denied"}
        return original(method, path, body)

    fake.handle = refuse_datasources  # type: ignore[method-assign]
    assert main(["dashboards", "push", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "grafana datasource jinmei-influxdb" in err
    assert "created   folder" in err
