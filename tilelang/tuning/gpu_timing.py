"""Times one GPU launch with CUDA events, the L2 cache flushed before each launch.

Only a process that tunes on a GPU loads this. The flush writes a buffer of twice the
L2 size (at least 256 MiB) with `cuMemsetD8Async` on the launch stream, outside the
timed events; the start event is recorded after the flush, so the host's argument
checks overlap the flush instead of showing up as idle GPU time.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from tilelang.runtime import gpu

FLUSH_BYTES = 256 << 20


class _Flush:
    def __init__(self) -> None:
        cu = gpu.driver()
        gpu._context()
        self.bytes = FLUSH_BYTES
        self.pointer = gpu.check("cuMemAlloc", cu.cuMemAlloc(self.bytes))

    def run(self, stream: int) -> None:
        cu = gpu.driver()
        gpu.check("cuMemsetD8Async", cu.cuMemsetD8Async(self.pointer, 0, self.bytes, stream))

    def free(self) -> None:
        gpu.check("cuMemFree", gpu.driver().cuMemFree(self.pointer))


def time_launches(launch: Callable[[], None], stream: int, warmup: int, rep: int) -> float:
    """The median, in seconds, of `rep` timed calls of `launch` (after `warmup`), each
    preceded by an L2 flush on `stream`."""
    cu = gpu.driver()
    flush = _Flush()
    start = gpu.check("cuEventCreate", cu.cuEventCreate(0))
    end = gpu.check("cuEventCreate", cu.cuEventCreate(0))
    try:
        for _ in range(warmup):
            launch()
        times = []
        for _ in range(rep):
            flush.run(stream)
            gpu.check("cuEventRecord", cu.cuEventRecord(start, stream))
            launch()
            gpu.check("cuEventRecord", cu.cuEventRecord(end, stream))
            gpu.check("cuEventSynchronize", cu.cuEventSynchronize(end))
            ms = gpu.check("cuEventElapsedTime", cu.cuEventElapsedTime(start, end))
            times.append(float(ms) * 1e-3)
        return statistics.median(times)
    finally:
        gpu.check("cuEventDestroy", cu.cuEventDestroy(start))
        gpu.check("cuEventDestroy", cu.cuEventDestroy(end))
        flush.free()


class Preserved:
    """The tensors tuning launches write, copied before and put back after, so that a
    kernel that reads what it stores (an in-place update) is called on its real inputs.
    `regions`: (device address, bytes) per tensor."""

    def __init__(self, regions: list[tuple[int, int]], stream: int) -> None:
        self.regions, self.stream, self.saved = regions, stream, []

    def __enter__(self) -> Preserved:
        cu = gpu.driver()
        gpu._context()
        for pointer, size in self.regions:
            copy = gpu.check("cuMemAlloc", cu.cuMemAlloc(size))
            self.saved.append(copy)
            gpu.check("cuMemcpyDtoDAsync", cu.cuMemcpyDtoDAsync(copy, pointer, size, self.stream))
        return self

    def __exit__(self, *exc: object) -> None:
        cu = gpu.driver()
        for (pointer, size), copy in zip(self.regions, self.saved, strict=False):
            gpu.check("cuMemcpyDtoDAsync", cu.cuMemcpyDtoDAsync(pointer, copy, size, self.stream))
        gpu.check("cuStreamSynchronize", cu.cuStreamSynchronize(self.stream))
        for copy in self.saved:
            gpu.check("cuMemFree", cu.cuMemFree(copy))
