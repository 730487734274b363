"""Scalar data types of tilelang, their bit-exact numpy codecs, and dense bit packing.

This module owns:

* the type objects: ``IntType`` (u1…u64, i1…i64, two's complement) and ``FloatType``
  (f16, bf16, f32, f64, the OCP f8 types, and every small finite-only ExMy with
  1+E+M ≤ 8, as in the OCP MX spec) and ``ExponentType`` (``e8m0``, the MX scale);
* ``encode`` (logical values -> codes) and ``decode`` (codes -> values) for every type,
  vectorized in numpy and exact: encoding works on the integer significand and
  exponent of its input, so a float64 (or int64) input is rounded once, directly to
  the target, never through float32;
* ``convert`` (codes of one type -> codes of another, the interpreter's cast);
* packing: element i of a flat tensor of b-bit codes occupies bits [i·b, (i+1)·b) of a
  little-endian byte stream (``pack_bits``/``unpack_bits``, ``PackedArray``).

Casting policy (docs/design.md §3), the same on every backend:

* To a float: round to nearest, ties to even, from the exact input value. Subnormals
  of the target are produced; the sign of zero is kept (-0.0 and tiny negatives that
  round to zero give -0). In formats with M = 0 a tie between two powers of two has
  no even significand; as IEEE 754-2019 §4.3.1 says, the larger magnitude wins.
* Overflow (a value whose rounding, with an unbounded exponent, exceeds max finite):
  f16, bf16, f32, f64 follow IEEE 754 and give ±inf, as ``cvt.rn.f16.f32`` does; the
  f8 types and every small float *saturate* to ±max finite, as
  ``cvt.rn.satfinite`` does. ±inf input: ±inf for f16/bf16/f32/f64, ±max for the
  saturating types (f8e5m2 included, though it can hold inf: satfinite never makes one).
* NaN input: the canonical NaN (sign 0, every other bit 1: f16 0x7FFF, f8e4m3 0x7F,
  f8e5m2 0x7F) for types with NaN. Finite-only types have no NaN; like PTX
  ``cvt.rn.satfinite`` to e2m1/e2m3/e3m2 they give *positive* max finite.
* To an integer: round to nearest even, saturate to [min, max]; NaN gives 0 (the PTX
  ``cvt.rni.sat`` policy). Integer to integer saturates exactly.
* Bit-level truncation or reinterpretation is never a cast (see ``view`` in the IR).

Where this differs from ml_dtypes ≥ 0.5 (tested in tests/test_dtypes.py): ml_dtypes
makes NaN of f8e4m3fn overflow and inf (we saturate) and inf of f8e5m2 overflow (we
saturate); it keeps the sign of NaN (we give the canonical positive NaN); before 0.7 it
rounds float64 through float32, a double rounding we avoid (1.25 + 2**-40 -> f4e2m1 is
1.5 here, 1.0 there); and its int2/int4 casts truncate floats toward zero (5.5 -> 5
there, 6 here). Where ml_dtypes leaves the result undefined we still define one: NaN
into the finite-only f4/f6 types (its docs: "NaN representation is undefined"; +max
here) and a float out of an integer type's range (undefined behaviour in its C++ cast,
so it varies between machines: 300.0 -> int4 has given -4 and 0; 7 here).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

Specials = Literal["ieee", "fn", "none"]
"""How a float type spends its top codes: "ieee" (exponent all ones is inf when the
mantissa is 0, NaN otherwise), "fn" (OCP finite+NaN: only S.1…1.1…1 is NaN, no inf),
"none" (every code is a finite number)."""

_U64_ONES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
#: `FloatType.encode` of a few values, by (type, input dtype, shape, bytes); emptied when full.
_ENCODED: dict[tuple, np.ndarray] = {}


@functools.cache  # asked of every tensor on every call
def _storage_for(bits: int) -> np.dtype:
    for nbytes, storage in ((1, np.uint8), (2, np.uint16), (4, np.uint32)):
        if bits <= 8 * nbytes:
            return np.dtype(storage)
    return np.dtype(np.uint64)


def _check_bits(bits: Any) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 64:
        raise ValueError(f"bit width must be an integer in 1..64, got {bits!r}")
    return int(bits)


def _where(flat_index: np.intp, shape: tuple[int, ...]) -> str:
    """' at index …' for error messages ('' for a scalar)."""
    index = tuple(int(i) for i in np.unravel_index(flat_index, shape))
    return f" at index {index[0] if len(index) == 1 else index}" if index else ""


def _as_codes(codes: Any, bits: int, what: str) -> np.ndarray:
    """Validate integer codes that must fit in `bits` bits; return them as uint64."""
    array = np.asarray(codes)
    if array.dtype.kind not in "uib":
        raise TypeError(f"{what} must be integers, got an array of {array.dtype}")
    if array.size and array.dtype.kind == "i" and array.min() < 0:
        flat = np.argmin(array)
        raise ValueError(
            f"{what} must be non-negative, got {array.flat[flat]}{_where(flat, array.shape)}"
        )
    unsigned = array.astype(np.uint64)
    if array.size and bits < 64 and unsigned.max() >= (1 << bits):
        flat = np.argmax(unsigned)
        raise ValueError(
            f"{what} must lie in [0, {(1 << bits) - 1}], "
            f"got {unsigned.flat[flat]}{_where(flat, array.shape)}"
        )
    return unsigned


def _as_numeric(values: Any) -> np.ndarray:
    """Values as int64, uint64 or float64, exactly where the input allows."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "b" or kind == "i":
        return array.astype(np.int64)
    if kind == "u":
        return array.astype(np.uint64)
    if kind == "f":
        with np.errstate(invalid="ignore"):  # widening a signaling NaN is not an error here
            return array.astype(np.float64)
    if kind == "O":  # Python ints too wide for int64; beyond uint64 they become float64
        for candidate in (np.int64, np.uint64, np.float64):
            try:
                return np.asarray(values, dtype=candidate)
            except (OverflowError, TypeError, ValueError):
                continue
    if kind == "V":  # ml_dtypes scalars (bfloat16, float8_*, int4, ...) convert exactly
        try:
            return array.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"expected real numbers (ints or floats), got an array of {array.dtype}")


class DType:
    """A tilelang scalar type. Subclasses: IntType, FloatType, ExponentType (e8m0).

    Common API: ``name``, ``bits``, ``is_float``, ``is_int``, ``signed``, ``min``, ``max``,
    ``storage`` (the numpy unsigned dtype that holds one code), ``encode``, ``decode``.
    """

    name: str
    bits: int
    signed: bool
    is_float: bool = False
    is_int: bool = False

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return self.name

    @property
    def storage(self) -> np.dtype:
        """Smallest numpy unsigned dtype that holds one code."""
        return _storage_for(self.bits)

    @property
    def code_mask(self) -> int:
        """All `bits` bits set: every code c satisfies c & code_mask == c."""
        return (1 << self.bits) - 1

    def encode(self, values: Any) -> np.ndarray:
        """Logical values -> codes (dtype `storage`) under the module's cast policy."""
        raise NotImplementedError

    def decode(self, codes: Any) -> np.ndarray:
        """Codes -> logical values."""
        raise NotImplementedError


# --------------------------------------------------------------------------- integers


@dataclass(frozen=True, repr=False)
class IntType(DType):
    """Two's-complement (signed) or plain binary (unsigned) integer of 1..64 bits."""

    bits: int
    signed: bool
    is_int = True

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if not isinstance(self.signed, bool):
            raise TypeError(f"IntType.signed must be a bool, got {self.signed!r}")

    @property
    def name(self) -> str:
        return f"{'i' if self.signed else 'u'}{self.bits}"

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def value_dtype(self) -> np.dtype:
        """What ``decode`` returns: int64, except uint64 for u64."""
        return np.dtype(np.uint64 if self.bits == 64 and not self.signed else np.int64)

    def encode(self, values: Any) -> np.ndarray:
        numeric = _as_numeric(values)
        if numeric.dtype.kind == "f":
            clipped = self._saturate_float(numeric)
        elif numeric.dtype.kind == "u":
            clipped = np.clip(numeric, np.uint64(max(self.min, 0)), np.uint64(self.max))
        else:
            low, high = max(self.min, -(1 << 63)), min(self.max, (1 << 63) - 1)
            clipped = np.clip(numeric, low, high)
        # Casting a negative int64 to uint64 wraps, which is two's complement already.
        codes = clipped.astype(np.uint64) & np.uint64(self.code_mask)
        return np.asarray(codes, dtype=self.storage)

    def _saturate_float(self, values: np.ndarray) -> np.ndarray:
        rounded = np.rint(values)  # ties to even
        too_high = rounded >= math.ldexp(1.0, self.bits - self.signed)  # max + 1, exact
        too_low = rounded < float(self.min)
        in_range = ~(too_high | too_low | np.isnan(rounded))
        safe = np.where(in_range, rounded, 0.0)
        exact = safe.astype(np.int64) if self.signed else safe.astype(np.uint64)
        result = np.where(too_high, exact.dtype.type(self.max), exact)
        return np.where(too_low, exact.dtype.type(self.min), result)

    def decode(self, codes: Any) -> np.ndarray:
        unsigned = _as_codes(codes, self.bits, f"{self.name} codes")
        if not self.signed:
            return unsigned.astype(self.value_dtype)
        values = unsigned.astype(np.int64)  # wraps for i64, which is the right value
        if self.bits < 64:
            values = values - (((values >> (self.bits - 1)) & 1) << self.bits)
        return np.asarray(values)


# ----------------------------------------------------------------------------- floats

# (exponent_bits, mantissa_bits) -> (specials, name) of the named wide or f8 types.
_NAMED_FLOATS: dict[tuple[int, int], tuple[Specials, str]] = {
    (5, 10): ("ieee", "f16"),
    (8, 7): ("ieee", "bf16"),
    (8, 23): ("ieee", "f32"),
    (11, 52): ("ieee", "f64"),
    (5, 2): ("ieee", "f8e5m2"),
    (4, 3): ("fn", "f8e4m3"),
}


@dataclass(frozen=True, repr=False)
class FloatType(DType):
    """Binary float: sign, `exponent_bits`, `mantissa_bits`, bias 2^(E−1)−1, subnormals.

    `specials` defaults from (E, M): "ieee" for f16/bf16/f32/f64/f8e5m2, "fn" for
    f8e4m3, "none" (finite-only, every code a number) for every other ExMy, which
    must have 1+E+M ≤ 8.
    """

    exponent_bits: int
    mantissa_bits: int
    specials: Specials | None = None
    is_float = True
    signed = True

    def __post_init__(self) -> None:
        e, m = self.exponent_bits, self.mantissa_bits
        for label, value in (("exponent_bits", e), ("mantissa_bits", m)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"FloatType.{label} must be an int, got {value!r}")
        if e < 1 or m < 0:
            raise ValueError(
                f"a float needs E >= 1 exponent bits and M >= 0 mantissa bits, got E={e}, M={m}"
            )
        named = _NAMED_FLOATS.get((e, m))
        expected: Specials = named[0] if named else "none"
        if self.specials is None:
            object.__setattr__(self, "specials", expected)
        elif self.specials != expected:
            what = (
                f"{named[1]} is '{expected}'"
                if named
                else f"E{e}M{m} floats are finite-only ('none')"
            )
            raise ValueError(f"unsupported specials {self.specials!r} for E={e}, M={m}: {what}")
        if named is None and 1 + e + m > 8:
            raise ValueError(
                f"small floats need 1+E+M <= 8 bits, got E={e}, M={m} ({1 + e + m} bits); "
                "the wider floats are f16 (E5M10), bf16 (E8M7), f32 (E8M23) and f64 (E11M52)"
            )

    @property
    def bits(self) -> int:  # type: ignore[override]
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def name(self) -> str:
        named = _NAMED_FLOATS.get((self.exponent_bits, self.mantissa_bits))
        return named[1] if named else f"f{self.bits}e{self.exponent_bits}m{self.mantissa_bits}"

    @property
    def bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def saturates(self) -> bool:
        """Overflow gives ±max (satfinite); False for f16/bf16/f32/f64, which give ±inf."""
        return not (self.specials == "ieee" and self.bits >= 16)

    @property
    def value_dtype(self) -> np.dtype:
        """What ``decode`` returns: float32 (exact for every type up to 32 bits), f64: float64."""
        return np.dtype(np.float64 if self.bits > 32 else np.float32)

    @property
    def max_code(self) -> int:
        """Code of the largest finite value (sign bit clear)."""
        magnitude_codes = 1 << (self.exponent_bits + self.mantissa_bits)
        if self.specials == "ieee":
            return magnitude_codes - (1 << self.mantissa_bits) - 1
        return magnitude_codes - (2 if self.specials == "fn" else 1)

    @property
    def nan_code(self) -> int | None:
        """The canonical NaN that encode produces (sign 0, all other bits 1), or None."""
        return (1 << (self.bits - 1)) - 1 if self.has_nan else None

    @property
    def inf_code(self) -> int | None:
        """Code of +inf, or None for types without inf."""
        return self.max_code + 1 if self.has_inf else None

    @property
    def max_exponent(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top_field = (1 << self.exponent_bits) - (2 if self.specials == "ieee" else 1)
        return top_field - self.bias

    @property
    def max(self) -> float:
        return float(_float_values(self, np.array([self.max_code], dtype=np.uint64))[0])

    @property
    def min(self) -> float:
        return -self.max

    @property
    def eps(self) -> float:
        """Distance from 1.0 to the next larger value."""
        return math.ldexp(1.0, -self.mantissa_bits)

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, 1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        """Smallest positive value (equal to smallest_normal when M == 0: no subnormals)."""
        return math.ldexp(1.0, 1 - self.bias - self.mantissa_bits)

    def encode(self, values: Any) -> np.ndarray:
        numeric = _as_numeric(values)
        if numeric.size > 4:
            return self._encode(numeric)
        # A few values (compilers' constants), by their bits: the arithmetic costs ~100 µs.
        key = (self, numeric.dtype.char, numeric.shape, numeric.tobytes())
        if (codes := _ENCODED.get(key)) is None:
            if len(_ENCODED) >= 1 << 14:
                _ENCODED.clear()
            codes = _ENCODED[key] = self._encode(numeric)
        return codes.copy()

    def _encode(self, numeric: np.ndarray) -> np.ndarray:
        split = _split_float64 if numeric.dtype.kind == "f" else _split_integer
        return _round_to_float(self, *split(numeric)).astype(self.storage)

    def decode(self, codes: Any) -> np.ndarray:
        unsigned = _as_codes(codes, self.bits, f"{self.name} codes")
        if self.bits == 64:
            return unsigned.view(np.float64)
        if self.bits == 32:
            return unsigned.astype(np.uint32).view(np.float32)
        return np.asarray(_decode_table(self)[unsigned.astype(np.intp)])


def _float_values(t: FloatType, codes: np.ndarray) -> np.ndarray:
    """Value of each code from the format's formula, in float64 (exact up to f64)."""
    m = t.mantissa_bits
    mantissa = (codes & np.uint64((1 << m) - 1)).astype(np.int64)
    field = ((codes >> np.uint64(m)) & np.uint64((1 << t.exponent_bits) - 1)).astype(np.int64)
    negative = ((codes >> np.uint64(t.bits - 1)) & np.uint64(1)).astype(bool)
    significand = np.where(field == 0, mantissa, mantissa + (1 << m)).astype(np.float64)
    values = np.ldexp(significand, np.maximum(field, 1) - t.bias - m)
    top_field = field == (1 << t.exponent_bits) - 1
    if t.specials == "ieee":
        values = np.where(top_field, np.where(mantissa == 0, np.inf, np.nan), values)
    elif t.specials == "fn":
        values = np.where(top_field & (mantissa == (1 << m) - 1), np.nan, values)
    return np.where(negative, -values, values)


@functools.cache
def _decode_table(t: FloatType) -> np.ndarray:
    table = _float_values(t, np.arange(1 << t.bits, dtype=np.uint64)).astype(t.value_dtype)
    table.flags.writeable = False
    return table


def _split_float64(values: np.ndarray) -> tuple[np.ndarray, ...]:
    """float64 |x| = significand · 2^exponent exactly, plus sign, NaN and inf masks."""
    bits = values.view(np.uint64)  # same itemsize: valid for any strides and for 0-d
    negative = (bits >> np.uint64(63)).astype(bool)
    field = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    fraction = bits & np.uint64((1 << 52) - 1)
    special = field == 0x7FF
    significand = np.where(field == 0, fraction, fraction | np.uint64(1 << 52))
    significand = np.where(special, np.uint64(0), significand)
    exponent = np.where(field == 0, -1074, field - 1075)
    return negative, significand, exponent, special & (fraction != 0), special & (fraction == 0)


def _split_integer(values: np.ndarray) -> tuple[np.ndarray, ...]:
    negative = values < 0
    magnitude = values.astype(np.uint64)
    with np.errstate(over="ignore"):  # two's complement negation wraps by design
        magnitude = np.where(negative, ~magnitude + np.uint64(1), magnitude)  # exact for INT64_MIN
    no = np.zeros(values.shape, dtype=bool)
    return negative, magnitude, np.zeros(values.shape, dtype=np.int64), no, no


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Number of significant bits of each uint64 (0 for 0), by binary search."""
    length = np.zeros(x.shape, dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        wide = (x >> np.uint64(shift)) != 0
        length += np.where(wide, shift, 0)
        x = np.where(wide, x >> np.uint64(shift), x)
    return length + (x != 0)


def _shift_right_rne(x: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """x / 2^shift rounded to nearest, ties to even; a negative shift shifts left.

    Callers guarantee that left shifts do not overflow.
    """
    left = np.clip(-shift, 0, 63).astype(np.uint64)
    right = np.clip(shift, 1, 64).astype(np.uint64)  # shift 64: only the tie test remains
    one = np.uint64(1)
    quotient = (x >> (right - one)) >> one  # two steps: a shift by 64 is undefined
    remainder = x & (_U64_ONES >> (np.uint64(64) - right))
    half = one << (right - one)
    odd = (quotient & one) == one
    rounded = quotient + ((remainder > half) | ((remainder == half) & odd))
    rounded = np.where(shift > 64, np.uint64(0), rounded)  # below half of the last unit
    return np.where(shift > 0, rounded, x << left)


def _round_to_float(
    t: FloatType,
    negative: np.ndarray,
    significand: np.ndarray,
    exponent: np.ndarray,
    nan: np.ndarray,
    inf: np.ndarray,
) -> np.ndarray:
    """Codes (uint64) of significand · 2^exponent with the sign, under the cast policy."""
    m, bias, max_exponent = t.mantissa_bits, t.bias, t.max_exponent
    zero = significand == 0
    leading = _bit_length(significand) - 1 + exponent  # floor(log2 |x|)
    too_big = ~zero & (leading > max_exponent)
    # Below the smallest normal the quantum stops shrinking: that is the subnormal range.
    binade = np.clip(leading, 1 - bias, max_exponent)
    quantum = binade - m
    steps = _shift_right_rne(significand, quantum - exponent)  # in [0, 2^(m+1)]
    # (field − 1)·2^m + steps is the code, also when rounding carries into the next
    # binade (steps == 2^(m+1)) or out of the subnormals (steps == 2^m).
    magnitude = ((binade + bias - 1) << m) + steps.astype(np.int64)
    magnitude = np.where(zero, 0, np.where(too_big, t.max_code + 1, magnitude))
    overflow = inf | (magnitude > t.max_code)
    limit = t.max_code if t.saturates else t.max_code + 1  # +1 is the inf code
    magnitude = np.where(overflow, limit, magnitude)
    codes = magnitude.astype(np.uint64) | (negative.astype(np.uint64) << np.uint64(t.bits - 1))
    # NaN: the canonical NaN, or +max for finite-only types (PTX satfinite).
    nan_code = t.nan_code if t.nan_code is not None else t.max_code
    return np.where(nan, np.uint64(nan_code), codes)


# -------------------------------------------------------------- exponent-only scales


@dataclass(frozen=True, repr=False)
class ExponentType(DType):
    """``e8m0``, the OCP MX v1.0 scale: 8 exponent bits, no sign, no mantissa. Code c < 255
    is 2^(c − 127) (2^-127 … 2^127, no zero); 0xFF is NaN.

    ``encode`` is ml_dtypes' ``float8_e8m0fnu`` cast, bit for bit (OCP leaves conversions
    to E8M0 to the implementation): round to the nearest power of two, a tie (1.5·2^e) to
    the larger; positive values below 2^-127 give 2^-127 (code 0); NaN, ±inf, ±0,
    negatives and values that round above 2^127 give NaN (0xFF). MX block scales are
    computed from exponents, not with this cast (tilelang.quant).
    """

    name = "e8m0"
    bits, exponent_bits, mantissa_bits, bias = 8, 8, 0, 127
    signed, is_float, has_inf, has_nan, saturates = False, True, False, True, False
    max_code, nan_code, inf_code = 0xFE, 0xFF, None
    min = smallest_normal = smallest_subnormal = 2.0**-127
    max, eps, value_dtype = 2.0**127, 1.0, np.dtype(np.float32)

    def encode(self, values: Any) -> np.ndarray:
        numeric = _as_numeric(values)
        split = _split_float64 if numeric.dtype.kind == "f" else _split_integer
        negative, significand, exponent, nan, inf = split(numeric)
        length = _bit_length(significand)
        # Nearest power of two: up when the bit below the leading one is set.
        below = np.maximum(length - 2, 0).astype(np.uint64)
        up = (length >= 2) & (((significand >> below) & np.uint64(1)) == 1)
        field = np.maximum(length - 1 + exponent + up + self.bias, 0)
        invalid = nan | inf | negative | (significand == 0) | (field > self.max_code)
        return np.where(invalid, self.nan_code, field).astype(np.uint8)

    def decode(self, codes: Any) -> np.ndarray:
        field = _as_codes(codes, 8, "e8m0 codes").astype(np.int64)
        values = np.where(field == self.nan_code, np.nan, np.ldexp(1.0, field - self.bias))
        return values.astype(np.float32)  # 2^-127 is a float32 subnormal: exact


# ------------------------------------------------------------------ named types, parsing


def int_type(bits: int, signed: bool) -> IntType:
    """The integer type of `bits` (1..64) bits; the named instance when one exists."""
    candidate = IntType(_check_bits(bits), signed)
    return _BY_NAME.get(candidate.name, candidate)  # type: ignore[return-value]


def float_type(exponent_bits: int, mantissa_bits: int) -> FloatType:
    """The float with E exponent and M mantissa bits: f8e4m3 for (4, 3), f8e5m2 for
    (5, 2), f16/bf16/f32/f64 for theirs, else a finite-only ExMy (needs 1+E+M <= 8)."""
    candidate = FloatType(exponent_bits, mantissa_bits)
    return _BY_NAME.get(candidate.name, candidate)  # type: ignore[return-value]


u1, u2, u3, u4, u5, u6, u7, u8 = (IntType(b, False) for b in range(1, 9))
i1, i2, i3, i4, i5, i6, i7, i8 = (IntType(b, True) for b in range(1, 9))
u16, u32, u64 = (IntType(b, False) for b in (16, 32, 64))
i16, i32, i64 = (IntType(b, True) for b in (16, 32, 64))
f3e1m1 = FloatType(1, 1)
f4e2m1 = FloatType(2, 1)
f6e2m3 = FloatType(2, 3)
f6e3m2 = FloatType(3, 2)
f8e4m3 = FloatType(4, 3)
f8e5m2 = FloatType(5, 2)
bf16 = FloatType(8, 7)
f16 = FloatType(5, 10)
f32 = FloatType(8, 23)
f64 = FloatType(11, 52)
e8m0 = ExponentType()

NAMED_TYPES: tuple[DType, ...] = (
    u1, u2, u3, u4, u5, u6, u7, u8, u16, u32, u64,
    i1, i2, i3, i4, i5, i6, i7, i8, i16, i32, i64,
    f3e1m1, f4e2m1, f6e2m3, f6e3m2, f8e4m3, f8e5m2, bf16, f16, f32, f64, e8m0,
)  # fmt: skip

_BY_NAME: dict[str, DType] = {t.name: t for t in NAMED_TYPES}

# numpy / ml_dtypes / torch spellings, so that dtype(np.float16) and friends work.
_ALIASES = {
    "half": "f16", "float16": "f16", "bfloat16": "bf16", "float": "f32", "float32": "f32",
    "double": "f64", "float64": "f64", "float8_e4m3fn": "f8e4m3", "float8_e5m2": "f8e5m2",
    "float6_e3m2fn": "f6e3m2", "float6_e2m3fn": "f6e2m3", "float4_e2m1fn": "f4e2m1",
    "float8_e8m0fnu": "e8m0",
}  # fmt: skip

_INT_NAME = re.compile(r"(u|i|uint|int)(\d+)")
_FLOAT_NAME = re.compile(r"f(\d+)e(\d+)m(\d+)")
_VALID_FORMS = (
    "valid forms: uN or iN with 1 <= N <= 64 (u4, i8, u32), fXeYmZ with X = 1+Y+Z <= 8 and "
    "Y >= 1 (f4e2m1, f6e3m2, f5e2m2), f16, bf16, f32, f64, f8e4m3, f8e5m2, e8m0, "
    "or a numpy/ml_dtypes name (float16, bfloat16, int8, float8_e4m3fn, ...)"
)


def dtype(name: str | DType | Any) -> DType:
    """Parse a type name (or pass a DType through). Raises ValueError listing valid forms."""
    if isinstance(name, DType):
        return name
    if isinstance(name, (np.dtype, type)):
        try:
            name = np.dtype(name).name
        except TypeError:
            name = str(name)
    elif not isinstance(name, str):
        name = str(name)  # e.g. torch.float16 -> "torch.float16"
    key = name.strip().lower().removeprefix("torch.")
    key = _ALIASES.get(key, key)
    if key in _BY_NAME:
        return _BY_NAME[key]
    try:
        if match := _INT_NAME.fullmatch(key):
            return int_type(int(match[2]), signed=match[1] in ("i", "int"))
        if match := _FLOAT_NAME.fullmatch(key):
            total, e, m = (int(group) for group in match.groups())
            if total != 1 + e + m:
                raise ValueError(f"1+E+M = {1 + e + m} but the name says {total} bits")
            return float_type(e, m)
    except ValueError as error:
        raise ValueError(f"bad dtype name {name!r}: {error}; {_VALID_FORMS}") from None
    raise ValueError(f"unknown dtype name {name!r}; {_VALID_FORMS}")


# ---------------------------------------------------------------------- casts, tables


def convert(codes: Any, src: DType | str, dst: DType | str) -> np.ndarray:
    """Codes of `src` -> codes of `dst` (decode, then encode under the cast policy)."""
    return dtype(dst).encode(dtype(src).decode(codes))


def quantize(values: Any, t: DType | str) -> np.ndarray:
    """The values `t` holds after casting `values` to it: decode(encode(values))."""
    target = dtype(t)
    return target.decode(target.encode(values))


class DTypeRow(NamedTuple):
    """One line of the `tilelang dtypes` table; eps and smallest_subnormal are None for ints."""

    name: str
    bits: int
    signed: bool
    min: int | float
    max: int | float
    eps: float | None
    smallest_subnormal: float | None


def table_rows(types: tuple[DType, ...] = NAMED_TYPES) -> tuple[DTypeRow, ...]:
    rows = []
    for t in types:
        is_float = t.is_float
        eps = t.eps if is_float else None
        tiny = t.smallest_subnormal if is_float else None
        rows.append(DTypeRow(t.name, t.bits, t.signed, t.min, t.max, eps, tiny))
    return tuple(rows)


# --------------------------------------------------------------------------- packing


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that `count` codes of `bits` bits take when packed densely."""
    return (count * bits + 7) // 8


def _little_endian_bytes(codes: np.ndarray) -> np.ndarray:
    """uint64 codes -> an (n, 8) uint8 matrix, least significant byte first."""
    return codes.astype("<u8").view(np.uint8).reshape(-1, 8)


def pack_bits(codes: Any, bits: int) -> np.ndarray:
    """Pack codes densely: element i takes bits [i·bits, (i+1)·bits) of the little-endian
    byte stream. Returns ceil(n·bits/8) uint8; the unused high bits of the last byte are 0."""
    bits = _check_bits(bits)
    flat = _as_codes(codes, bits, f"{bits}-bit codes").ravel()
    nbytes = packed_nbytes(flat.size, bits)
    if bits in (8, 16, 32, 64):
        return flat.astype(f"<u{bits // 8}").view(np.uint8)
    if bits % 8 == 0:
        return _little_endian_bytes(flat)[:, : bits // 8].ravel()
    if bits < 8:  # 8 codes of b bits fill b bytes exactly: build one uint64 per group
        groups = np.zeros(-(-flat.size // 8) * 8, dtype=np.uint64)
        groups[: flat.size] = flat
        shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
        words = np.bitwise_or.reduce(groups.reshape(-1, 8) << shifts, axis=1)
        return _little_endian_bytes(words)[:, :bits].ravel()[:nbytes]
    bit_matrix = np.unpackbits(_little_endian_bytes(flat), axis=1, bitorder="little")
    return np.packbits(bit_matrix[:, :bits].ravel(), bitorder="little")


def _as_byte_array(data: Any) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray):
        raise TypeError(
            f"packed data must be a numpy uint8 array or bytes, got {type(data).__name__}"
        )
    if data.dtype != np.uint8 or data.ndim != 1:
        raise TypeError(f"packed data must be a 1-D uint8 array, got {data.ndim}-D {data.dtype}")
    return data


def unpack_bits(data: Any, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: `count` codes of `bits` bits, as the `bits`' storage dtype.

    `data` must hold exactly ceil(count·bits/8) bytes.
    """
    bits = _check_bits(bits)
    data = _as_byte_array(data)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    expected = packed_nbytes(int(count), bits)
    if data.size != expected:
        raise ValueError(
            f"{count} codes of {bits} bits take {expected} bytes, got {data.size} bytes"
        )
    if bits in (8, 16, 32, 64):
        return np.ascontiguousarray(data).view(f"<u{bits // 8}").astype(_storage_for(bits))
    if bits % 8 == 0:
        words = np.zeros((count, 8), dtype=np.uint8)
        words[:, : bits // 8] = data.reshape(count, bits // 8)
        codes = words.view("<u8").ravel()
    elif bits < 8:
        groups = -(-count // 8)
        padded = np.zeros(groups * bits, dtype=np.uint8)
        padded[: data.size] = data
        group_words = np.zeros((groups, 8), dtype=np.uint8)
        group_words[:, :bits] = padded.reshape(groups, bits)
        shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
        split = (group_words.view("<u8") >> shifts) & np.uint64((1 << bits) - 1)
        codes = split.ravel()[:count]
    else:
        bit_matrix = np.unpackbits(data, count=count * bits, bitorder="little")
        padded_bits = np.zeros((count, 64), dtype=np.uint8)
        padded_bits[:, :bits] = bit_matrix.reshape(count, bits)
        codes = np.packbits(padded_bits, axis=1, bitorder="little").view("<u8").ravel()
    return codes.astype(_storage_for(bits))


@dataclass(frozen=True, eq=False)
class PackedArray:
    """A tensor of `dtype` codes packed densely (see pack_bits) in the uint8 array `data`.

    `data` holds exactly ceil(numel·bits/8) bytes; `shape` is the logical shape.
    """

    data: np.ndarray
    dtype: DType
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", dtype(self.dtype))
        object.__setattr__(self, "data", _as_byte_array(self.data))
        shape = (self.shape,) if isinstance(self.shape, (int, np.integer)) else self.shape
        if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in shape):
            raise ValueError(f"shape must be a tuple of non-negative ints, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        expected = packed_nbytes(self.numel, self.dtype.bits)
        if self.data.size != expected:
            raise ValueError(
                f"a {self.dtype.name} tensor of shape {self.shape} packs into {expected} bytes, "
                f"got {self.data.size} bytes"
            )

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.size)

    def codes(self) -> np.ndarray:
        """The codes, unpacked to the dtype's storage and reshaped to `shape`."""
        return unpack_bits(self.data, self.dtype.bits, self.numel).reshape(self.shape)

    def unpack(self) -> np.ndarray:
        """The logical values (dtype.decode of the codes)."""
        return self.dtype.decode(self.codes())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedArray):
            return NotImplemented
        same_type = (self.dtype, self.shape) == (other.dtype, other.shape)
        return same_type and bool(np.array_equal(self.data, other.data))

    __hash__ = None  # type: ignore[assignment]  # the bytes are a mutable numpy array

    def __repr__(self) -> str:
        return f"PackedArray({self.dtype.name}, shape={self.shape}, {self.nbytes} bytes)"


def pack(values: Any, t: DType | str) -> PackedArray:
    """Encode logical values (cast policy applies: pack([-8, 7], i4), pack([0.3], f4e2m1))."""
    target = dtype(t)
    codes = target.encode(values)
    return PackedArray(pack_bits(codes, target.bits), target, codes.shape)


def pack_codes(codes: Any, t: DType | str) -> PackedArray:
    """Pack raw codes, which must be integers in [0, 2^bits)."""
    target = dtype(t)
    checked = _as_codes(codes, target.bits, f"{target.name} codes")
    return PackedArray(pack_bits(checked, target.bits), target, checked.shape)
