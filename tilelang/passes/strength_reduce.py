"""strength_reduce: cheaper addresses in loops, with the same values.

Assumes a verified thread-IR function (after `thread_cleanup`). Guarantees the same
meaning, bit for bit: it only uses identities of wrapping integer arithmetic (a ring:
``(a + b)·k = a·k + b·k``, ``select(c, a, b)·k = select(c, a·k, b·k)``, a sum in any
order), never one that needs a value not to overflow. Two rewrites, both general:

**Product registers.** A one-element integer register a loop writes (a scalar it
carries: the stage a pipelined loop reads, and the stage it fills) that the loop only
ever multiplies by one constant k (``reg·k``: that stage's byte offset in shared
memory) gets a register of its own holding ``reg·k``, written wherever the register is,
from the written value with the product distributed over its additions and selects (the
stage's update ``select(s == S-1, 0, s + 1)`` gives ``select(s == S-1, 0, s·k + k)``, no
multiply); every ``reg·k`` reads it. NVVM folds a product into every address that uses
it (a multiply-add each, and a copy of the uniform value into a vector register); a
register read is an operand ldmatrix and shared accesses add for free. A register
multiplied by several constants is left alone: one product register each would cost
more updates per iteration than the folded products.

**Loop-invariant terms of global offsets.** The lowering writes a global access's byte
offset as a sum of terms (`tilelang.lowering.memory.place`: per dim, the box offset,
this thread's part of the tile index, the local's constant). For each global access
(load, store, asynchronous copy, atomic) inside a loop, the terms that use no name the
loop defines and no register it writes are summed into a name bound just before the loop
(one per distinct sum), and the offset becomes that name, plus the terms that vary, plus
the constant (last, where an emitter folds it into the access's immediate). NVVM, given
``(invariant + varying)·2``, re-associates the sum and recomputes the whole 64-bit offset
every iteration; with the invariant part bound before the loop, an address is one
32×32→64-bit multiply-add or 64-bit add. An inner loop's accesses are its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields, replace

from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir.ops import evaluate_int
from tilelang.passes import thread_cleanup
from tilelang.target import CPU, Target

#: Statements that address global memory through an i64 byte `offset`.
ACCESSES = (
    t.GlobalLoad,
    t.GlobalStore,
    t.CpAsync,
    t.Atomic,
    t.AtomicMerge,
    t.AtomicFetchAdd,
)

#: Statements that write register bytes through a `Reg`, and the field naming it.
RAW_WRITES = {
    "Move": "dst",
    "GlobalLoad": "dst",
    "SharedLoad": "dst",
    "AtomicFetchAdd": "dst",
    "Atomic": "dst",  # None where nothing comes back
    "Ldmatrix": "dst",
    "Mma": "d",
    "Wgmma": "d",
}


def run(fn: t.ThreadFunction, target: Target = CPU) -> t.ThreadFunction:
    taken = {p.name for p in fn.params} | {loc.name for loc in fn.locals}
    taken |= {d.name for s in t.walk_stmts(fn.body) if (d := t.defined_name(s)) is not None}
    fresh = _Fresh(taken)
    fn = _product_registers(fn, fresh)
    fn = replace(fn, body=_hoist(fn.body, fresh))
    return thread_cleanup.run(fn, target)  # drops what became unused


class _Fresh:
    """Names that clash with nothing in the function."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.counter = 0

    def __call__(self, hint: str) -> str:
        while True:
            self.counter += 1
            name = f"{hint}_{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name


# -- rebuilding ----------------------------------------------------------------------------


def _map_expr(e: t.Expr, fn: Callable[[t.Expr], t.Expr | None]) -> t.Expr:
    """`e` rebuilt bottom-up, each node replaced by ``fn(node)`` where that is not None."""
    changes = {}
    for f in fields(e):
        value = getattr(e, f.name)
        if isinstance(value, t.Expr):
            new = _map_expr(value, fn)
            if new is not value:
                changes[f.name] = new
    rebuilt = replace(e, **changes) if changes else e
    found = fn(rebuilt)
    return rebuilt if found is None else found


def _map_stmt(s: t.Stmt, fn: Callable[[t.Expr], t.Expr | None]) -> t.Stmt:
    """`s` with `_map_expr` applied to the expressions it evaluates (not nested bodies)."""
    skip = t.DEFINING_FIELDS.get(type(s).__name__)
    changes = {}
    for f in fields(s):
        value = getattr(s, f.name)
        if f.name != skip and isinstance(value, t.Expr):
            new = _map_expr(value, fn)
            if new is not value:
                changes[f.name] = new
    return replace(s, **changes) if changes else s


def _with_bodies(stmt: t.Stmt, transform) -> t.Stmt:
    if isinstance(stmt, t.For):
        return replace(stmt, body=transform(stmt.body))
    if isinstance(stmt, t.If):
        return replace(
            stmt, then_body=transform(stmt.then_body), else_body=transform(stmt.else_body)
        )
    return stmt


def _wrap(value: int, dtype: DType) -> int:
    found = evaluate_int("add", value, 0, dtype)
    assert found is not None
    return int(found)


# -- product registers ---------------------------------------------------------------------


def _product_registers(fn: t.ThreadFunction, fresh: _Fresh) -> t.ThreadFunction:
    raw = {
        reg.local
        for s in t.walk_stmts(fn.body)
        if type(s).__name__ in RAW_WRITES
        and (reg := getattr(s, RAW_WRITES[type(s).__name__])) is not None
    }
    scalars = {
        loc.name: loc.dtype
        for loc in fn.locals
        if loc.count == 1 and loc.dtype.is_int and loc.name not in raw
    }
    factors: dict[str, set[int]] = {}
    for loop in (s for s in t.walk_stmts(fn.body) if isinstance(s, t.For)):
        written = {s.local for s in t.walk_stmts(loop.body) if isinstance(s, t.SetLocal)}
        for e in _exprs(loop.body):
            found = _product(e)
            if found is not None and found[0] in written and found[0] in scalars:
                factors.setdefault(found[0], set()).add(found[1])
    chosen = {local: ks.pop() for local, ks in factors.items() if len(ks) == 1}
    if not chosen:
        return fn
    products = {local: fresh(f"{local}_x{k}") for local, k in chosen.items()}
    new = tuple(t.Local(products[local], scalars[local], 1) for local in chosen)
    body = _Products(chosen, products, fresh).body(fn.body)
    return replace(fn, locals=fn.locals + new, body=body)


def _exprs(body: tuple[t.Stmt, ...]) -> Iterator[t.Expr]:
    """Every expression (and sub-expression) the statements of `body` evaluate."""
    for stmt in t.walk_stmts(body):
        for e in t.stmt_exprs(stmt):
            yield from t.walk_expr(e)


def _product(e: t.Expr) -> tuple[str, int] | None:
    """(local, k) when `e` is ``Read(local, 0)·k`` (or ``<< log2 k``), k a constant."""
    if not isinstance(e, t.Binary) or e.op not in ("mul", "shl"):
        return None
    a, b = (e.b, e.a) if e.op == "mul" and isinstance(e.a, t.Imm) else (e.a, e.b)
    if not (isinstance(a, t.Read) and a.index == 0 and isinstance(b, t.Imm)):
        return None
    k = int(b.value)
    if e.op == "shl":
        if not 0 <= k < a.dtype.bits:
            return None
        k = 1 << k
    k = _wrap(k, a.dtype)
    return (a.local, k) if k not in (0, 1) else None


class _Products:
    """Writes the product registers with their registers and reads them (see the module
    docstring): the invariant ``product == register·k`` holds at every point."""

    def __init__(self, chosen: dict[str, int], products: dict[str, str], fresh: _Fresh) -> None:
        self.chosen = chosen
        self.products = products
        self.fresh = fresh
        self.bound: dict[str, t.Name] = {}  # a name a register is written from -> its product

    def body(self, body: tuple[t.Stmt, ...]) -> tuple[t.Stmt, ...]:
        sources = {
            s.value.name: self.chosen[s.local]
            for s in t.walk_stmts(body)
            if isinstance(s, t.SetLocal) and s.local in self.chosen and isinstance(s.value, t.Name)
        }
        out: list[t.Stmt] = []
        for stmt in body:
            if isinstance(stmt, t.SetLocal) and stmt.local in self.chosen:
                # both values first (each may read either register), then both writes
                value = self.settled(_map_expr(stmt.value, self.read), out)
                product = self.settled(self.times(stmt.value, self.chosen[stmt.local]), out)
                out.append(t.SetLocal(self.products[stmt.local], 0, product))
                out.append(replace(stmt, value=value))
                continue
            out.append(_map_stmt(_with_bodies(stmt, self.body), self.read))
            if isinstance(stmt, t.Let) and stmt.name.name in sources:
                # the product of a value a register is written from, where it is computed
                k = sources[stmt.name.name]
                name = t.Name(self.fresh(f"{stmt.name.name}_x{k}"), stmt.name.type)
                out.append(t.Let(name, self.times(stmt.value, k)))
                self.bound[stmt.name.name] = name
        return tuple(out)

    def settled(self, value: t.Expr, out: list[t.Stmt]) -> t.Expr:
        """`value`, bound to a name unless it is one already (or a constant)."""
        if isinstance(value, t.Imm | t.Name):
            return value
        name = t.Name(self.fresh("v"), value.dtype)
        out.append(t.Let(name, value))
        return name

    def read(self, e: t.Expr) -> t.Expr | None:
        found = _product(e)
        if found is None or self.chosen.get(found[0]) != found[1]:
            return None
        return t.Read(self.products[found[0]], 0, e.dtype)

    def times(self, e: t.Expr, k: int) -> t.Expr:
        """``e·k``, distributed over additions, subtractions and selects, reading the
        products of registers and of names that have one."""
        dtype = e.dtype
        if isinstance(e, t.Imm):
            return t.Imm(_wrap(int(e.value) * k, dtype), dtype)
        if isinstance(e, t.Read) and e.index == 0 and self.chosen.get(e.local) == k:
            return t.Read(self.products[e.local], 0, dtype)
        if isinstance(e, t.Name) and e.name in self.bound:
            return self.bound[e.name]
        if isinstance(e, t.Binary) and e.op in ("add", "sub"):
            return t.Binary(e.op, self.times(e.a, k), self.times(e.b, k))
        if isinstance(e, t.Select):
            cond = _map_expr(e.cond, self.read)
            return t.Select(cond, self.times(e.a, k), self.times(e.b, k))
        return t.Binary("mul", _map_expr(e, self.read), t.Imm(k, dtype))


# -- loop-invariant terms of global offsets ------------------------------------------------


def _hoist(body: tuple[t.Stmt, ...], fresh: _Fresh) -> tuple[t.Stmt, ...]:
    out: list[t.Stmt] = []
    for stmt in body:
        stmt = _with_bodies(stmt, lambda inner: _hoist(inner, fresh))
        if isinstance(stmt, t.For):
            hoisted, stmt = _Loop(stmt, fresh).run()
            out.extend(hoisted)
        out.append(stmt)
    return tuple(out)


class _Loop:
    """One loop: what it defines and writes, and the sums hoisted before it."""

    def __init__(self, loop: t.For, fresh: _Fresh) -> None:
        self.loop = loop
        self.fresh = fresh
        self.lets: dict[str, t.Expr] = {}  # the loop's own names bound by `Let`
        self.varying: set[str] = {loop.var.name}  # its other names (inner loops', shuffles')
        self.written: set[str] = set()  # the registers it writes
        for stmt in t.walk_stmts(loop.body):
            defined = t.defined_name(stmt)
            if isinstance(stmt, t.Let):
                self.lets[stmt.name.name] = stmt.value
            elif defined is not None:
                self.varying.add(defined.name)
            if isinstance(stmt, t.SetLocal):
                self.written.add(stmt.local)
            elif type(stmt).__name__ in RAW_WRITES:
                reg = getattr(stmt, RAW_WRITES[type(stmt).__name__])
                if reg is not None:
                    self.written.add(reg.local)
        self.known: dict[str, bool] = {}  # names found invariant (or not)
        self.hoisted: list[t.Let] = []
        self.bound: dict[t.Expr, t.Name] = {}

    def run(self) -> tuple[list[t.Let], t.For]:
        return self.hoisted, replace(self.loop, body=self.body(self.loop.body))

    def body(self, body: tuple[t.Stmt, ...]) -> tuple[t.Stmt, ...]:
        out = []
        for stmt in body:
            if not isinstance(stmt, t.For):  # an inner loop hoisted its own terms
                stmt = _with_bodies(stmt, self.body)
                if isinstance(stmt, ACCESSES):
                    stmt = replace(stmt, offset=self.offset(stmt.offset))
            out.append(stmt)
        return tuple(out)

    def offset(self, offset: t.Expr) -> t.Expr:
        """`offset` as (the invariant terms, bound before the loop) + the varying terms
        + the constant; as it is when no term is invariant."""
        constant, invariant, varying = 0, [], []
        for term in self.terms(offset):
            if isinstance(term, t.Imm):
                constant += int(term.value)
            elif self.invariant(term):
                invariant.append(self.closed(term))
            else:
                varying.append(term)
        if not invariant:
            return offset
        result = self.bind(_sum(invariant))
        for term in varying:
            result = t.Binary("add", result, term)
        if constant:
            wrapped = evaluate_int("add", constant, 0, offset.dtype)
            result = t.Binary("add", result, t.Imm(wrapped, offset.dtype))
        return result

    def terms(self, e: t.Expr) -> list[t.Expr]:
        """The addends of `e`, through the loop's own names."""
        if isinstance(e, t.Name) and e.name in self.lets:
            return self.terms(self.lets[e.name])
        if isinstance(e, t.Binary) and e.op == "add":
            return self.terms(e.a) + self.terms(e.b)
        return [e]

    def invariant(self, e: t.Expr) -> bool:
        """Whether `e` has the same value in every iteration: it reads no register the
        loop writes and no name the loop defines but by a `Let` of such a value."""
        for sub in t.walk_expr(e):
            if isinstance(sub, t.Read) and sub.local in self.written:
                return False
            if isinstance(sub, t.Name) and not self.invariant_name(sub.name):
                return False
        return True

    def invariant_name(self, name: str) -> bool:
        if name not in self.known:
            self.known[name] = name not in self.varying and (
                name not in self.lets or self.invariant(self.lets[name])
            )
        return self.known[name]

    def closed(self, e: t.Expr) -> t.Expr:
        """`e` with the loop's own names replaced by their values (it moves out)."""

        def value(sub: t.Expr) -> t.Expr | None:
            if isinstance(sub, t.Name) and sub.name in self.lets:
                return self.closed(self.lets[sub.name])
            return None

        return _map_expr(e, value)

    def bind(self, value: t.Expr) -> t.Expr:
        if isinstance(value, t.Name):
            return value
        if value not in self.bound:
            name = t.Name(self.fresh("base"), value.dtype)
            self.hoisted.append(t.Let(name, value))
            self.bound[value] = name
        return self.bound[value]


def _sum(terms: list[t.Expr]) -> t.Expr:
    total = terms[0]
    for term in terms[1:]:
        total = t.Binary("add", total, term)
    return total


__all__ = ["ACCESSES", "run"]
