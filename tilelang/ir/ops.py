"""The catalogue of elementwise, reduction and scan operators of the block IR.

One table says, for each elementwise operator, how many operands it takes, which
operand kinds it accepts (int, float, any) and what its result dtype is. The DSL, the
verifier and the interpreter all read this table, so an operator exists in exactly one
place. Semantics (the interpreter implements exactly these; the backends must agree):

- integer arithmetic wraps (two's complement at the operand width);
- `div` and `rem` on integers truncate toward zero (C semantics); `div` on floats is
  true division; integer `x / 0` is all ones and `x % 0` is x on every backend (the
  padding of a ragged tile may divide by zero without harm);
- `shl`/`shr` with a shift amount >= the width give 0 (or the sign fill for `shr` of a
  negative signed value), as PTX's clamped shifts do; `shr` is arithmetic for signed
  types and logical for unsigned ones;
- float results are rounded (RNE) to the operand dtype after every operation;
- comparisons give `u1` (0 or 1); `where(cond, a, b)` takes a `u1` condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Operand(Enum):
    INT = "int"
    FLOAT = "float"
    ANY = "any"


class Result(Enum):
    SAME = "same"  # the dtype of the (non-condition) operands
    BOOL = "bool"  # u1


@dataclass(frozen=True)
class ElementwiseOp:
    name: str
    arity: int
    operands: Operand
    result: Result = Result.SAME
    python: str | None = None  # the Python operator spelling, for messages


def _ops(*ops: ElementwiseOp) -> dict[str, ElementwiseOp]:
    return {op.name: op for op in ops}


ELEMENTWISE: dict[str, ElementwiseOp] = _ops(
    # unary
    ElementwiseOp("neg", 1, Operand.ANY, python="-"),
    ElementwiseOp("invert", 1, Operand.INT, python="~"),
    ElementwiseOp("abs", 1, Operand.ANY),
    ElementwiseOp("exp", 1, Operand.FLOAT),
    ElementwiseOp("exp2", 1, Operand.FLOAT),
    ElementwiseOp("log", 1, Operand.FLOAT),
    ElementwiseOp("log2", 1, Operand.FLOAT),
    ElementwiseOp("sqrt", 1, Operand.FLOAT),
    ElementwiseOp("rsqrt", 1, Operand.FLOAT),
    ElementwiseOp("sin", 1, Operand.FLOAT),
    ElementwiseOp("cos", 1, Operand.FLOAT),
    ElementwiseOp("tanh", 1, Operand.FLOAT),
    ElementwiseOp("sigmoid", 1, Operand.FLOAT),
    ElementwiseOp("floor", 1, Operand.FLOAT),
    ElementwiseOp("ceil", 1, Operand.FLOAT),
    # binary arithmetic
    ElementwiseOp("add", 2, Operand.ANY, python="+"),
    ElementwiseOp("sub", 2, Operand.ANY, python="-"),
    ElementwiseOp("mul", 2, Operand.ANY, python="*"),
    ElementwiseOp("div", 2, Operand.ANY, python="/"),
    ElementwiseOp("rem", 2, Operand.INT, python="%"),
    ElementwiseOp("min", 2, Operand.ANY),
    ElementwiseOp("max", 2, Operand.ANY),
    # binary bit operations
    ElementwiseOp("and", 2, Operand.INT, python="&"),
    ElementwiseOp("or", 2, Operand.INT, python="|"),
    ElementwiseOp("xor", 2, Operand.INT, python="^"),
    ElementwiseOp("shl", 2, Operand.INT, python="<<"),
    ElementwiseOp("shr", 2, Operand.INT, python=">>"),
    # comparisons
    ElementwiseOp("eq", 2, Operand.ANY, Result.BOOL, python="=="),
    ElementwiseOp("ne", 2, Operand.ANY, Result.BOOL, python="!="),
    ElementwiseOp("lt", 2, Operand.ANY, Result.BOOL, python="<"),
    ElementwiseOp("le", 2, Operand.ANY, Result.BOOL, python="<="),
    ElementwiseOp("gt", 2, Operand.ANY, Result.BOOL, python=">"),
    ElementwiseOp("ge", 2, Operand.ANY, Result.BOOL, python=">="),
    # ternary
    ElementwiseOp("where", 3, Operand.ANY),
)

REDUCTIONS = ("sum", "prod", "max", "min", "and", "or", "xor")


def wrap(value: int, dtype) -> int:
    """`value` wrapped to the dtype's width (two's complement when signed)."""
    span = 1 << dtype.bits
    value %= span
    return value - span if dtype.signed and value >= span // 2 else value


def evaluate_int(op: str, a: int, b: int, dtype) -> int | None:
    """A binary operator on two integers of `dtype` by the semantics above: wrapped
    arithmetic, C division (x / 0 all ones, x % 0 x), clamped shifts whose amount is
    read as unsigned, comparisons 0 or 1. None for an operator it does not know."""
    if op in ("div", "rem"):
        if b == 0:
            return wrap(-1, dtype) if op == "div" else a
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return wrap(quotient if op == "div" else a - quotient * b, dtype)
    if op in ("shl", "shr"):
        amount = b if b >= 0 else dtype.bits
        if amount >= dtype.bits:
            return -1 if op == "shr" and a < 0 else 0
        return wrap(a << amount, dtype) if op == "shl" else a >> amount
    compares = {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}
    if op in compares:
        return int(compares[op])
    arithmetic = {
        "add": a + b,
        "sub": a - b,
        "mul": a * b,
        "min": min(a, b),
        "max": max(a, b),
        "and": a & b,
        "or": a | b,
        "xor": a ^ b,
    }
    return wrap(arithmetic[op], dtype) if op in arithmetic else None


SCANS = ("sum", "prod", "max", "min")
