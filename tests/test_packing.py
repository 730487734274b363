"""Dense bit packing: element i of a flat tensor occupies bits [i·b, (i+1)·b) of a
little-endian byte stream. The oracle is a Python integer built bit by bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes as D
from tilelang.dtypes import (
    PackedArray,
    f4e2m1,
    f16,
    i4,
    pack,
    pack_bits,
    pack_codes,
    packed_nbytes,
    u3,
    u4,
    unpack_bits,
)


def reference_pack(codes: list[int], bits: int) -> np.ndarray:
    """Element i at bit offset i·bits of one little-endian integer."""
    stream = 0
    for index, code in enumerate(codes):
        stream |= int(code) << (index * bits)
    nbytes = (len(codes) * bits + 7) // 8
    return np.frombuffer(stream.to_bytes(nbytes, "little"), dtype=np.uint8)


@st.composite
def widths_and_codes(draw: st.DrawFn) -> tuple[int, list[int]]:
    bits = draw(st.integers(1, 64))
    codes = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=40))
    return bits, codes


@settings(max_examples=400, deadline=None)
@given(widths_and_codes())
def test_pack_bits_matches_the_bit_stream_definition(case: tuple[int, list[int]]) -> None:
    bits, codes = case
    packed = pack_bits(np.array(codes, dtype=np.uint64), bits)
    np.testing.assert_array_equal(packed, reference_pack(codes, bits))
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(len(codes), bits)
    unpacked = unpack_bits(packed, bits, len(codes))
    np.testing.assert_array_equal(unpacked.astype(np.uint64), np.array(codes, dtype=np.uint64))
    assert unpacked.dtype == D.int_type(bits, False).storage


@pytest.mark.parametrize("bits", [*range(1, 9), 12, 16, 24, 32, 40, 64])
@pytest.mark.parametrize("count", [0, 1, 3, 7, 8, 9, 15, 17, 1001])
def test_round_trip_for_every_width_and_odd_lengths(bits: int, count: int) -> None:
    rng = np.random.default_rng(bits * 10_000 + count)
    codes = (
        rng.integers(0, 1 << bits, count, dtype=np.uint64, endpoint=False)
        if bits < 64
        else (rng.integers(0, 2**63, count, dtype=np.uint64) * np.uint64(2) + np.uint64(1))
    )
    packed = pack_bits(codes, bits)
    assert packed.size == (count * bits + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, bits, count), codes)
    if count:  # the unused high bits of the last byte stay zero
        assert int(packed[-1]) >> ((count * bits - 1) % 8 + 1) == 0


def test_known_bytes_worked_out_by_hand() -> None:
    # u3: each code is one octal digit, lowest element in the lowest bits:
    # 0o76543210 = 0b111_110_101_100_011_010_001_000 = 0xFAC688 -> bytes 88 C6 FA.
    np.testing.assert_array_equal(pack_bits(np.arange(8), 3), [0x88, 0xC6, 0xFA])
    # pack() casts: 8 saturates to u3's max 7, so the stream is 0o77654321 = 0xFF58D1.
    np.testing.assert_array_equal(pack(np.arange(1, 9), u3).data, [0xD1, 0x58, 0xFF])
    assert pack(np.zeros(16), u3).nbytes == 6  # a u3 row of 16 values is 6 bytes
    # i4: -8 is code 0x8 in the low nibble, 7 the high nibble.
    np.testing.assert_array_equal(pack([-8, 7], i4).data, [0x78])
    np.testing.assert_array_equal(pack_bits([1, 0, 1, 1, 0, 0, 0, 0, 1], 1), [0x0D, 0x01])
    np.testing.assert_array_equal(pack_bits([0xABC, 0x123], 12), [0xBC, 0x3A, 0x12])
    np.testing.assert_array_equal(pack_bits([0x1234, 0xABCD], 16), [0x34, 0x12, 0xCD, 0xAB])
    np.testing.assert_array_equal(pack([0.5, -6.0], f4e2m1).data, [0xF1])
    np.testing.assert_array_equal(pack_bits([3, 1, 2], 2), [0b10_01_11])


def test_packed_array_views_and_values() -> None:
    values = np.array([[-8, -1, 0], [1, 6, 7]])
    packed = pack(values, "i4")
    assert (
        packed.dtype is i4 and packed.shape == (2, 3) and packed.numel == 6 and packed.nbytes == 3
    )
    np.testing.assert_array_equal(packed.codes(), [[8, 15, 0], [1, 6, 7]])
    assert packed.codes().dtype == np.uint8
    np.testing.assert_array_equal(packed.unpack(), values)
    assert packed == PackedArray(packed.data.copy(), i4, (2, 3))
    assert packed != pack(values, u4) and packed != pack(values.T, i4)
    assert repr(packed) == "PackedArray(i4, shape=(2, 3), 3 bytes)"
    halves = pack([[0.1, 1e9], [-0.0, np.nan]], f16)
    np.testing.assert_array_equal(halves.codes(), f16.encode([[0.1, 1e9], [-0.0, np.nan]]))


def test_scalar_and_empty_tensors() -> None:
    scalar = pack(5, u3)
    assert scalar.shape == () and scalar.nbytes == 1 and scalar.unpack() == 5
    empty = pack(np.zeros((0, 4)), u3)
    assert empty.shape == (0, 4) and empty.nbytes == 0 and empty.unpack().shape == (0, 4)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([t for t in D.NAMED_TYPES if isinstance(t, D.IntType)]),
    st.lists(st.integers(-(2**64), 2**64), min_size=1, max_size=33),
)
def test_pack_then_unpack_returns_the_saturated_values(t: D.IntType, values: list[int]) -> None:
    expected = [min(max(v, t.min), t.max) for v in values]
    assert [int(v) for v in pack(values, t).unpack()] == expected


def test_pack_codes_takes_raw_codes() -> None:
    packed = pack_codes(np.array([[15, 0], [8, 7]], dtype=np.int32), i4)
    np.testing.assert_array_equal(packed.unpack(), [[-1, 0], [-8, 7]])
    assert pack_codes([0x7F], "f8e4m3").data.tolist() == [0x7F]


def test_code_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"u4 codes must lie in \[0, 15\], got 16 at index 1"):
        pack_codes([3, 16], u4)
    with pytest.raises(ValueError, match="non-negative, got -1"):
        pack_codes([-1], u4)
    with pytest.raises(TypeError, match="must be integers, got an array of float64"):
        pack_codes([1.0], u4)
    with pytest.raises(ValueError, match=r"3-bit codes must lie in \[0, 7\], got 8"):
        pack_bits([8], 3)
    for bits in (0, 65, 2.0, True):
        with pytest.raises(ValueError, match=r"integer in 1\.\.64"):
            pack_bits([0], bits)


def test_unpack_errors() -> None:
    with pytest.raises(ValueError, match="5 codes of 3 bits take 2 bytes, got 3 bytes"):
        unpack_bits(np.zeros(3, dtype=np.uint8), 3, 5)
    with pytest.raises(ValueError, match="non-negative integer"):
        unpack_bits(np.zeros(0, dtype=np.uint8), 3, -1)
    with pytest.raises(TypeError, match="1-D uint8 array, got 1-D int16"):
        unpack_bits(np.zeros(2, dtype=np.int16), 4, 4)
    with pytest.raises(TypeError, match="got list"):
        unpack_bits([1, 2], 8, 2)
    np.testing.assert_array_equal(unpack_bits(b"\x78", 4, 2), [8, 7])


def test_packed_array_errors() -> None:
    data = np.zeros(6, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"u3 tensor of shape \(4, 4\) packs into 6 bytes, got 5"):
        PackedArray(data[:5], u3, (4, 4))
    with pytest.raises(TypeError, match="1-D uint8 array, got 2-D uint8"):
        PackedArray(data.reshape(2, 3), u3, (4, 4))
    with pytest.raises(TypeError, match="1-D uint8 array, got 1-D float32"):
        PackedArray(data.astype(np.float32), u3, (4, 4))
    with pytest.raises(ValueError, match="non-negative ints"):
        PackedArray(data, u3, (-4, 4))
    with pytest.raises(ValueError, match="valid forms"):
        PackedArray(data, "u99", (4, 4))
    assert PackedArray(data, "u3", [4, 4]).shape == (4, 4)  # names and lists are accepted
    with pytest.raises(AttributeError):
        PackedArray(data, u3, (4, 4)).shape = (16,)  # type: ignore[misc]
    with pytest.raises(TypeError, match="unhashable"):
        hash(PackedArray(data, u3, (4, 4)))
