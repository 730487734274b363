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
    dead = _dead_names(body, fn.grid)
    if dead:
        body = _prune(body, dead)
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
    for name in _fields(type(e)):
        value = getattr(e, name)
        if isinstance(value, t.Expr):
            renamed = _rename_expr(value, renames)
            if renamed is not value:
                changes[name] = renamed
    return replace(e, **changes) if changes else e


def _rename_stmt(s: t.Stmt, renames: dict[str, t.Name]) -> t.Stmt:
    if not renames:
        return s
    skip = t.DEFINING_FIELDS.get(type(s).__name__)
    changes = {}
    for name in _fields(type(s)):
        value = getattr(s, name)
        if name != skip and isinstance(value, t.Expr):
            renamed = _rename_expr(value, renames)
            if renamed is not value:
                changes[name] = renamed
    return replace(s, **changes) if changes else s


#: The field names of each dataclass met (`dataclasses.fields` costs more than a walk).
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return found


def _share(
    body: tuple[t.Stmt, ...], available: dict[t.Expr, t.Name], renames: dict[str, t.Name]
) -> tuple[t.Stmt, ...]:
    available = dict(available)
    out: list[t.Stmt] = []
    for stmt in body:
        stmt = _rename_stmt(stmt, renames)
        if isinstance(stmt, t.Let) and not _has_read(stmt.value):
            # One lookup: hashing an expression walks all of it.
            earlier = available.setdefault(stmt.value, stmt.name)
            if earlier is not stmt.name:
                if earlier.type == stmt.name.type:
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


def _dead_names(body: tuple[t.Stmt, ...], grid: tuple[t.Expr, ...]) -> set[str]:
    """The names of the Lets to remove: those nothing reads but other removed Lets.

    What removing every unused Let, again and again until none is, removes; counted
    once (each Name read, by occurrence) and taken down as Lets go, instead of walking
    the whole function again after each round."""
    uses: dict[str, int] = {}
    for e in grid:
        _count_names(e, uses, 1)
    lets: dict[str, list[t.Let]] = {}
    for stmt in t.walk_stmts(body):
        for e in t.stmt_exprs(stmt):
            _count_names(e, uses, 1)
        if isinstance(stmt, t.Let):
            lets.setdefault(stmt.name.name, []).append(stmt)
    dead: set[str] = set()
    work = [name for name in lets if not uses.get(name)]
    while work:
        name = work.pop()
        if name in dead:
            continue
        dead.add(name)
        for let in lets[name]:
            for freed in _count_names(let.value, uses, -1):
                if freed in lets and freed not in dead:
                    work.append(freed)
    return dead


def _count_names(e: t.Expr, uses: dict[str, int], step: int) -> list[str]:
    """Adds `step` to the count of each Name read in `e` (per occurrence); returns the
    names whose count reached zero."""
    zeros = []
    for sub in t.walk_expr(e):
        if isinstance(sub, t.Name):
            count = uses[sub.name] = uses.get(sub.name, 0) + step
            if not count:
                zeros.append(sub.name)
    return zeros


def _prune(body: tuple[t.Stmt, ...], dead: set[str]) -> tuple[t.Stmt, ...]:
    """`body` without the Lets whose Name is in `dead`."""
    out: list[t.Stmt] = []
    for stmt in body:
        if isinstance(stmt, t.Let) and stmt.name.name in dead:
            continue
        if isinstance(stmt, t.For):
            stmt = replace(stmt, body=_prune(stmt.body, dead))
        elif isinstance(stmt, t.If):
            stmt = replace(
                stmt,
                then_body=_prune(stmt.then_body, dead),
                else_body=_prune(stmt.else_body, dead),
            )
        out.append(stmt)
    return tuple(out)
