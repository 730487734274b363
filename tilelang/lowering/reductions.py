"""Lowering of reductions (`reduce`; scans are `tilelang.lowering.scans`).

An axis held in each thread's registers and in lanes of one warp folds in registers,
then combines across lanes with an xor-shuffle butterfly. An axis that also spans
warps does the same within each warp, then one partial per warp goes through shared
memory and each thread combines the warps' partials of its outputs in warp order (a
few loads an output, not one per element of the axis); a thread digit of the axis that
crosses the warp boundary counts as its lane part and its warp part. Other layouts go through
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
    dim_strides,
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
    if not reduce_in_warps(lo, src, dst, instr.op, instr.axis) and not reduce_across_warps(
        lo, src, dst, instr.op, instr.axis
    ):
        fold(lo, src, dst, instr.op, instr.axis)


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
            if stride * size > WARP or size & (size - 1) or stride & (stride - 1):
                return False  # beyond one warp, or lanes that xor cannot pair
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


def reduce_across_warps(lo: Lowering, src: TileRegs, dst: TileRegs, op: str, axis: int) -> bool:
    """A reduction whose axis lives in each thread's registers, in lanes and in warps:
    each thread folds its elements of each output, a butterfly of xor shuffles combines
    the lane digits of the axis (every lane of a butterfly then holds its warp's
    partial), and the partials go to a scratch [outputs, W] (W: the warps along the
    axis; the lanes of a butterfly write the same value to the same place). After a
    barrier each thread reads, for each of its outputs, the W partials (one vector load
    where W words make one) and combines them in warp order. False when the layouts do
    not allow it (`fold` then does it)."""
    vdtype = value_dtype(src.dtype)
    if vdtype not in (dtypes.f32, dtypes.i32, U32) or value_dtype(dst.dtype) != vdtype:
        return False
    layout = src.layout
    offsets: list[int] = []
    lanes = 1
    warp_modes: list[tuple[int, int, int]] = []  # (index step in the axis, thread stride, size)
    steps = dim_strides(layout)
    stride = 1
    for mode in reversed(layout.thread_modes):
        size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
        if not isinstance(mode, Rep) and layout.mode_dims[mode] == axis and size > 1:
            # The mode's values below the warp boundary are a lane digit (a butterfly);
            # the rest (all of a mode across warps, or the high part of one that
            # crosses the boundary) is a warp digit, whole warps apart.
            if stride >= WARP:
                inside = 1
                if stride % WARP:
                    return False
            else:
                inside = min(size, WARP // stride)
                if stride & (stride - 1) or inside & (inside - 1) or size % inside:
                    return False
            offsets += [stride << j for j in range(inside.bit_length() - 1)]
            lanes *= inside
            if inside < size:
                warp_modes.append((steps[mode] * inside, stride * inside, size // inside))
        stride *= size
    warps = math.prod(size for _, _, size in warp_modes)
    groups = _local_groups(layout, axis)
    if warps == 1 or groups is None or len(groups[0]) * lanes * warps != layout.shape[axis]:
        return False
    b = lo.b
    combine = COMBINE[op]
    elem = element_bytes(src.dtype)
    storage = value_dtype_storage(src.dtype)
    outputs = tuple(s for d, s in enumerate(layout.shape) if d != axis)
    # this thread's warp along the axis, the warp of the lowest index first
    warp: t.Expr = imm(0)
    for _, thread_stride, size in sorted(warp_modes, reverse=True):
        digit = b.binary("rem", b.binary("div", t.ThreadIndex(), imm(thread_stride)), imm(size))
        warp = b.add(b.mul(warp, imm(size)), digit)
    warp = lo.prologue_let(warp, "warp")
    partials = b.local(storage, len(groups), "part")
    for gi, locals_ in enumerate(groups):
        value = lo.get(src, locals_[0])
        for li in locals_[1:]:
            value = elementwise(combine, [value, lo.get(src, li)])
        value = b.let(value, "red")
        for offset in offsets:
            other = t.Name(b.fresh("shfl"), vdtype)
            b.emit(t.Shfl(other, value, "xor", imm(offset)))
            value = b.let(elementwise(combine, [value, other]), "red")
        b.emit(t.SetLocal(partials, gi, as_storage(value)))
    base = lo.scratch(math.prod(outputs) * warps * elem)
    row_bytes = warps * elem
    b.emit(t.Barrier())
    for gi, locals_ in enumerate(groups):
        index = lo.index(layout, locals_[0])
        key = _flat(b, [i for d, i in enumerate(index) if d != axis], outputs)
        address = b.add(imm(base), b.add(b.mul(key, imm(row_bytes)), b.mul(warp, imm(elem))))
        b.emit(t.SharedStore(b.let(address, "sa"), t.Reg(partials, gi * elem), elem, None))
    b.emit(t.Barrier())
    width = row_bytes if row_bytes in (4, 8, 16) else elem
    loaded = b.local(storage, warps, "x")
    for li in range(dst.layout.num_locals):
        row = b.add(imm(base), b.mul(_flat(b, lo.index(dst.layout, li), outputs), imm(row_bytes)))
        row = b.let(row, "ra")
        for wi in range(0, warps, width // elem):
            b.emit(t.SharedLoad(t.Reg(loaded, wi * elem), width, b.add(row, imm(wi * elem))))
        total = from_storage(t.Read(loaded, 0, storage), src.dtype)
        for wi in range(1, warps):
            x = from_storage(t.Read(loaded, wi, storage), src.dtype)
            total = elementwise(combine, [total, x])
        lo.put(dst, li, b.let(total, "red"))
    b.count("reduce_warps")
    return True


def _flat(b, index, shape: tuple[int, ...]) -> t.Expr:
    """The row-major offset of `index` in a tile of `shape`."""
    flat: t.Expr = imm(0)
    for size, i in zip(shape, index, strict=True):
        flat = b.add(b.mul(flat, imm(size)), i)
    return flat


def _local_groups(layout: Layout, axis: int) -> list[list[int]] | None:
    """The thread's locals grouped by their index without `axis` (the elements one
    output folds), in order of their first local; None unless every thread groups its
    locals the same way."""
    table = layout.table()
    keep = [d for d in range(layout.rank) if d != axis]
    keys = table[:, :, keep]  # [T, N, rank - 1]
    groups: list[list[int]] = []
    seen: dict[tuple[int, ...], int] = {}
    for li in range(layout.num_locals):
        key = tuple(int(k) for k in keys[0, li])
        if key not in seen:
            seen[key] = len(groups)
            groups.append([])
        groups[seen[key]].append(li)
    for locals_ in groups:
        if not (keys[:, locals_, :] == keys[:, locals_[:1], :]).all():
            return None
    return groups


def fold(lo, src: TileRegs, dst: TileRegs, op: str, axis: int) -> None:
    """Through shared memory: each thread folds, for each of its outputs, the elements
    of the axis in index order."""
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
        src_index.insert(axis, kk)
        acc_value = from_storage(t.Read(total, 0, value_dtype_storage(dst.dtype)), dst.dtype)
        with b.nested() as body:
            address = lo.scratch_address(base, shape, elem, tuple(src_index))
            b.emit(t.SharedLoad(t.Reg(value, 0), elem, address))
            x = from_storage(t.Read(value, 0, storage), src.dtype)
            combined = elementwise(COMBINE[op], [acc_value, x])
            b.emit(t.SetLocal(total, 0, as_storage(combined)))
        init = _identity(op, vdtype)
        b.emit(t.SetLocal(total, 0, as_storage(init)))
        b.emit(t.For(kk, imm(0), imm(length), imm(1), tuple(body)))
        lo.put(dst, li, acc_value)
    b.count("reduce_shared")


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
    if op == "sum" and dtype.is_float:  # -0 + x is x for every x, -0 included
        return imm(-0.0, dtype)
    if op == "sum" or op in ("or", "xor"):
        return imm(0, dtype)
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
