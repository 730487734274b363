"""Block-uniform scalars made from data: `tl.load(t, [i, j])` without a shape, a rank-0
tile's `.item()` (and indexing a tile down to one element), and loop bounds and offsets
computed from them at run time: interpreter ≡ CPU backend ≡ numpy, NVRTC builds for
sm_80 and sm_90, the verifier's rules, errors at the user's line."""

import itertools
import warnings

import numpy as np
import pytest
from conftest import assert_edit_rejected, assert_reported, assert_text_round_trips, marked_line
from hypothesis import given, settings
from hypothesis import strategies as st

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.checks import IRVerifyError
from tilelang.ir.parser import parse_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function
from tilelang.ir.visit import walk

# --------------------------------------------------------------------------- scalar loads


@tl.kernel(warps=1)
def pick(
    x: tl.Tensor["DT", "R", "C"],
    at: tl.Tensor[tl.i32, "K", 2],
    out: tl.Tensor[tl.f32, "K", 32],
    DT: tl.constexpr = tl.f32,
    FILL: tl.constexpr = 0,
):
    k = tl.blocks(K)
    i = tl.load(at, [k, 0])
    j = tl.load(at, [k, 1])
    v = tl.load(x, [i, j], fill=FILL)
    tl.store(out, [k, 0], tl.full([1, 32], v, tl.f32))


def picked(values: np.ndarray, at: np.ndarray, fill: float) -> np.ndarray:
    """numpy: values[i, j] where (i, j) lies inside, else the fill."""
    rows, cols = values.shape
    inside = (at[:, 0] >= 0) & (at[:, 0] < rows) & (at[:, 1] >= 0) & (at[:, 1] < cols)
    got = values[np.clip(at[:, 0], 0, rows - 1), np.clip(at[:, 1], 0, cols - 1)]
    return np.where(inside, got.astype(np.float64), fill)


@pytest.mark.parametrize("dtype", ["f32", "i32", "f16", "u8", "u4", "i3", "f8e4m3"])
@settings(max_examples=4, deadline=None)
@given(
    rows=st.integers(1, 9),
    cols=st.integers(1, 40),
    fill=st.sampled_from([0, 3]),
    data=st.data(),
)
def test_a_scalar_load_reads_one_element_or_the_fill_outside_the_tensor(
    rows, cols, dtype, fill, data
):
    dt = tl.dtype(dtype)
    rng = np.random.default_rng(rows * 100 + cols)
    values = dt.decode(rng.integers(0, 1 << min(dt.bits, 16), size=(rows, cols)))
    values = np.where(np.isfinite(values.astype(np.float64)), values, 0).astype(values.dtype)
    points = st.tuples(st.integers(-2, rows + 1), st.integers(-2, cols + 1))
    at = np.array(data.draw(st.lists(points, min_size=1, max_size=6)), dtype=np.int32)
    native = {"f32": np.float32, "i32": np.int32, "f16": np.float16, "u8": np.uint8}
    x = values.astype(native[dtype]) if dtype in native else tl.pack(values, dt)
    expected = np.repeat(picked(values, at, fill)[:, None], 32, axis=1)
    interpreted = pick.interpret(x, at, np.zeros((len(at), 32), np.float32), DT=dt, FILL=fill)
    compiled = pick(x, at, np.zeros((len(at), 32), np.float32), DT=dt, FILL=fill)
    assert np.array_equal(interpreted, expected)
    assert np.array_equal(compiled, interpreted)


# --------------------------------------------------------------------------- item


@tl.kernel(warps=4)
def normalize(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, "N"], BN: tl.constexpr = 256):
    v = tl.load(x, [0], [BN])
    total = tl.sum(v).item()  # a rank-0 tile's element
    first = v[2]  # indexing down to one element
    tl.store(out, [0], v / total + first)


def test_item_and_full_indexing_give_block_uniform_scalars():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 1.5, 256).astype(np.float32)
    expected = x.astype(np.float64) / x.astype(np.float64).sum() + x[2]
    interpreted = normalize.interpret(x, np.zeros(256, np.float32))
    compiled = normalize(x, np.zeros(256, np.float32))
    assert np.allclose(interpreted, expected, rtol=1e-6)
    assert np.allclose(compiled, interpreted, rtol=1e-6)  # the sum's order differs
    items = [i for i in walk(normalize.specialize()) if isinstance(i, ir.Item)]
    assert len(items) == 2


# --------------------------------------------------------------------------- run-time loops


@tl.kernel(warps=4)
def varlen_rows(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    lens: tl.Tensor[tl.i32, "M // BM"],
    c: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 32,
):
    """Row block i multiplies only the first lens[i] columns of a: a loop bound read
    from a tensor, pipelined (stages=3) because the loads' offsets depend on k alone."""
    bm, bn = tl.blocks(M // BM, tl.cdiv(N, BN))
    length = tl.load(lens, [bm])
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, length, BK, stages=3):
        x = tl.load(a, [bm * BM, k], [BM, BK])
        keep = (k + tl.arange(0, BK))[None, :] < length
        y = tl.load(b, [k, bn * BN], [BK, BN])
        acc = tl.dot(tl.where(keep, x, tl.zeros([BM, BK], tl.f16)), y, acc)
    tl.store(c, [bm * BM, bn * BN], acc)


@settings(max_examples=6, deadline=None)
@given(lens=st.lists(st.integers(0, 128), min_size=4, max_size=4))
def test_a_loop_bound_read_from_a_tensor_runs_that_many_iterations(lens):
    rng = np.random.default_rng(sum(lens))
    a = rng.standard_normal((64, 128)).astype(np.float16)
    b = rng.standard_normal((128, 64)).astype(np.float16)
    lengths = np.array(lens, np.int32)
    expected = np.concatenate(
        [
            a[16 * i : 16 * (i + 1), :n].astype(np.float64) @ b[:n].astype(np.float64)
            for i, n in enumerate(lens)
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the loads stay pipelined (no PipelineWarning)
        interpreted = varlen_rows.interpret(a, b, lengths, np.zeros((64, 64), np.float32))
        compiled = varlen_rows(a, b, lengths, np.zeros((64, 64), np.float32))
    tolerance = 1e-5 * 128 * np.abs(a).max() * np.abs(b).max()
    assert np.abs(interpreted - expected).max() <= tolerance
    assert np.abs(compiled - interpreted).max() <= tolerance


def test_a_run_time_bound_keeps_the_pipeline():
    stats = dict(varlen_rows.compile(target="sm_90").thread.stats)
    assert stats.get("pipeline_async", 0) == 2 and "pipeline_skipped" not in stats


# --------------------------------------------------------------------------- paged sum


@tl.kernel(warps=4)
def paged_sum(
    cache: tl.Tensor[tl.f16, "NB", "BS", "D"],
    table: tl.Tensor[tl.i32, "B", "MB"],
    seq_lens: tl.Tensor[tl.i32, "B"],
    out: tl.Tensor[tl.f32, "B", "D"],
    BS: tl.constexpr = 16,
    D: tl.constexpr = 64,
):
    """out[b] = Σ over the first seq_lens[b] tokens of sequence b, whose block j is
    cache[table[b, j]]: the length bounds the loop, each block's number its offset."""
    b = tl.blocks(B)
    length = tl.load(seq_lens, [b])
    acc = tl.zeros([1, D], tl.f32)
    for j in tl.range(0, tl.cdiv(length, BS)):
        block = tl.load(table, [b, j])
        x = tl.load(cache, [block, 0, 0], [1, BS, D]).to(tl.f32)
        valid = (j * BS + tl.arange(0, BS))[None, :, None] < length
        acc = acc + tl.sum(tl.where(valid, x, 0.0), axis=1)
    tl.store(out, [b, 0], acc)


@tl.kernel(warps=4)
def paged_rows_sum(
    cache: tl.Tensor[tl.f16, "T", "D"],
    table: tl.Tensor[tl.i32, "B", "MB"],
    seq_lens: tl.Tensor[tl.i32, "B"],
    out: tl.Tensor[tl.f32, "B", "D"],
    BS: tl.constexpr = 16,
    D: tl.constexpr = 64,
):
    """paged_sum on the cache viewed as rows: block `block` is rows block·BS onward."""
    b = tl.blocks(B)
    length = tl.load(seq_lens, [b])
    acc = tl.zeros([1, D], tl.f32)
    for j in tl.range(0, tl.cdiv(length, BS)):
        block = tl.load(table, [b, j])
        x = tl.load(cache, [block * BS, 0], [BS, D]).to(tl.f32)
        valid = (j * BS + tl.arange(0, BS))[:, None] < length
        acc = acc + tl.sum(tl.where(valid, x, 0.0), axis=0, keepdims=True)
    tl.store(out, [b, 0], acc)


def paged_reference(cache, table, seq_lens) -> np.ndarray:
    """numpy float64: token t of sequence b is row t % BS of block table[b, t // BS]."""
    bs = cache.shape[1]
    out = np.zeros((len(seq_lens), cache.shape[2]))
    for b, n in enumerate(seq_lens):
        for token in range(n):
            out[b] += cache[table[b, token // bs], token % bs].astype(np.float64)
    return out


def paged_inputs(seq_lens: list[int], seed: int, block_size: int = 16, dim: int = 64):
    rng = np.random.default_rng(seed)
    max_blocks = max(1, -(-max(seq_lens) // block_size))
    blocks = len(seq_lens) * max_blocks + 3
    cache = rng.standard_normal((blocks, block_size, dim)).astype(np.float16)
    # a permutation: no sequence's blocks are contiguous or in order
    table = rng.permutation(blocks)[: len(seq_lens) * max_blocks].reshape(len(seq_lens), -1)
    return cache, table.astype(np.int32), np.array(seq_lens, np.int32)


@settings(max_examples=6, deadline=None)
@given(seq_lens=st.lists(st.sampled_from([0, 1, 7, 16, 100, 257]), min_size=1, max_size=4))
def test_paged_sum_reads_lengths_and_a_block_table(seq_lens):
    cache, table, lengths = paged_inputs(seq_lens, len(seq_lens))
    expected = paged_reference(cache, table, lengths)
    out = np.zeros((len(seq_lens), 64), np.float32)
    tolerance = 1e-6 * (max(seq_lens) + 1) * np.abs(cache).max()
    for kernel, tensor in ((paged_sum, cache), (paged_rows_sum, cache.reshape(-1, 64))):
        interpreted = kernel.interpret(tensor, table, lengths, out.copy())
        compiled = kernel(tensor, table, lengths, out.copy())
        assert np.abs(interpreted - expected).max() <= tolerance
        assert np.abs(compiled - interpreted).max() <= tolerance


# --------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_scalar_kernels_compile_for_sm80_and_sm90_without_spills(arch):
    builds = [paged_sum.compile(target=arch), paged_rows_sum.compile(target=arch)]
    builds += [varlen_rows.compile(target=arch), normalize.compile(target=arch)]
    for build in builds:
        resources = build.resources
        assert resources.registers > 0
        assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    for build in builds[:2]:
        stats = dict(build.thread.stats)
        assert stats["load_scalar"] == 2
        # the cache rows still move a thread's whole run at a time (the reduction over the
        # block's rows chose runs of two f16) though their block comes from data
        loads = {k: v for k, v in stats.items() if k.startswith("global_load_bytes_")}
        assert loads and all(int(k.rsplit("_", 1)[1]) >= 4 for k in loads), loads


# --------------------------------------------------------------------------- the IRs

TEXT = """\
kernel f(%x: tensor<i32, [N]>, %y: tensor<f32, [N]>) sizes(%N: i32) warps(1) {
  %bx = blocks %N : i32
  %n = load_scalar %x[%bx] fill(-1:i32) : i32
  %t = load %y[0:i32] : tile<f32, [32]>
  %s = reduce sum %t, axis=0 : tile<f32, []>
  %v = item %s : f32
  %m = mul %t, %v : tile<f32, [32]>
  store %y[%n], %m
}
"""


def test_scalars_text_form_round_trips_and_verifies():
    assert_text_round_trips(parse_function(TEXT), paged_sum.specialize())


@pytest.mark.parametrize(
    "before, after, fragment",
    [
        ("fill(-1:i32) : i32", "fill(-1:i32) : tile<i32, [1]>", "the result to be a scalar"),
        ("fill(-1:i32)", "fill(-1.0:f32)", "a fill value of dtype i32"),
        ("item %s : f32", "item %t : f32", "a rank-0 tile"),
        ("item %s : f32", "item %s : i32", "a scalar of its dtype"),
    ],
)
def test_the_verifier_rejects_misused_scalar_instructions(before, after, fragment):
    assert_edit_rejected(TEXT, before, after, fragment)


def test_a_loaded_value_cannot_be_a_loop_step():
    @tl.kernel(warps=1)
    def stepped(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.f32, 32]):
        tl.blocks(1)
        step = tl.load(x, [0])
        acc = tl.zeros([32], tl.f32)
        for _ in tl.range(0, N, step):  # <- error
            acc = acc + 1.0
        tl.store(y, [0], acc)

    with pytest.raises(IRVerifyError, match="step to be known before the launch") as info:
        stepped.specialize()
    assert f":{marked_line(stepped)}:" in str(info.value)


def test_only_a_uniform_statement_makes_a_register_read_a_loop_bound():
    def function(defining: t.Stmt) -> t.ThreadFunction:
        loop = t.For(
            t.Name("i", tl.i32), t.Imm(0, tl.i32), t.Name("n", tl.i32), t.Imm(1, tl.i32), ()
        )
        body = (t.SetLocal("s", 0, t.Imm(3, tl.i32)), defining, loop)
        return t.ThreadFunction(
            "f", (), 32, (t.Imm(1, tl.i32),), 0, (t.Local("s", tl.i32, 1),), body
        )

    read = t.Read("s", 0, tl.i32)
    verify_thread_function(function(t.Uniform(t.Name("n", tl.i32), read)))
    with pytest.raises(ThreadIRError, match="is not uniform"):
        verify_thread_function(function(t.Let(t.Name("n", tl.i32), read)))


# --------------------------------------------------------------------------- DSL errors


def test_item_of_a_tile_with_elements_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        v = tl.load(x, [0], [32])
        v.item()  # <- error

    assert_reported(k, ".item() takes the element of a one-element tile", "shape [32]")


def test_a_scalar_load_with_a_layout_is_reported_at_its_line():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        tl.load(x, [0], layout=tl.dot_layout("c", 16, 8, 16))  # <- error

    assert_reported(k, "reads one scalar, which has no layout")


# --------------------------------------------------------------------------- carried scalars


@tl.kernel(warps=4)
def ragged_row_sums(
    lens: tl.Tensor[tl.i32, "B"],
    x: tl.Tensor[tl.f32, "T", 64],
    out: tl.Tensor[tl.f32, "B", 64],
):
    """out[b] = Σ of the rows of sequence b in a packed batch: it starts at the running
    sum of the lengths before it (a loop-carried scalar), which bounds a loop that holds
    a reduction across threads."""
    b = tl.blocks(B)
    start = 0
    for i in tl.range(0, b):
        start = start + tl.load(lens, [i])
    stop = start + tl.load(lens, [b])
    acc = tl.zeros([1, 64], tl.f32)
    for r in tl.range(start, stop, 16):
        rows = tl.load(x, [r, 0], [16, 64])
        keep = (r + tl.arange(0, 16))[:, None] < stop
        acc = acc + tl.sum(tl.where(keep, rows, 0.0), axis=0, keepdims=True)
    tl.store(out, [b, 0], acc)


@settings(max_examples=5, deadline=None)
@given(lens=st.lists(st.sampled_from([0, 1, 7, 16, 100]), min_size=1, max_size=5))
def test_a_loop_carried_scalar_may_bound_a_loop_with_collectives(lens):
    lengths = np.array(lens, np.int32)
    x = np.random.default_rng(len(lens)).standard_normal((max(1, sum(lens)), 64))
    x = x.astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    expected = np.stack([x[a:b].astype(np.float64).sum(0) for a, b in itertools.pairwise(starts)])
    out = np.zeros((len(lens), 64), np.float32)
    interpreted = ragged_row_sums.interpret(lengths, x, out.copy())
    compiled = ragged_row_sums(lengths, x, out.copy())
    assert np.abs(interpreted - expected).max() <= 1e-5 * (max(lens) + 1)
    assert np.abs(compiled - interpreted).max() <= 1e-5 * (max(lens) + 1)


def test_only_scalars_that_reach_control_flow_become_uniform():
    """The stage a pipelined loop carries stays a register read (strength_reduce's
    product registers need it); the carried offset that bounds a loop is a Uniform."""
    pipelined = varlen_rows.compile(target="sm_90").thread
    uniforms = [s for s in t.walk_stmts(pipelined.body) if isinstance(s, t.Uniform)]
    assert len(uniforms) == 1  # the loaded length only
    ragged = ragged_row_sums.compile(target="sm_90").thread
    uniforms = [s for s in t.walk_stmts(ragged.body) if isinstance(s, t.Uniform)]
    assert len(uniforms) == 4  # two loaded lengths; the running start in its loop and after
