"""tilelang.torch.QuantLinear as a serving stack handles a model: copied (copy.copy,
deepcopy), pickled, torch.save'd in one process and loaded in another, saved with
safetensors, cast to bf16 or f16, and imported from checkpoints with f32 scales.

Each module must compute with its own weight whatever happened to the others; outputs
are checked against x @ W + bias in float64 (tests/test_quant_linear.py's `check`, W
from tests/test_quant_matmul.py's `reference_weights`), converted scales against torch's
own round-to-nearest-even casts, and state_dict metadata with the json module."""

from __future__ import annotations

import copy
import gc
import json
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_quant_import import gptq_checkpoint, reference
from test_quant_linear import K, N, _arrays_equal, _gptq_layer, check, linear
from test_quant_matmul import reference_weights

import tilelang as tl
from tilelang import quant
from tilelang.quant import ScaleRoundingWarning
from tilelang.torch import QuantLinear

ROOT = Path(__file__).resolve().parent.parent


def x16(rows: int = 3, k: int = K, dtype=torch.float16) -> torch.Tensor:
    return (torch.randn(rows, k) / 2).to(dtype)


def u4(seed: int) -> QuantLinear:
    return QuantLinear.from_linear(linear(seed=seed), "u4")


# ------------------------------------------------------------------ copies and pickles


def test_a_deepcopy_loaded_with_another_state_leaves_the_original_alone():
    """The reported case: the copy shared the original's handle, so loading into the
    copy changed the original's output, and collecting the original broke the copy."""
    qa, qb = u4(1), u4(2)
    x = x16()
    before = qa(x)
    c = copy.deepcopy(qa)
    assert c.codes.data_ptr() != qa.codes.data_ptr()
    c.load_state_dict(qb.state_dict())
    assert torch.equal(qa(x), before)
    assert torch.equal(c(x), qb(x)) and not torch.equal(c(x), before)
    del qa
    gc.collect()
    check(c, x)


def test_a_shallow_copy_shares_the_tensors_but_loads_on_its_own():
    qa, qb = u4(3), u4(4)
    x = x16()
    before = qa(x)
    c = copy.copy(qa)
    assert c.codes is qa.codes  # torch's shallow copy
    assert torch.equal(c(x), before)
    c.load_state_dict(qb.state_dict())
    assert torch.equal(qa(x), before) and torch.equal(c(x), qb(x))
    del qa
    gc.collect()
    check(c, x)


def test_a_pickled_layer_computes_with_its_own_weight_in_the_same_process():
    layer = u4(5)
    x = x16()
    y = layer(x)  # the weight's kernel cache (packed codes, call state) exists now
    copies = [pickle.loads(pickle.dumps(layer)) for _ in range(2)]
    assert len({m.codes.data_ptr() for m in (layer, *copies)}) == 3
    del layer
    gc.collect()
    for c in copies:
        assert torch.equal(c(x), y)


def test_a_pickled_layer_of_the_first_form_takes_its_weight_from_the_pickle():
    """Modules pickled before the meta buffer held their weight as an attribute."""
    layer = u4(10)
    x = x16()
    state = dict(layer.__dict__, qweight=layer.qweight)
    state["_buffers"] = {k: v for k, v in layer._buffers.items() if k != "meta"}
    old = QuantLinear.__new__(QuantLinear)
    old.__setstate__(state)
    assert "qweight" not in old.__dict__
    assert torch.equal(old(x), layer(x))


def test_buffers_modified_in_place_are_the_weight_the_layer_computes_with():
    layer, other = u4(6), u4(7)
    x = x16()
    layer(x)
    with torch.no_grad():
        for name in ("codes", "scale_codes", "bias"):  # symmetric u4: no zeros buffer
            getattr(layer, name).copy_(getattr(other, name))
    assert torch.equal(layer(x), other(x))


_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from tilelang import quant
    from tilelang.torch import QuantLinear

    path, count = sys.argv[1], int(sys.argv[2])
    # Layers of this process made before the load: the first design looked the loaded
    # layer's weight up by a per-module number and took this process's layer's.
    decoy_weight = quant.quantize(np.full(({k}, {n}), 0.5), "u4")
    decoys = [QuantLinear(decoy_weight) for _ in range(count)]
    for decoy in decoys:
        decoy(torch.zeros(1, {k}, dtype=torch.float16))  # their weights in the table
    saved = torch.load(path, weights_only=False)
    torch.save({{"y": saved["model"](saved["x"]), "decoy": decoys[-1](saved["x"])}}, path)
    """
)


def test_torch_save_then_torch_load_in_another_process_keeps_each_weight(tmp_path):
    model = torch.nn.Sequential(u4(8), torch.nn.ReLU())
    x = x16()
    path = tmp_path / "model.pt"
    torch.save({"model": model, "x": x}, path)  # saved before and after a call alike
    expected = model(x)
    script = tmp_path / "other.py"
    script.write_text(_OTHER_PROCESS.format(k=K, n=N))
    done = subprocess.run(
        [sys.executable, str(script), str(path), "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(path)
    assert torch.equal(got["y"], expected)
    assert not torch.equal(torch.relu(got["decoy"]), expected)  # confusing them would show


# --------------------------------------------------------------------------- safetensors


def _model(bias: bool = True) -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict(
        {
            "up": QuantLinear.from_linear(linear(seed=4), "u4", group_size=64, zero_point=True),
            "gate": _gptq_layer(act_order=True),  # a perm buffer
            "nv": QuantLinear.from_linear(linear(seed=3, bias=bias), format="nvfp4"),
        }
    )


def _fresh() -> torch.nn.ModuleDict:
    return torch.nn.ModuleDict(
        {name: QuantLinear.from_linear(linear(seed=9), "i4") for name in ("up", "gate", "nv")}
    )


@pytest.mark.parametrize("assign", [False, True])
def test_safetensors_save_file_and_load_file_round_trip_a_model(tmp_path, assign):
    from safetensors.torch import load_file, save_file

    model = _model(bias=False)
    path = tmp_path / "q.safetensors"
    save_file(model.state_dict(), path)
    fresh = _fresh()
    fresh.load_state_dict(load_file(path), assign=assign)
    x = x16()
    for name in model:
        _arrays_equal(fresh[name].qweight, model[name].qweight)
        assert (fresh[name].bias is None) == (model[name].bias is None)
        assert torch.equal(check(fresh[name], x), model[name](x))


def test_a_state_dict_of_the_first_form_with_extra_state_still_loads():
    model = _model()
    old = {}
    for name, layer in model.items():
        # What tilelang wrote before the meta buffer: the weight's other fields as a
        # dict of plain values beside the array buffers.
        arrays = layer.qweight.arrays()
        extra = {"version": 2}
        for field, value in arrays.items():
            if value is not None and field not in ("codes", "scale_codes", "zeros", "perm"):
                extra[field] = np.asarray(value).tolist()
        for buffer, tensor in layer.state_dict().items():
            if buffer != "meta":
                old[f"{name}.{buffer}"] = tensor
        old[f"{name}._extra_state"] = extra
    fresh = _fresh()
    assert fresh.load_state_dict(old).missing_keys == []
    x = x16()
    for name in model:
        _arrays_equal(fresh[name].qweight, model[name].qweight)
        assert torch.equal(fresh[name](x), model[name](x))
        fields = json.loads(bytes(fresh[name].meta.tolist()).decode())
        assert fields["format"] == model[name].qweight.format


# ------------------------------------------------------------------------ scale types


def test_a_bf16_linear_gives_bf16_scales_and_takes_bf16_inputs():
    layer = QuantLinear.from_linear(linear().bfloat16(), "u4")
    assert layer.qweight.scale_dtype == tl.bf16 and layer.qweight.group_size == 128
    check(layer, x16(dtype=torch.bfloat16))
    f16_layer = QuantLinear.from_linear(linear(), "u4")
    assert f16_layer.qweight.scale_dtype == tl.f16
    with pytest.raises(TypeError, match=r"\.to\(torch\.bfloat16\) on the layer converts"):
        f16_layer(x16(dtype=torch.bfloat16))


def test_to_bfloat16_rounds_f16_scales_to_nearest_even_and_reports_the_error():
    layer = QuantLinear.from_linear(linear(seed=2), "u4", group_size=64, zero_point=True)
    scales = layer.scale_codes.numpy().view(np.float16).copy()
    w_before = reference_weights(layer.qweight)
    with pytest.warns(ScaleRoundingWarning) as record:
        layer.to(torch.bfloat16)
    assert record[0].filename == __file__  # the line that cast the model
    expected = torch.from_numpy(scales).to(torch.bfloat16).float().numpy()
    assert layer.qweight.scale_dtype == tl.bf16
    np.testing.assert_array_equal(layer.qweight.scales, expected)
    warning = record[0].message
    assert warning.rounded == np.count_nonzero(expected != scales.astype(np.float32))
    assert warning.rounded > 0 and warning.total == scales.size
    moved = np.abs(reference_weights(layer.qweight) - w_before).max()
    assert warning.error["max_abs"] == pytest.approx(moved, rel=1e-6)
    check(layer, x16(dtype=torch.bfloat16))


def test_a_cast_that_would_overflow_the_scales_is_refused_and_changes_nothing():
    big = np.random.default_rng(0).standard_normal((K, N)) * 1e6
    layer = QuantLinear(quant.quantize(big, "i4", scale_dtype="bf16"))
    before = layer.scale_codes.clone()
    with pytest.raises(ValueError, match=r"scale_dtype: \d+ bf16 scales overflow f16"):
        layer.half()
    assert torch.equal(layer.scale_codes, before) and layer.qweight.scale_dtype == tl.bf16


def test_mx_scales_serve_both_types_and_from_linear_takes_the_formats_block():
    layer = QuantLinear.from_linear(linear(seed=6), format="mxfp4")  # group_size: 32
    assert layer.qweight.group_size == 32
    layer.bfloat16()
    assert layer.qweight.scale_dtype == tl.e8m0
    check(layer, x16(dtype=torch.bfloat16))
    check(layer, x16())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_from_linear_passes_mx_scale_and_codebooks_and_a_skeleton_loads_nf4(dtype):
    layer = QuantLinear.from_linear(linear(seed=7).to(dtype), format="nf4")
    assert layer.qweight.scale_dtype == (tl.bf16 if dtype == torch.bfloat16 else tl.f16)
    assert layer.qweight.group_size == 64  # bitsandbytes' blocksize
    check(layer, x16(dtype=dtype))
    with torch.device("meta"):
        skeleton = QuantLinear.from_linear(torch.nn.Linear(K, N, dtype=dtype), format="nf4")
    skeleton.load_state_dict(layer.state_dict(), assign=True)
    with torch.no_grad():
        x = x16(dtype=dtype)
        assert torch.equal(skeleton(x), layer(x))
    own = QuantLinear.from_linear(linear(seed=8).to(dtype), format="codebook", codebook=[-1, 0, 1])
    assert own.qweight.dtype == tl.u2 and own.qweight.table.tolist() == [-1, 0, 1, 1]
    check(own, x16(dtype=dtype))
    w = np.zeros((N, K), np.float32)
    w[:, 0] = 7.9  # one block's top: the floor rule saturates it to 6, rceil keeps 8
    top = torch.nn.Linear(K, N).to(dtype)
    with torch.no_grad():
        top.weight.copy_(torch.from_numpy(w))
    rceil = QuantLinear.from_linear(top, format="mxfp4", mx_scale="rceil")
    floor = QuantLinear.from_linear(top, format="mxfp4")
    assert rceil.qweight.dequantize()[0, 0] == 8.0 and floor.qweight.dequantize()[0, 0] == 6.0


def test_a_bnb_checkpoints_layer_takes_its_compute_dtype_and_casts_convert_its_scales():
    from test_quant_codebook import BNB_NF4, bnb_pack

    out_features, in_features = N, K
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 16, out_features * in_features).astype(np.uint8)
    absmax = (rng.random(codes.size // 64) * 0.1).astype(np.float32)
    meta = {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16"}
    meta["shape"] = [out_features, in_features]
    p = "layers.0.up_proj"
    state = {
        # FSDP-QLoRA stores the bytes as bf16 words (quant_storage)
        f"{p}.weight": torch.from_numpy(bnb_pack(codes).reshape(-1)).view(torch.bfloat16),
        f"{p}.weight.absmax": torch.from_numpy(absmax),
        f"{p}.weight.quant_map": torch.from_numpy(BNB_NF4),
        f"{p}.weight.quant_state.bitsandbytes__nf4": torch.tensor(
            list(json.dumps(meta).encode()), dtype=torch.uint8
        ),
        f"{p}.bias": torch.randn(out_features).bfloat16(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScaleRoundingWarning)  # f32 absmax rounded to bf16
        layer = QuantLinear.from_bnb_state_dict(state, p)
    assert layer.qweight.scale_dtype == tl.bf16 and layer.qweight.format == "nf4"
    assert torch.equal(layer.bias, state[f"{p}.bias"])
    check(layer, x16(dtype=torch.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScaleRoundingWarning)
        layer.half()  # a codebook layer's scales follow a cast, as a scaled one's do
    assert layer.qweight.scale_dtype == tl.f16
    check(layer, x16())


@pytest.mark.parametrize(
    ("dtype", "options"),
    [(torch.bfloat16, dict(format="nf4")), (torch.float16, dict(dtype="u4")), (None, {})],
)
def test_f32_inputs_compute_in_the_layers_type_and_come_back_f32(dtype, options):
    """As bitsandbytes' compute_dtype: PEFT keeps norms in f32, so f32 activations reach
    the quantized layers; the gradient flows back to the f32 input."""
    if dtype is None:  # a skeleton's type comes from its act_dtype
        layer = QuantLinear.empty(K, N, "u4", bias=True, act_dtype=torch.bfloat16)
        layer.load_state_dict(QuantLinear.from_linear(linear(seed=9).bfloat16(), "u4").state_dict())
        dtype = torch.bfloat16
    else:
        layer = QuantLinear.from_linear(linear(seed=9).to(dtype), **options)
    assert layer.compute_dtype == dtype
    x = (torch.randn(3, K) / 2).requires_grad_()
    y = layer(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, layer(x.detach().to(dtype)).float())
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32


def test_a_k_no_group_divides_suggests_per_channel_scales():
    with pytest.raises(ValueError, match=r"group_size=-1 \(one scale per column\).*has none"):
        QuantLinear.from_linear(linear(k=100), "u4")
    with pytest.raises(
        ValueError, match=r"K = 96 .* the group size 128 \(the default\).*e\.g\. 48"
    ):
        QuantLinear.from_linear(linear(k=96), "u4")
    layer = QuantLinear.from_linear(linear(k=100), "u4", group_size=-1)
    check(layer, x16(k=100))


# ------------------------------------------------------------- imports with f32 scales


def _gptq_dict(scales: np.ndarray) -> dict:
    (qweight, qzeros, _, g_idx), _ = gptq_checkpoint(4, 64, False, False, seed=7)
    return {
        "p.qweight": torch.from_numpy(qweight),
        "p.qzeros": torch.from_numpy(qzeros),
        "p.scales": torch.from_numpy(scales),
        "p.g_idx": torch.from_numpy(g_idx),
    }


def test_gptq_f32_scales_become_the_layers_type_at_import():
    _, truth = gptq_checkpoint(4, 64, False, False, seed=7)
    s = truth[2]  # f16 scales
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # f16 values in f32: exact, so no warning
        layer = QuantLinear.from_gptq_state_dict(_gptq_dict(s.astype(np.float32)), "p", sym=False)
    assert layer.qweight.scale_dtype == tl.f16
    np.testing.assert_array_equal(
        layer.qweight.dequantize().view(np.uint32), reference(*truth).view(np.uint32)
    )
    check(layer, x16())
    off = (s.astype(np.float32) * np.float32(1 + 2**-15)).astype(np.float32)  # not f16
    with pytest.warns(ScaleRoundingWarning, match=r"are not exact in f16"):
        rounded = QuantLinear.from_gptq_state_dict(_gptq_dict(off), "p", sym=False)
    expected = torch.from_numpy(off).half().float().numpy()
    np.testing.assert_array_equal(rounded.qweight.scales, expected)
    with pytest.warns(ScaleRoundingWarning):
        bf16 = QuantLinear.from_gptq_state_dict(_gptq_dict(off), "p", sym=False, scale_dtype="bf16")
    expected = torch.from_numpy(off).bfloat16().float().numpy()
    np.testing.assert_array_equal(bf16.qweight.scales, expected)
    check(bf16, x16(dtype=torch.bfloat16))


def test_gptq_scales_f16_cannot_hold_or_f32_layers_are_refused_at_import():
    huge = np.full((K // 64, N), 1e6, np.float32)
    with pytest.raises(ValueError, match=r"f32 scales overflow f16.*convert to bf16"):
        QuantLinear.from_gptq_state_dict(_gptq_dict(huge), "p", sym=False)
    with pytest.warns(ScaleRoundingWarning, match="not exact in bf16"):
        layer = QuantLinear.from_gptq_state_dict(
            _gptq_dict(huge), "p", sym=False, scale_dtype="bf16"
        )
    assert layer.qweight.scale_dtype == tl.bf16
    with pytest.raises(ValueError, match=r"scale_dtype: a QuantLinear's scales are f16 or bf16"):
        QuantLinear.from_gptq_state_dict(_gptq_dict(huge), "p", sym=False, scale_dtype="f32")
