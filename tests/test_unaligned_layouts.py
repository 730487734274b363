"""Register layouts of loads whose rows prove no 16-byte vector.

A row of 781 f32 (`compile(assume=None)`) is only known to be a multiple of one
element, so every access moves one element. The blocked default of 16 bytes a thread
would then be split into four 4-byte accesses with a warp's lanes 16 bytes apart
(4x the sectors); the default instead gives each thread one access's worth of
elements, lanes on consecutive elements. Where 16 bytes are provable (the assumed
build) the layout is the blocked one, as before.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk

BLOCK = 1024


@tl.kernel(warps=4)
def row_softmax(
    x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"], BLOCK: tl.constexpr = BLOCK
):
    r = tl.blocks(M)
    t = tl.load(x, [r, 0], [1, BLOCK], fill=float("-inf"))
    e = tl.exp(t - tl.max(t, axis=1)[:, None])
    tl.store(y, [r, 0], e / tl.sum(e, axis=1)[:, None])


@tl.kernel(warps=4)
def row_affine(x: tl.Tensor[tl.f16, "M", "N"], y: tl.Tensor[tl.f16, "M", "N"]):
    r = tl.blocks(M)
    tl.store(y, [r, 0], tl.load(x, [r, 0], [1, 512]) * 3.0 + 1.0)


@tl.kernel(warps=4)
def column_sums(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "N"]):
    bn = tl.blocks(tl.cdiv(N, 64))
    tl.store(y, [bn * 64], tl.sum(tl.load(x, [0, bn * 64], [64, 64]), axis=0))


def accesses(build):
    """(kind, layout, elements per access) of every global load and store, in order."""
    fn = build.stages[list(build.stages)[-1]]
    found = []
    for instr in walk(fn):
        if isinstance(instr, ir.Load):
            found.append(("load", instr.result.type.layout, instr.attr("elems") or 1))
        elif isinstance(instr, ir.Store):
            found.append(("store", instr.value.type.layout, instr.attr("elems") or 1))
    return found


def thread_runs(layout) -> int:
    """The shortest run of consecutive last-dim elements held by one thread at
    consecutive local indices (read off the layout's table)."""
    table = layout.table()  # [thread, local, dim]
    shortest = layout.num_locals
    for thread in range(layout.num_threads):
        run = 1
        for i in range(1, layout.num_locals):
            prev, cur = table[thread, i - 1], table[thread, i]
            adjacent = (prev[:-1] == cur[:-1]).all() and cur[-1] == prev[-1] + 1
            if adjacent:
                run += 1
            else:
                shortest, run = min(shortest, run), 1
        shortest = min(shortest, run)
    return shortest


def lane_step(layout) -> int:
    """The last-dim distance between lanes 0 and 1 of warp 0 at local index 0."""
    table = layout.table()
    return int(table[1, 0][-1] - table[0, 0][-1])


def test_an_unaligned_row_gets_lanes_on_adjacent_elements():
    found = accesses(row_softmax.compile(assume=None, target="sm_90a"))
    assert [kind for kind, _, _ in found] == ["load", "store"]
    for _, layout, elems in found:
        assert elems == 1  # N = 781 proves one element per access
        assert lane_step(layout) == 1
        # every warp's request covers 32 consecutive elements: 4 sectors of f32
        table = layout.table()
        for local in range(layout.num_locals):
            cols = [int(table[lane, local][-1]) for lane in range(32)]
            assert cols == list(range(cols[0], cols[0] + 32))


def test_an_unaligned_row_touches_no_extra_sectors():
    build = row_softmax.compile(assume=None, target="sm_90a")
    assert {k: v for k, v in build.stats.items() if "_sectors_" in k} == {}


def test_a_partial_fact_gives_runs_of_one_access():
    # N a multiple of 2 f32: 8-byte accesses, each thread a run of 2, lanes 2 apart
    for _, layout, elems in accesses(row_softmax.compile(assume={"N": 2}, target="sm_90a")):
        assert elems == 2
        assert thread_runs(layout) == 2
        assert lane_step(layout) == 2


def test_a_narrow_type_without_facts_moves_one_element_per_lane():
    for _, layout, elems in accesses(row_affine.compile(assume=None, target="sm_90a")):
        assert elems == 1
        assert lane_step(layout) == 1


def test_a_reduction_wish_keeps_runs_of_one_access():
    found = accesses(column_sums.compile(assume=None))
    (layout, elems) = next((lay, n) for kind, lay, n in found if kind == "load")
    assert elems == 1
    assert thread_runs(layout) == 1  # no run the access would split


@pytest.mark.parametrize("target", ["cpu", "sm_90a"])
def test_an_aligned_build_keeps_16_byte_vectors(target):
    # the default assumes N % 128: each thread 4 consecutive f32, one 16-byte access
    for _, layout, elems in accesses(row_softmax.compile(target=target)):
        assert elems == 4
        assert thread_runs(layout) == 4
        assert lane_step(layout) == 4
        assert layout.num_locals == BLOCK // 128


def test_unaligned_rows_compute_as_numpy_on_the_cpu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 781), dtype=np.float32) * 4
    y = np.full_like(x, np.nan)
    row_softmax(x, y)
    e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=2e-6, atol=1e-9)

    h = rng.standard_normal((3, 501)).astype(np.float16)
    out = np.full((3, 501), np.nan, dtype=np.float16)
    row_affine(h, out)
    np.testing.assert_array_equal(out, (h * np.float16(3.0) + np.float16(1.0)).astype(np.float16))
