"""Gather pipelining, the part of `software_pipeline` that is about gathers' indices.

A gather (rows from an index tile: a paged KV cache's rows from its block table) of a
loop marked `stages=S` is copied with cp.async too, as `gather_async` into S buffers,
when its index can be computed for another iteration: the body instructions it is made
of (its *recipe*) are arithmetic, shape instructions and loads (`load`, `gather`,
`load_scalar`) of tensors the loop does not write, from the loop variable and values
defined before the loop. The copy needs the rows' numbers S-1 iterations ahead, and a
table load issued in the same iteration would stall the copy on it, so the loop carries
the index one iteration further: each iteration issues its copies from the carried
index, then the recipe at k + S·step (its loads marked ``ahead=S``), whose result it
yields:

    %idx.ahead = <recipe at start + (S-1)*step>                 # before the loop
    for k ... iter(..., %idx.ahead, %stage, %prev) {
      async_wait S-2; sync; ...
      gather_async tensor[offsets], %idx.ahead, axis -> buf[%prev] {ahead=S-1}
      async_commit
      %idx.next = <recipe at k + S*step>
      ...
      yield ..., %idx.next, ...
    }

Each thread copies the elements `gather_copy_layout` (a blocked layout with 16-byte runs
where the row allows) gives it, so the index is relayouted to that layout once, where
it is computed; gathers sharing an index (K and V) share it. A masked gather's copies
move the elements of its mask's layout (the gather's own) instead, so neither the mask
nor the index moves. Masked rows (an index outside the tensor, or masked off) are
copied with a zero source size: zeros, no access. Body
instructions that only made the replaced gathers' indices go (the table gather too).

This module owns the recipe (`index_recipe`), the layout and runs of the copies
(`gather_copy`), the instructions that only fed replaced gathers (`feeding_only`) and
the indices a loop carries (`CarriedIndices`). `software_pipeline` decides whether a
gather takes this form (fill, runs, alignment, shared memory: as for a box) and emits
the buffers, waits and copies; it lends `CarriedIndices` its way of computing body
values at another iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tilelang.analysis.gather_copies import gather_copy_layout
from tilelang.analysis.loop_values import LoopValues, carried_reason
from tilelang.ir import nodes as ir
from tilelang.ir.types import TileType
from tilelang.ir.visit import walk
from tilelang.passes import vectorize
from tilelang.passes.analyze import Facts

#: Which carried index a gather's copies read: its index and the type its copies need.
IndexKey = tuple[ir.Var, TileType]

#: `software_pipeline`'s recomputation of body values at another iteration:
#: (values, loop variable, code out, memo, ahead) -> the values there.
Recompute = Callable[
    [tuple[ir.Value, ...], ir.Value, list[ir.Instr], dict[ir.Var, ir.Value], int | None],
    tuple[ir.Value, ...],
]


@dataclass(frozen=True)
class GatherCopy:
    """What a gather's `gather_async`s need beyond a box copy's: the body instructions
    its index is made of (`recipe`, in body order), the index's type in the copy's
    layout, and `vectorize`'s elems, vector and align for the gather in that layout."""

    gather: ir.Gather
    recipe: tuple[ir.Instr, ...]
    index_type: TileType
    elems: int
    vector: int
    align: int

    @property
    def key(self) -> IndexKey:
        """Gathers of one index whose copies have one layout (K and V rows of one block
        table) share a carried index."""
        return self.gather.index, self.index_type

    @property
    def attrs(self) -> dict[str, int]:
        """The attributes of its `gather_async`s."""
        return {"elems": self.elems, "align": self.align}


def gather_copy(
    fn: ir.Function, facts: Facts, gather: ir.Gather, loop: ir.For, writers: dict[ir.Var, ir.Instr]
) -> GatherCopy | str:
    """How `gather` (of `loop`'s body; `writers`: the tensors the loop writes) would be
    copied, or why its index cannot be computed for another iteration."""
    recipe = index_recipe(gather.index, loop, writers)
    if isinstance(recipe, str):
        return f"its index depends on {recipe}"
    tile, index = gather.result.type, gather.index.type
    assert isinstance(tile, TileType) and isinstance(index, TileType)
    copy = gather_copy_layout(tile.shape, tile.dtype, fn.warps * 32)
    if gather.mask is not None and tile.layout is not None:  # copied as its mask's layout
        copy = tile.layout
    dims = [d for d, i in enumerate(index.shape) if i != tile.shape[d]]
    index_type = TileType(index.dtype, tuple(index.shape), copy.reduce(dims))
    moved = replace(
        gather,
        result=ir.Var(gather.result.name, TileType(tile.dtype, tuple(tile.shape), copy)),
        index=ir.Var(gather.index.name, index_type),
    )
    elems, vector, align = vectorize.gather_runs(fn, facts, moved)
    return GatherCopy(gather, recipe, index_type, elems, vector, align)


#: The instructions an index may be computed by, to be computed again for another
#: iteration: cheap, and with no effect but their result (loads of tensors the loop does
#: not write, arithmetic, shapes).
_RECIPE = (
    ir.Load,
    ir.Gather,
    ir.LoadScalar,
    ir.Compute,
    ir.Cast,
    ir.Arange,
    ir.Full,
    ir.Broadcast,
    ir.Reshape,
    ir.Relayout,
    ir.View,
    ir.Transpose,
    ir.Slice,
    ir.Item,
)


def index_recipe(
    index: ir.Var, loop: ir.For, writers: dict[ir.Var, ir.Instr]
) -> tuple[ir.Instr, ...] | str:
    """The instructions of `loop`'s body that `index` is made of (in body order), when
    they can run for any iteration from the loop variable and values defined before the
    loop; else what stops that."""
    values = LoopValues(loop)
    found: dict[int, ir.Instr] = {}

    def visit(value: ir.Value) -> str | None:
        origin = values.origin(value)
        if origin.kind == "outside":
            return None
        if origin.kind == "carried":
            return carried_reason(value)
        if origin.kind == "nested":
            return f"%{value.name}, computed inside a branch or an inner loop"
        instr = origin.instr
        if not isinstance(instr, _RECIPE):
            return f"%{value.name}, computed by {instr.mnemonic} at {instr.loc}"
        tensor = getattr(instr, "tensor", None)
        if tensor is not None and tensor in writers:
            return f"%{value.name}, read from %{tensor.name}, which the loop also writes"
        if id(instr) not in found:
            found[id(instr)] = instr
            for used in instr.uses():
                reason = visit(used)
                if reason is not None:
                    return reason
        return None

    reason = visit(index)
    if reason is not None:
        return reason
    return tuple(i for i in loop.body.instrs if id(i) in found)


def feeding_only(body: tuple[ir.Instr, ...], copies: list[GatherCopy]) -> set[int]:
    """Ids of the body instructions of the copied gathers' index recipes whose results
    only those gathers (once replaced by copies) and other such instructions use: the
    copies compute their indices themselves, so these go."""
    candidates = {id(i): i for c in copies for i in c.recipe}
    return used_only_by(body, candidates, {id(c.gather) for c in copies})


def used_only_by(
    body: tuple[ir.Instr, ...], candidates: dict[int, ir.Instr], gone: set[int]
) -> set[int]:
    """Ids of the `candidates` (body instructions by id) whose results only the body
    instructions in `gone` and other such candidates use: what goes with `gone`."""
    users: dict[ir.Var, set[int]] = {}
    for instr in body:
        for inner in walk(instr):
            for value in inner.uses():
                if isinstance(value, ir.Var):
                    users.setdefault(value, set()).add(id(instr))
    found: set[int] = set()
    changed = True
    while changed:
        changed = False
        for key, instr in candidates.items():
            used_by = set().union(*(users.get(d, set()) for d in instr.defs()))
            if key not in found and used_by <= gone | found:
                found.add(key)
                changed = True
    return found


@dataclass
class CarriedIndices:
    """The gather indices one pipelined loop carries, per `GatherCopy.key`: the value
    carried into this iteration, the value for the next one (computed in the body; the
    carried value until then) and the value for the first (computed before the loop)."""

    recompute: Recompute
    fresh: Callable[[str, TileType], ir.Var]
    values: dict[IndexKey, tuple[ir.Var, ir.Value, ir.Value]] = field(default_factory=dict)

    def index_at(
        self,
        copy: GatherCopy,
        k: ir.Value,
        out: list[ir.Instr],
        memo: dict[ir.Var, ir.Value],
        ahead: int | None,
    ) -> ir.Var:
        """The gather's index at loop variable `k`, in its copy's layout; its recipe is
        recomputed into `out` (once per `memo`, loads marked `ahead`)."""
        gather = copy.gather
        (index,) = self.recompute((gather.index,), k, out, memo, ahead)
        assert isinstance(index, ir.Var)
        if index.type == copy.index_type:
            return index
        key = ir.Var(gather.index.name + "@copy", copy.index_type)  # one relayout per k
        if key not in memo:
            memo[key] = self.fresh(gather.index.name + ".copy", copy.index_type)
            out.append(ir.Relayout(memo[key], index, loc=gather.loc))
        relayouted = memo[key]
        assert isinstance(relayouted, ir.Var)
        return relayouted

    def start(self, copies: list[GatherCopy], k: ir.Value, out: list[ir.Instr]) -> None:
        """The indices at `k` (iteration S-1), computed into `out` before the loop, which
        the loop carries into its first iteration."""
        memo: dict[ir.Var, ir.Value] = {}
        for copy in copies:
            index = self.index_at(copy, k, out, memo, ahead=None)
            if copy.key not in self.values:
                carried = self.fresh(copy.gather.index.name + ".ahead", index.type)
                self.values[copy.key] = (carried, carried, index)

    def current(self, copy: GatherCopy) -> ir.Var:
        """The index this iteration's copies read (carried in)."""
        return self.values[copy.key][0]

    def advance(
        self, copies: list[GatherCopy], k: ir.Value, out: list[ir.Instr], ahead: int
    ) -> None:
        """The indices at `k` (the next iteration's copies), computed into `out` in the
        body: their loads (a block table) have the rest of this iteration to arrive."""
        memo: dict[ir.Var, ir.Value] = {}
        for copy in copies:
            carried, following, init = self.values[copy.key]
            if following is carried:  # not computed yet
                following = self.index_at(copy, k, out, memo, ahead)
                self.values[copy.key] = (carried, following, init)

    def carried(self) -> list[ir.Var]:
        return [carried for carried, _, _ in self.values.values()]

    def following(self) -> list[ir.Value]:
        return [following for _, following, _ in self.values.values()]

    def inits(self) -> list[ir.Value]:
        return [init for _, _, init in self.values.values()]


__all__ = ["CarriedIndices", "GatherCopy", "feeding_only", "gather_copy", "index_recipe"]
