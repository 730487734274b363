"""The torch operator ``tilelang::fused_add_rms_norm``: `tilelang.kernels.fused_add_rms_norm`
(vLLM's fused residual add and RMSNorm) on torch tensors, x and residual updated in
place, so declared mutated.

Written over the library function rather than made by `tilelang.torch.op`: the function
picks the kernel's tiles from H (the whole row in registers up to `WHOLE_ROW` columns,
two passes past it) and views [..., H] as rows, which `op`'s fixed constexprs cannot.
Kept beside `tilelang.torch.kernels` (which imports it, so that importing that module
registers this operator too): a module per concept, and that one near its size limit.
Under torch.compile a library call on torch tensors is traced as `fused_add_rms_norm`
here (`tilelang.runtime.host_calls.register_torch_form`).
"""

from __future__ import annotations

import torch

import tilelang.kernels as library
from tilelang.kernels import norm
from tilelang.runtime import host_calls


@torch.library.custom_op(
    "tilelang::fused_add_rms_norm", mutates_args=("x", "residual"), device_types=("cpu", "cuda")
)
def fused_add_rms_norm_op(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> None:
    """`tilelang.kernels.fused_add_rms_norm` on the tensors (CPU ones as zero-copy numpy
    views, `runtime.host_calls`): residual ← x + residual, x ← its RMSNorm, in place."""
    norm.fused_add_rms_norm(x, residual, weight, eps)


@fused_add_rms_norm_op.register_fake
def _fused_add_rms_norm_fake(x, residual, weight, eps):  # fmt: skip
    if x.dim() < 1 or residual.shape != x.shape or weight.dim() != 1:
        raise ValueError(
            f"tilelang::fused_add_rms_norm: x and residual must be [..., H] of one shape and "
            f"weight [H], got x {list(x.shape)}, residual {list(residual.shape)} and weight "
            f"{list(weight.shape)}"
        )


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6
) -> None:
    """vLLM's fused_add_rms_norm as the torch operator ``tilelang::fused_add_rms_norm``:
    residual ← x + residual (rounded to the dtype), x ← residual · rsqrt(mean(residual²,
    -1) + eps) · weight (shapes and dtypes: `tilelang.kernels.fused_add_rms_norm`).
    Returns None."""
    fused_add_rms_norm_op(x, residual, weight, float(eps))


host_calls.register_torch_form(library.fused_add_rms_norm, fused_add_rms_norm)
