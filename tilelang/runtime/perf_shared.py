"""Shared-memory bank conflicts, for the static performance report: the wavefronts each
shared-memory access of a modelled loop takes beyond one per phase.

This module owns reading the planned block IR's shared accesses for
`tilelang.runtime.perf` (`shared_conflicts`) and printing them (`format_conflicts`).
The SASS gives the bytes a loop moves through shared memory as whole wavefronts
(`sass.shared_bytes`); the bank conflicts come from the layouts, which only the IR
knows: for each `shared_store` and `shared_load` directly in the loop (its body and
its `if`s, as `perf_loop` reads loads), the register layout of the tile it moves and
the shared tile's layout give every warp's wavefronts by the rule the lowering moves
tiles by, `tilelang.ir.shared_access` (the same function the lowering and the layout
choice call):

- a `shared_store` is made by the first replica's lanes (a warp with none issues
  nothing); a `shared_load` by every lane (replicas read the same words: broadcast);
- a `shared_load` the lowering reads with ldmatrix takes one phase per 8x8 matrix
  (`shared_access.ldmatrix_wavefronts`).

An access's extra wavefronts (per warp, averaged over the block's warps, per
iteration) times 128 bytes are added to what the loop moves through shared memory.
Counted without conflicts: `copy_async` (8 lanes a phase write 8 consecutive 16-byte
chunks of a row, which any of the default layouts keeps in distinct banks), packed
codes read code by code, the shared memory of reductions, scans and relayouts the
lowering makes itself, and the warpgroup mma's reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang.ir import nodes as ir
from tilelang.ir import shared_access
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import WARP_SIZE
from tilelang.ir.types import SharedType, TileType

__all__ = ["Conflict", "format_conflicts", "shared_conflicts"]

#: Bytes of one wavefront: 32 banks of 4 bytes.
WAVEFRONT = 128


@dataclass(frozen=True)
class Conflict:
    """One shared access with bank conflicts: its kind ("store", "load", "ldmatrix"),
    the shared tile, its source line, and per warp (averaged over the
    block's warps) its instructions, wavefronts and the fewest wavefronts they need."""

    kind: str
    shared: str
    tile: str
    loc: str
    instructions: float
    wavefronts: float
    ideal: float

    @property
    def extra(self) -> float:
        """Wavefronts per warp beyond one per phase."""
        return self.wavefronts - self.ideal


def _loc(instr: ir.Instr) -> str:
    return f"{instr.loc.file.rsplit('/', 1)[-1]}:{instr.loc.line}"


def _per_warp(counts, layout: Layout) -> tuple[float, float, float]:
    """The whole warps' (instructions, wavefronts, phases), averaged over them."""
    warps = layout.num_threads // WARP_SIZE
    return tuple(counts[:warps].sum(axis=0) / warps)


def shared_conflicts(instrs: list[ir.Instr]) -> tuple[Conflict, ...]:
    """The shared accesses among `instrs` (a loop's direct instructions) whose warps
    take more wavefronts than one per phase."""
    found = []
    for instr in instrs:
        try:
            counted = _access(instr)
        except ValueError:  # accesses the bank model cannot place (misaligned lines)
            continue
        if counted is None:
            continue
        kind, shared, (instructions, waves, ideal) = counted
        if waves > ideal:
            tile = "x".join(map(str, shared.type.shape)) + f" {shared.type.dtype}"
            found.append(Conflict(kind, shared.name, tile, _loc(instr), instructions, waves, ideal))
    return tuple(found)


def _access(instr: ir.Instr):
    """(kind, shared var, per-warp counts) of a shared access, None for other
    instructions and for accesses the model does not count."""
    if not isinstance(instr, ir.SharedStore | ir.SharedLoad):
        return None
    value = instr.value if isinstance(instr, ir.SharedStore) else instr.result
    tile, shared = value.type, instr.shared.type
    if not isinstance(tile, TileType) or tile.layout is None:
        return None
    if not isinstance(shared, SharedType) or shared.layout is None:
        return None
    layout, bits = tile.layout, tile.dtype.bits
    if isinstance(instr, ir.SharedLoad):
        dim = shared_access.ldmatrix_dim(layout, shared.layout, bits)
        if dim is not None:
            counts = shared_access.ldmatrix_wavefronts(layout, shared.layout, dim)
            return "ldmatrix", instr.shared, _per_warp(counts, layout)
    stores = isinstance(instr, ir.SharedStore)
    counts = shared_access.access_wavefronts(shared.layout, layout, bits, store=stores)
    if counts is None:
        return None
    return ("store" if stores else "load"), instr.shared, _per_warp(counts, layout)


def format_conflicts(rows: tuple[Conflict, ...]) -> list[str]:
    """The report's lines on bank conflicts (none when there are none)."""
    if not rows:
        return []
    lines = ["", "  shared-memory bank conflicts: wavefronts per warp vs one per phase"]
    for r in rows:
        lines.append(
            f"    {r.kind} {r.shared} ({r.tile}) at {r.loc}: {r.wavefronts:.4g} wavefronts "
            f"per warp where {r.ideal:.4g} suffice ({r.wavefronts / r.ideal:.3g}x over "
            f"{r.instructions:.4g} instructions), +{r.extra:.4g}"
        )
    lines.append(
        f"    model: each extra wavefront moves {WAVEFRONT} more bytes in the shared-memory bound"
    )
    lines.append(
        "    hint: a warp's lanes in the same banks: give the register tile a layout whose "
        "lanes run along the shared tile's rows (load it with another layout=, or move it "
        "between layouts on chip with tl.transpose)"
    )
    return lines
