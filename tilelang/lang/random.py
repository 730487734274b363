"""`tl.randint4x`, `tl.randint`, `tl.rand` and `tl.randn`: counter-based random numbers.

The generator is Philox-4x32 with 10 rounds (Salmon, Moraes, Dror and Shaw, "Parallel
random numbers: as easy as 1, 2, 3", SC 2011), the generator of Random123 and of the
GPU frameworks: a pure function of a 128-bit counter and a 64-bit key, so element i of a
dropout mask needs no state, only its offset. Each round multiplies two counter words
by 0xD2511F53 and 0xCD9E8D57 (32 x 32 -> 64 bits, through u64 products), and the key is
bumped by the Weyl constants 0x9E3779B9 and 0xBB67AE85 between rounds.

There is no instruction of its own: the rounds are u64 multiplies, shifts, masks, xors
and u32 conversions (masked first: integer narrowing saturates in tilelang), so every
backend computes the same bits, and the interpreter is the semantics as for any other
composite.

The exact choices (`words` below: an integer v of a type of at most 32 bits gives the
words (v mod 2^32, 0); of a 64-bit type (v mod 2^32, floor(v / 2^32) mod 2^32); a Python
int counts as i32 when it fits, else as a 64-bit integer):

- the key is the words of `seed` (a Python int or a runtime integer scalar);
- the counter is (the words of the offset, 0, 0): `offsets` is an integer tile of any
  shape, a runtime integer scalar or a Python int, and the results have its shape
  (scalars for a scalar);
- `randint4x` is the four output words as u32, `randint` the first;
- `rand` is (x >> 8) * 2^-24 in f32 for x = `randint`: the top 24 bits, exact, so a
  multiple of 2^-24 in [0, 1 - 2^-24], never 1.0;
- `randn` is Box-Muller on the first two words x0, x1: u1 = (x0 >> 9) * 2^-23 + 2^-24
  (exact: an odd multiple of 2^-24, so log never sees 0), u2 = (x1 >> 8) * 2^-24, and
  sqrt(-2 * log(u1)) * cos(6.2831855 * u2), every operation in f32 rounding on its own.
  `tl.log` and `tl.cos` are each platform's math library (within a few ulps), so `randn`
  may differ between backends by a few ulps where `randint4x` and `rand` cannot.
"""

from __future__ import annotations

import numpy as np

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.lang.builder import current
from tilelang.lang.errors import TileLangError
from tilelang.lang.ops import composite
from tilelang.lang.values import (
    Scalar,
    Tile,
    cast,
    describe,
    elementwise,
    python_constant,
)

__all__ = ["rand", "randint", "randint4x", "randn"]

ROUNDS = 10
MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
WEYL = (0x9E3779B9, 0xBB67AE85)  # the key's increments between rounds
MASK = 0xFFFFFFFF
TWO_PI = float(np.float32(2 * np.pi))  # 6.2831855: the f32 randn multiplies by

# A 32-bit word of the generator: a u32 tile or scalar, or a Python int known while
# building (a zero counter word, a Python seed's key), which costs no instruction.
Word = Tile | Scalar | int


@composite(ir.Compute, ir.Cast)
def randint4x(seed, offsets) -> tuple[Tile | Scalar, ...]:
    """Four u32 random words per element of the integer `offsets`: Philox-4x32-10 of
    the counter (offset low 32 bits, offset high 32 bits for a 64-bit type else 0, 0, 0)
    under the key (seed low 32 bits, seed high 32 bits for a 64-bit seed else 0), as
    Random123 computes it."""
    return _generate(seed, offsets, "tl.randint4x")


@composite(ir.Compute, ir.Cast)
def randint(seed, offsets) -> Tile | Scalar:
    """A u32 random word per element of the integer `offsets`: the first of
    `tl.randint4x(seed, offsets)`."""
    return _generate(seed, offsets, "tl.randint")[0]


@composite(ir.Compute, ir.Cast)
def rand(seed, offsets) -> Tile | Scalar:
    """A uniform f32 in [0, 1) per element of the integer `offsets`: the top 24 bits of
    `tl.randint(seed, offsets)` times 2^-24 (exact; never 1.0). A dropout mask:
    `tl.rand(seed, offsets) > p`."""
    return _uniform(_generate(seed, offsets, "tl.rand")[0], 8)


@composite(ir.Compute, ir.Cast)
def randn(seed, offsets) -> Tile | Scalar:
    """A standard normal f32 per element of the integer `offsets`: Box-Muller,
    sqrt(-2 log u1) · cos(2π u2), of u1 = (x0 >> 9) · 2^-23 + 2^-24 (never 0) and
    u2 = (x1 >> 8) · 2^-24, x0 and x1 the first two words of `tl.randint4x`."""
    x0, x1, _, _ = _generate(seed, offsets, "tl.randn")
    u1 = _uniform(x0, 9) + 2.0**-24  # an odd multiple of 2^-24: exact in f32
    u2 = _uniform(x1, 8)
    radius = elementwise("sqrt", elementwise("log", u1) * -2.0)
    return radius * elementwise("cos", u2 * TWO_PI)


def _generate(seed: object, offsets: object, op: str) -> tuple[Tile | Scalar, ...]:
    """The four words of Philox-4x32-10 for `offsets` under `seed`; `op` names the
    function the user called, for errors."""
    key = _words(seed, "seed", op)
    counter = (*_words(offsets, "offsets", op), 0, 0)
    return tuple(_settle(word) for word in _philox(counter, key))


# -- the generator -------------------------------------------------------------------------


def _philox(counter: tuple[Word, ...], key: tuple[Word, Word]) -> list[Word]:
    """Philox-4x32-10: ten rounds, the key bumped by the Weyl constants before each
    round but the first (round r uses key + r · WEYL, modulo 2^32)."""
    words = list(counter)
    for r in range(ROUNDS):
        k0, k1 = (_add(k, (r * w) & MASK) for k, w in zip(key, WEYL, strict=True))
        hi0, lo0 = _mulhilo(MULTIPLIERS[0], words[0])
        hi1, lo1 = _mulhilo(MULTIPLIERS[1], words[2])
        words = [_xor(_xor(hi1, words[1]), k0), lo1, _xor(_xor(hi0, words[3]), k1), lo0]
    return words


def _mulhilo(multiplier: int, word: Word) -> tuple[Word, Word]:
    """The high and low 32 bits of multiplier · word (a 64-bit product)."""
    if isinstance(word, int):
        product = multiplier * word
        return product >> 32, product & MASK
    product = cast(word, dtypes.u64) * multiplier
    # Both halves are below 2^32 before the conversion, which therefore cannot saturate.
    return cast(product >> 32, dtypes.u32), cast(product & MASK, dtypes.u32)


def _xor(a: Word, b: Word) -> Word:
    if isinstance(a, int) and isinstance(b, int):
        return a ^ b
    if isinstance(b, int) and b == 0:
        return a
    if isinstance(a, int) and a == 0:
        return b
    return elementwise("xor", a, b)


def _add(word: Word, constant: int) -> Word:
    """word + constant modulo 2^32 (u32 addition wraps)."""
    if isinstance(word, int):
        return (word + constant) & MASK
    return word if constant == 0 else elementwise("add", word, constant)


def _settle(word: Word) -> Tile | Scalar:
    """A result word as a value: a word known while building is a u32 constant."""
    return Scalar(python_constant(word, dtypes.u32)) if isinstance(word, int) else word


def _uniform(word: Tile | Scalar, shift: int) -> Tile | Scalar:
    """The top 32 - shift bits of a u32 word as a multiple of 2^-(32 - shift) in [0, 1):
    exact in f32 for shift >= 8."""
    return cast(word >> shift, dtypes.f32) * 2.0 ** (shift - 32)


# -- arguments -----------------------------------------------------------------------------


def _words(value: object, what: str, op: str) -> tuple[Word, Word]:
    """The (low, high) 32-bit words of an integer seed or offset (module docstring)."""
    if isinstance(value, bool) or not isinstance(value, (int, Tile, Scalar)):
        raise _refused(value, what, op)
    if isinstance(value, int):
        return _python_words(value, what, op)
    if not isinstance(value.dtype, dtypes.IntType):
        raise _refused(value, what, op)
    if what == "seed" and isinstance(value, Tile):
        raise current().error(
            f"{op}: seed must be one number for the whole call (a Python int or a runtime "
            f"integer scalar), got {describe(value)}; vary the offsets instead"
        )
    return _value_words(value)


def _python_words(value: int, what: str, op: str) -> tuple[int, int]:
    if dtypes.i32.min <= value <= dtypes.i32.max:
        return value & MASK, 0
    if dtypes.i64.min <= value <= dtypes.u64.max:
        return value & MASK, (value >> 32) & MASK
    raise current().error(
        f"{op}: {what} must fit 64 bits ({dtypes.i64.min}..{dtypes.u64.max}), got {value}"
    )


def _value_words(value: Tile | Scalar) -> tuple[Word, Word]:
    dtype = value.dtype
    if dtype == dtypes.u32:
        return value, 0
    if not dtype.signed and dtype.bits < 32:
        return cast(value, dtypes.u32), 0  # widening: exact
    # Widen to 64 bits (exact), then mask: a conversion of a negative or a larger
    # value to u32 would saturate.
    wide = cast(value, dtypes.i64 if dtype.signed else dtypes.u64)
    low = cast(wide & MASK, dtypes.u32)
    if dtype.bits < 64:
        return low, 0
    return low, cast((wide >> 32) & MASK, dtypes.u32)


def _refused(value: object, what: str, op: str) -> TileLangError:
    kinds = {
        "seed": "a Python int or a runtime integer scalar",
        "offsets": "an integer tile, a runtime integer scalar or a Python int",
    }
    return current().error(f"{op}: {what} must be {kinds[what]}, got {describe(value)}")
