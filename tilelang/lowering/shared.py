"""Lowering of user shared tiles and asynchronous copies: `shared_alloc`,
`shared_slice`, `shared_load` (ldmatrix where the layouts allow), `shared_store`
(bracketed by barriers: the block IR is sequential, threads are not), `copy_async`
(cp.async for aligned pieces of 4, 8 or 16 bytes), commit, wait and `sync`. Where a
dot may read B through the warpgroup mma (`wgmma.needs_proxy_fence`), waits and stores
end with a proxy fence, so the tensor cores see what the threads wrote.

A shared tile of a packed dtype (u4, u3, f4e2m1, ...) is a byte array of its codes:
the element at (swizzled) offset o holds bits [o·b, (o+1)·b), little-endian, exactly
as in a packed tensor, so codes move between global memory, shared memory and
registers as raw bytes. Register tiles move to and from shared tiles in *runs*
(`shared_runs`, the rule `tilelang.ir.shared_access` owns): consecutive locals whose elements are consecutive in the shared tile,
a whole number of bytes starting on a byte boundary, split into accesses that are
naturally aligned on both sides. A packed tile whose elements do not start on byte
boundaries in a thread's runs is read code by code through a one- or two-byte window;
storing it is refused (threads would write parts of the same byte).
"""

from __future__ import annotations

from collections.abc import Sequence

from tilelang import dtypes
from tilelang.analysis.layout_policy import blocked_layout
from tilelang.ir import nodes as ir
from tilelang.ir import shared_access
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import SharedLayout, Swizzle
from tilelang.ir.types import SharedType
from tilelang.lowering import coalescing, memory, relayout, wgmma
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I64, U32, imm
from tilelang.lowering.values import SharedTile, TileRegs, pieces


@lowers(ir.SharedAlloc)
def lower_sharedalloc(lo: Lowering, instr: ir.SharedAlloc) -> None:
    type_ = instr.result.type
    assert isinstance(type_, SharedType)
    offset = instr.attr("offset")
    if type_.layout is None or not isinstance(offset, int):
        raise lo.fail(instr, "a shared tile without a place (run plan_shared first)")
    lo.env[instr.result] = SharedTile(offset, type_.dtype, type_.layout)


def element_offset(lo: Lowering, tile: SharedTile, index: Sequence[t.Expr]) -> t.Expr:
    """The element offset of a tile index: the layout's strides, then its swizzle.

    Constant parts of the index stay a separate constant term where the swizzle allows
    (`_outside_swizzle`), so that accesses differing only by constants share one
    register and differ by their immediates: held across a loop, one address per
    access would cost a register each."""
    b = lo.b
    offset: t.Expr = imm(0)
    constant = 0
    for i, modes in zip(index, tile.layout.dims, strict=True):
        if len(modes) == 1:  # a single stride: i·s = x·s + c·s
            x, c = _constant_part(i)
            offset = b.add(offset, b.mul(x, imm(modes[0].stride)))
            constant += c * modes[0].stride
            continue
        rest = i
        for mode in reversed(modes):
            digit = b.binary("rem", rest, imm(mode.size)) if mode is not modes[0] else rest
            offset = b.add(offset, b.mul(digit, imm(mode.stride)))
            rest = b.binary("div", rest, imm(mode.size))
    swizzle = tile.layout.swizzle
    outside = _outside_swizzle(swizzle, constant)
    offset = b.add(offset, imm(constant - outside))
    if swizzle is not None and swizzle.bits:
        mask = (1 << swizzle.bits) - 1
        moved = b.binary("and", b.binary("shr", offset, imm(swizzle.shift)), imm(mask))
        offset = t.Binary("xor", offset, b.binary("shl", moved, imm(swizzle.base)))
    return b.add(offset, imm(outside))


def _outside_swizzle(swizzle: Swizzle | None, constant: int) -> int:
    """The part of a constant offset term that may be added after the swizzle.

    The swizzle reads bits [shift, shift + bits) and changes bits [base, base + bits);
    when both lie below P = 2^(shift + bits), adding a multiple of P changes neither, so
    swizzle(x + c) = swizzle(x) + c for c ≡ 0 (mod P) (two's complement, any x)."""
    if swizzle is None or not swizzle.bits:
        return constant
    period = swizzle.period
    if swizzle.base > swizzle.shift:
        return 0
    return constant - constant % period


def shared_address(lo: Lowering, tile: SharedTile, index: Sequence[t.Expr]) -> t.Expr:
    """The byte address of a tile index (for a packed tile: of the byte its code starts in)."""
    offset = element_offset(lo, tile, index)
    bits = tile.dtype.bits
    if bits % 8 == 0:
        within = lo.b.mul(offset, imm(bits // 8))
    else:
        # A constant part of whole bytes stays a separate term (an access's immediate):
        # ((x + c)·bits) >> 3 = ((x·bits) >> 3) + c·bits/8, as no offset in shared memory
        # comes near overflowing.
        x, c = _constant_part(offset)
        if c * bits % 8:
            x, c = offset, 0
        within = lo.b.add(t.Binary("shr", lo.b.mul(x, imm(bits)), imm(3)), imm(c * bits // 8))
    return lo.b.add(_base(tile), within)


def _constant_part(e: t.Expr) -> tuple[t.Expr, int]:
    """(x, c) with e = x + c, c the constants `e` adds (at any depth of its sum)."""
    if isinstance(e, t.Imm):
        return imm(0, e.dtype), int(e.value)
    if isinstance(e, t.Binary) and e.op == "add":
        (a, ca), (b, cb) = _constant_part(e.a), _constant_part(e.b)
        if isinstance(a, t.Imm) and a.value == 0:
            return b, ca + cb
        if isinstance(b, t.Imm) and b.value == 0:
            return a, ca + cb
        return t.Binary("add", a, b), ca + cb
    return e, 0


def _base(tile: SharedTile) -> t.Expr:
    return imm(tile.offset) if isinstance(tile.offset, int) else tile.offset


@lowers(ir.SharedSlice)
def lower_sharedslice(lo: Lowering, instr: ir.SharedSlice) -> None:
    whole = lo.shared_tile(instr.shared)
    (lead, *_), rest = whole.layout.dims[0], whole.layout.dims[1:]
    swizzle = whole.layout.swizzle
    period = swizzle.period if swizzle is not None else 1
    bits = whole.dtype.bits
    at_zero = isinstance(instr.index, ir.Const) and instr.index.value == 0
    if at_zero:  # the same memory: dropping a dim of size 1 needs no aligned stride
        lo.env[instr.result] = SharedTile(
            whole.offset, whole.dtype, SharedLayout(tuple(rest), swizzle)
        )
        return
    if len(whole.layout.dims[0]) != 1 or lead.stride % period or lead.stride * bits % 8:
        raise lo.fail(instr, f"cannot slice the shared layout {whole.layout} along its first dim")
    step = imm(lead.stride * bits // 8)
    offset = lo.b.let(lo.b.add(_base(whole), lo.b.mul(lo.scalar(instr.index), step)), "slice")
    lo.env[instr.result] = SharedTile(offset, whole.dtype, SharedLayout(tuple(rest), swizzle))


@lowers(ir.SharedTranspose)
def lower_sharedtranspose(lo: Lowering, instr: ir.SharedTranspose) -> None:
    whole = lo.shared_tile(instr.shared)
    view = whole.layout.permute(instr.perm)
    lo.env[instr.result] = SharedTile(whole.offset, whole.dtype, view)


# -- runs between registers and a shared tile ---------------------------------------------


def shared_runs(tile: SharedTile, layout: Layout, most: int | None = None) -> tuple[int, int]:
    """(r, width) for moving a register tile of `layout` to or from `tile`: the runs of
    r locals (at most `most`) and accesses of `width` bytes of
    `tilelang.ir.shared_access.access_runs`, the rule the layout choice and the
    performance report count too; (1, 0) when a packed tile's codes cannot move as
    bytes."""
    return shared_access.access_runs(tile.layout, layout, tile.dtype.bits, most)


@lowers(ir.SharedStore)
def lower_sharedstore(lo: Lowering, instr: ir.SharedStore) -> None:
    shared = lo.shared_tile(instr.shared)
    tile = lo.tile(instr.value)
    bits = tile.dtype.bits
    run, width = shared_runs(shared, tile.layout)
    if width == 0:
        raise lo.fail(
            instr,
            f"a shared_store of {tile.dtype} in the layout {tile.layout}: threads would write "
            "parts of the same bytes (each thread needs whole bytes of codes in a row)",
        )
    first = lo.replica_zero(tile.layout)
    first = lo.b.let(first, "p") if first is not None else None
    # The block IR is sequential; threads are not: earlier reads of the tile by other
    # threads finish before the store, and the store is visible to every later read.
    lo.b.emit(t.Barrier())
    for li in range(0, tile.layout.num_locals, run):
        address = lo.b.let(shared_address(lo, shared, lo.index(tile.layout, li)), "sa")
        for at, size in pieces(0, run * bits // 8, width):
            source = t.Reg(tile.local, li * bits // 8 + at)
            lo.b.emit(t.SharedStore(lo.b.add(address, imm(at)), source, size, first))
    if wgmma.needs_proxy_fence(lo):
        lo.b.emit(tm.AsyncProxyFence())
    lo.b.emit(t.Barrier())


@lowers(ir.SharedLoad)
def lower_sharedload(lo: Lowering, instr: ir.SharedLoad) -> None:
    shared = lo.shared_tile(instr.shared)
    tile = lo.define_tile(instr.result)
    plan = _ldmatrix_reads(lo, shared, tile)
    if plan is not None and instr.result in lo.streamed:
        lo.deferred[instr.result] = plan  # its dot reads it a k-step at a time
        lo.deferred_tiles[instr.result] = shared  # or the tensor cores read it (wgmma)
        return
    if plan is not None:
        for _, emit in plan:
            emit()
        return
    bits = tile.dtype.bits
    run, width = shared_runs(shared, tile.layout)
    if width == 0:
        for li in range(tile.layout.num_locals):
            load_code(lo, shared, tile, li)
        lo.b.count("shared_load_sub_byte", tile.layout.num_locals)
        return
    for li in range(0, tile.layout.num_locals, run):
        address = lo.b.let(shared_address(lo, shared, lo.index(tile.layout, li)), "sa")
        for at, size in pieces(0, run * bits // 8, width):
            target = t.Reg(tile.local, li * bits // 8 + at)
            lo.b.emit(t.SharedLoad(target, size, lo.b.add(address, imm(at))))


def _ldmatrix_reads(lo: Lowering, shared: SharedTile, tile: TileRegs) -> list | None:
    """The ldmatrix reads of `tile` from `shared` (`relayout.ldmatrix_plan`, nothing
    emitted yet), or None when no ldmatrix form fits.

    A matrix read from a transposed view (its rows strided, its columns contiguous in
    memory — Kᵀ of a K stored row-major) is read as the untransposed tile, in the same
    registers named by the transposed layout: no transpose is materialized."""
    address = lambda index: shared_address(lo, shared, index)  # noqa: E731
    plan = relayout.ldmatrix_plan(lo, tile, address, shared)
    if plan is not None or tile.layout.rank != 2 or shared.layout.rank != 2:
        return plan
    flipped = SharedTile(shared.offset, shared.dtype, shared.layout.permute((1, 0)))
    if shared_access.contiguous_elements(flipped.layout) % 8:
        return None
    regs = TileRegs(tile.local, tile.dtype, tile.layout.permute((1, 0)))
    plan = relayout.ldmatrix_plan(lo, regs, lambda index: shared_address(lo, flipped, index))
    if plan is None:
        return None
    lo.b.count("ldmatrix_transposed_view")
    return [(((r0, c0)[::-1], (r1, c1)[::-1]), emit) for ((r0, c0), (r1, c1)), emit in plan]


def load_code(lo: Lowering, shared: SharedTile, tile, li: int) -> None:
    """Element `li` of a packed register tile from the one or two bytes of the shared
    tile that hold its code (the second only when the code crosses into it)."""
    b, bits = lo.b, tile.dtype.bits
    bit = b.let(b.mul(element_offset(lo, shared, lo.index(tile.layout, li)), imm(bits)), "bit")
    byte = b.let(b.add(_base(shared), t.Binary("shr", bit, imm(3))), "sa")
    shift = b.let(b.cvt(t.Binary("and", bit, imm(7)), U32), "sh")
    pair = b.local(dtypes.u8, 2, "b")
    crosses = b.let(t.Binary("gt", t.Binary("add", shift, imm(bits, U32)), imm(8, U32)), "p")
    b.emit(t.SetLocal(pair, 1, imm(0, dtypes.u8)))
    b.emit(t.SharedLoad(t.Reg(pair, 0), 1, byte))
    b.emit(t.SharedLoad(t.Reg(pair, 1), 1, b.add(byte, imm(1)), crosses))
    window = t.Binary(
        "or",
        b.cvt(t.Read(pair, 0, dtypes.u8), U32),
        t.Binary("shl", b.cvt(t.Read(pair, 1, dtypes.u8), U32), imm(8, U32)),
    )
    code = t.Binary("and", t.Binary("shr", window, shift), imm((1 << bits) - 1, U32))
    lo.put_code(tile, li, code)


# -- asynchronous copies -------------------------------------------------------------------


@lowers(ir.CopyAsync)
def lower_copyasync(lo: Lowering, instr: ir.CopyAsync) -> None:
    """Each thread copies the runs of `vectorize`'s width (`elems`) a blocked layout
    gives it (a masked copy: its mask's layout), as `AsyncCopier` moves them."""
    shared = lo.shared_tile(instr.shared)
    info = memory.access(lo, instr.tensor, store=False)
    bits = shared.dtype.bits
    elems = instr.attr("elems")
    elems = elems if isinstance(elems, int) and elems > 0 and shared.shape[-1] % elems == 0 else 1
    mask = lo.tile(instr.mask) if instr.mask is not None else None
    if mask is not None:
        layout = mask.layout
    else:
        layout = blocked_layout(shared.shape, shared.dtype, lo.threads, min_vec=elems)
    run, width = shared_runs(shared, layout, most=elems)
    if width == 0:
        raise lo.fail(
            instr,
            f"copy_async of {shared.dtype}: the box's rows do not start on byte boundaries "
            "(a tile of whole bytes per row, or sizes known to be multiples of 8, are needed)",
        )
    align = instr.attr("align")
    limit = min(width, align) if isinstance(align, int) and align > 0 else width
    offsets = [lo.scalar(o) for o in instr.offsets]
    copier = AsyncCopier(lo, instr, info.param, lo.replica_zero(layout), limit, mask, "cp_async")
    coalescing.record(lo, "load", instr, layout, bits, run, widest=width)
    for li in range(0, layout.num_locals, run):
        index = lo.index(layout, li)
        pred, source = memory.place(lo, instr, info, offsets, layout, li)
        address = lo.b.let(shared_address(lo, shared, index), "sa")
        copier.run(li, run, bits, address, source, pred)


class AsyncCopier:
    """One thread's copies of runs of a global tensor (`param`) into shared memory, for
    `copy_async` and `gather_async`: cp.async for the aligned pieces of 4, 8 or 16
    bytes (`limit` at most), a load and a shared store for smaller ones; where the
    predicate fails the bytes become zeros and are not read (cp.async's source size
    0). Under a mask a run is copied whole where all of it is selected (one test of the
    mask's bits) and element by element, each under its own selection, where only some
    is, the two branches of an `If`: a masked-off element is never read. A mask of one
    bit for the run (a row mask: `memory.run_selection`) is the copy's predicate: one
    zero-filling cp.async. A replicated
    element is copied by the first replica (`first`). `stat` names the count of the
    cp.asyncs (``{size}``: their bytes)."""

    def __init__(self, lo: Lowering, instr, param: str, first, limit: int, mask, stat: str):
        self.lo, self.instr, self.param, self.limit = lo, instr, param, limit
        self.first = lo.b.let(first, "p") if first is not None else None
        self.mask: TileRegs | None = mask
        self.stat = stat
        self.staging: str | None = None

    def run(self, li: int, run: int, bits: int, address: t.Expr, source: t.Expr, pred) -> None:
        """Elements `li` .. `li + run - 1` (whole bytes) from byte `source` to `address`,
        where `pred` (the bounds) holds."""
        b, mask = self.lo.b, self.mask
        source = b.let(source, "off")
        if mask is None:
            self.pieces(address, source, run * bits // 8, pred)
            return
        if bits % 8:
            raise self.lo.fail(self.instr, f"a masked copy of {mask.dtype} codes")
        selected = memory.run_selection(self.lo, mask, li, run)
        if len(selected) == 1:  # one element, or one bit for the run (a row mask)
            self.pieces(
                address,
                source,
                run * bits // 8,
                b.all_of([c for c in (pred, *selected) if c is not None]),
            )
            return
        pred = b.let(pred, "p") if pred is not None else None
        every = memory.all_selected(self.lo, mask, li, run)
        with b.nested() as whole:
            self.pieces(address, source, run * bits // 8, pred)
        with b.nested() as alone:
            size = bits // 8
            for i, one in enumerate(selected):
                to, at = b.add(address, imm(i * size)), b.add(source, imm(i * size, I64))
                self.pieces(to, at, size, b.all_of([c for c in (pred, one) if c is not None]))
        b.emit(t.If(every, tuple(whole), tuple(alone)))
        b.count("copy_async_partial_run")

    def pieces(self, address: t.Expr, source: t.Expr, nbytes: int, pred) -> None:
        b = self.lo.b
        pred = b.let(pred, "p") if pred is not None else None
        for at, size in pieces(0, nbytes, self.limit):
            to, src = b.add(address, imm(at)), b.add(source, imm(at, source.dtype))
            if size >= 4:
                copy = t.CpAsync(to, self.param, src, size, pred)
                b.emit(t.If(self.first, (copy,)) if self.first is not None else copy)
                b.count(self.stat.format(size=size))
                continue
            self.staging = self.staging or b.local(dtypes.u8, shared_access.MAX_ACCESS, "stage")
            for i in range(size):
                b.emit(t.SetLocal(self.staging, i, imm(0, dtypes.u8)))
            b.emit(t.GlobalLoad(t.Reg(self.staging, 0), size, self.param, src, pred))
            b.emit(t.SharedStore(to, t.Reg(self.staging, 0), size, self.first))


@lowers(ir.Sync)
def lower_sync(lo: Lowering, instr: ir.Sync) -> None:
    lo.b.emit(t.Barrier())


@lowers(ir.AsyncCommit)
def lower_asynccommit(lo: Lowering, instr: ir.AsyncCommit) -> None:
    lo.b.emit(t.CpAsyncCommit())


@lowers(ir.AsyncWait)
def lower_asyncwait(lo: Lowering, instr: ir.AsyncWait) -> None:
    lo.b.emit(t.CpAsyncWait(instr.pending))
    if wgmma.needs_proxy_fence(lo):  # the copies, for the tensor cores to read
        lo.b.emit(tm.AsyncProxyFence())
