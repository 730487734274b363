"""Block IR: the instructions and control flow of one thread-block program.

The block IR speaks about whole tiles. It is in SSA form: every instruction defines new
`Var`s; a loop passes loop-carried values explicitly (`For.inits` enter as
`For.carried`, the body's final `Yield` gives the next values, `For.results` are the
values after the loop), and an `If` yields its results the same way. Every node is a
frozen dataclass and carries the `Loc` of the user's source that produced it.

Each instruction class names its operand fields (`OPERANDS`) and result fields
(`RESULTS`), so visitors and rewriters (`tilelang.ir.visit`) work on every instruction
without knowing it. The shapes and dtypes of results are in their `Var`s' types; the
verifier (`tilelang.ir.verify`) checks they agree with the operands.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

from tilelang.dtypes import DType
from tilelang.ir.types import Type


@dataclass(frozen=True)
class Loc:
    """A position in the user's source: file, 1-based line and 1-based column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Loc("<unknown>", 0, 0)


@dataclass(frozen=True)
class Var:
    """A named SSA value. Names are unique within a function."""

    name: str
    type: Type

    def __str__(self) -> str:
        return f"%{self.name}"


@dataclass(frozen=True, eq=False)
class Const:
    """A scalar immediate."""

    value: int | float
    dtype: DType

    def _key(self) -> tuple:
        # By text, so that -0.0 differs from 0.0 and NaN equals NaN.
        return (type(self.value), _number_text(self.value), self.dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Const) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{_number_text(self.value)}:{self.dtype}"


Value = Var | Const


def _number_text(value: int | float) -> str:
    if isinstance(value, float):
        return repr(value)  # 'inf', '-inf', 'nan', or the shortest round-tripping text
    return str(value)


@dataclass(frozen=True)
class Instr:
    """Base of every instruction; subclasses list their operand and result fields.

    `attrs` are the decisions passes record on an instruction (`vector=16` from
    vectorize, `offset=0` from plan_shared, ...): sorted (name, value) pairs of ints,
    bools and strings, printed as `{name=value, ...}`. They never change the meaning.
    """

    attrs: tuple[tuple[str, int | bool | str], ...] = field(default=(), kw_only=True)
    OPERANDS: ClassVar[tuple[str, ...]] = ()
    RESULTS: ClassVar[tuple[str, ...]] = ()
    BODIES: ClassVar[tuple[str, ...]] = ()

    def uses(self) -> tuple[Value, ...]:
        return _flatten(self, self.OPERANDS)

    def defs(self) -> tuple[Var, ...]:
        return _flatten(self, self.RESULTS)

    def bodies(self) -> tuple[Block, ...]:
        return tuple(getattr(self, name) for name in self.BODIES)

    def attr(self, name: str, default: int | bool | str | None = None) -> int | bool | str | None:
        return dict(self.attrs).get(name, default)

    def with_attrs(self, **values: int | bool | str) -> Instr:
        """A copy with the attributes `values` set (replacing earlier values)."""
        merged = dict(self.attrs) | values
        return replace(self, attrs=tuple(sorted(merged.items())))

    def map_operands(self, fn) -> Instr:
        """A copy with every operand replaced by `fn(operand)`."""
        changes = {}
        for name in self.OPERANDS:
            current = getattr(self, name)
            changes[name] = (
                tuple(fn(v) for v in current) if isinstance(current, tuple) else fn(current)
            )
        return replace(self, **changes)


def _flatten(instr: Instr, names: tuple[str, ...]) -> tuple:
    values: list = []
    for name in names:
        current = getattr(instr, name)
        if isinstance(current, tuple):
            values.extend(current)
        elif current is not None:
            values.append(current)
    return tuple(values)


# --- creation -------------------------------------------------------------------------


@dataclass(frozen=True)
class Blocks(Instr):
    """Declares the grid: `results[i]` is this block's index along grid dimension i."""

    results: tuple[Var, ...]
    sizes: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("sizes",)
    RESULTS: ClassVar = ("results",)


@dataclass(frozen=True)
class Full(Instr):
    """A tile (or scalar) whose every element is `value`, converted to the result dtype."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Arange(Instr):
    """A 1-D tile `[start, start + 1, ...]` of the result's length and dtype."""

    result: Var
    start: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class SharedAlloc(Instr):
    result: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    RESULTS: ClassVar = ("result",)


# --- data movement --------------------------------------------------------------------


@dataclass(frozen=True)
class Load(Instr):
    """Reads the box of the result's shape at `offsets` of a global tensor.

    Elements outside the tensor read `fill` (zero when absent): no access is made.
    """

    result: Var
    tensor: Var
    offsets: tuple[Value, ...]
    fill: Const | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "fill")
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Store(Instr):
    """Writes `value` into the box at `offsets`; elements outside the tensor are skipped."""

    tensor: Var
    offsets: tuple[Value, ...]
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("tensor", "offsets", "value")


@dataclass(frozen=True)
class CopyAsync(Instr):
    """Starts a copy of the box at `offsets` of a global tensor into a shared tile."""

    shared: Var
    tensor: Var
    offsets: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "tensor", "offsets")


@dataclass(frozen=True)
class AsyncCommit(Instr):
    """Closes the current group of asynchronous copies."""

    loc: Loc = field(default=NOWHERE, kw_only=True)


@dataclass(frozen=True)
class AsyncWait(Instr):
    """Waits until at most `pending` groups of asynchronous copies are in flight."""

    pending: int
    loc: Loc = field(default=NOWHERE, kw_only=True)


@dataclass(frozen=True)
class SharedSlice(Instr):
    """Sub-tile `index` (a runtime scalar) along the leading dim of a shared tile: the
    same memory, one rank less (the buffers of a multi-stage pipeline)."""

    result: Var
    shared: Var
    index: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "index")
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class SharedLoad(Instr):
    result: Var
    shared: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class SharedStore(Instr):
    shared: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("shared", "value")


@dataclass(frozen=True)
class Sync(Instr):
    """A barrier across the block's threads."""

    loc: Loc = field(default=NOWHERE, kw_only=True)


# --- computation ----------------------------------------------------------------------


@dataclass(frozen=True)
class Compute(Instr):
    """An elementwise operator of `tilelang.ir.ops.ELEMENTWISE`, with broadcasting."""

    result: Var
    op: str
    args: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("args",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Cast(Instr):
    """Converts values to the result dtype (RNE, saturating; DESIGN.md §3)."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class View(Instr):
    """Reinterprets the bits of a tile as another dtype and shape.

    With both layouts known, each thread's register bits are reinterpreted in place.
    Without layouts, the tile's row-major bit stream is reinterpreted: the last
    dimension scales by the ratio of the bit widths, the other dimensions stay.
    """

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Relayout(Instr):
    """The same tile in another register layout (data moves between threads)."""

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Dot(Instr):
    """`result = a @ b + acc` in the accumulator's dtype.

    The reference computes the sum exactly and rounds once; hardware accumulates in its
    own order, so float results agree within a tolerance that grows with K.
    """

    result: Var
    a: Var
    b: Var
    acc: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("a", "b", "acc")
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Reduce(Instr):
    """Reduces `axis` away with `op` (the result's rank is one less)."""

    result: Var
    value: Var
    op: str
    axis: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Scan(Instr):
    """Inclusive prefix `op` along `axis` (from the end when `reverse`)."""

    result: Var
    value: Var
    op: str
    axis: int
    reverse: bool = False
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Reshape(Instr):
    """Same elements in row-major order, another shape."""

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Transpose(Instr):
    result: Var
    value: Var
    perm: tuple[int, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Broadcast(Instr):
    """Repeats size-1 dimensions (numpy rules, same rank) to the result's shape."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)


@dataclass(frozen=True)
class Print(Instr):
    label: str
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)


# --- control flow ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    instrs: tuple[Instr, ...]


@dataclass(frozen=True)
class Yield(Instr):
    """Ends a loop or `if` body with the values it passes on."""

    values: tuple[Value, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("values",)


@dataclass(frozen=True)
class For(Instr):
    """`for var in range(start, stop, step)` with loop-carried values.

    `carried[i]` holds `inits[i]` on the first iteration and the body's i-th yielded
    value afterwards; `results[i]` is its value after the last iteration. `unroll` and
    `stages` (software pipelining depth) are scheduling hints, not semantics.
    """

    var: Var
    start: Value
    stop: Value
    step: Value
    inits: tuple[Value, ...]
    carried: tuple[Var, ...]
    body: Block
    results: tuple[Var, ...]
    unroll: int | None = None
    stages: int | None = None
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("start", "stop", "step", "inits")
    RESULTS: ClassVar = ("results",)
    BODIES: ClassVar = ("body",)


@dataclass(frozen=True)
class If(Instr):
    """Block-uniform branch; each body ends in a `Yield` of the results' new values."""

    cond: Value
    then_body: Block
    else_body: Block
    results: tuple[Var, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("cond",)
    RESULTS: ClassVar = ("results",)
    BODIES: ClassVar = ("then_body", "else_body")


# --- the function ---------------------------------------------------------------------

ConstexprValue = int | float | bool | str | DType


@dataclass(frozen=True)
class Function:
    """One kernel, specialized to its compile-time constants.

    `params` are the user's tensors and runtime scalars in declaration order; `sizes`
    are the size symbols of the tensors' shapes, bound at launch (scalar i32 values).
    `assume` holds specialization facts, `(size name, d)` pairs meaning "this size is a
    multiple of d" (d a power of two); the launch checks them (text: `assume(K % 16)`).
    """

    name: str
    params: tuple[Var, ...]
    sizes: tuple[Var, ...]
    body: Block
    warps: int
    constexprs: tuple[tuple[str, ConstexprValue], ...] = ()
    assume: tuple[tuple[str, int], ...] = ()
    loc: Loc = field(default=NOWHERE, kw_only=True)

    def __post_init__(self) -> None:
        sizes = {var.name for var in self.sizes}
        for name, divisor in self.assume:
            if name not in sizes:
                raise ValueError(f"assume({name} % {divisor}): {name} is not a size of the kernel")
            if not (isinstance(divisor, int) and 0 < divisor <= 1 << 16) or divisor & (divisor - 1):
                raise ValueError(
                    f"assume({name} % {divisor}): the divisor must be a power of two up to 65536"
                )


def instruction_classes() -> tuple[type[Instr], ...]:
    """Every concrete instruction class, for tools that dispatch on all of them."""
    return tuple(cls for cls in _all_subclasses(Instr) if fields(cls))


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found
