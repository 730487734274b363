"""Weight-only quantized matmul: y = x @ dequant(W), W of any low-bit type, group scales.

x is f16 [M, K]; W holds K x N codes of WT (u1..u8, i1..i8, f4e2m1, f6e3m2, f8e4m3, ...),
packed densely; each group of G consecutive rows of W shares one f16 scale per column:
dequant(W)[k, n] = W[k, n] * s[k // G, n]. Accumulation is f32, y is f16.

Run `python examples/quant_matmul.py` (or `make run`): it runs the kernel for several
weight types — on the GPU when there is one, else on the CPU (the same per-thread
program, through the LLVM backend) — and checks each against numpy.
"""

import numpy as np

import tilelang as tl


@tl.func
def dequantize(q, s, k, n0, G):
    """The f16 weights of a [BK, BN] tile of codes starting at row k, column n0."""
    BK, BN = q.shape
    if BK <= G:
        assert G % BK == 0, "a weight tile must not straddle two scale groups (G % BK == 0)"
        return q.to(tl.f16) * tl.load(s, [k // G, n0], [1, BN])
    assert BK % G == 0, "a weight tile must hold whole scale groups (BK % G == 0)"
    scales = tl.load(s, [k // G, n0], [BK // G, BN])
    grouped = tl.reshape(q.to(tl.f16), [BK // G, G, BN]) * scales[:, None, :]
    return tl.reshape(grouped, [BK, BN])


@tl.kernel(warps=4)
def quant_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "K", "N"],
    s: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    BM: tl.constexpr = 16,
    BN: tl.constexpr = 64,
    BK: tl.constexpr = 64,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=3):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        b = dequantize(tl.load(w, [k, bn * BN], [BK, BN]), s, k, bn * BN, G)
        acc = tl.dot(a, b, acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


def random_codes(rng: np.random.Generator, dtype: tl.DType, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly random codes of `dtype` (every bit pattern except NaN and infinity)."""
    codes = rng.integers(0, 2**dtype.bits, shape, dtype=np.uint64).astype(dtype.storage)
    if dtype.is_float:
        codes[~np.isfinite(dtype.decode(codes))] = 0
    return codes


def make_inputs(m: int, k: int, n: int, weight_type: tl.DType, group: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) / 4).astype(np.float16)
    w = tl.pack_codes(random_codes(rng, weight_type, (k, n)), weight_type)
    scale_scale = 1.0 / max(abs(weight_type.min), abs(weight_type.max), 1)
    s = (rng.uniform(0.5, 1.5, (-(-k // group), n)) * scale_scale).astype(np.float16)
    return x, w, s


def reference(x: np.ndarray, w: tl.PackedArray, s: np.ndarray, group: int) -> np.ndarray:
    """numpy: dequantize with the same f16 rounding, then multiply in float64."""
    values = w.unpack().astype(np.float16)
    scales = np.repeat(s, group, axis=0)[: values.shape[0]]
    dequantized = (values * scales).astype(np.float64)  # float16 product, rounded like the kernel
    return (x.astype(np.float64) @ dequantized).astype(np.float16)


def tolerance(k: int) -> float:
    """Relative error bound: f32 accumulation of k terms in some order, then an f16 rounding
    that may go the other way than the exact sum's (one f16 ulp, 2^-10 relative)."""
    return k * 2.0**-24 * 4 + 2.0**-10


def check(
    m: int, k: int, n: int, weight_type: tl.DType, group: int, on_gpu: bool = False, **tiles
) -> float:
    x, w, s = make_inputs(m, k, n, weight_type, group)
    y = np.zeros((m, n), np.float16)
    if on_gpu:
        out = tl.DeviceBuffer(y)
        args = (tl.DeviceBuffer(x), tl.DeviceBuffer(w), tl.DeviceBuffer(s), out)
        quant_matmul(*args, WT=weight_type, G=group, **tiles)
        y = out.numpy()
    else:
        y = quant_matmul(x, w, s, y, WT=weight_type, G=group, **tiles)
    expected = reference(x, w, s, group).astype(np.float32)
    scale = max(float(np.abs(expected).max()), 1e-3)
    error = float(np.abs(y.astype(np.float32) - expected).max()) / scale
    assert error <= tolerance(k), (
        f"{weight_type}: relative error {error:.3g} over {tolerance(k):.3g}"
    )
    return error


def main() -> None:
    m, k, n, group = 16, 256, 96, 64
    print(f"quant_matmul: y[{m}x{n}] = x[{m}x{k}] f16 @ dequant(W[{k}x{n}]), group {group}")
    on_gpu = tl.gpu_available()
    device = f"GPU ({tl.gpu_arch()})" if on_gpu else "CPU (LLVM backend)"
    for weight_type in (tl.u4, tl.i4, tl.u3, tl.i2, tl.u1, tl.u8, tl.f4e2m1, tl.f6e3m2, tl.f8e4m3):
        error = check(m, k, n, weight_type, group, on_gpu)
        print(f"  {weight_type.name:>7} on {device}: relative error {error:.2e}  ok")


if __name__ == "__main__":
    main()
