"""Masked operands of a pipelined dot keep the warpgroup mma on sm_90a.

The grouped-GEMM idiom for a ragged K masks B's rows (and A's columns) past a limit
inside a `stages=2` loop. The pipeline copies such a load by cp.async, whose zero
source size is the mask's zero fill, so B sits in shared memory exactly as an unmasked
B does and the dot takes `wgmma.mma_async` (`tilelang.lowering.wgmma`). Before, layout
inference did not count a masked load as staged (`passes.infer_layouts.solver.
staged_tiles`), so the dot got the 2 x 2 warp grid and silently kept mma.sync.

The oracle for values: the masked product is the float64 product over the first k_lim
of K, and, bit for bit, the unmasked kernel's result over inputs zero-padded past
k_lim (a masked-off element reads 0, and the same sums run in the same k order), on
the CPU backend running the sm_90a lowering and in the interpreter alike.
Where the warpgroup mma must still be refused (a fill cp.async cannot write, a mask
that cannot be computed ahead) the stats and a `WgmmaFallbackWarning` say why.
"""

import importlib
import warnings

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.lowering.wgmma import WgmmaFallbackWarning
from tilelang.runtime import sass
from tilelang.target import TARGETS

#: How the kernel masks its loads (a constexpr of `_grouped`).
PLAIN, B_ALONG_K, A_AND_B_ALONG_K, B_FILLED_WITH_ONES, B_BY_LOADED_LIMIT = range(5)


@tl.kernel(warps=4)
def _grouped(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    limits: tl.Tensor[tl.i32, "L"],
    k_lim: tl.i32,
    BM: tl.constexpr = 64,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 32,
    MASK: tl.constexpr = 0,
):
    """The user's repro: a pipelined 64x64x32 matmul whose K stops at `k_lim`."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        km = k + ks < k_lim
        if MASK == 1:
            at = tl.load(a, [bm * BM, k], [BM, BK])
            bt = tl.load(b, [k, bn * BN], [BK, BN], mask=km[:, None])
        elif MASK == 2:
            at = tl.load(a, [bm * BM, k], [BM, BK], mask=km[None, :])
            bt = tl.load(b, [k, bn * BN], [BK, BN], mask=km[:, None])
        elif MASK == 3:
            at = tl.load(a, [bm * BM, k], [BM, BK])
            bt = tl.load(b, [k, bn * BN], [BK, BN], mask=km[:, None], fill=1.0)
        elif MASK == 4:
            lim = tl.load(limits, [k // BK])  # loaded in the body: no copy ahead
            at = tl.load(a, [bm * BM, k], [BM, BK])
            bt = tl.load(b, [k, bn * BN], [BK, BN], mask=(k + ks < lim)[:, None])
        else:
            at = tl.load(a, [bm * BM, k], [BM, BK])
            bt = tl.load(b, [k, bn * BN], [BK, BN])
        acc = tl.dot(at, bt, acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


def _compile(mask: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the refusals' warnings are tested on their own
        return _grouped.compile(target="sm_90a", assume="all", MASK=mask)


def _count(kernel, kind: type) -> int:
    return sum(isinstance(s, kind) for s in t.walk_stmts(kernel.thread.body))


@pytest.mark.parametrize("mask", [B_ALONG_K, A_AND_B_ALONG_K])
def test_a_masked_b_is_read_by_the_warpgroup_mma(mask):
    """As the unmasked kernel: 2 wgmmas a step (k-steps of 16, N = 64 in one), no
    mma.sync, HGMMA in the SASS main loop and wgmma in the PTX, no spills."""
    kernel = _compile(mask)
    assert kernel.stats["wgmma"] == _compile(PLAIN).stats["wgmma"] == 2
    assert _count(kernel, tm.Wgmma) == 2 and _count(kernel, tm.Mma) == 0
    assert "wgmma.mma_async" in kernel.ptx
    loop = sass.opcodes(sass.main_loop(sass.kernel_body(sass.disassemble(kernel.cubin))))
    assert sum(n for op, n in loop.items() if op.startswith("HGMMA")) == 2
    assert not any(op.startswith("HMMA") for op in loop)
    assert kernel.resources.spills == 0
    assert not any(key.startswith("wgmma_refused") for key in kernel.stats)


def test_masking_b_along_k_costs_nothing_in_the_prediction():
    """The user's shapes at 4096^3 with every row of K kept: the masked B's copy is
    predicted to run as fast as the unmasked one's (349 us, against 457 us on mma.sync
    before)."""
    sizes = dict(M=4096, N=4096, K=4096, L=128, k_lim=4096)
    plain = _compile(PLAIN).perf(**sizes).predicted_seconds
    masked = _compile(B_ALONG_K).perf(**sizes).predicted_seconds
    assert masked <= plain * 1.01


def _inputs(m: int, k: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float16)
    b = rng.standard_normal((k, n)).astype(np.float16)
    return a, b


def _run(mask: int, a, b, k_lim: int, interpret: bool = False) -> np.ndarray:
    c = np.zeros((a.shape[0], b.shape[1]), np.float16)
    limits = np.full(8, k_lim, np.int32)
    run = _grouped.interpret if interpret else _grouped
    out = run(a, b, c, limits, k_lim, MASK=mask)
    return np.asarray(out if out is not None else c)


@pytest.fixture
def sm_90a_on_cpu(monkeypatch):
    """The CPU backend runs the thread IR lowered for sm_90a (wgmma read through the
    descriptor formula), as tests/test_wgmma_lowering.py does."""
    monkeypatch.setattr(importlib.import_module("tilelang.kernel"), "CPU", TARGETS["sm_90a"])


@pytest.mark.parametrize("mask", [B_ALONG_K, A_AND_B_ALONG_K])
@pytest.mark.parametrize("k_lim", [70, 96, 1])
def test_the_masked_product_is_the_unmasked_one_over_zero_padded_inputs(sm_90a_on_cpu, mask, k_lim):
    """M, N not multiples of the tiles; K = 96 (three steps), the limit cutting the last
    step, at a step's end, or after one row."""
    a, b = _inputs(100, 96, 72, seed=k_lim + mask)
    got = _run(mask, a, b, k_lim)
    padded_a, padded_b = a.copy(), b.copy()
    padded_b[k_lim:] = 0
    if mask == A_AND_B_ALONG_K:
        padded_a[:, k_lim:] = 0
    plain = _run(PLAIN, padded_a, padded_b, k_lim)
    expected = a[:, :k_lim].astype(np.float64) @ b[:k_lim].astype(np.float64)
    assert np.abs(got.astype(np.float64) - expected).max() < 0.05
    assert np.array_equal(got.view(np.uint16), plain.view(np.uint16))
    # The interpreter (the block IR in numpy) sums in its own order: the same identity
    # holds within it.
    interpreted = _run(mask, a, b, k_lim, interpret=True)
    interpreted_plain = _run(PLAIN, padded_a, padded_b, k_lim, interpret=True)
    assert np.array_equal(interpreted.view(np.uint16), interpreted_plain.view(np.uint16))


def _refusal(mask: int) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        kernel = _grouped.compile(target="sm_90a", assume="all", MASK=mask)
        stats = kernel.stats
    return stats, [str(w.message) for w in said if w.category is WgmmaFallbackWarning]


def test_a_fill_cp_async_cannot_write_keeps_mma_sync_and_says_so():
    """cp.async writes zeros where it reads nothing: a fill of 1.0 is prefetched into
    registers, and the warning (at the dot's line) and the stats say so."""
    stats, said = _refusal(B_FILLED_WITH_ONES)
    assert "wgmma" not in stats and stats["mma"] > 0
    (key,) = [k for k in stats if k.startswith("wgmma_refused")]
    assert key.startswith("wgmma_refused_fill b test_wgmma_masked.py:")
    (message,) = said
    assert "its fill is 1.0" in message and "cp.async writes zero bytes" in message


def test_a_mask_from_loaded_data_keeps_mma_sync_and_says_so():
    stats, said = _refusal(B_BY_LOADED_LIMIT)
    assert "wgmma" not in stats and stats["pipeline_skipped"] == 1
    assert any(k.startswith("wgmma_refused_unpipelined b ") for k in stats)
    (message,) = said
    assert "it is not pipelined: its mask" in message


def test_the_refused_kernels_still_compute_their_masked_products(sm_90a_on_cpu):
    a, b = _inputs(64, 96, 64, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ones = _run(B_FILLED_WITH_ONES, a, b, 70).astype(np.float64)
        loaded = _run(B_BY_LOADED_LIMIT, a, b, 70).astype(np.float64)
    filled = b.astype(np.float64)
    filled[70:] = 1.0
    assert np.abs(ones - a.astype(np.float64) @ filled).max() < 0.05
    expected = a[:, :70].astype(np.float64) @ b[:70].astype(np.float64)
    assert np.abs(loaded - expected).max() < 0.05
