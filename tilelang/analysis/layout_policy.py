"""Layout policies: the register layouts the compiler chooses when nothing forces one.

- `blocked_layout`: the coalesced default of a tile (16 bytes per thread, threads along
  the last dim first), used for loads, for tiles no rule reached, and by the lowering for
  `copy_async`;
- `dot_layouts`: the mma fragment layouts of a dot, tiled over a grid of warps (defined in
  `tilelang.ir.fragments`, where the kernel language and the weight packing read them too);
- `view_layout`: the layout in which a `view` reinterprets each thread's bits in place;
- `byte_group` / `holds_whole_bytes`: whether packed elements of a sub-byte type stay in
  whole bytes per thread (so that stores never share a byte between threads).

`infer_layouts` decides layouts with these; the lowering and the pipelining pass
recompute the same choices where they need them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tilelang.dtypes import DType
from tilelang.ir.fragments import DotLayouts, dot_layouts
from tilelang.ir.layout import Layout, LayoutDivisionError, local, replicated, spatial

__all__ = [
    "DotLayouts",
    "blocked_layout",
    "byte_group",
    "dot_layouts",
    "holds_whole_bytes",
    "view_layout",
]


def blocked_layout(shape: Sequence[int], dtype: DType, threads: int, *, min_vec: int = 1) -> Layout:
    """The coalesced default layout of a tile of `shape` and `dtype` over `threads`.

    Each thread holds a run of `vec` consecutive elements of the last dim: the largest
    power of two with ``vec * bits <= 128`` dividing ``shape[-1]`` (16 bytes per thread
    when possible, sub-byte types included: 32 u4, 32 u3 = 12 bytes), halved while the
    tile has fewer than ``threads * vec`` elements (spreading over threads comes before
    vectorizing). Threads then go over the remaining last-dim positions, then over
    earlier dims (row-major, so a warp reads consecutive memory), each factor the gcd of
    the threads left and the positions left. Leftover threads become replication (the
    outermost thread digit: threads 0.. cover the tile, the others repeat it); leftover
    elements become outer local modes. `min_vec` forces the run to be a multiple of it
    (`view` needs whole groups of bits per thread). A type whose width is not a whole
    number of bytes (u3, f6, ...) also gets runs of whole bytes (``byte_group`` elements)
    when the row allows, so that stores of packed elements never share a byte between
    threads.

    ``[64, 64] f16, 128 threads -> local(4, 1).spatial(16, 8).local(1, 8)``;
    ``[4] f32 -> replicated(32).spatial(4)``.
    """
    shape = tuple(shape)
    if not shape:
        return replicated(threads, rank=0)
    rank = len(shape)
    whole_bytes = math.lcm(min_vec, byte_group(dtype))
    if shape[-1] % whole_bytes == 0:
        min_vec = whole_bytes
    vec = _vector_width(shape, dtype.bits, threads, min_vec)
    positions = [*shape[:-1], shape[-1] // vec]
    spread = [1] * rank
    left = threads
    for d in reversed(range(rank)):
        spread[d] = math.gcd(left, positions[d])
        left //= spread[d]
    outer = [p // s for p, s in zip(positions, spread, strict=True)]
    inner = [1] * (rank - 1) + [vec]
    layout = replicated(left, rank=rank) * local(*outer) * spatial(*spread) * local(*inner)
    return layout.canonicalize()


def byte_group(dtype: DType) -> int:
    """The fewest consecutive elements of `dtype` that fill whole bytes (8 for u3, 2 for u4)."""
    return 8 // math.gcd(dtype.bits, 8)


def holds_whole_bytes(layout: Layout, dtype: DType) -> bool:
    """Whether each thread holds runs of whole bytes along the last dim (its innermost locals)."""
    group = byte_group(dtype)
    return group == 1 or layout.divisible_by(local(*[1] * (layout.rank - 1), group))


def _vector_width(shape: tuple[int, ...], bits: int, threads: int, min_vec: int) -> int:
    last, total = shape[-1], math.prod(shape)
    vec = 1
    while (vec * 2) * bits <= 128 and last % (vec * 2) == 0:
        vec *= 2
    while vec > 1 and total < threads * vec:
        vec //= 2
    if vec % min_vec == 0:
        return vec
    # The largest min_vec·2^j not above the preferred width that divides the row.
    run = min_vec
    while run * 2 <= vec and last % (run * 2) == 0:
        run *= 2
    return run


def view_layout(layout: Layout, source: DType, target: DType) -> Layout | None:
    """The natural layout of `view` from `source` to `target` elements, or None.

    Each group of ``g = target.bits / gcd`` consecutive last-dim elements a thread holds
    as its innermost locals becomes ``source.bits / gcd`` target elements in place, so
    reinterpreting each thread's register bits equals reinterpreting each row's bit
    stream. None when the layout's innermost local digit is not such a run.
    """
    common = math.gcd(source.bits, target.bits)
    take, give = target.bits // common, source.bits // common
    ones = [1] * (layout.rank - 1)
    try:
        rest = layout / local(*ones, take)
    except LayoutDivisionError:
        return None
    return rest * local(*ones, give)
