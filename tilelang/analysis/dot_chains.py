"""Dot chains (`chained_dots`): dots whose result becomes, through elementwise
instructions, the A operand of another dot — attention's S = Q·Kᵀ, P = softmax(S),
O += P·V.

Both dots of a chain split their warps over rows only (`dot_layouts(split_rows=True)`):
each warp then owns whole rows of S, so the row reductions of a softmax stay within a
warp (shuffles, no shared memory), and S's accumulator fragment holds exactly the
elements of P's A fragment in each thread — P goes from one mma to the next in
registers, never through shared memory, and no warp holds another warp's rows
(a replicated A operand).
"""

from __future__ import annotations

from collections.abc import Iterable

from tilelang.ir.nodes import Cast, Compute, Dot, Function, If, Instr, Relayout, Var, Yield
from tilelang.ir.visit import walk

__all__ = ["chained_dots"]

#: Instructions through which a dot's result still counts as that dot's values.
_ELEMENTWISE = (Compute, Cast, Relayout)


def chained_dots(code: Function | Iterable[Instr]) -> frozenset[str]:
    """The result names of the dots in a chain (module docstring): a dot whose result
    reaches another dot's A operand through elementwise instructions, and that dot.
    `code`: a function, or all its instructions."""
    users: dict[str, list[Instr]] = {}
    dots: list[Dot] = []
    branch_of: dict[int, If] = {}  # the Yield ending an `if` body -> that `if`
    for instr in walk(code.body) if isinstance(code, Function) else code:
        if isinstance(instr, Dot):
            dots.append(instr)
        elif isinstance(instr, If):
            for body in (instr.then_body, instr.else_body):
                if body.instrs and isinstance(body.instrs[-1], Yield):
                    branch_of[id(body.instrs[-1])] = instr
        for value in instr.uses():
            if isinstance(value, Var):
                users.setdefault(value.name, []).append(instr)
    chained: set[str] = set()
    for dot in dots:
        for consumer in _a_consumers(dot.result, users, branch_of):
            chained.update((dot.result.name, consumer.result.name))
    return frozenset(chained)


def _a_consumers(start: Var, users: dict[str, list[Instr]], branch_of: dict[int, If]) -> list[Dot]:
    """The dots whose A operand `start` reaches through elementwise instructions and
    through the results of `if`s (a value one branch yields, such as a mask applied to
    the last block only)."""
    found, seen, todo = [], {start.name}, [start]
    while todo:
        value = todo.pop()
        for user in users.get(value.name, []):
            if isinstance(user, Dot) and isinstance(user.a, Var) and user.a.name == value.name:
                found.append(user)
                continue
            if isinstance(user, _ELEMENTWISE):
                reached = user.defs()
            elif isinstance(user, Yield) and id(user) in branch_of:
                pairs = zip(user.values, branch_of[id(user)].results, strict=True)
                reached = [r for v, r in pairs if isinstance(v, Var) and v.name == value.name]
            else:
                continue
            for result in reached:
                if result.name not in seen:
                    seen.add(result.name)
                    todo.append(result)
    return found
