"""6-bit floats -> f16 by way of f8 bytes (recipe 7 of `tilelang.lowering.dequant`):
f6e3m2 through f8e5m2 bytes on every target, f6e2m3 through f8e4m3 bytes and the
pair conversion on sm_89 and later; against ml_dtypes' float6 types, every code at
every element of a group, with and without folded scales (one rounding of value · s,
from float64).

What a CPU checks: the recipes each target gets, run through the LLVM backend (its
`F8Pair` included), and their instruction counts; NVRTC compiles the sm_90 recipe
(F2FP in SASS, no shifted word per code offset).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import Lets

from tilelang import dtypes as d
from tilelang.codegen.cuda import emit_cuda, kernel_symbol
from tilelang.ir import thread as t
from tilelang.lowering import dequant as dq
from tilelang.runtime import sass
from tilelang.runtime.cpu import compile_cpu
from tilelang.runtime.nvrtc import compile_cuda
from tilelang.target import TARGETS

I32, I64, U32 = d.i32, d.i64, d.u32
THREADS = 64
REFERENCE = {"f6e2m3": ml_dtypes.float6_e2m3fn, "f6e3m2": ml_dtypes.float6_e3m2fn}


class LoadedScales:
    """Thread i's scales are f16 pairs in words 8i .. 8i+7 of the tensor s; products
    with constants one f16x2 mul each, made once."""

    def __init__(self, lets: Lets) -> None:
        self.lets, self.words, self.products = lets, {}, {}

    def word(self, j: int) -> t.Expr:
        if j not in self.words:
            self.words[j] = self.lets.let(t.Read("s", j, U32), "s")
        return self.words[j]

    def times(self, j: int, constant: t.Imm) -> t.Expr:
        key = (j, constant.value)
        if key not in self.products:
            product = t.Pair("mul", d.f16, self.word(j), constant)
            self.products[key] = self.lets.let(product, "s")
        return self.products[key]


def _kernel(
    src: d.DType, target: str | None, scaled: bool, positions: list[int] | None = None
) -> tuple[t.ThreadFunction, list]:
    """One thread per group of 16 codes (3 words) -> 8 words of f16 pairs; `positions`:
    element e's code at code positions[e] of the bit stream (stream order when None)."""
    i = t.Name("i", I32)
    x, y = t.Name("xo", I64), t.Name("yo", I64)
    block = t.Binary("mul", t.BlockIndex(0), t.Imm(THREADS, I32))
    body: list[t.Stmt] = [
        t.Let(i, t.Binary("add", block, t.ThreadIndex())),
        t.Let(x, t.Binary("mul", t.Cvt(i, I64), t.Imm(12, I64))),
        t.Let(y, t.Binary("mul", t.Cvt(i, I64), t.Imm(32, I64))),
    ]
    body += [t.GlobalLoad(t.Reg("w", 4 * k), 4, "x", _at(x, 4 * k)) for k in range(3)]
    body += [t.GlobalLoad(t.Reg("s", 16 * k), 16, "s", _at(y, 16 * k)) for k in range(2)]
    lets = Lets(target)
    words = [lets.let(t.Read("w", k, U32), "w") for k in range(3)]
    scales = LoadedScales(lets) if scaled else None
    results, vectorized = dq.dequantize_group(lets, words, src, d.f16, positions, scales=scales)
    assert vectorized and len(results) == 8
    body += lets.stmts
    body += [t.SetLocal("o", j, r) for j, r in enumerate(results)]
    body += [t.GlobalStore("y", _at(y, 16 * k), t.Reg("o", 16 * k), 16) for k in range(2)]
    fn = t.ThreadFunction(
        f"f6_{src}_{target}",
        (t.Param("x", U32, True), t.Param("s", U32, True), t.Param("y", U32, True)),
        THREADS,
        (t.Imm(1, I32),),
        0,
        (t.Local("w", U32, 3), t.Local("s", U32, 8), t.Local("o", U32, 8)),
        tuple(body),
    )
    return fn, lets.stmts


def _at(base: t.Expr, byte: int) -> t.Expr:
    return t.Binary("add", base, t.Imm(byte, I64)) if byte else base


def _codes() -> np.ndarray:
    """[64, 16]: group g holds codes g, g+1, ... (mod 64): every code at every element."""
    return ((np.arange(64)[:, None] + np.arange(16)[None, :]) % 64).astype(np.uint8)


def _pack(codes: np.ndarray) -> np.ndarray:
    """Each row's 16 codes as 96 bits, little-endian, code e at bits [6e, 6e + 6)."""
    words = np.zeros((codes.shape[0], 3), np.uint64)
    for e in range(16):
        bit = 6 * e
        words[:, bit // 32] |= (codes[:, e].astype(np.uint64) << np.uint64(bit % 32)) & 0xFFFFFFFF
        if bit % 32 + 6 > 32:
            words[:, bit // 32 + 1] |= codes[:, e].astype(np.uint64) >> np.uint64(32 - bit % 32)
    return words.astype(np.uint32).ravel()


def _run(fn: t.ThreadFunction, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    out = np.zeros(codes.size // 2, np.uint32)
    args = {"x": _pack(codes), "s": scales.astype(np.float16).view("<u4"), "y": out}
    compile_cpu(fn).launch(args, grid=(codes.shape[0] // THREADS,))
    return out.view(np.uint16)


def _expected(src: d.DType, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    values = codes.ravel().view(REFERENCE[src.name]).astype(np.float64)
    with np.errstate(over="ignore"):
        return (values * scales.astype(np.float64)).astype(np.float16).view(np.uint16)


def _uses(stmts: list, kind: type) -> bool:
    return any(isinstance(e, kind) for s in stmts for e in t.walk_expr(s.value))


SCALE_BOUND = {"f6e2m3": 4.0, "f6e3m2": 16.0}
"""The fold's bound for f16 (`scale_folds`): 2^(15 − bias)·s finite."""


@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "scaled"])
@pytest.mark.parametrize(
    ("src", "target", "via"),
    [(d.f6e3m2, None, "e5m2"), (d.f6e3m2, "sm_80", "e5m2"), (d.f6e3m2, "sm_90", "e5m2"),
     (d.f6e2m3, "sm_90", "e4m3"), (d.f6e2m3, "sm_89", "e4m3"), (d.f6e2m3, "sm_80", None),
     (d.f6e2m3, None, None)],
    ids=str,
)  # fmt: skip
def test_every_code_at_every_element(src, target, via, scaled):
    fn, stmts = _kernel(src, target, scaled)
    assert _uses(stmts, t.F8Pair) == (via == "e4m3")
    assert (dq._byte_form(src, d.f16, dq.native_f8_pairs(TARGETS.get(target))) is not None) == (
        via is not None
    )
    codes = _codes()
    rng = np.random.default_rng(5)
    if scaled:  # +0 up to the largest f16 below the bound, subnormals included
        below = int(d.f16.encode(SCALE_BOUND[src.name]))
        scales = rng.integers(0, below, codes.size).astype(np.uint16).view(np.float16)
        scales[:3] = np.array([0, 1, below - 1], np.uint16).view(np.float16)
    else:
        scales = np.ones(codes.size, np.float16)
    got = _run(fn, codes, scales)
    expected = _expected(src, codes, scales)
    bad = np.nonzero(got != expected)[0][:6]
    assert not bad.size, [(int(codes.ravel()[b]), hex(got[b]), hex(expected[b])) for b in bad]


def _dequantization(fn: t.ThreadFunction) -> tuple[int, dict]:
    """The conversion's SASS instructions (LOP3/PRMT/half2/cvt, every shift) on sm_90."""
    binary = compile_cuda(emit_cuda(fn, launch_bounds=THREADS), kernel_symbol(fn), "sm_90")
    ops = sass.opcodes(sass.kernel_body(sass.disassemble(binary.cubin)))
    dequant = "dequantization (LOP3/PRMT/half2/cvt)"
    count = sum(
        n
        for op, n in ops.items()
        if sass.classify(op) == dequant or op.startswith(("SHF", "IMAD.SHL", "HFMA2"))
    )
    return count, ops


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize(("src", "target"), [(d.f6e3m2, None), (d.f6e2m3, "sm_90")], ids=str)
def test_a_group_costs_fewer_instructions_than_recipe_4(src, target):
    """A group of 16 codes with scales (8 products with the scales included: one per
    pair here, one per column and group in a kernel), compiled for sm_90: recipe 7 takes
    7 funnel shifts, 4 × (prmt, shl, and, lop3), 8 × (conversion, mul) and the 8
    products = 47; recipe 4 took 60 (8 × (prmt, and, shr, lop3, mul), its 12 shifted
    words and the products)."""
    after, ops = _dequantization(_kernel(src, target, scaled=True)[0])
    assert after <= 47, ops
    before, ops = _dequantization(_kernel(d.f6e2m3, "sm_80", scaled=True, positions=REVERSED)[0])
    assert before >= 60, ops


REVERSED = list(range(15, -1, -1))
"""Codes stored in reverse order: no pair has a later partner a whole number of bytes
after it (recipes 7 and 8 need one), so every pair takes recipe 4."""


@pytest.mark.usefixtures("disassembler")
def test_f6e2m3_on_sm_80_costs_fewer_instructions_than_recipe_4():
    """sm_80 has no f8 pair conversion: recipe 8 gathers each four codes on the tops of
    bytes (7 funnel shifts per 16 codes, one prmt per 4), rotates the word once and
    masks it twice (rotate, and, and, lop3), then one prmt and one product per pair:
    7 + 4 × 5 + 8 × 2 + the 8 products = 51; recipe 4 takes 60."""
    after, ops = _dequantization(_kernel(d.f6e2m3, "sm_80", scaled=True)[0])
    before, _ = _dequantization(_kernel(d.f6e2m3, "sm_80", scaled=True, positions=REVERSED)[0])
    assert after <= 51 < 60 <= before, (after, before, ops)


@pytest.mark.usefixtures("disassembler")
def test_nvrtc_compiles_the_f6e2m3_recipe_for_sm_90():
    _, ops = _dequantization(_kernel(d.f6e2m3, "sm_90", scaled=False)[0])
    assert ops["F2FP.F16.E4M3.UNPACK_B"] == 8 and ops["PRMT"] == 4, ops


@pytest.mark.parametrize("m", [1, 17])
def test_mxfp6_matmul_lowered_for_sm_90_matches_the_cpu_lowering(monkeypatch, m):
    """The library's MXFP6-e2m3 kernels lowered for sm_90 (recipe 7 with f8e4m3 bytes)
    run on the CPU backend give the CPU lowering's output (recipe 4) bit for bit."""
    import importlib

    from tilelang import quant

    kernel_module = importlib.import_module("tilelang.kernel")  # the name is also a function
    rng = np.random.default_rng(13)
    k, n = 256, 136  # N not a multiple of the tile
    qw = quant.quantize(rng.standard_normal((k, n)) * 0.05, format="mxfp6_e2m3")
    x = rng.standard_normal((m, k)).astype(np.float16)
    expected = np.asarray(quant.matmul(x, qw))
    launches = quant.plan(qw, m, "sm_90").launches
    used = [
        isinstance(e, t.F8Pair)
        for launch in launches
        for s in t.walk_stmts(launch.compiled.thread.body)
        for top in t.stmt_exprs(s)
        for e in t.walk_expr(top)
    ]
    assert any(used)
    monkeypatch.setattr(kernel_module, "CPU", TARGETS["sm_90"])  # run sm_90's thread IR
    got = np.asarray(quant.matmul(x, qw))
    assert (got.view(np.uint16) == expected.view(np.uint16)).all()
