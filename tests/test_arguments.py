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
        match=r"parameter 'y': dimension 1 should be K = 16 \(from x.shape\[1\]\), got 8",
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


@tl.kernel(warps=1)
def affine(x: tl.Tensor[tl.f32, "N"], scale: tl.f32 = 2.0, shift: tl.i32 = -1):
    tl.store(x, [0], tl.load(x, [0], [8]) * scale + shift)


def test_a_scalar_left_out_takes_its_default():
    ones = np.ones(8, np.float32)
    np.testing.assert_array_equal(affine(ones.copy()), np.full(8, 1.0))
    np.testing.assert_array_equal(affine(ones.copy(), shift=3), np.full(8, 5.0))
    np.testing.assert_array_equal(affine.interpret(ones.copy(), 0.5), np.full(8, -0.5))


def test_a_tensor_parameter_cannot_have_a_default():
    def given(x: tl.Tensor[tl.f32, "N"] = None):
        pass

    with pytest.raises(tl.TileLangError, match="tensor parameter x cannot have a default"):
        tl.kernel(given)


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


# --------------------------------------------------------------------------- assume= and target=


@pytest.mark.parametrize(
    ("assume", "error", "message"),
    [
        ("none", ValueError, r"assume: expected 'all', None or a dict .*got the string 'none'"),
        (128, TypeError, r"assume: expected 'all', None or a dict .*got int 128"),
        ([("M", 16)], TypeError, r"assume: expected .*got list"),
        ({"Q": 16}, ValueError, r"assume: 'Q' is not a size of scale_rows\(\) \(its sizes: M, K\)"),
        ({"M": 24}, ValueError, r"assume: M should map to a power of two from 1 to 65536, got 24"),
        ({"M": 0}, ValueError, r"assume: M should map to a power of two .*got 0"),
        ({"M": 1 << 17}, ValueError, r"assume: M should map to a power of two .*got 131072"),
        ({"M": 16.0}, TypeError, r"assume: M should map to a power-of-two int, got float 16.0"),
        ({"M": True}, TypeError, r"assume: M should map to a power-of-two int, got bool True"),
    ],
)
def test_a_bad_assume_names_the_parameter_what_was_expected_and_given(assume, error, message):
    with pytest.raises(error, match=message):
        scale_rows.compile(assume=assume)


def test_good_assume_forms_give_the_facts_stated():
    assert scale_rows.compile(assume=None).stages["frontend"].assume == ()
    facts = scale_rows.compile(assume={"K": np.int64(16)}).stages["frontend"].assume
    assert facts == (("K", 16),)
    assert scale_rows.compile(assume="all").stages["frontend"].assume == (("K", 128), ("M", 128))


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (None, TypeError, r"target: expected a target name .*got None"),
        (90, TypeError, r"target: expected a target name .*got 90"),
        ("gpu", ValueError, r"target: unknown target 'gpu'; supported: sm_80"),
        ("sm_75", ValueError, r"target: unknown target 'sm_75'; sm_75 predates sm_80"),
    ],
)
def test_a_bad_target_names_the_parameter_what_was_expected_and_given(target, error, message):
    with pytest.raises(error, match=message):
        scale_rows.compile(target=target)


# --------------------------------------------------------------------------- numpy constexprs


@tl.kernel
def add_or_copy(
    x: tl.Tensor[tl.f32, "N"],
    y: tl.Tensor[tl.f32, "N"],
    BLOCK: tl.constexpr = 64,
    ADD: tl.constexpr = False,
):
    b = tl.blocks(tl.cdiv(N, BLOCK))
    t = tl.load(x, [b * BLOCK], [BLOCK])
    if ADD:
        t = t + 1.0
    tl.store(y, [b * BLOCK], t)


@pytest.mark.parametrize("block", [np.int64(32), np.int32(32), np.uint16(32)])
def test_numpy_integer_constexprs_are_the_python_ints(block):
    x = np.arange(100, dtype=np.float32)
    assert np.array_equal(add_or_copy(x, np.zeros_like(x), BLOCK=block, ADD=True), x + 1)
    assert np.array_equal(add_or_copy.interpret(x, np.zeros_like(x), BLOCK=block), x)
    fresh = tl.kernel(add_or_copy.fn)  # specialized on the numpy value first
    constant = dict(fresh.specialize(BLOCK=block).constexprs)["BLOCK"]
    assert type(constant) is int and constant == 32
    assert fresh.compile(BLOCK=block) is fresh.compile(BLOCK=32)


def test_a_numpy_bool_constexpr_is_the_python_bool():
    x = np.arange(10, dtype=np.float32)
    assert np.array_equal(add_or_copy(x, np.zeros_like(x), ADD=np.bool_(True)), x + 1)
    assert np.array_equal(add_or_copy(x, np.zeros_like(x), ADD=np.bool_(False)), x)
    fresh = tl.kernel(add_or_copy.fn)  # specialized on the numpy value first
    constants = dict(fresh.specialize(ADD=np.bool_(True)).constexprs)
    assert constants["ADD"] is True
    assert fresh.specialize(ADD=True) is fresh.specialize(ADD=np.bool_(True))


def test_numpy_constexprs_share_the_disk_cache_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    first = tl.kernel(add_or_copy.fn).compile(target="sm_80", BLOCK=64)
    again = tl.kernel(add_or_copy.fn).compile(target="sm_80", BLOCK=np.int64(64))
    assert not first.cuda.cached and again.cuda.cached


# --------------------------------------------------------------------------- overlap


def overlap_cases():
    """(inputs, output) pairs where the output overlaps an input."""
    x = np.arange(64, dtype=np.float32)
    return {
        "same array": (x, x),
        "a view of it": (x, x[:]),
        "shifted views": (x[:48], x[16:]),
    }


@pytest.mark.parametrize("case", list(overlap_cases()))
@pytest.mark.parametrize("path", ["compiled", "interpreted"])
def test_an_output_overlapping_an_input_is_an_error_before_anything_runs(case, path):
    x, y = overlap_cases()[case]
    before = y.copy()
    run = add_or_copy if path == "compiled" else add_or_copy.interpret
    how = "are the same array" if x is y else "overlap in memory"
    with pytest.raises(
        ValueError,
        match=rf"add_or_copy\(\): parameters 'x' and 'y' {how}, and the kernel stores to 'y'",
    ):
        run(x, y, ADD=True)
    assert np.array_equal(y, before)


@pytest.mark.parametrize("path", ["compiled", "interpreted"])
def test_interleaved_views_do_not_overlap(path):
    data = np.arange(64, dtype=np.float32)
    x, y = data[0::2], data[1::2]  # their bounds overlap, their elements do not
    run = add_or_copy if path == "compiled" else add_or_copy.interpret
    run(x, y, ADD=True)
    assert np.array_equal(data[1::2], np.arange(0, 64, 2, dtype=np.float32) + 1)


def test_packed_arrays_that_share_bytes_overlap():
    src = tl.pack(np.arange(37) % 8, tl.u3)
    with pytest.raises(ValueError, match="parameters 'src' and 'dst' are the same array"):
        copy_packed(src, src)
    view = tl.PackedArray(src.data, tl.u3, src.shape)  # another object, the same bytes
    with pytest.raises(ValueError, match="parameters 'src' and 'dst' overlap in memory"):
        copy_packed.interpret(src, view)


def test_two_inputs_may_share_memory():
    x, _, y = good()
    scale_rows(x, x[:, :4], y, 1.0, 1)  # neither is stored to: sharing is harmless
    assert np.all(y == 2.0)


@tl.kernel
def first_of(x: tl.Tensor[tl.f32, "N"], out: tl.Tensor[tl.f32, 16]):
    tl.store(out, [0], tl.load(x, [0], [16]))


def test_a_dimension_past_i32_names_its_tensor_and_the_two_dim_way_out():
    # a zero-stride view: 2^31 + 64 elements, four bytes of memory
    x = np.broadcast_to(np.float32(1.0), (2**31 + 64,))
    with pytest.raises(ValueError) as error:
        first_of(x, np.zeros(16, np.float32))
    message = str(error.value)
    assert "size N = 2147483712 (from x.shape[0]) does not fit in i32" in message
    assert "[N // 1024, 1024]" in message


def test_a_dimension_named_by_one_size_says_its_value_and_origin_once():
    with pytest.raises(ValueError) as error:
        add_or_copy(np.zeros(8, np.float32), np.zeros(1, np.float32))
    assert "dimension 0 should be N = 8 (from x.shape[0]), got 1" in str(error.value)
