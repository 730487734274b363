"""`tl.associative_scan`: the inclusive scan of one tile or a tuple of tiles with a
combine function the user writes.

The combine function is a `@tilelang.func` called once, at compile time, on runtime
scalars that stand for two elements (or tuples of elements) of the scanned values; what
it computes becomes the body of one `associative_scan` instruction
(`tilelang.ir.nodes.AssociativeScan`), which every backend applies element by element.
It must be associative; it need not be commutative, and it may compute on scalars only
(arithmetic, comparisons, `tl.where`, `tl.exp`, ...: no loads, loops or branches).
"""

from __future__ import annotations

import inspect

from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType, TileType
from tilelang.lang.builder import current
from tilelang.lang.frontend import Func
from tilelang.lang.values import (
    Scalar,
    Tile,
    cast,
    describe,
    is_python_number,
    python_constant,
    static_int,
)

__all__ = ["associative_scan"]


def associative_scan(fn, values, axis=0, reverse=False):
    """The inclusive scan of `values` (a tile, or a tuple of tiles of one shape) along
    `axis` with the combine function `fn`: `fn(a, b)` takes two elements (two tuples of
    elements, one per tile, for a tuple of tiles) and returns their combination in the
    same structure. Element i of the result is x_0 ⊕ x_1 ⊕ … ⊕ x_i, or with `reverse`
    x_{n-1} ⊕ … ⊕ x_i (the scan of the flipped axis, flipped back). Returns a tile or a
    tuple of tiles like `values`.

    A linear recurrence h_i = a_i·h_{i-1} + b_i is the scan of the pairs (a, b) with
    `(a1, b1) ⊕ (a2, b2) = (a1·a2, a2·b1 + b2)`; its second result is h.
    """
    builder = current()
    if not isinstance(fn, Func):
        raise builder.error(
            f"tl.associative_scan combines with a @tl.func function, got {describe(fn)}; "
            "decorate the combine function with @tilelang.func"
        )
    single = not isinstance(values, (tuple, list))
    tiles = (values,) if single else tuple(values)
    if not tiles:
        raise builder.error("tl.associative_scan needs at least one tile to scan")
    for j, tile in enumerate(tiles):
        if not isinstance(tile, Tile):
            what = "the value" if single else f"value {j}"
            raise builder.error(f"tl.associative_scan scans tiles: {what} is {describe(tile)}")
    shape = tiles[0].shape
    for j, tile in enumerate(tiles[1:], 1):
        if tile.shape != shape:
            raise builder.error(
                f"tl.associative_scan scans tiles of one shape: value 0 is {list(shape)}, "
                f"value {j} is {list(tile.shape)}"
            )
    for j, tile in enumerate(tiles):
        if not ir.scannable(tile.dtype):
            raise builder.error(
                f"tl.associative_scan scans 8, 16, 32 or 64-bit integers, f16, bf16, f32 or "
                f"f64; value {j} is {tile.dtype} (convert it with .to())"
            )
    axis = static_int(axis, "the axis of tl.associative_scan")
    if not -len(shape) <= axis < len(shape):
        raise builder.error(f"axis {axis} is out of range for a tile of rank {len(shape)}")
    axis %= len(shape)
    if not isinstance(reverse, bool):
        raise builder.error(f"reverse must be a compile-time bool, got {describe(reverse)}")
    left, right = _parameter_names(fn)
    lhs = tuple(builder.var(left, ScalarType(t.dtype)) for t in tiles)
    rhs = tuple(builder.var(right, ScalarType(t.dtype)) for t in tiles)
    with builder.body() as body:
        a, b = (Scalar(v) for v in lhs), (Scalar(v) for v in rhs)
        a, b = (next(a), next(b)) if single else (tuple(a), tuple(b))
        combined = fn(a, b)
        yielded = _yielded(fn, combined, tiles, single)
        body.append(ir.Yield(yielded, loc=builder.loc))
    for instr in body[:-1]:
        scalar = isinstance(instr, ir.COMBINE_INSTRUCTIONS) and all(
            isinstance(v.type, ScalarType) for v in instr.defs()
        )
        if not scalar:
            raise builder.error(
                f"the combine function {fn.__name__} of tl.associative_scan may compute on "
                f"scalars only; it emits {instr.mnemonic} at {instr.loc} (use tl.where, "
                "not `if`, to choose)"
            )
    results = tuple(builder.var("scan", TileType(t.dtype, shape)) for t in tiles)
    builder.emit(
        ir.AssociativeScan(
            results,
            tuple(t.var for t in tiles),
            axis,
            lhs,
            rhs,
            ir.Block(tuple(body)),
            reverse,
            loc=builder.loc,
        )
    )
    wrapped = tuple(Tile(r) for r in results)
    return wrapped[0] if single else wrapped


def _parameter_names(fn: Func) -> tuple[str, str]:
    """The combine function's two parameter names (the IR names its arguments after
    them), else lhs and rhs."""
    try:
        names = list(inspect.signature(fn.fn).parameters)
    except (TypeError, ValueError):
        names = []
    return (names[0], names[1]) if len(names) == 2 else ("lhs", "rhs")


def _yielded(fn: Func, combined: object, tiles: tuple[Tile, ...], single: bool) -> tuple:
    """The IR values of what the combine function returned, checked against `tiles`."""
    builder = current()
    name = fn.__name__
    if single:
        if isinstance(combined, (tuple, list)):
            raise builder.error(
                f"the combine function {name} returned {len(combined)} values for one scanned "
                "tile; it must return one scalar"
            )
        items = (combined,)
    else:
        if not isinstance(combined, (tuple, list)) or len(combined) != len(tiles):
            found = (
                f"{len(combined)} values"
                if isinstance(combined, (tuple, list))
                else describe(combined)
            )
            raise builder.error(
                f"the combine function {name} must return a tuple of {len(tiles)} scalars "
                f"(one per scanned tile), like its arguments; it returned {found}"
            )
        items = tuple(combined)
    values = []
    for j, (item, tile) in enumerate(zip(items, tiles, strict=True)):
        dtype = tile.dtype
        if is_python_number(item):
            values.append(python_constant(item, dtype))
        elif isinstance(item, Scalar) and item.dtype == dtype:
            values.append(item.value)
        elif isinstance(item, Scalar) and isinstance(item.value, ir.Const):
            values.append(cast(item, dtype).value)
        else:
            what = "its result" if single else f"element {j} of its result"
            found = (
                f"a scalar of dtype {item.dtype}" if isinstance(item, Scalar) else describe(item)
            )
            raise builder.error(
                f"the combine function {name} must return scalars of the scanned dtypes: "
                f"{what} should be {dtype}, got {found} (convert with .to({dtype}))"
            )
    return tuple(values)
