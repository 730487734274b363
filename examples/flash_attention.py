"""FlashAttention forward with tilelang.kernels.flash_attention: causal, grouped-query
(8 query heads share 2 key/value heads), then a varlen batch of packed sequences,
checked against numpy float64.

    .venv/bin/python examples/flash_attention.py

Runs on the CPU backend (numpy arrays); torch tensors on a GPU run the same kernel
there. The kernel (tilelang/kernels/attention.py) is written as users write attention:
`tl.dot(q, tl.transpose(k))` on tiles loaded [1, BN, 1, D] and reshaped, then an online
softmax.
"""

import itertools

import numpy as np

from tilelang.kernels import flash_attention


def attention_reference(q, k, v, causal):
    """softmax(q kᵀ / √D) v per head in float64; query i sees keys j <= i + Sk - Sq."""
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    sq, heads, d = q.shape[1:]
    sk, kv_heads = k.shape[1:3]
    group = heads // kv_heads
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
    if causal:
        visible = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + sk - sq
        scores = np.where(visible, scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("bhij,bjhd->bihd", weights, v)


def attention_into(q, k, v, out, causal=False):
    """flash_attention(q, k, v, causal) written into `out` (numpy arrays or torch tensors
    alike): the form the GPU self-check runs (benchmarks/gpu_examples.py)."""
    out[...] = flash_attention(q, k, v, causal=causal)
    return out


def main() -> None:
    rng = np.random.default_rng(0)
    batch, seq, heads, kv_heads, d = 2, 100, 8, 2, 64
    q = rng.standard_normal((batch, seq, heads, d)).astype(np.float16)
    k = rng.standard_normal((batch, seq, kv_heads, d)).astype(np.float16)
    v = rng.standard_normal((batch, seq, kv_heads, d)).astype(np.float16)
    out = flash_attention(q, k, v, causal=True)
    error = np.abs(out.astype(np.float64) - attention_reference(q, k, v, True)).max()
    assert error < 3e-3, error
    print(
        f"flash_attention [{batch}, {seq}, {heads}, {d}] (GQA {heads}/{kv_heads}), causal: "
        f"max error {error:.1e}"
    )
    # varlen: the sequences of lengths 7, 0 and 40 packed into [47, H, D]
    lengths = [7, 0, 40]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(offsets[-1])
    q, k, v = (
        rng.standard_normal((total, h, d)).astype(np.float16) for h in (heads, kv_heads, kv_heads)
    )
    out = flash_attention(q, k, v, causal=True, cu_seqlens_q=offsets, cu_seqlens_k=offsets)
    error = 0.0
    for start, stop in itertools.pairwise(offsets):
        if start == stop:
            continue  # an empty sequence: no rows
        part = slice(start, stop)
        want = attention_reference(q[None, part], k[None, part], v[None, part], True)[0]
        error = max(error, np.abs(out[part].astype(np.float64) - want).max(initial=0.0))
    assert error < 3e-3, error
    print(f"flash_attention varlen, lengths {lengths}: max error {error:.1e}")


if __name__ == "__main__":
    main()
