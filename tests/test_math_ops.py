"""The math and bit operations a Triton port reaches for (`tl.asin`, `tl.acos`, `tl.atan`,
`tl.atan2`, `tl.sinh`, `tl.cosh`, `tl.pow`, `tl.cbrt`, `tl.popc`, `tl.clz`, `tl.brev`,
`tl.umulhi`): rows of `tilelang.ir.ops.ELEMENTWISE`, each checked on the CPU backend and
the interpreter against an oracle written here (numpy's float64 functions rounded to
f32 with an ulp bound; pure-Python bit counting for the integer ones), at the edges
(0, ±1, ±inf, NaN, negative bases, 0 and all ones), compiled for sm_80 with the CUDA
math library's names; then the errors a porter meets (`tl.math.asin`, `tl.popcount`,
0xFFFFFFFF on an i32 tile) and viewing a runtime scalar's bits as u32."""

import re

import numpy as np
import pytest
from conftest import assert_reported, compile_error, run_both

import tilelang as tl
from tilelang.ir.ops import ELEMENTWISE
from tilelang.runtime.nvrtc import NvrtcUnavailableError

N = 128
FLOAT_UNARY = ("asin", "acos", "atan", "sinh", "cosh", "cbrt")
FLOAT_BINARY = ("atan2", "pow")
FUNCTIONS = {name: getattr(tl, name, None) for name in (*FLOAT_UNARY, *FLOAT_BINARY)}
FUNCTIONS.update({name: getattr(tl, name, None) for name in ("popc", "clz", "brev", "umulhi")})

#: Ulps of f32 that the CPU backend (and the interpreter: float64 rounded once) may be
#: from the correctly rounded value; ops.py's docstring states them.
ULPS = {"asin": 1, "acos": 1, "atan": 1, "cbrt": 1, "atan2": 1, "sinh": 2, "cosh": 2, "pow": 2}
ORACLES = {
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "cbrt": np.cbrt,
    "atan2": np.arctan2,
    "pow": np.power,
}
EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, np.inf, -np.inf, np.nan, 1.0000001, -1.0000001]


@tl.kernel(warps=4)
def unary(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], FN: tl.constexpr = "asin"):
    tl.store(y, [0], FUNCTIONS[FN](tl.load(x, [0], [128])))


@tl.kernel(warps=4)
def binary(
    x: tl.Tensor["T", "N"],
    z: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    FN: tl.constexpr,
    T: tl.constexpr = tl.f32,
):
    tl.store(y, [0], FUNCTIONS[FN](tl.load(x, [0], [128]), tl.load(z, [0], [128])))


def ulps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """f32 steps between a and b (-0 and +0 at one place); 0 where both are NaN, huge
    where one only is."""

    def ordered(v: np.ndarray) -> np.ndarray:
        magnitude = (v.view(np.int32) & 0x7FFFFFFF).astype(np.int64)
        return np.where(np.signbit(v), -magnitude, magnitude)

    apart = np.abs(ordered(a) - ordered(b))
    both_nan, one_nan = np.isnan(a) & np.isnan(b), np.isnan(a) != np.isnan(b)
    return np.where(both_nan, 0, np.where(one_nan, 2**40, apart))


def oracle(fn: str, *args: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return ORACLES[fn](*(a.astype(np.float64) for a in args)).astype(np.float32)


def unary_inputs(fn: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    span = {"asin": 1.0, "acos": 1.0, "sinh": 89.0, "cosh": 89.0}.get(fn, 1e6)
    x = np.concatenate([EDGES, rng.uniform(-span, span, N), rng.uniform(-2, 2, N)])
    return x[:N].astype(np.float32) if fn != "cbrt" else np.append(x[: N - 3], [8, -27, 1e-30])


@pytest.mark.parametrize("fn", FLOAT_UNARY)
def test_float_functions_are_within_their_ulps_on_both_paths(fn):
    x = unary_inputs(fn).astype(np.float32)
    compiled, interpreted = run_both(unary, [x], [np.zeros(N, np.float32)], FN=fn)
    want = oracle(fn, x)
    assert ulps_apart(interpreted, want).max() <= 1, fn  # float64 rounded once
    worst = ulps_apart(compiled, want)
    assert worst.max() <= ULPS[fn], (fn, x[worst.argmax()], compiled[worst.argmax()])
    # Zeros (with their signs), infinities and NaN exactly as C's functions give them.
    exact = (want == 0) | np.isinf(want) | np.isnan(want)
    assert exact[: len(EDGES)].sum() >= 3, fn
    np.testing.assert_array_equal(compiled[exact], want[exact])
    zero = want == 0
    assert (np.signbit(compiled[zero]) == np.signbit(want[zero])).all(), fn


def test_asin_and_acos_outside_their_domain_are_nan():
    x = np.array([1.0000001, -1.0000001, 2.0, -np.inf] * 32, np.float32)
    for fn in ("asin", "acos"):
        compiled, interpreted = run_both(unary, [x], [np.zeros(N, np.float32)], FN=fn)
        assert np.isnan(compiled).all() and np.isnan(interpreted).all(), fn


POW_CASES = [  # base, exponent, C's pow (Annex F)
    (-2.0, 3.0, -8.0),
    (-2.0, 2.0, 4.0),
    (-8.0, 1.0 / 3.0, np.nan),  # a negative base with a non-integer exponent
    (-2.0, 0.5, np.nan),
    (0.0, -1.0, np.inf),
    (-0.0, -1.0, -np.inf),
    (-0.0, 3.0, -0.0),
    (np.nan, 0.0, 1.0),
    (1.0, np.nan, 1.0),
    (-1.0, np.inf, 1.0),
    (0.5, np.inf, 0.0),
    (2.0, -np.inf, 0.0),
    (-np.inf, 3.0, -np.inf),
    (2.0, 10.0, 1024.0),
]
ATAN2_CASES = [  # ordinate, abscissa, C's atan2
    (0.0, 1.0, 0.0),
    (-0.0, 1.0, -0.0),
    (0.0, -1.0, np.float32(np.pi)),
    (-0.0, -1.0, -np.float32(np.pi)),
    (1.0, -1.0, np.float32(3 * np.pi / 4)),
    (1.0, 0.0, np.float32(np.pi / 2)),
    (np.inf, np.inf, np.float32(np.pi / 4)),
    (np.nan, 1.0, np.nan),
]


@pytest.mark.parametrize(("fn", "cases"), [("pow", POW_CASES), ("atan2", ATAN2_CASES)])
def test_pow_and_atan2_edges_and_values(fn, cases):
    rng = np.random.default_rng(2)
    x, z = rng.uniform(0.01, 8, N).astype(np.float32), rng.uniform(-9, 9, N).astype(np.float32)
    if fn == "atan2":
        x = x * rng.choice([-1, 1], N).astype(np.float32)
    for i, (a, b, _) in enumerate(cases):
        x[i], z[i] = a, b
    compiled, interpreted = run_both(binary, [x, z], [np.zeros(N, np.float32)], FN=fn)
    want = oracle(fn, x, z)
    expected = np.array([c for _, _, c in cases], np.float32)
    np.testing.assert_array_equal(want[: len(cases)], expected)  # the oracle is C's
    for got in (compiled, interpreted):
        np.testing.assert_array_equal(got[: len(cases)], expected)
        assert ulps_apart(got, want).max() <= ULPS[fn], fn


def test_pow_and_atan2_in_f64():
    x = np.array([-2.0, 2.0, 0.5, 3.0] * 32)
    z = np.array([3.0, 0.5, -1.5, 2.0] * 32)
    for fn in FLOAT_BINARY:
        compiled, interpreted = run_both(binary, [x, z], [np.zeros(N)], FN=fn, T=tl.f64)
        want = ORACLES[fn](x, z)
        np.testing.assert_allclose(compiled, want, rtol=4e-16)
        np.testing.assert_allclose(interpreted, want, rtol=0)


# -- integer bit operations ------------------------------------------------------------


def python_bits(value: int, bits: int) -> int:
    return value % (1 << bits)


def python_popc(value: int, bits: int) -> int:
    word, count = python_bits(value, bits), 0
    while word:
        count += word & 1
        word >>= 1
    return count


def python_clz(value: int, bits: int) -> int:
    word = python_bits(value, bits)
    return next((bits - 1 - i for i in reversed(range(bits)) if word >> i & 1), bits)


def python_brev(value: int, bits: int) -> int:
    word = python_bits(value, bits)
    return int(format(word, f"0{bits}b")[::-1], 2)


def python_umulhi(a: int, b: int, bits: int) -> int:
    return python_bits(a, bits) * python_bits(b, bits) >> bits


def signed_view(word: int, dtype: np.dtype) -> int:
    """The unsigned `word` as a value of the integer dtype (two's complement)."""
    return int(np.array([word], np.uint64).astype(np.dtype(f"u{dtype.itemsize}")).view(dtype)[0])


@tl.kernel(warps=4)
def bit_ops(
    x: tl.Tensor["T", "N"],
    z: tl.Tensor["T", "N"],
    popc: tl.Tensor[tl.i32, "N"],
    clz: tl.Tensor[tl.i32, "N"],
    brev: tl.Tensor["T", "N"],
    hi: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.u32,
):
    a, b = tl.load(x, [0], [128]), tl.load(z, [0], [128])
    counted, leading = tl.popc(a), tl.clz(a)
    assert counted.dtype == tl.i32 and leading.dtype == tl.i32  # whatever T's width
    tl.store(popc, [0], counted)
    tl.store(clz, [0], leading)
    tl.store(brev, [0], tl.brev(a))
    tl.store(hi, [0], tl.umulhi(a, b))


@pytest.mark.parametrize("np_dtype", [np.uint32, np.int32, np.uint64, np.int64])
def test_bit_operations_against_python_bit_counting(np_dtype):
    info, bits = np.iinfo(np_dtype), np.dtype(np_dtype).itemsize * 8
    rng = np.random.default_rng(bits + (info.min < 0))
    edges = [0, 1, 2, info.max, info.min, -1 if info.min else info.max - 1, 1 << (bits - 2)]
    edges += [
        signed_view(1 << (bits - 1), np.dtype(np_dtype)),
        signed_view((1 << bits) - 1, np.dtype(np_dtype)),
    ]
    x = np.concatenate(
        [np.array(edges, np_dtype), rng.integers(info.min, info.max, N, np_dtype, True)]
    )[:N]
    z = np.concatenate(
        [np.array(edges[::-1], np_dtype), rng.integers(info.min, info.max, N, np_dtype, True)]
    )[:N]
    outputs = [
        np.zeros(N, np.int32),
        np.zeros(N, np.int32),
        np.zeros(N, np_dtype),
        np.zeros(N, np_dtype),
    ]
    dtype = tl.dtype(np.dtype(np_dtype).name.replace("uint", "u").replace("int", "i"))
    compiled, interpreted = run_both(bit_ops, [x, z], outputs, T=dtype)
    ints = [int(v) for v in x]
    want = (
        [python_popc(v, bits) for v in ints],
        [python_clz(v, bits) for v in ints],
        [signed_view(python_brev(v, bits), np.dtype(np_dtype)) for v in ints],
        [
            signed_view(python_umulhi(v, int(w), bits), np.dtype(np_dtype))
            for v, w in zip(ints, z, strict=True)
        ],
    )
    for name, got_c, got_i, expected in zip(
        ("popc", "clz", "brev", "umulhi"), compiled, interpreted, want, strict=True
    ):
        assert got_c.tolist() == expected, (name, np_dtype)
        assert got_i.tolist() == expected, (name, np_dtype)
    assert compiled[0][0] == 0 and compiled[1][0] == bits  # popc(0), clz(0): the width
    all_ones = signed_view((1 << bits) - 1, np.dtype(np_dtype))
    assert compiled[0][list(x).index(all_ones)] == bits


# -- compiled for the GPU -----------------------------------------------------------------

CUDA_NAMES = {
    ("f32", "unary"): ["asinf(", "acosf(", "atanf(", "sinhf(", "coshf(", "cbrtf("],
    ("f32", "binary"): ["atan2f(", "powf("],
    ("f64", "binary"): ["atan2(", "pow("],
    ("u32", "bits"): ["__popc(", "__clz(", "__brev(", "__umulhi("],
    ("i64", "bits"): ["__popcll(", "__clzll(", "__brevll(", "__umul64hi("],
}


def cuda_source(kernel, **constexprs) -> str:
    try:
        return kernel.compile(target="sm_80", **constexprs).source  # NVRTC compiles it too
    except NvrtcUnavailableError:
        pytest.skip("NVRTC is not installed: the CUDA source cannot be checked to compile")


@pytest.mark.parametrize(("dtype", "kind"), sorted(CUDA_NAMES))
def test_sm80_builds_call_the_cuda_math_library(dtype, kind):
    sources = []
    if kind == "unary":
        sources = [cuda_source(unary, FN=fn) for fn in FLOAT_UNARY]
    elif kind == "binary":
        sources = [cuda_source(binary, FN=fn, T=dtype) for fn in FLOAT_BINARY]
    else:
        sources = [cuda_source(bit_ops, T=dtype)]
    text = "\n".join(sources)
    for name in CUDA_NAMES[dtype, kind]:
        assert re.search(rf"(?<![\w]){re.escape(name)}", text), name


# -- what a porter meets ------------------------------------------------------------------


def test_the_rows_say_their_result_types():
    assert ELEMENTWISE["popc"].result_dtype(tl.u64) == tl.i32
    assert ELEMENTWISE["clz"].result_dtype(tl.i64) == tl.i32
    assert ELEMENTWISE["brev"].result_dtype(tl.u64) == tl.u64
    assert ELEMENTWISE["umulhi"].result_dtype(tl.i32) == tl.i32


def test_bit_operations_refuse_narrow_and_float_operands():
    @tl.kernel(warps=4)
    def narrow(x: tl.Tensor[tl.u8, "N"], y: tl.Tensor[tl.i32, "N"]):
        tl.store(y, [0], tl.popc(tl.load(x, [0], [128])))  # <- error

    assert_reported(narrow, "`popc` needs 32- or 64-bit integer operands, got u8", ".to(tl.u32)")

    @tl.kernel(warps=4)
    def floats(x: tl.Tensor[tl.f32, "N"]):
        tl.store(x, [0], tl.asin(tl.load(x, [0], [128]).to(tl.i32)).to(tl.f32))  # <- error

    assert_reported(floats, "`asin` needs float operands, got i32")


def test_triton_spellings_point_at_the_tilelang_functions_and_the_list():
    @tl.kernel(warps=4)
    def math_module(x: tl.Tensor[tl.f32, "N"]):
        tl.store(x, [0], tl.math.asin(tl.load(x, [0], [128])))  # <- error

    assert_reported(math_module, "unknown operation `tilelang.math`", "`tl.asin(x)`", "docs/ops.md")

    @tl.kernel(warps=4)
    def popcount(x: tl.Tensor[tl.u32, "N"]):
        tl.store(x, [0], tl.popcount(tl.load(x, [0], [128])))  # <- error

    assert_reported(popcount, "did you mean tilelang.popc", "docs/ops.md")

    @tl.kernel(warps=4)
    def leading(x: tl.Tensor[tl.u32, "N"]):
        tl.store(x, [0], tl.count_leading_zeros(tl.load(x, [0], [128])))  # <- error

    assert_reported(leading, "did you mean tilelang.clz", "docs/ops.md lists every operation")


def test_constants_too_big_for_i32_suggest_viewing_the_tile_as_u32():
    @tl.kernel(warps=4)
    def masked(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], tl.load(x, [0], [128]) & 0xFFFFFFFF)  # <- error

    assert_reported(masked, "the constant 4294967295 does not fit dtype i32", "tl.view(x, tl.u32)")

    @tl.kernel(warps=4)
    def hashed(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], tl.load(x, [0], [128]) * 0x85EBCA6B)  # <- error

    assert_reported(hashed, "does not fit dtype i32", "tl.view(x, tl.u32)")

    @tl.kernel(warps=4)
    def too_big(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], tl.load(x, [0], [128]) * 0x1FFFFFFFF)  # <- error

    assert "tl.view" not in str(compile_error(too_big))  # no unsigned type holds it either


@tl.kernel(warps=4)
def scalar_hash(out: tl.Tensor[tl.u32, "N"], f: tl.Tensor[tl.f32, 2], seed: tl.i32, x: tl.f32):
    """murmur3's finalizer on the seed's bits (as u32), added to 0..127, and the bits of
    a runtime f32 scalar and of a rank-0 tile viewed back."""
    h = tl.view(seed, tl.u32)
    h = (h ^ (h >> 16)) * 0x85EBCA6B
    h = h ^ (h >> 13)
    tl.store(out, [0], tl.arange(0, 128).to(tl.u32) + h)
    bits = tl.view(x, tl.u32)
    rank0 = tl.view(tl.view(tl.sum(tl.full([4], x, tl.f32)), tl.u32), tl.f32)
    tl.store(f, [0], tl.reshape(tl.view(tl.full([1], bits + 1, tl.u32), tl.f32), [1]))
    tl.store(f, [1], tl.reshape(rank0, [1]))


def test_a_runtime_scalar_views_as_u32_like_a_rank0_tile():
    seed, x = -123456789, 1.5
    compiled, interpreted = run_both(
        scalar_hash, [], [np.zeros(N, np.uint32), np.zeros(2, np.float32)], seed=seed, x=x
    )
    h = seed % 2**32
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) % 2**32
    h ^= h >> 13
    want = (np.arange(N, dtype=np.uint64) + h) % 2**32
    for out, f in (compiled, interpreted):
        assert out.tolist() == want.tolist()
        assert f[0] == np.nextafter(np.float32(1.5), np.float32(2))  # the next f32 up
        assert f[1] == 6.0  # 4 x 1.5, viewed as u32 and back


def test_viewing_a_scalar_as_another_width_is_an_error():
    @tl.kernel(warps=4)
    def wide(x: tl.Tensor[tl.u32, "N"], seed: tl.i64):
        tl.store(x, [0], tl.full([128], tl.view(seed, tl.u32), tl.u32))  # <- error

    assert_reported(wide, "cannot view a i64 scalar as u32", "its width (64 bits, e.g. tl.u64)")
