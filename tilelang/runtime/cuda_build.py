"""Building a kernel for a GPU architecture, through the disk cache.

`cuda_build(key_parts, lower, arch)` returns a `CudaBuild`: the CUDA source, PTX, cubin
and NVRTC log, and the thread IR they came from. The key is `cache_key(*key_parts,
arch, NVRTC's identity)`; on a hit nothing runs — not the frontend's passes, not the
lowering, not NVRTC (not even loaded: its version comes from a memo) — which is what
makes a warm compile cheap. `lower()` is called on a miss, and on a hit only if the
stored thread IR turns out to be unreadable.

The thread IR is stored pickled (the cache is the user's own directory) and unpickled
on first use: a compile that only wants the cubin, or a launch that has not happened
yet, does not pay for it. The meta blob records the architecture and the kernel's
symbol, so nothing needs the thread IR to name the kernel, and the register estimate.

The passes run inside `spill_verdict.deferred()`: `plan_registers` leaves its spill
verdict to the build, which warns `RegisterSpillWarning` only when ptxas spilled (at
the kernel's line, with the estimate and ptxas's count), not when the estimate merely
passed the budget. The entry keeps every warning the build gave, that one included.

An entry with a valid checksum but contents this code cannot use (a blob missing,
meta that is not the expected JSON, a thread IR that does not unpickle) is discarded
and rebuilt rather than failing every compile.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
import warnings
from collections.abc import Callable
from functools import cached_property

from tilelang.codegen.cuda import emit_cuda, kernel_symbol
from tilelang.ir.thread import ThreadFunction
from tilelang.runtime import build_log
from tilelang.runtime.build_entry import (
    are_records,
    record,
    replay,
    stored_thread,
    warning_record,
)
from tilelang.runtime.cache import DiskCache, cache_key
from tilelang.runtime.cubin import Resources, read_resources
from tilelang.runtime.gpu import Launcher
from tilelang.runtime.nvrtc import compile_cuda, nvrtc_identity
from tilelang.spill_verdict import RegisterSpillWarning, SpillNote, deferred, verdict

BLOBS = ("thread", "source", "ptx", "cubin", "log", "meta")


class CudaBuild:
    """One kernel built for one architecture. `cached` is True when it came from the
    disk cache; `thread` is then unpickled (or, failing that, lowered again) on first use.
    `estimate` is `plan_registers`'s register estimate (None when the passes' result was
    at hand before the build), beside ptxas's count in `resources`."""

    def __init__(
        self,
        arch: str,
        symbol: str,
        source: str,
        ptx: str,
        cubin: bytes,
        log: str,
        cached: bool,
        thread: Callable[[], ThreadFunction],
        estimate: int | None = None,
    ) -> None:
        self.arch = arch
        self.symbol = symbol
        self.source = source
        self.ptx = ptx
        self.cubin = cubin
        self.log = log
        self.cached = cached
        self._thread = thread
        self.estimate = estimate

    @cached_property
    def thread(self) -> ThreadFunction:
        return self._thread()

    @cached_property
    def launcher(self) -> Launcher:
        """What launching this build on the GPU needs, worked out on the first launch."""
        return Launcher(self)

    @cached_property
    def resources(self) -> Resources:
        """ptxas's figures and the dynamic shared memory the launch asks for (a user
        reading `shared_bytes == 0` of a kernel with shared tiles was misled)."""
        static = read_resources(self.log, self.cubin, self.symbol)
        return dataclasses.replace(static, dynamic_shared_bytes=self.thread.shared_bytes)


def cuda_build(
    key_parts: tuple[str, ...],
    lower: Callable[[], ThreadFunction],
    arch: str,
    cache: DiskCache | None = None,
    min_blocks: int | None = None,
    label: str | None = None,
) -> CudaBuild:
    cache = cache if cache is not None else DiskCache()
    key = cache_key(*key_parts, arch, nvrtc_identity(cache))
    blobs = cache.get(key)
    if blobs is not None:
        build = _from_blobs(blobs, arch, lambda: stored_thread(blobs["thread"], cache, key, lower))
        if build is not None:
            replay(json.loads(blobs["meta"])["warnings"])
            build_log.loaded(label or build.symbol, arch)
            return build
        cache.discard(key)  # well-formed, but not what this code writes: rebuild it
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as raised, deferred() as notes:
        warnings.simplefilter("always")
        thread = lower()
    # The passes' warnings point at the user's lines; a build read from disk runs no
    # pass, so the entry keeps them and a hit warns again, as the first compile did.
    said = [warning_record(w) for w in raised]
    replay(said)
    source = emit_cuda(thread, launch_bounds=thread.threads, min_blocks=min_blocks)
    symbol = kernel_symbol(thread)
    binary = compile_cuda(source, symbol, arch)
    note = notes[-1] if notes else None
    build = CudaBuild(
        arch,
        symbol,
        source,
        binary.ptx,
        binary.cubin,
        binary.log,
        False,
        lambda: thread,
        note.estimate if note is not None else None,
    )
    spilled = _spill_record(note, build)
    replay(spilled)
    said += spilled
    cache.put(key, _to_blobs(build, thread, said))  # an unwritable cache warns once, then skips
    seconds = time.perf_counter() - start
    build_log.built(label or thread.name, arch, seconds, "passes, lowering, NVRTC")
    return build


def _spill_record(note: SpillNote | None, build: CudaBuild) -> list:
    """The spill warning ptxas's report calls for (`spill_verdict`), as a record."""
    message = verdict(note, build.resources, build.symbol)
    if message is None:
        return []
    file, line = (note.file, note.line) if note is not None else ("<unknown>", 0)
    return [record(RegisterSpillWarning, message, file, line)]


def _to_blobs(build: CudaBuild, thread: ThreadFunction, said: list) -> dict[str, bytes]:
    return {
        "thread": pickle.dumps(thread),
        "source": build.source.encode(),
        "ptx": build.ptx.encode(),
        "cubin": build.cubin,
        "log": build.log.encode(),
        "meta": json.dumps(
            {
                "arch": build.arch,
                "symbol": build.symbol,
                "warnings": said,
                "estimate": build.estimate,
            }
        ).encode(),
    }


def _from_blobs(
    blobs: dict[str, bytes], arch: str, thread: Callable[[], ThreadFunction]
) -> CudaBuild | None:
    """The build an entry holds, or None when its contents are not usable."""
    if any(name not in blobs for name in BLOBS):
        return None
    try:
        meta = json.loads(blobs["meta"])
        texts = [blobs[name].decode() for name in ("source", "ptx", "log")]
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("arch") != arch:
        return None
    if not are_records(meta.get("warnings")):  # an entry from before warnings were kept
        return None
    symbol = meta.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        return None
    estimate = meta.get("estimate")
    if not (estimate is None or (isinstance(estimate, int) and not isinstance(estimate, bool))):
        return None
    source, ptx, log = texts
    return CudaBuild(arch, symbol, source, ptx, blobs["cubin"], log, True, thread, estimate)
