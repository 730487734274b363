"""tilelang.torch operators and autograd: `TorchOp.register_autograd` gives an operator a
derivative (gradients checked against the product rule, computed in numpy, and against
finite differences), without torch's override warning and without `NoGradientWarning`;
a derivative registered straight through torch silences the warning too; and under
torch.compile(fullgraph=True) an operator whose input requires grad traces whole (the
warning's host-side frame walk never runs there)."""

import warnings

import numpy as np
import pytest
import torch

import tilelang as tl
import tilelang.torch as tt
from tilelang.runtime import host_calls


@tl.kernel(warps=4)
def mul(
    x: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    out: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.f32,
    B: tl.constexpr = 128,
):
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(out, [b * B], tl.load(x, [b * B], [B]) * tl.load(y, [b * B], [B]))


@tl.kernel(warps=4)
def accumulate(x: tl.Tensor[tl.f32, "N"], acc: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 128):
    b = tl.blocks(tl.cdiv(N, B))
    tl.store(acc, [b * B], tl.load(acc, [b * B], [B]) + tl.load(x, [b * B], [B]))


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in record if issubclass(w.category, UserWarning)]


def test_register_autograd_gives_the_product_rule_without_any_warning(monkeypatch):
    monkeypatch.setattr(host_calls, "WARNED", set())
    op = tt.op(mul, "tlgrad::mul")

    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return op(grad, y), op(grad, x)

    _, registered = _warnings_of(lambda: op.register_autograd(backward, setup_context=_save_inputs))
    assert registered == []  # no "Overriding a previously registered kernel"
    rng = np.random.default_rng(0)
    xs, ys, gs = (rng.standard_normal(300) for _ in range(3))
    x = torch.tensor(xs, requires_grad=True)
    y = torch.tensor(ys, requires_grad=True)
    out, called = _warnings_of(lambda: op(x, y))
    assert called == []  # the result has a gradient: no NoGradientWarning
    assert out.requires_grad
    dx, dy = torch.autograd.grad(out, (x, y), torch.tensor(gs))
    np.testing.assert_allclose(dx.numpy(), gs * ys, rtol=1e-12)  # d(x*y)/dx = y
    np.testing.assert_allclose(dy.numpy(), gs * xs, rtol=1e-12)
    assert torch.autograd.gradcheck(op, (x, y))
    torch.library.opcheck(op.overload, (x, y))


def test_a_derivative_registered_through_torch_silences_the_no_gradient_warning(monkeypatch):
    monkeypatch.setattr(host_calls, "WARNED", set())
    op = tt.op(mul, "tlgrad::mul_direct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: the Autograd fall-through is overridden
        torch.library.register_autograd(
            "tlgrad::mul_direct",
            lambda ctx, grad: (grad * ctx.y, grad * ctx.x),
            setup_context=lambda ctx, inputs, output: ctx.__dict__.update(
                x=inputs[0].detach(), y=inputs[1].detach()
            ),
        )
    x, y = torch.randn(64, requires_grad=True), torch.randn(64)
    out, called = _warnings_of(lambda: op(x, y))
    assert [w for w in called if issubclass(w.category, tt.NoGradientWarning)] == []
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.numpy())


def test_without_a_derivative_the_warning_still_comes(monkeypatch):
    monkeypatch.setattr(host_calls, "WARNED", set())
    op = tt.op(mul, "tlgrad::mul_plain")
    with pytest.warns(tt.NoGradientWarning, match="tlgrad::mul_plain"):
        out = op(torch.randn(8, requires_grad=True), torch.randn(8))
    assert not out.requires_grad


def test_an_operator_that_mutates_cannot_have_a_derivative():
    op = tt.op(accumulate, "tlgrad::accumulate")
    with pytest.raises(RuntimeError, match=r"mutates 'acc'.*functional"):
        op.register_autograd(lambda ctx, grad: (grad, grad))


def test_compile_fullgraph_traces_an_op_and_rms_norm_whose_input_requires_grad(monkeypatch):
    from tilelang.torch.kernels import rms_norm

    monkeypatch.setattr(host_calls, "WARNED", set())
    op = tt.op(mul, "tlgrad::mul_compiled")
    weight = torch.rand(64) + 0.5
    x = torch.randn(256, requires_grad=True)
    compiled = torch.compile(
        lambda x: rms_norm(op(x, x).reshape(4, 64), weight) * 2, fullgraph=True
    )
    got = compiled(x)
    square = x.detach().double().numpy().reshape(4, 64) ** 2
    rms = np.sqrt((square**2).mean(axis=-1, keepdims=True) + 1e-6)
    expected = square / rms * weight.double().numpy() * 2
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-5, atol=1e-5)
