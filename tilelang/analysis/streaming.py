"""Which dot operands are made a k-step at a time (`streamed_operands`, `streamed_reads`).

A dot operand computed by elementwise instructions from values that stay live (the
dequantized weights of a quantized matmul: a cast of the codes, a product by the
scales) is not materialized whole: ptxas schedules each k-step's part of it shortly
before that k-step's mmas. The register estimate (`tilelang.passes.plan_registers`)
counts such an operand, and the elementwise values that only feed it, at
`STREAM_AHEAD` k-steps.

A dot operand read from shared memory (`shared_load`, the K and V tiles of attention
that the pipelining pass stages) whose only use is that dot, later in the same block
with no loop between and nothing that writes shared memory or waits (a branch may be,
such as attention's mask of the last block), in a dot chain
(`tilelang.analysis.dot_chains`), beside another such read, or as the B of a dot in
warpgroup layouts (sm_90a's wgmma reads it from shared memory) (`streamed_reads`), is read by
the lowering one k-step at a time, each ldmatrix right before its k-step's mmas: a
warp holds one k-step of a replicated operand (all of K, for each warp's rows of S),
not the whole tile. The estimate counts it at `READ_AHEAD` k-steps.
"""

from __future__ import annotations

import math

from tilelang.analysis.dot_chains import chained_dots
from tilelang.analysis.liveness import Program
from tilelang.ir.atoms import wgmma_atom
from tilelang.ir.nodes import (
    AsyncWait,
    Cast,
    Compute,
    CopyAsync,
    Dot,
    Instr,
    SharedLoad,
    SharedStore,
    Sync,
    Var,
)
from tilelang.ir.types import TileType

__all__ = [
    "READ_AHEAD",
    "STREAM_AHEAD",
    "first_needed",
    "streamed_operands",
    "streamed_reads",
    "streamed_words",
]

#: k-steps of a streamed dot operand live at once (calibrated: ptxas for sm_90 computes
#: the dequantized weights of about four k-steps ahead of their mmas).
STREAM_AHEAD = 4
#: k-steps of a dot operand read from shared memory live at once (`streamed_reads`;
#: calibrated on flash attention at D=64, 128 and 256 on sm_80 and sm_90: with the
#: reads' addresses one register per class, ptxas issues each k-step's ldmatrix right
#: before its mmas).
READ_AHEAD = 1


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


def streamed_reads(program: Program) -> dict[Var, Dot]:
    """Shared loads the lowering reads into their dot a k-step at a time (module
    docstring), each with its dot, for dots of two k-steps or more: those of chained
    dots (`dot_chains`: attention's, whose K and V every warp reads whole), and both
    operands of a dot that reads both so (a plain pipelined matmul: ptxas for sm_90
    already sank the reads to their mmas, for sm_80 it held both tiles whole, 16-24
    registers more)."""
    users: dict[Var, list[int]] = {}
    for point in program.points:
        if point.end:
            continue
        for var in point.instr.uses():
            if isinstance(var, Var):
                users.setdefault(var, []).append(point.index)
    chained = chained_dots(p.instr for p in program.points if not p.end)
    found: dict[Var, Dot] = {}
    for point in program.points:
        load = point.instr
        if point.end or not isinstance(load, SharedLoad):
            continue
        used = users.get(load.result, [])
        if len(used) != 1 or load.result.type.dtype.bits != 16:
            continue
        dot = program.points[used[0]].instr
        if not isinstance(dot, Dot) or load.result not in (dot.a, dot.b) or dot.acc == load.result:
            continue
        if dot.a.type.shape[-1] // 16 < 2:
            continue
        here = program.within[point.index]
        between = program.points[point.index + 1 : used[0]]
        if program.within[used[0]] != here or any(
            program.within[p.index] != here or (not p.end and _orders_shared(p.instr))
            for p in between
        ):  # a loop between, or a write to shared memory (an `if` without one is fine)
            continue
        found[load.result] = dot
    # a dot outside a chain streams its reads only when both operands are such reads
    # (a plain matmul); beside a computed operand (dequantized weights) they stay whole,
    # except B of a dot in warpgroup layouts, which the warpgroup mma reads from shared
    # memory (`lowering.wgmma`: no register holds it)
    return {
        var: dot
        for var, dot in found.items()
        if dot.result.name in chained
        or (dot.a in found and dot.b in found)
        or (var is dot.b and _warpgroup_dot(dot))
    }


def _warpgroup_dot(dot: Dot) -> bool:
    """Whether a dot's A and result divide by the warpgroup mma's fragments (sm_90a's
    `infer_layouts` gives them to a dot whose B is staged)."""
    atom = wgmma_atom(8)
    a, c = dot.a.type.layout, dot.result.type.layout
    return a is not None and c is not None and a.divisible_by(atom.a) and c.divisible_by(atom.c)


def _orders_shared(instr: Instr) -> bool:
    """Whether `instr` may write shared memory a read must not pass (a copy into the
    stage S-1 ahead, `ahead`, writes another buffer)."""
    if isinstance(instr, CopyAsync):
        return instr.attr("ahead") is None
    return isinstance(instr, (SharedStore, Sync, AsyncWait))


def streamed_words(program: Program, sizes: dict[Var, int]) -> dict[Var, int]:
    """The words the register estimate counts for streamed values, given their whole
    `sizes`: `STREAM_AHEAD` k-steps of an elementwise operand, `READ_AHEAD` of a read."""
    words = {
        var: math.ceil(sizes[var] * STREAM_AHEAD / steps)
        for var, steps in streamed_operands(program).items()
    }
    for var, dot in streamed_reads(program).items():
        steps = dot.a.type.shape[-1] // 16
        words[var] = math.ceil(sizes[var] * min(READ_AHEAD, steps) / steps)
    return words


def first_needed(program: Program) -> dict[Var, int]:
    """Where each value's registers are first needed: its definition, except for a read
    the lowering does a k-step at a time at its dot (`streamed_reads`)."""
    starts = dict(program.start)
    reads = streamed_reads(program)
    if reads:
        at = {id(p.instr): p.index for p in program.points if not p.end}
        for var, dot in reads.items():
            starts[var] = at[id(dot)]
    return starts
