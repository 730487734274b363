"""pipeline: every global load of a loop marked `stages=S` issued S-1 iterations ahead.

Assumes a verified function with inferred layouts (the pass runs after infer_layouts).
Guarantees the same results, with each `load` of the body of a loop with `stages=S`
(S ≥ 2) in one of three forms, chosen per load:

**Asynchronous copy** into S shared buffers, for a load whose box moves in aligned runs
of 4, 8 or 16 bytes (what `vectorize` will find for a `copy_async` of it), with no fill
or a zero fill, while the target's shared memory has room. cp.async frees the registers
a prefetch would hold and its wait is not tied to a register, so the data can be issued
S-1 iterations ahead whatever S is:

    buf = shared_alloc : shared<dtype, [S, *tile], staged_layout>
    copy_async tensor[offsets(start + s*step)] -> buf[s] {prologue}; async_commit   (s < S-1)
    for k ... iter(..., %stage = 0, %prev = S-1) {
      async_wait S-2; sync       # where the first such load was: stage %stage has landed,
                                 # and every thread is done with %prev
      %next = where (%stage == S-1), 0, %stage + 1
      %b = shared_load buf[%stage] : tile<mma operand layout>    # dot operands
      copy_async tensor[offsets(k + (S-1)*step)] -> buf[%prev] {ahead=S-1}
      async_commit
      ...
      %a = shared_load buf[%stage] : tile<the load's layout>     # where the load was
      yield ..., %next, %stage
    }
    async_wait 0

In iteration i the loop reads buffer i mod S and fills buffer (i + S-1) mod S, which is
(i-1) mod S, the buffer the previous iteration read: the loop carries both indices
(``%stage``, ``%prev``) and advances them with a compare and a select, so it never
divides, whatever the loop's bounds (no `(k - start) / step`, no remainder by S).

The shared_load defines the last value of the load's *chain*: the load, then a
`reshape` that only drops dims of size 1 (a rank-4 load [1, BN, 1, D] of one head read
as a matrix: a `shared_transpose` view moves them first, then one slice per dropped
dim), then a `transpose` (Kᵀ of attention: a `shared_transpose` view, read with
ldmatrix as K is stored), then a `relayout` (a dot operand, read with ldmatrix), each
the sole use of the one before and in the loop's own body (`shared_reads.read_chain`,
which reads a user's `tl.shared` tile into its dot the same way). Dot operands are read right
after the wait, before the next copies (the classic multistage loop); other tiles where
their loads were, so their registers live no longer (other orders made ptxas spill:
matmul on sm_80, u3 and u1 weights on sm_90). A packed sub-byte tile (u4 weights) is a
byte array of its codes in shared memory (`tilelang.analysis.shared_layouts`). The
buffers have `staged_layout`: one stage is the tile's default layout, so
`shared_slice` at a runtime index is legal.

**Register prefetch**, for the other loads (runs below 4 bytes: sizes without facts;
masked codes below a byte; a fill other than zero; no shared memory left), while the
kernel's `plan_registers` estimate plus the prefetched tiles in flight stays within
`REGISTER_TARGET` registers per thread (a tile in flight holds its words and one
register per access, two per code read through its byte window; loads are served in
program order). It keeps the data out of shared memory and needs no barrier:

    %a.p1 = load tensor[offsets(start + s*step)] {prologue}                       (s < S-1)
    for k ... iter(..., %a = %a.p1, %a.ahead.p1 = %a.p2, ...) {
      ... uses of %a ...
      %a.next = load tensor[offsets(k + (S-1)*step)] {ahead=S-1}   # after the last use of %a
      yield ..., %a.ahead.p1, ..., %a.next
    }

The prefetch follows the last use of the tile it replaces so that the two can share
registers (no copy for S = 2). For S > 2 the carried tiles rotate by register moves,
and a move waits for its load: deeper prefetch in registers hides less than cp.async.

**Gathers** (rows from an index tile: a paged KV cache's rows from its block table) are
copied with cp.async too, as `gather_async` into S buffers, when their index can be
computed for another iteration; the loop carries the index one iteration further than
the copies (`tilelang.passes.pipeline_gathers` says how). A gather takes this form when
it fills with +0, its rows move in whole runs of 4, 8 or 16 bytes with that alignment
(`vectorize`'s rules for a gather in the copy's layout) and its buffers fit; gathers
are not prefetched into registers.

**Masks** are computed for the iteration a copy or prefetch is for, as offsets are,
from the loop variable and values from before the loop by arithmetic and shape
instructions (`tilelang.passes.pipeline_masks`; once, before the loop, without the loop
variable: rows of padding). A masked-off element reads the fill and is not accessed: a
copy's gets cp.async's zero source size, each thread copying its mask layout's elements.

**Not pipelined**: a load whose offsets (a gather's index, a mask) depend on a value the
body computes from loaded data or carries from one iteration to the next (not known
ahead), of a tensor the loop also writes (a load issued ahead would miss the write),
inside a branch or an inner loop without stages of its own, or that no form can take.
It stays with ``unpipelined="<why>"`` (counted in ``stats["pipeline_skipped"]``) and a
`PipelineWarning` whose message starts with the loop's source location and names the
load and why.

Copies and loads past the loop's end are masked like any load (zero fill, no access
outside the tensor), so they need no guard; their data is never used. Loads and copies
this pass makes (``ahead``, ``prologue``) are not pipelined again by an outer loop.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np

from tilelang import dtypes
from tilelang.analysis.shared_layouts import default_layout, staged_layout, tile_bytes
from tilelang.ir import nodes as ir
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.types import ScalarType, SharedType, TensorType, TileType
from tilelang.ir.visit import defined_vars, walk
from tilelang.passes import plan_registers
from tilelang.passes.analyze import analyze
from tilelang.passes.pipeline_gathers import CarriedIndices, GatherCopy, feeding_only, gather_copy
from tilelang.passes.pipeline_masks import ahead_blocker, feeding_masks_only, invariant
from tilelang.passes.plan_registers import words
from tilelang.passes.shared_reads import chain_read, fresh_var, read_chain
from tilelang.passes.vectorize import copy_async_runs, load_runs
from tilelang.target import CPU, Target

#: Registers per thread the kernel may reach with its prefetched tiles in flight: its
#: `plan_registers` estimate plus the tiles stay within this, leaving the rest of the 255
#: to the addresses, masks and temporaries the block IR does not show.
REGISTER_TARGET = 192

#: The smallest cp.async; a copied run must be a multiple of it and aligned to it.
ASYNC_BYTES = 4


class PipelineWarning(UserWarning):
    """A load of a loop marked `stages=S` that stays unpipelined (the message says why)."""


def run(fn: ir.Function, target: Target = CPU) -> ir.Function:
    names = {v.name for v in (*fn.params, *fn.sizes, *defined_vars(fn))}
    return replace(fn, body=_Pipeliner(fn, names, target).block(fn.body))


# -- what each load becomes ------------------------------------------------------------------


@dataclass
class _Async:
    """A load copied with cp.async; the shared_load defines the last value of `chain`.
    A gather's copies also need what `gather` says (its index's recipe, layout, runs)."""

    load: ir.Load | ir.Gather
    chain: tuple[ir.Instr, ...]
    buffer: ir.Var
    gather: GatherCopy | None = None


@dataclass
class _Prefetch:
    """A load issued into registers S-1 iterations ahead, its tiles carried by the loop:
    the one for this iteration (the load's own result), then the later ones."""

    load: ir.Load
    carried: tuple[ir.Var, ...]


@dataclass
class _Loop:
    """One loop being rewritten: its body's definitions and the scalars of its stages."""

    loop: ir.For
    definitions: dict[ir.Var, ir.Instr]
    stage: ir.Var | None = None  # the buffer this iteration reads (carried)
    write: ir.Var | None = None  # the buffer its copies fill: the one read before (carried)
    stage_next: ir.Value | None = None  # the next iteration's `stage`
    before: dict[int, list[ir.Instr]] = field(default_factory=dict)  # inserted at an index
    dropped: set[int] = field(default_factory=set)  # ids of body instructions removed
    yielded: list[ir.Value] = field(default_factory=list)  # appended to the yield
    masks: dict[ir.Var, ir.Value] = field(default_factory=dict)  # invariant: made before
    indices: CarriedIndices = field(init=False)  # the gather indices the loop carries

    @property
    def stages(self) -> int:
        assert self.loop.stages is not None
        return self.loop.stages

    def insert(self, index: int, instrs: list[ir.Instr]) -> None:
        self.before.setdefault(index, []).extend(instrs)


class _Pipeliner:
    def __init__(self, fn: ir.Function, names: set[str], target: Target) -> None:
        self.fn = fn
        self.names = names
        self.target = target
        self.facts = analyze(fn)
        used = sum(tile_bytes(i.result.type) for i in walk(fn) if isinstance(i, ir.SharedAlloc))
        self.shared_left = target.shared_bytes - used
        self.registers_left = REGISTER_TARGET - plan_registers.estimate(fn).peak

    def fresh(self, hint: str, type_) -> ir.Var:
        return fresh_var(self.names, f"{hint}.p", type_)

    def block(self, block: ir.Block) -> ir.Block:
        out: list[ir.Instr] = []
        for instr in block.instrs:
            if instr.BODIES:
                bodies = {name: self.block(getattr(instr, name)) for name in instr.BODIES}
                instr = replace(instr, **bodies)
            if _staged(instr):
                out.extend(self.pipeline(instr))
            else:
                out.append(instr)
        return ir.Block(tuple(out))

    # -- one loop: the choice ---------------------------------------------------------------

    def pipeline(self, loop: ir.For) -> list[ir.Instr]:
        body = list(loop.body.instrs)
        plans: list[_Async | _Prefetch] = []
        writers = _written_tensors(loop.body)
        gathers: dict[int, _Async | str] = {}
        for index, instr in enumerate(body):
            if instr.BODIES:
                body[index] = _mark_nested(loop, instr)
            elif isinstance(instr, ir.Gather) and not _made_here(instr):
                gathers[index] = self.choose_gather(instr, loop, writers)
        # Instructions that only make the indices of copied gathers go: each copy
        # computes its index itself, an iteration ahead (a block table's gather too).
        copies = [c.gather for c in gathers.values() if isinstance(c, _Async) and c.gather]
        dead = feeding_only(body, copies)
        for index, choice in gathers.items():
            if id(body[index]) in dead:
                if isinstance(choice, _Async):
                    self.shared_left += tile_bytes(choice.buffer.type)
            elif isinstance(choice, str):
                body[index] = _skip(loop, body[index], choice)
            else:
                plans.append(choice)
        for index, instr in enumerate(body):
            if not isinstance(instr, ir.Load) or _made_here(instr) or id(instr) in dead:
                continue
            choice = self.choose(instr, loop, writers)
            if isinstance(choice, str):
                body[index] = _skip(loop, instr, choice)
            else:
                plans.append(choice)
        dead |= feeding_masks_only(tuple(body), [p.load for p in plans], loop, writers, dead)
        loop = replace(loop, body=ir.Block(tuple(body)))
        return self.rewrite(loop, plans, dead) if plans else [loop]

    def choose(
        self, load: ir.Load, loop: ir.For, writers: dict[ir.Var, ir.Instr]
    ) -> _Async | _Prefetch | str:
        """The form of `load` (cp.async first, registers next), or why it has none."""
        reason = ahead_blocker(load, loop, writers)
        if reason is not None:
            return reason
        why_not_async = self.async_blocker(load, loop)
        if why_not_async is None:
            return self.async_plan(load, loop)
        cost = (loop.stages - 1) * self.prefetch_words(load)
        if cost <= self.registers_left:
            self.registers_left -= cost
            return self.prefetch_plan(load, loop)
        return (
            f"it cannot be copied asynchronously ({why_not_async}), and its tiles in flight "
            f"{loop.stages - 1} iterations ahead would hold {cost} registers per thread, over "
            f"the {max(self.registers_left, 0)} the kernel has left (of {REGISTER_TARGET})"
        )

    def async_blocker(self, load: ir.Load, loop: ir.For) -> str | None:
        """Why `load` cannot become cp.async copies, or None."""
        tile = load.result.type
        tensor = load.tensor.type
        assert isinstance(tile, TileType) and isinstance(tensor, TensorType)
        if not _fills_with_zero_bytes(load.fill, tile.dtype):
            return f"cp.async fills with zero bytes, the load with {_fill_text(load.fill)}"
        if load.mask is not None and tile.dtype.bits % 8:
            return "its mask selects codes of less than a byte, which move one at a time"
        panels = self.target.has_wgmma
        layout = default_layout(tile.dtype, tuple(tile.shape), panels)
        one = SharedType(tile.dtype, tile.shape, layout)
        moves = tile.layout if load.mask is not None else None  # the mask's layout
        _, vector, align = copy_async_runs(self.fn, self.facts, tensor, load.offsets, one, moves)
        if vector == 0:
            return "its codes move one at a time, in runs of less than a byte"
        if vector % ASYNC_BYTES or align < ASYNC_BYTES:
            return (
                f"its box moves in runs of {vector} bytes, {align}-byte aligned, where "
                "cp.async copies aligned runs of 4, 8 or 16 bytes"
            )
        needed = tile_bytes(_buffer_type(tile, loop.stages, self.target))
        if needed > self.shared_left:
            left = max(self.shared_left, 0)
            return f"its buffers need {needed} bytes of shared memory, {left} are left"
        return None

    def choose_gather(
        self, gather: ir.Gather, loop: ir.For, writers: dict[ir.Var, ir.Instr]
    ) -> _Async | str:
        """A gather's cp.async form, or why it has none. Its index for iteration k+S-1
        is computed one iteration before the copy is issued (the loop carries it), so
        the instructions it is made of must be computable for another iteration."""
        reason = ahead_blocker(gather, loop, writers)
        if reason is not None:
            return reason
        copy = gather_copy(self.fn, self.facts, gather, loop, writers)
        if isinstance(copy, str):
            return copy
        tile = gather.result.type
        assert isinstance(tile, TileType)
        if not _fills_with_zero_bytes(gather.fill, tile.dtype):
            why = f"cp.async fills with zero bytes, the gather with {_fill_text(gather.fill)}"
        elif gather.axis == tile.rank - 1:
            why = "it gathers along the last dim, one element at a time"
        elif gather.mask is not None and tile.dtype.bits % 8:
            why = "its mask selects codes of less than a byte, one at a time"
        elif copy.vector == 0 or copy.vector % ASYNC_BYTES:
            why = f"its rows move in runs of {copy.vector} bytes"
        elif copy.align < ASYNC_BYTES:
            why = f"its rows are only known to be {copy.align}-byte aligned"
        elif tile_bytes(_buffer_type(tile, loop.stages, self.target)) > self.shared_left:
            needed, left = (
                tile_bytes(_buffer_type(tile, loop.stages, self.target)),
                max(self.shared_left, 0),
            )
            why = f"its buffers need {needed} bytes of shared memory, {left} are left"
        else:
            plan = self.async_plan(gather, loop)
            plan.gather = copy
            return plan
        return (
            f"it cannot be copied asynchronously ({why}: cp.async copies aligned runs of "
            "4, 8 or 16 bytes), and gathers are not prefetched into registers"
        )

    def prefetch_words(self, load: ir.Load) -> int:
        """Registers per thread one copy of `load`'s tile in flight holds: its words, and
        one more per access (each lands in a register of its own with its own mask until
        the tile is assembled; a code read through its byte window takes two)."""
        tile = load.result.type
        assert isinstance(tile, TileType)
        count = tile.layout.num_locals if tile.layout is not None else tile.numel
        elems, vector, _ = load_runs(self.fn, self.facts, load)
        accesses = -(-count // elems) if vector else 2 * count
        return words(tile, self.fn.warps) + accesses

    def async_plan(self, load: ir.Load, loop: ir.For) -> _Async:
        tile = load.result.type
        assert isinstance(tile, TileType)
        buffer_type = _buffer_type(tile, loop.stages, self.target)
        self.shared_left -= tile_bytes(buffer_type)
        buffer = self.fresh(load.result.name + ".smem", buffer_type)
        return _Async(load, read_chain(load, loop.body.instrs), buffer)

    def prefetch_plan(self, load: ir.Load, loop: ir.For) -> _Prefetch:
        later = [load.result.name + ".ahead"] * (loop.stages - 2)
        return _Prefetch(load, (load.result, *(self.fresh(n, load.result.type) for n in later)))

    # -- one loop: the rewrite ---------------------------------------------------------------

    def rewrite(
        self, loop: ir.For, plans: list[_Async | _Prefetch], dead: set[int]
    ) -> list[ir.Instr]:
        body = loop.body.instrs
        at = _Loop(loop, {d: i for i in body for d in i.defs()})
        at.indices = CarriedIndices(partial(self.values_at, at), self.fresh)
        at.dropped.update(dead)
        asyncs = [p for p in plans if isinstance(p, _Async)]
        prefetches = [p for p in plans if isinstance(p, _Prefetch)]
        prologue, inits = self.prologue(at, plans)
        if asyncs:
            self.async_body(at, asyncs)
        for plan in prefetches:
            self.prefetch_body(at, plan)
        stages: list[tuple[ir.Var, ir.Value]] = []
        at.yielded += at.indices.following()
        if at.stage is not None and at.write is not None and at.stage_next is not None:
            stages = [(at.stage, _const(0, loop)), (at.write, _const(at.stages - 1, loop))]
            at.yielded += [at.stage_next, at.stage]
        new_body: list[ir.Instr] = []
        for index, instr in enumerate(body):
            new_body += at.before.get(index, [])
            if id(instr) in at.dropped:
                continue
            if isinstance(instr, ir.Yield) and at.yielded:
                instr = replace(instr, values=(*instr.values, *at.yielded))
            new_body.append(instr)
        carried = [c for p in prefetches for c in p.carried]
        carried += at.indices.carried() + [var for var, _ in stages]
        index_inits = at.indices.inits()
        pipelined = replace(
            loop,
            body=ir.Block(tuple(new_body)),
            inits=(*loop.inits, *inits, *index_inits, *(init for _, init in stages)),
            carried=(*loop.carried, *carried),
            results=(*loop.results, *(self.fresh(c.name + ".out", c.type) for c in carried)),
        )
        after = [ir.AsyncWait(0, loc=loop.loc)] if asyncs else []
        return [*prologue, pipelined, *after]

    def prologue(
        self, at: _Loop, plans: list[_Async | _Prefetch]
    ) -> tuple[list[ir.Instr], list[ir.Value]]:
        """The buffers, then the copies and loads of the first S-1 iterations (one commit
        group per iteration); the initial values of the prefetched tiles, in the order
        of their carried values."""
        loop = at.loop
        out: list[ir.Instr] = [
            ir.SharedAlloc(p.buffer, loc=p.load.loc) for p in plans if isinstance(p, _Async)
        ]
        inits: dict[int, list[ir.Value]] = {id(p): [] for p in plans}
        for mask in dict.fromkeys(p.load.mask for p in plans if p.load.mask is not None):
            if invariant(mask, loop):  # the same in every iteration: made once, here
                (at.masks[mask],) = self.values_at(at, (mask,), loop.start, out, {}, None)
        for s in range(at.stages - 1):
            k = self.scalar("mul", _const(s, loop), loop.step, out)
            k = self.scalar("add", loop.start, k, out)
            memo: dict[ir.Var, ir.Value] = {}
            made = dict(at.masks)  # the copies' offsets and masks (`issue`'s memo)
            for plan in plans:
                if isinstance(plan, _Async):
                    index = None
                    if plan.gather is not None:
                        index = at.indices.index_at(plan.gather, k, out, memo, ahead=None)
                    out += self.copy(at, plan, _const(s, loop), k, None, index, made)
                else:
                    value, code = self.prefetch(at, plan.load, k, ahead=None)
                    out += code
                    inits[id(plan)].append(value)
            if any(isinstance(p, _Async) for p in plans):
                out.append(ir.AsyncCommit(loc=loop.loc))
        copies = [p.gather for p in plans if isinstance(p, _Async) and p.gather is not None]
        if copies:  # the indices of iteration S-1, which the loop carries into its first
            k = self.scalar("mul", _const(at.stages - 1, loop), loop.step, out)
            at.indices.start(copies, self.scalar("add", loop.start, k, out), out)
        return out, [v for p in plans for v in inits[id(p)]]

    def async_body(self, at: _Loop, asyncs: list[_Async]) -> None:
        """The wait, the reads of this iteration's stage and the copies S-1 ahead (the
        order is the module docstring's)."""
        body = at.loop.body.instrs
        first = min(_index(body, p.load) for p in asyncs)
        head = self.wait(at)
        for plan in asyncs:
            at.dropped.update(id(i) for i in plan.chain)
            if isinstance(plan.chain[-1], ir.Relayout):
                head += self.stage_read(at, plan)
        at.insert(first, head + self.issue(at, asyncs))
        for plan in asyncs:
            if not isinstance(plan.chain[-1], ir.Relayout):
                at.insert(_index(body, plan.load), self.stage_read(at, plan))

    def prefetch_body(self, at: _Loop, plan: _Prefetch) -> None:
        """The load S-1 iterations ahead, after the last use of the tile it replaces (so
        the two can share registers), and the rotation of the carried tiles."""
        body = at.loop.body.instrs
        at.dropped.add(id(plan.load))
        code: list[ir.Instr] = []
        next_k = self.scalar("add", at.loop.var, self.distance(at.loop, code), code)
        value, load = self.prefetch(at, plan.load, next_k, ahead=at.stages - 1)
        at.insert(min(_last_use(body, plan.load.result) + 1, len(body) - 1), code + load)
        at.yielded += [*plan.carried[1:], value]

    def distance(self, loop: ir.For, out: list[ir.Instr]) -> ir.Value:
        """How far the loop variable moves in S-1 iterations."""
        assert loop.stages is not None
        return self.scalar("mul", _const(loop.stages - 1, loop), loop.step, out)

    def wait(self, at: _Loop) -> list[ir.Instr]:
        """The wait for this iteration's stage (the sync also means every thread is done
        with the buffer the next copies overwrite) and the next iteration's stage: the
        loop carries the stage it reads and the one it fills (see the module docstring)."""
        loop = at.loop
        dtype = ScalarType(loop.var.type.dtype)
        at.stage, at.write = self.fresh("stage", dtype), self.fresh("prev", dtype)
        last = self.fresh("last", ScalarType(dtypes.u1))
        out: list[ir.Instr] = [ir.AsyncWait(at.stages - 2, loc=loop.loc), ir.Sync(loc=loop.loc)]
        out.append(ir.Compute(last, "eq", (at.stage, _const(at.stages - 1, loop)), loc=loop.loc))
        after = self.scalar("add", at.stage, _const(1, loop), out)
        at.stage_next = self.fresh("stage", dtype)
        out.append(ir.Compute(at.stage_next, "where", (last, _const(0, loop), after), loc=loop.loc))
        return out

    def issue(self, at: _Loop, asyncs: list[_Async]) -> list[ir.Instr]:
        """The copies for the iteration S-1 ahead (into the buffer the previous iteration
        read), one commit group."""
        loop, out = at.loop, []
        assert at.write is not None
        next_k = self.scalar("add", loop.var, self.distance(loop, out), out)
        memo = dict(at.masks)  # one iteration's offsets and masks, made once for its copies
        for plan in asyncs:
            index = at.indices.current(plan.gather) if plan.gather is not None else None
            out += self.copy(at, plan, at.write, next_k, at.stages - 1, index, memo)
        out.append(ir.AsyncCommit(loc=loop.loc))
        copies = [p.gather for p in asyncs if p.gather is not None]
        if copies:  # the indices of the copies the next iteration issues
            later = self.scalar("add", next_k, loop.step, out)
            at.indices.advance(copies, later, out, ahead=at.stages)
        return out

    def stage_read(self, at: _Loop, plan: _Async) -> list[ir.Instr]:
        """The shared_load of this iteration's stage into the chain's last value (the
        views `shared_reads.chain_read` makes, as for a user's shared tile)."""
        assert at.stage is not None
        tile = plan.load.result.type
        hint = plan.load.result.name + ".stage"
        # Every view states its layout: plan_shared would give a view without one the
        # default of its own shape, which is not the buffer's where rows are panels
        # (sm_90a) or past a transpose.
        layout = _stage_layout(plan.buffer)
        view = self.fresh(hint, SharedType(tile.dtype, tile.shape, layout))
        out: list[ir.Instr] = [ir.SharedSlice(view, plan.buffer, at.stage, loc=plan.load.loc)]
        return out + chain_read(plan.chain, view, self.fresh, _const(0, at.loop), hint)

    # -- code for another iteration ----------------------------------------------------------

    def scalar(self, op: str, a: ir.Value, b: ir.Value, out: list[ir.Instr]) -> ir.Value:
        """`a op b` on block-uniform integers, folded where both are constants or one
        is the identity."""
        var = next((v for v in (a, b) if isinstance(v, ir.Var)), None)
        dtype = var.type.dtype if var is not None else a.dtype
        if isinstance(a, ir.Const) and isinstance(b, ir.Const):
            folded = {"add": a.value + b.value, "sub": a.value - b.value, "mul": a.value * b.value}
            if op in folded:
                return ir.Const(folded[op], dtype)
        if op == "mul" and isinstance(a, ir.Const) and a.value in (0, 1):
            return b if a.value == 1 else a
        if op in ("add", "sub") and isinstance(b, ir.Const) and b.value == 0:
            return a
        if op == "div" and isinstance(b, ir.Const) and b.value == 1:
            return a
        result = self.fresh(op, ScalarType(dtype))
        out.append(ir.Compute(result, op, (a, b)))
        return result

    def offsets_at(
        self,
        at: _Loop,
        load: ir.Load | ir.Gather,
        k: ir.Value,
        out: list[ir.Instr],
        memo: dict[ir.Var, ir.Value] | None = None,
    ) -> tuple[tuple[ir.Value, ...], ir.Var | None]:
        """`load`'s offsets and mask at the iteration whose loop variable is `k` (the body
        instructions they are made of are recomputed into `out`, once per `memo`: the
        copies of one iteration share a row mask's compares; an invariant mask's were
        made before the loop)."""
        mask = (load.mask,) if load.mask is not None else ()
        memo = dict(at.masks) if memo is None else memo
        found = self.values_at(at, (*load.offsets, *mask), k, out, memo, ahead=None)
        assert not mask or isinstance(found[-1], ir.Var)
        return found[: len(load.offsets)], (found[-1] if mask else None)

    def values_at(
        self,
        at: _Loop,
        values: tuple[ir.Value, ...],
        k: ir.Value,
        out: list[ir.Instr],
        memo: dict[ir.Var, ir.Value],
        ahead: int | None,
    ) -> tuple[ir.Value, ...]:
        """`values` at the iteration whose loop variable is `k`: the body instructions
        they are made of, recomputed into `out` (once per `memo`); the loads among them
        are marked as made here, `ahead` iterations before their data is used."""
        memo.setdefault(at.loop.var, k)

        def clone(value: ir.Value) -> ir.Value:
            if isinstance(value, ir.Const) or value not in at.definitions:
                return memo.get(value, value) if isinstance(value, ir.Var) else value
            if value not in memo:
                instr = at.definitions[value]
                (result,) = instr.defs()
                new = replace(
                    instr.map_operands(clone), result=self.fresh(result.name, result.type)
                )
                if isinstance(new, ir.Load | ir.Gather | ir.LoadScalar):
                    new = replace(new, attrs=()).with_attrs(**_made(ahead))
                out.append(new)
                memo[value] = new.result
            return memo[value]

        return tuple(clone(v) for v in values)

    def copy(
        self,
        at: _Loop,
        plan: _Async,
        stage: ir.Value,
        k: ir.Value,
        ahead: int | None,
        index: ir.Value | None = None,
        memo: dict[ir.Var, ir.Value] | None = None,
    ) -> list[ir.Instr]:
        """The copy of `plan`'s box (a gather's rows, from `index`: the index at `k`) at
        loop variable `k` into buffer `stage` (`memo`: `offsets_at`'s)."""
        load, out = plan.load, []
        offsets, mask = self.offsets_at(at, load, k, out, memo)
        tile = load.result.type
        layout = _stage_layout(plan.buffer)
        view = self.fresh(load.result.name + ".next", SharedType(tile.dtype, tile.shape, layout))
        out.append(ir.SharedSlice(view, plan.buffer, stage, loc=load.loc))
        if isinstance(load, ir.Gather):
            assert isinstance(index, ir.Var)
            copy = ir.GatherAsync(view, load.tensor, offsets, index, load.axis, mask, loc=load.loc)
            assert plan.gather is not None
            out.append(copy.with_attrs(**plan.gather.attrs, **_made(ahead)))
        else:
            copy = ir.CopyAsync(view, load.tensor, offsets, mask, loc=load.loc)
            out.append(copy.with_attrs(**_made(ahead)))
        return out

    def prefetch(
        self, at: _Loop, load: ir.Load, k: ir.Value, ahead: int | None
    ) -> tuple[ir.Var, list[ir.Instr]]:
        """`load` at loop variable `k`, into a fresh tile."""
        out: list[ir.Instr] = []
        offsets, mask = self.offsets_at(at, load, k, out)
        result = self.fresh(load.result.name + (".next" if ahead else ""), load.result.type)
        new = replace(load, result=result, offsets=offsets, mask=mask, attrs=())
        out.append(new.with_attrs(**_made(ahead)))
        return result, out


# -- helpers ---------------------------------------------------------------------------------


def _staged(instr: ir.Instr) -> bool:
    return isinstance(instr, ir.For) and instr.stages is not None and instr.stages >= 2


def _made(ahead: int | None) -> dict[str, int | bool]:
    """The attributes of a load or copy this pass makes: `ahead` in the loop, else
    `prologue`."""
    return {"ahead": ahead} if ahead else {"prologue": True}


def _made_here(load: ir.Load | ir.Gather) -> bool:
    return any(load.attr(name) is not None for name in ("ahead", "prologue", "unpipelined"))


def _stage_layout(buffer: ir.Var) -> SharedLayout | None:
    """The layout of one stage of a pipeline buffer (its first dim sliced off)."""
    layout = buffer.type.layout
    return None if layout is None else SharedLayout(layout.dims[1:], layout.swizzle)


def _buffer_type(tile: TileType, stages: int, target: Target) -> SharedType:
    shape = tuple(tile.shape)
    layout = staged_layout(tile.dtype, shape, stages, panels=target.has_wgmma)
    return SharedType(tile.dtype, (stages, *shape), layout)


def _const(value: int, loop: ir.For) -> ir.Const:
    return ir.Const(value, loop.var.type.dtype)


def _fills_with_zero_bytes(fill: ir.Const | None, dtype) -> bool:
    """Whether the load's fill (absent: 0 in the dtype) is the code cp.async leaves where
    it reads nothing, all zero bits: not for e8m0, whose 0 is its NaN code."""
    value = 0 if fill is None else fill.value
    if value != 0 or math.copysign(1.0, value) < 0:
        return False
    return not int(np.asarray(dtype.encode(np.asarray([0.0]))).reshape(-1)[0])


def _fill_text(fill: ir.Const | None) -> str:
    return "0 (no zero in its type: NaN)" if fill is None else str(fill.value)


def _skip(loop: ir.For, load: ir.Load | ir.Gather, reason: str) -> ir.Load | ir.Gather:
    """`load` marked unpipelined, with the warning that says why."""
    message = (
        f"{loop.loc}: stages={loop.stages} is not honoured for the load of "
        f"%{load.tensor.name} at {load.loc}: {reason}"
    )
    warnings.warn_explicit(message, PipelineWarning, loop.loc.file, loop.loc.line, registry=_SHOWN)
    return load.with_attrs(unpipelined=reason)


#: Python's once-per-message bookkeeping for `_skip`'s warnings.
_SHOWN: dict = {}


def _mark_nested(loop: ir.For, instr: ir.Instr) -> ir.Instr:
    """`instr` (a branch or an inner loop of `loop`'s body) with its loads marked
    unpipelined: they run only when the branch is taken, or once per inner iteration.
    An inner loop with stages has decided about its loads itself."""
    if _staged(instr):
        return instr
    where = "an inner loop without stages" if isinstance(instr, ir.For) else "a branch"
    reason = f"it is inside {where} of the loop body (at {instr.loc})"

    def mark(block: ir.Block) -> ir.Block:
        out = []
        for inner in block.instrs:
            if inner.BODIES and not _staged(inner):
                inner = replace(inner, **{n: mark(getattr(inner, n)) for n in inner.BODIES})
            elif isinstance(inner, ir.Load | ir.Gather) and not _made_here(inner):
                inner = _skip(loop, inner, reason)
            out.append(inner)
        return ir.Block(tuple(out))

    return replace(instr, **{name: mark(getattr(instr, name)) for name in instr.BODIES})


#: The instructions that only read the tensors they take.
_READS = (ir.Load, ir.LoadScalar, ir.Gather, ir.CopyAsync, ir.GatherAsync)


def _written_tensors(body: ir.Block) -> dict[ir.Var, ir.Instr]:
    """Tensors an instruction of `body` may write: any use of a tensor but a load's or an
    asynchronous copy's source (stores, atomics, whatever else takes a tensor); after
    an `arrive` every tensor, whose other blocks' stores it brings in."""
    found: dict[ir.Var, ir.Instr] = {}
    arrival = next((i for i in walk(body) if isinstance(i, ir.Arrive)), None)
    for instr in walk(body):
        for value in instr.uses():
            tensor = isinstance(value, ir.Var) and isinstance(value.type, TensorType)
            if tensor and (arrival is not None or not isinstance(instr, _READS)):
                found.setdefault(value, instr if not isinstance(instr, _READS) else arrival)
    return found


def _index(body: tuple[ir.Instr, ...], instr: ir.Instr) -> int:
    """The position of `instr` (by identity) in `body`, or -1."""
    return next((n for n, i in enumerate(body) if i is instr), -1)


def _last_use(body: tuple[ir.Instr, ...], value: ir.Var) -> int:
    """The position of the last instruction of `body` that uses `value` (at any depth)."""
    last = -1
    for index, instr in enumerate(body):
        if any(value in inner.uses() for inner in walk(instr)):
            last = index
    return last


__all__ = ["REGISTER_TARGET", "PipelineWarning", "run"]
