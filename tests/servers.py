"""Real servers for integration tests, started on free loopback ports and stopped afterwards.

``Mosquitto`` is the MQTT broker from Debian's package, with the limits a jinmei deployment
raises (deploy/mosquitto.conf): stock ``max_queued_messages`` silently drops QoS 1 messages.

Plain context managers (no pytest dependency) so any test module or benchmark can use them:
``victoria_metrics`` (a real TSDB) and ``scripted_http_server`` (a real HTTP server whose
answers a test scripts, for outcomes a real database will not produce on demand: 400, 429,
401 …). ``sample_sensor`` builds a plausible Sensor for tests that need a registry without
the config loader.

    with victoria_metrics(tmp_path) as vm:
        ... InfluxSink(vm.url, ...) ...; vm.export('{__name__="reading_value"}')

VictoriaMetrics (Debian ``victoria-metrics``) implements InfluxDB's v2 write API
(``/api/v2/write``), which is what ``influxdb-client`` speaks; see design.md "Real components".
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from config.model import Limits, Sensor

__all__ = ["Mosquitto", "Request", "ScriptedServer", "VictoriaMetrics", "free_port",
           "sample_sensor", "scripted_http_server", "victoria_metrics", "wait_until"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Any, timeout_s: float, interval_s: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something truthy; returns it, or the last
    (falsy) value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval_s)


@dataclass(frozen=True)
class VictoriaMetrics:
    """A running VictoriaMetrics: where it listens and how to read points back."""

    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, selector: str) -> list[dict[str, Any]]:
        """Every series matching the selector: ``{"metric": {...}, "values", "timestamps"}``."""
        query = urllib.parse.urlencode({"match[]": selector})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=5) as reply:
            return [json.loads(line) for line in reply.read().decode().splitlines() if line]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def victoria_metrics(tmp_path: Path, port: int | None = None) -> Iterator[VictoriaMetrics]:
    """Start ``victoria-metrics`` with its data in ``tmp_path`` on ``port`` (a free one when
    None); yields once ``/health`` answers 200, stops the process on exit."""
    vm = VictoriaMetrics(port or free_port(), tmp_path / "victoria-metrics")
    vm.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = vm.data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["victoria-metrics", f"-storageDataPath={vm.data_dir}",
             f"-httpListenAddr=127.0.0.1:{vm.port}"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_until(lambda: process.poll() is not None or _healthy(vm.url), 15.0) \
                or process.poll() is not None:
            raise RuntimeError(f"victoria-metrics did not become healthy on port {vm.port}:\n"
                               f"{log_path.read_text()[-2000:]}")
        yield vm
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Request:
    """One request a scripted server received."""

    method: str
    path: str
    body: bytes
    at: float  # time.monotonic() on arrival


# (status, headers, body) to answer the n-th request (0-based) carrying this body.
Answer = Callable[[int, bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class ScriptedServer:
    """A running scripted HTTP server and the requests it has received so far."""

    port: int
    requests: list[Request] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def scripted_http_server(answer: Answer, port: int | None = None) -> Iterator[ScriptedServer]:
    """A real HTTP server on loopback answering every POST/GET with ``answer(n, body)``."""
    server = ScriptedServer(port or free_port())
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                number = len(server.requests)
                server.requests.append(Request(self.command, self.path, body, time.monotonic()))
            status, headers, reply = answer(number, body)
            self.send_response(status)
            for name, value in {"Content-Length": str(len(reply)), **headers}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply)

        do_POST = do_GET = _reply

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests read ``server.requests`` instead of stderr."""

    httpd = ThreadingHTTPServer(("127.0.0.1", server.port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def sample_sensor(mine: str, sensor: str, kind: str = "ch4",
                  location: str = "longwall_face") -> Sensor:
    """A Sensor with plausible fixed metadata (0–4 % methane, 1.0 % alarm)."""
    return Sensor(mine=mine, id=sensor, kind=kind, unit="%", location=location,
                  place="1101综采工作面", area="1101", substation="S01", period_s=1.0,
                  range_low=0.0, range_high=4.0,
                  limits=Limits(alarm_high=1.0, power_off=1.5, restore=1.0))


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A Mosquitto process on a free loopback port; ``restart()`` keeps its port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
