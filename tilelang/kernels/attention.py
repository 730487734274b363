"""FlashAttention forward (`flash_attention`), with flash-attn's layout and arguments.

For each batch b, query head h (reading key/value head h // (H / H_kv): GQA and MQA)
and query i, in f32 (the output rounded once to the inputs' dtype):

    s[j] = scale · q[b, i, h] · k[b, j, hk],  j visible (below)
    o[b, i, h] = Σ_j softmax(s)[j] · v[b, j, hk],  lse[b, h, i] = log Σ_j exp(s[j])

With `causal`, query i sees keys j <= i + Sk - Sq (the mask aligned to the bottom right
corner, as flash-attn ≥ 2.1 does when Sq != Sk); a query that sees no key (causal with
Sk < Sq, or Sk = 0) gets o = 0 and lse = -inf (the log of an empty sum).

flash-attn's options, with its documented definitions: `window_size` (left, right)
keeps query i to keys i + Sk - Sq - left <= j <= i + Sk - Sq + right (-1: that side
unbounded; `causal` sets right = 0, flash-attn's reading of causal with a window);
`softcap` c > 0 replaces s[j] by c · tanh(s[j] / c); `alibi_slopes` (f32 [H] or [batch,
H]) then adds -slope[b, h] · |i + Sk - Sq - j| to s[j] (flash-attn's convention, causal
or not). lse is of these scores. A window, like causal, narrows the loop: a block
reads only the key blocks some of its rows see.

A block handles BM queries of one (batch, head) over WARPS warps (64 rows over 4, or
128 over 8 for launches that fill the GPU: `default_tiles`) and walks the keys BN at a
time (longer steps over every key than with causal or a window) with an online
softmax: the running row maximum m and sum l, acc rescaled by exp(m_old - m_new). It
is written as users write it — Q·Kᵀ as `tl.dot(q, tl.transpose(k))` on tiles loaded
[1, BN, 1, D] and reshaped — and the compiler makes it fast: Q·Kᵀ and P·V form a dot
chain (`tilelang.analysis.dot_chains`), so the warps split the rows, P goes from S's
accumulator into P·V's A operand in registers, the row max and sum are warp shuffles;
K and V arrive by cp.async in 2 stages (for an even D: `default_tiles`) and are read
from shared memory a k-step at a time, K through a transposed view with ldmatrix (no
transpose is materialized).

Varlen batches (`flash_attention_varlen_kernel`, flash-attn's `flash_attn_varlen_func`)
run the same loop over packed sequences: a block reads its sequence's offsets with
scalar loads, walks the keys up to a run-time bound, and reads and stores only its
sequence's rows. K and V rows of the next sequence would otherwise reach P·V as 0 · NaN
where they hold a NaN or an inf (flash-attn zero-fills them too): K and V are box
loads with a row mask (`sequence_boxes`: one zero-filling cp.async predicate a row), q
and o a gather and scatter whose row index is sent outside the tensor past the
sequence's end (`sequence_rows`). What reading only its own rows costs the loop (the
static report, varlen D=128, B=4 S=4096 H=32, sm_90a, warp instructions a step; box
loads that read the next sequence's rows / the row mask / a gather): not causal,
narrow 515 / 582 / 612 (1.19 / 1.282 / 1.348 ms), wide 486 / 504 / 522 (1.112 / 1.128
/ 1.168 ms); causal 502 / 543 / 600 (594.9 / 598.2 / 661 us).
"""

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime.call_plans import planned
from tilelang.runtime.host_calls import accepts_host_tensors

from .common import (
    LN2,
    LOG2E,
    check,
    coarse_length,
    empty,
    next_power_of_two,
    placeholder,
    reshaped,
    run,
    same_place,
    shape_of,
    tl,
)

#: `flash_attention`'s form over a paged KV cache (`block_table=`): set by
#: `tilelang.kernels.paged_prefill`, which the package imports: that module builds on
#: this one's loop (`attend`), so this one cannot import it (an import cycle).
PAGED_FORM: dict[str, Callable[..., Any]] = {}

#: The dtypes of q, k and v (tensor-core operands); the output has the same.
ATTENTION_TYPES = (dtypes.f16, dtypes.bf16)
#: The largest head dimension.
MAX_HEAD_DIM = 256


@func
def head_rows(t, b, row, h, R, HD):
    """The [R, HD] rows of head h: rows row.. of batch b of a [batch, seq, heads, D]
    tensor (past its end: 0), or, when b is None, the rows `row` (an index tile [R],
    `sequence_rows`) of a packed [rows, heads, D] tensor, a gather."""
    if b is None:
        return tl.reshape(tl.load(t, [row[:, None, None], h, 0], [R, 1, HD]), [R, HD])
    return tl.reshape(tl.load(t, [b, row, h, 0], [1, R, 1, HD]), [R, HD])


@func
def sequence_boxes(k, v, start, count, row, h, R, HD):
    """The [R, HD] rows row..row + R of head h of a sequence (`count` rows from row
    `start` of packed [rows, heads, D] tensors) of k and of v, 0 at and past its end:
    box loads with a row mask, so the next sequence's NaN or inf stays there
    (`sequence_rows`). The mask is one condition a row, broadcast along it: a pipelined
    copy tests it once per row (cp.async's zero fill), where a gather's index costs
    more; one mask for both (the pipeline makes it once an iteration)."""
    live = (row + tl.arange(0, R) < count)[:, None, None]
    kt = tl.load(k, [start + row, h, 0], [R, 1, HD], mask=live)
    vt = tl.load(v, [start + row, h, 0], [R, 1, HD], mask=live)
    return tl.reshape(kt, [R, HD]), tl.reshape(vt, [R, HD])


@func
def sequence_rows(start, count, row, R):
    """The packed rows of a sequence's rows row..row + R (the sequence: `count` rows
    from row `start`), -1 for those at or past its end: outside the tensor, so a load
    reads 0 there and a store skips them. Rows past the end belong to the next
    sequence, whose NaN or inf in V would reach P·V as 0 · NaN: flash-attn zero-fills
    them, and so does this."""
    rows = row + tl.arange(0, R)
    return tl.where(rows < count, start + rows, -1)


@func
def attend(
    qt, row0, k, v, b, k0, hk, sq, sk, scale, left, right, softcap, slope,
    T, CAUSAL, WINDOW, SOFTCAP, ALIBI, BM, BN, HD, STAGES, keys=None,
):  # fmt: skip
    """The online softmax of a block's query rows `qt` (rows row0.. of a sequence of
    `sq` queries) over the sk keys of head hk (`head_rows` reads them by batch b, or
    `sequence_boxes` from row k0 where b is None, or, with `keys` = (a @func, its first
    arguments), that func called as keys[0](*keys[1], n, sk, hk, BN, HD) for the [BN,
    HD] K and V rows of keys n.., 0 at and past sk: another layout's, a paged cache's in
    `paged_prefill`, k and v then unread): (o unrounded, whether each row saw a
    key, the rows' max of the scaled scores and their sum of exponentials). The scores
    are kept in base 2 (scale · log2 e, `fast_exp2`: one MUFU a score, probabilities
    below 2^-126 flushed to 0); the max is returned in natural units. The window's
    `left` and `right` (right = 0: causal), `softcap` and the ALiBi `slope` (times log2
    e) are read with WINDOW (or CAUSAL), SOFTCAP and ALIBI (the module docstring).
    Only the key blocks some row does not see whole (the last partial block, causal or
    window blocks crossing an edge) are masked: a block-uniform branch. The keys no row
    of the block sees (past the last row's right edge, before the first row's left
    edge) are not read at all: the loop's bounds leave them out."""
    rows = row0 + tl.arange(0, BM)
    off = sk - sq  # row r's window is centred on key r + off (bottom right alignment)
    start = 0
    stop = sk
    whole = sk  # every row sees the keys below `whole` (down to `first`)
    first = 0
    reach = off  # row r sees keys up to r + reach (causal: r + off)
    if WINDOW:
        reach = off + right
    if CAUSAL or WINDOW:
        stop = tl.minimum(sk, row0 + BM + reach)
        whole = tl.minimum(sk, row0 + 1 + reach)
    if WINDOW:  # and from r + off − left: the blocks wholly left of row0's edge skipped
        start = tl.maximum(row0 + off - left, 0) // BN * BN
        first = row0 + BM - 1 + off - left
    m_i = tl.full([BM], float("-inf"), tl.f32)
    l_i = tl.zeros([BM], tl.f32)
    acc = tl.zeros([BM, HD], tl.f32)
    for n in tl.range(start, stop, BN, stages=STAGES):
        if keys is not None:  # another layout's rows (a paged cache), 0 past its end
            kt, vt = keys[0](*keys[1], n, sk, hk, BN, HD)
        elif b is None:  # varlen: the sequence's rows, 0 past its end
            kt, vt = sequence_boxes(k, v, k0, sk, n, hk, BN, HD)
        else:
            kt = head_rows(k, b, n, hk, BN, HD)
            vt = head_rows(v, b, n, hk, BN, HD)
        s = tl.dot(qt, tl.transpose(kt)) * (scale * LOG2E)  # base 2: exp2 is cheaper
        if SOFTCAP:  # c · tanh(s / c) in base 2 is the cap of c = softcap · log2 e
            s = tl.tanh(s * (1.0 / (softcap * LOG2E))) * (softcap * LOG2E)
        if ALIBI:  # −slope · |r + off − j|, after the cap (flash-attn's order)
            distance = rows[:, None] + (off - n) - tl.arange(0, BN)[None, :]
            s = s - slope * tl.abs(distance).to(tl.f32)
        masked = n + BN > whole
        if WINDOW:
            masked = masked | (n < first)
        if masked:
            cols = n + tl.arange(0, BN)
            visible = tl.broadcast(cols[None, :] < sk, [BM, BN])
            if WINDOW:
                visible = visible & (cols[None, :] <= rows[:, None] + reach)
                visible = visible & (cols[None, :] >= rows[:, None] + (off - left))
            elif CAUSAL:
                visible = visible & (cols[None, :] <= rows[:, None] + off)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        base = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that sees nothing yet
        p = tl.fast_exp2(s - base[:, None])
        alpha = tl.fast_exp2(m_i - base)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = tl.dot(p.to(T), vt, acc * alpha[:, None])
        m_i = m_new
    seen = l_i > 0.0
    return acc / tl.where(seen, l_i, 1.0)[:, None], seen, m_i * LN2, l_i  # max in nats


@func
def log_sum_exp(seen, m_i, l_i):
    """lse from `attend`'s max and sum: -inf for a row that saw no key."""
    return tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))


# min_blocks: at D <= 64 ptxas aims for 4 blocks a multiprocessor, 128 registers, and
# spills 32 bytes of the masked branch's values to get there (non-causal, sm_90);
# stating 1 block lets it take the ~150 it needs (3 blocks of 4 warps, 0 spills).
def _min_blocks(HD, **_):
    return 1 if HD <= 64 else None


# warps: 4 for the narrow tiles, 8 for the wide ones (`default_tiles`); the dot chain
# gives each warp BM / WARPS rows (a 2 x 2 grid at D = 256's narrow 32 rows).
def _warps(WARPS, **_):
    return WARPS


# expect_replicated: at D = 256 the default 32-row tile gives the score dot a 2 x 2 warp
# grid, so two warps hold q; that build fits with 0 spills (tests/test_attention_resources.py),
# kernel.stats counts the operand, and a warning would be one the caller cannot act on.
@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)
def flash_attention_kernel(
    q: Tensor["T", "NB", "M", "H", "D"],
    k: Tensor["T", "NB", "N", "HK", "D"],
    v: Tensor["T", "NB", "N", "HK", "D"],
    o: Tensor["T", "NB", "M", "H", "D"],
    lse: Tensor[dtypes.f32, "NL", "HL", "ML"],
    slopes: Tensor[dtypes.f32, "1 + (NB - 1) * (ALIBI // 2)", "1 + (H - 1) * ((ALIBI + 1) // 2)"],
    scale: dtypes.f32,
    left: dtypes.i32 = 0,
    right: dtypes.i32 = 0,
    softcap: dtypes.f32 = 0.0,
    T: constexpr = dtypes.f16,
    CAUSAL: constexpr = False,
    LSE: constexpr = False,
    WINDOW: constexpr = False,
    SOFTCAP: constexpr = False,
    ALIBI: constexpr = 0,
    HD: constexpr = 64,
    BM: constexpr = 64,
    BN: constexpr = 64,
    STAGES: constexpr = 2,
    WARPS: constexpr = 4,
):
    """o = softmax(scale · q kᵀ) v per (batch, head), BM queries per block (module
    docstring); lse = the rows' log-sum-exp with LSE. WINDOW: keys left..right of a
    query's diagonal (right = 0 with CAUSAL); SOFTCAP: scores capped by `softcap`;
    ALIBI: the bias of slope slopes[b, h] (2: [NB, H]) or slopes[0, h] (1: [1, H]; 0:
    no bias, slopes [1, 1] unread). WARPS: the warps of a block (`default_tiles`)."""
    # Launch checks (the host's, before any launch): an AOT launcher has no Python
    # wrapper to check heads and the padded head dimension for it.
    assert HK >= 1, "k and v need at least one head"
    assert H % HK == 0, "k's heads HK must divide q's heads H (GQA/MQA)"
    assert D <= HD, "the head dimension D is at most the padded HD"
    b, h, bm = tl.blocks(NB, H, tl.cdiv(M, BM))
    if CAUSAL:  # the longest rows (the most keys) start first: a shorter tail
        bm = tl.cdiv(M, BM) - 1 - bm
    hk = h // (H // HK)
    qt = head_rows(q, b, bm * BM, h, BM, HD)
    slope = 0.0
    if ALIBI:
        slope = tl.load(slopes, [b * (ALIBI // 2), h]) * LOG2E
    out, seen, m_i, l_i = attend(
        qt, bm * BM, k, v, b, None, hk, M, N, scale, left, right, softcap, slope,
        T, CAUSAL, WINDOW, SOFTCAP, ALIBI, BM, BN, HD, STAGES,
    )  # fmt: skip
    tl.store(o, [b, bm * BM, h, 0], tl.reshape(out.to(T), [1, BM, 1, HD]))
    if LSE:
        total = log_sum_exp(seen, m_i, l_i)
        tl.store(lse, [b, h, bm * BM], tl.reshape(total, [1, 1, BM]))


@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)  # as flash_attention_kernel
def flash_attention_varlen_kernel(
    q: Tensor["T", "TQ", "H", "D"],
    k: Tensor["T", "TK", "HK", "D"],
    v: Tensor["T", "TK", "HK", "D"],
    cu_q: Tensor[dtypes.i32, "B1"],
    cu_k: Tensor[dtypes.i32, "B1"],
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
    HD: constexpr = 64,
    BM: constexpr = 64,
    BN: constexpr = 64,
    STAGES: constexpr = 2,
    WARPS: constexpr = 4,
):
    """`flash_attention_kernel` over packed sequences: sequence b's queries are rows
    cu_q[b]..cu_q[b+1] of q, its keys rows cu_k[b]..cu_k[b+1] of k and v (read at run
    time); MQ is the longest query count. Rows past a sequence's end are neither read
    (they read 0: K and V zero-filled as flash-attn's, so a NaN of the next sequence
    stays there: `sequence_boxes`) nor stored: their row index is sent outside the
    tensor (`sequence_rows`)."""
    # as flash_attention_kernel's
    assert HK >= 1, "k and v need at least one head"
    assert H % HK == 0, "k's heads HK must divide q's heads H (GQA/MQA)"
    assert D <= HD, "the head dimension D is at most the padded HD"
    b, h, bm = tl.blocks(B1 - 1, H, tl.cdiv(MQ, BM))
    hk = h // (H // HK)
    sq, at, qt = sequence_queries(q, cu_q, b, h, bm, BM, HD)
    k0 = tl.load(cu_k, [b])
    sk = tl.load(cu_k, [b + 1]) - k0
    out, seen, m_i, l_i = attend(
        qt, bm * BM, k, v, None, k0, hk, sq, sk, scale, left, right, softcap,
        sequence_slope(slopes, b, h, ALIBI), T, CAUSAL, WINDOW, SOFTCAP, ALIBI, BM, BN, HD,
        STAGES,
    )  # fmt: skip
    store_sequence_rows(o, lse, at, h, (out, seen, m_i, l_i), T, LSE, BM, HD)


@func
def sequence_queries(q, cu_q, b, h, bm, BM, HD):
    """A varlen block's queries: sequence b's query count, the packed rows of its rows
    bm·BM.. (-1 past its end: read 0, not stored: `sequence_rows`) and their [BM, HD]
    q tile of head h."""
    q0 = tl.load(cu_q, [b])
    sq = tl.load(cu_q, [b + 1]) - q0
    at = sequence_rows(q0, sq, bm * BM, BM)
    return sq, at, head_rows(q, None, at, h, BM, HD)


@func
def sequence_slope(slopes, b, h, ALIBI):
    """The ALiBi slope of sequence b's head h in base 2 (0 without ALiBi; one row of
    slopes for every sequence where ALIBI is 1, a row per sequence where it is 2)."""
    slope = 0.0
    if ALIBI:
        slope = tl.load(slopes, [b * (ALIBI // 2), h]) * LOG2E
    return slope


@func
def store_sequence_rows(o, lse, at, h, result, T, LSE, BM, HD):
    """A varlen block's output rows `at` of head h (and their lse with LSE) from
    `attend`'s result; rows at -1 (past the sequence) are outside: not stored."""
    out, seen, m_i, l_i = result
    tl.store(o, [at[:, None, None], h, 0], tl.reshape(out.to(T), [BM, 1, HD]))
    if LSE:
        total = log_sum_exp(seen, m_i, l_i)
        tl.store(lse, [h, at[None, :]], tl.reshape(total, [1, BM]))


#: Multiprocessors of the card the tiles are chosen for: an H100's 132 (the issue's
#: card; the host call may have no GPU to ask, as `paged_attention.TARGET_BLOCKS`).
MULTIPROCESSORS = 132

#: The narrow tiles' query rows by padded head dimension (4 warps, 16 rows each; D =
#: 256's [64, 256] accumulator alone would take 128 registers of 4 warps: 32 rows).
NARROW_ROWS = {16: 64, 32: 64, 64: 64, 128: 64, 256: 32}

#: The keys a step (BN) by padded head dimension of a loop over every key (neither
#: causal nor a window: `default_tiles`'s `every_key`). One BN for the narrow and the
#: wide build of a head dimension, so a row's keys are summed in the same steps
#: whichever build a launch gets: bit-identical results, whatever the batch and heads.
#: Longer steps take fewer instructions and barriers per key (D=128: 64 keys rather
#: than 32, 14% fewer main-loop instructions per key and half the barriers); the static
#: report, B=4 S=4096 H=32, not causal, sm_90a / sm_80 (us), narrow and wide (D=16:
#: narrow only):
#: D=16 BN 64 -> 128: 634.5 -> 581.7 / 1021.1 -> 910.7;
#: D=32 64 -> 128: narrow 731.5 -> 718.3 / 1183.2 -> 1124.6, wide 727.4 -> 658.0 /
#: 1141.8 -> 1014.2; D=64 64 -> 128: narrow 791.0 -> 644.5 / 2249.2 -> 2228.5, wide
#: 776.7 -> 628.9 / 2028.4 -> 2007.7; D=256 16 -> 32: narrow 8183.6 -> 7659.0 /
#: 12915.5 -> 12087.6, wide 7121.0 -> 6592.2 / 11149.3 -> 10321.3. Each with 0 spills
#: and every option on sm_80, sm_90 and sm_90a (up to 255 registers). D=128 keeps 64:
#: at 128 its narrow build needs about 316 registers with a window, softcap and ALiBi,
#: and the wide one predicts the same 1111.7 us on sm_90a, 0.5% less on sm_80 (3994.7);
#: D=32 at 256 keys takes 254 registers with no option on, for 1%; D=64 at 256 and
#: D=256 at 64 need more than 255 registers (D=256's wide build spills 80 bytes).
KEY_STEPS = {16: 128, 32: 128, 64: 128, 128: 64, 256: 32}

#: The wide tiles by padded head dimension: twice the rows over twice the warps (8), the
#: same BN (`KEY_STEPS`), so a row's keys are summed in the same order (the output is
#: bit-identical to the narrow build's and does not depend on the batch). Each warp
#: still owns 16 rows (8 at D = 256) but the 8 warps share each K and V stage: half the
#: shared-memory reads a row, which bound the narrow build. 0 spills with every option
#: on sm_80, sm_90 and sm_90a. HD = 16 keeps the narrow tiles: its wide build is
#: predicted no faster (BN 128: 590.9 us on sm_90a, 581.7 narrow; 64: slower on sm_80).
WIDE_TILES = {
    32: dict(BM=128, WARPS=8),
    64: dict(BM=128, WARPS=8),
    128: dict(BM=128, WARPS=8),
    256: dict(BM=64, WARPS=8),
}

#: What a query row costs in the wide build, the narrow build's cost being 1, by padded
#: head dimension and BN: the static report's ratio on sm_90a at B=4, S=4096, H=32, not
#: causal (wide / narrow us: D=32 BN 64: 727.4 / 731.5, 128: 658.0 / 718.3; D=64 BN 64:
#: 776.7 / 791.0, 128: 628.9 / 644.5; D=128: 1111.7 / 1189.8; D=256 BN 32: 6592.2 /
#: 7659.0), over the ratio of the rows the busiest multiprocessor runs there (4096 /
#: 4032; D=256: 4032 / 4000).
WIDE_ROW_COST = {
    (32, 64): 0.98,
    (32, 128): 0.90,
    (64, 64): 0.97,
    (64, 128): 0.96,
    (128, 64): 0.92,
    (256, 32): 0.85,
}


def default_tiles(
    head_dim: int, batch_heads: int = 0, rows: int = 0, every_key: bool = False
) -> dict[str, int]:
    """BM, BN, the padded head dimension HD (and WARPS, when not 4) for a head dimension
    and a launch of `batch_heads` (batch × query heads: the grid's other axes) by `rows`
    queries a head (varlen: the longest sequence's): the tiles that compile for sm_80
    and sm_90 with 0 spills (docs/benchmarks.md).

    The narrow tiles (`NARROW_ROWS`, 4 warps) or the wide ones (`WIDE_TILES`, 8 warps)
    where `_wide_first` predicts them to finish first (never without `batch_heads` and
    `rows`), both with the head dimension's BN. `every_key`: the loop walks every key
    (neither causal nor a window), and takes `KEY_STEPS` keys a step. A causal or
    windowed loop takes at most the narrow build's rows: it stops at its last row's
    right edge rounded up to a step, and a longer step would read keys that no row of
    a block sees (tests/test_attention.py fills them with NaN, which 0 · NaN spreads).

    An odd D leaves the rows of K and V 2-byte aligned, which cp.async cannot copy: the
    loop is built unpipelined (STAGES = 1; asked for 2 stages, the compiler would warn
    that it cannot honour them), and K reaches the score dot through registers, a
    [HD, BN] tile each warp holds whole: HD · BN / 64 registers, kept to 64 (at HD =
    128, 32 keys a step; 64 keys would need about 340 registers a thread). It keeps the
    narrow tiles."""
    hd = max(16, next_power_of_two(head_dim))
    narrow = NARROW_ROWS[hd]
    if head_dim % 2:
        return dict(HD=hd, BM=narrow, BN=min(64, 4096 // hd), STAGES=1)
    step = KEY_STEPS[hd] if every_key else min(KEY_STEPS[hd], narrow)
    tiles = dict(HD=hd, BM=narrow, BN=step)
    if hd in WIDE_TILES and _wide_first(hd, step, batch_heads, rows):
        tiles.update(WIDE_TILES[hd])
    return tiles


def _wide_first(hd: int, step: int, batch_heads: int, rows: int) -> bool:
    """Whether the wide build's busiest multiprocessor (of an H100's) finishes before
    the narrow build's: each runs ceil(blocks / MULTIPROCESSORS) blocks of its rows (a
    block's rows past the end cost as much), a wide row at `WIDE_ROW_COST` (of `step`
    keys a step). One block fills a multiprocessor in the wide build, so while the
    narrow grid gives each at most one block, its lone 4-warp blocks finish first (the
    static report, D=128: 8 heads of 1024 rows, 128 narrow blocks, 4.7 us narrow, 8.3
    wide; 12 heads, 192 blocks: 9.4 narrow, 8.3 wide); a last partial wave of few wide
    blocks can cost more than the narrow build's (99 heads of 256 rows over 8192 keys:
    127.8 narrow, 133.2 wide)."""

    def busiest(block_rows: int) -> int:  # rows the busiest multiprocessor runs
        blocks = batch_heads * -(-rows // block_rows)
        return -(-blocks // MULTIPROCESSORS) * block_rows

    wide = WIDE_TILES[hd]["BM"]
    return busiest(wide) * WIDE_ROW_COST[hd, step] < busiest(NARROW_ROWS[hd])


def host_bound(bound: Any) -> Any:
    """max_seqlen_k as a call plan keys it: checked against host lengths, never read by
    a launch, so every valid bound keys alike (anything else keys as itself, so its
    call runs in full and raises)."""
    return "a bound" if type(bound) is int and bound >= 0 else bound


#: The arguments a call plan keys coarsely (`planned(coarse=...)`): chunked prefill's
#: max_seqlen_q changes every step, and the grid takes it rounded (`coarse_length`).
COARSE = {"max_seqlen_q": coarse_length, "max_seqlen_k": host_bound}


@planned(coarse=COARSE)
@accepts_host_tensors
def flash_attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    causal: bool = False,
    scale: float | None = None,
    cu_seqlens_q: Any = None,
    cu_seqlens_k: Any = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    return_lse: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: Any = None,
    seqused_k: Any = None,
    block_table: Any = None,
    k_scale: Any = None,
    v_scale: Any = None,
    interpret: bool = False,
) -> Any:
    """Attention forward (flash-attn's `flash_attn_func`).

    q: [batch, Sq, H, D]; k, v: [batch, Sk, H_kv, D] with H_kv dividing H (GQA, MQA),
    all f16 or all bf16, D at most 256. `scale` defaults to 1/√D. Returns o [batch, Sq,
    H, D] in q's dtype, and with `return_lse` also lse [batch, H, Sq] (f32). Every
    argument after v is keyword-only: flash-attn's positional order (dropout_p after v,
    then softmax_scale, causal) or vLLM's (cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
    ...) would otherwise land on other parameters. `causal` (a bool; anything else is a
    TypeError): see the module docstring. Host arrays run on the CPU backend, device
    tensors on the GPU; `interpret` runs the reference interpreter (host arrays only).

    A query row that sees no key (causal with Sk < Sq, a window, Sk = 0) gets o = 0 and
    lse = -inf, the log of its empty sum. flash-attn's forward returns lse = +inf for
    such a row (its o is 0 too); vLLM's `merge_attn_states` takes -inf, as here, so a
    port that tests `lse == inf` must test `lse == -inf` instead.

    flash-attn's options, with its definitions (the module docstring): `window_size`
    (left, right) keeps query i to keys i + Sk − Sq − left ..= i + Sk − Sq + right (-1:
    unbounded on that side; with `causal`, right is 0); `softcap` > 0 replaces each scaled
    score s by softcap · tanh(s / softcap) (0: off); `alibi_slopes` (f32 [H] or [batch,
    H]) adds −slope · |i + Sk − Sq − j| to the capped score of query i and key j. The key
    blocks a window leaves out of every row of a query block are not read.

    Varlen (flash-attn's `flash_attn_varlen_func`): with `cu_seqlens_q` and
    `cu_seqlens_k` (int32 [batch + 1], non-decreasing, from 0 to total_q and total_k),
    q is packed [total_q, H, D], k and v [total_k, H_kv, D]; sequence b is rows
    cu_seqlens_q[b]..cu_seqlens_q[b + 1] of q (and likewise for k, v), possibly empty.
    `max_seqlen_q` (the longest query count) sizes the grid, rounded up to one of 8
    steps an octave (`coarse_length`: chunked prefill's grows each step, and the call
    plan is keyed by the rounded value); `max_seqlen_k` is accepted for flash-attn's
    signature (the kernel reads each length). o is [total_q, H, D],
    lse [H, total_q]. Host arrays' offsets are checked before the launch.

    Paged (flash-attn's `flash_attn_varlen_func(..., block_table=)`, vLLM's
    FlashAttention backend): with `block_table`, k and v are the paged caches k_cache,
    v_cache [num_blocks, block_size, H_kv, D] and sequence b's keys are its first
    seqused_k[b] (or cu_seqlens_k[b + 1] − cu_seqlens_k[b]) tokens through the table;
    its queries, packed by cu_seqlens_q, are its last positions (`kernels.paged_prefill`:
    chunked prefill, prefix-cache hits, decode). The caches hold q's dtype (`k_scale`,
    `v_scale` absent or 1) or f8e4m3/f8e5m2 codes with k_scale, v_scale per tensor or
    per KV head, as `paged_decode_attention` takes them."""
    causal = checked_causal(causal)
    if block_table is not None or seqused_k is not None:
        options = (window_size, softcap, alibi_slopes)
        return PAGED_FORM["call"](
            q, k, v, block_table, causal, scale, (cu_seqlens_q, cu_seqlens_k, seqused_k),
            (max_seqlen_q, max_seqlen_k), return_lse, options, interpret, (k_scale, v_scale),
        )  # fmt: skip
    if k_scale is not None or v_scale is not None:
        raise ValueError(
            "k_scale and v_scale go with a paged cache (block_table=): k and v here are q's dtype"
        )
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        options = (window_size, softcap, alibi_slopes)
        return _varlen(
            q, k, v, causal, scale, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, return_lse,
            options, interpret,
        )  # fmt: skip
    del max_seqlen_q, max_seqlen_k  # used with varlen only
    (nb, sq, heads, d), t = check(
        q, "q", (None, None, None, None), ATTENTION_TYPES, ("batch", "Sq", "H", "D")
    )
    if len(shape_of(k, "k")) != 4:
        raise ValueError(f"k must have shape [batch, Sk, H_kv, D], got shape {shape_of(k, 'k')}")
    (_, sk, kv_heads, _), _ = check_like_q(
        k, "k", (nb, None, None, d), t, (None, "Sk", "H_kv", None)
    )
    check_like_q(v, "v", (nb, sk, kv_heads, d), t)
    _check_heads(heads, kv_heads, d)
    scale = _scale(scale, d)
    options, flags = _options(window_size, softcap, alibi_slopes, causal, (nb, heads), sq, sk, q)
    same_place(dict(q=q, k=k, v=v, alibi_slopes=alibi_slopes))
    out = empty(q, (nb, sq, heads, d), t)
    lse = empty(q, (nb, heads, sq), dtypes.f32) if return_lse else placeholder(q, 3)
    if nb * sq * heads * d == 0:
        return (out, lse) if return_lse else out
    tiles = default_tiles(d, nb * heads, sq, every_key=not (causal or flags["WINDOW"]))
    constexprs = dict(T=t, CAUSAL=causal, LSE=bool(return_lse), **flags, **tiles)
    slopes, left, right, cap = options
    args = [q, k, v, out, lse, slopes, float(scale), left, right, cap]
    run(flash_attention_kernel, args, constexprs, interpret)
    return (out, lse) if return_lse else out


def _varlen(
    q: Any,
    k: Any,
    v: Any,
    causal: bool,
    scale: float | None,
    cu_q: Any,
    cu_k: Any,
    max_seqlen_q: int | None,
    return_lse: bool,
    options: tuple,
    interpret: bool,
) -> Any:
    """`flash_attention` over packed sequences (its docstring)."""
    if cu_q is None or cu_k is None:
        given = "cu_seqlens_q" if cu_q is not None else "cu_seqlens_k"
        raise ValueError(
            f"varlen attention needs both cu_seqlens_q and cu_seqlens_k; got only {given}"
        )
    (total_q, heads, d), t = check(
        q, "q", (None, None, None), ATTENTION_TYPES, ("total_q", "H", "D")
    )
    (total_k, kv_heads, _), _ = check_like_q(k, "k", (None, None, d), t, ("total_k", "H_kv", None))
    check_like_q(v, "v", (total_k, kv_heads, d), t)
    (b1,), _ = check(cu_q, "cu_seqlens_q", (None,), (dtypes.i32,), ("batch + 1",))
    check(cu_k, "cu_seqlens_k", (b1,), (dtypes.i32,))
    if b1 < 1:
        raise ValueError("cu_seqlens_q must have batch + 1 >= 1 entries, got 0")
    _check_heads(heads, kv_heads, d)
    scale = _scale(scale, d)
    window_size, softcap, alibi_slopes = options
    # each sequence's lengths are at most the packed ones: those bound the window
    options, flags = _options(
        window_size, softcap, alibi_slopes, causal, (b1 - 1, heads), total_q, total_k, q
    )
    same_place(dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, alibi_slopes=alibi_slopes))
    _check_offsets(cu_q, "cu_seqlens_q", total_q)
    _check_offsets(cu_k, "cu_seqlens_k", total_k)
    max_seqlen_q = coarse_length(longest_queries(cu_q, max_seqlen_q))  # the grid's rows
    out = empty(q, (total_q, heads, d), t)
    lse = empty(q, (heads, total_q), dtypes.f32) if return_lse else placeholder(q, 2)
    if b1 == 1 or max_seqlen_q == 0 or total_q * heads * d == 0:
        return (out, lse) if return_lse else out
    every_key = not (causal or flags["WINDOW"])
    tiles = default_tiles(d, (b1 - 1) * heads, max_seqlen_q, every_key)  # the grid's blocks
    constexprs = dict(T=t, CAUSAL=causal, LSE=bool(return_lse), **flags, **tiles)
    slopes, left, right, cap = options
    args = [q, k, v, cu_q, cu_k, out, lse, slopes, float(scale), max_seqlen_q, left, right, cap]
    run(flash_attention_varlen_kernel, args, constexprs, interpret)
    return (out, lse) if return_lse else out


def longest_queries(cu_q: Any, max_seqlen_q: Any) -> int:
    """max_seqlen_q checked (a non-negative int, at least the longest of host offsets'
    sequences), or read from host offsets where not given; device offsets are not read,
    so they need it."""
    if max_seqlen_q is None:
        if not isinstance(cu_q, np.ndarray):
            raise ValueError(
                "max_seqlen_q is required for device tensors (the host does not read cu_seqlens_q)"
            )
        max_seqlen_q = int(np.diff(cu_q).max(initial=0))
    if not isinstance(max_seqlen_q, int) or max_seqlen_q < 0:
        raise ValueError(f"max_seqlen_q must be a non-negative int, got {max_seqlen_q!r}")
    if isinstance(cu_q, np.ndarray) and int(np.diff(cu_q).max(initial=0)) > max_seqlen_q:
        raise ValueError(
            f"max_seqlen_q = {max_seqlen_q} is below the longest query sequence, "
            f"{int(np.diff(cu_q).max())}"
        )
    return max_seqlen_q


def _options(
    window_size: Any,
    softcap: Any,
    alibi_slopes: Any,
    causal: bool,
    batch_heads: tuple[int, int],
    sq: int,
    sk: int,
    like: Any,
) -> tuple[list[Any], dict[str, bool]]:
    """The kernels' (slopes [1 or batch, H], left, right, softcap) and their WINDOW,
    SOFTCAP and ALIBI (0: none; 1: [H], 2: [batch, H]) constexprs from flash-attn's
    options, checked. An unbounded side (-1)
    becomes sk (left) or sq (right), which no query's edge reaches past (sq, sk: the
    lengths, or their upper bounds), so the kernel knows one window."""
    if (
        not isinstance(window_size, (tuple, list))
        or len(window_size) != 2
        or any(type(w) is not int and not isinstance(w, np.integer) for w in window_size)
        or min(window_size) < -1
    ):
        raise ValueError(
            f"window_size must be (left, right): two ints >= -1 (-1: unbounded), "
            f"got {window_size!r}"
        )
    left, right = (int(w) for w in window_size)
    right = 0 if causal else right  # flash-attn: causal is the window's right edge at 0
    window = left >= 0 or (right >= 0 and not causal)
    left = sk if left < 0 else min(left, sk)
    right = sq if right < 0 else min(right, sq)
    if (
        isinstance(softcap, bool)
        or not isinstance(softcap, (int, float, np.floating, np.integer))
        or not math.isfinite(softcap)
        or softcap < 0
    ):
        raise ValueError(f"softcap must be a finite number >= 0 (0: off), got {softcap!r}")
    slopes = placeholder(like, 2)
    alibi = 0
    if alibi_slopes is not None:
        batch, heads = batch_heads
        rank = alibi = len(shape_of(alibi_slopes, "alibi_slopes"))
        want = (heads,) if rank == 1 else (batch, heads)
        check(alibi_slopes, "alibi_slopes", want, (dtypes.f32,), ("H",) if rank == 1 else None)
        slopes = reshaped(alibi_slopes, (1, heads) if rank == 1 else want, "alibi_slopes")
    flags = dict(WINDOW=window, SOFTCAP=softcap > 0, ALIBI=alibi)
    return [slopes, left, right, float(softcap)], flags


def checked_causal(causal: Any) -> bool:
    """`causal` as a bool: a Python or numpy bool only. A number there is a call written
    for another signature (flash-attn's `dropout_p` comes after v), which `bool()`
    would silently turn into causal attention."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(
            f"causal must be a bool (True or False), got {type(causal).__name__} {causal!r}"
        )
    return bool(causal)


def check_like_q(
    x: Any, name: str, shape: tuple, t: Any, names: tuple[str | None, ...] | None = None
) -> tuple[tuple[int, ...], Any]:
    """`check` of k or v: its shape, and q's dtype `t` (one of `ATTENTION_TYPES` of
    another dtype is named as a mismatch with q, not as an unsupported type)."""
    got, given = check(x, name, shape, ATTENTION_TYPES, names)
    require_q_dtype(name, t, given)
    return got, given


def require_q_dtype(name: str, t: Any, given: Any) -> None:
    """A TypeError unless k or v (`name`) has q's dtype `t`."""
    if given != t:
        raise TypeError(f"{name} must have q's dtype ({t}), got {given}")


def _check_heads(heads: int, kv_heads: int, d: int) -> None:
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(
            f"k's heads (H_kv = {kv_heads}) must divide q's heads (H = {heads}) for GQA/MQA"
        )
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"q's head dimension D must be in 1..{MAX_HEAD_DIM}, got D = {d}")


def _scale(scale: float | None, d: int) -> float:
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    return float(scale)


def _check_offsets(cu: Any, name: str, total: int) -> None:
    """Host offsets: from 0, non-decreasing, ending at the packed tensor's length (device
    offsets are not read by the host)."""
    if not isinstance(cu, np.ndarray):
        return
    values = cu.astype(np.int64)
    if values[0] != 0 or (np.diff(values) < 0).any() or values[-1] != total:
        raise ValueError(
            f"{name} must rise from 0 to the packed length {total} without decreasing, "
            f"got {values.tolist()}"
        )
