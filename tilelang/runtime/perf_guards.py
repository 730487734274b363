"""Which blocks take the `if`s around a loop, for the static performance report.

This module owns deciding, at a launch, which blocks of the grid run a loop that lies
under an `if` (`perf_loop.Guard`): the report counts such a loop for those blocks only
(`perf_trips.grid_trips`), and the others pay their work outside it. An `if` directly in
the kernel's body (outside every loop, `depth` 0) is decided here, into the set of
block indices that take it (`Taken`, a product of `Factor`s over disjoint grid
dimensions); an `if` inside a loop is evaluated block by block as the loop nest is
walked (`perf_trips`).

- **A block index compared to a block-uniform value** (`b == 0`, `b < n - 1`, either
  way round; the `else` branch the opposite comparison): the indices that take it, a
  few ranges of one grid dimension, whatever the grid's size.
- **The count of `tl.arrive` compared to a block-uniform value** (`tl.arrive(c, [i])
  == n - 1`, the last of a group of blocks): the blocks that arrive at one counter
  element get the counts 0, 1, ... in an order the GPU decides; the blocks sharing an
  element are found by evaluating its offsets at every combination of the block indices
  they use (at most `EXACT_GUARD`), and the blocks whose count passes the comparison
  are taken as the first to arrive in block order (any order gives the same number of
  blocks a group). It assumes the counters are zero at launch (as `tl.arrive`'s
  contract for the last-block pattern says) and the arrive is outside every loop (one
  arrival a block).
- **Any other condition on block indices, sizes and scalars**: evaluated at every
  combination of the block indices it uses, at most `EXACT_GUARD` of them.
- **Otherwise** (a value read at run time: a `load_scalar`, an atomic's old value; more
  combinations than that; a float condition): not decided; the loop is counted as if
  every block took the `if` (an upper estimate), and the report says so.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tilelang.ir import nodes as ir
from tilelang.runtime.perf_loop import Guard, PerfError
from tilelang.runtime.perf_scalars import RunTimeValue, Scalars

__all__ = ["EXACT_GUARD", "Factor", "Taken", "decide", "undecided_note"]

#: Combinations of block indices a condition is evaluated at, at most.
EXACT_GUARD = 65536

_MIRROR = {"eq": "eq", "ne": "ne", "lt": "gt", "gt": "lt", "le": "ge", "ge": "le"}
_NEGATE = {"eq": "ne", "ne": "eq", "lt": "ge", "ge": "lt", "le": "gt", "gt": "le"}


class _Ranges(Sequence):
    """The indices in a few disjoint ascending half-open ranges, as 1-tuples."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        self.ranges = [(lo, hi) for lo, hi in ranges if hi > lo]
        self.starts = list(itertools.accumulate((hi - lo for lo, hi in self.ranges), initial=0))

    def __len__(self) -> int:
        return self.starts[-1]

    def __getitem__(self, index):  # type: ignore[override]
        if not 0 <= index < len(self):
            raise IndexError(index)
        at = next(i for i in range(len(self.ranges)) if self.starts[i + 1] > index)
        return (self.ranges[at][0] + index - self.starts[at],)

    def __contains__(self, point) -> bool:  # type: ignore[override]
        return any(lo <= point[0] < hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class Factor:
    """The combinations of the block indices along grid dimensions `dims` that take the
    guards, in row-major order."""

    dims: tuple[int, ...]
    points: Sequence[tuple[int, ...]]

    @functools.cached_property
    def _members(self) -> _Ranges | frozenset[tuple[int, ...]]:
        return self.points if isinstance(self.points, _Ranges) else frozenset(self.points)

    def contains(self, point: dict[int, int]) -> bool:
        return tuple(point[d] for d in self.dims) in self._members


@dataclass(frozen=True)
class Taken:
    """The blocks that take a loop's `if`s outside every loop: those whose indices lie
    in every factor (dimensions no factor names: any index); how many of the grid's
    blocks that is; what the report says of each `if`."""

    factors: tuple[Factor, ...]
    blocks: int
    notes: tuple[str, ...]


def undecided_note(guard: Guard, where: str, why: str) -> str:
    """What the report says of an `if` it cannot decide per block."""
    return (
        f"the loop at {where} runs under the if at {guard.where}, {why}: the report cannot "
        "say how many blocks take it and counts the loop as if every block did (an upper "
        "estimate)"
    )


def decide(scalars: Scalars, guards: Sequence[Guard], where: str) -> Taken:
    """The blocks that take `guards` (those outside every loop) at this launch, for the
    loop at `where` (module docstring)."""
    sizes = scalars.grid_sizes()
    total = math.prod(sizes)
    factors: list[Factor] = []
    notes: list[str] = []
    for guard in guards:
        try:
            found = _factor(scalars, guard, sizes)
        except RunTimeValue as err:
            notes.append(undecided_note(guard, where, _reads(err)))
            continue
        except PerfError as err:
            why = f"whose condition cannot be evaluated at this launch ({err})"
            notes.append(undecided_note(guard, where, why))
            continue
        except _Undecided as err:
            notes.append(undecided_note(guard, where, str(err)))
            continue
        merged = _merge(factors, found, sizes)
        if merged is None:
            why = "whose blocks, with those of the ifs around it, take too many to find"
            notes.append(undecided_note(guard, where, why))
            continue
        factors = merged
        kind = "on tl.arrive's count" if _arrive(scalars, guard) else "decided per block"
        taken = _count(factors, sizes)
        notes.append(
            f"the loop at {where} runs under the if at {guard.where} ({kind}): "
            f"{taken} of the {total} blocks take it{_ARRIVE if kind.startswith('on') else ''}"
        )
    return Taken(tuple(factors), _count(factors, sizes), tuple(notes))


_ARRIVE = (
    "; the counters taken as zero at launch (tl.arrive's contract), which block of a group "
    "arrives when is up to the GPU; the loop runs after the others of its group arrived, "
    "which the report does not model (it overlaps the loop with their work)"
)


class _Undecided(Exception):
    """A condition the report does not decide per block; the message says why ("whose
    ...", after the `if`'s line)."""


def _reads(err: RunTimeValue) -> str:
    return f"whose condition reads %{err.name} from tensor {err.tensor!r} at run time"


def _count(factors: Sequence[Factor], sizes: Sequence[int]) -> int:
    named = {d for f in factors for d in f.dims}
    free = math.prod(s for d, s in enumerate(sizes) if d not in named)
    return free * math.prod(len(f.points) for f in factors)


def _comparison(scalars: Scalars, guard: Guard) -> tuple[str, ir.Value, ir.Value] | None:
    """(op, a, b) of a comparison condition, the `else` branch's negated."""
    if not isinstance(guard.cond, ir.Var):
        return None
    instr = scalars.defs.get(guard.cond.name)
    if not isinstance(instr, ir.Compute) or instr.op not in _NEGATE or len(instr.args) != 2:
        return None
    op = instr.op if guard.then else _NEGATE[instr.op]
    return op, instr.args[0], instr.args[1]


def _arrive(scalars: Scalars, guard: Guard) -> ir.Arrive | None:
    """The `arrive` a comparison guard compares, with a block-uniform value."""
    found = _comparison(scalars, guard)
    if found is None:
        return None
    for side in found[1:]:
        instr = scalars.defs.get(side.name) if isinstance(side, ir.Var) else None
        if isinstance(instr, ir.Arrive):
            return instr
    return None


def _factor(scalars: Scalars, guard: Guard, sizes: Sequence[int]) -> Factor:
    """The block indices that take `guard` (module docstring); RunTimeValue, PerfError
    or _Undecided where it cannot be decided."""
    names = scalars.block_names
    found = _comparison(scalars, guard)
    if found is not None:
        op, a, b = found
        for var, other, flip in ((a, b, False), (b, a, True)):
            rel = _MIRROR[op] if flip else op
            if not isinstance(var, ir.Var) or scalars.depends((other,), set(names)):
                continue
            if var.name in names:
                scalars.at({})
                value = int(scalars(other))
                dim = names[var.name]
                return Factor((dim,), _Ranges(_passing(rel, value, sizes[dim])))
            if isinstance(scalars.defs.get(var.name), ir.Arrive):
                scalars.at({})
                return _arrivals(scalars, scalars.defs[var.name], rel, int(scalars(other)), sizes)
    scalars.at({})
    scalars(guard.cond)  # a value read at run time raises here, whatever the grid
    dims = sorted(names[n] for n in scalars.depends((guard.cond,), set(names)))
    combos = math.prod(sizes[d] for d in dims)
    if combos > EXACT_GUARD:
        raise _Undecided(
            f"whose condition takes {combos} combinations of the block indices it uses to "
            f"decide, over {EXACT_GUARD}"
        )
    index = {d: name for name, d in names.items()}
    points = []
    for point in itertools.product(*(range(sizes[d]) for d in dims)):
        scalars.at({index[d]: i for d, i in zip(dims, point, strict=True)})
        if bool(scalars(guard.cond)) == guard.then:
            points.append(point)
    return Factor(tuple(dims), points)


def _passing(op: str, value: int, size: int) -> list[tuple[int, int]]:
    """The indices i in [0, size) with `i op value`, as ranges."""
    clip = lambda x: min(max(x, 0), size)  # noqa: E731
    return {
        "eq": [(clip(value), clip(value + 1))],
        "ne": [(0, clip(value)), (clip(value + 1), size)],
        "lt": [(0, clip(value))],
        "le": [(0, clip(value + 1))],
        "gt": [(clip(value + 1), size)],
        "ge": [(clip(value), size)],
    }[op]


def _arrivals(
    scalars: Scalars, arrive: ir.Arrive, op: str, value: int, sizes: Sequence[int]
) -> Factor:
    """The blocks whose `arrive` count c passes `c op value`: per group of blocks
    sharing a counter element, those arriving c-th, taken in block order."""
    if arrive.result.name in scalars.looped:
        raise _Undecided("whose tl.arrive runs in a loop (several arrivals a block)")
    names = scalars.block_names
    index = {d: name for name, d in names.items()}
    used = sorted(names[n] for n in scalars.depends(arrive.offsets, set(names)))
    others = [d for d in range(len(sizes)) if d not in used]
    if math.prod(sizes[d] for d in used) > EXACT_GUARD:
        raise _Undecided(f"whose tl.arrive's counters take over {EXACT_GUARD} blocks to find")
    groups: dict[tuple, list[tuple[int, ...]]] = {}
    for point in itertools.product(*(range(sizes[d]) for d in used)):
        scalars.at({index[d]: i for d, i in zip(used, point, strict=True)})
        key = tuple(int(scalars(o)) for o in arrive.offsets)
        groups.setdefault(key, []).append(point)
    rest = math.prod(sizes[d] for d in others)
    points = []
    for members in groups.values():
        passing = _passing(op, value, len(members) * rest)
        if len(points) + sum(hi - lo for lo, hi in passing) > EXACT_GUARD:
            raise _Undecided(f"whose tl.arrive count passes in over {EXACT_GUARD} blocks")
        for rank in (r for lo, hi in passing for r in range(lo, hi)):
            mine, flat = members[rank // rest], rank % rest
            block = dict(zip(used, mine, strict=True))
            for d in reversed(others):
                flat, block[d] = divmod(flat, sizes[d])
            points.append(tuple(block[d] for d in range(len(sizes))))
    return Factor(tuple(range(len(sizes))), sorted(points))


def _merge(factors: list[Factor], new: Factor, sizes: Sequence[int]) -> list[Factor] | None:
    """`factors` and `new` as factors over disjoint dimensions (the blocks in all of
    them); None where that takes more than `EXACT_GUARD` combinations to find."""
    overlapping = [f for f in factors if set(f.dims) & set(new.dims)]
    if not overlapping:
        return [*factors, new]
    group = [*overlapping, new]
    dims = tuple(sorted({d for f in group for d in f.dims}))
    widest = next((f for f in group if f.dims == dims), None)
    if widest is not None:
        candidates: Sequence[tuple[int, ...]] = widest.points
    elif math.prod(sizes[d] for d in dims) <= EXACT_GUARD:
        candidates = list(itertools.product(*(range(sizes[d]) for d in dims)))
    else:
        return None
    points = []
    for point in candidates:
        at = dict(zip(dims, point, strict=True))
        if all(f.contains(at) for f in group):
            points.append(point)
    kept = [f for f in factors if f not in overlapping]
    return [*kept, Factor(dims, points)]
