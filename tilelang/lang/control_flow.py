"""How Python's control flow maps onto a kernel, for the frontend: the exceptions that
carry `return`, `break` and `continue` out of the statements the frontend runs, the
rewrite that turns an early `return` into a branch, and the names a loop or branch
assigns (its candidates for loop-carried values and branch results), and why a tile
cannot change shape across them."""

from __future__ import annotations

import ast

#: Iterations after which a compile-time `while` is taken to be endless.
STATIC_WHILE_LIMIT = 100_000


class _Return(Exception):
    def __init__(self, value: object):
        self.value = value


class _Break(Exception):
    """`break` in a loop the frontend unrolls (its condition known while compiling)."""


class _Continue(Exception):
    """`continue` in a loop the frontend unrolls."""


def assigned_names(body: list[ast.stmt]) -> list[str]:
    """Every name `body` assigns, in order of first assignment."""
    names: dict[str, None] = {}
    for stmt in body:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names[node.id] = None
    return list(names)


def early_exits(body: list[ast.stmt]) -> list[ast.stmt]:
    """A kernel's body with each `if c: ...; return` in it (Triton's `if pid >= n:
    return`) made into `if c: ... else: <the rest of the body>`: what follows runs only
    where the kernel did not leave, which a branch says without a jump."""
    for i, stmt in enumerate(body):
        exits = isinstance(stmt, ast.If) and stmt.body and isinstance(stmt.body[-1], ast.Return)
        if exits and stmt.body[-1].value is None:
            then = stmt.body[:-1] or [ast.copy_location(ast.Pass(), stmt.body[-1])]
            rest = stmt.orelse + early_exits(body[i + 1 :])
            return [*body[:i], ast.copy_location(ast.If(stmt.test, then, rest), stmt)]
    return body


def shape_change_message(name: str, what: str, expected: tuple, got: tuple) -> str:
    """Why a tile cannot change shape in a runtime loop or branch (no conversion helps):
    `expected` is its shape before the loop (on the branch's first path), `got` at the
    end of the loop's body (on the other path)."""
    if what == "loop":
        return (
            f"`{name}` changes shape in the loop: {list(expected)} before it, {list(got)} at "
            "the end of its body; a loop-carried tile must keep the same shape across "
            "iterations"
        )
    return (
        f"`{name}` has shape {list(expected)} on one path of the branch and {list(got)} on "
        "the other; a tile assigned under a runtime `if` must have one shape on both paths"
    )
