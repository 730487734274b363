"""tilelang.torch.op at its edges: sizes solved from size expressions (and a dimension no
whole size gives refused), autotuned kernels as operators, and the calls refused with a
message that names the kernel's parameter: tensors on two devices, a constexpr or an
output passed at a call, a missing in-place argument (and why it is one), a dtype that
a dtype constexpr took from another tensor (through the operator and in a direct
kernel call). References are numpy float64."""

import numpy as np
import pytest
import torch

import tilelang as tl
import tilelang.torch as tt


@tl.kernel(warps=4)
def vadd(
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "N"],
    B: tl.constexpr = 128,
):
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(out, [b * B], tl.load(x, [b * B], [B]) + tl.load(y, [b * B], [B]))


@tl.kernel(warps=4)
def silu_mul(
    gu: tl.Tensor[tl.f32, "R", "2 * I"],
    out: tl.Tensor[tl.f32, "R", "I"],
    BR: tl.constexpr = 4,
    BI: tl.constexpr = 32,
):
    br, bi = tl.blocks(tl.cdiv(R, BR), tl.cdiv(I, BI))
    g = tl.load(gu, [br * BR, bi * BI], [BR, BI])
    u = tl.load(gu, [br * BR, I + bi * BI], [BR, BI])
    tl.store(out, [br * BR, bi * BI], g * tl.sigmoid(g) * u)


@tl.kernel(warps=4)
def pad_copy(x: tl.Tensor[tl.f32, "N + 3"], out: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 64):
    """out = x[3:]: N only appears whole in the output."""
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(out, [b * B], tl.load(x, [3 + b * B], [B]))


@tl.kernel(warps=4)
def halve(x: tl.Tensor[tl.f32, "N // 2"], out: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 64):
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(out, [b * B], tl.load(x, [(b * B) // 2], [B]))


@tl.kernel(warps=1)
def positive(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, "N"]):
    v = tl.load(x, [0], [32])
    tl.store(out, [0], v, mask=v > 0)


@tl.kernel(warps=1)
def axpy(
    a: tl.Tensor["T", "N"],
    b: tl.Tensor["T", "N"],
    out: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.f32,
):
    tl.store(out, [0], tl.load(a, [0], [32]) + tl.load(b, [0], [32]))


def _silu_mul_reference(gu: np.ndarray) -> np.ndarray:
    half = gu.shape[1] // 2
    g, u = gu[:, :half].astype(np.float64), gu[:, half:].astype(np.float64)
    return g / (1 + np.exp(-g)) * u


# ------------------------------------------------------------------- size expressions


def test_an_output_size_solved_from_a_multiple_in_an_input():
    op = tt.op(silu_mul, "tlchk::silu_mul")
    assert op.schema == "(Tensor gu) -> Tensor"
    gu = torch.randn(5, 192)
    out = op(gu)
    assert out.shape == (5, 96)
    np.testing.assert_allclose(out.numpy(), _silu_mul_reference(gu.numpy()), rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"'gu'.*dimension 1 should be 2 \* I, got 191.*multiple of 2"
    ):
        op(torch.randn(5, 191))
    torch.library.opcheck(op.overload, (gu,))


def test_a_size_solved_under_torch_compile_with_dynamic_shapes():
    op = tt.op(silu_mul, "tlchk::silu_mul_compiled")
    compiled = torch.compile(lambda gu: op(gu) + 1, fullgraph=True, dynamic=True)
    gu = torch.randn(3, 128)
    np.testing.assert_allclose(
        compiled(gu).numpy(), _silu_mul_reference(gu.numpy()) + 1, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(
        Exception, match=r"dimension 1 should be 2 \* I, got \w+, which is no multiple"
    ):
        compiled(torch.randn(3, 63))


def test_an_output_size_solved_from_a_sum():
    op = tt.op(pad_copy, "tlchk::pad_copy")
    x = torch.randn(103)
    np.testing.assert_array_equal(op(x).numpy(), x.numpy()[3:])
    with pytest.raises(ValueError, match=r"'x'.*N \+ 3, got 2, which would make N = -1"):
        op(torch.randn(2))


def test_a_size_only_under_floor_division_is_still_refused():
    with pytest.raises(
        ValueError, match=r"output 'out' has size N, which no argument tensor gives"
    ):
        tt.op(halve, "tlchk::halve")


# ---------------------------------------------------------------------- autotuned


def test_an_autotuned_kernel_as_an_operator_runs_the_config_chosen_per_key():
    tuned = tl.autotune(
        vadd, configs=[dict(B=64), dict(B=256)], key=["N"], tune_on="cpu", rep=1, warmup=0
    )
    op = tt.op(tuned, "tlchk::tuned")
    assert op is tt.op(tuned, "tlchk::tuned")
    for n in (100, 1000):
        x, y = torch.randn(n), torch.randn(n)
        np.testing.assert_array_equal(op(x, y).numpy(), x.numpy() + y.numpy())
    assert sorted(dict(d.key)["N"] for d in tuned.decisions.values()) == [100, 1000]
    torch.library.opcheck(op.overload, (x, y))


def test_an_autotuned_operator_refuses_configs_that_change_the_outputs():
    bad = tl.autotune(halve, configs=[dict(B=64)], key=["N"])
    with pytest.raises(ValueError, match="no argument tensor gives"):
        tt.op(bad, "tlchk::bad_tuned")
    tuned = tl.autotune(vadd, configs=[dict(B=64), dict(B=256)], key=["N"])
    with pytest.raises(ValueError, match=r"B is chosen by the autotuner per call"):
        tt.op(tuned, "tlchk::fixed_tuned", B=64)


# ------------------------------------------------------------------ refused calls


def test_tensors_on_two_devices_are_refused_naming_both():
    op = tt.op(vadd, "tlchk::vadd_devices")
    meta, cpu = torch.randn(8, device="meta"), torch.randn(8)
    with pytest.raises(ValueError, match=r"'x' is on meta, but parameter 'y' is on cpu"):
        op(meta, cpu)
    with pytest.raises(ValueError, match=r"'x' is on cpu, but parameter 'y' is on meta"):
        op(cpu, meta)
    with pytest.raises(ValueError, match=r"'x' is on meta, but parameter 'y' is on cpu"):
        op._cpu(meta, cpu)  # the real implementations check too


def test_a_constexpr_or_an_output_at_a_call_is_refused_saying_where_it_goes():
    op = tt.op(vadd, "tlchk::vadd_calls")
    x = torch.ones(8)
    with pytest.raises(
        TypeError, match=r"B is a constexpr of vadd\(\), fixed when the operator is made.*B=256"
    ):
        op(x, x, B=256)
    with pytest.raises(TypeError, match=r"'out' is an output.*mutates=\('out',\)"):
        op(x, x, out=x)
    with pytest.raises(TypeError, match=r"no parameter 'z'; the operator takes \(x, y\)"):
        op(x, x, z=x)
    with pytest.raises(TypeError, match=r"takes 2 arguments \(x, y\), got 3"):
        op(x, x, 256)
    dtype_op = tt.op(axpy, "tlchk::axpy_calls")
    with pytest.raises(
        TypeError, match=r"T is a dtype constexpr.*follows the dtype of parameter 'a'"
    ):
        dtype_op(x, x, T=tl.bf16)


def test_a_missing_in_place_argument_says_a_masked_store_keeps_what_it_skips():
    op = tt.op(positive, "tlchk::positive")
    assert op.schema == "(Tensor x, Tensor(a!) out) -> ()"
    with pytest.raises(
        TypeError, match=r"missing argument 'out'.*under a mask.*keeps the elements it skips.*guide"
    ):
        op(torch.randn(32))
    x, out = torch.randn(32), torch.full((32,), -7.0)
    op(x, out)
    np.testing.assert_array_equal(out.numpy(), np.where(x.numpy() > 0, x.numpy(), -7.0))


def test_a_dtype_mismatch_names_the_tensor_the_dtype_came_from():
    op = tt.op(axpy, "tlchk::axpy")
    with pytest.raises(
        TypeError,
        match=r"'b' expects .*float32.*got a bfloat16.*T=f32 was taken from parameter 'a'",
    ):
        op(torch.ones(32), torch.ones(32, dtype=torch.bfloat16))


def test_a_direct_call_says_which_dtype_constexpr_to_pass():
    bf16 = [torch.ones(32, dtype=torch.bfloat16) for _ in range(3)]
    with pytest.raises(
        TypeError, match=r"T=f32, the default of T.*'a', 'b', 'out'.*pass T=tl\.bf16"
    ):
        axpy(*bf16)
    mixed = [torch.ones(32), bf16[1], torch.empty(32)]
    with pytest.raises(
        TypeError, match=r"'b' expects a tensor of f32.*\(T=f32, the default of T"
    ) as info:
        axpy(*mixed)
    assert "pass T=" not in str(info.value)  # the tensors disagree: no one T fits
    out = axpy(*bf16, T=tl.bf16)
    assert torch.equal(out, torch.full((32,), 2.0, dtype=torch.bfloat16))
