"""Lowering of data movement between register layouts: `relayout`, `reshape`,
`transpose`, `broadcast` and `view`.

When every thread already holds the elements it needs, the data moves in registers (or
not at all); otherwise it goes through a scratch area of shared memory placed after the
user's shared tiles, written row-major (16-byte chunks XOR-swizzled when rows are a
multiple of 128 bytes), and is read back with `ldmatrix` when the target layout divides
by an ldmatrix layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import LDMATRIX_CANDIDATES, LdmatrixAtom
from tilelang.ir.layout import Layout
from tilelang.ir.types import TileType
from tilelang.lowering import dequant
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import U32, imm
from tilelang.lowering.values import (
    WARP,
    SharedTile,
    TileRegs,
    as_storage,
    contiguous_elements,
    element_bytes,
    flat_indices,
    from_storage,
    local_part,
    pieces,
    run_length,
    storage_of,
    value_dtype_storage,
)


def write_scratch(lo: Lowering, tile: TileRegs, base: int, codes: bool = False) -> None:
    """Every element of `tile` into the row-major scratch tile at `base` (one replica
    writes): values of `value_dtype`, or with `codes` a packed tile's codes as u32
    (data that only moves keeps its exact bits)."""
    shape = tile.layout.shape
    elem = 4 if codes and tile.packed else element_bytes(tile.dtype)
    run = run_length(tile.layout) if not tile.packed else 1
    run &= -run  # accesses are 1, 2, 4, 8 or 16 bytes: a power of two of elements
    while run > 1 and (run * elem > 16 or tile.layout.num_locals % run):
        run //= 2
    first = lo.replica_zero(tile.layout)
    first = lo.b.let(first, "p") if first is not None else None
    value_local = None
    for li in range(0, tile.layout.num_locals, run):
        address = lo.b.let(lo.scratch_address(base, shape, elem, lo.index(tile.layout, li)), "sa")
        if tile.packed and codes:
            value_local = value_local or lo.b.local(U32, 1, "v")
            lo.b.emit(t.SetLocal(value_local, 0, lo.get_code(tile, li)))
            src = t.Reg(value_local, 0)
        elif tile.packed:
            value_local = value_local or lo.b.local(value_dtype_storage(tile.dtype), 1, "v")
            lo.b.emit(t.SetLocal(value_local, 0, as_storage(lo.get(tile, li))))
            src = t.Reg(value_local, 0)
        else:
            src = t.Reg(tile.local, li * elem)
        lo.b.emit(t.SharedStore(address, src, run * elem, first))


def read_scratch(
    lo: Lowering, tile: TileRegs, base: int, source_index, codes: bool = False
) -> None:
    """Every element of `tile` from the scratch tile (element `source_index(index)`)."""
    elem = 4 if codes and tile.packed else element_bytes(tile.dtype)
    shape = tile.layout.shape if source_index is None else None
    value_local = None
    for li in range(tile.layout.num_locals):
        index = lo.index(tile.layout, li)
        src_index, src_shape = source_index(index) if source_index else (index, shape)
        address = lo.scratch_address(base, src_shape, elem, src_index)
        if tile.packed and codes:
            value_local = value_local or lo.b.local(U32, 1, "v")
            lo.b.emit(t.SharedLoad(t.Reg(value_local, 0), elem, address))
            lo.put_code(tile, li, t.Read(value_local, 0, U32))
        elif tile.packed:
            value_local = value_local or lo.b.local(value_dtype_storage(tile.dtype), 1, "v")
            lo.b.emit(t.SharedLoad(t.Reg(value_local, 0), elem, address))
            stored = t.Read(value_local, 0, value_dtype_storage(tile.dtype))
            lo.put(tile, li, from_storage(stored, tile.dtype))
        else:
            lo.b.emit(t.SharedLoad(t.Reg(tile.local, li * elem), elem, address))


def through_shared(
    lo: Lowering, src: TileRegs, dst: TileRegs, source_index=None, value: ir.Var | None = None
) -> None:
    """`dst[i] = src[source_index(i)]` (same dtype) through the scratch area; packed
    tiles move as codes. `value`, the block-IR value `src` holds: when the scratch area
    still holds it (`Lowering.staged_scratch`: another slice of it was just read), only
    the reads are emitted."""
    codes = src.packed
    elem = 4 if codes else element_bytes(src.dtype)
    nbytes = math.prod(src.layout.shape) * elem
    if value is None:
        base, staged = lo.scratch(nbytes), False
    else:
        base, staged = lo.staged_scratch((value.name, src.layout, src.dtype, codes), nbytes)
    if not staged:
        lo.b.emit(t.Barrier())
        write_scratch(lo, src, base, codes)
        lo.b.emit(t.Barrier())
    shape = src.layout.shape
    address = lambda index: lo.scratch_address(base, shape, 2, index)  # noqa: E731
    if source_index is None and try_ldmatrix(lo, dst, address):
        return
    shape = src.layout.shape
    read_scratch(
        lo,
        dst,
        base,
        (lambda i: (source_index(i), shape)) if source_index else (lambda i: (i, shape)),
        codes,
    )
    lo.b.count("shared_relayout")


def try_ldmatrix(lo: Lowering, dst: TileRegs, address, shared: SharedTile | None = None) -> bool:
    """Reads `dst` with ldmatrix when its layout divides by an ldmatrix layout;
    `address(index)` is the shared byte address of a tile index, and each 8-element
    row must be 16 contiguous bytes there."""
    plan = ldmatrix_plan(lo, dst, address, shared)
    if plan is None:
        return False
    for _, emit in plan:
        emit()
    return True


def ldmatrix_plan(
    lo: Lowering, dst: TileRegs, address, shared: SharedTile | None = None
) -> list[tuple[tuple[tuple[int, int], tuple[int, int]], Callable[[], None]]] | None:
    """`try_ldmatrix` as a plan: per ldmatrix, ((first, end) tile index its matrices
    cover within a warp's part, a function that emits it), so that a dot can read an
    operand one k-step at a time; None when no ldmatrix form fits."""
    if dst.dtype.bits != 16 or dst.packed or dst.layout.rank != 2:
        return None
    if shared is not None and contiguous_elements(shared.layout) % 8:
        return None
    for atom in LDMATRIX_CANDIDATES:
        if not dst.layout.divisible_by(atom.layout):
            continue
        quotient = dst.layout / atom.layout
        if dst.layout.shape[-1] * 2 % 16:
            continue
        return emit_ldmatrix(lo, dst, address, atom, quotient)
    return None


def emit_ldmatrix(lo, dst: TileRegs, address_of, atom: LdmatrixAtom, quotient: Layout) -> list:
    """The ldmatrix reads of `dst` (see `ldmatrix_plan`), each emitted when called."""
    b = lo.b
    lane = lo.prologue_let(t.Binary("rem", t.ThreadIndex(), imm(WARP)), "lane")
    warp = lo.prologue_let(t.Binary("div", t.ThreadIndex(), imm(WARP)), "warp")
    grid_rows = atom.grid[0]
    matrix = b.binary("rem", b.binary("div", lane, imm(8)), imm(atom.num))
    row_in_atom = lo.prologue_let(
        b.add(
            b.mul(b.binary("rem", matrix, imm(grid_rows)), imm(8)),
            b.binary("rem", lane, imm(8)),
        ),
        "lr",
    )
    col_in_atom = lo.prologue_let(b.mul(b.binary("div", matrix, imm(grid_rows)), imm(8)), "lc")
    key = (quotient, "warp")
    if key not in lo.thread_parts:
        lo.thread_parts[key] = lo._thread_part(quotient, warp)
    block_part = lo.thread_parts[key]
    atom_rows, atom_cols = atom.layout.shape
    per_block = atom.layout.num_locals

    def emitter(q: int, local: tuple[int, ...]) -> Callable[[], None]:
        def emit() -> None:
            row = b.add(b.mul(b.add(block_part[0], imm(local[0])), imm(atom_rows)), row_in_atom)
            col = b.add(b.mul(b.add(block_part[1], imm(local[1])), imm(atom_cols)), col_in_atom)
            address = address_of((row, col))
            b.emit(
                tm.Ldmatrix(
                    atom.num, atom.trans, t.Reg(dst.local, q * per_block * 2), b.let(address, "la")
                )
            )
            b.count("ldmatrix")

        return emit

    plan = []
    for q in range(quotient.num_locals):
        local = local_part(quotient, q)
        first = (local[0] * atom_rows, local[1] * atom_cols)
        end = (first[0] + atom_rows, first[1] + atom_cols)
        plan.append(((first, end), emitter(q, local)))
    return plan


def register_map(src: TileRegs, dst: TileRegs, source_index_table) -> list[int] | None:
    """For each local of `dst`, the local of `src` the same thread holds its source
    element in (the same for every thread), or None when some thread lacks it."""
    src_table = _table(src.layout)
    dst_table = _table(dst.layout)
    wanted = source_index_table(dst_table)  # [T, N_dst, rank_src]
    shape = src.layout.shape
    src_flat = flat_indices(src_table, shape)
    want_flat = flat_indices(wanted, shape)
    if src_flat.shape[0] == want_flat.shape[0] and src_flat.size and want_flat.size:
        return _first_sources(src_flat, want_flat)
    choice = []
    for li in range(dst.layout.num_locals):
        hits = src_flat == want_flat[:, li : li + 1]  # [T, N_src]
        if not hits.any(axis=1).all():
            return None
        first = hits.argmax(axis=1)
        if not (first == first[0]).all():
            return None
        choice.append(int(first[0]))
    return choice


#: `Layout.table()` of the layouts met lately, read-only: a lowering asks again and
#: again for the tables of a few layouts (equal layouts map alike: equality is by the
#: canonical form, which only drops size-1 modes and merges adjacent ones).
_TABLES: dict[Layout, np.ndarray] = {}


def _table(layout: Layout) -> np.ndarray:
    table = _TABLES.get(layout)
    if table is None:
        if len(_TABLES) >= 1024:
            _TABLES.clear()
        table = _TABLES[layout] = layout.table()
        table.flags.writeable = False
    return table


def _first_sources(src_flat: np.ndarray, want_flat: np.ndarray) -> list[int] | None:
    """`register_map`'s answer from the flat indices each thread holds ([T, N_src]) and
    wants ([T, N_dst]), by one sort instead of a comparison of every pair per local:
    per thread, the first local holding each wanted element."""
    threads, n_src = src_flat.shape
    rows = np.arange(threads, dtype=np.int64)[:, None]
    span = int(max(src_flat.max(), want_flat.max())) + 1  # keys never collide across threads
    keys, first = np.unique((rows * span + src_flat).ravel(), return_index=True)
    wanted = rows * span + want_flat
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    if not (keys[at] == wanted).all():
        return None  # some thread lacks an element it needs
    local = first[at] - rows * n_src
    if not (local == local[0]).all():
        return None  # threads would read different locals
    return [int(x) for x in local[0]]


def move_tile(lo, instr: ir.Instr, src: TileRegs, result: ir.Var, index_map, table_map) -> None:
    """`result[i] = src[index_map(i)]`: in registers when each thread holds its sources,
    else through shared memory."""
    dst = lo.define_tile(result)
    choice = _move_map(instr, src, dst, result, table_map)
    if choice is not None and codes_kept_in_place(lo, src, dst, result, choice):
        lo.env[result] = TileRegs(src.local, dst.dtype, dst.layout, tuple(choice))
        lo.aliased.add(src.local)
        return
    if choice is not None:
        if (
            choice == list(range(dst.layout.num_locals))
            and src.dtype == dst.dtype
            and (src.layout.num_locals == dst.layout.num_locals)
        ):
            lo.env[result] = TileRegs(src.local, dst.dtype, dst.layout)
            lo.aliased.add(src.local)
            return
        for li, from_l in enumerate(choice):
            if dst.packed:  # moving data: the codes, bit for bit
                lo.put_code(dst, li, lo.get_code(src, from_l))
            else:
                lo.put(dst, li, lo.get(src, from_l))
        return
    value = getattr(instr, "value", None)
    through_shared(lo, src, dst, index_map, value if isinstance(value, ir.Var) else None)


#: `register_map` of the moves met lately, by what decides it: the move's kind, its
#: indices (a transpose's perm, a slice's starts), the result's shape and both layouts
#: (a kernel moves alike many times, and is built for several targets).
_MOVE_MAPS: dict[tuple, list[int] | None] = {}


def _move_map(
    instr: ir.Instr, src: TileRegs, dst: TileRegs, result: ir.Var, table_map
) -> list[int] | None:
    indices = getattr(instr, "perm", None) or getattr(instr, "starts", None) or ()
    key = (type(instr), tuple(indices), tuple(result.type.shape), src.layout, dst.layout)
    found = _MOVE_MAPS.get(key, _UNSEEN)
    if found is _UNSEEN:
        if len(_MOVE_MAPS) >= 1024:
            _MOVE_MAPS.clear()
        found = _MOVE_MAPS[key] = register_map(src, dst, table_map)
    return None if found is None else list(found)


_UNSEEN = object()


def codes_kept_in_place(lo, src: TileRegs, dst: TileRegs, result: ir.Var, choice) -> bool:
    """Whether `dst` can name `src`'s registers with its codes where they are (recorded
    in `TileRegs.positions`): packed codes that each thread only reorders, used by
    nothing but casts, which read codes wherever they are stored and do whole groups of
    them with the vector recipes when every group of codes stays within its words, and
    lookups indexed by them (`lowering.lookup` reads each code where it sits: moving
    the codes would cost more than the lookups); or a u1 tile (repeats allowed: a
    broadcast) read only as masks (`only_a_mask`)."""
    if not dst.packed or src.dtype != dst.dtype or src.positions is not None:
        return False
    users = lo.users.get(result, [])
    if dst.dtype == dtypes.u1 and users and all(only_a_mask(u, result) for u in users):
        return True  # read bit by bit (`lo.get`), a repeated bit one test: `run_selection`
    if sorted(choice) != list(range(src.layout.num_locals)) or choice == sorted(choice):
        return False
    if not users or not all(_reads_codes_in_place(u, result, dst.dtype) for u in users):
        return False
    if not any(isinstance(u, ir.Cast) for u in users):
        return True  # lookups only: any order of codes
    elements, _ = dequant.group(dst.dtype)
    return all(c // elements == li // elements for li, c in enumerate(choice))


def _reads_codes_in_place(user: ir.Instr, codes: ir.Var, dtype) -> bool:
    """Whether `user` reads `codes` wherever `TileRegs.positions` puts them: a cast to
    another dtype, or a lookup indexed (not a table) by them."""
    if isinstance(user, ir.Cast):
        return user.result.type.dtype != dtype
    return isinstance(user, ir.Lookup) and user.index == codes and user.table != codes


def only_a_mask(user: ir.Instr, mask: ir.Var) -> bool:
    """Whether `user` reads `mask` only as its memory access's `mask` operand, which
    the lowerings read an element at a time (`lo.get`), wherever its bits are kept: a
    broadcast u1 tile then names its source's bits (a row mask: one bit a row) rather
    than setting a bit per element."""
    if getattr(user, "mask", None) is not mask:
        return False
    others = [getattr(user, name) for name in user.OPERANDS if name != "mask"]
    flat = [x for o in others for x in (o if isinstance(o, list | tuple) else (o,))]
    return all(x is not mask for x in flat)


@lowers(ir.Relayout)
def lower_relayout(lo: Lowering, instr: ir.Relayout) -> None:
    move_tile(lo, instr, lo.tile(instr.value), instr.result, None, lambda table: table)


@lowers(ir.Reshape)
def lower_reshape(lo: Lowering, instr: ir.Reshape) -> None:
    src = lo.tile(instr.value)
    src_shape = src.layout.shape
    dst_shape = instr.result.type.shape

    def index_map(index):
        flat = imm(0)
        for size, i in zip(dst_shape, index, strict=True):
            flat = lo.b.add(lo.b.mul(flat, imm(size)), i)
        out = []
        for size in reversed(src_shape):
            out.append(lo.b.binary("rem", flat, imm(size)))
            flat = lo.b.binary("div", flat, imm(size))
        return tuple(reversed(out))

    def table_map(table):
        flat = flat_indices(table, dst_shape)
        if not src_shape:
            return np.zeros((*flat.shape, 0), np.int64)
        return np.stack(np.unravel_index(flat, src_shape), axis=-1)

    move_tile(lo, instr, src, instr.result, index_map, table_map)


@lowers(ir.Transpose)
def lower_transpose(lo: Lowering, instr: ir.Transpose) -> None:
    perm = instr.perm

    def index_map(index):
        out = [None] * len(perm)
        for k, p in enumerate(perm):
            out[p] = index[k]
        return tuple(out)

    def table_map(table):
        return table[..., np.argsort(perm)]

    move_tile(lo, instr, lo.tile(instr.value), instr.result, index_map, table_map)


@lowers(ir.Slice)
def lower_slice(lo: Lowering, instr: ir.Slice) -> None:
    starts = instr.starts

    def index_map(index):
        return tuple(lo.b.add(i, imm(a)) if a else i for i, a in zip(index, starts, strict=True))

    def table_map(table):
        return table + np.asarray(starts, dtype=table.dtype)

    move_tile(lo, instr, lo.tile(instr.value), instr.result, index_map, table_map)


@lowers(ir.Broadcast)
def lower_broadcast(lo: Lowering, instr: ir.Broadcast) -> None:
    if not isinstance(instr.value, ir.Var) or not isinstance(instr.value.type, TileType):
        tile = lo.define_tile(instr.result)
        value = lo.b.let(lo.convert(lo.scalar(instr.value), tile.dtype), "fill")
        for li in range(tile.layout.num_locals):
            lo.put(tile, li, value)
        return
    src = lo.tile(instr.value)
    ones = [d for d, s in enumerate(src.layout.shape) if s == 1]

    def index_map(index):
        return tuple(imm(0) if d in ones else i for d, i in enumerate(index))

    def table_map(table):
        out = table.copy()
        out[..., ones] = 0
        return out

    move_tile(lo, instr, src, instr.result, index_map, table_map)


@lowers(ir.View)
def lower_view(lo: Lowering, instr: ir.View) -> None:
    """Each thread's register bits, reinterpreted (infer_layouts chose layouts for
    which this is the row-major reinterpretation the block IR means, unless the input
    gave both layouts, which means exactly this)."""
    src = lo.tile(instr.value)
    result = instr.result.type
    bits = src.layout.num_locals * src.dtype.bits
    if bits != result.layout.num_locals * result.dtype.bits:
        raise lo.fail(
            instr, f"view needs equal bits per thread, not {src.layout} -> {result.layout}"
        )
    if storage_of(src.dtype, src.layout.num_locals) == storage_of(
        result.dtype, result.layout.num_locals
    ):
        # The same registers hold the same bits (packed codes reinterpreted in place, as a
        # fragment loaded in its load order is): the result names them, nothing moves.
        lo.env[instr.result] = TileRegs(src.local, result.dtype, result.layout)
        lo.aliased.add(src.local)
        return
    dst = lo.define_tile(instr.result)
    # Packed locals are whole u32 words; the bits past the last code are padding.
    nbytes = min(lo.local_bytes(src), lo.local_bytes(dst))
    if nbytes * 8 < bits:
        raise lo.fail(instr, f"view of {src.dtype} to {dst.dtype}: {bits} bits do not fit")
    for offset, width in pieces(0, nbytes):
        lo.b.emit(t.Move(t.Reg(dst.local, offset), t.Reg(src.local, offset), width))
