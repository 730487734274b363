"""Lowering of `dot`: the warpgroup mma where it fits (`tilelang.lowering.wgmma`, sm_90a),
else one `Mma` per (m, n, k) block of the quotient layouts when the
operands divide by an mma atom's fragments (accumulating in place when the accumulator
dies at the dot), else a generic dot that reads both operands from shared memory.

An operand read from shared memory a k-step at a time (`analysis.streaming`) has its
ldmatrix reads emitted right before the k-step's mmas (the mmas go k-step by k-step).
An operand a layout replicates over warps is reported (`report_replication`)."""

from __future__ import annotations

from tilelang import dtypes
from tilelang.analysis.replication import replicated_words
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import MmaAtom, mma_atoms_for
from tilelang.ir.fragments import quotient_local
from tilelang.lowering import relayout, small_dot, wgmma
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I32, imm
from tilelang.lowering.values import (
    WARP,
    TileRegs,
    align,
    element_bytes,
    from_storage,
    value_dtype,
    value_dtype_storage,
)


@lowers(ir.Dot)
def lower_dot(lo: Lowering, instr: ir.Dot) -> None:
    a, b_, acc = lo.tile(instr.a), lo.tile(instr.b), lo.tile(instr.acc)
    in_place = lo.dead_after(instr.acc, instr)
    result = TileRegs(acc.local, acc.dtype, acc.layout) if in_place else lo.new_tile(instr.result)
    lo.env[instr.result] = result
    if not in_place:
        lo.copy_tile(result, acc)
    if wgmma.emit(lo, instr, a, result):
        return
    # Operands read a k-step at a time (analysis.streaming): (k dim, their ldmatrix reads).
    reads = [
        (dim, lo.deferred.pop(v))
        for dim, v in ((1, instr.a), (0, instr.b))
        if isinstance(v, ir.Var) and v in lo.deferred
    ]
    for name, v, tile in (("A", instr.a, a), ("B", instr.b, b_)):
        if v not in lo.streamed:
            report_replication(lo, instr, name, tile)
    atom = _mma_atom(a, b_, result)
    if atom is not None and emit_mma(lo, atom, a, b_, result, reads):
        return
    padded = small_dot.padded_plan(lo, a, b_, result) if not reads else None
    if padded is not None and small_dot.padded_mma(
        lo, padded, a, b_, result, lambda pa, pb, pc: emit_mma(lo, padded.atom, pa, pb, pc)
    ):
        return
    for _, plan in reads:  # the generic dot reads the operands whole
        for _, emit in plan:
            emit()
    generic_dot(lo, a, b_, result)


def report_replication(lo: Lowering, instr: ir.Dot, which: str, tile: TileRegs) -> None:
    """Counts an operand held whole by several warps (`analysis.replication`; an operand
    streamed from shared memory is not held whole and never comes here)."""
    words = replicated_words(tile.layout, tile.dtype.bits)
    if words is not None:
        lo.b.count("dot_operand_replicated")
        lo.b.count("dot_operand_replicated_words", words)


def emit_mma(lo: Lowering, atom: MmaAtom, a: TileRegs, b_: TileRegs, c: TileRegs, reads=()) -> bool:
    """One mma per (m, n, k) block, k-step by k-step; the ldmatrix `reads` of streamed
    operands ((k dim, plan) each) go right before the first k-step they cover."""
    qa, qb, qc = a.layout / atom.a, b_.layout / atom.b, c.layout / atom.c
    ta, tb, tc = qa.table(), qb.table(), qc.table()
    warps = lo.threads // WARP
    if ta.shape[0] != warps or tb.shape[0] != warps or tc.shape[0] != warps:
        return False
    k_blocks = a.layout.shape[1] // atom.k
    plan = []
    order = (
        [(q, k) for k in range(k_blocks) for q in range(qc.num_locals)]
        if reads
        else [(q, k) for q in range(qc.num_locals) for k in range(k_blocks)]
    )
    for qc_local, k in order:
        la = quotient_local(ta, tc[:, qc_local, 0], k, rows=True)
        lb = quotient_local(tb, tc[:, qc_local, 1], k, rows=False)
        if la is None or lb is None:
            return False
        plan.append((qc_local, k, la, lb))
    pending = [
        (first[dim] // atom.k, emit) for dim, reads_of in reads for (first, _), emit in reads_of
    ]
    elem = dtypes.dtype(atom.operand_dtypes[0]).bits // 8
    acc_elem = dtypes.dtype(atom.acc_dtype).bits // 8
    for qc_local, k, la, lb in plan:
        for _, emit in [p for p in pending if p[0] <= k]:
            emit()
        pending = [p for p in pending if p[0] > k]
        creg = t.Reg(c.local, qc_local * atom.c.num_locals * acc_elem)
        lo.b.emit(
            tm.Mma(
                atom.name,
                a.dtype,
                creg,
                t.Reg(a.local, la * atom.a.num_locals * elem),
                t.Reg(b_.local, lb * atom.b.num_locals * elem),
                creg,
            )
        )
        lo.b.count("mma")
    return True


def generic_dot(lo: Lowering, a: TileRegs, b_: TileRegs, c: TileRegs) -> None:
    """acc[m, n] += Σ_k a[m, k]·b[k, n], each thread for its elements, from shared memory."""
    b = lo.b
    acc_dtype = value_dtype(c.dtype)
    a_elem, b_elem = element_bytes(a.dtype), element_bytes(b_.dtype)
    m, k = a.layout.shape
    n = b_.layout.shape[1]
    a_base = lo.scratch(0)
    b_base = align(a_base + m * k * a_elem, 16)
    lo.scratch(b_base - a_base + k * n * b_elem)
    b.emit(t.Barrier())
    relayout.write_scratch(lo, a, a_base)
    relayout.write_scratch(lo, b_, b_base)
    b.emit(t.Barrier())
    va = b.local(value_dtype_storage(a.dtype), 1, "va")
    vb = b.local(value_dtype_storage(b_.dtype), 1, "vb")
    total = b.local(acc_dtype, 1, "sum")
    for li in range(c.layout.num_locals):
        row, col = lo.index(c.layout, li)
        b.emit(t.SetLocal(total, 0, lo.get(c, li)))
        kk = t.Name(b.fresh("k"), I32)
        with b.nested() as body:
            b.emit(
                t.SharedLoad(
                    t.Reg(va, 0),
                    a_elem,
                    lo.scratch_address(a_base, (m, k), a_elem, (row, kk)),
                )
            )
            b.emit(
                t.SharedLoad(
                    t.Reg(vb, 0),
                    b_elem,
                    lo.scratch_address(b_base, (k, n), b_elem, (kk, col)),
                )
            )
            x = b.cvt(from_storage(t.Read(va, 0, value_dtype_storage(a.dtype)), a.dtype), acc_dtype)
            y = b.cvt(
                from_storage(t.Read(vb, 0, value_dtype_storage(b_.dtype)), b_.dtype), acc_dtype
            )
            b.emit(
                t.SetLocal(
                    total,
                    0,
                    t.Binary("add", t.Read(total, 0, acc_dtype), t.Binary("mul", x, y)),
                )
            )
        b.emit(t.For(kk, imm(0), imm(k), imm(1), tuple(body)))
        lo.put(c, li, t.Read(total, 0, acc_dtype))
    b.count("dot_generic")


def _mma_atom(a: TileRegs, b: TileRegs, c: TileRegs) -> MmaAtom | None:
    for atom in mma_atoms_for(str(a.dtype)):
        if b.dtype != a.dtype or str(c.dtype) != atom.acc_dtype:
            continue
        if (
            a.layout.divisible_by(atom.a)
            and b.layout.divisible_by(atom.b)
            and c.layout.divisible_by(atom.c)
        ):
            return atom
    return None
