"""What `tilelang.quant.quantize` refuses because the kernels could not compute it, and
how: weights whose dequantized value (q − z)·s overflows the scale type, small floats
whose values the f16 scales' type does not hold (also through QuantLinear.from_linear),
inputs with no rows or beyond NVFP4's f32 tensor scale; and the rounding of ties in
small floats without mantissa bits.

The oracles are written here from the formats' definitions with numpy's own f16 and
ml_dtypes' bf16 arithmetic (IEEE round to nearest even, inf on overflow): never through
tilelang.dtypes or tilelang.quant helpers.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from tilelang.quant import quantize

F16_MAX = 65504.0


def exmy_values(e: int, m: int) -> np.ndarray:
    """Every finite value of a sign + E + M small float (bias 2^(E−1) − 1, subnormals, no
    inf or NaN), from the bit layout."""
    bias = (1 << (e - 1)) - 1
    values = []
    for field in range(1 << e):
        for mant in range(1 << m):
            if field == 0:
                values.append(mant * 2.0 ** (1 - bias - m))
            else:
                values.append((1 + mant / 2**m) * 2.0 ** (field - bias))
    values = np.array(values)
    return np.concatenate([values, -values])


def held_by_f16(values: np.ndarray) -> bool:
    with np.errstate(over="ignore"):
        return bool(np.array_equal(values.astype(np.float16).astype(np.float64), values))


# -------------------------------------------------- (q − z)·s must fit the scale type


def u4_weight(absmax: float) -> np.ndarray:
    w = np.full((128, 8), absmax, np.float32)
    w[0] = -absmax
    return w


def f16_u4_product(absmax: float) -> float:
    """The largest dequantized weight of a symmetric u4 group of largest |w| `absmax`
    with f16 scales: the code 7 above the midpoint times the f16 scale absmax / 7, in
    f16 arithmetic (one IEEE rounding: inf past 65504 + half an ulp)."""
    scale = np.float16(absmax / 7)
    with np.errstate(over="ignore"):
        return float(np.float16(7) * scale)


@pytest.mark.parametrize("absmax", [1e5, 65500.0])
def test_weights_whose_product_overflows_f16_are_refused_naming_the_group(absmax):
    """|w| = 1e5 has an f16 scale (14288) but (q − z)·s = 1e5 is +inf in f16; 65500
    rounds its scale up to 9360, and 7 · 9360 = 65520 rounds to inf too."""
    assert np.isfinite(np.float16(absmax / 7)) and np.isinf(f16_u4_product(absmax))
    with pytest.raises(ValueError) as info:
        quantize(u4_weight(absmax), "u4")
    message = str(info.value)
    for part in ("group 0 (rows 0..127) of column 0", f"{absmax:.6g}", "65504", "bf16"):
        assert part in message, (part, message)


def test_the_largest_weight_f16_products_hold_is_accepted_and_finite():
    assert np.isfinite(f16_u4_product(60000.0))
    w = quantize(u4_weight(60000.0), "u4").dequantize()
    assert np.isfinite(w).all()
    assert w[1, 0] == f16_u4_product(60000.0) and w[0, 0] == -f16_u4_product(60000.0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(dtype="u4", zero_point=True), dict(dtype="i8", group_size=-1), dict(dtype="f4e2m1")],
    ids=str,
)
def test_every_scaled_kind_refuses_an_overflowing_product(kwargs):
    with pytest.raises(ValueError, match=r"65504.*bf16"):
        quantize(u4_weight(1e5), **kwargs)


def test_bf16_scales_hold_what_f16_products_cannot():
    """The fix the error suggests: bf16 scales, whose product (q − z)·s is rounded to
    bf16 once."""
    qw = quantize(u4_weight(1e5), "u4", scale_dtype="bf16")
    scale = np.float64(ml_dtypes.bfloat16(1e5 / 7))
    expected = float(ml_dtypes.bfloat16(7 * scale))
    w = qw.dequantize()
    assert np.isfinite(w).all() and w[1, 0] == expected and w[0, 0] == -expected


def test_an_overflow_in_a_later_slice_of_columns_names_its_own_column(monkeypatch):
    """quantize works in slices of columns; the error names the column in W."""
    import importlib

    quantizer = importlib.import_module("tilelang.quant.quantizer")
    monkeypatch.setattr(quantizer, "_SLICE_ELEMENTS", 128 * 3)  # 3 columns a slice
    w = np.ones((128, 8), np.float32)
    w[5, 6] = 1e5
    with pytest.raises(ValueError, match=r"group 0 \(rows 0..127\) of column 6: its largest"):
        quantize(w, "i4")


# ------------------------------------------------ small floats beyond f16's values


BEYOND_F16 = {"f6e5m0": (5, 0), "f7e5m1": (5, 1), "f7e6m0": (6, 0), "f8e6m1": (6, 1),
              "f8e7m0": (7, 0)}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BEYOND_F16))
def test_small_floats_beyond_f16_are_refused_with_f16_scales(name):
    """The kernels convert codes to the scales' type before scaling; these types' values
    are not all f16 values, so f16 scales are refused at quantize time, with the reason
    and what works."""
    assert not held_by_f16(exmy_values(*BEYOND_F16[name]))
    w = np.random.default_rng(0).standard_normal((128, 16))
    with pytest.raises(ValueError) as info:
        quantize(w, name)  # f16 scales: the default
    message = str(info.value)
    assert f"{name} values are not all exact in f16" in message
    assert "convert codes to the scales' type f16 before scaling" in message
    assert "scale_dtype='bf16'" in message and "bf16 activations" in message
    qw = quantize(w, name, scale_dtype="bf16")
    assert qw.error(w)["relative"] < 0.5


@pytest.mark.parametrize(("e", "m"), [(4, 3), (3, 1), (4, 0), (2, 1), (3, 2)])
def test_small_floats_within_f16_keep_f16_scales(e, m):
    assert held_by_f16(exmy_values(e, m))
    w = np.random.default_rng(1).standard_normal((128, 16))
    assert quantize(w, f"f{1 + e + m}e{e}m{m}").scale_dtype.name == "f16"


def test_quantlinear_from_linear_refuses_them_at_construction():
    torch = pytest.importorskip("torch")
    from tilelang.torch import QuantLinear

    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 32).half()
    with pytest.raises(ValueError, match=r"f7e5m1 values are not all exact in f16.*bf16"):
        QuantLinear.from_linear(linear, "f7e5m1")
    layer = QuantLinear.from_linear(linear, "f7e5m1", scale_dtype="bf16").bfloat16()
    x = torch.randn(3, 128).bfloat16()
    y = layer(x).float().numpy().astype(np.float64)
    w = layer.qweight.dequantize().astype(np.float64)
    bias = layer.bias.detach().float().numpy().astype(np.float64)
    xd = x.float().numpy().astype(np.float64)
    exact = xd @ w + bias
    # f32 accumulation of K + 1 terms, then one bf16 rounding (half an ulp: 2^-8).
    slack = 130 * 2.0**-24 * (np.abs(xd) @ np.abs(w) + np.abs(bias))
    assert (np.abs(y - exact) <= slack + 2.0**-8 * (np.abs(exact) + slack)).all()


# ----------------------------------------------------------------- refused inputs


@pytest.mark.parametrize("group_size", [-1, None, 32])
def test_a_weight_without_rows_is_refused_naming_w(group_size):
    with pytest.raises(ValueError, match=r"w must hold at least one row \(K ≥ 1\), got shape"):
        quantize(np.ones((0, 8)), "u4", group_size=group_size)


def test_nvfp4_weights_beyond_f32_are_refused_saying_so():
    """NVFP4's tensor scale is f32 (absmax / (6 · 448)); float64 weights past f32's range
    make it inf: refused as the weights' range, not as a bad tensor_scale."""
    w = np.random.default_rng(2).standard_normal((64, 8)) * 1e300
    with pytest.raises(ValueError) as info:
        quantize(w, format="nvfp4")
    message = str(info.value)
    assert message.startswith("w: its largest |w|") and "out of f32's range" in message
    assert "tensor_scale must be" not in message


# ------------------------------------------------------------------- rounding


def test_ties_in_small_floats_without_mantissa_go_to_the_larger_magnitude():
    """f3e2m0 holds 0, 1, 2, 4: no significand is even, so a tie between two powers of
    two goes to the larger (IEEE 754 §4.3.1: 3 → 4, 1.5 → 2), and a tie with 0 to 0."""
    assert sorted(set(np.abs(exmy_values(2, 0)))) == [0.0, 1.0, 2.0, 4.0]
    w = np.zeros((32, 1))
    w[:4, 0] = [4.0, 3.0, 1.5, 0.5]  # absmax 4 = f3e2m0's largest: the scale is 1
    assert quantize(w, "f3e2m0", group_size=32).dequantize()[:4, 0].tolist() == [4, 4, 2, 0]
