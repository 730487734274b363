"""Reductions whose axis spans lanes and warps (`tilelang.lowering.reductions`,
`reduce_across_warps`): each warp combines its part with shuffles and the warps' partials
meet in shared memory. The law: on the CPU backend, for every such layout of the tile
and every combining op, the result is numpy's reduction of the same data (small
integers in f32, so every order of the sums is exact), and the lowering took this path
(its stat), so a layout the path refuses fails the test instead of passing by the
shared-memory fold.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir.layout_parser import parse_layout

# (tile shape, layout, axis; 4 warps unless the layout spans 8): the axis spans warps,
# and lanes or locals.
CASES = [
    # paged decode's [GP, BN] score tile: warps, lanes and locals along the tokens
    ((16, 32), "spatial(1, 4).local(2, 1).spatial(8, 4).local(1, 2)", 1),
    # the same along axis 0
    ((32, 16), "spatial(4, 1).local(1, 2).spatial(4, 8).local(2, 1)", 0),
    # warps and locals only along the axis (no shuffles)
    ((32, 32), "spatial(1, 4).spatial(32, 1).local(1, 8)", 1),
    # replicated threads beside the axis' warps
    ((16, 16), "spatial(1, 2).replicated(2).spatial(8, 4).local(2, 2)", 1),
    # two warp digits along the axis, apart in the thread index (8 warps)
    ((8, 64), "spatial(1, 2).spatial(2, 1).spatial(1, 2).spatial(4, 8).local(1, 2)", 1),
    # a 3-d tile reduced along its middle dimension
    ((2, 32, 8), "spatial(1, 4, 1).spatial(2, 2, 8).local(1, 4, 1)", 1),
]

REDUCE = {"sum": (tl.sum, np.sum), "max": (tl.max, np.max), "min": (tl.min, np.min)}


def _kernel(shape, layout, axis, op):
    """A kernel that loads x [shape] in `layout` and stores its reduction along `axis`."""
    given = parse_layout(layout)
    reduce = REDUCE[op][0]
    warps = given.num_threads // 32
    if len(shape) == 2:

        @tl.kernel(warps=warps)
        def reduce_2d(x: tl.Tensor[tl.f32, "A", "B"], y: tl.Tensor[tl.f32, "P"]):
            tile = tl.load(x, [0, 0], list(shape), layout=given)
            tl.store(y, [0], reduce(tile, axis=axis))

        return reduce_2d

    @tl.kernel(warps=warps)
    def reduce_3d(x: tl.Tensor[tl.f32, "A", "B", "C"], y: tl.Tensor[tl.f32, "P", "Q"]):
        tile = tl.load(x, [0, 0, 0], list(shape), layout=given)
        tl.store(y, [0, 0], reduce(tile, axis=axis))

    return reduce_3d


@pytest.mark.parametrize("op", sorted(REDUCE))
@pytest.mark.parametrize("shape, layout, axis", CASES)
def test_a_reduction_across_warps_equals_numpys(shape, layout, axis, op):
    kernel = _kernel(shape, layout, axis, op)
    rng = np.random.default_rng(len(layout) + axis)
    x = rng.integers(-50, 50, size=shape).astype(np.float32)
    want = REDUCE[op][1](x, axis=axis)
    y = np.full(want.shape, np.nan, np.float32)
    kernel(x, y)
    np.testing.assert_array_equal(y, want)
    compiled = kernel.compile()
    assert compiled.stats.get("reduce_warps") == 1 and "reduce_shared" not in compiled.stats
