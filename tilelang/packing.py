"""Layout-aware packing of low-bit weights: `pack_for_dot` and its inverse `unpack_from_dot`.

A weight matrix W [K, N] that a kernel multiplies as the B operand of `tl.dot` is
permuted once, offline, so that the codes each thread needs for its mma B fragments are
one contiguous run in memory: the kernel loads that run with vector loads
(`tl.load_fragment`) and reinterprets it in place as the [BK, BN] tile in the B fragment
layout, so it dequantizes straight into the fragments and no weight moves between
threads or through shared memory as values.

What the packed tensor holds (`DotPacking` records every parameter):

- W is padded with zero codes to KP x NP, multiples of the tile (BK, BN), and cut into
  tiles; tile (kt, nt) — rows kt·BK.., columns nt·BN.. — is row nt, elements
  [kt·BK·BN, (kt+1)·BK·BN) of the packed tensor of shape ``[NP / BN, KP · BN]``, so the
  tile at logical (k, n0) starts at ``[n0 / BN, k · BN]`` and each block's weights are
  one contiguous stream along K;
- within a tile, the codes are in the *load order* of L' = `paired_codes(L, dtype)`,
  where L = ``tilelang.ir.fragments.dot_layout("b", m, BN, BK, operand, acc, warps)`` is
  the layout `infer_layouts` gives the dot's b and L' holds the same elements per
  thread with each 32-bit word's 2 or 4-bit codes paired across its halves (so the
  conversion to f16 moves no code; other widths: L' = L): position p of the tile holds
  element L'(t, l) for the (thread, local) pair that F = `load_order(L', run)` places
  at p — each thread's codes in L''s local order, in runs of whole 16-byte words where
  the width allows (`tilelang.ir.fragments` says which runs and why).

Both functions work on numpy arrays of codes and on `PackedArray`s of any integer or
small-float type (u1..u8, i1..i8, f4e2m1, f6e3m2, f8e4m3, ...), and only move codes,
so `unpack_from_dot(pack_for_dot(w, ...))` is `w`, bit for bit. The permutation is
computed from the layouts' tables (`Layout.table`), never written out by hand.

This module is the host side of the fast weight path; the kernel side is the DSL
(`tl.dot_layout`, `tl.load_fragment`), which reads the same `tilelang.ir.fragments`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.ir.fragments import dot_layout, fragment_run, load_order, paired_codes
from tilelang.ir.layout import Layout

__all__ = ["DotPackedArray", "DotPacking", "pack_for_dot", "unpack_from_dot"]


@dataclass(frozen=True)
class DotPacking:
    """How `pack_for_dot` arranged a [K, N] matrix of `dtype` codes for the B operand of
    a dot of tile ``[m, BK] @ [BK, BN]``, `operand` x `operand` accumulated in `acc`, in
    a block of `warps` warps (`tile` = (BK, BN)). The kernel that reads the packed tensor
    must use the same tile, m, warps and operand types."""

    dtype: DType
    shape: tuple[int, int]
    tile: tuple[int, int]
    m: int
    warps: int
    operand: DType
    acc: DType

    @functools.cached_property
    def layout(self) -> Layout:
        """L: the B fragment layout of the tile (what `infer_layouts` chooses)."""
        block_k, block_n = self.tile
        return dot_layout("b", self.m, block_n, block_k, self.operand, self.acc, self.warps)

    @functools.cached_property
    def stored(self) -> Layout:
        """L': L with each thread's codes in the order they are stored in registers
        (`tilelang.ir.fragments.paired_codes`): what the loaded run is viewed as."""
        return paired_codes(self.layout, self.dtype)

    @functools.cached_property
    def run(self) -> int:
        """Codes per run of the load order (`tilelang.ir.fragments.fragment_run`)."""
        return fragment_run(self.stored, self.dtype)

    @functools.cached_property
    def flat(self) -> Layout:
        """F: the load order of a tile, a layout of the flat tile [1, BK·BN]."""
        return load_order(self.stored, self.run)

    @property
    def padded(self) -> tuple[int, int]:
        """(KP, NP): K and N rounded up to multiples of the tile."""
        (k, n), (block_k, block_n) = self.shape, self.tile
        return -(-k // block_k) * block_k, -(-n // block_n) * block_n

    @property
    def packed_shape(self) -> tuple[int, int]:
        """The shape of the packed tensor: ``[NP / BN, KP · BN]``."""
        (kp, np_), (_, block_n) = self.padded, self.tile
        return np_ // block_n, kp * block_n

    @functools.cached_property
    def order(self) -> np.ndarray:
        """int64 [BK·BN]: position p of a packed tile holds the tile's element with
        row-major index ``order[p]`` (k·BN + n)."""
        block_n = self.tile[1]
        where = self.stored.table()  # [threads, locals, 2]: (k, n) of each (t, l)
        position = self.flat.table()[..., 1]  # [threads, locals]: p of each (t, l)
        order = np.full(math.prod(self.tile), -1, np.int64)
        order[position] = where[..., 0] * block_n + where[..., 1]
        assert (order >= 0).all() and len(np.unique(order)) == order.size, "not a permutation"
        return order


@dataclass(frozen=True, eq=False)
class DotPackedArray(PackedArray):
    """A `PackedArray` of `pack_for_dot`'s output (shape ``packing.packed_shape``) that
    remembers how it was packed: pass it to the kernel, or to `unpack_from_dot`."""

    packing: DotPacking

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotPackedArray):
            return NotImplemented
        return self.packing == other.packing and PackedArray.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        k, n = self.packing.shape
        block_k, block_n = self.packing.tile
        return (
            f"DotPackedArray({self.dtype.name}, [{k}, {n}] in {block_k}x{block_n} tiles for "
            f"{self.packing.warps} warps, shape={self.shape}, {self.nbytes} bytes)"
        )


def pack_for_dot(
    weights: Any,
    dtype: DType | str | None = None,
    *,
    tile: tuple[int, int],
    warps: int = 4,
    m: int = 16,
    operand: DType | str = dtypes.f16,
    acc: DType | str = dtypes.f32,
) -> DotPackedArray:
    """`weights` [K, N] (a `PackedArray`, or a numpy array of codes of `dtype`) packed
    for the B operand of ``tl.dot(a [m, BK], b [BK, BN])`` (`tile` = (BK, BN)) of
    `operand` x `operand` accumulated in `acc`, in a kernel of `warps` warps (module
    docstring). K and N that are not multiples of the tile are padded with zero codes.
    A kernel reads a tile with ``tl.load_fragment(w, [k, n0], tl.dot_layout("b", m, BN,
    BK, operand, acc))``."""
    codes, dtype = _codes_of(weights, dtype)
    if codes.ndim != 2:
        raise ValueError(f"pack_for_dot packs a [K, N] matrix, got shape {list(codes.shape)}")
    block_k, block_n = _tile(tile)
    packing = DotPacking(
        dtype=dtype,
        shape=(int(codes.shape[0]), int(codes.shape[1])),
        tile=(block_k, block_n),
        m=m,
        warps=warps,
        operand=dtypes.dtype(operand),
        acc=dtypes.dtype(acc),
    )
    _ = packing.run  # a tile without a load order fails here, before any work
    (kp, np_), (k, n) = packing.padded, packing.shape
    padded = np.zeros((kp, np_), dtype.storage)
    padded[:k, :n] = codes
    tiles = padded.reshape(kp // block_k, block_k, np_ // block_n, block_n)
    tiles = tiles.transpose(2, 0, 1, 3).reshape(np_ // block_n, kp // block_k, -1)
    permuted = tiles[..., packing.order].reshape(packing.packed_shape)
    data = dtypes.pack_bits(permuted, dtype.bits)
    return DotPackedArray(data, dtype, packing.packed_shape, packing)


def unpack_from_dot(packed: PackedArray, packing: DotPacking | None = None) -> PackedArray:
    """The [K, N] matrix `pack_for_dot` packed: the exact inverse (padding dropped).
    `packing` is needed only for a plain `PackedArray` of packed bytes."""
    packing = packing or getattr(packed, "packing", None)
    if not isinstance(packing, DotPacking):
        raise TypeError(
            "unpack_from_dot needs the DotPacking the weights were packed with: pass a "
            "DotPackedArray, or the packing as the second argument"
        )
    if not isinstance(packed, PackedArray):
        raise TypeError(f"unpack_from_dot takes a PackedArray, got {type(packed).__name__}")
    if packed.dtype != packing.dtype or packed.shape != packing.packed_shape:
        raise ValueError(
            f"a {packing.dtype} tensor of shape {packing.packed_shape} was packed, got "
            f"{packed.dtype} of shape {packed.shape}"
        )
    (kp, np_), (k, n) = packing.padded, packing.shape
    block_k, block_n = packing.tile
    permuted = packed.codes().reshape(np_ // block_n, kp // block_k, block_k * block_n)
    tiles = np.empty_like(permuted)
    tiles[..., packing.order] = permuted
    tiles = tiles.reshape(np_ // block_n, kp // block_k, block_k, block_n).transpose(1, 2, 0, 3)
    return dtypes.pack_codes(tiles.reshape(kp, np_)[:k, :n], packing.dtype)


def _codes_of(weights: Any, dtype: DType | str | None) -> tuple[np.ndarray, DType]:
    if isinstance(weights, PackedArray):
        if dtype is not None and dtypes.dtype(dtype) != weights.dtype:
            raise ValueError(
                f"the weights are a PackedArray of {weights.dtype}, but dtype {dtype} was given"
            )
        return weights.codes(), weights.dtype
    if dtype is None:
        raise TypeError("pack_for_dot of an array of codes needs their dtype (e.g. tl.u4)")
    dtype = dtypes.dtype(dtype)
    return dtypes.pack_codes(weights, dtype).codes(), dtype  # checks the codes' range


def _tile(tile: Any) -> tuple[int, int]:
    if (
        not isinstance(tile, (tuple, list))
        or len(tile) != 2
        or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1 for t in tile)
    ):
        raise ValueError(f"tile must be (BK, BN), two positive ints, got {tile!r}")
    return int(tile[0]), int(tile[1])
