"""The CUDA emitter (tilelang.codegen.cuda) and the NVRTC driver, without a GPU.

Every example compiles through NVRTC for sm_80, sm_89 and sm_90 with no spills; the
emitted text is deterministic; hand-built thread IR exercising every statement and
expression kind compiles; compile errors show the numbered source lines; resources are
read from the ptxas log and from the cubin; where a SASS disassembler is installed, the
matmuls use HMMA, LDSM and 128-bit global loads, and the quantized one no I2F.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from conftest import load_example

import tilelang as tl
from tilelang import dtypes as d
from tilelang.codegen import cuda as cuda_module
from tilelang.codegen.cuda import CudaEmitError, emit_cuda, kernel_params, kernel_symbol
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.ops import ELEMENTWISE
from tilelang.ir.thread_verify import verify_thread_function
from tilelang.runtime.cubin import (
    CubinError,
    read_resources,
    resources_from_cubin,
    resources_from_log,
)
from tilelang.runtime.nvrtc import (
    CudaCompileError,
    NvrtcUnavailableError,
    compile_cuda,
    nvrtc_version,
)
from tilelang.runtime.sass import disassemble, opcodes

ARCHS = ("sm_80", "sm_89", "sm_90", "sm_90a")
REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- examples

QUANT_TYPES = ("u4", "u3", "i4", "u8", "f4e2m1", "f8e4m3", "u1", "f6e3m2")

EXAMPLES: dict[str, tuple[str, str, dict]] = {
    "matmul": ("matmul", "matmul", {}),
    "matmul_32x32x64": ("matmul", "matmul", {"BM": 32, "BN": 32, "BK": 64}),
    "matmul_unaligned": ("matmul", "matmul", {"assume": None}),
    "softmax": ("softmax", "softmax", {}),
    "softmax_bn256": ("softmax", "softmax", {"BN": 256}),
    "vector_add": ("vector_add", "vector_add", {}),
    "row_sum": ("row_sum", "row_sum", {}),
    "row_sum_f16": ("row_sum", "row_sum", {"T": tl.f16}),
    "cumsum": ("cumsum", "cumsum_rows", {}),
    "cumsum_i32": ("cumsum", "cumsum_rows", {"T": tl.i32}),
    "quant_matmul_u4_g32": ("quant_matmul", "quant_matmul", {"WT": tl.u4, "G": 32}),
    "quant_matmul_i8_bm64": ("quant_matmul", "quant_matmul", {"WT": tl.i8, "BM": 64, "BK": 64}),
    **{
        f"quant_matmul_{name}": ("quant_matmul", "quant_matmul", {"WT": d.dtype(name)})
        for name in QUANT_TYPES
    },
}


@cache
def example_thread(label: str) -> t.ThreadFunction:
    module, kernel, constexprs = EXAMPLES[label]
    return getattr(load_example(module), kernel).compile(**constexprs).thread


@cache
def example_source(label: str) -> str:
    return emit_cuda(example_thread(label))


@cache
def example_binary(label: str, arch: str):
    fn = example_thread(label)
    return compile_cuda(example_source(label), kernel_symbol(fn), arch)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("label", sorted(EXAMPLES))
def test_example_compiles_without_spills(label, arch):
    binary = example_binary(label, arch)
    r = binary.resources
    print(f"{label} {arch}: {r.registers} registers, {r.local_bytes} bytes stack")
    assert r.source == "ptxas"
    assert r.spill_store_bytes == 0 and r.spill_load_bytes == 0, binary.log
    assert r.local_bytes == 0, "a register array fell back to local memory"
    assert 0 < r.registers <= 255
    assert binary.cubin[:4] == b"\x7fELF"
    assert f".target {arch}" in binary.ptx
    assert "ld.local" not in binary.ptx and "st.local" not in binary.ptx


@pytest.mark.parametrize("arch", ["sm_100", "sm_120"])
@pytest.mark.parametrize("label", ["matmul", "quant_matmul_u4", "softmax", "cumsum_i32"])
def test_blackwell_targets_build_the_same_code(label, arch):
    """sm_100 and sm_120 have mma.sync, ldmatrix and cp.async, so the same source builds."""
    binary = example_binary(label, arch)
    r = binary.resources
    assert r.spill_store_bytes == 0 and r.local_bytes == 0, binary.log
    assert f".target {arch}" in binary.ptx
    if label.startswith(("matmul", "quant")):
        assert "mma.sync.aligned.m16n8k16" in binary.ptx


def test_example_source_is_header_free_and_shaped():
    src = example_source("matmul")
    fn = example_thread("matmul")
    assert "#include" not in src
    assert f'extern "C" __global__ void __launch_bounds__({fn.threads}) matmul(' in src
    assert "extern __shared__ __align__(16) u8 tl_smem[];" in src
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in src
    assert "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" in src
    # Locals are register arrays of their dtype: the 128 x 128 f32 accumulator over
    # 128 threads is 128 a thread.
    assert re.search(r"alignas\(16\) f32 l_\w+\[128\] = \{\};", src)


def test_quantized_matmul_uses_bit_tricks():
    """u4 -> f16: lop3 under per-half magic exponents, the magic taken off by a half2 sub
    of immediates (no fma with a constant operand), a prmt for half of the pairs."""
    src = example_source("quant_matmul_u4")
    assert "lop3.b32" in src and "prmt.b32" in src and "sub.rn.f16x2" in src
    assert "fma.rn.f16x2" not in src


def test_emitted_text_is_deterministic():
    fn = example_thread("quant_matmul_u4")
    first = emit_cuda(fn)
    assert emit_cuda(fn) == first
    # A structurally equal copy (new objects) gives the same text.
    copy = t.ThreadFunction(
        fn.name, fn.params, fn.threads, fn.grid, fn.shared_bytes, fn.locals, fn.body, fn.stats
    )
    assert emit_cuda(copy) == first


def test_emitted_text_is_deterministic_across_processes():
    """No hash-seed-dependent ordering: two interpreters with different seeds agree."""
    script = (
        "import sys; sys.path.insert(0, 'examples'); import hashlib, matmul, quant_matmul, tilelang as tl;"
        "from tilelang.codegen.cuda import emit_cuda;"
        "print(hashlib.sha256((emit_cuda(matmul.matmul.compile().thread) + "
        "emit_cuda(quant_matmul.quant_matmul.compile(WT=tl.f6e3m2).thread)).encode()).hexdigest())"
    )
    digests = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1


# --------------------------------------------------------------------------- the ABI


def test_kernel_params_follow_fn_params():
    fn = example_thread("matmul")
    params = kernel_params(fn)
    assert [p.name for p in params] == [p.name for p in fn.params]
    by_name = {p.name: p for p in params}
    assert by_name["a"].c_type == "const u8*" and by_name["b"].c_type == "const u8*"
    assert by_name["c"].c_type == "u8*"  # stored to
    assert (by_name["M"].c_type, by_name["M"].size) == ("i32", 4)
    src = example_source("matmul")
    assert "const u8* __restrict__ g_a" in src and "u8* __restrict__ g_c" in src
    assert "i32 v_M" in src


def test_kernel_symbol_avoids_keywords_and_odd_names():
    base = example_thread("vector_add")
    assert kernel_symbol(base) == "vector_add"
    for name, symbol in (
        ("class", "tl_kernel_class"),
        ("a-b", "tl_kernel_a_x2db"),
        ("exp", "tl_kernel_exp"),
        ("tl_x", "tl_kernel_tl_x"),
    ):
        fn = t.ThreadFunction(name, base.params, base.threads, base.grid, 0, (), ())
        assert kernel_symbol(fn) == symbol
        src = emit_cuda(t.ThreadFunction(name, (), 32, (), 0, (), ()))
        assert f"void __launch_bounds__(32) {symbol}(" in src
        assert compile_cuda(src, symbol, "sm_80").cubin


def test_launch_bounds_option():
    fn = example_thread("vector_add")
    assert f"__launch_bounds__(1024) {fn.name}(" in emit_cuda(fn, launch_bounds=1024)
    with pytest.raises(CudaEmitError, match="launch bounds"):
        emit_cuda(fn, launch_bounds=fn.threads // 2)


# --------------------------------------------------------------------------- hand-built IR

I32, I64, U1, U32, U8, F16, BF16, F32 = d.i32, d.i64, d.u1, d.u32, d.u8, d.f16, d.bf16, d.f32
REGISTER = sorted(t.REGISTER_DTYPES, key=lambda dt: dt.name)


def imm(v, dt=I32):
    return t.Imm(v, dt)


def B(op, a, b):
    return t.Binary(op, a, b)


class Builder:
    """A thread function built statement by statement; every value a test computes is
    stored to the `out` tensor so that nothing is optimized away."""

    def __init__(self, name: str, threads: int = 128, shared: int = 4096) -> None:
        self.name, self.threads, self.shared = name, threads, shared
        self.params = [
            t.Param("x", U8, True),
            t.Param("out", U8, True),
            t.Param("N", I32, False),
            t.Param("flag", U1, False),
            t.Param("h", F16, False),
            t.Param("w", I64, False),
        ]
        self.locals: dict[str, t.Local] = {}
        self.body: list[t.Stmt] = []
        self.count = 0
        self.tid = t.ThreadIndex()
        self.n = t.Name("N", I32)

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def local(self, dt, count: int) -> str:
        name = self.fresh("r")
        self.locals[name] = t.Local(name, dt, count)
        return name

    def let(self, value: t.Expr, prefix: str = "v") -> t.Name:
        name = t.Name(self.fresh(prefix), value.dtype)
        self.body.append(t.Let(name, value))
        return name

    def input(self, dt) -> t.Expr:
        """A value of register dtype `dt` read from `x` (u1: a comparison)."""
        if dt == U1:
            return B("lt", self.tid, self.n)
        loc = self.local(dt, 16 // (dt.bits // 8))
        off = B("mul", t.Cvt(self.tid, I64), imm(16, I64))
        self.body.append(t.GlobalLoad(t.Reg(loc, 0), 16, "x", off))
        return t.Read(loc, 0, dt)

    def output(self, value: t.Expr) -> None:
        dt = value.dtype
        if dt == U1:
            value = t.Select(value, imm(1, U8), imm(0, U8))
            dt = U8
        loc = self.local(dt, 1)
        self.body.append(t.SetLocal(loc, 0, value))
        width = dt.bits // 8
        off = B("mul", t.Cvt(B("add", self.tid, imm(self.count)), I64), imm(width, I64))
        self.body.append(t.GlobalStore("out", off, t.Reg(loc, 0), width))

    def function(self) -> t.ThreadFunction:
        fn = t.ThreadFunction(
            self.name,
            tuple(self.params),
            self.threads,
            (B("div", B("add", self.n, imm(self.threads - 1)), imm(self.threads)),),
            self.shared,
            tuple(self.locals.values()),
            tuple(self.body),
        )
        verify_thread_function(fn)
        return fn


def compile_fn(fn: t.ThreadFunction, archs=("sm_80",)):
    src = emit_cuda(fn)
    return src, [compile_cuda(src, kernel_symbol(fn), arch) for arch in archs]


def test_every_conversion_and_bitcast_compiles():
    b = Builder("conversions")
    inputs = {dt: b.input(dt) for dt in REGISTER}
    for src, dst in itertools.product(REGISTER, REGISTER):
        b.output(t.Cvt(inputs[src], dst))
        if src.bits == dst.bits and src != dst:
            b.output(t.Bitcast(inputs[src], dst))
    compile_fn(b.function(), ("sm_80", "sm_90"))


def _ops_for(dt) -> tuple[list[str], list[str]]:
    """The unary and binary thread-IR operators the op table's rows take on `dt`
    (`accepts`: kind and width), plus the float-named unary ops integers pass through."""
    rows = [op for op in ELEMENTWISE.values() if op.accepts(dt)]
    unary = {op.thread_op for op in rows if op.arity == 1}
    binary = {op.thread_op for op in rows if op.arity == 2} & t.BINARY_OPS
    if dt.is_int:
        unary |= {"floor", "ceil"}  # identities on integers
    else:
        unary -= {"not"}
    return sorted(unary), sorted(binary)


def test_every_operator_compiles():
    b = Builder("operators")
    for dt in REGISTER:
        x, y = b.input(dt), b.input(dt)
        unary, binary = _ops_for(dt)
        for op in unary:
            b.output(t.Unary(op, x))
        for op in binary:
            b.output(B(op, x, y))
            if op in ("div", "rem") and dt.is_int:  # the constant-divisor path
                b.output(B(op, x, imm(3, dt)))
                b.output(B(op, x, imm(-1, dt)))
        for op in sorted(t.COMPARE_OPS):
            b.output(B(op, x, y))
        b.output(t.Select(B("lt", b.tid, b.n), x, y))
        if dt.is_int:
            for amount in (b.input(I32), b.input(U8), b.input(I64), b.input(U1)):
                b.output(B("shl", x, amount))
                b.output(B("shr", x, amount))
            for k in (0, 3, dt.bits - 1, dt.bits, 200, -1):
                b.output(B("shl", x, imm(k, I32)))
                b.output(B("shr", x, imm(k, I32)))
    # Immediates of every kind, special floats included.
    for value, dt in (
        (float("inf"), F32),
        (float("-inf"), d.f64),
        (float("nan"), F16),
        (-0.0, BF16),
        (1e-45, F32),
        (-(2**31), I32),
        (-(2**63), I64),
        (2**64 - 1, d.u64),
        (True, U1),
        (3.7, I32),
    ):
        b.output(B("add" if dt != U1 else "xor", b.input(dt), imm(value, dt)))
    src, _ = compile_fn(b.function(), ("sm_80", "sm_90"))
    assert "(-2147483647 - 1)" in src and "(-9223372036854775807LL - 1)" in src
    assert "__uint_as_float(0x7f800000u)" in src


def test_float_shift_is_an_emit_error():
    b = Builder("bad")
    x = b.input(F32)
    b.output(B("shl", x, imm(1)))
    with pytest.raises(CudaEmitError, match="not defined on f32"):
        emit_cuda(b.function())


def test_bit_tricks_and_pairs_compile():
    b = Builder("bits")
    a, c, s = b.input(U32), b.input(U32), b.input(U32)
    for lut in (0x00, 0x6A, 0xEA, 0xFF):
        b.output(t.Lop3(a, c, s, lut))
    b.output(t.Prmt(a, c, s))
    b.output(t.Prmt(a, imm(0, U32), imm(0x4140, U32)))
    for elem in (F16, BF16):
        for op in ("add", "sub", "mul"):
            b.output(t.Pair(op, elem, a, c))
        b.output(t.Pair("fma", elem, a, c, s))
    src, _ = compile_fn(b.function(), ("sm_80", "sm_90"))
    assert "tl_lop3<0x6a>" in src and "fma.rn.bf16x2" in src and "add.rn.f16x2" in src


def test_collectives_and_async_copies_compile():
    b = Builder("collectives", threads=128, shared=8192)
    # Shuffles: every mode and width, immediate and computed arguments.
    for mode, width in itertools.product(("idx", "xor", "up", "down"), (1, 2, 4, 8, 16, 32)):
        for arg in (imm(1 % width), imm(width + 3), B("rem", b.tid, imm(7))):
            for value in (b.input(F32), b.input(I32)):
                name = t.Name(b.fresh("s"), value.dtype)
                b.body.append(t.Shfl(name, value, mode, arg, width))
                b.output(name)
    b.body.append(t.Shfl(t.Name(b.fresh("s"), U32), b.input(U32), "idx", imm(3, d.i64)))
    b.body.append(t.Shfl(t.Name(b.fresh("s"), U32), b.input(U32), "down", b.input(U8)))
    b.body.append(t.Shfl(t.Name(b.fresh("s"), U32), b.input(U32), "up", B("lt", b.tid, b.n)))
    # cp.async of every width, with and without a predicate, then commit/wait/barrier.
    address = b.let(B("mul", B("rem", b.tid, imm(64)), imm(16)), "sa")
    for width in (4, 8, 16):
        off = B("mul", t.Cvt(b.tid, I64), imm(width, I64))
        b.body.append(t.CpAsync(address, "x", off, width))
        b.body.append(t.CpAsync(address, "x", off, width, B("lt", b.tid, b.n)))
    b.body += [t.CpAsyncCommit(), t.CpAsyncWait(1), t.CpAsyncWait(0), t.Barrier()]
    # ldmatrix of every shape into an f16 fragment, then every mma atom.
    frag = b.local(F16, 32)
    for num, trans in itertools.product((1, 2, 4), (False, True)):
        b.body.append(tm.Ldmatrix(num, trans, t.Reg(frag, 0), address))
    acc = b.local(F32, 8)
    b.body.append(
        tm.Mma("m16n8k16.f16", F16, t.Reg(acc, 0), t.Reg(frag, 0), t.Reg(frag, 16), t.Reg(acc, 0))
    )
    b.body.append(
        tm.Mma(
            "m16n8k16.f16", BF16, t.Reg(acc, 16), t.Reg(frag, 32), t.Reg(frag, 48), t.Reg(acc, 0)
        )
    )
    frag8 = b.local(U8, 32)
    iacc = b.local(I32, 4)
    b.body.append(t.Move(t.Reg(frag8, 0), t.Reg(frag, 0), 16))
    b.body.append(t.Move(t.Reg(frag8, 16), t.Reg(frag, 16), 16))
    for operands in (d.i8, U8):
        b.body.append(
            tm.Mma(
                "m16n8k32.i8",
                operands,
                t.Reg(iacc, 0),
                t.Reg(frag8, 0),
                t.Reg(frag8, 16),
                t.Reg(iacc, 0),
            )
        )
    b.output(t.Read(acc, 5, F32))
    b.output(t.Read(iacc, 3, I32))
    src, binaries = compile_fn(b.function(), ("sm_80", "sm_90a"))
    assert "shfl.sync.bfly.b32" in src and "cp.async.ca.shared.global" in src
    assert "m16n8k32.row.col.s32.s8.s8.s32" in src and "m16n8k32.row.col.s32.u8.u8.s32" in src
    assert ".target sm_90a" in binaries[1].ptx


def test_memory_moves_and_control_flow_compile():
    b = Builder("memory")
    reg = b.local(U8, 32)
    pred = B("lt", b.tid, b.n)
    for width in (1, 2, 4, 8, 16):
        off = B("mul", t.Cvt(b.tid, I64), imm(width, I64))
        b.body.append(t.GlobalLoad(t.Reg(reg, width), width, "x", off))
        b.body.append(t.GlobalLoad(t.Reg(reg, 16), width, "x", t.Cvt(b.tid, U32), pred))
        address = B("mul", b.tid, imm(width))
        b.body.append(t.SharedStore(address, t.Reg(reg, 0), width))
        b.body.append(t.SharedLoad(t.Reg(reg, 16), width, address, pred))
        b.body.append(t.SharedStore(address, t.Reg(reg, 16), width, pred))
        b.body.append(t.Move(t.Reg(reg, 16), t.Reg(reg, 0), width))
        b.body.append(t.GlobalStore("out", off, t.Reg(reg, 16), width, pred))
        b.body.append(t.GlobalStore("out", off, t.Reg(reg, 0), width))
    # Loops: the plain form, the overflow-safe counted form (i32, u32, i64, a computed
    # step), unrolled, nested; branches with and without else, on uniform and varying
    # conditions; the scalar parameters of every kind.
    acc = b.local(I32, 1)
    inner_var = t.Name("j", I64)
    inner = t.For(
        inner_var, t.Name("w", I64), imm(100, I64), imm(7, I64),
        (t.SetLocal(acc, 0, B("add", t.Read(acc, 0, I32), t.Cvt(inner_var, I32))),),
    )  # fmt: skip
    loops = [
        t.For(t.Name("k0", I32), imm(0), imm(64), imm(1), (inner,), unroll=4),
        t.For(t.Name("k1", I32), imm(0), b.n, imm(32), (
            t.If(B("lt", b.tid, imm(64)),
                 (t.SetLocal(acc, 0, B("add", t.Read(acc, 0, I32), t.Name("k1", I32))),),
                 (t.SetLocal(acc, 0, B("sub", t.Read(acc, 0, I32), imm(1))),)),
        )),
        t.For(t.Name("k2", U32), imm(5, U32), t.Cvt(b.n, U32), imm(3, U32), (
            t.SetLocal(acc, 0, B("xor", t.Read(acc, 0, I32), t.Cvt(t.Name("k2", U32), I32))),
        ), unroll=1),
        t.For(t.Name("k3", I32), imm(-5), b.n, B("add", imm(2), imm(1)), (t.Barrier(),)),
        t.If(t.Name("flag", U1), (t.Barrier(),)),
    ]  # fmt: skip
    b.body += loops
    b.output(t.Read(acc, 0, I32))
    b.output(t.Cvt(t.Name("h", F16), F32))
    b.output(t.Name("flag", U1))
    b.output(t.BlockIndex(0))
    b.output(t.BlockIndex(2))
    src, _ = compile_fn(b.function(), ("sm_80", "sm_90"))
    assert "#pragma unroll 4" in src and "#pragma unroll 1" in src
    assert "const bool v_flag = a_flag != 0;" in src
    assert "tl_bid_z" in src


def test_parameters_use_launch_abi_types():
    b = Builder("abi")
    b.output(t.Name("w", I64))
    fn = b.function()
    types = [(p.name, p.c_type, p.size) for p in kernel_params(fn)]
    assert types == [
        ("x", "const u8*", 8),
        ("out", "u8*", 8),
        ("N", "i32", 4),
        ("flag", "u8", 1),
        ("h", "f16", 2),
        ("w", "i64", 8),
    ]


# --------------------------------------------------------------------------- errors


def test_syntax_error_shows_numbered_source_lines(monkeypatch):
    def broken_barrier(self, s):
        self.line("__syncthreads(;  // broken on purpose")

    monkeypatch.setattr(cuda_module._Emitter, "stmt_Barrier", broken_barrier)
    b = Builder("broken")
    b.output(b.input(F32))
    b.body.append(t.Barrier())
    b.output(b.input(I32))
    fn = b.function()
    src = emit_cuda(fn)
    with pytest.raises(CudaCompileError) as info:
        compile_cuda(src, kernel_symbol(fn), "sm_80")
    message = str(info.value)
    bad = next(i for i, line in enumerate(src.splitlines(), 1) if "broken on purpose" in line)
    assert "kernel broken" in message and "sm_80" in message
    assert f"broken.cu({bad})" in message  # NVRTC's log, whole
    assert re.search(rf"^> +{bad} \| .*__syncthreads\(;", message, re.M)
    assert re.search(rf"^  +{bad - 1} \| ", message, re.M)  # context before
    assert info.value.log and info.value.arch == "sm_80"


def test_ptxas_error_shows_numbered_ptx_lines():
    src = (
        'extern "C" __global__ void bad(int* p) {\n'
        '  asm volatile("no_such_instruction.b32 %0;" :: "r"(p[0]));\n'
        "}\n"
    )
    with pytest.raises(CudaCompileError) as info:
        compile_cuda(src, "bad", "sm_80")
    message = str(info.value)
    assert "ptx input, line" in message
    assert "bad.ptx (generated PTX):" in message
    assert re.search(r"^> +\d+ \| .*no_such_instruction", message, re.M)


def test_unknown_arch_is_rejected():
    with pytest.raises(ValueError, match="sm_XX"):
        compile_cuda("", "k", "compute_80")


def test_missing_nvrtc_library_says_what_to_install(monkeypatch):
    from cuda.bindings import nvrtc as bindings

    from tilelang.runtime import nvrtc as driver

    def missing():
        raise RuntimeError("Failure finding libnvrtc.so.13")

    monkeypatch.setattr(driver, "_MODULE", [])
    monkeypatch.setattr(bindings, "nvrtcVersion", missing)
    with pytest.raises(NvrtcUnavailableError, match=r"pip install nvidia-cuda-nvrtc"):
        compile_cuda('extern "C" __global__ void k() {}', "k", "sm_80")


def test_nvrtc_version():
    major, _minor = nvrtc_version()
    assert major >= 12


# --------------------------------------------------------------------------- resources


@pytest.mark.parametrize("label", ["matmul", "quant_matmul_u4", "softmax", "cumsum_i32"])
def test_cubin_resources_match_the_log(label):
    binary = example_binary(label, "sm_80")
    logged = resources_from_log(binary.log, binary.name)
    read = resources_from_cubin(binary.cubin, binary.name)
    assert read.source == "cubin" and read.spills is None
    assert (read.registers, read.local_bytes, read.shared_bytes) == (
        logged.registers,
        logged.local_bytes,
        logged.shared_bytes,
    )
    # Without the ptxas lines, read_resources falls back to the cubin.
    assert read_resources("", binary.cubin, binary.name) == read


def test_static_shared_memory_and_stack_frame_are_read_both_ways():
    src = (
        'extern "C" __global__ void frame(float* p, int i) {\n'
        "  __shared__ float buf[300];\n"
        "  float local[64];\n"
        "  for (int k = 0; k < 64; ++k) local[(k * i) & 63] = p[k];\n"
        "  buf[threadIdx.x] = local[i & 63];\n"
        "  __syncthreads();\n"
        "  p[threadIdx.x] = buf[(threadIdx.x + 1) % 300];\n"
        "}\n"
    )
    binary = compile_cuda(src, "frame", "sm_80")
    logged, read = binary.resources, resources_from_cubin(binary.cubin, "frame")
    assert logged.shared_bytes == read.shared_bytes == 1200
    assert logged.local_bytes == read.local_bytes >= 256
    assert logged.registers == read.registers


def test_spills_are_reported():
    """A 64-register cap (1024 threads) cannot hold the 64×64 matmul's registers."""
    fn = example_thread("matmul")
    binary = compile_cuda(emit_cuda(fn, launch_bounds=1024), kernel_symbol(fn), "sm_80")
    r = binary.resources
    assert r.registers <= 64 and r.spill_store_bytes > 0 and r.spill_load_bytes > 0


def test_log_parser_ignores_other_functions():
    log = (
        "ptxas info    : 0 bytes gmem\n"
        "ptxas info    : Compiling entry function 'k' for 'sm_80'\n"
        "ptxas info    : Function properties for k\n"
        "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
        "ptxas info    : Used 40 registers, used 1 barriers, 512 bytes smem, 364 bytes cmem[0]\n"
        "ptxas info    : Function properties for __internal_trig_reduction_slowpathd\n"
        "ptxas         .     40 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
    )
    r = resources_from_log(log, "k")
    assert (r.registers, r.spill_store_bytes, r.spill_load_bytes, r.shared_bytes, r.local_bytes) == (
        40, 4, 12, 512, 8,
    )  # fmt: skip
    assert r.spills == 16
    assert resources_from_log(log, "other") is None


def test_cubin_errors():
    with pytest.raises(CubinError, match="not a little-endian ELF64"):
        resources_from_cubin(b"not a cubin", "k")
    binary = example_binary("vector_add", "sm_80")
    with pytest.raises(CubinError, match=r"has no kernel nope .*vector_add"):
        resources_from_cubin(binary.cubin, "nope")


# --------------------------------------------------------------------------- SASS

needs_disassembler = pytest.mark.usefixtures("disassembler")


@needs_disassembler
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("label", ["matmul", "quant_matmul_u4"])
def test_matmul_sass_uses_tensor_cores_and_wide_loads(label, arch):
    ops = opcodes(disassemble(example_binary(label, arch).cubin))
    assert ops["HMMA.16816.F32"] > 0, ops
    assert any(op.startswith("LDSM.16") for op in ops), ops
    wide = [op for op in ops if op.startswith(("LDG.E.128", "LDGSTS.E.BYPASS.128"))]
    assert wide, f"no 128-bit global loads: {sorted(ops)}"
    assert not any(op.startswith(("LDL", "STL")) for op in ops)
    if label.startswith("quant"):
        assert not any(op.startswith("I2F") for op in ops), "a dequantization used I2F"
        # the weights stream through cp.async (software_pipeline), 16 bytes at a time
        assert any(op.startswith("LDGSTS.E.BYPASS.128") for op in ops)


@needs_disassembler
def test_u8_dequantization_avoids_i2f():
    ops = opcodes(disassemble(example_binary("quant_matmul_u8", "sm_80").cubin))
    assert not any(op.startswith("I2F") for op in ops)


def test_sass_opcode_parser():
    text = (
        "        /*0120*/              @!P0 LDG.E.128.CONSTANT R4, [R2.64] ;\n"
        "        /*0130*/                   HMMA.16816.F32 R8, R12, R16, R8 ;\n"
        "        /*0140*/               @P1 BRA 0x200 ;  /* 0x000fe20003800000 */\n"
    )
    assert opcodes(text) == {"LDG.E.128.CONSTANT": 1, "HMMA.16816.F32": 1, "BRA": 1}


# --------------------------------------------------------------------------- optional tools


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed (optional)")
def test_source_also_compiles_with_nvcc(tmp_path):
    """The emitted source is plain CUDA C++: the toolkit's nvcc accepts it too."""
    file = tmp_path / "matmul.cu"
    file.write_text(example_source("quant_matmul_u4"))
    out = subprocess.run(
        ["nvcc", "-cubin", "-arch=sm_80", "-std=c++17", "-o", str(tmp_path / "k.cubin"), str(file)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert hashlib.sha256((tmp_path / "k.cubin").read_bytes()).hexdigest()


# --------------------------------------------------------------------------- host cross-check

HOST_CXX = shutil.which("g++") or shutil.which("clang++")
INT_TYPES = (d.u1, d.u8, d.u16, d.u32, d.u64, d.i8, d.i16, d.i32, d.i64)


def _wrap(x: int, dt) -> int:
    x &= (1 << dt.bits) - 1
    if dt.signed and dt != U1 and x >= 1 << (dt.bits - 1):
        x -= 1 << dt.bits
    return x


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _reference(op: str, a: int, b: int, dt, bdt) -> int:
    """thread.py's integer semantics (and the LLVM backend's choices for x / 0)."""
    n = dt.bits
    if op in ("add", "sub", "mul", "and", "or", "xor"):
        fn = {
            "add": int.__add__,
            "sub": int.__sub__,
            "mul": int.__mul__,
            "and": int.__and__,
            "or": int.__or__,
            "xor": int.__xor__,
        }[op]
        return _wrap(fn(a, b), dt)
    if op == "div":
        return _wrap(-1, dt) if b == 0 else _wrap(_trunc_div(a, b), dt)
    if op == "rem":
        return a if b == 0 else _wrap(a - _trunc_div(a, b) * b, dt)
    if op in ("min", "max"):
        return min(a, b) if op == "min" else max(a, b)
    if op in ("shl", "shr"):
        k = b & ((1 << bdt.bits) - 1)  # the amount, read unsigned in its own dtype
        if op == "shl":
            return 0 if k >= n else _wrap(a << k, dt)
        if dt.signed and dt != U1:
            return a >> min(k, n - 1)
        return 0 if k >= n else a >> k
    cmp = {"eq": "__eq__", "ne": "__ne__", "lt": "__lt__", "le": "__le__", "gt": "__gt__"}
    return int(getattr(a, cmp[op])(b)) if op in cmp else int(a >= b)


def _values(dt) -> list[int]:
    if dt == U1:
        return [0, 1]
    return sorted({0, 1, 7, dt.max, dt.min, _wrap(-1, dt), _wrap(-3, dt)})


@pytest.mark.skipif(HOST_CXX is None, reason="no host C++ compiler (optional cross-check)")
def test_integer_semantics_on_the_host_with_ubsan(tmp_path):
    """The emitted integer expressions (no inline PTX in them) compiled for the host with
    UBSan: no undefined behaviour, and the results of thread.py's semantics for corner
    values (wrapping, x / 0, MIN / -1, shifts by >= the width, saturating casts)."""
    from tilelang.codegen.cuda_expr import ExprEmitter, int_literal
    from tilelang.codegen.cuda_prelude import c_type, render

    x = ExprEmitter(lambda name: f"v_{name}", lambda local: f"l_{local}")
    cases: list[tuple[str, list[tuple[str, object, int]], int, bool]] = []

    def case(expr: t.Expr, inputs: list[tuple[str, object, int]], expected: int) -> None:
        cases.append((x.expr(expr), inputs, expected, expr.dtype == d.u64))

    for dt in INT_TYPES:
        a = t.Name("a", dt)
        for va in _values(dt):
            for op, fn in (("neg", lambda v: -v), ("not", lambda v: ~v), ("abs", abs)):
                want = va if op == "abs" and not (dt.signed and dt != U1) else _wrap(fn(va), dt)
                case(t.Unary(op, a), [("a", dt, va)], want)
            for dst in INT_TYPES:
                want = int(va != 0) if dst == U1 else min(max(va, dst.min), dst.max)
                case(t.Cvt(a, dst), [("a", dt, va)], want)
            for vb in _values(dt):
                inputs = [("a", dt, va), ("b", dt, vb)]
                # umulhi is a device intrinsic (__umulhi): no host build of it
                arithmetic = set(_ops_for(dt)[1]) - {"shl", "shr", "umulhi"}
                for op in sorted(arithmetic | t.COMPARE_OPS):
                    want = _reference(op, va, vb, dt, dt)
                    case(B(op, a, t.Name("b", dt)), inputs, want)
                    if op in ("div", "rem"):  # the immediate-divisor path
                        case(B(op, a, imm(vb, dt)), inputs[:1], want)
            for bdt in (d.i32, d.u8, d.i64, U1):
                for k in sorted({0, 1, dt.bits - 1, dt.bits, dt.bits + 1, 200, -1}):
                    k = _wrap(k, bdt)
                    for op in ("shl", "shr"):
                        want = _reference(op, va, k, dt, bdt)
                        case(B(op, a, t.Name("b", bdt)), [("a", dt, va), ("b", bdt, k)], want)
                        case(B(op, a, imm(k, bdt)), [("a", dt, va)], want)

    lines = [
        "#include <cstdio>",
        "#define __device__",
        "#define __forceinline__ inline",
        render(x.needed),
    ]
    chunk = 500
    for start in range(0, len(cases), chunk):
        lines.append(f"void part{start // chunk}() {{")
        for expr, inputs, _, unsigned64 in cases[start : start + chunk]:
            decls = " ".join(
                f"volatile {c_type(dt)} in_{n} = {int_literal(v, dt)}; "
                f"const {c_type(dt)} v_{n} = in_{n};"
                for n, dt, v in inputs
            )
            fmt, cast = ("%llu", "unsigned long long") if unsigned64 else ("%lld", "long long")
            lines.append(f'  {{ {decls} printf("{fmt}\\n", ({cast})({expr})); }}')
        lines.append("}")
    parts = -(-len(cases) // chunk)
    lines.append("int main() { " + " ".join(f"part{k}();" for k in range(parts)) + " }")
    source = tmp_path / "ints.cpp"
    source.write_text("\n".join(lines) + "\n")
    binary = tmp_path / "ints"
    flags = ["-std=c++17", "-O1", "-fsanitize=undefined", "-fno-sanitize-recover=all", "-w"]
    built = subprocess.run(
        [HOST_CXX, *flags, str(source), "-o", str(binary)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr[:3000]
    ran = subprocess.run([str(binary)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[:3000]  # UBSan aborts on undefined behaviour
    got = ran.stdout.split()
    assert len(got) == len(cases)
    wrong = [
        f"{expr} with {inputs}: got {value}, expected {want}"
        for (expr, inputs, want, _), value in zip(cases, got, strict=True)
        if int(value) != want
    ]
    assert not wrong, f"{len(wrong)} wrong, e.g.\n" + "\n".join(wrong[:20])


_HOST_SHIMS = r"""
#include <cmath>
#include <cstdio>
#include <cstring>
#define __device__
#define __forceinline__ inline
static unsigned __float_as_uint(float x) { unsigned u; std::memcpy(&u, &x, 4); return u; }
static float __uint_as_float(unsigned u) { float x; std::memcpy(&x, &u, 4); return x; }
/* Round toward zero: round to nearest, then step back when that went away from zero. */
template <class T> static float rz(T x) {
  float r = (float)x;
  if (std::fabs((long double)r) > std::fabs((long double)x)) r = std::nextafter(r, 0.0f);
  return r;
}
static float __double2float_rz(double x) { return rz(x); }
static float __int2float_rz(int x) { return rz(x); }
static float __uint2float_rz(unsigned x) { return rz(x); }
static float __ll2float_rz(long long x) { return rz(x); }
static float __ull2float_rz(unsigned long long x) { return rz(x); }
/* cvt.rn.bf16.f32 for non-NaN inputs: round to nearest even on the bits. */
static unsigned short tl_f32_bf16_raw(float x) {
  unsigned u = __float_as_uint(x);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
"""


@pytest.mark.skipif(HOST_CXX is None, reason="no host C++ compiler (optional cross-check)")
def test_round_to_odd_bf16_conversions_on_the_host(tmp_path):
    """f64 → bf16 and 32/64-bit int → bf16 have no sm_80 instruction: the emitted helpers
    round to odd in f32 first. Their C++ (with host stand-ins for the CUDA intrinsics)
    must give the single correctly rounded result, which `dtypes.bf16.encode` computes."""
    import numpy as np

    from tilelang.codegen.cuda_prelude import BASE, SNIPPETS

    rng = np.random.default_rng(5)
    helpers = ["tl_f64_f32_odd", "tl_f64_bf16"] + [
        f"tl_{s}_bf16" for s in ("s32", "u32", "s64", "u64")
    ]
    lines = [_HOST_SHIMS, BASE, *(SNIPPETS[h].text for h in helpers), "int main() {"]
    expected: list[int] = []
    # bf16 midpoints (ties, and one f64 ulp off them), values that f32 would round to a
    # midpoint, overflow, subnormals, zeros, infinities.
    floats = [0.0, -0.0, 1.0, 1.0 + 2.0**-8, 1.0 + 2.0**-8 + 2.0**-40, 1.0 + 2.0**-8 - 2.0**-52,
              1.0 + 3 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-30, 3.3895313892515355e38, 3.4e38, 1e300,
              -1e300, 2.0**-133, 2.0**-134 + 2.0**-160, 2.0**-140, float("inf"), float("-inf")]  # fmt: skip
    floats += list(rng.standard_normal(300) * 10.0 ** rng.integers(-40, 40, 300))
    for v in floats:
        literal = float(v).hex() if math.isfinite(v) else f"{'-' if v < 0 else ''}INFINITY"
        lines.append(f'  printf("%u\\n", (unsigned)tl_f64_bf16({literal}));')
        expected.append(int(d.bf16.encode(v)))
    for name, dt in (("s32", d.i32), ("u32", d.u32), ("s64", d.i64), ("u64", d.u64)):
        values = {dt.min, dt.max, 0, 1, 257, 0x1810000, 0x1818000, 0x1818001}
        values |= {int(v) for v in rng.integers(dt.min, dt.max, 200, dtype=np.int64 if dt.signed else np.uint64, endpoint=True)}  # fmt: skip
        for v in sorted(values):
            literal = f"({c_literal(v, dt)})"
            lines.append(f'  printf("%u\\n", (unsigned)tl_{name}_bf16({literal}));')
            expected.append(
                int(d.bf16.encode(np.array(v, dtype=np.int64 if dt.signed else np.uint64)))
            )
    lines.append("}")
    source, binary = tmp_path / "bf16.cpp", tmp_path / "bf16"
    source.write_text("\n".join(lines) + "\n")
    built = subprocess.run([HOST_CXX, "-std=c++17", "-O1", "-w", str(source), "-o", str(binary)], capture_output=True, text=True)  # fmt: skip
    assert built.returncode == 0, built.stderr[:3000]
    got = [int(x) for x in subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.split()]  # fmt: skip
    wrong = [
        (i, hex(g), hex(e)) for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e
    ]
    assert not wrong, wrong[:10]


def c_literal(value: int, dt) -> str:
    from tilelang.codegen.cuda_expr import int_literal

    return int_literal(value, dt)


def test_a_loops_unroll_hint_reaches_the_cuda_source_as_its_factor():
    """`tl.range(..., unroll=N)` is `#pragma unroll N`: unroll=1 keeps the loop rolled
    (as the register planner assumes), not unrolled in full."""
    from test_perf import stream_then_add

    source = stream_then_add.compile(target="sm_90").source
    assert "#pragma unroll 1\n" in source
    assert not re.search(r"#pragma unroll\n", source)


def test_resources_count_the_dynamic_shared_memory_a_launch_asks_for():
    """tilelang keeps shared tiles in dynamic shared memory, which ptxas does not
    report: a [64, 64] f32 staging tile is at least 16 KB of it."""

    @tl.kernel(warps=4)
    def staged(x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "N", "M"]):  # noqa: UP037
        bm, bn = tl.blocks(tl.cdiv(M, 64), tl.cdiv(N, 64))
        stage = tl.shared([64, 64], tl.f32)
        stage.store(tl.transpose(tl.load(x, [bm * 64, bn * 64], [64, 64])))
        tl.store(y, [bn * 64, bm * 64], stage.load())

    compiled = staged.compile(target="sm_90")
    r = compiled.resources
    assert r.dynamic_shared_bytes == compiled.thread.shared_bytes >= 64 * 64 * 4
    assert r.total_shared_bytes == r.shared_bytes + r.dynamic_shared_bytes
