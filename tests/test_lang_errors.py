"""Every kind of kernel mistake is reported at the user's line, with what was expected."""

import numpy as np
import pytest
from conftest import assert_reported, compile_error, marked_line

import tilelang as tl
from tilelang import TileLangError


def test_unknown_operation_suggests_close_names():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.laod(x, [0], [16])  # <- error
        tl.store(x, [0], t)

    assert_reported(k, "unknown operation `tilelang.laod`", "tilelang.load")


def test_shape_mismatch():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"]):
        a = tl.load(x, [0], [16])
        b = tl.load(y, [0], [32])
        tl.store(x, [0], a + b)  # <- error

    assert_reported(k, "shapes [16] and [32] do not broadcast")


def test_dot_inner_size_mismatch():
    @tl.kernel
    def k(x: tl.Tensor[tl.f16, "M", "K"]):
        a = tl.load(x, [0, 0], [16, 32])
        acc = tl.dot(a, a)  # <- error
        tl.store(x, [0, 0], acc.to(tl.f16))

    assert_reported(k, "tl.dot: the inner sizes differ", "[16, 32]")


def test_dtype_mismatch():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f16, "N"]):
        a = tl.load(x, [0], [16])
        b = tl.load(y, [0], [16])
        tl.store(x, [0], a * b)  # <- error

    assert_reported(k, "mixes dtypes f16 and f32", ".to(dtype)")


def test_store_dtype_mismatch_says_how_to_convert():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f16, "N"]):
        tl.store(y, [0], tl.load(x, [0], [16]))  # <- error

    assert_reported(k, "storing a f32 tile into y, a tensor of f16", ".to(tl.f16)")


def test_non_uniform_if_on_tile():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        a = tl.load(x, [0], [16])
        if a > 0:  # <- error
            a = a + 1
        tl.store(x, [0], a)

    assert_reported(k, "non-uniform control flow", "tl.where")


def test_while_on_a_runtime_condition_points_to_tl_range():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        i = 0
        while i < N:  # <- error
            i += 1

    assert_reported(k, "`while` condition must be known while compiling", "tl.range")


def test_break_under_a_runtime_branch_is_refused_at_its_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        for i in range(4):
            if i < N:
                break  # <- error
        tl.store(x, [0], tl.zeros([4], tl.f32))

    assert_reported(k, "`break` under a runtime loop or branch", "every thread")


def test_continue_in_a_runtime_loop_is_refused_at_its_line():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        for _ in range(2):
            for _j in tl.range(0, N, 4):
                continue  # <- error

    assert_reported(k, "`continue` under a runtime loop or branch")


def test_endless_compile_time_while_is_reported_not_hung():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        i = 0
        while i >= 0:  # <- error
            i += 1

    assert_reported(k, "still true after 100000 unrolled iterations")


def test_unsupported_syntax_lambda():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        f = lambda v: v  # <- error  # noqa: E731
        tl.store(x, [0], f(tl.load(x, [0], [4])))

    assert_reported(k, "`Lambda` expressions are not supported")


def test_runtime_value_where_compile_time_needed():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [N])  # <- error
        tl.store(x, [0], t)

    assert_reported(k, "must be known at compile time", "runtime value")


def test_python_range_over_runtime_value():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        for i in range(N):  # <- error
            tl.store(x, [i], tl.load(x, [i], [1]))

    assert_reported(k, "use tl.range")


def test_name_defined_only_inside_runtime_loop():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        for i in tl.range(0, N, 16):
            t = tl.load(x, [i], [16])
        tl.store(x, [0], t)  # <- error

    assert_reported(k, "`t` is assigned only inside a tl.range loop")


def test_loop_carried_value_changes_type():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        acc = tl.zeros([16], tl.f32)
        for _ in tl.range(0, N, 16):  # <- error
            acc = acc.to(tl.f16)
        tl.store(x, [0], acc.to(tl.f32))

    assert_reported(k, "`acc` changes type in the loop", "tile<f32, [16]>", "tile<f16, [16]>")


def test_integer_true_division_is_rejected():
    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"]):
        t = tl.load(x, [0], [16])
        tl.store(x, [0], t / 2)  # <- error

    assert_reported(k, "use `//` for integer division")


def test_error_inside_helper_points_at_helper_line():
    @tl.func
    def helper(t):
        return tl.exp(t)  # <- error

    @tl.kernel
    def k(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], helper(tl.load(x, [0], [16])))

    error = compile_error(k)
    assert error.loc.line == marked_line(helper)
    assert "needs float operands" in str(error)


def test_message_shows_source_line_and_caret():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f16, "N"]):
        tl.store(x, [0], tl.load(x, [0], [8]) + tl.load(y, [0], [8]))  # <- error

    text = str(compile_error(k))
    source_line, caret_line = text.splitlines()[1:3]
    assert "tl.load(x, [0], [8]) + tl.load(y, [0], [8])" in source_line
    start = source_line.index("tl.load(x, [0], [8]) +")
    assert caret_line.index("^") == start
    assert caret_line.count("^") == len("tl.load(x, [0], [8]) + tl.load(y, [0], [8])")


def test_missing_annotation_is_reported_at_decoration():
    with pytest.raises(TileLangError, match=r"parameter y needs an annotation"):

        @tl.kernel
        def k(x: tl.Tensor[tl.f32, "N"], y):
            pass


def test_unknown_constexpr_and_missing_required_constexpr():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], B: tl.constexpr):
        tl.store(x, [0], tl.load(x, [0], [B]))

    with pytest.raises(TypeError, match="constexpr parameter B needs a value"):
        k.specialize()
    with pytest.raises(TypeError, match=r"C is not a tl\.constexpr parameter"):
        k(np.zeros(4, np.float32), B=4, C=1)


def test_compile_time_assert_reports_its_message():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], B: tl.constexpr = 3):
        assert B % 2 == 0, "B must be even"  # <- error
        tl.store(x, [0], tl.load(x, [0], [B]))

    assert_reported(k, "compile-time assertion failed: B must be even")


def test_power_of_a_tile_says_there_is_no_power_operator_and_to_multiply():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [16])
        tl.store(x, [0], t**2)  # <- error

    assert_reported(k, "there is no power operator", "write `t * t` instead")


def test_power_of_a_runtime_scalar_says_to_multiply():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], s: tl.f32):
        tl.store(x, [0], tl.full([16], s**2, tl.f32))  # <- error

    assert_reported(k, "there is no power operator", "write `s * s` instead")


def test_power_spells_the_product_with_the_users_operand():
    @tl.kernel
    def cube(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [16])
        t **= 3  # <- error
        tl.store(x, [0], t)

    @tl.kernel
    def general(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [16])
        tl.store(x, [0], (t + 1) ** 0.5)  # <- error

    assert_reported(cube, "write `t * t * t` instead")
    assert_reported(general, "`(t + 1) * (t + 1)` for a square", "tl.exp2(y * tl.log2(x))")


def test_runtime_exponent_of_a_number_points_to_exp2():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"], s: tl.f32):
        tl.store(x, [0], tl.full([16], 2**s, tl.f32))  # <- error

    assert_reported(k, "there is no power operator", "tl.exp2(y * tl.log2(x))")


def test_power_through_a_python_callable_is_reported_too():
    import operator

    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [16])
        tl.store(x, [0], operator.pow(t, 2))  # <- error

    assert_reported(k, "there is no power operator", "`t * t`")


def test_bad_size_expression_names_the_kernel_the_parameter_and_the_expression():
    with pytest.raises(TileLangError) as info:

        @tl.kernel
        def matvec(w: tl.Tensor[tl.f16, "K //", "N"], x: tl.Tensor[tl.f16, "K"]):  # noqa: F722
            pass

    text = str(info.value)
    assert "matvec" in text and "parameter w" in text and "'K //'" in text, text


def test_bad_size_expression_in_a_string_annotation_is_reported_at_decoration():
    # A string annotation (or `from __future__ import annotations`) is evaluated by the
    # decorator, not by the `def` statement: the same report either way.
    with pytest.raises(TileLangError) as info:

        @tl.kernel
        def scale(x: tl.Tensor[tl.f32, "N"], y: "tl.Tensor[tl.f32, 'N / 2']"):
            pass

    text = str(info.value)
    assert "scale" in text and "parameter y" in text and "'N / 2'" in text, text


@pytest.mark.parametrize("name", ["u7", "i3", "f5e2m2", "f3e1m1", "f8e4m3", "bf16"])
def test_every_valid_type_name_is_an_attribute(name):
    assert getattr(tl, name) == tl.dtype(name)
    assert getattr(tl, name).bits == tl.dtype(name).bits


def test_an_invalid_type_name_is_no_attribute_and_says_why():
    with pytest.raises(AttributeError, match=r"no attribute 'u65': .*bit width must be"):
        _ = tl.u65
    with pytest.raises(AttributeError, match=r"no attribute 'f9e9m9': .*1\+E\+M = 19"):
        _ = tl.f9e9m9
    assert not hasattr(tl, "nonsense")


def test_chained_comparison_of_tiles_says_to_use_and():
    @tl.kernel
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [8])
        tl.store(x, [0], tl.where(0 < t < 1, t, 0.0))  # <- error

    assert_reported(k, "chained comparisons of tiles are not supported; use &")


def test_a_float_scalar_meeting_an_integer_tile_is_refused_not_truncated():
    @tl.kernel(warps=1)
    def positions(y: tl.Tensor[tl.f32, "N"], scale: tl.f32):
        tl.store(y, [0], (tl.arange(0, 8) * scale).to(tl.f32))  # <- error

    assert_reported(positions, "a runtime f32 scalar meets a tile of i32", ".to()")


def test_an_integer_scalar_meeting_a_narrower_integer_tile_is_refused_not_saturated():
    @tl.kernel(warps=1)
    def shifted(x: tl.Tensor[tl.u8, "N"], n: tl.i32):
        tl.store(x, [0], tl.load(x, [0], [8]) + n)  # <- error

    assert_reported(shifted, "a runtime i32 scalar meets a tile of u8")


def test_an_integer_scalar_meeting_a_float_tile_takes_its_dtype():
    @tl.kernel(warps=1)
    def scaled(y: tl.Tensor[tl.f32, "N"], n: tl.i32):
        tl.store(y, [0], tl.load(y, [0], [8]) * n)

    got = scaled(np.arange(8, dtype=np.float32), 3)
    np.testing.assert_array_equal(got, 3 * np.arange(8, dtype=np.float32))


LOOKUP_HINT = "tl.lookup(table, codes)"


def test_a_rank1_tile_indexed_by_a_tile_of_codes_suggests_tl_lookup():
    @tl.kernel(warps=1)
    def k(lut: tl.Tensor[tl.f16, 16], q: tl.Tensor[tl.u8, 64], out: tl.Tensor[tl.f16, 64]):
        table = tl.load(lut, [0], [16])
        codes = tl.load(q, [0], [64])
        tl.store(out, [0], table[codes])  # <- error

    assert_reported(k, "tile indices are compile-time ints", "tl.load from memory", LOOKUP_HINT)


def test_other_runtime_tile_indices_keep_the_plain_message():
    @tl.kernel(warps=1)
    def at_scalar(lut: tl.Tensor[tl.f16, 16], n: tl.i32):
        tl.store(lut, [0], tl.load(lut, [0], [16])[n])  # <- error

    @tl.kernel(warps=1)
    def rank2_table(lut: tl.Tensor[tl.f16, 16, 4], q: tl.Tensor[tl.u8, 64]):
        codes = tl.load(q, [0], [64])
        tl.store(lut, [0, 0], tl.load(lut, [0, 0], [16, 4])[codes])  # <- error

    @tl.kernel(warps=1)
    def float_codes(lut: tl.Tensor[tl.f16, 16], q: tl.Tensor[tl.u8, 64]):
        codes = tl.load(q, [0], [64]).to(tl.f32)
        tl.store(lut, [0], tl.load(lut, [0], [16])[codes])  # <- error

    for kernel in (at_scalar, rank2_table, float_codes):
        error = assert_reported(kernel, "tile indices are compile-time ints", "tl.load from memory")
        assert "tl.lookup" not in str(error), kernel.fn.__name__


def test_tl_load_from_a_shared_table_at_a_tile_of_codes_suggests_tl_lookup():
    @tl.kernel(warps=1)
    def k(lut: tl.Tensor[tl.f16, 16], q: tl.Tensor[tl.u8, 64], out: tl.Tensor[tl.f16, 64]):
        buf = tl.shared([16], tl.f16)
        buf.store(tl.load(lut, [0], [16]))
        codes = tl.load(q, [0], [64])
        tl.store(out, [0], tl.load(buf, [codes], [64]))  # <- error

    assert_reported(
        k, "the first argument of tl.load must be a tensor parameter", "shared tile", LOOKUP_HINT
    )


def test_tl_load_from_a_shared_buffer_at_a_scalar_keeps_the_plain_message():
    @tl.kernel(warps=1)
    def k(lut: tl.Tensor[tl.f16, 16], out: tl.Tensor[tl.f16, 16], n: tl.i32):
        buf = tl.shared([16], tl.f16)
        buf.store(tl.load(lut, [0], [16]))
        tl.store(out, [0], tl.load(buf, [n], [16]))  # <- error

    error = assert_reported(k, "the first argument of tl.load must be a tensor parameter")
    assert "tl.lookup" not in str(error)
