"""Bit-level pieces the code conversions share (`dequant`, `scalar_decode`, `encode`):
the `Emit` protocol through which they build thread IR, register dtype shorthands, u32
immediates, `lop3` truth tables and `prmt` selectors, and which code types they take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tilelang import dtypes
from tilelang.dtypes import DType, ExponentType, FloatType, IntType
from tilelang.ir import thread as t

U16, U32, I32, I64 = dtypes.u16, dtypes.u32, dtypes.i32, dtypes.i64
F16, BF16, F32, F64 = dtypes.f16, dtypes.bf16, dtypes.f32, dtypes.f64


class Emit(Protocol):
    """What the recipes need from their caller. A caller may also carry `target` (a
    `tilelang.target.Target`, as the lowering does): the recipes then use the target's
    own conversions where it has them (`native_f8_pairs`); without one, the arithmetic
    recipes, which every backend runs."""

    def let(self, value: t.Expr, hint: str = "t") -> t.Expr:
        """Emit `Let(fresh_name, value)` and return the name (a caller may return
        constants and names as they are)."""
        ...


def lut(f: Callable[[int, int, int], int]) -> int:
    """The `lop3` lookup table of the bitwise function f(a, b, c)."""
    return sum(
        1 << (4 * a + 2 * b + c) for a in (0, 1) for b in (0, 1) for c in (0, 1) if f(a, b, c)
    )


AND_OR = lut(lambda a, b, c: (a & b) | c)
OR_AND = lut(lambda a, b, c: a | (b & c))
MASK_FLIP_OR = lut(lambda a, b, c: (a ^ c) if b else c)
"""b ? a ^ c : c: keep the code bits (b), flip the sign bit among them (c), and put the
magic exponent (c) everywhere else."""

SELECT = lut(lambda a, b, c: c if b else a)
"""b ? c : a, per bit."""
SIGNS16 = 0x80008000
REPLICATE_HALF_SIGNS = 0xBB99
"""`prmt` selector: both bytes of each half become copies of that half's sign bit."""
REPLICATE_WORD_SIGN = 0xBBBB


def u32(value: int) -> t.Imm:
    """A u32 immediate (two's complement for negative values)."""
    return t.Imm(value & 0xFFFFFFFF, U32)


def check_code_type(src: DType, limit: int) -> None:
    if not isinstance(src, IntType | FloatType | ExponentType) or src.bits > limit:
        raise ValueError(f"codes of {src} are not supported here (at most {limit} bits)")


def special_threshold(src: FloatType) -> int | None:
    """The smallest magnitude code (exponent|mantissa) that is inf or NaN, if any."""
    if src.specials == "fn":
        return (1 << (src.bits - 1)) - 1
    if src.specials == "ieee":
        return ((1 << src.exponent_bits) - 1) << src.mantissa_bits
    return None


def halves(value: int) -> int:
    """A 16-bit pattern in both halves of a word."""
    return value | (value << 16)


def selector(*nibbles: int) -> t.Imm:
    """`prmt` selector from the source byte of result bytes 0, 1, 2, 3."""
    return u32(sum(n << (4 * i) for i, n in enumerate(nibbles)))


def pair_word(elem: FloatType, low: float, high: float) -> t.Imm:
    """Two f16/bf16 constants as one u32 word (exact: callers pass representable values)."""
    codes = elem.encode([low, high]).astype(int)
    assert all(float(v) == x for v, x in zip(elem.decode(codes), (low, high), strict=True))
    return u32(int(codes[0]) | int(codes[1]) << 16)
