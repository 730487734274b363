"""The bytes a launch moves through DRAM, for the static performance report.

This module owns two of `tilelang.runtime.perf`'s DRAM facts: the bytes of every tensor
the kernel reads plus every tensor it writes, each once (`tensor_bytes`), and the bytes
a later loop reads again of a tensor an earlier loop of the same block read
(`rereads`), with the rule that decides whether L2 still holds them.

**Re-reads.** A block runs its loops one after the other (`perf_loop.MainLoop.modelled`,
in program order). A loop that loads tensor T, which an earlier modelled loop of the
block loaded, is taken to read the same elements again (a second pass: a two-pass
softmax or norm). Between a block's two reads of an element it loads D bytes: what its
loops from the last earlier reader of T up to this one load (a whole pass of each: the
second pass starts from the beginning again; a third pass finds in L2 what the second
read, not only what the first did). The blocks running at once, C, load C·D bytes
meanwhile. When C·D fits in the L2 (C·D ≤ its size), the re-read is served from
L2 and costs no DRAM bytes; otherwise DRAM serves it again, charged min(T's bytes,
blocks × trip count × bytes of T the loop's tiles move an iteration, clipped to the
tensor). Any replacement policy may evict sooner; the rule is the reuse distance a
perfect LRU would need. A loop that reads a different part of T than the earlier one
is charged as a re-read too (an upper bound). Loops of one nest (an outer loop and the
loops inside it, `perf_loop.MainLoop.nest_of`) read in one pass, iteration by
iteration, not one after the other: a tensor two of them load is not re-read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tilelang.ir import nodes as ir
from tilelang.ir.visit import walk
from tilelang.runtime.perf_bounds import mb

__all__ = [
    "LoopTraffic",
    "Reread",
    "partial_reads",
    "read_caps",
    "rereads",
    "tensor_bytes",
    "tensor_traffic",
]


def tensor_bytes(
    fn: ir.Function,
    shapes: Mapping[str, tuple[int, ...]],
    caps: Mapping[str, float] | None = None,
) -> int:
    """Bytes of every tensor the kernel reads plus every tensor it writes, each once
    (`tensor_traffic`)."""
    return sum(b for _, b in tensor_traffic(fn, shapes, caps).values())


def tensor_traffic(
    fn: ir.Function,
    shapes: Mapping[str, tuple[int, ...]],
    caps: Mapping[str, float] | None = None,
) -> dict[str, tuple[str, int]]:
    """Each tensor the kernel reads or writes: ("read", "written" or "read, written",
    its DRAM bytes), each read and each write once (gathers, scatters, scalar loads and
    atomic additions included: a gathered pool counts whole, an upper bound on what the
    kernel reads of it); a tensor read in `caps` (`read_caps`) counts at most that many
    bytes read. In parameter order."""
    reads = ir.Load | ir.CopyAsync | ir.Gather | ir.GatherAsync | ir.LoadScalar
    # An atomic addition reads what it adds to and writes it back.
    adds = ir.Atomic | ir.ScatterAtomic
    read = {i.tensor.name for i in walk(fn) if isinstance(i, reads | adds)}
    writes = ir.Store | ir.Scatter | adds
    written = {i.tensor.name for i in walk(fn) if isinstance(i, writes)}
    caps = caps or {}
    found = {}
    for name in (p.name for p in fn.params if p.name in read | written):
        whole = nbytes(fn, shapes, name)
        moved = min(whole, math.ceil(caps.get(name, whole))) if name in read else 0
        access = ", ".join(w for w, s in (("read", read), ("written", written)) if name in s)
        found[name] = (access, moved + (whole if name in written else 0))
    return found


def read_caps(
    fn: ir.Function,
    shapes: Mapping[str, tuple[int, ...]],
    blocks: int,
    loops: Mapping[int, tuple[float, Mapping[str, float]]],
) -> dict[str, float]:
    """The most bytes the blocks' tiles read of each tensor only tiles read (`load`,
    `copy_async`) in the modelled loops or outside every loop: blocks x (per loop,
    its mean trip count x its tile bytes an iteration, clipped to the tensor; plus the
    tiles outside loops, once). `loops`: id of each modelled loop -> (trips, bytes of
    each tensor its tiles load an iteration). A tensor also read elsewhere (a gather, a
    scalar, an atomic, a loop left out of the sum) has no cap."""
    per_block: dict[str, float] = {}
    uncapped: set[str] = set()

    def visit(block: ir.Block, loop: ir.For | None) -> None:
        for instr in block.instrs:
            if isinstance(instr, ir.For):
                visit(instr.body, instr)
            elif isinstance(instr, ir.If):
                visit(instr.then_body, loop)
                visit(instr.else_body, loop)
            elif isinstance(instr, ir.Load | ir.CopyAsync) and loop is None:
                tile = instr.result.type if isinstance(instr, ir.Load) else instr.shared.type
                kept = [
                    min(a, b) for a, b in zip(tile.shape, shapes[instr.tensor.name], strict=True)
                ]
                name = instr.tensor.name
                per_block[name] = per_block.get(name, 0.0) + math.prod(kept) * tile.dtype.bits / 8
            elif isinstance(instr, ir.Load | ir.CopyAsync) and id(loop) in loops:
                name = instr.tensor.name
                per_block.setdefault(name, 0.0)
                if loops[id(loop)][1].get(name) is None:
                    uncapped.add(name)
            elif hasattr(instr, "tensor"):
                uncapped.add(instr.tensor.name)

    visit(fn.body, None)
    for trips, tiles in loops.values():
        for name, nbytes_ in tiles.items():
            per_block[name] = per_block.get(name, 0.0) + trips * nbytes_
    return {n: blocks * b for n, b in per_block.items() if n not in uncapped}


def partial_reads(
    fn: ir.Function, shapes: Mapping[str, tuple[int, ...]], caps: Mapping[str, float]
) -> list[str]:
    """Notes for the tensors the floor counts less than whole (`read_caps`)."""
    return [
        f"the tiles read at most {mb(cap)} of {name}'s {mb(nbytes(fn, shapes, name))} over the "
        "grid: the DRAM floor counts that much"
        for name, cap in caps.items()
        if cap < nbytes(fn, shapes, name)
    ]


def nbytes(fn: ir.Function, shapes: Mapping[str, tuple[int, ...]], name: str) -> int:
    """The bytes of tensor `name` at these shapes."""
    dtype = next(p.type.dtype for p in fn.params if p.name == name)
    return -(-math.prod(shapes[name]) * dtype.bits // 8)


@dataclass(frozen=True)
class LoopTraffic:
    """One modelled loop: its source line, iterations per block, the bytes of each
    tensor its tiles load per iteration per block (clipped to the tensor), and the
    outermost loop of its nest (its own line where it is in none)."""

    where: str
    trips: float
    tiles: Mapping[str, float]
    nest: str = ""

    @property
    def block_bytes(self) -> float:
        """Bytes one block's pass through the loop loads."""
        return self.trips * sum(self.tiles.values())


@dataclass(frozen=True)
class Reread:
    """Tensor `tensor` read again by the loop at `where` after the loop at `first` (the
    last one before it that read it): the bytes the blocks at once load between the two
    reads (`distance`), and the DRAM bytes charged for it (0 when the L2 holds it)."""

    tensor: str
    where: str
    first: str
    distance: float
    charged: float


def rereads(
    loops: Sequence[LoopTraffic],
    sizes: Mapping[str, int],
    blocks: int,
    concurrent: float,
    l2_bytes: int,
) -> tuple[Reread, ...]:
    """The re-reads of `loops` (program order) by the rule of the module docstring;
    `sizes`: each tensor's bytes."""
    found = []
    last: dict[str, int] = {}  # the first loop of the nest that read a tensor last

    def nest(i: int) -> str:
        return loops[i].nest or loops[i].where

    for j, loop in enumerate(loops):
        for tensor, per_iteration in loop.tiles.items():
            i = last.get(tensor)
            if i is not None and nest(i) == nest(j):
                continue  # one pass of one nest
            last[tensor] = j
            if i is None:
                continue
            distance = concurrent * sum(x.block_bytes for x in loops[i:j])
            reads = min(sizes[tensor], blocks * loop.trips * per_iteration)
            charged = reads if distance > l2_bytes else 0.0
            found.append(Reread(tensor, loop.where, loops[i].where, distance, charged))
    return tuple(found)
