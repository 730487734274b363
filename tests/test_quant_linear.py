"""tilelang.torch.QuantLinear: nn.Linear with a tilelang.quant weight, on the CPU through
the ``tilelang::quant_linear`` operator. Its output is checked element by element against
x @ W + bias in float64 numpy, W computed from the formats' definitions by
tests/test_quant_matmul.py's `reference_weights` (never through tilelang.quant's own
dequantization), within that file's `bound`; the state-dict importers against the
synthetic GPTQ/AWQ checkpoints of tests/test_quant_import.py (its independent packers)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from test_quant_import import awq_checkpoint, gptq_checkpoint, reference
from test_quant_matmul import bound, reference_weights

import tilelang as tl
from tilelang import quant
from tilelang.runtime.nvrtc import CudaCompileError, compile_cuda
from tilelang.torch import QuantLinear

K, N = 256, 64  # the synthetic checkpoints' shape


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def check(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """layer(x) against x @ W + bias in float64, within `bound`."""
    y = layer(x)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], layer.out_features)
    x64 = f64(x).reshape(-1, layer.in_features)
    w = reference_weights(layer.qweight)
    expected = x64 @ w
    if layer.bias is not None:
        expected = expected + f64(layer.bias.to(x.dtype))
    got = f64(y).reshape(expected.shape)
    out_type = tl.f16 if x.dtype == torch.float16 else tl.bf16
    allowed = bound(x64, w, expected, out_type)
    error = np.abs(got - expected)
    assert (error <= allowed).all(), f"error {error.max():.3g} over the bound"
    return y


def linear(k: int = K, n: int = N, bias: bool = True, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n, bias=bias)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("wt", "group", "zero_point"), [("u4", 64, True), ("i4", 128, False), ("f4e2m1", 32, False)]
)
def test_from_linear_computes_x_at_dequantized_w(dtype, wt, group, zero_point):
    scales = "bf16" if dtype == torch.bfloat16 else "f16"  # the kernels' operand type
    layer = QuantLinear.from_linear(
        linear(), wt, group_size=group, zero_point=zero_point, scale_dtype=scales
    )
    assert (layer.in_features, layer.out_features) == (K, N)
    assert layer.qweight.dtype == tl.dtype(wt) and layer.qweight.group_size == group
    x = (torch.randn(2, 3, K) / 2).to(dtype)
    check(layer, x)


def test_without_bias_and_with_one_row():
    layer = QuantLinear.from_linear(linear(bias=False), "u4", group_size=128)
    assert layer.bias is None
    check(layer, (torch.randn(1, K) / 2).half())


def test_quantized_weight_approximates_the_float_weight():
    lin = linear(seed=3)
    layer = QuantLinear.from_linear(lin, "u8", group_size=32, zero_point=True)
    w = f64(lin.weight).T
    step = np.abs(w).max() / 64  # far coarser than an 8-bit step of any group
    assert np.abs(reference_weights(layer.qweight) - w).max() < step


@pytest.mark.parametrize(
    ("bits", "group", "sym", "act_order"),
    [(4, 64, False, False), (4, 128, True, True), (8, 32, False, False)],
)
def test_gptq_state_dict_round_trip(bits, group, sym, act_order):
    (qweight, qzeros, scales, g_idx), truth = gptq_checkpoint(bits, group, sym, act_order, seed=7)
    prefix = "model.layers.0.mlp.up_proj"
    bias = torch.randn(N).half()
    sd = {
        f"{prefix}.qweight": torch.from_numpy(qweight),
        f"{prefix}.qzeros": torch.from_numpy(qzeros),
        f"{prefix}.scales": torch.from_numpy(scales),
        f"{prefix}.g_idx": torch.from_numpy(g_idx),
        f"{prefix}.bias": bias,
        "model.layers.0.mlp.down_proj.qweight": torch.zeros(1),
    }
    layer = QuantLinear.from_gptq_state_dict(sd, prefix, bits=bits, sym=sym)
    np.testing.assert_array_equal(
        layer.qweight.dequantize().view(np.uint32), reference(*truth).view(np.uint32)
    )
    assert torch.equal(layer.bias, bias)
    check(layer, (torch.randn(5, K) / 2).half())


def test_awq_state_dict_round_trip():
    (qweight, qzeros, scales), truth = awq_checkpoint(64, seed=5)
    sd = {
        "q_proj.qweight": torch.from_numpy(qweight),
        "q_proj.qzeros": torch.from_numpy(qzeros),
        "q_proj.scales": torch.from_numpy(scales),
    }
    layer = QuantLinear.from_awq_state_dict(sd, "q_proj.")
    np.testing.assert_array_equal(
        layer.qweight.dequantize().view(np.uint32), reference(*truth).view(np.uint32)
    )
    check(layer, (torch.randn(3, K) / 2).half())


def op_arguments(layer: QuantLinear, x: torch.Tensor) -> tuple:
    """What `QuantLinear.forward` hands the operator."""
    weight = (layer.codes, layer.scale_codes, layer.zeros, layer.perm, layer.meta)
    return (x, *weight, layer.bias.to(x.dtype))


def test_quant_linear_passes_opcheck():
    layer = QuantLinear.from_linear(linear(), "u4", group_size=64)
    x = (torch.randn(4, K) / 2).half()
    torch.library.opcheck(torch.ops.tilelang.quant_linear.default, op_arguments(layer, x))


def _entry(layer: QuantLinear):
    """The weight table's entry for the layer's buffers as they are now (or None)."""
    from tilelang.torch import weight_state

    tensors = layer._weight_tensors()
    return weight_state.WEIGHTS.get(weight_state.address(weight_state.fingerprint(tensors)))


def test_quant_linear_compiles_without_graph_break():
    """One compile: the graph calls the operator on the module's buffers (the weight is
    not rebuilt per call), and it computes with the weight a later load_state_dict or
    in-place change gives (the buffers are the graph's inputs, the weight found from them)."""
    layer = QuantLinear.from_linear(linear(), "u4", group_size=64)
    model = torch.nn.Sequential(layer, torch.nn.ReLU())
    x = (torch.randn(4, K) / 2).half()
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), model(x))
    entry = _entry(layer)
    compiled(x)
    assert _entry(layer) is entry  # the compiled call found its weight
    other = QuantLinear.from_linear(linear(seed=8), "u4", group_size=64)
    layer.load_state_dict(other.state_dict())
    assert torch.equal(compiled(x), torch.relu(other(x)))
    third = QuantLinear.from_linear(linear(seed=9), "u4", group_size=64, zero_point=True)
    layer.load_state_dict(third.state_dict())  # zero points as a buffer too
    fourth = QuantLinear.from_linear(linear(seed=10), "u4", group_size=64, zero_point=True)
    with torch.no_grad():  # modified in place: the weight is rebuilt from the buffers
        for name in ("codes", "scale_codes", "zeros", "bias"):
            getattr(layer, name).copy_(getattr(fourth, name))
    assert torch.equal(compiled(x), torch.relu(fourth(x)))


def test_bad_inputs_are_refused_with_the_reason():
    layer = QuantLinear.from_linear(linear(), "u4", group_size=64)
    with pytest.raises(TypeError, match=r"x must be float16 or bfloat16.*got torch.float64"):
        layer(torch.randn(2, K, dtype=torch.float64))  # f32 computes in the layer's type
    with pytest.raises(ValueError, match=rf"x must have shape \[\.\.\., {K}\]"):
        layer(torch.randn(2, K + 1).half())
    with pytest.raises(KeyError, match=r"state_dict has no nope.qweight"):
        QuantLinear.from_gptq_state_dict({}, "nope")
    with pytest.raises(TypeError, match=r"linear: expected a torch.nn.Linear"):
        QuantLinear.from_linear(torch.nn.ReLU(), "u4")
    with pytest.raises(TypeError, match=r"weight: expected a tilelang.quant.QuantizedWeight"):
        QuantLinear(np.zeros((K, N)))


def test_the_weight_table_forgets_collected_layers():
    from tilelang.torch import weight_state

    layer = QuantLinear(quant.quantize(np.ones((K, N)), "u4"))
    entry = _entry(layer)
    assert entry.weight is layer.qweight
    del layer
    import gc

    gc.collect()
    assert all(e is not entry for e in list(weight_state.WEIGHTS.values()))


def _arrays_equal(a: quant.QuantizedWeight, b: quant.QuantizedWeight) -> None:
    """Two weights are the same weight: every array and field of `arrays()` equal."""
    left, right = a.arrays(), b.arrays()
    assert left.keys() == right.keys()
    for name, value in left.items():
        if value is None:
            assert right[name] is None, name
        else:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(right[name]), err_msg=name)


def _gptq_layer(act_order: bool) -> QuantLinear:
    (qweight, qzeros, scales, g_idx), _ = gptq_checkpoint(4, 64, False, act_order, seed=11)
    sd = {
        "p.qweight": torch.from_numpy(qweight),
        "p.qzeros": torch.from_numpy(qzeros),
        "p.scales": torch.from_numpy(scales),
        "p.g_idx": torch.from_numpy(g_idx),
    }
    return QuantLinear.from_gptq_state_dict(sd, "p", bits=4, sym=False)


def test_the_state_dict_holds_the_weight_as_tensors_only():
    layer = QuantLinear.from_linear(
        linear(), "u4", group_size=64, zero_point=True, scale_dtype="bf16"
    )
    sd = layer.state_dict()
    assert set(sd) == {"codes", "scale_codes", "zeros", "bias", "meta"}
    assert all(isinstance(value, torch.Tensor) for value in sd.values())
    assert sd["codes"].dtype == torch.uint8 and sd["codes"].numel() == K * N // 2
    assert sd["scale_codes"].dtype == torch.int16 and sd["scale_codes"].shape == (K // 64, N)
    assert sd["zeros"].dtype == torch.int32 and sd["zeros"].shape == (K // 64, N)
    # The scale buffer holds the bf16 scales' bit patterns.
    scales = sd["scale_codes"].view(torch.bfloat16).to(torch.float64).numpy()
    np.testing.assert_array_equal(scales, layer.qweight.scales)
    assert sd["meta"].dtype == torch.uint8
    fields = json.loads(bytes(sd["meta"].tolist()).decode())
    assert fields["dtype"] == "u4" and fields["scale_dtype"] == "bf16"
    assert fields["shape"] == [K, N] and fields["group_size"] == 64 and fields["version"] == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantLinear.from_linear(linear(seed=1), "u4", group_size=64, zero_point=True),
        lambda: QuantLinear.from_linear(linear(seed=2), "f4e2m1", group_size=32),
        lambda: QuantLinear.from_linear(linear(seed=3, bias=False), None, None, format="nvfp4"),
        lambda: _gptq_layer(act_order=True),  # a permutation
        lambda: QuantLinear(quant.pack_for_kernels(quant.quantize(np.ones((K, N)) / 3, "u4"))),
    ],
    ids=["u4-zeros", "f4", "nvfp4-tensor-scale", "gptq-act-order", "dot-packed"],
)
def test_load_state_dict_rebuilds_the_saved_weight_in_another_layer(make):
    saved = make()
    other = QuantLinear.from_linear(linear(seed=9), "i4", group_size=128)  # other shapes
    assert other.load_state_dict(saved.state_dict()).missing_keys == []
    _arrays_equal(other.qweight, saved.qweight)
    assert (other.bias is None) == (saved.bias is None)
    x = (torch.randn(3, K) / 2).half()
    assert torch.equal(other(x), saved(x))


def _save_and_load_a_model(path) -> None:
    """torch.save a two-layer model, torch.load(weights_only=True) it into differently
    quantized layers, and compare weights and outputs."""
    model = torch.nn.ModuleDict(
        {
            "up": QuantLinear.from_linear(linear(seed=4), "u4", group_size=64, zero_point=True),
            "gate": _gptq_layer(act_order=True),
        }
    )
    torch.save(model.state_dict(), path)
    fresh = torch.nn.ModuleDict(
        {
            "up": QuantLinear.from_linear(linear(seed=5), "i4", group_size=128),
            "gate": QuantLinear.from_linear(linear(seed=6), "i4", group_size=128),
        }
    )
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = (torch.randn(2, K) / 2).half()
    for name in ("up", "gate"):
        _arrays_equal(fresh[name].qweight, model[name].qweight)
        assert torch.equal(check(fresh[name], x), model[name](x))


def test_torch_save_and_weights_only_load_round_trip_a_model(tmp_path):
    _save_and_load_a_model(tmp_path / "model.pt")


def test_a_failed_cuda_compile_earlier_in_the_process_leaves_weights_only_loads_working(tmp_path):
    """What the whole suite once did: a CUDA front-end error (as tests/test_cuda_codegen.py
    provokes), then this round trip in the same process. NVRTC used to write its 1-byte
    PTX (a NUL) into CPython's shared b" ", after which the weights_only unpickler, which
    reads an opcode's argument with `read(1)[0]`, read memo index 32 as 0 and failed
    with "unrecognized function up.bias"."""
    with pytest.raises(CudaCompileError):
        compile_cuda('extern "C" __global__ void k(int* p) { __syncthreads(; }', "k", "sm_80")
    _save_and_load_a_model(tmp_path / "model.pt")


def test_module_half_converts_bf16_scales_exactly_and_float_leaves_them():
    layer = QuantLinear.from_linear(linear(), "u4", group_size=64, scale_dtype="bf16")
    bits = layer.state_dict()["scale_codes"].numpy().astype(np.uint16)
    # bf16 bits are the top half of the f32's; these scales (~1e-2) are exact in f16.
    values = (bits.astype(np.uint32) << 16).view(np.float32)
    layer.float()
    assert layer.qweight.scale_dtype == tl.bf16
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact: no ScaleRoundingWarning
        layer.half()
    assert layer.qweight.scale_dtype == tl.f16
    f16 = layer.state_dict()["scale_codes"].numpy().view(np.float16)
    np.testing.assert_array_equal(f16.astype(np.float32), values)
    other = QuantLinear.from_linear(linear(), "i4", group_size=128)
    other.load_state_dict(layer.state_dict())
    _arrays_equal(other.qweight, layer.qweight)


def test_a_state_dict_without_the_weights_fields_is_refused():
    layer = QuantLinear.from_linear(linear(), "u4", group_size=64)
    sd = layer.state_dict()
    del sd["meta"]
    with pytest.raises(RuntimeError, match=r"Missing key.*meta"):
        layer.load_state_dict(sd)
    old_form = {**layer.state_dict(), "_extra_state": ["u4"]}
    del old_form["meta"]
    with pytest.raises(TypeError, match=r"_extra_state .* must be a dict of the weight's fields"):
        layer.load_state_dict(old_form)
    fields = json.loads(bytes(layer.meta.tolist()).decode())
    for change, message in (
        ({"group_size": 0}, "QuantLinear state_dict: group_size must be"),
        ({"group_size": 100}, r"QuantLinear state_dict: scale_codes must have shape \(3, 64\)"),
        ({"version": 99}, r"fields are version 99; this tilelang reads versions 1, 2"),
    ):
        broken = layer.state_dict()
        text = json.dumps({**fields, **change}).encode()
        broken["meta"] = torch.tensor(list(text), dtype=torch.uint8)
        with pytest.raises(ValueError, match=message):
            layer.load_state_dict(broken)
