"""Sums and products widen before they fold (docs/ops.md, "Reductions and scans"): a
count of a mask does not wrap, f16/bf16 sums do not stall at their precision, and
`dtype=` folds in the type asked for. Each law holds on the interpreter and on the CPU
backend (which runs the per-thread program the GPU runs); the expected values come from
numpy, computed wide and rounded once."""

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl


def both(kernel, *args, **constexprs):
    """(interpreted, compiled) results of one call on copies of `args`."""
    copies = [[a.copy() for a in args] for _ in range(2)]
    return kernel.interpret(*copies[0], **constexprs), kernel(*copies[1], **constexprs)


@tl.kernel(warps=4)
def row_sums(
    x: tl.Tensor["T", "M", "N"],
    total: tl.Tensor["T", "M"],
    running: tl.Tensor["T", "M", "N"],
    T: tl.constexpr,
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 4096,
):
    tile = tl.load(x, [0, 0], [BM, BN])
    tl.store(total, [0], tl.sum(tile, axis=1))
    tl.store(running, [0, 0], tl.cumsum(tile, axis=1))


@pytest.mark.parametrize(
    ("dtype", "name", "n"),
    [(np.float16, "f16", 4096), (ml_dtypes.bfloat16, "bf16", 1024)],
)
def test_half_precision_sums_fold_in_f32_and_round_once(dtype, name, n):
    # f16 sums stalled at 2048 and bf16 at 256 when each partial sum was rounded.
    rng = np.random.default_rng(0)
    x = np.concatenate([np.ones((1, n)), rng.uniform(0, 1, (3, n))]).astype(dtype)
    exact = x.astype(np.float64)
    for total, running in both(
        row_sums, x, np.zeros(4, dtype), np.zeros((4, n), dtype), T=name, BN=n
    ):
        assert total.dtype == dtype and total[0] == n and running[0, -1] == n
        np.testing.assert_allclose(total.astype(np.float64), exact.sum(1), rtol=2**-7)
        np.testing.assert_allclose(
            running.astype(np.float64), np.cumsum(exact, 1), rtol=2**-7, atol=2**-7
        )


@tl.kernel(warps=2)
def counts(
    x: tl.Tensor[tl.f32, "N"],
    count: tl.Tensor[tl.i32, "1"],
    position: tl.Tensor[tl.i32, "N"],
    BN: tl.constexpr = 256,
):
    positive = tl.load(x, [0], [BN]) > 0.0
    tl.store(count, [0], tl.sum(positive, keepdims=True))
    tl.store(position, [0], tl.cumsum(positive))


def test_a_mask_counts_in_i32():
    x = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    for count, position in both(counts, x, np.zeros(1, np.int32), np.zeros(256, np.int32)):
        assert count[0] == (x > 0).sum()
        np.testing.assert_array_equal(position, np.cumsum(x > 0))


@tl.kernel(warps=2)
def narrow_sums(
    x: tl.Tensor["T", "M", "N"],
    wide: tl.Tensor["W", "M"],
    wrapped: tl.Tensor["T", "M"],
    product: tl.Tensor["W", "M"],
    T: tl.constexpr,
    W: tl.constexpr,
    BN: tl.constexpr = 64,
):
    tile = tl.load(x, [0, 0], [4, BN])
    tl.store(wide, [0], tl.sum(tile, axis=1))
    tl.store(wrapped, [0], tl.sum(tile, axis=1, dtype=T))
    tl.store(product, [0], tl.prod(tile, axis=1))


@pytest.mark.parametrize(
    ("name", "wide_name", "dtype", "wide"),
    [("i8", "i32", np.int8, np.int32), ("u8", "u32", np.uint8, np.uint32),
     ("i16", "i32", np.int16, np.int32)],
)  # fmt: skip
def test_narrow_integers_sum_in_32_bits_unless_told(name, wide_name, dtype, wide):
    info = np.iinfo(dtype)
    x = np.random.default_rng(2).integers(info.min, info.max, (4, 64), endpoint=True).astype(dtype)
    x[3] = info.max  # 64 × the largest value: wraps in the narrow type
    expected_product = np.prod(x.astype(np.int64), axis=1).astype(wide)  # wraps at 32 bits
    for total, wrapped, product in both(
        narrow_sums, x, np.zeros(4, wide), np.zeros(4, dtype), np.zeros(4, wide),
        T=name, W=wide_name,
    ):  # fmt: skip
        np.testing.assert_array_equal(total, x.astype(np.int64).sum(1).astype(wide))
        np.testing.assert_array_equal(wrapped, x.sum(1, dtype=dtype))
        np.testing.assert_array_equal(product, expected_product)


def test_the_widening_is_in_the_ir_and_max_keeps_its_type():
    @tl.kernel(warps=1)
    def sums(x: tl.Tensor[tl.i8, "N"], s: tl.Tensor[tl.i32, "1"], m: tl.Tensor[tl.i8, "1"]):
        tile = tl.load(x, [0], [32])
        tl.store(s, [0], tl.sum(tile, keepdims=True))
        tl.store(m, [0], tl.max(tile, keepdims=True))

    text = str(sums.compile(target="cpu").ir("frontend"))
    assert "cvt" in text and "reduce sum" in text
    x = np.full(32, 100, np.int8)
    assert sums(x, np.zeros(1, np.int32), np.zeros(1, np.int8)) == (3200, 100)


@tl.kernel(warps=1)
def sums_as(x: tl.Tensor["T", "N"], out: tl.Tensor["R", "K"], T: tl.constexpr, R: tl.constexpr):
    tile = tl.load(x, [0], [4096])
    tl.store(out, [0], tl.reshape(tl.sum(tile, dtype=R), [1]))
    tl.store(out, [1], tl.cumsum(tile, dtype=R)[-1:])


@pytest.mark.parametrize(("name", "dtype"), [("f16", np.float16), ("bf16", ml_dtypes.bfloat16)])
@pytest.mark.parametrize("source", ["f16", "f32"])
def test_asking_for_a_half_precision_result_still_folds_in_f32(name, dtype, source):
    x = np.ones(4096, np.float16 if source == "f16" else np.float32)
    for out in both(sums_as, x, np.zeros(2, dtype), T=source, R=name):
        assert out.tolist() == [4096, 4096]


@tl.kernel(warps=4)
def column_extremes(
    x: tl.Tensor["T", "M", "N"],
    top: tl.Tensor["T", "N"],
    running: tl.Tensor["T", "M", "N"],
    T: tl.constexpr,
):
    tile = tl.load(x, [0, 0], [256, 4])
    tl.store(top, [0], tl.max(tile, axis=0))
    tl.store(running, [0, 0], tl.cummin(tile, axis=0))


@pytest.mark.parametrize(("name", "dtype"), [("f16", np.float16), ("bf16", ml_dtypes.bfloat16)])
def test_half_precision_extremes_take_the_shuffle_paths_and_stay_exact(name, dtype):
    x = np.random.default_rng(4).standard_normal((256, 4)).astype(dtype)
    x[3, 1], x[:, 2], x[7, 2] = np.nan, -0.0, 0.0  # NaN ignored; -0 orders below +0
    both_results = both(column_extremes, x, np.zeros(4, dtype), np.zeros((256, 4), dtype), T=name)
    (top, running), (top_c, running_c) = both_results
    np.testing.assert_array_equal(top.view(np.uint16), top_c.view(np.uint16))
    np.testing.assert_array_equal(running.view(np.uint16), running_c.view(np.uint16))
    np.testing.assert_array_equal(top.astype(np.float32), np.fmax.reduce(x.astype(np.float32), 0))
    assert column_extremes.compile(T=name).stats.get("reduce_warps") == 1
