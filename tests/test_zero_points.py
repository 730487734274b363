"""Asymmetric zero points, `(q.to(f16) - z.to(f16)) * s`: the lowering folds z into the
dequantization recipe's own subtraction (`tilelang.lowering.elementwise.zero_point_of`),
so a zero point costs no instruction per weight. The fold must not change a bit: the
CPU backend (which runs the folded thread IR) equals the interpreter (which runs the
block IR as written) exactly, for every code and zero point."""

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang.ir import thread as t
from tilelang.runtime import sass

quant = load_example("quant_matmul")
BM, BN, BK, G = 16, 64, 64, 64


@tl.kernel(warps=quant.WARPS)
def asymmetric_matmul(
    x: tl.Tensor[tl.f16, "M", "K"],
    w: tl.Tensor["WT", "(N + BN - 1) // BN", "(K + BK - 1) // BK * BK * BN"],
    s: tl.Tensor[tl.f16, "K // G", "N"],
    z: tl.Tensor["ZT", "K // G", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    WT: tl.constexpr = tl.u4,
    ZT: tl.constexpr = tl.u4,
    G: tl.constexpr = G,
    BM: tl.constexpr = BM,
    BN: tl.constexpr = BN,
    BK: tl.constexpr = BK,
):
    """y = x @ ((W - Z) * S), one zero point and one scale per group of G rows (G = BK)."""
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    fragments = tl.dot_layout("b", BM, BN, BK)
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=2):
        a = tl.load(x, [bm * BM, k], [BM, BK])
        q = tl.load_fragment(w, [k, bn * BN], fragments)
        zero = tl.load(z, [k // G, bn * BN], [1, BN])
        scale = tl.load(s, [k // G, bn * BN], [1, BN])
        acc = tl.dot(a, (q.to(tl.f16) - zero.to(tl.f16)) * scale, acc)
    tl.store(y, [bm * BM, bn * BN], acc.to(tl.f16))


def inputs(weight_type: tl.DType, zero_type: tl.DType, m: int, k: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) / 4).astype(np.float16)
    codes = quant.random_codes(rng, weight_type, (k, n))
    w = quant.pack_weights(tl.pack_codes(codes, weight_type), BM=BM, BN=BN, BK=BK)
    # Every zero point of the type, cycled, so each code meets many zero points.
    zeros = np.arange(k // G * n).reshape(k // G, n) % (2**zero_type.bits)
    z = tl.pack_codes(zeros.astype(zero_type.storage), zero_type)
    s = rng.uniform(0.5, 1.5, (k // G, n)).astype(np.float16) / 16
    return x, w, s, z, codes, zeros


def reference(x, codes, zeros, s, weight_type, zero_type):
    """numpy from the spec: (q - z) is exact in f16, times s rounded to f16, then the
    product in float64."""
    q = weight_type.decode(codes).astype(np.float16)
    zz = np.repeat(zero_type.decode(zeros).astype(np.float16), G, axis=0)
    w = ((q - zz) * np.repeat(s, G, axis=0)).astype(np.float64)
    return x.astype(np.float64) @ w


@pytest.mark.parametrize(
    ("weight_type", "zero_type"),
    [(tl.u4, tl.u4), (tl.u8, tl.u8), (tl.i4, tl.u4), (tl.u2, tl.u2), (tl.u3, tl.u3),
     (tl.u4, tl.u8)],
    ids=str,
)  # fmt: skip
def test_folded_zero_points_change_no_bit(weight_type, zero_type):
    m, k, n = 5, 4 * BK, 2 * BN - 8
    x, w, s, z, codes, zeros = inputs(weight_type, zero_type, m, k, n)
    args = (x, w, s, z, np.zeros((m, n), np.float16))
    consts = {"WT": weight_type, "ZT": zero_type}
    compiled = asymmetric_matmul(*args, **consts)
    interpreted = asymmetric_matmul.interpret(*args, **consts)
    assert np.array_equal(compiled.view(np.uint16), interpreted.view(np.uint16))
    expected = reference(x, codes, zeros, s, weight_type, zero_type)
    scale = np.abs(expected).max()
    assert np.abs(compiled.astype(np.float64) - expected).max() <= scale * quant.tolerance(k)


def folded(weight_type: tl.DType, zero_type: tl.DType) -> bool:
    """Whether the thread IR subtracts the zero points inside the recipe: no f16 `sub`
    of single elements, f16x2 adds of the zero points' words to the magic."""
    fn = asymmetric_matmul.compile(WT=weight_type, ZT=zero_type).thread

    found = [
        e for stmt in t.walk_stmts(fn.body) for x in t.stmt_exprs(stmt) for e in t.walk_expr(x)
    ]
    scalar_subs = [
        e for e in found if isinstance(e, t.Binary) and e.op == "sub" and e.dtype == tl.f16
    ]
    pair_adds = [e for e in found if isinstance(e, t.Pair) and e.op == "add"]
    return not scalar_subs and bool(pair_adds)


@pytest.mark.parametrize(
    ("weight_type", "zero_type", "folds"),
    [(tl.u4, tl.u4, True), (tl.u8, tl.u8, True), (tl.u3, tl.u3, True),
     (tl.f4e2m1, tl.u4, False)],  # small floats subtract no magic: nothing to fold into
    ids=str,
)  # fmt: skip
def test_integer_zero_points_are_folded(weight_type, zero_type, folds):
    assert folded(weight_type, zero_type) == folds


@pytest.mark.usefixtures("disassembler")
def test_a_zero_point_costs_nothing_per_weight_on_sm90():
    """Zero points add instructions per column a thread holds (load, convert and pair
    them, add them to the magic: once per group), none per weight: the main loop's
    extra dequantization instructions over the symmetric loop's stay the same when a
    tile holds twice the weights (BK = G = 64, then 128)."""

    def dequant_ops(kernel, block_k, **extra):
        consts = {"WT": tl.u4, "G": block_k, "BM": BM, "BN": BN, "BK": block_k, **extra}
        compiled = kernel.compile(target="sm_90", **consts)
        ops = sass.opcodes(sass.main_loop(sass.disassemble(compiled.cubin)))
        deq = "dequantization (LOP3/PRMT/half2/cvt)"
        return sum(n for op, n in ops.items() if sass.classify(op) == deq)

    extra = {
        block_k: dequant_ops(asymmetric_matmul, block_k, ZT=tl.u4)
        - dequant_ops(quant.quant_matmul, block_k)
        for block_k in (64, 128)
    }
    assert extra[128] == extra[64], extra
    columns = 2  # BN = 64 over 4 warps: 16 columns a warp, 2 a thread (mma n8 tiles)
    assert extra[64] <= 10 * columns, extra
