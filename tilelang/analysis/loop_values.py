"""Where a value a loop's body uses comes from, seen from one iteration: the question a
pass asks before it moves a computation to another iteration (issuing a load ahead,
recomputing a gather's index for a later step).

A value is *outside* the iteration (a constant, the loop variable, or defined before
the loop: the same expression in every iteration's terms), *carried* (one of the
loop's carried values: it depends on the previous iteration), *nested* (defined in the
body under a branch or an inner loop), or defined by one instruction of the body's own
top level (*body*, with that instruction). Passes decide what each means for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tilelang.ir import nodes as ir
from tilelang.ir.types import TileType
from tilelang.ir.visit import walk


@dataclass(frozen=True)
class Origin:
    kind: Literal["outside", "carried", "nested", "body"]
    instr: ir.Instr | None = None  # the defining instruction, for "body"


class LoopValues:
    """The origins of values used in `loop`'s body (module docstring)."""

    def __init__(self, loop: ir.For) -> None:
        self.loop = loop
        self.definitions = {d: i for i in loop.body.instrs for d in i.defs()}
        self.in_body = {d for i in walk(loop.body) for d in i.defs()}

    def origin(self, value: ir.Value) -> Origin:
        if isinstance(value, ir.Const) or value == self.loop.var:
            return Origin("outside")
        if value in self.loop.carried:
            return Origin("carried")
        if value not in self.in_body:
            return Origin("outside")
        instr = self.definitions.get(value)
        return Origin("nested") if instr is None else Origin("body", instr)

    def from_tiles(self, instr: ir.Instr | None) -> bool:
        """Whether `instr`'s value derives from a tile (loaded or computed data)."""
        if instr is None:
            return True
        operands = [v for v in instr.uses() if isinstance(v, ir.Var)]
        return any(isinstance(v.type, TileType) for v in operands) or any(
            self.from_tiles(self.definitions[v]) for v in operands if v in self.definitions
        )


def carried_reason(value: ir.Var) -> str:
    return f"%{value.name}, which the loop carries from one iteration to the next"
