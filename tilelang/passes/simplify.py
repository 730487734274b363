"""Pass `simplify`: folds and shares block-uniform scalar arithmetic.

Assumes a verified function. Guarantees the same results with:

- scalar `Compute`s whose operands are all immediates folded to an immediate (integer
  operators only, with the wrapping, truncating and clamping semantics of
  `tilelang.ir.ops`; division by zero is left for run time);
- the identities `x + 0`, `x - 0`, `x * 1`, `x // 1`, `x << 0`, `x >> 0` reduced to `x`;
- a scalar `Compute` or `Cast` equal to an earlier one in scope reused (index
  arithmetic such as `bn * BN` is written several times by a kernel; it is computed
  once). An earlier computation is in scope in the body it was defined in and in
  bodies nested there, never after its body ends.
"""

from __future__ import annotations

from tilelang.dtypes import DType
from tilelang.ir.nodes import Block, Cast, Compute, Const, Function, Instr, Value, Var
from tilelang.ir.types import ScalarType
from tilelang.ir.visit import Rewriter

_IDENTITIES = {"add": 0, "sub": 0, "mul": 1, "div": 1, "shl": 0, "shr": 0}


def run(fn: Function) -> Function:
    return _Simplifier().rewrite_function(fn)


class _Simplifier(Rewriter):
    def __init__(self) -> None:
        super().__init__()
        self.scopes: list[dict[tuple, Var]] = [{}]

    def rewrite_block(self, block: Block) -> Block:
        self.scopes.append({})
        try:
            return super().rewrite_block(block)
        finally:
            self.scopes.pop()

    def _available(self, key: tuple) -> Var | None:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def _reuse_or_keep(self, instr: Instr, key: tuple, result: Var) -> Instr | None:
        earlier = self._available(key)
        if earlier is not None:
            self.mapping[result] = earlier
            return None
        self.scopes[-1][key] = result
        return instr

    def visit_Compute(self, instr: Compute) -> Instr | None:
        instr = self.generic(instr)
        if not isinstance(instr.result.type, ScalarType):
            return instr
        simpler = _fold(instr.op, instr.args, instr.result.type.dtype)
        if simpler is not None:
            self.mapping[instr.result] = simpler
            return None
        return self._reuse_or_keep(
            instr, ("compute", instr.op, instr.args, instr.result.type), instr.result
        )

    def visit_Cast(self, instr: Cast) -> Instr | None:
        instr = self.generic(instr)
        if not isinstance(instr.result.type, ScalarType):
            return instr
        return self._reuse_or_keep(instr, ("cast", instr.value, instr.result.type), instr.result)


def _fold(op: str, args: tuple[Value, ...], dtype: DType) -> Value | None:
    if dtype.is_float or len(args) != 2:
        return None
    lhs, rhs = args
    if isinstance(rhs, Const) and _IDENTITIES.get(op) == rhs.value:
        return lhs
    if op in ("add", "mul") and isinstance(lhs, Const) and _IDENTITIES[op] == lhs.value:
        return rhs
    if isinstance(lhs, Const) and isinstance(rhs, Const):
        value = _evaluate(op, int(lhs.value), int(rhs.value), lhs.dtype)
        if value is not None:
            return Const(_wrap(value, dtype), dtype)
    return None


def _evaluate(op: str, a: int, b: int, operand: DType) -> int | None:
    if op in ("div", "rem"):
        if b == 0:
            return None  # undefined on the GPU, an error in the interpreter: keep it
        quotient = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
        return quotient if op == "div" else a - quotient * b
    if op in ("shl", "shr"):
        amount = b if b >= 0 else operand.bits  # PTX reads the amount as unsigned
        if amount >= operand.bits:
            return -1 if op == "shr" and a < 0 else 0
        return a << amount if op == "shl" else a >> amount
    table = {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "min": lambda: min(a, b),
        "max": lambda: max(a, b),
        "and": lambda: a & b,
        "or": lambda: a | b,
        "xor": lambda: a ^ b,
        "eq": lambda: int(a == b),
        "ne": lambda: int(a != b),
        "lt": lambda: int(a < b),
        "le": lambda: int(a <= b),
        "gt": lambda: int(a > b),
        "ge": lambda: int(a >= b),
    }
    return table[op]() if op in table else None


def _wrap(value: int, dtype: DType) -> int:
    """Two's-complement wrap to the dtype's width (comparisons give 0/1 and fit u1)."""
    span = 1 << dtype.bits
    value %= span
    return value - span if dtype.signed and value >= span // 2 else value
