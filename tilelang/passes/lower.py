"""lower: block IR with layouts -> thread IR (DESIGN.md §6 step 9).

Assumes every register tile has a layout over `warps * 32` threads and that `Compute`
and `Cast` operands share their result's layout (the contract of `infer_layouts`);
uses the `vector` attribute of `vectorize` where present. Guarantees a thread-IR
function that `verify_thread_function` accepts and that means what the block IR means.

How tiles live in registers. A tile of layout L is one local per thread, holding the
thread's L.num_locals elements in local order. Types of 8, 16, 32 or 64 bits that are
register dtypes are stored as themselves; every other type (sub-byte integers and
floats, the f8 types) as packed codes in u32 words: element li at bits [li·b, (li+1)·b)
of the local's bytes, which is exactly how a packed tensor's bytes look, so runs of
codes move between memory and registers as raw bytes.

Instruction selection is layout division (`Layout.divisible_by`):

* `dot`: operands that divide by an mma atom's fragments become `Mma` statements, one per
  (m, n, k) block of the quotient layouts; anything else uses a generic dot through
  shared memory.
* `relayout` (and broadcast, reshape, transpose, view when the registers cannot
  simply be copied): the tile goes through a scratch area of shared memory, written
  row-major (16-byte chunks XOR-swizzled when rows are ≥ 128 bytes); the read is an
  `Ldmatrix` when the target layout divides by an ldmatrix layout.
* `load`/`store`: each thread's run of consecutive elements along the last dim moves
  with the widest accesses the `vector`/`align` attributes allow.
* `cast` from a low-bit type to f16/bf16/f32 uses the vector dequantization recipes of
  `tilelang.passes.dequant` per whole group of codes, else the scalar fallback (both
  counted in the function's stats).
* reductions and scans read the tile back from shared memory, each thread folding the
  elements of its outputs in index order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.atoms import LdmatrixAtom, MmaAtom, mma_atoms_for
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.ir.visit import walk
from tilelang.passes import dequant, plan_shared
from tilelang.passes.infer_layouts import blocked_layout
from tilelang.passes.thread_builder import I32, I64, U32, ThreadBuilder, imm

WARP = 32


class LoweringError(ValueError):
    """The lowering cannot express an instruction; the message starts with its location."""


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class TileRegs:
    """A register tile: the local holding each thread's elements."""

    local: str
    dtype: DType
    layout: Layout

    @property
    def packed(self) -> bool:
        return is_packed(self.dtype)


@dataclass(frozen=True)
class ScalarSlot:
    """A one-element local holding a runtime scalar that control flow assigns."""

    local: str
    dtype: DType  # the value dtype

    def read(self) -> t.Expr:
        stored = t.Read(self.local, 0, dtypes.u8 if self.dtype == dtypes.u1 else self.dtype)
        return t.Binary("ne", stored, imm(0, dtypes.u8)) if self.dtype == dtypes.u1 else stored


@dataclass(frozen=True)
class TensorInfo:
    param: str
    dtype: DType
    sizes: tuple[t.Expr, ...]  # i32
    strides: tuple[t.Expr, ...]  # i64, in elements


@dataclass(frozen=True)
class SharedTile:
    """A user shared tile: its byte offset in the shared buffer and its layout."""

    offset: int | t.Expr  # bytes; an expression for a slice at a runtime index
    dtype: DType
    layout: SharedLayout

    @property
    def shape(self) -> tuple[int, ...]:
        return self.layout.shape


def is_packed(dtype: DType) -> bool:
    return dtype not in t.REGISTER_DTYPES or dtype == dtypes.u1


def storage_of(dtype: DType, count: int) -> tuple[DType, int]:
    """The local dtype and element count that hold `count` elements of `dtype`."""
    if is_packed(dtype):
        return U32, max(1, math.ceil(count * dtype.bits / 32))
    return dtype, count


def value_dtype(dtype: DType) -> DType:
    """The register dtype computations on `dtype` values happen in."""
    if not is_packed(dtype):
        return dtype
    if dtype == dtypes.u1:
        return dtypes.u1
    if dtype.is_float:
        return dtypes.f32
    return dtypes.i32 if dtype.signed else U32


def element_bytes(dtype: DType) -> int:
    """Bytes of one element in a scratch area (values of packed types widen)."""
    v = value_dtype(dtype)
    return 1 if v == dtypes.u1 else v.bits // 8


# --------------------------------------------------------------------------- entry point


def lower(fn: ir.Function) -> t.ThreadFunction:
    return _Lowering(fn).run()


class _Lowering:
    def __init__(self, fn: ir.Function) -> None:
        self.fn = fn
        self.threads = fn.warps * WARP
        names = {v.name for v in (*fn.params, *fn.sizes)}
        self.b = ThreadBuilder(names)
        self.env: dict[ir.Var, object] = {}
        self.thread_parts: dict[tuple[Layout, str], tuple[t.Expr, ...]] = {}
        self.prologue: list[t.Stmt] = []
        self.grid: tuple[t.Expr, ...] = ()
        self.inline: dict[ir.Var, t.Expr] = {}
        self.shared_top = 0
        self.scratch_bytes = 0
        self.current_defs: list[set[ir.Var]] = []
        self.stored: set[ir.Var] = set()  # tensors stored to by what was lowered so far
        self.loop_stores: list[set[ir.Var]] = []  # tensors stored in each enclosing loop
        self.touched: set[ir.Var] = set()  # tensors loaded or stored so far
        self.loop_touched: list[set[ir.Var]] = []  # tensors accessed in each enclosing loop
        self.aliased: set[str] = set()
        self.last_use: dict[ir.Var, ir.Instr] = {}
        for instr in walk(fn):
            for v in instr.uses():
                if isinstance(v, ir.Var):
                    self.last_use[v] = instr

    # -- driver ------------------------------------------------------------------------

    def run(self) -> t.ThreadFunction:
        params = []
        for var in self.fn.params:
            if isinstance(var.type, TensorType):
                params.append(t.Param(var.name, var.type.dtype, True))
            else:
                params.append(t.Param(var.name, var.type.dtype, False))
                self.bind_scalar(var, t.Name(var.name, var.type.dtype))
        for var in self.fn.sizes:
            params.append(t.Param(var.name, var.type.dtype, False))
            self.bind_scalar(var, t.Name(var.name, var.type.dtype))
        for var in self.fn.params:
            if isinstance(var.type, TensorType):
                self.env[var] = self.tensor_info(var)
        self.shared_top = _align(plan_shared.total_bytes(self.fn), 16)
        self.block(self.fn.body)
        body = tuple(self.prologue) + tuple(self.b.bodies[0])
        return t.ThreadFunction(
            name=self.fn.name,
            params=tuple(params),
            threads=self.threads,
            grid=self.grid or (imm(1),),
            shared_bytes=_align(self.shared_top + self.scratch_bytes, 16),
            locals=tuple(self.b.locals),
            body=body,
            stats=tuple(sorted(self.b.stats.items())),
        )

    def fail(self, instr: ir.Instr, message: str) -> LoweringError:
        return LoweringError(f"{instr.loc}: {message}")

    def block(self, block: ir.Block) -> tuple[object, ...] | None:
        for instr in block.instrs:
            if isinstance(instr, ir.Yield):
                return tuple(self.value(v) for v in instr.values)
            handler = getattr(self, "lower_" + type(instr).__name__, None)
            if handler is None:
                raise self.fail(instr, f"the lowering does not support {type(instr).__name__} yet")
            handler(instr)
        return None

    # -- scalars -----------------------------------------------------------------------

    def bind_scalar(self, var: ir.Var, expr: t.Expr, inline: t.Expr | None = None) -> None:
        self.env[var] = expr
        self.inline[var] = inline if inline is not None else expr

    def value(self, v: ir.Value) -> object:
        if isinstance(v, ir.Const):
            return imm(v.value, v.dtype)
        return self.env[v]

    def scalar(self, v: ir.Value) -> t.Expr:
        if isinstance(v, ir.Const):
            dtype = value_dtype(v.dtype)
            if v.dtype.is_float and is_packed(v.dtype):
                # the constant is a value of its dtype: round it as the interpreter does
                exact = v.dtype.decode(v.dtype.encode(np.asarray([float(v.value)])))[0]
                return imm(float(exact), dtype)
            value = float(v.value) if dtype.is_float else int(v.value)
            return imm(value, dtype)
        found = self.env[v]
        assert isinstance(found, t.Expr), v
        return found

    def inline_scalar(self, v: ir.Value) -> t.Expr:
        return self.scalar(v) if isinstance(v, ir.Const) else self.inline[v]

    def shape_expr(self, e: ShapeExpr, dtype: DType) -> t.Expr:
        if isinstance(e, Lit):
            return imm(e.value, dtype)
        if isinstance(e, Sym):
            size = next(v for v in self.fn.sizes if v.name == e.name)
            return self.b.cvt(self.scalar(size), dtype)
        assert isinstance(e, BinOp)
        op = {"+": "add", "-": "sub", "*": "mul", "//": "div", "%": "rem"}[e.op]
        return self.b.binary(op, self.shape_expr(e.lhs, dtype), self.shape_expr(e.rhs, dtype))

    def tensor_info(self, var: ir.Var) -> TensorInfo:
        assert isinstance(var.type, TensorType)
        sizes = tuple(self.shape_expr(d, I32) for d in var.type.shape)
        strides: list[t.Expr] = []
        stride: t.Expr = imm(1, I64)
        for d in reversed(var.type.shape):
            strides.append(stride)
            stride = self.b.mul(stride, self.shape_expr(d, I64))
        lets = [self.b.let(s, "stride") for s in reversed(strides)]
        return TensorInfo(var.name, var.type.dtype, sizes, tuple(lets))

    def lower_Blocks(self, instr: ir.Blocks) -> None:
        self.grid = tuple(self.b.cvt(self.inline_scalar(s), I32) for s in instr.sizes)
        for axis, var in enumerate(instr.results):
            self.bind_scalar(var, t.BlockIndex(axis))

    # -- tiles: allocation, element access ---------------------------------------------

    def new_tile(self, var: ir.Var, hint: str = "r") -> TileRegs:
        type_ = var.type
        assert isinstance(type_, TileType) and type_.layout is not None, var
        if type_.layout.num_threads != self.threads:
            raise LoweringError(
                f"%{var.name}: its layout spans {type_.layout.num_threads} threads, the block has "
                f"{self.threads}"
            )
        storage, count = storage_of(type_.dtype, type_.layout.num_locals)
        local = self.b.local(storage, count, hint)
        return TileRegs(local, type_.dtype, type_.layout)

    def define_tile(self, var: ir.Var, hint: str = "r") -> TileRegs:
        tile = self.new_tile(var, hint)
        self.env[var] = tile
        return tile

    def tile(self, v: ir.Value) -> TileRegs:
        found = self.env[v]
        assert isinstance(found, TileRegs), v
        return found

    def get(self, tile: TileRegs, li: int) -> t.Expr:
        """Element `li` of this thread's part of `tile`, as a value of `value_dtype`."""
        if not tile.packed:
            return t.Read(tile.local, li, tile.dtype)
        code = self.get_code(tile, li)
        return self.code_to_value(code, tile.dtype)

    def code_to_value(self, code: t.Expr, dtype: DType) -> t.Expr:
        if dtype == dtypes.u1:
            return t.Binary("ne", code, imm(0, U32))
        if dtype.is_float:
            return dequant.decode_scalar(self, code, dtype, dtypes.f32)
        if dtype.signed:
            shift = imm(32 - dtype.bits, U32)
            return t.Binary("shr", t.Bitcast(t.Binary("shl", code, shift), I32), shift)
        return code

    def get_code(self, tile: TileRegs, li: int) -> t.Expr:
        bits = tile.dtype.bits
        first, shift = divmod(li * bits, 32)
        word = t.Read(tile.local, first, U32)
        code = self.b.binary("shr", word, imm(shift, U32)) if shift else word
        if shift + bits > 32:
            high = t.Read(tile.local, first + 1, U32)
            code = t.Binary("or", code, t.Binary("shl", high, imm(32 - shift, U32)))
        if bits < 32:
            code = t.Binary("and", code, imm((1 << bits) - 1, U32))
        return code

    def put(self, tile: TileRegs, li: int, value: t.Expr) -> None:
        """Element `li` becomes `value` (a `value_dtype` value; packed types re-encode)."""
        if not tile.packed:
            self.b.emit(t.SetLocal(tile.local, li, value))
            return
        dtype = tile.dtype
        if dtype == dtypes.u1:
            code = t.Select(value, imm(1, U32), imm(0, U32))
        elif dtype.is_float:
            code = dequant.encode_scalar(self, value, dtype)
        else:
            code = t.Bitcast(value, U32) if value.dtype == I32 else self.b.cvt(value, U32)
        self.put_code(tile, li, code)

    def put_code(self, tile: TileRegs, li: int, code: t.Expr) -> None:
        bits = tile.dtype.bits
        mask = (1 << bits) - 1
        code = self.b.let(t.Binary("and", code, imm(mask, U32)) if bits < 32 else code, "code")
        first, shift = divmod(li * bits, 32)
        pieces = [(first, shift, 0)]
        if shift + bits > 32:
            pieces.append((first + 1, 0, 32 - shift))
        for word, at, dropped in pieces:
            part = (
                self.b.binary("shl", code, imm(at, U32))
                if not dropped
                else t.Binary("shr", code, imm(dropped, U32))
            )
            keep = ~((mask >> dropped) << at) & 0xFFFFFFFF
            old = t.Read(tile.local, word, U32)
            self.b.emit(
                t.SetLocal(
                    tile.local, word, t.Binary("or", t.Binary("and", old, imm(keep, U32)), part)
                )
            )

    # dequant's Emit protocol
    def let(self, value: t.Expr, hint: str = "t") -> t.Expr:
        return self.b.let(value, hint)

    # -- index arithmetic from layouts -------------------------------------------------

    def thread_part(self, layout: Layout, lanes_only: bool = False) -> tuple[t.Expr, ...]:
        """Per dim, the tile index's thread component for this thread (bound once)."""
        key = (layout, "lane" if lanes_only else "thread")
        if key not in self.thread_parts:
            self.thread_parts[key] = self._thread_part(layout, t.ThreadIndex())
        return self.thread_parts[key]

    def _thread_part(self, layout: Layout, thread: t.Expr) -> tuple[t.Expr, ...]:
        sizes, dims = layout.mode_sizes, layout.mode_dims
        dim_stride = _dim_strides(layout)
        parts: list[t.Expr] = [imm(0) for _ in range(layout.rank)]
        stride = 1
        b = self.b
        for mode in reversed(layout.thread_modes):
            size = mode.size if isinstance(mode, Rep) else sizes[mode]
            if not isinstance(mode, Rep) and size > 1:
                digit = b.binary("rem", b.binary("div", thread, imm(stride)), imm(size))
                d = dims[mode]
                parts[d] = b.add(parts[d], b.mul(digit, imm(dim_stride[mode])))
            stride *= size
        bound = []
        for part in parts:
            if isinstance(part, t.Imm):
                bound.append(part)
            else:
                name = t.Name(b.fresh("tp"), I32)
                self.prologue.append(t.Let(name, part))
                bound.append(name)
        return tuple(bound)

    def prologue_let(self, value: t.Expr, hint: str) -> t.Expr:
        """`value` (a function of the thread index only) bound once, at the top."""
        if isinstance(value, t.Imm | t.Name | t.ThreadIndex):
            return value
        for stmt in self.prologue:
            if isinstance(stmt, t.Let) and stmt.value == value:
                return stmt.name
        name = t.Name(self.b.fresh(hint), value.dtype)
        self.prologue.append(t.Let(name, value))
        return name

    def replica_zero(self, layout: Layout) -> t.Expr | None:
        """u1: this thread is the first of the threads that hold the same elements."""
        conds = []
        stride = 1
        for mode in reversed(layout.thread_modes):
            size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
            if isinstance(mode, Rep) and size > 1:
                digit = self.b.binary(
                    "rem", self.b.binary("div", t.ThreadIndex(), imm(stride)), imm(size)
                )
                conds.append(t.Binary("eq", digit, imm(0)))
            stride *= size
        return self.b.all_of(conds)

    def index(self, layout: Layout, li: int) -> tuple[t.Expr, ...]:
        """The tile index of this thread's element `li`."""
        local = _local_part(layout, li)
        return tuple(
            self.b.add(p, imm(c)) for p, c in zip(self.thread_part(layout), local, strict=True)
        )

    # -- creation ----------------------------------------------------------------------

    def lower_Full(self, instr: ir.Full) -> None:
        if isinstance(instr.result.type, ScalarType):
            value = self.b.cvt(self.scalar(instr.value), instr.result.type.dtype)
            self.bind_scalar(instr.result, self.b.let(value, instr.result.name))
            return
        tile = self.define_tile(instr.result)
        value = self.b.let(self.convert(self.scalar(instr.value), tile.dtype), "fill")
        for li in range(tile.layout.num_locals):
            self.put(tile, li, value)

    def lower_Arange(self, instr: ir.Arange) -> None:
        tile = self.define_tile(instr.result)
        for li in range(tile.layout.num_locals):
            (i,) = self.index(tile.layout, li)
            self.put(tile, li, self.convert(self.b.add(i, imm(instr.start)), tile.dtype))

    def convert(self, value: t.Expr, dtype: DType) -> t.Expr:
        """`value` (a register dtype) converted by the casting policy to `dtype`'s value
        dtype (for packed types: saturated into the type's range, encoded later)."""
        target = value_dtype(dtype)
        if dtype == dtypes.u1 and value.dtype == dtypes.u1:
            return value
        if dtype.is_int and is_packed(dtype):
            if value.dtype.is_float:  # round to nearest even and saturate, NaN -> 0
                value = self.b.cvt(value, dtypes.i64 if value.dtype.bits == 64 else I32)
            elif value.dtype == dtypes.u1:
                value = self.b.cvt(value, U32)
            wide = value if value.dtype in (I32, U32) else None
            if wide is None or (value.dtype == U32 and dtype.signed):
                wide = self.b.cvt(value, dtypes.i64)
            low, high = imm(dtype.min, wide.dtype), imm(dtype.max, wide.dtype)
            clamped = t.Binary("min", t.Binary("max", wide, low), high)
            if dtype == dtypes.u1:
                return t.Binary("ne", clamped, imm(0, clamped.dtype))
            return self.b.cvt(clamped, target)
        if dtype.is_float and is_packed(dtype):
            # a value of the small type: rounded to it once, held exactly as f32
            source = value if value.dtype.is_float else self.b.cvt(value, dtypes.f64)
            code = self.b.let(dequant.encode_scalar(self, source, dtype), "code")
            return dequant.decode_scalar(self, code, dtype, dtypes.f32)
        return self.b.cvt(value, target)

    # -- elementwise -------------------------------------------------------------------

    def lower_Compute(self, instr: ir.Compute) -> None:
        if isinstance(instr.result.type, ScalarType):
            args = [self.scalar(a) for a in instr.args]
            expr = _elementwise(instr.op, args)
            self.bind_scalar(
                instr.result,
                self.b.let(expr, instr.result.name),
                _elementwise(instr.op, [self.inline_scalar(a) for a in instr.args]),
            )
            return
        result = self.define_tile(instr.result)
        if instr.op == "where" and result.packed:
            self.select_codes(instr, result)
            return
        operands = [self.operand(a) for a in instr.args]
        for li in range(result.layout.num_locals):
            args = [op(li) for op in operands]
            self.put(result, li, _elementwise(instr.op, args))

    def select_codes(self, instr: ir.Compute, result: TileRegs) -> None:
        """`where` on a packed type picks codes, so the chosen data keeps its bits."""
        cond = self.operand(instr.args[0])
        choices = []
        for v in instr.args[1:]:
            found = self.value(v)
            if isinstance(found, TileRegs):
                choices.append(lambda li, tile=found: self.get_code(tile, li))
            else:
                code = self.b.let(self.scalar_code(v, result.dtype), "code")
                choices.append(lambda li, code=code: code)
        for li in range(result.layout.num_locals):
            picked = t.Select(cond(li), choices[0](li), choices[1](li))
            self.put_code(result, li, picked)

    def scalar_code(self, v: ir.Value, dtype: DType) -> t.Expr:
        """The u32 code of a scalar of a packed dtype."""
        if isinstance(v, ir.Const):
            return imm(
                int(_encode_exact(dtype, float(v.value) if dtype.is_float else v.value)), U32
            )
        value = self.scalar(v)
        if dtype.is_float:
            return dequant.encode_scalar(self, value, dtype)
        return t.Binary(
            "and",
            t.Bitcast(value, U32) if value.dtype == I32 else value,
            imm((1 << dtype.bits) - 1, U32),
        )

    def operand(self, v: ir.Value) -> Callable[[int], t.Expr]:
        found = self.value(v)
        if isinstance(found, TileRegs):
            return lambda li: self.get(found, li)
        scalar = self.scalar(v)
        return lambda li: scalar

    def lower_Cast(self, instr: ir.Cast) -> None:
        if isinstance(instr.result.type, ScalarType):
            value = self.convert(self.scalar(instr.value), instr.result.type.dtype)
            self.bind_scalar(instr.result, self.b.let(value, instr.result.name))
            return
        source = self.tile(instr.value)
        result = self.define_tile(instr.result)
        if source.dtype == result.dtype:
            self.copy_tile(result, source)
            return
        start = self.dequantize_vector(source, result)
        for li in range(start, result.layout.num_locals):
            self.cast_element(source, result, li)

    def cast_element(self, source: TileRegs, result: TileRegs, li: int) -> None:
        if source.dtype.is_float and is_packed(source.dtype) and not is_packed(result.dtype):
            self.b.count("dequant_scalar")
            code = self.get_code(source, li)
            value = dequant.decode_scalar(self, code, source.dtype, result.dtype)
            self.put(result, li, value)
            return
        self.put(result, li, self.convert(self.get(source, li), result.dtype))

    def dequantize_vector(self, source: TileRegs, result: TileRegs) -> int:
        """Casts whole groups of codes with the vector recipes; returns the first element
        left for the scalar path."""
        if result.dtype not in (dtypes.f16, dtypes.bf16, dtypes.f32) or not source.packed:
            return 0
        elements, words = dequant.group(source.dtype)
        count = result.layout.num_locals
        groups = count // elements
        if groups == 0:
            return 0
        out_per_word = 32 // result.dtype.bits
        scratch = self.b.local(U32, 1, "w")
        for g in range(groups):
            inputs = [
                self.b.let(t.Read(source.local, g * words + i, U32), "q") for i in range(words)
            ]
            outputs, vectorized = dequant.dequantize_group(self, inputs, source.dtype, result.dtype)
            self.b.count("dequant_vector" if vectorized else "dequant_scalar", elements)
            for j, word in enumerate(outputs):
                self.b.emit(t.SetLocal(scratch, 0, word))
                byte = (g * elements + j * out_per_word) * result.dtype.bits // 8
                self.b.emit(t.Move(t.Reg(result.local, byte), t.Reg(scratch, 0), 4))
        return groups * elements

    def copy_tile(self, dst: TileRegs, src: TileRegs) -> None:
        nbytes = self.local_bytes(src)
        for offset, width in _pieces(0, nbytes):
            self.b.emit(t.Move(t.Reg(dst.local, offset), t.Reg(src.local, offset), width))

    def local_bytes(self, tile: TileRegs) -> int:
        storage, count = storage_of(tile.dtype, tile.layout.num_locals)
        return count * storage.bits // 8

    # -- global memory -----------------------------------------------------------------

    def access_runs(self, instr: ir.Instr, tile: TileRegs) -> int:
        """Elements per access: the run `vectorize` proved (`elems`) when it is whole
        bytes, else one (elements of packed types then move bit by bit)."""
        elems = instr.attr("elems")
        if not isinstance(elems, int) or elems <= 1 or tile.layout.num_locals % elems:
            return 1
        return elems if elems * tile.dtype.bits % 8 == 0 else 1

    def element_place(self, info: TensorInfo, offsets: Sequence[t.Expr], index: Sequence[t.Expr]):
        """(in-bounds predicate, flat element offset i64) of a tile element."""
        b = self.b
        conds, flat = [], imm(0, I64)
        for off, i, size, stride in zip(offsets, index, info.sizes, info.strides, strict=True):
            g = b.add(off, i)
            if not (isinstance(g, t.Imm) and isinstance(size, t.Imm) and 0 <= g.value < size.value):
                conds.append(t.Binary("lt", t.Bitcast(g, U32), t.Bitcast(size, U32)))
            flat = b.add(flat, b.mul(b.cvt(g, I64), stride))
        return b.all_of(conds), flat

    def order_global(self, tensor: ir.Var, store: bool) -> None:
        """A barrier where the block IR's order of a tensor's accesses could be lost
        between threads: before a load of a tensor the block may have stored to, and
        before a store to a tensor the block may have read or stored (the block IR is
        sequential; another thread may touch the same elements)."""
        earlier = self.touched if store else self.stored
        in_loop = self.loop_touched if store else self.loop_stores
        if tensor in earlier or any(tensor in accessed for accessed in in_loop):
            self.b.emit(t.Barrier())
            self.b.count("global_order_barrier")

    def lower_Load(self, instr: ir.Load) -> None:
        info = self.env[instr.tensor]
        assert isinstance(info, TensorInfo)
        self.order_global(instr.tensor, store=False)
        self.touched.add(instr.tensor)
        tile = self.define_tile(instr.result)
        offsets = [self.scalar(o) for o in instr.offsets]
        run = self.access_runs(instr, tile)
        align = instr.attr("align")
        bits = tile.dtype.bits
        fill = self.fill_value(instr, tile.dtype)
        for li in range(0, tile.layout.num_locals, run):
            pred, flat = self.element_place(info, offsets, self.index(tile.layout, li))
            pred = self.b.let(pred, "p") if pred is not None else None
            if pred is not None:
                for i in range(li, li + run):
                    self.put(tile, i, fill)
            if run * bits % 8 == 0 and (li * bits) % 8 == 0:
                byte = self.b.let(_byte_offset(self.b, flat, bits), "off")
                limit = align if isinstance(align, int) and run > 1 else None
                for at, width in _pieces(0, run * bits // 8, limit):
                    self.b.emit(
                        t.GlobalLoad(
                            t.Reg(tile.local, li * bits // 8 + at),
                            width,
                            info.param,
                            self.b.add(byte, imm(at, I64)),
                            pred,
                        )
                    )
                self.b.count("global_load_bytes_" + str(min(run * bits // 8, 16)))
            else:
                self.load_sub_byte(info, tile, li, flat, pred)

    def fill_value(self, instr: ir.Load, dtype: DType) -> t.Expr:
        if instr.fill is None:
            return self.convert(imm(0, I32), dtype)
        return self.convert(self.scalar(instr.fill), dtype)

    def byte_window(self, info: TensorInfo, bits: int, flat: t.Expr, pred):
        """Reads the one or two bytes that hold element `flat` of a packed tensor (the
        second only when the code crosses into it): (the 2-byte local, the byte offset,
        the code's bit shift in the window, the second byte's predicate, the window as a
        u32)."""
        b = self.b
        bit = b.let(b.mul(flat, imm(bits, I64)), "bit")
        byte = b.let(t.Binary("shr", bit, imm(3, I64)), "off")
        shift = b.let(b.cvt(t.Binary("and", bit, imm(7, I64)), U32), "sh")
        pair = b.local(dtypes.u8, 2, "b")
        needs_next = t.Binary("gt", t.Binary("add", shift, imm(bits, U32)), imm(8, U32))
        second = b.let(needs_next if pred is None else t.Binary("and", pred, needs_next), "p")
        b.emit(t.SetLocal(pair, 1, imm(0, dtypes.u8)))
        b.emit(t.GlobalLoad(t.Reg(pair, 0), 1, info.param, byte, pred))
        b.emit(t.GlobalLoad(t.Reg(pair, 1), 1, info.param, b.add(byte, imm(1, I64)), second))
        window = t.Binary(
            "or",
            b.cvt(t.Read(pair, 0, dtypes.u8), U32),
            t.Binary("shl", b.cvt(t.Read(pair, 1, dtypes.u8), U32), imm(8, U32)),
        )
        return pair, byte, shift, second, window

    def load_sub_byte(self, info, tile: TileRegs, li: int, flat: t.Expr, pred) -> None:
        """One element of a packed type whose bits start inside a byte."""
        bits = tile.dtype.bits
        _, _, shift, _, window = self.byte_window(info, bits, flat, pred)
        code = t.Binary("and", t.Binary("shr", window, shift), imm((1 << bits) - 1, U32))
        if pred is not None:
            code = t.Select(pred, code, self.get_code(tile, li))
        self.put_code(tile, li, code)
        self.b.count("global_load_sub_byte")

    def lower_Store(self, instr: ir.Store) -> None:
        info = self.env[instr.tensor]
        assert isinstance(info, TensorInfo)
        self.order_global(instr.tensor, store=True)
        self.stored.add(instr.tensor)
        self.touched.add(instr.tensor)
        tile = self.tile(instr.value)
        offsets = [self.scalar(o) for o in instr.offsets]
        run = self.access_runs(instr, tile)
        align = instr.attr("align")
        bits = tile.dtype.bits
        first = self.replica_zero(tile.layout)
        for li in range(0, tile.layout.num_locals, run):
            if run * bits % 8 or (li * bits) % 8:
                pred, flat = self.element_place(info, offsets, self.index(tile.layout, li))
                pred = self.b.all_of([c for c in (pred, first) if c is not None])
                self.store_sub_byte(info, tile, li, flat, pred)
                continue
            pred, flat = self.element_place(info, offsets, self.index(tile.layout, li))
            pred = self.b.all_of([c for c in (pred, first) if c is not None])
            pred = self.b.let(pred, "p") if pred is not None else None
            byte = self.b.let(_byte_offset(self.b, flat, bits), "off")
            limit = align if isinstance(align, int) and run > 1 else None
            for at, width in _pieces(0, run * bits // 8, limit):
                self.b.emit(
                    t.GlobalStore(
                        info.param,
                        self.b.add(byte, imm(at, I64)),
                        t.Reg(tile.local, li * bits // 8 + at),
                        width,
                        pred,
                    )
                )

    def store_sub_byte(self, info, tile: TileRegs, li: int, flat: t.Expr, pred) -> None:
        """One element of a packed type into the byte(s) it shares with its neighbours:
        read, merge, write back. Exact here, where threads run one after another; a
        GPU emitter must make the merge atomic (counted as `global_store_sub_byte`)."""
        b = self.b
        bits = tile.dtype.bits
        pair, byte, shift, second, window = self.byte_window(info, bits, flat, pred)
        mask = t.Binary("shl", imm((1 << bits) - 1, U32), shift)
        kept = t.Binary("and", window, t.Unary("not", mask))
        merged = b.let(t.Binary("or", kept, t.Binary("shl", self.get_code(tile, li), shift)), "m")
        for i in range(2):
            part = t.Binary("and", t.Binary("shr", merged, imm(8 * i, U32)), imm(255, U32))
            b.emit(t.SetLocal(pair, i, t.Cvt(part, dtypes.u8)))
        b.emit(t.GlobalStore(info.param, byte, t.Reg(pair, 0), 1, pred))
        b.emit(t.GlobalStore(info.param, b.add(byte, imm(1, I64)), t.Reg(pair, 1), 1, second))
        b.count("global_store_sub_byte")

    # -- moving a tile through shared memory -------------------------------------------

    def scratch(self, nbytes: int) -> int:
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        return self.shared_top

    def scratch_address(self, base: int, shape: tuple[int, ...], elem: int, index) -> t.Expr:
        """Shared byte address of a tile index in a row-major scratch tile; rows of a
        multiple of 128 bytes swizzle their 16-byte chunks by the row (bank conflicts)."""
        b = self.b
        row_bytes = shape[-1] * elem
        row = imm(0)
        for size, i in zip(shape[:-1], index[:-1], strict=True):
            row = b.add(b.mul(row, imm(size)), i)
        col = b.mul(index[-1], imm(elem))
        if row_bytes % 128 == 0:
            chunk = t.Binary("xor", b.binary("div", col, imm(16)), b.binary("rem", row, imm(8)))
            col = b.add(b.mul(chunk, imm(16)), b.binary("rem", col, imm(16)))
        return b.add(imm(base), b.add(b.mul(row, imm(row_bytes)), col))

    def write_scratch(self, tile: TileRegs, base: int, codes: bool = False) -> None:
        """Every element of `tile` into the row-major scratch tile at `base` (one replica
        writes): values of `value_dtype`, or with `codes` a packed tile's codes as u32
        (data that only moves keeps its exact bits)."""
        shape = tile.layout.shape
        elem = 4 if codes and tile.packed else element_bytes(tile.dtype)
        run = _run_length(tile.layout) if not tile.packed else 1
        run &= -run  # accesses are 1, 2, 4, 8 or 16 bytes: a power of two of elements
        while run > 1 and (run * elem > 16 or tile.layout.num_locals % run):
            run //= 2
        first = self.replica_zero(tile.layout)
        first = self.b.let(first, "p") if first is not None else None
        value_local = None
        for li in range(0, tile.layout.num_locals, run):
            address = self.b.let(
                self.scratch_address(base, shape, elem, self.index(tile.layout, li)), "sa"
            )
            if tile.packed and codes:
                value_local = value_local or self.b.local(U32, 1, "v")
                self.b.emit(t.SetLocal(value_local, 0, self.get_code(tile, li)))
                src = t.Reg(value_local, 0)
            elif tile.packed:
                value_local = value_local or self.b.local(value_dtype_storage(tile.dtype), 1, "v")
                self.b.emit(t.SetLocal(value_local, 0, _as_storage(self.get(tile, li))))
                src = t.Reg(value_local, 0)
            else:
                src = t.Reg(tile.local, li * elem)
            self.b.emit(t.SharedStore(address, src, run * elem, first))

    def read_scratch(self, tile: TileRegs, base: int, source_index, codes: bool = False) -> None:
        """Every element of `tile` from the scratch tile (element `source_index(index)`)."""
        elem = 4 if codes and tile.packed else element_bytes(tile.dtype)
        shape = tile.layout.shape if source_index is None else None
        value_local = None
        for li in range(tile.layout.num_locals):
            index = self.index(tile.layout, li)
            src_index, src_shape = source_index(index) if source_index else (index, shape)
            address = self.scratch_address(base, src_shape, elem, src_index)
            if tile.packed and codes:
                value_local = value_local or self.b.local(U32, 1, "v")
                self.b.emit(t.SharedLoad(t.Reg(value_local, 0), elem, address))
                self.put_code(tile, li, t.Read(value_local, 0, U32))
            elif tile.packed:
                value_local = value_local or self.b.local(value_dtype_storage(tile.dtype), 1, "v")
                self.b.emit(t.SharedLoad(t.Reg(value_local, 0), elem, address))
                stored = t.Read(value_local, 0, value_dtype_storage(tile.dtype))
                self.put(tile, li, _from_storage(stored, tile.dtype))
            else:
                self.b.emit(t.SharedLoad(t.Reg(tile.local, li * elem), elem, address))

    def through_shared(self, src: TileRegs, dst: TileRegs, source_index=None) -> None:
        """`dst[i] = src[source_index(i)]` (same dtype) through the scratch area; packed
        tiles move as codes."""
        codes = src.packed
        elem = 4 if codes else element_bytes(src.dtype)
        base = self.scratch(math.prod(src.layout.shape) * elem)
        self.b.emit(t.Barrier())
        self.write_scratch(src, base, codes)
        self.b.emit(t.Barrier())
        shape = src.layout.shape
        address = lambda index: self.scratch_address(base, shape, 2, index)  # noqa: E731
        if source_index is None and self.try_ldmatrix(dst, address):
            return
        shape = src.layout.shape
        self.read_scratch(
            dst,
            base,
            (lambda i: (source_index(i), shape)) if source_index else (lambda i: (i, shape)),
            codes,
        )
        self.b.count("shared_relayout")

    def try_ldmatrix(self, dst: TileRegs, address, shared: SharedTile | None = None) -> bool:
        """Reads `dst` with ldmatrix when its layout divides by an ldmatrix layout;
        `address(index)` is the shared byte address of a tile index, and each 8-element
        row must be 16 contiguous bytes there."""
        if dst.dtype.bits != 16 or dst.packed or dst.layout.rank != 2:
            return False
        if shared is not None and _contiguous_elements(shared.layout) % 8:
            return False
        for atom in _LDMATRIX_CANDIDATES:
            if not dst.layout.divisible_by(atom.layout):
                continue
            quotient = dst.layout / atom.layout
            if dst.layout.shape[-1] * 2 % 16:
                continue
            self.emit_ldmatrix(dst, address, atom, quotient)
            return True
        return False

    def emit_ldmatrix(
        self, dst: TileRegs, address_of, atom: LdmatrixAtom, quotient: Layout
    ) -> None:
        b = self.b
        lane = self.prologue_let(t.Binary("rem", t.ThreadIndex(), imm(WARP)), "lane")
        warp = self.prologue_let(t.Binary("div", t.ThreadIndex(), imm(WARP)), "warp")
        grid_rows = atom.grid[0]
        matrix = b.binary("rem", b.binary("div", lane, imm(8)), imm(atom.num))
        row_in_atom = self.prologue_let(
            b.add(
                b.mul(b.binary("rem", matrix, imm(grid_rows)), imm(8)),
                b.binary("rem", lane, imm(8)),
            ),
            "lr",
        )
        col_in_atom = self.prologue_let(
            b.mul(b.binary("div", matrix, imm(grid_rows)), imm(8)), "lc"
        )
        key = (quotient, "warp")
        if key not in self.thread_parts:
            self.thread_parts[key] = self._thread_part(quotient, warp)
        block_part = self.thread_parts[key]
        atom_rows, atom_cols = atom.layout.shape
        per_block = atom.layout.num_locals
        for q in range(quotient.num_locals):
            local = _local_part(quotient, q)
            row = b.add(b.mul(b.add(block_part[0], imm(local[0])), imm(atom_rows)), row_in_atom)
            col = b.add(b.mul(b.add(block_part[1], imm(local[1])), imm(atom_cols)), col_in_atom)
            address = address_of((row, col))
            b.emit(
                t.Ldmatrix(
                    atom.num, atom.trans, t.Reg(dst.local, q * per_block * 2), b.let(address, "la")
                )
            )
            b.count("ldmatrix")

    def register_map(self, src: TileRegs, dst: TileRegs, source_index_table) -> list[int] | None:
        """For each local of `dst`, the local of `src` the same thread holds its source
        element in (the same for every thread), or None when some thread lacks it."""
        src_table = src.layout.table()
        dst_table = dst.layout.table()
        wanted = source_index_table(dst_table)  # [T, N_dst, rank_src]
        shape = src.layout.shape
        src_flat = _flat_indices(src_table, shape)
        want_flat = _flat_indices(wanted, shape)
        choice = []
        for li in range(dst.layout.num_locals):
            hits = src_flat == want_flat[:, li : li + 1]  # [T, N_src]
            if not hits.any(axis=1).all():
                return None
            first = hits.argmax(axis=1)
            if not (first == first[0]).all():
                return None
            choice.append(int(first[0]))
        return choice

    def move_tile(
        self, instr: ir.Instr, src: TileRegs, result: ir.Var, index_map, table_map
    ) -> None:
        """`result[i] = src[index_map(i)]`: in registers when each thread holds its sources,
        else through shared memory."""
        dst = self.define_tile(result)
        choice = self.register_map(src, dst, table_map)
        if choice is not None:
            if (
                choice == list(range(dst.layout.num_locals))
                and src.dtype == dst.dtype
                and (src.layout.num_locals == dst.layout.num_locals)
            ):
                self.env[result] = TileRegs(src.local, dst.dtype, dst.layout)
                self.aliased.add(src.local)
                return
            for li, from_l in enumerate(choice):
                if dst.packed:  # moving data: the codes, bit for bit
                    self.put_code(dst, li, self.get_code(src, from_l))
                else:
                    self.put(dst, li, self.get(src, from_l))
            return
        self.through_shared(src, dst, index_map)

    def lower_Relayout(self, instr: ir.Relayout) -> None:
        self.move_tile(instr, self.tile(instr.value), instr.result, None, lambda table: table)

    def lower_Reshape(self, instr: ir.Reshape) -> None:
        src = self.tile(instr.value)
        src_shape = src.layout.shape
        dst_shape = instr.result.type.shape

        def index_map(index):
            flat = imm(0)
            for size, i in zip(dst_shape, index, strict=True):
                flat = self.b.add(self.b.mul(flat, imm(size)), i)
            out = []
            for size in reversed(src_shape):
                out.append(self.b.binary("rem", flat, imm(size)))
                flat = self.b.binary("div", flat, imm(size))
            return tuple(reversed(out))

        def table_map(table):
            flat = _flat_indices(table, dst_shape)
            if not src_shape:
                return np.zeros((*flat.shape, 0), np.int64)
            return np.stack(np.unravel_index(flat, src_shape), axis=-1)

        self.move_tile(instr, src, instr.result, index_map, table_map)

    def lower_Transpose(self, instr: ir.Transpose) -> None:
        perm = instr.perm

        def index_map(index):
            out = [None] * len(perm)
            for k, p in enumerate(perm):
                out[p] = index[k]
            return tuple(out)

        def table_map(table):
            return table[..., np.argsort(perm)]

        self.move_tile(instr, self.tile(instr.value), instr.result, index_map, table_map)

    def lower_Broadcast(self, instr: ir.Broadcast) -> None:
        if not isinstance(instr.value, ir.Var) or not isinstance(instr.value.type, TileType):
            tile = self.define_tile(instr.result)
            value = self.b.let(self.convert(self.scalar(instr.value), tile.dtype), "fill")
            for li in range(tile.layout.num_locals):
                self.put(tile, li, value)
            return
        src = self.tile(instr.value)
        ones = [d for d, s in enumerate(src.layout.shape) if s == 1]

        def index_map(index):
            return tuple(imm(0) if d in ones else i for d, i in enumerate(index))

        def table_map(table):
            out = table.copy()
            out[..., ones] = 0
            return out

        self.move_tile(instr, src, instr.result, index_map, table_map)

    def lower_View(self, instr: ir.View) -> None:
        """Each thread's register bits, reinterpreted (infer_layouts chose layouts for
        which this is the row-major reinterpretation the block IR means)."""
        src = self.tile(instr.value)
        dst = self.define_tile(instr.result)
        bits = src.layout.num_locals * src.dtype.bits
        if bits != dst.layout.num_locals * dst.dtype.bits:
            raise self.fail(
                instr, f"view needs equal bits per thread, not {src.layout} -> {dst.layout}"
            )
        # Packed locals are whole u32 words; the bits past the last code are padding.
        nbytes = min(self.local_bytes(src), self.local_bytes(dst))
        if nbytes * 8 < bits:
            raise self.fail(instr, f"view of {src.dtype} to {dst.dtype}: {bits} bits do not fit")
        for offset, width in _pieces(0, nbytes):
            self.b.emit(t.Move(t.Reg(dst.local, offset), t.Reg(src.local, offset), width))

    # -- dot ---------------------------------------------------------------------------

    def lower_Dot(self, instr: ir.Dot) -> None:
        a, b_, acc = self.tile(instr.a), self.tile(instr.b), self.tile(instr.acc)
        in_place = self.dead_after(instr.acc, instr)
        result = (
            TileRegs(acc.local, acc.dtype, acc.layout) if in_place else self.new_tile(instr.result)
        )
        self.env[instr.result] = result
        if not in_place:
            self.copy_tile(result, acc)
        atom = _mma_atom(a, b_, result)
        if atom is not None and self.emit_mma(atom, a, b_, result):
            return
        self.generic_dot(a, b_, result)

    def dead_after(self, var: ir.Value, instr: ir.Instr) -> bool:
        return (
            isinstance(var, ir.Var)
            and self.last_use.get(var) is instr
            and self.local_scope(var)
            and self.tile(var).local not in self.aliased
        )

    def local_scope(self, var: ir.Var) -> bool:
        # A value defined outside the loop that holds this instruction is read again by
        # the next iteration: only values of the current body may be overwritten.
        return var in self.current_defs[-1] if self.current_defs else True

    def emit_mma(self, atom: MmaAtom, a: TileRegs, b_: TileRegs, c: TileRegs) -> bool:
        qa, qb, qc = a.layout / atom.a, b_.layout / atom.b, c.layout / atom.c
        ta, tb, tc = qa.table(), qb.table(), qc.table()
        warps = self.threads // WARP
        if ta.shape[0] != warps or tb.shape[0] != warps or tc.shape[0] != warps:
            return False
        k_blocks = a.layout.shape[1] // atom.k
        plan = []
        for qc_local in range(qc.num_locals):
            for k in range(k_blocks):
                la = self._local_holding(ta, tc[:, qc_local, 0], k, rows=True)
                lb = self._local_holding(tb, tc[:, qc_local, 1], k, rows=False)
                if la is None or lb is None:
                    return False
                plan.append((qc_local, la, lb))
        elem = dtypes.dtype(atom.operand_dtypes[0]).bits // 8
        acc_elem = dtypes.dtype(atom.acc_dtype).bits // 8
        for qc_local, la, lb in plan:
            creg = t.Reg(c.local, qc_local * atom.c.num_locals * acc_elem)
            self.b.emit(
                t.Mma(
                    atom.name,
                    a.dtype,
                    creg,
                    t.Reg(a.local, la * atom.a.num_locals * elem),
                    t.Reg(b_.local, lb * atom.b.num_locals * elem),
                    creg,
                )
            )
            self.b.count("mma")
        return True

    @staticmethod
    def _local_holding(table: np.ndarray, outer: np.ndarray, k: int, rows: bool) -> int | None:
        """The quotient local that holds block (outer[w], k) (A) or (k, outer[w]) (B) in
        every warp w, if one local does."""
        for local in range(table.shape[1]):
            blocks = table[:, local]
            want = (
                np.stack([outer, np.full_like(outer, k)], -1)
                if rows
                else np.stack([np.full_like(outer, k), outer], -1)
            )
            if (blocks == want).all():
                return local
        return None

    def generic_dot(self, a: TileRegs, b_: TileRegs, c: TileRegs) -> None:
        """acc[m, n] += Σ_k a[m, k]·b[k, n], each thread for its elements, from shared memory."""
        b = self.b
        acc_dtype = value_dtype(c.dtype)
        a_elem, b_elem = element_bytes(a.dtype), element_bytes(b_.dtype)
        m, k = a.layout.shape
        n = b_.layout.shape[1]
        a_base = self.scratch(0)
        b_base = _align(a_base + m * k * a_elem, 16)
        self.scratch(b_base - a_base + k * n * b_elem)
        b.emit(t.Barrier())
        self.write_scratch(a, a_base)
        self.write_scratch(b_, b_base)
        b.emit(t.Barrier())
        va = b.local(value_dtype_storage(a.dtype), 1, "va")
        vb = b.local(value_dtype_storage(b_.dtype), 1, "vb")
        total = b.local(acc_dtype, 1, "sum")
        for li in range(c.layout.num_locals):
            row, col = self.index(c.layout, li)
            b.emit(t.SetLocal(total, 0, self.get(c, li)))
            kk = t.Name(b.fresh("k"), I32)
            with b.nested() as body:
                b.emit(
                    t.SharedLoad(
                        t.Reg(va, 0),
                        a_elem,
                        self.scratch_address(a_base, (m, k), a_elem, (row, kk)),
                    )
                )
                b.emit(
                    t.SharedLoad(
                        t.Reg(vb, 0),
                        b_elem,
                        self.scratch_address(b_base, (k, n), b_elem, (kk, col)),
                    )
                )
                x = b.cvt(
                    _from_storage(t.Read(va, 0, value_dtype_storage(a.dtype)), a.dtype), acc_dtype
                )
                y = b.cvt(
                    _from_storage(t.Read(vb, 0, value_dtype_storage(b_.dtype)), b_.dtype), acc_dtype
                )
                b.emit(
                    t.SetLocal(
                        total,
                        0,
                        t.Binary("add", t.Read(total, 0, acc_dtype), t.Binary("mul", x, y)),
                    )
                )
            b.emit(t.For(kk, imm(0), imm(k), imm(1), tuple(body)))
            self.put(c, li, t.Read(total, 0, acc_dtype))
        b.count("dot_generic")

    # -- reductions and scans ----------------------------------------------------------

    def lower_Reduce(self, instr: ir.Reduce) -> None:
        src = self.tile(instr.value)
        dst = self.define_tile(instr.result)
        if not self.reduce_in_warps(src, dst, instr.op, instr.axis):
            self.fold(src, dst, instr.op, instr.axis, scan=False, reverse=False)

    def reduce_in_warps(self, src: TileRegs, dst: TileRegs, op: str, axis: int) -> bool:
        """A reduction whose axis lives in each thread's registers and in lanes of one
        warp: fold the thread's elements, then a butterfly of xor shuffles over the lane
        digits of the axis, after which every lane of a group holds the result (the
        replication the reduced layout has). False when the layouts do not allow it."""
        vdtype = value_dtype(src.dtype)
        if vdtype not in (dtypes.f32, dtypes.i32, U32) or value_dtype(dst.dtype) != vdtype:
            return False
        layout = src.layout
        offsets = []
        stride = 1
        for mode in reversed(layout.thread_modes):
            size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
            if not isinstance(mode, Rep) and layout.mode_dims[mode] == axis and size > 1:
                if stride * size > WARP or size & (size - 1):
                    return False
                offsets += [stride << j for j in range(size.bit_length() - 1)]
            stride *= size
        groups = _reduction_groups(src.layout, dst.layout, axis)
        if groups is None:
            return False
        combine = _REDUCE_OPS[op]
        for dst_local, src_locals in enumerate(groups):
            value = self.get(src, src_locals[0])
            for li in src_locals[1:]:
                value = _elementwise(combine, [value, self.get(src, li)])
            value = self.b.let(value, "red")
            for offset in offsets:
                other = t.Name(self.b.fresh("shfl"), vdtype)
                self.b.emit(t.Shfl(other, value, "xor", imm(offset)))
                value = self.b.let(_elementwise(combine, [value, other]), "red")
            self.put(dst, dst_local, value)
        self.b.count("reduce_shuffle")
        return True

    def lower_Scan(self, instr: ir.Scan) -> None:
        src = self.tile(instr.value)
        dst = self.define_tile(instr.result)
        if not self.scan_in_warps(src, dst, instr.op, instr.axis, instr.reverse):
            self.fold(src, dst, instr.op, instr.axis, scan=True, reverse=instr.reverse)

    def scan_in_warps(
        self, src: TileRegs, dst: TileRegs, op: str, axis: int, reverse: bool
    ) -> bool:
        """A scan whose axis is a run of each thread's registers times lanes of one warp:
        scan the run in the thread, scan the runs' totals across the lanes with shuffles
        (Hillis-Steele), and combine each element with the lanes before it. False when
        the layouts do not allow it."""
        vdtype = value_dtype(src.dtype)
        if vdtype not in (dtypes.f32, dtypes.i32, U32) or src.layout != dst.layout:
            return False
        layout = src.layout
        lane = _scan_lanes(layout, axis)
        groups = _scan_groups(layout, axis)
        if lane is None or groups is None:
            return False
        stride, size = lane
        combine = _REDUCE_OPS[op]
        digit = self.b.let(
            self.b.binary("rem", self.b.binary("div", t.ThreadIndex(), imm(stride)), imm(size)),
            "lane",
        )
        for group in groups:
            order = group[::-1] if reverse else group
            running: list[t.Expr] = []
            value: t.Expr | None = None
            for li in order:
                element = self.get(src, li)
                value = self.b.let(
                    element if value is None else _elementwise(combine, [value, element]), "s"
                )
                running.append(value)
            total = value
            for step in (1 << j for j in range(size.bit_length() - 1)):
                other = t.Name(self.b.fresh("shfl"), vdtype)
                self.b.emit(t.Shfl(other, total, "down" if reverse else "up", imm(step * stride)))
                has = (
                    t.Binary("lt", digit, imm(size - step))
                    if reverse
                    else t.Binary("ge", digit, imm(step))
                )
                total = self.b.let(t.Select(has, _elementwise(combine, [total, other]), total), "s")
            before = t.Name(self.b.fresh("shfl"), vdtype)
            self.b.emit(t.Shfl(before, total, "down" if reverse else "up", imm(stride)))
            first = t.Binary("eq", digit, imm(size - 1 if reverse else 0))
            for li, inclusive in zip(order, running, strict=True):
                combined = t.Select(first, inclusive, _elementwise(combine, [before, inclusive]))
                self.put(dst, li, combined)
        self.b.count("scan_shuffle")
        return True

    def fold(
        self, src: TileRegs, dst: TileRegs, op: str, axis: int, scan: bool, reverse: bool
    ) -> None:
        b = self.b
        elem = element_bytes(src.dtype)
        shape = src.layout.shape
        base = self.scratch(math.prod(shape) * elem)
        b.emit(t.Barrier())
        self.write_scratch(src, base)
        b.emit(t.Barrier())
        vdtype = value_dtype(src.dtype)
        storage = value_dtype_storage(src.dtype)
        value = b.local(storage, 1, "x")
        total = b.local(value_dtype_storage(dst.dtype), 1, "acc")
        length = shape[axis]
        for li in range(dst.layout.num_locals):
            out_index = self.index(dst.layout, li)
            kk = t.Name(b.fresh("k"), I32)
            src_index = list(out_index)
            if not scan:
                src_index.insert(axis, kk)
            else:
                src_index[axis] = kk
            acc_value = _from_storage(t.Read(total, 0, value_dtype_storage(dst.dtype)), dst.dtype)
            with b.nested() as body:
                address = self.scratch_address(base, shape, elem, tuple(src_index))
                b.emit(t.SharedLoad(t.Reg(value, 0), elem, address))
                x = _from_storage(t.Read(value, 0, storage), src.dtype)
                combined = _elementwise(_REDUCE_OPS[op], [acc_value, x])
                if scan:
                    inside = t.Binary("ge" if reverse else "le", kk, out_index[axis])
                    combined = t.Select(inside, combined, acc_value)
                b.emit(t.SetLocal(total, 0, _as_storage(combined)))
            init = _identity(op, vdtype)
            b.emit(t.SetLocal(total, 0, _as_storage(init)))
            b.emit(t.For(kk, imm(0), imm(length), imm(1), tuple(body)))
            self.put(dst, li, acc_value)
        b.count("scan_shared" if scan else "reduce_shared")

    # -- user shared memory, async copies, barriers ------------------------------------

    def lower_SharedAlloc(self, instr: ir.SharedAlloc) -> None:
        type_ = instr.result.type
        assert isinstance(type_, SharedType)
        offset = instr.attr("offset")
        if type_.layout is None or not isinstance(offset, int):
            raise self.fail(instr, "a shared tile without a place (run plan_shared first)")
        if type_.dtype.bits % 8:
            raise self.fail(
                instr, f"shared tiles of {type_.dtype} (not whole bytes) are not lowered yet"
            )
        self.env[instr.result] = SharedTile(offset, type_.dtype, type_.layout)

    def shared_tile(self, v: ir.Value) -> SharedTile:
        found = self.env[v]
        assert isinstance(found, SharedTile), v
        return found

    def shared_address(self, tile: SharedTile, index: Sequence[t.Expr]) -> t.Expr:
        """The byte address of a tile index: the layout's strides, then its swizzle."""
        b = self.b
        offset: t.Expr = imm(0)
        for i, modes in zip(index, tile.layout.dims, strict=True):
            rest = i
            for mode in reversed(modes):
                digit = b.binary("rem", rest, imm(mode.size)) if mode is not modes[0] else rest
                offset = b.add(offset, b.mul(digit, imm(mode.stride)))
                rest = b.binary("div", rest, imm(mode.size))
        swizzle = tile.layout.swizzle
        if swizzle is not None and swizzle.bits:
            mask = (1 << swizzle.bits) - 1
            moved = b.binary("and", b.binary("shr", offset, imm(swizzle.shift)), imm(mask))
            offset = t.Binary("xor", offset, b.binary("shl", moved, imm(swizzle.base)))
        base = imm(tile.offset) if isinstance(tile.offset, int) else tile.offset
        return b.add(base, b.mul(offset, imm(tile.dtype.bits // 8)))

    def lower_SharedSlice(self, instr: ir.SharedSlice) -> None:
        whole = self.shared_tile(instr.shared)
        (lead, *_), rest = whole.layout.dims[0], whole.layout.dims[1:]
        swizzle = whole.layout.swizzle
        period = 1 << (swizzle.shift + swizzle.bits) if swizzle is not None and swizzle.bits else 1
        if len(whole.layout.dims[0]) != 1 or lead.stride % period:
            raise self.fail(
                instr, f"cannot slice the shared layout {whole.layout} along its first dim"
            )
        base = imm(whole.offset) if isinstance(whole.offset, int) else whole.offset
        step = imm(lead.stride * whole.dtype.bits // 8)
        offset = self.b.let(self.b.add(base, self.b.mul(self.scalar(instr.index), step)), "slice")
        self.env[instr.result] = SharedTile(offset, whole.dtype, SharedLayout(tuple(rest), swizzle))

    def shared_run(self, tile: SharedTile, layout: Layout) -> int:
        """Elements of a register run that stay contiguous in the shared tile."""
        run = math.gcd(_run_length(layout), _contiguous_elements(tile.layout))
        elem = tile.dtype.bits // 8
        run &= -run  # accesses are 1, 2, 4, 8 or 16 bytes: a power of two of elements
        while run > 1 and (run * elem > 16 or layout.num_locals % run):
            run //= 2
        return run

    def lower_SharedStore(self, instr: ir.SharedStore) -> None:
        shared = self.shared_tile(instr.shared)
        tile = self.tile(instr.value)
        elem = tile.dtype.bits // 8
        run = self.shared_run(shared, tile.layout)
        first = self.replica_zero(tile.layout)
        first = self.b.let(first, "p") if first is not None else None
        # The block IR is sequential; threads are not: earlier reads of the tile by other
        # threads finish before the store, and the store is visible to every later read.
        self.b.emit(t.Barrier())
        for li in range(0, tile.layout.num_locals, run):
            address = self.b.let(self.shared_address(shared, self.index(tile.layout, li)), "sa")
            self.b.emit(t.SharedStore(address, t.Reg(tile.local, li * elem), run * elem, first))
        self.b.emit(t.Barrier())

    def lower_SharedLoad(self, instr: ir.SharedLoad) -> None:
        shared = self.shared_tile(instr.shared)
        tile = self.define_tile(instr.result)
        if self.try_ldmatrix(tile, lambda index: self.shared_address(shared, index), shared):
            return
        elem = tile.dtype.bits // 8
        run = self.shared_run(shared, tile.layout)
        for li in range(0, tile.layout.num_locals, run):
            address = self.b.let(self.shared_address(shared, self.index(tile.layout, li)), "sa")
            self.b.emit(t.SharedLoad(t.Reg(tile.local, li * elem), run * elem, address))

    def lower_CopyAsync(self, instr: ir.CopyAsync) -> None:
        """Each thread copies the runs a blocked layout gives it, with cp.async where a run
        is 4, 8 or 16 bytes with a constant mask, else with a load and a shared store."""
        shared = self.shared_tile(instr.shared)
        info = self.env[instr.tensor]
        assert isinstance(info, TensorInfo)
        layout = blocked_layout(shared.shape, shared.dtype, self.threads)
        offsets = [self.scalar(o) for o in instr.offsets]
        elem = shared.dtype.bits // 8
        elems = instr.attr("elems")
        run = math.gcd(
            self.shared_run(shared, layout), elems if isinstance(elems, int) and elems > 0 else 1
        )
        first = self.replica_zero(layout)
        staging = None
        for li in range(0, layout.num_locals, run):
            index = self.index(layout, li)
            pred, flat = self.element_place(info, offsets, index)
            address = self.b.let(self.shared_address(shared, index), "sa")
            source = self.b.let(_byte_offset(self.b, flat, shared.dtype.bits), "off")
            width = run * elem
            if width in (4, 8, 16):
                in_bounds = self.b.let(pred, "p") if pred is not None else None
                guard = self.b.all_of([c for c in (first,) if c is not None])
                copy = t.CpAsync(address, info.param, source, width, in_bounds)
                self.b.emit(t.If(guard, (copy,)) if guard is not None else copy)
                self.b.count("cp_async")
                continue
            staging = staging or self.b.local(dtypes.u8, 16, "stage")
            zero = [t.SetLocal(staging, i, imm(0, dtypes.u8)) for i in range(width)]
            for stmt in zero:
                self.b.emit(stmt)
            self.b.emit(t.GlobalLoad(t.Reg(staging, 0), width, info.param, source, pred))
            self.b.emit(t.SharedStore(address, t.Reg(staging, 0), width, first))

    def lower_Sync(self, instr: ir.Sync) -> None:
        self.b.emit(t.Barrier())

    def lower_AsyncCommit(self, instr: ir.AsyncCommit) -> None:
        self.b.emit(t.CpAsyncCommit())

    def lower_AsyncWait(self, instr: ir.AsyncWait) -> None:
        self.b.emit(t.CpAsyncWait(instr.pending))

    def lower_Print(self, instr: ir.Print) -> None:
        raise self.fail(instr, "print runs in kernel.interpret(...) only (not lowered yet)")

    # -- control flow ------------------------------------------------------------------

    def lower_For(self, instr: ir.For) -> None:
        b = self.b
        carried_store = []
        for carried, init in zip(instr.carried, instr.inits, strict=True):
            if isinstance(carried.type, TileType):
                tile = self.define_tile(carried, "c")
                self.copy_tile(tile, self.tile(init))
                carried_store.append(tile)
            else:
                slot = self.scalar_slot(carried)
                self.b.emit(t.SetLocal(slot.local, 0, _as_storage(self.scalar(init))))
                carried_store.append(slot)
        var = t.Name(instr.var.name, instr.var.type.dtype)
        self.bind_scalar(instr.var, var)
        self.current_defs.append(set(instr.carried) | _defs_of(instr.body))
        self.loop_stores.append({i.tensor for i in walk(instr.body) if isinstance(i, ir.Store)})
        self.loop_touched.append(
            {i.tensor for i in walk(instr.body) if isinstance(i, ir.Load | ir.Store | ir.CopyAsync)}
        )
        with b.nested() as body:
            yielded = self.block(instr.body)
            self.assign(carried_store, yielded or ())
        self.current_defs.pop()
        self.loop_stores.pop()
        self.loop_touched.pop()
        start, stop, step = (self.scalar(v) for v in (instr.start, instr.stop, instr.step))
        b.emit(t.For(var, start, stop, step, tuple(body), unroll=bool(instr.unroll)))
        for result, store in zip(instr.results, carried_store, strict=True):
            if isinstance(store, ScalarSlot):
                self.bind_scalar(result, self.b.let(store.read(), result.name))
            else:
                self.env[result] = TileRegs(store.local, store.dtype, store.layout)

    def scalar_slot(self, var: ir.Var) -> ScalarSlot:
        """A register that holds a runtime scalar a loop carries or an `if` yields; `var`
        reads it (a per-thread register, so it cannot bound a loop with collectives)."""
        dtype = value_dtype(var.type.dtype)
        slot = ScalarSlot(self.b.local(value_dtype_storage(var.type.dtype), 1, "s"), dtype)
        self.env[var] = slot.read()
        self.inline[var] = slot.read()
        return slot

    def assign(self, targets: list, values: Sequence[object]) -> None:
        """Targets (tile registers or scalar slots) take the yielded values, all read
        before any is written (a loop may swap its carried values)."""
        snapshots = {
            i: self.b.let(v, "y")
            for i, (v, tgt) in enumerate(zip(values, targets, strict=True))
            if isinstance(tgt, ScalarSlot)
        }
        for i, slot in enumerate(targets):
            if isinstance(slot, ScalarSlot):
                self.b.emit(t.SetLocal(slot.local, 0, _as_storage(snapshots[i])))
        pairs = [
            (tgt, v) for tgt, v in zip(targets, values, strict=True) if isinstance(tgt, TileRegs)
        ]
        self.assign_tiles([tgt for tgt, _ in pairs], [v for _, v in pairs])

    def assign_tiles(self, targets: list[TileRegs], values: Sequence[object]) -> None:
        sources = [v for v in values]
        conflict = any(
            isinstance(s, TileRegs)
            and s.local in {x.local for x in targets}
            and s.local != tgt.local
            for s, tgt in zip(sources, targets, strict=True)
        )
        if conflict:
            temps = []
            for s in sources:
                temp = TileRegs(
                    self.b.local(*storage_of(s.dtype, s.layout.num_locals), "y"), s.dtype, s.layout
                )
                self.copy_tile(temp, s)
                temps.append(temp)
            sources = temps
        for target, source in zip(targets, sources, strict=True):
            if source.local != target.local:
                self.copy_tile(target, source)

    def lower_If(self, instr: ir.If) -> None:
        b = self.b
        stores = []
        for result in instr.results:
            if isinstance(result.type, TileType):
                stores.append(self.define_tile(result, "c"))
            else:
                stores.append(self.scalar_slot(result))
        bodies = []
        for body_block in (instr.then_body, instr.else_body):
            self.current_defs.append(
                _defs_of(body_block) | (self.current_defs[-1] if self.current_defs else set())
            )
            with b.nested() as body:
                yielded = self.block(body_block)
                self.assign(stores, yielded or ())
            self.current_defs.pop()
            bodies.append(tuple(body))
        cond = self.scalar(instr.cond)
        b.emit(t.If(cond, bodies[0], bodies[1]))


# --------------------------------------------------------------------------- helpers


_LDMATRIX_CANDIDATES = (
    LdmatrixAtom(4, False, (2, 2)),
    LdmatrixAtom(4, True, (2, 2)),
    LdmatrixAtom(2, True),
    LdmatrixAtom(2, False),
    LdmatrixAtom(1, False),
    LdmatrixAtom(1, True),
)

_BLOCK_TO_THREAD = {"invert": "not"}

_REDUCE_OPS = {
    "sum": "add",
    "prod": "mul",
    "max": "max",
    "min": "min",
    "and": "and",
    "or": "or",
    "xor": "xor",
}


def _encode_exact(dtype: DType, value) -> int:
    """The code of a value of `dtype` (its infinities included, which a cast saturates)."""
    if dtype.is_float and dtype.has_inf and value in (float("inf"), float("-inf")):
        return dtype.inf_code | ((1 << (dtype.bits - 1)) if value < 0 else 0)
    return int(dtype.encode(np.asarray([value]))[0])


def _flat_indices(table: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index of each tile index in `table` ([..., rank]); 0 for rank 0."""
    if not shape:
        return np.zeros(table.shape[:-1], np.int64)
    return np.ravel_multi_index(tuple(np.moveaxis(table, -1, 0)), shape)


def _scan_lanes(layout: Layout, axis: int) -> tuple[int, int] | None:
    """(thread stride, size) of the one thread digit of `axis` (size 1 when the axis is
    only in registers), when the axis is a register run times lanes of one warp: its
    thread digit more significant than its register digit, within 32 lanes."""
    modes = [m for m in range(layout.num_modes) if layout.mode_dims[m] == axis]
    thread_modes = [m for m in modes if m in layout.thread_modes]
    local_modes = [m for m in modes if m in layout.local_modes]
    if len(thread_modes) > 1 or len(local_modes) > 1:
        return None
    if thread_modes and local_modes and modes.index(thread_modes[0]) > modes.index(local_modes[0]):
        return None
    if not thread_modes:
        return 1, 1
    mode = thread_modes[0]
    stride = 1
    for entry in reversed(layout.thread_modes):
        if entry == mode:
            break
        stride *= entry.size if isinstance(entry, Rep) else layout.mode_sizes[entry]
    size = layout.mode_sizes[mode]
    if stride * size > WARP or size & (size - 1):
        return None
    return stride, size


def _scan_groups(layout: Layout, axis: int) -> list[list[int]] | None:
    """This thread's locals grouped by their index off the axis, each group in axis
    order — the same for every thread — or None."""
    table = layout.table()
    keep = [d for d in range(layout.rank) if d != axis]
    first = table[0]
    groups: dict[tuple[int, ...], list[int]] = {}
    for li in range(layout.num_locals):
        groups.setdefault(tuple(int(v) for v in first[li, keep]), []).append(li)
    ordered = [sorted(g, key=lambda li: int(first[li, axis])) for g in groups.values()]
    for thread in table:
        for g in ordered:
            along = thread[g, axis]
            if len({tuple(r) for r in thread[g][:, keep]}) != 1 or list(along) != sorted(along):
                return None
    return ordered


def _reduction_groups(src: Layout, dst: Layout, axis: int) -> list[list[int]] | None:
    """For each local of the reduced layout `dst`, the locals of `src` (the same in every
    thread) whose elements it folds; None when threads disagree or lanes are missing."""
    src_table, dst_table = src.table(), dst.table()
    keep = [d for d in range(src.rank) if d != axis]
    rows = src_table[:, :, keep]  # [T, N_src, rank - 1]
    groups = []
    for li in range(dst.num_locals):
        hits = (rows == dst_table[:, li : li + 1, :]).all(axis=-1)  # [T, N_src]
        if not (hits == hits[0]).all() or not hits[0].any():
            return None
        groups.append([int(i) for i in np.flatnonzero(hits[0])])
    return groups


def _elementwise(op: str, args: list[t.Expr]) -> t.Expr:
    if op == "where":
        cond, a, b = args
        return t.Select(cond, a, b)
    name = _BLOCK_TO_THREAD.get(op, op)
    if len(args) == 1:
        return t.Unary(name, args[0])
    return t.Binary(name, args[0], args[1])


def _identity(op: str, dtype: DType) -> t.Expr:
    if op == "sum" or op in ("or", "xor"):
        return imm(0.0 if dtype.is_float else 0, dtype)
    if op == "prod":
        return imm(1.0 if dtype.is_float else 1, dtype)
    if op == "and":
        return (
            imm(-1 if dtype.signed else (1 << dtype.bits) - 1, dtype)
            if dtype != dtypes.u1
            else imm(1, dtype)
        )
    # Float min/max ignore NaN, so NaN is their identity: a row of NaN stays NaN.
    if op == "max":
        return imm(float("nan"), dtype) if dtype.is_float else imm(dtype.min, dtype)
    if op == "min":
        return imm(float("nan"), dtype) if dtype.is_float else imm(dtype.max, dtype)
    raise ValueError(op)


def value_dtype_storage(dtype: DType) -> DType:
    """The local dtype that holds one value of `value_dtype(dtype)` (u1 as u8)."""
    v = value_dtype(dtype)
    return dtypes.u8 if v == dtypes.u1 else v


def _as_storage(value: t.Expr) -> t.Expr:
    if value.dtype == dtypes.u1:
        return t.Select(value, imm(1, dtypes.u8), imm(0, dtypes.u8))
    return value


def _from_storage(value: t.Expr, dtype: DType) -> t.Expr:
    if value_dtype(dtype) == dtypes.u1:
        return t.Binary("ne", value, imm(0, dtypes.u8))
    return value


def _defs_of(block: ir.Block) -> set[ir.Var]:
    found: set[ir.Var] = set()
    for instr in walk(block):
        found.update(instr.defs())
    return found


def _align(value: int, to: int) -> int:
    return -(-value // to) * to


def _shared_nbytes(type_: SharedType) -> int:
    return math.ceil(math.prod(type_.shape) * type_.dtype.bits / 8)


def _dim_strides(layout: Layout) -> dict[int, int]:
    """For each mode id, the index step of one unit of the mode within its dim."""
    strides: dict[int, int] = {}
    mode = 0
    for sizes in layout.mode_shape:
        stride = math.prod(sizes)
        for size in sizes:
            stride //= size
            strides[mode] = stride
            mode += 1
    return strides


def _local_part(layout: Layout, li: int) -> tuple[int, ...]:
    """Per dim, the tile index's local component of local `li`."""
    sizes, dims = layout.mode_sizes, layout.mode_dims
    strides = _dim_strides(layout)
    parts = [0] * layout.rank
    for mode in reversed(layout.local_modes):
        li, digit = divmod(li, sizes[mode])
        parts[dims[mode]] += digit * strides[mode]
    return tuple(parts)


def _run_length(layout: Layout) -> int:
    """How many consecutive locals hold consecutive elements of the last dim."""
    if not layout.local_modes or layout.rank == 0:
        return 1
    inner = layout.local_modes[-1]
    if layout.mode_dims[inner] != layout.rank - 1 or _dim_strides(layout)[inner] != 1:
        return 1
    return layout.mode_sizes[inner]


def _contiguous_elements(layout: SharedLayout) -> int:
    """How many consecutive elements of the last dim stay adjacent in a shared layout
    (1 when its innermost stride is not 1; a swizzle keeps 2^base elements together)."""
    inner = layout.dims[-1][-1]
    if inner.stride != 1:
        return 1
    swizzle = layout.swizzle
    if swizzle is not None and swizzle.bits:
        return math.gcd(inner.size, 1 << swizzle.base)
    return inner.size


def _pieces(start: int, nbytes: int, align: int | None = None) -> list[tuple[int, int]]:
    """Split `nbytes` from `start` into naturally aligned accesses of at most 16 bytes
    (and at most `align` bytes when the memory side is only that aligned)."""
    out = []
    at = start
    end = start + nbytes
    limit = 16 if align is None else max(1, min(16, align))
    while at < end:
        width = limit
        while width > 1 and (at % width or at + width > end):
            width //= 2
        out.append((at - start, width))
        at += width
    return out


def _byte_offset(b: ThreadBuilder, flat: t.Expr, bits: int) -> t.Expr:
    if bits % 8 == 0:
        return b.mul(flat, imm(bits // 8, I64))
    return t.Binary("shr", b.mul(flat, imm(bits, I64)), imm(3, I64))


def _flat(b: ThreadBuilder, shape: tuple[int, ...], index: Sequence[t.Expr]) -> t.Expr:
    flat = imm(0)
    for size, i in zip(shape, index, strict=True):
        flat = b.add(b.mul(flat, imm(size)), i)
    return flat


def _mma_atom(a: TileRegs, b: TileRegs, c: TileRegs) -> MmaAtom | None:
    for atom in mma_atoms_for(str(a.dtype)):
        if b.dtype != a.dtype or str(c.dtype) != atom.acc_dtype:
            continue
        if (
            a.layout.divisible_by(atom.a)
            and b.layout.divisible_by(atom.b)
            and c.layout.divisible_by(atom.c)
        ):
            return atom
    return None
