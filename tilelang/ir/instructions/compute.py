"""Instructions that compute tiles: creation, elementwise operators (`tilelang.ir.ops`),
casts, the dot product, reductions and scans (with an operator of `tilelang.ir.ops`, or
with a combine function: `associative_scan`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tilelang import dtypes
from tilelang.ir import ops
from tilelang.ir.checks import Checker, is_scalar, is_tile, shape_text, type_of
from tilelang.ir.core import NOWHERE, Block, Instr, Loc, Value, Var
from tilelang.ir.text import describe, print_type
from tilelang.ir.types import ScalarType, TileType

_U1 = dtypes.u1


@dataclass(frozen=True)
class Full(Instr):
    """A tile (or scalar) whose every element is `value`, converted to the result dtype."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "full {value}"
    LAYOUT: ClassVar = "source.default"

    def check(self, v: Checker) -> None:
        v.expect(is_scalar(self.value), f"expected a scalar value, found {describe(self.value)}")
        v.scalar_or_tile(self.result, "the result")


@dataclass(frozen=True)
class Arange(Instr):
    """A 1-D tile `[start, start + 1, ...]` of the result's length and dtype."""

    result: Var
    start: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "arange {start}"
    LAYOUT: ClassVar = "source.default"

    def check(self, v: Checker) -> None:
        result = v.result_tile(self.result)
        ok = result.rank == 1 and not result.dtype.is_float
        v.expect(ok, f"expected a 1-D integer tile result, found {print_type(result)}")


@dataclass(frozen=True)
class Compute(Instr):
    """An elementwise operator of `tilelang.ir.ops.ELEMENTWISE` on tiles of the result's
    shape and scalars (the DSL inserts broadcasts, so operands never broadcast here)."""

    result: Var
    op: str
    args: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("args",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "{op} {args}"
    MNEMONIC: ClassVar = "compute"
    LAYOUT: ClassVar = "elementwise"

    @property
    def mnemonic(self) -> str:
        return self.op

    def check(self, v: Checker) -> None:
        op = ops.ELEMENTWISE.get(self.op)
        v.expect(
            op is not None,
            f"expected an elementwise operator of tilelang.ir.ops, found {self.op!r}",
        )
        v.expect(
            len(self.args) == op.arity, f"expected {op.arity} operand(s), found {len(self.args)}"
        )
        for arg in self.args:
            v.scalar_or_tile(arg, "every operand")
        result = v.scalar_or_tile(self.result, "the result")
        values = self.args[op.value_operand :]
        if op.value_operand:
            v.same_dtype(type_of(self.args[0]).dtype, _U1, "a condition")
        dtype = type_of(values[0]).dtype
        for arg in values:
            if type_of(arg).dtype != dtype:  # the message formatted only then: checks are hot
                raise v.fail(
                    f"expected every operand of dtype {dtype} (one dtype for all), found "
                    f"{describe(arg)}"
                )
        if not op.accepts(dtype):
            kind = op.operands.value if op.widths is None else op.operand_noun
            raise v.fail(f"expected {kind} operands, found dtype {dtype}")
        v.same_dtype(result.dtype, op.result_dtype(dtype), "a result")
        self._check_shapes(v, result)

    def _check_shapes(self, v: Checker, result) -> None:
        tiles = [arg for arg in self.args if is_tile(arg)]
        if not isinstance(result, TileType):
            if tiles:
                raise v.fail(
                    f"expected a tile result (an operand is a tile), found {print_type(result)}"
                )
            return
        if not tiles:
            raise v.fail(
                f"expected a scalar result (every operand is a scalar), found {print_type(result)}"
            )
        for arg in tiles:
            if tuple(arg.type.shape) != tuple(result.shape):
                raise v.fail(
                    f"expected tile operands of the result's shape {shape_text(result.shape)} "
                    f"(broadcast them first), found {describe(arg)}"
                )


@dataclass(frozen=True)
class Cast(Instr):
    """Converts values to the result dtype (RNE, saturating; docs/design.md §3)."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "cast {value}"
    LAYOUT: ClassVar = "elementwise"

    def check(self, v: Checker) -> None:
        source = v.scalar_or_tile(self.value, "the value")
        result = v.scalar_or_tile(self.result, "the result")
        same = type(source) is type(result) and getattr(source, "shape", ()) == getattr(
            result, "shape", ()
        )
        v.expect(
            same,
            f"expected a result of the value's shape, found {print_type(result)} from "
            f"{print_type(source)}",
        )


#: The accumulator dtypes `dot` allows for each operand dtype.
DOT_ACCUMULATORS: dict[str, tuple[str, ...]] = {
    "f16": ("f32", "f16"),
    "bf16": ("f32",),
    "i8": ("i32",),
    "u8": ("i32",),
    "f32": ("f32",),
}


@dataclass(frozen=True)
class Dot(Instr):
    """`result = a @ b + acc` in the accumulator's dtype.

    The reference computes the sum exactly and rounds once; hardware accumulates in its
    own order, so float results agree within a tolerance that grows with K.
    """

    result: Var
    a: Var
    b: Var
    acc: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("a", "b", "acc")
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "dot {a}, {b}, {acc}"
    LAYOUT: ClassVar = "dot"

    def check(self, v: Checker) -> None:
        a, b = v.tile(self.a, "a"), v.tile(self.b, "b")
        acc, result = v.tile(self.acc, "the accumulator"), v.result_tile(self.result)
        for name, t in (("a", a), ("b", b), ("the accumulator", acc), ("the result", result)):
            v.expect(t.rank == 2, f"expected {name} to be 2-D, found {print_type(t)}")
        (m, k), (k2, n) = a.shape, b.shape
        v.expect(
            k == k2,
            f"expected a [M, K] and b [K, N], found a {shape_text(a.shape)} and b "
            f"{shape_text(b.shape)}",
        )
        for name, t in (("the accumulator", acc), ("the result", result)):
            v.expect(
                tuple(t.shape) == (m, n),
                f"expected {name} of shape [M, N] = {shape_text((m, n))}, found {print_type(t)}",
            )
        v.same_dtype(b.dtype, a.dtype, "b (a's dtype)")
        allowed = DOT_ACCUMULATORS.get(str(a.dtype))
        v.expect(
            allowed is not None,
            f"expected operands of dtype {', '.join(DOT_ACCUMULATORS)}, found {a.dtype}",
        )
        v.expect(
            str(acc.dtype) in allowed,
            f"expected an accumulator of dtype {' or '.join(allowed)} for {a.dtype} operands, "
            f"found {acc.dtype}",
        )
        v.same_dtype(result.dtype, acc.dtype, "a result (the accumulator's dtype)")


@dataclass(frozen=True)
class Reduce(Instr):
    """Reduces `axis` away with `op` (the result's rank is one less)."""

    result: Var
    value: Var
    op: str
    axis: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "reduce {op} {value}, axis={axis}"
    LAYOUT: ClassVar = "reduce"

    def check(self, v: Checker) -> None:
        v.expect(
            self.op in ops.REDUCTIONS,
            f"expected a reduction in {', '.join(ops.REDUCTIONS)}, found {self.op!r}",
        )
        source = v.tile(self.value, "the value")
        if self.op in ("and", "or", "xor"):
            v.expect(
                not source.dtype.is_float,
                f"expected an integer tile for {self.op}, found {source.dtype}",
            )
        v.axis(self.axis, source.rank)
        shape = source.shape[: self.axis] + source.shape[self.axis + 1 :]
        result = self.result.type
        ok = (isinstance(result, TileType) and tuple(result.shape) == tuple(shape)) or (
            isinstance(result, ScalarType) and not shape
        )
        v.expect(ok, f"expected a result of shape {shape_text(shape)}, found {print_type(result)}")
        v.same_dtype(result.dtype, source.dtype, "a result")


@dataclass(frozen=True)
class Scan(Instr):
    """Inclusive prefix `op` along `axis` (from the end when `reverse`)."""

    result: Var
    value: Var
    op: str
    axis: int
    reverse: bool = False
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "scan {op} {value}, axis={axis}<, reverse{reverse}>"
    LAYOUT: ClassVar = "elementwise"

    def check(self, v: Checker) -> None:
        v.expect(
            self.op in ops.SCANS, f"expected a scan in {', '.join(ops.SCANS)}, found {self.op!r}"
        )
        source = v.tile(self.value, "the value")
        v.axis(self.axis, source.rank)
        result = v.result_tile(self.result)
        ok = tuple(result.shape) == tuple(source.shape) and result.dtype == source.dtype
        v.expect(
            ok, f"expected a result of the value's shape and dtype, found {print_type(result)}"
        )
        v.expect(
            isinstance(self.reverse, bool), f"expected reverse to be a bool, found {self.reverse!r}"
        )


def scannable(dtype: dtypes.DType) -> bool:
    """Whether `associative_scan` takes values of `dtype`: types registers hold whole
    (8, 16, 32 and 64-bit integers, f16, bf16, f32, f64), so the combine function's
    arithmetic rounds (or wraps) exactly as the interpreter's does after every step."""
    if dtype.is_float:
        return dtype in (dtypes.f16, dtypes.bf16, dtypes.f32, dtypes.f64)
    return dtype.bits in (8, 16, 32, 64)


#: The instructions a combine function's body may hold: arithmetic on scalars.
COMBINE_INSTRUCTIONS = (Compute, Cast, Full)


@dataclass(frozen=True)
class AssociativeScan(Instr):
    """Inclusive scan of a tuple of tiles along `axis` with a combine function `body`.

    With x_i the tuple of the `values`' elements at position i of the axis (the other
    indices fixed) and a ⊕ b the tuple `body` yields when `lhs` holds a and `rhs` holds
    b, `results[j]` at position i is element j of x_0 ⊕ x_1 ⊕ … ⊕ x_i; with `reverse`,
    of x_{n-1} ⊕ x_{n-2} ⊕ … ⊕ x_i (the scan of the flipped axis, flipped back: the
    accumulated later elements are the left operand). ⊕ must be associative; backends
    group the terms in any order (not commute them), so float results agree within a
    tolerance. `lhs[j]` and `rhs[j]` are scalars of `values[j]`'s dtype; the body is
    scalar arithmetic (`compute`, `cast`, `full`) ending in a `yield` of one scalar per
    value, of the values' dtypes. Values and results share one layout.
    """

    results: tuple[Var, ...]
    values: tuple[Value, ...]
    axis: int
    lhs: tuple[Var, ...]
    rhs: tuple[Var, ...]
    body: Block
    reverse: bool = False
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("values",)
    RESULTS: ClassVar = ("results",)
    BODIES: ClassVar = ("body",)
    PARAMS: ClassVar = ("lhs", "rhs")
    MNEMONIC: ClassVar = "associative_scan"
    LAYOUT: ClassVar = "elementwise.tuple"

    def check(self, v: Checker) -> None:
        count = len(self.values)
        v.expect(count >= 1, "expected at least one value to scan")
        for what, items in (("results", self.results), ("lhs", self.lhs), ("rhs", self.rhs)):
            v.expect(
                len(items) == count,
                f"expected one of the {what} per value ({count}), found {len(items)}",
            )
        tiles = [v.tile(value, f"value {j}") for j, value in enumerate(self.values)]
        shape = tuple(tiles[0].shape)
        for j, tile in enumerate(tiles):
            v.expect(
                tuple(tile.shape) == shape,
                f"expected every value of one shape {shape_text(shape)}, found value {j} "
                f"{print_type(tile)}",
            )
            v.expect(
                scannable(tile.dtype),
                f"expected values of 8, 16, 32 or 64-bit integers, f16, bf16, f32 or f64, "
                f"found value {j} of dtype {tile.dtype}",
            )
        v.axis(self.axis, len(shape))
        v.expect(
            isinstance(self.reverse, bool), f"expected reverse to be a bool, found {self.reverse!r}"
        )
        for j, (result, tile) in enumerate(zip(self.results, tiles, strict=True)):
            found = v.result_tile(result)
            ok = tuple(found.shape) == shape and found.dtype == tile.dtype
            v.expect(
                ok,
                f"expected result {j} of value {j}'s shape and dtype, found {print_type(found)}",
            )
        scalars = tuple(ScalarType(tile.dtype) for tile in tiles)
        for what, params in (("lhs", self.lhs), ("rhs", self.rhs)):
            found = tuple(p.type for p in params)
            v.expect(
                found == scalars,
                f"expected {what} of the values' element types "
                f"({', '.join(map(print_type, scalars))}), found "
                f"{', '.join(map(print_type, found))}",
            )
        self._check_body(v, scalars)

    def _check_body(self, v: Checker, scalars: tuple[ScalarType, ...]) -> None:
        from tilelang.ir.instructions.control import Yield

        instrs = self.body.instrs
        v.expect(
            bool(instrs) and isinstance(instrs[-1], Yield),
            "expected the combine body to end in yield",
        )
        for instr in instrs[:-1]:
            scalar = isinstance(instr, COMBINE_INSTRUCTIONS) and all(
                isinstance(d.type, ScalarType) for d in instr.defs()
            )
            v.expect(
                scalar,
                f"expected the combine body to compute on scalars only (compute, cast, full), "
                f"found {instr.mnemonic} at {instr.loc}",
            )
        found = tuple(type_of(value) for value in instrs[-1].values)
        v.expect(
            found == scalars,
            f"expected the combine body to yield the values' element types "
            f"({', '.join(map(print_type, scalars))}), found "
            f"{', '.join(map(print_type, found)) or 'nothing'}",
        )


__all__ = [
    "COMBINE_INSTRUCTIONS",
    "DOT_ACCUMULATORS",
    "Arange",
    "AssociativeScan",
    "Cast",
    "Compute",
    "Dot",
    "Full",
    "Reduce",
    "Scan",
    "scannable",
]
