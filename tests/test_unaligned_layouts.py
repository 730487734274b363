"""Register layouts of loads whose rows prove no 16-byte vector.

A row of 781 f32 (`compile(assume=None)`) is only known to be a multiple of one
element, so every access moves one element. The blocked default of 16 bytes a thread
would then be split into four 4-byte accesses with a warp's lanes 16 bytes apart
(4x the sectors); the default instead gives each thread one access's worth of
elements, lanes on consecutive elements. Where 16 bytes are provable (the assumed
build) the layout is the blocked one, as before. So is it where anything else depends
on the layout (`infer_layouts.access_runs`): a dot operand, a scan, a walk's per-step
rows, a store (after a loop too) that can move 16 bytes.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.cli import launch_facts
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.kernels import attention, ssm

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


# ------------------------------------------------------------- where the cut is not made
# The cut changes which elements each thread holds, so it is made only where nothing
# but global loads and stores that cannot move 16 bytes depends on that: a dot operand,
# a scan, a walk's per-step rows and a store that can move 16 bytes keep the blocked
# layout (16 bytes a thread, lanes 16 bytes apart), as they did before the cut existed.


@tl.kernel(warps=4)
def rows_times_w(
    x: tl.Tensor[tl.f16, "M", "K"], w: tl.Tensor[tl.f16, "K", "N"], y: tl.Tensor[tl.f32, "M", "N"]
):
    bm = tl.blocks(tl.cdiv(M, 64))
    a = tl.load(x, [bm * 64, 0], [64, 32])
    tl.store(y, [bm * 64, 0], tl.dot(a, tl.load(w, [0, 0], [32, 64])))


@tl.kernel(warps=4)
def row_cumsum(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"]):
    r = tl.blocks(M)
    tl.store(y, [r, 0], tl.cumsum(tl.load(x, [r, 0], [1, 512]), axis=1))


@tl.kernel(warps=4)
def shifted_copy(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"]):
    r = tl.blocks(M)
    tl.store(y, [r, 0], tl.load(x, [r, 1], [1, 512]) * 2.0)


@tl.kernel(warps=4)
def softmax_lse(
    x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"], lse: tl.Tensor[tl.f32, "M"]
):
    r = tl.blocks(tl.cdiv(M, 4))
    t = tl.load(x, [r * 4, 0], [4, 256], fill=float("-inf"))
    top = tl.max(t, axis=1)
    e = tl.exp(t - top[:, None])
    total = tl.sum(e, axis=1)
    tl.store(y, [r * 4, 0], e / total[:, None])
    tl.store(lse, [r * 4], top + tl.log(total))


def staged(kernel, assume, stage="plan_registers", **constexprs):
    """(kind, tensor, layout, elements per access) of every global load and store of
    `kernel`'s block IR after `stage`, in order (no build)."""
    fn = kernel.stages(assume, **constexprs)[stage]
    found = []
    for instr in walk(fn):
        if isinstance(instr, ir.Load | ir.Gather):  # varlen attention gathers its q rows
            found.append(("load", instr.tensor.name, instr.result.type.layout, instr.attr("elems")))
        elif isinstance(instr, ir.Store):
            found.append(("store", instr.tensor.name, instr.value.type.layout, instr.attr("elems")))
    return found


def load_layout(kernel, assume, tensor, **constexprs):
    """The layout infer_layouts gives the load of `tensor`."""
    found = staged(kernel, assume, "infer_layouts", **constexprs)
    (layout,) = [lay for kind, t, lay, _ in found if kind == "load" and t == tensor]
    return layout


def test_a_dot_operand_keeps_runs_of_16_bytes():
    # K has no facts: x's rows prove one element per access, but the relayout to the
    # mma fragment was made for 8 f16 a thread
    layout = load_layout(rows_times_w, None, "x")
    assert thread_runs(layout) == 8
    assert lane_step(layout) == 8


def test_a_scanned_row_keeps_runs_of_16_bytes():
    layout = load_layout(row_cumsum, None, "x")
    assert thread_runs(layout) == 4
    assert lane_step(layout) == 4


def test_a_store_that_moves_16_bytes_is_not_cut_for_an_unaligned_load():
    # x is read from column 1 (one element per access), y is written from column 0 of
    # rows of a multiple of 128: cutting the shared layout would split y's 16-byte stores
    found = staged(shifted_copy, "all")
    assert [(kind, t, elems) for kind, t, _, elems in found] == [
        ("load", "x", 1),
        ("store", "y", 4),
    ]
    for _, _, layout, _ in found:
        assert thread_runs(layout) == 4


def test_a_row_reduction_stored_aligned_does_not_stop_the_cut():
    # lse is written 4 aligned rows at a time, but it holds the rows' reductions, whose
    # layout is the same whatever the run along the reduced columns
    found = staged(softmax_lse, {"N": 1, "M": 128})
    rows = [(kind, t) for kind, t, _, _ in found]
    assert rows == [("load", "x"), ("store", "y"), ("store", "lse")]
    for _, _, layout, elems in found[:2]:
        assert elems == 1
        assert lane_step(layout) == 1


def test_a_walk_over_unaligned_states_keeps_its_layout_and_fits():
    # selective_scan's walk with a state size of no facts (N = 9 in a call): B and C
    # are walked a row (a step) at a time; cut to one f32 a thread, their per-step rows
    # needed about 485 registers on sm_90 (refused)
    flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, LAST=True)
    tiles = dict(BD=32, BN=16, BL=16)
    kernel = ssm.selective_scan_walk_kernel
    for tensor in ("B", "C"):
        layout = load_layout(kernel, None, tensor, **flags, **tiles)
        assert thread_runs(layout) == 4, tensor
        assert lane_step(layout) == 4, tensor
    resources = kernel.compile(assume=None, target="sm_90", **flags, **tiles).resources
    assert resources.spills == 0, resources


def test_the_varlen_attention_at_an_odd_head_dim_keeps_16_byte_runs():
    # D = 129: q, k and v rows prove one f16 per access; they reach the mma through a
    # relayout made for 8 f16 a thread (cut, the build spilled 40 bytes on sm_80; the
    # spill check is tests/test_attention.py's odd head dims)
    constexprs = dict(T=tl.f16, CAUSAL=True, LSE=True, **attention.default_tiles(129))
    kernel = attention.flash_attention_varlen_kernel
    sizes = {var.name: 128 for var in kernel.specialize(**constexprs).sizes} | {"D": 129}
    facts = launch_facts(kernel, constexprs, sizes)
    for tensor in ("q", "k", "v"):
        layout = load_layout(kernel, facts, tensor, **constexprs)
        assert thread_runs(layout) == 8, tensor
        assert lane_step(layout) == 8, tensor


@tl.kernel(warps=4)
def summed_rows(
    x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "R", "N"], COLUMN: tl.constexpr = 0
):
    acc = tl.zeros([1, 512], tl.f32)
    for m in tl.range(0, M):
        acc = acc + tl.load(x, [m, 1], [1, 512])  # from column 1: one f32 per access
    tl.store(y, [0, COLUMN], acc)


@pytest.mark.parametrize(("column", "run"), [(0, 4), (1, 1)])
def test_a_loop_carried_tile_joins_its_loads_to_its_store(column, run):
    # written from column 0, y moves 16 bytes an access: the loop's loads keep runs of
    # 4; written from column 1, every access of the loop's tile moves one element
    found = staged(summed_rows, "all", COLUMN=column)
    assert [(kind, elems) for kind, _, _, elems in found] == [("load", 1), ("store", run)]
    for _, _, layout, _ in found:
        assert thread_runs(layout) == run
        assert lane_step(layout) == run


def rows_of_threads(layout) -> list[set]:
    """Per thread, the set of rows (every index but the last) it holds."""
    table = layout.table()
    return [{tuple(int(i) for i in e[:-1]) for e in table[t]} for t in range(layout.num_threads)]


@pytest.mark.parametrize(
    ("shape", "axis", "dtype"),
    [
        ((128, 16), 1, tl.f32),  # a row a thread: nothing to split
        ((4, 256), 1, tl.f32),
        ((16, 128), 1, tl.f16),
        ((64, 64), 0, tl.f32),  # column sums
        ((32, 64), 0, tl.f16),
    ],
)
def test_a_capped_reduction_wish_keeps_the_threads_rows(shape, axis, dtype):
    # the wish is chosen as without the cap (its shuffles costed for that arrangement)
    # and only its runs are split: each thread keeps its rows and its element count,
    # and the lanes that share a row hold adjacent elements
    from tilelang.analysis.layout_policy import reduction_layout

    uncapped = reduction_layout(shape, axis, 128, [dtype])
    capped = reduction_layout(shape, axis, 128, [dtype], max_vec=1)
    assert uncapped is not None and capped is not None
    assert capped.num_locals == uncapped.num_locals
    assert rows_of_threads(capped) == rows_of_threads(uncapped)
    assert thread_runs(capped) == 1 or capped == uncapped
    table = capped.table()
    for lane in range(1, 32):
        if (table[lane, 0][:-1] == table[0, 0][:-1]).all():  # lane 0's row
            assert int(table[lane, 0][-1] - table[lane - 1, 0][-1]) == 1


def test_a_reduction_that_wishes_nothing_uncapped_wishes_nothing_capped():
    # selective_state_update's [BD, N] state times a [1, N] row of B broadcast over the
    # channels: the blocked layout is as cheap, so the cut blocked layout (the same
    # threads) follows; choosing among one-element runs instead gave each thread a
    # whole row, 32 rows a request (2x the sectors of the uncut layout)
    from tilelang.analysis.layout_policy import reduction_layout

    loads, broadcasts = [tl.f32, tl.f32], [[0]]
    assert reduction_layout((128, 16), 1, 128, loads, broadcasts) is None
    assert reduction_layout((128, 16), 1, 128, loads, broadcasts, max_vec=1) is None
