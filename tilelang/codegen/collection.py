"""Pausing Python's cyclic garbage collector while an emitter builds a large object graph.

The LLVM emitter builds ~10 llvmlite objects per instruction (50k instructions for a
large kernel), and all of them live until the module is printed. The collector traces
the young generations every few hundred allocations and the whole heap each time the
survivors grow by a quarter, so it traced the same half-built module again and again:
~40% of an emission. Paused, the objects are traced once, by the first collection after
the emission, when the module's reference cycles are already garbage. Nothing else
changes: no object is freed later than that collection would free it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_paused = 0  # bodies running with the collection paused (nested or in other threads)
_resume = False  # whether the first of them found the collection enabled


@contextmanager
def collection_paused() -> Iterator[None]:
    """Runs the body with automatic collection off. Nested and concurrent uses turn it
    back on when the last one ends, and only if it was on when the first began."""
    global _paused, _resume
    with _LOCK:
        if not _paused:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _LOCK:
            _paused -= 1
            if not _paused and _resume:
                gc.enable()
