"""Lowering of `lookup` into a table every thread holds whole in registers: byte
permutes (`prmt`), no shared memory.

It applies to a table of at most 16 entries of 16 bits (f16, bf16, i16, u16: at most
32 bytes, 8 registers) whose register layout gives each thread every entry (a load
with ``layout=replicated(threads) * local(N)``), indexed by unsigned codes of at most 4
bits (u1..u4), which cannot leave a table padded with zeros to 16 entries: the
entries past N read zero, as the instruction says.

The recipe, per four result elements (two f16x2 words) whose codes are gathered into
the nibbles of a 16-bit selector q (`_selector`: an aligned half of a code word as it
is, two bytes of code words with one `prmt` — how mma fragments hold them — else code
by code):

* once per lookup, the table's 32 bytes are split into its low bytes ``L0..L3``
  (entry e's at byte e of ``L1:L0`` or ``L3:L2``) and its high bytes ``H0..H3``: 8
  `prmt`s (in a loop, once an iteration: ptxas does not hoist them);
* ``s = q & 0x7777`` selects the byte of each code among its half-table's 8 bytes and
  ``t = ((q >> 1) & 0x4444) | 0x3210`` selects, per code, between the two halves' bytes
  (bit 3 of the code): ``lo = prmt(prmt(L0, L1, s), prmt(L2, L3, s), t)`` and the same
  for ``hi`` — the four codes' low and high bytes, 6 `prmt`s;
* ``prmt(lo, hi, ..)`` interleaves them into the result's f16x2 words (2 `prmt`s).

About 12 instructions per 4 codes (NF4's m = 1 loop on sm_90a: 590 warp instructions
an iteration, 296 of them PRMT), against a shared-memory read per code. A `prmt`
selector with bit 3 set replicates the byte's sign bit instead of moving it, which is
why ``s`` clears bit 3. Codes narrower than 4 bits are first gathered into nibbles
(bit 3 clear: no second half-table). Moving bytes is exact: -0, NaN payloads and
integer entries come out bit for bit.
"""

from __future__ import annotations

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.lowering.context import Lowering
from tilelang.lowering.thread_builder import U32, imm
from tilelang.lowering.values import TileRegs, is_packed, local_part

#: The most entries a register table holds (4-bit codes), and their width in bits.
MAX_ENTRIES = 16
ENTRY_BITS = 16

#: `prmt` selectors: the low (even) and the high (odd) bytes of two f16x2 words.
LOW_BYTES, HIGH_BYTES = 0x6420, 0x7531


def applies(table: TileRegs, index_dtype: dtypes.DType) -> bool:
    """Whether a lookup of `table` by `index_dtype` codes takes the register recipe: a
    table of at most 16 16-bit entries that each thread holds whole, unsigned codes of
    at most 4 bits."""
    (entries,) = table.layout.shape
    return (
        not table.packed
        and table.dtype.bits == ENTRY_BITS
        and entries <= MAX_ENTRIES
        and table.layout.num_locals == entries
        and not index_dtype.signed
        and is_packed(index_dtype)
        and index_dtype.bits <= 4
    )


def lower_register_lookup(lo: Lowering, instr: ir.Lookup, table: TileRegs) -> None:
    """`instr`'s result, each element its code's entry selected from `table`'s registers,
    four elements (two result words) at a time."""
    index = lo.tile(instr.index)
    result = lo.define_tile(instr.result)
    low, high = _split_table(lo, table)
    count = result.layout.num_locals
    scratch = lo.b.local(U32, 1, "lut")
    for first in range(0, count, 4):
        locals_ = range(first, min(first + 4, count))
        positions = [li if index.positions is None else index.positions[li] for li in locals_]
        q, slots = _selector(lo, index, positions)
        lo_, hi_ = _select(lo, q, index.dtype.bits, low, high)
        for k in range(0, len(slots), 2):
            pair = slots[k : k + 2]
            word = t.Prmt(lo_, hi_, imm(_interleave(pair[0], pair[-1]), U32))
            lo.b.emit(t.SetLocal(scratch, 0, word))
            at = t.Reg(result.local, 2 * (first + k))
            lo.b.emit(t.Move(at, t.Reg(scratch, 0), 2 * len(pair)))
    lo.b.count("lookup", count)
    lo.b.count("lookup_register", count)


def _split_table(lo: Lowering, table: TileRegs) -> tuple[list[t.Expr], list[t.Expr]]:
    """The table's low bytes and high bytes, 4 entries a word (``L0..L3``, ``H0..H3``);
    entries past the table are zero."""
    (entries,) = table.layout.shape
    at = {local_part(table.layout, li)[0]: li for li in range(entries)}
    words: list[t.Expr] = []
    for w in range(MAX_ENTRIES // 2):
        held = [e for e in (2 * w, 2 * w + 1) if e < entries]
        if not held:
            words.append(imm(0, U32))
            continue
        word = lo.b.local(U32, 1, "tab")
        if len(held) < 2:
            lo.b.emit(t.SetLocal(word, 0, imm(0, U32)))
        if len(held) == 2 and at[2 * w] % 2 == 0 and at[2 * w + 1] == at[2 * w] + 1:
            lo.b.emit(t.Move(t.Reg(word, 0), t.Reg(table.local, 2 * at[2 * w]), 4))
        else:
            for e in held:  # 2 bytes per entry, wherever the layout keeps it
                src = t.Reg(table.local, 2 * at[e])
                lo.b.emit(t.Move(t.Reg(word, 2 * (e - 2 * w)), src, 2))
        words.append(lo.b.let(t.Read(word, 0, U32), "tab"))
    low, high = [], []
    for pair in range(MAX_ENTRIES // 4):
        a, b = words[2 * pair], words[2 * pair + 1]
        for out, selector in ((low, LOW_BYTES), (high, HIGH_BYTES)):
            out.append(_prmt(lo, a, b, imm(selector, U32), "tab"))
    return low, high


def _prmt(lo: Lowering, a: t.Expr, b: t.Expr, selector: t.Expr, hint: str) -> t.Expr:
    """`prmt(a, b, selector)`, or 0 where both words are zero (a padded table)."""
    if _is_zero(a) and _is_zero(b):
        return imm(0, U32)
    return lo.b.let(t.Prmt(a, b, selector), hint)


def _is_zero(e: t.Expr) -> bool:
    return isinstance(e, t.Imm) and e.value == 0


def _selector(lo: Lowering, index: TileRegs, positions: list[int]) -> tuple[t.Expr, list[int]]:
    """A 16-bit selector holding the codes at `positions` of the index's registers in
    its nibbles, and the nibble of each: one aligned half of a code word (a shift at
    most), two bytes of code words (one `prmt`: what the mma B fragment's codes give,
    two codes a byte), else the codes gathered one by one."""
    bits, local = index.dtype.bits, index.local
    if bits == 4:
        halves = {p // 4 for p in positions}
        if len(halves) == 1:
            (half,) = halves
            word = lo.b.let(t.Read(local, half // 2, U32), "q")
            if half % 2:
                word = lo.b.let(t.Binary("shr", word, imm(16, U32)), "q")
            return word, [p % 4 for p in positions]
        pairs = sorted({p // 2 for p in positions})
        if len(pairs) == 2:
            words = [t.Read(local, b // 4, U32) for b in pairs]
            selector = imm(pairs[0] % 4 | (4 + pairs[1] % 4) << 4, U32)
            q = lo.b.let(t.Prmt(words[0], words[1], selector), "q")
            return q, [2 * pairs.index(p // 2) + p % 2 for p in positions]
    q: t.Expr = _code(index, positions[0])
    for k, p in enumerate(positions[1:], 1):
        q = t.Binary("or", q, t.Binary("shl", _code(index, p), imm(4 * k, U32)))
    return lo.b.let(q, "q"), list(range(len(positions)))


def _select(lo: Lowering, q: t.Expr, bits: int, low: list, high: list) -> tuple[t.Expr, t.Expr]:
    """The low and the high bytes of the entries of the four codes of selector `q`."""
    if bits < 4:  # codes below 8: the first half-table holds them all
        return _prmt(lo, low[0], low[1], q, "lut"), _prmt(lo, high[0], high[1], q, "lut")
    s = lo.b.let(t.Binary("and", q, imm(0x7777, U32)), "sel")
    down = t.Binary("and", t.Binary("shr", q, imm(1, U32)), imm(0x4444, U32))
    half = lo.b.let(t.Binary("or", down, imm(0x3210, U32)), "sel")
    out = []
    for table in (low, high):
        first = _prmt(lo, table[0], table[1], s, "lut")
        second = _prmt(lo, table[2], table[3], s, "lut")
        out.append(_prmt(lo, first, second, half, "lut"))
    return out[0], out[1]


def _code(index: TileRegs, position: int) -> t.Expr:
    """The code at `position` of the index's registers (possibly across two words)."""
    bits, local = index.dtype.bits, index.local
    first, shift = divmod(position * bits, 32)
    code: t.Expr = t.Read(local, first, U32)
    if shift:
        code = t.Binary("shr", code, imm(shift, U32))
    if shift + bits > 32:
        high = t.Read(local, first + 1, U32)
        code = t.Binary("or", code, t.Binary("shl", high, imm(32 - shift, U32)))
    return t.Binary("and", code, imm((1 << bits) - 1, U32))


def _interleave(k0: int, k1: int) -> int:
    """The `prmt(lo, hi, ..)` selector of the word whose halves are the entries of the
    selector's codes k0 and k1: byte k of ``lo`` then byte k of ``hi`` (byte 4 + k)."""
    return k0 | (4 + k0) << 4 | k1 << 8 | (4 + k1) << 12
