"""Lowering of scans: `scan` (an operator of `tilelang.ir.ops`) and `associative_scan`
(a combine body), by one algorithm on tuples of values.

A scan is `scan_tiles(lo, sources, results, combine, axis, reverse)`: `combine(a, b)`
gives the thread-IR values of a ⊕ b for tuples a, b of thread-IR values (one per
scanned tile). For `scan`, ⊕ is the operator; for `associative_scan` it is the combine
body, lowered each time it is applied with its `lhs`/`rhs` bound to a and b. ⊕ is only
ever applied as (earlier terms) ⊕ (later terms) in scan order (the flipped order when
`reverse`), so it need not commute.

When the axis is, in each thread's layout, a run of registers below one thread digit
(`_axis_digits`) and every value is 32 bits wide, the scan is a tree:

1. each thread scans its run in registers;
2. the runs' totals are scanned across the digit's lanes of one warp with shfl.up
   (Hillis–Steele; shfl.down when reversed);
3. when the digit spans warps, the last lane of each warp writes the warp's total to the
   shared scratch area; after a barrier each thread combines the totals of the warps
   before its own (fewer than 32, read in order).

Each element is then (prefix of the earlier warps ⊕ prefix of the earlier lanes) ⊕ its
inclusive run value. Any other layout goes through shared memory: the tiles are written
to the scratch area and each thread folds, for each of its elements, the elements up to
it in scan order (`scan_shared`). Stats: ``scan_shuffle`` (with ``scan_warps`` when
step 3 runs), ``scan_shared``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.ops import COMBINE
from tilelang.lowering import relayout
from tilelang.lowering.context import LOWERINGS, Lowering, lowers
from tilelang.lowering.thread_builder import I32, U32, imm
from tilelang.lowering.values import (
    WARP,
    TileRegs,
    align,
    as_storage,
    element_bytes,
    elementwise,
    from_storage,
    value_dtype,
    value_dtype_storage,
)

Values = tuple[t.Expr, ...]
#: a ⊕ b on tuples of thread-IR values (one per scanned tile).
Combine = Callable[[Values, Values], Values]
#: One thread's run along the axis: its locals in scan order, the inclusive value at
#: each, and the run's total.
Run = tuple[list[int], list[Values], Values]


class AxisDigits(NamedTuple):
    """Where the axis's thread digit lives: `lanes` lanes `lane_stride` threads apart in
    each warp, then `warps` warps `warp_stride` threads apart (1 and 1: registers only)."""

    lane_stride: int
    lanes: int
    warp_stride: int
    warps: int


@lowers(ir.Scan)
def lower_scan(lo: Lowering, instr: ir.Scan) -> None:
    def combine(a: Values, b: Values) -> Values:
        return (elementwise(COMBINE[instr.op], [a[0], b[0]]),)

    src, dst = lo.tile(instr.value), lo.define_tile(instr.result)
    scan_tiles(lo, [src], [dst], combine, instr.axis, instr.reverse)


@lowers(ir.AssociativeScan)
def lower_associative_scan(lo: Lowering, instr: ir.AssociativeScan) -> None:
    sources = [lo.tile(v) for v in instr.values]
    results = [lo.define_tile(r) for r in instr.results]
    scan_tiles(lo, sources, results, body_combine(lo, instr), instr.axis, instr.reverse)


def body_combine(lo: Lowering, instr: ir.AssociativeScan) -> Combine:
    """⊕ of an `associative_scan`: its body's scalar instructions, lowered again at each
    application with `lhs` and `rhs` bound to the operands."""
    *computes, end = instr.body.instrs

    def combine(a: Values, b: Values) -> Values:
        for var, value in zip((*instr.lhs, *instr.rhs), (*a, *b), strict=True):
            lo.bind_scalar(var, value)
        for inner in computes:
            LOWERINGS.get(type(inner))(lo, inner)
        return tuple(lo.scalar(v) for v in end.values)

    return combine


def scan_tiles(
    lo: Lowering,
    sources: Sequence[TileRegs],
    results: Sequence[TileRegs],
    combine: Combine,
    axis: int,
    reverse: bool,
) -> None:
    """`results` = the inclusive scan of `sources` along `axis` (see the module docstring)."""
    if not scan_in_threads(lo, sources, results, combine, axis, reverse):
        scan_shared(lo, sources, results, combine, axis, reverse)


def _apply(lo: Lowering, combine: Combine, a: Values, b: Values) -> Values:
    return tuple(lo.b.let(v, "s") for v in combine(a, b))


def _select(lo: Lowering, cond: t.Expr, a: Values, b: Values) -> Values:
    return tuple(lo.b.let(t.Select(cond, x, y), "s") for x, y in zip(a, b, strict=True))


def scan_in_threads(
    lo: Lowering,
    sources: Sequence[TileRegs],
    results: Sequence[TileRegs],
    combine: Combine,
    axis: int,
    reverse: bool,
) -> bool:
    """The tree of the module docstring (steps 1-3); False when the layouts or the
    dtypes do not allow it."""
    layout = sources[0].layout
    vdtypes = [value_dtype(s.dtype) for s in sources]
    if any(v not in (dtypes.f32, dtypes.i32, U32) for v in vdtypes):
        return False
    if any(tile.layout != layout for tile in (*sources, *results)):
        return False
    digits = _axis_digits(layout, axis)
    groups = _scan_groups(layout, axis)
    if digits is None or groups is None:
        return False
    lane_stride, lanes, warp_stride, warps = digits
    b = lo.b
    lane = _digit(lo, lane_stride, lanes, "lane")
    warp = _digit(lo, warp_stride, warps, "warp")
    runs: list[Run] = []
    for group in groups:  # 1. each thread's run, in registers
        order = group[::-1] if reverse else group
        running: list[Values] = []
        value: Values | None = None
        for li in order:
            element = tuple(b.let(lo.get(s, li), "s") for s in sources)
            value = element if value is None else _apply(lo, combine, value, element)
            running.append(value)
        runs.append((order, running, value))
    totals, befores = [], []
    for _, _, total in runs:  # 2. the runs' totals across the lanes
        before = None
        if lanes > 1:
            direction = "down" if reverse else "up"
            for step in (1 << j for j in range(lanes.bit_length() - 1)):
                other = _shuffle(lo, total, direction, step * lane_stride, vdtypes)
                has = (
                    t.Binary("lt", lane, imm(lanes - step))
                    if reverse
                    else t.Binary("ge", lane, imm(step))
                )
                total = _select(lo, has, _apply(lo, combine, other, total), total)
            before = _shuffle(lo, total, direction, lane_stride, vdtypes)
        totals.append(total)
        befores.append(before)
    has_lane = has_warp = None
    if lanes > 1:
        has_lane = b.let(t.Binary("ne", lane, imm(lanes - 1 if reverse else 0)), "has")
    if warps > 1:
        has_warp = b.let(t.Binary("ne", warp, imm(warps - 1 if reverse else 0)), "has")
    earlier: list[Values | None] = [None] * len(runs)
    if warps > 1:  # 3. the warps' totals through shared memory
        earlier = _across_warps(
            lo, layout, axis, reverse, digits, lane, warp, totals, runs, combine
        )
        b.count("scan_warps")
    for (order, running, _), before, prior in zip(runs, befores, earlier, strict=True):
        prefix, has = before, has_lane
        if prior is not None:
            if before is None:
                prefix, has = prior, has_warp
            else:
                both = _select(lo, has_lane, _apply(lo, combine, prior, before), prior)
                prefix = _select(lo, has_warp, both, before)
                has = b.let(t.Binary("or", has_warp, has_lane), "has")
        for li, inclusive in zip(order, running, strict=True):
            out = inclusive
            if prefix is not None:
                out = _select(lo, has, _apply(lo, combine, prefix, inclusive), inclusive)
            for tile, value in zip(results, out, strict=True):
                lo.put(tile, li, value)
    b.count("scan_shuffle")
    return True


def _digit(lo: Lowering, stride: int, size: int, hint: str) -> t.Expr:
    if size == 1:
        return imm(0)
    return lo.b.let(
        lo.b.binary("rem", lo.b.binary("div", t.ThreadIndex(), imm(stride)), imm(size)), hint
    )


def _shuffle(lo: Lowering, values: Values, mode: str, offset: int, vdtypes) -> Values:
    out = []
    for value, vdtype in zip(values, vdtypes, strict=True):
        other = t.Name(lo.b.fresh("shfl"), vdtype)
        lo.b.emit(t.Shfl(other, value, mode, imm(offset)))
        out.append(other)
    return tuple(out)


def _across_warps(
    lo: Lowering,
    layout: Layout,
    axis: int,
    reverse: bool,
    digits: AxisDigits,
    lane: t.Expr,
    warp: t.Expr,
    totals: list[Values],
    runs: list[Run],
    combine: Combine,
) -> list[Values]:
    """Step 3: for each run, the combined totals of the warps before this one in scan
    order (meaningful where this warp is not the first). The last lane of each warp
    writes its inclusive total, one scratch tile per value with the axis cut to the
    warps; every thread reads them all and keeps the earlier ones."""
    b = lo.b
    lanes, warps = digits.lanes, digits.warps
    shape = tuple(warps if d == axis else n for d, n in enumerate(layout.shape))
    area = align(math.prod(shape) * 4, 128)
    base = lo.scratch(area * len(totals[0]))
    hold = [b.local(total.dtype, 1, "tot") for total in totals[0]]
    last = t.Binary("eq", lane, imm(0 if reverse else lanes - 1)) if lanes > 1 else None
    writer = b.all_of([c for c in (last, lo.replica_zero(layout)) if c is not None])
    writer = b.let(writer, "p") if writer is not None else None
    b.emit(t.Barrier())  # an earlier user of the scratch area may still be reading it

    def address(j: int, run: Run, w: t.Expr) -> t.Expr:
        index = list(lo.index(layout, run[0][0]))
        index[axis] = w
        return lo.scratch_address(base + j * area, shape, 4, tuple(index))

    for run, total in zip(runs, totals, strict=True):
        for j, value in enumerate(total):
            b.emit(t.SetLocal(hold[j], 0, value))
            b.emit(t.SharedStore(address(j, run, warp), t.Reg(hold[j], 0), 4, writer))
    b.emit(t.Barrier())
    order = range(warps - 1, -1, -1) if reverse else range(warps)
    earlier = []
    for run, total in zip(runs, totals, strict=True):
        prior: Values | None = None
        for w in order:
            read = []
            for j, value in enumerate(total):
                b.emit(t.SharedLoad(t.Reg(hold[j], 0), 4, address(j, run, imm(w))))
                read.append(b.let(t.Read(hold[j], 0, value.dtype), "tot"))
            if prior is None:
                prior = tuple(read)
            else:
                before = t.Binary("gt" if reverse else "lt", imm(w), warp)
                prior = _select(lo, before, _apply(lo, combine, prior, tuple(read)), prior)
        earlier.append(prior)
    return earlier


def scan_shared(
    lo: Lowering,
    sources: Sequence[TileRegs],
    results: Sequence[TileRegs],
    combine: Combine,
    axis: int,
    reverse: bool,
) -> None:
    """Through shared memory: every source to the scratch area, then for each element of
    each result a loop folding the elements up to it, in scan order."""
    b = lo.b
    shape = sources[0].layout.shape
    elems = [element_bytes(s.dtype) for s in sources]
    areas = [align(math.prod(shape) * e, 128) for e in elems]
    base = lo.scratch(sum(areas))
    bases = [base + sum(areas[:j]) for j in range(len(areas))]
    b.emit(t.Barrier())
    for source, at in zip(sources, bases, strict=True):
        relayout.write_scratch(lo, source, at)
    b.emit(t.Barrier())
    storages = [value_dtype_storage(s.dtype) for s in sources]
    loaded = [b.local(storage, 1, "x") for storage in storages]
    accs = [b.local(value_dtype_storage(r.dtype), 1, "acc") for r in results]
    length = shape[axis]

    def read(index: list[t.Expr]) -> Values:
        values = []
        for j, source in enumerate(sources):
            address = lo.scratch_address(bases[j], shape, elems[j], tuple(index))
            b.emit(t.SharedLoad(t.Reg(loaded[j], 0), elems[j], address))
            values.append(b.let(from_storage(t.Read(loaded[j], 0, storages[j]), source.dtype)))
        return tuple(values)

    def acc_values() -> Values:
        return tuple(
            from_storage(t.Read(acc, 0, value_dtype_storage(r.dtype)), r.dtype)
            for acc, r in zip(accs, results, strict=True)
        )

    layout = results[0].layout
    for li in range(layout.num_locals):
        out_index = lo.index(layout, li)
        index = list(out_index)
        index[axis] = imm(length - 1 if reverse else 0)
        for acc, value in zip(accs, read(index), strict=True):
            b.emit(t.SetLocal(acc, 0, as_storage(value)))
        if length > 1:
            kk = t.Name(b.fresh("k"), I32)
            with b.nested() as body:
                position = b.binary("sub", imm(length - 1), kk) if reverse else kk
                index[axis] = position
                x = read(index)
                acc = tuple(b.let(v, "acc") for v in acc_values())
                inside = t.Binary("ge" if reverse else "le", position, out_index[axis])
                new = _select(lo, inside, _apply(lo, combine, acc, x), acc)
                for local, value in zip(accs, new, strict=True):
                    b.emit(t.SetLocal(local, 0, as_storage(value)))
            b.emit(t.For(kk, imm(1), imm(length), imm(1), tuple(body)))
        for tile, value in zip(results, acc_values(), strict=True):
            lo.put(tile, li, value)
    b.count("scan_shared")


def _axis_digits(layout: Layout, axis: int) -> AxisDigits | None:
    """The one thread digit of `axis`, when the axis is a run of each thread's registers
    below that digit (lanes = warps = 1 when the axis is only in registers): its lanes
    within a warp and, when it spans warps, its warps; None for any other layout.
    Strides are in threads; sizes and strides are powers of two."""
    modes = [m for m in range(layout.num_modes) if layout.mode_dims[m] == axis]
    thread_modes = [m for m in modes if m in layout.thread_modes]
    local_modes = [m for m in modes if m in layout.local_modes]
    if len(thread_modes) > 1 or len(local_modes) > 1:
        return None
    if thread_modes and local_modes and modes.index(thread_modes[0]) > modes.index(local_modes[0]):
        return None
    if not thread_modes:
        return AxisDigits(1, 1, 1, 1)
    mode = thread_modes[0]
    stride = 1
    for entry in reversed(layout.thread_modes):
        if entry == mode:
            break
        stride *= entry.size if isinstance(entry, Rep) else layout.mode_sizes[entry]
    size = layout.mode_sizes[mode]
    if stride & (stride - 1) or size & (size - 1):
        return None
    lanes = max(1, min(size, WARP // stride))
    return AxisDigits(stride, lanes, stride * lanes, size // lanes)


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
