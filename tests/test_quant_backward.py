"""Gradients through quantized linear layers (QLoRA-style fine-tuning) and the kernel
dequantization they need.

`tilelang.quant.dequantize` against `QuantizedWeight.dequantize()` (numpy, checked
against the formats' specs in tests/test_quant.py and tests/test_quant_import.py)
rounded to the output type by numpy / ml_dtypes, bit for bit, for every format family,
with and without zero points and act order, on the CPU backend and the interpreter; its
GPU builds spill nothing. `QuantLinear`'s backward: x.grad and the bias's gradient
against float64 products with that numpy W, within a bound derived from the dtype; the
buffers get no gradient and the forward saves only the buffers; a LoRA adapter on two
quantized layers gets the gradients of the same model with dense float64 weights and
trains; opcheck; one torch.compile(fullgraph) of forward and backward against eager."""

from __future__ import annotations

import dataclasses
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from test_quant_import import gptq_checkpoint

from tilelang import quant
from tilelang.quant.dequantize import compile_dequantize
from tilelang.quant.operands import operands
from tilelang.runtime import gpu
from tilelang.torch import QuantLinear

K, N = 128, 136  # N: a partial column tile
RANK = 4  # the LoRA adapters' rank
#: numpy's (ml_dtypes') round-to-nearest-even cast to each output type, and its bits.
NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32}
BITS = {"f16": np.uint16, "bf16": np.uint16, "f32": np.uint32}


def _float_weights(k: int = K, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32)


def _act_order(qw: quant.QuantizedWeight, seed: int) -> quant.QuantizedWeight:
    """`qw` read as an act-order weight: its stored row i is row perm[i] of W."""
    perm = np.random.default_rng(seed).permutation(qw.shape[0])
    return dataclasses.replace(qw, perm=perm)


def _gptq_act_order(k: int = 256, n: int = 64) -> quant.QuantizedWeight:
    (qweight, qzeros, scales, g_idx), _ = gptq_checkpoint(4, 64, False, True, seed=3, k=k, n=n)
    return quant.from_gptq(qweight, qzeros, scales, g_idx=g_idx, bits=4, sym=False)


#: (weight, output type): every format family, with and without zero points and perm.
WEIGHTS = {
    "u4-zeros": (lambda: quant.quantize(_float_weights(), "u4", 32, zero_point=True), "bf16"),
    "u4-midpoint": (lambda: quant.quantize(_float_weights(seed=1), "u4", 64), "f16"),
    # below f16's normal numbers: only bf16 arithmetic holds them
    "i4-bf16-scales": (
        lambda: quant.quantize(_float_weights(seed=2) * 2.0**-20, "i4", 128, scale_dtype="bf16"),
        "f32",
    ),
    # K = 200: the packing pads K to 256, rows the act-order store must skip
    "u3-zeros-per-channel-act-order": (
        lambda: _act_order(quant.quantize(_float_weights(200), "u3", -1, zero_point=True), 5),
        "f16",
    ),
    "gptq-act-order": (_gptq_act_order, "f16"),
    "f4e2m1": (lambda: quant.quantize(_float_weights(seed=3), "f4e2m1", 32), "f16"),
    "mxfp4-shifted": (
        lambda: quant.quantize(_spread(_float_weights(seed=4)), format="mxfp4"),
        "f16",
    ),
    "mxfp6-act-order": (
        lambda: _act_order(quant.quantize(_float_weights(seed=5), format="mxfp6_e3m2"), 6),
        "bf16",
    ),
    "mxfp8": (lambda: quant.quantize(_float_weights(seed=6), format="mxfp8_e4m3"), "f32"),
    "nvfp4": (lambda: quant.quantize(_float_weights(seed=7), format="nvfp4"), "f16"),
    "nf4": (lambda: quant.quantize(_float_weights(seed=8), format="nf4"), "bf16"),
}


def _spread(w: np.ndarray) -> np.ndarray:
    """Blocks of 32 rows from 2^-30 to 2^1: more powers of two than f16 scales hold (the
    kernels shift them by 2^e0 and multiply by it after) and than its normal numbers
    hold (the general e8m0 conversion, KIND "mx")."""
    return w * np.repeat(2.0 ** np.linspace(-30, 1, w.shape[0] // 32), 32)[:, None]


@pytest.fixture(scope="module")
def weights() -> dict[str, quant.QuantizedWeight]:
    return {name: make() for name, (make, _) in WEIGHTS.items()}


def _expected(qw: quant.QuantizedWeight, dtype: str) -> np.ndarray:
    """numpy's W (f32) rounded once to `dtype` by numpy's own cast."""
    return qw.dequantize().astype(NUMPY[dtype])


def _assert_bits(got: np.ndarray, expected: np.ndarray, dtype: str, what: str) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    bits = BITS[dtype]
    different = got.view(bits) != expected.view(bits)
    if different.any():
        where = tuple(int(i) for i in np.argwhere(different)[0])
        raise AssertionError(
            f"{what}: {int(different.sum())} elements differ, the first at {where}: "
            f"{got[where]!r} against {expected[where]!r}"
        )


# ---------------------------------------------------------------------- dequantize


def test_the_shifted_case_is_one(weights):
    ops = operands(weights["mxfp4-shifted"], "f16")
    assert ops.t != 1.0 and ops.constexprs["KIND"] == "mx"  # the general e8m0 recipe


@pytest.mark.parametrize("name", list(WEIGHTS))
def test_dequantize_is_numpys_w_rounded_to_the_dtype_bit_for_bit(weights, name):
    qw, dtype = weights[name], WEIGHTS[name][1]
    expected = _expected(qw, dtype)
    _assert_bits(quant.dequantize(qw, dtype), expected, dtype, f"{name} CPU backend")
    _assert_bits(
        quant.dequantize(qw, dtype, interpret=True), expected, dtype, f"{name} interpreter"
    )


def test_dequantize_writes_out_and_reads_its_dtype_from_it(weights):
    qw = weights["nvfp4"]
    out = np.full(qw.shape, np.nan, np.float32)  # every element must be written
    assert quant.dequantize(qw, out=out) is out
    _assert_bits(out, _expected(qw, "f32"), "f32", "out")
    assert quant.dequantize(qw).dtype == np.float32  # f32 without out
    tensor = torch.full(qw.shape, float("nan"), dtype=torch.bfloat16)
    assert quant.dequantize(qw, "bf16", out=tensor) is tensor  # a CPU tensor's memory
    _assert_bits(
        tensor.float().numpy().astype(ml_dtypes.bfloat16), _expected(qw, "bf16"), "bf16", "tensor"
    )


def test_dequantize_refuses_bad_arguments_naming_them(weights):
    qw = weights["u4-zeros"]
    with pytest.raises(
        TypeError, match=r"qw must be a tilelang.quant.QuantizedWeight, got ndarray"
    ):
        quant.dequantize(np.zeros((K, N)))
    with pytest.raises(TypeError, match=r"dtype must be f16, bf16 or f32, got 'i8'"):
        quant.dequantize(qw, "i8")
    with pytest.raises(ValueError, match=rf"out must have shape \[{K}, {N}\].*got \[{N}, {K}\]"):
        quant.dequantize(qw, out=np.empty((N, K), np.float16))
    with pytest.raises(TypeError, match=r"out holds f16 values but dtype is f32"):
        quant.dequantize(qw, "f32", out=np.empty((K, N), np.float16))
    with pytest.raises(TypeError, match=r"out must hold f16, bf16 or f32 values, got f64"):
        quant.dequantize(qw, out=np.empty((K, N), np.float64))
    with pytest.raises(ValueError, match=r"out must be a writeable C-contiguous array"):
        quant.dequantize(qw, out=np.empty((N, K), np.float16).T)
    f32_scales = quant.quantize(_float_weights(), "u4", 32, scale_dtype="f32")
    with pytest.raises(TypeError, match=r"scales are f32: convert them first"):
        quant.dequantize(f32_scales, "f16")


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(
    "name", ["u3-zeros-per-channel-act-order", "f4e2m1", "mxfp6-act-order", "nvfp4"]
)
def test_gpu_builds_do_not_spill(weights, name, target):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a spill warns
        compiled = compile_dequantize(weights[name], WEIGHTS[name][1], target)
    assert compiled.resources.spill_store_bytes == 0, name
    assert compiled.resources.spill_load_bytes == 0, name


# ------------------------------------------------------------------------ backward


UNIT = {torch.float16: (2.0**-11, 2.0**-25), torch.bfloat16: (2.0**-8, 2.0**-134)}


def f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def product_bound(g: np.ndarray, w: np.ndarray, expected: np.ndarray, dtype) -> np.ndarray:
    """|got − g @ w| per element for g @ w computed as torch does in `dtype`: w rounded to
    the dtype (relative u, or half its smallest subnormal η), products summed in f32
    (n + 2 roundings of 2^-24 over Σ|g·w|), one rounding of the result (u of a value
    already off by that much, and η)."""
    unit, tiny = UNIT[dtype]
    absolute = np.abs(g) @ np.abs(w)
    rounded_w = unit * absolute + tiny * np.abs(g).sum(axis=-1, keepdims=True)
    accumulation = (g.shape[-1] + 2) * 2.0**-24 * (absolute + rounded_w)
    inner = rounded_w + accumulation
    return inner + unit * (np.abs(expected) + inner) + tiny


def _assert_within(got: np.ndarray, expected: np.ndarray, allowed: np.ndarray, what: str):
    error = np.abs(got - expected)
    worst = np.unravel_index(int(np.argmax(error / allowed)), error.shape)
    assert (error <= allowed).all(), (
        f"{what}: error {error[worst]:.3g} over the bound {allowed[worst]:.3g} at {worst}"
    )


def _layer(name: str) -> QuantLinear:
    torch.manual_seed(1)
    linear = torch.nn.Linear(256, 64)
    if name == "gptq-act-order":
        return QuantLinear(_gptq_act_order(), torch.randn(64).half())
    formats = {
        "u4-zeros": dict(dtype="u4", group_size=64, zero_point=True),
        "mxfp4": dict(format="mxfp4"),
        "nvfp4": dict(format="nvfp4"),
        "nf4": dict(format="nf4"),  # bitsandbytes' QLoRA format
    }
    return QuantLinear.from_linear(linear, **formats[name])


@pytest.fixture(scope="module")
def layers() -> dict[str, QuantLinear]:
    names = ("u4-zeros", "gptq-act-order", "mxfp4", "nvfp4", "nf4")
    return {name: _layer(name) for name in names}


@pytest.mark.parametrize("shape", [(6,), (2, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("u4-zeros", torch.float16),
        ("gptq-act-order", torch.float16),
        ("mxfp4", torch.bfloat16),
        ("nvfp4", torch.float16),
        ("nf4", torch.float16),
    ],
)
def test_x_and_bias_gradients_are_the_float64_products(layers, name, dtype, shape):
    layer = layers[name]
    bias = layer.bias.detach().clone().requires_grad_()  # a trainable bias
    layer.bias = bias
    generator = torch.Generator().manual_seed(len(shape))
    x = (torch.randn(*shape, 256, generator=generator) / 2).to(dtype).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NoGradientWarning any more
        y = layer(x)
    assert y.requires_grad
    grad = torch.randn(y.shape, generator=generator).to(dtype)
    y.backward(grad)
    assert x.grad.dtype == dtype and x.grad.shape == x.shape
    g = f64(grad).reshape(-1, 64)
    w = layer.qweight.dequantize().astype(np.float64)  # numpy's W, original row order
    expected = g @ w.T
    allowed = product_bound(g, w.T, expected, dtype)
    _assert_within(f64(x.grad).reshape(expected.shape), expected, allowed, f"{name} x.grad")
    expected_bias = g.sum(axis=0)
    unit, tiny = UNIT[dtype]
    summed = (g.shape[0] + 2) * 2.0**-24 * np.abs(g).sum(axis=0)
    allowed_bias = summed + unit * (np.abs(expected_bias) + summed) + tiny
    assert bias.grad.dtype == bias.dtype
    _assert_within(f64(bias.grad), expected_bias, allowed_bias, f"{name} bias.grad")
    for buffer in ("codes", "scale_codes", "zeros", "perm", "meta"):
        tensor = getattr(layer, buffer)
        assert tensor is None or (tensor.grad is None and not tensor.requires_grad), buffer


def test_the_forward_saves_the_buffers_and_nothing_else(layers):
    """Neither x nor a dequantized W outlives the forward: the backward dequantizes into
    a temporary."""
    layer = layers["u4-zeros"]
    buffers = {t.data_ptr() for t in layer._weight_tensors() if t is not None}
    saved = []

    def pack(tensor):
        saved.append(tensor.data_ptr())
        return tensor

    x = torch.randn(3, 256).half().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    assert saved and set(saved) <= buffers
    y.sum().backward()
    assert x.grad is not None


def test_without_a_gradient_to_compute_the_backward_computes_none(layers, monkeypatch):
    """Only the bias requires grad: no dequantization happens."""
    from tilelang.torch import quant_linear

    layer = layers["nvfp4"]
    layer.bias = layer.bias.detach().clone().requires_grad_()
    monkeypatch.setattr(quant_linear, "quant_linear_weight", None)  # any call would fail
    y = layer(torch.randn(2, 256).half())
    y.sum().backward()
    assert torch.equal(layer.bias.grad, torch.full((64,), 2.0))


def test_opcheck_passes_for_the_operator_and_its_dequantization(layers):
    layer = layers["gptq-act-order"]
    weight = (layer.codes, layer.scale_codes, layer.zeros, layer.perm, layer.meta)
    x = torch.randn(4, 256).half().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    torch.library.opcheck(torch.ops.tilelang.quant_linear.default, (x, *weight, bias))
    torch.library.opcheck(
        torch.ops.tilelang.quant_linear_weight.default, (*weight, 256, torch.float16)
    )
    w = layer.dequantize(torch.float16)
    _assert_bits(w.numpy(), _expected(layer.qweight, "f16"), "f16", "QuantLinear.dequantize")


# --------------------------------------------------------------------------- LoRA


class LoRA(torch.nn.Module):
    """A frozen base layer plus a trainable low-rank adapter: base(x) + x @ A @ B."""

    def __init__(self, base: torch.nn.Module, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.base = base
        k, n = base.in_features, base.out_features
        self.a = torch.nn.Parameter(torch.randn(k, RANK, generator=generator) / k**0.5)
        self.b = torch.nn.Parameter(torch.randn(RANK, n, generator=generator) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapter = (x.to(self.a.dtype) @ self.a @ self.b).to(x.dtype)
        return self.base(x) + adapter


def _two_layers(first: torch.nn.Module, second: torch.nn.Module) -> torch.nn.Sequential:
    """The adapter of the first layer learns only through the second layer's base."""
    return torch.nn.Sequential(LoRA(first, seed=1), torch.nn.ReLU(), LoRA(second, seed=2))


def _quantized_pair() -> tuple[QuantLinear, QuantLinear]:
    torch.manual_seed(4)
    up, down = torch.nn.Linear(64, 256), torch.nn.Linear(256, 64, bias=False)
    return (
        QuantLinear.from_linear(up, "u4", group_size=32, zero_point=True),
        QuantLinear.from_linear(down, "i4", group_size=64),
    )


class Dense(torch.nn.Module):
    """The same layer in float64 with numpy's W: the reference."""

    def __init__(self, layer: QuantLinear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.w = torch.from_numpy(layer.qweight.dequantize().astype(np.float64))
        self.bias = None if layer.bias is None else layer.bias.detach().double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x @ self.w
        return y if self.bias is None else y + self.bias


def test_a_lora_adapter_gets_the_dense_models_gradients_and_trains():
    up, down = _quantized_pair()
    model = _two_layers(up, down)
    reference = _two_layers(Dense(up), Dense(down)).double()
    reference.load_state_dict(model.state_dict(), strict=False)  # the same adapters
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["0.a", "0.b", "2.a", "2.b"]  # the quantized bases are frozen
    generator = torch.Generator().manual_seed(5)
    x = (torch.randn(8, 64, generator=generator) / 2).half()
    target = torch.randn(8, 64, generator=generator).half()
    loss = torch.nn.functional.mse_loss(model(x).float(), target.float())
    loss.backward()
    expected = torch.nn.functional.mse_loss(reference(x.double()), target.double())
    expected.backward()
    for (name, got), want in zip(model.named_parameters(), reference.parameters(), strict=True):
        # f16 activations against float64: a few f16 roundings of each layer's output
        scale = want.grad.abs().max().item()
        assert torch.allclose(got.grad.double(), want.grad, rtol=0.02, atol=0.02 * scale), name
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).float(), target.float())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_compiled_fullgraph_forward_and_backward_equal_eager():
    up, down = _quantized_pair()
    model = _two_layers(up, down)
    x = (torch.randn(8, 64) / 2).half().requires_grad_()

    def run(fn):
        model.zero_grad()
        x.grad = None
        out = fn(x)
        (out.float() ** 2).mean().backward()
        return out.detach(), x.grad.clone(), [p.grad.clone() for p in model.parameters()]

    eager = run(model)
    torch._dynamo.reset()
    compiled = run(torch.compile(model, fullgraph=True))  # inductor: a graph break raises
    # Inductor keeps f32 where eager rounds the adapter's and the sums' f16 results: a
    # few f16 roundings (2^-11 each) of the largest element apart.
    got = [compiled[0], compiled[1], *compiled[2]]
    for name, a, b in zip(
        ["y", "x.grad", "0.a", "0.b", "2.a", "2.b"],
        got,
        [eager[0], eager[1], *eager[2]],
        strict=True,
    ):
        allowed = 2.0**-8 * b.abs().max().item()
        assert (a.double() - b.double()).abs().max().item() <= allowed, name


# ---------------------------------------------------------------------------- GPU


def cuda_ready() -> bool:
    return torch.cuda.is_available() and gpu.gpu_available()


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_ready(), reason="needs a CUDA device and torch with CUDA")
def test_cuda_dequantize_equals_the_cpu_and_the_backward_the_product(weights, monkeypatch):
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")  # the default tiles: no timed trials
    for name in ("u3-zeros-per-channel-act-order", "mxfp6-act-order", "nvfp4"):
        qw, dtype = weights[name], WEIGHTS[name][1]
        torch_type = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}[dtype]
        out = torch.full(qw.shape, float("nan"), dtype=torch_type, device="cuda")
        quant.dequantize(qw, out=out)
        cpu = torch.from_numpy(quant.dequantize(qw, "f32")).to(torch_type)
        assert torch.equal(out.cpu(), cpu), name
    layer = _layer("gptq-act-order")
    x = (torch.randn(5, 256) / 2).half()
    grads = []
    for device in ("cpu", "cuda"):
        moved = layer.to(device)
        xd = x.to(device).requires_grad_()
        moved(xd).float().sum().backward()
        grads.append(xd.grad.cpu())
    w = layer.cpu().qweight.dequantize().astype(np.float64)
    g = np.ones((5, 64))
    expected = g @ w.T
    allowed = product_bound(g, w.T, expected, torch.float16)
    for got in grads:
        _assert_within(f64(got), expected, allowed, "x.grad")
