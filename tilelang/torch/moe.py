"""`tilelang.torch.moe_matmul` and `QuantMoE`: `tilelang.quant.moe_matmul` (quantized
Mixture-of-Experts, vLLM's fused_moe) on torch tensors, as the operator
``tilelang::moe_matmul``.

The experts (`QuantizedExperts`) are not a torch tensor the kernels read as they are,
so the operator finds them by a handle, as ``tilelang::quant_linear`` finds its weight:
an int, one per `QuantizedExperts` object for its life, naming an entry of a
process-wide table that holds the object weakly (the entry goes when the object is
collected). Unlike a QuantLinear's, the experts have no tensors of their own to pass
along: a `QuantizedExperts` is immutable, so the handle alone says which weights a
call multiplies by. The fake implementation reads K and N from the table's entry;
torch.compile sees the handle as a constant (`handle` is evaluated at trace time, and
its result guarded on the object), so the graph has no break.

On the CPU the operator hands `quant.moe_matmul` zero-copy numpy views of the tensors
(bf16 through an int16 view), so its results are that function's on the same numpy
inputs, bit for bit; on CUDA it calls the function's GPU path with the tensors
(compiled in tilelang's tests, not measured, and not run by this module's tests).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch
from torch import nn

from tilelang import quant
from tilelang.quant.formats import get_format
from tilelang.quant.moe import QuantizedExperts
from tilelang.torch import dtypes as td

_TORCH_TYPES = (torch.float16, torch.bfloat16)
_ID_TYPES = (torch.int32, torch.int64)

_EXPERTS: dict[int, weakref.ref] = {}
_HANDLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_COUNTER = itertools.count(1)


def _register(qe: QuantizedExperts) -> int:
    handle = _HANDLES.get(qe)
    if handle is None:
        handle = next(_COUNTER)
        _HANDLES[qe] = handle
        _EXPERTS[handle] = weakref.ref(qe)
        weakref.finalize(qe, _EXPERTS.pop, handle, None)
    return handle


# Evaluated, not traced, under torch.compile: the handle is a constant of the graph.
@torch.compiler.assume_constant_result
def handle(qe: QuantizedExperts) -> int:
    """The operator's handle of `qe` (module docstring), made on first use."""
    if not isinstance(qe, QuantizedExperts):
        raise TypeError(
            f"qe must be a tilelang.quant.QuantizedExperts (tilelang.quant.quantize_experts), "
            f"got {type(qe).__name__}"
        )
    return _register(qe)


def _experts(handle: int) -> QuantizedExperts:
    ref = _EXPERTS.get(handle)
    qe = None if ref is None else ref()
    if qe is None:
        raise ValueError(
            f"tilelang::moe_matmul: handle {handle} names no live QuantizedExperts (pass "
            f"the experts to tilelang.torch.moe_matmul, which makes their handle)"
        )
    return qe


def _check(x: torch.Tensor, qe: QuantizedExperts, ids: torch.Tensor, weights: Any) -> tuple:
    """The checks a fake tensor allows (dtypes and shapes; the ids' values are checked
    by `quant.moe_matmul`); the result's shape."""
    _, k, n = qe.shape
    if x.dtype not in _TORCH_TYPES:
        raise TypeError(
            f"moe_matmul: x must be float16 or bfloat16 (the kernels' operand types), got {x.dtype}"
        )
    scales = qe.stacked.scale_dtype
    if get_format(qe.format).kind == "scaled" and scales != td.tilelang_dtype(x.dtype):
        raise TypeError(
            f"moe_matmul: x is {x.dtype}, so the kernels multiply by scales of that type, but "
            f"the experts' scales are {scales}: quantize them with scale_dtype="
            f"'{td.tilelang_dtype(x.dtype)}', or pass {scales} x"
        )
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(
            f"moe_matmul: x must have shape [T, {k}] (K, the experts' rows), got {list(x.shape)}"
        )
    if ids.dtype not in _ID_TYPES:
        raise TypeError(f"moe_matmul: topk_ids must be int32 or int64, got {ids.dtype}")
    if ids.dim() != 2 or ids.shape[0] != x.shape[0]:
        raise ValueError(
            f"moe_matmul: topk_ids must have shape [T, top_k] with T = {x.shape[0]} (x's "
            f"rows), got {list(ids.shape)}"
        )
    if weights is not None:
        if weights.dtype != torch.float32:
            raise TypeError(f"moe_matmul: topk_weights must be float32, got {weights.dtype}")
        if weights.shape != ids.shape:
            raise ValueError(
                f"moe_matmul: topk_weights must have topk_ids' shape {list(ids.shape)}, got "
                f"{list(weights.shape)}"
            )
    for name, tensor in (("topk_ids", ids), ("topk_weights", weights)):
        if tensor is not None and tensor.device != x.device:
            raise ValueError(
                f"moe_matmul: {name} must be on x's device {x.device}, got {tensor.device}"
            )
    return (x.shape[0], n) if weights is not None else (x.shape[0], ids.shape[1], n)


@torch.library.custom_op("tilelang::moe_matmul", mutates_args=(), device_types="cpu")
def moe_matmul_op(
    x: torch.Tensor, handle: int, topk_ids: torch.Tensor, topk_weights: torch.Tensor | None
) -> torch.Tensor:
    """`quant.moe_matmul` of x by the experts registered under `handle`."""
    qe = _experts(handle)
    shape = _check(x, qe, topk_ids, topk_weights)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    t = td.tilelang_dtype(x.dtype)
    ids = topk_ids.detach().contiguous().numpy()
    weights = None if topk_weights is None else topk_weights.detach().contiguous().numpy()
    x_host = td.host_array(x.detach().contiguous(), t)
    quant.moe_matmul(x_host, qe, ids, weights, out=td.host_array(out, t))
    return out


@moe_matmul_op.register_kernel("cuda")
def _moe_matmul_cuda(x, handle, topk_ids, topk_weights) -> torch.Tensor:
    qe = _experts(handle)
    shape = _check(x, qe, topk_ids, topk_weights)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    weights = None if topk_weights is None else topk_weights.detach()
    ids = topk_ids.detach().to(torch.int32)  # the GPU path takes int32 ids
    return quant.moe_matmul(x.detach(), qe, ids, weights, out=out)


@moe_matmul_op.register_fake
def _moe_matmul_fake(x, handle, topk_ids, topk_weights) -> torch.Tensor:
    shape = _check(x, _experts(handle), topk_ids, topk_weights)
    return x.new_empty(shape)


def moe_matmul(
    x: torch.Tensor,
    qe: QuantizedExperts,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """`tilelang.quant.moe_matmul` on torch tensors, as the operator
    ``tilelang::moe_matmul``: x [T, K] float16 or bfloat16, `topk_ids` [T, top_k] int32
    or int64 expert ids (-1: no expert), `topk_weights` [T, top_k] float32 or None.
    Returns y [T, N] (weighted) or the slot products [T, top_k, N], of x's dtype."""
    return moe_matmul_op(x, handle(qe), topk_ids, topk_weights)


class QuantMoE(nn.Module):
    """The experts' half of a MoE layer: `forward(x, topk_ids, topk_weights)` is
    `moe_matmul` by the `QuantizedExperts` it holds (``experts``). The router, and
    anything around the experts' matmul, stay the model's. Its state_dict is empty: the
    experts are a numpy object, kept as they are (``experts.stacked.save(path)``, and
    ``QuantizedExperts(QuantizedWeight.load(path), E)`` back); not done yet: buffers."""

    def __init__(self, experts: QuantizedExperts) -> None:
        super().__init__()
        if not isinstance(experts, QuantizedExperts):
            raise TypeError(
                f"experts: expected a tilelang.quant.QuantizedExperts, got {type(experts).__name__}"
            )
        self.experts = experts
        self.num_experts, self.in_features, self.out_features = experts.shape

    def forward(
        self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return moe_matmul(x, self.experts, topk_ids, topk_weights)

    def extra_repr(self) -> str:
        return f"{self.experts!r}"

    @classmethod
    def from_experts(
        cls, w: torch.Tensor, dtype: Any = None, group_size: int | None = None, **kwargs: Any
    ) -> QuantMoE:
        """Experts `w` [E, K, N] quantized by `tilelang.quant.quantize_experts` (the same
        arguments and defaults; `zero_point`, `scale_dtype`, `format` by keyword)."""
        return cls(quant.quantize_experts(w, dtype, group_size, **kwargs))
