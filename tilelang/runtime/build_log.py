"""What the compiler says while it builds: one line a build on the ``tilelang`` logger.

A library call's first use compiles its kernels (seconds on a first run, a fraction of
a second a kernel from the disk cache), silently unless asked. Each build that runs
the compiler (the passes, the lowering, NVRTC or LLVM) logs at INFO, after it, what it
built, for which target and how long it took; a build read from the disk cache logs at
DEBUG. Python's logging shows them (`logging.getLogger("tilelang").setLevel(INFO)`
with a handler), or the environment variable ``TILELANG_LOG=1`` (read at import)
prints them to stderr as ``tilelang: built <kernel>(<constexprs>) for <target> in <s> s
(<stages>)``; ``TILELANG_LOG=debug`` prints the cache hits too. A CPU build lowers when
it is compiled and makes its machine code at its first launch: one INFO line then,
both times added.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = logging.getLogger("tilelang")

#: The values of TILELANG_LOG that print the builds, and "debug", which prints the disk
#: cache's hits too (anything else: the logger as the application configured it).
_ON = {"1", "true", "on", "info", "build", "builds"}
_DEBUG = {"debug", "2"}

#: The longest constexpr list a line shows (a kernel's flags and tiles).
_LABEL_CHARS = 160


def describe(kernel: str, constexprs: tuple[tuple[str, object], ...]) -> str:
    """ "paged_split_kernel(KT=u4, BS=16, HD=128, ...)": which build a line is about."""
    items = ", ".join(f"{name}={value}" for name, value in constexprs)
    if len(items) > _LABEL_CHARS:
        items = items[: _LABEL_CHARS - 3].rsplit(", ", 1)[0] + ", ..."
    return f"{kernel}({items})" if items else kernel


def configure(environ: dict[str, str] | None = None) -> logging.Handler | None:
    """Prints the builds to stderr when TILELANG_LOG asks (module docstring): the
    handler added, or None. Idempotent: a second call adds no second handler."""
    value = (os.environ if environ is None else environ).get("TILELANG_LOG", "").strip().lower()
    if value not in _ON | _DEBUG:
        return None
    level = logging.DEBUG if value in _DEBUG else logging.INFO
    for handler in LOGGER.handlers:
        if getattr(handler, "_tilelang_log", False):
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tilelang: %(message)s"))
    handler._tilelang_log = True  # type: ignore[attr-defined]
    LOGGER.addHandler(handler)
    if LOGGER.level == logging.NOTSET or LOGGER.level > level:
        LOGGER.setLevel(level)
    return handler


def built(kernel: str, target: str, seconds: float, how: str) -> None:
    """Logs a build that ran the compiler for `seconds`."""
    LOGGER.info("built %s for %s in %.2f s (%s)", kernel, target, seconds, how)


def lowered(kernel: str, target: str, seconds: float) -> None:
    """Logs a CPU build's passes and lowering; its INFO line comes with its machine code,
    which a CPU build compiles at its first launch (`built`, the two times added)."""
    LOGGER.debug("lowered %s for %s in %.2f s", kernel, target, seconds)


def loaded(kernel: str, target: str) -> None:
    """Logs a build read from the disk cache."""
    LOGGER.debug("loaded %s for %s from the disk cache", kernel, target)


configure()
