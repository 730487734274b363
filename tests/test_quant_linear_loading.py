"""tilelang.torch.QuantLinear and QuantMoE as model-loading code uses them: regional
compilation of many layers (one compile for all, no graph break: dynamo's own frame
counter and recompile counter), the weight found from the buffers the operator is given
(rebuilt after load_state_dict, in-place changes and casts; forgotten with its tensors),
skeletons on the meta device loaded from a state_dict, a constant zero point stored
as no buffer (and old state_dicts with one still loading), and QuantMoE's lack of a
gradient (results that never require grad, and `NoGradientWarning`).

Oracles: outputs against x @ W + bias in float64 (tests/test_quant_linear.py's `check`,
W from tests/test_quant_matmul.py's formats-only `reference_weights`), or against a
module that never went through the operation under test; buffer shapes of skeletons
against the state_dict `from_linear` makes of a real linear; state_dict fields with the
json module."""

from __future__ import annotations

import gc
import json
import warnings

import numpy as np
import pytest
import torch
from test_quant_linear import K, N, check, linear

from tilelang import quant
from tilelang.quant import ScaleRoundingWarning
from tilelang.quant.operands import operands
from tilelang.runtime import host_calls
from tilelang.torch import NoGradientWarning, QuantLinear, QuantMoE
from tilelang.torch import weight_state as ws

LAYERS = 12


def x16(rows: int = 3, k: int = K) -> torch.Tensor:
    return (torch.randn(rows, k) / 2).half()


def entry(module: torch.nn.Module) -> ws.Entry | None:
    """The weight table's entry for the module's buffers as they are now."""
    tensors = module._weight_tensors()
    return ws.WEIGHTS.get(ws.address(ws.fingerprint(tensors)))


def meta_fields(module: torch.nn.Module) -> dict:
    return json.loads(bytes(module.meta.tolist()).decode())


# --------------------------------------------------------------- regional compilation


class Block(torch.nn.Module):
    """The reporter's block: x + relu(fc(x))."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.fc = linear(K, K, bias=False, seed=seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.fc(x))


def _count_compiles(blocks, x, call) -> tuple[int, torch.Tensor]:
    """Each block compiled on its own (regional compilation, fullgraph: a graph break
    raises), run in turn: (frames dynamo compiled, the output)."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    counter = CompileCounterWithBackend("aot_eager")
    for block in blocks:
        block.compile(backend=counter, fullgraph=True)
    with torch.no_grad():
        for block in blocks:
            x = call(block, x)
    assert not counters["recompiles"], dict(counters["recompiles"])
    return counter.frame_count, x


def test_regional_compilation_of_many_quant_linears_compiles_once():
    """The report: a recompile per layer (dynamo guarded on each module's int handle),
    then eager after the recompile limit. One compile, and the weights found from each
    layer's buffers are that layer's: the output is the eager model's, bit for bit."""
    eager = [Block(seed) for seed in range(LAYERS)]
    for b in eager:
        b.fc = QuantLinear.from_linear(b.fc, "u4")
    compiled = [Block(seed) for seed in range(LAYERS)]
    for b, e in zip(compiled, eager, strict=True):
        b.fc = QuantLinear.from_linear(linear(K, K, bias=False), "i4")  # other weights
        b.fc.load_state_dict(e.fc.state_dict())
    x = x16(2)
    frames, got = _count_compiles(compiled, x, lambda b, x: b(x))
    assert frames == 1
    with torch.no_grad():
        expected = x
        for b in eager:
            expected = b(expected)
    assert torch.equal(got, expected)
    built = [entry(b.fc) for b in compiled]
    _count_compiles(compiled, x, lambda b, x: b(x))
    assert [entry(b.fc) for b in compiled] == built  # found, not rebuilt, per call


def test_regional_compilation_of_many_quant_moes_compiles_once():
    rng = np.random.default_rng(3)
    ids = torch.tensor([[0, 2], [1, 1], [2, -1]], dtype=torch.int32)
    gate = torch.full(ids.shape, 1 / 16)  # keeps x's scale over the layers
    layers = [
        QuantMoE.from_experts(rng.standard_normal((3, K, K)).astype(np.float32), "u4", 64)
        for _ in range(10)
    ]
    x = x16(3)

    def call(layer: QuantMoE, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(layer(x, ids, gate))

    with torch.no_grad():
        expected = x
        for layer in layers:
            expected = call(layer, expected)
    frames, got = _count_compiles(layers, x, call)
    assert frames == 1
    assert torch.equal(got, expected)


# ------------------------------------------------------------- the weight from buffers


def test_the_weight_is_rebuilt_after_a_load_an_in_place_change_and_a_cast():
    layer = QuantLinear.from_linear(linear(seed=1), "u4", zero_point=True)
    other = QuantLinear.from_linear(linear(seed=2), "u4", zero_point=True)
    third = QuantLinear.from_linear(linear(seed=3), "u4", zero_point=True)
    x = x16()
    before = layer(x)
    layer.load_state_dict(other.state_dict())
    assert torch.equal(layer(x), other(x)) and not torch.equal(layer(x), before)
    with torch.no_grad():
        for name in ("codes", "scale_codes", "zeros", "bias"):
            getattr(layer, name).copy_(getattr(third, name))
    assert torch.equal(layer(x), third(x))
    check(layer, x)
    # A cast re-encodes the scales; the bf16 layer computes with the converted weight.
    with pytest.warns(ScaleRoundingWarning):
        converted = QuantLinear(third.qweight.with_scale_dtype("bf16"), third.bias)
    with pytest.warns(ScaleRoundingWarning):
        layer.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    assert torch.equal(layer(xb), converted(xb))
    # New tensors of the same values (a move): found, or built, from them.
    moved = layer._apply(lambda t: t.clone())
    assert torch.equal(moved(xb), converted(xb))


def test_an_entry_goes_with_its_tensors_and_with_a_collected_module():
    layer = QuantLinear.from_linear(linear(seed=4), "u4")
    moe = QuantMoE(quant.quantize_experts(np.ones((2, K, N), np.float32), "u4", 64))
    x = x16()
    layer(x)
    old = entry(layer)
    assert old is not None and old.weight is layer.qweight
    layer.codes = layer.codes.clone()  # the old codes are collected: their memory is free
    assert all(e is not old for e in list(ws.WEIGHTS.values()))
    check(layer, x)  # rebuilt from the new codes
    held = [entry(layer), entry(moe)]
    assert None not in held
    del layer, moe
    gc.collect()
    assert all(e is not h for e in list(ws.WEIGHTS.values()) for h in held)


# ------------------------------------------------------------------------ meta device


@pytest.mark.parametrize(
    "arguments",
    [
        dict(dtype="u4"),
        dict(dtype="u4", group_size=64, zero_point=True),
        dict(dtype="i8", group_size=-1),
        dict(dtype=None, format="nvfp4"),
    ],
    ids=["u4-symmetric", "u4-zero-points", "i8-per-column", "nvfp4"],
)
def test_an_empty_layer_has_from_linears_buffers_and_loads_a_state_dict(arguments):
    real = QuantLinear.from_linear(linear(seed=5), **arguments)
    saved = real.state_dict()
    # linear() is an f32 linear: f32 bias, f16 scales
    skeleton = QuantLinear.empty(
        K, N, bias=True, act_dtype=torch.float32, device="meta", **arguments
    )
    shapes = {name: (t.shape, t.dtype) for name, t in skeleton.state_dict().items()}
    assert shapes == {name: (t.shape, t.dtype) for name, t in saved.items()}
    assert all(t.device.type == "meta" for t in skeleton.state_dict().values())
    assert (skeleton.in_features, skeleton.out_features) == (K, N)
    assert "meta device" in repr(skeleton)
    with pytest.raises(ValueError, match=r"QuantLinear buffers are on the meta device"):
        skeleton(x16())
    on_cpu = QuantLinear.empty(K, N, **arguments)  # zeros: a weight of zeros
    fields = meta_fields(real)
    fields.pop("tensor_scale", None)  # NVFP4's comes from the values
    assert {k: v for k, v in meta_fields(on_cpu).items() if k != "tensor_scale"} == fields
    assert skeleton.load_state_dict(saved, assign=True).missing_keys == []
    x = x16()
    assert torch.equal(skeleton(x), real(x))


def test_a_model_built_on_the_meta_device_loads_with_and_without_assign():
    """HF-style loading: the skeleton under ``torch.device("meta")``, its linears made
    QuantLinears (from_linear of a meta linear), then the state_dict."""
    real = torch.nn.Sequential(
        QuantLinear.from_linear(linear(seed=6), "u4", 64, zero_point=True),
        torch.nn.ReLU(),
        QuantLinear.from_linear(linear(N, K, seed=7, bias=False), "u4", 32),
    )
    saved = real.state_dict()
    x = x16()
    for assign in (True, False):
        with torch.device("meta"):
            model = torch.nn.Sequential(
                torch.nn.Linear(K, N), torch.nn.ReLU(), torch.nn.Linear(N, K, bias=False)
            )
        model[0] = QuantLinear.from_linear(model[0], "u4", 64, zero_point=True)
        model[2] = QuantLinear.from_linear(model[2], "u4", 32)
        assert model[0].codes.is_meta and model[0].bias is not None and model[2].bias is None
        if not assign:
            model.to_empty(device="cpu").half()  # a cast before the load: no weight yet
        model.load_state_dict(saved, assign=assign)
        assert torch.equal(model(x), real(x))
        check(model[0], x)


def test_empty_refuses_bad_sizes_naming_them():
    with pytest.raises(ValueError, match=r"in_features: expected a positive int, got 0"):
        QuantLinear.empty(0, N, "u4")
    with pytest.raises(ValueError, match=r"out_features: expected a positive int, got 2.5"):
        QuantLinear.empty(K, 2.5, "u4")


# -------------------------------------------------------------- constant zero points


def test_a_symmetric_u4_layer_stores_no_zero_points_and_the_kernels_read_none():
    layer = QuantLinear.from_linear(linear(seed=8), "u4")  # zero_point=False: midpoint 8
    sd = layer.state_dict()
    assert "zeros" not in sd and layer.zeros is None
    assert meta_fields(layer)["zeros"] == 8
    assert "zero point 8" in repr(layer) and "zeros" not in repr(layer)
    qw = layer.qweight
    assert qw.zeros.shape == qw.scale_codes.shape and not any(qw.zeros.strides)
    assert (qw.zeros == 8).all()
    assert operands(qw, "f16").zeros is None  # read as signed codes: no zero points
    x = x16()
    check(layer, x)
    fresh = QuantLinear.from_linear(linear(seed=9), "u4", 64, zero_point=True)
    fresh.load_state_dict(sd)
    assert fresh.zeros is None and torch.equal(fresh(x), layer(x))
    per_group = QuantLinear.from_linear(linear(seed=8), "u4", zero_point=True)
    assert per_group.zeros is not None and "zeros" in per_group.state_dict()


def test_a_state_dict_with_a_zeros_buffer_of_a_constant_still_loads():
    """State dicts saved before: the midpoint as an int32 buffer, nothing in meta."""
    layer = QuantLinear.from_linear(linear(seed=10), "u4")
    old = layer.state_dict()
    fields = meta_fields(layer)
    zero = fields.pop("zeros")
    old["meta"] = torch.tensor(list(json.dumps(fields).encode()), dtype=torch.uint8)
    old["zeros"] = torch.full(tuple(layer.scale_codes.shape), zero, dtype=torch.int32)
    fresh = QuantLinear.from_linear(linear(seed=11), "i4")
    assert fresh.load_state_dict(old).missing_keys == []
    x = x16()
    assert torch.equal(fresh(x), layer(x))
    both = dict(old, meta=layer.state_dict()["meta"])  # a buffer and meta's constant
    with pytest.raises(ValueError, match=r"zero points given twice: a zeros buffer and meta"):
        fresh.load_state_dict(both)


# ------------------------------------------------------------------------ no gradient


def test_grad_mode_gives_no_gradient_warning_and_results_without_grad():
    """QuantMoE has no derivative (QuantLinear's: tests/test_quant_backward.py)."""
    moe = QuantMoE(quant.quantize_experts(np.ones((2, K, N), np.float32), "u4", 64))
    ids = torch.tensor([[0], [1], [1]], dtype=torch.int32)
    calls = {"tilelang::quant_moe": lambda x: moe(x, ids)}
    for name, call in calls.items():
        host_calls.WARNED.discard(name)
        x = x16().requires_grad_()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.no_grad():
                assert not call(x).requires_grad
            assert not call(x.detach()).requires_grad
            assert not caught  # nothing asked for a gradient
            y = call(x)
            call(x)  # once per operator
        assert not y.requires_grad
        assert [type(w.message) for w in caught] == [NoGradientWarning], name
        assert name in str(caught[0].message) and caught[0].filename == __file__
