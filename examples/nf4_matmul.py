"""NF4 (bitsandbytes) weight-only matmul: y = x @ dequant(W), a codebook format.

NF4 stores each weight as a u4 code into a 16-entry table of f16 values (the quantiles
of a normal distribution, `NF4`), and one f16 absmax per 128 consecutive rows of each
column: dequant(W)[k, n] = NF4[code[k, n]] * absmax[k // 128, n]. A code is not a
number, so `q.to(tl.f16)` cannot dequantize it; `tl.lookup(table, codes)` reads the
table entry of every code.

The kernel is `examples/quant_matmul.py`'s split-K kernel with the cast replaced by the
lookup: W is packed for the dot offline (`tl.pack_for_dot`), each iteration reads each
thread's codes straight into the mma B fragment layout (`tl.load_fragment`), and
`tl.lookup` gives the f16 values in that same layout (the result takes the index's
layout), so the dot takes them as they are. The table is written once into a
`tl.shared` buffer before the loop: each code is then one shared-memory read, with no
barrier in the loop. K is split over SPLIT_K blocks (decoding has one row of x: N / BN
blocks alone leave most SMs idle) whose f32 partial products meet in y by atomic
additions (y must hold zeros).

Run `python examples/nf4_matmul.py`: it runs on the CPU (LLVM backend), or the GPU when
there is one, and checks against numpy.
"""

import numpy as np

import tilelang as tl

#: bitsandbytes' NF4 code book (`bitsandbytes.functional.get_4bit_type("nf4")`).
NF4 = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230425834656,
        0.33791524171829224,
        0.44070982456207275,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
).astype(np.float16)

BLOCK_M, BLOCK_N, BLOCK_K, GROUP, WARPS = 16, 128, 128, 128, 4


@tl.kernel(warps=WARPS)
def nf4_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor[tl.u4, "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    absmax: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    code: tl.Tensor[tl.f16, 16],
    y: tl.Tensor[tl.f32, "M", "N"],
    G: tl.constexpr = GROUP,
    SPLIT_K: tl.constexpr = 8,
    BM: tl.constexpr = BLOCK_M,
    BN: tl.constexpr = BLOCK_N,
    BK: tl.constexpr = BLOCK_K,
):
    """y += x @ dequant(W) over K slice kz of SPLIT_K (BK == G: one absmax row a tile)."""
    bm, bn, kz = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN), SPLIT_K)
    length = tl.cdiv(tl.cdiv(K, SPLIT_K), BK) * BK
    table = tl.shared([16], tl.f16)
    table.store(tl.load(code, [0], [16]))  # once: the loop reads it with no barrier
    fragments = tl.dot_layout("b", BM, BN, BK)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(kz * length, tl.minimum(K, kz * length + length), BK, stages=3):
        q = tl.load_fragment(w, [k, bn * BN], fragments)  # u4 codes, in the B layout
        wk = tl.lookup(table, q) * tl.load(absmax, [k // G, bn * BN], [1, BN])
        acc = tl.dot(tl.load(x, [bm * BM, k], [BM, BK]), wk, acc)
    tl.atomic_add(y, [bm * BM, bn * BN], acc)


def quantize_nf4(w: np.ndarray, group: int = GROUP) -> tuple[np.ndarray, np.ndarray]:
    """(codes [K, N] in 0..15, absmax [K / group, N] f16) of W [K, N], as bitsandbytes
    does per block: scale by the block's absmax, take the nearest code."""
    k, n = w.shape
    blocks = w.reshape(k // group, group, n)
    absmax = np.abs(blocks).max(axis=1).astype(np.float16)
    normed = blocks / np.maximum(absmax.astype(np.float32), 1e-12)[:, None, :]
    codes = np.abs(normed[..., None] - NF4.astype(np.float32)).argmin(-1)
    return codes.reshape(k, n).astype(np.uint8), absmax


def dequantize_nf4(codes: np.ndarray, absmax: np.ndarray, group: int = GROUP) -> np.ndarray:
    """The f16 weights the kernel multiplies by (numpy: the oracle's side)."""
    return (NF4[codes].astype(np.float32) * np.repeat(absmax, group, 0)).astype(np.float16)


def pack_weights(codes: np.ndarray) -> tl.DotPackedArray:
    return tl.pack_for_dot(
        tl.pack_codes(codes, tl.u4), tile=(BLOCK_K, BLOCK_N), m=BLOCK_M, warps=WARPS
    )


def run(x, codes, absmax, split_k: int = 8, on_gpu: bool = False) -> np.ndarray:
    args = [x, pack_weights(codes), absmax, NF4, np.zeros((x.shape[0], codes.shape[1]), np.float32)]
    if on_gpu:
        args = [tl.DeviceBuffer(a) for a in args]
    y = nf4_matmul(*args, SPLIT_K=split_k)
    return y.numpy() if on_gpu else y


def main() -> None:
    m, k, n = 3, 512, 256
    rng = np.random.default_rng(0)
    w = (rng.standard_t(4, (k, n)) * 0.02).astype(np.float32)
    codes, absmax = quantize_nf4(w)
    x = rng.standard_normal((m, k)).astype(np.float16)
    on_gpu = tl.gpu_available()
    y = run(x, codes, absmax, split_k=2, on_gpu=on_gpu)
    expected = x.astype(np.float64) @ dequantize_nf4(codes, absmax).astype(np.float64)
    error = float(np.abs(y - expected).max() / np.abs(expected).max())
    where = f"GPU ({tl.gpu_arch()})" if on_gpu else "CPU (LLVM backend)"
    assert error < 1e-3, f"relative error {error:.3g}"
    print(f"nf4_matmul y[{m}x{n}] = x @ dequant(W[{k}x{n}]) on {where}: rel. error {error:.2e} ok")


if __name__ == "__main__":
    main()
