"""`tl.sort`, `tl.argsort`, `tl.topk` and `tl.flip` order a tile along one axis as torch
does (NaN above +inf, -0 equal to +0, argsort and topk stable): on the CPU backend and
the interpreter, bit for bit alike, against a reference written from that definition
with Python's stable `sorted`; padded lengths (not powers of two) and both axes; a
router's top-2 over 64 experts compiles for sm_80 and sm_90a without spills; bad
arguments are reported at the user's line."""

import math

import numpy as np
import pytest
from conftest import assert_bitwise, assert_reported, run_both

import tilelang as tl


@tl.kernel(warps=4)
def orderings(
    x: tl.Tensor["T", "R", "N"],
    s: tl.Tensor["T", "R", "N"],
    a: tl.Tensor[tl.i32, "R", "N"],
    f: tl.Tensor["T", "R", "N"],
    tv: tl.Tensor["T", "R", "K"],
    ti: tl.Tensor[tl.i32, "R", "K"],
    T: tl.constexpr,
    BR: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    AXIS: tl.constexpr,
    DOWN: tl.constexpr,
):
    """Every ordering of the [BR, BN] tile x along AXIS (the top-BK along axis 1)."""
    v = tl.load(x, [0, 0], [BR, BN])
    tl.store(s, [0, 0], tl.sort(v, axis=AXIS, descending=DOWN))
    tl.store(a, [0, 0], tl.argsort(v, AXIS, DOWN))
    tl.store(f, [0, 0], tl.flip(v, axis=AXIS))
    values, indices = tl.topk(v, BK, axis=1, largest=DOWN)
    tl.store(tv, [0, 0], values)
    tl.store(ti, [0, 0], indices)


def _rank(value: float, descending: bool) -> tuple:
    """The sort key the ops define: NaN above every number, -0 equal to +0."""
    if math.isnan(value):
        return (1,) if not descending else (0,)
    return (0, value) if not descending else (1, -value)


def _stable_order(row: np.ndarray, descending: bool) -> list[int]:
    return sorted(range(len(row)), key=lambda i: (_rank(float(row[i]), descending), i))


def _reference(x: np.ndarray, axis: int, descending: bool, k: int):
    rows = x if axis == 1 else x.T
    order = np.array([_stable_order(r, descending) for r in rows], np.int32)
    top = np.array([_stable_order(r, descending)[:k] for r in x], np.int32)
    values = np.take_along_axis(rows, order, 1)
    flipped = rows[:, ::-1]
    if axis == 0:
        order, values, flipped = order.T, values.T, flipped.T
    return values, order, flipped, np.take_along_axis(x, top, 1), top


def _inputs(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, shape).astype(dtype)  # few values: many ties
    if np.issubdtype(dtype, np.floating):
        x.flat[[1, 2, 7]] = np.nan
        x.flat[[3, 4]] = [-0.0, 0.0]
        x.flat[5], x.flat[6] = np.inf, -np.inf
    return x


CASES = [  # dtype, (BR, BN) (powers of two and padded lengths), axis, descending
    (np.float32, (4, 32), 1, False),
    (np.float32, (4, 32), 1, True),
    (np.float32, (8, 12), 0, True),
    (np.float16, (4, 40), 1, False),
    (np.float16, (4, 40), 0, False),
    (np.int32, (2, 64), 0, True),
    (np.int8, (4, 16), 1, True),
    (np.uint8, (8, 6), 1, False),
]


@pytest.mark.parametrize("dtype, shape, axis, descending", CASES)
def test_orderings_follow_the_stable_torch_order_on_both_paths(dtype, shape, axis, descending):
    x = _inputs(dtype, shape, seed=shape[1] + axis)
    k = min(3, shape[1])
    outputs = [np.zeros(shape, dtype), np.zeros(shape, np.int32), np.zeros(shape, dtype)]
    outputs += [np.zeros((shape[0], k), dtype), np.zeros((shape[0], k), np.int32)]
    constexprs = dict(T=tl.dtype(np.dtype(dtype).name), BR=shape[0], BN=shape[1], BK=k)
    compiled, interpreted = run_both(
        orderings, [x], outputs, **constexprs, AXIS=axis, DOWN=descending
    )
    assert_bitwise(compiled, interpreted)
    for got, want in zip(compiled, _reference(x, axis, descending, k), strict=True):
        np.testing.assert_array_equal(got, want)  # NaN where NaN; -0 == +0


def test_sort_and_flip_move_the_very_bits_they_are_given():
    """Values only move: a sort's output is a permutation of its input's bit patterns."""
    x = _inputs(np.float32, (4, 32), seed=9)
    x.flat[1] = np.frombuffer(np.uint32(0x7FC00123).tobytes(), np.float32)[0]  # a NaN payload
    shape = x.shape
    outputs = [np.zeros(shape, np.float32), np.zeros(shape, np.int32), np.zeros(shape, np.float32)]
    outputs += [np.zeros((4, 3), np.float32), np.zeros((4, 3), np.int32)]
    got = orderings(x, *outputs, T=tl.f32, BR=4, BN=32, BK=3, AXIS=1, DOWN=False)
    bits = x.view(np.uint32)
    for row in range(4):
        assert sorted(got[0][row].view(np.uint32)) == sorted(bits[row])
    np.testing.assert_array_equal(got[2].view(np.uint32), bits[:, ::-1])


@tl.kernel(warps=4)
def router(
    logits: tl.Tensor[tl.f32, "M", "E"],
    weights: tl.Tensor[tl.f32, "M", "K"],
    experts: tl.Tensor[tl.i32, "M", "K"],
    BM: tl.constexpr = 16,
    BE: tl.constexpr = 64,
    BK: tl.constexpr = 2,
):
    """A Mixture-of-Experts router: each token's top-BK experts and their softmax weights."""
    m = tl.blocks(tl.cdiv(M, BM))
    scores = tl.load(logits, [m * BM, 0], [BM, BE])
    top, ids = tl.topk(scores, BK, axis=1)
    shifted = tl.exp(top - tl.max(top, axis=1)[:, None])
    tl.store(weights, [m * BM, 0], shifted / tl.sum(shifted, axis=1)[:, None])
    tl.store(experts, [m * BM, 0], ids)


def test_a_top_2_router_picks_the_experts_numpy_picks():
    logits = np.random.default_rng(5).standard_normal((37, 64)).astype(np.float32)
    weights, experts = router(logits, np.zeros((37, 2), np.float32), np.zeros((37, 2), np.int32))
    want = np.argsort(-logits, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(experts, want)
    top = np.take_along_axis(logits, want, 1).astype(np.float64)
    soft = np.exp(top - top.max(axis=1, keepdims=True))
    np.testing.assert_allclose(weights, soft / soft.sum(axis=1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("target", ["sm_80", "sm_90a"])
def test_the_router_compiles_without_spills(target):
    resources = router.compile(target=target).resources
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0, resources


def test_topk_k_outside_the_axis_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        values, _ = tl.topk(tl.load(x, [0], [8]), 9)  # <- error
        tl.store(x, [0], values)

    assert_reported(k, "tl.topk: k must be in 1..8", "got 9")


def test_sorting_a_rank_0_tile_is_reported_at_the_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        total = tl.sort(tl.sum(tl.load(x, [0], [8])))  # <- error
        tl.store(x, [0], total[None])

    assert_reported(k, "tl.sort orders an axis; a rank-0 tile has none")
