"""Pass `analyze`: divisibility of block-uniform integer scalars (index arithmetic).

Assumes a verified function (any stage; layouts are not needed). Computes, for every
block-uniform integer scalar `Var` — kernel scalars, sizes, block indices, loop
variables, loop-carried and `if` results, and scalar `Compute`/`Cast`/`Full` results —
its *divisor*: the largest power of two known to divide its value at run time, capped at
``2**16`` (and at ``2**bits`` for narrower types, whose values wrap). The divisor of a
value that is always 0 is the cap. Every rule is sound: the true largest power of two
dividing the value is never smaller than the divisor computed.

Rules (``d(x)`` is the divisor of x):

- an integer constant: its own largest power-of-two factor (the cap for 0);
- a size: the fact ``Function.assume`` gives for it (``assume(K % 16)``: 16), else 1;
  tensor dimensions that are expressions (``K // G``) use `shape_divisor`;
- kernel scalar parameters and block indices: 1 (``bm * 64`` still gets 64 from `mul`);
- ``for k = start to stop step s``: ``min(d(start), d(s))`` (k = start + i·s);
- loop-carried values: ``min`` of the init and the yielded value, iterated to a fixpoint;
  ``for`` results likewise; ``if`` results: ``min`` of the two yielded values;
- ``add``, ``sub``, ``min``, ``max``, ``or``, ``xor``, ``rem``, ``where``: the min of
  the operands' divisors (``a rem b = a - b·q``); ``neg``, ``abs``: d(a);
- ``mul``: d(a)·d(b); ``and``: max(d(a), d(b)); ``shl a, c``: d(a)·2^c for a
  constant c, d(a) otherwise; ``shr a, c``: d(a)/2^c when 2^c divides d(a), else 1;
- ``div a, c`` by a constant power of two c dividing d(a): d(a)/c (exact); any other
  ``div``: 1; comparisons and other operators: 1;
- ``cast`` to an integer type that holds every value of the source: unchanged (a
  saturating narrowing cast gives 1); ``full`` of a scalar: as a cast.

Guarantees: `analyze(fn)` returns the `Facts`; `run(fn)` returns `fn` with every
`Load`, `Store`, `Atomic` and `CopyAsync` annotated ``divisors="a,b,..."``: the
divisor of each offset, in offset order (so ``load %x[%mul, %k] {divisors="16,64"}``
reads rows at multiples of 16 and columns at multiples of 64). Nothing else changes.
Contiguity and constancy of tile-valued index computations are not analyzed (not needed
yet).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from tilelang.analysis.divisors import (
    CAP,
    exact_quotient,
    pow2_factor,
    shape_divisor,
    size_divisor,
)
from tilelang.dtypes import DType
from tilelang.ir.nodes import (
    Atomic,
    Block,
    Blocks,
    Cast,
    Compute,
    Const,
    CopyAsync,
    For,
    Full,
    Function,
    If,
    Instr,
    Load,
    Store,
    Value,
    Var,
    Yield,
)
from tilelang.ir.types import ScalarType
from tilelang.ir.visit import Rewriter
from tilelang.target import CPU, Target


def cap_for(dtype: DType) -> int:
    """The largest divisor a value of `dtype` can carry (it wraps at 2**bits)."""
    return min(CAP, 1 << dtype.bits)


class Facts(Mapping[Var, int]):
    """Divisors of the integer scalar Vars of one function: a read-only mapping.

    `divisor(value)` also answers for constants (their own factor) and for Vars the
    analysis does not know (1).
    """

    __slots__ = ("_divisors",)

    def __init__(self, divisors: Mapping[Var, int] | None = None) -> None:
        self._divisors = dict(divisors or {})

    def __getitem__(self, var: Var) -> int:
        return self._divisors[var]

    def __iter__(self) -> Iterator[Var]:
        return iter(self._divisors)

    def __len__(self) -> int:
        return len(self._divisors)

    def __repr__(self) -> str:
        items = ", ".join(f"%{var.name}: {d}" for var, d in self._divisors.items())
        return f"Facts({{{items}}})"

    def divisor(self, value: Value) -> int:
        return _divisor(value, self._divisors)


def _divisor(value: Value, known: Mapping[Var, int]) -> int:
    if isinstance(value, Const):
        if isinstance(value.value, int):  # bools are ints
            return pow2_factor(value.value, cap_for(value.dtype))
        return 1
    return known.get(value, 1)


def analyze(fn: Function) -> Facts:
    """The divisor of every block-uniform integer scalar Var of `fn`."""
    analysis = _Analysis(fn)
    analysis.block(fn.body.instrs)
    return Facts(analysis.div)


def run(fn: Function, target: Target = CPU) -> Function:
    """`fn` with `divisors="..."` on every Load, Store, Atomic and CopyAsync."""
    return _Annotate(analyze(fn)).rewrite_function(fn)


def offset_divisors(facts: Facts, offsets: tuple[Value, ...]) -> str:
    """The `divisors` attribute text: each offset's divisor, comma-separated."""
    return ",".join(str(facts.divisor(v)) for v in offsets)


# -- the analysis ------------------------------------------------------------------------


def _int_scalar(var: Var) -> bool:
    return isinstance(var.type, ScalarType) and var.type.dtype.is_int


class _Analysis:
    def __init__(self, fn: Function) -> None:
        self.div: dict[Var, int] = {}
        for var in fn.params:
            if _int_scalar(var):
                self.div[var] = 1
        for var in fn.sizes:
            if _int_scalar(var):
                self.set(var, size_divisor(fn, var.name))

    def get(self, value: Value) -> int:
        return _divisor(value, self.div)

    def set(self, var: Var, divisor: int) -> None:
        if _int_scalar(var):
            self.div[var] = max(1, min(divisor, cap_for(var.type.dtype)))

    def block(self, instrs: tuple[Instr, ...]) -> None:
        for instr in instrs:
            self.instr(instr)

    def instr(self, instr: Instr) -> None:
        if isinstance(instr, Blocks):
            for var in instr.results:
                self.set(var, 1)
        elif isinstance(instr, Compute) and _int_scalar(instr.result):
            self.set(instr.result, self.compute(instr.op, instr.args))
        elif isinstance(instr, Cast | Full) and _int_scalar(instr.result):
            self.set(instr.result, self.cast(instr.value, instr.result.type.dtype))
        elif isinstance(instr, For):
            self.for_loop(instr)
        elif isinstance(instr, If):
            self.block(instr.then_body.instrs)
            self.block(instr.else_body.instrs)
            then_values, else_values = _yielded(instr.then_body), _yielded(instr.else_body)
            for n, var in enumerate(instr.results):
                self.set(var, min(self._nth(then_values, n), self._nth(else_values, n)))

    def _nth(self, values: tuple[Value, ...], n: int) -> int:
        return self.get(values[n]) if n < len(values) else 1

    def for_loop(self, loop: For) -> None:
        self.set(loop.var, min(self.get(loop.start), self.get(loop.step)))
        carried = [self._nth(loop.inits, n) for n in range(len(loop.carried))]
        while True:  # divisors only shrink (powers of two >= 1): this terminates
            for var, divisor in zip(loop.carried, carried, strict=True):
                self.set(var, divisor)
            self.block(loop.body.instrs)
            yielded = _yielded(loop.body)
            new = [min(d, self._nth(yielded, n)) for n, d in enumerate(carried)]
            if new == carried:
                break
            carried = new
        for var, divisor in zip(loop.results, carried, strict=False):
            self.set(var, divisor)

    def cast(self, value: Value, target: DType) -> int:
        source = value.type.dtype if isinstance(value, Var) else value.dtype
        if not source.is_int or not target.is_int:
            return 1
        return self.get(value) if _holds(target, source) else 1

    def compute(self, op: str, args: tuple[Value, ...]) -> int:
        d = [self.get(a) for a in args]
        if op in ("add", "sub", "min", "max", "or", "xor", "rem") and len(d) == 2:
            return min(d)
        if op == "where" and len(d) == 3:
            return min(d[1], d[2])
        if op in ("neg", "abs") and len(d) == 1:
            return d[0]
        if op == "mul" and len(d) == 2:
            return min(d[0] * d[1], CAP)
        if op == "and" and len(d) == 2:
            return max(d)
        if op in ("shl", "shr", "div") and len(d) == 2:
            return self.shift_or_divide(op, args[1], d[0])
        return 1

    def shift_or_divide(self, op: str, rhs: Value, lhs_divisor: int) -> int:
        amount = rhs.value if isinstance(rhs, Const) and isinstance(rhs.value, int) else None
        if op == "shl":
            if amount is None or amount < 0:
                return lhs_divisor  # a·2^s, or 0: still a multiple of d(a)
            return CAP if amount >= 17 else min(lhs_divisor << amount, CAP)
        if amount is None or amount < 0:
            return 1
        if op == "shr":
            return exact_quotient(lhs_divisor, 1 << amount) if amount < 17 else 1
        return exact_quotient(lhs_divisor, amount)


def _holds(target: DType, source: DType) -> bool:
    """Whether every value of the integer type `source` is a value of `target`.

    A signed source may also go to an unsigned type at least as wide: negative values
    saturate to 0, which every power of two divides.
    """
    if target.signed == source.signed:
        return target.bits >= source.bits
    if target.signed:
        return target.bits > source.bits
    return target.bits >= source.bits


def _yielded(body: Block) -> tuple[Value, ...]:
    last = body.instrs[-1] if body.instrs else None
    return last.values if isinstance(last, Yield) else ()


# -- annotation --------------------------------------------------------------------------


class _Annotate(Rewriter):
    def __init__(self, facts: Facts) -> None:
        super().__init__()
        self.facts = facts

    def _mark(self, instr: Load | Store | Atomic | CopyAsync) -> Instr:
        new = self.generic(instr)
        return new.with_attrs(divisors=offset_divisors(self.facts, instr.offsets))

    visit_Load = _mark
    visit_Store = _mark
    visit_Atomic = _mark
    visit_CopyAsync = _mark


__all__ = [
    "CAP",
    "Facts",
    "analyze",
    "cap_for",
    "offset_divisors",
    "pow2_factor",
    "run",
    "shape_divisor",
    "size_divisor",
]
