"""`tl.store(..., mask=)` and `tl.atomic_add` with an index tile among its offsets.

Masked stores: box stores with a ragged mask, with masks of one row or one column
broadcast over a 2-D tile, with random masks (runs of a vector store partly selected),
scatters with a mask, and packed u4 codes whose neighbours in the byte are masked out.
Elements masked out keep what the tensor held (a sentinel), on the interpreter and on the
CPU backend, against numpy references written from the definitions.

Scatter-additions: histograms with many duplicate bins over several blocks (i32 exact,
f32 with integer-valued weights, so any order of the additions gives the same sums),
blocks on several host threads, rows added at indexed places with a broadcast mask; the
interpreter's order (row-major, one rounding per addition). Then CUDA for sm_80 and
sm_90 (atomic reductions for the scatter-add), the IR verifier and the errors at the
user's line.
"""

import numpy as np
import pytest
from conftest import NUMPY_OF, assert_reported, plain, runs, statements, values_of

import tilelang as tl
from tilelang.ir import thread as t
from tilelang.ir.parser import parse_function
from tilelang.ir.verify import IRVerifyError, verify

RNG = np.random.default_rng(20250301)
NUMPY = NUMPY_OF


def sentinel_of(dtype: tl.DType, shape) -> np.ndarray:
    """An output full of a value no stored element has (packed: the all-ones code)."""
    if dtype.bits < 8:
        return tl.pack_codes(np.full(shape, 2**dtype.bits - 1, np.uint8), dtype)
    return np.full(shape, -7 if dtype.is_float else 111, NUMPY[dtype.name])


# --------------------------------------------------------------------------- masked boxes


@tl.kernel(warps=1)
def store_prefix(
    x: tl.Tensor["T", "N"],
    out: tl.Tensor["T", "N"],
    limit: tl.i32,
    T: tl.constexpr = tl.f32,
    BLOCK: tl.constexpr = 64,
):
    """The first `limit` elements of each block of x into out: a ragged mask."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    tl.store(out, [b * BLOCK], tl.load(x, [b * BLOCK], [BLOCK]), mask=tl.arange(0, BLOCK) < limit)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u8, tl.i64, tl.u4], ids=str)
@pytest.mark.parametrize(("n", "limit"), [(256, 37), (250, 5), (200, 64), (128, 0)])
def test_a_ragged_mask_writes_a_prefix_of_each_block(dtype, n, limit):
    x = values_of(RNG, dtype, n)
    position = np.arange(n) % 64
    for run in runs(store_prefix):
        out = sentinel_of(dtype, n)
        run(x, out, limit, T=dtype)
        expected = np.where(position < limit, plain(x), plain(sentinel_of(dtype, n)))
        np.testing.assert_array_equal(plain(out), expected)


def test_a_partly_selected_vector_run_is_written_element_by_element():
    """f32 in runs of 4 (16-byte stores): a run the mask cuts writes its selected
    elements one by one, and whole runs stay 16-byte stores."""
    compiled = store_prefix.compile(T=tl.f32, BLOCK=128)  # 4 elements a thread
    widths = {s.width for s in statements(compiled, t.GlobalStore)}
    assert 16 in widths and 4 in widths, widths
    assert dict(compiled.thread.stats).get("global_store_partial_run", 0) >= 1
    assert dict(compiled.thread.stats)["global_store_bytes_16"] == 1  # one run a thread


@tl.kernel(warps=2)
def store_rows(
    x: tl.Tensor["T", "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    rows: tl.i32,
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """The first `rows` rows of each [BM, BN] box: a [BM, 1] mask broadcast."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [bm * BM, bn * BN], [BM, BN])
    tl.store(out, [bm * BM, bn * BN], tile, mask=(tl.arange(0, BM) < rows)[:, None])


@tl.kernel(warps=2)
def store_columns(
    x: tl.Tensor["T", "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 32,
):
    """The columns c of each box with c % 3 != 1: a [1, BN] mask broadcast."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    tile = tl.load(x, [bm * BM, bn * BN], [BM, BN])
    tl.store(out, [bm * BM, bn * BN], tile, mask=(tl.arange(0, BN) % 3 != 1)[None, :])


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u4], ids=str)
@pytest.mark.parametrize(("m", "n"), [(16, 64), (13, 70)])
def test_row_and_column_masks_broadcast_over_the_tile(dtype, m, n):
    x = values_of(RNG, dtype, (m, n))
    row, col = np.indices((m, n))
    for run in runs(store_rows):
        out = sentinel_of(dtype, (m, n))
        run(x, out, 3, T=dtype)
        keep = row % 8 < 3
        np.testing.assert_array_equal(
            plain(out), np.where(keep, plain(x), plain(sentinel_of(dtype, (m, n))))
        )
    for run in runs(store_columns):
        out = sentinel_of(dtype, (m, n))
        run(x, out, T=dtype)
        keep = col % 32 % 3 != 1
        np.testing.assert_array_equal(
            plain(out), np.where(keep, plain(x), plain(sentinel_of(dtype, (m, n))))
        )


@tl.kernel(warps=4)
def store_where(
    x: tl.Tensor["T", "M", "N"],
    keep: tl.Tensor[tl.u8, "M", "N"],
    out: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
):
    """x into out where keep != 0: a mask from data, any pattern."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    at = [bm * BM, bn * BN]
    tl.store(out, at, tl.load(x, at, [BM, BN]), mask=tl.load(keep, at, [BM, BN]) != 0)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u8, tl.u4, tl.u3], ids=str)
@pytest.mark.parametrize(("m", "n"), [(32, 128), (21, 70)])
def test_a_random_mask_writes_exactly_the_selected_elements(dtype, m, n):
    """Every fourth row fully selected (whole runs), the others at random (runs cut
    anywhere, packed codes whose byte neighbours are not selected)."""
    x = values_of(RNG, dtype, (m, n))
    keep = (RNG.random((m, n)) < 0.5).astype(np.uint8)
    keep[::4] = 1
    for run in runs(store_where):
        out = sentinel_of(dtype, (m, n))
        run(x, keep, out, T=dtype)
        expected = np.where(keep != 0, plain(x), plain(sentinel_of(dtype, (m, n))))
        np.testing.assert_array_equal(plain(out), expected)


def test_masked_u4_codes_leave_their_byte_neighbours_alone():
    """Only odd codes selected: every byte holds one selected and one masked-out code;
    the masked-out half keeps its bits in the packed bytes."""

    @tl.kernel(warps=1)
    def odd_codes(x: tl.Tensor[tl.u4, "N"], out: tl.Tensor[tl.u4, "N"], B: tl.constexpr = 64):
        b = tl.blocks(tl.cdiv(N, B))
        tl.store(out, [b * B], tl.load(x, [b * B], [B]), mask=tl.arange(0, B) % 2 == 1)

    n = 320
    codes = RNG.integers(0, 16, n).astype(np.uint8)
    before = RNG.integers(0, 16, n).astype(np.uint8)
    for run in runs(odd_codes):
        out = tl.pack_codes(before, tl.u4)
        run(tl.pack_codes(codes, tl.u4), out)
        low, high = out.data & 0xF, out.data >> 4  # element 2i in the low nibble of byte i
        np.testing.assert_array_equal(low, before[0::2])
        np.testing.assert_array_equal(high, codes[1::2])


# --------------------------------------------------------------------------- masked scatters


@tl.kernel(warps=2)
def scatter_where(
    x: tl.Tensor["T", "R", "D"],
    rows: tl.Tensor[tl.i32, "R"],
    keep: tl.Tensor[tl.u8, "R", "D"],
    out: tl.Tensor["T", "V", "D"],
    T: tl.constexpr = tl.f32,
    BR: tl.constexpr = 16,
    BD: tl.constexpr = 32,
):
    """Row r of x into row rows[r] of out where keep holds."""
    r, d = tl.blocks(tl.cdiv(R, BR), tl.cdiv(D, BD))
    at = [r * BR, d * BD]
    ids = tl.load(rows, [r * BR], [BR], fill=-1)
    mask = tl.load(keep, at, [BR, BD]) != 0
    tl.store(out, [ids[:, None], d * BD], tl.load(x, at, [BR, BD]), mask=mask)


@pytest.mark.parametrize("dtype", [tl.f32, tl.f16, tl.u4], ids=str)
@pytest.mark.parametrize(("r", "v", "d"), [(40, 64, 32), (23, 50, 70)])
def test_a_masked_scatter_writes_selected_elements_to_their_rows(dtype, r, v, d):
    x = values_of(RNG, dtype, (r, d))
    rows = RNG.permutation(v + 6)[:r].astype(np.int32) - 3  # distinct, some outside
    keep = (RNG.random((r, d)) < 0.6).astype(np.uint8)
    keep[::3] = 1
    for run in runs(scatter_where):
        out = sentinel_of(dtype, (v, d))
        run(x, rows, keep, out, T=dtype)
        expected = plain(sentinel_of(dtype, (v, d))).copy()
        for i, row in enumerate(rows):
            if 0 <= row < v:
                chosen = keep[i] != 0
                expected[row, chosen] = plain(x)[i, chosen]
        np.testing.assert_array_equal(plain(out), expected)


# --------------------------------------------------------------------------- scatter-add


@tl.kernel(warps=4)
def histogram(
    values: tl.Tensor[tl.i32, "N"],
    weights: tl.Tensor["T", "N"],
    hist: tl.Tensor["T", "B"],
    T: tl.constexpr = tl.i32,
    BLOCK: tl.constexpr = 256,
):
    """hist[v] += w for the non-negative values (values >= B are outside hist)."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    bins = tl.load(values, [b * BLOCK], [BLOCK], fill=-1)
    tl.atomic_add(hist, [bins], tl.load(weights, [b * BLOCK], [BLOCK]), mask=bins >= 0)


@tl.kernel(warps=2)
def count(values: tl.Tensor[tl.i32, "N"], hist: tl.Tensor[tl.i32, "B"], BLOCK: tl.constexpr = 256):
    """The user's histogram: counts of the valid values."""
    b = tl.blocks(tl.cdiv(N, BLOCK))
    bins = tl.load(values, [b * BLOCK], [BLOCK], fill=-1)
    valid = (bins >= 0) & (bins < B)
    tl.atomic_add(hist, [bins], tl.full([BLOCK], 1, tl.i32), mask=valid)


def reference_histogram(values, weights, bins: int, dtype) -> np.ndarray:
    expected = np.zeros(bins, np.float64 if dtype.is_float else np.int64)
    for v, w in zip(values, weights, strict=True):
        if 0 <= v < bins:
            expected[v] += w
    return expected


@pytest.mark.parametrize("dtype", [tl.i32, tl.f32], ids=str)
@pytest.mark.parametrize(("n", "bins"), [(3000, 5), (1000, 37), (777, 1)])
def test_a_histogram_counts_every_duplicate_over_several_blocks(dtype, n, bins):
    values = RNG.integers(-3, bins + 3, n).astype(np.int32)
    weights = RNG.integers(-4, 9, n).astype(NUMPY[dtype.name])  # integers: exact in f32
    expected = reference_histogram(values, weights, bins, dtype)
    for run in runs(histogram):
        hist = np.full(bins, 10, NUMPY[dtype.name])
        run(values, weights, hist, T=dtype)
        np.testing.assert_array_equal(hist, expected + 10)


def test_the_users_histogram_counts_valid_values():
    values = RNG.integers(-50, 300, 5000).astype(np.int32)
    expected = np.bincount(values[(values >= 0) & (values < 256)], minlength=256)
    for run in runs(count):
        hist = np.zeros(256, np.int32)
        run(values, hist)
        np.testing.assert_array_equal(hist, expected)


def test_blocks_on_several_host_threads_lose_no_count():
    n, bins = 1 << 17, 3
    values = RNG.integers(0, bins, n).astype(np.int32)
    compiled = count.compile(assume=None)
    for workers in (2, 4):
        hist = np.zeros(bins, np.int32)
        compiled.cpu.launch({"values": values, "hist": hist, "N": n, "B": bins}, workers=workers)
        np.testing.assert_array_equal(hist, np.bincount(values, minlength=bins))


def test_the_interpreter_adds_duplicates_in_row_major_order_rounding_each_time():
    """f16: 2048 + 1 rounds to 2048, so the order of three additions into one bin shows."""
    values = np.zeros(3, np.int32)
    for weights, total in (([2048.0, 1.0, 1.0], 2048.0), ([1.0, 1.0, 2048.0], 2050.0)):
        hist = np.zeros(1, np.float16)
        histogram.interpret(values, np.array(weights, np.float16), hist, T=tl.f16, BLOCK=4)
        assert hist[0] == total


@tl.kernel(warps=4)
def add_rows(
    g: tl.Tensor["T", "R", "D"],
    ids: tl.Tensor[tl.i32, "R"],
    out: tl.Tensor["T", "V", "D"],
    T: tl.constexpr = tl.f32,
    BR: tl.constexpr = 32,
    BD: tl.constexpr = 32,
):
    """out[ids[r]] += g[r] for the rows with ids[r] >= 0 (an embedding's gradient)."""
    r, d = tl.blocks(tl.cdiv(R, BR), tl.cdiv(D, BD))
    rows = tl.load(ids, [r * BR], [BR], fill=-1)
    tile = tl.load(g, [r * BR, d * BD], [BR, BD])
    tl.atomic_add(out, [rows[:, None], d * BD], tile, mask=(rows >= 0)[:, None])


@pytest.mark.parametrize("dtype", [tl.f32, tl.i64], ids=str)
@pytest.mark.parametrize(("r", "v", "d"), [(200, 7, 64), (90, 13, 45)])
def test_indexed_rows_add_with_a_broadcast_mask(dtype, r, v, d):
    g = RNG.integers(-5, 6, (r, d)).astype(NUMPY[dtype.name])
    ids = RNG.integers(-2, v + 2, r).astype(np.int32)
    expected = np.ones((v, d), np.float64)
    for i, row in enumerate(ids):
        if 0 <= row < v:
            expected[row] += g[i]
    for run in runs(add_rows):
        out = np.ones((v, d), NUMPY[dtype.name])
        run(g, ids, out, T=dtype)
        np.testing.assert_array_equal(out, expected)


def test_rows_add_in_vectors():
    """Along a row the places are contiguous: 16-byte atomic additions of f32."""
    compiled = add_rows.compile(T=tl.f32, assume={"D": 32})
    assert max(s.width for s in statements(compiled, t.Atomic)) == 16


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_scatter_adds_are_atomic_reductions(arch):
    for dtype, red in ((tl.i32, "red.global.add.u32"), (tl.f32, "red.global.add.f32")):
        compiled = histogram.compile(target=arch, T=dtype)
        assert red in compiled.ptx
        assert "st.global" not in compiled.ptx  # the histogram is only ever added to
        assert compiled.resources.spill_store_bytes == 0
    assert "red.global.add.u32" in count.compile(target=arch).ptx
    assert "red.global.add" in add_rows.compile(target=arch, T=tl.f32).ptx


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_masked_stores_compile(arch):
    wide = store_where.compile(target=arch, T=tl.f32, assume={"N": 64})
    assert "st.global.v4" in wide.ptx  # whole runs keep their vector stores
    packed = store_where.compile(target=arch, T=tl.u4)
    assert "tl_merge_bits" in packed.source  # masked codes merge their own bits only
    assert scatter_where.compile(target=arch, T=tl.f16).resources.spill_store_bytes == 0


# --------------------------------------------------------------------------- errors


def test_a_store_mask_must_be_a_u1_tile_of_a_broadcastable_shape():
    @tl.kernel
    def wrong_dtype(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        ones = tl.full([32], 1.0, tl.f32)
        tl.store(y, [0], ones, mask=ones)  # <- error

    @tl.kernel
    def wrong_shape(y: tl.Tensor[tl.f32, "N"]):
        tl.blocks(1)
        tl.store(y, [0], tl.full([32], 1.0, tl.f32), mask=tl.arange(0, 16) > 3)  # <- error

    for kernel, fragment in (
        (wrong_dtype, "the mask must be a u1 tile"),
        (wrong_shape, "cannot broadcast a tile of shape [16] to [32]"),
    ):
        assert_reported(kernel, fragment)


def test_scatter_adds_it_cannot_do_are_refused_at_the_users_line():
    @tl.kernel
    def two_index_tiles(y: tl.Tensor[tl.i32, "M", "N"]):
        tl.blocks(1)
        i = tl.arange(0, 32)
        tl.atomic_add(y, [i[:, None], i[None, :]], tl.full([32, 32], 1, tl.i32))  # <- error

    @tl.kernel
    def float_index(y: tl.Tensor[tl.i32, "N"]):
        tl.blocks(1)
        tl.atomic_add(y, [tl.full([32], 1.0, tl.f32)], tl.full([32], 1, tl.i32))  # <- error

    @tl.kernel
    def bytes_(y: tl.Tensor[tl.u8, "N"]):
        tl.blocks(1)
        tl.atomic_add(y, [tl.arange(0, 32)], tl.full([32], 1, tl.u8))  # <- error

    for kernel, fragment in (
        (two_index_tiles, "offsets 0, 1 of y are all tiles"),
        (float_index, "the index tile of offset 0 (a gather or scatter) must hold integers"),
        (bytes_, "atomic additions need a tensor of f16"),
    ):
        assert_reported(kernel, fragment)


HEADER = (
    "kernel k(%y: tensor<T, [N]>) sizes(%N: i32) warps(1) {\n"
    "  %b = blocks 1:i32 : i32\n"
    "  %v = full 1:T : tile<T, [32]>\n"
    "  %i = arange 0 : tile<i32, [32]>\n"
    "  %m = lt %i, 5:i32 : tile<u1, [32]>\n"
)


def test_the_verifier_checks_masks_and_scatter_add_dtypes():
    def check(dtype: str, line: str) -> None:
        verify(parse_function(HEADER.replace("T", dtype) + f'  {line}  loc("u.py":7:5)\n}}\n'))

    check("u4", "store %y[0:i32], %v mask(%m)")
    check("f32", "scatter_atomic add %y[0:i32], %i, axis=0, %v mask(%m)")
    with pytest.raises(IRVerifyError, match="expected a mask of u1"):
        check("f32", "store %y[0:i32], %v mask(%i)")
    with pytest.raises(IRVerifyError, match="found a tensor of u8"):
        check("u8", "scatter_atomic add %y[0:i32], %i, axis=0, %v")


def test_a_masked_store_keeps_what_it_skips_so_its_tensor_is_read_too():
    """What the torch bridge allocates and the perf model counts: a masked store's
    tensor is updated in place (its skipped elements are the caller's), and a
    scatter-add reads and writes its target."""
    from tilelang.runtime.perf_traffic import tensor_bytes
    from tilelang.torch.signature import INPLACE, INPUT, tensor_roles

    assert tensor_roles(store_prefix.specialize()) == {"x": INPUT, "out": INPLACE}
    shapes = {"values": (1000,), "weights": (1000,), "hist": (64,)}
    # values and weights read once; hist read and written.
    assert tensor_bytes(histogram.specialize(), shapes) == 4 * (1000 + 1000 + 2 * 64)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_perf_report_counts_the_reductions_as_global_atomics(arch):
    """sm_90's SASS names a global reduction REDG where sm_80's says RED."""
    from tilelang.runtime import sass

    compiled = count.compile(target=arch)
    opcodes = sass.opcodes(sass.disassemble(compiled.cubin))
    reductions = {op for op in opcodes if op.startswith(("RED", "ATOMG"))}
    assert reductions and {sass.classify(op) for op in reductions} == {"global stores/atomics"}
