"""Instructions that move tiles: global loads, stores and atomic updates (add, max, min;
masked at the tensor's edges, and by a mask tile where one is given), gathers, scatters
and scattered atomic updates along one axis, shared tiles, asynchronous copies into them, and
barriers; the block's `arrive` at a global counter; and `lookup`, a small on-chip
table indexed by a tile of codes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tilelang import dtypes
from tilelang.ir.checks import Checker, is_tile, shape_text
from tilelang.ir.core import NOWHERE, Const, Instr, Loc, Value, Var
from tilelang.ir.text import describe, print_type
from tilelang.ir.thread import ATOMIC_ADD_DTYPES, ATOMIC_DTYPES
from tilelang.ir.types import SharedType


@dataclass(frozen=True)
class Load(Instr):
    """Reads the box of the result's shape at `offsets` of a global tensor. Elements
    outside the tensor, and elements where `mask` (a u1 tile of the result's shape;
    absent: everywhere) fails, read `fill` (zero when absent): no access is made."""

    result: Var
    tensor: Var
    offsets: tuple[Value, ...]
    fill: Const | None = None
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "fill", "mask")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "load {tensor}[{offsets}]< fill({fill})>< mask({mask:value})>"
    LAYOUT: ClassVar = "load"

    def check(self, v: Checker) -> None:
        tensor = v.tensor_param(self.tensor)
        v.offsets(tensor, self.offsets)
        result = v.result_tile(self.result)
        v.expect(
            result.rank == tensor.rank,
            f"expected a result of rank {tensor.rank} (the tensor's), found {print_type(result)}",
        )
        v.same_dtype(result.dtype, tensor.dtype, "a result")
        _check_fill(v, self.fill, tensor.dtype)
        _check_mask(v, self.mask, result.shape, "loaded")


@dataclass(frozen=True)
class LoadScalar(Instr):
    """Reads one element, at `offsets`, of a global tensor as a block-uniform scalar.

    An element outside the tensor reads `fill` (zero when absent): no access is made,
    as for a tile `load`.
    """

    result: Var
    tensor: Var
    offsets: tuple[Value, ...]
    fill: Const | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "fill")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "load_scalar {tensor}[{offsets}]< fill({fill})>"
    LAYOUT: ClassVar = "none"

    def check(self, v: Checker) -> None:
        tensor = v.tensor_param(self.tensor)
        v.offsets(tensor, self.offsets)
        result = v.scalar(self.result, "the result")
        v.same_dtype(result.dtype, tensor.dtype, "a result")
        _check_fill(v, self.fill, tensor.dtype)


@dataclass(frozen=True)
class Gather(Instr):
    """Reads a tile whose coordinates along `axis` come from a tile of indices: element
    e of the result is ``tensor[o_0 + e_0, ..., offsets[axis] + index[e], ..., o_n + e_n]``
    (the other dimensions are a box at `offsets`, as `load`'s). `index` is an integer
    tile of the result's rank whose dims are the result's or 1 (broadcast: a table of
    row numbers is ``[R, 1]``). Elements outside the tensor, and elements where `mask`
    (a u1 tile of the result's shape; absent: everywhere) fails, read `fill` (zero when
    absent): no access is made."""

    result: Var
    tensor: Var
    offsets: tuple[Value, ...]
    index: Var
    axis: int
    fill: Const | None = None
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "index", "fill", "mask")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = (
        "gather {tensor}[{offsets}], {index}, axis={axis}< fill({fill})>< mask({mask:value})>"
    )
    LAYOUT: ClassVar = "gather"

    def check(self, v: Checker) -> None:
        tensor = v.tensor_param(self.tensor)
        v.offsets(tensor, self.offsets)
        result = v.result_tile(self.result)
        v.expect(
            result.rank == tensor.rank,
            f"expected a result of rank {tensor.rank} (the tensor's), found {print_type(result)}",
        )
        v.same_dtype(result.dtype, tensor.dtype, "a result")
        v.axis(self.axis, tensor.rank)
        _check_index(v, v.tile(self.index, "the index"), result.shape)
        _check_fill(v, self.fill, tensor.dtype)
        _check_mask(v, self.mask, result.shape, "loaded")


@dataclass(frozen=True)
class Scatter(Instr):
    """Writes `value` where a `gather` of its shape would read: element e goes to
    ``tensor[o_0 + e_0, ..., offsets[axis] + index[e], ..., o_n + e_n]``; elements whose
    coordinates lie outside the tensor, and elements where `mask` (a u1 tile of the
    value's shape; absent: everywhere) fails, are skipped (never accessed). Two elements
    sent to one place: one of them is written, which one is unspecified (the
    interpreter: the last in row-major order)."""

    tensor: Var
    offsets: tuple[Value, ...]
    index: Var
    axis: int
    value: Var
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "index", "value", "mask")
    WRITES: ClassVar = ("tensor",)
    SYNTAX: ClassVar = (
        "scatter {tensor}[{offsets}], {index}, axis={axis}, {value}< mask({mask:value})>"
    )
    LAYOUT: ClassVar = "scatter"

    def check(self, v: Checker) -> None:
        tensor, value = _check_stored(v, self.tensor, self.offsets, self.value)
        v.axis(self.axis, tensor.rank)
        _check_index(v, v.tile(self.index, "the index"), value.shape)
        _check_mask(v, self.mask, value.shape, "stored")


@dataclass(frozen=True)
class ScatterAtomic(Instr):
    """Combines `value` by `op` where a `gather` of its shape would read: ``tensor[c(e)]
    += value[e]`` (add; max, min, xchg, cas and the optional `result`, the old values,
    as `atomic`'s), atomically, for every element e whose coordinates c(e) (those of
    `scatter`) lie inside the tensor and where `mask` (a u1 tile of the value's shape;
    absent: everywhere) holds. Elements sent to one place all combine (a histogram).

    Additions: integers wrap; each float addition rounds once in the tensor's dtype, so a float
    result depends on the order of the additions: the interpreter adds the elements of
    one instruction in row-major order, blocks in grid order, the compiled backends in
    whatever order their threads run. A max or min does not depend on the order.

    Elements sent to one place see each other's updates, one after the other (the
    interpreter: in row-major order), so their old values differ (a slot each)."""

    tensor: Var
    offsets: tuple[Value, ...]
    index: Var
    axis: int
    value: Var
    mask: Var | None = None
    op: str = "add"
    result: Var | None = None
    expected: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "index", "value", "expected", "mask")
    RESULTS: ClassVar = ("result",)
    WRITES: ClassVar = ("tensor",)
    SYNTAX: ClassVar = (
        "scatter_atomic {op:name} {tensor}[{offsets}], {index}, axis={axis}, {value}"
        "< expected({expected:value})>< mask({mask:value})>"
    )
    LAYOUT: ClassVar = "scatter_atomic"

    def check(self, v: Checker) -> None:
        tensor, value = _check_added(v, self, self.offsets, self.value)
        v.axis(self.axis, tensor.rank)
        _check_index(v, v.tile(self.index, "the index"), value.shape)
        _check_mask(v, self.mask, value.shape, "added")


@dataclass(frozen=True)
class Lookup(Instr):
    """Indexes a small on-chip table by a tile of indices: element e of the result is
    ``table[index[e]]`` (a codebook's value per code). `table` is a rank-1 register tile
    or `tl.shared` tile of N entries of a dtype of 8 bits or more; `index` an integer tile
    of any shape, whose shape (and layout) the result takes, with the table's dtype. An
    index outside ``0 <= i < N`` reads zero (no access is made), on every backend.

    The compiled code reads one shared-memory element per result element (a register
    table is first written to the scratch area, once per straight-line stretch of code
    that indexes it; a shared table is read where it is), except for a register table
    of at most 16 entries of 16 bits that every thread holds whole, indexed by codes of
    at most 4 bits: those select their entries with byte permutes, in registers
    (`lowering.register_lookup`)."""

    result: Var
    table: Var
    index: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("table", "index")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "lookup {table}, {index}"
    LAYOUT: ClassVar = "lookup"

    def check(self, v: Checker) -> None:
        table = self.table.type if isinstance(self.table, Var) else None
        v.expect(
            isinstance(table, SharedType) or is_tile(self.table),
            f"expected the table to be a register or shared tile, found {describe(self.table)}",
        )
        v.expect(
            len(table.shape) == 1 and table.dtype.bits % 8 == 0,
            f"expected a table of rank 1 and a dtype of whole bytes, found {print_type(table)}",
        )
        index = v.tile(self.index, "the index")
        v.expect(index.dtype.is_int, f"expected an integer index tile, found {print_type(index)}")
        result = v.result_tile(self.result)
        v.expect(
            tuple(result.shape) == tuple(index.shape),
            f"expected a result of the index's shape {shape_text(index.shape)}, found "
            f"{print_type(result)}",
        )
        v.same_dtype(result.dtype, table.dtype, "a result")


def _check_stored(v: Checker, tensor: Var, offsets: tuple[Value, ...], value: Var, what="stored"):
    """The checks of a store (`what`: "stored") or an addition ("added") into `tensor` at
    `offsets`; returns (tensor type, value type)."""
    tensor_type = v.tensor_param(tensor)
    v.offsets(tensor_type, offsets)
    value_type = v.tile(value, f"the {what} value")
    article = "an" if what[0] in "aeiou" else "a"
    v.expect(
        value_type.rank == tensor_type.rank,
        f"expected {article} {what} tile of rank {tensor_type.rank} (the tensor's), found "
        f"{print_type(value_type)}",
    )
    v.same_dtype(value_type.dtype, tensor_type.dtype, f"{article} {what} tile")
    return tensor_type, value_type


#: What an atomic update (`Atomic`, `ScatterAtomic`) combines an element with.
ATOMIC_OPS = tuple(ATOMIC_DTYPES)


def _check_added(v: Checker, instr, offsets: tuple[Value, ...], value: Var):
    """`_check_stored` of an atomic update (`Atomic`, `ScatterAtomic`), whose tensor
    must hold a type the hardware updates atomically by its op; its `expected` (op cas
    only) and `result` (optional) are tiles of the value's shape and dtype."""
    op = instr.op
    v.expect(op in ATOMIC_OPS, f"expected an atomic op of {', '.join(ATOMIC_OPS)}, found {op!r}")
    tensor_type = v.tensor_param(instr.tensor)
    allowed = ATOMIC_DTYPES[op]
    v.expect(
        tensor_type.dtype in allowed,
        f"expected a tensor of {', '.join(map(str, allowed))} (atomic {op} works on whole "
        f"{'32- and 64' if op in ('xchg', 'cas') else '16-, 32- and 64'}-bit elements), "
        f"found a tensor of {tensor_type.dtype}",
    )
    tensor_type, value_type = _check_stored(v, instr.tensor, offsets, value, "added")
    v.expect(
        (op == "cas") == (instr.expected is not None),
        "expected an `expected` tile with op cas and only there",
    )
    shaped = f"{value_type.dtype} {shape_text(value_type.shape)} (the value's)"
    for what, tile in (("expected tile", instr.expected), ("result", instr.result)):
        if tile is None:
            continue
        if not isinstance(tile, Var):  # several results parsed into an optional one
            raise v.fail(f"expected at most one result, found {len(tile)}")
        found = v.tile(tile, f"the {what}")
        v.expect(
            found.dtype == value_type.dtype and tuple(found.shape) == tuple(value_type.shape),
            f"expected an {what} of {shaped}, found {print_type(found)}",
        )
    return tensor_type, value_type


def _check_mask(v: Checker, mask: Var | None, shape: tuple[int, ...], what: str) -> None:
    if mask is not None:
        mask_type = v.tile(mask, "the mask")
        v.expect(
            mask_type.dtype == dtypes.u1 and tuple(mask_type.shape) == tuple(shape),
            f"expected a mask of u1 {shape_text(shape)} (the {what} tile's shape), "
            f"found {print_type(mask_type)}",
        )


def _check_index(v: Checker, index, shape: tuple[int, ...]) -> None:
    fits = index.rank == len(shape) and all(
        i in (1, r) for i, r in zip(index.shape, shape, strict=True)
    )
    v.expect(
        fits and index.dtype.is_int,
        f"expected an integer index tile whose dims are the tile's {shape_text(shape)} "
        f"or 1, found {print_type(index)}",
    )


def _check_fill(v: Checker, fill: Const | None, dtype: dtypes.DType) -> None:
    if fill is not None:
        v.expect(isinstance(fill, Const), f"expected a constant fill value, found {describe(fill)}")
        v.same_dtype(fill.dtype, dtype, "a fill value")


@dataclass(frozen=True)
class Store(Instr):
    """Writes `value` into the box at `offsets`; elements outside the tensor, and
    elements where `mask` (a u1 tile of the value's shape; absent: everywhere) fails,
    are skipped: never accessed, so a packed code that shares its byte with a skipped
    one leaves that one's bits as they are."""

    tensor: Var
    offsets: tuple[Value, ...]
    value: Var
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "value", "mask")
    WRITES: ClassVar = ("tensor",)
    SYNTAX: ClassVar = "store {tensor}[{offsets}], {value}< mask({mask:value})>"
    LAYOUT: ClassVar = "store"

    def check(self, v: Checker) -> None:
        _, value = _check_stored(v, self.tensor, self.offsets, self.value)
        _check_mask(v, self.mask, value.shape, "stored")


@dataclass(frozen=True)
class Arrive(Instr):
    """Counts the block's arrival at the i32 element `offsets` of a global tensor: once
    per block, after every global access the block made before it, adds 1 to the
    element (wrapping) and gives every thread the value it had before. The blocks that
    arrived earlier at the same element made their accesses before theirs; those are
    done before this block's accesses after it. The last of n blocks to arrive at a
    zeroed counter reads n - 1 and sees what the others stored before arriving (the
    deterministic split-K of `tilelang.quant`: the last slice adds all the slices'
    products in order).

    An element outside the tensor is not accessed, and the result is -1.
    """

    result: Var
    tensor: Var
    offsets: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets")
    RESULTS: ClassVar = ("result",)
    WRITES: ClassVar = ("tensor",)
    SYNTAX: ClassVar = "arrive {tensor}[{offsets}]"
    LAYOUT: ClassVar = "none"

    def check(self, v: Checker) -> None:
        tensor = v.tensor_param(self.tensor)
        v.offsets(tensor, self.offsets)
        v.expect(
            tensor.dtype == dtypes.i32,
            f"expected a tensor of i32 (the counters), found a tensor of {tensor.dtype}",
        )
        result = v.scalar(self.result, "the result")
        v.same_dtype(result.dtype, dtypes.i32, "a result")


@dataclass(frozen=True)
class Atomic(Instr):
    """Combines `value` into the box at `offsets` by `op`, atomically: ``tensor[e] +=
    value[e]`` (add), ``tensor[e] = max(tensor[e], value[e])`` (max; min likewise),
    ``tensor[e] = value[e]`` (xchg; cas: where ``tensor[e] == expected[e]``), for every
    element e inside the tensor where `mask` (a u1 tile of the value's shape; absent:
    everywhere) holds. Elements outside the tensor are skipped. The optional `result`
    gets each element's value before its own update (0 where none was made).

    Additions: integers wrap. Each float addition rounds once, in the tensor's dtype, so a float
    result depends on the order of the additions: the interpreter adds blocks in grid
    order, the compiled backends in whatever order their blocks run.

    `op` "max" ("min") replaces the element by the larger (smaller) of it and
    ``value[e]`` instead, exactly as the elementwise `max`/`min` compare (floats: a NaN
    is ignored, -0 < +0, a max of two NaNs is NaN), so the result does not depend on the
    order. "xchg" replaces it by ``value[e]``; "cas" (integers) does so only where it
    equals ``expected[e]``. One class for them all: they access, vectorize and lower
    alike.

    With a `result` (a tile of the value's shape and dtype, its layout the value's),
    element e of the result is what ``tensor[e]`` held just before its own update (a
    fetch-add claims slots, a cas tells who won); elements not updated (outside the
    tensor, masked off) give 0. Without one, nothing comes back: a GPU issues
    fire-and-forget reductions (``red``) rather than ``atom``.
    """

    tensor: Var
    offsets: tuple[Value, ...]
    value: Var
    mask: Var | None = None
    op: str = "add"
    result: Var | None = None
    expected: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "value", "expected", "mask")
    RESULTS: ClassVar = ("result",)
    WRITES: ClassVar = ("tensor",)
    SYNTAX: ClassVar = (
        "atomic {op:name} {tensor}[{offsets}], {value}< expected({expected:value})>"
        "< mask({mask:value})>"
    )
    LAYOUT: ClassVar = "atomic"

    def check(self, v: Checker) -> None:
        _, value = _check_added(v, self, self.offsets, self.value)
        _check_mask(v, self.mask, value.shape, "added")


@dataclass(frozen=True)
class CopyAsync(Instr):
    """Starts a copy of the box at `offsets` of a global tensor into a shared tile.
    Where `mask` (a u1 tile of the shared tile's shape; absent: everywhere) fails, the
    element becomes zero and is not read; each thread then copies the elements its
    mask's layout gives it (`software_pipeline` copies a masked load so)."""

    shared: Var
    tensor: Var
    offsets: tuple[Value, ...]
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "tensor", "offsets", "mask")
    SYNTAX: ClassVar = "copy_async {tensor}[{offsets}] -> {shared}< mask({mask:value})>"

    def check(self, v: Checker) -> None:
        shared, _ = _check_async_copy(v, self.shared, self.tensor, self.offsets)
        _check_mask(v, self.mask, tuple(shared.shape), "copied")


def _check_async_copy(v: Checker, shared_var: Var, tensor_var: Var, offsets: tuple[Value, ...]):
    """The rules a copy from a global tensor into a shared tile obeys: offsets into the
    tensor, a shared tile of its rank and dtype. Returns (shared type, tensor type)."""
    shared = v.shared(shared_var)
    tensor = v.tensor_param(tensor_var)
    v.offsets(tensor, offsets)
    v.expect(
        len(shared.shape) == tensor.rank,
        f"expected a shared tile of rank {tensor.rank} (the tensor's), found {print_type(shared)}",
    )
    v.same_dtype(shared.dtype, tensor.dtype, "a shared tile")
    return shared, tensor


@dataclass(frozen=True)
class GatherAsync(Instr):
    """Starts a copy of what a `gather` of the shared tile's shape would read (rows from
    `index` along `axis`, zeros outside the tensor) into a shared tile: the pipelined
    form of a gather. Each thread copies the elements a blocked layout of the shared
    tile's shape gives it (`tilelang.analysis.gather_copies`), so `index` must be in
    that layout reduced over its size-1 dims (`software_pipeline` makes it so). With a
    `mask` (as a `copy_async`'s: zeros, not read, where it fails) the threads copy the
    elements of the mask's layout instead, and the index is in that one reduced."""

    shared: Var
    tensor: Var
    offsets: tuple[Value, ...]
    index: Var
    axis: int
    mask: Var | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "tensor", "offsets", "index", "mask")
    SYNTAX: ClassVar = (
        "gather_async {tensor}[{offsets}], {index}, axis={axis} -> {shared}< mask({mask:value})>"
    )

    def check(self, v: Checker) -> None:
        shared, tensor = _check_async_copy(v, self.shared, self.tensor, self.offsets)
        v.axis(self.axis, tensor.rank)
        _check_index(v, v.tile(self.index, "the index"), tuple(shared.shape))
        _check_mask(v, self.mask, tuple(shared.shape), "copied")


@dataclass(frozen=True)
class AsyncCommit(Instr):
    """Closes the current group of asynchronous copies."""

    loc: Loc = field(default=NOWHERE, kw_only=True)
    SYNTAX: ClassVar = "async_commit"


@dataclass(frozen=True)
class AsyncWait(Instr):
    """Waits until at most `pending` groups of asynchronous copies are in flight."""

    pending: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    SYNTAX: ClassVar = "async_wait {pending}"

    def check(self, v: Checker) -> None:
        ok = isinstance(self.pending, int) and self.pending >= 0
        v.expect(ok, f"expected a count of pending groups >= 0, found {self.pending!r}")


@dataclass(frozen=True)
class SharedAlloc(Instr):
    """A shared tile of the result's type (its bytes start as zeros in the interpreter;
    compiled code leaves them undefined until stored)."""

    result: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "shared_alloc"

    def check(self, v: Checker) -> None:
        ok = isinstance(self.result.type, SharedType)
        v.expect(ok, f"expected a shared tile result, found {print_type(self.result.type)}")


@dataclass(frozen=True)
class SharedSlice(Instr):
    """Sub-tile `index` (a runtime scalar) along the leading dim of a shared tile: the
    same memory, one rank less (the buffers of a multi-stage pipeline)."""

    result: Var
    shared: Var
    index: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "index")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "shared_slice {shared}[{index}]"

    def check(self, v: Checker) -> None:
        whole = v.shared(self.shared)
        v.int_scalar(self.index, "the index")
        result = self.result.type
        ok = (
            isinstance(result, SharedType)
            and result.dtype == whole.dtype
            and tuple(result.shape) == tuple(whole.shape[1:])
        )
        v.expect(ok, f"expected a result of shape {list(whole.shape[1:])} and dtype {whole.dtype}")


@dataclass(frozen=True)
class SharedTranspose(Instr):
    """The shared tile's memory with dimension `perm[i]` as dimension i: a view (nothing
    moves; a shared_load of a transposed view reads a transposed operand, ldmatrix
    where its layout allows)."""

    result: Var
    shared: Var
    perm: tuple[int, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "shared_transpose {shared}, perm=[{perm}]"

    def check(self, v: Checker) -> None:
        whole = v.shared(self.shared)
        perm = tuple(self.perm)
        v.expect(
            sorted(perm) == list(range(len(whole.shape))),
            f"expected a permutation of 0..{len(whole.shape) - 1}, found {list(perm)}",
        )
        result = self.result.type
        shape = tuple(whole.shape[p] for p in perm)
        ok = (
            isinstance(result, SharedType)
            and result.dtype == whole.dtype
            and tuple(result.shape) == shape
        )
        v.expect(ok, f"expected a result of shape {list(shape)} and dtype {whole.dtype}")
        if ok and result.layout is not None and whole.layout is not None:
            v.expect(
                result.layout == whole.layout.permute(perm),
                f"expected the layout {whole.layout.permute(perm)}, found {result.layout}",
            )


@dataclass(frozen=True)
class SharedLoad(Instr):
    """The shared tile's elements as a register tile."""

    result: Var
    shared: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "shared_load {shared}"
    LAYOUT: ClassVar = "source.memory"

    def check(self, v: Checker) -> None:
        v.same_tile(v.result_tile(self.result), v.shared(self.shared), "a result")


@dataclass(frozen=True)
class SharedStore(Instr):
    """Writes a register tile into a shared tile of its dtype and shape."""

    shared: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "value")
    SYNTAX: ClassVar = "shared_store {shared}, {value}"

    def check(self, v: Checker) -> None:
        shared = v.shared(self.shared)
        v.same_tile(v.tile(self.value, "the stored value"), shared, "a stored tile")


@dataclass(frozen=True)
class Sync(Instr):
    """A barrier across the block's threads."""

    loc: Loc = field(default=NOWHERE, kw_only=True)
    SYNTAX: ClassVar = "sync"


__all__ = [
    "ATOMIC_ADD_DTYPES",
    "ATOMIC_DTYPES",
    "ATOMIC_OPS",
    "Arrive",
    "AsyncCommit",
    "AsyncWait",
    "Atomic",
    "CopyAsync",
    "Gather",
    "GatherAsync",
    "Load",
    "LoadScalar",
    "Lookup",
    "Scatter",
    "ScatterAtomic",
    "SharedAlloc",
    "SharedLoad",
    "SharedSlice",
    "SharedStore",
    "SharedTranspose",
    "Store",
    "Sync",
]
