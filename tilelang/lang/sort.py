"""`tl.sort`, `tl.argsort`, `tl.topk` and `tl.flip`: orderings of a tile along one axis.

They have no instruction of their own. A sort is Batcher's bitonic network over the
axis padded to a power of two: log2(n)·(log2(n) + 1)/2 compare-exchange steps, each a
reshape that puts the two elements of every pair on an axis of size 2, a split into
the pairs' halves, comparisons, selects and a join. So every backend computes the same
network bit for bit, and the GPU lowering moves pairs that lie in different threads
through shared memory as any relayout does. A flip exchanges the halves of the axis,
then of each half, and so on (log2(n) steps).

`topk` with k at most that step count (and an integer, f16, bf16 or f32 tile) is instead
k rounds of selection: the first element in the order among those left (a max or min of
integer keys, then the least position holding it), knocked out by its position. It gives
the network's result bit for bit, at a fraction of its registers, time and build time.

The order is torch's: NaN above +inf (last ascending, first descending) and -0 equal
to +0. `argsort` and `topk` compare (value, index) pairs, so equal values keep their
original order (a stable sort); `sort` compares values only, so which of two equal
values (-0 and +0, or two NaNs) comes first is the network's choice.
"""

from __future__ import annotations

from collections.abc import Callable

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.lang.builder import current
from tilelang.lang.ops import _axis, _reduce, arange, composite, concat, full, reshape, split
from tilelang.lang.values import (
    INDEX,
    Tile,
    broadcast_to,
    cast,
    elementwise,
    require_tile,
    static_int,
    view_tile,
)

__all__ = ["argsort", "flip", "sort", "topk"]

Order = Callable[[Tile, Tile], Tile]  # before(a, b): a comes strictly before b


@composite(ir.Compute, ir.Arange, ir.Reshape, ir.Slice, ir.Concat, ir.Broadcast, ir.Full)
def sort(x, axis=-1, descending=False) -> Tile:
    """`x` sorted along `axis` (ascending, or `descending`), as `torch.sort(x, axis,
    descending).values`: NaN counts above +inf, -0 equals +0."""
    tile, axis = _sortable(x, axis, "tl.sort")
    return _network([tile], axis, bool(descending))[0]


@composite(ir.Compute, ir.Arange, ir.Reshape, ir.Slice, ir.Concat, ir.Broadcast, ir.Full)
def argsort(x, axis=-1, descending=False) -> Tile:
    """The i32 indices that sort `x` along `axis`, stably (equal values keep their
    order), as `torch.sort(x, axis, descending, stable=True).indices`."""
    tile, axis = _sortable(x, axis, "tl.argsort")
    return _network([tile, _positions(tile, axis)], axis, bool(descending))[1]


@composite(
    ir.Compute,
    ir.Arange,
    ir.Reshape,
    ir.Slice,
    ir.Concat,
    ir.Broadcast,
    ir.Full,
    ir.Reduce,
    ir.Cast,
    ir.View,
)
def topk(x, k, axis=-1, largest=True) -> tuple[Tile, Tile]:
    """The `k` largest elements along `axis` (the smallest with `largest=False`) and
    their i32 indices, in order, as `torch.topk(x, k, axis, largest, sorted=True)`: NaN
    counts as the largest value, -0 equals +0, and of equal values the one at the lower
    index comes first; the values are the elements' own bits. A router's top-2 experts:
    `weights, experts = tl.topk(logits, 2, axis=1)`. Computed, when k is at most the
    bitonic network's log2(n)·(log2(n) + 1)/2 steps (n the axis padded to a power of two)
    and `x` is an integer, f16, bf16 or f32 tile, by k rounds of two reductions over the
    axis (a third for f32 over more than 256); otherwise by that network. Over 256 f32
    logits on sm_90a, top-8 is predicted 7.8 µs for 8192 rows instead of 31.2."""
    tile, axis = _sortable(x, axis, "tl.topk")
    k = static_int(k, "k of tl.topk")
    if not 1 <= k <= tile.shape[axis]:
        raise current().error(
            f"tl.topk: k must be in 1..{tile.shape[axis]} (the size of axis {axis}), got {k}"
        )
    if _selection_is_cheaper(tile.dtype, tile.shape[axis], k):
        return _selection(tile, axis, k, bool(largest))
    return _sorted_top(tile, axis, k, bool(largest))


@composite(ir.Reshape, ir.Slice, ir.Concat, ir.Full)
def flip(x, axis=-1) -> Tile:
    """`x` with the order of `axis` reversed (`numpy.flip(x, axis)`)."""
    tile = require_tile(x, "the argument of tl.flip")
    if tile.ndim == 0:
        raise current().error("tl.flip reverses an axis; a rank-0 tile has none")
    axis = _axis(axis, tile.ndim)
    n = tile.shape[axis]
    width = _power_of_two_above(n)
    padded = (
        tile
        if width == n
        else concat([tile, full(_shape(tile, axis, width - n), 0, tile.dtype)], axis)
    )
    step = width // 2
    while step:  # exchanging the halves of every 2·step run reverses that bit of the index
        lo, hi = _pairs(padded, axis, step)
        padded = _unpair(concat([hi, lo], axis + 1), tile, axis, width)
        step //= 2
    return _take(padded, axis, n, start=width - n)


# -- the network ---------------------------------------------------------------------------


def _network(tiles: list[Tile], axis: int, descending: bool) -> list[Tile]:
    """The bitonic network over `tiles` (the sort key, then the indices that travel with
    it, if any), padded along `axis` with elements that sort after every real one, then
    cut back."""
    n = tiles[0].shape[axis]
    width = _power_of_two_above(n)
    if width > n:
        pads = [_last_values(tiles[0], axis, width - n, descending)]
        pads += [_last_positions(t, axis, width - n) for t in tiles[1:]]
        tiles = [concat([t, pad], axis) for t, pad in zip(tiles, pads, strict=True)]
    key_before = _order(tiles[0], descending)

    def before(a: list[Tile], b: list[Tile]) -> Tile:
        if len(a) == 1:
            return key_before(a[0], b[0])
        tie = ~key_before(b[0], a[0])  # ties go to the lower index: a stable sort
        return key_before(a[0], b[0]) | (tie & (a[1] < b[1]))

    size = 2
    while size <= width:
        step = size // 2
        while step:
            tiles = _compare_exchange(tiles, axis, width, size, step, before)
            step //= 2
        size *= 2
    return [_take(t, axis, n) for t in tiles]


def _sorted_top(tile: Tile, axis: int, k: int, largest: bool) -> tuple[Tile, Tile]:
    """`tl.topk` by the network: an argsort carrying the values, cut to its first k."""
    values, indices = _network([tile, _positions(tile, axis)], axis, largest)
    return _take(values, axis, k), _take(indices, axis, k)


def _compare_exchange(tiles, axis, width, size, step, before) -> list[Tile]:
    """One step: elements i and i + step of every run of 2·step exchange where they are
    out of order; runs whose index has the `size` bit set are put in reverse order."""
    halves = [_pairs(t, axis, step) for t in tiles]
    lo, hi = [h[0] for h in halves], [h[1] for h in halves]
    runs = width // (2 * step)
    forward = (arange(0, runs, INDEX) * (2 * step)) & size
    forward = reshape(forward == 0, [*([1] * axis), runs, 1, 1, *([1] * (lo[0].ndim - axis - 3))])
    swap = elementwise("where", forward, before(hi, lo), before(lo, hi))
    tiles_out = []
    for t, a, b in zip(tiles, lo, hi, strict=True):
        first, second = elementwise("where", swap, b, a), elementwise("where", swap, a, b)
        tiles_out.append(_unpair(concat([first, second], axis + 1), t, axis, width))
    return tiles_out


def _order(tile: Tile, descending: bool) -> Order:
    """`before(a, b)` for the requested direction, NaN above every number."""
    if not isinstance(tile.dtype, dtypes.FloatType):
        return (lambda a, b: a > b) if descending else (lambda a, b: a < b)
    if descending:
        return lambda a, b: (a > b) | ((a != a) & (b == b))
    return lambda a, b: (a < b) | ((b != b) & (a == a))


def _last_values(key: Tile, axis: int, count: int, descending: bool) -> Tile:
    """`count` keys along `axis` that no real key comes after: the lowest value
    descending (-inf, or -max in a type without it), the highest ascending (NaN, else
    +inf, else max). A real key equal to one of them ties with it: a sort cannot tell
    them apart, and an argsort puts the real one first, as the padding's positions lie
    past the end."""
    dtype = key.dtype
    if not isinstance(dtype, dtypes.FloatType):
        value = dtype.min if descending else dtype.max
    elif descending:
        value = float("-inf") if dtype.has_inf else -dtype.max
    else:
        value = float("nan") if dtype.has_nan else float("inf") if dtype.has_inf else dtype.max
    return full(_shape(key, axis, count), value, dtype)


def _last_positions(positions: Tile, axis: int, count: int) -> Tile:
    n = positions.shape[axis]
    padding = reshape(arange(n, n + count, INDEX), _along(positions, axis, count))
    return broadcast_to(padding, _shape(positions, axis, count))


# -- selection -----------------------------------------------------------------------------


def _selection_is_cheaper(dtype: dtypes.DType, n: int, k: int) -> bool:
    """Whether k rounds of selection cost less than the network over n elements: while k
    is at most the network's log2(n)·(log2(n) + 1)/2 compare-exchange steps. A round is
    two reductions and a few selects per element; a step is a compare, four selects, a
    relayout, often through shared memory, for values and indices alike. Measured with
    `compiled.perf` on sm_90a (4 rows a block, 4 warps), predicted µs selection / network:
    n = 16: k = 8 4.4 / 4.7, k = 16 5.7 / 4.7; n = 64: k = 16 8.4 / 8.1; n = 256: k = 8
    7.8 / 31.2, k = 32 21.4 / 31.2. Near the bound they are close, and there selection
    still builds in a fraction of the time and holds fewer registers."""
    if not _selectable(dtype):
        return False
    depth = (_power_of_two_above(n) - 1).bit_length()
    return k <= depth * (depth + 1) // 2


def _selectable(dtype: dtypes.DType) -> bool:
    if isinstance(dtype, dtypes.FloatType):
        return dtype.specials == "ieee" and dtype.bits in (16, 32)
    return isinstance(dtype, dtypes.IntType) and dtype.bits in (8, 16, 32)


def _selection(tile: Tile, axis: int, k: int, largest: bool) -> tuple[Tile, Tile]:
    """`tl.topk` by k rounds of selection: the best key among those left (a max, or a min),
    then the least tag (`_tags`) among the elements that hold it, which names the lowest
    position (ties go to the lower index) and carries the bits the key lost; that element
    is then knocked out: its key becomes one that never wins. Where every key is a real
    value (32-bit integers) a knocked-out key could still tie, so its tag is knocked out too."""
    keys, spare = _keys(tile)
    tags, carried = _tags(tile, axis)
    extreme = "max" if largest else "min"
    gone = keys.dtype.min if largest else keys.dtype.max
    slots = broadcast_to(reshape(arange(0, k, INDEX), _along(tile, axis, k)), _shape(tile, axis, k))
    values = full(slots.shape, 0, tile.dtype)
    indices = full(slots.shape, 0, INDEX)
    for j in range(k):
        best = _reduce(extreme, keys, axis, keepdims=True)
        tag = _reduce("min", elementwise("where", keys == best, tags, tags.dtype.max), axis, True)
        hit = tags == tag
        value, index = _untag(tile, best, tag) if carried else _gathered(tile, axis, best, tag, hit)
        values = elementwise("where", slots == j, value, values)
        indices = elementwise("where", slots == j, index, indices)
        keys = elementwise("where", hit, gone, keys)
        if not spare:
            tags = elementwise("where", hit, tags.dtype.max, tags)
    return values, indices


def _keys(tile: Tile) -> tuple[Tile, bool]:
    """Integers in the order `_order` defines, and whether their type's min and max are
    spare (no element has them, so they can mark knocked-out elements). Integers are their
    own keys, widened to i32 below 32 bits. A float's sign-magnitude bits become two's
    complement (widened to i32), -0 becomes +0 and every NaN `_NAN_KEY`, above +inf."""
    dtype = tile.dtype
    if not _is_float(tile):
        return (tile, False) if dtype.bits == 32 else (cast(tile, dtypes.i32), True)
    bits = cast(view_tile(tile, dtypes.IntType(dtype.bits, signed=True)), dtypes.i32)
    keys = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negatives: larger magnitude, smaller key
    keys = elementwise("where", tile == 0, 0, keys)
    return elementwise("where", tile != tile, _NAN_KEY, keys), True


_NAN_KEY = dtypes.i32.max - 1  # above every number's key, below the mark i32.max


def _tags(tile: Tile, axis: int) -> tuple[Tile, bool]:
    """Each element's position along `axis`, distinct and in order, and whether a float's
    sign and mantissa bits (which its key loses for -0 and NaN) are carried below it: they
    are where they fit in a u32 (f16 and bf16 always, f32 up to 256 positions)."""
    positions = _positions(tile, axis)
    if not _is_float(tile):
        return positions, False
    dtype, m = tile.dtype, tile.dtype.mantissa_bits
    if (tile.shape[axis] - 1).bit_length() + m + 1 > 32:
        return positions, False
    bits = cast(view_tile(tile, dtypes.IntType(dtype.bits, signed=False)), dtypes.u32)
    sign = (bits >> (dtype.bits - 1)) << m
    return (cast(positions, dtypes.u32) << (m + 1)) | sign | (bits & ((1 << m) - 1)), True


def _untag(tile: Tile, best: Tile, tag: Tile) -> tuple[Tile, Tile]:
    """The winner's value and position from its key and its tag: the float takes its
    exponent from the key (all ones for NaN, zero for ±0, as `_keys` made them) and its
    sign and mantissa from the tag."""
    dtype = tile.dtype
    m = dtype.mantissa_bits
    magnitude = best ^ ((best >> 31) & 0x7FFFFFFF)  # the key made back into bits
    exponent = cast(magnitude & (((1 << dtype.exponent_bits) - 1) << m), dtypes.u32)
    low = tag & ((2 << m) - 1)  # sign, then mantissa
    bits = ((low >> m) << (dtype.bits - 1)) | exponent | (low & ((1 << m) - 1))
    unsigned = dtypes.IntType(dtype.bits, signed=False)
    return view_tile(cast(bits, unsigned), dtype), cast(tag >> (m + 1), INDEX)


def _gathered(tile: Tile, axis: int, best: Tile, tag: Tile, hit: Tile) -> tuple[Tile, Tile]:
    """The winner's value and position where its tag is only its position: an integer's
    key is its value; a float's bits are read back at the position (a third reduction)."""
    if not _is_float(tile):
        return cast(best, tile.dtype), tag
    bits = view_tile(tile, dtypes.IntType(tile.dtype.bits, signed=False))
    picked = _reduce("or", elementwise("where", hit, bits, 0), axis, True)
    return view_tile(picked, tile.dtype), tag


def _is_float(tile: Tile) -> bool:
    return isinstance(tile.dtype, dtypes.FloatType)


# -- shapes --------------------------------------------------------------------------------


def _sortable(x, axis, what: str) -> tuple[Tile, int]:
    tile = require_tile(x, f"the argument of {what}")
    if tile.ndim == 0:
        raise current().error(f"{what} orders an axis; a rank-0 tile has none")
    return tile, _axis(axis, tile.ndim)


def _positions(tile: Tile, axis: int) -> Tile:
    """The i32 index along `axis` of every element of `tile`."""
    n = tile.shape[axis]
    return broadcast_to(reshape(arange(0, n, INDEX), _along(tile, axis, n)), tile.shape)


def _pairs(tile: Tile, axis: int, step: int) -> tuple[Tile, Tile]:
    """The first and second elements of each pair (i, i + step) of `axis`, as tiles with
    `axis` cut into [runs, 1, step]."""
    width = tile.shape[axis]
    runs = [*tile.shape[:axis], width // (2 * step), 2, step, *tile.shape[axis + 1 :]]
    return split(reshape(tile, runs), 2, axis + 1)


def _unpair(joined: Tile, like: Tile, axis: int, width: int) -> Tile:
    return reshape(joined, _shape(like, axis, width))


def _take(tile: Tile, axis: int, count: int, start: int = 0) -> Tile:
    """Elements start..start + count of `axis`: one slice (the parts a split would also
    cut are tiles nothing reads, which still took layouts and registers)."""
    if (start, count) == (0, tile.shape[axis]):
        return tile
    index = [slice(None)] * tile.ndim
    index[axis] = slice(start, start + count)
    return tile[tuple(index)]


def _shape(tile: Tile, axis: int, size: int) -> tuple[int, ...]:
    return (*tile.shape[:axis], size, *tile.shape[axis + 1 :])


def _along(tile: Tile, axis: int, size: int) -> list[int]:
    return [1 if d != axis else size for d in range(tile.ndim)]


def _power_of_two_above(n: int) -> int:
    return 1 << (n - 1).bit_length()
