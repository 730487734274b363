"""The value fact "finite": ``assume={"w": "finite"}`` states that no element of the
float tensor w is inf or NaN, so the dequantization recipes leave out their
special-value steps (recipe 5 of `tilelang.lowering.dequant`) for the codes it reaches.

Laws: with the fact, the CPU backend equals the interpreter and a decoder written from
the OCP f8 spec for every finite code, through plain loads, cp.async stages and a view
of the codes as bytes and back; the fact is part of the specialization (cache key,
printed IR, which round-trips through the parser); the launch refuses an inf or NaN
element before running, naming the tensor, its index and its code; the fact on an
integer tensor is refused; `tilelang.quant` gives its f8 weights the fact exactly when
their codes allow it; on sm_80, where MXFP8-e4m3 has no conversion instruction, the
library's main loop loses the special-value instructions (5.3 -> 3.8 per weight).
"""

import dataclasses
import importlib

import numpy as np
import pytest

import tilelang as tl
from tilelang import quant
from tilelang.analysis.value_bounds import ValueBounds
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.quant.operands import operands
from tilelang.runtime import value_facts
from tilelang.target import TARGETS

BK, BN = 64, 64
F8 = (tl.f8e4m3, tl.f8e5m2)
OUTS = (tl.f16, tl.bf16, tl.f32)


@tl.kernel(warps=4)
def convert(
    q: tl.Tensor["WT", "K", "N"],
    y: tl.Tensor["OT", "K", "N"],
    WT: tl.constexpr = tl.f8e4m3,
    OT: tl.constexpr = tl.f16,
):
    """y = q.to(OT), one block per BK rows."""
    bk = tl.blocks(K // BK)
    tl.store(y, [bk * BK, 0], tl.load(q, [bk * BK, 0], [BK, BN]).to(OT))


@tl.kernel(warps=4)
def convert_staged(
    q: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor[tl.f16, "K // BK", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.f8e4m3,
    BK: tl.constexpr = BK,
):
    """y = the sum over row blocks of q's tiles as f16 times their group scales; the
    tiles come through cp.async stages and a detour through bytes (`tl.view`)."""
    acc = tl.zeros([BK, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        tile = tl.view(tl.view(tl.load(q, [k, 0], [BK, BN]), tl.u8), WT)
        scaled = tile.to(tl.f16) * tl.load(s, [k // BK, 0], [1, BN])
        acc = acc + scaled.to(tl.f32)
    tl.store(y, [0, 0], acc.to(tl.f16))


# ---------------------------------------------------------------- the spec's values


def spec_value(code: int, dtype: tl.DType) -> float:
    """An OCP f8 code's value (E4M3: bias 7, S.1111.111 NaN; E5M2: bias 15, IEEE)."""
    e_bits, m_bits, bias = (4, 3, 7) if dtype == tl.f8e4m3 else (5, 2, 15)
    sign = -1.0 if code >> 7 else 1.0
    e, m = (code >> m_bits) & ((1 << e_bits) - 1), code & ((1 << m_bits) - 1)
    if (dtype == tl.f8e4m3 and e == 15 and m == 7) or (dtype == tl.f8e5m2 and e == 31):
        return np.nan if m else sign * np.inf
    if e == 0:
        return sign * 2.0 ** (1 - bias) * m / 2**m_bits
    return sign * 2.0 ** (e - bias) * (1 + m / 2**m_bits)


def finite_codes(dtype: tl.DType, k: int) -> np.ndarray:
    """Every finite code of `dtype` down each column (cycled, shifted per column)."""
    good = np.array([c for c in range(256) if np.isfinite(spec_value(c, dtype))], np.uint8)
    grid = (np.arange(k)[:, None] + np.arange(BN)[None, :] * 5) % good.size
    return good[grid]


def out_bits(values: np.ndarray, out: tl.DType) -> np.ndarray:
    """The bits of exactly representable values in `out` (no rounding needed)."""
    if out == tl.f16:
        return values.astype(np.float16).view(np.uint16)
    as_f32 = values.astype(np.float32).view(np.uint32)
    return as_f32 if out == tl.f32 else (as_f32 >> 16).astype(np.uint16)


def got_bits(y, out: tl.DType) -> np.ndarray:
    return y.codes().astype(np.uint32 if out == tl.f32 else np.uint16)


def run_convert(codes, dtype, out, assume=None, interpret=False):
    k = codes.shape[0]
    y = tl.pack_codes(np.zeros((k, BN), out.storage), out)
    call = convert.interpret if interpret else convert
    return got_bits(call(tl.pack_codes(codes, dtype), y, WT=dtype, OT=out, assume=assume), out)


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("dtype", F8, ids=str)
@pytest.mark.parametrize("out", OUTS, ids=str)
def test_with_the_fact_every_finite_code_converts_as_the_spec_says(dtype, out):
    codes = finite_codes(dtype, BK * 2)
    spec = np.vectorize(lambda c: spec_value(int(c), dtype))(codes)
    got = run_convert(codes, dtype, out, {"q": "finite"})
    np.testing.assert_array_equal(got, out_bits(spec, out))
    np.testing.assert_array_equal(got, run_convert(codes, dtype, out, interpret=True))


@pytest.mark.parametrize("dtype", F8, ids=str)
def test_the_fact_reaches_the_recipe_through_loads_only_when_stated(dtype):
    stated = convert.compile(assume={"K": 64, "q": "finite"}, WT=dtype, OT=tl.bf16)
    unstated = convert.compile(assume={"K": 64}, WT=dtype, OT=tl.bf16)
    assert stated.stats.get("dequant_finite", 0) > 0
    assert unstated.stats.get("dequant_finite", 0) == 0


def test_the_fact_follows_cp_async_stages_and_a_view_through_bytes():
    facts = {"K": 64, "N": 64, "M": 64, "q": "finite", "s": 4}
    stated = convert_staged.compile(assume=facts, WT=tl.f8e4m3)
    assert stated.stats.get("pipeline_async", 0) > 0  # the tiles do come through stages
    assert stated.stats.get("dequant_finite", 0) > 0
    without = convert_staged.compile(assume={"K": 64, "N": 64, "M": 64, "s": 4}, WT=tl.f8e4m3)
    assert without.stats.get("dequant_finite", 0) == 0


def test_staged_and_viewed_codes_with_the_fact_equal_the_interpreter_and_the_spec():
    rng = np.random.default_rng(1)
    k = BK * 3
    codes = finite_codes(tl.f8e4m3, k)
    s = np.exp2(rng.integers(-6, 2, (k // BK, BN))).astype(np.float16)  # below 4
    q = tl.pack_codes(codes, tl.f8e4m3)
    facts = {"q": "finite", "s": 4}
    got = convert_staged(q, s, np.zeros((BK, BN), np.float16), assume=facts)
    interpreted = convert_staged.interpret(q, s, np.zeros((BK, BN), np.float16), assume=facts)
    np.testing.assert_array_equal(got.view(np.uint16), interpreted.view(np.uint16))
    # The spec: f32 sums of the f16 products value·s (each exact: s a power of two, and
    # every value·s well inside f16), added in k order, rounded once to f16.
    values = np.vectorize(lambda c: spec_value(int(c), tl.f8e4m3))(codes)
    products = (values * np.repeat(s.astype(np.float64), BK, axis=0)).astype(np.float32)
    acc = np.zeros((BK, BN), np.float32)
    for block in range(k // BK):
        acc = acc + products[block * BK : (block + 1) * BK]
    np.testing.assert_array_equal(got.view(np.uint16), acc.astype(np.float16).view(np.uint16))


def test_finiteness_is_lost_through_a_view_as_another_float_type():
    """f8e4m3 codes viewed as f8e5m2 are not finite f8e5m2 values (0x7C is inf)."""

    @tl.kernel(warps=4)
    def reinterpret(q: tl.Tensor[tl.f8e4m3, "K", "N"], y: tl.Tensor[tl.f16, "K", "N"]):
        tile = tl.view(tl.load(q, [0, 0], [BK, BN]), tl.f8e5m2)
        tl.store(y, [0, 0], tile.to(tl.f16))

    compiled = reinterpret.compile(assume={"K": 64, "N": 64, "q": "finite"})
    bounds = ValueBounds(compiled.stages["frontend"])
    (cast,) = [i for i in compiled.stages["frontend"].body.instrs if type(i).__name__ == "Cast"]
    assert not bounds.finite(cast.value)


# ---------------------------------------------------------------- specialization


def test_the_fact_is_part_of_the_cache_key_and_the_printed_ir():
    spec = convert.specialization(WT=tl.f8e4m3, OT=tl.f16)
    with_fact = spec.key_text((("K", 64), ("q", "finite")))
    assert "finite(q)" in with_fact
    assert with_fact != spec.key_text((("K", 64),))
    stated = convert.compile(assume={"K": 64, "q": "finite"}, WT=tl.f8e4m3, OT=tl.f16)
    unstated = convert.compile(assume={"K": 64}, WT=tl.f8e4m3, OT=tl.f16)
    assert stated is not unstated
    assert "finite(q)" in stated.ir("frontend") and "finite(q)" not in unstated.ir("frontend")


def test_the_printed_fact_parses_back_to_the_same_function():
    compiled = convert.compile(assume={"K": 64, "q": "finite"}, WT=tl.f8e4m3, OT=tl.f16)
    fn = compiled.stages["frontend"]
    again = parse_function(print_function(fn))
    assert again.assume == fn.assume == (("K", 64), ("q", "finite"))
    assert print_function(again) == print_function(fn)


def test_the_sm80_build_differs_by_the_fact():
    stated = convert.compile(assume={"K": 64, "q": "finite"}, target="sm_80", OT=tl.f16)
    unstated = convert.compile(assume={"K": 64}, target="sm_80", OT=tl.f16)
    assert stated.source != unstated.source


# ---------------------------------------------------------------- the launch check


@pytest.mark.parametrize(("dtype", "code"), [(tl.f8e4m3, 0x7F), (tl.f8e4m3, 0xFF),
                                             (tl.f8e5m2, 0x7C), (tl.f8e5m2, 0xFE)])  # fmt: skip
def test_the_launch_refuses_an_inf_or_nan_code_naming_tensor_index_and_code(dtype, code):
    codes = finite_codes(dtype, BK)
    codes[3, 17] = code
    y = tl.pack_codes(np.zeros((BK, BN), np.uint16), tl.f16)
    with pytest.raises(ValueError, match=rf"q: .*finite.*q\[3, 17\] = code 0x{code:02x}"):
        convert(tl.pack_codes(codes, dtype), y, WT=dtype, assume={"q": "finite"})
    with pytest.raises(ValueError, match=r"q\[3, 17\]"):
        convert.interpret(tl.pack_codes(codes, dtype), y, WT=dtype, assume={"q": "finite"})
    assert not y.codes().any()  # nothing ran


def test_the_launch_refuses_inf_in_an_f16_array():
    @tl.kernel(warps=4)
    def copy(x: tl.Tensor[tl.f16, "N"], y: tl.Tensor[tl.f16, "N"]):
        tl.store(y, [0], tl.load(x, [0], [64]))

    x = np.ones(64, np.float16)
    x[9] = np.inf
    with pytest.raises(ValueError, match=r"x\[9\] = inf"):
        copy(x, np.zeros(64, np.float16), assume={"x": "finite"})
    x[9] = 1
    np.testing.assert_array_equal(copy(x, np.zeros(64, np.float16), assume={"x": "finite"}), x)


def test_the_fact_on_an_integer_tensor_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"assume: q holds u8 values.*finite"):
        convert.compile(assume={"q": "finite"}, WT=tl.u8)
    codes = np.zeros((BK, BN), np.uint8)
    with pytest.raises(ValueError, match=r"assume: q holds u8 values"):
        convert(codes, tl.pack_codes(np.zeros((BK, BN), np.uint16), tl.f16), WT=tl.u8,
                assume={"q": "finite"})  # fmt: skip


def test_only_the_word_finite_is_a_fact():
    with pytest.raises(
        TypeError, match=r"assume: q should map to a power-of-two int bound, got str 'Finite'"
    ):
        value_facts.value_facts("convert", ("q", "y"), {"q": "Finite"})


def test_a_recorded_bound_implies_finiteness_but_not_the_reverse():
    codes = tl.pack_codes(finite_codes(tl.f8e4m3, BK), tl.f8e4m3)
    value_facts.record(codes, value_facts.FINITE)
    with pytest.raises(ValueError, match="0 <= q < 2"):  # finiteness proves no bound
        value_facts.check_values((("q", 2),), {"q": codes})
    assert value_facts.implies(64, value_facts.FINITE)
    assert not value_facts.implies(value_facts.FINITE, 64)


# ---------------------------------------------------------------- tilelang.quant


def with_code(qw: quant.QuantizedWeight, index: tuple[int, int], code: int):
    codes = qw.plain_codes().copy()
    codes[index] = code
    return dataclasses.replace(qw.unpacked(), codes=tl.pack_codes(codes, qw.dtype))


@pytest.mark.parametrize("fmt", ["mxfp8_e4m3", "mxfp8_e5m2"])
def test_quant_gives_f8_weights_the_fact_exactly_when_no_code_is_special(fmt):
    rng = np.random.default_rng(2)
    qw = quant.quantize(rng.standard_normal((128, 64)), format=fmt)
    assert qw.finite and operands(qw, tl.f16).facts["w"] == "finite"
    bad = with_code(qw, (5, 7), 0x7F)
    assert not bad.finite and "w" not in operands(bad, tl.f16).facts


def test_quant_gives_no_fact_to_types_without_special_codes():
    qw = quant.quantize(np.random.default_rng(3).standard_normal((128, 64)), format="mxfp4")
    assert "w" not in operands(qw, tl.f16).facts


def test_a_weight_with_a_nan_code_still_multiplies_to_nan_in_its_column():
    rng = np.random.default_rng(4)
    qw = quant.quantize(rng.standard_normal((128, 64)) * 0.1, format="mxfp8_e4m3")
    bad = with_code(qw, (5, 7), 0x7F)
    y = quant.matmul(np.ones((1, 128), np.float16), bad)
    assert np.isnan(y[0, 7]) and np.isfinite(np.delete(y[0], 7)).all()


@pytest.mark.parametrize("m", [1, 17])
def test_mxfp8_sm80_lowering_with_the_fact_runs_as_the_cpu_lowering_within_the_bound(
    monkeypatch, m
):
    """The library's MXFP8-e4m3 kernels under the fact, lowered for sm_80 and run on the
    CPU backend, equal the CPU lowering bit for bit and x @ W (numpy, float64) within
    the f32-accumulation bound of `tilelang.quant.matmul`."""
    rng = np.random.default_rng(12)
    k, n = 256, 136
    qw = quant.quantize(rng.standard_normal((k, n)) * 0.05, format="mxfp8_e4m3")
    x = rng.standard_normal((m, k)).astype(np.float16)
    expected = np.asarray(quant.matmul(x, qw))
    assert all("w" in dict(launch.compiled.stages["frontend"].assume) for launch in
               quant.plan(qw, m, "sm_80").launches[:1])  # fmt: skip
    kernel_module = importlib.import_module("tilelang.kernel")
    monkeypatch.setattr(kernel_module, "CPU", TARGETS["sm_80"])
    got = np.asarray(quant.matmul(x, qw))
    np.testing.assert_array_equal(got.view(np.uint16), expected.view(np.uint16))
    exact = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    e = (k + 2) * 2.0**-24 * (np.abs(x.astype(np.float64)) @ np.abs(qw.dequantize()))
    bound = e + 2.0**-11 * (np.abs(exact) + e) + 2.0**-25
    assert (np.abs(got.astype(np.float64) - exact) <= bound).all()


@pytest.mark.usefixtures("disassembler")
def test_sm80_mxfp8_e4m3_main_loop_loses_the_special_value_steps():
    """sm_80 has no f8 conversion instruction: recipe 8 places each word of four codes
    by 4 word instructions (rotate, and, and, lop3), then one prmt and the scaled
    product per pair; with folded scales a NaN code must give the canonical NaN, 2 more
    per word (and, add) and 2 per pair (prmt, lop3). With the fact the whole main loop
    takes at most 3.35 instructions per weight (3.30 measured; recipes 4 and 5 took
    3.80 and 5.30); without it, at least 4.5 (4.80)."""
    rng = np.random.default_rng(0)
    qw = quant.quantize(rng.standard_normal((1024, 512)) * 0.05, format="mxfp8_e4m3")
    finite = quant.plan(qw, 1, "sm_80").launches[0]
    special = quant.plan(with_code(qw, (3, 5), 0x7F), 1, "sm_80").launches[0]
    with_fact = finite.perf().instructions_per_element * 32
    without = special.perf().instructions_per_element * 32
    assert with_fact <= 3.35, with_fact
    assert without >= 4.5, without
    assert finite.compiled.resources.spill_store_bytes == 0


def test_an_ahead_of_time_build_refuses_the_fact_naming_the_tensor():
    from tilelang.aot.c_expr import AotError
    from tilelang.aot.interface import KernelInterface

    compiled = convert.compile(assume={"K": 64, "q": "finite"}, WT=tl.f8e4m3, OT=tl.f16)
    with pytest.raises(AotError, match=r"convert\(\): .*'q' finite"):
        KernelInterface.of("convert", compiled.stages["frontend"], compiled.thread)


def test_e8m0_scales_stated_finite_convert_to_f16_as_the_spec_says():
    """2^(c − 127) for every code but the NaN 0xFF, rounded once to f16 (overflow to
    inf, the smallest to +0)."""
    good = np.arange(255, dtype=np.uint8)
    codes = good[(np.arange(BK)[:, None] + np.arange(BN)[None, :] * 3) % good.size]
    spec = np.exp2(codes.astype(np.float64) - 127)
    got = run_convert(codes, tl.e8m0, tl.f16, {"q": "finite"})
    with np.errstate(over="ignore"):  # codes above 142 are inf in f16
        expected = spec.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, run_convert(codes, tl.e8m0, tl.f16, interpret=True))
    stated = convert.compile(assume={"K": 64, "q": "finite"}, WT=tl.e8m0, OT=tl.f16)
    assert stated.stats.get("dequant_finite", 0) > 0
