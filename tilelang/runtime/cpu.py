"""The CPU backend's driver: thread IR → LLVM IR → machine code (llvmlite MCJIT) → launch.

`compile_cpu(fn)` verifies `fn` (`verify_thread_function`), emits LLVM IR
(`tilelang.codegen.llvm`), optimizes it with a short pipeline and JIT-compiles it with
-O2 code generation for the host CPU (its name and features, so AVX2/AVX-512 and F16C
are used where present). Compiled kernels are cached in-process by the LLVM IR text;
one target machine is shared and compilation is serialized by a lock. The object code
MCJIT emits is kept (`_Compiled.object`): `load_object` loads it again in another
process without optimizing or generating code, which is how `tilelang.runtime.cpu_build`
caches CPU builds on disk (keyed with `jit_identity`).

The short pipeline (SROA, instcombine, simplifycfg, SCCP, DCE) is chosen for compile
time. LLVM's full -O2 module pipeline spent 80% of a large kernel's compile unrolling
and vectorizing the per-thread loops (flash attention, D=128: 17.7 s of optimization
against 0.2 s) for little speed at run time (that kernel took 0.06 s a call either way,
a 512³ f16 matmul 0.07 s against 0.10 s; the results are the same bits): a CPU launch
is a check or a reference, run a few times, so compile time is what its users wait
for. Ahead-of-time CPU libraries (`tilelang.aot.cpu_library`) keep the full -O2
pipeline: they are compiled once.

`CpuKernel.launch(args, grid=None)` runs a launch. `args` maps each parameter name to:

* a tensor parameter: a C-contiguous numpy array (its bytes are the tensor's byte
  buffer, any dtype) or an object with a `.data` 1-D numpy uint8 array such as
  `tilelang.dtypes.PackedArray`. A tensor the kernel stores to must be writeable.
  No alignment is needed: the emitted code accesses global memory with unaligned-safe
  loads and stores.
* a scalar parameter: a Python int/float/bool (or numpy scalar), converted to the
  parameter's dtype: integers must lie in the dtype's range; floats are rounded by the
  casting policy (`dtypes.encode`).

`grid` defaults to `fn.grid` evaluated on the host from the scalar arguments (integer
semantics of thread IR: wrapping, truncating division). Before anything runs, the
launch conditions `fn.checks` are evaluated the same way; one that fails is a
`ValueError` with its message, as is a grid a GPU would refuse (a negative dimension,
or one above `tilelang.target.MAX_GRID`: `tilelang.runtime.grid_limits`). Blocks are
independent, so a launch with several blocks runs them on up to `workers` threads
(default: the CPU count, or `TILELANG_CPU_THREADS`), each with its own workspace; the
GIL is released while machine code runs. By default a launch uses only as many
threads as give each at least `MIN_SECONDS_PER_WORKER` of work, judged by the previous
launch's time per block: a thread costs tens of microseconds to hand work to, which a
small kernel's whole launch does not take.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tilelang.codegen.llvm import ENTRY, LLVMKernel, lower_to_llvm
from tilelang.codegen.llvm_numeric import half_runtime_module
from tilelang.ir import thread as t
from tilelang.ir.thread_verify import verify_thread_function
from tilelang.runtime.buffers import address
from tilelang.runtime.grid_limits import check_grid
from tilelang.runtime.host_expr import check_launch, eval_grid, eval_host_expr

__all__ = ["CpuKernel", "compile_cpu", "compile_llvm_ir", "eval_host_expr"]

OPT_LEVEL = 2

#: The JIT's short pipeline (`_optimize`), in order: llvmlite's ``add_<name>_pass``.
JIT_PASSES = (
    "always_inliner",
    "sroa",  # the locals and per-thread slots, to registers
    "instruction_combine",
    "simplify_cfg",
    "sccp",
    "dead_code_elimination",
)
#: What the machine code of a module depends on besides LLVM and the host: the pipeline
#: and the code generator's level (part of the disk cache's key, `jit_identity`). Bump
#: the leading number for a change the names do not show (a pass's options).
JIT_PIPELINE = f"1 {','.join(JIT_PASSES)} codegen-O{OPT_LEVEL}"

#: The least machine-code time (seconds) worth handing to one more thread.
MIN_SECONDS_PER_WORKER = 1e-3

#: How many distinct scalar-argument tuples a kernel remembers the checks and grid of.
GRID_MEMORY = 64

_LOCK = threading.RLock()
_STATE: dict[str, object] = {}
_CACHE: dict[str, _Compiled] = {}
_LOADED: dict[bytes, _Compiled] = {}  # by object code (see `load_object`)
_KEPT: list[object] = []  # every engine made (`load_object` says why)
_POOL: list[ThreadPoolExecutor] = []

_ENTRY_TYPE = ctypes.CFUNCTYPE(
    None,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_int32,
    ctypes.c_int32,
    ctypes.c_int32,
    ctypes.c_int64,
    ctypes.c_int64,
    ctypes.c_void_p,
)


@dataclass
class _Compiled:
    engine: object
    address: int
    entry: object
    seconds: float
    object: bytes | None = None  # the machine code as MCJIT emitted it (for the disk cache)


def _llvm():
    """The llvmlite binding, initialized once; the shared host target machine."""
    # Deferred: importing the binding loads LLVM's shared library, which the code
    # generator (llvmlite.ir, pure Python) does not need.
    import llvmlite.binding as llvm

    with _LOCK:
        if "tm" not in _STATE:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            target = llvm.Target.from_triple(llvm.get_process_triple())
            features = llvm.get_host_cpu_features().flatten()
            name = llvm.get_host_cpu_name()
            _STATE["tm"] = target.create_target_machine(
                cpu=name, features=features, opt=OPT_LEVEL, jit=True
            )
            _STATE["cpu"] = name
            _STATE["features"] = features
            _ensure_half_runtime(llvm)
    return llvm, _STATE["tm"]


def _ensure_half_runtime(llvm) -> None:
    """Hosts without native f16 conversions (x86 without F16C) lower `fpext half` and
    `fptrunc ... to half` to `__extendhfsf2`/`__truncsfhf2`, which the process may not
    export: provide them (compiled from integer code) when they are missing."""
    if llvm.address_of_symbol("__extendhfsf2") and llvm.address_of_symbol("__truncsfhf2"):
        return
    module = llvm.parse_assembly(str(half_runtime_module()))
    module.triple = llvm.get_process_triple()
    target = llvm.Target.from_triple(module.triple)
    # A generic CPU: these functions must not themselves need F16C.
    tm = target.create_target_machine(opt=2, jit=True)
    engine = llvm.create_mcjit_compiler(module, tm)
    engine.finalize_object()
    _STATE["half_engine"] = engine
    for name in ("__extendhfsf2", "__truncsfhf2"):
        if not llvm.address_of_symbol(name):
            llvm.add_symbol(name, engine.get_function_address(name))


def _optimize(llvm, tm, module) -> None:
    """The JIT's short pipeline (module docstring): the thread IR's per-thread loops and
    local arrays become SSA values and folded code; no unrolling or vectorization."""
    builder = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(OPT_LEVEL))
    passes = llvm.create_new_module_pass_manager()
    for name in JIT_PASSES:
        getattr(passes, f"add_{name}_pass")()
    passes.run(module, builder)


def jit_identity() -> str:
    """Everything besides the LLVM IR that the JIT's machine code depends on: llvmlite's
    and LLVM's versions, the process triple, the host CPU and features the target machine
    was made for, and the pipeline (`JIT_PIPELINE`). Loads LLVM (`_llvm`)."""
    import llvmlite

    llvm, _ = _llvm()
    version = ".".join(str(part) for part in llvm.llvm_version_info)
    return (
        f"llvmlite {llvmlite.__version__}; llvm {version}; triple {llvm.get_process_triple()}; "
        f"cpu {_STATE['cpu']}; features {_STATE['features']}; pipeline {JIT_PIPELINE}"
    )


def compile_llvm_ir(text: str) -> _Compiled:
    """JIT-compile LLVM IR text from `emit_llvm` (cached by the text)."""
    with _LOCK:
        hit = _CACHE.get(text)
        if hit is not None:
            return hit
        llvm, tm = _llvm()
        start = time.perf_counter()
        module = llvm.parse_assembly(text)
        module.triple = llvm.get_process_triple()
        module.data_layout = str(tm.target_data)
        module.verify()
        _optimize(llvm, tm, module)
        engine = llvm.create_mcjit_compiler(module, tm)
        _KEPT.append(engine)  # kept even if code generation fails (`load_object`)
        emitted: list[bytes] = []
        engine.set_object_cache(lambda _module, data: emitted.append(data))
        engine.finalize_object()
        address = engine.get_function_address(ENTRY)
        seconds = time.perf_counter() - start
        obj = emitted[0] if len(emitted) == 1 else None
        compiled = _Compiled(engine, address, _ENTRY_TYPE(address), seconds, obj)
        _CACHE[text] = compiled
        return compiled


def load_object(obj: bytes) -> _Compiled:
    """Machine code `compile_llvm_ir` emitted (`_Compiled.object`), loaded into this
    process: relocated and linked, nothing optimized or generated. `obj` must be such an
    object, byte for byte (a damaged one can crash LLVM: callers check it first); one
    without the entry function is a `ValueError`. Cached in-process by the object, as
    `compile_llvm_ir` caches by the text: every engine is kept, because each one owns
    the shared target machine (llvmlite), which freeing any of them would destroy."""
    with _LOCK:
        hit = _LOADED.get(obj)
        if hit is not None:
            return hit
        llvm, tm = _llvm()  # also provides the f16 helpers the object may call
        start = time.perf_counter()
        empty = llvm.parse_assembly("")
        empty.triple = llvm.get_process_triple()
        empty.data_layout = str(tm.target_data)
        engine = llvm.create_mcjit_compiler(empty, tm)
        _KEPT.append(engine)  # even if the object does not load (see the docstring)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        address = engine.get_function_address(ENTRY)
        if not address:
            raise ValueError(f"the object code defines no {ENTRY} function")
        seconds = time.perf_counter() - start
        compiled = _Compiled(engine, address, _ENTRY_TYPE(address), seconds, obj)
        _LOADED[obj] = compiled
        return compiled


class LoadedModule:
    """What a launch needs of a module whose machine code was loaded (`load_object`),
    as `LLVMKernel` holds it; the IR text (`ir`) is emitted again from `fn` only when
    someone asks for it (it is the same text: the emitter is deterministic)."""

    def __init__(
        self,
        fn: t.ThreadFunction,
        workspace_bytes: int,
        tensor_params: tuple[str, ...],
        scalar_params: tuple[t.Param, ...],
        stored_tensors: frozenset[str],
    ) -> None:
        self.fn = fn
        self.workspace_bytes = workspace_bytes
        self.tensor_params = tensor_params
        self.scalar_params = scalar_params
        self.stored_tensors = stored_tensors

    @functools.cached_property
    def ir(self) -> str:
        return lower_to_llvm(self.fn).ir


def compile_cpu(fn: t.ThreadFunction) -> CpuKernel:
    """Verify, lower, optimize and JIT-compile `fn` for the host CPU."""
    verify_thread_function(fn)
    lowered = lower_to_llvm(fn)
    return CpuKernel(fn, lowered, compile_llvm_ir(lowered.ir))


# --------------------------------------------------------------------------- launching


def _buffer(value: object, param: t.Param, stored: bool) -> np.ndarray:
    array = value
    if not isinstance(array, np.ndarray):
        array = getattr(value, "data", None)
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"tensor argument {param.name} must be a numpy array or have a numpy `.data`"
                f" buffer (e.g. a PackedArray), got {type(value).__name__}"
            )
    if not array.flags.c_contiguous:
        raise ValueError(f"tensor argument {param.name} must be C-contiguous")
    if stored and not array.flags.writeable:
        raise ValueError(f"tensor argument {param.name} is written by the kernel but read-only")
    return array


def _scalar_code(value: object, param: t.Param) -> int:
    dt = param.dtype
    if dt.is_int:
        if isinstance(value, float | np.floating) or not isinstance(value, int | np.integer | bool):
            raise TypeError(f"scalar argument {param.name} ({dt}) must be an int, got {value!r}")
        v = int(value)
        if not dt.min <= v <= dt.max:
            raise ValueError(f"scalar argument {param.name} = {v} does not fit {dt}")
        return v & dt.code_mask
    if not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"scalar argument {param.name} ({dt}) must be a number, got {value!r}")
    return int(dt.encode(float(value)))


@dataclass
class CpuKernel:
    """A compiled thread function; `launch` runs it on the CPU.

    What does not depend on the arguments is derived once: the parameters' roles, the
    grid per distinct scalar arguments, and how long one block takes (measured on every
    launch), which decides how many threads a launch is worth (see `_workers`)."""

    fn: t.ThreadFunction
    lowered: LLVMKernel | LoadedModule
    compiled: _Compiled = field(repr=False)
    _names: frozenset[str] = field(init=False, repr=False)
    _tensors: tuple[tuple[t.Param, bool], ...] = field(init=False, repr=False)
    _scalar_names: tuple[str, ...] = field(init=False, repr=False)
    _grids: dict[tuple, tuple[int, ...]] = field(init=False, repr=False)
    _block_seconds: float | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        stored = self.lowered.stored_tensors
        self._names = frozenset(p.name for p in self.fn.params)
        self._tensors = tuple((p, p.name in stored) for p in self.fn.params if p.is_tensor)
        self._scalar_names = tuple(p.name for p in self.lowered.scalar_params)
        self._grids = {}

    @property
    def llvm_ir(self) -> str:
        return self.lowered.ir

    @property
    def compile_seconds(self) -> float:
        return self.compiled.seconds

    def launch(
        self,
        args: Mapping[str, object],
        grid: tuple[int, ...] | None = None,
        workers: int | None = None,
    ) -> None:
        """Runs `fn` on `args` (see the module docstring). `workers`: at most this many
        threads (default `TILELANG_CPU_THREADS` or the CPU count, fewer when the blocks
        are too little work to be worth a thread each)."""
        if args.keys() != self._names:
            self._wrong_arguments(args)
        buffers = [_buffer(args[p.name], p, stored) for p, stored in self._tensors]
        scalar_params = self.lowered.scalar_params
        codes = [_scalar_code(args[p.name], p) for p in scalar_params]
        dims = self._dims(args, grid)
        if any(d <= 0 for d in dims):
            return
        blocks = dims[0] * dims[1] * dims[2]
        tensor_ptrs = (ctypes.c_void_p * max(len(buffers), 1))(*[address(b) for b in buffers])
        scalars = (ctypes.c_uint64 * max(len(codes), 1))(*codes)
        workers = self._workers(blocks, workers)
        entry = self.compiled.entry
        ws_bytes = self.lowered.workspace_bytes

        def run(begin: int, end: int) -> None:
            workspace = ctypes.create_string_buffer(ws_bytes + 64)  # zeroed
            pointer = ctypes.addressof(workspace)
            pointer += -pointer % 64
            start = time.perf_counter()
            entry(
                ctypes.addressof(tensor_ptrs), ctypes.addressof(scalars), *dims, begin, end, pointer
            )
            self._block_seconds = (time.perf_counter() - start) / (end - begin)
            del workspace

        if workers == 1:
            run(0, blocks)
        else:
            bounds = [blocks * i // workers for i in range(workers + 1)]
            futures = [
                _pool().submit(run, bounds[i], bounds[i + 1])
                for i in range(workers)
                if bounds[i] < bounds[i + 1]
            ]
            for future in futures:
                future.result()
        # Keep the argument buffers alive until the machine code is done with them.
        del buffers

    def _wrong_arguments(self, args: Mapping[str, object]) -> None:
        missing = [p.name for p in self.fn.params if p.name not in args]
        extra = sorted(set(args) - self._names)
        raise TypeError(
            f"{self.fn.name}: "
            + (f"missing arguments {missing}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected arguments {extra}" if extra else "")
        )

    def _dims(self, args: Mapping[str, object], grid: tuple[int, ...] | None) -> tuple[int, ...]:
        """The launch's three grid dimensions: `grid`, or `fn.grid` evaluated on the
        scalar arguments; either way once `fn.checks` held for them (the evaluated grid,
        and so the checks, remembered per distinct scalar arguments)."""
        fn = self.fn
        values = tuple(args[p.name] for p in self.lowered.scalar_params)
        given = grid
        if grid is None:
            grid = self._grids.get(values)
            if grid is None:
                scalars = dict(zip(self._scalar_names, values, strict=True))
                check_launch(fn.checks, scalars)
                grid = eval_grid(fn.grid, scalars)
                if len(self._grids) >= GRID_MEMORY:
                    self._grids.clear()
                self._grids[values] = grid
        else:  # a grid given explicitly: the checks still hold the launch back
            check_launch(fn.checks, dict(zip(self._scalar_names, values, strict=True)))
        grid = tuple(int(g) for g in grid)
        if len(grid) > 3:
            raise ValueError(f"{fn.name}: a grid has at most 3 dimensions, got {grid}")
        dims = (*grid, 1, 1, 1)[:3]
        # The GPU's limits (a CPU launch is one a GPU accepts); given, not tl.blocks's.
        check_grid(fn, dims, None if given is None else ("as given",) * 3)
        return dims

    def _workers(self, blocks: int, requested: int | None) -> int:
        """Threads for a launch of `blocks` blocks. An explicit `requested` count is
        obeyed (up to one block per thread). By default, each thread must get at least
        `MIN_SECONDS_PER_WORKER` of blocks by the last launch's speed: handing blocks to
        a thread costs tens of microseconds, more than a small launch's whole work."""
        if requested is not None:
            return max(1, min(requested, blocks))
        available = int(os.environ.get("TILELANG_CPU_THREADS", 0)) or _cpu_count()
        workers = max(1, min(available, blocks))
        if workers > 1 and self._block_seconds is not None:
            worth = int(self._block_seconds * blocks / MIN_SECONDS_PER_WORKER)
            workers = max(1, min(workers, worth))
        return workers


@functools.cache
def _cpu_count() -> int:
    """The host's CPU count, read once (`os.cpu_count` reads /sys on every call)."""
    return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=_cpu_count()))
        return _POOL[0]
