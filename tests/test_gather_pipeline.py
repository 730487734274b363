"""Pipelined gathers: in `tl.range(..., stages=S)` a gather whose index can be computed for
another iteration (from the loop variable, values from before the loop and loads of a
block table) becomes `gather_async` copies (cp.async, zero-filled for masked rows) into S
shared buffers, issued S-1 iterations ahead, its index one iteration before that. The
results stay exactly numpy's on the CPU backend and the interpreter (frontend and
pipelined IR); sm_80/sm_90 SASS copies the rows with LDGSTS; a gather whose index the
iteration computes from its own data stays synchronous, with a warning at the loop."""

import warnings

import numpy as np
import pytest
from conftest import assert_bitwise, marked_line, run_both

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.ir.visit import walk
from tilelang.passes.software_pipeline import PipelineWarning
from tilelang.pipeline import run_pipeline
from tilelang.runtime import interpreter, sass
from tilelang.target import CPU


@tl.kernel(warps=4)
def paged_rows(
    cache: tl.Tensor["DT", "R", "D"],
    table: tl.Tensor[tl.i32, "NB", "MB"],
    lens: tl.Tensor[tl.i32, "NB"],
    out: tl.Tensor["DT", "NB", "T", "D"],
    DT: tl.constexpr = tl.f16,
    BS: tl.constexpr = 4,
    BN: tl.constexpr = 16,
    D: tl.constexpr = 64,
    S: tl.constexpr = 2,
):
    """Token t of sequence b (t < lens[b]) is cache row table[b, t // BS]·BS + t % BS;
    tokens past the length read zeros. A paged KV cache's read, BN tokens a step."""
    b = tl.blocks(NB)
    length = tl.load(lens, [b])
    for t0 in tl.range(0, length, BN, stages=S):
        token = t0 + tl.arange(0, BN)
        page = tl.load(table, [b, (token // BS)[None, :]], [1, BN], fill=-1)
        row = tl.where(token < length, tl.reshape(page, [BN]) * BS + token % BS, -1)
        rows = tl.load(cache, [row[:, None], 0], [BN, D])
        tl.store(out, [b, t0, 0], tl.reshape(rows, [1, BN, D]))


def paged_reference(cache, table, lens, bs, tokens):
    """numpy: out[b, t] = cache[table[b, t // bs]·bs + t % bs] for t < lens[b] (zeros for
    a row outside the cache), zeros elsewhere."""
    out = np.zeros((len(lens), tokens, cache.shape[1]), cache.dtype)
    for b, length in enumerate(lens):
        for t in range(length):
            row = int(table[b, t // bs]) * bs + t % bs
            if 0 <= row < cache.shape[0]:
                out[b, t] = cache[row]
    return out


def paged_case(dtype, d, seed, bs=4, pages=13, max_blocks=9):
    """Ragged lengths (0, 1, 7, a multiple of the step, the whole table), pages in a
    shuffled order, and table entries past the cache (rows that read zeros)."""
    rng = np.random.default_rng(seed)
    cache = (rng.standard_normal((pages * bs, d)) * 8).astype(dtype)
    table = rng.permutation(max(pages, max_blocks * 4))[: 4 * max_blocks].astype(np.int32)
    table = table.reshape(4, max_blocks)
    lens = np.array([0, 1, 7, max_blocks * bs], np.int32)
    tokens = max_blocks * bs
    return cache, table, lens, np.zeros((4, tokens, d), dtype)


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize(("dtype", "d"), [("f16", 64), ("f32", 12), ("f16", 10), ("u4", 64)])
def test_a_pipelined_gather_reads_exactly_numpys_rows_on_both_paths(stages, dtype, d):
    """16-byte rows, 48-byte rows (16-byte aligned), 20-byte rows (4-byte copies) and
    packed u4 rows (32 bytes)."""
    native = {"f16": np.float16, "f32": np.float32, "u4": np.uint8}[dtype]
    cache, table, lens, out = paged_case(native, d, seed=stages * 100 + d)
    if dtype == "u4":
        cache = np.random.default_rng(d).integers(0, 16, cache.shape).astype(np.uint8)
    dt = tl.dtype(dtype)
    wrap = (lambda v: tl.pack(v, dt)) if dt.bits < 8 else (lambda v: v)
    unwrap = (lambda v: v.unpack().astype(np.uint8)) if dt.bits < 8 else (lambda v: v)
    inputs = (wrap(cache), table, lens)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PipelineWarning)  # every load is pipelined
        compiled = paged_rows(*inputs, wrap(out.copy()), DT=dt, D=d, S=stages)
        interpreted = paged_rows.interpret(*inputs, wrap(out.copy()), DT=dt, D=d, S=stages)
    want = paged_reference(cache, table, lens, 4, out.shape[1])
    assert_bitwise(unwrap(compiled), want)
    assert_bitwise(unwrap(interpreted), want)


def pipelined(kernel, **constexprs) -> ir.Function:
    return run_pipeline(kernel.specialize(**constexprs), CPU)["pipeline"]


@pytest.mark.parametrize("stages", [2, 3])
def test_the_gather_becomes_copies_issued_ahead_from_an_index_computed_before(stages):
    fn = pipelined(paged_rows, S=stages)
    loop = next(i for i in walk(fn) if isinstance(i, ir.For))
    body = loop.body.instrs
    copies = [i for i in body if isinstance(i, ir.GatherAsync)]
    assert [c.attr("ahead") for c in copies] == [stages - 1]
    assert not any(isinstance(i, ir.Gather) and i.attr("ahead") is None for i in body)
    # the copy reads an index the loop carries in: computed the iteration before
    assert copies[0].index in loop.carried
    # the block table's gather for the next copy is issued after this iteration's copy
    table = [n for n, i in enumerate(body) if isinstance(i, ir.Gather)]
    assert [body[n].attr("ahead") for n in table] == [stages]
    assert table[0] > body.index(copies[0])
    prologue = [i for i in fn.body.instrs if isinstance(i, ir.GatherAsync)]
    assert len(prologue) == stages - 1


def test_the_pipelined_ir_reads_back_from_its_text_and_interprets_to_numpys_rows():
    fn = pipelined(paged_rows, S=3)
    text = print_function(fn)
    assert "gather_async" in text
    again = parse_function(text)
    verify(again)
    assert print_function(again) == text
    cache, table, lens, out = paged_case(np.float16, 64, seed=5)
    sizes = {"R": cache.shape[0], "D": 64, "NB": 4, "MB": table.shape[1], "T": out.shape[1]}
    tensors = {"cache": cache, "table": table, "lens": lens, "out": out}
    interpreter.run(fn, tensors, {}, sizes)
    assert_bitwise(out, paged_reference(cache, table, lens, 4, out.shape[1]))


def test_stats_count_the_copies_and_no_skipped_load():
    stats = dict(paged_rows.compile(target="cpu", S=2).thread.stats)
    assert stats.get("pipeline_async") == 1
    assert "pipeline_skipped" not in stats
    assert stats.get("gather_cp_async_bytes_16", 0) > 0  # 128-byte rows, 16 bytes a copy


def test_rows_only_4_byte_aligned_copy_in_4_byte_pieces():
    stats = dict(paged_rows.compile(target="cpu", S=2, DT=tl.f16, D=10).thread.stats)
    assert stats.get("gather_cp_async_bytes_4", 0) > 0
    assert not any(
        k.startswith("gather_cp_async_bytes_") and k != "gather_cp_async_bytes_4" for k in stats
    )


# --------------------------------------------------------------------------- SASS


def main_loop_ops(arch, **constexprs):
    build = paged_rows.compile(target=arch, **constexprs)
    loop = sass.main_loop(sass.disassemble(build.cubin))
    assert loop is not None
    return build, loop


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("stages", [2, 3])
def test_sass_copies_the_gathered_rows_with_ldgsts_and_waits_for_no_load_first(arch, stages):
    build, loop = main_loop_ops(arch, S=stages, D=64)
    ops = sass.opcodes(loop)
    assert ops.get("LDGSTS.E.BYPASS.128", 0) >= 1, ops
    assert not any(op.startswith("LDG.E.128") for op in ops), ops  # no synchronous rows
    # The copies' addresses come from the index carried in, not from this iteration's
    # table load: no global load precedes the first copy in the loop.
    lines = [line for line in loop.splitlines() if "LDG" in line]
    assert "LDGSTS" in lines[0], lines
    assert build.resources.spill_store_bytes == 0


# --------------------------------------------------------------------------- not pipelined


@tl.kernel(warps=4)
def computed_rows(
    cache: tl.Tensor[tl.f32, "R", 8],
    ids: tl.Tensor[tl.i32, "N"],
    out: tl.Tensor[tl.f32, "N", 8],
):
    """Row ids[i] + the sum of the rows read before it (capped): an index the iteration
    computes from the data it loads cannot be known ahead."""
    shift = tl.zeros([16], tl.i32)
    for i in tl.range(0, N, 16, stages=2):  # <- error
        rows = tl.load(ids, [i], [16], fill=-1) + shift
        x = tl.load(cache, [rows[:, None], 0], [16, 8])
        shift = tl.minimum(tl.sum(x, axis=1).to(tl.i32), 1)
        tl.store(out, [i, 0], x)


def computed_reference(cache, ids):
    out = np.zeros((len(ids), 8), np.float32)
    shift = np.zeros(16, np.int64)
    for i in range(0, len(ids), 16):
        rows = ids[i : i + 16].astype(np.int64) + shift[: len(ids[i : i + 16])]
        x = np.zeros((16, 8), np.float32)
        for j, r in enumerate(rows):
            if 0 <= r < cache.shape[0]:
                x[j] = cache[r]
        out[i : i + 16] = x[: len(rows)]
        shift = np.minimum(x.astype(np.float64).sum(axis=1).astype(np.int64), 1)
    return out


def test_a_gather_whose_index_the_iteration_computes_stays_and_warns_at_the_loop():
    with pytest.warns(PipelineWarning, match="its index depends on") as record:
        build = computed_rows.compile(target="cpu")
    ours = [w for w in record if "%cache" in str(w.message)]
    assert ours and ours[0].lineno == marked_line(computed_rows), str(ours[0].message)
    assert "carries" in str(ours[0].message)
    assert dict(build.thread.stats).get("pipeline_skipped") == 1
    rng = np.random.default_rng(1)
    cache = rng.integers(-3, 3, (20, 8)).astype(np.float32)
    ids = rng.integers(-2, 22, 40).astype(np.int32)
    out = np.zeros((40, 8), np.float32)
    with pytest.warns(PipelineWarning, match="its index depends on"):
        compiled, interpreted = run_both(computed_rows, (cache, ids), (out,))
    assert_bitwise(compiled, computed_reference(cache, ids))
    assert_bitwise(interpreted, computed_reference(cache, ids))


# --------------------------------------------------------------------------- a dot operand


@tl.kernel(warps=4)
def paged_scores(
    q: tl.Tensor[tl.f16, 16, "D"],
    k: tl.Tensor[tl.f16, "R", "HK", "D"],
    table: tl.Tensor[tl.i32, "NB", "MB"],
    lens: tl.Tensor[tl.i32, "NB"],
    out: tl.Tensor[tl.f32, "NB", 16, "T"],
    HEAD: tl.constexpr = 1,
    BS: tl.constexpr = 8,
    BN: tl.constexpr = 32,
    D: tl.constexpr = 64,
    S: tl.constexpr = 2,
):
    """Scores q·kᵀ of one KV head over a paged cache [R, HK, D] (rank-3 rows read as a
    matrix and transposed into the dot, as attention does); masked tokens score 0."""
    b = tl.blocks(NB)
    length = tl.load(lens, [b])
    qt = tl.load(q, [0, 0], [16, D])
    for t0 in tl.range(0, length, BN, stages=S):
        token = t0 + tl.arange(0, BN)
        page = tl.load(table, [b, (token // BS)[None, :]], [1, BN], fill=-1)
        row = tl.where(token < length, tl.reshape(page, [BN]) * BS + token % BS, -1)
        kt = tl.reshape(tl.load(k, [row[:, None, None], HEAD, 0], [BN, 1, D]), [BN, D])
        s = tl.dot(qt, tl.transpose(kt))
        tl.store(out, [b, 0, t0], tl.reshape(s, [1, 16, BN]))


@pytest.mark.parametrize("stages", [2, 3])
def test_gathered_rows_feed_a_transposed_dot_operand_exactly(stages):
    rng = np.random.default_rng(stages)
    bs, pages, max_blocks, d = 8, 11, 12, 64
    # small integers: every product and sum is exact in f32, whatever the order
    q = rng.integers(-3, 4, (16, d)).astype(np.float16)
    k = rng.integers(-3, 4, (pages * bs, 2, d)).astype(np.float16)
    table = rng.permutation(4 * max_blocks).astype(np.int32).reshape(4, max_blocks) % 13
    lens = np.array([0, 5, 40, max_blocks * bs], np.int32)
    out = np.zeros((4, 16, max_blocks * bs), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PipelineWarning)
        compiled, interpreted = run_both(paged_scores, (q, k, table, lens), (out,), S=stages)
    rows = paged_reference(k[:, 1], table, lens, bs, out.shape[2]).astype(np.float64)
    want = np.einsum("qd,btd->bqt", q.astype(np.float64), rows).astype(np.float32)
    assert_bitwise(compiled, want)
    assert_bitwise(interpreted, want)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_sass_of_the_dot_operand_copies_rows_with_ldgsts_and_ldmatrix(arch):
    build = paged_scores.compile(target=arch, S=2)
    loop = sass.main_loop(sass.disassemble(build.cubin))
    ops = sass.opcodes(loop)
    assert ops.get("LDGSTS.E.BYPASS.128", 0) >= 1, ops
    assert not any(op.startswith("LDG.E.128") for op in ops), ops
    assert any(op.startswith("LDSM") for op in ops), ops  # K read from its stage
    assert build.resources.spill_store_bytes == 0
