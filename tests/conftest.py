"""Shared test helpers: the examples directory is importable as plain modules, and the
SASS disassembler the tests that read cubins need (`disassembler`)."""

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


def require_disassembler() -> None:
    """Fails (never skips) without a SASS disassembler: the test extra installs one
    (nvidia-cuda-nvdisasm), so its absence is a broken install, not a reason to pass."""
    from tilelang.runtime import sass

    assert sass.find_disassembler() is not None, (
        "no SASS disassembler: install the test extra (pip install -e '.[test]')"
    )


@pytest.fixture
def disassembler() -> None:
    """`require_disassembler` for a test: `@pytest.mark.usefixtures("disassembler")`."""
    require_disassembler()
