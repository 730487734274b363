"""The static performance report on nested loops (`tilelang.runtime.perf_loop`'s "Several
loops" and "Dots", `perf_match`'s "Nests"): an inner loop counts once per iteration of
the loops around it, the main loop is an innermost one, and no prediction falls below
the physical floors (DRAM bytes, tensor-core flops), each expected number computed here
from the kernel's definition. No GPU is needed; the disassembler is (the report counts
SASS)."""

import sys
from pathlib import Path

import pytest

import tilelang as tl
from tilelang.runtime.perf_loop import find_main_loop
from tilelang.runtime.perf_trips import dot_flops
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

H100 = HARDWARE["sm_90"]


@tl.kernel(warps=4)
def persistent_matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    NUM_SMS: tl.constexpr = 132,
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 32,
    S: tl.constexpr = 3,
):
    pid = tl.blocks(NUM_SMS)
    tiles_n = tl.cdiv(N, BN)
    for tile in tl.range(pid, tl.cdiv(M, BM) * tiles_n, NUM_SMS):
        bm, bn = tile // tiles_n, tile % tiles_n
        acc = tl.zeros([BM, BN], tl.f32)
        for k in tl.range(0, K, BK, stages=S):
            acc = tl.dot(
                tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc
            )
        tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def one_tile_matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 32,
    S: tl.constexpr = 3,
):
    """`persistent_matmul`'s inner loop alone: one tile a block."""
    tile = tl.blocks(tl.cdiv(M, BM) * tl.cdiv(N, BN))
    tiles_n = tl.cdiv(N, BN)
    bm, bn = tile // tiles_n, tile % tiles_n
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


SIZES = {"M": 4096, "N": 4096, "K": 4096}


def test_the_main_loop_is_the_innermost_one_that_loads():
    """With stages=3 the pipeline's prologue copies sit in the tile loop and load as much
    an iteration as the k loop: the k loop (line of the `dot`) is still the main loop."""
    fn = persistent_matmul.stages(S=3)["plan_registers"]
    main = find_main_loop(fn)
    assert main.loops_with_loads == 2 and main.nests
    assert main.rank == 1 and main.enclosing == (main.loops[0].loop,)
    assert main.inner(0) == (1,) and main.inner(1) == ()
    assert main.nest_of(1) == 0 and main.nest_of(0) == 0


@pytest.mark.parametrize("stages", [1, 3])
def test_dot_flops_multiply_the_mean_trip_counts_of_the_loops_around(stages):
    m, n, k, sms = 1024, 768, 512, 5
    fn = persistent_matmul.stages(S=stages, NUM_SMS=sms)["plan_registers"]
    tiles = (m // 128) * (n // 128)  # 48, so block b takes tiles b, b + 5, ...: 10 or 9
    mean = sum(len(range(b, tiles, sms)) for b in range(sms)) / sms
    expected = mean * (k // 32) * 2 * 128 * 128 * 32
    assert dot_flops(fn, {"M": m, "N": n, "K": k}) == expected


@needs_disassembler
@pytest.mark.parametrize("stages", [1, 2, 3])
def test_a_persistent_matmul_is_never_below_the_tensor_core_floor(stages, example):
    report = persistent_matmul.compile(target="sm_90", S=stages).perf(**SIZES)
    floor = 2 * 4096**3 / H100.tensor_flops  # 139 us
    assert report.predicted_seconds >= floor
    assert report.predicted_seconds >= report.bytes_total / H100.dram_bytes_per_s
    grid = example("matmul").matmul.compile(target="sm_90").perf(**SIZES)
    assert 0.5 < report.predicted_seconds / grid.predicted_seconds < 2.5
    assert report.tensor_fraction <= 1.0


@needs_disassembler
def test_an_outer_loop_of_t_iterations_costs_t_times_its_inner_loop():
    """132 blocks, one tile each, against the same 132 blocks looping over 4 tiles each
    (the inner loop pipelined: its prologue sits in the outer loop, which loads too)."""
    t = 4
    alone = one_tile_matmul.compile(target="sm_90").perf(M=128 * 12, N=128 * 11, K=4096)
    looped = persistent_matmul.compile(target="sm_90").perf(M=128 * 12 * t, N=128 * 11, K=4096)
    assert alone.blocks == looped.blocks == 132
    assert looped.iterations == t * alone.iterations
    assert 0.9 * t < looped.predicted_seconds / alone.predicted_seconds < 1.2 * t


def _flops_by_hand(case) -> float:
    """The tensor-core work of a benchmark case from its sizes alone: 2·M·N·K for the
    matmul; for flash attention 4·D per (query, key) pair of every key block a query
    block visits (all 64 of them, or block b's first b + 1 when causal)."""
    size = case.launch
    if case.name.startswith("matmul"):
        return 2.0 * size["M"] * size["N"] * size["K"]
    blocks, bm, bn = (
        size["M"] // case.constexprs["BM"],
        case.constexprs["BM"],
        case.constexprs["BN"],
    )
    visited = blocks * (blocks + 1) // 2 if case.constexprs["CAUSAL"] else blocks * blocks
    return 4.0 * size["D"] * size["NB"] * size["H"] * bm * bn * visited


@needs_disassembler
def test_no_benchmark_case_is_predicted_faster_than_its_tensor_cores_allow():
    """benchmarks/perf_report.py's dot cases: predicted >= the card's tensor-core time of
    the work counted by hand from the sizes (the persistent-matmul bug gave 4.6 PFLOP/s)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import perf_report

    hw = HARDWARE["sm_90a"]
    cases = [c for c in perf_report.CASES if c.name.startswith(("matmul", "flash"))]
    assert len(cases) == 3
    for case in cases:
        assume = perf_report.launch_facts(case.kernel, case.constexprs, case.launch)
        compiled = case.kernel.compile(assume=assume, target="sm_90a", **case.constexprs)
        r = compiled.perf(per=case.per, iterations=case.iterations, **case.launch)
        floor = _flops_by_hand(case) / hw.tensor_flops
        assert r.predicted_seconds >= floor * (1 - 1e-9), (case.name, r.predicted_seconds, floor)


def test_loops_of_one_nest_do_not_re_read_what_they_share():
    """A tile loop whose prologue loads `a` and the k loop inside it that streams `a`
    read it in one pass; a second nest reading `a` afterwards re-reads it (the blocks at
    once load 2 x 100 x 8 x 1 MB meanwhile: more than the 1 MB L2)."""
    from tilelang.runtime.perf_traffic import LoopTraffic, rereads

    prologue = LoopTraffic("k.py:1", 8, {"a": 1e6}, nest="k.py:1")
    stream = LoopTraffic("k.py:2", 800, {"a": 1e6}, nest="k.py:1")
    again = LoopTraffic("k.py:5", 8, {"a": 1e6}, nest="k.py:5")
    found = rereads([prologue, stream, again], {"a": 64e6}, 100, 2, 1_000_000)
    assert [(r.where, r.first) for r in found] == [("k.py:5", "k.py:1")]
    assert found[0].charged == min(64e6, 100 * 8 * 1e6)


@needs_disassembler
def test_a_persistent_kernel_in_one_wave_is_as_slow_as_its_busiest_block():
    """132 blocks over 1024 tiles: blocks 0 to 99 take 8 tiles, the others 7 (a mean of
    7.76). They run as one wave, one a SM: the SM-bound bounds count 8 tiles of 128 k
    steps, and the tensor cores the slowest SM's 8 tiles on every SM."""
    report = persistent_matmul.compile(target="sm_90").perf(**SIZES)
    tiles = [len(range(b, 1024, 132)) for b in range(132)]
    assert max(tiles) == 8 and sum(tiles) / 132 == pytest.approx(1024 / 132)
    k_steps = 4096 // 32
    inner, outer = report.loops
    assert inner.iterations == pytest.approx(sum(tiles) / 132 * k_steps)
    assert (inner.most, outer.most) == (8 * k_steps, 8)
    seconds = {b.name: b.seconds for b in report.bounds}
    issued = 4 * (
        8 * k_steps * inner.instructions_per_iteration + 8 * outer.instructions_per_iteration
    )
    assert seconds["instruction issue"] == pytest.approx(issued / (4 * H100.clock_hz))
    moved = 4 * (8 * k_steps * inner.shared_per_iteration + 8 * outer.shared_per_iteration)
    assert seconds["shared memory"] == pytest.approx(moved / (128 * H100.clock_hz))
    # each SM's tensor cores do their block's 8 tiles: 132 SMs x 8 x 2*128*128*4096
    slowest = 132 * 8 * 2 * 128 * 128 * 4096
    assert seconds["tensor cores"] == pytest.approx(slowest / H100.mma_flops)
    assert report.mma_flops == pytest.approx(2 * 4096**3)  # the work done: the mean's
