"""Every example through both CPU paths: the compiled one (pass pipeline, lowering to
thread IR, LLVM backend) against the reference interpreter (`kernel.interpret`).

Integer kernels, data movement and dequantization must agree bit for bit; float
accumulation (dot, float sums and scans) and transcendental functions within the
example's own tolerance. Shapes include ragged ones (not multiples of the tile, sizes
of 1); constexprs vary the tiles, the element type and, for quant_matmul, the weight
type, the group size and BK.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_bitwise, load_example, run_both

import tilelang as tl


def relative_error(compiled: np.ndarray, interpreted: np.ndarray) -> float:
    got, want = compiled.astype(np.float64), interpreted.astype(np.float64)
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    scale = max(float(np.abs(want).max()), 1e-3)
    return float(np.abs(got - want).max()) / scale


# --------------------------------------------------------------------------- vector_add


@pytest.mark.parametrize("n", [1, 5, 127, 128, 1000, 1025])
@pytest.mark.parametrize("block", [1, 32, 128, 1024])
def test_vector_add(n, block):
    vector_add = load_example("vector_add").vector_add
    rng = np.random.default_rng(n * 7 + block)
    x, y = rng.standard_normal((2, n)).astype(np.float32)
    x[::7] = -0.0  # signed zeros, infinities and NaN move through bit-exactly too
    y[::11] = np.inf
    compiled, interpreted = run_both(vector_add, [x, y], [np.zeros(n, np.float32)], BLOCK=block)
    assert_bitwise(compiled, interpreted)


# --------------------------------------------------------------------------- row_sum, cumsum

SHAPES_2D = [(1, 1), (3, 7), (8, 64), (13, 150), (9, 200)]
TILES_2D = [(1, 16), (4, 32), (8, 64), (2, 128)]


def _rows_input(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if dtype == tl.i32:  # full range: the sums wrap
        return rng.integers(-(2**31), 2**31, shape, dtype=np.int64).astype(np.int32)
    return rng.standard_normal(shape).astype(np.float32) * 10


@pytest.mark.parametrize("shape", SHAPES_2D, ids=str)
@pytest.mark.parametrize("tiles", TILES_2D, ids=str)
@pytest.mark.parametrize("dtype", [tl.i32, tl.f32], ids=str)
def test_row_sum(dtype, tiles, shape):
    row_sum = load_example("row_sum").row_sum
    x = _rows_input(dtype, shape, hash((shape, tiles)) % 1000)
    bm, bn = tiles
    out = np.zeros(shape[0], x.dtype)
    compiled, interpreted = run_both(row_sum, [x], [out], T=dtype, BM=bm, BN=bn)
    if dtype == tl.i32:
        assert_bitwise(compiled, interpreted)
        assert np.array_equal(interpreted, x.sum(axis=1, dtype=np.int32))
    else:  # f32 sums in another order: within n rounding errors of the row's magnitude
        scale = np.abs(x).sum(axis=1)
        assert np.all(np.abs(compiled - interpreted) <= shape[1] * 2.0**-23 * scale + 1e-30)


@pytest.mark.parametrize("shape", SHAPES_2D, ids=str)
@pytest.mark.parametrize("tiles", TILES_2D, ids=str)
@pytest.mark.parametrize("dtype", [tl.i32, tl.f32], ids=str)
def test_cumsum(dtype, tiles, shape):
    cumsum = load_example("cumsum").cumsum_rows
    x = _rows_input(dtype, shape, hash((tiles, shape)) % 1000)
    bm, bn = tiles
    compiled, interpreted = run_both(cumsum, [x], [np.zeros_like(x)], T=dtype, BM=bm, BN=bn)
    if dtype == tl.i32:
        assert_bitwise(compiled, interpreted)
        assert np.array_equal(interpreted, np.cumsum(x, axis=1, dtype=np.int32))
    else:
        scale = np.cumsum(np.abs(x), axis=1)
        assert np.all(np.abs(compiled - interpreted) <= shape[1] * 2.0**-23 * scale + 1e-30)


# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (4, 128), (37, 300)], ids=str)
@pytest.mark.parametrize("tiles", [(1, 16), (4, 128), (8, 64)], ids=str)
def test_softmax(shape, tiles):
    softmax = load_example("softmax").softmax
    x = np.random.default_rng(shape[1]).standard_normal(shape).astype(np.float32) * 4
    bm, bn = tiles
    compiled, interpreted = run_both(softmax, [x], [np.zeros_like(x)], BM=bm, BN=bn)
    # exp is the reference's exactly rounded one there, an approximation here: a few ulps.
    assert np.abs(compiled - interpreted).max() < 2e-6 * max(1, shape[1] // 64)


# --------------------------------------------------------------------------- matmul

MATMUL_CASES = [
    ((1, 1, 1), (16, 16, 16)),
    ((17, 9, 33), (16, 16, 16)),
    ((17, 9, 33), (32, 16, 64)),
    ((64, 64, 32), (64, 64, 32)),
    ((64, 64, 32), (16, 8, 16)),
    ((100, 72, 96), (64, 64, 32)),
    ((100, 72, 96), (32, 16, 64)),
    ((33, 130, 70), (16, 64, 32)),
]


@pytest.mark.parametrize(("mnk", "tiles"), MATMUL_CASES, ids=str)
def test_matmul(mnk, tiles):
    mod = load_example("matmul")
    m, n, k = mnk
    rng = np.random.default_rng(m * n * k)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    bm, bn, bk = tiles
    out = np.zeros((m, n), np.float16)
    compiled, interpreted = run_both(mod.matmul, [a, b], [out], BM=bm, BN=bn, BK=bk)
    assert relative_error(compiled, interpreted) <= mod.tolerance(k)


def test_matmul_exact_products_are_bit_exact():
    """Small integers: every product and partial sum is exact, so any order agrees."""
    matmul = load_example("matmul").matmul
    rng = np.random.default_rng(5)
    a = rng.integers(-4, 5, (40, 48)).astype(np.float16)
    b = rng.integers(-4, 5, (48, 24)).astype(np.float16)
    compiled, interpreted = run_both(
        matmul, [a, b], [np.zeros((40, 24), np.float16)], BM=16, BN=16, BK=16
    )
    assert_bitwise(compiled, interpreted)


# --------------------------------------------------------------------------- quant_matmul

WEIGHT_TYPES = [tl.dtype(f"u{b}") for b in range(1, 9)] + [tl.dtype(f"i{b}") for b in range(1, 9)]
WEIGHT_TYPES += [tl.f4e2m1, tl.f6e3m2, tl.f6e2m3, tl.f8e4m3, tl.f8e5m2, tl.f3e1m1]
GROUP_TILES = [(g, bk) for g in (32, 64, 128) for bk in (32, 64, 128)]
# Ragged sizes compile to per-element masks (no size facts): BK up to 64 keeps them quick.
RAGGED_GROUP_TILES = [(g, bk) for g in (32, 64, 128) for bk in (32, 64)]
RAGGED_KN = [(100, 33), (1, 70), (77, 1), (45, 17), (130, 20), (64, 3), (33, 40)]


def _quant_cases():
    """Each weight type twice: aligned sizes and ragged ones, each time another (G, BK),
    so that every (G, BK) pair meets several weight types."""
    cases = []
    for i, weight_type in enumerate(WEIGHT_TYPES):
        g, bk = GROUP_TILES[i % len(GROUP_TILES)]
        k = 2 * max(g, bk)  # two K steps and two scale groups at least
        cases.append(pytest.param(weight_type, g, bk, k, 64, id=f"{weight_type}-G{g}-BK{bk}"))
        g, bk = RAGGED_GROUP_TILES[(i + 1) % len(RAGGED_GROUP_TILES)]
        k, n = RAGGED_KN[i % len(RAGGED_KN)]
        cases.append(
            pytest.param(weight_type, g, bk, k, n, id=f"{weight_type}-G{g}-BK{bk}-k{k}-n{n}")
        )
    return cases


@pytest.mark.parametrize(("weight_type", "group", "bk", "k", "n"), _quant_cases())
def test_quant_matmul(weight_type, group, bk, k, n):
    mod = load_example("quant_matmul")
    kernel = mod.quant_matmul
    consts = {"WT": weight_type, "G": group, "BK": bk}
    x, w, s = mod.make_inputs(k, k, n, weight_type, group, seed=k * 1000 + n)
    packed = mod.pack_weights(w, BK=bk)  # W permuted into the dot's fragment load order
    out = np.zeros((k, n), np.float16)

    # Dequantization, bit-exact: with x = I the kernel returns dequant(W) itself, each
    # code times its group's scale rounded once to f16 (M = K: same specialization),
    # computed here from the plain weights.
    eye = np.eye(k, dtype=np.float16)
    compiled, interpreted = run_both(kernel, [eye, packed, s], [out], **consts)
    assert_bitwise(compiled, interpreted)
    expected = w.unpack().astype(np.float16) * np.repeat(s, group, axis=0)[:k]
    assert np.all(np.isfinite(interpreted)) and np.array_equal(interpreted, expected)

    # The whole kernel on random activations (f32 accumulation in another order), on the
    # aligned sizes: the ragged ones cost another launch and the identity covers their masks.
    if k % bk == 0 and n % 64 == 0:
        compiled, interpreted = run_both(kernel, [x, packed, s], [out], **consts)
        assert relative_error(compiled, interpreted) <= mod.tolerance(k)
        reference = mod.reference(x, w, s, group)  # numpy, on the plain weights
        assert relative_error(compiled, reference) <= mod.tolerance(k)


# --------------------------------------------------------------------------- threads per launch


def test_threads_per_launch_follow_the_work_per_block(monkeypatch):
    monkeypatch.setenv("TILELANG_CPU_THREADS", "8")
    kernel = tl.kernel(load_example("vector_add").vector_add.fn).compile().cpu
    assert kernel._block_seconds is None
    assert kernel._workers(4, None) == 4  # speed unknown: one thread per block, up to 8
    x = np.ones(5000, np.float32)
    kernel.launch({"x": x, "y": x, "out": np.zeros_like(x), "N": 5000})
    assert kernel._block_seconds > 0  # every launch measures its blocks
    kernel._block_seconds = 2e-6
    assert kernel._workers(4, None) == 1  # 8 us of work: not worth a second thread
    assert kernel._workers(4, 3) == 3  # an explicit count is obeyed
    kernel._block_seconds = 1e-3
    assert kernel._workers(3, None) == 3
    assert kernel._workers(100, None) == 8


@tl.kernel(warps=1)
def stepped(out: tl.Tensor[tl.i32, "N"], step: tl.i32):  # noqa: UP037 (a size name)
    """out[0] = the number of iterations of range(0, N, step)."""
    count = 0
    for _ in tl.range(0, N, step):
        count = count + 1
    tl.store(out, [0], tl.full([1], count, tl.i32))


def test_launch_checks_hold_every_launch_back_even_with_a_grid_given():
    kernel = stepped.compile().cpu
    out = np.full(8, -1, np.int32)
    kernel.launch({"out": out, "step": 3, "N": 8})
    assert out[0] == 3  # range(0, 8, 3)
    for grid in (None, (1,)):
        with pytest.raises(ValueError, match="the loop step is 0"):
            kernel.launch({"out": out, "step": 0, "N": 8}, grid=grid)
    assert out[0] == 3
