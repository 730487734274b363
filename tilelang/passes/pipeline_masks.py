"""Whether a load of a pipelined loop can be issued for another iteration, the part of
`software_pipeline` that is about addresses and masks (`ahead_blocker`): not when the
loop writes its tensor (a load issued ahead would miss the write), nor when its
offsets depend on a value the body computes from loaded data or by a branch, or carries
from the previous iteration (scalar arithmetic from the loop variable and values from
before the loop is computed again for the later iteration), nor when its mask cannot
be computed ahead.

A load's (a gather's) `mask` must be known where its copy or prefetch is issued, S-1
iterations ahead. It is, when the body instructions it is made of (its *recipe*) are
arithmetic and shape instructions (`pipeline_gathers`' recipe, without loads) from the
loop variable and values defined before the loop: the pass computes the recipe again
for the later iteration, as it does the offsets. A recipe that does not use the loop
variable (rows of padding: ``(tl.arange(0, BM) < n)[:, None]``, broadcast at the load)
gives the same mask in every iteration, so the pass computes it once, before the loop.
A mask made from data the body loads (the copy would wait for that load), carried from
the previous iteration or computed in a branch blocks pipelining, and the warning names
the value.

The pipelined masked load keeps its semantics: a masked-off element reads the fill and
is never read from memory. A copy (`copy_async`, `gather_async`) with a mask does so
with cp.async's zero source size; each thread copies the elements its mask's layout
(the load's) gives it, so the mask needs no relayout.

This module owns that decision (`ahead_blocker`), the recipe of a mask (`mask_recipe`),
whether it varies (`invariant`) and which body instructions only made the masks of
replaced loads (`feeding_masks_only`).
"""

from __future__ import annotations

from tilelang.analysis.loop_values import LoopValues, carried_reason
from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType
from tilelang.passes.pipeline_gathers import index_recipe, used_only_by

#: Loads a recipe may hold for a gather's index, but not for a mask (see the docstring).
_LOADS = (ir.Load, ir.Gather, ir.LoadScalar)


def mask_recipe(
    mask: ir.Var, loop: ir.For, writers: dict[ir.Var, ir.Instr]
) -> tuple[ir.Instr, ...] | str:
    """The body instructions `mask` is made of (in body order), or why it cannot be
    computed for another iteration."""
    recipe = index_recipe(mask, loop, writers)
    if isinstance(recipe, str):
        return recipe
    load = next((i for i in recipe if isinstance(i, _LOADS)), None)
    if load is not None:
        (value,) = load.defs()
        return (
            f"%{value.name}, loaded in the loop body ({load.mnemonic} at {load.loc}): "
            "a copy issued ahead would wait for that load"
        )
    return recipe


def ahead_blocker(
    load: ir.Load | ir.Gather, loop: ir.For, writers: dict[ir.Var, ir.Instr]
) -> str | None:
    """Why `load` (of `loop`'s body; `writers`: the tensors the loop writes) cannot be
    issued at another iteration at all, or None."""
    if load.tensor in writers:
        writer = writers[load.tensor]
        return (
            f"the loop also writes %{load.tensor.name} ({writer.mnemonic} at {writer.loc}), "
            "which a load issued ahead would not see"
        )
    values = LoopValues(loop)

    def why(value: ir.Value) -> str | None:
        origin = values.origin(value)
        if origin.kind == "outside":
            return None
        if origin.kind == "carried":
            return carried_reason(value)
        instr = origin.instr
        if isinstance(instr, ir.Compute | ir.Cast) and isinstance(value.type, ScalarType):
            return next((r for r in map(why, instr.uses()) if r is not None), None)
        source = "from loaded data" if values.from_tiles(instr) else "by a branch"
        where = f" ({instr.mnemonic} at {instr.loc})" if instr is not None else ""
        return f"%{value.name}, computed in the loop body {source}{where}"

    for offset in load.offsets:
        reason = why(offset)
        if reason is not None:
            return f"its offsets depend on {reason}"
    if load.mask is None:
        return None
    recipe = mask_recipe(load.mask, loop, writers)
    return f"its mask %{load.mask.name} depends on {recipe}" if isinstance(recipe, str) else None


def invariant(mask: ir.Var, loop: ir.For) -> bool:
    """Whether `mask` (with no blocker) is the same in every iteration: its recipe does
    not use the loop variable."""
    recipe = mask_recipe(mask, loop, {})
    assert not isinstance(recipe, str)
    return not any(loop.var in instr.uses() for instr in recipe)


def feeding_masks_only(
    body: tuple[ir.Instr, ...],
    replaced: list[ir.Load | ir.Gather],
    loop: ir.For,
    writers: dict[ir.Var, ir.Instr],
    dead: set[int],
) -> set[int]:
    """Ids of the body instructions of the replaced loads' mask recipes that only those
    loads, the instructions in `dead` and other such instructions use: the copies and
    prefetches compute their masks themselves (before the loop when invariant)."""
    candidates = {}
    for load in replaced:
        recipe = mask_recipe(load.mask, loop, writers) if load.mask is not None else ()
        if not isinstance(recipe, str):
            candidates.update({id(i): i for i in recipe})
    return used_only_by(body, candidates, {id(load) for load in replaced} | dead)


__all__ = ["ahead_blocker", "feeding_masks_only", "invariant", "mask_recipe"]
