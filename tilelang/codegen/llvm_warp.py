"""Warp collectives for the LLVM emitter: `Shfl`, `Ldmatrix`, `Mma` and `Wgmma`.

Each collective is a loop over the block's warps. Within a warp, a first loop over the
lanes evaluates every lane's operands (into per-warp scratch), a second one writes the
results, so every lane reads its inputs before any lane's result is written (results
may overwrite operands). `Mma` calls one internal helper function per (atom, operand
dtype) and warp: it gathers the A, B and C fragments of the 32 lanes into row-major
tiles with constant index tables built from `tilelang.ir.atoms.MMA_ATOMS` layouts,
computes D = A·B + C (k in order, one rounding per f32 addition; integers wrap at 32
bits) and scatters D back into the lanes' registers. `Wgmma` does the same for each
warpgroup (128 threads, tables from `tilelang.ir.atoms.wgmma_atom`), reading B from the
shared buffer at the addresses its descriptor gives (thread_mma.py's formula and swizzle),
synchronously: its fences, commits and waits are nothing here.

The emitter (`tilelang.codegen.llvm`) imports this module, never the other way round:
what a collective needs from the emitter is the `WarpEmitter` protocol, and a lane's
operands are evaluated through the `ThreadExprs` callback the emitter passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from llvmlite import ir

from tilelang import dtypes
from tilelang.codegen import llvm_numeric as num
from tilelang.codegen.llvm_loops import WARP, LoopBody, const_loop, opaque_alloca
from tilelang.codegen.llvm_numeric import F32, I8, I16, I32, I64, PTR, VOID, EmitError, int_const
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import MMA_ATOMS, WARPGROUP, wgmma_atom

__all__ = ["ThreadExprs", "WarpEmitter", "emit_ldmatrix", "emit_mma", "emit_shfl", "emit_wgmma"]

#: ``operands(tid)`` gives the evaluator of thread-IR expressions in thread ``tid``'s
#: environment (emitting, at the builder's position, whatever that environment needs).
ThreadExprs = Callable[[ir.Value], Callable[[t.Expr], ir.Value]]


class WarpEmitter(Protocol):
    """What the collectives use of the emitter's state (`tilelang.codegen.llvm`)."""

    b: ir.IRBuilder  # positioned where the collective goes
    module: ir.Module  # where the mma helpers and their tables are added
    threads: int  # threads of the block, a multiple of WARP
    lane_scratch: Sequence[ir.Value]  # two entry-block [WARP x i32] arrays
    local_stride: Mapping[str, int]  # bytes between two threads' copies of a local

    def local_ptr(self, local: str, byte: int, tid: ir.Value) -> ir.Value: ...

    def shared_ptr(self, address: ir.Value) -> ir.Value: ...

    def store_slot(self, name: str, tid: ir.Value, value: ir.Value) -> None: ...


def _warp_loop(em: WarpEmitter, body: LoopBody) -> None:
    """for warp in range(threads // 32): body(warp_base_tid: i32)."""
    b = em.b

    def per_warp(w: ir.Value) -> None:
        body(b.mul(w, int_const(I32, WARP), flags=["nuw", "nsw"]))

    const_loop(b, em.threads // WARP, per_warp, "warp")


def _lane_loop(em: WarpEmitter, body: LoopBody) -> None:
    const_loop(em.b, WARP, body, "lane")


def _lane_slot(em: WarpEmitter, scratch: ir.Value, lane: ir.Value) -> ir.Value:
    return em.b.gep(scratch, [lane], source_etype=I32)


def _as_i32_arg(b: ir.IRBuilder, v: ir.Value, dt) -> ir.Value:
    """An integer shuffle argument clamped to [-64, 64] (every value outside gives the
    lane's own value in every mode) as i32."""
    if not dt.is_int:
        raise EmitError(f"a shuffle argument must be an integer, got {dt}")
    ty = v.type
    if dt == dtypes.u1:
        return b.zext(v, I32)
    if dt.signed:
        lo, hi = int_const(ty, -64), int_const(ty, 64)
        v = b.select(b.icmp_signed("<", v, lo), lo, v)
        v = b.select(b.icmp_signed(">", v, hi), hi, v)
    else:
        hi = int_const(ty, 64)
        v = b.select(b.icmp_unsigned(">", v, hi), hi, v)
    if ty.width > 32:
        return b.trunc(v, I32)
    if ty.width < 32:
        return b.sext(v, I32) if dt.signed else b.zext(v, I32)
    return v


def emit_shfl(em: WarpEmitter, stmt: t.Shfl, operands: ThreadExprs) -> None:
    b = em.b
    values, args = em.lane_scratch
    width = stmt.width
    rtype = num.ltype(stmt.result.type)

    def per_warp(base: ir.Value) -> None:
        def gather(lane: ir.Value) -> None:
            evaluate = operands(b.add(base, lane))
            value = evaluate(stmt.value)
            if value.type != I32:
                value = b.bitcast(value, I32)
            b.store(value, _lane_slot(em, values, lane))
            arg = _as_i32_arg(b, evaluate(stmt.arg), stmt.arg.dtype)
            b.store(arg, _lane_slot(em, args, lane))

        _lane_loop(em, gather)

        def scatter(lane: ir.Value) -> None:
            arg = b.load(_lane_slot(em, args, lane), typ=I32)
            rel = b.and_(lane, int_const(I32, width - 1))
            segment = b.sub(lane, rel)
            if stmt.mode == "idx":
                src = arg
            elif stmt.mode == "xor":
                src = b.xor(rel, arg)
            elif stmt.mode == "up":
                src = b.sub(rel, arg)
            elif stmt.mode == "down":
                src = b.add(rel, arg)
            else:
                raise EmitError(f"unknown shuffle mode {stmt.mode}")
            inside = b.icmp_unsigned("<", src, int_const(I32, width))  # negative: outside
            source = b.select(inside, b.add(segment, src), lane)
            value = b.load(_lane_slot(em, values, source), typ=I32)
            if rtype != I32:
                value = b.bitcast(value, rtype)
            em.store_slot(stmt.result.name, b.add(base, lane), value)

        _lane_loop(em, scatter)

    _warp_loop(em, per_warp)


def emit_ldmatrix(em: WarpEmitter, stmt: tm.Ldmatrix, operands: ThreadExprs) -> None:
    b = em.b
    addresses = em.lane_scratch[0]

    def per_warp(base: ir.Value) -> None:
        def gather(lane: ir.Value) -> None:
            evaluate = operands(b.add(base, lane))
            b.store(evaluate(stmt.address), _lane_slot(em, addresses, lane))

        _lane_loop(em, gather)

        def row(lane: ir.Value) -> ir.Value:
            return b.load(_lane_slot(em, addresses, lane), typ=I32)

        def scatter(lane: ir.Value) -> None:
            group = b.lshr(lane, int_const(I32, 2))
            quad = b.and_(lane, int_const(I32, 3))
            for j in range(stmt.num):
                if not stmt.trans:
                    # Row lane//4 of matrix j, elements 2·(lane%4) and +1: bytes 4·(lane%4).
                    start = row(b.add(int_const(I32, 8 * j), group))
                    address = b.add(start, b.shl(quad, int_const(I32, 2)))
                    word = b.load(em.shared_ptr(address), typ=I32, align=4)
                else:
                    # Column lane//4, rows 2·(lane%4) and +1 of matrix j.
                    halves = []
                    for k in range(2):
                        r = b.add(int_const(I32, 8 * j + k), b.shl(quad, int_const(I32, 1)))
                        address = b.add(row(r), b.shl(group, int_const(I32, 1)))
                        halves.append(b.zext(b.load(em.shared_ptr(address), typ=I16, align=2), I32))
                    word = b.or_(halves[0], b.shl(halves[1], int_const(I32, 16)))
                dst = em.local_ptr(stmt.dst.local, stmt.dst.byte + 4 * j, b.add(base, lane))
                b.store(word, dst, align=4)

        _lane_loop(em, scatter)

    _warp_loop(em, per_warp)


# --------------------------------------------------------------------------- mma


def emit_mma(em: WarpEmitter, stmt: tm.Mma) -> None:
    helper = _mma_helper(em.module, stmt.atom, stmt.operands)
    b = em.b

    def per_warp(base: ir.Value) -> None:
        pointers = [em.local_ptr(r.local, r.byte, base) for r in (stmt.d, stmt.a, stmt.b, stmt.c)]
        strides = [
            int_const(I64, em.local_stride[r.local]) for r in (stmt.d, stmt.a, stmt.b, stmt.c)
        ]
        b.call(helper, pointers + strides)

    _warp_loop(em, per_warp)


def _table(module: ir.Module, name: str, layout, cols: int) -> ir.GlobalVariable:
    """Constant i32 [32 × locals]: the row-major tile index of each lane's element."""
    table = layout.table()  # [lanes, locals, 2]
    flat = [int(r) * cols + int(c) for lane in table for r, c in lane]
    ty = ir.ArrayType(I32, len(flat))
    var = ir.GlobalVariable(module, ty, name=name)
    var.linkage = "internal"
    var.global_constant = True
    var.unnamed_addr = True
    var.initializer = ir.Constant(ty, flat)
    var.type = PTR  # uses print as an opaque pointer
    return var


def _fragments(b: ir.IRBuilder, module: ir.Module, name: str, tile_ptr, threads: int, size: int):
    """walk(key, base, stride, layout, cols, visit): visit(pointer to a thread's element,
    pointer to its element of tile `key`) over the fragment `layout` of `threads`
    threads, operands of `size` bytes ("c"/"d": the f32/i32 accumulator, tile "c")."""

    def walk(key, base, stride, layout, cols, visit) -> None:
        table = _table(module, f"{name}.{key}", layout, cols)
        width = 4 if key in ("c", "d") else size
        tile = "c" if key == "d" else key

        def at(ptr: ir.Value, index: ir.Value) -> None:
            visit(ptr, tile_ptr(tile, index))

        _fragment_walk(b, table, base, stride, layout.num_locals, width, threads, at, key)

    return walk


def _fragment_walk(
    b: ir.IRBuilder,
    table: ir.GlobalVariable,
    base: ir.Value,
    stride: ir.Value,
    locals_: int,
    width: int,
    threads: int,
    visit: Callable[[ir.Value, ir.Value], None],
    label: str,
) -> None:
    """visit(pointer to thread T's local i, the row-major tile index `table` gives it)
    for every thread T < `threads` (its fragment at base + T·stride) and local i
    (`width` bytes each)."""

    def per_thread(thread: ir.Value) -> None:
        thread_base = b.gep(base, [b.mul(b.zext(thread, I64), stride)], source_etype=I8)

        def per_local(i: ir.Value) -> None:
            slot = b.add(b.mul(thread, int_const(I32, locals_)), i)
            index = b.load(b.gep(table, [slot], source_etype=I32), typ=I32)
            visit(b.gep(thread_base, [b.mul(i, int_const(I32, width))], source_etype=I8), index)

        const_loop(b, locals_, per_local, f"{label}.local")

    const_loop(b, threads, per_thread, f"{label}.thread")


def _helper(module: ir.Module, name: str, args: list[ir.Type]) -> ir.IRBuilder | ir.Function:
    """The internal helper `name` if the module has it, else a builder at the entry of a
    new one (void, `args`)."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    fn = ir.Function(module, ir.FunctionType(VOID, args), name=name)
    fn.linkage = "internal"
    fn.attributes.add("noinline")
    fn.attributes.add("nounwind")
    return ir.IRBuilder(fn.append_basic_block("entry"))


def _element_loader(b: ir.IRBuilder, operands) -> Callable[[ir.Value], ir.Value]:
    """Loads one operand element as the accumulator's type holds it exactly: f16/bf16
    as f32, 8-bit integers as i32."""
    etype, size = num.ltype(operands), operands.bits // 8

    def load(ptr: ir.Value) -> ir.Value:
        value = b.load(ptr, typ=etype, align=size)
        if operands == dtypes.f16:
            return num.f16_to_f32(b, value)
        if operands == dtypes.bf16:
            return num.bf16_to_f32(b, value)
        return b.sext(value, I32) if operands.signed else b.zext(value, I32)

    return load


def _accumulate(b: ir.IRBuilder, tile_ptr, m: int, n: int, k: int, integer: bool) -> None:
    """c[row, col] += a[row, kk] · b[kk, col] on the row-major tiles `tile_ptr` gives,
    kk in order for each element: one rounding per f32 addition (integers wrap)."""
    acc = I32 if integer else F32

    def per_row(row: ir.Value) -> None:
        def per_kk(kk: ir.Value) -> None:
            av = b.load(tile_ptr("a", b.add(b.mul(row, int_const(I32, k)), kk)), typ=acc)

            def per_col(col: ir.Value) -> None:
                cptr = tile_ptr("c", b.add(b.mul(row, int_const(I32, n)), col))
                bv = b.load(tile_ptr("b", b.add(b.mul(kk, int_const(I32, n)), col)), typ=acc)
                cv = b.load(cptr, typ=acc)
                cv = b.add(cv, b.mul(av, bv)) if integer else b.fadd(cv, b.fmul(av, bv))
                b.store(cv, cptr)

            const_loop(b, n, per_col, "col")

        const_loop(b, k, per_kk, "k")

    const_loop(b, m, per_row, "m")


def _tiles(b: ir.IRBuilder, acc: ir.Type, m: int, n: int, k: int):
    """Row-major a [m, k], b [k, n], c [m, n] of `acc`, and their element pointers."""
    tiles = {
        key: opaque_alloca(b, ir.ArrayType(acc, size), 16)
        for key, size in (("a", m * k), ("b", k * n), ("c", m * n))
    }
    return lambda key, index: b.gep(tiles[key], [index], source_etype=acc)


def _mma_helper(module: ir.Module, atom_name: str, operands) -> ir.Function:
    """void helper(ptr d, ptr a, ptr b, ptr c, i64 sd, i64 sa, i64 sb, i64 sc): one warp's
    mma; x points at lane 0's fragment, lane L's is at x + L·sx."""
    name = f"tilelang.mma.{atom_name}.{operands}"
    b = _helper(module, name, [PTR] * 4 + [I64] * 4)
    if isinstance(b, ir.Function):
        return b
    pd, pa, pb, pc, sd, sa, sb, sc = b.function.args
    atom = MMA_ATOMS[atom_name]
    integer = operands.is_int
    acc = I32 if integer else F32
    m, n, k = atom.m, atom.n, atom.k
    tile_ptr = _tiles(b, acc, m, n, k)
    element = _element_loader(b, operands)

    walk = _fragments(b, module, name, tile_ptr, WARP, operands.bits // 8)

    walk("a", pa, sa, atom.a, k, lambda ptr, at: b.store(element(ptr), at))
    walk("b", pb, sb, atom.b, n, lambda ptr, at: b.store(element(ptr), at))
    walk("c", pc, sc, atom.c, n, lambda ptr, at: b.store(b.load(ptr, typ=acc, align=4), at))
    _accumulate(b, tile_ptr, m, n, k, integer)
    walk("d", pd, sd, atom.c, n, lambda ptr, at: b.store(b.load(at, typ=acc), ptr, align=4))
    b.ret_void()
    return b.function


# --------------------------------------------------------------------------- wgmma


def emit_wgmma(em: WarpEmitter, stmt: tm.Wgmma, operands: ThreadExprs) -> None:
    helper = _wgmma_helper(em.module, stmt)
    b = em.b

    def per_group(group: ir.Value) -> None:
        base = b.mul(group, int_const(I32, WARPGROUP), flags=["nuw", "nsw"])
        address = operands(base)(stmt.b_address)  # uniform: the group's first thread's
        pointers = [em.local_ptr(r.local, r.byte, base) for r in (stmt.d, stmt.a)]
        strides = [int_const(I64, em.local_stride[r.local]) for r in (stmt.d, stmt.a)]
        b.call(helper, [*pointers, *strides, em.shared_ptr(int_const(I32, 0)), address])

    const_loop(b, em.threads // WARPGROUP, per_group, "warpgroup")


def _wgmma_helper(module: ir.Module, stmt: tm.Wgmma) -> ir.Function:
    """void helper(ptr d, ptr a, i64 sd, i64 sa, ptr shared, i32 b_address): one
    warpgroup's wgmma; thread T's fragment of x is at x + T·sx."""
    major = "mn" if stmt.trans_b else "k"
    name = (
        f"tilelang.wgmma.m64n{stmt.n}k16.{stmt.operands}.{major}.{stmt.lbo}.{stmt.sbo}"
        f".{'acc' if stmt.accumulate else 'zero'}"
    )
    b = _helper(module, name, [PTR, PTR, I64, I64, PTR, I32])
    if isinstance(b, ir.Function):
        return b
    if stmt.operands not in (dtypes.f16, dtypes.bf16):
        raise EmitError(f"wgmma multiplies f16 or bf16 here, not {stmt.operands}")
    pd, pa, sd, sa, shared, address = b.function.args
    atom = wgmma_atom(stmt.n)
    m, n, k = atom.m, atom.n, atom.k
    tile_ptr = _tiles(b, F32, m, n, k)
    element = _element_loader(b, stmt.operands)

    walk = _fragments(b, module, name, tile_ptr, WARPGROUP, stmt.operands.bits // 8)

    walk("a", pa, sa, atom.a, k, lambda ptr, at: b.store(element(ptr), at))
    if stmt.accumulate:
        walk("c", pd, sd, atom.c, n, lambda ptr, at: b.store(b.load(ptr, typ=F32, align=4), at))
    else:
        const_loop(b, m * n, lambda i: b.store(ir.Constant(F32, 0.0), tile_ptr("c", i)), "c.zero")

    def per_k(kk: ir.Value) -> None:
        def per_col(col: ir.Value) -> None:
            offset = b.add(address, _wgmma_b_offset(b, stmt, kk, col))
            rows = b.and_(b.lshr(offset, int_const(I32, 7)), int_const(I32, 7))
            swizzled = b.xor(offset, b.shl(rows, int_const(I32, 4)))
            ptr = b.gep(shared, [b.sext(swizzled, I64)], source_etype=I8)
            b.store(element(ptr), tile_ptr("b", b.add(b.mul(kk, int_const(I32, n)), col)))

        const_loop(b, n, per_col, "b.col")

    const_loop(b, k, per_k, "b.k")
    _accumulate(b, tile_ptr, m, n, k, integer=False)
    walk("d", pd, sd, atom.c, n, lambda ptr, at: b.store(b.load(at, typ=F32), ptr, align=4))
    b.ret_void()
    return b.function


def _wgmma_b_offset(b: ir.IRBuilder, stmt: tm.Wgmma, kk: ir.Value, col: ir.Value) -> ir.Value:
    """The byte offset of B's element (kk, col) from the descriptor's start, before the
    swizzle (thread_mma.py's `Wgmma`): K-major rows of 128 bytes in groups of 8 `sbo`
    apart; MN-major 64-column atoms `lbo` apart, k rows of 128 bytes, 8 a group."""

    def c(value: int) -> ir.Value:
        return int_const(I32, value)

    if not stmt.trans_b:
        within = b.add(b.mul(b.and_(col, c(7)), c(128)), b.mul(kk, c(2)))
        return b.add(within, b.mul(b.lshr(col, c(3)), c(stmt.sbo)))
    along_n = b.add(b.mul(b.and_(col, c(63)), c(2)), b.mul(b.lshr(col, c(6)), c(stmt.lbo)))
    along_k = b.add(b.mul(b.and_(kk, c(7)), c(128)), b.mul(b.lshr(kk, c(3)), c(stmt.sbo)))
    return b.add(along_n, along_k)
