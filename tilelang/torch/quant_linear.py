"""`QuantLinear`: a drop-in `torch.nn.Module` for `nn.Linear` with a `tilelang.quant`
weight, and the operator it calls, ``tilelang::quant_linear``.

y = x @ W + bias for x [..., K] (float16 or bfloat16; on the CPU through the LLVM
backend, on CUDA through `tilelang.quant.matmul`'s GPU path), W the quantized
[K, N] weight (`QuantizedWeight`: `nn.Linear.weight` transposed). The arithmetic is
`tilelang.quant.matmul`'s: W's values exactly as `QuantizedWeight.dequantize()` gives
them, f32 accumulation, one rounding to x's dtype.

The weight is not a torch tensor (codes, scales and zero points in tilelang's layouts),
so the operator takes it by a handle: an int naming the module's `QuantizedWeight` in a
process-wide table (dropped when the module is collected). torch.compile sees the
handle as a constant of the module, the fake implementation reads N from the table, and
the graph has no break.

The state_dict holds the weight, so `load_state_dict` and `torch.save`/`torch.load`
(weights_only too) round-trip a model: the arrays of `QuantizedWeight.arrays()` as
buffers — ``codes`` (uint8, the packed code bytes), ``scale_codes`` (the scales' bit
patterns as the signed integer of their width: integers, so `module.half()` leaves
them be), ``zeros`` (int32) and ``perm`` (int64) when the weight has them, and
``bias`` — and the rest (format, dtypes, shape, group size, packing, tensor scale,
the arrays' format version) as the module's extra state, plain Python values. The
module's weight is those buffers' memory; loading replaces the buffers (any shape the
saved weight had) and rebuilds the weight from them, under the same handle.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from tilelang import quant
from tilelang.quant import QuantizedWeight, io

#: The weight's arrays (`QuantizedWeight.arrays()`) a QuantLinear keeps as buffers.
WEIGHT_BUFFERS = ("codes", "scale_codes", "zeros", "perm")
_OPTIONAL_BUFFERS = ("zeros", "perm", "bias")

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


def _forward(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    """`quant.matmul` on the tensors, on the CPU (as zero-copy numpy views:
    `runtime.host_calls`) and on CUDA alike."""
    qw = _weight(weight)
    _check_x(x, qw)
    n = qw.shape[1]
    _check_bias(bias, x, n)
    out = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    bias = None if bias is None else bias.detach().contiguous()
    return quant.matmul(x.detach().contiguous(), qw, bias=bias, out=out)


@torch.library.custom_op("tilelang::quant_linear", mutates_args=(), device_types="cpu")
def quant_linear(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ W (+ bias) with W the `QuantizedWeight` registered under `weight`."""
    return _forward(x, weight, bias)


@quant_linear.register_kernel("cuda")
def _quant_linear_cuda(x: torch.Tensor, weight: int, bias: torch.Tensor | None) -> torch.Tensor:
    return _forward(x, weight, bias)


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
        self.handle = next(_HANDLES)
        self._adopt(weight)
        if bias is not None:
            bias = torch.as_tensor(bias).detach().clone()
            if tuple(bias.shape) != (self.out_features,):
                raise ValueError(
                    f"bias: expected shape [{self.out_features}] (out_features), got "
                    f"{list(bias.shape)}"
                )
        self.register_buffer("bias", bias)
        weakref.finalize(self, _WEIGHTS.pop, self.handle, None)

    def _adopt(self, weight: QuantizedWeight) -> None:
        """`weight` becomes the module's: its arrays the buffers (sharing their memory
        where numpy lends it writeable), on the device the buffers were on."""
        old = self._buffers.get("codes")
        device = None if old is None else old.device
        arrays = weight.arrays()
        for name in WEIGHT_BUFFERS:
            value = arrays[name]
            if name == "scale_codes":
                value = value.view(f"i{value.dtype.itemsize}")
            tensor = None if value is None else _shared(value)
            if tensor is not None and device is not None:
                tensor = tensor.to(device)
            self.register_buffer(name, tensor)
        self.qweight = weight
        self.in_features, self.out_features = weight.shape
        _WEIGHTS[self.handle] = weight

    def get_extra_state(self) -> dict[str, Any]:
        """What rebuilds the weight beside its buffers: plain Python values only (what
        `torch.load(weights_only=True)` reads)."""
        arrays = self.qweight.arrays()
        state: dict[str, Any] = {"version": io.VERSION}
        for name, value in arrays.items():
            if name in WEIGHT_BUFFERS or value is None:
                continue
            state[name] = np.asarray(value).tolist()
        return state

    def set_extra_state(self, state: Any) -> None:
        """The weight rebuilt from the loaded buffers and `state` (`load_state_dict`
        calls this after it has filled the buffers)."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"QuantLinear: the extra state must be a dict of the weight's fields, got "
                f"{type(state).__name__}"
            )
        arrays = dict(state)
        for name in WEIGHT_BUFFERS:
            tensor = self._buffers.get(name)
            if tensor is not None:
                value = tensor.detach().cpu().contiguous().numpy()
                if name == "scale_codes":
                    value = value.view(f"u{value.dtype.itemsize}")
                arrays[name] = value
        self._adopt(QuantizedWeight.from_arrays(arrays, "QuantLinear state_dict"))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ) -> None:
        # The saved weight may have other shapes than this module's (another group size,
        # packing or dtype), and optional arrays this one lacks: each buffer is made to
        # the saved one's shape and dtype first, then filled by the usual copy.
        if prefix + "_extra_state" in state_dict:
            for name in (*WEIGHT_BUFFERS, "bias"):
                given = state_dict.get(prefix + name)
                if isinstance(given, torch.Tensor):
                    old = self._buffers.get(name)
                    device = given.device if old is None else old.device
                    self._buffers[name] = torch.empty_like(given, device=device)
                elif given is None and name in _OPTIONAL_BUFFERS:
                    self._buffers[name] = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

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


def _shared(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor over `array`'s memory (a copy where numpy's is read-only or strided)."""
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.ascontiguousarray(array).copy()
    return torch.from_numpy(array)


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
