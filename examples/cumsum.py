"""Cumulative sum along the rows, for any width: a scan per tile plus a running carry."""

import numpy as np

import tilelang as tl


@tl.kernel(warps=4)
def cumsum_rows(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M", "N"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 4,
    BN: tl.constexpr = 64,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    carry = tl.zeros([BM, 1], T)
    for n in tl.range(0, N, BN):
        tile = tl.load(x, [bm * BM, n], [BM, BN])
        tl.store(y, [bm * BM, n], tl.cumsum(tile, axis=1) + carry)
        carry = carry + tl.sum(tile, axis=1, keepdims=True)


def main(m: int = 9, n: int = 200) -> None:
    x = np.random.default_rng(0).integers(-100, 100, (m, n)).astype(np.int32)
    y = cumsum_rows(x, np.empty_like(x), T=tl.i32)
    assert np.array_equal(y, np.cumsum(x, axis=1)), "cumsum differs from numpy"
    print(f"cumsum: {m}x{n} i32 along rows, bit-exact with numpy")


if __name__ == "__main__":
    main()
