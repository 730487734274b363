"""The layout rules of `infer_layouts`, one class per rule an instruction can name
(`Instr.LAYOUT`), each saying what it does in phase 1 (`scan`: which tiles it defines,
how their layouts follow from its operands' and back) and in phase 2 (`rewrite`: the
layouts its operands must have, reached through inserted relayouts).

A new instruction usually names an existing rule: `elementwise` for anything whose
result has its tile operands' layout, `source.default` for a producer that may take
any layout. A new rule is a class here and a line in `RULES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from tilelang.analysis.layout_policy import (
    blocked_layout,
    dot_layouts,
    holds_whole_bytes,
    reduction_layout,
    view_layout,
)
from tilelang.ir import nodes
from tilelang.ir.layout import Layout, LayoutError, local
from tilelang.ir.nodes import Instr, Relayout, Value, Var
from tilelang.ir.types import TileType
from tilelang.ir.visit import RewriteResult
from tilelang.passes.infer_layouts.solver import (
    DEFAULT,
    EXACT,
    MEMORY,
    REDUCED,
    SHAPED,
    Inference,
    Rewrite,
    is_tile,
    layout_error,
)

Transform = Callable[[Layout], Layout | None]


class AnyLayout:
    """`none`: tile operands keep whatever layout they have (stores to shared memory,
    print); tile results, if any, are decided by other rules or the default."""

    def scan(self, inference: Inference, instr: Instr) -> None:
        for var in instr.defs():
            if is_tile(var):
                inference.add(var, instr, free=False)

    def rewrite(self, rewrite: Rewrite, instr: Instr) -> RewriteResult:
        return rewrite.generic(instr)


class Source(AnyLayout):
    """`source.memory` / `source.default`: a producer that may take any layout (`free`):
    its consumers' wishes decide, else the blocked default of its origin."""

    def __init__(self, origin: int) -> None:
        self.origin = origin

    def scan(self, inference: Inference, instr: Instr) -> None:
        for var in instr.defs():
            if is_tile(var):
                inference.add(var, instr, free=True, root=self.origin)


class Elementwise(AnyLayout):
    """`elementwise`: the result and every tile operand share one layout."""

    def scan(self, inference: Inference, instr: Instr) -> None:
        (result,) = instr.defs()
        if not is_tile(result):
            return
        tiles = [v for v in instr.uses() if is_tile(v)]
        inference.add(result, instr, free=all(inference.is_free(v) for v in tiles))
        for value in tiles:
            inference.equal(value, result)

    def rewrite(self, rewrite: Rewrite, instr: Instr) -> RewriteResult:
        new = rewrite.generic(instr)
        (result,) = new.defs()
        want = rewrite.layout_of(result)
        return rewrite.with_operands(instr, new, dict.fromkeys(instr.OPERANDS, want))


class ElementwiseTuple(AnyLayout):
    """`elementwise.tuple`: an elementwise operation with several results
    (`associative_scan`): every tile operand and every result share one layout. The
    results are computed in the first result's layout; a result given another layout is
    computed in that one and relayouted. A body (the scalar combine function) needs no
    layout."""

    def scan(self, inference: Inference, instr: Instr) -> None:
        results = [v for v in instr.defs() if is_tile(v)]
        tiles = [v for v in instr.uses() if is_tile(v)]
        free = all(inference.is_free(v) for v in tiles)
        for result in results:
            inference.add(result, instr, free=free)
        for value in tiles:
            inference.equal(value, results[0])
        for result in results[1:]:
            inference.equal(results[0], result)
        for body in instr.bodies():
            inference.scan_block(body)

    def rewrite(self, rewrite: Rewrite, instr: Instr) -> RewriteResult:
        rewrite.yield_wants.append((None,) * len(instr.defs()))  # scalars: no layout
        try:
            new = rewrite.generic(instr)
        finally:
            rewrite.yield_wants.pop()
        results = new.defs()
        want = rewrite.layout_of(results[0])
        after: list[Instr] = []
        kept = []
        for result in results:
            if rewrite.layout_of(result) == want:
                kept.append(result)
                continue
            temp = Var(rewrite.fresh(result.name), replace(result.type, layout=want))
            after.append(Relayout(result, temp, loc=instr.loc))
            kept.append(temp)
        new = replace(new, **{instr.RESULTS[0]: tuple(kept)})
        converted = rewrite.with_operands(instr, new, dict.fromkeys(instr.OPERANDS, want))
        return [*converted, *after]


class Shaped(AnyLayout):
    """A result whose layout is a function of its operand's (and back, when free)."""

    def transforms(self, inference: Inference, instr) -> tuple[Transform, Transform | None]:
        raise NotImplementedError

    def scan(self, inference: Inference, instr) -> None:
        forward, backward = self.transforms(inference, instr)
        inference.add(instr.result, instr, free=inference.is_free(instr.value))
        inference.edge(instr.value, instr.result, forward, SHAPED, backward=False)
        if backward is not None:
            inference.edge(instr.result, instr.value, backward, SHAPED, backward=True)


class TransposeRule(Shaped):
    """`transpose`: the result's layout is the value's, permuted."""

    def transforms(self, inference: Inference, instr: nodes.Transpose):
        perm, inverse = list(instr.perm), _inverse(instr.perm)
        return (lambda layout: layout.permute(perm)), (lambda layout: layout.permute(inverse))

    def rewrite(self, rewrite: Rewrite, instr: nodes.Transpose) -> RewriteResult:
        new = rewrite.generic(instr)
        want = new.result.type.layout.permute(_inverse(instr.perm))
        return rewrite.with_operands(instr, new, {"value": want})


class ReshapeRule(Shaped):
    """`reshape`: the value's layout reshaped when modes allow, else the blocked layout
    (the lowering then moves the data through shared memory)."""

    def transforms(self, inference: Inference, instr: nodes.Reshape):
        source, result = instr.value.type, instr.result.type

        def forward(layout: Layout) -> Layout:
            try:
                return layout.reshape(result.shape)
            except LayoutError:
                return blocked_layout(result.shape, result.dtype, inference.threads)

        def backward(layout: Layout) -> Layout | None:
            try:
                return layout.reshape(source.shape)
            except LayoutError:
                return None

        return forward, backward


class SliceRule(Shaped):
    """`slice`: when the box keeps each thread's elements of it in its own registers —
    every dim cut only along local digits of the value's layout (whole blocks of them)
    — the value's layout with those digits fixed, so the slice renames registers; else
    the blocked layout (the lowering moves the box through shared memory).

    Back, to a free value: the layout in which this box and every box like it (the same
    widths, at multiples of them) are a rename — an outermost local digit per cut dim
    over the boxes (`sliced_whole`) — unless that layout replicates the value more than
    its size forces: slicing a large tile by rows must not hand every thread the whole
    tile."""

    def transforms(self, inference: Inference, instr: nodes.Slice):
        result = instr.result.type

        def forward(layout: Layout) -> Layout:
            kept = slice_layout(layout, instr.starts, instr.stops)
            if kept is None:
                return blocked_layout(result.shape, result.dtype, inference.threads)
            return kept

        def backward(layout: Layout) -> Layout | None:
            whole = sliced_whole(layout, instr.value.type.shape, instr.starts, instr.stops)
            elements = math.prod(instr.value.type.shape)
            if whole is None or whole.replication > max(1, inference.threads // elements):
                return None
            return whole

        return forward, backward


def sliced_whole(
    layout: Layout, shape: Sequence[int], starts: Sequence[int], stops: Sequence[int]
) -> Layout | None:
    """The layout of a `shape` tile whose box [starts, stops) has `layout`, with each
    box of those widths at multiples of them in locals of its own (box k of a cut dim in
    the k-th block of each thread's locals): `slice_layout` gives `layout` back for every
    such box. None when a box width does not divide its dim or a start is off its grid."""
    outer = []
    for size, start, stop in zip(shape, starts, stops, strict=True):
        width = stop - start
        if size % width or start % width:
            return None
        outer.append(size // width)
    return local(*outer) * layout if math.prod(outer) > 1 else layout


def slice_layout(layout: Layout, starts: Sequence[int], stops: Sequence[int]) -> Layout | None:
    """The layout of the box [starts, stops) of a tile in `layout` in which every thread
    holds its elements of the box at the same places as before, when the box is whole
    blocks along local digits: each dim of size n cut to a size w that divides n, at a
    multiple of w, the digits above w all local. None otherwise."""
    for d, (start, stop) in enumerate(zip(starts, stops, strict=True)):
        size, width = layout.shape[d], stop - start
        if width == size:
            continue
        if size % width or start % width:
            return None
        # Split dim d into (size / width, width) and drop the outer part, which must be
        # held in locals (reduce drops local digits and turns thread digits into
        # replication, which would give threads elements they do not hold).
        shape = [*layout.shape[:d], size // width, width, *layout.shape[d + 1 :]]
        try:
            split = layout.reshape(shape)
        except LayoutError:
            return None
        if (
            split.reduce(d).num_threads != split.num_threads
            or split.reduce(d).replication != split.replication
        ):
            return None
        layout = split.reduce(d, keepdims=False)
    return layout


class ConcatRule(AnyLayout):
    """`concat`: a value's layout follows from the result's as the layout of its box
    (`slice_layout`), and the result's from a value's when the values are equal parts
    along the axis: a new outermost local digit over the parts (value k in locals
    [k·N, (k+1)·N) of each thread), so concatenating parts each thread holds — the
    halves `tl.split` cut along local digits — relabels registers; for parts one wide,
    an innermost digit (value k in locals k, k + P, ...), so a joined row is each
    thread's consecutive elements. Values keep their
    layouts (no relayout is inserted): the lowering moves every value through one
    shared round trip when some thread lacks an element, which is cheaper than a
    relayout per value."""

    def scan(self, inference: Inference, instr: nodes.Concat) -> None:
        result, axis = instr.result, instr.axis
        inference.add(result, instr, free=all(inference.is_free(v) for v in instr.values))
        widths = [v.type.shape[axis] for v in instr.values]
        counts = [len(widths) if d == axis else 1 for d in range(result.type.rank)]
        # Parts one wide (a Triton join) go innermost: the row they interleave into is
        # then each thread's run of consecutive elements, stored with the widest accesses.
        over_parts = (
            (lambda layout: layout.local(*counts))
            if widths == [1] * len(widths)
            else local(*counts).__mul__
        )
        start = 0
        for value, width in zip(instr.values, widths, strict=True):
            starts = [start if d == axis else 0 for d in range(result.type.rank)]
            stops = [start + width if d == axis else n for d, n in enumerate(result.type.shape)]
            start += width
            if len(set(widths)) == 1:
                inference.edge(value, result, over_parts, SHAPED, backward=False)
            inference.edge(
                result,
                value,
                lambda layout, a=tuple(starts), b=tuple(stops): slice_layout(layout, a, b),
                SHAPED,
                backward=True,
            )


class ViewRule(Shaped):
    """`view`: the natural view of the value's layout (`view_layout`), so reinterpreting
    each thread's bits means the row-major reinterpretation; a view whose two layouts
    were both given is kept as it is."""

    def transforms(self, inference: Inference, instr: nodes.View):
        source, result = instr.value.type, instr.result.type
        group = result.dtype.bits // math.gcd(source.dtype.bits, result.dtype.bits)
        # A layout the view can read in place, for a value whose layout cannot be.
        fallback = blocked_layout(source.shape, source.dtype, inference.threads, min_vec=group)

        def forward(layout: Layout) -> Layout:
            natural = view_layout(layout, source.dtype, result.dtype)
            if natural is None:  # the value is relayouted to the fallback first (rewrite)
                natural = view_layout(fallback, source.dtype, result.dtype)
            return natural

        return forward, lambda layout: view_layout(layout, result.dtype, source.dtype)

    def rewrite(self, rewrite: Rewrite, instr: nodes.View) -> RewriteResult:
        new = rewrite.generic(instr)
        if instr.value.name in rewrite.given and instr.result.name in rewrite.given:
            return new  # both layouts given: the input means the per-thread view
        result = new.result.type
        want = view_layout(result.layout, result.dtype, new.value.type.dtype)
        if want is None:
            raise layout_error(
                instr,
                instr.result,
                f"the layout {result.layout} is no view of a {new.value.type.dtype} tile: its "
                "innermost locals must be a run of the last dim holding whole elements of both "
                "dtypes",
            )
        return rewrite.with_operands(instr, new, {"value": want})


class BroadcastRule(Source):
    """`broadcast`: a free producer (the default origin); a tile value takes the result's
    layout reduced over the broadcast dims."""

    def __init__(self) -> None:
        super().__init__(DEFAULT)

    def scan(self, inference: Inference, instr: nodes.Broadcast) -> None:
        super().scan(inference, instr)
        if is_tile(instr.value):
            dims = _broadcast_dims(instr.value.type, instr.result.type)
            inference.edge(
                instr.result, instr.value, lambda layout: layout.reduce(dims), SHAPED, True
            )

    def rewrite(self, rewrite: Rewrite, instr: nodes.Broadcast) -> RewriteResult:
        new = rewrite.generic(instr)
        if not is_tile(new.value):
            return new
        dims = _broadcast_dims(new.value.type, new.result.type)
        return rewrite.with_operands(instr, new, {"value": new.result.type.layout.reduce(dims)})


class LoadRule(Source):
    """`load`: a free producer (the memory origin); a `mask` operand, when there is one,
    takes the result's layout (each thread holds the mask of every element it loads),
    and the result's layout is a wish for it while it is free."""

    def __init__(self) -> None:
        super().__init__(MEMORY)

    def scan(self, inference: Inference, instr: nodes.Load) -> None:
        super().scan(inference, instr)
        if is_tile(getattr(instr, "mask", None)):
            inference.edge(instr.result, instr.mask, _same, EXACT, True)

    def rewrite(self, rewrite: Rewrite, instr: nodes.Load) -> RewriteResult:
        new = rewrite.generic(instr)
        return rewrite.with_operands(instr, new, self.wants(new))

    def wants(self, new: Instr) -> dict[str, Layout | None]:
        """The layouts of the operands, from the result's."""
        if not is_tile(getattr(new, "mask", None)):
            return {}
        return {"mask": new.result.type.layout}


class GatherRule(LoadRule):
    """`gather`: a load's rule (`load`); the index tile takes the result's layout reduced
    over the dims it broadcasts along, so each thread holds the index of every element
    it loads."""

    def scan(self, inference: Inference, instr: nodes.Gather) -> None:
        super().scan(inference, instr)
        dims = _broadcast_dims(instr.index.type, instr.result.type)
        inference.edge(instr.result, instr.index, lambda layout: layout.reduce(dims), SHAPED, True)

    def rewrite(self, rewrite: Rewrite, instr: nodes.Gather) -> RewriteResult:
        new = rewrite.generic(instr)
        dims = _broadcast_dims(new.index.type, new.result.type)
        wants = {"index": new.result.type.layout.reduce(dims), **self.wants(new)}
        return rewrite.with_operands(instr, new, wants)


class LookupRule(AnyLayout):
    """`lookup`: the result takes the index's layout (each thread reads the entry of
    every index it holds, so a lookup indexed by an mma fragment is that fragment, with
    no relayout before its dot); the table keeps whatever layout it has (the lowering
    stages it through shared memory)."""

    def scan(self, inference: Inference, instr: nodes.Lookup) -> None:
        inference.add(instr.result, instr, free=inference.is_free(instr.index))
        inference.equal(instr.index, instr.result)

    def rewrite(self, rewrite: Rewrite, instr: nodes.Lookup) -> RewriteResult:
        new = rewrite.generic(instr)
        return rewrite.with_operands(instr, new, {"index": rewrite.layout_of(new.result)})


class ReduceRule(AnyLayout):
    """`reduce`: the result has the value's layout reduced over the axis; a result given
    another layout is computed in that one and relayouted. The loads a free value is
    computed from elementwise (tiles of its shape) take the reduction's wish
    (`reduction_layout`) as their default instead of the blocked layout, when it is
    cheaper: the axis then folds mostly in each thread's registers, and the loads, the
    elementwise chain and the operands broadcast into it follow."""

    def scan(self, inference: Inference, instr: nodes.Reduce) -> None:
        if not is_tile(instr.result):
            return  # a reduction to a scalar
        inference.add(instr.result, instr, free=False)
        axis = instr.axis
        inference.edge(
            instr.value, instr.result, lambda layout: layout.reduce(axis, False), REDUCED, False
        )
        if inference.is_free(instr.value):
            loads, broadcasts = _reduced_sources(inference, instr.value)
            loaded = [load.type.dtype for load in loads]
            shape = instr.value.type.shape
            caps = [inference.caps[n] for n in map(inference.name, loads) if n in inference.caps]
            cap = min(caps, default=None)
            wish = reduction_layout(shape, axis, inference.threads, loaded, broadcasts, cap)
            for load in loads if wish is not None else ():
                inference.wishes.setdefault(inference.name(load), wish)

    def rewrite(self, rewrite: Rewrite, instr: nodes.Reduce) -> RewriteResult:
        new = rewrite.generic(instr)
        if not is_tile(new.result):
            return new
        natural = new.value.type.layout.reduce(instr.axis, keepdims=False)
        if natural == new.result.type.layout:
            return new
        temp = Var(rewrite.fresh(instr.result.name), replace(new.result.type, layout=natural))
        return [replace(new, result=temp), Relayout(new.result, temp, loc=instr.loc)]


def _reduced_sources(inference: Inference, value: Var) -> tuple[list[Var], list[list[int]]]:
    """What a reduced free `value` is computed from, through elementwise instructions on
    tiles of its shape: the loaded tiles, and the dims along which the other operands
    are broadcast."""
    shape = tuple(value.type.shape)
    loads, broadcasts, seen, stack = [], [], set(), [value]
    while stack:
        var = stack.pop()
        name = inference.name(var)
        tile = inference.tiles.get(name)
        if name in seen or tile is None or not tile.free or tuple(var.type.shape) != shape:
            continue
        seen.add(name)
        kind = tile.instr.LAYOUT
        if kind in ("load", "gather", "source.memory"):
            loads.append(var)
        elif kind == "broadcast" and is_tile(tile.instr.value):
            broadcasts.append(_broadcast_dims(tile.instr.value.type, var.type))
        elif kind == "elementwise":
            stack.extend(v for v in tile.instr.uses() if is_tile(v))
    return loads, broadcasts


class DotRule(AnyLayout):
    """`dot`: the mma fragment layouts (`dot_layouts`) when an atom fits: the result and a
    free accumulator get the C layout, a and b are relayouted to the A and B fragments.
    On sm_90a a dot whose b is loaded in a pipelined loop (`staged_tiles`) asks for
    warpgroup layouts, which the warpgroup mma computes once the load is staged.
    Otherwise (or when the result's given layout differs) a generic dot: the blocked
    layout, a and b as they are."""

    def scan(self, inference: Inference, instr: nodes.Dot) -> None:
        result = instr.result
        inference.add(result, instr, free=False)
        (m, k), n = instr.a.type.shape, result.type.shape[1]
        split_rows = result.name in inference.chained
        plan = dot_layouts(
            m,
            n,
            k,
            instr.a.type.dtype,
            result.type.dtype,
            inference.warps,
            split_rows=split_rows,
            warpgroups=inference.target.has_wgmma and instr.b.name in inference.staged,
        )
        if plan is not None:
            c, a, b = plan.c, plan.a, plan.b
        else:
            shape, dtype = result.type.shape, result.type.dtype
            c, a, b = blocked_layout(shape, dtype, inference.threads), None, None
            if m < 16 and 16 % m == 0:  # few rows: the lowering pads them (small_dot)
                padded = dot_layouts(16, n, k, instr.a.type.dtype, dtype, inference.warps)
                b = padded.b if padded is not None else None
        given = inference.given.get(result.name)
        if given is not None and given != c:  # the user's layout wins: a generic dot
            c, a, b = given, None, None
        inference.dots[result.name] = (a, b)
        inference.anchors.append((result.name, c))
        if inference.is_free(instr.acc):
            inference.anchors.append((inference.name(instr.acc), c))

    def rewrite(self, rewrite: Rewrite, instr: nodes.Dot) -> RewriteResult:
        new = rewrite.generic(instr)
        a, b = rewrite.dots[instr.result.name]
        return rewrite.with_operands(instr, new, {"a": a, "b": b, "acc": new.result.type.layout})


class MaskedRule(AnyLayout):
    """`masked`: the value keeps any layout; a `mask` operand, when there is one, takes
    the value's layout. Each of the two is a wish for the other while it is free (so a
    mask computed for the value is usually computed in its layout); otherwise the mask
    is relayouted. The rules of the other instructions that write a value where a mask
    holds (`store`, `scatter`) build on this one: they place the value (`place`), and
    the mask follows it. An atomic's `expected` tile follows it as a mask does, and its
    `result` (the old values) has the value's layout: each thread gets back the
    elements it sent."""

    def scan(self, inference: Inference, instr: Instr) -> None:
        super().scan(inference, instr)
        if not is_tile(instr.value):
            return
        for follower in (getattr(instr, "mask", None), getattr(instr, "expected", None)):
            if is_tile(follower):
                inference.edge(instr.value, follower, _same, EXACT, backward=True)
                inference.edge(follower, instr.value, _same, EXACT, backward=True)
        result = getattr(instr, "result", None)
        if is_tile(result):
            inference.equal(instr.value, result)

    def rewrite(self, rewrite: Rewrite, instr: Instr) -> RewriteResult:
        placed = self.place(rewrite, instr)
        *before, new = list(placed) if isinstance(placed, list | tuple) else [placed]
        followers = [f for f in ("mask", "expected") if is_tile(getattr(new, f, None))]
        if not followers:
            return [*before, new]
        wants = dict.fromkeys(followers, rewrite.layout_of(new.value))
        return [*before, *rewrite.with_operands(instr, new, wants)]

    def place(self, rewrite: Rewrite, instr: Instr) -> RewriteResult:
        """The instruction with its value (and other operands but the mask) in the
        layouts it needs, after the relayouts that give them."""
        return rewrite.generic(instr)


class StoreRule(MaskedRule):
    """`store`: any layout, except that packed elements (u3, u4, f6, ...) move to the
    blocked layout when threads would otherwise write parts of one byte; a mask
    follows the value (`masked`)."""

    def place(self, rewrite: Rewrite, instr: nodes.Store) -> RewriteResult:
        new = rewrite.generic(instr)
        value = new.value.type
        if holds_whole_bytes(value.layout, value.dtype):
            return new
        blocked = blocked_layout(value.shape, value.dtype, rewrite.threads)
        want = blocked if holds_whole_bytes(blocked, value.dtype) else None
        return rewrite.with_operands(instr, new, {"value": want})


class ScatterRule(MaskedRule):
    """`scatter` (and `scatter_add`): the value keeps any layout; the index tile takes
    the value's layout reduced over the dims it broadcasts along (each thread holds the
    index of every element it stores), and a mask the value's (`masked`)."""

    def scan(self, inference: Inference, instr: nodes.Scatter) -> None:
        super().scan(inference, instr)
        dims = _broadcast_dims(instr.index.type, instr.value.type)
        inference.edge(instr.value, instr.index, lambda layout: layout.reduce(dims), SHAPED, True)

    def place(self, rewrite: Rewrite, instr: nodes.Scatter) -> RewriteResult:
        new = rewrite.generic(instr)
        dims = _broadcast_dims(new.index.type, new.value.type)
        return rewrite.with_operands(
            instr, new, {"index": rewrite.layout_of(new.value).reduce(dims)}
        )


class AtomicRule(MaskedRule):
    """`masked` for an `atomic` whose old values come back: the value is placed in the
    result's layout (they are one layout unless a layout was given to the result)."""

    def place(self, rewrite: Rewrite, instr: nodes.Atomic) -> RewriteResult:
        new = rewrite.generic(instr)
        if not is_tile(new.result):
            return new
        return rewrite.with_operands(instr, new, {"value": rewrite.layout_of(new.result)})


class ScatterAtomicRule(ScatterRule):
    """`scatter` for a `scatter_atomic` whose old values come back: the value (and so the
    index) is placed in the result's layout."""

    def place(self, rewrite: Rewrite, instr: nodes.ScatterAtomic) -> RewriteResult:
        new = rewrite.generic(instr)
        fetched = is_tile(new.result)
        want = rewrite.layout_of(new.result if fetched else new.value)
        wants = {"index": want.reduce(_broadcast_dims(new.index.type, new.value.type))}
        return rewrite.with_operands(instr, new, {"value": want, **wants} if fetched else wants)


class LoopRule:
    """`loop`: a carried value, its init, the value the body yields and the result share
    one layout (the result is an alias of the carried value)."""

    def scan(self, inference: Inference, instr: nodes.For) -> None:
        tiles = [
            (init, carried, result)
            for init, carried, result in zip(instr.inits, instr.carried, instr.results, strict=True)
            if is_tile(carried)
        ]
        for init, carried, _ in tiles:
            inference.add(carried, instr, free=inference.is_free(init))
            if is_tile(init):
                inference.equal(init, carried)
        inference.scan_block(instr.body)
        end = instr.body.instrs[-1]
        for value, carried in zip(end.values, instr.carried, strict=True):
            if is_tile(value):
                inference.equal(value, carried)
        for _, carried, result in tiles:
            inference.alias[result.name] = carried.name
            if result.type.layout is not None:
                inference.give(result, instr, carried.name)

    def rewrite(self, rewrite: Rewrite, instr: nodes.For) -> RewriteResult:
        wants = _layouts(rewrite, instr.carried)
        rewrite.yield_wants.append(wants)
        try:
            new = rewrite.generic(instr)
        finally:
            rewrite.yield_wants.pop()
        before: list[Instr] = []
        inits = tuple(
            rewrite.convert(v, w, before, instr) for v, w in zip(new.inits, wants, strict=True)
        )
        return [*before, replace(new, inits=inits)]


class BranchRule:
    """`branch`: both yielded values of an `if` result have the result's layout."""

    def scan(self, inference: Inference, instr: nodes.If) -> None:
        inference.scan_block(instr.then_body)
        inference.scan_block(instr.else_body)
        ends = (instr.then_body.instrs[-1], instr.else_body.instrs[-1])
        for j, result in enumerate(instr.results):
            if not is_tile(result):
                continue
            values = [end.values[j] for end in ends]
            inference.add(result, instr, free=all(inference.is_free(v) for v in values))
            for value in values:
                if is_tile(value):
                    inference.equal(value, result)

    def rewrite(self, rewrite: Rewrite, instr: nodes.If) -> RewriteResult:
        rewrite.yield_wants.append(_layouts(rewrite, instr.results))
        try:
            return rewrite.generic(instr)
        finally:
            rewrite.yield_wants.pop()


class YieldRule(AnyLayout):
    """`yield`: each value in the layout its loop or branch decided (the scan happens
    in `loop` and `branch`)."""

    def rewrite(self, rewrite: Rewrite, instr: nodes.Yield) -> RewriteResult:
        new = rewrite.generic(instr)
        before: list[Instr] = []
        wants = rewrite.yield_wants[-1]
        values = tuple(
            rewrite.convert(v, w, before, instr) for v, w in zip(new.values, wants, strict=True)
        )
        return [*before, replace(new, values=values)]


def _layouts(rewrite: Rewrite, values: Sequence[Value]) -> tuple[Layout | None, ...]:
    return tuple(rewrite.layouts.get(v.name) if is_tile(v) else None for v in values)


def _same(layout: Layout) -> Layout:
    return layout


def _inverse(perm: Sequence[int]) -> list[int]:
    inverse = [0] * len(perm)
    for new, old in enumerate(perm):
        inverse[old] = new
    return inverse


def _broadcast_dims(value: TileType, result: TileType) -> list[int]:
    return [d for d, (s, r) in enumerate(zip(value.shape, result.shape, strict=True)) if s != r]


#: Every rule, by the name instruction classes give in `LAYOUT`.
RULES = {
    "none": AnyLayout(),
    "source.memory": Source(MEMORY),
    "source.default": Source(DEFAULT),
    "elementwise": Elementwise(),
    "elementwise.tuple": ElementwiseTuple(),
    "transpose": TransposeRule(),
    "slice": SliceRule(),
    "concat": ConcatRule(),
    "reshape": ReshapeRule(),
    "view": ViewRule(),
    "broadcast": BroadcastRule(),
    "load": LoadRule(),
    "gather": GatherRule(),
    "lookup": LookupRule(),
    "scatter": ScatterRule(),
    "scatter_atomic": ScatterAtomicRule(),
    "atomic": AtomicRule(),
    "reduce": ReduceRule(),
    "dot": DotRule(),
    "store": StoreRule(),
    "masked": MaskedRule(),
    "loop": LoopRule(),
    "branch": BranchRule(),
    "yield": YieldRule(),
}
