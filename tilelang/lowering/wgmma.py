"""Lowering of a `dot` to the warpgroup mma, `wgmma.mma_async` (sm_90a): A from
registers, B read by the tensor cores straight from shared memory, once per warpgroup
instead of once per warp through ldmatrix.

A dot takes this path (`plans`, decided once from the block IR; `emit`) when everything
below holds; otherwise it keeps
mma.sync (`tilelang.lowering.dot`), which computes the same values:

* the target has the instruction (`Target.has_wgmma`); f16 or bf16 operands, an f32
  accumulator; whole warpgroups (a multiple of 4 warps);
* B is a `shared_load` read a k-step at a time (`analysis.streaming`: nothing else
  uses it), so no register holds it and its ldmatrix reads are simply never emitted;
* the result's layout divides by an m64nNk16 D fragment (`atoms.wgmma_atom`) and A's
  by the A fragment, each warpgroup holding its own 64-row blocks of both (on sm_90a
  `infer_layouts` gives a dot whose B is loaded such layouts,
  `fragments.warpgroup_layouts`; a dot chain of 16 rows a warp has them already);
* B's shared layout is one a matrix descriptor describes (`b_plan`): 128-byte rows
  swizzled in 1024-byte atoms (`shared_layouts.panel_layout`), starting on a whole
  swizzle period (`plan_shared` places swizzled tiles so on sm_90a, and a slice of one
  moves by whole periods). `b_plan` checks every element of B: the descriptor's
  address (thread_mma.py's `Wgmma` formula) must be where the layout keeps it.

K-major B (Kᵀ of a K tile stored row-major: Q·Kᵀ) takes one instruction per k-step
for the whole N of a warpgroup (N ≤ 256); MN-major B (V in P·V, a weight [K, N]) one per
k-step and 64-column panel. A dot is one group: a fence, its wgmmas (each D block's
k-steps in order), a commit and a wait for it, so the values after it are plain
registers again. Where some dot takes this path, the pipeline's cp.async writes (and
shared stores) reach the tensor cores' (async) proxy through a proxy fence after each
wait (`needs_proxy_fence`, decided from the block IR's layouts up front).

A dot that would take this path but for its B, loaded in a pipelined loop and left in
registers by the pipeline (not pipelined, or prefetched: a fill other than +0, which
cp.async cannot write, or a box it cannot copy), is not silent (`report_refusal`): the
stat ``wgmma_refused_{why} {tensor} {file}:{line}`` (why: ``unpipelined``, ``fill``,
``prefetched``) and a `WgmmaFallbackWarning` at the dot's line say why. A masked B is
staged (cp.async zero-fills what its mask fails) when its mask can be computed ahead
(`passes.infer_layouts.solver.staged_tiles`), so a mask alone refuses nothing.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir import thread_mma as tm
from tilelang.ir.atoms import WARPGROUP, WgmmaAtom, wgmma_atom
from tilelang.ir.fragments import quotient_local
from tilelang.ir.layout import Layout
from tilelang.ir.shared_layout import SharedLayout, Swizzle
from tilelang.ir.types import SharedType
from tilelang.ir.visit import walk
from tilelang.lowering.context import Lowering
from tilelang.lowering.thread_builder import imm
from tilelang.lowering.values import SharedTile, TileRegs

#: The descriptor's swizzle: 128-byte rows, 8 of them one 1024-byte atom.
ROW_BYTES = 128
ATOM_BYTES = 8 * ROW_BYTES
#: Both strides the instructions here use are the next 8 rows of an atom group
#: (K-major: 8 more N; MN-major: 8 more k); an MN-major instruction spans one 64-column
#: panel, so the stride between panels is never read.
STRIDE = ATOM_BYTES


@dataclass(frozen=True)
class BPlan:
    """How the wgmmas of one dot read B: `n` columns an instruction, K-major or not
    (`trans`), and the byte offset (from the tile's start) of each instruction's B:
    `starts[kk][nb]` for k-step kk and column block nb."""

    n: int
    trans: bool
    starts: tuple[tuple[int, ...], ...]


def candidate(lo: Lowering, instr: ir.Dot) -> bool:
    """Whether `instr` may take this path before its layouts are looked at: the
    target, whole warpgroups, the dtypes and a B read from shared memory."""
    a = instr.a.type
    return (
        lo.target.has_wgmma
        and lo.threads % WARPGROUP == 0
        and str(a.dtype) in ("f16", "bf16")
        and str(instr.acc.type.dtype) == "f32"
        and isinstance(instr.b, ir.Var)
        and isinstance(lo.producer.get(instr.b), ir.SharedLoad)
    )


def plans(lo: Lowering) -> dict[ir.Var, WgmmaPlan]:
    """The dots (by result) that take this path, judged once from the block IR's
    layouts before any of them is lowered (`needs_proxy_fence` must know up front)."""
    if lo.wgmma_plans is None:
        found = ((instr, _plan(lo, instr)) for instr in walk(lo.fn) if isinstance(instr, ir.Dot))
        lo.wgmma_plans = {instr.result: plan for instr, plan in found if plan is not None}
    return lo.wgmma_plans


def needs_proxy_fence(lo: Lowering) -> bool:
    """Whether some dot takes this path: then shared-memory writes (cp.async waits,
    stores) are followed by a proxy fence before the barrier after them."""
    return bool(plans(lo))


@dataclass(frozen=True)
class WgmmaPlan:
    """The wgmmas of one dot: B's shared layout, how they read it, and per D block
    (its D local, column block, and the A local of each k-step)."""

    layout: SharedLayout
    b: BPlan
    blocks: tuple[tuple[int, int, tuple[int, ...]], ...]


def _plan(lo: Lowering, instr: ir.Dot) -> WgmmaPlan | None:
    if instr.b not in lo.streamed or not candidate(lo, instr):
        return None
    view = lo.producer[instr.b].shared.type
    a, c = instr.a.type.layout, instr.result.type.layout
    if not isinstance(view, SharedType) or view.layout is None or a is None or c is None:
        return None
    # plan_shared starts every swizzled tile on sm_90a on a whole period: offset 0 stands
    # for wherever it is (`emit` checks a constant one).
    k, n = view.shape
    b_reads = b_plan(SharedTile(0, view.dtype, view.layout), k, n)
    if b_reads is None:
        return None
    blocks = _blocks(lo, wgmma_atom(b_reads.n), a, c, k)
    return None if blocks is None else WgmmaPlan(view.layout, b_reads, blocks)


def emit(lo: Lowering, instr: ir.Dot, a: TileRegs, c: TileRegs) -> bool:
    """The dot as one group (a fence, each D block's k-steps in order, a commit and its
    wait) when `plans` has it, or False. B's ldmatrix reads are dropped, A's (if A is
    read from shared memory too) emitted whole first."""
    plan = plans(lo).get(instr.result)
    if plan is None:
        report_refusal(lo, instr)
    shared = lo.deferred_tiles.get(instr.b)
    if plan is None or shared is None or shared.layout != plan.layout:
        return False
    if isinstance(shared.offset, int) and shared.offset % ATOM_BYTES:
        return False
    lo.deferred.pop(instr.b)  # the tensor cores read B from shared memory
    for _, read in lo.deferred.pop(instr.a, ()):
        read()
    atom, b = wgmma_atom(plan.b.n), lo.b
    base = shared.offset if isinstance(shared.offset, t.Expr) else imm(shared.offset)
    if not isinstance(base, t.Imm):
        # The tile's place comes from block-level scalars (the stage of a pipelined
        # loop, carried in a register): the same in every thread.
        uniform = t.Name(b.fresh("wgmma_b"), base.dtype)
        b.emit(t.Uniform(uniform, base))
        base = uniform
    b.emit(tm.WgmmaFence())
    for d_local, col_block, a_locals in plan.blocks:
        for kk, a_local in enumerate(a_locals):
            b.emit(
                tm.Wgmma(
                    plan.b.n,
                    a.dtype,
                    t.Reg(c.local, d_local * atom.c.num_locals * 4),
                    t.Reg(a.local, a_local * atom.a.num_locals * 2),
                    b.add(base, imm(plan.b.starts[kk][col_block])),
                    STRIDE,
                    STRIDE,
                    plan.b.trans,
                )
            )
            b.count("wgmma")
    b.emit(tm.WgmmaCommit())
    b.emit(tm.WgmmaWait(0))
    return True


def _blocks(
    lo: Lowering, atom: WgmmaAtom, a: Layout, c: Layout, k: int
) -> tuple[tuple[int, int, tuple[int, ...]], ...] | None:
    """(D local, column block, A local of each k-step) of every D block, or None when
    the layouts of A and the result do not divide into warpgroup atoms that line up."""
    if not (c.divisible_by(atom.c) and a.divisible_by(atom.a)):
        return None
    qc, qa = (c / atom.c).table(), (a / atom.a).table()
    groups = lo.threads // WARPGROUP
    if qc.shape[0] != groups or qa.shape[0] != groups:
        return None
    blocks = []
    for local in range(qc.shape[1]):
        rows, cols = qc[:, local, 0], qc[:, local, 1]
        if not (cols == cols[0]).all():
            return None  # the groups would read different B columns in one instruction
        a_locals = tuple(quotient_local(qa, rows, kk, rows=True) for kk in range(k // atom.k))
        if any(x is None for x in a_locals):
            return None
        blocks.append((local, int(cols[0]), a_locals))
    return tuple(blocks)


def b_plan(shared: SharedTile, k: int, n: int) -> BPlan | None:
    """How descriptors read B ([k, n] in `shared`), checked element by element, or
    None when no descriptor of the 128-byte swizzle reads this layout."""
    layout, dtype = shared.layout, shared.dtype
    if dtype not in (dtypes.f16, dtypes.bf16) or layout.swizzle != Swizzle.for_bytes(128, 16):
        return None
    if isinstance(shared.offset, int) and shared.offset % ATOM_BYTES:
        return None
    k_inner, n_inner = layout.dims[0][-1].stride, layout.dims[1][-1].stride
    if k_inner == 1 and k % 64 == 0 and n % 8 == 0:
        trans, width = False, _largest_n(n)
    elif n_inner == 1 and n % 64 == 0 and k % 16 == 0:
        trans, width = True, 64
    else:
        return None
    starts = tuple(
        tuple(2 * int(layout.unswizzled_offset((16 * kk, width * nb))) for nb in range(n // width))
        for kk in range(k // 16)
    )
    plan = BPlan(width, trans, starts)
    return plan if _reads_the_layout(plan, shared, k, n) else None


def _largest_n(n: int) -> int:
    """The widest instruction (at most 256 columns, a multiple of 8) that divides n."""
    return max(w for w in range(8, min(n, 256) + 1, 8) if n % w == 0)


def _reads_the_layout(plan: BPlan, shared: SharedTile, k: int, n: int) -> bool:
    """Whether the descriptor formula (thread_mma.py's `Wgmma`) at each instruction's start
    gives, for every element of B, the byte the shared layout keeps it at."""
    kk, nn = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
    kr, nr = kk % 16, nn % plan.n
    if plan.trans:
        within = 2 * (nr % 64) + STRIDE * (nr // 64) + ROW_BYTES * (kr % 8) + STRIDE * (kr // 8)
    else:
        within = ROW_BYTES * (nr % 8) + STRIDE * (nr // 8) + 2 * kr
    if (np.asarray(plan.starts) % 16).any():
        return False  # a descriptor holds its start in 16-byte units
    starts = np.asarray(plan.starts)[kk // 16, nn // plan.n]
    address = starts + within
    swizzled = address ^ (((address >> 7) & 7) << 4)
    return bool((swizzled == 2 * shared.layout.offset((kk, nn))).all())


class WgmmaFallbackWarning(UserWarning):
    """A dot that keeps mma.sync on a warpgroup-mma target because the pipeline left its
    B in registers; the message starts with the dot's `file:line:col` and says why."""


#: The instructions a dot's B passes through from its load unchanged in value.
_SAME_VALUES = (ir.Relayout, ir.Reshape, ir.Transpose, ir.View)


def report_refusal(lo: Lowering, instr: ir.Dot) -> None:
    """Counts and warns (module docstring) when `instr`, not planned, fits the warpgroup
    mma in all but its B, loaded in a pipelined loop that left it in registers. Dots
    whose B is loaded outside a pipelined loop keep mma.sync by design and say nothing."""
    a = instr.a.type
    fits = (
        lo.target.has_wgmma
        and lo.threads % WARPGROUP == 0
        and str(a.dtype) in ("f16", "bf16")
        and str(instr.acc.type.dtype) == "f32"
    )
    load = _b_load(lo, instr.b) if fits else None
    if load is None:
        return
    why, tag = _why_in_registers(load)
    where = f"{instr.loc.file.rsplit('/', 1)[-1]}:{instr.loc.line}"
    lo.b.count(f"wgmma_refused_{tag} {load.tensor.name} {where}")
    message = (
        f"{instr.loc}: this dot keeps mma.sync on {lo.target.name}, not the warpgroup mma, "
        f"which reads B from shared memory: its B, the load of %{load.tensor.name} at "
        f"{load.loc}, stays in registers because {why}"
    )
    warnings.warn_explicit(
        message, WgmmaFallbackWarning, instr.loc.file, instr.loc.line, registry=_SHOWN
    )


#: Python's once-per-message bookkeeping for `report_refusal`'s warnings.
_SHOWN: dict = {}


def _b_load(lo: Lowering, value: ir.Value) -> ir.Load | None:
    """The load `value` (a dot's B) comes from, through relayouts and shape changes and
    from a loop's carried value to what its body yields (a prefetch), when the pipeline
    left it in registers (`unpipelined`, or issued `ahead`); else None."""
    yielded = _yielded(lo.fn)
    seen: set[ir.Var] = set()
    while isinstance(value, ir.Var) and value not in seen:
        seen.add(value)
        producer = lo.producer.get(value)
        if isinstance(producer, _SAME_VALUES):
            value = producer.value
        elif isinstance(producer, ir.Load):
            pipelined = producer.attr("unpipelined") is not None or producer.attr("ahead")
            return producer if pipelined else None
        elif producer is None and value in yielded:
            value = yielded[value]
        else:
            return None
    return None


def _yielded(fn: ir.Function) -> dict[ir.Var, ir.Value]:
    """Each carried value of `fn`'s loops -> what the loop body yields for it."""
    found: dict[ir.Var, ir.Value] = {}
    for loop in walk(fn):
        if isinstance(loop, ir.For) and loop.body.instrs:
            end = loop.body.instrs[-1]
            if isinstance(end, ir.Yield):
                found.update(zip(loop.carried, end.values, strict=True))
    return found


def _why_in_registers(load: ir.Load) -> tuple[str, str]:
    """Why the pipeline left `load` in registers, and its stat's tag."""
    unpipelined = load.attr("unpipelined")
    if unpipelined is not None:
        return f"it is not pipelined: {unpipelined}", "unpipelined"
    fill = 0.0 if load.fill is None else load.fill.value
    if fill != 0 or np.copysign(1.0, fill) < 0:
        return (
            f"its fill is {fill}, and cp.async writes zero bytes where it reads nothing, "
            "so the pipeline prefetches it into registers",
            "fill",
        )
    return (
        "cp.async cannot copy it (runs not 4, 8 or 16 aligned bytes, or no shared memory "
        "left), so the pipeline prefetches it into registers",
        "prefetched",
    )


__all__ = [
    "BPlan",
    "WgmmaFallbackWarning",
    "WgmmaPlan",
    "b_plan",
    "candidate",
    "emit",
    "needs_proxy_fence",
    "plans",
    "report_refusal",
]
