"""What the compiler remembers to be fast gives what it computed before: the hashes of
values, types and layouts, the attributes of layouts, the register estimate's verdicts
on moves and its address counts, the statement readers, the walk of instructions and
the one-copy rewrite. Each is compared with an oracle written here from its rule."""

from __future__ import annotations

import pickle
from dataclasses import fields, replace

import numpy as np
import pytest
from conftest import load_example

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout, column_spatial, local, replicated, spatial
from tilelang.ir.shape_expr import Lit, Sym
from tilelang.ir.shared_layout import Mode, SharedLayout
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.ir.visit import Rewriter, walk
from tilelang.kernels.attention import default_tiles, flash_attention_kernel
from tilelang.passes import plan_registers, register_moves

F16 = dtypes.f16
LAYOUTS = [
    spatial(4, 8).local(2, 2),
    local(2, 1).spatial(8, 4).local(1, 4),
    column_spatial(8, 4).local(2, 4),
    replicated(2, rank=2).spatial(2, 8).local(4, 2),
    local(1, 2).spatial(16, 2).local(1, 4),
]


def _values():
    layout = LAYOUTS[1]
    tile = TileType(F16, (16, 16), layout)
    shared = SharedType(F16, (8, 16), SharedLayout(((Mode(8, 16),), (Mode(16, 1),))))
    tensor = TensorType(dtypes.u4, (Sym("K"), Lit(64)))
    return [ScalarType(dtypes.i32), tile, shared, tensor, ir.Var("x", tile), ir.Var("y", shared)]


# --------------------------------------------------------------------------- hashes


@pytest.mark.parametrize("value", _values(), ids=lambda v: type(v).__name__)
def test_a_remembered_hash_is_the_hash_of_the_fields_each_time(value):
    expected = hash(tuple(getattr(value, f.name) for f in fields(value)))
    assert hash(value) == expected
    assert hash(value) == expected  # the remembered one
    twin = replace(value)  # equal, made anew: the same hash
    assert twin == value and hash(twin) == expected


def test_a_layout_hashes_as_its_canonical_form_and_equal_layouts_alike():
    for layout in LAYOUTS:
        c = layout.canonicalize()
        assert hash(layout) == hash((c.shape, c.mode_shape, c.thread_modes, c.local_modes))
    padded = Layout((8, 4), ((1, 8), (4,)), (1, 2), (0,))  # a size-1 mode: not canonical
    plain = Layout((8, 4), ((8,), (4,)), (0, 1), ())
    assert padded == plain and hash(padded) == hash(plain)


@pytest.mark.parametrize("index", range(len(_values()) + 1))
def test_a_pickled_value_leaves_its_remembered_hash_behind(index):
    """A string hashes differently in another process: a value read back from the disk
    cache must hash anew there."""
    value = [*_values(), spatial(4, 8).local(2, 2)][index]  # made here: its hash is spoilt
    expected = hash(value)
    object.__setattr__(value, "_hash", 12345)  # as if remembered by another process
    loaded = pickle.loads(pickle.dumps(value))
    assert "_hash" not in vars(loaded)
    assert loaded == value and hash(loaded) == expected


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_layout_counts_are_those_of_its_table_and_are_computed_once(layout):
    table = layout.table()  # [threads, locals, rank]: the mapping itself
    counts = {
        "num_threads": table.shape[0],
        "num_locals": table.shape[1],
        "size": int(np.prod(layout.shape)),
        "num_modes": sum(len(m) for m in layout.mode_shape),
        "mode_sizes": tuple(s for dim in layout.mode_shape for s in dim),
        "replication": table.shape[0] * table.shape[1] // int(np.prod(layout.shape)),
    }
    for name, expected in counts.items():
        assert getattr(layout, name) == expected, name
        assert vars(layout)[name] == expected, f"{name} is not kept"
    assert str(layout) == repr(layout) == vars(layout)["_text"]


def test_a_layout_checks_its_sizes_as_before():
    with pytest.raises(ValueError, match="tile size must be positive, got 0"):
        Layout((0,), ((1,),), (0,), ())
    with pytest.raises(ValueError, match="mode size must be an int, got True"):
        Layout((2,), ((True,),), (0,), ())
    with pytest.raises(ValueError, match="mode 1 appears in neither threads nor locals"):
        Layout((4,), ((2, 2),), (0,), ())
    assert Layout([np.int64(4)], [[np.int64(4)]], [0], []).shape == (4,)


# --------------------------------------------------------------------------- moves


def _pairwise(layout: Layout, wanted: np.ndarray) -> bool:
    """The rule, pair by pair: every thread holds each element it wants, and the first
    local holding it is the same local in every thread."""
    held = layout.table()
    first_locals = None
    for thread in range(held.shape[0]):
        locals_ = []
        for want in wanted[thread]:
            hits = np.flatnonzero((held[thread] == want).all(axis=-1))
            if hits.size == 0:
                return False
            locals_.append(int(hits[0]))
        if first_locals is None:
            first_locals = locals_
        elif locals_ != first_locals:
            return False
    return True


def _var(name: str, shape, layout) -> ir.Var:
    return ir.Var(name, TileType(F16, shape, layout))


def _moves():
    square = [la for la in LAYOUTS if la.shape == (16, 16)]
    for a in square:
        for b in square:
            yield ir.Relayout(_var("r", (16, 16), b), _var("v", (16, 16), a))
            yield ir.Transpose(_var("r", (16, 16), b), _var("v", (16, 16), a), (1, 0))
    wide = spatial(4, 8).local(4, 4)  # [16, 32]
    for layout in square:
        yield ir.Slice(_var("r", (16, 16), layout), _var("v", (16, 32), wide), (0, 16), (16, 32))
        yield ir.Slice(_var("r", (16, 16), layout), _var("v", (16, 32), wide), (0, 0), (16, 16))


@pytest.mark.parametrize("move", list(_moves()), ids=lambda m: type(m).__name__)
def test_a_move_stays_in_registers_by_the_pairwise_rule(move):
    _, source, result = register_moves.move_tiles(move)
    expected = _pairwise(source.layout, register_moves.wanted(move, source, result))
    assert register_moves.stays_in_registers(move, source, result) is expected
    assert register_moves.stays_in_registers(move, source, result) is expected  # remembered


def test_elements_held_at_different_locals_in_different_threads_stay_not():
    """Each thread holds what it wants, but odd threads at other locals than even ones:
    one move cannot read them (the same local in every thread), so not in registers."""
    layout = spatial(4, 8).local(2, 2)
    table = layout.table()  # [threads, locals, rank]
    swapped = table.copy()
    swapped[1::2] = table[1::2, ::-1]
    uniform = table[:, ::-1].copy()
    for wanted in (swapped, uniform, table):
        expected = _pairwise(layout, wanted)
        assert register_moves._in_registers(layout, wanted) is expected
    assert not _pairwise(layout, swapped) and _pairwise(layout, uniform)


def test_the_verdicts_of_moves_alike_but_for_their_indices_differ():
    """Two slices of one tile into tiles of one type: only `starts` differs, and with it
    whether each thread holds what it reads (its columns, or its neighbour's)."""
    wide = local(1, 2).spatial(4, 8).local(4, 2)  # [16, 32]: two runs of 2 columns each
    half = spatial(4, 8).local(4, 2)
    verdicts = []
    for starts, stops in (((0, 0), (16, 16)), ((0, 2), (16, 18))):
        move = ir.Slice(_var("r", (16, 16), half), _var("v", (16, 32), wide), starts, stops)
        _, source, result = register_moves.move_tiles(move)
        expected = _pairwise(source.layout, register_moves.wanted(move, source, result))
        assert register_moves.stays_in_registers(move, source, result) is expected
        verdicts.append(expected)
    assert verdicts == [True, False]


def test_remembered_address_words_are_those_computed_afresh():
    """Every access of flash attention's two estimates (before the pipelining pass and
    at plan_registers, where vectorize has sized the accesses) for two targets: the
    remembered count is the count of its instruction computed now."""
    plan_registers._ADDRESS_WORDS.clear()
    for arch in ("sm_80", "sm_90a"):
        stages = flash_attention_kernel.stages(
            target=arch, T=F16, CAUSAL=True, **default_tiles(128)
        )
        for fn in (stages["shared_reads"], stages["plan_shared"]):
            threads = fn.warps * plan_registers.WARP_SIZE
            for instr in walk(fn):
                compute = plan_registers._ADDRESSES.get(type(instr))
                for straight in (False, True):
                    got = plan_registers.addresses(instr, fn.warps, straight)
                    assert got == (compute(instr, threads, straight) if compute else 0)
    assert plan_registers._ADDRESS_WORDS  # they were remembered
    # the same access vectorized otherwise (the matmul's store: one pointer per row it
    # touches, and a wider access touches fewer): each width its own count
    fn = load_example("matmul").matmul.stages(target="cpu")["plan_shared"]
    threads = fn.warps * plan_registers.WARP_SIZE
    sensitive = False
    for instr in walk(fn):
        if isinstance(instr, ir.CopyAsync | ir.Load | ir.Store):
            counts = set()
            for elems in (1, 2, 4, 8):
                variant = instr.with_attrs(elems=elems)
                got = plan_registers.addresses(variant, fn.warps)
                assert got == plan_registers._ADDRESSES[type(instr)](variant, threads, False)
                counts.add(got)
            sensitive |= len(counts) > 1
    assert sensitive


# --------------------------------------------------------------------------- readers and walks


def _statements():
    i32, u1 = dtypes.i32, dtypes.u1
    a, p = t.Name("a", i32), t.Name("p", u1)
    return [
        t.Let(t.Name("b", i32), t.Binary("add", a, t.Imm(1, i32))),
        t.SetLocal("r", 0, a),
        t.GlobalLoad(t.Reg("r", 0), 4, "x", t.Cvt(a, dtypes.i64)),
        t.GlobalLoad(t.Reg("r", 0), 4, "x", t.Cvt(a, dtypes.i64), p),
        t.For(t.Name("i", i32), t.Imm(0, i32), a, t.Imm(1, i32), ()),
        t.If(p, (), ()),
        t.Move(t.Reg("r", 0), t.Reg("s", 0), 4),
    ]


@pytest.mark.parametrize("stmt", _statements(), ids=lambda s: type(s).__name__)
def test_stmt_exprs_are_the_fields_holding_expressions_but_the_defined_name(stmt):
    defined = t.defined_name(stmt)
    expected = [
        value
        for f in fields(stmt)
        if isinstance(value := getattr(stmt, f.name), t.Expr) and value is not defined
    ]
    assert list(t.stmt_exprs(stmt)) == expected


def _preorder(node) -> list:
    if isinstance(node, ir.Function):
        node = node.body
    if isinstance(node, ir.Block):
        return [i for instr in node.instrs for i in _preorder(instr)]
    return [node] + [i for body in node.bodies() for i in _preorder(body)]


def test_walk_visits_each_instruction_then_its_bodies_in_order():
    fn = flash_attention_kernel.stages(target="sm_80", T=F16, CAUSAL=True, **default_tiles(64))[
        "plan_registers"
    ]
    nested = [instr for instr in _preorder(fn) if instr.BODIES]
    assert any(any(i.BODIES for i in _preorder(b)) for n in nested for b in n.bodies())
    for node in [fn, fn.body, *nested, *(b for n in nested for b in n.bodies())]:
        got, expected = list(walk(node)), _preorder(node)
        assert len(got) == len(expected) and all(x is y for x, y in zip(got, expected, strict=True))


class _Rename(Rewriter):
    """Renames every value the body defines (the kernel's parameters and sizes stay)."""

    def new_var(self, var: ir.Var) -> ir.Var:
        return var if var.name in self.kept else _renamed(var)


def _renamed(value):
    return replace(value, name=value.name + "_r") if isinstance(value, ir.Var) else value


def test_the_rewriter_copies_each_instruction_with_its_operands_and_definitions_renamed():
    fn = flash_attention_kernel.stages(target="cpu", T=F16, CAUSAL=True, **default_tiles(64))[
        "plan_registers"
    ]
    rename = _Rename()
    rename.kept = {v.name for v in (*fn.params, *fn.sizes)}
    out = rename.rewrite_function(fn)
    assert out.params == fn.params and out.sizes == fn.sizes
    before, after = _preorder(fn), _preorder(out)
    assert len(before) == len(after)
    for old, new in zip(before, after, strict=True):
        assert new is not old and type(new) is type(old)
        for name in (*old.OPERANDS, *old.RESULTS, *old.PARAMS):
            was, now = getattr(old, name), getattr(new, name)
            pairs = zip(was, now, strict=True) if isinstance(was, tuple) else [(was, now)]
            for a, b in pairs:
                kept = isinstance(a, ir.Var) and a.name in rename.kept
                assert b == (a if kept else _renamed(a)), (old, name)
        assert new.attrs == old.attrs and new.loc == old.loc
