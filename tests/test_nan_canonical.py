"""Float conversions without the NaN canonicalization (`tilelang.codegen.nan_facts`).

Every float `Cvt` gives the canonical NaN; a conversion leaves the step out where its
source is proven never NaN (fact 1: finite tensors, integers, constants, ...) or where
only payload-blind arithmetic reads its result (fact 2). Laws:

- the CUDA source and SASS of an f16 dot-product loop have no NaN compare and select
  (HADD2.F32 alone per conversion), with or without `assume finite`; a converted value
  that is stored keeps the step unless its tensor is stated finite;
- the analysis: what reads a value blindly (arithmetic, compare, conversion; neg/abs and
  select only when their own result is read so), what is never NaN (a loop's sum of
  finite values is not: it may reach inf − inf), finite tensors only where the local
  holds the tensor's own dtype, shared memory only when every write to it is finite;
- the CPU backend equals the interpreter bit for bit on NaN payload, inf and finite
  inputs through every kind of reader (and a numpy oracle written from IEEE rules:
  every NaN result is 0x7FFFFFFF), with and without the "finite" fact; the LLVM IR
  leaves out exactly the one check a blind conversion needs no more.
"""

import re

import numpy as np
import pytest

import tilelang as tl
from tilelang import dtypes as d
from tilelang.codegen.cuda import emit_cuda
from tilelang.codegen.llvm import emit_llvm
from tilelang.codegen.nan_facts import ANY, FINITE, NOT_NAN, NanFacts
from tilelang.ir import thread as t
from tilelang.runtime import sass

F16, F32, I32, I64, U1, U32 = d.f16, d.f32, d.i32, d.i64, d.u1, d.u32
CANONICAL_F32 = 0x7FFFFFFF
SIZE = 32


@tl.kernel(warps=4)
def dot(a: tl.Tensor[tl.f16, "M", "K"], b: tl.Tensor[tl.f16, "M", "K"], y: tl.Tensor[tl.f32, "M"]):
    """y[m] = sum over k of a[m, k]·b[m, k], accumulated in f32 (`acc + a·b`)."""
    bm = tl.blocks(M)
    acc = tl.zeros([1, 256], tl.f32)
    for k in tl.range(0, K, 256):
        x = tl.load(a, [bm, k], [1, 256])
        w = tl.load(b, [bm, k], [1, 256])
        acc = acc + x.to(tl.f32) * w.to(tl.f32)
    tl.store(y, [bm], tl.sum(acc, axis=1))


@tl.kernel(warps=1)
def widen(x: tl.Tensor["T", "N"], y: tl.Tensor["U", "N"], T: tl.constexpr, U: tl.constexpr):
    """y = x.to(U), stored as it is: nothing reads it blindly."""
    tl.store(y, [0], tl.load(x, [0], [SIZE]).to(U))


# ---------------------------------------------------------------- generated code


def test_dot_loop_source_has_no_canonical_nan_with_or_without_the_fact():
    for facts in ({}, {"a": "finite", "b": "finite"}):
        thread = dot.compile(target="sm_90", assume={"M": 1, "K": 256, **facts}).thread
        source = emit_cuda(thread)
        assert "tl_f16_f32(" in source  # the conversion itself stays
        assert "tl_canon_f32" not in source, facts


@pytest.mark.usefixtures("disassembler")
@pytest.mark.parametrize("facts", [{}, {"a": "finite", "b": "finite"}], ids=["plain", "finite"])
def test_dot_main_loop_converts_with_one_instruction(facts):
    """Each f16 → f32 conversion was HADD2.F32 + FSETP.NAN + FSEL (48 of 116 in the
    loop); now HADD2.F32 alone (95 measured), and the loop has no float compare."""
    compiled = dot.compile(target="sm_90", assume={"M": 1, "K": 256, **facts})
    loop = sass.opcodes(sass.main_loop(sass.disassemble(compiled.cubin)))
    converts = sum(n for op, n in loop.items() if op.startswith("HADD2.F32"))
    checks = sum(n for op, n in loop.items() if op.startswith(("FSETP", "FSEL")))
    assert converts > 0 and checks == 0, dict(loop)


@pytest.mark.parametrize(("src", "dst", "step"), [(tl.f16, tl.f32, "tl_canon_f32"),
                                                  (tl.f32, tl.f16, "tl_f32_f16(")])  # fmt: skip
def test_a_stored_conversion_keeps_the_step_unless_its_tensor_is_finite(src, dst, step):
    plain = widen.compile(target="sm_90", assume={"N": SIZE}, T=src, U=dst).thread
    finite = widen.compile(target="sm_90", assume={"N": SIZE, "x": "finite"}, T=src, U=dst).thread
    assert finite.finite == ("x",) and plain.finite == ()
    assert step in emit_cuda(plain)
    assert step not in emit_cuda(finite)


def test_a_tensor_the_kernel_writes_is_not_finite_in_the_thread_ir():
    @tl.kernel(warps=1)
    def overwrite(x: tl.Tensor[tl.f16, "N"], y: tl.Tensor[tl.f32, "N"]):
        tl.store(x, [0], tl.load(x, [0], [SIZE]) * 2.0)
        tl.store(y, [0], tl.load(x, [0], [SIZE]).to(tl.f32))

    thread = overwrite.compile(target="sm_90", assume={"N": SIZE, "x": "finite"}).thread
    assert thread.finite == ()
    assert "tl_canon_f32" in emit_cuda(thread)


# ---------------------------------------------------------------- the analysis on thread IR


def function(body, locals_, params, finite=()) -> t.ThreadFunction:
    return t.ThreadFunction(
        "f", tuple(params), 32, (t.Imm(1, I32),), 64, tuple(locals_), tuple(body), finite=finite
    )


def read(local: str, dt=F32) -> t.Read:
    return t.Read(local, 0, dt)


X = t.Param("x", F16, True)
Y = t.Param("y", F32, True)
LOAD_X = t.GlobalLoad(t.Reg("h", 0), 2, "x", t.Imm(0, I64))
STORE_Y = t.GlobalStore("y", t.Imm(0, I64), t.Reg("o", 0), 4)


def convert_then(*readers: t.Stmt, finite=(), locals_=()) -> t.ThreadFunction:
    """h = x[0]; c = f32(h); then `readers` (which write o, and may read c)."""
    cvt = t.SetLocal("c", 0, t.Cvt(read("h", F16), F32))
    locals_ = (t.Local("h", F16, 1), t.Local("c", F32, 1), t.Local("o", F32, 1), *locals_)
    return function((LOAD_X, cvt, *readers, STORE_Y), locals_, (X, Y), finite)


def set_o(value: t.Expr) -> t.SetLocal:
    return t.SetLocal("o", 0, value)


C = read("c")
TWO = t.Imm(2.0, F32)


@pytest.mark.parametrize(
    ("reader", "blind"),
    [
        (set_o(t.Binary("mul", C, TWO)), True),
        (set_o(t.Fma(C, TWO, TWO)), True),
        (set_o(t.Unary("sqrt", C)), True),
        (set_o(t.Cvt(t.Binary("lt", C, TWO), F32)), True),
        (set_o(t.Cvt(t.Cvt(C, I32), F32)), True),
        (set_o(t.Binary("add", t.Unary("neg", C), TWO)), True),  # neg read blindly
        (set_o(t.Binary("add", t.Select(t.Imm(1, U1), C, TWO), TWO)), True),
        (set_o(C), False),  # a copy: stored as it is
        (set_o(t.Unary("neg", C)), False),  # the payload passes through neg
        (set_o(t.Select(t.Imm(1, U1), C, TWO)), False),
        (set_o(t.Bitcast(t.Bitcast(C, U32), F32)), False),  # the bits themselves
        (t.Move(t.Reg("o", 0), t.Reg("c", 0), 4), False),
        (t.Shfl(t.Name("s", F32), C, "idx", t.Imm(0, I32)), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, t.Stmt) else str(v),
)
def test_which_readers_are_payload_blind(reader, blind):
    facts = NanFacts(convert_then(reader))
    assert ("c" in facts.blind_locals) is blind
    fn = convert_then(reader)
    canonical = "tl_canon_f32" in emit_cuda(fn)
    assert canonical is not blind


def test_a_name_passes_its_readers_blindness_on():
    alias = t.Let(t.Name("v", F32), C)
    blind = NanFacts(convert_then(alias, set_o(t.Binary("mul", t.Name("v", F32), TWO))))
    assert "v" in blind.blind_names and "c" in blind.blind_locals
    seen = NanFacts(convert_then(alias, set_o(t.Name("v", F32))))
    assert "v" not in seen.blind_names and "c" not in seen.blind_locals


def test_levels_of_values():
    h = read("h", F16)
    fn = convert_then(set_o(TWO), finite=("x",))
    facts = NanFacts(fn)
    assert facts.level(h) == FINITE and facts.level(C) == FINITE
    assert facts.level(t.Binary("add", C, C)) == NOT_NAN  # may overflow to inf
    assert facts.level(t.Binary("sub", t.Binary("add", C, C), C)) == ANY  # inf − inf
    assert facts.level(t.Binary("div", C, C)) == ANY  # 0 / 0
    assert facts.level(t.Binary("max", t.Binary("add", C, C), read("o"))) == NOT_NAN
    assert facts.level(t.Cvt(t.Imm(70000, I32), F16)) == NOT_NAN  # rounds to inf
    assert facts.level(t.Cvt(t.Imm(7, d.u8), F16)) == FINITE
    assert facts.level(t.Cvt(C, d.f64)) == FINITE
    assert facts.level(t.Cvt(t.Cvt(C, d.f64), F16)) == NOT_NAN
    assert facts.level(t.Imm(float("inf"), F32)) == NOT_NAN
    assert facts.level(t.Imm(float("nan"), F32)) == ANY
    assert NanFacts(convert_then(set_o(TWO))).level(C) == ANY  # x not stated finite


def test_a_sum_of_finite_values_in_a_loop_may_be_nan():
    acc = t.SetLocal("o", 0, t.Binary("add", read("o"), C))
    loop = t.For(t.Name("k", I32), t.Imm(0, I32), t.Imm(4, I32), t.Imm(1, I32), (acc,))
    facts = NanFacts(convert_then(set_o(t.Imm(0.0, F32)), loop, finite=("x",)))
    assert facts.level(C) == FINITE and facts.level(read("o")) == ANY


def test_a_finite_tensor_loaded_into_another_dtype_is_not_finite():
    raw = t.GlobalLoad(t.Reg("w", 0), 4, "x", t.Imm(0, I64))
    facts = NanFacts(convert_then(raw, finite=("x",), locals_=(t.Local("w", F32, 1),)))
    assert facts.level(read("w")) == ANY and facts.level(C) == FINITE


def shared_then_load(*writes: t.Stmt) -> NanFacts:
    back = t.SharedLoad(t.Reg("s", 0), 2, t.Imm(0, I32))
    locals_ = (t.Local("s", F16, 1), t.Local("n", F16, 1))
    return NanFacts(convert_then(*writes, back, finite=("x",), locals_=locals_))


def test_shared_memory_is_finite_only_when_every_write_is():
    copy = t.CpAsync(t.Imm(0, I32), "x", t.Imm(0, I64), 4)
    assert shared_then_load(copy).level(read("s", F16)) == FINITE
    nan = t.SetLocal("n", 0, t.Imm(float("nan"), F16))
    spoil = t.SharedStore(t.Imm(16, I32), t.Reg("n", 0), 2)
    assert shared_then_load(copy, nan, spoil).level(read("s", F16)) == ANY
    mine = t.SharedStore(t.Imm(16, I32), t.Reg("h", 0), 2)  # x's finite f16 codes
    assert shared_then_load(copy, mine).level(read("s", F16)) == FINITE


def test_the_llvm_ir_leaves_out_exactly_the_blind_conversions_check():
    """`fcmp uno` is the NaN test of every canonicalization; the stored copy of c keeps
    one more than the blind reader."""
    blind = emit_llvm(convert_then(set_o(t.Binary("mul", C, TWO))))
    kept = emit_llvm(
        convert_then(set_o(t.Binary("mul", C, TWO)), t.Move(t.Reg("o", 0), t.Reg("c", 0), 4))
    )
    assert len(re.findall(r"fcmp uno", kept)) == len(re.findall(r"fcmp uno", blind)) + 1


# ---------------------------------------------------------------- CPU == interpreter


@tl.kernel(warps=1)
def readers(x: tl.Tensor["T", "N"], w: tl.Tensor["T", "N"], y: tl.Tensor[tl.f32, "R", "N"],
            h: tl.Tensor[tl.f16, "N"], T: tl.constexpr):  # fmt: skip
    """Each row of y reads v = x.to(f32) another way; h is v.to(f16)."""
    v = tl.load(x, [0], [SIZE]).to(tl.f32)
    u = tl.load(w, [0], [SIZE]).to(tl.f32)
    tl.store(y, [0, 0], tl.reshape(v, [1, SIZE]))
    tl.store(y, [1, 0], tl.reshape(v * u, [1, SIZE]))
    tl.store(y, [2, 0], tl.reshape((-v) * u, [1, SIZE]))
    tl.store(y, [3, 0], tl.reshape(tl.where(v > 0.0, v, u), [1, SIZE]))
    tl.store(y, [4, 0], tl.reshape(tl.maximum(v, 0.0) + 1.0, [1, SIZE]))
    tl.store(y, [5, 0], tl.reshape((v > 0.0).to(tl.f32), [1, SIZE]))
    tl.store(y, [6, 0], tl.reshape(v.to(tl.i32).to(tl.f32), [1, SIZE]))
    tl.store(y, [7, 0], tl.reshape(tl.abs(v) - u, [1, SIZE]))
    tl.store(h, [0], v.to(tl.f16))


ROWS = 8
NAN_CODES = {tl.f16: [0x7C01, 0x7E00, 0xFE01, 0x7FFF, 0xFFFF, 0x7D55],
             tl.bf16: [0x7F81, 0x7FC0, 0xFFC1, 0x7FFF, 0xFFFF, 0x7FD5]}  # fmt: skip
SPECIAL = {tl.f16: [0x7C00, 0xFC00, 0x7BFF, 0x0001, 0x8001], tl.bf16: [0x7F80, 0xFF80, 0x7F7F, 1]}


def inputs(dtype, with_nan: bool):
    rng = np.random.default_rng(7)
    finite = rng.standard_normal(SIZE) * 4
    finite[:4] = [0.0, -0.0, 1.0, -2.5]
    codes = np.asarray(dtype.encode(finite), np.uint16)
    if with_nan:
        special = NAN_CODES[dtype] + SPECIAL[dtype]
        codes[4 : 4 + len(special)] = special
    return codes, np.roll(codes, 5)


def oracle(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The rows as IEEE f32 arithmetic gives them (numpy), every NaN 0x7FFFFFFF."""
    with np.errstate(all="ignore"):
        v, u = x.astype(np.float32), w.astype(np.float32)
        as_int = np.where(np.isnan(v), 0, np.clip(np.rint(v), -(2.0**31), 2.0**31 - 1))
        rows = [v, v * u, (-v) * u, np.where(v > 0, v, u), np.fmax(v, 0) + 1,
                (v > 0).astype(np.float32), as_int.astype(np.int64).astype(np.float32), np.abs(v) - u]  # fmt: skip
    bits = np.stack(rows).astype(np.float32).view(np.uint32)
    return np.where(np.isnan(np.stack(rows)), np.uint32(CANONICAL_F32), bits)


def run(call, x, w, dtype, assume):
    y = tl.pack_codes(np.zeros((ROWS, SIZE), np.uint32), tl.f32)
    h = np.zeros(SIZE, np.float16)
    args = (tl.pack_codes(x, dtype), tl.pack_codes(w, dtype), y, h)
    return call(*args, T=dtype, assume=assume)


@pytest.mark.parametrize("dtype", [tl.f16, tl.bf16], ids=str)
@pytest.mark.parametrize("stated", [False, True], ids=["plain", "finite"])
def test_cpu_equals_interpreter_and_ieee_on_nan_payloads_inf_and_finite_values(dtype, stated):
    x, w = inputs(dtype, with_nan=not stated)
    assume = {"x": "finite", "w": "finite"} if stated else None
    got_y, got_h = run(readers, x, w, dtype, assume)
    want_y, want_h = run(readers.interpret, x, w, dtype, assume)
    np.testing.assert_array_equal(got_y.codes(), want_y.codes())
    np.testing.assert_array_equal(
        np.asarray(got_h).view(np.uint16), np.asarray(want_h).view(np.uint16)
    )
    values_x = np.asarray(dtype.decode(x), np.float64)
    values_w = np.asarray(dtype.decode(w), np.float64)
    np.testing.assert_array_equal(got_y.codes(), oracle(values_x, values_w))
    with np.errstate(all="ignore"):
        half = values_x.astype(np.float32).astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(
        np.asarray(got_h).view(np.uint16), np.where(np.isnan(values_x), 0x7FFF, half)
    )


def test_the_fact_drops_the_checks_of_the_stored_conversions_on_the_cpu():
    compile_ = readers.compile
    plain = emit_llvm(compile_(assume={"N": SIZE, "R": ROWS}, T=tl.f16).thread)
    stated = emit_llvm(compile_(assume={"N": SIZE, "R": ROWS, "x": "finite", "w": "finite"}, T=tl.f16).thread)  # fmt: skip
    assert stated.count("fcmp uno") < plain.count("fcmp uno")


def test_dot_with_nan_payloads_gives_the_canonical_nan_on_the_cpu():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 512)).astype(np.float16)
    b = rng.standard_normal((2, 512)).astype(np.float16)
    a.view(np.uint16)[0, 300] = 0xFE01  # a negative NaN with a payload
    y = dot(a, b, np.zeros(2, np.float32))
    interpreted = dot.interpret(a, b, np.zeros(2, np.float32))
    assert y.view(np.uint32)[0] == CANONICAL_F32 == interpreted.view(np.uint32)[0]
    exact = (a[1].astype(np.float64) * b[1].astype(np.float64)).sum()
    assert abs(float(y[1]) - exact) <= 512 * 2.0**-23 * np.abs(a[1].astype(np.float64) * b[1]).sum()
