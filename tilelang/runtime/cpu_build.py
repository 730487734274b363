"""Building a kernel for the host CPU, through the disk cache.

`cpu_build(key_parts, lower)` returns a `CpuBuild`. Its key is `cache_key(*key_parts,
"cpu", jit_identity())`: the kernel's key parts, and what the machine code depends on
besides the LLVM IR (llvmlite's and LLVM's versions, the process triple, the host CPU
and features the JIT targets, the JIT's pipeline; `tilelang.runtime.cpu.jit_identity`),
so another host, LLVM or pipeline misses.

A build has two moments. The compile (`Kernel.compile`, or a call's first use of a
specialization) looks the entry up and, on a miss, lowers the kernel at once: a kernel
that cannot be lowered fails at compile, and the passes' warnings are given then. The
machine code is made on first use (`CpuBuild.kernel`, which `CompiledKernel.cpu`
returns): on a hit it is the entry's object code, loaded (`cpu.load_object`) — no pass,
no lowering, no LLVM emission, no optimization, no code generation; on a miss the
thread IR is verified, emitted, optimized and compiled (`compile_cpu`) and the entry is
written then. A compile whose machine code is never asked for writes no entry.

Blobs: "thread" (the thread IR, `build_entry.stored_thread`: unpickled on first use),
"object" (the object code MCJIT emitted for the optimized module) and "meta" (JSON:
what a launch needs of the module — workspace bytes, tensor and scalar parameters,
stored tensors — the object's sha256, and the warnings the build gave, which a hit
gives again at their own file and line, as `cuda_build` does).

Failures never fail a compile: an entry with a valid checksum but contents this code
cannot use (a blob missing, meta that is not what this code writes, a thread IR that
does not unpickle, parameters that do not match it, an object that does not load) is
discarded and rebuilt. LLVM does not check object code it loads (a truncated object
crashes the process), so the object must match the sha256 in its meta before it is
handed to LLVM; the cache's own checksum covers the bytes on disk.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from tilelang.ir.thread import ThreadFunction
from tilelang.runtime import build_log
from tilelang.runtime.build_entry import are_records, replay, stored_thread, warning_record
from tilelang.runtime.cache import DiskCache, cache_key
from tilelang.runtime.cpu import CpuKernel, LoadedModule, compile_cpu, jit_identity, load_object

BLOBS = ("thread", "object", "meta")


@dataclass(frozen=True)
class _Stored:
    """The usable contents of an entry (the thread IR is still pickled)."""

    object: bytes
    sha256: str
    workspace_bytes: int
    tensor_params: tuple[str, ...]
    scalar_params: tuple[str, ...]
    stored_tensors: frozenset[str]
    warnings: list
    kernel: str  # the kernel's name, for the build log


class CpuBuild:
    """One kernel's CPU build. `cached`: the entry was found at compile; `thread` is
    then unpickled (or, failing that, lowered again) on first use, and `kernel` loads
    the entry's machine code (or, failing that, compiles it again)."""

    def __init__(
        self,
        key: str,
        cache: DiskCache,
        lower: Callable[[], ThreadFunction],
        said: list,
        thread: ThreadFunction | None = None,
        stored: _Stored | None = None,
        pickled: bytes | None = None,
    ) -> None:
        self.key = key
        self._cache = cache
        self._lower = lower
        self._said = said  # the warnings the build gave, kept in the entry
        self._thread = thread
        self._stored = stored
        self._pickled = pickled
        self.cached = stored is not None
        self.label: str | None = None  # which build, for the build log
        self.lowered_in = 0.0  # seconds this process spent lowering it (0: from disk)

    @cached_property
    def thread(self) -> ThreadFunction:
        if self._thread is not None:
            return self._thread
        return stored_thread(self._pickled or b"", self._cache, self.key, self._lower)

    @cached_property
    def kernel(self) -> CpuKernel:
        """The machine code, launchable: loaded from the entry, or compiled (and stored)."""
        if self._stored is not None:
            loaded = self._load(self._stored)
            if loaded is not None:
                return loaded
            self._cache.discard(self.key)  # well-formed, but not usable here: rebuild it
        start = time.perf_counter()
        kernel = compile_cpu(self.thread)
        seconds = self.lowered_in + time.perf_counter() - start
        how = "passes, lowering, LLVM" if self.lowered_in else "LLVM"
        build_log.built(self.label or self.thread.name, "cpu", seconds, how)
        if kernel.compiled.object is not None:  # an unwritable cache warns once, then skips
            self._cache.put(self.key, _to_blobs(self.thread, kernel, self._said))
        return kernel

    def _load(self, stored: _Stored) -> CpuKernel | None:
        if hashlib.sha256(stored.object).hexdigest() != stored.sha256:
            return None
        thread = self.thread
        params = {p.name: p for p in thread.params}
        scalars = tuple(params.get(name) for name in stored.scalar_params)
        if any(p is None or p.is_tensor for p in scalars):
            return None
        tensors = stored.tensor_params
        if any(name not in params or not params[name].is_tensor for name in tensors):
            return None
        if not stored.stored_tensors <= set(tensors):
            return None
        try:
            compiled = load_object(stored.object)
        except (ValueError, RuntimeError):
            return None
        module = LoadedModule(
            thread, stored.workspace_bytes, tensors, scalars, stored.stored_tensors
        )
        return CpuKernel(thread, module, compiled)


def cpu_build(
    key_parts: tuple[str, ...],
    lower: Callable[[], ThreadFunction],
    cache: DiskCache | None = None,
    label: str | None = None,
) -> CpuBuild:
    """The compile of a CPU build (module docstring): the entry found, or the thread IR
    lowered now."""
    cache = cache if cache is not None else DiskCache()
    key = cache_key(*key_parts, "cpu", jit_identity())
    blobs = cache.get(key)
    if blobs is not None:
        stored = _from_blobs(blobs)
        if stored is not None:
            replay(stored.warnings)
            build_log.loaded(label or stored.kernel, "cpu")
            build = CpuBuild(key, cache, lower, stored.warnings, None, stored, blobs["thread"])
            build.label = label
            return build
        cache.discard(key)  # well-formed, but not what this code writes: rebuild it
    raised: list[warnings.WarningMessage] = []
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            thread = lower()
        lowered_in = time.perf_counter() - start
        build_log.lowered(label or thread.name, "cpu", lowered_in)
    finally:
        # The passes' warnings point at the user's lines; a build read from disk runs no
        # pass, so the entry keeps them and a hit warns again, as the first compile did
        # (given here even when the lowering failed, as the passes would have).
        said = [warning_record(w) for w in raised]
        replay(said)
    build = CpuBuild(key, cache, lower, said, thread)
    build.label, build.lowered_in = label, lowered_in
    return build


def _to_blobs(thread: ThreadFunction, kernel: CpuKernel, said: list) -> dict[str, bytes]:
    lowered = kernel.lowered
    obj = kernel.compiled.object or b""
    meta = {
        "kernel": thread.name,  # for `tilelang cache ls`
        "target": "cpu",
        "sha256": hashlib.sha256(obj).hexdigest(),
        "workspace_bytes": lowered.workspace_bytes,
        "tensor_params": list(lowered.tensor_params),
        "scalar_params": [p.name for p in lowered.scalar_params],
        "stored_tensors": sorted(lowered.stored_tensors),
        "warnings": said,
    }
    return {"thread": pickle.dumps(thread), "object": obj, "meta": json.dumps(meta).encode()}


def _from_blobs(blobs: dict[str, bytes]) -> _Stored | None:
    """What an entry holds, or None when its contents are not usable."""
    if any(name not in blobs for name in BLOBS):
        return None
    try:
        meta = json.loads(blobs["meta"])
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    workspace = meta.get("workspace_bytes")
    if not isinstance(workspace, int) or isinstance(workspace, bool) or workspace < 0:
        return None
    names = [meta.get(field) for field in ("tensor_params", "scalar_params", "stored_tensors")]
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names):
        return None
    sha256, said = meta.get("sha256"), meta.get("warnings")
    if not isinstance(sha256, str):
        return None
    if not are_records(said):
        return None
    tensors, scalars, stored = names
    kernel = str(meta.get("kernel", "a kernel"))
    return _Stored(
        blobs["object"], sha256, workspace, tuple(tensors), tuple(scalars), frozenset(stored),
        said, kernel,
    )  # fmt: skip
