"""How many times each loop runs at a launch, for the static performance report.

This module owns the trip counts of the block IR's loops at a launch and the tensor-core
work of its dots (`dot_ops`); `tilelang.runtime.perf_loop` finds the loops,
`perf_scalars` evaluates their bounds, `perf_guards` decides which blocks take the `if`s
around them.

**Trip count** (`grid_trips`): the loop's bounds evaluated at the launch's sizes and
scalars, over the grid: at every combination of the block indices the bounds of the
loop and the loops around it (and the conditions of the `if`s inside those loops)
depend on, where those are at most `EXACT_BLOCKS` (the exact mean), else at an even
sample of `SAMPLE_BLOCKS` of them (the report notes either where the count varies: a
causal attention's key loop, a triangular sum). A loop inside others runs per block
the sum, over the outer loops' iterations, of its trip count: an outer loop's trip
count times the mean of the inner ones over its iterations (every one up to
`EXACT_OUTER`, else an even sample of `SAMPLE_OUTER`), or times the inner count at its
start where the inner bounds do not use its variable. A bound the kernel reads from a
tensor at run time (a sequence length, a block table) has no value at a launch: the
caller states the trip count instead (`iterations`), and a bound that cannot be
evaluated without it says so.

**Loops under an `if`** count only in the blocks that take it (0 iterations in the
others, so the mean over the grid is the work of those blocks spread over all):
an `if` outside every loop is decided into the set of blocks that take it
(`perf_guards.decide`, whatever the grid's size: a loop only block 0 runs has a mean of
its trip count over the number of blocks and a most of its trip count), one inside a
loop at each block and iteration the nest is walked at. An `if` that cannot be decided
(a run-time value) counts as taken, and the report says so.

`Trips` keeps, besides the mean, the fewest and most iterations of one block: the
bounds of a launch whose blocks run as one wave use the most (`perf_bounds`).

**Dots** (`dot_ops`): 2·M·N·K of every `dot` outside `if`s, at its tiles' shapes
(padding included), times the mean trip counts of the loops around it; floating-point
dots in flops (8-bit operands at half weight, 4-bit at a quarter: the tensor cores run
them that much faster than f16), integer dots (both operands integer: `IMMA`) in
integer ops at full count, whose peak is the card's own (`perf_bounds`). It is the work
a floor is of, whatever the SASS matching found.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tilelang.ir import nodes as ir
from tilelang.runtime.perf_guards import Taken, decide, undecided_note
from tilelang.runtime.perf_loop import Guard, LoadingLoop, MainLoop, PerfError, loc
from tilelang.runtime.perf_scalars import RunTimeValue, Scalars

__all__ = [
    "EXACT_BLOCKS",
    "EXACT_OUTER",
    "SAMPLE_BLOCKS",
    "SAMPLE_OUTER",
    "Trips",
    "dot_flops",
    "dot_ops",
    "grid_trips",
    "loop_trips",
    "main_trips",
    "trip_count",
]

#: A grid of at most this many blocks (counting only the block indices a loop's bounds
#: depend on) has its trip counts summed over every block; a larger one over an even
#: sample of `SAMPLE_BLOCKS`.
EXACT_BLOCKS = 4096
SAMPLE_BLOCKS = 1024
#: An outer loop whose variable an inner loop's bounds depend on: the inner trip counts
#: are summed over each of its iterations up to this many, else over an even sample of
#: `SAMPLE_OUTER`.
EXACT_OUTER = 256
SAMPLE_OUTER = 64


@dataclass(frozen=True)
class Trips:
    """Iterations per block of a loop (times those of the loops around it) over the
    grid: the mean, the fewest and most of one block; the block-index combinations it
    was evaluated at (`evaluated`) of `taken` (those that take the `if`s around it) of
    `blocks` (all combinations of the block indices the bounds and `if`s depend on),
    whether every one of `taken` was (`exact`), whether an outer loop was sampled
    (`sampled`), whether the bounds depend on the block index (`varies`), what the
    report says of the `if`s around it (`guards`), and the most unrounded (`peak`)."""

    mean: float
    low: int
    high: int
    evaluated: int = 1
    blocks: int = 1
    sampled: bool = False
    taken: int = 1
    exact: bool = True
    varies: bool = True
    guards: tuple[str, ...] = ()
    peak: float = -1.0  # the most of one block, unrounded (-1: `high`)

    @staticmethod
    def given(iterations: int) -> Trips:
        """The trip count a caller states, the same in every block."""
        return Trips(iterations, iterations, iterations)

    @property
    def most(self) -> float:
        """The most iterations of one block (an outer loop's sample may make it
        fractional)."""
        return self.high if self.peak < 0 else self.peak

    @property
    def value(self) -> int | float:
        """The mean, as an int where it is one."""
        return int(self.mean) if self.mean == int(self.mean) else self.mean

    def note(self, where: str) -> str | None:
        """What the report says of a trip count that differs from block to block."""
        if self.low == self.high and not self.sampled and self.exact:
            return None
        values = "values of the block indices they depend on"
        if not self.exact:
            over = f"over an even sample of {self.evaluated} of the {self.taken} {values}"
        elif self.taken == self.blocks:
            over = f"over all {self.blocks} {values}"
        else:
            over = f"over the {self.taken} of the {self.blocks} {values} that take its ifs"
        outer = "; the loops around it averaged over a sample of their iterations"
        bounds = "its bounds depend on the block index: " if self.varies else ""
        return (
            f"the loop at {where}: {bounds}{self.low} to {self.high} iterations a block, "
            f"{self.mean:.6g} on average {over}{outer if self.sampled else ''}"
        )


def main_trips(
    fn: ir.Function,
    main: MainLoop,
    launch: Mapping[str, int | float],
    iterations: int | None = None,
    notes: list[str] | None = None,
) -> Trips:
    """Iterations of the main loop per block at this launch (`grid_trips` of it and the
    loops around it; 1 without a main loop). `iterations`, when given, is that number as
    the caller knows it (bounds read from tensors at run time). `notes` receives what
    the report says of it."""
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise PerfError(
                f"iterations: expected a positive int (the main loop's trip count per "
                f"block), got {iterations!r}"
            )
        if main.loop is None:
            raise PerfError(f"iterations: {fn.name} has no main loop to give a trip count to")
        return Trips.given(iterations)
    if main.loop is None:
        return Trips.given(1)
    return loop_trips(fn, main.loops[main.rank], launch, notes)


def trip_count(
    fn: ir.Function,
    main: MainLoop,
    launch: Mapping[str, int | float],
    iterations: int | None = None,
    notes: list[str] | None = None,
) -> int | float:
    """The mean of `main_trips`."""
    return main_trips(fn, main, launch, iterations, notes).value


def loop_trips(
    fn: ir.Function,
    nest: LoadingLoop,
    launch: Mapping[str, int | float],
    notes: list[str] | None = None,
) -> Trips:
    """Iterations per block of a loop and the loops around it at this launch, over the
    grid, in the blocks that take the `if`s around it (`grid_trips`); PerfError when a
    bound is read at run time."""
    where = loc(nest.loop)
    found = grid_trips(fn, (*nest.enclosing, nest.loop), launch, guards=nest.guards, where=where)
    note = found.note(where)
    if notes is not None:
        notes.extend(found.guards)
        if note is not None:
            notes.append(note)
    return found


class _Axis(Sequence):
    """The indices 0 ... size - 1 of one grid dimension, as 1-tuples."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):  # type: ignore[override]
        if not 0 <= index < self.size:
            raise IndexError(index)
        return (index,)


def grid_trips(
    fn: ir.Function,
    chain: tuple[ir.For, ...],
    launch: Mapping[str, int | float],
    scalars: Scalars | None = None,
    given: tuple[int, int] | None = None,
    guards: tuple[Guard, ...] = (),
    where: str = "",
) -> Trips:
    """How many times the body of `chain[-1]` runs per block, `chain` its loops
    outermost first and `guards` the `if`s around it, over the grid (module docstring);
    `given`: (index into `chain`, trips) for a loop whose trip count the caller states
    (its variable taken at its start; the `if`s then count as taken)."""
    scalars = scalars or Scalars(fn, launch)
    names = scalars.block_names
    sizes = scalars.grid_sizes()
    outer = [g for g in guards if g.depth == 0] if given is None else []
    inner = tuple(g for g in guards if g.depth > 0) if given is None else ()
    taken = decide(scalars, outer, where) if outer else Taken((), math.prod(sizes), ())
    bounds = tuple(v for x in chain for v in (x.start, x.stop, x.step))
    varying = {names[n] for n in scalars.depends(bounds, set(names))}
    used = varying | {names[n] for n in scalars.depends(tuple(g.cond for g in inner), set(names))}
    named = {d for f in taken.factors for d in f.dims}
    free = sorted(used - named)
    axes: list[tuple[tuple[int, ...], Sequence[tuple[int, ...]]]] = [
        (f.dims, f.points) for f in taken.factors
    ]
    axes += [((d,), _Axis(sizes[d])) for d in free]
    total = math.prod(len(points) for _, points in axes)
    space = math.prod(sizes[d] for d in named | set(free))
    if total <= EXACT_BLOCKS:
        flats: Sequence[int] = range(total)
    else:  # midpoints of even strides over the blocks, row-major
        flats = [(2 * i + 1) * total // (2 * SAMPLE_BLOCKS) for i in range(SAMPLE_BLOCKS)]
    index = {d: name for name, d in names.items()}
    walker = _NestCount(fn, chain, scalars, given, inner, where)
    counts = []
    for flat in flats:
        bound: dict[str, int] = {}
        for dims, points in reversed(axes):
            flat, at = divmod(flat, len(points))
            bound.update({index[d]: v for d, v in zip(dims, points[at], strict=True)})
        counts.append(walker.count(0, bound))
    mean = sum(counts) / len(counts) * total / space if counts else 0.0
    return Trips(
        mean=mean,
        low=math.floor(min(counts)) if counts and total == space else 0,
        high=math.ceil(max(counts)) if counts else 0,
        evaluated=len(counts),
        blocks=space,
        sampled=walker.sampled,
        taken=total,
        exact=total <= EXACT_BLOCKS,
        varies=bool(varying),
        guards=(*taken.notes, *walker.notes),
        peak=max(counts) if counts else 0.0,
    )


class _NestCount:
    """The iterations of a loop nest's innermost body in one block: an outer loop's
    trip count times its inner loops' average over its iterations (each, up to
    `EXACT_OUTER`, else an even sample), or at its start where they do not depend on
    its variable; 0 where an `if` inside the nest (`guards`) is not taken."""

    def __init__(
        self,
        fn: ir.Function,
        chain: tuple[ir.For, ...],
        scalars: Scalars,
        given: tuple[int, int] | None,
        guards: tuple[Guard, ...] = (),
        where: str = "",
    ) -> None:
        self.fn, self.chain, self.scalars, self.given = fn, chain, scalars, given
        self.guards, self.where = guards, where
        self.sampled = False
        self.notes: list[str] = []
        loops = {x.var.name for x in chain}
        self.inner_uses = [
            scalars.depends(
                tuple(v for x in chain[d + 1 :] for v in (x.start, x.stop, x.step))
                + tuple(g.cond for g in guards if g.depth > d),
                loops,
            )
            for d in range(len(chain))
        ]

    def _takes(self, depth: int) -> bool:
        """Whether the `if`s between the loops `depth - 1` and `depth` are taken."""
        for guard in (g for g in self.guards if g.depth == depth):
            try:
                if bool(self.scalars(guard.cond)) != guard.then:
                    return False
            except (RunTimeValue, PerfError) as err:
                why = (
                    f"whose condition reads %{err.name} from tensor {err.tensor!r} at run time"
                    if isinstance(err, RunTimeValue)
                    else str(err)
                )
                note = undecided_note(guard, self.where, why)
                if note not in self.notes:
                    self.notes.append(note)
        return True

    def count(self, depth: int, bound: dict[str, int]) -> float:
        loop = self.chain[depth]
        self.scalars.at(bound)
        if self.given is not None and depth <= self.given[0]:
            # the caller's count covers this loop and the loops around it
            trips = self.given[1] if depth == self.given[0] else 1
            if depth == len(self.chain) - 1:
                return trips
            with contextlib.suppress(RunTimeValue, PerfError):  # else left unbound
                bound = {**bound, loop.var.name: int(self.scalars(loop.start))}
            return trips * self.count(depth + 1, bound)
        if not self._takes(depth):
            return 0
        try:
            start, stop, step = (int(self.scalars(v)) for v in (loop.start, loop.stop, loop.step))
        except RunTimeValue as err:
            raise PerfError(
                f"{loc(loop)}: the main loop's bounds depend on %{err.name}, which "
                f"{self.fn.name} reads from tensor {err.tensor!r} at run time; give the trip "
                "count per block as `iterations=`"
            ) from None
        if step == 0:
            raise PerfError(f"{loc(loop)}: the loop step is 0 at this launch")
        steps = range(start, stop, step)
        if depth == len(self.chain) - 1 or not steps:
            return len(steps)
        picks: Sequence[int] = steps[:1]
        if loop.var.name not in self.inner_uses[depth]:
            pass  # the inner loops run alike in every iteration
        elif len(steps) <= EXACT_OUTER:
            picks = steps
        else:
            self.sampled = True
            picks = [
                steps[(2 * i + 1) * len(steps) // (2 * SAMPLE_OUTER)] for i in range(SAMPLE_OUTER)
            ]
        inner = [self.count(depth + 1, {**bound, loop.var.name: v}) for v in picks]
        return len(steps) * sum(inner) / len(inner)


def dot_flops(
    fn: ir.Function,
    launch: Mapping[str, int | float],
    main: MainLoop | None = None,
    iterations: int | None = None,
) -> float:
    """The floating-point part of `dot_ops`."""
    return dot_ops(fn, launch, main, iterations)[0]


def dot_ops(
    fn: ir.Function,
    launch: Mapping[str, int | float],
    main: MainLoop | None = None,
    iterations: int | None = None,
) -> tuple[float, float]:
    """Tensor-core work one block's `dot`s ask for at this launch, averaged over the
    grid (module docstring, "Dots"): (flops of floating-point dots, ops of integer
    ones); the main loop's body at `iterations` where the caller gives them; a loop
    whose bounds are read at run time otherwise counts nothing (a floor stays one)."""
    scalars = Scalars(fn, launch)
    times: dict[tuple[int, ...], float] = {(): 1.0}

    def trips(chain: tuple[ir.For, ...]) -> float:
        key = tuple(id(x) for x in chain)
        if key not in times:
            given = None
            depth = next((i for i, x in enumerate(chain) if main and x is main.loop), None)
            if depth is not None and iterations is not None:
                given = (depth, iterations)
            try:
                times[key] = grid_trips(fn, chain, launch, scalars, given).mean
            except (RunTimeValue, PerfError):
                times[key] = 0.0
        return times[key]

    def visit(block: ir.Block, chain: tuple[ir.For, ...]) -> tuple[float, float]:
        flops = ops = 0.0
        for instr in block.instrs:
            if isinstance(instr, ir.Dot):
                (m, k), n = instr.a.type.shape, instr.b.type.shape[-1]
                a, b = instr.a.type.dtype, instr.b.type.dtype
                work = 2.0 * m * n * k * trips(chain)
                if a.is_int and b.is_int:
                    ops += work
                else:
                    flops += work * min(a.bits, b.bits, 16) / 16
            elif isinstance(instr, ir.For):
                inner = visit(instr.body, (*chain, instr))
                flops, ops = flops + inner[0], ops + inner[1]
        return flops, ops

    return visit(fn.body, ())
