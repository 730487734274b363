"""What a warm call takes shortcuts for, and the laws the shortcuts keep:
`tilelang.runtime.buffers.address` (the address a launch passes is the first element's,
whichever way it is found: a ctypes view of a writeable buffer, or numpy's `.ctypes`
for read-only, empty and strided arrays); `Kernel.specialization` found by the
constexprs as given (the same specialization as the long way: numpy scalars, defaults
and unhashable values included); `Kernel.run` on a held specialization."""

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang.runtime.buffers import address

BASE = np.arange(64, dtype=np.float32)
READ_ONLY = np.arange(16, dtype=np.int8)
READ_ONLY.flags.writeable = False


@pytest.mark.parametrize(
    "array",
    [
        BASE,
        BASE[5:],  # an offset view
        BASE[::2],  # strided: not one block
        BASE[::-1],  # negative stride
        READ_ONLY,
        np.zeros(0, np.float32),
        np.zeros((3, 0), np.uint16),
        np.zeros(8, ml_dtypes.bfloat16),
        np.broadcast_to(np.float32(1), (4, 4)),  # read-only, zero strides
    ],
    ids=[
        "whole",
        "offset",
        "strided",
        "reversed",
        "read-only",
        "empty",
        "empty-2d",
        "bf16",
        "broadcast",
    ],
)
def test_the_address_is_the_first_elements(array):
    assert address(array) == array.ctypes.data


@tl.kernel(warps=1)
def fill(out: tl.Tensor[tl.f32, "N"], value: tl.f32, B: tl.constexpr = 64, S: tl.constexpr = (1,)):
    tl.store(out, [0], tl.full([B], value, tl.f32) * S[0])


def test_a_specialization_is_the_same_however_its_constexprs_are_given():
    first = fill.specialization(B=64)
    assert fill.specialization(B=np.int64(64)) is first
    assert fill.specialization() is first  # the default
    assert fill.specialization(B=64, S=[1]) is first  # a list: looked up the long way
    assert fill.specialization(B=32) is not first
    with pytest.raises(TypeError, match=r"C is not a tl\.constexpr parameter"):
        fill.specialization(C=1)


def test_run_on_a_held_specialization_equals_the_call():
    out, again = np.zeros(64, np.float32), np.zeros(64, np.float32)
    fill(out, 2.5, S=(2,))
    fill.run(fill.specialization(S=(2,)), {"out": again, "value": 2.5})
    assert np.array_equal(out, np.full(64, 5.0, np.float32)) and np.array_equal(again, out)
    with pytest.raises(TypeError, match=r"missing \['value'\], unexpected \['v'\]"):
        fill.run(fill.specialization(), {"out": again, "v": 1.0})
