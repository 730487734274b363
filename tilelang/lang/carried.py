"""The values a runtime loop carries and a runtime branch yields: one type across them.

A name a `tl.range` loop carries has the type of its value before the loop, and its
value at the end of the body must have that type; a name a runtime `if` assigns has one
type on both paths (`tilelang.lang.frontend`). Besides equal types, two cases convert:

- a runtime scalar takes the carried scalar's dtype (`cast`);
- a number — a Python number or a compile-time scalar — meeting a tile type becomes a
  tile of it (`tl.full(shape, number, dtype)`) when the dtype holds it exactly. On a
  branch's path that is immediate; a loop learns the tile type only from its body, so
  `StartAsTile` stops the first compile of the loop and the frontend compiles it again
  with the number starting as that tile. This is Triton's `acc = 0.0` then
  `acc += tl.sum(x)` in the loop.

Any other change of type is an error whose advice works: `.to()` between tiles of one
shape, a tile made before the loop (`tl.zeros`, `tl.full`) where a number or scalar
would become a tile.
"""

from __future__ import annotations

import math

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType, TileType, Type
from tilelang.lang.builder import current
from tilelang.lang.control_flow import shape_change_message
from tilelang.lang.fills import full
from tilelang.lang.values import Scalar, Tile, as_scalar, cast, describe, ir_value, is_python_number


class StartAsTile(Exception):
    """The number a loop carries is a tile at the end of its body: compile the loop
    again with `name` starting as a tile of `type` (`tl.full(shape, number, dtype)`)."""

    def __init__(self, name: str, type_: TileType) -> None:
        super().__init__(name)
        self.name = name
        self.type = type_


def type_of(value: ir.Value) -> Type:
    """The type of an IR value (a constant's is the scalar type of its dtype)."""
    if isinstance(value, ir.Const):
        return ScalarType(value.dtype)
    return value.type


def constant_of(value: object) -> int | float | None:
    """`value` as a number known while compiling (a Python number or a constant
    scalar), or None."""
    if is_python_number(value):
        return value
    if isinstance(value, Scalar) and isinstance(value.value, ir.Const):
        return value.value.value
    return None


def holds_exactly(dtype: DType, number: int | float) -> bool:
    """Whether a value of `dtype` can be `number` exactly (NaN where it has one)."""
    if dtype.is_int:
        return float(number).is_integer() and dtype.min <= number <= dtype.max
    try:
        held = float(dtypes.quantize(float(number), dtype))
    except OverflowError:  # an int beyond every float
        return False
    return held == number or (math.isnan(held) and math.isnan(number))


def starting_tile(start: object, end: Type) -> TileType | None:
    """The tile type a loop-carried `start` (its value before the loop) should start as,
    being `end` at the end of the body: `end` when `start` is a number it holds exactly."""
    number = constant_of(start)
    if number is None or not isinstance(end, TileType):
        return None
    return end if holds_exactly(end.dtype, number) else None


def start_as(start: object, type_: TileType) -> Tile:
    """`start` (a number `starting_tile` accepted) as a tile of `type_`."""
    return full(list(type_.shape), constant_of(start), type_.dtype)


def yielded(name: str, value: object, type_: Type, what: str, start: object = None) -> ir.Value:
    """The IR value `name` yields at the end of a loop's body or a branch's path (`what`:
    "loop" or "branch"), of the carried or result type `type_`; `start` is a loop's
    value before it. Raises `StartAsTile` where a loop should start with a tile."""
    if is_python_number(value) and isinstance(type_, TileType):
        return _number_as_tile(name, value, type_, what)
    if is_python_number(value):
        return as_scalar(value, type_.dtype).value
    if not isinstance(value, (Tile, Scalar)):
        raise current().error(
            f"`{name}` is a runtime value before the {what} but {describe(value)} in it"
        )
    if isinstance(value, Scalar) and isinstance(type_, ScalarType) and value.dtype != type_.dtype:
        value = cast(value, type_.dtype)
    got = type_of(ir_value(value))
    if isinstance(got, TileType) and isinstance(type_, TileType) and got.shape != type_.shape:
        raise current().error(shape_change_message(name, what, type_.shape, got.shape))
    if got != type_:
        tile = starting_tile(start, got) if start is not None else None
        if tile is not None:
            raise StartAsTile(name, tile)
        raise current().error(type_change_message(name, what, type_, got, start))
    return ir_value(value)


def _number_as_tile(name: str, number: int | float, type_: TileType, what: str) -> ir.Value:
    """A number yielded where `type_`, a tile type, is expected, as a tile of it."""
    if not holds_exactly(type_.dtype, number):
        sides = ("before the loop", "at the end of its body")
        if what == "branch":
            sides = ("on one path of the branch", "on the other")
        raise current().error(
            f"`{name}` is {type_} {sides[0]} but the number {number!r} {sides[1]}, which "
            f"{type_.dtype} does not hold exactly; {_make_tile(name, type_)}"
        )
    return full(list(type_.shape), number, type_.dtype).var


def type_change_message(name: str, what: str, before: Type, got: Type, start: object) -> str:
    """Why `name` cannot be `before` before the loop (on the branch's first path) and
    `got` at the end of its body (on the other path), and what to write instead."""
    text = f"`{name}` changes type in the {what}: it is {before} before but {got} at the end"
    if isinstance(before, TileType) and isinstance(got, TileType):
        return f"{text} (convert it with .to() so both agree: `.to(tl.{before.dtype})`)"
    tile = got if isinstance(got, TileType) else before
    number = constant_of(start)
    if number is not None and isinstance(got, TileType):
        text += f" (the number {number!r} is not exactly a {got.dtype})"
    return f"{text}; {_make_tile(name, tile)}"


def _make_tile(name: str, tile: TileType) -> str:
    """Advice that works where a number or scalar meets a tile: assign a tile."""
    shape, dtype = list(tile.shape), f"tl.{tile.dtype}"
    return (
        f"where it is a number or scalar, assign it a tile: `{name} = tl.zeros({shape}, "
        f"{dtype})`, or `{name} = tl.full({shape}, x, {dtype})` for a number or runtime "
        "scalar x"
    )
