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
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.ops import ELEMENTWISE, Operand, Result
from tilelang.ir.shape_expr import Lit, ShapeExpr, Sym
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.lang.builder import current

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

    def view(self, dtype: DType | str) -> Tile:
        from tilelang.lang.ops import view

        return view(self, dtype)

    def reshape(self, *shape) -> Tile:
        from tilelang.lang.ops import reshape

        return reshape(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], (list, tuple)) else shape
        )

    @property
    def T(self) -> Tile:
        from tilelang.lang.ops import transpose

        return transpose(self)

    def __getitem__(self, index) -> Tile:
        from tilelang.lang.ops import expand_dims_by_index

        return expand_dims_by_index(self, index)

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
        from tilelang.lang.ops import shared_load

        return shared_load(self)

    def store(self, tile: Tile) -> None:
        from tilelang.lang.ops import shared_store

        shared_store(self, tile)


Operable = Tile | Scalar | int | float | bool


# -- conversions -------------------------------------------------------------------------


def describe(value: object) -> str:
    """A value as error messages name it."""
    if isinstance(value, (Tile, Scalar, Tensor, Shared)):
        return repr(value)
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
        )
    return ir.Const(value, dtype)


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
        )
    if is_python_number(value):
        return Scalar(python_constant(value, dtype or default_dtype(value)))
    raise current().error(f"expected a number or runtime scalar, got {type(value).__name__}")


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
    import numpy as np

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
    _check_operand_class(op_name, op.operands, dtype)
    values = [_coerce(v, dtype) for v in operands]
    if condition is not None:
        values.insert(0, condition)
    tiles = [v for v in values if isinstance(v, Tile)]
    result_dtype = dtypes.u1 if op.result is Result.BOOL else dtype
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


def _check_operand_class(op_name: str, wanted: Operand, dtype: DType) -> None:
    if wanted is Operand.INT and dtype.is_float:
        hint = " (use / for float division)" if op_name == "rem" else ""
        raise current().error(f"`{_spelling(op_name)}` needs integer operands, got {dtype}{hint}")
    if wanted is Operand.FLOAT and not dtype.is_float:
        raise current().error(
            f"`{_spelling(op_name)}` needs float operands, got {dtype}; convert with .to(tl.f32)"
        )


def _coerce(value: Operable, dtype: DType) -> Tile | Scalar:
    if isinstance(value, Tile):
        return value
    if isinstance(value, Scalar):
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
    cls.__hash__ = object.__hash__


for _cls in (Tile, Scalar):
    _install_operators(_cls)


def cdiv(a: Scalar | int, b: Scalar | int) -> Scalar | int:
    """Ceiling division of non-negative integers: the number of tiles that cover `a`."""
    if is_python_number(a) and is_python_number(b):
        return -(-int(a) // int(b))
    b_minus_one = b - 1 if is_python_number(b) else elementwise("sub", b, 1)
    return floor_divide(elementwise("add", a, b_minus_one), b)
