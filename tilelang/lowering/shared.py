"""Lowering of user shared tiles and asynchronous copies: `shared_alloc`,
`shared_slice`, `shared_load` (ldmatrix where the layouts allow), `shared_store`
(bracketed by barriers: the block IR is sequential, threads are not), `copy_async`
(cp.async for runs of 4, 8 or 16 bytes), commit, wait and `sync`."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tilelang import dtypes
from tilelang.analysis.layout_policy import blocked_layout
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.types import SharedType
from tilelang.lowering import memory, relayout
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import imm
from tilelang.lowering.values import (
    SharedTile,
    TensorInfo,
    byte_offset,
    contiguous_elements,
    run_length,
)


@lowers(ir.SharedAlloc)
def lower_sharedalloc(lo: Lowering, instr: ir.SharedAlloc) -> None:
    type_ = instr.result.type
    assert isinstance(type_, SharedType)
    offset = instr.attr("offset")
    if type_.layout is None or not isinstance(offset, int):
        raise lo.fail(instr, "a shared tile without a place (run plan_shared first)")
    if type_.dtype.bits % 8:
        raise lo.fail(instr, f"shared tiles of {type_.dtype} (not whole bytes) are not lowered yet")
    lo.env[instr.result] = SharedTile(offset, type_.dtype, type_.layout)


def shared_address(lo: Lowering, tile: SharedTile, index: Sequence[t.Expr]) -> t.Expr:
    """The byte address of a tile index: the layout's strides, then its swizzle."""
    b = lo.b
    offset: t.Expr = imm(0)
    for i, modes in zip(index, tile.layout.dims, strict=True):
        rest = i
        for mode in reversed(modes):
            digit = b.binary("rem", rest, imm(mode.size)) if mode is not modes[0] else rest
            offset = b.add(offset, b.mul(digit, imm(mode.stride)))
            rest = b.binary("div", rest, imm(mode.size))
    swizzle = tile.layout.swizzle
    if swizzle is not None and swizzle.bits:
        mask = (1 << swizzle.bits) - 1
        moved = b.binary("and", b.binary("shr", offset, imm(swizzle.shift)), imm(mask))
        offset = t.Binary("xor", offset, b.binary("shl", moved, imm(swizzle.base)))
    base = imm(tile.offset) if isinstance(tile.offset, int) else tile.offset
    return b.add(base, b.mul(offset, imm(tile.dtype.bits // 8)))


@lowers(ir.SharedSlice)
def lower_sharedslice(lo: Lowering, instr: ir.SharedSlice) -> None:
    whole = lo.shared_tile(instr.shared)
    (lead, *_), rest = whole.layout.dims[0], whole.layout.dims[1:]
    swizzle = whole.layout.swizzle
    period = 1 << (swizzle.shift + swizzle.bits) if swizzle is not None and swizzle.bits else 1
    if len(whole.layout.dims[0]) != 1 or lead.stride % period:
        raise lo.fail(instr, f"cannot slice the shared layout {whole.layout} along its first dim")
    base = imm(whole.offset) if isinstance(whole.offset, int) else whole.offset
    step = imm(lead.stride * whole.dtype.bits // 8)
    offset = lo.b.let(lo.b.add(base, lo.b.mul(lo.scalar(instr.index), step)), "slice")
    lo.env[instr.result] = SharedTile(offset, whole.dtype, SharedLayout(tuple(rest), swizzle))


def shared_run(tile: SharedTile, layout: Layout) -> int:
    """Elements of a register run that stay contiguous in the shared tile."""
    run = math.gcd(run_length(layout), contiguous_elements(tile.layout))
    elem = tile.dtype.bits // 8
    run &= -run  # accesses are 1, 2, 4, 8 or 16 bytes: a power of two of elements
    while run > 1 and (run * elem > 16 or layout.num_locals % run):
        run //= 2
    return run


@lowers(ir.SharedStore)
def lower_sharedstore(lo: Lowering, instr: ir.SharedStore) -> None:
    shared = lo.shared_tile(instr.shared)
    tile = lo.tile(instr.value)
    elem = tile.dtype.bits // 8
    run = shared_run(shared, tile.layout)
    first = lo.replica_zero(tile.layout)
    first = lo.b.let(first, "p") if first is not None else None
    # The block IR is sequential; threads are not: earlier reads of the tile by other
    # threads finish before the store, and the store is visible to every later read.
    lo.b.emit(t.Barrier())
    for li in range(0, tile.layout.num_locals, run):
        address = lo.b.let(shared_address(lo, shared, lo.index(tile.layout, li)), "sa")
        lo.b.emit(t.SharedStore(address, t.Reg(tile.local, li * elem), run * elem, first))
    lo.b.emit(t.Barrier())


@lowers(ir.SharedLoad)
def lower_sharedload(lo: Lowering, instr: ir.SharedLoad) -> None:
    shared = lo.shared_tile(instr.shared)
    tile = lo.define_tile(instr.result)
    if relayout.try_ldmatrix(lo, tile, lambda index: shared_address(lo, shared, index), shared):
        return
    elem = tile.dtype.bits // 8
    run = shared_run(shared, tile.layout)
    for li in range(0, tile.layout.num_locals, run):
        address = lo.b.let(shared_address(lo, shared, lo.index(tile.layout, li)), "sa")
        lo.b.emit(t.SharedLoad(t.Reg(tile.local, li * elem), run * elem, address))


@lowers(ir.CopyAsync)
def lower_copyasync(lo: Lowering, instr: ir.CopyAsync) -> None:
    """Each thread copies the runs a blocked layout gives it, with cp.async where a run
    is 4, 8 or 16 bytes with a constant mask, else with a load and a shared store."""
    shared = lo.shared_tile(instr.shared)
    info = lo.env[instr.tensor]
    assert isinstance(info, TensorInfo)
    layout = blocked_layout(shared.shape, shared.dtype, lo.threads)
    offsets = [lo.scalar(o) for o in instr.offsets]
    elem = shared.dtype.bits // 8
    elems = instr.attr("elems")
    run = math.gcd(shared_run(shared, layout), elems if isinstance(elems, int) and elems > 0 else 1)
    first = lo.replica_zero(layout)
    staging = None
    for li in range(0, layout.num_locals, run):
        index = lo.index(layout, li)
        pred, flat = memory.element_place(lo, info, offsets, index)
        address = lo.b.let(shared_address(lo, shared, index), "sa")
        source = lo.b.let(byte_offset(lo.b, flat, shared.dtype.bits), "off")
        width = run * elem
        if width in (4, 8, 16):
            in_bounds = lo.b.let(pred, "p") if pred is not None else None
            guard = lo.b.all_of([c for c in (first,) if c is not None])
            copy = t.CpAsync(address, info.param, source, width, in_bounds)
            lo.b.emit(t.If(guard, (copy,)) if guard is not None else copy)
            lo.b.count("cp_async")
            continue
        staging = staging or lo.b.local(dtypes.u8, 16, "stage")
        zero = [t.SetLocal(staging, i, imm(0, dtypes.u8)) for i in range(width)]
        for stmt in zero:
            lo.b.emit(stmt)
        lo.b.emit(t.GlobalLoad(t.Reg(staging, 0), width, info.param, source, pred))
        lo.b.emit(t.SharedStore(address, t.Reg(staging, 0), width, first))


@lowers(ir.Sync)
def lower_sync(lo: Lowering, instr: ir.Sync) -> None:
    lo.b.emit(t.Barrier())


@lowers(ir.AsyncCommit)
def lower_asynccommit(lo: Lowering, instr: ir.AsyncCommit) -> None:
    lo.b.emit(t.CpAsyncCommit())


@lowers(ir.AsyncWait)
def lower_asyncwait(lo: Lowering, instr: ir.AsyncWait) -> None:
    lo.b.emit(t.CpAsyncWait(instr.pending))
