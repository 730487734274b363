"""A block leaves early from an `if` in the kernel's body (`if b * B >= n: return`,
Triton's first line): what follows runs only in the blocks that did not leave, on the
interpreter, the CPU backend and every GPU target. The same holds from an `elif`, an
`else` or a nested `if`, runtime or compile-time, in a kernel or a `@tl.func`; a
`return` under compile-time conditions leaves from anywhere, loops that unroll
included, as Python's would. A `return` under a runtime condition inside a loop, or one
that gives a value where none can be given, is an error at its line that says what is
allowed."""

import numpy as np
import pytest
from conftest import assert_bitwise, assert_reported, compile_error, marked_line, run_both

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
    for kernel in (doubled_below, two_exits, runtime_elif_exit, nested_runtime_exit):
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


# ------------------------------------------------- returns under compile-time conditions


@tl.kernel(warps=1)
def nested_static_exit(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], V: tl.constexpr = 0):
    t = tl.load(x, [0], [16])
    tl.store(y, [16], t * 2.0)
    if V >= 1:  # noqa: SIM102 (the nesting is what is tested)
        if V == 2:
            return
    tl.store(y, [0], t + 1.0)


@pytest.mark.parametrize("v", [0, 1, 2])
def test_a_return_in_a_nested_compile_time_if_leaves_the_kernel(v):
    x = np.arange(32, dtype=np.float32)
    expected = np.concatenate([np.zeros(16) if v == 2 else x[:16] + 1, x[:16] * 2])
    compiled, interpreted = run_both(nested_static_exit, [x], [np.zeros(32, np.float32)], V=v)
    assert_bitwise(compiled, interpreted)
    np.testing.assert_array_equal(interpreted, expected)


@tl.kernel(warps=1)
def static_elif_exit(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"], V: tl.constexpr = 0):
    t = tl.load(x, [0], [16])
    if V == 0:
        u = t * 3
    elif V == 1:
        tl.store(y, [0], t * 2)
        return
    else:
        u = t + 7
    tl.store(y, [0], u)  # `u` has no value where V == 1: this line must not be traced


@pytest.mark.parametrize("v", [0, 1, 2])
def test_a_return_in_a_compile_time_elif_skips_the_rest(v):
    x = np.arange(16, dtype=np.int32) - 5
    expected = {0: x * 3, 1: x * 2, 2: x + 7}[v]
    compiled, interpreted = run_both(static_elif_exit, [x], [np.zeros(16, np.int32)], V=v)
    assert_bitwise(compiled, interpreted)
    np.testing.assert_array_equal(interpreted, expected)


@tl.kernel(warps=1)
def exit_from_unrolled_loop(
    x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], STOP: tl.constexpr = 0
):
    b = tl.blocks(2)
    if b == 1:  # a runtime `if` whose branch leaves from inside a loop that unrolls
        for i in (0, 1, 2):
            if i == STOP:
                return
            tl.store(y, [i * 8], tl.load(x, [i * 8], [8]) + 1.0)
    tl.store(y, [32 + b * 8], tl.load(x, [32 + b * 8], [8]) * 3.0)


def unrolled_exit_reference(x: np.ndarray, stop: int) -> np.ndarray:
    """Block 0 only triples its slice; block 1 adds one to slices 0, 1, 2 until slice
    `stop`, and triples its own slice only when it never reached `stop`."""
    y = np.zeros_like(x)
    y[32:40] = x[32:40] * 3
    for i in range(3):
        if i == stop:
            return y
        y[i * 8 : (i + 1) * 8] = x[i * 8 : (i + 1) * 8] + 1
    y[40:48] = x[40:48] * 3
    return y


@pytest.mark.parametrize("stop", [0, 2, 3])
def test_a_return_in_an_unrolled_loop_ends_the_path(stop):
    x = np.arange(48, dtype=np.float32)
    outs = run_both(exit_from_unrolled_loop, [x], [np.zeros(48, np.float32)], STOP=stop)
    assert_bitwise(*outs)
    np.testing.assert_array_equal(outs[1], unrolled_exit_reference(x, stop))


@tl.func
def scaled_by_first_match(t, V):
    for i in range(1, 4):
        if i == V:
            return t * float(i)  # leaves the loop and the helper
    return t - 1.0


@tl.func
def store_unless_past(y, b, n, t):
    if b >= n:
        return
    tl.store(y, [b * 8], t)


@tl.kernel(warps=1)
def helpers_that_leave(
    x: tl.Tensor[tl.f32, "N"], n: tl.i32, y: tl.Tensor[tl.f32, "N"], V: tl.constexpr = 0
):
    b = tl.blocks(4)
    t = scaled_by_first_match(tl.load(x, [b * 8], [8]), V)
    store_unless_past(y, b, n, t)
    tl.store(y, [32 + b * 8], t)  # after the helper, in every block


@pytest.mark.parametrize(("v", "n"), [(0, 2), (2, 0), (3, 4)])
def test_a_helper_leaves_itself_not_the_kernel(v, n):
    x = np.arange(32, dtype=np.float32)
    t = x * v if v in (1, 2, 3) else x - 1
    expected = np.zeros(64, np.float32)
    expected[32:] = t
    expected[: min(n, 4) * 8] = t[: min(n, 4) * 8]
    xs = np.concatenate([x, np.zeros(32, np.float32)])
    outs = run_both(helpers_that_leave, [xs, n], [np.zeros(64, np.float32)], V=v)
    assert_bitwise(*outs)
    np.testing.assert_array_equal(outs[1], expected)


# ------------------------------------------------------ returns under runtime conditions


@tl.kernel(warps=1)
def runtime_elif_exit(x: tl.Tensor[tl.f32, "N"], n: tl.i32, y: tl.Tensor[tl.f32, "N"]):
    b = tl.blocks(4)
    if b == 0:
        tl.store(y, [32], tl.load(x, [0], [8]))
    elif b >= n:
        return
    tl.store(y, [b * 8], tl.load(x, [b * 8], [8]) + 1.0)


@pytest.mark.parametrize("n", [0, 2, 4])
def test_a_return_in_a_runtime_elif_leaves_only_those_blocks(n):
    x = np.arange(40, dtype=np.float32)
    expected = np.zeros(40, np.float32)
    expected[32:40] = x[0:8]  # block 0 takes the `if` and then runs on
    for b in range(4):
        if b == 0 or b < n:
            expected[b * 8 : (b + 1) * 8] = x[b * 8 : (b + 1) * 8] + 1
    outs = run_both(runtime_elif_exit, [x, n], [np.zeros(40, np.float32)])
    assert_bitwise(*outs)
    np.testing.assert_array_equal(outs[1], expected)


@tl.kernel(warps=1)
def nested_runtime_exit(
    x: tl.Tensor[tl.i32, "N"], lo: tl.i32, hi: tl.i32, y: tl.Tensor[tl.i32, "N"]
):
    b = tl.blocks(6)
    t = tl.load(x, [b * 4], [4])
    if b >= lo:
        if b >= hi:
            return
        t = t * 10
    else:
        t = t - 1
    t = tl.reshape(t, [2, 2])  # after the exit a name may take any shape
    tl.store(y, [b * 4], tl.reshape(t, [4]) + 1)


def test_a_return_in_a_nested_runtime_if_leaves_only_those_blocks():
    x = np.arange(24, dtype=np.int32)
    expected = np.zeros(24, np.int32)
    for b in range(6):
        rows = slice(b * 4, (b + 1) * 4)
        if b < 2:
            expected[rows] = x[rows] - 1 + 1
        elif b < 5:
            expected[rows] = x[rows] * 10 + 1
    outs = run_both(nested_runtime_exit, [x, 2, 5], [np.zeros(24, np.int32)])
    assert_bitwise(*outs)
    np.testing.assert_array_equal(outs[1], expected)


# ------------------------------------------------------------- what stays an error


@tl.kernel(warps=1)
def runtime_return_in_unrolled_loop(x: tl.Tensor[tl.f32, "N"], n: tl.i32):
    for i in range(2):
        if i >= n:
            return  # <- error
        tl.store(x, [i * 16], tl.zeros([16], tl.f32))


def test_a_runtime_return_in_an_unrolled_loop_says_what_is_allowed():
    assert_reported(
        runtime_return_in_unrolled_loop,
        "under a runtime `if` inside a loop",
        "also from an `elif`",
    )


@tl.kernel(warps=1)
def returns_a_value(x: tl.Tensor[tl.f32, "N"], V: tl.constexpr = 1):
    if V == 1:  # noqa: SIM102 (the nesting is what is tested)
        if V >= 0:
            return 1  # <- error
    tl.store(x, [0], tl.zeros([16], tl.f32))


def test_a_kernel_returning_a_value_is_reported_at_its_line():
    assert_reported(returns_a_value, "a kernel returns nothing")


@tl.func
def value_under_runtime_if(t, n):
    if n > 0:
        return t  # <- error
    return t * 2.0


@tl.kernel(warps=1)
def calls_value_under_runtime_if(x: tl.Tensor[tl.f32, "N"], n: tl.i32):
    tl.store(x, [0], value_under_runtime_if(tl.load(x, [0], [16]), n))


def test_a_helper_returning_a_value_under_a_runtime_if_says_what_to_do():
    error = compile_error(calls_value_under_runtime_if)
    assert error.loc is not None and error.loc.line == marked_line(value_under_runtime_if)
    assert "only under compile-time conditions" in str(error)
    assert "return it after the `if`" in str(error)
