"""The text form of register layouts: reading it back.

`str(layout)` (`tilelang.ir.layout.format_layout`) writes a layout as its constructor
expression; `parse_layout` reads that back, and `LAYOUT_GRAMMAR` (rules prefixed
`layout_`) lets the block-IR grammar include layouts in tile types (`layout_from_tree`).
Errors are `LayoutSyntaxError`s with the line, column and a caret.

Text form grammar (``LAYOUT_GRAMMAR``, start rule ``layout_expr``)::

    layout_expr  := chain ("*" chain)*
    chain        := atom ("." method)*
    atom         := ctor | replicated | general | "(" layout_expr ")"
    method       := ctor | replicated
    ctor         := ("local" | "spatial" | "column_local" | "column_spatial") "(" [INT ("," INT)*] ")"
    replicated   := "replicated" "(" INT ["," "rank" "=" INT] ")"
    general      := "layout" "(" "shape" "=" ints "," "modes" "=" "[" [ints ("," ints)*] "]"
                    "," "threads" "=" "[" [(INT | "rep" "(" INT ")") ("," ...)*] "]"
                    "," "locals" "=" ints ")"
    ints         := "[" [INT ("," INT)*] "]"
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from tilelang.ir.layout import (
    Layout,
    LayoutError,
    Rep,
    ThreadMode,
    column_local,
    column_spatial,
    local,
    replicated,
    spatial,
)

__all__ = ["LAYOUT_GRAMMAR", "LayoutSyntaxError", "layout_from_tree", "parse_layout"]


def _ints(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)


class LayoutSyntaxError(LayoutError):
    """Malformed layout text; `line` and `column` (1-based) locate the problem."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column


# --------------------------------------------------------------------------- parsing

LAYOUT_GRAMMAR = r"""
layout_expr: layout_chain ("*" layout_chain)*
layout_chain: layout_atom ("." layout_method)*
?layout_atom: layout_ctor
            | layout_replicated
            | layout_general
            | "(" layout_expr ")"
?layout_method: layout_ctor
              | layout_replicated
layout_ctor: layout_ctor_name "(" [layout_sizes] ")"
!layout_ctor_name: "local" | "spatial" | "column_local" | "column_spatial"
layout_replicated: "replicated" "(" LAYOUT_INT ["," "rank" "=" LAYOUT_INT] ")"
layout_general: "layout" "(" "shape" "=" layout_int_list "," "modes" "=" layout_mode_lists "," "threads" "=" layout_thread_list "," "locals" "=" layout_int_list ")"
layout_sizes: (LAYOUT_INT ",")* LAYOUT_INT
layout_ints: LAYOUT_INT ("," LAYOUT_INT)*
layout_int_list: "[" [layout_ints] "]"
layout_mode_lists: "[" [layout_int_list ("," layout_int_list)*] "]"
layout_thread_list: "[" [layout_thread_mode ("," layout_thread_mode)*] "]"
?layout_thread_mode: LAYOUT_INT | layout_rep
layout_rep: "rep" "(" LAYOUT_INT ")"
LAYOUT_INT: /[0-9]+/
"""
"""The lark grammar of the layout text form; start rule `layout_expr`.

Rules are prefixed ``layout_`` and the one named terminal ``LAYOUT_INT`` so that the
block-IR grammar can include the string; the including grammar must ignore whitespace.
Build the value of a parsed ``layout_expr`` subtree with `layout_from_tree`.
"""


@functools.cache
def _parser() -> Lark:
    grammar = LAYOUT_GRAMMAR + "\n%import common.WS\n%ignore WS\n"
    return Lark(
        grammar,
        start="layout_expr",
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
    )


def _position(node: Tree | Token) -> tuple[int | None, int | None]:
    if isinstance(node, Token):
        return node.line, node.column
    meta = node.meta
    return getattr(meta, "line", None), getattr(meta, "column", None)


def _syntax_error(node: Tree | Token, message: str) -> LayoutSyntaxError:
    line, column = _position(node)
    where = f" at column {column}" if column is not None else ""
    return LayoutSyntaxError(f"invalid layout{where}: {message}", line=line, column=column)


def _present(children: Iterable[object]) -> list:
    return [c for c in children if c is not None]


def _int_values(node: Tree | None) -> list[int]:
    if node is None:
        return []
    if node.data == "layout_int_list":
        return _int_values(node.children[0])
    return [int(tok) for tok in node.children]


def _checked(node: Tree, build) -> Layout:  # type: ignore[no-untyped-def]
    try:
        return build()
    except LayoutSyntaxError:
        raise
    except LayoutError as err:
        raise _syntax_error(node, str(err)) from None


def _build_atom(node: Tree, rank: int | None) -> Layout:
    """A constructor call; `rank` is the receiver's rank for a method, None at the start."""
    if node.data == "layout_ctor":
        name = str(node.children[0].children[0])
        sizes = _int_values(node.children[1])
        if rank is not None and len(sizes) != rank:
            raise _syntax_error(
                node, f".{name}({_ints(sizes)}) has rank {len(sizes)}, its receiver rank {rank}"
            )
        return _checked(node, lambda: _CONSTRUCTORS[name](*sizes))
    if node.data == "layout_replicated":
        n, given = (int(tok) if tok is not None else None for tok in node.children)
        if rank is not None and given is not None and given != rank:
            raise _syntax_error(
                node, f".replicated(...) says rank={given}, its receiver has rank {rank}"
            )
        final_rank = rank if rank is not None else (given if given is not None else 1)
        return _checked(node, lambda: replicated(n, rank=final_rank))  # type: ignore[arg-type]
    if node.data == "layout_general":
        return _build_general(node)
    return layout_from_tree(node)  # a parenthesized layout_expr


def _build_general(node: Tree) -> Layout:
    shape_node, modes_node, threads_node, locals_node = node.children
    mode_shape = [tuple(_int_values(m)) for m in _present(modes_node.children)]
    threads: list[ThreadMode] = []
    for item in _present(threads_node.children):
        threads.append(Rep(int(item.children[0])) if isinstance(item, Tree) else int(item))
    return _checked(
        node,
        lambda: Layout(
            shape=tuple(_int_values(shape_node)),
            mode_shape=tuple(mode_shape),
            thread_modes=tuple(threads),
            local_modes=tuple(_int_values(locals_node)),
        ),
    )


def layout_from_tree(tree: Tree) -> Layout:
    """Build the Layout of a ``layout_expr`` parse tree (of `LAYOUT_GRAMMAR`).

    Semantic problems (rank mismatches, inconsistent general forms, zero sizes) raise
    `LayoutSyntaxError` carrying the line and column of the offending node.
    """
    if tree.data == "layout_expr":
        result = None
        for chain in tree.children:
            factor = layout_from_tree(chain)
            if result is not None and result.rank != factor.rank:
                raise _syntax_error(
                    chain, f"cannot compose rank {result.rank} with rank {factor.rank}"
                )
            result = factor if result is None else result * factor
        assert result is not None
        return result
    if tree.data == "layout_chain":
        head, *methods = tree.children
        result = _build_atom(head, None)
        for method in methods:
            result = result * _build_atom(method, result.rank)
        return result
    return _build_atom(tree, None)


def _describe_terminals(names: Iterable[str]) -> str:
    terminals = {t.name: t.pattern for t in _parser().terminals}
    shown = set()
    for name in names:
        pattern = terminals.get(name)
        if name == "LAYOUT_INT":
            shown.add("an integer")
        elif name == "$END":
            shown.add("end of input")
        elif pattern is not None and pattern.type == "str":
            shown.add(repr(pattern.value))
        else:
            shown.add(name)
    ordered = sorted(shown)
    return ordered[0] if len(ordered) == 1 else "one of " + ", ".join(ordered)


def _caret(text: str, column: int) -> str:
    return f"\n  {text}\n  {' ' * (column - 1)}^"


def parse_layout(text: str) -> Layout:
    """Parse the text form (`str(layout)`) back into a Layout.

    Malformed text raises `LayoutSyntaxError` saying what was expected at which column.
    """
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise _lark_error(text, err) from None
    try:
        return layout_from_tree(tree)
    except LayoutSyntaxError as err:
        column = err.column if err.column is not None else 1
        raise LayoutSyntaxError(
            f"{err}{_caret(text, column)}", line=err.line, column=column
        ) from None


def _lark_error(text: str, err: UnexpectedInput) -> LayoutSyntaxError:
    if isinstance(err, UnexpectedCharacters):
        column = err.column
        found = repr(re.match(r"\w+|\S", text[err.pos_in_stream :]).group())  # type: ignore[union-attr]
        expected = _describe_terminals(err.allowed)
    elif isinstance(err, UnexpectedToken):
        at_end = err.token.type == "$END"
        column = len(text) + 1 if at_end or err.column in (None, -1) else err.column
        found = "end of input" if at_end else repr(str(err.token))
        expected = _describe_terminals(err.expected)
    elif isinstance(err, UnexpectedEOF):
        column, found = len(text) + 1, "end of input"
        expected = _describe_terminals(err.expected)
    else:  # pragma: no cover - lark has no other UnexpectedInput subclasses
        column, found, expected = 1, "?", "?"
    if not text.strip():
        message = "empty layout text: expected a layout such as local(2, 2) or spatial(8, 4)"
        return LayoutSyntaxError(message, line=1, column=1)
    message = f"layout syntax error at column {column}: expected {expected}, found {found}"
    return LayoutSyntaxError(
        message + _caret(text, column), line=getattr(err, "line", None), column=column
    )


_CONSTRUCTORS = {
    "local": local,
    "spatial": spatial,
    "column_local": column_local,
    "column_spatial": column_spatial,
}
