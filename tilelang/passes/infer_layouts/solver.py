"""The machinery of `infer_layouts`: deciding one layout per tile (phase 1, `Inference`)
and rewriting the function with them (phase 2, `Rewrite`).

Both phases dispatch every instruction to the rule its class names (`Instr.LAYOUT`,
`tilelang.passes.infer_layouts.rules`): in phase 1 a rule records the instruction's
tiles (`add`), how their layouts follow from each other (`equal`, `edge`) and the
layouts it wants (`anchors`); in phase 2 it converts operands to the layouts the
instruction needs (`with_operands`, which inserts relayouts).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from tilelang.analysis.dot_chains import chained_dots
from tilelang.analysis.layout_policy import blocked_layout
from tilelang.ir.atoms import WARP_SIZE
from tilelang.ir.layout import Layout
from tilelang.ir.nodes import (
    Block,
    For,
    Function,
    Instr,
    Load,
    Relayout,
    Reshape,
    SharedLoad,
    Transpose,
    Value,
    Var,
    View,
)
from tilelang.ir.types import TileType
from tilelang.ir.visit import Rewriter, RewriteResult, walk
from tilelang.passes.infer_layouts.access_runs import access_caps
from tilelang.passes.pipeline_masks import mask_recipe
from tilelang.target import CPU, Target


class LayoutInferenceError(ValueError):
    """No valid layout; the message starts with the instruction's `file:line:col: `."""


class Rule(Protocol):
    """What one kind of instruction does in each phase (see the module docstring)."""

    def scan(self, inference: Inference, instr: Instr) -> None: ...

    def rewrite(self, rewrite: Rewrite, instr: Instr) -> RewriteResult: ...


# --------------------------------------------------------------------------- errors


def layout_error(instr: Instr, var: Var, message: str) -> LayoutInferenceError:
    return LayoutInferenceError(f"{instr.loc}: {instr.mnemonic} %{var.name}: {message}")


def is_tile(value: Value | None) -> bool:
    return isinstance(value, Var) and isinstance(value.type, TileType)


# --------------------------------------------------------------------------- inference

# Origins of a layout, best first (see the module docstring).
USER, DOT, MEMORY, DEFAULT = range(4)
# Paths a layout travelled, best first.
EXACT, SHAPED, REDUCED = range(3)

Transform = Callable[[Layout], Layout | None]


def _same(layout: Layout) -> Layout:
    return layout


@dataclass
class TileVar:
    """A tile Var to decide (For results are aliases of their carried value)."""

    var: Var
    instr: Instr  # the defining instruction (the For for a carried value)
    position: int
    free: bool  # a consumer's wish may decide it (see the module docstring)
    root: int | None  # its default's origin, when it is a source of layouts


@dataclass(frozen=True)
class Edge:
    """target <- transform(source layout); `backward` edges only reach free targets."""

    target: str
    transform: Transform
    path: int
    backward: bool


@dataclass
class Solution:
    layouts: dict[str, Layout]  # every tile Var name, aliases included
    given: set[str]  # names whose layout came with the input
    dots: dict[str, tuple[Layout | None, Layout | None]]  # result name -> (a, b) wanted
    threads: int


def staged_tiles(fn: Function) -> frozenset[str]:
    """Tiles that are a `load` in the body of a loop with pipeline stages that the
    pipeline can copy into shared memory as far as its fill and mask go (`_copyable`),
    or a `shared_load` of a user's shared tile, or a reshape, transpose or view of one:
    what a dot may read from shared memory once the pipeline stages the load, or
    `shared_reads` reads the tile in the dot's layout (`lowering.wgmma`)."""
    staged: set[str] = {i.result.name for i in walk(fn) if isinstance(i, SharedLoad)}
    for instr in walk(fn):  # program order: a view follows what it views
        if isinstance(instr, Reshape | Transpose | View) and instr.value.name in staged:
            staged.add(instr.result.name)
    for loop in walk(fn):
        if not isinstance(loop, For) or (loop.stages or 1) < 2:
            continue
        for instr in loop.body.instrs:
            shaped = isinstance(instr, Reshape | Transpose | View) and instr.value.name in staged
            if shaped or (isinstance(instr, Load) and _copyable(instr, loop)):
                staged.add(instr.result.name)
    return frozenset(staged)


def _copyable(load: Load, loop: For) -> bool:
    """Whether `software_pipeline` may copy `load` by cp.async as far as its fill and mask
    decide: cp.async writes zero bytes where it reads nothing, so the fill must be +0,
    and a mask must be computable for an iteration ahead (`pipeline_masks.mask_recipe`);
    such a mask is the copy's zero fill, so a masked B is staged like an unmasked one."""
    fill = 0.0 if load.fill is None else load.fill.value
    if fill != 0 or math.copysign(1.0, fill) < 0:
        return False
    return load.mask is None or not isinstance(mask_recipe(load.mask, loop, {}), str)


class Inference:
    """Phase 1: decide one layout per tile Var (no IR is rewritten here)."""

    def __init__(self, fn: Function, rules: Mapping[str, Rule], target: Target = CPU) -> None:
        self.rules = rules
        self.target = target
        self.warps = fn.warps
        self.threads = fn.warps * WARP_SIZE
        self.tiles: dict[str, TileVar] = {}
        self.alias: dict[str, str] = {}  # For result -> its carried value
        self.edges: dict[str, list[Edge]] = defaultdict(list)
        self.given: dict[str, Layout] = {}
        self.dots: dict[str, tuple[Layout | None, Layout | None]] = {}
        self.anchors: list[tuple[str, Layout]] = []  # DOT proposals
        self.wishes: dict[str, Layout] = {}  # load -> its reduction's wish, for its default
        # load -> its default's run where no access can move 16 bytes and nothing else
        # depends on the layout (`access_runs`): lanes adjacent rather than a run apart.
        self.caps: dict[str, int] = access_caps(fn)
        self.layouts: dict[str, Layout] = {}
        self.heap: list[tuple] = []
        self.counter = itertools.count()
        self.chained = chained_dots(fn)  # dots that split their warps over rows
        self.staged = staged_tiles(fn)  # a dot may read these from shared memory
        self.scan_block(fn.body)

    # -- reading the function ------------------------------------------------------------

    def name(self, var: Var) -> str:
        return self.alias.get(var.name, var.name)

    def tile(self, var: Var) -> TileVar:
        return self.tiles[self.name(var)]

    def is_free(self, value: Value | None) -> bool:
        return is_tile(value) and self.tile(value).free

    def add(self, var: Var, instr: Instr, free: bool, root: int | None = None) -> None:
        tile = TileVar(var, instr, len(self.tiles), free, root)
        self.tiles[var.name] = tile
        if var.type.layout is not None:
            self.give(var, instr, var.name)

    def give(self, var: Var, instr: Instr, slot: str) -> None:
        """Record the input's layout of `var` for the tile `slot` (checked first)."""
        layout, tile = var.type.layout, var.type
        if tuple(layout.shape) != tuple(tile.shape):
            raise layout_error(
                instr,
                var,
                f"the layout {layout} has shape {list(layout.shape)}, the tile {list(tile.shape)}",
            )
        if layout.num_threads != self.threads:
            raise layout_error(
                instr,
                var,
                f"the layout {layout} spans {layout.num_threads} threads, the kernel has "
                f"{self.threads} ({self.threads // WARP_SIZE} warps); use replicated(r) to fill "
                "the block",
            )
        if slot in self.given and self.given[slot] != layout:
            raise layout_error(
                instr,
                var,
                f"the layout {layout} conflicts with {self.given[slot]} given to "
                f"%{self.tiles[slot].var.name} (a loop's carried value and result share one)",
            )
        self.given[slot] = layout

    def edge(self, source: Var, target: Var, transform: Transform, path: int, backward: bool):
        self.edges[self.name(source)].append(Edge(self.name(target), transform, path, backward))

    def equal(self, a: Var, b: Var) -> None:
        """`b` is defined from `a` and must have its layout: forward, and back if free."""
        self.edge(a, b, _same, EXACT, backward=False)
        self.edge(b, a, _same, EXACT, backward=True)

    def scan_block(self, block: Block) -> None:
        for instr in block.instrs:
            self.rules[instr.LAYOUT].scan(self, instr)

    # -- solving -------------------------------------------------------------------------

    def propose(self, target: str, layout: Layout, origin: int, path: int) -> None:
        key = (origin, path, self.tiles[target].position, next(self.counter))
        heapq.heappush(self.heap, (key, target, layout))

    def assign(self, name: str, layout: Layout, origin: int, path: int) -> None:
        self.layouts[name] = layout
        for edge in self.edges[name]:
            target = edge.target
            if target in self.layouts or (edge.backward and not self.tiles[target].free):
                continue
            wanted = edge.transform(layout)
            if wanted is not None:
                self.propose(target, wanted, origin, max(path, edge.path))

    def drain(self) -> None:
        while self.heap:
            (origin, path, *_), name, layout = heapq.heappop(self.heap)
            if name not in self.layouts:
                self.assign(name, layout, origin, path)

    def default(self, tile: TileVar, origin: int) -> None:
        t, name = tile.var.type, tile.var.name
        layout = self.wishes.get(name) or blocked_layout(
            t.shape, t.dtype, self.threads, max_vec=self.caps.get(name)
        )
        self.assign(name, layout, origin, EXACT)

    def solve(self) -> Solution:
        for name in sorted(self.given, key=lambda n: self.tiles[n].position):
            self.assign(name, self.given[name], USER, EXACT)
        for name, layout in self.anchors:
            if name not in self.layouts:
                self.propose(name, layout, DOT, EXACT)
        self.drain()
        roots = sorted(
            (t for t in self.tiles.values() if t.root is not None),
            key=lambda t: (t.root, -math.prod(t.var.type.shape), t.position),
        )
        for root in roots:  # defaults, only once nothing is pending
            if root.var.name not in self.layouts:
                self.default(root, root.root)
                self.drain()
        for tile in self.tiles.values():  # unreachable from any source (defensive)
            if tile.var.name not in self.layouts:
                self.default(tile, DEFAULT)
                self.drain()
        layouts = dict(self.layouts)
        for result, carried in self.alias.items():
            layouts[result] = layouts[carried]
        for name, tile in self.tiles.items():
            self.check(tile, layouts[name])
        given = set(self.given) | self.given_aliases()
        return Solution(layouts, given, self.dots, self.threads)

    def given_aliases(self) -> set[str]:
        return {result for result, carried in self.alias.items() if carried in self.given}

    def check(self, tile: TileVar, layout: Layout) -> None:
        """Contract 1, for every decided layout (a broken rule is a bug, said clearly)."""
        shape = tuple(tile.var.type.shape)
        if tuple(layout.shape) != shape or layout.num_threads != self.threads:
            raise layout_error(
                tile.instr,
                tile.var,
                f"inferred the layout {layout} ({layout.num_threads} threads, shape "
                f"{list(layout.shape)}) for a {list(shape)} tile of a {self.threads}-thread block",
            )


# --------------------------------------------------------------------------- rewriting


class Rewrite(Rewriter):
    """Phase 2: retype every tile Var and insert the relayouts the contract needs."""

    def __init__(self, solution: Solution, taken: set[str], rules: Mapping[str, Rule]) -> None:
        super().__init__()
        self.rules = rules
        self.layouts = solution.layouts
        self.given = solution.given
        self.dots = solution.dots
        self.threads = solution.threads
        self.taken = set(taken)
        self.yield_wants: list[tuple[Layout | None, ...]] = []
        self.scopes: list[dict[tuple[str, Layout], Var]] = []  # relayouts visible here

    def new_var(self, var: Var) -> Var:
        if not is_tile(var):
            return var
        return Var(var.name, replace(var.type, layout=self.layouts[var.name]))

    def fresh(self, name: str) -> str:
        candidates = (f"{name}.r{'' if i == 1 else i}" for i in itertools.count(1))
        new = next(c for c in candidates if c not in self.taken)
        self.taken.add(new)
        return new

    def rewrite_block(self, block: Block) -> Block:
        self.scopes.append({})
        try:
            return super().rewrite_block(block)
        finally:
            self.scopes.pop()

    def convert(self, value: Value, want: Layout | None, before: list[Instr], instr: Instr):
        """`value` in the layout `want`: itself, an earlier relayout in scope, or a new one."""
        if want is None or not is_tile(value) or value.type.layout == want:
            return value
        key = (value.name, want)
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        var = Var(self.fresh(value.name), replace(value.type, layout=want))
        before.append(Relayout(var, value, loc=instr.loc))
        self.scopes[-1][key] = var
        return var

    def with_operands(self, instr: Instr, new: Instr, wants: dict[str, Layout | None]):
        """`new` with each named operand field converted to its wanted layout."""
        before: list[Instr] = []
        changes = {}
        for field, want in wants.items():
            current = getattr(new, field)
            if isinstance(current, tuple):
                changes[field] = tuple(self.convert(v, want, before, instr) for v in current)
            else:
                changes[field] = self.convert(current, want, before, instr)
        return [*before, replace(new, **changes)]

    def layout_of(self, value: Value | None) -> Layout | None:
        return value.type.layout if is_tile(value) else None

    def rewrite_instr(self, instr: Instr) -> RewriteResult:
        return self.rules[instr.LAYOUT].rewrite(self, instr)
