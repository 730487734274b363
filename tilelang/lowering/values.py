"""How block-IR values live in thread IR, and the pure arithmetic on layouts the lowering
needs (nothing here emits statements).

A register tile of layout L is one local per thread (`TileRegs`), holding the thread's
`L.num_locals` elements in local order. Types of 8, 16, 32 or 64 bits that are register
dtypes are stored as themselves; every other type (sub-byte integers and floats, the f8
types, u1) as packed codes in u32 words: element li at bits [li·b, (li+1)·b) of the
local's bytes, which is exactly how a packed tensor's bytes look, so runs of codes move
between memory and registers as raw bytes. Computation on packed values happens in
their `value_dtype` (i32, u32, f32 or u1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import shared_access
from tilelang.ir import thread as t
from tilelang.ir.layout import Layout
from tilelang.ir.ops import ELEMENTWISE
from tilelang.ir.shared_layout import SharedLayout
from tilelang.lowering.thread_builder import I64, U32, ThreadBuilder, imm

WARP = 32


@dataclass(frozen=True)
class TileRegs:
    """A register tile: the local holding each thread's elements.

    `positions` (packed codes only): where each local's code is stored, in codes from
    the start of the local, when that is not the local order — a relayout that only
    reorders each thread's codes for a cast keeps them in place (`lower_relayout`)."""

    local: str
    dtype: DType
    layout: Layout
    positions: tuple[int, ...] | None = None

    @property
    def packed(self) -> bool:
        return is_packed(self.dtype)


@dataclass(frozen=True)
class ScalarSlot:
    """A one-element local holding a runtime scalar that control flow assigns."""

    local: str
    dtype: DType  # the value dtype

    def read(self) -> t.Expr:
        stored = t.Read(self.local, 0, dtypes.u8 if self.dtype == dtypes.u1 else self.dtype)
        return t.Binary("ne", stored, imm(0, dtypes.u8)) if self.dtype == dtypes.u1 else stored


@dataclass(frozen=True)
class TensorInfo:
    """A global tensor: its parameter, element dtype, sizes (i32) and strides (i64,
    elements; row-major and contiguous)."""

    param: str
    dtype: DType
    sizes: tuple[t.Expr, ...]
    strides: tuple[t.Expr, ...]


@dataclass(frozen=True)
class SharedTile:
    """A user shared tile: its byte offset in the shared buffer and its layout."""

    offset: int | t.Expr  # bytes; an expression for a slice at a runtime index
    dtype: DType
    layout: SharedLayout

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape


# --------------------------------------------------------------------------- storage


def is_packed(dtype: DType) -> bool:
    if id(dtype) in _WORD_DTYPE_IDS:  # by identity first: hashing a DType costs more
        return False
    return dtype not in t.REGISTER_DTYPES or dtype == dtypes.u1


#: The ids of the register dtypes but u1 (alive as long as the module: ids stay theirs).
_WORD_DTYPE_IDS = frozenset(id(dt) for dt in t.REGISTER_DTYPES if dt != dtypes.u1)


def storage_of(dtype: DType, count: int) -> tuple[DType, int]:
    """The local dtype and element count that hold `count` elements of `dtype`."""
    if is_packed(dtype):
        return U32, max(1, math.ceil(count * dtype.bits / 32))
    return dtype, count


def value_dtype(dtype: DType) -> DType:
    """The register dtype computations on `dtype` values happen in."""
    if not is_packed(dtype):
        return dtype
    if dtype == dtypes.u1:
        return dtypes.u1
    if dtype.is_float:
        return dtypes.f32
    return dtypes.i32 if dtype.signed else U32


def element_bytes(dtype: DType) -> int:
    """Bytes of one element in a scratch area (values of packed types widen)."""
    v = value_dtype(dtype)
    return 1 if v == dtypes.u1 else v.bits // 8


def value_dtype_storage(dtype: DType) -> DType:
    """The local dtype that holds one value of `value_dtype(dtype)` (u1 as u8)."""
    v = value_dtype(dtype)
    return dtypes.u8 if v == dtypes.u1 else v


def as_storage(value: t.Expr) -> t.Expr:
    if value.dtype == dtypes.u1:
        return t.Select(value, imm(1, dtypes.u8), imm(0, dtypes.u8))
    return value


def from_storage(value: t.Expr, dtype: DType) -> t.Expr:
    if value_dtype(dtype) == dtypes.u1:
        return t.Binary("ne", value, imm(0, dtypes.u8))
    return value


def encode_exact(dtype: DType, value) -> int:
    """The code of a value of `dtype` (its infinities included, which a cast saturates)."""
    if dtype.is_float and dtype.has_inf and value in (float("inf"), float("-inf")):
        return dtype.inf_code | ((1 << (dtype.bits - 1)) if value < 0 else 0)
    return int(dtype.encode(np.asarray([value]))[0])


def elementwise(op: str, args: list[t.Expr]) -> t.Expr:
    """The thread-IR expression of a block-IR elementwise operator."""
    if op == "where":
        cond, a, b = args
        return t.Select(cond, a, b)
    if op == "fma":
        return t.Fma(*args)
    name = ELEMENTWISE[op].thread_op
    if len(args) == 1:
        return t.Unary(name, args[0])
    return t.Binary(name, args[0], args[1])


# --------------------------------------------------------------------------- layouts


def flat_indices(table: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index of each tile index in `table` ([..., rank]); 0 for rank 0."""
    if not shape:
        return np.zeros(table.shape[:-1], np.int64)
    columns = tuple(table[..., d] for d in range(table.shape[-1]))  # np.moveaxis, faster
    return np.ravel_multi_index(columns, shape)


def dim_strides(layout: Layout) -> dict[int, int]:
    """For each mode id, the index step of one unit of the mode within its dim."""
    strides: dict[int, int] = {}
    mode = 0
    for sizes in layout.mode_shape:
        stride = math.prod(sizes)
        for size in sizes:
            stride //= size
            strides[mode] = stride
            mode += 1
    return strides


def local_part(layout: Layout, li: int) -> tuple[int, ...]:
    """Per dim, the tile index's local component of local `li`."""
    sizes, dims = layout.mode_sizes, layout.mode_dims
    strides = dim_strides(layout)
    parts = [0] * layout.rank
    for mode in reversed(layout.local_modes):
        li, digit = divmod(li, sizes[mode])
        parts[dims[mode]] += digit * strides[mode]
    return tuple(parts)


def run_length(layout: Layout) -> int:
    """How many consecutive locals hold consecutive elements of the last dim."""
    if not layout.local_modes or layout.rank == 0:
        return 1
    inner = layout.local_modes[-1]
    if layout.mode_dims[inner] != layout.rank - 1 or dim_strides(layout)[inner] != 1:
        return 1
    return layout.mode_sizes[inner]


def contiguous_elements(layout: SharedLayout) -> int:
    """How many consecutive elements of the last dim stay adjacent in a shared layout:
    `tilelang.ir.shared_access.contiguous_elements`, the one rule ldmatrix's choice
    and the performance report read too."""
    return shared_access.contiguous_elements(layout)


# --------------------------------------------------------------------------- bytes


def piece_limit(instr, run: int) -> int | None:
    """The widest access a run of `run` elements of `instr` may use, as `vectorize`
    proved it (its ``align`` attribute), for `pieces`; None: no limit but 16 bytes."""
    align = instr.attr("align")
    return align if isinstance(align, int) and run > 1 else None


def pieces(start: int, nbytes: int, align_to: int | None = None) -> list[tuple[int, int]]:
    """Split `nbytes` from `start` into naturally aligned accesses of at most 16 bytes
    (and at most `align_to` bytes when the memory side is only that aligned)."""
    out = []
    at = start
    end = start + nbytes
    limit = 16 if align_to is None else max(1, min(16, align_to))
    while at < end:
        width = limit
        while width > 1 and (at % width or at + width > end):
            width //= 2
        out.append((at - start, width))
        at += width
    return out


def byte_offset(b: ThreadBuilder, flat: t.Expr, bits: int) -> t.Expr:
    """The byte offset (i64) of element `flat` of a tensor of `bits`-bit elements (for a
    sub-byte type: the byte holding the element's first bit)."""
    if bits % 8 == 0:
        return b.mul(flat, imm(bits // 8, I64))
    return t.Binary("shr", b.mul(flat, imm(bits, I64)), imm(3, I64))


def align(value: int, to: int) -> int:
    return -(-value // to) * to
