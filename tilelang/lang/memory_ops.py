"""The global-memory operations a kernel body calls: `tl.load`, `tl.store`,
`tl.atomic_add`, `tl.atomic_max`, `tl.atomic_min`, `tl.atomic_xchg` and `tl.atomic_cas`
(each atomic returning the old values; re-exported by `tilelang.lang.ops`,
where the other `tl.*` functions are), with the checks of their offsets, gathers' and scatters' index tiles, fills and
masks.

A tile may have fewer dimensions than the tensor it is loaded from or stored to (a
rank-dropping access, as Triton kernels index `q[b, m:m+BM, :]`): the offsets still give
one coordinate per tensor dimension, and the box's missing LEADING dimensions are 1. It
is emitted as the full-rank access and a `reshape` that adds or drops those unit
dimensions (free in every backend), so a rank-dropping access and the explicit
`tl.reshape` form are the same IR. Masks and gathers' index tiles broadcast to the
tile's own shape, as they do at full rank.

A mask is a u1 tile that broadcasts to the accessed shape, a block-uniform u1 scalar
(broadcast: a `full` tile) or a Python bool. A constant True is no mask at all; a
constant False selects nothing, and then no instruction is emitted (a load gives a
`full` tile of its fill, a scalar load its fill as a constant): nothing is accessed, so nothing needs to be ordered either.
The arguments are checked all the same, so a kernel that is wrong for some mask is
wrong for every one.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType, TileType
from tilelang.lang.builder import current
from tilelang.lang.fills import full
from tilelang.lang.values import (
    INDEX,
    Scalar,
    Shared,
    Tensor,
    Tile,
    as_scalar,
    broadcast_to,
    cast,
    checked_layout,
    describe,
    elementwise,
    emit_result,
    is_python_number,
    python_constant,
    reshape_tile,
    static_shape,
)

#: What `_mask` returns for a mask that is constantly False: nothing is accessed.
NOTHING = "nothing"


def tensor_argument(value: object, what: str, offsets: object = None) -> Tensor:
    """`value`, which must be a tensor parameter. A rank-1 on-chip tile read at a tile of
    integer codes among `offsets` is a codebook lookup, so the error names `tl.lookup`."""
    if not isinstance(value, Tensor):
        items = offsets if isinstance(offsets, (list, tuple)) else [offsets]
        coded = any(isinstance(o, Tile) and o.dtype.is_int for o in items)
        table = isinstance(value, (Tile, Shared)) and len(value.shape) == 1
        raise current().error(
            f"{what} must be a tensor parameter of the kernel, got {describe(value)}"
            + (
                "; look a rank-1 table up at integer codes with tl.lookup(table, codes)"
                if coded and table
                else ""
            )
        )
    return value


def offsets_of(tensor: Tensor, offsets: object) -> tuple[ir.Value, ...]:
    if isinstance(offsets, (Scalar, int)):
        offsets = (offsets,)
    if not isinstance(offsets, (list, tuple)):
        raise current().error(
            f"offsets must be a list with one entry per dimension, got {offsets!r}"
        )
    if len(offsets) != tensor.ndim:
        raise current().error(
            f"{tensor.var.name} has {tensor.ndim} dimensions but {len(offsets)} offsets were given"
        )
    return tuple(as_scalar(o, INDEX).value for o in offsets)


def gather_axis(tensor: Tensor, offsets: object) -> tuple[int, Tile] | None:
    """(dimension, index tile) of the one offset that is a tile (a gather or scatter)."""
    if not isinstance(offsets, (list, tuple)):
        return None
    tiles = [(d, o) for d, o in enumerate(offsets) if isinstance(o, Tile)]
    if len(tiles) > 1:
        dims = ", ".join(str(d) for d, _ in tiles)
        raise current().error(
            f"a gather or scatter indexes one dimension; offsets {dims} of {tensor.var.name} are "
            "all tiles (combine them into one row index, e.g. on a reshaped tensor)"
        )
    return tiles[0] if tiles else None


def gather_index(index: Tile, dims: tuple[int, ...], axis: int, rank: int | None = None) -> Tile:
    """The index tile of a gather or scatter: i32, each dim 1 or the tile's (it must
    broadcast to the tile shape `dims`), padded with leading 1s to `rank` dimensions
    (the tensor's, for a rank-dropping access; default: the tile's)."""
    builder = current()
    if index.dtype.is_float:
        raise builder.error(
            f"the index tile of offset {axis} (a gather or scatter) must hold integers, got "
            f"{index.dtype}"
        )
    shape = (1,) * (len(dims) - index.ndim) + tuple(index.shape)
    fits = len(shape) == len(dims) and all(s in (1, d) for s, d in zip(shape, dims, strict=True))
    if not fits:
        raise builder.error(
            f"the index tile of offset {axis} (a gather or scatter) has shape "
            f"{list(index.shape)}, which does not broadcast to the tile shape {list(dims)}"
        )
    rows = index if index.dtype == INDEX else cast(index, INDEX)
    return reshape_tile(rows, leading_ones(shape, len(dims) if rank is None else rank))


def leading_ones(shape: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """`shape` with 1s prepended up to `rank` dimensions: the box a rank-dropping access
    of a tile of `shape` reaches in a tensor of `rank` dimensions."""
    return (1,) * (rank - len(shape)) + tuple(shape)


def _as_shape(tile: Tile, shape: tuple[int, ...], layout=None) -> Tile:
    """`tile` reshaped to `shape` (same elements, unit dimensions added or dropped): the
    reshape a rank-dropping access adds; `layout`, if given, is the result's."""
    if tuple(tile.shape) == tuple(shape) and layout is None:
        return tile
    return emit_result(ir.Reshape, tile.var.name, TileType(tile.dtype, shape, layout), tile.var)


def _constant_mask(mask: object) -> bool | None:
    """The value of a mask known at compile time (a bool, a u1 immediate), else None."""
    if isinstance(mask, Scalar) and isinstance(mask.value, ir.Const) and mask.dtype == dtypes.u1:
        return bool(mask.value.value)
    return bool(mask) if isinstance(mask, (bool, np.bool_)) else None


def _scalar_mask(mask: Scalar) -> Scalar:
    if mask.dtype != dtypes.u1:
        raise current().error(
            f"the mask must be u1 (a comparison's result), got {describe(mask)}; compare it, "
            "e.g. `mask != 0`"
        )
    return mask


def _mask(
    mask: object, shape: tuple[int, ...], box: tuple[int, ...] | None = None
) -> Tile | str | None:
    """The mask of an access of a tile of `shape` that reaches the box `box` of the
    tensor (`shape` with leading 1s; default `shape`): a u1 tile of the box's shape,
    None (every element) or `NOTHING` (a constant False). The mask must broadcast to
    `shape`, the tile's own."""
    box = shape if box is None else box
    known = _constant_mask(mask)
    if known is not None:
        return None if known else NOTHING
    if isinstance(mask, Scalar):  # block-uniform: every element of the tile alike
        value = _scalar_mask(mask).value
        return emit_result(ir.Full, "mask", TileType(dtypes.u1, box), value)
    if not isinstance(mask, Tile):
        raise current().error(
            "the mask must be a u1 tile, a u1 scalar (a comparison's result) or a Python "
            f"bool, got {describe(mask)}"
        )
    if mask.dtype != dtypes.u1:
        raise current().error(
            f"the mask must be a u1 tile (a comparison's result), got {describe(mask)}; "
            "compare it, e.g. `mask != 0`"
        )
    if box != shape and not _broadcasts(tuple(mask.shape), shape):
        # checked against the tile's shape: the box's leading 1s would admit more dims
        raise current().error(
            f"cannot broadcast a tile of shape {list(mask.shape)} to {list(shape)} (the mask)"
        )
    return broadcast_to(mask, box)


def _broadcasts(have: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether a tile of shape `have` broadcasts to `want` (numpy's rule)."""
    if len(have) > len(want):
        return False
    return all(h in (1, w) for h, w in zip(leading_ones(have, len(want)), want, strict=True))


# -- loads -------------------------------------------------------------------------------


def load(tensor, offsets, shape=None, fill=None, layout=None, mask=None, other=None):
    """The box of `shape` at `offsets`; elements outside the tensor, and elements where
    `mask` (a u1 tile that broadcasts to `shape`, a u1 scalar or a bool; None: all)
    fails, read `fill` (0) and are not read from memory. `layout`, if given, is the
    register layout the tile is loaded in (the compiler chooses one otherwise).

    `shape` may have fewer dimensions than the tensor: the box's missing leading
    dimensions are 1 and the tile has `shape` (``tl.load(q, [b, m, 0], [BM, D])`` from a
    [B, S, D] tensor reads a [BM, D] tile); the offsets still give one coordinate per
    tensor dimension, and `mask`, a gather's index tile and `layout` are those of
    `shape`.

    Without `shape`: the one element at `offsets`, as a block-uniform runtime scalar
    (outside the tensor or masked out: `fill`). With an integer tile among the offsets
    (a gather): along that dimension each element's coordinate is the tile's entry for
    it (the tile broadcasts to `shape` as in numpy), e.g. ``tl.load(cache,
    [rows[:, None], 0], [R, D])`` reads row ``rows[i]`` into row i; the other offsets
    start a box as usual. (Triton's `other=` is spelled `fill=` here.)"""
    tensor = tensor_argument(tensor, "the first argument of tl.load", offsets)
    if other is not None:  # Triton's name; a tile of others is tl.where's job here
        example = repr(other) if is_python_number(other) else "0.0"
        raise current().error(
            "tl.load names the value of masked-out elements fill= (a Python number), not "
            f"other=: tl.load(..., mask=m, fill={example})"
        )
    if shape is None:
        return _load_scalar(tensor, offsets, fill, layout, mask)
    dims = static_shape(shape)
    if len(dims) > tensor.ndim:
        raise current().error(_rank_mismatch(tensor, dims))
    box = leading_ones(dims, tensor.ndim)  # the box read: the tile with leading 1s
    fill_const = None if fill is None else _fill_constant(fill, tensor.dtype)
    given = None if layout is None else checked_layout(layout, dims, "the layout of tl.load")
    offs, gathered, selected = _load_operands(tensor, offsets, dims, box, mask)
    if selected is NOTHING:  # no element is read: the fill, in the layout asked for
        fill_const = python_constant(0, tensor.dtype) if fill_const is None else fill_const
        result_type = TileType(tensor.dtype, dims, given)
        return emit_result(ir.Full, tensor.var.name, result_type, fill_const)
    # a layout of the tile's shape, with leading unit dims, is the box's: both are given
    boxed = given if given is None or box == dims else given.reshape(box)
    result_type = TileType(tensor.dtype, box, boxed)
    name, var = tensor.var.name, tensor.var
    if gathered is not None:
        axis, rows = gathered
        tile = emit_result(
            ir.Gather, name, result_type, var, offs, rows, axis, fill_const, selected
        )
    else:
        tile = emit_result(ir.Load, name, result_type, var, offs, fill_const, selected)
    return _as_shape(tile, dims, given) if box != dims else tile


def _load_operands(tensor: Tensor, offsets: object, dims, box, mask):
    """The checked operands of a load of a tile of `dims` reading the box `box`: (scalar
    offsets, (dimension, index var) of a gather or None, the mask var, None or
    `NOTHING`)."""
    gathered = gather_axis(tensor, offsets)
    if gathered is not None:
        axis, index = gathered
        gathered = (axis, gather_index(index, dims, axis, len(box)).var)
        offsets = [0 if d == axis else o for d, o in enumerate(offsets)]
    offs = offsets_of(tensor, offsets)
    selected = None if mask is None else _mask(mask, dims, box)
    if selected is None or selected is NOTHING:
        return offs, gathered, selected
    return offs, gathered, selected.var


def _rank_mismatch(tensor: Tensor, dims: tuple[int, ...]) -> str:
    """A tile shape of more dimensions than the tensor's; from a flat tensor, how a
    many-dimensional gather is written (the index flattened, the tile reshaped)."""
    name = tensor.var.name
    text = (
        f"{name} has {tensor.ndim} dimensions but the tile shape {list(dims)} has "
        f"{len(dims)} (a tile may have fewer dimensions than the tensor, the box's missing "
        "leading ones being 1, but not more)"
    )
    if tensor.ndim == 1:
        flat = math.prod(dims)
        text += (
            f"; gather from a flat tensor with a flat index and reshape the tile: "
            f"tl.reshape(tl.load({name}, [tl.reshape(index, [{flat}])], [{flat}]), {list(dims)})"
            " (a mask is flattened alike)"
        )
    return text


def _load_scalar(tensor: Tensor, offsets, fill, layout, mask) -> Scalar:
    """`tl.load(t, [i, j])`: one element as a block-uniform scalar. A runtime mask moves
    the first offset outside the tensor (-1) where it fails: the element is then not
    read, and reads `fill`, as any element outside the tensor."""
    builder = current()
    if layout is not None:
        raise builder.error("tl.load without a shape reads one scalar, which has no layout")
    if gather_axis(tensor, offsets) is not None:
        raise builder.error(
            "tl.load with a tile among its offsets gathers a tile: give the shape of the "
            "tile to read (tl.load(t, offsets, shape))"
        )
    offs = offsets_of(tensor, offsets)
    fill_const = None if fill is None else _fill_constant(fill, tensor.dtype)
    known = None if mask is None else _constant_mask(mask)
    if known is False:
        return Scalar(python_constant(0, tensor.dtype) if fill_const is None else fill_const)
    if mask is not None and known is None:
        if not isinstance(mask, Scalar):
            raise builder.error(
                "the mask of a scalar tl.load (no shape) must be a u1 scalar or a bool, got "
                f"{describe(mask)}"
            )
        outside = Scalar(python_constant(-1, INDEX))
        first = elementwise("where", _scalar_mask(mask), Scalar(offs[0]), outside)
        offs = (first.value, *offs[1:])
    return emit_result(
        ir.LoadScalar, tensor.var.name, ScalarType(tensor.dtype), tensor.var, offs, fill_const
    )


def _fill_constant(fill: object, dtype: DType) -> ir.Const:
    if not is_python_number(fill):
        raise current().error(f"fill must be a Python number, got {describe(fill)}")
    why = _unrepresentable(float(fill), dtype) if dtype.is_float else None
    if why is not None:
        raise current().error(f"fill {fill!r} is not representable in {dtype}, {why}")
    return python_constant(fill, dtype)


def _unrepresentable(fill: float, dtype: DType) -> str | None:
    """Why the cast of `fill` to a float dtype is not `fill` up to rounding (a NaN that
    becomes a number, a number that becomes NaN, infinity or ±max), or None. Silently
    loading such a fill would read a different kind of value than the one written."""
    value = float(dtypes.quantize(fill, dtype))
    if math.isnan(fill):
        return None if math.isnan(value) else f"which has no NaN (a cast gives {value})"
    if math.isinf(fill):
        if value == fill:
            return None
        if not dtype.has_inf:
            return "which has no infinity"
        return f"whose cast saturates infinity to {value}"
    if dtype == dtypes.e8m0 and (fill <= 0 or math.isnan(value)):
        return "which holds the powers of two 2^-127 ... 2^127 and NaN only (fill=1.0 is 2^0)"
    if abs(fill) > dtype.max:
        return f"whose largest finite magnitude is {dtype.max}"
    return None


# -- stores and atomic additions ---------------------------------------------------------


def store(tensor, offsets, value, mask=None) -> None:
    """Writes a tile at `offsets`; elements outside the tensor, and elements where `mask`
    (a u1 tile that broadcasts to the value's shape, e.g. ``tl.arange(0, B) < n``, a u1
    scalar or a bool; None: all) fails, are skipped: never written (a packed code beside
    a skipped one keeps the skipped one's bits). With an integer tile among the offsets
    (a scatter), element e goes where a gather of the tile's shape would read it from
    (see `load`); of two elements sent to one place, one is written. A scatter's value
    may be a number or a scalar: it is written at every index. A tile of fewer
    dimensions than the tensor is written as if leading 1s were prepended to its shape
    (a [BM, D] tile into a [B, S, D] tensor at [b, m, 0]; a rank-0 tile, e.g. a
    `tl.sum`, writes one element); its mask and index tile broadcast to its shape."""
    builder = current()
    tensor = tensor_argument(tensor, "the first argument of tl.store")
    written = _written(tensor, offsets, value, mask, ("tl.store", "storing", "the stored value"))
    if written.selected is NOTHING:
        return
    offs, scattered, tile, selected, _ = written
    if scattered is None:
        builder.emit(ir.Store(tensor.var, offs, tile.var, selected, loc=builder.loc))
        return
    axis, rows = scattered
    builder.emit(ir.Scatter(tensor.var, offs, rows, axis, tile.var, selected, loc=builder.loc))


def atomic_add(tensor, offsets, values, mask=None) -> Tile:
    """Adds a tile into the box at `offsets`, atomically per element: ``tensor[e] +=
    values[e]`` for the elements inside the tensor where `mask` (a u1 tile that
    broadcasts to the values' shape, a u1 scalar or a bool; None: all) holds. Tensors
    of f16, bf16, f32, f64, i32, u32, i64 and u64. Float sums depend on the order in
    which blocks add (each addition rounds once in the tensor's dtype); integer sums are
    exact (wrapping). The values may have fewer dimensions than the tensor, as in
    `store`. With an integer tile among the offsets (a scatter-add), element e
    adds where a gather of the values' shape would read it from (see `load`), and
    elements sent to one place all add; there the values may be a number or a scalar,
    converted to the tensor's dtype and added at every index: ``tl.atomic_add(hist,
    [bins], 1)``.

    Returns a tile of the values' shape and the tensor's dtype: what each element held
    just before its own update (a fetch-add: ``slot = tl.atomic_add(cursor, [e], 1)``
    claims distinct slots), 0 where nothing was updated (masked off, outside the
    tensor). Left unused, it costs nothing (a GPU then issues ``red``, not ``atom``)."""
    return _atomic("add", tensor, offsets, values, mask)


def atomic_max(tensor, offsets, values, mask=None) -> Tile:
    """``tensor[e] = tl.maximum(tensor[e], values[e])``, atomically per element, with
    `atomic_add`'s offsets, scatters, masks, dtypes and result (the values before).
    Floats compare as `tl.maximum` does: a NaN value is ignored (a NaN already in the
    tensor is replaced), -0.0 < +0.0. The tensor's final value does not depend on the
    order in which blocks update (an fp8 amax: ``tl.atomic_max(amax, [0],
    tl.max(tl.abs(x)))``: a rank-0 value updates one element)."""
    return _atomic("max", tensor, offsets, values, mask)


def atomic_min(tensor, offsets, values, mask=None) -> Tile:
    """``tensor[e] = tl.minimum(tensor[e], values[e])``, atomically per element, as
    `atomic_max` (NaN ignored, -0.0 < +0.0; returns the values before)."""
    return _atomic("min", tensor, offsets, values, mask)


def atomic_xchg(tensor, offsets, values, mask=None) -> Tile:
    """``tensor[e] = values[e]``, atomically per element, returning what each element
    held before (0 where masked off or outside the tensor), with `atomic_add`'s offsets,
    scatters and masks. Tensors of i32, u32, i64, u64, f32 and f64 (bits move as they
    are)."""
    return _atomic("xchg", tensor, offsets, values, mask)


def atomic_cas(tensor, offsets, expected, desired, mask=None) -> Tile:
    """Compare-and-swap per element: where ``tensor[e] == expected[e]``, atomically
    ``tensor[e] = desired[e]``; returns what each element held before, so ``old ==
    expected`` says which elements this call swapped (0 where masked off or outside the
    tensor). `expected` is a tile of the desired values' shape, or a number or scalar
    for all; tensors of i32, u32, i64 and u64. Offsets, scatters and masks as in
    `atomic_add` (``tl.atomic_cas(owner, [keys], 0, me)``: of the blocks that race for
    a key, exactly one sees 0)."""
    return _atomic("cas", tensor, offsets, desired, mask, expected)


#: What each atomic op's errors call it: (the noun of "need a tensor of", the verb of
#: "<verb> a <dtype> tile into").
_ATOMIC_WORDS = {
    "add": ("atomic additions", "adding"),
    "xchg": ("atomic exchanges", "exchanging"),
    "cas": ("atomic compare-and-swaps", "swapping"),
}


def _atomic(op: str, tensor, offsets, values, mask, expected=None) -> Tile:
    builder = current()
    name = f"tl.atomic_{op}"
    tensor = tensor_argument(tensor, f"the first argument of {name}")
    noun, verb = _ATOMIC_WORDS.get(op, (f"atomic {op} updates", f"{name} of"))
    allowed = ir.ATOMIC_DTYPES[op]
    if tensor.dtype not in allowed:
        whole = "32- or 64-bit" if op in ("xchg", "cas") else "16-, 32- or 64-bit"
        raise builder.error(
            f"{name} into {tensor.var.name}, a tensor of {tensor.dtype}: {noun} need a tensor "
            f"of {', '.join(map(str, allowed))} (whole {whole} elements)"
        )
    what = "the added value" if op == "add" else f"the value of {name}"
    written = _written(tensor, offsets, values, mask, (name, verb, what))
    offs, scattered, tile, selected, shape = written
    if expected is not None:
        expected = _as_shape(_expected_tile(tensor, shape, expected), tile.shape).var
    if selected is NOTHING:  # nothing is updated: every element reads 0
        return full(shape, 0, tensor.dtype)
    result = builder.var(f"{tensor.var.name}_old", TileType(tensor.dtype, tile.shape))
    if scattered is None:
        instr = ir.Atomic(
            tensor.var, offs, tile.var, selected, op, result, expected, loc=builder.loc
        )
    else:
        axis, rows = scattered
        instr = ir.ScatterAtomic(
            tensor.var, offs, rows, axis, tile.var, selected, op, result, expected, loc=builder.loc
        )
    builder.emit(instr)
    return _as_shape(Tile(result), shape)  # the values' shape, as the caller gave it


def _expected_tile(tensor: Tensor, shape: tuple[int, ...], expected: object) -> Tile:
    """The `expected` operand of `tl.atomic_cas`: a number or scalar converted to the
    tensor's dtype (as `tl.full` does), or a tile of its dtype and the desired values'
    shape, `shape`."""
    if isinstance(expected, Scalar) or is_python_number(expected):
        return full(shape, expected, tensor.dtype)
    if not isinstance(expected, Tile):
        raise current().error(
            f"expected (of tl.atomic_cas) must be a tile, a scalar or a number, got "
            f"{describe(expected)}"
        )
    if expected.dtype != tensor.dtype:
        raise current().error(
            f"expected (of tl.atomic_cas) is a {expected.dtype} tile but {tensor.var.name} is a "
            f"tensor of {tensor.dtype}: convert it with .to(tl.{tensor.dtype})"
        )
    if tuple(expected.shape) != tuple(shape):
        raise current().error(
            f"expected (of tl.atomic_cas) has shape {list(expected.shape)}, the desired values "
            f"{list(shape)}: give one tile of that shape (or a number for all)"
        )
    return expected


class _Written(NamedTuple):
    """The checked operands of a store or an atomic update."""

    offsets: tuple[ir.Value, ...]
    #: (dimension, index var) of a scatter, or None
    scattered: tuple[int, ir.Var] | None
    #: the value tile, of the box's shape (the tensor's rank)
    tile: Tile
    #: the mask var, None (every element) or `NOTHING` (a constant False)
    selected: ir.Var | str | None
    #: the value's own shape (the box's without its added leading 1s)
    shape: tuple[int, ...]


def _written(tensor: Tensor, offsets: object, value: object, mask: object, words) -> _Written:
    """The checked operands of a store or an atomic update. A value tile of fewer
    dimensions than the tensor is reshaped to the box (leading 1s); its mask and a
    scatter's index tile broadcast to its own shape. `words`: the operation, its verb
    and what its value is, for the errors."""
    scattered = gather_axis(tensor, offsets)
    if scattered is not None:  # the index tile's dimension starts at 0
        offsets = [0 if isinstance(o, Tile) else o for o in offsets]
    offs = offsets_of(tensor, offsets)
    value = _value_tile(tensor, value, scattered, words)
    shape = tuple(value.shape)
    box = leading_ones(shape, tensor.ndim)
    tile = _as_shape(value, box)
    selected = None if mask is None else _mask(mask, shape, box)
    if scattered is not None:
        axis, index = scattered
        scattered = (axis, gather_index(index, shape, axis, tensor.ndim).var)
    if selected is not NOTHING and selected is not None:
        selected = selected.var
    return _Written(offs, scattered, tile, selected, shape)


def _value_tile(tensor: Tensor, value: object, scattered, words) -> Tile:
    """The value of a store or an atomic update, checked: a tile of the tensor's dtype
    and at most its rank (a number or scalar only in a scatter, made a tile)."""
    builder = current()
    op, verb, what = words
    if isinstance(value, Scalar) or is_python_number(value):
        if scattered is None:
            raise builder.error(
                f"{op} into a box needs a tile of values, got {describe(value)}: the box's shape "
                "is the tile's, and a number or scalar has none; build one with "
                f"tl.full(shape, value, tl.{tensor.dtype}) (or give an index tile among the "
                "offsets: a scatter takes its shape from the index tile)"
            )
        value = _scattered_value(tensor, scattered, value)
    if not isinstance(value, Tile):
        raise builder.error(f"{what} must be a tile, got {describe(value)}")
    if value.dtype != tensor.dtype:
        raise builder.error(
            f"{verb} a {value.dtype} tile into {tensor.var.name}, a tensor of {tensor.dtype}: "
            f"convert it with .to(tl.{tensor.dtype})"
        )
    if value.ndim > tensor.ndim:
        raise builder.error(_too_many_dims(tensor, value, verb))
    return value


def _too_many_dims(tensor: Tensor, value: Tile, verb: str) -> str:
    """A value of more dimensions than its tensor; when the extra leading ones are 1, the
    reshape that drops them."""
    shape, extra = list(value.shape), value.ndim - tensor.ndim
    text = (
        f"{verb} a rank-{value.ndim} tile {shape} into {tensor.var.name}, a rank-{tensor.ndim} "
        "tensor: a tile may have fewer dimensions than the tensor (the box's missing leading "
        "ones are 1), but not more"
    )
    if all(d == 1 for d in shape[:extra]):
        text += f"; drop its leading 1s with tl.reshape(tile, {shape[extra:]})"
    return text


def _scattered_value(tensor: Tensor, scattered: tuple[int, Tile], value) -> Tile:
    """A number or scalar written (added) at every index of a scatter: a tile of the
    index tile's shape (padded to the tensor's rank) of the value converted to the
    tensor's dtype, as `tl.full` converts."""
    axis, index = scattered
    if index.ndim > tensor.ndim:
        raise current().error(
            f"the index tile of offset {axis} (a gather or scatter) has rank {index.ndim}, "
            f"more than {tensor.var.name}'s {tensor.ndim}"
        )
    return full((1,) * (tensor.ndim - index.ndim) + tuple(index.shape), value, tensor.dtype)
