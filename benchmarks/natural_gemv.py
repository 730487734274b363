"""A W4A16 GEMV written the way a Triton user first writes it: dequantize a [BK, BN]
tile of codes and scales to f32 and sum the product with x over K. Not the library's
formulation (tilelang.quant keeps the dot on the tensor cores); `perf_report.py` keeps it
as a case because the reductions' lowering decides its speed.
"""

import numpy as np

import tilelang as tl


@tl.kernel(warps=4)
def natural_gemv(
    x: tl.Tensor[tl.f16, "M", "K"],
    q: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor[tl.f16, "K // G", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    BK: tl.constexpr = 64,
    BN: tl.constexpr = 128,
):
    bn = tl.blocks(tl.cdiv(N, BN))
    acc = tl.zeros([BN], tl.f32)
    for k in tl.range(0, K, BK):
        a = tl.reshape(tl.load(x, [0, k], [1, BK]), [BK]).to(tl.f32)
        w = tl.load(q, [k, bn * BN], [BK, BN]).to(tl.f32)
        w = w * tl.load(s, [k // G, bn * BN], [1, BN]).to(tl.f32)
        acc = acc + tl.sum(a[:, None] * w, axis=0)
    tl.store(y, [0, bn * BN], tl.reshape(acc.to(tl.f16), [1, BN]))


def main(k: int = 256, n: int = 256) -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (k, n))
    scales = (2.0 ** rng.integers(-4, 2, (k // 128, n))).astype(np.float16)
    x = rng.uniform(-1, 1, (1, k)).astype(np.float16)
    y = natural_gemv(x, tl.pack_codes(codes, tl.u4), scales, np.empty((1, n), np.float16))
    w = codes * scales.astype(np.float64).repeat(128, axis=0)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w, rtol=2e-3, atol=2e-2)
    print(f"natural_gemv: 1x{k}x{n} u4 g128 agrees with numpy")


if __name__ == "__main__":
    main()
