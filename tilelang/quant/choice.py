"""The kernels a quantized matmul launches: `choose` (the hand-written rule for the
tile, warps, stages and split-K by M and the architecture) and `kernel_calls` (the
launches of one choice, before compiling). `tilelang.quant.matmul` runs them and
`tilelang.quant.tuning` ranks alternatives to `choose`; the rule and its reasons are in
`tilelang.quant.matmul`'s docstring, the gemm tile's below.

The gemm tile (M > 64): 64 rows x 128 columns over 4 warps, BK = 128 (the packing's own
k-tile; 2, 4, 6, 8-bit codes read 64 rows where M is not a multiple of 64, with zero
points in smaller groups, below, with zero points of 6 and 8-bit codes, and where two
blocks of 128-row stages do not fit an SM's shared memory: sm_86/sm_89). For
[64, 128] over 4 warps the dot's warp grid is
1 x 4 (`tilelang.ir.fragments.dot_layouts`: of the equally square 1 x 4 and 2 x 2,
the one with fewer warp rows), the grid the codes are packed for
(`tilelang.quant.operands`): the B operand is not replicated, so each weight of a
k-tile is loaded and converted by exactly one thread of the block and feeds the mmas of
all 64 rows (4 m-tiles of 16). A 128-row tile over 8 warps has a 2 x 4 grid: each
weight is converted twice, once per warp row, for the same mmas a warp.

Why BK = 128 for every width: each warp holds its x tile whole ([64, BK] f16, BK / 2
registers a thread, as the lowering keeps an operand read beside a computed one) next
to its 64 accumulators, and ptxas fits it (234-244 registers on sm_80 and sm_90, no
spill) for fewer instructions per weight than BK = 64: the static report on sm_90
(k = n = 8192, m = 4096) predicts 100% of the tensor-core peak for u4, u8 and MXFP8,
99.9% for i4 with zero points (88.1% at BK = 64), 87-91% for NVFP4, MXFP4 and u6
(84-87%), 79% for MXFP6 (77%, and 8 bytes of spill at BK = 64). The register estimate
(`tilelang.passes.plan_registers`) puts these tiles above 255, but a GPU build warns
only when ptxas spills (`tilelang.spill_verdict`). The exceptions, where ptxas
spills at BK = 128 (255 registers) and not at 64: zero points of 6 and 8-bit codes
(32-120 bytes), and an M that is not a multiple of 64, whose masked rows cost i4
per-channel and u8 codes 16-20 bytes (M = 80; none at M = 4096 or 4160).

Zero points in groups smaller than the 128-row k-tile (G = 64, 32) spill 16-56 bytes
there (the groups' broadcast zero points beside the whole x tile): 2, 4, 6, 8-bit codes
then read 64-row k-tiles; odd widths, which have no 64-row tile (their 16-byte runs are
128 codes a thread), take 64 x 128 x 128 over 8 warps (2 x 4: each warp holds 32 rows
of x, half the registers) (`choose`'s `zero_group`, from `zero_group_of`). So do 5 and
7-bit codes with zero points in any group (`_zero_pressure`, as 6 and 8-bit ones read 64
rows): over 4 warps ptxas spilled 132-176 bytes at 255 registers (u5/u7, G = 128 or per
channel, m = 500, 512, 4096, on sm_80, sm_86 and sm_90); over 8 warps 174-191 registers
and no spill. 1 and 3-bit codes with zero points fit 4 warps (246-255 registers).

On sm_90a (`Target.has_wgmma`) the gemm tile over 4 warps computes Wᵀ·xᵀ (`SWAP`,
`kernels.swapped`, `Choice.swap`): the dequantized weights are the warpgroup mma's A
operand, in registers, and the x tile its B, read from shared memory by the tensor
cores; the codes keep their packing. The static report for u4, k = n = 8192, m = 4096
predicts 631 µs (88% of the data-sheet peak, shared-memory-bound) against 900 µs for the
mma.sync kernel. With no x in registers the swapped tile keeps 4 warps and 128-row
k-tiles where the unswapped one narrows or doubles its warps (zero points of small
groups, masked rows; at most 238 registers, no spill): 7-9% less time for u4, u8, i4
with zero points and the block-scaled formats at m = 4100, and half for 3, 5-bit codes
with zero points of G = 32 or 64 at k = n = 8192. Since 64 rows of x cost the warpgroup
mma what 33 do, the swapped tile takes over from the small-batch path above 32 rows
(`WGMMA_SMALL_BATCH_MAX_M`). Only targets with the warpgroup mma build the swap
(`choose`'s `wgmma`): its layouts elsewhere cost registers past the budget.

Split-K: every path splits K where its blocks are fewer than the SMs (`slices_of_k`);
the gemm tile only where they fill at most half of them (`GEMM_SPLIT_MAX_SM_FRACTION`).
The split counts the f32 partial products' traffic: each slice writes m x n of them
and the tile's last block reads them back (8·m·n bytes a slice), which for the gemm
tile's m rows can outweigh the weights (u4, m = 64, k = n = 4096 on sm_90a: 8 slices
move 16.8 MB of partials beside 9.7 MB of weights, scales, x and y; the static report
predicts 7.90 us there against 4.77 us in 3 slices).

Stages: 3, or 2 when two blocks of 3 stages would not share an SM's shared memory
(5-8-bit codes on sm_80; all but 4-bit codes on sm_86/sm_89's 100 KiB): two resident
blocks of 4 warps keep 8 warps per SM, as one block of 8 warps did (registers allow
two: 65536 / (4 · 32 · 255) > 2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tilelang.kernel import Kernel
from tilelang.packing import DotPacking
from tilelang.target import HARDWARE
from tilelang.target import target as find_target

from . import kernels
from .operands import BLOCK_N, Operands, reads_as

GEMV_MAX_M = 4
SMALL_BATCH_MAX_M = 64
#: On targets with the warpgroup mma the swapped gemm tile takes over above this M: at
#: m = 64 the static report predicts 13-41% less time than the small-batch path for
#: 4-bit codes (k x n = 8192 x 8192, 28672 x 8192, 4096 x 14336), for u8 14% less at
#: 4096 x 14336 but 2-10% more where K splits in 5 rather than 3 (docs/benchmarks.md).
WGMMA_SMALL_BATCH_MAX_M = 32
#: The architecture whose choice host arrays (the CPU backend) run.
DEFAULT_ARCH = "sm_90"
#: Split-K aims at this many blocks per SM, with at least this many k-tiles per slice.
SPLIT_BLOCKS_PER_SM = 2
MIN_SLICE_TILES = 2
#: The gemm tile splits K only where its blocks fill at most this fraction of the SMs:
#: its partial products are larger, and the static report on sm_90 (u4, m = 128, k = n
#: = 8192: 128 blocks) predicts 28.1 us unsplit against 33.4 us in 3 slices, while 64
#: blocks (m = 80, k = n = 4096) gain (14.7 us against 11.2 us in 5 slices).
GEMM_SPLIT_MAX_SM_FRACTION = 0.5
#: Bytes one block's k-tile (128 rows of codes by 128 columns) moves through shared
#: memory, for `slices_of_k`: the static report on sm_90a puts the gemv, small-batch and
#: gemm tiles of 4 and 8-bit codes at 62-86 KB (0.26-0.38 us an iteration at 128 B a
#: cycle, shared memory binding an unsplit launch of 32 blocks).
TILE_SHARED_BYTES = 72 * 1024
#: `slices_of_k` takes fewer slices than 2 blocks an SM only where they are estimated
#: this much sooner: the rough estimate decides where the partials' traffic matters
#: (m = 64: 2.1 MB a slice at n = 4096), not among near-equals (a gemv's 32 KB).
SPLIT_MARGIN = 0.05


#: The gemm tile's rows and warps, and its k-tile where the packing's 128-row tile
#: would hold zero points of several groups or not fit two blocks (module docstring).
GEMM_BM, GEMM_WARPS, GEMM_NARROW_BK = 64, 4, 64
#: Codes wider than this with zero points spill in 128-row k-tiles (6 and 8 bits: 32-120
#: bytes on sm_80 and sm_90, 2 and 4 bits fit): they read 64-row ones.
NARROW_ZERO_BITS = 4
#: Its pipeline stages, most first, and the blocks per SM whose shared memory they fit.
GEMM_STAGES = (3, 2)
#: The stages of the 8-warp tile (a 2 x 4 grid) of 5 and 7-bit codes: a thread's runs of
#: codes there (10 and 14 bytes) are not cp.async's 4, 8 or 16, so the codes are
#: prefetched in registers, which hold one tile ahead but not two: 3 stages were not
#: honoured (a PipelineWarning from the library, on sm_80, sm_90 and the CPU). The
#: static report on sm_90 (k = n = m = 4096) predicts 2-3% more time than the
#: unhonoured 3 stages (u5: 290 against 284 us; u7: 307 against 298 us).
WIDE_CODE_STAGES = 2
GEMM_BLOCKS_PER_SM = 2
#: Shared bytes a stage may spend on scales and zero points: at most 8 groups of a
#: 128-row tile (G = 16), 128 two-byte scales and 128 one-byte zero points each.
SCALE_STAGE_BYTES = 8 * BLOCK_N * 3


@dataclass(frozen=True)
class Choice:
    """The kernel configuration for one call: path, tile, warps, pipeline stages, split."""

    path: str
    bm: int
    bn: int
    bk: int
    warps: int
    stages: int
    split_k: int
    swap: bool = False  # Wᵀ·xᵀ on the warpgroup mma (`swaps_operands`)


def sm_count(arch: str) -> int:
    """The SMs of the architecture's representative card (sm_90's where it has none)."""
    name = find_target(arch).name
    return (HARDWARE.get(name) or HARDWARE[DEFAULT_ARCH]).sms


def gemm_stages(bk: int, arch: str, packing: DotPacking | None = None) -> int:
    """The most `GEMM_STAGES` for which `GEMM_BLOCKS_PER_SM` gemm blocks fit an SM's shared
    memory on `arch` (its representative card's), each stage holding a [GEMM_BM, bk] tile
    of x, a [bk, BLOCK_N] tile of codes (`packing`'s width; 8 bits without one) and
    their scales and zero points; the fewest where none does."""
    for stages in GEMM_STAGES:
        if _blocks_fit(bk, stages, arch, packing):
            return stages
    return GEMM_STAGES[-1]


def _blocks_fit(bk: int, stages: int, arch: str, packing: DotPacking | None) -> bool:
    """Whether `GEMM_BLOCKS_PER_SM` gemm blocks of `stages` stages (`gemm_stages`) fit
    an SM's shared memory on `arch`."""
    hw = HARDWARE.get(find_target(arch).name) or HARDWARE[DEFAULT_ARCH]
    operand_bytes = packing.operand.bits // 8 if packing is not None else 2
    code_bits = packing.dtype.bits if packing is not None else 8
    stage = GEMM_BM * bk * operand_bytes + bk * BLOCK_N * code_bits // 8 + SCALE_STAGE_BYTES
    return GEMM_BLOCKS_PER_SM * (stages * stage + hw.shared_reserved) <= hw.shared_bytes_per_sm


def choose(
    m: int,
    k: int,
    n: int,
    arch: str = DEFAULT_ARCH,
    packing: DotPacking | None = None,
    zero_group: int | None = None,
    wgmma: bool | None = None,
) -> Choice:
    """The kernel configuration for x [m, k] @ W [k, n] on `arch` (module docstring),
    for codes packed by `packing` (None: 128-row tiles that every tile reads) with zero
    points in groups of `zero_group` rows (None: none; `zero_group_of`). `wgmma`: whether
    the kernels are built for a target with the warpgroup mma (None: as `arch` has it),
    which swaps the gemm tile (`swaps_operands`); only a target that has it lowers the
    swapped tile within the registers."""
    if wgmma is None:
        wgmma = find_target(arch).has_wgmma
    pack_k = packing.tile[0] if packing is not None else 128

    def reads(bm: int, bk: int, warps: int) -> bool:
        return packing is None or reads_as(packing, bk, bm, warps)

    if m > (WGMMA_SMALL_BATCH_MAX_M if wgmma else SMALL_BATCH_MAX_M):
        gemm = _gemm(m, arch, packing, pack_k, zero_group, reads, wgmma)
        blocks = math.ceil(m / gemm.bm) * math.ceil(n / gemm.bn)
        if blocks > GEMM_SPLIT_MAX_SM_FRACTION * sm_count(arch):
            return gemm
        tiles = math.ceil(k / gemm.bk)
        moved = _useful_bytes(m, k, n, packing)
        split = slices_of_k(blocks, tiles, arch, moved, 8 * m * n)
        return dataclasses.replace(gemm, split_k=split)
    if m <= GEMV_MAX_M:
        path, bm = "gemv", 16
    else:
        path, bm = "small_batch", 16 if m <= 16 else 32
    bk = min(128, pack_k)
    blocks = math.ceil(m / bm) * math.ceil(n / BLOCK_N)
    moved = _useful_bytes(m, k, n, packing)
    split = slices_of_k(blocks, math.ceil(k / bk), arch, moved, 8 * m * n)
    return Choice(path, bm, BLOCK_N, bk, 4, 3, split)


def slices_of_k(
    blocks: int, tiles: int, arch: str, useful_bytes: float = 0.0, slice_bytes: float = 0.0
) -> int:
    """The slices of K for `blocks` blocks of `tiles` k-tiles each on `arch`: 1 where the
    blocks are at least the SMs; else, of 1 up to the fewest giving `SPLIT_BLOCKS_PER_SM`
    blocks an SM (each slice at least `MIN_SLICE_TILES` k-tiles), the one whose launch
    ends soonest by the larger of two times on `arch`'s representative card: its DRAM
    bytes (`useful_bytes`: weights, x and y once; plus `slice_bytes` a slice where K
    is split: the f32 partials written and read back) at the DRAM bandwidth, and the
    busiest SM's k-tiles at `TILE_SHARED_BYTES` each through its shared memory (the
    fewest slices of equals), where that is over `SPLIT_MARGIN` sooner than the most;
    else (and without bytes) the most; lowered so that none is empty."""
    sms = sm_count(arch)
    if blocks >= sms:
        return 1
    most = min(math.ceil(SPLIT_BLOCKS_PER_SM * sms / blocks), tiles // MIN_SLICE_TILES)
    if most <= 1:
        return 1
    most = split = math.ceil(tiles / math.ceil(tiles / most))
    if useful_bytes:
        hw = HARDWARE.get(find_target(arch).name) or HARDWARE[DEFAULT_ARCH]
        tile_s = TILE_SHARED_BYTES / (hw.shared_bytes_per_cycle * hw.clock_hz)

        def seconds(s: int) -> float:
            dram = (useful_bytes + (slice_bytes * s if s > 1 else 0.0)) / hw.dram_bytes_per_s
            busiest = math.ceil(blocks * s / sms) * math.ceil(tiles / s) * tile_s
            return max(dram, busiest)

        best = min(range(1, most + 1), key=seconds)
        if seconds(best) < (1 - SPLIT_MARGIN) * seconds(most):
            split = best
    return math.ceil(tiles / math.ceil(tiles / split))


def _useful_bytes(m: int, k: int, n: int, packing: DotPacking | None) -> float:
    """The bytes a call moves once whatever its split: the weights' codes (8 bits
    without a packing) and f16 x and y (the scales, a few percent, left out)."""
    code_bits = packing.dtype.bits if packing is not None else 8
    return k * n * code_bits / 8 + 2 * m * (k + n)


def _gemm(
    m: int,
    arch: str,
    packing: DotPacking | None,
    pack_k: int,
    zero_group: int | None,
    reads: Callable[[int, int, int], bool],
    wgmma: bool,
) -> Choice:
    """The gemm tile (module docstring): 64 x 128 over the packing's own 1 x 4 warp
    grid and the packing's own K tile, swapped where built for the warpgroup mma
    (`wgmma`); BK = 64 where the codes have it and `_wants_narrow`; else, with zero
    points of several groups in an unswapped tile, 8 warps (a 2 x 4 grid)."""
    bk, warps = pack_k, GEMM_WARPS  # every grid of 1 x 4 reads the packing's own tile
    assert reads(GEMM_BM, bk, warps)
    narrow = min(GEMM_NARROW_BK, pack_k)
    swap = wgmma and swaps_operands(BLOCK_N, warps)
    if reads(GEMM_BM, narrow, warps) and _wants_narrow(m, bk, arch, packing, zero_group, swap):
        bk = narrow
    elif not swap and _zero_pressure(bk, packing, zero_group):
        warps = 2 * GEMM_WARPS  # odd widths have no 64-row tile: half the x tile a warp
    stages = gemm_stages(bk, arch, packing)
    code_bits = packing.dtype.bits if packing is not None else 8
    if warps > GEMM_WARPS and code_bits > NARROW_ZERO_BITS:
        stages = min(stages, WIDE_CODE_STAGES)
    return Choice("gemm", GEMM_BM, BLOCK_N, bk, warps, stages, 1, swap)


def _wants_narrow(
    m: int, bk: int, arch: str, packing: DotPacking | None, zero_group: int | None, swap: bool
) -> bool:
    """Whether the gemm tile reads 64-row k-tiles where the codes have them rather than
    `bk` rows: two blocks of `bk`-row stages that do not fit the SM's shared memory; and,
    where the tile holds x in registers (not `swap`ped), rows of x
    masked at the end (`m` not a multiple of `GEMM_BM`), or zero points of several
    groups in a tile or of codes wider than `NARROW_ZERO_BITS` (ptxas spills each at
    128 rows; module docstring). The swapped tile reads x from shared memory and does not
    spill at 128 rows (at most 238 registers: u3 with zero points of G = 32)."""
    if not _blocks_fit(bk, GEMM_STAGES[-1], arch, packing):
        return True
    if swap:
        return False
    if m % GEMM_BM:
        return True
    return _zero_pressure(bk, packing, zero_group)


def _zero_pressure(bk: int, packing: DotPacking | None, zero_group: int | None) -> bool:
    """Whether zero points make ptxas spill an unswapped 4-warp gemm tile of `bk`-row
    k-tiles beside the whole x tile: zero points of several groups in a tile, or of codes
    wider than `NARROW_ZERO_BITS` (module docstring)."""
    code_bits = packing.dtype.bits if packing is not None else 8
    return zero_group is not None and (zero_group < bk or code_bits > NARROW_ZERO_BITS)


def zero_group_of(ops: Operands) -> int | None:
    """The rows per zero point of the kernels' operands (the kernels' G), None without;
    1 for a codebook: its looked-up [BK, BN] tile is held whole beside x's, as zero
    points of several groups a tile are, and an unswapped 4-warp gemm tile of 128-row
    k-tiles would need about 306 registers (the estimate refuses it), 64-row ones 255
    with no spill (sm_80, NF4): this gives it the narrow tile (`_wants_narrow`)."""
    if ops.constexprs["KIND"] == "codebook":
        return 1
    return ops.constexprs["G"] if ops.zeros is not None else None


@dataclass(frozen=True)
class KernelCall:
    """A launch before compiling: kernel, constexprs, sizes."""

    kernel: Kernel
    constexprs: dict[str, Any]
    sizes: dict[str, int]
    per: str | None
    values: dict[str, int | str] = field(default_factory=dict)  # value facts (Operands.facts)
    scales: tuple[int, int, int] | None = None  # the tile the scales are read for


def split_workspace(call: KernelCall) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The shapes of a split-K launch's f32 partial products and its i32 counters (one
    per tile, zeroed before the first launch; the kernel leaves them zeroed), or None
    for a launch without split."""
    if "SPLIT_K" not in call.constexprs:
        return None
    m, n = call.sizes["M"], call.sizes["N"]
    bm, bn = call.constexprs["BM"], call.constexprs["BN"]
    partials = (call.constexprs["SPLIT_K"], m, n)
    return partials, (math.ceil(m / bm), math.ceil(n / bn))


def swaps_operands(bn: int, warps: int) -> bool:
    """Whether a gemm tile of `bn` columns over `warps` warps, built for the warpgroup
    mma, computes Wᵀ·xᵀ (module docstring): over 4 warps (the 1 x 4 grid whose columns a
    warp holds are the rows `kernels.swapped` gives it). Elsewhere the swap buys nothing,
    and its layouts cost registers (past the budget for the CPU's and mma.sync's layouts
    at some tiles), so only targets with the warpgroup mma build it (`choose`'s
    `wgmma`; the choice carries the answer, `Choice.swap`)."""
    return warps == 4 and bn % (16 * warps) == 0


def kernel_calls(ops: Operands, m: int, choice: Choice, has_bias: bool) -> list[KernelCall]:
    """The launches of one choice: one kernel, `quant_matmul_split_k` where K is split
    (its workspace and counters are the caller's: `split_workspace`)."""
    k, n = ops.source.shape
    consts = ops.constexprs
    tile = {"BM": choice.bm, "BN": choice.bn, "WARPS": choice.warps}
    weight = {name: consts[name] for name in ("OT", "WT", "ST", "ZT", "KIND", "G", "HAS_Z", "PK")}
    weight.update(tile, BK=choice.bk, STAGES=choice.stages, SWAP=choice.swap)
    if "TABLE" in consts:  # a codebook's size (the other kinds keep the default, 1)
        weight["TABLE"] = consts["TABLE"]
    zk, zn = ops.zeros.shape if ops.zeros is not None else (1, 1)
    epilogue = {"HAS_BIAS": has_bias, "TENSOR_SCALE": consts["TENSOR_SCALE"]}
    nb = n if has_bias else 1
    scale_tile = (choice.bk, choice.bm, choice.warps)
    sk, sn = ops.scales_for(*scale_tile).shape
    sizes = {"M": m, "K": k, "N": n, "SK": sk, "SN": sn, "ZK": zk, "ZN": zn, "NB": nb}
    facts = ops.facts
    if choice.split_k == 1:
        return [
            KernelCall(kernels.quant_matmul, {**weight, **epilogue}, sizes, "w", facts, scale_tile)
        ]
    constexprs = {**weight, **epilogue, "SPLIT_K": choice.split_k}
    return [KernelCall(kernels.quant_matmul_split_k, constexprs, sizes, "w", facts, scale_tile)]
