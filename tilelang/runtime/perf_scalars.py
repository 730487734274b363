"""Block-uniform scalars of the block IR evaluated at a launch, for the static
performance report.

This module owns one thing: the value of a block-uniform scalar (a loop bound, an `if`
condition) at a launch's sizes and scalar parameters, with the block indices and loop
variables bound as the caller says (`Scalars.at`; a block index not bound is 0), by
the thread IR's integer rules (`tilelang.ir.ops.evaluate_int`). A scalar the kernel
reads at run time (`load_scalar`, `item` of a loaded tile, the old value an `arrive` or
an atomic returns) has no value at a launch: evaluating it raises `RunTimeValue`, unless
the caller bound it (`perf_guards` binds an `arrive`'s result). Which names a value is
computed from is `Scalars.depends`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.ops import evaluate_int, wrap
from tilelang.ir.types import ScalarType
from tilelang.ir.visit import walk
from tilelang.runtime.perf_loop import PerfError

__all__ = ["RunTimeValue", "Scalars", "dtype_of"]

#: Instructions whose scalar result is read from memory at run time.
_READ = ir.LoadScalar | ir.Item | ir.Arrive | ir.Atomic | ir.ScatterAtomic


class RunTimeValue(Exception):
    """A scalar the kernel reads from a tensor at run time (`load_scalar`, `item` of a
    loaded tile, an `arrive`'s or an atomic's old value): it has no value at a launch."""

    def __init__(self, name: str, tensor: str) -> None:
        super().__init__(name)
        self.name, self.tensor = name, tensor


class Scalars:
    """Block-uniform scalars of the block IR evaluated at a launch: sizes and scalar
    parameters from the launch, block indices and loop variables as bound (`at`), and
    integer arithmetic on them (`tilelang.ir.ops.evaluate_int`, the thread IR's rules).
    `defs` maps each value's name to the instruction defining it; `grid` is the
    kernel's `blocks` instruction (None without one); `looped` the names defined in a
    loop's body."""

    def __init__(self, fn: ir.Function, launch: Mapping[str, int | float]) -> None:
        self.launch: dict[str, int | float] = dict(launch)
        self.defs: dict[str, ir.Instr] = {}
        self.grid: ir.Blocks | None = None
        for instr in walk(fn):
            if isinstance(instr, ir.Blocks):
                self.grid = instr
            for var in instr.defs():
                self.defs[var.name] = instr
        #: each loop-carried value's name -> its loop (a value each iteration)
        self.carriers = {
            var.name: loop for loop in walk(fn) if isinstance(loop, ir.For) for var in loop.carried
        }
        #: the names defined inside a loop's body (a value each iteration)
        self.looped = {
            var.name
            for loop in walk(fn)
            if isinstance(loop, ir.For)
            for instr in walk(loop.body)
            for var in instr.defs()
        }
        self.at({})

    @property
    def block_names(self) -> dict[str, int]:
        """Each block index's name -> its grid dimension."""
        return {v.name: i for i, v in enumerate(self.grid.results)} if self.grid else {}

    def grid_sizes(self) -> list[int]:
        """The grid's size along each dimension at this launch (0 for a negative one)."""
        if self.grid is None:
            return []
        self.at({})
        return [max(int(self(v)), 0) for v in self.grid.sizes]

    def at(self, bound: Mapping[str, int]) -> None:
        """Evaluate from here on with the block indices, loop variables and run-time
        values in `bound` (the other block indices 0): values computed before are
        forgotten."""
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
        if isinstance(instr, _READ):
            tensor = instr.tensor.name if not isinstance(instr, ir.Item) else None
            raise RunTimeValue(value.name, tensor or _loaded_from(self.defs, instr.value))
        result = self._compute(instr) if instr is not None else None
        if result is None:
            raise PerfError(_why_unknown(value.name, instr, self.carriers.get(value.name)))
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
        dtype = dtype_of(instr.args[-1])
        if instr.op == "where":
            return args[1] if args[0] else args[2]
        if len(args) == 2 and dtype.is_int:
            return evaluate_int(instr.op, int(args[0]), int(args[1]), dtype)
        if len(args) == 1 and dtype.is_int and instr.op in ("neg", "abs"):
            return wrap(-args[0] if instr.op == "neg" else abs(args[0]), dtype)
        return None

    def depends(self, values: tuple[ir.Value, ...], names: set[str]) -> set[str]:
        """The names of `names` (block indices, loop variables, run-time values) that
        `values` are computed from."""
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
            if instr is not None and not isinstance(instr, _READ):
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


def _why_unknown(name: str, instr: ir.Instr | None, carrier: ir.For | None) -> str:
    """Why the scalar `name` (defined by `instr`, or carried by the loop `carrier`, or
    neither: a parameter) has no value at a launch, and what to do about it."""
    if carrier is not None:
        return (
            f"{carrier.loc}: {name!r} is carried by this loop (a new value every "
            "iteration), so a loop bound computed from it has no value at a launch; give "
            "the trip count per block as `iterations=`"
        )
    if instr is None:
        return f"{name!r} was not given: pass the scalar argument or size {name}=..."
    return (
        f"{instr.loc}: cannot evaluate {name!r} at this launch (a loop bound must be "
        "arithmetic on sizes and scalar parameters); give the trip count per block as "
        "`iterations=`"
    )


def dtype_of(value: ir.Value) -> DType:
    """The dtype of a scalar operand (a constant's own, or its var's type's)."""
    return value.dtype if isinstance(value, ir.Const) else value.type.dtype
