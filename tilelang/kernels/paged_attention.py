"""Paged decode attention (`paged_decode_attention`): one new query token per sequence
against a KV cache in vLLM's paged layout, split over the context with a log-sum-exp
combine.

For each sequence b, query head h (reading KV head hk = h // G, G = H / H_kv: GQA) and
the first n = seq_lens[b] tokens of the sequence, in f32 (the output rounded once to
q's dtype):

    token t lives in row t % BS of page block_table[b, t // BS] of the cache
    s[t] = scale · q[b, h] · K[t],  o[b, h] = Σ_t softmax(s)[t] · V[t]

A sequence of length 0 gets o = 0. K and V are the cache's values dequantized:

* f16, bf16: as stored (the cache's dtype must be q's);
* f8e4m3, f8e5m2: code · scale, the scale per tensor (a number, or an f32 array of one
  element) or per KV head (f32 [H_kv]); on the GPU a device tensor of one element (0-d
  too) or [H_kv];
* u8, u4: (code − zero) · scale with a scale and a zero point per token and KV head:
  k_scale, v_scale f32 [num_blocks, block_size, H_kv] (the cache's layout without D)
  and k_zero, v_zero of the same shape (f32; absent: 2^(bits−1), 128 for u8, 8 for u4).
  A u4 cache is a `tilelang.PackedArray` (two codes a byte, D even).

The first kernel's block handles one (sequence, KV head, split): the G query heads of
the group form the rows of a [GP, D] tile (GP = G padded to 16, the mma's rows; the
extra rows are other heads' or zeros, computed and never read), so each KV row is read
once per group. It walks its split's tokens BN at a time with the online softmax of
FlashAttention. A step gathers its BN token rows: the pages come from the block table
(a gather of table entries t // BS along the row), the rows from the pages (a gather of
[BN, 1, D] rows of the cache viewed as [num_blocks · BS, H_kv, D], each row D
contiguous elements); tokens past the split's end get row −1, which reads zeros and
touches nothing, as does a table entry outside the cache. So any block size works, BS
smaller or larger than BN. The loop is pipelined (`stages=STAGES`,
`tilelang.passes.pipeline_gathers`): the rows of K and V, and the per-token scales and
zero points, are copied with cp.async (16-byte runs for the rows) STAGES − 1 steps
ahead of the step that uses them, the block table's entries one step further, so no
step waits on DRAM for its rows; `pipeline_stages` sizes STAGES for the bytes in
flight. A sequence reads at most max_blocks · block_size tokens, whatever seq_lens
says (host arrays are checked before the launch); the last split reads every token past
the others, so splits sized for a max_seq_len shorter than a sequence still read it all.

The codes go to q's type exactly (f8e4m3, u8 and u4 values are all f16 and bf16
numbers) and into the mmas as they are; the scales and zero points are applied around
them, where they cost one operation per token instead of one per element: an f8 scale
of the block's KV head multiplies the softmax scale and, at the end, the output; with
per-token parameters, q·((c − z)·s) = (q·c − z·Σq)·s for the scores, and
Σ p·(c − z)·s = Σ (p·s)·c − Σ (p·s)·z for the output, with p·s rounded to q's type
once and the last sum kept per row beside the accumulator (rescaled with it). An
absent zero point, the constant 2^(bits−1), costs nothing: it folds into the
dequantization's own subtraction (c − z, a small integer, exact in q's type; not for
u8 codes to bf16, which go through f32 and keep the per-token algebra).

The u8/u4 build reads each step's K rows in `key_rows_layout`: each thread dequantizes
a run of consecutive codes of one row, which is its fragment of the score mma's B
operand once the head dimension is permuted (q's columns and K's alike, which leaves
q·K unchanged), so no K tile moves between threads. Scores are kept in base 2 (the
softmax scale times log2 e, `fast_exp2`, probabilities below 2^-126 flushed to 0), the
row max handed to the combine in natural units.

Each split writes its unnormalized accumulator and its row max m and sum l, then
arrives at its (sequence, KV head)'s counter (`tl.arrive`); the last split to arrive
combines them all for the G query heads (`combine_splits`): with M = max m,
o = Σ exp(m − M)·acc / Σ exp(m − M)·l, the splits added in split order, and zeroes the
counter. One launch, no floating-point atomics: the combine needs every split's max
before it can scale any of them, and a fixed-order sum keeps the result deterministic.
(Before `tl.arrive`, a second kernel combined them: a second launch per call.)
"""

import math
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.kernel import func, kernel
from tilelang.lang.signature import Tensor, constexpr
from tilelang.runtime import gpu
from tilelang.runtime.call_plans import planned
from tilelang.runtime.counters import arrive_counters
from tilelang.runtime.host_calls import accepts_host_tensors
from tilelang.runtime.host_tensor import values_dtype

from .common import (
    LN2,
    LOG2E,
    check,
    coarse_length,
    empty,
    next_power_of_two,
    on_gpu,
    placeholder,
    run,
    same_place,
    tl,
)
from .paged_arguments import (
    HEAD_SCALED,
    PLAIN,
    TOKEN_SCALED,
    cache_layout,
    cache_spans,
    check_cache_type,
    check_lengths,
    check_max_seq_len,
    dequantization,
)

#: The dtypes of q (tensor-core operands); the output has q's.
QUERY_TYPES = (dtypes.f16, dtypes.bf16)
#: The block sizes (tokens per page) the kernel takes.
BLOCK_SIZES = (8, 128)
#: The largest head dimension.
MAX_HEAD_DIM = 256
#: Blocks the split kernel aims at per streaming multiprocessor (an H100 has 132).
TARGET_BLOCKS = 2 * 132
#: The fewest tokens a split gets (fewer splits would leave the SMs idle; more would
#: make the combine the larger part of the work).
MIN_SPLIT_TOKENS = 256


@func
def permuted(x, R, HD):
    """x [R, HD] with its columns permuted: column 8j + 2c + e of the result is column
    (HD/4)·c + 2j + e of x (`key_rows_layout`)."""
    return tl.reshape(tl.transpose(tl.reshape(x, [R, 4, HD // 8, 2]), [0, 2, 1, 3]), [R, HD])


@func
def per_token(values, rows, hk, BN):
    """The scale or zero point [BN] of each token's row (`rows`: [BN, 1] row numbers)."""
    return tl.reshape(tl.load(values, [rows, hk], [BN, 1]), [BN])


def zero_type(cache: DType) -> DType:
    """The integer type the constant zero point 2^(bits − 1) of a u8/u4 cache is made
    of: small enough that the zero point folds into the dequantization's subtraction
    (`zero_folds`)."""
    return dtypes.u8 if cache.bits == 8 else dtypes.i8


def zero_folds(cache: DType, query: DType) -> bool:
    """Whether the constant zero point of a `cache` (u8, u4) cache folds into the
    dequantization to `query`'s type (`tilelang.lowering.dequant.folds_zero_points`):
    codes minus 2^(bits − 1) are small integers the type holds exactly. 8-bit codes to
    bf16 go through f32 (no fold): those keep the algebra of per-token zero points."""
    return not (cache.bits == 8 and query == dtypes.bf16)


def key_rows_layout(gp: int, bn: int, hd: int, warps: int) -> Any:
    """The register layout of a step's [BN, 1, HD] quantized K rows, or None: each
    thread holds HD/4 consecutive codes of a row (one run: 16-byte loads from shared
    memory) and the rows sit where the score dot's B operand wants its tokens (warp w:
    its BN/warps tokens, lane l: token l/4 of each 8 and quarter l % 4 of the row).
    With the head dimension permuted as the kernel permutes it (d = 8j + 2c + e at
    code 2j + e of quarter c), the codes each thread dequantizes are its B fragment, so
    no K tile moves between threads. None where the dot's warps are not all along the
    tokens (G > 16, or BN/8 not a multiple of the warps): the blocked load then."""
    if gp != 16 or bn % (8 * warps) or hd % 16:
        return None  # the mma grid is 1 x warps over [16, BN] only with these
    rows = tl.Layout(
        (bn, 1, hd),
        ((warps, bn // 8 // warps, 8), (1,), (4, hd // 4)),
        (0, 2, 4),  # threads: warp, lane / 4 (the token), lane % 4 (the row's quarter)
        (1, 3, 5),  # locals: the warp's 8-token group, then the quarter's codes in order
    )
    fragment = tl.dot_layout("b", gp, bn, hd, warps=warps).table()  # [T, N, (d, token)]
    mine = rows.table()  # [T, N, (token, 0, m)]: the code m is d = 8j + 2c + e
    m = mine[:, :, 2]
    quarter = m // (hd // 4)
    d = 8 * (m % (hd // 4) // 2) + 2 * quarter + m % 2
    for t in range(mine.shape[0]):
        want = {(int(a), int(b)) for a, b in fragment[t]}
        if want != {(int(a), int(b)) for a, b in zip(d[t], mine[t, :, 0], strict=True)}:
            return None
    return rows


def _fragment_rows(MODE, GP, BN, HD, WARPS, **_) -> bool:
    """Whether a build reads u8/u4 K rows in `key_rows_layout`: then every warp lies
    along the tokens and holds q whole by design (the price of no K relayout; at D = 256
    that is 64 registers a thread), so no `ReplicatedOperandWarning` is given for it."""
    return MODE == TOKEN_SCALED and key_rows_layout(GP, BN, HD, WARPS) is not None


@kernel(
    warps=lambda WARPS, **_: WARPS,
    min_blocks=lambda MIN_BLOCKS, **_: MIN_BLOCKS or None,
    expect_replicated=_fragment_rows,
)
def paged_split_kernel(
    q: Tensor["T", "NB", "H", "D"],
    k: Tensor["KT", "R", "HK", "D"],
    v: Tensor["KT", "R", "HK", "D"],
    ks: Tensor[dtypes.f32, "SR", "SH"],
    kz: Tensor[dtypes.f32, "SR", "SH"],
    vs: Tensor[dtypes.f32, "SR", "SH"],
    vz: Tensor[dtypes.f32, "SR", "SH"],
    table: Tensor[dtypes.i32, "NB", "MB"],
    lens: Tensor[dtypes.i32, "NB"],
    part_o: Tensor[dtypes.f32, "NB", "HK", "S", "GP", "HD"],
    part_m: Tensor[dtypes.f32, "NB", "HK", "S", "GP"],
    part_l: Tensor[dtypes.f32, "NB", "HK", "S", "GP"],
    counts: Tensor[dtypes.i32, "NB", "HK"],
    o: Tensor["T", "NB", "H", "D"],
    scale: dtypes.f32,
    v_factor: dtypes.f32,
    per_split: dtypes.i32,
    page_rows: dtypes.i32 = 0,
    T: constexpr = dtypes.f16,
    KT: constexpr = dtypes.f16,
    MODE: constexpr = PLAIN,
    K_HEAD: constexpr = True,
    V_HEAD: constexpr = True,
    K_ZEROS: constexpr = True,
    V_ZEROS: constexpr = True,
    BS: constexpr = 16,
    G: constexpr = 1,
    GP: constexpr = 16,
    HD: constexpr = 128,
    BN: constexpr = 32,
    WARPS: constexpr = 4,
    MIN_BLOCKS: constexpr = 0,
    STAGES: constexpr = 1,  # 1: not pipelined; `default_tiles` picks the callers' stages
    APART: constexpr = False,
):
    """One split of one (sequence, KV head): the unnormalized output of its G query
    heads and their row max and sum over the split's tokens (module docstring); the
    last split of the (sequence, KV head) to arrive at its counter combines them all
    into o and zeroes the counter (`combine_splits`).

    Only what MODE and the flags name is read; the host fills each unread slot with a
    tensor that exists already (`Dequantization.tensors`), so a launch makes none for
    it. The flags' defaults read every tensor. HEAD_SCALED
    (f8): K_HEAD / V_HEAD read s_k / s_v of the block's KV head from ks / vs ([1, 1]:
    one for all), else s_k is folded into `scale` and s_v is `v_factor`. TOKEN_SCALED
    (u8, u4): K_ZEROS / V_ZEROS read kz / vz, else the zero points are 2^(bits − 1).
    APART (PLAIN and HEAD_SCALED): k and v are spans of caches whose pages lie
    page_rows rows apart (`paged_arguments.cache_spans`)."""
    b, hk, split = tl.blocks(NB, HK, S)
    length = tl.load(lens, [b])
    start = split * per_split
    # the last split takes every token left (seq_lens past the max_seq_len that sized
    # the splits, on the GPU), up to the table's end
    end = tl.where(split == S - 1, MB * BS, start + per_split)
    stop = tl.minimum(tl.minimum(end, length), MB * BS)  # the table's tokens
    qt = tl.reshape(tl.load(q, [b, hk * G, 0], [1, GP, HD]), [GP, HD])
    # u8/u4 K rows in their fragment layout where it holds (None: the blocked load)
    k_layout = key_rows_layout(GP, BN, HD, WARPS) if MODE == TOKEN_SCALED else None
    if MODE == TOKEN_SCALED:
        qt = permuted(qt, GP, HD)  # as K's columns are (key_rows_layout): q·K is the same
    score_scale = scale
    if MODE == HEAD_SCALED and K_HEAD:  # code · s_k: s_k factors out of the dot
        score_scale = scale * tl.load(ks, [0, hk % SH])
    score_scale = score_scale * LOG2E  # scores in base 2: exp2 is one instruction less
    if MODE == TOKEN_SCALED:
        q_sum = tl.sum(qt.to(tl.f32), axis=1)
        zero = float(1 << (KT.bits - 1))  # the zero point when none is given
        codes_zero = tl.full([1, 1], 1 << (KT.bits - 1), zero_type(KT)).to(T)
    m_i = tl.full([GP], float("-inf"), tl.f32)
    l_i = tl.zeros([GP], tl.f32)
    acc = tl.zeros([GP, HD], tl.f32)
    shift = tl.zeros([GP], tl.f32)  # Σ (p·s)·z of per-token V zero points (V_ZEROS)
    for t0 in tl.range(start, stop, BN, stages=STAGES):
        token = t0 + tl.arange(0, BN)
        page = tl.load(table, [b, (token // BS)[None, :]], [1, BN], fill=-1)
        stride = page_rows if APART else BS  # rows from one page to the next
        row = tl.where(token < stop, tl.reshape(page, [BN]) * stride + token % BS, -1)
        rows = row[:, None, None]  # one index tile (and one relayout) for K and V
        kt = tl.reshape(tl.load(k, [rows, hk, 0], [BN, 1, HD], layout=k_layout), [BN, HD])
        vt = tl.reshape(tl.load(v, [rows, hk, 0], [BN, 1, HD]), [BN, HD])
        # masked tokens (past the split's end) read zeros: a finite score, then −inf
        bias = tl.where(token < stop, 0.0, float("-inf"))[None, :]
        if MODE == TOKEN_SCALED:
            # the constant zero point folds into the dequantization's subtraction (exact:
            # small integers); per-token ones are applied per token, below
            kc = kt.to(T) - codes_zero if not K_ZEROS and zero_folds(KT, T) else kt.to(T)
            s = tl.dot(qt, tl.transpose(permuted(kc, BN, HD)))
            params = row[:, None]  # one index tile for the scales and zero points
            k_s = (per_token(ks, params, hk, BN) * score_scale)[None, :]
            if K_ZEROS:  # q·(c − z)·s = (q·c − z·Σq)·s, per token
                s = (s - q_sum[:, None] * per_token(kz, params, hk, BN)[None, :]) * k_s + bias
            elif zero_folds(KT, T):
                s = s * k_s + bias
            else:
                s = (s - q_sum[:, None] * zero) * k_s + bias
        else:
            s = tl.dot(qt, tl.transpose(kt.to(T))) * score_scale + bias
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        base = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.fast_exp2(s - base[:, None])
        alpha = tl.fast_exp2(m_i - base)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if MODE == TOKEN_SCALED:  # Σ p·(c − z)·s = Σ (p·s)·(c − z), per token
            weights = (p * per_token(vs, params, hk, BN)[None, :]).to(T)
            if V_ZEROS:  # = Σ (p·s)·c − Σ (p·s)·z
                v_z = per_token(vz, params, hk, BN)
                shift = shift * alpha + tl.sum(weights.to(tl.f32) * v_z[None, :], axis=1)
                acc = tl.dot(weights, vt.to(T), acc * alpha[:, None])
            elif zero_folds(KT, T):
                acc = tl.dot(weights, vt.to(T) - codes_zero, acc * alpha[:, None])
            else:
                shift = shift * alpha + tl.sum(weights.to(tl.f32), axis=1) * zero
                acc = tl.dot(weights, vt.to(T), acc * alpha[:, None])
        else:
            acc = tl.dot(p.to(T), vt.to(T), acc * alpha[:, None])
        m_i = m_new
    if MODE == HEAD_SCALED:  # Σ p · code · s_v = s_v · Σ p · code
        out_scale = v_factor
        if V_HEAD:
            out_scale = tl.load(vs, [0, hk % SH])
        acc = acc * out_scale
    if MODE == TOKEN_SCALED:
        acc = acc - shift[:, None]
    m_i = m_i * LN2  # the row max in the scores' own units (the combine's exp)
    tl.store(part_o, [b, hk, split, 0, 0], tl.reshape(acc, [1, 1, 1, GP, HD]))
    tl.store(part_m, [b, hk, split, 0], tl.reshape(m_i, [1, 1, 1, GP]))
    tl.store(part_l, [b, hk, split, 0], tl.reshape(l_i, [1, 1, 1, GP]))
    if tl.arrive(counts, [b, hk]) == S - 1:
        combine_splits(part_o, part_m, part_l, o, b, hk, S, T, G, GP, HD)
        tl.store(counts, [b, hk], tl.zeros([1, 1], tl.i32))


@func
def combine_splits(part_o, part_m, part_l, o, b, hk, S, T, G, GP, HD):
    """o[b, hk·G + g] for the G query heads of a KV head, from its S splits:
    Σ exp(m − M)·acc / Σ exp(m − M)·l with M the largest row max (module docstring);
    0 where no split saw a token. The splits are added in split order (deterministic),
    one at a time (a [GP, HD] accumulator and one split's rows in registers)."""
    top = tl.full([GP], float("-inf"), tl.f32)
    for split in tl.range(0, S, unroll=1):
        top = tl.maximum(top, tl.reshape(tl.load(part_m, [b, hk, split, 0], [1, 1, 1, GP]), [GP]))
    base = tl.where(top == float("-inf"), 0.0, top)
    total = tl.zeros([GP], tl.f32)
    acc = tl.zeros([GP, HD], tl.f32)
    for split in tl.range(0, S, unroll=1):
        m = tl.reshape(tl.load(part_m, [b, hk, split, 0], [1, 1, 1, GP]), [GP])
        weight = tl.exp(m - base)
        total = total + weight * tl.reshape(tl.load(part_l, [b, hk, split, 0], [1, 1, 1, GP]), [GP])
        rows = tl.reshape(tl.load(part_o, [b, hk, split, 0, 0], [1, 1, 1, GP, HD]), [GP, HD])
        acc = acc + weight[:, None] * rows
    out = acc / tl.where(total > 0.0, total, 1.0)[:, None]
    tl.store(o, [b, hk * G, 0], tl.reshape(out[:G].to(T), [1, G, HD]))


#: (BN, WARPS, MIN_BLOCKS) of the split kernel by (cache, D, arch) where the plain
#: tiles (32 tokens, 4 warps, no minimum) do not serve. Where ptxas caps the registers
#: for occupancy and spills, `min_blocks=1` (`tilelang.kernel`) lets it use what the
#: kernel needs. u8 and f8 at D = 64 needed it until the splits' combine moved into
#: this kernel's last block (`combine_splits`); since, capped at 76-96 registers they
#: spill nothing on sm_80 and sm_90 with any flags (and 5 blocks fit an SM where 4 did
#: with the 104-115 the minimum gave), so they take the plain tiles.
TOKEN_TILES = {
    (dtypes.u4, 64, "sm_80"): (32, 2, 0),  # 4 warps read its 32-byte rows 8 bytes a thread
    (dtypes.u4, 64, "sm_90"): (32, 2, 0),
    # u4 at D = 128: 64 tokens a step halve the per-step work (the accumulator's
    # rescale, the reductions' exchanges, the loop's bookkeeping) per token: sm_90
    # 0.343 -> 0.298 warp instructions per K element, under the 0.312 the DRAM floor
    # leaves (perf_report); 200-204 registers, 0 spills (min_blocks=1 from D = 128)
    (dtypes.u4, 128, "sm_80"): (64, 4, 1),
    (dtypes.u4, 128, "sm_90"): (64, 4, 1),
}

#: (BN, WARPS, MIN_BLOCKS) by (cache, D, arch) for a group of at most 16 query heads
#: (GP = 16), before TOKEN_TILES: the tiles whose point is `key_rows_layout`, which
#: holds at GP = 16 only. A larger group keeps TOKEN_TILES' or HEAD_DIM_TILES' tiles:
#: these, their BN scaled by 16/GP, spill at D = 64 (sm_80, GP 32: 4-12 bytes) and take
#: 194-221 registers at D = 256.
GROUP_16_TILES = {
    # u4 at D = 64 (32-byte rows): 128 tokens a step over 2 warps, each warp's 64 tokens
    # the score mma's B fragments (key_rows_layout): the per-step work (rescale, row
    # reductions, bookkeeping) spread over 4x the tokens of the 32-token, 2-warp tiles:
    # 0.438 -> 0.369 warp instructions per K element on sm_90 (0.330 budget), 254-255
    # registers and 0 spills with every zero-point flag. 1 warp (64 tokens) issues
    # less still but leaves one warp per scheduler (perf_report: optimistic) and
    # spills with V's zero points; 2 warps at 64 tokens reach only 84% on sm_90. With
    # V's zero points given, the per-token Σ (p·s)·z (cvt, multiply, row sum) costs
    # ~180 instructions a step and every tile that would absorb it sits at the
    # 255-register ceiling: 81-83% of DRAM bandwidth with exp2, 86-87% with fast_exp2.
    (dtypes.u4, 64, "sm_80"): (128, 2, 1),
    (dtypes.u4, 64, "sm_90"): (128, 2, 1),
    # u4 at D = 128: 64 tokens a step over 2 warps, 32 a warp. 4 warps (TOKEN_TILES)
    # issue fewer instructions a warp, but each step's K and V pass through shared
    # memory for twice as many warps: the static model's shared-memory bound held them
    # at 91-92% of DRAM bandwidth, against 100% here with every zero-point flag on sm_80
    # and sm_90 (254-255 registers, 0 spills).
    (dtypes.u4, 128, "sm_80"): (64, 2, 1),
    (dtypes.u4, 128, "sm_90"): (64, 2, 1),
    # u4 at D = 256: 32 tokens a step over 4 warps, 8 a warp, so the K rows load in
    # their B-fragment layout (key_rows_layout needs BN % (8 · warps) == 0). 64 tokens
    # over 8 warps did so too (0.264 warp instructions per K element on sm_90), but
    # its 8 warps moved each step through shared memory 14 times: with the static
    # model's shared-memory bound, 79% of DRAM bandwidth with zero points against
    # 94-100% here (0.244-0.267 per K element, 236-244 registers, 0 spills, every
    # zero-point flag, sm_80 and sm_90). The 1 x 4 warp grid holds q whole in each warp
    # (64 registers), the price of no K relayout: the kernel expects it
    # (`_fragment_rows`), kernel.stats counts it.
    (dtypes.u4, 256, "sm_80"): (32, 4, 1),
    (dtypes.u4, 256, "sm_90"): (32, 4, 1),
}

#: The (cache, D, arch, reads) whose build states `min_blocks=1` on top of its tiles:
#: a call that reads other tensors (`default_tiles`' `reads`) gives ptxas another
#: kernel; this one, capped at 168 registers, spills 8 bytes without it (220 registers
#: and 0 spills with it, measured, pipelined at 2-4 stages). D >= 128 always states it
#: (`default_tiles`); the f8 builds at D = 64 state it in TOKEN_TILES.
READS_MIN_BLOCKS = {
    (dtypes.u4, 64, "sm_90", (True, True)),  # both zero points given
}


#: (BN, WARPS, MIN_BLOCKS) by D for every cache type, where TOKEN_TILES has no entry
#: (else 32 tokens, 4 warps). At D = 256 with 4 warps the group's [16, 256] q tile, the
#: score dot's A operand, is held whole by each warp (64 registers a thread,
#: `ReplicatedOperandWarning`): 240-255 registers, and u8/u4 spill 4-16 bytes. 8 warps
#: split the step's [BN, 256] K and V and the [GP, 256] accumulator twice as finely and
#: the dot chain no longer replicates q: 89-124 registers, 0 spills, for every cache on
#: sm_80 and sm_90 (GQA up to 32), at about 15% more warp instructions a token than the
#: 4-warp build of a plain cache (sm_90 SASS main loop). `min_blocks=1`: without it
#: ptxas caps the f8 build at 80 registers for a third block and spills 4 bytes.
#: Swapping the score dot's operands (tokens as the mma rows) was tried: it moves the
#: replication to K (226-246 registers).
HEAD_DIM_TILES = {256: (32, 8, 1)}

#: From this padded D up, every build states `min_blocks=1`: the pipelined loop holds
#: its carried row index and stage indices beside the accumulator, and ptxas, capping
#: the registers at 128 or 168 for a third or fourth block, spilled 4-28 bytes (f16,
#: bf16 and f8 on sm_90, f16/bf16 and u4 on sm_80); with it the builds take 163-234
#: registers and spill nothing (measured). 4 warps at up to 255 registers still fit
#: two blocks a multiprocessor, what the splits aim at (TARGET_BLOCKS).
MIN_BLOCKS_FROM_HEAD_DIM = 128

#: Bytes of K and V rows a block keeps in flight: `STAGES` − 1 steps of BN rows are
#: being copied (cp.async) while it computes on one. Little's law: an H100 moves about
#: 3.35 TB/s at about 0.6 µs of DRAM latency, some 2 MB in flight, 15 KB per
#: multiprocessor (an A100 about 12 KB); 16 KB a block covers that with one block a
#: multiprocessor, twice with the two the splits aim at.
IN_FLIGHT_BYTES = 16 * 1024
#: The deepest pipeline: a split of MIN_SPLIT_TOKENS tokens is 8 steps of 32, and 4
#: stages keep 3 in flight (the 1-byte caches at D = 64).
MAX_STAGES = 4


def pipeline_stages(bn: int, head_dim: int, cache: DType) -> int:
    """The stages of the split kernel's token loop (at least 2: cp.async copies of the
    step's K and V rows S − 1 steps ahead): enough for IN_FLIGHT_BYTES of rows, at most
    MAX_STAGES. `head_dim` is the padded D."""
    step_bytes = 2 * bn * head_dim * cache.bits // 8  # K and V rows of one step
    return min(MAX_STAGES, 1 + max(1, -(-IN_FLIGHT_BYTES // step_bytes)))


def rows_copy_async(head_dim: int, cache: DType) -> bool:
    """Whether the cache's rows can be copied with cp.async: a row starts D codes after
    the one before it (a page's rows and the KV heads between them are whole rows), so
    every row is 4-byte aligned, and moves in runs of whole 4 bytes, exactly when D
    codes fill whole 4 bytes. Otherwise the compiler loads them as written, unpipelined,
    and would warn that the stages are not honoured (f16 D = 65, u8 D = 66, u4 D = 20)."""
    return head_dim * cache.bits % 32 == 0


def default_tiles(
    head_dim: int,
    group: int,
    cache: DType = dtypes.f16,
    arch: str = "sm_90",
    reads: tuple[bool, bool] = (True, True),
) -> dict[str, int]:
    """GP (the group's rows, at least the mma's 16), HD (D padded to a power of two), BN
    (tokens a step), WARPS, MIN_BLOCKS (0: none stated) and STAGES (the token loop's
    pipeline, `pipeline_stages`; 1 where the rows cannot be copied asynchronously,
    `rows_copy_async`) for a build for `arch`: the tiles that compile for
    sm_80 and sm_90 with 0 spills (docs/benchmarks.md). `reads`: whether the build
    reads K's and V's per-head scale tensors (f8: K_HEAD, V_HEAD) or zero points (u8,
    u4: K_ZEROS, V_ZEROS). The CPU backend uses sm_90's."""
    hd = max(16, next_power_of_two(head_dim))
    gp = max(16, next_power_of_two(group))
    family = "sm_80" if arch.startswith("sm_8") else "sm_90"
    plain = HEAD_DIM_TILES.get(hd, (32, 4, 0))
    bn, warps, min_blocks = TOKEN_TILES.get((cache, hd, family), plain)
    if gp == 16:
        bn, warps, min_blocks = GROUP_16_TILES.get((cache, hd, family), (bn, warps, min_blocks))
    if hd >= MIN_BLOCKS_FROM_HEAD_DIM or (cache, hd, family, tuple(reads)) in READS_MIN_BLOCKS:
        min_blocks = 1
    bn = max(16, bn * 16 // gp)
    stages = pipeline_stages(bn, hd, cache) if rows_copy_async(head_dim, cache) else 1
    return dict(GP=gp, HD=hd, BN=bn, WARPS=warps, MIN_BLOCKS=min_blocks, STAGES=stages)


def split_count(
    batch: int, kv_heads: int, capacity: int, bn: int, fixed: int | None = None
) -> tuple[int, int]:
    """The splits per (sequence, KV head) and the tokens of each (a multiple of BN):
    enough blocks for TARGET_BLOCKS, each split at least MIN_SPLIT_TOKENS long, over
    `capacity` tokens: the caller's max_seq_len, else the table's max_blocks ·
    block_size (the host does not read seq_lens, which may live on the GPU). The kernel's
    last split reads every token past the others, so a sequence longer than `capacity`
    is still read whole, by that split."""
    wanted = max(1, -(-TARGET_BLOCKS // max(1, batch * kv_heads)))
    longest = max(1, capacity // MIN_SPLIT_TOKENS)
    splits = max(1, min(wanted, longest))
    if fixed is not None:
        if not isinstance(fixed, int) or fixed < 1:
            raise ValueError(f"num_splits must be a positive int, got {fixed!r}")
        splits = fixed
    per_split = -(-max(1, capacity) // splits)
    per_split = -(-per_split // bn) * bn
    return -(-max(1, capacity) // per_split), per_split


@planned(coarse={"max_seq_len": coarse_length})
@accepts_host_tensors
def paged_decode_attention(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    block_table: Any,
    seq_lens: Any,
    scale: float | None = None,
    k_scale: Any = None,
    v_scale: Any = None,
    *,
    k_zero: Any = None,
    v_zero: Any = None,
    num_splits: int | None = None,
    max_seq_len: int | None = None,
    interpret: bool = False,
) -> Any:
    """Attention of one new token per sequence over a paged KV cache (vLLM's layout).

    q: [batch, H, D] f16 or bf16; k_cache, v_cache: [num_blocks, block_size, H_kv, D]
    with block_size in 8..128 and H_kv dividing H; block_table: int32 [batch,
    max_blocks] (sequence b's j-th page); seq_lens: int32 [batch], each at most
    max_blocks · block_size. `scale` defaults to 1/√D. The caches hold q's dtype
    (k_scale, v_scale absent or 1, ignored: vLLM passes them), or f8e4m3/f8e5m2 with
    k_scale, v_scale (per tensor or per KV head), or u8/u4 with per-token k_scale,
    v_scale and k_zero, v_zero (the module docstring gives the layouts; u4: a
    PackedArray). Returns [batch, H, D] in q's dtype (zeros for a sequence of length 0).

    Each sequence's tokens are split over blocks (`split_count`): about TARGET_BLOCKS
    blocks over batch · H_kv, each split at least MIN_SPLIT_TOKENS tokens, the splits
    covering `max_seq_len` tokens (at least the longest of seq_lens: vLLM's
    max_seq_len; rounded up to one of 8 buckets an octave, `coarse_length`, so a
    growing decode loop replays its call plan) when given, else the table's max_blocks · block_size, since the host
    does not read seq_lens (a table sized for max_model_len then leaves most splits past
    every sequence's end, idle: pass max_seq_len). Host seq_lens above max_seq_len are
    refused; on the GPU such a sequence is still read whole, by its last split (slower,
    not wrong). `num_splits` fixes the number of splits instead. Host arrays
    run on the CPU backend, device tensors on the GPU; `interpret` runs the reference
    interpreter (host arrays only). A GPU call allocates its output and split buffers
    and nothing else, and copies nothing to the device (it can be captured in a CUDA
    graph after a first call, which compiles): absent zero points and scales given as
    numbers are constexpr flags and scalars, not tensors. Only an f8 scale per KV head
    given as a host array is copied; pass a device tensor instead."""
    (nb, heads, d), t = check(q, "q", (None, None, None), QUERY_TYPES, ("batch", "H", "D"))
    shape, kt = cache_layout(k_cache, "k_cache")
    if len(shape) != 4:
        raise ValueError(
            f"k_cache must have shape [num_blocks, block_size, H_kv, D], got shape {list(shape)}"
        )
    blocks, bs, kv_heads, kd = shape
    v_shape, vt = cache_layout(v_cache, "v_cache")
    if v_shape != shape or vt != kt:
        raise ValueError(
            f"v_cache must be k_cache's shape and dtype, {list(shape)} {kt}, got "
            f"{list(v_shape)} {vt}"
        )
    check_cache_type(k_cache, kt, t, kd, d)
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"q's head dimension D must be in 1..{MAX_HEAD_DIM}, got D = {d}")
    if not BLOCK_SIZES[0] <= bs <= BLOCK_SIZES[1]:
        raise ValueError(
            f"k_cache's block_size must be in {BLOCK_SIZES[0]}..{BLOCK_SIZES[1]}, got {bs}"
        )
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"k_cache's heads (H_kv = {kv_heads}) must divide q's heads (H = {heads})")
    (_, max_blocks), _ = check(
        block_table, "block_table", (nb, None), (dtypes.i32,), (None, "max_blocks")
    )
    check(seq_lens, "seq_lens", (nb,), (dtypes.i32,))
    check_max_seq_len(max_seq_len)
    check_lengths(block_table, seq_lens, blocks, bs, max_seq_len)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    like = q
    same_place(
        dict(q=q, k_cache=k_cache, v_cache=v_cache, block_table=block_table, seq_lens=seq_lens)
    )
    deq = dequantization(kt, shape, k_scale, v_scale, k_zero, v_zero, like)
    out = empty(q, (nb, heads, d), t)
    if nb * heads * d == 0:
        return out
    group = heads // kv_heads
    arch = gpu.device_arch() if on_gpu(q) else "sm_90"
    tiles = default_tiles(d, group, kt, arch, deq.reads())
    tokens = max_blocks * bs
    if max_seq_len is not None:
        tokens = min(tokens, coarse_length(max_seq_len))
    splits, per_split = split_count(nb, kv_heads, tokens, tiles["BN"], num_splits)
    gp, hd = tiles["GP"], tiles["HD"]
    part_o = empty(q, (nb, kv_heads, splits, gp, hd), dtypes.f32)
    part_m = empty(q, (nb, kv_heads, splits, gp), dtypes.f32)
    part_l = empty(q, (nb, kv_heads, splits, gp), dtypes.f32)
    itemsize = values_dtype(kt).itemsize
    # one row index serves K and V and, for u8/u4, the dense per-token scales: their
    # caches are taken as laid out only where dense
    apart = deq.mode != TOKEN_SCALED
    k_rows, v_rows, page_rows = cache_spans(k_cache, v_cache, shape, itemsize, apart)
    params = deq.tensors(placeholder(q, 2))
    args = [q, k_rows, v_rows, *params, block_table, seq_lens]
    # s_k · scale in f32, as the kernel multiplies a per-head s_k
    score_scale = float(np.float32(scale) * np.float32(deq.k_factor))
    counts = arrive_counters(q, (nb, kv_heads))  # left zeroed by the launch: kept
    args += [part_o, part_m, part_l, counts, out, score_scale, deq.v_factor]
    args += [per_split, page_rows]
    constexprs = dict(T=t, KT=kt, BS=bs, G=group, APART=page_rows != bs)
    constexprs |= dict(**deq.constexprs(), **tiles)
    run(paged_split_kernel, args, constexprs, interpret)
    return out
