"""How dot operands are laid out and read (issue 12, attention): dot chains split the
warps over rows, a transposed operand of a pipelined load is a shared-memory view read
as stored, a loop-invariant operand is relayouted once before its loop, and operands
that a layout replicates over warps are reported."""

import warnings

import numpy as np
import pytest

import tilelang as tl
from tilelang import TileLangError, dtypes
from tilelang.analysis.dot_chains import chained_dots
from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.ir import nodes as ir
from tilelang.ir.fragments import dot_layouts
from tilelang.ir.layout import Rep
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.verify import verify
from tilelang.ir.visit import walk
from tilelang.kernels.attention import flash_attention_kernel
from tilelang.passes import hoist_relayouts, software_pipeline
from tilelang.runtime import interpreter
from tilelang.runtime.arguments import bind_arguments

ATTENTION = dict(T=dtypes.f16, CAUSAL=True, LSE=False, HD=64, BM=64, BN=64)


@tl.kernel(warps=4)
def matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 32,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc)


def test_split_rows_gives_every_warp_whole_rows_and_an_unreplicated_a():
    plan = dot_layouts(64, 64, 64, dtypes.f16, dtypes.f32, 4, split_rows=True)
    assert plan.warps == (4, 1)
    assert not any(isinstance(m, Rep) and m.size > 1 for m in plan.a.thread_modes)
    assert dot_layouts(64, 64, 64, dtypes.f16, dtypes.f32, 4).warps == (2, 2)  # the default


def test_attention_dots_form_a_chain_and_a_matmul_does_not():
    attention = flash_attention_kernel.stages(assume="all", target="cpu", **ATTENTION)["frontend"]
    dots = [i.result.name for i in walk(attention) if isinstance(i, ir.Dot)]
    assert len(dots) == 2 and chained_dots(attention) == frozenset(dots)
    assert chained_dots(matmul.stages(target="cpu")["frontend"]) == frozenset()


@tl.kernel(warps=4)
def masked_chain(
    q: tl.Tensor[tl.f16, "M", "K"],
    k: tl.Tensor[tl.f16, "N", "K"],
    v: tl.Tensor[tl.f16, "N", "D"],
    o: tl.Tensor[tl.f32, "M", "D"],
    limit: tl.i32,
):
    """S = q·kᵀ masked under a block-uniform `if`, then S·v: the mask's `if` is on the
    way from one dot to the next, as attention's last-block mask is."""
    s = tl.dot(tl.load(q, [0, 0], [64, 64]), tl.transpose(tl.load(k, [0, 0], [64, 64])))
    if limit < 64:
        s = tl.where(tl.arange(0, 64)[None, :] < limit, s, 0.0)
    tl.store(o, [0, 0], tl.dot(s.to(tl.f16), tl.load(v, [0, 0], [64, 64])))


def test_a_chain_goes_through_the_results_of_an_if():
    fn = masked_chain.stages(assume="all", target="cpu")["frontend"]
    dots = [i.result.name for i in walk(fn) if isinstance(i, ir.Dot)]
    assert len(dots) == 2 and chained_dots(fn) == frozenset(dots)
    stats = masked_chain.compile(assume="all", target="cpu").stats
    assert stats.get("shared_relayout", 0) == 0  # S's fragment is the next A fragment
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((64, 64)).astype(np.float16) for _ in range(3))
    for limit in (64, 40):
        o = masked_chain(q, k, v, np.zeros((64, 64), np.float32), limit)
        s = q.astype(np.float64) @ k.astype(np.float64).T
        s[:, limit:] = 0.0
        want = s.astype(np.float16).astype(np.float64) @ v.astype(np.float64)
        np.testing.assert_allclose(o, want, rtol=2e-2, atol=2e-2)


def test_the_chain_keeps_p_in_registers_and_reduces_rows_with_shuffles():
    stats = flash_attention_kernel.compile(assume="all", target="cpu", **ATTENTION).stats
    assert stats.get("shared_relayout", 0) == 0  # P: S's fragment is P·V's A fragment
    assert stats["reduce_shuffle"] == 2 and stats.get("reduce_shared", 0) == 0
    assert stats.get("dot_operand_replicated", 0) == 0  # K and V stream from shared


def test_a_loop_invariant_operand_is_relayouted_once_before_the_loop():
    stages = flash_attention_kernel.stages(assume="all", target="cpu", **ATTENTION)
    fn = stages["hoist_relayouts"]
    (loop,) = [i for i in fn.body.instrs if isinstance(i, ir.For)]
    before = fn.body.instrs[: fn.body.instrs.index(loop)]
    assert [i for i in before if isinstance(i, ir.Relayout)]  # q's A fragment
    inside = [i for i in walk(loop.body) if isinstance(i, ir.Relayout)]
    assert all(i.value.name != "q_1_1" for i in inside)
    assert hoist_relayouts.run(fn) == fn  # nothing left to hoist


TRANSPOSED = """kernel k(%x: tensor<f16, [B, N, H, 32]>, %y: tensor<f16, [B, 32, 16]>) sizes(%B: i32, %N: i32, %H: i32) warps(1) assume(B % 128, N % 128, H % 128) {
  %bx = blocks %B : i32
  %z = full 0.0:f16 : tile<f16, [32, 16], spatial(8, 4).local(4, 4)>
  %out = for %k = 0:i32 to %N step 16:i32 iter(%acc: tile<f16, [32, 16], spatial(8, 4).local(4, 4)> = %z) stages(2) {
    %a = load %x[%bx, %k, 1:i32, 0:i32] : tile<f16, [1, 16, 1, 32], spatial(1, 16, 1, 2).local(1, 1, 1, 16)>
    %m = reshape %a : tile<f16, [16, 32], spatial(16, 2).local(1, 16)>
    %t = transpose %m, perm=[1, 0] : tile<f16, [32, 16], column_spatial(2, 16).local(16, 1)>
    %b = relayout %t : tile<f16, [32, 16], spatial(8, 4).local(4, 4)>
    %s = add %acc, %b : tile<f16, [32, 16], spatial(8, 4).local(4, 4)>
    yield %s
  }
  %r = reshape %out : tile<f16, [1, 32, 16], spatial(1, 8, 4).local(1, 4, 4)>
  store %y[%bx, 0:i32, 0:i32], %r
}
"""


def run_text(fn, arrays: dict) -> dict:
    copies = {name: a.copy() for name, a in arrays.items()}
    bound = bind_arguments(fn, copies)
    interpreter.run(fn, bound.tensors, bound.scalars, bound.sizes)
    for tensor in bound.tensors.values():
        tensor.finish()
    return copies


def test_a_transposed_rank4_load_is_read_through_shared_views_without_moving_data():
    source = parse_function(TRANSPOSED)
    fn = software_pipeline.run(source)
    verify(fn)
    body = [i for loop in walk(fn) if isinstance(loop, ir.For) for i in loop.body.instrs]
    kinds = {type(i) for i in body}
    assert ir.SharedTranspose in kinds and ir.SharedLoad in kinds
    assert not kinds & {ir.Load, ir.Reshape, ir.Transpose, ir.Relayout}
    (read,) = [i for i in body if isinstance(i, ir.SharedLoad)]
    assert tuple(read.shared.type.shape) == (32, 16)  # Kᵀ, a view of K as stored
    x = np.random.default_rng(5).standard_normal((2, 48, 3, 32)).astype(np.float16)
    arrays = {"x": x, "y": np.zeros((2, 32, 16), np.float16)}
    want, got = run_text(source, arrays), run_text(fn, arrays)
    assert np.array_equal(want["y"], got["y"])


def test_a_replicated_operand_is_counted_and_warned_about_on_a_gpu_when_costly():
    plain = matmul.compile(target="cpu").stats  # a (2, 2) warp grid: A and B replicated
    assert plain["dot_operand_replicated"] == 2
    assert plain["dot_operand_replicated_words"] == 16 + 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplicatedOperandWarning)  # 16 words: no warning
        matmul.compile(target="sm_80")
    with pytest.warns(ReplicatedOperandWarning, match="the A operand of this dot") as caught:
        wide = matmul.compile(target="sm_80", BM=16, BN=64, BK=256)  # A [16, 256] in 4 warps
    assert "64 registers per thread" in str(caught[0].message)
    assert wide.stats["dot_operand_replicated_words"] >= 64


def test_a_kernel_that_expects_replication_is_not_warned_but_still_counted():
    expecting = tl.kernel(matmul.fn, warps=4, expect_replicated=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplicatedOperandWarning)
        wide = expecting.compile(target="sm_80", BM=16, BN=64, BK=256)
    assert wide.stats["dot_operand_replicated_words"] >= 64
    assert "expect_replicated=true" in print_function(expecting.specialize(BM=16, BN=64, BK=256))
    assert tl.ReplicatedOperandWarning is ReplicatedOperandWarning  # users filter by it
    with pytest.raises(TypeError, match="expect_replicated must be True, False or a function"):
        tl.kernel(matmul.fn, expect_replicated="yes")


def test_expect_replicated_may_depend_on_the_constexprs():
    """Only the builds the function names expect replication: the others still warn."""
    expecting = tl.kernel(matmul.fn, warps=4, expect_replicated=lambda BN, **_: BN == 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReplicatedOperandWarning)
        expecting.compile(target="sm_80", BM=16, BN=64, BK=256)
    with pytest.warns(ReplicatedOperandWarning, match="the A operand of this dot"):
        expecting.compile(target="sm_80", BM=16, BN=32, BK=256)
    wrong = tl.kernel(matmul.fn, expect_replicated=lambda **_: "no")
    with pytest.raises(TileLangError, match="expect_replicated must give True or False, got 'no'"):
        wrong.specialize()


@pytest.mark.parametrize("rows", [1, 2, 8])
def test_a_dot_with_fewer_than_16_rows_is_padded_onto_the_mma(rows):
    rng = np.random.default_rng(rows)
    a = rng.standard_normal((13, 96)).astype(np.float16)
    b = rng.standard_normal((96, 128)).astype(np.float16)
    c = np.zeros((13, 128), np.float32)
    matmul(a, b, c, BM=rows)
    want = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=0, atol=1e-4)  # f32 sums of exact products
    stats = matmul.compile(target="cpu", BM=rows).stats
    assert stats["mma"] > 0 and "dot_generic" not in stats
    assert stats["dot_padded_rows"] == 16 - rows
    assert matmul.compile(assume="all", target="sm_80", BM=rows).resources.spills == 0
