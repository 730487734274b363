"""`tilelang.kernels.norm` (issue 12, part 2): `rms_norm` and `silu_and_mul` against
numpy float64 written from the definitions, on the reference interpreter and the CPU
backend; widths that are not multiples of the tile, leading dimensions of any rank, f16
and bf16; 0 spills on sm_80 and sm_90; errors that name the parameter."""

import ml_dtypes
import numpy as np
import pytest
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang.kernels import norm, rms_norm, silu_and_mul

BACKENDS = [True, False]
BACKEND_IDS = ["interpreter", "cpu"]


def rms_reference(x, weight, eps):
    x = np.asarray(x, np.float64)
    rows = x.reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        out[i] = row / np.sqrt(sum(v * v for v in row) / len(row) + eps) * weight
    return out.reshape(x.shape)


def silu_mul_reference(x):
    x = np.asarray(x, np.float64)
    d = x.shape[-1] // 2
    gate, up = x[..., :d], x[..., d:]
    return gate / (1.0 + np.exp(-gate)) * up


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 100), (2, 3, 257), (5, 1000)], ids=str)
def test_rms_norm_matches_numpy(shape, interpret):
    rng = np.random.default_rng(shape[-1])
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    y = rms_norm(x, w, eps=1e-5, interpret=interpret)
    assert y.dtype == np.float32
    assert_close(y, rms_reference(x, w, 1e-5), 1e-5)


@pytest.mark.parametrize("interpret", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("shape", [(1, 2), (7, 14), (2, 3, 200), (3, 514)], ids=str)
def test_silu_and_mul_matches_numpy(shape, interpret):
    x = (np.random.default_rng(shape[-1]).standard_normal(shape) * 3).astype(np.float32)
    y = silu_and_mul(x, interpret=interpret)
    assert y.shape == (*shape[:-1], shape[-1] // 2) and y.dtype == np.float32
    assert_close(y, silu_mul_reference(x), 1e-6)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["f16", "bf16"])
def test_half_precision_rounds_once(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 130)).astype(dtype)
    w = rng.standard_normal(130).astype(dtype)
    eps = 2.0**-11 if dtype == np.float16 else 2.0**-8
    y = rms_norm(x, w)
    assert y.dtype == np.dtype(dtype)
    assert_close(y, rms_reference(x, w.astype(np.float64), 1e-6), 2 * eps)
    y = rms_norm(x, w.astype(np.float32))  # an f32 weight with half-precision x
    assert_close(y, rms_reference(x, w.astype(np.float64), 1e-6), 2 * eps)
    z = silu_and_mul(x)
    assert z.dtype == np.dtype(dtype)
    assert_close(z, silu_mul_reference(x), 2 * eps)


@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 9), width=st.integers(1, 600))
def test_random_widths(rows, width):
    rng = np.random.default_rng(rows * 1000 + width)
    x = rng.standard_normal((rows, 2 * width)).astype(np.float32)
    assert_close(silu_and_mul(x), silu_mul_reference(x), 1e-6)
    w = rng.standard_normal(2 * width).astype(np.float32)
    assert_close(rms_norm(x, w), rms_reference(x, w, 1e-6), 1e-5)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_compiles_for_sm80_and_sm90_without_spills(arch):
    builds = [
        norm.rms_norm_kernel.compile(target=arch, BM=4, BH=256),
        norm.silu_and_mul_kernel.compile(target=arch, BM=4, BH=128),
    ]
    for build in builds:
        resources = build.resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0


def test_bad_inputs_name_the_parameter_the_expectation_and_what_was_given():
    x = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \[6\], got shape \[5\]"):
        rms_norm(x, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="weight must hold one of f32, got float16"):
        rms_norm(x, np.zeros(6, np.float16))
    with pytest.raises(TypeError, match="x must hold one of f32, f16, bf16, got int32"):
        rms_norm(x.astype(np.int32), np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="eps must be a non-negative number, got -1"):
        rms_norm(x, np.zeros(6, np.float32), eps=-1)
    with pytest.raises(
        ValueError, match=r"x must have an even last dimension .*, got shape \[2, 5\]"
    ):
        silu_and_mul(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match=r"x must be a numpy array .* or a device tensor, got list"):
        silu_and_mul([1.0, 2.0])
