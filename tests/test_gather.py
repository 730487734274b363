"""Gathers and scatters: `tl.load(t, [rows, 0], shape)` with an integer tile among the
offsets reads, along that dimension, the coordinate the tile gives each element (numpy's
integer-array indexing, broadcast to the shape); out-of-range coordinates read the fill
value and are never accessed. `tl.store(t, [rows, 0], tile)` writes the same places and
skips the out-of-range ones. Interpreter ≡ CPU backend ≡ numpy, NVRTC builds for sm_80 and sm_90
with 16-byte row loads, the verifier's rules, errors at the user's line."""

import warnings

import numpy as np
import pytest
from conftest import (
    assert_edit_rejected,
    assert_reported,
    assert_text_round_trips,
    staged_gather,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang.ir.parser import parse_function
from tilelang.passes.software_pipeline import PipelineWarning
from tilelang.runtime.perf_traffic import tensor_bytes
from tilelang.runtime.sass import disassemble, opcodes


@tl.kernel(warps=4)
def gather_rows(
    table: tl.Tensor["DT", "N", "D"],
    ids: tl.Tensor[tl.i32, "R"],
    out: tl.Tensor["DT", "R", "D"],
    DT: tl.constexpr = tl.f16,
    BR: tl.constexpr = 16,
    BD: tl.constexpr = 64,
    FILL: tl.constexpr = 0,
):
    """Rows ids[r] of `table` into row r of `out`, BR rows by BD columns a block."""
    br, bd = tl.blocks(tl.cdiv(R, BR), tl.cdiv(D, BD))
    rows = tl.load(ids, [br * BR], [BR])
    tl.store(out, [br * BR, bd * BD], tl.load(table, [rows[:, None], bd * BD], [BR, BD], FILL))


def gathered(table: np.ndarray, ids: np.ndarray, fill) -> np.ndarray:
    """numpy: row ids[r] of table, or a row of the fill where ids[r] is out of range."""
    inside = (ids >= 0) & (ids < table.shape[0])
    rows = table[np.clip(ids, 0, table.shape[0] - 1)]
    return np.where(inside[:, None], rows, np.asarray(fill).astype(table.dtype))


@pytest.mark.parametrize("dtype", ["f16", "f32", "u8", "i32", "u4"])
@settings(max_examples=4, deadline=None)
@given(
    n=st.integers(1, 40),
    r=st.integers(1, 40),
    d=st.sampled_from([8, 64, 100, 128]),
    fill=st.sampled_from([0, 5]),
    seed=st.integers(0, 1000),
)
def test_a_gather_reads_the_indexed_rows_and_the_fill_outside(dtype, n, r, d, fill, seed):
    dt = tl.dtype(dtype)
    rng = np.random.default_rng(seed)
    native = {"f16": np.float16, "f32": np.float32, "u8": np.uint8, "i32": np.int32}
    if dt.is_float:
        table = rng.standard_normal((n, d)).astype(native[dtype])
    else:
        table = rng.integers(dt.min, dt.max + 1, size=(n, d)).astype(native.get(dtype, np.uint8))
    ids = rng.integers(-3, n + 3, size=r).astype(np.int32)  # some outside the table
    expected = gathered(table, ids, fill)
    as_tensor = (lambda v: tl.pack(v, dt)) if dt.bits < 8 else (lambda v: v)
    out = np.zeros((r, d), table.dtype)
    interpreted = gather_rows.interpret(as_tensor(table), ids, as_tensor(out), DT=dt, FILL=fill)
    compiled = gather_rows(as_tensor(table), ids, as_tensor(out), DT=dt, FILL=fill)
    unpack = (lambda v: v.unpack()) if dt.bits < 8 else (lambda v: v)
    assert np.array_equal(unpack(interpreted), expected)
    assert np.array_equal(unpack(compiled), unpack(interpreted))


@tl.kernel(warps=2)
def gather_columns(
    x: tl.Tensor[tl.f32, "M", "N"],
    cols: tl.Tensor[tl.i32, "C"],
    out: tl.Tensor[tl.f32, "M", "C"],
    BM: tl.constexpr = 8,
    BC: tl.constexpr = 32,
):
    """Columns cols[c] of x: the gathered dim is the last one (one element per access)."""
    bm = tl.blocks(tl.cdiv(M, BM))
    picked = tl.load(cols, [0], [BC])
    tl.store(out, [bm * BM, 0], tl.load(x, [bm * BM, picked[None, :]], [BM, BC], fill=-1.0))


@settings(max_examples=5, deadline=None)
@given(m=st.integers(1, 20), n=st.integers(1, 50), c=st.integers(1, 32), seed=st.integers(0, 99))
def test_a_gather_along_the_last_dim_picks_columns(m, n, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n)).astype(np.float32)
    cols = rng.integers(-2, n + 2, size=c).astype(np.int32)
    expected = gathered(x.T, cols, -1.0).T
    interpreted = gather_columns.interpret(x, cols, np.zeros((m, c), np.float32))
    compiled = gather_columns(x, cols, np.zeros((m, c), np.float32))
    assert np.array_equal(interpreted, expected)
    assert np.array_equal(compiled, interpreted)


# --------------------------------------------------------------------------- scatters


@tl.kernel(warps=4)
def scatter_rows(
    x: tl.Tensor["DT", "R", "D"],
    ids: tl.Tensor[tl.i32, "R"],
    out: tl.Tensor["DT", "N", "D"],
    DT: tl.constexpr = tl.f16,
    BR: tl.constexpr = 16,
    BD: tl.constexpr = 64,
):
    """Row r of x into row ids[r] of `out` (rows outside `out` are dropped). The ids
    past R read -1, so the padding rows of the last block go nowhere."""
    br, bd = tl.blocks(tl.cdiv(R, BR), tl.cdiv(D, BD))
    rows = tl.load(ids, [br * BR], [BR], fill=-1)
    tl.store(out, [rows[:, None], bd * BD], tl.load(x, [br * BR, bd * BD], [BR, BD]))


@pytest.mark.parametrize("dtype", ["f16", "f32", "u4"])
@settings(max_examples=4, deadline=None)
@given(n=st.integers(1, 40), d=st.sampled_from([8, 64, 100]), seed=st.integers(0, 1000))
def test_a_scatter_writes_rows_where_the_index_says_and_skips_the_outside(dtype, n, d, seed):
    dt = tl.dtype(dtype)
    rng = np.random.default_rng(seed)
    # distinct targets (a permutation of the table's rows and some outside it)
    ids = rng.permutation(np.arange(-3, n + 3))[: rng.integers(1, n + 7)].astype(np.int32)
    if dt.is_float:
        x = rng.standard_normal((len(ids), d)).astype({"f16": np.float16, "f32": np.float32}[dtype])
        before = np.full((n, d), 7, x.dtype)
    else:
        x = rng.integers(0, 16, size=(len(ids), d)).astype(np.uint8)
        before = np.full((n, d), 7, np.uint8)
    expected = before.copy()
    inside = (ids >= 0) & (ids < n)
    expected[ids[inside]] = x[inside]
    as_tensor = (lambda v: tl.pack(v, dt)) if dt.bits < 8 else (lambda v: v.copy())
    unpack = (lambda v: v.unpack()) if dt.bits < 8 else (lambda v: v)
    interpreted = scatter_rows.interpret(as_tensor(x), ids, as_tensor(before), DT=dt)
    compiled = scatter_rows(as_tensor(x), ids, as_tensor(before), DT=dt)
    assert np.array_equal(unpack(interpreted), expected)
    assert np.array_equal(unpack(compiled), unpack(interpreted))


# --------------------------------------------------------------------------- paged


@tl.kernel(warps=4)
def paged_gather_sum(
    cache: tl.Tensor[tl.f16, "NB", "BS", "D"],
    table: tl.Tensor[tl.i32, "B", "MB"],
    seq_lens: tl.Tensor[tl.i32, "B"],
    out: tl.Tensor[tl.f32, "B", "D"],
    BB: tl.constexpr = 4,
    BS: tl.constexpr = 16,
    D: tl.constexpr = 64,
):
    """out[b] = Σ over the first seq_lens[b] tokens of sequence b (block j of it is
    cache[table[b, j]]), BB blocks per step: one gather of [BB, BS, D] rows a step."""
    b = tl.blocks(B)
    length = tl.load(seq_lens, [b])
    acc = tl.zeros([D], tl.f32)
    for j in tl.range(0, tl.cdiv(length, BS), BB):
        blocks = tl.load(table, [b, j], [1, BB]).reshape(BB)
        x = tl.load(cache, [blocks[:, None, None], 0, 0], [BB, BS, D]).to(tl.f32)
        token = (j + tl.arange(0, BB))[:, None] * BS + tl.arange(0, BS)[None, :]
        x = tl.where((token < length)[:, :, None], x, 0.0)
        acc = acc + tl.sum(tl.sum(x, axis=0), axis=0)
    tl.store(out, [b, 0], acc[None, :])


def paged_reference(cache, table, seq_lens) -> np.ndarray:
    """numpy float64: token t of sequence b is row t % BS of block table[b, t // BS]."""
    bs = cache.shape[1]
    out = np.zeros((len(seq_lens), cache.shape[2]))
    for b, n in enumerate(seq_lens):
        for token in range(n):
            out[b] += cache[table[b, token // bs], token % bs].astype(np.float64)
    return out


@settings(max_examples=6, deadline=None)
@given(
    seq_lens=st.lists(st.sampled_from([0, 1, 7, 16, 100, 257]), min_size=1, max_size=4),
    seed=st.integers(0, 99),
)
def test_paged_sum_gathers_the_blocks_of_each_sequence(seq_lens, seed):
    rng = np.random.default_rng(seed)
    max_blocks = max(1, -(-max(seq_lens) // 16))
    blocks = len(seq_lens) * max_blocks + 5
    cache = rng.standard_normal((blocks, 16, 64)).astype(np.float16)
    table = rng.permutation(blocks)[: len(seq_lens) * max_blocks].reshape(len(seq_lens), -1)
    table = table.astype(np.int32)  # not contiguous, not in order
    lengths = np.array(seq_lens, np.int32)
    expected = paged_reference(cache, table, lengths)
    out = np.zeros((len(seq_lens), 64), np.float32)
    interpreted = paged_gather_sum.interpret(cache, table, lengths, out.copy())
    compiled = paged_gather_sum(cache, table, lengths, out.copy())
    tolerance = 1e-6 * (max(seq_lens) + 1) * np.abs(cache).max()
    assert np.abs(interpreted - expected).max() <= tolerance
    assert np.abs(compiled - interpreted).max() <= tolerance


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_gathers_compile_for_sm80_and_sm90_with_16_byte_rows(arch):
    builds = [gather_rows.compile(target=arch), paged_gather_sum.compile(target=arch)]
    builds.append(gather_columns.compile(target=arch))
    builds.append(scatter_rows.compile(target=arch))
    for build in builds:
        assert build.resources.registers > 0
        assert build.resources.spill_store_bytes == 0 and build.resources.spill_load_bytes == 0
    for build in builds[:2]:  # rows of 64 f16 move 16 bytes per access
        assert dict(build.thread.stats).get("gather_load_bytes_16", 0) >= 1
    assert "gather_load_bytes_16" not in dict(builds[2].thread.stats)
    assert dict(builds[3].thread.stats).get("scatter_store_bytes_16", 0) >= 1


@pytest.mark.usefixtures("disassembler")
def test_gathered_rows_are_128_bit_loads_in_sass():
    ops = opcodes(disassemble(gather_rows.compile(target="sm_90").cubin))
    assert any(op.startswith("LDG.E.128") for op in ops), sorted(ops)
    assert not any(op.startswith(("LDL", "STL")) for op in ops)


# --------------------------------------------------------------------------- the IR

TEXT = """\
kernel f(%x: tensor<i32, [N]>, %y: tensor<f32, [N, 8]>) sizes(%N: i32) warps(1) {
  %bx = blocks %N : i32
  %ids = load %x[0:i32] : tile<i32, [32]>
  %rows = reshape %ids : tile<i32, [32, 1]>
  %g = gather %y[0:i32, 0:i32], %rows, axis=0 fill(2.0:f32) : tile<f32, [32, 8]>
  scatter %y[0:i32, 0:i32], %rows, axis=0, %g
}
"""


def test_the_gather_and_scatter_text_form_round_trips_and_verifies():
    assert_text_round_trips(parse_function(TEXT), paged_gather_sum.specialize())


@pytest.mark.parametrize(
    "before, after, fragment",
    [
        ("reshape %ids : tile<i32, [32, 1]>", "reshape %ids : tile<i32, [1, 32]>", "index tile"),
        ("axis=0", "axis=2", "an axis in 0..1"),
        ("fill(2.0:f32)", "fill(2:i32)", "a fill value of dtype f32"),
        (": tile<f32, [32, 8]>", ": tile<f16, [32, 8]>", "a result of dtype f32"),
        ("axis=0, %g", "axis=0, %rows", "a stored tile of dtype f32"),
        ("axis=0, %g", "axis=0, %ids", "a stored tile of rank 2"),
    ],
)
def test_the_verifier_rejects_misused_gathers_and_scatters(before, after, fragment):
    assert_edit_rejected(TEXT, before, after, fragment)


# --------------------------------------------------------------------------- DSL errors


def test_a_float_index_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N", 8], y: tl.Tensor[tl.f32, "N"]):
        where = tl.load(y, [0], [32])
        tl.load(x, [where[:, None], 0], [32, 8])  # <- error

    assert_reported(k, "index tile of offset 0 (a gather or scatter) must hold integers", "f32")


def test_two_gathered_dims_are_reported_at_their_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N", "N"], ids: tl.Tensor[tl.i32, "N"]):
        i = tl.load(ids, [0], [32])
        tl.load(x, [i[:, None], i[None, :]], [32, 32])  # <- error

    assert_reported(k, "indexes one dimension", "offsets 0, 1")


def test_an_index_of_another_shape_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N", 8], ids: tl.Tensor[tl.i32, "N"]):
        i = tl.load(ids, [0], [16])
        tl.load(x, [i[:, None], 0], [32, 8])  # <- error

    assert_reported(k, "shape [16, 1]", "does not broadcast to the tile shape [32, 8]")


def test_a_gather_without_a_shape_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N", 8], ids: tl.Tensor[tl.i32, "N"]):
        i = tl.load(ids, [0], [16])
        tl.load(x, [i[:, None], 0])  # <- error

    assert_reported(k, "give the shape of the tile to read")


# --------------------------------------------------------------------------- pipelining, perf


def test_a_gather_under_stages_is_copied_ahead_and_counted_in_stats():
    # (tests/test_gather_pipeline.py: results, SASS, and the gathers that stay and warn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PipelineWarning)
        build = staged_gather().compile(target="sm_90")
    stats = dict(build.thread.stats)
    assert stats.get("pipeline_async") == 1 and "pipeline_skipped" not in stats, stats


def test_the_dram_floor_counts_gathered_scattered_and_scalar_read_tensors():
    paged = paged_gather_sum.specialize()
    shapes = {"cache": (10, 16, 64), "table": (4, 3), "seq_lens": (4,), "out": (4, 64)}
    assert tensor_bytes(paged, shapes) == 10 * 16 * 64 * 2 + 4 * 3 * 4 + 4 * 4 + 4 * 64 * 4
    scatter = scatter_rows.specialize()
    shapes = {"x": (5, 64), "ids": (5,), "out": (9, 64)}
    assert tensor_bytes(scatter, shapes) == 5 * 64 * 2 + 5 * 4 + 9 * 64 * 2
