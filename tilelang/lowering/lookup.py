"""Lowering of `lookup`: a small table indexed by a tile of codes, one shared-memory read
per element.

The result has the index's layout (`infer_layouts`' `lookup` rule), so each thread
reads, for every index it holds, the table entry at ``base + index * bytes``: one
`ld.shared` per element, with no relayout of the index or of the result. A table of
at most 128 bytes (NF4's 16 f16 entries are 32) lies in distinct banks, so the reads of
a warp never conflict (lanes reading one word share it); a larger table conflicts
only as its indices collide in banks.

A register table is written to the scratch area first (one replica writes), between
two barriers; lookups of the same table in the same straight-line code reuse it
(`Lowering.staged_scratch`). A `tl.shared` table is read where it is, with no barrier
(its `shared_store` brought its own): the form for a lookup in a loop.

A register table that every thread holds whole, of at most 16 16-bit entries and
indexed by codes of at most 4 bits, is not staged: its entries are selected from the
registers by byte permutes (`register_lookup`).

An index outside the table reads zero: the read is predicated on ``0 <= i < N``, and
the check is left out when the index's dtype cannot leave the table (a u4 code and 16
entries or more).
"""

from __future__ import annotations

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.types import SharedType
from tilelang.lowering import register_lookup
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.relayout import write_scratch
from tilelang.lowering.shared import shared_address
from tilelang.lowering.thread_builder import I32, U32, imm


def index_always_inside(dtype: dtypes.DType, entries: int) -> bool:
    """Whether every value of an index `dtype` is an entry of a table of `entries`."""
    return not dtype.signed and (1 << dtype.bits) <= entries


@lowers(ir.Lookup)
def lower_lookup(lo: Lowering, instr: ir.Lookup) -> None:
    table_type = instr.table.type
    (entries,) = table_type.shape
    dtype = table_type.dtype
    if isinstance(table_type, SharedType):
        shared = lo.shared_tile(instr.table)
        width = dtype.bits // 8

        def address(i: t.Expr) -> t.Expr:
            return shared_address(lo, shared, (i,))

        address_bytes = None
        (modes,) = shared.layout.dims
        if shared.layout.swizzle is None and len(modes) == 1 and modes[0].stride == 1:
            origin = shared_address(lo, shared, (imm(0),))

            def address_bytes(offset: t.Expr) -> t.Expr:
                return lo.b.add(origin, offset)
    else:
        table = lo.tile(instr.table)
        if register_lookup.applies(table, instr.index.type.dtype):
            register_lookup.lower_register_lookup(lo, instr, table)
            return
        codes = table.packed  # an 8-bit float table moves as its codes, one u32 each
        width = 4 if codes else dtype.bits // 8
        key = ("lookup", instr.table.name, table.layout, dtype)
        base, staged = lo.staged_scratch(key, entries * width)
        if not staged:
            lo.b.emit(t.Barrier())  # earlier readers of the scratch area are done
            write_scratch(lo, table, base, codes)
            lo.b.emit(t.Barrier())

        def address(i: t.Expr) -> t.Expr:
            return lo.b.add(imm(base), lo.b.mul(i, imm(width)))

        def address_bytes(offset: t.Expr) -> t.Expr:
            return lo.b.add(imm(base), offset)

    index = lo.tile(instr.index)
    result = lo.define_tile(instr.result)
    checked = not index_always_inside(instr.index.type.dtype, entries)
    # Packed results (8-bit floats) read their code into a word, then place it.
    word = None
    if result.packed:
        word_dtype = {1: dtypes.u8, 2: dtypes.u16, 4: U32}[width]
        word = lo.b.local(word_dtype, 1, "code")
    for li in range(result.layout.num_locals):
        scaled = None if checked or address_bytes is None else _scaled_code(index, li, width)
        ok = None
        if scaled is not None:
            at = address_bytes(lo.b.let(scaled, "lo"))
        else:
            i = lo.b.let(lo.b.cvt(lo.get(index, li), I32), "ix")
            if checked:
                inside = t.Binary("lt", i, imm(entries))
                ok = lo.b.let(t.Binary("and", t.Binary("ge", i, imm(0)), inside), "in")
            at = address(i)
        if word is None:
            if ok is not None:
                zero = imm(0.0 if dtype.is_float else 0, dtype)
                lo.b.emit(t.SetLocal(result.local, li, zero))
            dst = t.Reg(result.local, li * width)
            lo.b.emit(t.SharedLoad(dst, width, at, ok))
        else:
            if ok is not None:
                lo.b.emit(t.SetLocal(word, 0, imm(0, word_dtype)))
            lo.b.emit(t.SharedLoad(t.Reg(word, 0), width, at, ok))
            lo.put_code(result, li, lo.b.cvt(t.Read(word, 0, word_dtype), U32))
    lo.b.count("lookup", result.layout.num_locals)


def _scaled_code(index, li: int, width: int) -> t.Expr | None:
    """The byte offset ``code * width`` of element `li` of a packed unsigned index tile,
    straight from its word: one shift and one mask (``(w >> (s - p)) & (m << p)``, p =
    log2 width), where extracting the code and scaling it would take four."""
    bits = index.dtype.bits
    if not index.packed or index.dtype.signed or index.dtype == dtypes.u1:
        return None
    if index.positions is not None:
        li = index.positions[li]
    first, shift = divmod(li * bits, 32)
    p = width.bit_length() - 1
    if shift + bits > 32 or width != 1 << p:
        return None
    word = t.Read(index.local, first, U32)
    if shift > p:
        word = t.Binary("shr", word, imm(shift - p, U32))
    elif shift < p:
        word = t.Binary("shl", word, imm(p - shift, U32))
    return t.Bitcast(t.Binary("and", word, imm(((1 << bits) - 1) << p, U32)), I32)
