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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from config.model import Limits, Sensor

__all__ = ["InfluxDB1", "Mosquitto", "Pki", "Request", "ScriptedServer", "SmtpServer",
           "VictoriaMetrics", "free_port", "ftp_server", "influxdb1", "make_pki", "sample_sensor",
           "scripted_http_server", "sftp_server", "smtp_server", "victoria_metrics", "wait_until"]

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

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector of a PromQL query (``/api/v1/query``): ``[{"metric", "value"}]``."""
        query = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as reply:
            answer = json.loads(reply.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"PromQL {promql!r} failed: {answer}")
        return list(answer["data"]["result"])

    def export(self, selector: str) -> list[dict[str, Any]]:
        """Every series matching the selector: ``{"metric": {...}, "values", "timestamps"}``."""
        query = urllib.parse.urlencode({"match[]": selector})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=5) as reply:
            return [json.loads(line) for line in reply.read().decode().splitlines() if line]


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate a server process; kill it if it has not exited 10 s later."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def victoria_metrics(tmp_path: Path, port: int | None = None,
                     flags: Sequence[str] = ()) -> Iterator[VictoriaMetrics]:
    """Start ``victoria-metrics`` with its data in ``tmp_path`` on ``port`` (a free one when
    None) and any further command-line ``flags`` (``-promscrape.config=FILE``); yields once
    ``/health`` answers 200, stops the process on exit."""
    vm = VictoriaMetrics(port or free_port(), tmp_path / "victoria-metrics")
    vm.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = vm.data_dir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["victoria-metrics", f"-storageDataPath={vm.data_dir}",
             f"-httpListenAddr=127.0.0.1:{vm.port}", *flags],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_until(lambda: process.poll() is not None or _healthy(vm.url), 15.0) \
                or process.poll() is not None:
            raise RuntimeError(f"victoria-metrics did not become healthy on port {vm.port}:\n"
                               f"{log_path.read_text()[-2000:]}")
        yield vm
    finally:
        stop_process(process)


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
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, in order

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
                server.headers.append(dict(self.headers.items()))
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


@dataclass(frozen=True)
class InfluxDB1:
    """A running InfluxDB 1.x (Debian ``influxdb``): v1 ``/write`` and InfluxQL ``/query``."""

    port: int
    database: str = "jinmei"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write(self, lines: str, precision: str = "ms") -> None:
        """POST line protocol to ``/write``; raises on anything but 204."""
        query = urllib.parse.urlencode({"db": self.database, "precision": precision})
        request = urllib.request.Request(f"{self.url}/write?{query}", data=lines.encode(),
                                         method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            if reply.status != 204:
                raise RuntimeError(f"InfluxDB write answered {reply.status}")

    def query(self, influxql: str) -> dict[str, Any]:
        """The first statement's result of ``GET /query`` (epoch ms times); raises on an error."""
        query = urllib.parse.urlencode({"db": self.database, "q": influxql, "epoch": "ms"})
        with urllib.request.urlopen(f"{self.url}/query?{query}", timeout=30) as reply:
            results = json.loads(reply.read())["results"]
        for result in results:
            if "error" in result:
                raise RuntimeError(f"InfluxQL error {result['error']!r} in: {influxql}")
        return dict(results[0])


@contextmanager
def influxdb1(tmp_path: Path, database: str = "jinmei") -> Iterator[InfluxDB1]:
    """Start ``influxd`` (InfluxDB 1.6) with its meta, data and WAL under ``tmp_path`` on free
    ports (HTTP and RPC), create ``database``, and stop the process on exit."""
    root = tmp_path / "influxdb1"
    root.mkdir(parents=True, exist_ok=True)
    server = InfluxDB1(free_port(), database)
    conf = root / "influxdb.conf"
    conf.write_text(
        "reporting-disabled = true\n"
        f'bind-address = "127.0.0.1:{free_port()}"\n'
        f'[meta]\n  dir = "{root / "meta"}"\n'
        f'[data]\n  dir = "{root / "data"}"\n  wal-dir = "{root / "wal"}"\n'
        "  query-log-enabled = false\n"
        f'[http]\n  bind-address = "127.0.0.1:{server.port}"\n  log-enabled = false\n')
    log_path = root / "influxd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(["influxd", "-config", str(conf)], stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        wait_listening(server.port, process, timeout=20.0)
        body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{database}"'}).encode()
        # /ping answers before the meta store is open: retry the CREATE until it is.
        if not wait_until(lambda: _post_ok(f"{server.url}/query", body), 15.0):
            raise RuntimeError(f"influxd did not accept CREATE DATABASE:\n"
                               f"{log_path.read_text()[-2000:]}")
        yield server
    finally:
        stop_process(process)


def _post_ok(url: str, body: bytes) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"),
                                    timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class SmtpServer:
    """A running aiosmtpd server: STARTTLS required, AUTH LOGIN/PLAIN with one user."""

    port: int
    client_tls: Any  # ssl.SSLContext trusting the server's self-signed certificate
    messages: list[Any] = field(default_factory=list)  # email.message.EmailMessage


@contextmanager
def smtp_server(tmp_path: Path, user: str = "jinmei",
                password: str = "secret") -> Iterator[SmtpServer]:
    """aiosmtpd in this process with a fresh self-signed certificate for 127.0.0.1."""
    import email
    import email.policy
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server = SmtpServer(free_port(), ssl.create_default_context(cafile=str(cert)))

    class Handler:
        async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
            server.messages.append(email.message_from_bytes(envelope.content,
                                                            policy=email.policy.default))
            return "250 OK"

    def authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        ok = (isinstance(data, LoginPassword) and data.login.decode() == user
              and data.password.decode() == password)
        return AuthResult(success=ok)

    controller = Controller(Handler(), hostname="127.0.0.1", port=server.port,
                            tls_context=server_tls, require_starttls=True,
                            authenticator=authenticate, auth_required=True)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class Pki:
    """A throw-away certificate authority made with the ``openssl`` CLI, and what it signed:
    a server certificate for 127.0.0.1 / localhost, and client certificates on demand."""

    root: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, common_name: str) -> tuple[Path, Path]:
        """(certificate, key) of a client certificate whose CN is ``common_name``."""
        return _signed(self, common_name, client=True)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(pki: Pki, name: str, *, client: bool) -> tuple[Path, Path]:
    cert, key, csr = (pki.root / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}")
    ext = pki.root / f"{name}.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n" if client else
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca, "-CAkey", pki.root / "ca.key",
             "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", ext)
    return cert, key


def make_pki(root: Path) -> Pki:
    """A new CA under ``root`` with a server certificate for 127.0.0.1 (openssl CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    ca = root / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
             root / "ca.key", "-out", ca, "-subj", f"/CN=jinmei test CA {root.name}")
    pki = Pki(root, ca, root / "server.crt", root / "server.key")
    _signed(pki, "server", client=False)
    return pki


@contextmanager
def ftp_server(root: Path, port: int | None = None, user: str = "jinmei",
               password: str = "secret", tls: Pki | None = None) -> Iterator[int]:
    """pyftpdlib serving ``root`` (read-write for one user) on loopback; yields its port.
    Enter it again with the same port to bring a stopped server back. With ``tls``: FTPS
    (explicit TLS, pyftpdlib's TLS_FTPHandler) with that PKI's server certificate, TLS
    required on the control and the data connections."""
    import warnings

    with warnings.catch_warnings():  # pyftpdlib still imports asyncore (deprecated in 3.11)
        warnings.simplefilter("ignore", DeprecationWarning)
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
        from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elradfmwMT")
    settings: dict[str, Any] = {"authorizer": authorizer, "passive_ports": None}
    if tls is not None:
        settings |= {"certfile": str(tls.server_cert), "keyfile": str(tls.server_key),
                     "tls_control_required": True, "tls_data_required": True}
    handler = type("Handler", (TLS_FTPHandler if tls else FTPHandler,), settings)
    server = FTPServer(("127.0.0.1", port or free_port()), handler)
    stop = threading.Event()

    def serve() -> None:  # pyftpdlib is not thread-safe: close in the thread that serves
        while not stop.is_set():
            server.ioloop.loop(timeout=0.05, blocking=False)
        server.close_all()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        stop.set()
        thread.join(5)


@contextmanager
def sftp_server(root: Path, port: int | None = None, user: str = "jinmei",
                password: str = "secret", host_key: Any = None) -> Iterator[int]:
    """asyncssh's SFTP server (password login, chrooted to ``root``) in its own event-loop
    thread on loopback; yields its port. Enter it again with the same port to bring it back.
    ``host_key``: its asyncssh private key (a client must know it), else a new one."""
    import asyncio

    import asyncssh

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, secret: str) -> bool:
            return username == user and secret == password

    port = port or free_port()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    key = host_key or asyncssh.generate_private_key("ssh-ed25519")

    async def listen() -> Any:
        return await asyncssh.listen(
            "127.0.0.1", port, server_factory=Server, server_host_keys=[key], reuse_address=True,
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)))

    acceptor = asyncio.run_coroutine_threadsafe(listen(), loop).result(10)
    try:
        yield port
    finally:
        async def close() -> None:
            acceptor.close()
            await acceptor.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
