"""The static performance report where trip counts differ from block to block
(`tilelang.runtime.perf_trips`'s "Trip count"): a loop whose bounds depend on the block
index counts its mean over the grid (every block, or an even sample of a large grid),
an inner loop whose bounds depend on an outer loop's variable its mean over that loop,
and the DRAM floor the bytes the tiles read; the tensor-core fraction names its peak;
a split-K launch lists its workspace. Expected numbers are computed here with Python
loops from the kernels' definitions, never from the code under test."""

import math

import pytest

import tilelang as tl
from tilelang.runtime import perf_trips
from tilelang.runtime.perf_loop import find_main_loop
from tilelang.runtime.perf_trips import trip_count
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

H100 = HARDWARE["sm_90"]


@tl.kernel(warps=4)
def triangle(x: tl.Tensor[tl.f32, "N", "N"], y: tl.Tensor[tl.f32, "N"]):
    b = tl.blocks(tl.cdiv(N, 64))
    acc = tl.zeros([64], tl.f32)
    for n in tl.range(0, (b + 1) * 64, 64):  # block b runs b + 1 steps
        acc = acc + tl.sum(tl.load(x, [b * 64, n], [64, 64]), axis=1)
    tl.store(y, [b * 64], acc)


@tl.kernel(warps=4)
def pyramid(x: tl.Tensor[tl.f32, "N", "N"], y: tl.Tensor[tl.f32, "N"]):
    b = tl.blocks(tl.cdiv(N, 64))
    acc = tl.zeros([64], tl.f32)
    for i in tl.range(0, b + 1):  # inner bound depends on the outer variable
        for n in tl.range(0, (i + 1) * 64, 64):
            acc = acc + tl.sum(tl.load(x, [b * 64, n], [64, 64]), axis=1)
    tl.store(y, [b * 64], acc)


def _trips(kernel, n: int, notes: list[str] | None = None):
    fn = list(kernel.stages().values())[-1]
    return trip_count(fn, find_main_loop(fn), {"N": n}, notes=notes)


@pytest.mark.parametrize("n", [64, 640, 16384])
def test_a_triangular_loop_counts_its_mean_over_every_block(n):
    blocks = -(-n // 64)
    expected = sum(len(range(0, (b + 1) * 64, 64)) for b in range(blocks)) / blocks
    notes: list[str] = []
    assert _trips(triangle, n, notes) == pytest.approx(expected)
    if blocks > 1:
        assert f"1 to {blocks} iterations a block" in notes[0]
        assert f"all {blocks} values" in notes[0]


def test_a_large_grid_is_sampled_evenly_and_says_so(monkeypatch):
    monkeypatch.setattr(perf_trips, "EXACT_BLOCKS", 100)
    monkeypatch.setattr(perf_trips, "SAMPLE_BLOCKS", 50)
    n = 64 * 1000
    exact = sum(b + 1 for b in range(1000)) / 1000
    notes: list[str] = []
    assert _trips(triangle, n, notes) == pytest.approx(exact, rel=0.01)
    assert "an even sample of 50 of the 1000 values" in notes[0]


@pytest.mark.parametrize("n", [64 * 5, 64 * 40])
def test_an_inner_loop_counts_its_mean_over_the_outer_loop(n):
    blocks = n // 64
    total = 0
    for b in range(blocks):
        for i in range(b + 1):
            total += len(range(0, (i + 1) * 64, 64))
    assert _trips(pyramid, n) == pytest.approx(total / blocks)


def test_a_sampled_outer_loop_stays_near_the_exact_mean(monkeypatch):
    monkeypatch.setattr(perf_trips, "EXACT_OUTER", 8)
    monkeypatch.setattr(perf_trips, "SAMPLE_OUTER", 4)
    blocks = 40
    exact = sum((b + 1) * (b + 2) / 2 for b in range(blocks)) / blocks
    notes: list[str] = []
    assert _trips(pyramid, 64 * blocks, notes) == pytest.approx(exact, rel=0.05)
    assert "averaged over a sample of their iterations" in notes[0]


@needs_disassembler
def test_the_report_of_a_triangular_loop_counts_the_bytes_its_tiles_read():
    n = 16384
    blocks = n // 64
    steps = [len(range(0, (b + 1) * 64, 64)) for b in range(blocks)]
    report = triangle.compile(target="sm_90").perf(N=n)
    assert report.iterations == pytest.approx(sum(steps) / blocks)  # 128.5, not block 0's 1
    x_read = sum(steps) * 64 * 64 * 4  # about half of x
    assert report.bytes_total == x_read + n * 4
    assert report.bounds[0].seconds == pytest.approx(report.bytes_total / H100.dram_bytes_per_s)
    assert "128.5 iterations per block" in str(report)


@needs_disassembler
def test_the_tensor_fraction_names_the_peak_it_divides_by():
    """On sm_90a the quantized matmul's swapped tile runs on the warpgroup mma, whose
    peak is the data sheet's; on sm_90 its mma.sync, whose peak on H100 is lower."""
    import numpy as np

    from tilelang import quant

    w = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    qw = quant.quantize(w, "u4", group_size=128)
    for arch, name, peak in (
        ("sm_90a", "wgmma", H100.tensor_flops),
        ("sm_90", "mma.sync", H100.mma_flops),
    ):
        report = quant.plan(qw, 64, arch).launches[0].perf()
        text = str(report).split("  predicted ")[1].splitlines()[0]
        assert f"of the {name} peak ({peak / 1e12:.4g} TFLOPS f16)" in text, text
        flops = report.mma_flops / report.predicted_seconds / peak
        assert report.tensor_fraction == pytest.approx(flops)


@needs_disassembler
def test_a_split_k_launch_lists_its_workspace_with_its_dram_bytes():
    import numpy as np

    from tilelang import quant

    m, k, n = 64, 1024, 1024
    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    plan = quant.plan(quant.quantize(w, "u4", group_size=128), m, "sm_90a")
    split = plan.choice.split_k
    assert split > 1
    report = plan.launches[0].perf()
    partials = split * m * n * 4
    assert report.tensors["partials"] == ("read, written", 2 * partials)
    assert report.tensors["x"] == ("read", m * k * 2)
    assert sum(b for _, b in report.tensors.values()) == report.bytes_total
    rows = str(report).split("global tiles per iteration")[1].split("\n  in flight  ")[0]
    row = next(line for line in rows.splitlines() if line.split()[:1] == ["partials"])
    assert row.split()[-2:] == [f"{2 * partials / 1e6:.4g}", "MB"]


@needs_disassembler
@pytest.mark.parametrize("n", [64 * 100, 16384])
def test_one_wave_counts_its_slowest_block_and_many_waves_the_mean(n):
    """100 blocks of 1 to 100 steps run as one wave (one a SM): the wave lasts as long as
    block 99's 100 steps, each waiting on its load. 256 blocks of 1 to 256 steps: the
    busiest SM runs 2 blocks, 2 x 128.5 steps on average, more than one block's 256."""
    blocks = n // 64
    steps = [b + 1 for b in range(blocks)]
    mean = sum(steps) / blocks
    report = triangle.compile(target="sm_90").perf(N=n)
    busiest = -(-blocks // H100.sms)
    per_sm = max(busiest * mean, max(steps))
    assert per_sm == (100 if n == 64 * 100 else 2 * mean)
    (row,) = report.loops
    assert row.iterations == pytest.approx(mean) and row.most == max(steps)
    seconds = {b.name: b.seconds for b in report.bounds}
    issued = 4 * per_sm * row.instructions_per_iteration
    assert seconds["instruction issue"] == pytest.approx(issued / (4 * H100.clock_hz))
    # memory latency: the launch's bytes at the bytes in flight (Little's law), or the
    # slowest block's steps, one latency / depth each, where it takes longer
    (load,) = report.loads
    rounds = math.ceil(report.waves)
    little = report.dram_bytes / (report.concurrent_blocks * load.in_flight / H100.dram_latency_s)
    expected = little * max(1.0, max(steps) / (mean * rounds))
    assert seconds["memory latency"] == pytest.approx(expected)
    if n == 64 * 100:
        assert expected >= max(steps) * H100.dram_latency_s / load.depth


@tl.kernel(warps=4)
def i8_matmul(
    a: tl.Tensor[tl.i8, "M", "K"],
    b: tl.Tensor[tl.i8, "K", "N"],
    c: tl.Tensor[tl.i32, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.i32)
    for k in tl.range(0, K, BK, stages=3):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc)


#: Dense 8-bit integer tensor-core peaks from the data sheets: H100 SXM5 1979 TOPS,
#: GeForce RTX 3090 284 TOPS (GA102 whitepaper: 4x its 71 TFLOPS of f16 with f32
#: accumulation, not the 2x of A100 and H100).
I8_H100, I8_RTX3090 = 1979e12, 284e12


@needs_disassembler
def test_an_int8_matmul_counts_integer_ops_against_the_int8_peak():
    """The user's IMMA kernel: 137 GOP reported as 137 GOP against mma.sync's i8 rate
    (2/3 of the data sheet's on H100, as for f16), not as 68.7 GFLOP against f16's."""
    m = n = k = 4096
    ops = 2 * m * n * k
    report = i8_matmul.compile(target="sm_90a").perf(M=m, N=n, K=k)
    sync_i8 = I8_H100 * 2 / 3
    assert report.mma_int_ops == ops and report.mma_flops == 0
    tensor = next(b for b in report.bounds if b.name == "tensor cores")
    assert tensor.seconds == pytest.approx(ops / sync_i8)
    assert f"{ops / 1e9:.4g} GOP / {sync_i8 / 1e12:.4g} TOPS (mma.sync i8)" in tensor.detail
    assert "GFLOP" not in tensor.detail
    assert report.tensor_peak == f"mma.sync i8 peak ({sync_i8 / 1e12:.4g} TOPS)"
    assert report.tensor_fraction == pytest.approx(ops / report.predicted_seconds / sync_i8)
    assert f"of the mma.sync i8 peak ({sync_i8 / 1e12:.4g} TOPS)" in str(report)


def test_int8_dots_are_floored_at_the_int8_peak():
    """The block IR's integer dots are integer ops, apart from the float dots' flops."""
    from tilelang.runtime.perf_trips import dot_ops

    m = n = k = 1024
    fn = i8_matmul.stages()["plan_registers"]
    per_block = 2 * 128 * 128 * k
    assert dot_ops(fn, {"M": m, "N": n, "K": k}) == (0.0, per_block)


@needs_disassembler
def test_an_int8_matmul_on_a_geforce_card_runs_at_its_own_int8_peak():
    m = n = k = 2048
    report = i8_matmul.compile(target="sm_86").perf(M=m, N=n, K=k)
    tensor = next(b for b in report.bounds if b.name == "tensor cores")
    assert tensor.seconds == pytest.approx(2 * m * n * k / I8_RTX3090)
