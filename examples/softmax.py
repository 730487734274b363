"""Row softmax of any width: an online pass for max and sum, then a normalizing pass.

Columns past the end load as -inf, so they add nothing to the max or the sum.
"""

import numpy as np

import tilelang as tl


@tl.kernel(warps=4)
def softmax(
    x: tl.Tensor[tl.f32, "M", "N"],
    y: tl.Tensor[tl.f32, "M", "N"],
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 128,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    row = bm * BM
    running_max = tl.full([BM], float("-inf"), tl.f32)
    running_sum = tl.zeros([BM], tl.f32)
    for n in tl.range(0, N, BN):
        tile = tl.load(x, [row, n], [BM, BN], fill=float("-inf"))
        new_max = tl.maximum(running_max, tl.max(tile, axis=1))
        rescale = tl.exp(running_max - new_max)
        running_sum = running_sum * rescale + tl.sum(tl.exp(tile - new_max[:, None]), axis=1)
        running_max = new_max
    for n in tl.range(0, N, BN):
        tile = tl.load(x, [row, n], [BM, BN], fill=float("-inf"))
        tl.store(y, [row, n], tl.exp(tile - running_max[:, None]) / running_sum[:, None])


def reference(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def main(m: int = 37, n: int = 300) -> None:
    x = np.random.default_rng(0).standard_normal((m, n), dtype=np.float32) * 4
    y = softmax(x, np.empty_like(x))
    error = np.abs(y - reference(x)).max()
    assert error < 1e-6, f"softmax differs from numpy by {error}"
    print(f"softmax: {m}x{n}, max abs error vs float64 numpy {error:.2e}")


if __name__ == "__main__":
    main()
