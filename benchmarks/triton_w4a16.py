"""The Triton W4A16 baseline of issue 11 (tilelang.quant.matmul at m = 1 and 16 should
take at most half its time): a plain, untuned Triton matmul y = x @ ((q − 8)·s), its
weight format, and that format's dequantization in torch, which the GPU check's
reference is made from (written from the format, not from the kernel).

The format: codes q of 4 bits, packed along K, eight to an int32 word (`words`
[K/8, N]; row k's code is bits 4·(k mod 8) .. +3 of word k // 8), and one f16 scale per
GROUP rows (`scales` [K/GROUP, N]). A weight is (q − 8)·s, rounded once to f16.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GROUP = 128


def make_kernel() -> Callable[[Any, Any, Any, Any], None] | None:
    """run(x [M, K] f16, words, scales, y [M, N] f16) on the GPU, or None without triton."""
    try:
        import triton
        import triton.language as tlang
    except ImportError:
        return None

    @triton.jit
    def kernel(x, w, s, y, M, N, K, BM: tlang.constexpr, BN: tlang.constexpr, BK: tlang.constexpr):
        pm, pn = tlang.program_id(0), tlang.program_id(1)
        rm = pm * BM + tlang.arange(0, BM)
        rn = pn * BN + tlang.arange(0, BN)
        rk = tlang.arange(0, BK)
        acc = tlang.zeros((BM, BN), dtype=tlang.float32)
        for k0 in range(0, K, BK):
            kk = k0 + rk
            a = tlang.load(x + rm[:, None] * K + kk[None, :], mask=rm[:, None] < M, other=0.0)
            words = tlang.load(w + (kk // 8)[:, None] * N + rn[None, :], mask=rn[None, :] < N)
            q = (words >> ((kk % 8) * 4)[:, None]) & 0xF
            scale = tlang.load(s + (kk // 128)[:, None] * N + rn[None, :], mask=rn[None, :] < N)
            b = (q.to(tlang.float16) - 8.0) * scale
            acc += tlang.dot(a, b)
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        tlang.store(y + rm[:, None] * N + rn[None, :], acc.to(tlang.float16), mask=mask)

    def run(x: Any, words: Any, scales: Any, y: Any) -> None:
        m, k = x.shape
        n = y.shape[1]
        bm = 16 if m <= 16 else 64
        grid = (triton.cdiv(m, bm), triton.cdiv(n, 128))
        kernel[grid](x, words, scales, y, m, n, k, BM=bm, BN=128, BK=64)

    return run


def random_weights(torch: Any, k: int, n: int, device: str = "cuda", seed: int = 0):
    """(words, scales) of a random weight in the format (k a multiple of GROUP)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    words = torch.randint(
        -(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, device=device, generator=generator
    )
    scales = (torch.rand(k // GROUP, n, device=device, generator=generator) / 64).to(torch.float16)
    return words, scales


def dequantize(torch: Any, words: Any, scales: Any, k: int) -> Any:
    """The f16 weights [k, n] the format means: (q − 8)·s, rounded once."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=words.device)
    codes = (words[:, None, :] >> shifts[None, :, None]) & 0xF  # [k/8, 8, n]
    q = codes.reshape(k, words.shape[1]).to(torch.float32) - 8.0
    s = scales.repeat_interleave(GROUP, dim=0)[:k].to(torch.float32)
    return (q * s).to(torch.float16)  # exact in f32 (a 4-bit integer times an f16)
