"""The loops a static performance report adds up, at one launch (`Part`), and their
rows in the report (`LoopRow`, `LoadRow`).

This module owns gathering, for `tilelang.runtime.perf`, each modelled loop's trip
counts (`perf_trips`), SASS (`perf_match`), global tiles per iteration and shared-memory
bank conflicts (`perf_shared`) into a `Part`, its `Work` for the bounds, and the DRAM
bytes charged to each loop's memory latency (`phases`). Without a main loop but with
loops (every loop that loads runs under an `if`), the kernel's code outside its loops,
once per block, is the first part, and the loops follow for the blocks that take their
`if`s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.visit import walk
from tilelang.runtime import sass as sass_text
from tilelang.runtime.perf_bounds import Phase, Work, mma_flops
from tilelang.runtime.perf_loop import MainLoop, PerfError, TileLoad, direct_instrs
from tilelang.runtime.perf_match import LoopCode, kernel_code, loop_codes
from tilelang.runtime.perf_shared import WAVEFRONT, Conflict, shared_conflicts
from tilelang.runtime.perf_traffic import Reread
from tilelang.runtime.perf_trips import Trips, loop_trips

__all__ = ["OUTSIDE", "LoadRow", "LoopRow", "Part", "load_rows", "parts", "phases"]

WARP = 32
#: Where the first part is the kernel's code outside its loops (no main loop).
OUTSIDE = "outside the loops"


@dataclass(frozen=True)
class LoadRow:
    """One global tile the main loop loads per iteration, at this launch: its bytes and
    elements clipped to the tensor's extent, how many iterations ahead it is issued,
    the bytes it keeps in flight per block, and the instructions per element of its
    tensor (all of that tensor's loads in the loop together)."""

    tensor: str
    kind: str
    tile: tuple[int, ...]
    dtype: str
    elements: int
    bytes: float
    clipped: bool
    ahead: int
    depth: int
    in_flight: float
    instructions_per_element: float
    loc: str


@dataclass(frozen=True)
class LoopRow:
    """One loop the report adds up: its source line, iterations per block, how many of
    them one pass of its SASS loop holds, per iteration its warp instructions, MUFU and
    bytes through shared memory (bank conflicts included), the DRAM bytes charged to it
    (its tensors' first reads and its re-reads; the main loop's also every write), and
    which SASS it is (`tilelang.runtime.perf_match`)."""

    where: str
    iterations: float
    unroll: int
    instructions_per_iteration: float
    special_per_iteration: float
    shared_per_iteration: float
    dram_bytes: float
    sass: str
    most: float = -1.0  # the slowest block's iterations (-1: not known, the mean)


def load_rows(
    loads: tuple[TileLoad, ...],
    shapes: dict[str, tuple[int, ...]],
    warp_instructions: float,
) -> tuple[LoadRow, ...]:
    """The rows of `loads` at these tensor shapes, at `warp_instructions` a loop
    iteration (for the instructions per element of each tensor)."""
    clipped = []
    for load in loads:
        extent = shapes[load.tensor]
        kept = tuple(min(a, b) for a, b in zip(load.shape, extent, strict=True))
        clipped.append((load, kept))
    per_tensor: dict[str, int] = {}
    for load, kept in clipped:
        per_tensor[load.tensor] = per_tensor.get(load.tensor, 0) + math.prod(kept)
    rows = []
    for load, kept in clipped:
        elements = math.prod(kept)
        nbytes = elements * load.dtype.bits / 8
        total = per_tensor[load.tensor]
        rows.append(
            LoadRow(
                tensor=load.tensor,
                kind=load.kind,
                tile=load.shape,
                dtype=load.dtype.name,
                elements=elements,
                bytes=nbytes,
                clipped=kept != load.shape,
                ahead=load.ahead,
                depth=load.depth,
                in_flight=nbytes * load.depth,
                instructions_per_element=warp_instructions / total if total else math.inf,
                loc=load.loc,
            )
        )
    return tuple(rows)


@dataclass(frozen=True)
class Part:
    """One loop the report adds up, at this launch (`index`: its place among the loops
    that load, in program order; -1 for the kernel's body outside its loops: a
    loop-free kernel's, or one whose loops run in some blocks only)."""

    index: int
    where: str
    trips: Trips
    code: LoopCode
    rows: tuple[LoadRow, ...]
    conflicts: tuple[Conflict, ...]
    dequantizes: bool
    nest: int  # the index of the outermost loop around it that loads (its own if none)

    @property
    def iterations(self) -> float:
        """Iterations per block, the mean over the grid."""
        return self.trips.mean

    def work(self) -> Work:
        ops, unroll = self.code.ops, self.code.unroll
        shared = sum(n * (sass_text.shared_bytes(op) or 0) for op, n in ops.items()) / unroll
        shared += sum(c.extra for c in self.conflicts) * WAVEFRONT
        special = sum(n for op, n in ops.items() if op.startswith("MUFU")) / unroll
        instructions = sum(ops.values()) / unroll
        most = float(self.trips.most)
        return Work(self.iterations, instructions, special, shared, most, mma_flops(ops, unroll))

    def tiles(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for row in self.rows:
            found[row.tensor] = found.get(row.tensor, 0.0) + row.bytes
        return found

    def row(self, dram_bytes: float) -> LoopRow:
        work = self.work()
        return LoopRow(
            self.where,
            self.iterations,
            self.code.unroll,
            work.instructions,
            work.special,
            work.shared,
            dram_bytes,
            self.code.sass,
            work.most,
        )


def parts(
    fn: ir.Function,
    thread: t.ThreadFunction,
    cubin: bytes,
    main: MainLoop,
    values: Mapping[str, Any],
    first: Trips,
    shapes: dict[str, tuple[int, ...]],
    notes: list[str],
) -> list[Part]:
    """The loops the report adds up (`MainLoop.modelled`, those whose SASS and trip count
    are known), the main loop first (`first`: its trip counts), or the kernel's body
    outside its loops first where there is no main loop."""
    try:
        text = sass_text.disassemble(cubin)
    except sass_text.SassUnavailableError as error:
        raise sass_text.SassUnavailableError(
            f"{fn.name}: a performance report counts the kernel's SASS instructions: {error}"
        ) from None
    warps = thread.threads // WARP

    def part(index: int, where: str, trips: Trips, code: LoopCode, loads, body: ir.Block):
        rows = load_rows(loads, shapes, sum(code.ops.values()) / code.unroll * warps)
        conflicts = shared_conflicts(direct_instrs(body))
        nest = main.nest_of(index) if index >= 0 else index
        return Part(index, where, trips, code, rows, conflicts, _dequantizes(body), nest)

    if not main.loops:
        return [part(-1, main.where, first, kernel_code(text), main.loads, fn.body)]
    modelled, why = main.modelled()
    notes.extend(why)
    trips = {main.rank: first} if main.rank >= 0 else {}
    for i in modelled:
        if i != main.rank:
            try:
                trips[i] = loop_trips(fn, main.loops[i], values, notes)
            except PerfError:
                notes.append(
                    f"the loop at {main.loops[i].where} reads its bounds at run time: "
                    "left out of the sum"
                )
    kept = tuple(i for i in modelled if i in trips)
    codes = loop_codes(text, thread, main, kept, first.mean, notes)
    order = [main.rank] * (main.rank >= 0) + [i for i in kept if i in codes and i != main.rank]
    found = [
        part(i, x.where, trips[i], codes[i], x.loads, x.loop.body)
        for i, x in ((i, main.loops[i]) for i in order)
    ]
    if main.rank >= 0:
        return found
    outside = kernel_code(text, list(codes.values()))
    return [part(-1, OUTSIDE, first, outside, main.loads, fn.body), *found]


def _dequantizes(body: ir.Block) -> bool:
    """Whether `body` casts codes of fewer than 16 bits to floats: the conversions of its
    SASS belong to a dequantization recipe (`sass.classify`)."""
    return any(
        isinstance(i, ir.Cast)
        and isinstance(i.value, ir.Var)
        and i.value.type.dtype.bits < 16
        and i.result.type.dtype.is_float
        for i in walk(body)
    )


def phases(
    parts: list[Part],
    again: tuple[Reread, ...],
    tensors: Mapping[str, int],
    dram_bytes: float,
    concurrent: float,
    latency: float,
    rounds: int,
) -> tuple[Phase, ...]:
    """The DRAM bytes of each loop (the main loop first) at its own bytes in flight: a
    loop other than the main one is charged the tensors it reads first and its
    re-reads, unless it shares the main loop's nest (the main loop streams them); the
    main loop the rest (writes, loads outside loops, wasted sectors). Each is stretched
    by its slowest block over `rounds` rounds of resident blocks (`Work.stretch`)."""
    seen: set[str] = set()
    first: dict[int, set[str]] = {}
    for x in sorted(parts, key=lambda x: x.index):
        first[x.index] = set(x.tiles()) - seen
        seen |= first[x.index]
        if x.nest == parts[0].nest:
            first[x.index] = set()
    phases = []
    for x in parts[1:]:
        charged = sum(tensors[n] for n in first[x.index])
        charged += sum(r.charged for r in again if r.where == x.where)
        little = concurrent * sum(r.in_flight for r in x.rows) / latency
        in_flight = concurrent * sum(r.in_flight for r in x.rows)
        phases.append(Phase(x.where, charged, in_flight, little, x.work().stretch(rounds)))
    main = parts[0]
    in_flight = concurrent * sum(r.in_flight for r in main.rows)
    rest = dram_bytes - sum(p.dram_bytes for p in phases)
    stretch = main.work().stretch(rounds)
    return (Phase(main.where, rest, in_flight, in_flight / latency, stretch), *phases)
