"""Building thread IR: folded arithmetic, fresh names, locals and nested bodies.

The lowering writes thread IR through a `ThreadBuilder`: `b.add(x, y)` folds constants
and identities, so index arithmetic of compile-time parts stays small; `b.let(e)`
binds a value to a fresh `Name`; `with b.nested() as body:` collects a nested body
(of a `For` or `If`); `b.local(dtype, count)` declares registers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir.ops import evaluate_int

I32 = dtypes.i32
I64 = dtypes.i64
U32 = dtypes.u32


def imm(value: int | float, dtype: DType = I32) -> t.Imm:
    return t.Imm(value, dtype)


class ThreadBuilder:
    def __init__(self, taken: set[str]) -> None:
        self.taken = set(taken)
        self.counter = 0
        self.locals: list[t.Local] = []
        self.bodies: list[list[t.Stmt]] = [[]]
        self.nestings = 0  # bodies opened or closed so far: equal counts, straight-line code
        self.stats: dict[str, int] = {}

    # -- names and storage -------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        while True:
            self.counter += 1
            name = f"{hint}{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def local(self, dtype: DType, count: int, hint: str = "r") -> str:
        name = self.fresh(hint)
        self.locals.append(t.Local(name, dtype, count))
        return name

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    # -- statements --------------------------------------------------------------------

    def emit(self, stmt: t.Stmt) -> None:
        self.bodies[-1].append(stmt)

    @contextmanager
    def nested(self) -> Iterator[list[t.Stmt]]:
        body: list[t.Stmt] = []
        self.bodies.append(body)
        self.nestings += 1
        try:
            yield body
        finally:
            self.bodies.pop()
            self.nestings += 1

    def let(self, value: t.Expr, hint: str = "t") -> t.Expr:
        """`value` bound to a fresh Name (constants and names are returned as they are)."""
        if isinstance(value, t.Imm | t.Name | t.ThreadIndex | t.BlockIndex):
            return value
        name = t.Name(self.fresh(hint), value.dtype)
        self.emit(t.Let(name, value))
        return name

    # -- folded arithmetic -------------------------------------------------------------

    def binary(self, op: str, a: t.Expr, b: t.Expr) -> t.Expr:
        dtype = a.dtype  # once: a nested expression finds its dtype recursively
        if not dtype.is_int:
            return t.Binary(op, a, b)
        x = a.value if isinstance(a, t.Imm) else None
        y = b.value if isinstance(b, t.Imm) else None
        if x is not None and y is not None:
            folded = evaluate_int(op, int(x), int(y), dtype)
            if folded is not None:
                return t.Imm(folded, dtypes.u1 if op in t.COMPARE_OPS else dtype)
        if op in ("add", "sub", "or", "xor", "shl", "shr") and y == 0:
            return a
        if op in ("add", "or", "xor") and x == 0:
            return b
        if op == "mul":
            if y == 1:
                return a
            if x == 1:
                return b
            if x == 0 or y == 0:
                return t.Imm(0, dtype)
        if op == "div" and y == 1:
            return a
        if op == "rem" and y == 1:
            return t.Imm(0, dtype)
        return t.Binary(op, a, b)

    def add(self, a: t.Expr, b: t.Expr) -> t.Expr:
        return self.binary("add", a, b)

    def mul(self, a: t.Expr, b: t.Expr) -> t.Expr:
        return self.binary("mul", a, b)

    def cvt(self, a: t.Expr, dtype: DType) -> t.Expr:
        if a.dtype == dtype:
            return a
        if (
            isinstance(a, t.Imm)
            and a.dtype.is_int
            and dtype.is_int
            and dtype.min <= a.value <= dtype.max
        ):
            return imm(a.value, dtype)
        if isinstance(a, t.Imm) and a.dtype.is_int and dtype.is_float and abs(a.value) < 2**11:
            return imm(float(a.value), dtype)  # exact in every float register dtype
        return t.Cvt(a, dtype)

    def all_of(self, conds: list[t.Expr]) -> t.Expr | None:
        """The conjunction of u1 conditions (None when there are none)."""
        result: t.Expr | None = None
        for cond in conds:
            if isinstance(cond, t.Imm):
                if cond.value:
                    continue
                return imm(0, dtypes.u1)
            result = cond if result is None else t.Binary("and", result, cond)
        return result
