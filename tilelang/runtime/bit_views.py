"""What a `view` means on codes: a tile's bits reinterpreted as another dtype, either
each row's little-endian bit stream (tiles without layouts) or each thread's locals
concatenated (both layouts given; replicas must agree). The interpreter's `View`
semantics calls these on the tile's codes; they raise `ViewError` for a view the bits
do not allow."""

from __future__ import annotations

import numpy as np

from tilelang.ir.types import TileType


class ViewError(ValueError):
    """A view the tiles' bits do not allow (the message says why)."""


def codes_to_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """[..., n] codes -> [..., n·bits] bits (uint8), code j at bits [j·bits, (j+1)·bits)."""
    shifts = np.arange(bits, dtype=np.uint64)
    bit_matrix = (codes.astype(np.uint64)[..., None] >> shifts) & np.uint64(1)
    return bit_matrix.astype(np.uint8).reshape(*codes.shape[:-1], codes.shape[-1] * bits)


def bits_to_codes(bit_stream: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of codes_to_bits: [..., m] bits -> [..., m // bits] uint64 codes."""
    groups = bit_stream.reshape(*bit_stream.shape[:-1], -1, bits).astype(np.uint64)
    return (groups << np.arange(bits, dtype=np.uint64)).sum(axis=-1, dtype=np.uint64)


def view_row_major(codes: np.ndarray, src: TileType, dst: TileType) -> np.ndarray:
    """Each row's (last dimension's) little-endian bit stream, read as the new dtype."""
    same_rows = src.shape[:-1] == dst.shape[:-1]
    if not same_rows or src.numel * src.dtype.bits != dst.numel * dst.dtype.bits:
        raise ViewError(f"cannot view {src} as {dst}: the rows' bit counts differ")
    return bits_to_codes(codes_to_bits(codes, src.dtype.bits), dst.dtype.bits).reshape(dst.shape)


def view_per_thread(codes: np.ndarray, src: TileType, dst: TileType) -> np.ndarray:
    """Each thread's locals, concatenated little-endian (local 0 lowest), read as the new
    dtype and scattered through the result layout; replicas must agree."""
    src_table, dst_table = src.layout.table(), dst.layout.table()
    threads = src.layout.num_threads
    if dst.layout.num_threads != threads:
        raise ViewError(
            f"cannot view {src} as {dst}: {threads} vs {dst.layout.num_threads} threads"
        )
    src_bits = src.layout.num_locals * src.dtype.bits
    if src_bits != dst.layout.num_locals * dst.dtype.bits:
        raise ViewError(f"cannot view {src} as {dst}: the bits per thread differ")
    per_thread = codes[tuple(np.moveaxis(src_table, -1, 0))]  # [T, N_src]
    new_codes = bits_to_codes(codes_to_bits(per_thread, src.dtype.bits), dst.dtype.bits)
    index = tuple(np.moveaxis(dst_table, -1, 0))
    out = np.zeros(dst.shape, dtype=np.uint64)
    written = np.zeros(dst.shape, dtype=bool)
    out[index] = new_codes
    written[index] = True
    disagree = out[index] != new_codes
    if disagree.any():
        thread, local = (int(i) for i in np.argwhere(disagree)[0])
        element = tuple(int(i) for i in dst_table[thread, local])
        raise ViewError(
            f"the replicas of element {list(element)} of the viewed tile disagree "
            f"(thread {thread} holds code {int(new_codes[thread, local])}, another "
            f"holds {int(out[element])})"
        )
    if not written.all():
        raise ViewError(f"the layout of {dst} does not cover the tile")
    return out


__all__ = ["ViewError", "bits_to_codes", "codes_to_bits", "view_per_thread", "view_row_major"]
