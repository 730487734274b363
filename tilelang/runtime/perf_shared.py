"""Shared-memory bank conflicts, for the static performance report: the wavefronts each
shared-memory access of a modelled loop takes beyond one per phase.

This module owns reading the planned block IR's shared accesses for
`tilelang.runtime.perf` (`shared_conflicts`) and printing them (`format_conflicts`).
The SASS gives the bytes a loop moves through shared memory as whole wavefronts
(`sass.shared_bytes`); the bank conflicts come from the layouts, which only the IR
knows: for each `shared_store` and `shared_load` directly in the loop (its body and
its `if`s, as `perf_loop` reads loads), the register layout of the tile it moves, the
shared tile's layout and the accesses the lowering makes (runs of each thread's
consecutive elements, in pieces of the widest aligned width: the rule of
`tilelang.lowering.shared.shared_runs`, restated here as the runtime may not import
the lowering) give every warp's byte addresses, and `tilelang.ir.shared_layout`'s bank
model their wavefronts:

- a `shared_store` is made by the first replica's lanes (a warp with none issues
  nothing); a `shared_load` by every lane (replicas read the same words: broadcast);
- a `shared_load` the lowering reads with ldmatrix (16-bit elements whose tile divides
  into an ldmatrix atom, 8 elements adjacent in shared memory: as
  `tilelang.lowering.relayout.ldmatrix_plan` decides) takes one phase per 8x8 matrix:
  the 8 lines of 16 bytes along the shared tile's contiguous dim; each of the warp's
  aligned 8x8 blocks is one matrix.

An access's extra wavefronts (per warp, averaged over the block's warps, per
iteration) times 128 bytes are added to what the loop moves through shared memory.
Counted without conflicts: `copy_async` (8 lanes a phase write 8 consecutive 16-byte
chunks of a row, which any of the default layouts keeps in distinct banks), packed
codes read code by code, the shared memory of reductions, scans and relayouts the
lowering makes itself, and the warpgroup mma's reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tilelang.ir import nodes as ir
from tilelang.ir.atoms import LDMATRIX_CANDIDATES
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import (
    WARP_SIZE,
    SharedLayout,
    ideal_wavefronts,
    warp_access_addresses,
    wavefronts,
)
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


def _first_replicas(layout: Layout) -> np.ndarray:
    """bool [threads]: the thread holds elements no lower thread holds the same of."""
    table = layout.table()
    flat = np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), layout.shape)
    _, first = np.unique(flat, axis=0, return_index=True)
    mask = np.zeros(layout.num_threads, dtype=bool)
    mask[first] = True
    return mask


def _contiguous(shared: SharedLayout) -> int:
    """Consecutive elements of the last dim adjacent in `shared` (a swizzle keeps 2^base
    together): `tilelang.lowering.values.contiguous_elements`, which the runtime may not
    import."""
    inner = shared.dims[-1][-1]
    if inner.stride != 1:
        return 1
    swizzle = shared.swizzle
    if swizzle is not None and swizzle.bits:
        return math.gcd(inner.size, 1 << swizzle.base)
    return inner.size


def _vector(layout: Layout, shared: SharedLayout, bits: int) -> int | None:
    """Elements per access when the lowering moves a tile of `layout` to or from
    `shared`: the longest run r (a power of two) of each thread's locals consecutive in
    `shared` from a byte boundary, in accesses of the largest power of two up to 16
    bytes dividing both every run's start and r's bytes (`tilelang.lowering.shared.
    shared_runs`, which the runtime may not import); None where codes move bit by bit."""
    index = layout.table()
    offsets = np.asarray(shared.offset(tuple(np.moveaxis(index, -1, 0))))
    count = layout.num_locals
    r = 1 << (count.bit_length() - 1)
    while r >= 1:
        if count % r == 0 and r * bits % 8 == 0:
            runs = offsets.reshape(offsets.shape[0], count // r, r)
            starts = runs[..., 0] * bits
            if np.all(runs - runs[..., :1] == np.arange(r)) and not np.any(starts % 8):
                width = min(
                    _pow2(int(np.gcd.reduce(starts.reshape(-1))) // 8), _pow2(r * bits // 8)
                )
                return width * 8 // bits
        r //= 2
    return None


def _pow2(value: int) -> int:
    """The largest power of two up to 16 dividing `value` (16 for 0)."""
    return min(value & -value, 16) if value else 16


def _lanes(
    layout: Layout, shared: SharedLayout, bits: int, vector: int, stores: bool
) -> tuple[float, float, float]:
    """Per warp, averaged over the block's warps: (instructions, wavefronts, ideal)."""
    active = _first_replicas(layout) if stores else np.ones(layout.num_threads, dtype=bool)
    warps = layout.num_threads // WARP_SIZE
    total = np.zeros(3)
    for warp in range(warps):
        lanes = active[warp * WARP_SIZE : (warp + 1) * WARP_SIZE]
        if not lanes.any():
            continue  # every lane predicated off: nothing moves
        addresses, width = warp_access_addresses(layout, shared, bits, vector, warp)
        for row in addresses:
            row = row[lanes]
            total += (1, wavefronts(row, width), ideal_wavefronts(row.size, width))
    return tuple(total / warps)


def _ldmatrix_dim(layout: Layout, shared: SharedLayout, bits: int) -> int | None:
    """The dim along which ldmatrix reads 16-byte lines of `shared` for a tile of
    `layout`: 1, or 0 for a transposed view read as its untransposed tile; None where
    the lowering uses no ldmatrix (`relayout.ldmatrix_plan`, as
    `lowering.shared._ldmatrix_reads` tries it)."""
    if bits != 16 or layout.rank != 2 or shared.rank != 2:
        return None
    flip = (1, 0)
    for dim, regs, view in ((1, layout, shared), (0, layout.permute(flip), shared.permute(flip))):
        fits = any(regs.divisible_by(atom.layout) for atom in LDMATRIX_CANDIDATES)
        if fits and _contiguous(view) % 8 == 0 and regs.shape[-1] * 2 % 16 == 0:
            return dim
    return None


def _ldmatrix(layout: Layout, shared: SharedLayout, dim: int) -> tuple[float, float, float]:
    """Per warp, averaged: (matrices, wavefronts, ideal) of ldmatrix reads whose lines
    run along `dim` (module docstring)."""
    table = layout.table()  # [threads, locals, 2]
    warps = layout.num_threads // WARP_SIZE
    total = np.zeros(3)
    line = np.arange(8)
    for warp in range(warps):
        part = table[warp * WARP_SIZE : (warp + 1) * WARP_SIZE].reshape(-1, 2)
        for r0, c0 in np.unique(part // 8, axis=0) * 8:
            rows = (r0 + line, np.full(8, c0)) if dim == 1 else (np.full(8, r0), c0 + line)
            addresses = np.asarray(shared.offset(rows)) * 2
            total += (1, wavefronts(addresses.astype(np.int64), 16), 1)
    return tuple(total / warps)


def shared_conflicts(instrs: list[ir.Instr]) -> tuple[Conflict, ...]:
    """The shared accesses among `instrs` (a loop's direct instructions) whose warps
    take more wavefronts than one per phase."""
    found = []
    for instr in instrs:
        try:
            counted = _access(instr)
        except ValueError:  # accesses the bank model cannot place (not whole vectors)
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
        dim = _ldmatrix_dim(layout, shared.layout, bits)
        if dim is not None:
            return "ldmatrix", instr.shared, _ldmatrix(layout, shared.layout, dim)
    vector = _vector(layout, shared.layout, bits)
    if vector is None:
        return None
    stores = isinstance(instr, ir.SharedStore)
    counts = _lanes(layout, shared.layout, bits, vector, stores)
    return ("store" if stores else "load"), instr.shared, counts


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
