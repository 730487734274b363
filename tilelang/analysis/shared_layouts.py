"""Shared tiles in bytes: their default layouts and the bytes they occupy.

A shared tile without a layout gets `default_layout`: row-major, with the standard XOR
swizzle (`Swizzle.for_bytes`) when it has more than one row and its rows are a multiple
of 128 bytes (or exactly 64 or 32 bytes: the 64/32-byte swizzle), so that ldmatrix and
cp.async touch all 32 banks (a single row has no rows to keep apart, and unswizzled its
addresses stay affine: a thread's accesses share one base register).
Swizzles need a power-of-two element size and a rank of at least 2; they keep every
16-byte chunk of a row contiguous (vectorize relies on it). `plan_shared` places the
tiles (offsets recorded as attributes), `vectorize` reads their layouts, the lowering
puts its scratch area after `total_bytes`.

On the warpgroup mma's targets (`Target.has_wgmma`) the pipeline's buffers cut rows
wider than 128 bytes into 128-byte panels (`panel_layout`), and `plan_shared` starts
each swizzled tile on a whole swizzle period (`alignment`): the hardware reads them
through descriptors that only describe such layouts.

The buffers of a software pipeline (`staged_layout`) stack S copies of one tile's
default layout along a new leading dim, each copy starting 16-byte aligned and on a
whole swizzle period, so that `shared_slice` of one stage is the tile's default layout.

A tile of a sub-byte dtype (u4, u3, f4e2m1, ...) is a byte array of packed codes: the
element at offset o holds bits [o·b, (o+1)·b), little-endian, as in a packed tensor.
"""

from __future__ import annotations

import math

from tilelang.dtypes import DType
from tilelang.ir.nodes import Function, SharedAlloc
from tilelang.ir.shared_layout import Mode, SharedLayout, Swizzle, row_major
from tilelang.ir.types import SharedType
from tilelang.ir.visit import walk

#: Every tile starts at a multiple of this many bytes (a 16-byte vector access).
ALIGN = 16


def default_layout(dtype: DType, shape: tuple[int, ...], panels: bool = False) -> SharedLayout:
    """Row-major, swizzled when the rows allow it (see the module docstring); with
    `panels`, rows of more than 128 bytes in 128-byte panels (`panel_layout`)."""
    width = swizzle_width(dtype, shape)
    if panels and width == 128 and shape[-1] * dtype.bits > 128 * 8:
        return panel_layout(dtype, shape)
    layout = row_major(*shape)
    return layout if width is None else layout.swizzled(Swizzle.for_bytes(width, dtype.bits))


def panel_layout(dtype: DType, shape: tuple[int, ...]) -> SharedLayout:
    """The tile cut along its last dim into 128-byte-wide panels, each row-major with
    the 128-byte swizzle, the panels one after another: the layout whose every 8 rows of
    a panel are one 1024-byte swizzle atom of the warpgroup mma (`lowering.wgmma`).

    ``[64, 128]`` f16 is ``shared(64:64, (2, 64):(4096, 1)) ^ swizzle(3, 3, 6)``."""
    width = 128 * 8 // dtype.bits  # elements of a panel's row
    rows = math.prod(shape[:-1])
    leading = [math.prod(shape[d + 1 : -1]) * width for d in range(len(shape) - 1)]
    dims = [(Mode(size, stride),) for size, stride in zip(shape[:-1], leading, strict=True)]
    last = (Mode(shape[-1] // width, rows * width), Mode(width, 1))
    return SharedLayout((*dims, last), Swizzle.for_bytes(128, dtype.bits))


def staged_layout(
    dtype: DType, shape: tuple[int, ...], stages: int, panels: bool = False
) -> SharedLayout:
    """`stages` copies of `default_layout(dtype, shape, panels)` along a new leading dim.

    Each copy starts at a multiple of 16 bytes and of the swizzle's period (the XOR
    then never mixes stages), so a slice at any stage has exactly the default layout.
    """
    one = default_layout(dtype, shape, panels)
    period = one.swizzle.period if one.swizzle is not None else 1
    unit = math.lcm(period, (ALIGN * 8) // math.gcd(ALIGN * 8, dtype.bits))
    stride = round_up(one.size, unit)
    return SharedLayout(((Mode(stages, stride),), *one.dims), one.swizzle)


def swizzle_width(dtype: DType, shape: tuple[int, ...]) -> int | None:
    """The byte swizzle (128, 64 or 32) for row-major rows of `shape`, or None."""
    bits = dtype.bits
    if math.prod(shape[:-1]) <= 1 or bits & (bits - 1) or bits > 128:
        return None  # one row: no two rows to keep apart in the banks
    row_bits = shape[-1] * bits
    if row_bits % 8:
        return None
    row = row_bits // 8
    if row % 128 == 0:
        return 128
    return row if row in (32, 64) else None


def alignment(type_: SharedType, wgmma: bool) -> int:
    """The byte alignment of a tile's start: `ALIGN`, or on a target with the warpgroup
    mma (`wgmma`, whose hardware swizzles address bits) a whole swizzle period."""
    layout = type_.layout or default_layout(type_.dtype, type_.shape)
    if not wgmma or layout.swizzle is None:
        return ALIGN
    return max(ALIGN, layout.swizzle.period * type_.dtype.bits // 8)


def tile_bytes(type_: SharedType) -> int:
    """Bytes a shared tile occupies: its layout's extent, packed, rounded up to `ALIGN`."""
    layout = type_.layout or default_layout(type_.dtype, type_.shape)
    return round_up(math.ceil(layout.size * type_.dtype.bits / 8), ALIGN)


def total_bytes(fn: Function) -> int:
    """The shared buffer `run` planned: the end of the last placed tile (0 if none)."""
    return max(
        (
            int(instr.attr("offset", 0)) + int(instr.attr("bytes", 0))
            for instr in walk(fn)
            if isinstance(instr, SharedAlloc)
        ),
        default=0,
    )


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
