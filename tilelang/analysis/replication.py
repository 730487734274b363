"""Dot operands held whole by several warps (`replicated_operands`).

A dot's operand layout replicates it over the warps that share its rows (A) or columns
(B): each of those warps holds the whole operand in registers. That is what a 2-D warp
grid costs (a matmul's 64x32 A over a 2x2 grid: 16 registers per thread), and what made
attention's K cost 64 registers before dot chains (`dot_chains`) and streamed reads
(`streaming.streamed_reads`, which hold a k-step, not the operand). The lowering counts
every such operand in `kernel.stats` (`dot_operand_replicated`, and its registers per
thread, `dot_operand_replicated_words`); `plan_registers` warns on a GPU target
(`warn_replicated`, a `ReplicatedOperandWarning`) when one costs `WARN_WORDS`
registers or more. Where such operands are among the largest tiles of a register budget
it exceeds, the loop of their dot is not pipelined: `pipelining_advice` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from dataclasses import dataclass

from tilelang.analysis.liveness import Program
from tilelang.analysis.streaming import streamed_reads
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.nodes import Blocks, Dot, For, Function, Var
from tilelang.ir.types import TileType
from tilelang.ir.visit import walk

__all__ = [
    "WARN_WORDS",
    "ReplicatedOperand",
    "ReplicatedOperandWarning",
    "odd_size_advice",
    "pipelining_advice",
    "replicated_operands",
    "replicated_words",
    "warn_replicated",
]

#: Registers per thread from which a replicated operand is warned about.
WARN_WORDS = 64


class ReplicatedOperandWarning(UserWarning):
    """A dot operand held whole by several warps, costing `WARN_WORDS` registers per
    thread or more; the message starts with the dot's `file:line:col`."""


@dataclass(frozen=True)
class ReplicatedOperand:
    dot: Dot
    which: str  # "A" or "B"
    layout: Layout
    words: int  # registers per thread


def replicated_words(layout: Layout, bits: int) -> int | None:
    """Registers per thread of a tile whose layout replicates it over threads, or None
    when it does not."""
    if not any(isinstance(m, Rep) and m.size > 1 for m in layout.thread_modes):
        return None
    return -(-layout.num_locals * bits // 32)


def replicated_operands(fn: Function) -> list[ReplicatedOperand]:
    """The operands of `fn`'s dots held whole by several warps (not streamed reads)."""
    program = Program.of(fn)
    streamed = streamed_reads(program)
    found = []
    for point in program.points:
        dot = point.instr
        if point.end or not isinstance(dot, Dot):
            continue
        for which, value in (("A", dot.a), ("B", dot.b)):
            type_ = value.type if isinstance(value, Var) else None
            if not isinstance(type_, TileType) or type_.layout is None or value in streamed:
                continue
            words = replicated_words(type_.layout, type_.dtype.bits)
            if words is not None:
                found.append(ReplicatedOperand(dot, which, type_.layout, words))
    return found


def warn_replicated(fn: Function) -> None:
    """A `ReplicatedOperandWarning` for each operand of `replicated_operands(fn)` that
    costs `WARN_WORDS` registers per thread or more (once per source location), unless
    the kernel expects them (``@tl.kernel(expect_replicated=True)``, an attribute of its
    `blocks` instruction)."""
    if any(isinstance(i, Blocks) and i.attr("expect_replicated") for i in fn.body.instrs):
        return
    for operand in replicated_operands(fn):
        if operand.words >= WARN_WORDS:
            loc = operand.dot.loc
            warnings.warn_explicit(
                _message(operand), ReplicatedOperandWarning, loc.file, loc.line, registry=_SHOWN
            )


_SHOWN: dict = {}


def _message(operand: ReplicatedOperand) -> str:
    return (
        f"{operand.dot.loc}: the {operand.which} operand of this dot, {operand.layout}, is "
        f"held whole by several warps: {operand.words} registers per thread. Split the "
        "warps along the other dimension (a dot chain does: tilelang.analysis.dot_chains), "
        "or read it from a pipelined load (stages=2), which streams it a k-step at a time"
    )


def pipelining_advice(fn: Function, names: Collection[str]) -> str:
    """Advice for a kernel over its register budget whose largest live tiles (`names`)
    include dot operands several warps hold whole (`replicated_operands`), in a loop
    without `stages=`: pipelined, its loads go through shared memory and the lowering
    reads both operands of a plain matmul a k-step at a time
    (`tilelang.analysis.streaming.streamed_reads`). "" when no such operand is listed.
    Staging them with `tl.shared` by hand does it too (`passes.shared_reads` reads a
    shared tile into its dot a k-step at a time), so the advice names both."""
    in_plain_loops = {
        id(instr)
        for loop in walk(fn)
        if isinstance(loop, For) and (loop.stages or 1) < 2
        for instr in walk(loop.body)
        if isinstance(instr, Dot)
    }
    if not in_plain_loops:  # the common case, a pipelined matmul: no liveness to compute
        return ""
    held: dict[str, None] = {}  # the names, in the order of the dots
    for operand in replicated_operands(fn):
        var = operand.dot.a if operand.which == "A" else operand.dot.b
        if id(operand.dot) in in_plain_loops and var.name in names:
            held[var.name] = None
    if not held:
        return ""
    listed = " and ".join(f"%{name}" for name in held)
    one = len(held) == 1
    return (
        f"{listed} {'is an operand' if one else 'are operands'} of a dot that several warps "
        f"hold whole (`replicated` in {'its layout' if one else 'their layouts'}), in "
        "registers because its loop is not pipelined: pipeline it (`tl.range(..., "
        "stages=2)`), so that the dot's operands pass through shared memory and are read "
        "a k-step at a time, or stage them in a `tl.shared` tile by hand and read it "
        "right before the dot"
    )


def odd_size_advice(tiles: Collection[Var]) -> str:
    """Advice for a kernel over its register budget whose largest live tiles (`tiles`)
    include one replicated over threads because a dimension's size has an odd factor:
    threads split a dimension by powers of two, so a [1000] tile spreads over 8 threads
    and every other thread holds a copy. More warps only add copies; a power-of-two
    tile with the tail masked off spreads over all of them. "" when no tile is such."""
    for var in tiles:
        type_ = var.type
        if not isinstance(type_, TileType) or type_.layout is None:
            continue
        odd = [(d, n) for d, n in enumerate(type_.shape) if n > 1 and n & (n - 1)]
        if type_.layout.replication < 2 or not odd:
            continue
        dim, size = odd[0]
        padded = 1 << (size - 1).bit_length()
        return (
            f"%{var.name} is held by {type_.layout.replication} threads at once "
            f"({type_.layout}): dimension {dim} has size {size}, whose odd factor "
            f"{size // (size & -size)} no power-of-two number of threads divides, so more "
            f"warps would only add copies. Make it a power of two and mask the tail: e.g. "
            f"a tile of {padded} with `mask=tl.arange(0, {padded}) < {size}` on its loads "
            "and stores"
        )
    return ""
