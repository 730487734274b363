"""Vector add: the smallest kernel. The last block is partial: masking keeps it in bounds."""

import numpy as np

import tilelang as tl


@tl.kernel(warps=4)
def vector_add(
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
    out: tl.Tensor[tl.f32, "N"],
    BLOCK: tl.constexpr = 1024,
):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    start = b * BLOCK
    tl.store(out, [start], tl.load(x, [start], [BLOCK]) + tl.load(y, [start], [BLOCK]))


def reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x + y


def main(n: int = 10_000) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    out = vector_add(x, y, np.empty_like(x))
    assert np.array_equal(out, reference(x, y)), "vector_add differs from numpy"
    print(f"vector_add: {n} elements, bit-exact with numpy")


if __name__ == "__main__":
    main()
