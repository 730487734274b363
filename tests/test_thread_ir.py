"""Thread IR: its text form and the verifier's rules (types, scopes, execution model)."""

import pytest

from tilelang import dtypes as d
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.thread_text import print_thread_function
from tilelang.ir.thread_verify import ThreadIRError, verify_thread_function

N = t.Name("N", d.i32)
INDEX = t.Name("i", d.i32)
P = t.Name("p", d.u1)
OFFSET = t.Name("o", d.i64)
PARAMS = (t.Param("x", d.f32, True), t.Param("y", d.f32, True), t.Param("N", d.i32, False))
GRID = (t.Binary("div", t.Binary("add", N, t.Imm(127, d.i32)), t.Imm(128, d.i32)),)
PROLOGUE = (
    t.Let(
        INDEX, t.Binary("add", t.Binary("mul", t.BlockIndex(0), t.Imm(128, d.i32)), t.ThreadIndex())
    ),
    t.Let(P, t.Binary("lt", INDEX, N)),
    t.Let(OFFSET, t.Binary("mul", t.Cvt(INDEX, d.i64), t.Imm(4, d.i64))),
)


def function(*body: t.Stmt) -> t.ThreadFunction:
    return t.ThreadFunction(
        "add", PARAMS, 128, GRID, 64, (t.Local("r", d.f32, 4),), PROLOGUE + body
    )


def test_prints_every_statement_readably():
    fn = function(
        t.GlobalLoad(t.Reg("r", 0), 4, "x", OFFSET, P),
        t.SetLocal("r", 1, t.Binary("add", t.Read("r", 0, d.f32), t.Imm(1.0, d.f32))),
        t.SharedStore(t.Imm(0, d.i32), t.Reg("r", 0), 16),
        t.Barrier(),
        t.For(t.Name("k", d.i32), t.Imm(0, d.i32), N, t.Imm(32, d.i32), (t.CpAsyncWait(0),)),
        t.GlobalStore("y", OFFSET, t.Reg("r", 4), 4, P),
    )
    verify_thread_function(fn)
    text = print_thread_function(fn)
    assert text.splitlines()[0] == (
        "thread_kernel add(x: tensor<f32>, y: tensor<f32>, N: i32) threads(128) "
        "grid(div(add(%N, 127:i32), 128:i32)) shared(64) {"
    )
    assert "  ld.global.4 r@0 <- x[%o] if %p" in text
    assert "  r[1] = add(r[0], 1.0:f32)" in text
    assert "  st.shared.16 [0:i32] <- r@0" in text
    assert "  for %k = 0:i32 to %N step 32:i32 {\n    cp.async.wait 0\n  }" in text


@pytest.mark.parametrize(
    ("stmt", "message"),
    [
        (t.If(P, (t.Barrier(),)), "collective operation under a condition that varies"),
        (t.For(t.Name("k", d.i32), t.Imm(0, d.i32), INDEX, t.Imm(1, d.i32), ()), "not uniform"),
        (t.SetLocal("r", 4, t.Imm(0.0, d.f32)), "outside its 4 elements"),
        (t.SetLocal("r", 0, t.Imm(0, d.i32)), "has dtype i32, expected f32"),
        (t.GlobalLoad(t.Reg("r", 2), 4, "x", OFFSET), "unaligned"),
        (t.GlobalLoad(t.Reg("r", 0), 3, "x", OFFSET), "an access of 3 bytes"),
        (t.GlobalLoad(t.Reg("r", 0), 4, "z", OFFSET), "no tensor parameter named z"),
        (t.Let(INDEX, t.Imm(0, d.i32)), "%i is defined twice"),
        (t.Let(t.Name("q", d.i32), t.Name("undefined", d.i32)), "%undefined: i32 is not defined"),
        (t.Let(t.Name("q", d.u32), t.Lop3(t.Imm(0, d.u32), t.Imm(0, d.u32), INDEX, 0xEA)), "lop3"),
        (
            tm.Mma(
                "m16n8k16.f16", d.i8, t.Reg("r", 0), t.Reg("r", 0), t.Reg("r", 0), t.Reg("r", 0)
            ),
            "does not multiply i8",
        ),
        (tm.Ldmatrix(4, False, t.Reg("r", 4), t.Imm(0, d.i32)), "does not hold 16 bytes"),
    ],
)
def test_verifier_rejects(stmt, message):
    with pytest.raises(ThreadIRError, match=message):
        verify_thread_function(function(stmt))


def test_uniform_if_may_hold_a_barrier_and_a_name_from_a_branch_stays_inside():
    verify_thread_function(function(t.If(t.Binary("lt", N, t.Imm(5, d.i32)), (t.Barrier(),))))
    inner = t.Name("inner", d.i32)
    fn = function(t.If(P, (t.Let(inner, t.Imm(1, d.i32)),)), t.Let(t.Name("after", d.i32), inner))
    with pytest.raises(ThreadIRError, match="%inner: i32 is not defined here"):
        verify_thread_function(fn)
