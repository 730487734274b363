"""Which moves between register tiles stay in registers, for the register estimate.

A move (`relayout`, `transpose`, `reshape`, `broadcast`, `slice`) stays in registers when
each thread already holds every element its part of the result reads, each at the same
local in every thread: the lowering's test (`tilelang.lowering.relayout`). Otherwise it
goes through the scratch area. `tilelang.passes.plan_registers` asks twice per move (is
the result a rename of the operand's registers; what addresses does the move take), and
the pipelining pass and `plan_registers` each estimate a kernel: the verdict depends
only on the move's kind, its indices (`perm`, `starts`) and the two tile types, so it is
found once per such key (`stays_in_registers`), and each layout's sorted table once.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tilelang.ir.layout import Layout
from tilelang.ir.nodes import Broadcast, Instr, Reshape, Slice, Transpose, Var
from tilelang.ir.types import TileType


@functools.lru_cache(maxsize=512)
def layout_table(layout: Layout) -> np.ndarray:
    """`layout.table()`, kept (callers only read it)."""
    return layout.table()


def move_tiles(instr: Instr) -> tuple[Var, TileType, TileType] | None:
    """(operand, its type, the result's type) of a move between tiles with layouts."""
    value, result = instr.uses()[0], instr.defs()[0].type
    source = value.type if isinstance(value, Var) else None
    if not (isinstance(source, TileType) and isinstance(result, TileType)):
        return None
    if source.layout is None or result.layout is None:
        return None
    return value, source, result


def wanted(instr: Instr, source: TileType, result: TileType) -> np.ndarray:
    """The source indices [threads, locals, rank] each local of a move's result reads."""
    return _wanted(type(instr), move_indices(instr), source, result)


def stays_in_registers(instr: Instr, source: TileType, result: TileType) -> bool:
    """Whether each thread holds the elements the move `instr` from `source` to `result`
    reads, each at the same local in every thread (the lowering's test)."""
    return _stays(type(instr), move_indices(instr), source, result)


def move_indices(instr: Instr) -> tuple[int, ...]:
    """What, besides the two types, says which elements a move reads."""
    if isinstance(instr, Transpose):
        return tuple(instr.perm)
    if isinstance(instr, Slice):
        return tuple(instr.starts)
    return ()


@functools.lru_cache(maxsize=4096)
def _stays(kind: type, indices: tuple[int, ...], source: TileType, result: TileType) -> bool:
    assert source.layout is not None
    return _in_registers(source.layout, _wanted(kind, indices, source, result))


def _wanted(kind: type, indices: tuple[int, ...], source: TileType, result: TileType) -> np.ndarray:
    assert result.layout is not None
    table = layout_table(result.layout)
    if kind is Transpose:
        return table[..., np.argsort(indices)]
    if kind is Reshape:
        flat = flat_index(table, tuple(result.shape))
        if not source.shape:  # a rank-0 tile: its one element
            return np.zeros((*flat.shape, 0), np.int64)
        return np.stack(np.unravel_index(flat, tuple(source.shape)), axis=-1)
    if kind is Broadcast:
        return np.where(np.array(source.shape) == 1, 0, table)
    if kind is Slice:
        return table + np.asarray(indices, np.int64)
    return table  # a relayout: the same index


def _in_registers(layout: Layout, wanted: np.ndarray) -> bool:
    """Whether each thread holds the elements `wanted` [threads, locals, rank] asks of a
    tile of `layout`, each at the same local in every thread."""
    keys, order, thread, count = _held(layout)
    want = flat_index(wanted, layout.shape) + thread  # [threads, locals]
    at = np.minimum(np.searchsorted(keys, want), keys.size - 1)
    local = order[at] % count
    return bool((keys[at] == want).all() and (local == local[:1]).all())


@functools.lru_cache(maxsize=512)
def _held(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """What each thread of `layout` holds, sorted: the keys (thread · size + flat index),
    the position (thread · locals + local) of each (a repeated element: its first local),
    the threads' key offsets [threads, 1], and the locals per thread."""
    held = flat_index(layout_table(layout), layout.shape)  # [threads, locals]
    thread = np.arange(held.shape[0])[:, None] * max(math.prod(layout.shape), 1)
    keys = (held + thread).ravel()
    order = np.argsort(keys, kind="stable")
    return keys[order], order, thread, held.shape[1]


def flat_index(index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Row-major flat indices of tile indices [..., rank] in a tile of `shape`."""
    flat = np.zeros(index.shape[:-1], np.int64)
    for d, size in enumerate(shape):
        flat = flat * size + index[..., d]
    return flat
