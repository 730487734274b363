"""`tilelang.kernels.flash_attention` against a numpy float64 reference written from
the definition: o = softmax(scale · q kᵀ) v per (batch, head), key/value head
h // (H / H_kv), the causal mask aligned to the bottom right, o = 0 and lse = -inf for
a query that sees no key. Tiny shapes run on the interpreter, the rest on the CPU
backend."""

import re

import ml_dtypes
import numpy as np
import pytest

from tilelang.kernels import attention, flash_attention


def reference(q, k, v, causal=False, scale=None):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch, sq, heads, d = q.shape
    sk, kv_heads = k.shape[1], k.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    out = np.zeros((batch, sq, heads, d))
    lse = np.full((batch, heads, sq), -np.inf)
    for b in range(batch):
        for h in range(heads):
            kv = h // (heads // kv_heads)
            for i in range(sq):
                seen = [j for j in range(sk) if not causal or j <= i + sk - sq]
                if not seen:
                    continue
                scores = np.array([scale * q[b, i, h] @ k[b, j, kv] for j in seen])
                weights = np.exp(scores - scores.max())
                out[b, i, h] = weights @ v[b, seen, kv] / weights.sum()
                lse[b, h, i] = scores.max() + np.log(weights.sum())
    return out, lse


def inputs(batch, sq, sk, heads, kv_heads, d, dtype=np.float16, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, sq, heads, d)).astype(dtype)
    k = rng.standard_normal((batch, sk, kv_heads, d)).astype(dtype)
    v = rng.standard_normal((batch, sk, kv_heads, d)).astype(dtype)
    return q, k, v


def check_against_reference(q, k, v, causal, interpret, scale=None):
    out, lse = flash_attention(
        q, k, v, causal=causal, scale=scale, return_lse=True, interpret=interpret
    )
    want, want_lse = reference(q, k, v, causal, scale)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == np.float32 and lse.shape == want_lse.shape
    # P is rounded to the input type before P·V: a few units of its last place
    tolerance = 2e-2 if q.dtype == ml_dtypes.bfloat16 else 3e-3
    np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=tolerance, rtol=0)
    assert (np.isinf(lse) == np.isinf(want_lse)).all()
    finite = np.isfinite(want_lse)
    np.testing.assert_allclose(lse[finite], want_lse[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [8, 2, 1])  # GQA ratios 1, 4 and 8
@pytest.mark.parametrize("sq, sk", [(1, 1), (7, 7), (7, 1), (1, 7), (5, 7)])
def test_matches_the_definition_on_the_interpreter(sq, sk, kv_heads, causal):
    q, k, v = inputs(1, sq, sk, 8, kv_heads, 16)
    check_against_reference(q, k, v, causal, interpret=True)


def test_queries_that_see_no_key_give_zero_and_an_lse_of_minus_infinity():
    q, k, v = inputs(1, 7, 3, 2, 1, 16)  # causal, Sk < Sq: queries 0..3 see nothing
    out, lse = flash_attention(q, k, v, causal=True, return_lse=True, interpret=True)
    assert (out[0, :4] == 0).all() and np.isneginf(lse[0, :, :4]).all()
    assert np.isfinite(lse[0, :, 4:]).all()


def test_a_causal_block_reads_no_key_past_its_last_rows_diagonal():
    """Keys 64.. hold NaN: the first 64-row block must not read them (a masked key that
    is read still poisons P·V with 0 · NaN); its rows see keys 0..63 only, so they equal
    the definition over those keys."""
    q, k, v = inputs(1, 256, 256, 2, 2, 64)
    k[:, 64:], v[:, 64:] = np.nan, np.nan
    out = flash_attention(q, k, v, causal=True)  # default tiles: BM = 64 at D = 64
    want, _ = reference(q[:, :64], k[:, :64], v[:, :64], causal=True)
    np.testing.assert_allclose(np.asarray(out[:, :64], np.float64), want, atol=3e-3, rtol=0)
    assert np.isnan(np.asarray(out[:, 64:], np.float64)).all()  # later rows do see them


@pytest.mark.parametrize(
    "batch, sq, sk, heads, kv_heads, d, causal",
    [
        (2, 100, 257, 4, 1, 64, True),  # MQA, ragged lengths, the causal mask
        (1, 257, 100, 8, 2, 128, False),  # GQA 4
        (1, 7, 257, 8, 1, 256, True),  # GQA 8, the largest head dimension
    ],
)
def test_matches_the_definition_on_the_cpu_backend(batch, sq, sk, heads, kv_heads, d, causal):
    q, k, v = inputs(batch, sq, sk, heads, kv_heads, d)
    check_against_reference(q, k, v, causal, interpret=False)


def test_bf16_and_an_explicit_scale_on_the_cpu_backend():
    q, k, v = inputs(1, 100, 100, 4, 4, 64, ml_dtypes.bfloat16, seed=1)
    check_against_reference(q, k, v, True, interpret=False, scale=0.3)


def test_returns_only_the_output_without_return_lse():
    q, k, v = inputs(1, 7, 7, 2, 2, 16)
    out = flash_attention(q, k, v, interpret=True)
    np.testing.assert_allclose(np.asarray(out, np.float64), reference(q, k, v)[0], atol=3e-3)


@pytest.mark.parametrize(
    "change, error, words",
    [
        (
            dict(k=np.zeros((1, 7, 3, 16), np.float16), v=np.zeros((1, 7, 3, 16), np.float16)),
            ValueError,
            "must divide",
        ),
        (dict(v=np.zeros((1, 6, 2, 16), np.float16)), ValueError, "v must have shape"),
        (dict(k=np.zeros((1, 7, 2, 16), np.float32)), TypeError, "k must hold"),
        (dict(q=np.zeros((1, 7, 4, 16), np.float32)), TypeError, "q must hold"),
        (dict(q=np.zeros((1, 7, 4, 512), np.float16)), ValueError, "k must have shape"),
        (dict(scale=float("nan")), ValueError, "scale must be a finite number"),
    ],
)
def test_bad_arguments_are_named_before_any_launch(change, error, words):
    q, k, v = inputs(1, 7, 7, 4, 2, 16)
    args = dict(q=q, k=k, v=v) | change
    with pytest.raises(error, match=words):
        flash_attention(**args, interpret=True)


F16 = np.float16
CU = np.array([0, 7], np.int32)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (np.zeros((1, 7, 16), F16), np.zeros((1, 7, 2, 16), F16)),
            "q must have shape [batch, Sq, H, D], got shape [1, 7, 16]",
        ),
        (
            (np.zeros((1, 7, 4, 16), F16), np.zeros((1, 7, 2, 8), F16)),
            "k must have shape [1, Sk, H_kv, 16], got shape [1, 7, 2, 8] (D = 16 from q.shape[3])",
        ),
        (
            (np.zeros((1, 7, 4, 16), F16), np.zeros((7, 2, 16), F16), CU, CU),
            "q must have shape [total_q, H, D], got shape [1, 7, 4, 16]",
        ),
        (
            (np.zeros((7, 4, 16), F16), np.zeros((7, 2, 8), F16), CU, CU),
            "k must have shape [total_k, H_kv, 16], got shape [7, 2, 8] (D = 16 from q.shape[2])",
        ),
        (
            (np.zeros((7, 4, 16), F16), np.zeros((7, 2, 16), F16), CU[None], CU),
            "cu_seqlens_q must have shape [batch + 1], got shape [1, 2]",
        ),
    ],
    ids=["q", "k", "varlen q", "varlen k", "cu_seqlens_q"],
)
def test_a_wrong_rank_names_each_dimension_it_expects(args, message):
    q, k, *cu = args
    varlen = dict(zip(("cu_seqlens_q", "cu_seqlens_k"), cu, strict=False))
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        flash_attention(q, k, k, **varlen, interpret=True)


def test_a_head_dimension_above_256_is_refused():
    q, k, v = inputs(1, 2, 2, 1, 1, 272)
    with pytest.raises(ValueError, match=re.escape("D must be in 1..256, got D = 272")):
        flash_attention(q, k, v, interpret=True)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "d", "hd", "words"),
    [
        (3, 2, 64, 64, "k's heads HK must divide q's heads H"),
        (2, 2, 80, 64, "the head dimension D is at most the padded HD"),
    ],
)
def test_the_kernels_check_heads_and_head_dimension_themselves(heads, kv_heads, d, hd, words):
    """An AOT launcher calls the kernels with no Python wrapper in front: the kernels'
    own launch checks refuse what the wrapper refuses, before anything runs."""
    q, k, v = inputs(1, 8, 8, heads, kv_heads, d)
    o = np.zeros_like(q)
    rest = (np.zeros((1, 1, 1), np.float32), np.zeros((1, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match=re.escape(words)):
        attention.flash_attention_kernel.interpret(q, k, v, o, *rest, HD=hd)
    cu = np.array([0, 8], np.int32)
    varlen = (q[0], k[0], v[0], cu, cu, o[0], np.zeros((1, 1), np.float32))
    with pytest.raises(ValueError, match=re.escape(words)):
        attention.flash_attention_varlen_kernel.interpret(
            *varlen, np.zeros((1, 1), np.float32), 1.0, 8, HD=hd
        )
    assert not o.any()


# --------------------------------------------------------------------------- varlen


def packed(lens_q, lens_k, heads, kv_heads, d, seed=0):
    """Packed q [total_q, H, D], k, v [total_k, H_kv, D] and their int32 offsets."""
    rng = np.random.default_rng(seed)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = rng.standard_normal((cu_q[-1], heads, d)).astype(np.float16)
    k = rng.standard_normal((cu_k[-1], kv_heads, d)).astype(np.float16)
    v = rng.standard_normal((cu_k[-1], kv_heads, d)).astype(np.float16)
    return q, k, v, cu_q, cu_k


def check_varlen(lens_q, lens_k, heads, kv_heads, d, causal, interpret):
    q, k, v, cu_q, cu_k = packed(lens_q, lens_k, heads, kv_heads, d)
    out, lse = flash_attention(
        q,
        k,
        v,
        causal=causal,
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=max(lens_q),
        max_seqlen_k=max(lens_k),
        return_lse=True,
        interpret=interpret,
    )
    assert out.shape == q.shape and lse.shape == (heads, q.shape[0])
    for b in range(len(lens_q)):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        want, want_lse = reference(q[None, rows], k[None, keys], v[None, keys], causal)
        got = np.asarray(out[rows], np.float64)
        np.testing.assert_allclose(got, want[0], atol=3e-3, rtol=0)
        assert (np.isinf(lse[:, rows]) == np.isinf(want_lse[0])).all()
        finite = np.isfinite(want_lse[0])
        np.testing.assert_allclose(lse[:, rows][finite], want_lse[0][finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 1])  # GQA ratios 1 and 4
def test_varlen_sequences_each_match_the_definition_on_the_interpreter(kv_heads, causal):
    # empty query and key sequences, a sequence with keys but no queries and the reverse
    check_varlen([3, 0, 5, 1, 0], [4, 2, 0, 7, 0], 4, kv_heads, 16, causal, interpret=True)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_sequences_of_1_7_100_257_match_the_definition_on_the_cpu_backend(causal):
    lens_q, lens_k = [1, 7, 0, 100, 257], [7, 1, 3, 257, 100]
    check_varlen(lens_q, lens_k, 8, 1, 64, causal, interpret=False)  # GQA 8


def test_varlen_without_max_seqlen_q_reads_it_from_host_offsets():
    q, k, v, cu_q, cu_k = packed([2, 5], [3, 3], 2, 2, 16)
    out = flash_attention(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, interpret=True)
    for b in range(2):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        want = reference(q[None, rows], k[None, keys], v[None, keys])[0][0]
        np.testing.assert_allclose(np.asarray(out[rows], np.float64), want, atol=3e-3)


@pytest.mark.parametrize(
    "change, error, words",
    [
        (dict(cu_seqlens_k=None), ValueError, "needs both cu_seqlens_q and cu_seqlens_k"),
        (dict(cu_seqlens_q=np.array([0, 2, 6], np.int32)), ValueError, "packed length 7"),
        (dict(cu_seqlens_q=np.array([0, 5, 2], np.int32)), ValueError, "without decreasing"),
        (dict(cu_seqlens_k=np.array([0, 6], np.int32)), ValueError, "cu_seqlens_k must have"),
        (dict(cu_seqlens_q=np.array([0, 2, 7], np.int64)), TypeError, "cu_seqlens_q must hold"),
        (dict(max_seqlen_q=4), ValueError, "below the longest query sequence, 5"),
        (dict(q=np.zeros((7, 3, 16), np.float16)), ValueError, "must divide"),
    ],
)
def test_bad_varlen_arguments_are_named_before_any_launch(change, error, words):
    q, k, v, cu_q, cu_k = packed([2, 5], [3, 3], 4, 2, 16)
    args = dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k) | change
    with pytest.raises(error, match=words):
        flash_attention(**args, interpret=True)


@pytest.mark.parametrize("interpret", [False, True], ids=["cpu", "interpreter"])
@pytest.mark.parametrize("causal", [False, True])
def test_a_nan_or_inf_in_one_sequence_reaches_no_other_sequence(causal, interpret):
    """Sequence 1's K and V hold a NaN and an inf: sequences 0 and 2 must each equal the
    definition over their own keys (flash-attn zero-fills the rows past a sequence's
    end; a block that read sequence 1's rows would get 0 · NaN in P·V)."""
    q, k, v, cu_q, cu_k = packed([10, 30, 5], [10, 30, 5], 2, 1, 16)
    k[20], v[25], v[12] = np.nan, np.nan, np.inf  # rows of sequence 1 (keys 10..39)
    out = flash_attention(
        q, k, v, causal=causal, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=30,
        interpret=interpret,
    )  # fmt: skip
    for b in (0, 2):
        rows, keys = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
        want = reference(q[None, rows], k[None, keys], v[None, keys], causal)[0][0]
        np.testing.assert_allclose(np.asarray(out[rows], np.float64), want, atol=3e-3, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sq, sk", [(50, 100), (7, 30), (30, 7)])
def test_rows_past_the_end_of_k_and_v_are_not_read(sq, sk, causal):
    """k and v are zero-copy views of longer arrays whose rows past Sk hold NaN (Sk not a
    multiple of any key step): no output may see them."""
    q, k, v = inputs(1, sq, sk, 2, 1, 16)
    longer = np.full((2, 1, sk + 256, 1, 16), np.nan, np.float16)
    longer[0, :, :sk], longer[1, :, :sk] = k, v
    views = longer[0, :, :sk], longer[1, :, :sk]
    assert all(view.flags.c_contiguous and view.base is longer for view in views)
    want, _ = reference(q, k, v, causal)
    for interpret in (False, True):
        out = flash_attention(q, *views, causal=causal, interpret=interpret)
        np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=3e-3, rtol=0)


def test_arguments_after_v_are_keyword_only():
    """flash-attn's positional call (dropout_p after v) and vLLM's (cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k) are refused, not read as causal and scale."""
    q, k, v = inputs(1, 7, 7, 2, 2, 16)
    with pytest.raises(TypeError, match="positional"):
        flash_attention(q, k, v, 0.1, interpret=True)
    cu = np.array([0, 7], np.int32)
    with pytest.raises(TypeError, match="positional"):
        flash_attention(q[0], k[0], v[0], cu, cu, 7, 7, interpret=True)


@pytest.mark.parametrize("causal", [0.1, 1, "True", None, np.float32(1)])
def test_causal_must_be_a_bool(causal):
    q, k, v = inputs(1, 7, 7, 2, 2, 16)
    message = f"causal must be a bool (True or False), got {type(causal).__name__} {causal!r}"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        flash_attention(q, k, v, causal=causal, interpret=True)


def test_a_numpy_bool_is_a_causal_flag():
    q, k, v = inputs(1, 7, 5, 2, 2, 16)
    out = flash_attention(q, k, v, causal=np.bool_(True), interpret=True)
    np.testing.assert_allclose(np.asarray(out, np.float64), reference(q, k, v, True)[0], atol=3e-3)


@pytest.mark.parametrize("name", ["k", "v"])
@pytest.mark.parametrize("varlen", [False, True])
def test_k_and_v_of_another_supported_dtype_are_named_as_unlike_q(name, varlen):
    q, k, v = inputs(1, 7, 7, 2, 2, 16)
    args = dict(q=q, k=k, v=v)
    args[name] = args[name].astype(ml_dtypes.bfloat16)
    if varlen:
        args = {key: x[0] for key, x in args.items()}
        cu = np.array([0, 7], np.int32)
        args |= dict(cu_seqlens_q=cu, cu_seqlens_k=cu)
    message = f"{name} must have q's dtype (f16), got bf16"
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        flash_attention(**args, interpret=True)


# --------------------------------------------------------------------------- odd head dims
# An odd D leaves each row of K and V 2-byte aligned: cp.async cannot copy it, so the
# call builds its key loop unpipelined (and at D 65..127 with 32 keys a step, K then
# passing through registers), rather than warn about its own source or run out of
# registers (D = 65 asked for about 340 a thread).


@pytest.mark.parametrize("d", [33, 65, 100, 129])
def test_odd_and_unpadded_head_dims_match_the_definition_and_warn_nothing(d):
    import warnings

    q, k, v = inputs(1, 70, 90, 4, 2, d, seed=d)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_against_reference(q, k, v, True, interpret=False)
        check_varlen([30, 40], [50, 40], 4, 2, d, False, interpret=False)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("d", [33, 65, 129])
def test_odd_head_dims_compile_without_spills_at_their_default_tiles(d, arch):
    from tilelang import dtypes
    from tilelang.cli import launch_facts
    from tilelang.kernels import attention

    constexprs = dict(T=dtypes.f16, CAUSAL=True, LSE=True, **attention.default_tiles(d))
    assert constexprs["STAGES"] == 1
    for kernel in (attention.flash_attention_kernel, attention.flash_attention_varlen_kernel):
        sizes = {var.name: 128 for var in kernel.specialize(**constexprs).sizes} | {"D": d}
        build = kernel.compile(
            assume=launch_facts(kernel, constexprs, sizes), target=arch, **constexprs
        )
        assert build.resources.spills == 0, (kernel.fn.__name__, build.resources)
