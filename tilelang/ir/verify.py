"""The block-IR verifier: is a `Function` well formed?

This module owns the rules every pass may assume and every pass must keep:

- SSA and scope: every Var is defined once, before its uses, and used only where it
  is visible (a body sees what was defined before its instruction, the instruction's
  `body_params` and its own earlier definitions; body values leave only through
  `yield` and the instruction's results); a use carries the type of its definition;
- the function: `warps` >= 1, params are tensors or scalars, sizes are integer scalars,
  tensor shapes name only sizes and constexprs;
- `blocks` appears exactly once, at the top level, after nothing but scalar arithmetic;
- control flow is uniform: `for` bounds and `if` conditions are scalars, a `for` step is
  known before the launch (arithmetic on scalar parameters and sizes); each body ends
  in exactly one `yield` (and `yield` appears nowhere else), whose values have the
  types of the loop's carried values / the branch's results (an `associative_scan`'s
  combine body sees its arguments and the values before it; its `check` types it);
- per instruction, the operand kinds, dtypes and shapes its semantics need: each
  instruction class's `check` method (`tilelang.ir.instructions`, written with
  `tilelang.ir.checks.Checker`; `tilelang.ir.ops` for the elementwise operators).

`verify(fn)` raises `IRVerifyError` for the first problem found. The message starts
with the instruction's source location (`file:line:col: `), names the instruction and
says what was expected and what was found.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tilelang.ir import nodes
from tilelang.ir.checks import Checker, IRVerifyError, is_int_scalar
from tilelang.ir.nodes import Block, Const, Function, Instr, Loc, Value, Var
from tilelang.ir.shape_expr import Lit, symbols
from tilelang.ir.text import print_type, print_value
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type
from tilelang.ir.visit import body_params

__all__ = ["IRVerifyError", "verify"]


def verify(fn: Function) -> None:
    """Check `fn` against the rules of the module docstring; raise `IRVerifyError`."""
    _Verifier(fn).run()


class _Verifier:
    def __init__(self, fn: Function) -> None:
        self.fn = fn
        self.def_loc: dict[str, Loc] = {}  # every definition of the function, by name
        self.defined: dict[str, Loc] = {}  # definitions met so far
        self.blocks_seen = False
        self.tensor_params = tuple(v for v in fn.params if isinstance(v.type, TensorType))
        # Values known before a launch: scalar parameters, sizes, arithmetic on them.
        self.launch_constants = {
            v.name for v in (*fn.params, *fn.sizes) if isinstance(v.type, ScalarType)
        }
        for var, loc in _defs_with_locs(fn):
            self.def_loc.setdefault(var.name, loc)

    # -- reporting -----------------------------------------------------------------------

    def fail(self, instr: Instr, message: str) -> IRVerifyError:
        return Checker(instr, self.tensor_params).fail(message)

    def expect(self, ok: bool, instr: Instr, message: str) -> None:
        if not ok:
            raise self.fail(instr, message)

    # -- the function --------------------------------------------------------------------

    def run(self) -> None:
        fn = self.fn
        where = f"{fn.loc}: kernel {fn.name}"
        if isinstance(fn.warps, bool) or not isinstance(fn.warps, int) or not 1 <= fn.warps <= 32:
            raise IRVerifyError(
                f"{where}: expected warps from 1 to 32 (a block has at most 1024 threads), "
                f"found {fn.warps!r}"
            )
        scope: dict[str, Var] = {}
        for var in fn.params:
            if not isinstance(var.type, TensorType | ScalarType):
                raise IRVerifyError(
                    f"{where}: expected parameter {print_value(var)} to be a tensor or a "
                    f"scalar, found {print_type(var.type)}"
                )
            self.define_param(var, scope, where)
        for var in fn.sizes:
            if not is_int_scalar(var):
                raise IRVerifyError(
                    f"{where}: expected size {print_value(var)} to be an integer scalar, "
                    f"found {print_type(var.type)}"
                )
            self.define_param(var, scope, where)
        self.check_tensor_symbols(where)
        self.block(fn.body, scope, top=True)
        if not self.blocks_seen:
            raise IRVerifyError(
                f"{where}: expected one blocks instruction at the top level, found none"
            )

    def define_param(self, var: Var, scope: dict[str, Var], where: str) -> None:
        if var.name in self.defined:
            raise IRVerifyError(f"{where}: {print_value(var)} is declared twice")
        problem = type_problem(var.type)
        if problem:
            raise IRVerifyError(f"{where}: {print_value(var)}: {problem}")
        self.defined[var.name] = self.fn.loc
        scope[var.name] = var

    def check_tensor_symbols(self, where: str) -> None:
        known = {v.name for v in self.fn.sizes} | {name for name, _ in self.fn.constexprs}
        for var in self.tensor_params:
            for dim in var.type.shape:
                for name in symbols(dim):
                    if name not in known:
                        raise IRVerifyError(
                            f"{where}: the shape of {print_value(var)} uses {name!r}, "
                            "expected a size or a constexpr of the kernel"
                        )

    # -- blocks, scope and SSA -----------------------------------------------------------

    def block(self, block: Block, scope: dict[str, Var], top: bool = False) -> None:
        last = len(block.instrs) - 1
        for index, instr in enumerate(block.instrs):
            if isinstance(instr, nodes.Yield) and (top or index != last):
                where = "at the top level" if top else "before the end of a body"
                raise self.fail(
                    instr,
                    f"expected yield only as the last instruction of a body, found it {where}",
                )
            if top:
                self.check_blocks_order(instr)
            elif isinstance(instr, nodes.Blocks):
                raise self.fail(
                    instr, "expected blocks at the top level of the kernel, found it inside a body"
                )
            self.instr(instr, scope)

    def check_blocks_order(self, instr: Instr) -> None:
        if isinstance(instr, nodes.Blocks):
            self.expect(
                not self.blocks_seen, instr, "expected one blocks instruction, found a second"
            )
            self.blocks_seen = True
            return
        scalar_arith = isinstance(instr, nodes.Compute | nodes.Cast | nodes.Full) and all(
            isinstance(v.type, ScalarType) for v in instr.defs()
        )
        if not self.blocks_seen and not scalar_arith and not isinstance(instr, nodes.Require):
            raise self.fail(
                instr,
                "expected the blocks instruction before this one "
                "(only scalar arithmetic and requirements may precede blocks)",
            )

    def instr(self, instr: Instr, scope: dict[str, Var]) -> None:
        for value in instr.uses():
            if isinstance(value, Var):
                self.check_use(instr, value, scope)
            else:
                problem = constant_problem(value)
                if problem:
                    raise self.fail(instr, problem)
        instr.check(Checker(instr, self.tensor_params))
        if isinstance(instr, nodes.Require):
            self.check_requirement(instr)
        if isinstance(instr, nodes.For):
            self.check_step(instr)
            self.for_body(instr, scope)
        elif isinstance(instr, nodes.If):
            self.if_bodies(instr, scope)
        elif instr.BODIES:
            self.other_bodies(instr, scope)
        for var in instr.defs():
            self.define(instr, var, scope)
        if is_launch_arithmetic(instr, self.launch_constants):
            self.launch_constants.update(var.name for var in instr.defs())

    def check_step(self, instr: nodes.For) -> None:
        """A loop's step is known before the launch, so a zero step (which Python's
        range() rejects) is rejected before anything runs."""
        self.check_known_at_launch(instr, instr.step, "the step")

    def check_requirement(self, instr: nodes.Require) -> None:
        """The host checks a requirement before the launch, so it may read only what
        the host knows then."""
        self.check_known_at_launch(instr, instr.cond, "the condition")

    def check_known_at_launch(self, instr: Instr, value: Value, what: str) -> None:
        if isinstance(value, Var) and value.name not in self.launch_constants:
            raise self.fail(
                instr,
                f"expected {what} to be known before the launch (a number, or arithmetic "
                f"on the kernel's scalar parameters and sizes), found {print_value(value)}, "
                "which depends on a block index, a loop or a loaded value",
            )

    def check_use(self, instr: Instr, var: Var, scope: dict[str, Var]) -> None:
        visible = scope.get(var.name)
        if visible is not None:
            if visible != var:
                raise self.fail(
                    instr,
                    f"{print_value(var)} is used with type {print_type(var.type)}, "
                    f"expected the type of its definition, {print_type(visible.type)}",
                )
            return
        if var.name not in self.def_loc:
            raise self.fail(instr, f"{print_value(var)} is used but never defined")
        if var.name not in self.defined:
            raise self.fail(
                instr,
                f"{print_value(var)} is used before its definition at {self.def_loc[var.name]}",
            )
        raise self.fail(
            instr,
            f"{print_value(var)} (defined at {self.defined[var.name]}) is not visible here: a "
            "value defined in a loop or branch body leaves it only through yield and the "
            "instruction's results",
        )

    def define(self, instr: Instr, var: Var, scope: dict[str, Var]) -> None:
        problem = type_problem(var.type)
        if problem:
            raise self.fail(instr, f"{print_value(var)}: {problem}")
        if var.name in self.defined:
            raise self.fail(
                instr,
                f"{print_value(var)} is defined a second time (first at "
                f"{self.defined[var.name]}); expected each value to be defined once",
            )
        self.defined[var.name] = instr.loc
        scope[var.name] = var

    def body(self, instr: Instr, body: Block, scope: dict[str, Var], what: str) -> nodes.Yield:
        self.expect(
            bool(body.instrs) and isinstance(body.instrs[-1], nodes.Yield),
            instr,
            f"expected the {what} to end in yield, found "
            + (type(body.instrs[-1]).__name__ if body.instrs else "an empty body"),
        )
        self.block(body, scope)
        return body.instrs[-1]

    def for_body(self, instr: nodes.For, scope: dict[str, Var]) -> None:
        inner = dict(scope)
        for var in body_params(instr):
            self.define(instr, var, inner)
        end = self.body(instr, instr.body, inner, "loop body")
        self.same_types(
            instr, "the yielded values", end.values, "the carried values", instr.carried
        )

    def if_bodies(self, instr: nodes.If, scope: dict[str, Var]) -> None:
        for what, body in (("then body", instr.then_body), ("else body", instr.else_body)):
            end = self.body(instr, body, dict(scope), what)
            self.same_types(
                instr, f"the values yielded by the {what}", end.values, "the results", instr.results
            )

    def other_bodies(self, instr: Instr, scope: dict[str, Var]) -> None:
        """Any other instruction with bodies (`associative_scan`): each body sees its
        `body_params` and ends in yield; the instruction's `check` types the yields."""
        inner = dict(scope)
        for var in body_params(instr):
            self.define(instr, var, inner)
        for name in instr.BODIES:
            self.body(instr, getattr(instr, name), dict(inner), name.replace("_", " "))

    def same_types(
        self, instr: Instr, what: str, values: Iterable[Value], other: str, others: Iterable[Value]
    ) -> None:
        Checker(instr, self.tensor_params).same_types(what, values, other, others)


#: The most elements a register or shared tile may have (a block's registers hold at
#: most 1024 threads x 255 words; larger tiles only fail later, less clearly).
MAX_TILE_ELEMENTS = 1 << 24


def constant_problem(const: Const) -> str | None:
    """Why a constant cannot be a value of its dtype (None when it can)."""
    value, dtype = const.value, const.dtype
    if dtype.is_float:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**1024:
            return f"the constant {print_value(const)} is beyond every float"
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            return f"expected an integer constant of {dtype}, found {print_value(const)}"
        value = int(value)
    if not dtype.min <= value <= dtype.max:
        return (
            f"the constant {print_value(const)} is out of the range of {dtype} "
            f"({dtype.min}..{dtype.max})"
        )
    return None


def type_problem(type_: Type) -> str | None:
    """Why a type cannot be compiled (None when it can): absurd shapes fail here, at the
    user's line, rather than deep inside a pass."""
    if isinstance(type_, TileType | SharedType):
        if any(not isinstance(d, int) or d < 1 for d in type_.shape):
            return f"expected positive tile dimensions, found {list(type_.shape)}"
        if math.prod(type_.shape) > MAX_TILE_ELEMENTS:
            return (
                f"a tile of shape {list(type_.shape)} has {math.prod(type_.shape)} elements, "
                f"more than the {MAX_TILE_ELEMENTS} any block can hold"
            )
    if isinstance(type_, TensorType):
        for dim in type_.shape:
            if isinstance(dim, Lit) and not 0 <= dim.value < 2**31:
                return f"expected tensor dimensions from 0 to 2^31 - 1, found {dim.value}"
    return None


def is_launch_arithmetic(instr: Instr, known: set[str]) -> bool:
    """Whether `instr` computes an integer scalar from values in `known` only."""
    if not isinstance(instr, nodes.Compute | nodes.Cast | nodes.Full):
        return False
    (result,) = instr.defs()
    if not isinstance(result.type, ScalarType) or result.type.dtype.is_float:
        return False
    return all(not isinstance(v, Var) or v.name in known for v in instr.uses())


def _defs_with_locs(fn: Function) -> list[tuple[Var, Loc]]:
    """Every definition with the location of its instruction (the kernel's for params)."""
    found = [(var, fn.loc) for var in (*fn.params, *fn.sizes)]

    def visit(block: Block) -> None:
        for instr in block.instrs:
            found.extend((var, instr.loc) for var in body_params(instr))
            for body in instr.bodies():
                visit(body)
            found.extend((var, instr.loc) for var in instr.defs())

    visit(fn.body)
    return found
