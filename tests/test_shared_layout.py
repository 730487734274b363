"""Shared layouts (offsets, swizzles, text form) and the bank-conflict model."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilelang import dtypes
from tilelang.analysis.shared_layouts import default_layout
from tilelang.ir import layout as layout_module
from tilelang.ir.shared_layout import (
    SHARED_LAYOUT_GRAMMAR,
    Mode,
    SharedLayout,
    Swizzle,
    bank_conflicts,
    blocked,
    column_major,
    ideal_wavefronts,
    parse_shared_layout,
    row_major,
    strided,
    warp_access_addresses,
    warp_access_conflicts,
    wavefronts,
)

# --------------------------------------------------------------------------- offsets


def test_row_and_column_major_offsets() -> None:
    rm, cm = row_major(3, 4, 5), column_major(3, 4, 5)
    assert rm.shape == cm.shape == (3, 4, 5)
    assert rm.offset((1, 2, 3)) == 1 * 20 + 2 * 5 + 3
    assert cm.offset((1, 2, 3)) == 1 + 2 * 3 + 3 * 12
    assert rm.size == cm.size == 60
    assert rm.is_injective() and cm.is_injective()
    np.testing.assert_array_equal(rm.table().ravel(), np.arange(60))


def test_offset_is_vectorized_and_matches_scalar() -> None:
    layout = blocked((16, 24), (4, 8)).swizzled(2, 1, 4)
    rows, cols = np.indices(layout.shape)
    vec = layout.offset((rows, cols))
    assert vec.shape == (16, 24)
    for r in range(16):
        for c in range(24):
            assert vec[r, c] == layout.offset((r, c))
    # Broadcasting: a column of rows against a row of columns.
    np.testing.assert_array_equal(layout.offset((np.arange(16)[:, None], np.arange(24))), vec)


def test_blocked_64x64_as_8x8_blocks() -> None:
    layout = blocked((64, 64), (8, 8))
    assert layout.dims == ((Mode(8, 512), Mode(8, 8)), (Mode(8, 64), Mode(8, 1)))
    for r, c in [(0, 0), (9, 10), (63, 63), (7, 8), (8, 7)]:
        expected = ((r // 8) * 8 + c // 8) * 64 + (r % 8) * 8 + c % 8
        assert layout.offset((r, c)) == expected
    assert layout.size == 4096 and layout.is_injective()


def test_padding_and_broadcast_strides() -> None:
    padded = strided((32, 32), (33, 1))
    assert padded.size == 31 * 33 + 32 and padded.is_injective()
    broadcast = strided((4, 8), (0, 1))
    assert broadcast.size == 8 and not broadcast.is_injective()


def test_offset_errors() -> None:
    layout = row_major(4, 8)
    with pytest.raises(ValueError, match="rank 2"):
        layout.offset((1,))
    with pytest.raises(IndexError, match="dimension 1"):
        layout.offset((0, 8))
    with pytest.raises(ValueError):
        Mode(0, 1)
    with pytest.raises(ValueError):
        Mode(4, -1)


# --------------------------------------------------------------------------- swizzles


def test_byte_swizzles_in_element_units() -> None:
    assert Swizzle.for_bytes(128, 16) == Swizzle(3, 3, 6)
    assert Swizzle.for_bytes(128, 8) == Swizzle(3, 4, 7)
    assert Swizzle.for_bytes(128, 32) == Swizzle(3, 2, 5)
    assert Swizzle.for_bytes(64, 16) == Swizzle(2, 3, 6)
    assert Swizzle.for_bytes(32, 4) == Swizzle(1, 5, 8)
    with pytest.raises(ValueError):
        Swizzle.for_bytes(128, 3)
    with pytest.raises(ValueError):
        Swizzle.for_bytes(96, 16)
    with pytest.raises(ValueError, match="shift must differ"):
        Swizzle(3, 3, 3)


def test_128_byte_swizzle_permutes_16_byte_chunks_by_row() -> None:
    layout = row_major(8, 64).swizzled(Swizzle.for_bytes(128, 16))
    for r in range(8):
        for c in range(64):
            chunk, within = divmod(c, 8)
            assert layout.offset((r, c)) == r * 64 + (chunk ^ r) * 8 + within


@st.composite
def swizzles(draw: st.DrawFn) -> Swizzle:
    bits = draw(st.integers(0, 4))
    base = draw(st.integers(0, 6))
    shift = draw(st.integers(0, 9).filter(lambda s: bits == 0 or s != base))
    return Swizzle(bits, base, shift)


@settings(max_examples=200, deadline=None)
@given(swizzles(), st.integers(0, 3))
def test_swizzle_is_a_bijection_on_the_buffer(sw: Swizzle, extra_bits: int) -> None:
    # Any buffer whose size is a multiple of 2**(highest bit read or written) is permuted.
    n = 1 << (max(sw.base, sw.shift) + sw.bits + extra_bits)
    out = sw.apply(np.arange(n, dtype=np.int64))
    np.testing.assert_array_equal(np.sort(out), np.arange(n))


@settings(max_examples=100, deadline=None)
@given(swizzles(), st.integers(0, 3), st.integers(0, 3))
def test_swizzled_row_major_tile_is_injective(sw: Swizzle, a: int, b: int) -> None:
    span = max(sw.base, sw.shift) + sw.bits
    rows, cols = 1 << (span // 2 + a), 1 << (span - span // 2 + b)
    layout = row_major(rows, cols).swizzled(sw)
    assert layout.is_injective()
    assert layout.size == rows * cols


# --------------------------------------------------------------------------- text form


@st.composite
def shared_layouts(draw: st.DrawFn) -> SharedLayout:
    rank = draw(st.integers(1, 4))
    dims = []
    for _ in range(rank):
        n = draw(st.integers(1, 3))
        modes = draw(
            st.lists(
                st.builds(Mode, st.integers(1, 16), st.integers(0, 4096)), min_size=n, max_size=n
            )
        )
        dims.append(tuple(modes))
    sw = draw(st.none() | swizzles())
    return SharedLayout(tuple(dims), sw)


@settings(max_examples=200, deadline=None)
@given(shared_layouts())
def test_text_round_trip(layout: SharedLayout) -> None:
    text = str(layout)
    assert parse_shared_layout(text) == layout
    assert str(parse_shared_layout(text)) == text


def test_text_form_examples() -> None:
    assert str(row_major(8, 64)) == "shared(8:64, 64:1)"
    assert str(blocked((64, 64), (8, 8))) == "shared((8, 8):(512, 8), (8, 8):(64, 1))"
    sw = row_major(8, 64).swizzled(3, 3, 6)
    assert str(sw) == "shared(8:64, 64:1) ^ swizzle(3, 3, 6)"
    assert parse_shared_layout("row_major(8, 64) ^ swizzle(3,3,6)") == sw
    assert parse_shared_layout("column_major(4, 5)") == column_major(4, 5)
    assert "swizzle" in SHARED_LAYOUT_GRAMMAR


@pytest.mark.parametrize(
    "text",
    [
        "shared(",
        "shared(4:1,)",
        "shared((4, 2):(1))",
        "shared(0:1)",
        "row_major(4) ^ swizzle(1, 2, 2)",
    ],
)
def test_parse_errors_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="shared layout"):
        parse_shared_layout(text)


# --------------------------------------------------------------------------- bank model


def naive_wavefronts(addresses: np.ndarray, width: int) -> int:
    """The model spelled out lane by lane, to cross-check the vectorized one."""
    per_phase = {1: 32, 2: 32, 4: 32, 8: 16, 16: 8}[width]
    total = 0
    for start in range(0, len(addresses), per_phase):
        words_in_bank: dict[int, set[int]] = defaultdict(set)
        for a in addresses[start : start + per_phase]:
            for byte in range(int(a), int(a) + width):
                words_in_bank[(byte // 4) % 32].add(byte // 4)
        total += max(len(w) for w in words_in_bank.values())
    return total


def test_wavefronts_known_cases() -> None:
    lanes = np.arange(32)
    assert wavefronts(lanes * 4, 4) == 1  # consecutive words
    assert wavefronts(lanes * 128, 4) == 32  # one bank, 32 words
    assert wavefronts(np.zeros(32, dtype=np.int64), 4) == 1  # broadcast
    assert wavefronts(lanes * 8, 4) == 2  # stride 2 words: 2-way
    assert wavefronts(lanes, 1) == 1 and wavefronts(lanes * 2, 2) == 1  # bytes share words
    assert wavefronts(lanes * 8, 8) == 2 and bank_conflicts(lanes * 8, 8) == 0  # half warps
    assert wavefronts(lanes * 16, 16) == 4 and bank_conflicts(lanes * 16, 16) == 0
    assert bank_conflicts(lanes * 128, 4) == 31
    assert ideal_wavefronts(32, 16) == 4 and ideal_wavefronts(8, 16) == 1


def test_wavefront_errors() -> None:
    with pytest.raises(ValueError, match="aligned"):
        wavefronts(np.arange(32) * 4 + 2, 4)
    with pytest.raises(ValueError, match="access width"):
        wavefronts(np.arange(32) * 4, 3)
    with pytest.raises(ValueError, match="lane addresses"):
        wavefronts(np.arange(33) * 4, 4)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([1, 2, 4, 8, 16]),
    st.lists(st.integers(0, 63), min_size=1, max_size=32),
)
def test_wavefronts_match_naive_model(width: int, slots: list[int]) -> None:
    addresses = np.array(slots, dtype=np.int64) * width * 3  # *3 mixes banks and rows
    assert wavefronts(addresses, width) == naive_wavefronts(addresses, width)


def test_ldmatrix_rows_conflict_without_swizzle_and_not_with_it() -> None:
    # ldmatrix.x4 on a 16-bit 8x64 tile: lane l gives row l % 8 of 8x8 matrix l // 8, i.e.
    # a 16-byte row piece at (row l % 8, columns 8*(l//8) ...); phases are 8 lanes.
    lanes = np.arange(32)
    rows, cols = lanes % 8, (lanes // 8) * 8
    plain = row_major(8, 64)
    swizzled = plain.swizzled(Swizzle.for_bytes(128, 16))
    plain_bytes = plain.offset((rows, cols)) * 2
    assert wavefronts(plain_bytes, 16) == 32  # 8-way in each of the 4 phases
    assert bank_conflicts(plain_bytes, 16) == 28
    assert bank_conflicts(swizzled.offset((rows, cols)) * 2, 16) == 0


# --------------------------------------------------------------------------- warp accesses


def _layout_module():
    return layout_module


def local(*shape: int):
    return _layout_module().local(*shape)


def spatial(*shape: int):
    return _layout_module().spatial(*shape)


def column_spatial(*shape: int):
    return _layout_module().column_spatial(*shape)


def test_f32_32x32_read_by_column_is_32_way() -> None:
    by_column = spatial(32, 1).local(1, 32)  # thread t holds row t; instruction k reads column k
    addresses, width = warp_access_addresses(by_column, row_major(32, 32), 32, 1)
    assert addresses.shape == (32, 32) and width == 4
    assert all(wavefronts(a, 4) == 32 for a in addresses)
    assert warp_access_conflicts(by_column, row_major(32, 32), 32, 1) == 32 * 31


def test_f32_32x32_read_by_row_and_padded_are_conflict_free() -> None:
    by_row = local(32, 1).spatial(1, 32)  # lane = column
    assert warp_access_conflicts(by_row, row_major(32, 32), 32, 1) == 0
    by_column = spatial(32, 1).local(1, 32)
    assert warp_access_conflicts(by_column, strided((32, 32), (33, 1)), 32, 1) == 0


def test_vector_accesses() -> None:
    rows_of_8 = spatial(4, 8).local(1, 4)  # 4 consecutive floats per thread: 16-byte access
    assert warp_access_conflicts(rows_of_8, row_major(4, 32), 32, 4) == 0
    # Pairs instead: a half-warp's 16 lanes hit bytes 16t + 8k, 256 bytes with gaps, so
    # every used bank holds two words: 2 wavefronts per phase, 1 extra x 2 phases x 2 loads.
    assert warp_access_conflicts(rows_of_8, row_major(4, 32), 32, 2) == 4
    with pytest.raises(ValueError, match="not contiguous"):
        warp_access_conflicts(rows_of_8, column_major(4, 32), 32, 4)
    with pytest.raises(ValueError, match="do not split"):
        warp_access_conflicts(rows_of_8, row_major(4, 32), 32, 3)
    with pytest.raises(ValueError, match="bits"):
        warp_access_conflicts(spatial(4, 4).local(1, 8), row_major(4, 32), 32, 8)  # 256 bits
    with pytest.raises(ValueError, match="aligned"):
        warp_access_conflicts(rows_of_8, strided((4, 32), (34, 1)), 32, 4)


def test_ldmatrix_layout_with_and_without_swizzle() -> None:
    # Thread t holds row t % 8, columns 8*(t//8) .. +7 (ldmatrix's lane order).
    ldsm = column_spatial(8, 8).local(1, 8)
    table = ldsm.table()
    t, i = np.arange(64)[:, None], np.arange(8)[None, :]
    np.testing.assert_array_equal(table[..., 0], np.broadcast_to(t % 8, (64, 8)))
    np.testing.assert_array_equal(table[..., 1], (t // 8) * 8 + i)
    plain = row_major(8, 64)
    swizzled = plain.swizzled(Swizzle.for_bytes(128, 16))
    for warp in (0, 1):
        assert warp_access_conflicts(ldsm, plain, 16, 8, warp=warp) == 28
        assert warp_access_conflicts(ldsm, swizzled, 16, 8, warp=warp) == 0
    with pytest.raises(ValueError, match="warp 2"):
        warp_access_conflicts(ldsm, plain, 16, 8, warp=2)


def test_shape_mismatch_is_reported() -> None:
    with pytest.raises(ValueError, match=r"shape \(16, 8\).*shape \(8, 16\)"):
        warp_access_conflicts(local(2, 1).spatial(8, 4).local(1, 2), row_major(8, 16), 16, 2)


def test_a_swizzle_repeats_after_its_period():
    """The 128-byte swizzle of f16 repeats every 512 elements (1024 bytes): adding the
    period to an offset adds it to the swizzled offset; one element earlier it does not."""
    swizzle = Swizzle.for_bytes(128, 16)
    assert swizzle.period == 512 and Swizzle(0, 0, 0).period == 1
    offsets = np.arange(4096)
    shifted = swizzle.apply(offsets + swizzle.period)
    assert (shifted == swizzle.apply(offsets) + swizzle.period).all()
    assert not (swizzle.apply(offsets + 256) == swizzle.apply(offsets) + 256).all()


@pytest.mark.parametrize("dtype", [dtypes.f16, dtypes.f32, dtypes.u8])
@pytest.mark.parametrize("row_bytes", [128, 256, 384, 512, 1024])
def test_default_layouts_keep_an_ldmatrix_phase_apart_in_the_banks(dtype, row_bytes):
    """Any 8 consecutive rows at one 16-byte column (an ldmatrix phase, 8 lanes of a
    cp.async of a column) land in 8 distinct 16-byte bank groups, whatever the row
    pitch: the standard 128-byte swizzle alone gave 256-byte rows a 2-way conflict."""
    columns = row_bytes * 8 // dtype.bits
    layout = default_layout(dtype, (32, columns))
    chunk = 128 // dtype.bits  # elements in 16 bytes
    for first_row in range(0, 32 - 7):
        for column in range(0, columns, chunk):
            offsets = [int(layout.offset((r, column))) for r in range(first_row, first_row + 8)]
            groups = {(o * dtype.bits // 8 // 16) % 8 for o in offsets}
            assert len(groups) == 8, (first_row, column, offsets)
