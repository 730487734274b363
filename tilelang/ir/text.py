"""How the small pieces of the block IR read as text: names, values, numbers, types and
source locations.

The printer, the parser's messages and the verifier's messages all spell values the
same way, so this module is the one place that decides it (the parser reads these
spellings back):

- values: `%name` (quoted, `%"a b"`, when the name has characters other than letters,
  digits, `_` and `.`); constants `value:dtype` (`15:i32`, `-0.0:f32`, `inf:f16`,
  `nan:f32`, `true:u1`) — a float always prints with `.`, `e`, `inf` or `nan`;
- types: `f16`, `tile<f16, [16, 64]>`, `tile<f16, [16, 8], LAYOUT>` (the layout's own
  text form), `shared<f16, [64, 64], SHARED_LAYOUT>`, `tensor<u4, [K // 2, N]>`;
- names (kernel, constexpr, operator) print bare when they are identifiers and not an
  instruction keyword, else as a JSON string; strings (file names, labels) are JSON
  strings, so any text survives.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Iterable

from tilelang.ir.core import NOWHERE, Const, Loc, Value, Var, mnemonics
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_NAME = re.compile(r"[A-Za-z0-9_.]+")


def quote(text: str) -> str:
    """A JSON string literal (ASCII only, so any text survives one line)."""
    return json.dumps(text, ensure_ascii=True)


def reserved_words() -> frozenset[str]:
    """Words a name must not be spelled as bare: they start instructions (`for` and
    `if` are mnemonics too)."""
    return mnemonics()


def print_name(name: str) -> str:
    """A kernel, constexpr or operator name: bare when it is a plain identifier."""
    if _IDENT.fullmatch(name) and name not in reserved_words():
        return name
    return quote(name)


def print_var(var: Var) -> str:
    name = var.name
    return f"%{name}" if _VAR_NAME.fullmatch(name) else f"%{quote(name)}"


def print_number(value: int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return repr(float(value))  # 'inf', '-inf', 'nan', or the shortest round-tripping digits


def print_value(value: Value) -> str:
    if isinstance(value, Var):
        return print_var(value)
    if isinstance(value, Const):
        return f"{print_number(value.value)}:{value.dtype}"
    raise TypeError(f"expected a Var or Const operand, got {value!r}")


def print_values(values: Iterable[Value]) -> str:
    return ", ".join(print_value(v) for v in values)


def print_loc(loc: Loc) -> str:
    return f"loc({quote(loc.file)}:{loc.line}:{loc.col})"


def loc_suffix(loc: Loc, sep: str = "  ") -> str:
    """` loc(...)` after an instruction, or nothing for `NOWHERE`."""
    return "" if loc == NOWHERE else sep + print_loc(loc)


def print_ints(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values)


def print_type(type_: Type) -> str:
    """`i32`, `tile<f16, [16, 64]>`, `tile<f16, [16, 8], LAYOUT>`, `shared<...>`, `tensor<...>`."""
    if isinstance(type_, ScalarType):
        return str(type_.dtype)
    if isinstance(type_, TileType | SharedType):
        kind = "tile" if isinstance(type_, TileType) else "shared"
        layout = "" if type_.layout is None else f", {type_.layout}"
        return f"{kind}<{type_.dtype}, [{print_ints(type_.shape)}]{layout}>"
    if isinstance(type_, TensorType):
        dims = ", ".join(str(dim) for dim in type_.shape)
        return f"tensor<{type_.dtype}, [{dims}]>"
    raise TypeError(f"not a block-IR type: {type_!r}")


def print_types(vars_: Iterable[Var]) -> str:
    return ", ".join(print_type(var.type) for var in vars_)


def describe(value: Value | None) -> str:
    """A value for messages: `the constant 1:i32` or `%x of type tile<f16, [16]>`."""
    if value is None:
        return "nothing"
    if isinstance(value, Const):
        return f"the constant {print_value(value)}"
    return f"{print_value(value)} of type {print_type(value.type)}"
