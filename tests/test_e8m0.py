"""tilelang.dtypes.e8m0, the OCP MX scale type: every code and a dense set of inputs
against ml_dtypes' float8_e8m0fnu (the oracle the issue names), against the format's
definition, and each behaviour the type's docstring states, one by one."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang import cli, dtypes
from tilelang.dtypes import e8m0

ML = ml_dtypes.float8_e8m0fnu
ALL_CODES = np.arange(256, dtype=np.uint8)
#: ml_dtypes before 0.7 rounds float64 through float32 (docs/design.md §10).
ROUNDS_FLOAT64_ONCE = tuple(int(p) for p in ml_dtypes.__version__.split(".")[:2]) >= (0, 7)


def theirs(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x).astype(ML).view(np.uint8)


def dense_inputs() -> np.ndarray:
    """Powers of two times significands at and around every rounding boundary, over
    exponents from float64's subnormals to its overflow, both signs, and the specials."""
    significands = np.array(
        [1.0, 1.25, 1.5, 1.75, np.nextafter(1.5, 0), np.nextafter(1.5, 2), np.nextafter(2.0, 0),
         np.nextafter(1.0, 2), 1.4999999, 1.5000001, 1.999]
    )  # fmt: skip
    exponents = np.arange(-1074, 1024)
    grid = np.ldexp(significands[None, :], exponents[:, None]).ravel()
    rng = np.random.default_rng(7)
    random = np.ldexp(rng.uniform(1, 2, 20000), rng.integers(-140, 140, 20000))
    specials = [0.0, np.inf, np.nan, 5e-324, 2.0**-127, 2.0**127, 1.5 * 2.0**127, 3e38]
    positive = np.concatenate([grid, random, specials])
    return np.concatenate([positive, -positive])


def test_decode_matches_ml_dtypes_on_every_code():
    ours = e8m0.decode(ALL_CODES)
    oracle = ALL_CODES.view(ML).astype(np.float32)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours[:255].view(np.uint32), oracle[:255].view(np.uint32))
    assert np.isnan(ours[255]) and np.isnan(oracle[255])


def test_decode_is_the_definition():
    expected = [math.ldexp(1.0, c - 127) for c in range(255)]
    assert e8m0.decode(ALL_CODES)[:255].tolist() == expected


def test_encode_matches_ml_dtypes_on_float32_inputs():
    x = dense_inputs()
    with np.errstate(over="ignore", under="ignore"):
        x32 = x.astype(np.float32)
    np.testing.assert_array_equal(e8m0.encode(x32), theirs(x32))


@pytest.mark.skipif(not ROUNDS_FLOAT64_ONCE, reason="ml_dtypes < 0.7 rounds float64 via float32")
def test_encode_matches_ml_dtypes_on_float64_inputs():
    x = dense_inputs()
    np.testing.assert_array_equal(e8m0.encode(x), theirs(x))


def test_encode_matches_ml_dtypes_on_integers():
    x = np.array([0, 1, 2, 3, 5, 6, 7, 12, 1 << 40, (1 << 62) + (1 << 61), -1, -7])
    np.testing.assert_array_equal(e8m0.encode(x), theirs(x))


def test_encode_inverts_decode():
    codes = ALL_CODES[:255]
    np.testing.assert_array_equal(e8m0.encode(e8m0.decode(codes)), codes)
    np.testing.assert_array_equal(e8m0.encode(e8m0.decode(codes).astype(np.float64)), codes)


def test_encode_rounds_to_the_nearest_power_of_two_ties_up():
    """An independent nearest search in the log domain is not exact at ties, so compare
    with the arithmetic midpoint 1.5·2^e directly."""
    rng = np.random.default_rng(3)
    x = np.ldexp(rng.uniform(1, 2, 5000), rng.integers(-126, 126, 5000))
    e = np.floor(np.log2(x)).astype(np.int64)
    up = x >= 1.5 * np.ldexp(1.0, e)
    np.testing.assert_array_equal(e8m0.encode(x), (e + up + 127).astype(np.uint8))


@pytest.mark.parametrize(
    ("x", "code"),
    [
        (1.0, 127), (1.5, 128), (np.nextafter(1.5, 0), 127), (0.75, 127), (3.0, 129),
        (2.0**-127, 0), (2.0**-128, 0), (1e-300, 0), (5e-324, 0),  # below 2^-127: 2^-127
        (2.0**127, 254), (1.4 * 2.0**127, 254), (1.5 * 2.0**127, 255), (1e300, 255),
        (0.0, 255), (-0.0, 255), (-1.0, 255), (-(2.0**-130), 255),  # no zero, no sign
        (np.inf, 255), (-np.inf, 255), (np.nan, 255),
    ],
    ids=str,
)  # fmt: skip
def test_documented_behaviour(x: float, code: int):
    assert int(e8m0.encode(x)) == code
    assert int(theirs(np.array([x]))[0]) == code


def test_properties_agree_with_ml_dtypes_finfo():
    info = ml_dtypes.finfo(ML)
    assert e8m0.max == float(info.max) == 2.0**127
    assert e8m0.min == float(info.tiny) == 2.0**-127  # the smallest value: no zero, no sign
    assert e8m0.eps == float(info.eps)
    assert e8m0.smallest_normal == float(info.smallest_normal)
    assert e8m0.smallest_subnormal == float(info.smallest_subnormal)
    assert (e8m0.bits, e8m0.bias, e8m0.signed, e8m0.storage) == (8, 127, False, np.uint8)
    assert (e8m0.has_nan, e8m0.has_inf, e8m0.nan_code, e8m0.max_code) == (True, False, 255, 254)


def test_names_and_the_package_attribute():
    assert tl.e8m0 is e8m0 and dtypes.dtype("e8m0") is e8m0 and dtypes.dtype(" E8M0 ") is e8m0
    assert dtypes.dtype(ML) is e8m0 and dtypes.dtype("float8_e8m0fnu") is e8m0
    assert e8m0 in dtypes.NAMED_TYPES and str(e8m0) == repr(e8m0) == "e8m0"
    assert e8m0.is_float and not e8m0.is_int


def test_cli_lists_e8m0(capsys):
    assert cli.main(["dtypes"]) == 0
    row = next(
        line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("e8m0 ")
    )
    assert row[1:] == ["8", "float", "5.87747e-39", "1.70141e+38", "1", "5.87747e-39"]


def test_packs_decodes_ml_dtypes_arrays_and_converts():
    packed = dtypes.pack([0.25, 1.0, 6.0, -1.0], e8m0)
    np.testing.assert_array_equal(packed.codes(), [125, 127, 130, 255])
    assert np.isnan(packed.unpack()[3]) and packed.unpack()[:3].tolist() == [0.25, 1.0, 8.0]
    np.testing.assert_array_equal(e8m0.encode(np.array([0.5, 4.0], dtype=ML)), [126, 129])
    np.testing.assert_array_equal(dtypes.convert([127, 130], e8m0, dtypes.f16), [0x3C00, 0x4800])
    with pytest.raises(ValueError, match=r"e8m0 codes must lie in \[0, 255\]"):
        e8m0.decode([256])


# ------------------------------------------------- compiled code: the e8m0 recipe


@tl.kernel(warps=2)
def e8m0_to(
    codes: tl.Tensor[tl.u8, "N"],  # noqa: UP037 (a size name, not a forward reference)
    out: tl.Tensor["DST", "N"],  # noqa: UP037
    DST: tl.constexpr = tl.f32,
):
    """Each u8 code viewed as e8m0 and converted (the cast the MX matmul kernel makes)."""
    tl.store(out, [0], tl.view(tl.load(codes, [0], [256]), tl.e8m0).to(DST))


@pytest.mark.parametrize("dst", [dtypes.f32, dtypes.f16, dtypes.bf16], ids=str)
def test_the_compiled_conversion_is_bit_exact_on_every_code(dst):
    """tilelang.lowering.dequant's e8m0 recipe through the CPU backend (the per-thread
    program a GPU runs), in a tile whose codes sit at every position of their words,
    against the cast policy: 2^(c - 127) rounded once to the target (f16: to nearest
    even, overflow to inf, 2^-25 and below to 0), NaN for 0xFF."""
    shuffled = np.random.default_rng(5).permutation(ALL_CODES)
    out = dtypes.pack_codes(np.zeros(256, dst.storage), dst)
    got = e8m0_to(shuffled, out, DST=dst).codes()
    expected = dst.encode(np.ldexp(1.0, shuffled.astype(np.int64) - 127))
    # 0xFF: f16 and bf16 come out of a Cvt, with the canonical NaN; f32 is the recipe's
    # quiet NaN 0x7FC00000 (the value numpy's decode gives too).
    expected[shuffled == 0xFF] = 0x7FC00000 if dst == dtypes.f32 else dst.nan_code
    np.testing.assert_array_equal(got, expected)
    assert e8m0_to.compile(DST=dst).stats["dequant_scalar"] == 256 // 64  # codes per thread
    if dst == dtypes.f16:  # the boundaries, spelled out
        table = dict(zip(shuffled.tolist(), got.tolist(), strict=True))
        assert [table[c] for c in (101, 102, 103, 112, 113, 142, 143, 254)] == [
            0, 0, 0x0001, 0x0200, 0x0400, 0x7800, 0x7C00, 0x7C00,
        ]  # fmt: skip


def test_the_interpreter_agrees_with_the_compiled_conversion():
    codes = ALL_CODES.copy()
    out = np.zeros(256, np.float32)
    compiled = e8m0_to(codes, out.copy())
    interpreted = e8m0_to.interpret(codes, out.copy())
    np.testing.assert_array_equal(compiled[:255].view(np.uint32), interpreted[:255].view(np.uint32))
    assert np.isnan(compiled[255]) and np.isnan(interpreted[255])


def test_the_conversion_compiles_for_sm90():
    compiled = e8m0_to.compile(target="sm_90", DST=dtypes.f16)
    assert compiled.cubin and compiled.resources.spill_store_bytes == 0


# ------------------------------------------------- compiled code: encoding to e8m0


@tl.kernel(warps=2)
def to_e8m0(
    x: tl.Tensor["SRC", "N"],  # noqa: UP037
    codes: tl.Tensor[tl.u8, "N"],  # noqa: UP037
    SRC: tl.constexpr = tl.f32,
    BN: tl.constexpr = 256,
):
    """Values cast to e8m0 (an MX scale computed in a kernel), stored as their codes."""
    b = tl.blocks(tl.cdiv(N, BN))
    tl.store(codes, [b * BN], tl.view(tl.load(x, [b * BN], [BN]).to(tl.e8m0), tl.u8))


def e8m0_inputs(dtype) -> np.ndarray:
    """The documented cases (0, -0, negatives, ±inf, NaN, ties, the ends of the range,
    f32 subnormals) and powers of two with random significands across every exponent."""
    rng = np.random.default_rng(11)
    edges = [0.0, -0.0, -2.5, -0.5, np.inf, -np.inf, np.nan, 1.0, 1.5, 1.4999, 3.0, 2.0**127,
             1.5 * 2.0**127, 1.4999 * 2.0**127, 2.0**-127, 1.5 * 2.0**-127, 1.49 * 2.0**-127,
             2.0**-130, 2.0**-149, 2.0**-126, 1.5 * 2.0**-126, 3.4e38]  # fmt: skip
    spread = 2.0 ** rng.uniform(-150, 129, 3000) * rng.choice([1.0, -1.0], 3000, p=[0.9, 0.1])
    with np.errstate(over="ignore"):
        return np.concatenate([edges, spread]).astype(dtype)


@pytest.mark.parametrize(
    ("src", "dtype"),
    [("f32", np.float32), ("f64", np.float64), ("f16", np.float16), ("bf16", ml_dtypes.bfloat16)],
)
def test_the_compiled_encoding_is_ml_dtypes_cast(src, dtype):
    """0, -0, negatives and ±inf gave 2^-126, 2.0 and 2^127 (the ExMy recipe with a
    sign bit e8m0 does not have); the CPU backend now agrees with ml_dtypes' cast."""
    x = e8m0_inputs(dtype)
    with np.errstate(over="ignore"):
        expected = x.astype(np.float64).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    got = to_e8m0(x, np.zeros(len(x), np.uint8), SRC=src)
    np.testing.assert_array_equal(got, expected)
    interpreted = to_e8m0.interpret(x[:512], np.zeros(512, np.uint8), SRC=src)
    np.testing.assert_array_equal(interpreted, expected[:512])


def test_integers_encode_too_and_it_compiles_for_the_gpu():
    x = np.random.default_rng(12).integers(-1000, 2**31 - 1, 1024).astype(np.int32)
    x[:3] = (0, 1, 3)
    got = to_e8m0(x, np.zeros(1024, np.uint8), SRC="i32")
    np.testing.assert_array_equal(
        got, x.astype(np.float64).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    )
    for arch in ("sm_80", "sm_90"):
        compiled = to_e8m0.compile(target=arch, SRC="f32")
        assert compiled.cubin and compiled.resources.spill_store_bytes == 0
