"""Loops the frontend unrolls: `for` over any compile-time iterable (a range, a list,
enumerate, zip) and `while` on a condition known while compiling, with `break` and
`continue`, behave as the same Python would, and leave nothing of the loop in the kernel."""

import numpy as np

import tilelang as tl


@tl.kernel(warps=1)
def powers_below(x: tl.Tensor[tl.i32, "N"], LIMIT: tl.constexpr = 100):
    """x[j] = the j-th power of 3 below LIMIT whose last digit is not 7 (the rest 0),
    found with a compile-time `while`, `continue` and `break`."""
    out = tl.zeros([8], tl.i32)
    lanes = tl.arange(0, 8)
    power, j = 1, 0
    while True:
        power *= 3
        if power % 10 == 7:
            continue
        if power >= LIMIT or j == 8:
            break
        out = tl.where(lanes == j, power, out)
        j += 1
    tl.store(x, [0], out)


def _reference(limit: int) -> list[int]:
    found, power = [], 1
    while True:
        power *= 3
        if power % 10 == 7:
            continue
        if power >= limit or len(found) == 8:
            break
        found.append(power)
    return found + [0] * (8 - len(found))


def test_compile_time_while_with_break_and_continue_runs_as_python_would():
    for limit in (2, 10, 100, 10**6):
        got = powers_below(np.zeros(8, np.int32), LIMIT=limit)
        np.testing.assert_array_equal(got, _reference(limit))
        assert np.array_equal(powers_below.interpret(np.zeros(8, np.int32), LIMIT=limit), got)


@tl.kernel(warps=1)
def bitonic_sort(
    x: tl.Tensor[tl.f32, "R", "N"],
    y: tl.Tensor[tl.f32, "R", "N"],
    BR: tl.constexpr,
    BN: tl.constexpr,
):
    """Each row of x sorted ascending (BR = R; BN = N, a power of two): a bitonic network whose
    stages a compile-time `while` counts."""
    v = tl.load(x, [0, 0], [BR, BN])
    size = 2
    while size <= BN:
        step = size // 2
        while step:
            lo, hi = tl.split(tl.reshape(v, [BR, BN // (2 * step), 2, step]), 2, axis=2)
            ascending = ((tl.arange(0, BN // (2 * step)) * (2 * step)) & size) == 0
            swap = (lo > hi) == ascending[None, :, None, None]
            v = tl.concat([tl.where(swap, hi, lo), tl.where(swap, lo, hi)], axis=2)
            v = tl.reshape(v, [BR, BN])
            step //= 2
        size *= 2
    tl.store(y, [0, 0], v)


def test_a_sorting_network_written_with_while_sorts():
    x = np.random.default_rng(3).standard_normal((4, 32)).astype(np.float32)
    got = bitonic_sort(x, np.empty_like(x), BR=4, BN=32)
    np.testing.assert_array_equal(got, np.sort(x, axis=1))


def test_for_over_a_range_stops_at_break_and_skips_at_continue():
    @tl.kernel(warps=1)
    def firsts(x: tl.Tensor[tl.i32, "N"]):
        out = tl.zeros([4], tl.i32)
        lanes = tl.arange(0, 4)
        slot = 0
        for value in [5, 6, 7, 8, 9, 10, 11]:
            if value % 2 == 0:
                continue
            if slot == 3:
                break
            out = tl.where(lanes == slot, value, out)
            slot += 1
        tl.store(x, [0], out)

    np.testing.assert_array_equal(firsts(np.zeros(4, np.int32)), [5, 7, 9, 0])


def test_break_inside_an_unrolled_loop_in_a_runtime_loop_leaves_only_the_inner_loop():
    @tl.kernel(warps=1)
    def sums(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"]):
        total = tl.zeros([4], tl.f32)
        for i in tl.range(0, N, 4):
            for part in range(3):
                if part == 2:
                    break
                total = total + tl.load(x, [i], [4])
        tl.store(y, [0], total)

    x = np.arange(8, dtype=np.float32)
    want = 2 * (x[:4] + x[4:])
    np.testing.assert_array_equal(sums(x, np.zeros(8, np.float32))[:4], want)


@tl.kernel(warps=1)
def weighted_rows(x: tl.Tensor[tl.f32, "3", "8"], y: tl.Tensor[tl.f32, "8"]):
    """y = sum over k of (k + 1) * w_k * x[k] for weights w = (0.5, 2, -1), the rows taken
    in reverse: enumerate, zip and reversed are compile-time Python like range."""
    acc = tl.zeros([8], tl.f32)
    for k, (row, w) in enumerate(zip(reversed((0, 1, 2)), (0.5, 2.0, -1.0), strict=True)):
        acc = acc + tl.load(x, [row, 0], [1, 8]).reshape([8]) * (w * (k + 1))
    tl.store(y, [0], acc)


def test_enumerate_zip_and_reversed_unroll_as_range_does():
    x = np.arange(24, dtype=np.float32).reshape(3, 8)
    want = 1 * 0.5 * x[2] + 2 * 2.0 * x[1] + 3 * -1.0 * x[0]
    np.testing.assert_array_equal(weighted_rows(x, np.zeros(8, np.float32)), want)
    np.testing.assert_array_equal(weighted_rows.interpret(x, np.zeros(8, np.float32)), want)
