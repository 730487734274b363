# ruff: noqa: F821 -- kernels use the size names of their tensor annotations (K, N) as variables
"""`dequantize(qw, dtype, out)`: W [K, N] of a quantized weight as the matmul kernels see it,
written by a kernel (the CPU backend for host arrays, the GPU for device tensors).

What it is for: the gradient of a quantized linear layer with respect to its input,
grad_x = grad_y @ Wᵀ (`tilelang.torch.QuantLinear`), which needs W as a dense matrix
for the duration of a backward (K·N·2 bytes in f16 or bf16, as bitsandbytes' Linear4bit
dequantizes its weight for the same product).

One decoder. The kernel (`dequantize_tiles`) reads the codes, scales and zero points the
matmul kernels read (`tilelang.quant.operands`: codes packed for the dot, midpoint zero
points as signed codes, scales packed for the tile, MX scales shifted by 2^e0, NVFP4's
block scales as b · 2^-8) and converts each [BK, BN] tile with the kernels' own
`kernels.weight_tile`, in the operand type OT, in registers. Then, in f32, the factor
the matmul kernels apply to their accumulator (`t`: MX's 2^e0, NVFP4's tensor scale ·
2^8) where there is one, one rounding to the output type, and the store, each stored row
i at row perm[i] under act order (the rows in W's original order).

Exactness. Every format the matmul runs exactly (all but MX weights whose block scales
span more than OT holds, `ScaleRangeWarning`) gives ``qw.dequantize()`` rounded once to
the output type, bit for bit: the tile is ``dequantize()``'s value in OT (scaled: the
scale type), or that value divided by t, exactly, and the f32 multiplication by t rounds
the exact product once. The operand type: the scale type for integer and ExMy codes
and codebooks (f16 or bf16; f32 scales are refused, the kernels multiply in f16 or
bf16), the output
type for MX and NVFP4 when it is f16 or bf16 (so a backward reuses its forward's
prepared operands and device copies), bf16 (the wider exponent range) for an f32 output.

The tile is 16 x 128 x BK over 4 warps, the decode path's (BK = 128, or the packing's K
tile when smaller), which reads the packed codes as they are (`operands.reads_as`).
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.kernel import kernel
from tilelang.lang import api
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime import dlpack, gpu
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.runtime.host_tensor import numpy_dtype, values_dtype
from tilelang.runtime.launch_facts import size_facts

from .choice import KernelCall
from .formats import get_format
from .kernels import codebook_table, weight_tile
from .matmul import _on_host, _Tensors
from .operands import BLOCK_N, PACK_M, PACK_WARPS, Operands, cached, operands, reads_as
from .weight import QuantizedWeight

tl = api.tl

#: The output types: the operand types and f32.
OUTPUT_TYPES = (dtypes.f16, dtypes.bf16, dtypes.f32)
#: The kernels' arithmetic kinds (`kernels` docstring) this kernel converts.
KINDS = ("scaled", "mx", "mx_normal", "nvfp4", "codebook")
#: The tile's rows of x it is laid out for and its largest K tile (module docstring).
BLOCK_M, MAX_BLOCK_K = PACK_M, 128


@kernel(warps=PACK_WARPS, min_blocks=1)
def dequantize_tiles(
    w: Tensor["WT", "(N + BN - 1) // BN", "(K + PK - 1) // PK * PK * BN"],
    s: Tensor["ST", "SK", "SN"],
    z: Tensor["ZT", "ZK", "ZN"],
    code: Tensor["ST", "TABLE"],
    perm: Tensor[dtypes.i32, "KP"],
    y: Tensor["YT", "K", "N"],
    t: dtypes.f32,
    OT: constexpr = dtypes.f16,
    WT: constexpr = dtypes.u4,
    ST: constexpr = dtypes.f16,
    ZT: constexpr = dtypes.u4,
    YT: constexpr = dtypes.f16,
    KIND: constexpr = "scaled",
    G: constexpr = 128,
    HAS_Z: constexpr = False,
    HAS_PERM: constexpr = False,
    TENSOR_SCALE: constexpr = False,
    BM: constexpr = BLOCK_M,
    BN: constexpr = BLOCK_N,
    BK: constexpr = MAX_BLOCK_K,
    PK: constexpr = MAX_BLOCK_K,
    TABLE: constexpr = 1,
):
    """y[perm[k], n] = W's stored row k (y[k, n] without HAS_PERM), rounded once to YT."""
    bk, bn = tl.blocks(tl.cdiv(K, BK), tl.cdiv(N, BN))
    k = bk * BK
    table = codebook_table(code, KIND, OT, TABLE, PACK_WARPS)
    tile = weight_tile(w, s, z, k, bn * BN, G, KIND, OT, ST, HAS_Z, BM, BN, BK, table)
    # TENSOR_SCALE: what the matmul kernels apply to their f32 accumulator
    out = (tile.to(tl.f32) * t).to(YT) if TENSOR_SCALE else tile.to(YT)
    if HAS_PERM:
        # Rows past K (the packing's padding) go to row K, past y: the store skips them.
        stored = k + tl.arange(0, BK)
        rows = tl.where(stored < K, tl.load(perm, [k], [BK]), K)
        tl.store(y, [rows[:, None], bn * BN], out)
    else:
        tl.store(y, [k, bn * BN], out)


def dequantize(
    qw: QuantizedWeight, dtype: Any = None, out: Any = None, *, interpret: bool = False
) -> Any:
    """W [K, N] as `tilelang.quant.matmul`'s kernels see it, in W's original row order
    (act order undone), rounded once to `dtype` (f16, bf16 or f32): for every weight the
    matmul computes exactly, ``qw.dequantize()`` rounded to `dtype`, bit for bit (module
    docstring). Written by a kernel: on the GPU when `out` is a device tensor (torch,
    DLPack, ``__cuda_array_interface__``, `tilelang.DeviceBuffer`), else on the CPU
    backend (`out` a numpy array or a CPU tensor; None: a new numpy array). `dtype`
    None: `out`'s type, or f32 without `out`. `out` [K, N] C-contiguous, written and
    returned. `interpret`: run the host call on the reference interpreter. Integer and
    ExMy weights need f16 or bf16 scales (`QuantizedWeight.with_scale_dtype`)."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a tilelang.quant.QuantizedWeight, got {type(qw).__name__}")
    if out is not None and gpu.is_device_array(out):
        if interpret:
            raise ValueError("interpret: the reference interpreter runs host arrays only")
        return _device_dequantize(qw, dtype, out)
    return _host_dequantize(qw, dtype, out, interpret)


def _output_type(dtype: Any, given: DType | None) -> DType:
    """The output type from `dtype` and `out`'s type (`given`, None without `out`)."""
    if dtype is None:
        wanted = given if given is not None else dtypes.f32
    else:
        try:
            wanted = dtypes.dtype(dtype)
        except (TypeError, ValueError):
            wanted = None
        if wanted not in OUTPUT_TYPES:
            raise TypeError(f"dtype must be f16, bf16 or f32, got {dtype!r}")
    if wanted not in OUTPUT_TYPES:
        raise TypeError(f"out must hold f16, bf16 or f32 values, got {given}")
    if given is not None and given != wanted:
        raise TypeError(f"out holds {given} values but dtype is {wanted}: pass one of that type")
    return wanted


def operand_type_for(qw: QuantizedWeight, output: DType) -> DType:
    """The operand type the tiles are converted in (module docstring)."""
    if get_format(qw.format).kind not in ("scaled", "codebook"):
        return output if output != dtypes.f32 else dtypes.bf16
    if qw.scale_dtype not in (dtypes.f16, dtypes.bf16):
        raise TypeError(
            f"qw: the kernels multiply by f16 or bf16 scales, but this weight's scales are "
            f"{qw.scale_dtype}: convert them first, qw.with_scale_dtype('f16') or 'bf16'"
        )
    return qw.scale_dtype


def _launch(qw: QuantizedWeight, output: DType) -> tuple[Operands, KernelCall]:
    """The weight's operands and the launch that writes it as `output` values."""
    ops = operands(qw, operand_type_for(qw, output))
    if ops.constexprs["KIND"] not in KINDS:
        raise ValueError(
            f"qw: dequantize converts the kinds {', '.join(KINDS)}, not this weight's "
            f"{ops.constexprs['KIND']!r} (format {qw.format!r})"
        )
    block_k = min(MAX_BLOCK_K, ops.constexprs["PK"])
    assert reads_as(ops.packing, block_k, BLOCK_M, PACK_WARPS), ops.packing
    k, n = qw.shape
    scale_tile = (block_k, BLOCK_M, PACK_WARPS)
    sk, sn = ops.scales_for(*scale_tile).shape
    zk, zn = ops.zeros.shape if ops.zeros is not None else (1, 1)
    names = ("OT", "WT", "ST", "ZT", "KIND", "G", "HAS_Z", "TENSOR_SCALE", "PK")
    constexprs = {name: ops.constexprs[name] for name in names}
    if "TABLE" in ops.constexprs:  # a codebook's size (the other kinds: the default, 1)
        constexprs["TABLE"] = ops.constexprs["TABLE"]
    constexprs.update(YT=output, HAS_PERM=qw.perm is not None, BK=block_k)
    kp = k if qw.perm is not None else 1
    sizes = {"K": k, "N": n, "SK": sk, "SN": sn, "ZK": zk, "ZN": zn, "KP": kp}
    return ops, KernelCall(dequantize_tiles, constexprs, sizes, "w", ops.facts, scale_tile)


def compile_dequantize(qw: QuantizedWeight, dtype: Any = "f16", target: Any = "sm_90a"):
    """The `CompiledKernel` a `dequantize` of `qw` to `dtype` runs, compiled for `target`
    ("cpu" or a GPU architecture; no GPU needed) with the sizes and value facts of the
    call, for tools and tests to inspect (resources, source, `perf()`)."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a tilelang.quant.QuantizedWeight, got {type(qw).__name__}")
    _, call = _launch(qw, _output_type(dtype, None))
    facts = {**size_facts(call.sizes), **call.values}
    return call.kernel.compile(assume=facts, target=target, **call.constexprs)


def _perm(qw: QuantizedWeight) -> np.ndarray:
    """The row permutation as int32 (a one-element placeholder without act order)."""
    if qw.perm is None:
        return np.zeros(1, np.int32)
    return qw.perm.astype(np.int32)


def _run(
    call: KernelCall, ops: Operands, tensors: _Tensors, perm: Any, y: Any, run: Callable[..., Any]
) -> None:
    """Launches `call` by `run` (the kernel, or its interpreter) on the weight's tensors."""
    args = (tensors.w, tensors.s(call), tensors.z, tensors.table, perm, y, ops.t)
    run(*args, assume=call.values, **call.constexprs)


@accepts_host_tensors
def _host_dequantize(qw: QuantizedWeight, dtype: Any, out: Any, interpret: bool) -> np.ndarray:
    """The CPU-backend path (other libraries' CPU tensors as numpy views)."""
    if out is None:
        output = _output_type(dtype, None)
        out = np.empty(qw.shape, values_dtype(output))
    elif not isinstance(out, np.ndarray):
        raise TypeError(
            f"out must be a numpy array, a CPU tensor or a device tensor, got {type(out).__name__}"
        )
    else:
        output = _output_type(dtype, numpy_dtype(out.dtype))
        _check_host_out(out, qw.shape)
    ops, call = _launch(qw, output)
    ot = ops.constexprs["OT"]
    tensors = cached(qw, ("host tensors", ot), lambda: _Tensors.of(ops, _on_host))
    perm = cached(qw, ("dequantize perm", "host"), lambda: _perm(qw))
    run = dequantize_tiles.interpret if interpret else dequantize_tiles
    _run(call, ops, tensors, perm, out, run)
    return out


def _check_host_out(out: np.ndarray, shape: tuple[int, int]) -> None:
    if out.shape != shape:
        raise ValueError(f"out must have shape {list(shape)} (the weight's), got {list(out.shape)}")
    if not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array: got a read-only array")
    if not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a writeable C-contiguous array: got strides {out.strides} bytes"
        )


def _device_dequantize(qw: QuantizedWeight, dtype: Any, out: Any) -> Any:
    """The GPU path: the weight's device copies are the matmul's (`_Tensors`, made once
    per weight and operand type), the launch goes on `out`'s stream."""
    view = dlpack.imported(out)
    array = gpu.device_array(view)
    given = view.dtype if isinstance(view, dlpack.DeviceView) else _typestr_type(array.typestr)
    if given is None:  # torch's array interface says "<V2" for bf16: DLPack names it
        raise TypeError(f"out must hold f16, bf16 or f32 values, got typestr {array.typestr}")
    output = _output_type(dtype, given)
    if tuple(array.shape) != qw.shape:
        raise ValueError(
            f"out must have shape {list(qw.shape)} (the weight's), got {list(array.shape)}"
        )
    if not gpu.is_contiguous(array):
        raise ValueError("out must be C-contiguous on the GPU (call .contiguous())")
    ops, call = _launch(qw, output)
    ot = ops.constexprs["OT"]
    tensors = cached(qw, ("device tensors", ot), lambda: _Tensors.of(ops, gpu.DeviceBuffer))
    perm = cached(qw, ("dequantize perm", "device"), lambda: gpu.DeviceBuffer(_perm(qw)))
    target = out if gpu.is_torch_tensor(out) else view  # a DLPack view keeps bf16 its type
    _run(call, ops, tensors, perm, target, dequantize_tiles)
    return out


def _typestr_type(typestr: str) -> DType | None:
    """The tilelang dtype of an array interface's typestr, None when it names none."""
    try:
        return numpy_dtype(np.dtype(typestr))
    except TypeError:
        return None


__all__ = ["compile_dequantize", "dequantize", "dequantize_tiles"]
