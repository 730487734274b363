"""`tilelang.torch.moe_matmul` and `QuantMoE`: `tilelang.quant.moe_matmul` (quantized
Mixture-of-Experts, vLLM's fused_moe) on torch tensors, as the operators
``tilelang::moe_matmul`` (a `QuantizedExperts` object's) and ``tilelang::quant_moe``
(a `QuantMoE` module's).

The experts (`QuantizedExperts`) are not a torch tensor the kernels read as they are,
so the operators find them by a handle, an int naming an entry of a process-wide table.
``tilelang::moe_matmul`` takes one per `QuantizedExperts` object for its life, in a
table that holds the object weakly (the entry goes when the object is collected): a
`QuantizedExperts` is immutable, so the handle alone says which weights a call
multiplies by; the fake implementation reads K and N from the entry. A `QuantMoE`
keeps its experts as buffers (the stacked weight's arrays and a ``meta`` buffer with
its fields and the number of experts), so its state_dict is plain tensors, and
``tilelang::quant_moe`` takes them and finds the experts from them, as
``tilelang::quant_linear`` finds a QuantLinear's weight: `tilelang.torch.weight_state`,
shared by both modules (loading, copies, pickles, casts, experts rebuilt from buffers
that changed, no gradient). No int of the module goes to it, so torch.compile traces
every QuantMoE of the same shapes as one graph. Its fake implementation reads N from
the scales' shape. ``tilelang::moe_matmul``'s handle is evaluated at trace time
(`handle`, whose result is guarded on the object), so its graph has no break either.

On the CPU an operator hands `quant.moe_matmul` the tensors, which it reads as
zero-copy numpy views (`runtime.host_calls`; bf16 as ml_dtypes), so its results are
that function's on the same numpy inputs, bit for bit; on CUDA it calls the function's
GPU path with the tensors (int64 ids cast to int32; compiled in tilelang's tests, not
measured, and not run by this module's tests). No gradient flows through either
operator: their results never require grad, and the first call with an input that does
warns `tilelang.torch.NoGradientWarning` (`weight_state.define_op`).
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch

from tilelang import quant
from tilelang.quant import QuantizedWeight
from tilelang.quant.formats import get_format
from tilelang.quant.moe import QuantizedExperts
from tilelang.torch import dtypes as td
from tilelang.torch.weight_state import (
    WeightModule,
    check_not_meta,
    define_op,
    held,
    warn_no_gradient,
)

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


def _check(x: torch.Tensor, ids: torch.Tensor, weights: Any, n: int) -> tuple:
    """The checks a fake tensor allows without the experts (dtypes, shapes, devices;
    the ids' values are checked by `quant.moe_matmul` on the CPU); the result's shape,
    N the experts' columns."""
    if x.dtype not in _TORCH_TYPES:
        raise TypeError(
            f"moe_matmul: x must be float16 or bfloat16 (the kernels' operand types), got {x.dtype}"
        )
    if x.dim() != 2:
        raise ValueError(f"moe_matmul: x must have shape [T, K], got {list(x.shape)}")
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


def _check_experts(x: torch.Tensor, qe: QuantizedExperts) -> None:
    """The checks of x against the experts: K, and the scales' type."""
    _, k, _ = qe.shape
    if x.shape[1] != k:
        raise ValueError(
            f"moe_matmul: x must have shape [T, {k}] (K, the experts' rows), got {list(x.shape)}"
        )
    scales = qe.stacked.scale_dtype
    if get_format(qe.format).kind == "scaled" and scales != td.tilelang_dtype(x.dtype):
        raise TypeError(
            f"moe_matmul: x is {x.dtype}, so the kernels multiply by scales of that type, but "
            f"the experts' scales are {scales}: quantize them with scale_dtype="
            f"'{td.tilelang_dtype(x.dtype)}' (a QuantMoE: .to({x.dtype})), or pass {scales} x"
        )


def _forward(x: torch.Tensor, qe: QuantizedExperts, topk_ids, topk_weights) -> torch.Tensor:
    """`quant.moe_matmul` on the tensors, on the CPU (as zero-copy numpy views:
    `runtime.host_calls`) and on CUDA alike."""
    shape = _check(x, topk_ids, topk_weights, qe.shape[2])
    _check_experts(x, qe)
    out = torch.empty(shape, dtype=x.dtype, device=x.device)
    weights = None if topk_weights is None else topk_weights.detach().contiguous()
    ids = topk_ids.detach().contiguous()
    if ids.is_cuda:
        ids = ids.to(torch.int32)  # the GPU path takes int32 ids
    return quant.moe_matmul(x.detach().contiguous(), qe, ids, weights, out=out)


def _moe_matmul(x, handle, topk_ids, topk_weights) -> torch.Tensor:
    """`quant.moe_matmul` of x by the experts registered under `handle`."""
    return _forward(x, _experts(handle), topk_ids, topk_weights)


def _moe_matmul_fake(x, handle, topk_ids, topk_weights) -> torch.Tensor:
    qe = _experts(handle)
    shape = _check(x, topk_ids, topk_weights, qe.shape[2])
    _check_experts(x, qe)
    return x.new_empty(shape)


#: The operator of `moe_matmul` (module docstring).
MOE_MATMUL = "tilelang::moe_matmul"
moe_matmul_op = define_op(
    MOE_MATMUL,
    "(Tensor x, int handle, Tensor topk_ids, Tensor? topk_weights) -> Tensor",
    _moe_matmul,
    _moe_matmul_fake,
)


def _quant_moe(x, topk_ids, topk_weights, codes, scale_codes, zeros, meta) -> torch.Tensor:
    """`quant.moe_matmul` of x by the experts a QuantMoE's buffers hold (found, or
    rebuilt when the buffers changed, by `weight_state.held`)."""
    tensors = (codes, scale_codes, zeros, None, meta)  # experts have no perm
    experts = held(tensors, QuantMoE._from_tensors, "QuantMoE buffers")
    return _forward(x, experts, topk_ids, topk_weights)


def _quant_moe_fake(x, topk_ids, topk_weights, codes, scale_codes, zeros, meta):
    if x.device.type != "meta":  # a skeleton's buffers given an input with values
        check_not_meta((codes, scale_codes, zeros, meta), "QuantMoE buffers")
    n = scale_codes.shape[-1]  # scale_codes is [E·K / G, N] whatever the format
    return x.new_empty(_check(x, topk_ids, topk_weights, n))


#: The operator of a QuantMoE (module docstring).
QUANT_MOE = "tilelang::quant_moe"
quant_moe = define_op(
    QUANT_MOE,
    "(Tensor x, Tensor topk_ids, Tensor? topk_weights, Tensor codes, Tensor scale_codes, "
    "Tensor? zeros, Tensor meta) -> Tensor",
    _quant_moe,
    _quant_moe_fake,
)


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
    warn_no_gradient(MOE_MATMUL, (x, topk_weights))
    return moe_matmul_op(x, handle(qe), topk_ids, topk_weights)


class QuantMoE(WeightModule):
    """The experts' half of a MoE layer: `forward(x, topk_ids, topk_weights)` is
    `moe_matmul` by the `QuantizedExperts` its buffers hold (``experts``; setting it
    makes another's arrays the buffers). The router, and anything around the experts'
    matmul, stay the model's. Its state is `tilelang.torch.weight_state`'s (module
    docstring): the state_dict is the stacked weight's tensors and ``meta`` (with the
    number of experts), which `load_state_dict` loads into a QuantMoE of any shapes."""

    NAME = "QuantMoE"
    HELD = QuantizedExperts
    PICKLED = "experts"  # the attribute a module pickled before its buffers held them in
    OWN = ("experts",)

    def __init__(self, experts: QuantizedExperts) -> None:
        super().__init__()
        _check_held(experts)
        self._start(experts)

    @property
    def experts(self) -> QuantizedExperts:
        """The `QuantizedExperts` the buffers hold (rebuilt from them, once, after they
        changed)."""
        return self._held()

    @experts.setter
    def experts(self, experts: QuantizedExperts) -> None:
        _check_held(experts)
        self._adopt(experts)

    @staticmethod
    def _parts(experts: QuantizedExperts) -> tuple[QuantizedWeight, dict[str, Any]]:
        return experts.stacked, {"experts": experts.experts}

    @staticmethod
    def _assemble(weight: QuantizedWeight, own: dict[str, Any]) -> QuantizedExperts:
        return QuantizedExperts(weight, own["experts"])

    def _shapes(self, experts: QuantizedExperts) -> None:
        self.num_experts, self.in_features, self.out_features = experts.shape

    def forward(
        self, x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        weight = (self.codes, self.scale_codes, self.zeros, self.meta)
        warn_no_gradient(QUANT_MOE, (x, topk_weights))
        return quant_moe(x, topk_ids, topk_weights, *weight)

    def extra_repr(self) -> str:
        return f"{self.experts!r}"

    @classmethod
    def from_experts(
        cls, w: torch.Tensor, dtype: Any = None, group_size: int | None = None, **kwargs: Any
    ) -> QuantMoE:
        """Experts `w` [E, K, N] quantized by `tilelang.quant.quantize_experts` (the same
        arguments and defaults; `zero_point`, `scale_dtype`, `format` by keyword)."""
        return cls(quant.quantize_experts(w, dtype, group_size, **kwargs))


def _check_held(experts: Any) -> None:
    if not isinstance(experts, QuantizedExperts):
        raise TypeError(
            f"experts: expected a tilelang.quant.QuantizedExperts, got {type(experts).__name__}"
        )
