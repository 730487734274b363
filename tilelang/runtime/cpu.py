"""The CPU backend's driver: thread IR → LLVM IR → machine code (llvmlite MCJIT) → launch.

`compile_cpu(fn)` verifies `fn` (`verify_thread_function`), emits LLVM IR
(`tilelang.codegen.llvm`), optimizes it with LLVM's new pass manager at -O2 for the
host CPU (its name and features, so AVX2/AVX-512 and F16C are used where present) and
JIT-compiles it. Compiled kernels are cached in-process by the LLVM IR text; one
target machine is shared and compilation is serialized by a lock.

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
semantics of thread IR: wrapping, truncating division). Blocks are independent, so a
launch with several blocks runs them on up to `workers` threads (default: the CPU
count, or `TILELANG_CPU_THREADS`), each with its own workspace; the GIL is released
while machine code runs.
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from tilelang import dtypes
from tilelang.codegen.llvm import ENTRY, LLVMKernel, lower_to_llvm
from tilelang.ir import thread as t
from tilelang.ir.ops import evaluate_int, wrap
from tilelang.ir.thread_verify import verify_thread_function

__all__ = ["CpuKernel", "compile_cpu", "compile_llvm_ir", "eval_host_expr"]

OPT_LEVEL = 2

_LOCK = threading.RLock()
_STATE: dict[str, object] = {}
_CACHE: dict[str, _Compiled] = {}
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


def _llvm():
    """The llvmlite binding, initialized once; the shared host target machine."""
    import llvmlite.binding as llvm

    with _LOCK:
        if "tm" not in _STATE:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            target = llvm.Target.from_triple(llvm.get_process_triple())
            features = llvm.get_host_cpu_features().flatten()
            _STATE["tm"] = target.create_target_machine(
                cpu=llvm.get_host_cpu_name(), features=features, opt=OPT_LEVEL, jit=True
            )
            _STATE["features"] = features
            _ensure_half_runtime(llvm)
    return llvm, _STATE["tm"]


def _ensure_half_runtime(llvm) -> None:
    """Hosts without native f16 conversions (x86 without F16C) lower `fpext half` and
    `fptrunc ... to half` to `__extendhfsf2`/`__truncsfhf2`, which the process may not
    export: provide them (compiled from integer code) when they are missing."""
    if llvm.address_of_symbol("__extendhfsf2") and llvm.address_of_symbol("__truncsfhf2"):
        return
    from tilelang.codegen.llvm_numeric import half_runtime_module

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
    """LLVM's default -O2 module pipeline (new pass manager; llvmlite >= 0.45)."""
    pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(module, pb)


def compile_llvm_ir(text: str) -> _Compiled:
    """JIT-compile LLVM IR text from `emit_llvm` (cached by the text)."""
    import time

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
        engine.finalize_object()
        address = engine.get_function_address(ENTRY)
        compiled = _Compiled(engine, address, _ENTRY_TYPE(address), time.perf_counter() - start)
        _CACHE[text] = compiled
        return compiled


def compile_cpu(fn: t.ThreadFunction) -> CpuKernel:
    """Verify, lower, optimize and JIT-compile `fn` for the host CPU."""
    verify_thread_function(fn)
    lowered = lower_to_llvm(fn)
    return CpuKernel(fn, lowered, compile_llvm_ir(lowered.ir))


# --------------------------------------------------------------------------- host evaluation


def eval_host_expr(e: t.Expr, scalars: Mapping[str, int | float]) -> int | float:
    """A uniform thread-IR expression of the scalar parameters, on the host, with thread
    IR's integer semantics (wrapping, truncating division, clamped shifts, saturating
    integer `Cvt`). Floats are supported for `Imm`, `Name`, `Cvt` and `Select`."""
    if isinstance(e, t.Imm):
        return wrap(int(e.value), e.type) if e.type.is_int else float(e.value)
    if isinstance(e, t.Name):
        if e.name not in scalars:
            raise ValueError(f"the grid uses %{e.name}, which is not a scalar argument")
        value = scalars[e.name]
        return wrap(int(value), e.type) if e.type.is_int else float(value)
    if isinstance(e, t.Select):
        cond = eval_host_expr(e.cond, scalars)
        return eval_host_expr(e.a if cond else e.b, scalars)
    if isinstance(e, t.Cvt):
        value = eval_host_expr(e.a, scalars)
        if e.type == dtypes.u1:
            return int(value != 0 and value == value)
        if e.type.is_int:  # RNE, saturate, NaN -> 0 (the casting policy)
            if isinstance(value, float):
                if math.isnan(value):
                    return 0
                if math.isinf(value):
                    return e.type.max if value > 0 else e.type.min
                value = round(value)  # ties to even
            return max(e.type.min, min(e.type.max, int(value)))
        return float(dtypes.quantize(value, e.type))
    if isinstance(e, t.Binary) and e.a.dtype.is_int:
        dt = e.a.dtype
        a, b = eval_host_expr(e.a, scalars), eval_host_expr(e.b, scalars)
        folded = evaluate_int(e.op, a, b, dt)
        if folded is None:
            raise ValueError(f"cannot evaluate {e.op} on the host")
        return folded
    if isinstance(e, t.Unary) and e.a.dtype.is_int:
        a = eval_host_expr(e.a, scalars)
        table = {"neg": -a, "not": ~a, "abs": abs(a), "floor": a, "ceil": a}
        return wrap(table[e.op], e.a.dtype)
    raise ValueError(f"cannot evaluate {type(e).__name__} on the host")


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
    """A compiled thread function; `launch` runs it on the CPU."""

    fn: t.ThreadFunction
    lowered: LLVMKernel
    compiled: _Compiled = field(repr=False)

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
        fn = self.fn
        names = {p.name for p in fn.params}
        missing = [p.name for p in fn.params if p.name not in args]
        extra = sorted(set(args) - names)
        if missing or extra:
            raise TypeError(
                f"{fn.name}: "
                + (f"missing arguments {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unexpected arguments {extra}" if extra else "")
            )
        buffers = [
            _buffer(args[p.name], p, p.name in self.lowered.stored_tensors)
            for p in fn.params
            if p.is_tensor
        ]
        scalar_params = self.lowered.scalar_params
        codes = [_scalar_code(args[p.name], p) for p in scalar_params]
        if grid is None:
            values = {p.name: args[p.name] for p in scalar_params}
            grid = tuple(int(eval_host_expr(g, values)) for g in fn.grid)
        grid = tuple(int(g) for g in grid)
        if len(grid) > 3:
            raise ValueError(f"{fn.name}: a grid has at most 3 dimensions, got {grid}")
        dims = (*grid, 1, 1, 1)[:3]
        if any(d <= 0 for d in dims):
            return
        if any(d >= 2**31 for d in dims):
            raise ValueError(f"{fn.name}: grid {grid} is too large")
        blocks = dims[0] * dims[1] * dims[2]
        tensor_ptrs = (ctypes.c_void_p * max(len(buffers), 1))(*[b.ctypes.data for b in buffers])
        scalars = np.zeros(max(len(codes), 1), dtype="<u8")
        for k, code in enumerate(codes):
            scalars[k] = code
        if workers is None:
            workers = int(os.environ.get("TILELANG_CPU_THREADS", 0)) or (os.cpu_count() or 1)
        workers = max(1, min(workers, blocks))
        entry = self.compiled.entry
        ws_bytes = self.lowered.workspace_bytes

        def run(begin: int, end: int) -> None:
            workspace = np.zeros(ws_bytes + 64, dtype=np.uint8)
            pointer = workspace.ctypes.data
            pointer += -pointer % 64
            entry(ctypes.addressof(tensor_ptrs), scalars.ctypes.data, *dims, begin, end, pointer)
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


def _pool() -> ThreadPoolExecutor:
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
        return _POOL[0]
