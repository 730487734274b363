"""Layout policies: the register layouts the compiler chooses when nothing forces one.

- `blocked_layout`: the coalesced default of a tile (16 bytes per thread, threads along
  the last dim first), used for loads, for tiles no rule reached, and by the lowering for
  `copy_async`;
- `reduction_layout`: the layout a reduction wishes its (free) value to have when the
  blocked layout would spread the reduced axis over many lanes and warps: shorter
  vectors along the last dim, threads over the kept dims first, the reduced axis in
  registers (costed by `reduction_cost`);
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
from tilelang.ir.layout import Layout, LayoutDivisionError, Rep, local, replicated, spatial

WARP = 32
# Per-thread instructions of `reduction_cost`, read off the SASS of reductions of
# loaded tiles: a vector load with its own 64-bit address (two adds, two registers); a
# butterfly level (a shuffle and a combine); across warps, a shared store and a combine
# per warp for each output, and two barriers and the addresses once; a distinct element
# of a broadcast operand (its load share and its cast: an f16 -> f32 cast is three
# instructions with the NaN it canonicalizes).
_LOAD = 4
_LANE_LEVEL = 2
_ACROSS_WARPS_ONCE = 6
_BROADCAST = 3

__all__ = [
    "DotLayouts",
    "blocked_layout",
    "byte_group",
    "dot_layouts",
    "holds_whole_bytes",
    "reduction_cost",
    "reduction_layout",
    "view_layout",
]


def blocked_layout(
    shape: Sequence[int],
    dtype: DType,
    threads: int,
    *,
    min_vec: int = 1,
    max_vec: int | None = None,
) -> Layout:
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
    threads. `max_vec` (a power of two) caps the run where an access can provably move
    no more elements at once (`divisors.access_run`: a row whose length or offset proves
    no 16-byte alignment): a longer run would be split into narrow accesses with the
    lanes of a warp a run apart (4x the sectors for f32 runs of 4 moved one by one). The
    threads keep the arrangement of the uncapped run, each thread's run becoming
    ``vec / max_vec`` runs of ``max_vec`` one warp-width apart (an outer local digit), so
    consecutive lanes read consecutive accesses and each thread keeps the rows it had.
    None (or a cap at or above the preferred width) leaves the layout as without it.

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
    run = _capped_run(vec, min_vec, max_vec)
    outer[-1] *= vec // run  # the rest of the run: whole warp-widths further along the row
    inner = [1] * (rank - 1) + [run]
    layout = replicated(left, rank=rank) * local(*outer) * spatial(*spread) * local(*inner)
    return layout.canonicalize()


def byte_group(dtype: DType) -> int:
    """The fewest consecutive elements of `dtype` that fill whole bytes (8 for u3, 2 for u4)."""
    return 8 // math.gcd(dtype.bits, 8)


def holds_whole_bytes(layout: Layout, dtype: DType) -> bool:
    """Whether each thread holds runs of whole bytes along the last dim (its innermost locals)."""
    group = byte_group(dtype)
    return group == 1 or layout.divisible_by(local(*[1] * (layout.rank - 1), group))


def _capped_run(vec: int, min_vec: int, max_vec: int | None) -> int:
    """The part of a run of `vec` one access moves: halved down to `max_vec`, never
    below (nor off a multiple of) `min_vec`."""
    run = vec
    while max_vec is not None and run > max_vec and (run // 2) % min_vec == 0 and run % 2 == 0:
        run //= 2
    return run


def _vector_width(
    shape: tuple[int, ...], bits: int, threads: int, min_vec: int, max_vec: int | None = None
) -> int:
    last, total = shape[-1], math.prod(shape)
    widest = 128 // bits if max_vec is None else min(max_vec, 128 // bits)
    vec = 1
    while vec * 2 <= widest and last % (vec * 2) == 0:
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


def reduction_layout(
    shape: Sequence[int],
    axis: int,
    threads: int,
    loads: Sequence[DType],
    broadcasts: Sequence[Sequence[int]] = (),
    max_vec: int | None = None,
) -> Layout | None:
    """The layout a reduction of a `shape` tile over `axis` wishes its value to have, or
    None when the blocked layout of the narrowest of `loads` (the element types of the
    tiles of this shape loaded to compute the value) is as cheap. `max_vec` caps the
    runs as in `blocked_layout` (the loads' provable access width): the candidates are
    weighed uncapped and the winner's run is then split, so the cap keeps the thread
    arrangement the reduction was costed with (the same shuffles, the same rows each
    thread holds) and only puts a warp's lanes on adjacent accesses.

    Candidates keep a run of ``v`` consecutive last-dim elements per thread (``v`` from
    the blocked width down to the fewest whole bytes), spread threads over the kept dims
    first (the last first, as `blocked_layout`) and the reduced axis the threads left,
    and keep the rest of the axis in each thread's registers, one run per thread. The
    innermost thread digits are lanes along the last dim enough for a warp to read whole
    32-byte sectors of a row, then lanes along the axis (a butterfly; the axis's digits
    past the warp combine through shared memory), then the other digits. A
    shorter vector costs loads; fewer lanes along the axis save shuffles; `broadcasts`
    (the dims along which operands of the value are broadcast) cost the distinct
    elements each thread holds of them. The cheapest candidate by `reduction_cost` wins
    when it is strictly cheaper than the blocked layout.

    ``[64, 128], axis 0, 128 threads, u4 loads, broadcasts along 1 and 0 ->
    spatial(2, 2).spatial(4, 8).local(8, 8)``: 8 outputs a thread, each over 4 lanes and
    2 warps, 4-byte loads of whole sectors (the blocked ``local(2, 1).spatial(32,
    4).local(1, 32)``: 32 outputs a thread, each over 8 lanes and 4 warps).
    """
    shape = tuple(shape)
    rank = len(shape)
    if not loads or rank == 0 or shape[axis] == 1:
        return None
    narrow = min(loads, key=lambda dtype: dtype.bits)
    bits = [dtype.bits for dtype in loads]
    blocked = blocked_layout(shape, narrow, threads)
    best, best_cost = None, reduction_cost(blocked, axis, bits, broadcasts)
    group = byte_group(narrow) if shape[-1] % byte_group(narrow) == 0 else 1
    run = _vector_width(shape, narrow.bits, threads, group)
    while run >= group:
        if shape[-1] % run == 0:
            cost = reduction_cost(
                _reduction_candidate(shape, axis, threads, run, narrow.bits), axis, bits, broadcasts
            )
            if cost < best_cost:
                best, best_cost = run, cost
        run //= 2
    if best is None:
        return None
    split = _capped_run(best, group, max_vec)
    return _reduction_candidate(shape, axis, threads, best, narrow.bits, split)


def _reduction_candidate(
    shape: tuple[int, ...], axis: int, threads: int, run: int, bits: int, split: int | None = None
) -> Layout:
    """The candidate of `run` consecutive last-dim elements a thread; `split` (a divisor
    of it) moves one access at a time: the rest of the run goes to an outer local digit,
    as `blocked_layout` caps its runs."""
    rank, last = len(shape), len(shape) - 1
    positions = [*shape[:-1], shape[-1] // run]
    spread = [1] * rank
    left = threads
    for d in [*(d for d in reversed(range(rank)) if d != axis), axis]:
        spread[d] = math.gcd(left, positions[d])
        left //= spread[d]
    outer = [p // s for p, s in zip(positions, spread, strict=True)]
    inner = [1] * rank
    inner[last] = run
    lanes = [1] * rank  # the innermost thread digits: last dim, then the axis
    if axis != last:
        inner[axis], outer[axis] = outer[axis], 1  # the axis's registers as one run
        # A warp's lanes along a row read whole 32-byte sectors, then the axis's lanes.
        lanes[last] = math.gcd(spread[last], max(1, 256 // (run * bits)))
        lanes[axis] = math.gcd(spread[axis], WARP // lanes[last])
    else:
        lanes[axis] = spread[axis]
    if split is not None and split < run:
        outer[last], inner[last] = outer[last] * (run // split), split
    rest = [s // n for s, n in zip(spread, lanes, strict=True)]
    row = [lanes[d] if d == last and axis != last else 1 for d in range(rank)]
    column = [lanes[axis] if d == axis else 1 for d in range(rank)]
    layout = replicated(left, rank=rank) * local(*outer) * spatial(*rest) * spatial(*column)
    return (layout * spatial(*row) * local(*inner)).canonicalize()


def reduction_cost(
    layout: Layout, axis: int, load_bits: Sequence[int], broadcasts: Sequence[Sequence[int]] = ()
) -> int:
    """An estimate of the per-thread instructions that depend on the layout of a
    reduced value (the weights are above): a vector load per run of the last dim (at
    most 16 bytes) for each loaded tile of `load_bits` bits an element, a butterfly
    level per output per lane digit of the axis, a combine through shared memory where
    the axis spans warps, and each distinct element a thread holds of an operand
    broadcast along each of `broadcasts`. The fold of each thread's own elements is the
    same for every layout with as many elements a thread, so it is left out."""
    layout = layout.canonicalize()
    sizes, dims = layout.mode_sizes, layout.mode_dims
    along = math.prod(sizes[m] for m in layout.local_modes if dims[m] == axis)
    outputs = layout.num_locals // along
    levels, warps, stride = 0, 1, 1
    for mode in reversed(layout.thread_modes):
        size = mode.size if isinstance(mode, Rep) else sizes[mode]
        if not isinstance(mode, Rep) and dims[mode] == axis:
            inside = 1 if stride >= WARP else min(size, max(1, WARP // stride))
            levels += max(inside - 1, 0).bit_length()
            warps *= -(-size // inside)
        stride *= size
    cost = outputs * _LANE_LEVEL * levels
    if warps > 1:
        cost += outputs * (1 + warps) + _ACROSS_WARPS_ONCE
    innermost = layout.num_modes - 1  # the last dim's innermost digit
    run = sizes[innermost] if layout.local_modes[-1:] == (innermost,) else 1
    for bits in load_bits:
        cost += _LOAD * (layout.num_locals // run) * -(-run * bits // 128)
    for dims_ in broadcasts:
        cost += _BROADCAST * layout.reduce(list(dims_)).num_locals
    return cost


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
