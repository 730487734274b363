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
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tilelang.ir import nodes as ir

__all__ = ["SectorRow", "extra_read_bytes", "format_sectors", "sector_rows"]

_KEY = re.compile(r"global_(load|store|atomic|load_warp)_sectors_(\d+)_of_(\d+) (\S+) (.+)")


@dataclass(frozen=True)
class SectorRow:
    """One access whose warp requests touch `sectors` 32-byte sectors each where the
    bytes they move fit in `minimum`: its kind ("load", "store", "atomic"), tensor and
    source line, and its warp requests per block (every copy of the code counted). For
    a load, `charged` is what DRAM is charged: the sectors its block's warps touch, each
    warp's requests together, over the fewest their bytes need (1: none wasted)."""

    kind: str
    tensor: str
    loc: str
    sectors: int
    minimum: int
    requests: int
    charged: float = 1.0

    @property
    def factor(self) -> float:
        return self.sectors / self.minimum


def sector_rows(stats: Iterable[tuple[str, int]]) -> tuple[SectorRow, ...]:
    """The uncoalesced accesses the lowering recorded in `stats`, worst first."""
    found = [(m.groups(), n) for key, n in stats if (m := _KEY.fullmatch(key))]
    charged = {
        (tensor, loc): int(s) / int(m)
        for (kind, s, m, tensor, loc), _ in found
        if kind == "load_warp"
    }
    rows = [
        SectorRow(kind, tensor, loc, int(s), int(m), n, charged.get((tensor, loc), 1.0))
        for (kind, s, m, tensor, loc), n in found
        if kind != "load_warp"
    ]
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
        else:
            cost = "not charged (each warp's requests together read only the sectors they need)"
        lines.append(
            f"    {r.kind} {r.tensor} at {r.loc}: {r.sectors} sectors per request, minimum "
            f"{r.minimum} ({r.factor:.3g}x), {r.requests} requests per block; {cost}"
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
    if any(r.kind == "load" and r.charged > 1 for r in rows):
        lines.append(
            "    hint: a load's lanes rows apart: load in the default layout (no layout=) "
            "and move the tile between layouts on chip (tl.transpose, a shared tile)"
        )
    if any(r.kind != "load" for r in rows):
        lines.append(
            "    hint: a store's lanes rows apart (a transposed tile, an mma fragment): stage "
            "it through shared memory, s = tl.shared(shape, dtype); s.store(tile); "
            "tl.store(y, offsets, s.load()), whose load takes a coalesced layout"
        )
    return lines
