"""tilelang.torch.moe_matmul and QuantMoE: the ``tilelang::moe_matmul`` and
``tilelang::quant_moe`` operators on CPU tensors. Their results are
`tilelang.quant.moe_matmul`'s on the same numpy inputs, bit for bit (that function is
checked against numpy in tests/test_quant_moe.py; one test here also bounds the weighted
result against a float64 numpy sum of its own); torch CPU tensors handed to
`tilelang.quant.moe_matmul` itself; torch's opcheck; torch.compile(fullgraph=True); the
errors of bad inputs; and QuantMoE's state: its state_dict (checked with the json
module), loaded into modules of other shapes, torch.save'd and loaded with
weights_only, saved with safetensors, copied, pickled, modified in place and cast."""

from __future__ import annotations

import copy
import gc
import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from tilelang import dtypes, quant
from tilelang.quant import ScaleRoundingWarning
from tilelang.torch import QuantLinear, QuantMoE, moe_matmul
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


def test_quant_moe_matmul_takes_torch_cpu_tensors_bf16_included(weights):
    """`tilelang.quant.moe_matmul` called with torch CPU tensors (the reported case: a
    bf16 x failed in `.numpy()`): the numpy call's result, as a torch tensor; an `out`
    tensor is written and returned."""
    import ml_dtypes

    qe = quant.quantize_experts(weights, "u4", 128, scale_dtype="bf16")
    x, gate = inputs(ml_dtypes.bfloat16, seed=7)
    expected = quant.moe_matmul(x, qe, IDS, gate)
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    ids, gate_t = torch.from_numpy(IDS).long(), torch.from_numpy(gate)
    y = quant.moe_matmul(xt, qe, ids, gate_t)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    assert np.array_equal(bits(y), bits(expected))
    out = torch.full((IDS.shape[0], IDS.shape[1], N), float("nan"), dtype=torch.bfloat16)
    assert quant.moe_matmul(xt, qe, ids, out=out) is out
    assert np.array_equal(bits(out), bits(quant.moe_matmul(x, qe, IDS)))


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
    layer = QuantMoE(experts)
    buffers = (layer.codes, layer.scale_codes, layer.zeros, layer.meta)
    module_args = (*args[:1], *args[2:], *buffers)
    torch.library.opcheck(torch.ops.tilelang.quant_moe.default, module_args)


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
    layer.load_state_dict(QuantMoE(experts).state_dict())  # the buffers are inputs
    assert torch.equal(compiled_layer(x, ids), moe_matmul(x, experts, ids))


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


# ------------------------------------------------------------------ QuantMoE's state


def experts_equal(a: quant.QuantizedExperts, b: quant.QuantizedExperts) -> None:
    """The same experts: the count and every array and field of the stacked weight."""
    assert a.experts == b.experts
    left, right = a.stacked.arrays(), b.stacked.arrays()
    assert left.keys() == right.keys()
    for name, value in left.items():
        if value is None:
            assert right[name] is None, name
        else:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(right[name]), err_msg=name)


def moe_outputs(layer: QuantMoE, seed: int = 8) -> list[torch.Tensor]:
    """The layer's weighted and unweighted outputs at IDS."""
    x, gate = inputs(seed=seed)
    x, ids, gate = torch.from_numpy(x), torch.from_numpy(IDS), torch.from_numpy(gate)
    return [layer(x, ids, gate), layer(x, ids)]


def assert_same_outputs(a: QuantMoE, b: QuantMoE) -> None:
    for left, right in zip(moe_outputs(a), moe_outputs(b), strict=True):
        assert torch.equal(left, right)


@pytest.fixture(scope="module")
def zero_point_layer(weights) -> QuantMoE:
    return QuantMoE(quant.quantize_experts(weights, "u4", 64, zero_point=True))


def other_layer(weights) -> QuantMoE:
    """A module of other shapes: 2 experts of u8 codes, per-column scales."""
    return QuantMoE(quant.quantize_experts(weights[:2] * 3, "u8", -1))


def test_the_state_dict_holds_the_experts_as_tensors_only(zero_point_layer):
    sd = zero_point_layer.state_dict()
    assert set(sd) == {"codes", "scale_codes", "zeros", "meta"}
    assert all(isinstance(value, torch.Tensor) for value in sd.values())
    assert sd["codes"].dtype == torch.uint8 and sd["codes"].numel() == E * K * N // 2
    assert sd["scale_codes"].dtype == torch.int16 and sd["scale_codes"].shape == (E * K // 64, N)
    assert sd["zeros"].shape == (E * K // 64, N)
    fields = json.loads(bytes(sd["meta"].tolist()).decode())
    assert fields["experts"] == E and fields["shape"] == [E * K, N]
    assert fields["format"] == "scaled" and fields["dtype"] == "u4"


def test_load_state_dict_into_a_module_of_other_shapes_computes_with_the_saved_experts(
    weights, zero_point_layer
):
    fresh = other_layer(weights)
    assert fresh.load_state_dict(zero_point_layer.state_dict()).missing_keys == []
    assert (fresh.num_experts, fresh.in_features, fresh.out_features) == (E, K, N)
    experts_equal(fresh.experts, zero_point_layer.experts)
    assert_same_outputs(fresh, zero_point_layer)
    x, gate = inputs(seed=8)
    expected = quant.moe_matmul(x, zero_point_layer.experts, IDS, gate)  # numpy's result
    assert np.array_equal(bits(moe_outputs(fresh)[0]), bits(expected))


def test_torch_save_and_a_weights_only_load_round_trip_a_model(tmp_path, weights, experts):
    model = torch.nn.ModuleDict({"moe": QuantMoE(experts), "relu": torch.nn.ReLU()})
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    fresh = torch.nn.ModuleDict({"moe": other_layer(weights), "relu": torch.nn.ReLU()})
    fresh.load_state_dict(torch.load(path, weights_only=True))
    experts_equal(fresh["moe"].experts, experts)
    assert_same_outputs(fresh["moe"], model["moe"])


@pytest.mark.parametrize("assign", [False, True])
def test_safetensors_round_trip(tmp_path, weights, assign):
    from safetensors.torch import load_file, save_file

    layer = QuantMoE(quant.quantize_experts(weights, format="mxfp4"))
    path = tmp_path / "moe.safetensors"
    save_file(layer.state_dict(), path)
    fresh = other_layer(weights)
    fresh.load_state_dict(load_file(path), assign=assign)
    experts_equal(fresh.experts, layer.experts)
    assert_same_outputs(fresh, layer)


def test_copies_and_pickles_compute_with_their_own_experts(weights, experts):
    layer = QuantMoE(experts)
    before = moe_outputs(layer)
    deep = copy.deepcopy(layer)
    shallow = copy.copy(layer)
    pickled = pickle.loads(pickle.dumps(layer))
    addresses = {m.codes.data_ptr() for m in (layer, deep, shallow, pickled)}
    assert len(addresses) == 3 and shallow.codes is layer.codes  # torch's shallow copy
    other = QuantMoE(quant.quantize_experts(weights[::-1].copy(), "u4", 64, zero_point=True))
    deep.load_state_dict(other.state_dict())
    shallow.load_state_dict(other.state_dict())
    for m in (layer, pickled):
        assert all(torch.equal(a, b) for a, b in zip(moe_outputs(m), before, strict=True))
    assert_same_outputs(deep, other)
    assert_same_outputs(shallow, other)


def test_a_module_pickled_before_the_buffers_takes_its_experts_from_the_pickle(experts):
    layer = QuantMoE(experts)
    state = dict(layer.__dict__, experts=experts)  # the attribute it was, no buffers
    state["_buffers"] = {}
    old = QuantMoE.__new__(QuantMoE)
    old.__setstate__(state)
    assert "experts" not in old.__dict__ and set(old.state_dict()) == set(layer.state_dict())
    assert_same_outputs(old, layer)


def test_buffers_modified_in_place_are_the_experts_the_module_computes_with(weights):
    layer = QuantMoE(quant.quantize_experts(weights, "u4", 64, zero_point=True))
    other = QuantMoE(quant.quantize_experts(weights[::-1].copy(), "u4", 64, zero_point=True))
    moe_outputs(layer)
    with torch.no_grad():
        for name in ("codes", "scale_codes", "zeros"):
            getattr(layer, name).copy_(getattr(other, name))
    experts_equal(layer.experts, other.experts)
    assert_same_outputs(layer, other)


def test_to_bfloat16_converts_the_experts_scales(experts):
    layer = QuantMoE(experts)
    scales = layer.scale_codes.numpy().view(np.float16).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScaleRoundingWarning)  # its report: test_quant_linear
        layer.to(torch.bfloat16)
    # torch's own round-to-nearest-even cast of the f16 scales
    expected = torch.from_numpy(scales).to(torch.bfloat16).view(torch.int16)
    assert torch.equal(layer.scale_codes, expected)
    assert layer.experts.stacked.scale_dtype == dtypes.bf16
    x, gate = inputs(seed=9)
    xt = torch.from_numpy(x).bfloat16()
    y = layer(xt, torch.from_numpy(IDS), torch.from_numpy(gate))
    expected_y = moe_matmul(xt, layer.experts, torch.from_numpy(IDS), torch.from_numpy(gate))
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected_y)


def test_a_state_of_the_other_module_class_is_refused_and_changes_nothing(experts):
    layer = QuantMoE(experts)
    linear = QuantLinear(quant.quantize(np.ones((K, N)), "u4"))
    saved = {name: t.clone() for name, t in linear.state_dict().items()}
    message = r"QuantLinear state_dict: meta holds 'experts', a field of QuantMoE"
    with pytest.raises(ValueError, match=message):
        linear.load_state_dict(layer.state_dict())
    assert all(torch.equal(t, saved[name]) for name, t in linear.state_dict().items())
    before = moe_outputs(layer)
    with pytest.raises(ValueError, match=r"QuantMoE state_dict: meta lacks 'experts'"):
        layer.load_state_dict(linear.state_dict())
    broken = layer.state_dict()
    meta = json.loads(bytes(broken["meta"].tolist()).decode())
    text = json.dumps({**meta, "experts": 3}).encode()
    broken["meta"] = torch.tensor(list(text), dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"QuantMoE state_dict: experts=3 does not divide"):
        layer.load_state_dict(broken)
    assert all(torch.equal(a, b) for a, b in zip(moe_outputs(layer), before, strict=True))
    assert layer.experts is experts  # still the very object: no buffer changed
