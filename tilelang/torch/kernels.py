"""Torch operators for `tilelang.kernels`: ``tilelang::rms_norm`` and
``tilelang::silu_and_mul``, made by `tilelang.torch.op` from the kernels themselves
(their dtype constexprs follow the tensors: f32, f16, bf16), with the [..., H] forms
users call. Imported on its own (`import tilelang.torch.kernels`), so that
`tilelang.torch` does not load every kernel family.

Not here yet: `selective_scan`, whose kernel's optional tensors (z, bias, the last
state) have sizes no argument gives, so it needs a wrapper op of its own.
"""

from __future__ import annotations

import torch

from tilelang.kernels.norm import rms_norm_kernel, silu_and_mul_kernel
from tilelang.torch.op import op

#: Tiles for any H (the kernels loop over H in BH columns, masked at the edge).
RMS_NORM = op(rms_norm_kernel, "tilelang::rms_norm", BM=4, BH=256)
SILU_AND_MUL = op(silu_and_mul_kernel, "tilelang::silu_and_mul", BM=4, BH=128)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x · rsqrt(mean(x², -1) + eps) · weight over the last dimension of x [..., H]
    (f32, f16 or bf16); weight [H] of x's dtype or f32. Computed in f32, rounded once."""
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., H], got a scalar")
    h = x.shape[-1]
    return RMS_NORM(x.reshape(-1, h), weight, float(eps)).reshape(x.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :d]) · x[..., d:] for x [..., 2·d]; returns [..., d] of x's dtype."""
    if x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(f"x must have an even last dimension [..., 2·d], got {list(x.shape)}")
    d = x.shape[-1] // 2
    return SILU_AND_MUL(x.reshape(-1, 2, d)).reshape(*x.shape[:-1], d)
