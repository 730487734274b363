"""Conversion recipes between low-bit codes and wider values, as thread-IR expressions.

The lowering (`tilelang.lowering`) calls this module for every cast from or to a
low-bit type (docs/design.md §6, "Dequantization recipes"). Every function here only builds
expressions: it hands each intermediate value to `Emit.let`, which emits
`Let(fresh_name, value)` and returns the name, and returns the final expressions.

Entry points
------------
* `group(src)`: the smallest run of codes that fills whole u32 words, as
  (elements, words): u4 -> (8, 1), u3 -> (32, 3), f6e3m2 -> (16, 3), u8 -> (4, 1).
* `dequantize_group(emit, words, src, dst)`: one group of packed codes (its u32 words)
  -> the values as u32 words, two per word for f16/bf16 (element 2j in the low half of
  word j), one per word for f32 (its bits); the flag says whether a vector recipe
  (True) or the scalar fallback (False) did it. `has_vector_recipe(src, dst)` tells
  which beforehand. With `scales`, a group scale folds into the last step
  (`scale_factors`; when that is exact: `tilelang.lowering.scale_folds`).
* `decode_scalar(emit, code, src, dst)` (`tilelang.lowering.scalar_decode`): the
  scalar fallback, one code (a u32 holding it in its low bits, zero above) -> a value
  of `dst`.
* `encode_scalar(emit, value, dst)` (`tilelang.lowering.encode`): one value -> a u32
  holding the code of `dst`.

All of them follow the casting policy of `tilelang.dtypes` bit for bit: a decoded value
is `dtypes.convert(code, src, dst)`, an encoded code is `dst.encode(value)`.

Packed codes
------------
Element i of a group of b-bit codes occupies bits [p·b, (p+1)·b) of the group's
little-endian bytes, p = i or `positions[i]` (a register tile whose codes are stored
paired across word halves, `tilelang.ir.fragments.paired_codes`): in u32 words, bit
(p·b) mod 32 of word (p·b) // 32 and up, across two words when 32 is not a multiple of
b. Codes are brought into place three ways
(`_Codes`; every intermediate word is emitted once per group and shared):

* `placed(i, d)`: element i's bits moved to bits [d, d+b) of a word by one shift of
  its word (a straddling code: a right shift of one word ORed with a left shift of
  the next); the other bits are junk. Used per element (f32 targets, scalar path).
* `pair(i, top)`: one `prmt` that puts element i in the low half and element i+1 in
  the high half of a word, each at the bottom of its half (bits [0, b)) or at its top
  (bits [16-b, 16), the code's sign bit on bit 15). The bytes come from the bit stream
  shifted by the code's offset from a byte boundary (`byte_of`): such shifted words
  are shared by every code at that offset, e.g. u4 needs the words and the words >> 4.
* `window(i)`: one `prmt` copying the two bytes that hold element i into the low half
  and those that hold element i+1 into the high half, unshifted: each code then sits
  at bit r = (p·b) mod 8 of its half, which recipe 1 absorbs into its constants. When
  the two codes already sit in the two halves of one word at the same place (paired
  codes), the window is that word: no `prmt`.

Vector recipes
--------------
Each recipe computes two f16/bf16 elements per u32 word (`Pair` operations round once,
per half) or one f32 element per word. Why each is exact:

1. **Integers -> f16** (b ≤ 8) and **-> bf16** (b ≤ 7): with T = 10 (f16) or 7 (bf16)
   mantissa bits, the half-word 2^T | c (0x6400 | c for f16, 0x4300 | c for bf16) is
   the float 2^T + c for every c < 2^T, so subtracting 2^T gives c exactly. One `lop3`
   masks the code and ORs the magic exponent in; signed codes are XORed with their sign
   bit in the same `lop3` (two's complement -> offset binary, c' = c + 2^(b-1)) and the
   `Pair` subtracts 2^T + 2^(b-1) instead. When both codes of a `window` lie at bit
   offsets r with r + b ≤ T (after at most one common right shift), each half takes the
   magic exponent of 2^(T-r) instead, under which bit r is worth 1: the half is
   2^(T-r) + c', and one `Pair` sub with per-half immediates (2^(T-r) + 2^(b-1)) gives c
   exactly — no multiplication, so no constant that must live in a register: three
   instructions per two codes (every pair of u1..u5 -> f16 and u1, u2 -> bf16; most
   pairs of u6, u7 -> f16 and u3 -> bf16), two when the codes are paired (4-bit codes:
   the windows of two pairs are the word and one funnel `prmt` of it, 9 instructions
   per 8 codes). Other pairs come
   from `pair(i, top=False)` (codes at bit 0, one `Pair` sub). 8-bit codes to f16 take
   one `prmt` that also puts the magic byte 0x64 above each code (signed: the source
   words are XORed with 0x80808080 first, once per four codes) and one `Pair` sub.
2. **8-bit integers -> bf16**: 128 + c is not a bf16 for c ≥ 128 (8 significant bits),
   so each code goes through f32 (recipe 3) and a `prmt` keeps the upper halves of two
   f32 words: every 8-bit integer has at most 8 significant bits, so its f32 bits end
   in 16 zero bits and the upper half is the same value as a bf16.
3. **Integers -> f32**: 0x4B000000 | c' is the f32 2^23 + c' (exact for c' < 2^23); one
   f32 sub of 2^23 + offset gives c. 8-bit codes use one `prmt` that also inserts the
   0x4B byte.
4. **Small floats (any ExMy and the f8 types) -> f16** (E ≤ 4, and f8e5m2), **-> bf16**
   (every ExMy) and **-> f32** (every ExMy): the code is placed with its sign on the
   target's sign bit (`pair(i, top=True)`, or bit 31 for f32), its exponent|mantissa bits
   are masked and shifted right so that the source mantissa lands on the top of the
   target mantissa (shift 5-E for f16, 8-E for bf16 and f32), and one `lop3` joins sign
   and magnitude. The result is the target float with exponent field e and mantissa m
   of the source, i.e. 2^(e - bias_t)·1.m (e ≥ 1) or 2^(1 - bias_t)·0.m (e = 0, a
   subnormal of the target): the source value times 2^(bias_s - bias_t). One `Pair`
   mul (an f32 mul for f32) by 2^(bias_t - bias_s) gives the value exactly: scaling by
   a power of two is exact whenever the result is representable, subnormal results
   included, and every value of these sources is representable in these targets
   (f16 holds every ExMy with E ≤ 4, and f8e5m2). The intermediate exponent field
   e < 2^E never reaches the target's all-ones field. f8e5m2 -> f16 is the special case
   bias_s = bias_t: the code is the f16's upper byte, one `prmt` per two elements, and
   inf/NaN come out as inf/NaN by themselves.
5. **Special values**, handled inside the vector recipes: f8e4m3 S.1111.111 (NaN) and
   f8e5m2 S.11111.mm (inf for mm = 0, NaN otherwise) would come out of recipe 4 as the
   finite 2^(emax+1-bias_s)·1.m. The magnitude field plus (2^(E+M) - first special
   code) carries into the sign position exactly for the special codes; a `prmt` in
   sign-replicate mode turns that carry into an all-ones half (or word), and a `lop3`
   ORs the target's exponent mask in where it is set: exponent all ones with the
   mantissa kept, i.e. ±inf for f8e5m2 inf and NaN for every NaN code (its mantissa is
   nonzero). Finite-only types (every other ExMy) have no special codes.
6. **f8e4m3 -> f16 on sm_89 and later** (`native_f8_pairs`; the caller's `Emit` carries
   the target): `cvt.rn.f16x2.e4m3x2` (`t.F8Pair`) converts the two codes of a 16-bit
   half exactly, NaN to NaN; codes not already side by side in a half are gathered by
   one `prmt`. A folded scale is one `Pair` mul of the exact value by s: round(v·s)
   once, as the folded recipe 4 rounds it, so both give the same bits (NaN payloads
   aside), and no special-value step is needed. ptxas reads either half of a register
   in the conversion (F2FP.F16.E4M3.UNPACK_B R, R.H1): one instruction per pair. The
   CPU target and sm_80/sm_86 keep recipes 4 and 5; the LLVM backend implements
   `F8Pair` too, so a GPU lowering runs on the CPU (tests/test_f8_conversion.py).
   A constant scale that is no f16 itself (only C·c is) keeps recipe 4.
7. **6-bit floats -> f16 through f8 bytes** (`_byte_pairs`): a byte [sign, zeros,
   exponent|mantissa] of an ExMy code is an f8 code of its value times
   2^(bias_s − bias_f8) — f8e5m2 for M = 2 (an f16's upper byte: one `prmt` per pair,
   every target), f8e4m3 for M = 3 (`F8Pair`, sm_89 and later) — exactly, subnormals
   included, and never inf or NaN (the exponent field stays below the f8 type's).
   Two pairs whose codes lie the same whole number of bytes apart (6-bit codes in
   stream order: pairs j and j+2, 24 bits) share the work: a funnel shift of the bit
   stream at each code of the first pair holds both pairs' codes at the bottom of a
   byte, one `prmt` gathers the four, shl/and/lop3 make the four f8 bytes, and each
   pair is one conversion and one `Pair` mul by 2^(bias_f8 − bias_s) (times the folded
   scales: value · s rounded once, as recipe 4). Per 16 codes on sm_90: 7 funnel
   shifts, 4 × 4 and 8 × 2 instructions against recipe 4's 12 shifted words and
   8 × 5. Codes of 5 and 7 bits never lie a whole number of bytes apart within 24
   bits, so they keep recipe 4; f6e2m3 before sm_89 takes recipe 8.
8. **6- and 8-bit floats with M ≥ 3 -> f16, a word at a time**: `tilelang.lowering.f16_bytes`.

Scalar fallback: `tilelang.lowering.scalar_decode`. Encoding: `tilelang.lowering.encode`.

Which path each (src, dst) takes
--------------------------------
========================================  =====  =====  =====
src                                        f16    bf16   f32
========================================  =====  =====  =====
u1..u8, i1..i8                             vec    vec    vec
f8e4m3 (NaN fixed in the recipe;           vec    vec    vec
  recipe 6 to f16 on sm_89+, 8 before)
f8e5m2 (inf/NaN fixed in the recipe)       vec    vec    vec
ExMy, E ≤ 4 (f4e2m1, f6e2m3, f6e3m2, ...)  vec    vec    vec
  (recipe 7 to f16: f6e3m2, f6e2m3 on sm_89+;
  recipe 8: f6e2m3 before sm_89, f6e1m4,
  f8e3m4, f8e2m5, f8e1m6)
ExMy, E ≥ 5 (f7e5m1, f8e6m1, f8e7m0, ...)  scalar vec    vec
codes of 9..16 bits (u12, i16, f16, ...)   scalar scalar scalar
e8m0 (the MX scale, `_e8m0_value`)        scalar scalar scalar
========================================  =====  =====  =====
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

from tilelang import dtypes
from tilelang.dtypes import DType, FloatType, IntType
from tilelang.ir import thread as t
from tilelang.lowering.bits import (
    AND_OR,
    BF16,
    F16,
    F32,
    MASK_FLIP_OR,
    OR_AND,
    REPLICATE_HALF_SIGNS,
    REPLICATE_WORD_SIGN,
    SELECT,
    SIGNS16,
    U16,
    U32,
    Emit,
    check_code_type,
    halves,
    pair_word,
    selector,
    special_threshold,
    u32,
)
from tilelang.lowering.f16_bytes import (
    bias_product,
    by_half_bytes,
    byte_halves,
    byte_partner,
    word_halves,
)
from tilelang.lowering.scalar_decode import decode_scalar

TARGETS = (F16, BF16, F32)
"""The dtypes `dequantize_group` produces."""


# --------------------------------------------------------------------------- bit helpers


# --------------------------------------------------------------------------- groups


def group(src: DType) -> tuple[int, int]:
    """(elements, u32 words) of the smallest run of `src` codes that fills whole words."""
    check_code_type(src, 16)
    common = math.gcd(src.bits, 32)
    return 32 // common, src.bits // common


def has_vector_recipe(src: DType, dst: DType) -> bool:
    """Whether `dequantize_group` converts `src` to `dst` with a vector recipe."""
    if dst not in TARGETS or not isinstance(src, IntType | FloatType) or src.bits > 8:
        return False
    if isinstance(src, FloatType) and dst == F16:
        return src.exponent_bits <= 4 or src == dtypes.f8e5m2
    return True


def dequantize_group(
    emit: Emit,
    words: Sequence[t.Expr],
    src: DType,
    dst: DType,
    positions: Sequence[int] | None = None,
    minus: Callable[[int, t.Imm], t.Expr] | None = None,
    scales: Scales | None = None,
    finite: bool = False,
) -> tuple[list[t.Expr], bool]:
    """Convert one group of packed `src` codes (its u32 `words`, see `group`) to `dst`.

    `positions[e]`: where element e's code sits in the group's bit stream (in codes;
    the identity when None). `minus` (integer codes to f16/bf16 only, see
    `folds_zero_points`): ``minus(j, constant)`` is the f16x2/bf16x2 word the recipe
    subtracts from output word j in place of its `constant` (the magic and offset): the
    caller adds its zero points to the constant, once per distinct pair of them.
    `scales` (`Scales`; when it is exact: `tilelang.lowering.scale_folds`): the values
    are multiplied by the caller's scales, rounded once, the scale folded into the
    recipe's last step. `finite`: no code is inf or NaN (the caller's value facts say
    so: `analysis.value_bounds`), so the recipes leave out their special-value steps.
    Returns the values as u32 words (two per word for f16/bf16,
    element 2j in the low half of word j; one per word for f32) and True when a vector
    recipe did it, False for the scalar fallback.
    """
    elements, count = group(src)
    if positions is not None and sorted(positions) != list(range(elements)):
        raise ValueError(f"positions must permute the {elements} codes of a group, got {positions}")
    if dst not in TARGETS:
        raise ValueError(f"dequantize_group converts to f16, bf16 or f32, not {dst}")
    if len(words) != count or any(w.dtype != U32 for w in words):
        raise ValueError(f"a group of {src} codes is {count} u32 words, got {list(words)}")
    codes = _Codes(emit, words, src.bits, positions)
    if minus is not None:
        if not folds_zero_points(src, dst, 0):
            raise ValueError(f"no zero point folds into the recipe from {src} to {dst}")
        codes.minus = minus
    if scales is not None:
        if minus is not None or not scale_factors(src, dst):
            raise ValueError(f"no scale folds into the recipe from {src} to {dst}")
        codes.scales = scales
    codes.finite = finite
    codes.native = native_f8_pairs(getattr(emit, "target", None))
    if not has_vector_recipe(src, dst):
        return _scalar_group(codes, elements, src, dst), False
    if isinstance(src, IntType):
        recipe = {F16: _int_to_half, BF16: _int_to_half, F32: _int_to_f32}[dst]
        if dst == BF16 and src.bits == 8:
            recipe = _int8_to_bf16
    else:
        recipe = _float_to_f32 if dst == F32 else _float_to_half
    per_word = 32 // dst.bits
    return [recipe(codes, i, src, dst) for i in range(0, elements, per_word)], True


def folds_zero_points(src: DType, dst: DType, largest: int) -> bool:
    """Whether `dequantize_group(..., minus=...)` takes zero points of magnitude up to
    `largest` from `src` codes to `dst` exactly: integer codes with a vector recipe to
    f16/bf16 (their last step subtracts the magic 2^(T-r) plus the signed offset), and
    a magic plus zero point that `dst` holds exactly, so that subtracting their sum
    equals subtracting one, then the other (every value is then a small integer)."""
    if not isinstance(src, IntType) or dst not in (F16, BF16) or not has_vector_recipe(src, dst):
        return False
    if dst == BF16 and src.bits == 8:  # recipe 2 goes through f32
        return False
    exact = 2 ** (dst.mantissa_bits + 1)  # every integer up to this is a dst value
    return 2**dst.mantissa_bits + _offset(src) + largest <= exact


class Scales(Protocol):
    """The scales a caller folds into a recipe's last step (`scale_folds`), as
    f16x2/bf16x2 words for output word j (elements 2j, 2j+1)."""

    def word(self, j: int) -> t.Expr:
        """The scales of output word j."""
        ...

    def times(self, j: int, constant: t.Imm) -> t.Expr:
        """The per-half products `constant` · scales of output word j (exact: the
        caller's facts say so), made once per distinct pair of scales and constant."""
        ...


def scale_factors(src: DType, dst: DType) -> list[float]:
    """The constants a recipe from `src` to `dst` multiplies scales by when it folds
    them (`Scales.times`): minus the magics 2^(T-r) of unsigned integers (every r the
    recipes use: bits r ≥ 0 of a half), or the small floats' 2^(bias_t - bias_s);
    empty when the recipe has no constant to fold a scale into."""
    if not has_vector_recipe(src, dst) or dst not in (F16, BF16):
        return []
    if isinstance(src, IntType):
        if src.signed or (dst == BF16 and src.bits == 8):
            return []
        return [-(2.0 ** (dst.mantissa_bits - r)) for r in range(dst.mantissa_bits - src.bits + 1)]
    if src.specials == "ieee" or src.bias == dst.bias:  # inf·s depends on s = 0: no fold
        return []
    return [2.0 ** (dst.bias - src.bias)]


class _Codes:
    """The packed codes of one group; builds (and shares) the words that hold them."""

    def __init__(
        self, emit: Emit, words: Sequence[t.Expr], bits: int, positions: Sequence[int] | None
    ) -> None:
        self.emit, self.words, self.bits = emit, list(words), bits
        self.positions = None if positions is None else list(positions)
        self.minus: Callable[[int, t.Imm], t.Expr] | None = None  # see dequantize_group
        self.scales: Scales | None = None  # see dequantize_group
        self.finite = False  # see dequantize_group
        self.native = False  # the target converts f8 pairs itself (`native_f8_pairs`)
        self.later: dict[int, t.Expr] = {}  # pairs converted with an earlier one (recipe 7)
        self.memo: dict[t.Expr, t.Expr] = {}

    def at(self, i: int) -> int:
        """The first bit of element i's code in the group's bit stream."""
        return (i if self.positions is None else self.positions[i]) * self.bits

    def let(self, value: t.Expr, hint: str = "q") -> t.Expr:
        """`value` bound once per group (the same expression is reused, not re-emitted)."""
        if value not in self.memo:
            self.memo[value] = self.emit.let(value, hint)
        return self.memo[value]

    def word(self, q: int) -> t.Expr:
        return self.words[q] if q < len(self.words) else u32(0)

    def shifted(self, q: int, s: int) -> t.Expr:
        """Word q shifted left by s bits (right, logically, for negative s)."""
        if s == 0:
            return self.word(q)
        return self.let(t.Binary("shl" if s > 0 else "shr", self.word(q), u32(abs(s))))

    def placed(self, i: int, d: int) -> t.Expr:
        """A word whose bits [d, d+b) are element i's code (other bits: junk)."""
        q, o = divmod(self.at(i), 32)
        low = self.shifted(q, d - o)
        if o + self.bits <= 32:
            return low
        # The code straddles words q and q+1: its low part shifted down (zeros above),
        # its high part shifted up (zeros below), ORed.
        return self.let(t.Binary("or", low, self.shifted(q + 1, d - o + 32)))

    def stream(self, p: int, bits: int) -> t.Expr:
        """A word whose bits [0, `bits`) are the group's bit stream from bit p (a shift
        of word p // 32, ORed with a shift of the next where the bits run into it)."""
        q, o = divmod(p, 32)
        low = self.shifted(q, -o)
        if o + bits <= 32:
            return low
        return self.let(t.Binary("or", low, self.shifted(q + 1, 32 - o)))

    def byte_of(self, i: int, top: bool) -> tuple[t.Expr, int]:
        """A word and a byte of it (0..3) that holds element i's code in its low bits
        (`top` False) or in its high bits (`top` True): a byte of the packed bit
        stream shifted right by s, the code's offset from that byte boundary (s < 0,
        a left shift, only for a code in the first byte that must reach its top)."""
        b, p = self.bits, self.at(i)
        s = (p + b - 8) % 8 if top else p % 8
        if s > p:
            s -= 8
        q, byte = divmod((p - s) // 8, 4)
        word = self.shifted(q, -s)
        if s > 0 and p + b > 32 * (q + 1):
            # The code straddles words q and q+1: OR in the bits the shift brings
            # down from word q+1 (a left shift never needs any: it only serves byte 0).
            word = self.let(t.Binary("or", word, self.shifted(q + 1, 32 - s)))
        return word, byte

    def pair(self, i: int, top: bool) -> tuple[t.Expr, bool]:
        """One `prmt`: a word whose low half holds element i and whose high half holds
        element i+1, each code at the bottom (bits [0, b)) or at the top (bits
        [16-b, 16)) of its half; and whether the word's other bits are zero."""
        (lo, byte_lo), (hi, byte_hi) = self.byte_of(i, top), self.byte_of(i + 1, top)
        if lo == hi:  # one source word: the other half-byte can come from a zero word
            sel = (4, byte_lo, 4, byte_hi) if top else (byte_lo, 4, byte_hi, 4)
            return self.let(t.Prmt(lo, u32(0), selector(*sel))), True
        sel = (byte_lo, byte_lo, 4 + byte_hi, 4 + byte_hi)
        return self.let(t.Prmt(lo, hi, selector(*sel))), False

    def window_offsets(self, i: int) -> tuple[int, int]:
        """Where `window(i)` puts the codes: their bit offsets in their halves."""
        return self.at(i) % 8, self.at(i + 1) % 8

    def window(self, i: int) -> t.Expr | None:
        """One `prmt`: the two bytes holding element i into the low half, those holding
        element i+1 into the high half (see `window_offsets`); None when they do not lie
        within two consecutive words (codes stored far apart)."""
        byte_lo, byte_hi = self.at(i) // 8, self.at(i + 1) // 8
        q = byte_lo // 4
        base = 4 * q  # the selected bytes lie within words q, q+1 (bytes 0..5 of them)
        sel = (byte_lo - base, byte_lo + 1 - base, byte_hi - base, byte_hi + 1 - base)
        if not all(0 <= s < 8 for s in sel):
            return None
        if sel == (0, 1, 2, 3):  # the word already is the window (codes paired across halves)
            return self.word(q)
        # A byte past the group is selected only when its code does not reach it.
        return self.let(t.Prmt(self.word(q), self.word(q + 1), selector(*sel)))

    def xored(self, q: int, mask: int) -> t.Expr:
        return self.let(t.Binary("xor", self.word(q), u32(mask)))


def _offset(src: IntType) -> int:
    """What offset binary adds to a signed code (0 for unsigned)."""
    return 1 << (src.bits - 1) if src.signed else 0


def _code_bits(src: IntType, at: int) -> tuple[int, int]:
    """(mask of the code's bits, mask of its sign bit to flip) for a code at bit `at`."""
    mask = ((1 << src.bits) - 1) << at
    return mask, (_offset(src) << at)


# --------------------------------------------------------------------------- recipes 1-3


def _int_to_half(codes: _Codes, i: int, src: IntType, dst: FloatType) -> t.Expr:
    """Recipe 1: elements i, i+1 as f16/bf16 through the magic 2^T (T mantissa bits)."""
    b, bits_t = src.bits, dst.mantissa_bits
    magic = int(dst.encode(2.0**bits_t))  # 0x6400 for f16, 0x4300 for bf16
    offset = _offset(src)
    (q, byte), (q_hi, byte_hi) = divmod(codes.at(i) // 8, 4), divmod(codes.at(i + 1) // 8, 4)
    if b == 8 and q == q_hi:  # one prmt puts the magic byte above each code
        word = codes.xored(q, 0x80808080) if src.signed else codes.word(q)
        placed = t.Prmt(word, u32(magic >> 8), selector(byte, 4, byte_hi, 4))
        x = codes.let(placed)
        return _pair_sub(codes, i, x, dst, 2.0**bits_t + offset)
    r_lo, r_hi = codes.window_offsets(i)
    shift = 0 if max(r_lo, r_hi) + b <= bits_t else min(r_lo, r_hi)
    window = codes.window(i) if max(r_lo, r_hi) - shift + b <= bits_t else None
    if window is not None:
        x = codes.let(t.Binary("shr", window, u32(shift))) if shift else window
        r_lo, r_hi = r_lo - shift, r_hi - shift
        mask_lo, flip_lo = _code_bits(src, r_lo)
        mask_hi, flip_hi = _code_bits(src, 16 + r_hi)
        # A code at bit r of a half under the exponent of 2^(T-r) makes the half
        # 2^(T-r) + c' (bit r is worth 1): one sub of (2^(T-r) + offset) per half gives c.
        magics = (
            int(dst.encode(2.0 ** (bits_t - r_lo))) | int(dst.encode(2.0 ** (bits_t - r_hi))) << 16
        )
        y = codes.let(
            t.Lop3(x, u32(mask_lo | mask_hi), u32(magics | flip_lo | flip_hi), MASK_FLIP_OR)
        )
        low, high = 2.0 ** (bits_t - r_lo) + offset, 2.0 ** (bits_t - r_hi) + offset
        return _pair_sub(codes, i, y, dst, low, high)
    x, _ = codes.pair(i, top=False)
    mask, flip = _code_bits(src, 0)
    y = codes.let(t.Lop3(x, u32(halves(mask)), u32(halves(magic | flip)), MASK_FLIP_OR))
    return _pair_sub(codes, i, y, dst, 2.0**bits_t + offset)


def _pair_sub(
    codes: _Codes, i: int, x: t.Expr, dst: FloatType, low: float, high: float | None = None
) -> t.Expr:
    """x - (low, high) for output elements i, i+1, and minus the zero points' word when
    the caller folds them in (`folds_zero_points`: both sums are exact)."""
    if codes.scales is not None:  # h·s + (-M·s): c·s rounded once (`scale_folds`)
        negated = pair_word(dst, -low, -(low if high is None else high))
        addend = codes.scales.times(i // 2, negated)
        return codes.let(t.Pair("fma", dst, x, codes.scales.word(i // 2), addend), "h")
    constant = pair_word(dst, low, low if high is None else high)
    if codes.minus is None:
        return codes.let(t.Pair("sub", dst, x, constant), "h")
    return codes.let(t.Pair("sub", dst, x, codes.minus(i // 2, constant)), "h")


def _int_to_f32(codes: _Codes, i: int, src: IntType, dst: FloatType = F32) -> t.Expr:
    """Recipe 3: element i as the bits of an f32, through the magic 2^23."""
    magic = 0x4B000000  # the f32 2^23: its last mantissa bit is worth 1
    if src.bits == 8:  # one prmt inserts the code under the magic byte
        q, byte = divmod(codes.at(i) // 8, 4)
        word = codes.xored(q, 0x80808080) if src.signed else codes.word(q)
        x = codes.let(t.Prmt(word, u32(magic), selector(byte, 4, 4, 7)))
    else:
        mask, flip = _code_bits(src, 0)
        x = codes.let(t.Lop3(codes.placed(i, 0), u32(mask), u32(magic | flip), MASK_FLIP_OR))
    value = t.Binary("sub", t.Bitcast(x, F32), t.Imm(float(2**23 + _offset(src)), F32))
    return codes.let(t.Bitcast(value, U32), "f")


def _int8_to_bf16(codes: _Codes, i: int, src: IntType, dst: FloatType) -> t.Expr:
    """Recipe 2: elements i, i+1 through f32; their upper halves are the bf16 values."""
    low, high = _int_to_f32(codes, i, src), _int_to_f32(codes, i + 1, src)
    return codes.let(t.Prmt(low, high, selector(2, 3, 6, 7)), "h")


# --------------------------------------------------------------------------- recipes 4-5


def native_f8_pairs(target: object) -> bool:
    """Whether `target` (a `tilelang.target.Target`, or None) converts two f8e4m3 codes
    to f16 in one instruction (`cvt.rn.f16x2.e4m3x2`, `t.F8Pair`): sm_89 and later."""
    name = getattr(target, "name", "")
    return name.startswith("sm_") and int(name[3:].rstrip("af")) >= 89


def _f8_pair(codes: _Codes, i: int, dst: FloatType) -> t.Expr:
    """Recipe 6: elements i, i+1 of f8e4m3 as f16 by the target's conversion of a byte
    pair (exact, NaN to NaN), times the scales when the caller folds them: the exact
    value times s, rounded once, as the folded recipe 4 rounds it."""
    (q, byte), (q_hi, byte_hi) = divmod(codes.at(i) // 8, 4), divmod(codes.at(i + 1) // 8, 4)
    if q == q_hi and byte % 2 == 0 and byte_hi == byte + 1:  # a half of the word already
        x = codes.let(t.F8Pair(codes.word(q), dtypes.f8e4m3, byte // 2))
    else:  # one prmt gathers the two bytes into the low half
        high = codes.word(q_hi) if q_hi != q else u32(0)
        second = byte_hi + 4 if q_hi != q else byte_hi
        pair = codes.let(t.Prmt(codes.word(q), high, selector(byte, second, 0, 0)))
        x = codes.let(t.F8Pair(pair, dtypes.f8e4m3, 0))
    if codes.scales is None or codes.scales.word(i // 2) == pair_word(dst, 1.0, 1.0):
        return x
    return codes.let(t.Pair("mul", dst, x, codes.scales.word(i // 2)), "h")


def _scales_exact(codes: _Codes, i: int, src: FloatType, dst: FloatType, factor: float) -> bool:
    """Whether the scales of elements i, i+1 times `factor` (a power of two, at most the
    fold's constant C of `scale_factors`) are exact `dst` values. The scales of a tile
    are `dst` values and C·s is finite (the caller's fact), so every product s·factor
    with factor ≥ 1 is exact; a constant scale c (an immediate word) is only known to
    make C·c a `dst` value (`scale_folds.folds_constant`): factor·c may be none."""
    if codes.scales is None or not isinstance(codes.scales.word(i // 2), t.Imm):
        return True
    (constant,) = scale_factors(src, dst)
    folded = codes.scales.times(i // 2, pair_word(dst, constant, constant))
    product = codes.scales.times(i // 2, pair_word(dst, factor, factor))
    assert isinstance(folded, t.Imm) and isinstance(product, t.Imm)

    def half(w: t.Imm, shift: int) -> float:
        return float(dst.decode((int(w.value) >> shift) & 0xFFFF))

    return all(half(product, s) * constant == half(folded, s) * factor for s in (0, 16))


def _by_target_bytes(codes: _Codes, i: int, src: FloatType, dst: FloatType) -> t.Expr | None:
    """Elements i, i+1 by recipe 6 or 7 where they apply (and the scales allow), or by
    recipe 8 for 6-bit codes where recipe 7 does not; else None: the caller's recipe 4
    (or recipe 8 for 8-bit codes, `_word_halves`)."""
    if i in codes.later:  # converted with an earlier pair (recipes 7 and 8)
        return codes.later.pop(i)
    if codes.native and src == dtypes.f8e4m3 and dst == F16:
        return _f8_pair(codes, i, dst) if _scales_exact(codes, i, src, dst, 1.0) else None
    f8 = _byte_form(src, dst, codes.native)
    if byte_partner(codes, i) is None:
        return None
    if f8 is not None and _scales_exact(codes, i, src, dst, 2.0 ** (f8.bias - src.bias)):
        return _byte_pairs(codes, i, src, dst, f8)
    if src.bits < 8 and by_half_bytes(src, dst):
        return byte_halves(codes, i, src, dst)
    return None


def _float_to_half(codes: _Codes, i: int, src: FloatType, dst: FloatType) -> t.Expr:
    """Recipe 4 (and 5): elements i, i+1 of a small float as f16/bf16 by placement and
    one multiplication by 2^(bias_t - bias_s); recipes 6 and 7 (f8e4m3, and 6-bit
    codes, to f16 through f8 bytes) where they apply."""
    by_bytes = _by_target_bytes(codes, i, src, dst)
    if by_bytes is not None:
        return by_bytes
    b, e_bits = src.bits, src.exponent_bits
    top = 16 - b  # the code's sign lands on bit 15 of its half
    shift = (15 - dst.mantissa_bits) - e_bits  # 5 - E for f16, 8 - E for bf16
    scale = 2.0 ** (dst.bias - src.bias)
    threshold = None if codes.finite else special_threshold(src)
    by_word = word_halves(codes, i, src, dst)
    if by_word is not None:
        return by_word
    x = _nibble_pair(codes, i, src, shift) if threshold is None else None
    magnitude = None
    if x is None:
        q, clean = codes.pair(i, top=True)
        if shift == 0 and scale == 1.0 and clean:
            return q  # f8e5m2 -> f16: the code is the f16's upper byte, inf and NaN included
        magnitude = codes.let(t.Binary("and", q, u32(halves(((1 << (b - 1)) - 1) << top))))
        shifted = codes.let(t.Binary("shr", magnitude, u32(shift))) if shift else magnitude
        x = codes.let(t.Lop3(q, u32(SIGNS16), shifted, AND_OR))
    x = bias_product(codes, i, x, src, dst)
    if threshold is None:
        return x
    assert magnitude is not None
    # Recipe 5: magnitude + (2^(b-1) - threshold) carries into bit 15 exactly for inf/NaN.
    carry = halves(((1 << (b - 1)) - threshold) << top)
    flagged = codes.let(t.Binary("add", magnitude, u32(carry)))
    special = codes.let(t.Prmt(flagged, u32(0), u32(REPLICATE_HALF_SIGNS)))
    if codes.scales is not None and scale != 1.0:
        # Folded: x is already the product with s, which NaN·s makes the canonical NaN.
        return codes.let(t.Lop3(x, special, u32(halves(int(dst.nan_code))), SELECT), "h")
    exponent = halves(((1 << dst.exponent_bits) - 1) << dst.mantissa_bits)
    return codes.let(t.Lop3(x, special, u32(exponent), OR_AND), "h")


def _byte_form(src: FloatType, dst: FloatType, native: bool) -> FloatType | None:
    """The f8 type in which a byte [sign, zeros, exponent|mantissa of a `src` code] is
    that code's value times 2^(bias_s − bias_f8), when the target converts such bytes
    to `dst` pairs in one instruction (recipe 7): f8e5m2 for two mantissa bits (the
    upper byte of an f16: one `prmt`), f8e4m3 for three (`t.F8Pair`, sm_89 and later).
    Codes of 5-7 bits whose exponent field stays below the f8 type's (no inf or NaN
    byte); 4-bit codes have `_nibble_pair`, 8-bit ones are f8 types themselves."""
    if dst != F16 or src.specials != "none" or not 5 <= src.bits <= 7:
        return None
    if src.mantissa_bits == 2 and src.exponent_bits < 5:
        return dtypes.f8e5m2
    if src.mantissa_bits == 3 and src.exponent_bits < 4 and native:
        return dtypes.f8e4m3
    return None


def _byte_pairs(codes: _Codes, i: int, src: FloatType, dst: FloatType, f8: FloatType) -> t.Expr:
    """Recipe 7: pairs i and its `_byte_partner` j of 5-7-bit small floats as f16, by
    way of `f8` bytes (`_byte_form`). The bit stream from each code of pair i (one
    funnel shift: the code at bit 0, pair j's code at byte d/8) gives the four codes,
    each at the bottom of a byte, by one `prmt`; shl, and, lop3 make every byte
    [sign, zeros, magnitude], the f8 code of value · 2^(bias_s − bias_f8) (exact: the
    exponent fields match, subnormals included); each pair of bytes becomes an f16 pair
    (`prmt` into the upper bytes for f8e5m2, whose codes are f16 upper bytes; `F8Pair`
    for f8e4m3); one `Pair` mul by 2^(bias_f8 − bias_s) (times the folded scales) gives
    value · s rounded once, as recipe 4 does. Per 4 codes 8 instructions and the
    shared funnel shifts, against recipe 4's 10 and its shifted words."""
    j = byte_partner(codes, i)
    assert j is not None
    b, k = codes.bits, (codes.at(j) - codes.at(i)) // 8
    low, high = codes.stream(codes.at(i), 8 * k + b), codes.stream(codes.at(i + 1), 8 * k + b)
    four = codes.let(t.Prmt(low, high, selector(0, 4, k, 4 + k)))  # elements i, i+1, j, j+1
    signs = codes.let(t.Binary("shl", four, u32(8 - b)))
    magnitudes = codes.let(t.Binary("and", four, u32(((1 << (b - 1)) - 1) * 0x01010101)))
    form = codes.let(t.Lop3(signs, u32(0x80808080), magnitudes, AND_OR))
    factor = 2.0 ** (f8.bias - src.bias)
    results = []
    for half, pair in ((0, i), (1, j)):
        if f8 == dtypes.f8e4m3:
            x = codes.let(t.F8Pair(form, f8, half))
        else:
            x = codes.let(t.Prmt(form, u32(0), selector(4, 2 * half, 4, 2 * half + 1)))
        if codes.scales is not None:
            scaled = codes.scales.times(pair // 2, pair_word(dst, factor, factor))
            x = codes.let(t.Pair("mul", dst, x, scaled), "h")
        elif factor != 1.0:
            x = codes.let(t.Pair("mul", dst, x, pair_word(dst, factor, factor)), "h")
        results.append(x)
    codes.later[j] = results[1]
    return results[0]


def _nibble_pair(codes: _Codes, i: int, src: FloatType, shift: int) -> t.Expr | None:
    """Recipe 4 for 4-bit floats whose placed magnitude fits the upper byte of a half
    (b + shift ≤ 8: f16): elements i, i+1 as one `prmt` of bytes already placed.

    Every byte of a code word holds two codes. For the codes in the upper nibbles (the
    word itself) and for those in the lower ones (the word << 4), one `and`, one `shr`
    and one `lop3` per word make every byte the upper byte of its code's half
    (`_placed_bytes`). A pair of codes of the same nibble parity in one word is then one
    `prmt` with a zero word: 7 word instructions and 4 `prmt` per 8 codes instead of 3
    instructions and a `prmt` per pair. None when the pair does not lie so (the pair is
    then placed on its own)."""
    b = src.bits
    if b != 4 or b + shift > 8:
        return None
    (q_lo, at_lo), (q_hi, at_hi) = divmod(codes.at(i), 32), divmod(codes.at(i + 1), 32)
    if q_lo != q_hi or at_lo % 8 != at_hi % 8:
        return None
    placed = _placed_bytes(codes, q_lo, upper=at_lo % 8 == 4, shift=shift)
    return codes.let(t.Prmt(placed, u32(0), selector(4, at_lo // 8, 4, at_hi // 8)))


def _placed_bytes(codes: _Codes, q: int, upper: bool, shift: int) -> t.Expr:
    """Word q with each byte's upper (or, shifted up first, lower) 4-bit code made the
    upper byte of an f16 half before the bias: sign on bit 7, magnitude >> shift, zeros
    else (the lower code's bits are masked out, or shifted in from below as zeros)."""
    word = codes.shifted(q, 0 if upper else 4)
    magnitude = codes.let(t.Binary("and", word, u32(0x70707070)))
    shifted = codes.let(t.Binary("shr", magnitude, u32(shift)))
    return codes.let(t.Lop3(word, u32(0x80808080), shifted, AND_OR))


def _float_to_f32(codes: _Codes, i: int, src: FloatType, dst: FloatType = F32) -> t.Expr:
    """Recipe 4 (and 5) for f32: element i by placement and one f32 multiplication."""
    b = src.bits
    top = 32 - b  # the code's sign lands on bit 31
    q = codes.placed(i, top)
    magnitude = codes.let(t.Binary("and", q, u32(((1 << (b - 1)) - 1) << top)))
    shifted = codes.let(t.Binary("shr", magnitude, u32(8 - src.exponent_bits)))
    x = codes.let(t.Lop3(q, u32(0x80000000), shifted, AND_OR))
    scaled = t.Binary("mul", t.Bitcast(x, F32), t.Imm(2.0 ** (127 - src.bias), F32))
    x = codes.let(t.Bitcast(scaled, U32), "f")
    threshold = special_threshold(src)
    if threshold is None:
        return x
    carry = ((1 << (b - 1)) - threshold) << top
    flagged = codes.let(t.Binary("add", magnitude, u32(carry)))
    special = codes.let(t.Prmt(flagged, u32(0), u32(REPLICATE_WORD_SIGN)))
    return codes.let(t.Lop3(x, special, u32(0x7F800000), OR_AND), "f")


# --------------------------------------------------------------------------- scalar fallback


def _scalar_group(codes: _Codes, elements: int, src: DType, dst: DType) -> list[t.Expr]:
    """Every element through `decode_scalar`, packed into u32 words."""
    mask = (1 << src.bits) - 1
    values = []
    for i in range(elements):
        code = codes.let(t.Binary("and", codes.placed(i, 0), u32(mask)), "c")
        value = decode_scalar(codes.emit, code, src, dst, codes.finite)
        values.append(
            codes.let(
                t.Cvt(t.Bitcast(value, U16), U32) if dst.bits == 16 else t.Bitcast(value, U32)
            )
        )
    if dst.bits == 32:
        return values
    return [
        codes.let(t.Binary("or", values[j], t.Binary("shl", values[j + 1], u32(16))), "h")
        for j in range(0, elements, 2)
    ]
