"""Pass `infer_layouts`: gives every register tile of a function a register layout.

Assumes a verified function (`tilelang.ir.verify`); tiles may or may not carry layouts
(the frontend leaves them `None`, text input or a user annotation may give some).

Guarantees (the lowering relies on this contract; T = ``fn.warps * 32``):

1. Every tile-typed Var (instruction results, `For` carried values and results, `If`
   results, inserted `relayout`s) has a layout whose shape is the tile's shape and
   whose ``num_threads`` is T (replication ``rep(r)`` fills the threads of a tile with
   fewer elements than threads).
2. `Compute`: every tile operand has exactly the result's layout. `Cast`: the operand
   has the result's layout. Scalar operands need nothing.
3. `For`: every init, the carried value, the value the body yields and the result have
   one layout. `If`: both yielded values have the result's layout.
4. `Dot(a, b, acc)`: acc and result have one layout. When an mma atom fits (a/b f16 or
   bf16 with an f32 acc: m16n8k16; i8/u8 with an i32 acc: m16n8k32; M % 16 == 0,
   N % 8 == 0, K % atom.k == 0, and warps = wm·wn with wm | M/16, wn | N/8; see
   `dot_layouts`), with warp index w = wm_i·wn + wn_i:

   - acc, result: ``spatial(wm, wn) * local(rm, rn) * atom.c``
   - a: ``(spatial(wm, 1) * replicated(wn, rank=2)) * local(rm, rk) * atom.a``
   - b: ``(replicated(wm, rank=2) * spatial(1, wn)) * local(rk, rn) * atom.b``

   so the warp that owns C block (wm_i, wn_i) holds the A rows wm_i and the B columns
   wn_i. a and b always reach the dot through a `relayout` unless their producer already
   has that layout (the lowering selects ldmatrix there). Without an atom, acc and result
   get the blocked layout and a, b keep whatever layout they have (a generic dot); so
   does a dot whose result layout was given and is not the C layout.
5. `Reduce`: result = ``value_layout.reduce(axis, keepdims=False)`` (a given result
   layout that differs: the reduction writes ``<result>.r`` in that layout, then a
   relayout gives the result). `Scan`: result = operand layout. `AssociativeScan`:
   every value and every result have one layout (a result given another is computed
   in the common one and relayouted). `Transpose`: result =
   ``value_layout.permute(perm)``. `Broadcast` of a tile: value =
   ``result_layout.reduce(broadcast dims, keepdims=True)``. `View`: result = the
   natural view of the value's layout (`view_layout`: each thread's runs of
   consecutive last-dim elements reinterpreted in place), so the per-thread meaning of a
   view with layouts equals the row-major meaning of the view without them; a view whose
   two layouts were both given in the input is kept as is. `Reshape`: any pair of
   layouts (``value_layout.reshape`` when it exists, else the blocked layout; the
   lowering moves data through shared memory when they do not correspond). `Concat`:
   any layouts; the rule proposes, for each value, the result's layout cut to its box
   (`slice_layout`), and for the result of equal parts, a value's layout under a new
   outermost local digit, so parts each thread holds join by relabelling registers.
   `SharedStore`/`Print`: any layout. `Store`: any layout, except that a tile of a type
   that is not a whole number of bytes (u3, u4, f6, ...) is moved to its blocked layout
   when its threads would otherwise write parts of one byte (`holds_whole_bytes`).
   `Atomic`: any layout for the value; its result (the old values), if any, has the
   value's layout, and a `ScatterAtomic`'s too. The mask of a `Store`, `Scatter`,
   `Atomic` or `ScatterAtomic`, and an atomic cas's `expected`, has the value's
   layout (after the value's own rule);
   the mask of a `Load` or `Gather` has the result's.
6. Layouts given in the input are kept (user layouts win); a `relayout` is inserted
   wherever a rule above would otherwise be broken. Inserted relayouts are named
   ``<value>.r`` (``.r2``, ... when taken), placed right before the instruction that
   needs them (inside the loop or branch body for a yielded value), and shared by later
   uses in scope.

How layouts are chosen: each instruction class names a rule (`Instr.LAYOUT`; the rules
are in `tilelang.passes.infer_layouts.rules`, the machinery in `solver`), applied to a
fixpoint with explicit priorities. Every
layout decision is a proposal ``(origin, path, position)``; the best pending proposal is
taken first and each var is decided once:

- origin — where the layout comes from: a layout given in the input (USER), then the
  dot layouts (DOT: a dot's result and a "free" accumulator get the C layout), then
  memory (MEMORY: the blocked default of a `Load`/`SharedLoad` no rule reached, or,
  for a load a free reduced value is computed from elementwise, the reduction's wish,
  `reduction_layout`, when it is cheaper: the reduced axis mostly in registers; a
  `Load` whose row length or offset proves no 16-byte access, `divisors.access_run`,
  gets runs of one access, lanes on adjacent elements, where only elementwise work,
  reductions and global loads and stores none of which moves 16 bytes depend on its
  layout: `access_runs`), then
  the default of other sources (DEFAULT: `Full`, `Arange`, `Broadcast`, `Relayout`);
  defaults are applied only when no proposal is pending, largest tile first.
- path — how the layout reached the var: unchanged through elementwise equalities
  (EXACT: Compute, Cast, For, If, Scan, AssociativeScan), through a shape change
  (SHAPED: Transpose, Reshape, View, Broadcast), or through a reduction (REDUCED), so
  an elementwise layout beats a reduced one;
- position — program order breaks ties.

Propagation runs forward (operand -> result: a result's layout follows from its operands)
and backward into *free* producers only (consumer -> operand): `Load`, `SharedLoad`,
`Full`, `Arange` and `Broadcast` results are free; a `Cast`/`Compute`/`Scan`/
`AssociativeScan`/`Reshape`/`Transpose`/`View` is free when its tile operands are; a
loop-carried value when its init is; an `If` result when both yields are. A free
producer takes the layout its consumer wants, so a `zeros` accumulator gets the C
layout and a scale load broadcast into a product gets that product's layout reduced.
Dot operands a and b propose nothing: their loads keep the blocked layout
(`blocked_layout`) and get a relayout.

Errors raise `LayoutInferenceError` whose message starts with the instruction's source
location and names the tensor, the instruction and what failed: a given layout of the
wrong shape or thread count, a loop's carried value and result given different layouts,
a given view layout that no layout of the value views naturally.
"""

from __future__ import annotations

from tilelang.ir.nodes import Function
from tilelang.ir.visit import defined_vars
from tilelang.passes.infer_layouts.rules import RULES
from tilelang.passes.infer_layouts.solver import Inference, LayoutInferenceError, Rewrite
from tilelang.target import CPU, Target

__all__ = ["RULES", "LayoutInferenceError", "run"]


def run(fn: Function, target: Target = CPU) -> Function:
    """`fn` with a layout on every tile and the relayouts the contract needs."""
    solution = Inference(fn, RULES, target).solve()
    taken = {var.name for var in defined_vars(fn)}
    return Rewrite(solution, taken, RULES).rewrite_function(fn)
