"""How the group scales of a k-tile of several groups are stored, so that each thread
reads the scales of its own B fragment columns with whole-word loads.

A kernel tile [BK, BN] of codes with BK = R·G (R groups of G rows) multiplies by a
[R, BN] tile of scales broadcast over each group's rows. Layout inference gives that
tile S, the codes' B fragment layout L reduced over the rows of a group (what a
broadcast's operand takes: ``L.reshape((R, G, BN)).reduce([1]).reshape((R, BN))``,
`scale_layout`): each thread holds the scales of its own columns, R per column, and
the threads that differ only in the k rows they hold are replicas. Stored row-major,
a thread's scales lie a column block apart, so it reads them one element at a time.

Stored instead in S's load order (`tilelang.ir.fragments.load_order`, the same rule as
the codes of `tilelang.pack_for_dot`), every R-row tile of scales is one flat run in
which each distinct thread's scales are contiguous, in its local order: the kernel
reads the tile with `tl.load_fragment` (16-byte words where a thread's share allows),
and the replicas read the same words. The permutation is a layout's table, not a
tabulation, and it is a bijection on each tile: `unpack` inverts `pack` exactly
(padding rows and columns are zeros, which multiply padded codes).

The packed tensor is ``[NP / BN, RP · BN]`` (RP the rows rounded up to R, NP the
columns rounded up to BN), tile (r, c) at row c, columns r·R·BN.., like the codes.
The arrangement depends on R (a thread's share of an R-row tile), so a kernel tile
reads scales packed for its own R (`tilelang.quant.operands.Operands.scales_for`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tilelang.dtypes import DType
from tilelang.ir.fragments import dot_layout, fragment_run, load_order
from tilelang.ir.layout import Layout


def scale_layout(b_layout: Layout, groups: int) -> Layout:
    """S: the layout of the [groups, BN] scales that multiply a [BK, BN] tile of codes in
    `b_layout` (its B fragment layout), each scale broadcast over BK / groups rows."""
    block_k, block_n = b_layout.shape
    if groups < 1 or block_k % groups:
        raise ValueError(f"groups must divide the tile's {block_k} rows, got {groups}")
    reduced = b_layout.reshape((groups, block_k // groups, block_n)).reduce([1])
    return reduced.reshape((groups, block_n))


@dataclass(frozen=True)
class ScalePacking:
    """Scales [rows, n] of `dtype` stored for kernel tiles of `groups` scale rows and
    `block_n` columns, whose codes are the B operand of ``[m, BK] @ [BK, block_n]`` over
    `warps` warps with `operand` operands accumulated in `acc` (BK = groups · group)."""

    dtype: DType
    shape: tuple[int, int]
    groups: int
    group: int
    block_n: int
    m: int
    warps: int
    operand: DType
    acc: DType

    @functools.cached_property
    def layout(self) -> Layout:
        """S (`scale_layout`): what the kernel derives from its own B layout."""
        block_k = self.group * self.groups
        b = dot_layout("b", self.m, self.block_n, block_k, self.operand, self.acc, self.warps)
        return scale_layout(b, self.groups)

    @functools.cached_property
    def flat(self) -> Layout:
        """F: the load order of a tile, a layout of the flat tile [1, groups · BN]."""
        return load_order(self.layout, fragment_run(self.layout, self.dtype))

    @functools.cached_property
    def order(self) -> np.ndarray:
        """int64 [groups · BN]: position p of a packed tile holds the tile's element with
        row-major index ``order[p]`` (r · BN + n)."""
        where = self.layout.table()  # [threads, locals, 2]: (r, n) of each (t, l)
        position = self.flat.table()[..., 1]  # [threads, locals]: p of each (t, l)
        order = np.full(self.groups * self.block_n, -1, np.int64)
        order[position] = where[..., 0] * self.block_n + where[..., 1]
        assert (order >= 0).all() and len(np.unique(order)) == order.size, "not a permutation"
        return order

    @property
    def padded(self) -> tuple[int, int]:
        rows, n = self.shape
        return -(-rows // self.groups) * self.groups, -(-n // self.block_n) * self.block_n

    @property
    def packed_shape(self) -> tuple[int, int]:
        """``[NP / BN, RP · BN]``."""
        rows, n = self.padded
        return n // self.block_n, rows * self.block_n

    def pack(self, codes: np.ndarray) -> np.ndarray:
        """The [rows, n] scale codes in the packed arrangement (zeros as padding)."""
        codes = np.asarray(codes)
        if codes.shape != self.shape:
            raise ValueError(f"scales: expected shape {self.shape}, got {codes.shape}")
        rows, n = self.padded
        full = np.zeros((rows, n), codes.dtype)
        full[: self.shape[0], : self.shape[1]] = codes
        # [R tiles, groups, C tiles, BN] -> per (C, R) tile, its row-major elements
        tiles = full.reshape(rows // self.groups, self.groups, n // self.block_n, self.block_n)
        tiles = tiles.transpose(2, 0, 1, 3).reshape(
            n // self.block_n, -1, self.groups * self.block_n
        )
        return tiles[..., self.order].reshape(self.packed_shape)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """The [rows, n] scale codes back from `pack`'s arrangement (exact inverse)."""
        packed = np.asarray(packed)
        if packed.shape != self.packed_shape:
            raise ValueError(
                f"packed scales: expected shape {self.packed_shape}, got {packed.shape}"
            )
        rows, n = self.padded
        tiles = packed.reshape(n // self.block_n, -1, self.groups * self.block_n)
        plain = np.empty_like(tiles)
        plain[..., self.order] = tiles
        plain = plain.reshape(n // self.block_n, rows // self.groups, self.groups, self.block_n)
        full = plain.transpose(1, 2, 0, 3).reshape(rows, n)
        return full[: self.shape[0], : self.shape[1]]
