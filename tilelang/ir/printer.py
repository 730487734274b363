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

Spelling rules (shared with the parser):

- values: `%name` (quoted, `%"a b"`, when the name has characters other than letters,
  digits, `_` and `.`); constants `value:dtype` (`15:i32`, `-0.0:f32`, `inf:f16`,
  `nan:f32`, `true:u1`) — a float always prints with `.`, `e`, `inf` or `nan`;
- types: `f16`, `tile<f16, [16, 64]>`, `tile<f16, [16, 8], LAYOUT>` (the layout's own
  text form), `shared<f16, [64, 64], SHARED_LAYOUT>`, `tensor<u4, [K // 2, N]>`;
- a `For`'s loop variable has type i32 unless it says `%k: i64`; its result types are
  those of its carried values unless `-> (types)` says otherwise; an `If` gives its
  result types as `-> (types)`; both put their `loc(...)` before the `{`;
- the header lists `Function.assume` after `warps(...)` as `assume(K % 16, N % 8)`;
- names (kernel, constexpr, operator) print bare when they are identifiers and not an
  instruction mnemonic, else as a JSON string; strings (file names, labels) are JSON
  strings, so any text survives.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Callable, Iterable
from itertools import zip_longest

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes
from tilelang.ir.nodes import NOWHERE, Block, Const, Function, Instr, Loc, Value, Var
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType, Type

INDENT = "  "

#: The type of a `For` loop variable that the text leaves unsaid.
LOOP_VAR_TYPE = ScalarType(dtypes.i32)

#: The instruction mnemonic of every instruction class (Compute prints its operator).
MNEMONICS: dict[type[Instr], str] = {
    nodes.Blocks: "blocks",
    nodes.Full: "full",
    nodes.Arange: "arange",
    nodes.SharedAlloc: "shared_alloc",
    nodes.Load: "load",
    nodes.Store: "store",
    nodes.CopyAsync: "copy_async",
    nodes.AsyncCommit: "async_commit",
    nodes.AsyncWait: "async_wait",
    nodes.SharedSlice: "shared_slice",
    nodes.SharedLoad: "shared_load",
    nodes.SharedStore: "shared_store",
    nodes.Sync: "sync",
    nodes.Compute: "compute",
    nodes.Cast: "cast",
    nodes.View: "view",
    nodes.Relayout: "relayout",
    nodes.Dot: "dot",
    nodes.Reduce: "reduce",
    nodes.Scan: "scan",
    nodes.Reshape: "reshape",
    nodes.Transpose: "transpose",
    nodes.Broadcast: "broadcast",
    nodes.Print: "print",
    nodes.Yield: "yield",
    nodes.For: "for",
    nodes.If: "if",
}

#: Words an operator name must not be spelled as bare (they start other instructions).
RESERVED = frozenset(MNEMONICS.values()) - {"compute"}

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR_NAME = re.compile(r"[A-Za-z0-9_.]+")


# -- small pieces ----------------------------------------------------------------------


def quote(text: str) -> str:
    """A JSON string literal (ASCII only, so any text survives one line)."""
    return json.dumps(text, ensure_ascii=True)


def print_name(name: str) -> str:
    """A kernel, constexpr or operator name: bare when it is a plain identifier."""
    if _IDENT.fullmatch(name) and name not in RESERVED:
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


def _loc_suffix(loc: Loc, sep: str = "  ") -> str:
    return "" if loc == NOWHERE else sep + print_loc(loc)


def _ints(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in values)


# -- types -----------------------------------------------------------------------------


def print_type(type_: Type) -> str:
    """`i32`, `tile<f16, [16, 64]>`, `tile<f16, [16, 8], LAYOUT>`, `shared<...>`, `tensor<...>`."""
    if isinstance(type_, ScalarType):
        return str(type_.dtype)
    if isinstance(type_, TileType | SharedType):
        kind = "tile" if isinstance(type_, TileType) else "shared"
        layout = "" if type_.layout is None else f", {type_.layout}"
        return f"{kind}<{type_.dtype}, [{_ints(type_.shape)}]{layout}>"
    if isinstance(type_, TensorType):
        dims = ", ".join(str(dim) for dim in type_.shape)
        return f"tensor<{type_.dtype}, [{dims}]>"
    raise TypeError(f"not a block-IR type: {type_!r}")


def _typed_var(var: Var) -> str:
    return f"{print_var(var)}: {print_type(var.type)}"


def _types(vars_: Iterable[Var]) -> str:
    return ", ".join(print_type(var.type) for var in vars_)


# -- constexprs and the function header ------------------------------------------------


def print_constexpr_value(value: nodes.ConstexprValue) -> str:
    if isinstance(value, DType):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bool | int | float):
        return print_number(value)
    raise TypeError(f"a constexpr value must be int, float, bool, str or DType, got {value!r}")


def _header(fn: Function) -> str:
    text = f"kernel {print_name(fn.name)}({', '.join(_typed_var(v) for v in fn.params)})"
    if fn.sizes:
        text += f" sizes({', '.join(_typed_var(v) for v in fn.sizes)})"
    text += f" warps({fn.warps})"
    if fn.assume:
        facts = ", ".join(f"{print_name(name)} % {divisor}" for name, divisor in fn.assume)
        text += f" assume({facts})"
    if fn.constexprs:
        items = ", ".join(
            f"{print_name(name)}={print_constexpr_value(value)}" for name, value in fn.constexprs
        )
        text += f" constexprs({items})"
    return text + _loc_suffix(fn.loc, " ")


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
    printer = _OPERATIONS.get(type(instr))
    if printer is None:
        raise TypeError(f"the printer does not know the instruction class {type(instr).__name__}")
    results = instr.defs()
    text = _results_prefix(results) + printer(instr) + print_attrs(instr.attrs)
    if results:
        text += f" : {_types(results)}"
    return text + _loc_suffix(instr.loc)


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
        text += f" -> ({_types(instr.results)})"
    return text + _loc_suffix(instr.loc, " ")


def _if_header(instr: nodes.If) -> str:
    text = _results_prefix(instr.results) + f"if {print_value(instr.cond)}"
    if instr.results:
        text += f" -> ({_types(instr.results)})"
    return text + _loc_suffix(instr.loc, " ")


def _box(tensor: Value, offsets: tuple[Value, ...]) -> str:
    return f"{print_value(tensor)}[{print_values(offsets)}]"


def _load(i: nodes.Load) -> str:
    fill = "" if i.fill is None else f" fill({print_value(i.fill)})"
    return f"load {_box(i.tensor, i.offsets)}{fill}"


def _scan(i: nodes.Scan) -> str:
    reverse = ", reverse" if i.reverse else ""
    return f"scan {print_name(i.op)} {print_value(i.value)}, axis={i.axis}{reverse}"


def _unary(mnemonic: str) -> Callable[[Instr], str]:
    return lambda i: f"{mnemonic} {print_value(i.value)}"  # type: ignore[attr-defined]


def _bare(mnemonic: str) -> Callable[[Instr], str]:
    return lambda i: mnemonic


def _with_values(mnemonic: str, field: str) -> Callable[[Instr], str]:
    def text(i: Instr) -> str:
        values = print_values(getattr(i, field))
        return f"{mnemonic} {values}" if values else mnemonic

    return text


_OPERATIONS: dict[type[Instr], Callable] = {
    nodes.Blocks: _with_values("blocks", "sizes"),
    nodes.Full: _unary("full"),
    nodes.Arange: lambda i: f"arange {i.start}",
    nodes.SharedAlloc: _bare("shared_alloc"),
    nodes.Load: _load,
    nodes.Store: lambda i: f"store {_box(i.tensor, i.offsets)}, {print_value(i.value)}",
    nodes.CopyAsync: lambda i: f"copy_async {_box(i.tensor, i.offsets)} -> {print_value(i.shared)}",
    nodes.AsyncCommit: _bare("async_commit"),
    nodes.AsyncWait: lambda i: f"async_wait {i.pending}",
    nodes.SharedSlice: lambda i: f"shared_slice {print_value(i.shared)}[{print_value(i.index)}]",
    nodes.SharedLoad: lambda i: f"shared_load {print_value(i.shared)}",
    nodes.SharedStore: lambda i: f"shared_store {print_value(i.shared)}, {print_value(i.value)}",
    nodes.Sync: _bare("sync"),
    nodes.Compute: lambda i: " ".join(filter(None, (print_name(i.op), print_values(i.args)))),
    nodes.Cast: _unary("cast"),
    nodes.View: _unary("view"),
    nodes.Relayout: _unary("relayout"),
    nodes.Dot: lambda i: f"dot {print_values((i.a, i.b, i.acc))}",
    nodes.Reduce: lambda i: f"reduce {print_name(i.op)} {print_value(i.value)}, axis={i.axis}",
    nodes.Scan: _scan,
    nodes.Reshape: _unary("reshape"),
    nodes.Transpose: lambda i: f"transpose {print_value(i.value)}, perm=[{_ints(i.perm)}]",
    nodes.Broadcast: _unary("broadcast"),
    nodes.Print: lambda i: f"print {quote(i.label)}, {print_value(i.value)}",
    nodes.Yield: _with_values("yield", "values"),
}
