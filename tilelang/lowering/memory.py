"""Lowering of global memory accesses: `load`, `store` and `atomic` (whose old values,
where read, come back in the value's registers' places: `fetched_result`).

Each thread's run of consecutive elements along the last dim moves with the widest
accesses the `vector`/`align` attributes of `vectorize` allow; masks compare
`(unsigned) index < (unsigned) size`, so negative indices are masked too. Elements of a
packed type whose bits start inside a byte are read through a one- or two-byte window
and written with an atomic merge of their bits (other threads may be writing the rest
of the byte). A store or an atomic addition from a replicated layout is done by the
first replica only. Loads, stores and additions, and `indirect`'s gathers, scatters
and scatter-additions, move each run by `masked_run`; a lowering says only which
statement moves bytes and how a packed code moves alone (`Access`). A mask operand (a
u1 tile in the value's layout, or the loaded result's) selects elements on top of the
bounds: a run moves whole where all of it is selected (one test of the mask's packed
bits) and its selected elements one by one where only some are, the two branches of
an `If`, so a selected run costs the unmasked access plus the test; an element not
selected is never accessed (a load's keeps the fill). A mask that repeats one bit along
a run (a row mask broadcast along the rows: `run_selection`) is one predicate of the
whole access.

Byte offsets (`place`) are sums of separate terms, per dim: the box offset (block-
uniform), this thread's part of the tile index and the local's constant part, each
sign-extended and scaled by the dim's stride in bytes. Where the mask holds, the index
``offset + i`` is in [0, size), so it did not wrap in i32, and the element lies inside
its tensor, so no term overflows: the sum is the element's row-major byte offset
exactly. Masked elements are never accessed, so their offsets do not matter. Split,
the loop-invariant terms can be computed once before a loop
(`tilelang.passes.strength_reduce`). A packed type's term is a whole number of bytes
only where the divisibility facts say so (the box offset's `divisors` from `analyze`,
the strides' from the sizes' `assume`, the thread part's from the layout); otherwise
the offset is that of the byte holding the element's first bit, from the flat index.
Along a dim where the box's offset and the tensor's size are both multiples of the
box's extent (a power of two), the box lies entirely inside the tensor or entirely
outside it, and the mask tests the offset alone (`offset < size`: the same for every
element of the box, block-uniform) instead of each element's index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.analysis.divisors import CAP, pow2_factor, shape_divisor, stride_divisors
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.types import TensorType
from tilelang.lowering import coalescing
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I32, I64, U32, imm
from tilelang.lowering.values import (
    TensorInfo,
    TileRegs,
    byte_offset,
    dim_strides,
    local_part,
    piece_limit,
    pieces,
)


def access_runs(instr: ir.Instr, tile: TileRegs) -> int:
    """Elements per access: the run `vectorize` proved (`elems`) when it is whole
    bytes, else one (elements of packed types then move bit by bit)."""
    elems = instr.attr("elems")
    if not isinstance(elems, int) or elems <= 1 or tile.layout.num_locals % elems:
        return 1
    return elems if elems * tile.dtype.bits % 8 == 0 else 1


def element_place(
    lo: Lowering,
    info: TensorInfo,
    offsets: Sequence[t.Expr],
    index: Sequence[t.Expr],
    whole: Sequence[bool] = (),
):
    """(in-bounds predicate, flat element offset i64) of a tile element. Along a dim
    where `whole` holds, the box is entirely inside the tensor or entirely outside it,
    and the predicate tests the box's offset alone (the same for every element)."""
    b = lo.b
    conds, flat = [], imm(0, I64)
    for d, (off, i, size, stride) in enumerate(
        zip(offsets, index, info.sizes, info.strides, strict=True)
    ):
        g = b.add(off, i)
        tested = off if d < len(whole) and whole[d] else g
        known = isinstance(tested, t.Imm) and isinstance(size, t.Imm)
        if not (known and 0 <= tested.value < size.value):
            conds.append(t.Binary("lt", t.Bitcast(tested, U32), t.Bitcast(size, U32)))
        flat = b.add(flat, b.mul(b.cvt(g, I64), stride))
    return b.all_of(conds), flat


def place(lo: Lowering, instr: ir.Instr, info: TensorInfo, offsets, layout: Layout, li: int):
    """(in-bounds predicate, byte offset i64) of element `li` of a tile of `layout` at
    `offsets` of the tensor `instr` accesses: the offset as separate terms (see the
    module docstring), or from the flat index when a packed type's terms are not whole
    bytes."""
    b = lo.b
    tensor = instr.tensor.type
    assert isinstance(tensor, TensorType)
    known = _offset_divisors(instr, len(offsets))
    whole = [
        _pow2(box) and off_divisor % box == 0 and shape_divisor(lo.fn, size) % box == 0
        for box, off_divisor, size in zip(layout.shape, known, tensor.shape, strict=True)
    ]
    pred, flat = element_place(lo, info, offsets, lo.index(layout, li), whole)
    bits = info.dtype.bits
    strides = stride_divisors(lo.fn, tuple(tensor.shape))
    parts, consts = lo.thread_part(layout), local_part(layout, li)
    terms: list[t.Expr] = []
    constant = 0
    for d, (off, part, c, stride) in enumerate(
        zip(offsets, parts, consts, info.strides, strict=True)
    ):
        # each part of the dim's index, with the power of two known to divide it
        split = ((off, known[d]), (part, _thread_divisor(layout, d)), (imm(c), pow2_factor(c)))
        for value, divisor in split:
            if isinstance(value, t.Imm) and value.value == 0:
                continue
            term = _scaled(b, value, divisor, stride, strides[d], bits)
            if term is None:
                return pred, byte_offset(b, flat, bits)
            if isinstance(term, t.Imm):
                constant += term.value
            else:
                terms.append(term)
    total: t.Expr = imm(0, I64)
    for term in terms:
        total = b.add(total, term)
    return pred, b.add(total, imm(constant, I64))


def _scaled(b, value: t.Expr, divisor: int, stride: t.Expr, stride_divisor: int, bits: int):
    """value · stride · bits / 8 (i64) exactly, or None when the divisors do not make it
    a whole number of bytes."""
    need = 8 // math.gcd(bits, 8)  # value · stride must be a multiple of this
    from_value = min(divisor, need)
    from_stride = need // from_value
    if stride_divisor % from_stride:
        return None
    per = bits * need // 8  # the bytes of `need` elements
    value = b.cvt(_exact_shift(value, from_value), I64)
    if isinstance(stride, t.Imm):
        return b.mul(value, imm(stride.value // from_stride * per, I64))
    return b.mul(value, b.mul(_exact_shift(stride, from_stride), imm(per, I64)))


def _exact_shift(value: t.Expr, by: int) -> t.Expr:
    """value / by, for a power of two `by` known to divide it (an arithmetic shift)."""
    if by == 1:
        return value
    if isinstance(value, t.Imm):
        return imm(value.value // by, value.dtype)
    return t.Binary("shr", value, imm(by.bit_length() - 1, value.dtype))


def _pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _offset_divisors(instr: ir.Instr, rank: int) -> tuple[int, ...]:
    """The `divisors` attribute `analyze` gives an access (1 per offset without it)."""
    found = instr.attr("divisors")
    if not isinstance(found, str) or not found:
        return (1,) * rank
    values = tuple(int(v) for v in found.split(","))
    return values if len(values) == rank else (1,) * rank


def _thread_divisor(layout: Layout, dim: int) -> int:
    """The power of two dividing every thread's part of the tile index along `dim`."""
    strides = dim_strides(layout)
    found = CAP
    for mode in layout.thread_modes:
        moves = not isinstance(mode, Rep) and layout.mode_sizes[mode] > 1
        if moves and layout.mode_dims[mode] == dim:
            found = min(found, pow2_factor(strides[mode]))
    return found


def order_global(lo: Lowering, tensor: ir.Var, store: bool) -> None:
    """A barrier where the block IR's order of a tensor's accesses could be lost
    between threads: before a load of a tensor the block may have stored to, and
    before a store to a tensor the block may have read or stored (the block IR is
    sequential; another thread may touch the same elements)."""
    earlier = lo.touched if store else lo.stored
    in_loop = lo.loop_touched if store else lo.loop_stores
    if tensor in earlier or any(tensor in accessed for accessed in in_loop):
        lo.b.emit(t.Barrier())
        lo.b.count("global_order_barrier")


def access(lo: Lowering, tensor: ir.Var, store: bool) -> TensorInfo:
    """The tensor an access reads (or, `store`, writes), after the barrier its order in
    the block IR needs; the access is recorded for later ones."""
    info = lo.env[tensor]
    assert isinstance(info, TensorInfo)
    order_global(lo, tensor, store)
    if store:
        lo.stored.add(tensor)
    lo.touched.add(tensor)
    return info


def whole_bytes(li: int, run: int, bits: int) -> bool:
    """Whether the run of `run` elements from local `li` starts and ends on byte
    boundaries (else it is one packed code whose bits start inside a byte)."""
    return run * bits % 8 == 0 and li * bits % 8 == 0


def box_runs(lo: Lowering, instr: ir.Instr, info: TensorInfo, layout: Layout, bits: int, run):
    """(first local, run length, in-bounds predicate, offset i64) of each run of `run`
    elements of a tile of `layout` at the box `instr` accesses: the offset of a run of
    whole bytes in bytes (`place`), of a packed code in bits."""
    offsets = [lo.scalar(o) for o in instr.offsets]
    for li in range(0, layout.num_locals, run):
        if whole_bytes(li, run, bits):
            yield li, run, *place(lo, instr, info, offsets, layout, li)
            continue
        pred, flat = element_place(lo, info, offsets, lo.index(layout, li))
        yield li, run, pred, lo.b.mul(flat, imm(bits, I64))


@dataclass(frozen=True)
class Access:
    """What a lowering emits to move its tile's elements, for `masked_run` to place:
    `move(registers, width, byte offset, predicate)`, the statement moving `width`
    bytes; `code(li, bit offset, predicate)`, which moves packed code `li` alone (None:
    the type is whole bytes); a load's `fill`, what an element it does not read holds;
    `partial`, the stat counting runs a mask splits."""

    instr: ir.Instr
    tile: TileRegs
    mask: TileRegs | None
    move: Callable[[t.Reg, int, t.Expr, t.Expr | None], t.Stmt]
    code: Callable[[int, t.Expr, t.Expr | None], None] | None
    partial: str
    fill: t.Expr | None = None


def load_access(lo: Lowering, instr: ir.Instr, info: TensorInfo, tile: TileRegs, fill) -> Access:
    def move(to, width, at, pred):
        return t.GlobalLoad(to, width, info.param, at, pred)

    def code(li, bit, pred):
        load_code(lo, info, tile, li, bit, pred)

    mask = mask_of(lo, instr, tile)
    return Access(instr, tile, mask, move, code, "global_load_partial_run", fill)


def store_access(lo: Lowering, instr: ir.Instr, info: TensorInfo, tile: TileRegs) -> Access:
    def move(src, width, at, pred):
        return t.GlobalStore(info.param, at, src, width, pred)

    def code(li, bit, pred):
        merge_code(lo, info, tile, li, bit, pred)

    return Access(instr, tile, mask_of(lo, instr, tile), move, code, "global_store_partial_run")


def atomic_access(lo: Lowering, instr: ir.Instr, info: TensorInfo, tile: TileRegs) -> Access:
    """The atomic update (`instr.op`: add, max, min, xchg, cas) of an `Atomic`/
    `ScatterAtomic`. A cas's expected values, and the old values where the result is
    read, sit at the same register bytes as the value's elements (one layout, one
    dtype); an unread result is not fetched (a GPU reduction, no value back)."""
    op = instr.op
    compare = None if instr.expected is None else lo.tile(instr.expected)
    result = lo.env.get(instr.result) if instr.result is not None else None
    for other, what in ((compare, "expected values"), (result, "result")):
        if other is not None and other.layout != tile.layout:
            raise lo.fail(instr, f"the {what}' layout {other.layout} is not the value's")

    def move(src, width, at, pred):
        dst, expected = (
            None if regs is None else t.Reg(regs.local, src.byte) for regs in (result, compare)
        )
        return t.Atomic(info.param, at, src, width, tile.dtype, pred, op, dst, expected)

    return Access(instr, tile, mask_of(lo, instr, tile), move, None, f"atomic_{op}_partial_run")


def fetched_result(lo: Lowering, instr: ir.Atomic | ir.ScatterAtomic) -> TileRegs | None:
    """The registers of the atomic's result where anything reads it (None otherwise),
    zeroed: elements not updated (masked off, outside the tensor, held by a replica
    that does not update) read 0 until `share_result`."""
    if instr.result is None or not lo.users.get(instr.result):
        return None
    result = lo.define_tile(instr.result, "old")
    zero = lo.convert(imm(0, I32), result.dtype)
    for li in range(result.layout.num_locals):
        lo.put(result, li, zero)
    lo.b.count("atomic_fetch")
    return result


def share_result(lo: Lowering, result: TileRegs | None) -> None:
    """The old values, which only the first replica of a replicated layout fetched, given
    to every replica through shared memory (`relayout.through_shared`, between
    barriers)."""
    if result is not None and lo.replica_zero(result.layout) is not None:
        from tilelang.lowering.relayout import through_shared  # relayout builds on this

        through_shared(lo, result, result)


def masked_run(lo: Lowering, access: Access, span, conds, at: t.Expr) -> int:
    """Moves the `run` elements of the access's tile from local `li` (`span`) where
    `conds` hold (None: no condition), at offset `at` (`box_runs`): a run of whole
    bytes in the widest pieces `align` allows, a packed code through `access.code`.
    Under a mask, a run moves whole where every element of it is selected (one test of
    the mask's bits) and element by element, each under its own selection (packed codes
    through `access.code`), where only some are: the two are the branches of an `If`,
    so a selected run issues the unmasked access alone. An element not selected is
    never accessed (a load's keeps the fill). Returns the number of pieces of a whole
    run (0 for a packed code)."""
    li, run = span
    b, tile, mask, fill = lo.b, access.tile, access.mask, access.fill
    bits = tile.dtype.bits
    selected = run_selection(lo, mask, li, run) if mask is not None else []
    split = len(selected) > 1
    pred = b.all_of([c for c in (*conds, *([] if split else selected)) if c is not None])
    pred = b.let(pred, "p") if pred is not None else None
    if fill is not None and (pred is not None or split):
        for i in range(li, li + run):
            lo.put(tile, i, fill)
    if not whole_bytes(li, run, bits):  # one code whose bits start inside a byte
        assert access.code is not None and run == 1
        access.code(li, at, pred)
        return 0
    byte = b.let(at, "off")
    parts = pieces(0, run * bits // 8, piece_limit(access.instr, run))

    def emit_whole():
        for start, width in parts:
            to = t.Reg(tile.local, li * bits // 8 + start)
            b.emit(access.move(to, width, b.add(byte, imm(start, I64)), pred))

    if not split:
        emit_whole()
        return len(parts)
    every = all_selected(lo, mask, li, run)
    with b.nested() as whole:
        emit_whole()
    with b.nested() as alone:
        for i, one in enumerate(selected):
            cond = b.let(b.all_of([c for c in (pred, one) if c is not None]), "p")
            if bits >= 8:
                size = bits // 8
                to = t.Reg(tile.local, (li + i) * size)
                b.emit(access.move(to, size, b.add(byte, imm(i * size, I64)), cond))
            else:
                assert access.code is not None
                access.code(li + i, b.add(b.mul(byte, imm(8, I64)), imm(i * bits, I64)), cond)
    b.emit(t.If(every, tuple(whole), tuple(alone)))
    b.count(access.partial)
    return len(parts)


def run_selection(lo: Lowering, mask: TileRegs, li: int, run: int) -> list[t.Expr]:
    """The selections of elements `li` .. `li + run - 1`: one where the mask names one
    bit for the whole run (a broadcast of a per-row condition, kept where its source
    holds it: `TileRegs.positions`), so the run moves whole under one predicate; else
    each element's."""
    if mask.positions is not None and len(set(mask.positions[li : li + run])) == 1:
        return [lo.get(mask, li)]
    return [lo.get(mask, li + i) for i in range(run)]


def all_selected(lo: Lowering, mask: TileRegs, li: int, run: int) -> t.Expr:
    """u1: the mask selects each of its elements `li` .. `li + run - 1`. A u1 tile packs
    its elements in local order, one bit each, so this tests their bits, one compare
    per u32 word, instead of each element's."""
    b = lo.b
    if mask.positions is not None:
        return b.let(b.all_of([lo.get(mask, i) for i in range(li, li + run)]), "all")
    tests = []
    for word in range(li // 32, (li + run - 1) // 32 + 1):
        low, high = max(li - 32 * word, 0), min(li + run - 32 * word, 32)
        bits = imm(((1 << (high - low)) - 1) << low, U32)
        tests.append(t.Binary("eq", t.Binary("and", t.Read(mask.local, word, U32), bits), bits))
    return b.let(b.all_of(tests), "all")


@lowers(ir.Load)
def lower_load(lo: Lowering, instr: ir.Load) -> None:
    info = access(lo, instr.tensor, store=False)
    tile = lo.define_tile(instr.result)
    run = access_runs(instr, tile)
    fill = fill_value(lo, instr, tile.dtype)
    moved = load_access(lo, instr, info, tile, fill)
    coalescing.record(lo, "load", instr, tile.layout, tile.dtype.bits, run)
    for li, span, pred, at in box_runs(lo, instr, info, tile.layout, tile.dtype.bits, run):
        if masked_run(lo, moved, (li, span), [pred], at):
            lo.b.count("global_load_bytes_" + str(min(span * tile.dtype.bits // 8, 16)))


def fill_value(lo: Lowering, instr: ir.Load, dtype: DType) -> t.Expr:
    if instr.fill is None:
        return lo.convert(imm(0, I32), dtype)
    return lo.convert(lo.scalar(instr.fill), dtype)


def byte_window(lo: Lowering, info: TensorInfo, bits: int, bit: t.Expr, pred):
    """Reads the one or two bytes that hold the code of `bits` bits from bit `bit` (i64)
    of a packed tensor on (the second only when the code crosses into it): (the 2-byte
    local, the byte offset, the code's bit shift in the window, the second byte's
    predicate, the window as a u32)."""
    b = lo.b
    bit = b.let(bit, "bit")
    byte = b.let(t.Binary("shr", bit, imm(3, I64)), "off")
    shift = b.let(b.cvt(t.Binary("and", bit, imm(7, I64)), U32), "sh")
    pair = b.local(dtypes.u8, 2, "b")
    needs_next = t.Binary("gt", t.Binary("add", shift, imm(bits, U32)), imm(8, U32))
    second = b.let(needs_next if pred is None else t.Binary("and", pred, needs_next), "p")
    b.emit(t.SetLocal(pair, 1, imm(0, dtypes.u8)))
    b.emit(t.GlobalLoad(t.Reg(pair, 0), 1, info.param, byte, pred))
    b.emit(t.GlobalLoad(t.Reg(pair, 1), 1, info.param, b.add(byte, imm(1, I64)), second))
    window = t.Binary(
        "or",
        b.cvt(t.Read(pair, 0, dtypes.u8), U32),
        t.Binary("shl", b.cvt(t.Read(pair, 1, dtypes.u8), U32), imm(8, U32)),
    )
    return pair, byte, shift, second, window


def load_code(lo: Lowering, info, tile: TileRegs, li: int, bit: t.Expr, pred) -> None:
    """Element `li` of `tile`, a packed code, read from the tensor's bits from `bit`
    (i64) on, where `pred` holds (it keeps what it held elsewhere)."""
    bits = tile.dtype.bits
    _, _, shift, _, window = byte_window(lo, info, bits, bit, pred)
    code = t.Binary("and", t.Binary("shr", window, shift), imm((1 << bits) - 1, U32))
    if pred is not None:
        code = t.Select(pred, code, lo.get_code(tile, li))
    lo.put_code(tile, li, code)
    lo.b.count("global_load_sub_byte")


@lowers(ir.Store)
def lower_store(lo: Lowering, instr: ir.Store) -> None:
    info = access(lo, instr.tensor, store=True)
    tile = lo.tile(instr.value)
    run = access_runs(instr, tile)
    first = lo.replica_zero(tile.layout)
    moved = store_access(lo, instr, info, tile)
    coalescing.record(lo, "store", instr, tile.layout, tile.dtype.bits, run)
    for li, span, pred, at in box_runs(lo, instr, info, tile.layout, tile.dtype.bits, run):
        if masked_run(lo, moved, (li, span), [pred, first], at):
            lo.b.count("global_store_bytes_" + str(min(span * tile.dtype.bits // 8, 16)))


def mask_of(lo: Lowering, instr: ir.Instr, tile: TileRegs) -> TileRegs | None:
    """The registers of `instr`'s mask (None without one), in the value's layout (the
    contract of infer_layouts' `masked` rule)."""
    mask = getattr(instr, "mask", None)
    if mask is None:
        return None
    regs = lo.tile(mask)
    if regs.layout != tile.layout:
        raise lo.fail(instr, f"the mask's layout {regs.layout} is not the value's {tile.layout}")
    return regs


def merge_code(lo: Lowering, info, tile: TileRegs, li: int, bit: t.Expr, pred) -> None:
    """Element `li` of `tile`, a packed code, merged atomically into the tensor's bits
    from `bit` (i64) on: its neighbours' bits are neither read nor written back."""
    b = lo.b
    bits = tile.dtype.bits
    bit = b.let(bit, "bit")
    byte = b.let(t.Binary("shr", bit, imm(3, I64)), "off")
    shift = b.let(b.cvt(t.Binary("and", bit, imm(7, I64)), U32), "sh")
    mask = t.Binary("shl", imm((1 << bits) - 1, U32), shift)
    value = t.Binary("shl", lo.get_code(tile, li), shift)
    b.emit(t.AtomicMerge(info.param, byte, value, mask, pred))
    b.count("global_store_sub_byte")


@lowers(ir.Atomic)
def lower_atomic(lo: Lowering, instr: ir.Atomic) -> None:
    """Runs of the value's elements (as `vectorize` proved) added as `masked_run` moves
    them, by the first replica only."""
    info = access(lo, instr.tensor, store=True)
    tile = lo.tile(instr.value)
    run = access_runs(instr, tile)
    first = lo.replica_zero(tile.layout)
    result = fetched_result(lo, instr)
    moved = atomic_access(lo, instr, info, tile)
    coalescing.record(lo, "atomic", instr, tile.layout, tile.dtype.bits, run)
    for li, span, pred, at in box_runs(lo, instr, info, tile.layout, tile.dtype.bits, run):
        lo.b.count(f"atomic_{instr.op}", masked_run(lo, moved, (li, span), [pred, first], at))
    share_result(lo, result)
