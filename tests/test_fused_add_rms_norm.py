"""`tilelang.kernels.fused_add_rms_norm` (vLLM's fused residual add + RMSNorm, in place):
residual becomes x + residual rounded to the dtype, bit for bit, and x the float64
RMSNorm of that rounded sum times weight within one rounding, on the reference
interpreter and the CPU backend (the same bits), for rows held whole and rows streamed
in tiles, leading dimensions of any rank, f32/f16/bf16, strided rows written where they
lie; the torch operator mutates both tensors and passes opcheck; the static report puts
the [4096, 4096] bf16 build at the DRAM floor of one read and one write of each tensor;
sm_80/sm_90a builds spill nothing; bad input is named."""

import ml_dtypes
import numpy as np
import pytest

from tilelang.kernels import fused_add_rms_norm, norm

TYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16}
#: Half an ulp of each type relative to the value, doubled: the output's one rounding
#: plus the f32 arithmetic (far below it) with room for rsqrt's approximation.
TOLERANCE = {"f32": 2.0**-21, "f16": 2.0**-10, "bf16": 2.0**-7}


def reference(x: np.ndarray, residual: np.ndarray, weight: np.ndarray, eps: float):
    """(residual, x) after the call, from the definition: the sum rounded to the dtype
    (exact in f32 for these types, then one rounding), and the RMSNorm of that rounded sum
    in float64 times the weight."""
    added = (x.astype(np.float32) + residual.astype(np.float32)).astype(x.dtype)
    rows = added.astype(np.float64)
    rms = np.sqrt((rows * rows).mean(axis=-1, keepdims=True) + eps)
    return added, rows / rms * weight.astype(np.float64)


def inputs(shape, kind, seed=0, weight_type=None):
    rng = np.random.default_rng(seed)
    dtype = TYPES[kind]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    residual = rng.standard_normal(shape).astype(dtype)
    weight = rng.uniform(-2, 2, shape[-1]).astype(weight_type or dtype)
    return x, residual, weight


def assert_normed(got, expected, kind):
    """Each element within the tolerance relative to its row's largest |value| (an
    element near 0 carries its row's absolute rounding error)."""
    scale = np.abs(expected).max(axis=-1, keepdims=True)
    err = np.abs(got.astype(np.float64) - expected) / scale
    assert err.max() <= TOLERANCE[kind], err.max()


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
@pytest.mark.parametrize("kind", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 100), (2, 3, 257), (3, 8200)], ids=str)
def test_residual_gets_the_rounded_sum_and_x_its_rms_norm(shape, kind, interpret):
    """8200 columns pass WHOLE_ROW: the two-pass build (the sum stored, then read back)."""
    x, residual, weight = inputs(shape, kind, seed=shape[-1])
    added, normed = reference(x, residual, weight, 1e-5)
    assert fused_add_rms_norm(x, residual, weight, 1e-5, interpret=interpret) is None
    np.testing.assert_array_equal(residual.view(np.uint8), added.view(np.uint8))
    assert x.dtype == TYPES[kind]
    assert_normed(x, normed, kind)


def test_the_interpreter_writes_the_cpu_backends_bits():
    for shape, kind in (((5, 300), "bf16"), ((2, 8200), "f16")):
        a, b = inputs(shape, kind, seed=1), inputs(shape, kind, seed=1)
        fused_add_rms_norm(*a)
        fused_add_rms_norm(*b, interpret=True)
        for got, again in zip(a[:2], b[:2], strict=True):
            np.testing.assert_array_equal(got.view(np.uint8), again.view(np.uint8))


def test_an_f32_weight_with_bf16_rows():
    x, residual, weight = inputs((4, 96), "bf16", seed=2, weight_type=np.float32)
    added, normed = reference(x, residual, weight, 1e-6)
    fused_add_rms_norm(x, residual, weight)
    np.testing.assert_array_equal(residual.view(np.uint16), added.view(np.uint16))
    assert_normed(x, normed, "bf16")


def test_strided_rows_are_written_where_they_lie_and_nothing_else():
    """x and residual as column ranges of wider buffers (a fused projection's output):
    their rows are updated in place, the other columns keep their sentinels."""
    x_buffer = np.full((6, 160), -9.0, np.float16)
    r_buffer = np.full((6, 200), 7.0, np.float16)
    x0, r0, weight = inputs((6, 128), "f16", seed=3)
    x_buffer[:, 16:144], r_buffer[:, 64:192] = x0, r0
    added, normed = reference(x0, r0, weight, 1e-6)
    fused_add_rms_norm(x_buffer[:, 16:144], r_buffer[:, 64:192], weight)
    np.testing.assert_array_equal(r_buffer[:, 64:192], added)
    assert_normed(x_buffer[:, 16:144], normed, "f16")
    assert (x_buffer[:, :16] == -9).all() and (x_buffer[:, 144:] == -9).all()
    assert (r_buffer[:, :64] == 7).all() and (r_buffer[:, 192:] == 7).all()


def test_bad_input_is_named():
    x, residual, weight = inputs((2, 3, 16), "f16")
    cases = [
        (dict(residual=residual[:1]), ValueError, r"residual must have shape \[2, 3, 16\], got shape \[1, 3, 16\]"),
        (dict(residual=residual.astype(np.float32)), TypeError, r"residual must hold one of f16, got float32"),
        (dict(weight=weight[:8]), ValueError, r"weight must have shape \[16\], got shape \[8\]"),
        (dict(weight=weight.astype(ml_dtypes.bfloat16)), TypeError, r"weight must hold one of f16, f32, got bfloat16"),
        (dict(x=x.astype(np.int32), residual=residual.astype(np.int32)), TypeError, r"x must hold one of f32, f16, bf16, got int32"),
        (dict(eps=-1.0), ValueError, r"eps must be a non-negative number, got -1"),
        (dict(residual=x), ValueError, r"parameters 'x' and 'residual' overlap in memory"),
        (dict(x=x.transpose(1, 0, 2), residual=residual.transpose(1, 0, 2)), ValueError, r"x of shape \[3, 2, 16\] is written in place and must be viewable as rows \[6, 16\] without a copy"),
    ]  # fmt: skip
    for changes, error, message in cases:
        args = {**dict(x=x, residual=residual, weight=weight, eps=1e-6), **changes}
        with pytest.raises(error, match=message):
            fused_add_rms_norm(**args)
    scalar = np.array(1.0, np.float16)
    with pytest.raises(ValueError, match=r"x must have shape \[\.\.\., H\], got shape \[\]"):
        fused_add_rms_norm(scalar, scalar.copy(), weight)
    frozen = x.copy()
    frozen.flags.writeable = False
    with pytest.raises(
        ValueError,
        match=r"parameter 'x' is written by the kernel, but the array given is read-only",
    ):
        fused_add_rms_norm(frozen, residual, weight)


def test_the_torch_op_updates_both_tensors_in_place_and_passes_opcheck():
    import torch

    from tilelang.torch import norm_ops

    x, residual, weight = inputs((3, 5, 64), "bf16", seed=4)
    added, normed = reference(x, residual, weight, 1e-6)
    tx, tr = torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16), None
    tr = torch.from_numpy(residual.view(np.uint16)).view(torch.bfloat16)
    tw = torch.from_numpy(weight.view(np.uint16)).view(torch.bfloat16)
    assert norm_ops.fused_add_rms_norm(tx, tr, tw) is None
    np.testing.assert_array_equal(tr.view(torch.uint16).numpy(), added.view(np.uint16))
    assert_normed(tx.float().numpy(), normed, "bf16")
    torch.library.opcheck(norm_ops.fused_add_rms_norm_op, (tx, tr, tw, 1e-6))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("h", [4096, 16384])
def test_builds_spill_nothing_and_read_each_row_once_where_it_fits(arch, h):
    """[4096 tokens, H] bf16: 0 spills; at H = 4096 (the row in registers) the static
    model's time is the DRAM floor of x and residual each read once and written once
    (4 · M · H elements, plus the weight); at H = 16384 (past WHOLE_ROW) residual is read a
    second time, for the scaling: 5 · M · H."""
    from tilelang import dtypes
    from tilelang.cli import launch_facts

    kernel = norm.fused_add_rms_norm_kernel
    constexprs = dict(T=dtypes.bf16, WT=dtypes.bf16, **norm.fused_tiles(h))
    launch = dict(M=4096, H=h)
    built = kernel.compile(
        assume=launch_facts(kernel, constexprs, launch), target=arch, **constexprs
    )
    assert (built.resources.spill_store_bytes, built.resources.spill_load_bytes) == (0, 0)
    report = built.perf(per="x", **launch)
    transfers = 4 if h <= norm.WHOLE_ROW else 5
    floor = (transfers * 4096 * h + h) * 2 / report.peak_bandwidth
    assert report.predicted_seconds <= 1.02 * floor, str(report)
