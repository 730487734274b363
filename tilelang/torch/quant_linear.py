"""`QuantLinear`: a drop-in `torch.nn.Module` for `nn.Linear` with a `tilelang.quant`
weight, and the operator it calls, ``tilelang::quant_linear``.

y = x @ W + bias for x [..., K] (float16 or bfloat16; on the CPU through the LLVM
backend, on CUDA float16 through `tilelang.quant.matmul`'s GPU path), W the quantized
[K, N] weight (`QuantizedWeight`: `nn.Linear.weight` transposed). The arithmetic is
`tilelang.quant.matmul`'s: W's values exactly as `QuantizedWeight.dequantize()` gives
them, f32 accumulation, one rounding to x's dtype.

The weight is not a torch tensor (codes, scales and zero points in tilelang's layouts),
so the operator takes it by a handle: an int naming the module's `QuantizedWeight` in a
process-wide table (dropped when the module is collected). torch.compile sees the
handle as a constant of the module, the fake implementation reads N from the table, and
the graph has no break. The weight itself is saved with `QuantizedWeight.save` (the
module's state_dict holds only the bias).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import torch
from torch import nn

from tilelang import quant
from tilelang.quant import QuantizedWeight

_WEIGHTS: dict[int, QuantizedWeight] = {}
_HANDLES = itertools.count(1)


def _weight(handle: int) -> QuantizedWeight:
    found = _WEIGHTS.get(handle)
    if found is None:
        raise ValueError(f"tilelang::quant_linear: no QuantLinear weight has handle {handle}")
    return found


def _check_x(x: torch.Tensor, qw: QuantizedWeight) -> None:
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"QuantLinear: x must be float16 or bfloat16 (the quantized kernels' operand "
            f"types), got {x.dtype}; call .half() or .bfloat16() on the input"
        )
    k = qw.shape[0]
    if x.dim() == 0 or x.shape[-1] != k:
        raise ValueError(
            f"QuantLinear: x must have shape [..., {k}] (in_features), got {list(x.shape)}"
        )


def _check_bias(bias: torch.Tensor | None, x: torch.Tensor, n: int) -> None:
    if bias is not None and (bias.dtype != x.dtype or tuple(bias.shape) != (n,)):
        raise ValueError(
            f"QuantLinear: bias must be [{n}] of x's dtype {x.dtype}, got "
            f"{bias.dtype} {list(bias.shape)}"
        )


def _host(t: torch.Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU float16/bfloat16 tensor (no copy)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


@torch.library.custom_op("tilelang::quant_linear", mutates_args=(), device_types="cpu")
def quant_linear(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ W (+ bias) with W the `QuantizedWeight` registered under `weight`."""
    qw = _weight(weight)
    _check_x(x, qw)
    n = qw.shape[1]
    _check_bias(bias, x, n)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype)
    x_host = _host(x.detach().contiguous())
    b_host = None if bias is None else _host(bias.detach().contiguous())
    quant.matmul(x_host, qw, bias=b_host, out=_host(out))
    return out


@quant_linear.register_kernel("cuda")
def _quant_linear_cuda(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    qw = _weight(weight)
    _check_x(x, qw)
    if x.dtype != torch.float16:
        raise TypeError("QuantLinear on CUDA takes float16 x (tilelang.quant.matmul's GPU path)")
    n = qw.shape[1]
    _check_bias(bias, x, n)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    return quant.matmul(x.detach().contiguous(), qw, bias=bias, out=out)


@quant_linear.register_fake
def _quant_linear_fake(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    qw = _weight(weight)
    _check_x(x, qw)
    _check_bias(bias, x, qw.shape[1])
    return x.new_empty((*x.shape[:-1], qw.shape[1]))


class QuantLinear(nn.Module):
    """`nn.Linear` with a quantized weight: in_features K, out_features N."""

    def __init__(self, weight: QuantizedWeight, bias: Any = None) -> None:
        super().__init__()
        if not isinstance(weight, QuantizedWeight):
            raise TypeError(
                f"weight: expected a tilelang.quant.QuantizedWeight, got {type(weight).__name__}"
            )
        self.qweight = weight
        self.in_features, self.out_features = weight.shape
        if bias is not None:
            bias = torch.as_tensor(bias).detach().clone()
            if tuple(bias.shape) != (self.out_features,):
                raise ValueError(
                    f"bias: expected shape [{self.out_features}] (out_features), got "
                    f"{list(bias.shape)}"
                )
        self.register_buffer("bias", bias)
        self.handle = next(_HANDLES)
        _WEIGHTS[self.handle] = weight
        weakref.finalize(self, _WEIGHTS.pop, self.handle, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return quant_linear(x, self.handle, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, weight={self.qweight!r}"
        )

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        dtype: Any = None,
        group_size: int | None = 128,
        *,
        zero_point: bool = False,
        scale_dtype: Any = None,
        format: str | None = None,
    ) -> QuantLinear:
        """`linear` with its weight quantized by `tilelang.quant.quantize` (the same
        arguments: `dtype` such as "u4", "i4", "f4e2m1", `group_size`, ...)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected a torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach().to("cpu", torch.float64).numpy().T  # [K, N]
        qw = quant.quantize(
            w,
            dtype,
            group_size=group_size,
            zero_point=zero_point,
            scale_dtype=scale_dtype,
            format=format,
        )
        return cls(qw, linear.bias)

    @classmethod
    def from_gptq_state_dict(
        cls, state_dict: Mapping[str, Any], prefix: str, bits: int = 4, sym: bool = True
    ) -> QuantLinear:
        """The layer `prefix` ("model.layers.0.mlp.up_proj") of a GPTQ checkpoint: its
        qweight, qzeros, scales, and g_idx and bias when present."""
        keys = _keys(state_dict, prefix, ("qweight", "scales"))
        qw = quant.from_gptq(
            state_dict[keys["qweight"]],
            state_dict.get(keys["qzeros"]),
            state_dict[keys["scales"]],
            g_idx=state_dict.get(keys["g_idx"]),
            bits=bits,
            sym=sym,
        )
        return cls(qw, state_dict.get(keys["bias"]))

    @classmethod
    def from_awq_state_dict(cls, state_dict: Mapping[str, Any], prefix: str) -> QuantLinear:
        """The layer `prefix` of an AWQ (GEMM-packed, 4-bit) checkpoint: its qweight,
        qzeros, scales, and bias when present."""
        keys = _keys(state_dict, prefix, ("qweight", "qzeros", "scales"))
        qw = quant.from_awq(
            state_dict[keys["qweight"]], state_dict[keys["qzeros"]], state_dict[keys["scales"]]
        )
        return cls(qw, state_dict.get(keys["bias"]))


def _keys(state_dict: Mapping[str, Any], prefix: str, required: tuple[str, ...]) -> dict:
    stem = prefix if not prefix or prefix.endswith(".") else prefix + "."
    keys = {name: stem + name for name in ("qweight", "qzeros", "scales", "g_idx", "bias")}
    missing = [keys[name] for name in required if keys[name] not in state_dict]
    if missing:
        raise KeyError(
            f"state_dict has no {', '.join(missing)} (prefix {prefix!r}; its keys start with "
            f"{sorted({k.rsplit('.', 1)[0] for k in state_dict})[:5]})"
        )
    return keys
