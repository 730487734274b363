"""What instruction `check` methods are written with: a `Checker` for one instruction.

`tilelang.ir.verify` walks a function (scopes, SSA, control flow) and, for every
instruction, calls `instr.check(Checker(instr, ...))`. A check states its rule with
`expect(condition, message)` and the typed helpers below; the first broken rule raises
`IRVerifyError`, whose message starts with the instruction's source location and
mnemonic and says what was expected and what was found. The helpers format a message
only when its rule breaks: the verifier checks every instruction after several passes,
and formatting the types of each passing check was a tenth of its time.
"""

from __future__ import annotations

from collections.abc import Iterable

from tilelang.dtypes import DType
from tilelang.ir.core import Const, Instr, Value, Var
from tilelang.ir.text import describe, print_type
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type


class IRVerifyError(ValueError):
    """An ill-formed function; the message starts with the instruction's `file:line:col: `."""


def type_of(value: Value) -> Type:
    return ScalarType(value.dtype) if isinstance(value, Const) else value.type


def is_scalar(value: Value) -> bool:
    return isinstance(type_of(value), ScalarType)


def is_tile(value: Value | None) -> bool:
    return isinstance(value, Var) and isinstance(value.type, TileType)


def is_int_scalar(value: Value) -> bool:
    return is_scalar(value) and not type_of(value).dtype.is_float


def shape_text(shape: Iterable[int]) -> str:
    return f"[{', '.join(str(s) for s in shape)}]"


class Checker:
    """The rules one instruction's `check` states, reported at that instruction."""

    def __init__(self, instr: Instr, tensor_params: tuple[Var, ...]) -> None:
        self.instr = instr
        self.tensor_params = tensor_params

    def fail(self, message: str) -> IRVerifyError:
        return IRVerifyError(f"{self.instr.loc}: {self.instr.mnemonic}: {message}")

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            raise self.fail(message)

    # -- operands ----------------------------------------------------------------------

    def tile(self, value: Value, what: str) -> TileType:
        if not is_tile(value):
            raise self.fail(f"expected {what} to be a register tile, found {describe(value)}")
        return value.type

    def result_tile(self, result: Var) -> TileType:
        return self.tile(result, "the result")

    def scalar(self, value: Value, what: str) -> ScalarType:
        if not is_scalar(value):
            raise self.fail(f"expected {what} to be a scalar, found {describe(value)}")
        return type_of(value)

    def scalar_or_tile(self, value: Value, what: str) -> Type:
        ok = is_scalar(value) or is_tile(value)
        if not ok:
            raise self.fail(
                f"expected {what} to be a scalar or a register tile, found {describe(value)}"
            )
        return type_of(value)

    def int_scalar(self, value: Value, what: str) -> None:
        if not is_int_scalar(value):
            raise self.fail(f"expected {what} to be an integer scalar, found {describe(value)}")

    def shared(self, value: Value) -> SharedType:
        ok = isinstance(value, Var) and isinstance(value.type, SharedType)
        if not ok:
            raise self.fail(f"expected a shared tile, found {describe(value)}")
        return value.type

    def tensor_param(self, value: Value) -> TensorType:
        if value not in self.tensor_params:
            raise self.fail(
                f"expected a global tensor parameter of the kernel, found {describe(value)}"
            )
        return value.type

    def offsets(self, tensor: TensorType, offsets: tuple[Value, ...]) -> None:
        if len(offsets) != tensor.rank:
            raise self.fail(
                f"expected {tensor.rank} offsets (one per tensor dim), found {len(offsets)}"
            )
        for i, offset in enumerate(offsets):
            self.int_scalar(offset, f"offset {i}")

    # -- dtypes, shapes, fields ----------------------------------------------------------

    def same_dtype(self, found: DType, expected: DType, what: str) -> None:
        if found != expected:
            raise self.fail(f"expected {what} of dtype {expected}, found {found}")

    def same_tile(self, tile: TileType, shared: SharedType, what: str) -> None:
        ok = tile.dtype == shared.dtype and tuple(tile.shape) == tuple(shared.shape)
        if not ok:
            raise self.fail(
                f"expected {what} of the shared tile's dtype and shape, "
                f"{shared.dtype} {shape_text(shared.shape)}, found {print_type(tile)}"
            )

    def axis(self, axis: int, rank: int) -> None:
        if not (isinstance(axis, int) and not isinstance(axis, bool) and 0 <= axis < rank):
            raise self.fail(f"expected an axis in 0..{rank - 1}, found {axis!r}")

    def same_types(
        self, what: str, values: Iterable[Value], other: str, others: Iterable[Value]
    ) -> None:
        left, right = [type_of(v) for v in values], [type_of(v) for v in others]
        if left != right:
            raise self.fail(
                f"expected {what} to have the types of {other} "
                f"({', '.join(map(print_type, right)) or 'none'}), "
                f"found {', '.join(map(print_type, left)) or 'none'}"
            )
