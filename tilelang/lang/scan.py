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


#: The order of the arguments, as the errors about them show it.
ORDER = "tl.associative_scan(fn, values, axis=0, reverse=False)"
_PARAMETERS = ("fn", "values", "axis", "reverse")


def associative_scan(*args, **kwargs):
    """The inclusive scan of `values` (a tile, or a tuple of tiles of one shape) along
    `axis` with the combine function `fn`, a `@tl.func`; the order of the arguments is
    tl.associative_scan(fn, values, axis=0, reverse=False), combine function first
    (Triton's `associative_scan(input, axis, combine_fn)` puts it last), and each may
    be given by keyword. `fn(a, b)` takes two elements (two tuples of elements, one per
    tile, for a tuple of tiles) and returns their combination in the same structure.
    Element i of the result is x_0 ⊕ x_1 ⊕ … ⊕ x_i, or with `reverse` x_{n-1} ⊕ … ⊕ x_i
    (the scan of the flipped axis, flipped back). Returns a tile or a tuple of tiles
    like `values`. For example, with `@tl.func def add(a, b): return a + b`, the running
    sums along the rows of a [4, 32] tile `t` are tl.associative_scan(add, t, axis=1).

    A linear recurrence h_i = a_i·h_{i-1} + b_i is the scan of the pairs (a, b) with
    `(a1, b1) ⊕ (a2, b2) = (a1·a2, a2·b1 + b2)`; its second result is h.
    """
    builder = current()
    fn, values, axis, reverse = _arguments(args, kwargs)
    if not isinstance(fn, Func):
        if callable(fn):
            raise builder.error(
                f"tl.associative_scan combines with a @tl.func function, got {describe(fn)}; "
                "decorate the combine function with @tilelang.func"
            )
        raise builder.error(
            "the first argument of tl.associative_scan is the combine function (a @tl.func), "
            f"got {_what(fn)}: the order is {ORDER}{_example(values, axis, reverse)}"
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


associative_scan.__signature__ = inspect.Signature(
    [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
        for name, default in zip(
            _PARAMETERS, (inspect.Parameter.empty, inspect.Parameter.empty, 0, False), strict=True
        )
    ]
)


def _arguments(args: tuple, kwargs: dict) -> tuple:
    """(fn, values, axis, reverse) from a call, bound as Python binds them, with errors
    that show the order (a call in Triton's order is the usual mistake)."""
    builder = current()
    unknown = [name for name in kwargs if name not in _PARAMETERS]
    if unknown:
        raise builder.error(
            f"tl.associative_scan has no parameter {unknown[0]}: its parameters are fn, "
            f"values, axis, reverse ({ORDER})"
        )
    if len(args) > len(_PARAMETERS):
        raise builder.error(
            f"tl.associative_scan takes at most 4 arguments, got {len(args)}: the order is {ORDER}"
        )
    given = dict(zip(_PARAMETERS, args, strict=False))
    twice = [name for name in kwargs if name in given]
    if twice:
        raise builder.error(
            f"tl.associative_scan got {twice[0]}= by keyword and a positional argument in its "
            f"place: positional arguments fill fn first, then values, axis, reverse (the order "
            f"is {ORDER}); put the combine function first or pass every argument by keyword"
        )
    given.update(kwargs)
    missing = [name for name in ("fn", "values") if name not in given]
    if missing:
        raise builder.error(
            f"tl.associative_scan needs {' and '.join(missing)}: the order is {ORDER}"
        )
    return given["fn"], given["values"], given.get("axis", 0), given.get("reverse", False)


def _what(value: object) -> str:
    """A misplaced argument as the message names it (a tile with its type: the order of
    the arguments is the mistake, and the type shows which one it was)."""
    if isinstance(value, Tile):
        return f"a tile ({value.type})"
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, Tile) for v in value):
        return f"a {type(value).__name__} of {len(value)} tiles"
    return describe(value)


def _example(values: object, axis: object, reverse: object) -> str:
    """The corrected call when the combine function was given in another place."""
    combine = next((v for v in (values, axis, reverse) if isinstance(v, Func)), None)
    if combine is None:
        return ""
    axis_given = isinstance(values, int) and not isinstance(values, bool)  # Triton's order
    axis_text = f", axis={values}" if axis_given else ""
    return f": write tl.associative_scan({combine.__name__}, values{axis_text})"


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
