"""The ``Examples`` sections of the detector docstrings run, so that they can never rot.

style.md (ADTK / River) asks every detector's numpydoc docstring for a short runnable example;
these run each module of ``detectors/`` through the stdlib ``doctest``. No example may fail,
and every module whose detector the deployment runs (``build_detectors``), and the suite's own,
must have examples: a detector added without one fails here.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import detectors
from detectors.examples import longwall
from detectors.suite import build_detectors

MODULES = sorted(f"detectors.{m.name}" for m in pkgutil.iter_modules(detectors.__path__))
WITH_DETECTOR = {type(d).__module__ for d in build_detectors(longwall()).members} | {
    "detectors.suite"}


def test_every_detector_module_is_found() -> None:
    named = {f"detectors.{m}" for m in
             ("limits", "faults", "trend", "drift", "silence", "interlocks", "suite")}
    assert named <= WITH_DETECTOR
    assert set(MODULES) >= WITH_DETECTOR


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    if name in WITH_DETECTOR:
        assert result.attempted > 0, f"{name}: its detector's docstring has no Examples section"
