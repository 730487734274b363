"""Pass `infer_layouts`: gives every register tile of a function a register layout.

Assumes a verified function (`tilelang.ir.verify`); tiles may or may not carry layouts
(the frontend leaves them `None`, text input or a user annotation may give some).

Guarantees (the lowering relies on this contract; T = ``fn.warps * 32``):

1. Every tile-typed Var (instruction results, `For` carried values and results, `If`
   results, inserted `relayout`s) has a layout whose shape is the tile's shape and
   whose ``num_threads`` is T (replication ``rep(r)`` fills the threads of a tile with
   fewer elements than threads).
2. `Compute`: every tile operand has exactly the result's layout. `Cast`: the operand
   has the result's layout. Scalar operands need nothing.
3. `For`: every init, the carried value, the value the body yields and the result have
   one layout. `If`: both yielded values have the result's layout.
4. `Dot(a, b, acc)`: acc and result have one layout. When an mma atom fits (a/b f16 or
   bf16 with an f32 acc: m16n8k16; i8/u8 with an i32 acc: m16n8k32; M % 16 == 0,
   N % 8 == 0, K % atom.k == 0, and warps = wm·wn with wm | M/16, wn | N/8; see
   `dot_layouts`), with warp index w = wm_i·wn + wn_i:

   - acc, result: ``spatial(wm, wn) * local(rm, rn) * atom.c``
   - a: ``(spatial(wm, 1) * replicated(wn, rank=2)) * local(rm, rk) * atom.a``
   - b: ``(replicated(wm, rank=2) * spatial(1, wn)) * local(rk, rn) * atom.b``

   so the warp that owns C block (wm_i, wn_i) holds the A rows wm_i and the B columns
   wn_i. a and b always reach the dot through a `relayout` unless their producer already
   has that layout (the lowering selects ldmatrix there). Without an atom, acc and result
   get the blocked layout and a, b keep whatever layout they have (a generic dot); so
   does a dot whose result layout was given and is not the C layout.
5. `Reduce`: result = ``value_layout.reduce(axis, keepdims=False)`` (a given result
   layout that differs: the reduction writes ``<result>.r`` in that layout, then a
   relayout gives the result). `Scan`: result =
   operand layout. `Transpose`: result = ``value_layout.permute(perm)``. `Broadcast` of
   a tile: value = ``result_layout.reduce(broadcast dims, keepdims=True)``. `View`:
   result = the natural view of the value's layout (`view_layout`: each thread's runs of
   consecutive last-dim elements reinterpreted in place), so the per-thread meaning of a
   view with layouts equals the row-major meaning of the view without them; a view whose
   two layouts were both given in the input is kept as is. `Reshape`: any pair of
   layouts (``value_layout.reshape`` when it exists, else the blocked layout; the
   lowering moves data through shared memory when they do not correspond).
   `SharedStore`/`Print`: any layout. `Store`: any layout, except that a tile of a type
   that is not a whole number of bytes (u3, u4, f6, ...) is moved to its blocked layout
   when its threads would otherwise write parts of one byte (`holds_whole_bytes`).
6. Layouts given in the input are kept (user layouts win); a `relayout` is inserted
   wherever a rule above would otherwise be broken. Inserted relayouts are named
   ``<value>.r`` (``.r2``, ... when taken), placed right before the instruction that
   needs them (inside the loop or branch body for a yielded value), and shared by later
   uses in scope.

How layouts are chosen: rules applied to a fixpoint with explicit priorities. Every
layout decision is a proposal ``(origin, path, position)``; the best pending proposal is
taken first and each var is decided once:

- origin — where the layout comes from: a layout given in the input (USER), then the
  dot layouts (DOT: a dot's result and a "free" accumulator get the C layout), then
  memory (MEMORY: the blocked default of a `Load`/`SharedLoad` no rule reached), then
  the default of other sources (DEFAULT: `Full`, `Arange`, `Broadcast`, `Relayout`);
  defaults are applied only when no proposal is pending, largest tile first.
- path — how the layout reached the var: unchanged through elementwise equalities
  (EXACT: Compute, Cast, For, If, Scan), through a shape change (SHAPED: Transpose,
  Reshape, View, Broadcast), or through a reduction (REDUCED), so an elementwise layout
  beats a reduced one;
- position — program order breaks ties.

Propagation runs forward (operand -> result: a result's layout follows from its operands)
and backward into *free* producers only (consumer -> operand): `Load`, `SharedLoad`,
`Full`, `Arange` and `Broadcast` results are free; a `Cast`/`Compute`/`Scan`/`Reshape`/
`Transpose`/`View` is free when its tile operands are; a loop-carried value when its init
is; an `If` result when both yields are. A free producer takes the layout its consumer
wants, so a `zeros` accumulator gets the C layout and a scale load broadcast into a
product gets that product's layout reduced. Dot operands a and b propose nothing: their
loads keep the blocked layout (`blocked_layout`) and get a relayout.

Errors raise `LayoutInferenceError` whose message starts with the instruction's source
location and names the tensor, the instruction and what failed: a given layout of the
wrong shape or thread count, a loop's carried value and result given different layouts,
a given view layout that no layout of the value views naturally.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from tilelang.dtypes import DType
from tilelang.ir import nodes
from tilelang.ir.atoms import WARP_SIZE, MmaAtom, mma_atoms_for
from tilelang.ir.layout import (
    Layout,
    LayoutDivisionError,
    LayoutError,
    local,
    replicated,
    spatial,
)
from tilelang.ir.nodes import Block, Function, Instr, Relayout, Value, Var
from tilelang.ir.printer import MNEMONICS
from tilelang.ir.types import TileType
from tilelang.ir.visit import Rewriter, defined_vars

__all__ = [
    "DotLayouts",
    "LayoutInferenceError",
    "blocked_layout",
    "byte_group",
    "dot_layouts",
    "holds_whole_bytes",
    "run",
    "view_layout",
]


class LayoutInferenceError(ValueError):
    """No valid layout; the message starts with the instruction's `file:line:col: `."""


def run(fn: Function) -> Function:
    """`fn` with a layout on every tile and the relayouts the contract needs."""
    solution = _Inference(fn).solve()
    taken = {var.name for var in defined_vars(fn)}
    return _Rewrite(solution, taken).rewrite_function(fn)


# --------------------------------------------------------------------------- layout rules


def blocked_layout(shape: Sequence[int], dtype: DType, threads: int, *, min_vec: int = 1) -> Layout:
    """The coalesced default layout of a tile of `shape` and `dtype` over `threads`.

    Each thread holds a run of `vec` consecutive elements of the last dim: the largest
    power of two with ``vec * bits <= 128`` dividing ``shape[-1]`` (16 bytes per thread
    when possible, sub-byte types included: 32 u4, 32 u3 = 12 bytes), halved while the
    tile has fewer than ``threads * vec`` elements (spreading over threads comes before
    vectorizing). Threads then go over the remaining last-dim positions, then over
    earlier dims (row-major, so a warp reads consecutive memory), each factor the gcd of
    the threads left and the positions left. Leftover threads become replication (the
    outermost thread digit: threads 0.. cover the tile, the others repeat it); leftover
    elements become outer local modes. `min_vec` forces the run to be a multiple of it
    (`view` needs whole groups of bits per thread). A type whose width is not a whole
    number of bytes (u3, f6, ...) also gets runs of whole bytes (``byte_group`` elements)
    when the row allows, so that stores of packed elements never share a byte between
    threads.

    ``[64, 64] f16, 128 threads -> local(4, 1).spatial(16, 8).local(1, 8)``;
    ``[4] f32 -> replicated(32).spatial(4)``.
    """
    shape = tuple(shape)
    if not shape:
        return replicated(threads, rank=0)
    rank = len(shape)
    whole_bytes = math.lcm(min_vec, byte_group(dtype))
    if shape[-1] % whole_bytes == 0:
        min_vec = whole_bytes
    vec = _vector_width(shape, dtype.bits, threads, min_vec)
    positions = [*shape[:-1], shape[-1] // vec]
    spread = [1] * rank
    left = threads
    for d in reversed(range(rank)):
        spread[d] = math.gcd(left, positions[d])
        left //= spread[d]
    outer = [p // s for p, s in zip(positions, spread, strict=True)]
    inner = [1] * (rank - 1) + [vec]
    layout = replicated(left, rank=rank) * local(*outer) * spatial(*spread) * local(*inner)
    return layout.canonicalize()


def byte_group(dtype: DType) -> int:
    """The fewest consecutive elements of `dtype` that fill whole bytes (8 for u3, 2 for u4)."""
    return 8 // math.gcd(dtype.bits, 8)


def holds_whole_bytes(layout: Layout, dtype: DType) -> bool:
    """Whether each thread holds runs of whole bytes along the last dim (its innermost locals)."""
    group = byte_group(dtype)
    return group == 1 or layout.divisible_by(local(*[1] * (layout.rank - 1), group))


def _vector_width(shape: tuple[int, ...], bits: int, threads: int, min_vec: int) -> int:
    last, total = shape[-1], math.prod(shape)
    vec = 1
    while (vec * 2) * bits <= 128 and last % (vec * 2) == 0:
        vec *= 2
    while vec > 1 and total < threads * vec:
        vec //= 2
    if vec % min_vec == 0:
        return vec
    # The largest min_vec·2^j not above the preferred width that divides the row.
    run = min_vec
    while run * 2 <= vec and last % (run * 2) == 0:
        run *= 2
    return run


@dataclass(frozen=True)
class DotLayouts:
    """The layouts of one mma-based dot: `warps` = (wm, wn) arranges the block's warps."""

    atom: MmaAtom
    warps: tuple[int, int]
    a: Layout
    b: Layout
    c: Layout


def dot_layouts(
    m: int, n: int, k: int, operand: DType, accumulator: DType, warps: int
) -> DotLayouts | None:
    """The mma layouts of ``[m, k] @ [k, n] + [m, n]``, or None when no atom fits.

    Among the warp grids wm × wn = `warps` with wm | m/16 and wn | n/8, the one whose
    per-warp tile (m/wm) × (n/wn) is closest to square (then fewer warp rows).
    """
    for atom in mma_atoms_for(str(operand)):
        if atom.acc_dtype != str(accumulator) or m % atom.m or n % atom.n or k % atom.k:
            continue
        grid = _warp_grid(m, n, atom.m, atom.n, warps)
        if grid is None:
            continue
        wm, wn = grid
        rm, rn, rk = m // (atom.m * wm), n // (atom.n * wn), k // atom.k
        return DotLayouts(
            atom=atom,
            warps=grid,
            a=(spatial(wm, 1) * replicated(wn, rank=2)) * local(rm, rk) * atom.a,
            b=(replicated(wm, rank=2) * spatial(1, wn)) * local(rk, rn) * atom.b,
            c=spatial(wm, wn) * local(rm, rn) * atom.c,
        )
    return None


def _warp_grid(m: int, n: int, atom_m: int, atom_n: int, warps: int) -> tuple[int, int] | None:
    grids = [
        (wm, warps // wm)
        for wm in range(1, warps + 1)
        if warps % wm == 0 and (m // atom_m) % wm == 0 and (n // atom_n) % (warps // wm) == 0
    ]
    if not grids:
        return None

    def squareness(grid: tuple[int, int]) -> tuple[Fraction, int]:
        rows, cols = m // grid[0], n // grid[1]
        return Fraction(max(rows, cols), min(rows, cols)), grid[0]

    return min(grids, key=squareness)


def view_layout(layout: Layout, source: DType, target: DType) -> Layout | None:
    """The natural layout of `view` from `source` to `target` elements, or None.

    Each group of ``g = target.bits / gcd`` consecutive last-dim elements a thread holds
    as its innermost locals becomes ``source.bits / gcd`` target elements in place, so
    reinterpreting each thread's register bits equals reinterpreting each row's bit
    stream. None when the layout's innermost local digit is not such a run.
    """
    common = math.gcd(source.bits, target.bits)
    take, give = target.bits // common, source.bits // common
    ones = [1] * (layout.rank - 1)
    try:
        rest = layout / local(*ones, take)
    except LayoutDivisionError:
        return None
    return rest * local(*ones, give)


def _inverse(perm: Sequence[int]) -> list[int]:
    inverse = [0] * len(perm)
    for new, old in enumerate(perm):
        inverse[old] = new
    return inverse


def _broadcast_dims(value: TileType, result: TileType) -> list[int]:
    return [d for d, (s, r) in enumerate(zip(value.shape, result.shape, strict=True)) if s != r]


# --------------------------------------------------------------------------- errors


def _mnemonic(instr: Instr) -> str:
    return instr.op if isinstance(instr, nodes.Compute) else MNEMONICS[type(instr)]


def _error(instr: Instr, var: Var, message: str) -> LayoutInferenceError:
    return LayoutInferenceError(f"{instr.loc}: {_mnemonic(instr)} %{var.name}: {message}")


def _is_tile(value: Value | None) -> bool:
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
class _Tile:
    """A tile Var to decide (For results are aliases of their carried value)."""

    var: Var
    instr: Instr  # the defining instruction (the For for a carried value)
    position: int
    free: bool  # a consumer's wish may decide it (see the module docstring)
    root: int | None  # its default's origin, when it is a source of layouts


@dataclass(frozen=True)
class _Edge:
    """target <- transform(source layout); `backward` edges only reach free targets."""

    target: str
    transform: Transform
    path: int
    backward: bool


@dataclass
class _Solution:
    layouts: dict[str, Layout]  # every tile Var name, aliases included
    given: set[str]  # names whose layout came with the input
    dots: dict[str, tuple[Layout | None, Layout | None]]  # result name -> (a, b) wanted
    threads: int


class _Inference:
    """Phase 1: decide one layout per tile Var (no IR is rewritten here)."""

    def __init__(self, fn: Function) -> None:
        self.warps = fn.warps
        self.threads = fn.warps * WARP_SIZE
        self.tiles: dict[str, _Tile] = {}
        self.alias: dict[str, str] = {}  # For result -> its carried value
        self.edges: dict[str, list[_Edge]] = defaultdict(list)
        self.given: dict[str, Layout] = {}
        self.dots: dict[str, tuple[Layout | None, Layout | None]] = {}
        self.anchors: list[tuple[str, Layout]] = []  # DOT proposals
        self.layouts: dict[str, Layout] = {}
        self.heap: list[tuple] = []
        self.counter = itertools.count()
        self.scan_block(fn.body)

    # -- reading the function ------------------------------------------------------------

    def name(self, var: Var) -> str:
        return self.alias.get(var.name, var.name)

    def tile(self, var: Var) -> _Tile:
        return self.tiles[self.name(var)]

    def is_free(self, value: Value | None) -> bool:
        return _is_tile(value) and self.tile(value).free

    def add(self, var: Var, instr: Instr, free: bool, root: int | None = None) -> None:
        tile = _Tile(var, instr, len(self.tiles), free, root)
        self.tiles[var.name] = tile
        if var.type.layout is not None:
            self.give(var, instr, var.name)

    def give(self, var: Var, instr: Instr, slot: str) -> None:
        """Record the input's layout of `var` for the tile `slot` (checked first)."""
        layout, tile = var.type.layout, var.type
        if tuple(layout.shape) != tuple(tile.shape):
            raise _error(
                instr,
                var,
                f"the layout {layout} has shape {list(layout.shape)}, the tile {list(tile.shape)}",
            )
        if layout.num_threads != self.threads:
            raise _error(
                instr,
                var,
                f"the layout {layout} spans {layout.num_threads} threads, the kernel has "
                f"{self.threads} ({self.threads // WARP_SIZE} warps); use replicated(r) to fill "
                "the block",
            )
        if slot in self.given and self.given[slot] != layout:
            raise _error(
                instr,
                var,
                f"the layout {layout} conflicts with {self.given[slot]} given to "
                f"%{self.tiles[slot].var.name} (a loop's carried value and result share one)",
            )
        self.given[slot] = layout

    def edge(self, source: Var, target: Var, transform: Transform, path: int, backward: bool):
        self.edges[self.name(source)].append(_Edge(self.name(target), transform, path, backward))

    def equal(self, a: Var, b: Var) -> None:
        """`b` is defined from `a` and must have its layout: forward, and back if free."""
        self.edge(a, b, _same, EXACT, backward=False)
        self.edge(b, a, _same, EXACT, backward=True)

    def scan_block(self, block: Block) -> None:
        for instr in block.instrs:
            method = getattr(self, f"scan_{type(instr).__name__}", None)
            if method is not None:
                method(instr)
            else:
                for var in instr.defs():
                    if _is_tile(var):
                        self.add(var, instr, free=False)

    def scan_For(self, instr: nodes.For) -> None:
        tiles = [
            (init, carried, result)
            for init, carried, result in zip(instr.inits, instr.carried, instr.results, strict=True)
            if _is_tile(carried)
        ]
        for init, carried, _ in tiles:
            self.add(carried, instr, free=self.is_free(init))
            if _is_tile(init):
                self.equal(init, carried)
        self.scan_block(instr.body)
        end = instr.body.instrs[-1]
        for value, carried in zip(end.values, instr.carried, strict=True):
            if _is_tile(value):
                self.equal(value, carried)
        for _, carried, result in tiles:
            self.alias[result.name] = carried.name
            if result.type.layout is not None:
                self.give(result, instr, carried.name)

    def scan_If(self, instr: nodes.If) -> None:
        self.scan_block(instr.then_body)
        self.scan_block(instr.else_body)
        ends = (instr.then_body.instrs[-1], instr.else_body.instrs[-1])
        for j, result in enumerate(instr.results):
            if not _is_tile(result):
                continue
            values = [end.values[j] for end in ends]
            self.add(result, instr, free=all(self.is_free(v) for v in values))
            for value in values:
                if _is_tile(value):
                    self.equal(value, result)

    def scan_root(self, instr: Instr, origin: int) -> None:
        var = instr.result
        if _is_tile(var):
            self.add(var, instr, free=True, root=origin)

    def scan_Load(self, instr: nodes.Load) -> None:
        self.scan_root(instr, MEMORY)

    def scan_SharedLoad(self, instr: nodes.SharedLoad) -> None:
        self.scan_root(instr, MEMORY)

    def scan_Full(self, instr: nodes.Full) -> None:
        self.scan_root(instr, DEFAULT)

    def scan_Arange(self, instr: nodes.Arange) -> None:
        self.scan_root(instr, DEFAULT)

    def scan_Relayout(self, instr: nodes.Relayout) -> None:
        self.scan_root(instr, DEFAULT)  # a relayout may produce any layout

    def scan_Broadcast(self, instr: nodes.Broadcast) -> None:
        self.scan_root(instr, DEFAULT)
        if _is_tile(instr.value):
            dims = _broadcast_dims(instr.value.type, instr.result.type)
            self.edge(
                instr.result, instr.value, lambda layout: layout.reduce(dims), SHAPED, backward=True
            )

    def scan_elementwise(self, instr: Instr, operands: Sequence[Value]) -> None:
        if not _is_tile(instr.result):
            return
        tiles = [v for v in operands if _is_tile(v)]
        self.add(instr.result, instr, free=all(self.is_free(v) for v in tiles))
        for value in tiles:
            self.equal(value, instr.result)

    def scan_Compute(self, instr: nodes.Compute) -> None:
        self.scan_elementwise(instr, instr.args)

    def scan_Cast(self, instr: nodes.Cast) -> None:
        self.scan_elementwise(instr, (instr.value,))

    def scan_shaped(self, instr: Instr, forward: Transform, backward: Transform | None) -> None:
        """A result whose layout is a function of its operand's (and back, when free)."""
        self.add(instr.result, instr, free=self.is_free(instr.value))
        self.edge(instr.value, instr.result, forward, SHAPED, backward=False)
        if backward is not None:
            self.edge(instr.result, instr.value, backward, SHAPED, backward=True)

    def scan_Transpose(self, instr: nodes.Transpose) -> None:
        perm, inverse = list(instr.perm), _inverse(instr.perm)
        self.scan_shaped(
            instr, lambda layout: layout.permute(perm), lambda layout: layout.permute(inverse)
        )

    def scan_Reshape(self, instr: nodes.Reshape) -> None:
        source, result = instr.value.type, instr.result.type

        def forward(layout: Layout) -> Layout:
            try:
                return layout.reshape(result.shape)
            except LayoutError:  # the lowering goes through shared memory
                return blocked_layout(result.shape, result.dtype, self.threads)

        def backward(layout: Layout) -> Layout | None:
            try:
                return layout.reshape(source.shape)
            except LayoutError:
                return None

        self.scan_shaped(instr, forward, backward)

    def scan_View(self, instr: nodes.View) -> None:
        source, result = instr.value.type, instr.result.type
        group = result.dtype.bits // math.gcd(source.dtype.bits, result.dtype.bits)
        # A layout the view can read in place, for a value whose layout cannot be.
        fallback = blocked_layout(source.shape, source.dtype, self.threads, min_vec=group)

        def forward(layout: Layout) -> Layout:
            natural = view_layout(layout, source.dtype, result.dtype)
            if natural is None:  # relayouted to the fallback first (see _Rewrite.visit_View)
                natural = view_layout(fallback, source.dtype, result.dtype)
            return natural

        self.scan_shaped(
            instr, forward, lambda layout: view_layout(layout, result.dtype, source.dtype)
        )

    def scan_Reduce(self, instr: nodes.Reduce) -> None:
        if not _is_tile(instr.result):
            return  # a reduction to a scalar
        self.add(instr.result, instr, free=False)
        axis = instr.axis
        self.edge(
            instr.value, instr.result, lambda layout: layout.reduce(axis, False), REDUCED, False
        )

    def scan_Scan(self, instr: nodes.Scan) -> None:
        self.scan_elementwise(instr, (instr.value,))  # the result keeps the operand's layout

    def scan_Dot(self, instr: nodes.Dot) -> None:
        result = instr.result
        self.add(result, instr, free=False)
        (m, k), n = instr.a.type.shape, result.type.shape[1]
        plan = dot_layouts(m, n, k, instr.a.type.dtype, result.type.dtype, self.warps)
        if plan is not None:
            c, a, b = plan.c, plan.a, plan.b
        else:
            c, a, b = blocked_layout(result.type.shape, result.type.dtype, self.threads), None, None
        given = self.given.get(result.name)
        if given is not None and given != c:  # the user's layout wins: a generic dot
            c, a, b = given, None, None
        self.dots[result.name] = (a, b)
        self.anchors.append((result.name, c))
        if self.is_free(instr.acc):
            self.anchors.append((self.name(instr.acc), c))

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

    def default(self, tile: _Tile, origin: int) -> None:
        t = tile.var.type
        self.assign(tile.var.name, blocked_layout(t.shape, t.dtype, self.threads), origin, EXACT)

    def solve(self) -> _Solution:
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
        return _Solution(layouts, given, self.dots, self.threads)

    def given_aliases(self) -> set[str]:
        return {result for result, carried in self.alias.items() if carried in self.given}

    def check(self, tile: _Tile, layout: Layout) -> None:
        """Contract 1, for every decided layout (a broken rule is a bug, said clearly)."""
        shape = tuple(tile.var.type.shape)
        if tuple(layout.shape) != shape or layout.num_threads != self.threads:
            raise _error(
                tile.instr,
                tile.var,
                f"inferred the layout {layout} ({layout.num_threads} threads, shape "
                f"{list(layout.shape)}) for a {list(shape)} tile of a {self.threads}-thread block",
            )


# --------------------------------------------------------------------------- rewriting


class _Rewrite(Rewriter):
    """Phase 2: retype every tile Var and insert the relayouts the contract needs."""

    def __init__(self, solution: _Solution, taken: set[str]) -> None:
        super().__init__()
        self.layouts = solution.layouts
        self.given = solution.given
        self.dots = solution.dots
        self.threads = solution.threads
        self.taken = set(taken)
        self.yield_wants: list[tuple[Layout | None, ...]] = []
        self.scopes: list[dict[tuple[str, Layout], Var]] = []  # relayouts visible here

    def new_var(self, var: Var) -> Var:
        if not _is_tile(var):
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
        if want is None or not _is_tile(value) or value.type.layout == want:
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
        return value.type.layout if _is_tile(value) else None

    # -- one method per rule of the contract ---------------------------------------------

    def visit_Compute(self, instr: nodes.Compute):
        new = self.generic(instr)
        return self.with_operands(instr, new, {"args": self.layout_of(new.result)})

    def visit_Cast(self, instr: nodes.Cast):
        new = self.generic(instr)
        return self.with_operands(instr, new, {"value": self.layout_of(new.result)})

    def visit_Dot(self, instr: nodes.Dot):
        new = self.generic(instr)
        a, b = self.dots[instr.result.name]
        return self.with_operands(instr, new, {"a": a, "b": b, "acc": new.result.type.layout})

    def visit_Scan(self, instr: nodes.Scan):
        new = self.generic(instr)
        return self.with_operands(instr, new, {"value": new.result.type.layout})

    def visit_Transpose(self, instr: nodes.Transpose):
        new = self.generic(instr)
        want = new.result.type.layout.permute(_inverse(instr.perm))
        return self.with_operands(instr, new, {"value": want})

    def visit_Broadcast(self, instr: nodes.Broadcast):
        new = self.generic(instr)
        if not _is_tile(new.value):
            return new
        dims = _broadcast_dims(new.value.type, new.result.type)
        return self.with_operands(instr, new, {"value": new.result.type.layout.reduce(dims)})

    def visit_View(self, instr: nodes.View):
        new = self.generic(instr)
        if instr.value.name in self.given and instr.result.name in self.given:
            return new  # both layouts given: the input means the per-thread view
        result = new.result.type
        want = view_layout(result.layout, result.dtype, new.value.type.dtype)
        if want is None:
            raise _error(
                instr,
                instr.result,
                f"the layout {result.layout} is no view of a {new.value.type.dtype} tile: its "
                "innermost locals must be a run of the last dim holding whole elements of both "
                "dtypes",
            )
        return self.with_operands(instr, new, {"value": want})

    def visit_Store(self, instr: nodes.Store):
        new = self.generic(instr)
        value = new.value.type
        if holds_whole_bytes(value.layout, value.dtype):
            return new
        # Packed elements: threads writing parts of one byte would race; move to whole bytes.
        blocked = blocked_layout(value.shape, value.dtype, self.threads)
        want = blocked if holds_whole_bytes(blocked, value.dtype) else None
        return self.with_operands(instr, new, {"value": want})

    def visit_Reduce(self, instr: nodes.Reduce):
        new = self.generic(instr)
        if not _is_tile(new.result):
            return new
        natural = new.value.type.layout.reduce(instr.axis, keepdims=False)
        if natural == new.result.type.layout:
            return new
        # The result's layout was given: reduce in the natural one, then move the data.
        temp = Var(self.fresh(instr.result.name), replace(new.result.type, layout=natural))
        return [replace(new, result=temp), Relayout(new.result, temp, loc=instr.loc)]

    def visit_For(self, instr: nodes.For):
        wants = tuple(self.layouts.get(v.name) if _is_tile(v) else None for v in instr.carried)
        self.yield_wants.append(wants)
        try:
            new = self.generic(instr)
        finally:
            self.yield_wants.pop()
        before: list[Instr] = []
        inits = tuple(
            self.convert(v, w, before, instr) for v, w in zip(new.inits, wants, strict=True)
        )
        return [*before, replace(new, inits=inits)]

    def visit_If(self, instr: nodes.If):
        wants = tuple(self.layouts.get(v.name) if _is_tile(v) else None for v in instr.results)
        self.yield_wants.append(wants)
        try:
            return self.generic(instr)
        finally:
            self.yield_wants.pop()

    def visit_Yield(self, instr: nodes.Yield):
        new = self.generic(instr)
        before: list[Instr] = []
        wants = self.yield_wants[-1]
        values = tuple(
            self.convert(v, w, before, instr) for v, w in zip(new.values, wants, strict=True)
        )
        return [*before, replace(new, values=values)]
