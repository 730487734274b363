"""Lowering of tile creation and elementwise computation: `full`, `arange`, the
elementwise operators (`compute`) and `cast`, element by element in each thread's
registers; casts from low-bit types use the vector recipes of `dequant` per whole group
of codes, else the scalar fallback (both counted in the function's stats)."""

from __future__ import annotations

from collections.abc import Callable

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.types import ScalarType
from tilelang.lowering import dequant
from tilelang.lowering.context import Lowering, lowers
from tilelang.lowering.thread_builder import I32, U32, imm
from tilelang.lowering.values import (
    TileRegs,
    elementwise,
    encode_exact,
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
    result = lo.define_tile(instr.result)
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
        return dequant.encode_scalar(lo, value, dtype)
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
    result = lo.define_tile(instr.result)
    if source.dtype == result.dtype:
        lo.copy_tile(result, source)
        return
    start = dequantize_vector(lo, source, result)
    for li in range(start, result.layout.num_locals):
        cast_element(lo, source, result, li)


def cast_element(lo: Lowering, source: TileRegs, result: TileRegs, li: int) -> None:
    if source.dtype.is_float and is_packed(source.dtype) and not is_packed(result.dtype):
        lo.b.count("dequant_scalar")
        code = lo.get_code(source, li)
        value = dequant.decode_scalar(lo, code, source.dtype, result.dtype)
        lo.put(result, li, value)
        return
    lo.put(result, li, lo.convert(lo.get(source, li), result.dtype))


def dequantize_vector(lo: Lowering, source: TileRegs, result: TileRegs) -> int:
    """Casts whole groups of codes with the vector recipes; returns the first element
    left for the scalar path. The codes are each thread's locals in local order: packed
    codes in u32 words, or 8-bit integers one per byte, which are the same bytes."""
    bytewise = not source.packed and source.dtype.is_int and source.dtype.bits == 8
    if result.dtype not in (dtypes.f16, dtypes.bf16, dtypes.f32) or not (source.packed or bytewise):
        return 0
    elements, words = dequant.group(source.dtype)
    count = result.layout.num_locals
    groups = count // elements
    if groups == 0:
        return 0
    out_per_word = 32 // result.dtype.bits
    scratch = lo.b.local(U32, 1, "w")
    for g in range(groups):
        inputs = [code_word(lo, source, g * words + i, bytewise) for i in range(words)]
        positions = None
        if source.positions is not None:  # codes stored out of local order (within groups)
            first = g * elements
            positions = [p - first for p in source.positions[first : first + elements]]
        outputs, vectorized = dequant.dequantize_group(
            lo, inputs, source.dtype, result.dtype, positions
        )
        lo.b.count("dequant_vector" if vectorized else "dequant_scalar", elements)
        for j, word in enumerate(outputs):
            lo.b.emit(t.SetLocal(scratch, 0, word))
            byte = (g * elements + j * out_per_word) * result.dtype.bits // 8
            lo.b.emit(t.Move(t.Reg(result.local, byte), t.Reg(scratch, 0), 4))
    return groups * elements


def code_word(lo: Lowering, source: TileRegs, word: int, bytewise: bool) -> t.Expr:
    """Word `word` (bytes 4·word ..) of a tile's codes, as a u32 value."""
    if not bytewise:
        return lo.b.let(t.Read(source.local, word, U32), "q")
    held = lo.b.local(U32, 1, "q")
    lo.b.emit(t.Move(t.Reg(held, 0), t.Reg(source.local, 4 * word), 4))
    return lo.b.let(t.Read(held, 0, U32), "q")
