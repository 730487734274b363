"""FlashAttention's wide tiles: 128 query rows over 8 warps (64 at D = 256) where an
H100's busiest multiprocessor would finish them before the narrow 4-warp tiles. The
library picks them by the launch's shape (`default_tiles`, what `flash_attention`
launches, fixed-length and varlen); they compile with 0 spills on sm_80 and sm_90a; and
since rows are independent and a row's keys come in the same steps (the same BN), the
wide build's output and log-sum-exp are bit-identical to the narrow build's on the CPU
backend, and both match a numpy float64 reference written from the definition.

BN depends on the head dimension and on whether the loop walks every key (neither
causal nor a window: 128 keys a step at D <= 64, 64 at D = 128, 32 at D = 256), never on
the launch's shape; a causal or windowed loop takes at most the narrow build's rows a
step (its last step would otherwise read keys no row of a narrow block sees)."""

import warnings

import numpy as np
import pytest

from tilelang import dtypes
from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.kernels import attention, flash_attention
from tilelang.kernels.attention import (
    default_tiles,
    flash_attention_kernel,
    flash_attention_varlen_kernel,
)
from tilelang.passes import plan_registers

# causal or a window (and `default_tiles`' default): BN at most the narrow rows
NARROW = {
    64: dict(HD=64, BM=64, BN=64),
    128: dict(HD=128, BM=64, BN=64),
    256: dict(HD=256, BM=32, BN=32),
}
WIDE = {
    64: dict(HD=64, BM=128, BN=64, WARPS=8),
    128: dict(HD=128, BM=128, BN=64, WARPS=8),
    256: dict(HD=256, BM=64, BN=32, WARPS=8),
}
# a loop over every key (neither causal nor a window)
EVERY_KEY_NARROW = {
    16: dict(HD=16, BM=64, BN=128),
    32: dict(HD=32, BM=64, BN=128),
    64: dict(HD=64, BM=64, BN=128),
    128: dict(HD=128, BM=64, BN=64),
    256: dict(HD=256, BM=32, BN=32),
}
EVERY_KEY_WIDE = {
    32: dict(HD=32, BM=128, BN=128, WARPS=8),
    64: dict(HD=64, BM=128, BN=128, WARPS=8),
    128: dict(HD=128, BM=128, BN=64, WARPS=8),
    256: dict(HD=256, BM=64, BN=32, WARPS=8),
}


# --------------------------------------------------------------------------- the choice


@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_the_benchmark_shape_gets_the_wide_tiles(head_dim):
    # B = 4, H = 32, S = 4096: the GPU check's forward shape, 8192 narrow blocks
    assert default_tiles(head_dim, 4 * 32, 4096) == WIDE[head_dim]
    assert default_tiles(head_dim, 4 * 32, 4096, every_key=True) == EVERY_KEY_WIDE[head_dim]
    assert default_tiles(head_dim) == NARROW[head_dim]  # no launch given: narrow
    assert default_tiles(head_dim, every_key=True) == EVERY_KEY_NARROW[head_dim]


@pytest.mark.parametrize(
    "head_dim, bounded, every_key",
    [(16, 64, 128), (32, 64, 128), (64, 64, 128), (128, 64, 64), (256, 32, 32)],
)
def test_the_keys_a_step_follow_the_head_dimension_and_the_loop(head_dim, bounded, every_key):
    """BN with causal or a window (`bounded`) and over every key: the static report's
    fastest that compiles with 0 spills for every option, at most the narrow rows when
    bounded."""
    assert default_tiles(head_dim)["BN"] == bounded
    assert default_tiles(head_dim, every_key=True)["BN"] == every_key


@pytest.mark.parametrize("head_dim, step", [(17, 64), (33, 64), (65, 32), (129, 16)])
def test_an_odd_head_dimension_keeps_its_unpipelined_steps(head_dim, step):
    """K through registers, [HD, BN] whole in each warp: HD · BN / 64 registers, 64 at
    most (a longer step over every key would take more)."""
    for every_key in (False, True):
        tiles = default_tiles(head_dim, 4 * 32, 4096, every_key)
        assert tiles["BN"] == step and tiles["STAGES"] == 1, tiles


@pytest.mark.parametrize("head_dim", [16, 17, 32, 33, 64, 65, 100, 128, 129, 200, 256])
@pytest.mark.parametrize("every_key", [False, True])
def test_the_key_step_does_not_depend_on_the_launch(head_dim, every_key):
    """Every build a call can get for a head dimension sums a row's keys in the same
    steps; a causal or windowed loop's step is at most the narrow build's rows."""
    narrow = default_tiles(head_dim, every_key=every_key)
    for batch_heads, rows in ((1, 1), (8, 1024), (12, 1024), (66, 256), (128, 4096), (1, 32768)):
        tiles = default_tiles(head_dim, batch_heads, rows, every_key)
        assert tiles["BN"] == narrow["BN"], (batch_heads, rows, tiles)
        if not every_key:
            assert tiles["BN"] <= narrow["BM"]


# Whether wide: the rows an H100 multiprocessor (of 132) runs at most, ceil(blocks / 132)
# times the block's rows, at the cost of a wide row (a narrow row's being 1) measured
# for the head dimension and BN (`attention.WIDE_ROW_COST`), are fewer than the narrow
# build's. Causal or a window (BN 64, 64, 32): 0.98 at D=32, 0.97 at D=64, 0.92 at
# D=128, 0.85 at D=256; every key (BN 128 at D=32 and 64): 0.90 and 0.96.
@pytest.mark.parametrize(
    "head_dim, batch_heads, rows, every_key, wide",
    [
        (128, 132, 64, False, False),  # one narrow block a multiprocessor: 64 vs 128 · 0.92
        (128, 66, 256, False, True),  # 264 narrow blocks: 128 rows vs 132 wide blocks: 118
        (128, 67, 256, False, False),  # 268: 192 rows vs 134 wide blocks: 2 · 128 · 0.92 = 236
        (128, 133, 128, False, False),  # 266 narrow blocks: 192; wide 2 · 128 · 0.92
        (128, 99, 256, False, False),  # 396: 192 vs 236 (report: 127.8 narrow, 133.2 us wide)
        (128, 66, 512, False, True),  # 528: 256 vs 236 (report: 151.1 narrow, 143.3 us wide)
        (128, 1, 32768, False, True),  # 512: 256 vs 236 (report: 604.3 narrow, 555.9 us wide)
        (128, 66, 512, True, True),  # D=128 keeps BN 64 over every key: the same choice
        (100, 66, 256, False, True),  # D padded to 128
        (64, 8, 1024, False, False),  # 128 blocks: 64 vs 124 (report: 3.1 narrow, 4.9 us wide)
        (64, 12, 1024, False, True),  # 192: 128 vs 124 (report: 6.3 narrow, 4.9 us wide)
        (64, 8, 1024, True, False),  # BN 128: 64 vs 123 (report: 2.6 narrow, 4.9 us wide)
        (64, 12, 1024, True, True),  # BN 128: 128 vs 123 (report: 5.1 narrow, 4.9 us wide)
        (256, 4, 1024, False, False),  # 32-row narrow tiles, 128 blocks: 32 vs 64 · 0.85 = 54
        (256, 6, 1024, False, True),  # 192: 64 vs 54 (report: 30.6 narrow, 26.2 us wide)
        (256, 6, 1024, True, True),  # D=256 takes 32 keys a step either way
        (32, 4 * 32, 4096, False, True),  # 8192: 4032 vs 4096 · 0.98
        (32, 4 * 32, 4096, True, True),  # 4032 vs 4096 · 0.90
        # 2400 narrow blocks, 19 waves: 1216 rows; 1200 wide, 10 waves: 1280 at 0.98 =
        # 1254 (BN 64; report, causal: 56.9 narrow, 60.2 us wide) or 0.90 = 1152 (BN
        # 128; report: 108.3 narrow, 102.8 us wide)
        (32, 75, 2048, False, False),
        (32, 75, 2048, True, True),
        (16, 4 * 32, 4096, False, False),  # its wide build is predicted slower on sm_80
        (16, 4 * 32, 4096, True, False),  # and at BN 128 no faster on sm_90a
        (127, 4 * 32, 4096, False, False),  # odd D: unpipelined, K through registers
        (127, 4 * 32, 4096, True, False),
    ],
)
def test_the_wide_tiles_come_where_an_h100_finishes_them_first(
    head_dim, batch_heads, rows, every_key, wide
):
    tiles = default_tiles(head_dim, batch_heads, rows, every_key)
    assert (tiles.get("WARPS", 4) == 8) == wide, tiles
    narrow_rows = 32 if head_dim > 128 else 64
    assert tiles["BM"] == (2 * narrow_rows if wide else narrow_rows), tiles
    # the same key steps either way
    assert tiles["BN"] == default_tiles(head_dim, every_key=every_key)["BN"]


def test_the_warps_follow_the_tiles():
    for tiles, warps in ((WIDE[128], 8), (NARROW[128], 4), (WIDE[256], 8)):
        for kernel in (flash_attention_kernel, flash_attention_varlen_kernel):
            assert kernel.specialize(T=dtypes.f16, **tiles).warps == warps


def launched_tiles(monkeypatch, call) -> dict:
    """The BM, BN and WARPS `call` launches flash attention with (nothing is run)."""
    seen = {}

    def record(kernel, args, constexprs, interpret):
        seen.update(constexprs)

    monkeypatch.setattr(attention, "run", record)
    call()
    return {name: seen.get(name, 4) for name in ("BM", "BN", "WARPS")}


@pytest.mark.parametrize("heads, wide", [(33, False), (66, True)])
@pytest.mark.parametrize(
    "options, step",
    [
        (dict(causal=True), 64),
        (dict(window_size=(8, -1)), 64),
        (dict(window_size=(-1, 8)), 64),
        (dict(), 128),
        (dict(softcap=5.0, alibi=True), 128),  # neither bounds the loop
    ],
    ids=["causal", "left-window", "right-window", "every-key", "softcap-alibi"],
)
def test_flash_attention_launches_the_tiles_its_shape_and_loop_get(
    monkeypatch, heads, wide, options, step
):
    q = np.zeros((1, 256, heads, 64), np.float16)  # 4 narrow blocks a head: 132 or 264
    kv = np.zeros((1, 256, 1, 64), np.float16)
    options = dict(options)
    if options.pop("alibi", False):
        options["alibi_slopes"] = np.ones(heads, np.float32)
    got = launched_tiles(monkeypatch, lambda: flash_attention(q, kv, kv, **options))
    assert got == (dict(BM=128, BN=step, WARPS=8) if wide else dict(BM=64, BN=step, WARPS=4))


@pytest.mark.parametrize("longest, wide", [(128, False), (256, True)])
@pytest.mark.parametrize(
    "head_dim, causal, step", [(128, False, 64), (64, False, 128), (64, True, 64)]
)
def test_varlen_launches_the_tiles_of_its_longest_sequence(
    monkeypatch, longest, wide, head_dim, causal, step
):
    """3 sequences × 22 heads × cdiv(longest, 64) narrow blocks: 132, then 264."""
    lens = [1, longest, 5]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    q = np.zeros((cu[-1], 22, head_dim), np.float16)
    kv = np.zeros((cu[-1], 2, head_dim), np.float16)

    def call():
        flash_attention(
            q, kv, kv, causal=causal, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=longest
        )

    got = launched_tiles(monkeypatch, call)
    assert got == (dict(BM=128, BN=step, WARPS=8) if wide else dict(BM=64, BN=step, WARPS=4))


# --------------------------------------------------------------------------- resources


def built(kernel, arch: str, tiles: dict, **options):
    with warnings.catch_warnings():  # the library's tiles give its callers no warning
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        warnings.simplefilter("error", ReplicatedOperandWarning)
        return kernel.compile(assume="all", target=arch, T=dtypes.f16, LSE=True, **options, **tiles)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize(
    "kernel, head_dim, options",
    [
        (flash_attention_kernel, 128, dict(CAUSAL=True)),
        # the most live values: window, softcap and per-batch ALiBi slopes
        (flash_attention_varlen_kernel, 64, dict(WINDOW=True, SOFTCAP=True, ALIBI=2)),
    ],
    ids=["fixed-D128-causal", "varlen-D64-every-option"],
)
def test_the_wide_tiles_compile_without_spills(kernel, head_dim, options, arch):
    build = built(kernel, arch, WIDE[head_dim], **options)
    assert build.resources.spills == 0, build.resources
    assert build.stats["pipeline_async"] == 2  # K and V still by cp.async
    assert build.stats.get("dot_operand_replicated", 0) == 0  # each warp its own rows


# Each longer key step with the most live values a call can give it (up to 255 registers
# on sm_80): over every key, softcap and per-batch ALiBi slopes (a window would bound
# the loop: BN 64); D=256's 32 keys, which bounded loops take too, with a window.
# (One arch each beyond D 64, to keep the suite's time: sm_80 takes the most registers.)
@pytest.mark.parametrize(
    "tiles, options, arch",
    [
        (EVERY_KEY_WIDE[64], dict(SOFTCAP=True, ALIBI=2), "sm_80"),
        (EVERY_KEY_WIDE[64], dict(SOFTCAP=True, ALIBI=2), "sm_90a"),
        (EVERY_KEY_WIDE[32], dict(SOFTCAP=True, ALIBI=2), "sm_80"),
        (EVERY_KEY_NARROW[16], dict(SOFTCAP=True, ALIBI=2), "sm_90a"),
        (NARROW[256], dict(WINDOW=True, SOFTCAP=True, ALIBI=2), "sm_80"),
    ],
    ids=["D64-BN128-wide-sm80", "D64-BN128-wide-sm90a", "D32-BN128-wide", "D16-BN128", "D256-BN32"],
)
def test_the_longer_key_steps_compile_without_spills(tiles, options, arch):
    build = built(flash_attention_varlen_kernel, arch, tiles, **options)
    assert build.resources.spills == 0, build.resources
    assert build.stats["pipeline_async"] == 2  # K and V still by cp.async


# --------------------------------------------------------------------------- results


def reference(q, k, v, causal):
    """o and lse from the definition in float64: query i of Sq sees key j of Sk when
    not causal or j <= i + Sk - Sq; kv head h // (H / H_kv); no key seen: 0 and -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    _, sq, heads, d = q.shape
    sk, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
    if causal:
        visible = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + sk - sq
        scores = np.where(visible, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))
    total = weights.sum(axis=-1, keepdims=True)
    out = np.einsum("bhij,bjhd->bihd", weights / np.where(total > 0, total, 1.0), v)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + top)[..., 0]
    return out, np.where(total[..., 0] > 0, lse, -np.inf)


def both_builds(monkeypatch, call, step):
    """`call`'s result with the narrow tiles (a wide row priced past any saving) and
    with the wide ones (a wide row free), checked to have run those builds, both with
    `step` keys a step."""
    launched, run = [], attention.run

    def spied(kernel, args, constexprs, interpret):
        launched.append((constexprs.get("WARPS", 4), constexprs["BN"]))
        return run(kernel, args, constexprs, interpret)

    monkeypatch.setattr(attention, "run", spied)
    results = []
    for cost in (float("inf"), 0.0):
        costs = dict.fromkeys(attention.WIDE_ROW_COST, cost)
        monkeypatch.setattr(attention, "WIDE_ROW_COST", costs)
        results.append(call())
    assert launched == [(4, step), (8, step)]
    return results


def assert_identical(narrow, wide):
    for a, b in zip(narrow, wide, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a.view(np.uint8), b.view(np.uint8))  # bits, NaN and -0 too


def assert_matches(out, lse, want, want_lse):
    # P is rounded to f16 before P·V: a few units of its last place
    np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=3e-3, rtol=0)
    assert (np.isneginf(lse) == np.isneginf(want_lse)).all()
    finite = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[finite], want_lse[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "sq, sk, heads, kv_heads, d, causal, step",
    [
        # (each case builds the kernel twice for the CPU: a few, for the suite's time)
        (257, 100, 8, 2, 128, False, 64),  # GQA 4; the last 128-row block holds one row
        (193, 71, 2, 1, 256, True, 32),  # MQA, Sk < Sq: rows 0..121 see no key
        (130, 300, 4, 2, 64, False, 128),  # every key, 128 a step; the last step partial
    ],
)
def test_the_wide_build_is_bit_identical_to_the_narrow_one(
    monkeypatch, sq, sk, heads, kv_heads, d, causal, step
):
    rng = np.random.default_rng(d)
    q = rng.standard_normal((2, sq, heads, d)).astype(np.float16)
    k = rng.standard_normal((2, sk, kv_heads, d)).astype(np.float16)
    v = rng.standard_normal((2, sk, kv_heads, d)).astype(np.float16)
    narrow, wide = both_builds(
        monkeypatch, lambda: flash_attention(q, k, v, causal=causal, return_lse=True), step
    )
    assert_identical(narrow, wide)
    assert_matches(*wide, *reference(q, k, v, causal))


@pytest.mark.parametrize("causal, step", [(True, 64)])
def test_varlen_wide_build_is_bit_identical_to_the_narrow_one(monkeypatch, causal, step):
    """Sequences of 1, 0, 130 and 257 queries over 7, 3, 257 and 100 keys: a 128-row
    block reads more rows past its sequence's end (masked, stored nowhere)."""
    lens_q, lens_k = [1, 0, 130, 257], [7, 3, 257, 100]
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    rng = np.random.default_rng(7)
    q = rng.standard_normal((cu_q[-1], 4, 64)).astype(np.float16)
    k = rng.standard_normal((cu_k[-1], 2, 64)).astype(np.float16)
    v = rng.standard_normal((cu_k[-1], 2, 64)).astype(np.float16)

    def call():
        return flash_attention(
            q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True
        )

    narrow, wide = both_builds(monkeypatch, call, step)
    assert_identical(narrow, wide)
    out, lse = wide
    for b in range(len(lens_q)):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        want, want_lse = reference(q[None, rows], k[None, keys], v[None, keys], causal)
        assert_matches(out[rows], lse[:, rows], want[0], want_lse[0])
