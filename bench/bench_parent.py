"""Benchmark: what the workers' parent adds to the operator endpoint.

Starts ``jinmei run`` with two workers (the two pilot mines, a console account) on a real
Mosquitto, then times, alternating, the same request through the parent and to worker 1's
own loopback port: ``/metrics`` (the parent asks both workers and merges), ``/readyz`` (the
parent asks both), and a console mine page (the parent checks the session and relays the
worker's page; the worker is asked directly with the parent's key, which the bench reads from
the parent's environment). Prints the median and 90th percentile of each, in milliseconds.

Run from the repository root: ``python -m bench.bench_parent [--requests 200]``
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from config.loader import DEFAULT_DEPLOYMENT
from jinmei.console.accounts import hash_password
from jinmei.http import WORKER_KEY_ENV
from tests.servers import Mosquitto, free_port, wait_until
from tests.test_console import Session

SHIPPED = Path(DEFAULT_DEPLOYMENT).parent


def timed(port: int, path: str, headers: dict[str, str]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    start = time.perf_counter()
    conn.request("GET", path, headers=headers)
    reply = conn.getresponse()
    reply.read()
    elapsed = time.perf_counter() - start
    conn.close()
    assert reply.status == 200, (path, reply.status)
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = Mosquitto(work)
        broker.start()
        port = free_port()
        config = work / "jinmei.toml"
        config.write_text(
            f'mines = ["{SHIPPED / "mines" / "dayan.toml"}", '
            f'"{SHIPPED / "mines" / "qipanjing.toml"}"]\n'
            f'[broker]\nurl = "{broker.url}"\nclient_id = "bench-parent"\n'
            f'[store]\nurl = "sqlite:///{work / "readings.db"}"\n'
            f'[ingest]\nstate_dir = "{work / "state"}"\nworkers = 2\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n'
            f'[[console.users]]\nname = "wang"\nrole = "admin"\n'
            f'password_hash = "{hash_password("bench-password")}"\n', encoding="utf-8")
        proc = subprocess.Popen([sys.executable, "-m", "jinmei.cli", "run", "--config",
                                 str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            assert wait_until(lambda: _ready(port), 60), "the parent did not become ready"
            worker = _worker_port(port)
            session = Session(base)
            assert session.login("wang", "bench-password") == 303
            cookie = next(c for c in session.opener.handlers
                          if hasattr(c, "cookiejar")).cookiejar  # type: ignore[attr-defined]
            token = next(c.value for c in cookie if c.name == "jinmei_session")
            worker_key = _key(proc.pid)
            cases = {
                "/metrics": ({}, {}),
                "/readyz": ({}, {}),
                "/console/mine/qipanjing": ({"Cookie": f"jinmei_session={token}"},
                                            {"X-Jinmei-Worker-Key": worker_key,
                                             "X-Jinmei-User": "wang"}),
            }
            print(f"{args.requests} requests each, alternating parent / worker 1 "
                  f"(load average {os.getloadavg()[0]:.1f})")
            for path, (via_parent, direct) in cases.items():
                parent_ms, worker_ms = [], []
                for _ in range(args.requests):
                    parent_ms.append(timed(port, path, via_parent))
                    worker_ms.append(timed(worker, path, direct))
                print(f"{path:<26} parent median {statistics.median(parent_ms):6.1f} ms, "
                      f"p90 {_p90(parent_ms):6.1f} | worker median "
                      f"{statistics.median(worker_ms):6.1f} ms, p90 {_p90(worker_ms):6.1f}")
        finally:
            proc.terminate()
            proc.wait(60)
            broker.stop()


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _worker_port(port: int) -> int:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    workers = json.loads(conn.getresponse().read())["workers"]
    conn.close()
    return int(next(w["port"] for w in workers if w["worker"] == 1))


def _key(parent_pid: int) -> str:
    """The parent's key, as its workers got it (the worker's environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent_pid:
            for item in environ:
                if item.startswith(WORKER_KEY_ENV.encode() + b"="):
                    return item.split(b"=", 1)[1].decode()
    raise RuntimeError("no worker of the parent carries the key")


if __name__ == "__main__":
    main()
