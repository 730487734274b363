"""Group scales folded into the dequantization recipes: ``q.to(f16) * s`` becomes one
fma h·s + (−M·s) per pair of unsigned codes (h = M + q under the recipe's magic M), or
one product by 2^(bias_t − bias_s)·s for small floats, but only where a value fact
(``assume={"s": b}``: +0 ≤ s < b, sign bit clear) proves the fold exact
(`tilelang.lowering.scale_folds.folds_scales`); the call checks the fact on the arrays
before running.

Laws: the CPU backend (which runs the folded thread IR) equals the interpreter (the
block IR as written) and numpy (round(q·s) once, from the spec) bit for bit, for every
code and scales up to the largest the fact allows; scales that break the fact are
refused before anything runs, naming the tensor; without a fact, or with one too loose
for the fold, nothing is folded and large scales are exact too.
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.lowering import scale_folds

BK, BN = 64, 64


@tl.kernel(warps=4)
def scaled_codes(
    q: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor["OT", "K // BK", "N"],
    y: tl.Tensor["OT", "K", "N"],
    WT: tl.constexpr = tl.u4,
    OT: tl.constexpr = tl.f16,
    BK: tl.constexpr = BK,
    BN: tl.constexpr = BN,
):
    """y = q.to(OT) * s, one scale per column per group of BK rows."""
    bk = tl.blocks(K // BK)
    codes = tl.load(q, [bk * BK, 0], [BK, BN])
    tl.store(y, [bk * BK, 0], codes.to(OT) * tl.load(s, [bk, 0], [1, BN]))


#: The largest power-of-two bound under which each fold is exact, from the spec:
#: 2^16 (f16's overflow threshold) over the largest constant the recipe multiplies a
#: scale by: the magic 2^10 of integer codes at bit 0, 2^(15 − bias) for small floats.
F16_BOUNDS = {tl.u4: 64, tl.u2: 64, tl.u8: 64, tl.u1: 64, tl.f4e2m1: 4, tl.f6e2m3: 4,
              tl.f6e3m2: 16, tl.f8e4m3: 256}  # fmt: skip


def codes_of(dtype: tl.DType, k: int, rng) -> np.ndarray:
    """Every code of `dtype` down each column (cycled, shifted per column)."""
    count = 2**dtype.bits
    grid = (np.arange(k)[:, None] + np.arange(BN)[None, :] * 7) % count
    codes = rng.permutation(count)[grid].astype(dtype.storage)
    if dtype.is_float:  # NaN codes stay (NaN·s is the canonical NaN); inf has none here
        codes[np.isinf(dtype.decode(codes))] = 0
    return codes


def boundary_scales(out: tl.DType, below: float, groups: int, rng) -> np.ndarray:
    """Scales in [+0, below): the largest value below the bound, +0, the smallest
    subnormal, one, and random ones spread over every binade below the bound."""
    storage = np.float16 if out == tl.f16 else None
    largest = float(out.decode(int(out.encode(below)) - 1))
    special = [largest, 0.0, float(out.decode(1)), 1.0, largest / 2]
    random = np.exp2(rng.uniform(-24, np.log2(below), groups * BN))
    values = np.concatenate([special, random])[: groups * BN]
    values = np.minimum(out.decode(out.encode(values)), largest)
    s = values.reshape(groups, BN)
    return s.astype(storage) if storage else tl.pack_codes(out.encode(s), out)


def expected(codes: np.ndarray, dtype: tl.DType, s, out: tl.DType) -> np.ndarray:
    """round(value(q) · s) once, from the spec (the product is exact in float64)."""
    values = dtype.decode(codes).astype(np.float64) if dtype.is_float else codes.astype(np.float64)
    scales = s.astype(np.float64) if isinstance(s, np.ndarray) else s.unpack()
    product = values * np.repeat(np.asarray(scales, np.float64), BK, axis=0)
    return out.encode(product)


def bits(y, out: tl.DType) -> np.ndarray:
    return y.view(np.uint16) if isinstance(y, np.ndarray) else y.codes().astype(np.uint16)


def run(dtype: tl.DType, out: tl.DType, s, codes: np.ndarray, assume=None, interpret=False):
    k = codes.shape[0]
    q = tl.pack_codes(codes, dtype) if dtype.bits < 8 or dtype.is_float else codes
    y = (
        np.zeros((k, BN), np.float16)
        if out == tl.f16
        else tl.pack_codes(np.zeros((k, BN), np.uint16), out)
    )
    call = scaled_codes.interpret if interpret else scaled_codes
    return bits(call(q, s, y, WT=dtype, OT=out, assume=assume), out)


def folded(dtype: tl.DType, out: tl.DType, k: int, assume) -> int:
    compiled = scaled_codes.compile(assume={"K": 64, **(assume or {})}, WT=dtype, OT=out)
    return compiled.stats.get("dequant_scale_folded", 0)


@pytest.mark.parametrize(("dtype", "bound"), list(F16_BOUNDS.items()), ids=str)
def test_the_fold_is_bit_exact_for_every_code_and_scales_up_to_the_bound(dtype, bound):
    rng = np.random.default_rng(dtype.bits)
    k = BK * 4
    codes = codes_of(dtype, k, rng)
    s = boundary_scales(tl.f16, bound, k // BK, rng)
    assert folded(dtype, tl.f16, k, {"s": bound}) > 0
    y = run(dtype, tl.f16, s, codes, {"s": bound})
    np.testing.assert_array_equal(y, run(dtype, tl.f16, s, codes, interpret=True))
    np.testing.assert_array_equal(y, expected(codes, dtype, s, tl.f16))


def test_the_folds_bound_is_the_largest_power_of_two_that_keeps_every_product_finite():
    for dtype, bound in F16_BOUNDS.items():
        assert scale_folds.folds_scales(dtype, tl.f16, bound), dtype
        assert not scale_folds.folds_scales(dtype, tl.f16, 2 * bound), dtype


def test_u4_to_bf16_folds_every_scale_up_to_65536():
    rng = np.random.default_rng(3)
    codes = codes_of(tl.u4, BK * 2, rng)
    s = boundary_scales(tl.bf16, 65536, 2, rng)
    assert folded(tl.u4, tl.bf16, BK * 2, {"s": 65536}) > 0
    y = run(tl.u4, tl.bf16, s, codes, {"s": 65536})
    np.testing.assert_array_equal(y, expected(codes, tl.u4, s, tl.bf16))
    np.testing.assert_array_equal(y, run(tl.u4, tl.bf16, s, codes, interpret=True))


@pytest.mark.parametrize(("dtype", "out"), [(tl.i4, tl.f16), (tl.i8, tl.f16),
                                            (tl.f8e5m2, tl.bf16)], ids=str)  # fmt: skip
def test_codes_whose_fold_would_not_be_exact_are_not_folded(dtype, out):
    """Signed codes subtract M + 2^(b−1), no power of two, so (M + 2^(b−1))·s is not
    exact; f8e5m2's inf times s is NaN for s = 0, which a folded product cannot tell."""
    assert folded(dtype, out, BK, {"s": 4}) == 0


@pytest.mark.parametrize(("dtype", "bound"), [(tl.u4, 128), (tl.f4e2m1, 8)], ids=str)
def test_a_fact_too_loose_for_the_fold_folds_nothing_and_large_scales_stay_exact(dtype, bound):
    rng = np.random.default_rng(5)
    k = BK * 2
    codes = codes_of(dtype, k, rng)
    s = boundary_scales(tl.f16, bound, k // BK, rng)
    assert folded(dtype, tl.f16, k, {"s": bound}) == 0
    assert folded(dtype, tl.f16, k, None) == 0
    y = run(dtype, tl.f16, s, codes, {"s": bound})
    np.testing.assert_array_equal(y, expected(codes, dtype, s, tl.f16))
    np.testing.assert_array_equal(y, run(dtype, tl.f16, s, codes))  # no fact at all


@pytest.mark.parametrize(
    ("bad", "shown"), [(64.0, "64.0"), (-0.0, "-0.0"), (-1.0, "-1.0"), (np.nan, "nan")]
)
def test_scales_that_break_the_fact_are_refused_before_running_naming_the_tensor(bad, shown):
    rng = np.random.default_rng(7)
    codes = codes_of(tl.u4, BK, rng)
    s = boundary_scales(tl.f16, 64, 1, rng)
    s[0, 5] = bad
    for call in (scaled_codes, scaled_codes.interpret):
        y = np.full((BK, BN), 7, np.float16)
        with pytest.raises(ValueError, match=rf"^s: .*0 <= s < 64.*s\[0, 5\] = {shown}"):
            call(tl.pack_codes(codes, tl.u4), s, y, assume={"s": 64})
        assert (y == 7).all()  # nothing ran


@pytest.mark.parametrize(
    ("assume", "error", "message"),
    [
        ({"t": 64}, ValueError, "'t' is not a tensor of scaled_codes"),
        ({"K": 64}, ValueError, "'K' is not a tensor"),
        ({"s": 48}, ValueError, "s should map to a power of two from 1 to 65536, got 48"),
        ({"s": 64.0}, TypeError, "s should map to a power-of-two int bound, got float"),
        ([("s", 64)], TypeError, "expected a dict of tensor name"),
    ],
)
def test_a_malformed_value_fact_is_refused_naming_it(assume, error, message):
    codes = codes_of(tl.u4, BK, np.random.default_rng(0))
    s = np.ones((1, BN), np.float16)
    with pytest.raises(error, match=message):
        scaled_codes(tl.pack_codes(codes, tl.u4), s, np.zeros((BK, BN), np.float16), assume=assume)


def test_the_fact_shows_in_the_ir_and_parses_back():
    from tilelang.ir.parser import parse_function
    from tilelang.ir.printer import print_function

    stages = scaled_codes.stages(assume={"K": 64, "s": 64}, WT=tl.u4)
    text = print_function(stages["plan_registers"])
    assert "assume(K % 64, 0 <= s < 64)" in text.splitlines()[0]
    assert print_function(parse_function(text)) == text


def test_tilelang_quant_states_the_fact_it_knows_about_its_scales():
    """`tilelang.quant` checks its scales once per weight (`Operands.facts`) and records
    the fact on the arrays it hands the kernels, so f4e2m1 weights fold; a weight with a
    negative scale states nothing and folds nothing."""
    from tilelang import quant
    from tilelang.quant.operands import operands

    w = np.random.default_rng(11).standard_normal((256, 128)).astype(np.float32)
    qw = quant.quantize(w, "f4e2m1")
    assert operands(qw, tl.f16).facts == {"s": 1}
    assert quant.plan(qw, 1, "cpu").launches[0].compiled.stats["dequant_scale_folded"] > 0
    flipped = quant.quantize(w, "f4e2m1")
    flipped.scale_codes[0, 0] |= 0x8000  # the same magnitude, negative
    assert operands(flipped, tl.f16).facts == {}
    stats = quant.plan(flipped, 1, "cpu").launches[0].compiled.stats
    assert "dequant_scale_folded" not in stats


def test_a_call_that_writes_an_array_forgets_what_was_recorded_about_it():
    from tilelang.runtime import value_facts

    codes = codes_of(tl.u4, BK, np.random.default_rng(0))
    s, y = np.ones((1, BN), np.float16), np.zeros((BK, BN), np.float16)
    value_facts.record(s, 2)
    value_facts.record(y, 1)
    scaled_codes(tl.pack_codes(codes, tl.u4), s, y, assume={"s": 2})
    assert value_facts.recorded_within(s, 2)
    assert not value_facts.recorded_within(y, 1)  # y now holds codes up to 15


def test_a_torch_tensor_is_checked_like_a_numpy_array():
    import torch  # the test extra installs it

    codes = codes_of(tl.u4, BK, np.random.default_rng(0))
    s = torch.ones((1, BN), dtype=torch.float16)
    s[0, 3] = 64.0
    y = np.zeros((BK, BN), np.float16)
    with pytest.raises(ValueError, match=r"^s: .*s\[0, 3\] = 64.0"):
        scaled_codes(tl.pack_codes(codes, tl.u4), s, y, assume={"s": 64})
    s[0, 3] = 63.96875  # the largest f16 below 64
    y = scaled_codes(tl.pack_codes(codes, tl.u4), s, y, assume={"s": 64})
    np.testing.assert_array_equal(y[:, 3], (codes[:, 3] * np.float64(63.96875)).astype(np.float16))


# ------------------------------------------------ constants, and facts carried through casts


@tl.kernel(warps=4)
def constant_scaled(
    q: tl.Tensor["WT", "K", "N"],
    y: tl.Tensor["OT", "K", "N"],
    WT: tl.constexpr = tl.f4e2m1,
    OT: tl.constexpr = tl.f16,
    C: tl.constexpr = 1.0,
    BK: tl.constexpr = BK,
    BN: tl.constexpr = BN,
):
    """y = q.to(OT) * C."""
    bk = tl.blocks(K // BK)
    tl.store(y, [bk * BK, 0], tl.load(q, [bk * BK, 0], [BK, BN]).to(OT) * C)


@tl.kernel(warps=4)
def converted_scales(
    q: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor["ST", "K // BK", "N"],
    y: tl.Tensor[tl.f16, "K", "N"],
    WT: tl.constexpr = tl.f4e2m1,
    ST: tl.constexpr = tl.f8e4m3,
    VIEW: tl.constexpr = None,
    SHIFT: tl.constexpr = 0,
    BK: tl.constexpr = BK,
    BN: tl.constexpr = BN,
):
    """y = q.to(f16) * (s viewed as VIEW).to(f16) · 2^-SHIFT: NVFP4's and MX's scales."""
    bk = tl.blocks(K // BK)
    raw = tl.load(s, [bk, 0], [1, BN])
    scales = (raw if VIEW is None else tl.view(raw, VIEW)).to(tl.f16)
    if SHIFT:
        scales = scales * 2.0**-SHIFT
    tl.store(y, [bk * BK, 0], tl.load(q, [bk * BK, 0], [BK, BN]).to(tl.f16) * scales)


def stats(kernel, k: int, **kwargs) -> dict:
    return kernel.compile(assume={"K": 64, **kwargs.pop("assume", {})}, **kwargs).stats


@pytest.mark.parametrize(
    ("dtype", "c"),
    [(tl.f4e2m1, 2.0**-14), (tl.f4e2m1, 2.0**-8), (tl.f6e3m2, 0.5), (tl.f8e4m3, 2.0**-8),
     (tl.f8e4m3, 2.0**6), (tl.u4, 2.0**-3), (tl.u8, 32.0)],
    ids=str,
)  # fmt: skip
def test_a_power_of_two_constant_folds_into_the_recipe_bit_exactly(dtype, c):
    """2^-14 and 2^-8 cancel the rebias of f4e2m1 and f8e4m3: no multiplication at all."""
    codes = codes_of(dtype, BK * 4, np.random.default_rng(dtype.bits))
    q = tl.pack_codes(codes, dtype) if dtype.bits < 8 or dtype.is_float else codes
    assert stats(constant_scaled, BK * 4, WT=dtype, C=c)["dequant_scale_folded"] > 0
    y = constant_scaled(q, np.zeros(codes.shape, np.float16), WT=dtype, C=c)
    reference = constant_scaled.interpret(q, np.zeros(codes.shape, np.float16), WT=dtype, C=c)
    np.testing.assert_array_equal(y.view(np.uint16), reference.view(np.uint16))
    values = dtype.decode(codes) if dtype.is_float else codes
    np.testing.assert_array_equal(y.view(np.uint16), tl.f16.encode(values * np.float64(c)))


@pytest.mark.parametrize(
    ("dtype", "c"), [(tl.f4e2m1, 3.0), (tl.f4e2m1, -0.5), (tl.f4e2m1, 2.0**8), (tl.u4, 2.0**6)]
)
def test_a_constant_whose_fold_is_not_exact_is_not_folded_and_stays_exact(dtype, c):
    """3 is no power of two; −0.5 gives +0 where 0·c is −0 (u4's fma); 2^14·2^8 and
    2^10·2^6 overflow f16."""
    codes = codes_of(dtype, BK * 2, np.random.default_rng(1))
    q = tl.pack_codes(codes, dtype)
    assert "dequant_scale_folded" not in stats(constant_scaled, BK * 2, WT=dtype, C=c)
    y = constant_scaled(q, np.zeros(codes.shape, np.float16), WT=dtype, C=c)
    values = dtype.decode(codes) if dtype.is_float else codes
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(y.view(np.uint16), tl.f16.encode(values * np.float64(c)))


def e4m3_scales(groups: int, rng) -> tl.PackedArray:
    """Every non-negative finite f8e4m3 code (subnormals, 448), then random ones."""
    finite = [c for c in range(0x7F)]  # 0x7F is NaN
    codes = np.concatenate([finite, rng.integers(0, 0x7F, groups * BN)])[: groups * BN]
    return tl.pack_codes(codes.reshape(groups, BN).astype(np.uint8), tl.f8e4m3)


def test_an_e4m3_scale_fact_folds_through_its_exact_cast_and_a_constant_nvfp4s_recipe():
    """0 <= b < 512 holds for b.to(f16) (an exact cast) and b.to(f16) · 2^-8 < 2, where
    the f4e2m1 fold is exact; the scales' own conversion leaves out its NaN steps (the
    fact excludes NaN) and its multiplication (2^8 · 2^-8 = 1)."""
    rng = np.random.default_rng(4)
    k = BK * 4
    codes = codes_of(tl.f4e2m1, k, rng)
    s = e4m3_scales(k // BK, rng)
    q = tl.pack_codes(codes, tl.f4e2m1)
    found = stats(converted_scales, k, SHIFT=8, assume={"s": 512})
    assert found["dequant_scale_folded"] > 0 and found["dequant_finite"] > 0
    without = stats(converted_scales, k, SHIFT=8)  # only the constant folds: into b's cast
    assert without["dequant_scale_folded"] < found["dequant_scale_folded"]
    assert "dequant_finite" not in without
    y = converted_scales(q, s, np.zeros((k, BN), np.float16), SHIFT=8, assume={"s": 512})
    reference = converted_scales.interpret(q, s, np.zeros((k, BN), np.float16), SHIFT=8)
    np.testing.assert_array_equal(y.view(np.uint16), reference.view(np.uint16))
    product = tl.f4e2m1.decode(codes) * np.repeat(s.unpack(), BK, axis=0) * 2.0**-8
    np.testing.assert_array_equal(y.view(np.uint16), tl.f16.encode(product))


def test_a_fact_on_u8_codes_folds_through_their_e8m0_view():
    """u8 codes below 128 viewed as e8m0 are scales of at most 1 (then cast to f16,
    where the small ones round to 0 or subnormals): 2^14 · s stays finite."""
    rng = np.random.default_rng(6)
    k = BK * 4
    codes = codes_of(tl.f4e2m1, k, rng)
    s = np.concatenate([np.arange(128), rng.integers(100, 128, 4 * BN - 128)])
    s = s.reshape(4, BN).astype(np.uint8)
    q = tl.pack_codes(codes, tl.f4e2m1)
    kwargs = {"ST": tl.u8, "VIEW": tl.e8m0}
    assert stats(converted_scales, k, assume={"s": 128}, **kwargs)["dequant_scale_folded"] > 0
    assert "dequant_scale_folded" not in stats(converted_scales, k, assume={"s": 256}, **kwargs)
    y = converted_scales(q, s, np.zeros((k, BN), np.float16), assume={"s": 128}, **kwargs)
    reference = converted_scales.interpret(q, s, np.zeros((k, BN), np.float16), **kwargs)
    np.testing.assert_array_equal(y.view(np.uint16), reference.view(np.uint16))
    scales = tl.f16.decode(tl.f16.encode(np.exp2(s.astype(np.float64) - 127)))
    product = tl.f4e2m1.decode(codes) * np.repeat(scales, BK, axis=0)
    np.testing.assert_array_equal(y.view(np.uint16), tl.f16.encode(product))


def test_nvfp4_weights_fold_their_block_scales_under_the_fact_tilelang_quant_states():
    from tilelang import quant
    from tilelang.quant.operands import operands

    w = np.random.default_rng(12).standard_normal((256, 128)).astype(np.float32)
    qw = quant.quantize(w, format="nvfp4")
    ops = operands(qw, tl.f16)
    assert ops.facts == {"s": 512} and ops.t == np.float32(qw.tensor_scale) * 2**8
    launch = quant.plan(qw, 1, "cpu").launches[0]
    assert launch.compiled.stats["dequant_scale_folded"] > 0
    x = np.random.default_rng(13).standard_normal((3, 256)).astype(np.float16)
    reference = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    y = quant.matmul(x, qw).astype(np.float64)
    np.testing.assert_allclose(y, reference, rtol=2e-3, atol=2e-3 * np.abs(reference).max())


@tl.kernel(warps=4)
def rescaled_in_place(
    q: tl.Tensor[tl.u4, "K", "N"],
    s: tl.Tensor[tl.f16, "K // BK", "N"],
    y: tl.Tensor[tl.f16, "K", "N"],
    BK: tl.constexpr = BK,
    BN: tl.constexpr = BN,
):
    """Doubles s in place, then y = q.to(f16) * s: what the launch checked is not what
    the product reads."""
    bk = tl.blocks(K // BK)
    tl.store(s, [bk, 0], tl.load(s, [bk, 0], [1, BN]) * 2.0)
    tl.store(
        y,
        [bk * BK, 0],
        tl.load(q, [bk * BK, 0], [BK, BN]).to(tl.f16) * tl.load(s, [bk, 0], [1, BN]),
    )


def test_a_fact_on_a_tensor_the_kernel_writes_proves_nothing():
    assert "dequant_scale_folded" not in stats(rescaled_in_place, BK, assume={"s": 64})


@tl.kernel(warps=4)
def exponent_field_scales(
    q: tl.Tensor[tl.f4e2m1, "K", "N"],
    e: tl.Tensor[tl.u8, "K // BK", "N"],
    y: tl.Tensor[tl.f16, "K", "N"],
    BK: tl.constexpr = BK,
    BN: tl.constexpr = BN,
):
    """y = q.to(f16) * s, s built from f16 exponent fields e: the bits e << 10 (MX's
    scales as `tilelang.quant` stores them)."""
    bk = tl.blocks(K // BK)
    scales = tl.view(tl.load(e, [bk, 0], [1, BN]).to(tl.u16) << 10, tl.f16)
    tl.store(y, [bk * BK, 0], tl.load(q, [bk * BK, 0], [BK, BN]).to(tl.f16) * scales)


def test_a_fact_on_exponent_fields_folds_through_the_widening_and_the_shift():
    """Fields below 16 are scales below 2 (f16's 2^(16 − 15)), where the f4e2m1 fold
    (2^14 · s) is exact; fields up to 30 reach 2^15 · 2^14, which overflows: no fold.
    Both equal the interpreter and round(q · 2^(e − 15)) bit for bit."""
    rng = np.random.default_rng(7)
    k = BK * 4
    codes = codes_of(tl.f4e2m1, k, rng)
    q = tl.pack_codes(codes, tl.f4e2m1)
    assert stats(exponent_field_scales, k, assume={"e": 16})["dequant_scale_folded"] > 0
    assert "dequant_scale_folded" not in stats(exponent_field_scales, k, assume={"e": 32})
    for bound in (16, 32):
        top = min(bound, 31)  # field 31 is f16's inf: no scale
        fields = np.concatenate([np.arange(top), rng.integers(0, top, 4 * BN - top)])
        e = fields.reshape(4, BN).astype(np.uint8)
        y = exponent_field_scales(q, e, np.zeros((k, BN), np.float16), assume={"e": bound})
        reference = exponent_field_scales.interpret(q, e, np.zeros((k, BN), np.float16))
        np.testing.assert_array_equal(y.view(np.uint16), reference.view(np.uint16))
        scales = np.where(e > 0, np.exp2(e.astype(np.float64) - 15), 0.0)  # field 0: +0
        product = tl.f4e2m1.decode(codes) * np.repeat(scales, BK, axis=0)
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(y.view(np.uint16), tl.f16.encode(product))


def test_a_shift_that_could_wrap_proves_nothing():
    """Fields below 128 shifted by 10 may lose bits of a u16: no bound, no fold."""
    assert "dequant_scale_folded" not in stats(exponent_field_scales, BK, assume={"e": 128})


def test_mx_weights_fold_their_exponent_field_scales_under_the_fact_tilelang_quant_states():
    from tilelang import quant
    from tilelang.quant.operands import operands

    w = np.random.default_rng(14).standard_normal((256, 128)).astype(np.float32)
    qw = quant.quantize(w, format="mxfp4")
    ops = operands(qw, tl.f16)
    assert ops.constexprs["KIND"] == "mx_normal" and "s" in ops.facts
    launch = quant.plan(qw, 1, "cpu").launches[0]
    assert launch.compiled.stats["dequant_scale_folded"] > 0
    x = np.random.default_rng(15).standard_normal((3, 256)).astype(np.float16)
    reference = x.astype(np.float64) @ qw.dequantize().astype(np.float64)
    y = quant.matmul(x, qw).astype(np.float64)
    np.testing.assert_allclose(y, reference, rtol=2e-3, atol=2e-3 * np.abs(reference).max())


def test_a_vouched_fact_skips_the_check_and_a_malformed_one_is_refused():
    """tl.vouch is the public form of what tilelang.quant does for its scales: the
    caller's word replaces the check (so a false fact is not caught)."""
    rng = np.random.default_rng(7)
    codes = tl.pack_codes(codes_of(tl.u4, BK, rng), tl.u4)
    s = boundary_scales(tl.f16, 64, 1, rng)
    s[0, 5] = 64.0  # breaks the fact
    y = np.zeros((BK, BN), np.float16)
    with pytest.raises(ValueError, match="0 <= s < 64"):
        scaled_codes(codes, s, y, assume={"s": 64})
    tl.vouch(s, 64)
    scaled_codes(codes, s, y, assume={"s": 64})  # not checked: the caller vouched
    with pytest.raises(ValueError, match="power of two from 1 to 65536, got 48"):
        tl.vouch(s, 48)
    with pytest.raises(TypeError, match="power-of-two int bound, got float"):
        tl.vouch(s, 64.0)
