"""Masked loads in `tl.range(..., stages=S)` loops are pipelined when their mask can be
computed where the copy is issued: a mask from before the loop (an MoE expert GEMM's
padding rows, broadcast at the load: computed once, before the loop) or one the body
computes from the loop variable (recomputed for the iteration the copy is for).
Masked-off elements read the fill, exactly as the unpipelined load, and are never read
from memory (cp.async's zero source size; a guard page proves it on the CPU backend).
A mask made from data the loop loads, or carried, still blocks, and the warning names
that value. Results: CPU backend == interpreter == numpy, bit for bit."""

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.passes.software_pipeline import PipelineWarning


@tl.kernel(warps=4)
def expert_rows(
    x: tl.Tensor[tl.f16, "M", "K"],
    rows: tl.Tensor[tl.i32, "R"],
    out: tl.Tensor[tl.f32, "R", "BK"],
    n: tl.i32,
    BM: tl.constexpr = 16,
    BK: tl.constexpr = 64,
    S: tl.constexpr = 2,
):
    """The repro: token rows of x by index, rows from n on padding (masked off)."""
    valid = (tl.arange(0, BM) < n)[:, None]  # before the loop
    r = tl.load(rows, [0], [BM])
    acc = tl.zeros([BM, BK], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        acc = acc + tl.load(x, [r[:, None], k], [BM, BK], mask=valid).to(tl.f32)
    tl.store(out, [0, 0], acc)


def expert_reference(x, rows, n, bk=64):
    """numpy: the f32 sum over the K chunks of row rows[i] of x, chunk by chunk, for
    i < n and rows inside x; zeros for the other rows."""
    out = np.zeros((len(rows), bk), np.float32)
    for k in range(0, x.shape[1], bk):
        for i, row in enumerate(rows):
            if i < n and 0 <= row < x.shape[0]:
                out[i] += x[row, k : k + bk].astype(np.float32)
    return out


def strict(fn):
    """`fn()` with every PipelineWarning an error (every load is pipelined)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", PipelineWarning)
        return fn()


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("n", [0, 5, 16])
def test_padding_rows_read_zeros_on_both_paths_wherever_they_point(stages, n):
    rng = np.random.default_rng(stages * 10 + n)
    x = rng.standard_normal((40, 192)).astype(np.float16)
    # Rows from 5 on point inside x (0, 1, 7: real data a padding row must not read)
    # and outside it (40, -3, 2**30).
    rows = np.array([3, 39, 0, 7, 11, 0, 1, 7, 40, -3, 2**30, 2, 9, 30, 31, 12], np.int32)
    out = np.zeros((16, 64), np.float32)
    compiled = strict(lambda: expert_rows(x, rows, out.copy(), n, S=stages))
    interpreted = strict(lambda: expert_rows.interpret(x, rows, out.copy(), n, S=stages))
    want = expert_reference(x, rows, n)
    assert compiled.tobytes() == want.tobytes()
    assert interpreted.tobytes() == want.tobytes()


def test_the_masked_gather_is_copied_ahead_with_its_mask_made_once_before_the_loop():
    fn = strict(lambda: expert_rows.stages()["pipeline"])
    loop = next(i for i in walk(fn) if isinstance(i, ir.For))
    copies = [i for i in loop.body.instrs if isinstance(i, ir.GatherAsync)]
    assert len(copies) == 1 and copies[0].mask is not None
    # the broadcast of the row mask is not repeated in the loop: made in the prologue
    assert not any(isinstance(i, ir.Broadcast) for i in loop.body.instrs)
    made = [i for i in fn.body.instrs if copies[0].mask in i.defs()]
    assert len(made) == 1 and isinstance(made[0], ir.Broadcast)
    stats = dict(strict(lambda: expert_rows.compile()).thread.stats)
    assert stats.get("pipeline_async") == 1 and "pipeline_skipped" not in stats
    assert stats.get("gather_cp_async_bytes_16", 0) >= 2  # the prologue's and the loop's


GUARDED = """
import ctypes, mmap, warnings
import numpy as np
from test_pipelined_masks import expert_rows
page = mmap.PAGESIZE
k = 256
m = 2 * page // (2 * k)
memory = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
x = np.frombuffer(memory, np.float16).reshape(m, k)
x[: m // 2] = np.arange(m // 2 * k).reshape(m // 2, k) % 7
base = ctypes.addressof(ctypes.c_char.from_buffer(memory))
assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page), page, 0) == 0
rows = np.array([0, 1, 2, 3] + [m - 1] * 12, np.int32)  # the rest: in the guarded page
warnings.simplefilter("error")
got = expert_rows(x, rows, np.zeros((16, 64), np.float32), n, S=3)
want = sum(x[:4, c : c + 64].astype(np.float32) for c in range(0, k, 64))
assert np.array_equal(got[:4], want) and not got[4:].any()
print("read")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc")
def test_a_masked_off_row_inside_the_tensor_is_never_read(tmp_path):
    """The rows masked off lie in a page that cannot be read: the copies skip them. The
    control, one of those rows selected, dies of the read."""

    def run(n):
        code = f"n = {n}\n" + textwrap.dedent(GUARDED)
        env = {**os.environ, "TILELANG_CACHE_DIR": str(tmp_path)}
        here = Path(__file__).parent
        return subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=here,
            env=env,
        )

    done = run(4)
    assert done.returncode == 0 and "read" in done.stdout, done.stderr[-2000:]
    assert run(5).returncode != 0  # the guard is real


# --------------------------------------------------------------------------- boxes


@tl.kernel(warps=4)
def column_sums(
    x: tl.Tensor["DT", "M", "K"],
    out: tl.Tensor[tl.f32, "M", "BK"],
    limit: tl.i32,
    BM: tl.constexpr = 16,
    BK: tl.constexpr = 64,
    DT: tl.constexpr = tl.f16,
    FILL: tl.constexpr = None,
    S: tl.constexpr = 3,
):
    """Sums of the columns below `limit`, a mask the loop variable makes: recomputed
    for the iteration each copy is for; it cuts vector runs where `limit` is odd."""
    bm = tl.blocks(tl.cdiv(M, BM))
    acc = tl.zeros([BM, BK], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        selected = (tl.arange(0, BK) + k < limit)[None, :]
        acc += tl.load(x, [bm * BM, k], [BM, BK], mask=selected, fill=FILL).to(tl.f32)
    tl.store(out, [bm * BM, 0], acc)


def column_reference(x, limit, fill, bk=64):
    out = np.zeros((x.shape[0], bk), np.float32)
    for k in range(0, x.shape[1], bk):
        chunk = x[:, k : k + bk].astype(np.float32)
        selected = (np.arange(chunk.shape[1]) + k < limit)[None, :]
        out[:, : chunk.shape[1]] += np.where(selected, chunk, np.float32(fill or 0))
    return out


@pytest.mark.parametrize(
    ("dtype", "fill", "form"),
    [(np.float16, None, "pipeline_async"), (np.float32, None, "pipeline_async"),
     (np.float16, 2.5, "pipeline_prefetch")],
)  # fmt: skip
@pytest.mark.parametrize("limit", [0, 77, 130, 1000])
def test_a_mask_from_the_loop_variable_is_recomputed_ahead_exactly(dtype, fill, form, limit):
    """A +0 fill is a cp.async's zeros; another fill is a register prefetch's."""
    rng = np.random.default_rng(limit)
    x = rng.standard_normal((32, 192)).astype(dtype)
    out = np.zeros((32, 64), np.float32)
    dt = tl.f16 if dtype == np.float16 else tl.f32
    compiled = strict(lambda: column_sums(x, out.copy(), limit, DT=dt, FILL=fill))
    interpreted = strict(lambda: column_sums.interpret(x, out.copy(), limit, DT=dt, FILL=fill))
    want = column_reference(x, limit, fill)
    assert compiled.tobytes() == want.tobytes()
    assert interpreted.tobytes() == want.tobytes()
    stats = dict(strict(lambda: column_sums.compile(DT=dt, FILL=fill)).thread.stats)
    assert stats.get(form) == 1 and "pipeline_skipped" not in stats
    if form == "pipeline_async":  # a run the mask cuts is copied element by element
        assert stats.get("copy_async_partial_run", 0) >= 1


def test_the_copy_carries_the_mask_of_its_own_iteration():
    fn = strict(lambda: column_sums.stages()["pipeline"])
    loop = next(i for i in walk(fn) if isinstance(i, ir.For))
    (copy,) = [i for i in loop.body.instrs if isinstance(i, ir.CopyAsync)]
    made = {d: i for i in loop.body.instrs for d in i.defs()}

    def sources(value):
        """The values `value` is made of in the loop body, itself included."""
        found = {value}
        for used in made[value].uses() if value in made else ():
            found |= sources(used)
        return found

    # the mask is computed in the body from the copy's own column offset (k + 2·BK)
    assert copy.mask in made and copy.offsets[-1] in sources(copy.mask)


# --------------------------------------------------------------------------- still blocked


@tl.kernel(warps=4)
def flagged_sums(
    x: tl.Tensor[tl.f32, "M", "K"],
    flags: tl.Tensor[tl.i32, "K"],
    out: tl.Tensor[tl.f32, "M", "BK"],
    BM: tl.constexpr = 16,
    BK: tl.constexpr = 32,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    acc = tl.zeros([BM, BK], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        keep = (tl.load(flags, [k], [BK]) > 0)[None, :]
        acc += tl.load(x, [bm * BM, k], [BM, BK], mask=keep)
    tl.store(out, [bm * BM, 0], acc)


@tl.kernel(warps=4)
def carried_mask_sums(
    x: tl.Tensor[tl.f32, "M", "K"],
    out: tl.Tensor[tl.f32, "M", "BK"],
    BM: tl.constexpr = 16,
    BK: tl.constexpr = 32,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    acc = tl.zeros([BM, BK], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        acc += tl.load(x, [bm * BM, k], [BM, BK], mask=acc < 4.0)
    tl.store(out, [bm * BM, 0], acc)


@pytest.mark.parametrize(
    ("kernel", "why"),
    [
        (flagged_sums, r"its mask %\S+ depends on %\S+, loaded in the loop body \(load at "),
        (carried_mask_sums, r"its mask %\S+ depends on %acc, which the loop carries"),
    ],
)
def test_a_mask_that_cannot_be_computed_ahead_is_named_in_the_warning(kernel, why):
    with pytest.warns(PipelineWarning) as caught:
        fn = kernel.stages()["pipeline"]
    messages = [str(w.message) for w in caught if w.category is PipelineWarning]
    mine = [m for m in messages if "load of %x " in m]
    assert len(mine) == 1 and re.search(why, mine[0]), messages
    assert "edges need none" not in mine[0]
    loads = [i for i in walk(fn) if isinstance(i, ir.Load) and i.tensor.name == "x"]
    assert [load.attr("unpipelined") is not None for load in loads] == [True]


def test_blocked_masked_loads_keep_their_results():
    rng = np.random.default_rng(3)
    x = rng.integers(-4, 5, (16, 96)).astype(np.float32)
    flags = rng.integers(0, 2, 96).astype(np.int32)
    out = np.zeros((16, 32), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)
        got = flagged_sums(x, flags, out.copy())
    want = sum(np.where(flags[k : k + 32] > 0, x[:, k : k + 32], 0) for k in range(0, 96, 32))
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_cuda_builds_copy_masked_loads_with_cp_async_and_do_not_spill(arch):
    for build in (
        strict(lambda: expert_rows.compile(target=arch, S=3)),
        strict(lambda: column_sums.compile(target=arch)),
    ):
        assert "cp.async" in build.ptx
        assert build.resources.spill_store_bytes == 0
        assert build.resources.spill_load_bytes == 0
        assert dict(build.thread.stats).get("pipeline_async") == 1


@tl.kernel(warps=1)
def e8m0_sums(s: tl.Tensor[tl.e8m0, "N"], out: tl.Tensor[tl.f32, "M"], BK: tl.constexpr = 32):
    """Sums of 32-wide e8m0 tiles past the end of s: the reads outside give its fill, 0
    in e8m0, which is its NaN code, not the zero bytes cp.async leaves (2^-127)."""
    acc = tl.zeros([BK], tl.f32)
    for i in tl.range(0, M, BK, stages=2):
        acc = acc + tl.load(s, [i], [BK]).to(tl.f32)
    tl.store(out, [0], acc)


def test_a_pipelined_e8m0_load_past_the_end_reads_its_fill_not_zero_bytes():
    scales = tl.pack_codes(np.full(40, 127), tl.e8m0)  # 2^0 each
    compiled = e8m0_sums(scales, np.zeros(64, np.float32))
    interpreted = e8m0_sums.interpret(scales, np.zeros(64, np.float32))
    np.testing.assert_array_equal(compiled, interpreted)
    np.testing.assert_array_equal(compiled[:8], 2.0)  # elements 32..39 are inside
    assert np.isnan(compiled[8:32]).all()
    stats = dict(e8m0_sums.compile().stats)  # pipelined in registers, not skipped
    assert stats.get("pipeline_prefetch") == 1 and "pipeline_skipped" not in stats
