"""Loops and stack slots in LLVM IR, shared by the LLVM emitter and its warp collectives.

This module owns the few control-flow and storage building blocks that both
`tilelang.codegen.llvm` (the emitter) and `tilelang.codegen.llvm_warp` (the collectives
and the mma helper functions) need, so that neither has to import the other's internals:

* ``WARP``: the number of lanes of a warp;
* ``counted_loop`` / ``const_loop``: a ``for i in [start, stop)`` loop built from a phi;
* ``opaque_alloca``: a stack slot whose uses print as an opaque ``ptr``.

It depends on nothing of tilelang but the LLVM types of `llvm_numeric`.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir

from tilelang.codegen.llvm_numeric import I32, PTR, int_const

__all__ = ["WARP", "LoopBody", "const_loop", "counted_loop", "opaque_alloca"]

WARP = 32

#: The body of a loop: called once, with the loop variable, while the builder is
#: positioned inside the loop; it may add blocks (the latch follows where it ends).
LoopBody = Callable[[ir.Value], None]


def counted_loop(
    b: ir.IRBuilder, start: ir.Value, stop: ir.Value, body: LoopBody, name: str
) -> None:
    """for i in [start, stop) step 1: body(i) (signed compare; stop is small enough that
    i + 1 cannot overflow)."""
    pre = b.block
    loop = b.append_basic_block(f"{name}.loop")
    done = b.append_basic_block(f"{name}.done")
    b.cbranch(b.icmp_signed("<", start, stop), loop, done)
    b.position_at_end(loop)
    i = b.phi(start.type, name=name)
    i.add_incoming(start, pre)
    body(i)
    nxt = b.add(i, ir.Constant(start.type, 1), flags=["nsw", "nuw"])
    i.add_incoming(nxt, b.block)
    b.cbranch(b.icmp_signed("<", nxt, stop), loop, done)
    b.position_at_end(done)


def const_loop(b: ir.IRBuilder, count: int, body: LoopBody, name: str) -> None:
    """for i in [0, count) with an i32 loop variable."""
    counted_loop(b, int_const(I32, 0), int_const(I32, count), body, name)


def opaque_alloca(b: ir.IRBuilder, ty: ir.Type, align: int) -> ir.Value:
    """An alloca whose uses print as an opaque `ptr` (llvmlite's IR layer defaults to
    typed pointers, which LLVM reads as `ptr` anyway)."""
    slot = b.alloca(ty)
    slot.align = align
    slot.type = PTR
    return slot
