"""thread_cleanup: common subexpressions and dead scalars of thread IR.

Assumes a verified thread-IR function. Guarantees the same meaning with

* every `Let` whose value an earlier `Let` in scope already computes replaced by that
  Name (index arithmetic the lowering repeats per element collapses to one value);
* every `Let` whose Name nothing uses removed (repeatedly, so chains vanish).

`Read`s of registers are never shared: a register may change between two reads.
"""

from __future__ import annotations

from dataclasses import fields, replace

from tilelang.ir import thread as t
from tilelang.target import CPU, Target


def run(fn: t.ThreadFunction, target: Target = CPU) -> t.ThreadFunction:
    body = _share(fn.body, {}, {})
    while True:
        used = _used_names(body, fn.grid)
        removed: list[str] = []
        body = _prune(body, used, removed)
        if not removed:
            break
    return replace(fn, body=body)


def _has_read(e: t.Expr) -> bool:
    return any(isinstance(sub, t.Read) for sub in t.walk_expr(e))


def _rename_expr(e: t.Expr, renames: dict[str, t.Name]) -> t.Expr:
    """`e` with renamed Names: the same object where nothing in it is renamed (most
    expressions: rebuilding them all cost more than the rest of the pass)."""
    if isinstance(e, t.Name):
        return renames.get(e.name, e)
    if not e.children():
        return e
    changes = {}
    for f in fields(e):
        value = getattr(e, f.name)
        if isinstance(value, t.Expr):
            renamed = _rename_expr(value, renames)
            if renamed is not value:
                changes[f.name] = renamed
    return replace(e, **changes) if changes else e


def _rename_stmt(s: t.Stmt, renames: dict[str, t.Name]) -> t.Stmt:
    if not renames:
        return s
    skip = t.DEFINING_FIELDS.get(type(s).__name__)
    changes = {}
    for f in fields(s):
        value = getattr(s, f.name)
        if f.name != skip and isinstance(value, t.Expr):
            renamed = _rename_expr(value, renames)
            if renamed is not value:
                changes[f.name] = renamed
    return replace(s, **changes) if changes else s


def _share(
    body: tuple[t.Stmt, ...], available: dict[t.Expr, t.Name], renames: dict[str, t.Name]
) -> tuple[t.Stmt, ...]:
    available = dict(available)
    out: list[t.Stmt] = []
    for stmt in body:
        stmt = _rename_stmt(stmt, renames)
        if isinstance(stmt, t.Let) and not _has_read(stmt.value):
            earlier = available.get(stmt.value)
            if earlier is not None and earlier.type == stmt.name.type:
                renames[stmt.name.name] = earlier
                continue
            available[stmt.value] = stmt.name
        if isinstance(stmt, t.For):
            stmt = replace(stmt, body=_share(stmt.body, available, renames))
        elif isinstance(stmt, t.If):
            stmt = replace(
                stmt,
                then_body=_share(stmt.then_body, available, renames),
                else_body=_share(stmt.else_body, available, renames),
            )
        out.append(stmt)
    return tuple(out)


def _used_names(body: tuple[t.Stmt, ...], grid: tuple[t.Expr, ...]) -> set[str]:
    used: set[str] = set()
    for e in grid:
        used.update(sub.name for sub in t.walk_expr(e) if isinstance(sub, t.Name))
    for stmt in t.walk_stmts(body):
        for e in t.stmt_exprs(stmt):
            used.update(sub.name for sub in t.walk_expr(e) if isinstance(sub, t.Name))
    return used


def _prune(body: tuple[t.Stmt, ...], used: set[str], removed: list[str]) -> tuple[t.Stmt, ...]:
    """`body` without the Lets whose Name is not in `used` (their names appended to
    `removed`, so the caller knows without comparing trees whether to go again)."""
    out: list[t.Stmt] = []
    for stmt in body:
        if isinstance(stmt, t.Let) and stmt.name.name not in used:
            removed.append(stmt.name.name)
            continue
        if isinstance(stmt, t.For):
            stmt = replace(stmt, body=_prune(stmt.body, used, removed))
        elif isinstance(stmt, t.If):
            stmt = replace(
                stmt,
                then_body=_prune(stmt.then_body, used, removed),
                else_body=_prune(stmt.else_body, used, removed),
            )
        out.append(stmt)
    return tuple(out)
