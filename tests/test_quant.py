"""tilelang.quant.quantize and QuantizedWeight: scales, codes and dequantization of every
format against references written here from the formats' definitions (code values from
the bit layouts, rounding by exhaustive nearest search, products in numpy's own f16 /
f32 / ml_dtypes bf16 arithmetic), the file form, and the refusals.

The references never call the code under test: no tilelang.dtypes encode/decode, no
tilelang.quant helper. GPTQ/AWQ imports are in test_quant_import.py.
"""

from __future__ import annotations

import math
import subprocess
import sys
import types
import warnings

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang import dtypes
from tilelang.quant import FORMATS, QuantizedWeight, quantize, quantize_experts
from tilelang.quant.arithmetic import round_to

K, N = 256, 12
INT_TYPES = [f"{s}{b}" for s in "ui" for b in range(1, 9)]
GROUPS = [32, 64, 128, -1]
# Every small float ExMy of 3..8 bits that tilelang.dtypes names or builds.
SMALL_FLOATS = [(e, m) for e in range(1, 8) for m in range(0, 8 - e) if 2 <= e + m <= 7]
MX = {  # format: (exponent bits, mantissa bits, emax of the element type, from the spec)
    "mxfp4": (2, 1, 2),
    "mxfp6_e3m2": (3, 2, 4),
    "mxfp6_e2m3": (2, 3, 2),
    "mxfp8_e4m3": (4, 3, 8),
    "mxfp8_e5m2": (5, 2, 15),
}


def weights(seed: int = 0, k: int = K, n: int = N) -> np.ndarray:
    """Gaussian weights with outliers, one all-positive column and one all-zero column,
    so that every code, groups on one side of 0 and zero groups occur."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((k, n)) * 0.02
    w[rng.integers(0, k, 8), rng.integers(0, n, 8)] *= 30
    w[:, -2] = np.abs(w[:, -2]) + 0.01
    w[:, -1] = 0.0
    return w


# ------------------------------------------------------------- references from specs


def int_values(name: str) -> np.ndarray:
    """Value of every code of u<b> / i<b> (two's complement), indexed by code."""
    bits, codes = int(name[1:]), np.arange(1 << int(name[1:]))
    return codes - (codes >> (bits - 1) << bits) if name[0] == "i" else codes


def float_values(e: int, m: int, nan_top: bool = False) -> np.ndarray:
    """Value of every code of a sign+E+M float with bias 2^(E-1)-1 and subnormals;
    `nan_top`: the all-ones magnitude is NaN (OCP e4m3)."""
    values = []
    for code in range(1 << (1 + e + m)):
        sign = -1.0 if code >> (e + m) else 1.0
        field, mant = (code >> m) & ((1 << e) - 1), code & ((1 << m) - 1)
        bias = (1 << (e - 1)) - 1
        if field == 0:
            value = mant * 2.0 ** (1 - bias - m)
        else:
            value = (1 + mant / 2**m) * 2.0 ** (field - bias)
        if nan_top and field == (1 << e) - 1 and mant == (1 << m) - 1:
            value = math.nan
        values.append(sign * value)
    return np.array(values)


def e5m2_values() -> np.ndarray:
    v = float_values(5, 2)
    v[(np.arange(256) & 0x7C) == 0x7C] = np.nan  # IEEE-like: inf/NaN, never produced here
    return v


def nearest_code(x: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
    """Round-to-nearest-even code of each x (saturating at the largest finite value),
    by exhaustive search over the non-negative codes; a negative x (or -0 result) gets
    the sign bit. Ties: the even code; with M = 0 the larger magnitude unless the lower
    neighbour is 0 (IEEE 754 §4.3.1, as tilelang.dtypes documents)."""
    half = len(values) // 2
    positive = values[:half]
    finite = np.flatnonzero(np.isfinite(positive))
    order = finite[np.argsort(positive[finite])]
    grid = positive[order]
    mag = np.minimum(np.abs(x), grid[-1])
    hi = np.clip(np.searchsorted(grid, mag), 0, len(grid) - 1)
    lo = np.clip(hi - 1, 0, len(grid) - 1)
    d_lo, d_hi = mag - grid[lo], grid[hi] - mag
    tie_up = (order[hi] % 2 == 0) if m > 0 else (grid[lo] > 0)
    take_hi = (d_hi < d_lo) | ((d_hi == d_lo) & tie_up)
    code = np.where(take_hi, order[hi], order[lo])
    return np.where(np.signbit(x), code + half, code)


def f16_product(a: np.ndarray, s: np.ndarray, scale: str) -> np.ndarray:
    """a · s in the scale type's own arithmetic (one IEEE rounding), as float32."""
    kind = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32}[scale]
    with np.errstate(over="ignore"):
        return (a.astype(kind) * s.astype(kind)).astype(np.float32)


def per_row(groups: np.ndarray, g: int) -> np.ndarray:
    return np.repeat(groups, g, axis=0)


# --------------------------------------------------------------- integer formats


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("zero_point", [False, True], ids=["sym", "asym"])
@pytest.mark.parametrize("name", INT_TYPES)
def test_integer_codes_scales_and_dequantize(name: str, zero_point: bool, group: int):
    w = weights(seed=sum(map(ord, name)) + group)
    bits, signed = int(name[1:]), name[0] == "i"
    if bits == 1 and not zero_point:
        with pytest.raises(ValueError, match="zero_point=True"):
            quantize(w, name, group_size=group)
        return
    qw = quantize(w, name, group_size=group, zero_point=zero_point)
    g = K if group == -1 else group
    assert (qw.shape, qw.group_size, qw.dtype.name, qw.format) == ((K, N), g, name, "scaled")
    blocks = w.reshape(K // g, g, N)
    qmin, qmax = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if zero_point:
        lo, hi = np.minimum(blocks.min(1), 0), np.maximum(blocks.max(1), 0)
        s = ((hi - lo) / (qmax - qmin)).astype(np.float16).astype(np.float64)
        z = np.clip(qmin - np.rint(lo / np.where(s == 0, 1, s)), qmin, qmax)
    else:
        half = (1 << (bits - 1)) - 1
        s = (np.abs(blocks).max(1) / half).astype(np.float16).astype(np.float64)
        z = np.zeros_like(s) if signed else np.full_like(s, 1 << (bits - 1))
    np.testing.assert_array_equal(qw.scales, s.astype(np.float32))
    np.testing.assert_array_equal(qw.scale_codes, s.astype(np.float16).view(np.uint16))
    if signed and not zero_point:
        assert qw.zeros is None
    else:
        np.testing.assert_array_equal(qw.zeros, z)
    ratio = np.divide(w, per_row(s, g), out=np.zeros_like(w), where=per_row(s, g) != 0)
    q = np.clip(np.rint(ratio) + per_row(z, g), qmin, qmax)
    value_of_code = int_values(name)
    codes = qw.plain_codes().astype(np.int64)
    np.testing.assert_array_equal(value_of_code[codes], q)
    expected = f16_product(q - per_row(z, g), per_row(s, g), "f16")
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))
    # The error bound the scale choice promises: half a step (a full one with a zero
    # point, whose rounding shifts the grid), plus the f16 rounding of the product.
    # The f16 rounding of s stretches the grid by up to (qmax - qmin)·2^-11 steps.
    step = per_row(s, g) * ((1.0 if zero_point else 0.5) + (1 << bits) * 2.0**-11)
    assert (np.abs(w - qw.dequantize()) <= step + np.abs(w) * 2.0**-10).all()


@pytest.mark.parametrize("scale", ["bf16", "f32"])
def test_other_scale_types_round_the_product_in_their_type(scale: str):
    w = weights(seed=3)
    qw = quantize(w, "i4", group_size=64, zero_point=True, scale_dtype=scale)
    assert qw.scale_dtype.name == scale
    q = int_values("i4")[qw.plain_codes().astype(np.int64)]
    s = qw.scales.astype(np.float64)
    lo = np.minimum(w.reshape(4, 64, N).min(1), 0)
    hi = np.maximum(w.reshape(4, 64, N).max(1), 0)
    kind = ml_dtypes.bfloat16 if scale == "bf16" else np.float32
    np.testing.assert_array_equal(s, ((hi - lo) / 15).astype(kind).astype(np.float64))
    expected = f16_product(q - per_row(qw.zeros, 64), per_row(s, 64), scale)
    np.testing.assert_array_equal(qw.dequantize(), expected)


# ----------------------------------------------------------- small float formats


@pytest.mark.parametrize("group", [32, 128, -1])
@pytest.mark.parametrize(("e", "m"), SMALL_FLOATS, ids=lambda v: str(v))
def test_small_float_codes_scales_and_dequantize(e: int, m: int, group: int):
    name = f"f{1 + e + m}e{e}m{m}"
    w = weights(seed=e * 10 + m)
    values = e5m2_values() if (e, m) == (5, 2) else float_values(e, m, nan_top=(e, m) == (4, 3))
    # Types with values f16 does not hold (beyond 65504, or below its subnormals) are
    # refused with f16 scales (test_quant_ranges.py): their scales are bf16, and the
    # product is rounded to bf16.
    finite = values[np.isfinite(values)]
    with np.errstate(over="ignore"):
        in_f16 = np.array_equal(finite.astype(np.float16).astype(np.float64), finite)
    scale, kind = ("f16", np.float16) if in_f16 else ("bf16", ml_dtypes.bfloat16)
    qw = quantize(w, name, group_size=group, scale_dtype=scale)
    g = K if group == -1 else group
    top = np.nanmax(values)
    s = (np.abs(w.reshape(K // g, g, N)).max(1) / top).astype(kind).astype(np.float64)
    np.testing.assert_array_equal(qw.scales, s)
    assert qw.zeros is None
    ratio = np.divide(w, per_row(s, g), out=np.zeros_like(w), where=per_row(s, g) != 0)
    codes = qw.plain_codes().astype(np.int64)
    np.testing.assert_array_equal(codes, nearest_code(ratio, values, m))
    # The kernel multiplies in f32 (exact here) and rounds to the scale type once ...
    product = values[codes].astype(np.float32) * per_row(s, g).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = product.astype(kind).astype(np.float32)
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))
    # ... which is the f16 multiply itself when every value of the type is an f16.
    finite = values[np.isfinite(values)]
    if (
        scale == "f16"
        and np.abs(finite).max() <= 65504
        and np.abs(finite[finite != 0]).min() >= 2.0**-24
    ):
        expected = f16_product(values[codes], per_row(s, g), "f16")
        np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))


def test_ties_round_to_even_codes():
    """w / s exactly between two values: the even code wins (RNE), for ints and floats."""
    w = np.zeros((32, 1))
    w[:5, 0] = [7.0, 0.5, 1.5, 2.5, -2.5]  # absmax 7: the i4 scale is 1, so w / s = w
    assert quantize(w, "i4", group_size=32).dequantize()[:5, 0].tolist() == [7, 0, 2, 2, -2]
    ties = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -5.0]  # f4e2m1 scale 6 / 6 = 1
    w[:9, 0] = ties
    got = quantize(w, "f4e2m1", group_size=32).dequantize()[:9, 0].tolist()
    assert got == [6, 0, 1, 1, 2, 2, 4, 4, -4]


# ------------------------------------------------------------------- MX, NVFP4


@pytest.mark.parametrize("fmt", sorted(MX))
def test_mx_scales_and_codes_follow_the_ocp_spec(fmt: str):
    e, m, emax = MX[fmt]
    w = weights(seed=len(fmt))
    w[32:64, 0] = 0.0  # an all-zero block
    w[64:96, 1] = np.linspace(-3e-39, 2e-39, 32)  # a block below the e8m0 range
    w[96:128, 2] *= 1e4
    qw = quantize(w, format=fmt)
    assert (qw.group_size, qw.scale_dtype, qw.format) == (32, dtypes.e8m0, fmt)
    assert qw.dtype == dtypes.float_type(e, m)
    shared = np.empty((K // 32, N), dtype=np.int64)
    for b in range(K // 32):
        for c in range(N):
            amax = float(np.abs(w[32 * b : 32 * b + 32, c]).max())
            exp = math.frexp(amax)[1] - 1 - emax if amax else -127
            shared[b, c] = min(max(exp, -127), 127)
    np.testing.assert_array_equal(qw.scale_codes, shared + 127)
    # e8m0 scales are bit-exact against ml_dtypes' float8_e8m0fnu.
    ml_codes = np.ldexp(1.0, shared).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    np.testing.assert_array_equal(qw.scale_codes, ml_codes)
    np.testing.assert_array_equal(
        qw.scales, ml_codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    )
    values = e5m2_values() if (e, m) == (5, 2) else float_values(e, m, nan_top=(e, m) == (4, 3))
    x = np.ldexp(w, -per_row(shared, 32))
    codes = qw.plain_codes().astype(np.int64)
    np.testing.assert_array_equal(codes, nearest_code(x, values, m))
    expected = np.ldexp(values[codes], per_row(shared, 32)).astype(np.float32)
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))


def test_nvfp4_two_level_scales_follow_nvidias_description():
    w = weights(seed=11)
    w[16:32, 3] = 1e-9  # a block whose scale rounds to 0 in e4m3
    qw = quantize(w, format="nvfp4")
    assert (qw.group_size, qw.scale_dtype, qw.dtype) == (16, dtypes.f8e4m3, dtypes.f4e2m1)
    tensor = float(np.float32(np.abs(w).max() / (6 * 448)))
    assert qw.tensor_scale == tensor
    e4m3 = float_values(4, 3, nan_top=True)
    e2m1 = float_values(2, 1)
    block_amax = np.abs(w.reshape(K // 16, 16, N)).max(1)
    block_codes = nearest_code(block_amax / (6 * tensor), e4m3, 3)
    np.testing.assert_array_equal(qw.scale_codes, block_codes)
    assert (qw.scale_codes[1, 3], qw.scale_codes[:, -1].max()) == (0, 0)
    effective = per_row(e4m3[block_codes], 16) * tensor
    x = np.divide(w, effective, out=np.zeros_like(w), where=effective != 0)
    codes = qw.plain_codes().astype(np.int64)
    np.testing.assert_array_equal(codes, nearest_code(x, e2m1, 1))
    expected = (e2m1[codes] * per_row(e4m3[block_codes], 16) * tensor).astype(np.float32)
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))


def test_nvfp4_of_zeros_and_mx_element_saturation():
    qw = quantize(np.zeros((32, 3)), format="nvfp4")
    assert qw.tensor_scale == 1.0 and not qw.dequantize().any()
    # floor(log2 7.9) - 2 = 0: X = 1 and 7.9 saturates to e2m1's 6 (the spec's clamp).
    w = np.zeros((32, 1))
    w[0, 0] = 7.9
    assert quantize(w, format="mxfp4").dequantize()[0, 0] == 6.0


#: The element types' largest finite values, from the OCP MX v1.0 tables.
MX_LARGEST = {"mxfp4": 6.0, "mxfp6_e3m2": 28.0, "mxfp6_e2m3": 7.5}
MX_LARGEST.update(mxfp8_e4m3=448.0, mxfp8_e5m2=57344.0)


@pytest.mark.parametrize("fmt", sorted(MX))
def test_rceil_mx_scales_are_the_smallest_powers_of_two_that_saturate_nothing(fmt: str):
    e, m, _ = MX[fmt]
    largest = MX_LARGEST[fmt]
    w = weights(seed=3 + len(fmt))
    w[0, 0] = largest * 4  # exactly the largest value times 4: X = 4, not 8
    w[32, 1] = np.nextafter(largest * 4, np.inf)  # just above it: X = 8
    w[64:96, 2] = 0.0  # an all-zero block
    qw = quantize(w, format=fmt, mx_scale="rceil")
    shared = np.empty((K // 32, N), dtype=np.int64)
    for b in range(K // 32):
        for c in range(N):
            amax = float(np.abs(w[32 * b : 32 * b + 32, c]).max())
            # search up from the bottom of e8m0's range for the first scale that fits
            shared[b, c] = next(x for x in range(-127, 128) if amax <= largest * 2.0**x)
    assert (shared[0, 0], shared[1, 1], shared[2, 2]) == (2, 3, -127)
    np.testing.assert_array_equal(qw.scale_codes, shared + 127)
    values = e5m2_values() if (e, m) == (5, 2) else float_values(e, m, nan_top=(e, m) == (4, 3))
    x = np.ldexp(w, -per_row(shared, 32))
    assert np.abs(x).max() <= largest  # nothing saturates
    codes = qw.plain_codes().astype(np.int64)
    np.testing.assert_array_equal(codes, nearest_code(x, values, m))
    floor = quantize(w, format=fmt)  # the default keeps the spec's scales
    assert (floor.scale_codes != qw.scale_codes).any()


def test_rceil_keeps_the_top_of_a_block_that_floor_saturates():
    w = np.zeros((32, 1))
    w[0, 0] = 7.9  # floor: X = 1, 7.9 -> 6; rceil: X = 2, 7.9 / 2 -> 4 (e2m1), 8
    assert quantize(w, format="mxfp4", mx_scale="rceil").dequantize()[0, 0] == 8.0
    huge = np.zeros((32, 1))
    huge[0, 0] = 3e38  # rceil: 2^126 · 4 (3.53 rounds up) is past f32; floor saturates at 6
    assert quantize(huge, format="mxfp4").dequantize()[0, 0] == 6 * 2.0**125
    with pytest.raises(ValueError, match=r"beyond f32's range.*mx_scale='floor'"):
        quantize(huge, format="mxfp4", mx_scale="rceil")
    tall = np.concatenate([w, np.zeros((96, 1))])  # experts need K a multiple of 128
    experts = quantize_experts(np.stack([tall, 2 * tall]), format="mxfp4", mx_scale="rceil")
    assert experts.dequantize()[:, 0, 0].tolist() == [8.0, 16.0]


# ------------------------------------------------------------ rounding, errors


def test_round_to_matches_the_dtype_codecs():
    rng = np.random.default_rng(5)
    x = np.ldexp(rng.uniform(-2, 2, 20000), rng.integers(-160, 140, 20000))
    ties = np.ldexp(1.0 + (2 * np.arange(50) + 1) * 2.0**-11, 3)  # f16 midpoints
    x = np.concatenate([x, ties, -ties, [65520.0, 65519.99, 1e39, 2.0**-25, 3 * 2.0**-26]])
    for t in (dtypes.f16, dtypes.f32, dtypes.bf16):
        np.testing.assert_array_equal(round_to(x, t), t.decode(t.encode(x)).astype(np.float32))


def test_error_reports_max_abs_rms_and_relative():
    w = weights(seed=9)
    qw = quantize(w, "u3", group_size=64, zero_point=True)
    d = w - qw.dequantize().astype(np.float64)
    report = qw.error(w)
    assert report["max_abs"] == np.abs(d).max()
    assert report["rms"] == pytest.approx(math.sqrt((d**2).sum() / d.size), rel=1e-12)
    assert report["relative"] == pytest.approx(math.sqrt((d**2).sum() / (w**2).sum()), rel=1e-12)
    assert (
        quantize(np.zeros((32, 2)), "i4", group_size=32).error(np.zeros((32, 2)))["relative"] == 0
    )
    with pytest.raises(ValueError, match="shape"):
        qw.error(w[:, :3])


def test_accepts_torch_like_tensors_without_importing_torch():
    class Tensor:  # what quant reads of a torch tensor: detach().cpu().numpy()
        __module__ = "torch"

        def __init__(self, array):
            self.array, self.dtype = array, "torch.float32"

        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return self.array

    w = weights(seed=4)
    a, b = quantize(Tensor(w), "i4", group_size=64), quantize(w, "i4", group_size=64)
    assert a.codes == b.codes and np.array_equal(a.scale_codes, b.scale_codes)


def test_accepts_real_torch_tensors():
    torch = pytest.importorskip("torch")
    w = weights(seed=4).astype(np.float32)
    t = torch.from_numpy(w).to(torch.bfloat16)
    qw = quantize(t, "u4", group_size=32, zero_point=True)
    exact = t.float().numpy()
    assert qw.codes == quantize(exact, "u4", group_size=32, zero_point=True).codes


def test_import_needs_no_torch():
    script = (
        "import sys\nsys.modules['torch'] = None  # any `import torch` now fails\n"
        "import numpy as np, tilelang.quant as q\n"
        "q.quantize(np.ones((32, 2)), 'u4', group_size=32).save(sys.argv[1])\n"
        "assert sys.modules['torch'] is None\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, "/dev/null"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(dtype="f16"), ValueError, "cannot hold quantized weights"),
        (dict(dtype="u9"), ValueError, "cannot hold quantized weights"),
        (dict(dtype="f2e1m0"), ValueError, "cannot hold quantized weights"),
        (dict(), ValueError, "needs a dtype"),
        (dict(dtype="f4e2m1", zero_point=True), ValueError, "zero points need integer"),
        (dict(dtype="u4", group_size=48), ValueError, "not a multiple"),
        (dict(dtype="u4", group_size=0), ValueError, "positive int or -1"),
        (dict(dtype="u4", scale_dtype="f8e4m3"), ValueError, "scales of the scaled formats"),
        (dict(format="mxfp4", group_size=64), ValueError, "one scale per 32 rows"),
        (dict(format="mxfp4", dtype="f6e3m2"), ValueError, "holds f4e2m1 codes"),
        (dict(format="nvfp4", scale_dtype="f16"), ValueError, "scales are f8e4m3"),
        (dict(format="nvfp4", zero_point=True), ValueError, "no zero points"),
        (dict(format="gptq", dtype="u4"), ValueError, "import format"),
        (dict(format="mxfp5"), ValueError, "unknown quantization format"),
        (dict(format="mxfp4", mx_scale="ceil"), ValueError, "mx_scale must be one of"),
        (dict(dtype="u4", mx_scale="rceil"), ValueError, "scaled has none"),
        (dict(format="nvfp4", mx_scale="rceil"), ValueError, "nvfp4 has none"),
    ],
    ids=str,
)  # fmt: skip
def test_bad_arguments_are_refused(kwargs: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        quantize(weights(), **kwargs)


def test_bad_weights_are_refused():
    w = weights()
    w[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"nan at \(3, 4\)"):
        quantize(w, "u4")
    with pytest.raises(ValueError, match="2-D"):
        quantize(np.ones(64), "u4")
    with pytest.raises(ValueError, match="overflows f16"):
        quantize(np.full((32, 1), 1e7), "i4", group_size=32)
    assert (
        quantize(np.full((32, 1), 1e7), "i4", group_size=32, scale_dtype="f32").error(
            np.full((32, 1), 1e7)
        )["relative"]
        < 1e-6
    )


def test_an_overflowing_scale_suggests_bf16_scales_which_the_kernels_take():
    """f32 scales only serve dequantize(); the error names bf16 (f32's range), and a
    weight quantized as it says is one the matmul plans for bf16 activations accept."""
    w = weights() * 2.0**20  # about 1e6: scales near 2^20 / 7 · 0.1, past f16's 65504
    with pytest.raises(ValueError, match=r"overflows f16: pass scale_dtype='bf16'") as info:
        quantize(w, "u4")
    assert "dequantize" in str(info.value)  # where f32 is mentioned, it is for that only
    qw = quantize(w, "u4", scale_dtype="bf16")
    # Scaling by a power of two is exact in bf16: the unit weight's values, scaled.
    unit = quantize(weights(), "u4", scale_dtype="bf16").dequantize()
    np.testing.assert_array_equal(qw.dequantize(), unit * np.float32(2.0**20))
    tl.quant.plan(qw, 1, "cpu", x_dtype="bf16")  # accepted: no TypeError about the scales


# f16's smallest subnormal, and the bits each code type resolves (N for uN/iN, m + 1
# for ExMy): a nonzero group's scale below 2^-24 · 2^(bits - 1) is refused.
F16_TINY = 2.0**-24


@pytest.mark.parametrize("zero_point", [False, True], ids=["sym", "asym"])
@pytest.mark.parametrize("magnitude", [2.0**-30, 2.0**-23])  # about 1e-9 and 1e-7
def test_scales_that_underflow_f16_are_refused_naming_the_groups(magnitude, zero_point):
    w = weights() * magnitude  # its last column is all zeros: those groups quantize fine
    nonzero = int((np.abs(w.reshape(K // 128, 128, N)).max(1) > 0).sum())
    assert nonzero == 2 * (N - 1)
    with pytest.raises(ValueError, match=rf"{nonzero} of {2 * N} groups .* scale_dtype='bf16'"):
        quantize(w, "u4", zero_point=zero_point)
    qw = quantize(w, "u4", zero_point=zero_point, scale_dtype="bf16")
    unit = quantize(weights(), "u4", zero_point=zero_point, scale_dtype="bf16").dequantize()
    assert np.abs(unit).max() > 0
    np.testing.assert_array_equal(qw.dequantize(), unit * np.float32(magnitude))


def test_the_underflow_threshold_is_the_scale_types_subnormal_precision():
    """i4 codes resolve 4 bits: a scale of 2^-24 · 2^3 (4 significant bits in f16's
    subnormals) is kept, one just below it is refused, and so are the f16 scales of a
    small float type whose range puts every scale under f16's subnormals."""
    i4 = F16_TINY * 2**3
    w = np.zeros((32, 3))  # column 2 stays all zeros: scale 0, no error
    w[0, 0] = 7 * i4  # i4: s = absmax / 7
    w[0, 1] = 7 * i4 * 1.01
    qw = quantize(w, "i4", group_size=32)
    assert qw.scales.tolist() == [[i4, np.float16(i4 * 1.01), 0.0]]
    np.testing.assert_array_equal(qw.dequantize()[:, 2], 0)
    w[0, 1] = 7 * i4 * 0.99
    with pytest.raises(ValueError, match=r"1 of 3 groups"):
        quantize(w, "i4", group_size=32)
    e2m1 = F16_TINY * 2**1  # f4e2m1 (max 6) resolves 2 bits
    assert quantize(np.full((32, 1), 6 * e2m1), "f4e2m1", group_size=32).scales[0, 0] == e2m1
    with pytest.raises(ValueError, match="1 of 1 groups"):
        quantize(np.full((32, 1), 6 * e2m1 * 0.9), "f4e2m1", group_size=32)
    with pytest.raises(ValueError, match="scale_dtype='bf16'"):
        quantize(weights(), "f8e7m0")  # max 2^64: every f16 scale underflows
    zeros = quantize(np.zeros((64, 2)), "u4", group_size=32)
    assert zeros.scales.tolist() == [[0, 0], [0, 0]] and not zeros.dequantize().any()


def test_every_format_is_reachable():
    block_scaled = {name for name, f in FORMATS.items() if f.kind in ("mx", "nvfp4")}
    assert block_scaled == {*MX, "nvfp4"}
    codebooks = {name for name, f in FORMATS.items() if f.kind == "codebook"}
    assert codebooks == {"nf4", "fp4_bnb", "codebook"}
    assert {f.kind for f in FORMATS.values()} == {"scaled", "mx", "nvfp4", "codebook"}


# ------------------------------------------------------------------ file form


@pytest.mark.parametrize(
    "kwargs",
    [dict(dtype="u4", zero_point=True), dict(dtype="i3", group_size=32), dict(dtype="f6e2m3"),
     dict(format="mxfp6_e3m2"), dict(format="nvfp4"), dict(dtype="u7", scale_dtype="bf16")],
    ids=str,
)  # fmt: skip
@pytest.mark.parametrize("name", ["w.bin", "w.safetensors"])  # .bin: an .npz, no suffix added
def test_save_load_round_trip(tmp_path, kwargs: dict, name: str):
    qw = quantize(weights(seed=2), **kwargs)
    path = tmp_path / name
    qw.save(path)
    assert path.read_bytes()[:2] == b"PK" or name.endswith(".safetensors")
    back = QuantizedWeight.load(path)
    assert back.codes == qw.codes and back.shape == qw.shape and back.format == qw.format
    assert (back.scale_dtype, back.group_size, back.tensor_scale) == (
        qw.scale_dtype, qw.group_size, qw.tensor_scale
    )  # fmt: skip
    np.testing.assert_array_equal(back.scale_codes, qw.scale_codes)
    assert (back.zeros is None) == (qw.zeros is None)
    np.testing.assert_array_equal(
        back.dequantize().view(np.uint32), qw.dequantize().view(np.uint32)
    )


def _rewrite(src, dst, drop=(), **changes) -> None:
    with np.load(src) as archive:
        arrays = {name: archive[name] for name in archive.files if name not in drop}
    arrays.update(changes)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    ("drop", "changes", "match"),
    [
        ((), dict(version=np.int64(3)), r"version 3 is not supported \(this tilelang reads "
         r"versions 1, 2; a newer file needs a newer tilelang\)"),
        ((), dict(version=np.int64(1), packing=np.str_("dot")),
         "unknown packing 'dot' \\(a version 1 file holds 'plain'\\)"),
        ((), dict(packing=np.str_("dot")), "a 'dot' packing needs packing_tile"),
        (("version",), {}, "no 'version'"),
        (("scale_codes",), {}, "lacks scale_codes"),
        (("dtype", "shape"), {}, "lacks dtype, shape"),
        ((), dict(packing=np.str_("tiles")), "unknown packing 'tiles'"),
        ((), dict(dtype=np.str_("q7")), "unknown dtype name 'q7'"),
        ((), dict(shape=np.array([64, 12])), "packs into"),
        ((), dict(group_size=np.int64(0)), "group_size must be a positive int"),
        ((), dict(group_size=np.int64(100)), r"scale_codes must have shape \(3, 12\)"),
        ((), dict(scale_codes=np.zeros((2, 12), np.uint16)), r"shape \(4, 12\)"),
        ((), dict(format=np.str_("mxfp9")), "unknown quantization format"),
        ((), dict(format=np.int64(3)), "'format' must be a string"),
    ],
    ids=str,
)  # fmt: skip
def test_bad_files_are_refused_naming_the_file(tmp_path, drop, changes, match):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    quantize(weights(), "u4", group_size=64, zero_point=True).save(good)
    _rewrite(good, bad, drop, **changes)
    with pytest.raises(ValueError, match=match) as info:
        QuantizedWeight.load(bad)
    assert str(bad) in str(info.value)


def test_files_that_are_not_archives_are_refused(tmp_path):
    text, npy = tmp_path / "notes.txt", tmp_path / "one.npy"
    text.write_text("hello")
    np.save(npy, np.arange(3))
    for path, start in ((text, b"hell"), (npy, b"\x93NUM")):
        with pytest.raises(ValueError, match="not a tilelang quantized-weight file") as info:
            QuantizedWeight.load(path)
        message = str(info.value)
        assert str(path) in message and "allow_pickle" not in message  # numpy's advice
        assert "expected an .npz archive (a zip file" in message and repr(start) in message
    with pytest.raises(FileNotFoundError):
        QuantizedWeight.load(tmp_path / "missing.npz")


# ------------------------------------------------------------- the dataclass


def test_the_weight_is_frozen_and_checks_its_fields():
    qw = quantize(weights(), "u4", group_size=64, zero_point=True)
    with pytest.raises(AttributeError):
        qw.group_size = 32  # type: ignore[misc]
    assert qw.packing is None and qw.plain_codes().shape == (K, N)
    assert qw.nbytes == K * N // 2 + 4 * N * 2 + 4 * N * 4
    with pytest.raises(TypeError, match=r"packing must be None .* or a tilelang\.DotPacking"):
        QuantizedWeight(qw.codes, qw.scale_codes, qw.scale_dtype, 64, packing="dot")  # type: ignore[arg-type]
    packed = qw.pack_for_dot((64, 128))
    with pytest.raises(ValueError, match="must be a u4 tensor of shape"):
        QuantizedWeight(qw.codes, qw.scale_codes, qw.scale_dtype, 64, packing=packed.packing)
    with pytest.raises(ValueError, match="tensor_scale is NVFP4's"):
        QuantizedWeight(qw.codes, qw.scale_codes, qw.scale_dtype, 64, tensor_scale=1.0)
    with pytest.raises(ValueError, match="permutation"):
        QuantizedWeight(qw.codes, qw.scale_codes, qw.scale_dtype, 64, perm=np.zeros(K, int))
    with pytest.raises(ValueError, match="codes of f16"):
        QuantizedWeight(qw.codes, qw.scale_codes.astype(np.int64) - 1, qw.scale_dtype, 64)
    fake = types.SimpleNamespace()
    with pytest.raises(TypeError, match="PackedArray"):
        QuantizedWeight(fake, qw.scale_codes, qw.scale_dtype, 64)  # type: ignore[arg-type]


def test_a_weight_used_by_matmul_still_pickles_and_copies_without_its_kernel_cache():
    """The kernels' cache (packed codes, host tensors) is the process's: pickles and
    copies leave it out, and it holds no local function, so it could be pickled too."""
    import copy
    import pickle

    qw = quantize(weights(n=64), "u4", group_size=64, zero_point=True)
    x = np.ones((2, K), np.float16)
    y = tl.quant.matmul(x, qw)
    cache = qw.__dict__["_kernel_cache"]
    pickle.dumps(cache)  # a lambda in it (the host tensors' `put`) was unpicklable
    for other in (pickle.loads(pickle.dumps(qw)), copy.copy(qw), copy.deepcopy(qw)):
        assert "_kernel_cache" not in other.__dict__
        np.testing.assert_array_equal(other.dequantize(), qw.dequantize())
        np.testing.assert_array_equal(tl.quant.matmul(x, other), y)
    assert qw.__dict__["_kernel_cache"] is cache


def test_scales_below_f16s_normal_range_are_pointed_at_bf16():
    """An imported checkpoint (FP8's f32 scales) has no float weights to quantize again:
    with scales below f16's normal range (here an f8e4m3 weight of values near 1e-3,
    scales near 2e-6), the rounding warning says bf16 keeps f32's exponent range, and
    it says nothing of it for scales f16 holds normally."""
    tiny = quantize(weights(n=64) * 1e-3, "f8e4m3", group_size=64, scale_dtype="f32")
    assert tiny.scales.max() < 2.0**-14
    with pytest.warns(tl.quant.ScaleRoundingWarning, match=r"lose less in bf16"):
        tiny.with_scale_dtype("f16")
    plain = quantize(weights(n=64), "i4", group_size=32)
    with pytest.warns(tl.quant.ScaleRoundingWarning) as record:
        plain.with_scale_dtype("bf16")
    assert "lose less" not in str(record[0].message)


def test_with_scale_dtype_rounds_to_nearest_even_and_reports_the_error():
    qw = quantize(weights(n=64), "i4", group_size=32)  # f16 scales
    f16 = qw.scale_codes.view(np.float16)
    expected = f16.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
    with pytest.warns(tl.quant.ScaleRoundingWarning, match="not exact in bf16") as record:
        bf16 = qw.with_scale_dtype("bf16")
    assert record[0].filename == __file__
    assert bf16.scale_dtype == tl.bf16 and bf16.scales.dtype == np.float32
    np.testing.assert_array_equal(bf16.scales, expected)
    warning = record[0].message
    assert warning.rounded == np.count_nonzero(expected != f16.astype(np.float32)) > 0
    codes = qw.dtype.decode(qw.plain_codes()).astype(np.float64)  # i4 values, exact
    per_row = lambda s: np.repeat(s.astype(np.float64), 32, axis=0)  # noqa: E731
    old = (codes * per_row(f16)).astype(np.float16).astype(np.float64)
    new = (codes * per_row(expected)).astype(ml_dtypes.bfloat16).astype(np.float64)
    assert warning.error["max_abs"] == pytest.approx(np.abs(new - old).max(), rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # f16 -> f32 is exact: no warning
        f32 = qw.with_scale_dtype("f32")
    np.testing.assert_array_equal(f32.scales, f16.astype(np.float32))
    assert qw.with_scale_dtype("f16") is qw
    with pytest.raises(ValueError, match="scale_dtype: mxfp4 scales are always e8m0"):
        quantize(weights(), format="mxfp4").with_scale_dtype("bf16")


def test_a_k_the_default_group_does_not_divide_suggests_per_channel_scales():
    with pytest.raises(ValueError, match=r"K = 100 .* 128 \(the default\); pass group_size=-1"):
        quantize(weights(k=100), "u4")
    with pytest.raises(ValueError, match=r"group size 64; .*e\.g\. 48"):
        quantize(weights(k=96), "u4", group_size=64)
    with pytest.raises(ValueError, match=r"mxfp4 has one scale per 32 rows .* K = 48"):
        quantize(weights(k=48), format="mxfp4")
    assert quantize(weights(k=100), "u4", group_size=-1).group_size == 100


@pytest.mark.parametrize(
    "kwargs", [dict(dtype="u4"), dict(dtype="i5", zero_point=True), dict(format="nvfp4")], ids=str
)
def test_slices_of_columns_give_the_same_weight(monkeypatch, kwargs: dict):
    """quantize works on slices of columns to bound its memory; the slicing is invisible."""
    from tilelang.quant import quantizer as module

    w = weights(seed=8)
    whole = quantize(w, **kwargs)
    monkeypatch.setattr(module, "_SLICE_ELEMENTS", K * 5)  # slices of 5, 5 and 2 columns
    sliced = quantize(w, **kwargs)
    assert sliced.codes == whole.codes and sliced.tensor_scale == whole.tensor_scale
    np.testing.assert_array_equal(sliced.scale_codes, whole.scale_codes)
    assert (sliced.zeros is None) == (whole.zeros is None)
    if whole.zeros is not None:
        np.testing.assert_array_equal(sliced.zeros, whole.zeros)


def test_packed_weights_keep_their_codes_and_files(tmp_path):
    """pack_for_dot permutes the codes for the kernels; plain_codes, dequantize and the
    file form (version 2, packing "dot" and its parameters) see the same weight."""
    qw = quantize(weights(seed=9), "u3", group_size=32, zero_point=True)
    packed = qw.pack_for_dot((32, 128), operand="bf16")
    assert isinstance(packed.codes, tl.DotPackedArray) and packed.shape == qw.shape
    assert packed.packing.tile == (32, 128) and packed.codes.shape == (1, K * 128)
    np.testing.assert_array_equal(packed.plain_codes(), qw.plain_codes())
    np.testing.assert_array_equal(
        packed.dequantize().view(np.uint32), qw.dequantize().view(np.uint32)
    )
    assert "packed in 32x128 tiles" in repr(packed) and packed.unpacked().codes == qw.codes
    path = tmp_path / "packed.npz"
    packed.save(path)
    with np.load(path) as archive:
        assert int(archive["version"]) == 2 and str(archive["packing"]) == "dot"
        assert archive["packing_tile"].tolist() == [32, 128]
        assert str(archive["packing_operand"]) == "bf16"
    back = QuantizedWeight.load(path)
    assert back.packing == packed.packing and back.codes == packed.codes


def test_safetensors_files_hold_the_fields_as_tensors_and_metadata(tmp_path):
    """Read with safetensors itself: strings are metadata, everything else a tensor; a
    dot-packed weight keeps its packing; files that are not ours are refused."""
    import safetensors.numpy as safetensors_numpy  # the test extra installs it
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    packed = quantize(weights(seed=9), "u3", group_size=32, zero_point=True).pack_for_dot(
        (32, 128), operand="bf16"
    )
    packed.save(path)
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    tensors = safetensors_numpy.load_file(path)
    assert metadata["packing"] == "dot" and metadata["packing_operand"] == "bf16"
    assert metadata["dtype"] == "u3" and "dtype" not in tensors
    assert int(tensors["version"]) == 2 and tensors["packing_tile"].tolist() == [32, 128]
    np.testing.assert_array_equal(tensors["codes"], packed.codes.data)
    back = QuantizedWeight.load(path)
    assert back.packing == packed.packing and back.codes == packed.codes
    np.testing.assert_array_equal(back.zeros, packed.zeros)

    newer, foreign = tmp_path / "newer.safetensors", tmp_path / "model.safetensors"
    safetensors_numpy.save_file({**tensors, "version": np.asarray(3)}, newer, metadata)
    safetensors_numpy.save_file({"weight": np.ones((2, 2), np.float32)}, foreign, {"format": "pt"})
    with pytest.raises(ValueError, match="version 3 is not supported"):
        QuantizedWeight.load(newer)
    with pytest.raises(ValueError, match="no 'version' array") as info:
        QuantizedWeight.load(foreign)
    assert str(foreign) in str(info.value)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"not a tilelang quantized-weight file \(safetensors\)"):
        QuantizedWeight.load(cut)


def test_without_the_safetensors_package_the_error_says_what_to_install(tmp_path, monkeypatch):
    qw = quantize(weights(), "u4", group_size=64)
    written = tmp_path / "w.safetensors"
    qw.save(written)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    for action in (lambda: qw.save(tmp_path / "other.safetensors"),
                   lambda: QuantizedWeight.load(written)):  # fmt: skip
        with pytest.raises(ImportError, match=r"needs the optional package safetensors \(pip"):
            action()
    qw.save(tmp_path / "w.npz")  # needs nothing
    assert QuantizedWeight.load(tmp_path / "w.npz").codes == qw.codes


def test_version_1_files_are_still_read(tmp_path):
    good, old = tmp_path / "good.npz", tmp_path / "old.npz"
    qw = quantize(weights(), "u4", group_size=64, zero_point=True)
    qw.save(good)
    _rewrite(good, old, version=np.int64(1))
    back = QuantizedWeight.load(old)
    assert back.packing is None and back.codes == qw.codes
