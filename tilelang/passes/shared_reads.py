"""Pass `shared_reads`: a dot operand read from a `tl.shared` tile is read in the dot's
layout, straight from shared memory, as the pipeline's own staged operands are.

Assumes layouts (after `infer_layouts`, which gives a `shared_load` the blocked default
and puts the dot operand's `relayout` right before its dot; and after `hoist_relayouts`).
Guarantees the same results, with every *read chain* of a user's shared tile that ends
in a dot operand folded into one `shared_load` in that operand's layout:

    %q = shared_load %buf : tile<blocked>          %q.r = shared_load %buf : tile<A fragment>
    ...                                      ->    %s = dot %q.r, ...
    %q.r = relayout %q : tile<A fragment>
    %s = dot %q.r, ...

A read chain (`read_chain`, the one `software_pipeline` folds into the read of a stage)
is the read, then a `reshape` that only drops dims of size 1, then a `transpose`, then
a `relayout`, each the sole use of the one before and in the same block. The dropped 1s
and the transpose become `shared_slice` and `shared_transpose` views (`chain_read`), so
Kᵀ is read from K as stored, with no transpose materialized. Without the fold the
lowering reads the tile into registers whole and relayouts it through the scratch area:
a replicated operand is then held whole by every warp that shares it (two 64-register
operands of a 128x128x64 matmul over 2x2 warps). With it, the lowering reads the tile
with ldmatrix, one k-step right before its mmas when the read is streamed
(`analysis.streaming.streamed_reads`), or the warpgroup mma reads B through a
descriptor (sm_90a, `lowering.wgmma`).

The folded read sits where the relayout was (right before the dot, so nothing such as
the pipeline's barrier comes between it and its dot) when nothing in between may write
shared memory; otherwise where the read was. A buffer whose layout is not given yet
gets the one `software_pipeline` gives its buffers (`default_layout`, with panels on
targets with the warpgroup mma), which every view of it states.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

from tilelang import dtypes
from tilelang.analysis.shared_layouts import default_layout
from tilelang.ir import nodes as ir
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.types import SharedType, TileType
from tilelang.ir.visit import Rewriter, defined_vars, walk
from tilelang.target import CPU, Target

__all__ = ["chain_read", "dropped_ones", "read_chain", "run"]

#: Makes a fresh Var from a name hint and a type (the pass's own naming).
Fresh = Callable[[str, SharedType], ir.Var]


def run(fn: ir.Function, target: Target = CPU) -> ir.Function:
    operands = {v for i in walk(fn) if isinstance(i, ir.Dot) for v in (i.a, i.b)}
    buffers = _buffers_to_lay_out(fn, operands)
    if buffers:
        panels = target.has_wgmma
        fn = _WithLayouts(buffers, panels).rewrite_function(fn)
    names = {v.name for v in (*fn.params, *fn.sizes, *defined_vars(fn))}
    return replace(fn, body=_Folder(operands, names).block(fn.body))


# -- read chains (shared with software_pipeline) -------------------------------------------


def read_chain(first: ir.Instr, body: tuple[ir.Instr, ...]) -> tuple[ir.Instr, ...]:
    """`first` (a `load` the pipeline stages, or a `shared_load`), then the instructions a
    shared_load can define in its place: a reshape dropping 1s, then a transpose, then a
    relayout, each the sole use of the one before and an instruction of `body` itself."""
    uses: dict[ir.Var, list[ir.Instr]] = {}
    for inner in (i for instr in body for i in walk(instr)):
        for value in inner.uses():
            if isinstance(value, ir.Var):
                uses.setdefault(value, []).append(inner)
    chain: list[ir.Instr] = [first]
    for kind in (ir.Reshape, ir.Transpose, ir.Relayout):
        users = uses.get(chain[-1].defs()[0], [])
        if len(users) != 1 or not isinstance(users[0], kind) or _index(body, users[0]) < 0:
            continue
        if isinstance(users[0], ir.Reshape) and dropped_ones(users[0]) is None:
            continue
        chain.append(users[0])
    return tuple(chain)


def dropped_ones(reshape: ir.Reshape) -> tuple[int, ...] | None:
    """The dims of size 1 a reshape drops when it only drops such dims (a rank-4 load
    [1, BN, 1, D] of one head read as a matrix), else None."""
    source, result = tuple(reshape.value.type.shape), tuple(reshape.result.type.shape)
    dropped, at = [], 0
    for d, size in enumerate(source):
        if at < len(result) and size == result[at]:
            at += 1
        elif size == 1:
            dropped.append(d)
        else:
            return None
    return tuple(dropped) if dropped and at == len(result) else None


def chain_read(
    chain: tuple[ir.Instr, ...], view: ir.Var, fresh: Fresh, zero: ir.Const, hint: str
) -> list[ir.Instr]:
    """The views and the `shared_load` that define the last value of `chain` from
    `view`, the shared tile its first instruction reads (of that instruction's shape),
    each view a `fresh` Var named from `hint`:
    the dropped 1s moved first by a `shared_transpose` and sliced off at `zero`, then
    the chain's transpose as a `shared_transpose`. Every view states its layout (the
    source's, permuted or sliced): `plan_shared` would give a view without one the
    default of its own shape, which is not the source's past a transpose or where rows
    are panels."""
    source = view.type
    assert isinstance(source, SharedType)
    dtype, shape, layout = source.dtype, tuple(source.shape), source.layout
    out: list[ir.Instr] = []
    loc = chain[0].loc

    def transpose(perm: tuple[int, ...]) -> None:
        nonlocal view, shape, layout
        if perm == tuple(range(len(perm))):
            return
        shape = tuple(shape[p] for p in perm)
        layout = None if layout is None else layout.permute(perm)
        inner = fresh(hint, SharedType(dtype, shape, layout))
        out.append(ir.SharedTranspose(inner, view, perm, loc=loc))
        view = inner

    reshape = next((i for i in chain if isinstance(i, ir.Reshape)), None)
    if reshape is not None:  # the dropped 1s first, then slice them off
        dropped = dropped_ones(reshape)
        assert dropped is not None
        kept = [d for d in range(len(shape)) if d not in dropped]
        transpose((*dropped, *kept))
        for _ in dropped:
            shape = shape[1:]
            if layout is not None:
                layout = SharedLayout(layout.dims[1:], layout.swizzle)
            inner = fresh(hint, SharedType(dtype, shape, layout))
            out.append(ir.SharedSlice(inner, view, zero, loc=loc))
            view = inner
    flip = next((i for i in chain if isinstance(i, ir.Transpose)), None)
    if flip is not None:  # a transposed operand: a view, no transpose moves data
        transpose(tuple(flip.perm))
    out.append(ir.SharedLoad(chain[-1].defs()[0], view, loc=chain[-1].loc))
    return out


# -- the pass ------------------------------------------------------------------------------


def _folds(body: tuple[ir.Instr, ...], operands: set[ir.Value]) -> list[tuple[ir.Instr, ...]]:
    """The read chains of `body`'s own shared_loads that end in the relayout of a dot
    operand (a or b) to a known layout."""
    found = []
    for instr in body:
        if not isinstance(instr, ir.SharedLoad) or not isinstance(instr.result.type, TileType):
            continue
        chain = read_chain(instr, body)
        last = chain[-1]
        if not isinstance(last, ir.Relayout) or last.result not in operands:
            continue
        if last.result.type.layout is None:
            continue
        found.append(chain)
    return found


def _buffers_to_lay_out(fn: ir.Function, operands: set[ir.Value]) -> set[str]:
    """Shared tiles without a layout that a folded chain reads (by name)."""
    allocs = {i.result.name for i in walk(fn) if isinstance(i, ir.SharedAlloc)}
    found = set()
    for instr in walk(fn):
        for body in instr.bodies():
            found.update(_unlaid(body.instrs, operands, allocs))
    found.update(_unlaid(fn.body.instrs, operands, allocs))
    return found


def _unlaid(body: tuple[ir.Instr, ...], operands: set[ir.Value], allocs: set[str]) -> set[str]:
    """The allocated tiles without a layout that `body`'s folded chains read."""
    found = set()
    for chain in _folds(body, operands):
        shared = chain[0].shared
        if shared.type.layout is None and shared.name in allocs:
            found.add(shared.name)
    return found


class _WithLayouts(Rewriter):
    """Gives the named shared tiles the pipeline buffers' layout (module docstring)."""

    def __init__(self, names: set[str], panels: bool) -> None:
        super().__init__()
        self.names = names
        self.panels = panels

    def new_var(self, var: ir.Var) -> ir.Var:
        type_ = var.type
        if var.name in self.names and isinstance(type_, SharedType) and type_.layout is None:
            layout = default_layout(type_.dtype, tuple(type_.shape), self.panels)
            return ir.Var(var.name, SharedType(type_.dtype, type_.shape, layout))
        return var


def fresh_var(names: set[str], stem: str, type_) -> ir.Var:
    """A variable named `stem` and the first index no name in `names` has (then one of
    them): the views and buffers a pass adds next to the user's values."""
    for index in itertools.count(1):
        name = f"{stem}{index}"
        if name not in names:
            names.add(name)
            return ir.Var(name, type_)


class _Folder:
    """Folds the read chains of every block (inner blocks first) into their reads."""

    def __init__(self, operands: set[ir.Value], names: set[str]) -> None:
        self.operands = operands
        self.names = names

    def fresh(self, hint: str, type_: SharedType) -> ir.Var:
        return fresh_var(self.names, f"{hint}.", type_)

    def block(self, block: ir.Block) -> ir.Block:
        body = tuple(
            replace(i, **{n: self.block(getattr(i, n)) for n in i.BODIES}) if i.BODIES else i
            for i in block.instrs
        )
        placed: dict[int, list[ir.Instr]] = {}  # position in body -> reads placed before it
        dropped: set[int] = set()
        for chain in _folds(body, self.operands):
            view = chain[0].shared
            if view.type.layout is None and len(chain) > 2:
                continue  # views of a tile whose layout plan_shared chooses later: none
            first, last = _index(body, chain[0]), _index(body, chain[-1])
            at = last if not any(_writes_shared(i) for i in body[first + 1 : last]) else first
            zero = ir.Const(0, dtypes.i32)
            hint = chain[0].defs()[0].name + ".view"
            placed.setdefault(at, []).extend(chain_read(chain, view, self.fresh, zero, hint))
            dropped.update(id(i) for i in chain)
        out: list[ir.Instr] = []
        for n, instr in enumerate(body):
            out.extend(placed.get(n, ()))
            if id(instr) not in dropped:
                out.append(instr)
        return ir.Block(tuple(out))


def _writes_shared(instr: ir.Instr) -> bool:
    """Whether `instr` (or anything in its bodies) may write shared memory: a read must
    not move past it. Views and reads of shared tiles do not; a wait lands copies."""
    for inner in walk(instr):
        if isinstance(inner, ir.AsyncWait):
            return True
        if isinstance(inner, (ir.SharedLoad, ir.SharedSlice, ir.SharedTranspose)):
            continue
        if any(isinstance(v, ir.Var) and isinstance(v.type, SharedType) for v in inner.uses()):
            return True
    return False


def _index(body: tuple[ir.Instr, ...], instr: ir.Instr) -> int:
    """The position of `instr` (by identity) in `body`, or -1."""
    return next((n for n, i in enumerate(body) if i is instr), -1)
