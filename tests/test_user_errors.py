"""Mistakes a new user of the kernel DSL made, each reported at the right line with what
to do: tl.associative_scan's argument order, where a helper was called from, constexprs
whose type the build cache used to ignore, a one-element tile where a scalar is needed,
and wordings that pointed at fixes that do not exist."""

import inspect
import linecache
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_reported, compile_error, marked_line

import tilelang as tl
from tilelang.lang import ops
from tilelang.runtime.warm_calls import WarmCalls

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "guide.md"


@tl.func
def add(a, b):
    return a + b


@tl.func
def affine(left, right):
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


# ------------------------------------------------------------ 1. associative_scan's order


def test_scan_in_tritons_order_says_the_first_argument_is_the_combine_function():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "M", "N"]):
        f = tl.load(x, [0, 0], [4, 32])
        v = tl.load(x, [0, 0], [4, 32])
        h = tl.associative_scan((f, v), 1, affine)  # <- error
        tl.store(x, [0, 0], h[1])

    error = assert_reported(
        k,
        "the first argument of tl.associative_scan is the combine function",
        "got a tuple of 2 tiles",
        "the order is tl.associative_scan(fn, values, axis=0, reverse=False)",
        "tl.associative_scan(affine, values, axis=1)",
    )
    assert "decorate" not in str(error)  # affine is decorated


def test_scan_with_a_tile_first_names_the_tile():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [32])
        tl.store(x, [0], tl.associative_scan(t, add))  # <- error

    assert_reported(k, "combine function", "got a tile (tile<f32, [32]>)", "(fn, values,")


def test_scan_with_fn_by_keyword_after_positional_values_is_explained():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "M", "N"]):
        f = tl.load(x, [0, 0], [4, 32])
        h = tl.associative_scan((f, f), fn=affine, axis=1)  # <- error
        tl.store(x, [0, 0], h[1])

    error = assert_reported(
        k,
        "tl.associative_scan got fn= by keyword and a positional argument",
        "positional arguments fill fn first",
        "tl.associative_scan(fn, values, axis=0, reverse=False)",
    )
    assert "multiple values" not in str(error)


def test_scan_with_tritons_keyword_names_the_parameters():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [32])
        tl.store(x, [0], tl.associative_scan(t, 0, combine_fn=add))  # <- error

    assert_reported(k, "combine_fn", "its parameters are fn, values, axis, reverse")


def test_scan_takes_every_argument_by_keyword():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.i32, "N"], y: tl.Tensor[tl.i32, "N"]):
        t = tl.load(x, [0], [32])
        tl.store(y, [0], tl.associative_scan(values=t, fn=add, reverse=True, axis=0))

    x = np.random.default_rng(3).integers(-50, 50, 32).astype(np.int32)
    got = k.interpret(x, np.zeros_like(x))
    np.testing.assert_array_equal(got, np.cumsum(x[::-1])[::-1])


def test_scan_order_is_shown_in_the_docstring_and_the_guide():
    doc = inspect.getdoc(tl.associative_scan)
    assert "tl.associative_scan(fn, values, axis=0, reverse=False)" in doc
    assert "tl.associative_scan(add, t, axis=1)" in doc  # an example, combine first
    assert str(inspect.signature(tl.associative_scan)) == "(fn, values, axis=0, reverse=False)"
    guide = GUIDE.read_text()
    assert "tl.associative_scan(fn, values, axis=0, reverse=False)" in guide
    assert "tl.associative_scan(sum_and_max, (a, b), axis=1)" in guide


# ------------------------------------------------------------ 2. helpers' call sites


@tl.func
def add_tiles(t, u):
    return t + u  # <- error


@tl.func
def twice_sum(t, u):
    return add_tiles(t, u) * 2  # <- inner call


def _column(fn, marker: str, text: str) -> tuple[int, int]:
    line = marked_line(fn, marker)
    source = linecache.getline(inspect.getsourcefile(fn.fn if hasattr(fn, "fn") else fn), line)
    return line, source.index(text) + 1


def test_an_error_in_a_helper_names_every_call_site_innermost_first():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        a = tl.load(x, [0], [32])
        b = tl.load(x, [0], [64])
        y = twice_sum(a, b)  # <- outer call
        tl.store(x, [0], y)

    error = compile_error(k)
    assert error.loc.line == marked_line(add_tiles)  # still at the helper's line
    lines = str(error).splitlines()
    assert "shapes [32] and [64] do not broadcast" in lines[0]
    assert "return t + u" in lines[1]
    file = inspect.getsourcefile(k.fn)
    inner_line, inner_col = _column(twice_sum, "# <- inner call", "add_tiles(t, u)")
    outer_line, outer_col = _column(k, "# <- outer call", "twice_sum(a, b)")
    called = [line.strip() for line in lines if "called from" in line]
    assert called == [
        f"called from {file}:{inner_line}:{inner_col}: return add_tiles(t, u) * 2  # <- inner call",
        f"called from {file}:{outer_line}:{outer_col}: y = twice_sum(a, b)  # <- outer call",
    ]


def test_a_helper_called_twice_names_the_call_that_failed():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        a = tl.load(x, [0], [32])
        tl.store(x, [0], add_tiles(a, a))
        tl.store(x, [0], add_tiles(a, tl.load(x, [0], [64])))  # <- bad call

    text = str(compile_error(k))
    line, col = _column(k, "# <- bad call", "add_tiles(a, tl.load")
    assert [x for x in text.splitlines() if "called from" in x] == [
        f"    called from {inspect.getsourcefile(k.fn)}:{line}:{col}: "
        "tl.store(x, [0], add_tiles(a, tl.load(x, [0], [64])))  # <- bad call"
    ]


# ------------------------------------------------------------ 3. constexprs' types


def _copy_kernel():
    @tl.kernel(warps=1)
    def copy(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], B: tl.constexpr):
        tl.store(y, [0], tl.load(x, [0], [B]))

    return copy


def test_a_float_size_fails_whether_or_not_the_int_was_built_first():
    x = np.arange(32, dtype=np.float32)
    cold = _copy_kernel()
    with pytest.raises(tl.TileLangError, match=r"must be an int, got 32\.0"):
        cold.interpret(x, np.zeros_like(x), B=32.0)
    warm = _copy_kernel()
    np.testing.assert_array_equal(warm.interpret(x, np.zeros_like(x), B=32), x)
    with pytest.raises(tl.TileLangError, match=r"must be an int, got 32\.0"):
        warm.interpret(x, np.zeros_like(x), B=32.0)
    with pytest.raises(tl.TileLangError, match=r"must be an int, got 32\.0"):
        warm.specialize(B=32.0)
    with pytest.raises(tl.TileLangError, match=r"must be an int, got 32\.0"):
        warm.specialize(B=[32.0][0])


def test_true_and_1_build_separately_in_either_order():
    def fresh():
        @tl.kernel(warps=1)
        def which(y: tl.Tensor[tl.f32, "N"], F: tl.constexpr):
            first = F[0] if isinstance(F, tuple) else F
            tl.store(y, [0], tl.full([8], 1.0 if isinstance(first, bool) else 2.0, tl.f32))

        return which

    for order in ((True, 1), (1, True), ((True,), (1,)), ((1,), (True,))):
        k = fresh()
        for flag in order:
            first = flag[0] if isinstance(flag, tuple) else flag
            want = 1.0 if isinstance(first, bool) else 2.0
            got = k.interpret(np.zeros(8, np.float32), F=flag)
            np.testing.assert_array_equal(got, np.full(8, want, np.float32), str((order, flag)))


def test_warm_call_keys_tell_a_float_from_an_int_and_a_bool():
    calls = WarmCalls(())
    keys = {
        repr(v): calls.signature((), {"B": v}, None)[0]
        for v in (32, 32.0, True, 1, (32, 16), (32.0, 16))
    }
    assert len(set(keys.values())) == len(keys)
    calls.remember(keys["32"], "the B=32 build")
    assert calls.get(keys["32.0"]) is None
    assert calls.get(keys["32"]) == "the B=32 build"
    assert calls.signature((), {"B": 32}, None)[0] == keys["32"]


def _typed_kernel():
    @tl.kernel(warps=1)
    def tiles(
        y: tl.Tensor[tl.f32, "N"],
        BM: tl.constexpr = 4,
        SCALE: tl.constexpr = 1.0,
        FLAG: tl.constexpr = False,
        T: tl.constexpr = tl.f32,
    ):
        t = tl.full([BM], SCALE, T).to(tl.f32)
        tl.store(y, [0], tl.where(FLAG, t + 1, t))

    return tiles


@pytest.mark.parametrize(
    "given, fragments",
    [
        (dict(BM="4"), ["BM", "an int (its default is 4)", "got '4' (a str)"]),
        (dict(BM=4.0), ["BM", "an int", "got 4.0 (a float)"]),
        (dict(BM=True), ["BM", "an int", "got True (a bool)"]),
        (dict(SCALE="2"), ["SCALE", "a number (its default is 1.0)", "got '2'"]),
        (dict(FLAG=1), ["FLAG", "a bool (its default is False)", "got 1 (an int)"]),
        (
            dict(T="f99"),
            ["T", "a dtype or a dtype name (its default is f32)", "got 'f99'", "unknown dtype"],
        ),
        (dict(T=3), ["T", "a dtype", "got 3 (an int)"]),
    ],
)
def test_a_wrong_typed_constexpr_names_the_parameter_at_the_call(given, fragments):
    k = _typed_kernel()
    with pytest.raises(TypeError) as caught:
        k.interpret(np.zeros(4, np.float32), **given)
    text = str(caught.value)
    assert text.startswith("tiles(): constexpr parameter "), text
    for fragment in fragments:
        assert fragment in text, text


def test_constexprs_of_compatible_types_are_accepted():
    k = _typed_kernel()
    y = np.zeros(4, np.float32)
    np.testing.assert_array_equal(k.interpret(y, SCALE=3), np.full(4, 3.0))
    np.testing.assert_array_equal(k.interpret(y, BM=np.int64(4), FLAG=np.bool_(True)), 2.0)
    np.testing.assert_array_equal(k.interpret(y, SCALE=np.float32(0.5)), 0.5)
    np.testing.assert_array_equal(k.interpret(y, SCALE=2.5, T="f16"), 2.5)
    assert k.specialization(T="f16") is k.specialization(T=tl.f16)
    assert k.specialization(T="float16") is k.specialization(T=tl.f16)


# ------------------------------------------------------------ 4. one element, a scalar needed


def test_a_rank0_tile_where_a_scalar_is_needed_says_item():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.i32, "N"]):
        m = tl.load(x, [0], [32]) > 0
        tl.store(x, [0], tl.full([1], tl.sum(m), tl.i32))  # <- error

    assert_reported(
        k, "is used where a block-uniform scalar is needed", "use .item() to take its value"
    )


def test_a_size1_tile_where_a_scalar_is_needed_points_to_item_which_takes_it():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.i32, "N", "M"]):
        one = tl.load(x, [0, 0], [1, 1])
        tl.store(x, [0, 0], tl.full([1, 1], one, tl.i32))  # <- error

    assert_reported(k, "(tile<i32, [1, 1]>)", "use .item() to take its value")

    @tl.kernel(warps=1)
    def follows_the_advice(x: tl.Tensor[tl.i32, "N", "M"]):
        tile = tl.load(x, [0, 0], [4, 4])
        one = tl.load(x, [1, 1], [1, 1]).item()  # a [1, 1] tile's element, as numpy's item
        corner = tile[-1, -1].item()  # indexing already gives a scalar; item() keeps it
        tl.store(x, [0, 0], tl.full([1, 1], one + corner, tl.i32))

    x = np.arange(16, dtype=np.int32).reshape(4, 4)
    for out in (follows_the_advice.interpret(x.copy()), follows_the_advice(x.copy())):
        assert out[0, 0] == x[1, 1] + x[3, 3]


def test_a_larger_tile_where_a_scalar_is_needed_gets_no_item_hint():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.i32, "N"]):
        tl.store(x, [0], tl.full([2], tl.load(x, [0], [2]), tl.i32))  # <- error

    error = assert_reported(k, "is used where a block-uniform scalar is needed")
    assert ".item()" not in str(error) and "take its value" not in str(error)


# ------------------------------------------------------------ 5. wordings


def test_a_loop_carried_tile_that_changes_shape_says_the_shape_must_stay():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        acc = tl.zeros([16], tl.f32)
        for _ in tl.range(0, 4):  # <- error
            acc = tl.load(x, [0], [32])
        tl.store(x, [0], acc)

    error = assert_reported(
        k,
        "`acc` changes shape in the loop: [16] before it, [32] at the end of its body",
        "must keep the same shape across iterations",
    )
    assert ".to()" not in str(error)


def test_a_tile_whose_shape_differs_between_branches_says_so():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"], n: tl.i32):
        acc = tl.zeros([16], tl.f32)
        if n > 0:  # <- error
            acc = tl.load(x, [0], [32])
        tl.store(x, [0], acc)

    error = assert_reported(k, "`acc` has shape [32] on one path of the branch and [16]")
    assert ".to()" not in str(error)


def test_a_loop_carried_tile_that_changes_dtype_still_says_to():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        acc = tl.zeros([16], tl.f32)
        for _ in tl.range(0, 4):  # <- error
            acc = tl.zeros([16], tl.f16)
        tl.store(x, [0], acc)

    assert_reported(k, "`acc` changes type in the loop", "convert it with .to()")


@pytest.mark.parametrize("convert, target", [("float", "tl.f32"), ("int", "tl.i32")])
def test_python_float_or_int_of_a_runtime_value_suggests_to(convert, target):
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"], HOW: tl.constexpr):
        t = tl.load(x, [0], [32])
        s = float(t[0]) if HOW == "float" else int(t[0])  # <- error
        tl.store(x, [0], t + s)

    error = assert_reported(
        k,
        f"Python's {convert}() cannot convert a runtime value",
        f".to({target})",
        HOW=convert,
    )
    assert "make it a tl.constexpr" not in str(error)


def test_a_bitwise_reduction_of_floats_names_the_reduction():
    @tl.kernel(warps=1)
    def k(x: tl.Tensor[tl.f32, "N"]):
        t = tl.load(x, [0], [32])
        tl.store(x, [0], ops._reduce("xor", t, None, False) + t)  # <- error

    error = assert_reported(k, "the bitwise `xor` reduction needs integer tiles, got f32")
    assert "tl.reduce_" not in str(error)


@tl.kernel(warps=1)
def flat_gather(a: tl.Tensor[tl.f16, "T"], out: tl.Tensor[tl.f16, 8, 16]):
    index = tl.arange(0, 8)[:, None] * 16 + tl.arange(0, 16)[None, :]
    tl.store(out, [0, 0], tl.load(a, [index], [8, 16]))  # <- error


@tl.kernel(warps=1)
def flat_gather_reshaped(a: tl.Tensor[tl.f16, "T"], out: tl.Tensor[tl.f16, 8, 16]):
    index = tl.arange(0, 8)[:, None] * 16 + tl.arange(0, 16)[None, :]
    tl.store(out, [0, 0], tl.reshape(tl.load(a, [tl.reshape(index, [128])], [128]), [8, 16]))


def test_a_2d_gather_from_a_flat_tensor_shows_the_flat_form_that_works():
    error = assert_reported(flat_gather, "a has 1 dimensions but the tile shape [8, 16] has 2")
    assert "tl.reshape(tl.load(a, [tl.reshape(index, [128])], [128]), [8, 16])" in str(error)
    a = np.arange(256).astype(np.float16)
    out = flat_gather_reshaped(a, np.zeros((8, 16), np.float16))
    np.testing.assert_array_equal(out, a[:128].reshape(8, 16))


# ------------------------------------------------------- a tile size with an odd factor


@tl.kernel(warps=4)
def doubled_prefix(x: tl.Tensor[tl.f32, "N"], y: tl.Tensor[tl.f32, "N"], BLOCK: tl.constexpr):
    tile = tl.load(x, [0], [BLOCK], mask=tl.arange(0, BLOCK) < N)
    tl.store(y, [0], tl.cumsum(tile * 2.0), mask=tl.arange(0, BLOCK) < N)


def test_a_row_of_1000_is_told_to_pad_to_1024_and_mask_not_to_add_warps():
    # Threads split a tile by powers of two: 1000 = 8 * 125 spreads over 8 threads and
    # the other 120 hold copies; more warps would only add copies.
    with pytest.raises(tl.RegisterBudgetError) as info:
        doubled_prefix.compile(target="cpu", BLOCK=1000)
    text = str(info.value)
    assert "dimension 0 has size 1000, whose odd factor 125" in text, text
    assert "mask=tl.arange(0, 1024) < 1000" in text, text
    # The advice works: the same row as a masked tile of 1024.
    x = np.arange(1000, dtype=np.float32) / 7
    y = doubled_prefix(x, np.zeros_like(x), BLOCK=1024)
    np.testing.assert_allclose(y, np.cumsum(2.0 * x.astype(np.float64)), rtol=1e-6)
