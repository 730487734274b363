"""Which SASS loop is which block-IR loop, for the static performance report.

This module owns reading a kernel's SASS for `tilelang.runtime.perf`: for each loop the
report adds up (`perf_loop.MainLoop.modelled`), the opcodes of one pass of its SASS loop
(its shortest path, `sass.shortest_path`) and how many block-IR iterations one pass
holds (ptxas's unrolling), with notes saying how each was found.

The cubin carries no line information (NVRTC builds without ``-lineinfo``), so a SASS
loop is matched to a block-IR loop by what it holds:

- the SASS loops that load global memory (LDG, LDGSTS; `sass.loops`) in program order,
  without those holding another such loop (an outer loop around a streaming one); the
  innermost block-IR loops that load (`perf_loop.MainLoop.inner`: none inside them),
  in program order, each read through its thread-IR loop
  (`perf_loop.thread_loops`: the same variable name): its global loads and copies g,
  its mma m, whether it computes a transcendental or a division (MUFU);
- an *assignment* gives every such SASS loop one block-IR loop, in order (ptxas keeps
  the order of the source's loops): a block-IR loop gets consecutive SASS loops (ptxas
  may make an unrolled loop and a remainder loop of one, or a copy of it per case of a
  condition), or none (ptxas unrolled it fully);
- the assignment taken has the fewest block-IR loops without a SASS loop, then the
  fewest SASS loops whose counts disagree with their block-IR loop's (LDG + LDGSTS not
  a positive multiple u of g, or HMMA/IMMA/HGMMA not u·m), then the fewest that
  disagree on MUFU (holding one where the thread IR computes nothing that needs it, or
  the reverse), then the fewest SASS loops unrolled more than the one before them for
  the same block-IR loop (ptxas emits an unrolled body before its remainder loop), then
  the fewest whose instructions an iteration (a pass's over u) differ by more than
  `ALIKE` (2x) from those of the most unrolled SASS loop of their block-IR loop (the
  SASS loops ptxas makes of one loop run the same body; a layer norm's remainder loop
  of its first pass is 26 instructions an iteration against the unrolled body's 22,
  the second pass's loop 81);
- a block-IR loop's SASS loop is the one of its SASS loops with the largest u (an
  unrolled loop before its remainder: most iterations run it), and one pass of it is
  `unroll` = u iterations (HMMA over m where the loop has mma).

**Nests.** A block-IR loop that holds loops that load is matched after them: its SASS
loop is the innermost one around the SASS loops of all of them (ptxas keeps a loop
around its inner loops), and one iteration of it is that loop's shortest path without
the SASS loops inside it (those are counted as their own block-IR loops, at their trip
counts; a SASS loop inside it that loads nothing is left out, like code outside
loops). Where none holds them, the outer loop's own work is left out, with a note.

Where two assignments are equally good and give a loop different SASS loops (or one
gives it none), the loop is counted with the costliest of them (the most instructions
an iteration: an estimate that does not make the kernel look faster), and a note names
them (`Match`). A loop that every best assignment leaves without a SASS loop (ptxas
unrolled it fully) is left out with a note; where that is the main loop, or where there
are too many assignments to try, the report falls back on the main loop alone, whose
SASS is the loading SASS loop in its place when there are as many as innermost block-IR
loops that load, else the largest SASS loop — and says so, and which SASS loop it used;
without a main loop (`MainLoop.rank` -1) the loops are left out and the kernel is
counted whole. A kernel whose SASS has no loop (ptxas unrolled every one) is counted
whole, its instructions spread over the main loop's iterations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tilelang.ir import thread as t
from tilelang.runtime import sass as sass_text
from tilelang.runtime.perf_loop import MainLoop, ThreadLoop, thread_loop_counts, thread_loops

__all__ = ["LoopCode", "kernel_code", "loop_codes"]

#: Assignments tried at most; beyond, the report falls back on the main loop alone.
_MOST_ASSIGNMENTS = 20000


@dataclass(frozen=True)
class LoopCode:
    """The SASS of one modelled loop: the opcodes of one pass (its shortest path), how
    many block-IR iterations a pass holds, which SASS it is, in words, and its text
    (the whole SASS loop, for `kernel_code` to leave out)."""

    ops: dict[str, int]
    unroll: int
    sass: str
    text: str = ""


def kernel_code(text: str, without: Sequence[LoopCode] = ()) -> LoopCode:
    """A kernel's work outside its loops: its whole body, once, without the SASS loops
    of `without` (the loops counted on their own: a kernel without a main loop whose
    loops run in some blocks only)."""
    body = sass_text.kernel_body(text)
    for code in sorted(without, key=lambda c: -len(c.text)):  # an outer loop holds its inner
        if code.text:
            body = body.replace(code.text, "", 1)
    which = "the whole kernel" if not without else "the kernel without its loops"
    return LoopCode(dict(sass_text.opcodes(body)), 1, which)


def unroll(ops: Mapping[str, int], counts: tuple[int, int], notes: list[str]) -> int:
    """How many block-IR iterations one pass of a SASS loop holds, from its tensor-core
    instructions over the thread IR's `counts[0]` mma, else its global loads over
    `counts[1]`; 1, with a note, when they are not a whole multiple."""
    mma = sum(n for op, n in ops.items() if sass_text.mma_flops(op) is not None)
    memory = sum(n for op, n in ops.items() if sass_text.global_load_bytes(op))
    for found, expected, what in (
        (mma, counts[0], "tensor-core instructions"),
        (memory, counts[1], "global loads"),
    ):
        if expected:
            if found % expected == 0 and found:
                return found // expected
            notes.append(
                f"the SASS loop holds {found} {what}, the thread IR's {expected} per "
                "iteration: not a whole multiple, so one SASS pass is taken as one iteration"
            )
            return 1
    return 1


@dataclass(frozen=True)
class _Sass:
    """One SASS loop that loads: its shortest path's opcodes and what it holds."""

    ops: dict[str, int]
    memory: int
    mma: int
    mufu: bool

    @staticmethod
    def of(loop: str) -> _Sass:
        ops = dict(sass_text.opcodes(sass_text.shortest_path(loop)))
        return _Sass(
            ops,
            sum(n for op, n in ops.items() if sass_text.global_load_bytes(op)),
            sum(n for op, n in ops.items() if sass_text.mma_flops(op) is not None),
            any(op.startswith("MUFU") for op in ops),
        )

    def ratio(self, ir: ThreadLoop) -> int | None:
        """u when this loop holds u iterations of `ir`'s loads and mma, else None."""
        if not ir.memory or not self.memory or self.memory % ir.memory:
            return None
        u = self.memory // ir.memory
        return u if self.mma == u * ir.mma else None


def _loading(text: str) -> list[str]:
    """The SASS loops that load global memory, in program order, without those that hold
    another one."""
    loading = [loop for loop in sass_text.loops(text) if sass_text.loads_global(loop)]
    return [a for a in loading if not any(b != a and b in a for b in loading)]


def _skipped(loop: str) -> int:
    return sum(sass_text.opcodes(loop).values()) - sum(
        sass_text.opcodes(sass_text.shortest_path(loop)).values()
    )


def loop_codes(
    text: str,
    thread: t.ThreadFunction,
    main: MainLoop,
    modelled: tuple[int, ...],
    iterations: float,
    notes: list[str],
) -> dict[int, LoopCode]:
    """The SASS of each modelled loop (indices into `main.loops`) that could be matched
    (module docstring); the main loop's is always there (where there is one: `rank` >=
    0)."""
    rank = main.rank
    if not sass_text.loops(text):
        notes.append("the SASS has no loop (ptxas unrolled it fully): the whole kernel counted")
        left = [main.loops[i].where for i in modelled if i != rank]
        if left:
            notes.append(f"the loops at {', '.join(left)} are left out with it")
        if rank < 0:
            return {}
        whole = dict(sass_text.opcodes(text))
        return {rank: LoopCode(whole, max(round(iterations), 1), "the whole kernel (no SASS loop)")}
    by_name = thread_loops(thread)
    signatures = [by_name.get(x.loop.var.name) for x in main.loops]
    leaves = [i for i in range(len(main.loops)) if not main.inner(i)]
    loading = _loading(text)
    found, why = None, "no SASS loop loads global memory"
    if loading and any(s is None for s in signatures):
        why = "a block-IR loop has no thread-IR loop of its name"
    elif loading:
        sass = [_Sass.of(loop) for loop in loading]
        local = _assign(sass, [signatures[i] for i in leaves], tuple(range(len(leaves))))  # type: ignore[misc]
        found = None if local is None else {leaves[j]: v for j, v in local.items()}
        why = "too many ways to pair them"
    if found is None and rank < 0:
        notes.append(
            f"the SASS loops could not be matched to the {main.loops_with_loads} block-IR "
            f"loop(s) that load ({why}): they are left out of the sum (the kernel counted "
            "whole, once per block)"
        )
        return {}
    if found is None or (rank >= 0 and found.get(rank) is None):
        failed = why if main.loops_with_loads > 1 or found is not None else None
        if found is not None:
            failed = "none is left for it"
        return {
            rank: _fallback(text, loading, leaves, main, signatures[rank], thread, notes, failed)
        }
    codes = _outer_codes(text, loading, main, found, modelled, signatures, notes)
    for i in modelled:
        if i not in leaves:
            continue
        picked = found.get(i)
        where = main.loops[i].where
        if picked is None:
            notes.append(
                f"no SASS loop is left for the loop at {where} (ptxas unrolled it fully: "
                "its instructions lie outside the SASS loops, not counted): left out of "
                "the sum, its tensors' bytes counted in the DRAM floor"
            )
            continue
        codes[i] = _leaf_code(loading, picked, where, signatures[i], notes)
    return codes


def _leaf_code(
    loading: list[str], picked: Match, where: str, signature: ThreadLoop | None, notes: list[str]
) -> LoopCode:
    """The SASS of an innermost block-IR loop that loads, from its `Match`."""
    loop = loading[picked.index]
    ops = dict(sass_text.opcodes(sass_text.shortest_path(loop)))
    skipped = _skipped(loop)
    if skipped:
        notes.append(
            f"branches in the SASS loop of {where} skip up to {skipped} of its "
            "instructions (a mask on the last block, a rare path): the report counts "
            "the shortest path through it, as most iterations run"
        )
    assert signature is not None
    u = unroll(ops, (signature.mma, signature.memory), notes)
    if picked.count > 1:
        notes.append(
            f"ptxas made {picked.count} SASS loops of the loop at {where} (an unrolled loop "
            f"and its remainder, or a copy per case of a condition): the report counts "
            f"the one holding the most iterations a pass (x{u})"
        )
    if picked.unsure:
        which = ", ".join(str(c + 1) for c in picked.candidates)
        notes.append(
            f"the loop at {where} could be SASS loop {which} of the {len(loading)} that load "
            "(two pairings fit as well, or it has none): the report counts the costliest, "
            f"{picked.index + 1}, an estimate"
        )
    return LoopCode(ops, u, f"SASS loop {picked.index + 1} of the {len(loading)} that load", loop)


class Match(NamedTuple):
    """A block-IR loop's SASS: the index of its SASS loop among those that load, how
    many SASS loops it got, and every SASS loop the equally good pairings give it
    (`candidates`; just `index` where they agree; `index` is then the costliest of
    them, the most instructions an iteration)."""

    index: int
    count: int
    candidates: tuple[int, ...]
    unsure: bool = False  # the best pairings disagree (on the SASS loop, or whether any)


#: Instructions per iteration two SASS loops of one block-IR loop (an unrolled body and
#: its remainder, a copy per case) differ by at most this factor.
ALIKE = 2.0


def _unlike(loops: list[_Sass], assignment: tuple[int, ...], ratios: list[int | None]) -> int:
    """SASS loops whose instructions an iteration differ by more than `ALIKE` times
    from those of the most unrolled SASS loop of their block-IR loop."""
    count = 0
    for i in set(assignment):
        mine = [s for s, a in enumerate(assignment) if a == i and ratios[s]]
        sizes = [sum(loops[s].ops.values()) / ratios[s] for s in mine]  # type: ignore[operator]
        if len(sizes) < 2:
            continue
        reference = sizes[max(range(len(mine)), key=lambda j: (ratios[mine[j]], -j))]
        count += sum(
            bool(a and reference) and max(a, reference) > ALIKE * min(a, reference) for a in sizes
        )
    return count


def _assign(
    loops: list[_Sass], signatures: list[ThreadLoop], modelled: tuple[int, ...]
) -> dict[int, Match | None] | None:
    """For each modelled block-IR loop, its SASS (`Match`), None where every best
    assignment gives it none; None when there are too many assignments to try (module
    docstring)."""
    n, k = len(signatures), len(loops)
    if math.comb(n + k - 1, k) > _MOST_ASSIGNMENTS:
        return None
    best: tuple[int, ...] | None = None
    picks: list[dict[int, tuple[int, int, float] | None]] = []
    for assignment in itertools.combinations_with_replacement(range(n), k):
        empty = n - len(set(assignment))
        ratios = [loops[s].ratio(signatures[i]) for s, i in enumerate(assignment)]
        bad = sum(r is None for r in ratios)
        mufu = sum(loops[s].mufu != signatures[i].special for s, i in enumerate(assignment))
        # ptxas puts an unrolled body before its remainder: a group whose unrolling grows
        # from one SASS loop to the next has taken another loop's
        grows = sum(
            assignment[s] == assignment[s - 1] and (ratios[s] or 0) > (ratios[s - 1] or 0)
            for s in range(1, k)
        )
        score = (empty, bad, mufu, grows, _unlike(loops, assignment, ratios))
        if best is not None and score > best:
            continue
        if best is None or score < best:
            best, picks = score, []
        pick: dict[int, tuple[int, int, float] | None] = {}
        for i in modelled:
            mine = [s for s, a in enumerate(assignment) if a == i]
            if not mine:
                pick[i] = None
                continue
            s = max(mine, key=lambda s: (ratios[s] or 0, -s))
            pick[i] = (s, len(mine), sum(loops[s].ops.values()) / (ratios[s] or 1))
        picks.append(pick)
    found: dict[int, Match | None] = {}
    for i in modelled:
        options = {p[i][0]: p[i] for p in picks if p[i] is not None}
        if not options:
            found[i] = None
            continue
        s, count, _ = max(options.values(), key=lambda o: (o[2], -o[0]))
        unsure = len({p[i][0] if p[i] else None for p in picks}) > 1
        found[i] = Match(s, count, tuple(sorted(options)), unsure)
    return found


def _fallback(
    text: str,
    loading: list[str],
    leaves: list[int],
    main: MainLoop,
    signature: ThreadLoop | None,
    thread: t.ThreadFunction,
    notes: list[str],
    failed: str | None,
) -> LoopCode:
    """The main loop alone: the innermost loading SASS loop in its place when there are
    as many as innermost block-IR loops that load, else the largest SASS loop; `failed`
    says why matching failed (None: nothing worth a note)."""
    if main.loops_with_loads > 1 and len(loading) == len(leaves) and main.rank in leaves:
        place = leaves.index(main.rank)
        loop = loading[place]
        which = f"SASS loop {place + 1} of the {len(loading)} that load"
    else:
        loop = sass_text.main_loop(text)
        assert loop is not None
        which = f"the largest SASS loop ({sum(sass_text.opcodes(loop).values())} instructions)"
    if failed is not None:
        notes.append(
            f"the SASS loops could not be matched to the {main.loops_with_loads} block-IR "
            f"loop(s) that load ({failed}): the report models only the main loop at "
            f"{main.where}, with {which}"
        )
    ops = dict(sass_text.opcodes(sass_text.shortest_path(loop)))
    skipped = _skipped(loop)
    if skipped:
        notes.append(
            f"branches in the main loop skip up to {skipped} of its SASS instructions "
            "(a mask on the last block, a rare path): the report counts the shortest path "
            "through it, as most iterations run"
        )
    counts = (signature.mma, signature.memory) if signature else thread_loop_counts(thread)
    return LoopCode(ops, unroll(ops, counts, notes), which, loop)


def _outer_codes(
    text: str,
    loading: list[str],
    main: MainLoop,
    found: Mapping[int, tuple[int, int] | None],
    modelled: tuple[int, ...],
    signatures: list[ThreadLoop | None],
    notes: list[str],
) -> dict[int, LoopCode]:
    """The SASS of each modelled block-IR loop that holds loops that load (module
    docstring, "Nests"): the innermost SASS loop around the SASS of all of them, without
    the loops inside it."""
    everything = sass_text.loops(text)
    placed: dict[int, str] = {i: loading[p[0]] for i, p in found.items() if p is not None}
    codes: dict[int, LoopCode] = {}
    outer = [i for i in range(len(main.loops)) if main.inner(i)]
    for i in sorted(outer, key=lambda i: -len(main.loops[i].enclosing)):  # innermost first
        held = [placed.get(j) for j in main.inner(i)]
        around = [
            loop
            for loop in everything
            if None not in held and all(h != loop and h in loop for h in held)  # type: ignore[operator]
        ]
        where = main.loops[i].where
        if not around:
            if i in modelled:
                notes.append(
                    f"no SASS loop holds the SASS of the loops inside the loop at {where}: "
                    "its own work is left out of the sum (the loops inside it are counted)"
                )
            continue
        loop = min(around, key=len)
        placed[i] = loop
        inside = [x for x in everything if x != loop and x in loop]
        own = loop
        for x in inside:
            if not any(x != y and x in y for y in inside):  # a loop not inside another
                own = own.replace(x, "")
        if i in modelled:
            ops = dict(sass_text.opcodes(sass_text.shortest_path(own)))
            signature = signatures[i]
            assert signature is not None
            u = unroll(ops, (signature.mma, signature.memory), notes)
            which = f"a SASS loop around {len(inside)} loop(s), without them"
            codes[i] = LoopCode(ops, u, which, loop)
    return codes
