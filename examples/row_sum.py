"""Row reduction: y[m] = sum over n of x[m, n], for any width."""

import numpy as np

import tilelang as tl


@tl.kernel(warps=4)
def row_sum(
    x: tl.Tensor["T", "M", "N"],
    y: tl.Tensor["T", "M"],
    T: tl.constexpr = tl.f32,
    BM: tl.constexpr = 8,
    BN: tl.constexpr = 64,
):
    bm = tl.blocks(tl.cdiv(M, BM))
    total = tl.zeros([BM], T)
    for n in tl.range(0, N, BN):
        total = total + tl.sum(tl.load(x, [bm * BM, n], [BM, BN]), axis=1)
    tl.store(y, [bm * BM], total)


def main(m: int = 50, n: int = 333) -> None:
    x = np.random.default_rng(0).integers(-1000, 1000, (m, n)).astype(np.int32)
    y = row_sum(x, np.empty(m, np.int32), T=tl.i32)
    assert np.array_equal(y, x.sum(axis=1)), "row_sum differs from numpy"
    print(f"row_sum: {m}x{n} i32, bit-exact with numpy")


if __name__ == "__main__":
    main()
