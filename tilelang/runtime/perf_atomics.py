"""The global atomics of a launch, for the static performance report's bound on atomics
to one address (`perf_bounds`).

This module owns counting, per tensor, the element updates a launch's atomics make
(`atomic` on a box, `scatter_atomic` on gathered elements: add, max, min, xchg, cas):
each one's value tile's elements, times the mean trip counts of the loops around it
(`perf_trips.grid_trips`), times the blocks. Every lane counts, a masked one too (the
report cannot tell how many a mask turns off; said in the bound's text), and an atomic
under an `if` does not (the report cannot always say how many blocks take it: left
out, so that the bound stays a floor). The addresses they can go to are the tensor's
elements: however they spread, one address receives at least updates / elements of
them (`AtomicCount.per_address`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from tilelang.ir import nodes as ir
from tilelang.runtime.perf_loop import PerfError, loc
from tilelang.runtime.perf_scalars import RunTimeValue, Scalars
from tilelang.runtime.perf_trips import grid_trips

__all__ = ["AtomicCount", "atomic_counts"]


@dataclass(frozen=True)
class AtomicCount:
    """The atomics a launch applies to one tensor: element updates, the tensor's
    elements, whether any is masked, and the first one's source line."""

    tensor: str
    updates: float
    elements: int
    masked: bool
    where: str

    @property
    def per_address(self) -> float:
        """The fewest updates the busiest element receives: the mean over elements."""
        return self.updates / max(self.elements, 1)


def atomic_counts(
    fn: ir.Function,
    shapes: Mapping[str, tuple[int, ...]],
    launch: Mapping[str, int | float],
    blocks: int,
) -> tuple[AtomicCount, ...]:
    """Each tensor's atomics at this launch, in program order (module docstring)."""
    scalars = Scalars(fn, launch)
    found: dict[str, AtomicCount] = {}

    def trips(chain: tuple[ir.For, ...]) -> float:
        if not chain:
            return 1.0
        try:
            return grid_trips(fn, chain, launch, scalars).mean
        except (RunTimeValue, PerfError):
            return 0.0  # bounds read at run time: nothing counted, a floor stays one

    def visit(block: ir.Block, chain: tuple[ir.For, ...]) -> None:
        for instr in block.instrs:
            if isinstance(instr, ir.For):
                visit(instr.body, (*chain, instr))
            elif isinstance(instr, ir.Atomic | ir.ScatterAtomic):
                name = instr.tensor.name
                shape = getattr(getattr(instr.value, "type", None), "shape", ())
                updates = math.prod(shape) * trips(chain) * blocks
                before = found.get(name)
                found[name] = AtomicCount(
                    name,
                    updates + (before.updates if before else 0.0),
                    math.prod(shapes[name]),
                    instr.mask is not None or bool(before and before.masked),
                    before.where if before else loc(instr),
                )

    visit(fn.body, ())
    return tuple(found.values())
