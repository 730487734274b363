"""Lowering of global memory accesses: `load`, `store` and `atomic_add`.

Each thread's run of consecutive elements along the last dim moves with the widest
accesses the `vector`/`align` attributes of `vectorize` allow; masks compare
`(unsigned) index < (unsigned) size`, so negative indices are masked too. Elements of a
packed type whose bits start inside a byte are read through a one- or two-byte window
and written with an atomic merge of their bits (other threads may be writing the rest
of the byte). A store or an atomic addition from a replicated layout is done by the
first replica only. A mask operand (a u1 tile in the value's layout, or the loaded
result's) selects elements on top of the bounds: a load reads a run whole where it is
all selected and its selected elements one by one elsewhere, the others keeping the
fill (`load_run`); a store writes likewise (`store_run`); an addition adds the identity
where it is not selected (`add_run`). `indirect` reuses them for gathers and scatters.

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
from collections.abc import Sequence

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


@lowers(ir.Load)
def lower_load(lo: Lowering, instr: ir.Load) -> None:
    info = access(lo, instr.tensor, store=False)
    tile = lo.define_tile(instr.result)
    mask = mask_of(lo, instr, tile)
    offsets = [lo.scalar(o) for o in instr.offsets]
    run = access_runs(instr, tile)
    bits = tile.dtype.bits
    fill = fill_value(lo, instr, tile.dtype)
    coalescing.record(lo, "load", instr, tile.layout, bits, run)
    for li in range(0, tile.layout.num_locals, run):
        if run * bits % 8 == 0 and (li * bits) % 8 == 0:
            pred, byte = place(lo, instr, info, offsets, tile.layout, li)
            load_run(lo, instr, info, tile, (li, run), pred, byte, mask, fill)
            lo.b.count("global_load_bytes_" + str(min(run * bits // 8, 16)))
            continue
        # one code whose bits start inside a byte (runs of packed codes are whole bytes)
        pred, flat = element_place(lo, info, offsets, lo.index(tile.layout, li))
        selected = lo.get(mask, li) if mask is not None else None
        pred = lo.b.all_of([c for c in (pred, selected) if c is not None])
        pred = lo.b.let(pred, "p") if pred is not None else None
        if pred is not None:
            lo.put(tile, li, fill)
        load_sub_byte(lo, info, tile, li, flat, pred)


def load_run(lo: Lowering, instr: ir.Instr, info, tile: TileRegs, span, pred, byte, mask, fill):
    """The `run` elements of `tile` from local `li` (`span`), whole bytes, read from byte
    `byte` where `pred` holds (`fill` elsewhere), in the widest accesses `align` allows.
    Under a mask, the run is read whole where every element of it is selected; where
    only some are, each selected element is read alone (a packed code through its byte
    window, as `load_sub_byte`), so an element not selected is never read and keeps
    `fill`."""
    li, run = span
    b, bits = lo.b, tile.dtype.bits
    selected = [lo.get(mask, li + i) for i in range(run)] if mask is not None else []
    every = b.let(b.all_of(selected), "all") if selected else None
    whole = b.all_of([c for c in (pred, every) if c is not None])
    whole = b.let(whole, "p") if whole is not None else None
    if whole is not None:
        for i in range(li, li + run):
            lo.put(tile, i, fill)
    byte = b.let(byte, "off")
    limit = piece_limit(instr, run)
    for at, width in pieces(0, run * bits // 8, limit):
        to = t.Reg(tile.local, li * bits // 8 + at)
        b.emit(t.GlobalLoad(to, width, info.param, b.add(byte, imm(at, I64)), whole))
    if len(selected) < 2:
        return
    for i, one in enumerate(selected):
        alone = t.Select(every, imm(0, dtypes.u1), one)
        cond = b.let(b.all_of([c for c in (pred, alone) if c is not None]), "p")
        if bits >= 8:
            size = bits // 8
            at = b.add(byte, imm(i * size, I64))
            b.emit(t.GlobalLoad(t.Reg(tile.local, (li + i) * size), size, info.param, at, cond))
        else:
            bit = b.add(b.mul(byte, imm(8, I64)), imm(i * bits, I64))
            load_code(lo, info, tile, li + i, bit, cond)
    b.count("global_load_partial_run")


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


def load_sub_byte(lo: Lowering, info, tile: TileRegs, li: int, flat: t.Expr, pred) -> None:
    """One element of a packed type whose bits start inside a byte; where `pred` fails
    it keeps what it held."""
    load_code(lo, info, tile, li, lo.b.mul(flat, imm(tile.dtype.bits, I64)), pred)


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
    mask = mask_of(lo, instr, tile)
    offsets = [lo.scalar(o) for o in instr.offsets]
    run = access_runs(instr, tile)
    bits = tile.dtype.bits
    first = lo.replica_zero(tile.layout)
    coalescing.record(lo, "store", instr, tile.layout, bits, run)
    for li in range(0, tile.layout.num_locals, run):
        if run * bits % 8 or (li * bits) % 8:
            pred, flat = element_place(lo, info, offsets, lo.index(tile.layout, li))
            selected = lo.get(mask, li) if mask is not None else None
            pred = lo.b.all_of([c for c in (pred, first, selected) if c is not None])
            store_sub_byte(lo, info, tile, li, flat, pred)
            continue
        pred, byte = place(lo, instr, info, offsets, tile.layout, li)
        store_run(lo, instr, info, tile, (li, run), [pred, first], byte, mask)
        lo.b.count("global_store_bytes_" + str(min(run * bits // 8, 16)))


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


def store_run(lo: Lowering, instr: ir.Instr, info, tile: TileRegs, span, conds, byte, mask):
    """The `run` elements of `tile` from local `li` (`span`), whole bytes, to byte `byte`
    where `conds` hold, in the widest accesses `align` allows. Under a mask, the run
    is written whole where every element of it is selected; where only some are, each
    selected element is written alone (a packed code by an atomic merge of its bits,
    as `store_sub_byte`), so an element not selected is never written."""
    li, run = span
    b, bits = lo.b, tile.dtype.bits
    selected = [lo.get(mask, li + i) for i in range(run)] if mask is not None else []
    every = b.let(b.all_of(selected), "all") if selected else None
    pred = b.all_of([c for c in (*conds, every) if c is not None])
    pred = b.let(pred, "p") if pred is not None else None
    byte = b.let(byte, "off")
    limit = piece_limit(instr, run)
    for at, width in pieces(0, run * bits // 8, limit):
        b.emit(
            t.GlobalStore(
                info.param,
                b.add(byte, imm(at, I64)),
                t.Reg(tile.local, li * bits // 8 + at),
                width,
                pred,
            )
        )
    if len(selected) < 2:
        return
    for i, one in enumerate(selected):
        alone = t.Select(every, imm(0, dtypes.u1), one)
        cond = b.let(b.all_of([c for c in (*conds, alone) if c is not None]), "p")
        if bits >= 8:
            size = bits // 8
            at = b.add(byte, imm(i * size, I64))
            b.emit(t.GlobalStore(info.param, at, t.Reg(tile.local, (li + i) * size), size, cond))
        else:
            bit = b.add(b.mul(byte, imm(8, I64)), imm(i * bits, I64))
            merge_code(lo, info, tile, li + i, bit, cond)
    b.count("global_store_partial_run")


def store_sub_byte(lo: Lowering, info, tile: TileRegs, li: int, flat: t.Expr, pred) -> None:
    """One element of a packed type into the byte(s) it shares with its neighbours,
    which other threads, of this block or of others, may be writing at the same time
    (a box edge or a row end inside a byte, a layout whose threads hold parts of
    bytes): an atomic merge of its bits (counted as `global_store_sub_byte`)."""
    merge_code(lo, info, tile, li, lo.b.mul(flat, imm(tile.dtype.bits, I64)), pred)


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


@lowers(ir.AtomicAdd)
def lower_atomic_add(lo: Lowering, instr: ir.AtomicAdd) -> None:
    """Runs of the value's elements (as `vectorize` proved) added by `add_run`, by the
    first replica only."""
    info = access(lo, instr.tensor, store=True)
    tile = lo.tile(instr.value)
    mask = mask_of(lo, instr, tile)
    offsets = [lo.scalar(o) for o in instr.offsets]
    run = access_runs(instr, tile)
    first = lo.replica_zero(tile.layout)
    addend = lo.b.local(tile.dtype, run, "add") if mask is not None and run > 1 else None
    coalescing.record(lo, "atomic", instr, tile.layout, tile.dtype.bits, run)
    for li in range(0, tile.layout.num_locals, run):
        pred, byte = place(lo, instr, info, offsets, tile.layout, li)
        add_run(lo, instr, info, tile, (li, run), [pred, first], byte, mask, addend)


def add_run(lo: Lowering, instr: ir.Instr, info, tile: TileRegs, span, conds, byte, mask, addend):
    """The `run` elements of `tile` from local `li` (`span`) added into the elements at
    byte `byte` where `conds` hold, with one `AtomicAdd` per aligned piece. Under a
    mask, the run adds the value where the mask holds and the identity elsewhere (0;
    -0.0 for floats, which leaves every float, -0.0 included, as it is; in `addend`, a
    local of `run` elements), and is skipped when no element of it is selected."""
    li, run = span
    size = tile.dtype.bits // 8
    src = t.Reg(tile.local, li * size)
    conds = list(conds)
    if mask is not None:
        selected = [lo.get(mask, li + i) for i in range(run)]
        conds.append(_any_of(selected))
        if run > 1:
            _select_addend(lo, addend, tile, li, selected)
            src = t.Reg(addend, 0)
    pred = lo.b.all_of([c for c in conds if c is not None])
    pred = lo.b.let(pred, "p") if pred is not None else None
    byte = lo.b.let(byte, "off")
    limit = piece_limit(instr, run)
    for at, width in pieces(0, run * size, limit):
        at_byte = lo.b.add(byte, imm(at, I64))
        lo.b.emit(
            t.AtomicAdd(
                info.param, at_byte, t.Reg(src.local, src.byte + at), width, tile.dtype, pred
            )
        )
        lo.b.count("atomic_add")


def _any_of(conds: list[t.Expr]) -> t.Expr:
    result = conds[0]
    for cond in conds[1:]:
        result = t.Binary("or", result, cond)
    return result


def _select_addend(lo: Lowering, addend: str, tile: TileRegs, li: int, selected) -> None:
    """`addend` = the run of `tile` at `li` where `selected`, the additive identity elsewhere."""
    identity = imm(-0.0 if tile.dtype.is_float else 0, tile.dtype)
    for i, cond in enumerate(selected):
        lo.b.emit(t.SetLocal(addend, i, t.Select(cond, lo.get(tile, li + i), identity)))
