"""`quantize`: a float weight W [K, N] -> `QuantizedWeight`, choosing scales and
rounding codes as each format's spec says.

Rounding is tilelang's cast (`tilelang.dtypes` encode): round to nearest even from the
float64 quotient w / s, saturating at the element type's range. In small floats with no
mantissa bits (M = 0, such as f3e2m0: 0, 1, 2, 4) a tie between two powers of two has no
even significand, and the larger magnitude wins (IEEE 754-2019 §4.3.1): 3.0 rounds to
4 and 1.5 to 2 (a tie with 0, such as 0.5, rounds to 0). Every scale is rounded
to its scale type *before* the codes are computed, so the codes are the nearest to
w / s for the scale the kernel multiplies by. Per group of G rows along K (G = K for
``group_size=-1``, per output channel):

* signed iN, no zero point: ``s = absmax / (2^(N−1) − 1)``, ``q = encode_iN(w / s)``.
* unsigned uN, no zero point: the same s with the constant zero point z = 2^(N−1):
  ``q = clamp(rne(w / s) + z, 0, 2^N − 1)``, codes 1..2^N − 1 symmetric about z (code
  0 unused). The zero point is that of GPTQ's symmetric checkpoints, which import as
  the same representation, but not the scale: GPTQ's is 2·absmax / (2^N − 1), which
  also uses code 0 and puts ±absmax halfway between two codes (±7.5 steps for 4 bits).
* zero point (asymmetric), uN or iN with range [qmin, qmax]: lo = min(min w, 0),
  hi = max(max w, 0) (the range always holds 0, so 0 is exact and z needs no clamp
  except by rounding), ``s = (hi − lo) / (qmax − qmin)``,
  ``z = clamp(qmin − rne(lo / s), qmin, qmax)``, ``q = clamp(rne(w / s) + z, qmin, qmax)``.
* small float ExMy: ``s = absmax / max_ExMy``, ``q = encode_ExMy(w / s)``.
* MX (OCP MX v1.0, §6.3): per block of 32 rows, ``X = 2^(floor(log2 absmax) − emax)``
  with emax the element type's largest exponent, clamped to e8m0's 2^-127..2^127
  (an all-zero block gets 2^-127), ``q = encode(w / X)`` (saturating, as the spec).
  With ``mx_scale="rceil"``, X is instead the smallest power of two with
  ``absmax / X ≤ max`` (max the element type's largest value: 6 for e2m1, 448 for
  e4m3), what PTX's ``cvt.rp.satfinite.ue8m0x2.f32`` makes of absmax / max: no element
  saturates, at the cost of one binade of resolution for some blocks.
* NVFP4: the f32 tensor scale ``t = f32(absmax_W / (6 · 448))`` (1 for W = 0); per
  block of 16 rows ``b = encode_e4m3(absmax_block / (6 · t))``,
  ``q = encode_e2m1(w / (b · t))`` (0 where b is 0).
* codebook ("nf4", "fp4_bnb", "codebook"; bitsandbytes' choice): per group of G rows
  (64 by default, bitsandbytes' blocksize; 32..4096 powers of two, or -1),
  ``s = round_S(absmax)``, and q the code of the table entry (held in S) nearest to
  the float64 quotient w / s; between two entries equally near, and among equal
  entries (FP4's 0 and -0), the smaller code. A user's table of L values (sorted or
  not, 2 ≤ L ≤ 256) takes u_b codes, 2^b ≥ L (b ≥ 2), the entries past L repeating
  its last value (so no code goes to them). An all-zero group gets s = 0 and the code
  of the entry nearest 0.

An all-zero group gets the scale 0 and code 0 or the zero point: w = 0. A scale that
overflows its type is an error, and so is a group whose dequantized weights
``(q − z) · s`` overflow it (the kernels compute that product in the scale type, so
with f16 scales every |w| must stay below about 65504, f16's largest value, whatever
the scale itself; bf16 suggested), and so is the scale of a group that holds nonzero
weights and falls below ``2^(b − 1)`` times the scale type's smallest subnormal, b the
bits the codes resolve (N for uN/iN, m + 1 for ExMy): there the scale keeps fewer
significant bits than the codes (f16: below 2^-21 for 4-bit integers, 2^-17 for 8-bit
ones), down to rounding to 0, which would dequantize the whole group to 0. For f16
scales both errors suggest bf16 (f32's range; the matmul kernels multiply by f16 or bf16
scales, so f32 ones serve `dequantize` only); for bf16 an underflow suggests f32, and an
overflow of bf16 or f32 scales says to rescale the weights. MX and NVFP4 fix their scales and are not checked so.

Small floats whose values f16 does not hold exactly (f6e5m0, f7e5m1, f7e6m0, f8e6m1,
f8e7m0: beyond 65504 or below f16's subnormals) are refused with f16 scales: the
kernels convert codes to the scales' type before scaling, so matmul could never run
such a weight. bf16 scales (and bf16 activations) hold every ExMy value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, FloatType, IntType, f4e2m1, f8e4m3

from .arithmetic import round_to
from .arrays import float_matrix
from .formats import (
    MAX_TABLE,
    Format,
    check_codebook_element,
    check_scale_dtype,
    check_scaled_element,
    get_format,
    inexact_values,
)
from .weight import QuantizedWeight

NVFP4_TENSOR_DIVISOR = 6.0 * 448.0  # f4e2m1 max × f8e4m3 max
_SLICE_ELEMENTS = 1 << 22

#: What each format's function returns for a slice of columns [K / G, G, n]:
#: codes [K / G, G, n], scale codes [K / G, n], zero points [K / G, n] or None.
_Slice = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def quantize(
    w: Any,
    dtype: DType | str | None = None,
    group_size: int | None = None,
    zero_point: bool = False,
    scale_dtype: DType | str | None = None,
    format: str | None = None,
    mx_scale: str = "floor",
    codebook: Any = None,
) -> QuantizedWeight:
    """Quantize the float weight `w` [K, N] (numpy, or a torch tensor) to `dtype` codes.

    `dtype`: u1..u8, i1..i8 or a small float ExMy of 3..8 bits; may be omitted when
    `format` names a block-scaled format ("mxfp4", "mxfp6_e3m2", "mxfp6_e2m3",
    "mxfp8_e4m3", "mxfp8_e5m2", "nvfp4"), which fixes it. `group_size`: rows of W per
    scale (32, 64, 128, ...; -1 for one scale per column); None means 128, or the
    format's block (32 for MX, 16 for NVFP4, which accept nothing else). `zero_point`:
    one integer zero point per group (integer codes only). `scale_dtype`: f16 (the
    default), bf16 or f32; MX and NVFP4 fix theirs. The module docstring gives the
    exact scale choice and rounding of every case. A ValueError for a scale its type
    cannot hold: one that overflows, a group whose weights (q − z) · s overflow it
    (with f16 scales |w| beyond about 65504), or a nonzero group's scale below 2^(b − 1)
    times the type's smallest subnormal (b: the codes' bits, N for uN/iN, m + 1 for
    ExMy; f16 and u4: 2^-21), which would dequantize to 0 or lose precision; bf16 scales
    (f32's range, and the kernels take them) hold what f16 cannot. A ValueError too for
    f16 scales with ExMy codes f16 does not hold (f7e5m1, ...: module docstring).
    `mx_scale`: how MX formats choose a block's power of two, "floor" (OCP MX v1.0,
    the default: the top elements of some blocks saturate) or "rceil" (rounded up so
    that none does); other formats take only the default. `codebook`: the table of
    ``format="codebook"`` (2 to 256 finite values); "nf4" and "fp4_bnb" fix theirs, and
    codebook formats take u2..u8 `dtype` (default: the fewest bits the table needs),
    `group_size` 64 by default, no zero points.
    """
    fmt = get_format("scaled" if format is None else format)
    if fmt.kind == "scaled" and fmt.name != "scaled":
        raise ValueError(f"{format!r} is an import format (from_{format}); quantize makes 'scaled'")
    if codebook is not None and fmt.name != "codebook":
        raise ValueError(f"codebook: a table goes with format='codebook', not {fmt.name!r}")
    if fmt.kind == "codebook":
        if zero_point:
            raise ValueError(f"zero_point: {fmt.name} has no zero points (an absmax scale)")
        _check_mx_scale(fmt, mx_scale)
        return _quantize_codebook(float_matrix(w), fmt, dtype, group_size, scale_dtype, codebook)
    element = _element_type(fmt, dtype)
    weights = float_matrix(w)
    k, n = weights.shape
    if k == 0:
        raise ValueError(f"w must hold at least one row (K ≥ 1), got shape {weights.shape}")
    group = _group_size(fmt, group_size, k)
    _check_mx_scale(fmt, mx_scale)
    if fmt.kind == "scaled":
        scale_type = dtypes.f16 if scale_dtype is None else dtypes.dtype(scale_dtype)
        check_scale_dtype(scale_type)
        if zero_point and not isinstance(element, IntType):
            raise ValueError(f"zero points need integer codes, not {element}")
        _check_element_in_scale_type(element, scale_type)
    else:
        if zero_point:
            raise ValueError(f"{fmt.name} has no zero points")
        if scale_dtype is not None and dtypes.dtype(scale_dtype) != fmt.scale_dtype:
            raise ValueError(f"{fmt.name} scales are {fmt.scale_dtype}, got {scale_dtype}")
        assert fmt.scale_dtype is not None
        scale_type = fmt.scale_dtype
    tensor_scale = _nvfp4_tensor_scale(weights) if fmt.kind == "nvfp4" else None
    tiny = _TinyScales(scale_type, element)

    def columns(grouped: np.ndarray) -> _Slice:
        if fmt.kind == "mx":
            return _mx(grouped, element, mx_scale)
        if fmt.kind == "nvfp4":
            assert tensor_scale is not None
            return _nvfp4(grouped, tensor_scale)
        if zero_point:
            return _asymmetric(grouped, element, scale_type, tiny)
        return _symmetric(grouped, element, scale_type, tiny)

    # Slices of columns (4M elements) bound the float64 temporaries to a few hundred MB.
    width = max(1, _SLICE_ELEMENTS // max(k, 1))
    parts = []
    for c in range(0, n, width):
        grouped = weights[:, c : c + width].astype(np.float64).reshape(k // group, group, -1)
        parts.append(columns(grouped))
        if fmt.kind == "scaled":
            _check_products(parts[-1], grouped, element, scale_type, c)
    parts = parts or [columns(np.zeros((k // group, group, 0)))]
    if tiny.groups:
        raise ValueError(tiny.message((k // group) * n))
    codes = np.concatenate([p[0] for p in parts], axis=2).reshape(k, n)
    scales = np.concatenate([p[1] for p in parts], axis=1)
    zeros = None if parts[0][2] is None else np.concatenate([p[2] for p in parts], axis=1)
    return QuantizedWeight(
        codes=dtypes.pack_codes(codes, element),
        scale_codes=scales,
        scale_dtype=scale_type,
        group_size=group,
        format=fmt.name,
        zeros=zeros,
        tensor_scale=tensor_scale,
    )


def _element_type(fmt: Format, dtype: DType | str | None) -> DType:
    if fmt.kind == "scaled":
        if dtype is None:
            raise ValueError("quantize needs a dtype (u4, i8, f4e2m1, ...) or a format")
        element = dtypes.dtype(dtype)
        check_scaled_element(element)
        return element
    assert fmt.element is not None
    if dtype is not None and dtypes.dtype(dtype) != fmt.element:
        raise ValueError(f"{fmt.name} holds {fmt.element} codes, got dtype={dtype}")
    return fmt.element


def _group_size(fmt: Format, group_size: int | None, k: int) -> int:
    if fmt.block is not None:
        if group_size not in (None, fmt.block):
            raise ValueError(f"{fmt.name} has one scale per {fmt.block} rows (the spec's block)")
        group = fmt.block
    elif group_size is None:
        group = 128
    elif group_size == -1:
        group = k
    elif isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int or -1, got {group_size!r}")
    else:
        group = group_size
    if k % group:
        if fmt.block is not None:
            raise ValueError(
                f"{fmt.name} has one scale per {group} rows (the spec's block), and K = {k} "
                f"is not a multiple of {group}"
            )
        given = "128 (the default)" if group_size is None else str(group)
        fits = [g for g in range(16, k, 16) if k % g == 0]
        hint = f", e.g. {fits[-1]}" if fits else f" (K = {k} has none: use -1)"
        raise ValueError(
            f"group_size: K = {k} (W's rows) is not a multiple of the group size {given}; "
            f"pass group_size=-1 (one scale per column) or a group size dividing K, a "
            f"multiple of 16 for the matmul kernels{hint}"
        )
    return group


def _wider_scales(scale_type: DType, overflow: bool) -> str:
    """What to do instead of `scale_type` scales that overflow (or underflow) it."""
    if scale_type == dtypes.f16:
        return (
            "pass scale_dtype='bf16' (f32's range, and the matmul kernels take it; f32 "
            "scales serve dequantize() only)"
        )
    if scale_type == dtypes.bf16 and not overflow:  # f32's subnormals reach further down
        return "pass scale_dtype='f32' (dequantize() only: the kernels take f16 or bf16 scales)"
    return "rescale the weights by a power of two"


def _check_element_in_scale_type(element: DType, scale_type: DType) -> None:
    """Refuses ExMy codes whose values f16 (bf16) scales cannot serve: the kernels convert
    the codes to the scale type before scaling (module docstring). f32 scales serve
    `dequantize()` only and hold every value."""
    if scale_type == dtypes.f32 or not isinstance(element, FloatType):
        return
    inexact = inexact_values(element, scale_type)
    if not inexact.size:
        return
    reasons = []
    if np.abs(inexact).max() > scale_type.max:
        reasons.append(f"they reach {np.abs(inexact).max():g}, beyond {scale_type.max:g}")
    tiny = np.abs(inexact)[np.abs(inexact) < scale_type.max]
    if tiny.size:
        reasons.append(
            f"{tiny.min():.3g} is finer than {scale_type} resolves there "
            f"(its smallest subnormal is {scale_type.smallest_subnormal:.3g})"
        )
    raise ValueError(
        f"dtype: {element} values are not all exact in {scale_type} ({'; '.join(reasons)}), "
        f"and the matmul kernels convert codes to the scales' type {scale_type} before "
        f"scaling, so they could not run this weight: pass scale_dtype='bf16', which "
        f"holds every {element} value, and multiply bf16 activations (a bf16 "
        f"QuantLinear: from_linear of a bf16 linear, or scale_dtype='bf16'), or choose "
        f"an element type within {scale_type}'s range"
    )


def _check_products(
    part: _Slice, grouped: np.ndarray, element: DType, scale_type: DType, first_column: int
) -> None:
    """Refuses a slice whose dequantized weights (q − z) · s overflow the scale type, in
    which `dequantize()` and the kernels compute them (`tilelang.quant.arithmetic`):
    rounding is monotonic, so a group overflows exactly when its largest |q − z| times
    its scale does. Names the first such group with its largest |w|."""
    codes, scale_codes, zeros = part
    values = element.decode(codes).astype(np.float64)
    if zeros is not None:
        values = values - zeros[:, None, :]
    largest = np.abs(values).max(axis=1, initial=0.0)
    products = largest * scale_type.decode(scale_codes).astype(np.float64)
    overflow = ~np.isfinite(round_to(products, scale_type))
    if not overflow.any():
        return
    g, c = (int(i) for i in np.argwhere(overflow)[0])
    rows = grouped.shape[1]
    raise ValueError(
        f"group {g} (rows {g * rows}..{(g + 1) * rows - 1}) of column {first_column + c}: "
        f"its largest |w|, {np.abs(grouped[g, :, c]).max():.6g}, dequantizes to "
        f"(q − z)·s = {products[g, c]:.6g}, beyond the largest {scale_type} "
        f"({scale_type.max:.6g}); the kernels and dequantize() compute (q − z)·s in the "
        f"scale type, so it would be ±inf ({int(overflow.sum())} group(s) of this slice of "
        f"columns overflow): {_wider_scales(scale_type, True)}"
    )


class _TinyScales:
    """The nonzero groups whose exact scale is below `threshold` (module docstring),
    counted over every slice of columns so that the error names them all."""

    def __init__(self, scale_type: DType, element: DType) -> None:
        self.scale_type, self.element = scale_type, element
        is_float = isinstance(element, FloatType)
        self.bits = element.mantissa_bits + 1 if is_float else element.bits
        self.threshold = float(scale_type.smallest_subnormal) * 2.0 ** (self.bits - 1)
        self.groups = 0
        self.smallest = float("inf")

    def count(self, exact: np.ndarray) -> None:
        low = (exact > 0) & (exact < self.threshold)
        if low.any():
            self.groups += int(low.sum())
            self.smallest = min(self.smallest, float(exact[low].min()))

    def message(self, total: int) -> str:
        return (
            f"{self.groups} of {total} groups hold nonzero weights whose scale is below "
            f"{self.threshold:.3g} (the smallest: {self.smallest:.3g}), where {self.scale_type} "
            f"keeps fewer significant bits than the {self.bits} the {self.element} codes "
            f"resolve (or rounds it to 0): their weights would dequantize to 0 or lose "
            f"precision; {_wider_scales(self.scale_type, False)}"
        )


def _rounded_scale(exact: np.ndarray, scale_type: DType, tiny: _TinyScales) -> np.ndarray:
    """The scales rounded to their type (float64), refusing any that overflow it and
    counting the nonzero groups' scales too small for it in `tiny`."""
    rounded = round_to(exact, scale_type).astype(np.float64)
    if not np.isfinite(rounded).all():
        raise ValueError(
            f"a scale of {float(exact[~np.isfinite(rounded)].max()):g} overflows "
            f"{scale_type}: {_wider_scales(scale_type, True)}"
        )
    tiny.count(exact)
    return rounded


def _divide(grouped: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """w / s per group (float64), with 0 where the scale is 0 (then w rounds to 0)."""
    s = scales[:, None, :]
    return np.divide(grouped, s, out=np.zeros_like(grouped), where=s != 0)


def _symmetric(grouped: np.ndarray, element: DType, scale_type: DType, tiny: _TinyScales) -> _Slice:
    absmax = np.abs(grouped).max(axis=1)
    if isinstance(element, FloatType):
        scales = _rounded_scale(absmax / element.max, scale_type, tiny)
        return element.encode(_divide(grouped, scales)), scale_type.encode(scales), None
    assert isinstance(element, IntType)
    if element.bits == 1:
        raise ValueError(f"{element} holds no range symmetric about 0: pass zero_point=True")
    qmax = (1 << (element.bits - 1)) - 1
    scales = _rounded_scale(absmax / qmax, scale_type, tiny)
    if element.signed:
        return element.encode(_divide(grouped, scales)), scale_type.encode(scales), None
    midpoint = 1 << (element.bits - 1)
    codes = element.encode(np.rint(_divide(grouped, scales)) + midpoint)
    return codes, scale_type.encode(scales), np.full(scales.shape, midpoint, dtype=np.int32)


def _asymmetric(
    grouped: np.ndarray, element: DType, scale_type: DType, tiny: _TinyScales
) -> _Slice:
    assert isinstance(element, IntType)
    lo = np.minimum(grouped.min(axis=1), 0.0)
    hi = np.maximum(grouped.max(axis=1), 0.0)
    scales = _rounded_scale((hi - lo) / (element.max - element.min), scale_type, tiny)
    safe = np.where(scales == 0, 1.0, scales)
    zeros = np.clip(element.min - np.rint(lo / safe), element.min, element.max)
    codes = element.encode(np.rint(_divide(grouped, scales)) + zeros[:, None, :])
    return codes, scale_type.encode(scales), zeros.astype(np.int32)


def _floor_log2(x: np.ndarray) -> np.ndarray:
    """floor(log2 x) exactly, for positive finite float64 x."""
    return np.frexp(x)[1].astype(np.int64) - 1


MX_SCALES = ("floor", "rceil")


def _check_mx_scale(fmt: Format, mx_scale: str) -> None:
    if mx_scale not in MX_SCALES:
        raise ValueError(f"mx_scale must be one of {MX_SCALES}, got {mx_scale!r}")
    if mx_scale != "floor" and fmt.kind != "mx":
        raise ValueError(f"mx_scale={mx_scale!r} chooses MX scales; {fmt.name} has none")


def _ceil_exponent(absmax: np.ndarray, largest: float) -> np.ndarray:
    """The smallest e with absmax ≤ largest · 2^e, exactly (positive finite absmax):
    frexp's guess from the rounded quotient, corrected by exact comparisons (a product
    with a power of two is exact)."""
    exponent = np.frexp(absmax / largest)[1].astype(np.int64)
    exponent += absmax > np.ldexp(largest, exponent)
    exponent -= absmax <= np.ldexp(largest, exponent - 1)
    return exponent


def _mx(grouped: np.ndarray, element: DType, mx_scale: str = "floor") -> _Slice:
    assert isinstance(element, FloatType)
    absmax = np.abs(grouped).max(axis=1)
    positive = absmax > 0
    safe = np.where(positive, absmax, 1.0)
    if mx_scale == "rceil":
        exponent = np.where(positive, _ceil_exponent(safe, element.max), -127)
    else:
        exponent = np.where(positive, _floor_log2(safe) - element.max_exponent, -127)
    if exponent.max(initial=-127) > 127:
        raise ValueError("a block's absmax is beyond the range of the MX e8m0 scales")
    exponent = np.maximum(exponent, -127)
    codes = element.encode(np.ldexp(grouped, -exponent[:, None, :]))
    values = np.ldexp(element.decode(codes).astype(np.float64), exponent[:, None, :])
    if np.abs(values).max(initial=0.0) > np.finfo(np.float32).max:
        raise ValueError(
            f"w: a block's absmax rounds to {np.abs(values).max():g} under its scale "
            f"(mx_scale={mx_scale!r}), beyond f32's range, where MX weights dequantize: "
            f"rescale the weights (a power of two is exact)"
            + (" or use mx_scale='floor'" if mx_scale == "rceil" else "")
        )
    return codes, (exponent + 127).astype(np.uint8), None


def _nvfp4_tensor_scale(weights: np.ndarray) -> float:
    absmax = float(np.abs(weights).max()) if weights.size else 0.0
    if not absmax:
        return 1.0
    with np.errstate(over="ignore"):
        tensor_scale = float(np.float32(absmax / NVFP4_TENSOR_DIVISOR))
    if not math.isfinite(tensor_scale):
        raise ValueError(
            f"w: its largest |w|, {absmax:g}, is out of f32's range for NVFP4: the f32 "
            f"tensor scale absmax / 2688 (6 · 448) overflows f32 (largest "
            f"{float(np.finfo(np.float32).max):g}); rescale the weights (a power of two is "
            f"exact) below {float(np.finfo(np.float32).max) * NVFP4_TENSOR_DIVISOR:g}"
        )
    if tensor_scale == 0.0:
        raise ValueError(
            f"w: its largest |w|, {absmax:g}, is out of f32's range for NVFP4: the f32 "
            f"tensor scale absmax / 2688 (6 · 448) underflows f32 to 0; rescale the weights"
        )
    return tensor_scale


def _nvfp4(grouped: np.ndarray, tensor_scale: float) -> _Slice:
    block_codes = f8e4m3.encode(np.abs(grouped).max(axis=1) / (6.0 * tensor_scale))
    effective = f8e4m3.decode(block_codes).astype(np.float64) * tensor_scale
    return f4e2m1.encode(_divide(grouped, effective)), block_codes, None


# ------------------------------------------------------------------------- codebooks


def _quantize_codebook(
    weights: np.ndarray,
    fmt: Format,
    dtype: DType | str | None,
    group_size: int | None,
    scale_dtype: DType | str | None,
    codebook: Any,
) -> QuantizedWeight:
    """`quantize` for the codebook formats (module docstring)."""
    scale_type = dtypes.f16 if scale_dtype is None else dtypes.dtype(scale_dtype)
    check_scale_dtype(scale_type)
    values = _codebook_values(fmt, codebook)
    element = _codebook_element(fmt, dtype, values.size)
    k, n = weights.shape
    if k == 0:
        raise ValueError(f"w must hold at least one row (K ≥ 1), got shape {weights.shape}")
    group = _codebook_group(fmt, group_size, k)
    padded = np.concatenate([values, np.full((1 << element.bits) - values.size, values[-1])])
    table = round_to(padded, scale_type).astype(np.float64)
    if not np.isfinite(table).all():
        raise ValueError(
            f"codebook: its values reach {np.abs(values).max():g}, beyond the largest "
            f"{scale_type} ({scale_type.max:g}): scale the table down"
        )
    tiny = _TinyScales(scale_type, element)
    width = max(1, _SLICE_ELEMENTS // k)
    codes, scales = [], []
    for c in range(0, max(n, 1), width):
        grouped = weights[:, c : c + width].astype(np.float64).reshape(k // group, group, -1)
        s = _rounded_scale(np.abs(grouped).max(axis=1, initial=0.0), scale_type, tiny)
        q = nearest_codes(_divide(grouped, s), table)
        _check_codebook_products(table[q], s, scale_type, c)
        codes.append(q)
        scales.append(scale_type.encode(s))
    if tiny.groups:
        raise ValueError(tiny.message((k // group) * n))
    return QuantizedWeight(
        codes=dtypes.pack_codes(np.concatenate(codes, axis=2).reshape(k, n), element),
        scale_codes=np.concatenate(scales, axis=1),
        scale_dtype=scale_type,
        group_size=group,
        format=fmt.name,
        table_codes=scale_type.encode(table),
    )


def _codebook_values(fmt: Format, codebook: Any) -> np.ndarray:
    """The table's values (float64, as given): the format's, or the user's."""
    if fmt.table is not None:
        return np.asarray(fmt.table, dtype=np.float64)
    if codebook is None:
        raise ValueError("codebook: format='codebook' needs the table (codebook=values)")
    if hasattr(codebook, "detach"):  # a torch tensor, on any device
        codebook = codebook.detach().cpu().float().numpy()
    values = np.asarray(codebook)
    if values.dtype.kind not in "fiu" or values.ndim != 1:
        raise ValueError(
            f"codebook must be a 1-D array of real numbers, got {values.dtype} {values.shape}"
        )
    if not 2 <= values.size <= MAX_TABLE or not np.isfinite(values).all():
        raise ValueError(
            f"codebook must hold 2 to {MAX_TABLE} finite values, got {values.size} "
            f"(all finite: {bool(np.isfinite(values).all())})"
        )
    return values.astype(np.float64)


def _codebook_element(fmt: Format, dtype: DType | str | None, size: int) -> DType:
    """The code type: the format's (u4), `dtype`, or the fewest bits indexing `size`."""
    if fmt.element is not None:
        if dtype is not None and dtypes.dtype(dtype) != fmt.element:
            raise ValueError(f"{fmt.name} holds {fmt.element} codes, got dtype={dtype}")
        return fmt.element
    if dtype is None:
        return dtypes.int_type(max(2, (size - 1).bit_length()), False)
    element = dtypes.dtype(dtype)
    check_codebook_element(element)
    if size > 1 << element.bits:
        raise ValueError(
            f"dtype: {element} indexes {1 << element.bits} values, the codebook has {size}"
        )
    return element


def _codebook_group(fmt: Format, group_size: int | None, k: int) -> int:
    """64 (bitsandbytes' default blocksize), a power of two 32..4096 dividing K, or -1."""
    if group_size == -1:
        return k
    group = 64 if group_size is None else group_size
    allowed = isinstance(group, int) and not isinstance(group, bool)
    if not (allowed and 32 <= group <= 4096 and group & (group - 1) == 0):
        raise ValueError(
            f"group_size: {fmt.name} takes a power of two from 32 to 4096 (64 by default, "
            f"bitsandbytes' blocksize) or -1 (one scale per column), got {group_size!r}"
        )
    if k % group:
        raise ValueError(
            f"group_size: K = {k} (W's rows) is not a multiple of the group size {group}; "
            f"pass group_size=-1 (one scale per column) or a smaller power of two"
        )
    return group


def nearest_codes(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The code of the `table` entry nearest to each x (|x − entry| in float64); ties
    and equal entries go to the smaller code. Each x is compared with the two distinct
    values around it in sorted order, which hold the nearest (x − v, rounded, is
    monotonic in v)."""
    order = np.argsort(table, kind="stable")  # equal values: the smaller code first
    values, first = np.unique(table[order], return_index=True)
    codes = order[first].astype(np.uint8)
    if values.size == 1:
        return np.full(x.shape, codes[0], np.uint8)
    hi = np.clip(np.searchsorted(values, x), 1, values.size - 1)
    lo = hi - 1
    below, above = np.abs(x - values[lo]), np.abs(x - values[hi])
    upper = (above < below) | ((above == below) & (codes[hi] < codes[lo]))
    return np.where(upper, codes[hi], codes[lo])


def _check_codebook_products(
    values: np.ndarray, scales: np.ndarray, scale_type: DType, first_column: int
) -> None:
    """Refuses groups whose weights table[q] · s overflow the scale type (a user's
    table beyond ±1 can; s is the group's absmax)."""
    largest = np.abs(values).max(axis=1, initial=0.0) * scales
    overflow = ~np.isfinite(round_to(largest, scale_type))
    if overflow.any():
        g, c = (int(i) for i in np.argwhere(overflow)[0])
        raise ValueError(
            f"group {g} of column {first_column + c}: table[q] · s = {largest[g, c]:.6g} "
            f"overflows {scale_type} ({scale_type.max:.6g}): a table within ±1 cannot; "
            f"{_wider_scales(scale_type, True)}"
        )
