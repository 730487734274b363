"""What the block IR says about a kernel's main loop, for the static performance report.

This module owns reading the planned block IR (after the last pass) and the thread IR
for `tilelang.runtime.perf`: which loop is the main loop, how many times it runs at a
launch, which global tiles it loads per iteration, and how many iterations ahead each
load is issued. It computes nothing about hardware.

**The main loop** is the `for` whose body (its own instructions and those of `if`s in
it, not those of nested loops) loads the most bytes of global tiles (`load` and
`copy_async`) per iteration; the first such loop on a tie. A kernel with no loop that
loads global memory is modelled as one iteration of its whole body.

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

**Trip count**: the loop's bounds evaluated at the launch's sizes and scalars (block
indices taken as 0, the variables of enclosing loops at their start); a main loop
inside other loops runs the product of all their trip counts per block. A bound the
kernel reads from a tensor at run time (a sequence length, a block table) has no value
at a launch: the caller states the trip count instead (`iterations`), and a bound that
cannot be evaluated without it says so.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    "MainLoop",
    "PerfError",
    "TileLoad",
    "find_main_loop",
    "tensor_shapes",
    "thread_loop_counts",
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
class MainLoop:
    """The main loop (`loop`, None for a kernel without one), the loops around it
    (outermost first), its loads per iteration, how many loops load global memory, and
    which of them it is (`rank`, counting in program order, outer loops first)."""

    loop: ir.For | None
    enclosing: tuple[ir.For, ...]
    loads: tuple[TileLoad, ...]
    loops_with_loads: int
    rank: int = 0

    @property
    def where(self) -> str:
        """The main loop's source line, or "no loop"."""
        return "no loop" if self.loop is None else _loc(self.loop)


def _loc(instr: ir.Instr) -> str:
    loc = instr.loc
    return f"{loc.file.rsplit('/', 1)[-1]}:{loc.line}"


def _tile_bytes(shape: tuple[int, ...], dtype: DType) -> float:
    count = 1
    for size in shape:
        count *= size
    return count * dtype.bits / 8


def _direct(block: ir.Block) -> list[ir.Instr]:
    """The instructions of `block` and of the `if`s in it, not those of nested loops."""
    found: list[ir.Instr] = []
    for instr in block.instrs:
        found.append(instr)
        if isinstance(instr, ir.If):
            found.extend(_direct(instr.then_body))
            found.extend(_direct(instr.else_body))
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
    for instr in _direct(loop.body):
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
    candidates: list[tuple[ir.For, tuple[ir.For, ...], list[TileLoad]]] = []

    def visit(block: ir.Block, enclosing: tuple[ir.For, ...]) -> None:
        for index, instr in enumerate(block.instrs):
            if isinstance(instr, ir.For):
                loads = _loads_of(instr, list(block.instrs[:index]), roots)
                if loads:
                    candidates.append((instr, enclosing, loads))
                visit(instr.body, (*enclosing, instr))
            elif isinstance(instr, ir.If):
                visit(instr.then_body, enclosing)
                visit(instr.else_body, enclosing)

    visit(fn.body, ())
    if not candidates:
        return MainLoop(None, (), tuple(_loop_free_loads(fn.body)), 0)
    indices = range(len(candidates))
    streaming = [i for i in indices if any(x.tensor == per for x in candidates[i][2])]
    rank = max(
        streaming or indices,
        key=lambda i: sum(_tile_bytes(x.shape, x.dtype) for x in candidates[i][2]),
    )
    loop, enclosing, loads = candidates[rank]
    return MainLoop(loop, enclosing, tuple(loads), len(candidates), rank)


def _loop_free_loads(block: ir.Block) -> list[TileLoad]:
    """The global tiles the kernel loads outside every loop (one pass of a loop-free
    kernel)."""
    loads = []
    for instr in _direct(block):
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
    parameters from the launch, block indices 0, loop variables at their start, and
    integer arithmetic on them (`tilelang.ir.ops.evaluate_int`, the thread IR's rules)."""

    def __init__(self, fn: ir.Function, launch: Mapping[str, int | float]) -> None:
        self.values: dict[str, int | float] = dict(launch)
        self.defs: dict[str, ir.Instr] = {}
        for instr in walk(fn):
            if isinstance(instr, ir.Blocks):
                self.values.update({v.name: 0 for v in instr.results})
            for var in instr.defs():
                self.defs[var.name] = instr

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

    def bind_loop_start(self, loop: ir.For) -> None:
        self.values[loop.var.name] = self(loop.start)


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


def trip_count(
    fn: ir.Function,
    main: MainLoop,
    launch: Mapping[str, int | float],
    iterations: int | None = None,
) -> int:
    """Iterations of the main loop per block at this launch (the product of its own and
    its enclosing loops' trip counts; 1 without a main loop). `iterations`, when given,
    is that product as the caller knows it (bounds read from tensors at run time)."""
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
    scalars = _Scalars(fn, launch)
    total = 1
    for loop in (*main.enclosing, main.loop):
        try:
            bounds = [scalars(v) for v in (loop.start, loop.stop, loop.step)]
        except _RunTimeValue as err:
            raise PerfError(
                f"{_loc(loop)}: the main loop's bounds depend on %{err.name}, which "
                f"{fn.name} reads from tensor {err.tensor!r} at run time; give the trip "
                "count per block as `iterations=`"
            ) from None
        start, stop, step = (int(b) for b in bounds)
        if step == 0:
            raise PerfError(f"{_loc(loop)}: the loop step is 0 at this launch")
        total *= len(range(start, stop, step))
        scalars.bind_loop_start(loop)
    return total


# --------------------------------------------------------------------------- thread IR


def thread_loop_counts(fn: t.ThreadFunction) -> tuple[int, int]:
    """(mma, global loads and copies) per iteration of the thread IR's main loop: the
    `For` holding the most `Mma`/`Wgmma`, `GlobalLoad` and `CpAsync` statements directly (in
    its body and its `If`s, not in nested loops). The SASS of one iteration holds as
    many HMMA/IMMA/HGMMA and LDG/LDGSTS, unless ptxas unrolled the loop."""

    def counts(body: tuple[t.Stmt, ...]) -> tuple[int, int]:
        mma = memory = 0
        for stmt in body:
            if isinstance(stmt, tm.Mma | tm.Wgmma):
                mma += 1
            elif isinstance(stmt, t.GlobalLoad | t.CpAsync):
                memory += 1
            elif isinstance(stmt, t.If):
                for inner in stmt.bodies():
                    found = counts(inner)
                    mma, memory = mma + found[0], memory + found[1]
        return mma, memory

    loops = [s for s in t.walk_stmts(fn.body) if isinstance(s, t.For)]
    return max((counts(loop.body) for loop in loops), key=sum, default=(0, 0))
