"""Recipe 8 of the dequantization recipes (`tilelang.lowering.dequant`): 6- and 8-bit
floats with M ≥ 3 to f16, a word of four codes at a time, and the two pieces it shares
with the recipes there (recipe 4's bias product, recipe 7's byte partners).

**6- and 8-bit floats with M ≥ 3 -> f16, a word at a time** (`_half_bytes`;
f8e4m3 where recipe 6 is not available: sm_80/sm_86 and the CPU; f6e2m3 and f6e1m4
where recipe 7 is not; f8e3m4, f8e2m5, f8e1m6 everywhere). Recipe 4's half is
sign << 15 | magnitude << (10 − M): its upper byte is [sign, zeros, magnitude >> s]
and its lower byte [the magnitude's last s bits, zeros], s = M − 2. With four codes
on the tops of the bytes of one word x (8-bit codes: the group's word; 6-bit ones:
gathered by recipe 7's funnel shifts and `prmt`, 8 − b bits earlier), one rotation
right by 8 − b + s brings each byte's magnitude >> s to its bottom and the next
byte's last s bits to its top: one mask keeps the former (one `lop3` adds the signs
of x), another the latter. One `prmt` per pair then takes both bytes of each half,
and one `Pair` mul (recipe 4's product, scales folded alike) gives the value:
4 + 2 × 2 instructions per 4 codes against recipe 4's 2 × 5. f8e4m3's NaN code
S.1111.111, when the caller's facts do not exclude it, also gets bit 6 of its upper
byte (the f16 exponent's top bit: exponent all ones, mantissa not zero, a NaN):
its magnitude + 1 carries into bit 7 of its byte, one shift takes the carry to bit 6
and the mask `lop3` selects it: 3 word instructions per 4 codes instead of recipe
5's 3 per pair. The product of a NaN is a NaN (its payload is the hardware's);
with folded scales the canonical NaN is selected after it, as recipe 5 does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from tilelang import dtypes
from tilelang.dtypes import FloatType
from tilelang.ir import thread as t
from tilelang.lowering.bits import AND_OR, F16, SELECT, halves, pair_word, selector, u32

if TYPE_CHECKING:
    from tilelang.lowering.dequant import _Codes


def bias_product(codes: _Codes, i: int, x: t.Expr, src: FloatType, dst: FloatType) -> t.Expr:
    """Recipe 4's last step: the placed pair x times 2^(bias_t - bias_s), and times the
    scales of elements i, i+1 when the caller folds them (one rounding of value · s)."""
    scale = 2.0 ** (dst.bias - src.bias)
    if scale != 1.0 and codes.scales is not None:  # one product by 2^(bias_t-bias_s)·s
        factor = codes.scales.times(i // 2, pair_word(dst, scale, scale))
        if factor != pair_word(dst, 1.0, 1.0):  # a constant scale 2^(bias_s-bias_t): none
            return codes.let(t.Pair("mul", dst, x, factor), "h")
    elif scale != 1.0:
        return codes.let(t.Pair("mul", dst, x, pair_word(dst, scale, scale)), "h")
    return x


def byte_partner(codes: _Codes, i: int) -> int | None:
    """A later pair i' (elements i', i'+1) whose codes lie d bits after those of the
    pair i, both, with d a whole number of bytes (at most 3): one 32-bit window of the
    bit stream at each code of pair i then holds a code of pair i' too (recipe 7)."""
    elements = 32 // math.gcd(codes.bits, 32)  # of the group
    for j in range(i + 2, elements, 2):
        if j in codes.later:
            continue
        d = codes.at(j) - codes.at(i)
        if d == codes.at(j + 1) - codes.at(i + 1) and d % 8 == 0 and 0 < d <= 24:
            return j
    return None


def by_half_bytes(src: FloatType, dst: FloatType) -> bool:
    """Whether recipe 8 converts `src` to `dst`: 6- and 8-bit floats with at least three
    mantissa bits (fewer fit the upper byte of a half: recipes 4 and 7) that f16 holds
    (E ≤ 4), finite-only, or f8e4m3 whose NaN the recipe marks itself."""
    if dst != F16 or src.bits not in (6, 8) or src.mantissa_bits < 3 or src.exponent_bits > 4:
        return False
    return src.specials == "none" or src == dtypes.f8e4m3


def _half_bytes(codes: _Codes, x: t.Expr, src: FloatType, nan: bool) -> tuple[t.Expr, t.Expr]:
    """Recipe 8 on one word x of four codes, each at the top of a byte (sign on bit 7,
    junk below the code): (upper, lower), where byte j of upper is the upper byte of
    code j's f16 half before the bias product ([sign, zeros, magnitude >> s]) and byte
    (j − 1) mod 4 of lower its lower byte (the magnitude's last s bits on top, zeros
    below), s = M − 2: the half is sign | magnitude << (10 − M), recipe 4's placement.
    One rotation right by 8 − b + s brings both: each byte's magnitude >> s to its
    bottom and the next byte's last s magnitude bits to its top. `nan` (f8e4m3 only):
    the NaN code S.1111.111 also gets bit 6 of its upper byte, the top bit of the f16
    exponent field, which makes the half a NaN (exponent all ones, mantissa not zero):
    the magnitude + 1 carries into bit 7 of its byte exactly for it, a shift moves
    that carry to bit 6."""
    b, s = src.bits, src.mantissa_bits - 2
    rho = 8 - b + s
    rotation = t.Binary("or", t.Binary("shr", x, u32(rho)), t.Binary("shl", x, u32(32 - rho)))
    rotated = codes.let(rotation)  # one funnel shift
    lower = codes.let(t.Binary("and", rotated, u32((((1 << s) - 1) << (8 - s)) * 0x01010101)))
    if not nan:
        # A lop3, not an `and`: the mask leaves out the bits the rotation wraps around,
        # and an `and` would let the compiler turn the rotation into a second shift.
        mask = u32(((1 << (b - 1 - s)) - 1) * 0x01010101)
        kept = codes.let(t.Lop3(rotated, mask, u32(0), AND_OR))
        return codes.let(t.Lop3(x, u32(0x80808080), kept, AND_OR)), lower
    assert src == dtypes.f8e4m3
    magnitudes = codes.let(t.Binary("and", x, u32(0x7F7F7F7F)))
    carries = codes.let(t.Binary("add", magnitudes, u32(0x01010101)))
    flags = codes.let(t.Binary("shr", carries, u32(1)))
    kept = codes.let(t.Lop3(rotated, u32(0x40404040), flags, SELECT))
    return codes.let(t.Lop3(kept, u32(0x80808080), x, SELECT)), lower


def _half_pair(codes: _Codes, upper: t.Expr, lower: t.Expr, lo: int, hi: int) -> t.Expr:
    """One `prmt`: the halves of the codes in bytes lo and hi of `_half_bytes`' word."""
    which = selector((lo - 1) % 4, 4 + lo, (hi - 1) % 4, 4 + hi)
    return codes.let(t.Prmt(lower, upper, which))


def word_halves(codes: _Codes, i: int, src: FloatType, dst: FloatType) -> t.Expr | None:
    """Recipe 8 for 8-bit floats (the group is one word, whose bytes are the codes):
    elements i, i+1 as f16, NaN as NaN unless the caller's facts say every code is
    finite; None where recipe 8 does not apply. With folded scales a NaN code gives the
    canonical NaN, as recipe 5 makes it (the product's NaN on a GPU): its byte's
    magnitude + 1 carries into bit 7, one `prmt` replicates that bit over the half and
    one `lop3` selects the canonical NaN there."""
    if src.bits != 8 or not by_half_bytes(src, dst):
        return None
    word = codes.word(0)
    nan = not codes.finite and src.specials == "fn"
    canonical = nan and codes.scales is not None
    upper, lower = _half_bytes(codes, word, src, nan and not canonical)
    lo, hi = codes.at(i) // 8, codes.at(i + 1) // 8
    x = bias_product(codes, i, _half_pair(codes, upper, lower, lo, hi), src, dst)
    if not canonical:
        return x
    magnitudes = codes.let(t.Binary("and", word, u32(0x7F7F7F7F)))
    carries = codes.let(t.Binary("add", magnitudes, u32(0x01010101)))
    special = codes.let(t.Prmt(carries, u32(0), selector(lo | 8, lo | 8, hi | 8, hi | 8)))
    return codes.let(t.Lop3(x, special, u32(halves(int(dst.nan_code))), SELECT), "h")


def byte_halves(codes: _Codes, i: int, src: FloatType, dst: FloatType) -> t.Expr:
    """Recipe 8 for 6-bit floats: pairs i and its `_byte_partner` j, as recipe 7 gathers
    them, but each code at the top of its byte (the bit stream from 8 − b bits before
    it), then `_half_bytes`, one `prmt` and the bias product per pair."""
    j = byte_partner(codes, i)
    assert j is not None
    k = (codes.at(j) - codes.at(i)) // 8
    low, high = (
        _top_stream(codes, codes.at(i), 8 * k + 8),
        _top_stream(codes, codes.at(i + 1), 8 * k + 8),
    )
    four = codes.let(t.Prmt(low, high, selector(0, 4, k, 4 + k)))  # elements i, i+1, j, j+1
    upper, lower = _half_bytes(codes, four, src, nan=False)
    first = bias_product(codes, i, _half_pair(codes, upper, lower, 0, 1), src, dst)
    codes.later[j] = bias_product(codes, j, _half_pair(codes, upper, lower, 2, 3), src, dst)
    return first


def _top_stream(codes: _Codes, p: int, bits: int) -> t.Expr:
    """A word whose bits [0, `bits`) are the bit stream from bit p − (8 − b): the code at
    p on the top of byte 0 (a left shift of the first word when p < 8 − b)."""
    lead = 8 - codes.bits
    if p >= lead:
        return codes.stream(p - lead, bits)
    assert p + bits - lead <= 32
    return codes.shifted(0, lead - p)
