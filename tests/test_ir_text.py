"""The block IR's text form (printer + parser) and the generic walkers of ir.visit."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes as dt
from tilelang.ir import nodes as ir
from tilelang.ir import ops
from tilelang.ir.layout import local, spatial
from tilelang.ir.parser import GRAMMAR, IRSyntaxError, parse_function, parse_type
from tilelang.ir.printer import print_function, print_instr
from tilelang.ir.shape_expr import BinOp, Lit, Sym, parse_shape_expr
from tilelang.ir.shared_layout import Swizzle, row_major
from tilelang.ir.text import print_type
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.ir.verify import verify
from tilelang.ir.visit import (
    Rewriter,
    body_params,
    defined_vars,
    defs_and_uses,
    substitute,
    walk,
)

# -- building functions ----------------------------------------------------------------

I32, U1, F16, F32 = ScalarType(dt.i32), ScalarType(dt.u1), ScalarType(dt.f16), ScalarType(dt.f32)
MMA = spatial(4, 8) * local(4, 8)  # a 16x64 register layout
SWIZZLED = row_major(16, 64).swizzled(Swizzle(3, 3, 6))


def loc(line: int, col: int = 3) -> ir.Loc:
    return ir.Loc('my "kernel" file.py', line, col)


def tile(dtype: dt.DType, *shape: int, layout=None) -> TileType:
    return TileType(dtype, shape, layout)


def tensor(dtype: dt.DType, *dims: str) -> TensorType:
    return TensorType(dtype, tuple(parse_shape_expr(d) for d in dims))


def c(value: int | float, dtype: dt.DType) -> ir.Const:
    return ir.Const(value, dtype)


def var(name: str, type_) -> ir.Var:
    return ir.Var(name, type_)


def qmm_kernel() -> ir.Function:
    """A valid kernel using every instruction class, a for with an if inside, layouts."""
    x, w = var("x", tensor(dt.f16, "M", "K")), var("w", tensor(dt.u4, "K", "N"))
    s, y = var("s", tensor(dt.f16, "K // G", "N")), var("y", tensor(dt.f16, "M", "N"))
    alpha = var("alpha", F32)
    m, k, n = var("M", I32), var("K", I32), var("N", I32)
    gm, gm2 = var("gm", I32), var("gm2", I32)
    bm, bn, om, on = var("bm", I32), var("bn", I32), var("om", I32), var("on", I32)
    acc_type = tile(dt.f32, 16, 64, layout=MMA)
    acc0, sh, idx = (
        var("acc0", acc_type),
        var("sh", SharedType(dt.f16, (16, 64), SWIZZLED)),
        var("idx", tile(dt.i32, 64)),
    )
    kv, acc_c, acc = var("k", I32), var("acc_c", acc_type), var("acc", acc_type)
    a, q, qb = (
        var("a", tile(dt.f16, 16, 64)),
        var("q", tile(dt.u4, 64, 64)),
        var("qb", tile(dt.u8, 64, 32)),
    )
    qf, g, sc = var("qf", tile(dt.f16, 64, 64)), var("g", I32), var("sc", tile(dt.f16, 1, 64))
    scb, b, d = var("scb", tile(dt.f16, 64, 64)), var("b", tile(dt.f16, 64, 64)), var("d", acc_type)
    first, d2, d3 = var("first", U1), var("d2", acc_type), var("d3", acc_type)
    plain = tile(dt.f32, 16, 64)
    mx, cs, mx2 = var("mx", tile(dt.f32, 16)), var("cs", plain), var("mx2", tile(dt.f32, 16, 1))
    mxb, flag, out = var("mxb", plain), var("flag", U1), var("out", plain)
    scaled, ct, sel = var("scaled", plain), var("ct", tile(dt.u1, 16, 64)), var("sel", plain)
    tr, tr2, res = (
        var("tr", tile(dt.f32, 64, 16)),
        var("tr2", plain),
        var("res", tile(dt.f16, 16, 64)),
    )
    box = var("box", tile(dt.f16, 2, 48))
    # an associative scan of (a, b) pairs: (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)
    la, lb, ra, rb = var("la", F32), var("lb", F32), var("ra", F32), var("rb", F32)
    prod, mix, mix2 = var("prod", F32), var("mix", F32), var("mix2", F32)
    combine = ir.Block(
        (
            ir.Compute(prod, "mul", (la, ra), loc=loc(46, 5)),
            ir.Compute(mix, "mul", (ra, lb), loc=loc(46, 7)),
            ir.Compute(mix2, "add", (mix, rb), loc=loc(46, 9)),
            ir.Yield((prod, mix2), loc=loc(46, 11)),
        )
    )
    decay, state = var("decay", plain), var("h", plain)
    scan = ir.AssociativeScan(
        (decay, state), (cs, out), 1, (la, lb), (ra, rb), combine, True, loc=loc(46)
    )
    branch = ir.If(
        first,
        ir.Block((ir.Yield((d,), loc=loc(30)),)),
        ir.Block((ir.Compute(d3, "add", (d, d), loc=loc(31)), ir.Yield((d3,), loc=loc(32, 5)))),
        (d2,),
        loc=loc(29),
    )
    loop_body = ir.Block(
        (
            ir.CopyAsync(sh, x, (om, kv), loc=loc(12)),
            ir.AsyncCommit(loc=loc(13)),
            ir.AsyncWait(0, loc=loc(14)),
            ir.Sync(loc=loc(15)),
            ir.SharedLoad(a, sh, loc=loc(16)),
            ir.SharedStore(sh, a, loc=loc(17)),
            ir.Load(q, w, (kv, on), c(0, dt.u4), loc=loc(18)),
            ir.View(qb, q, loc=loc(19)),
            ir.Cast(qf, q, loc=loc(20)),
            ir.Compute(g, "div", (kv, c(128, dt.i32)), loc=loc(21)),
            ir.Load(sc, s, (g, on), loc=loc(22)),
            ir.Broadcast(scb, sc, loc=loc(23)),
            ir.Compute(b, "mul", (qf, scb), loc=loc(24)),
            ir.Dot(d, a, b, acc_c, loc=loc(25)),
            ir.Compute(first, "eq", (kv, c(0, dt.i32)), loc=loc(26)),
            branch,
            ir.Yield((d2,), loc=loc(33)),
        )
    )
    body = ir.Block(
        (
            ir.Compute(gm, "add", (m, c(15, dt.i32)), loc=loc(2)),
            ir.Compute(gm2, "div", (gm, c(16, dt.i32)), loc=loc(3)),
            ir.Blocks((bm, bn), (gm2, n), loc=loc(4)),
            ir.Compute(om, "mul", (bm, c(16, dt.i32)), loc=loc(5)),
            ir.Compute(on, "mul", (bn, c(64, dt.i32)), loc=loc(6)),
            ir.Full(acc0, c(-0.0, dt.f32), loc=loc(7)),
            ir.SharedAlloc(sh, loc=loc(8)),
            ir.Arange(idx, -3, loc=loc(9)),
            ir.For(
                kv,
                c(0, dt.i32),
                k,
                c(64, dt.i32),
                (acc0,),
                (acc_c,),
                loop_body,
                (acc,),
                2,
                3,
                loc=loc(10),
            ),
            ir.Reduce(mx, acc, "max", 1, loc=loc(40)),
            ir.Scan(cs, acc, "sum", 1, True, loc=loc(41)),
            ir.Reshape(mx2, mx, loc=loc(42)),
            ir.Broadcast(mxb, mx2, loc=loc(43)),
            ir.Compute(flag, "gt", (alpha, c(float("-inf"), dt.f32)), loc=loc(44)),
            ir.If(
                flag,
                ir.Block((ir.Compute(scaled, "mul", (cs, alpha)), ir.Yield((scaled,)))),
                ir.Block((ir.Yield((cs,)),)),
                (out,),
                loc=loc(45),
            ),
            scan,
            ir.Compute(ct, "lt", (out, mxb), loc=loc(50)),
            ir.Compute(sel, "where", (ct, out, mxb), loc=loc(51)),
            ir.Transpose(tr, sel, (1, 0), loc=loc(52)),
            ir.Print('tr "transposed"\n', tr, loc=loc(53)),
            ir.Transpose(tr2, tr, (1, 0), loc=loc(54)),
            ir.Cast(res, tr2, loc=loc(55)),
            ir.Slice(box, res, (3, 8), (5, 56), loc=loc(55, 7)),
            ir.Print("box", box, loc=loc(55, 9)),
            ir.Store(y, (om, on), res, loc=loc(56)),
        )
    )
    constexprs = (
        ("WT", dt.u4),
        ("G", 128),
        ("BM", -16),
        ("eps", 1e-05),
        ("label", 'a "b"\n'),
        ("fast", True),
    )
    return ir.Function(
        "quant_matmul", (x, w, s, y, alpha), (m, k, n), body, 4, constexprs, loc=loc(1, 1)
    )


def odd_function() -> ir.Function:
    """Edge cases of spelling (not a valid kernel: the round trip does not need one)."""
    weird = var('a b"c%\u00e9', F16)
    i64 = var("i", ScalarType(dt.i64))
    carried = var("c.1", F32)
    body = ir.Block(
        (
            ir.Compute(
                weird, "load", (c(float("inf"), dt.f16), c(-(2**70), dt.f16))
            ),  # op spelled like a mnemonic
            ir.Compute(var("e", F32), "exp", ()),
            ir.For(
                i64,
                c(-1, dt.i64),
                c(10, dt.i64),
                c(1, dt.i64),
                (c(5e-324, dt.f32), c(1.5, dt.f32)),
                (carried,),
                ir.Block((ir.Yield(()),)),
                (var("r", F16),),
            ),
            ir.Blocks((), ()),
            ir.Yield(()),  # a yield in the middle of a block
            ir.Reduce(var("s", F32), weird, "for", 0, loc=ir.Loc("", -1, 0)),
            ir.If(c(True, dt.u1), ir.Block(()), ir.Block(()), ()),
            ir.Require(c(False, dt.u1), 'a "quoted" message\nover two lines', loc=loc(7)),
            ir.Lookup(var("lk", tile(dt.f16, 4, 2)), var("l", tile(dt.f6e3m2, 2)), weird),
            ir.Load(var("l", tile(dt.f6e3m2, 2)), weird, (), loc=ir.Loc("<unknown>", 3, 4)),
            ir.Relayout(var("rl", F16), weird, attrs=(("n", -3), ("s", 'q"'), ("t", True))),
            ir.Atomic(weird, (), var("rl", F16)),
            ir.Atomic(weird, (c(-1, dt.i32),), weird, var("l", tile(dt.f6e3m2, 2)), loc=loc(9)),
            ir.LoadScalar(var("ls", F16), weird, (c(-1, dt.i32),), c(2.5, dt.f16)),
            ir.Item(var("it", F16), weird),
            ir.Arrive(var("n", ScalarType(dt.i32)), weird, (c(0, dt.i32), var("it", F16))),
            ir.Gather(var("g", tile(dt.f16, 4, 2)), weird, (), var("ls", F16), 1),
            ir.Scatter(weird, (c(0, dt.i32),), var("ls", F16), 0, var("g", tile(dt.f16, 4, 2))),
            ir.ScatterAtomic(weird, (), var("ls", F16), 1, weird, var("l", tile(dt.f6e3m2, 2))),
            ir.GatherAsync(var("sb", SharedType(dt.f16, (2, 4))), weird, (), var("ls", F16), 0),
            ir.Concat(var("cc", tile(dt.f16, 4, 4)), (var("g", tile(dt.f16, 4, 2)), weird), 1),
            ir.SharedAlloc(var("sb", SharedType(dt.f16, (2, 4)))),
            ir.SharedSlice(
                var("ss", SharedType(dt.f16, (4,))),
                var("sb", SharedType(dt.f16, (2, 4))),
                c(1, dt.i32),
            ),
            ir.SharedTranspose(
                var("st", SharedType(dt.f16, (4, 2))), var("sb", SharedType(dt.f16, (2, 4))), (1, 0)
            ),
        )
    )
    params = (
        var(
            "t",
            TensorType(
                dt.dtype("f5e2m2"),
                (Lit(-3), BinOp("-", Sym("a"), Lit(-2)), parse_shape_expr("(a + b) * c % 4 - 1")),
            ),
        ),
    )
    return ir.Function(
        "for", params, (), body, 0, (("for", "x"), ("n", float("-inf")), ("z", -0.0), ("o", False))
    )


# -- round trip ------------------------------------------------------------------------


def round_trip(fn: ir.Function) -> ir.Function:
    text = print_function(fn)
    back = parse_function(text)
    assert print_function(back) == text
    return back


def test_the_hand_built_kernel_is_valid():
    verify(qmm_kernel())


def test_round_trip_every_instruction_class():
    functions = [qmm_kernel(), odd_function()]
    for fn in functions:
        assert round_trip(fn) == fn
    covered = {type(instr) for fn in functions for instr in walk(fn)}
    assert covered == set(ir.instruction_classes())


def test_printed_text_is_readable_and_stable():
    text = print_function(qmm_kernel())
    lines = text.splitlines()
    file = r'loc("my \"kernel\" file.py"'
    assert lines[0] == (
        "kernel quant_matmul(%x: tensor<f16, [M, K]>, %w: tensor<u4, [K, N]>, "
        "%s: tensor<f16, [K // G, N]>, %y: tensor<f16, [M, N]>, %alpha: f32) "
        "sizes(%M: i32, %K: i32, %N: i32) warps(4) "
        'constexprs(WT=u4, G=128, BM=-16, eps=1e-05, label="a \\"b\\"\\n", fast=true) '
        f"{file}:1:1) {{"
    )
    assert lines[1] == f"  %gm = add %M, 15:i32 : i32  {file}:2:3)"
    assert lines[3] == f"  %bm, %bn = blocks %gm2, %N : i32, i32  {file}:4:3)"
    assert lines[6] == f"  %acc0 = full -0.0:f32 : tile<f32, [16, 64], {MMA}>  {file}:7:3)"
    assert lines[9] == (
        f"  %acc = for %k = 0:i32 to %K step 64:i32 iter(%acc_c: tile<f32, [16, 64], {MMA}> = %acc0)"
        f" unroll(2) stages(3) {file}:10:3) {{"
    )
    assert lines[10] == f"    copy_async %x[%om, %k] -> %sh  {file}:12:3)"
    assert f"    %q = load %w[%k, %on] fill(0:u4) : tile<u4, [64, 64]>  {file}:18:3)" in lines
    assert f"    %d2 = if %first -> (tile<f32, [16, 64], {MMA}>) {file}:29:3) {{" in lines
    assert "    } else {" in lines
    assert f"  %cs = scan sum %acc, axis=1, reverse : tile<f32, [16, 64]>  {file}:41:3)" in lines
    assert "    %scaled = mul %cs, %alpha : tile<f32, [16, 64]>" in lines  # NOWHERE: no loc
    plain = "tile<f32, [16, 64]>"
    assert (
        f"  %decay, %h = associative_scan %cs, %out axis(1) reverse lhs(%la: f32, %lb: f32) "
        f"rhs(%ra: f32, %rb: f32) -> ({plain}, {plain}) {file}:46:3) {{"
    ) in lines
    assert f"    yield %prod, %mix2  {file}:46:11)" in lines
    assert lines[-1] == "}"
    assert text.endswith("}\n")


def test_odd_spellings_are_quoted():
    text = print_function(odd_function())
    assert text.startswith(
        'kernel "for"(%t: tensor<f5e2m2, [-3, a - -2, (a + b) * c % 4 - 1]>) warps(0)'
    )
    assert 'constexprs("for"="x", n=-inf, z=-0.0, o=false)' in text
    assert '%"a b\\"c%\\u00e9" = "load" inf:f16, -1180591620717411303424:f16 : f16' in text
    assert (
        "for %i: i64 = -1:i64 to 10:i64 step 1:i64 iter(%c.1: f32 = 5e-324:f32, _ = 1.5:f32) -> (f16) {"
        in text
    )
    assert 'reduce "for" %"a b\\"c%\\u00e9", axis=0 : f32  loc("":-1:0)' in text
    assert "if true:u1 {" in text


def test_parsed_fields():
    fn = round_trip(qmm_kernel())
    loop = fn.body.instrs[8]
    assert isinstance(loop, ir.For) and (loop.unroll, loop.stages) == (2, 3)
    assert loop.loc == ir.Loc('my "kernel" file.py', 10, 3)
    assert loop.carried[0].type.layout == MMA
    full = fn.body.instrs[5]
    assert math.copysign(1.0, full.value.value) == -1.0 and isinstance(full.value.value, float)
    assert fn.body.instrs[7].start == -3
    assert dict(fn.constexprs)["fast"] is True and dict(fn.constexprs)["G"] == 128
    assert fn.params[3].type == tensor(dt.f16, "M", "N")
    scalar = next(
        i for i in walk(fn) if isinstance(i, ir.Compute) and i.op == "mul" and i.loc == ir.NOWHERE
    )
    assert scalar.loc == ir.NOWHERE


def test_nan_constants_round_trip_by_text():
    fn = ir.Function(
        "k",
        (),
        (),
        ir.Block((ir.Full(var("n", F32), c(float("nan"), dt.f32)),)),
        1,
        (("q", float("nan")),),
    )
    text = print_function(fn)
    assert "full nan:f32 : f32" in text and "q=nan" in text
    back = parse_function(text)
    assert math.isnan(back.body.instrs[0].value.value) and math.isnan(back.constexprs[0][1])
    assert print_function(back) == text


def test_types_print_and_parse():
    for type_ in (
        F16,
        ScalarType(dt.f8e4m3),
        tile(dt.u4, 16, 8),
        tile(dt.u1),
        tile(dt.f16, 16, 8, layout=local(2, 1).spatial(8, 4).local(1, 2)),
        SharedType(dt.bf16, (16, 64), SWIZZLED),
        SharedType(dt.i8, (4, 4)),
        tensor(dt.u4, "K // 2", "N"),
    ):
        assert parse_type(print_type(type_)) == type_
        assert print_type(type_) == str(type_)


def test_comments_blank_lines_and_forward_references_parse():
    fn = parse_function(
        "# leading comment\n\nkernel k(%n: i32) warps(1) {  # trailing\n"
        "  # a comment line\n\n"
        "  %b = add %a, 1:i32 : i32\n"  # used before its definition: the verifier's business
        "  %a = add %n, 1:i32 : i32\n"
        "}\n\n"
    )
    first = fn.body.instrs[0]
    assert first.args[0] == var("a", I32)


def test_every_class_has_a_mnemonic_that_appears_in_the_grammar():
    words = [cls.MNEMONIC for cls in ir.instruction_classes()]
    assert all(words) and len(set(words)) == len(words)
    for cls in ir.instruction_classes():
        if cls not in (ir.Compute, ir.For, ir.If):
            assert f'"{cls.MNEMONIC}"' in GRAMMAR


# -- hypothesis: random straight-line functions ---------------------------------------

DTYPES = [
    dt.u1,
    dt.u4,
    dt.i8,
    dt.i32,
    dt.u64,
    dt.f16,
    dt.bf16,
    dt.f32,
    dt.f8e4m3,
    dt.f6e3m2,
    dt.dtype("f5e2m2"),
]
dtype_st = st.sampled_from(DTYPES)
text_st = st.text(max_size=8)
loc_st = st.one_of(
    st.just(ir.NOWHERE), st.builds(ir.Loc, text_st, st.integers(-9, 10**6), st.integers(0, 500))
)
number_st = st.one_of(st.integers(-(2**80), 2**80), st.floats(), st.booleans())


@st.composite
def tile_types(draw) -> TileType:
    shape = tuple(draw(st.lists(st.integers(1, 8), max_size=3)))
    layout = None
    if shape and draw(st.booleans()):
        layout = draw(st.sampled_from([local, spatial]))(*shape)
    return TileType(draw(dtype_st), shape, layout)


type_st = st.one_of(st.builds(ScalarType, dtype_st), tile_types())
shape_expr_st = st.recursive(
    st.one_of(
        st.builds(Lit, st.integers(-50, 50)),
        st.builds(Sym, st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,3}", fullmatch=True)),
    ),
    lambda inner: st.builds(BinOp, st.sampled_from(["+", "-", "*", "//", "%"]), inner, inner),
    max_leaves=6,
)
constexpr_value_st = st.one_of(number_st, text_st, dtype_st)


@st.composite
def straight_line_functions(draw) -> ir.Function:
    names = iter(
        draw(st.lists(st.text(min_size=1, max_size=5), min_size=24, max_size=24, unique=True))
    )
    params = [ir.Var(next(names), draw(type_st)) for _ in range(draw(st.integers(0, 3)))]
    params.append(
        ir.Var(
            next(names),
            TensorType(draw(dtype_st), tuple(draw(st.lists(shape_expr_st, max_size=3)))),
        )
    )
    values = list(params)
    instrs = []
    for _ in range(draw(st.integers(0, 12))):
        result = ir.Var(next(names), draw(type_st))
        op = draw(st.sampled_from(sorted(ops.ELEMENTWISE)))
        args = []
        for _ in range(ops.ELEMENTWISE[op].arity):
            if draw(st.booleans()):
                args.append(draw(st.sampled_from(values)))
            else:
                args.append(ir.Const(draw(number_st), draw(dtype_st)))
        kind = draw(st.sampled_from(["compute", "compute", "cast", "full"]))
        at = draw(loc_st)
        if kind == "compute":
            instrs.append(ir.Compute(result, op, tuple(args), loc=at))
        elif kind == "cast":
            instrs.append(ir.Cast(result, args[0], loc=at))
        else:
            instrs.append(ir.Full(result, args[0], loc=at))
        values.append(result)
    constexprs = draw(st.lists(st.tuples(st.text(max_size=5), constexpr_value_st), max_size=4))
    return ir.Function(
        draw(st.text(min_size=1, max_size=6)),
        tuple(params[:-1]) + (params[-1],),
        (),
        ir.Block(tuple(instrs)),
        draw(st.integers(1, 32)),
        tuple(constexprs),
        loc=draw(loc_st),
    )


def _has_nan(fn: ir.Function) -> bool:
    consts = [v.value for i in walk(fn) for v in i.uses() if isinstance(v, ir.Const)]
    consts += [v for _, v in fn.constexprs]
    return any(isinstance(v, float) and math.isnan(v) for v in consts)


@settings(max_examples=150, deadline=None)
@given(straight_line_functions())
def test_random_straight_line_functions_round_trip(fn):
    text = print_function(fn)
    back = parse_function(text)
    assert print_function(back) == text
    if not _has_nan(fn):
        assert back == fn


# -- parser errors ---------------------------------------------------------------------

HEAD = "kernel k(%x: tensor<f16, [M]>, %n: i32) sizes(%M: i32) warps(4) {\n"


@pytest.mark.parametrize(
    ("text", "line", "column", "expected"),
    [
        (
            HEAD + "  %a = add %n, 1:i32 i32\n}\n",
            2,
            22,
            "one of ',', ':', 'loc', '{', the end of the line",
        ),
        (HEAD + "  %a = add %n, %q : i32\n}\n", 2, 16, "%q is not defined anywhere"),
        (HEAD + "  %a = add %n, 1:i32\n}\n", 2, 3, "expected ': TYPE'"),
        (HEAD + "  %a = add %n, 1:i32 : i32, i32\n}\n", 2, 3, "1 result(s) but 2 type(s)"),
        (HEAD + "  %a, %b = full 1:i32 : i32, i32\n}\n", 2, 3, "full defines exactly one value"),
        (HEAD + "  store %x[%n], %n : i32\n}\n", 2, 3, "0 result(s) but 1 type(s)"),
        (HEAD + "  %a = full 1:q7 : i32\n}\n", 2, 15, "unknown dtype name 'q7'"),
        (
            HEAD + "  %a = full 1:i32 : tile<f16, [4], local(3>\n}\n",
            2,
            43,
            "expected one of ')', ','",
        ),
        (
            HEAD + "  %a = full 1:i32 : tile<f16, [4], local(2) * local(2, 2)>\n}\n",
            2,
            47,
            "cannot compose",
        ),
        (
            HEAD + "  %a = full 1:i32 : shared<f16, [4], shared(4:1) ^ swizzle(1, 1, 1)>\n}\n",
            2,
            38,
            "shift must differ",
        ),
        (HEAD + "  %a = full 1:i32 : tile<f16, [4]>\n", 3, 1, "found the end of the text"),
        (
            HEAD + "  %c = eq %n, 0:i32 : u1\n  if %c {\n  }\n}\n",
            4,
            4,
            "expected 'else', found the end of the line",
        ),
        (HEAD + "  %a = full 1:i32 : tensor<f16, [M +]>\n}\n", 2, 37, "found ']'"),
        ("kernel k() {\n}\n", 1, 12, "expected one of 'sizes', 'warps', found '{'"),
        (HEAD + '  %a = full 1:i32 : i32 loc("f.py":x:1)\n}\n', 2, 36, "an integer"),
        (
            HEAD + "  %r = for %i = 0:i32 to %n step 1:i32 {\n    yield\n  }\n}\n",
            2,
            3,
            "1 result(s) but 0 loop-carried",
        ),
    ],
)
def test_parse_errors_say_where_and_what(text, line, column, expected):
    with pytest.raises(IRSyntaxError) as info:
        parse_function(text)
    error = info.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert message.startswith(f"line {line}, column {column}: "), message
    assert expected in message, message
    assert (error.line, error.column) == (line, column)
    assert re.search(r"\n  .*\n  *\^$", message) or "end of the text" in message


def test_instruction_printing_alone():
    cast = ir.Cast(var("h", F16), var("f", F32), loc=ir.Loc("a.py", 1, 2))
    assert print_instr(cast, 1) == '  %h = cast %f : f16  loc("a.py":1:2)'


# -- visit -----------------------------------------------------------------------------


def test_walk_is_pre_order_into_bodies():
    fn = qmm_kernel()
    order = [type(i).__name__ for i in walk(fn)]
    loop = order.index("For")
    assert order[loop + 1 : loop + 3] == ["CopyAsync", "AsyncCommit"]
    branch = order.index("If")
    assert order[branch + 1 : branch + 5] == ["Yield", "Compute", "Yield", "Yield"]
    assert order[branch + 5] == "Reduce"
    assert len(order) == sum(1 for _ in walk(fn.body))


def test_defs_and_uses():
    fn = qmm_kernel()
    defs, uses = defs_and_uses(fn)
    by_name = {v.name: v for v in defs}
    assert defs[by_name["M"]] is None
    assert isinstance(defs[by_name["k"]], ir.For) and isinstance(defs[by_name["acc_c"]], ir.For)
    assert isinstance(defs[by_name["acc"]], ir.For)
    assert [type(i).__name__ for i in uses[by_name["acc"]]] == ["Reduce", "Scan"]
    assert uses[by_name["idx"]] == []  # defined, never used
    names = [v.name for v in defined_vars(fn)]
    assert names[:8] == ["x", "w", "s", "y", "alpha", "M", "K", "N"]
    assert names.index("k") < names.index("acc_c") < names.index("d2") < names.index("acc")
    assert body_params(fn.body.instrs[8]) == (fn.body.instrs[8].var, *fn.body.instrs[8].carried)


def test_substitute_replaces_uses_only():
    fn = qmm_kernel()
    m = fn.sizes[0]
    eleven = c(11, dt.i32)
    new = substitute(fn, {m: eleven})
    first = new.body.instrs[0]
    assert first.args == (eleven, c(15, dt.i32))
    assert new.sizes == fn.sizes  # definitions stay
    block = substitute(fn.body, {m: eleven})
    assert block == new.body
    untouched = substitute(fn.body, {})
    assert untouched == fn.body


def test_rewriter_renames_everything_consistently():
    class Rename(Rewriter):
        def new_var(self, v: ir.Var) -> ir.Var:
            return ir.Var(f"r_{v.name}", v.type)

    fn = qmm_kernel()
    renamed = Rename().rewrite_function(fn)
    assert all(v.name.startswith("r_") for v in defined_vars(renamed))
    for instr in walk(renamed):
        for value in instr.uses():
            assert not isinstance(value, ir.Var) or value.name.startswith("r_")
    text = print_function(renamed)
    assert "%r_acc = for %r_k = " in text and "yield %r_d2" in text
    assert parse_function(text) == renamed
    back = substitute(renamed, {})
    assert back == renamed


def test_rewriter_visit_methods_replace_split_and_drop():
    class Lower(Rewriter):
        def visit_Print(self, instr: ir.Print):
            return None

        def visit_Sync(self, instr: ir.Sync):
            return [instr, ir.Sync(loc=instr.loc)]

        def visit_Cast(self, instr: ir.Cast):
            new = self.generic(instr)
            return replace(new, loc=ir.Loc("lowered", 0, 1))

    fn = Lower().rewrite_function(qmm_kernel())
    kinds = [type(i) for i in walk(fn)]
    assert ir.Print not in kinds
    assert kinds.count(ir.Sync) == 2
    assert all(i.loc.file == "lowered" for i in walk(fn) if isinstance(i, ir.Cast))


def test_attributes_print_sorted_and_parse_back():
    load = ir.Load(var("a", tile(dt.f16, 8)), var("x", F16), ()).with_attrs(vector=16, why="x")
    assert load.attr("vector") == 16 and load.attr("missing", 0) == 0
    assert load.with_attrs(vector=8).attrs == (("vector", 8), ("why", "x"))
    fn = parse_function(
        "kernel k(%x: tensor<f16, [N]>) sizes(%N: i32) warps(1) {\n"
        "  %b = blocks 1:i32 : i32\n"
        '  %a = load %x[%b] {why="x", vector=16} : tile<f16, [32], spatial(32)>\n'
        "}\n"
    )
    (_, loaded) = fn.body.instrs
    assert loaded.attrs == (("vector", 16), ("why", "x"))
    assert '{vector=16, why="x"} : tile<f16' in print_function(fn)


@pytest.mark.parametrize("raw", ["\x01", "\t", "\x7f\x00"])
def test_a_control_character_in_a_string_is_a_syntax_error(raw):
    text = f'kernel k(%n: i32) warps(1) {{\n  %b = blocks %n : i32  loc("a{raw}b":1:1)\n}}\n'
    if raw == "\x7f\x00":  # DEL is printable to json; NUL is not
        text = text.replace("a\x7f", "a")
    with pytest.raises(IRSyntaxError, match=r"line 2, column \d+: bad string: Invalid control"):
        parse_function(text)


def test_escaped_control_characters_round_trip():
    fn = parse_function(
        'kernel k(%n: i32) warps(1) {\n  %b = blocks %n : i32  loc("a\\u0001\\tb":1:1)\n}\n'
    )
    assert fn.body.instrs[0].loc.file == "a\x01\tb"
    assert parse_function(print_function(fn)) == fn
