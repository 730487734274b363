"""Kernels called directly on torch CPU tensors: each imported through DLPack 1.0
(`tilelang.runtime.dlpack`) as a zero-copy view of its codes, with torch's dtype
(bf16 and f8 included) and strides."""

import numpy as np
import pytest
import torch

import tilelang as tl


@tl.kernel(warps=1)
def double(x: tl.Tensor["T", "N"], y: tl.Tensor[tl.f32, "N"], T: tl.constexpr = tl.f32):
    v = tl.load(x, [0], [64])
    tl.store(y, [0], v.to(tl.f32) * 2.0)


@pytest.mark.parametrize(
    ("dtype", "tl_dtype"),
    [
        (torch.float32, tl.f32),
        (torch.float16, tl.f16),
        (torch.bfloat16, tl.bf16),
        (torch.float8_e4m3fn, tl.f8e4m3),
        (torch.float8_e5m2, tl.f8e5m2),
    ],
    ids=str,
)
def test_torch_tensors_arrive_with_their_dtype_and_results_land_in_place(dtype, tl_dtype):
    x = torch.linspace(-3, 3, 64).to(dtype)
    y = torch.zeros(64)
    assert double(x, y, T=tl_dtype) is y  # the caller's tensor comes back, written
    expected = x.to(torch.float64).numpy() * 2
    np.testing.assert_array_equal(y.numpy(), expected.astype(np.float32))


def test_a_strided_torch_view_is_read_by_its_strides():
    base = torch.arange(128, dtype=torch.float32)
    y = torch.zeros(64)
    double(base[::2], y)
    np.testing.assert_array_equal(y.numpy(), np.arange(0, 128, 2, dtype=np.float32) * 2)


def test_a_strided_torch_output_is_written_back_through_its_strides():
    x = torch.arange(64, dtype=torch.float32)
    out = torch.zeros(128)
    double(x, out[1::2])
    assert torch.equal(out[1::2], x * 2) and not out[0::2].any()


def test_a_torch_dtype_other_than_the_kernels_is_refused_by_name():
    with pytest.raises(
        TypeError, match="parameter 'x' expects a tensor of f32, got a Tensor of bf16"
    ):
        double(torch.zeros(64, dtype=torch.bfloat16), torch.zeros(64))


def test_the_view_shares_the_tensors_memory():
    from tilelang.runtime import dlpack

    x = torch.randn(4, 16).to(torch.bfloat16).t()
    view = dlpack.imported(x)
    assert view.dtype == tl.bf16 and view.codes.dtype == np.uint16
    assert view.codes.ctypes.data == x.data_ptr()
    assert view.codes.strides == tuple(2 * s for s in x.stride())
    np.testing.assert_array_equal(view.codes, x.view(torch.int16).numpy().view(np.uint16))
