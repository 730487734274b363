"""Lowering of the program's shape: the grid (`blocks`), loops, branches and `print`.

Each loop also counts what `software_pipeline` made of its loads into the thread
function's stats: ``pipeline_async`` and ``pipeline_prefetch`` (copies and loads issued
iterations ahead), ``pipeline_skipped`` (loads it left in place, with a warning).

Tile values carried by a loop or yielded by a branch live in registers assigned at the
end of each body (all read before any is written, so a loop may swap them); runtime
scalars carried or yielded live in one-element registers. Those whose value reaches a
loop bound or a branch condition are read once where the body starts (after the loop
or branch) as a thread-IR `Uniform`: every thread holds the same value, so they may
bound loops and decide branches that hold collectives.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.instructions.control import require_message, zero_step_message
from tilelang.ir.types import ScalarType, TensorType, TileType
from tilelang.ir.visit import walk
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I32, imm
from tilelang.lowering.values import (
    ScalarSlot,
    TileRegs,
    as_storage,
    storage_of,
    value_dtype,
    value_dtype_storage,
)


@lowers(ir.Blocks)
def lower_blocks(lo: Lowering, instr: ir.Blocks) -> None:
    lo.grid = tuple(lo.b.cvt(lo.inline_scalar(s), I32) for s in instr.sizes)
    for axis, var in enumerate(instr.results):
        lo.bind_scalar(var, t.BlockIndex(axis))


@lowers(ir.Yield)
def lower_yield(lo: Lowering, instr: ir.Yield) -> tuple[object, ...]:
    """The values a body passes on; the enclosing loop or branch assigns them."""
    return tuple(lo.value(v) for v in instr.values)


@lowers(ir.Print)
def lower_print(lo: Lowering, instr: ir.Print) -> None:
    raise lo.fail(instr, "print runs in kernel.interpret(...) only (not lowered yet)")


@lowers(ir.Require)
def lower_require(lo: Lowering, instr: ir.Require) -> None:
    """A launch check of the host (`ThreadFunction.checks`); nothing in the kernel."""
    if isinstance(instr.cond, ir.Const):
        if not instr.cond.value:
            raise lo.fail(instr, require_message(instr))
        return
    lo.checks.append((lo.inline_scalar(instr.cond), require_message(instr)))


@lowers(ir.For)
def lower_for(lo: Lowering, instr: ir.For) -> None:
    b = lo.b
    carried_store = []
    for carried, init in zip(instr.carried, instr.inits, strict=True):
        if isinstance(carried.type, TileType):
            tile = lo.define_tile(carried, "c")
            lo.copy_tile(tile, lo.tile(init))
            carried_store.append(tile)
        else:
            slot = scalar_slot(lo, carried)
            lo.b.emit(t.SetLocal(slot.local, 0, as_storage(lo.scalar(init))))
            carried_store.append(slot)
    var = t.Name(instr.var.name, instr.var.type.dtype)
    lo.bind_scalar(instr.var, var)
    count_pipelining(lo, instr)
    lo.current_defs.append(set(instr.carried) | _defs_of(instr.body))
    lo.loop_stores.append({v for i in walk(instr.body) for v in i.writes()})
    lo.loop_touched.append({v for i in walk(instr.body) for v in i.uses() if _is_tensor(v)})
    with b.nested() as body:
        for carried, store in zip(instr.carried, carried_store, strict=True):
            if isinstance(store, ScalarSlot):
                uniform_scalar(lo, carried, store)
        yielded = lo.block(instr.body)
        assign(lo, carried_store, yielded or ())
    lo.current_defs.pop()
    lo.loop_stores.pop()
    lo.loop_touched.pop()
    start, stop, step = (lo.scalar(v) for v in (instr.start, instr.stop, instr.step))
    b.emit(t.For(var, start, stop, step, tuple(body), unroll=instr.unroll))
    if not (isinstance(instr.step, ir.Const) and instr.step.value != 0):
        # The step is known before the launch (the verifier's rule): the host checks it.
        known = lo.inline_scalar(instr.step)
        lo.checks.append((t.Binary("ne", known, imm(0, known.dtype)), zero_step_message(instr)))
    for result, store in zip(instr.results, carried_store, strict=True):
        if isinstance(store, ScalarSlot) and not uniform_scalar(lo, result, store):
            lo.bind_scalar(result, lo.b.let(store.read(), result.name))
        elif not isinstance(store, ScalarSlot):
            lo.env[result] = TileRegs(store.local, store.dtype, store.layout)


def count_pipelining(lo: Lowering, loop: ir.For) -> None:
    """What `software_pipeline` made of the loads of this loop (not of inner loops,
    which count their own): ``pipeline_async`` copies and ``pipeline_prefetch`` loads
    issued iterations ahead, ``pipeline_skipped`` loads it could not pipeline."""
    for instr in _own_instrs(loop.body):
        copy = isinstance(instr, ir.CopyAsync | ir.GatherAsync)
        if (copy or isinstance(instr, ir.Load)) and instr.attr("ahead") is not None:
            lo.b.count("pipeline_async" if copy else "pipeline_prefetch")
        elif isinstance(instr, ir.Load | ir.Gather) and instr.attr("unpipelined") is not None:
            lo.b.count("pipeline_skipped")


def _own_instrs(block: ir.Block) -> Iterator[ir.Instr]:
    """The instructions of `block` and of its branches, not of its inner loops."""
    for instr in block.instrs:
        yield instr
        if not isinstance(instr, ir.For):
            for body in instr.bodies():
                yield from _own_instrs(body)


def scalar_slot(lo: Lowering, var: ir.Var) -> ScalarSlot:
    """A register that holds a runtime scalar a loop carries or an `if` yields; `var`
    reads it (a per-thread register, so it cannot bound a loop with collectives)."""
    dtype = value_dtype(var.type.dtype)
    slot = ScalarSlot(lo.b.local(value_dtype_storage(var.type.dtype), 1, "s"), dtype)
    lo.env[var] = slot.read()
    lo.inline[var] = slot.read()
    return slot


def uniform_scalar(lo: Lowering, var: ir.Var, slot: ScalarSlot) -> bool:
    """Where `var`'s value reaches a loop bound or a branch condition, `var` reads its
    slot once, as a thread-IR `Uniform`: every thread wrote the same value there (block-IR
    scalars are block-uniform), so it may bound a loop or decide a branch that holds
    collectives. Elsewhere it stays a register read, which `strength_reduce` recognizes
    (the stage a pipelined loop carries, multiplied by a constant). Whether it bound it."""
    if not _reaches_control(lo, var, set()):
        return False
    name = t.Name(lo.b.fresh(var.name), slot.dtype)
    lo.b.emit(t.Uniform(name, slot.read()))
    lo.bind_scalar(var, name)
    return True


def _reaches_control(lo: Lowering, var: ir.Var, seen: set[ir.Var]) -> bool:
    """Whether `var` flows (through scalar arithmetic, loop-carried values and yields)
    into a `for`'s bounds or an `if`'s condition."""
    if var in seen:
        return False
    seen.add(var)
    onward: list[ir.Var] = []
    for user in lo.users.get(var, ()):
        if isinstance(user, ir.For):
            if var in (user.start, user.stop, user.step):
                return True
            onward += [c for c, i in zip(user.carried, user.inits, strict=True) if i == var]
        elif isinstance(user, ir.If) and user.cond == var:
            return True
        elif isinstance(user, ir.Yield):
            onward += _yielded_into(lo, user, var)
        else:
            onward += [d for d in user.defs() if isinstance(d.type, ScalarType)]
    return any(_reaches_control(lo, v, seen) for v in onward)


def _yielded_into(lo: Lowering, instr: ir.Yield, var: ir.Var) -> list[ir.Var]:
    """The vars of the enclosing `for` (carried and results) or `if` (results) that take
    `var` where `instr` yields it."""
    parent = next(
        p
        for p in walk(lo.fn)
        if isinstance(p, ir.For | ir.If)
        and any(i is instr for body in p.bodies() for i in body.instrs)
    )
    slots = [i for i, v in enumerate(instr.values) if v == var]
    found = [parent.results[i] for i in slots]
    return found + ([parent.carried[i] for i in slots] if isinstance(parent, ir.For) else [])


def assign(lo: Lowering, targets: list, values: Sequence[object]) -> None:
    """Targets (tile registers or scalar slots) take the yielded values, all read
    before any is written (a loop may swap its carried values)."""
    snapshots = {
        i: lo.b.let(v, "y")
        for i, (v, tgt) in enumerate(zip(values, targets, strict=True))
        if isinstance(tgt, ScalarSlot)
    }
    for i, slot in enumerate(targets):
        if isinstance(slot, ScalarSlot):
            lo.b.emit(t.SetLocal(slot.local, 0, as_storage(snapshots[i])))
    pairs = [(tgt, v) for tgt, v in zip(targets, values, strict=True) if isinstance(tgt, TileRegs)]
    assign_tiles(lo, [tgt for tgt, _ in pairs], [v for _, v in pairs])


def assign_tiles(lo: Lowering, targets: list[TileRegs], values: Sequence[object]) -> None:
    sources = [v for v in values]
    conflict = any(
        isinstance(s, TileRegs) and s.local in {x.local for x in targets} and s.local != tgt.local
        for s, tgt in zip(sources, targets, strict=True)
    )
    if conflict:
        temps = []
        for s in sources:
            temp = TileRegs(
                lo.b.local(*storage_of(s.dtype, s.layout.num_locals), "y"), s.dtype, s.layout
            )
            lo.copy_tile(temp, s)
            temps.append(temp)
        sources = temps
    for target, source in zip(targets, sources, strict=True):
        if source.local != target.local:
            lo.copy_tile(target, source)


@lowers(ir.If)
def lower_if(lo: Lowering, instr: ir.If) -> None:
    b = lo.b
    stores = []
    for result in instr.results:
        if isinstance(result.type, TileType):
            stores.append(lo.define_tile(result, "c"))
        else:
            stores.append(scalar_slot(lo, result))
    bodies = []
    for body_block in (instr.then_body, instr.else_body):
        lo.current_defs.append(
            _defs_of(body_block) | (lo.current_defs[-1] if lo.current_defs else set())
        )
        with b.nested() as body:
            yielded = lo.block(body_block)
            assign(lo, stores, yielded or ())
        lo.current_defs.pop()
        bodies.append(tuple(body))
    cond = lo.scalar(instr.cond)
    b.emit(t.If(cond, bodies[0], bodies[1]))
    for result, store in zip(instr.results, stores, strict=True):
        if isinstance(store, ScalarSlot):
            uniform_scalar(lo, result, store)


def _defs_of(block: ir.Block) -> set[ir.Var]:
    found: set[ir.Var] = set()
    for instr in walk(block):
        found.update(instr.defs())
    return found


def _is_tensor(value: ir.Value) -> bool:
    return isinstance(value, ir.Var) and isinstance(value.type, TensorType)
