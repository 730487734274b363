"""The values a kernel body manipulates while it is being compiled.

`Tile` (a register tile), `Scalar` (a block-uniform runtime scalar), `Tensor` (a global
tensor parameter) and `Shared` (a shared-memory tile) wrap block-IR `Var`s. Python
numbers stay Python numbers until they meet one of these. The operators of tiles and
scalars (`+ - * / // % & | ^ << >> ~`, comparisons) and the conversion rules between
operands live here:

- two tiles must have the same dtype (convert with `.to()`); shapes broadcast as in
  numpy;
- a Python number takes the dtype of the tile or scalar it meets (a float meeting an
  integer dtype is an error);
- a runtime scalar meeting a tile of another dtype is converted to the tile's dtype.

There is no `**` on tiles and runtime scalars (no power instruction): it is an error
that says to multiply (`t * t`).

The operations that tiles and shared tiles offer as methods (`.reshape`, `.T`, `.view`,
`t[None, :]`, `.load()`, `.store()`) are implemented here, with the compile-time argument
checks they need (`static_int`, `static_shape`, `as_dtype`, ...); `tilelang.lang.ops`
builds the public `tl.*` functions on them. This module imports nothing of `ops`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout
from tilelang.ir.ops import ELEMENTWISE, ElementwiseOp, Operand
from tilelang.ir.shape_expr import Lit, ShapeExpr, Sym
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.lang.builder import current
from tilelang.lang.errors import no_power_message

INDEX = dtypes.i32  # the dtype of block indices, sizes, loop variables and offsets


class IRValue:
    """Base of the values that stand for block-IR values."""

    var: ir.Var


@dataclass(frozen=True, eq=False)
class Scalar(IRValue):
    """A block-uniform scalar; `value` is a Var or an immediate Const."""

    value: ir.Var | ir.Const

    @property
    def dtype(self) -> DType:
        return self.value.dtype if isinstance(self.value, ir.Const) else self.value.type.dtype

    @property
    def var(self) -> ir.Var:  # type: ignore[override]
        if isinstance(self.value, ir.Var):
            return self.value
        raise current().error("an immediate has no variable")

    def to(self, dtype: DType) -> Scalar:
        return cast(self, dtypes.dtype(dtype))

    def item(self) -> Scalar:
        """Itself (indexing every dimension of a tile already gives its element)."""
        return self

    def __bool__(self) -> bool:
        raise current().error(
            "a runtime scalar has no compile-time truth value; use it in an `if` statement "
            "(which becomes a runtime branch) or make it a tl.constexpr"
        )

    def __index__(self) -> int:
        raise current().error(
            "a runtime scalar is used where a compile-time integer is needed; "
            "make it a tl.constexpr"
        )

    def __repr__(self) -> str:
        return f"Scalar({self.value}: {self.dtype})"


@dataclass(frozen=True, eq=False)
class Tile(IRValue):
    """A register tile of the thread block."""

    var: ir.Var

    @property
    def type(self) -> TileType:
        return self.var.type

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def to(self, dtype: DType | str) -> Tile:
        return cast(self, dtypes.dtype(dtype))

    def view(self, dtype: DType | str, shape=None, layout=None) -> Tile:
        return view_tile(self, dtype, shape, layout)

    def reshape(self, *shape) -> Tile:
        return reshape_tile(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], (list, tuple)) else shape
        )

    @property
    def T(self) -> Tile:
        return transpose_tile(self)

    def __getitem__(self, index) -> Tile | Scalar:
        return index_tile(self, index)

    def item(self) -> Scalar:
        """The element of a rank-0 tile (e.g. `tl.sum(x)`) as a block-uniform scalar."""
        return tile_item(self)

    def __bool__(self) -> bool:
        raise current().error(
            "a tile has no single truth value: branching on it would be non-uniform "
            "control flow; use tl.where(condition, a, b)"
        )

    def __repr__(self) -> str:
        return f"Tile({self.type})"


@dataclass(frozen=True, eq=False)
class Tensor(IRValue):
    """A global tensor parameter; `sizes` maps size names to their runtime scalars."""

    var: ir.Var
    sizes: dict[str, Scalar]

    @property
    def dtype(self) -> DType:
        return self.var.type.dtype

    @property
    def ndim(self) -> int:
        return self.var.type.rank

    @property
    def shape(self) -> tuple[Scalar | int, ...]:
        """The sizes as runtime scalars (computed where a size is an expression)."""
        return tuple(_evaluate_size(d, self.sizes) for d in self.var.type.shape)

    def __repr__(self) -> str:
        return f"Tensor({self.var.name}: {self.var.type})"


def _evaluate_size(expr: ShapeExpr, sizes: dict[str, Scalar]) -> Scalar | int:
    if isinstance(expr, Lit):
        return expr.value
    if isinstance(expr, Sym):
        return sizes[expr.name]
    lhs, rhs = _evaluate_size(expr.lhs, sizes), _evaluate_size(expr.rhs, sizes)
    return {
        "+": operator.add,
        "-": operator.sub,
        "*": operator.mul,
        "//": operator.floordiv,
        "%": operator.mod,
    }[expr.op](lhs, rhs)


@dataclass(frozen=True, eq=False)
class Shared(IRValue):
    """A tile in shared memory."""

    var: ir.Var

    @property
    def dtype(self) -> DType:
        return self.var.type.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.var.type.shape

    def load(self) -> Tile:
        return shared_load(self)

    def store(self, tile: Tile) -> None:
        shared_store(self, tile)


Operable = Tile | Scalar | int | float | bool


# -- conversions -------------------------------------------------------------------------


def describe(value: object) -> str:
    """A value as error messages name it: in the user's words (dtype and shape), never
    by its IR name."""
    if isinstance(value, Tile):
        return f"a tile {list(value.shape)} of {value.dtype}"
    if isinstance(value, Scalar):
        if isinstance(value.value, ir.Const):
            return f"the constant {value.value.value} of {value.dtype}"
        return f"a runtime scalar of {value.dtype}"
    if isinstance(value, Tensor):
        return f"the tensor {value.var.name} of {value.dtype}"
    if isinstance(value, Shared):
        return f"a shared tile {list(value.shape)} of {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def is_python_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, IRValue)


def python_constant(value: int | float | bool, dtype: DType) -> ir.Const:
    """A Python number as an immediate of `dtype`, when the dtype can hold it."""
    if isinstance(value, bool):
        value = int(value)
    if dtype.is_float:
        return ir.Const(float(value), dtype)
    if isinstance(value, float):
        if not value.is_integer():
            raise current().error(f"the float {value!r} meets an integer value of dtype {dtype}")
        value = int(value)
    if not dtype.min <= value <= dtype.max:
        raise current().error(
            f"the constant {value} does not fit dtype {dtype} ({dtype.min}..{dtype.max})"
            + _unsigned_hint(value, dtype)
        )
    return ir.Const(value, dtype)


def _unsigned_hint(value: int, dtype: DType) -> str:
    """A hash constant (0x85EBCA6B) meeting a signed type: its bits fit the unsigned one."""
    if dtype.signed and dtype.max < value < 1 << dtype.bits:
        return f"; for bit arithmetic view x as unsigned first: tl.view(x, tl.u{dtype.bits})"
    return ""


def default_dtype(value: int | float | bool) -> DType:
    if isinstance(value, bool):
        return dtypes.u1
    return dtypes.f32 if isinstance(value, float) else INDEX


def as_scalar(value: Scalar | int | float | bool, dtype: DType | None = None) -> Scalar:
    if isinstance(value, Scalar):
        return value if dtype is None or value.dtype == dtype else cast(value, dtype)
    if isinstance(value, Tile):
        raise current().error(
            f"a tile ({value.type}) is used where a block-uniform scalar is needed"
            + _one_element_hint(value)
        )
    if is_python_number(value):
        return Scalar(python_constant(value, dtype or default_dtype(value)))
    raise current().error(f"expected a number or runtime scalar, got {type(value).__name__}")


def _one_element_hint(tile: Tile) -> str:
    """How to take the value of a tile that holds one element."""
    if any(size != 1 for size in tile.shape):
        return ""
    return "; use .item() to take its value"


def ir_value(value: Tile | Scalar) -> ir.Value:
    return value.value if isinstance(value, Scalar) else value.var


def emit_result(instr_type, hint: str, result_type, *args, **kwargs):
    """Emits `instr_type(result, *args)` and wraps its result in a Tile or Scalar."""
    builder = current()
    result = builder.var(hint, result_type)
    builder.emit(instr_type(result, *args, loc=builder.loc, **kwargs))
    return wrap(result)


def wrap(var: ir.Var) -> Tile | Scalar | Shared:
    if isinstance(var.type, TileType):
        return Tile(var)
    if isinstance(var.type, ScalarType):
        return Scalar(var)
    if isinstance(var.type, SharedType):
        return Shared(var)
    if isinstance(var.type, TensorType):
        raise current().error("a tensor cannot be produced by an operation")
    raise TypeError(var.type)


# -- casts and broadcasting --------------------------------------------------------------


def cast(value: Tile | Scalar, dtype: DType) -> Tile | Scalar:
    if value.dtype == dtype:
        return value
    if isinstance(value, Scalar):
        if isinstance(value.value, ir.Const):
            return Scalar(_cast_constant(value.value, dtype))
        return emit_result(ir.Cast, "cvt", ScalarType(dtype), value.value)
    return emit_result(ir.Cast, "cvt", TileType(dtype, value.shape), value.var)


def _cast_constant(const: ir.Const, dtype: DType) -> ir.Const:
    codes = dtype.encode(np.asarray([const.value], dtype=np.float64))
    decoded = dtype.decode(codes)[0]
    return ir.Const(float(decoded) if dtype.is_float else int(decoded), dtype)


def broadcast_shapes(lhs: tuple[int, ...], rhs: tuple[int, ...]) -> tuple[int, ...]:
    rank = max(len(lhs), len(rhs))
    lhs = (1,) * (rank - len(lhs)) + lhs
    rhs = (1,) * (rank - len(rhs)) + rhs
    shape = []
    for a, b in zip(lhs, rhs, strict=True):
        if a != b and 1 not in (a, b):
            raise current().error(f"shapes {list(lhs)} and {list(rhs)} do not broadcast")
        shape.append(max(a, b))
    return tuple(shape)


def broadcast_to(tile: Tile, shape: tuple[int, ...]) -> Tile:
    if tile.shape == shape:
        return tile
    if len(tile.shape) > len(shape):
        raise current().error(
            f"cannot broadcast a tile of shape {list(tile.shape)} to {list(shape)}"
        )
    if len(tile.shape) < len(shape):
        padded = (1,) * (len(shape) - len(tile.shape)) + tile.shape
        tile = emit_result(ir.Reshape, tile.var.name, TileType(tile.dtype, padded), tile.var)
    for have, want in zip(tile.shape, shape, strict=True):
        if have not in (1, want):
            raise current().error(
                f"cannot broadcast a tile of shape {list(tile.shape)} to {list(shape)}"
            )
    return emit_result(ir.Broadcast, tile.var.name, TileType(tile.dtype, shape), tile.var)


# -- elementwise operations --------------------------------------------------------------


def elementwise(op_name: str, *operands: Operable) -> Tile | Scalar:
    """Emits an elementwise operator after unifying dtypes and broadcasting shapes."""
    op = ELEMENTWISE[op_name]
    condition = None
    if op_name == "where":
        condition, operands = _as_condition(operands[0]), operands[1:]
    dtype = _common_dtype(op_name, operands)
    _check_operand_class(op_name, op, dtype)
    values = [_coerce(v, dtype) for v in operands]
    if condition is not None:
        values.insert(0, condition)
    tiles = [v for v in values if isinstance(v, Tile)]
    result_dtype = op.result_dtype(dtype)
    if not tiles:
        args = tuple(v.value for v in values)
        return emit_result(ir.Compute, op_name, ScalarType(result_dtype), op_name, args)
    shape = tiles[0].shape
    for tile in tiles[1:]:
        shape = broadcast_shapes(shape, tile.shape)
    args = tuple(broadcast_to(v, shape).var if isinstance(v, Tile) else v.value for v in values)
    return emit_result(ir.Compute, op_name, TileType(result_dtype, shape), op_name, args)


def _as_condition(value: Operable) -> Tile | Scalar:
    if is_python_number(value):
        return Scalar(python_constant(bool(value), dtypes.u1))
    if value.dtype != dtypes.u1:
        raise current().error(
            f"a condition must be a comparison result (dtype u1), got dtype {value.dtype}"
        )
    return value


def _common_dtype(op_name: str, operands: tuple[Operable, ...]) -> DType:
    tiles = [v for v in operands if isinstance(v, Tile)]
    scalars = [v for v in operands if isinstance(v, Scalar)]
    for group in (tiles, scalars):
        kinds = {v.dtype for v in group}
        if len(kinds) > 1:
            names = " and ".join(sorted(str(k) for k in kinds))
            raise current().error(
                f"`{_spelling(op_name)}` mixes dtypes {names}; convert one side with .to(dtype)"
            )
    if tiles:
        return tiles[0].dtype
    if scalars:
        return scalars[0].dtype
    python_numbers = [v for v in operands if is_python_number(v)]
    return dtypes.f32 if any(isinstance(v, float) for v in python_numbers) else INDEX


def _check_operand_class(op_name: str, op: ElementwiseOp, dtype: DType) -> None:
    if op.accepts(dtype):
        return
    convert = "f32" if op.operands is Operand.FLOAT else "u32" if op.widths else None
    hint = f"; convert with .to(tl.{convert})" if convert else ""
    what = f"`{_spelling(op_name)}` needs {op.operand_noun} operands, got {dtype}"
    raise current().error(what + (" (use / for float division)" if op_name == "rem" else hint))


def _coerce(value: Operable, dtype: DType) -> Tile | Scalar:
    if isinstance(value, Tile):
        return value
    if isinstance(value, Scalar):
        if value.dtype != dtype and not dtype.is_float:  # 0.5 -> 0, or -1 -> 0 in u8: silently
            raise current().error(
                f"a runtime {value.dtype} scalar meets a tile of {dtype}: converting it could "
                f"change its value; convert one side with .to() (the tile to {value.dtype}, "
                f"or the scalar to {dtype})"
            )
        return value if value.dtype == dtype else cast(value, dtype)
    if is_python_number(value):
        return Scalar(python_constant(value, dtype))
    raise current().error(f"cannot use a {type(value).__name__} in arithmetic with tiles")


def _spelling(op_name: str) -> str:
    return ELEMENTWISE[op_name].python or op_name


# -- Python operators --------------------------------------------------------------------

_BINARY_DUNDERS = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "and": "and",
    "or": "or",
    "xor": "xor",
    "lshift": "shl",
    "rshift": "shr",
    "mod": "rem",
}
_COMPARISON_DUNDERS = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}


def true_divide(lhs: Operable, rhs: Operable) -> Tile | Scalar:
    dtype = _common_dtype("div", (lhs, rhs))
    if not dtype.is_float:
        raise current().error(
            f"`/` on integers ({dtype}): use `//` for integer division or convert with .to(tl.f32)"
        )
    return elementwise("div", lhs, rhs)


def floor_divide(lhs: Operable, rhs: Operable) -> Tile | Scalar:
    dtype = _common_dtype("div", (lhs, rhs))
    if dtype.is_float:
        raise current().error(f"`//` on floats ({dtype}): use `/` and tl.floor")
    return elementwise("div", lhs, rhs)


def _binary(op_name: str, reflected: bool):
    def method(self, other):
        if not isinstance(other, (Tile, Scalar)) and not is_python_number(other):
            return NotImplemented
        return elementwise(op_name, other, self) if reflected else elementwise(op_name, self, other)

    return method


def _install_operators(cls: type) -> None:
    for dunder, op_name in _BINARY_DUNDERS.items():
        setattr(cls, f"__{dunder}__", _binary(op_name, False))
        setattr(cls, f"__r{dunder}__", _binary(op_name, True))
    for dunder, op_name in _COMPARISON_DUNDERS.items():
        setattr(cls, f"__{dunder}__", _binary(op_name, False))
    cls.__truediv__ = lambda self, other: true_divide(self, other)
    cls.__rtruediv__ = lambda self, other: true_divide(other, self)
    cls.__floordiv__ = lambda self, other: floor_divide(self, other)
    cls.__rfloordiv__ = lambda self, other: floor_divide(other, self)
    cls.__neg__ = lambda self: elementwise("neg", self)
    cls.__pos__ = lambda self: self
    cls.__invert__ = lambda self: elementwise("invert", self)
    cls.__abs__ = lambda self: elementwise("abs", self)
    # The frontend reports `**` with the user's own operand text; these catch `**` in
    # plain Python helpers that the kernel calls at compile time.
    cls.__pow__ = lambda self, other: _no_power(self, other)
    cls.__rpow__ = lambda self, other: _no_power(other, self)
    cls.__hash__ = object.__hash__


def _no_power(base: object, exponent: object):
    raise current().error(no_power_message(isinstance(base, IRValue), exponent))


for _cls in (Tile, Scalar):
    _install_operators(_cls)


def cdiv(a: Scalar | int, b: Scalar | int) -> Scalar | int:
    """Ceiling division of non-negative integers: the number of tiles that cover `a`."""
    if is_python_number(a) and is_python_number(b):
        return -(-int(a) // int(b))
    quotient = floor_divide(a, b)  # plus a % b != 0: (a + b - 1) // b wraps near the top
    rounds_up = elementwise("ne", elementwise("rem", a, b), 0).to(quotient.dtype)
    return elementwise("add", quotient, rounds_up)


# -- compile-time arguments --------------------------------------------------------------


def static_int(value: object, what: str) -> int:
    """`value` as a compile-time int, or an error that says a runtime value was given."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, (Scalar, Tile)):
            raise current().error(
                f"{what} must be known at compile time (a Python int or tl.constexpr), "
                "but a runtime value was given"
            )
        raise current().error(f"{what} must be an int, got {value!r}")
    return value


def static_shape(shape: object, what: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)):
        raise current().error(f"{what} must be a list of ints, got {shape!r}")
    dims = tuple(static_int(d, f"each size in {what}") for d in shape)
    if any(d <= 0 for d in dims):
        raise current().error(f"{what} {list(dims)} has a size that is not positive")
    return dims


def static_shape_like(values: object) -> list[int]:
    if not isinstance(values, (list, tuple)):
        raise current().error(f"expected a list of ints, got {values!r}")
    return [static_int(v, "each entry") for v in values]


def as_dtype(value: object) -> DType:
    """A dtype named by the user (`tl.f16`, `"f16"`, ...), or an error at their line."""
    try:
        return dtypes.dtype(value)
    except (ValueError, TypeError) as error:
        raise current().error(str(error)) from None


def require_tile(value: object, what: str) -> Tile:
    if not isinstance(value, Tile):
        raise current().error(f"{what} must be a tile, got {describe(value)}")
    return value


# -- shape operations of tiles -----------------------------------------------------------


def reshape_tile(tile: Tile, shape: object) -> Tile:
    dims = static_shape(shape)
    if _numel(dims) != _numel(tile.shape):
        raise current().error(
            f"cannot reshape a tile of shape {list(tile.shape)} ({_numel(tile.shape)} elements) "
            f"to {list(dims)} ({_numel(dims)} elements)"
        )
    if dims == tile.shape:
        return tile
    return emit_result(ir.Reshape, tile.var.name, TileType(tile.dtype, dims), tile.var)


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def transpose_tile(tile: Tile, perm: object = None) -> Tile:
    order = tuple(reversed(range(tile.ndim))) if perm is None else tuple(static_shape_like(perm))
    if sorted(order) != list(range(tile.ndim)):
        raise current().error(f"{list(order)} is not a permutation of the {tile.ndim} dimensions")
    shape = tuple(tile.shape[i] for i in order)
    return emit_result(ir.Transpose, tile.var.name, TileType(tile.dtype, shape), tile.var, order)


def expand_dims_by_index(tile: Tile, index: object) -> Tile:
    """`tile[None, :]`: new axes and whole dimensions (`index_tile` does the rest)."""
    return index_tile(tile, index)


def tile_item(tile: Tile) -> Scalar:
    """The element of a one-element tile (rank 0, or every dimension 1, as numpy's
    `item` takes) as a block-uniform scalar (`item`)."""
    if math.prod(tile.shape) != 1:
        raise current().error(
            f".item() takes the element of a one-element tile (e.g. tl.sum(x)), but this "
            f"tile has shape {list(tile.shape)}; index it down to one element first (t[i, j])"
        )
    if tile.ndim != 0:
        tile = reshape_tile(tile, ())
    return emit_result(ir.Item, tile.var.name, ScalarType(tile.dtype), tile.var)


def index_tile(tile: Tile, index: object) -> Tile | Scalar:
    """Static indexing, as numpy's basic indexing with compile-time ints: `None` (a new
    axis of size 1), `:` or `a:b` (a range, step 1, negative bounds from the end),
    an int (that element, the dimension dropped; negative from the end) and one `...`.
    A box narrower than the tile is a `slice`, then a `reshape` for dropped and new
    axes. Indexing every dimension of a tile with an int gives that element as a
    block-uniform scalar (`item`), as numpy gives a scalar."""
    found = _index_tile(tile, index)
    if found.ndim == 0 and tile.ndim > 0:
        return tile_item(found)
    return found


def _index_tile(tile: Tile, index: object) -> Tile:
    items = list(index) if isinstance(index, tuple) else [index]
    if sum(item is Ellipsis for item in items) > 1:
        raise current().error("a tile index may hold at most one ...")
    used = sum(item is not None and item is not Ellipsis for item in items)
    if used > tile.ndim:
        raise current().error(
            f"too many indices for a tile of rank {tile.ndim}: {_describe_index(items)}"
        )
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at : at + 1] = [slice(None)] * (tile.ndim - used)
    else:
        items += [slice(None)] * (tile.ndim - used)
    starts, stops, shape, dim = [], [], [], 0
    for item in items:
        if item is None:
            shape.append(1)
            continue
        size = tile.shape[dim]
        start, stop, keep = _index_bounds(item, size, dim, tile.ndim == 1)
        starts.append(start)
        stops.append(stop)
        if keep:
            shape.append(stop - start)
        dim += 1
    if (tuple(starts), tuple(stops)) != ((0,) * tile.ndim, tuple(tile.shape)):
        box = TileType(tile.dtype, tuple(b - a for a, b in zip(starts, stops, strict=True)))
        tile = emit_result(ir.Slice, tile.var.name, box, tile.var, tuple(starts), tuple(stops))
    return tile if tuple(shape) == tuple(tile.shape) else reshape_tile(tile, tuple(shape))


def _index_bounds(item: object, size: int, dim: int, rank1: bool) -> tuple[int, int, bool]:
    """(start, stop, whether the dimension stays) of one index of dimension `dim`."""
    if isinstance(item, slice):
        if item.step not in (None, 1):
            raise current().error(
                f"tile slices take step 1; dimension {dim} was given step {item.step!r}"
            )
        start = 0 if item.start is None else _static_index(item.start, dim)
        stop = size if item.stop is None else _static_index(item.stop, dim)
        start, stop = (start + size if start < 0 else start), (stop + size if stop < 0 else stop)
        if not 0 <= start < stop <= size:
            raise current().error(
                f"the slice {_slice_text(item)} of dimension {dim} (size {size}) is empty or "
                f"out of range: tiles are sliced within their shape, step 1"
            )
        return start, stop, True
    at = _static_index(item, dim, rank1)
    if not -size <= at < size:
        raise current().error(f"index {at} is out of range for dimension {dim} of size {size}")
    at = at + size if at < 0 else at
    return at, at + 1, False


def _static_index(value: object, dim: int, rank1: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, (Scalar, Tile)):
            raise current().error(
                f"tile indices are compile-time ints (dimension {dim} was given a runtime "
                "value); read parts chosen at run time with tl.load from memory"
                + (
                    "; look a rank-1 table up at integer codes with tl.lookup(table, codes)"
                    if rank1 and isinstance(value, Tile) and value.dtype.is_int
                    else ""
                )
            )
        raise current().error(
            f"tile indices are ints, slices, None or ...; dimension {dim} was given "
            f"{describe(value)}"
        )
    return value


def _slice_text(item: slice) -> str:
    return f"{'' if item.start is None else item.start}:{'' if item.stop is None else item.stop}"


def _describe_index(items: list) -> str:
    return (
        "["
        + ", ".join(
            "None"
            if i is None
            else "..."
            if i is Ellipsis
            else _slice_text(i)
            if isinstance(i, slice)
            else repr(i)
            for i in items
        )
        + "]"
    )


def view_tile(tile: Tile, dtype: object, shape: object = None, layout: object = None) -> Tile:
    """Reinterprets the bits of a tile. Without `layout`: each row's bit stream (the last
    dimension scales by the bit-width ratio; `shape`, if given, must say the same). With
    `layout` (and a tile that has a layout): each thread's register bits, read as
    elements of `dtype` in `layout` on a tile of `shape` (the tile's shape by default) —
    no data moves between threads."""
    target = as_dtype(dtype)
    if layout is not None:
        return _view_per_thread(tile, target, tile.shape if shape is None else shape, layout)
    row_bits = tile.shape[-1] * tile.dtype.bits if tile.ndim else tile.dtype.bits
    if tile.ndim == 0 or row_bits % target.bits:
        raise current().error(
            f"cannot view {tile.dtype}{list(tile.shape)} as {target}: a row of {row_bits} bits "
            f"is not a whole number of {target.bits}-bit elements"
        )
    dims = tile.shape[:-1] + (row_bits // target.bits,)
    if shape is not None and static_shape(shape) != dims:
        raise current().error(
            f"viewing {tile.dtype}{list(tile.shape)} as {target} row by row gives a tile of shape "
            f"{list(dims)}, not {list(static_shape(shape))}; to reinterpret each thread's "
            "registers in another shape, give the layout too (layout=...)"
        )
    return emit_result(ir.View, tile.var.name, TileType(target, dims), tile.var)


def _view_per_thread(tile: Tile, target: DType, shape: object, layout: object) -> Tile:
    dims = static_shape(shape)
    layout = checked_layout(layout, dims, "the layout of tl.view")
    source = tile.type.layout
    if source is None:
        raise current().error(
            f"tl.view with a layout reinterprets each thread's registers, but the "
            f"{tile.dtype}{list(tile.shape)} tile has no layout yet; give it one where it is "
            "made (tl.load(..., layout=...)), or view it without a layout (row by row)"
        )
    have = source.num_locals * tile.dtype.bits
    want = layout.num_locals * target.bits
    if have != want:
        raise current().error(
            f"cannot view {tile.dtype}{list(tile.shape)} in {source} as {target}{list(dims)} in "
            f"{layout}: each thread holds {have} bits of the tile and {want} bits of the view"
        )
    return emit_result(ir.View, tile.var.name, TileType(target, dims, layout), tile.var)


def checked_layout(layout: object, shape: tuple[int, ...], what: str) -> Layout:
    """`layout` as the register layout of a tile of `shape` in this kernel, or an error
    at the user's line (another shape, another thread count, not a layout)."""
    builder = current()
    if not isinstance(layout, Layout):
        raise builder.error(f"{what} must be a layout (e.g. tl.dot_layout(...)), got {layout!r}")
    if tuple(layout.shape) != tuple(shape):
        raise builder.error(
            f"{what} {layout} is a layout of a {list(layout.shape)} tile, not {list(shape)}"
        )
    threads = builder.warps * 32
    if layout.num_threads != threads:
        raise builder.error(
            f"{what} {layout} spans {layout.num_threads} threads, the kernel has {threads} "
            f"({builder.warps} warps)"
        )
    return layout


# -- shared memory -----------------------------------------------------------------------


def shared_load(buffer: Shared) -> Tile:
    return emit_result(
        ir.SharedLoad, buffer.var.name, TileType(buffer.dtype, buffer.shape), buffer.var
    )


def shared_store(buffer: Shared, value: object) -> None:
    builder = current()
    tile = require_tile(value, "the value stored to shared memory")
    if (tile.dtype, tile.shape) != (buffer.dtype, buffer.shape):
        raise builder.error(
            f"storing a {tile.dtype}{list(tile.shape)} tile into shared {buffer.dtype}{list(buffer.shape)}"
        )
    builder.emit(ir.SharedStore(buffer.var, tile.var, loc=builder.loc))
