"""tilelang.torch.moe_matmul and QuantMoE: the ``tilelang::moe_matmul`` operator on CPU
tensors. Its results are `tilelang.quant.moe_matmul`'s on the same numpy inputs, bit for
bit (that function is checked against numpy in tests/test_quant_moe.py; one test here
also bounds the weighted result against a float64 numpy sum of its own); torch's opcheck;
one torch.compile(fullgraph=True); and the errors of bad inputs."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from tilelang import quant
from tilelang.torch import QuantMoE, moe_matmul
from tilelang.torch import moe as module

E, K, N = 4, 128, 128
IDS = np.array([[0, 3], [3, 1], [1, 1], [2, -1], [2, 0]], np.int32)  # T = 5, top-2


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((E, K, N)).astype(np.float32)


@pytest.fixture(scope="module")
def experts(weights) -> quant.QuantizedExperts:
    return quant.quantize_experts(weights, "u4", 128)


def inputs(dtype=np.float16, seed=1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((IDS.shape[0], K)).astype(np.float32)
    return x.astype(dtype), rng.random(IDS.shape).astype(np.float32)


def bits(a) -> np.ndarray:
    """The values' bit patterns (bf16 numpy arrays and tensors alike)."""
    if isinstance(a, torch.Tensor):
        return a.view(torch.int16).numpy()
    return np.ascontiguousarray(a).view(np.int16)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("id_type", [torch.int32, torch.int64])
def test_equals_quant_moe_matmul_bit_for_bit(experts, weighted, id_type):
    x, gate = inputs()
    expected = quant.moe_matmul(x, experts, IDS, gate if weighted else None)
    ids = torch.from_numpy(IDS).to(id_type)
    y = moe_matmul(torch.from_numpy(x), experts, ids, torch.from_numpy(gate) if weighted else None)
    assert y.dtype == torch.float16 and tuple(y.shape) == expected.shape
    assert np.array_equal(bits(y), bits(expected))
    if not weighted:
        assert not y[3, 1].any()  # id -1: its slot is zeros


def test_mxfp4_experts(weights):
    qe = quant.quantize_experts(weights, format="mxfp4")
    x, gate = inputs(seed=6)
    y = moe_matmul(torch.from_numpy(x), qe, torch.from_numpy(IDS), torch.from_numpy(gate))
    assert np.array_equal(bits(y), bits(quant.moe_matmul(x, qe, IDS, gate)))


def test_bf16_and_an_independent_bound(weights):
    import ml_dtypes

    experts = quant.quantize_experts(weights, "u4", 128, scale_dtype="bf16")
    x, gate = inputs(ml_dtypes.bfloat16, seed=2)
    expected = quant.moe_matmul(x, experts, IDS, gate)
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    y = moe_matmul(xt, experts, torch.from_numpy(IDS), torch.from_numpy(gate))
    assert y.dtype == torch.bfloat16
    assert np.array_equal(bits(y), bits(expected))
    # float64: Σ_j gate[t, j] · x[t] @ W[ids[t, j]], W the experts' dequantized values
    w = np.concatenate([experts.dequantize(), np.zeros((1, K, N))]).astype(np.float64)
    exact = np.einsum("tk,tjkn,tj->tn", x.astype(np.float64), w[IDS], gate)
    got = y.to(torch.float64).numpy()
    assert np.abs(got - exact).max() <= 2.0**-7 * np.abs(exact).max()


def test_quant_moe_module(weights, experts):
    layer = QuantMoE.from_experts(torch.from_numpy(weights), "u4", 128)
    assert (layer.num_experts, layer.in_features, layer.out_features) == (E, K, N)
    assert "QuantizedExperts" in repr(layer)
    x, gate = inputs(seed=3)
    expected = quant.moe_matmul(x, experts, IDS, gate)  # the same quantization
    y = layer(torch.from_numpy(x), torch.from_numpy(IDS), torch.from_numpy(gate))
    assert np.array_equal(bits(y), bits(expected))
    products = layer(torch.from_numpy(x), torch.from_numpy(IDS))
    assert np.array_equal(bits(products), bits(quant.moe_matmul(x, experts, IDS)))


@pytest.mark.parametrize("weighted", [True, False])
def test_passes_opcheck(experts, weighted):
    x, gate = inputs(seed=4)
    args = (
        torch.from_numpy(x),
        module.handle(experts),
        torch.from_numpy(IDS),
        torch.from_numpy(gate) if weighted else None,
    )
    torch.library.opcheck(torch.ops.tilelang.moe_matmul.default, args)


def test_compiles_without_graph_break(weights, experts):
    """One compile: a function and a QuantMoE in one graph each; another experts object
    (the same shapes: only the handle differs) computes with its own weights."""
    other = quant.quantize_experts(weights[::-1].copy(), "u4", 128)
    x, gate = inputs(seed=5)
    x, ids, gate = torch.from_numpy(x), torch.from_numpy(IDS), torch.from_numpy(gate)
    torch._dynamo.reset()

    def f(x, qe, ids, gate):
        return torch.relu(moe_matmul(x, qe, ids, gate))

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, experts, ids, gate), f(x, experts, ids, gate))
    assert torch.equal(compiled(x, other, ids, gate), f(x, other, ids, gate))
    assert not torch.equal(f(x, experts, ids, gate), f(x, other, ids, gate))
    layer = QuantMoE(experts)
    compiled_layer = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled_layer(x, ids), moe_matmul(x, experts, ids))
    layer.experts = other
    assert torch.equal(compiled_layer(x, ids), moe_matmul(x, other, ids))


def test_errors_name_the_parameter(experts):
    x, gate = inputs()
    x, ids, gate = torch.from_numpy(x), torch.from_numpy(IDS), torch.from_numpy(gate)
    bad = [
        ((x.float(), experts, ids, gate), TypeError, "x must be float16 or bfloat16.*float32"),
        ((x.bfloat16(), experts, ids, gate), TypeError, "x is torch.bfloat16.*scales are f16"),
        ((x[:, :64], experts, ids, gate), ValueError, r"x must have shape \[T, 128\].*\[5, 64\]"),
        ((x, experts, ids.float(), gate), TypeError, "topk_ids must be int32 or int64"),
        ((x, experts, ids[:4], gate), ValueError, r"topk_ids must have shape.*T = 5.*\[4, 2\]"),
        ((x, experts, ids, gate.double()), TypeError, "topk_weights must be float32.*float64"),
        ((x, experts, ids, gate[:, :1]), ValueError, r"topk_weights must have.*\[5, 2\].*\[5, 1\]"),
        ((x, experts, ids.clone().fill_(E), gate), ValueError, r"topk_ids must be expert ids.*4"),
        ((x, "experts", ids, gate), TypeError, "qe must be a tilelang.quant.QuantizedExperts"),
    ]
    for args, error, message in bad:
        with pytest.raises(error, match=message):
            moe_matmul(*args)
    with pytest.raises(TypeError, match=r"experts: expected a tilelang\.quant\.QuantizedExperts"):
        QuantMoE(experts.stacked)


def test_a_collected_experts_handle_is_refused(weights):
    qe = quant.quantize_experts(weights[:1], "u4", 128)
    handle = module.handle(qe)
    assert module.handle(qe) == handle  # one handle per object
    del qe
    gc.collect()
    x = torch.zeros(1, K, dtype=torch.float16)
    with pytest.raises(ValueError, match=f"handle {handle} names no live QuantizedExperts"):
        torch.ops.tilelang.moe_matmul(x, handle, torch.zeros(1, 1, dtype=torch.int32), None)
