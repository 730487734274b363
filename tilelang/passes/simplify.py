"""Pass `simplify`: folds and shares block-uniform scalar arithmetic.

Assumes a verified function. Guarantees the same results with:

- scalar `Compute`s whose operands are all immediates folded to an immediate (integer
  operators only, with the wrapping, truncating and clamping semantics of
  `tilelang.ir.ops`; a division by zero is left in the text, where a reader sees it);
- the identities `x + 0`, `x - 0`, `x * 1`, `x // 1`, `x << 0`, `x >> 0` reduced to `x`;
- a scalar `Compute` or `Cast` equal to an earlier one in scope reused (index
  arithmetic such as `bn * BN` is written several times by a kernel; it is computed
  once). An earlier computation is in scope in the body it was defined in and in
  bodies nested there, never after its body ends;
- an atomic's result (its old values) that nothing reads dropped: the update stays,
  and the GPU issues a reduction that sends nothing back (and no registers are
  planned for values never used).
"""

from __future__ import annotations

from dataclasses import replace

from tilelang.dtypes import DType
from tilelang.ir.nodes import (
    Atomic,
    Block,
    Cast,
    Compute,
    Const,
    Function,
    Instr,
    ScatterAtomic,
    Value,
    Var,
)
from tilelang.ir.ops import evaluate_int, wrap
from tilelang.ir.types import ScalarType
from tilelang.ir.visit import Rewriter, walk
from tilelang.target import CPU, Target

_IDENTITIES = {"add": 0, "sub": 0, "mul": 1, "div": 1, "shl": 0, "shr": 0}


def run(fn: Function, target: Target = CPU) -> Function:
    used = {v for instr in walk(fn) for v in instr.uses() if isinstance(v, Var)}
    return _Simplifier(used).rewrite_function(fn)


class _Simplifier(Rewriter):
    def __init__(self, used: set[Var]) -> None:
        super().__init__()
        self.scopes: list[dict[tuple, Var]] = [{}]
        self.used = used

    def _unread_result_dropped(self, instr: Atomic | ScatterAtomic) -> Instr:
        new = self.generic(instr)
        kept = instr.result is None or instr.result in self.used
        return new if kept else replace(new, result=None)

    visit_Atomic = _unread_result_dropped
    visit_ScatterAtomic = _unread_result_dropped

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
            return Const(wrap(value, dtype), dtype)
    return None


def _evaluate(op: str, a: int, b: int, operand: DType) -> int | None:
    if op in ("div", "rem") and b == 0:
        return None  # defined (all ones / the dividend), but kept visible in the text
    return evaluate_int(op, a, b, operand)
