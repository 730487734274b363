"""The kernels a quantized matmul launches: `choose` (the hand-written rule for the
tile, warps, stages and split-K by M and the architecture) and `kernel_calls` (the
launches of one choice, before compiling). `tilelang.quant.matmul` runs them and
`tilelang.quant.tuning` ranks alternatives to `choose`; the rule and its reasons are in
`tilelang.quant.matmul`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tilelang.kernel import MAX_SIZE_DIVISOR, Kernel
from tilelang.packing import DotPacking
from tilelang.target import HARDWARE
from tilelang.target import target as find_target

from . import kernels
from .operands import BLOCK_N, Operands, reads_as

GEMV_MAX_M = 4
SMALL_BATCH_MAX_M = 64
#: The architecture whose choice host arrays (the CPU backend) run.
DEFAULT_ARCH = "sm_90"
#: Split-K aims at this many blocks per SM, with at least this many k-tiles per slice.
SPLIT_BLOCKS_PER_SM = 2
MIN_SLICE_TILES = 2


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


def sm_count(arch: str) -> int:
    """The SMs of the architecture's representative card (sm_90's where it has none)."""
    name = find_target(arch).name
    return (HARDWARE.get(name) or HARDWARE[DEFAULT_ARCH]).sms


def choose(
    m: int, k: int, n: int, arch: str = DEFAULT_ARCH, packing: DotPacking | None = None
) -> Choice:
    """The kernel configuration for x [m, k] @ W [k, n] on `arch` (module docstring),
    for codes packed by `packing` (None: 128-row tiles that every tile reads)."""
    pack_k = packing.tile[0] if packing is not None else 128

    def reads(bm: int, bk: int, warps: int) -> bool:
        return packing is None or reads_as(packing, bk, bm, warps)

    if m > SMALL_BATCH_MAX_M:
        bk = min(64, pack_k)
        if reads(128, bk, 8):
            return Choice("gemm", 128, BLOCK_N, bk, 8, 3, 1)
        return Choice("gemm", 64, BLOCK_N, min(128, pack_k), 8, 3, 1)
    if m <= GEMV_MAX_M:
        path, bm = "gemv", 16
    else:
        path, bm = "small_batch", 16 if m <= 16 else 32
    bk = min(128, pack_k)
    blocks = math.ceil(m / bm) * math.ceil(n / BLOCK_N)
    tiles = math.ceil(k / bk)
    split = 1
    sms = sm_count(arch)
    if blocks < sms:
        split = min(math.ceil(SPLIT_BLOCKS_PER_SM * sms / blocks), tiles // MIN_SLICE_TILES)
        if split > 1:
            split = math.ceil(tiles / math.ceil(tiles / split))  # no empty slice
    return Choice(path, bm, BLOCK_N, bk, 4, 3, max(split, 1))


@dataclass(frozen=True)
class KernelCall:
    """A launch before compiling: kernel, constexprs, sizes."""

    kernel: Kernel
    constexprs: dict[str, Any]
    sizes: dict[str, int]
    per: str | None
    values: dict[str, int] = field(default_factory=dict)  # value facts (Operands.facts)
    scales: tuple[int, int, int] | None = None  # the tile the scales are read for


def size_facts(sizes: dict[str, int]) -> dict[str, int]:
    """Per size, the largest power of two up to MAX_SIZE_DIVISOR dividing it: what a
    launch with these sizes specializes on (as `tilelang.cli.launch_facts`)."""
    facts = {}
    for name, size in sizes.items():
        divisor = MAX_SIZE_DIVISOR
        while size % divisor:
            divisor //= 2
        facts[name] = divisor
    return facts


def kernel_calls(ops: Operands, m: int, choice: Choice, has_bias: bool) -> list[KernelCall]:
    k, n = ops.source.shape
    consts = ops.constexprs
    tile = {"BM": choice.bm, "BN": choice.bn, "WARPS": choice.warps}
    weight = {name: consts[name] for name in ("OT", "WT", "ST", "ZT", "KIND", "G", "HAS_Z", "PK")}
    weight.update(tile, BK=choice.bk, STAGES=choice.stages)
    zk, zn = ops.zeros.shape if ops.zeros is not None else (1, 1)
    epilogue = {"HAS_BIAS": has_bias, "TENSOR_SCALE": consts["TENSOR_SCALE"]}
    nb = n if has_bias else 1
    scale_tile = (choice.bk, choice.bm, choice.warps)
    sk, sn = ops.scales_for(*scale_tile).shape
    main = {"M": m, "K": k, "N": n, "SK": sk, "SN": sn, "ZK": zk, "ZN": zn}
    facts = ops.facts
    if choice.split_k == 1:
        return [
            KernelCall(
                kernels.quant_matmul,
                {**weight, **epilogue},
                {**main, "NB": nb},
                "w",
                facts,
                scale_tile,
            )
        ]
    return [
        KernelCall(
            kernels.quant_matmul_partials,
            {**weight, "SPLIT_K": choice.split_k},
            main,
            "w",
            facts,
            scale_tile,
        ),
        KernelCall(
            kernels.quant_matmul_reduce,
            {"OT": consts["OT"], **epilogue, "SPLIT_K": choice.split_k, **tile, "WARPS": 4},
            {"M": m, "N": n, "NB": nb},
            None,
        ),
    ]
