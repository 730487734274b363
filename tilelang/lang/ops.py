"""The operations a kernel body calls: `tl.load`, `tl.dot`, `tl.sum`, `tl.exp`, ...

Each checks its arguments (shapes, dtypes, what must be known at compile time) and
reports a mistake at the user's source line, then emits one or a few block-IR
instructions. Names follow numpy where numpy has one.

What tiles also offer as methods (reshape, transpose, view, new axes, shared load and
store) and the compile-time argument checks are implemented in `tilelang.lang.values`;
the functions here check that they were given a tile and call them. The global-memory
accesses `tl.load`, `tl.store` and `tl.atomic_add` are in `tilelang.lang.memory_ops`,
public here as the others.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import fragments
from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout
from tilelang.ir.ops import REDUCTIONS, SCANS
from tilelang.ir.types import ScalarType, SharedType, TileType
from tilelang.lang.builder import active, current

# tl.full is public here, implemented below memory_ops, whose scatter of a number uses it.
from tilelang.lang.fills import full as full

# tl.load, tl.store and tl.atomic_add/max/min/xchg/cas are public here, implemented in memory_ops
# with the argument checks the other global accesses here share.
from tilelang.lang.memory_ops import atomic_add as atomic_add
from tilelang.lang.memory_ops import atomic_cas as atomic_cas
from tilelang.lang.memory_ops import atomic_max as atomic_max
from tilelang.lang.memory_ops import atomic_min as atomic_min
from tilelang.lang.memory_ops import atomic_xchg as atomic_xchg
from tilelang.lang.memory_ops import gather_axis as _gather_axis
from tilelang.lang.memory_ops import load as load
from tilelang.lang.memory_ops import offsets_of as _offsets
from tilelang.lang.memory_ops import store as store
from tilelang.lang.memory_ops import tensor_argument as _tensor
from tilelang.lang.values import (
    INDEX,
    Scalar,
    Shared,
    Tile,
    as_dtype,
    as_scalar,
    broadcast_to,
    cast,
    checked_layout,
    describe,
    elementwise,
    emit_result,
    floor_divide,
    is_python_number,
    require_tile,
    reshape_tile,
    static_int,
    static_shape,
    tile_item,
    transpose_tile,
    view_tile,
)

# Public here as tl operations; implemented in values, where the Tile and Shared methods
# (`t.reshape`, `t[None, :]`, `buf.load()`, ...) use them too.
from tilelang.lang.values import expand_dims_by_index as expand_dims_by_index
from tilelang.lang.values import shared_load as shared_load
from tilelang.lang.values import shared_store as shared_store
from tilelang.lang.values import static_shape_like as static_shape_like

#: The DSL operations that have no block-IR instruction of their own: each emits the
#: instructions listed (none: it computes a compile-time value), so its meaning, layout
#: rules and lowering are theirs. docs/ops.md lists them (`tilelang.op_reference`).
COMPOSITES: dict[str, tuple[type[ir.Instr], ...]] = {}
COMPOSITE_FUNCTIONS: dict[str, object] = {}  # the functions, wherever they are defined


def composite(*instructions: type[ir.Instr]):
    """Registers a DSL function in `COMPOSITES` under its name."""

    def register(fn):
        COMPOSITES[fn.__name__] = instructions
        COMPOSITE_FUNCTIONS[fn.__name__] = fn
        return fn

    return register


# -- compile-time arguments (static_int, static_shape: see values) ------------------------


def _axis(axis: object, rank: int) -> int:
    axis = static_int(axis, "axis")
    if not -rank <= axis < rank:
        raise current().error(f"axis {axis} is out of range for a tile of rank {rank}")
    return axis % rank


# -- grid and loops ----------------------------------------------------------------------


def blocks(*sizes: Scalar | int) -> Scalar | tuple[Scalar, ...]:
    """Declares the grid (one block per index) and returns this block's indices."""
    builder = current()
    if not sizes:
        raise builder.error("tl.blocks needs at least one grid size")
    if len(sizes) > 3:
        raise builder.error(f"a grid has at most 3 dimensions, got {len(sizes)}")
    if not builder.at_top_level:
        raise builder.error(
            "tl.blocks must be called at the top level of the kernel, not in a loop or branch"
        )
    values = tuple(as_scalar(s, INDEX).value for s in sizes)
    names = ("bx", "by", "bz")
    results = tuple(builder.var(names[i], ScalarType(INDEX)) for i in range(len(sizes)))
    builder.emit(ir.Blocks(results, values, loc=builder.loc))
    wrapped = tuple(Scalar(r) for r in results)
    return wrapped[0] if len(wrapped) == 1 else wrapped


@composite()
def num_blocks(axis) -> Scalar:
    """The grid's size along `axis` (0, 1 or 2; Triton's `tl.num_programs`): the size
    `tl.blocks` was given (the launch's), as an i32 scalar; an axis the grid does not
    have is 1."""
    builder = current()
    axis = static_int(axis, "the axis of tl.num_blocks")
    if axis not in (0, 1, 2):
        raise builder.error(f"tl.num_blocks: expected an axis of 0, 1 or 2, got {axis}")
    grid = [i for i in builder._bodies[0] if isinstance(i, ir.Blocks)]
    if not grid:
        raise builder.error("tl.num_blocks needs the grid: call tl.blocks(...) before it")
    sizes = grid[0].sizes
    return Scalar(sizes[axis]) if axis < len(sizes) else as_scalar(1, INDEX)


@composite(ir.Compute)
def clamp(x, lo, hi):
    """``tl.minimum(tl.maximum(x, lo), hi)`` (Triton's `tl.clamp`), elementwise with
    broadcasting. Floats follow `tl.maximum`/`tl.minimum`: a NaN operand is ignored, so a
    NaN x gives lo (hi where lo is NaN too), a NaN bound is no bound; -0 < +0. Where lo >
    hi the result is hi."""
    return elementwise("min", elementwise("max", x, lo), hi)


@dataclass(frozen=True)
class RuntimeRange:
    """What `tl.range(...)` returns: a loop the compiler emits as IR, not unrolled."""

    start: Scalar | int
    stop: Scalar | int
    step: Scalar | int
    stages: int | None
    unroll: int | None


def range_(start, stop=None, step=1, *, stages=None, unroll=None) -> RuntimeRange:
    """A runtime loop: `for k in tl.range(0, K, BK, stages=3)`; it runs as Python's
    `range` does (a negative step counts down). The step is a number or arithmetic on
    the kernel's scalar parameters and sizes, known before the launch."""
    if stop is None:
        start, stop = 0, start
    if is_python_number(step) and step == 0:
        raise current().error("tl.range() arg 3 must not be zero (as for Python's range)")
    stages = None if stages is None else static_int(stages, "stages")
    unroll = None if unroll is None else static_int(unroll, "unroll")
    return RuntimeRange(start, stop, step, stages, unroll)


# -- creation ----------------------------------------------------------------------------


def zeros(shape, dtype=dtypes.f32) -> Tile:
    return full(shape, 0, dtype)


def arange(start, stop=None, dtype=INDEX) -> Tile:
    """`[start, ..., stop - 1]` as a 1-D tile; the bounds are compile-time ints."""
    if stop is None:
        start, stop = 0, start
    start, stop = static_int(start, "start of tl.arange"), static_int(stop, "end of tl.arange")
    if stop <= start:
        raise current().error(f"tl.arange({start}, {stop}) is empty")
    return emit_result(ir.Arange, "range", TileType(as_dtype(dtype), (stop - start,)), start)


# -- global memory -----------------------------------------------------------------------


@composite(ir.Load, ir.View, ir.Relayout)
def load_fragment(tensor, offsets, layout) -> Tile:
    """The [BK, BN] tile (BK, BN = `layout.shape`) at logical `offsets` [k, n0] of a
    tensor packed by `tilelang.pack_for_dot` with the same tile and layout, in `layout`
    (e.g. ``tl.dot_layout("b", BM, BN, BK)``), ready to convert and multiply with no data
    moving between threads. k and n0 are multiples of BK and BN.

    It loads the tile's packed run, ``[1, BK·BN]`` at ``[n0 // BN, k · BN]``, in the
    load order F of L' = `tilelang.ir.fragments.paired_codes(layout)` (each thread's
    elements contiguous, in whole 16-byte words where the width allows), views each
    thread's registers in place as the tile in L', and, where L' is not `layout` (2 and
    4-bit codes, paired across word halves), relabels it as the tile in `layout`:
    one `load`, one `view` and a `relayout` that moves nothing."""
    builder = current()
    tensor = _tensor(tensor, "the first argument of tl.load_fragment")
    if tensor.ndim != 2:
        raise builder.error(
            f"tl.load_fragment reads a tensor packed by tl.pack_for_dot, [N / BN, K · BN]; "
            f"{tensor.var.name} has {tensor.ndim} dimensions"
        )
    if not isinstance(layout, Layout) or layout.rank != 2:
        raise builder.error(
            f"the layout of tl.load_fragment must be the layout of a [BK, BN] tile (e.g. "
            f"tl.dot_layout('b', BM, BN, BK)), got {layout!r}"
        )
    block_k, block_n = layout.shape
    layout = checked_layout(layout, (block_k, block_n), "the layout of tl.load_fragment")
    if not isinstance(offsets, (list, tuple)) or len(offsets) != 2:
        raise builder.error(f"tl.load_fragment takes the logical offsets [k, n0], got {offsets!r}")
    try:
        flat = fragments.load_order(layout, fragments.fragment_run(layout, tensor.dtype))
    except fragments.FragmentError as error:
        raise builder.error(str(error)) from None
    k, n0 = offsets
    row = n0 // block_n if is_python_number(n0) else floor_divide(n0, block_n)
    where = [row, k * block_n]
    run = load(tensor, where, flat.shape, layout=flat)
    stored = fragments.paired_codes(layout, tensor.dtype)
    tile = view_tile(run, tensor.dtype, (block_k, block_n), stored)
    if stored == layout:
        return tile
    # The same elements in each thread, another local order: no data moves, and a cast
    # reads the codes where they are (the lowering keeps their positions).
    return emit_result(
        ir.Relayout, tile.var.name, TileType(tensor.dtype, (block_k, block_n), layout), tile.var
    )


@composite()
def dot_layout(which, m, n, k, operand=dtypes.f16, acc=dtypes.f32, warps=None) -> Layout:
    """The register layout the compiler gives operand `which` of a dot: "a" ([m, k]),
    "b" ([k, n]) or "c" (the [m, n] accumulator) of ``tl.dot(a, b, acc)`` with `operand`
    operands accumulated in `acc`, over the kernel's warps (`warps` outside a kernel):
    the mma fragments tiled over a grid of warps (`tilelang.ir.fragments.dot_layouts`).
    `tilelang.pack_for_dot` packs weights for the "b" layout."""
    builder = active()
    if builder is None:  # on the host: plain exceptions
        if warps is None:
            raise TypeError("tl.dot_layout outside a kernel needs warps=")
        return fragments.dot_layout(which, m, n, k, dtypes.dtype(operand), dtypes.dtype(acc), warps)
    sizes = [static_int(v, name) for v, name in ((m, "m"), (n, "n"), (k, "k"))]
    warps = builder.warps if warps is None else static_int(warps, "warps")
    try:
        return fragments.dot_layout(which, *sizes, as_dtype(operand), as_dtype(acc), warps)
    except fragments.FragmentError as error:
        raise builder.error(str(error)) from None


def arrive(counters, offsets) -> Scalar:
    """The block's arrival at the i32 counter ``counters[offsets]``: once per block,
    after every global load and store the block made before it, adds 1 and returns the
    count before (0 for the first block to arrive), the same in every thread. The blocks
    counted before made their accesses before they arrived, and those are done before
    this block's accesses after it: the last of n blocks to arrive at a zeroed counter
    gets n - 1 and reads what the others stored. A counter outside the tensor is not
    touched and gives -1. Blocks must not wait for each other's arrival (they may not
    all be resident at once): branch on the count instead.

        if tl.arrive(counts, [tile]) == SLICES - 1:  # the last slice adds them all
            ..."""
    builder = current()
    tensor = _tensor(counters, "the first argument of tl.arrive")
    if tensor.dtype != dtypes.i32:
        raise builder.error(
            f"tl.arrive counts in {tensor.var.name}, a tensor of {tensor.dtype}: "
            "the counters must be a tensor of i32"
        )
    if _gather_axis(tensor, offsets) is not None:
        raise builder.error("tl.arrive counts at one element: its offsets must be scalars")
    offs = _offsets(tensor, offsets)
    return emit_result(ir.Arrive, "count", ScalarType(dtypes.i32), tensor.var, offs)


# -- shared memory -----------------------------------------------------------------------


def shared(shape, dtype) -> Shared:
    """A tile of `shape` and `dtype` in the block's shared memory, for data the block's
    threads exchange by hand: `buf.store(t)` writes a tile of that shape, `buf.load()`
    reads it back (the lowering puts a barrier around each store), `tl.copy_async`
    fills it from global memory. `tl.range(..., stages=S)` makes its own buffers; this
    is for the cases it does not cover."""
    return emit_result(ir.SharedAlloc, "smem", SharedType(as_dtype(dtype), static_shape(shape)))


def copy_async(buffer, tensor, offsets) -> None:
    """Starts copying the box of `tensor` at `offsets` (the buffer's shape) into the
    `tl.shared` buffer without holding registers (`cp.async` on the GPU); elements
    outside the tensor become zero bytes (0; in e8m0, which has no 0, 2^-127). The copy
    is complete after `tl.commit()` closes its group, `tl.wait(n)` waits until at most
    n groups are pending and `tl.sync()` makes it visible to every thread."""
    builder = current()
    if not isinstance(buffer, Shared):
        raise builder.error(f"tl.copy_async copies into a tl.shared buffer, got {describe(buffer)}")
    tensor = _tensor(tensor, "the source of tl.copy_async")
    if buffer.dtype != tensor.dtype or len(buffer.shape) != tensor.ndim:
        raise builder.error(
            f"tl.copy_async from {tensor.var.type} into {buffer.var.type}: dtype and rank must match"
        )
    builder.emit(ir.CopyAsync(buffer.var, tensor.var, _offsets(tensor, offsets), loc=builder.loc))


def commit() -> None:
    """Closes the group of `tl.copy_async` copies started since the last commit."""
    builder = current()
    builder.emit(ir.AsyncCommit(loc=builder.loc))


def wait(pending: int = 0) -> None:
    """Waits until at most `pending` (a compile-time int) committed groups of copies
    are still in flight: `tl.wait(0)` waits for all of them."""
    builder = current()
    builder.emit(ir.AsyncWait(static_int(pending, "pending"), loc=builder.loc))


def sync() -> None:
    """A barrier: every thread of the block reaches it before any goes on (after
    `tl.wait`, every thread sees every thread's copies)."""
    builder = current()
    builder.emit(ir.Sync(loc=builder.loc))


def lookup(table, index) -> Tile:
    """`table[index]` elementwise: a small on-chip table (a codebook: NF4's 16 f16
    values) indexed by a tile of integer codes of any shape, u4 codes included. `table`
    is a rank-1 register tile or `tl.shared` buffer of N entries (8 bits or more each);
    the result has the index's shape and layout (so it can be a `tl.dot` operand as it
    is) and the table's dtype. An index outside ``0 <= i < N`` reads zero, everywhere.
    Compiled, each element is one shared-memory read: a register table is staged into
    shared memory at the lookup (with barriers; once for several lookups in a row), a
    shared buffer written once before a loop is read with no barrier at all."""
    builder = current()
    if not isinstance(table, (Tile, Shared)):
        raise builder.error(
            f"tl.lookup: table must be a rank-1 tile or tl.shared buffer, got {describe(table)}"
        )
    if len(table.shape) != 1 or table.dtype.bits % 8:
        raise builder.error(
            "tl.lookup: table must have rank 1 and a dtype of whole bytes (8, 16, 32, 64 bits), got "
            f"{describe(table)}"
        )
    if not isinstance(index, Tile) or not index.dtype.is_int:
        raise builder.error(f"tl.lookup: index must be an integer tile, got {describe(index)}")
    result_type = TileType(table.dtype, tuple(index.shape))
    return emit_result(ir.Lookup, "lut", result_type, table.var, index.var)


# -- computation -------------------------------------------------------------------------


def dot(a, b, acc=None, acc_dtype=None) -> Tile:
    """`a @ b + acc` with products and sums in the accumulator's dtype."""
    builder = current()
    a = require_tile(a, "the first operand of tl.dot")
    b = require_tile(b, "the second operand of tl.dot")
    if a.ndim != 2 or b.ndim != 2:
        raise builder.error(f"tl.dot multiplies 2-D tiles, got {list(a.shape)} and {list(b.shape)}")
    if a.shape[1] != b.shape[0]:
        raise builder.error(
            f"tl.dot: the inner sizes differ: a is {list(a.shape)}, b is {list(b.shape)}"
        )
    if a.dtype != b.dtype:
        raise builder.error(
            f"tl.dot: operands have dtypes {a.dtype} and {b.dtype}; convert one with .to()"
        )
    shape = (a.shape[0], b.shape[1])
    if acc is None:
        dtype = as_dtype(acc_dtype) if acc_dtype is not None else _default_accumulator(a.dtype)
        acc = zeros(shape, dtype)
    acc = require_tile(acc, "the accumulator of tl.dot")
    if acc.shape != shape:
        raise builder.error(f"tl.dot: the accumulator is {list(acc.shape)}, expected {list(shape)}")
    _check_accumulator(a.dtype, acc.dtype)
    return emit_result(ir.Dot, "acc", TileType(acc.dtype, shape), a.var, b.var, acc.var)


_ACCUMULATORS = {
    "f16": ("f32", "f16"),
    "bf16": ("f32",),
    "f32": ("f32",),
    "f64": ("f64",),
    "i8": ("i32",),
    "u8": ("i32",),
}


def _default_accumulator(dtype: DType) -> DType:
    if dtype.name not in _ACCUMULATORS:
        raise current().error(
            f"tl.dot has no {dtype} form; convert the operands to f16, bf16, f32, i8 or u8"
        )
    return dtypes.dtype(_ACCUMULATORS[dtype.name][0])


def _check_accumulator(operand: DType, accumulator: DType) -> None:
    allowed = _ACCUMULATORS.get(operand.name)
    if allowed is None:
        _default_accumulator(operand)
    if accumulator.name not in allowed:
        raise current().error(
            f"tl.dot of {operand} operands accumulates in {' or '.join(allowed)}, not {accumulator}"
        )


def _operand(op: str, dtype: DType, requested: object) -> DType:
    """The type a reduction or scan of `dtype` values converts its operand to, which is
    its result's type (docs/ops.md): the `dtype=` the user asked for; else, for sums and
    products, 32 bits for booleans and narrower integers (numpy and Triton widen too: a
    count of a mask must not wrap at 2); else the operand's own."""
    if requested is not None:
        return as_dtype(requested)
    if op in ("sum", "prod") and not dtype.is_float and dtype.bits < 32:
        return dtypes.u32 if not dtype.signed and dtype.bits > 1 else dtypes.i32
    return dtype


def _accumulator(op: str, operand: DType) -> DType:
    """f16/bf16 fold in f32 and round once to their type: the compiled backends fold in
    the instruction's type, and an f16 sum stops growing at 2048; a max or min is exact
    either way, and in f32 it takes the warp-shuffle paths (f16 folds through shared
    memory)."""
    if op in ("sum", "prod", "max", "min") and operand in (dtypes.f16, dtypes.bf16):
        return dtypes.f32
    return operand


def _widened(op: str, tile: Tile, operand: DType) -> Tile:
    """`tile` converted to the operand type, then to the type it folds in."""
    return cast(cast(tile, operand), _accumulator(op, operand))


def _reduce(op: str, x, axis, keepdims: bool, dtype: object = None) -> Tile:
    tile = require_tile(x, f"the argument of tl.{op}")
    operand = _operand(op, tile.dtype, dtype)
    result = _widened(op, tile, operand)
    if axis is None:
        for _ in range(tile.ndim):
            result = _reduce_axis(op, result, 0)
        result = cast(result, operand)
        return reshape(result, (1,) * tile.ndim) if keepdims else result
    axis = _axis(axis, tile.ndim)
    result = cast(_reduce_axis(op, result, axis), operand)
    if keepdims:
        return reshape(result, tile.shape[:axis] + (1,) + tile.shape[axis + 1 :])
    return result


def _reduce_axis(op: str, tile: Tile, axis: int) -> Tile:
    assert op in REDUCTIONS
    if op in ("and", "or", "xor") and tile.dtype.is_float:
        raise current().error(f"the bitwise `{op}` reduction needs integer tiles, got {tile.dtype}")
    shape = tile.shape[:axis] + tile.shape[axis + 1 :]
    return emit_result(ir.Reduce, op, TileType(tile.dtype, shape), tile.var, op, axis)


def sum(x, axis=None, keepdims=False, dtype=None) -> Tile:
    """The sum along `axis` (all axes when None). Booleans and integers narrower than 32
    bits sum in i32 (u32 if unsigned), f16/bf16 in f32 rounded once to their type;
    `dtype` converts the operand first and is the result's type."""
    return _reduce("sum", x, axis, keepdims, dtype)


def prod(x, axis=None, keepdims=False, dtype=None) -> Tile:
    """The product along `axis`, widened as `tl.sum` widens."""
    return _reduce("prod", x, axis, keepdims, dtype)


def max(x, axis=None, keepdims=False, return_indices=False) -> Tile | tuple[Tile, Tile]:
    """The maximum along `axis`; with `return_indices`, (maximum, `tl.argmax`'s index)."""
    if _flag(return_indices, "return_indices"):
        return _arg_extreme("max", x, axis, keepdims)
    return _reduce("max", x, axis, keepdims)


def min(x, axis=None, keepdims=False, return_indices=False) -> Tile | tuple[Tile, Tile]:
    """The minimum along `axis`; with `return_indices`, (minimum, `tl.argmin`'s index)."""
    if _flag(return_indices, "return_indices"):
        return _arg_extreme("min", x, axis, keepdims)
    return _reduce("min", x, axis, keepdims)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise current().error(f"{name} must be a compile-time bool, got {describe(value)}")
    return value


@composite(ir.Reduce, ir.Arange, ir.Compute, ir.Full, ir.Broadcast, ir.Reshape)
def argmax(x, axis=None, keepdims=False) -> Tile:
    """The i32 index of the first maximum along `axis` (of the flattened tile when None),
    NaN ignored as `tl.max` ignores it (a row of NaN only gives 0). Elements are
    compared with `==`, so -0.0 and +0.0 tie (the first of them wins)."""
    return _arg_extreme("max", x, axis, keepdims)[1]


@composite(ir.Reduce, ir.Arange, ir.Compute, ir.Full, ir.Broadcast, ir.Reshape)
def argmin(x, axis=None, keepdims=False) -> Tile:
    """The i32 index of the first minimum along `axis`, as `tl.argmax`."""
    return _arg_extreme("min", x, axis, keepdims)[1]


def _arg_extreme(op: str, x, axis, keepdims: bool) -> tuple[Tile, Tile]:
    """(the extreme, the first index holding it) along `axis`."""
    # The extreme, then the smallest index that holds it: two reductions, no pair scan.
    tile = require_tile(x, f"the argument of tl.arg{op}")
    if axis is None:
        flat = reshape(tile, (math.prod(tile.shape),))
        pair = _arg_extreme(op, flat, 0, False)
        return tuple(reshape(t, (1,) * tile.ndim) for t in pair) if keepdims else pair
    axis = _axis(axis, tile.ndim)
    size = tile.shape[axis]
    extreme = _reduce(op, tile, axis, keepdims=True)
    line = [1] * tile.ndim
    line[axis] = size
    positions = broadcast_to(reshape(arange(0, size, dtypes.i32), line), tile.shape)
    hit = tile == extreme
    if tile.dtype.is_float:  # the extreme is NaN only when every element is
        hit = hit | (extreme != extreme)
    candidates = elementwise("where", hit, positions, full(tile.shape, size, dtypes.i32))
    index = _reduce("min", candidates, axis, keepdims)
    return (extreme if keepdims else reshape(extreme, index.shape)), index


def _scan(op: str, x, axis, reverse, dtype: object = None) -> Tile:
    assert op in SCANS
    tile = require_tile(x, f"the argument of tl.cum{op}")
    axis = _axis(axis, tile.ndim)
    if not isinstance(reverse, bool):
        raise current().error(f"reverse must be a compile-time bool, got {describe(reverse)}")
    operand = _operand(op, tile.dtype, dtype)
    widened = _widened(op, tile, operand)
    scanned = emit_result(ir.Scan, f"cum{op}", widened.type, widened.var, op, axis, reverse)
    return cast(scanned, operand)


def cumsum(x, axis=0, reverse=False, dtype=None) -> Tile:
    """Running sums along `axis`, widened as `tl.sum` widens."""
    return _scan("sum", x, axis, reverse, dtype)


def cumprod(x, axis=0, reverse=False, dtype=None) -> Tile:
    """Running products along `axis`, widened as `tl.sum` widens."""
    return _scan("prod", x, axis, reverse, dtype)


def cummax(x, axis=0, reverse=False) -> Tile:
    return _scan("max", x, axis, reverse)


def cummin(x, axis=0, reverse=False) -> Tile:
    return _scan("min", x, axis, reverse)


# -- shape manipulation ------------------------------------------------------------------


def reshape(x, shape) -> Tile:
    return reshape_tile(require_tile(x, "the argument of tl.reshape"), shape)


def transpose(x, perm=None) -> Tile:
    return transpose_tile(require_tile(x, "the argument of tl.transpose"), perm)


@composite(ir.Slice, ir.Reshape)
def split(x, sections=None, axis=None) -> tuple[Tile, ...]:
    """Triton's `tl.split(x)`: `x`'s last dimension must be 2, and the result is
    (`x[..., 0]`, `x[..., 1]`), the inverse of `tl.join`. `tl.split(x, sections, axis=-1)`
    cuts `x` along `axis` into `sections` equal parts (an int) or parts of the given sizes
    (compile-time ints summing to the dimension), each a static slice (`x[..., a:b, ...]`).

    Each part is a `slice` (and, for Triton's form, a `reshape` dropping the axis)."""
    tile = require_tile(x, "the argument of tl.split")
    if sections is None:
        return _unstack_pair(tile, axis)
    axis = static_int(-1 if axis is None else axis, "the axis of tl.split")
    if not -tile.ndim <= axis < tile.ndim:
        raise current().error(f"axis {axis} is out of range for a tile of rank {tile.ndim}")
    axis %= tile.ndim
    size = tile.shape[axis]
    if isinstance(sections, (list, tuple)):
        sizes = [static_int(s, "a section size of tl.split") for s in sections]
        if any(s < 1 for s in sizes) or builtins.sum(sizes) != size:  # `sum` is tl.sum here
            raise current().error(
                f"tl.split sizes {sizes} must be positive and sum to dimension {axis} ({size})"
            )
    else:
        count = static_int(sections, "the number of sections of tl.split")
        if count < 1 or size % count:
            raise current().error(
                f"tl.split cannot cut dimension {axis} of size {size} into {count} equal parts"
            )
        sizes = [size // count] * count
    parts, start = [], 0
    for width in sizes:
        index = [slice(None)] * tile.ndim
        index[axis] = slice(start, start + width)
        parts.append(tile[tuple(index)])
        start += width
    return tuple(parts)


def _unstack_pair(tile: Tile, axis: object) -> tuple[Tile, Tile]:
    """Triton's split: the two halves of a last dimension of size 2, that axis dropped."""
    builder = current()
    if axis is not None:
        raise builder.error(
            f"tl.split(x) without sections splits the last dimension, of size 2, as in Triton "
            f"(it takes no axis, got axis={_shown(axis)}); to cut along an axis write "
            f"tl.split(x, sections, axis)"
        )
    if tile.ndim == 0 or tile.shape[-1] != 2:
        raise builder.error(
            f"tl.split(x) needs x's last dimension to be 2, as in Triton, got a tile of shape "
            f"{list(tile.shape)}; to cut a tile into parts write tl.split(x, sections, axis)"
        )
    # A width-1 slice then a reshape, not `tile[..., k]`, so a rank-1 pair gives rank-0
    # tiles (as Triton's does), not the scalars an index of every dimension gives.
    lead = (slice(None),) * (tile.ndim - 1)
    halves = (tile[(*lead, slice(k, k + 1))] for k in (0, 1))
    return tuple(reshape_tile(half, tile.shape[:-1]) for half in halves)


def concat(tiles, axis=0) -> Tile:
    """The tiles laid end to end along `axis` (numpy's concatenate): one dtype, one
    shape except along `axis`. Concatenating parts a tile's layout keeps in registers
    (the halves `tl.split` gives) moves no data."""
    if not isinstance(tiles, (list, tuple)):
        raise current().error(f"tl.concat takes a list of tiles, got {describe(tiles)}")
    return _concat(list(tiles), axis, "tl.concat")


@composite(ir.Reshape, ir.Concat)
def join(a, b, *extra, **named) -> Tile:
    """Triton's `tl.join(a, b)`: `a` and `b` (one shape, one dtype) stacked along a new
    last axis (`numpy.stack([a, b], axis=-1)`), shape `a.shape + [2]`, `a` at `[..., 0]`
    and `b` at `[..., 1]`; so `tl.reshape(tl.join(a, b), [2 * n])` interleaves a0, b0,
    a1, b1, ... The inverse of `tl.split(x)`; tiles end to end are `tl.concat`.

    A `reshape` of each to a trailing axis of 1, then one `concat` along it: when `a`
    and `b` have one layout, each thread holds both elements of its pairs and the join
    moves no data."""
    builder = current()
    if extra or named:
        given = [_shown(v) for v in extra] + [f"{k}={_shown(v)}" for k, v in named.items()]
        raise builder.error(
            f"tl.join(a, b) takes two tiles and stacks them on a new last axis, as in Triton "
            f"(got also {', '.join(given)}); to lay tiles end to end along an axis write "
            f"tl.concat([a, b], axis)"
        )
    first = require_tile(a, "the first tile of tl.join")
    second = require_tile(b, "the second tile of tl.join")
    if second.dtype != first.dtype:
        raise builder.error(
            f"tl.join stacks tiles of one dtype: a is {first.dtype}, b is {second.dtype} "
            f"(convert with .to())"
        )
    if second.shape != first.shape:
        raise builder.error(
            f"tl.join stacks tiles of one shape: a has shape {list(first.shape)}, b "
            f"{list(second.shape)} (tl.broadcast or tl.concat([a, b], axis) may be what you want)"
        )
    column = (*first.shape, 1)
    return _concat([reshape_tile(first, column), reshape_tile(second, column)], -1, "tl.join")


def _shown(value: object) -> str:
    """An argument as the user wrote it where that is a Python value, else described."""
    return repr(value) if is_python_number(value) or isinstance(value, str) else describe(value)


def _concat(values: list, axis: object, what: str) -> Tile:
    builder = current()
    if not values:
        raise builder.error(f"{what} needs at least one tile, got an empty list")
    tiles = [require_tile(v, f"tile {k} of {what}") for k, v in enumerate(values)]
    first = tiles[0]
    if first.ndim == 0:
        raise builder.error(f"{what} joins tiles along an axis; tile 0 has rank 0")
    axis = static_int(axis, f"the axis of {what}")
    if not -first.ndim <= axis < first.ndim:
        raise builder.error(
            f"the axis of {what} must be in -{first.ndim}..{first.ndim - 1} for tiles of rank "
            f"{first.ndim}, got {axis}"
        )
    axis %= first.ndim
    for k, tile in enumerate(tiles[1:], start=1):
        if tile.dtype != first.dtype:
            raise builder.error(
                f"{what} joins tiles of one dtype: tile {k} is {tile.dtype}, tile 0 is "
                f"{first.dtype} (convert with .to())"
            )
        others = [(d, n) for d, n in enumerate(tile.shape) if d != axis]
        if tile.ndim != first.ndim or others != [
            (d, n) for d, n in enumerate(first.shape) if d != axis
        ]:
            raise builder.error(
                f"{what} along axis {axis}: tile {k} has shape {list(tile.shape)}, tile 0 "
                f"{list(first.shape)}; they must agree in every other dimension"
            )
    if len(tiles) == 1:
        return first
    shape = list(first.shape)
    shape[axis] = builtins.sum(tile.shape[axis] for tile in tiles)  # `sum` is tl.sum here
    result = TileType(first.dtype, tuple(shape))
    return emit_result(ir.Concat, first.var.name, result, tuple(t.var for t in tiles), axis)


def broadcast(x, shape) -> Tile:
    return broadcast_to(require_tile(x, "the argument of tl.broadcast"), static_shape(shape))


def view(x, dtype, shape=None, layout=None) -> Tile | Scalar:
    """Reinterprets the bits of a tile: row by row (the last dimension scales by the
    bit-width ratio), or, with `layout`, each thread's registers as a tile of `shape` in
    `layout` (the tile must have a layout: a `tl.load(..., layout=...)` gives one). A
    runtime scalar or a rank-0 tile is one element: it views as a dtype of its width and
    stays a scalar or a rank-0 tile (`tl.view(seed, tl.u32)` for unsigned hashing)."""
    if isinstance(x, Scalar) or (isinstance(x, Tile) and x.ndim == 0 and layout is None):
        return _view_element(x, as_dtype(dtype), shape)
    return view_tile(require_tile(x, "the argument of view"), dtype, shape, layout)


def _view_element(x: Scalar | Tile, target: DType, shape: object) -> Scalar | Tile:
    """One element's bits as `target`, through the row view of a one-element row."""
    what = "scalar" if isinstance(x, Scalar) else "rank-0 tile"
    if x.dtype.bits != target.bits or (shape is not None and static_shape(shape) != ()):
        raise current().error(
            f"cannot view a {x.dtype} {what} as {target}"
            f"{'' if shape is None else list(static_shape(shape))}: one element views as one "
            f"element of a dtype of its width ({x.dtype.bits} bits, e.g. "
            f"tl.{'u' if x.dtype.is_float or x.dtype.signed else 'i'}{x.dtype.bits})"
        )
    row = full([1], x, x.dtype) if isinstance(x, Scalar) else reshape_tile(x, [1])
    element = reshape_tile(view_tile(row, target), [])
    return tile_item(element) if isinstance(x, Scalar) else element


def print_(label, value) -> None:
    builder = current()
    if not isinstance(label, str):
        raise builder.error("tl.print takes a string label first: tl.print('acc', acc)")
    if is_python_number(value):
        value = as_scalar(value)
    if not isinstance(value, (Tile, Scalar)):
        raise builder.error(f"tl.print prints a tile or scalar, got {describe(value)}")
    ir_val = value.var if isinstance(value, Tile) else value.value
    builder.emit(ir.Print(label, ir_val, loc=builder.loc))
