"""`flash_attention` over vLLM's paged KV cache (`block_table=`, `seqused_k=` or
`cu_seqlens_k=`: `tilelang.kernels.paged_prefill`), against a float64 numpy reference
written from the semantics (flash-attn's `flash_attn_varlen_func(..., block_table=)`,
vLLM's FlashAttention backend):

* sequence b has the packed queries cu_seqlens_q[b]..cu_seqlens_q[b + 1] (sq of them)
  and sk keys (seqused_k[b], or cu_seqlens_k[b + 1] - cu_seqlens_k[b]); key t is row
  t % block_size of page block_table[b, t // block_size] of the caches;
* query i is the sequence's position i + sk - sq: causal keeps keys t <= i + sk - sq,
  a window (left, right) keys i + sk - sq - left <= t <= i + sk - sq + right, softcap
  c turns a scaled score s into c * tanh(s / c), ALiBi subtracts slope * |i + sk - sq
  - t| after it; a query that sees no key gets o = 0 and lse = -inf.

Mixed query counts (0, 1, 7, 70: empty, decode, chunk, prefill), cached prefixes that
are not whole pages, tables in no order, pages smaller and larger than the kernel's key
step; the CPU backend and the interpreter bit for bit; NaN in every cache slot no
sequence uses; every bad argument named before a launch; sm_80 and sm_90a builds with
0 spills beside the varlen kernel's static report; the torch operator.

f8e4m3 / f8e5m2 caches with k_scale, v_scale (per tensor or per KV head, as
`paged_decode_attention` takes them): the reference decodes the codes with ml_dtypes
and multiplies by the scales in float64, then runs the same attention. The kernel
rounds nothing the f16 path does not (P and o to q's type, `kernels.paged_prefill`),
so the tolerance is those two roundings: 2u · max|V| (u = 2^-11 for f16, 2^-8 for bf16),
plus 2^-16 · max|V| for the f32 exponentials and scale products; with power-of-two
scales the result is the bits of an f16 cache holding the decoded values."""

import warnings

import ml_dtypes
import numpy as np
import pytest

from tilelang import dtypes
from tilelang.analysis.replication import ReplicatedOperandWarning
from tilelang.cli import launch_facts
from tilelang.dtypes import pack_codes
from tilelang.kernels import flash_attention
from tilelang.kernels.attention import default_tiles, flash_attention_varlen_kernel
from tilelang.kernels.paged_prefill import paged_prefill_kernel
from tilelang.passes import plan_registers

HEADS, KV_HEADS, D = 8, 2, 32  # GQA 4


def reference(q, k_cache, v_cache, table, cu_q, counts, causal, scale, window=(-1, -1),
              softcap=0.0, slopes=None):  # fmt: skip
    """(o [total_q, H, D], lse [H, total_q]) in float64, from the module docstring's
    definitions: each sequence's keys gathered page by page from its table row."""
    q = np.asarray(q, np.float64)
    total, heads, _ = q.shape
    group = heads // k_cache.shape[2]
    bs = k_cache.shape[1]
    out, lse = np.zeros(q.shape), np.full((heads, total), -np.inf)
    for b, sk in enumerate(counts):
        first, sq = int(cu_q[b]), int(cu_q[b + 1] - cu_q[b])
        pages = [int(table[b, t // bs]) for t in range(sk)]
        keys = np.array([k_cache[p, t % bs] for t, p in enumerate(pages)], np.float64)
        values = np.array([v_cache[p, t % bs] for t, p in enumerate(pages)], np.float64)
        for i in range(sq):
            position = i + sk - sq
            behind = position - np.arange(sk)  # how far each key lies left of the query
            sees = np.ones(sk, bool)
            left, right = window[0], 0 if causal else window[1]
            if left >= 0:
                sees &= behind <= left
            if right >= 0:
                sees &= -behind <= right
            if not sees.any():
                continue
            for h in range(heads):
                s = scale * keys[:, h // group] @ q[first + i, h]
                if softcap > 0:
                    s = softcap * np.tanh(s / softcap)
                if slopes is not None:
                    s = s - (slopes[h] if slopes.ndim == 1 else slopes[b, h]) * np.abs(behind)
                s = s[sees]
                w = np.exp(s - s.max())
                out[first + i, h] = w @ values[sees, h // group] / w.sum()
                lse[h, first + i] = s.max() + np.log(w.sum())
    return out, lse


def paged_batch(query_counts, prefixes, block_size, dtype=np.float16, seed=0, kv_heads=KV_HEADS):
    """q, caches, table, cu_seqlens_q and key counts: sequence b has prefixes[b] cached
    keys and query_counts[b] new ones (both in the cache, as vLLM writes the new tokens
    first); its pages are taken from a shuffled pool (with 3 pages no sequence uses),
    and table entries past them point anywhere (here: page 0). Every cache slot no
    sequence uses holds NaN."""
    rng = np.random.default_rng(seed)
    counts = [p + n for p, n in zip(prefixes, query_counts, strict=True)]
    need = [-(-n // block_size) for n in counts]
    blocks = sum(need) + 3
    shape = (blocks, block_size, kv_heads, D)
    k_cache, v_cache = (np.full(shape, np.nan, dtype) for _ in "kv")
    table = np.zeros((len(counts), max(need) + 2), np.int32)
    pool = rng.permutation(blocks)
    for b, n in enumerate(counts):
        table[b, : need[b]], pool = pool[: need[b]], pool[need[b] :]
        for t in range(n):
            slot = (table[b, t // block_size], t % block_size)
            k_cache[slot], v_cache[slot] = rng.standard_normal((2, kv_heads, D)).astype(dtype)
    cu_q = np.concatenate([[0], np.cumsum(query_counts)]).astype(np.int32)
    q = rng.standard_normal((int(cu_q[-1]), HEADS, D)).astype(dtype)
    return q, k_cache, v_cache, table, cu_q, np.array(counts, np.int32)


def assert_matches(got, want, atol=4e-3):
    (out, lse), (want_out, want_lse) = got, want
    assert np.isfinite(np.asarray(out, np.float64)).all()
    # P is rounded to f16/bf16 before P·V: a few units of its last place
    np.testing.assert_allclose(np.asarray(out, np.float64), want_out, atol=atol, rtol=0)
    assert (np.isneginf(lse) == np.isneginf(want_lse)).all()
    seen = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[seen], want_lse[seen], atol=1e-3, rtol=0)


MIXED = ([0, 1, 7, 70], [5, 37, 0, 19])  # empty, decode, a chunk, a prefill; odd prefixes


@pytest.mark.parametrize(
    "block_size, causal",
    # D 32: 64 keys a causal step, 128 over every key; pages below, at and above them
    [(8, True), (16, False), (64, True), (256, False)],
)
def test_matches_the_float64_reference_with_nan_in_every_unused_slot(block_size, causal):
    q, k_cache, v_cache, table, cu_q, counts = paged_batch(*MIXED, block_size)
    got = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=causal, return_lse=True,
    )  # fmt: skip
    want = reference(q, k_cache, v_cache, table, cu_q, counts, causal, D**-0.5)
    assert_matches(got, want)
    assert np.isneginf(got[1][:, cu_q[2] : cu_q[3]]).sum() == 0  # the decode row sees keys


def test_bf16_mqa_and_a_query_chunk_longer_than_its_keys():
    """bf16, one KV head (MQA); sequence 1 has more queries than keys (bottom-right
    causal: its first queries see nothing, o = 0, lse = -inf)."""
    q, k_cache, v_cache, table, cu_q, counts = paged_batch(
        [3, 9], [4, 0], 16, ml_dtypes.bfloat16, kv_heads=1
    )
    counts[1] = 5  # 9 queries over the first 5 of its 9 written keys
    got = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=True, scale=0.3, return_lse=True,
    )  # fmt: skip
    want = reference(q, k_cache, v_cache, table, cu_q, counts, True, 0.3)
    assert np.isneginf(want[1]).any()
    assert_matches(got, want, atol=2e-2)


def test_window_softcap_and_alibi_per_sequence():
    q, k_cache, v_cache, table, cu_q, counts = paged_batch(*MIXED, 16, seed=1)
    slopes = np.random.default_rng(2).uniform(0.01, 0.2, (4, HEADS)).astype(np.float32)
    options = dict(window_size=(21, 3), softcap=2.5, alibi_slopes=slopes)
    got = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        return_lse=True, **options,
    )  # fmt: skip
    want = reference(q, k_cache, v_cache, table, cu_q, counts, False, D**-0.5, (21, 3), 2.5, slopes)
    assert_matches(got, want)
    got = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=True, window_size=(40, -1), alibi_slopes=slopes[0], return_lse=True,
    )  # fmt: skip
    want = reference(
        q, k_cache, v_cache, table, cu_q, counts, True, D**-0.5, (40, -1), 0, slopes[0]
    )
    assert_matches(got, want)


def test_cu_seqlens_k_gives_the_bits_of_seqused_k_and_of_the_packed_varlen_kernel():
    """flash-attn's form (key counts as offsets) and vLLM's (seqused_k) are one call;
    and the keys gathered into packed k and v give the varlen kernel the same bits
    (the same loop and key steps over the same values)."""
    q, k_cache, v_cache, table, cu_q, counts = paged_batch(*MIXED, 8, seed=3)
    cu_k = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    call = dict(cu_seqlens_q=cu_q, block_table=table, causal=True, return_lse=True)
    by_counts = flash_attention(q, k_cache, v_cache, seqused_k=counts, **call)
    by_offsets = flash_attention(q, k_cache, v_cache, cu_seqlens_k=cu_k, max_seqlen_k=89, **call)
    packed_k, packed_v, _ = packed_keys(k_cache, v_cache, table, counts)
    packed = flash_attention(
        q, packed_k, packed_v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, return_lse=True
    )
    for got in (by_offsets, packed):
        np.testing.assert_array_equal(got[0].view(np.int16), by_counts[0].view(np.int16))
        np.testing.assert_array_equal(got[1], by_counts[1])


def packed_keys(k_cache, v_cache, table, counts):
    """Each sequence's keys gathered from its pages into packed k, v (the varlen layout)
    and their offsets cu_seqlens_k."""
    bs = k_cache.shape[1]
    slots = [(table[b, t // bs], t % bs) for b, n in enumerate(counts) for t in range(n)]
    packed_k, packed_v = (np.stack([c[s] for s in slots]) for c in (k_cache, v_cache))
    return packed_k, packed_v, np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


@pytest.mark.parametrize("block_size", [8, 64])  # a table gather a step; one page a step
def test_the_interpreter_gives_the_cpu_backends_bits_up_to_the_exponentials(block_size):
    """The interpreter runs the same kernel: the varlen kernel's bits over the packed
    keys there too, and the CPU backend's within the ulps by which `tl.fast_exp2` and
    `tl.log` may differ between backends (docs/design.md §10: "2^x within 2 ulps"; the
    varlen kernel's own two paths differ as much)."""
    q, k_cache, v_cache, table, cu_q, counts = paged_batch([2, 1, 0], [9, 3, 4], block_size, seed=4)
    call = dict(cu_seqlens_q=cu_q, causal=True, return_lse=True, softcap=5.0)
    paged = dict(seqused_k=counts, block_table=table)
    interpreted = flash_attention(q, k_cache, v_cache, **call, **paged, interpret=True)
    packed_k, packed_v, cu_k = packed_keys(k_cache, v_cache, table, counts)
    varlen = flash_attention(q, packed_k, packed_v, **call, cu_seqlens_k=cu_k, interpret=True)
    np.testing.assert_array_equal(interpreted[0].view(np.int16), varlen[0].view(np.int16))
    np.testing.assert_array_equal(interpreted[1].view(np.int32), varlen[1].view(np.int32))
    compiled = flash_attention(q, k_cache, v_cache, **call, **paged)
    ulps = np.abs(compiled[0].view(np.int16).astype(int) - interpreted[0].view(np.int16))
    assert ulps.max() <= 2, ulps.max()
    np.testing.assert_allclose(compiled[1], interpreted[1], rtol=4e-7, atol=0)
    want = reference(q, k_cache, v_cache, table, cu_q, counts, True, D**-0.5, softcap=5.0)
    assert_matches(interpreted, want)


def bad_call(**change):
    q, k_cache, v_cache, table, cu_q, counts = paged_batch([2, 3], [5, 20], 8, seed=5)
    call = dict(q=q, k=k_cache, v=v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table)
    call |= change
    return flash_attention(call.pop("q"), call.pop("k"), call.pop("v"), **call)


BASE = paged_batch([2, 3], [5, 20], 8, seed=5)


def page(b, j, value):
    """BASE's block table with entry [b, j] set to `value`."""
    table = BASE[3].copy()
    table[b, j] = value
    return table


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(block_table=page(1, 2, 99)), ValueError,
         r"block_table\[1\] names page 99 for its first 23 tokens; pages are 0\.\.6 "
         r"\(num_blocks = 7\)"),
        (dict(block_table=page(0, 0, -1)), ValueError, r"block_table\[0\] names page -1"),
        (dict(seqused_k=np.array([7, 41], np.int32)), ValueError,
         r"seqused_k\[1\] = 41 must be in 0\.\.max_blocks · block_size = 5 · 8 = 40"),
        (dict(seqused_k=np.array([7, 23], np.int32), max_seqlen_k=20), ValueError,
         r"seqused_k\[1\] = 23 is above max_seqlen_k = 20"),
        (dict(seqused_k=None), ValueError, "seqused_k .* or cu_seqlens_k .*exactly one.*neither"),
        (dict(cu_seqlens_k=np.array([0, 7, 30], np.int32)), ValueError, "exactly one.*got both"),
        (dict(seqused_k=None, cu_seqlens_k=np.array([0, 7, 5], np.int32)), ValueError,
         r"cu_seqlens_k must rise from 0 without decreasing, got \[0, 7, 5\]"),
        (dict(seqused_k=None, cu_seqlens_k=np.array([0, 7, 50], np.int32)), ValueError,
         r"np.diff\(cu_seqlens_k\)\[1\] = 43 must be in 0\.\.max_blocks"),
        (dict(cu_seqlens_q=None), ValueError, "block_table.* needs cu_seqlens_q: int32"),
        (dict(block_table=None), ValueError, "seqused_k goes with block_table"),
        (dict(block_table=BASE[3][:1]), ValueError,
         r"block_table must have shape \[2, max_blocks\], got shape \[1, 5\]"),
        (dict(block_table=BASE[3].astype(np.int64)), TypeError,
         "block_table must hold one of i32, got int64"),
        (dict(seqused_k=BASE[5][:1]), ValueError, r"seqused_k must have shape \[2\], got shape \[1\]"),
        (dict(k=BASE[1].astype(np.float32)), TypeError,
         r"k_cache must hold q's dtype \(f16\), f8e4m3 \(float8_e4m3fn\) or f8e5m2 "
         r"\(float8_e5m2\), got f32"),
        (dict(v=BASE[2][:, :, :1]), ValueError,
         r"v_cache must have shape \[\d+, 8, 2, 32\], got shape \[\d+, 8, 1, 32\]"),
        (dict(k=BASE[1][0]), ValueError, r"k_cache must have shape \[num_blocks, block_size"),
        (dict(k=BASE[1].reshape(-1, 4, KV_HEADS, D), v=BASE[2].reshape(-1, 4, KV_HEADS, D)),
         ValueError, "block_size must be a power of two >= 8, got 4"),
        (dict(k=BASE[1][:, :6], v=BASE[2][:, :6]), ValueError,
         "block_size must be a power of two >= 8, got 6"),
        (dict(max_seqlen_q=2), ValueError, "max_seqlen_q = 2 is below the longest query sequence, 3"),
        (dict(cu_seqlens_q=np.array([0, 2, 4], np.int32)), ValueError,
         r"cu_seqlens_q must rise from 0 to the packed length 5"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named_before_a_launch(change, error, message):
    with pytest.raises(error, match=message):
        bad_call(**change)


F8 = {"f8e4m3": ml_dtypes.float8_e4m3fn, "f8e5m2": ml_dtypes.float8_e5m2}


def f8_batch(query_counts, prefixes, block_size, cache, per_head, dtype=np.float16, seed=0):
    """`paged_batch`'s sequences over an f8 cache: each value divided by its scale and
    rounded to the f8 type (ml_dtypes), so every unused slot holds a NaN code. Returns
    (q, k codes, v codes, table, cu_seqlens_q, key counts, {k_scale, v_scale} as a call
    takes them: a number, or f32 [H_kv] where `per_head[name]`, and the decoded caches
    code · scale in float64)."""
    q, k, v, table, cu_q, counts = paged_batch(query_counts, prefixes, block_size, dtype, seed)
    rng = np.random.default_rng(seed + 100)
    codes, scales, decoded = [], {}, []
    for name, values in (("k", k), ("v", v)):
        if per_head[name]:
            scale = rng.uniform(0.02, 0.2, KV_HEADS).astype(np.float32)
        else:
            scale = float(np.float32(rng.uniform(0.02, 0.2)))
        heads = np.broadcast_to(np.asarray(scale, np.float64), (KV_HEADS,))[:, None]
        code = (values.astype(np.float64) / heads).astype(F8[cache])
        codes.append(code)
        scales[f"{name}_scale"] = scale
        decoded.append(code.astype(np.float64) * heads)
    return q, *codes, table, cu_q, counts, scales, *decoded


@pytest.mark.parametrize(
    "cache, per_head, block_size, causal, dtype",
    [
        ("f8e4m3", dict(k=False, v=False), 16, True, np.float16),  # vLLM's per-tensor scales
        ("f8e5m2", dict(k=True, v=True), 8, False, ml_dtypes.bfloat16),
        ("f8e4m3", dict(k=True, v=False), 64, True, ml_dtypes.bfloat16),  # one of each
    ],
)  # fmt: skip
def test_an_f8_cache_matches_the_float64_reference_of_its_decoded_values(
    cache, per_head, block_size, causal, dtype
):
    """Mixed query counts (0, 1, 7, 70), GQA 4, NaN codes in every unused slot."""
    q, k_codes, v_codes, table, cu_q, counts, scales, k_ref, v_ref = f8_batch(
        *MIXED, block_size, cache, per_head, dtype
    )
    got = flash_attention(
        q, k_codes, v_codes, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=causal, return_lse=True, **scales,
    )  # fmt: skip
    assert got[0].dtype == q.dtype
    want = reference(q, k_ref, v_ref, table, cu_q, counts, causal, D**-0.5)
    u = 2.0**-8 if dtype == ml_dtypes.bfloat16 else 2.0**-11
    assert_matches(got, want, atol=(2 * u + 2.0**-16) * np.nanmax(np.abs(v_ref)))


@pytest.mark.parametrize("cache", ["f8e4m3", "f8e5m2"])
def test_power_of_two_scales_give_the_bits_of_an_f16_cache_on_both_backends(cache):
    """Scaling by a power of two commutes with every rounding, so an f8 cache whose
    scales are powers of two gives exactly the bits of an f16 cache holding its decoded
    values (code · scale, exact in f16), on the CPU backend and on the interpreter; the
    two backends differ by the exponentials' ulps at most, as the f16 kernel's do."""
    q, k, v, table, cu_q, counts = paged_batch([3, 1, 0, 40], [9, 30, 5, 17], 16, seed=7)
    k_scale, v_scale = np.array([2.0**-3, 2.0], np.float32), 0.25
    k_codes = (k.astype(np.float32) / k_scale[:, None]).astype(F8[cache])
    v_codes = (v.astype(np.float32) / v_scale).astype(F8[cache])
    k_plain = (k_codes.astype(np.float64) * k_scale[:, None]).astype(np.float16)
    v_plain = (v_codes.astype(np.float64) * v_scale).astype(np.float16)
    exact = k_codes.astype(np.float64) * k_scale[:, None]
    np.testing.assert_array_equal(k_plain.astype(np.float64), exact)  # NaN where NaN
    call = dict(cu_seqlens_q=cu_q, seqused_k=counts, block_table=table, causal=True)
    call |= dict(return_lse=True)
    runs = {}
    for interpret in (False, True):
        scaled = dict(k_scale=k_scale, v_scale=v_scale, interpret=interpret)
        got = flash_attention(q, k_codes, v_codes, **call, **scaled)
        plain = flash_attention(q, k_plain, v_plain, **call, interpret=interpret)
        np.testing.assert_array_equal(got[0].view(np.int16), plain[0].view(np.int16))
        np.testing.assert_array_equal(got[1].view(np.int32), plain[1].view(np.int32))
        runs[interpret] = got
    ulps = np.abs(runs[False][0].view(np.int16).astype(int) - runs[True][0].view(np.int16))
    assert ulps.max() <= 2, ulps.max()
    np.testing.assert_allclose(runs[False][1], runs[True][1], rtol=4e-7, atol=0)


def test_vllms_unit_scales_leave_a_cache_of_qs_dtype_as_it_is():
    """vLLM passes k_scale = v_scale = 1 for an unquantized cache: the same bits."""
    q, k_cache, v_cache, table, cu_q, counts = BASE
    call = dict(cu_seqlens_q=cu_q, seqused_k=counts, block_table=table, causal=True)
    plain = flash_attention(q, k_cache, v_cache, **call)
    unit = flash_attention(q, k_cache, v_cache, **call, k_scale=1.0, v_scale=np.ones(2))
    np.testing.assert_array_equal(unit.view(np.int16), plain.view(np.int16))


F8_BASE = f8_batch([2, 3], [5, 20], 8, "f8e4m3", dict(k=False, v=True), seed=5)


def f8_call(**change):
    q, k_codes, v_codes, table, cu_q, counts, scales, _, _ = F8_BASE
    call = dict(q=q, k=k_codes, v=v_codes, cu_seqlens_q=cu_q, seqused_k=counts)
    call |= dict(block_table=table, **scales) | change
    return flash_attention(call.pop("q"), call.pop("k"), call.pop("v"), **call)


U8 = np.zeros(BASE[1].shape, np.uint8)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(k_scale=None), ValueError,
         r"k_scale is needed with an f8e4m3 cache \(a number, or f32 \[H_kv\]\)"),
        (dict(v_scale=None), ValueError, "v_scale is needed with an f8e4m3 cache"),
        (dict(v_scale=np.ones(3, np.float32)), ValueError,
         r"v_scale must be one number or hold one per KV head \(\[2\]\), got shape \[3\]"),
        (dict(k_scale=np.ones((2, 2), np.float32)), ValueError,
         r"k_scale must be one number or hold one per KV head \(\[2\]\), got shape \[2, 2\]"),
        (dict(k_scale=np.array([0.1, 0.2j], np.complex64)), TypeError,
         r"k_scale must hold real numbers \(f32 preferred\), got complex64"),
        (dict(v_scale=np.array([True, False])), TypeError, "v_scale must hold real numbers"),
        (dict(k_scale="0.5"), TypeError,
         "k_scale must be a numpy array .* or a device tensor, got str"),
        (dict(k_scale=float("inf")), ValueError, "k_scale must be finite"),
        (dict(k_zero=np.ones(1)), TypeError, "unexpected keyword argument 'k_zero'"),
        (dict(v=BASE[2]), TypeError, r"v_cache must have k_cache's dtype \(f8e4m3\), got f16"),
        (dict(k=BASE[1], v=BASE[2], k_scale=0.5, v_scale=None), ValueError,
         r"k_scale must be 1 or absent: an unquantized cache \(f16\) is used as it is"),
        (dict(k=U8, v=U8), TypeError,
         r"k_cache holds u8 codes: .* f8e4m3 \(float8_e4m3fn\) or f8e5m2 \(float8_e5m2\) "
         r"with k_scale and v_scale; u8/u4 caches .* paged_decode_attention only"),
        (dict(k=pack_codes(U8, "u4"), v=pack_codes(U8, "u4")),
         TypeError, "k_cache holds u4 codes"),
        (dict(k=BASE[1].astype(ml_dtypes.float8_e4m3fnuz)), TypeError,
         r"got float8_e4m3fnuz; the fnuz f8 types"),
        (dict(block_table=None, seqused_k=None, cu_seqlens_k=np.array([0, 7, 30], np.int32)),
         ValueError, "k_scale and v_scale go with a paged cache"),
    ],
)  # fmt: skip
def test_bad_scales_and_caches_are_named_before_a_launch(change, error, message):
    with pytest.raises(error, match=message):
        f8_call(**change)


def built(kernel, arch, launch, **constexprs):
    """The build a launch of these sizes gets (its size facts), with no warning."""
    facts = launch_facts(kernel, constexprs, launch)
    with warnings.catch_warnings():  # the library's tiles give its callers no warning
        warnings.simplefilter("error", plan_registers.RegisterSpillWarning)
        warnings.simplefilter("error", ReplicatedOperandWarning)
        return kernel.compile(assume=facts, target=arch, **constexprs)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_a_vllm_shape_compiles_without_spills_beside_the_varlen_kernel(arch):
    """8 sequences of 2048 cached + 512 new tokens, 32 query heads over 8 KV heads, D
    128, 16-token pages, causal: the tiles a call picks, K and V by cp.async (gathered
    rows, pipelined with their table entries), 0 spills; the static report within 15%
    of the varlen kernel's over packed keys (docs/design.md §10 records the numbers).
    An f8e4m3 cache with per-head scales (both read): 0 spills, its codes by cp.async,
    within 25% of the f16 cache's (each step's codes converted through shared memory:
    192.8 against 161.1 us on sm_90a, 690.7 against 610.9 on sm_80)."""
    batch, cached, new, heads, kv_heads, d, bs = 8, 2048, 512, 32, 8, 128, 16
    tiles = default_tiles(d, batch * heads, new, every_key=False)
    rows = batch * (cached + new)
    # a block's causal loop: its keys up to its last row's diagonal, on average
    steps = -(-(cached + new // 2 + tiles["BM"] // 2) // tiles["BN"])
    launch = dict(TQ=batch * new, H=heads, D=d, HK=kv_heads, B1=batch + 1, HL=heads)
    launch |= dict(TL=batch * new, scale=d**-0.5, MQ=new)
    reports = {}
    paged = dict(R=rows, NL=batch, NT=batch, MB=rows // batch // bs)
    f8 = dict(BS=bs, KT=dtypes.f8e4m3, K_HEAD=True, V_HEAD=True, PER_HEAD=1)
    for name, kernel, sizes, extra in (
        ("paged", paged_prefill_kernel, paged, dict(BS=bs)),
        ("paged f8", paged_prefill_kernel, paged, f8),
        ("varlen", flash_attention_varlen_kernel, dict(TK=rows), {}),
    ):  # fmt: skip
        constexprs = dict(T=dtypes.f16, CAUSAL=True, LSE=True, **tiles, **extra)
        build = built(kernel, arch, launch | sizes, **constexprs)
        assert build.resources.spills == 0, build.resources
        assert build.stats["pipeline_async"] == 2  # K and V
        report = build.perf(iterations=steps, **launch, **sizes)
        reports[name] = (build.resources.registers, round(report.predicted_seconds * 1e6, 1))
    print(arch, "(registers, predicted us):", reports)
    assert reports["paged"][1] <= 1.15 * reports["varlen"][1], reports
    assert reports["paged f8"][1] <= 1.25 * reports["paged"][1], reports


def test_the_torch_op_takes_block_table_and_seqused_k_and_passes_opcheck():
    torch = pytest.importorskip("torch")
    import tilelang.torch.kernels as tk

    q, k_cache, v_cache, table, cu_q, counts = paged_batch([1, 7], [30, 2], 16, seed=6)
    k_cache, v_cache = (np.nan_to_num(c) for c in (k_cache, v_cache))  # opcheck compares
    tensors = [torch.from_numpy(x) for x in (q, k_cache, v_cache, cu_q, counts, table)]
    tq, tk_cache, tv_cache, tcu_q, tcounts, ttable = tensors
    out, lse = tk.flash_attention(
        tq, tk_cache, tv_cache, cu_seqlens_q=tcu_q, seqused_k=tcounts, block_table=ttable,
        causal=True, return_lse=True,
    )  # fmt: skip
    direct = flash_attention(
        q, k_cache, v_cache, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=True, return_lse=True,
    )  # fmt: skip
    np.testing.assert_array_equal(out.numpy().view(np.int16), direct[0].view(np.int16))
    np.testing.assert_array_equal(lse.numpy(), direct[1])
    op = torch.ops.tilelang.flash_attention_varlen.default
    args = (tq, tk_cache, tv_cache, tcu_q, None, 7, True, None, True, -1, -1, 0.0, None)
    torch.library.opcheck(op, (*args, tcounts, ttable))
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in tensors]
        o, fake_lse = op(
            *fake[:3], fake[3], None, 7, True, None, True, -1, -1, 0.0, None, *fake[4:]
        )
    assert (o.shape, o.dtype, fake_lse.shape) == (tq.shape, tq.dtype, (HEADS, 8))
    with pytest.raises(ValueError, match="needs cu_seqlens_q"):
        tk.flash_attention(tq, tk_cache, tv_cache, seqused_k=tcounts, block_table=ttable)


def test_the_torch_op_takes_an_f8_cache_with_its_scales_and_passes_opcheck():
    """float8_e4m3fn caches, k_scale per KV head (a tensor) and v_scale a number: the
    direct call's bits; opcheck as for paged decode's f8 op (torch lacks the CPU f8
    arithmetic its schema test compares inputs with: the no-mutation law is checked
    here on the bytes)."""
    torch = pytest.importorskip("torch")
    import tilelang.torch.kernels as tk

    q, k_codes, v_codes, table, cu_q, counts, scales, _, _ = f8_batch(
        [1, 7], [30, 2], 16, "f8e4m3", dict(k=True, v=False), seed=6
    )
    f8 = [torch.from_numpy(c.view(np.uint8)).view(torch.float8_e4m3fn) for c in (k_codes, v_codes)]
    tq, tcu_q, tcounts, ttable = (torch.from_numpy(x) for x in (q, cu_q, counts, table))
    k_scale, v_scale = torch.from_numpy(scales["k_scale"]), scales["v_scale"]
    paged = dict(cu_seqlens_q=tcu_q, seqused_k=tcounts, block_table=ttable, causal=True)
    out, lse = tk.flash_attention(
        tq, *f8, **paged, return_lse=True, k_scale=k_scale, v_scale=v_scale
    )
    direct = flash_attention(
        q, k_codes, v_codes, cu_seqlens_q=cu_q, seqused_k=counts, block_table=table,
        causal=True, return_lse=True, **scales,
    )  # fmt: skip
    np.testing.assert_array_equal(out.numpy().view(np.int16), direct[0].view(np.int16))
    np.testing.assert_array_equal(lse.numpy(), direct[1])
    before = [c.view(torch.uint8).clone() for c in f8]
    op = torch.ops.tilelang.flash_attention_varlen.default
    args = (tq, *f8, tcu_q, None, 7, True, None, True, -1, -1, 0.0, None, tcounts, ttable)
    args += (k_scale, torch.tensor([v_scale]))
    laws = ("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(op, args, test_utils=laws)
    assert all(torch.equal(c.view(torch.uint8), b) for c, b in zip(f8, before, strict=True))
    with pytest.raises(ValueError, match="k_scale is needed with an f8e4m3 cache"):
        tk.flash_attention(tq, *f8, **paged, v_scale=v_scale)
    with pytest.raises(ValueError, match="k_scale and v_scale go with a paged cache"):
        tk.flash_attention(tq[None], tq[None], tq[None], k_scale=0.5)
