"""Which dot operands ptxas computes a k-step at a time (`streamed_operands`).

A dot operand computed by elementwise instructions from values that stay live (the
dequantized weights of a quantized matmul: a cast of the codes, a product by the
scales) is not materialized whole: ptxas schedules each k-step's part of it shortly
before that k-step's mmas. The register estimate (`tilelang.passes.plan_registers`)
counts such an operand, and the elementwise values that only feed it, at
`STREAM_AHEAD` k-steps.
"""

from __future__ import annotations

from tilelang.analysis.liveness import Program
from tilelang.ir.nodes import Cast, Compute, Dot, Instr, Var
from tilelang.ir.types import TileType

__all__ = ["STREAM_AHEAD", "streamed_operands"]

#: k-steps of a streamed dot operand live at once (calibrated: ptxas for sm_90 computes
#: the dequantized weights of about four k-steps ahead of their mmas).
STREAM_AHEAD = 4


def streamed_operands(program: Program) -> dict[Var, int]:
    """Dot operands computed by elementwise instructions (a cast, a product by scales),
    and the elementwise values that only feed them, with the dot's k-steps: ptxas
    computes such an operand a k-step at a time, each shortly before its mmas, so only
    `STREAM_AHEAD` k-steps of it are live at once (the dequantized weights of a quantized
    matmul)."""
    users: dict[Var, list[Instr]] = {}
    made: dict[Var, Instr] = {}
    for point in program.points:
        if point.end:
            continue
        for var in point.instr.defs():
            made[var] = point.instr
        for var in point.instr.uses():
            if isinstance(var, Var):
                users.setdefault(var, []).append(point.instr)
    streamed: dict[Var, int] = {}

    def steps_of(var: Var) -> int | None:
        if var in streamed:
            return streamed[var]
        if not isinstance(made.get(var), (Cast, Compute)) or not isinstance(var.type, TileType):
            return None
        found = set()
        for user in users.get(var, []):
            if isinstance(user, Dot) and var in (user.a, user.b) and var is not user.acc:
                found.add(user.a.type.shape[-1] // 16 if user.a.type.shape else 1)
            elif isinstance(user, (Cast, Compute)) and all(
                (steps := steps_of(r)) is not None and found.add(steps) is None for r in user.defs()
            ):
                continue
            else:
                return None
        if len(found) != 1 or min(found) < 1:
            return None
        streamed[var] = found.pop()
        return streamed[var]

    for var in list(made):
        steps_of(var)
    return {var: steps for var, steps in streamed.items() if steps > STREAM_AHEAD}
