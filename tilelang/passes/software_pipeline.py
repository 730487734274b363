"""pipeline: multi-buffered asynchronous copies for loops marked `stages=S`.

Assumes layouts are inferred (a dot operand is a `load` whose only use is a
`relayout` into the mma operand layout). Guarantees the same results, with every
such load of a loop with `stages=S` (S ≥ 2) turned into a `copy_async` into one of S
shared buffers, issued S-1 iterations ahead:

    buf = shared_alloc : shared<dtype, [S, *tile]>
    copy_async tensor[offsets(start + s*step)] -> buf[s]; async_commit      (s < S-1)
    for k ... {
      async_wait S-2; sync                        # stage i = (k - start) / step % S has landed
      a = shared_load buf[i % S] : tile<..., mma operand layout>   # was relayout(load ...)
      copy_async tensor[offsets(k + (S-1)*step)] -> buf[(i + S-1) % S]; async_commit
      ...
    }
    async_wait 0

The `sync` also orders the previous iteration's reads of the buffer the new copy
overwrites. Copies past the loop's end are masked like any load (zero fill, no
access outside the tensor), so no guard is needed. Only loads of whole-byte dtypes
with no fill (or fill 0) whose offsets are scalar arithmetic on the loop variable and
loop-invariant values are pipelined; the others stay as they are.
"""

from __future__ import annotations

from dataclasses import replace

from tilelang.dtypes import i32
from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType, SharedType, TileType
from tilelang.ir.visit import defined_vars, walk
from tilelang.target import CPU, Target

INDEX = ScalarType(i32)


def run(fn: ir.Function, target: Target = CPU) -> ir.Function:
    names = {v.name for v in (*fn.params, *fn.sizes, *defined_vars(fn))}
    return replace(fn, body=_Pipeliner(names).block(fn.body))


class _Pipeliner:
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def fresh(self, hint: str, type_) -> ir.Var:
        index = 0
        while True:
            index += 1
            name = f"{hint}.p{index}"
            if name not in self.names:
                self.names.add(name)
                return ir.Var(name, type_)

    def block(self, block: ir.Block) -> ir.Block:
        out: list[ir.Instr] = []
        for instr in block.instrs:
            if instr.BODIES:
                bodies = {name: self.block(getattr(instr, name)) for name in instr.BODIES}
                instr = replace(instr, **bodies)
            if isinstance(instr, ir.For) and instr.stages is not None and instr.stages >= 2:
                out.extend(self.pipeline(instr))
            else:
                out.append(instr)
        return ir.Block(tuple(out))

    # -- one loop ----------------------------------------------------------------------

    def pipeline(self, loop: ir.For) -> list[ir.Instr]:
        body = loop.body.instrs
        defined_here = {v for i in walk(loop.body) for v in i.defs()} | {loop.var, *loop.carried}
        candidates = [
            (load, relayout)
            for load, relayout in _load_relayout_pairs(body)
            if self.offsets_clonable(load, body, loop.var, defined_here)
        ]
        if not candidates:
            return [loop]
        stages = loop.stages
        prologue: list[ir.Instr] = []
        buffers = {}
        for load, _ in candidates:
            tile = load.result.type
            assert isinstance(tile, TileType)
            buffer = self.fresh(
                load.result.name + ".smem", SharedType(tile.dtype, (stages, *tile.shape))
            )
            buffers[load] = buffer
            prologue.append(ir.SharedAlloc(buffer, loc=load.loc))
        for s in range(stages - 1):
            k = self.scalar(
                "add",
                loop.start,
                self.scalar("mul", ir.Const(s, i32), loop.step, prologue),
                prologue,
            )
            for load, _ in candidates:
                prologue.extend(self.copy(load, buffers[load], ir.Const(s, i32), k, loop.var, body))
            prologue.append(ir.AsyncCommit(loc=loop.loc))

        steady: list[ir.Instr] = []
        iteration = self.scalar(
            "div", self.scalar("sub", loop.var, loop.start, steady), loop.step, steady
        )
        stage = self.scalar("rem", iteration, ir.Const(stages, i32), steady)
        steady += [ir.AsyncWait(stages - 2, loc=loop.loc), ir.Sync(loc=loop.loc)]
        for load, relayout in candidates:
            view = self.fresh(load.result.name + ".stage", SharedType(*_shape_of(load)))
            steady.append(ir.SharedSlice(view, buffers[load], stage, loc=load.loc))
            steady.append(ir.SharedLoad(relayout.result, view, loc=relayout.loc))
        ahead = self.scalar("mul", ir.Const(stages - 1, i32), loop.step, steady)
        next_k = self.scalar("add", loop.var, ahead, steady)
        next_stage = self.scalar(
            "rem",
            self.scalar("add", iteration, ir.Const(stages - 1, i32), steady),
            ir.Const(stages, i32),
            steady,
        )
        for load, _ in candidates:
            steady.extend(self.copy(load, buffers[load], next_stage, next_k, loop.var, body))
        steady.append(ir.AsyncCommit(loc=loop.loc))

        dropped = {id(i) for pair in candidates for i in pair}
        first = min(body.index(load) for load, _ in candidates)
        new_body: list[ir.Instr] = []
        for index, instr in enumerate(body):
            if index == first:
                new_body.extend(steady)
            if id(instr) not in dropped:
                new_body.append(instr)
        pipelined = replace(loop, body=ir.Block(tuple(new_body)))
        return [*prologue, pipelined, ir.AsyncWait(0, loc=loop.loc)]

    def scalar(self, op: str, a: ir.Value, b: ir.Value, out: list[ir.Instr]) -> ir.Value:
        if isinstance(a, ir.Const) and isinstance(b, ir.Const):
            folded = {"add": a.value + b.value, "sub": a.value - b.value, "mul": a.value * b.value}
            if op in folded:
                return ir.Const(folded[op], i32)
        if op == "mul" and isinstance(a, ir.Const) and a.value == 1:
            return b
        if op in ("add", "sub") and isinstance(b, ir.Const) and b.value == 0:
            return a
        result = self.fresh(op, INDEX)
        out.append(ir.Compute(result, op, (a, b)))
        return result

    # -- offsets at another iteration --------------------------------------------------

    def offsets_clonable(self, load: ir.Load, body, var: ir.Var, defined_here: set[ir.Var]) -> bool:
        if load.fill is not None and load.fill.value != 0:
            return False
        if load.result.type.dtype.bits % 8:
            return False
        definitions = {d: i for i in body for d in i.defs()}

        def ok(value: ir.Value) -> bool:
            if isinstance(value, ir.Const) or value == var or value not in defined_here:
                return True
            instr = definitions.get(value)
            return (
                isinstance(instr, ir.Compute | ir.Cast)
                and isinstance(value.type, ScalarType)
                and all(ok(u) for u in instr.uses())
            )

        return all(ok(o) for o in load.offsets)

    def copy(
        self, load: ir.Load, buffer: ir.Var, stage: ir.Value, k: ir.Value, var, body
    ) -> list[ir.Instr]:
        out: list[ir.Instr] = []
        definitions = {d: i for i in body for d in i.defs()}
        cloned: dict[ir.Var, ir.Value] = {var: k}

        def clone(value: ir.Value) -> ir.Value:
            if isinstance(value, ir.Const) or value not in definitions:
                return cloned.get(value, value)
            if value not in cloned:
                instr = definitions[value]
                (result,) = instr.defs()
                new = self.fresh(result.name, result.type)
                operands = instr.map_operands(clone)
                out.append(replace(operands, result=new))
                cloned[value] = new
            return cloned[value]

        offsets = tuple(clone(o) for o in load.offsets)
        view = self.fresh(load.result.name + ".next", SharedType(*_shape_of(load)))
        out.append(ir.SharedSlice(view, buffer, stage, loc=load.loc))
        out.append(ir.CopyAsync(view, load.tensor, offsets, loc=load.loc))
        return out


def _shape_of(load: ir.Load) -> tuple:
    tile = load.result.type
    return tile.dtype, tile.shape


def _load_relayout_pairs(body: tuple[ir.Instr, ...]) -> list[tuple[ir.Load, ir.Relayout]]:
    uses: dict[ir.Var, list[ir.Instr]] = {}
    for instr in body:
        for inner in walk(instr):
            for value in inner.uses():
                if isinstance(value, ir.Var):
                    uses.setdefault(value, []).append(inner)
    pairs = []
    for instr in body:
        if isinstance(instr, ir.Load):
            users = uses.get(instr.result, [])
            if len(users) == 1 and isinstance(users[0], ir.Relayout) and users[0] in body:
                pairs.append((instr, users[0]))
    return pairs
