"""A row mask — a per-row condition broadcast along the rows, as varlen attention's
``(n + tl.arange(0, BN) < count)[:, None]`` — costs one predicate per copied run: a
pipelined box copy issues one zero-filling cp.async per run under it (no per-element
fallback), an unpipelined load one predicated access, and two loads sharing the mask
compute it once an iteration. Rows past the count read 0 (a NaN there reaches nothing).
Results: CPU backend == interpreter == numpy, bit for bit."""

import re
import warnings

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.passes.software_pipeline import PipelineWarning

BN, BD = 16, 64  # rows a step, columns (a thread's runs: 8 f16, one cp.async of 16 bytes)


@tl.kernel(warps=4)
def row_sums(
    x: tl.Tensor[tl.f16, "N", "D"],
    y: tl.Tensor[tl.f16, "N", "D"],
    out: tl.Tensor[tl.f32, "BN", "BD"],
    start: tl.i32,
    count: tl.i32,
    BN: tl.constexpr = BN,
    BD: tl.constexpr = BD,
    S: tl.constexpr = 2,
):
    """Σ over the steps of rows start + n .. of x and of y, the rows from `count` on
    (the next sequence's) masked off."""
    acc = tl.zeros([BN, BD], tl.f32)
    for n in tl.range(0, count, BN, stages=S):
        live = (n + tl.arange(0, BN) < count)[:, None]
        xt = tl.load(x, [start + n, 0], [BN, BD], mask=live)
        yt = tl.load(y, [start + n, 0], [BN, BD], mask=live)
        acc = acc + xt.to(tl.f32) + yt.to(tl.f32)
    tl.store(out, [0, 0], acc)


@tl.kernel(warps=4)
def one_row_load(
    x: tl.Tensor[tl.f16, "N", "D"],
    out: tl.Tensor[tl.f16, "BN", "BD"],
    count: tl.i32,
    BN: tl.constexpr = BN,
    BD: tl.constexpr = BD,
):
    """Rows 0 .. BN of x, those from `count` on 0 (a plain, unpipelined load)."""
    live = (tl.arange(0, BN) < count)[:, None]
    tl.store(out, [0, 0], tl.load(x, [0, 0], [BN, BD], mask=live))


def row_sums_reference(x, y, start, count):
    """numpy: for each step n of BN rows below `count`, rows start + n + i (i < BN,
    n + i < count; 0 otherwise) of x and y added in f32, step by step, x before y."""
    out = np.zeros((BN, BD), np.float32)
    for n in range(0, count, BN):
        for i in range(BN):
            if n + i < count:
                row = start + n + i
                out[i] = out[i] + x[row].astype(np.float32) + y[row].astype(np.float32)
    return out


def strict(fn):
    """`fn()` with every PipelineWarning an error (both loads are pipelined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PipelineWarning)
        return fn()


@pytest.mark.parametrize("start, count", [(0, 0), (3, 5), (7, 16), (2, 37)])
def test_rows_past_the_count_read_zero_on_both_paths(start, count):
    """Rows past the count hold NaN and inf (the next sequence's): they reach nothing."""
    rng = np.random.default_rng(count)
    x = rng.standard_normal((64, BD)).astype(np.float16)
    y = rng.standard_normal((64, BD)).astype(np.float16)
    x[start + count :] = np.nan
    y[start + count :] = np.inf
    out = np.zeros((BN, BD), np.float32)
    want = row_sums_reference(x, y, start, count)
    compiled = strict(lambda: row_sums(x, y, out.copy(), start, count))
    interpreted = strict(lambda: row_sums.interpret(x, y, out.copy(), start, count))
    assert np.isfinite(want).all()
    assert compiled.tobytes() == want.tobytes()
    assert interpreted.tobytes() == want.tobytes()


def test_a_pipelined_copy_under_a_row_mask_is_one_predicated_cp_async_a_run():
    """Each thread copies its 16-byte runs, one row each: one cp.async a run, the row's
    condition its predicate, and no run copied element by element."""
    build = strict(lambda: row_sums.compile(target="sm_80"))
    stats = build.stats
    assert stats["pipeline_async"] == 2
    assert "copy_async_partial_run" not in stats, stats
    runs = BN * BD // 8 // 128  # 16-byte runs a thread copies of one tile
    calls = re.findall(r"(?<!void )tl_cp_async_16_zfill\(", build.source)  # not the helper
    assert len(calls) == 2 * 2 * runs  # x and y, before the loop and in it
    assert not re.search(r"tl_load<\w+>\(g_", build.source)  # no global element loads


def test_the_copies_of_one_iteration_compute_their_shared_row_mask_once():
    fn = strict(lambda: row_sums.stages()["pipeline"])
    loop = next(i for i in walk(fn) if isinstance(i, ir.For))
    copies = [i for i in loop.body.instrs if isinstance(i, ir.CopyAsync)]
    compares = [i for i in loop.body.instrs if getattr(i, "op", None) == "lt"]
    assert len(copies) == 2 and all(c.mask is not None for c in copies)
    assert len(compares) == 1, [str(i) for i in compares]


@pytest.mark.parametrize("count", [0, 9, 16])
def test_an_unpipelined_load_under_a_row_mask_is_one_predicated_access_a_run(count):
    x = np.random.default_rng(count).standard_normal((BN, BD)).astype(np.float16)
    x[count:] = np.nan
    want = np.where((np.arange(BN) < count)[:, None], x, np.float16(0))
    out = np.zeros((BN, BD), np.float16)
    assert one_row_load(x, out.copy(), count).tobytes() == want.tobytes()
    assert one_row_load.interpret(x, out.copy(), count).tobytes() == want.tobytes()
    assert "global_load_partial_run" not in one_row_load.compile().stats
