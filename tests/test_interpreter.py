"""The reference interpreter against independent numpy / Python-integer references.

IR functions are built by hand with the node classes (the `K` helper only cuts
boilerplate), so these tests pin the semantics of the block IR without the DSL.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from tilelang import dtypes
from tilelang.dtypes import (
    DType,
    PackedArray,
    bf16,
    f4e2m1,
    f6e3m2,
    f16,
    f32,
    f64,
    i8,
    i16,
    i32,
    u1,
    u3,
    u4,
    u8,
    u16,
    u32,
    u64,
)
from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout, replicated, spatial
from tilelang.ir.shape_expr import Lit, Sym
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.runtime.host_tensor import HostTensor
from tilelang.runtime.interpreter import InterpreterError, grid, run

# --- a tiny IR builder ------------------------------------------------------------------

Arg = ir.Var | int | float


class K:
    """Builds one Function: parameters, sizes and a body, with nested bodies."""

    def __init__(self) -> None:
        self.params: list[ir.Var] = []
        self.sizes: list[ir.Var] = []
        self.bodies: list[list[ir.Instr]] = [[]]
        self.count = itertools.count()

    def var(self, type_: object, hint: str = "v") -> ir.Var:
        return ir.Var(f"{hint}{next(self.count)}", type_)

    def emit(self, instr: ir.Instr) -> ir.Instr:
        self.bodies[-1].append(instr)
        return instr

    @contextlib.contextmanager
    def body(self) -> Iterator[list[ir.Instr]]:
        self.bodies.append([])
        try:
            yield self.bodies[-1]
        finally:
            self.bodies.pop()

    def tensor(self, name: str, dtype: DType, *shape: int | str) -> ir.Var:
        dims = tuple(Lit(d) if isinstance(d, int) else Sym(d) for d in shape)
        var = ir.Var(name, TensorType(dtype, dims))
        self.params.append(var)
        return var

    def scalar(self, name: str, dtype: DType = i32) -> ir.Var:
        var = ir.Var(name, ScalarType(dtype))
        self.params.append(var)
        return var

    def size(self, name: str) -> ir.Var:
        var = ir.Var(name, ScalarType(i32))
        self.sizes.append(var)
        return var

    def value(self, x: Arg, dtype: DType = i32) -> ir.Value:
        return x if isinstance(x, ir.Var) else ir.Const(x, dtype)

    def load(
        self,
        tensor: ir.Var,
        offsets: Sequence[Arg],
        shape: Sequence[int],
        fill: float | None = None,
        layout: Layout | None = None,
        loc: ir.Loc = ir.NOWHERE,
    ) -> ir.Var:
        dtype = tensor.type.dtype
        result = self.var(TileType(dtype, tuple(shape), layout), "ld")
        const_fill = None if fill is None else ir.Const(fill, dtype)
        offs = tuple(self.value(o) for o in offsets)
        self.emit(ir.Load(result, tensor, offs, const_fill, loc=loc))
        return result

    def store(self, tensor: ir.Var, offsets: Sequence[Arg], value: ir.Var) -> None:
        self.emit(ir.Store(tensor, tuple(self.value(o) for o in offsets), value))

    def op(self, name: str, *args: Arg, dtype: DType | None = None, loc: ir.Loc = ir.NOWHERE):
        """A Compute; Python numbers become constants of the first Var's dtype."""
        first = next(a for a in args if isinstance(a, ir.Var) and not _is_cond(name, a, args))
        operand = first.type.dtype
        values = [self.value(a, operand) for a in args]
        shapes = [getattr(v.type, "shape", ()) for v in values if isinstance(v, ir.Var)]
        shape = np.broadcast_shapes(*shapes)
        is_bool = name in ("eq", "ne", "lt", "le", "gt", "ge")
        result_dtype = u1 if is_bool else operand if dtype is None else dtype
        type_ = TileType(result_dtype, shape) if shape else ScalarType(result_dtype)
        result = self.var(type_, name)
        self.emit(ir.Compute(result, name, tuple(values), loc=loc))
        return result

    def unary(self, cls: type, value: ir.Value, type_: object, **kwargs: object) -> ir.Var:
        result = self.var(type_, cls.__name__.lower())
        self.emit(cls(result, value, **kwargs))
        return result

    def arange(self, dtype: DType, length: int, start: int) -> ir.Var:
        result = self.var(TileType(dtype, (length,)), "arange")
        self.emit(ir.Arange(result, start))
        return result

    def blocks(self, *sizes: Arg) -> tuple[ir.Var, ...]:
        results = tuple(self.var(ScalarType(i32), "b") for _ in sizes)
        self.emit(ir.Blocks(results, tuple(self.value(s) for s in sizes)))
        return results

    def function(self) -> ir.Function:
        assert len(self.bodies) == 1
        body = ir.Block(tuple(self.bodies[0]))
        return ir.Function("k", tuple(self.params), tuple(self.sizes), body, warps=4)


def _is_cond(name: str, arg: Arg, args: tuple[Arg, ...]) -> bool:
    return name == "where" and arg is args[0]


def codes_out(dtype: DType, *shape: int) -> np.ndarray:
    """An output tensor as a code array (unsigned storage), filled with a sentinel."""
    return np.full(shape, 1 if dtype.bits < 8 else 0x5A, dtype=dtype.storage)


# --- grids, masking, control flow -------------------------------------------------------


def vector_add(block: int = 128) -> ir.Function:
    k = K()
    x, y, z = (k.tensor(name, f32, "N") for name in "xyz")
    n = k.size("N")
    count = k.op("div", k.op("add", n, block - 1), block)
    (pid,) = k.blocks(count)
    offset = k.op("mul", pid, block)
    total = k.op("add", k.load(x, [offset], [block]), k.load(y, [offset], [block]))
    k.store(z, [offset], total)
    return k.function()


def test_vector_add_ragged_tail_is_masked() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    x = rng.standard_normal(n).astype(np.float32)
    y = rng.standard_normal(n).astype(np.float32)
    backing = np.full(1024 + 7, np.float32(-123.5))
    backing = backing.astype(np.float32)
    z = backing[3 : 3 + n]  # a view: stores must land in it and nowhere else
    fn = vector_add()
    assert grid(fn, {}, {"N": n}) == (8,)
    run(fn, {"x": x, "y": y, "z": z}, {}, {"N": n})
    np.testing.assert_array_equal(z, x + y)
    assert (backing[:3] == np.float32(-123.5)).all()
    assert (backing[3 + n :] == np.float32(-123.5)).all()


def test_size_symbols_are_read_from_the_tensors() -> None:
    x = np.arange(5, dtype=np.float32)
    z = np.zeros(5, dtype=np.float32)
    run(vector_add(4), {"x": x, "y": x, "z": z}, {})
    np.testing.assert_array_equal(z, 2 * x)


def test_grid_without_blocks_is_one_block() -> None:
    k = K()
    out = k.tensor("out", i32, 4)
    k.store(out, [0], k.arange(i32, 4, start=3))
    fn = k.function()
    assert grid(fn, {}, {}) == (1,)
    result = np.zeros(4, dtype=np.int32)
    run(fn, {"out": result}, {}, {})
    np.testing.assert_array_equal(result, [3, 4, 5, 6])


def test_load_outside_reads_fill_and_negative_offsets_are_masked() -> None:
    k = K()
    x = k.tensor("x", i16, 3, 4)
    out = k.tensor("out", i16, 5, 6)
    k.store(out, [0, 0], k.load(x, [-1, -1], [5, 6], fill=-7))
    # Only tile[4, 0] = x[2, 0] lands inside `out` (at [0, 5]); the rest is skipped.
    k.store(out, [-4, 5], k.load(x, [-2, 0], [5, 6]))
    x_values = np.arange(12, dtype=np.int16).reshape(3, 4)
    result = np.zeros((5, 6), dtype=np.int16)
    run(k.function(), {"x": x_values, "out": result}, {}, {})
    expected = np.full((5, 6), -7, dtype=np.int16)
    expected[1:4, 1:5] = x_values
    expected[0, 5] = x_values[2, 0]
    np.testing.assert_array_equal(result, expected)


def test_for_loop_carries_an_accumulator() -> None:
    k = K()
    x = k.tensor("x", f16, "K")
    out = k.tensor("out", f16, 16)
    size = k.size("K")
    zeros = k.unary(ir.Full, ir.Const(0.0, f32), TileType(f16, (16,)))
    var, carried, result = k.var(ScalarType(i32), "k"), k.var(zeros.type, "acc"), k.var(zeros.type)
    with k.body() as body:
        total = k.op("add", carried, k.load(x, [var], [16]))
        k.emit(ir.Yield((total,)))
    k.emit(
        ir.For(var, ir.Const(0, i32), size, ir.Const(16, i32), (zeros,), (carried,),
               ir.Block(tuple(body)), (result,))
    )  # fmt: skip
    k.store(out, [0], result)
    fn = k.function()
    rng = np.random.default_rng(1)
    values = (rng.standard_normal(80) * 100).astype(np.float16)
    expected = np.zeros(16, dtype=np.float16)
    for start in range(0, 80, 16):  # the same order, rounding to f16 after every add
        expected = expected + values[start : start + 16]
    got = np.zeros(16, dtype=np.float16)
    run(fn, {"x": values, "out": got}, {})
    np.testing.assert_array_equal(got, expected)
    empty = np.full(16, np.float16(9.0))
    run(fn, {"x": values[:0], "out": empty}, {})  # no iteration: the init comes out
    np.testing.assert_array_equal(empty, np.zeros(16, dtype=np.float16))


def test_if_selects_a_body_per_block() -> None:
    k = K()
    out = k.tensor("out", i32, 4, 3)
    (pid,) = k.blocks(4)
    cond = k.op("lt", pid, 2)
    tile = TileType(i32, (1, 3))
    result = k.var(tile)
    with k.body() as then_body:
        k.emit(ir.Yield((k.unary(ir.Full, ir.Const(10, i32), tile),)))
    with k.body() as else_body:
        k.emit(ir.Yield((k.unary(ir.Full, pid, tile),)))
    k.emit(ir.If(cond, ir.Block(tuple(then_body)), ir.Block(tuple(else_body)), (result,)))
    k.store(out, [pid, 0], result)
    got = np.zeros((4, 3), dtype=np.int32)
    run(k.function(), {"out": got}, {})
    np.testing.assert_array_equal(got[:, 0], [10, 10, 2, 3])


# --- elementwise operators --------------------------------------------------------------


def run_elementwise(name: str, dtype: DType, *arrays: np.ndarray, result: DType | None = None):
    """Load every operand (as codes), apply `name`, store, and return the decoded result."""
    k = K()
    shape = arrays[-1].shape
    operand_types = [u1 if name == "where" and i == 0 else dtype for i in range(len(arrays))]
    ins = [k.tensor(f"in{i}", t, *shape) for i, t in enumerate(operand_types)]
    out_dtype = result or (u1 if name in ("eq", "ne", "lt", "le", "gt", "ge") else dtype)
    out = k.tensor("out", out_dtype, *shape)
    loaded = [k.load(t, [0] * len(shape), shape) for t in ins]
    k.store(out, [0] * len(shape), k.op(name, *loaded))
    got = codes_out(out_dtype, *shape)
    tensors = {
        f"in{i}": t.encode(a) for i, (t, a) in enumerate(zip(operand_types, arrays, strict=True))
    }
    run(k.function(), {**tensors, "out": got}, {})
    return out_dtype.decode(got)


def wrap(value: int, dtype: DType) -> int:
    value &= (1 << dtype.bits) - 1
    if dtype.signed and value >= 1 << (dtype.bits - 1):
        value -= 1 << dtype.bits
    return value


def c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def int_reference(name: str, dtype: DType, a: int, b: int) -> int:
    """Python-integer semantics of ops.py, written independently of the interpreter."""
    width = dtype.bits
    if name in ("shl", "shr"):
        amount = b if b >= 0 else b + (1 << width)  # the amount is read as unsigned
        if name == "shl":
            return 0 if amount >= width else wrap(a << amount, dtype)
        if amount >= width:
            return -1 if a < 0 else 0
        return a >> amount  # Python >> is arithmetic; unsigned values are non-negative
    table = {
        "add": lambda: a + b,
        "sub": lambda: a - b,
        "mul": lambda: a * b,
        "div": lambda: c_div(a, b),
        "rem": lambda: a - c_div(a, b) * b,
        "min": lambda: min(a, b),
        "max": lambda: max(a, b),
        "and": lambda: a & b,
        "or": lambda: a | b,
        "xor": lambda: a ^ b,
    }
    return wrap(table[name](), dtype)


INT_BINARY = ("add", "sub", "mul", "div", "rem", "min", "max", "and", "or", "xor", "shl", "shr")


def int_operands(dtype: DType, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = dtype.min, dtype.max
    edges = [lo, hi, 0, 1, -1 if dtype.signed else 2, lo + 1]
    a = np.concatenate([np.repeat(edges, len(edges)), rng.integers(lo, hi, n, endpoint=True)])
    b = np.concatenate([np.tile(edges, len(edges)), rng.integers(lo, hi, n, endpoint=True)])
    return a.astype(np.int64), b.astype(np.int64)


@pytest.mark.parametrize("dtype", [i8, u8, i32, u32], ids=str)
@pytest.mark.parametrize("name", INT_BINARY)
def test_integer_binary_ops(name: str, dtype: DType) -> None:
    a, b = int_operands(dtype, 64, seed=hash((name, dtype.name)) % 1000)
    if name in ("shl", "shr"):  # amounts around the width and negative ones
        amounts = np.arange(-3, dtype.bits + 4) if dtype.signed else np.arange(dtype.bits + 4)
        b = np.resize(amounts, a.shape).astype(np.int64)
    if name in ("div", "rem"):
        b = np.where(b == 0, 3, b)
    got = run_elementwise(name, dtype, a, b)
    expected = [int_reference(name, dtype, int(x), int(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_array_equal(got, expected, err_msg=f"{name} {dtype}")


def test_u64_arithmetic_wraps_and_shifts() -> None:
    a = np.array([2**64 - 1, 2**63, 5, 12345678901234567890], dtype=np.uint64)
    b = np.array([2, 1, 64, 7], dtype=np.uint64)
    for name in ("add", "mul", "sub", "shl", "shr", "div"):
        got = run_elementwise(name, u64, a, b)
        expected = [int_reference(name, u64, int(x), int(y)) for x, y in zip(a, b, strict=True)]
        np.testing.assert_array_equal(got, np.array(expected, dtype=np.uint64), err_msg=name)


@pytest.mark.parametrize("dtype", [i8, u8, i32], ids=str)
def test_integer_unary_ops(dtype: DType) -> None:
    a, _ = int_operands(dtype, 32, seed=3)
    np.testing.assert_array_equal(
        run_elementwise("neg", dtype, a), [wrap(-int(x), dtype) for x in a]
    )
    np.testing.assert_array_equal(
        run_elementwise("abs", dtype, a), [wrap(abs(int(x)), dtype) for x in a]
    )
    np.testing.assert_array_equal(
        run_elementwise("invert", dtype, a), [wrap(~int(x), dtype) for x in a]
    )


@pytest.mark.parametrize("dtype", [i8, u32], ids=str)
def test_comparisons_and_where(dtype: DType) -> None:
    a, b = int_operands(dtype, 32, seed=4)
    for name, fn in (("eq", int.__eq__), ("ne", int.__ne__), ("lt", int.__lt__),
                     ("le", int.__le__), ("gt", int.__gt__), ("ge", int.__ge__)):  # fmt: skip
        expected = [int(fn(int(x), int(y))) for x, y in zip(a, b, strict=True)]
        np.testing.assert_array_equal(run_elementwise(name, dtype, a, b), expected)
    cond = (a > b).astype(np.int64)
    got = run_elementwise("where", dtype, cond, a, b)
    np.testing.assert_array_equal(got, np.maximum(a, b))


@pytest.mark.parametrize(("op", "expected"), [("div", [1, 1, -1, 1]), ("rem", [0, 0, 0, 0])])
def test_integer_division_by_zero_is_defined(op, expected) -> None:
    # x / 0 is all ones and x % 0 is x, as the compiled backends make them.
    k = K()
    x = k.tensor("x", i32, 4)
    out = k.tensor("out", i32, 4)
    tile = k.load(x, [0], [4])
    k.store(out, [0], k.op(op, tile, tile))
    out = np.zeros(4, np.int32)
    run(k.function(), {"x": np.array([1, 2, 0, 4], np.int32), "out": out})
    np.testing.assert_array_equal(out, expected)


def float_operands(numpy_dtype: type, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = np.exp2(rng.integers(-12, 12, n))
    a = (rng.standard_normal(n) * scale).astype(numpy_dtype)
    b = (rng.standard_normal(n) * scale[::-1]).astype(numpy_dtype)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1.0, 65504.0, np.nan], dtype=numpy_dtype)
    return np.concatenate([a, specials]), np.concatenate([b, specials[::-1]])


FLOAT_BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "min": np.fmin,
    "max": np.fmax,
}


@pytest.mark.parametrize("dtype", [f16, f32], ids=str)
@pytest.mark.parametrize("name", list(FLOAT_BINARY))
def test_float_binary_ops_round_like_ieee(name: str, dtype: DType) -> None:
    # numpy float16/float32 arithmetic is correctly rounded for these operators.
    numpy_dtype = np.float16 if dtype == f16 else np.float32
    a, b = float_operands(numpy_dtype, 200, seed=5)
    with np.errstate(all="ignore"):
        expected = FLOAT_BINARY[name](a, b)
    got = run_elementwise(name, dtype, a, b)
    np.testing.assert_array_equal(got.astype(numpy_dtype), expected)


def test_f16_add_overflows_to_inf_and_rounds_ties_to_even() -> None:
    a = np.array([65504.0, 65504.0, 2048.0, 2048.0], dtype=np.float16)
    b = np.array([16.0, 15.0, 1.0, 3.0], dtype=np.float16)  # 2049 ties to 2048, 2051 to 2052
    got = run_elementwise("add", f16, a, b)
    np.testing.assert_array_equal(got, [np.inf, 65504.0, 2048.0, 2052.0])


FLOAT_UNARY = {
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "exp2": np.exp2,
    "log": np.log,
    "log2": np.log2,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1 / np.sqrt(x),
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "erf": lambda x: np.array([math.erf(v) for v in x]),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "log1p": lambda x: np.array([math.log1p(v) if v > -1 else math.nan for v in x]),
    "softplus": lambda x: np.array([math.log(1 + math.exp(v)) for v in x]),
    "floor": np.floor,
    "ceil": np.ceil,
}


@pytest.mark.parametrize("name", list(FLOAT_UNARY))
def test_float_unary_ops_are_float64_rounded_once(name: str) -> None:
    values = np.linspace(0.01, 7.9, 37).astype(np.float16)
    values = np.concatenate([values, -values])
    with np.errstate(all="ignore"):
        exact = FLOAT_UNARY[name](values.astype(np.float64))
    got = run_elementwise(name, f16, values)
    np.testing.assert_array_equal(got.astype(np.float16), exact.astype(np.float16))


def test_scalar_arithmetic_with_constants() -> None:
    k = K()
    out = k.tensor("out", i32, 1)
    s = k.scalar("s", i32)
    value = k.op("shl", k.op("rem", k.op("sub", s, 20), 7), 2)  # ((s - 20) % 7) << 2
    k.store(out, [0], k.unary(ir.Full, value, TileType(i32, (1,))))
    got = np.zeros(1, dtype=np.int32)
    run(k.function(), {"out": got}, {"s": 3})
    assert got[0] == -12  # C remainder: (-17) % 7 == -3


# --- casts --------------------------------------------------------------------------------


def run_cast(values: np.ndarray, src: DType, dst: DType) -> np.ndarray:
    """Cast a tile of `src` values to `dst`; return the stored codes."""
    k = K()
    x = k.tensor("x", src, *values.shape)
    out = k.tensor("out", dst, *values.shape)
    tile = k.load(x, [0], values.shape)
    k.store(out, [0], k.unary(ir.Cast, tile, TileType(dst, values.shape)))
    got = codes_out(dst, *values.shape)
    run(k.function(), {"x": src.encode(values), "out": got}, {})
    return got


def test_cast_f32_to_f16_matches_numpy() -> None:
    rng = np.random.default_rng(6)
    values = (rng.standard_normal(500) * np.exp2(rng.integers(-20, 20, 500))).astype(np.float32)
    values = np.concatenate([values, np.float32([1e6, -1e6, 6e-8, 2.9802322e-08])])
    got = run_cast(values, f32, f16)
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dst", [f4e2m1, f6e3m2, bf16], ids=str)
def test_cast_f32_to_small_floats_matches_the_codec(dst: DType) -> None:
    values = np.linspace(-40, 40, 321).astype(np.float32)
    values = np.concatenate([values, np.float32([0.25, 0.75, 1e9, -1e9, 0.1])])
    np.testing.assert_array_equal(run_cast(values, f32, dst), dst.encode(values))


def test_cast_f4e2m1_known_values() -> None:
    # e2m1 values: 0 0.5 1 1.5 2 3 4 6; ties to even; saturation at 6.
    values = np.float32([0.25, 0.75, 1.25, 2.5, 5.0, 7.0, 100.0, -100.0])
    got = f4e2m1.decode(run_cast(values, f32, f4e2m1))
    np.testing.assert_array_equal(got, [0.0, 1.0, 1.0, 2.0, 4.0, 6.0, 6.0, -6.0])


def test_cast_float_to_int_rounds_to_even_and_saturates() -> None:
    values = np.float32([300.0, -300.0, 2.5, 3.5, -2.5, np.nan, np.inf, -np.inf, 127.4])
    got = i8.decode(run_cast(values, f32, i8))
    np.testing.assert_array_equal(got, [127, -128, 2, 4, -2, 0, 127, -128, 127])


def test_cast_int_to_int_saturates() -> None:
    values = np.array([-5, 300, 255, 0, 2**31 - 1], dtype=np.int64)
    np.testing.assert_array_equal(run_cast(values, i32, u8), [0, 255, 255, 0, 255])
    got = i16.decode(run_cast(values, i32, i16))
    np.testing.assert_array_equal(got, [-5, 300, 255, 0, 32767])


# --- packed tensors -----------------------------------------------------------------------


def test_u4_packed_load_cast_to_f16_is_exact() -> None:
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, (8, 32))
    packed = dtypes.pack_codes(codes, u4)
    k = K()
    w = k.tensor("w", u4, 8, 32)
    out = k.tensor("out", f16, 8, 32)
    tile = k.load(w, [0, 0], [8, 32])
    k.store(out, [0, 0], k.unary(ir.Cast, tile, TileType(f16, (8, 32))))
    got = np.zeros((8, 32), dtype=np.float16)
    run(k.function(), {"w": packed, "out": got}, {})
    np.testing.assert_array_equal(got, codes.astype(np.float16))


def test_store_into_packed_u3_round_trips() -> None:
    rng = np.random.default_rng(8)
    codes = rng.integers(0, 8, (4, 16))
    source = dtypes.pack_codes(codes, u3)
    target = PackedArray(np.zeros(4 * 16 * 3 // 8, dtype=np.uint8), u3, (4, 16))
    data = target.data
    k = K()
    x = k.tensor("x", u3, 4, 16)
    y = k.tensor("y", u3, 4, 16)
    tile = k.load(x, [0, 0], [4, 16])
    k.store(y, [0, 0], k.op("add", tile, 5))  # wraps at 8
    run(k.function(), {"x": source, "y": target}, {})
    assert target.data is data  # packed back in place
    np.testing.assert_array_equal(target.codes(), (codes + 5) % 8)
    np.testing.assert_array_equal(source.codes(), codes)  # only read: untouched


def test_host_tensor_value_arrays_write_back() -> None:
    values = np.array([-8, 7, -1, 3], dtype=np.int8)  # i4 values in an int8 array
    host = HostTensor.wrap(values, dtypes.i4)
    np.testing.assert_array_equal(host.codes, [8, 7, 15, 3])
    host.codes[0] = 1
    host.dirty = True
    host.finish()
    np.testing.assert_array_equal(values, [1, 7, -1, 3])
    f16_array = np.ones(3, dtype=np.float16)
    assert np.shares_memory(HostTensor.wrap(f16_array, f16).codes, f16_array)


# --- view ---------------------------------------------------------------------------------


def view_kernel(
    src: DType,
    shape: tuple[int, ...],
    dst: DType,
    dst_shape: tuple[int, ...],
    src_layout: Layout | None = None,
    dst_layout: Layout | None = None,
    back: bool = False,
) -> ir.Function:
    """Load `src`, view it as `dst` (and back again when `back`), store."""
    k = K()
    x = k.tensor("x", src, *shape)
    out = k.tensor("out", src if back else dst, *(shape if back else dst_shape))
    tile = k.load(x, [0] * len(shape), shape, layout=src_layout)
    viewed = k.unary(ir.View, tile, TileType(dst, dst_shape, dst_layout))
    if back:
        viewed = k.unary(ir.View, viewed, TileType(src, shape, src_layout))
    k.store(out, [0] * len(shape), viewed)
    return k.function()


def test_view_without_layouts_known_bits_and_identity() -> None:
    x = np.array([[0xAB, 0x01, 0xF0, 0x7C]], dtype=np.uint8)
    got = np.zeros((1, 8), dtype=np.uint8)
    run(view_kernel(u8, (1, 4), u4, (1, 8)), {"x": x, "out": got}, {})
    np.testing.assert_array_equal(got, [[0xB, 0xA, 0x1, 0x0, 0x0, 0xF, 0xC, 0x7]])
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (4, 8)).astype(np.uint8)
    same = np.zeros_like(x)
    run(view_kernel(u8, (4, 8), u4, (4, 16), back=True), {"x": x, "out": same}, {})
    np.testing.assert_array_equal(same, x)


def test_view_without_layouts_matches_numpy_and_packing() -> None:
    rng = np.random.default_rng(10)
    halves = rng.standard_normal((2, 8)).astype(np.float16)
    got = np.zeros((2, 4), dtype=np.uint32)
    run(view_kernel(f16, (2, 8), u32, (2, 4)), {"x": halves, "out": got}, {})
    np.testing.assert_array_equal(got, halves.view(np.uint32))
    data = rng.integers(0, 256, (2, 3)).astype(np.uint8)  # 24 bits per row = 8 u3
    got = np.zeros((2, 8), dtype=np.uint8)
    run(view_kernel(u8, (2, 3), u3, (2, 8)), {"x": data, "out": got}, {})
    for row in range(2):
        np.testing.assert_array_equal(got[row], dtypes.unpack_bits(data[row], 3, 8))


def test_view_with_layouts_row_per_thread() -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (32, 4)).astype(np.uint8)
    got = np.zeros((32, 8), dtype=np.uint8)
    fn = view_kernel(u8, (32, 4), u4, (32, 8), spatial(32, 1).local(1, 4),
                     spatial(32, 1).local(1, 8))  # fmt: skip
    run(fn, {"x": x, "out": got}, {})
    expected = np.stack([x & 0xF, x >> 4], axis=-1).reshape(32, 8)
    np.testing.assert_array_equal(got, expected)


def test_view_with_layouts_reinterprets_each_threads_registers() -> None:
    # Thread t holds bytes (0, 2t), (0, 2t+1), (1, 2t), (1, 2t+1) as locals 0..3; as
    # two u16 locals they land at (0, 2t) and (0, 2t+1) of a [1, 64] tile: not a
    # row-major reinterpretation.
    src_layout = spatial(1, 32).local(2, 2)
    dst_layout = spatial(1, 32).local(1, 2)
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, (2, 64)).astype(np.uint8)
    got = np.zeros((1, 64), dtype=np.uint16)
    run(view_kernel(u8, (2, 64), u16, (1, 64), src_layout, dst_layout), {"x": x, "out": got})
    for t in range(32):
        b = [int(x[0, 2 * t]), int(x[0, 2 * t + 1]), int(x[1, 2 * t]), int(x[1, 2 * t + 1])]
        assert got[0, 2 * t] == b[0] | b[1] << 8
        assert got[0, 2 * t + 1] == b[2] | b[3] << 8
    back = np.zeros_like(x)
    fn = view_kernel(u8, (2, 64), u16, (1, 64), src_layout, dst_layout, back=True)
    run(fn, {"x": x, "out": back})
    np.testing.assert_array_equal(back, x)


def test_view_replicas_must_agree() -> None:
    fn = view_kernel(u8, (2,), u8, (1,), spatial(2), replicated(2))
    got = np.zeros(1, dtype=np.uint8)
    run(fn, {"x": np.array([5, 5], dtype=np.uint8), "out": got})
    assert got[0] == 5
    with pytest.raises(InterpreterError, match="replicas"):
        run(fn, {"x": np.array([5, 6], dtype=np.uint8), "out": got})


# --- dot, reductions, scans ---------------------------------------------------------------


def dot_kernel(in_dtype: DType, acc_dtype: DType, m: int, n: int, kk: int) -> ir.Function:
    k = K()
    a = k.tensor("a", in_dtype, m, kk)
    b = k.tensor("b", in_dtype, kk, n)
    c = k.tensor("c", acc_dtype, m, n)
    acc = k.load(c, [0, 0], [m, n])
    result = k.var(TileType(acc_dtype, (m, n)))
    k.emit(ir.Dot(result, k.load(a, [0, 0], [m, kk]), k.load(b, [0, 0], [kk, n]), acc))
    k.store(c, [0, 0], result)
    return k.function()


def test_dot_f16_inputs_f32_accumulator_rounds_once() -> None:
    rng = np.random.default_rng(13)
    a = (rng.integers(-64, 64, (16, 32)) / 16).astype(np.float16)
    b = (rng.standard_normal((32, 8))).astype(np.float16)
    c = (rng.standard_normal((16, 8)) * 1e3).astype(np.float32)
    expected = (a.astype(np.float64) @ b.astype(np.float64) + c).astype(np.float32)
    run(dot_kernel(f16, f32, 16, 8, 32), {"a": a, "b": b, "c": c})
    np.testing.assert_array_equal(c, expected)


def test_dot_i8_wraps_at_the_i32_accumulator() -> None:
    rng = np.random.default_rng(14)
    a = rng.integers(-128, 128, (4, 16)).astype(np.int8)
    b = rng.integers(-128, 128, (16, 4)).astype(np.int8)
    c = np.full((4, 4), 2**31 - 100, dtype=np.int32)
    expected = [
        [wrap(sum(int(a[i, j]) * int(b[j, col]) for j in range(16)) + 2**31 - 100, i32)
         for col in range(4)]
        for i in range(4)
    ]  # fmt: skip
    run(dot_kernel(i8, i32, 4, 4, 16), {"a": a, "b": b, "c": c})
    np.testing.assert_array_equal(c, expected)


def reduce_kernel(cls: type, dtype: DType, shape: tuple[int, ...], op: str, axis: int,
                  **kwargs: object) -> ir.Function:  # fmt: skip
    k = K()
    x = k.tensor("x", dtype, *shape)
    out_shape = shape[:axis] + shape[axis + 1 :] if cls is ir.Reduce else shape
    out = k.tensor("out", dtype, *out_shape)
    result = k.var(TileType(dtype, out_shape))
    k.emit(cls(result, k.load(x, [0] * len(shape), shape), op, axis, **kwargs))
    k.store(out, [0] * len(out_shape), result)
    return k.function()


INT_REDUCE = {
    "sum": np.add,
    "prod": np.multiply,
    "max": np.maximum,
    "min": np.minimum,
    "and": np.bitwise_and,
    "or": np.bitwise_or,
    "xor": np.bitwise_xor,
}


@pytest.mark.parametrize("op", list(INT_REDUCE))
def test_integer_reductions_wrap(op: str) -> None:
    rng = np.random.default_rng(15)
    x = rng.integers(-128, 128, (3, 6)).astype(np.int8)
    got = np.zeros(3, dtype=np.int8)
    run(reduce_kernel(ir.Reduce, i8, (3, 6), op, 1), {"x": x, "out": got})
    expected = [wrap(int(INT_REDUCE[op].reduce(x[r].astype(object))), i8) for r in range(3)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
def test_float_reductions_are_float64_rounded_once(op: str) -> None:
    rng = np.random.default_rng(16)
    x = (rng.standard_normal((5, 4)) * 3).astype(np.float16)
    x[0, 1] = np.float16(60000.0)  # a float16 running sum would overflow to inf
    x[0, 2] = np.float16(60000.0)
    got = np.zeros(4, dtype=np.float32)
    run(reduce_kernel(ir.Reduce, f32, (5, 4), op, 0), {"x": x.astype(np.float32), "out": got})
    ufunc = {"sum": np.add, "prod": np.multiply, "max": np.fmax, "min": np.fmin}[op]
    np.testing.assert_array_equal(
        got, ufunc.reduce(x.astype(np.float64), axis=0).astype(np.float32)
    )


def test_f16_sum_rounds_once_not_per_step() -> None:
    x = np.float16([2048.0, 1.0, 1.0, 1.0])  # per-step f16: 2048; once: 2051 -> 2052
    got = np.zeros((), dtype=np.float16).reshape(1)
    k = K()
    xt = k.tensor("x", f16, 4)
    out = k.tensor("out", f16, 1)
    total = k.var(ScalarType(f16))
    k.emit(ir.Reduce(total, k.load(xt, [0], [4]), "sum", 0))
    k.store(out, [0], k.unary(ir.Broadcast, total, TileType(f16, (1,))))
    run(k.function(), {"x": x, "out": got})
    assert got[0] == np.float16(2052.0)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
def test_scans(op: str, reverse: bool) -> None:
    rng = np.random.default_rng(17)
    x = rng.integers(-5, 6, (3, 7)).astype(np.int32)
    got = np.zeros_like(x)
    run(reduce_kernel(ir.Scan, i32, (3, 7), op, 1, reverse=reverse), {"x": x, "out": got})
    ufunc = {"sum": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}[op]
    source = x[:, ::-1] if reverse else x
    expected = ufunc.accumulate(source.astype(np.int64), axis=1)
    expected = expected[:, ::-1] if reverse else expected
    np.testing.assert_array_equal(got, expected)
    xf = rng.standard_normal((3, 7)).astype(np.float32)
    gotf = np.zeros_like(xf)
    run(reduce_kernel(ir.Scan, f32, (3, 7), op, 1, reverse=reverse), {"x": xf, "out": gotf})
    fufunc = {"sum": np.add, "prod": np.multiply, "max": np.fmax, "min": np.fmin}[op]
    sourcef = xf[:, ::-1] if reverse else xf
    expectedf = fufunc.accumulate(sourcef.astype(np.float64), axis=1).astype(np.float32)
    np.testing.assert_array_equal(gotf, expectedf[:, ::-1] if reverse else expectedf)


def test_u8_sum_wraps() -> None:
    x = np.full((1, 4), 200, dtype=np.uint8)
    got = np.zeros(1, dtype=np.uint8)
    run(reduce_kernel(ir.Reduce, u8, (1, 4), "sum", 1), {"x": x, "out": got})
    assert got[0] == 800 % 256


# --- shape changes, shared memory, print --------------------------------------------------


def test_reshape_transpose_broadcast() -> None:
    k = K()
    x = k.tensor("x", i32, 2, 6)
    out = k.tensor("out", i32, 4, 3, 2)
    tile = k.load(x, [0, 0], [2, 6])
    reshaped = k.unary(ir.Reshape, tile, TileType(i32, (3, 4)))
    transposed = k.unary(ir.Transpose, reshaped, TileType(i32, (4, 3)), perm=(1, 0))
    column = k.unary(ir.Reshape, transposed, TileType(i32, (4, 3, 1)))
    wide = k.unary(ir.Broadcast, column, TileType(i32, (4, 3, 2)))
    row = k.arange(i32, 2, start=100)
    k.store(out, [0, 0, 0], k.op("add", wide, k.unary(ir.Reshape, row, TileType(i32, (1, 1, 2)))))
    values = np.arange(12, dtype=np.int32).reshape(2, 6)
    got = np.zeros((4, 3, 2), dtype=np.int32)
    run(k.function(), {"x": values, "out": got})
    expected = values.reshape(3, 4).T.reshape(4, 3, 1) + np.array([100, 101]).reshape(1, 1, 2)
    np.testing.assert_array_equal(got, expected)


def test_shared_memory_copy_async_and_store() -> None:
    k = K()
    x = k.tensor("x", f16, 6)
    out = k.tensor("out", f16, 2, 8)
    shared = k.var(SharedType(f16, (8,)), "smem")
    k.emit(ir.SharedAlloc(shared))
    first = k.unary(ir.SharedLoad, shared, TileType(f16, (8,)))  # zeros
    k.emit(ir.CopyAsync(shared, x, (ir.Const(-1, i32),)))  # masked: x[-1] and x[6:] read 0
    k.emit(ir.AsyncCommit())
    k.emit(ir.AsyncWait(0))
    k.emit(ir.Sync())
    copied = k.unary(ir.SharedLoad, shared, TileType(f16, (8,)))
    k.emit(ir.SharedStore(shared, k.op("mul", copied, 2.0)))
    doubled = k.unary(ir.SharedLoad, shared, TileType(f16, (8,)))
    k.store(out, [0, 0], k.unary(ir.Reshape, first, TileType(f16, (1, 8))))
    k.store(out, [1, 0], k.unary(ir.Reshape, doubled, TileType(f16, (1, 8))))
    values = np.arange(1, 7, dtype=np.float16)
    got = np.full((2, 8), np.float16(-1))
    run(k.function(), {"x": values, "out": got})
    np.testing.assert_array_equal(got[0], np.zeros(8))
    np.testing.assert_array_equal(got[1], [0, 2, 4, 6, 8, 10, 12, 0])


def test_print_goes_through_the_hook() -> None:
    k = K()
    x = k.tensor("x", i32, 4)
    (pid,) = k.blocks(2)
    k.emit(ir.Print("tile", k.load(x, [k.op("mul", pid, 2)], [2])))
    lines: list[str] = []
    run(k.function(), {"x": np.array([7, 8, 9, 10], dtype=np.int32)}, print_fn=lines.append)
    assert lines == ["tile block=(0,): [7 8]", "tile block=(1,): [ 9 10]"]


def test_errors_inside_loops_keep_the_inner_location() -> None:
    k = K()
    var = k.var(ScalarType(i32), "i")
    inner = ir.Loc("inner.py", 3, 9)
    inner_var = k.var(ScalarType(i32), "j")
    with k.body() as body:
        step = k.op("sub", var, 2)  # zero when i == 2: a loop that cannot advance
        k.emit(ir.For(inner_var, ir.Const(0, i32), ir.Const(1, i32), step, (), (),
                      ir.Block((ir.Yield(()),)), (), loc=inner))  # fmt: skip
        k.emit(ir.Yield(()))
    k.emit(ir.For(var, ir.Const(0, i32), ir.Const(5, i32), ir.Const(1, i32), (), (),
                  ir.Block(tuple(body)), (), loc=ir.Loc("outer.py", 1, 1)))  # fmt: skip
    with pytest.raises(InterpreterError, match=r"inner\.py:3:9"):
        run(k.function(), {})


def test_math_sanity_of_helpers() -> None:
    # The references above are only as good as these.
    assert c_div(-7, 2) == -3 and c_div(7, -2) == -3 and c_div(-7, -2) == 3
    assert wrap(128, i8) == -128 and wrap(-1, u8) == 255
    assert math.isclose(float(f64.decode(f64.encode(0.1))), 0.1)


def test_negative_zero_constants_are_kept() -> None:
    k = K()
    out = k.tensor("out", f32, 2)
    plus = k.unary(ir.Full, ir.Const(0.0, f32), TileType(f32, (1,)))
    minus = k.unary(ir.Full, ir.Const(-0.0, f32), TileType(f32, (1,)))
    k.store(out, [0], plus)
    k.store(out, [1], minus)
    got = np.ones(2, dtype=np.float32)
    run(k.function(), {"out": got})
    np.testing.assert_array_equal(np.signbit(got), [False, True])


def test_the_prelude_before_blocks_runs_once_per_block_only() -> None:
    k = K()
    out = k.tensor("out", i32, 3)
    k.emit(ir.Print("prelude", ir.Const(1, i32)))
    (pid,) = k.blocks(k.op("add", k.scalar("n", i32), 1))
    k.store(out, [pid], k.unary(ir.Full, pid, TileType(i32, (1,))))
    lines: list[str] = []
    got = np.full(3, -1, dtype=np.int32)
    assert grid(k.function(), {"n": 2}) == (3,)
    run(k.function(), {"out": got}, {"n": 2}, print_fn=lines.append)
    np.testing.assert_array_equal(got, [0, 1, 2])
    assert len(lines) == 3


def test_a_tensor_before_blocks_cannot_be_part_of_the_grid() -> None:
    k = K()
    x = k.tensor("x", i32, 1)
    k.load(x, [0], [1], loc=ir.Loc("p.py", 2, 3))
    k.blocks(1)
    with pytest.raises(InterpreterError, match=r"p\.py:2:3.*before tensors are bound"):
        grid(k.function())
