"""Shared tiles in bytes: their default layouts and the bytes they occupy.

A shared tile without a layout gets `default_layout`: row-major, with the XOR swizzle
(`Swizzle.for_bytes`, its source bits moved up to the row index for rows of an even
multiple of 128 bytes: `row_swizzle`) when it has more than one row and its rows are a
multiple of 128 bytes (or exactly 64 or 32 bytes: the 64/32-byte swizzle), so that
ldmatrix and cp.async touch all 32 banks (a single row has no rows to keep apart, and unswizzled its
addresses stay affine: a thread's accesses share one base register).
Swizzles need a power-of-two element size and a rank of at least 2; they keep every
16-byte chunk of a row contiguous (vectorize relies on it). `plan_shared` places the
tiles (offsets recorded as attributes), `vectorize` reads their layouts, the lowering
puts its scratch area after `total_bytes`.

On the warpgroup mma's targets (`Target.has_wgmma`) the pipeline's buffers cut rows
wider than 128 bytes into 128-byte panels (`panel_layout`), and `plan_shared` starts
each swizzled tile on a whole swizzle period (`alignment`): the hardware reads them
through descriptors that only describe such layouts.

A tile that the kernel only stores to and loads from as register tiles (`shared_store`,
`shared_load`, none of whose results a dot reads or ldmatrix could read) gets
`access_layout` instead (`access_layouts` finds them): among the swizzles a row-major
tile can use (each 16-byte chunk kept whole; the standard one, none, and XORs of higher
offset bits into the chunk index) the one whose accesses, as the lowering makes them
(`tilelang.ir.shared_access`), take the fewest wavefronts over every warp, ties to the standard. A
transposed store of a [64, 64] f32 tile, 32 scalar stores a warp hitting one 16-byte
column of banks, takes 512 wavefronts a warp with the standard swizzle, 64 with
``swizzle(3, 2, 8)``. Such a tile is never read through a descriptor, so it needs no
whole-period alignment (`alignment`).

The buffers of a software pipeline (`staged_layout`) stack S copies of one tile's
default layout along a new leading dim, each copy starting 16-byte aligned and on a
whole swizzle period, so that `shared_slice` of one stage is the tile's default layout.

A tile of a sub-byte dtype (u4, u3, f4e2m1, ...) is a byte array of packed codes: the
element at offset o holds bits [o·b, (o+1)·b), little-endian, as in a packed tensor.
"""

from __future__ import annotations

import functools
import math

from tilelang.dtypes import DType
from tilelang.ir import shared_access
from tilelang.ir.atoms import LDMATRIX_CANDIDATES
from tilelang.ir.layout import Layout
from tilelang.ir.nodes import Dot, Function, SharedAlloc, SharedLoad, SharedStore, Var
from tilelang.ir.shared_layout import Mode, SharedLayout, Swizzle, row_major
from tilelang.ir.types import SharedType, TileType
from tilelang.ir.visit import defs_and_uses, walk

#: Every tile starts at a multiple of this many bytes (a 16-byte vector access).
ALIGN = 16


def default_layout(dtype: DType, shape: tuple[int, ...], panels: bool = False) -> SharedLayout:
    """Row-major, swizzled when the rows allow it (see the module docstring); with
    `panels`, rows of more than 128 bytes in 128-byte panels (`panel_layout`)."""
    width = swizzle_width(dtype, shape)
    if panels and width == 128 and shape[-1] * dtype.bits > 128 * 8:
        return panel_layout(dtype, shape)
    layout = row_major(*shape)
    return layout if width is None else layout.swizzled(row_swizzle(width, dtype, shape))


def row_swizzle(width: int, dtype: DType, shape: tuple[int, ...]) -> Swizzle:
    """The byte swizzle of `width` for rows of `shape`, its source bits moved up to the
    row index where rows are an even multiple of 128 bytes: the standard 128-byte
    pattern XORs address bits 7-9 into the chunk index, which for 256-byte rows are a
    column bit and two row bits, so rows r and r + 4 of an ldmatrix phase (8 rows, one
    16-byte column) share banks; XOR-ing the 3 bits above the row's largest power-of-two
    factor of 128 bytes keeps any 8 consecutive rows apart (odd multiples already are)."""
    standard = Swizzle.for_bytes(width, dtype.bits)
    row = shape[-1] * dtype.bits // 8
    if width != 128 or row % 256:
        return standard
    factor = (row // 128) & -(row // 128)  # the largest power of two dividing row / 128
    return Swizzle(standard.bits, standard.base, standard.shift + factor.bit_length() - 1)


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
    mma (`wgmma`, whose hardware swizzles address bits) a whole swizzle period — for
    the standard byte swizzles only, the ones a descriptor describes (`access_layout`'s
    others are the threads' own XOR, correct at any 16-byte start)."""
    layout = type_.layout or default_layout(type_.dtype, type_.shape)
    if not wgmma or layout.swizzle is None or not _standard(layout.swizzle, type_.dtype):
        return ALIGN
    return max(ALIGN, layout.swizzle.period * type_.dtype.bits // 8)


def _standard(swizzle: Swizzle, dtype: DType) -> bool:
    bits = dtype.bits
    if bits & (bits - 1) or bits > 128:
        return False
    return any(swizzle == Swizzle.for_bytes(width, bits) for width in (32, 64, 128))


# -- layouts chosen by the tile's accesses -------------------------------------------------


def access_layouts(fn: Function) -> dict[Var, SharedLayout]:
    """The layout `access_layout` chooses for each shared tile without one that `fn`
    only stores register tiles to and loads register tiles from (module docstring);
    the tiles it does not name get `default_layout`."""
    _, uses = defs_and_uses(fn)
    chosen = {}
    for instr in walk(fn):
        if not isinstance(instr, SharedAlloc):
            continue
        tile = instr.result
        type_ = tile.type
        assert isinstance(type_, SharedType)
        if type_.layout is not None:
            continue
        accesses = _accesses(tile, uses)
        if accesses:
            chosen[tile] = access_layout(type_.dtype, tuple(type_.shape), accesses)
    return chosen


def _accesses(tile: Var, uses: dict[Var, list]) -> tuple[Layout, ...] | None:
    """The register layouts `tile` is stored from and loaded into; None when it has
    any other use (a copy, a loop or branch carrying it, a load a dot reads or one
    ldmatrix could read: those want the standard swizzle)."""
    found = []
    for use in uses.get(tile, []):
        if isinstance(use, SharedStore) and use.shared == tile:
            layout = use.value.type.layout
        elif isinstance(use, SharedLoad):
            layout = use.result.type.layout
            if any(isinstance(u, Dot) for u in uses.get(use.result, [])) or _ldmatrix_like(
                use.result.type
            ):
                return None
        else:
            return None
        if layout is None:
            return None
        found.append(layout)
    return tuple(found) or None


def _ldmatrix_like(type_: TileType) -> bool:
    """Whether the lowering may read this tile with ldmatrix (`relayout.ldmatrix_plan`:
    16-bit, rank 2, a layout made of an ldmatrix atom, or its transpose)."""
    layout = type_.layout
    if type_.dtype.bits != 16 or layout is None or layout.rank != 2:
        return False
    return any(
        candidate.divisible_by(atom.layout)
        for atom in LDMATRIX_CANDIDATES
        for candidate in (layout, layout.permute((1, 0)))
    )


@functools.lru_cache(maxsize=256)
def access_layout(
    dtype: DType, shape: tuple[int, ...], accesses: tuple[Layout, ...]
) -> SharedLayout:
    """Row-major `shape` with the swizzle (or none) whose `accesses` (register layouts
    moved to or from the tile) take the fewest wavefronts (`access_wavefronts`), the
    standard one first among equals; `default_layout` where no other can be used (a
    rank-1 tile, one row, an element size that is not a power of two of 8 to 128 bits)."""
    standard = default_layout(dtype, shape)
    bits = dtype.bits
    if len(shape) < 2 or math.prod(shape[:-1]) <= 1 or bits < 8 or bits & (bits - 1):
        return standard
    best, fewest = standard, access_wavefronts(standard, accesses, bits)
    if fewest == sum(_wavefronts(standard, access, bits)[0] for access in accesses):
        return standard  # conflict-free already
    plain = row_major(*shape)
    for swizzle in (None, *_swizzles(bits, math.prod(shape))):
        layout = plain if swizzle is None else plain.swizzled(swizzle)
        if layout == standard:
            continue
        cost = access_wavefronts(layout, accesses, bits)
        if cost < fewest:
            best, fewest = layout, cost
    return best


def _swizzles(bits: int, elements: int) -> list[Swizzle]:
    """XORs of `b` offset bits from `shift` up into the 16-byte chunk index (`base`:
    whole chunks stay contiguous), each a bijection of the tile's offsets (its elements
    a multiple of the block it permutes) whose source bits lie within them."""
    base = max(0, (ALIGN * 8 // bits).bit_length() - 1)
    found = []
    for b in (1, 2, 3):
        if elements % (1 << (base + b)):
            continue
        found += [Swizzle(b, base, shift) for shift in range(base + b, elements.bit_length() - b)]
    return found


def access_wavefronts(layout: SharedLayout, accesses: tuple[Layout, ...], bits: int) -> int:
    """Wavefronts every warp's accesses take together, each register layout moved as
    the lowering moves it (`tilelang.ir.shared_access.access_wavefronts`, counted as a
    load: every lane; codes moved through byte windows count nothing, as no swizzle
    changes them)."""
    return sum(_wavefronts(layout, access, bits)[1] for access in accesses)


def _wavefronts(shared: SharedLayout, layout: Layout, bits: int) -> tuple[int, int]:
    """(phases, wavefronts) of every warp moving `layout` to or from `shared`."""
    counts = shared_access.access_wavefronts(shared, layout, bits)
    return (0, 0) if counts is None else (int(counts[:, 2].sum()), int(counts[:, 1].sum()))


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
