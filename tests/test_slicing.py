"""Static indexing and slicing of tiles (`t[3]`, `t[-1]`, `t[:, a:b]`, `None`, `...`)
and `tl.split`: numpy's basic indexing with compile-time ints, on the interpreter and
the CPU backend alike; a box cut along local digits renames registers, and a free
tile sliced into boxes takes the layout that makes each box a rename unless that
would replicate it."""

import linecache

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.layout import local, spatial
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.visit import walk
from tilelang.passes.infer_layouts.rules import slice_layout, sliced_whole

X = np.arange(4 * 8 * 16, dtype=np.float32).reshape(4, 8, 16)

INDICES = [
    (slice(None), slice(2, 6), slice(None)),
    (1,),
    (-1, 3),
    (slice(None), -2, slice(4, 12)),
    (Ellipsis, slice(-4, None)),
    (None, slice(1, 3), Ellipsis, 0),
    (2, None, slice(None, 4), slice(8, -1)),
    (Ellipsis,),
]


def kernel_for(index):
    expected = X[index]
    shape = expected.shape if expected.ndim else ()

    @tl.kernel(warps=2)
    def take(x: tl.Tensor[tl.f32, 4, 8, 16], y: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0, 0, 0], [4, 8, 16])
        part = t[index] + 1.0
        tl.store(y, [0], tl.reshape(part, [expected.size]))

    return take, expected, shape


@pytest.mark.parametrize("index", INDICES, ids=str)
def test_indexing_is_numpys_basic_indexing(index):
    take, expected, _ = kernel_for(index)
    out = np.zeros(expected.size, np.float32)
    compiled, interpreted = take(X, out), take.interpret(X, out)
    assert np.array_equal(interpreted, expected.ravel() + 1)
    assert np.array_equal(compiled, interpreted)


def test_a_box_along_local_digits_renames_registers():
    """Columns 16..31 of a tile whose column is 16·l0 + 4·t + l1: each thread already
    holds its part of the box, in its registers; no shared memory, no barrier."""
    layout = local(1, 2).spatial(32, 4).local(1, 4)  # [32, 32] over 128 threads

    @tl.kernel(warps=4)
    def right_half(x: tl.Tensor[tl.f32, 32, 32], y: tl.Tensor[tl.f32, 32, 16]):
        t = tl.load(x, [0, 0], [32, 32], layout=layout)
        tl.store(y, [0, 0], t[:, 16:] * 2.0)

    x = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    out = right_half(x, np.zeros((32, 16), np.float32))
    assert np.array_equal(out, x[:, 16:] * 2)
    assert "shared_relayout" not in right_half.compile().stats
    fn = right_half.stages()["infer_layouts"]
    (cut,) = [i for i in walk(fn) if isinstance(i, ir.Slice)]
    assert cut.result.type.layout == spatial(32, 4).local(1, 4)


STATES = tl.Layout((32, 16), ((32,), (16,)), (0,), (1,))  # a thread a row


@tl.kernel(warps=1)
def row_dots(x: tl.Tensor[tl.f32, 32, 16], c: tl.Tensor[tl.f32, 16], y: tl.Tensor[tl.f32, 32]):
    """y = Σ_n x[:, n]·c[n] as a chain of multiply-adds over the columns: c broadcast
    over the rows, then cut column by column (the selective-scan walk's y)."""
    h = tl.load(x, [0, 0], [32, 16], layout=STATES)
    cs = tl.broadcast(tl.load(c, [0], [16])[None, :], [32, 16])
    acc = h[:, 0:1] * cs[:, 0:1]
    for n in range(1, 16):
        acc = tl.fma(h[:, n : n + 1], cs[:, n : n + 1], acc)
    tl.store(y, [0], tl.reshape(acc, [32]))


def test_a_free_tile_cut_into_columns_takes_the_layout_that_makes_them_renames():
    fn = row_dots.stages()["infer_layouts"]
    (cs,) = [i for i in walk(fn) if isinstance(i, ir.Broadcast) and i.result.type.rank == 2]
    assert cs.result.type.layout == STATES  # each column is a register of every thread
    assert not [i for i in walk(fn) if isinstance(i, ir.Relayout)]
    assert "shared_relayout" not in row_dots.compile().stats
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 16)).astype(np.float32)
    c = rng.standard_normal(16).astype(np.float32)
    want = np.zeros(32, np.float32)
    for n in range(16):  # one rounding a step, as fma: exact in f64, then to f32
        want = (x[:, n].astype(np.float64) * c[n] + want).astype(np.float32)
    got = row_dots(x, c, np.zeros(32, np.float32))
    assert np.array_equal(got, row_dots.interpret(x, c, np.zeros(32, np.float32)))
    assert np.array_equal(got, want)


def test_slicing_a_large_tile_into_rows_every_thread_reads_does_not_replicate_it():
    """Rows of a [16, 32] tile, each broadcast to every thread: the layout that would
    make them renames holds the whole tile in each of 32 threads, so the tile keeps a
    spread layout (the slices go through shared memory instead)."""

    rows = tl.Layout((32, 32), ((32,), (32,)), (0,), (1,))  # a thread a row

    @tl.kernel(warps=1)
    def row_sums(w: tl.Tensor[tl.f32, 16, 32], y: tl.Tensor[tl.f32, 32, 32]):
        wt = tl.load(w, [0, 0], [16, 32])
        acc = tl.load(y, [0, 0], [32, 32], layout=rows)
        for k in range(16):
            acc = acc + tl.broadcast(wt[k : k + 1, :], [32, 32])
        tl.store(y, [0, 0], acc)

    fn = row_sums.stages()["infer_layouts"]
    (load,) = [i for i in walk(fn) if isinstance(i, ir.Load) and i.tensor.name == "w"]
    assert load.result.type.layout.replication == 1
    w = np.arange(16 * 32, dtype=np.float32).reshape(16, 32)
    got = row_sums(w, np.ones((32, 32), np.float32))
    assert np.array_equal(got, np.broadcast_to(1 + w.sum(axis=0), (32, 32)))


@pytest.mark.parametrize(
    ("layout", "shape", "box"),
    [
        (spatial(32, 1), (32, 16), (32, 1)),
        (local(1, 4).spatial(8, 4), (16, 64), (8, 16)),
        (spatial(4, 8).local(2, 1), (32, 8), (8, 8)),
    ],
)
def test_every_box_of_the_whole_layout_is_the_box_layout(layout, shape, box):
    """`sliced_whole` is `slice_layout`'s inverse on its grid: each box of the given
    widths, at every multiple of them, has the box's layout again."""
    whole = sliced_whole(layout, shape, (0, 0), box)
    assert tuple(whole.shape) == shape and whole.num_threads == layout.num_threads
    for r in range(0, shape[0], box[0]):
        for c in range(0, shape[1], box[1]):
            assert slice_layout(whole, (r, c), (r + box[0], c + box[1])) == layout
    assert sliced_whole(layout, shape, (1, 0), (1 + box[0], box[1])) is None  # off the grid


def test_split_cuts_equal_parts_or_given_sizes():
    @tl.kernel(warps=1)
    def parts(x: tl.Tensor[tl.f32, 8, 12], y: tl.Tensor[tl.f32, 8, 4], z: tl.Tensor[tl.f32, 2, 12]):
        t = tl.load(x, [0, 0], [8, 12])
        a, b, c = tl.split(t, 3)  # the last axis, 4 columns each
        tl.store(y, [0, 0], a + b * c)
        top, rest = tl.split(t, [2, 6], axis=0)
        tl.store(z, [0, 0], top - tl.sum(rest, axis=0)[None, :])

    x = np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)
    args = (x, np.zeros((8, 4), np.float32), np.zeros((2, 12), np.float32))
    y, z = parts(*args)
    yi, zi = parts.interpret(*args)
    assert np.array_equal(y, yi) and np.array_equal(z, zi)
    np.testing.assert_allclose(y, x[:, :4] + x[:, 4:8] * x[:, 8:], rtol=1e-6)
    np.testing.assert_allclose(z, x[:2] - x[2:].sum(axis=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("t[4]", "index 4 is out of range for dimension 0 of size 4"),
        ("t[:, 6:2]", "the slice 6:2 of dimension 1 .size 8. is empty or out of range"),
        ("t[::2]", "step 1; dimension 0 was given step 2"),
        ("t[0, 0, 0, 0]", "too many indices for a tile of rank 3"),
        ("t[..., ...]", "at most one"),
        ("t[k]", "compile-time ints .dimension 0 was given a runtime value"),
        ("tl.split(t, 3, axis=1)", "cannot cut dimension 1 of size 8 into 3 equal parts"),
        ("tl.split(t, [4, 5], axis=2)", "must be positive and sum to dimension 2 .16."),
    ],
)
def test_bad_indices_are_reported_at_the_users_line(body, match):
    source = f"""
@tl.kernel(warps=1)
def bad(x: tl.Tensor[tl.f32, 4, 8, 16], k: tl.i32):
    t = tl.load(x, [0, 0, 0], [4, 8, 16])
    u = {body}
"""
    filename = f"<bad kernel {abs(hash(body))}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    scope = {"tl": tl}
    exec(compile(source, filename, "exec"), scope)
    with pytest.raises(tl.TileLangError, match=match) as caught:
        scope["bad"].specialize()
    assert caught.value.loc is not None and caught.value.loc.line == 5


def test_a_slice_prints_and_parses_back():
    take, _, _ = kernel_for((slice(None), slice(2, 6), 3))
    fn = take.specialize()
    text = print_function(fn)
    assert "slice " in text and "starts=[0, 2, 3]" in text and "stops=[4, 6, 4]" in text
    assert print_function(parse_function(text)) == text


def test_slices_compile_for_the_gpu():
    take, _, _ = kernel_for((slice(None), -2, slice(4, 12)))
    resources = take.compile(target="sm_80").resources
    assert resources.spill_store_bytes == 0 and resources.registers > 0
