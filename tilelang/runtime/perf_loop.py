"""What the block IR says about a kernel's main loop, for the static performance report.

This module owns reading the planned block IR (after the last pass) and the thread IR
for `tilelang.runtime.perf`: which loop is the main loop and which loops the report
adds up, how many times each runs at a launch, which global tiles it loads per
iteration, and how many iterations ahead each load is issued. It computes nothing
about hardware.

**The main loop** is the innermost `for` (one holding no other loop that loads) whose
body (its own instructions and those of `if`s in it, not those of nested loops) loads
the most bytes of global tiles (`load` and `copy_async`) per iteration; the first such
loop on a tie. A loop around it that loads too (the prologue of a pipelined inner loop,
a persistent kernel's tile loop) is not the main loop however much it loads: it runs
its body once per inner pass. A kernel with no loop that loads global memory is
modelled as one iteration of its whole body.

**Several loops.** Every loop that loads global memory is a `LoadingLoop` of
`MainLoop.loops`, in program order. The report adds up `MainLoop.modelled()`: each of
them but those under an `if` (its condition is a run-time value: the block IR cannot
say how many blocks take it, such as a split kernel's combine in the last block). The
main loop is always modelled. Where loading loops nest, each is modelled at its trip
count times those of the loops around it (`loop_trips`: an inner loop runs whole in
every iteration of an outer one), and an outer loop's own work per iteration is its
body without the loops in it (`perf_match`); `nest_of` says which outermost loop a
loop's nest hangs from (its loops read their tensors in one pass, interleaved, not one
after the other). `thread_loops` reads each thread-IR loop (named after the block-IR
loop it lowers) for `perf_match`.

**Dots.** `dot_flops` counts the tensor-core work the block IR asks for: 2·M·N·K of
every `dot` outside `if`s, at its tiles' shapes (padding included), times the trip
counts of the loops around it (8-bit operands at half weight, 4-bit at a quarter: the
tensor cores run them that much faster). It is the work a floor is of, whatever the
SASS matching found.

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

**Trip count** (`grid_trips`): the loop's bounds evaluated at the launch's sizes and
scalars, averaged over the grid: at every combination of the block indices the bounds
of the loop and the loops around it depend on, where those are at most `EXACT_BLOCKS`
(the exact mean), else at an even sample of `SAMPLE_BLOCKS` of them (the report notes
either where the count varies: a causal attention's key loop, a triangular sum). A
loop inside others runs per block the sum, over the outer loops' iterations, of its
trip count: an outer loop's trip count times the mean of the inner ones over its
iterations (every one up to `EXACT_OUTER`, else an even sample of `SAMPLE_OUTER`), or
times the inner count at its start where the inner bounds do not use its variable. A
bound the kernel reads from a tensor at run time (a sequence length, a block table)
has no value at a launch: the caller states the trip count instead (`iterations`),
and a bound that cannot be evaluated without it says so.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.ops import evaluate_int, wrap
from tilelang.ir.shape_expr import evaluate as evaluate_shape
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.ir.visit import walk

__all__ = [
    "LoadingLoop",
    "MainLoop",
    "PerfError",
    "ThreadLoop",
    "TileLoad",
    "direct_instrs",
    "dot_flops",
    "find_main_loop",
    "loop_trips",
    "tensor_shapes",
    "thread_loop_counts",
    "thread_loops",
    "trip_count",
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
class LoadingLoop:
    """A block-IR loop that loads global tiles: the loop, the loops around it (outermost
    first), its loads per iteration, and whether it runs under an `if` (`guarded`: the
    block IR cannot say how many blocks take it)."""

    loop: ir.For
    enclosing: tuple[ir.For, ...]
    loads: tuple[TileLoad, ...]
    guarded: bool = False

    @property
    def where(self) -> str:
        return _loc(self.loop)


@dataclass(frozen=True)
class MainLoop:
    """The main loop (`loop`, None for a kernel without one), the loops around it
    (outermost first), its loads per iteration, how many loops load global memory, and
    which of them it is (`rank`, counting in program order, outer loops first);
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
        return "no loop" if self.loop is None else _loc(self.loop)

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
        """The indices (into `loops`) of the loops the report adds up, and why each other
        loop that loads is left out (module docstring, "Several loops")."""
        if self.loop is None:
            return (), []
        kept = tuple(i for i, x in enumerate(self.loops) if i == self.rank or not x.guarded)
        why = [
            f"the loop at {x.where} runs under an if (the block IR cannot say how many "
            "blocks take it): left out of the sum"
            for i, x in enumerate(self.loops)
            if i not in kept
        ]
        if self.nests:
            why.append(
                "loops that load global memory nest in one another: each counts its trip "
                "count times those of the loops around it, an outer loop its own work "
                "without the loops inside it"
            )
        return kept, why


def _loc(instr: ir.Instr) -> str:
    loc = instr.loc
    return f"{loc.file.rsplit('/', 1)[-1]}:{loc.line}"


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
        loc=_loc(instr),
        unpipelined=why if isinstance(why, str) else None,
    )


def find_main_loop(fn: ir.Function, per: str | None = None) -> MainLoop:
    """The main loop of `fn` (planned block IR) and its loads (module docstring); with
    `per`, among the loops that load that tensor where some do (a split-K kernel's
    addition of the slices loads more bytes an iteration than its k loop)."""
    roots = _shared_roots(fn)
    candidates: list[LoadingLoop] = []

    def visit(block: ir.Block, enclosing: tuple[ir.For, ...], guarded: bool) -> None:
        for index, instr in enumerate(block.instrs):
            if isinstance(instr, ir.For):
                loads = _loads_of(instr, list(block.instrs[:index]), roots)
                if loads:
                    candidates.append(LoadingLoop(instr, enclosing, tuple(loads), guarded))
                visit(instr.body, (*enclosing, instr), guarded)
            elif isinstance(instr, ir.If):
                visit(instr.then_body, enclosing, True)
                visit(instr.else_body, enclosing, True)

    visit(fn.body, (), False)
    if not candidates:
        return MainLoop(None, (), tuple(_loop_free_loads(fn.body)), 0)
    indices = range(len(candidates))
    streaming = [i for i in indices if any(x.tensor == per for x in candidates[i].loads)]
    around = {id(e) for x in candidates for e in x.enclosing}
    pool = streaming or list(indices)
    rank = max(
        [i for i in pool if id(candidates[i].loop) not in around] or pool,
        key=lambda i: sum(_tile_bytes(x.shape, x.dtype) for x in candidates[i].loads),
    )
    main = candidates[rank]
    return MainLoop(main.loop, main.enclosing, main.loads, len(candidates), rank, tuple(candidates))


def _loop_free_loads(block: ir.Block) -> list[TileLoad]:
    """The global tiles the kernel loads outside every loop (one pass of a loop-free
    kernel)."""
    loads = []
    for instr in direct_instrs(block):
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


class _RunTimeValue(Exception):
    """A scalar the kernel reads from a tensor (`load_scalar`, or `item` of a loaded
    tile): it has no value at a launch."""

    def __init__(self, name: str, tensor: str) -> None:
        super().__init__(name)
        self.name, self.tensor = name, tensor


class _Scalars:
    """Block-uniform scalars of the block IR evaluated at a launch: sizes and scalar
    parameters from the launch, block indices and loop variables as bound (`at`; 0 and
    their start where not), and integer arithmetic on them
    (`tilelang.ir.ops.evaluate_int`, the thread IR's rules)."""

    def __init__(self, fn: ir.Function, launch: Mapping[str, int | float]) -> None:
        self.launch: dict[str, int | float] = dict(launch)
        self.defs: dict[str, ir.Instr] = {}
        self.grid: ir.Blocks | None = None
        for instr in walk(fn):
            if isinstance(instr, ir.Blocks):
                self.grid = instr
            for var in instr.defs():
                self.defs[var.name] = instr
        self.at({})

    def at(self, bound: Mapping[str, int]) -> None:
        """Evaluate from here on with the block indices and loop variables in `bound`
        (the other block indices 0): values computed before are forgotten."""
        self.values: dict[str, int | float] = dict(self.launch)
        if self.grid is not None:
            self.values.update({v.name: 0 for v in self.grid.results})
        self.values.update(bound)

    def __call__(self, value: ir.Value) -> int | float:
        if isinstance(value, ir.Const):
            return value.value
        if value.name in self.values:
            return self.values[value.name]
        instr = self.defs.get(value.name)
        if isinstance(instr, ir.LoadScalar):
            raise _RunTimeValue(value.name, instr.tensor.name)
        if isinstance(instr, ir.Item):
            raise _RunTimeValue(value.name, _loaded_from(self.defs, instr.value))
        result = self._compute(instr) if instr is not None else None
        if result is None:
            raise PerfError(
                f"cannot evaluate %{value.name} at this launch (a loop bound must be "
                "arithmetic on sizes and scalar parameters; is one of them missing?)"
            )
        self.values[value.name] = result
        return result

    def _compute(self, instr: ir.Instr) -> int | float | None:
        if isinstance(instr, ir.Cast) and isinstance(instr.result.type, ScalarType):
            value = self(instr.value)
            dtype = instr.result.type.dtype
            return wrap(int(value), dtype) if dtype.is_int else float(value)
        if not isinstance(instr, ir.Compute) or not isinstance(instr.result.type, ScalarType):
            return None
        args = [self(a) for a in instr.args]
        dtype = _dtype_of(instr.args[-1])
        if instr.op == "where":
            return args[1] if args[0] else args[2]
        if len(args) == 2 and dtype.is_int:
            return evaluate_int(instr.op, int(args[0]), int(args[1]), dtype)
        if len(args) == 1 and dtype.is_int and instr.op in ("neg", "abs"):
            return wrap(-args[0] if instr.op == "neg" else abs(args[0]), dtype)
        return None

    def depends(self, values: tuple[ir.Value, ...], names: set[str]) -> set[str]:
        """The names of `names` (block indices, loop variables) that `values` are
        computed from."""
        found: set[str] = set()
        pending = [v for v in values if isinstance(v, ir.Var)]
        seen: set[str] = set()
        while pending:
            var = pending.pop()
            if var.name in seen:
                continue
            seen.add(var.name)
            if var.name in names:
                found.add(var.name)
                continue
            instr = self.defs.get(var.name)
            if instr is not None and not isinstance(instr, ir.LoadScalar | ir.Item):
                pending.extend(v for v in instr.uses() if isinstance(v, ir.Var))
        return found


def _loaded_from(defs: Mapping[str, ir.Instr], tile: ir.Value) -> str:
    """The tensor a tile's values come from, following its operands back to a load
    ("a tensor" when the chain is not a single load)."""
    pending, seen = [tile], set()
    while pending:
        value = pending.pop()
        if not isinstance(value, ir.Var) or value.name in seen:
            continue
        seen.add(value.name)
        instr = defs.get(value.name)
        if isinstance(instr, ir.Load | ir.LoadScalar | ir.Gather):
            return instr.tensor.name
        if instr is not None:
            pending.extend(v for v in instr.uses() if isinstance(v, ir.Var))
    return "a tensor"


def _dtype_of(value: ir.Value) -> DType:
    return value.dtype if isinstance(value, ir.Const) else value.type.dtype


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
    grid: the mean, the fewest and most of one block, the blocks it was evaluated at
    (`evaluated`) of `blocks` (the combinations of the block indices the bounds depend
    on; equal: the exact mean), and whether an outer loop was sampled (`sampled`)."""

    mean: float
    low: int
    high: int
    evaluated: int = 1
    blocks: int = 1
    sampled: bool = False

    @property
    def value(self) -> int | float:
        """The mean, as an int where it is one."""
        return int(self.mean) if self.mean == int(self.mean) else self.mean

    def note(self, where: str) -> str | None:
        """What the report says of a trip count that depends on the block index."""
        if self.low == self.high and not self.sampled:
            return None
        over = (
            f"over all {self.blocks} values of the block indices they depend on"
            if self.evaluated == self.blocks
            else f"over an even sample of {self.evaluated} of the {self.blocks} values of "
            "the block indices they depend on"
        )
        outer = "; the loops around it averaged over a sample of their iterations"
        return (
            f"the loop at {where}: its bounds depend on the block index: {self.low} to "
            f"{self.high} iterations a block, {self.mean:.6g} on average {over}"
            f"{outer if self.sampled else ''}"
        )


def trip_count(
    fn: ir.Function,
    main: MainLoop,
    launch: Mapping[str, int | float],
    iterations: int | None = None,
    notes: list[str] | None = None,
) -> int | float:
    """Iterations of the main loop per block at this launch (the product of its own and
    its enclosing loops' trip counts, averaged over the grid: `grid_trips`; 1 without a
    main loop). `iterations`, when given, is that number as the caller knows it (bounds
    read from tensors at run time). `notes` receives `Trips.note`."""
    if iterations is not None:
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise PerfError(
                f"iterations: expected a positive int (the main loop's trip count per "
                f"block), got {iterations!r}"
            )
        if main.loop is None:
            raise PerfError(f"iterations: {fn.name} has no main loop to give a trip count to")
        return iterations
    if main.loop is None:
        return 1
    return loop_trips(fn, main, launch, notes)


def loop_trips(
    fn: ir.Function,
    nest: MainLoop | LoadingLoop,
    launch: Mapping[str, int | float],
    notes: list[str] | None = None,
) -> int | float:
    """Iterations per block of a loop and the loops around it at this launch, averaged
    over the grid (`grid_trips`); PerfError when a bound is read at run time."""
    assert nest.loop is not None
    found = grid_trips(fn, (*nest.enclosing, nest.loop), launch)
    note = found.note(_loc(nest.loop))
    if notes is not None and note is not None:
        notes.append(note)
    return found.value


def grid_trips(
    fn: ir.Function,
    chain: tuple[ir.For, ...],
    launch: Mapping[str, int | float],
    scalars: _Scalars | None = None,
    given: tuple[int, int] | None = None,
) -> Trips:
    """How many times the body of `chain[-1]` runs per block, `chain` its loops
    outermost first, over the grid (module docstring, "Trip count"); `given`:
    (index into `chain`, trips) for a loop whose trip count the caller states (its
    variable taken at its start)."""
    scalars = scalars or _Scalars(fn, launch)
    grid = scalars.grid
    indices = {v.name: i for i, v in enumerate(grid.results)} if grid is not None else {}
    used = scalars.depends(tuple(v for x in chain for v in (x.start, x.stop, x.step)), set(indices))
    dims: list[tuple[str, int]] = []
    if used:
        scalars.at({})
        sizes = [max(int(scalars(v)), 0) for v in grid.sizes]
        dims = [(name, sizes[indices[name]]) for name in sorted(used, key=indices.get)]
    total = math.prod(size for _, size in dims)
    if total <= EXACT_BLOCKS:
        points = list(itertools.product(*(range(size) for _, size in dims)))
    else:  # midpoints of even strides over the blocks, row-major
        points = []
        for i in range(SAMPLE_BLOCKS):
            flat, point = (2 * i + 1) * total // (2 * SAMPLE_BLOCKS), []
            for _, size in reversed(dims):
                flat, index = divmod(flat, size)
                point.append(index)
            points.append(tuple(reversed(point)))
    points = points or [tuple(0 for _ in dims)]
    walk_ = _NestCount(fn, chain, scalars, given)
    counts = [walk_.count(0, {n: i for (n, _), i in zip(dims, p, strict=True)}) for p in points]
    return Trips(
        sum(counts) / len(counts),
        math.floor(min(counts)),
        math.ceil(max(counts)),
        len(points),
        max(total, 1),
        walk_.sampled,
    )


class _NestCount:
    """The iterations of a loop nest's innermost body in one block: an outer loop's
    trip count times its inner loops' average over its iterations (each, up to
    `EXACT_OUTER`, else an even sample), or at its start where they do not depend on
    its variable."""

    def __init__(
        self,
        fn: ir.Function,
        chain: tuple[ir.For, ...],
        scalars: _Scalars,
        given: tuple[int, int] | None,
    ) -> None:
        self.fn, self.chain, self.scalars, self.given = fn, chain, scalars, given
        self.sampled = False
        loops = {x.var.name for x in chain}
        self.inner_uses = [
            scalars.depends(
                tuple(v for x in chain[d + 1 :] for v in (x.start, x.stop, x.step)), loops
            )
            for d in range(len(chain))
        ]

    def count(self, depth: int, bound: dict[str, int]) -> float:
        loop = self.chain[depth]
        self.scalars.at(bound)
        if self.given is not None and depth <= self.given[0]:
            # the caller's count covers this loop and the loops around it
            trips = self.given[1] if depth == self.given[0] else 1
            if depth == len(self.chain) - 1:
                return trips
            with contextlib.suppress(_RunTimeValue, PerfError):  # else left unbound
                bound = {**bound, loop.var.name: int(self.scalars(loop.start))}
            return trips * self.count(depth + 1, bound)
        try:
            start, stop, step = (int(self.scalars(v)) for v in (loop.start, loop.stop, loop.step))
        except _RunTimeValue as err:
            raise PerfError(
                f"{_loc(loop)}: the main loop's bounds depend on %{err.name}, which "
                f"{self.fn.name} reads from tensor {err.tensor!r} at run time; give the trip "
                "count per block as `iterations=`"
            ) from None
        if step == 0:
            raise PerfError(f"{_loc(loop)}: the loop step is 0 at this launch")
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
    """Tensor-core flops one block's `dot`s ask for at this launch, averaged over the
    grid (module docstring, "Dots"): the main loop's body at `iterations` where the
    caller gives them; a loop whose bounds are read at run time otherwise counts
    nothing (a floor stays one)."""
    scalars = _Scalars(fn, launch)
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
            except (_RunTimeValue, PerfError):
                times[key] = 0.0
        return times[key]

    def visit(block: ir.Block, chain: tuple[ir.For, ...]) -> float:
        total = 0.0
        for instr in block.instrs:
            if isinstance(instr, ir.Dot):
                (m, k), n = instr.a.type.shape, instr.b.type.shape[-1]
                bits = min(instr.a.type.dtype.bits, instr.b.type.dtype.bits, 16)
                total += 2.0 * m * n * k * trips(chain) * bits / 16
            elif isinstance(instr, ir.For):
                total += visit(instr.body, (*chain, instr))
        return total

    return visit(fn.body, ())


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
