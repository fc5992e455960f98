"""A jinmei service with one detector of this file's making that kills the process
(``os._exit(1)``, as a segfault or the OOM killer would: no ``finally``, no cleanup) whenever a
batch holds a reading of one sensor — for tests/test_isolation.py, which restarts it until the
message that kills it is quarantined.

    python -m tests.crashing_service BROKER_URL WORKDIR MINE/SENSOR

Prints ``ready`` once subscribed; serves until SIGTERM, then stops cleanly (exit 0).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from config.loader import load_deployment
from config.readings import ReadingBatch
from detectors.base import Detection
from detectors.suite import DetectorSuite, build_detectors
from jinmei.service import Service


class KillsTheProcess:
    """A detector whose every update on a reading of ``sensor`` ends the process at once."""

    conditions: tuple[str, ...] = ()

    def __init__(self, sensor: int) -> None:
        self.sensor = sensor

    def update(self, batch: ReadingBatch, now: int) -> Detection:
        if (batch.sensor == self.sensor).any():
            os._exit(1)
        return Detection([], np.zeros(len(batch), dtype=np.uint16))

    def active(self) -> list[tuple[int, str]]:
        return []

    def restore(self, active: list[tuple[int, str]]) -> None:
        pass


def main(broker_url: str, workdir: str, sensor_key: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    shipped = load_deployment(None)
    work = Path(workdir)
    deployment = dataclasses.replace(
        shipped,
        broker=dataclasses.replace(shipped.broker, url=broker_url, client_id="jinmei-crashing"),
        store=dataclasses.replace(shipped.store, url=f"sqlite:///{work / 'readings.db'}"),
        ingest=dataclasses.replace(shipped.ingest, state_dir=str(work / "state")),
        http=dataclasses.replace(shipped.http, listen=""))  # no endpoint: never a port clash
    registry = deployment.registry
    suite = build_detectors(registry, deployment.detectors)
    killer = KillsTheProcess(registry.index[sensor_key])
    service = Service(deployment, detectors=DetectorSuite([*suite.members, killer]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not service.start(wait_subscribed_s=15):
        return 1
    print("ready", flush=True)
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
