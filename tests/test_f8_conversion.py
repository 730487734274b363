"""f8e4m3 -> f16 by the target's own pair conversion (`cvt.rn.f16x2.e4m3x2`, sm_89 and
later: `thread.F8Pair`, recipe 6 of `tilelang.lowering.dequant`) against ml_dtypes'
float8_e4m3fn, on every code.

What a CPU can check: the recipe a GPU target gets, run through the LLVM backend's
implementation of the conversion, gives every code's value (NaN as NaN) and agrees with
the arithmetic recipe the CPU target keeps; sm_80 keeps the arithmetic recipe; NVRTC
compiles the conversion for sm_89/sm_90 to the conversion instruction (F2FP) in SASS.
"""

from __future__ import annotations

import dataclasses
import importlib

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
CODES = np.arange(256, dtype=np.uint8)


class LoadedScales:
    """The Scales protocol of `dequantize_group`: thread i's scales are words 2i, 2i+1
    of the tensor s (f16 pairs), its products with constants one f16x2 mul each."""

    def __init__(self, lets: Lets) -> None:
        self.lets = lets

    def word(self, j: int) -> t.Expr:
        return self.lets.let(t.Read("s", j, U32), "s")

    def times(self, j: int, constant: t.Imm) -> t.Expr:
        return self.lets.let(t.Pair("mul", d.f16, self.word(j), constant), "s")


class ConstantScale:
    """A constant scale c as `lowering.elementwise.ConstScales` gives it: the word c
    (rounded to f16: 0 when c is below its subnormals) and the exact products C·c."""

    def __init__(self, value: float) -> None:
        self.value = value

    def word(self, j: int) -> t.Imm:
        return self._pair(self.value)

    def times(self, j: int, constant: t.Imm) -> t.Imm:
        return self._pair(float(d.f16.decode(int(constant.value) & 0xFFFF)) * self.value)

    def _pair(self, value: float) -> t.Imm:
        code = int(d.f16.encode(value))
        return t.Imm(code | code << 16, U32)


def _group_kernel(
    target: str | None, positions: list[int] | None, scales: str | float | None = None
) -> t.ThreadFunction:
    """One thread per word of four f8e4m3 codes -> two words of f16 pairs; `scales`
    "loaded": times the pairs of f16 scales in s, a float: times that constant."""
    i = t.Name("i", I32)
    x, y = t.Name("xo", I64), t.Name("yo", I64)
    block = t.Binary("mul", t.BlockIndex(0), t.Imm(THREADS, I32))
    body: list[t.Stmt] = [
        t.Let(i, t.Binary("add", block, t.ThreadIndex())),
        t.Let(x, t.Binary("mul", t.Cvt(i, I64), t.Imm(4, I64))),
        t.Let(y, t.Binary("mul", t.Cvt(i, I64), t.Imm(8, I64))),
        t.GlobalLoad(t.Reg("w", 0), 4, "x", x),
        t.GlobalLoad(t.Reg("s", 0), 8, "s", y),
    ]
    lets = Lets(target)
    word = lets.let(t.Read("w", 0, U32), "w")
    folded = LoadedScales(lets) if scales == "loaded" else scales
    folded = ConstantScale(folded) if isinstance(folded, float) else folded
    results, vectorized = dq.dequantize_group(
        lets, [word], d.f8e4m3, d.f16, positions, scales=folded
    )
    assert vectorized and len(results) == 2
    body += lets.stmts
    body += [t.SetLocal("o", j, r) for j, r in enumerate(results)]
    second = t.Binary("add", y, t.Imm(4, I64))
    body += [t.GlobalStore("y", y, t.Reg("o", 0), 4), t.GlobalStore("y", second, t.Reg("o", 4), 4)]
    return t.ThreadFunction(
        f"f8_pairs_{target}",
        (t.Param("x", U32, True), t.Param("s", U32, True), t.Param("y", U32, True)),
        THREADS,
        (t.Imm(1, I32),),
        0,
        (t.Local("w", U32, 1), t.Local("s", U32, 2), t.Local("o", U32, 2)),
        tuple(body),
    )


def _uses_f8_pairs(fn: t.ThreadFunction) -> bool:
    return any(
        isinstance(sub, t.F8Pair)
        for stmt in t.walk_stmts(fn.body)
        for e in t.stmt_exprs(stmt)
        for sub in t.walk_expr(e)
    )


def _codes_in_groups(positions: list[int] | None) -> np.ndarray:
    """[groups, 4]: every code at every element of a group, stored at `positions`."""
    groups = 256  # group g holds codes g, g+1, g+2, g+3 (mod 256)
    codes = (np.arange(groups)[:, None] + np.arange(4)[None, :]) % 256
    stored = codes.copy()
    if positions is not None:
        stored[:, positions] = codes
    return codes.astype(np.uint8), stored.astype(np.uint8)


def _run(
    fn: t.ThreadFunction, positions: list[int] | None, scales: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`scales`: one f16 per element (as the kernel reads them: per output half)."""
    codes, stored = _codes_in_groups(positions)
    out = np.zeros(codes.size // 2, dtype=np.uint32)
    s = np.zeros(codes.size, np.float16) if scales is None else scales
    args = {"x": stored.ravel().view("<u4"), "s": s.view("<u4"), "y": out}
    compile_cpu(fn).launch(args, grid=(256 // THREADS,))
    return codes.ravel(), out.view(np.uint16)


def _expected(codes: np.ndarray) -> np.ndarray:
    """ml_dtypes' value of each e4m3 code as f16 bits (every e4m3 value is an f16)."""
    values = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32).astype(np.float16)
    return values.view(np.uint16)


def _assert_same(got: np.ndarray, codes: np.ndarray) -> None:
    expected = _expected(codes)
    same = (got == expected) | (
        np.isnan(got.view(np.float16)) & np.isnan(expected.view(np.float16))
    )
    bad = np.nonzero(~same)[0][:6]
    assert same.all(), [(int(codes[b]), hex(got[b]), hex(expected[b])) for b in bad]


@pytest.mark.parametrize(
    ("target", "native"),
    [("sm_80", False), ("sm_86", False), ("sm_89", True), ("sm_90", True), ("sm_90a", True),
     ("sm_100", True), ("sm_120", True), ("cpu", False)],
)  # fmt: skip
def test_pair_conversion_from_sm_89_on(target, native):
    assert dq.native_f8_pairs(TARGETS[target]) == native
    assert not dq.native_f8_pairs(None)


@pytest.mark.parametrize("positions", [None, [0, 2, 1, 3], [3, 1, 0, 2]], ids=str)
def test_gpu_recipe_gives_every_code(positions):
    """The sm_90 recipe (a half of the word, or a prmt of two bytes, then the pair
    conversion) on the CPU backend: every code's value, NaN as NaN."""
    fn = _group_kernel("sm_90", positions)
    assert _uses_f8_pairs(fn)
    codes, got = _run(fn, positions)
    _assert_same(got, codes)


@pytest.mark.parametrize("target", ["sm_80", None])
def test_other_targets_keep_the_arithmetic_recipe(target):
    fn = _group_kernel(target, None)
    assert not _uses_f8_pairs(fn)
    codes, got = _run(fn, None)
    _assert_same(got, codes)


def test_gpu_and_cpu_recipes_agree_on_every_code():
    """The two recipes give the same bits, except NaN payloads (NaN either way)."""
    _, gpu = _run(_group_kernel("sm_90", [0, 2, 1, 3]), [0, 2, 1, 3])
    codes, cpu = _run(_group_kernel(None, [0, 2, 1, 3]), [0, 2, 1, 3])
    nan = np.isnan(codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32))
    assert (gpu[~nan] == cpu[~nan]).all()
    assert np.isnan(gpu[nan].view(np.float16)).all() and np.isnan(cpu[nan].view(np.float16)).all()
    assert nan.sum() == 2 * 4  # 0x7F and 0xFF, at each of the four elements


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("arch", ["sm_89", "sm_90"])
def test_nvrtc_compiles_the_pair_conversion(arch):
    """The conversion is one F2FP per pair in SASS: the two words of four codes take
    two (or, with the prmt of the paired layout, two plus their prmts)."""
    fn = _group_kernel(arch, None)
    binary = compile_cuda(emit_cuda(fn, launch_bounds=THREADS), kernel_symbol(fn), arch)
    ops = sass.opcodes(sass.kernel_body(sass.disassemble(binary.cubin)))
    conversions = {op: n for op, n in ops.items() if op.startswith("F2FP")}
    assert sum(conversions.values()) == 2, ops
    assert all("E4M3" in op for op in conversions), conversions
    assert not any(op.startswith(("HMUL2", "LOP3")) for op in ops), ops


@pytest.mark.usefixtures("disassembler")
def test_sm_80_compiles_without_the_pair_conversion():
    fn = _group_kernel("sm_80", None)
    binary = compile_cuda(emit_cuda(fn, launch_bounds=THREADS), kernel_symbol(fn), "sm_80")
    ops = sass.opcodes(sass.kernel_body(sass.disassemble(binary.cubin)))
    assert not any(op.startswith("F2FP") for op in ops), ops


def _scaled_reference(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """round(value · s) to f16, from float64 (exact product, one rounding)."""
    values = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return (values * scales.astype(np.float64)).astype(np.float16).view(np.uint16)


def _assert_scaled(got: np.ndarray, codes: np.ndarray, scales: np.ndarray) -> None:
    expected = _scaled_reference(codes, scales)
    same = (got == expected) | (
        np.isnan(got.view(np.float16)) & np.isnan(expected.view(np.float16))
    )
    bad = np.nonzero(~same)[0][:6]
    assert same.all(), [
        (int(codes[b]), float(scales[b]), hex(got[b]), hex(expected[b])) for b in bad
    ]


@pytest.mark.parametrize("target", ["sm_90", None])
@pytest.mark.parametrize("positions", [None, [0, 2, 1, 3]], ids=str)
def test_folded_scales_round_once(target, positions):
    """Scales from +0 to the largest f16 below 2^8 (the fold's bound for f8e4m3, where
    2^8·s stays finite), subnormal ones included: every value times s, rounded once."""
    rng = np.random.default_rng(11)
    below = int(d.f16.encode(256.0))
    scales = rng.integers(0, below, 256 * 4).astype(np.uint16)
    scales[:4] = [0, 1, 0x3C00, below - 1]  # +0, the least subnormal, 1, the largest
    scales = scales.view(np.float16)
    fn = _group_kernel(target, positions, "loaded")
    assert _uses_f8_pairs(fn) == (target is not None)
    codes, got = _run(fn, positions, scales)
    _assert_scaled(got, codes, scales)


@pytest.mark.parametrize(("value", "native"), [(2.0**-3, True), (2.0**-8, True), (2.0**-30, False)])
def test_constant_scales_that_are_no_f16_keep_the_arithmetic_recipe(value, native):
    """A constant 2^-30 folds into recipe 4 (2^8 · 2^-30 is an f16) but is no f16
    itself, so recipe 6 cannot multiply by it."""
    fn = _group_kernel("sm_90", None, value)
    assert _uses_f8_pairs(fn) == native
    codes, got = _run(fn, None)
    _assert_scaled(got, codes, np.full(codes.size, value))


@pytest.mark.parametrize("m", [1, 17])
def test_mxfp8_matmul_lowered_for_sm_90_matches_the_cpu_lowering(monkeypatch, m):
    """The library's MXFP8-e4m3 kernels lowered for sm_90 (recipe 6, its scale folded
    or not) run on the CPU backend give the CPU lowering's output bit for bit: no
    weight code is NaN, and every other code has the same value either way."""
    from tilelang import quant

    kernel_module = importlib.import_module("tilelang.kernel")  # the name is also a function

    rng = np.random.default_rng(12)
    k, n = 256, 136  # N not a multiple of the tile
    qw = quant.quantize(rng.standard_normal((k, n)) * 0.05, format="mxfp8_e4m3")
    x = rng.standard_normal((m, k)).astype(np.float16)
    expected = np.asarray(quant.matmul(x, qw))
    launches = quant.plan(qw, m, "sm_90").launches
    assert any(_uses_f8_pairs(launch.compiled.thread) for launch in launches)
    monkeypatch.setattr(kernel_module, "CPU", TARGETS["sm_90"])  # run sm_90's thread IR
    got = np.asarray(quant.matmul(x, qw))
    assert got.dtype == expected.dtype and (got.view(np.uint16) == expected.view(np.uint16)).all()


def _pair_kernel(src: d.DType) -> t.ThreadFunction:
    """One thread per word of four codes: `F8Pair` of its low half, then its high half."""
    i = t.Name("i", I32)
    x, y = t.Name("xo", I64), t.Name("yo", I64)
    block = t.Binary("mul", t.BlockIndex(0), t.Imm(THREADS, I32))
    word = t.Name("w0", U32)
    body: list[t.Stmt] = [
        t.Let(i, t.Binary("add", block, t.ThreadIndex())),
        t.Let(x, t.Binary("mul", t.Cvt(i, I64), t.Imm(4, I64))),
        t.Let(y, t.Binary("mul", t.Cvt(i, I64), t.Imm(8, I64))),
        t.GlobalLoad(t.Reg("w", 0), 4, "x", x),
        t.Let(word, t.Read("w", 0, U32)),
        t.SetLocal("o", 0, t.F8Pair(word, src, 0)),
        t.SetLocal("o", 1, t.F8Pair(word, src, 1)),
        t.GlobalStore("y", y, t.Reg("o", 0), 8),
    ]
    return t.ThreadFunction(
        f"f8_pair_{src}",
        (t.Param("x", U32, True), t.Param("y", U32, True)),
        THREADS,
        (t.Imm(1, I32),),
        0,
        (t.Local("w", U32, 1), t.Local("o", U32, 2)),
        tuple(body),
    )


@pytest.mark.parametrize(
    ("src", "reference"), [(d.f8e4m3, ml_dtypes.float8_e4m3fn), (d.f8e5m2, ml_dtypes.float8_e5m2)]
)
def test_the_pair_conversion_gives_every_code_of_either_half(src, reference):
    """`F8Pair` itself on the CPU backend: both halves, every code at each of the four
    bytes; ±inf kept (f8e5m2), NaN as NaN."""
    codes, _ = _codes_in_groups(None)
    out = np.zeros(codes.size // 2, dtype=np.uint32)
    compile_cpu(_pair_kernel(src)).launch(
        {"x": codes.ravel().view("<u4"), "y": out}, grid=(256 // THREADS,)
    )
    got = out.view(np.uint16)
    expected = codes.ravel().view(reference).astype(np.float32).astype(np.float16)
    same = (got == expected.view(np.uint16)) | (np.isnan(got.view(np.float16)) & np.isnan(expected))
    assert same.all(), np.nonzero(~same)[0][:6]
    assert np.isinf(expected).any() == (src == d.f8e5m2)


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("src", [d.f8e4m3, d.f8e5m2], ids=str)
def test_nvrtc_compiles_either_half_of_a_word_into_one_conversion(src):
    fn = _pair_kernel(src)
    binary = compile_cuda(emit_cuda(fn, launch_bounds=THREADS), kernel_symbol(fn), "sm_90")
    ops = sass.opcodes(sass.kernel_body(sass.disassemble(binary.cubin)))
    name = {"f8e4m3": "E4M3", "f8e5m2": "E5M2"}[src.name]
    assert {op: n for op, n in ops.items() if op.startswith("F2FP")} == {
        f"F2FP.F16.{name}.UNPACK_B": 2
    }, ops
    assert "PRMT" not in ops and not any(op.startswith(("SHF", "LOP3")) for op in ops), ops


@pytest.mark.parametrize(
    ("src", "half", "message"),
    [(d.f6e2m3, 0, "no f16x2 conversion of f6e2m3 codes from half 0"),
     (d.f8e4m3, 2, "no f16x2 conversion of f8e4m3 codes from half 2")],
)  # fmt: skip
def test_the_verifier_names_what_has_no_pair_conversion(src, half, message):
    from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function

    fn = _pair_kernel(d.f8e4m3)
    body = tuple(
        t.SetLocal("o", 0, t.F8Pair(s.value.a, src, half))
        if isinstance(s, t.SetLocal) and s.index == 0
        else s
        for s in fn.body
    )
    with pytest.raises(ThreadIRError, match=message):
        verify_thread_function(dataclasses.replace(fn, body=body))
