"""`tl.clamp` and `tl.num_blocks`.

`tl.clamp(x, lo, hi)` against a numpy oracle written from its definition,
min(max(x, lo), hi) with the project's float min/max (NaN ignored, -0 < +0), in the
interpreter and the CPU backend, bit for bit; `tl.num_blocks(axis)` is the grid's size
along an axis (1 past the grid's rank), and its errors point at the user's line.
"""

import numpy as np
import pytest
from conftest import marked_line

import tilelang as tl
from tilelang import TileLangError

RNG = np.random.default_rng(7)


@tl.kernel(warps=1)
def clamp_rows(
    x: tl.Tensor["T", "N"],
    lo: tl.Tensor["T", "N"],
    hi: tl.Tensor["T", "N"],
    y: tl.Tensor["T", "N"],
    T: tl.constexpr = tl.f32,
    B: tl.constexpr = 64,
):
    b = tl.blocks(tl.cdiv(N, B))
    at = [b * B]
    tl.store(y, at, tl.clamp(tl.load(x, at, [B]), tl.load(lo, at, [B]), tl.load(hi, at, [B])))


@tl.kernel(warps=1)
def clamp_by_scalars(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"], lo: tl.i32):
    b = tl.blocks(tl.cdiv(N, 32))
    tl.store(y, [b * 32], tl.clamp(tl.load(x, [b * 32], [32]), lo, 100))


def spec_max(a: float, b: float) -> float:
    if np.isnan(b):
        return a
    if np.isnan(a):
        return b
    if a == b == 0:
        return -0.0 if np.signbit(a) and np.signbit(b) else 0.0
    return max(a, b)


def spec_min(a: float, b: float) -> float:
    if np.isnan(b):
        return a
    if np.isnan(a):
        return b
    if a == b == 0:
        return -0.0 if np.signbit(a) or np.signbit(b) else 0.0
    return min(a, b)


def test_clamp_is_min_of_max_with_the_projects_nan_and_zero_rules():
    n = 300
    specials = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0, -1.0], np.float32)
    x, lo, hi = (RNG.standard_normal(n).astype(np.float32) * 3 for _ in range(3))
    for arr in (x, lo, hi):
        pick = RNG.random(n) < 0.25
        arr[pick] = RNG.choice(specials, int(pick.sum()))
    x[:4], lo[:4], hi[:4] = np.nan, [-1, np.nan, 2, -0.0], [1, 1, -2, 0.0]  # NaN x; lo > hi
    wanted = np.array(
        [spec_min(spec_max(a, b), c) for a, b, c in zip(x, lo, hi, strict=True)], np.float32
    )
    assert wanted[0] == -1 and wanted[1] == 1 and wanted[2] == -2  # lo; hi; lo > hi: hi
    for run in (clamp_rows.interpret, clamp_rows):
        y = np.zeros(n, np.float32)
        run(x, lo, hi, y)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(wanted))
        keep = ~np.isnan(wanted)
        np.testing.assert_array_equal(y[keep].view(np.uint32), wanted[keep].view(np.uint32))


def test_clamp_of_integers_by_scalars():
    x = RNG.integers(-1000, 1000, 100).astype(np.int32)
    for run in (clamp_by_scalars.interpret, clamp_by_scalars):
        y = np.zeros(100, np.int32)
        run(x, y, -5)
        np.testing.assert_array_equal(y, np.minimum(np.maximum(x, -5), 100))


@tl.kernel(warps=1)
def grid_sizes(out: tl.Tensor[tl.i32, "A", "B", 3], nb: tl.i32):
    """Every block writes the grid's three sizes at its own place."""
    a, b = tl.blocks(A, nb)
    sizes = tl.zeros([1, 1, 3], tl.i32)
    axis = tl.arange(0, 3)[None, None, :]
    for k in range(3):  # a Python loop: unrolled at trace time
        sizes = tl.where(axis == k, tl.num_blocks(k), sizes)
    tl.store(out, [a, b, 0], sizes)


def test_num_blocks_is_the_grid_size_along_each_axis():
    for run in (grid_sizes.interpret, grid_sizes):
        out = np.zeros((3, 5, 3), np.int32)
        run(out, 5)
        np.testing.assert_array_equal(out, np.broadcast_to([3, 5, 1], (3, 5, 3)))


def test_num_blocks_errors_point_at_the_users_line():
    @tl.kernel
    def before_the_grid(y: tl.Tensor[tl.i32, "N"]):
        n = tl.num_blocks(0)  # <- error
        tl.blocks(1)
        tl.store(y, [0], tl.full([1], n, tl.i32))

    @tl.kernel
    def bad_axis(y: tl.Tensor[tl.i32, "N"]):
        tl.blocks(1)
        tl.store(y, [0], tl.full([1], tl.num_blocks(3), tl.i32))  # <- error

    for kernel, fragment in (
        (before_the_grid, "call tl.blocks(...) before it"),
        (bad_axis, "expected an axis of 0, 1 or 2, got 3"),
    ):
        with pytest.raises(TileLangError) as info:
            kernel.specialize()
        assert info.value.loc.line == marked_line(kernel), str(info.value)
        assert fragment in str(info.value)
