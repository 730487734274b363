"""A dot with fewer rows than an mma (m < 16, a decode step's one token): padded by
the compiler, not the user.

`infer_layouts` gives such a dot's B operand the fragment of the 16-row dot
(`dot_layouts(16, n, k)`), and its A operand and accumulator ordinary layouts. Here A
and the accumulator go through the scratch area into 16-row fragments whose rows m..15
are zeros (each thread zeroes its registers, then loads only rows below m), the mmas
run on them, and rows 0..m-1 of the 16-row result come back the same way. The padding
rows are zeros, so they add nothing and are dropped: the result is exactly the dot's.
"""

from __future__ import annotations

import math

from tilelang.ir import thread as t
from tilelang.ir.fragments import dot_layouts
from tilelang.lowering import relayout
from tilelang.lowering.context import Lowering
from tilelang.lowering.thread_builder import imm
from tilelang.lowering.values import WARP, TileRegs, align, element_bytes

#: The rows of every mma atom.
ATOM_ROWS = 16


def padded_plan(lo: Lowering, a: TileRegs, b_: TileRegs, c: TileRegs):
    """The 16-row dot layouts when this dot is a small one `padded_mma` can run."""
    m, k = a.layout.shape
    n = c.layout.shape[1]
    if m >= ATOM_ROWS or ATOM_ROWS % m or a.packed or b_.dtype != a.dtype:
        return None
    plan = dot_layouts(ATOM_ROWS, n, k, a.dtype, c.dtype, lo.threads // WARP)
    return plan if plan is not None and plan.b == b_.layout else None


def padded_mma(lo: Lowering, plan, a: TileRegs, b_: TileRegs, c: TileRegs, emit_mma) -> bool:
    """c += a @ b through 16-row fragments (module docstring); False when the mmas do
    not fit (nothing is emitted then)."""
    m, k = a.layout.shape
    n = c.layout.shape[1]
    a_elem, c_elem = element_bytes(a.dtype), element_bytes(c.dtype)
    a_base = lo.scratch(0)
    c_base = align(a_base + m * k * a_elem, 16)
    lo.scratch(c_base - a_base + ATOM_ROWS * n * c_elem)
    wide_a = _fragment(lo, plan.a, a.dtype, "pa")
    wide_c = _fragment(lo, plan.c, c.dtype, "pc")
    lo.b.emit(t.Barrier())
    relayout.write_scratch(lo, a, a_base)
    relayout.write_scratch(lo, c, c_base)
    lo.b.emit(t.Barrier())
    _read_rows(lo, wide_a, a_base, (m, k), a_elem, m)
    _read_rows(lo, wide_c, c_base, (ATOM_ROWS, n), c_elem, m)
    if not emit_mma(wide_a, b_, wide_c):
        return False
    lo.b.emit(t.Barrier())
    relayout.write_scratch(lo, wide_c, c_base)
    lo.b.emit(t.Barrier())
    relayout.read_scratch(lo, c, c_base, lambda index: (index, (ATOM_ROWS, n)))
    lo.b.count("dot_padded_rows", ATOM_ROWS - m)
    return True


def _fragment(lo: Lowering, layout, dtype, hint: str) -> TileRegs:
    return TileRegs(lo.b.local(dtype, layout.num_locals, hint), dtype, layout)


def _read_rows(lo: Lowering, tile: TileRegs, base: int, shape, elem: int, rows: int) -> None:
    """Each element of `tile` from the row-major scratch tile of `shape`, zero in rows
    `rows` and below (rows past the written ones)."""
    for li in range(tile.layout.num_locals):
        index = lo.index(tile.layout, li)
        lo.b.emit(t.SetLocal(tile.local, li, imm(0.0 if tile.dtype.is_float else 0, tile.dtype)))
        inside = lo.b.let(t.Binary("lt", index[0], imm(rows)), "p")
        address = lo.scratch_address(base, (math.prod(shape[:-1]), shape[-1]), elem, index)
        lo.b.emit(t.SharedLoad(t.Reg(tile.local, li * elem), elem, address, inside))
