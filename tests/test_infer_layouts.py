"""The infer_layouts pass: its layout rules, text in / text out, every example, errors."""

import re

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang import dtypes
from tilelang.analysis.layout_policy import blocked_layout, dot_layouts, view_layout
from tilelang.ir import nodes as ir
from tilelang.ir.atoms import MMA_M16N8K16_F16, MMA_M16N8K32_I8
from tilelang.ir.layout import local, replicated, spatial
from tilelang.ir.layout_parser import parse_layout
from tilelang.ir.parser import parse_function
from tilelang.ir.printer import print_function
from tilelang.ir.types import TileType
from tilelang.ir.verify import verify
from tilelang.ir.visit import body_params, walk
from tilelang.passes import infer_layouts
from tilelang.passes.infer_layouts import LayoutInferenceError
from tilelang.runtime import interpreter
from tilelang.runtime.arguments import bind_arguments

# -- helpers ----------------------------------------------------------------------------


def infer(body: str, warps: int = 4, params: str = "%x: tensor<f32, [M, N]>") -> str:
    """The body text (no kernel header, no locs) of `body` after infer_layouts. N is
    stated a multiple of 128, so 16-byte accesses are provable and the default layouts
    are not cut down to unaligned runs (test_unaligned_layouts.py covers those)."""
    text = (
        f"kernel k({params}) sizes(%M: i32, %N: i32) warps({warps}) assume(N % 128) {{\n{body}}}\n"
    )
    fn = infer_layouts.run(parse_function(text))
    check_contract(fn)
    out = print_function(fn)
    return "\n".join(line.strip() for line in out.splitlines()[1:-1])


def line_of(out: str, name: str) -> str:
    """The line defining %name."""
    return next(line for line in out.splitlines() if line.startswith(f"%{name} ="))


def layout_in(line: str) -> str:
    """The layout text of the (last) tile type on a line."""
    return re.search(r"tile<[^,]+, \[[^\]]*\], (.*)>$", line).group(1)


def tile_vars(fn: ir.Function) -> list[ir.Var]:
    found = []
    for instr in walk(fn):
        found += [v for v in (*body_params(instr), *instr.defs()) if isinstance(v.type, TileType)]
    return found


def _layout(value: ir.Value):
    return (
        value.type.layout
        if isinstance(value, ir.Var) and isinstance(value.type, TileType)
        else None
    )


def check_contract(fn: ir.Function, source: ir.Function | None = None) -> None:
    """Rules 1-5 of the pass's contract, checked independently of its code (`source`:
    the input, whose given layouts rule 6 keeps)."""
    given = {v.name for v in tile_vars(source) if v.type.layout is not None} if source else set()
    verify(fn)
    assert parse_function(print_function(fn)) == fn
    threads = fn.warps * 32
    for var in tile_vars(fn):
        layout = var.type.layout
        assert layout is not None, f"%{var.name} has no layout"
        assert layout.shape == tuple(var.type.shape), var.name
        assert layout.num_threads == threads, (var.name, str(layout))
    for instr in walk(fn):
        want = _layout(getattr(instr, "result", None))
        if isinstance(instr, ir.Compute | ir.Cast) and want is not None:
            operands = instr.args if isinstance(instr, ir.Compute) else (instr.value,)
            for arg in operands:
                assert _layout(arg) in (None, want), f"{instr.result.name}: {arg.name}"
        elif isinstance(instr, ir.Dot):
            assert _layout(instr.acc) == want
            m, k = instr.a.type.shape
            plan = dot_layouts(
                m, want.shape[1], k, instr.a.type.dtype, instr.acc.type.dtype, fn.warps
            )
            if plan is not None and want == plan.c:  # (a given result layout: a generic dot)
                assert (_layout(instr.a), _layout(instr.b)) == (plan.a, plan.b)
        elif isinstance(instr, ir.Reduce) and want is not None:
            assert want == _layout(instr.value).reduce(instr.axis, keepdims=False)
        elif isinstance(instr, ir.Scan):
            assert want == _layout(instr.value)
        elif isinstance(instr, ir.Transpose):
            assert want == _layout(instr.value).permute(instr.perm)
        elif isinstance(instr, ir.Broadcast) and _layout(instr.value) is not None:
            dims = [d for d, s in enumerate(instr.value.type.shape) if s != want.shape[d]]
            assert _layout(instr.value) == want.reduce(dims)
        elif isinstance(instr, ir.View) and {instr.value.name, instr.result.name} <= given:
            # both layouts given: each thread's bits, reinterpreted in place
            value = instr.value.type
            assert value.layout.num_locals * value.dtype.bits == want.num_locals * (
                instr.result.type.dtype.bits
            )
        elif isinstance(instr, ir.View):
            natural = view_layout(
                _layout(instr.value), instr.value.type.dtype, instr.result.type.dtype
            )
            assert want == natural
        elif isinstance(instr, ir.For):
            ends = instr.body.instrs[-1].values
            for init, carried, end, result in zip(
                instr.inits, instr.carried, ends, instr.results, strict=True
            ):
                assert _layout(init) == _layout(carried) == _layout(end) == _layout(result)


def interpret(fn: ir.Function, **values):
    """Run `fn` on host arrays through the reference interpreter; the stored tensors."""
    bound = bind_arguments(fn, values)
    interpreter.run(fn, bound.tensors, bound.scalars, bound.sizes)
    for tensor in bound.tensors.values():
        tensor.finish()
    outputs = tuple(values[name] for name in bound.stored)
    return outputs[0] if len(outputs) == 1 else outputs


def same_bits(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8))


# -- blocked layouts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "dtype", "threads", "expected"),
    [
        ((64, 64), dtypes.f16, 128, local(4, 1).spatial(16, 8).local(1, 8)),
        ((16, 64), dtypes.f16, 128, spatial(16, 8).local(1, 8)),
        ((64, 64), dtypes.u4, 128, spatial(64, 2).local(1, 32)),
        ((64, 64), dtypes.u3, 128, spatial(64, 2).local(1, 32)),  # 32 u3 = 12 bytes
        ((1024,), dtypes.f32, 128, local(2).spatial(128).local(4)),
        ((4, 64), dtypes.f32, 128, spatial(4, 32).local(1, 2)),  # threads before vectors
        ((4,), dtypes.f32, 128, replicated(32) * spatial(4)),
        ((16,), dtypes.u3, 128, replicated(64) * spatial(2).local(8)),  # whole bytes: 8 u3
        ((8, 6), dtypes.u4, 128, replicated(16, rank=2) * spatial(8, 1).local(1, 6)),  # 3 ∤ 128
        ((5,), dtypes.u4, 32, replicated(32) * local(5)),  # no whole bytes possible
        ((1, 64), dtypes.f16, 128, replicated(2, rank=2) * spatial(1, 64)),
        ((3, 5), dtypes.f32, 64, replicated(64, rank=2) * local(3, 5)),
        ((64, 64), dtypes.f16, 96, replicated(3, rank=2) * local(16, 1).spatial(4, 8).local(1, 8)),
        ((), dtypes.f32, 32, replicated(32, rank=0)),
    ],
)
def test_blocked_layout(shape, dtype, threads, expected):
    layout = blocked_layout(shape, dtype, threads)
    assert layout == expected, str(layout)
    assert layout.shape == shape and layout.num_threads == threads


def test_blocked_layout_min_vec_keeps_whole_groups():
    # u8 -> u3 views need runs of 3 bytes (= 8 u3); 8 f16 per thread is also 8 | 16.
    assert blocked_layout((16, 48), dtypes.u8, 128, min_vec=3) == local(2, 1).spatial(8, 16).local(
        1, 3
    )
    assert blocked_layout((16, 64), dtypes.f16, 128, min_vec=2) == spatial(16, 8).local(1, 8)


# -- dot layouts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m", "n", "k", "warps", "grid"),
    [
        (16, 64, 64, 4, (1, 4)),
        (64, 64, 32, 4, (2, 2)),
        (128, 32, 16, 4, (4, 1)),
        (64, 128, 32, 8, (2, 4)),
        (32, 32, 16, 1, (1, 1)),
    ],
)
def test_dot_warp_grid_is_as_square_as_possible(m, n, k, warps, grid):
    assert dot_layouts(m, n, k, dtypes.f16, dtypes.f32, warps).warps == grid


def test_dot_without_atom():
    assert dot_layouts(16, 64, 64, dtypes.f16, dtypes.f16, 4) is None  # f16 accumulator
    assert dot_layouts(16, 64, 64, dtypes.f32, dtypes.f32, 4) is None  # f32 operands
    assert dot_layouts(8, 64, 64, dtypes.f16, dtypes.f32, 4) is None  # M % 16
    assert dot_layouts(16, 8, 16, dtypes.f16, dtypes.f32, 4) is None  # 4 warps, one 16x8 block
    assert dot_layouts(16, 64, 16, dtypes.i8, dtypes.i32, 4) is None  # K % 32
    assert dot_layouts(16, 64, 32, dtypes.u8, dtypes.i32, 4).atom == MMA_M16N8K32_I8


def assert_warp_ownership(plan, m, n, k, warps):
    """The warp owning C block (wm_i, wn_i) holds A rows wm_i and B columns wn_i."""
    wm, wn = plan.warps
    rows, cols = m // wm, n // wn  # the C block of one warp
    for layout, check in ((plan.c, "c"), (plan.a, "a"), (plan.b, "b")):
        table = layout.table()  # [threads, locals, 2]
        warp = np.arange(warps * 32)[:, None] // 32
        if check in ("c", "a"):
            assert np.array_equal(
                table[..., 0] // rows, np.broadcast_to(warp // wn, table.shape[:2])
            )
        if check in ("c", "b"):
            assert np.array_equal(
                table[..., 1] // cols, np.broadcast_to(warp % wn, table.shape[:2])
            )
        if check == "a":  # every warp holds all K of its rows
            for w in range(warps):
                held = {tuple(i) for i in table[w * 32 : (w + 1) * 32].reshape(-1, 2)}
                assert len(held) == rows * k
        if check == "b":
            for w in range(warps):
                held = {tuple(i) for i in table[w * 32 : (w + 1) * 32].reshape(-1, 2)}
                assert len(held) == k * cols
    assert plan.c.is_bijective()


@pytest.mark.parametrize(
    ("m", "n", "k", "operand", "acc", "warps"),
    [
        (64, 64, 32, dtypes.f16, dtypes.f32, 4),
        (16, 64, 64, dtypes.f16, dtypes.f32, 4),
        (32, 64, 16, dtypes.bf16, dtypes.f32, 8),
        (64, 32, 64, dtypes.i8, dtypes.i32, 4),
        (128, 128, 32, dtypes.f16, dtypes.f32, 2),
    ],
)
def test_dot_layouts_divide_by_the_atom_and_follow_the_warp_convention(
    m, n, k, operand, acc, warps
):
    plan = dot_layouts(m, n, k, operand, acc, warps)
    assert plan.c.divisible_by(plan.atom.c)
    assert plan.a.divisible_by(plan.atom.a)
    assert plan.b.divisible_by(plan.atom.b)
    for layout in (plan.a, plan.b, plan.c):
        assert layout.num_threads == warps * 32
        assert parse_layout(str(layout)) == layout
    assert_warp_ownership(plan, m, n, k, warps)


@pytest.mark.parametrize(
    ("example", "kernel", "constexprs", "shapes"),
    [
        ("matmul", "matmul", {"BM": 64, "BN": 64, "BK": 32}, (64, 64, 32)),
        ("quant_matmul", "quant_matmul", {"BM": 16, "BN": 64, "BK": 64}, (16, 64, 64)),
    ],
)
def test_example_dots_get_mma_layouts(example, kernel, constexprs, shapes):
    fn = infer_layouts.run(getattr(load_example(example), kernel).specialize(**constexprs))
    (dot,) = [i for i in walk(fn) if isinstance(i, ir.Dot)]
    atom = MMA_M16N8K16_F16
    a, b, acc = (v.type.layout for v in (dot.a, dot.b, dot.acc))
    assert acc == dot.result.type.layout
    assert acc.divisible_by(atom.c) and a.divisible_by(atom.a) and b.divisible_by(atom.b)
    m, n, k = shapes
    plan = dot_layouts(m, n, k, dtypes.f16, dtypes.f32, 4)
    assert (a, b, acc) == (plan.a, plan.b, plan.c)
    assert_warp_ownership(plan, m, n, k, 4)
    # a is a relayout of a load in the blocked layout; the quantized weights are loaded in
    # their fragments' load order and viewed in place as b (no relayout of values: the
    # one relayout of the u4 codes is tl.load_fragment's own, which reorders each
    # thread's codes and moves nothing); the zeros accumulator needs none.
    relayouts = {
        i.result.name: i
        for i in walk(fn)
        if isinstance(i, ir.Relayout) and i.result.type.dtype in (dtypes.f16, dtypes.f32)
    }
    operands = {dot.a.name, dot.b.name} if example == "matmul" else {dot.a.name}
    assert set(relayouts) == operands
    (loop,) = [i for i in walk(fn) if isinstance(i, ir.For)]
    assert loop.inits[0].type.layout == plan.c


# -- text in, text out -------------------------------------------------------------------


def test_operands_follow_the_result_and_free_loads_take_the_wanted_layout():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [8, 64]>\n"
        "  %r = reduce sum %t, axis=1 : tile<f32, [8]>\n"
        "  %u = full 1.0:f32 : tile<f32, [8]>\n"
        "  %v = add %u, %r : tile<f32, [8]>\n"
        "  %w = reshape %v : tile<f32, [8, 1]>\n"
        "  %b = broadcast %w : tile<f32, [8, 64]>\n"
        "  %s = mul %t, %b : tile<f32, [8, 64]>\n"
        "  store %x[0:i32, 0:i32], %s\n",
    )
    assert layout_in(line_of(out, "t")) == "spatial(8, 16).local(1, 4)"
    assert layout_in(line_of(out, "r")) == "spatial(8).replicated(16)"
    assert layout_in(line_of(out, "u")) == "spatial(8).replicated(16)"  # free: no relayout
    assert layout_in(line_of(out, "b")) == "spatial(8, 16).local(1, 4)"
    assert "relayout" not in out


def test_conflicting_operands_get_a_relayout_and_names_stay_unique():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [8, 64]>\n"
        "  %u = load %x[0:i32, 0:i32] : tile<f32, [64, 8]>\n"
        "  %r = reduce sum %t, axis=1 : tile<f32, [8]>\n"
        "  %r.r = reduce sum %u, axis=0 : tile<f32, [8]>\n"
        "  %v = add %r, %r.r : tile<f32, [8]>\n"
        "  %w = mul %r.r, %r : tile<f32, [8]>\n"
        "  %z = add %v, %w : tile<f32, [8]>\n"
        "  %z2 = reshape %z : tile<f32, [8, 1]>\n"
        "  store %x[0:i32, 0:i32], %z2\n",
    )
    # %v follows %r (the first decided); %r.r is moved once, the relayout is shared.
    assert out.count("relayout") == 1
    assert line_of(out, "r.r.r") == (
        "%r.r.r = relayout %r.r : tile<f32, [8], spatial(8).replicated(16)>"
    )
    assert "%v = add %r, %r.r.r" in out and "%w = mul %r.r.r, %r" in out


def test_given_layouts_win():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [16, 8], local(2, 1).spatial(8, 4).local(1, 2).replicated(4)>\n"
        "  %u = load %x[0:i32, 0:i32] : tile<f32, [16, 8]>\n"
        "  %v = add %u, %t : tile<f32, [16, 8]>\n"
        "  %s = reduce max %v, axis=0 : tile<f32, [8], spatial(8).replicated(16)>\n"
        "  %s2 = reshape %s : tile<f32, [1, 8]>\n"
        "  store %x[0:i32, 0:i32], %s2\n",
    )
    given = "local(2, 1).spatial(8, 4).local(1, 2).replicated(4)"
    assert layout_in(line_of(out, "t")) == given
    assert layout_in(line_of(out, "u")) == given and layout_in(line_of(out, "v")) == given
    # The reduction runs in its natural layout, then moves to the given one.
    natural = parse_layout(given).reduce(0, keepdims=False)
    assert line_of(out, "s.r") == f"%s.r = reduce max %v, axis=0 : tile<f32, [8], {natural}>"
    assert line_of(out, "s") == "%s = relayout %s.r : tile<f32, [8], spatial(8).replicated(16)>"


def test_loop_carried_values_agree_with_init_and_yield():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [64, 8]>\n"
        "  %init = reduce sum %t, axis=0 : tile<f32, [8]>\n"
        "  %c1, %z1 = for %i = 0:i32 to %N step 1:i32 iter(%c: tile<f32, [8]> = %init, "
        "%z: tile<f32, [8]> = %init) {\n"
        "    %u = load %x[%i, 0:i32] : tile<f32, [8, 64]>\n"
        "    %s = reduce sum %u, axis=1 : tile<f32, [8]>\n"
        "    %c2 = add %c, %s : tile<f32, [8]>\n"
        "    yield %c2, %s\n"
        "  }\n"
        "  %o = add %c1, %z1 : tile<f32, [8]>\n"
        "  %o2 = reshape %o : tile<f32, [1, 8]>\n"
        "  store %x[0:i32, 0:i32], %o2\n",
    )
    init = parse_layout(layout_in(line_of(out, "init")))
    assert init == parse_layout(layout_in(line_of(out, "t"))).reduce(0, keepdims=False)
    # The carried value keeps its init's layout; each yield is moved inside the body.
    assert f"iter(%c: tile<f32, [8], {init}> = %init, %z: tile<f32, [8], {init}> = %init)" in out
    assert "%c2 = add %c, %s.r" in out
    assert "%s.r = relayout %s" in out and "yield %c2, %s.r" in out
    assert out.count("relayout") == 1


def test_if_yields_are_moved_inside_their_branch():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %p = gt %N, 0:i32 : u1\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [8, 64]>\n"
        "  %u = load %x[0:i32, 0:i32] : tile<f32, [64, 8]>\n"
        "  %y = if %p -> (tile<f32, [8]>) {\n"
        "    %a = reduce sum %t, axis=1 : tile<f32, [8]>\n"
        "    yield %a\n"
        "  } else {\n"
        "    %b = reduce sum %u, axis=0 : tile<f32, [8]>\n"
        "    yield %b\n"
        "  }\n"
        "  %y2 = reshape %y : tile<f32, [8, 1]>\n"
        "  store %x[0:i32, 0:i32], %y2\n",
    )
    lines = out.splitlines()
    middle = lines.index("} else {")
    assert lines[middle - 1] == "yield %a"
    assert lines[middle + 2 : middle + 4] == [
        f"%b.r = relayout %b : tile<f32, [8], {layout_in(line_of(out, 'a'))}>",
        "yield %b.r",
    ]


def test_shape_changes_transpose_view_and_broadcast():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<u8, [32, 16]>\n"
        "  %v = view %t : tile<u4, [32, 32]>\n"
        "  %w = transpose %v, perm=[1, 0] : tile<u4, [32, 32]>\n"
        "  %s = load %q[0:i32, 0:i32] : tile<u4, [1, 32]>\n"
        "  %b = broadcast %s : tile<u4, [32, 32]>\n"
        "  %o = add %w, %b : tile<u4, [32, 32]>\n"
        "  store %q[0:i32, 0:i32], %o\n",
        params="%x: tensor<u8, [M, N]>, %q: tensor<u4, [M, N]>",
    )
    t = parse_layout(layout_in(line_of(out, "t")))
    assert t == spatial(32, 4).local(1, 4)  # 512 bytes: 4 per thread
    v = parse_layout(layout_in(line_of(out, "v")))
    assert v == spatial(32, 4).local(1, 8)  # the natural view: each byte is two u4
    w = parse_layout(layout_in(line_of(out, "w")))
    assert w == v.permute([1, 0])
    assert parse_layout(layout_in(line_of(out, "s"))) == w.reduce(0)
    # Threads holding halves of bytes must not store them: one move, to whole bytes.
    assert out.count("relayout") == 1
    assert (
        line_of(out, "o.r") == "%o.r = relayout %o : tile<u4, [32, 32], spatial(32, 4).local(1, 8)>"
    )
    assert "store %q[0:i32, 0:i32], %o.r" in out


def test_view_of_a_layout_without_whole_groups_moves_the_value_first():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f16, [16, 64], spatial(8, 16).column_local(2, 4)>\n"
        "  %v = view %t : tile<i32, [16, 32]>\n"
        "  %v2 = view %v : tile<f16, [16, 64]>\n"
        "  store %x[0:i32, 0:i32], %v2\n",
        params="%x: tensor<f16, [M, N]>",
    )
    # Pairs of f16 make one i32: the value is moved into a layout with even runs.
    assert "%t.r = relayout %t" in out and "%v = view %t.r" in out


def test_generic_dot_and_acc_chains():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %a = load %x[0:i32, 0:i32] : tile<f32, [16, 32]>\n"
        "  %b = load %x[0:i32, 0:i32] : tile<f32, [32, 64]>\n"
        "  %z = full 0.0:f32 : tile<f32, [16, 64]>\n"
        "  %d = dot %a, %b, %z : tile<f32, [16, 64]>\n"
        "  %e = dot %a, %b, %d : tile<f32, [16, 64]>\n"
        "  store %x[0:i32, 0:i32], %e\n",
    )
    blocked = blocked_layout((16, 64), dtypes.f32, 128)
    for name in ("z", "d", "e"):
        assert parse_layout(layout_in(line_of(out, name))) == blocked
    assert "relayout" not in out  # no atom for f32: operands stay as loaded


def test_dot_with_a_given_result_layout_is_generic():
    given = "local(4, 1).spatial(4, 32).local(1, 2)"
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %a = load %x[0:i32, 0:i32] : tile<f16, [16, 32]>\n"
        "  %b = load %x[0:i32, 0:i32] : tile<f16, [32, 64]>\n"
        "  %z = full 0.0:f32 : tile<f32, [16, 64]>\n"
        f"  %d = dot %a, %b, %z : tile<f32, [16, 64], {given}>\n"
        "  %o = cast %d : tile<f16, [16, 64]>\n"
        "  store %x[0:i32, 0:i32], %o\n",
        params="%x: tensor<f16, [M, N]>",
    )
    assert layout_in(line_of(out, "z")) == given and layout_in(line_of(out, "o")) == given
    assert "relayout" not in out


def test_mma_dot_in_a_loop_text():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %z = full 0:i32 : tile<i32, [32, 32]>\n"
        "  %acc1 = for %k = 0:i32 to %N step 64:i32 iter(%acc: tile<i32, [32, 32]> = %z) {\n"
        "    %a = load %x[0:i32, %k] : tile<i8, [32, 64]>\n"
        "    %b = load %x[%k, 0:i32] : tile<i8, [64, 32]>\n"
        "    %acc2 = dot %a, %b, %acc : tile<i32, [32, 32]>\n"
        "    yield %acc2\n"
        "  }\n"
        "  %o = cast %acc1 : tile<i8, [32, 32]>\n"
        "  store %x[0:i32, 0:i32], %o\n",
        params="%x: tensor<i8, [M, N]>",
    )
    plan = dot_layouts(32, 32, 64, dtypes.i8, dtypes.i32, 4)
    assert plan.atom == MMA_M16N8K32_I8 and plan.warps == (2, 2)
    assert line_of(out, "z") == f"%z = full 0:i32 : tile<i32, [32, 32], {plan.c}>"
    assert f"%a.r = relayout %a : tile<i8, [32, 64], {plan.a}>" in out
    assert f"%b.r = relayout %b : tile<i8, [64, 32], {plan.b}>" in out
    assert "%acc2 = dot %a.r, %b.r, %acc" in out
    assert layout_in(line_of(out, "o")) == str(plan.c)


def test_scan_with_a_given_result_moves_its_operand():
    out = infer(
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32, 0:i32] : tile<f32, [8, 64]>\n"
        "  %s = scan sum %t, axis=1 : tile<f32, [8, 64], replicated(2, rank=2).spatial(8, 8).local(1, 8)>\n"
        "  %u = reduce sum %t, axis=0 : tile<f32, [64]>\n"
        "  %u2 = reshape %u : tile<f32, [1, 64]>\n"
        "  store %x[0:i32, 0:i32], %s\n"
        "  store %x[0:i32, 0:i32], %u2\n",
    )
    # %t is free but also reduced: it takes the scan's wish (the given layout) directly.
    assert layout_in(line_of(out, "t")) == "replicated(2, rank=2).spatial(8, 8).local(1, 8)"
    assert "relayout" not in out


def test_scales_broadcast_into_a_product_take_its_layout_reduced():
    fn = infer_layouts.run(
        load_example("quant_matmul").quant_matmul.specialize(WT=tl.u4, G=128, BN=128, BK=32)
    )
    (broadcast,) = [i for i in walk(fn) if isinstance(i, ir.Broadcast)]
    (product,) = [
        i
        for i in walk(fn)
        if isinstance(i, ir.Compute) and i.op == "mul" and isinstance(i.result.type, TileType)
    ]
    scales = next(i for i in walk(fn) if isinstance(i, ir.Load) and i.result == broadcast.value)
    assert scales.result.type.layout == product.result.type.layout.reduce(0)
    # The product is the dot's b in its fragments, so the scales get the B layout reduced:
    # each thread holds the scales of its own columns.
    b_layout = dot_layouts(16, 128, 32, dtypes.f16, dtypes.f32, 4).b
    assert product.result.type.layout == b_layout
    assert scales.result.type.layout == b_layout.reduce(0)


def test_running_the_pass_twice_changes_nothing():
    for fn in (
        load_example("quant_matmul").quant_matmul.specialize(WT=tl.u3, G=32),
        load_example("softmax").softmax.specialize(),
        zoo.specialize(),
    ):
        once = infer_layouts.run(fn)
        assert infer_layouts.run(once) == once


# -- every example -----------------------------------------------------------------------


def _quant_cases():
    quant = load_example("quant_matmul")
    for wt in (tl.u4, tl.u3, tl.i2, tl.f4e2m1, tl.u8):
        for group, bk in ((32, 64), (64, 64), (128, 128), (128, 32), (64, 128), (32, 32)):
            yield pytest.param(quant, wt, group, bk, id=f"{wt}-G{group}-BK{bk}")


@pytest.mark.parametrize(("quant", "wt", "group", "bk"), list(_quant_cases()))
def test_quant_matmul_keeps_its_results(quant, wt, group, bk):
    fn = quant.quant_matmul.specialize(WT=wt, G=group, BK=bk)
    inferred = infer_layouts.run(fn)
    check_contract(inferred, fn)
    m, k, n = 17, 2 * max(group, bk), 80
    x, w, s = quant.make_inputs(m, k, n, wt, group)
    w = quant.pack_weights(w, BK=bk)
    expected = quant.quant_matmul.interpret(
        x, w, s, np.zeros((m, n), np.float16), WT=wt, G=group, BK=bk
    )
    got = interpret(inferred, x=x, w=w, s=s, y=np.zeros((m, n), np.float16))
    assert same_bits(got, expected)


@pytest.mark.parametrize(
    "constexprs", [{}, {"BM": 16, "BN": 32, "BK": 16}, {"BM": 32, "BN": 128, "BK": 64}]
)
def test_matmul_keeps_its_results(constexprs):
    matmul = load_example("matmul").matmul
    inferred = infer_layouts.run(matmul.specialize(**constexprs))
    check_contract(inferred)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((70, 50)).astype(np.float16)
    b = rng.standard_normal((50, 90)).astype(np.float16)
    expected = matmul.interpret(a, b, np.zeros((70, 90), np.float16), **constexprs)
    assert same_bits(interpret(inferred, a=a, b=b, c=np.zeros((70, 90), np.float16)), expected)


@pytest.mark.parametrize("constexprs", [{}, {"BM": 1, "BN": 32}, {"BM": 8, "BN": 256}])
def test_softmax_keeps_its_results(constexprs):
    softmax = load_example("softmax").softmax
    inferred = infer_layouts.run(softmax.specialize(**constexprs))
    check_contract(inferred)
    x = np.random.default_rng(2).standard_normal((9, 300)).astype(np.float32)
    expected = softmax.interpret(x, np.empty_like(x), **constexprs)
    assert same_bits(interpret(inferred, x=x, y=np.empty_like(x)), expected)


@pytest.mark.parametrize(
    ("example", "kernel", "constexprs"),
    [
        ("row_sum", "row_sum", {"T": tl.i32}),
        ("row_sum", "row_sum", {"T": tl.i32, "BM": 2, "BN": 16}),
        ("row_sum", "row_sum", {"T": tl.i32, "BM": 64, "BN": 4}),
        ("cumsum", "cumsum_rows", {"T": tl.i32}),
        ("cumsum", "cumsum_rows", {"T": tl.i32, "BM": 1, "BN": 16}),
        ("cumsum", "cumsum_rows", {"T": tl.i32, "BM": 16, "BN": 128}),
    ],
)
def test_row_examples_keep_their_results(example, kernel, constexprs):
    k = getattr(load_example(example), kernel)
    inferred = infer_layouts.run(k.specialize(**constexprs))
    check_contract(inferred)
    x = np.random.default_rng(3).integers(-1000, 1000, (37, 150)).astype(np.int32)
    y = np.zeros(37 if example == "row_sum" else (37, 150), np.int32)
    expected = k.interpret(x, y.copy(), **constexprs)
    assert same_bits(interpret(inferred, x=x, y=y.copy()), expected)


@pytest.mark.parametrize("block", [1024, 64, 8, 1])
def test_vector_add_keeps_its_results(block):
    vector_add = load_example("vector_add").vector_add
    inferred = infer_layouts.run(vector_add.specialize(BLOCK=block))
    check_contract(inferred)
    x = np.random.default_rng(4).standard_normal(1000).astype(np.float32)
    expected = vector_add.interpret(x, x, np.empty_like(x), BLOCK=block)
    assert same_bits(interpret(inferred, x=x, y=x, out=np.empty_like(x)), expected)


@tl.kernel(warps=2)
def zoo(
    x: tl.Tensor[tl.u8, "M", "N"],
    h: tl.Tensor[tl.f16, "M", "N"],
    y: tl.Tensor[tl.f16, "M", "N"],
    z: tl.Tensor[tl.i32, "M", "N"],
    flag: tl.i32,
):
    """Every kind of instruction the pass has a rule for, on a 16 x 32 tile."""
    q = tl.load(x, [0, 0], [16, 16])
    nibbles = q.view(tl.u4)  # [16, 32]
    codes = tl.transpose(nibbles).to(tl.i32)  # [32, 16]
    ramp = tl.arange(0, 16)
    t = codes * 3 + ramp[None, :]
    if flag > 0:  # noqa: SIM108 (a runtime branch, not an expression)
        t = tl.cumsum(t, axis=1)
    else:
        t = tl.where(t > 20, t, -t)
    tl.store(z, [0, 0], tl.transpose(t))
    buffer = tl.shared([16, 32], tl.f16)
    buffer.store(tl.load(h, [0, 0], [16, 32]))
    tl.sync()
    f = buffer.load()
    top = tl.max(f, axis=1, keepdims=True)
    acc = tl.zeros([16, 16], tl.f32)
    for k in tl.range(0, 2):
        acc = tl.dot(f - top, tl.load(h, [k, 0], [32, 16]), acc)
    tl.store(y, [0, 0], acc.to(tl.f16))
    tl.store(y, [0, 16], tl.reshape(tl.sum(f, axis=1), [16, 1]).to(tl.f16))


@pytest.mark.parametrize("flag", [0, 1])
def test_every_instruction_kind_keeps_its_results(flag):
    inferred = infer_layouts.run(zoo.specialize())
    check_contract(inferred)
    kinds = {type(i).__name__ for i in walk(inferred)}
    assert {"View", "Transpose", "If", "Scan", "SharedLoad", "Dot", "Arange", "Reduce"} <= kinds
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    h = (rng.standard_normal((40, 40)) / 4).astype(np.float16)
    out = [np.zeros((40, 40), np.float16), np.zeros((40, 40), np.int32)]
    expected = zoo.interpret(x, h, out[0].copy(), out[1].copy(), flag)
    got = interpret(inferred, x=x, h=h, y=out[0].copy(), z=out[1].copy(), flag=flag)
    for g, e in zip(got, expected, strict=True):
        assert same_bits(g, e)


# -- errors ------------------------------------------------------------------------------


def test_given_layout_with_the_wrong_thread_count():
    text = (
        "kernel k(%x: tensor<f32, [N]>) sizes(%N: i32) warps(4) {\n"
        "  %bx = blocks 1:i32 : i32\n"
        '  %t = load %x[0:i32] : tile<f32, [64], spatial(64)>  loc("k.py":7:9)\n'
        "  store %x[0:i32], %t\n"
        "}\n"
    )
    with pytest.raises(LayoutInferenceError) as err:
        infer_layouts.run(parse_function(text))
    assert str(err.value).startswith("k.py:7:9: load %t: the layout spatial(64) spans 64 threads")
    assert "128" in str(err.value)


def test_given_view_layout_that_no_value_layout_gives():
    text = (
        "kernel k(%x: tensor<f16, [N]>, %y: tensor<u8, [N]>) sizes(%N: i32) warps(2) {\n"
        "  %bx = blocks 1:i32 : i32\n"
        "  %t = load %x[0:i32] : tile<f16, [32]>\n"
        '  %v = view %t : tile<u8, [64], spatial(64)>  loc("k.py":4:5)\n'
        "  store %y[0:i32], %v\n"
        "}\n"
    )
    with pytest.raises(
        LayoutInferenceError, match=r"^k\.py:4:5: view %v: the layout spatial\(64\) is no view"
    ):
        infer_layouts.run(parse_function(text))


def test_given_layout_of_the_wrong_shape():
    text = (
        "kernel k(%x: tensor<f32, [N]>) sizes(%N: i32) warps(1) {\n"
        "  %bx = blocks 1:i32 : i32\n"
        '  %t = full 0.0:f32 : tile<f32, [64], spatial(32)>  loc("k.py":3:1)\n'
        "  store %x[0:i32], %t\n"
        "}\n"
    )
    with pytest.raises(
        LayoutInferenceError,
        match=r"^k\.py:3:1: full %t: the layout spatial\(32\) has shape \[32\]",
    ):
        infer_layouts.run(parse_function(text))
