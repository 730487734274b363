"""Lowering of reductions and scans (`reduce`, `scan`).

An axis held in each thread's registers and in lanes of one warp folds in registers,
then combines across lanes: an xor-shuffle butterfly for reductions, a shfl.up
(Hillis-Steele) scan of the threads' run totals for scans. Other layouts go through
shared memory, each thread folding the elements of its outputs in index order.
"""

from __future__ import annotations

import math

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.ops import COMBINE
from tilelang.lowering import relayout
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I32, U32, imm
from tilelang.lowering.values import (
    WARP,
    TileRegs,
    as_storage,
    element_bytes,
    elementwise,
    from_storage,
    value_dtype,
    value_dtype_storage,
)


@lowers(ir.Reduce)
def lower_reduce(lo: Lowering, instr: ir.Reduce) -> None:
    src = lo.tile(instr.value)
    dst = lo.define_tile(instr.result)
    if not reduce_in_warps(lo, src, dst, instr.op, instr.axis):
        fold(lo, src, dst, instr.op, instr.axis, scan=False, reverse=False)


def reduce_in_warps(lo: Lowering, src: TileRegs, dst: TileRegs, op: str, axis: int) -> bool:
    """A reduction whose axis lives in each thread's registers and in lanes of one
    warp: fold the thread's elements, then a butterfly of xor shuffles over the lane
    digits of the axis, after which every lane of a group holds the result (the
    replication the reduced layout has). False when the layouts do not allow it."""
    vdtype = value_dtype(src.dtype)
    if vdtype not in (dtypes.f32, dtypes.i32, U32) or value_dtype(dst.dtype) != vdtype:
        return False
    layout = src.layout
    offsets = []
    stride = 1
    for mode in reversed(layout.thread_modes):
        size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
        if not isinstance(mode, Rep) and layout.mode_dims[mode] == axis and size > 1:
            if stride * size > WARP or size & (size - 1):
                return False
            offsets += [stride << j for j in range(size.bit_length() - 1)]
        stride *= size
    groups = _reduction_groups(src.layout, dst.layout, axis)
    if groups is None:
        return False
    combine = COMBINE[op]
    for dst_local, src_locals in enumerate(groups):
        value = lo.get(src, src_locals[0])
        for li in src_locals[1:]:
            value = elementwise(combine, [value, lo.get(src, li)])
        value = lo.b.let(value, "red")
        for offset in offsets:
            other = t.Name(lo.b.fresh("shfl"), vdtype)
            lo.b.emit(t.Shfl(other, value, "xor", imm(offset)))
            value = lo.b.let(elementwise(combine, [value, other]), "red")
        lo.put(dst, dst_local, value)
    lo.b.count("reduce_shuffle")
    return True


@lowers(ir.Scan)
def lower_scan(lo: Lowering, instr: ir.Scan) -> None:
    src = lo.tile(instr.value)
    dst = lo.define_tile(instr.result)
    if not scan_in_warps(lo, src, dst, instr.op, instr.axis, instr.reverse):
        fold(lo, src, dst, instr.op, instr.axis, scan=True, reverse=instr.reverse)


def scan_in_warps(lo, src: TileRegs, dst: TileRegs, op: str, axis: int, reverse: bool) -> bool:
    """A scan whose axis is a run of each thread's registers times lanes of one warp:
    scan the run in the thread, scan the runs' totals across the lanes with shuffles
    (Hillis-Steele), and combine each element with the lanes before it. False when
    the layouts do not allow it."""
    vdtype = value_dtype(src.dtype)
    if vdtype not in (dtypes.f32, dtypes.i32, U32) or src.layout != dst.layout:
        return False
    layout = src.layout
    lane = _scan_lanes(layout, axis)
    groups = _scan_groups(layout, axis)
    if lane is None or groups is None:
        return False
    stride, size = lane
    combine = COMBINE[op]
    digit = lo.b.let(
        lo.b.binary("rem", lo.b.binary("div", t.ThreadIndex(), imm(stride)), imm(size)),
        "lane",
    )
    for group in groups:
        order = group[::-1] if reverse else group
        running: list[t.Expr] = []
        value: t.Expr | None = None
        for li in order:
            element = lo.get(src, li)
            value = lo.b.let(
                element if value is None else elementwise(combine, [value, element]), "s"
            )
            running.append(value)
        total = value
        for step in (1 << j for j in range(size.bit_length() - 1)):
            other = t.Name(lo.b.fresh("shfl"), vdtype)
            lo.b.emit(t.Shfl(other, total, "down" if reverse else "up", imm(step * stride)))
            has = (
                t.Binary("lt", digit, imm(size - step))
                if reverse
                else t.Binary("ge", digit, imm(step))
            )
            total = lo.b.let(t.Select(has, elementwise(combine, [total, other]), total), "s")
        before = t.Name(lo.b.fresh("shfl"), vdtype)
        lo.b.emit(t.Shfl(before, total, "down" if reverse else "up", imm(stride)))
        first = t.Binary("eq", digit, imm(size - 1 if reverse else 0))
        for li, inclusive in zip(order, running, strict=True):
            combined = t.Select(first, inclusive, elementwise(combine, [before, inclusive]))
            lo.put(dst, li, combined)
    lo.b.count("scan_shuffle")
    return True


def fold(lo, src: TileRegs, dst: TileRegs, op: str, axis: int, scan: bool, reverse: bool) -> None:
    b = lo.b
    elem = element_bytes(src.dtype)
    shape = src.layout.shape
    base = lo.scratch(math.prod(shape) * elem)
    b.emit(t.Barrier())
    relayout.write_scratch(lo, src, base)
    b.emit(t.Barrier())
    vdtype = value_dtype(src.dtype)
    storage = value_dtype_storage(src.dtype)
    value = b.local(storage, 1, "x")
    total = b.local(value_dtype_storage(dst.dtype), 1, "acc")
    length = shape[axis]
    for li in range(dst.layout.num_locals):
        out_index = lo.index(dst.layout, li)
        kk = t.Name(b.fresh("k"), I32)
        src_index = list(out_index)
        if not scan:
            src_index.insert(axis, kk)
        else:
            src_index[axis] = kk
        acc_value = from_storage(t.Read(total, 0, value_dtype_storage(dst.dtype)), dst.dtype)
        with b.nested() as body:
            address = lo.scratch_address(base, shape, elem, tuple(src_index))
            b.emit(t.SharedLoad(t.Reg(value, 0), elem, address))
            x = from_storage(t.Read(value, 0, storage), src.dtype)
            combined = elementwise(COMBINE[op], [acc_value, x])
            if scan:
                inside = t.Binary("ge" if reverse else "le", kk, out_index[axis])
                combined = t.Select(inside, combined, acc_value)
            b.emit(t.SetLocal(total, 0, as_storage(combined)))
        init = _identity(op, vdtype)
        b.emit(t.SetLocal(total, 0, as_storage(init)))
        b.emit(t.For(kk, imm(0), imm(length), imm(1), tuple(body)))
        lo.put(dst, li, acc_value)
    b.count("scan_shared" if scan else "reduce_shared")


def _scan_lanes(layout: Layout, axis: int) -> tuple[int, int] | None:
    """(thread stride, size) of the one thread digit of `axis` (size 1 when the axis is
    only in registers), when the axis is a register run times lanes of one warp: its
    thread digit more significant than its register digit, within 32 lanes."""
    modes = [m for m in range(layout.num_modes) if layout.mode_dims[m] == axis]
    thread_modes = [m for m in modes if m in layout.thread_modes]
    local_modes = [m for m in modes if m in layout.local_modes]
    if len(thread_modes) > 1 or len(local_modes) > 1:
        return None
    if thread_modes and local_modes and modes.index(thread_modes[0]) > modes.index(local_modes[0]):
        return None
    if not thread_modes:
        return 1, 1
    mode = thread_modes[0]
    stride = 1
    for entry in reversed(layout.thread_modes):
        if entry == mode:
            break
        stride *= entry.size if isinstance(entry, Rep) else layout.mode_sizes[entry]
    size = layout.mode_sizes[mode]
    if stride * size > WARP or size & (size - 1):
        return None
    return stride, size


def _scan_groups(layout: Layout, axis: int) -> list[list[int]] | None:
    """This thread's locals grouped by their index off the axis, each group in axis
    order — the same for every thread — or None."""
    table = layout.table()
    keep = [d for d in range(layout.rank) if d != axis]
    first = table[0]
    groups: dict[tuple[int, ...], list[int]] = {}
    for li in range(layout.num_locals):
        groups.setdefault(tuple(int(v) for v in first[li, keep]), []).append(li)
    ordered = [sorted(g, key=lambda li: int(first[li, axis])) for g in groups.values()]
    for thread in table:
        for g in ordered:
            along = thread[g, axis]
            if len({tuple(r) for r in thread[g][:, keep]}) != 1 or list(along) != sorted(along):
                return None
    return ordered


def _reduction_groups(src: Layout, dst: Layout, axis: int) -> list[list[int]] | None:
    """For each local of the reduced layout `dst`, the locals of `src` (the same in every
    thread) whose elements it folds; None when threads disagree or lanes are missing."""
    src_table, dst_table = src.table(), dst.table()
    keep = [d for d in range(src.rank) if d != axis]
    rows = src_table[:, :, keep]  # [T, N_src, rank - 1]
    groups = []
    for li in range(dst.num_locals):
        hits = (rows == dst_table[:, li : li + 1, :]).all(axis=-1)  # [T, N_src]
        if not (hits == hits[0]).all() or not hits[0].any():
            return None
        groups.append([int(i) for i in np.flatnonzero(hits[0])])
    return groups


def _identity(op: str, dtype: DType) -> t.Expr:
    if op == "sum" or op in ("or", "xor"):
        return imm(0.0 if dtype.is_float else 0, dtype)
    if op == "prod":
        return imm(1.0 if dtype.is_float else 1, dtype)
    if op == "and":
        return (
            imm(-1 if dtype.signed else (1 << dtype.bits) - 1, dtype)
            if dtype != dtypes.u1
            else imm(1, dtype)
        )
    # Float min/max ignore NaN, so NaN is their identity: a row of NaN stays NaN.
    if op == "max":
        return imm(float("nan"), dtype) if dtype.is_float else imm(dtype.min, dtype)
    if op == "min":
        return imm(float("nan"), dtype) if dtype.is_float else imm(dtype.max, dtype)
    raise ValueError(op)
