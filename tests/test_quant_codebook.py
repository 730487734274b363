"""The codebook formats of tilelang.quant (NF4, bitsandbytes' FP4, a user's table):
quantization against a brute-force nearest entry, the exact arithmetic against a table
lookup written here, the matmul kernels on the CPU backend and their GPU builds, and
bitsandbytes checkpoints against a dequantization written from its published formula."""

import json

import ml_dtypes
import numpy as np
import pytest

import tilelang.quant as tq
from tilelang import dtypes

#: bitsandbytes' get_4bit_type("nf4") and ("fp4") (bitsandbytes/functional.py), typed
#: in again from its source: float32 tensors divided by their largest |value|.
BNB_NF4 = np.float32(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
)  # fmt: skip
BNB_FP4 = np.float32([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3])
BNB_FP4 = BNB_FP4 / np.abs(BNB_FP4).max()
TABLES = {"nf4": BNB_NF4, "fp4_bnb": BNB_FP4}
NUMPY = {"f16": np.float16, "bf16": ml_dtypes.bfloat16, "f32": np.float32}


def rounded(values, t):
    """float64 values rounded once to the float type t (ml_dtypes / numpy casts)."""
    return np.asarray(values, np.float64).astype(NUMPY[t]).astype(np.float64)


def oracle(w, table, group, scale_dtype):
    """(codes, dequantized) by the spec: s = round_S(absmax) per group, the nearest
    entry of the table held in S by brute force (argmin: the first, smaller code, on
    ties), w = round_S(table_S[q] · s)."""
    k, n = w.shape
    table_s = rounded(table, scale_dtype)
    blocks = w.astype(np.float64).reshape(k // group, group, n)
    s = rounded(np.abs(blocks).max(axis=1), scale_dtype)[:, None, :]
    quotient = np.divide(blocks, s, out=np.zeros_like(blocks), where=s != 0)
    codes = np.abs(quotient[..., None] - table_s).argmin(axis=-1)
    return codes.reshape(k, n), rounded(table_s[codes] * s, scale_dtype).reshape(k, n)


def weights(k=128, n=40, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_t(5, (k, n)) * 0.05).astype(np.float32)


def test_the_fixed_tables_are_bitsandbytes():
    assert np.array_equal(np.float32(tq.FORMATS["nf4"].table), BNB_NF4)
    fp4 = np.float32(tq.FORMATS["fp4_bnb"].table)
    assert np.array_equal(fp4, BNB_FP4) and np.signbit(fp4[8])


@pytest.mark.parametrize(
    "fmt, scale_dtype, group",
    [("nf4", "f16", 64), ("nf4", "bf16", 32), ("fp4_bnb", "f32", 64), ("fp4_bnb", "f16", -1)],
)
def test_quantize_takes_the_nearest_entry_and_dequantizes_exactly(fmt, scale_dtype, group):
    w = weights()
    qw = tq.quantize(w, format=fmt, group_size=group, scale_dtype=scale_dtype)
    codes, expected = oracle(w, TABLES[fmt], w.shape[0] if group == -1 else group, scale_dtype)
    assert np.array_equal(qw.plain_codes(), codes)
    assert np.array_equal(qw.dequantize().astype(np.float64), expected)
    assert qw.dtype == dtypes.u4 and qw.group_size == (128 if group == -1 else group)
    assert f"({fmt}, u4 [128, 40]" in repr(qw) and "table of 16" in repr(qw)
    assert qw.error(w)["relative"] < 0.2  # 4 bits: NF4 about 0.09, FP4 0.16


def test_a_user_table_unsorted_takes_the_fewest_bits():
    table = [0.75, -1.0, 0.0, 0.25, -0.3]
    w = weights(n=24)
    qw = tq.quantize(w, format="codebook", codebook=table)
    assert qw.dtype == dtypes.u3 and qw.group_size == 64
    padded = table + [table[-1]] * 3  # past the table: its last value again, never chosen
    codes, expected = oracle(w, padded, 64, "f16")
    assert codes.max() < len(table)
    assert np.array_equal(qw.plain_codes(), codes)
    assert np.array_equal(qw.dequantize().astype(np.float64), expected)
    assert np.array_equal(qw.table, rounded(padded, "f16"))
    wide = tq.quantize(w, "u8", format="codebook", codebook=np.linspace(-1, 1, 200))
    assert wide.dtype == dtypes.u8 and wide.table.shape == (256,)


def test_ties_and_equal_entries_go_to_the_smaller_code():
    # One group per column: absmax 1, so w / s is w; 0.25 is halfway between 0 and 0.5.
    w = np.array([[1.0], [0.25], [0.0], [-0.25]] * 8, np.float32)
    for table, tie in (([0.0, 0.5, 1.0, -0.5], 0), ([0.5, 0.0, 1.0, -0.5], 0)):
        q = tq.quantize(w, format="codebook", codebook=table, group_size=32).plain_codes()
        assert q[1, 0] == tie and q[3, 0] == min(table.index(0.0), table.index(-0.5))
    fp4 = tq.quantize(w, format="fp4_bnb", group_size=32).plain_codes()
    assert fp4[2, 0] == 0  # 0 and -0 are equal entries: code 0, not 8


def test_an_all_zero_group_gets_scale_zero():
    w = weights(k=64, n=8)
    w[:, 3] = 0
    qw = tq.quantize(w, format="nf4")
    assert qw.scales[0, 3] == 0 and not qw.dequantize()[:, 3].any()
    assert qw.plain_codes()[0, 3] == 7  # NF4's 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "codebook"}, "needs the table"),
        ({"format": "codebook", "codebook": np.zeros(257)}, "2 to 256"),
        ({"format": "codebook", "codebook": [0.0, np.inf]}, "finite"),
        ({"format": "nf4", "codebook": [0.0, 1.0]}, "format='codebook'"),
        ({"format": "nf4", "zero_point": True}, "zero_point"),
        ({"format": "nf4", "group_size": 48}, "power of two from 32 to 4096"),
        ({"format": "nf4", "dtype": "u8"}, "u4 codes"),
        ({"format": "codebook", "codebook": [0.0, 1.0, 2.0], "dtype": "i4"}, "u2..u8"),
        ({"format": "codebook", "codebook": np.arange(5.0), "dtype": "u2"}, "indexes 4"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tq.quantize(weights(), **kwargs)


def test_the_table_is_checked_saved_and_converted(tmp_path):
    qw = tq.quantize(weights(), format="nf4")
    for path in (tmp_path / "w.npz",):
        qw.save(path)
        back = tq.QuantizedWeight.load(path)
        assert back.format == "nf4" and np.array_equal(back.table_codes, qw.table_codes)
        assert np.array_equal(back.dequantize(), qw.dequantize())
    arrays = qw.arrays()
    with pytest.raises(ValueError, match="table_codes: nf4 needs its table"):
        tq.QuantizedWeight.from_arrays({**arrays, "table_codes": None})
    with pytest.raises(ValueError, match="fixed"):
        tq.QuantizedWeight.from_arrays({**arrays, "table_codes": arrays["table_codes"][::-1]})
    old = tq.quantize(weights(), "u4")  # a file without a table still loads
    old.save(tmp_path / "u4.npz")
    assert tq.QuantizedWeight.load(tmp_path / "u4.npz").table_codes is None
    with pytest.raises(ValueError, match="has no table"):
        tq.QuantizedWeight.from_arrays({**old.arrays(), "table_codes": arrays["table_codes"]})
    with pytest.warns(tq.ScaleRoundingWarning):
        bf = qw.with_scale_dtype("bf16")
    assert np.array_equal(bf.table, rounded(BNB_NF4, "bf16"))  # once from the exact table


def bound(x, w, ot):
    """|y − x @ W|: K + 2 f32 roundings of the f32 accumulation and the epilogue, plus
    one rounding to the output type (f16: 2^-11, bf16: 2^-8 relative)."""
    magnitude = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    unit = 2.0**-11 if ot == "f16" else 2.0**-8
    return (x.shape[1] + 2) * 2.0**-24 * magnitude + unit * magnitude + 1e-30


@pytest.mark.parametrize("ot", ["f16", "bf16"])
@pytest.mark.parametrize("m", [1, 16, 128])
def test_matmul_on_the_cpu_backend(m, ot):
    k, n = 256, 136  # N not a multiple of the 128-column tile
    qw = tq.quantize(weights(k, n, seed=m), format="nf4", scale_dtype=ot, group_size=64)
    x = np.random.default_rng(m).standard_normal((m, k)).astype(NUMPY[ot])
    y = np.asarray(tq.matmul(x, qw), np.float64)
    w = qw.dequantize()
    expected = x.astype(np.float64) @ w.astype(np.float64)
    assert np.all(np.abs(y - expected) <= bound(x, w, ot))
    assert tq.plan(qw, m, "cpu", x_dtype=ot).path == {1: "gemv", 16: "small_batch", 128: "gemm"}[m]


def test_matmul_of_a_user_table_and_of_fp4():
    k, n = 128, 64
    x = np.random.default_rng(1).standard_normal((3, k)).astype(np.float16)
    for qw in (
        tq.quantize(weights(k, n), format="codebook", codebook=[0.5, -1, 0, 1, -0.5, 0.1]),
        tq.quantize(weights(k, n), format="fp4_bnb", group_size=-1),
    ):
        w = qw.dequantize()
        y = np.asarray(tq.matmul(x, qw), np.float64)
        assert np.all(np.abs(y - x.astype(np.float64) @ w.astype(np.float64)) <= bound(x, w, "f16"))


def test_the_kernels_need_scales_of_the_activations_type():
    qw = tq.quantize(weights(), format="nf4", scale_dtype="f32")
    with pytest.raises(TypeError, match="with_scale_dtype"):
        tq.matmul(np.zeros((1, 128), np.float16), qw)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_gpu_builds_spill_nothing(target):
    qw = tq.quantize(weights(512, 256), format="nf4")
    for m in (1, 128):
        plan = tq.plan(qw, m, target)
        for launch in plan.launches:
            assert launch.compiled.resources.spill_store_bytes == 0, (m, plan.choice)
            assert launch.constexprs["KIND"] == "codebook" and launch.constexprs["TABLE"] == 16


def test_experts_refuse_codebooks():
    with pytest.raises(ValueError, match="codebook formats"):
        tq.quantize_experts(np.zeros((2, 128, 128), np.float32), format="nf4")


# --------------------------------------------------------------------- bitsandbytes


def bnb_pack(codes_flat):
    """Two codes a byte, the first in the high nibble (bitsandbytes' kQuantizeBlockwise)."""
    padded = np.append(codes_flat, 0) if codes_flat.size % 2 else codes_flat
    return ((padded[0::2] << 4) | padded[1::2]).astype(np.uint8).reshape(-1, 1)


def bnb_dequantize(codes_flat, absmax, table, blocksize, shape):
    """bitsandbytes' dequantize_4bit in float32: code[q_i] · absmax[i // blocksize], as
    the Linear's weight [out, in]."""
    blocks = np.arange(codes_flat.size) // blocksize
    return (table[codes_flat] * absmax[blocks]).reshape(shape)


@pytest.mark.parametrize("quant_type, blocksize", [("nf4", 64), ("fp4", 128), ("nf4", 32)])
def test_from_bnb_is_bit_exact(quant_type, blocksize):
    out_features, in_features = 48, 256
    rng = np.random.default_rng(blocksize)
    codes = rng.integers(0, 16, out_features * in_features).astype(np.uint8)
    absmax = (rng.random(codes.size // blocksize) * 0.1).astype(np.float32)
    table = BNB_NF4 if quant_type == "nf4" else BNB_FP4
    qw = tq.from_bnb(
        bnb_pack(codes), absmax, table, shape=(out_features, in_features),
        blocksize=blocksize, quant_type=quant_type,
    )  # fmt: skip
    expected = bnb_dequantize(codes, absmax, table, blocksize, (out_features, in_features))
    assert qw.shape == (in_features, out_features)
    assert np.array_equal(qw.dequantize(), expected.T)
    f16 = tq.from_bnb(bnb_pack(codes), absmax, shape=(48, 256), blocksize=blocksize,
                      quant_type=quant_type, dtype="f16")  # fmt: skip
    assert (
        f16.scale_dtype == dtypes.f16 and f16.format == {"nf4": "nf4", "fp4": "fp4_bnb"}[quant_type]
    )


def nested_state(rng, blocks, nested_blocksize):
    """Double quantization's pieces: u8 codes, the 256-entry map, per-block scales."""
    codes = rng.integers(0, 256, blocks).astype(np.uint8)
    table = np.sort(rng.uniform(-1, 1, 256)).astype(np.float32)
    scales = (rng.random(-(-blocks // nested_blocksize)) * 0.05).astype(np.float32)
    return codes, table, scales, np.float32(0.031)


def test_from_bnb_with_double_quantization():
    out_features, in_features, blocksize = 40, 512, 64
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, out_features * in_features).astype(np.uint8)
    blocks = codes.size // blocksize
    a, table, scales, offset = nested_state(rng, blocks, 256)
    absmax = table[a] * scales[np.arange(blocks) // 256] + offset  # float32 throughout
    qw = tq.from_bnb(
        bnb_pack(codes), a, BNB_NF4, shape=(out_features, in_features), nested_absmax=scales,
        nested_quant_map=table, nested_offset=float(offset),
    )  # fmt: skip
    expected = bnb_dequantize(codes, absmax, BNB_NF4, blocksize, (out_features, in_features))
    assert np.array_equal(qw.dequantize(), expected.T)


def test_from_bnb_state_dict_reads_the_transformers_keys():
    out_features, in_features, blocksize = 32, 256, 64
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 16, out_features * in_features).astype(np.uint8)
    blocks = codes.size // blocksize
    a, table, scales, offset = nested_state(rng, blocks, 256)
    meta = {
        "quant_type": "nf4", "blocksize": blocksize, "dtype": "bfloat16",
        "shape": [out_features, in_features], "nested_blocksize": 256,
        "nested_dtype": "float32", "nested_offset": float(offset),
    }  # fmt: skip
    p = "model.layers.0.mlp.up_proj.weight"
    state = {
        p: bnb_pack(codes), f"{p}.absmax": a, f"{p}.quant_map": BNB_NF4,
        f"{p}.nested_absmax": scales, f"{p}.nested_quant_map": table,
        f"{p}.quant_state.bitsandbytes__nf4": np.frombuffer(json.dumps(meta).encode(), np.uint8),
    }  # fmt: skip
    qw = tq.from_bnb_state_dict(state, "model.layers.0.mlp.up_proj")
    absmax = table[a] * scales[np.arange(blocks) // 256] + offset
    expected = bnb_dequantize(codes, absmax, BNB_NF4, blocksize, (out_features, in_features))
    assert qw.format == "nf4" and np.array_equal(qw.dequantize(), expected.T)
    with pytest.raises(KeyError, match="bitsandbytes__nf4"):
        tq.from_bnb_state_dict(state, "model.layers.1.mlp.up_proj")
    # FSDP-QLoRA's quant_storage: the same bytes held as wider words
    for storage in (np.float32, np.float16, np.int8):
        stored = {**state, p: state[p].reshape(-1).view(storage).reshape(-1, 1)}
        again = tq.from_bnb_state_dict(stored, "model.layers.0.mlp.up_proj")
        assert np.array_equal(again.dequantize(), qw.dequantize()), storage


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": (4, 96)}, "not a multiple of blocksize 64"),
        ({"shape": (4, 128), "quant_type": "int4"}, "quant_type"),
        ({"shape": (4, 128), "quant_map": BNB_FP4}, "quant_map must be"),
        ({"shape": (8, 128)}, "must hold 512 bytes"),
    ],
)
def test_from_bnb_refuses_what_it_cannot_describe(kwargs, message):
    packed = np.zeros((256, 1), np.uint8)
    absmax = np.ones(8, np.float32)
    quant_map = kwargs.pop("quant_map", None)
    with pytest.raises(ValueError, match=message):
        tq.from_bnb(packed, absmax, quant_map, **kwargs)
