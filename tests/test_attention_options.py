"""flash-attn's options of `tilelang.kernels.flash_attention` — `window_size`,
`softcap`, `alibi_slopes` — on the CPU backend against a numpy float64 reference
written from flash-attn's documented definitions (its `flash_attn_func` docstring):

* window_size (left, right): query i attends keys j with
  i + Sk - Sq - left <= j <= i + Sk - Sq + right, -1 leaving that side unbounded;
  causal puts the right edge at 0;
* softcap > 0: each scaled score s becomes softcap * tanh(s / softcap);
* alibi_slopes [H] or [batch, H]: -slope * |i + Sk - Sq - j| is added to the score of
  query i and key j (after the cap);

a query that sees no key gives o = 0 and lse = -inf. The key blocks a window leaves
out of a whole query block are not read (keys there hold NaN, which a read would
spread through P·V), and the builds with the options on keep 0 spills."""

import re
import warnings

import numpy as np
import pytest

from tilelang import dtypes
from tilelang.kernels import flash_attention
from tilelang.kernels.attention import (
    default_tiles,
    flash_attention_kernel,
    flash_attention_varlen_kernel,
)


def reference(q, k, v, causal=False, window=(-1, -1), softcap=0.0, slopes=None, scale=None):
    """(o, lse) in float64 from flash-attn's definitions, one (batch, head) at a time."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch, sq, heads, d = q.shape
    sk, kv_heads = k.shape[1], k.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    # how far key j lies left of query i's diagonal (flash-attn's i + Sk - Sq - j)
    behind = np.arange(sq)[:, None] + sk - sq - np.arange(sk)[None, :]
    left, right = window
    if causal:
        right = 0
    sees = np.ones((sq, sk), bool)
    if left >= 0:
        sees &= behind <= left
    if right >= 0:
        sees &= -behind <= right
    out = np.zeros((batch, sq, heads, d))
    lse = np.full((batch, heads, sq), -np.inf)
    for b in range(batch):
        for h in range(heads):
            kv = h // (heads // kv_heads)
            scores = scale * q[b, :, h] @ k[b, :, kv].T
            if softcap > 0:
                scores = softcap * np.tanh(scores / softcap)
            if slopes is not None:
                slope = slopes[h] if slopes.ndim == 1 else slopes[b, h]
                scores = scores - slope * np.abs(behind)
            for i in range(sq):
                if not sees[i].any():
                    continue
                s = scores[i, sees[i]]
                w = np.exp(s - s.max())
                out[b, i, h] = w @ v[b, sees[i], kv] / w.sum()
                lse[b, h, i] = s.max() + np.log(w.sum())
    return out, lse


def inputs(batch, sq, sk, heads, kv_heads, d, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, sq, heads, d)).astype(np.float16)
    k = rng.standard_normal((batch, sk, kv_heads, d)).astype(np.float16)
    v = rng.standard_normal((batch, sk, kv_heads, d)).astype(np.float16)
    return q, k, v


def assert_matches(got, want):
    (out, lse), (want_out, want_lse) = got, want
    # P is rounded to f16 before P·V: a few units of its last place
    np.testing.assert_allclose(np.asarray(out, np.float64), want_out, atol=4e-3, rtol=0)
    assert (np.isneginf(lse) == np.isneginf(want_lse)).all()
    finite = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[finite], want_lse[finite], atol=2e-4, rtol=1e-5)


def check(q, k, v, causal=False, window=(-1, -1), softcap=0.0, slopes=None, scale=None):
    got = flash_attention(
        q, k, v, causal=causal, scale=scale, return_lse=True,
        window_size=window, softcap=softcap, alibi_slopes=slopes,
    )  # fmt: skip
    assert_matches(got, reference(q, k, v, causal, window, softcap, slopes, scale))


# Sq, Sk: a single query, odd lengths, Sk < Sq (queries left of every window) and > Sq
LENGTHS = [(1, 17), (17, 17), (100, 17), (17, 100), (100, 100)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [(0, 0), (16, 0), (-1, 8), (3, 5)])
def test_windows_match_the_definition(window, causal):
    for sq, sk in LENGTHS:
        q, k, v = inputs(2, sq, sk, 4, 2, 32, seed=sq + sk)  # GQA 2
        check(q, k, v, causal, window)


def test_a_query_left_of_its_window_gives_zero_and_an_lse_of_minus_infinity():
    q, k, v = inputs(1, 17, 5, 2, 1, 32)  # (0, 0): query i sees key i - 12 alone
    out, lse = flash_attention(q, k, v, window_size=(0, 0), return_lse=True)
    assert (out[0, :12] == 0).all() and np.isneginf(lse[0, :, :12]).all()
    assert np.isfinite(lse[0, :, 12:]).all()
    keys = np.asarray(v[0, :, 0], np.float64)  # one key each: o is its value
    np.testing.assert_allclose(np.asarray(out[0, 12:, 0], np.float64), keys, atol=1e-3)


@pytest.mark.parametrize(
    "window, causal, poisoned, rows",
    [
        ((16, 0), False, slice(0, 64), slice(128, 256)),  # left of rows 128..'s windows
        ((16, 0), True, slice(0, 64), slice(128, 256)),
        ((-1, 8), False, slice(128, 256), slice(0, 64)),  # right of rows 0..63's
        ((3, 5), False, slice(192, 256), slice(64, 128)),  # both sides of 64..127's
    ],
)
def test_the_key_blocks_a_window_leaves_out_are_not_read(window, causal, poisoned, rows):
    """The query block's rows do not see the poisoned keys: read, even masked, they
    would make its P·V NaN (0 · NaN), so they must lie outside the loop's bounds."""
    q, k, v = inputs(1, 256, 256, 2, 2, 64)  # the default tiles: 64 x 64
    k[:, poisoned], v[:, poisoned] = np.nan, np.nan
    out = flash_attention(q, k, v, causal=causal, window_size=window)
    clean = inputs(1, 256, 256, 2, 2, 64)
    want, _ = reference(*clean, causal, window)
    np.testing.assert_allclose(np.asarray(out[:, rows], np.float64), want[:, rows], atol=4e-3)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("softcap", [5.0, 30.0])
def test_softcap_matches_the_definition(softcap, causal):
    for sq, sk in [(1, 17), (100, 17), (17, 100)]:
        q, k, v = inputs(1, sq, sk, 4, 1, 32, seed=sq)  # MQA
        check(q, k, v, causal, softcap=softcap, scale=1.0)  # scores of ~6: the cap bites


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("per_batch", [False, True], ids=["[H]", "[B, H]"])
def test_alibi_slopes_match_the_definition(per_batch, causal):
    rng = np.random.default_rng(3)
    slopes = rng.uniform(0.05, 1.0, (2, 4) if per_batch else (4,)).astype(np.float32)
    for sq, sk in [(1, 17), (100, 17), (17, 100)]:
        q, k, v = inputs(2, sq, sk, 4, 2, 32, seed=sk)
        check(q, k, v, causal, slopes=slopes)


@pytest.mark.parametrize("causal", [False, True])
def test_window_softcap_and_alibi_together(causal):
    slopes = np.array([[0.5, 0.25, 0.125, 0.0625], [1.0, 0.5, 0.25, 0.125]], np.float32)
    windows = [(3, 5), (16, 0), (-1, 8), (0, 0), (40, 3)]
    for (sq, sk), window in zip(LENGTHS, windows, strict=True):
        q, k, v = inputs(2, sq, sk, 4, 1, 32, seed=sq * sk)
        check(q, k, v, causal, window, softcap=5.0, slopes=slopes, scale=0.5)


def test_the_interpreter_agrees():
    q, k, v = inputs(1, 7, 9, 2, 1, 16)
    slopes = np.array([0.3, 0.7], np.float32)
    got = flash_attention(
        q, k, v, causal=True, return_lse=True, window_size=(2, 1), softcap=5.0, alibi_slopes=slopes,
        interpret=True,
    )  # fmt: skip
    assert_matches(got, reference(q, k, v, True, (2, 1), 5.0, slopes))


def test_varlen_sequences_take_the_options_per_sequence():
    rng = np.random.default_rng(5)
    lens_q, lens_k = [1, 17, 0, 100, 5], [17, 1, 3, 100, 0]
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = rng.standard_normal((cu_q[-1], 4, 32)).astype(np.float16)
    k = rng.standard_normal((cu_k[-1], 2, 32)).astype(np.float16)
    v = rng.standard_normal((cu_k[-1], 2, 32)).astype(np.float16)
    slopes = rng.uniform(0.05, 1.0, (5, 4)).astype(np.float32)  # [batch, H]
    for causal, window in [(False, (3, 5)), (True, (16, 0)), (False, (-1, 8))]:
        out, lse = flash_attention(
            q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True,
            window_size=window, softcap=5.0, alibi_slopes=slopes,
        )  # fmt: skip
        for b in range(5):
            rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
            one = (q[None, rows], k[None, keys], v[None, keys])
            want_out, want_lse = reference(*one, causal, window, 5.0, slopes[b])
            assert_matches((out[None, rows], lse[None, :, rows]), (want_out, want_lse))


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(window_size=(-2, 0)), ValueError, "window_size must be (left, right): two ints"),
        (dict(window_size=(4,)), ValueError, "window_size must be (left, right)"),
        (dict(window_size=(1.5, 2)), ValueError, "got (1.5, 2)"),
        (dict(softcap=-1.0), ValueError, "softcap must be a finite number >= 0 (0: off), got -1.0"),
        (dict(softcap=float("inf")), ValueError, "softcap must be a finite number"),
        (dict(softcap=True), ValueError, "softcap must be a finite number"),
        (
            dict(alibi_slopes=np.zeros(3, np.float32)),
            ValueError,
            "alibi_slopes must have shape [4], got shape [3] (H = 4 from q.shape[2])",
        ),
        (
            dict(alibi_slopes=np.zeros((2, 4), np.float32)),
            ValueError,
            "alibi_slopes must have shape [1, 4], got shape [2, 4]",
        ),
        (dict(alibi_slopes=np.zeros(4)), TypeError, "alibi_slopes must hold one of f32"),
    ],
)
def test_bad_options_are_named_before_any_launch(options, error, message):
    q, k, v = inputs(1, 7, 7, 4, 2, 16)
    with pytest.raises(error, match=re.escape(message)):
        flash_attention(q, k, v, interpret=True, **options)


def test_varlen_alibi_slopes_are_per_sequence():
    q, k, v = (np.zeros((7, 4, 16), np.float16) for _ in range(3))
    cu = np.array([0, 3, 7], np.int32)
    with pytest.raises(ValueError, match=re.escape("alibi_slopes must have shape [2, 4]")):
        flash_attention(
            q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, interpret=True,
            alibi_slopes=np.zeros((3, 4), np.float32),
        )  # fmt: skip


@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
@pytest.mark.parametrize(
    "kernel", [flash_attention_kernel, flash_attention_varlen_kernel], ids=["fixed", "varlen"]
)
def test_the_default_tiles_compile_without_spills_with_the_options(kernel, on, head_dim, arch):
    from tilelang.analysis.replication import ReplicatedOperandWarning
    from tilelang.passes import plan_registers

    options = dict(WINDOW=on, SOFTCAP=on, ALIBI=2 * on)
    with warnings.catch_warnings():
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        warnings.simplefilter("error", ReplicatedOperandWarning)
        build = kernel.compile(
            assume="all", target=arch, T=dtypes.f16, CAUSAL=True, LSE=True,
            **options, **default_tiles(head_dim),
        )  # fmt: skip
    assert build.resources.spills == 0, build.resources
    assert build.stats["pipeline_async"] == 2  # K and V still by cp.async


def test_the_torch_operators_take_the_options():
    torch = pytest.importorskip("torch")
    from tilelang.torch import kernels as torch_kernels

    q, k, v = inputs(2, 17, 100, 4, 2, 32, seed=7)
    slopes = np.array([0.5, 0.25, 0.125, 0.0625], np.float32)
    got = torch_kernels.flash_attention(
        *(torch.from_numpy(x) for x in (q, k, v)), causal=True, return_lse=True,
        window_size=(16, 0), softcap=5.0, alibi_slopes=torch.from_numpy(slopes),
    )  # fmt: skip
    assert isinstance(got[0], torch.Tensor)
    want = reference(q, k, v, True, (16, 0), 5.0, slopes)
    assert_matches(tuple(t.numpy() for t in got), want)
    with pytest.raises(ValueError, match=re.escape("window_size must be (left, right)")):
        torch_kernels.flash_attention(*(torch.from_numpy(x) for x in (q, k, v)), window_size=4)
