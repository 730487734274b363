"""Instructions that shape the program: the grid, loops, branches, the `yield` that ends
their bodies, `print`, and `require`, a condition on the launch's arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tilelang import dtypes
from tilelang.ir.checks import Checker, is_scalar, is_tile, type_of
from tilelang.ir.core import NOWHERE, Block, Instr, Loc, Value, Var
from tilelang.ir.text import describe


@dataclass(frozen=True)
class Blocks(Instr):
    """Declares the grid: `results[i]` is this block's index along grid dimension i."""

    results: tuple[Var, ...]
    sizes: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("sizes",)
    RESULTS: ClassVar = ("results",)
    SYNTAX: ClassVar = "blocks {sizes}"

    def check(self, v: Checker) -> None:
        v.expect(1 <= len(self.sizes) <= 3, f"expected 1 to 3 grid sizes, found {len(self.sizes)}")
        v.expect(
            len(self.results) == len(self.sizes),
            f"expected one block index per grid size ({len(self.sizes)}), found "
            f"{len(self.results)}",
        )
        for n, size in enumerate(self.sizes):
            v.int_scalar(size, f"grid size {n}")
        for n, result in enumerate(self.results):
            v.int_scalar(result, f"block index {n}")


@dataclass(frozen=True)
class Print(Instr):
    """Prints `label` and the value, once per block (the interpreter only)."""

    label: str
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    SYNTAX: ClassVar = "print {label:string}, {value}"

    def check(self, v: Checker) -> None:
        v.expect(isinstance(self.label, str), f"expected a string label, found {self.label!r}")
        v.scalar_or_tile(self.value, "the printed value")


@dataclass(frozen=True)
class Require(Instr):
    """A condition on the launch's arguments (a kernel's `assert N <= BN, "..."`): the
    host checks it before any block runs, on every path, and a launch whose arguments
    break it fails with `require_message`. The condition is known before the launch
    (arithmetic on the kernel's scalar parameters and sizes: the verifier's rule)."""

    cond: Value
    message: str
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("cond",)
    SYNTAX: ClassVar = "require {cond}, {message:string}"

    def check(self, v: Checker) -> None:
        v.expect(is_scalar(self.cond), f"expected a scalar condition, found {describe(self.cond)}")
        v.same_dtype(type_of(self.cond).dtype, dtypes.u1, "a condition")
        v.expect(
            isinstance(self.message, str), f"expected a string message, found {self.message!r}"
        )


def require_message(instr: Require) -> str:
    """What a launch whose arguments break `instr` fails with, on every path."""
    return f"{instr.loc}: {instr.message}"


@dataclass(frozen=True)
class Yield(Instr):
    """Ends a loop or `if` body with the values it passes on."""

    values: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("values",)
    SYNTAX: ClassVar = "yield {values}"
    LAYOUT: ClassVar = "yield"


@dataclass(frozen=True)
class For(Instr):
    """`for var in range(start, stop, step)` with loop-carried values.

    The loop runs exactly as Python's `range` does: upward for a positive step, downward
    for a negative one. The step is a launch constant (computed from the kernel's scalar
    parameters and sizes only), so a step of zero is rejected before a launch.
    `carried[i]` holds `inits[i]` on the first iteration and the body's i-th yielded
    value afterwards; `results[i]` is its value after the last iteration. `unroll` and
    `stages` (software pipelining depth) are scheduling hints, not semantics.
    """

    var: Var
    start: Value
    stop: Value
    step: Value
    inits: tuple[Value, ...]
    carried: tuple[Var, ...]
    body: Block
    results: tuple[Var, ...]
    unroll: int | None = None
    stages: int | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("start", "stop", "step", "inits")
    RESULTS: ClassVar = ("results",)
    BODIES: ClassVar = ("body",)
    PARAMS: ClassVar = ("var", "carried")
    MNEMONIC: ClassVar = "for"
    LAYOUT: ClassVar = "loop"

    def check(self, v: Checker) -> None:
        for what, value in (("start", self.start), ("stop", self.stop), ("step", self.step)):
            v.int_scalar(value, f"the {what} (loop bounds are block-uniform)")
        v.int_scalar(self.var, "the loop variable")
        v.same_types("the carried values", self.carried, "the initial values", self.inits)
        v.same_types("the results", self.results, "the carried values", self.carried)
        for what, value in (("unroll", self.unroll), ("stages", self.stages)):
            ok = value is None or (isinstance(value, int) and value >= 1)
            v.expect(ok, f"expected {what} to be absent or >= 1, found {value!r}")


def zero_step_message(loop: For) -> str:
    """What a launch whose arguments make `loop`'s step zero fails with, on every path."""
    return (
        f"{loop.loc}: the loop step is 0 for these arguments; like Python's range(), "
        "a loop needs a nonzero step"
    )


@dataclass(frozen=True)
class If(Instr):
    """Block-uniform branch; each body ends in a `Yield` of the results' new values."""

    cond: Value
    then_body: Block
    else_body: Block
    results: tuple[Var, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("cond",)
    RESULTS: ClassVar = ("results",)
    BODIES: ClassVar = ("then_body", "else_body")
    MNEMONIC: ClassVar = "if"
    LAYOUT: ClassVar = "branch"

    def check(self, v: Checker) -> None:
        if is_tile(self.cond):
            raise v.fail(
                f"expected a scalar condition, found the tile {describe(self.cond)}: branching "
                "on a tile is non-uniform control flow (threads would disagree); use where() "
                "to select elementwise"
            )
        v.expect(is_scalar(self.cond), f"expected a scalar condition, found {describe(self.cond)}")
        v.same_dtype(type_of(self.cond).dtype, dtypes.u1, "a condition")


__all__ = [
    "Blocks",
    "For",
    "If",
    "Print",
    "Require",
    "Yield",
    "require_message",
    "zero_step_message",
]
