"""The workers' parent serves the operator endpoint for all of them (jinmei.parent,
jinmei.console.relay): /readyz and /healthz name the worker that is down or hung and recover
when it is back, /metrics carries every worker's series labelled with its worker, and the
console works for every mine through the parent — one login, each mine's pages and forms from
the worker that owns it — with every check holding: a dispatcher of one mine cannot read or
act on another's, a regulator cannot act, a form without the session's token is refused, and
a worker's own port refuses anyone but its parent.

Real processes (``jinmei run`` with ``workers = 2``), a real Mosquitto, real HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alerts.record import AlertRecord
from config.loader import DEFAULT_DEPLOYMENT
from ingest.codec import encode_telemetry
from jinmei.console.accounts import hash_password
from jinmei.parent import ParentCollector, readiness
from jinmei.workers import WorkerState
from tests.servers import Mosquitto, free_port, scripted_http_server, wait_until
from tests.test_console import Session, _csrf
from tests.test_service import send
from tests.test_workers import stop, stored, telemetry, worker_pid

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = Path(DEFAULT_DEPLOYMENT).parent
PASSWORDS = {"wang": "wang-password-1", "li": "li-password-1", "zhao": "zhao-password-1"}


# ── the parent's answers from given worker states, fast ─────────────────────────────────

class _Parent:
    """What jinmei.parent reads of a WorkerParent: the workers' states."""

    def __init__(self, states: list[WorkerState]) -> None:
        self._states = states

    def states(self) -> list[WorkerState]:
        return self._states


def test_readiness_names_a_worker_that_is_down_and_when_it_is_started_again() -> None:
    with scripted_http_server(lambda n, body: (200, {}, b'{"ok": true}')) as ready:
        port = int(ready.url.rsplit(":", 1)[1])
        parent = _Parent([WorkerState(0, ("dayan",), 4242, port, 0, None),
                          WorkerState(1, ("qipanjing",), None, port + 1, 2, 1.26)])
        ok, payload = readiness(parent)  # type: ignore[arg-type]
    assert not ok
    assert payload["waiting_for"] == [
        "worker 1 (qipanjing): down, started again in 1.3 s (restarts: 2)"]
    assert [w["ready"] for w in payload["workers"]] == [True, False]  # type: ignore[attr-defined]


def test_metrics_of_workers_merge_with_help_once_and_a_worker_label_on_every_sample() -> None:
    def worker_text(stored_: int) -> bytes:
        return (b"# HELP jinmei_readings_stored_total Readings committed.\n"
                b"# TYPE jinmei_readings_stored_total counter\n"
                b'jinmei_readings_stored_total{mine="m%d"} %d.0\n'
                b"# HELP process_open_fds Open fds.\n# TYPE process_open_fds gauge\n"
                b"process_open_fds 7.0\n") % (stored_, stored_)

    with scripted_http_server(lambda n, body: (200, {}, worker_text(5))) as w0, \
            scripted_http_server(lambda n, body: (200, {}, worker_text(7))) as w1:
        ports = [int(s.url.rsplit(":", 1)[1]) for s in (w0, w1)]
        parent = _Parent([WorkerState(0, ("m5",), 1, ports[0], 0, None),
                          WorkerState(1, ("m7",), 2, ports[1], 3, None),
                          WorkerState(2, ("m9",), None, None, 1, 0.5)])
        families = list(ParentCollector(parent).collect())  # type: ignore[arg-type]
    names = [f.name for f in families]
    assert len(names) == len(set(names)), "each family (HELP, TYPE) once"
    by_name = {f.name: f for f in families}
    stored_ = by_name["jinmei_readings_stored"].samples
    assert {(s.labels["worker"], s.labels["mine"], s.value) for s in stored_} == {
        ("0", "m5", 5.0), ("1", "m7", 7.0)}
    fds = by_name["process_open_fds"].samples
    assert sorted(s.labels.get("worker", "parent") for s in fds) == ["0", "1", "parent"]
    assert {s.labels["worker"]: s.value for s in by_name["jinmei_worker_up"].samples} == {
        "0": 1, "1": 1, "2": 0}
    assert {s.labels["worker"]: s.value
            for s in by_name["jinmei_worker_restarts"].samples} == {"0": 0, "1": 3, "2": 1}
    assert {(s.labels["mine"], s.labels["worker"])
            for s in by_name["jinmei_mine_worker"].samples} == {("m5", "0"), ("m7", "1"),
                                                                 ("m9", "2")}
    # the README lists the parent's own families: the operator's contract, as for the others
    own = {f.name + ("_total" if f.type == "counter" else "") for f in families
           if f.name.startswith("jinmei_") and f.name != "jinmei_readings_stored"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert own == set(re.findall(r"^  - `(jinmei_\w+)", readme, re.MULTILINE))


# ── jinmei run with two workers ──────────────────────────────────────────────────────────

def get(port: int, path: str, timeout_s: float = 15.0) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        body = reply.read().decode()
        return reply.status, (json.loads(body) if path in ("/readyz", "/healthz") else body)
    finally:
        conn.close()


def metric(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample ``name`` of the parent's /metrics by its sorted labels."""
    text = get(port, "/metrics")[1]
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


@dataclass(frozen=True)
class Running:
    """``jinmei run`` with 2 workers (dayan → worker 0, qipanjing → worker 1) on ``broker``,
    its endpoint on ``port``, its files in ``work``."""

    proc: subprocess.Popen[bytes]
    port: int
    work: Path
    broker: Mosquitto

    @property
    def log(self) -> str:
        return (self.work / "jinmei.log").read_text()

    @property
    def tail(self) -> str:
        """The end of the log, for a failure's message."""
        return self.log[-3000:]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One service for this module's tests (each start costs two interpreters and seconds of
    a CI run), stopped with its workers whatever the tests did; the test that kills a worker
    runs last."""
    work = tmp_path_factory.mktemp("parent")
    broker = Mosquitto(work)
    broker.start()
    port = free_port()
    users = "".join(
        f'[[console.users]]\nname = "{name}"\nrole = "{role}"\n{mines}'
        f'password_hash = "{hash_password(PASSWORDS[name])}"\n'
        for name, role, mines in (("wang", "dispatcher", 'mines = ["qipanjing"]\n'),
                                  ("li", "dispatcher", 'mines = ["dayan"]\n'),
                                  ("zhao", "regulator", "")))
    config = work / "jinmei.toml"
    config.write_text(
        f'mines = ["{SHIPPED / "mines" / "dayan.toml"}", '
        f'"{SHIPPED / "mines" / "qipanjing.toml"}"]\n'
        f'[broker]\nurl = "{broker.url}"\nclient_id = "jinmei-parent-test"\n'
        f'[store]\nurl = "sqlite:///{work / "readings.db"}"\n'
        f'[ingest]\nstate_dir = "{work / "state"}"\nworkers = 2\n'
        f'[http]\nlisten = "127.0.0.1:{port}"\n{users}', encoding="utf-8")
    with (work / "jinmei.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "jinmei.cli", "run", "--config",
                                 str(config)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    service = Running(proc, port, work, broker)
    try:
        assert wait_until(lambda: ready(port), 60), service.tail
        yield service
    finally:
        code = stop(proc)
        broker.stop()
        assert code == 0, service.tail


def ready(port: int) -> bool:
    try:
        return get(port, "/readyz")[0] == 200
    except OSError:
        return False


@pytest.mark.integration
def test_console_through_the_parent_acks_at_the_second_worker_and_refuses_every_trespass(
        running: Running) -> None:
    base = f"http://127.0.0.1:{running.port}"
    now = int(time.time() * 1000)
    send(running.broker, [("jinmei/qipanjing/telemetry/S01",
                      encode_telemetry(now, [("T1-1101", 1.62, "ok")])),
                     ("jinmei/dayan/telemetry/S01",
                      encode_telemetry(now, [("T1-1201", 1.62, "ok")]))])
    worker_state = {m: running.work / "state" / f"worker-{k}" / "alerts.db"
                    for k, m in enumerate(("dayan", "qipanjing"))}

    def power_off(mine: str) -> str | None:
        record = AlertRecord(worker_state[mine])
        try:
            return next((a.id for a in record.open_episodes()
                         if a.rule == "limit_power_off"), None)
        finally:
            record.close()
    assert wait_until(lambda: power_off("qipanjing") and power_off("dayan"), 30)
    qipanjing, dayan = power_off("qipanjing"), power_off("dayan")

    # wang (dispatcher of qipanjing, owned by worker 1): one login at the parent
    wang = Session(base)
    assert wang.login("wang", PASSWORDS["wang"]) == 303
    status, overview = wang.request("/console/")
    assert status == 200 and 'id="mine-qipanjing"' in overview
    assert 'id="mine-dayan"' not in overview and "data-unavailable" not in overview
    status, page = wang.request("/console/mine/qipanjing")
    assert status == 200 and f'data-episode="{qipanjing}"' in page
    # the live event stream comes through the parent as well
    with wang.opener.open(f"{base}/console/mine/qipanjing/events", timeout=20) as events:
        assert events.headers["Content-Type"].startswith("text/event-stream")
        assert events.readline() == b"event: points\n"
    status, _ = wang.request("/console/mine/qipanjing/ack", {
        "csrf": _csrf(page), "episode": qipanjing, "note": "撤人 evacuated"})
    assert status == 303
    record = AlertRecord(worker_state["qipanjing"])
    try:
        assert record.acknowledgements([qipanjing])[qipanjing][0] == "wang"
    finally:
        record.close()

    # li, dispatcher of dayan (worker 0), with a valid session and token of his own
    li = Session(base)
    assert li.login("li", PASSWORDS["li"]) == 303
    status, page = li.request("/console/mine/dayan")
    assert status == 200
    token = _csrf(page)
    assert li.request("/console/mine/qipanjing")[0] == 403
    assert li.request("/console/mine/qipanjing/events")[0] == 403
    assert li.request("/console/mine/qipanjing/ack", {"csrf": token, "episode": qipanjing,
                                                      "note": "x"})[0] == 403
    # another mine's episode through his own mine's address: that worker has no such alert
    assert li.request("/console/mine/dayan/ack", {"csrf": token, "episode": qipanjing,
                                                  "note": "x"})[0] == 404
    assert li.request("/console/mine/dayan/ack", {"episode": dayan, "note": "no token"})[0] \
        == 403
    assert li.request("/console/mine/dayan/ack", {"csrf": "forged", "episode": dayan})[0] \
        == 403
    assert li.request("/console/cards?mines=qipanjing")[0] == 404  # the workers' route only

    # the regulator reads both mines and may change nothing
    zhao = Session(base)
    assert zhao.login("zhao", PASSWORDS["zhao"]) == 303
    status, overview = zhao.request("/console/")
    assert 'id="mine-qipanjing"' in overview and 'id="mine-dayan"' in overview
    status, page = zhao.request("/console/mine/dayan")
    assert status == 200
    assert zhao.request("/console/mine/dayan/ack", {"csrf": _csrf(page), "episode": dayan,
                                                    "note": "x"})[0] == 403

    # a worker's own port: refused without the parent's key, whatever the headers say
    worker = next(w for w in json.loads(urllib.request.urlopen(
        f"{base}/healthz", timeout=15).read())["workers"] if w["worker"] == 0)
    forged = http.client.HTTPConnection("127.0.0.1", worker["port"], timeout=10)
    forged.request("GET", "/console/mine/dayan", headers={"X-Jinmei-User": "li"})
    assert forged.getresponse().status == 403
    forged.close()
    forged = http.client.HTTPConnection("127.0.0.1", worker["port"], timeout=10)
    forged.request("POST", "/console/mine/dayan/ack", "csrf=x&episode=" + dayan, {
        "X-Jinmei-User": "li", "X-Jinmei-Csrf": "x", "X-Jinmei-Worker-Key": "guess",
        "Content-Type": "application/x-www-form-urlencoded"})
    assert forged.getresponse().status == 403
    forged.close()
    record = AlertRecord(worker_state["dayan"])
    try:
        assert record.acknowledgements([dayan]) == {}, "nothing got through"
    finally:
        record.close()


@pytest.mark.integration
def test_parent_endpoint_answers_for_every_worker_and_follows_a_killed_one(
        running: Running) -> None:
    proc, port = running.proc, running.port
    status, payload = get(port, "/healthz")
    assert status == 200 and [w["mines"] for w in payload["workers"]] == [["dayan"],
                                                                          ["qipanjing"]]

    # /metrics: every worker's readings, each series with its worker
    db = running.work / "readings.db"
    before = stored(db)
    start_ms = int(time.time() * 1000) - 600_000
    send(running.broker, telemetry("dayan", range(3), start_ms)
         + telemetry("qipanjing", range(4), start_ms))
    total = {m: before.get(m, 0) + n * (len(telemetry(m, range(1), 0)[0][1].split(b'"sensor"'))
                                        - 1) for m, n in (("dayan", 3), ("qipanjing", 4))}
    assert wait_until(lambda: stored(db) == total, 30), (stored(db), total)

    def by_worker() -> dict[tuple[tuple[str, str], ...], float]:
        return metric(port, "jinmei_readings_stored_total")
    assert wait_until(lambda: sum(by_worker().values()) == sum(total.values()), 15), by_worker()
    assert by_worker() == {(("mine", "dayan"), ("worker", "0")): total["dayan"],
                           (("mine", "qipanjing"), ("worker", "1")): total["qipanjing"]}
    text = get(port, "/metrics")[1]
    assert text.count("# HELP jinmei_readings_stored_total ") == 1
    assert text.count("# TYPE process_resident_memory_bytes ") == 1
    assert metric(port, "jinmei_mine_worker") == {(("mine", "dayan"), ("worker", "0")): 1,
                                                  (("mine", "qipanjing"), ("worker", "1")): 1}
    assert set(metric(port, "jinmei_worker_up").values()) == {1}

    # worker 1 hangs: the parent says which, and does not hang with it
    victim = worker_pid(proc.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGSTOP)
    try:
        status, payload = get(port, "/readyz")
        assert status == 503
        assert "worker 1 (qipanjing): no answer within 3 s" in payload["waiting_for"]
        status, payload = get(port, "/healthz")
        assert status == 503
        assert (1, "worker_unanswered") in [(r["worker"], r["reason"]) for r in payload["reasons"]]
    finally:
        os.kill(victim, signal.SIGKILL)  # then killed: the parent starts it again
    assert wait_until(lambda: worker_pid(proc.pid, 1) not in (None, victim), 30)
    assert wait_until(lambda: ready(port), 60), running.tail
    assert metric(port, "jinmei_worker_restarts_total") == {(("worker", "0"),): 0,
                                                            (("worker", "1"),): 1}
    assert "worker 1 (qipanjing) exited (killed by SIGKILL)" in running.log
