"""A `view`'s bits (tilelang.runtime.bit_views): a row's codes are one little-endian bit
stream (code j at bits [j·b, (j+1)·b)), read back as codes of another width; a view the
bits do not allow is a `ViewError` naming both tile types."""

import re

import numpy as np
import pytest

from tilelang.dtypes import u8, u16
from tilelang.ir.layout import spatial
from tilelang.ir.types import TileType
from tilelang.runtime.bit_views import (
    ViewError,
    bits_to_codes,
    codes_to_bits,
    view_per_thread,
    view_row_major,
)


def little_endian_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """numpy reference: each code's `bits` lowest bits, least significant first."""
    as_bytes = codes.astype("<u8").view(np.uint8).reshape(*codes.shape, 8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :bits].reshape(
        *codes.shape[:-1], codes.shape[-1] * bits
    )


@pytest.mark.parametrize("bits", [1, 3, 4, 8, 13])
def test_codes_become_a_little_endian_bit_stream_and_back(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, (3, 8)).astype(np.uint64)
    stream = codes_to_bits(codes, bits)
    np.testing.assert_array_equal(stream, little_endian_bits(codes, bits))
    np.testing.assert_array_equal(bits_to_codes(stream, bits), codes)


def test_a_row_of_bytes_viewed_as_u16_pairs_them_low_byte_first():
    codes = np.array([[0x34, 0x12, 0xFF, 0x00]], dtype=np.uint64)
    got = view_row_major(codes, TileType(u8, (1, 4)), TileType(u16, (1, 2)))
    np.testing.assert_array_equal(got, [[0x1234, 0x00FF]])


def test_a_view_that_changes_a_rows_bit_count_names_both_types():
    src, dst = TileType(u8, (1, 4)), TileType(u16, (1, 4))
    message = f"cannot view {src} as {dst}: the rows' bit counts differ"
    with pytest.raises(ViewError, match=re.escape(message)):
        view_row_major(np.zeros((1, 4), np.uint64), src, dst)


def test_a_per_thread_view_needs_the_same_bits_per_thread():
    src = TileType(u8, (32, 2), spatial(32, 1).local(1, 2))
    dst = TileType(u16, (32, 2), spatial(32, 1).local(1, 2))
    with pytest.raises(ViewError, match="the bits per thread differ"):
        view_per_thread(np.zeros((32, 2), np.uint64), src, dst)
