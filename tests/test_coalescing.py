"""Coalescing of global accesses (`tilelang.lowering.coalescing`, recorded in
`kernel.stats`, read back by the static performance report through
`tilelang.runtime.perf_sectors`).

Every expected sector count is computed here from first principles: each lane's byte
addresses from the layout's table (`Layout.table`, the tile index each thread holds)
and the tensor's row-major strides, the sectors as address // 32 in Python sets. A
runtime row stride is taken as 2**20 elements (far apart), as the launch's 8192 would
be. The perf parts need a SASS disassembler; speed is never asserted."""

import math
from collections import Counter

import pytest
from conftest import load_example, marked_line

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.layout import local
from tilelang.ir.visit import walk
from tilelang.target import HARDWARE

needs_disassembler = pytest.mark.usefixtures("disassembler")

#: The default layout of a [64, 64] f32 tile over 4 warps (what `tl.load` chooses).
DEFAULT = local(8, 1).spatial(8, 16).local(1, 4)
FAR = 2**20  # a runtime row stride, in elements
SIZES = {"M": 8192, "N": 8192}


@tl.kernel(warps=4)
def copy(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tl.store(y, [bm * BM, bn * BN], tl.load(x, [bm * BM, bn * BN], [BM, BN]))


@tl.kernel(warps=4)
def transpose(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "N", "M"],
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tl.store(y, [bn * BN, bm * BM], tl.transpose(tl.load(x, [bm * BM, bn * BN], [BM, BN])))  # <- y


@tl.kernel(warps=4)
def transposed_load(
    x: tl.Tensor[tl.f32, "N", "M"],
    y: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [bn * BN, bm * BM], [BN, BM], layout=DEFAULT.permute((1, 0)))  # <- x
    tl.store(y, [bm * BM, bn * BN], tl.transpose(tile))


@tl.kernel(warps=4)
def staged_transpose(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "N", "M"],
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    stage = tl.shared([BN, BM], tl.f32)
    stage.store(tl.transpose(tl.load(x, [bm * BM, bn * BN], [BM, BN])))
    tl.store(y, [bn * BN, bm * BM], stage.load())


@tl.kernel(warps=4)
def narrow_rows(x: tl.Tensor[tl.f32, "M", "W"], y: tl.Tensor[tl.f32, "M", "W"]):
    bm = tl.blocks(tl.cdiv(M, 64))
    tl.store(y, [bm * 64, 0], tl.load(x, [bm * 64, 0], [64, 2]))  # <- narrow


# --------------------------------------------------------------------------- the oracle


def oracle(layout, row_stride: int, elem: int, run: int):
    """(Counter of (sectors, minimum) per warp request, the sectors each warp's requests
    touch together summed over warps, the fewest their distinct bytes need), for a 2-D
    tile of `layout` accessed in runs of `run` elements of `elem` bytes (one instruction
    each, at most 16 bytes) from a row-major tensor with rows `row_stride` elements
    apart, the box at a sector boundary. Layouts here have no replication."""
    table = layout.table()
    requests, union, least = Counter(), 0, 0
    for w in range(layout.num_threads // 32):
        warp_sectors, warp_bytes = set(), set()
        for li in range(0, layout.num_locals, run):
            sectors, starts = set(), set()
            for lane in range(32):
                row, col = (int(v) for v in table[32 * w + lane, li])
                address = (row * row_stride + col) * elem
                starts.add(address)
                sectors |= {address // 32, (address + run * elem - 1) // 32}
            requests[(len(sectors), math.ceil(len(starts) * run * elem / 32))] += 1
            warp_sectors |= sectors
            warp_bytes |= {a + i for a in starts for i in range(run * elem)}
        union += len(warp_sectors)
        least += math.ceil(len(warp_bytes) / 32)
    return requests, union, least


def access(build, kind):
    """(layout, elements per access) of the kernel's one global access of `kind`."""
    fn = build.stages[list(build.stages)[-1]]
    found = [i for i in walk(fn) if isinstance(i, kind)]
    assert len(found) == 1
    instr = found[0]
    tile = instr.result if isinstance(instr, ir.Load) else instr.value
    return tile.type.layout, instr.attr("elems") or 1


def sector_stats(build):
    return {k: v for k, v in build.stats.items() if "_sectors_" in k}


# --------------------------------------------------------------------------- the counts


def test_the_copy_moves_the_fewest_sectors():
    build = copy.compile(target="sm_90")
    for kind in (ir.Load, ir.Store):
        layout, run = access(build, kind)
        requests, union, least = oracle(layout, FAR, 4, run)
        assert all(s == m for s, m in requests), requests  # the oracle agrees: coalesced
        assert union == least
    assert sector_stats(build) == {}


def test_the_transposed_store_touches_a_sector_per_row():
    build = transpose.compile(target="sm_90")
    layout, run = access(build, ir.Store)
    requests, _, _ = oracle(layout, FAR, 4, run)
    assert all(s > m for s, m in requests)  # every request uncoalesced
    line = marked_line(transpose, "# <- y")
    expected = {
        f"global_store_sectors_{s}_of_{m} y test_coalescing.py:{line}": n
        for (s, m), n in requests.items()
    }
    assert sector_stats(build) == expected
    # a request's lanes write 4 bytes each: 128 bytes, 4 sectors at best; the lanes
    # sharing a row of y write adjacent elements, so it costs a sector per row
    rows = {int(layout.table()[lane, 0][0]) for lane in range(32)}
    assert set(requests) == {(len(rows), 4)}


def test_the_transposed_load_is_counted_per_request_and_per_warp():
    build = transposed_load.compile(target="sm_90")
    layout, run = access(build, ir.Load)
    requests, union, least = oracle(layout, FAR, 4, run)
    line = marked_line(transposed_load, "# <- x")
    expected = {
        f"global_load_sectors_{s}_of_{m} x test_coalescing.py:{line}": n
        for (s, m), n in requests.items()
    }
    expected[f"global_load_warp_sectors_{union}_of_{least} x test_coalescing.py:{line}"] = 1
    assert union > least
    assert sector_stats(build) == expected


def test_a_runtime_row_length_puts_rows_far_apart():
    build = narrow_rows.compile(target="sm_90")
    layout, run = access(build, ir.Load)
    requests, _, _ = oracle(layout, FAR, 4, run)
    line = marked_line(narrow_rows, "# <- narrow")
    assert (
        f"global_load_sectors_{max(requests)[0]}_of_{max(requests)[1]} x test_coalescing.py:{line}"
        in sector_stats(build)
    )
    # the same tile of a tensor whose rows are a literal 2 elements long is contiguous
    literal = tl.kernel(warps=4)(_literal_rows)
    layout, run = access(literal.compile(target="sm_90"), ir.Load)
    dense, _, _ = oracle(layout, 2, 4, run)
    assert all(s == m for s, m in dense)
    assert sector_stats(literal.compile(target="sm_90")) == {}


def _literal_rows(x: tl.Tensor[tl.f32, "M", 2], y: tl.Tensor[tl.f32, "M", 2]):
    bm = tl.blocks(tl.cdiv(M, 64))
    tl.store(y, [bm * 64, 0], tl.load(x, [bm * 64, 0], [64, 2]))


def test_staging_through_shared_memory_coalesces_the_store():
    assert sector_stats(staged_transpose.compile(target="sm_90")) == {}


@pytest.mark.parametrize(
    ("module", "kernel"), [("vector_add", "vector_add"), ("softmax", "softmax")]
)
def test_coalesced_examples_report_nothing(module, kernel):
    build = getattr(load_example(module), kernel).compile(target="sm_90")
    assert sector_stats(build) == {}


# --------------------------------------------------------------------------- the report


@needs_disassembler
def test_the_report_names_the_transposed_store_and_keeps_the_prediction():
    plain = copy.compile(target="sm_90").perf(**SIZES)
    report = transpose.compile(target="sm_90").perf(**SIZES)
    line = marked_line(transpose, "# <- y")
    text = str(report)
    assert f"store y at test_coalescing.py:{line}: " in text
    assert "stage it through shared memory" in text
    assert [(r.kind, r.tensor) for r in report.sectors] == [("store", "y")]
    # stores are listed, not charged: the model has no L2 bound
    assert report.predicted_seconds == pytest.approx(plain.predicted_seconds)
    assert "uncoalesced" not in str(plain) and plain.sectors == ()


@needs_disassembler
def test_the_transposed_load_is_charged_its_whole_sectors():
    plain = copy.compile(target="sm_90").perf(**SIZES)
    build = transposed_load.compile(target="sm_90")
    report = build.perf(**SIZES)
    layout, run = access(build, ir.Load)
    _, union, least = oracle(layout, FAR, 4, run)
    tensor = SIZES["M"] * SIZES["N"] * 4
    floor = (tensor * union / least + tensor) / HARDWARE["sm_90"].dram_bytes_per_s
    assert report.bounds[0].name == "DRAM floor"
    assert report.bounds[0].seconds == pytest.approx(floor)
    assert report.predicted_seconds > plain.predicted_seconds
    bandwidth = HARDWARE["sm_90"].dram_bytes_per_s
    assert report.dram_fraction == pytest.approx(2 * tensor / bandwidth / report.predicted_seconds)
    line = marked_line(transposed_load, "# <- x")
    assert f"load x at test_coalescing.py:{line}: " in str(report)


# --------------------------------------------------------------------------- the box's footprint


@tl.kernel(warps=4)
def column_scales(
    s: tl.Tensor[tl.f16, "N", "KG"],
    y: tl.Tensor[tl.f32, "N"],
    BN: tl.constexpr = 32,
    BKG: tl.constexpr = 4,
):
    """Group scales stored [N, K / G] read a [BN, BKG] box an iteration, as a quantized
    matmul's k loop does: rows of 8 bytes, 128 bytes apart."""
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN, BKG], tl.f32)
    for k in tl.range(0, KG, BKG):
        acc = acc + tl.load(s, [bn * BN, k], [BN, BKG]).to(tl.f32)  # <- scales
    tl.store(y, [bn * BN], tl.sum(acc, axis=1))


def footprint_oracle(shape, row_stride_elems, bits):
    """Sectors a 2-D box starting a sector touches, every byte of every element listed."""
    sectors = set()
    for r in range(shape[0]):
        for c in range(shape[1]):
            first = (r * row_stride_elems + c) * bits
            for bit in range(first, first + bits, 8):
                sectors.add(bit // 8 // 32)
    return len(sectors)


@pytest.mark.parametrize(
    ("shape", "extents", "bits", "stride"),
    [
        ((32, 4), (None, None), 16, FAR),  # rows far apart: a sector each
        ((32, 4), (None, 4), 16, 4),  # whole rows of a literal width: contiguous
        ((16, 64), (None, None), 32, FAR),  # 256-byte rows: whole sectors
        ((8, 12), (None, 16), 8, 16),  # literal 16-byte rows, 12 of them read
        ((4, 48), (None, None), 4, FAR),  # u4 codes: 24-byte rows
    ],
)
def test_the_footprint_counts_the_sectors_the_box_lies_in(shape, extents, bits, stride):
    from tilelang.runtime.perf_sectors import footprint

    box = footprint(shape, extents, bits)
    assert box.footprint == footprint_oracle(shape, stride, bits)
    assert box.nbytes == shape[0] * shape[1] * bits / 8


@needs_disassembler
def test_short_rows_are_not_charged_as_a_layout_that_wastes_sectors():
    """Each warp reads 8 rows of 8 bytes: 8 sectors for 64 bytes, which the old minimum
    called 2. But the box's 32 rows lie in 32 sectors whatever its layout: the layout
    wastes nothing beyond them, so DRAM is charged nothing and the hint says to store
    the tensor transposed, not to change the layout."""
    build = column_scales.compile(target="sm_90", assume={"KG": 64})
    layout, run = access(build, ir.Load)
    requests, union, least = oracle(layout, FAR, 2, run)
    footprint = footprint_oracle((32, 4), FAR, 16)
    density = 32 * 4 * 2 / (32 * footprint)
    assert (union, least, footprint) == (32, 8, 32)  # the box's minimum is its footprint
    report = build.perf(N=28672, KG=64)
    (row,) = report.sectors
    assert row.charged == 1.0
    assert {(row.sectors, row.minimum, row.least)} == {
        (s, m, max(m, math.ceil(m / density))) for s, m in requests
    }
    nbytes = 28672 * 64 * 2 + 28672 * 4
    assert report.bounds[0].seconds == pytest.approx(nbytes / HARDWARE["sm_90"].dram_bytes_per_s)
    text = str(report)
    line = marked_line(column_scales, "# <- scales")
    assert f"load s at test_coalescing.py:{line}: " in text and "32 rows of 8 B" in text
    assert "store the tensor with the box's long dim last" in text
    assert "load in the default layout" not in text
