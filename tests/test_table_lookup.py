"""`tl.lookup`: a small on-chip table indexed by a tile of codes (the `lookup` instruction).

The oracle is numpy's fancy indexing, with an index outside the table reading zero
(the instruction's definition); the interpreter and the CPU backend must agree with it
bit for bit, for register and shared tables, several table and index dtypes, and index
tiles in several layouts (an mma B fragment among them)."""

import numpy as np
import pytest
from conftest import (
    assert_bitwise,
    assert_edit_rejected,
    assert_reported,
    assert_text_round_trips,
    run_both,
    statements,
)

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.printer import print_function
from tilelang.ir.visit import walk

FRAGMENT = tl.dot_layout("b", 16, 64, 64, warps=4)  # [64, 64] over 4 warps


def expected_lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    index = index.astype(np.int64)
    inside = (index >= 0) & (index < len(table))
    out = np.zeros(index.shape, table.dtype)
    out[inside] = table[index[inside]]
    return out


@tl.kernel(warps=4)
def lookup_1d(
    lut: tl.Tensor["T", "N"],
    q: tl.Tensor["IT", "L"],
    out: tl.Tensor["T", "L"],
    T: tl.constexpr = tl.f16,
    IT: tl.constexpr = tl.u8,
    N: tl.constexpr = 16,
    L: tl.constexpr = 512,
    SHARED: tl.constexpr = False,
):
    table = tl.load(lut, [0], [N])
    if SHARED:
        buf = tl.shared([N], T)
        buf.store(table)
        table = buf
    tl.store(out, [0], tl.lookup(table, tl.load(q, [0], [L])))


@tl.kernel(warps=4)
def lookup_2d(
    lut: tl.Tensor["T", "N"],
    q: tl.Tensor["IT", 64, 64],
    out: tl.Tensor["T", 64, 64],
    T: tl.constexpr = tl.f16,
    IT: tl.constexpr = tl.u8,
    N: tl.constexpr = 16,
    FRAG: tl.constexpr = False,
    SHARED: tl.constexpr = False,
):
    table = tl.load(lut, [0], [N])
    if SHARED:
        buf = tl.shared([N], T)
        buf.store(table)
        table = buf
    codes = tl.load(q, [0, 0], [64, 64], layout=FRAGMENT if FRAG else None)
    tl.store(out, [0, 0], tl.lookup(table, codes))


def _table(rng, dtype, entries):
    if dtype == tl.i8:
        return rng.integers(-128, 128, entries).astype(np.int8)
    np_dtype = np.float16 if dtype == tl.f16 else np.float32
    return rng.standard_normal(entries).astype(np_dtype)


def _codes(rng, index_dtype, entries, shape):
    """Codes of `index_dtype`: every entry of the table, and for i32 indices also some
    outside it on both sides."""
    if index_dtype == tl.u4:
        return rng.integers(0, 16, shape), lambda c: tl.pack_codes(c, tl.u4)
    if index_dtype == tl.u8:
        return rng.integers(0, 256, shape).astype(np.uint8), lambda c: c
    return rng.integers(-4, entries + 4, shape).astype(np.int32), lambda c: c


CASES = [
    (table_dtype, entries, index_dtype)
    for table_dtype in (tl.f16, tl.f32, tl.i8)
    for entries in (4, 16, 256)
    for index_dtype in (tl.u4, tl.u8, tl.i32)
]


@pytest.mark.parametrize(("table_dtype", "entries", "index_dtype"), CASES)
def test_lookup_matches_numpy_on_every_path(table_dtype, entries, index_dtype):
    rng = np.random.default_rng(entries)
    table = _table(rng, table_dtype, entries)
    codes, encode = _codes(rng, index_dtype, entries, (512,))
    expected = expected_lookup(table, codes)
    for shared in (False, True):
        compiled, interpreted = run_both(
            lookup_1d,
            (table, encode(codes)),
            (np.empty(512, table.dtype),),
            T=table_dtype,
            IT=index_dtype,
            N=entries,
            SHARED=shared,
        )
        assert_bitwise(interpreted, expected)
        assert_bitwise(compiled, interpreted)


@pytest.mark.parametrize("frag", [False, True])
@pytest.mark.parametrize("index_dtype", [tl.u4, tl.i32])
@pytest.mark.parametrize("shared", [False, True])
def test_lookup_in_2d_and_fragment_layouts(frag, index_dtype, shared):
    rng = np.random.default_rng(3)
    table = _table(rng, tl.f16, 16)
    codes, encode = _codes(rng, index_dtype, 16, (64, 64))
    compiled, interpreted = run_both(
        lookup_2d,
        (table, encode(codes)),
        (np.empty((64, 64), np.float16),),
        IT=index_dtype,
        FRAG=frag,
        SHARED=shared,
    )
    assert_bitwise(interpreted, expected_lookup(table, codes))
    assert_bitwise(compiled, interpreted)


def test_out_of_range_reads_zero_everywhere():
    table = np.arange(1, 9, dtype=np.float32)  # no entry is zero
    codes = np.array([-(2**31), -1, 0, 7, 8, 9, 2**31 - 1] * 64 + [3] * 64, np.int32)
    compiled, interpreted = run_both(
        lookup_1d, (table, codes), (np.empty(512, np.float32),), T=tl.f32, IT=tl.i32, N=8
    )
    expected = expected_lookup(table, codes)
    assert (expected[:7] == [0, 0, 1, 8, 0, 0, 0]).all()
    assert_bitwise(interpreted, expected)
    assert_bitwise(compiled, interpreted)


@tl.kernel(warps=4)
def lookup_into_dot(
    lut: tl.Tensor[tl.f16, 16],
    w: tl.Tensor[tl.u4, 64, 64],
    x: tl.Tensor[tl.f16, 16, 64],
    y: tl.Tensor[tl.f32, 16, 64],
):
    q = tl.load(w, [0, 0], [64, 64], layout=FRAGMENT)
    wk = tl.lookup(tl.load(lut, [0], [16]), q)
    tl.store(y, [0, 0], tl.dot(tl.load(x, [0, 0], [16, 64]), wk))


def test_lookup_takes_its_index_layout_with_no_relayout_before_the_dot():
    fn = lookup_into_dot.stages(target="sm_90a")["plan_registers"]
    (lookup,) = [i for i in walk(fn) if isinstance(i, ir.Lookup)]
    (dot,) = [i for i in walk(fn) if isinstance(i, ir.Dot)]
    assert lookup.result.type.layout == FRAGMENT
    assert dot.b == lookup.result  # the dot reads the lookup's result as it is
    assert not [i for i in walk(fn) if isinstance(i, ir.Relayout) and i.value == lookup.result]
    rng = np.random.default_rng(5)
    table, codes = _table(rng, tl.f16, 16), rng.integers(0, 16, (64, 64))
    x = rng.standard_normal((16, 64)).astype(np.float16)
    y = lookup_into_dot(table, tl.pack_codes(codes, tl.u4), x, np.empty((16, 64), np.float32))
    expected = x.astype(np.float64) @ table[codes].astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_compiles_without_spills_one_shared_read_per_element(target):
    compiled = lookup_2d.compile(target=target, FRAG=True, IT=tl.u4)
    assert compiled.resources.spill_store_bytes == 0
    assert compiled.resources.local_bytes == 0
    reads = statements(compiled, t.SharedLoad)  # the kernel's only shared reads
    assert len(reads) == 64 * 64 // 128  # every element a thread holds, one read


def test_text_round_trips():
    for stage in ("frontend", "plan_registers"):
        assert_text_round_trips(lookup_into_dot.stages(target="sm_90a")[stage])
        assert_text_round_trips(lookup_1d.stages(T=tl.f16, IT=tl.u8, SHARED=True)[stage])


@tl.kernel(warps=4)
def table_of_rank_2(lut: tl.Tensor[tl.f16, 4, 4], q: tl.Tensor[tl.u8, 64]):
    tl.lookup(tl.load(lut, [0, 0], [4, 4]), tl.load(q, [0], [64]))  # <- error


@tl.kernel(warps=4)
def float_index(lut: tl.Tensor[tl.f16, 16], q: tl.Tensor[tl.f16, 64]):
    tl.lookup(tl.load(lut, [0], [16]), tl.load(q, [0], [64]))  # <- error


@tl.kernel(warps=4)
def packed_table(lut: tl.Tensor[tl.u4, 16], q: tl.Tensor[tl.u8, 64]):
    tl.lookup(tl.load(lut, [0], [16]), tl.load(q, [0], [64]))  # <- error


@tl.kernel(warps=4)
def tensor_table(lut: tl.Tensor[tl.f16, 16], q: tl.Tensor[tl.u8, 64]):
    tl.lookup(lut, tl.load(q, [0], [64]))  # <- error


def test_errors_at_the_users_line():
    assert_reported(table_of_rank_2, "table", "rank 1", "[4, 4]")
    assert_reported(float_index, "index", "integer tile", "f16")
    assert_reported(packed_table, "whole bytes", "u4")
    assert_reported(tensor_table, "table", "tl.shared", "tensor")


def test_verifier_rules():
    text = print_function(lookup_1d.stages(T=tl.f16, IT=tl.u8)["frontend"])
    lookup = "lookup %lut_1, %q_1 : tile<f16, [512]>"
    assert_edit_rejected(text, lookup, lookup.replace("[512]", "[256]"), "index's shape")
    assert_edit_rejected(text, lookup, lookup.replace("f16, [512]", "f32, [512]"), "dtype f16")
    assert_edit_rejected(text, lookup, "lookup %q_1, %lut_1 : tile<f16, [512]>", "integer index")


def test_nf4_matmul_example_matches_numpy(example):
    nf4 = example("nf4_matmul")
    rng = np.random.default_rng(0)
    m, k, n = 3, 512, 256
    w = (rng.standard_t(4, (k, n)) * 0.02).astype(np.float32)
    codes, absmax = nf4.quantize_nf4(w)
    # the oracle: bitsandbytes' dequantization, written out in numpy
    weights = (nf4.NF4[codes].astype(np.float32) * np.repeat(absmax, 128, 0)).astype(np.float16)
    x = rng.standard_normal((m, k)).astype(np.float16)
    for split_k in (1, 2):
        y = nf4.run(x, codes, absmax, split_k=split_k)
        expected = x.astype(np.float64) @ weights.astype(np.float64)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
