"""The dispatcher console: server-rendered pages on the service's ``[http]`` endpoint.

- :mod:`jinmei.console.accounts` — password hashes, sessions and CSRF tokens, login limits;
- :mod:`jinmei.console.live` — every sensor's newest reading and state, fed by the pipeline;
- :mod:`jinmei.console.app` — the routes, who may do what, and the forms;
- :mod:`jinmei.console.pages`, :mod:`jinmei.console.assets` — HTML, one stylesheet, one script.

:func:`attach` mounts the console on the endpoint when ``[console]`` has users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from jinmei.http import OpsServer, Response

if TYPE_CHECKING:
    from jinmei.service import Service

__all__ = ["attach"]


def attach(service: Service, server: OpsServer) -> None:
    """Mount the console on ``server`` (``/console/``, and ``/`` redirecting there) and tap
    the pipeline's committed batches and alert transitions for its live table."""
    from jinmei.console.app import Console

    console = Console(service)
    service.pipeline.taps.append(console)
    server.mounts["/console"] = console
    server.routes["/"] = lambda: Response(303, "text/plain; charset=utf-8", b"",
                                          (("Location", "/console/"),))
    server.on_stop.append(console.close)
