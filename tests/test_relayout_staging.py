"""Slices of one tile read through shared memory stage it once (`Lowering.staged_scratch`).

Laws: a kernel that reads every column of a tile as a row every thread holds (a
relayout through shared memory per slice) writes the tile to the scratch area once
and reads each slice, with the barriers of one staging, where it wrote the tile once
per slice before; a write to the scratch area between two slices (another tile's
staging) or a nested body (a loop) between them stages it again; the results equal
numpy's on the CPU backend and the interpreter.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import thread as t


@tl.kernel(warps=1)
def column_products(
    x: tl.Tensor[tl.f32, "R", "K"],
    w: tl.Tensor[tl.f32, "K", "J"],
    v: tl.Tensor[tl.f32, "K", "J"],
    y: tl.Tensor[tl.f32, "R", "J"],
    INTERLEAVE: tl.constexpr = False,
):
    """y += Σ_k x[:, k] · w[k, :] (· v[k, :] with INTERLEAVE), one k at a time, a
    thread a row of y: each step reads row k of w (and of v) as a row every thread
    holds, through shared memory."""
    rows = tl.Layout((32, 8), ((32,), (8,)), (0,), (1,))  # a thread a row, as the walk's
    states = tl.Layout((32, 16), ((32,), (16,)), (0,), (1,))
    xt = tl.load(x, [0, 0], [32, 8], layout=rows)
    wt = tl.load(w, [0, 0], [8, 16])
    vt = tl.load(v, [0, 0], [8, 16])
    acc = tl.load(y, [0, 0], [32, 16], layout=states)
    for k in range(8):
        term = xt[:, k : k + 1] * wt[k : k + 1, :]
        if INTERLEAVE:  # another tile's staging between two slices of w
            term = term * vt[k : k + 1, :]
        acc = acc + term
    tl.store(y, [0, 0], acc)


def _stagings(**constexprs) -> tuple[int, int]:
    """(shared stores, barriers) of the thread IR."""
    fn = column_products.compile(target="cpu", **constexprs).thread
    stmts = list(t.walk_stmts(fn.body))
    return (
        sum(isinstance(s, t.SharedStore) for s in stmts),
        sum(isinstance(s, t.Barrier) for s in stmts),
    )


def test_the_slices_of_one_tile_stage_it_once():
    stores, barriers = _stagings()  # a thread writes its part of w with one store
    interleaved_stores, interleaved_barriers = _stagings(INTERLEAVE=True)
    assert stores == 1  # w staged once for its 8 slices
    assert interleaved_stores == 2 * 8  # w and v alternate: each slice stages again
    assert interleaved_barriers - barriers == 2 * (2 * 8 - 1)  # two barriers a staging


@pytest.mark.parametrize("interleave", [False, True])
def test_the_results_are_the_products(interleave):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    w = rng.standard_normal((8, 16)).astype(np.float32)
    v = rng.standard_normal((8, 16)).astype(np.float32)
    start = rng.standard_normal((32, 16)).astype(np.float32)
    want = start + sum(
        x[:, k : k + 1].astype(np.float64) * w[k] * (v[k] if interleave else 1.0) for k in range(8)
    )
    for run in (column_products, column_products.interpret):
        y = run(x, w, v, start.copy(), INTERLEAVE=interleave)
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
