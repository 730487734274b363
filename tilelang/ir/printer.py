"""The text form of the block IR: printing.

This module owns how a `Function` reads as text (`tilelang.ir.parser` reads it back to an
equal `Function`). One instruction per line, results first, result types after a colon,
the source location last (elided when it is `NOWHERE`)::

    kernel scale(%x: tensor<f16, [M, N]>, %y: tensor<f16, [M, N]>) sizes(%M: i32, %N: i32) warps(4) constexprs(BM=16) loc("scale.py":3:1) {
      %bm, %bn = blocks %M, %N : i32, i32  loc("scale.py":5:14)
      %a = load %x[%bm, %bn] fill(0.0:f16) : tile<f16, [16, 64]>  loc("scale.py":6:9)
      %acc_1 = for %k = 0:i32 to %N step 64:i32 iter(%acc: tile<f32, [16, 64]> = %a32) stages(3) {
        ...
        yield %acc_2
      }
      store %y[%bm, %bn], %b
    }

What follows `results =` is each instruction class's `SYNTAX` template
(`tilelang.ir.syntax`); values, types and names are spelled by `tilelang.ir.text`.
Only `for`, `if` and `associative_scan`, which hold bodies, are spelled here:

- a `For`'s loop variable has type i32 unless it says `%k: i64`; its result types are
  those of its carried values unless `-> (types)` says otherwise; an `If` gives its
  result types as `-> (types)`; both put their `loc(...)` before the `{`;
- an `AssociativeScan` reads
  `%h, %s = associative_scan %a, %b axis(1) reverse lhs(%a1: f32, %b1: f32)
  rhs(%a2: f32, %b2: f32) -> (TYPES) loc(...) {`, then its combine body;
- the header lists `Function.assume` after `warps(...)` as `assume(K % 16, N % 8)`
  (a tensor's value fact as `0 <= s < 64` or `finite(w)`).
"""

from __future__ import annotations

from itertools import zip_longest

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes
from tilelang.ir.core import FINITE, Block, Function, Instr, Var
from tilelang.ir.syntax import syntax_of
from tilelang.ir.text import (
    loc_suffix,
    print_name,
    print_number,
    print_type,
    print_types,
    print_value,
    print_values,
    print_var,
    quote,
)
from tilelang.ir.types import ScalarType, TensorType

INDENT = "  "

#: The type of a `For` loop variable that the text leaves unsaid.
LOOP_VAR_TYPE = ScalarType(dtypes.i32)


# -- constexprs and the function header ------------------------------------------------


def print_constexpr_value(value: nodes.ConstexprValue) -> str:
    if isinstance(value, DType):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bool | int | float):
        return print_number(value)
    raise TypeError(f"a constexpr value must be int, float, bool, str or DType, got {value!r}")


def _typed_var(var: Var) -> str:
    return f"{print_var(var)}: {print_type(var.type)}"


def print_fact(name: str, value: int | str, tensor: bool) -> str:
    """One `Function.assume` fact as text: `K % 16` (a size), `0 <= s < 64` (a tensor's
    bound), `finite(w)` (a tensor without inf or NaN)."""
    shown = quote(name) if name == FINITE else print_name(name)  # not the keyword
    if value == FINITE:
        return f"finite({shown})"
    return f"0 <= {shown} < {value}" if tensor else f"{shown} % {value}"


def _header(fn: Function) -> str:
    text = f"kernel {print_name(fn.name)}({', '.join(_typed_var(v) for v in fn.params)})"
    if fn.sizes:
        text += f" sizes({', '.join(_typed_var(v) for v in fn.sizes)})"
    text += f" warps({fn.warps})"
    if fn.assume:
        tensors = {v.name for v in fn.params if isinstance(v.type, TensorType)}
        facts = ", ".join(print_fact(name, n, name in tensors) for name, n in fn.assume)
        text += f" assume({facts})"
    if fn.constexprs:
        items = ", ".join(
            f"{print_name(name)}={print_constexpr_value(value)}" for name, value in fn.constexprs
        )
        text += f" constexprs({items})"
    return text + loc_suffix(fn.loc, " ")


def print_function(fn: Function) -> str:
    """The text form of `fn`, ending in a newline; `parse_function` reads it back."""
    lines = [_header(fn) + " {"]
    _print_block(fn.body, 1, lines)
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- instructions ----------------------------------------------------------------------


def print_block(block: Block, depth: int = 0) -> str:
    lines: list[str] = []
    _print_block(block, depth, lines)
    return "\n".join(lines)


def _print_block(block: Block, depth: int, lines: list[str]) -> None:
    for instr in block.instrs:
        _print_instr(instr, depth, lines)


def print_instr(instr: Instr, depth: int = 0) -> str:
    """One instruction (several lines for `For` and `If`), indented `depth` levels."""
    lines: list[str] = []
    _print_instr(instr, depth, lines)
    return "\n".join(lines)


def _print_instr(instr: Instr, depth: int, lines: list[str]) -> None:
    pad = INDENT * depth
    if isinstance(instr, nodes.For):
        lines.append(pad + _for_header(instr) + " {")
        _print_block(instr.body, depth + 1, lines)
        lines.append(pad + "}")
    elif isinstance(instr, nodes.AssociativeScan):
        lines.append(pad + _scan_header(instr) + " {")
        _print_block(instr.body, depth + 1, lines)
        lines.append(pad + "}")
    elif isinstance(instr, nodes.If):
        lines.append(pad + _if_header(instr) + " {")
        _print_block(instr.then_body, depth + 1, lines)
        lines.append(pad + "} else {")
        _print_block(instr.else_body, depth + 1, lines)
        lines.append(pad + "}")
    else:
        lines.append(pad + _simple(instr))


def _results_prefix(results: tuple[Var, ...]) -> str:
    return f"{', '.join(print_var(v) for v in results)} = " if results else ""


def _simple(instr: Instr) -> str:
    results = instr.defs()
    text = _results_prefix(results) + syntax_of(type(instr)).print(instr)
    text += print_attrs(instr.attrs)
    if results:
        text += f" : {print_types(results)}"
    return text + loc_suffix(instr.loc)


def print_attrs(attrs: tuple[tuple[str, int | bool | str], ...]) -> str:
    """` {name=value, ...}`, or nothing when there are no attributes."""
    if not attrs:
        return ""
    items = ", ".join(
        f"{name}={quote(value) if isinstance(value, str) else print_number(value)}"
        for name, value in attrs
    )
    return f" {{{items}}}"


def _for_header(instr: nodes.For) -> str:
    var = print_var(instr.var)
    if instr.var.type != LOOP_VAR_TYPE:
        var += f": {print_type(instr.var.type)}"
    text = _results_prefix(instr.results)
    text += f"for {var} = {print_value(instr.start)} to {print_value(instr.stop)}"
    text += f" step {print_value(instr.step)}"
    if instr.carried or instr.inits:
        items = []
        for carried, init in zip_longest(instr.carried, instr.inits):
            left = "_" if carried is None else _typed_var(carried)
            right = "_" if init is None else print_value(init)
            items.append(f"{left} = {right}")
        text += f" iter({', '.join(items)})"
    if instr.unroll is not None:
        text += f" unroll({instr.unroll})"
    if instr.stages is not None:
        text += f" stages({instr.stages})"
    if tuple(v.type for v in instr.results) != tuple(v.type for v in instr.carried):
        text += f" -> ({print_types(instr.results)})"
    return text + loc_suffix(instr.loc, " ")


def _if_header(instr: nodes.If) -> str:
    text = _results_prefix(instr.results) + f"if {print_value(instr.cond)}"
    if instr.results:
        text += f" -> ({print_types(instr.results)})"
    return text + loc_suffix(instr.loc, " ")


def _scan_header(instr: nodes.AssociativeScan) -> str:
    text = _results_prefix(instr.results) + f"associative_scan {print_values(instr.values)}"
    text += f" axis({instr.axis})" + (" reverse" if instr.reverse else "")
    for word, params in (("lhs", instr.lhs), ("rhs", instr.rhs)):
        text += f" {word}({', '.join(_typed_var(v) for v in params)})"
    text += f" -> ({print_types(instr.results)})"
    return text + loc_suffix(instr.loc, " ")
