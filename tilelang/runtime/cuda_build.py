"""Building a kernel for a GPU architecture, through the disk cache.

`cuda_build(key_parts, lower, arch)` returns a `CudaBuild`: the thread IR, the CUDA
source, PTX, cubin and NVRTC log. The key is `cache_key(*key_parts, arch, NVRTC
version)`; on a hit nothing runs but unpickling — not the frontend's passes, not the
lowering, not NVRTC — which is what makes a warm call cheap. `lower()` is called only
on a miss. The thread IR is stored pickled: the cache is the user's own directory.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from tilelang.codegen.cuda import emit_cuda, kernel_symbol
from tilelang.ir.thread import ThreadFunction
from tilelang.runtime.cache import DiskCache, cache_key
from tilelang.runtime.cubin import Resources, read_resources
from tilelang.runtime.nvrtc import compile_cuda, nvrtc_version


@dataclass(frozen=True)
class CudaBuild:
    thread: ThreadFunction
    arch: str
    source: str
    ptx: str
    cubin: bytes
    log: str
    cached: bool  # True when it came from the disk cache

    @property
    def symbol(self) -> str:
        return kernel_symbol(self.thread)

    @cached_property
    def resources(self) -> Resources:
        return read_resources(self.log, self.cubin, self.symbol)


def cuda_build(
    key_parts: tuple[str, ...],
    lower: Callable[[], ThreadFunction],
    arch: str,
    cache: DiskCache | None = None,
) -> CudaBuild:
    cache = cache if cache is not None else DiskCache()
    major, minor = nvrtc_version()
    key = cache_key(*key_parts, arch, f"nvrtc {major}.{minor}")
    blobs = cache.get(key)
    if blobs is not None:
        try:
            return _from_blobs(blobs, arch)
        except (KeyError, ValueError, pickle.UnpicklingError, EOFError, AttributeError):
            pass  # an entry from an incompatible layout of this file: rebuild it
    thread = lower()
    source = emit_cuda(thread, launch_bounds=thread.threads)
    binary = compile_cuda(source, kernel_symbol(thread), arch)
    build = CudaBuild(thread, arch, source, binary.ptx, binary.cubin, binary.log, cached=False)
    cache.put(key, _to_blobs(build))
    return build


def _to_blobs(build: CudaBuild) -> dict[str, bytes]:
    return {
        "thread": pickle.dumps(build.thread),
        "source": build.source.encode(),
        "ptx": build.ptx.encode(),
        "cubin": build.cubin,
        "log": build.log.encode(),
        "meta": json.dumps({"arch": build.arch}).encode(),
    }


def _from_blobs(blobs: dict[str, bytes], arch: str) -> CudaBuild:
    meta = json.loads(blobs["meta"])
    if meta["arch"] != arch:
        raise ValueError("architecture mismatch")
    thread = pickle.loads(blobs["thread"])
    if not isinstance(thread, ThreadFunction):
        raise ValueError("not a thread function")
    return CudaBuild(
        thread,
        arch,
        blobs["source"].decode(),
        blobs["ptx"].decode(),
        blobs["cubin"],
        blobs["log"].decode(),
        cached=True,
    )
