"""A block leaves early from an `if` in the kernel's body (`if b * B >= n: return`,
Triton's first line): what follows runs only in the blocks that did not leave, on the
interpreter, the CPU backend and every GPU target. A `return` anywhere else stays an
error that says where one is allowed."""

import numpy as np
import pytest
from conftest import assert_reported, run_both

import tilelang as tl


@tl.kernel(warps=1)
def doubled_below(
    x: tl.Tensor[tl.f32, "N"], n: tl.i32, y: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 32
):
    b = tl.blocks(tl.cdiv(N, B))
    if b * B >= n:
        return
    tl.store(y, [b * B], tl.load(x, [b * B], [B]) * 2.0)


@tl.kernel(warps=1)
def two_exits(
    x: tl.Tensor[tl.i32, "N"],
    lo: tl.i32,
    hi: tl.i32,
    y: tl.Tensor[tl.i32, "N"],
    B: tl.constexpr = 16,
):
    b = tl.blocks(tl.cdiv(N, B))
    if b < lo:
        tl.store(y, [b * B], tl.full([B], -1, tl.i32))  # the leaving branch still runs
        return
    t = tl.load(x, [b * B], [B])
    if b >= hi:
        return
    else:
        t = t + 100
    tl.store(y, [b * B], t + 1)


@tl.kernel(warps=1)
def leaves_at_compile_time(
    x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], SKIP: tl.constexpr = True
):
    if SKIP:
        return
    tl.store(y, [0], tl.load(x, [0], [16]))


def blocks_of(values: np.ndarray, width: int) -> np.ndarray:
    return values.reshape(-1, width)


@pytest.mark.parametrize("n", [0, 1, 31, 32, 70, 128, 1000])
def test_blocks_at_or_past_n_write_nothing(n):
    x = np.arange(128, dtype=np.float32)
    expected = np.zeros(128, np.float32)
    for b, block in enumerate(blocks_of(x, 32)):
        if b * 32 < n:
            expected[b * 32 : (b + 1) * 32] = block * 2
    for got in run_both(doubled_below, [x, n], [np.zeros(128, np.float32)]):
        np.testing.assert_array_equal(got, expected)


def test_each_exit_keeps_the_rest_from_its_blocks():
    x = np.arange(96, dtype=np.int32)
    expected = np.zeros(96, np.int32)
    for b in range(6):
        rows = slice(b * 16, (b + 1) * 16)
        if b < 1:
            expected[rows] = -1
        elif b < 4:
            expected[rows] = x[rows] + 101
    for got in run_both(two_exits, [x, 1, 4], [np.zeros(96, np.int32)]):
        np.testing.assert_array_equal(got, expected)


def test_a_compile_time_exit_emits_nothing_after_it():
    y = np.zeros(16, np.float32)
    leaves_at_compile_time(np.ones(16, np.float32), y)
    np.testing.assert_array_equal(y, np.zeros(16, np.float32))
    assert "store" not in leaves_at_compile_time.ir("frontend")


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_the_exits_compile_for_the_gpu(arch):
    for kernel in (doubled_below, two_exits):
        resources = kernel.compile(target=arch).resources
        assert resources.spill_store_bytes == 0


@tl.kernel(warps=1)
def return_in_a_loop(x: tl.Tensor[tl.f32, "N"]):
    for i in tl.range(0, N, 16):
        if i > 32:
            return  # <- error
        tl.store(x, [i], tl.zeros([16], tl.f32))


def test_a_return_inside_a_loop_says_where_one_is_allowed():
    assert_reported(return_in_a_loop, "`return` inside a runtime loop", "if b >= n: return")
