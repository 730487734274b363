"""What the compiler says while it builds: one line a build on the ``tilelang`` logger.

A library call's first use compiles its kernels (seconds on a first run, a fraction of
a second a kernel from the disk cache), silently unless asked. Each build that runs
the compiler (the passes, the lowering, NVRTC or LLVM) logs at INFO, after it, what it
built, for which target and how long it took; a build read from the disk cache logs at
DEBUG. Python's logging shows them (`logging.getLogger("tilelang").setLevel(INFO)`
with a handler), or the environment variable ``TILELANG_LOG=1`` (read at import)
prints them to stderr as ``tilelang: built <kernel> for <target> in <s> s``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOGGER = logging.getLogger("tilelang")

#: The values of TILELANG_LOG that print the builds (anything else: the logger as the
#: application configured it).
_ON = {"1", "true", "on", "info", "build", "builds"}


def configure(environ: dict[str, str] | None = None) -> logging.Handler | None:
    """Prints the builds to stderr when TILELANG_LOG asks (module docstring): the
    handler added, or None. Idempotent: a second call adds no second handler."""
    value = (os.environ if environ is None else environ).get("TILELANG_LOG", "")
    if value.strip().lower() not in _ON:
        return None
    for handler in LOGGER.handlers:
        if getattr(handler, "_tilelang_log", False):
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tilelang: %(message)s"))
    handler._tilelang_log = True  # type: ignore[attr-defined]
    LOGGER.addHandler(handler)
    if LOGGER.level == logging.NOTSET or LOGGER.level > logging.INFO:
        LOGGER.setLevel(logging.INFO)
    return handler


def built(kernel: str, target: str, start: float, how: str) -> None:
    """Logs a build that ran the compiler, begun at `start` (`time.perf_counter()`)."""
    if LOGGER.isEnabledFor(logging.INFO):
        seconds = time.perf_counter() - start
        LOGGER.info("built %s for %s in %.2f s (%s)", kernel, target, seconds, how)


def loaded(kernel: str, target: str) -> None:
    """Logs a build read from the disk cache."""
    LOGGER.debug("loaded %s for %s from the disk cache", kernel, target)


configure()
