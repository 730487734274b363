"""Reductions whose axis spans lanes and warps (`tilelang.lowering.reductions`,
`reduce_across_warps`): each warp combines its part with shuffles and the warps' partials
meet in shared memory. The law: on the CPU backend, for every such layout of the tile
and every combining op, the result is numpy's reduction of the same data (small
integers in f32, so every order of the sums is exact), and the lowering took this path
(its stat), so a layout the path refuses fails the test instead of passing by the
shared-memory fold. The same holds where one thread digit of the axis crosses the warp
boundary (its low part lanes, its high part warps), in f32 and in i32 (wrapping sums,
exact), and for the GEMV users bring from Triton, whose product has such a layout.
"""

import re

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


# Layouts whose reduced axis has a thread digit crossing the warp boundary: its low
# values are lanes and its high values warps (with 2, 4 and 8 warps).
CROSSING = [
    # the GEMV product a[:, None] * w (BK=64, BN=128): K over 8 lanes and 4 warps
    ((64, 128), "local(2, 1).spatial(32, 4).local(1, 32)", 0),
    ((64, 16), "spatial(16, 4).local(4, 4)", 0),  # 2 warps
    ((16, 64), "spatial(1, 64).local(16, 1)", 1),  # 2 warps, the axis' digit lowest
    ((8, 128), "spatial(2, 64).local(4, 2)", 1),  # 4 warps, 2 of them along the axis
    # a crossing digit and a digit wholly across warps, both along the axis
    ((32, 16), "spatial(2, 1).spatial(16, 4).local(1, 4)", 0),
    ((128, 32), "spatial(64, 4).local(2, 8)", 0),  # 8 warps
    ((16, 256), "spatial(2, 128).local(8, 2)", 1),  # 8 warps, 4 along the axis
    ((64, 16), "replicated(2, rank=2).spatial(32, 4).local(2, 4)", 0),  # 8 warps, replicated
    ((2, 64, 8), "spatial(1, 16, 8).local(2, 4, 1)", 1),  # 3-d, 4 warps
]


def _typed_kernel(shape, layout, axis, op):
    """`_kernel` for a tile of any dtype (the constexpr DT)."""
    given = parse_layout(layout)
    reduce = REDUCE[op][0]
    if len(shape) == 2:

        @tl.kernel(warps=given.num_threads // 32)
        def reduce_typed_2d(
            x: tl.Tensor["DT", "A", "B"], y: tl.Tensor["DT", "P"], DT: tl.constexpr = tl.f32
        ):
            tile = tl.load(x, [0, 0], list(shape), layout=given)
            tl.store(y, [0], reduce(tile, axis=axis))

        return reduce_typed_2d

    @tl.kernel(warps=given.num_threads // 32)
    def reduce_typed_3d(
        x: tl.Tensor["DT", "A", "B", "C"], y: tl.Tensor["DT", "P", "Q"], DT: tl.constexpr = tl.f32
    ):
        tile = tl.load(x, [0, 0, 0], list(shape), layout=given)
        tl.store(y, [0, 0], reduce(tile, axis=axis))

    return reduce_typed_3d


@pytest.mark.parametrize("dtype", ["f32", "i32"])
@pytest.mark.parametrize("op", sorted(REDUCE))
@pytest.mark.parametrize("shape, layout, axis", CROSSING)
def test_a_reduction_whose_digit_crosses_the_warp_boundary_equals_numpys(
    shape, layout, axis, op, dtype
):
    kernel = _typed_kernel(shape, layout, axis, op)
    rng = np.random.default_rng(len(layout) + axis)
    if dtype == "i32":
        # values near the range's ends: the i32 sums wrap, and must wrap exactly as numpy's
        x = rng.integers(-(2**31), 2**31, size=shape, dtype=np.int64).astype(np.int32)
        want = REDUCE[op][1](x, axis=axis).astype(np.int32)
        y = np.zeros(want.shape, np.int32)
    else:
        # small integers: every order of the f32 sums is exact
        x = rng.integers(-50, 50, size=shape).astype(np.float32)
        want = REDUCE[op][1](x, axis=axis)
        y = np.full(want.shape, np.nan, np.float32)
    with np.errstate(over="ignore"):
        kernel(x, y, DT=getattr(tl, dtype))
    np.testing.assert_array_equal(y, want)
    stats = kernel.compile(DT=getattr(tl, dtype)).stats
    assert stats.get("reduce_warps") == 1 and "reduce_shared" not in stats, stats


def test_a_crossing_digit_reduces_with_shuffles_not_the_shared_fold():
    """The thread IR of the GEMV product's reduction: xor shuffles over the 8 lanes of
    the K digit (offsets 4, 8, 16: N is the 4 lowest thread values), one partial per
    warp through shared memory, and no loop over the axis' 64 elements in shared memory."""
    shape, layout, axis = CROSSING[0]
    compiled = _typed_kernel(shape, layout, axis, "sum").compile()
    text = compiled.ir()
    offsets = {int(offset) for offset in re.findall(r"shfl\.xor\(\S+, (\d+):i32", text)}
    assert offsets == {4, 8, 16}, text
    assert not re.search(r"^\s*for ", text, re.M), text  # the fold's loop over the axis
    assert compiled.stats.get("reduce_warps") == 1 and "reduce_shared" not in compiled.stats


@tl.kernel(warps=4)
def gemv_u4(
    x: tl.Tensor[tl.f16, "K"],
    q: tl.Tensor[tl.u4, "K", "N"],
    s: tl.Tensor[tl.f16, "K // G", "N"],
    y: tl.Tensor[tl.f32, "N"],
    G: tl.constexpr = 64,
    BK: tl.constexpr = 64,
    BN: tl.constexpr = 128,
):
    """The GEMV users write in Triton: the product's layout puts K over lanes and warps."""
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN], tl.f32)
    for k in tl.range(0, K, BK):
        a = tl.load(x, [k], [BK]).to(tl.f32)
        scale = tl.load(s, [k // G, bn * BN], [1, BN]).to(tl.f32)
        w = tl.load(q, [k, bn * BN], [BK, BN]).to(tl.f32) * scale
        acc = acc + tl.sum(a[:, None] * w, axis=0)
    tl.store(y, [bn * BN], acc)


def test_the_u4_gemv_equals_numpys_on_the_cpu_backend_and_in_the_interpreter():
    k, n, group = 256, 256, 64
    rng = np.random.default_rng(7)
    # small integers and power-of-two scales: every product and sum is exact in f32
    x = rng.integers(-8, 8, k).astype(np.float16)
    codes = rng.integers(0, 16, (k, n))
    scales = rng.choice([0.25, 0.5, 1.0, 2.0], (k // group, n)).astype(np.float16)
    dequantized = codes * np.repeat(scales.astype(np.float64), group, axis=0)
    want = (x.astype(np.float64) @ dequantized).astype(np.float32)
    q = tl.pack(codes, tl.u4)
    got = gemv_u4(x, q, scales, np.full(n, np.nan, np.float32))
    np.testing.assert_array_equal(got, want)
    interpreted = gemv_u4.interpret(x, q, scales, np.full(n, np.nan, np.float32))
    np.testing.assert_array_equal(interpreted, want)
    stats = gemv_u4.compile().stats
    assert stats.get("reduce_warps") == 1 and "reduce_shared" not in stats, stats
