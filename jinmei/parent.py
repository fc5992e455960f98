"""The operator endpoint of the workers' parent: ``[http] listen`` for every worker at once.

With ``[ingest] workers`` above 1, ``jinmei run`` is the parent of N worker processes
(:mod:`jinmei.workers`). Each worker serves its own endpoint on a loopback port the parent
made for it (an inherited listening socket, the same port over its restarts); the parent
serves ``[http] listen`` and answers from all of them:

- ``GET /healthz`` — 200 while every worker runs and its own ``/healthz`` is 200; else 503
  with ``reasons``, each naming its ``worker`` and ``mines``: the worker's own reasons, or
  ``worker_down`` (with its ``restarts`` and ``restart_in_s``: a dead worker being started
  again shows as such) or ``worker_unanswered`` (no answer within :data:`ASK_TIMEOUT_S`).
  ``workers`` gives each worker's state either way. A worker down is unhealthy because its
  mines are unwatched; the parent restarts it itself, so a liveness probe should allow for
  its backoff (0.5 s doubling to 30 s) before it restarts the whole service.
- ``GET /readyz`` — 200 once every worker is ready; else 503 with ``waiting_for`` entries
  such as ``worker 1 (qipanjing): broker`` or ``worker 1 (qipanjing): down, started again in
  0.4 s (restarts: 1)``.
- ``GET /metrics`` — every worker's families with each sample labelled ``worker="<k>"``
  (``HELP`` and ``TYPE`` once per family; a series that had a ``mine`` label keeps it), and the
  parent's own: ``jinmei_worker_up{worker}`` (1: running and answered this scrape),
  ``jinmei_worker_restarts_total{worker}``, ``jinmei_mine_worker{mine, worker}`` (the
  assignment) and its process metrics (``process_*`` without a ``worker`` label), and the
  stray telemetry watcher's counts (:mod:`jinmei.strays`) in the workers' families, also
  without a ``worker`` label: ``jinmei_messages_received_total{mine=""}`` and
  ``jinmei_rejects_total{reason}``. A worker
  that does not answer is missing from the scrape, and its ``jinmei_worker_up`` is 0.
- ``/console/…`` — :mod:`jinmei.console.relay`.

Why ask on each request rather than have the workers push: a scrape comes every 15 s and a
health check every few seconds; asking N loopback endpoints in parallel costs milliseconds,
keeps no second copy of any state in the parent, and a hung worker shows as unanswered — the
truth rather than its last report.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client import generate_latest as prometheus_text
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from config.model import Deployment
from jinmei.http import OpsServer, Response, json_response
from jinmei.strays import StrayWatcher
from jinmei.workers import WorkerParent, WorkerState

__all__ = ["ASK_TIMEOUT_S", "ParentCollector", "health", "parent_server", "readiness"]

log = logging.getLogger(__name__)

ASK_TIMEOUT_S = 3.0  # jinmei's own: a worker's endpoint answers in milliseconds; seconds is hung

Answer = tuple[int, bytes] | None  # (status, body), or None: no answer


def ask(port: int, path: str, timeout_s: float = ASK_TIMEOUT_S) -> Answer:
    """GET ``path`` of the worker endpoint on loopback ``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, reply.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def ask_all(states: list[WorkerState], path: str) -> list[Answer]:
    """``path`` of every running worker, asked in parallel (None for the others)."""
    def one(state: WorkerState) -> Answer:
        return ask(state.port, path) if state.pid and state.port else None
    with ThreadPoolExecutor(max_workers=max(1, len(states))) as pool:
        return list(pool.map(one, states))


def _payload(answer: Answer) -> tuple[bool, dict[str, Any]]:
    status, body = answer if answer is not None else (0, b"")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    return status == 200, payload if isinstance(payload, dict) else {}


def _worker(state: WorkerState) -> dict[str, Any]:
    return {"worker": state.index, "mines": list(state.mines), "pid": state.pid,
            "port": state.port, "restarts": state.restarts}


def health(parent: WorkerParent) -> tuple[bool, dict[str, object]]:
    """The parent's ``/healthz``: see the module docstring."""
    states = parent.states()
    reasons: list[dict[str, Any]] = []
    workers = []
    for state, answer in zip(states, ask_all(states, "/healthz"), strict=True):
        entry = _worker(state)
        if state.pid is None:
            found = [{"reason": "worker_down", "restart_in_s": round(state.restart_in_s or 0, 1)}]
        elif answer is None:
            found = [{"reason": "worker_unanswered", "timeout_s": ASK_TIMEOUT_S}]
        else:
            ok, payload = _payload(answer)
            found = [] if ok else list(payload.get("reasons") or [{"reason": "unhealthy"}])
        reasons += [{**entry, **r} for r in found]
        workers.append({**entry, "ok": not found})
    return (False, {"reasons": reasons, "workers": workers}) if reasons \
        else (True, {"workers": workers})


def readiness(parent: WorkerParent) -> tuple[bool, dict[str, object]]:
    """The parent's ``/readyz``: see the module docstring."""
    states = parent.states()
    waiting: list[str] = []
    workers = []
    for state, answer in zip(states, ask_all(states, "/readyz"), strict=True):
        if state.pid is None:
            found = [f"down, started again in {state.restart_in_s or 0:.1f} s "
                     f"(restarts: {state.restarts})"]
        elif answer is None:
            found = [f"no answer within {ASK_TIMEOUT_S:g} s"]
        else:
            ok, payload = _payload(answer)
            found = [] if ok else [str(w) for w in payload.get("waiting_for") or ["not ready"]]
        waiting += [f"{state.name}: {w}" for w in found]
        workers.append({**_worker(state), "ready": not found})
    return (False, {"waiting_for": waiting, "workers": workers}) if waiting \
        else (True, {"workers": workers})


class ParentCollector(Collector):
    """Every worker's metrics labelled with its worker, and the parent's own (module doc);
    with ``strays``, the stray telemetry watcher's counts join the workers' families."""

    def __init__(self, parent: WorkerParent, strays: StrayWatcher | None = None) -> None:
        self.parent = parent
        self.strays = strays
        self.process = ProcessCollector(registry=None)

    def collect(self) -> Iterator[Metric]:
        states = self.parent.states()
        answers = ask_all(states, "/metrics")
        families: dict[str, Metric] = {}

        def merge(family: Metric, worker: str | None) -> None:
            merged = families.setdefault(family.name, Metric(
                family.name, family.documentation, family.type, family.unit))
            merged.samples += [s._replace(labels={**s.labels, "worker": worker}) if worker
                               else s for s in family.samples]

        up = GaugeMetricFamily("jinmei_worker_up", "1 while the worker process runs and "
                               "answered this scrape.", labels=["worker"])
        for state, answer in zip(states, answers, strict=True):
            answered = answer is not None and answer[0] == 200
            if answer is not None and answered:
                for family in text_string_to_metric_families(answer[1].decode()):
                    merge(family, str(state.index))
            up.add_metric([str(state.index)], int(answered))
        for family in self.process.collect():
            merge(family, None)
        if self.strays is not None:
            for family in self._strays(self.strays):
                merge(family, None)
        yield from families.values()
        yield up
        restarts = CounterMetricFamily("jinmei_worker_restarts", "Worker processes started "
                                       "again after an exit (SIGHUP's restarts not counted).",
                                       labels=["worker"])
        owner = GaugeMetricFamily("jinmei_mine_worker", "1 for the worker that owns each mine "
                                  "(the assignment).", labels=["mine", "worker"])
        for state in states:
            restarts.add_metric([str(state.index)], state.restarts)
            for mine in state.mines:
                owner.add_metric([mine, str(state.index)], 1)
        yield restarts
        yield owner

    @staticmethod
    def _strays(strays: StrayWatcher) -> Iterator[Metric]:
        """The watcher's counts as one process counts them: ``mine=""``, rejects by reason."""
        if strays.messages:
            messages = CounterMetricFamily("jinmei_messages_received", "MQTT telemetry "
                                           "messages taken, by mine.", labels=["mine"])
            messages.add_metric([""], strays.messages)
            yield messages
        if strays.rejects_by_reason:
            rejects = CounterMetricFamily("jinmei_rejects", "Refused messages and readings, "
                                          "by reject reason.", labels=["reason"])
            for reason, n in sorted(strays.rejects_by_reason.items()):
                rejects.add_metric([str(reason)], n)
            yield rejects


def parent_server(deployment: Callable[[], Deployment], parent: WorkerParent,
                  strays: StrayWatcher | None = None) -> OpsServer:
    """The parent's endpoint on ``[http] listen`` (not yet listening); ``deployment()`` is the
    running configuration (the console's accounts; a reload may replace it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ParentCollector(parent, strays))
    current = deployment()
    server = OpsServer(current.http.listen, {
        "/healthz": lambda: json_response(*health(parent)),
        "/readyz": lambda: json_response(*readiness(parent)),
        "/metrics": lambda: Response(200, CONTENT_TYPE_LATEST, prometheus_text(registry)),
    }, source_file=current.source_file)
    if current.console.users:
        from jinmei.console import mount
        from jinmei.console.relay import RelayConsole

        mount(server, RelayConsole(deployment, parent))
    return server
