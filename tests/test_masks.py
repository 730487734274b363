"""Masks of every kind on `tl.load`, `tl.store` and `tl.atomic_add`, and scalar values
in scatter-additions.

Masked loads: boxes under random masks (vector runs partly selected), ragged prefixes,
broadcast row masks, packed u4 codes, gathers with a mask and rows outside the tensor;
masked-out elements read the fill. Scalar masks (a block-uniform u1 scalar, broadcast)
and Python bools for loads (tile and scalar), stores, atomic additions and
scatter-additions: True is no mask, False accesses nothing (no instruction at all).
Scatter-additions and scatters of a number or a runtime scalar, converted to the
tensor's dtype. Each on the interpreter and the CPU backend against numpy references
written from the definitions. Then what the lowering emits (whole runs stay vector
loads, partly selected runs read element by element), the pipeliner copying a masked
load with cp.async, its mask computed ahead, CUDA for sm_80 and sm_90, the
verifier and the errors.
"""

import re

import numpy as np
import pytest
from conftest import (
    NUMPY_OF,
    assert_reported,
    assert_text_round_trips,
    plain,
    runs,
    statements,
    values_of,
)

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.ir.verify import IRVerifyError, verify
from tilelang.ir.visit import walk

RNG = np.random.default_rng(20251207)
NUMPY = NUMPY_OF


def integral(rng, shape):
    """Whole-valued floats: sums and products of a few of them are exact in f16."""
    return rng.integers(-50, 50, shape)


def zeros_of(dtype: tl.DType, shape):
    if dtype.bits < 8:
        return tl.pack_codes(np.zeros(shape, np.uint8), dtype)
    return np.zeros(shape, NUMPY[dtype.name])


def instructions(kernel, **constexprs) -> list:
    return list(walk(kernel.specialize(**constexprs)))


# --------------------------------------------------------------------------- masked loads


@tl.kernel(warps=2)
def load_where(
    x: tl.Tensor["T", "M", "N"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 64,
):
    """x where keep is nonzero, 3 elsewhere: a mask that varies inside vector runs."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    selected = tl.load(keep, [bm * BM, bn * BN], [BM, BN]) != 0
    tl.store(
        out, [bm * BM, bn * BN], tl.load(x, [bm * BM, bn * BN], [BM, BN], mask=selected, fill=3)
    )


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u8, tl.i64, tl.u4], ids=str)
@pytest.mark.parametrize(("m", "n"), [(16, 128), (13, 70)])
def test_a_random_load_mask_reads_the_fill_where_it_fails(dtype, m, n):
    x = values_of(RNG, dtype, (m, n), floats=integral)
    keep = RNG.integers(0, 2, (m, n)).astype(np.uint8)
    expected = np.where(keep != 0, plain(x), 3)
    for run in runs(load_where):
        out = zeros_of(dtype, (m, n))
        run(x, keep, out, T=dtype)
        np.testing.assert_array_equal(plain(out), expected)


@tl.kernel(warps=1)
def load_prefix(
    x: tl.Tensor["T", "N"],
    out: tl.Tensor["T", "N"],
    limit: tl.i32,
    T: tl.constexpr = tl.f32,
    BLOCK: tl.constexpr = 128,
):
    """The first `limit` elements of each block of x, zeros after them."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tile = tl.load(x, [b * BLOCK], [BLOCK], mask=tl.arange(0, BLOCK) < limit)
    tl.store(out, [b * BLOCK], tile)


@pytest.mark.parametrize("dtype", [tl.f32, tl.u8, tl.u4], ids=str)
@pytest.mark.parametrize(("n", "limit"), [(512, 37), (300, 128), (256, 0)])
def test_a_ragged_load_mask_reads_a_prefix_of_each_block(dtype, n, limit):
    x = values_of(RNG, dtype, n, floats=integral)
    expected = np.where(np.arange(n) % 128 < limit, plain(x), 0)
    for run in runs(load_prefix):
        out = zeros_of(dtype, n)
        run(x, out, limit, T=dtype)
        np.testing.assert_array_equal(plain(out), expected)


def test_whole_runs_stay_vector_loads_and_cut_runs_read_element_by_element():
    """f32 in runs of 4 (16-byte loads): a run the mask cuts reads its selected elements
    one by one (4-byte loads), each predicated, so the others are never read."""
    compiled = load_prefix.compile(T=tl.f32)
    loads = [s for s in statements(compiled, t.GlobalLoad) if s.width in (4, 16)]
    assert {s.width for s in loads} == {4, 16}
    assert all(s.pred is not None for s in loads)  # nothing is read unconditionally
    stats = dict(compiled.thread.stats)
    assert stats["global_load_partial_run"] == stats["global_load_bytes_16"] == 1


@tl.kernel(warps=2)
def load_rows(
    x: tl.Tensor["T", "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    rows: tl.i32,
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """The first `rows` rows of each [BM, BN] box, -1 below: a [BM, 1] mask."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    selected = (tl.arange(0, BM) < rows)[:, None]
    tl.store(
        out, [bm * BM, bn * BN], tl.load(x, [bm * BM, bn * BN], [BM, BN], mask=selected, fill=-1)
    )


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16], ids=str)
def test_a_row_mask_broadcasts_over_the_loaded_tile(dtype):
    m, n = 21, 70
    x = values_of(RNG, dtype, (m, n), floats=integral)
    row = np.indices((m, n))[0]
    for run in runs(load_rows):
        out = zeros_of(dtype, (m, n))
        run(x, out, 3, T=dtype)
        np.testing.assert_array_equal(out, np.where(row % 8 < 3, x, -1).astype(out.dtype))


@tl.kernel(warps=2)
def gather_where(
    table: tl.Tensor["T", "R", "D"],
    rows: tl.Tensor[tl.i32, "V"],
    keep: tl.Tensor[tl.u8, "V"],
    out: tl.Tensor["T", "V", "D"],
    T: tl.constexpr = tl.f16,
    BV: tl.constexpr = 16,
    BD: tl.constexpr = 32,
):
    """out[v, c] = table[rows[v], c] where keep[v] and c % 3 != 1, 7 elsewhere (rows may
    be out of range): runs along a row partly selected."""
    bv, bd = tl.blocks(tl.cdiv(V, BV), tl.cdiv(D, BD))
    index = tl.load(rows, [bv * BV], [BV])
    columns = (tl.arange(0, BD) + bd * BD) % 3 != 1
    selected = (tl.load(keep, [bv * BV], [BV]) != 0)[:, None] & columns[None, :]
    tile = tl.load(table, [index[:, None], bd * BD], [BV, BD], mask=selected, fill=7)
    tl.store(out, [bv * BV, bd * BD], tile)


@pytest.mark.parametrize("dtype", [tl.f16, tl.f32, tl.u4], ids=str)
@pytest.mark.parametrize(("r", "v", "d"), [(9, 40, 64), (5, 16, 70)])
def test_a_masked_gather_reads_selected_rows_and_fills_the_rest(dtype, r, v, d):
    table = values_of(RNG, dtype, (r, d), floats=integral)
    rows = RNG.integers(-2, r + 2, v).astype(np.int32)  # some rows outside the table
    keep = RNG.integers(0, 2, v).astype(np.uint8)
    inside = (rows >= 0) & (rows < r)
    picked = plain(table)[np.clip(rows, 0, r - 1)]
    columns = np.arange(d) % 3 != 1
    expected = np.where(((keep != 0) & inside)[:, None] & columns, picked, 7)
    for run in runs(gather_where):
        out = zeros_of(dtype, (v, d))
        run(table, rows, keep, out, T=dtype)
        np.testing.assert_array_equal(plain(out), expected)


@tl.kernel(warps=1)
def gather_codes(
    table: tl.Tensor[tl.u4, "R", "D"],
    cols: tl.Tensor[tl.i32, "C"],
    out: tl.Tensor[tl.u4, "R", "C"],
    limit: tl.i32,
    BR: tl.constexpr = 8,
    BC: tl.constexpr = 32,
):
    """u4 codes gathered along the last dim (one code at a time, through byte windows):
    columns outside the table, and rows from `limit` on, read 5."""
    tl.blocks(1)
    index = tl.load(cols, [0], [BC])
    selected = (tl.arange(0, BR) < limit)[:, None]
    tl.store(out, [0, 0], tl.load(table, [0, index[None, :]], [BR, BC], fill=5, mask=selected))


@pytest.mark.parametrize("limit", [8, 3])
def test_packed_codes_gathered_one_by_one_read_the_fill_outside_and_masked_out(limit):
    """Before masks, the CPU backend left such codes unset outside the table."""
    r, d, c = 8, 40, 32
    codes = RNG.integers(0, 16, (r, d)).astype(np.uint8)
    cols = RNG.integers(-3, d + 3, c).astype(np.int32)
    inside = (cols >= 0) & (cols < d)
    picked = codes[:, np.clip(cols, 0, d - 1)]
    expected = np.where(inside[None, :] & (np.arange(r) < limit)[:, None], picked, 5)
    for run in runs(gather_codes):
        out = zeros_of(tl.u4, (r, c))
        run(tl.pack_codes(codes, tl.u4), cols, out, limit)
        np.testing.assert_array_equal(out.codes(), expected)


# --------------------------------------------------------------------------- scalar masks


@tl.kernel(warps=1)
def scalar_masks(
    x: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "N"],
    total: tl.Tensor[tl.f32, "N"],
    hist: tl.Tensor[tl.i32, "H"],
    first: tl.Tensor[tl.f32, "1"],
    n: tl.i32,
    BLOCK: tl.constexpr = 64,
):
    """Every access masked by `n > 3`, a block-uniform u1 scalar."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    big = n > 3
    tile = tl.load(x, [b * BLOCK], [BLOCK], mask=big, fill=5)
    tl.store(out, [b * BLOCK], tile, mask=big)
    tl.atomic_add(total, [b * BLOCK], tile, mask=big)
    tl.atomic_add(hist, [tl.arange(0, BLOCK) % H], tl.full([BLOCK], 1, tl.i32), mask=big)
    one = tl.load(x, [b * BLOCK], mask=big, fill=-9)
    tl.store(first, [0], tl.full([1], one, tl.f32), mask=b == 0)


@pytest.mark.parametrize("n", [2, 4])
def test_a_scalar_mask_selects_every_element_or_none(n):
    size, bins, block = 200, 5, 64
    x = values_of(RNG, tl.f32, size, floats=integral)
    blocks = -(-size // block)
    for run in runs(scalar_masks):
        out = np.full(size, -7, np.float32)
        total = np.ones(size, np.float32)
        hist = np.zeros(bins, np.int32)
        first = np.zeros(1, np.float32)
        run(x, out, total, hist, first, n)
        chosen = n > 3
        np.testing.assert_array_equal(out, x if chosen else np.full(size, -7, np.float32))
        np.testing.assert_array_equal(total, 1 + x if chosen else np.ones(size, np.float32))
        expected = np.bincount(np.arange(block) % bins, minlength=bins) * blocks
        np.testing.assert_array_equal(hist, expected if chosen else np.zeros(bins, np.int32))
        np.testing.assert_array_equal(first, [x[0] if chosen else -9])


@tl.kernel(warps=1)
def constant_masks(
    x: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "N"],
    total: tl.Tensor[tl.f32, "N"],
    hist: tl.Tensor[tl.i32, "N"],
    ONE: tl.constexpr = True,
    BLOCK: tl.constexpr = 64,
):
    """Python bools (a constexpr, and the comparison of two constants) as masks."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tile = tl.load(x, [b * BLOCK], [BLOCK], mask=ONE, fill=5)
    tl.store(out, [b * BLOCK], tile, mask=ONE)
    tl.atomic_add(total, [b * BLOCK], tile, mask=ONE)
    tl.atomic_add(hist, [tl.arange(0, BLOCK) + b * BLOCK], 1, mask=ONE)
    tl.store(out, [0], tl.full([1], tl.load(x, [1], mask=ONE, fill=-9), tl.f32), mask=BLOCK > 8)


@pytest.mark.parametrize("one", [True, False])
def test_a_constant_mask_is_no_mask_or_no_access_at_all(one):
    size = 150
    x = values_of(RNG, tl.f32, size, floats=integral)
    for run in runs(constant_masks):
        out = np.full(size, -7, np.float32)
        total = np.ones(size, np.float32)
        hist = np.zeros(size, np.int32)
        run(x, out, total, hist, ONE=one)
        stored = x.copy() if one else np.full(size, -7, np.float32)
        stored[0] = x[1] if one else -9
        np.testing.assert_array_equal(out, stored)
        np.testing.assert_array_equal(total, 1 + x if one else np.ones(size, np.float32))
        np.testing.assert_array_equal(hist, np.full(size, int(one), np.int32))
    kinds = {type(i) for i in instructions(constant_masks, ONE=False)}
    assert not kinds & {ir.Load, ir.LoadScalar, ir.Atomic, ir.ScatterAtomic}, kinds
    assert sum(isinstance(i, ir.Store) for i in instructions(constant_masks, ONE=False)) == 1
    masks = [i.mask for i in instructions(constant_masks, ONE=True) if hasattr(i, "mask")]
    assert masks and all(m is None for m in masks)  # True is no mask at all


# --------------------------------------------------------------------------- scalar values


@tl.kernel(warps=2)
def count_bins(
    values: tl.Tensor[tl.i32, "N"],
    hist: tl.Tensor["T", "B"],
    weight: tl.f32,
    T: tl.constexpr = tl.i32,
    BLOCK: tl.constexpr = 128,
):
    """hist[v] += 1 and weighted[v] += weight for every valid value: scalar addends."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    v = tl.load(values, [b * BLOCK], [BLOCK], fill=-1)
    tl.atomic_add(hist, [v], 1, mask=v >= 0)
    tl.atomic_add(hist, [v + B // 2], weight, mask=(v >= 0) & (v < B // 2))


@pytest.mark.parametrize("dtype", [tl.i32, tl.f32, tl.i64], ids=str)
def test_a_scatter_add_of_a_number_or_scalar_adds_it_at_every_index(dtype):
    n, bins, weight = 1000, 16, 3.0
    values = RNG.integers(0, bins, n).astype(np.int32)
    expected = np.bincount(values, minlength=bins).astype(np.float64)
    low = values[values < bins // 2]
    expected += weight * np.bincount(low + bins // 2, minlength=bins)
    for run in runs(count_bins):
        hist = np.zeros(bins, NUMPY[dtype.name])
        run(values, hist, weight, T=dtype)
        np.testing.assert_array_equal(hist, expected.astype(hist.dtype))


@tl.kernel(warps=1)
def scatter_constant(
    rows: tl.Tensor[tl.i32, "V"],
    out: tl.Tensor[tl.f16, "R", "D"],
    level: tl.f32,
    BV: tl.constexpr = 16,
):
    """out[rows[v], 0] = level: a scattered scalar (converted to f16), rank-2 target."""
    b = tl.blocks(tl.cdiv(V, BV))
    index = tl.load(rows, [b * BV], [BV], fill=-1)
    tl.store(out, [index[:, None], 0], level)


def test_a_scatter_of_a_scalar_writes_it_at_every_index():
    rows = RNG.permutation(12)[:10].astype(np.int32)
    for run in runs(scatter_constant):
        out = np.zeros((12, 3), np.float16)
        run(rows, out, 2.5)
        expected = np.zeros((12, 3), np.float16)
        expected[rows, 0] = 2.5
        np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- the pipeline


@tl.kernel(warps=4)
def row_sums(
    x: tl.Tensor[tl.f32, "M", "K"],
    out: tl.Tensor[tl.f32, "M"],
    limit: tl.i32,
    BM: tl.constexpr = 16,
    BK: tl.constexpr = 32,
):
    """Sums of each row's columns below `limit`, in a loop with stages=3."""
    bm = tl.blocks(tl.cdiv(M, BM))
    acc = tl.zeros([BM, BK], tl.f32)
    for k in tl.range(0, K, BK, stages=3):
        selected = (tl.arange(0, BK) + k < limit)[None, :]
        acc += tl.load(x, [bm * BM, k], [BM, BK], mask=selected)
    tl.store(out, [bm * BM], tl.sum(acc, axis=1))


@pytest.mark.filterwarnings("error::tilelang.PipelineWarning")
def test_a_masked_load_in_a_pipelined_loop_is_copied_with_its_mask_computed_ahead():
    """tests/test_pipelined_masks.py has the rest: masks from before the loop, gathers."""
    m, k, limit = 40, 200, 77
    x = values_of(RNG, tl.f32, (m, k), floats=integral)
    compiled = row_sums.compile()
    assert dict(compiled.thread.stats).get("pipeline_async") == 1
    assert statements(compiled, t.CpAsync)
    expected = x[:, :limit].sum(axis=1, dtype=np.float32)
    for run in runs(row_sums):
        out = np.zeros(m, np.float32)
        run(x, out, limit)
        np.testing.assert_array_equal(out, expected)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_masked_loads_compile(arch):
    wide = load_where.compile(target=arch, T=tl.f32, assume={"N": 64})
    loads = set(re.findall(r"\bld\.global(?:\.nc)?\.(v4)?", wide.ptx))
    assert "v4" in loads and "" in loads  # whole runs as vectors, cut runs by element
    assert wide.resources.spill_store_bytes == 0
    packed = load_where.compile(target=arch, T=tl.u4)
    assert "ld.global" in packed.ptx and packed.resources.spill_store_bytes == 0
    assert "ld.global" in gather_where.compile(target=arch, T=tl.f16).ptx
    counted = count_bins.compile(target=arch, T=tl.f32)
    assert "red.global.add.f32" in counted.ptx
    assert "ld.global" in scalar_masks.compile(target=arch).ptx
    assert "cp.async" in row_sums.compile(target=arch).ptx  # pipelined, mask and all


# --------------------------------------------------------------------------- IR and errors


LOAD = (
    "kernel k(%x: tensor<f32, [N]>) sizes(%N: i32) warps(1) {\n"
    "  %b = blocks 1:i32 : i32\n"
    "  %i = arange 0 : tile<i32, [32]>\n"
    "  %m = lt %i, 5:i32 : tile<u1, [32]>\n"
    "  %v = load %x[0:i32] fill(2.0:f32) mask(%m) : tile<f32, [32]>\n"
    "  %g = gather %x[0:i32], %i, axis=0 mask(%m) : tile<f32, [32]>\n"
    "}\n"
)


def test_load_and_gather_masks_print_parse_and_verify():
    fn = parse_function(LOAD)
    assert_text_round_trips(fn)
    with pytest.raises(IRVerifyError, match="expected a mask of u1"):
        verify(
            parse_function(
                LOAD.replace("mask(%m) : tile<f32, [32]>\n  %g", "mask(%i) : tile<f32, [32]>\n  %g")
            )
        )
    with pytest.raises(IRVerifyError, match="expected a mask of u1"):
        verify(parse_function(LOAD.replace("axis=0 mask(%m)", "axis=0 mask(%i)")))


def test_mask_and_value_mistakes_are_reported_at_the_users_line_in_words():
    @tl.kernel
    def int_scalar(x: tl.Tensor[tl.f32, "N"], n: tl.i32):
        tl.blocks(1)
        tl.store(x, [0], tl.full([32], 1.0, tl.f32), mask=n + 1)  # <- error

    @tl.kernel
    def number(x: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.atomic_add(x, [0], tl.full([32], 1.0, tl.f32), mask=1)  # <- error

    @tl.kernel
    def box_of_a_scalar(x: tl.Tensor[tl.f32, "N"], n: tl.f32):
        tl.blocks(1)
        tl.atomic_add(x, [0], n)  # <- error

    @tl.kernel
    def other(x: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.store(x, [0], tl.load(x, [0], [32], mask=tl.arange(0, 32) < 3, other=0.0))  # <- error

    @tl.kernel
    def tile_mask_of_a_scalar_load(x: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        one = tl.load(x, [0], mask=tl.arange(0, 4) < 3)  # <- error
        tl.store(x, [0], tl.full([1], one, tl.f32))

    @tl.kernel
    def scalar_fill(x: tl.Tensor[tl.f32, "N"], n: tl.f32):
        tl.blocks(1)
        tl.store(x, [0], tl.load(x, [0], [32], mask=n > 0, fill=n))  # <- error

    cases = (
        (int_scalar, "the mask must be u1 (a comparison's result), got a runtime scalar of i32"),
        (number, "a u1 scalar (a comparison's result) or a Python bool, got int 1"),
        (
            box_of_a_scalar,
            "tl.atomic_add into a box needs a tile of values, got a runtime scalar of f32",
        ),
        (other, "tl.load names the value of masked-out elements fill="),
        (tile_mask_of_a_scalar_load, "must be a u1 scalar or a bool, got a tile [4] of u1"),
        (scalar_fill, "fill must be a Python number, got a runtime scalar of f32"),
    )
    for kernel, fragment in cases:
        error = assert_reported(kernel, fragment)
        assert "Scalar(" not in str(error) and "%" not in str(error), str(error)
