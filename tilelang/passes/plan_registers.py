"""Pass `plan_registers`: per-thread register estimate, and the 255-register limit.

Assumes a verified function whose register tiles have layouts (after `infer_layouts`; a
tile without one is counted as its elements spread evenly over the block's threads).

The estimate, in 32-bit registers ("words") per thread:

- a register tile holds ``ceil(num_locals · bits / 32)`` words (its layout's
  `num_locals` elements per thread, packed: 8 u4 values are one word);
- a scalar holds 1 word (2 for 64-bit types); a global tensor holds its 64-bit base
  pointer, 2 words; a shared tile and a constant hold none;
- and at least `FLOOR` (28) words in all: the thread index, addresses, masks and loop
  counters that the block IR does not show fit in the registers the live values leave
  free in a large kernel, and are what a small kernel needs. Calibrated against ptxas
  on sm_90 for every example (tests/test_plan.py keeps the estimate within 25% of the
  compiler's count; docs/design.md §10 has the table).

Liveness is `tilelang.analysis.liveness.Program` (values live from their definition to
their last use, loops and branches accounted for).

At each point the words of every live value are added — the operands that die there
and the results it defines included — except that an instruction that can write its
result over an operand dying there (elementwise `compute`, `cast`, `view`, `reshape`,
`transpose`, `broadcast`, and `dot` over its accumulator) counts the smaller of the two
once. The peak over all points is the estimate.

Guarantees: `estimate(fn)` returns the `RegisterPlan`; `run(fn)` raises
`RegisterBudgetError` when the estimate exceeds `MAX_REGISTERS` (255) — naming the
kernel, the estimate, the source line of the peak and the largest live tiles — and
otherwise returns `fn` with ``registers=<estimate>`` on its `blocks` instruction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from tilelang.analysis.liveness import Point, Program
from tilelang.ir.nodes import (
    Block,
    Blocks,
    Broadcast,
    Cast,
    Compute,
    Dot,
    Function,
    Loc,
    Reshape,
    Transpose,
    Var,
    View,
)
from tilelang.ir.text import print_type
from tilelang.ir.types import ScalarType, TensorType, TileType, Type
from tilelang.target import CPU, Target

#: The most registers a thread can have on every supported target (`tilelang.target`).
MAX_REGISTERS = 255
#: Words per thread the block IR does not show (addresses, masks, indices); see above.
FLOOR = 28
WARP_SIZE = 32

#: Instructions whose result may overwrite an operand dying there.
_IN_PLACE = (Compute, Cast, View, Reshape, Transpose, Broadcast)


class RegisterBudgetError(ValueError):
    """The kernel cannot fit the registers a thread has; the message says what to change."""


# -- words per value -----------------------------------------------------------------------


def words(type_: Type, warps: int) -> int:
    """32-bit registers per thread that a value of `type_` occupies."""
    if isinstance(type_, TileType):
        if type_.layout is not None:
            count = type_.layout.num_locals
        else:
            count = math.ceil(type_.numel / (warps * WARP_SIZE)) if warps > 0 else type_.numel
        return math.ceil(count * type_.dtype.bits / 32)
    if isinstance(type_, ScalarType):
        return 2 if type_.dtype.bits > 32 else 1
    if isinstance(type_, TensorType):
        return 2
    return 0  # shared tiles: their address is an immediate offset


# -- the estimate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterPlan:
    """The estimate: `peak` words per thread (at least `FLOOR`) at the point `at`.

    `live` lists the values live there as (name, words), largest first; `values` holds
    the same values' Vars, in the same order.
    """

    peak: int
    at: Loc
    live: tuple[tuple[str, int], ...]
    values: tuple[Var, ...] = field(default=(), repr=False)


def estimate(fn: Function) -> RegisterPlan:
    """The peak of live words per thread over the program points of `fn`."""
    program = Program.of(fn)
    if not program.points:
        return RegisterPlan(FLOOR, fn.loc, ())
    pressure = pressure_by_point(program, fn.warps)
    peak = max(range(len(pressure)), key=lambda index: (pressure[index], -index))
    point = program.points[peak]
    live = [v for v in program.live_at(peak) if words(v.type, fn.warps) > 0]
    live.sort(key=lambda v: (-words(v.type, fn.warps), v.name))
    return RegisterPlan(
        max(pressure[peak], FLOOR),
        point.instr.loc,
        tuple((v.name, words(v.type, fn.warps)) for v in live),
        tuple(live),
    )


def pressure_by_point(program: Program, warps: int) -> list[int]:
    """Live words at every program point, in-place reuse applied."""
    count = len(program.points)
    delta = [0] * (count + 1)
    for var, first in program.start.items():
        last = program.stop[var]
        if last < 0:
            continue
        size = words(var.type, warps)
        delta[max(first, 0)] += size
        delta[last + 1] -= size
    pressure, running = [], 0
    for point in program.points:
        running += delta[point.index]
        pressure.append(running - _reuse(program, point, warps))
    return pressure


def _reuse(program: Program, point: Point, warps: int) -> int:
    """Words a result of `point` shares with an operand that dies there."""
    instr = point.instr
    if point.end or not isinstance(instr, (*_IN_PLACE, Dot)):
        return 0
    candidates = (instr.acc,) if isinstance(instr, Dot) else instr.uses()
    dying = [
        words(v.type, warps)
        for v in dict.fromkeys(candidates)
        if isinstance(v, Var)
        and isinstance(v.type, TileType)
        and program.stop[v] == point.index
        and program.start[v] < point.index
    ]
    results = [words(v.type, warps) for v in instr.defs()]
    if not dying or not results:
        return 0
    return min(max(dying), max(results))


# -- the pass --------------------------------------------------------------------------------


def run(fn: Function, target: Target = CPU) -> Function:
    plan = estimate(fn)
    if plan.peak > target.registers_per_thread:
        raise RegisterBudgetError(budget_message(fn, plan, target.registers_per_thread))
    return _record(fn, plan.peak)


def budget_message(fn: Function, plan: RegisterPlan, limit: int = MAX_REGISTERS) -> str:
    tiles = [v for v in plan.values if isinstance(v.type, TileType)][:3]
    largest = "; ".join(
        f"%{v.name}: {print_type(v.type)}, {words(v.type, fn.warps)} registers per thread"
        for v in tiles
    )
    return (
        f"kernel {fn.name} needs about {plan.peak} registers per thread (an estimate from "
        f"the values live at its peak), more than the {limit} a thread can have. At {plan.at} the largest live "
        f"tiles are {largest or 'none'}. Use smaller tiles (BM, BN, BK constexprs) or more "
        f"warps (now {fn.warps})."
    )


def _record(fn: Function, peak: int) -> Function:
    instrs = tuple(
        instr.with_attrs(registers=peak) if isinstance(instr, Blocks) else instr
        for instr in fn.body.instrs
    )
    return replace(fn, body=Block(instrs))


def registers(fn: Function) -> int | None:
    """The estimate `run` recorded on the `blocks` instruction (None before it ran)."""
    for instr in fn.body.instrs:
        if isinstance(instr, Blocks):
            value = instr.attr("registers")
            return value if isinstance(value, int) else None
    return None


__all__ = [
    "FLOOR",
    "MAX_REGISTERS",
    "RegisterBudgetError",
    "RegisterPlan",
    "budget_message",
    "estimate",
    "pressure_by_point",
    "registers",
    "run",
    "words",
]
