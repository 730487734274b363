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
SCANS = ("sum", "prod", "max", "min")
