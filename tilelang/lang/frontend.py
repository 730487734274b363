"""Python AST -> block IR.

The frontend walks the kernel's syntax tree once per specialization. Python runs at
compile time wherever values are compile-time: loops over Python ranges and `while` on
compile-time conditions unroll (`break`, `continue`, `return`: `tilelang.lang.control_flow`),
`@tilelang.func` helpers inline, `if` on a Python value keeps one branch, and any other
Python callable is simply called. Values that only exist at run time (tiles, runtime
scalars) become block-IR instructions: `for i in tl.range(...)` becomes a `For` whose
loop-carried values are the names the body reassigns, and `if` on a runtime scalar
becomes an `If` whose results are the names either branch assigns.

Every error is a `TileLangError` at the user's file, line and column.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import operator
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType, TileType
from tilelang.lang.builder import Builder, current
from tilelang.lang.carried import StartAsTile, start_as, type_of, yielded
from tilelang.lang.control_flow import (
    RETURN_IN_LOOP_MESSAGE,
    RETURN_VALUE_MESSAGE,
    STATIC_WHILE_LIMIT,
    _Break,
    _Continue,
    _Return,
    assigned_names,
    may_leave,
)
from tilelang.lang.errors import TileLangError, no_power_message
from tilelang.lang.ops import RuntimeRange
from tilelang.lang.triton_names import missing_attribute, pointer_arithmetic
from tilelang.lang.values import (
    INDEX,
    IRValue,
    Scalar,
    Tile,
    as_scalar,
    cast,
    describe,
    wrap,
)

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.MatMult: operator.matmul,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}

_ALLOWED_BUILTINS = {
    "range", "len", "min", "max", "abs", "int", "float", "bool", "tuple", "list", "isinstance",
    "enumerate", "zip", "reversed", "sum", "any", "all", "ValueError", "TypeError", "str",
    "divmod", "round", "print", "sorted", "dict", "True", "False", "None",
}  # fmt: skip
_ATOMIC = (ast.Name, ast.Attribute, ast.Subscript, ast.Call, ast.Constant)  # need no parentheses


def _base_text(node: ast.AST) -> str:
    """The source of the left operand of `x ** y` or `x **= y`, as a factor of a product."""
    left = node.target if isinstance(node, ast.AugAssign) else getattr(node, "left", None)
    if left is None:
        return "t"
    text = ast.unparse(left)
    return text if isinstance(left, _ATOMIC) else f"({text})"


@dataclass(frozen=True)
class _OutOfScope:
    """A name defined inside a runtime loop or branch, not visible after it."""

    name: str
    where: str


@dataclass
class SourceFunction:
    """A Python function's syntax tree with what is needed to locate its nodes."""

    fn: Callable
    tree: ast.FunctionDef
    file: str
    first_line: int
    indent: int

    @classmethod
    def of(cls, fn: Callable) -> SourceFunction:
        try:
            lines, first_line = inspect.getsourcelines(fn)
        except (OSError, TypeError) as error:
            raise TileLangError(f"cannot read the source of {fn.__name__}: {error}") from None
        text = "".join(lines)
        indent = len(lines[0]) - len(lines[0].lstrip())
        module = ast.parse(textwrap.dedent(text))
        tree = next(
            n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
        if isinstance(tree, ast.AsyncFunctionDef):
            raise TileLangError(f"{fn.__name__}: a kernel cannot be async")
        return cls(fn, tree, inspect.getsourcefile(fn) or "<unknown>", first_line, indent)

    def loc(self, node: ast.AST) -> tuple[ir.Loc, int | None]:
        line = node.lineno + self.first_line - 1
        end_col = None
        if getattr(node, "end_lineno", None) == node.lineno and node.end_col_offset is not None:
            end_col = node.end_col_offset + self.indent + 1
        return ir.Loc(self.file, line, node.col_offset + self.indent + 1), end_col

    def lookup_global(self, name: str) -> object:
        closure = inspect.getclosurevars(self.fn)
        for scope in (closure.nonlocals, self.fn.__globals__):
            if name in scope:
                return scope[name]
        if name in _ALLOWED_BUILTINS and hasattr(builtins, name):
            return getattr(builtins, name)
        raise KeyError(name)


class Func:
    """A helper decorated with `@tilelang.func`: inlined where a kernel calls it."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self._source: SourceFunction | None = None
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__

    @property
    def source(self) -> SourceFunction:
        if self._source is None:
            self._source = SourceFunction.of(self.fn)
        return self._source

    def __call__(self, *args, **kwargs):
        try:
            bound = inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as error:
            raise current().error(f"calling {self.fn.__name__}: {error}") from None
        bound.apply_defaults()
        call_site = current().loc  # the caller's statement (or the scan that calls a combine)
        try:
            return FunctionCompiler(self.source, dict(bound.arguments)).run_inline()
        except TileLangError as error:
            error.add_call_site(call_site)
            raise


class FunctionCompiler:
    """Compiles one function body (a kernel, or an inlined helper) into the builder."""

    def __init__(self, source: SourceFunction, env: dict[str, object]):
        self.source = source
        self.env = env
        self.builder: Builder = current()
        self.kernel = False  # a kernel's `return` carries no value

    # -- entry points --------------------------------------------------------------------

    def run_kernel(self) -> None:
        self.kernel = True
        self.run_inline()

    def run_inline(self) -> object:
        try:
            self.run_path(self.source.tree.body)
        except _Return as result:  # under compile-time conditions: nothing after it runs
            return result.value
        return None

    def run_path(self, body: list[ast.stmt]) -> None:
        """Runs `body`, the rest of the function. An `if` that holds a `return` takes what
        follows it into both its branches (`if b >= n: return` runs the rest as its
        `else`; a compile-time `if` keeps one), so every path ends where Python's would."""
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.If) and may_leave(stmt):
                with self._at(stmt):
                    cond = self._condition(stmt)
                    if isinstance(cond, Scalar):
                        self.runtime_if(stmt, cond, rest=body[i + 1 :])
                    else:
                        self.run_path((stmt.body if cond else stmt.orelse) + body[i + 1 :])
                return
            self.statement(stmt)

    # -- helpers -------------------------------------------------------------------------

    def _at(self, node: ast.AST):
        loc, end_col = self.source.loc(node)
        return self.builder.at(loc, end_col)

    def error(self, node: ast.AST, message: str) -> TileLangError:
        loc, end_col = self.source.loc(node)
        return TileLangError(message, loc, end_col)

    def lookup(self, node: ast.Name) -> object:
        if node.id in self.env:
            value = self.env[node.id]
            if isinstance(value, _OutOfScope):
                raise self.error(
                    node,
                    f"`{node.id}` is assigned only inside {value.where}, so it has no value here; "
                    "give it a value before the loop or branch",
                )
            return value
        try:
            return self.source.lookup_global(node.id)
        except KeyError:
            raise self.error(node, f"name `{node.id}` is not defined") from None

    # -- statements ----------------------------------------------------------------------

    def statement(self, node: ast.stmt) -> None:
        handler = getattr(self, f"stmt_{type(node).__name__}", None)
        if handler is None:
            raise self.error(
                node, f"`{type(node).__name__}` statements are not supported in a kernel"
            )
        with self._at(node):
            handler(node)

    def statements(self, body: list[ast.stmt]) -> None:
        for stmt in body:
            self.statement(stmt)

    def stmt_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return  # a docstring
        self.expr(node.value)

    def stmt_Pass(self, node: ast.Pass) -> None:
        pass

    def stmt_Assign(self, node: ast.Assign) -> None:
        value = self.expr(node.value)
        for target in node.targets:
            self.assign(target, value)

    def stmt_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is None:
            raise self.error(node, "a declaration without a value is not supported; assign a value")
        self.assign(node.target, self.expr(node.value))

    def stmt_AugAssign(self, node: ast.AugAssign) -> None:
        if not isinstance(node.target, ast.Name):
            raise self.error(node.target, "only a plain name can be updated in place")
        current_value = self.lookup(node.target)
        value = self.expr(node.value)
        with self._at(node):
            self.env[node.target.id] = self.apply(
                _BINARY[type(node.op)], current_value, value, node
            )

    def assign(self, target: ast.expr, value: object) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            return
        if isinstance(target, (ast.Tuple, ast.List)):
            if isinstance(value, IRValue) or not hasattr(value, "__iter__"):
                raise self.error(
                    target, f"cannot unpack {describe(value)} into {len(target.elts)} names"
                )
            items = list(value)
            if len(items) != len(target.elts):
                raise self.error(
                    target, f"cannot unpack {len(items)} values into {len(target.elts)} names"
                )
            for sub_target, item in zip(target.elts, items, strict=True):
                self.assign(sub_target, item)
            return
        raise self.error(
            target,
            "only names can be assigned in a kernel; write to memory with tl.store",
        )

    def stmt_Return(self, node: ast.Return) -> None:
        if self._inside_runtime_control and not self._may_leave:
            raise self.error(node, RETURN_IN_LOOP_MESSAGE)
        if node.value is not None and self.kernel:
            raise self.error(node, "a kernel returns nothing; write results with tl.store")
        if node.value is not None and self._inside_runtime_control:
            raise self.error(node, RETURN_VALUE_MESSAGE)
        raise _Return(None if node.value is None else self.expr(node.value))

    _inside_runtime_control = False
    _may_leave = False  # in a runtime branch that holds the rest of the function

    def stmt_Assert(self, node: ast.Assert) -> None:
        """A compile-time condition is checked now; one on runtime scalars (sizes and
        scalar parameters) becomes a `require` the host checks before each launch."""
        test = self.expr(node.test)
        message = self.expr(node.msg) if node.msg is not None else None
        if isinstance(test, Tile):
            raise self.error(
                node.test,
                "assert needs one condition for the whole launch, got a tile; reduce it "
                "(tl.max, tl.sum) or check the sizes it depends on",
            )
        if isinstance(test, Scalar):
            if self._inside_runtime_control:
                raise self.error(
                    node,
                    "an assert on runtime values is checked before the launch, so it goes "
                    "in the kernel's body before any runtime loop, branch or early return",
                )
            text = f"assert {ast.unparse(node.test)} does not hold for these arguments"
            with self._at(node):
                self.builder.emit(
                    ir.Require(
                        cast(test, dtypes.u1).value,
                        text if message is None else f"{text}: {message}",
                        loc=self.builder.loc,
                    )
                )
            return
        if not test:
            raise self.error(
                node, f"compile-time assertion failed: {message or 'assertion failed'}"
            )

    def stmt_If(self, node: ast.If) -> None:
        cond = self._condition(node)
        if isinstance(cond, Scalar):
            self.runtime_if(node, cond)
            return
        self.statements(node.body if cond else node.orelse)

    def _condition(self, node: ast.If) -> object:
        cond = self.expr(node.test)
        if isinstance(cond, Tile):
            raise self.error(
                node.test,
                "`if` on a tile would be non-uniform control flow (threads would disagree); "
                "use tl.where(condition, a, b)",
            )
        return cond

    def stmt_For(self, node: ast.For) -> None:
        if node.orelse:
            raise self.error(node, "`for ... else` is not supported")
        iterable = self.expr(node.iter)
        if isinstance(iterable, RuntimeRange):
            self.runtime_for(node, iterable)
            return
        if isinstance(iterable, IRValue):
            raise self.error(
                node.iter, "a runtime value cannot be iterated; loop with tl.range(...)"
            )
        if isinstance(iterable, Iterable):  # compile-time Python: range, enumerate, zip, ...
            for item in iterable:
                self.assign(node.target, item)
                if not self._unrolled_body(node.body):
                    break
            return
        raise self.error(node.iter, f"cannot loop over {describe(iterable)}; use range or tl.range")

    def stmt_While(self, node: ast.While) -> None:
        """A `while` whose condition is known while compiling, unrolled like a `for` over
        a `range`; a kernel loops at run time with `tl.range`."""
        if node.orelse:
            raise self.error(node, "`while ... else` is not supported")
        for _ in range(STATIC_WHILE_LIMIT):
            cond = self.expr(node.test)
            if isinstance(cond, IRValue):
                raise self.error(
                    node.test,
                    f"a `while` condition must be known while compiling (it is unrolled), "
                    f"got {describe(cond)}; loop at run time with `for i in tl.range(...)`",
                )
            if not cond or not self._unrolled_body(node.body):
                return
        raise self.error(
            node.test, f"this `while` is still true after {STATIC_WHILE_LIMIT} unrolled iterations"
        )

    def _unrolled_body(self, body: list[ast.stmt]) -> bool:
        """Runs one iteration of a loop the frontend unrolls: False after a `break`."""
        saved, self._in_unrolled_loop = self._in_unrolled_loop, True
        try:
            self.statements(body)
        except _Break:
            return False
        except _Continue:
            pass
        finally:
            self._in_unrolled_loop = saved
        return True

    _in_unrolled_loop = False  # and no runtime loop or branch inside it: `break` can leave

    def stmt_Break(self, node: ast.Break) -> None:
        self._check_loop_exit(node, "break")
        raise _Break()

    def stmt_Continue(self, node: ast.Continue) -> None:
        self._check_loop_exit(node, "continue")
        raise _Continue()

    def _check_loop_exit(self, node: ast.stmt, word: str) -> None:
        """Python allows `break` only in a loop: here, one the frontend does not unroll."""
        if not self._in_unrolled_loop:
            raise self.error(
                node,
                f"`{word}` under a runtime loop or branch is not supported: every thread of "
                "a block runs the same iterations; guard the rest of the body with an `if`, "
                "or end the loop early with its bounds",
            )

    # -- runtime control flow ------------------------------------------------------------

    def runtime_for(self, node: ast.For, rng: RuntimeRange) -> None:
        """Compiles the loop, again for each carried number that its body makes a tile
        (`tilelang.lang.carried.StartAsTile`), with the number starting as that tile."""
        tiles: dict[str, TileType] = {}
        while True:
            before = dict(self.env)
            try:
                return self._runtime_for(node, rng, tiles)
            except StartAsTile as retype:
                self.env, tiles[retype.name] = before, retype.type

    def _runtime_for(self, node: ast.For, rng: RuntimeRange, tiles: dict) -> None:
        if not isinstance(node.target, ast.Name):
            raise self.error(node.target, "a tl.range loop variable must be a single name")
        bounds = tuple(as_scalar(v, INDEX).value for v in (rng.start, rng.stop, rng.step))
        before = dict(self.env)
        carried_names = self._carried_names(node.body, before)
        with self.builder.body() as prelude:  # emitted only if this compile of it holds
            starts = {
                n: start_as(before[n], tiles[n]) if n in tiles else before[n] for n in carried_names
            }
            inits = {n: self._as_runtime(starts[n], node, n) for n in carried_names}
        carried = {n: self.builder.var(n, type_of(v)) for n, v in inits.items()}
        loop_var = self.builder.var(node.target.id, ScalarType(INDEX))
        with self.builder.body() as body:
            self.env.update({n: wrap(v) for n, v in carried.items()})
            self.env[node.target.id] = Scalar(loop_var)
            self._statements_in_control(node.body)
            yields = tuple(
                self._yield_value(n, carried[n].type, node, "loop", starts[n])
                for n in carried_names
            )
            self.builder.emit(ir.Yield(yields, loc=self.builder.loc))
        results = tuple(self.builder.var(n, carried[n].type) for n in carried_names)
        for instr in prelude:
            self.builder.emit(instr)
        self.builder.emit(
            ir.For(
                loop_var, *bounds,
                inits=tuple(inits[n] for n in carried_names),
                carried=tuple(carried[n] for n in carried_names),
                body=ir.Block(tuple(body)),
                results=results,
                unroll=rng.unroll,
                stages=rng.stages,
                loc=self.builder.loc,
            )
        )  # fmt: skip
        self._restore_scope(
            before, dict(zip(carried_names, results, strict=True)), "a tl.range loop"
        )

    def runtime_if(self, node: ast.If, cond: Scalar, rest: list[ast.stmt] | None = None) -> None:
        """With `rest` (after an `if` that holds a `return`), both run on: no results."""
        if cond.dtype != dtypes.u1:
            cond = cond != 0
        before = dict(self.env)
        branch_envs, bodies = [], []
        for branch in (node.body, node.orelse):
            self.env = dict(before)
            with self.builder.body() as body:  # `rest` follows both; a `return` ends a path
                self._statements_in_control(branch + (rest or []), leaving=rest is not None)
            branch_envs.append(self.env)
            bodies.append(body)
        names = [] if rest is not None else self._if_result_names(before, branch_envs)
        types = {}
        for name in names:
            values = [e[name] for e in branch_envs]
            types[name] = _branch_type(values)
        for branch_env, body in zip(branch_envs, bodies, strict=True):
            self.env = branch_env
            with self.builder.body() as tail:
                yields = tuple(self._yield_value(n, types[n], node, "branch") for n in names)
            body.extend(tail)
            body.append(ir.Yield(yields, loc=self.builder.loc))
        results = tuple(self.builder.var(n, types[n]) for n in names)
        self.builder.emit(
            ir.If(
                cond.value,
                ir.Block(tuple(bodies[0])),
                ir.Block(tuple(bodies[1])),
                results,
                loc=self.builder.loc,
            )
        )
        self.env = before
        self._restore_scope(
            before,
            dict(zip(names, results, strict=True)),
            "an `if` on a runtime value",
            branch_envs,
        )

    def _statements_in_control(self, body: list[ast.stmt], leaving: bool = False) -> None:
        """A runtime loop's or branch's body; `leaving`: the branch's path may `return`."""
        saved = self._inside_runtime_control, self._in_unrolled_loop, self._may_leave
        self._inside_runtime_control, self._in_unrolled_loop, self._may_leave = True, False, leaving
        try:
            (self.run_path if leaving else self.statements)(body)
        except _Return:
            pass  # only where `leaving` (stmt_Return): this path ends here
        finally:
            self._inside_runtime_control, self._in_unrolled_loop, self._may_leave = saved

    def _carried_names(self, body: list[ast.stmt], before: dict[str, object]) -> list[str]:
        names = []
        for name in assigned_names(body):
            if name not in before or isinstance(before[name], _OutOfScope):
                continue
            value = before[name]
            if isinstance(value, (Tile, Scalar)) or _is_number(value):
                names.append(name)
        return names

    def _as_runtime(self, value: object, node: ast.AST, name: str) -> ir.Value:
        if isinstance(value, Tile):
            return value.var
        if isinstance(value, Scalar):
            return value.value
        with self._at(node):
            return as_scalar(value).value

    def _yield_value(
        self, name: str, type_, node: ast.AST, what: str, start: object = None
    ) -> ir.Value:
        value = self.env.get(name)
        if isinstance(value, _OutOfScope) or value is None:
            raise self.error(node, f"`{name}` has no value at the end of the {what}")
        return yielded(name, value, type_, what, start)

    def _if_result_names(self, before: dict, branch_envs: list[dict]) -> list[str]:
        names = []
        for name in dict.fromkeys([*branch_envs[0], *branch_envs[1]]):
            values = [e.get(name) for e in branch_envs]
            if any(v is None or isinstance(v, _OutOfScope) for v in values):
                continue
            if all(v is before.get(name) for v in values):
                continue
            if any(isinstance(v, (Tile, Scalar)) for v in values) or (
                all(_is_number(v) for v in values) and values[0] != values[1]
            ):
                names.append(name)
        return names

    def _restore_scope(
        self, before: dict, results: dict[str, ir.Var], where: str, branch_envs=()
    ) -> None:
        inner_names = set(self.env)
        for env in branch_envs:
            inner_names |= set(env)
        self.env = dict(before)
        for name in inner_names - set(before):
            self.env[name] = _OutOfScope(name, where)
        for name, var in results.items():
            self.env[name] = wrap(var)

    # -- expressions ---------------------------------------------------------------------

    def expr(self, node: ast.expr) -> object:
        handler = getattr(self, f"expr_{type(node).__name__}", None)
        if handler is None:
            raise self.error(
                node, f"`{type(node).__name__}` expressions are not supported in a kernel"
            )
        with self._at(node):
            return handler(node)

    def expr_Constant(self, node: ast.Constant) -> object:
        return node.value

    def expr_Name(self, node: ast.Name) -> object:
        return self.lookup(node)

    def expr_Tuple(self, node: ast.Tuple) -> tuple:
        return tuple(self._elements(node.elts))

    def expr_List(self, node: ast.List) -> list:
        return self._elements(node.elts)

    def _elements(self, elts: list[ast.expr]) -> list:
        items = []
        for elt in elts:
            if isinstance(elt, ast.Starred):
                items.extend(self.expr(elt.value))
            else:
                items.append(self.expr(elt))
        return items

    def expr_Attribute(self, node: ast.Attribute) -> object:
        base = self.expr(node.value)
        try:
            return getattr(base, node.attr)
        except AttributeError:
            raise self.error(node, missing_attribute(base, node.attr)) from None

    def expr_Subscript(self, node: ast.Subscript) -> object:
        base = self.expr(node.value)
        index = self.expr(node.slice)
        try:
            return base[index]
        except TileLangError:
            raise
        except Exception as error:
            raise self.error(
                node, f"cannot index {describe(base)} with {index!r}: {error}"
            ) from None

    def expr_Slice(self, node: ast.Slice) -> slice:
        parts = [None if p is None else self.expr(p) for p in (node.lower, node.upper, node.step)]
        return slice(*parts)

    def expr_BinOp(self, node: ast.BinOp) -> object:
        lhs, rhs = self.expr(node.left), self.expr(node.right)
        return self.apply(_BINARY[type(node.op)], lhs, rhs, node)

    def apply(self, fn: Callable, *args_and_node) -> object:
        *args, node = args_and_node
        if fn is operator.pow and any(isinstance(a, IRValue) for a in args):
            base, exponent = args
            message = no_power_message(isinstance(base, IRValue), exponent, _base_text(node))
            raise self.error(node, message)
        if fn is operator.matmul:
            raise self.error(node, "`@` is not supported; use tl.dot(a, b, acc)")
        try:
            return fn(*args)
        except TileLangError:
            raise
        except Exception as error:
            message = pointer_arithmetic(args, node) or f"{type(error).__name__}: {error}"
            raise self.error(node, message) from None

    def expr_UnaryOp(self, node: ast.UnaryOp) -> object:
        operand = self.expr(node.operand)
        if isinstance(node.op, ast.Not):
            if isinstance(operand, IRValue):
                raise self.error(
                    node, "`not` needs a compile-time value; for runtime values write `x == 0`"
                )
            return not operand
        return self.apply(_UNARY[type(node.op)], operand, node)

    def expr_BoolOp(self, node: ast.BoolOp) -> object:
        result = None
        for value_node in node.values:
            result = self.expr(value_node)
            if isinstance(result, IRValue):
                raise self.error(
                    value_node,
                    "`and`/`or` need compile-time values; combine runtime conditions with & and |",
                )
            if isinstance(node.op, ast.And) and not result:
                return result
            if isinstance(node.op, ast.Or) and result:
                return result
        return result

    def expr_Compare(self, node: ast.Compare) -> object:
        """`a < b <= c` is `(a < b) & (b <= c)` for numbers and scalars (nothing to short-
        circuit: every operand is computed already); numpy refuses it for arrays."""
        values = [self.expr(node.left), *(self.expr(c) for c in node.comparators)]
        if len(node.ops) > 1 and any(isinstance(v, Tile) for v in values):
            raise self.error(node, "chained comparisons of tiles are not supported; use &")
        result = None
        for op, a, b in zip(node.ops, values, values[1:], strict=False):
            test = self.apply(_COMPARE[type(op)], a, b, node)
            result = test if result is None else self.apply(operator.and_, result, test, node)
        return result

    def expr_IfExp(self, node: ast.IfExp) -> object:
        cond = self.expr(node.test)
        if isinstance(cond, IRValue):
            raise self.error(
                node.test, "`a if c else b` needs a compile-time condition; use tl.where(c, a, b)"
            )
        return self.expr(node.body if cond else node.orelse)

    def expr_JoinedStr(self, node: ast.JoinedStr) -> str:
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                inner = self.expr(value.value)
                if isinstance(inner, IRValue):
                    raise self.error(value, "an f-string can only show compile-time values")
                parts.append(
                    format(inner, self.expr(value.format_spec) if value.format_spec else "")
                )
        return "".join(parts)

    def expr_Call(self, node: ast.Call) -> object:
        fn = self.expr(node.func)
        args = self._elements(node.args)
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                kwargs.update(self.expr(keyword.value))
            else:
                kwargs[keyword.arg] = self.expr(keyword.value)
        with self._at(node):
            return self.call(fn, args, kwargs, node)

    def call(self, fn: object, args: list, kwargs: dict, node: ast.Call) -> object:
        if fn is builtins.print:
            raise self.error(node, "use tl.print(label, value) to print from a kernel")
        if fn is builtins.range and any(isinstance(a, IRValue) for a in args):
            raise self.error(
                node, "range() over runtime values cannot unroll at compile time; use tl.range(...)"
            )
        if fn in (builtins.min, builtins.max) and any(isinstance(a, IRValue) for a in args):
            name = "minimum" if fn is builtins.min else "maximum"
            raise self.error(
                node, f"Python's {fn.__name__}() on runtime values: use tl.{name}(a, b)"
            )
        if fn in (builtins.float, builtins.int) and any(isinstance(a, IRValue) for a in args):
            target = "tl.f32" if fn is builtins.float else "tl.i32"
            raise self.error(
                node,
                f"Python's {fn.__name__}() cannot convert a runtime value (it has no value "
                f"while the kernel compiles); to change its dtype write x.to({target})",
            )
        if not callable(fn):
            raise self.error(node.func, f"{describe(fn)} is not callable")
        if _is_plain_python_function(fn) and _touches_ir(args, kwargs):
            raise self.error(
                node.func,
                f"{fn.__name__} is a plain Python function called with runtime values; "
                "decorate it with @tilelang.func to inline it into the kernel",
            )
        try:
            return fn(*args, **kwargs)
        except (TileLangError, _Return, _Break, _Continue):
            raise
        except Exception as error:
            raise self.error(node, f"{type(error).__name__}: {error}") from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, IRValue)


def _branch_type(values: list) -> object:
    runtime = [v for v in values if isinstance(v, (Tile, Scalar))]
    if not runtime:
        return ScalarType(INDEX if all(isinstance(v, int) for v in values) else dtypes.f32)
    first = runtime[0]
    if isinstance(first, Tile):
        return first.type
    return ScalarType(first.dtype)


def _is_plain_python_function(fn: object) -> bool:
    module = getattr(fn, "__module__", "") or ""
    return inspect.isfunction(fn) and not module.startswith("tilelang")


def _touches_ir(args: list, kwargs: dict) -> bool:
    return any(isinstance(v, IRValue) for v in [*args, *kwargs.values()])
