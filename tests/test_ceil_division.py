"""`tl.cdiv(a, b)` is the ceiling of a / b for every non-negative a and positive b of
its type, up to the type's largest value: the quotient never passes through a sum
that could wrap. Computed in a kernel (interpreter and CPU backend) and for a grid on
the host, against Python's exact integers."""

import numpy as np
import pytest
from conftest import run_both

import tilelang as tl
from tilelang.runtime.host_expr import eval_grid

I32_MAX, U32_MAX = 2**31 - 1, 2**32 - 1


@tl.kernel(warps=1)
def ceil_div_i32(a: tl.i32, b: tl.i32, out: tl.Tensor[tl.i32, 1]):
    tl.store(out, [0], tl.full([1], tl.cdiv(a, b), tl.i32))


@tl.kernel(warps=1)
def ceil_div_u32(a: tl.u32, b: tl.u32, out: tl.Tensor[tl.u32, 1]):
    tl.store(out, [0], tl.full([1], tl.cdiv(a, b), tl.u32))


@tl.kernel(warps=1)
def one_block_per_chunk(out: tl.Tensor[tl.i32, "M"], n: tl.i32, CHUNK: tl.constexpr = 1 << 20):
    b = tl.blocks(tl.cdiv(n, CHUNK))
    tl.store(out, [b], tl.full([1], 1, tl.i32))


def pairs(largest: int) -> list[tuple[int, int]]:
    divisors = (1, 3, 128, 1 << 20, largest)
    numerators = (0, 1, 127, 128, 129, largest - (1 << 20) + 1, largest - 1, largest)
    return [(a, b) for a in numerators for b in divisors]


def exact_ceiling(a: int, b: int) -> int:
    return -(-a // b)


@pytest.mark.parametrize(
    ("kernel", "storage", "largest"),
    [(ceil_div_i32, np.int32, I32_MAX), (ceil_div_u32, np.uint32, U32_MAX)],
)
def test_cdiv_is_the_exact_ceiling_up_to_the_largest_value(kernel, storage, largest):
    for a, b in pairs(largest):
        expected = exact_ceiling(a, b)
        compiled, interpreted = run_both(kernel, [int(a), int(b)], [np.zeros(1, storage)])
        assert int(interpreted[0]) == expected, (a, b)
        assert int(compiled[0]) == expected, (a, b)


def test_a_grid_of_cdiv_covers_a_size_near_the_top_of_i32():
    grid = one_block_per_chunk.compile().thread.grid
    for n in (0, 1, 1 << 20, (1 << 20) + 1, I32_MAX - (1 << 20) + 1, I32_MAX):
        assert eval_grid(grid, {"n": n, "M": 2048})[0] == exact_ceiling(n, 1 << 20), n


def test_the_last_block_runs_when_the_size_is_near_the_top_of_i32():
    out = np.zeros(2048, np.int32)
    one_block_per_chunk(out, I32_MAX)
    assert out.sum() == 2048 and out.all()
