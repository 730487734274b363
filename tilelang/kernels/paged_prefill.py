"""FlashAttention over vLLM's paged KV cache (`paged_flash_attention`): chunked prefill,
prefix-cache hits and decode in one call, flash-attn's `flash_attn_varlen_func(...,
block_table=)` and vLLM's FlashAttention backend.

Sequence b has sq = cu_seqlens_q[b + 1] − cu_seqlens_q[b] new queries (rows
cu_seqlens_q[b].. of the packed q [total_q, H, D]) and sk keys: seqused_k[b] (vLLM), or
cu_seqlens_k[b + 1] − cu_seqlens_k[b] (flash-attn). Key t of sequence b lives in row
t % BS of page block_table[b, t // BS] of k_cache and v_cache [num_blocks, BS, H_kv,
D]. The queries are the sequence's last sq positions: query i sits at position i + sk
− sq, so the causal mask, the window and ALiBi are `flash_attention`'s bottom-right
ones (`tilelang.kernels.attention`), and the result is that of the varlen kernel over
the keys gathered into a packed tensor. A chunk of a long prompt (its earlier chunks
already in the cache), a prompt whose prefix the cache held, and a decode step (sq = 1)
are all this one case.

The kernel is the varlen kernel's loop (`attention.attend`: the online softmax, the
masks and the loop bounds a causal or windowed block needs) with another reader of a
step's BN key rows (`paged_boxes`), a gather of rows: where a page holds at least BN
rows (BS ≥ BN, both powers of two, so a step never straddles two pages) a step is one
page, its id one scalar load; smaller pages give each row's page id by a gather of
table entries. Rows at and past the sequence's end are sent outside the cache (row
−1: reads 0, no access). So the rows past the end read
0, so a NaN or an inf left in a page's unused slots never reaches P·V (0 · NaN), and
the loop is pipelined as the varlen kernel's (cp.async, STAGES − 1 steps ahead, the
table's entries with them).

The cache holds q's dtype, or f8e4m3 / f8e5m2 codes with k_scale and v_scale as
`paged_decode_attention` takes them (`paged_arguments.dequantization`: per tensor, a
number or one element; per KV head, f32 [H_kv]): key t's K is code · s_k, its V code ·
s_v, s_k and s_v those of its KV head. The scales are folded, not multiplied into the
tiles (a block reads one KV head, so its s_k and s_v are block constants); exactly:

    K̂, V̂ = the gathered codes converted to q's type T (exact: every f8e4m3 and f8e5m2
            value is an f16 and a bf16 number; the rows stream through cp.async as bytes)
    s     = (q · K̂ᵀ, f32 accumulation) · f32(scale · s_k) (the product rounded to f32
            once: on the host for a number, in the kernel for a tensor), then the f16
            path's online softmax, P rounded to T for P · V̂ (f32 accumulation)
    o     = round_T((acc / l) · s_v), the f32 product rounded once to T

So no dequantized value is rounded to T (which a per-element code · s rounded to T
would do, an error of up to 2^-11 relative in every key, f16): against float64
attention over code · s the error is the f16/bf16 path's (P and o rounded to T), and
with power-of-two scales the bits are those of a cache of q's dtype holding code · s.
lse is that of the scaled scores. u8/u4 caches (per-token scales and zero points) are
`paged_decode_attention`'s only: their dequantization is per token, inside the score
and P·V algebra of the decode kernel's loop, not a reader of rows (`paged_boxes`) this
loop could take; a call with one says so (`check_cache`).
"""

from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.ops import shared  # not in the library's `tl`: f8 rows staged by hand
from tilelang.lang.signature import Tensor, constexpr

from .attention import (
    ATTENTION_TYPES,
    PAGED_FORM,
    _check_heads,
    _check_offsets,
    _min_blocks,
    _options,
    _scale,
    _warps,
    attend,
    default_tiles,
    longest_queries,
    sequence_queries,
    sequence_slope,
    store_sequence_rows,
)
from .common import (
    check,
    coarse_length,
    dtype_of,
    empty,
    placeholder,
    reshaped,
    run,
    same_place,
    shape_of,
    tl,
)
from .paged_arguments import (
    FLOAT8,
    HEAD_SCALED,
    cache_layout,
    check_cache_type,
    check_lengths,
    dequantization,
)
from .paged_attention import rows_copy_async

#: The smallest page (block_size) taken; any power of two from it up.
MIN_BLOCK_SIZE = 8


def row_runs(bn: int, hd: int, warps: int) -> Any:
    """The register layout of a step's [BN, 1, HD] f8 rows on their way to shared memory
    in T: each thread 8 consecutive codes of a row (16 bytes once converted), a warp's
    lanes along whole rows, so each store moves whole 128-byte lines (no bank conflict)
    and each read of the staged codes 8 bytes a lane. None (the default layout) where
    the warps' rows do not divide BN."""
    along = min(32, hd // 8)  # lanes along a row
    across = 32 // along  # rows a warp covers at once
    if hd % 8 or bn % (warps * across):
        return None
    rows = (bn // (warps * across), warps, across)
    return tl.Layout(
        (bn, 1, hd), (rows, (1,), (hd // 8 // along, along, 8)), (1, 2, 5), (0, 3, 4, 6)
    )


@func
def paged_boxes(k, v, table, b, BS, T, staging, n, count, hk, BN, HD):
    """The [BN, HD] K and V rows of keys n..n + BN of sequence b (`count` keys) of KV
    head hk, from caches viewed as [num_blocks · BS, H_kv, D] through row b of the
    block table, in T (f8 codes converted exactly, their scales folded elsewhere: the
    module docstring); 0 at and past `count`. A gather of rows, its index computed ahead of
    the step with its table loads (`tilelang.passes.pipeline_gathers`; a box load of a
    page's rows would not be pipelined: its offset comes from loaded data). Keys at and
    past `count` go to row −1, outside the cache: they read 0 and touch nothing. BS ≥
    BN: the step lies in one page (n is a multiple of BN, and BN divides BS: powers of
    two), whose id is one scalar load. BS < BN: the step's BN / BS pages are one box of
    table entries (0 past the table's end, where every key is past `count`), each
    page's rows its id · BS + 0..BS − 1. (A gather of BN table entries, one a row, cost
    vLLM's case, BS 16 at D 128 on sm_90a, 543 warp instructions a step where this
    takes 477 as the varlen kernel does: 175.7 against 161.1 us predicted.)

    `staging` (f8 caches: two [BN, HD] buffers of T in shared memory and the codes'
    register layout, `row_runs`): the codes, copied ahead as bytes, are converted to T
    and stored there, and the dots read them from there as they read the f16 path's
    staged rows, a k-step at a time. Converted in registers and handed to the dots, K
    was held whole by every warp (its rows are each warp's B operand): about 316
    registers a thread at D 128, refused."""
    token = n + tl.arange(0, BN)
    if BS >= BN:
        rows = tl.load(table, [b, n // BS]) * BS + token % BS
    else:
        pages = tl.reshape(tl.load(table, [b, n // BS], [1, BN // BS]), [BN // BS, 1])
        rows = tl.reshape(pages * BS + tl.arange(0, BS)[None, :], [BN])
    rows = tl.where(token < count, rows, -1)[:, None, None]  # one index for K and V
    if staging is None:
        kt = tl.load(k, [rows, hk, 0], [BN, 1, HD])
        vt = tl.load(v, [rows, hk, 0], [BN, 1, HD])
        return tl.reshape(kt, [BN, HD]), tl.reshape(vt, [BN, HD])
    kbuf, vbuf, layout = staging
    kt = tl.load(k, [rows, hk, 0], [BN, 1, HD], layout=layout)
    vt = tl.load(v, [rows, hk, 0], [BN, 1, HD], layout=layout)
    kbuf.store(tl.reshape(kt.to(T), [BN, HD]))
    vbuf.store(tl.reshape(vt.to(T), [BN, HD]))
    return kbuf.load(), vbuf.load()


@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)  # as the varlen kernel
def paged_prefill_kernel(
    q: Tensor["T", "TQ", "H", "D"],
    k: Tensor["KT", "R", "HK", "D"],
    v: Tensor["KT", "R", "HK", "D"],
    cu_q: Tensor[dtypes.i32, "B1"],
    lens: Tensor[dtypes.i32, "NL"],
    table: Tensor[dtypes.i32, "NT", "MB"],
    o: Tensor["T", "TQ", "H", "D"],
    lse: Tensor[dtypes.f32, "HL", "TL"],
    slopes: Tensor[dtypes.f32, "1 + (B1 - 2) * (ALIBI // 2)", "1 + (H - 1) * ((ALIBI + 1) // 2)"],
    ks: Tensor[dtypes.f32, "1", "1 + (HK - 1) * PER_HEAD"],
    vs: Tensor[dtypes.f32, "1", "1 + (HK - 1) * PER_HEAD"],
    scale: dtypes.f32,
    MQ: dtypes.i32,
    left: dtypes.i32 = 0,
    right: dtypes.i32 = 0,
    softcap: dtypes.f32 = 0.0,
    v_factor: dtypes.f32 = 1.0,
    T: constexpr = dtypes.f16,
    KT: constexpr = dtypes.f16,
    K_HEAD: constexpr = False,
    V_HEAD: constexpr = False,
    PER_HEAD: constexpr = 0,
    CAUSAL: constexpr = False,
    LSE: constexpr = False,
    WINDOW: constexpr = False,
    SOFTCAP: constexpr = False,
    ALIBI: constexpr = 0,
    CU_K: constexpr = False,
    BS: constexpr = 16,
    HD: constexpr = 64,
    BM: constexpr = 64,
    BN: constexpr = 64,
    STAGES: constexpr = 2,
    WARPS: constexpr = 4,
):
    """`flash_attention_varlen_kernel` with each sequence's keys in a paged cache (k, v:
    [num_blocks · BS, HK, D] views): sequence b's keys are its first sk rows through
    table[b] (module docstring), sk = lens[b] (seqused_k), or lens[b + 1] − lens[b]
    with CU_K (cu_seqlens_k), at most the table's MB · BS; its queries rows cu_q[b]..
    cu_q[b + 1] of q, the last of its positions. MQ is the longest query count.

    KT: the cache's dtype, T or f8 (module docstring). An f8 cache's s_k is folded into
    `scale` by the host, or with K_HEAD read from ks (one scale, or with PER_HEAD one a
    KV head); s_v is `v_factor`, or with V_HEAD read from vs. ks and vs are not read
    without the flags (the host passes a tensor that exists already)."""
    # launch checks, as the varlen kernel's, and the table's rows against the batch
    assert HK >= 1, "k and v need at least one head"
    assert H % HK == 0, "k's heads HK must divide q's heads H (GQA/MQA)"
    assert D <= HD, "the head dimension D is at most the padded HD"
    assert NT == B1 - 1, "block_table has one row per sequence"
    assert NL == B1 - 1 + CU_K, "the key lengths have one entry per sequence (+ 1: offsets)"
    b, h, bm = tl.blocks(B1 - 1, H, tl.cdiv(MQ, BM))
    hk = h // (H // HK)
    sq, at, qt = sequence_queries(q, cu_q, b, h, bm, BM, HD)
    sk = tl.load(lens, [b + int(CU_K)])  # seqused_k[b], or where sequence b's keys end
    if CU_K:
        sk = sk - tl.load(lens, [b])
    sk = tl.minimum(sk, MB * BS)  # never past the table (device lengths go unchecked)
    score_scale = scale
    if K_HEAD:  # q · (code · s_k) = (q · code) · s_k: the block's KV head's s_k
        score_scale = scale * tl.load(ks, [0, hk * PER_HEAD])
    staging = None
    if KT != T:
        staging = (shared([BN, HD], T), shared([BN, HD], T), row_runs(BN, HD, WARPS))
    out, seen, m_i, l_i = attend(
        qt, bm * BM, k, v, None, 0, hk, sq, sk, score_scale, left, right, softcap,
        sequence_slope(slopes, b, h, ALIBI), T, CAUSAL, WINDOW, SOFTCAP, ALIBI, BM, BN, HD,
        STAGES, keys=(paged_boxes, (k, v, table, b, BS, T, staging)),
    )  # fmt: skip
    if V_HEAD:  # Σ p · code · s_v = (Σ p · code) · s_v, rounded to T once (at the store)
        out = out * tl.load(vs, [0, hk * PER_HEAD])
    elif KT != T:
        out = out * v_factor
    store_sequence_rows(o, lse, at, h, (out, seen, m_i, l_i), T, LSE, BM, HD)


def paged_flash_attention(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    block_table: Any,
    causal: bool,
    scale: float | None,
    offsets: tuple[Any, Any, Any],
    bounds: tuple[Any, Any],
    return_lse: bool,
    options: tuple,
    interpret: bool,
    kv_scales: tuple[Any, Any] = (None, None),
) -> Any:
    """`flash_attention(q, k_cache, v_cache, block_table=, ...)` (its docstring, and the
    module's): `offsets` (cu_seqlens_q, cu_seqlens_k, seqused_k), `bounds` (max_seqlen_q,
    max_seqlen_k), `options` (window_size, softcap, alibi_slopes), `kv_scales` (k_scale,
    v_scale: `paged_decode_attention`'s, for an f8 cache). Every argument is checked
    before the launch; host block tables, offsets and lengths by value."""
    cu_q, cu_k, seqused_k = offsets
    if block_table is None:
        raise ValueError(
            "seqused_k goes with block_table (the keys in a paged cache); packed k and v "
            "take cu_seqlens_k alone"
        )
    (total_q, heads, d), t, shape, kt = _check_layout(q, k_cache, v_cache, block_table, cu_q)
    blocks, bs, kv_heads, _ = shape
    batch, max_blocks = shape_of(block_table, "block_table")
    lens = _key_counts(cu_k, seqused_k, batch, block_table, blocks, bs, bounds[1])
    _check_heads(heads, kv_heads, d)
    scale = _scale(scale, d)
    window_size, softcap, alibi_slopes = options
    # each sequence's counts are at most the packed queries and the table's keys
    options, flags = _options(
        window_size, softcap, alibi_slopes, causal, (batch, heads), total_q, max_blocks * bs, q
    )
    given = dict(q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table)
    given |= dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, seqused_k=seqused_k)
    same_place(given | dict(alibi_slopes=alibi_slopes))
    _check_offsets(cu_q, "cu_seqlens_q", total_q)
    scales, scaling = _scales(kt, shape, kv_scales, q)
    max_seqlen_q = coarse_length(longest_queries(cu_q, bounds[0]))  # the grid's rows
    out = empty(q, (total_q, heads, d), t)
    lse = empty(q, (heads, total_q), dtypes.f32) if return_lse else placeholder(q, 2)
    if batch == 0 or max_seqlen_q == 0 or total_q * heads * d == 0:
        return (out, lse) if return_lse else out
    every_key = not (causal or flags["WINDOW"])
    tiles = default_tiles(d, batch * heads, max_seqlen_q, every_key)  # the grid's blocks
    if not rows_copy_async(d, kt):  # f8 rows of D ≢ 0 mod 4 bytes: no cp.async
        tiles["STAGES"] = 1
    constexprs = dict(T=t, CAUSAL=causal, LSE=bool(return_lse), CU_K=cu_k is not None, BS=bs)
    rows = (blocks * bs, kv_heads, d)
    cache = [reshaped(k_cache, rows, "k_cache"), reshaped(v_cache, rows, "v_cache")]
    slopes, left, right, cap = options
    k_factor, v_factor = scaling.pop("factors")
    # s_k · scale in f32, as the kernel multiplies a per-head s_k
    score_scale = float(np.float32(scale) * np.float32(k_factor))
    args = [q, *cache, cu_q, lens, block_table, out, lse, slopes, *scales, score_scale]
    args += [max_seqlen_q, left, right, cap, v_factor]
    run(paged_prefill_kernel, args, constexprs | scaling | flags | tiles, interpret)
    return (out, lse) if return_lse else out


PAGED_FORM["call"] = paged_flash_attention  # flash_attention(..., block_table=) calls it


def _scales(
    kt: Any, shape: tuple[int, ...], kv_scales: tuple[Any, Any], like: Any
) -> tuple[list[Any], dict[str, Any]]:
    """The kernel's ks and vs, and its KT, K_HEAD, V_HEAD and PER_HEAD constexprs (and
    "factors": s_k and s_v given as numbers, 1 otherwise), from k_scale and v_scale
    checked as `paged_decode_attention` checks them (`dequantization`: absent or 1 for
    a cache of q's dtype, per tensor or per KV head for f8)."""
    deq = dequantization(kt, shape, *kv_scales, None, None, like)
    ks, _, vs, _ = deq.tensors(placeholder(like, 2))
    head = deq.mode == HEAD_SCALED
    k_head, v_head = head and deq.ks is not None, head and deq.vs is not None
    per_head = int(shape_of(ks, "k_scale")[1] > 1)  # [1, H_kv] (H_kv > 1), else [1, 1]
    scaling = dict(KT=kt, K_HEAD=k_head, V_HEAD=v_head, PER_HEAD=per_head)
    return [ks, vs], scaling | dict(factors=(deq.k_factor, deq.v_factor))


def _check_layout(
    q: Any, k_cache: Any, v_cache: Any, block_table: Any, cu_q: Any
) -> tuple[tuple[int, ...], Any, tuple[int, ...], Any]:
    """q's shape and dtype, and the caches' shape and dtype, after checking q, the
    caches (`check_cache`), cu_seqlens_q and the block table's shapes and dtypes."""
    if cu_q is None:
        raise ValueError(
            "a paged cache (block_table) needs cu_seqlens_q: int32 [batch + 1], the offsets "
            "of the packed queries"
        )
    (total_q, heads, d), t = check(q, "q", (None,) * 3, ATTENTION_TYPES, ("total_q", "H", "D"))
    shape, kt = check_cache(k_cache, v_cache, t, d)
    (b1,), _ = check(cu_q, "cu_seqlens_q", (None,), (dtypes.i32,), ("batch + 1",))
    if b1 < 1:
        raise ValueError("cu_seqlens_q must have batch + 1 >= 1 entries, got 0")
    check(block_table, "block_table", (b1 - 1, None), (dtypes.i32,), ("batch", "max_blocks"))
    return (total_q, heads, d), t, shape, kt


def check_cache(k_cache: Any, v_cache: Any, t: Any, d: int) -> tuple[tuple[int, ...], Any]:
    """The caches' shape [num_blocks, block_size, H_kv, D] and dtype: q's (`t`), f8e4m3
    or f8e5m2 (the dtype checks and messages `paged_decode_attention`'s: the fnuz f8
    types named); u8/u4 refused with what is taken instead."""
    shape, kt = cache_layout(k_cache, "k_cache")
    if len(shape) != 4:
        raise ValueError(
            f"k_cache must have shape [num_blocks, block_size, H_kv, D], got shape {list(shape)}"
        )
    if kt in (dtypes.u8, dtypes.u4):
        raise TypeError(
            f"k_cache holds {kt} codes: flash_attention over a paged cache (block_table=) "
            f"reads caches of q's dtype ({t}), f8e4m3 (float8_e4m3fn) or f8e5m2 "
            f"(float8_e5m2) with k_scale and v_scale; u8/u4 caches (per-token scales and zero "
            f"points) are read by paged_decode_attention only"
        )
    check_cache_type(k_cache, kt, t, shape[3], d, quantized=FLOAT8)
    names = ("num_blocks", "block_size", "H_kv", None)
    (blocks, bs, kv_heads, _), _ = check(k_cache, "k_cache", (None, None, None, d), (kt,), names)
    check(v_cache, "v_cache", (blocks, bs, kv_heads, d), (t, *FLOAT8))
    if dtype_of(v_cache, "v_cache") != kt:
        raise TypeError(
            f"v_cache must have k_cache's dtype ({kt}), got {dtype_of(v_cache, 'v_cache')}"
        )
    if bs < MIN_BLOCK_SIZE or bs & (bs - 1):
        raise ValueError(
            f"k_cache's block_size must be a power of two >= {MIN_BLOCK_SIZE}, got {bs}"
        )
    return (blocks, bs, kv_heads, d), kt


def _key_counts(
    cu_k: Any, seqused_k: Any, batch: int, block_table: Any, blocks: int, bs: int, max_k: Any
) -> Any:
    """The key counts the kernel reads (seqused_k, or cu_seqlens_k with CU_K), checked:
    exactly one given, its shape and dtype, and host values against the table (each
    count at most max_blocks · block_size and max_seqlen_k, its pages in the cache)."""
    if (cu_k is None) == (seqused_k is None):
        given = "both" if cu_k is not None else "neither"
        raise ValueError(
            f"a paged cache (block_table) takes the key counts from seqused_k (int32 [batch]) "
            f"or cu_seqlens_k (int32 [batch + 1]): exactly one of them; got {given}"
        )
    if max_k is not None and (
        isinstance(max_k, bool) or not isinstance(max_k, (int, np.integer)) or max_k < 0
    ):
        raise ValueError(f"max_seqlen_k must be a non-negative int or None, got {max_k!r}")
    if seqused_k is not None:
        check(seqused_k, "seqused_k", (batch,), (dtypes.i32,))
        check_lengths(block_table, seqused_k, blocks, bs, max_k, ("seqused_k", "max_seqlen_k"))
        return seqused_k
    check(cu_k, "cu_seqlens_k", (batch + 1,), (dtypes.i32,))
    if isinstance(cu_k, np.ndarray):
        values = cu_k.astype(np.int64)
        if values[0] != 0 or (np.diff(values) < 0).any():
            raise ValueError(
                f"cu_seqlens_k must rise from 0 without decreasing, got {values.tolist()}"
            )
        counts = np.diff(values)
        check_lengths(
            block_table, counts, blocks, bs, max_k, ("np.diff(cu_seqlens_k)", "max_seqlen_k")
        )
    return cu_k
