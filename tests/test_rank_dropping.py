"""Rank-dropping loads and stores: a tile of fewer dimensions than its tensor reads or
writes the box whose missing LEADING dimensions are 1 (`tl.load(q, [b, m, 0], [BM, D])`
from a [B, S, D] tensor, a rank-0 `tl.sum` stored as one element). The oracles below
walk the tile element by element in numpy, from that rule alone; the interpreter and
the CPU backend must both equal them. A CUDA build checks that the rank-dropping form
is the explicit `tl.reshape` form: the same CUDA text."""

import itertools
import math

import numpy as np
import pytest
from conftest import assert_reported, run_both

import tilelang as tl

FILL = -7.0


# -- numpy oracles ------------------------------------------------------------------------


def _box_coordinate(offsets, element, rank):
    """The tensor coordinate of tile element `element`: the offsets plus the element's
    index with leading zeros for the dimensions the tile lacks."""
    padded = (0,) * (rank - len(element)) + tuple(element)
    return tuple(int(o) + i for o, i in zip(offsets, padded, strict=True))


def _inside(coordinate, shape) -> bool:
    return all(0 <= c < n for c, n in zip(coordinate, shape, strict=True))


def read_box(x, offsets, shape, mask):
    """What a load of a tile of `shape` at `offsets` reads: x's element where inside x and
    the mask holds, else FILL."""
    out = np.full(shape, FILL, x.dtype)
    for element in np.ndindex(*shape):
        where = _box_coordinate(offsets, element, x.ndim)
        if mask[element] and _inside(where, x.shape):
            out[element] = x[where]
    return out


def write_box(before, offsets, tile, mask):
    """`before` after a store of `tile` at `offsets`: elements outside or masked off are
    not written."""
    out = before.copy()
    for element in np.ndindex(*tile.shape):
        where = _box_coordinate(offsets, element, before.ndim)
        if mask[element] and _inside(where, before.shape):
            out[where] = tile[element]
    return out


# -- loads and stores of rank 0..3 into rank-3 and rank-4 tensors ------------------------


@tl.func
def _mask_tile(m, SHAPE, NUMEL):
    """The u1 tile of SHAPE read from the flat u8 array m (the tile's own shape)."""
    return tl.reshape(tl.load(m, [0], [NUMEL]) != 0, SHAPE)


@tl.kernel(warps=2)
def round_trip3(
    x: tl.Tensor[tl.f32, "A", "B", "C"],
    src: tl.Tensor[tl.f32, "N"],
    m: tl.Tensor[tl.u8, "N"],
    read: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "A", "B", "C"],
    o0: tl.i32,
    o1: tl.i32,
    o2: tl.i32,
    SHAPE: tl.constexpr = (4, 8),
    NUMEL: tl.constexpr = 32,
    MASKED: tl.constexpr = False,
):
    """read = the box of SHAPE at [o0, o1, o2], flat; out gets src's box written there."""
    mask = _mask_tile(m, SHAPE, NUMEL) if MASKED else None
    tile = tl.load(x, [o0, o1, o2], SHAPE, fill=FILL, mask=mask)
    tl.store(read, [0], tl.reshape(tile, [NUMEL]))
    tl.store(out, [o0, o1, o2], tl.reshape(tl.load(src, [0], [NUMEL]), SHAPE), mask=mask)


@tl.kernel(warps=2)
def round_trip4(
    x: tl.Tensor[tl.f32, "A", "B", "C", "E"],
    src: tl.Tensor[tl.f32, "N"],
    m: tl.Tensor[tl.u8, "N"],
    read: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "A", "B", "C", "E"],
    o0: tl.i32,
    o1: tl.i32,
    o2: tl.i32,
    o3: tl.i32,
    SHAPE: tl.constexpr = (4, 8),
    NUMEL: tl.constexpr = 32,
    MASKED: tl.constexpr = False,
):
    """`round_trip3` for a rank-4 tensor."""
    mask = _mask_tile(m, SHAPE, NUMEL) if MASKED else None
    tile = tl.load(x, [o0, o1, o2, o3], SHAPE, fill=FILL, mask=mask)
    tl.store(read, [0], tl.reshape(tile, [NUMEL]))
    tl.store(out, [o0, o1, o2, o3], tl.reshape(tl.load(src, [0], [NUMEL]), SHAPE), mask=mask)


#: offsets inside, across the far edges of the tile's dims, across the near edge (-1), and
#: with a dropped (unit) dimension outside the tensor: nothing read or written.
OFFSETS = {
    3: [(1, 0, 0), (2, 3, 8), (0, -1, -3), (3, 0, 0), (-1, 1, 1)],
    4: [(1, 2, 0, 0), (0, 1, 3, 8), (1, 0, -1, -3), (2, 0, 0, 0), (0, 3, 1, 1)],
}
TENSORS = {3: (3, 5, 12), 4: (2, 3, 5, 12)}
TILES = [(), (8,), (4, 8), (2, 4, 8)]


CASES = [(r, s) for r in (3, 4) for s in [*TILES, (1, 2, 4, 8)] if len(s) <= r]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(("rank", "shape"), CASES, ids=str)
def test_a_tile_of_fewer_dims_reads_and_writes_the_box_with_leading_ones(rank, shape, masked):
    rng = np.random.default_rng(len(shape) * 10 + rank)
    x = rng.standard_normal(TENSORS[rank]).astype(np.float32)
    numel = math.prod(shape)
    src = rng.standard_normal(numel).astype(np.float32)
    m = (rng.random(numel) < 0.6).astype(np.uint8) if masked else np.ones(numel, np.uint8)
    mask = m.reshape(shape).astype(bool)
    kernel = round_trip3 if rank == 3 else round_trip4
    outputs = (np.zeros(numel, np.float32), np.full(x.shape, -1.0, np.float32))
    for offsets in OFFSETS[rank]:
        scalars = {f"o{d}": o for d, o in enumerate(offsets)}
        got = run_both(
            kernel, (x, src, m), outputs, SHAPE=shape, NUMEL=numel, MASKED=masked, **scalars
        )
        want_read = read_box(x, offsets, shape, mask).reshape(numel)
        want_out = write_box(outputs[1], offsets, src.reshape(shape), mask)
        for read, out in got:
            np.testing.assert_array_equal(read, want_read, err_msg=str(offsets))
            np.testing.assert_array_equal(out, want_out, err_msg=str(offsets))


# -- rank-0 tiles: a tl.sum stored and added as one element ------------------------------


@tl.kernel(warps=2)
def block_sums(
    x: tl.Tensor[tl.i32, "B", "S", "D"],
    sums: tl.Tensor[tl.i32, "B", 1, 1],
    total: tl.Tensor[tl.i32, 1, 1],
    before: tl.Tensor[tl.i32, "B"],
    S_: tl.constexpr = 8,
    D_: tl.constexpr = 16,
):
    """sums[b, 0, 0] = the sum of x[b]; total[0, 0] += it; before[b] = total before."""
    b = tl.blocks(B)
    s = tl.sum(tl.load(x, [b, 0, 0], [S_, D_]))  # a rank-0 tile
    tl.store(sums, [b, 0, 0], s)
    old = tl.atomic_add(total, [0, 0], s)
    tl.store(before, [b], tl.reshape(old, [1]))  # old is rank 0, as s


def test_a_rank_0_tile_writes_and_adds_one_element():
    rng = np.random.default_rng(3)
    x = rng.integers(-100, 100, (3, 8, 16), dtype=np.int32)
    outputs = (np.zeros((3, 1, 1), np.int32), np.full((1, 1), 5, np.int32), np.zeros(3, np.int32))
    for sums, total, before in run_both(block_sums, (x,), outputs):
        np.testing.assert_array_equal(sums[:, 0, 0], x.sum(axis=(1, 2)))
        assert total[0, 0] == 5 + x.sum()
        # the blocks add in some order: each saw 5 plus the sums of the blocks before it
        own = x.sum(axis=(1, 2))
        orders = itertools.permutations(range(3))
        assert any(
            all(before[b] == 5 + own[list(order[:k])].sum() for k, b in enumerate(order))
            for order in orders
        ), before


# -- gathers, scatters and atomics --------------------------------------------------------


@tl.kernel(warps=2)
def paged(
    cache: tl.Tensor[tl.f32, "B", "T", "D"],
    ids: tl.Tensor[tl.i32, "R"],
    by_row: tl.Tensor[tl.f32, "B", "R", "D"],
    by_block: tl.Tensor[tl.f32, "B", "R", "D"],
    scattered: tl.Tensor[tl.f32, "B", "T", "D"],
    counts: tl.Tensor[tl.i32, "B", "T", "D"],
    s: tl.i32,
    R_: tl.constexpr = 8,
    D_: tl.constexpr = 16,
):
    """Gathers [R, D] tiles from the rank-3 cache: along a kept dim (row ids[i] of block
    b) and along the dropped one (element (i, j) reads cache[ids[i], s + i, j]); scatters
    and scatter-adds them back."""
    b = tl.blocks(B)
    rows = tl.load(ids, [0], [R_], fill=-1)  # past the end: -1, nowhere
    kept = tl.load(cache, [b, rows[:, None], 0], [R_, D_], fill=FILL)
    dropped = tl.load(cache, [rows[:, None], s, 0], [R_, D_], fill=FILL)
    tl.store(by_row, [b, 0, 0], kept)
    tl.store(by_block, [b, 0, 0], dropped)
    tl.store(scattered, [b, rows[:, None], 0], kept * 2.0)
    tl.atomic_add(counts, [b, rows[:, None], 0], tl.full([R_, D_], 1, tl.i32))


def _gather(cache, offsets, index, axis, shape):
    """A gather's oracle: the box rule, with the coordinate along `axis` the index's."""
    out = np.full(shape, FILL, cache.dtype)
    index = np.broadcast_to(index, shape)
    for element in np.ndindex(*shape):
        where = list(_box_coordinate(offsets, element, cache.ndim))
        where[axis] = int(index[element])
        if _inside(where, cache.shape):
            out[element] = cache[tuple(where)]
    return out


def test_a_gather_scatter_and_scatter_add_of_a_lower_rank_tile():
    rng = np.random.default_rng(4)
    cache = rng.standard_normal((3, 10, 16)).astype(np.float32)
    ids = np.array([4, 0, 9, -1, 10, 2, 4, 1], np.int32)  # -1 and 10: outside, 4 twice
    outputs = (
        np.zeros((3, 8, 16), np.float32),
        np.zeros((3, 8, 16), np.float32),
        np.full(cache.shape, -1.0, np.float32),
        np.zeros(cache.shape, np.int32),
    )
    for s in (0, 1, 5):
        for by_row, by_block, scattered, counts in run_both(paged, (cache, ids), outputs, s=s):
            want_scattered = outputs[2].copy()
            for b in range(3):
                rows = _gather(cache, (b, 0, 0), ids[:, None], 1, (8, 16))
                np.testing.assert_array_equal(by_row[b], rows)
                blocks = _gather(cache, (0, s, 0), ids[:, None], 0, (8, 16))
                np.testing.assert_array_equal(by_block[b], blocks)
                for i, row in enumerate(ids):
                    if 0 <= row < 10:
                        want_scattered[b, row] = rows[i] * 2  # both copies of row 4 agree
            np.testing.assert_array_equal(scattered, want_scattered)
            hits = np.bincount(ids[(ids >= 0) & (ids < 10)], minlength=10)
            np.testing.assert_array_equal(
                counts, np.broadcast_to(hits[None, :, None], counts.shape)
            )


@tl.kernel(warps=1)
def claim(
    owner: tl.Tensor[tl.i32, "B", "K"],
    mine: tl.Tensor[tl.i32, "B", "K"],
    tally: tl.Tensor[tl.i32, "B", "K"],
    olds: tl.Tensor[tl.i32, "B", "K"],
    K_: tl.constexpr = 32,
):
    """Block b claims the free (0) slots of owner[b] with a [K] tile of its id + 1, and
    adds a [K] tile into tally[b] keeping the old values; both tensors are rank 2."""
    b = tl.blocks(B)
    me = tl.full([K_], 0, tl.i32) + (b + 1)
    old = tl.atomic_cas(owner, [b, 0], tl.zeros([K_], tl.i32), me)
    tl.store(mine, [b, 0], (old == 0).to(tl.i32))
    tl.store(olds, [b, 0], tl.atomic_add(tally, [b, 0], tl.arange(0, K_)))


def test_atomics_take_values_and_expected_of_lower_rank_and_return_their_shape():
    owner = np.zeros((2, 32), np.int32)
    owner[:, ::3] = 9  # taken
    tally = np.arange(64, dtype=np.int32).reshape(2, 32) * 10
    outputs = (owner, np.zeros((2, 32), np.int32), tally, np.zeros((2, 32), np.int32))
    for got_owner, mine, got_tally, olds in run_both(claim, (), outputs):
        free = owner == 0
        np.testing.assert_array_equal(got_owner, np.where(free, [[1], [2]], owner))
        np.testing.assert_array_equal(mine, free.astype(np.int32))
        np.testing.assert_array_equal(got_tally, tally + np.arange(32))
        np.testing.assert_array_equal(olds, tally)


# -- layout= of a rank-dropping load: the tile's shape's layout --------------------------

#: The accumulator layout of a [64, 64] f16 dot over 4 warps: a layout of the tile's shape.
C_LAYOUT = tl.dot_layout("c", 64, 64, 64, warps=4)


@tl.kernel(warps=4)
def scaled_rows(
    q: tl.Tensor[tl.f32, "B", "S", 64],
    o: tl.Tensor[tl.f32, "B", "S", 64],
    DROP: tl.constexpr = True,
):
    """o[b, rows] = 2 q[b, rows], q's tile loaded in C_LAYOUT."""
    b, m = tl.blocks(B, tl.cdiv(S, 64))
    if DROP:
        tile = tl.load(q, [b, m * 64, 0], [64, 64], layout=C_LAYOUT)
    else:
        box = tl.load(q, [b, m * 64, 0], [1, 64, 64], layout=C_LAYOUT.reshape([1, 64, 64]))
        tile = tl.reshape(box, [64, 64])
    tl.store(o, [b, m * 64, 0], tile * 2.0)


def test_a_layout_given_to_a_rank_dropping_load_is_the_tiles_and_moves_nothing():
    q = np.random.default_rng(5).standard_normal((2, 100, 64)).astype(np.float32)
    for got in run_both(scaled_rows, (q,), (np.zeros_like(q),)):
        np.testing.assert_array_equal(got, q * 2)
    dropped = scaled_rows.compile(target="sm_90a", DROP=True)
    assert dropped.source == scaled_rows.compile(target="sm_90a", DROP=False).source
    assert "shared_relayout" not in dropped.stats


# -- the CUDA of the rank-dropping form is the explicit reshape form's --------------------


@tl.kernel(warps=4)
def attention(
    q: tl.Tensor[tl.f16, "B", "S", 64],
    k: tl.Tensor[tl.f16, "B", "S", 64],
    v: tl.Tensor[tl.f16, "B", "S", 64],
    o: tl.Tensor[tl.f16, "B", "S", 64],
    L: tl.i32,
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
    DROP: tl.constexpr = True,
):
    """A flash-attention-like loop (no rescaling: only its loads and stores matter here),
    its [BM, 64] and [BN, 64] tiles read from and written to [B, S, 64] tensors either
    rank-dropping (DROP) or through explicit reshapes; rows at or past L masked off."""
    b, m = tl.blocks(B, tl.cdiv(S, BM))
    live = (m * BM + tl.arange(0, BM) < L)[:, None]
    if DROP:
        qt = tl.load(q, [b, m * BM, 0], [BM, 64], mask=live)
    else:
        qt = tl.reshape(tl.load(q, [b, m * BM, 0], [1, BM, 64], mask=live), [BM, 64])
    acc = tl.zeros([BM, 64], tl.f32)
    for n in tl.range(0, S, BN, stages=2):
        if DROP:
            kt = tl.load(k, [b, n, 0], [BN, 64])
            vt = tl.load(v, [b, n, 0], [BN, 64])
        else:
            kt = tl.reshape(tl.load(k, [b, n, 0], [1, BN, 64]), [BN, 64])
            vt = tl.reshape(tl.load(v, [b, n, 0], [1, BN, 64]), [BN, 64])
        s = tl.dot(qt, tl.transpose(kt), tl.zeros([BM, BN], tl.f32))
        p = tl.exp(s - tl.max(s, axis=1, keepdims=True))
        acc = tl.dot(p.to(tl.f16), vt, acc)
    if DROP:
        tl.store(o, [b, m * BM, 0], acc.to(tl.f16), mask=live)
    else:
        tl.store(o, [b, m * BM, 0], tl.reshape(acc.to(tl.f16), [1, BM, 64]), mask=live)


@tl.kernel(warps=4)
def attention_2d(
    q: tl.Tensor[tl.f16, "S", 64],
    k: tl.Tensor[tl.f16, "S", 64],
    v: tl.Tensor[tl.f16, "S", 64],
    o: tl.Tensor[tl.f16, "S", 64],
    L: tl.i32,
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    """`attention` of one batch element, from rank-2 tensors: no reshape anywhere."""
    m = tl.blocks(tl.cdiv(S, BM))
    live = (m * BM + tl.arange(0, BM) < L)[:, None]
    qt = tl.load(q, [m * BM, 0], [BM, 64], mask=live)
    acc = tl.zeros([BM, 64], tl.f32)
    for n in tl.range(0, S, BN, stages=2):
        kt = tl.load(k, [n, 0], [BN, 64])
        vt = tl.load(v, [n, 0], [BN, 64])
        s = tl.dot(qt, tl.transpose(kt), tl.zeros([BM, BN], tl.f32))
        p = tl.exp(s - tl.max(s, axis=1, keepdims=True))
        acc = tl.dot(p.to(tl.f16), vt, acc)
    tl.store(o, [m * BM, 0], acc.to(tl.f16), mask=live)


def _lowering_counts(compiled) -> dict:
    """What the lowering chose, without the counts keyed by a source line."""
    return {key: n for key, n in compiled.stats.items() if " " not in key}


def test_rank_dropping_attention_builds_to_the_cuda_of_the_explicit_reshapes():
    dropped = attention.compile(target="sm_90a", DROP=True)
    explicit = attention.compile(target="sm_90a", DROP=False)
    assert dropped.source == explicit.source
    # and the unit-dim reshapes cost nothing: the lowering makes the choices it makes
    # for rank-2 tensors (wgmma, cp.async, no relayout beyond the shared mask's)
    counts = _lowering_counts(dropped)
    assert counts == _lowering_counts(attention_2d.compile(target="sm_90a"))
    assert counts["wgmma"] > 0 and counts["cp_async"] > 0


# -- errors at the user's line ------------------------------------------------------------


def test_a_load_shape_of_more_dims_than_the_tensor_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(q: tl.Tensor[tl.f32, "B", "S", 16]):
        tl.load(q, [0, 0, 0], [1, 1, 8, 16])  # <- error

    assert_reported(
        k,
        "q has 3 dimensions but the tile shape [1, 1, 8, 16] has 4",
        "fewer dimensions",
        "not more",
    )


def test_a_store_of_more_dims_than_the_tensor_shows_the_reshape_that_drops_them():
    @tl.kernel(warps=1)
    def k(o: tl.Tensor[tl.f32, "S", 16]):
        tl.store(o, [0, 0], tl.zeros([1, 8, 16], tl.f32))  # <- error

    assert_reported(
        k,
        "storing a rank-3 tile [1, 8, 16] into o, a rank-2 tensor",
        "not more",
        "tl.reshape(tile, [8, 16])",
    )


def test_an_atomic_of_more_dims_than_the_tensor_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(o: tl.Tensor[tl.i32, 16]):
        tl.atomic_add(o, [0], tl.zeros([2, 16], tl.i32))  # <- error

    error = assert_reported(k, "adding a rank-2 tile [2, 16] into o, a rank-1 tensor", "not more")
    assert "tl.reshape" not in str(error)  # its leading dim is not 1: no reshape drops it


def test_still_one_offset_per_tensor_dimension():
    @tl.kernel(warps=1)
    def k(q: tl.Tensor[tl.f32, "B", "S", 16]):
        tl.load(q, [0, 0], [8, 16])  # <- error

    assert_reported(k, "q has 3 dimensions but 2 offsets were given")


def test_a_mask_broadcasts_to_the_tiles_shape_not_the_box():
    @tl.kernel(warps=1)
    def k(q: tl.Tensor[tl.f32, "B", "S", 16]):
        live = tl.arange(0, 8)[None, :, None] < 5
        tl.load(q, [0, 0, 0], [8, 16], mask=live)  # <- error

    assert_reported(k, "cannot broadcast a tile of shape [1, 8, 1] to [8, 16] (the mask)")


def test_a_stores_mask_broadcasts_to_the_values_shape_not_the_box():
    @tl.kernel(warps=1)
    def k(o: tl.Tensor[tl.f32, "B", "S", 16]):
        live = tl.arange(0, 8)[None, :, None] < 5
        tl.store(o, [0, 0, 0], tl.zeros([8, 16], tl.f32), mask=live)  # <- error

    assert_reported(k, "cannot broadcast a tile of shape [1, 8, 1] to [8, 16] (the mask)")


def test_a_gathers_index_broadcasts_to_the_tiles_shape_not_the_box():
    @tl.kernel(warps=1)
    def k(cache: tl.Tensor[tl.f32, "B", "T", 16], ids: tl.Tensor[tl.i32, 8]):
        rows = tl.load(ids, [0], [8])
        tl.load(cache, [0, rows[None, :, None], 0], [8, 16])  # <- error

    assert_reported(k, "shape [1, 8, 1], which does not broadcast to the tile shape [8, 16]")


def test_a_layout_of_the_box_is_not_the_tiles():
    @tl.kernel(warps=4)
    def k(q: tl.Tensor[tl.f32, "B", "S", 64]):
        tl.load(q, [0, 0, 0], [64, 64], layout=C_LAYOUT.reshape([1, 64, 64]))  # <- error

    assert_reported(k, "is a layout of a [1, 64, 64] tile, not [64, 64]")


def test_expected_of_atomic_cas_has_the_desired_values_shape():
    @tl.kernel(warps=1)
    def k(owner: tl.Tensor[tl.i32, "B", 32]):
        tl.atomic_cas(owner, [0, 0], tl.zeros([1, 32], tl.i32), tl.zeros([32], tl.i32))  # <- error

    assert_reported(k, "expected (of tl.atomic_cas) has shape [1, 32], the desired values [32]")
