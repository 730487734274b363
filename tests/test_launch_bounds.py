"""`@tl.kernel(min_blocks=k)`: CUDA's ``__launch_bounds__(threads, k)``. Without it ptxas
may cap a thread's registers below 255 to fit more blocks on a multiprocessor, and
spill to stay under the cap; with ``min_blocks=1`` it uses what the kernel needs. The
value (or a function of the constexprs giving it) is checked, is part of the build's
cache key, and reaches the CUDA source; paged attention's tile table states it through
this option where its plain tiles would spill."""

import re

import numpy as np
import pytest

import tilelang as tl
from tilelang import TileLangError, dtypes
from tilelang.kernel import Kernel
from tilelang.kernels import paged_attention as pa


def scale_rows(
    x: tl.Tensor[tl.f32, "M", "N"], y: tl.Tensor[tl.f32, "M", "N"], BM: tl.constexpr = 16
):
    bm = tl.blocks(tl.cdiv(M, BM))
    tl.store(y, [bm * BM, 0], tl.load(x, [bm * BM, 0], [BM, 64]) * 2.0)


def bounds(kernel: Kernel, **constexprs) -> str:
    source = kernel.compile(target="sm_90", **constexprs).source
    (found,) = re.findall(r"__launch_bounds__\(([^)]*)\)", source)
    return found


def test_without_min_blocks_the_bound_names_only_the_threads():
    assert bounds(tl.kernel(scale_rows, warps=4)) == "128"


def test_min_blocks_is_the_launch_bounds_second_argument():
    assert bounds(tl.kernel(scale_rows, warps=2, min_blocks=3)) == "64, 3"


def test_min_blocks_may_be_a_function_of_the_constexprs():
    kernel = tl.kernel(scale_rows, warps=4, min_blocks=lambda BM, **_: BM // 16)
    assert bounds(kernel, BM=32) == "128, 2"
    assert bounds(kernel, BM=16) == "128, 1"


@pytest.mark.parametrize("given", [0, 33, 2.0, True, "1"])
def test_a_bad_min_blocks_is_named_with_what_was_given(given):
    kernel = tl.kernel(scale_rows, min_blocks=given)
    with pytest.raises(
        TileLangError,
        match=re.escape(
            f"min_blocks must be None or an int from 1 to 32 (blocks per multiprocessor), got {given!r}"
        ),
    ):
        kernel.compile(target="sm_90")


def test_builds_with_and_without_min_blocks_are_cached_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    assert bounds(tl.kernel(scale_rows)) == "128"
    assert bounds(tl.kernel(scale_rows, min_blocks=1)) == "128, 1"
    assert bounds(tl.kernel(scale_rows)) == "128"


def test_min_blocks_changes_nothing_on_the_cpu_backend():
    x = np.arange(32 * 64, dtype=np.float32).reshape(32, 64)
    y = tl.kernel(scale_rows, min_blocks=1)(x, np.zeros_like(x))
    assert np.array_equal(y, 2 * x)


def test_one_block_per_multiprocessor_lets_paged_attention_take_more_registers():
    """u8 cache at D = 64, its plain tiles (32 tokens, 4 warps) pipelined as a call
    pipelines them: for sm_90 ptxas caps the registers at 96 for occupancy; with
    min_blocks=1 it takes more. Neither spills (since the kernel combines its splits
    itself), so the default tiles state no minimum there."""
    stages = pa.pipeline_stages(32, 64, dtypes.u8)

    def build(min_blocks):
        return pa.paged_split_kernel.compile(
            target="sm_90", T=dtypes.f16, KT=dtypes.u8, MODE=pa.TOKEN_SCALED, BS=16, G=8,
            GP=16, HD=64, BN=32, WARPS=4, MIN_BLOCKS=min_blocks, STAGES=stages,
        ).resources  # fmt: skip

    capped, free = build(0), build(1)
    assert capped.registers <= 96 and capped.spill_store_bytes == 0, capped
    assert free.registers > capped.registers and free.spill_store_bytes == 0, free
    tiles = pa.default_tiles(64, 8, dtypes.u8, "sm_90")
    assert (tiles["BN"], tiles["WARPS"], tiles["MIN_BLOCKS"]) == (32, 4, 0)
