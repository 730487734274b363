"""The kernels behind `tilelang.quant.matmul`, written in the kernel language.

``y = x @ W``, x [M, K] of the operand type OT (f16 or bf16), W a quantized weight
whose codes were packed for the dot by `tilelang.pack_for_dot` (each [BK, BN] tile in
the load order of the mma B fragments), accumulated in f32. Each k-tile of codes is
loaded with `tl.load_fragment` straight into the B fragment layout, converted and
scaled there, in registers, and multiplied; no weight goes through shared memory.

The weight arithmetic of each format (`KIND`) is `tilelang.quant.arithmetic`'s, in OT:

* ``scaled``: ``(q.to(OT) - z.to(OT)) * s`` with s of type ST = OT (f16 scales with f16
  operands, bf16 with bf16); without zero points ``q.to(OT) * s``. q − z is a small
  integer, exact in OT, and the multiplication rounds the exact product once: the
  value `QuantizedWeight.dequantize` returns. The lowering folds z into the
  conversion's own subtraction (no instruction per weight).
* ``mx``: ``q.to(OT) * s.to(OT)``, s the e8m0 scale codes (held as u8 and viewed as
  e8m0, so a load needs no e8m0 fill value; the conversion is the e8m0 recipe of
  `tilelang.lowering.dequant`, exact for every code). The host shifts every code by a
  power of two e0 for the whole tensor (`tilelang.quant.operands`), so that the scales
  and the products stay exact in OT, and the accumulator is multiplied by 2^e0 (`t`).
* ``mx_normal``: the same, when the host has made every shifted code c a normal OT
  number (no NaN scale, 2^(c − 127) within OT's normal exponents): the host stores
  OT's exponent field e = c − (127 − bias_OT) instead (1..30 for f16), and s is built
  from its bits, ``e << mantissa_bits_OT`` viewed as OT: two integer instructions per
  scale instead of the general conversion (a scale a thread holds is converted once
  per group and column). With no subtraction the value facts carry through (`Operands.
  facts` bounds e; `analysis.value_bounds` follows the widening and the shift), so the
  scale folds into the element conversion (`lowering.scale_folds`). A padded scale
  (code 0, fill) becomes +0, which multiplies zero codes.
* ``nvfp4``: ``q.to(OT) * (b.to(OT) * 2^-8)``, b the f8e4m3 block scale: q·b·2^-8 is
  exact in f16 and bf16 (`NVFP4_SCALE_SHIFT`); the accumulator is multiplied by the f32
  tensor scale times 2^8, `t`.
* ``codebook``: ``tl.lookup(table, q) * s``, table the 2^b entries of the code book in
  ST = OT (``code``, TABLE of them), loaded once before the k loop (`codebook_table`):
  up to 16 entries as a register tile every thread holds whole, whose lookups are byte
  permutes with no shared memory (`lowering.register_lookup`), more as a `tl.shared`
  buffer, each code one shared-memory read with no barrier in the loop; the entry is
  an OT value and the multiplication rounds the exact product once:
  `tilelang.quant.arithmetic`'s ``codebook``.

The gemm path's tile (`tilelang.quant.choice`) is 64 rows over 4 warps, whose dot has
the packing's own 1 x 4 warp grid: its B layout has no replication, so each weight of
a k-tile is loaded and converted by one thread of the block and multiplies all 64 rows
(4 mma rows of 16); x's tile is copied by cp.async into swizzled shared stages and
read with ldmatrix.

One scale row serves a k-tile when the group G is a multiple of BK (G is 2^30 for one
group per column); when BK is a multiple of G the tile holds R = BK / G groups, whose
[R, BN] scales are broadcast to the codes' [BK, BN] tile (so that the product is the
conversion's one user and the scale folds into it, `lowering.scale_folds`). Either
way s holds the scales packed for tiles of R rows (R = 1 for one row;
`tilelang.quant.scale_packing`: ``[N / BN, K / G · BN]``, padded), read with
`tl.load_fragment` in the layout the broadcast gives them: each thread its own
columns' scales, in whole words. s's shape is the sizes SK, SN. No tile straddles a
group.

The epilogue, in f32: ``acc · t`` (with ``TENSOR_SCALE``), plus the bias (``HAS_BIAS``),
rounded once to OT. Split-K (``SPLIT_K`` > 1) is deterministic and one launch
(`quant_matmul_split_k`): each K slice's product goes to a [SPLIT_K, M, N] f32
workspace, and the tile's last block to arrive (`tl.arrive` at a counter per tile)
adds them in slice order, then applies the epilogue; the counters come zeroed and are
left zeroed.

Tensors a launch does not use (the zero points without ``HAS_Z``, the bias without
``HAS_BIAS``, the table ``code`` of the kinds other than ``codebook``, TABLE = 1) are
still parameters: the host passes a one-element placeholder.

The weight tensor's shape names the packing's own K tile ``PK`` (a multiple of BK):
the packed stream of a column block is the same for every BK that divides PK
(`tilelang.quant.matmul` checks it on the packings' orders), so one packed weight
serves every tile.
"""

from tilelang import dtypes
from tilelang.ir.layout import local, replicated
from tilelang.kernel import func, kernel
from tilelang.lang import api, ops
from tilelang.lang.signature import Tensor, constexpr

from .scale_packing import scale_layout

#: The kernel language under the name kernels use (`tilelang.lang.api`).
tl = api.tl

#: One group per column: a G no K reaches (k // G is 0 for every row).
PER_CHANNEL_G = 1 << 30

#: NVFP4's block scales b (f8e4m3, below 512) are used as b · 2^-8 and its tensor
#: scale as t · 2^8 (`tilelang.quant.operands`). Exact: every q·b·2^-8 is a multiple
#: of 2^-18, representable in f16 and bf16, and the f32 accumulation scales exactly.
#: It brings the scales below 2, where the lowering folds them into the f4e2m1
#: conversion's own multiplication by 2^14 (`lowering.scale_folds`; b · 2^14 would
#: overflow f16 for b >= 4).
NVFP4_SCALE_SHIFT = 8


#: The most entries of a code book held in registers (`codebook_table`): 16 16-bit
#: entries, 8 registers a thread.
REGISTER_TABLE = 16


def _warps(WARPS, **_):
    return WARPS


def _min_blocks(BM, **_):
    """1 for the decode paths' row tiles (BM ≤ 32): without a stated minimum ptxas caps
    their registers at 96 to fit one more block per SM and spills 4–12 bytes (u3, u5–u8,
    MXFP8); with it they take ~106–110 and spill nothing. The gemm tiles keep ptxas's
    own choice (their occupancy is what binds)."""
    return 1 if BM <= 32 else None


@func
def scales_of(s, row, n0, ROWS, BN, KIND, OT, ST, layout=None):
    """The [ROWS, BN] scales of columns n0.. from group `row` on, as OT values; read in
    `layout`'s load order from scales packed for it (`tilelang.quant.scale_packing`)
    when one is given."""
    if layout is None:
        raw = tl.load(s, [row, n0], [ROWS, BN])
    else:
        raw = tl.load_fragment(s, [row, n0], layout)
    if KIND == "mx":
        return tl.view(raw, tl.e8m0).to(OT)
    if KIND == "mx_normal":  # OT's exponent fields of normal numbers: their bits
        return tl.view(raw.to(tl.u16) << OT.mantissa_bits, OT)
    if KIND == "nvfp4":  # b · 2^-8, exact: see NVFP4_SCALE_SHIFT
        return raw.to(OT) * 2.0**-NVFP4_SCALE_SHIFT
    if ST != OT:
        return raw.to(OT)
    return raw


@func
def codebook_table(code, KIND, OT, TABLE, WARPS):
    """The code book, loaded once before the k loop; None for the other kinds. With at
    most 16 entries (codes of 4 bits or fewer), a register tile every thread of the
    block's WARPS warps holds whole, whose lookups select entries with byte permutes
    (`lowering.register_lookup`: no shared memory); else a `tl.shared` buffer of TABLE
    OT values (its reads in the loop need no barrier)."""
    if KIND != "codebook":
        return None
    if TABLE <= REGISTER_TABLE:
        return tl.load(code, [0], [TABLE], layout=replicated(32 * WARPS) * local(TABLE))
    table = ops.shared([TABLE], OT)  # `tl.shared` (api.tl leaves it out)
    table.store(tl.load(code, [0], [TABLE]))
    return table


@func
def weight_tile(w, s, z, k, n0, G, KIND, OT, ST, HAS_Z, BM, BN, BK, table=None):
    """The [BK, BN] tile of W at rows k.., columns n0.., in OT, in the dot's B layout
    (`table`: the code book of KIND "codebook", `codebook_table`)."""
    fragments = tl.dot_layout("b", BM, BN, BK, OT)
    q = tl.load_fragment(w, [k, n0], fragments)
    if BK <= G:
        if KIND == "codebook":  # noqa: SIM108 (a compile-time branch of the kernel)
            values = ops.lookup(table, q)  # `tl.lookup`
        else:
            values = q.to(OT)
        if HAS_Z:
            values = values - tl.load(z, [k // G, n0], [1, BN]).to(OT)
        row = scales_of(s, k // G, n0, 1, BN, KIND, OT, ST, scale_layout(fragments, 1))
        return values * row
    GROUPS = BK // G
    if KIND == "codebook":  # noqa: SIM108 (a compile-time branch of the kernel)
        values = ops.lookup(table, q)
    else:
        values = q.to(OT)
    if HAS_Z:
        zeros = tl.load(z, [k // G, n0], [GROUPS, BN])
        zeros = tl.reshape(tl.broadcast(zeros[:, None, :], [GROUPS, G, BN]), [BK, BN])
        values = values - zeros.to(OT)
    # Each thread reads the scales of its own columns, packed for this tile.
    layout = scale_layout(fragments, GROUPS)
    scales = scales_of(s, k // G, n0, GROUPS, BN, KIND, OT, ST, layout)
    # Broadcast to the codes' tile, so that the product is the cast's one user, which
    # lets the lowering fold the scale into the conversion (`lowering.scale_folds`).
    return values * tl.reshape(tl.broadcast(scales[:, None, :], [GROUPS, G, BN]), [BK, BN])


@func
def product(
    x, w, s, z, code, bm, bn, k_start, k_stop, G, KIND, OT, ST, HAS_Z, BM, BN, BK, STAGES,
    WARPS, SWAP, TABLE,
):  # fmt: skip
    """The f32 product of rows bm·BM.. of x and columns bn·BN.. of W over k_start <= k <
    k_stop (k_start a multiple of BK). With SWAP, computed as (Wᵀ xᵀ)ᵀ (`swapped`)."""
    table = codebook_table(code, KIND, OT, TABLE, WARPS)
    if SWAP:
        return swapped(
            x, w, s, z, table, bm, bn, k_start, k_stop, G, KIND, OT, ST, HAS_Z, BM, BN, BK,
            STAGES, WARPS,
        )  # fmt: skip
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(k_start, k_stop, BK, stages=STAGES):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        b = weight_tile(w, s, z, k, bn * BN, G, KIND, OT, ST, HAS_Z, BM, BN, BK, table)
        acc = tl.dot(a, b, acc)
    return acc


@func
def swapped(
    x, w, s, z, table, bm, bn, k_start, k_stop, G, KIND, OT, ST, HAS_Z, BM, BN, BK, STAGES,
    WARPS,
):  # fmt: skip
    """`product` as Wᵀ·xᵀ, the weights the A operand (sm_90a's warpgroup mma takes A
    from registers, where the weights are dequantized, and B, the x tile, straight from
    shared memory). The codes keep their packing (a 1 x WARPS warp grid: warp w holds
    columns w·BN/WARPS..); the rows of Wᵀ are reordered so that each warp's own columns
    are the rows the warpgroup layouts give it (16 of every 16·WARPS), which makes the
    reorder a renaming of registers, and the result's rows are put back."""
    RB = BN // (16 * WARPS)  # each warp's 16-row blocks of Wᵀ
    acc = tl.zeros([BN, BM], tl.f32)
    for k in tl.range(k_start, k_stop, BK, stages=STAGES):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        b = weight_tile(w, s, z, k, bn * BN, G, KIND, OT, ST, HAS_Z, BM, BN, BK, table)
        by_warp = tl.reshape(tl.transpose(b), [WARPS, RB, 16, BK])
        rows = tl.reshape(tl.transpose(by_warp, [1, 0, 2, 3]), [BN, BK])
        acc = tl.dot(rows, tl.transpose(a), acc)
    by_block = tl.reshape(acc, [RB, WARPS, 16, BM])
    return tl.transpose(tl.reshape(tl.transpose(by_block, [1, 0, 2, 3]), [BN, BM]))


@func
def finish(acc, bias, t, bn, BN, HAS_BIAS, TENSOR_SCALE):
    """The epilogue in f32: acc · t, plus the bias."""
    if TENSOR_SCALE:
        acc = acc * t
    if HAS_BIAS:
        acc = acc + tl.load(bias, [bn * BN], [BN]).to(tl.f32)[None, :]
    return acc


@func
def k_slice(kz, K, SPLIT_K, BK):
    """[start, stop) of slice kz of K: ceil(K / SPLIT_K) rounded up to whole BK tiles."""
    length = tl.cdiv(tl.cdiv(K, SPLIT_K), BK) * BK
    return kz * length, tl.minimum(K, kz * length + length)


# expect_replicated: the tiles give the dot a 1 x 4 warp grid, the one the codes are
# packed for, so each weight is converted once a block and x is held by every warp
# (tilelang.quant.choice says why that is the better trade).
@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)
def quant_matmul(
    x: Tensor["OT", "M", "K"],
    w: Tensor["WT", "(N + BN - 1) // BN", "(K + PK - 1) // PK * PK * BN"],
    s: Tensor["ST", "SK", "SN"],
    z: Tensor["ZT", "ZK", "ZN"],
    code: Tensor["ST", "TABLE"],
    bias: Tensor["OT", "NB"],
    y: Tensor["OT", "M", "N"],
    t: dtypes.f32,
    OT: constexpr = dtypes.f16,
    WT: constexpr = dtypes.u4,
    ST: constexpr = dtypes.f16,
    ZT: constexpr = dtypes.u4,
    KIND: constexpr = "scaled",
    G: constexpr = 128,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    TENSOR_SCALE: constexpr = False,
    BM: constexpr = 16,
    BN: constexpr = 128,
    BK: constexpr = 128,
    PK: constexpr = 128,
    WARPS: constexpr = 4,
    STAGES: constexpr = 3,
    SWAP: constexpr = False,
    TABLE: constexpr = 1,
):
    """y = x @ W (+ bias), rounded once to OT."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = product(
        x, w, s, z, code, bm, bn, 0, K, G, KIND, OT, ST, HAS_Z, BM, BN, BK, STAGES, WARPS,
        SWAP, TABLE,
    )  # fmt: skip
    tl.store(y, [bm * BM, bn * BN], finish(acc, bias, t, bn, BN, HAS_BIAS, TENSOR_SCALE).to(OT))


@kernel(warps=_warps, min_blocks=_min_blocks, expect_replicated=True)
def quant_matmul_split_k(
    x: Tensor["OT", "M", "K"],
    w: Tensor["WT", "(N + BN - 1) // BN", "(K + PK - 1) // PK * PK * BN"],
    s: Tensor["ST", "SK", "SN"],
    z: Tensor["ZT", "ZK", "ZN"],
    code: Tensor["ST", "TABLE"],
    bias: Tensor["OT", "NB"],
    partials: Tensor[dtypes.f32, "SPLIT_K", "M", "N"],
    counts: Tensor[dtypes.i32, "(M + BM - 1) // BM", "(N + BN - 1) // BN"],
    y: Tensor["OT", "M", "N"],
    t: dtypes.f32,
    OT: constexpr = dtypes.f16,
    WT: constexpr = dtypes.u4,
    ST: constexpr = dtypes.f16,
    ZT: constexpr = dtypes.u4,
    KIND: constexpr = "scaled",
    G: constexpr = 128,
    HAS_Z: constexpr = False,
    HAS_BIAS: constexpr = False,
    TENSOR_SCALE: constexpr = False,
    SPLIT_K: constexpr = 4,
    BM: constexpr = 16,
    BN: constexpr = 128,
    BK: constexpr = 128,
    PK: constexpr = 128,
    WARPS: constexpr = 4,
    STAGES: constexpr = 3,
    SWAP: constexpr = False,
    TABLE: constexpr = 1,
):
    """y = x @ W (+ bias) over SPLIT_K slices of K, in one launch: each block writes its
    slice's f32 product to `partials`, then arrives at its tile's counter; the last of
    the tile's blocks to arrive adds the SPLIT_K products in slice order, applies the
    epilogue, rounds once to OT and sets the counter back to zero (the counters start
    zeroed, and stay so between launches). The loads of the addition are a compile-time
    loop: all issued before the first addition needs one, one latency (from L2) for the
    tail rather than SPLIT_K. Their registers (up to 154 at SPLIT_K = 8 for 16 x 128
    tiles) still leave room for the 2 blocks an SM that the split aims at."""
    bm, bn, kz = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN), SPLIT_K)
    k_start, k_stop = k_slice(kz, K, SPLIT_K, BK)
    acc = product(
        x, w, s, z, code, bm, bn, k_start, k_stop, G, KIND, OT, ST, HAS_Z, BM, BN, BK, STAGES,
        WARPS, SWAP, TABLE,
    )  # fmt: skip
    tl.store(partials, [kz, bm * BM, bn * BN], tl.reshape(acc, [1, BM, BN]))
    if tl.arrive(counts, [bm, bn]) == SPLIT_K - 1:
        total = tl.zeros([BM, BN], tl.f32)
        for slice_ in range(SPLIT_K):
            part = tl.load(partials, [slice_, bm * BM, bn * BN], [1, BM, BN])
            total = total + tl.reshape(part, [BM, BN])
        out = finish(total, bias, t, bn, BN, HAS_BIAS, TENSOR_SCALE).to(OT)
        tl.store(y, [bm * BM, bn * BN], out)
        tl.store(counts, [bm, bn], tl.zeros([1, 1], tl.i32))
