"""Weight-only quantized matmul: y = x @ dequant(W), W of any low-bit type, group scales.

x is f16 [M, K]; W holds K x N codes of WT (u1..u8, i1..i8, f4e2m1, f6e3m2, f8e4m3, ...);
each group of G consecutive rows of W shares one f16 scale per column:
dequant(W)[k, n] = W[k, n] * s[k // G, n]. Accumulation is f32, y is f16.

W is packed for the dot once, offline (`pack_weights`, i.e. `tl.pack_for_dot`): every
[BK, BN] tile is permuted so that the codes each thread needs for its mma B fragments
are one contiguous run (whole 16-byte words where the width allows). The main loop
copies the packed tiles with cp.async three stages deep, reads each thread's run back
with vector loads (`tl.load_fragment`), sees it in place as the tile in the dot's B
fragment layout (`tl.dot_layout("b", ...)`), and dequantizes and scales it there, in
registers: the dot takes it as it is, and no weight value is ever written to shared
memory. `tl.unpack_from_dot` undoes the packing. The tile, 16 x 128 x 128 over 4 warps,
is sized for decoding (m = 1..16): each thread converts 128 weights per iteration, so the
iteration's fixed costs are shared, and BK = G = 128 loads each scale once per group.

Split-K (`split_k_matmul`): when M and N give too few blocks to fill a GPU (decoding:
M is a handful of tokens), K is split into SPLIT_K slices along a third grid dimension
and each block multiplies one slice. The partial products are reduced either

- with `tl.atomic_add` into an f32 output the caller zeroes (`quant_matmul_split_k`):
  one launch, but the float sum depends on the order the slices arrive in; f32, not
  f16, because f16 atomics would round every partial sum to f16 (SPLIT_K roundings
  instead of one); or
- deterministically, also in one launch: each slice writes its partial product to a
  workspace [SPLIT_K, M, N] and arrives at its tile's counter (`tl.arrive`); the last to
  arrive adds them in slice order and rounds once to f16 (`quant_matmul_partials`);
  bit-identical from run to run.

SPLIT_K = 1 is the unsplit product.

Run `python examples/quant_matmul.py` (or `make run`): it runs the kernel for several
weight types, and both split-K reductions for one — on the GPU when there is one, else
on the CPU (the same per-thread program, through the LLVM backend) — and checks each
against numpy.
"""

import numpy as np

import tilelang as tl

#: The kernels' default block tile and warps; `pack_weights` packs W for them.
BLOCK_M, BLOCK_N, BLOCK_K = 16, 128, 128
WARPS = 4


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


@tl.func
def slice_product(x, w, s, bm, bn, k_start, k_stop, G, BM, BN, BK):
    """The f32 product of rows bm·BM.. of x and columns bn·BN.. of dequant(W) over
    k_start <= k < k_stop (k_start a multiple of BK: no tile straddles a scale group).
    w is W packed by `pack_weights` for these tiles."""
    fragments = tl.dot_layout("b", BM, BN, BK)  # the layout the dot wants b in
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(k_start, k_stop, BK, stages=3):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        q = tl.load_fragment(w, [k, bn * BN], fragments)  # each thread's codes, in place
        acc = tl.dot(a, dequantize(q, s, k, bn * BN, G), acc)
    return acc


@tl.kernel(warps=WARPS)
def quant_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    s: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    BM: tl.constexpr = BLOCK_M,
    BN: tl.constexpr = BLOCK_N,
    BK: tl.constexpr = BLOCK_K,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = slice_product(x, w, s, bm, bn, 0, K, G, BM, BN, BK)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


@tl.func
def k_slice(kz, K, SPLIT_K, BK):
    """[start, stop) of slice kz of K: ceil(K / SPLIT_K) rounded up to whole BK tiles
    (so every slice starts on a tile), the last slices shorter or empty."""
    length = tl.cdiv(tl.cdiv(K, SPLIT_K), BK) * BK
    return kz * length, tl.minimum(K, kz * length + length)


@tl.kernel(warps=WARPS)
def quant_matmul_split_k(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    s: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    y: tl.Tensor[tl.f32, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    SPLIT_K: tl.constexpr = 4,
    BM: tl.constexpr = BLOCK_M,
    BN: tl.constexpr = BLOCK_N,
    BK: tl.constexpr = BLOCK_K,
):
    """y += x @ dequant(W), K split over SPLIT_K blocks whose partial products meet in y
    through atomic additions (y must hold zeros for y = x @ dequant(W))."""
    bm, bn, kz = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN), SPLIT_K)
    k_start, k_stop = k_slice(kz, K, SPLIT_K, BK)
    acc = slice_product(x, w, s, bm, bn, k_start, k_stop, G, BM, BN, BK)
    tl.atomic_add(y, [bm * BM, bn * BN], acc)


@tl.kernel(warps=WARPS)
def quant_matmul_partials(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    s: tl.Tensor[tl.f16, "(K + G - 1) // G", "N"],
    partials: tl.Tensor[tl.f32, "SPLIT_K", "M", "N"],
    counts: tl.Tensor[tl.i32, "(M + BM - 1) // BM", "(N + BN - 1) // BN"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    G: tl.constexpr = 128,
    SPLIT_K: tl.constexpr = 4,
    BM: tl.constexpr = BLOCK_M,
    BN: tl.constexpr = BLOCK_N,
    BK: tl.constexpr = BLOCK_K,
):
    """The deterministic split-K in one launch: partials[kz] = the product over K slice
    kz; the last block of a tile to arrive at its counter (`tl.arrive`: it sees what the
    others stored before arriving) adds the tile's products in slice order, rounds once
    to f16, and sets the counter back to 0 for the next launch."""
    bm, bn, kz = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN), SPLIT_K)
    k_start, k_stop = k_slice(kz, K, SPLIT_K, BK)
    acc = slice_product(x, w, s, bm, bn, k_start, k_stop, G, BM, BN, BK)
    tl.store(partials, [kz, bm * BM, bn * BN], tl.reshape(acc, [1, BM, BN]))
    if tl.arrive(counts, [bm, bn]) == SPLIT_K - 1:
        total = tl.zeros([BM, BN], tl.f32)
        for slice_ in range(SPLIT_K):
            part = tl.load(partials, [slice_, bm * BM, bn * BN], [1, BM, BN])
            total = total + tl.reshape(part, [BM, BN])
        tl.store(y, [bm * BM, bn * BN], total.to(tl.f16))
        tl.store(counts, [bm, bn], tl.zeros([1, 1], tl.i32))


def random_codes(rng: np.random.Generator, dtype: tl.DType, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly random codes of `dtype` (every bit pattern except NaN and infinity)."""
    codes = rng.integers(0, 2**dtype.bits, shape, dtype=np.uint64).astype(dtype.storage)
    if dtype.is_float:
        codes[~np.isfinite(dtype.decode(codes))] = 0
    return codes


def make_inputs(m: int, k: int, n: int, weight_type: tl.DType, group: int, seed: int = 0):
    """Random x [m, k], weights W [k, n] (a plain PackedArray: `pack_weights` packs it for
    the kernels) and scales [ceil(k / group), n]."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) / 4).astype(np.float16)
    w = tl.pack_codes(random_codes(rng, weight_type, (k, n)), weight_type)
    scale_scale = 1.0 / max(abs(weight_type.min), abs(weight_type.max), 1)  # s < 2
    s = (rng.uniform(0.5, 1.5, (-(-k // group), n)) * scale_scale).astype(np.float16)
    return x, w, s


def pack_weights(
    w: tl.PackedArray, BM: int = BLOCK_M, BN: int = BLOCK_N, BK: int = BLOCK_K
) -> tl.DotPackedArray:
    """W [K, N] packed for the kernels run with these tiles: each [BK, BN] tile in the
    load order of the dot's B fragments (`tl.pack_for_dot`)."""
    return tl.pack_for_dot(w, tile=(BK, BN), m=BM, warps=WARPS)


def reference(x: np.ndarray, w: tl.PackedArray, s: np.ndarray, group: int) -> np.ndarray:
    """numpy: dequantize with the same f16 rounding, then multiply in float64 (w is W,
    or W packed by `pack_weights`)."""
    if isinstance(w, tl.DotPackedArray):
        w = tl.unpack_from_dot(w)
    values = w.unpack().astype(np.float16)
    scales = np.repeat(s, group, axis=0)[: values.shape[0]]
    dequantized = (values * scales).astype(np.float64)  # float16 product, rounded like the kernel
    return (x.astype(np.float64) @ dequantized).astype(np.float16)


#: make_inputs draws scales in [+0, 2): the value fact `check` states (`assume={"s": 2}`).
SCALE_BOUND = 2


def tolerance(k: int) -> float:
    """Relative error bound: f32 accumulation of k terms in some order, then an f16 rounding
    that may go the other way than the exact sum's (one f16 ulp, 2^-10 relative)."""
    return k * 2.0**-24 * 4 + 2.0**-10


def check(
    m: int, k: int, n: int, weight_type: tl.DType, group: int, on_gpu: bool = False, **tiles
) -> float:
    x, w, s = make_inputs(m, k, n, weight_type, group)
    w = pack_weights(w, **tiles)
    y = np.zeros((m, n), np.float16)
    # What we know of the scales (make_inputs: +0 <= s < 2): a value fact, checked before
    # the launch, under which the lowering folds each scale into the dequantization
    # (where a tile holds one group, G >= BK, and the fold is exact: docs/design.md).
    facts = {"s": SCALE_BOUND}
    if on_gpu:
        out = tl.DeviceBuffer(y)
        args = (tl.DeviceBuffer(x), tl.DeviceBuffer(w), tl.DeviceBuffer(s), out)
        quant_matmul(*args, WT=weight_type, G=group, assume=facts, **tiles)
        y = out.numpy()
    else:
        y = quant_matmul(x, w, s, y, WT=weight_type, G=group, assume=facts, **tiles)
    expected = reference(x, w, s, group).astype(np.float32)
    scale = max(float(np.abs(expected).max()), 1e-3)
    error = float(np.abs(y.astype(np.float32) - expected).max()) / scale
    assert error <= tolerance(k), (
        f"{weight_type}: relative error {error:.3g} over {tolerance(k):.3g}"
    )
    return error


def split_k_matmul(
    x, w, s, weight_type: tl.DType, group: int, split_k: int, deterministic: bool = False, **tiles
):
    """x @ dequant(W) with K split in `split_k` slices: f32 through atomic additions, or
    (`deterministic`) f16 through a workspace of partial products that the last block of
    each tile adds, in the same launch.
    w is W packed by `pack_weights` for the same tiles. Host arrays run on the CPU;
    `tl.DeviceBuffer`s (or torch/cupy tensors) on the GPU."""
    m, n = x.shape[0], s.shape[1]
    on_gpu = isinstance(x, tl.DeviceBuffer)
    device = tl.DeviceBuffer if on_gpu else (lambda array: array)
    constants = {"WT": weight_type, "G": group, "SPLIT_K": split_k, **tiles}
    if not deterministic:
        y = device(np.zeros((m, n), np.float32))
        return quant_matmul_split_k(x, w, s, y, **constants)
    bm, bn = tiles.get("BM", BLOCK_M), tiles.get("BN", BLOCK_N)
    partials = device(np.zeros((split_k, m, n), np.float32))
    counts = device(np.zeros((-(-m // bm), -(-n // bn)), np.int32))  # zeroed, left zeroed
    y = device(np.zeros((m, n), np.float16))
    quant_matmul_partials(x, w, s, partials, counts, y, **constants)
    return y


def check_split_k(
    m: int,
    k: int,
    n: int,
    weight_type: tl.DType,
    group: int,
    split_k: int,
    deterministic: bool = False,
    on_gpu: bool = False,
    **tiles,
) -> float:
    """The relative error of `split_k_matmul`, rounded to f16, against numpy (asserted
    within `tolerance`: splitting changes the order of the f32 additions, not their
    number)."""
    x, w, s = make_inputs(m, k, n, weight_type, group)
    args = (x, pack_weights(w, **tiles), s)
    if on_gpu:
        args = tuple(tl.DeviceBuffer(a) for a in args)
    y = split_k_matmul(*args, weight_type, group, split_k, deterministic, **tiles)
    y = (y.numpy() if on_gpu else y).astype(np.float16)
    expected = reference(x, w, s, group).astype(np.float32)
    scale = max(float(np.abs(expected).max()), 1e-3)
    error = float(np.abs(y.astype(np.float32) - expected).max()) / scale
    how = "deterministic" if deterministic else "atomic"
    assert error <= tolerance(k), (
        f"{weight_type}, split-K {split_k} ({how}): relative error {error:.3g} over "
        f"{tolerance(k):.3g}"
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
    split_k = 4
    for deterministic in (False, True):
        error = check_split_k(m, k, n, tl.u4, group, split_k, deterministic, on_gpu)
        how = "workspace, the last block adds, f16" if deterministic else "atomic_add into f32"
        print(f"  u4 split-K {split_k} ({how}) on {device}: relative error {error:.2e}  ok")


if __name__ == "__main__":
    main()
