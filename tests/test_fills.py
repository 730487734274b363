"""`tl.full` is the one maker of a tile of one value (`tilelang.lang.fills`): `tl.full`
itself and a scatter of a number or scalar (`memory_ops`) convert the value the same
way, with the same errors."""

import numpy as np
import pytest

import tilelang as tl
from tilelang import TileLangError


def test_one_full_serves_tl_full_and_the_scatter_of_a_number():
    from tilelang.lang import fills, memory_ops, ops

    assert ops.full is fills.full and memory_ops.full is fills.full and tl.full is fills.full


@tl.kernel(warps=1)
def scatter_number(rows: tl.Tensor[tl.i32, "V"], out: tl.Tensor[tl.u8, "R"], BV: tl.constexpr = 16):
    index = tl.load(rows, [0], [BV], fill=-1)
    tl.store(out, [index], 300)


@tl.kernel(warps=1)
def full_number(out: tl.Tensor[tl.u8, "R"], BV: tl.constexpr = 16):
    tl.store(out, [0], tl.full([BV], 300, tl.u8))


def test_a_scattered_number_is_converted_as_tl_full_converts_it():
    rows, out = np.arange(4, dtype=np.int32), np.zeros(8, np.uint8)
    with pytest.raises(TileLangError) as scattered:
        scatter_number.interpret(rows, out)
    with pytest.raises(TileLangError) as filled:
        full_number.interpret(out)
    said = [str(e.value).split(": ", 1)[1].split("\n")[0] for e in (scattered, filled)]
    assert said[0] == said[1] == "error: the constant 300 does not fit dtype u8 (0..255)"
