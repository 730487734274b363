"""`matmul(x, qw)`: y = x @ W for a quantized weight, and `plan`: the kernels it launches.

Choosing a kernel (`choose`), by M (the rows of x, all leading dimensions together)
and the GPU architecture (its SM count, `tilelang.target.HARDWARE`):

============  =========  ==========================================================
path          M          tile BM x BN x BK, warps; split-K
============  =========  ==========================================================
gemv          1..4       16 x 128 x 128, 4 warps; split-K when the blocks are few
small_batch   5..64      BM = 16 (M ≤ 16) or 32 (two row blocks above 32) x 128 x
              (5..32 on  128, 4 warps; split-K when the blocks are few
              sm_90a)
gemm          65..       64 x 128 x 128, 4 warps (1 x 4: each weight converted once a
              (33.. on   block); BK = 64 for 2, 4, 6, 8-bit codes where the rows of x
              sm_90a)    are masked or zero points come in groups smaller than 128
                         rows (or 6, 8-bit codes have zero points), which take 8
                         warps for 1, 3, 5, 7-bit codes (5, 7-bit codes: any zero
                         points) (`tilelang.quant.choice`); split-K when the blocks fill at
                         most half the SMs. Built for sm_90a: Wᵀ·xᵀ on the warpgroup
                         mma, always 4 warps and BK = 128 (`Choice.swap`)
============  =========  ==========================================================

Why these tiles, from the static report on sm_90 (k = n = 8192): at m = 64, 64 x 128 x
64 (64 x 128 x 128 does not fit 255 registers) predicts 18.5 us for i4, two blocks of
32 x 128 x 128 14.1 us (fewer instructions per weight; the second row block's weights
come from L2, which the model does not count). At m = 4096: `tilelang.quant.choice`.

BK is at most the packing's K tile (`tilelang.quant.operands`). Split-K: when the
blocks, cdiv(M, BM) · cdiv(N, BN), are fewer than the SMs (at most half of them for
the gemm tile), K is split into S slices, deterministically and in one launch (a
workspace of partial products, which the last block of a tile to `tl.arrive` adds in
slice order: `kernels.quant_matmul_split_k`), S the least number of slices that gives
at least 2 blocks per SM, each slice at least 2 k-tiles. Host arrays run the kernels an sm_90 would launch (so
the CPU backend checks exactly those); `arch=` picks another architecture's choice,
unswapped (the CPU has no warpgroup mma).

Everything about the weight that the kernels read is prepared once per weight and
operand type and remembered (`tilelang.quant.operands`): its codes packed for the dot,
its scales and zero points as the kernel types, the device copies of them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.kernel import CompiledKernel, Kernel, host_target
from tilelang.runtime import call_plans, dlpack, gpu
from tilelang.runtime.counters import arrive_counters
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.runtime.host_expr import eval_grid
from tilelang.runtime.host_tensor import numpy_dtype
from tilelang.runtime.launch_facts import size_facts
from tilelang.runtime.value_facts import record as record_fact
from tilelang.target import target as find_target

from .choice import (
    DEFAULT_ARCH,
    Choice,
    KernelCall,
    choose,
    kernel_calls,
    split_workspace,
    zero_group_of,
)
from .operands import Operands, cached, operands, reads_as
from .tuning import decide, method_for, tuned_choice
from .weight import QuantizedWeight

# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Launch:
    """One kernel launch of a call: the kernel, its constexprs, the sizes it binds, the
    `CompiledKernel` (compiled for the plan's target with the size facts the launch
    gives, as a call compiles it) and its grid. `perf()` is the compiled kernel's static
    report at these sizes (GPU targets)."""

    kernel: Kernel
    constexprs: dict[str, Any]
    sizes: dict[str, int]
    compiled: CompiledKernel
    grid: tuple[int, ...]
    per: str | None = None

    def perf(self, **options: Any):
        options.setdefault("per", self.per)
        return self.compiled.perf(**options, **self.sizes)


@dataclass(frozen=True)
class Plan:
    """What `matmul` launches for x [m, K] on `target`: the choice and the launches."""

    m: int
    target: str
    arch: str
    choice: Choice
    launches: tuple[Launch, ...]
    exact: bool = True
    tuning: Any = None  # with tune=True: the ranking (`tilelang.quant.tuning.decide`)

    @property
    def path(self) -> str:
        return self.choice.path


def _prepared(
    qw: QuantizedWeight,
    m: int,
    x_dtype: Any,
    arch: str,
    has_bias: bool,
    method=None,
    *,
    target: Any,
    **timing,
):
    """`method` None: `choose`'s tile for `arch`; "model"/"gpu": the tuned one
    (`tuning.py`). Swapped only where `target` (what the kernels compile for) has the
    warpgroup mma (`choice.swaps_operands`)."""
    ops = operands(qw, x_dtype)
    k, n = qw.shape
    wgmma = find_target(target).has_wgmma
    if method is None:
        choice = choose(m, k, n, arch, ops.packing, zero_group_of(ops), wgmma)
    else:
        choice = tuned_choice(qw, m, x_dtype, arch, has_bias, method, **timing)
        choice = dataclasses.replace(choice, swap=choice.swap and wgmma)
    assert reads_as(ops.packing, choice.bk, choice.bm, choice.warps), (
        f"the kernel tile {choice} does not read codes packed by {ops.packing}"
    )
    return ops, choice, kernel_calls(ops, m, choice, has_bias)


def plan(
    qw: QuantizedWeight,
    m: int,
    target: str = DEFAULT_ARCH,
    *,
    x_dtype: Any = "f16",
    bias: bool = False,
    arch: str | None = None,
    tune: bool = False,
) -> Plan:
    """The kernels `matmul` launches for x [m, K] of `x_dtype` (with a bias or not),
    compiled for `target` ("cpu" or a GPU architecture; no GPU is needed) with the size
    facts the launch gives: what a call would run, for tools and tests to inspect
    (`plan.launches[0].perf()`, `.compiled.source`, `.grid`). The choice is `arch`'s
    (default: the target's, sm_90's for "cpu"). `tune=True`: the tile ranked best by
    `arch`'s static performance report among `tuning.candidates`, with the ranking in
    `.tuning` (a prediction, not a measurement; `tuning.report` prints it)."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive int (the rows of x), got {m!r}")
    m = int(m)
    chosen = find_target(target)
    arch = arch or (chosen.name if chosen.is_gpu else DEFAULT_ARCH)
    method = "model" if tune and os.environ.get("TILELANG_AUTOTUNE", "").lower() != "off" else None
    ops, choice, calls = _prepared(qw, m, x_dtype, arch, bias, method, target=chosen)
    ranking = None
    if method is not None:
        ranking = decide(qw, m, arch=arch, x_dtype=x_dtype, bias=bias)
    launches = []
    for call in calls:
        facts = {**size_facts(call.sizes), **call.values}
        compiled = call.kernel.compile(assume=facts, target=chosen, **call.constexprs)
        grid = eval_grid(compiled.thread.grid, {**call.sizes, "t": ops.t})
        launches.append(Launch(call.kernel, call.constexprs, call.sizes, compiled, grid, call.per))
    return Plan(m, chosen.name, arch, choice, tuple(launches), ops.exact, ranking)


# ---------------------------------------------------------------------------- matmul


def matmul(
    x: Any,
    qw: QuantizedWeight,
    bias: Any = None,
    out: Any = None,
    *,
    arch: str | None = None,
    tune: bool | str | None = None,
) -> Any:
    """y = x @ W (+ bias) for the quantized weight `qw` [K, N], accumulated in f32 and
    rounded once to x's type.

    `x` [..., K] holds f16 or bf16 values (numpy float16 / ml_dtypes bfloat16 arrays:
    the CPU backend; device tensors (torch, DLPack, ``__cuda_array_interface__``) or
    `tilelang.DeviceBuffer`: the GPU; a bf16 device x that is not a torch tensor needs
    `out`).
    `bias` [N] and `out` [..., N] are of x's type and where x is; `out`, when given, is
    written and returned. Act order (``qw.perm``): x's columns are gathered
    (x[..., perm]) before the kernels, which is what the stored rows mean: by numpy for
    host arrays, by torch on x's device for device tensors (`act_order_gather`). See
    the module docstring for the kernels and `tilelang.quant.operands` for what each
    format costs and how exact it is: every format it runs computes
    `QuantizedWeight.dequantize`'s weights exactly (MX: unless its scales span more
    than the operand type holds, `ScaleRangeWarning`). It runs every format but ExMy
    codes whose values f16 does not hold (f6e5m0, f7e5m1, f7e6m0, f8e6m1, f8e7m0) with
    f16 scales and activations, which it refuses (`quantize` does too): those run
    with bf16 scales and bf16 activations. So the result
    differs from ``x @ qw.dequantize()`` only by the f32 accumulation order and the
    final rounding: per element, |y − x@W| ≤ E + u·(|x@W| + E) + u_min with
    E = (K + 2)·2^-24·(|x| @ |W|) (K exact f32 products added in some order, the f32
    tensor scale and bias), u = 2^-11 for f16 and 2^-8 for bf16 (half an ulp), u_min
    half the type's smallest subnormal (tests/test_quant_matmul.py checks exactly
    this). `arch`: whose kernel choice to use (default: the device's; sm_90 for host
    arrays). `tune` (`tilelang.quant.tuning`): None tunes the tile of device calls
    (timed once per shape, kept on disk) and runs `choose`'s on host arrays; True also
    ranks host calls' tiles by `arch`'s static model; "model" ranks by the model only;
    False (or TILELANG_AUTOTUNE=off) always runs `choose`'s tile.
    """

    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a tilelang.quant.QuantizedWeight, got {type(qw).__name__}")
    if gpu.is_device_array(x):
        plans = cached(qw, "call plans", lambda: call_plans.CallPlans(_device_call(qw)))
        return plans((x, bias, out, arch, method_for(tune, True)), {})
    return _host_matmul(x, qw, bias, out, arch, tune)


@accepts_host_tensors
def _host_matmul(x: Any, qw: QuantizedWeight, bias: Any, out: Any, arch, tune) -> Any:
    """The CPU-backend path of `matmul` (other libraries' host tensors as numpy views)."""
    method = method_for(tune, False)
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"x must be a numpy array (the CPU backend) or a device tensor, got {type(x).__name__}"
        )
    ot = _host_dtype(x, "x")
    k, n = qw.shape
    lead = _check_shape(x.shape, k, "x")
    m = math.prod(lead)
    y = _host_out(out, x, lead + (n,))
    if m == 0:
        return y
    x2 = np.ascontiguousarray(x.reshape(m, k))
    if qw.perm is not None:
        x2 = np.ascontiguousarray(x2[:, qw.perm])
    b = _host_bias(bias, ot, n)
    ops, _, calls = _prepared(
        qw, m, ot, arch or DEFAULT_ARCH, bias is not None, method, target=host_target()
    )
    tensors = cached(qw, ("host tensors", ot), lambda: _Tensors.of(ops, _on_host))
    workspace = lambda shape: np.empty(shape, np.float32)  # noqa: E731
    _run(calls, ops, tensors, x2, y.reshape(m, n), b, workspace, lambda s: arrive_counters(x, s))
    return y


def _on_host(array: Any) -> Any:
    """Where a host call's tensors go (`_Tensors.put`): nowhere, the arrays themselves."""
    return array


@dataclass(frozen=True)
class _Tensors:
    """The weight's kernel tensors where a call runs (host arrays or device buffers),
    with placeholders for the zero points, the bias and the code book when a launch has
    none."""

    w: Any
    z: Any
    bias: Any
    ops: Operands
    put: Any
    scales: dict = field(default_factory=dict)  # per tile (`Operands.scales_for`)
    table: Any = None  # the kernels' `code`: a codebook's table, or a placeholder

    @classmethod
    def of(cls, ops: Operands, put) -> _Tensors:
        ot, zt = ops.constexprs["OT"], ops.constexprs["ZT"]
        zeros = ops.zeros
        if zeros is None:
            zeros = dtypes.pack_codes(np.zeros((1, 1), zt.storage), zt)
        bias = dtypes.pack_codes(np.zeros(1, ot.storage), ot)
        w = put(ops.weight.codes)
        if "w" in ops.facts:  # the codes were checked once (`QuantizedWeight.finite`)
            record_fact(w, ops.facts["w"])
        table = ops.table
        if table is None:
            st = ops.constexprs["ST"]
            table = dtypes.pack_codes(np.zeros(1, st.storage), st)
        return cls(w, put(zeros), put(bias), ops, put, table=put(table))

    def s(self, call: KernelCall) -> Any:
        """The scales as `call`'s kernel reads them, put where it runs once per tile."""
        if call.scales not in self.scales:
            scales = self.put(self.ops.scales_for(*call.scales))
            if "s" in self.ops.facts:  # checked on the host values once: calls need not
                record_fact(scales, self.ops.facts["s"])  # read it back
            self.scales[call.scales] = scales
        return self.scales[call.scales]


def _run(calls, ops: Operands, tensors: _Tensors, x2, y2, bias, workspace, counters) -> None:
    """Launch the calls on these tensors (host or device alike). `workspace(shape)`: a
    new f32 array; `counters(shape)`: zeroed i32 counters, which a split-K launch
    leaves zeroed (so they may be kept and reused). The weight's tensors are buffers a
    call plan may launch with as they are (`call_plans.kept`)."""
    bias = call_plans.kept(tensors.bias) if bias is None else bias
    for call in calls:
        weight = (tensors.w, tensors.s(call), tensors.z, tensors.table)
        args = (x2, *(call_plans.kept(t) for t in weight), bias)
        split = split_workspace(call)
        if split is not None:
            args += (workspace(split[0]), counters(split[1]))
        call.kernel(*args, y2, ops.t, assume=call.values, **call.constexprs)


def act_order_gather(x: Any, qw: QuantizedWeight) -> Any:
    """x[..., perm] for a torch tensor x and an act-order weight (`qw.perm`): x's columns
    in the weight's stored row order, gathered by torch on x's device. The index is a
    tensor on that device, made once per device and kept on the weight: a host list
    converted on each call was a host-to-device copy every call."""
    key = ("act order index", str(x.device))
    index = cached(qw, key, lambda: _index_tensor(qw.perm, x.device))
    return x.index_select(-1, index).contiguous()


def _index_tensor(perm: np.ndarray, device: Any) -> Any:
    """`perm` as an int64 torch tensor on `device` (`act_order_gather`)."""
    import torch  # only for a torch x, so torch is there

    return torch.as_tensor(perm, dtype=torch.int64, device=device)


def _device_array_and_dtype(x: Any) -> tuple[gpu.DeviceArray, DType | None]:
    """x's memory and dtype: bf16 (and f8) device tensors name their dtype only through
    DLPack (torch's array interface says "<V2" for bf16)."""
    view = dlpack.imported(x)
    array = gpu.device_array(view)
    if isinstance(view, dlpack.DeviceView):
        return array, view.dtype
    try:
        return array, numpy_dtype(np.dtype(array.typestr))
    except TypeError:
        return array, None


def _host_dtype(x: np.ndarray, what: str) -> DType:
    t = numpy_dtype(x.dtype)
    if t not in (dtypes.f16, dtypes.bf16):
        raise TypeError(
            f"{what} must be an array of float16 or bfloat16 (ml_dtypes), got {x.dtype}"
        )
    return t


def _check_shape(shape: tuple[int, ...], k: int, what: str) -> tuple[int, ...]:
    if len(shape) == 0 or shape[-1] != k:
        raise ValueError(
            f"{what} must have shape [..., K] with K = {k} (the weight's rows), got shape "
            f"{list(shape)}"
        )
    return tuple(int(d) for d in shape[:-1])


def _host_out(out: Any, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, x.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array like x, got {type(out).__name__}")
    if out.dtype != x.dtype or out.shape != shape:
        raise ValueError(
            f"out must be a {x.dtype} array of shape {list(shape)}, got {out.dtype} "
            f"{list(out.shape)}"
        )
    if not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array: got a read-only array")
    if not out.flags.c_contiguous:
        dense = gpu.contiguous_strides(out.shape, out.itemsize)
        raise ValueError(
            f"out must be a writeable C-contiguous array: got shape {list(out.shape)}, "
            f"strides {out.strides} bytes (C-contiguous: {dense})"
        )
    if np.shares_memory(out, x):
        raise ValueError("out overlaps x: pass a separate array")
    return out


def _host_bias(bias: Any, ot: DType, n: int) -> np.ndarray | None:
    if bias is None:
        return None
    if not isinstance(bias, np.ndarray):
        raise TypeError(f"bias must be a numpy array like x, got {type(bias).__name__}")
    if numpy_dtype(bias.dtype) != ot or bias.shape != (n,):
        raise ValueError(
            f"bias must be a {ot} array of shape [{n}] (N, the weight's columns), got "
            f"{bias.dtype} {list(bias.shape)}"
        )
    return np.ascontiguousarray(bias)


# ---------------------------------------------------------------------------- device


def _device_call(qw: QuantizedWeight):
    """`_device_matmul` on `qw` without `qw` among its arguments: what the weight's call
    plans replay (`call_plans.CallPlans`, kept on the weight; a weak reference, so that
    the weight's cache holds no cycle through it and its device memory goes with it)."""
    return functools.partial(_device_matmul_of, weakref.ref(qw))


def _device_matmul_of(weight: weakref.ref, x, bias, out, arch, method) -> Any:
    """`_device_matmul` on the weight `weight` refers to (`_device_call`)."""
    return _device_matmul(x, weight(), bias, out, arch, method)


def _device_matmul(
    x: Any, qw: QuantizedWeight, bias: Any, out: Any, arch: str | None, method: str | None
) -> Any:
    """The GPU path of `matmul` (written for torch, cupy and tilelang.DeviceBuffer; the
    CPU tests do not run it). The weight's tensors are copied to device 0 once per
    weight (`tilelang.DeviceBuffer`); the launches go on x's stream (torch, cupy)."""
    array, ot = _device_array_and_dtype(x)
    if ot not in (dtypes.f16, dtypes.bf16):
        given = ot if ot is not None else f"typestr {array.typestr}"
        raise TypeError(f"x must be a device tensor of f16 or bf16 values, got {given}")
    if not gpu.is_contiguous(array):
        raise ValueError("x must be C-contiguous on the GPU (call .contiguous())")
    k, n = qw.shape
    lead = _check_shape(array.shape, k, "x")
    m = math.prod(lead)
    is_torch = gpu.is_torch_tensor(x)
    given_out = out
    if not is_torch:  # a DLPack tensor keeps its dtype through the reshapes below
        x, out = dlpack.imported(x), None if out is None else dlpack.imported(out)
    if qw.perm is not None:
        if not is_torch:
            raise TypeError("act order (qw.perm) on the GPU needs x as a torch tensor")
        x = act_order_gather(x, qw)  # the gather happens before the kernels
    if bias is not None and tuple(gpu.device_array(bias).shape) != (n,):
        raise ValueError(f"bias must have shape [{n}] (N, the weight's columns)")
    if out is None:
        if is_torch:
            import torch  # a torch tensor was handed over, so torch is there

            shape, dtype, place = (*lead, n), x.dtype, x.device
            out = call_plans.allocated(lambda: torch.empty(shape, dtype=dtype, device=place))
        elif ot == dtypes.f16:
            make = functools.partial(gpu.DeviceBuffer.empty, (*lead, n), np.float16)
            out = call_plans.allocated(make)
        else:  # tilelang.DeviceBuffer holds numpy's types; bf16 comes from the caller
            raise TypeError("a bf16 x that is not a torch tensor needs out= (a bf16 tensor)")
    elif tuple(gpu.device_array(out).shape) != (*lead, n):
        raise ValueError(f"out must have shape {[*lead, n]}")
    result = out if given_out is None else given_out
    if m == 0:
        return result

    def workspace(shape: tuple[int, ...]) -> Any:
        if is_torch:  # torch's caching allocator: stream-ordered, no driver call
            import torch

            place = x.device
            return call_plans.allocated(
                lambda: torch.empty(shape, dtype=torch.float32, device=place)
            )
        # A DeviceBuffer of its own per call would be a cuMemAlloc and a cuMemFree (which
        # waits for the device) every call: kept with the weight.
        make = lambda: gpu.DeviceBuffer.empty(shape, np.float32)  # noqa: E731
        return call_plans.kept(cached(qw, ("split-K workspace", shape), make))

    def launch(ops: Operands, calls: list[KernelCall]) -> None:
        tensors = cached(qw, ("device tensors", ot), lambda: _Tensors.of(ops, gpu.DeviceBuffer))
        x2, y2 = gpu.reshaped(x, (m, k), "x"), gpu.reshaped(out, (m, n), "out")
        _run(calls, ops, tensors, x2, y2, bias, workspace, lambda s: arrive_counters(x, s))

    device = gpu.device_arch()
    chosen = (m, ot, arch or device, bias is not None, method, device)

    def prepared() -> tuple:
        timing = {} if method is None else {"launch": launch, "stream": gpu.current_stream([x])}
        return _prepared(
            qw, m, ot, arch or device, bias is not None, method, target=device, **timing
        )

    # The choice (a tuned one timed once) and its kernel calls, per shape: kept with the
    # weight, so that a warm call goes straight to the launches.
    ops, _, calls = cached(qw, ("device calls", chosen), prepared)
    launch(ops, calls)
    return result


__all__ = ["Choice", "Launch", "Plan", "choose", "matmul", "plan"]
