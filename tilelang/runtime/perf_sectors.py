"""Uncoalesced global accesses, for the static performance report: the requests the
lowering counted as touching more 32-byte sectors than the bytes they move need.

The lowering (`tilelang.lowering.coalescing`) records each such access in the thread
function's stats as ``global_{kind}_sectors_{s}_of_{m} {tensor} {file}:{line}`` = its
warp requests per block, and a load whose warps waste sectors all their requests
together as ``global_load_warp_sectors_{s}_of_{m} {tensor} {file}:{line}``; this module
reads them back (`sector_rows`), says what the model charges for them
(`extra_read_bytes`) and prints them (`format_sectors`).

What the model assumes of them: DRAM moves whole sectors. A sector one warp's requests
of an access touch again is read from DRAM once (L1 or L2 keeps it between one warp's
back-to-back requests); sectors different warps share are charged to each, as if no
warp found the rest of a sector in L1 or L2 — an upper bound. So a tensor read by a load whose
warps touch s sectors (summed over the block's warps, each warp's requests together)
where their bytes need m is charged s/m times its bytes (its worst such load), which
lengthens the DRAM floor and the memory-latency bound. A store's or an atomic's
partial sectors are merged in L2 before DRAM when the block writes the whole sector
(where it does not, DRAM may see partial writes: not modelled either);
they cost L2 bandwidth, as the extra sector requests of any uncoalesced access do,
which the model has no bound for: stores and atomics are listed, the prediction does
not change.

**The box's footprint.** No layout reads fewer sectors than the box itself lies in.
`boxes` reads each access's box out of the planned block IR (its tile shape, the
tensor's declared shape, the dtype; matched to a record by tensor and source line) and
counts its footprint F: the distinct sectors of its bytes, the box starting a sector
and each row along a dim with a runtime stride starting its own (the lowering's
assumptions). Its density d = (box bytes) / 32F is the share of each sector the box
uses (1 for rows of whole sectors; 1/4 for rows of 8 bytes far apart). The fewest
sectors a layout can reach is then bytes / 32d, not bytes / 32: a load's block
minimum is max(m, ceil(B / 32d)), B its warps' distinct bytes summed over the warps
(each warp's replicas once; from the tile's layout; where the IR has none, a copy's,
B is taken as 32m), and a request's max(m,
ceil(m / d)) (its bytes taken as m whole sectors). Only the excess over that minimum
is the layout's: a load is charged s / (block minimum), and the layout hint is given
only for an access with such excess. Where the footprint itself wastes sectors (d < 1:
the box's rows are shorter than a sector), the rest of each sector belongs to the
neighbouring boxes of the same tensor, which the model assumes are read from L2 (as
the next iteration of a loop along the row reads them): not charged; the access is
listed with the hint to store the tensor with the box's long dim last.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout
from tilelang.ir.shape_expr import Lit
from tilelang.ir.visit import walk

__all__ = ["Box", "SectorRow", "boxes", "extra_read_bytes", "format_sectors", "sector_rows"]

SECTOR = 32


@dataclass(frozen=True)
class Box:
    """The memory an access's box lies in (module docstring): `footprint` sectors for
    `nbytes` bytes in `rows` contiguous runs, and `warp_bytes`, its warps' distinct bytes
    summed over the warps (None where the layout is unknown)."""

    footprint: int
    nbytes: float
    rows: int
    warp_bytes: float | None = None

    @property
    def density(self) -> float:
        """The share of each footprint sector the box's bytes fill."""
        return self.nbytes / (SECTOR * self.footprint)

    def describe(self) -> str:
        return f"{self.rows} rows of {self.nbytes / self.rows:.4g} B"


def footprint(shape: tuple[int, ...], extents: tuple[int | None, ...], bits: int) -> Box:
    """The footprint of a box of `shape` in a row-major tensor of `extents` (None: a
    runtime size), `bits` per element, starting a sector (module docstring)."""
    rank = len(shape)
    far = max((d for d in range(rank) if any(e is None for e in extents[d + 1 :])), default=-1)
    rows = math.prod(shape[: far + 1])
    grids = np.meshgrid(*(np.arange(n) for n in shape[far + 1 :]), indexing="ij")
    offset = np.zeros(grids[0].shape if grids else (), dtype=np.int64)
    for d, grid in zip(range(far + 1, rank), grids, strict=True):
        offset = offset + grid * math.prod(int(e) for e in extents[d + 1 :])  # type: ignore[arg-type]
    first = np.sort(offset.ravel()) * bits
    sectors = np.unique(np.concatenate([first // 8 // SECTOR, (first + bits - 1) // 8 // SECTOR]))
    runs = 1 + int(np.count_nonzero(np.diff(first) != bits))
    return Box(rows * len(sectors), math.prod(shape) * bits / 8, rows * runs)


def _warp_bytes(layout: Layout, bits: int) -> float:
    """The distinct bytes of each warp's elements, summed over the warps."""
    table = layout.table()
    flat = np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), layout.shape)
    return sum(
        len(np.unique(flat[w : w + 32])) * bits / 8 for w in range(0, layout.num_threads, 32)
    )


def boxes(fn: ir.Function) -> dict[tuple[str, str], Box]:
    """The box of each global load, copy, store and atomic of `fn` (the planned block
    IR) by (tensor, source line), as the lowering's records name them; a line with
    boxes of different shapes is left out."""
    found: dict[tuple[str, str], Box | None] = {}
    for instr in walk(fn):
        layout = None
        if isinstance(instr, ir.Load):
            tile = instr.result.type
            layout = tile.layout
        elif isinstance(instr, ir.Store | ir.Atomic):
            tile = instr.value.type
        elif isinstance(instr, ir.CopyAsync):  # its layout is the lowering's choice
            tile = instr.shared.type
        else:
            continue
        shape, bits = tuple(tile.shape), tile.dtype.bits
        extents = tuple(e.value if isinstance(e, Lit) else None for e in instr.tensor.type.shape)
        box = footprint(shape, extents, bits)
        if layout is not None:
            box = Box(box.footprint, box.nbytes, box.rows, _warp_bytes(layout, bits))
        key = (instr.tensor.name, f"{instr.loc.file.rsplit('/', 1)[-1]}:{instr.loc.line}")
        if key in found and found[key] != box:
            box = None  # two boxes on one line: not told apart
        found[key] = box
    return {key: box for key, box in found.items() if box is not None}


_KEY = re.compile(r"global_(load|store|atomic|load_warp)_sectors_(\d+)_of_(\d+) (\S+) (.+)")


@dataclass(frozen=True)
class SectorRow:
    """One access whose warp requests touch `sectors` 32-byte sectors each where the
    bytes they move fit in `minimum`: its kind ("load", "store", "atomic"), tensor and
    source line, and its warp requests per block (every copy of the code counted). For
    a load, `charged` is what DRAM is charged: the sectors its block's warps touch, each
    warp's requests together, over the fewest the box's footprint allows (1: none
    wasted). `least`: the fewest sectors a request needs with the box's footprint
    (module docstring); `box`: that footprint, None where the IR does not say."""

    kind: str
    tensor: str
    loc: str
    sectors: int
    minimum: int
    requests: int
    charged: float = 1.0
    least: int = 0
    box: Box | None = None

    @property
    def factor(self) -> float:
        return self.sectors / self.minimum

    @property
    def excess(self) -> bool:
        """Whether the layout touches more sectors than the box's footprint needs."""
        return self.charged > 1 if self.kind == "load" else self.sectors > self.least

    @property
    def short_rows(self) -> bool:
        """Whether the box's own footprint wastes sectors (rows shorter than a sector)."""
        return self.box is not None and self.box.footprint > math.ceil(self.box.nbytes / SECTOR)


def _least(minimum: int, box: Box | None, nbytes: float | None = None) -> int:
    """The fewest sectors `nbytes` (taken as `minimum` whole sectors where None) of the
    box need with its footprint, and never fewer than `minimum`."""
    if box is None or box.density >= 1:
        return minimum
    wanted = nbytes if nbytes is not None else minimum * SECTOR
    return max(minimum, math.ceil(wanted / (SECTOR * box.density) - 1e-9))


def sector_rows(
    stats: Iterable[tuple[str, int]], found: Mapping[tuple[str, str], Box] | None = None
) -> tuple[SectorRow, ...]:
    """The uncoalesced accesses the lowering recorded in `stats`, worst first; `found`
    (`boxes`) gives their boxes' footprints."""
    found = found or {}
    records = [(m.groups(), n) for key, n in stats if (m := _KEY.fullmatch(key))]
    charged = {}
    for (kind, s, m, tensor, loc), _ in records:
        if kind == "load_warp":
            box = found.get((tensor, loc))
            least = _least(int(m), box, box.warp_bytes if box is not None else None)
            charged[(tensor, loc)] = max(1.0, int(s) / least)
    rows = []
    for (kind, s, m, tensor, loc), n in records:
        if kind == "load_warp":
            continue
        box = found.get((tensor, loc))
        rows.append(
            SectorRow(
                kind,
                tensor,
                loc,
                int(s),
                int(m),
                n,
                charged.get((tensor, loc), 1.0),
                _least(int(m), box),
                box,
            )
        )
    return tuple(sorted(rows, key=lambda r: (-r.factor, r.kind, r.tensor, r.loc)))


def extra_read_bytes(
    fn: ir.Function, shapes: Mapping[str, tuple[int, ...]], rows: tuple[SectorRow, ...]
) -> float:
    """The DRAM bytes uncoalesced loads add to reading each tensor once: a tensor's
    bytes times (its worst load's `charged` - 1)."""
    dtypes = {p.name: p.type.dtype for p in fn.params if p.name in shapes}
    worst: dict[str, float] = {}
    for row in rows:
        if row.kind == "load" and row.tensor in dtypes:
            worst[row.tensor] = max(worst.get(row.tensor, 1.0), row.charged)
    return sum(
        math.prod(shapes[name]) * dtypes[name].bits / 8 * (factor - 1)
        for name, factor in worst.items()
    )


def format_sectors(rows: tuple[SectorRow, ...], extra: float) -> list[str]:
    """The report's lines on uncoalesced accesses (none when every access is coalesced)."""
    if not rows:
        return []
    lines = ["", "  uncoalesced global accesses: 32-byte sectors per warp request vs the fewest"]
    for r in rows:
        if r.kind != "load":
            cost = "not charged (merged in L2)"
        elif r.charged > 1:
            cost = f"DRAM charged {r.charged:.3g}x (whole sectors, each warp's requests together)"
        elif r.short_rows:
            cost = "not charged (the box's footprint is the waste; the rest of its sectors assumed read from L2)"
        else:
            cost = "not charged (each warp's requests together read only the sectors they need)"
        box = ""
        if r.box is not None and r.short_rows:
            box = f"; the box is {r.box.describe()}: {r.least} with its footprint"
        lines.append(
            f"    {r.kind} {r.tensor} at {r.loc}: {r.sectors} sectors per request, minimum "
            f"{r.minimum} ({r.factor:.3g}x{box}), {r.requests} requests per block; {cost}"
        )
    read = (
        f"+{extra / 1e6:.4g} MB read from DRAM for loads' whole sectors (an upper bound: "
        "another warp may find the rest of a sector in L1 or L2); "
        if extra
        else ""
    )
    lines.append(
        f"    model: {read}the extra sector requests cost L2 bandwidth, which the model "
        "does not bound: a GPU may run slower"
    )
    if any(r.kind == "load" and r.excess for r in rows):
        lines.append(
            "    hint: a load's lanes far apart: either each thread's run is longer than one "
            "access (the alignment facts prove no wider vector: the row length or offset is not "
            "a multiple of 16 bytes; state it with compile(assume=...) or keep one access per "
            "thread, lanes on adjacent elements), or its lanes are rows apart: load in the "
            "default layout (no layout=) and move the tile between layouts on chip "
            "(tl.transpose, a shared tile)"
        )
    if any(r.kind != "load" and r.excess for r in rows):
        lines.append(
            "    hint: a store's lanes far apart: either each thread's run is longer than one "
            "access (the alignment facts prove no wider vector: the row length or offset is not "
            "a multiple of 16 bytes; state it with compile(assume=...) or compute the tile in a "
            "layout of one access per thread, lanes on adjacent elements), or its lanes are "
            "rows apart (a transposed tile, an mma fragment): stage it through shared memory, "
            "s = tl.shared(shape, dtype); s.store(tile); tl.store(y, offsets, s.load()), whose "
            "load takes a coalesced layout"
        )
    short = sorted({r.tensor for r in rows if r.short_rows})
    if short:
        lines.append(
            f"    hint: {', '.join(short)}: the box's rows are shorter than a 32-byte sector "
            "and far apart in the tensor, so no layout of the box reads fewer sectors: store "
            "the tensor with the box's long dim last (transposed), so that its rows fill "
            "whole sectors"
        )
    return lines
