"""tilelang.torch.kernels' attention operators: ``tilelang::flash_attention``,
``tilelang::flash_attention_varlen`` and ``tilelang::paged_decode_attention`` give
bit for bit what `tilelang.kernels` gives on the same numpy views, pass torch's
opcheck, and their fake implementations give the real shapes and dtypes."""

import ml_dtypes
import numpy as np
import pytest
import torch

import tilelang.torch.kernels as tk
from tilelang import kernels

HALF = {torch.float16: np.float16, torch.bfloat16: ml_dtypes.bfloat16}


def tensor(rng, shape, dtype):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)


def host(t):
    """The tensor's values as the numpy array the kernel takes (bf16: ml_dtypes')."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    if t.dtype == torch.float8_e4m3fn:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)
    if t.dtype == torch.float8_e5m2:
        return t.view(torch.uint8).numpy().view(ml_dtypes.float8_e5m2)
    return t.numpy()


def bits(t):
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy()


def attention_f64(q, k, v, causal, scale):
    """softmax(scale · q·kᵀ) · v per head in float64, keys grouped per KV head; causal
    aligned to the bottom right (flash-attn's convention); and the log-sum-exp."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    nb, sq, heads, _ = q.shape
    sk, group = k.shape[1], heads // k.shape[2]
    out, lse = np.zeros(q.shape), np.zeros((nb, heads, sq))
    for b in range(nb):
        for h in range(heads):
            s = scale * q[b, :, h] @ k[b, :, h // group].T
            if causal:
                s[np.arange(sq)[:, None] + sk - sq < np.arange(sk)[None, :]] = -np.inf
            m = s.max(axis=1, keepdims=True)
            p = np.exp(s - m)
            out[b, :, h] = p @ v[b, :, h // group] / p.sum(axis=1, keepdims=True)
            lse[b, h] = (m + np.log(p.sum(axis=1, keepdims=True)))[:, 0]
    return out, lse


@pytest.mark.parametrize(
    "dtype, causal, return_lse", [(torch.float16, False, False), (torch.bfloat16, True, True)]
)
def test_flash_attention_op_is_the_kernel_bit_for_bit_and_passes_opcheck(dtype, causal, return_lse):
    rng = np.random.default_rng(1)
    q = tensor(rng, (2, 5, 4, 16), dtype)
    k, v = tensor(rng, (2, 7, 2, 16), dtype), tensor(rng, (2, 7, 2, 16), dtype)
    got = tk.flash_attention(q, k, v, causal=causal, scale=0.3, return_lse=return_lse)
    direct = kernels.flash_attention(
        host(q), host(k), host(v), causal=causal, scale=0.3, return_lse=return_lse
    )
    out, lse = got if return_lse else (got, None)
    expected = direct[0] if return_lse else direct
    assert out.dtype == dtype and out.shape == (2, 5, 4, 16)
    np.testing.assert_array_equal(bits(out), expected.view(np.int16))
    reference, reference_lse = attention_f64(*(x.float().numpy() for x in (q, k, v)), causal, 0.3)
    np.testing.assert_allclose(out.float().numpy(), reference, atol=2e-2, rtol=2e-2)
    if return_lse:
        assert lse.dtype == torch.float32 and lse.shape == (2, 4, 5)
        np.testing.assert_array_equal(lse.numpy(), direct[1])
        np.testing.assert_allclose(lse.numpy(), reference_lse, atol=1e-3, rtol=1e-3)
    torch.library.opcheck(
        torch.ops.tilelang.flash_attention.default, (q, k, v, causal, 0.3, return_lse)
    )


def test_flash_attention_varlen_op_is_the_kernel_bit_for_bit_and_passes_opcheck():
    rng = np.random.default_rng(2)
    q = tensor(rng, (7, 4, 16), torch.float16)
    k, v = tensor(rng, (9, 2, 16), torch.float16), tensor(rng, (9, 2, 16), torch.float16)
    cu_q = torch.tensor([0, 3, 3, 7], dtype=torch.int32)
    cu_k = torch.tensor([0, 5, 6, 9], dtype=torch.int32)
    out, lse = tk.flash_attention(
        q, k, v, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, return_lse=True
    )
    direct, direct_lse = kernels.flash_attention(
        q.numpy(),
        k.numpy(),
        v.numpy(),
        causal=True,
        cu_seqlens_q=cu_q.numpy(),
        cu_seqlens_k=cu_k.numpy(),
        return_lse=True,
    )
    assert (out.shape, lse.shape) == ((7, 4, 16), (4, 7))
    np.testing.assert_array_equal(bits(out), direct.view(np.int16))
    np.testing.assert_array_equal(lse.numpy(), direct_lse)
    # sequence 0: queries 0..2 against keys 0..4, bottom-right causal, in float64
    reference, _ = attention_f64(
        q[None, 0:3].float().numpy(), k[None, 0:5].float().numpy(), v[None, 0:5].float().numpy(),
        True, 0.25,
    )  # fmt: skip
    np.testing.assert_allclose(out[0:3].float().numpy(), reference[0], atol=2e-2, rtol=2e-2)
    torch.library.opcheck(
        torch.ops.tilelang.flash_attention_varlen.default,
        (q, k, v, cu_q, cu_k, 4, True, None, True),
    )


def paged_inputs(rng, dtype, cache_dtype=None):
    q = tensor(rng, (2, 4, 16), dtype)
    k_cache = tensor(rng, (5, 8, 2, 16), cache_dtype or dtype)
    v_cache = tensor(rng, (5, 8, 2, 16), cache_dtype or dtype)
    table = torch.tensor([[4, 0, 0], [2, 1, 3]], dtype=torch.int32)
    lens = torch.tensor([6, 21], dtype=torch.int32)
    return q, k_cache, v_cache, table, lens


def paged_f64(q, k_cache, v_cache, table, lens, scale):
    """Each sequence's tokens gathered from its pages, then float64 attention."""
    out = np.zeros(q.shape)
    for b, n in enumerate(lens.tolist()):
        rows = [(int(table[b, t // 8]), t % 8) for t in range(n)]
        k = np.stack([k_cache[p, r] for p, r in rows])[None]
        v = np.stack([v_cache[p, r] for p, r in rows])[None]
        out[b] = attention_f64(q[b][None, None], k, v, False, scale)[0][0, 0]
    return out


def test_paged_decode_op_is_the_kernel_bit_for_bit_and_passes_opcheck():
    q, k_cache, v_cache, table, lens = paged_inputs(np.random.default_rng(3), torch.bfloat16)
    out = tk.paged_decode_attention(q, k_cache, v_cache, table, lens, 0.5)
    direct = kernels.paged_decode_attention(
        *(host(t) for t in (q, k_cache, v_cache, table, lens)), 0.5
    )
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 16)
    np.testing.assert_array_equal(bits(out), direct.view(np.int16))
    reference = paged_f64(
        *(t.float().numpy() for t in (q, k_cache, v_cache)), table.numpy(), lens.numpy(), 0.5
    )
    np.testing.assert_allclose(out.float().numpy(), reference, atol=3e-2, rtol=3e-2)
    torch.library.opcheck(
        torch.ops.tilelang.paged_decode_attention.default,
        (q, k_cache, v_cache, table, lens, 0.5, None, None, None, None, None),
    )


def f8_cache_call(seed: int, q_dtype, cache_dtype):
    """An f8 cache with per-tensor scales through the op: the direct call's bits, within
    f16 rounding of the float64 definition. Returns the op's inputs."""
    q, k_cache, v_cache, table, lens = paged_inputs(
        np.random.default_rng(seed), q_dtype, cache_dtype
    )
    out = tk.paged_decode_attention(q, k_cache, v_cache, table, lens, None, 0.5, 2.0)
    direct = kernels.paged_decode_attention(
        *(host(t) for t in (q, k_cache, v_cache, table, lens)), None, 0.5, 2.0
    )
    np.testing.assert_array_equal(bits(out), direct.view(np.int16))
    k, v = k_cache.float().numpy() * 0.5, v_cache.float().numpy() * 2.0
    reference = paged_f64(q.float().numpy(), k, v, table.numpy(), lens.numpy(), 0.25)
    np.testing.assert_allclose(out.float().numpy(), reference, atol=3e-2, rtol=3e-2)
    return q, k_cache, v_cache, table, lens


def test_paged_decode_op_takes_an_f8_cache_with_a_per_tensor_scale():
    q, k_cache, v_cache, table, lens = f8_cache_call(4, torch.float16, torch.float8_e4m3fn)
    # opcheck's test_schema compares inputs with arithmetic torch lacks for f8 on the CPU,
    # so the no-mutation law it checks is checked here on the bytes, and the rest by opcheck
    before = k_cache.view(torch.uint8).clone(), v_cache.view(torch.uint8).clone()
    args = (q, k_cache, v_cache, table, lens, None, torch.tensor([0.5]), torch.tensor([2.0]))
    torch.library.opcheck(
        torch.ops.tilelang.paged_decode_attention.default,
        (*args, None, None, None),
        test_utils=("test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
    assert torch.equal(k_cache.view(torch.uint8), before[0])
    assert torch.equal(v_cache.view(torch.uint8), before[1])


def test_paged_decode_op_takes_a_u8_cache_with_per_token_scales_and_zero_points():
    rng = np.random.default_rng(6)
    q, _, _, table, lens = paged_inputs(rng, torch.float16)
    k_cache, v_cache = (
        torch.from_numpy(rng.integers(0, 256, (5, 8, 2, 16), dtype=np.uint8)) for _ in "kv"
    )
    k_scale, v_scale = (
        torch.from_numpy(rng.uniform(0.01, 0.03, (5, 8, 2)).astype(np.float32)) for _ in "kv"
    )
    k_zero = torch.from_numpy(rng.uniform(120, 136, (5, 8, 2)).astype(np.float32))
    out = tk.paged_decode_attention(
        q, k_cache, v_cache, table, lens, None, k_scale, v_scale, k_zero=k_zero
    )
    direct = kernels.paged_decode_attention(
        *(host(t) for t in (q, k_cache, v_cache, table, lens)), None, k_scale.numpy(),
        v_scale.numpy(), k_zero=k_zero.numpy(),
    )  # fmt: skip
    np.testing.assert_array_equal(bits(out), direct.view(np.int16))
    codes = (k_cache.numpy().astype(np.float64), v_cache.numpy().astype(np.float64))
    k = (codes[0] - k_zero.numpy()[..., None]) * k_scale.numpy()[..., None]
    v = (codes[1] - 128.0) * v_scale.numpy()[..., None]
    reference = paged_f64(q.float().numpy(), k, v, table.numpy(), lens.numpy(), 0.25)
    np.testing.assert_allclose(out.float().numpy(), reference, atol=3e-2, rtol=3e-2)
    torch.library.opcheck(
        torch.ops.tilelang.paged_decode_attention.default,
        (q, k_cache, v_cache, table, lens, None, k_scale, v_scale, k_zero, None, 2),
    )


def test_paged_decode_op_takes_vllms_unit_scales_and_max_seq_len():
    """vLLM passes k_scale, v_scale (1.0 for an unquantized cache: 0-d tensors) and its
    max_seq_len: the op takes them, the scales change no bit, max_seq_len reaches the
    kernel (the call with it is the direct call's, bit for bit, and one below a length
    is refused as there)."""
    q, k_cache, v_cache, table, lens = paged_inputs(np.random.default_rng(7), torch.float16)
    plain = tk.paged_decode_attention(q, k_cache, v_cache, table, lens)
    unit = tk.paged_decode_attention(q, k_cache, v_cache, table, lens, None, torch.tensor(1.0), 1.0)
    assert torch.equal(unit.view(torch.int16), plain.view(torch.int16))
    with pytest.raises(ValueError, match=r"k_scale must be 1 or absent"):
        tk.paged_decode_attention(q, k_cache, v_cache, table, lens, None, torch.tensor(0.5))
    out = tk.paged_decode_attention(q, k_cache, v_cache, table, lens, max_seq_len=21)
    direct = kernels.paged_decode_attention(
        *(host(t) for t in (q, k_cache, v_cache, table, lens)), max_seq_len=21
    )
    np.testing.assert_array_equal(bits(out), direct.view(np.int16))
    with pytest.raises(ValueError, match=r"seq_lens\[1\] = 21 is above max_seq_len = 20"):
        tk.paged_decode_attention(q, k_cache, v_cache, table, lens, max_seq_len=20)
    torch.library.opcheck(
        torch.ops.tilelang.paged_decode_attention.default,
        (q, k_cache, v_cache, table, lens, None, None, None, None, None, None, 21),
    )


def test_paged_decode_op_takes_an_f8e5m2_cache():
    f8_cache_call(8, torch.bfloat16, torch.float8_e5m2)


def test_fake_implementations_give_the_real_shapes_and_dtypes():
    with torch._subclasses.fake_tensor.FakeTensorMode():
        q = torch.empty(3, 11, 8, 64, dtype=torch.bfloat16)
        k = torch.empty(3, 13, 2, 64, dtype=torch.bfloat16)
        out, lse = tk.flash_attention(q, k, k, causal=True, return_lse=True)
        only = tk.flash_attention(q, k, k)
        packed = torch.empty(20, 8, 64, dtype=torch.float16)
        cu = torch.empty(4, dtype=torch.int32)
        v_out, v_lse = tk.flash_attention(
            packed,
            packed[:, :2],
            packed[:, :2],
            cu_seqlens_q=cu,
            cu_seqlens_k=cu,
            max_seqlen_q=9,
            return_lse=True,
        )
        qd = torch.empty(5, 8, 128, dtype=torch.float16)
        cache = torch.empty(30, 16, 2, 128, dtype=torch.float16)
        table, lens = torch.empty(5, 4, dtype=torch.int32), torch.empty(5, dtype=torch.int32)
        decoded = tk.paged_decode_attention(qd, cache, cache, table, lens)
        with pytest.raises(ValueError, match=r"q must be \[batch, Sq, H, D\]"):
            tk.flash_attention(packed, packed, packed)
        with pytest.raises(ValueError, match=r"k_cache \[num_blocks, block_size, H_kv, D\]"):
            tk.paged_decode_attention(qd, qd, qd, table, lens)
    assert (out.shape, out.dtype, lse.shape, lse.dtype) == (
        (3, 11, 8, 64),
        torch.bfloat16,
        (3, 8, 11),
        torch.float32,
    )
    assert (only.shape, only.dtype) == ((3, 11, 8, 64), torch.bfloat16)
    assert (v_out.shape, v_out.dtype, v_lse.shape) == ((20, 8, 64), torch.float16, (8, 20))
    assert (decoded.shape, decoded.dtype) == ((5, 8, 128), torch.float16)
    for name in ("flash_attention", "flash_attention_varlen", "paged_decode_attention"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"tilelang::{name}", "CUDA")


def test_bad_arguments_are_refused_naming_the_parameter():
    rng = np.random.default_rng(5)
    q, k = tensor(rng, (1, 4, 3, 16), torch.float16), tensor(rng, (1, 4, 2, 16), torch.float16)
    with pytest.raises(ValueError, match=r"H_kv = 2.*must divide.*H = 3"):
        tk.flash_attention(q, k, k)
    with pytest.raises(ValueError, match="needs both cu_seqlens_q and cu_seqlens_k"):
        tk.flash_attention(q[0], k[0], k[0], cu_seqlens_q=torch.zeros(2, dtype=torch.int32))
    pq, k_cache, v_cache, table, _ = paged_inputs(rng, torch.float16)
    with pytest.raises(ValueError, match=r"seq_lens\[1\] = 99"):
        tk.paged_decode_attention(pq, k_cache, v_cache, table, torch.tensor([1, 99]).int())


def test_the_wrapper_takes_keywords_after_v_and_causal_as_a_bool():
    """As `tilelang.kernels.flash_attention`: flash-attn's positional dropout_p (0.1) is
    refused, not read as causal; causal must be a bool; k of bf16 under an f16 q is named
    as unlike q."""
    rng = np.random.default_rng(6)
    q, k = tensor(rng, (1, 4, 2, 16), torch.float16), tensor(rng, (1, 4, 2, 16), torch.float16)
    with pytest.raises(TypeError, match="positional"):
        tk.flash_attention(q, k, k, 0.1)
    with pytest.raises(
        TypeError, match=r"^causal must be a bool \(True or False\), got float 0.1$"
    ):
        tk.flash_attention(q, k, k, causal=0.1)
    with pytest.raises(TypeError, match=r"^k must have q's dtype \(f16\), got bf16$"):
        tk.flash_attention(q, k.bfloat16(), k)
