"""How Python's control flow maps onto a kernel, for the frontend: the exceptions that
carry `return`, `break` and `continue` out of the statements the frontend runs, which
`if` takes the rest of the function into its branches (an early `return`) and what a
`return` may not do, the names a loop or branch assigns (its candidates for
loop-carried values and branch results), and why a tile cannot change shape across
them."""

from __future__ import annotations

import ast

#: Iterations after which a compile-time `while` is taken to be endless.
STATIC_WHILE_LIMIT = 100_000


class _Return(Exception):
    """`return` where the function's path ends while compiling (compile-time conditions
    only, or a branch of an `if` that holds the rest of the function)."""

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


def may_leave(stmt: ast.stmt) -> bool:
    """Whether `stmt` holds a `return` (at any depth): an `if` that does, on the
    function's own path, takes the rest of the function into its branches."""
    return any(isinstance(node, ast.Return) for node in ast.walk(stmt))


#: Why a `return` under a runtime condition in a loop cannot compile, and what can.
RETURN_IN_LOOP_MESSAGE = (
    "`return` inside a runtime loop, or under a runtime `if` inside a loop, is not "
    "supported (every thread of a block runs the same iterations): a block may leave "
    "early from a runtime `if` outside loops (`if b >= n: return`, also from an `elif`, "
    "an `else` or a nested `if`), and from a loop that unrolls only under compile-time "
    "conditions"
)

#: Why a helper cannot return a value under a runtime condition, and what it can do.
RETURN_VALUE_MESSAGE = (
    "a @tl.func returns a value only under compile-time conditions; under a runtime "
    "`if`, assign the value in both branches (or use tl.where) and return it after the `if`"
)


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
