"""The state of one lowering and the services every concern of it uses.

`Lowering` holds what lowering a function accumulates (the thread-IR builder, the value
of every block-IR Var, the prologue of per-thread index arithmetic, the scratch area)
and offers the operations all instruction lowerings share: scalars, register tiles and
their elements (`get`/`put` values, `get_code`/`put_code` packed codes), the tile index
a thread's element holds (`index`), conversions by the casting policy (`convert`).

Each instruction class's lowering is a function registered with `@lowers(Class)` in
the module of its concern; `Lowering.block` finds it by the instruction's class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tilelang import dtypes
from tilelang.analysis.liveness import Program
from tilelang.analysis.shared_layouts import total_bytes
from tilelang.analysis.streaming import streamed_reads
from tilelang.analysis.value_bounds import ValueBounds
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.shape_expr import BinOp, Lit, ShapeExpr, Sym
from tilelang.ir.types import TensorType, TileType
from tilelang.ir.visit import walk
from tilelang.lowering import encode
from tilelang.lowering.scalar_decode import decode_scalar
from tilelang.lowering.thread_builder import I32, I64, U32, ThreadBuilder, imm
from tilelang.lowering.values import (
    WARP,
    SharedTile,
    TensorInfo,
    TileRegs,
    align,
    dim_strides,
    is_packed,
    local_part,
    pieces,
    storage_of,
    value_dtype,
)
from tilelang.target import Target


class LoweringError(ValueError):
    """The lowering cannot express an instruction; the message starts with its location."""


#: A lowering returns None, except `yield`'s, which returns the values a body passes on.
Lower = Callable[["Lowering", ir.Instr], "tuple[object, ...] | None"]

#: How each instruction class becomes thread IR: one function per class.
LOWERINGS: ir.ByClass[Lower] = ir.ByClass("lowering")
lowers = LOWERINGS.register


class Lowering:
    """One function being lowered (see the module docstring)."""

    def __init__(self, fn: ir.Function, target: Target) -> None:
        self.fn = fn
        self.target = target
        self.threads = fn.warps * WARP
        names = {v.name for v in (*fn.params, *fn.sizes)}
        self.b = ThreadBuilder(names)
        self.env: dict[ir.Var, object] = {}
        self.thread_parts: dict[tuple[Layout, str], tuple[t.Expr, ...]] = {}
        self.prologue: list[t.Stmt] = []
        self.grid: tuple[t.Expr, ...] = ()
        self.checks: list[tuple[t.Expr, str]] = []  # conditions the host checks at launch
        self.inline: dict[ir.Var, t.Expr] = {}
        self.value_bounds = None  # analysis.value_bounds.ValueBounds, made on first use
        self.shared_top = 0
        self.scratch_bytes = 0
        self.staged: tuple | None = None  # what the scratch area holds (`staged_scratch`)
        self.current_defs: list[set[ir.Var]] = []
        self.stored: set[ir.Var] = set()  # tensors stored to by what was lowered so far
        self.loop_stores: list[set[ir.Var]] = []  # tensors stored in each enclosing loop
        self.touched: set[ir.Var] = set()  # tensors loaded or stored so far
        self.loop_touched: list[set[ir.Var]] = []  # tensors accessed in each enclosing loop
        self.aliased: set[str] = set()
        self.last_use: dict[ir.Var, ir.Instr] = {}
        self.users: dict[ir.Var, list[ir.Instr]] = {}
        self.producer: dict[ir.Var, ir.Instr] = {}
        # Dot operands read a k-step at a time (analysis.streaming), and the reads of
        # those lowered so far, waiting for their dot: ((first, end) index, emit).
        self.streamed = streamed_reads(Program.of(fn))
        self.deferred: dict[ir.Var, list] = {}
        self.deferred_tiles: dict[ir.Var, SharedTile] = {}  # where each deferred read reads
        self.wgmma_plans: dict | None = None  # the dots `wgmma.plans` takes, once known
        for instr in walk(fn):
            for v in instr.defs():
                self.producer[v] = instr
            for v in instr.uses():
                if isinstance(v, ir.Var):
                    self.last_use[v] = instr
                    self.users.setdefault(v, []).append(instr)

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
        self.shared_top = align(total_bytes(self.fn), 16)
        self.block(self.fn.body)
        body = tuple(self.prologue) + tuple(self.b.bodies[0])
        return t.ThreadFunction(
            name=self.fn.name,
            params=tuple(params),
            threads=self.threads,
            grid=self.grid or (imm(1),),
            shared_bytes=align(self.shared_top + self.scratch_bytes, 16) + self.alignment_slack(),
            locals=tuple(self.b.locals),
            body=body,
            stats=tuple(sorted(self.b.stats.items())),
            checks=tuple(self.checks),
            finite=tuple(sorted((self.value_bounds or ValueBounds(self.fn)).finite_tensors)),
            grid_at=self.grid_at(),
        )

    def grid_at(self) -> str:
        """ "file.py:12": the `tl.blocks` line (`ThreadFunction.grid_at`); "" without one."""
        for instr in self.fn.body.instrs:
            if isinstance(instr, ir.Blocks) and instr.loc != ir.NOWHERE:
                return f"{instr.loc.file}:{instr.loc.line}"
        return ""

    def alignment_slack(self) -> int:
        """Bytes of shared memory a launch gives beyond the buffer so that the CUDA code
        can start it on a 1024-byte boundary, which the warpgroup mma's descriptors
        need (thread_mma.py): 1008 where a `Wgmma` was emitted, else none."""
        return tm.WGMMA_SHARED_ALIGN - 16 if self.b.stats.get("wgmma") else 0

    def fail(self, instr: ir.Instr, message: str) -> LoweringError:
        return LoweringError(f"{instr.loc}: {message}")

    def block(self, block: ir.Block) -> tuple[object, ...] | None:
        """Lowers the instructions of `block`; the values of its `yield`, if it has one."""
        for instr in block.instrs:
            lowering = LOWERINGS.get(type(instr))
            if lowering is None:
                raise self.fail(instr, f"the lowering does not support {type(instr).__name__} yet")
            yielded = lowering(self, instr)
            if yielded is not None:
                return yielded
        return None

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
            return decode_scalar(self, code, dtype, dtypes.f32)
        if dtype.signed:
            shift = imm(32 - dtype.bits, U32)
            return t.Binary("shr", t.Bitcast(t.Binary("shl", code, shift), I32), shift)
        return code

    def get_code(self, tile: TileRegs, li: int) -> t.Expr:
        bits = tile.dtype.bits
        if tile.positions is not None:
            li = tile.positions[li]
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
            code = encode.encode_scalar(self, value, dtype)
        else:
            code = t.Bitcast(value, U32) if value.dtype == I32 else self.b.cvt(value, U32)
        self.put_code(tile, li, code)

    def put_code(self, tile: TileRegs, li: int, code: t.Expr) -> None:
        bits = tile.dtype.bits
        mask = (1 << bits) - 1
        code = self.b.let(t.Binary("and", code, imm(mask, U32)) if bits < 32 else code, "code")
        first, shift = divmod(li * bits, 32)
        parts = [(first, shift, 0)]
        if shift + bits > 32:
            parts.append((first + 1, 0, 32 - shift))
        for word, at, dropped in parts:
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

    def let(self, value: t.Expr, hint: str = "t") -> t.Expr:
        """`value` bound to a fresh name (the `Emit` protocol of `dequant`)."""
        return self.b.let(value, hint)

    def thread_part(self, layout: Layout, lanes_only: bool = False) -> tuple[t.Expr, ...]:
        """Per dim, the tile index's thread component for this thread (bound once)."""
        key = (layout, "lane" if lanes_only else "thread")
        if key not in self.thread_parts:
            self.thread_parts[key] = self._thread_part(layout, t.ThreadIndex())
        return self.thread_parts[key]

    def _thread_part(self, layout: Layout, thread: t.Expr) -> tuple[t.Expr, ...]:
        sizes, dims = layout.mode_sizes, layout.mode_dims
        dim_stride = dim_strides(layout)
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
        local = local_part(layout, li)
        return tuple(
            self.b.add(p, imm(c)) for p, c in zip(self.thread_part(layout), local, strict=True)
        )

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
            code = self.b.let(encode.encode_scalar(self, source, dtype), "code")
            return decode_scalar(self, code, dtype, dtypes.f32)
        return self.b.cvt(value, target)

    def copy_tile(self, dst: TileRegs, src: TileRegs) -> None:
        nbytes = self.local_bytes(src)
        for offset, width in pieces(0, nbytes):
            self.b.emit(t.Move(t.Reg(dst.local, offset), t.Reg(src.local, offset), width))

    def local_bytes(self, tile: TileRegs) -> int:
        storage, count = storage_of(tile.dtype, tile.layout.num_locals)
        return count * storage.bits // 8

    def scratch(self, nbytes: int) -> int:
        """The scratch area's base, for `nbytes` about to be written there."""
        self.scratch_bytes = max(self.scratch_bytes, nbytes)
        self.staged = None
        return self.shared_top

    def staged_scratch(self, key: tuple, nbytes: int) -> tuple[int, bool]:
        """(the scratch area's base, whether it already holds `key`'s bytes): true when
        the last scratch write, in the same straight-line code, staged the same tile
        (each slice of one tile read through shared memory: one write, many reads).
        The caller writes them when false, and they are `key`'s from then on."""
        current = (key, id(self.b.bodies[-1]), self.b.nestings)
        if self.staged == current:
            return self.shared_top, True
        base = self.scratch(nbytes)
        self.staged = current
        return base, False

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

    def shared_tile(self, v: ir.Value) -> SharedTile:
        found = self.env[v]
        assert isinstance(found, SharedTile), v
        return found
