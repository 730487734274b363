"""tilelang.dtypes: type properties, parsing, and the bit-exact codecs.

Oracles: ml_dtypes / numpy for the formats they know (every code decoded; encoding on
dense samples where the two cast policies agree), the format formula and an exact
nearest-even search for everything, and hand-written expected codes for the policy
decisions where tilelang and ml_dtypes differ.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes as D
from tilelang.dtypes import (
    NAMED_TYPES,
    FloatType,
    IntType,
    bf16,
    convert,
    dtype,
    f3e1m1,
    f4e2m1,
    f6e2m3,
    f6e3m2,
    f8e4m3,
    f8e5m2,
    f16,
    f32,
    f64,
    float_type,
    i4,
    i8,
    i64,
    int_type,
    quantize,
    table_rows,
    u4,
    u8,
    u64,
)

ML_FLOATS = [
    (f4e2m1, ml_dtypes.float4_e2m1fn),
    (f6e2m3, ml_dtypes.float6_e2m3fn),
    (f6e3m2, ml_dtypes.float6_e3m2fn),
    (f8e4m3, ml_dtypes.float8_e4m3fn),
    (f8e5m2, ml_dtypes.float8_e5m2),
    (bf16, ml_dtypes.bfloat16),
    (f16, np.float16),
]
ML_INTS = [
    (D.i2, ml_dtypes.int2),
    (D.i4, ml_dtypes.int4),
    (D.u2, ml_dtypes.uint2),
    (D.u4, ml_dtypes.uint4),
]
# Every finite-only ExMy with 1+E+M <= 8 that is not one of the named f8 types.
SMALL_FLOATS = [
    float_type(e, m) for e in range(1, 8) for m in range(0, 8 - e) if (e, m) not in ((4, 3), (5, 2))
]
SMALL_FLOATS_WITHOUT_ML = [t for t in SMALL_FLOATS if t not in (f4e2m1, f6e2m3, f6e3m2)]


def type_id(value: object) -> str:
    return str(value) if isinstance(value, D.DType) else getattr(value, "__name__", str(value))


def all_codes(t: D.DType) -> np.ndarray:
    return np.arange(1 << t.bits, dtype=np.uint64).astype(t.storage)


def assert_same_floats(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Bitwise equality of float32 arrays, where any NaN equals any NaN."""
    assert ours.dtype == theirs.dtype == np.float32
    nan = np.isnan(ours)
    np.testing.assert_array_equal(nan, np.isnan(theirs))
    np.testing.assert_array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32))


def assert_same_codes(t: D.FloatType, ours: np.ndarray, theirs: np.ndarray) -> None:
    """Code equality, where any NaN code equals any NaN code."""
    nan = np.isnan(t.decode(ours))
    np.testing.assert_array_equal(nan, np.isnan(t.decode(theirs)))
    np.testing.assert_array_equal(ours[~nan], theirs[~nan])


def formula_value(t: D.FloatType, code: int) -> float:
    """The value of a finite-only code, straight from the ExMy definition."""
    e, m = t.exponent_bits, t.mantissa_bits
    sign = -1.0 if (code >> (e + m)) & 1 else 1.0
    field, mantissa = (code >> m) & ((1 << e) - 1), code & ((1 << m) - 1)
    bias = 2 ** (e - 1) - 1
    if field == 0:
        return sign * mantissa * 2.0 ** (1 - bias - m)
    return sign * (1 + mantissa / 2**m) * 2.0 ** (field - bias)


def positive_finite(t: D.FloatType) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..max_code (monotonic in value) and their values as float64."""
    codes = np.arange(t.max_code + 1, dtype=np.uint64).astype(t.storage)
    return codes, t.decode(codes).astype(np.float64)


def tie_goes_up(t: D.FloatType, below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Ties go to the even code; with M = 0 every nonzero significand is the odd 1, and
    IEEE 754-2019 §4.3.1 then takes the larger magnitude (zero still counts as even)."""
    return above % 2 == 0 if t.mantissa_bits > 0 else below > 0


def nearest_even(t: D.FloatType, x: np.ndarray) -> np.ndarray:
    """Exact round-to-nearest-even of finite |x| <= max, by search over every value."""
    codes, values = positive_finite(t)
    magnitude = np.abs(x)
    below = np.clip(np.searchsorted(values, magnitude, side="right") - 1, 0, len(values) - 1)
    above = np.minimum(below + 1, len(values) - 1)
    midpoint = (values[below] + values[above]) / 2  # exact: the values have few digits
    take_above = (magnitude > midpoint) | (
        (magnitude == midpoint) & tie_goes_up(t, codes[below], codes[above])
    )
    chosen = np.where(take_above, codes[above], codes[below]).astype(np.uint64)
    sign = np.signbit(x).astype(np.uint64) << np.uint64(t.bits - 1)
    return (chosen | sign).astype(t.storage)


def dense_sample(t: D.FloatType, seed: int = 0) -> np.ndarray:
    """float32-exact values within ±max: every value, midpoints, their float32
    neighbours, the subnormal range, the top binade, and log-uniform random values."""
    rng = np.random.default_rng(seed)
    _, values = positive_finite(t)
    midpoints = ((values[:-1] + values[1:]) / 2).astype(np.float32)
    neighbours = [
        np.nextafter(midpoints, np.float32(np.inf)),
        np.nextafter(midpoints, np.float32(0)),
    ]
    subnormal = rng.uniform(0, 2 * t.smallest_normal, 2000)
    top = rng.uniform(t.max / 2, t.max, 2000)
    exponents = rng.uniform(math.log2(t.smallest_subnormal) - 3, math.log2(t.max), 4000)
    parts = [values, midpoints, *neighbours, subnormal, top, np.exp2(exponents)]
    positive = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])
    positive = positive[positive <= np.float32(t.max)]
    return np.concatenate([positive, -positive]).astype(np.float64)


# ----------------------------------------------------------------------- decoding


@pytest.mark.parametrize(("t", "ml"), ML_FLOATS, ids=type_id)
def test_decode_matches_ml_dtypes_on_every_code(t: D.FloatType, ml: type) -> None:
    codes = all_codes(t)
    assert_same_floats(t.decode(codes), codes.view(ml).astype(np.float32))


@pytest.mark.parametrize(("t", "ml"), ML_INTS, ids=type_id)
def test_int_decode_matches_ml_dtypes_on_every_code(t: D.IntType, ml: type) -> None:
    codes = all_codes(t)
    np.testing.assert_array_equal(t.decode(codes), codes.view(ml).astype(np.int64))


@pytest.mark.parametrize("t", SMALL_FLOATS, ids=type_id)
def test_small_float_decode_follows_the_formula(t: D.FloatType) -> None:
    codes = all_codes(t)
    expected = np.array([formula_value(t, int(c)) for c in codes], dtype=np.float32)
    assert_same_floats(t.decode(codes), expected)
    assert not t.has_nan and not t.has_inf


@pytest.mark.parametrize("t", [*SMALL_FLOATS, f8e4m3, f8e5m2, bf16, f16], ids=type_id)
def test_positive_codes_are_strictly_increasing_and_negatives_mirror_them(t: D.FloatType) -> None:
    positive = np.arange(t.max_code + 1, dtype=np.uint64).astype(t.storage)
    values = t.decode(positive)
    assert np.all(np.diff(values) > 0)
    negative = t.decode(positive | t.storage.type(1 << (t.bits - 1)))
    np.testing.assert_array_equal(negative, -values)
    assert np.all(np.signbit(negative))


def test_wide_float_decode_is_a_reinterpretation() -> None:
    rng = np.random.default_rng(1)
    bits32 = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    assert_same_floats(f32.decode(bits32), bits32.view(np.float32))
    bits64 = rng.integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    np.testing.assert_array_equal(f64.decode(bits64).view(np.uint64), bits64)
    assert f64.decode(bits64).dtype == np.float64


def test_decode_rejects_codes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match=r"f4e2m1 codes must lie in \[0, 15\], got 16"):
        f4e2m1.decode([3, 16])
    with pytest.raises(ValueError, match="non-negative"):
        u4.decode(np.array([-1]))
    with pytest.raises(TypeError, match="must be integers"):
        i4.decode([1.5])


# ----------------------------------------------------------------------- encoding


@pytest.mark.parametrize(("t", "ml"), ML_FLOATS, ids=type_id)
def test_encode_matches_ml_dtypes_on_a_dense_sample(t: D.FloatType, ml: type) -> None:
    x = dense_sample(t)
    theirs = x.astype(ml).view(t.storage)
    np.testing.assert_array_equal(t.encode(x), theirs)


@pytest.mark.parametrize("t", [*SMALL_FLOATS, f8e4m3, f8e5m2, bf16, f16], ids=type_id)
def test_encode_is_round_to_nearest_even_on_random_float64(t: D.FloatType) -> None:
    rng = np.random.default_rng(2)
    exponents = rng.uniform(math.log2(t.smallest_subnormal) - 2, math.log2(t.max), 5000)
    x = np.exp2(exponents) * rng.choice([-1.0, 1.0], 5000)
    x = np.concatenate([x[np.abs(x) <= t.max], dense_sample(t, seed=3)])
    np.testing.assert_array_equal(t.encode(x), nearest_even(t, x))


@pytest.mark.parametrize("t", [*SMALL_FLOATS_WITHOUT_ML, f4e2m1, f8e4m3], ids=type_id)
def test_ties_go_to_the_even_code_and_neighbours_do_not_tie(t: D.FloatType) -> None:
    codes, values = positive_finite(t)
    midpoints = (values[:-1] + values[1:]) / 2
    even = np.where(tie_goes_up(t, codes[:-1], codes[1:]), codes[1:], codes[:-1])
    np.testing.assert_array_equal(t.encode(midpoints), even)
    np.testing.assert_array_equal(t.encode(np.nextafter(midpoints, np.inf)), codes[1:])
    np.testing.assert_array_equal(t.encode(np.nextafter(midpoints, -np.inf)), codes[:-1])
    sign = t.storage.type(1 << (t.bits - 1))
    np.testing.assert_array_equal(t.encode(-midpoints), even | sign)


@pytest.mark.parametrize("t", [*SMALL_FLOATS, f8e4m3, f8e5m2, bf16, f16, f32], ids=type_id)
def test_encode_inverts_decode_on_every_code(t: D.FloatType) -> None:
    codes = all_codes(t) if t.bits <= 16 else np.arange(0, 2**32, 65521, dtype=np.uint32)
    values = t.decode(codes)
    # NaN codes map to the one canonical NaN, and inf saturates in f8e5m2.
    keep = np.isfinite(values) | (np.isinf(values) & (not t.saturates))
    np.testing.assert_array_equal(t.encode(values[keep]), codes[keep])
    np.testing.assert_array_equal(t.encode(values[keep].astype(np.float64)), codes[keep])


def test_negative_zero_and_tiny_negatives_keep_the_sign_bit() -> None:
    for t in (f3e1m1, f4e2m1, f8e4m3, f16, f32):
        sign = 1 << (t.bits - 1)
        assert t.encode(-0.0) == sign
        assert t.encode(-t.smallest_subnormal / 4) == sign
        assert t.encode(0.0) == 0


def test_float64_input_is_rounded_once_not_through_float32() -> None:
    # float32(x) is the midpoint exactly; the true x lies just above it.
    assert f4e2m1.encode(1.25 + 2**-40) == 0x3  # 1.5
    assert f8e4m3.encode(1 + 2**-4 + 2**-40) == 0x39  # 1.125
    assert bf16.encode(1 + 2**-8 + 2**-40) == 0x3F81
    assert f16.encode(1 + 2**-11 + 2**-40) == 0x3C01
    rng = np.random.default_rng(4)
    x = rng.standard_normal(20000) * np.exp2(rng.integers(-140, 120, 20000))
    np.testing.assert_array_equal(f32.encode(x), x.astype(np.float32).view(np.uint32))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=64), max_size=50))
def test_f16_encode_matches_numpy_on_any_float64(values: list[float]) -> None:
    x = np.array(values, dtype=np.float64)
    with np.errstate(over="ignore"):  # numpy's IEEE overflow to inf is our f16 policy too
        theirs = x.astype(np.float16).view(np.uint16)
    assert_same_codes(f16, f16.encode(x), theirs)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_f64_encode_inverts_decode_on_any_non_nan_bits(bits: list[int]) -> None:
    codes = np.array(bits, dtype=np.uint64)
    keep = ~np.isnan(f64.decode(codes))
    np.testing.assert_array_equal(f64.encode(f64.decode(codes))[keep], codes[keep])


def test_integers_are_rounded_exactly_not_through_float64() -> None:
    # 2^60 + 2^36 + 1 is just above a float32 midpoint; float64 would round it onto it.
    x = np.array([2**60 + 2**36 + 1, -(2**60 + 2**36 + 1), 2**63 - 1, -(2**63)], dtype=np.int64)
    expected = np.array([2.0**60 + 2.0**37, -(2.0**60 + 2.0**37), 2.0**63, -(2.0**63)], np.float32)
    np.testing.assert_array_equal(f32.encode(x), expected.view(np.uint32))
    assert f64.encode(np.uint64(2**64 - 1)) == np.float64(2.0**64).view(np.uint64)
    np.testing.assert_array_equal(
        convert(x[:1].view(np.uint64), i64, f32), expected[:1].view(np.uint32)
    )


@pytest.mark.parametrize(
    ("t", "value", "code"),
    [
        (f4e2m1, 7.0, 0x7), (f4e2m1, 1e30, 0x7), (f4e2m1, -np.inf, 0xF), (f4e2m1, np.nan, 0x7),
        (f6e2m3, 8.0, 0x1F), (f6e2m3, np.nan, 0x1F), (f6e3m2, -30.0, 0x3F), (f6e3m2, np.nan, 0x1F),
        (f3e1m1, 3.5, 0x3), (f3e1m1, -np.nan, 0x3),
        (f8e4m3, 464.0, 0x7E), (f8e4m3, 465.0, 0x7E), (f8e4m3, np.inf, 0x7E), (f8e4m3, -1e9, 0xFE),
        (f8e4m3, np.nan, 0x7F), (f8e4m3, -np.nan, 0x7F),
        (f8e5m2, 61439.0, 0x7B), (f8e5m2, 61440.0, 0x7B), (f8e5m2, np.inf, 0x7B),
        (f8e5m2, -np.inf, 0xFB), (f8e5m2, np.nan, 0x7F),
        (f16, 65519.0, 0x7BFF), (f16, 65520.0, 0x7C00), (f16, -np.inf, 0xFC00), (f16, np.nan, 0x7FFF),
        (bf16, 3.4e38, 0x7F80), (bf16, np.nan, 0x7FFF),
        (f32, 1e39, 0x7F80_0000), (f32, -np.inf, 0xFF80_0000), (f32, np.nan, 0x7FFF_FFFF),
        (f64, np.nan, 0x7FFF_FFFF_FFFF_FFFF), (f64, -np.inf, 0xFFF0_0000_0000_0000),
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_overflow_infinity_and_nan_follow_the_cast_policy(
    t: D.FloatType, value: float, code: int
) -> None:
    assert int(t.encode(value)) == code


def test_documented_differences_from_ml_dtypes() -> None:
    """Each claim of the module docstring, with ml_dtypes' own answer beside ours where
    ml_dtypes defines one. Where its result is undefined (NaN into a type without NaN,
    an out-of-range float -> int cast: undefined behaviour in its C++, so it differs
    between machines) only our answer is asserted."""

    def theirs(value: float, ml: type) -> int:
        return int(np.array([value]).astype(ml).view(np.uint8)[0])

    # f8e4m3fn: overflow and inf give NaN there, ±max here.
    assert theirs(465.0, ml_dtypes.float8_e4m3fn) == 0x7F and int(f8e4m3.encode(465.0)) == 0x7E
    assert theirs(np.inf, ml_dtypes.float8_e4m3fn) == 0x7F and int(f8e4m3.encode(np.inf)) == 0x7E
    # f8e5m2: overflow and inf give inf there, max here (satfinite).
    assert theirs(61440.0, ml_dtypes.float8_e5m2) == 0x7C and int(f8e5m2.encode(61440.0)) == 0x7B
    assert theirs(np.inf, ml_dtypes.float8_e5m2) == 0x7C and int(f8e5m2.encode(np.inf)) == 0x7B
    # Finite-only f4/f6: ml_dtypes documents their NaN as undefined; +max here (PTX satfinite).
    assert int(f4e2m1.encode(np.nan)) == 0x7 and int(f6e3m2.encode(np.nan)) == 0x1F
    # NaN sign: kept there, canonical positive NaN here.
    assert theirs(-np.nan, ml_dtypes.float8_e5m2) >= 0x80 and int(f8e5m2.encode(-np.nan)) == 0x7F
    # Integers: in range, float input is truncated toward zero there, rounded to nearest
    # even here; out of range, saturated here (ml_dtypes' result is undefined).
    in_range = np.array([5.5, -3.5, 2.5, -2.5])
    assert in_range.astype(ml_dtypes.int4).astype(int).tolist() == [5, -3, 2, -2]
    assert i4.decode(i4.encode(in_range)).tolist() == [6, -4, 2, -2]
    assert i4.decode(i4.encode([300.0, -300.0, 8.0, -9.0])).tolist() == [7, -8, 7, -8]
    # float64 is rounded once here (1.5). ml_dtypes before 0.7 rounds it through float32
    # first, onto the midpoint 1.25, which then ties to even (1.0); 0.7 rounds once too.
    x = 1.25 + 2**-40
    assert int(f4e2m1.encode(x)) == 0x3 and int(f4e2m1.encode(np.float32(x))) == 0x2
    rounds_once = tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2]) >= (0, 7)
    assert theirs(x, ml_dtypes.float4_e2m1fn) == (0x3 if rounds_once else 0x2)


def test_encode_accepts_ml_dtypes_arrays_and_python_scalars() -> None:
    np.testing.assert_array_equal(
        f16.encode(np.array([1.5, -2], dtype=ml_dtypes.bfloat16)), [0x3E00, 0xC000]
    )
    np.testing.assert_array_equal(i4.encode(np.array([-8, 7], dtype=ml_dtypes.int4)), [8, 7])
    assert f4e2m1.encode(True) == 0x2 and f4e2m1.encode(3).shape == ()
    with pytest.raises(TypeError, match="real numbers"):
        f16.encode(np.array([1j]))
    with pytest.raises(TypeError, match="real numbers"):
        i8.encode(["a"])


# ----------------------------------------------------------------------- integers


def twos_complement(t: D.IntType, code: int) -> int:
    return code - (1 << t.bits) if t.signed and code >= 1 << (t.bits - 1) else code


INT_TYPES = [t for t in NAMED_TYPES if isinstance(t, IntType)]


@pytest.mark.parametrize("t", [t for t in INT_TYPES if t.bits <= 16], ids=type_id)
def test_int_decode_is_twos_complement_and_encode_inverts_it(t: D.IntType) -> None:
    codes = all_codes(t)
    values = t.decode(codes)
    np.testing.assert_array_equal(values, [twos_complement(t, int(c)) for c in codes])
    assert values.min() == t.min and values.max() == t.max
    np.testing.assert_array_equal(t.encode(values), codes)


@pytest.mark.parametrize("t", [t for t in INT_TYPES if t.bits >= 32], ids=type_id)
def test_wide_int_extremes(t: D.IntType) -> None:
    edges = [t.min, t.min + 1, -1 if t.signed else 1, 0, t.max - 1, t.max]
    values = np.array(edges, dtype=t.value_dtype)
    np.testing.assert_array_equal(t.decode(t.encode(values)), values)
    assert t.decode(t.encode(t.max)).dtype == t.value_dtype
    assert int(t.encode(t.max)) == (t.max if not t.signed else (1 << (t.bits - 1)) - 1)


def saturate_reference(t: D.IntType, value: float | int) -> int:
    if isinstance(value, float):
        if math.isnan(value):
            return 0
        if math.isinf(value):
            return t.max if value > 0 else t.min
        value = round(value)  # Python rounds floats half to even
    return min(max(value, t.min), t.max)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(INT_TYPES),
    st.lists(
        st.one_of(
            st.integers(-(2**66), 2**66),
            st.floats(allow_nan=True),
            st.sampled_from([0.5, 1.5, 2.5, -2.5, -0.5]),
        )
    ),
)
def test_int_encode_rounds_half_even_and_saturates(t: D.IntType, values: list) -> None:
    for value in values:  # one at a time: a list mixing ints and floats would turn float
        code = int(t.encode(value))
        assert twos_complement(t, code) == saturate_reference(t, value), value


def test_int_saturation_examples() -> None:
    np.testing.assert_array_equal(
        i4.encode([-9, -8, 7, 8, 2.5, 3.5, -2.5, np.nan, -np.inf]), [8, 8, 7, 7, 2, 4, 14, 0, 8]
    )
    np.testing.assert_array_equal(u4.encode([-1, 16, 15.5, 14.5, -0.4]), [0, 15, 15, 14, 0])
    assert int(i64.encode(np.uint64(2**64 - 1))) == 2**63 - 1
    assert int(u64.encode(-(2**63))) == 0 and int(u64.encode(1.9e19)) == 2**64 - 1
    assert int(u64.encode(2**64 - 1)) == 2**64 - 1  # a Python int beyond int64
    np.testing.assert_array_equal(i8.encode([2**70, -(2**70)]), [0x7F, 0x80])


# ---------------------------------------------------------------------- properties


@pytest.mark.parametrize(
    ("t", "attribute", "expected"),
    [
        (f16, "eps", 2.0**-10), (f16, "max", 65504.0), (f16, "smallest_normal", 2.0**-14),
        (f16, "smallest_subnormal", 2.0**-24), (bf16, "max", float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
        (f8e4m3, "max", 448.0), (f8e4m3, "smallest_subnormal", 2.0**-9), (f8e4m3, "bias", 7),
        (f8e5m2, "max", 57344.0), (f8e5m2, "smallest_subnormal", 2.0**-16), (f4e2m1, "max", 6.0),
        (f4e2m1, "min", -6.0), (f4e2m1, "smallest_subnormal", 0.5), (f6e3m2, "max", 28.0),
        (f6e2m3, "max", 7.5), (f6e2m3, "eps", 0.125), (f3e1m1, "max", 3.0), (f3e1m1, "bias", 0),
        (float_type(2, 2), "max", 7.0), (float_type(3, 3), "max", 30.0), (float_type(4, 1), "max", 384.0),
        (f32, "max", float(np.finfo(np.float32).max)), (f64, "smallest_subnormal", 5e-324),
        (u4, "max", 15), (u4, "min", 0), (i4, "min", -8), (i4, "max", 7), (D.i1, "min", -1),
        (u64, "max", 2**64 - 1), (i64, "min", -(2**63)), (u8, "storage", np.dtype(np.uint8)),
        (D.u16, "storage", np.dtype(np.uint16)), (D.int_type(24, False), "storage", np.dtype(np.uint32)),
        (f64, "storage", np.dtype(np.uint64)), (f64, "value_dtype", np.dtype(np.float64)),
        (bf16, "value_dtype", np.dtype(np.float32)), (u64, "value_dtype", np.dtype(np.uint64)),
    ],
    ids=lambda v: str(v),
)  # fmt: skip
def test_known_properties(t: D.DType, attribute: str, expected: object) -> None:
    value = getattr(t, attribute)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("t", "ml"), ML_FLOATS, ids=type_id)
def test_properties_agree_with_ml_dtypes_finfo(t: D.FloatType, ml: type) -> None:
    info = ml_dtypes.finfo(ml)
    assert t.max == float(info.max) and t.min == float(info.min)
    assert t.eps == float(info.eps)
    assert t.smallest_normal == float(info.smallest_normal)
    assert t.smallest_subnormal == float(info.smallest_subnormal)


def test_special_value_conventions() -> None:
    assert (f16.has_inf, f16.has_nan, f16.saturates) == (True, True, False)
    assert (f8e5m2.has_inf, f8e5m2.has_nan, f8e5m2.saturates) == (True, True, True)
    assert (f8e4m3.has_inf, f8e4m3.has_nan, f8e4m3.specials) == (False, True, "fn")
    assert (f4e2m1.has_inf, f4e2m1.has_nan, f4e2m1.specials) == (False, False, "none")
    assert (f8e4m3.nan_code, f8e4m3.inf_code, f8e5m2.inf_code, f4e2m1.nan_code) == (
        0x7F,
        None,
        0x7C,
        None,
    )


@pytest.mark.parametrize("t", [*SMALL_FLOATS, f8e4m3, f8e5m2, bf16, f16, f32, f64], ids=type_id)
def test_float_properties_follow_from_the_format(t: D.FloatType) -> None:
    e, m = t.exponent_bits, t.mantissa_bits
    assert t.bias == 2 ** (e - 1) - 1 and t.bits == 1 + e + m
    assert t.decode(np.array([t.max_code], dtype=t.storage))[0] == t.max
    assert t.smallest_subnormal == 2.0 ** (1 - t.bias - m) and t.eps == 2.0**-m
    assert t.decode(np.array([1], dtype=t.storage))[0] == t.smallest_subnormal
    assert t.min == -t.max and t.is_float and not t.is_int and t.signed


# ------------------------------------------------------------------ names, parsing


def test_named_types_round_trip_through_their_names() -> None:
    assert len({t.name for t in NAMED_TYPES}) == len(NAMED_TYPES) == 33
    for t in NAMED_TYPES:
        assert str(t) == repr(t) == t.name
        assert dtype(t.name) is t and dtype(t) is t
        assert hash(dtype(t.name)) == hash(t)
        assert getattr(D, t.name) is t


@pytest.mark.parametrize("t", SMALL_FLOATS, ids=type_id)
def test_every_small_float_name_parses(t: D.FloatType) -> None:
    name = f"f{t.bits}e{t.exponent_bits}m{t.mantissa_bits}"
    assert t.name == name and dtype(name) == t == FloatType(t.exponent_bits, t.mantissa_bits)


def test_constructors_return_the_named_instances() -> None:
    assert float_type(4, 3) is f8e4m3 and float_type(5, 2) is f8e5m2 and float_type(5, 10) is f16
    assert float_type(2, 1) is f4e2m1 and FloatType(8, 7) == bf16
    assert int_type(4, True) is i4 and int_type(64, False) is u64
    assert int_type(12, False) == IntType(12, False) and dtype("u12").max == 4095
    assert dtype("i24").min == -(2**23)


@pytest.mark.parametrize(
    ("alias", "t"),
    [("float16", f16), ("bfloat16", bf16), (" F32 ", f32), ("double", f64), ("int8", i8),
     ("uint4", u4), ("float8_e4m3fn", f8e4m3), ("float4_e2m1fn", f4e2m1), ("torch.float16", f16),
     (np.float16, f16), (np.dtype(np.uint8), u8), (ml_dtypes.float6_e3m2fn, f6e3m2), (ml_dtypes.int4, i4)],
    ids=lambda v: str(v),
)  # fmt: skip
def test_aliases(alias: object, t: D.DType) -> None:
    assert dtype(alias) is t


@pytest.mark.parametrize(
    "name", ["", "x8", "u0", "i65", "f9e4m4", "f8e4m4", "f4e0m3", "f2e0m1", "f", "float128", "u-3"]
)
def test_bad_names_raise_with_the_valid_forms(name: str) -> None:
    with pytest.raises(ValueError, match="valid forms") as info:
        dtype(name)
    assert repr(name) in str(info.value)


def test_constructor_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"1\+E\+M <= 8.*E=4, M=4 \(9 bits\)"):
        float_type(4, 4)
    with pytest.raises(ValueError, match="E >= 1"):
        float_type(0, 3)
    with pytest.raises(ValueError, match="E >= 1"):
        float_type(2, -1)
    with pytest.raises(ValueError, match="f8e4m3 is 'fn'"):
        FloatType(4, 3, "none")
    with pytest.raises(ValueError, match="finite-only"):
        FloatType(2, 1, "ieee")
    with pytest.raises(ValueError, match=r"1\.\.64"):
        int_type(0, True)
    with pytest.raises(TypeError, match="bool"):
        IntType(4, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="says 7 bits"):
        dtype("f7e2m3")


def test_types_are_frozen() -> None:
    with pytest.raises(AttributeError):
        f16.exponent_bits = 4  # type: ignore[misc]
    with pytest.raises(AttributeError):
        u4.bits = 5  # type: ignore[misc]


# ------------------------------------------------------------- convert, quantize, table


def test_convert_applies_each_targets_policy() -> None:
    big = f32.encode([1e5, -1e5, np.nan])
    np.testing.assert_array_equal(convert(big, f32, f16), [0x7C00, 0xFC00, 0x7FFF])
    np.testing.assert_array_equal(convert(big, "f32", "f8e5m2"), [0x7B, 0xFB, 0x7F])
    np.testing.assert_array_equal(convert(big, f32, f4e2m1), [0x7, 0xF, 0x7])
    np.testing.assert_array_equal(convert(big, f32, i8), [0x7F, 0x80, 0])
    np.testing.assert_array_equal(
        convert(np.arange(256, dtype=np.uint8), i8, u4)[126:131], [15, 15, 0, 0, 0]
    )
    np.testing.assert_array_equal(convert(f16.encode([2.5, -3.5, 100.0]), f16, i4), [2, 0xC, 7])
    np.testing.assert_array_equal(
        convert(i4.encode([-8, 7]), i4, f8e4m3), f8e4m3.encode([-8.0, 7.0])
    )
    codes = all_codes(f8e4m3)
    np.testing.assert_array_equal(
        convert(convert(codes, f8e4m3, f16), f16, f8e4m3)[:127], codes[:127]
    )


def test_quantize_returns_the_representable_values() -> None:
    np.testing.assert_array_equal(
        quantize([0.3, 2.5, 100.0, -0.1], f4e2m1), np.float32([0.5, 2.0, 6.0, -0.0])
    )
    np.testing.assert_array_equal(quantize([2.5, 300], "i8"), [2, 127])


def test_table_rows_cover_every_named_type() -> None:
    rows = {row.name: row for row in table_rows()}
    assert list(rows) == [t.name for t in NAMED_TYPES]
    assert rows["u4"] == ("u4", 4, False, 0, 15, None, None)
    assert rows["i4"].min == -8 and rows["f8e4m3"].max == 448.0
    assert rows["f4e2m1"] == ("f4e2m1", 4, True, -6.0, 6.0, 0.5, 0.5)
    assert rows["f16"].smallest_subnormal == 2.0**-24
