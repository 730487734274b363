"""Lowering of `concat`: tiles laid end to end along an axis.

When every thread holds each element of its part of the result in some value, at the
same local in every thread, the result is those registers relabelled (per-local moves
that ptxas folds away; `infer_layouts` arranges this for parts a layout keeps in
registers, such as the halves `tl.split` cuts along local digits). Otherwise each value
is written once into a row-major scratch tile of the result's shape, at its offset along
the axis, and the result is read back after one barrier (`ldmatrix` where it fits).
"""

from __future__ import annotations

import math

import numpy as np

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.relayout import read_scratch, try_ldmatrix
from tilelang.lowering.thread_builder import U32, imm
from tilelang.lowering.values import TileRegs, element_bytes, flat_indices, run_length


@lowers(ir.Concat)
def lower_concat(lo: Lowering, instr: ir.Concat) -> None:
    sources = [lo.tile(v) for v in instr.values]
    offsets = _offsets(instr)
    dst = lo.define_tile(instr.result)
    choice = concat_register_map(sources, offsets, instr.axis, dst)
    if choice is not None:
        for li, (k, from_l) in enumerate(choice):
            if dst.packed:  # moving data: the codes, bit for bit
                lo.put_code(dst, li, lo.get_code(sources[k], from_l))
            else:
                lo.put(dst, li, lo.get(sources[k], from_l))
        return
    _through_shared(lo, sources, offsets, instr.axis, dst)


def _offsets(instr: ir.Concat) -> list[int]:
    """Where each value starts along the axis."""
    widths = [v.type.shape[instr.axis] for v in instr.values]
    return [sum(widths[:k]) for k in range(len(widths))]


def concat_register_map(
    sources: list[TileRegs], offsets: list[int], axis: int, dst: TileRegs
) -> list[tuple[int, int]] | None:
    """For each local of `dst`, (value, local) holding its element in every thread — the
    same pair for all threads — or None when some local has no such pair."""
    wanted = dst.layout.table()  # [T, N_dst, rank]
    part = np.searchsorted(np.asarray(offsets), wanted[..., axis], side="right") - 1
    held = [flat_indices(src.layout.table(), src.layout.shape) for src in sources]  # [T, N_k]
    choice = []
    for li in range(dst.layout.num_locals):
        k = int(part[0, li])
        if not (part[:, li] == k).all():
            return None
        index = wanted[:, li, :].copy()
        index[:, axis] -= offsets[k]
        hits = held[k] == flat_indices(index, sources[k].layout.shape)[:, None]
        if not hits.any(axis=1).all():
            return None
        first = hits.argmax(axis=1)
        if not (first == first[0]).all():
            return None
        choice.append((k, int(first[0])))
    return choice


def _through_shared(
    lo: Lowering, sources: list[TileRegs], offsets: list[int], axis: int, dst: TileRegs
) -> None:
    codes = dst.packed  # packed tiles move as u32 codes, bit for bit
    elem = 4 if codes else element_bytes(dst.dtype)
    shape = tuple(dst.layout.shape)
    base = lo.scratch(math.prod(shape) * elem)
    lo.b.emit(t.Barrier())
    for src, offset in zip(sources, offsets, strict=True):
        _write_part(lo, src, base, shape, axis, offset, codes)
    lo.b.emit(t.Barrier())
    address = lambda index: lo.scratch_address(base, shape, 2, index)  # noqa: E731
    if not try_ldmatrix(lo, dst, address):
        read_scratch(lo, dst, base, lambda index: (index, shape), codes)
    lo.b.count("shared_relayout")


def _write_part(
    lo: Lowering,
    src: TileRegs,
    base: int,
    shape: tuple[int, ...],
    axis: int,
    offset: int,
    codes: bool,
) -> None:
    """Every element of `src` into the scratch tile of `shape` at `offset` along `axis`
    (one replica writes), in runs of consecutive last-dim elements where the run stays
    aligned there (its offset and the scratch rows whole runs)."""
    elem = 4 if codes else element_bytes(src.dtype)
    run = 1 if src.packed else run_length(src.layout)
    run &= -run  # accesses are 1, 2, 4, 8 or 16 bytes: a power of two of elements
    shift = offset if axis == len(shape) - 1 else 0
    while run > 1 and (
        run * elem > 16 or src.layout.num_locals % run or shift % run or shape[-1] % run
    ):
        run //= 2
    first = lo.replica_zero(src.layout)
    first = lo.b.let(first, "p") if first is not None else None
    value_local = None
    for li in range(0, src.layout.num_locals, run):
        index = list(lo.index(src.layout, li))
        if offset:
            index[axis] = lo.b.add(index[axis], imm(offset))
        address = lo.b.let(lo.scratch_address(base, shape, elem, tuple(index)), "sa")
        if codes:
            value_local = value_local or lo.b.local(U32, 1, "v")
            lo.b.emit(t.SetLocal(value_local, 0, lo.get_code(src, li)))
            source = t.Reg(value_local, 0)
        else:
            source = t.Reg(src.local, li * elem)
        lo.b.emit(t.SharedStore(address, source, run * elem, first))
