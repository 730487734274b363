"""The static performance report's bound on global atomics to one address
(`tilelang.runtime.perf_atomics`, `perf_bounds`): the L2 applies the atomics to one
address one after another, one a clock (the Kepler GK110 whitepaper's figure, the
report's stated assumption), so a tensor of E elements that receives U updates takes
at least U / E clocks. Expected counts come from the kernels' definitions."""

import pytest

import tilelang as tl
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

H100 = HARDWARE["sm_90"]


@tl.kernel(warps=4)
def histogram(x: tl.Tensor[tl.f32, "N"], hist: tl.Tensor[tl.i32, "NB"], BLOCK: tl.constexpr = 1024):
    """Triton's histogram: every element adds 1 to its bin (x in [0, 1))."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    inside = b * BLOCK + tl.arange(0, BLOCK) < N
    bins = (tl.load(x, [b * BLOCK], [BLOCK]) * NB).to(tl.i32)
    tl.atomic_add(hist, [bins], 1, mask=inside)


@tl.kernel(warps=4)
def column_sums(x: tl.Tensor[tl.f32, "M", 64], out: tl.Tensor[tl.f32, 64], STEPS: tl.constexpr = 4):
    """Each block adds the column sums of STEPS tiles of 16 rows into `out`, one
    atomic box of 64 elements a step."""
    b = tl.blocks(tl.cdiv(M, 16 * STEPS))
    for s in tl.range(0, STEPS):
        rows = tl.load(x, [(b * STEPS + s) * 16, 0], [16, 64])
        tl.atomic_add(out, [0], tl.sum(rows, axis=0))


@needs_disassembler
def test_a_histogram_into_37_bins_waits_on_its_busiest_bin():
    """16M elements into 37 bins: some bin receives at least 16M / 37 additions, one a
    clock: about 248 us on H100, where the DRAM floor is 20 us (the user's report said
    27 us). Masked lanes are counted, and the text says so."""
    n, bins = 1 << 24, 37
    report = histogram.compile(target="sm_90a", assume={"NB": 1}).perf(N=n, NB=bins)
    atomics = next(b for b in report.bounds if b.name == "atomics on one address")
    assert atomics.seconds == pytest.approx(n / bins / H100.clock_hz)
    assert report.binds == "atomics on one address"
    assert f"{n:.4g} updates to hist's {bins} elements" in atomics.detail
    assert "masked lanes counted" in atomics.detail and "assumed" in atomics.detail


@needs_disassembler
def test_atomics_in_a_loop_count_every_iteration_of_every_block():
    m, steps = 16 * 4 * 4096, 4
    blocks = m // (16 * steps)
    report = column_sums.compile(target="sm_90").perf(M=m)
    atomics = next(b for b in report.bounds if b.name == "atomics on one address")
    per_address = blocks * steps  # each step of each block adds once to every column
    assert atomics.seconds == pytest.approx(per_address / H100.clock_hz)
    assert "masked" not in atomics.detail
