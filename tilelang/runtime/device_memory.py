"""The device memory `tilelang.DeviceBuffer` hands out: freed buffers cached for reuse, so
that a library call's outputs and scratch (allocated every call, freed once dropped)
cost no driver call in steady state.

`cuMemFree` waits for the whole device before it returns, and `cuMemAlloc` is a driver
call of its own: a call that allocated its output and dropped the last one paid both.
Here a freed buffer's memory goes to a pending list, untouched, since work may still use
it — a kernel tilelang launched on any stream, or another library's, handed the buffer
through `__cuda_array_interface__`. It is handed out again only after a
`cuCtxSynchronize` made after it was freed: everything queued before then has finished,
on every stream of the context (torch's and cupy's share it, the primary context). That
synchronization comes once `SYNC_AFTER` buffers (or `SYNC_BYTES` bytes) are pending,
and only when an allocation would otherwise go to the driver: one wait on the device
per `SYNC_AFTER` buffers, where every free waited before. A stream-ordered free
(`cuMemFreeAsync`) would wait on nothing, but only for work on streams ordered after
the one it is queued on: a torch side stream that reads the buffer is not.

Memory is reused at exactly its size (a decode step's shapes repeat). What is cached
beyond `CACHED_BYTES` goes back to the driver when pending memory settles; an
allocation the driver refuses for lack of memory first returns everything cached and
tries once more; `release_cached` returns it all.

One cache per driver object (`gpu.driver()`; tests put stubs in its place, whose
pointers must not outlive them). Frees come from finalizers, which may run inside an
allocation on the same thread: a free takes no lock (a deque append).
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Callable
from typing import Any

#: Pending (freed, maybe still in use) buffers that make the next allocation the driver
#: would serve synchronize first and take them over.
SYNC_AFTER = 64

#: The same, in bytes.
SYNC_BYTES = 256 << 20

#: Bytes kept for reuse past a synchronization; the rest goes back to the driver.
CACHED_BYTES = 1 << 30


class DeviceMemory:
    """One driver's device memory for `DeviceBuffer`s (the module docstring). `check`
    turns a driver call's outcome into its values or raises (`gpu.check`)."""

    def __init__(self, cu: Any, check: Callable[[str, Any], Any]) -> None:
        self.cu = cu
        self.check = check
        self._lock = threading.Lock()
        self._pending: collections.deque[tuple[int, int]] = collections.deque()
        self._free: dict[int, list[int]] = {}  # bytes -> pointers nothing uses
        self._free_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes freed but not yet known to be unused (summed over a copy: a finalizer
        may free more meanwhile)."""
        return sum(nbytes for nbytes, _ in list(self._pending))

    @property
    def cached_bytes(self) -> int:
        """Bytes held for reuse: pending and free."""
        return self.pending_bytes + self._free_bytes

    def allocate(self, nbytes: int) -> int:
        """The address of `nbytes` of device memory no work uses."""
        with self._lock:
            pointer = self._take(nbytes)
            if pointer is None and (
                len(self._pending) >= SYNC_AFTER or self.pending_bytes >= SYNC_BYTES
            ):
                self._settle()
                pointer = self._take(nbytes)
            if pointer is None:
                pointer = self._from_driver(nbytes)
        return pointer

    def release(self, nbytes: int, pointer: int) -> None:
        """`pointer` (`allocate(nbytes)`'s) freed: reused once the device has synchronized
        after this call."""
        self._pending.append((nbytes, pointer))

    def release_cached(self) -> None:
        """Every cached buffer back to the driver (after a synchronization: nothing
        uses them then)."""
        with self._lock:
            self._settle(keep=0)

    def _take(self, nbytes: int) -> int | None:
        found = self._free.get(nbytes)
        if not found:
            return None
        self._free_bytes -= nbytes
        return found.pop()

    def _settle(self, keep: int | None = None) -> None:
        """Synchronizes, then makes free what was pending before it; frees what is cached
        past `keep` bytes (default `CACHED_BYTES`)."""
        keep = CACHED_BYTES if keep is None else keep
        settled = len(self._pending)  # frees after the synchronization began stay pending
        self.check("cuCtxSynchronize", self.cu.cuCtxSynchronize())
        for _ in range(settled):
            nbytes, pointer = self._pending.popleft()
            self._free.setdefault(nbytes, []).append(pointer)
            self._free_bytes += nbytes
        for nbytes, pointers in list(self._free.items()):
            while pointers and self._free_bytes > keep:
                self.check("cuMemFree", self.cu.cuMemFree(pointers.pop()))
                self._free_bytes -= nbytes
            if not pointers:
                del self._free[nbytes]

    def _from_driver(self, nbytes: int) -> int:
        outcome = self.cu.cuMemAlloc(nbytes)
        out_of_memory = getattr(self.cu.CUresult, "CUDA_ERROR_OUT_OF_MEMORY", None)
        if outcome[0] == out_of_memory and (self._pending or self._free):
            self._settle(keep=0)
            outcome = self.cu.cuMemAlloc(nbytes)
        return int(self.check("cuMemAlloc", outcome))


_MEMORY: weakref.WeakKeyDictionary[Any, DeviceMemory] = weakref.WeakKeyDictionary()
_last: tuple[Any, DeviceMemory | None] = (None, None)


def of(cu: Any, check: Callable[[str, Any], Any]) -> DeviceMemory:
    """`cu`'s `DeviceMemory` (made at its first allocation)."""
    global _last
    driver, memory = _last
    if driver is cu and memory is not None:
        return memory
    memory = _MEMORY.get(cu)
    if memory is None:
        memory = _MEMORY[cu] = DeviceMemory(cu, check)
    _last = (cu, memory)
    return memory
