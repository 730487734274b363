"""Shared test helpers: the examples directory is importable as plain modules."""

import importlib
import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red run must mean a change broke something);
# TILELANG_HYPOTHESIS=explore draws new ones, to hunt for bugs that become regression tests.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("TILELANG_HYPOTHESIS", "ci"))

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


@pytest.fixture
def example():
    return load_example
