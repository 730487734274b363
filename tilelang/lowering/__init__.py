"""The lowering: block IR with layouts -> thread IR (docs/design.md §6, step 9).

Assumes every register tile has a layout over `warps * 32` threads and that `compute`
and `cast` operands share their result's layout (the contract of `infer_layouts`);
uses the attributes of `vectorize` (`elems`, `align`) and `plan_shared` (`offset`).
Guarantees a thread-IR function that `verify_thread_function` accepts and that means
what the block IR means.

Instruction selection is layout division (`Layout.divisible_by`): a tile maps onto an
mma, ldmatrix or 16-byte vector access exactly when its layout divides by that atom's
layout. The lowering is split by concern, one module each, and every instruction class
has one function registered with `@lowers(Class)`:

- `context`: the state of one lowering and the services every concern uses (scalars,
  register tiles and their elements, per-thread indices, conversions); `values`: how
  block-IR values live in thread IR;
- `elementwise`: `full`, `arange`, elementwise operators, casts (with the vector
  dequantization recipes of `dequant` (recipe 8, 6/8-bit floats a word at a time, in
  `f16_bytes`), their scalar fallback `scalar_decode`, the
  encodings of `encode`, the bit-level pieces they share in `bits`, and the scale folds
  of `scale_folds`);
- `memory`: global `load` and `store`;
- `indirect`: accesses whose addresses come from data: scalar loads, `item`, gathers;
- `lookup`: a small table indexed by a tile of codes, one shared-memory read each;
- `relayout`: moving tiles between layouts (`relayout`, `reshape`, `transpose`,
  `broadcast`, `view`), through registers or a shared scratch area and `ldmatrix`;
- `concat`: `concat`, relabelling registers or through the shared scratch area;
- `dot`: `mma` or a generic dot;
- `reductions`: reductions, in warps (shuffles) or through shared memory;
- `scans`: `scan` and `associative_scan`, one algorithm on tuples of values: in
  registers, across lanes (shuffles) and warps (shared memory), or through shared memory;
- `shared`: user shared tiles, `copy_async`, barriers;
- `control`: the grid, loops, branches, `print`.
"""

from __future__ import annotations

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.lowering import (
    concat,
    control,
    dot,
    elementwise,
    indirect,
    lookup,
    memory,
    reductions,
    relayout,
    scans,
    shared,
)
from tilelang.lowering.context import LOWERINGS, Lowering, LoweringError, lowers
from tilelang.target import CPU, Target

#: The modules whose `@lowers` registrations make up the lowering.
CONCERNS = (
    elementwise,
    memory,
    indirect,
    lookup,
    relayout,
    concat,
    dot,
    reductions,
    scans,
    shared,
    control,
)

__all__ = ["CONCERNS", "LOWERINGS", "LoweringError", "lower", "lowers"]


def lower(fn: ir.Function, target: Target = CPU) -> t.ThreadFunction:
    """The thread IR of `fn` (which went through the block-IR passes) for `target`."""
    return Lowering(fn, target).run()
