"""``jinmei run`` in this process with one fault injected into its ingest worker, for the
supervision tests (tests/test_supervision.py).

    python -m tests.faulty_service hang|die run --config FILE --broker URL --store URL

The fault is a detector: the suite's first member (the limit detector) wrapped so that a batch
holding a reading of exactly :data:`POISON` makes the ingest worker hang for good (``hang``: a
stall) or end its thread with a ``BaseException`` that no per-message isolation catches
(``die``). It is handed to the pipeline by replacing ``jinmei.pipeline.build_detectors`` here;
nothing in jinmei's own code paths knows of it.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

import jinmei.pipeline
from config.readings import ReadingBatch
from detectors.suite import DetectorSuite
from jinmei.cli import main

POISON = 3.21  # a methane reading no test feed sends otherwise


class WorkerKilled(BaseException):
    """Ends the ingest thread the way an interpreter-level failure would."""


class FaultyDetector:
    """A real detector, except on a poisoned batch."""

    def __init__(self, inner: Any, mode: str) -> None:
        self.inner = inner
        self.mode = mode

    def update(self, batch: ReadingBatch, now: int) -> Any:
        if np.any(batch.value == POISON):
            if self.mode == "hang":
                threading.Event().wait()  # never set: the worker never comes back
            raise WorkerKilled("injected by tests/faulty_service.py")
        return self.inner.update(batch, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


if __name__ == "__main__":
    mode, argv = sys.argv[1], sys.argv[2:]
    build = jinmei.pipeline.build_detectors

    def faulty(registry: Any, config: Any = None) -> DetectorSuite:
        first, *others = build(registry, config).members
        return DetectorSuite([FaultyDetector(first, mode), *others])

    jinmei.pipeline.build_detectors = faulty
    sys.exit(main(argv))
