"""Lowering of tile creation and elementwise computation: `full`, `arange`, the
elementwise operators (`compute`) and `cast`, element by element in each thread's
registers; casts from low-bit types use the vector recipes of `dequant` per whole group
of codes, else the scalar fallback (both counted in the function's stats)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.analysis.value_bounds import ValueBounds
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.types import ScalarType, TileType
from tilelang.lowering import dequant, encode, relayout, scale_folds
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.scalar_decode import decode_scalar
from tilelang.lowering.thread_builder import I32, U32, imm
from tilelang.lowering.values import (
    TileRegs,
    elementwise,
    encode_exact,
    flat_indices,
    is_packed,
)


@lowers(ir.Full)
def lower_full(lo: Lowering, instr: ir.Full) -> None:
    if isinstance(instr.result.type, ScalarType):
        dtype = instr.result.type.dtype
        value = lo.b.cvt(lo.scalar(instr.value), dtype)
        inline = lo.b.cvt(lo.inline_scalar(instr.value), dtype)
        lo.bind_scalar(instr.result, lo.b.let(value, instr.result.name), inline)
        return
    tile = lo.define_tile(instr.result)
    value = lo.b.let(lo.convert(lo.scalar(instr.value), tile.dtype), "fill")
    for li in range(tile.layout.num_locals):
        lo.put(tile, li, value)


@lowers(ir.Arange)
def lower_arange(lo: Lowering, instr: ir.Arange) -> None:
    tile = lo.define_tile(instr.result)
    for li in range(tile.layout.num_locals):
        (i,) = lo.index(tile.layout, li)
        lo.put(tile, li, lo.convert(lo.b.add(i, imm(instr.start)), tile.dtype))


@lowers(ir.Compute)
def lower_compute(lo: Lowering, instr: ir.Compute) -> None:
    if isinstance(instr.result.type, ScalarType):
        args = [lo.scalar(a) for a in instr.args]
        expr = elementwise(instr.op, args)
        lo.bind_scalar(
            instr.result,
            lo.b.let(expr, instr.result.name),
            elementwise(instr.op, [lo.inline_scalar(a) for a in instr.args]),
        )
        return
    deferred = [lo.env.get(a) for a in instr.args] if instr.op in ("sub", "mul") else []
    result = lo.define_tile(instr.result)
    if deferred and isinstance(deferred[0], DeferredCast) and instr.op == "sub":
        dequantize_vector(lo, deferred[0].source, result, instr.args[1])
        return
    if instr.op == "mul" and any(isinstance(d, DeferredCast) for d in deferred):
        cast = 0 if isinstance(deferred[0], DeferredCast) else 1
        finite = proven_finite(lo, deferred[cast].cast.value)
        scales = instr.args[1 - cast]
        dequantize_vector(lo, deferred[cast].source, result, scales=scales, finite=finite)
        return
    if instr.op == "where" and result.packed:
        select_codes(lo, instr, result)
        return
    operands = [operand(lo, a) for a in instr.args]
    for li in range(result.layout.num_locals):
        args = [op(li) for op in operands]
        lo.put(result, li, elementwise(instr.op, args))


def select_codes(lo: Lowering, instr: ir.Compute, result: TileRegs) -> None:
    """`where` on a packed type picks codes, so the chosen data keeps its bits."""
    cond = operand(lo, instr.args[0])
    choices = []
    for v in instr.args[1:]:
        found = lo.value(v)
        if isinstance(found, TileRegs):
            choices.append(lambda li, tile=found: lo.get_code(tile, li))
        else:
            code = lo.b.let(scalar_code(lo, v, result.dtype), "code")
            choices.append(lambda li, code=code: code)
    for li in range(result.layout.num_locals):
        picked = t.Select(cond(li), choices[0](li), choices[1](li))
        lo.put_code(result, li, picked)


def scalar_code(lo: Lowering, v: ir.Value, dtype: DType) -> t.Expr:
    """The u32 code of a scalar of a packed dtype."""
    if isinstance(v, ir.Const):
        return imm(int(encode_exact(dtype, float(v.value) if dtype.is_float else v.value)), U32)
    value = lo.scalar(v)
    if dtype.is_float:
        return encode.encode_scalar(lo, value, dtype)
    return t.Binary(
        "and",
        t.Bitcast(value, U32) if value.dtype == I32 else value,
        imm((1 << dtype.bits) - 1, U32),
    )


def operand(lo: Lowering, v: ir.Value) -> Callable[[int], t.Expr]:
    found = lo.value(v)
    if isinstance(found, TileRegs):
        return lambda li: lo.get(found, li)
    scalar = lo.scalar(v)
    return lambda li: scalar


@lowers(ir.Cast)
def lower_cast(lo: Lowering, instr: ir.Cast) -> None:
    if isinstance(instr.result.type, ScalarType):
        dtype = instr.result.type.dtype
        value = lo.convert(lo.scalar(instr.value), dtype)
        inline = lo.convert(lo.inline_scalar(instr.value), dtype)
        lo.bind_scalar(instr.result, lo.b.let(value, instr.result.name), inline)
        return
    source = lo.tile(instr.value)
    if zero_point_of(lo, instr) is not None or scale_of(lo, instr) is not None:
        lo.env[instr.result] = DeferredCast(instr, source)  # converted by its one user
        return
    result = lo.define_tile(instr.result)
    if source.dtype == result.dtype:
        lo.copy_tile(result, source)
        return
    finite = proven_finite(lo, instr.value)
    start = dequantize_vector(lo, source, result, finite=finite)
    for li in range(start, result.layout.num_locals):
        cast_element(lo, source, result, li, finite)


def cast_element(
    lo: Lowering, source: TileRegs, result: TileRegs, li: int, finite: bool = False
) -> None:
    """`finite` (`proven_finite`): the value facts exclude NaN and inf codes."""
    if source.dtype.is_float and is_packed(source.dtype) and not is_packed(result.dtype):
        lo.b.count("dequant_scalar")
        code = lo.get_code(source, li)
        value = decode_scalar(lo, code, source.dtype, result.dtype, finite)
        lo.put(result, li, value)
        return
    lo.put(result, li, lo.convert(lo.get(source, li), result.dtype))


@dataclass(frozen=True)
class DeferredCast:
    """A cast of codes that its one user converts: ``sub(cast, zero_points)`` with the
    zero points folded into the recipe's subtraction (`zero_point_of`), or
    ``mul(cast, scales)`` with the scales folded into its last step (`scale_of`)."""

    cast: ir.Cast
    source: TileRegs


def zero_point_of(lo: Lowering, cast: ir.Cast) -> ir.Var | None:
    """The zero points z of ``q.to(f16) - z`` when this cast's only use is that
    subtraction and z folds in exactly (`dequant.folds_zero_points`): a tile of the
    cast's layout made by converting integers (a cast of an integer tile, possibly
    broadcast), every group of codes converted by a vector recipe."""
    users = lo.users.get(cast.result, [])
    if not isinstance(cast.result.type, TileType) or len(users) != 1:
        return None
    (user,) = users
    if not isinstance(user, ir.Compute) or user.op != "sub" or user.args[0] is not cast.result:
        return None
    zeros = user.args[1]
    if (
        not isinstance(zeros, ir.Var)
        or not isinstance(zeros.type, TileType)
        or zeros is cast.result
    ):
        return None
    source, result = cast.value.type, cast.result.type
    if zeros.type.layout != result.layout or zeros.type.dtype != result.dtype:
        return None
    largest = _integer_magnitude(lo, zeros)
    elements, _ = dequant.group(source.dtype) if source.dtype.bits <= 16 else (0, 0)
    bytewise = source.dtype.is_int and source.dtype.bits == 8
    if largest is None or not (is_packed(source.dtype) or bytewise) or not elements:
        return None
    if result.layout.num_locals % elements:
        return None
    return zeros if dequant.folds_zero_points(source.dtype, result.dtype, largest) else None


def scale_of(lo: Lowering, cast: ir.Cast) -> ir.Var | None:
    """The scales s of ``q.to(f16) * s`` (either order) when this cast's only use is
    that product and the function's value facts prove the fold exact
    (`scale_folds.folds_scales`, `analysis.value_bounds`): s a tile of the cast's layout
    and dtype, every group of codes converted by a vector recipe."""
    users = lo.users.get(cast.result, [])
    if not isinstance(cast.result.type, TileType) or len(users) != 1:
        return None
    (user,) = users
    if not isinstance(user, ir.Compute) or user.op != "mul" or cast.result not in user.args:
        return None
    scales = user.args[1] if user.args[0] is cast.result else user.args[0]
    source, result = cast.value.type, cast.result.type
    if isinstance(scales, ir.Const):  # a constant scale needs no fact
        if scales.dtype != result.dtype or not scale_folds.folds_constant(
            source.dtype, result.dtype, float(scales.value)
        ):
            return None
        return scales if _whole_groups(source, result) else None
    if not isinstance(scales, ir.Var) or not isinstance(scales.type, TileType):
        return None
    if scales is cast.result or scales.type.layout != result.layout:
        return None
    folds = scale_folds.folds_scales
    if scales.type.dtype != result.dtype or not folds(source.dtype, result.dtype, 0):
        return None
    if not _whole_groups(source, result):
        return None
    below = value_bounds(lo).below(scales)
    if below is None or not folds(source.dtype, result.dtype, below):
        return None
    return scales


def _whole_groups(source: TileType, result: TileType) -> bool:
    """Whether a vector recipe converts every local: whole groups of packed codes, or
    8-bit integers one per byte."""
    elements, _ = dequant.group(source.dtype)
    bytewise = source.dtype.is_int and source.dtype.bits == 8
    return (is_packed(source.dtype) or bytewise) and result.layout.num_locals % elements == 0


def value_bounds(lo: Lowering) -> ValueBounds:
    """The function's value bounds (`analysis.value_bounds`), made on first use."""
    if lo.value_bounds is None:
        lo.value_bounds = ValueBounds(lo.fn)
    return lo.value_bounds


def proven_finite(lo: Lowering, value: ir.Value) -> bool:
    """Whether the value facts prove that no value of `value` is inf or NaN (a bound,
    or a "finite" fact carried to it: `ValueBounds.finite`)."""
    return isinstance(value, ir.Var) and value_bounds(lo).finite(value)


def _integer_magnitude(lo: Lowering, value: ir.Var) -> int | None:
    """The largest magnitude of a tile made by converting integers of a known type (a
    cast of an integer tile, through broadcasts); None for any other tile."""
    made = lo.producer.get(value)
    while isinstance(made, ir.Broadcast) and isinstance(made.value, ir.Var):
        made = lo.producer.get(made.value)
    if not isinstance(made, ir.Cast) or not isinstance(made.value.type, TileType):
        return None
    dtype = made.value.type.dtype
    if not dtype.is_int or dtype.bits > 16:
        return None
    return max(abs(dtype.min), abs(dtype.max))


def dequantize_vector(
    lo: Lowering,
    source: TileRegs,
    result: TileRegs,
    zeros: ir.Var | None = None,
    scales: ir.Var | ir.Const | None = None,
    finite: bool = False,
) -> int:
    """Casts whole groups of codes with the vector recipes; returns the first element
    left for the scalar path. The codes are each thread's locals in local order: packed
    codes in u32 words, or 8-bit integers one per byte, which are the same bytes.
    `zeros` (see `zero_point_of`): values of the result's type subtracted from it in
    the recipes' subtraction. `scales` (see `scale_of`): values of the result's type
    the recipes multiply by, folded into their last step. `finite` (`proven_finite`):
    no code is inf or NaN, the recipes leave their special-value steps out."""
    bytewise = not source.packed and source.dtype.is_int and source.dtype.bits == 8
    if result.dtype not in (dtypes.f16, dtypes.bf16, dtypes.f32) or not (source.packed or bytewise):
        return 0
    elements, words = dequant.group(source.dtype)
    count = result.layout.num_locals
    groups = count // elements
    if groups == 0:
        return 0
    out_per_word = 32 // result.dtype.bits
    subtract = None if zeros is None else zero_point_words(lo, zeros, result.dtype)
    scaling: TileScales | ConstScales | None = None
    if isinstance(scales, ir.Const):
        scaling = ConstScales(result.dtype, float(scales.value))
    elif scales is not None:
        scaling = TileScales(lo, scales, result.dtype)
    scratch = lo.b.local(U32, 1, "w")
    for g in range(groups):
        inputs = [code_word(lo, source, g * words + i, bytewise) for i in range(words)]
        positions = None
        if source.positions is not None:  # codes stored out of local order (within groups)
            first = g * elements
            positions = [p - first for p in source.positions[first : first + elements]]
        minus = None
        if subtract is not None:  # output word j of this group is word first + j
            first = g * elements // out_per_word
            minus = lambda j, constant, first=first: subtract(first + j, constant)  # noqa: E731
        group_scales = None
        if scaling is not None:
            group_scales = scaling.offset(g * elements // out_per_word)
            lo.b.count("dequant_scale_folded", elements)
        outputs, vectorized = dequant.dequantize_group(
            lo, inputs, source.dtype, result.dtype, positions, minus, group_scales, finite
        )
        lo.b.count("dequant_vector" if vectorized else "dequant_scalar", elements)
        if finite:
            lo.b.count("dequant_finite", elements)
        for j, word in enumerate(outputs):
            lo.b.emit(t.SetLocal(scratch, 0, word))
            byte = (g * elements + j * out_per_word) * result.dtype.bits // 8
            lo.b.emit(t.Move(t.Reg(result.local, byte), t.Reg(scratch, 0), 4))
    return groups * elements


def zero_point_words(lo: Lowering, zeros: ir.Var, dtype: DType) -> Callable[[int, t.Imm], t.Expr]:
    """``subtract(j, constant)``: the zero points of output word j (locals 2j, 2j+1)
    plus the recipe's constant, as an f16x2/bf16x2 word — computed once per distinct
    pair of zero points and constant. A broadcast zero-point tile (one row per group,
    the usual case) is read at its source, whose few distinct values each thread holds
    once, so the additions are per column, not per weight."""
    source, source_local = broadcast_source(lo, zeros)
    made_words: dict[tuple[int, int, int], t.Expr] = {}

    def subtract(j: int, constant: t.Imm) -> t.Expr:
        low, high = source_local[2 * j], source_local[2 * j + 1]
        key = (low, high, constant.value)
        if key not in made_words:
            held = lo.b.local(U32, 1, "z")
            for half, li in ((0, low), (1, high)):
                lo.b.emit(t.Move(t.Reg(held, 2 * half), t.Reg(source.local, 2 * li), 2))
            pair = lo.b.let(t.Read(held, 0, U32), "z")
            made_words[key] = lo.b.let(t.Pair("add", dtype, pair, constant), "z")
        return made_words[key]

    return subtract


def broadcast_source(lo: Lowering, value: ir.Var) -> tuple[TileRegs, list[int]]:
    """Where each local of the tile `value` is held: (tile, its local per local of
    `value`) — for a broadcast tile, also one reshaped after the broadcast (the scales
    of a k-tile of several groups), its source, whose few distinct values each thread
    holds once; else the tile itself."""
    tile = lo.tile(value)
    index_map = lambda table: table  # noqa: E731  (tile index -> index in `made`'s result)
    made = lo.producer.get(value)
    if isinstance(made, ir.Reshape) and isinstance(lo.value(made.value), TileRegs):
        shape, before = tile.layout.shape, made.value.type.shape

        def index_map(table, shape=shape, before=before):
            return np.stack(np.unravel_index(flat_indices(table, shape), before), axis=-1)

        made = lo.producer.get(made.value)
    if isinstance(made, ir.Broadcast) and isinstance(lo.value(made.value), TileRegs):
        before_tile = lo.tile(made.value)
        ones = [d for d, size in enumerate(before_tile.layout.shape) if size == 1]

        def table_map(table):
            out = index_map(table).copy()
            out[..., ones] = 0
            return out

        choice = relayout.register_map(before_tile, tile, table_map)
        if choice is not None:
            return before_tile, choice
    return tile, list(range(tile.layout.num_locals))


class TileScales:
    """The scales of a tile as f16x2/bf16x2 words for `dequant.dequantize_group`
    (`dequant.Scales`): the pair of scales of output word j (locals 2j, 2j+1) and its
    products with the recipe's constants, each made once per distinct pair of source
    locals (a broadcast scale tile is read at its source: per column per group, not
    per weight)."""

    def __init__(self, lo: Lowering, scales: ir.Var, dtype: DType, first: int = 0) -> None:
        self.lo, self.dtype, self.first = lo, dtype, first
        self.source, self.source_local = broadcast_source(lo, scales)
        self.words: dict[tuple, t.Expr] = {}

    def offset(self, first: int) -> TileScales:
        """The same scales seen from output word `first` (one group's words)."""
        view = TileScales.__new__(TileScales)
        view.__dict__.update(self.__dict__, first=first)  # shares the made words
        return view

    def _pair(self, j: int) -> tuple[int, int]:
        j += self.first
        return self.source_local[2 * j], self.source_local[2 * j + 1]

    def word(self, j: int) -> t.Expr:
        key = self._pair(j)
        if key not in self.words:
            held = self.lo.b.local(U32, 1, "s")
            for half, li in enumerate(key):
                self.lo.b.emit(t.Move(t.Reg(held, 2 * half), t.Reg(self.source.local, 2 * li), 2))
            self.words[key] = self.lo.b.let(t.Read(held, 0, U32), "s")
        return self.words[key]

    def times(self, j: int, constant: t.Imm) -> t.Expr:
        key = (*self._pair(j), constant.value)
        if key not in self.words:
            product = t.Pair("mul", self.dtype, self.word(j), constant)
            self.words[key] = self.lo.b.let(product, "s")
        return self.words[key]


class ConstScales:
    """A constant scale c for `dequant.dequantize_group` (`dequant.Scales`), folded into
    the recipes' constants at compile time (`scale_folds.folds_constant`: exact)."""

    def __init__(self, dtype: DType, value: float) -> None:
        self.dtype, self.value = dtype, value

    def offset(self, first: int) -> ConstScales:
        return self

    def word(self, j: int) -> t.Imm:
        return self._pair(self.value, self.value)

    def times(self, j: int, constant: t.Imm) -> t.Imm:
        halves = [(int(constant.value) >> shift) & 0xFFFF for shift in (0, 16)]
        low, high = (float(v) * self.value for v in self.dtype.decode(halves))
        return self._pair(low, high)

    def _pair(self, low: float, high: float) -> t.Imm:
        codes = [int(c) for c in self.dtype.encode([low, high])]
        return imm(codes[0] | codes[1] << 16, U32)


def code_word(lo: Lowering, source: TileRegs, word: int, bytewise: bool) -> t.Expr:
    """Word `word` (bytes 4·word ..) of a tile's codes, as a u32 value."""
    if not bytewise:
        return lo.b.let(t.Read(source.local, word, U32), "q")
    held = lo.b.local(U32, 1, "q")
    lo.b.emit(t.Move(t.Reg(held, 0), t.Reg(source.local, 4 * word), 4))
    return lo.b.let(t.Read(held, 0, U32), "q")
