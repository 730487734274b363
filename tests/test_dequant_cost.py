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
met — and 1.6 with a group scale: without a value fact 4-bit codes take 1.125 + 0.5
(one f16 multiplication per pair) and i8 1.25 + 0.5; under a value fact on the scales
(0 <= s < 64) the scale folds into the recipe and u4 takes 1.1875, u8 1.03 (signed
codes do not fold: docs/design.md, "Dequantization recipes"). The bounds below are what
the recipes achieve, so that a change that makes them slower fails.
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


# min_blocks=1: this kernel measures the recipes' cost; without it ptxas trades the u7
# loop's 101 registers for 96 and 8 spilled bytes to fit one more block per SM (the
# example itself, with its scales, needs no such bound).
@tl.kernel(warps=quant.WARPS, min_blocks=1)
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


def dequant_per_weight(kernel, weight_type: tl.DType, values=None, **constexprs) -> float:
    """`values`: value facts (tensor name -> bound) added to the launch's size facts."""
    consts = {"WT": weight_type, **constexprs}
    facts = {**launch_facts(kernel, consts, LAUNCH), **(values or {})}
    compiled = kernel.compile(target="sm_90", assume=facts, **consts)
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


@pytest.mark.parametrize(
    ("weight_type", "bound", "most"),
    [(tl.u4, 64, 1.1875), (tl.u2, 64, 1.125), (tl.u8, 64, 1.03125), (tl.u3, 64, 1.58),
     (tl.f4e2m1, 4, 1.53125), (tl.f6e3m2, 16, 2.25), (tl.f6e2m3, 4, 2.25)],
    ids=str,
)  # fmt: skip
def test_dequantization_with_a_group_scale_folded_under_a_value_fact(weight_type, bound, most):
    """With the fact 0 <= s < bound (tests/test_scale_folds.py: exact under it), the
    scale folds into the recipe: one HFMA2 h·s − M·s per pair of unsigned codes instead
    of a sub and a mul, one product by 2^(bias_t − bias_s)·s for small floats; the
    products M·s are made once per column per group (4-bit: 1.125 + 0.0625; f4e2m1:
    each code word's bytes placed by 7 word instructions, then a prmt and the product
    per pair, 1.5 + 0.03; 6-bit floats through f8 bytes, recipe 7: 7 funnel shifts,
    4 × 4 and 8 × 2 instructions per 16 codes, 2.19 + 0.05, where recipe 4 took 3.25).
    The
    issue's 1.6 is met by u4 and u8; i4 and i8 do not fold (their constant
    M + 2^(b−1) times s is not exact), so they keep the bounds above."""
    folded = dequant_per_weight(quant.quant_matmul, weight_type, {"s": bound}, G=128)
    assert folded <= most
    assert folded < dequant_per_weight(quant.quant_matmul, weight_type, G=128)


@pytest.mark.parametrize("values", [{}, {"s": 256}], ids=["no fact", "fact"])
def test_f8e4m3_converts_by_pairs_on_sm_90_with_or_without_a_fact(values):
    """sm_89 and later convert two f8e4m3 codes in one instruction (recipe 6: F2FP,
    tests/test_f8_conversion.py), then one HMUL2 by the scales per pair: 1.0 per weight
    whether or not the scale folds (the arithmetic recipe took 3.04 folded, with its
    NaN steps)."""
    assert dequant_per_weight(quant.quant_matmul, tl.f8e4m3, values, G=128) <= 1.0


@pytest.mark.parametrize(("fmt", "most"), [("mxfp8_e4m3", 3.35), ("mxfp6_e2m3", 3.95)])
def test_sm80_block_scaled_main_loops_place_codes_a_word_at_a_time(fmt, most):
    """sm_80 has no f8 pair conversion, so `tilelang.quant`'s m=1 main loop places the
    codes a word at a time (recipe 8): f8e4m3 3.30 instructions per weight (recipe 4
    took 3.80), f6e2m3 3.91 (4.48; the issue's target for block-scaled formats is 4),
    whole loop, from the cubin's static report."""
    import numpy as np

    from tilelang import quant as q

    rng = np.random.default_rng(0)
    qw = q.quantize(rng.standard_normal((1024, 512)) * 0.05, format=fmt)
    launch = q.plan(qw, 1, "sm_80").launches[0]
    assert launch.perf().instructions_per_element * 32 <= most
    assert launch.compiled.resources.spill_store_bytes == 0
