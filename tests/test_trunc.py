"""`tl.trunc`: rounding toward zero, the float → float half of C's and Triton's float →
int cast (`.to()` of a float to an integer type rounds to nearest even). Every backend
agrees bit for bit (the interpreter and the CPU backend here, the GPU where there is
one): -0.0 for the negatives above -1, ±inf and NaN kept. The oracle is Python's
`math.trunc` with the sign put back, not numpy."""

import math

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_bitwise, run_both

import tilelang as tl
from tilelang.runtime import gpu

NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32, "f64": np.float64}
N = 256


@tl.kernel(warps=4)
def truncated(x: tl.Tensor["T", "N"], y: tl.Tensor["T", "N"], T: tl.constexpr = tl.f32):
    b = tl.blocks(tl.cdiv(N, 128))
    tl.store(y, [b * 128], tl.trunc(tl.load(x, [b * 128], [128])))


def toward_zero(v: float) -> float:
    """The oracle: the integer part of v with v's sign (-0.0 for -0.5), inf and NaN kept."""
    if math.isinf(v) or math.isnan(v):
        return v
    return math.copysign(float(math.trunc(v)), v)


def inputs(name: str) -> np.ndarray:
    """Halves, values just off an integer, ±0, ±inf, NaN, the largest finite values and
    the smallest subnormal of the dtype, then random values over a wide range."""
    dtype = NUMPY[name]
    info = ml_dtypes.finfo(dtype)
    special = [0.0, -0.0, 0.5, -0.5, 0.99, -0.99, 1.5, -1.5, 2.5, -2.5, 7.75, -7.75]
    special += [math.inf, -math.inf, math.nan, float(info.max), -float(info.max)]
    special += [float(info.smallest_subnormal), -float(info.smallest_subnormal)]
    special += [float(np.nextafter(dtype(3), dtype(0))), -float(np.nextafter(dtype(3), dtype(0)))]
    rng = np.random.default_rng(7)
    drawn = rng.standard_normal(N - len(special)) * 10.0 ** rng.integers(-3, 4, N - len(special))
    return np.array(special + list(drawn)).astype(dtype)


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_trunc_rounds_toward_zero_bit_for_bit(name):
    x = inputs(name)
    want = np.array([toward_zero(float(v)) for v in x]).astype(NUMPY[name])
    compiled, interpreted = run_both(truncated, [x], [np.zeros_like(x)], T=tl.dtype(name))
    assert_bitwise(compiled, interpreted)
    assert_same_values(compiled, want)


def assert_same_values(got: np.ndarray, want: np.ndarray) -> None:
    """NaN where `want` is NaN (its payload aside), every other element bit for bit."""
    nan = np.isnan(want.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float64)), nan)
    bits = np.dtype(f"u{want.itemsize}")
    np.testing.assert_array_equal(got[~nan].view(bits), want[~nan].view(bits))


def test_small_negatives_truncate_to_negative_zero():
    x = np.full(N, -0.75, np.float32)
    y = truncated(x, np.ones_like(x))
    assert (y == 0).all() and np.signbit(y).all()


@tl.kernel(warps=4)
def histogram_bins(
    xs: tl.Tensor[tl.f32, "N"],
    rounded: tl.Tensor[tl.i32, "N"],
    truncated_bins: tl.Tensor[tl.i32, "N"],
    NB: tl.constexpr = 10,
):
    b = tl.blocks(tl.cdiv(N, 128))
    scaled = tl.load(xs, [b * 128], [128]) * NB
    tl.store(rounded, [b * 128], scaled.to(tl.i32))
    tl.store(truncated_bins, [b * 128], tl.trunc(scaled).to(tl.i32))


def test_trunc_then_to_gives_cs_histogram_bins():
    """A Triton port's `(xs * NB).to(tl.i32)` rounds (0.27 * 10 lands in bin 3);
    `tl.trunc(...).to(tl.i32)` gives C's and numpy's bins."""
    xs = np.random.default_rng(3).random(N).astype(np.float32)
    xs[0] = np.float32(0.27)
    for run in (histogram_bins, histogram_bins.interpret):
        rounded, bins = run(xs, np.zeros(N, np.int32), np.zeros(N, np.int32))
        np.testing.assert_array_equal(bins, (xs * np.float32(10)).astype(np.int32))
        assert rounded[0] == 3 and bins[0] == 2


@pytest.mark.parametrize(("name", "call"), [("f32", "truncf("), ("f64", "trunc(")])
def test_cuda_calls_the_c_library_trunc(name, call):
    compiled = truncated.compile(target="sm_90", T=tl.dtype(name))
    assert call in compiled.source
    assert ".rzi." in compiled.ptx  # cvt.rzi: round to integer, toward zero


def gpu_available() -> bool:
    return gpu.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["f16", "f32", "f64"])  # a bf16 DeviceBuffer says "<V2"
def test_trunc_on_the_gpu_equals_the_interpreter(name):
    x = inputs(name)
    y = gpu.DeviceBuffer(np.zeros_like(x))
    truncated(gpu.DeviceBuffer(x), y, T=tl.dtype(name))
    want = truncated.interpret(x, np.zeros_like(x), T=tl.dtype(name))
    assert_same_values(y.numpy(), want)  # a NaN's payload is the GPU's (docs/design.md)
