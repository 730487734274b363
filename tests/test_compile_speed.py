"""What the compiler does to be fast gives what it gave before: the LLVM text printed
without llvmlite's printer, the verifier's reuse of expressions checked for an earlier
pass, the cleanup's one-count removal of dead Lets, the remembered constant encodes,
the sorted register map, the pausing of the garbage collector, the walk of expressions.
Each is compared with an oracle written here from the rule it must keep."""

from __future__ import annotations

import gc
import struct
from dataclasses import replace

import numpy as np
import pytest
from conftest import load_example

from tilelang import dtypes as d
from tilelang.codegen import llvm, llvm_text
from tilelang.codegen.collection import collection_paused
from tilelang.ir import thread as t
from tilelang.ir.thread_verify import Checked, ThreadIRError, verify_thread_function
from tilelang.lowering.relayout import _first_sources
from tilelang.passes import thread_cleanup

# --------------------------------------------------------------------------- LLVM text


def test_the_llvm_text_is_what_llvmlite_prints(monkeypatch):
    """The split-K matmul uses every instruction class `module_text` prints itself (and
    calls, allocas, atomics, returns, which it leaves to llvmlite): byte for byte the
    text `str(module)` gives."""
    modules = []

    def capture(module):
        modules.append(module)
        return llvm_text.module_text(module)

    monkeypatch.setattr(llvm, "module_text", capture)
    example = load_example("quant_matmul")
    fast = llvm.emit_llvm(example.quant_matmul_split_k.compile(target="cpu").thread)
    (module,) = modules
    classes = {type(i) for f in module.functions for b in f.blocks for i in b.instructions}
    assert set(llvm_text._LINES) <= classes  # every fast format is exercised
    assert classes - set(llvm_text._LINES)  # and some instruction is left to llvmlite
    assert fast == str(module)


# --------------------------------------------------------------------------- verifier

N = t.Name("N", d.i32)
Q = t.Name("q", d.i32)
PARAMS = (t.Param("x", d.f32, True), t.Param("N", d.i32, False))


def function(*body: t.Stmt, registers: int = 4) -> t.ThreadFunction:
    return t.ThreadFunction("k", PARAMS, 128, (N,), 0, (t.Local("r", d.f32, registers),), body)


def message(fn: t.ThreadFunction, checked: Checked | None = None) -> str:
    with pytest.raises(ThreadIRError) as caught:
        verify_thread_function(fn, checked)
    return str(caught.value)


def warmed(fn: t.ThreadFunction) -> Checked:
    checked = Checked()
    verify_thread_function(fn, checked)
    return checked


def test_an_expression_checked_before_has_its_names_checked_where_it_is_now():
    """The same expression object, verified where %q is defined, then in a function
    without the Let: the error a fresh verification gives."""
    value = t.Binary("add", t.Read("r", 0, d.f32), t.Cvt(Q, d.f32))
    good = function(t.Let(Q, t.Binary("add", N, t.Imm(1, d.i32))), t.SetLocal("r", 1, value))
    bad = function(t.SetLocal("r", 1, value))
    expected = message(bad)
    assert "%q: i32 is not defined here" in expected
    assert message(bad, warmed(good)) == expected


def test_an_expression_checked_before_reads_the_registers_of_the_new_function():
    value = t.Binary("mul", t.Read("r", 3, d.f32), t.Imm(2.0, d.f32))
    good = function(t.SetLocal("r", 0, value))
    bad = replace(good, locals=(t.Local("r", d.f32, 2),))
    expected = message(bad)
    assert "r[3] is outside its 2 elements" in expected
    assert message(bad, warmed(good)) == expected


def test_an_expression_checked_before_is_uniform_only_where_its_names_are():
    bound = t.Binary("add", Q, t.Imm(1, d.i32))
    loop = t.For(t.Name("k", d.i32), t.Imm(0, d.i32), bound, t.Imm(1, d.i32), ())
    good = function(t.Let(Q, N), loop)
    bad = function(t.Let(Q, t.ThreadIndex()), loop)  # the bound's object is the same
    expected = message(bad)
    assert "is not uniform" in expected
    assert message(bad, warmed(good)) == expected


# --------------------------------------------------------------------------- cleanup


def unused_lets_removed_one_round_at_a_time(body: tuple[t.Stmt, ...], grid) -> tuple:
    """The rule of thread_cleanup's docstring, literally: remove every Let nothing reads,
    again and again until none is removed."""

    def reads(stmts):
        names = {s.name for e in grid for s in t.walk_expr(e) if isinstance(s, t.Name)}
        for stmt in t.walk_stmts(stmts):
            for e in t.stmt_exprs(stmt):
                names |= {s.name for s in t.walk_expr(e) if isinstance(s, t.Name)}
        return names

    while True:
        used = reads(body)
        kept = tuple(s for s in body if not (isinstance(s, t.Let) and s.name.name not in used))
        if kept == body:
            return body
        body = kept


def test_cleanup_removes_chains_of_dead_lets_and_keeps_what_a_store_reads():
    a, b, c, e = (t.Name(n, d.i64) for n in "abce")
    tid = t.Cvt(t.ThreadIndex(), d.i64)
    body = (
        t.Let(a, tid),
        t.Let(b, t.Binary("add", a, t.Imm(1, d.i64))),
        t.Let(c, t.Binary("mul", b, t.Imm(2, d.i64))),  # nothing reads c: a, b, c all go
        t.Let(e, t.Binary("mul", tid, t.Imm(4, d.i64))),
        t.GlobalStore("x", e, t.Reg("r", 0), 4),
    )
    fn = function(*body)
    cleaned = thread_cleanup.run(fn)
    assert cleaned.body == unused_lets_removed_one_round_at_a_time(body, fn.grid)
    assert cleaned.body == body[3:]


# --------------------------------------------------------------------------- encodes


def f16_code(value: float) -> int:
    """numpy's own round-to-nearest-even cast to binary16, as a code."""
    with np.errstate(over="ignore"):  # beyond the largest f16: inf, as the cast policy
        return int(np.array([value]).astype(np.float16).view(np.uint16)[0])


def test_remembered_encodes_are_the_casts_and_keep_the_sign_of_zero():
    rng = np.random.default_rng(7)
    values = [0.0, -0.0, 1.0, -1.0, 65504.0, 65520.0, -1e9, 5.96e-8, 2.98e-8, float("inf")]
    values += [float(v) for v in rng.normal(0, 1000, 200)]
    for _ in range(2):  # computed, then remembered
        for v in values:
            assert int(d.f16.encode(v)) == f16_code(v), v
    assert int(d.f16.encode(-0.0)) == 0x8000 and int(d.f16.encode(0.0)) == 0
    whole = d.f16.encode(np.array(values))  # a long array: not remembered
    assert [int(c) for c in whole] == [f16_code(v) for v in values]


def test_a_remembered_encode_hands_out_a_fresh_array():
    first = d.bf16.encode(1.5)
    first[...] = 0
    assert int(d.bf16.encode(1.5)) == struct.unpack("<I", struct.pack("<f", 1.5))[0] >> 16


# --------------------------------------------------------------------------- register maps


def first_sources_by_pairs(src: np.ndarray, want: np.ndarray) -> list[int] | None:
    """For each wanted column: the first source column holding it in each thread, the
    same in every thread; None when a thread lacks it or threads disagree."""
    choice = []
    for column in range(want.shape[1]):
        firsts = set()
        for row in range(src.shape[0]):
            hits = [j for j in range(src.shape[1]) if src[row, j] == want[row, column]]
            if not hits:
                return None
            firsts.add(hits[0])
        if len(firsts) != 1:
            return None
        choice.append(firsts.pop())
    return choice


def test_the_register_map_by_sorting_is_the_map_by_pairs():
    rng = np.random.default_rng(3)
    found = {"map": 0, "none": 0}
    for _ in range(3000):
        threads, held, wanted = (int(v) for v in rng.integers(1, 7, 3))
        span = int(rng.integers(1, 10))
        if rng.random() < 0.5:  # every thread holds the same elements: maps exist
            row = rng.integers(0, span, held)
            src = np.stack([row + 100 * k for k in range(threads)])
            want = src[:, rng.integers(0, held, wanted)]
        else:
            src = rng.integers(0, span, (threads, held))
            want = rng.integers(0, span, (threads, wanted))
        expected = first_sources_by_pairs(src, want)
        assert _first_sources(src, want) == expected
        found["none" if expected is None else "map"] += 1
    assert min(found.values()) > 100


# --------------------------------------------------------------------------- plumbing


def test_pausing_the_collector_nests_and_restores_its_state():
    assert gc.isenabled()
    with collection_paused():
        assert not gc.isenabled()
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with collection_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()


def test_walk_expr_visits_each_expression_before_its_children_left_to_right():
    def preorder(e: t.Expr) -> list[t.Expr]:
        return [e] + [x for child in e.children() for x in preorder(child)]

    a, b = t.Read("r", 0, d.f32), t.Read("r", 1, d.f32)
    e = t.Select(
        t.Binary("lt", a, b), t.Fma(a, b, t.Unary("neg", a)), t.Binary("max", b, t.Imm(0.0, d.f32))
    )
    assert [id(x) for x in t.walk_expr(e)] == [id(x) for x in preorder(e)]
