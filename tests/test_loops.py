"""`tl.range` loops run as Python's range() on every path: the interpreter, the CPU
backend and the CUDA code; a zero step fails before anything runs."""

import numpy as np
import pytest

import tilelang as tl
from tilelang.ir.verify import IRVerifyError
from tilelang.lang.errors import TileLangError


@tl.kernel(warps=1)
def visits(out: tl.Tensor[tl.i32, "N"], start: tl.i32, stop: tl.i32, step: tl.i32):
    """out[0] = the number of iterations, out[1:] = the loop variable of each."""
    count = 0
    for i in tl.range(start, stop, step):
        tl.store(out, [count + 1], tl.full([1], i, tl.i32))
        count = count + 1
    tl.store(out, [0], tl.full([1], count, tl.i32))


BOUNDS = [
    (0, 10, 3),
    (10, 0, -3),
    (10, 0, -1),
    (5, 5, 1),
    (5, 5, -1),
    (0, 10, -1),
    (10, 0, 2),
    (-7, 7, 5),
    (7, -7, -5),
    (3, 4, 100),
    (4, 3, -100),
    (2**31 - 3, 2**31 - 1, 1),  # next to the top: the variable must not overflow
    (-(2**31) + 2, -(2**31), -1),  # next to the bottom
]


def expected(start: int, stop: int, step: int) -> np.ndarray:
    seen = list(range(start, stop, step))
    out = np.full(64, -99, np.int32)
    out[0] = len(seen)
    out[1 : 1 + len(seen)] = seen
    return out


@pytest.mark.parametrize(("start", "stop", "step"), BOUNDS)
def test_interpreter_and_cpu_backend_run_pythons_range(start, stop, step):
    want = expected(start, stop, step)
    for run in (visits, visits.interpret):
        got = run(np.full(64, -99, np.int32), start, stop, step)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("run", ["interpret", "cpu"])
def test_a_zero_step_fails_before_anything_runs(run):
    out = np.full(64, -99, np.int32)
    launch = visits.interpret if run == "interpret" else visits
    with pytest.raises(ValueError, match=r"test_loops\.py:\d+:\d+: the loop step is 0") as info:
        launch(out, 0, 10, 0)
    assert "nonzero step" in str(info.value)
    assert (out == -99).all()  # nothing was stored


def test_a_gpu_build_checks_the_step_on_the_host():
    compiled = visits.compile(target="sm_90")
    (check,) = compiled.thread.checks
    _, message = check
    assert "the loop step is 0" in message and "test_loops.py" in message
    source = compiled.source
    # Python's count, upward and downward, in unsigned arithmetic.
    assert " > 0 ? " in source and " < 0 ? " in source


def test_a_constant_zero_step_is_an_error_at_the_users_line():
    @tl.kernel(warps=1)
    def zero(out: tl.Tensor[tl.i32, "N"]):
        for i in tl.range(0, N, 0):
            tl.store(out, [i], tl.full([1], i, tl.i32))

    with pytest.raises(TileLangError, match=r"test_loops\.py:\d+.*must not be zero"):
        zero.specialize()


def test_a_step_that_depends_on_the_block_is_rejected():
    @tl.kernel(warps=1)
    def per_block(out: tl.Tensor[tl.i32, "N"]):
        b = tl.blocks(4)
        for i in tl.range(0, N, b + 1):
            tl.store(out, [i], tl.full([1], i, tl.i32))

    with pytest.raises(IRVerifyError, match="expected the step to be known before the launch"):
        per_block.specialize()


def test_a_constant_negative_step_counts_down_in_cuda():
    @tl.kernel(warps=1)
    def down(out: tl.Tensor[tl.i32, "N"]):
        for i in tl.range(N - 1, -1, -2):
            tl.store(out, [i], tl.full([1], i, tl.i32))

    compiled = down.compile(target="sm_80")
    assert not compiled.thread.checks  # a constant nonzero step needs no check
    assert "(u32)2u + 1" not in compiled.source and " / 2u + 1 : 0)" in compiled.source
    out = down(np.zeros(9, np.int32))
    np.testing.assert_array_equal(out, [0, 0, 2, 0, 4, 0, 6, 0, 8])
