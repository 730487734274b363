"""Masked runs: how a thread's run of consecutive elements moves under a mask
(`tilelang.lowering.memory.masked_run`), for loads, stores, atomic additions, gathers,
scatters and scatter-additions alike.

Masks whose runs are wholly selected, wholly unselected and partly selected, side by
side, on the interpreter and the CPU backend against numpy references written from the
definitions (an element not selected reads the fill, or is left as the tensor held
it). Then the SASS of sm_90 builds: on the path where every element is selected, a
masked access issues the vector accesses of the unmasked one and no element accesses
(those are in a branch a partly selected run takes).
"""

import numpy as np
import pytest
from conftest import NUMPY_OF, plain, runs, statements, values_of

import tilelang as tl
from tilelang.ir import thread as t

RNG = np.random.default_rng(20250611)


def run_masks(shape, group: int = 8) -> np.ndarray:
    """u8 masks of `shape` whose groups of `group` columns are, at random, all selected,
    none selected, the first half selected, or selected element by element at random:
    every kind of run a vectorized access meets."""
    rows, cols = shape
    keep = np.zeros(shape, np.uint8)
    for r in range(rows):
        for c in range(0, cols, group):
            width = min(group, cols - c)
            kind = RNG.integers(0, 4)
            if kind == 0:
                keep[r, c : c + width] = 1
            elif kind == 2:
                keep[r, c : c + width // 2] = 1
            elif kind == 3:
                keep[r, c : c + width] = RNG.integers(0, 2, width)
    return keep


def sentinel(dtype: tl.DType, shape) -> np.ndarray:
    """A tensor full of a value no stored element has (packed: the all-ones code)."""
    if dtype.bits < 8:
        return tl.pack_codes(np.full(shape, 2**dtype.bits - 1, np.uint8), dtype)
    return np.full(shape, -7 if dtype.is_float else 111, NUMPY_OF[dtype.name])


def small_values(dtype: tl.DType, shape) -> np.ndarray:
    """Integers 0..6 in `dtype` (exact in every type, below the sentinel's code)."""
    if dtype.bits < 8:
        return tl.pack_codes(RNG.integers(0, 7, shape).astype(np.uint8), dtype)
    return RNG.integers(0, 7, shape).astype(NUMPY_OF[dtype.name])


# --------------------------------------------------------------------------- boxes


@tl.kernel(warps=4)
def store_selected(
    x: tl.Tensor["T", "M", "N"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tl.store(y, [i * BM, j * BN], tl.load(x, [i * BM, j * BN], [BM, BN]), mask=selected)


@tl.kernel(warps=4)
def store_all(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tl.store(y, [i * BM, j * BN], tl.load(x, [i * BM, j * BN], [BM, BN]))


@tl.kernel(warps=4)
def load_selected(
    x: tl.Tensor["T", "M", "N"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tile = tl.load(x, [i * BM, j * BN], [BM, BN], mask=selected, fill=9)
    tl.store(y, [i * BM, j * BN], tile)


@tl.kernel(warps=4)
def add_selected(
    x: tl.Tensor["T", "M", "N"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tl.atomic_add(y, [i * BM, j * BN], tl.load(x, [i * BM, j * BN], [BM, BN]), mask=selected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u8, tl.u4], ids=str)
@pytest.mark.parametrize(("m", "n"), [(32, 128), (19, 90)])
def test_a_masked_store_writes_whole_empty_and_cut_runs(dtype, m, n):
    x, keep = values_of(RNG, dtype, (m, n)), run_masks((m, n))
    expected = np.where(keep != 0, plain(x), plain(sentinel(dtype, (m, n))))
    for run in runs(store_selected):
        y = sentinel(dtype, (m, n))
        run(x, keep, y, T=dtype)
        np.testing.assert_array_equal(plain(y), expected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u8, tl.u4], ids=str)
@pytest.mark.parametrize(("m", "n"), [(32, 128), (19, 90)])
def test_a_masked_load_reads_whole_empty_and_cut_runs(dtype, m, n):
    x, keep = small_values(dtype, (m, n)), run_masks((m, n))
    expected = np.where(keep != 0, plain(x), 9)
    for run in runs(load_selected):
        y = sentinel(dtype, (m, n))
        run(x, keep, y, T=dtype)
        np.testing.assert_array_equal(plain(y), expected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.i64], ids=str)
def test_a_masked_addition_adds_whole_empty_and_cut_runs(dtype):
    """Integer-valued addends: every order of the additions gives the same sums."""
    m, n = 19, 90
    x, keep = small_values(dtype, (m, n)), run_masks((m, n))
    start = small_values(dtype, (m, n))
    expected = plain(start) + np.where(keep != 0, plain(x), 0)
    for run in runs(add_selected):
        y = start.copy()
        run(x, keep, y, T=dtype)
        np.testing.assert_array_equal(plain(y), expected)


def test_a_masked_addition_keeps_negative_zero_where_it_adds_nothing():
    """-0.0 stays -0.0 where nothing is added (an added +0.0 would make it +0.0)."""
    m, n = 16, 64
    keep = run_masks((m, n))
    x = np.ones((m, n), np.float32)
    y = np.full((m, n), -0.0, np.float32)
    for run in runs(add_selected):
        got = y.copy()
        run(x, keep, got)
        np.testing.assert_array_equal(np.signbit(got), keep == 0)
        np.testing.assert_array_equal(got, np.where(keep != 0, 1.0, -0.0))


# --------------------------------------------------------------------------- indexed rows


@tl.kernel(warps=4)
def gather_selected(
    table: tl.Tensor["T", "V", "N"],
    ids: tl.Tensor[tl.i32, "M"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    """y[r] = table[ids[r]] where selected, 9 elsewhere."""
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    rows = tl.load(ids, [i * BM], [BM])
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tile = tl.load(table, [rows[:, None], j * BN], [BM, BN], mask=selected, fill=9)
    tl.store(y, [i * BM, j * BN], tile)


@tl.kernel(warps=4)
def scatter_selected(
    x: tl.Tensor["T", "M", "N"],
    ids: tl.Tensor[tl.i32, "M"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "V", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    """y[ids[r]] = x[r] where selected."""
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    rows = tl.load(ids, [i * BM], [BM], fill=-1)
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tl.store(y, [rows[:, None], j * BN], tl.load(x, [i * BM, j * BN], [BM, BN]), mask=selected)


@tl.kernel(warps=4)
def scatter_add_selected(
    x: tl.Tensor["T", "M", "N"],
    ids: tl.Tensor[tl.i32, "M"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    y: tl.Tensor["T", "V", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    """y[ids[r]] += x[r] where selected."""
    i, j = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    rows = tl.load(ids, [i * BM], [BM], fill=-1)
    selected = tl.load(keep, [i * BM, j * BN], [BM, BN]) != 0
    tile = tl.load(x, [i * BM, j * BN], [BM, BN])
    tl.atomic_add(y, [rows[:, None], j * BN], tile, mask=selected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u4], ids=str)
def test_a_masked_gather_reads_whole_empty_and_cut_runs(dtype):
    m, v, n = 37, 11, 90
    table, keep = small_values(dtype, (v, n)), run_masks((m, n))
    ids = RNG.integers(-2, v + 2, m).astype(np.int32)  # some rows outside the table
    inside = (ids >= 0) & (ids < v)
    rows = np.where(inside[:, None], plain(table)[np.clip(ids, 0, v - 1)], 9)
    expected = np.where(keep != 0, rows, 9)
    for run in runs(gather_selected):
        y = sentinel(dtype, (m, n))
        run(table, ids, keep, y, T=dtype)
        np.testing.assert_array_equal(plain(y), expected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u4], ids=str)
def test_a_masked_scatter_writes_whole_empty_and_cut_runs(dtype):
    """Distinct target rows (a permutation, some past the tensor), so no two rows race."""
    m, v, n = 37, 33, 90
    x, keep = values_of(RNG, dtype, (m, n)), run_masks((m, n))
    ids = RNG.permutation(m).astype(np.int32)  # rows >= v are dropped
    expected = plain(sentinel(dtype, (v, n))).copy()
    for r in range(m):
        if ids[r] < v:
            row = expected[ids[r]]
            expected[ids[r]] = np.where(keep[r] != 0, plain(x)[r], row)
    for run in runs(scatter_selected):
        y = sentinel(dtype, (v, n))
        run(x, ids, keep, y, T=dtype)
        np.testing.assert_array_equal(plain(y), expected)


@pytest.mark.parametrize("dtype", [tl.f32, tl.i32], ids=str)
def test_a_masked_scatter_addition_adds_whole_empty_and_cut_runs(dtype):
    m, v, n = 45, 7, 90  # many rows add into each target row
    x, keep = small_values(dtype, (m, n)), run_masks((m, n))
    ids = RNG.integers(-1, v + 1, m).astype(np.int32)
    expected = np.zeros((v, n), NUMPY_OF[dtype.name])
    for r in range(m):
        if 0 <= ids[r] < v:
            expected[ids[r]] += np.where(keep[r] != 0, x[r], 0)
    for run in runs(scatter_add_selected):
        y = np.zeros((v, n), NUMPY_OF[dtype.name])
        run(x, ids, keep, y, T=dtype)
        np.testing.assert_array_equal(y, expected)


# --------------------------------------------------------------------------- what runs


@pytest.mark.parametrize(
    ("kernel", "kind", "tensor"),
    [
        (store_selected, t.GlobalStore, "y"),
        (load_selected, t.GlobalLoad, "x"),
        (add_selected, t.Atomic, "y"),
    ],
    ids=["store", "load", "add"],
)
def test_a_cut_run_is_a_branch_apart_from_the_whole_run(kernel, kind, tensor):
    """The thread IR of an f32 [64, 64] tile's masked access: every access of the tensor
    is in a branch on its run's mask, the 16-byte accesses of the whole run on one side,
    its elements' 4-byte accesses on the other."""
    compiled = kernel.compile(BM=64, BN=64)

    def accesses(body):
        return [s.width for s in t.walk_stmts(body) if isinstance(s, kind) and s.tensor == tensor]

    branches = [s for s in statements(compiled, t.If) if accesses(s.then_body)]
    assert branches
    whole = [w for s in branches for w in accesses(s.then_body)]
    alone = [w for s in branches for w in accesses(s.else_body)]
    assert set(whole) == {16} and set(alone) == {4}
    assert len(alone) == 4 * len(whole) == 32  # 32 elements a thread
    assert len(accesses(compiled.thread.body)) == len(whole) + len(alone)  # none outside


@pytest.mark.usefixtures("disassembler")
def test_a_selected_run_issues_the_unmasked_vector_store_alone():
    """A [64, 64] f32 tile under a per-element mask, 32 elements a thread. On the path
    where its runs are all selected (the SASS's shortest: a run's element stores are in
    the branch it skips) it issues the 16-byte STGs of the unmasked store and nothing
    else (with a run's vector and element stores all predicated in one block, as they
    were, every path issued all 40: 8 vector, 32 element)."""
    from tilelang.runtime import sass

    def stores(kernel):
        build = kernel.compile(target="sm_90", BM=64, BN=64)
        body = sass.kernel_body(sass.disassemble(build.cubin))
        path = sass.shortest_path(body)
        return [
            [op for op, n in sass.opcodes(text).items() for _ in range(n) if op.startswith("STG")]
            for text in (body, path)
        ]

    plain, plain_path = stores(store_all)
    masked, masked_path = stores(store_selected)
    assert sorted(masked_path) == sorted(plain_path) == sorted(plain)
    assert len(plain) == 8 and all(".128" in op for op in plain)
    assert len(masked) == len(plain) + 32  # the element stores are still there
