"""software_pipeline end to end: every global load of a loop with `stages=S` is issued
S-1 iterations ahead (a cp.async into S shared buffers, or a load into registers carried
by the loop), or it says why not; the compiled code (LLVM CPU backend) agrees bit for bit
with the reference interpreter, which runs the unpipelined block IR.

Data are chosen so that every sum is exact in f32 (small integers, or x = I for the
dequantized weights): the two paths then agree bit for bit whatever the summation order.
"""

import inspect
import warnings

import numpy as np
import pytest
from conftest import assert_bitwise, load_example, require_disassembler, run_both

import tilelang as tl
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.parser import parse_function
from tilelang.ir.visit import walk
from tilelang.lowering import LoweringError
from tilelang.passes.software_pipeline import PipelineWarning
from tilelang.pipeline import lower_function, run_pipeline
from tilelang.runtime import interpreter
from tilelang.runtime.arguments import bind_arguments
from tilelang.runtime.buffers import byte_buffers
from tilelang.runtime.cpu import compile_cpu

quant = load_example("quant_matmul")
dequantize = quant.dequantize
INF = float("inf")


# -- kernels -------------------------------------------------------------------------------


@tl.kernel(warps=4)
def staged_quant_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 64,
    STAGES: tl.constexpr = 3,
):
    """The generic form of examples/quant_matmul.py's kernel (plain weights, loaded in the
    blocked layout and relayouted into the mma layout; the example reads weights packed
    for the dot instead), with the pipeline depth as a constexpr."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=STAGES):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        b = dequantize(tl.load(w, [k, bn * BN], [BK, BN]), s, k, bn * BN, G)
        acc = tl.dot(a, b, acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def heads(
    q: tl.Tensor[tl.f16, "B", "M", "D"],
    k: tl.Tensor[tl.f16, "B", "N", "D"],
    v: tl.Tensor[tl.f16, "B", "N", "D"],
    o: tl.Tensor[tl.f32, "B", "M", "D"],
    HD: tl.constexpr = 32,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 32,
    STAGES: tl.constexpr = 2,
):
    """o[b] = (q[b] @ k[b]^T) @ v[b]: rank-3 loads of one head, read as matrices."""
    b, bm = tl.blocks(B, tl.cdiv(M, BM))
    qt = tl.reshape(tl.load(q, [b, bm * BM, 0], [1, BM, HD]), [BM, HD])
    acc = tl.zeros([BM, HD], tl.f32)
    for n in tl.range(0, N, BN, stages=STAGES):
        kt = tl.reshape(tl.load(k, [b, n, 0], [1, BN, HD]), [BN, HD])
        vt = tl.reshape(tl.load(v, [b, n, 0], [1, BN, HD]), [BN, HD])
        scores = tl.dot(qt, tl.transpose(kt))
        acc = tl.dot(scores.to(tl.f16), vt, acc)
    tl.store(o, [b, bm * BM, 0], tl.reshape(acc, [1, BM, HD]))


@tl.kernel(warps=4)
def row_stats(
    x: tl.Tensor[tl.i32, "M", "N"],
    top: tl.Tensor[tl.i32, "M"],
    total: tl.Tensor[tl.i32, "M"],
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
    STAGES: tl.constexpr = 3,
):
    """Row maxima (a load with fill -2^31: register prefetch) and row sums (fill 0)."""
    bm = tl.blocks(tl.cdiv(M, BM))
    best = tl.full([BM], -(2**31), tl.i32)
    sums = tl.zeros([BM], tl.i32)
    for n in tl.range(0, N, BN, stages=STAGES):
        best = tl.maximum(best, tl.max(tl.load(x, [bm * BM, n], [BM, BN], fill=-(2**31)), 1))
        sums = sums + tl.sum(tl.load(x, [bm * BM, n], [BM, BN]) * 3, axis=1)
    tl.store(top, [bm * BM], best)
    tl.store(total, [bm * BM], sums)


# -- helpers -------------------------------------------------------------------------------


def the_loop(compiled) -> ir.For:
    (loop,) = [i for i in walk(compiled.stages["pipeline"]) if isinstance(i, ir.For)]
    return loop


def forms(compiled) -> dict[str, str]:
    """tensor -> how the loop reads it: "async", "prefetch" or "skipped"."""
    found = {}
    for instr in walk(the_loop(compiled).body):
        if isinstance(instr, ir.CopyAsync) and instr.attr("ahead"):
            found[instr.tensor.name] = "async"
        elif isinstance(instr, ir.Load) and instr.attr("ahead"):
            found[instr.tensor.name] = "prefetch"
        elif isinstance(instr, ir.Load) and instr.attr("unpipelined"):
            found[instr.tensor.name] = "skipped"
    return found


def ahead(compiled) -> set[int]:
    loop = the_loop(compiled)
    return {i.attr("ahead") for i in walk(loop.body) if i.attr("ahead") is not None}


def thread_loop(compiled) -> t.For:
    (loop,) = [s for s in t.walk_stmts(compiled.thread.body) if isinstance(s, t.For)]
    return loop


def source_loc(fn, text: str) -> str:
    """`file:line:col` of the first line of `fn` that contains `text`."""
    lines, first = inspect.getsourcelines(fn)
    (number, line) = next((n, ln) for n, ln in enumerate(lines) if text in ln)
    return f"{inspect.getsourcefile(fn)}:{first + number}:{line.index(text) + 1}"


# -- quantized weights -----------------------------------------------------------------------


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("weight_type", [tl.u4, tl.u3, tl.u8, tl.f4e2m1], ids=str)
def test_quantized_weights_stream_through_cp_async(weight_type, stages):
    compiled = staged_quant_matmul.compile(WT=weight_type, STAGES=stages)
    # Sizes multiples of 128: activations, packed weights and scales all cp.async.
    assert forms(compiled) == {"x": "async", "w": "async", "s": "async"}
    assert ahead(compiled) == {stages - 1}
    assert compiled.stats["pipeline_async"] == 3 and "pipeline_skipped" not in compiled.stats
    loop = thread_loop(compiled)
    waits = [s.pending for s in t.walk_stmts(loop.body) if isinstance(s, t.CpAsyncWait)]
    assert waits == [stages - 2]  # this iteration's group landed, S-2 younger ones in flight
    copies = [s for s in t.walk_stmts(loop.body) if isinstance(s, t.CpAsync) and s.tensor == "w"]
    assert copies and {c.width for c in copies} == ({4} if weight_type == tl.u3 else {16})
    weights = [s for s in t.walk_stmts(loop.body) if isinstance(s, t.GlobalLoad)]
    assert not weights  # nothing in the loop reads global memory synchronously

    # x = I: the kernel returns dequant(W) itself, exactly (sizes 256 x 128: aligned).
    k, n, group = 256, 128, 128
    _, w, s = quant.make_inputs(1, k, n, weight_type, group, seed=stages)
    eye = np.eye(k, dtype=np.float16)
    out = np.zeros((k, n), np.float16)
    consts = {"WT": weight_type, "G": group, "STAGES": stages}
    compiled_y, interpreted_y = run_both(staged_quant_matmul, [eye, w, s], [out], **consts)
    assert_bitwise(compiled_y, interpreted_y)
    expected = w.unpack().astype(np.float16) * np.repeat(s, group, axis=0)[:k]
    assert np.array_equal(interpreted_y, expected)


RAGGED = [
    # BK, S, how the loop reads x, w and s
    (32, 2, ("async", "prefetch", "prefetch")),
    (32, 3, ("async", "prefetch", "prefetch")),
    # 64 x 64 weights: 32 codes a thread, each read through a 2-byte window: two tiles
    # in flight would pass REGISTER_TARGET, so w stays in place (and says so)
    (64, 3, ("async", "skipped", "prefetch")),
]


@pytest.mark.parametrize(("bk", "stages", "expected"), RAGGED, ids=lambda v: str(v))
@pytest.mark.parametrize("weight_type", [tl.u4, tl.u3, tl.f4e2m1], ids=str)
def test_ragged_weights_are_prefetched_into_registers_within_the_budget(
    weight_type, bk, stages, expected
):
    # N = 33: a row of weights starts inside a byte, so their codes are read one at a
    # time and nothing copies whole bytes: registers, while they fit. K = 100: the
    # activations move in 8-byte runs and stay asynchronous.
    facts = {"M": 4, "K": 4, "N": 1}
    consts = {"WT": weight_type, "G": 32, "BK": bk, "STAGES": stages}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = staged_quant_matmul.compile(assume=facts, **consts)
    assert forms(compiled) == dict(zip("xws", expected, strict=True))
    assert ahead(compiled) == {stages - 1}
    skipped = expected.count("skipped")
    assert compiled.stats.get("pipeline_skipped", 0) == skipped
    messages = [str(w.message) for w in caught if w.category is PipelineWarning]
    assert len(messages) == skipped and all("registers per thread" in m for m in messages)
    loop = the_loop(compiled)
    # the accumulator, the tiles in flight, and the stage read and the stage filled
    stage_indices = 2 if "async" in expected else 0
    assert len(loop.carried) == 1 + (stages - 1) * expected.count("prefetch") + stage_indices

    k, n = 100, 33
    _, w, s = quant.make_inputs(1, k, n, weight_type, 32, seed=stages)
    eye = np.eye(k, dtype=np.float16)
    out = np.zeros((k, n), np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PipelineWarning)
        compiled_y, interpreted_y = run_both(staged_quant_matmul, [eye, w, s], [out], **consts)
    assert_bitwise(compiled_y, interpreted_y)
    expected_y = w.unpack().astype(np.float16) * np.repeat(s, 32, axis=0)[:k]
    assert np.array_equal(interpreted_y, expected_y)


# -- rank-3 loads, reshapes, reductions ---------------------------------------------------


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize(("m", "n"), [(32, 96), (20, 45)], ids=["aligned", "ragged"])
def test_rank3_loads_followed_by_reshape(m, n, stages):
    rng = np.random.default_rng(m + n + stages)
    q, k, v = (rng.integers(-2, 3, (2, size, 32)).astype(np.float16) for size in (m, n, n))
    out = np.zeros((2, m, 32), np.float32)
    compiled, interpreted = run_both(heads, [q, k, v], [out], STAGES=stages)
    assert_bitwise(compiled, interpreted)
    expected = (q.astype(np.float64) @ k.transpose(0, 2, 1)) @ v
    assert np.array_equal(interpreted, expected.astype(np.float32))


def test_a_rank3_dot_operand_is_read_from_its_stage_with_ldmatrix():
    compiled = heads.compile(STAGES=3)
    assert forms(compiled) == {"k": "async", "v": "async"}
    body = the_loop(compiled).body.instrs
    assert not any(isinstance(i, ir.Load | ir.Reshape) for i in body)
    # v: load -> reshape -> relayout is one shared_load straight into the mma operand
    # layout, from the stage sliced once more (the dropped leading dim of size 1); so is
    # k's load -> reshape -> transpose -> relayout, through a transposed view of the slice
    slices = {i.result: i for i in body if isinstance(i, ir.SharedSlice)}
    views = {i.result: i.shared for i in body if isinstance(i, ir.SharedTranspose)}
    operands = {v for i in body if isinstance(i, ir.Dot) for v in (i.a, i.b)}
    reads = [i for i in body if isinstance(i, ir.SharedLoad)]
    direct = [i for i in reads if i.result in operands]
    assert len(direct) == 2 and sum(i.shared in views for i in direct) == 1
    for read in direct:
        source = views.get(read.shared, read.shared)
        assert len(read.result.type.shape) == 2 and slices[source].shared in slices
    ldmatrix = [s for s in t.walk_stmts(thread_loop(compiled).body) if isinstance(s, tm.Ldmatrix)]
    assert ldmatrix


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize(("m", "n"), [(8, 256), (7, 150)], ids=["aligned", "ragged"])
def test_loads_used_by_reductions_and_elementwise_ops(m, n, stages):
    x = np.random.default_rng(n).integers(-(2**31), 2**31, (m, n), dtype=np.int64)
    x = x.astype(np.int32)
    outs = [np.zeros(m, np.int32), np.zeros(m, np.int32)]
    compiled, interpreted = run_both(row_stats, [x], outs, STAGES=stages)
    assert_bitwise(compiled, interpreted)
    assert np.array_equal(interpreted[0], x.max(axis=1))
    assert np.array_equal(interpreted[1], (x.astype(np.int64) * 3).sum(axis=1).astype(np.int32))


def test_a_fill_other_than_zero_is_prefetched_in_registers():
    compiled = row_stats.compile()
    loads = [i for i in walk(the_loop(compiled).body) if i.attr("ahead")]
    kinds = {
        (type(i).__name__, i.fill is not None if isinstance(i, ir.Load) else False) for i in loads
    }
    assert kinds == {("Load", True), ("CopyAsync", False)}


# -- what cannot be pipelined says so ------------------------------------------------------


@tl.kernel(warps=1)
def carried_offsets(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "M"], BN: tl.constexpr = 32):
    tl.blocks(1)
    col = 0
    acc = tl.zeros([BN], tl.f32)
    for _ in tl.range(0, N, BN, stages=2):
        acc = acc + tl.load(x, [col], [BN])
        col = col + BN
    tl.store(y, [0], acc)


@tl.kernel(warps=1)
def writes_what_it_reads(x: tl.Tensor[tl.f32, "N"], BN: tl.constexpr = 32):
    tl.blocks(1)
    for k in tl.range(BN, N, BN, stages=3):
        tl.store(x, [k], tl.load(x, [k - BN], [BN]) + 1.0)


@tl.kernel(warps=1)
def loads_in_a_branch(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "M"], BN: tl.constexpr = 32):
    tl.blocks(1)
    acc = tl.zeros([BN], tl.f32)
    for k in tl.range(0, N, BN, stages=2):
        if k < M:  # noqa: SIM108 (a runtime branch, not a Python expression)
            acc = acc + tl.load(x, [k], [BN])
        else:
            acc = acc * 2.0
    tl.store(y, [0], acc)


@pytest.mark.parametrize(
    ("kernel", "load", "why"),
    [
        (carried_offsets, "tl.load(x", "which the loop carries from one iteration to the next"),
        (writes_what_it_reads, "tl.load(x", "the loop also writes %x (store at "),
        (loads_in_a_branch, "tl.load(x", "inside a branch of the loop body"),
    ],
    ids=["carried offset", "written tensor", "branch"],
)
def test_an_unpipelined_load_warns_and_is_counted(kernel, load, why):
    with pytest.warns(PipelineWarning) as caught:
        compiled = kernel.compile(assume={"N": 8})  # facts no other test compiles for
    (message,) = {str(w.message) for w in caught}
    loop = source_loc(kernel.fn, "for ")
    assert message.startswith(f"{loop}: stages=")
    assert f"the load of %x at {source_loc(kernel.fn, load)}" in message and why in message
    assert compiled.stats["pipeline_skipped"] == 1
    assert 'unpipelined="' in compiled.ir("pipeline")


def test_unpipelined_loads_still_compute_the_same():
    x = np.arange(96, dtype=np.float32)
    with pytest.warns(PipelineWarning):
        compiled, interpreted = run_both(carried_offsets, [x], [np.zeros(32, np.float32)])
    assert_bitwise(compiled, interpreted)
    with pytest.warns(PipelineWarning):
        compiled, interpreted = run_both(writes_what_it_reads, [], [x])
    assert_bitwise(compiled, interpreted)
    expected = x.copy()
    for k in range(32, 96, 32):  # each block reads what the previous iteration wrote
        expected[k : k + 32] = expected[k - 32 : k] + 1
    assert np.array_equal(interpreted, expected)
    with pytest.warns(PipelineWarning):
        compiled, interpreted = run_both(loads_in_a_branch, [x], [np.zeros(40, np.float32)])
    assert_bitwise(compiled, interpreted)


# -- SASS of the weight stream ---------------------------------------------------------------


def _sass_loop(stages: int):
    from tilelang.runtime import sass

    require_disassembler()
    facts = {"M": 1, "K": 128, "N": 128}
    compiled = staged_quant_matmul.compile(assume=facts, target="sm_90", STAGES=stages)
    loop = sass.main_loop(sass.disassemble(compiled.cubin))
    assert loop is not None
    return compiled, loop, sass.opcodes(loop)


@pytest.mark.parametrize("stages", [2, 3])
def test_sass_issues_the_weights_stages_minus_one_iterations_ahead(stages):
    """quant_matmul u4, G = 128, M = 1 on sm_90: every global read of the main loop is an
    LDGSTS (no LDG), the loop waits until at most S-2 commit groups are pending (the
    data it reads was issued S-1 iterations before), no register spills, and no shared
    store beyond those of the unpipelined loop (which relayouts the activations and the
    dequantized weights): pipelining adds no store of dequantized weights."""
    compiled, loop, ops = _sass_loop(stages)
    _, _, plain = _sass_loop(1)
    resources = compiled.resources
    assert resources.spill_store_bytes == 0 and resources.spill_load_bytes == 0
    assert not any(op.startswith("LDG.") for op in ops)
    assert ops["LDGSTS.E.BYPASS.128"] == 3  # x, w, s: one 16-byte copy per thread each
    assert f"DEPBAR.LE SB0, {hex(stages - 2)}" in loop
    # The loop's only shared stores are the relayouts the block IR already had (the
    # dequantized weights into the mma layout); the stages add none.
    assert not any(isinstance(i, ir.SharedStore) for i in walk(the_loop(compiled).body))
    stores = {op: n for op, n in ops.items() if op.startswith("STS")}
    assert stores and all(n <= plain.get(op, 0) for op, n in stores.items())


# -- packed shared tiles --------------------------------------------------------------------

PACKED = """kernel k(%w: tensor<u4, [64, 64]>, %y: tensor<u4, [64, 64]>) warps(4) {
  %bx = blocks 1:i32 : i32
  %s = shared_alloc : shared<u4, [64, 64]>
  copy_async %w[0:i32, 0:i32] -> %s
  async_commit
  async_wait 0
  sync
  %a = shared_load %s : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
  %b = shared_load %s : tile<u4, [64, 64], local(32, 1).spatial(2, 64)>
  %c = relayout %b : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
  %d = mul %c, 3:u4 : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
  %e = add %a, %d : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
  %t = shared_alloc : shared<u4, [64, 64]>
  shared_store %t, %e
  %f = shared_load %t : tile<u4, [64, 64], spatial(64, 2).local(1, 32)>
  store %y[0:i32, 0:i32], %f
}
"""


def run_text(text: str, make_arrays):
    """The function of `text` through the pipeline and the CPU backend, and through the
    interpreter, each on the arrays a call of `make_arrays()` gives: (compiled arrays,
    interpreted arrays, the thread function)."""
    fn = parse_function(text)
    thread = lower_function(run_pipeline(fn)["plan_registers"])
    compiled, interpreted = make_arrays(), make_arrays()
    bound = bind_arguments(fn, compiled)
    buffers, write_back = byte_buffers(bound.tensors, bound.stored)
    compile_cpu(thread).launch({**buffers, **bound.scalars, **bound.sizes})
    write_back()
    for tensor in bound.tensors.values():
        tensor.finish()
    bound = bind_arguments(fn, interpreted)
    interpreter.run(fn, bound.tensors, bound.scalars, bound.sizes)
    for tensor in bound.tensors.values():
        tensor.finish()
    return compiled, interpreted, thread


def test_packed_shared_tiles_move_as_bytes_or_code_by_code():
    codes = np.random.default_rng(4).integers(0, 16, (64, 64)).astype(np.uint8)

    def arrays():
        return {"w": tl.pack_codes(codes, tl.u4), "y": tl.pack_codes(0 * codes, tl.u4)}

    compiled, interpreted, thread = run_text(PACKED, arrays)
    assert np.array_equal(interpreted["y"].unpack(), (codes * 4) % 16)
    assert np.array_equal(compiled["y"].unpack(), interpreted["y"].unpack())
    stmts = list(t.walk_stmts(thread.body))
    # whole bytes: 16-byte cp.async, loads and stores; one code at a time for %b
    assert {s.width for s in stmts if isinstance(s, t.CpAsync)} == {16}
    assert 16 in {s.width for s in stmts if isinstance(s, t.SharedLoad)}
    assert 16 in {s.width for s in stmts if isinstance(s, t.SharedStore)}
    assert dict(thread.stats)["shared_load_sub_byte"] == 32


def test_a_packed_shared_store_that_would_split_bytes_between_threads_is_refused():
    text = PACKED.replace(
        "shared_store %t, %e",
        "%g = relayout %e : tile<u4, [64, 64], local(32, 1).spatial(2, 64)>\n  shared_store %t, %g",
    )
    with pytest.raises(LoweringError, match="threads would write parts of the same bytes"):
        lower_function(run_pipeline(parse_function(text))["plan_registers"])
