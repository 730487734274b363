"""How a register tile moves to or from a shared tile, and what its bank conflicts are.

This module owns the one rule that the lowering (`tilelang.lowering.shared`), the
choice of a user shared tile's swizzle (`tilelang.analysis.shared_layouts`) and the
performance report (`tilelang.runtime.perf_shared`) all follow, as a pure function of
the register `Layout`, the `SharedLayout` and the element bits:

* `access_runs`: each thread moves its locals in runs of r (a power of two) whose
  elements are consecutive in the shared tile, a whole number of bytes from a byte
  boundary, split into accesses of `width` bytes naturally aligned in the tile and in
  the thread's local (a run may span several accesses: 48 bytes of u3 codes in a
  fragment's load order are one run of three 16-byte accesses); `contiguous_elements`,
  the elements of the last dim a layout keeps adjacent (what ldmatrix needs);
* `access_wavefronts`: per warp, the instructions, wavefronts and phases (the fewest
  wavefronts) of those accesses under the bank model of `tilelang.ir.shared_layout`.
  A store is made by each element's first replica only (a replica's lanes are
  predicated off and leave the phases, which the remaining lanes fill in order); a
  load by every lane (replicas read the same words: broadcast);
* `ldmatrix_dim` and `ldmatrix_wavefronts`: where a 16-bit load may be an ldmatrix
  (as `tilelang.lowering.relayout.ldmatrix_plan` decides it while emitting), one phase
  per 8x8 matrix, its 8 lines of 16 bytes along the shared tile's contiguous dim.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tilelang.ir.atoms import LDMATRIX_CANDIDATES
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import (
    BANK_BYTES,
    NUM_BANKS,
    WARP_SIZE,
    SharedLayout,
    phase_size,
    wavefronts,
)

__all__ = [
    "MAX_ACCESS",
    "access_runs",
    "access_wavefronts",
    "contiguous_elements",
    "first_replicas",
    "ldmatrix_dim",
    "ldmatrix_wavefronts",
]

#: The widest access a thread makes: 16 bytes.
MAX_ACCESS = 16


def contiguous_elements(layout: SharedLayout) -> int:
    """How many consecutive elements of the last dim stay adjacent in a shared layout
    (1 when its innermost stride is not 1; a swizzle keeps 2^base elements together)."""
    inner = layout.dims[-1][-1]
    if inner.stride != 1:
        return 1
    swizzle = layout.swizzle
    if swizzle is not None and swizzle.bits:
        return math.gcd(inner.size, 1 << swizzle.base)
    return inner.size


def _offsets(shared: SharedLayout, layout: Layout) -> np.ndarray:
    """int64 [threads, locals]: the shared offset of each thread's each local."""
    if tuple(layout.shape) != shared.shape:
        raise ValueError(
            f"register layout {layout} has shape {tuple(layout.shape)} but shared layout "
            f"{shared} has shape {shared.shape}"
        )
    return shared.table()[tuple(np.moveaxis(layout.table(), -1, 0))]


@functools.lru_cache(maxsize=512)
def access_runs(
    shared: SharedLayout, layout: Layout, bits: int, most: int | None = None
) -> tuple[int, int]:
    """(r, width) for moving a register tile of `layout` to or from `shared` (module
    docstring): runs of r locals (a power of two dividing the locals, at most `most`),
    in accesses of `width` bytes; (1, 0) when a packed tile's codes cannot move as
    bytes.

    The longest run is never worse: its starts are some of a shorter run's, so its
    accesses are at least as wide (20 bytes of u5 codes from 20-byte boundaries move in
    five 4-byte accesses, 10-byte runs in ten 2-byte ones; 48 bytes of u3 from 16-byte
    boundaries in three 16-byte accesses, 12-byte runs in twelve 4-byte ones)."""
    offsets = _offsets(shared, layout)
    count = layout.num_locals
    r = 1 << (min(count, most or count).bit_length() - 1)
    while r >= 1:
        if count % r == 0 and r * bits % 8 == 0:
            runs = offsets.reshape(offsets.shape[0], count // r, r)
            starts = runs[..., 0] * bits
            consecutive = np.all(runs - runs[..., :1] == np.arange(r))
            if consecutive and not np.any(starts % 8):
                whole = _pow2(int(np.gcd.reduce(starts.reshape(-1))) // 8)
                return r, min(whole, _pow2(r * bits // 8))
        r //= 2
    return 1, 0


def _pow2(value: int) -> int:
    """The largest power of two up to `MAX_ACCESS` dividing `value` (`MAX_ACCESS` for 0)."""
    return min(value & -value, MAX_ACCESS) if value else MAX_ACCESS


def first_replicas(layout: Layout) -> np.ndarray:
    """bool [threads]: the thread holds elements no lower thread holds the same of."""
    table = layout.table()
    flat = np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), layout.shape)
    _, first = np.unique(flat, axis=0, return_index=True)
    mask = np.zeros(layout.num_threads, dtype=bool)
    mask[first] = True
    return mask


def access_wavefronts(
    shared: SharedLayout, layout: Layout, bits: int, store: bool = False
) -> np.ndarray | None:
    """int64 [warps, 3]: per warp (the last one partial where the threads are not whole
    warps), the instructions, wavefronts and phases of moving `layout` to or from
    `shared` in `access_runs`' accesses, a `store` or a load (module docstring); None
    where the accesses do not hold whole elements (codes read through byte windows,
    runs of codes whose bytes do not split into whole-element accesses)."""
    _, width = access_runs(shared, layout, bits)
    if width == 0 or width * 8 % bits:
        return None
    vector = width * 8 // bits
    offsets = _offsets(shared, layout)
    threads = offsets.shape[0]
    starts = offsets.reshape(threads, -1, vector)[..., 0] * bits // 8  # [threads, k]
    count = starts.shape[1]
    active = first_replicas(layout) if store else np.ones(threads, dtype=bool)
    warp = np.arange(threads) // WARP_SIZE
    warps = int(warp[-1]) + 1
    # Each active lane's place among its warp's active lanes: predicated-off lanes leave
    # the phases, which the warp's active lanes fill in order.
    seen = np.cumsum(active)
    before = np.concatenate([[0], seen])[warp * WARP_SIZE]
    phase = warp * WARP_SIZE + (seen - 1 - before) // phase_size(width)
    words = starts[active] // BANK_BYTES  # [lanes, k]
    words = words[..., None] + np.arange(max(1, width // BANK_BYTES))  # [lanes, k, w]
    groups = np.arange(count) * (warps * WARP_SIZE) + phase[active][:, None]  # [lanes, k]
    groups = np.broadcast_to(groups[..., None], words.shape)
    # Distinct (instruction, phase, word), then the most words in one bank of a phase.
    span = int(words.max()) + 1 if words.size else 1
    distinct = np.unique(groups.ravel() * span + words.ravel())
    banked, per_bank = np.unique(
        distinct // span * NUM_BANKS + distinct % span % NUM_BANKS, return_counts=True
    )
    group_of = banked // NUM_BANKS
    firsts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    waves = np.maximum.reduceat(per_bank, firsts) if firsts.size else per_bank
    group_warp = group_of[firsts] % (warps * WARP_SIZE) // WARP_SIZE
    counts = np.zeros((warps, 3), dtype=np.int64)
    counts[:, 0] = count * np.bincount(warp[active], minlength=warps).astype(bool)
    counts[:, 1] = np.bincount(group_warp, weights=waves, minlength=warps)
    counts[:, 2] = np.bincount(group_warp, minlength=warps)
    return counts


def ldmatrix_dim(layout: Layout, shared: SharedLayout, bits: int) -> int | None:
    """The dim along which ldmatrix reads 16-byte lines of `shared` for a tile of
    `layout`: 1, or 0 for a transposed view read as its untransposed tile; None where
    the lowering uses no ldmatrix (`relayout.ldmatrix_plan`, as
    `lowering.shared._ldmatrix_reads` tries it)."""
    if bits != 16 or layout.rank != 2 or shared.rank != 2:
        return None
    flip = (1, 0)
    for dim, regs, view in ((1, layout, shared), (0, layout.permute(flip), shared.permute(flip))):
        fits = any(regs.divisible_by(atom.layout) for atom in LDMATRIX_CANDIDATES)
        if fits and contiguous_elements(view) % 8 == 0 and regs.shape[-1] * 2 % 16 == 0:
            return dim
    return None


def ldmatrix_wavefronts(layout: Layout, shared: SharedLayout, dim: int) -> np.ndarray:
    """int64 [warps, 3]: per whole warp, the matrices, wavefronts and phases of ldmatrix
    reads whose lines run along `dim` (module docstring): each of the warp's aligned
    8x8 blocks is one matrix."""
    table = layout.table()  # [threads, locals, 2]
    warps = layout.num_threads // WARP_SIZE
    counts = np.zeros((warps, 3), dtype=np.int64)
    line = np.arange(8)
    for warp in range(warps):
        part = table[warp * WARP_SIZE : (warp + 1) * WARP_SIZE].reshape(-1, 2)
        for r0, c0 in np.unique(part // 8, axis=0) * 8:
            rows = (r0 + line, np.full(8, c0)) if dim == 1 else (np.full(8, r0), c0 + line)
            addresses = np.asarray(shared.offset(rows)) * 2
            counts[warp] += (1, wavefronts(addresses.astype(np.int64), 16), 1)
    return counts
