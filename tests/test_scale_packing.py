"""Group scales stored for the kernels' tiles (`tilelang.quant.scale_packing`).

Laws: unpacking inverts packing exactly (padding included, odd shapes); in a packed
tile each thread's scales are whole aligned 16-byte words (or its whole share) that
hold exactly the (group, column) pairs its B fragment codes need — computed here from
the B layout's table, independently of the packing; the tilelang.quant kernels read
the packed scales and stay exact (tests/test_quant_matmul.py), and a block-scaled
weight's main loop loads its scales in words, not bytes (sm_90 SASS).
"""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir.fragments import dot_layout
from tilelang.quant.scale_packing import ScalePacking, scale_layout

CASES = [  # (scale type, groups per tile, group size, m, warps)
    (tl.f8e4m3, 8, 16, 16, 4),  # NVFP4, BK = 128
    (tl.u8, 4, 32, 16, 4),  # MX, BK = 128
    (tl.u8, 2, 32, 16, 4),  # MX, BK = 64: 8 bytes a thread
    (tl.f16, 4, 32, 32, 4),  # f16 scales, g32
    (tl.u8, 2, 32, 128, 8),  # the GEMM tile
]


def packing(dtype, groups, group, m, warps, shape=(37, 300)) -> ScalePacking:
    return ScalePacking(dtype, shape, groups, group, 128, m, warps, tl.f16, tl.f32)


@pytest.mark.parametrize(("dtype", "groups", "group", "m", "warps"), CASES, ids=str)
def test_unpack_inverts_pack_exactly(dtype, groups, group, m, warps):
    p = packing(dtype, groups, group, m, warps)
    rng = np.random.default_rng(groups)
    codes = rng.integers(0, 1 << dtype.bits, p.shape).astype(dtype.storage)
    packed = p.pack(codes)
    rows = -(-37 // groups) * groups  # 37 rows padded to whole tiles; 300 columns to 384
    assert packed.shape == p.packed_shape == (3, rows * 128)
    np.testing.assert_array_equal(p.unpack(packed), codes)
    assert np.count_nonzero(packed) == np.count_nonzero(codes)  # padding is zeros


@pytest.mark.parametrize(("dtype", "groups", "group", "m", "warps"), CASES, ids=str)
def test_each_thread_reads_exactly_its_columns_scales_in_whole_words(
    dtype, groups, group, m, warps
):
    """The (k // G, n) of every code a thread holds in the B layout, and nothing else,
    lie in contiguous 16-byte-aligned runs of the packed tile (the whole share when it
    is under 16 bytes)."""
    p = packing(dtype, groups, group, m, warps, shape=(groups, 128))
    element = dtype.bits // 8
    tile = np.arange(groups * 128).reshape(groups, 128)  # element ids, row-major
    packed = p.pack(tile.astype(np.int64)).ravel()
    b = dot_layout("b", m, 128, groups * group, tl.f16, tl.f32, warps).table()
    seen_shares = set()
    for thread in range(b.shape[0]):
        rows, cols = b[thread, :, 0] // group, b[thread, :, 1]
        needed = set((rows * 128 + cols).tolist())
        where = np.flatnonzero(np.isin(packed, list(needed)))
        assert len(where) == len(needed)  # each scale stored once
        run = min(16 // element, len(needed))
        assert len(where) % run == 0
        for start in where[::run]:
            assert start * element % min(16, run * element) == 0  # aligned
            assert list(where[where >= start][:run]) == list(range(start, start + run))
        seen_shares.add(tuple(where))
    assert sum(len(s) for s in seen_shares) == groups * 128  # the replicas share words


def test_the_scale_layout_is_the_b_layout_reduced_over_a_groups_rows():
    b = dot_layout("b", 16, 128, 128, tl.f16, tl.f32, 4)
    s = scale_layout(b, 8)
    assert s.shape == (8, 128) and s.num_locals == 8 * 4  # 8 groups x 4 columns a thread
    with pytest.raises(ValueError, match="groups must divide"):
        scale_layout(b, 3)


def test_shapes_that_do_not_match_are_refused_naming_them():
    p = packing(tl.u8, 4, 32, 16, 4)
    with pytest.raises(ValueError, match=r"scales: expected shape \(37, 300\)"):
        p.pack(np.zeros((36, 300), np.uint8))
    with pytest.raises(ValueError, match="packed scales: expected shape"):
        p.unpack(np.zeros((3, 10), np.uint8))
