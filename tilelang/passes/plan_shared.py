"""Pass `plan_shared`: layouts and byte offsets of the shared tiles.

Assumes a verified function. Guarantees:

- every shared tile has a layout: a tile without one gets
  `tilelang.analysis.shared_layouts.default_layout` (row-major, swizzled for
  conflict-free ldmatrix and cp.async), or, when the kernel only stores register tiles
  to it and loads them from it, `access_layout` (the swizzle whose accesses take the
  fewest wavefronts). A layout the user gave is kept. Every use of the
  tile sees the new type;
- every `shared_alloc` gets ``offset=<byte offset>`` (a multiple of `ALIGN`, 16; on
  sm_90a a swizzled tile's of its swizzle period, `shared_layouts.alignment`) and
  ``bytes=<bytes it occupies>`` (its layout's extent, packed, rounded up to 16) in one
  shared buffer of `total_bytes(fn)` bytes;
- two tiles whose live ranges overlap never overlap in memory. A tile's live range runs
  from its `shared_alloc` to its last use (`tilelang.analysis.liveness`: a use inside a loop
  that does not contain the allocation extends the range over the whole loop); a tile
  passed through loop-carried values or `if` results shares one live range with the
  values it flows into. Tiles whose ranges do not overlap may share bytes: placement is
  first-fit, largest tile first (program order among equals);
- `SharedMemoryError` when the buffer exceeds what one block of the target may use
  (`tilelang.target`: 163 KiB on sm_80, 99 KiB on sm_86/sm_89/sm_120, 227 KiB on sm_90
  and sm_100; the CPU backend accepts what sm_90 does). The message starts with the
  source location of the largest tile and names the target, the bytes needed and the
  largest tiles.

Not done here: when a tile reuses the bytes of a dead one, the lowering must keep a
barrier between the last read of the old tile and the first write of the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang.analysis.liveness import Program
from tilelang.analysis.shared_layouts import (
    ALIGN,
    access_layouts,
    alignment,
    default_layout,
    round_up,
    tile_bytes,
)
from tilelang.ir.nodes import For, Function, If, Instr, SharedAlloc, Var, Yield
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.text import print_type
from tilelang.ir.types import SharedType
from tilelang.ir.visit import Rewriter, walk
from tilelang.target import CPU, Target


class SharedMemoryError(ValueError):
    """The kernel's shared tiles do not fit the device's shared memory."""


def run(fn: Function, target: Target = CPU) -> Function:
    fn = _WithLayouts(access_layouts(fn)).rewrite_function(fn)
    tiles = _tiles(fn, target)
    _place(tiles)
    total = max((t.offset + t.bytes for t in tiles), default=0)
    if total > target.shared_bytes:
        raise SharedMemoryError(_limit_message(fn, tiles, total, target))
    placed = {t.alloc.result: t for t in tiles}
    return _Record(placed).rewrite_function(fn)


# -- layouts ---------------------------------------------------------------------------


class _WithLayouts(Rewriter):
    def __init__(self, chosen: dict[Var, SharedLayout]) -> None:
        super().__init__()
        self.chosen = chosen  # by the tile's accesses (`shared_layouts.access_layouts`)

    def new_var(self, var: Var) -> Var:
        type_ = var.type
        if isinstance(type_, SharedType) and type_.layout is None:
            layout = self.chosen.get(var) or default_layout(type_.dtype, type_.shape)
            return Var(var.name, SharedType(type_.dtype, type_.shape, layout))
        return var


class _Record(Rewriter):
    def __init__(self, placed: dict[Var, _Tile]) -> None:
        super().__init__()
        self.placed = placed

    def visit_SharedAlloc(self, instr: SharedAlloc) -> Instr:
        tile = self.placed[instr.result]
        return self.generic(instr).with_attrs(offset=tile.offset, bytes=tile.bytes)


# -- live ranges -------------------------------------------------------------------------


@dataclass
class _Tile:
    alloc: SharedAlloc
    first: int
    last: int
    bytes: int
    offset: int = -1
    align: int = ALIGN

    def overlaps_in_time(self, other: _Tile) -> bool:
        return self.first <= other.last and other.first <= self.last

    def overlaps_in_memory(self, offset: int, size: int) -> bool:
        return self.offset < offset + size and offset < self.offset + self.bytes


def _tiles(fn: Function, target: Target) -> list[_Tile]:
    program = Program.of(fn)
    groups = _alias_groups(fn)
    ranges: dict[Var, tuple[int, int]] = {}
    for var, root in groups.items():
        first, last = program.start.get(var, -1), program.stop.get(var, -1)
        low, high = ranges.get(root, (first, last))
        ranges[root] = (min(low, first), max(high, last))
    tiles = []
    for instr in walk(fn):
        if isinstance(instr, SharedAlloc):
            var = instr.result
            first, last = ranges.get(groups.get(var, var), (0, 0))
            align = alignment(var.type, target.has_wgmma)
            tiles.append(_Tile(instr, first, last, tile_bytes(var.type), align=align))
    return tiles


def _alias_groups(fn: Function) -> dict[Var, Var]:
    """Every shared Var -> the representative of the values it may be (union-find)."""
    parent: dict[Var, Var] = {}

    def find(var: Var) -> Var:
        parent.setdefault(var, var)
        while parent[var] != var:
            parent[var] = parent[parent[var]]
            var = parent[var]
        return var

    def union(a: object, b: object) -> None:
        if isinstance(a, Var) and isinstance(b, Var) and isinstance(a.type, SharedType):
            parent[find(a)] = find(b)

    for instr in walk(fn):
        if isinstance(instr, SharedAlloc):
            find(instr.result)
        elif isinstance(instr, For):
            yielded = _yielded(instr.body.instrs)
            for n, carried in enumerate(instr.carried):
                for other in (
                    _nth(instr.inits, n),
                    _nth(yielded, n),
                    _nth(instr.results, n),
                ):
                    union(other, carried)
        elif isinstance(instr, If):
            for body in (instr.then_body, instr.else_body):
                for value, result in zip(_yielded(body.instrs), instr.results, strict=False):
                    union(value, result)
    return {var: find(var) for var in list(parent)}


def _yielded(instrs: tuple[Instr, ...]) -> tuple:
    return instrs[-1].values if instrs and isinstance(instrs[-1], Yield) else ()


def _nth(values: tuple, n: int) -> object:
    return values[n] if n < len(values) else None


# -- placement -------------------------------------------------------------------------


def _place(tiles: list[_Tile]) -> None:
    """First fit, largest first: the lowest aligned offset clear of every tile placed
    so far whose live range overlaps."""
    order = sorted(range(len(tiles)), key=lambda n: (-tiles[n].bytes, n))
    placed: list[_Tile] = []
    for n in order:
        tile = tiles[n]
        rivals = [p for p in placed if p.overlaps_in_time(tile)]
        candidates = sorted({0, *(round_up(p.offset + p.bytes, tile.align) for p in rivals)})
        tile.offset = next(
            c for c in candidates if not any(p.overlaps_in_memory(c, tile.bytes) for p in rivals)
        )
        placed.append(tile)


def _limit_message(fn: Function, tiles: list[_Tile], total: int, target: Target) -> str:
    largest = sorted(tiles, key=lambda t: (-t.bytes, t.first))
    listed = ", ".join(
        f"%{t.alloc.result.name}: {print_type(t.alloc.result.type)} ({t.bytes} bytes, "
        f"at {t.alloc.loc})"
        for t in largest[:3]
    )
    return (
        f"{largest[0].alloc.loc}: kernel {fn.name} needs {total} bytes of shared memory, more "
        f"than the {target.shared_bytes} bytes ({target.shared_bytes // 1024} KiB) a block "
        f"can have on {target.name}. The largest shared tiles: {listed}. Use smaller tiles "
        f"or fewer pipeline stages."
    )


__all__ = ["SharedMemoryError", "run"]
