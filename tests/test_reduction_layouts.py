"""The reduction's wish in infer_layouts (`reduction_layout`, the REDUCE origin): a free
value reduced over an axis, and the loads it is computed from, take a layout that folds
the axis mostly in registers and still reads whole 32-byte sectors. Layout properties
are checked on numpy tables of the layouts, not with the policy's own arithmetic."""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_bitwise, assert_close, run_both

import tilelang as tl
from tilelang import dtypes
from tilelang.analysis.layout_policy import blocked_layout, reduction_cost, reduction_layout
from tilelang.ir import nodes as ir
from tilelang.ir.layout_parser import parse_layout
from tilelang.ir.parser import parse_function
from tilelang.ir.visit import walk
from tilelang.passes import infer_layouts

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import natural_gemv

THREADS = 128


# -- independent views of a layout (numpy on its table) ----------------------------------


def holders_per_output(layout, axis: int) -> tuple[int, int]:
    """(threads, warps) that hold elements of one output of a reduction over `axis`,
    the most over all outputs."""
    table = layout.table()  # [threads, locals, rank]
    keep = [d for d in range(layout.rank) if d != axis]
    owners: dict[tuple, set[int]] = {}
    for thread in range(table.shape[0]):
        for index in table[thread]:
            owners.setdefault(tuple(int(i) for i in index[keep]), set()).add(thread)
    threads = max(len(s) for s in owners.values())
    warps = max(len({t // 32 for t in s}) for s in owners.values())
    return threads, warps


def covers_each_element_once(layout) -> bool:
    flat = np.ravel_multi_index(tuple(layout.table().reshape(-1, layout.rank).T), layout.shape)
    return np.array_equal(np.sort(flat), np.arange(layout.size))


def warps_read_whole_sectors(layout, bits: int) -> bool:
    """Whether every 32-byte sector of a row a warp reads from is read whole by the warp
    (rows far apart in memory, each starting on a sector)."""
    table = layout.table()
    for warp in range(table.shape[0] // 32):
        touched: dict[tuple[int, int], set[int]] = {}
        for index in table[warp * 32 : (warp + 1) * 32].reshape(-1, layout.rank):
            row, bit = tuple(int(i) for i in index[:-1]), int(index[-1]) * bits
            touched.setdefault((row, bit // 256), set()).update(range(bit, bit + bits))
        if any(len(b) != 256 for b in touched.values()):
            return False
    return True


def runs_of_whole_bytes(layout, bits: int) -> bool:
    """Whether each thread's elements of a row form runs of whole bytes."""
    if bits % 8 == 0:
        return True
    table = layout.table()
    for thread in table:
        rows: dict[tuple, list[int]] = {}
        for index in thread:
            rows.setdefault(tuple(int(i) for i in index[:-1]), []).append(int(index[-1]) * bits)
        for starts in rows.values():
            held = set(starts)
            if any((s // 8 * 8 + k) not in held for s in starts for k in range(0, 8, bits)):
                return False
    return True


# -- the policy ---------------------------------------------------------------------------

SHAPES = [
    ((64, 128), 0, dtypes.u4, [(1,), (0,)]),  # the natural GEMV: x and scales broadcast
    ((64, 128), 0, dtypes.f16, [(1,), (0,)]),
    ((32, 256), 0, dtypes.u8, []),
    ((64, 8), 0, dtypes.f32, []),
    ((4, 4096), 1, dtypes.f16, [(1,)]),  # rows of a norm: one butterfly per row
    ((2, 4096), 1, dtypes.u8, []),  # two rows: fewer warps a row
]


@pytest.mark.parametrize("shape, axis, dtype, broadcasts", SHAPES)
def test_the_wish_folds_over_fewer_threads_and_reads_whole_sectors(shape, axis, dtype, broadcasts):
    wish = reduction_layout(shape, axis, THREADS, [dtype], broadcasts)
    blocked = blocked_layout(shape, dtype, THREADS)
    assert wish is not None, "each of these shapes has a cheaper layout than the blocked one"
    assert wish.shape == shape and wish.num_threads == THREADS
    assert covers_each_element_once(wish)
    assert runs_of_whole_bytes(wish, dtype.bits)
    assert warps_read_whole_sectors(wish, dtype.bits) or not warps_read_whole_sectors(
        blocked, dtype.bits
    )
    threads, warps = holders_per_output(wish, axis)
    blocked_threads, blocked_warps = holders_per_output(blocked, axis)
    assert threads < blocked_threads or warps < blocked_warps
    bits = [dtype.bits]
    assert reduction_cost(wish, axis, bits, broadcasts) < reduction_cost(
        blocked, axis, bits, broadcasts
    )


def test_a_reduction_the_blocked_layout_already_folds_well_gets_no_wish():
    # Over the last dim: one row per 16 (8) lanes of one warp, 16-byte (4-byte) vectors.
    assert reduction_layout((8, 64), 1, THREADS, [dtypes.f32]) is None
    assert reduction_layout((16, 64), 1, THREADS, [dtypes.u4]) is None
    assert reduction_layout((64, 128), 0, THREADS, []) is None  # nothing loaded


def test_the_gemv_tile_folds_in_registers_within_two_warps():
    wish = reduction_layout((64, 128), 0, THREADS, [dtypes.u4], [(1,), (0,)])
    threads, warps = holders_per_output(wish, 0)
    # 64 elements a thread: the blocked layout spreads each column over 32 threads of 4
    # warps; the wish over at most 8 threads, so most of the fold is in registers.
    assert holders_per_output(blocked_layout((64, 128), dtypes.u4, THREADS), 0) == (32, 4)
    assert threads <= 8 and warps <= 2


# -- the pass -----------------------------------------------------------------------------

GEMV_BODY = """\
  %bx = blocks 1:i32 : i32
  %x1 = load %x[0:i32, 0:i32] : tile<f16, [64, 1]>
  %a = cast %x1 : tile<f32, [64, 1]>
  %ab = broadcast %a : tile<f32, [64, 128]>
  %q1 = load %q[0:i32, 0:i32] : tile<u4, [64, 128]>
  %w = cast %q1 : tile<f32, [64, 128]>
  %s1 = load %s[0:i32, 0:i32] : tile<f16, [1, 128]>
  %s2 = cast %s1 : tile<f32, [1, 128]>
  %sb = broadcast %s2 : tile<f32, [64, 128]>
  %ws = mul %w, %sb : tile<f32, [64, 128]>
  %p = mul %ab, %ws : tile<f32, [64, 128]>
  %r = reduce sum %p, axis=0 : tile<f32, [128]>
  %r2 = reshape %r : tile<f32, [1, 128]>
  store %y[0:i32, 0:i32], %r2
"""
GEMV_PARAMS = (
    "%x: tensor<f16, [M, N]>, %q: tensor<u4, [M, N]>, %s: tensor<f16, [M, N]>, "
    "%y: tensor<f32, [M, N]>"
)


def _infer(body: str, params: str = GEMV_PARAMS) -> ir.Function:
    text = f"kernel k({params}) sizes(%M: i32, %N: i32) warps(4) {{\n{body}}}\n"
    return infer_layouts.run(parse_function(text))


def _layouts(fn: ir.Function) -> dict[str, object]:
    return {v.name: v.type.layout for i in walk(fn) for v in i.defs() if hasattr(v.type, "layout")}


def test_the_wish_flows_back_to_the_loads_without_relayouts():
    fn = _infer(GEMV_BODY)
    layouts = _layouts(fn)
    q = layouts["q1"]
    assert not any(isinstance(i, ir.Relayout) for i in walk(fn))
    assert layouts["w"] == layouts["ws"] == layouts["p"] == q  # the chain shares one layout
    assert layouts["s1"] == q.reduce(0) and layouts["x1"] == q.reduce(1)
    # The codes' load follows the reduction, not its own blocked default.
    assert (
        holders_per_output(q, 0)[0]
        < holders_per_output(blocked_layout((64, 128), dtypes.u4, THREADS), 0)[0]
    )
    assert warps_read_whole_sectors(q, 4) and runs_of_whole_bytes(q, 4)


def test_dots_and_given_layouts_come_before_the_wish():
    given = "local(2, 1).spatial(32, 4).local(1, 32)"
    fn = _infer(GEMV_BODY.replace("tile<u4, [64, 128]>", f"tile<u4, [64, 128], {given}>"))
    assert _layouts(fn)["q1"] == parse_layout(given)
    # A dot's accumulator that is also reduced keeps the dot's C layout.
    fn = _infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %a = load %x[0:i32, 0:i32] : tile<f16, [64, 32]>\n"
        "  %b = load %x[0:i32, 0:i32] : tile<f16, [32, 64]>\n"
        "  %c = load %z[0:i32, 0:i32] : tile<f32, [64, 64]>\n"
        "  %r = reduce sum %c, axis=0 : tile<f32, [64]>\n"
        "  %d = dot %a, %b, %c : tile<f32, [64, 64]>\n"
        "  store %z[0:i32, 0:i32], %d\n"
        "  %r2 = reshape %r : tile<f32, [1, 64]>\n"
        "  store %z[0:i32, 0:i32], %r2\n",
        params="%x: tensor<f16, [M, N]>, %z: tensor<f32, [M, N]>",
    )
    layouts = _layouts(fn)
    assert layouts["c"] == layouts["d"] != blocked_layout((64, 64), dtypes.f32, THREADS)


# -- the natural GEMV, end to end ---------------------------------------------------------


def _gemv_inputs(rng, k: int, n: int, exact: bool):
    codes = rng.integers(0, 16, (k, n))
    scales = (2.0 ** rng.integers(-3, 2, (k // 128, n))).astype(np.float16)
    if exact:  # small integers: every product and partial sum is exact in f32
        x = rng.integers(-4, 5, (1, k)).astype(np.float16)
    else:
        x = rng.uniform(-1, 1, (1, k)).astype(np.float16)
    return x, codes, scales


@pytest.mark.parametrize("k, n", [(256, 256), (384, 128)])
def test_the_natural_gemv_agrees_with_numpy_and_the_interpreter(k, n):
    rng = np.random.default_rng(k + n)
    x, codes, scales = _gemv_inputs(rng, k, n, exact=True)
    inputs = (x, tl.pack_codes(codes, tl.u4), scales)
    out = np.zeros((1, n), np.float16)
    compiled, interpreted = run_both(natural_gemv.natural_gemv, inputs, (out,))
    assert_bitwise(compiled, interpreted)  # exact sums: any order gives the same bits
    w = codes * scales.astype(np.float64).repeat(128, axis=0)
    exact = (x.astype(np.float64) @ w).astype(np.float16)  # one rounding, as the kernel's
    np.testing.assert_array_equal(compiled, exact)
    x, codes, scales = _gemv_inputs(rng, k, n, exact=False)
    inputs = (x, tl.pack_codes(codes, tl.u4), scales)
    got = natural_gemv.natural_gemv(*inputs, np.zeros((1, n), np.float16))
    w = codes * scales.astype(np.float64).repeat(128, axis=0)
    assert_close(got, x.astype(np.float64) @ w, rtol=2e-3)
