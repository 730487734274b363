"""What a programmer porting Triton kernels writes first, and what tilelang does with it:
a Python number carried through a loop into a tile (Triton's `acc = 0.0`), Triton's
names (`tl.program_id`), pointer arithmetic (`y + offs`), a matmul loop without
`stages=` over the register budget, and integer `//` and `%` (truncated toward zero,
as in C and Triton, on every backend; Python's on compile-time ints)."""

import re

import numpy as np
import pytest
from conftest import assert_reported, run_both

import tilelang as tl
from tilelang.lang.triton_names import TRITON_NAMES, missing_attribute
from tilelang.runtime import gpu

# --------------------------------------------------- a number carried into a tile


@tl.kernel(warps=4)
def loop_sum(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1]):
    acc = 0.0
    for i in tl.range(0, N, 128):
        acc = acc + tl.sum(tl.load(x, [i], [128]))
    tl.store(out, [0], tl.broadcast(acc, [1]))


def test_a_python_float_carried_into_a_tile_sum_starts_as_that_tile():
    x = np.arange(512, dtype=np.float32)
    compiled, interpreted = run_both(loop_sum, [x], [np.zeros(1, np.float32)])
    assert compiled[0] == interpreted[0] == 512 * 511 / 2


def test_the_loop_compiled_again_leaves_one_start_tile_and_no_dead_code():
    text = loop_sum.ir("frontend")
    assert len(re.findall(r"= full 0\.0:f32 : tile<f32, \[\]>", text)) == 1, text
    assert text.count(" = for ") == 1 and text.count(" = reduce sum ") == 1, text


@tl.kernel(warps=4)
def carried_numbers(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 3, 128]):
    """An int start meeting an f32 tile, -inf a running max, 1.0 a product of rows; an
    inner loop's number inside an outer loop's."""
    total = 0
    largest = -float("inf")
    product = 1.0
    for i in tl.range(0, N, 128):
        t = tl.load(x, [i], [128])
        total = total + tl.sum(t)
        largest = tl.maximum(largest, tl.max(t))
        inner = 0.0
        for _ in tl.range(0, 2):
            inner = inner + t
        product = product * (inner / 2)
    tl.store(out, [0, 0], tl.broadcast(total, [1, 128]))
    tl.store(out, [1, 0], tl.broadcast(largest, [1, 128]))
    tl.store(out, [2, 0], product[None, :])


def test_int_start_inf_start_vector_start_and_nested_loops():
    x = np.concatenate([np.full(128, 2.0), np.full(128, -3.0)]).astype(np.float32)
    x[5] = 9.0
    compiled, interpreted = run_both(carried_numbers, [x], [np.zeros((3, 128), np.float32)])
    np.testing.assert_array_equal(compiled, interpreted)
    assert (compiled[0] == x.sum()).all() and (compiled[1] == 9.0).all()
    np.testing.assert_array_equal(compiled[2], x[:128] * x[128:])


@tl.kernel(warps=4)
def branch_number(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1], n: tl.i32):
    acc = 0.5
    if n > 0:
        acc = tl.sum(tl.load(x, [0], [128]))
    tl.store(out, [0], tl.broadcast(acc, [1]))


@pytest.mark.parametrize(("n", "want"), [(1, 128 * 127 / 2), (0, 0.5)])
def test_a_number_on_one_path_of_a_branch_and_a_tile_on_the_other(n, want):
    x = np.arange(128, dtype=np.float32)
    compiled, interpreted = run_both(branch_number, [x], [np.zeros(1, np.float32)], n=n)
    assert compiled[0] == interpreted[0] == want


def test_a_number_the_tile_cannot_hold_exactly_is_an_error_with_advice_that_works():
    @tl.kernel(warps=4)
    def k(x: tl.Tensor[tl.f16, "N"], out: tl.Tensor[tl.f16, 1]):
        acc = 0.1
        for i in tl.range(0, N, 128):  # <- error
            acc = acc + tl.sum(tl.load(x, [i], [128]))
        tl.store(out, [0], tl.broadcast(acc, [1]))

    error = assert_reported(
        k, "`acc` changes type in the loop", "0.1 is not exactly a f16", "tl.zeros([], tl.f16)"
    )
    assert ".to()" not in str(error)

    @tl.kernel(warps=4)
    def advised(x: tl.Tensor[tl.f16, "N"], out: tl.Tensor[tl.f16, 1]):
        acc = tl.zeros([], tl.f16)
        for i in tl.range(0, N, 128):
            acc = acc + tl.sum(tl.load(x, [i], [128]))
        tl.store(out, [0], tl.broadcast(acc, [1]))

    x = np.ones(256, np.float16)
    assert advised(x, np.zeros(1, np.float16))[0] == 256


def test_a_runtime_scalar_that_becomes_a_tile_is_advised_tl_full():
    @tl.kernel(warps=4)
    def k(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1]):
        acc = tl.load(x, [0])
        for i in tl.range(0, N, 128):  # <- error
            acc = acc + tl.sum(tl.load(x, [i], [128]))
        tl.store(out, [0], tl.broadcast(acc, [1]))

    error = assert_reported(k, "it is f32 before but tile<f32, []>", "tl.full([], x, tl.f32)")
    assert ".to()" not in str(error)

    @tl.kernel(warps=4)
    def advised(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 1]):
        acc = tl.full([], tl.load(x, [0]), tl.f32)
        for i in tl.range(0, N, 128):
            acc = acc + tl.sum(tl.load(x, [i], [128]))
        tl.store(out, [0], tl.broadcast(acc, [1]))

    x = np.arange(256, dtype=np.float32) + 1
    assert advised(x, np.zeros(1, np.float32))[0] == 1 + x.sum()


# ---------------------------------------------------------------- Triton's names


def test_program_id_suggests_tl_blocks():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        pid = tl.program_id(0)  # <- error
        tl.store(x, [pid * 16], tl.zeros([16], tl.f32))

    assert_reported(
        k, "unknown operation `tilelang.program_id`", "Triton's `tl.program_id`", "tl.blocks("
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("num_programs", "tl.num_blocks(axis)"),
        ("zeros_like", "tl.zeros(x.shape, x.dtype)"),
        ("static_range", "Python's `range(...)`"),
        ("multiple_of", "a launch specializes"),
        ("max_contiguous", "a launch specializes"),
        ("debug_barrier", "tl.sync()"),
        ("float8e4nv", "tl.f8e4m3"),
    ],
)
def test_triton_names_say_the_tilelang_spelling(name, hint):
    message = missing_attribute(tl, name)
    assert message.startswith(f"unknown operation `tilelang.{name}`; for Triton's `tl.{name}`")
    assert hint in message


def test_the_table_holds_only_missing_names_and_suggests_only_existing_ones():
    for name, hint in TRITON_NAMES.items():
        assert not hasattr(tl, name), f"tl.{name} exists: the table must not shadow it"
        for suggested in set(re.findall(r"\btl\.(\w+)", hint)) - set(TRITON_NAMES):
            assert hasattr(tl, suggested), f"the hint for {name} names tl.{suggested}"


def test_the_zeros_like_advice_works():
    @tl.kernel(warps=4)
    def k(x: tl.Tensor[tl.f16, "N"], y: tl.Tensor[tl.f16, "N"]):
        t = tl.load(x, [0], [128])
        tl.store(y, [0], tl.zeros(t.shape, t.dtype))

    y = k(np.ones(128, np.float16), np.ones(128, np.float16))
    assert y.dtype == np.float16 and (y == 0).all()


def test_a_close_misspelling_still_gets_close_names():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        tl.stor(x, [0], tl.zeros([16], tl.f32))  # <- error

    assert_reported(k, "unknown operation `tilelang.stor`", "did you mean tilelang.store")


# ------------------------------------------------------------- pointer arithmetic


def test_pointer_arithmetic_on_a_tensor_says_how_tensors_are_addressed():
    @tl.kernel(warps=4)
    def k(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"]):
        offs = tl.arange(0, 128)
        tl.store(y + offs, tl.load(x, [0], [128]))  # <- error

    error = assert_reported(
        k,
        "`y` is a tensor in global memory, not a pointer",
        "no pointer arithmetic",
        "tl.load(y, [offsets...], shape)",
        "tl.store(y, [offsets...], tile)",
    )
    assert "TypeError" not in str(error)


def test_a_pointer_offset_on_the_right_and_in_place_names_the_tensor():
    @tl.kernel(warps=4)
    def k(x_ptr: tl.Tensor[tl.f32, "N"], BLOCK: tl.constexpr = 128):
        pid = tl.blocks(tl.cdiv(N, BLOCK))
        x_ptr += pid * BLOCK  # <- error

    assert_reported(k, "`x_ptr` is a tensor in global memory", "tl.load(x_ptr, [offsets...]")

    @tl.kernel(warps=4)
    def right(x_ptr: tl.Tensor[tl.f32, "N"]):
        pid = tl.blocks(tl.cdiv(N, 128))
        tl.load(pid * 128 + x_ptr)  # <- error

    assert_reported(right, "`x_ptr` is a tensor in global memory")


# ------------------------------------------------- a matmul loop without stages=


@tl.kernel(warps=4)
def matmul(
    a: tl.Tensor[tl.f16, "M", "K"],
    b: tl.Tensor[tl.f16, "K", "N"],
    c: tl.Tensor[tl.f16, "M", "N"],
    BM: tl.constexpr = 128,
    BN: tl.constexpr = 128,
    BK: tl.constexpr = 64,
    S: tl.constexpr = None,
):
    bm, bn = tl.blocks(tl.cdiv(M, BM), tl.cdiv(N, BN))
    acc = tl.zeros([BM, BN], tl.f32)
    for k in tl.range(0, K, BK, stages=S):
        acc = tl.dot(tl.load(a, [bm * BM, k], [BM, BK]), tl.load(b, [k, bn * BN], [BK, BN]), acc)
    tl.store(c, [bm * BM, bn * BN], acc.to(tl.f16))


def test_an_unpipelined_matmul_over_the_budget_is_told_to_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    with pytest.raises(tl.RegisterBudgetError) as info:
        matmul.compile(target="sm_90a")
    message = str(info.value)
    assert re.search(r"%a\S* and %b\S* are operands of a dot that several warps hold", message)
    assert "its loop is not pipelined: pipeline it (`tl.range(..., stages=2)`)" in message
    # the other route, tested in test_shared_dot_operands.py: a hand-staged matmul fits
    assert "or stage them in a `tl.shared` tile by hand" in message
    assert "; or use smaller tiles (this build's BM=128, BN=128, BK=64)" in message
    compiled = matmul.compile(target="sm_90a", S=2)  # the advice works
    assert compiled.resources.spills == 0


def test_a_pipelined_matmul_over_the_budget_is_not_told_to_pipeline():
    with pytest.raises(tl.RegisterBudgetError) as info:
        matmul.stages(S=2, BM=256, BN=256)
    message = str(info.value)
    assert "replicated" in message and "stages=2" not in message
    assert "Use smaller tiles (this build's BM=256, BN=256, BK=64, S=2)" in message


# ----------------------------------------------------------- integer // and %


@tl.kernel(warps=4)
def divisions(x: tl.Tensor[tl.i32, 128], out: tl.Tensor[tl.i32, 10, 128], s: tl.i32, d: tl.i32):
    t = tl.load(x, [0], [128])
    values = [t // 2, t % 2, t // 3, t % 3, t // -4, t % -4, t // d, t % d]
    for row in range(8):
        tl.store(out, [row, 0], values[row][None, :])
    tl.store(out, [8, 0], tl.full([1, 128], s // 2, tl.i32))  # a runtime scalar
    tl.store(out, [9, 0], tl.full([1, 128], s % 2 * 1000 + (-7 // 2) * 10 + (-7 % 2), tl.i32))


def c_quotient(a: int, b: int) -> int:
    """C's integer division: the quotient of the magnitudes, with the sign of a·b."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def expected_divisions(x: np.ndarray, s: int, d: int) -> np.ndarray:
    rows = []
    for b in (2, 3, -4, d):
        quotients = [c_quotient(int(a), b) for a in x]
        rows += [quotients, [int(a) - q * b for a, q in zip(x, quotients, strict=True)]]
    rows.append([c_quotient(s, 2)] * 128)
    rows.append([(s - c_quotient(s, 2) * 2) * 1000 - 4 * 10 + 1] * 128)  # Python's -7 // 2
    return np.array(rows, np.int32)


def test_integer_division_truncates_toward_zero_and_python_ints_floor():
    x = np.arange(-64, 64, dtype=np.int32)
    compiled, interpreted = run_both(divisions, [x], [np.zeros((10, 128), np.int32)], s=-7, d=3)
    want = expected_divisions(x, -7, 3)
    np.testing.assert_array_equal(interpreted, want)
    np.testing.assert_array_equal(compiled, want)
    assert want[8, 0] == -3 and want[9, 0] == -1000 - 40 + 1


@pytest.mark.gpu
@pytest.mark.skipif(not gpu.gpu_available(), reason="needs a CUDA device")
def test_integer_division_on_the_gpu_truncates_toward_zero():
    x = np.arange(-64, 64, dtype=np.int32)
    out = gpu.DeviceBuffer(np.zeros((10, 128), np.int32))
    divisions(gpu.DeviceBuffer(x), out, -7, 3)
    np.testing.assert_array_equal(out.numpy(), expected_divisions(x, -7, 3))
