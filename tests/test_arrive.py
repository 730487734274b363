"""`tl.arrive`: a block's count at a global counter, and the ordering it promises.

Laws, on the interpreter (blocks in grid order) and on the CPU backend (blocks on
several host threads, so the acquire-release of thread IR's `AtomicFetchAdd` is what
makes the last block see the others' stores):

* the blocks arriving at one counter get 0, 1, ..., n - 1, each once, and leave it at n;
* the last to arrive sees every store the others made before arriving (a split sum in
  one launch gives numpy's sum of the slices in slice order, bit for bit);
* a counter outside the tensor is not touched and gives -1.

The CUDA build is checked from its SASS (no GPU here): one atomic add by one thread,
between memory barriers of GPU scope.
"""

import dataclasses
import re

import numpy as np
import pytest
from conftest import require_disassembler

import tilelang as tl
from tilelang.ir import thread as t
from tilelang.ir.thread_text import print_stmt, print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.runtime import sass

SLICES = 4


@tl.kernel(warps=4)
def split_sum(
    x: tl.Tensor[tl.f32, "S", "N"],
    partial: tl.Tensor[tl.f32, "S", "N"],
    counts: tl.Tensor[tl.i32, "T"],
    y: tl.Tensor[tl.f32, "N"],
    S_: tl.constexpr = SLICES,
):
    """y = Σ_s x[s] in slice order: each (column tile, slice) block stores its slice's
    tile, and the tile's last block to arrive adds them and zeroes the counter."""
    j, s = tl.blocks(tl.cdiv(N, 128), S_)
    tl.store(partial, [s, j * 128], tl.load(x, [s, j * 128], [1, 128]))
    if tl.arrive(counts, [j]) == S_ - 1:
        total = tl.zeros([1, 128], tl.f32)
        for k in range(S_):
            total = total + tl.load(partial, [k, j * 128], [1, 128])
        tl.store(y, [j * 128], tl.reshape(total, [128]))
        tl.store(counts, [j], tl.zeros([1], tl.i32))


@tl.kernel(warps=2)
def arrivals(counts: tl.Tensor[tl.i32, "C"], seen: tl.Tensor[tl.i32, "B"], AT: tl.constexpr = 0):
    """seen[b] = what block b's arrival at counts[b % 3 + AT] returned."""
    b = tl.blocks(B)
    n = tl.arrive(counts, [b % 3 + AT])
    tl.store(seen, [b], tl.full([1], n, tl.i32))


@tl.kernel(warps=2)
def each_row(counts: tl.Tensor[tl.i32, "C"], seen: tl.Tensor[tl.i32, "B", "C"]):
    """Block b arrives at every counter in turn: counters the kernel only counts at
    (never stores to), arrivals in a loop."""
    b = tl.blocks(B)
    for r in tl.range(0, C):
        n = tl.arrive(counts, [r])
        tl.store(seen, [b, r], tl.full([1, 1], n, tl.i32))


def _slice_order_sum(x: np.ndarray) -> np.ndarray:
    total = np.zeros(x.shape[1], np.float32)
    for row in x:  # f32 additions in slice order, each rounded once
        total = (total + row).astype(np.float32)
    return total


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
def test_the_last_block_to_arrive_sees_every_slice(interpret):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((SLICES, 1000)).astype(np.float32)  # 8 tiles, the last ragged
    for _ in range(1 if interpret else 5):  # host threads interleave differently each run
        partial = np.full_like(x, np.nan)
        counts, y = np.zeros(8, np.int32), np.zeros(1000, np.float32)
        run = split_sum.interpret if interpret else split_sum
        run(x, partial, counts, y)
        assert (y.view(np.uint32) == _slice_order_sum(x).view(np.uint32)).all()
        assert (counts == 0).all()  # the last block set them back


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
def test_the_arrivals_at_a_counter_are_counted_once_each(interpret):
    counts, seen = np.full(3, 5, np.int32), np.zeros(90, np.int32)
    (arrivals.interpret if interpret else arrivals)(counts, seen)
    for c in range(3):
        got = seen[c::3]
        assert sorted(got) == list(range(5, 35))  # from the counter's value, each once
        if interpret:  # blocks in grid order
            assert list(got) == list(range(5, 35))
    assert (counts == 35).all()


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
def test_arrivals_in_a_loop_count_at_each_counter(interpret):
    counts, seen = np.zeros(3, np.int32), np.zeros((40, 3), np.int32)
    (each_row.interpret if interpret else each_row)(counts, seen)
    for r in range(3):
        assert sorted(seen[:, r]) == list(range(40))
    assert (counts == 40).all()


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_a_tensor_only_counted_at_is_written_by_the_cuda_kernel(arch):
    """The counters are written (not a `const` pointer, nor read through the
    non-coherent path) even when the kernel never stores to them."""
    build = each_row.compile(target=arch)
    (param,) = re.findall(r".*\bg_counts,", build.source)
    assert param.strip() == "u8* __restrict__ g_counts,"  # not const


@pytest.mark.parametrize("interpret", [True, False], ids=["interpreter", "cpu"])
def test_a_counter_outside_the_tensor_is_not_touched(interpret):
    counts, seen = np.zeros(3, np.int32), np.zeros(6, np.int32)
    (arrivals.interpret if interpret else arrivals)(counts, seen, AT=1)
    # blocks 0..5 arrive at counters 1, 2, 3 (past the end), 1, 2, 3
    assert sorted(seen[[0, 3]]) == sorted(seen[[1, 4]]) == [0, 1]
    assert seen[2] == seen[5] == -1
    if interpret:  # blocks in grid order
        assert list(seen) == [0, 0, -1, 1, 1, -1]
    assert list(counts) == [0, 2, 2]


def test_counters_must_be_i32_and_one_element():
    with pytest.raises(tl.TileLangError, match="the counters must be a tensor of i32") as info:

        @tl.kernel(warps=1)
        def wrong(c: tl.Tensor[tl.u32, "N"]):
            tl.arrive(c, [0])

        wrong.compile(target="cpu")
    assert "test_arrive.py" in str(info.value)
    with pytest.raises(tl.TileLangError, match="its offsets must be scalars"):

        @tl.kernel(warps=1)
        def gathered(c: tl.Tensor[tl.i32, "N"]):
            tl.arrive(c, [tl.arange(0, 4)])

        gathered.compile(target="cpu")


def test_the_thread_ir_fetch_add_is_checked_and_printed():
    kernel = split_sum.compile(target="sm_90")
    (fetch,) = [s for s in t.walk_stmts(kernel.thread.body) if isinstance(s, t.AtomicFetchAdd)]
    lines: list[str] = []
    print_stmt(fetch, 0, lines)
    assert re.fullmatch(r"\S+ = atomic\.fetch_add\.acq_rel counts\[.*\] <- 1\S* if .*", lines[0])
    assert "atomic.fetch_add.acq_rel" in print_thread_function(kernel.thread)
    bad = dataclasses.replace(fetch, value=t.Imm(1, tl.i32))
    with pytest.raises(ThreadIRError, match="the added value"):
        verify_thread_function(_replace(kernel.thread, fetch, bad))


def _replace(fn: t.ThreadFunction, old: t.Stmt, new: t.Stmt) -> t.ThreadFunction:
    def swap(body: tuple[t.Stmt, ...]) -> tuple[t.Stmt, ...]:
        out = []
        for s in body:
            if s is old:
                out.append(new)
            elif isinstance(s, t.If):
                out.append(t.If(s.cond, swap(s.then_body), swap(s.else_body)))
            else:
                out.append(s)
        return tuple(out)

    return dataclasses.replace(fn, body=swap(fn.body))


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_cuda_build_adds_once_a_block_between_gpu_scope_fences(arch):
    require_disassembler()
    kernel = split_sum.compile(target=arch)
    code = sass.disassemble(kernel.cuda.cubin)
    atomics = re.findall(r"\bATOMG?\.E\.ADD\.STRONG\.GPU\b", code)
    assert len(atomics) == 1
    before, after = code.split(atomics[0], 1)
    assert "MEMBAR.ALL.GPU" in before.rsplit("BAR.SYNC", 1)[-1]  # release, after the barrier
    assert "MEMBAR.ALL.GPU" in after.split("BAR.SYNC", 1)[0]  # acquire, before the next


@tl.kernel(warps=4)
def arrive_then_load(
    counts: tl.Tensor[tl.i32, "C"], x: tl.Tensor[tl.f32, "C", "N"], y: tl.Tensor[tl.f32, "N"]
):
    acc = tl.zeros([128], tl.f32)
    for i in tl.range(0, C, stages=2):
        n = tl.arrive(counts, [i])
        acc = acc + tl.load(x, [i, 0], [1, 128]).reshape([128]) * n.to(tl.f32)
    tl.store(y, [0], acc)


def test_a_pipelined_loop_issues_no_load_ahead_of_an_arrival():
    """A load after an arrive must see what the counted blocks stored: issued an
    iteration ahead it would run before the arrival, so the loop keeps it in place."""
    with pytest.warns(tl.PipelineWarning, match="arrive .* which a load issued ahead would"):
        kernel = arrive_then_load.compile(target="sm_90")
    assert "cp_async" not in " ".join(kernel.stats)
