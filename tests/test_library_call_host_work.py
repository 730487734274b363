"""The host work of a full library call on device tensors (`tilelang.kernels`, plans off:
what a key's first calls and `TILELANG_CALL_PLANS=off` pay): each tensor argument's
`__cuda_array_interface__` is read a bounded number of times, and what was made
cheaper keeps its errors.

Stand-ins: tensors over no memory whose interface counts its reads; the driver stubbed
(`cuLaunchKernel` a no-op, as benchmarks/library_calls.py does)."""

import collections
import itertools

import numpy as np
import pytest

import tilelang.kernels as K
from tilelang.kernels import common
from tilelang.runtime import call_plans, counters, gpu

_addresses = itertools.count(1 << 40, 1 << 24)
_made = itertools.count()  # each tensor the call makes is its own name: its reads apart
READS: collections.Counter = collections.Counter()


class Tensor:
    """A device tensor stand-in whose interface counts how often it is read."""

    dtype = None  # a `DeviceBuffer`'s packed dtype: none

    def __init__(self, name, shape, typestr, strides=None):
        self.name, self.shape = name, tuple(shape)
        self._interface = {
            "data": (next(_addresses), False),
            "shape": self.shape,
            "typestr": typestr,
            "strides": strides,
            "version": 3,
        }

    @property
    def __cuda_array_interface__(self):
        READS[self.name] += 1
        return self._interface


class Buffer(Tensor):
    """`tilelang.DeviceBuffer` stubbed: an address, no allocation, no copy."""

    def __init__(self, host):
        host = np.asarray(host)
        super().__init__(f"made {next(_made)}", host.shape, host.dtype.str)

    @classmethod
    def empty(cls, shape, dtype):
        return Tensor(f"made {next(_made)}", shape, np.dtype(dtype).str)


@pytest.fixture
def stubbed(monkeypatch):
    class Driver:
        class CUresult:
            CUDA_SUCCESS = 0

        def cuLaunchKernel(self, *args):
            return (0,)

    driver = Driver()
    monkeypatch.setenv("TILELANG_AUTOTUNE", "off")
    monkeypatch.setattr(gpu, "driver", lambda: driver)
    monkeypatch.setattr(gpu, "_function", lambda *args: object())
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_90a")
    monkeypatch.setattr(gpu, "current_stream", lambda tensors: 0)
    monkeypatch.setattr(gpu, "DeviceBuffer", Buffer)
    monkeypatch.setattr(counters, "_KEPT", {})
    monkeypatch.setattr(common, "_UNREAD", {})
    monkeypatch.setattr(call_plans, "ENABLED", False)


def reads_of_one_call(fn, *args, **kwargs):
    for _ in range(2):  # compiles; then the kernel's own warm path
        fn(*args, **kwargs)
    READS.clear()
    fn(*args, **kwargs)
    return dict(READS)


def test_a_full_call_reads_each_interface_at_most_three_times(stubbed):
    """Its check, the place check, and the kernel's warm key (a reshape to the shape a
    tensor has adds nothing). Before: five reads a tensor (the shape and the dtype read
    apart, the place asked twice), seven for rms_norm's x."""
    state, x = Tensor("state", (8, 64, 16), "<f4"), Tensor("x", (8, 64), "<f2")
    reads = reads_of_one_call(
        K.selective_state_update,
        state,
        x,
        Tensor("dt", (8, 64), "<f2"),
        Tensor("A", (64, 16), "<f4"),
        Tensor("B", (8, 16), "<f2"),
        C=Tensor("C", (8, 16), "<f2"),
        D=Tensor("D", (64,), "<f4"),
    )
    assert set(reads) >= {"state", "x", "dt", "A", "B", "C", "D"}
    assert max(reads.values()) <= 3, reads
    reads = reads_of_one_call(K.rms_norm, Tensor("x", (2, 256), "<f2"), Tensor("w", (256,), "<f2"))
    assert reads["x"] <= 4 and reads["w"] <= 3, reads


def test_a_tensor_reshaped_to_its_own_shape_is_itself_and_still_checked():
    x = Tensor("x", (4, 8), "<f2")
    assert gpu.reshaped(x, (4, 8), "x") is x
    assert gpu.reshaped(x, (32,), "x").__cuda_array_interface__["shape"] == (32,)
    transposed = Tensor("t", (4, 8), "<f2", strides=(2, 8))
    with pytest.raises(ValueError, match="t must be C-contiguous on the GPU"):
        gpu.reshaped(transposed, (4, 8), "t")
    with pytest.raises(TypeError, match="y must be a numpy array or a device tensor, got list"):
        gpu.reshaped([1, 2], (2,), "y")
    host = np.zeros((4, 8), np.float16)
    assert gpu.reshaped(host, (4, 8)) is host and gpu.reshaped(host, (32,)).shape == (32,)


def test_sizes_name_the_argument_they_came_from_whatever_was_checked_before():
    """A shape's sizes are made once per (shape, argument, dimension names) and reused:
    a later check's error still names the argument its expected size came from."""
    a, b = Tensor("a", (3, 5), "<f2"), Tensor("b", (3, 5), "<f2")
    common.check(a, "a", (None, None), names=("M", "K"))
    (m, k), _ = common.check(b, "b", (None, None), names=("rows", None))
    with pytest.raises(ValueError, match=r"got shape \[5, 3\] \(rows = 3 from b.shape\[0\]"):
        common.check(Tensor("c", (5, 3), "<f2"), "c", (m, None))
    (m, k), _ = common.check(a, "a", (None, None), names=("M", "K"))
    with pytest.raises(ValueError, match=r"\(K = 5 from a.shape\[1\]\)"):
        common.check(Tensor("c", (5, 3), "<f2"), "c", (None, k))


def test_a_type_string_no_kernel_takes_is_named_as_given():
    with pytest.raises(TypeError, match="x must hold one of f32, f16, bf16, got <c8"):
        common.check(Tensor("x", (2,), "<c8"), "x", (None,))
    with pytest.raises(TypeError, match="x must hold one of f32, got f16"):
        common.check(Tensor("x", (2,), "<f2"), "x", (None,), (common.dtypes.f32,))
    with pytest.raises(TypeError, match="x must hold one of f16, got float32"):
        common.check(np.zeros(2, np.float32), "x", (None,), (common.dtypes.f16,))
