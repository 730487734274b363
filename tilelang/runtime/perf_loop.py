"""What the block IR says about a kernel's loops, for the static performance report.

This module owns reading the planned block IR (after the last pass) and the thread IR
for `tilelang.runtime.perf`: which loop is the main loop and which loops the report
adds up, which `if`s each lies under, which global tiles it loads per iteration, and
how many iterations ahead each load is issued. It computes nothing about hardware, and
nothing about a launch: `perf_trips` counts the loops' iterations.

**The main loop** is the innermost `for` (one holding no other loop that loads) whose
body (its own instructions and those of `if`s in it, not those of nested loops) loads
the most bytes of global tiles (`load` and `copy_async`) per iteration, among the loops
under no `if` (every block runs them); the first such loop on a tie. A loop around it
that loads too (the prologue of a pipelined inner loop, a persistent kernel's tile
loop) is not the main loop however much it loads: it runs its body once per inner
pass. Where every loop that loads lies under an `if`, the main loop is among them,
unless the kernel loads tiles outside every loop and `if` (the work every block does,
such as a streaming kernel whose first or last block also sums something in a loop):
then there is none, and the report's headline is that work, once per block. A kernel
with no loop that loads global memory is modelled as one iteration of its whole body.

**Several loops.** Every loop that loads global memory is a `LoadingLoop` of
`MainLoop.loops`, in program order, with the `if`s around it (`Guard`s, which the
report decides per block: `perf_guards`). The report adds them all up
(`MainLoop.modelled()`), each in the blocks that take its `if`s. Where loading loops
nest, each is modelled at its trip count times those of the loops around it (an inner
loop runs whole in every iteration of an outer one), and an outer loop's own work per
iteration is its body without the loops in it (`perf_match`); `nest_of` says which
outermost loop a loop's nest hangs from (its loops read their tensors in one pass,
interleaved, not one after the other). `thread_loops` reads each thread-IR loop (named
after the block-IR loop it lowers) for `perf_match`.

**Iterations ahead** of a load in the main loop (the pipeline depth: how many of its
tiles are in flight at once while the loop waits on memory):

- a `copy_async` issued in iteration i fills the buffer iteration i + a reads, where a
  is the number of copies of the same tensor into the same shared allocation issued
  before the loop (its prologue): the software_pipeline pass issues S - 1 of them for
  `stages=S`, so a = S - 1 tiles are in flight, matching its `async_wait S-2` (S - 2
  groups pending, plus the one the iteration issues);
- a `load` is consumed in the iteration that issues it (a = 0), unless its value is
  carried to the next iteration: then a counts the loads of the same tensor before the
  loop whose results enter the loop as carried values (register prefetch);
- the depth is max(1, a): a load the iteration waits on is in flight while it waits.

Where the pipeline pass records what it did (an `ahead=a` attribute on the load or
copy it moved), that number is used; the reading above is for IR without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.shape_expr import evaluate as evaluate_shape
from tilelang.ir.types import SharedType, TensorType, TileType
from tilelang.ir.visit import walk

__all__ = [
    "Guard",
    "LoadingLoop",
    "MainLoop",
    "PerfError",
    "ThreadLoop",
    "TileLoad",
    "direct_instrs",
    "find_main_loop",
    "loc",
    "tensor_shapes",
    "thread_loop_counts",
    "thread_loops",
]


class PerfError(ValueError):
    """A performance report cannot be made for this kernel or launch; the message says
    why."""


@dataclass(frozen=True)
class TileLoad:
    """One global tile the main loop loads per iteration: `kind` is "load",
    "copy_async", "gather" or "gather_async"; `ahead` is how many iterations ahead it
    is issued (module docstring)."""

    tensor: str
    kind: str
    shape: tuple[int, ...]
    dtype: DType
    ahead: int
    loc: str
    unpipelined: str | None = None  # why the pipeline pass left it alone, if it says

    @property
    def depth(self) -> int:
        """Tiles of this load in flight at once: max(1, ahead)."""
        return max(1, self.ahead)


@dataclass(frozen=True)
class Guard:
    """An `if` a loop lies under: its condition, whether the loop is in its `then`
    branch, how many loops lie around the `if` (`depth`), and its source line."""

    cond: ir.Value
    then: bool
    depth: int
    where: str


@dataclass(frozen=True)
class LoadingLoop:
    """A block-IR loop that loads global tiles: the loop, the loops around it (outermost
    first), its loads per iteration, and the `if`s it lies under (outermost first)."""

    loop: ir.For
    enclosing: tuple[ir.For, ...]
    loads: tuple[TileLoad, ...]
    guards: tuple[Guard, ...] = ()

    @property
    def where(self) -> str:
        return loc(self.loop)

    @property
    def guarded(self) -> bool:
        """Whether it lies under an `if` (not every block need run it)."""
        return bool(self.guards)


@dataclass(frozen=True)
class MainLoop:
    """The main loop (`loop`, None for a kernel without one), the loops around it
    (outermost first), its loads per iteration (without a main loop: the tiles loaded
    outside every loop), how many loops load global memory, and which of them it is
    (`rank`, counting in program order, outer loops first; -1 without one);
    `loops`: every loop that loads, in that order (`loops[rank]` is the main loop)."""

    loop: ir.For | None
    enclosing: tuple[ir.For, ...]
    loads: tuple[TileLoad, ...]
    loops_with_loads: int
    rank: int = 0
    loops: tuple[LoadingLoop, ...] = ()

    @property
    def where(self) -> str:
        """The main loop's source line, or "no loop"."""
        return "no loop" if self.loop is None else loc(self.loop)

    @property
    def nests(self) -> bool:
        """Whether a loop that loads lies inside another that loads."""
        ids = {id(x.loop) for x in self.loops}
        return any(id(e) in ids for x in self.loops for e in x.enclosing)

    def inner(self, index: int) -> tuple[int, ...]:
        """The loops that load inside `loops[index]` (indices, at any depth)."""
        outer = self.loops[index].loop
        return tuple(i for i, x in enumerate(self.loops) if any(e is outer for e in x.enclosing))

    def nest_of(self, index: int) -> int:
        """The outermost loop that loads around `loops[index]` (itself if none does)."""
        ids = {id(e) for e in self.loops[index].enclosing}
        return next((i for i, x in enumerate(self.loops) if id(x.loop) in ids), index)

    def modelled(self) -> tuple[tuple[int, ...], list[str]]:
        """The indices (into `loops`) of the loops the report adds up (all of them, each
        in the blocks that take its `if`s), and what the report says of them (module
        docstring, "Several loops")."""
        kept = tuple(range(len(self.loops)))
        why = []
        if self.nests:
            why.append(
                "loops that load global memory nest in one another: each counts its trip "
                "count times those of the loops around it, an outer loop its own work "
                "without the loops inside it"
            )
        return kept, why


def loc(instr: ir.Instr) -> str:
    """An instruction's source line, as the report writes it: "file.py:12"."""
    at = instr.loc
    return f"{at.file.rsplit('/', 1)[-1]}:{at.line}"


def _tile_bytes(shape: tuple[int, ...], dtype: DType) -> float:
    count = 1
    for size in shape:
        count *= size
    return count * dtype.bits / 8


def direct_instrs(block: ir.Block) -> list[ir.Instr]:
    """The instructions of `block` and of the `if`s in it, not those of nested loops."""
    found: list[ir.Instr] = []
    for instr in block.instrs:
        found.append(instr)
        if isinstance(instr, ir.If):
            found.extend(direct_instrs(instr.then_body))
            found.extend(direct_instrs(instr.else_body))
    return found


def _shared_roots(fn: ir.Function) -> dict[str, str]:
    """Each shared slice's allocation: var name -> the name of its `shared_alloc`."""
    parents = {
        i.result.name: i.shared.name
        for i in walk(fn)
        if isinstance(i, ir.SharedSlice | ir.SharedTranspose)
    }
    roots = {}
    for name in parents:
        root = name
        while root in parents:
            root = parents[root]
        roots[name] = root
    return roots


def _loads_of(loop: ir.For, prologue: list[ir.Instr], roots: dict[str, str]) -> list[TileLoad]:
    def root(var: ir.Var) -> str:
        return roots.get(var.name, var.name)

    carried_in = {v.name for v in loop.inits if isinstance(v, ir.Var)}
    loads = []
    for instr in direct_instrs(loop.body):
        if isinstance(instr, ir.Load):
            ahead = sum(
                isinstance(p, ir.Load) and p.tensor == instr.tensor and p.result.name in carried_in
                for p in prologue
            )
            tile = instr.result.type
            loads.append(_tile_load(instr, "load", tile, ahead))
        elif isinstance(instr, ir.Gather):  # one software_pipeline left in place
            loads.append(_tile_load(instr, "gather", instr.result.type, 0))
        elif isinstance(instr, ir.GatherAsync):  # a gather's copy: its `ahead` says
            loads.append(_tile_load(instr, "gather_async", instr.shared.type, 0))
        elif isinstance(instr, ir.CopyAsync):
            ahead = sum(
                isinstance(p, ir.CopyAsync)
                and p.tensor == instr.tensor
                and root(p.shared) == root(instr.shared)
                for p in prologue
            )
            loads.append(_tile_load(instr, "copy_async", instr.shared.type, ahead))
    return loads


def _tile_load(instr: ir.Instr, kind: str, tile: TileType | SharedType, ahead: int) -> TileLoad:
    recorded = instr.attr("ahead")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        ahead = recorded  # what the pipeline pass says it did wins over the reading
    why = instr.attr("unpipelined")
    return TileLoad(
        tensor=instr.tensor.name,
        kind=kind,
        shape=tuple(tile.shape),
        dtype=tile.dtype,
        ahead=ahead,
        loc=loc(instr),
        unpipelined=why if isinstance(why, str) else None,
    )


def find_main_loop(fn: ir.Function, per: str | None = None) -> MainLoop:
    """The main loop of `fn` (planned block IR) and its loads (module docstring); with
    `per`, among the loops that load that tensor where some do (a split-K kernel's
    addition of the slices loads more bytes an iteration than its k loop)."""
    roots = _shared_roots(fn)
    candidates: list[LoadingLoop] = []

    def visit(block: ir.Block, enclosing: tuple[ir.For, ...], guards: tuple[Guard, ...]) -> None:
        for index, instr in enumerate(block.instrs):
            if isinstance(instr, ir.For):
                loads = _loads_of(instr, list(block.instrs[:index]), roots)
                if loads:
                    candidates.append(LoadingLoop(instr, enclosing, tuple(loads), guards))
                visit(instr.body, (*enclosing, instr), guards)
            elif isinstance(instr, ir.If):
                for then, body in ((True, instr.then_body), (False, instr.else_body)):
                    guard = Guard(instr.cond, then, len(enclosing), loc(instr))
                    visit(body, enclosing, (*guards, guard))

    visit(fn.body, (), ())
    outside = _loop_free_loads(fn.body, guarded=False)
    if not candidates:
        return MainLoop(None, (), tuple(_loop_free_loads(fn.body)), 0)
    indices = range(len(candidates))
    streaming = [i for i in indices if any(x.tensor == per for x in candidates[i].loads)]
    around = {id(e) for x in candidates for e in x.enclosing}
    pool = streaming or list(indices)
    everywhere = [i for i in pool if not candidates[i].guarded]
    if not everywhere and outside and (per is None or any(x.tensor == per for x in outside)):
        # every loop runs in some blocks only: the work all blocks do heads the report
        return MainLoop(None, (), tuple(outside), len(candidates), -1, tuple(candidates))
    pool = everywhere or pool
    rank = max(
        [i for i in pool if id(candidates[i].loop) not in around] or pool,
        key=lambda i: sum(_tile_bytes(x.shape, x.dtype) for x in candidates[i].loads),
    )
    main = candidates[rank]
    return MainLoop(main.loop, main.enclosing, main.loads, len(candidates), rank, tuple(candidates))


def _loop_free_loads(block: ir.Block, guarded: bool = True) -> list[TileLoad]:
    """The global tiles the kernel loads outside every loop (one pass of a loop-free
    kernel); without `guarded`, only those outside every `if` too."""
    loads = []
    for instr in direct_instrs(block) if guarded else block.instrs:
        if isinstance(instr, ir.Load):
            loads.append(_tile_load(instr, "load", instr.result.type, 0))
        elif isinstance(instr, ir.CopyAsync):
            loads.append(_tile_load(instr, "copy_async", instr.shared.type, 0))
    return loads


# --------------------------------------------------------------------------- launch values


def tensor_shapes(fn: ir.Function, sizes: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor parameter at these sizes."""
    shapes = {}
    for param in fn.params:
        if isinstance(param.type, TensorType):
            shapes[param.name] = tuple(evaluate_shape(d, sizes) for d in param.type.shape)
    return shapes


# --------------------------------------------------------------------------- thread IR


#: Thread-IR operators ptxas computes with the special-function unit (MUFU): the
#: transcendentals and roots (float and integer divisions by a value too: `_special`).
_SPECIAL = frozenset(
    [
        "exp",
        "exp2",
        "fast_exp2",
        "log",
        "log1p",
        "log2",
        "sin",
        "cos",
        "tanh",
        "sqrt",
        "rsqrt",
        "sigmoid",
        "softplus",
    ]
)


@dataclass(frozen=True)
class ThreadLoop:
    """What one iteration of a thread-IR loop holds directly (its body and its `If`s,
    not nested loops): tensor-core statements (`Mma`, `Wgmma`), global loads and copies
    (`GlobalLoad`, `CpAsync`), and whether it computes something ptxas gives the
    special-function unit (`_SPECIAL`, a float division, an integer division by a
    value: MUFU in SASS)."""

    mma: int
    memory: int
    special: bool


def _special(expr: t.Expr) -> bool:
    for sub in t.walk_expr(expr):
        if isinstance(sub, t.Unary) and sub.op in _SPECIAL:
            return True
        divides = isinstance(sub, t.Binary) and sub.op in ("div", "rem")
        if divides and (sub.dtype.is_float or not isinstance(sub.b, t.Imm)):
            return True
    return False


def _thread_loop(body: tuple[t.Stmt, ...]) -> ThreadLoop:
    mma = memory = 0
    special = False
    for stmt in body:
        if isinstance(stmt, tm.Mma | tm.Wgmma):
            mma += 1
        elif isinstance(stmt, t.GlobalLoad | t.CpAsync):
            memory += 1
        special = special or any(_special(e) for e in t.stmt_exprs(stmt))
        if isinstance(stmt, t.If):
            for inner in stmt.bodies():
                found = _thread_loop(inner)
                mma, memory = mma + found.mma, memory + found.memory
                special = special or found.special
    return ThreadLoop(mma, memory, special)


def thread_loops(fn: t.ThreadFunction) -> dict[str, ThreadLoop]:
    """Each thread-IR loop by the name of its variable, which the lowering takes from the
    block-IR loop it lowers (names of loops the lowering makes itself may repeat: those
    are left out)."""
    found: dict[str, ThreadLoop | None] = {}
    for stmt in t.walk_stmts(fn.body):
        if isinstance(stmt, t.For):
            name = stmt.var.name
            found[name] = None if name in found else _thread_loop(stmt.body)
    return {name: loop for name, loop in found.items() if loop is not None}


def thread_loop_counts(fn: t.ThreadFunction) -> tuple[int, int]:
    """(mma, global loads and copies) per iteration of the thread IR's main loop: the
    `For` holding the most `Mma`/`Wgmma`, `GlobalLoad` and `CpAsync` statements directly (in
    its body and its `If`s, not in nested loops). The SASS of one iteration holds as
    many HMMA/IMMA/HGMMA and LDG/LDGSTS, unless ptxas unrolled the loop."""
    loops = [_thread_loop(s.body) for s in t.walk_stmts(fn.body) if isinstance(s, t.For)]
    return max(((x.mma, x.memory) for x in loops), key=sum, default=(0, 0))
