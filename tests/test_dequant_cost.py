"""What dequantization costs in the main loop of a weight-streaming kernel on sm_90, read
from the SASS of its cubin (no GPU needed; skipped without NVRTC or a disassembler).

The kernels are the example's (`examples/quant_matmul.py`: packed fragments, pipelined,
with a group scale) and the same loop without the scale. Counted per weight a thread
converts in one iteration: the instructions of the dequantization class (LOP3, PRMT,
half2 arithmetic, conversions; LOP3s of addresses included, which only makes the number
larger), plus, for codes that straddle bytes (3, 5, 6, 7 bits), every SHF of the loop:
their recipes shift codes into place (the loop's address shifts are then counted too).
Speed is not asserted here; these are instruction counts, which the static performance
report turns into predictions (benchmarks/perf_report.py).

The issue's targets are 1.25 (4 and 8-bit) and 2.5 (3, 5, 6, 7-bit) without a scale —
met — and 1.6 with a group scale, met by u8 only: 4-bit codes take 1.125 + 0.5 (one
f16 multiplication per pair) and i8 1.25 + 0.5. The bounds below are what the recipes
achieve, so that a change that makes them slower fails; docs/benchmarks.md says why
the scale is not folded into the magic-number subtraction (it would not be bit-exact
for every scale).
"""

import pytest
from conftest import load_example

import tilelang as tl
from tilelang.cli import launch_facts
from tilelang.runtime import sass

quant = load_example("quant_matmul")

pytestmark = [
    pytest.mark.usefixtures("disassembler"),
]

LAUNCH = {"M": 1, "K": 8192, "N": 28672}


@tl.kernel(warps=quant.WARPS)
def unscaled_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    BM: tl.constexpr = quant.BLOCK_M,
    BN: tl.constexpr = quant.BLOCK_N,
    BK: tl.constexpr = quant.BLOCK_K,
):
    """The example's main loop without the scale: y = x @ W."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    fragments = tl.dot_layout("b", BM, BN, BK)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=3):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        q = tl.load_fragment(w, [k, bn * BN], fragments)
        acc = tl.dot(a, q.to(tl.f16), acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


def dequant_per_weight(kernel, weight_type: tl.DType, **constexprs) -> float:
    consts = {"WT": weight_type, **constexprs}
    compiled = kernel.compile(target="sm_90", assume=launch_facts(kernel, consts, LAUNCH), **consts)
    loop = sass.main_loop(sass.disassemble(compiled.cubin))
    assert loop is not None
    ops = sass.opcodes(loop)
    dequant = sum(
        n
        for op, n in ops.items()
        if sass.classify(op) == "dequantization (LOP3/PRMT/half2/cvt)"
        or (op.startswith("SHF") and 8 % weight_type.bits != 0)
    )
    threads = quant.WARPS * 32
    weights = quant.BLOCK_K * quant.BLOCK_N / threads  # per thread per iteration
    assert compiled.resources.spill_store_bytes == 0
    return dequant / weights


@pytest.mark.parametrize(
    ("weight_type", "most"),
    [(tl.u4, 1.25), (tl.i4, 1.25), (tl.u8, 1.25), (tl.i8, 1.25), (tl.u2, 1.25),
     (tl.u3, 2.5), (tl.i3, 2.5), (tl.u5, 2.5), (tl.u6, 2.5), (tl.u7, 2.5)],
    ids=str,
)  # fmt: skip
def test_dequantization_without_a_scale(weight_type, most):
    assert dequant_per_weight(unscaled_matmul, weight_type) <= most


@pytest.mark.parametrize(
    ("weight_type", "most"),
    [(tl.u4, 1.625), (tl.i4, 1.625), (tl.u8, 1.5), (tl.i8, 1.75)],
    ids=str,
)  # fmt: skip
def test_dequantization_with_a_group_scale(weight_type, most):
    """One f16 multiplication per pair more than without: the product q·s rounded to
    f16 that the kernel asks for. (4-bit: 1.125 + 0.5; see docs/benchmarks.md for why
    the scale is not folded into the magic-number subtraction.)"""
    assert dequant_per_weight(quant.quant_matmul, weight_type, G=128) <= most
