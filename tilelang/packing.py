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
It also owns whether a kernel's `tl.load_fragment` (a read that
`tilelang.runtime.arguments` finds in the block IR) reads codes packed by a
`DotPacking` as packed (`DotPacking.reads_as`, on the two tile orders), and the
messages of a call that passes a `DotPackedArray` to a kernel that reads it otherwise.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.ir.atoms import MMA_ATOMS
from tilelang.ir.fragments import (
    FragmentError,
    dot_layout,
    fragment_run,
    load_order,
    paired_codes,
)
from tilelang.ir.layout import Layout

__all__ = [
    "DotPackedArray",
    "DotPacking",
    "pack_for_dot",
    "unpack_from_dot",
]


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
        return _tile_order(self.stored, self.flat)

    def reads_as(self, read: Any) -> bool:
        """Whether a kernel's `tl.load_fragment` `read` (a
        `tilelang.runtime.arguments.FragmentRead`: its [BK, BN] `tile`, the `flat` load
        order and the `stored` view) sees codes packed by this packing as the tiles it
        means: the same BN, and each packed [BK', BN] tile the kernel's [BK, BN] tiles
        in order (BK | BK': a kernel tile smaller along K still reads it, as
        `tilelang.quant` does). Compared on the tile orders, never on the parameters:
        different dots can lay a tile out alike."""
        return _reads_packed(read, dataclasses.replace(self, shape=self.tile))

    def mismatch(self, where: str, name: str, read: Any) -> str:
        """The message of codes packed by this packing passed as parameter `name`
        (`where`: the kernel and parameter) to a kernel that reads them as `read`
        (`reads_as` is False): both packings, and the `tl.pack_for_dot` call to use."""
        return _mismatch(where, name, self, read)

    def plain_read(self, where: str, name: str, loc: str) -> str:
        """The message of codes packed by this packing passed to a kernel that reads
        them at `loc` as plain row-major codes, never with `tl.load_fragment`."""
        return _plain_read(where, name, self, loc)


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
    array = np.asarray(weights)
    own = _integer_type(array)
    if dtype is None:
        # A signed numpy integer array can only mean its own type's values; an unsigned
        # one may hold codes of any narrower width (u4 codes in uint8), so it must say.
        if own is None or not own.signed:
            raise TypeError(
                "pack_for_dot of an array of codes needs their dtype (e.g. tl.u4); only a "
                "signed integer array (int8, int16, ...) says its type itself"
            )
        dtype = own
    dtype = dtypes.dtype(dtype)
    if own is not None and own == dtype:
        # numpy's own type: its values, whose codes are their bit patterns (-1 is 0xFF)
        return dtypes.pack(array, dtype).codes(), dtype
    signed = isinstance(dtype, dtypes.IntType) and dtype.signed and array.dtype.kind == "i"
    if signed and array.size and array.min() < 0:
        raise ValueError(
            f"pack_for_dot takes {dtype} codes, the bit patterns in [0, "
            f"{(1 << dtype.bits) - 1}], and got the negative value {array.min()}: "
            f"pass values as a PackedArray, tl.pack(w, tl.{dtype.name})"
            + (f", or a numpy int{dtype.bits} array" if dtype.bits in (8, 16, 32, 64) else "")
        )
    return dtypes.pack_codes(array, dtype).codes(), dtype  # checks the codes' range


def _integer_type(array: np.ndarray) -> DType | None:
    """The tilelang integer type of a numpy integer array (int8 -> i8), else None."""
    if array.dtype.kind not in "iu":
        return None
    return dtypes.dtype(array.dtype)


def _tile(tile: Any) -> tuple[int, int]:
    if (
        not isinstance(tile, (tuple, list))
        or len(tile) != 2
        or any(isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1 for t in tile)
    ):
        raise ValueError(f"tile must be (BK, BN), two positive ints, got {tile!r}")
    return int(tile[0]), int(tile[1])


@functools.lru_cache(maxsize=64)
def _read_order(stored: Layout, flat: Layout) -> np.ndarray:
    return _tile_order(stored, flat)


def _tile_order(stored: Layout, flat: Layout) -> np.ndarray:
    """int64 [BK·BN]: the row-major index of the tile element that a run loaded in the
    flat order `flat` holds at each position, seen in place as the tile in `stored`."""
    block_n = stored.shape[1]
    where = stored.table()  # [threads, locals, 2]: (k, n) of each (t, l)
    position = flat.table()[..., 1]  # [threads, locals]: p of each (t, l)
    order = np.full(stored.size, -1, np.int64)
    order[position] = where[..., 0] * block_n + where[..., 1]
    assert (order >= 0).all() and len(np.unique(order)) == order.size, "not a permutation"
    return order


# ------------------------------------------------------- the kernel's reads, checked


@functools.lru_cache(maxsize=256)
def _reads_packed(read: Any, packing: DotPacking) -> bool:
    (block_k, block_n), (packed_k, packed_n) = read.tile, packing.tile
    if packed_n != block_n or packed_k % block_k:
        return False
    try:
        order = packing.order
    except FragmentError:
        return False
    step = block_k * block_n
    pieces = [_read_order(read.stored, read.flat) + j * step for j in range(packed_k // block_k)]
    return bool(np.array_equal(np.concatenate(pieces), order))


def _needed(read: Any, given: DotPacking) -> DotPacking | None:
    """A packing `read` reads: the kernel's tile and warps, and the first (m, operand,
    acc) that fits, the given ones tried first (the fewest changes to suggest)."""
    pairs = [(given.operand, given.acc)]
    for atom in MMA_ATOMS.values():
        pairs += [(dtypes.dtype(o), dtypes.dtype(atom.acc_dtype)) for o in atom.operand_dtypes]
    for m in dict.fromkeys((given.m, 16, 32, 64, 128, 256)):
        for operand, acc in dict.fromkeys(pairs):
            candidate = DotPacking(
                given.dtype, read.tile, read.tile, m, read.warps, operand, acc
            )  # fmt: skip
            try:
                if candidate.layout == read.layout and candidate.reads_as(read):
                    return candidate
            except FragmentError:
                continue
    return None


def _call(name: str, packing: DotPacking) -> str:
    """The `tl.pack_for_dot` call that makes `packing`."""
    block_k, block_n = packing.tile
    text = f"tl.pack_for_dot({name}, tile=({block_k}, {block_n}), m={packing.m}"
    text += f", warps={packing.warps}"
    if packing.operand != dtypes.f16:
        text += f", operand=tl.{packing.operand.name}"
    if packing.acc != dtypes.f32:
        text += f", acc=tl.{packing.acc.name}"
    return text + ")"


def _fields(packing: DotPacking) -> dict[str, object]:
    return {
        "tile": packing.tile,
        "m": packing.m,
        "warps": packing.warps,
        "operand": f"tl.{packing.operand.name}",
        "acc": f"tl.{packing.acc.name}",
    }


def _mismatch(where: str, name: str, given: DotPacking, read: Any) -> str:
    needed = _needed(read, given)
    block_k, block_n = read.tile
    if needed is None:
        return (
            f"{where} was packed by {_call(name, given)}, but the kernel reads it at "
            f"{read.loc} in [{block_k}, {block_n}] tiles in the layout {read.layout}, which "
            f"no tl.pack_for_dot(tile=({block_k}, {block_n}), warps={read.warps}) packing "
            "matches: pack it for the dot that reads it"
        )
    differs = [
        f"{key}={value}"
        for (key, value), (_, want) in zip(
            _fields(given).items(), _fields(needed).items(), strict=True
        )
        if value != want
    ]
    dot = (
        f"[{needed.m}, {block_k}] @ [{block_k}, {block_n}] of {needed.operand} "
        f"accumulated in {needed.acc}"
    )
    return (
        f"{where} was packed for {', '.join(differs)} ({_call(name, given)}), but the "
        f"kernel reads it at {read.loc} as dot operand b of {dot} over {read.warps} warps: "
        f"pack it with {_call(name, needed)}"
    )


def _plain_read(where: str, name: str, given: DotPacking, loc: str) -> str:
    return (
        f"{where} holds codes permuted by {_call(name, given)}, but the kernel reads it "
        f"at {loc} with plain loads, as row-major codes, never with tl.load_fragment: pass "
        f"tl.unpack_from_dot({name}) (the [K, N] codes), or read it with tl.load_fragment; "
        f"to read the permuted bytes as they are, pass "
        f"tl.PackedArray({name}.data, {name}.dtype, {name}.shape)"
    )
