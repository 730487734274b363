"""tilelang.quant.matmul and plan on the CPU backend (the per-thread program a GPU runs).

Every format is checked against a float64 reference whose weights are computed here from
the formats' definitions (codes, scales and zero points read off the weight's fields,
decoded with tilelang.dtypes' codecs, never through tilelang.quant.arithmetic), within
`bound`: the f32 accumulation of K exact products, the f32 tensor scale and bias, and
one rounding to the output type. Shapes are odd (N = 200 is not a multiple of the
128-column tile, M = 1, 3, 17), so edges and padding are exercised."""

from __future__ import annotations

import importlib
import warnings

import ml_dtypes
import numpy as np
import pytest
from conftest import Device, require_disassembler

import tilelang as tl
from tilelang import quant
from tilelang.quant import QuantizedWeight, kernels, operands
from tilelang.quant.matmul import choose

K, N = 256, 200
RNG = np.random.default_rng(20240611)


def weights(k: int = K, n: int = N, seed: int = 0) -> np.ndarray:
    """Weights whose columns differ in scale (so groups and columns matter)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((k, n)) * rng.uniform(0.05, 2.0, (1, n))


def activations(shape: tuple[int, ...], dtype=np.float16, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) / 2).astype(dtype)


# ------------------------------------------------------------------ the reference


def reference_weights(qw: QuantizedWeight) -> np.ndarray:
    """W [K, N] in float64 from the spec of each format, in the original row order."""
    g = qw.group_size
    q = qw.dtype.decode(qw.plain_codes()).astype(np.float64)
    rows = q.shape[0]  # the last group may be shorter (GPTQ, K not a multiple of G)
    per_row = lambda a: np.repeat(np.asarray(a, np.float64), g, axis=0)[:rows]  # noqa: E731
    if qw.format.startswith("mx"):
        exponents = qw.scale_codes.astype(np.int64) - 127
        w = q * per_row(np.exp2(exponents.astype(np.float64)))  # 2^(c - 127), exact
        w[per_row(qw.scale_codes == 0xFF).astype(bool)] = np.nan
        w = w.astype(np.float32).astype(np.float64)
    elif qw.format == "nvfp4":
        block = tl.f8e4m3.decode(qw.scale_codes)
        w = (q * per_row(block) * qw.tensor_scale).astype(np.float32).astype(np.float64)
    elif qw.format in ("nf4", "fp4_bnb", "codebook"):  # q indexes the table (held in S)
        entries = np.asarray(qw.table, np.float64)[q.astype(np.int64)]
        product = entries * per_row(qw.scale_dtype.decode(qw.scale_codes))
        w = qw.scale_dtype.decode(qw.scale_dtype.encode(product)).astype(np.float64)
    else:
        z = 0 if qw.zeros is None else per_row(qw.zeros)
        product = (q - z) * per_row(qw.scale_dtype.decode(qw.scale_codes))
        target = np.float16 if qw.scale_dtype == tl.f16 else ml_dtypes.bfloat16
        w = product.astype(target).astype(np.float64)  # rounded once (RNE), as the spec
    if qw.perm is not None:
        original = np.empty_like(w)
        original[qw.perm] = w
        w = original
    return w


def bound(x: np.ndarray, w: np.ndarray, expected: np.ndarray, out_type) -> np.ndarray:
    """Per element: (K + 2)·2^-24·Σ|x·w| for the f32 accumulation in any order (every
    product is exact in f32), the tensor scale and the bias; then one rounding to the
    output type (half an ulp, relative 2^-11 for f16 and 2^-8 for bf16, of a value that
    is already off by that much), and half its smallest subnormal."""
    k = x.shape[-1]
    accumulation = (k + 2) * 2.0**-24 * (np.abs(x) @ np.abs(np.nan_to_num(w)))
    unit, tiny = (2.0**-11, 2.0**-25) if out_type == tl.f16 else (2.0**-8, 2.0**-134)
    return accumulation + unit * (np.abs(expected) + accumulation) + tiny


def check(qw: QuantizedWeight, x: np.ndarray, bias: np.ndarray | None = None, **kwargs):
    """matmul(x, qw) against the reference, element by element; returns y."""
    y = quant.matmul(x, qw, bias, **kwargs)
    out_type = tl.dtype(x.dtype)
    assert y.dtype == x.dtype and y.shape == (*x.shape[:-1], qw.shape[1])
    x64 = x.astype(np.float64).reshape(-1, qw.shape[0])
    w = reference_weights(qw)
    with np.errstate(invalid="ignore"):
        expected = x64 @ w + (0 if bias is None else bias.astype(np.float64))
    got = y.astype(np.float64).reshape(expected.shape)
    assert np.array_equal(np.isnan(got), np.isnan(expected)), "NaN where the reference has none"
    finite = ~np.isnan(expected)
    error = np.abs(got - expected)[finite]
    allowed = bound(x64, w, expected, out_type)[finite]
    worst = int(np.argmax(error / allowed)) if error.size else 0
    assert (error <= allowed).all(), (
        f"{qw}: error {error[worst]:.3g} over the bound {allowed[worst]:.3g}"
    )
    return y


# ------------------------------------------------------------------ every format

FORMATS = {
    "u4 sym g64": dict(dtype="u4", group_size=64),
    "i4 asym g128": dict(dtype="i4", zero_point=True),
    "u3 asym g64": dict(dtype="u3", group_size=64, zero_point=True),
    "u2 asym g32": dict(dtype="u2", group_size=32, zero_point=True),
    "i8 per-channel": dict(dtype="i8", group_size=-1),
    "u8 sym g128": dict(dtype="u8"),
    "f4e2m1 g32": dict(dtype="f4e2m1", group_size=32),
    "f6e3m2 g64": dict(dtype="f6e3m2", group_size=64),
    "mxfp4": dict(format="mxfp4"),
    "mxfp8_e5m2": dict(format="mxfp8_e5m2"),
    "nvfp4": dict(format="nvfp4"),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_matches_the_reference(name):
    qw = quant.quantize(weights(), **FORMATS[name])
    check(qw, activations((1, K)))
    check(qw, activations((3, K), seed=2))  # the same kernel (M's facts are the same)


@pytest.mark.parametrize("name", ["u4 sym g64", "i4 asym g128", "mxfp4"])
def test_small_batch_ragged_m(name):
    qw = quant.quantize(weights(seed=3), **FORMATS[name])
    check(qw, activations((17, K), seed=4))
    assert quant.plan(qw, 17, "cpu").path == "small_batch"


def test_the_gemm_path():
    qw = quant.quantize(weights(seed=5), "u4", zero_point=True)
    check(qw, activations((70, K), seed=6))
    assert quant.plan(qw, 70, "cpu").choice.bm == 64
    odd = quant.quantize(weights(seed=34), "u3", zero_point=True)  # 64 x 128 x 128 tiles
    check(odd, activations((70, K), seed=35))
    assert quant.plan(odd, 70, "cpu").choice.bm == 64


def test_split_k_is_deterministic_and_exact():
    """K = 1024 at m = 1: few blocks, so sm_90's choice splits K; in one launch, the
    last block of a tile to arrive adds the slices' partial products in slice order
    (bit-identical runs; the CPU backend runs blocks on several host threads)."""
    qw = quant.quantize(weights(k=1024, seed=7), "u4", zero_point=True)
    p = quant.plan(qw, 1, "cpu")
    assert p.choice.split_k == 4
    assert [launch.kernel for launch in p.launches] == [kernels.quant_matmul_split_k]
    x = activations((1, 1024), seed=8)
    bias = activations((N,), seed=9)
    y = check(qw, x, bias)
    assert np.array_equal(y.view(np.uint16), quant.matmul(x, qw, bias).view(np.uint16))


def test_act_order_gathers_the_columns_of_x():
    """A GPTQ act-order weight: stored row i is row perm[i] of W."""
    qw = quant.quantize(weights(seed=10), "u4", group_size=64, zero_point=True)
    perm = np.random.default_rng(11).permutation(K)
    shuffled = QuantizedWeight(
        codes=tl.pack_codes(qw.plain_codes(), tl.u4),
        scale_codes=qw.scale_codes,
        scale_dtype=qw.scale_dtype,
        group_size=64,
        format="gptq",
        zeros=qw.zeros,
        perm=perm,
    )
    check(shuffled, activations((3, K), seed=12))


def short_last_group(k: int, group: int, seed: int) -> QuantizedWeight:
    """A GPTQ act-order u4 weight whose K is not a multiple of its group size: ⌈K / G⌉
    groups, the last of K mod G rows (as AutoGPTQ writes them), zero points 1..15."""
    rng = np.random.default_rng(seed)
    groups = -(-k // group)
    return QuantizedWeight(
        codes=tl.pack_codes(rng.integers(0, 16, (k, N)), tl.u4),
        scale_codes=rng.uniform(0.01, 0.05, (groups, N)).astype(np.float16).view(np.uint16),
        scale_dtype=tl.f16,
        group_size=group,
        format="gptq",
        zeros=rng.integers(1, 16, (groups, N)),
        perm=rng.permutation(k),
    )


@pytest.mark.parametrize(("k", "group"), [(320, 128), (208, 32)])
def test_a_short_last_group_multiplies_exactly(k, group):
    """The kernels index the last, shorter group as the others (row k // G) on every
    path; 208 = 6·32 + 16 leaves the last 128-row k-tile a group past the weight's."""
    qw = short_last_group(k, group, seed=k)
    assert qw.scale_codes.shape == (-(-k // group), N)
    for m, path in ((1, "gemv"), (17, "small_batch"), (65, "gemm")):
        assert quant.plan(qw, m, "cpu").path == path
        check(qw, activations((m, k), seed=m), tune=False)


def test_act_order_on_torch_tensors_converts_the_permutation_once_per_device(monkeypatch):
    """The device path gathers x[..., perm] with torch (`act_order_gather`); the index
    tensor is made once per device and kept on the weight, not converted every call.
    Checked on CPU tensors (the same code; no GPU here)."""
    torch = pytest.importorskip("torch")
    module = importlib.import_module("tilelang.quant.matmul")
    qw = short_last_group(320, 128, seed=7)
    made = []
    real = module._index_tensor
    monkeypatch.setattr(module, "_index_tensor", lambda *a: made.append(a) or real(*a))
    x = torch.from_numpy(activations((2, 3, 320), seed=8))
    for _ in range(3):
        got = module.act_order_gather(x, qw)
        assert got.is_contiguous() and got.dtype == torch.float16
        np.testing.assert_array_equal(got.numpy(), x.numpy()[..., qw.perm])
    assert len(made) == 1
    torch_y = quant.matmul(x, qw)  # a torch CPU tensor: the host path, numpy's gather
    np.testing.assert_array_equal(
        np.asarray(torch_y).view(np.uint16), quant.matmul(x.numpy(), qw).view(np.uint16)
    )


def test_zero_points_of_any_width_n_are_pipelined_without_warnings():
    """N = 203 zero points a row: each row is padded to whole 16-byte words, so a tile's
    zero points are aligned runs cp.async copies and the pipelined kernel asks for
    nothing it cannot honour: no PipelineWarning from inside the library (M = 200, the
    gemm tile, its k-tiles of 64 rows, 3 stages, K split in 3)."""
    k, n = 384, 203
    qw = quant.quantize(weights(k=k, n=n, seed=60), "i4", group_size=64, zero_point=True)
    zeros = operands.operands(qw, tl.f16).zeros
    assert zeros.shape == (k // 64, 208)
    assert zeros.dtype == tl.i8  # some zero points are negative: two's complement bytes
    np.testing.assert_array_equal(zeros.codes()[:, :n].view(np.int8), qw.zeros)
    assert not zeros.codes()[:, n:].any()
    plan = quant.plan(qw, 200, "cpu")
    assert (plan.choice.bk, plan.choice.stages) == (64, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = check(qw, activations((200, k), seed=61), tune=False)
    assert not caught, [str(w.message) for w in caught]
    assert y.shape == (200, n)


def test_gptq_and_awq_checkpoints():
    """Through the importers (v1 zeros, so a zero point can be 2^b)."""
    rng = np.random.default_rng(13)
    qweight = rng.integers(-(2**31), 2**31, (K // 8, N), dtype=np.int64).astype(np.int32)
    qzeros = rng.integers(-(2**31), 2**31, (K // 64, N // 8), dtype=np.int64).astype(np.int32)
    scales = rng.uniform(0.001, 0.01, (K // 64, N)).astype(np.float16)
    gptq = quant.from_gptq(qweight, qzeros, scales, bits=4, sym=False)
    assert gptq.zeros.max() == 16  # a stored 15 reads back as 16
    assert operands.operands(gptq, tl.f16).constexprs["ZT"] == tl.u8
    check(gptq, activations((1, K), seed=14))
    awq = quant.from_awq(
        rng.integers(-(2**31), 2**31, (K, N // 8)).astype(np.int32), qzeros, scales
    )
    check(awq, activations((1, K), seed=15))


def test_bf16_activations_with_bf16_scales():
    qw = quant.quantize(weights(seed=16), "i4", zero_point=True, scale_dtype="bf16")
    x = activations((3, K), ml_dtypes.bfloat16, seed=17)
    check(qw, x)
    nv = quant.quantize(weights(seed=18), format="nvfp4")
    check(nv, x)


# ------------------------------------------------------------------ MX scales


def test_mx_scales_are_shifted_into_the_exact_range():
    """MXFP8 e5m2 blocks have scales near 2^-14, where f16 would round e5m2's small
    values: the host shifts every scale by one power of two (the accumulator takes it
    back), so the kernel's weights are exact."""
    qw = quant.quantize(weights(seed=19), format="mxfp8_e5m2")
    ops = operands.operands(qw, tl.f16)
    assert ops.constexprs["KIND"] == "mx_normal" and ops.constexprs["TENSOR_SCALE"]
    assert ops.exact and ops.t != 1.0
    lo, hi = operands.exact_window(tl.f8e5m2, tl.f16)
    assert (lo, hi) == (-8, 0)
    # mx_normal stores f16's exponent fields of the shifted scales (bias 15, not 127)
    shifted = ops.scales.codes().astype(int) - tl.f16.bias
    assert lo <= shifted.min() and shifted.max() <= hi


def test_mx_nan_scales_take_the_e8m0_recipe():
    """A NaN scale (0xFF) is not a normal f16: the kernel converts the codes with the
    e8m0 recipe (exact for every code), and the block's outputs are NaN."""
    qw = quant.quantize(weights(seed=20), format="mxfp4")
    codes = qw.scale_codes.copy()
    codes[2, 7] = 0xFF
    bad = QuantizedWeight(qw.codes, codes, tl.e8m0, 32, format="mxfp4")
    assert operands.operands(bad, tl.f16).constexprs["KIND"] == "mx"
    y = check(bad, activations((1, K), seed=21))
    assert np.isnan(y[0, 7]) and np.isfinite(np.delete(y[0], 7)).all()


def test_mx_scales_wider_than_f16_warn():
    w = weights(seed=22)
    w[:32, :5] *= 2.0**-50  # blocks 2^50 below the others
    qw = quant.quantize(w, format="mxfp4")
    with pytest.warns(quant.ScaleRangeWarning, match="rounded to f16"):
        ops = operands.operands(qw, tl.f16)
    assert not ops.exact and ops.constexprs["KIND"] == "mx"


# ------------------------------------------------------------------ the weight's packing


def test_signed_view_of_midpoint_zeros_is_the_same_weight():
    """uN with the constant zero point 2^(N-1) runs as iN codes without zero points."""
    for dtype in ("u4", "u3", "u8"):
        qw = quant.quantize(weights(seed=23), dtype)
        ops = operands.operands(qw, tl.f16)
        assert ops.signed and ops.zeros is None and ops.constexprs["WT"].signed
        same = ops.weight.dequantize().view(np.uint32)
        assert np.array_equal(same, qw.dequantize().view(np.uint32))


@pytest.mark.parametrize("dtype", ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "f6e3m2"])
def test_every_kernel_tile_reads_the_packed_codes(dtype):
    """One packing (PK x 128, m = 16, 4 warps) serves every tile the choice makes."""
    packing = tl.DotPacking(tl.dtype(dtype), (128, 128), (128, 128), 16, 4, tl.f16, tl.f32)
    tiles = [(16, 128, 4), (32, 128, 4), (64, 128, 8), (64, 128, 4)]
    for bm, bk, warps in tiles:
        assert operands.reads_as(packing, bk, bm, warps), (bm, bk, warps)
    assert not operands.reads_as(packing, 128, 16, 2)  # 2 warps lay b out otherwise
    # 64-row tiles hold 64 codes a thread: whole 16-byte runs only below 128 codes a run
    odd = dtype in ("u1", "u3", "u5", "u7")  # tilelang.quant.choice
    assert operands.reads_as(packing, 64, 64, 4) != odd
    gemm = choose(4096, 4096, 4096, "sm_90", packing)
    assert operands.reads_as(packing, gemm.bk, gemm.bm, gemm.warps)
    assert (gemm.bm, gemm.bk, gemm.warps) == (64, 128, 4)


def test_packed_weights_save_load_and_give_the_same_product(tmp_path):
    qw = quant.quantize(weights(seed=24), "u3", group_size=64, zero_point=True)
    packed = quant.pack_for_kernels(qw)
    assert (
        packed.packing == operands.kernel_packing(qw) and quant.pack_for_kernels(packed) is packed
    )
    assert np.array_equal(packed.plain_codes(), qw.plain_codes())
    packed.save(tmp_path / "w.npz")
    back = QuantizedWeight.load(tmp_path / "w.npz")
    assert back.packing == packed.packing and back.codes == packed.codes
    x = activations((3, K), seed=25)
    assert np.array_equal(
        quant.matmul(x, back).view(np.uint16), quant.matmul(x, qw).view(np.uint16)
    )
    assert back.unpacked().codes == qw.codes


# ------------------------------------------------------------------ plan


def _random_weight(k: int, n: int) -> QuantizedWeight:
    """A u4 weight made without quantize (codes need not be meaningful for a plan)."""
    codes = tl.PackedArray(np.zeros(k * n // 2, np.uint8), tl.u4, (k, n))
    scales = np.full((k // 128, n), 0x2C00, np.uint16)
    return QuantizedWeight(codes, scales, tl.f16, 128, zeros=np.full((k // 128, n), 3))


@pytest.mark.parametrize(
    ("m", "path", "tile", "split", "grids"),
    [
        (1, "gemv", (16, 128, 128, 4), 8, [(1, 32, 8)]),
        (16, "small_batch", (16, 128, 128, 4), 4, [(1, 32, 4)]),
        (64, "small_batch", (32, 128, 128, 4), 2, [(2, 32, 2)]),
        (4096, "gemm", (64, 128, 128, 4), 1, [(64, 32)]),
    ],
)
def test_plan_choices(m, path, tile, split, grids):
    """k = n = 4096 on sm_90 (132 SMs): 32 column blocks (64 at m = 64) are too few below
    m = 65, so K is split: into 8 slices at m = 1, fewer where the f32 partials' traffic
    outweighs more blocks (4 at m = 16, 2 at m = 64: `slices_of_k`); the GEMM has 64 x 32
    blocks of 64 x 128."""
    qw = _random_weight(4096, 4096)
    p = quant.plan(qw, m, "cpu")
    c = p.choice
    assert (p.path, (c.bm, c.bn, c.bk, c.warps), c.split_k) == (path, tile, split)
    assert [launch.grid for launch in p.launches] == grids
    assert p.launches[0].constexprs["HAS_Z"] and p.launches[0].sizes["M"] == m
    assert choose(m, 4096, 4096, "sm_80").split_k == {1: 7, 16: 2, 64: 3, 4096: 1}[m]


def test_a_call_launches_what_plan_compiled():
    qw = quant.quantize(weights(seed=26), "i4", group_size=64)
    p = quant.plan(qw, 3, "cpu", bias=True)
    (launch,) = p.launches
    compiled = launch.kernel.specialization(**launch.constexprs).compiled
    before = dict(compiled)
    quant.matmul(activations((3, K)), qw, activations((N,), seed=2))
    assert dict(compiled) == before  # nothing new was compiled: the call used the plan's


def test_plan_for_sm90_reports_its_kernel():

    require_disassembler()
    qw = _random_weight(8192, 8192)
    p = quant.plan(qw, 1, "sm_90")
    report = p.launches[0].perf()
    assert report.per == "w" and p.launches[0].compiled.resources.spill_store_bytes == 0
    assert report.instructions_per_element * 32 < 4  # per weight a thread, main loop
    stores = [op for ops in report.mix.values() for op in ops if op.startswith("STS")]
    assert not stores, f"the main loop stores to shared memory: {stores}"  # no weight does


def _static_weight(name: str, k: int, n: int) -> QuantizedWeight:
    """A weight of a format made without quantize (zero codes; scales in range)."""
    rng = np.random.default_rng(0)
    if name == "u4":  # symmetric: the midpoint zero point, read as signed codes
        codes = tl.PackedArray(np.zeros(k * n // 2, np.uint8), tl.u4, (k, n))
        scales = np.full((k // 128, n), 0x2C00, np.uint16)
        return QuantizedWeight(codes, scales, tl.f16, 128, zeros=np.full((k // 128, n), 8))
    codes = tl.PackedArray(np.zeros(k * n // 2, np.uint8), tl.f4e2m1, (k, n))
    if name == "mxfp4":
        scales = rng.integers(118, 126, (k // 32, n)).astype(np.uint8)  # 2^-9 .. 2^-2
        return QuantizedWeight(codes, scales, tl.e8m0, 32, format="mxfp4")
    scales = tl.f8e4m3.encode(rng.uniform(16, 448, (k // 16, n)))
    tensor_scale = float(np.float32(1 / 2688))
    return QuantizedWeight(codes, scales, tl.f8e4m3, 16, "nvfp4", tensor_scale=tensor_scale)


@pytest.mark.parametrize(
    ("name", "n", "most"),
    [("u4", 8192, 2.5), ("u4", 28672, 2.5), ("mxfp4", 8192, 4), ("nvfp4", 8192, 4)],
)
def test_the_issues_static_targets_at_m1_on_sm90(name, n, most):
    """k = 8192, m = 1 (issue 11): the whole main loop within `most` instructions per
    weight a thread, no spill. The block-scaled formats read their scales packed for
    the tile (tilelang.quant.scale_packing: words, not bytes) and fold them into the
    f4e2m1 conversion under the fact tilelang.quant states; u4 reads its one scale row
    per tile packed too."""
    require_disassembler()
    p = quant.plan(_static_weight(name, 8192, n), 1, "sm_90")
    report = p.launches[0].perf()
    assert p.launches[0].compiled.resources.spill_store_bytes == 0
    assert report.instructions_per_element * 32 <= most
    assert report.dram_fraction >= (0.85 if name == "u4" else 0.8)


# ------------------------------------------------------------------ calls


def test_bias_out_and_leading_dimensions():
    qw = quant.quantize(weights(seed=27), "u4", group_size=64, zero_point=True)
    x = activations((2, 3, K), seed=28)
    bias = activations((N,), seed=29)
    out = np.full((2, 3, N), np.nan, np.float16)
    y = quant.matmul(x, qw, bias, out)
    assert y is out
    check(qw, x, bias)
    assert np.array_equal(out.view(np.uint16), quant.matmul(x, qw, bias).view(np.uint16))
    assert quant.matmul(np.zeros((0, K), np.float16), qw).shape == (0, N)


def test_non_contiguous_x_is_read_as_its_values():
    qw = quant.quantize(weights(seed=30), "i4", group_size=64)
    wide = activations((3, 2 * K), seed=31)
    x = wide[:, ::2]
    assert not x.flags.c_contiguous
    assert np.array_equal(
        quant.matmul(x, qw).view(np.uint16),
        quant.matmul(np.ascontiguousarray(x), qw).view(np.uint16),
    )


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.zeros((2, K + 1), np.float16),), ValueError,
         r"x must have shape \[\.\.\., K\] with K = 256 \(the weight's rows\), got shape \[2, 257\]"),
        ((np.zeros(()), ), TypeError, "x must be an array of float16 or bfloat16"),
        ((np.zeros((2, K), np.float32),), TypeError,
         r"x must be an array of float16 or bfloat16 \(ml_dtypes\), got float32"),
        (([[0.0] * K],), TypeError, "x must be a numpy array .* got list"),
        ((np.zeros((2, K), np.float16), np.zeros(N, np.float32)), ValueError,
         r"bias must be a f16 array of shape \[200\] .* got float32 \[200\]"),
        ((np.zeros((2, K), np.float16), np.zeros(N + 1, np.float16)), ValueError,
         r"bias must be a f16 array of shape \[200\] .* got float16 \[201\]"),
        ((np.zeros((2, K), np.float16), None, np.zeros((2, N + 1), np.float16)), ValueError,
         r"out must be a float16 array of shape \[2, 200\], got float16 \[2, 201\]"),
        ((np.zeros((2, K), np.float16), None, np.zeros((N, 2), np.float16).T), ValueError,
         "out must be a writeable C-contiguous array"),
    ],
    ids=["wrong K", "0-d x", "f32 x", "list x", "f32 bias", "bias N", "out shape", "out strides"],
)  # fmt: skip
def test_bad_input_names_the_parameter(args, error, match):
    qw = quant.quantize(weights(seed=32), "u4")
    with pytest.raises(error, match=match):
        quant.matmul(*args[:1], qw, *args[1:])


def test_a_strided_or_read_only_out_is_refused_with_its_shape_and_strides():
    qw = quant.quantize(weights(seed=32), "u4")
    x = np.zeros((2, K), np.float16)
    view = np.zeros((2, 2 * N), np.float16)[:, ::2]
    with pytest.raises(
        ValueError,
        match=rf"out must be a writeable C-contiguous array: got shape \[2, {N}\], strides "
        rf"\({4 * N}, 4\) bytes \(C-contiguous: \({2 * N}, 2\)\)",
    ):
        quant.matmul(x, qw, out=view)
    frozen = np.zeros((2, N), np.float16)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"got a read-only array"):
        quant.matmul(x, qw, out=frozen)


def test_weights_the_kernels_cannot_multiply_exactly_are_refused():
    x = activations((1, K))
    with pytest.raises(TypeError, match=r"qw must be a tilelang\.quant\.QuantizedWeight"):
        quant.matmul(x, np.zeros((K, N)))
    f32 = quant.quantize(weights(), "u4", scale_dtype="f32")
    with pytest.raises(TypeError, match="scales are f32: quantize with scale_dtype='f16'"):
        quant.matmul(x, f32)
    bf16 = quant.quantize(weights(), "u4", scale_dtype="bf16")
    with pytest.raises(TypeError, match="x is f16, so the kernels multiply by f16 scales"):
        quant.matmul(x, bf16)
    # f8e6m1 reaches 1.5 · 2^32: quantize refuses f16 scales for it (test_quant_ranges.py),
    # and a weight made without quantize is refused by matmul.
    f8e6m1 = tl.dtype("f8e6m1")
    codes = tl.pack_codes(np.random.default_rng(0).integers(0, 256, (K, N)), f8e6m1)
    wide = QuantizedWeight(codes, np.full((K // 128, N), 0x3C00, np.uint16), tl.f16, 128)
    with pytest.raises(ValueError, match="f8e6m1 values are not all exact in f16"):
        quant.matmul(x, wide)
    odd_group = quant.quantize(weights(k=240), "u4", group_size=24)
    with pytest.raises(ValueError, match=r"multiple of 16 .* got group_size=24"):
        quant.matmul(activations((1, 240)), odd_group)
    with pytest.raises(ValueError, match="m must be a positive int"):
        quant.plan(f32, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quant.plan(quant.quantize(weights(), format="mxfp4"), 1, "cpu")  # no warning


def test_the_device_path_binds_compiles_and_launches(monkeypatch):
    """The GPU path without a GPU: device arrays are stand-ins over host memory, the
    launch is recorded instead of made. Checks what reaches the launcher: the kernels
    compiled for the device's architecture, their grids and scalars."""
    from tilelang.runtime import counters, gpu

    launches, made = [], []

    class Allocated(Device):
        @classmethod
        def empty(cls, shape, dtype):
            made.append(shape)
            return super().empty(shape, dtype)

    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")  # `choose`'s tiles: exactly these launches
    monkeypatch.setattr(gpu, "DeviceBuffer", Allocated)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90a")
    monkeypatch.setattr(gpu, "current_stream", lambda values: 0)
    monkeypatch.setattr(counters, "_KEPT", {})
    counts = []

    def launch(build, pointers, scalars, grid, stream):
        launches.append((build.arch, sorted(pointers), scalars, grid))
        counts.append((pointers.get("counts"), pointers.get("partials")))

    monkeypatch.setattr(gpu, "launch", launch)
    qw = quant.quantize(weights(k=1024, seed=33), format="nvfp4")
    out = quant.matmul(Device(activations((2, 1024))), qw, Device(activations((N,))))
    assert isinstance(out, Device) and out.shape == (2, N)
    ((arch, tensors, scalars, grid),) = launches  # split-K in one launch
    assert arch == "sm_90a" and grid == (1, 2, 4)
    assert tensors == ["bias", "code", "counts", "partials", "s", "w", "x", "y", "z"]
    # NVFP4's block scales are used as b · 2^-8 (exact), the tensor scale as t · 2^8.
    assert scalars["K"] == 1024 and scalars["t"] == qw.tensor_scale * 2**8
    prepared = []
    module = importlib.import_module("tilelang.quant.matmul")
    choose_and_plan = module._prepared
    monkeypatch.setattr(
        module, "_prepared", lambda *a, **k: prepared.append(a) or choose_and_plan(*a, **k)
    )
    quant.matmul(Device(activations((2, 1024))), qw, Device(activations((N,))))
    # The counters (zeroed once) and the workspace are kept with the weight: no
    # allocation, and no cuMemFree waiting for the device, in a warm call.
    assert len(launches) == 2 and counts[0] == counts[1]
    assert made == [(2, N), (4, 2, N), (2, N)]  # outputs each call, one workspace
    assert launches[1][1:] == launches[0][1:] and not prepared  # the first call's choice
    quant.matmul(Device(activations((3, 1024))), qw, Device(activations((N,))))
    assert len(prepared) == 1 and len(launches) == 3  # another M: chosen again
    with pytest.raises(ValueError, match=r"bias must have shape \[200\]"):
        quant.matmul(Device(activations((2, 1024))), qw, Device(activations((N + 1,))))


def test_the_device_path_takes_bf16_through_dlpack(monkeypatch):
    """A bf16 device tensor names its dtype only through DLPack (torch's array interface
    says "<V2"): the GPU path reads it there, binds x and out as bf16 and launches the
    bf16 kernels; without `out`, a bf16 x that is not a torch tensor is refused."""
    import ml_dtypes
    from test_dlpack import TorchLikeCudaTensor

    from tilelang.runtime import gpu

    launches = []
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    monkeypatch.setattr(gpu, "DeviceBuffer", Device)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90a")
    monkeypatch.setattr(gpu, "current_stream", lambda values: 0)
    monkeypatch.setattr(gpu, "launch", lambda build, pointers, scalars, grid, stream: launches.append(
        (build.arch, sorted(pointers), grid)
    ))  # fmt: skip
    qw = quant.quantize(weights(k=1024, seed=34), "u4", scale_dtype="bf16")
    x_host = np.zeros((2, 1024), ml_dtypes.bfloat16)
    y_host = np.zeros((2, N), ml_dtypes.bfloat16)
    x = TorchLikeCudaTensor(x_host, (2, 1024), 4, 16, device_type=2)
    y = TorchLikeCudaTensor(y_host, (2, N), 4, 16, device_type=2)
    assert quant.matmul(x, qw, out=y) is y
    assert launches and all(arch == "sm_90a" for arch, _, _ in launches)
    assert "x" in launches[0][1]
    with pytest.raises(TypeError, match="a bf16 x that is not a torch tensor needs out="):
        quant.matmul(x, qw)
    f32 = TorchLikeCudaTensor(np.zeros((2, 1024), np.float32), (2, 1024), 2, 32, device_type=2)
    with pytest.raises(TypeError, match="x must be a device tensor of f16 or bf16 values"):
        quant.matmul(f32, qw)
