"""The static performance report where trip counts differ from block to block
(`tilelang.runtime.perf_loop`'s "Trip count"): a loop whose bounds depend on the block
index counts its mean over the grid (every block, or an even sample of a large grid),
an inner loop whose bounds depend on an outer loop's variable its mean over that loop,
and the DRAM floor the bytes the tiles read; the tensor-core fraction names its peak;
a split-K launch lists its workspace. Expected numbers are computed here with Python
loops from the kernels' definitions, never from the code under test."""

import pytest

import tilelang as tl
from tilelang.runtime import perf_loop
from tilelang.runtime.perf_loop import find_main_loop, trip_count
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
    monkeypatch.setattr(perf_loop, "EXACT_BLOCKS", 100)
    monkeypatch.setattr(perf_loop, "SAMPLE_BLOCKS", 50)
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
    monkeypatch.setattr(perf_loop, "EXACT_OUTER", 8)
    monkeypatch.setattr(perf_loop, "SAMPLE_OUTER", 4)
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
