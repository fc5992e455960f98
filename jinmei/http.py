"""The service's HTTP endpoint for operators: ``/healthz``, ``/readyz`` and ``/metrics``.

Config: ``[http] listen = "host:port"`` (default ``127.0.0.1:9108``; ``[::1]:9108`` for IPv6;
``""`` turns it off). The same endpoint carries the dispatcher console (:mod:`jinmei.console`):
a GET handler is a route in :attr:`OpsServer.routes` (exact path → function); a *mount* in
:attr:`OpsServer.mounts` (path prefix → function of the request handler) answers every method
under its prefix itself — headers, cookies, form bodies and server-sent-event streams — so the
console adds a mount rather than a second server.

- ``GET /healthz`` — 200 ``{"ok": true}`` while :meth:`Service.health` says every essential
  thread is alive and making progress, else 503 with its reason as JSON. For a supervisor
  (systemd watchdog script, Kubernetes liveness): 503 means restart me.
- ``GET /readyz`` — 200 once the broker connection is up with the telemetry subscription in
  place, the store is accepting writes and the sensor registry is loaded; else 503 with what is
  missing. For a load balancer or a deploy script: 503 means not yet, or not now.
- ``GET /metrics`` — the Prometheus text format of :mod:`jinmei.metrics`.

A worker of ``[ingest] workers`` serves this endpoint on the loopback socket its parent made
and handed over (:class:`WorkerEndpoint`), and the parent serves ``[http] listen`` for all
workers (:mod:`jinmei.parent`).

Why the standard library's ``ThreadingHTTPServer``: three GET endpoints with small bodies,
asked every few seconds by a scraper and a health checker — no framework or event loop earns its
place in a threaded service, and nothing new to install or patch. Each request gets a daemon
thread, so a slow client never delays another or the shutdown; the server runs on its own
thread (``jinmei-http``), never on the ingest worker, so a scrape cannot slow ingest beyond
reading its counters. If the console later needs streaming or many clients, an ASGI server may
replace this module behind the same routes.

Failure behaviour: an address that cannot be bound (in use, not local) stops the start with a
:class:`~config.errors.ConfigError` naming ``http.listen``; an exception inside a handler is
logged and answered 500, and the server keeps serving. ``/healthz``, ``/readyz`` and
``/metrics`` have no authentication (the console's pages do): keep the endpoint on loopback or
a management network, behind a TLS proxy when the console is used from other machines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from config.errors import ConfigError

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["Mount", "OpsServer", "Response", "WorkerEndpoint", "json_response", "ops_server",
           "parse_listen", "readiness"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


# Answers every request under its path prefix, writing the reply itself.
Mount = Callable[[BaseHTTPRequestHandler], None]

# What the workers' parent hands each worker (jinmei.workers): the listening socket it made on
# a loopback port (inherited file descriptor) and the key its console requests carry.
WORKER_FD_ENV, WORKER_KEY_ENV = "JINMEI_WORKER_HTTP_FD", "JINMEI_WORKER_KEY"


@dataclass(frozen=True)
class WorkerEndpoint:
    """A worker's operator endpoint: served on the parent's socket, its console answering
    requests that carry ``key`` only (:mod:`jinmei.console.relay`)."""

    sock: socket.socket
    key: str

    @classmethod
    def from_environment(cls) -> WorkerEndpoint | None:
        """The endpoint the parent handed over, or None (its ``[http] listen`` is off)."""
        fd, key = os.environ.get(WORKER_FD_ENV), os.environ.get(WORKER_KEY_ENV)
        if not fd or not key:
            return None
        return cls(socket.socket(fileno=int(fd)), key)


def json_response(ok: bool, payload: dict[str, Any]) -> Response:
    """200 with ``{"ok": true, ...}`` or 503 with ``{"ok": false, ...}``."""
    body = json.dumps({"ok": ok, **payload}, ensure_ascii=False, default=str).encode()
    return Response(200 if ok else 503, "application/json; charset=utf-8", body)


def parse_listen(listen: str) -> tuple[str, int, socket.AddressFamily]:
    """``host:port`` or ``[v6]:port`` → (host, port, address family); the loader has checked
    the form already."""
    host, _, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), socket.AF_INET6
    return host, int(port), socket.AF_INET


class OpsServer:
    """A ThreadingHTTPServer answering ``routes`` (path → function) on its own thread."""

    def __init__(self, listen: str, routes: dict[str, Callable[[], Response]],
                 *, source_file: str = "", sock: socket.socket | None = None) -> None:
        self.routes = routes
        self.mounts: dict[str, Mount] = {}
        self.on_stop: list[Callable[[], None]] = []  # before the server stops (end streams)
        host, port, family = parse_listen(listen)
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "jinmei"

            def _mounted(self) -> bool:
                path = self.path.split("?", 1)[0]
                mount = next((m for prefix, m in server.mounts.items()
                              if path.startswith(prefix)), None)
                if mount is None:
                    return False
                try:
                    mount(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the browser went away (a closed tab ends its event stream)
                except Exception:  # a broken handler must not take the endpoint down
                    log.exception("%s %s failed", self.command, self.path)
                    self.close_connection = True
                return True

            def do_POST(self) -> None:
                if not self._mounted():
                    self.send_error(405 if self.path in server.routes else 404)

            def do_GET(self) -> None:
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None and self._mounted():
                    return
                if route is None:
                    reply = Response(404, "text/plain; charset=utf-8",
                                     f"no such path; try {', '.join(server.routes)}\n".encode())
                else:
                    try:
                        reply = route()
                    except Exception:  # a broken handler must not take the endpoint down
                        log.exception("GET %s failed", self.path)
                        reply = Response(500, "text/plain; charset=utf-8", b"internal error\n")
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Cache-Control", "no-store")
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                # the asker may have given up (a parent's 3 s question to a busy worker)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: a scrape every 15 s is not news; failures are logged above."""

        self._handler = Handler
        self._address = (host, port)
        def handle_error(httpd: ThreadingHTTPServer, request: object,
                         client_address: object) -> None:
            """One log line (the traceback joined by jinmei.logs), not socketserver's
            multi-line print to stderr."""
            log.exception("HTTP request from %s failed", client_address)

        self._class = type("Server", (ThreadingHTTPServer,),
                           {"address_family": family, "daemon_threads": True,
                            "handle_error": handle_error})
        self._listen, self._source_file = listen, source_file
        self._sock = sock  # already listening (a worker's, from its parent): served as it is
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port

    def start(self) -> None:
        """Bind and serve; raises ConfigError (``http.listen``) when the address is unusable."""
        if self._sock is not None:
            self._httpd = self._class(self._sock.getsockname()[:2], self._handler,
                                      bind_and_activate=False)
            self._httpd.socket.close()
            self._httpd.socket = self._sock
            self._httpd.server_address = self._sock.getsockname()[:2]
        else:
            self._bind()
        assert self._httpd is not None
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jinmei-http",
                                        daemon=True)
        self._thread.start()

    def _bind(self) -> None:
        try:
            self._httpd = self._class(self._address, self._handler)
        except OSError as exc:
            raise ConfigError(self._source_file or "[http]", "http.listen",
                              f"cannot listen on {self._listen}: {exc.strerror or exc}") from exc

    def stop(self) -> None:
        """Return once the server no longer accepts requests and its socket is closed."""
        if self._httpd is None or self._thread is None:
            return
        for hook in self.on_stop:
            hook()
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()


def readiness(service: Service) -> tuple[bool, dict[str, object]]:
    """(True, {}) once the broker subscription is in place, the store accepts writes and the
    sensor registry is loaded; else (False, {"waiting_for": [...]})."""
    waiting = []
    if not service.source.wait_subscribed(0):
        waiting.append("broker")
    if service.pipeline.store_failing_since_ms is not None:  # its writes or the forwarder
        waiting.append("store")
    if not len(service.pipeline.registry):
        waiting.append("registry")
    return (False, {"waiting_for": waiting}) if waiting else (True, {})


def ops_server(service: Service) -> OpsServer | None:
    """The endpoint of ``[http] listen`` for this service (not yet listening), None when off;
    a worker's on the socket its parent made (:attr:`Service.endpoint`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from jinmei.metrics import service_registry

    deployment, endpoint = service.deployment, service.endpoint
    if not deployment.http.listen and endpoint is None:
        return None
    registry = service_registry(service)
    server = OpsServer(deployment.http.listen or "127.0.0.1:0", {
        "/healthz": lambda: json_response(*service.health()),
        "/readyz": lambda: json_response(*readiness(service)),
        "/metrics": lambda: Response(200, CONTENT_TYPE_LATEST, generate_latest(registry)),
    }, source_file=deployment.source_file, sock=endpoint.sock if endpoint else None)
    if deployment.console.users:  # the dispatcher console (jinmei/console)
        from jinmei.console import attach

        attach(service, server, endpoint.key if endpoint else None)
    return server
