"""tilelang.quant.from_compressed_tensors and GPTQ v2: synthetic checkpoints written by the
packers in this file (from the formats' public descriptions, with Python integers, never
tilelang's packing or the importer's helpers), read back and compared element by element
with the reference formula, computed with torch in the scale's type as compressed-tensors'
dequantization does: w[n, k] = (q.to(S) − z.to(S)) · s in S, S the scale's dtype (the
FP8 case: q.to(S) · s). Tensors are [N, K] (out, in); tilelang's weights are [K, N]."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from test_quant_matmul import bound

from tilelang import f16, quant
from tilelang.quant import ActivationQuantizationWarning, from_compressed_tensors, from_gptq
from tilelang.torch import QuantLinear

TORCH_SCALES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


# ------------------------------------------------------------ packers from the spec


def dense_row(fields, bits: int) -> list[int]:
    """compressed-tensors' current packing of one row: field i at bits [i·b, (i+1)·b) of
    one little-endian stream, cut into ⌈len·b / 32⌉ words (the last padded with 0)."""
    big = 0
    for i, field in enumerate(fields):
        big |= int(field) << (bits * i)
    return [(big >> (32 * w)) & 0xFFFF_FFFF for w in range(-(-len(fields) * bits // 32))]


def per_word_row(fields, bits: int) -> list[int]:
    """The packing of releases before it: 32 // b fields per word, low bits first, the
    word's spare high bits 0."""
    per = 32 // bits
    words = []
    for start in range(0, len(fields), per):
        words.append(sum(int(f) << (bits * i) for i, f in enumerate(fields[start : start + per])))
    return words


def as_int32(rows: list[list[int]]) -> np.ndarray:
    return np.array(rows, dtype=np.uint64).astype(np.uint32).view(np.int32)


def pack_signed(values: np.ndarray, bits: int, packing: str = "dense") -> np.ndarray:
    """Signed [R, C] values packed along C: each plus 2^(b−1), then a row packer."""
    row = dense_row if packing == "dense" else per_word_row
    offset = 1 << (bits - 1)
    return as_int32([row([v + offset for v in r], bits) for r in values.tolist()])


def test_the_packers_follow_the_published_examples():
    # pack_to_int32's docstring: 8-bit [1, 2] -> unsigned [129, 130] -> 33409.
    assert pack_signed(np.array([[1, 2]]), 8).tolist() == [[33409]]
    # 4 bits: 8 nibbles per word, the first lowest.
    assert dense_row(range(1, 9), 4) == [0x87654321] == per_word_row(range(1, 9), 4)
    # 3 bits: dense lets field 10 straddle words 0 and 1; per_word starts a new word.
    fields = [0] * 10 + [0b111]
    assert dense_row(fields, 3) == [0b11 << 30, 0b1]
    assert per_word_row(fields, 3) == [0, 0b111]


# ------------------------------------------------------------ synthetic layers


def tile_of(strategy: str, n: int, k: int, group: int | None, block=(128, 128)):
    return {"tensor": (n, k), "channel": (1, k), "group": (1, group), "block": block}[strategy]


def ct_reference(q, z, s: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """compressed-tensors' _dequantize, per element: (q.to(S) - z.to(S)) * s in S, the
    scale and zero point of weight [n, k] being s[rows[n], cols[k]]; returned [K, N]."""
    si = torch.from_numpy(rows)[:, None], torch.from_numpy(cols)[None, :]
    v = torch.from_numpy(np.asarray(q)).to(s.dtype)
    if z is not None:
        v = v - torch.from_numpy(np.asarray(z))[si].to(s.dtype)
    return (v * s[si]).float().numpy().T


def random_scales(shape, scale_dtype: str, rng) -> torch.Tensor:
    return torch.from_numpy(rng.uniform(0.002, 0.03, shape)).to(TORCH_SCALES[scale_dtype])


def pack_quantized(
    bits, strategy, sym, n=20, k=96, group=32, act=False, packing="dense", zp_packed=True,
    scale_dtype="f16", seed=0,
):  # fmt: skip
    """(tensors, weights, reference [K, N]) of one pack-quantized layer."""
    rng = np.random.default_rng(seed)
    bh, bw = tile_of(strategy, n, k, group)
    grid = (-(-n // bh), -(-k // bw))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = rng.integers(lo, hi + 1, (n, k))
    s = random_scales(grid, scale_dtype, rng)
    g = rng.permutation(k) // bw if act else np.arange(k) // bw
    tensors = {
        "weight_packed": pack_signed(q, bits, packing),
        "weight_shape": np.array([n, k]),
        "weight_scale": s if strategy != "tensor" else s.reshape(1),
    }
    z = None
    if not sym:
        z = rng.integers(lo, hi + 1, grid)
        packed_zp = strategy in ("group", "channel") and zp_packed
        tensors["weight_zero_point"] = (
            np.ascontiguousarray(pack_signed(z.T, bits, packing).T)
            if packed_zp
            else z.astype(np.int8).reshape(-1 if strategy == "tensor" else grid)
        )
    if act:
        tensors["weight_g_idx"] = torch.from_numpy(g.astype(np.int32))
    weights = {"num_bits": bits, "type": "int", "symmetric": sym, "strategy": strategy}
    if strategy == "group":
        weights["group_size"] = group
    rows = np.arange(n) // bh
    return tensors, weights, ct_reference(q, z, s, rows, g if strategy == "group" else 0 * g)


def same_bits(qw, expected: np.ndarray) -> None:
    np.testing.assert_array_equal(qw.dequantize().view(np.uint32), expected.view(np.uint32))


# ------------------------------------------------------------ pack-quantized


@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("strategy", ["group", "channel", "tensor"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_quantized_dequantizes_to_the_reference(bits, strategy, sym):
    k = 96 if strategy == "group" else 100  # 100: neither a word of codes nor 128
    scale_dtype = ("f16", "bf16", "f32")[bits % 3]
    tensors, weights, expected = pack_quantized(bits, strategy, sym, k=k, scale_dtype=scale_dtype)
    qw = from_compressed_tensors(tensors, weights, "pack-quantized")
    assert qw.shape == (k, 20) and qw.scale_dtype.name == scale_dtype
    assert qw.group_size == (32 if strategy == "group" else k) and qw.perm is None
    assert qw.dtype.name == f"{'i' if sym else 'u'}{bits}" and (qw.zeros is None) == sym
    same_bits(qw, expected)


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_the_per_word_packing_of_older_releases(bits):
    tensors, weights, expected = pack_quantized(bits, "group", False, k=160, packing="per_word")
    same_bits(from_compressed_tensors(tensors, weights, bit_packing="per_word"), expected)
    with pytest.raises(ValueError, match="bit_packing='per_word'"):
        from_compressed_tensors(tensors, weights)  # dense is the default


@pytest.mark.parametrize(("bits", "sym"), [(4, True), (3, False), (8, False)])
def test_act_order_g_idx_is_a_row_permutation(bits, sym):
    tensors, weights, expected = pack_quantized(bits, "group", sym, k=128, act=True, seed=3)
    qw = from_compressed_tensors(tensors, weights)
    assert qw.perm is not None
    g = tensors["weight_g_idx"].numpy()
    np.testing.assert_array_equal(g[qw.perm], np.arange(128) // 32)
    same_bits(qw, expected)


def test_g_idx_of_minus_ones_means_column_order_and_unpacked_zero_points_read():
    tensors, weights, expected = pack_quantized(4, "group", False, zp_packed=False, seed=5)
    tensors["weight_g_idx"] = np.full(96, -1, np.int32)
    qw = from_compressed_tensors(tensors, weights)
    assert qw.perm is None
    same_bits(qw, expected)


def test_an_all_zero_zero_point_of_a_symmetric_layer_is_accepted_others_refused():
    tensors, weights, expected = pack_quantized(4, "group", True, seed=6)
    tensors["weight_zero_point"] = np.zeros((20, 3), np.int8)  # older releases kept it
    same_bits(from_compressed_tensors(tensors, weights), expected)
    tensors["weight_zero_point"][4, 1] = 2
    with pytest.raises(ValueError, match=r"symmetric=True.*holds 2.*symmetric=False"):
        from_compressed_tensors(tensors, weights)


# ------------------------------------------------------------ unpacked int and FP8


def test_int8_w8a8_ignores_activation_scales_with_a_warning():
    rng = np.random.default_rng(7)
    q = rng.integers(-128, 128, (24, 72))
    s = random_scales((24, 1), "bf16", rng)
    tensors = {"weight": q.astype(np.int8), "weight_scale": s, "input_scale": np.ones(1)}
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"}
    with pytest.warns(ActivationQuantizationWarning, match="input_scale.*weight-only") as w:
        qw = from_compressed_tensors(tensors, weights, "int-quantized")
    assert w[0].message.names == ("input_scale",)
    same_bits(qw, ct_reference(q, None, s, np.arange(24), np.zeros(72, np.int64)))


def test_int_quantized_asymmetric_tensor_and_narrow_codes():
    rng = np.random.default_rng(8)
    q = rng.integers(-8, 8, (24, 72))
    z = np.array([[-3]])
    s = random_scales((1, 1), "f16", rng)
    tensors = {"weight": q.astype(np.int8), "weight_scale": s.reshape(1), "weight_zero_point": z}
    weights = {"num_bits": 4, "symmetric": False}  # no strategy, no group: "tensor"
    qw = from_compressed_tensors(tensors, weights)
    assert qw.dtype.name == "u4" and qw.group_size == 72
    same_bits(qw, ct_reference(q, z, s, np.zeros(24, np.int64), np.zeros(72, np.int64)))
    tensors["weight"] = (q * 3).astype(np.int8)
    with pytest.raises(ValueError, match=r"4-bit codes lie in \[-8, 7\], got -24\.\.21"):
        from_compressed_tensors(tensors, weights)


def fp8_codes(shape, rng) -> np.ndarray:
    """Random float8_e4m3fn codes, NaN (0x7F, 0xFF) left out."""
    codes = rng.integers(0, 256, shape).astype(np.uint8)
    return np.where((codes & 0x7F) == 0x7F, 0x7E, codes).astype(np.uint8)


def fp8_reference(codes, s: torch.Tensor, rows, cols) -> np.ndarray:
    """compressed-tensors' FP8 dequantization: q.to(S) * s in S."""
    q = torch.from_numpy(codes).view(torch.float8_e4m3fn).to(s.dtype)
    return (
        (q * s[torch.from_numpy(rows)[:, None], torch.from_numpy(cols)[None, :]]).float().numpy().T
    )


@pytest.mark.parametrize(
    ("strategy", "scale_dtype", "n", "k"),
    [("tensor", "f32", 24, 100), ("channel", "bf16", 24, 100), ("group", "f16", 24, 256),
     ("block", "f32", 200, 300)],
)  # fmt: skip
def test_fp8_weight_only_dequantizes_to_the_reference(strategy, scale_dtype, n, k):
    rng = np.random.default_rng(9)
    codes = fp8_codes((n, k), rng)
    bh, bw = tile_of(strategy, n, k, 128)
    s = random_scales((-(-n // bh), -(-k // bw)), scale_dtype, rng)
    weights = {"type": "float", "num_bits": 8, "strategy": strategy}
    weights |= {"group": {"group_size": 128}, "block": {"block_structure": [128, 128]}}.get(
        strategy, {}
    )
    fp8 = torch.from_numpy(codes).view(torch.float8_e4m3fn)
    tensors = {"weight": fp8, "weight_scale": s.reshape(1) if strategy == "tensor" else s}
    qw = from_compressed_tensors(tensors, weights, "float-quantized")
    assert qw.dtype.name == "f8e4m3" and qw.zeros is None and qw.shape == (k, n)
    rows, cols = np.arange(n) // bh, np.arange(k) // bw
    same_bits(qw, fp8_reference(codes, s, rows, cols))


def test_deepseek_weight_scale_inv_blocks_become_group_scales_along_k():
    rng = np.random.default_rng(10)
    n, k = 200, 300  # ⌈N / 128⌉ = 2, ⌈K / 128⌉ = 3: a short last block each way
    codes = fp8_codes((n, k), rng)
    s = random_scales((2, 3), "f32", rng)
    weight = codes.view(ml_dtypes.float8_e4m3fn)  # numpy input, as safetensors' numpy API
    qw = from_compressed_tensors({"weight": weight, "weight_scale_inv": s.numpy()})
    assert qw.group_size == 128 and qw.scale_codes.shape == (3, n)
    same_bits(qw, fp8_reference(codes, s, np.arange(n) // 128, np.arange(k) // 128))
    with pytest.raises(
        ValueError, match=r"weight_scale_inv must have shape \[2, 3\].*got \[2, 2\]"
    ):
        from_compressed_tensors({"weight": weight, "weight_scale_inv": s.numpy()[:, :2]})


def test_block_padded_weights_are_cropped_to_weight_shape_original():
    rng = np.random.default_rng(11)
    n, k = 130, 200
    padded = fp8_codes((256, 256), rng)
    s = random_scales((2, 2), "bf16", rng)
    tensors = {
        "weight": torch.from_numpy(padded).view(torch.float8_e4m3fn),
        "weight_scale": s,
        "weight_shape_original": torch.tensor([n, k]),
    }
    weights = {"type": "float", "strategy": "block", "block_structure": "128x128"}
    qw = from_compressed_tensors(tensors, weights)
    assert qw.shape == (k, n)
    expected = fp8_reference(padded[:n, :k], s, np.arange(n) // 128, np.arange(k) // 128)
    same_bits(qw, expected)


# ------------------------------------------------------------ bad inputs


def _bad(update: dict, weights_update: dict | None = None, **kwargs):
    tensors, weights, _ = pack_quantized(4, "group", False, seed=12)
    tensors.update(update)
    weights.update(weights_update or {})
    return lambda: from_compressed_tensors(tensors, weights, **kwargs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (_bad({"weight_scale": np.ones((20, 2), np.float16)}),
         r"weight_scale must have shape \[20, 3\].*got \[20, 2\]"),
        (_bad({}, {"observers": "minmax"}), r"weights: unknown field 'observers'"),
        (_bad({}, format="nvfp4-pack-quantized"), r"format: expected one of.*got 'nvfp4"),
        (_bad({"weight_global_scale": np.ones(1)}), r"unexpected 'weight_global_scale'.*NVFP4"),
        (_bad({}, {"dynamic": True}), r"dynamic must be False for weights"),
        (_bad({}, {"group_size": 64}), r"group_size 64 must divide K = 96"),
        (_bad({}, {"strategy": "tensor_group"}), r"strategy must be one of.*'tensor_group'"),
        (_bad({}, {"type": "float", "num_bits": 4}), r"float weights are float8_e4m3fn.*NVFP4"),
        (_bad({}, bit_packing="tight"), r"bit_packing: expected 'dense' or 'per_word', got 'tight'"),
        (_bad({"weight_packed": np.zeros((20, 11), np.int32)}),
         r"weight_packed must be int32 \[20, 12\].*got shape \[20, 11\]"),
        (_bad({"weight_shape": np.array([20])}), r"weight_shape must be \[N, K\]"),
    ],
)  # fmt: skip
def test_bad_inputs_name_the_parameter_what_was_expected_and_given(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_missing_zero_point_and_g_idx_outside_group_strategy_are_refused():
    tensors, weights, _ = pack_quantized(4, "group", False, seed=12)
    del tensors["weight_zero_point"]
    with pytest.raises(ValueError, match=r"weight_zero_point is required.*symmetric=False"):
        from_compressed_tensors(tensors, weights)
    tensors, weights, _ = pack_quantized(4, "channel", True, seed=12)
    tensors["weight_g_idx"] = np.random.default_rng(0).permutation(96) // 32
    with pytest.raises(ValueError, match="weight_g_idx: act order needs strategy 'group', got"):
        from_compressed_tensors(tensors, weights)


def test_float_codes_take_no_zero_point_and_the_weight_must_be_fp8():
    codes = torch.from_numpy(fp8_codes((8, 16), np.random.default_rng(0)))
    weights = {"type": "float", "symmetric": False, "strategy": "channel"}
    tensors = {"weight": codes.view(torch.float8_e4m3fn), "weight_scale": torch.ones(8, 1)}
    with pytest.raises(ValueError, match="float codes take no zero point"):
        from_compressed_tensors({**tensors, "weight_zero_point": torch.zeros(8, 1)}, weights)
    with pytest.raises(TypeError, match=r"weight must be float8_e4m3fn codes, got torch.uint8"):
        from_compressed_tensors({**tensors, "weight": codes}, {**weights, "symmetric": True})
    as_int = {**weights, "type": "int", "symmetric": True}
    with pytest.raises(ValueError, match=r"weight holds float8 codes, but weights type is 'int'"):
        from_compressed_tensors(tensors, as_int)
    with pytest.raises(ValueError, match=r"type 'int' does not match format 'float-quantized'"):
        from_compressed_tensors(tensors, as_int, "float-quantized")


# ------------------------------------------------------------ GPTQ v2


def gptq_v2(bits: int, sym: bool, k=128, n=32, group=32, seed=0):
    """A GPTQ v2 layer: qweight packed along K and qzeros along N as little-endian
    streams of int32 words, the zero points stored as they are (0 included)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 1 << bits, (k, n))
    z = (
        np.full((k // group, n), 1 << (bits - 1))
        if sym
        else rng.integers(0, 1 << bits, (k // group, n))
    )
    z[0, 0] = 1 << (bits - 1) if sym else 0  # a zero point of 0, which v1 cannot store
    s = rng.uniform(0.001, 0.05, (k // group, n)).astype(np.float16)
    qweight = np.ascontiguousarray(as_int32([dense_row(q[:, c], bits) for c in range(n)]).T)
    qzeros = as_int32([dense_row(row, bits) for row in z])
    rows = np.arange(k) // group
    expected = ((q - z[rows]).astype(np.float16) * s[rows]).astype(np.float32)
    return (qweight, qzeros, s), expected


@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_v2_zero_points_are_stored_as_they_are(bits, sym):
    (qweight, qzeros, s), expected = gptq_v2(bits, sym, seed=bits)
    qw = from_gptq(qweight, qzeros, s, bits=bits, sym=sym, checkpoint_format="gptq_v2")
    same_bits(qw, expected)
    if not sym:  # the same words read as v1 take every zero point one higher
        v1 = from_gptq(qweight, qzeros, s, bits=bits, sym=False)
        np.testing.assert_array_equal(v1.zeros, qw.zeros + 1)


def test_gptq_checkpoint_format_is_checked():
    (qweight, qzeros, s), _ = gptq_v2(4, False)
    with pytest.raises(ValueError, match=r"checkpoint_format: expected one of 'gptq', 'gptq_v2'"):
        from_gptq(qweight, qzeros, s, sym=False, checkpoint_format="v2")


# ------------------------------------------------------------ matmul, end to end


def check_matmul(qw, w_ref: np.ndarray, m: int = 3, seed: int = 0) -> None:
    """quant.matmul on the CPU backend against float64 x @ W, W the reference weights."""
    x = np.random.default_rng(seed).standard_normal((m, qw.shape[0])).astype(np.float16)
    y = quant.matmul(x, qw)
    x64 = x.astype(np.float64)
    expected = x64 @ w_ref.astype(np.float64)
    error = np.abs(y.astype(np.float64) - expected)
    allowed = bound(x64, w_ref.astype(np.float64), expected, f16)
    assert (error <= allowed).all(), f"error {error.max():.3g} over the bound"


def test_matmul_of_a_pack_quantized_layer():
    tensors, weights, expected = pack_quantized(4, "group", False, n=40, k=128, act=True)
    check_matmul(from_compressed_tensors(tensors, weights), expected)


def test_matmul_of_an_fp8_block_layer_with_its_scales_made_f16():
    rng = np.random.default_rng(13)
    codes = fp8_codes((72, 200), rng)
    s = (2.0 ** rng.integers(-12, -6, (1, 2))).astype(np.float32)  # exact in f16
    tensors = {"weight": codes.view(ml_dtypes.float8_e4m3fn), "weight_scale_inv": s}
    qw = from_compressed_tensors(tensors)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # exact: no ScaleRoundingWarning
        qw16 = qw.with_scale_dtype("f16")
    ref = fp8_reference(codes, torch.from_numpy(s), np.zeros(72, np.int64), np.arange(200) // 128)
    check_matmul(qw16, ref)


def test_matmul_of_a_gptq_v2_layer():
    (qweight, qzeros, s), expected = gptq_v2(3, False, k=128, n=32)
    check_matmul(
        from_gptq(qweight, qzeros, s, bits=3, sym=False, checkpoint_format="gptq_v2"), expected
    )


# ------------------------------------------------------------ torch state dicts


def test_a_compressed_tensors_state_dict_round_trips_through_quant_linear():
    tensors, weights, expected = pack_quantized(4, "group", False, n=24, k=64, seed=14)
    stem = "model.layers.0.mlp.up_proj."
    sd = {stem + name: torch.as_tensor(v) for name, v in tensors.items()}
    sd[stem + "bias"] = torch.arange(24, dtype=torch.float16)
    sd["model.layers.0.mlp.up_proj_b.weight_packed"] = torch.zeros(1)  # a sibling: not read
    sd[stem + "inner.weight"] = torch.zeros(1)  # a child module's: not read
    layer = QuantLinear.from_compressed_tensors_state_dict(sd, stem[:-1], weights)
    assert (layer.in_features, layer.out_features) == (64, 24)
    same_bits(layer.qweight, expected)
    torch.testing.assert_close(layer.bias, sd[stem + "bias"], rtol=0, atol=0)
    other = QuantLinear.from_compressed_tensors_state_dict(
        {k: v for k, v in sd.items() if k != stem + "weight_zero_point"}
        | {stem + "weight_scale": sd[stem + "weight_scale"] * 2},
        stem,
        {**weights, "symmetric": True},
    )
    other.load_state_dict(layer.state_dict())
    same_bits(other.qweight, expected)
    with pytest.raises(KeyError, match=r"no tensors under prefix 'model.layers.1'"):
        QuantLinear.from_compressed_tensors_state_dict(sd, "model.layers.1", weights)


def test_an_fp8_state_dict_takes_the_layers_scale_type():
    rng = np.random.default_rng(15)
    codes = fp8_codes((16, 128), rng)
    s = torch.from_numpy((2.0 ** rng.integers(-10, -5, (16, 1))).astype(np.float32))
    sd = {"fc.weight": torch.from_numpy(codes).view(torch.float8_e4m3fn), "fc.weight_scale": s}
    weights = {"type": "float", "strategy": "channel"}
    ref = fp8_reference(codes, s, np.arange(16), np.zeros(128, np.int64))
    for scale_dtype, expected in ((None, "f16"), ("bf16", "bf16")):
        layer = QuantLinear.from_compressed_tensors_state_dict(
            sd, "fc", weights, scale_dtype=scale_dtype
        )
        assert layer.qweight.scale_dtype.name == expected
        same_bits(layer.qweight, ref)  # powers of two: exact in either type


def test_a_gptq_v2_state_dict_through_from_gptq_state_dict():
    (qweight, qzeros, s), expected = gptq_v2(4, False, k=64, n=32, seed=16)
    sd = {"p.qweight": qweight, "p.qzeros": qzeros, "p.scales": s}
    sd = {k: torch.from_numpy(v) for k, v in sd.items()}
    layer = QuantLinear.from_gptq_state_dict(sd, "p", sym=False, checkpoint_format="gptq_v2")
    same_bits(layer.qweight, expected)
    copy = QuantLinear.from_gptq_state_dict(sd, "p", sym=False)  # v1: another weight
    assert not np.array_equal(copy.qweight.dequantize(), expected)
    copy.load_state_dict(layer.state_dict())
    same_bits(copy.qweight, expected)
