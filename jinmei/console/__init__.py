"""The dispatcher console: server-rendered pages on the service's ``[http]`` endpoint.

- :mod:`jinmei.console.accounts` — password hashes, sessions and CSRF tokens, login limits;
- :mod:`jinmei.console.live` — every sensor's newest reading and state, fed by the pipeline;
- :mod:`jinmei.console.front` — sessions, login, and who may do what, on every request;
- :mod:`jinmei.console.app` — the pages and forms from the service in this process;
- :mod:`jinmei.console.relay` — the same console in the parent of ``[ingest] workers``: each
  mine's pages and forms asked of the worker that owns the mine;
- :mod:`jinmei.console.pages`, :mod:`jinmei.console.assets` — HTML, one stylesheet, one script.

:func:`attach` mounts the console on the endpoint when ``[console]`` has users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jinmei.http import OpsServer, Response

if TYPE_CHECKING:
    from jinmei.console.front import Front
    from jinmei.service import Service

__all__ = ["attach", "mount"]


def attach(service: Service, server: OpsServer, delegate_key: str | None = None) -> None:
    """Mount the console on ``server`` (``/console/``, and ``/`` redirecting there) and tap
    the pipeline's committed batches and alert transitions for its live table
    (``delegate_key``: a worker's, answering its parent only)."""
    from jinmei.console.app import Console

    console = Console(service, delegate_key=delegate_key)
    service.pipeline.taps.append(console)
    mount(server, console)


def mount(server: OpsServer, console: Front) -> None:
    """Serve ``console`` under ``/console/`` (``/`` redirects there); end its event streams
    when the server stops."""
    server.mounts["/console"] = console
    server.routes["/"] = lambda: Response(303, "text/plain; charset=utf-8", b"",
                                          (("Location", "/console/"),))
    server.on_stop.append(console.close)
