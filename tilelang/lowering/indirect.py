"""Lowering of accesses whose addresses come from data: scalar loads (`load_scalar`), a
rank-0 tile's element as a scalar (`item`), gathers (`gather`), scatters (`scatter`)
and scatter-additions (`scatter_add`); and the block's count at a counter (`arrive`),
a scalar made from data too.

A block-uniform scalar made from data is a thread-IR `Uniform`: every thread computes
it from its own registers (it loaded the same address, or holds the replicated
element), so it may bound loops and decide branches that hold collectives. A scalar
load is predicated like a tile load: an element outside the tensor is never accessed
and reads the fill value.

A gather (scatter) moves each thread's runs along the last dim as a load (store) does
(the widths of `vectorize`'s `elems`/`align`), with the run's row taken from the index
tile, whose layout (`infer_layouts`' `gather`/`scatter` rules) gives each thread the
index of every element it moves; out-of-range rows are masked by the same unsigned
comparison as a box's edges. Each run moves as a box's does (`masked_run`, masks
included): a scatter stores from the first replica only, and packed codes that share a
byte with others merge atomically, as a store's do; a scatter-addition adds as
`atomic_add` does, one atomic addition per element or piece of a run.
"""

from __future__ import annotations

from tilelang.analysis.gather_copies import gather_copy_layout
from tilelang.analysis.layout_runs import layout_run
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout
from tilelang.ir.types import TileType
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.memory import (
    access,
    access_runs,
    atomic_access,
    byte_window,
    element_place,
    fetched_result,
    fill_value,
    load_access,
    masked_run,
    share_result,
    store_access,
    whole_bytes,
)
from tilelang.lowering.shared import AsyncCopier, shared_address, shared_runs
from tilelang.lowering.thread_builder import I32, I64, U32, imm
from tilelang.lowering.values import (
    TensorInfo,
    byte_offset,
    is_packed,
    local_part,
    storage_of,
    value_dtype,
)


def _bind_uniform(lo: Lowering, var: ir.Var, value: t.Expr) -> None:
    name = t.Name(lo.b.fresh(var.name), value.dtype)
    lo.b.emit(t.Uniform(name, value))
    lo.bind_scalar(var, name)


@lowers(ir.LoadScalar)
def lower_load_scalar(lo: Lowering, instr: ir.LoadScalar) -> None:
    info = access(lo, instr.tensor, store=False)
    dtype = info.dtype
    offsets = [lo.scalar(o) for o in instr.offsets]
    pred, flat = element_place(lo, info, offsets, [imm(0)] * len(offsets))
    pred = lo.b.let(pred, "p") if pred is not None else None
    fill = lo.b.let(fill_value(lo, instr, dtype), "fill")
    if is_packed(dtype):
        bit = lo.b.mul(flat, imm(dtype.bits, I64))
        _, _, shift, _, window = byte_window(lo, info, dtype.bits, bit, pred)
        code = t.Binary("and", t.Binary("shr", window, shift), imm((1 << dtype.bits) - 1, U32))
        value = lo.code_to_value(code, dtype)
        if pred is not None:
            value = t.Select(pred, value, fill)
    else:
        storage, _ = storage_of(dtype, 1)
        local = lo.b.local(storage, 1, "s")
        lo.b.emit(t.SetLocal(local, 0, fill))
        width = dtype.bits // 8
        lo.b.emit(
            t.GlobalLoad(
                t.Reg(local, 0), width, info.param, byte_offset(lo.b, flat, dtype.bits), pred
            )
        )
        value = t.Read(local, 0, storage)
    assert value.dtype == value_dtype(dtype)
    _bind_uniform(lo, instr.result, value)
    lo.b.count("load_scalar")


@lowers(ir.Arrive)
def lower_arrive(lo: Lowering, instr: ir.Arrive) -> None:
    """Thread 0 fetch-adds the counter between two barriers (the first orders every
    thread's earlier accesses before it, the second its result before the others'
    reads) and hands the old count to the block through shared memory; outside the
    tensor it keeps -1."""
    info = access(lo, instr.tensor, store=True)
    offsets = [lo.scalar(o) for o in instr.offsets]
    pred, flat = element_place(lo, info, offsets, [imm(0)] * len(offsets))
    b = lo.b
    count = b.local(U32, 1, "count")
    b.emit(t.SetLocal(count, 0, imm(0xFFFFFFFF, U32)))
    base = imm(lo.scratch(4))
    b.emit(t.Barrier())
    with b.nested() as first:
        offset = byte_offset(b, flat, 32)
        b.emit(t.AtomicFetchAdd(t.Reg(count, 0), info.param, offset, imm(1, U32), pred))
        b.emit(t.SharedStore(base, t.Reg(count, 0), 4))
    b.emit(t.If(t.Binary("eq", t.ThreadIndex(), imm(0)), tuple(first)))
    b.emit(t.Barrier())
    b.emit(t.SharedLoad(t.Reg(count, 0), 4, base))
    _bind_uniform(lo, instr.result, t.Bitcast(t.Read(count, 0, U32), I32))
    lo.b.count("arrive")


@lowers(ir.Item)
def lower_item(lo: Lowering, instr: ir.Item) -> None:
    # A rank-0 layout replicates its one element over every thread of the block.
    _bind_uniform(lo, instr.result, lo.get(lo.tile(instr.value), 0))


def _indexed_runs(
    lo: Lowering,
    instr: ir.Gather | ir.GatherAsync | ir.Scatter | ir.ScatterAtomic,
    layout: Layout,
    bits: int,
    run: int,
):
    """(first local, run length, in-bounds predicate, offset i64) of each run of the
    `bits`-bit elements of a tile of `layout` a gather reads or a scatter (or
    scatter-add) writes, `run` elements at most (fewer where a run would leave its
    gathered row): the offset in bytes where the run is whole bytes, else in bits (one
    packed code), as `box_runs` gives a box's."""
    index = lo.tile(instr.index)
    index_type = instr.index.type
    assert isinstance(index_type, TileType)
    dims = [d for d, i in enumerate(index_type.shape) if i != layout.shape[d]]
    if index.layout != layout.reduce(dims):  # the contract of infer_layouts' rule
        raise lo.fail(
            instr, f"the index layout {index.layout} is not the tile's reduced over {dims}"
        )
    index_local = {local_part(index.layout, j): j for j in range(index.layout.num_locals)}
    info = lo.env[instr.tensor]
    assert isinstance(info, TensorInfo)
    offsets = [lo.scalar(o) for o in instr.offsets]
    if instr.axis == len(offsets) - 1 or index_type.shape[-1] != 1:
        run = 1  # a run must lie in one gathered row
    b = lo.b
    for li in range(0, layout.num_locals, run):
        part = local_part(layout, li)
        j = index_local[tuple(0 if d in dims else c for d, c in enumerate(part))]
        row = b.let(b.cvt(lo.get(index, j), I32), "row")
        where = list(lo.index(layout, li))
        where[instr.axis] = imm(0)
        at = list(offsets)
        at[instr.axis] = b.add(offsets[instr.axis], row)
        pred, flat = element_place(lo, info, at, where)
        if whole_bytes(li, run, bits):
            yield li, run, pred, byte_offset(b, flat, bits)
        else:
            yield li, run, pred, b.mul(flat, imm(bits, I64))


@lowers(ir.Gather)
def lower_gather(lo: Lowering, instr: ir.Gather) -> None:
    """Each run read at the row its index gives as a load's run is (`masked_run`, masks
    included)."""
    info = access(lo, instr.tensor, store=False)
    tile = lo.define_tile(instr.result)
    bits = tile.dtype.bits
    moved = load_access(lo, instr, info, tile, fill_value(lo, instr, tile.dtype))
    for li, run, pred, at in _indexed_runs(lo, instr, tile.layout, bits, access_runs(instr, tile)):
        if masked_run(lo, moved, (li, run), [pred], at):
            lo.b.count("gather_load_bytes_" + str(min(run * bits // 8, 16)))


def _row_run(instr: ir.GatherAsync, layout: Layout) -> int:
    """The most elements a copy's run may hold: `vectorize`'s `elems` (runs of r where
    the tensor's last dim and offset are multiples of r, set by `software_pipeline`;
    1 without it), within the copy layout's run. A run's bounds are tested at its start
    alone (`_indexed_runs`), and the layout's run follows the tile's padded width (16
    bytes of a [R, 32] f16 tile), so a longer run would cross the end of a row of 20
    elements and read the next row where the tensor's edge should read zeros."""
    elems = instr.attr("elems")
    proven = elems if isinstance(elems, int) and elems > 0 else 1
    return min(proven, layout_run(layout))


@lowers(ir.GatherAsync)
def lower_gather_async(lo: Lowering, instr: ir.GatherAsync) -> None:
    """Each thread copies the runs of `gather_copy_layout` (a masked copy: its mask's
    layout) whose indices it holds, cut to `elems` (`_row_run`: no run crosses the end
    of a row), as `AsyncCopier` moves them: cp.async for the pieces of 4 to 16 bytes
    the rows' alignment (`align`, set by `software_pipeline`) allows, with a
    zero-filling source size for masked rows and elements; a load and a shared store
    for smaller pieces. A replicated element is copied once."""
    shared = lo.shared_tile(instr.shared)
    info = access(lo, instr.tensor, store=False)
    bits = shared.dtype.bits
    mask = lo.tile(instr.mask) if instr.mask is not None else None
    layout = mask.layout if mask else gather_copy_layout(shared.shape, shared.dtype, lo.threads)
    most, width = shared_runs(shared, layout, most=_row_run(instr, layout))
    if width == 0 or most * bits % 8:
        raise lo.fail(
            instr,
            f"gather_async of {shared.dtype}: the rows' runs are not whole bytes "
            f"({most} elements a run)",
        )
    align = instr.attr("align")
    limit = min(width, align) if isinstance(align, int) and align > 0 else bits // 8
    stat = "gather_cp_async_bytes_{size}"
    copier = AsyncCopier(lo, instr, info.param, lo.replica_zero(layout), limit, mask, stat)
    for li, run, pred, at in _indexed_runs(lo, instr, layout, bits, most):
        if not whole_bytes(li, run, bits):  # a run cut at its row: only whole bytes copy
            raise lo.fail(instr, f"gather_async of {shared.dtype}: runs of {run} elements")
        address = lo.b.let(shared_address(lo, shared, lo.index(layout, li)), "sa")
        copier.run(li, run, bits, address, at, pred)


@lowers(ir.Scatter)
def lower_scatter(lo: Lowering, instr: ir.Scatter) -> None:
    info = access(lo, instr.tensor, store=True)
    tile = lo.tile(instr.value)
    bits = tile.dtype.bits
    first = lo.replica_zero(tile.layout)  # a replicated element is written once
    moved = store_access(lo, instr, info, tile)
    for li, run, pred, at in _indexed_runs(lo, instr, tile.layout, bits, access_runs(instr, tile)):
        if masked_run(lo, moved, (li, run), [pred, first], at):
            lo.b.count("scatter_store_bytes_" + str(min(run * bits // 8, 16)))


@lowers(ir.ScatterAtomic)
def lower_scatter_atomic(lo: Lowering, instr: ir.ScatterAtomic) -> None:
    """Each run's elements added at the row its index gives, as `atomic_add`'s runs are
    (`masked_run`): one atomic addition per element or aligned piece, so elements sent
    to one place all add, whichever threads hold them."""
    info = access(lo, instr.tensor, store=True)
    tile = lo.tile(instr.value)
    first = lo.replica_zero(tile.layout)  # a replicated element is added once
    result = fetched_result(lo, instr)
    moved = atomic_access(lo, instr, info, tile)
    runs = _indexed_runs(lo, instr, tile.layout, tile.dtype.bits, access_runs(instr, tile))
    for li, run, pred, at in runs:
        lo.b.count(f"atomic_{instr.op}", masked_run(lo, moved, (li, run), [pred, first], at))
        lo.b.count(f"scatter_{instr.op}")
    share_result(lo, result)
