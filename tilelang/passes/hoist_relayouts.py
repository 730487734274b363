"""Pass `hoist_relayouts`: a `relayout` of a value a loop does not change moves before
the loop.

Assumes layouts (after `infer_layouts`, which puts a dot operand's relayout right before
its dot, inside the loop for an operand loaded before it: attention's Q). Guarantees:
every `relayout` in a loop body whose operand is defined outside the loop (not by the
body, not carried, not the loop variable) is done once, before the loop; nothing else
changes. A relayout is pure, so doing it once equals doing it every iteration, and the
loop then holds one form of the value (the fragment), not both.
"""

from __future__ import annotations

from dataclasses import replace

from tilelang.ir.nodes import Block, For, Function, If, Instr, Relayout, Var
from tilelang.ir.visit import defined_vars
from tilelang.target import CPU, Target

__all__ = ["run"]


def run(fn: Function, target: Target = CPU) -> Function:
    return replace(fn, body=_block(fn.body))


def _block(block: Block) -> Block:
    out: list[Instr] = []
    for instr in block.instrs:
        if isinstance(instr, For):
            body = _block(instr.body)
            inside = {v.name for v in (instr.var, *instr.carried, *defined_vars(body))}
            hoisted = [i for i in body.instrs if _invariant(i, inside)]
            kept = tuple(i for i in body.instrs if not any(i is h for h in hoisted))
            out.extend(hoisted)
            out.append(replace(instr, body=Block(kept)))
        elif isinstance(instr, If):
            out.append(
                replace(instr, then_body=_block(instr.then_body), else_body=_block(instr.else_body))
            )
        else:
            out.append(instr)
    return Block(tuple(out))


def _invariant(instr: Instr, inside: set[str]) -> bool:
    return isinstance(instr, Relayout) and not (
        isinstance(instr.value, Var) and instr.value.name in inside
    )
