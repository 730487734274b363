"""Torch operators for `tilelang.kernels`: ``tilelang::rms_norm`` and
``tilelang::silu_and_mul``, made by `tilelang.torch.op` from the kernels themselves
(their dtype constexprs follow the tensors: f32, f16, bf16), with the [..., H] forms
users call; and, written by hand over the library functions (their kernels' optional
tensors and scratch have sizes no argument gives, and the wrappers pick tiles from the
shapes, so `op` cannot derive them): ``tilelang::selective_scan``,
``tilelang::selective_state_update`` (the Mamba decode step, its state updated in
place), ``tilelang::causal_conv1d_update`` (conv_state shifted in place),
``tilelang::flash_attention``, ``tilelang::flash_attention_varlen`` and
``tilelang::paged_decode_attention``; importing it imports `tilelang.torch.ssm_ops`
(``tilelang::causal_conv1d``, ``tilelang::ssd_chunk_scan``, with packed batches; their
functions are re-exported here), `tilelang.torch.paged_cache`
(``tilelang::write_paged_cache``) and
`tilelang.torch.rotary` (``tilelang::rotary_embedding``) too.

Each Python function here checks the user's tensors with the library's own checks
(`tilelang.kernels.common.check`: the same messages as a numpy call) before it reshapes
anything or calls the operator; under torch.compile, where shapes may be symbolic, the
operators' fake implementations check ranks instead. Every function keeps torch.compile's
graph whole (fullgraph=True), and, once this module is imported, a `tilelang.kernels` function
called on torch tensors under torch.compile is traced as the function of the same name
here (`tilelang.runtime.host_calls.register_torch_form`). Imported on its own (`import tilelang.torch.kernels`),
so that `tilelang.torch` does not load every kernel family.
"""

from __future__ import annotations

from typing import Any

import torch
from torch._subclasses.fake_tensor import is_fake

import tilelang.kernels as library
from tilelang.dtypes import DType
from tilelang.kernels import attention, conv, paged_attention, ssm, ssm_update
from tilelang.kernels.common import FLOATS, check, flag
from tilelang.kernels.norm import rms_norm_kernel, silu_and_mul_kernel
from tilelang.kernels.paged_arguments import FLOAT8
from tilelang.runtime import host_calls
from tilelang.torch import dtypes as td
from tilelang.torch import (
    norm_ops,  # noqa: F401  (registers tilelang::fused_add_rms_norm)
    paged_cache,  # noqa: F401  (registers tilelang::write_paged_cache)
    rotary,  # noqa: F401  (registers tilelang::rotary_embedding)
)
from tilelang.torch.op import op
from tilelang.torch.ssm_ops import causal_conv1d, ssd_chunk_scan  # noqa: F401 (the ops)

#: Tiles for any H (the kernels loop over H in BH columns, masked at the edge).
RMS_NORM = op(rms_norm_kernel, "tilelang::rms_norm", BM=4, BH=256)
SILU_AND_MUL = op(silu_and_mul_kernel, "tilelang::silu_and_mul", BM=4, BH=128)


def _checked(
    value: Any,
    name: str,
    shape: tuple[int | None, ...],
    types: tuple[DType, ...] = FLOATS,
    names: tuple[str | None, ...] | None = None,
) -> tuple[tuple[int, ...], DType]:
    """`tilelang.kernels.common.check` on a torch tensor: a CUDA tensor as it is, a CPU
    one as a zero-copy numpy view (~1 us); its shape (`Dim`s, which later checks name as
    their origin) and tilelang dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__}")
    if value.is_cuda:
        return check(value, name, shape, types, names)
    dtype = td.tilelang_dtype(value.dtype)
    if dtype is None or td.is_packed(dtype):
        allowed = ", ".join(dict.fromkeys(str(t) for t in types))
        raise TypeError(f"{name} must hold one of {allowed}, got {value.dtype}")
    return check(td.host_array(value.detach(), dtype), name, shape, types, names)


def _eager(*tensors: Any) -> bool:
    """Whether the library's checks can read `tensors`: outside torch.compile (whose
    shapes may be symbolic) and none of them fake or on the meta device (no memory to
    view). The fake implementations check those."""
    if torch.compiler.is_compiling():
        return False
    return not any(
        isinstance(t, torch.Tensor) and (is_fake(t) or t.device.type == "meta") for t in tensors
    )


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x · rsqrt(mean(x², -1) + eps) · weight over the last dimension of x [..., H]
    (f32, f16 or bf16); weight [H] of x's dtype or f32. Computed in f32, rounded once."""
    if _eager(x, weight):  # the library's checks and messages, before x is [rows, H]
        shape, t = _checked(x, "x", (None,) * max(1, x.dim()))
        _checked(weight, "weight", (shape[-1],), (t, FLOATS[0]))
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension [..., H], got a scalar")
    h = x.shape[-1]
    return RMS_NORM(x.reshape(-1, h), weight, float(eps)).reshape(x.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(x[..., :d]) · x[..., d:] for x [..., 2·d]; returns [..., d] of x's dtype."""
    if _eager(x):
        _checked(x, "x", (None,) * max(1, x.dim()))
    if x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(
            f"x must have an even last dimension [..., 2·d], got shape {list(x.shape)}"
        )
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
    softplus = flag(delta_softplus, "delta_softplus")
    wants_last = flag(return_last_state, "return_last_state")
    out, last = selective_scan_op(u, delta, A, B, C, D, z, delta_bias, softplus)
    return (out, last) if wants_last else out


def _rank(op_name: str, **given: tuple[torch.Tensor, tuple[str, ...]]) -> None:
    """A fake implementation's check: each tensor of its layout's rank (a ValueError
    naming the operator, the parameter, the layout and the shape given)."""
    for name, (tensor, layout) in given.items():
        if tensor.dim() != len(layout):
            raise ValueError(
                f"{op_name}: {name} must have shape [{', '.join(layout)}], got shape "
                f"{list(tensor.shape)}"
            )


def _not_an_input(result: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
    """`result`, or a copy of it where it is one of the inputs (a library call with no
    steps returns the initial state it was given; an operator may not alias an input)."""
    return result.clone() if any(result is i for i in inputs) else result


# ------------------------------------------------------------- Mamba decode, conv, SSD


@torch.library.custom_op(
    "tilelang::selective_state_update", mutates_args=("state",), device_types=("cpu", "cuda")
)
def selective_state_update_op(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    dt_bias: torch.Tensor | None,
    dt_softplus: bool,
    state_batch_indices: torch.Tensor | None = None,
    pad_slot_id: int = ssm_update.PAD_SLOT_ID,
) -> torch.Tensor:
    """y with x's shape: `tilelang.kernels.selective_state_update` on the tensors (CPU
    ones as zero-copy numpy views, `runtime.host_calls`), state updated in place (the
    rows `state_batch_indices` picks, when given)."""
    return ssm_update.selective_state_update(
        state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices, pad_slot_id
    )


@selective_state_update_op.register_fake
def _selective_state_update_fake(
    state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, state_batch_indices=None, pad_slot_id=-1
):
    if state.dim() == 4:  # Mamba-2's heads
        layouts = dict(state=(state, ("batch", "H", "P", "N")), x=(x, ("batch", "H", "P")))
    else:
        layouts = dict(state=(state, ("batch", "Dm", "N")), x=(x, ("batch", "Dm")))
    _rank("tilelang::selective_state_update", **layouts)
    return x.new_empty(x.shape)


def selective_state_update(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
    state_batch_indices: torch.Tensor | None = None,
    pad_slot_id: int = ssm_update.PAD_SLOT_ID,
) -> torch.Tensor:
    """One Mamba decode step (mamba_ssm's `selective_state_update`, vLLM's with
    `state_batch_indices` and `pad_slot_id`) as the torch operator
    ``tilelang::selective_state_update`` (shapes, dtypes and the per-head forms of
    Mamba-2's dt, A, D and dt_bias, broadcast views included:
    `tilelang.kernels.selective_state_update`): state [batch, Dm, N] or [batch, H, P,
    N] is updated in place; returns y with x's shape ([batch, Dm] or [batch, H, P]) in
    x's dtype."""
    if isinstance(pad_slot_id, bool) or not isinstance(pad_slot_id, int):
        raise TypeError(f"pad_slot_id must be an int, got {pad_slot_id!r}")
    softplus = flag(dt_softplus, "dt_softplus")
    return selective_state_update_op(
        state, x, dt, A, B, C, D, z, dt_bias, softplus, state_batch_indices, pad_slot_id
    )


@torch.library.custom_op(
    "tilelang::causal_conv1d_update", mutates_args=("conv_state",), device_types=("cpu", "cuda")
)
def causal_conv1d_update_op(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str | None,
) -> torch.Tensor:
    """out with x's shape: `tilelang.kernels.causal_conv1d_update`, conv_state shifted
    in place."""
    return conv.causal_conv1d_update(x, conv_state, weight, bias, activation)


@causal_conv1d_update_op.register_fake
def _causal_conv1d_update_fake(x, conv_state, weight, bias, activation):
    _rank("tilelang::causal_conv1d_update", conv_state=(conv_state, ("batch", "Dm", "state_len")))
    if x.dim() not in (2, 3):
        raise ValueError(
            f"tilelang::causal_conv1d_update: x must have shape [batch, Dm] or [batch, Dm, "
            f"S], got shape {list(x.shape)}"
        )
    return x.new_empty(x.shape)


def causal_conv1d_update(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """causal-conv1d's `causal_conv1d_update` as the torch operator
    ``tilelang::causal_conv1d_update`` (shapes and dtypes:
    `tilelang.kernels.causal_conv1d_update`): conv_state [batch, Dm, state_len] is
    shifted in place; returns out with x's shape ([batch, Dm] or [batch, Dm, S])."""
    return causal_conv1d_update_op(x, conv_state, weight, bias, activation)


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
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse): `tilelang.kernels.flash_attention` over fixed-length [B, S, H, D]
    tensors. lse is [B, H, Sq] f32 with `return_lse`, else an empty f32 tensor (an
    operator returns the same number of tensors whatever its flags). window_size is
    two ints (an operator's schema takes no tuple)."""
    options = ((window_left, window_right), softcap, alibi_slopes)
    return _attention((q, k, v), causal, scale, (), return_lse, options)


def _attention(
    tensors: tuple[torch.Tensor, ...],
    causal: bool,
    scale: float | None,
    tail: tuple,
    lse: bool,
    options: tuple,
    paged: tuple[torch.Tensor | None, ...] = (None, None, None, None),
) -> tuple[torch.Tensor, torch.Tensor]:
    """`tilelang.kernels.flash_attention(q, k, v, causal=, scale=)` (varlen: `tensors`
    also cu_seqlens_q and cu_seqlens_k, `tail` max_seqlen_q; a paged cache: `paged`
    seqused_k, block_table, k_scale and v_scale) with `options` (window_size, softcap,
    alibi_slopes) on the tensors (CPU ones as zero-copy numpy views:
    `runtime.host_calls`); (o, lse or an empty f32 tensor)."""
    q = tensors[0]
    window_size, softcap, alibi_slopes = options
    varlen = dict(
        zip(("cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q"), (*tensors[3:], *tail), strict=False)
    )
    if paged[1] is not None:
        varlen |= dict(seqused_k=paged[0], block_table=paged[1], k_scale=paged[2])
        varlen |= dict(v_scale=paged[3])
    result = attention.flash_attention(
        *tensors[:3], causal=causal, scale=scale, **varlen, return_lse=lse,
        window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes,
    )  # fmt: skip
    out, lse_out = result if lse else (result, None)
    return out, q.new_empty(0, dtype=torch.float32) if lse_out is None else lse_out


@flash_attention_op.register_fake
def _flash_attention_fake(q, k, v, causal, scale, return_lse, *options):
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
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    causal: bool,
    scale: float | None,
    return_lse: bool,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse): `tilelang.kernels.flash_attention` over packed sequences, q [total_q,
    H, D]; lse [H, total_q] f32 with `return_lse`, else an empty f32 tensor. With
    `block_table`, k and v are paged caches [num_blocks, block_size, H_kv, D] and the key
    counts come from `seqused_k` or `cu_seqlens_k` (one of them; `kernels.paged_prefill`);
    the caches hold q's dtype (k_scale, v_scale absent or 1) or float8_e4m3fn /
    float8_e5m2 with k_scale, v_scale f32 of one element or [H_kv], as
    ``tilelang::paged_decode_attention`` takes them (CUDA ones as they are, one of each
    broadcast on the device; CPU ones of one element as numbers)."""
    if q.device.type == "cuda":
        k_scale, v_scale = _same_size(k_scale, v_scale)
    tensors = (q, k, v, cu_seqlens_q, cu_seqlens_k)
    options = ((window_left, window_right), softcap, alibi_slopes)
    paged = (seqused_k, block_table, k_scale, v_scale)
    return _attention(tensors, causal, scale, (max_seqlen_q,), return_lse, options, paged)


@flash_attention_varlen_op.register_fake
def _flash_attention_varlen_fake(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, causal, scale, return_lse, *options
):
    paged = len(options) > 5 and options[5] is not None  # block_table: k a paged cache
    keys = "k [num_blocks, block_size, H_kv, D]" if paged else "k [total_k, H_kv, D]"
    if q.dim() != 3 or k.dim() != 3 + paged:
        raise ValueError(
            f"tilelang::flash_attention_varlen: q must be [total_q, H, D] and {keys}, got q "
            f"{list(q.shape)} and k {list(k.shape)}"
        )
    total_q, heads, _ = q.shape
    lse_shape = (heads, total_q) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    return_lse: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    k_scale: torch.Tensor | float | None = None,
    v_scale: torch.Tensor | float | None = None,
):
    """flash-attn's `flash_attn_func` (and, with `cu_seqlens_q`/`cu_seqlens_k`, its
    `flash_attn_varlen_func`) as the torch operators ``tilelang::flash_attention`` and
    ``tilelang::flash_attention_varlen``; shapes, dtypes (f16, bf16), GQA and the options
    `window_size`, `softcap` and `alibi_slopes` (f32 [H] or [batch, H]) as
    `tilelang.kernels.flash_attention`. o in q's dtype, with `return_lse` (o, lse f32).
    Every argument after v is keyword-only and `causal` a bool, as there. Varlen without
    `max_seqlen_q` reads it from cu_seqlens_q (a host sync: pass it under torch.compile
    or CUDA graphs). With `block_table` (and `seqused_k` or `cu_seqlens_k`), k and v are
    vLLM's paged caches (`tilelang.kernels.paged_prefill`), on the varlen operator: q's
    dtype, or float8_e4m3fn / float8_e5m2 with `k_scale` and `v_scale` (a number becomes
    a CPU f32 tensor of one element, read on the host, as for paged decode)."""
    del max_seqlen_k  # flash-attn's signature; the kernel reads each length
    causal = attention.checked_causal(causal)
    scale = None if scale is None else float(scale)
    fixed = cu_seqlens_q is None and cu_seqlens_k is None and block_table is None
    if block_table is None and (k_scale is not None or v_scale is not None):
        raise ValueError(
            "k_scale and v_scale go with a paged cache (block_table=): k and v here are q's dtype"
        )
    k_scale, v_scale = (_scale_tensor(s) for s in (k_scale, v_scale))
    if _eager(q, k):  # the library's checks, naming each layout's dimensions
        layout = ("batch", "Sq", "H", "D") if fixed else ("total_q", "H", "D")
        shape, t = _checked(q, "q", (None,) * len(layout), attention.ATTENTION_TYPES, layout)
        keys = ("batch", "Sk", "H_kv", "D") if fixed else ("total_k", "H_kv", "D")
        want = (shape[0], None, None, shape[3]) if fixed else (None, None, shape[2])
        types = attention.ATTENTION_TYPES
        if block_table is not None:  # a paged cache may hold f8 codes
            keys, want = ("num_blocks", "block_size", "H_kv", "D"), (None, None, None, shape[2])
            types = (*types, *FLOAT8)
        _, given = _checked(k, "k", want, types, keys)
        if given not in FLOAT8:
            attention.require_q_dtype("k", t, given)
    left, right = _window(window_size)
    if isinstance(softcap, bool) or not isinstance(softcap, (int, float)):
        raise ValueError(f"softcap must be a finite number >= 0 (0: off), got {softcap!r}")
    options = (left, right, float(softcap), alibi_slopes)
    if fixed and seqused_k is None:
        out, lse = flash_attention_op(q, k, v, causal, scale, bool(return_lse), *options)
        return (out, lse) if return_lse else out
    if block_table is None and (cu_seqlens_q is None or cu_seqlens_k is None):
        raise ValueError(
            "varlen attention needs both cu_seqlens_q and cu_seqlens_k (seqused_k goes with "
            "block_table: a paged cache)"
        )
    if cu_seqlens_q is None:
        raise ValueError(
            "a paged cache (block_table) needs cu_seqlens_q: int32 [batch + 1], the offsets "
            "of the packed queries"
        )
    if max_seqlen_q is None:
        max_seqlen_q = int(torch.diff(cu_seqlens_q).max()) if cu_seqlens_q.numel() > 1 else 0
    out, lse = flash_attention_varlen_op(
        q, k, v, cu_seqlens_q, cu_seqlens_k, int(max_seqlen_q), causal, scale,
        bool(return_lse), *options, seqused_k, block_table, k_scale, v_scale,
    )  # fmt: skip
    return (out, lse) if return_lse else out


def _window(window_size: Any) -> tuple[int, int]:
    """flash-attn's (left, right) as the operators' two ints; the values are checked by
    the library (`tilelang.kernels.attention`), which names them."""
    if (
        not isinstance(window_size, (tuple, list))
        or len(window_size) != 2
        or any(isinstance(w, bool) or not isinstance(w, int) for w in window_size)
    ):
        raise ValueError(
            f"window_size must be (left, right): two ints >= -1 (-1: unbounded), "
            f"got {window_size!r}"
        )
    return int(window_size[0]), int(window_size[1])


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
    max_seq_len: int | None = None,
) -> torch.Tensor:
    """o [B, H, D]: `tilelang.kernels.paged_decode_attention` over a cache of q's dtype
    (k_scale, v_scale absent or 1, ignored), float8_e4m3fn or float8_e5m2 (k_scale,
    v_scale f32 of one element or [H_kv]) or uint8 (per-token f32 scales and zero points
    [num_blocks, block_size, H_kv]); `max_seq_len` (at least the longest of seq_lens)
    sizes the splits, else the table's width does. On CUDA a call makes
    only its outputs and copies nothing to the device (CUDA-graph capturable): CUDA
    scales go to the kernel as they are (one element or [H_kv]; one of each: the
    one-element one is broadcast on the device), CPU ones of one element as numbers."""
    tensors = (q, k_cache, v_cache, block_table, seq_lens)
    if q.device.type == "cuda":
        k_scale, v_scale = _same_size(k_scale, v_scale)
    # CPU tensors (all of a CPU call's; a CUDA call's host scales, folded into numbers)
    # reach the wrapper as zero-copy numpy views (`runtime.host_calls`).
    return paged_attention.paged_decode_attention(
        *tensors, scale, k_scale, v_scale, k_zero=k_zero, v_zero=v_zero, num_splits=num_splits,
        max_seq_len=max_seq_len,
    )  # fmt: skip


@paged_decode_attention_op.register_fake
def _paged_decode_attention_fake(
    q, k_cache, v_cache, block_table, seq_lens, scale, k_scale, v_scale, k_zero, v_zero,
    num_splits, max_seq_len=None,
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
    max_seq_len: int | None = None,
) -> torch.Tensor:
    """vLLM-layout paged decode attention as the torch operator
    ``tilelang::paged_decode_attention`` (shapes, dtypes and the quantized caches'
    scales: `tilelang.kernels.paged_decode_attention`; a u4 cache, a PackedArray there,
    has no torch form here). A number for an f8 cache's k_scale/v_scale becomes a CPU
    f32 tensor of one element, read on the host (a CUDA call copies nothing to the
    device for it). `max_seq_len`: vLLM's (at least the longest of seq_lens), which sizes
    the splits (else the table's width does). Returns [batch, H, D] in q's dtype."""
    k_scale, v_scale = (_scale_tensor(s) for s in (k_scale, v_scale))
    scale = None if scale is None else float(scale)
    splits = None if num_splits is None else int(num_splits)
    return paged_decode_attention_op(
        q, k_cache, v_cache, block_table, seq_lens, scale, k_scale, v_scale, k_zero, v_zero,
        splits, max_seq_len,
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


# Under torch.compile, a library call on torch tensors runs as the function here of the
# same name (traced in its place: `host_calls.accepts_host_tensors`).
for _name in (
    "rms_norm", "silu_and_mul", "selective_scan", "selective_state_update", "causal_conv1d",
    "causal_conv1d_update", "ssd_chunk_scan", "flash_attention", "paged_decode_attention",
):  # fmt: skip
    host_calls.register_torch_form(getattr(library, _name), globals()[_name])
