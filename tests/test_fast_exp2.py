"""`tl.fast_exp2`: 2^x as the GPU's `ex2.approx.ftz.f32` computes it (MUFU.EX2 alone),
with a meaning the CPU reproduces: within 2 ulps of 2^x, and exactly zero where 2^x is
below f32's smallest normal, 2^-126 (the `.ftz` flush), on every float dtype.

Laws: the reference interpreter and the LLVM backend flush the same elements and agree
within an ulp elsewhere (two computations of a transcendental); the values are 2^x
within the op table's ulp bound where 2^x >= 2^-126 and +0 below (checked against powers of two computed exactly, not against the backends'
exp2); on sm_80 and sm_90 the CUDA code is one `ex2.approx.ftz.f32` a value, and the
SASS has a MUFU.EX2 per value with none of the range checks `tl.exp2` pays for
subnormal results (FSETP, and FMULs by 2^±24).
"""

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang.runtime.sass import disassemble

BN = 128
NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32, "f64": np.float64}


@tl.kernel(warps=1)
def powers(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.f32,
    FAST: tl.constexpr = True,
):
    i = tl.blocks(tl.cdiv(N, BN))
    v = tl.load(x, [i * BN], [BN])
    tl.store(y, [i * BN], tl.fast_exp2(v) if FAST else tl.exp2(v))


def _inputs(dt: tl.DType) -> np.ndarray:
    """Exponents around the flush edge (-126), integers among them, and ordinary ones."""
    edge = np.linspace(-140.0, -110.0, 97)
    ordinary = np.linspace(-20.0, 20.0, 93)
    whole = np.array([-150.0, -127.0, -126.0, -125.0, -1.0, 0.0, 1.0, 10.0])
    values = np.concatenate([edge, ordinary, whole, [-np.inf, np.inf]])
    return values.astype(NUMPY[dt.name])


def _exact_power(x: np.ndarray) -> np.ndarray:
    """2^x in float64 from the integer and fraction parts (ldexp is exact)."""
    whole = np.floor(x)
    return np.ldexp(np.power(2.0, x - whole), whole.astype(np.int64))


@pytest.mark.parametrize("dt", [tl.f16, tl.bf16, tl.f32, tl.f64], ids=str)
def test_cpu_backend_and_interpreter_flush_the_same_elements(dt):
    """Both flush exactly where 2^x < 2^-126; elsewhere they are two computations of a
    transcendental (libm's and float64 numpy's), equal within an ulp, not bitwise."""
    x = _inputs(dt)
    got, interpreted = np.zeros_like(x), np.zeros_like(x)
    powers(x, got, T=dt)
    powers.interpret(x, interpreted, T=dt)
    got, interpreted = got.astype(np.float64), interpreted.astype(np.float64)
    np.testing.assert_array_equal(got == 0, interpreted == 0)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(interpreted))
    finite = np.isfinite(interpreted)
    ulp = np.spacing(interpreted[finite].astype(NUMPY[dt.name])).astype(np.float64)
    assert (np.abs(got[finite] - interpreted[finite]) <= ulp).all()
    np.testing.assert_array_equal(got[~finite], interpreted[~finite])


@pytest.mark.parametrize("dt", [tl.bf16, tl.f32, tl.f64], ids=str)
def test_values_are_powers_of_two_flushed_below_the_smallest_normal(dt):
    given = _inputs(dt)
    got = np.zeros_like(given)
    powers(given, got, T=dt)
    x, got = given.astype(np.float64), got.astype(np.float64)
    with np.errstate(over="ignore"):
        want = _exact_power(np.where(np.isfinite(x), x, 0.0))
    want = np.where(x == np.inf, np.inf, np.where(x == -np.inf, 0.0, want))
    below = want < 2.0**-126
    assert below.any() and (~below).any()
    assert (got[below] == 0).all() and not np.signbit(got[below]).any()
    kept = ~below & np.isfinite(want)
    eps = 2.0**-23 if dt != tl.bf16 else 2.0**-8
    if dt == tl.f64:
        eps = 2.0**-52
    np.testing.assert_allclose(got[kept], want[kept], rtol=4 * eps, atol=0)
    assert (got[want == np.inf] == np.inf).all()


def test_exp2_keeps_the_subnormal_results_fast_exp2_flushes():
    """The two differ exactly on the results below 2^-126: the flush is the meaning."""
    x = _inputs(tl.f32)
    fast, accurate = np.zeros_like(x), np.zeros_like(x)
    powers(x, fast, T=tl.f32)
    powers(x, accurate, T=tl.f32, FAST=False)
    differ = fast != accurate
    assert differ.any()
    assert (fast[differ] == 0).all()
    assert (np.abs(accurate[differ]) < 2.0**-126).all()
    assert (accurate[differ] > 0).all()


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_gpu_code_is_one_mufu_per_value_without_range_checks(arch):
    fast = powers.compile(target=arch, T=tl.f32)
    accurate = powers.compile(target=arch, T=tl.f32, FAST=False)
    per_thread = BN // 32
    assert fast.ptx.count("ex2.approx.ftz.f32") == per_thread
    fast_sass, accurate_sass = disassemble(fast.cubin), disassemble(accurate.cubin)
    assert fast_sass.count("MUFU.EX2") == per_thread
    assert "FSETP" not in fast_sass
    # the witness that the check can see the difference: exp2 guards subnormal results
    assert accurate_sass.count("MUFU.EX2") == per_thread
    assert accurate_sass.count("FSETP") >= per_thread
