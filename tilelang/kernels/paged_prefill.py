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
"""

from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
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
    check_like_q,
    default_tiles,
    longest_queries,
    sequence_queries,
    sequence_slope,
    store_sequence_rows,
)
from .common import (
    check,
    coarse_length,
    empty,
    placeholder,
    reshaped,
    run,
    same_place,
    shape_of,
    tl,
)
from .paged_arguments import check_lengths

#: The smallest page (block_size) taken; any power of two from it up.
MIN_BLOCK_SIZE = 8


@func
def paged_boxes(k, v, table, b, BS, n, count, hk, BN, HD):
    """The [BN, HD] K and V rows of keys n..n + BN of sequence b (`count` keys) of KV
    head hk, from caches viewed as [num_blocks · BS, H_kv, D] through row b of the
    block table; 0 at and past `count`. A gather of rows, its index computed ahead of
    the step with its table loads (`tilelang.passes.pipeline_gathers`; a box load of a
    page's rows would not be pipelined: its offset comes from loaded data). Keys at and
    past `count` go to row −1, outside the cache: they read 0 and touch nothing. BS ≥
    BN: the step lies in one page (n is a multiple of BN, and BN divides BS: powers of
    two), whose id is one scalar load. BS < BN: the step's BN / BS pages are one box of
    table entries (0 past the table's end, where every key is past `count`), each
    page's rows its id · BS + 0..BS − 1. (A gather of BN table entries, one a row, cost
    vLLM's case, BS 16 at D 128 on sm_90a, 543 warp instructions a step where this
    takes 477 as the varlen kernel does: 175.7 against 161.1 us predicted.)"""
    token = n + tl.arange(0, BN)
    if BS >= BN:
        rows = tl.load(table, [b, n // BS]) * BS + token % BS
    else:
        pages = tl.reshape(tl.load(table, [b, n // BS], [1, BN // BS]), [BN // BS, 1])
        rows = tl.reshape(pages * BS + tl.arange(0, BS)[None, :], [BN])
    rows = tl.where(token < count, rows, -1)[:, None, None]  # one index for K and V
    kt = tl.load(k, [rows, hk, 0], [BN, 1, HD])
    vt = tl.load(v, [rows, hk, 0], [BN, 1, HD])
    return tl.reshape(kt, [BN, HD]), tl.reshape(vt, [BN, HD])


@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)  # as the varlen kernel
def paged_prefill_kernel(
    q: Tensor["T", "TQ", "H", "D"],
    k: Tensor["T", "R", "HK", "D"],
    v: Tensor["T", "R", "HK", "D"],
    cu_q: Tensor[dtypes.i32, "B1"],
    lens: Tensor[dtypes.i32, "NL"],
    table: Tensor[dtypes.i32, "NT", "MB"],
    o: Tensor["T", "TQ", "H", "D"],
    lse: Tensor[dtypes.f32, "HL", "TL"],
    slopes: Tensor[dtypes.f32, "1 + (B1 - 2) * (ALIBI // 2)", "1 + (H - 1) * ((ALIBI + 1) // 2)"],
    scale: dtypes.f32,
    MQ: dtypes.i32,
    left: dtypes.i32 = 0,
    right: dtypes.i32 = 0,
    softcap: dtypes.f32 = 0.0,
    T: constexpr = dtypes.f16,
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
    cu_q[b + 1] of q, the last of its positions. MQ is the longest query count."""
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
    result = attend(
        qt, bm * BM, k, v, None, 0, hk, sq, sk, scale, left, right, softcap,
        sequence_slope(slopes, b, h, ALIBI), T, CAUSAL, WINDOW, SOFTCAP, ALIBI, BM, BN, HD,
        STAGES, keys=(paged_boxes, (k, v, table, b, BS)),
    )  # fmt: skip
    store_sequence_rows(o, lse, at, h, result, T, LSE, BM, HD)


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
) -> Any:
    """`flash_attention(q, k_cache, v_cache, block_table=, ...)` (its docstring, and the
    module's): `offsets` (cu_seqlens_q, cu_seqlens_k, seqused_k), `bounds` (max_seqlen_q,
    max_seqlen_k), `options` (window_size, softcap, alibi_slopes). Every argument is
    checked before the launch; host block tables, offsets and lengths by value."""
    cu_q, cu_k, seqused_k = offsets
    if block_table is None:
        raise ValueError(
            "seqused_k goes with block_table (the keys in a paged cache); packed k and v "
            "take cu_seqlens_k alone"
        )
    (total_q, heads, d), t, batch, bs = _check_layout(q, k_cache, v_cache, block_table, cu_q)
    blocks, max_blocks = shape_of(k_cache, "k_cache")[0], shape_of(block_table, "block_table")[1]
    lens = _key_counts(cu_k, seqused_k, batch, block_table, blocks, bs, bounds[1])
    _check_heads(heads, shape_of(k_cache, "k_cache")[2], d)
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
    max_seqlen_q = coarse_length(longest_queries(cu_q, bounds[0]))  # the grid's rows
    out = empty(q, (total_q, heads, d), t)
    lse = empty(q, (heads, total_q), dtypes.f32) if return_lse else placeholder(q, 2)
    if batch == 0 or max_seqlen_q == 0 or total_q * heads * d == 0:
        return (out, lse) if return_lse else out
    every_key = not (causal or flags["WINDOW"])
    tiles = default_tiles(d, batch * heads, max_seqlen_q, every_key)  # the grid's blocks
    constexprs = dict(T=t, CAUSAL=causal, LSE=bool(return_lse), CU_K=cu_k is not None, BS=bs)
    rows = (blocks * bs, *shape_of(k_cache, "k_cache")[2:])
    cache = [reshaped(k_cache, rows, "k_cache"), reshaped(v_cache, rows, "v_cache")]
    slopes, left, right, cap = options
    args = [q, *cache, cu_q, lens, block_table, out, lse, slopes, float(scale), max_seqlen_q]
    run(paged_prefill_kernel, [*args, left, right, cap], constexprs | flags | tiles, interpret)
    return (out, lse) if return_lse else out


PAGED_FORM["call"] = paged_flash_attention  # flash_attention(..., block_table=) calls it


def _check_layout(
    q: Any, k_cache: Any, v_cache: Any, block_table: Any, cu_q: Any
) -> tuple[tuple[int, ...], Any, int, int]:
    """q's shape and dtype, the batch and the block size, after checking q, the caches,
    cu_seqlens_q and the block table's shapes and dtypes."""
    if cu_q is None:
        raise ValueError(
            "a paged cache (block_table) needs cu_seqlens_q: int32 [batch + 1], the offsets "
            "of the packed queries"
        )
    (total_q, heads, d), t = check(q, "q", (None,) * 3, ATTENTION_TYPES, ("total_q", "H", "D"))
    if len(shape_of(k_cache, "k_cache")) != 4:
        raise ValueError(
            f"k_cache must have shape [num_blocks, block_size, H_kv, D], got shape "
            f"{list(shape_of(k_cache, 'k_cache'))}"
        )
    cache_names = ("num_blocks", "block_size", "H_kv", None)
    (blocks, bs, kv_heads, _), _ = check_like_q(
        k_cache, "k_cache", (None, None, None, d), t, cache_names
    )
    check_like_q(v_cache, "v_cache", (blocks, bs, kv_heads, d), t)
    if bs < MIN_BLOCK_SIZE or bs & (bs - 1):
        raise ValueError(
            f"k_cache's block_size must be a power of two >= {MIN_BLOCK_SIZE}, got {bs}"
        )
    (b1,), _ = check(cu_q, "cu_seqlens_q", (None,), (dtypes.i32,), ("batch + 1",))
    if b1 < 1:
        raise ValueError("cu_seqlens_q must have batch + 1 >= 1 entries, got 0")
    check(block_table, "block_table", (b1 - 1, None), (dtypes.i32,), ("batch", "max_blocks"))
    return (total_q, heads, d), t, b1 - 1, bs


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
