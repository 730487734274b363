"""`tl.fma(x, y, z)`: x·y + z rounded once (f16 and bf16: at f32, then to the dtype, as
every operation they compute in f32), the same bits on every backend.

Laws: against an oracle written here from the definition (the exact rational x·y + z,
rounded to the nearest even on the f32 or f64 grid, subnormals included), the CPU
backend and the interpreter give the same bits for f16, bf16, f32 and f64: random
operands over many binades, cancellations, and the case where rounding at f64 first
and then at f32 (a separate multiply and add, or a naive reference) lands on the
wrong side of an f32 midpoint; IEEE's infinities and NaNs; on sm_80 and sm_90 the
CUDA code is `fmaf` and the SASS one FFMA a value, with no FMUL or FADD.
"""

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang.runtime.sass import disassemble, opcodes

NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32, "f64": np.float64}


@tl.kernel(warps=1)
def fused(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    z: tl.Tensor["T", "N"],
    out: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.f32,
):
    i = tl.blocks(tl.cdiv(N, 64))
    a = tl.load(x, [i * 64], [64])
    b = tl.load(y, [i * 64], [64])
    tl.store(out, [i * 64], tl.fma(a, b, tl.load(z, [i * 64], [64])))


def round_to_grid(exact: Fraction, mantissa_bits: int, min_exponent: int) -> float:
    """`exact` rounded to nearest, ties to even, on the grid of a binary format with
    `mantissa_bits` stored bits whose smallest normal is 2^min_exponent; inf past it."""
    if exact == 0:
        return 0.0
    magnitude = abs(exact)
    exponent = max(math.floor(math.log2(magnitude)), min_exponent)
    while Fraction(2) ** exponent > magnitude:  # log2 of a Fraction may be off by one
        exponent -= 1
    while Fraction(2) ** (exponent + 1) <= magnitude:
        exponent += 1
    exponent = max(exponent, min_exponent)
    quantum = Fraction(2) ** (exponent - mantissa_bits)
    steps = magnitude / quantum
    whole = math.floor(steps)
    if steps - whole > Fraction(1, 2) or (steps - whole == Fraction(1, 2) and whole % 2):
        whole += 1
    value = whole * quantum
    return math.copysign(float(value), exact) if value else math.copysign(0.0, exact)


def oracle(dtype: tl.DType, x: float, y: float, z: float) -> float:
    """fma from its definition: f32 (24-bit) or f64 (53-bit) rounding of the rational."""
    if not all(math.isfinite(v) for v in (x, y, z)):
        return math.nan  # compared by the NaN and infinity checks, not here
    exact = Fraction(x) * Fraction(y) + Fraction(z)
    if exact == 0:
        return x * y + z if x == 0 or y == 0 else 0.0
    if dtype == tl.f64:
        return round_to_grid(exact, 52, -1022)
    limit = float(np.finfo(np.float32).max)
    rounded = round_to_grid(exact, 23, -126)
    return rounded if abs(rounded) <= limit else math.copysign(math.inf, exact)


def operands(dtype: tl.DType, seed: int) -> tuple[np.ndarray, ...]:
    """Random values over many binades, then cancellations (z = -x·y nearly)."""
    rng = np.random.default_rng(seed)
    npt = NUMPY[dtype.name]
    span = 5 if dtype == tl.f16 else 40  # f16: products within its range (65504)
    x, y, z = (
        (rng.standard_normal(192) * np.exp2(rng.integers(-span, span, 192))).astype(npt)
        for _ in range(3)
    )
    z[:64] = (-(x[:64].astype(np.float64) * y[:64])).astype(npt)
    return x, y, z


def run_both(dtype: tl.DType, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    compiled = fused(x, y, z, np.zeros_like(x), T=dtype)
    interpreted = fused.interpret(x, y, z, np.zeros_like(x), T=dtype)
    return compiled, interpreted


@pytest.mark.parametrize("dtype", [tl.f16, tl.bf16, tl.f32, tl.f64], ids=str)
def test_fma_rounds_once_and_both_backends_agree_bit_for_bit(dtype):
    x, y, z = operands(dtype, seed=dtype.bits)
    compiled, interpreted = run_both(dtype, x, y, z)
    np.testing.assert_array_equal(compiled.view(np.uint8), interpreted.view(np.uint8))
    npt = NUMPY[dtype.name]
    want = [oracle(dtype, float(a), float(b), float(c)) for a, b, c in zip(x, y, z, strict=True)]
    want = np.array(want, np.float64).astype(npt)  # f16/bf16: the f32 result rounded again
    np.testing.assert_array_equal(compiled.view(np.uint8), want.view(np.uint8))


def test_rounding_at_f64_first_would_land_on_the_wrong_side_of_an_f32_midpoint():
    """x·y + z = 1 + 2^-11 + 2^-24 + 2^-70: just above the midpoint of two f32 values.
    At f64 the 2^-70 is lost and the tie goes to even (down); rounded once, it is up."""
    x = np.full(64, 1 + 2**-12, np.float32)
    z = np.full(64, 2**-70, np.float32)
    compiled, interpreted = run_both(tl.f32, x, x, z)
    up = np.float32(1 + 2**-11 + 2**-23)
    assert (compiled == up).all() and (interpreted == up).all()
    assert np.float32(np.float64(x[0]) * np.float64(x[0]) + np.float64(z[0])) != up


def test_infinities_and_nans_follow_ieee():
    inf, nan = np.inf, np.nan
    cases = [
        (inf, 0.0, 1.0, nan),  # inf · 0
        (inf, 1.0, -inf, nan),
        (3e38, 10.0, -inf, -inf),  # a finite product past f32 does not meet the inf addend
        (2.0, 3.0, inf, inf),
        (nan, 1.0, 1.0, nan),
        (3e38, 10.0, 0.0, inf),  # overflow rounds to inf
    ]
    x, y, z, want = (np.resize(np.array(col, np.float32), 64) for col in zip(*cases, strict=True))
    compiled, interpreted = run_both(tl.f32, x, y, z)
    for got in (compiled, interpreted):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = ~np.isnan(want)
        np.testing.assert_array_equal(got[finite], want[finite])


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_gpu_code_is_one_ffma_a_value(arch):
    compiled = fused.compile(target=arch, T=tl.f32)
    assert compiled.source.count("fmaf(") == 2  # a thread's 2 of the 64 values
    ops = opcodes(disassemble(compiled.cubin))
    assert ops["FFMA"] == 2
    assert not [op for op in ops if op.split(".")[0] in ("FMUL", "FADD")]
