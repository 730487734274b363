"""The LLVM emitter: thread IR as an LLVM IR module that runs a launch on the CPU.

`emit_llvm(fn)` returns deterministic LLVM IR text (built with `llvmlite.ir`, target
independent: the runtime sets the triple and data layout); `lower_to_llvm(fn)` returns
it with the facts a runtime needs (`LLVMKernel`). `tilelang.runtime.cpu` compiles and
launches it. This module plans and emits the function; the warp collectives live in
`llvm_warp` (which this module imports, never the reverse), scalar semantics in
`llvm_numeric`, and the loop/alloca helpers both use in `llvm_loops`.

ABI
---
One function, `ENTRY` (``tilelang_entry``)::

    void tilelang_entry(ptr tensors, ptr scalars, i32 gx, i32 gy, i32 gz,
                        i64 begin, i64 end, ptr noalias workspace)

* ``tensors``: an array of pointers, one per tensor parameter in `fn.params` order
  (the tensors' byte buffers; no alignment needed: global accesses are unaligned-safe).
* ``scalars``: 8 bytes per scalar parameter in `fn.params` order, the value in the low
  bytes (little-endian; u1 as one byte 0/1; f16/bf16 as their 16-bit code).
* ``gx, gy, gz``: the grid (each ≥ 1). The call runs the blocks with linear index
  ``begin <= b < end`` (``b = bx + gx·(by + gy·bz)``), one after the other; disjoint
  ranges may run concurrently with different workspaces.
* ``workspace``: `LLVMKernel.workspace_bytes` bytes, 64-byte aligned, private to the
  call: the block's shared memory (offset 0) and the per-thread state below.

Execution strategy (docs/design.md §7)
---------------------------------
The body is planned into *items*: hoisted uniform `Let`s, `Uniform`s at the uniform
level (evaluated once, in thread 0's environment, after the region before them),
*regions* (maximal runs of statements without collectives, each a loop over the
block's threads), collectives
(each a loop over warps, then lanes: every lane's operands are read before any result
is written) and uniform `For`/`If` statements that contain collectives (they stay
outside the thread loops; their bounds/conditions are evaluated once). `Barrier` only
separates regions. A `Let` at the uniform level whose value is uniform is hoisted out
of the thread loop and evaluated once (it is pure and its operands are uniform).

Per-thread state:

* a local is an array [threads × its bytes rounded up to 16] in the workspace, except
  when it is used by a single region that runs once per block (not under a uniform
  `For`): then it is one 16-aligned `alloca` reused by each thread in turn, which
  LLVM's SROA turns into registers;
* a varying `Name` is an SSA value inside its region; when another item uses it (a later
  region, a collective) it is also stored to a slot [threads] in the workspace; `Shfl`
  results always live in slots; uniform `Name`s are SSA values outside the loops.

Decisions where `tilelang.ir.thread` is silent (and why)
--------------------------------------------------------
* Integer division by zero: ``x / 0`` is all ones (-1), ``x % 0`` is ``x`` (what PTX's
  ``div.u32``/``rem.u32`` give); the signed overflow ``MIN / -1`` is MIN and
  ``MIN % -1`` is 0. None of these trap.
* Shift amounts are read as unsigned values of their own dtype (a negative amount is a
  huge shift: 0, or the sign fill), as the interpreter and PTX do.
* `min`/`max` of floats are IEEE 754-2019 minimumNumber/maximumNumber
  (``llvm.minimumnum``): a NaN operand is ignored, and -0 < +0.
* NaN results: arithmetic (f16/bf16/f32/f64, but `neg`/`abs`, which flip/clear the sign
  bit of any NaN) and every `Cvt` to a float produce the canonical NaN (0x7FFF,
  0x7FFFFFFF, ...; x86 would make 0xFFC00000), as the interpreter's values do. A `Cvt`
  leaves that out where it changes nothing observable (`tilelang.codegen.nan_facts`:
  its source is never NaN, or only arithmetic that canonicalizes itself reads it).
* `Cvt` to u1 of a float: nonzero and not NaN gives 1 (thread.py: "nonzero gives 1";
  NaN gives 0 as in every float→int conversion).
* Pair ``fma`` rounds once: the product is exact (f32 for f16, f64 for bf16); the sum
  is formed in f64 (bf16: made round-to-odd with TwoSum; f16: provably exact enough,
  see `llvm_numeric._fma_f64`), rounded to odd to f32, then RNE to 16 bits.
* `Mma` f16/bf16: the f16/bf16 products are formed in f32 (exact for f16; for bf16
  exact unless the product leaves f32's normal range) and added to the f32 accumulator
  in k order with one rounding per addition, as thread.py specifies.
* `Wgmma`: as `Mma`, per warpgroup, B read from the shared buffer at the addresses
  thread_mma.py's descriptor formula and swizzle give; it runs synchronously, so its
  fences, commits and waits (and `AsyncProxyFence`) do nothing.
* `Shfl`: implemented literally as thread.py says. Lanes are numbered within the
  segment; the source is ``arg`` (idx), ``r ^ arg`` (xor), ``r - arg`` (up) or
  ``r + arg`` (down) where r is this lane's index in its segment; a source outside
  ``[0, width)`` gives the lane's own value. ``arg`` is read as its dtype's integer
  value and may differ per lane. (PTX takes idx arguments modulo the width and lets
  xor reach earlier segments: the backends agree for arguments in [0, width).)
* `For` runs the iterations Python's `range` would (upward for a positive step, downward
  for a negative one, none for a zero step), counted up front (no overflow of the loop
  variable near the ends of its range).
* `Atomic`, `AtomicMerge` and `AtomicFetchAdd` are real atomics (blocks run on several host threads;
  see `llvm_atomic`); an `Atomic`'s `dst` gets what its ``atomicrmw``/``cmpxchg`` returns. `CpAsync` copies synchronously; `CpAsyncCommit`/`CpAsyncWait` do nothing. `Move`
  copies raw register bytes. `For.unroll` is a hint LLVM's unroller may or may not
  follow (the result is the same).
* The machine code assumes the default floating-point environment (round to nearest
  even, no flush-to-zero/denormals-are-zero): a process that sets FTZ/DAZ (e.g.
  ``torch.set_flush_denormal(True)``) changes subnormal results.
* Out-of-range shared or global accesses are undefined (the lowering predicates them):
  on the CPU they are real out-of-bounds memory accesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from llvmlite import ir

from tilelang import dtypes
from tilelang.codegen import llvm_numeric as num
from tilelang.codegen.collection import collection_paused
from tilelang.codegen.llvm_atomic import atomic_add, atomic_merge, fetch_add
from tilelang.codegen.llvm_loops import WARP, LoopBody, const_loop, counted_loop, opaque_alloca
from tilelang.codegen.llvm_numeric import I1, I8, I32, I64, PTR, VOID, EmitError, int_const
from tilelang.codegen.llvm_text import module_text
from tilelang.codegen.llvm_warp import emit_ldmatrix, emit_mma, emit_shfl, emit_wgmma
from tilelang.codegen.nan_facts import NanFacts, needs_canonical_nan, operand_blindness
from tilelang.dtypes import DType
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm

__all__ = ["ENTRY", "EmitError", "LLVMKernel", "emit_llvm", "lower_to_llvm"]

ENTRY = "tilelang_entry"
_WS_ALIGN = 64


@dataclass(frozen=True)
class LLVMKernel:
    """The emitted module and what a runtime needs to call it (see the module docstring)."""

    ir: str
    workspace_bytes: int
    tensor_params: tuple[str, ...]
    scalar_params: tuple[t.Param, ...]
    stored_tensors: frozenset[str]


def emit_llvm(fn: t.ThreadFunction) -> str:
    """LLVM IR text of `fn` (deterministic). `fn` should pass `verify_thread_function`."""
    return lower_to_llvm(fn).ir


def lower_to_llvm(fn: t.ThreadFunction) -> LLVMKernel:
    with collection_paused():
        return _Emitter(fn).run()


# --------------------------------------------------------------------------- planning


def _has_collective(stmt: t.Stmt) -> bool:
    return stmt.COLLECTIVE or any(_has_collective(s) for body in stmt.bodies() for s in body)


@dataclass
class _Item:
    """One step at the uniform level: kind in let, uniform, region, coll, for, if."""

    kind: str
    id: int
    depth: int  # number of enclosing uniform For items
    stmt: t.Stmt | None = None
    stmts: tuple[t.Stmt, ...] = ()  # region statements
    body: list[_Item] = field(default_factory=list)  # for body / if then
    orelse: list[_Item] = field(default_factory=list)  # if else


def _stmt_locals(stmt: t.Stmt, names: set[str]) -> set[str]:
    """Locals a statement touches itself (not nested bodies); adds the Names its
    expressions read to `names` (one walk for both)."""
    used: set[str] = set()
    for e in t.stmt_exprs(stmt):
        for x in t.walk_expr(e):
            if isinstance(x, t.Name):
                names.add(x.name)
            elif isinstance(x, t.Read):
                used.add(x.local)
    if isinstance(stmt, t.SetLocal):
        used.add(stmt.local)
    for name in ("dst", "src", "d", "a", "b", "c", "compare"):
        reg = getattr(stmt, name, None)
        if isinstance(reg, t.Reg):
            used.add(reg.local)
    return used


class _Plan:
    def __init__(self, fn: t.ThreadFunction) -> None:
        self.varying: set[str] = set()
        self.items: list[_Item] = []  # every item, by id
        self.uses: dict[int, set[str]] = {}  # names an item's own expressions use
        self.defined_in: dict[str, int] = {}  # region/Shfl-defined name -> item id
        self.local_items: dict[str, set[int]] = {}
        self.top = self.block(fn.body, 0)
        users: dict[str, set[int]] = {}  # name -> the items using it (one pass, not per name)
        for item_id, used in self.uses.items():
            for name in used:
                users.setdefault(name, set()).add(item_id)
        self.escaping = {
            name for name, home in self.defined_in.items() if users.get(name, set()) - {home}
        }
        self.private_locals = {
            name
            for name, ids in self.local_items.items()
            if len(ids) == 1
            and self.items[next(iter(ids))].kind == "region"
            and self.items[next(iter(ids))].depth == 0
        }

    def new(self, kind: str, depth: int, **kw) -> _Item:
        item = _Item(kind, len(self.items), depth, **kw)
        self.items.append(item)
        self.uses[item.id] = set()
        return item

    def uniform(self, e: t.Expr) -> bool:
        return t.is_uniform(e, self.varying)

    def block(self, body: tuple[t.Stmt, ...], depth: int) -> list[_Item]:
        items: list[_Item] = []
        lets: list[_Item] = []
        region: list[t.Stmt] = []

        def flush() -> None:
            items.extend(lets)
            lets.clear()
            if region:
                item = self.new("region", depth, stmts=tuple(region))
                for stmt in t.walk_stmts(item.stmts):
                    self.note(item, stmt)
                    if isinstance(stmt, t.Let | t.Uniform):
                        self.varying.add(stmt.name.name)
                        self.defined_in[stmt.name.name] = item.id
                items.append(item)
                region.clear()

        for stmt in body:
            if isinstance(stmt, t.Let) and self.uniform(stmt.value):
                item = self.new("let", depth, stmt=stmt)
                self.note(item, stmt)
                lets.append(item)
            elif isinstance(stmt, t.Uniform):
                # after the regions before it (which wrote what it reads), once per block
                flush()
                item = self.new("uniform", depth, stmt=stmt)
                self.note(item, stmt)
                items.append(item)
            elif not _has_collective(stmt):
                region.append(stmt)
                # Names defined so far in this region are varying for later Lets.
                for inner in t.walk_stmts((stmt,)):
                    if isinstance(inner, t.Let | t.Uniform):
                        self.varying.add(inner.name.name)
            else:
                flush()
                if isinstance(stmt, t.For):
                    item = self.new("for", depth, stmt=stmt)
                    self.note(item, stmt)
                    item.body = self.block(stmt.body, depth + 1)
                elif isinstance(stmt, t.If):
                    item = self.new("if", depth, stmt=stmt)
                    self.note(item, stmt)
                    item.body = self.block(stmt.then_body, depth)
                    item.orelse = self.block(stmt.else_body, depth)
                elif isinstance(stmt, t.Barrier):
                    continue
                else:
                    item = self.new("coll", depth, stmt=stmt)
                    self.note(item, stmt)
                    if isinstance(stmt, t.Shfl):
                        self.varying.add(stmt.result.name)
                        self.defined_in[stmt.result.name] = item.id
                items.append(item)
        flush()
        return items

    def note(self, item: _Item, stmt: t.Stmt) -> None:
        for name in _stmt_locals(stmt, self.uses[item.id]):
            self.local_items.setdefault(name, set()).add(item.id)


# --------------------------------------------------------------------------- emission


@dataclass
class _Env:
    """What expressions see: the thread index (None at the uniform level) and the SSA
    values of the Names in scope."""

    tid: ir.Value | None
    names: dict[str, ir.Value]

    def child(self) -> _Env:
        return _Env(self.tid, dict(self.names))


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _symbol(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", text)


class _Emitter:
    def __init__(self, fn: t.ThreadFunction) -> None:
        self.fn = fn
        self.threads = fn.threads
        self.plan = _Plan(fn)
        self.nan = NanFacts(fn)
        self.locals = {loc.name: loc for loc in fn.locals}
        self.module = ir.Module(name=_symbol(fn.name))
        self.name_types: dict[str, DType] = {}
        for stmt in t.walk_stmts(fn.body):
            name = t.defined_name(stmt)
            if name is not None:
                self.name_types[name.name] = name.type
        # Workspace layout: shared memory, then per-thread locals, then Name slots.
        offset = _round_up(max(fn.shared_bytes, 16), _WS_ALIGN)
        self.local_offset: dict[str, int] = {}
        self.local_stride: dict[str, int] = {}
        for loc in fn.locals:
            if loc.name in self.plan.private_locals:
                continue
            self.local_offset[loc.name] = offset
            self.local_stride[loc.name] = _round_up(loc.nbytes, 16)
            offset += _round_up(fn.threads * self.local_stride[loc.name], _WS_ALIGN)
        self.slot_offset: dict[str, int] = {}
        slot_names = sorted(self.plan.escaping) + sorted(
            s.result.name
            for s in t.walk_stmts(fn.body)
            if isinstance(s, t.Shfl) and s.result.name not in self.plan.escaping
        )
        for name in slot_names:
            size = max(self.name_types[name].bits // 8, 1)
            self.slot_offset[name] = offset
            offset += _round_up(fn.threads * size, _WS_ALIGN)
        self.workspace_bytes = offset

    # ------------------------------------------------------------------ function

    def run(self) -> LLVMKernel:
        fn = self.fn
        fnty = ir.FunctionType(VOID, [PTR, PTR, I32, I32, I32, I64, I64, PTR])
        func = ir.Function(self.module, fnty, name=ENTRY)
        func.attributes.add("nounwind")
        args = func.args
        for arg, name in zip(
            args, ("tensors", "scalars", "gx", "gy", "gz", "begin", "end", "workspace"), strict=True
        ):
            arg.name = name
        args[7].add_attribute("noalias")
        self.func = func
        entry = func.append_basic_block("entry")
        self.alloca_builder = ir.IRBuilder(entry)
        body = func.append_basic_block("start")
        b = self.b = ir.IRBuilder(body)
        self.ws = args[7]

        tensor_params = tuple(p.name for p in fn.params if p.is_tensor)
        scalar_params = tuple(p for p in fn.params if not p.is_tensor)
        self.tensors: dict[str, ir.Value] = {}
        for k, name in enumerate(tensor_params):
            slot = b.gep(args[0], [int_const(I64, k)], source_etype=PTR)
            self.tensors[name] = b.load(slot, typ=PTR, name=f"t.{_symbol(name)}")
        env = _Env(None, {})
        for k, p in enumerate(scalar_params):
            ptr = b.gep(args[1], [int_const(I64, 8 * k)], source_etype=I8)
            value = b.load(ptr, typ=num.storage_type(p.dtype), name=f"s.{_symbol(p.name)}")
            if p.dtype == dtypes.u1:
                value = b.trunc(value, I1)
            env.names[p.name] = value
        self.private: dict[str, ir.Value] = {}
        for loc in fn.locals:
            if loc.name in self.plan.private_locals:
                self.private[loc.name] = self.alloca(
                    ir.ArrayType(I8, _round_up(loc.nbytes, 16)), 16
                )
        self.lane_scratch = [self.alloca(ir.ArrayType(I32, WARP), 16) for _ in range(2)]

        gx, gy = b.zext(args[2], I64), b.zext(args[3], I64)

        def block_body(linear: ir.Value) -> None:
            bx = b.urem(linear, gx)
            rest = b.udiv(linear, gx)
            self.block_index = (
                b.trunc(bx, I32, name="bx"),
                b.trunc(b.urem(rest, gy), I32, name="by"),
                b.trunc(b.udiv(rest, gy), I32, name="bz"),
            )
            self.items(self.plan.top, env)

        self.counted_loop(args[5], args[6], block_body, "block")
        b.ret_void()
        self.alloca_builder.branch(body)
        stored = t.written_tensors(fn.body)
        return LLVMKernel(
            module_text(self.module), self.workspace_bytes, tensor_params, scalar_params, stored
        )

    def alloca(self, ty: ir.Type, align: int) -> ir.Value:
        """An entry-block alloca, as an opaque pointer."""
        return opaque_alloca(self.alloca_builder, ty, align)

    # ------------------------------------------------------------------ loops

    def counted_loop(self, start: ir.Value, stop: ir.Value, body: LoopBody, name: str) -> None:
        counted_loop(self.b, start, stop, body, name)

    def const_loop(self, count: int, body: LoopBody, name: str) -> None:
        const_loop(self.b, count, body, name)

    def for_loop(self, stmt: t.For, env: _Env, body) -> None:
        """`For` with an iteration count computed up front (overflow-safe)."""
        b = self.b
        dt = stmt.var.type
        if not dt.is_int or dt == dtypes.u1:
            raise EmitError(f"a loop variable must be an integer, not {dt}")
        start, stop, step = (self.expr(e, env) for e in (stmt.start, stmt.stop, stmt.step))
        ty = start.type
        wide = ir.IntType(ty.width + 1)
        zero = ir.Constant(ty, 0)

        def count(first: ir.Value, last: ir.Value, magnitude: ir.Value) -> ir.Value:
            """Elements first, first + magnitude, ... below last (0 when magnitude is 0)."""
            less = (
                b.icmp_signed("<", first, last) if dt.signed else b.icmp_unsigned("<", first, last)
            )
            span = b.sub(b.sub(last, first), ir.Constant(ty, 1))  # < 2^width as unsigned
            nonzero = b.icmp_unsigned("!=", magnitude, zero)
            safe = b.select(nonzero, magnitude, ir.Constant(ty, 1))
            n = b.zext(b.add(b.udiv(span, safe), ir.Constant(ty, 1)), wide)
            return b.select(b.and_(less, nonzero), n, ir.Constant(wide, 0))

        if dt.signed:  # Python's range: down from start while var > stop for a negative step
            negative = b.icmp_signed("<", step, zero)
            up = count(start, stop, b.select(negative, zero, step))
            down = count(stop, start, b.select(negative, b.sub(zero, step), zero))
            trips = b.select(negative, down, up)
        else:
            trips = count(start, stop, step)

        def loop_body(k: ir.Value) -> None:
            var = b.add(start, b.mul(b.trunc(k, ty), step))
            body(var)

        self.counted_loop(ir.Constant(wide, 0), trips, loop_body, "for")

    # ------------------------------------------------------------------ items

    def items(self, items: list[_Item], env: _Env) -> None:
        for item in items:
            if item.kind == "let":
                env.names[item.stmt.name.name] = self.value(item.stmt, env)
            elif item.kind == "uniform":  # the same in every thread: thread 0's value
                first = self.thread_env(item, env, int_const(I32, 0))
                env.names[item.stmt.name.name] = self.value(item.stmt, first)
            elif item.kind == "region":
                self.region(item, env)
            elif item.kind == "coll":
                self.collective(item, env)
            elif item.kind == "for":
                stmt = item.stmt

                def body(var: ir.Value, stmt=stmt, item=item) -> None:
                    inner = env.child()
                    inner.names[stmt.var.name] = var
                    self.items(item.body, inner)

                self.for_loop(stmt, env, body)
            elif item.kind == "if":
                cond = self.expr(item.stmt.cond, env)
                if item.orelse:
                    with self.b.if_else(cond) as (then, otherwise):
                        with then:
                            self.items(item.body, env.child())
                        with otherwise:
                            self.items(item.orelse, env.child())
                else:
                    with self.b.if_then(cond):
                        self.items(item.body, env.child())
            else:  # pragma: no cover
                raise AssertionError(item.kind)

    def thread_env(self, item: _Item, env: _Env, tid: ir.Value) -> _Env:
        """The environment of thread `tid` for `item`: uniform names plus the slot values
        of the varying names it uses that other items defined."""
        inner = _Env(tid, dict(env.names))
        for name in sorted(self.plan.uses[item.id]):
            if name in self.slot_offset and self.plan.defined_in.get(name) != item.id:
                inner.names[name] = self.load_slot(name, tid)
        return inner

    def region(self, item: _Item, env: _Env) -> None:
        def body(tid: ir.Value) -> None:
            inner = self.thread_env(item, env, tid)
            for stmt in item.stmts:
                self.stmt(stmt, inner)

        self.const_loop(self.fn.threads, body, "tid")

    # ------------------------------------------------------------------ state

    def slot_ptr(self, name: str, tid: ir.Value) -> ir.Value:
        ty = num.storage_type(self.name_types[name])
        base = self.b.gep(self.ws, [int_const(I64, self.slot_offset[name])], source_etype=I8)
        return self.b.gep(base, [self.b.zext(tid, I64)], source_etype=ty)

    def load_slot(self, name: str, tid: ir.Value) -> ir.Value:
        dt = self.name_types[name]
        value = self.b.load(self.slot_ptr(name, tid), typ=num.storage_type(dt))
        return self.b.trunc(value, I1) if dt == dtypes.u1 else value

    def store_slot(self, name: str, tid: ir.Value, value: ir.Value) -> None:
        if self.name_types[name] == dtypes.u1:
            value = self.b.zext(value, I8)
        self.b.store(value, self.slot_ptr(name, tid))

    def local_ptr(self, local: str, byte: int, tid: ir.Value) -> ir.Value:
        """Pointer to byte `byte` of thread `tid`'s storage of `local`."""
        b = self.b
        if local in self.private:
            base = self.private[local]
        else:
            stride = self.local_stride[local]
            offset = b.add(
                int_const(I64, self.local_offset[local]),
                b.mul(b.zext(tid, I64), int_const(I64, stride), flags=["nuw", "nsw"]),
                flags=["nuw", "nsw"],
            )
            base = b.gep(self.ws, [offset], source_etype=I8)
        return b.gep(base, [int_const(I64, byte)], source_etype=I8) if byte else base

    def shared_ptr(self, address: ir.Value) -> ir.Value:
        return self.b.gep(self.ws, [self.b.sext(address, I64)], source_etype=I8)

    def tensor_ptr(self, tensor: str, offset: t.Expr, env: _Env) -> ir.Value:
        value = self.expr(offset, env)
        signed = offset.dtype.signed and offset.dtype != dtypes.u1
        if value.type.width < 64:
            value = self.b.sext(value, I64) if signed else self.b.zext(value, I64)
        return self.b.gep(self.tensors[tensor], [value], source_etype=I8)

    # ------------------------------------------------------------------ statements

    def stmt(self, stmt: t.Stmt, env: _Env) -> None:
        b = self.b
        tid = env.tid
        if isinstance(stmt, t.Let | t.Uniform):  # a Uniform inside a region: per thread
            value = self.value(stmt, env)
            env.names[stmt.name.name] = value
            if stmt.name.name in self.plan.escaping:
                self.store_slot(stmt.name.name, tid, value)
        elif isinstance(stmt, t.SetLocal):
            dt = self.locals[stmt.local].dtype
            ptr = self.local_ptr(stmt.local, stmt.index * dt.bits // 8, tid)
            b.store(self.value(stmt, env), ptr, align=min(dt.bits // 8, 16))
        elif isinstance(stmt, t.Move):  # register bytes, whatever the dtypes
            ty = ir.IntType(8 * stmt.width)
            value = b.load(
                self.local_ptr(stmt.src.local, stmt.src.byte, tid), typ=ty, align=stmt.width
            )
            b.store(value, self.local_ptr(stmt.dst.local, stmt.dst.byte, tid), align=stmt.width)
        elif isinstance(stmt, t.GlobalLoad | t.SharedLoad):
            with self.predicated(stmt.pred, env):
                if isinstance(stmt, t.GlobalLoad):
                    src = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                    align = 1
                else:
                    src = self.shared_ptr(self.expr(stmt.address, env))
                    align = 1
                ty = ir.IntType(8 * stmt.width)
                value = b.load(src, typ=ty, align=align)
                b.store(value, self.local_ptr(stmt.dst.local, stmt.dst.byte, tid), align=stmt.width)
        elif isinstance(stmt, t.GlobalStore | t.SharedStore):
            with self.predicated(stmt.pred, env):
                ty = ir.IntType(8 * stmt.width)
                value = b.load(
                    self.local_ptr(stmt.src.local, stmt.src.byte, tid), typ=ty, align=stmt.width
                )
                if isinstance(stmt, t.GlobalStore):
                    dst = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                else:
                    dst = self.shared_ptr(self.expr(stmt.address, env))
                b.store(value, dst, align=1)
        elif isinstance(stmt, t.Atomic):
            with self.predicated(stmt.pred, env):
                base = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                size = stmt.dtype.bits // 8
                for i in range(stmt.width // size):
                    regs = [
                        None if r is None else self.local_ptr(r.local, r.byte + i * size, tid)
                        for r in (stmt.src, stmt.compare, stmt.dst)
                    ]
                    value, compare = (
                        None if r is None else b.load(r, typ=num.ltype(stmt.dtype), align=size)
                        for r in regs[:2]
                    )
                    at = b.gep(base, [int_const(I64, i * size)], source_etype=I8) if i else base
                    old = atomic_add(b, at, value, stmt.dtype, stmt.op, compare)
                    if regs[2] is not None:  # the value before this element's update
                        b.store(old, regs[2], align=size)
        elif isinstance(stmt, t.AtomicFetchAdd):
            with self.predicated(stmt.pred, env):
                at = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                old = fetch_add(b, at, self.expr(stmt.value, env))
                b.store(old, self.local_ptr(stmt.dst.local, stmt.dst.byte, tid), align=4)
        elif isinstance(stmt, t.AtomicMerge):
            with self.predicated(stmt.pred, env):
                at = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                atomic_merge(b, at, self.expr(stmt.value, env), self.expr(stmt.mask, env))
        elif isinstance(stmt, t.CpAsync):
            ty = ir.IntType(8 * stmt.width)
            dst = self.shared_ptr(self.expr(stmt.address, env))
            if stmt.pred is None:
                b.store(
                    b.load(self.tensor_ptr(stmt.tensor, stmt.offset, env), typ=ty, align=1),
                    dst,
                    align=1,
                )
            else:
                with b.if_else(self.expr(stmt.pred, env)) as (then, otherwise):
                    with then:
                        src = self.tensor_ptr(stmt.tensor, stmt.offset, env)
                        b.store(b.load(src, typ=ty, align=1), dst, align=1)
                    with otherwise:
                        b.store(ir.Constant(ty, 0), dst, align=1)
        elif isinstance(stmt, t.CpAsyncCommit | t.CpAsyncWait | tm.AsyncProxyFence):
            pass  # copies are synchronous here
        elif isinstance(stmt, t.For):

            def body(var: ir.Value) -> None:
                inner = env.child()
                inner.names[stmt.var.name] = var
                for s in stmt.body:
                    self.stmt(s, inner)

            self.for_loop(stmt, env, body)
        elif isinstance(stmt, t.If):
            cond = self.expr(stmt.cond, env)
            if stmt.else_body:
                with b.if_else(cond) as (then, otherwise):
                    with then:
                        inner = env.child()
                        for s in stmt.then_body:
                            self.stmt(s, inner)
                    with otherwise:
                        inner = env.child()
                        for s in stmt.else_body:
                            self.stmt(s, inner)
            else:
                with b.if_then(cond):
                    inner = env.child()
                    for s in stmt.then_body:
                        self.stmt(s, inner)
        else:
            raise EmitError(f"{type(stmt).__name__} cannot appear inside a per-thread region")

    def predicated(self, pred: t.Expr | None, env: _Env):
        if pred is None:
            return _Nothing()
        return self.b.if_then(self.expr(pred, env))

    # ------------------------------------------------------------------ expressions

    def value(self, stmt: t.Let | t.Uniform | t.SetLocal, env: _Env) -> ir.Value:
        """The value a Let, Uniform or SetLocal gives, knowing how blindly it is read."""
        return self.expr(stmt.value, env, self.nan.value_blind(stmt))

    def expr(self, e: t.Expr, env: _Env, blind: bool = False) -> ir.Value:
        """`e` in LLVM IR; `blind`: only payload-blind operations read its value
        (`nan_facts.operand_blindness`), so a float `Cvt` there may skip the canonical NaN."""
        b = self.b
        if isinstance(e, t.Unary | t.Binary | t.Select | t.Fma | t.Cvt):
            blindness = operand_blindness(e, blind)
            x = [self.expr(c, env, bl) for c, bl in zip(e.children(), blindness, strict=True)]
        if isinstance(e, t.Imm):
            return num.imm(e.value, e.type)
        if isinstance(e, t.Name):
            value = env.names.get(e.name)
            if value is None:
                if env.tid is None or e.name not in self.slot_offset:
                    raise EmitError(f"%{e.name} is not available here")
                value = self.load_slot(e.name, env.tid)
            return value
        if isinstance(e, t.ThreadIndex):
            if env.tid is None:
                raise EmitError("the thread index outside a per-thread region")
            return env.tid
        if isinstance(e, t.BlockIndex):
            return self.block_index[e.axis]
        if isinstance(e, t.Read):
            size = e.type.bits // 8
            ptr = self.local_ptr(e.local, e.index * size, env.tid)
            return b.load(ptr, typ=num.ltype(e.type), align=min(size, 16))
        if isinstance(e, t.Unary):
            return num.unary(b, e.op, x[0], e.a.dtype)
        if isinstance(e, t.Binary):
            if e.op in t.COMPARE_OPS:
                return num.compare(b, e.op, *x, e.a.dtype)
            return num.binary(b, e.op, *x, e.a.dtype, e.b.dtype)
        if isinstance(e, t.Select):
            return b.select(*x)
        if isinstance(e, t.Fma):
            return num.fma(b, x, e.dtype)
        if isinstance(e, t.Cvt):
            canonical = needs_canonical_nan(e, blind, self.nan)
            return num.convert(b, x[0], e.a.dtype, e.type, canonical)
        if isinstance(e, t.Bitcast):
            return num.bitcast(b, self.expr(e.a, env), e.type)
        if isinstance(e, t.Lop3):
            return num.lop3(b, *(self.expr(c, env) for c in e.children()), e.lut)
        if isinstance(e, t.Prmt):
            return num.prmt(b, *(self.expr(c, env) for c in e.children()))
        if isinstance(e, t.Pair):
            c = self.expr(e.c, env) if e.c is not None else None
            return num.pair(b, e.op, e.elem, self.expr(e.a, env), self.expr(e.b, env), c)
        if isinstance(e, t.F8Pair):
            return num.f8_pair(b, self.expr(e.a, env), e.src, e.half)
        raise EmitError(f"not a thread-IR expression: {e!r}")

    # ------------------------------------------------------------------ collectives

    def collective(self, item: _Item, env: _Env) -> None:
        stmt = item.stmt

        def operands(tid: ir.Value) -> Callable[[t.Expr], ir.Value]:
            """Thread `tid`'s operands, evaluated in its environment for `item`."""
            tenv = self.thread_env(item, env, tid)
            return lambda e: self.expr(e, tenv)

        if isinstance(stmt, t.Shfl):
            emit_shfl(self, stmt, operands)
        elif isinstance(stmt, tm.Ldmatrix):
            emit_ldmatrix(self, stmt, operands)
        elif isinstance(stmt, tm.Mma):
            emit_mma(self, stmt)
        elif isinstance(stmt, tm.Wgmma):
            emit_wgmma(self, stmt, operands)
        elif isinstance(stmt, tm.WgmmaFence | tm.WgmmaCommit | tm.WgmmaWait):
            pass  # `Wgmma` is synchronous here
        else:  # pragma: no cover
            raise EmitError(f"unknown collective {type(stmt).__name__}")


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        return None
