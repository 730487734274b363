"""Dot operands a kernel reads from a `tl.shared` tile by hand (`buf.load()` then
`tl.dot`) are read as the pipeline's own staged operands are (`passes.shared_reads`):
straight from shared memory in the dot's fragment layout (ldmatrix a k-step at a time,
the warpgroup mma's descriptor on sm_90a), never held whole in registers by every warp
that shares them. The results do not change: the CPU backend runs the lowered program,
and a kernel reading an operand from shared memory gives, bit for bit, what the same
kernel gives with that operand in registers (the same mmas in the same order); the
interpreter, which sums a dot in float64 and rounds once, and numpy agree within the
rounding of f32 sums."""

import importlib
import warnings

import numpy as np
import pytest
from conftest import assert_bitwise, assert_close, run_both

import tilelang as tl
from tilelang.analysis.liveness import Program
from tilelang.analysis.streaming import streamed_reads
from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.passes import plan_registers
from tilelang.runtime import sass
from tilelang.target import TARGETS

ARCHS = ("sm_80", "sm_90a")


@tl.kernel(warps=4)
def hand_matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 64,
):
    """Both operands staged through shared memory by hand, each step."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    sa = tl.shared([BM, BK], tl.f16)
    sb = tl.shared([BK, BN], tl.f16)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK):
        sa.store(tl.load(a, [bm * BM, k], [BM, BK]))
        sb.store(tl.load(b, [k, bn * BN], [BK, BN]))
        tl.sync()
        acc = tl.dot(sa.load(), sb.load(), acc)
        tl.sync()
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.kernel(warps=4)
def staged_matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 64,
):
    """The same matmul, its operands staged by the compiler's pipelining."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


def attention(warps: int, shared_q: bool = True):
    """Flash-attention's loop with q read from a `tl.shared` tile every step (as
    FlashAttention-2 does), or (`shared_q` false) held in registers across the loop."""

    @tl.kernel(warps=warps)
    def attention_q(
        q: tl.Tensor[tl.f16, "M", "D"],
        k: tl.Tensor[tl.f16, "N", "D"],
        v: tl.Tensor[tl.f16, "N", "D"],
        o: tl.Tensor[tl.f16, "M", "D"],
        BM: tl.constexpr = 128,
        BN: tl.constexpr = 64,
        HD: tl.constexpr = 128,
        SHARED_Q: tl.constexpr = shared_q,
    ):
        bm = tl.blocks(tl.cdiv(M, BM))
        m_i = tl.full([BM], float("-inf"), tl.f32)
        l_i = tl.zeros([BM], tl.f32)
        acc = tl.zeros([BM, HD], tl.f32)
        qbuf = tl.shared([BM, HD], tl.f16)
        q0 = tl.load(q, [bm * BM, 0], [BM, HD])
        if SHARED_Q:
            qbuf.store(q0)
        for n in tl.range(0, N, BN, stages=2):
            kt = tl.load(k, [n, 0], [BN, HD])
            vt = tl.load(v, [n, 0], [BN, HD])
            qt = q0
            if SHARED_Q:
                qt = qbuf.load()
            s = tl.dot(qt, tl.transpose(kt)) * 0.125
            cols = n + tl.arange(0, BN)
            s = tl.where(tl.broadcast(cols[None, :] < N, [BM, BN]), s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp2(s - m_new[:, None])
            alpha = tl.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = tl.dot(p.to(tl.f16), vt, acc * alpha[:, None])
            m_i = m_new
        tl.store(o, [bm * BM, 0], (acc / l_i[:, None]).to(tl.f16))

    return attention_q


ATTENTION_SHARED_Q = attention(8)
ATTENTION_Q_IN_REGISTERS = attention(8, shared_q=False)


def loop_of(fn: ir.Function) -> ir.For:
    return next(i for i in walk(fn) if isinstance(i, ir.For))


def producers(block: ir.Block) -> dict[ir.Var, ir.Instr]:
    return {var: instr for instr in block.instrs for var in instr.defs()}


# -- the block IR ------------------------------------------------------------------------


def test_the_dot_reads_both_operands_from_shared_memory_in_its_layouts():
    stages = hand_matmul.stages(target="cpu")
    before = loop_of(stages["hoist_relayouts"]).body
    asked = {i.result: i for i in before.instrs if isinstance(i, ir.Relayout)}
    assert len(asked) == 2  # infer_layouts relayouts both reads to the mma fragments
    body = loop_of(stages["shared_reads"]).body
    assert not [i for i in body.instrs if isinstance(i, ir.Relayout)]
    made = producers(body)
    dot = next(i for i in body.instrs if isinstance(i, ir.Dot))
    for operand in (dot.a, dot.b):
        read = made[operand]
        assert isinstance(read, ir.SharedLoad), read
        assert operand in asked  # the relayout's value (name and fragment layout) is read
    # each read right before the dot (after the barrier), so it streams a k-step at a time
    at = body.instrs.index(dot)
    assert {type(i) for i in body.instrs[at - 2 : at]} == {ir.SharedLoad}
    streamed = streamed_reads(Program.of(hand_matmul.stages(target="cpu")["plan_registers"]))
    assert {v.name for v in streamed} == {dot.a.name, dot.b.name}


@pytest.mark.parametrize("arch", ARCHS)
def test_the_register_estimate_is_the_pipelined_builds(arch):
    """Before: about 322 registers (both operands whole in every warp that shares them),
    a RegisterBudgetError. The hand-staged loop also holds the two global tiles it
    stores (32 registers each) where the pipelined one copies with cp.async."""
    hand = plan_registers.registers(hand_matmul.stages(target=arch)["plan_registers"])
    staged = plan_registers.registers(staged_matmul.stages(target=arch)["plan_registers"])
    assert hand <= staged + 64, (hand, staged)


@tl.kernel(warps=4)
def read_then_overwritten(
    x: tl.Tensor[tl.f16, "M", "K"],
    y: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f32, "M", "N"],
    d: tl.Tensor[tl.f32, "M", "N"],
):
    """The tile is overwritten between its read and its dot: the read must stay first."""
    buf = tl.shared([64, 32], tl.f16)
    buf.store(tl.load(x, [0, 0], [64, 32]))
    tl.sync()
    first = buf.load()
    buf.store(tl.load(y, [0, 0], [64, 32]))
    tl.store(c, [0, 0], tl.dot(first, tl.load(w, [0, 0], [32, 64])))
    tl.store(d, [0, 0], tl.dot(buf.load(), tl.load(w, [0, 0], [32, 64])))


@tl.kernel(warps=4)
def from_registers(
    x: tl.Tensor[tl.f16, "M", "K"],
    y: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f32, "M", "N"],
    d: tl.Tensor[tl.f32, "M", "N"],
):
    """`read_then_overwritten`'s dots with their A operands loaded into registers."""
    tl.store(c, [0, 0], tl.dot(tl.load(x, [0, 0], [64, 32]), tl.load(w, [0, 0], [32, 64])))
    tl.store(d, [0, 0], tl.dot(tl.load(y, [0, 0], [64, 32]), tl.load(w, [0, 0], [32, 64])))


def test_a_read_does_not_move_past_a_store_to_shared_memory():
    fn = read_then_overwritten.stages(target="cpu")["shared_reads"]
    kinds = [type(i) for i in fn.body.instrs if isinstance(i, ir.SharedLoad | ir.SharedStore)]
    assert kinds == [ir.SharedStore, ir.SharedLoad, ir.SharedStore, ir.SharedLoad]
    rng = np.random.default_rng(3)
    x, y = (rng.standard_normal((64, 32)).astype(np.float16) for _ in range(2))
    w = rng.standard_normal((32, 64)).astype(np.float16)
    outs = [np.zeros((64, 64), np.float32) for _ in range(2)]
    got, interpreted = run_both(read_then_overwritten, (x, y, w), outs)
    assert_bitwise(got, from_registers(x, y, w, *(o.copy() for o in outs)))
    for out, want, tile in zip(got, interpreted, (x, y), strict=True):
        assert_close(out, want, 1e-5)
        assert_close(out, tile.astype(np.float64) @ w.astype(np.float64), 1e-5)


@tl.kernel(warps=4)
def transposed_from_shared(
    a: tl.Tensor[tl.f16, "M", "D"],
    kk: tl.Tensor[tl.f16, "N", "D"],
    c: tl.Tensor[tl.f32, "M", "N"],
):
    """a · kᵀ with k staged by hand as [1, N, D] and read back reshaped and transposed."""
    buf = tl.shared([1, 64, 32], tl.f16)
    buf.store(tl.reshape(tl.load(kk, [0, 0], [64, 32]), [1, 64, 32]))
    tl.sync()
    kt = tl.transpose(tl.reshape(buf.load(), [64, 32]))
    tl.store(c, [0, 0], tl.dot(tl.load(a, [0, 0], [64, 32]), kt))


@tl.kernel(warps=4)
def transposed_in_registers(
    a: tl.Tensor[tl.f16, "M", "D"],
    kk: tl.Tensor[tl.f16, "N", "D"],
    c: tl.Tensor[tl.f32, "M", "N"],
):
    kt = tl.transpose(tl.load(kk, [0, 0], [64, 32]))
    tl.store(c, [0, 0], tl.dot(tl.load(a, [0, 0], [64, 32]), kt))


def test_a_reshaped_and_transposed_read_is_a_view_read_as_stored():
    fn = transposed_from_shared.stages(target="cpu")["shared_reads"]
    kinds = [type(i) for i in walk(fn)]
    assert ir.SharedTranspose in kinds and ir.SharedSlice in kinds
    assert kinds.count(ir.Transpose) == 0 and kinds.count(ir.Reshape) == 1  # the store's
    dot = next(i for i in walk(fn) if isinstance(i, ir.Dot))
    assert isinstance(producers(fn.body)[dot.b], ir.SharedLoad)
    compiled = transposed_from_shared.compile(target="cpu")
    assert compiled.stats["ldmatrix_transposed_view"] >= 1
    assert compiled.stats.get("shared_relayout", 0) == 0
    rng = np.random.default_rng(4)
    a = rng.standard_normal((50, 32)).astype(np.float16)
    k = rng.standard_normal((40, 32)).astype(np.float16)
    out = np.zeros((50, 40), np.float32)
    got, interpreted = run_both(transposed_from_shared, (a, k), (out,))
    assert_bitwise(got, transposed_in_registers(a, k, out.copy()))
    assert_close(got, interpreted, 1e-5)
    assert_close(got, a.astype(np.float64) @ k.astype(np.float64).T, 1e-5)


# -- the lowered program: same results ---------------------------------------------------------


@pytest.mark.parametrize("m, n, k", [(100, 72, 96), (130, 136, 200), (67, 129, 33)])
def test_the_cpu_backend_equals_the_pipelined_build_at_odd_sizes(m, n, k):
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    out = np.zeros((m, n), np.float16)
    got, interpreted = run_both(hand_matmul, (a, b), (out,))
    if n % 8 == 0 and k % 8 == 0:  # rows in 16-byte runs: the pipelined build fits
        assert_bitwise(got, staged_matmul(a, b, out.copy()))
    # f32 sums of k products in some order, then one f16 rounding each
    tolerance = k * 2.0**-22 + 2.0**-9
    assert_close(got, interpreted.astype(np.float64), tolerance)
    assert_close(got, a.astype(np.float64) @ b.astype(np.float64), tolerance)
    thread = hand_matmul.compile(assume=None, target="cpu")
    assert thread.stats["ldmatrix"] > 0 and thread.stats.get("shared_relayout", 0) == 0


def test_attention_reading_q_from_shared_equals_q_in_registers():
    rng = np.random.default_rng(5)
    q = rng.standard_normal((100, 128)).astype(np.float16)
    k, v = (rng.standard_normal((77, 128)).astype(np.float16) for _ in range(2))
    out = np.zeros((100, 128), np.float16)
    got = ATTENTION_SHARED_Q(q, k, v, out.copy())
    assert_bitwise(got, ATTENTION_Q_IN_REGISTERS(q, k, v, out.copy()))
    scores = q.astype(np.float64) @ k.astype(np.float64).T * 0.125 * np.log(2)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    assert_close(got, weights / weights.sum(axis=1, keepdims=True) @ v.astype(np.float64), 4e-3)
    # q is read a k-step at a time at its dot, not held whole across the loop's step
    fn = ATTENTION_SHARED_Q.stages(target="sm_80")["plan_registers"]
    qbuf = next(i.result for i in walk(fn) if isinstance(i, ir.SharedAlloc))
    read = next(i for i in walk(fn) if isinstance(i, ir.SharedLoad) and i.shared == qbuf)
    assert read.result in streamed_reads(Program.of(fn))


def test_the_sm_90a_lowering_gives_the_cpu_lowerings_bits(monkeypatch):
    """On sm_90a the buffers take the warpgroup mma's panels (rows of 256 bytes cut in
    two) and B goes through its descriptor; the CPU backend runs that lowering too."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((130, 136)).astype(np.float16)
    b = rng.standard_normal((136, 72)).astype(np.float16)
    q = rng.standard_normal((100, 128)).astype(np.float16)
    k, v = (rng.standard_normal((77, 128)).astype(np.float16) for _ in range(2))

    def call():
        return (
            hand_matmul(a, b, np.zeros((130, 72), np.float16)),
            ATTENTION_SHARED_Q(q, k, v, np.zeros((100, 128), np.float16)),
        )

    plain = call()
    assert hand_matmul.compile(target="sm_90a").stats["wgmma"] > 0
    monkeypatch.setattr(importlib.import_module("tilelang.kernel"), "CPU", TARGETS["sm_90a"])
    assert_bitwise(call(), plain)


# -- GPU builds (NVRTC and ptxas, no GPU) --------------------------------------------------------


def build(kernel, arch: str, **constexprs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        return kernel.compile(target=arch, **constexprs)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_hand_staged_matmul_compiles_like_the_pipelined_one(arch):
    hand, staged = build(hand_matmul, arch), build(staged_matmul, arch)
    assert hand.resources.spills == 0, hand.resources
    # the pipelined build copies with cp.async; this one holds its two global tiles
    assert hand.resources.registers <= staged.resources.registers + 40, (
        hand.resources,
        staged.resources,
    )
    stats = hand.stats
    assert stats.get("shared_relayout", 0) == 0 and stats.get("dot_operand_replicated", 0) == 0
    if arch == "sm_90a":  # B through the warpgroup mma's descriptor, A by ldmatrix
        assert stats["wgmma"] == staged.stats["wgmma"] and stats["ldmatrix"] > 0
    else:
        assert stats["ldmatrix"] == staged.stats["ldmatrix"]
        assert stats["mma"] == staged.stats["mma"]


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ARCHS)
def test_the_main_loop_reads_the_operands_with_ldmatrix(arch):
    loop = sass.opcodes(sass.main_loop(sass.disassemble(build(hand_matmul, arch).cubin)))
    assert any(op.startswith("LDSM") for op in loop), loop
    assert not [op for op in loop if op.startswith(("LDL", "STL"))], loop
    if arch == "sm_90a":
        assert any(op.startswith("HGMMA") for op in loop), loop
    # the stores of the staged tiles, no scratch round trip of a whole operand: 16 STS
    # of 16 bytes (two [128, 64] f16 tiles over 128 threads)
    assert sum(n for op, n in loop.items() if op.startswith("STS")) == 16, loop


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ARCHS)
def test_attention_at_128_rows_reads_q_from_shared_with_fewer_registers(arch):
    """BM = 128, D = 128 over 8 warps: q read each step by ldmatrix, with no round trip
    through the scratch area (before: 8 LDS.128 of the blocked tile, 8 STS.128 and two
    barriers more each step), takes fewer registers than q held across the loop (sm_80
    166 against 200, sm_90a 159 against 168), with 0 spills."""
    shared_q = build(ATTENTION_SHARED_Q, arch)
    in_registers = build(ATTENTION_Q_IN_REGISTERS, arch)
    assert shared_q.resources.spills == 0, shared_q.resources
    assert shared_q.resources.registers < in_registers.resources.registers, (
        shared_q.resources,
        in_registers.resources,
    )
    loop = sass.opcodes(sass.main_loop(sass.disassemble(shared_q.cubin)))
    assert not [op for op in loop if op.startswith(("STS", "LDS.128", "LDL", "STL"))], loop
    assert sum(n for op, n in loop.items() if op.startswith("BAR")) == 1, loop  # the pipeline's
