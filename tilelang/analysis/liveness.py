"""Liveness of block-IR values: program points and live intervals.

The instructions are numbered in execution order (pre-order;
`for` and `if` also get an *end* point after their bodies, where their results are
defined and a loop's back edge is taken). A value is live from its definition to its
last use, where

- a use inside a loop that does not contain the definition counts as a use at the
  loop's end (the value is needed on every iteration), so such a value is live over the
  whole loop;
- an access to a global tensor uses the sizes in its shape (masks, row strides);
- a loop's variable, stop and step are used at its end point (the back edge), so they
  are live through the loop; loop-carried values are live from the loop's start to their
  last use in the body, and the values the body yields from their definition to the
  `yield` — so a loop-carried value occupies its words through the whole loop;
- the branches of an `if` are laid out one after the other (a value used only in the
  `else` branch is counted in the `then` branch too: an over-estimate), except a branch
  that only yields (the path that keeps the values, as the unmasked path of a mask
  applied under `if`): its operands are used at the `if`'s point, since on that path
  they become the results, and on the other they are dead once that branch is done
  with them.

It also records the loops: the points each `for` spans (its header to its end) and, for
every point, the loops around it, so that a cost held over a whole loop (an address the
compiler hoists out of it) can be placed.

Register planning counts the words of the values live at each point; shared-memory
planning lets two tiles share bytes when their intervals do not overlap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tilelang.ir.nodes import Block, For, Function, If, Instr, Var, Yield
from tilelang.ir.shape_expr import symbols
from tilelang.ir.types import TensorType


@dataclass(frozen=True)
class Point:
    """A program point: an instruction, or (`end`) the end of a `for`/`if`."""

    index: int
    instr: Instr
    end: bool = False


@dataclass
class _Loop:
    header: int
    end: int = -1


@dataclass
class Program:
    """The program points of a function and the live interval of every value.

    `start[v]` is where `v` is defined (-1 for parameters and sizes), `stop[v]` its last
    use after the loop rule (its definition when unused); `v` is live at the points
    ``start[v] <= p <= stop[v]``. `loops[h]` is the end point of the loop whose header
    is point h; `within[p]` the headers of the loops around point p, outermost first (a
    loop's end point, its back edge, is within it; its header is not).
    """

    points: list[Point] = field(default_factory=list)
    start: dict[Var, int] = field(default_factory=dict)
    stop: dict[Var, int] = field(default_factory=dict)
    loops: dict[int, int] = field(default_factory=dict)
    within: list[tuple[int, ...]] = field(default_factory=list)

    @staticmethod
    def of(fn: Function) -> Program:
        builder = _Builder({var.name: var for var in fn.sizes})
        for var in (*fn.params, *fn.sizes):
            builder.define(var, -1)
        builder.block(fn.body, ())
        return builder.finish()

    def live_at(self, index: int) -> Iterator[Var]:
        """The values live at point `index`, in definition order."""
        for var, first in self.start.items():
            if first <= index <= self.stop[var]:
                yield var


class _Builder:
    def __init__(self, sizes: dict[str, Var]) -> None:
        self.program = Program()
        self.uses: dict[Var, list[tuple[int, tuple[_Loop, ...]]]] = {}
        self.sizes = sizes
        self.headers: tuple[tuple[_Loop, ...], tuple[int, ...]] = ((), ())  # the last loops'

    def point(self, instr: Instr, loops: tuple[_Loop, ...], end: bool = False) -> int:
        index = len(self.program.points)
        self.program.points.append(Point(index, instr, end))
        if self.headers[0] is not loops:  # the points of a block share their loops
            self.headers = (loops, tuple(loop.header for loop in loops))
        self.program.within.append(self.headers[1])
        return index

    def define(self, var: Var, index: int) -> None:
        self.program.start.setdefault(var, index)
        self.uses.setdefault(var, [])

    def use(self, value: object, index: int, loops: tuple[_Loop, ...]) -> None:
        if not isinstance(value, Var):
            return
        self.uses.setdefault(value, []).append((index, loops))
        if isinstance(value.type, TensorType):  # its sizes: for masks and row strides
            for dim in value.type.shape:
                for name in symbols(dim):
                    if name in self.sizes:
                        self.use(self.sizes[name], index, loops)

    def block(self, block: Block, loops: tuple[_Loop, ...]) -> None:
        for instr in block.instrs:
            self.instr(instr, loops)

    def instr(self, instr: Instr, loops: tuple[_Loop, ...]) -> None:
        index = self.point(instr, loops)
        for value in instr.uses():
            self.use(value, index, loops)
        if isinstance(instr, For):
            loop = _Loop(index)
            for var in (instr.var, *instr.carried):
                self.define(var, index)
            self.block(instr.body, (*loops, loop))
            loop.end = self.point(instr, (*loops, loop), end=True)
            self.program.loops[index] = loop.end
            for value in (instr.var, instr.stop, instr.step):  # the back edge
                self.use(value, loop.end, (*loops, loop))
            results_at = loop.end
        elif isinstance(instr, If):
            for body in (instr.then_body, instr.else_body):
                if _only_yields(body):  # a path that passes values on unchanged: its
                    for value in body.instrs[0].uses():  # operands are the results,
                        self.use(value, index, loops)  # not live across the other path
                else:
                    self.block(body, loops)
            results_at = self.point(instr, loops, end=True)
        else:
            results_at = index
        for var in instr.defs():
            self.define(var, results_at)

    def finish(self) -> Program:
        program = self.program
        for var, uses in self.uses.items():
            first = program.start.setdefault(var, -1)
            last = first
            for index, loops in uses:
                # The outermost enclosing loop that does not contain the definition.
                outside = next((loop.end for loop in loops if loop.header > first), index)
                last = max(last, index, outside)
            program.stop[var] = last
        return program


def _only_yields(body: Block) -> bool:
    """Whether an `if` body does nothing but yield (the path that keeps the values)."""
    return len(body.instrs) == 1 and isinstance(body.instrs[0], Yield)
