"""The run of one access that `infer_layouts` cuts a load's default layout to, where
that can only help (`access_caps`).

A global `load` whose row length or offset proves no 16-byte access
(`divisors.access_run`: 781 f32 columns, a window starting at an odd column) moves its
tile in narrower accesses. In the blocked default each thread holds a 16-byte run, so
each run is split into accesses whose lanes are a run apart: 4x the sectors for f32
moved one at a time. A layout whose runs are one access long puts a warp's lanes on
adjacent accesses instead (`layout_policy.blocked_layout`'s `max_vec`).

The cut changes which elements each thread holds, so it is made only on a *group* of
tiles whose every instruction costs the same in any layout: elementwise `compute` and
`cast`; `broadcast` and `reduce` that keep the last dim (those that drop it or add it
cut the group: their other side's layout does not depend on the run); a loop's or
branch's carried values; a `reshape` that only adds or drops unit dims; a load's or
store's mask. A group that any other instruction touches — a `dot` operand, a
`transpose`, `slice`, `concat`, `scan`, a shared-memory store, a gather — keeps the
blocked layout: what it does was chosen for 16-byte runs per thread (the relayout to
an mma fragment moves whole runs; a walk's per-step rows are a thread's run), and
cutting there cost selective_scan's walk about 300 registers of addresses and the varlen
flash attention at D 129 a spill.

The run of a group is the widest access among its global loads and stores; none when
any of them (or a packed, sub-byte one) can move 16 bytes. No access of the group is
then narrower than in the blocked layout: each moves what it provably can, and the
accesses that are narrower than the group's run are still split, but less far apart.
"""

from __future__ import annotations

from tilelang.analysis.divisors import access_run, shape_divisor
from tilelang.ir.nodes import (
    Arange,
    Broadcast,
    Cast,
    Compute,
    For,
    Full,
    Function,
    If,
    Instr,
    Load,
    Reduce,
    Reshape,
    Store,
    Value,
    Var,
    Yield,
)
from tilelang.ir.types import TileType
from tilelang.ir.visit import walk
from tilelang.passes.analyze import Facts, analyze

__all__ = ["access_caps"]


def access_caps(fn: Function) -> dict[str, int]:
    """The run (elements, below 16 bytes) each global load's default layout is cut to,
    by the load's result name; a load not named keeps the blocked layout."""
    accesses = [i for i in walk(fn) if _is_access(i)]
    if not accesses:
        return {}
    groups = _Groups()
    for instr in walk(fn):
        _join(groups, instr)
    facts = analyze(fn)
    for instr in accesses:
        tile = instr.result if isinstance(instr, Load) else instr.value
        groups.access(tile.name, _run(fn, facts, instr))
    runs = groups.runs()
    caps = {}
    for instr in accesses:
        if isinstance(instr, Load):
            run = runs.get(groups.find(instr.result.name))
            if run is not None:
                caps[instr.result.name] = run
    return caps


def _is_access(instr: Instr) -> bool:
    """A global load or store of a tile (not a gather, scatter or atomic)."""
    return type(instr) is Load or (type(instr) is Store and _tile(instr.value))


def _run(fn: Function, facts: Facts, instr: Load | Store) -> int | None:
    """The most elements one access of `instr` provably moves, None for 16 bytes or a
    packed (sub-byte) type, whose accesses the cut must not touch."""
    kind = instr.tensor.type
    if kind.dtype.bits % 8:
        return None
    last = shape_divisor(fn, kind.shape[-1])
    return access_run(last, facts.divisor(instr.offsets[-1]), kind.dtype.bits)


def _tile(value: Value | None) -> bool:
    return isinstance(value, Var) and isinstance(value.type, TileType)


class _Groups:
    """Tiles joined by union-find; a group is spoiled when an instruction whose cost
    depends on the layout touches it, and collects the runs of its accesses."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}
        self.spoiled: set[str] = set()
        self.access_runs: dict[str, list[int | None]] = {}

    def find(self, name: str) -> str:
        root = self.parent.setdefault(name, name)
        while root != self.parent[root]:
            root = self.parent[root]
        while name != root:  # path compression
            self.parent[name], name = root, self.parent[name]
        return root

    def union(self, *values: Value | None) -> None:
        names = [v.name for v in values if _tile(v)]
        for name in names[1:]:
            a, b = self.find(names[0]), self.find(name)
            if a != b:
                self.parent[b] = a

    def spoil(self, values) -> None:
        for value in values:
            if _tile(value):
                self.spoiled.add(value.name)

    def access(self, name: str, run: int | None) -> None:
        self.access_runs.setdefault(name, []).append(run)

    def runs(self) -> dict[str, int | None]:
        """Per group root, its run: the widest of its accesses, None when spoiled or when
        one of them moves 16 bytes."""
        found: dict[str, int | None] = {}
        for name, runs in self.access_runs.items():
            root = self.find(name)
            previous = found.get(root, 0)
            found[root] = None if previous is None or None in runs else max(previous, *runs)
        for name in self.spoiled:
            found[self.find(name)] = None
        return found


def _join(groups: _Groups, instr: Instr) -> None:
    """Join the tiles `instr` relates in a layout-neutral way, or spoil what it touches."""
    if isinstance(instr, Compute | Cast):
        groups.union(*instr.uses(), *instr.defs())
    elif isinstance(instr, Broadcast):
        if _tile(instr.value) and instr.value.type.shape[-1:] == instr.result.type.shape[-1:]:
            groups.union(instr.value, instr.result)  # else one side has no run: a cut
    elif isinstance(instr, Reduce):
        if instr.axis != instr.value.type.rank - 1:
            groups.union(instr.value, instr.result)  # else one side has no run: a cut
    elif isinstance(instr, Reshape):
        if _unit_reshape(instr.value.type.shape, instr.result.type.shape):
            groups.union(instr.value, instr.result)
        else:
            groups.spoil((instr.value, instr.result))
    elif isinstance(instr, For):
        ends = instr.body.instrs[-1].values
        for group in zip(instr.inits, instr.carried, instr.results, ends, strict=True):
            groups.union(*group)
    elif isinstance(instr, If):
        then, other = instr.then_body.instrs[-1].values, instr.else_body.instrs[-1].values
        for group in zip(instr.results, then, other, strict=True):
            groups.union(*group)
    elif type(instr) is Load:
        groups.union(instr.result, instr.mask)
    elif type(instr) is Store:
        groups.union(instr.value, instr.mask)
    elif not isinstance(instr, Yield | Full | Arange):
        groups.spoil((*instr.uses(), *instr.defs(), *instr.params()))


def _unit_reshape(source: tuple[int, ...], result: tuple[int, ...]) -> bool:
    """Whether a reshape only adds or drops size-1 dims and keeps the last dim."""
    kept = [n for n in source if n != 1] == [n for n in result if n != 1]
    return kept and source[-1:] == result[-1:]
