"""The scalar fallback of decoding: one low-bit code -> its value, as thread-IR
expressions, by the casting policy of `tilelang.dtypes` bit for bit (a decoded value is
`dtypes.convert(code, src, dst)`). The vector recipes of `tilelang.lowering.dequant` use
it where none of theirs applies, and the lowering for one code at a time.

Scalar fallback (`decode_scalar`), used where no vector recipe exists (ExMy with E ≥ 5
other than f8e5m2 to f16, which must round; codes wider than 8 bits) and for one code
at a time: integers are sign-extended by two shifts and converted with one `Cvt`;
small floats are rebuilt arithmetically as significand · 2^(exponent) in f32 (both
factors exact, the product exact: every ExMy of ≤ 8 bits is an f32), the sign ORed in,
specials selected, and one `Cvt` to the target rounds once (RNE, f16 overflow to ±inf),
from the exact value. f16/bf16/f32 codes are bitcast.
"""

from __future__ import annotations

from tilelang import dtypes
from tilelang.dtypes import DType, ExponentType, FloatType, IntType
from tilelang.ir import thread as t
from tilelang.lowering.bits import (
    F16,
    F32,
    I32,
    OR_AND,
    U32,
    Emit,
    check_code_type,
    special_threshold,
    u32,
)


def decode_scalar(emit: Emit, code: t.Expr, src: DType, dst: DType, finite: bool = False) -> t.Expr:
    """The value of one `src` code as a `dst` value (by the casting policy).

    `code` is a u32 holding the code in its low bits, zero above. `src`: an integer or
    float type of at most 32 bits; `dst`: f16, bf16, f32, f64 or an integer register
    dtype. `finite`: the code is no NaN (the caller's value facts say so).
    """
    check_code_type(src, 32)
    if dst not in t.REGISTER_DTYPES or dst == dtypes.u1:
        raise ValueError(f"decode_scalar converts to a register dtype other than u1, not {dst}")
    if code.dtype != U32:
        raise ValueError(f"a code is a u32, got {code.dtype}")
    code = emit.let(code, "code")  # used several times below
    if isinstance(src, IntType):
        value = _int_value(emit, code, src)
    elif isinstance(src, ExponentType):
        value = _e8m0_value(emit, code, finite and dst == F16)
    elif src.bits <= 8:
        value = _small_float_value(emit, code, src)
    else:  # f16, bf16, f32: the code is the value's bits
        width = dtypes.int_type(src.bits, False)
        value = t.Bitcast(t.Cvt(code, width) if width != U32 else code, src)
    return value if value.dtype == dst else t.Cvt(emit.let(value, "v"), dst)


def _int_value(emit: Emit, code: t.Expr, src: IntType) -> t.Expr:
    """The integer as a u32 (unsigned) or i32 (signed: sign-extended by two shifts)."""
    if not src.signed:
        return code
    if src.bits == 32:
        return t.Bitcast(code, I32)
    up = u32(32 - src.bits)
    return t.Binary("shr", t.Bitcast(emit.let(t.Binary("shl", code, up), "c"), I32), up)


def _e8m0_value(emit: Emit, code: t.Expr, finite_to_f16: bool = False) -> t.Expr:
    """The exact f32 value of an e8m0 code c (the OCP MX scale): 2^(c − 127), NaN for 0xFF.

    c << 23 is the f32 2^(c − 127) for 1 ≤ c ≤ 254. Two codes need bit 22 as well:
    c = 0 (2^-127, the f32 subnormal 0x00400000, which an unsigned max with c << 23
    gives, every other c << 23 being larger) and c = 0xFF (c << 23 is +inf; with bit 22
    it is the quiet NaN 0x7FC00000, numpy's NaN). (c + 1) << 14 has bit 22 set exactly
    for c = 0xFF (c + 1 = 0x100), so one `lop3` ORs it in: five instructions, no branch.
    `decode_scalar` converts the f32 to f16/bf16 with one `Cvt` (RNE, overflow to ±inf,
    NaN to the canonical NaN: the cast policy; bf16 holds every e8m0 value exactly).
    Tested on every code, to every target (tests/test_e8m0.py).

    `finite_to_f16` (no NaN code, the value bound for f16): c << 23 alone, one
    instruction; c = 0 gives +0 there, which f16 rounds 2^-127 to as well."""
    let = emit.let
    if finite_to_f16:
        return t.Bitcast(let(t.Binary("shl", code, u32(23)), "p"), F32)
    power = let(t.Binary("max", t.Binary("shl", code, u32(23)), u32(0x00400000)), "p")
    nan_bit = let(t.Binary("shl", t.Binary("add", code, u32(1)), u32(14)), "n")
    bits = let(t.Lop3(power, nan_bit, u32(0x00400000), OR_AND), "v")
    return t.Bitcast(bits, F32)


def _small_float_value(emit: Emit, code: t.Expr, src: FloatType) -> t.Expr:
    """The exact f32 value of an ExMy code (1+E+M ≤ 8), specials included."""
    e_bits, m_bits, b = src.exponent_bits, src.mantissa_bits, src.bits
    let = emit.let
    exponent = let(t.Binary("and", t.Binary("shr", code, u32(m_bits)), u32((1 << e_bits) - 1)), "e")
    mantissa = let(t.Binary("and", code, u32((1 << m_bits) - 1)), "m")
    normal = let(t.Binary("ne", exponent, u32(0)), "n")
    # value = significand · 2^(max(e, 1) - bias - M), both factors exact f32 values.
    significand = t.Binary("or", mantissa, t.Select(normal, u32(1 << m_bits), u32(0)))
    biased = t.Binary("add", t.Binary("max", exponent, u32(1)), u32(127 - src.bias - m_bits))
    power = t.Bitcast(t.Binary("shl", biased, u32(23)), F32)
    magnitude = t.Binary("mul", t.Cvt(let(significand, "s"), F32), let(power, "p"))
    sign = let(t.Binary("shl", t.Binary("shr", code, u32(b - 1)), u32(31)), "sgn")
    bits = let(t.Binary("or", t.Bitcast(let(magnitude, "v"), U32), sign), "v")
    threshold = special_threshold(src)
    if threshold is not None:
        magnitude_code = t.Binary("and", code, u32((1 << (b - 1)) - 1))
        special = t.Binary("ge", magnitude_code, u32(threshold))
        # Exponent all ones and the mantissa kept: ±inf, or NaN (its mantissa is nonzero).
        payload = t.Binary("shl", mantissa, u32(23 - m_bits))
        inf_or_nan = t.Binary("or", t.Binary("or", sign, u32(0x7F800000)), payload)
        bits = let(t.Select(let(special, "sp"), inf_or_nan, bits), "v")
    return t.Bitcast(bits, F32)
