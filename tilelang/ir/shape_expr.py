"""Symbolic sizes of global tensors: integer expressions over named runtime sizes.

A tensor parameter annotated `Tensor[f16, "K // G", "N"]` has dimensions that are
expressions over *size symbols* (bound at launch from the arguments' shapes) and
compile-time constants (substituted when the kernel is specialized). This module owns
those expressions: a tiny frozen AST (`Sym`, `Lit`, `BinOp`), parsing from Python
expression text, substitution, evaluation and printing. Division and remainder are
Python's floor operations, since sizes are never negative.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass

_OPERATORS = {"+": 1, "-": 1, "*": 2, "//": 2, "%": 2}
_AST_OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Mod: "%"}


class ShapeExprError(ValueError):
    """A size expression that cannot be parsed or evaluated."""


@dataclass(frozen=True)
class Lit:
    value: int

    def __str__(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class Sym:
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class BinOp:
    op: str
    lhs: ShapeExpr
    rhs: ShapeExpr

    def __str__(self) -> str:
        return f"{_operand_text(self.lhs, self.op, False)} {self.op} {_operand_text(self.rhs, self.op, True)}"


ShapeExpr = Lit | Sym | BinOp


def _operand_text(expr: ShapeExpr, parent_op: str, is_rhs: bool) -> str:
    if not isinstance(expr, BinOp):
        return str(expr)
    child, parent = _OPERATORS[expr.op], _OPERATORS[parent_op]
    # Left-associative operators: a right operand of equal precedence needs parentheses.
    needs_parens = child < parent or (is_rhs and child == parent)
    return f"({expr})" if needs_parens else str(expr)


def parse_shape_expr(text: str | int) -> ShapeExpr:
    """Parse `"K // G"`, `"N"` or an int into a size expression."""
    if isinstance(text, int) and not isinstance(text, bool):
        return Lit(text)
    if not isinstance(text, str):
        raise ShapeExprError(f"a size must be an int or a string expression, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise ShapeExprError(f"size expression {text!r} is not valid: {error.msg}") from None
    return _from_ast(tree, text)


def _from_ast(node: ast.expr, text: str) -> ShapeExpr:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return Lit(node.value)
    if isinstance(node, ast.Name):
        return Sym(node.id)
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPERATORS:
        return BinOp(
            _AST_OPERATORS[type(node.op)], _from_ast(node.left, text), _from_ast(node.right, text)
        )
    raise ShapeExprError(
        f"size expression {text!r}: only names, integers and + - * // % are allowed, "
        f"found {ast.unparse(node)!r}"
    )


def symbols(expr: ShapeExpr) -> tuple[str, ...]:
    """The names used in `expr`, in order of first appearance."""
    if isinstance(expr, Sym):
        return (expr.name,)
    if isinstance(expr, BinOp):
        seen = dict.fromkeys(symbols(expr.lhs) + symbols(expr.rhs))
        return tuple(seen)
    return ()


def substitute(expr: ShapeExpr, values: Mapping[str, int]) -> ShapeExpr:
    """Replace the symbols named in `values` by literals and fold constants."""
    if isinstance(expr, Sym):
        return Lit(values[expr.name]) if expr.name in values else expr
    if isinstance(expr, BinOp):
        lhs, rhs = substitute(expr.lhs, values), substitute(expr.rhs, values)
        if isinstance(lhs, Lit) and isinstance(rhs, Lit):
            return Lit(_apply(expr.op, lhs.value, rhs.value, expr))
        return BinOp(expr.op, lhs, rhs)
    return expr


def evaluate(expr: ShapeExpr, values: Mapping[str, int]) -> int:
    """The integer value of `expr` with every symbol bound in `values`."""
    folded = substitute(expr, values)
    if not isinstance(folded, Lit):
        missing = ", ".join(name for name in symbols(folded) if name not in values)
        raise ShapeExprError(f"size expression {expr} needs a value for {missing}")
    return folded.value


def _apply(op: str, lhs: int, rhs: int, expr: ShapeExpr) -> int:
    if op in ("//", "%") and rhs == 0:
        raise ShapeExprError(f"size expression {expr} divides by zero")
    if op == "+":
        return lhs + rhs
    if op == "-":
        return lhs - rhs
    if op == "*":
        return lhs * rhs
    return lhs // rhs if op == "//" else lhs % rhs
