"""The text form of the block IR: parsing.

This module owns the lark grammar of the text that `tilelang.ir.printer` writes and the
conversion back to nodes: `parse_function(print_function(fn)) == fn` (NaN constants
aside, since NaN != NaN). The grammar includes `LAYOUT_GRAMMAR` for the layouts of
register tiles; shared layouts are read by `parse_shared_layout`.

One instruction per line (newlines are significant, other whitespace is not; `#` starts a
comment). A use of a value names it; its type comes from its definition: the most recent
one above the use, else (for text that uses a value before defining it, which the
verifier rejects) the first one anywhere. Only a name defined nowhere is a syntax error,
so broken functions can be written as text for tests.

Every error is an `IRSyntaxError` (a ValueError) that says the line, the column and what
was expected, and shows the line with a caret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from tilelang.dtypes import DType, dtype
from tilelang.ir import nodes
from tilelang.ir.core import FINITE
from tilelang.ir.layout import LayoutError
from tilelang.ir.layout_parser import LAYOUT_GRAMMAR, layout_from_tree
from tilelang.ir.nodes import (
    NOWHERE,
    Block,
    Const,
    Function,
    Instr,
    Loc,
    Value,
    Var,
    instruction_classes,
)
from tilelang.ir.printer import LOOP_VAR_TYPE
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym
from tilelang.ir.shared_layout import parse_shared_layout
from tilelang.ir.syntax import Syntax, syntax_of
from tilelang.ir.text import reserved_words
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type
from tilelang.ir.visit import body_params, defined_vars


class IRSyntaxError(ValueError):
    """Malformed block-IR text; `line` and `column` (1-based) locate the problem."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.line = line
        self.column = column


def _balanced_text(depth: int = 6) -> str:
    """A regex for text with balanced parentheses (up to `depth` deep), stopping at a
    top-level `<` or `>`: the shared layout inside `shared<..., LAYOUT>`."""
    group = r"\([^()\n]*\)"
    for _ in range(depth - 1):
        group = rf"\((?:[^()\n]|{group})*\)"
    return rf"(?:[^()<>\s]|{group})(?:[^()<>\n]|{group})*"


GRAMMAR = (
    r"""
start: _NL? function _NL?
type_start: type

function: "kernel" name "(" typed_vars ")" [sizes] "warps" "(" SINT ")" [assume] [constexprs] [loc] "{" _NL block "}"
sizes: "sizes" "(" typed_vars ")"
assume: "assume" "(" assume_fact ("," assume_fact)* ")"
assume_fact: name "%" SINT | "0" "<=" name "<" SINT | "finite" "(" name ")" -> finite_fact
typed_vars: (typed_var ("," typed_var)*)?
typed_var: VAR ":" type
constexprs: "constexprs" "(" (constexpr ("," constexpr)*)? ")"
constexpr: name "=" (CVALUE | STRING)
name: IDENT | STRING
loc: "loc" "(" STRING ":" SINT ":" SINT ")"

block: (instr _NL)*

?instr: simple_instr | for_instr | if_instr | scan_instr
simple_instr: [results "="] op [attrs] [":" types] [loc]
attrs: "{" attr ("," attr)* "}"
attr: IDENT "=" (SINT | STRING | BOOL)
for_instr: [results "="] "for" VAR [":" type] "=" value "to" value "step" value [iter] [unroll] [stages] [result_types] [loc] "{" _NL block "}"
if_instr: [results "="] "if" value [result_types] [loc] "{" _NL block "}" "else" "{" _NL block "}"
scan_instr: [results "="] "associative_scan" values "axis" "(" SINT ")" [scan_reverse] "lhs" "(" typed_vars ")" "rhs" "(" typed_vars ")" [result_types] [loc] "{" _NL block "}"
scan_reverse: "reverse"
results: VAR ("," VAR)*
types: type ("," type)*
result_types: "->" "(" (type ("," type)*)? ")"
iter: "iter" "(" iter_item ("," iter_item)* ")"
iter_item: carried "=" init
?carried: typed_var | "_" -> hole
?init: value | "_" -> hole
unroll: "unroll" "(" SINT ")"
stages: "stages" "(" SINT ")"

%OPERATIONS%
values: (value ("," value)*)?
?value: VAR | CONST
ints: (SINT ("," SINT)*)?

?type: IDENT                                                   -> scalar_type
     | "tile" "<" IDENT "," "[" ints "]" ["," layout_expr] ">"   -> tile_type
     | "shared" "<" IDENT "," "[" ints "]" ["," SHARED_LAYOUT] ">" -> shared_type
     | "tensor" "<" IDENT "," "[" (sexpr ("," sexpr)*)? "]" ">"  -> tensor_type

?sexpr: sterm
      | sexpr "+" sterm     -> s_add
      | sexpr "-" sterm     -> s_sub
?sterm: satom
      | sterm "*" satom     -> s_mul
      | sterm "//" satom    -> s_floordiv
      | sterm "%" satom     -> s_mod
?satom: SINT                -> s_lit
      | IDENT               -> s_sym
      | "(" sexpr ")"

VAR: /%(?:[A-Za-z0-9_.]+|"(?:[^"\\\n]|\\.)*")/
CONST: /(?:-?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|inf)|nan|true|false):[A-Za-z_][A-Za-z0-9_]*/
SINT: /-?\d+/
BOOL.2: "true" | "false"
IDENT: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\\n]|\\.)*"/
CVALUE: /[A-Za-z0-9_.+\-]+/
SHARED_LAYOUT: /"""
    + _balanced_text()
    + r"""/
_NL: /(\r?\n[\t ]*(#[^\n]*)?)+/
COMMENT: /#[^\n]*/

%import common.WS_INLINE
%ignore WS_INLINE
%ignore COMMENT
"""
    + LAYOUT_GRAMMAR
)


def _operations() -> str:
    """The `op` rule: one alternative per instruction class, from its syntax template."""
    alternatives: list[str] = []
    extra: list[str] = []
    for cls in instruction_classes():
        if cls.SYNTAX is not None:
            alternative, rules = syntax_of(cls).grammar()
            alternatives.append(alternative)
            extra.extend(rules)
    return "?op: " + "\n   | ".join(alternatives) + "\n" + "\n".join(extra)


GRAMMAR = GRAMMAR.replace("%OPERATIONS%", _operations())

#: Each instruction's syntax by the name of its parse-tree node.
_SYNTAX_BY_RULE = {
    syntax_of(cls).rule: syntax_of(cls) for cls in instruction_classes() if cls.SYNTAX is not None
}


@cache
def _parser() -> Lark:
    return Lark(
        GRAMMAR,
        start=["start", "type_start"],
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


# -- public entry points ---------------------------------------------------------------


def parse_function(text: str) -> Function:
    """Parse the text form of a function (what `print_function` writes)."""
    tree = _parse(text, "start")
    fn = _transform(text, tree)
    return _Resolver(text, fn).function()


def parse_type(text: str) -> Type:
    """Parse a type such as `f16`, `tile<f16, [16, 8], local(2, 2)>` or `tensor<u4, [K, N]>`."""
    return _transform(text, _parse(text, "type_start"))


def _parse(text: str, start: str) -> Tree:
    try:
        return _parser().parse(text, start=start)
    except UnexpectedInput as err:
        raise _lark_error(text, err) from None


def _transform(text: str, tree: Tree) -> Any:
    try:
        return _Builder(text).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, IRSyntaxError):
            raise err.orig_exc from None
        if isinstance(err.orig_exc, ValueError):  # e.g. a string json cannot read
            line, column = _position(err.obj)
            message = str(err.orig_exc)
            if isinstance(err.orig_exc, json.JSONDecodeError):
                message = (
                    f"bad string: {err.orig_exc.msg} (a control character must be written as "
                    "an escape such as \\u0001)"
                )
            raise _error(text, line, column, message) from None
        raise


def _position(node: Token | Tree) -> tuple[int, int]:
    """Where a parse-tree node starts (1, 1 when lark kept no position)."""
    meta = node if isinstance(node, Token) else getattr(node, "meta", None)
    return getattr(meta, "line", None) or 1, getattr(meta, "column", None) or 1


# -- errors ----------------------------------------------------------------------------


def _error(text: str, line: int, column: int, message: str) -> IRSyntaxError:
    lines = text.splitlines()
    context = ""
    if 1 <= line <= len(lines):
        context = f"\n  {lines[line - 1]}\n  {' ' * (column - 1)}^"
    return IRSyntaxError(f"line {line}, column {column}: {message}{context}", line, column)


_TERMINAL_TEXT = {
    "VAR": "a value like %x",
    "CONST": "a constant like 1:i32",
    "SINT": "an integer",
    "LAYOUT_INT": "an integer",
    "IDENT": "a name",
    "STRING": "a quoted string",
    "CVALUE": "a constexpr value",
    "SHARED_LAYOUT": "a shared layout",
    "_NL": "the end of the line",
    "$END": "the end of the text",
}


def _describe_expected(names: Iterable[str]) -> str:
    patterns = {t.name: t.pattern for t in _parser().terminals}
    shown: set[str] = set()
    mnemonics = 0
    for name in names:
        pattern = patterns.get(name)
        if pattern is not None and pattern.type == "str":
            if pattern.value in reserved_words():
                mnemonics += 1
                continue
            shown.add(repr(pattern.value))
        else:
            shown.add(_TERMINAL_TEXT.get(name, name))
    if mnemonics:
        shown.add("an instruction" if mnemonics >= 5 else "an instruction name")
    ordered = sorted(shown)
    return ordered[0] if len(ordered) == 1 else "one of " + ", ".join(ordered)


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


_WORD = re.compile(r'%?"(?:[^"\\\n]|\\.)*"|[%\w.+-]+(?::\w+)?|\S')


def _found(text: str, position: int) -> str:
    """The word of `text` at `position`, quoted, for "found ..." in messages."""
    match = _WORD.match(text, position)
    return repr(match.group()) if match else "a blank"


def _lark_error(text: str, err: UnexpectedInput) -> IRSyntaxError:
    if isinstance(err, UnexpectedCharacters):
        found = _found(text, err.pos_in_stream)
        expected = _describe_expected(err.allowed)
        return _error(text, err.line, err.column, f"expected {expected}, found {found}")
    if isinstance(err, UnexpectedToken) and err.token.type != "$END":
        token = err.token
        found = "the end of the line" if token.type == "_NL" else _found(text, token.start_pos)
        expected = _describe_expected(err.accepts or err.expected)
        return _error(text, token.line, token.column, f"expected {expected}, found {found}")
    line, column = _end_position(text)
    expected = _describe_expected(getattr(err, "expected", ()) or ())
    return _error(text, line, column, f"expected {expected}, found the end of the text")


# -- building nodes --------------------------------------------------------------------


@dataclass(frozen=True)
class _Pending:
    """The type of a use before name resolution: where the use is, for errors."""

    line: int
    column: int


@dataclass(frozen=True)
class _Op:
    """A parsed operation awaiting its results: `build(results, loc) -> Instr`."""

    mnemonic: str
    results: int | None  # how many results it defines; None: any number
    build: Callable[[tuple[Var, ...], Loc], Instr]


def _var_name(token: Token) -> str:
    text = str(token)[1:]
    return json.loads(text) if text.startswith('"') else text


_INT = re.compile(r"-?\d+")


def _number(text: str) -> int | float | bool:
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text):
        return int(text)
    return float(text)


def _slot_value(kind: str, value: Any) -> Any:
    """A parsed slot's value as the instruction's field holds it (None: left out)."""
    if value is None or value is True:
        return value
    if kind == "int":
        return int(value)
    if kind == "string":
        return json.loads(value)
    return value


def _builder(syntax: Syntax, values: list) -> Callable[[tuple[Var, ...], Loc], Instr]:
    return lambda results, loc: syntax.build(values, results, loc)


def _tuple(values: list | None) -> tuple:
    return tuple(values or ())


class _Builder(Transformer):
    """Parse tree -> nodes; uses of values become `Var(name, _Pending(...))`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def fail(self, where: Token | Any, message: str) -> IRSyntaxError:
        return _error(self.text, where.line, where.column, message)

    # -- tokens ----------------------------------------------------------------------

    def VAR(self, token: Token) -> Var:
        return Var(_var_name(token), _Pending(token.line, token.column))  # type: ignore[arg-type]

    def CONST(self, token: Token) -> Const:
        number, _, type_name = str(token).partition(":")
        column = token.column + len(number) + 1  # errors point at the dtype name
        return Const(_number(number), self.dtype_at(token, type_name, column))

    def dtype_at(self, token: Token, name: str, column: int) -> DType:
        try:
            return dtype(name)
        except ValueError as err:
            raise _error(self.text, token.line, column, str(err)) from None

    def dtype_token(self, token: Token) -> DType:
        return self.dtype_at(token, str(token), token.column)

    # -- function --------------------------------------------------------------------

    def start(self, children: list) -> Function:
        return children[0]

    def type_start(self, children: list) -> Type:
        return children[0]

    @v_args(meta=True)
    def function(self, meta: Any, children: list) -> Function:
        name, params, sizes, warps, assume, constexprs, loc, body = children
        try:
            return Function(
                name,
                tuple(params),
                tuple(sizes or ()),
                body,
                int(warps),
                _tuple(constexprs),
                _tuple(assume),
                loc=loc or NOWHERE,
            )
        except ValueError as err:  # an assume fact naming no size
            raise self.fail(meta, str(err)) from None

    def assume(self, children: list) -> tuple:
        return tuple(children)

    def finite_fact(self, children: list) -> tuple[str, str]:
        return children[0], FINITE

    def assume_fact(self, children: list) -> tuple[str, int]:
        name, token = children
        divisor = int(token)
        if not 0 < divisor <= 1 << 16 or divisor & (divisor - 1):
            raise self.fail(token, f"expected a power of two up to 65536, found {divisor}")
        return name, divisor

    def sizes(self, children: list) -> list:
        return children[0]

    def typed_vars(self, children: list) -> list:
        return children

    def typed_var(self, children: list) -> Var:
        var, type_ = children
        return Var(var.name, type_)

    def constexprs(self, children: list) -> tuple:
        return tuple(children)

    def constexpr(self, children: list) -> tuple[str, nodes.ConstexprValue]:
        name, token = children
        if token.type == "STRING":
            return name, json.loads(token)
        try:
            return name, _number(str(token))
        except ValueError:
            return name, self.dtype_token(token)

    def name(self, children: list) -> str:
        (token,) = children
        return json.loads(token) if token.type == "STRING" else str(token)

    def loc(self, children: list) -> Loc:
        file, line, col = children
        return Loc(json.loads(file), int(line), int(col))

    # -- blocks and instructions -------------------------------------------------------

    def block(self, children: list) -> Block:
        return Block(tuple(children))

    @v_args(meta=True)
    def simple_instr(self, meta: Any, children: list) -> Instr:
        names, op, attrs, types, loc = children
        names, types = names or [], types or []
        if len(names) != len(types):
            if not types:
                message = f"expected ': TYPE' giving the types of the {len(names)} result(s)"
            else:
                message = f"{len(names)} result(s) but {len(types)} type(s)"
            raise self.fail(meta, message)
        if op.results is not None and len(names) != op.results:
            count = "no values" if op.results == 0 else "exactly one value"
            raise self.fail(meta, f"{op.mnemonic} defines {count}, found {len(names)} result(s)")
        results = tuple(Var(v.name, t) for v, t in zip(names, types, strict=True))
        instr = op.build(results, loc or NOWHERE)
        return replace(instr, attrs=tuple(sorted(attrs or ()))) if attrs else instr

    def attrs(self, children: list) -> list[tuple[str, int | bool | str]]:
        return children

    def attr(self, children: list) -> tuple[str, int | bool | str]:
        name, token = children
        if token.type == "STRING":
            return str(name), json.loads(token)
        if token.type == "BOOL":
            return str(name), token == "true"
        return str(name), int(token)

    def results(self, children: list) -> list[Var]:
        return children

    def types(self, children: list) -> list[Type]:
        return children

    def result_types(self, children: list) -> list[Type]:
        return children

    @v_args(meta=True)
    def for_instr(self, meta: Any, children: list) -> nodes.For:
        names, var, var_type, start, stop, step, items, unroll, stages, types, loc, body = children
        names = names or []
        carried = tuple(c for c, _ in items or () if c is not None)
        inits = tuple(i for _, i in items or () if i is not None)
        if types is None:
            types = [c.type for c in carried]
            if len(names) != len(types):
                message = (
                    f"{len(names)} result(s) but {len(types)} loop-carried value(s); "
                    "give the result types as '-> (TYPES)'"
                )
                raise self.fail(meta, message)
        elif len(names) != len(types):
            raise self.fail(meta, f"{len(names)} result(s) but {len(types)} type(s)")
        return nodes.For(
            Var(var.name, var_type or LOOP_VAR_TYPE),
            start,
            stop,
            step,
            inits,
            carried,
            body,
            tuple(Var(v.name, t) for v, t in zip(names, types, strict=True)),
            unroll,
            stages,
            loc=loc or NOWHERE,
        )

    def iter(self, children: list) -> list:
        return children

    def iter_item(self, children: list) -> tuple[Var | None, Value | None]:
        return children[0], children[1]

    def hole(self, children: list) -> None:
        return None

    def unroll(self, children: list) -> int:
        return int(children[0])

    def stages(self, children: list) -> int:
        return int(children[0])

    @v_args(meta=True)
    def if_instr(self, meta: Any, children: list) -> nodes.If:
        names, cond, types, loc, then_body, else_body = children
        names, types = names or [], types or []
        if len(names) != len(types):
            message = f"{len(names)} result(s) but {len(types)} type(s) in '-> (TYPES)'"
            raise self.fail(meta, message)
        results = tuple(Var(v.name, t) for v, t in zip(names, types, strict=True))
        return nodes.If(cond, then_body, else_body, results, loc=loc or NOWHERE)

    @v_args(meta=True)
    def scan_instr(self, meta: Any, children: list) -> nodes.AssociativeScan:
        names, values, axis, reverse, lhs, rhs, types, loc, body = children
        names, types = names or [], types or []
        if len(names) != len(types):
            message = f"{len(names)} result(s) but {len(types)} type(s) in '-> (TYPES)'"
            raise self.fail(meta, message)
        results = tuple(Var(v.name, t) for v, t in zip(names, types, strict=True))
        return nodes.AssociativeScan(
            results,
            values,
            int(axis),
            tuple(lhs),
            tuple(rhs),
            body,
            reverse is not None,
            loc=loc or NOWHERE,
        )

    def scan_reverse(self, children: list) -> bool:
        return True

    # -- operations --------------------------------------------------------------------

    def values(self, children: list) -> tuple[Value, ...]:
        return tuple(children)

    def ints(self, children: list) -> tuple[int, ...]:
        return tuple(int(t) for t in children)

    def __default__(self, data: Token, children: list, meta: Any) -> Any:
        """The node of an instruction (`i_<class>`) or of an optional part (`o_...`)."""
        if data.startswith("o_"):
            return children[0] if children else True  # a flag's part holds no slot
        syntax = _SYNTAX_BY_RULE.get(str(data))
        if syntax is None:
            return super().__default__(data, children, meta)
        values = [
            _slot_value(slot.kind, c) for slot, c in zip(syntax.slots(), children, strict=True)
        ]
        mnemonic = syntax.cls.MNEMONIC if syntax.cls.SYNTAX[0] != "{" else values[0]
        return _Op(mnemonic, syntax.result_count, _builder(syntax, values))

    # -- types -------------------------------------------------------------------------

    def scalar_type(self, children: list) -> ScalarType:
        return ScalarType(self.dtype_token(children[0]))

    def tile_type(self, children: list) -> TileType:
        name, shape, layout_tree = children
        layout = None
        if layout_tree is not None:
            try:
                layout = layout_from_tree(layout_tree)
            except LayoutError as err:
                line = getattr(err, "line", None) or layout_tree.meta.line
                column = getattr(err, "column", None) or layout_tree.meta.column
                raise _error(self.text, line, column, str(err)) from None
        return TileType(self.dtype_token(name), shape, layout)

    def shared_type(self, children: list) -> SharedType:
        name, shape, layout_token = children
        layout = None
        if layout_token is not None:
            try:
                layout = parse_shared_layout(str(layout_token).rstrip())
            except ValueError as err:
                raise self.fail(layout_token, str(err)) from None
        return SharedType(self.dtype_token(name), shape, layout)

    def tensor_type(self, children: list) -> TensorType:
        name, *dims = children
        return TensorType(self.dtype_token(name), tuple(dims))

    def s_lit(self, children: list) -> ShapeExpr:
        return Lit(int(children[0]))

    def s_sym(self, children: list) -> ShapeExpr:
        return Sym(str(children[0]))

    def s_add(self, children: list) -> ShapeExpr:
        return BinOp("+", *children)

    def s_sub(self, children: list) -> ShapeExpr:
        return BinOp("-", *children)

    def s_mul(self, children: list) -> ShapeExpr:
        return BinOp("*", *children)

    def s_floordiv(self, children: list) -> ShapeExpr:
        return BinOp("//", *children)

    def s_mod(self, children: list) -> ShapeExpr:
        return BinOp("%", *children)


# -- name resolution -------------------------------------------------------------------


class _Resolver:
    """Gives every use the Var of its definition: the latest one above, else any one."""

    def __init__(self, text: str, fn: Function) -> None:
        self.text = text
        self.fn = fn
        self.any_def: dict[str, Var] = {}
        for var in defined_vars(fn):
            self.any_def.setdefault(var.name, var)
        self.seen: dict[str, Var] = {}

    def function(self) -> Function:
        for var in (*self.fn.params, *self.fn.sizes):
            self.seen[var.name] = var
        return replace(self.fn, body=self.block(self.fn.body))

    def block(self, block: Block) -> Block:
        return Block(tuple(self.instr(instr) for instr in block.instrs))

    def instr(self, instr: Instr) -> Instr:
        resolved = instr.map_operands(self.value)
        if instr.BODIES:
            for var in body_params(instr):
                self.seen[var.name] = var
            bodies = {name: self.block(getattr(instr, name)) for name in instr.BODIES}
            resolved = replace(resolved, **bodies)
        for var in instr.defs():
            self.seen[var.name] = var
        return resolved

    def value(self, value: Value | None) -> Value | None:
        if not (isinstance(value, Var) and isinstance(value.type, _Pending)):
            return value
        found = self.seen.get(value.name) or self.any_def.get(value.name)
        if found is None:
            where = value.type
            message = f"%{value.name} is not defined anywhere in the function"
            raise _error(self.text, where.line, where.column, message)
        return found
