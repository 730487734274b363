"""The skeleton of the block IR: values, the instruction base class, blocks, functions,
and the registry of instruction classes.

The block IR speaks about whole tiles. It is in SSA form: every instruction defines new
`Var`s; a loop passes loop-carried values explicitly (`For.inits` enter as
`For.carried`, the body's final `Yield` gives the next values, `For.results` are the
values after the loop), and an `If` yields its results the same way. Every node is a
frozen dataclass and carries the `Loc` of the user's source that produced it.

One place defines each instruction: its class (in `tilelang.ir.instructions`) says

- what it is: its fields, with `OPERANDS` (the fields holding values it reads),
  `RESULTS` (the fields holding the `Var`s it defines), `BODIES`, `PARAMS` (the fields
  holding the `Var`s it defines at the entry of its bodies), and `WRITES` (the
  operand fields holding the global tensors it writes: what a launch treats as its
  outputs, and what orders the lowering's accesses);
- how it reads as text: `SYNTAX`, a template the printer writes and from which the
  parser's grammar is derived (`tilelang.ir.syntax`);
- when it is well formed: its `check` method (`tilelang.ir.checks`);
- which layout rule `infer_layouts` applies to it: `LAYOUT`, a rule name;
- what it means and how it becomes per-thread code: registered against the class by the
  layers that own those concerns (`tilelang.runtime.interpreter.semantics`,
  `tilelang.lowering.lowers`), which find them by the instruction's class.

Defining a subclass of `Instr` registers it (`instruction_classes()`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from tilelang.dtypes import DType
from tilelang.ir.memo import remembered_hash, state_without_hash
from tilelang.ir.types import ScalarType, Type

if TYPE_CHECKING:
    from tilelang.ir.checks import Checker


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

    __hash__ = remembered_hash("name", "type")  # the generated hash, once
    __getstate__ = state_without_hash

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


_REGISTRY: list[type[Instr]] = []


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
    #: The fields holding the Vars defined at the entry of the bodies (a `For`'s loop
    #: variable and carried values, an `associative_scan`'s combine arguments).
    PARAMS: ClassVar[tuple[str, ...]] = ()
    #: The operand fields holding the global tensors the instruction writes.
    WRITES: ClassVar[tuple[str, ...]] = ()
    #: The text after `results =`: literal text, `{field}` slots and `<...>` optional
    #: parts (see `tilelang.ir.syntax`). None for `For`, `If` and `AssociativeScan`,
    #: whose headers and bodies the printer and parser spell themselves.
    SYNTAX: ClassVar[str | None] = None
    #: The instruction's keyword: the first word of `SYNTAX` unless set.
    MNEMONIC: ClassVar[str] = ""
    #: The `infer_layouts` rule for its tiles (the pass's module docstring lists them).
    LAYOUT: ClassVar[str] = "none"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "MNEMONIC" not in cls.__dict__ and cls.SYNTAX is not None:
            first = cls.SYNTAX.split(" ", 1)[0]
            cls.MNEMONIC = "" if first.startswith("{") else first
        _REGISTRY.append(cls)

    @property
    def mnemonic(self) -> str:
        """The word that names this instruction in messages and text."""
        return self.MNEMONIC

    def check(self, v: Checker) -> None:
        """Raise through `v` when the operands, results or fields are ill-formed."""

    def uses(self) -> tuple[Value, ...]:
        return _flatten(self, self.OPERANDS)

    def defs(self) -> tuple[Var, ...]:
        return _flatten(self, self.RESULTS)

    def bodies(self) -> tuple[Block, ...]:
        return tuple(getattr(self, name) for name in self.BODIES)

    def params(self) -> tuple[Var, ...]:
        """The Vars defined at the entry of the bodies (`PARAMS`)."""
        return _flatten(self, self.PARAMS)

    def writes(self) -> tuple[Value, ...]:
        """The global tensors this instruction writes (not those of nested bodies)."""
        return _flatten(self, self.WRITES)

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


def instruction_classes() -> tuple[type[Instr], ...]:
    """Every instruction class, in the order they were defined."""
    return tuple(_REGISTRY)


def mnemonics() -> frozenset[str]:
    """Every keyword that starts an instruction's text (the words a name must not be
    spelled as bare); `compute`, whose text starts with its operator, has none."""
    return _mnemonics(len(_REGISTRY))


@functools.cache
def _mnemonics(count: int) -> frozenset[str]:
    # Keyed by the number of classes: recomputed only when a class was defined since.
    return frozenset(
        cls.MNEMONIC
        for cls in _REGISTRY[:count]
        if cls.MNEMONIC and not (cls.SYNTAX or "").startswith("{")
    )


F = TypeVar("F", bound=Callable)


class ByClass(Generic[F]):
    """What one layer associates with each instruction class (the interpreter its
    meaning, the lowering its thread IR): one function per class, found by the class."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._functions: dict[type[Instr], F] = {}

    def register(self, *classes: type[Instr]) -> Callable[[F], F]:
        """A decorator: the function is `what` of each of `classes`."""

        def register(fn: F) -> F:
            for cls in classes:
                if cls in self._functions:
                    raise ValueError(f"{cls.__name__} has two {self.what} functions")
                self._functions[cls] = fn
            return fn

        return register

    def get(self, cls: type[Instr]) -> F | None:
        return self._functions.get(cls)

    def __contains__(self, cls: object) -> bool:
        return cls in self._functions


@dataclass(frozen=True)
class Block:
    instrs: tuple[Instr, ...]


ConstexprValue = int | float | bool | str | DType

#: A tensor's value fact "no element is inf or NaN" (`Function.assume`).
FINITE = "finite"


@dataclass(frozen=True)
class Function:
    """One kernel, specialized to its compile-time constants.

    `params` are the user's tensors and runtime scalars in declaration order; `sizes`
    are the size symbols of the tensors' shapes, bound at launch (scalar i32 values).
    `assume` holds specialization facts, `(size name, d)` pairs meaning "this size is a
    multiple of d" (d a power of two; text: `assume(K % 16)`), `(tensor name, b)`
    pairs meaning "every element of this tensor is +0 or positive (sign bit clear) and
    below b" (b a power of two; text: `assume(0 <= s < 64)`,
    `tilelang.analysis.value_bounds`), and `(tensor name, FINITE)` meaning "no element
    of this tensor is inf or NaN" (text: `assume(finite(w))`); the launch checks them.
    """

    name: str
    params: tuple[Var, ...]
    sizes: tuple[Var, ...]
    body: Block
    warps: int
    constexprs: tuple[tuple[str, ConstexprValue], ...] = ()
    assume: tuple[tuple[str, int | str], ...] = ()
    loc: Loc = field(default=NOWHERE, kw_only=True)

    def __post_init__(self) -> None:
        sizes = {var.name for var in self.sizes}
        tensors = {var.name for var in self.params if not isinstance(var.type, ScalarType)}
        for name, divisor in self.assume:
            if name in tensors and divisor == FINITE:
                continue
            if name in tensors:
                if not (isinstance(divisor, int) and 0 < divisor <= 1 << 16) or divisor & (
                    divisor - 1
                ):
                    raise ValueError(
                        f"assume(0 <= {name} < {divisor}): the bound must be a power of two "
                        "up to 65536"
                    )
                continue
            if name not in sizes:
                raise ValueError(f"assume({name} % {divisor}): {name} is not a size of the kernel")
            if not (isinstance(divisor, int) and 0 < divisor <= 1 << 16) or divisor & (divisor - 1):
                raise ValueError(
                    f"assume({name} % {divisor}): the divisor must be a power of two up to 65536"
                )
