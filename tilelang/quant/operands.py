"""What the kernels of `tilelang.quant.kernels` read, made from a `QuantizedWeight` once
per weight and operand type (and remembered for as long as the weight lives).

* The codes, packed by `tilelang.pack_for_dot` for one tile: ``(PK, 128)`` with m = 16
  and 4 warps (`kernel_packing`). PK is the largest of 128, 64, 32, 16 that divides the
  group size or that the group size divides (every PK for one group per column), so
  no k-tile straddles a scale group. A kernel tile (BM, 128, BK) with BK dividing PK
  and 4 warps across N reads the same bytes (`reads_as` checks it on the packings'
  orders): the B fragment layouts differ only by replication over warp rows, and a
  thread's codes are k-step-major, so a PK-tile's stream is its BK-tiles' streams one
  after the other — as long as a thread's share of a BK-tile is whole 16-byte runs
  (not so for 1, 3, 5, 7-bit codes at BK = 64: their runs are 128 codes). A weight
  packed for another tile is repacked from its plain codes.
* Unsigned codes with the constant zero point 2^(b−1) (symmetric uN, GPTQ sym) are read
  as signed codes without zero points (`_as_signed`: each code's top bit flipped in
  the packed bytes), which the conversion handles in the same instructions as iN.
* The scales, as codes of what the kernel loads (ST): the f16/bf16 scales as they are
  (their type must be the operand type: the kernel multiplies in it); MX's e8m0 codes
  as u8, shifted by e0 (below); NVFP4's f8e4m3 codes. A kernel tile of several groups
  reads them packed for its tile (`Operands.scales_for`, `scale_packing`).
* The zero points as u8 codes (i8 when some are negative, i16 beyond 8 bits), exact in
  the operand type together with every q − z. Whole bytes, not the codes' width: a
  [BK / G, 128] tile of 3 or 5-bit zero points moves in runs cp.async cannot copy, so
  it would stay out of the pipeline (one zero point per group and column is 1/G of a
  byte per weight: 0.8% of a u4 weight's bytes at G = 128). For the same reason each
  row is padded to whole 16-byte words (`_aligned_zeros`: [groups, N rounded up]).
* The f32 factor ``t`` the accumulator is multiplied by: NVFP4's tensor scale, or
  2^e0 for MX.
* A codebook format's table (``table``): its 2^b codes of the scale type, which must
  be the operand type as for ``scaled`` (the kernels look entries up in OT and
  multiply by the scale in OT); its codes are packed as uN codes are, with no zero
  points, and the kernels' constant TABLE is 2^b (absent for the other kinds).

MX scales in a 16-bit operand type. The kernel computes ``q.to(OT) * s.to(OT)`` for
s = 2^(c − 127): exact (so equal to `QuantizedWeight.dequantize`, whose f32 values
are then exact in OT) exactly when every element value times s is representable in OT,
i.e. when c − 127 lies in a window [lo, hi] of the element and operand types
(`exact_window`: [−23, 13] for f4e2m1 in f16, [−8, 0] for f8e5m2 in f16). The host
picks one power of two 2^e0 for the whole tensor such that every block's c − 127 − e0
lies in that window (e0 = 0 when it can), stores c − e0, and the kernel multiplies
its f32 accumulator by 2^e0, which is exact. When the blocks' exponents span more than
the window, the largest blocks stay exact and the smallest are rounded to OT (the
mma's operand type); `ScaleRangeWarning` says so. When moreover every shifted scale is
a normal OT number and none is NaN (the window intersected with OT's normal exponents:
[−14, 13] for f4e2m1 in f16), the host stores OT's exponent fields c − e0 − (127 −
bias_OT) and the kernel builds the scale from those bits (KIND ``mx_normal``, two
integer instructions) instead of the general e8m0 conversion (KIND ``mx``): the same
values, and a bound on the stored fields proves the scale fold exact.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, FloatType, IntType, PackedArray
from tilelang.packing import DotPacking
from tilelang.runtime.value_facts import FINITE, bound_of

from .formats import get_format, inexact_values
from .kernels import NVFP4_SCALE_SHIFT, PER_CHANNEL_G
from .scale_packing import ScalePacking
from .weight import QuantizedWeight

#: The kernels' N tile, and the (m, warps) the codes are packed for.
BLOCK_N = 128
PACK_M, PACK_WARPS = 16, 4
#: K tiles of the packing, largest first.
PACK_TILES_K = (128, 64, 32, 16)
OPERAND_TYPES = (dtypes.f16, dtypes.bf16)


class ScaleRangeWarning(UserWarning):
    """MX block scales span more powers of two than the operand type holds exactly: the
    smallest blocks' weights are rounded to it (`tilelang.quant.operands`)."""


@dataclass(frozen=True, eq=False)
class Operands:
    """A weight as the kernels read it (module docstring). `constexprs` are the kernel
    constants the weight decides; `exact` is False only for MX scales whose range
    exceeds the operand type's (`ScaleRangeWarning`). Everything but `weight` (the
    packed codes, made on first use) is small: a plan needs no packing."""

    source: QuantizedWeight
    signed: bool  # unsigned codes with the midpoint zero point, read as signed codes
    packing: DotPacking
    scales: PackedArray
    zeros: PackedArray | None
    t: float
    exact: bool
    constexprs: dict[str, Any]
    table: PackedArray | None = None  # a codebook's entries, codes of the scale type

    @functools.cached_property
    def facts(self) -> dict[str, int | str]:
        """The value facts the kernels may assume about these operands: {"s": b} when
        every scale is +0 or positive and below b (`runtime.value_facts.bound_of`), so
        that the lowering folds the scale into the dequantization recipe where that is
        exact (`tilelang.lowering.scale_folds`; for MX, the bound of its u8 scale codes,
        which the kernels view as e8m0: see `analysis.value_bounds`); and {"w":
        "finite"} when the codes' type has inf or NaN codes (f8e4m3, f8e5m2) and the
        weight holds none (`QuantizedWeight.finite`), so that the conversion leaves
        out its special-value steps (recipe 5 of `tilelang.lowering.dequant`: on sm_80
        MXFP8-e4m3 goes from 5.3 to 3.8 instructions per weight)."""
        facts: dict[str, int | str] = {}
        bound = bound_of(self.scales.unpack())
        if bound is not None:
            facts["s"] = bound
        if _has_special_codes(self.packing.dtype) and self.source.finite:
            facts["w"] = FINITE
        return facts

    def scales_for(self, block_k: int, block_m: int, warps: int) -> PackedArray:
        """The scales as a kernel tile (block_m, BLOCK_N, block_k) over `warps` warps reads
        them: packed for its block_k / G scale rows per tile, one when the tile lies
        within a group (`tilelang.quant.scale_packing`; cached per tile)."""
        key = ("scales", self.constexprs["OT"], block_k, block_m, warps)
        return cached(self.source, key, lambda: self._packed_scales(block_k, block_m, warps))

    def _packed_scales(self, block_k: int, block_m: int, warps: int) -> PackedArray:
        rows = min(self.constexprs["G"], block_k)  # code rows per scale row in a tile
        packing = ScalePacking(
            self.scales.dtype, self.scales.shape, block_k // rows, rows, BLOCK_N, block_m,
            warps, self.constexprs["OT"], dtypes.f32,
        )  # fmt: skip
        return dtypes.pack_codes(packing.pack(self.scales.codes()), self.scales.dtype)

    @functools.cached_property
    def weight(self) -> QuantizedWeight:
        """The weight with its codes packed as the kernels read them (`packing`)."""
        packed = pack_for_kernels(self.source, self.constexprs["OT"])
        return _as_signed(packed) if self.signed else packed


def _has_special_codes(t: DType) -> bool:
    """Whether some code of `t` is inf or NaN: a "finite" fact only helps such types."""
    return isinstance(t, FloatType) and t.specials != "none"


def operand_type(x_dtype: Any) -> DType:
    """f16 or bf16, from a dtype or its name; a TypeError for anything else."""
    try:
        t = dtypes.dtype(x_dtype)
    except (TypeError, ValueError):
        t = None
    if t not in OPERAND_TYPES:
        raise TypeError(f"x must hold f16 or bf16 values, got {x_dtype}")
    return t


def kernel_group(qw: QuantizedWeight) -> int:
    """The kernels' G: the group size, or `PER_CHANNEL_G` for one group per column."""
    k, g = qw.shape[0], qw.group_size
    if g >= k:
        return PER_CHANNEL_G
    if g % 16:
        raise ValueError(
            f"the kernels need a group size that is a multiple of 16 (or one group per "
            f"column), got group_size={g}"
        )
    return g


def pack_tile_k(qw: QuantizedWeight) -> int:
    """PK: the K tile the codes are packed in (module docstring)."""
    g = kernel_group(qw)
    return next(pk for pk in PACK_TILES_K if g % pk == 0 or pk % g == 0)


def kernel_packing(qw: QuantizedWeight, operand: Any = dtypes.f16) -> DotPacking:
    """The `DotPacking` of the codes the kernels read for `operand` activations."""
    return DotPacking(
        dtype=qw.dtype,
        shape=qw.shape,
        tile=(pack_tile_k(qw), BLOCK_N),
        m=PACK_M,
        warps=PACK_WARPS,
        operand=operand_type(operand),
        acc=dtypes.f32,
    )


def pack_for_kernels(qw: QuantizedWeight, operand: Any = dtypes.f16) -> QuantizedWeight:
    """`qw` with its codes packed as `tilelang.quant.matmul`'s kernels read them (itself
    when it already is), e.g. to save it packed."""
    wanted = kernel_packing(qw, operand)
    if qw.packing == wanted:
        return qw
    block_k, block_n = wanted.tile
    return qw.pack_for_dot((block_k, block_n), m=PACK_M, warps=PACK_WARPS, operand=wanted.operand)


@functools.lru_cache(maxsize=256)
def _reads_as(stored: DotPacking, block_k: int, block_m: int, warps: int) -> bool:
    block_n = stored.tile[1]
    tile = DotPacking(
        stored.dtype, (block_k, block_n), (block_k, block_n), block_m, warps, stored.operand,
        stored.acc,
    )  # fmt: skip
    step = block_k * block_n
    pieces = [tile.order + j * step for j in range(stored.tile[0] // block_k)]
    return bool(np.array_equal(np.concatenate(pieces), stored.order))


def reads_as(stored: DotPacking, block_k: int, block_m: int, warps: int) -> bool:
    """Whether a kernel whose dot is ``[block_m, block_k] @ [block_k, BN]`` over `warps`
    warps reads codes packed by `stored` as they are: the same stream of bytes, tile by
    tile (compared on the packings' orders, for one tile of each)."""
    if stored.tile[0] % block_k:
        return False
    canonical = DotPacking(
        stored.dtype, stored.tile, stored.tile, stored.m, stored.warps, stored.operand,
        stored.acc,
    )  # fmt: skip
    return _reads_as(canonical, block_k, block_m, warps)


def cached(qw: QuantizedWeight, key: Any, make) -> Any:
    """`make()`, remembered per weight and key, on the weight itself (so it lives and
    dies with the weight; the weight is frozen, its fields never change). Copies and
    pickles of the weight leave the cache out (`QuantizedWeight.__getstate__`)."""
    entries = qw.__dict__.setdefault("_kernel_cache", {})
    if key not in entries:
        entries[key] = make()
    return entries[key]


def operands(qw: QuantizedWeight, operand: Any) -> Operands:
    """The kernels' view of `qw` for `operand` (f16 or bf16) activations (cached)."""
    if not isinstance(qw, QuantizedWeight):
        raise TypeError(f"qw must be a tilelang.quant.QuantizedWeight, got {type(qw).__name__}")
    ot = operand_type(operand)
    return cached(qw, ("operands", ot), lambda: _operands(qw, ot))


def _operands(qw: QuantizedWeight, ot: DType) -> Operands:
    kind = get_format(qw.format).kind
    group = kernel_group(qw)
    zeros, zero_type, signed = None, dtypes.u1, False
    t, exact, table = 1.0, True, None
    if kind == "codebook":
        _check_scale_type(qw, ot)
        scales = dtypes.pack_codes(qw.scale_codes, qw.scale_dtype)
        table = dtypes.pack_codes(qw.table_codes, qw.scale_dtype)
    elif kind == "scaled":
        _check_scaled(qw, ot)
        scales = dtypes.pack_codes(qw.scale_codes, qw.scale_dtype)
        signed = _midpoint_zeros(qw)
        if qw.zeros is not None and not signed:
            zero_type = _zero_type(qw, ot)
            zeros = _aligned_zeros(qw.zeros, zero_type)
    elif kind == "mx":
        codes, e0, exact, normal = _shifted_mx_scales(qw, ot)
        if normal:  # OT's exponent fields (kernels docstring, ``mx_normal``)
            codes = (codes - (127 - ot.bias)).astype(np.uint8)
        scales = dtypes.pack_codes(codes, dtypes.u8)
        kind = "mx_normal" if normal else "mx"
        t = 2.0**e0
    else:
        assert qw.tensor_scale is not None
        scales = dtypes.pack_codes(qw.scale_codes, dtypes.f8e4m3)
        t = qw.tensor_scale * 2.0**NVFP4_SCALE_SHIFT  # the kernels' b · 2^-8, undone
        if not math.isfinite(float(np.float32(t))):
            raise ValueError(
                f"tensor_scale: the kernels multiply it by 2^{NVFP4_SCALE_SHIFT}, which must "
                f"stay a finite f32; got {qw.tensor_scale!r}"
            )
    packing = kernel_packing(qw, ot)
    if signed:
        packing = dataclasses.replace(packing, dtype=dtypes.int_type(qw.dtype.bits, True))
    constexprs = {
        "OT": ot,
        "WT": packing.dtype,
        "ST": scales.dtype,
        "ZT": zero_type,
        "KIND": kind,
        "G": group,
        "HAS_Z": zeros is not None,
        "TENSOR_SCALE": t != 1.0,
        "PK": packing.tile[0],
    }
    if table is not None:
        constexprs["TABLE"] = table.shape[0]
    return Operands(qw, signed, packing, scales, zeros, t, exact, constexprs, table)


# ---------------------------------------------------------------- checks and choices


def _largest_exact_integer(ot: DType) -> int:
    assert isinstance(ot, FloatType)
    return 1 << (ot.mantissa_bits + 1)


def _check_scaled(qw: QuantizedWeight, ot: DType) -> None:
    _check_scale_type(qw, ot)
    element = qw.dtype
    if isinstance(element, FloatType) and not _exact_in(element, ot):
        raise ValueError(
            f"{element} values are not all exact in {ot} (the kernels convert codes to "
            f"{ot} before scaling): use bf16 activations and scales, or another element type"
        )


def _check_scale_type(qw: QuantizedWeight, ot: DType) -> None:
    """The scales (and a codebook's table) must be of the operand type: the kernels
    multiply in it."""
    if qw.scale_dtype != ot:
        raise TypeError(
            f"x is {ot}, so the kernels multiply by {ot} scales, but this weight's scales "
            f"are {qw.scale_dtype}: pass {qw.scale_dtype} activations, or quantize with "
            f"scale_dtype='{ot}' (or convert these: qw.with_scale_dtype('{ot}'))"
            if qw.scale_dtype in OPERAND_TYPES
            else f"the kernels multiply by f16 or bf16 scales (the activations' type), but "
            f"this weight's scales are {qw.scale_dtype}: quantize with scale_dtype='{ot}', "
            f"or convert these: qw.with_scale_dtype('{ot}') (it reports any rounding)"
        )


def _exact_in(element: DType, ot: DType) -> bool:
    return not inexact_values(element, ot).size


def _midpoint_zeros(qw: QuantizedWeight) -> bool:
    """Whether `qw` has unsigned codes and the constant zero point 2^(b−1) (symmetric
    uN, GPTQ sym): q − 2^(b−1) is then the signed b-bit value of q with its top bit
    flipped (offset binary), which the kernels convert with no zero point at all."""
    t = qw.dtype
    return (
        qw.zeros is not None
        and isinstance(t, IntType)
        and not t.signed
        and t.bits >= 2
        and bool((qw.zeros == 1 << (t.bits - 1)).all())
    )


def _as_signed(qw: QuantizedWeight) -> QuantizedWeight:
    """The same weight as iN codes (each code's top bit flipped) without zero points:
    decode_iN(q ^ 2^(b−1)) = q − 2^(b−1), so `dequantize()` is unchanged bit for bit.
    Flipping a bit of every code commutes with the packing's permutation, so the packed
    bytes are XORed with the flip of every code position, padding included (whose code
    0 becomes −2^(b−1): the padded rows and columns meet zero activations or zero
    scales, as before)."""
    unsigned = qw.dtype
    signed = dtypes.int_type(unsigned.bits, True)
    # 8 codes of b bits are b whole bytes: the flips repeat with that period.
    period = dtypes.pack_bits(np.full(8, 1 << (unsigned.bits - 1), np.uint64), unsigned.bits)
    data = np.bitwise_xor(qw.codes.data, np.resize(period, qw.codes.data.size))
    packing = dataclasses.replace(qw.packing, dtype=signed) if qw.packing is not None else None
    codes = PackedArray(data, signed, qw.codes.shape)
    return dataclasses.replace(qw, codes=codes, packing=packing, zeros=None)


def _aligned_zeros(zeros: np.ndarray, zero_type: DType) -> PackedArray:
    """The zero points [groups, N] as `zero_type` codes, each row padded with zero
    columns to whole 16-byte words (module docstring): a row of N bytes starts at a
    multiple of N, so for an N such as 203 a tile's run was 1-byte aligned, which
    cp.async cannot copy, and the pipelined load fell back to an unpipelined one
    (a `PipelineWarning` from inside the library). The padding is never read for a
    column below N."""
    per_word = 16 * 8 // zero_type.bits
    rows, n = zeros.shape
    padded = np.zeros((rows, -(-n // per_word) * per_word), np.int64)
    padded[:, :n] = zeros
    return dtypes.pack_codes(zero_type.encode(padded), zero_type)


def _zero_type(qw: QuantizedWeight, ot: DType) -> DType:
    """The smallest integer type holding every zero point; a ValueError when q − z is not
    exact in `ot` for some code q and zero point z."""
    assert qw.zeros is not None and isinstance(qw.dtype, IntType)
    low, high = int(qw.zeros.min()), int(qw.zeros.max())
    limit = _largest_exact_integer(ot)
    spread = max(abs(qw.dtype.max - low), abs(qw.dtype.min - high), abs(low), abs(high))
    if spread > limit:
        raise ValueError(
            f"zero points in [{low}, {high}] with {qw.dtype} codes give q − z beyond ±{limit}, "
            f"which {ot} does not hold exactly"
        )
    for t in (dtypes.u8, dtypes.i8):
        if t.min <= low and high <= t.max:
            return t
    return dtypes.i16


@functools.cache
def exact_window(element: DType, ot: DType) -> tuple[int, int]:
    """[lo, hi]: the exponents e for which 2^e and every value of `element` times 2^e
    are exact in `ot` (module docstring)."""
    values = element.decode(np.arange(1 << element.bits)).astype(np.float64)
    values = values[np.isfinite(values) & (values != 0)]
    good = []
    with np.errstate(over="ignore", under="ignore"):
        for e in range(-160, 161):
            scaled = np.append(values * 2.0**e, 2.0**e)
            if np.array_equal(ot.decode(ot.encode(scaled)).astype(np.float64), scaled):
                good.append(e)
    assert good == list(range(good[0], good[-1] + 1)), "the exact exponents are an interval"
    return good[0], good[-1]


def _normal_exponents(ot: DType) -> tuple[int, int]:
    assert isinstance(ot, FloatType)
    return 1 - ot.bias, (1 << ot.exponent_bits) - 2 - ot.bias


def _shift(smallest: int, largest: int, window: tuple[int, int]) -> int | None:
    """The e0 nearest 0 with every exponent in [smallest, largest] minus e0 inside
    `window`; None when the exponents span more than the window."""
    low, high = largest - window[1], smallest - window[0]
    return min(max(0, low), high) if low <= high else None


def _shifted_mx_scales(qw: QuantizedWeight, ot: DType) -> tuple[np.ndarray, int, bool, bool]:
    """The e8m0 scale codes shifted by e0, e0, whether every block is exact, and whether
    every shifted code is a normal `ot` number (kind ``mx_normal``; kernels docstring)."""
    codes = qw.scale_codes.astype(np.int64)
    finite = codes != 0xFF
    if not finite.any():
        return qw.scale_codes.astype(np.uint8), 0, True, False
    lo, hi = exact_window(qw.dtype, ot)
    smallest, largest = int(codes[finite].min()) - 127, int(codes[finite].max()) - 127
    normal_lo, normal_hi = _normal_exponents(ot)
    e0 = _shift(smallest, largest, (max(lo, normal_lo), min(hi, normal_hi)))
    normal = e0 is not None and bool(finite.all())
    if not normal:
        e0 = _shift(smallest, largest, (lo, hi))
    exact = e0 is not None
    if e0 is None:
        e0 = largest - hi
        warnings.warn(
            f"MX block scales span 2^{smallest}..2^{largest}, more than {ot} holds exactly "
            f"with {qw.dtype} elements (2^{lo}..2^{hi} apart from one factor): blocks below "
            f"2^{largest - (hi - lo)} are rounded to {ot}",
            ScaleRangeWarning,
            stacklevel=4,
        )
    shifted = np.where(finite, np.clip(codes - e0, 0, 0xFE), 0xFF).astype(np.uint8)
    assert math.isfinite(float(np.float32(2.0**e0)))
    return shifted, e0, exact, normal
