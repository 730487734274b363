"""Encoding: one register value -> the code of a low-bit or float type, as thread-IR
expressions, by the casting policy of `tilelang.dtypes` bit for bit (an encoded code is
`dst.encode(value)`). The lowering calls `encode_scalar` for every cast to a type a
register cannot hold and for stores of such types; its inverse, decoding, is
`tilelang.lowering.dequant`.

Encoding (`encode_scalar`) rounds once, from the exact input (f16/bf16 inputs widen to
f32 exactly; f64 inputs are rounded as f64, never through f32):

* to an ExMy or f8 type, on the input's bits: at or above the target's smallest
  normal, a right shift of the magnitude bits by (input mantissa bits - M) with round
  to nearest even (ties away for M = 0, where a tie between powers of two goes to the
  larger one, as `tilelang.dtypes` does), rebased by the difference of the biases;
  below it, the float addition |x| + 2^(input mantissa bits + 1 - bias - M), whose
  ulp is the target's subnormal spacing, rounds to nearest even, and the integer
  difference of the bits is the code. The magnitude saturates at the max finite code
  (satfinite: overflow and ±inf), the sign is ORed in (so -0 stays -0), and NaN gives
  the canonical NaN code (0x7F for f8e4m3 and f8e5m2) or +max for finite-only types;
* to e8m0 (no sign, no zero, no mantissa): the input's exponent field, plus one when
  the bit below the leading one is set (the nearest power of two, a tie to the larger),
  rebased; 0 below 2^-127, and NaN (0xFF) for NaN, ±inf, ±0, negatives and values that
  round above 2^127, as `ExponentType.encode`;
* to f16/bf16/f32: one `Cvt` (RNE, overflow to ±inf), NaN made canonical;
* to an integer: `Cvt` to i64 (RNE, saturating, NaN -> 0), clamped to the type's range.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang import dtypes
from tilelang.dtypes import DType, ExponentType, FloatType, IntType
from tilelang.ir import thread as t
from tilelang.lowering.bits import BF16, F16, F32, F64, I32, I64, U32, Emit, check_code_type, u32


def encode_scalar(emit: Emit, value: t.Expr, dst: DType) -> t.Expr:
    """The `dst` code of `value` (a float or integer register value) as a u32 holding
    it in its low bits, by the casting policy. `dst`: an integer or float type of at
    most 32 bits."""
    check_code_type(dst, 32)
    if value.dtype not in t.REGISTER_DTYPES or value.dtype == dtypes.u1:
        raise ValueError(f"encode_scalar takes a register value other than u1, not {value.dtype}")
    value = emit.let(value, "x")  # used several times below
    if isinstance(dst, IntType):
        return _encode_int(emit, value, dst)
    if dst.bits >= 16:
        return _encode_wide_float(emit, value, dst)
    if value.dtype.is_int:
        if value.dtype.bits == 64:  # f64 would round it first: a second rounding
            raise ValueError(f"encode_scalar to {dst} takes integers of at most 32 bits")
        value = t.Cvt(value, F64)  # exact for integers of up to 32 bits
    elif value.dtype in (F16, BF16):
        value = t.Cvt(value, F32)  # exact
    if isinstance(dst, ExponentType):
        return _encode_exponent(emit, emit.let(value, "x"), dst)
    return _encode_small_float(emit, emit.let(value, "x"), dst)


def _encode_int(emit: Emit, value: t.Expr, dst: IntType) -> t.Expr:
    """RNE (NaN -> 0) and saturation, by `Cvt` to i64 and a clamp."""
    wide = emit.let(t.Cvt(value, I64), "x") if value.dtype != I64 else value
    clamped = t.Binary("min", t.Binary("max", wide, t.Imm(dst.min, I64)), t.Imm(dst.max, I64))
    clamped = emit.let(clamped, "x")
    if not dst.signed:
        return t.Cvt(clamped, U32)
    as_u32 = t.Bitcast(t.Cvt(clamped, I32), U32)
    return t.Binary("and", as_u32, u32((1 << dst.bits) - 1)) if dst.bits < 32 else as_u32


def _float_layout(dtype: DType) -> tuple[IntType, int, int]:
    """(unsigned type of the same width, bits of the +inf code, bit of the sign)."""
    assert isinstance(dtype, FloatType)
    return dtypes.int_type(dtype.bits, False), int(dtype.inf_code or 0), dtype.bits - 1


def _is_nan(emit: Emit, value: t.Expr) -> t.Expr:
    """NaN test on the bits (|x| above the inf code), independent of float compares."""
    f = _float_bits(emit, value)
    return emit.let(t.Binary("gt", f.magnitude, f.imm(f.inf)), "nan")


@dataclass(frozen=True)
class _FloatBits:
    """An f32 or f64 register value as the encoders read it: its bits, its magnitude
    bits (sign cleared), the unsigned type both are in, the +inf code and the sign bit."""

    bits: t.Expr
    magnitude: t.Expr
    unsigned: IntType
    inf: int
    sign_bit: int

    def imm(self, value: int) -> t.Imm:
        return t.Imm(value, self.unsigned)

    def code(self, emit: Emit, result: t.Expr) -> t.Expr:
        """A code computed in the unsigned type, as the u32 the encoders return."""
        return t.Cvt(emit.let(result, "code"), U32) if self.unsigned != U32 else result


def _float_bits(emit: Emit, x: t.Expr) -> _FloatBits:
    unsigned, inf, sign_bit = _float_layout(x.dtype)
    bits = emit.let(t.Bitcast(x, unsigned), "xb")
    magnitude = emit.let(t.Binary("and", bits, t.Imm((1 << sign_bit) - 1, unsigned)), "xa")
    return _FloatBits(bits, magnitude, unsigned, inf, sign_bit)


def _encode_wide_float(emit: Emit, value: t.Expr, dst: FloatType) -> t.Expr:
    """f16/bf16/f32: one `Cvt` (RNE, overflow to ±inf); NaN gives the canonical NaN."""
    unsigned = dtypes.int_type(dst.bits, False)
    converted = t.Bitcast(
        emit.let(t.Cvt(value, dst), "x") if value.dtype != dst else value, unsigned
    )
    code = t.Cvt(converted, U32) if unsigned != U32 else converted
    if not value.dtype.is_float:
        return code
    return t.Select(_is_nan(emit, value), u32(int(dst.nan_code)), emit.let(code, "code"))


def _encode_exponent(emit: Emit, x: t.Expr, dst: ExponentType) -> t.Expr:
    """The e8m0 code of an f32 or f64 `x` (see the module doc)."""
    let, f = emit.let, _float_bits(emit, x)
    imm, magnitude, mantissa = f.imm, f.magnitude, x.dtype.mantissa_bits
    below_leading = t.Binary("and", t.Binary("shr", magnitude, imm(mantissa - 1)), imm(1))
    # The input's exponent field plus the rounding bit, in the input's bias: code + rebase.
    field = let(t.Binary("add", t.Binary("shr", magnitude, imm(mantissa)), below_leading), "e")
    rebase = x.dtype.bias - dst.bias  # 0 from f32, 896 from f64
    normal = t.Select(
        t.Binary("lt", field, imm(rebase)), imm(0), t.Binary("sub", field, imm(rebase))
    )
    # f32 subnormals lie below 2^-126 (the bit below their leading one is not bit 22):
    # 2^-127 (code 0) or, from 1.5·2^-127 up, 2^-126.
    smallest_normal = int(x.dtype.encode(x.dtype.smallest_normal))
    tie = int(x.dtype.encode(1.5 * dst.min)) if x.dtype == F32 else 0
    subnormal = t.Select(t.Binary("ge", magnitude, imm(tie)), imm(1), imm(0)) if tie else imm(0)
    tiny = t.Binary("lt", magnitude, imm(smallest_normal))
    code = let(t.Select(tiny, subnormal, normal), "code")
    # NaN for NaN and ±inf, ±0, negatives, and what rounds above 2^127.
    invalid = t.Binary("ge", magnitude, imm(f.inf))
    for more in (
        t.Binary("eq", magnitude, imm(0)),
        t.Binary("ge", f.bits, imm(1 << f.sign_bit)),
        t.Binary("gt", code, imm(dst.max_code)),
    ):
        invalid = t.Binary("or", invalid, more)
    return f.code(emit, t.Select(let(invalid, "nan"), imm(dst.nan_code), code))


def _encode_small_float(emit: Emit, x: t.Expr, dst: FloatType) -> t.Expr:
    """An ExMy or f8 code from an f32 or f64 `x`, rounded once (see the module doc)."""
    let, f = emit.let, _float_bits(emit, x)
    imm, magnitude, unsigned = f.imm, f.magnitude, f.unsigned
    width_mantissa = x.dtype.mantissa_bits
    m_bits = dst.mantissa_bits
    drop = width_mantissa - m_bits
    # At or above the smallest normal: round the magnitude bits (RNE; ties up for M = 0).
    half = imm((1 << (drop - 1)) - 1 if m_bits else 1 << (drop - 1))
    rounding = t.Binary("add", magnitude, half)
    if m_bits:
        odd = t.Binary("and", t.Binary("shr", magnitude, imm(drop)), imm(1))
        rounding = t.Binary("add", rounding, odd)
    rebase = (x.dtype.bias - dst.bias) << m_bits
    normal = t.Binary("sub", t.Binary("shr", let(rounding, "r"), imm(drop)), imm(rebase))
    # Below it: |x| + C rounds to a multiple of the subnormal spacing (ulp of C).
    c_value = 2.0 ** (width_mantissa + 1 - dst.bias - m_bits)
    c_bits = int(x.dtype.encode(c_value))
    summed = t.Binary("add", t.Bitcast(magnitude, x.dtype), t.Imm(c_value, x.dtype))
    subnormal = t.Binary("sub", t.Bitcast(let(summed, "r"), unsigned), imm(c_bits))
    tiny = t.Binary("lt", magnitude, imm(int(x.dtype.encode(dst.smallest_normal))))
    chosen = let(t.Select(let(tiny, "tiny"), let(subnormal, "sub"), let(normal, "nrm")), "mag")
    saturated = t.Binary("min", chosen, imm(dst.max_code))  # satfinite: overflow, ±inf
    sign = t.Binary("shl", t.Binary("shr", f.bits, imm(f.sign_bit)), imm(dst.bits - 1))
    code = let(t.Binary("or", saturated, sign), "code")
    nan = let(t.Binary("gt", magnitude, imm(f.inf)), "nan")
    nan_code = dst.nan_code if dst.nan_code is not None else dst.max_code
    return f.code(emit, t.Select(nan, imm(nan_code), code))
