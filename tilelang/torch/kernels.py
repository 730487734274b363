"""Torch operators for `tilelang.kernels`: ``tilelang::rms_norm`` and
``tilelang::silu_and_mul``, made by `tilelang.torch.op` from the kernels themselves
(their dtype constexprs follow the tensors: f32, f16, bf16), with the [..., H] forms
users call; and ``tilelang::selective_scan``, written by hand over
`tilelang.kernels.selective_scan` (its kernel's optional tensors, z, D, the bias and
the last state, have sizes no argument gives, so `op` cannot derive it); and, by hand
for the same reason, ``tilelang::flash_attention``, ``tilelang::flash_attention_varlen``
and ``tilelang::paged_decode_attention`` over `tilelang.kernels`. Imported on its
own (`import tilelang.torch.kernels`), so that `tilelang.torch` does not load every
kernel family.
"""

from __future__ import annotations

import torch

from tilelang.kernels import attention, paged_attention, ssm
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


@torch.library.custom_op("tilelang::selective_scan", mutates_args=(), device_types=("cpu", "cuda"))
def selective_scan_op(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, last state): `tilelang.kernels.selective_scan` with return_last_state, on
    the tensors themselves: on the CPU as zero-copy numpy views, its outputs tensors
    over the same memory (`runtime.host_calls`); on CUDA launched on torch's current
    stream, allocating with torch."""
    return ssm.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True)


@selective_scan_op.register_fake
def _selective_scan_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    if u.dim() != 3 or A.dim() != 2:
        raise ValueError(
            f"tilelang::selective_scan: u must be [batch, Dm, L] and A [Dm, N], got u "
            f"{list(u.shape)} and A {list(A.shape)}"
        )
    nb, dm, _ = u.shape
    return u.new_empty(u.shape), u.new_empty((nb, dm, A.shape[1]), dtype=torch.float32)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """mamba_ssm's `selective_scan_fn` forward as the torch operator
    ``tilelang::selective_scan`` (shapes and dtypes: `tilelang.kernels.selective_scan`):
    out [batch, Dm, L] in u's dtype, and with `return_last_state` (out, last state
    [batch, Dm, N] in f32)."""
    out, last = selective_scan_op(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
    return (out, last) if return_last_state else out


# ------------------------------------------------------------------------ attention
# Written by hand like selective_scan: the kernels' lse and split buffers have sizes no
# argument gives, and their wrappers pick tiles and splits from the shapes.


@torch.library.custom_op("tilelang::flash_attention", mutates_args=(), device_types=("cpu", "cuda"))
def flash_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    scale: float | None,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse): `tilelang.kernels.flash_attention` over fixed-length [B, S, H, D]
    tensors. lse is [B, H, Sq] f32 with `return_lse`, else an empty f32 tensor (an
    operator returns the same number of tensors whatever its flags)."""
    return _attention((q, k, v), causal, scale, (), return_lse)


def _attention(
    tensors: tuple[torch.Tensor, ...], causal: bool, scale: float | None, tail: tuple, lse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`tilelang.kernels.flash_attention(q, k, v, causal, scale, [cu_q, cu_k], *tail)`
    on the tensors (CPU ones as zero-copy numpy views: `runtime.host_calls`); (o, lse or
    an empty f32 tensor)."""
    q = tensors[0]
    result = attention.flash_attention(
        *tensors[:3], causal, scale, *tensors[3:], *tail, return_lse=lse
    )
    out, lse_out = result if lse else (result, None)
    return out, q.new_empty(0, dtype=torch.float32) if lse_out is None else lse_out


@flash_attention_op.register_fake
def _flash_attention_fake(q, k, v, causal, scale, return_lse):
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(
            f"tilelang::flash_attention: q must be [batch, Sq, H, D] and k [batch, Sk, H_kv, "
            f"D], got q {list(q.shape)} and k {list(k.shape)}"
        )
    nb, sq, heads, _ = q.shape
    lse_shape = (nb, heads, sq) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


@torch.library.custom_op(
    "tilelang::flash_attention_varlen", mutates_args=(), device_types=("cpu", "cuda")
)
def flash_attention_varlen_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    causal: bool,
    scale: float | None,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse): `tilelang.kernels.flash_attention` over packed sequences, q [total_q,
    H, D]; lse [H, total_q] f32 with `return_lse`, else an empty f32 tensor."""
    tensors = (q, k, v, cu_seqlens_q, cu_seqlens_k)
    return _attention(tensors, causal, scale, (max_seqlen_q,), return_lse)


@flash_attention_varlen_op.register_fake
def _flash_attention_varlen_fake(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, scale, return_lse
):
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(
            f"tilelang::flash_attention_varlen: q must be [total_q, H, D] and k [total_k, "
            f"H_kv, D], got q {list(q.shape)} and k {list(k.shape)}"
        )
    total_q, heads, _ = q.shape
    lse_shape = (heads, total_q) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    return_lse: bool = False,
):
    """flash-attn's `flash_attn_func` (and, with `cu_seqlens_q`/`cu_seqlens_k`, its
    `flash_attn_varlen_func`) as the torch operators ``tilelang::flash_attention`` and
    ``tilelang::flash_attention_varlen``; shapes, dtypes (f16, bf16) and GQA as
    `tilelang.kernels.flash_attention`. o in q's dtype, with `return_lse` (o, lse f32).
    Varlen without `max_seqlen_q` reads it from cu_seqlens_q (a host sync: pass it under
    torch.compile or CUDA graphs)."""
    del max_seqlen_k  # flash-attn's signature; the kernel reads each length
    scale = None if scale is None else float(scale)
    if cu_seqlens_q is None and cu_seqlens_k is None:
        out, lse = flash_attention_op(q, k, v, bool(causal), scale, bool(return_lse))
        return (out, lse) if return_lse else out
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("varlen attention needs both cu_seqlens_q and cu_seqlens_k")
    if max_seqlen_q is None:
        max_seqlen_q = int(torch.diff(cu_seqlens_q).max()) if cu_seqlens_q.numel() > 1 else 0
    out, lse = flash_attention_varlen_op(
        q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), bool(causal), scale,
        bool(return_lse),
    )  # fmt: skip
    return (out, lse) if return_lse else out


@torch.library.custom_op(
    "tilelang::paged_decode_attention", mutates_args=(), device_types=("cpu", "cuda")
)
def paged_decode_attention_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None,
    k_scale: torch.Tensor | None,
    v_scale: torch.Tensor | None,
    k_zero: torch.Tensor | None,
    v_zero: torch.Tensor | None,
    num_splits: int | None,
) -> torch.Tensor:
    """o [B, H, D]: `tilelang.kernels.paged_decode_attention` over a cache of q's dtype,
    float8_e4m3fn (k_scale, v_scale f32 of one element or [H_kv]) or uint8 (per-token
    f32 scales and zero points [num_blocks, block_size, H_kv]). On CUDA a call makes
    only its outputs and copies nothing to the device (CUDA-graph capturable): CUDA
    scales go to the kernel as they are (one element or [H_kv]; one of each: the
    one-element one is broadcast on the device), CPU ones of one element as numbers."""
    tensors = (q, k_cache, v_cache, block_table, seq_lens)
    if q.device.type == "cuda":
        k_scale, v_scale = _same_size(k_scale, v_scale)
    # CPU tensors (all of a CPU call's; a CUDA call's host scales, folded into numbers)
    # reach the wrapper as zero-copy numpy views (`runtime.host_calls`).
    return paged_attention.paged_decode_attention(
        *tensors, scale, k_scale, v_scale, k_zero=k_zero, v_zero=v_zero, num_splits=num_splits
    )


@paged_decode_attention_op.register_fake
def _paged_decode_attention_fake(
    q, k_cache, v_cache, block_table, seq_lens, scale, k_scale, v_scale, k_zero, v_zero,
    num_splits,
):  # fmt: skip
    if q.dim() != 3 or k_cache.dim() != 4:
        raise ValueError(
            f"tilelang::paged_decode_attention: q must be [batch, H, D] and k_cache "
            f"[num_blocks, block_size, H_kv, D], got q {list(q.shape)} and k_cache "
            f"{list(k_cache.shape)}"
        )
    return q.new_empty(q.shape)


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float | None = None,
    k_scale: torch.Tensor | float | None = None,
    v_scale: torch.Tensor | float | None = None,
    *,
    k_zero: torch.Tensor | None = None,
    v_zero: torch.Tensor | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """vLLM-layout paged decode attention as the torch operator
    ``tilelang::paged_decode_attention`` (shapes, dtypes and the quantized caches'
    scales: `tilelang.kernels.paged_decode_attention`; a u4 cache, a PackedArray there,
    has no torch form here). A number for an f8 cache's k_scale/v_scale becomes a CPU
    f32 tensor of one element, read on the host (a CUDA call copies nothing to the
    device for it). Returns [batch, H, D] in q's dtype."""
    k_scale, v_scale = (_scale_tensor(s) for s in (k_scale, v_scale))
    scale = None if scale is None else float(scale)
    splits = None if num_splits is None else int(num_splits)
    return paged_decode_attention_op(
        q, k_cache, v_cache, block_table, seq_lens, scale, k_scale, v_scale, k_zero, v_zero,
        splits,
    )  # fmt: skip


def _same_size(
    k_scale: torch.Tensor | None, v_scale: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """An f8 cache's CUDA scales with the same number of elements (the kernel binds one
    shape for both): a one-element one beside one per KV head is broadcast on the device
    (a device copy, the one case that makes a tensor)."""
    pair = (k_scale, v_scale)
    if any(p is None or p.device.type != "cuda" or p.dim() != 1 for p in pair):
        return pair
    size = max(p.numel() for p in pair)
    return tuple(p.expand(size).contiguous() if p.numel() == 1 else p for p in pair)


def _scale_tensor(value) -> torch.Tensor | None:
    if value is None or isinstance(value, torch.Tensor):
        return value
    return torch.tensor([float(value)], dtype=torch.float32)  # on the host: no device copy
