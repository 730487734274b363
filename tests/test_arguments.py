"""A call's arguments are checked before anything runs; mistakes name the parameter."""

import numpy as np
import pytest

import tilelang as tl


@tl.kernel
def scale_rows(
    x: tl.Tensor[tl.f16, "M", "K"],
    s: tl.Tensor[tl.f16, "M", "K // G"],
    y: tl.Tensor[tl.f16, "M", "K"],
    bias: tl.f32,
    count: tl.i8,
    G: tl.constexpr = 4,
):
    b = tl.blocks(M)
    t = tl.load(x, [b, 0], [1, 16])
    tl.store(y, [b, 0], t + bias)


def good():
    return np.ones((3, 16), np.float16), np.ones((3, 4), np.float16), np.zeros((3, 16), np.float16)


def test_good_arguments_run():
    x, s, y = good()
    out = scale_rows(x, s, y, 1.5, 3)
    assert out is y and np.all(y == 2.5)


def test_wrong_numpy_dtype_names_parameter_expected_and_given():
    x, s, y = good()
    with pytest.raises(
        TypeError,
        match=r"scale_rows\(\): parameter 'x' expects a tensor of f16, got a numpy float32",
    ):
        scale_rows(x.astype(np.float32), s, y, 1.0, 1)


def test_wrong_rank():
    x, s, y = good()
    with pytest.raises(
        ValueError, match=r"parameter 'y' expects 2 dimensions \[M, K\], got shape \[48\]"
    ):
        scale_rows(x, s, y.reshape(-1), 1.0, 1)


def test_inconsistent_size_symbols():
    x, s, _ = good()
    with pytest.raises(
        ValueError,
        match=r"parameter 'y': dimension 1 should be K = 16 with K = 16 \(from x.shape\[1\]\), got 8",
    ):
        scale_rows(x, s, np.zeros((3, 8), np.float16), 1.0, 1)


def test_size_expression_checked():
    x, _, y = good()
    with pytest.raises(ValueError, match=r"parameter 's': dimension 1 should be K // 4 = 4"):
        scale_rows(x, np.ones((3, 5), np.float16), y, 1.0, 1)


def test_scalar_range_and_kind():
    x, s, y = good()
    with pytest.raises(
        ValueError, match=r"parameter 'count' expects a i8 in \[-128, 127\], got 300"
    ):
        scale_rows(x, s, y, 1.0, 300)
    with pytest.raises(
        TypeError, match=r"parameter 'count' expects an integer \(i8\), got the float 1.5"
    ):
        scale_rows(x, s, y, 1.0, 1.5)
    with pytest.raises(TypeError, match=r"parameter 'bias' expects a f32 scalar, got str"):
        scale_rows(x, s, y, "1", 1)


def test_read_only_output_rejected():
    x, s, y = good()
    y.flags.writeable = False
    with pytest.raises(
        ValueError, match="parameter 'y' is written by the kernel, but the array given is read-only"
    ):
        scale_rows(x, s, y, 1.0, 1)


def test_missing_and_extra_arguments():
    x, s, y = good()
    with pytest.raises(TypeError, match="missing arguments: count"):
        scale_rows(x, s, y, 1.0)
    with pytest.raises(TypeError, match="takes 5 tensor and scalar arguments, got 6"):
        scale_rows(x, s, y, 1.0, 1, 2)


def test_nothing_runs_when_a_late_argument_is_bad():
    x, s, y = good()
    with pytest.raises(TypeError):
        scale_rows(x, s, y, 1.0, "bad")
    assert np.all(y == 0)


@tl.kernel
def copy_packed(src: tl.Tensor[tl.u3, "N"], dst: tl.Tensor[tl.u3, "N"]):
    b = tl.blocks(tl.cdiv(N, 16))
    tl.store(dst, [b * 16], tl.load(src, [b * 16], [16]))


def test_packed_arguments_checked_and_round_trip():
    values = np.arange(37) % 8
    src = tl.pack(values, tl.u3)
    dst = tl.pack(np.zeros(37, np.int64), tl.u3)
    out = copy_packed(src, dst)
    assert out is dst and np.array_equal(dst.unpack(), values)
    with pytest.raises(
        TypeError, match="parameter 'dst' expects a tensor of u3, got a PackedArray of u4"
    ):
        copy_packed(src, tl.pack(np.zeros(37, np.int64), tl.u4))
    with pytest.raises(
        TypeError,
        match=r"expects a tensor of u3, got a numpy int64 array; pass tilelang.pack\(values, tilelang.u3\)",
    ):
        copy_packed(values, dst)
