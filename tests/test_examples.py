"""Every example through the reference interpreter against its numpy reference."""

import numpy as np
import pytest
from conftest import load_example
from hypothesis import given, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function

EXAMPLE_KERNELS = [
    ("vector_add", "vector_add", {}),
    ("vector_add", "vector_add", {"BLOCK": 128}),
    ("softmax", "softmax", {}),
    ("matmul", "matmul", {"BK": 16}),
    ("row_sum", "row_sum", {"T": tl.i32}),
    ("cumsum", "cumsum_rows", {"T": tl.f32}),
    ("quant_matmul", "quant_matmul", {}),
    ("quant_matmul", "quant_matmul", {"WT": tl.f6e3m2, "G": 32, "BK": 64}),
    ("quant_matmul", "quant_matmul", {"WT": tl.i3, "G": 128, "BK": 32}),
]


@pytest.mark.parametrize(("module", "kernel", "constexprs"), EXAMPLE_KERNELS)
def test_ir_text_round_trip(module, kernel, constexprs):
    fn = getattr(load_example(module), kernel).specialize(**constexprs)
    text = print_function(fn)
    assert parse_function(text) == fn
    assert print_function(parse_function(text)) == text


@pytest.mark.parametrize(
    "name",
    [
        "vector_add",
        "softmax",
        "matmul",
        "quant_matmul",
        "row_sum",
        "cumsum",
        "mamba_scan",
        "flash_attention",
    ],
)
def test_example_main_checks_itself(name, capsys):
    load_example(name).main()
    assert capsys.readouterr().out.strip()


def test_vector_add_never_touches_memory_past_the_end():
    vector_add = load_example("vector_add").vector_add
    backing = np.full(300, -7.0, np.float32)
    x = np.arange(100, dtype=np.float32)
    out = backing[:100]  # a view: the kernel must not write backing[100:]
    result = vector_add(x, x, out, BLOCK=64)
    assert result is out
    assert np.array_equal(backing[:100], 2 * x)
    assert np.all(backing[100:] == -7.0)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 700), block=st.sampled_from([16, 64, 256]))
def test_vector_add_random_lengths(n, block):
    vector_add = load_example("vector_add").vector_add
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    assert np.array_equal(vector_add(x, y, np.empty_like(x), BLOCK=block), x + y)


@settings(max_examples=12, deadline=None)
@given(
    m=st.integers(1, 20),
    n=st.integers(1, 300),
    bm=st.sampled_from([1, 4, 8]),
    bn=st.sampled_from([16, 64]),
)
def test_softmax_random_shapes(m, n, bm, bn):
    mod = load_example("softmax")
    x = np.random.default_rng(m * n).standard_normal((m, n)).astype(np.float32) * 3
    y = mod.softmax(x, np.empty_like(x), BM=bm, BN=bn)
    assert np.abs(y - mod.reference(x)).max() < 2e-6 * max(1, n // 64)


@settings(max_examples=10, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 70))
def test_matmul_random_shapes(m, n, k):
    mod = load_example("matmul")
    rng = np.random.default_rng(m + 100 * n + 10000 * k)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    c = mod.matmul(a, b, np.empty((m, n), np.float16), BM=16, BN=16, BK=16)
    expected = mod.reference(a, b).astype(np.float32)
    error = np.abs(c.astype(np.float32) - expected).max() / max(np.abs(expected).max(), 1e-3)
    assert error <= mod.tolerance(k)


WEIGHT_TYPES = [tl.dtype(f"u{b}") for b in range(1, 9)] + [tl.dtype(f"i{b}") for b in range(1, 9)]
WEIGHT_TYPES += [tl.f4e2m1, tl.f6e3m2, tl.f6e2m3, tl.f8e4m3, tl.f8e5m2, tl.f3e1m1]


GROUPS = [32, 64, 128]
# Every type at one group (in turn), and every group for a byte-aligned, a byte-crossing
# and a float type: a type's decoding and a group's scale indexing are separate code, so
# each is met without building all 66 pairs (4 s of LLVM each).
TYPE_GROUPS = [(t, GROUPS[i % 3]) for i, t in enumerate(WEIGHT_TYPES)]
TYPE_GROUPS += [(t, g) for t in (tl.u4, tl.i3, tl.f6e3m2) for g in GROUPS]


@pytest.mark.parametrize(("weight_type", "group"), sorted(set(TYPE_GROUPS), key=str), ids=str)
def test_quant_matmul_every_weight_type_and_group(weight_type, group):
    mod = load_example("quant_matmul")
    # BK = 64 puts a tile inside one group (G >= 64) or across several (G = 32).
    mod.check(16, 256, 64, weight_type, group, BK=64)


def test_every_weight_type_and_every_group_are_checked():
    assert {t for t, _ in TYPE_GROUPS} == set(WEIGHT_TYPES)
    for weight_type in (tl.u4, tl.i3, tl.f6e3m2):
        assert {g for t, g in TYPE_GROUPS if t == weight_type} == set(GROUPS)


@settings(max_examples=10, deadline=None)
@given(
    m=st.integers(1, 24),
    k=st.integers(1, 300),
    n=st.integers(1, 80),
    weight_type=st.sampled_from([tl.u4, tl.i4, tl.u3, tl.f4e2m1, tl.f8e4m3]),
    group=st.sampled_from([32, 64, 128]),
)
def test_quant_matmul_random_shapes(m, k, n, weight_type, group):
    load_example("quant_matmul").check(m, k, n, weight_type, group, BM=16, BN=32, BK=32)


def test_quant_matmul_dequantization_is_bit_exact():
    """With x = identity the kernel returns the dequantized weights themselves."""
    mod = load_example("quant_matmul")
    k = n = 64
    for weight_type in (tl.u4, tl.i3, tl.f4e2m1, tl.f6e3m2, tl.f8e4m3):
        _, w, s = mod.make_inputs(1, k, n, weight_type, 32)
        x = np.eye(k, dtype=np.float16)
        y = mod.quant_matmul(
            x, mod.pack_weights(w), s, np.zeros((k, n), np.float16), WT=weight_type, G=32
        )
        expected = w.unpack().astype(np.float16) * np.repeat(s, 32, axis=0)
        # Equal as values (the f32 sum turns -0 into +0), and no NaN anywhere.
        assert np.all(np.isfinite(y)) and np.array_equal(y, expected.astype(np.float16))


@pytest.mark.parametrize("dtype", [tl.i32, tl.f32])
def test_row_sum_and_cumsum(dtype):
    row_sum, cumsum = load_example("row_sum").row_sum, load_example("cumsum").cumsum_rows
    rng = np.random.default_rng(1)
    x = rng.integers(-50, 50, (13, 150)).astype(np.int32 if dtype == tl.i32 else np.float32)
    sums = row_sum(x, np.empty(13, x.dtype), T=dtype, BM=4, BN=32)
    scans = cumsum(x, np.empty_like(x), T=dtype, BM=4, BN=32)
    # Small integers: exact in f32 too, so both dtypes compare exactly.
    assert np.array_equal(sums, x.sum(axis=1))
    assert np.array_equal(scans, np.cumsum(x, axis=1))
