"""How many 32-byte sectors each warp-wide global access touches, against the fewest
the bytes it moves could take: the lowering's record of coalescing.

For a global `load`, `store`, `atomic_add` or `copy_async`, one warp request is one
access instruction (one piece of one run, `memory.pieces`) executed by the 32 lanes of
one warp. Its lanes' addresses follow from the tile's layout (`Layout.table`) and the
tensor's row-major strides; it touches the distinct sectors those bytes lie in, and
needs at least ceil(distinct bytes / 32). What is assumed:

- the box's first element starts a sector (both counts are relative to it);
- a dim whose stride is a runtime size (some size after it is not a literal) is *far
  apart*: each distinct index along it is another row of sectors, as it is wherever the
  row is at least as long as the tile's part of it and a multiple of 32 bytes;
- every element is in bounds and selected (requests are counted as if every mask
  held; a run a user's mask cuts, read or written element by element, is not); a
  store or atomic is made by the first replica's lanes only, as the lowering does, and a
  load's lanes that read the same bytes are one access;
- runs of packed codes that do not start on a byte (bit-by-bit accesses) and accesses
  whose addresses come from data (gathers, scatters) are not counted.

`record` adds, for every (sectors, minimum) pair of an access whose requests touch more
sectors than their minimum, the stat ``global_{kind}_sectors_{s}_of_{m} {tensor}
{file}:{line}`` = its warp requests per block (each copy of the code the lowering
emits counted); and for a load whose warps, all their requests of it together, touch
more sectors than their bytes need, ``global_load_warp_sectors_{s}_of_{m} {tensor}
{file}:{line}`` (s and m summed over the block's warps; a sector one warp touches
again counted once). `kernel.stats` shows them and `tilelang.runtime.perf_sectors`
reads them back for the static performance report. Coalesced accesses add nothing.

The counts are numpy over the layout's table (the tile's elements once), no Python loop
over elements.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.shape_expr import Lit, ShapeExpr
from tilelang.lowering.values import WARP, piece_limit, pieces

if TYPE_CHECKING:
    from tilelang.lowering.context import Lowering

__all__ = ["SECTOR", "Sectors", "record", "request_sectors"]

SECTOR = 32


def _first_replica(layout: Layout) -> np.ndarray:
    """bool [threads]: the thread is the first of those holding the same elements."""
    tid = np.arange(layout.num_threads)
    first = np.ones(layout.num_threads, dtype=bool)
    stride = 1
    for mode in reversed(layout.thread_modes):
        size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
        if isinstance(mode, Rep) and size > 1:
            first &= (tid // stride) % size == 0
        stride *= size
    return first


def _distinct(keys: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Distinct values along the last axis of `keys` (>= 0) where `active` holds."""
    masked = np.where(active, keys, -1)
    ordered = np.sort(masked, axis=-1)
    changes = (np.diff(ordered, axis=-1) != 0).sum(axis=-1) + 1
    return changes - (ordered[..., 0] < 0)


@dataclass(frozen=True)
class Sectors:
    """The sectors of one access by a block: `requests` maps (sectors, minimum) of a
    warp request to how many of the block's requests have them; `warp_sectors` sums,
    over the warps, the sectors each warp's requests touch together, and `warp_minimum`
    the fewest its distinct bytes need (a sector one warp touches twice counted once)."""

    requests: Counter[tuple[int, int]]
    warp_sectors: int
    warp_minimum: int


def request_sectors(
    layout: Layout,
    extents: tuple[int | None, ...],
    bits: int,
    run: int,
    limit: int | None,
    first_only: bool,
) -> Sectors | None:
    """The sectors (`Sectors`) of a block's requests for a tile of `layout`, moved in
    runs of `run` elements of `bits` bits, each split by `pieces(.., limit)`, in a
    row-major tensor whose sizes are `extents` (None: a runtime size); `first_only`:
    only the first replica's lanes access (a store). None when the runs do not start on
    bytes."""
    if run * bits % 8 or layout.num_threads % WARP:
        return None
    rank = layout.rank
    far = max((d for d in range(rank) if any(e is None for e in extents[d + 1 :])), default=-1)
    strides = [math.prod(int(e) for e in extents[d + 1 :]) for d in range(far + 1, rank)]
    index = layout.table()[:, 0 : layout.num_locals : run, :]  # [threads, runs, rank]
    bit = np.zeros(index.shape[:2], dtype=np.int64)
    for d, stride in zip(range(far + 1, rank), strides, strict=True):
        bit += index[:, :, d] * stride * bits
    row = np.zeros(index.shape[:2], dtype=np.int64)
    for d in range(far + 1):  # far-apart dims: a row key, sectors never shared across it
        row = row * layout.shape[d] + index[:, :, d]
    start = bit // 8
    parts = pieces(0, run * bits // 8, limit)
    at = np.array([a for a, _ in parts], dtype=np.int64)
    width = np.array([w for _, w in parts], dtype=np.int64)
    first = start[:, :, None] + at  # [threads, runs, pieces]
    last = first + width - 1
    span = int(last.max()) + 1
    rows = row[:, :, None] * (span // SECTOR + 1)
    sector_keys = np.stack([rows + first // SECTOR, rows + last // SECTOR], axis=-1)
    byte_keys = row[:, :, None] * span + first
    warps = layout.num_threads // WARP
    active = _first_replica(layout) if first_only else np.ones(layout.num_threads, dtype=bool)
    active = np.broadcast_to(active[:, None, None], first.shape)

    def by_warp(values: np.ndarray) -> np.ndarray:  # lanes last: [warps, runs, pieces, lanes]
        lanes = values.reshape(warps, WARP, *values.shape[1:])
        return np.moveaxis(lanes, 1, -1)

    lanes = by_warp(active)
    lane_sectors, lane_bytes = by_warp(sector_keys), by_warp(byte_keys)
    both = np.concatenate([lanes] * 2, axis=-1)  # a piece's first and last sector
    sectors = _distinct(lane_sectors.reshape(*lanes.shape[:-1], -1), both)
    distinct_bytes = _distinct(lane_bytes, lanes) * width
    minimum = -(-distinct_bytes // SECTOR)
    found: Counter[tuple[int, int]] = Counter()
    pairs = np.stack([sectors.ravel(), minimum.ravel()], axis=-1)
    values, counts = np.unique(pairs[pairs[:, 0] > 0], axis=0, return_counts=True)
    for (s, m), n in zip(values.tolist(), counts.tolist(), strict=True):
        found[(s, m)] = n
    # each warp's requests together: the sectors it touches, against its distinct bytes
    union = _distinct(lane_sectors.reshape(warps, -1), both.reshape(warps, -1))
    widths = np.broadcast_to(width[None, :, None], lanes.shape[1:])
    least = 0
    for w in range(warps):
        _, once = np.unique(lane_bytes[w][lanes[w]], return_index=True)
        least += -(-int(widths[lanes[w]][once].sum()) // SECTOR)
    return Sectors(found, int(union.sum()), least)


@functools.lru_cache(maxsize=1024)
def _sectors(
    layout: Layout,
    extents: tuple[int | None, ...],
    bits: int,
    run: int,
    limit: int | None,
    first: bool,
) -> Sectors | None:
    """`request_sectors`, kept (read only): a kernel repeats its accesses, and a build for
    another target repeats them all."""
    return request_sectors(layout, extents, bits, run, limit, first_only=first)


def _extents(shape: tuple[ShapeExpr, ...]) -> tuple[int | None, ...]:
    return tuple(e.value if isinstance(e, Lit) else None for e in shape)


def _loc(instr: ir.Instr) -> str:
    return f"{instr.loc.file.rsplit('/', 1)[-1]}:{instr.loc.line}"


def record(
    lo: Lowering,
    kind: str,
    instr: ir.Instr,
    layout: Layout,
    bits: int,
    run: int,
    widest: int | None = None,
) -> None:
    """Counts in `lo`'s stats the requests of `instr`, a global access of `kind` ("load",
    "store" or "atomic", the last two by the first replica only) in runs of `run`
    elements split as its `align` attribute (and `widest`, bytes) allows, that touch
    more sectors than their minimum (module docstring)."""
    limit = piece_limit(instr, run)
    if widest is not None:
        limit = widest if limit is None else min(limit, widest)
    extents = _extents(instr.tensor.type.shape)
    found = _sectors(layout, extents, bits, run, limit, kind != "load")
    if found is None:
        return
    where = f"{instr.tensor.name} {_loc(instr)}"
    for (sectors, minimum), requests in sorted(found.requests.items()):
        if sectors > minimum:
            lo.b.count(f"global_{kind}_sectors_{sectors}_of_{minimum} {where}", requests)
    if kind == "load" and found.warp_sectors > found.warp_minimum:
        lo.b.count(f"global_load_warp_sectors_{found.warp_sectors}_of_{found.warp_minimum} {where}")
