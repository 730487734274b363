"""What a numerics audit found where the interpreter, the CPU backend and the documented
semantics disagreed, each against an oracle of its own (numpy, mpmath, the formats'
definitions): e8m0 load fills and the fills a type cannot hold, sigmoid's range,
e8m0 arithmetic in f32, NaN codes seen through a view, the zero sign of a sum, and
signalling NaNs in the interpreter."""

import inspect
import warnings

import mpmath
import numpy as np
import pytest

import tilelang as tl
from tilelang import TileLangError

ONE = 127  # the e8m0 code of 2^0
E8M0_NAN = 0xFF  # OCP MX: the one NaN code of e8m0, which has no zero


def both(kernel, *args, **constexprs):
    """(interpreter, CPU backend) results of one call, each on fresh copies of the numpy
    arrays (the kernels here only read their packed arguments)."""
    copies = lambda: [a.copy() if isinstance(a, np.ndarray) else a for a in args]  # noqa: E731
    return kernel.interpret(*copies(), **constexprs), kernel(*copies(), **constexprs)


def assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


# --- e8m0 fills --------------------------------------------------------------------------


@tl.kernel(warps=1)
def e8m0_past_the_end(s: tl.Tensor[tl.e8m0, "N"], out: tl.Tensor[tl.f32, "M"]):
    tl.store(out, [0], tl.load(s, [0], [8]).to(tl.f32))


@tl.kernel(warps=1)
def e8m0_masked(s: tl.Tensor[tl.e8m0, "N"], out: tl.Tensor[tl.f32, "M"], FILL: tl.constexpr = None):
    tl.store(out, [0], tl.load(s, [0], [8], mask=tl.arange(0, 8) < 2, fill=FILL).to(tl.f32))


@tl.kernel(warps=1)
def e8m0_scalar(s: tl.Tensor[tl.e8m0, "N"], out: tl.Tensor[tl.f32, "M"]):
    tl.store(out, [0], tl.full([1], tl.load(s, [N]).to(tl.f32)))  # one past the end


@tl.kernel(warps=1)
def e8m0_nothing(s: tl.Tensor[tl.e8m0, "N"], out: tl.Tensor[tl.f32, "M"]):
    tl.store(out, [0], tl.load(s, [0], [8], mask=False).to(tl.f32))


def test_the_default_fill_of_e8m0_is_nan_on_every_backend():
    scales = tl.pack_codes(np.full(4, ONE), tl.e8m0)
    out = np.zeros(8, np.float32)
    expected = np.array([1, 1, 1, 1] + [np.nan] * 4, np.float32)  # 0 has no e8m0 code
    for interpreted, compiled in (
        both(e8m0_past_the_end, scales, out),
        both(e8m0_masked, scales, out),
        both(e8m0_nothing, scales, out),
    ):
        np.testing.assert_array_equal(compiled, interpreted)
    np.testing.assert_array_equal(e8m0_past_the_end.interpret(scales, out.copy()), expected)
    np.testing.assert_array_equal(e8m0_nothing.interpret(scales, out.copy()), np.full(8, np.nan))
    interpreted, compiled = both(e8m0_scalar, scales, np.zeros(1, np.float32))
    assert np.isnan(interpreted[0]) and np.isnan(compiled[0])
    # An explicit fill that e8m0 holds is read as given.
    interpreted, compiled = both(e8m0_masked, scales, out, FILL=0.5)
    np.testing.assert_array_equal(interpreted, [1, 1] + [0.5] * 6)
    np.testing.assert_array_equal(compiled, interpreted)


def _load_with_fill(dtype, fill):
    @tl.kernel(warps=1)
    def filled(x: tl.Tensor["T", "N"], out: tl.Tensor[tl.f32, "M"], T: tl.constexpr = tl.f32):
        tl.store(out, [0], tl.load(x, [0], [8], fill=fill).to(tl.f32))

    line = inspect.getsourcelines(filled)[1] + 2  # the tl.load line
    x = tl.pack_codes(np.zeros(4, np.int64), dtype)
    return filled, line, lambda: filled.interpret(x, np.zeros(8, np.float32), T=dtype)


@pytest.mark.parametrize(
    "dtype, fill",
    [
        (tl.e8m0, 0.0),
        (tl.e8m0, 0),
        (tl.e8m0, -1.0),
        (tl.e8m0, 2.0**128),
        (tl.f4e2m1, float("nan")),
        (tl.f6e3m2, float("nan")),
        (tl.f8e4m3, float("inf")),
        (tl.f8e5m2, float("-inf")),  # has an infinity, but a cast saturates it
        (tl.f8e4m3, 1000.0),
        (tl.f16, 1e6),
    ],
)
def test_a_fill_the_type_cannot_hold_is_refused_at_the_users_line(dtype, fill):
    _, line, call = _load_with_fill(dtype, fill)
    with pytest.raises(TileLangError) as raised:
        call()
    text = str(raised.value)
    assert f"fill {fill!r} is not representable in {dtype}" in text
    assert f"{__file__}:{line}:" in text


@pytest.mark.parametrize(
    "dtype, fill, read",
    [
        (tl.e8m0, 1.0, 1.0),
        (tl.e8m0, float("nan"), np.nan),
        (tl.f8e4m3, float("nan"), np.nan),
        (tl.f8e4m3, -448.0, -448.0),
        (tl.f16, float("-inf"), -np.inf),
        (tl.f4e2m1, 0.3, 0.5),  # rounding to the nearest value is no refusal
    ],
)
def test_a_fill_the_type_holds_is_read_as_given(dtype, fill, read):
    _, _, call = _load_with_fill(dtype, fill)
    np.testing.assert_array_equal(call()[4:], np.full(4, read, np.float32))


# --- sigmoid ---------------------------------------------------------------------------


@tl.kernel(warps=4)
def sigmoid(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], BLOCK: tl.constexpr = 1024):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tl.store(y, [b * BLOCK], tl.sigmoid(tl.load(x, [b * BLOCK], [BLOCK])))


def _ulps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|got - exact| in units of f32's spacing at the exact value (2^-149 for subnormals)."""
    spacing = np.spacing(np.abs(exact.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def test_sigmoid_is_within_a_few_ulps_over_the_whole_range_on_both_backends():
    grid = np.linspace(-110, 110, 3000)
    subnormal = np.linspace(-104, -87, 1000)  # results below 2^-126, where e^-x overflows
    x = np.concatenate([grid, subnormal, [-103.97, -103.28, 0.0, -0.0, 1e-8, -1e-8]])
    x = x.astype(np.float32)
    with mpmath.workdps(40):
        exact = np.array([float(1 / (1 + mpmath.exp(-mpmath.mpf(float(v))))) for v in x])
    assert (exact[np.float32(exact) != 0] < 2.0**-126).sum() > 500  # subnormal results tested
    for got in both(sigmoid, x, np.empty_like(x)):
        assert _ulps(got, exact).max() <= 3
        assert np.all((got > 0) == (np.float32(exact) > 0))


# --- e8m0 arithmetic ---------------------------------------------------------------------


@tl.kernel(warps=4)
def binary(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    z: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.e8m0,
    OP: tl.constexpr = "mul",
    BLOCK: tl.constexpr = 1024,
):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    a, c = tl.load(x, [b * BLOCK], [BLOCK]), tl.load(y, [b * BLOCK], [BLOCK])
    tl.store(z, [b * BLOCK], a * c if OP == "mul" else a / c)


def _e8m0_of_f32(values: np.ndarray) -> np.ndarray:
    """The e8m0 code of a positive f32 power of two (2^(c-127), c < 255; below 2^-127 it
    is 2^-127, the format's least value); NaN's code for 0, inf and NaN, which e8m0 lacks."""
    mantissa, exponent = np.frexp(values.astype(np.float64))  # values = m * 2^e, m in [0.5, 1)
    assert np.all((mantissa == 0.5) | ~np.isfinite(values) | (values == 0))
    code = np.maximum(exponent - 1 + 127, 0)
    valid = np.isfinite(values) & (values > 0) & (code <= 254)
    return np.where(valid, code, E8M0_NAN).astype(np.uint8)


@pytest.mark.parametrize("op", ["mul", "div"])
def test_e8m0_arithmetic_is_f32_arithmetic_on_every_code_pair(op):
    xs, ys = (c.ravel() for c in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    values = lambda c: np.where(c == E8M0_NAN, np.nan, np.ldexp(1.0, c - 127)).astype(np.float32)  # noqa: E731
    with np.errstate(all="ignore"):
        f32 = values(xs) * values(ys) if op == "mul" else values(xs) / values(ys)
    expected = _e8m0_of_f32(f32)
    assert (expected == E8M0_NAN).sum() > (xs == E8M0_NAN).sum() * 2  # f32 overflow is tested
    results = []
    for run in (binary.interpret, binary):
        z = tl.pack_codes(np.zeros(xs.size, np.int64), tl.e8m0)
        run(tl.pack_codes(xs, tl.e8m0), tl.pack_codes(ys, tl.e8m0), z, OP=op)
        results.append(np.asarray(z.codes()))
    interpreted, compiled = results
    np.testing.assert_array_equal(interpreted, expected)
    np.testing.assert_array_equal(compiled, expected)


# --- NaN codes through a view --------------------------------------------------------------


@tl.kernel(warps=1)
def bits_through_moves(
    x: tl.Tensor["U", "N"],
    out: tl.Tensor["U", "N"],
    T: tl.constexpr = tl.f16,
    U: tl.constexpr = tl.u16,
    ADD: tl.constexpr = False,
):
    v = tl.view(tl.load(x, [0], [8]), T)
    v = tl.where(tl.arange(0, 8) >= 0, tl.reshape(tl.reshape(v, [2, 4]), [8]), v)
    if ADD:
        v = v + v  # a computed NaN: the canonical one on every backend
    tl.store(out, [0], tl.view(v, U))


NAN_CODES = {
    tl.f16: (tl.u16, [0x7E00, 0xFE00, 0x7C01, 0xFFFF, 0x7FFF, 0x3C00, 0x8000, 0x7C00]),
    tl.bf16: (tl.u16, [0x7FC0, 0xFFC0, 0x7F81, 0xFFFF, 0x7FFF, 0x3F80, 0x8000, 0x7F80]),
    tl.f32: (tl.u32, [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0, 1, 2]),
    tl.f8e4m3: (tl.u8, [0x7F, 0xFF, 0x7F, 0xFF, 0x38, 0x80, 0x00, 0x01]),
    tl.f8e5m2: (tl.u8, [0x7D, 0xFE, 0x7E, 0xFF, 0x7F, 0x7C, 0x80, 0x3C]),
}


@pytest.mark.parametrize("dtype", list(NAN_CODES), ids=str)
def test_a_loaded_nan_keeps_its_code_through_moves_to_a_view(dtype):
    unsigned, codes = NAN_CODES[dtype]
    x = np.array(codes, f"u{unsigned.bits // 8}")
    interpreted, compiled = both(bits_through_moves, x, np.zeros_like(x), T=dtype, U=unsigned)
    np.testing.assert_array_equal(interpreted, x)  # numpy's view: the same bits
    np.testing.assert_array_equal(compiled, x)


@pytest.mark.parametrize("dtype", [tl.f16, tl.f32], ids=str)
def test_a_computed_nan_is_the_canonical_one_on_both_backends(dtype):
    unsigned, codes = NAN_CODES[dtype]
    x = np.array(codes, f"u{unsigned.bits // 8}")
    kwargs = dict(T=dtype, U=unsigned, ADD=True)
    interpreted, compiled = both(bits_through_moves, x, np.zeros_like(x), **kwargs)
    np.testing.assert_array_equal(interpreted, compiled)
    canonical = (1 << (unsigned.bits - 1)) - 1
    is_nan = np.isnan(x.view({tl.f16: np.float16, tl.f32: np.float32}[dtype]))
    assert is_nan.sum() == 5 and np.all(interpreted[is_nan] == canonical)


# --- sums: the sign of zero; signalling NaNs ---------------------------------------------


@tl.kernel(warps=2)
def total(x: tl.Tensor["T", "N"], y: tl.Tensor["T", 1], T: tl.constexpr = tl.f32):
    tl.store(y, [0], tl.reshape(tl.sum(tl.load(x, [0], [64])), [1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # f64: the sequential fold
@pytest.mark.parametrize(
    "terms, negative",
    [([-0.0] * 64, True), ([-0.0] * 63 + [0.0], False), ([-0.0] * 62 + [1.0, -1.0], False)],
)
def test_a_sum_of_only_negative_zeros_is_negative_zero(terms, negative, dtype):
    x = np.array(terms, dtype)
    kind = tl.f32 if dtype == np.float32 else tl.f64
    for got in both(total, x, np.ones(1, dtype), T=kind):
        assert got[0] == 0 and bool(np.signbit(got[0])) == negative


@tl.kernel(warps=1)
def arithmetic(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "M"]):
    t = tl.load(x, [0], [16])
    m = tl.reshape(t, [4, 4])
    tl.store(y, [0], t + t)
    tl.store(y, [16], tl.sum(m, axis=1))
    tl.store(y, [20], tl.reshape(tl.cumsum(m, axis=1), [16]))


def test_signalling_nan_inputs_raise_no_warning_in_the_interpreter():
    x = np.arange(16, dtype=np.float32)
    x.view(np.uint32)[[0, 5]] = [0x7F800001, 0xFF800002]  # signalling NaNs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = arithmetic.interpret(x, np.zeros(36, np.float32))
    assert np.isnan(y[[0, 5, 16, 17]]).all() and not np.isnan(y[[1, 18, 19]]).any()


@tl.kernel(warps=1)
def _copy_moved(x: tl.Tensor["T", "N"], y: tl.Tensor["T", "N"], T: tl.constexpr = tl.f32):
    tl.store(y, [0], tl.reshape(tl.reshape(tl.load(x, [0], [8]), [2, 4]), [8]))


@pytest.mark.parametrize(
    "dtype, storage, nans",
    [
        (tl.f32, np.uint32, [0x7FC00001, 0xFFC00000, 0x7F800001]),
        (tl.f16, np.uint16, [0x7E01, 0xFE00, 0x7C01]),
    ],
)
def test_a_copied_nan_keeps_its_code_on_both_paths(dtype, storage, nans):
    codes = np.array([*nans, 0x3C00, 0, 0, 0, 0], storage)
    x = codes.view(np.float32 if dtype == tl.f32 else np.float16)
    for run in (_copy_moved, _copy_moved.interpret):
        got = run(x, np.zeros_like(x), T=dtype)
        np.testing.assert_array_equal(got.view(storage), codes)
