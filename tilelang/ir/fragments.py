"""The register layouts of a dot's operands, and the order in which to load them.

This module owns two decisions that the compiler, the kernel language and the host-side
packing (`tilelang.packing`) must make identically, so that none of them can disagree
with another:

- `dot_layouts` / `dot_layout`: the mma fragment layouts of ``[m, k] @ [k, n] + [m, n]``
  tiled over a grid of warps (what `infer_layouts` gives a dot's operands), and
  `quotient_local`, which operand block an instruction of a C block reads;
- `fragment_run` / `load_order`: the *load order* of a tile in a register layout L — a
  flat arrangement F of the tile's elements such that a plain load of consecutive
  elements hands every thread its elements of L in L's local order, in runs of whole
  16-byte words where the element width allows. A tensor stored in that order (the
  weights `tilelang.pack_for_dot` permutes offline) is read with contiguous vector
  loads in F and reinterpreted in place as the tile in L (`view` with both layouts):
  no data moves between threads.

The load order, in the layout algebra. Let L have T threads (replication included),
T_d of them distinct, and N locals per thread. F is a layout of the flat tile
``[1, T_d·N]`` with exactly L's thread list (its replication factors where L has them,
its other thread digits read as digits of the flat index in the same order) and two
local digits: with runs of ``run`` elements and R = N / run runs per thread,

    F = local(1, R) * (the thread factors of L, in order) * local(1, run)

so thread t's local l sits at flat position ``(l // run)·T_d·run + t_d·run + l % run``,
t_d being t's rank among the distinct threads. Replicas of L hold the same elements,
and so they do in F: F and L have the same thread structure, and each thread holds the
same N elements in the same local order in both.

The run (`fragment_run`): ``128 / gcd(128, bits)`` elements — whole 16-byte words, and
the fewest that are (one word for 1, 2, 4, 8-bit codes; 3 words of 6-bit codes; 3, 5, 7
words of 3, 5, 7-bit codes, whose codes straddle the words) — when that divides N, so
every run starts 16-byte aligned and a warp reads consecutive memory; otherwise the
thread's whole share of the tile (N elements), when that is a whole number of bytes
(the accesses are then as wide as its alignment allows); otherwise none exists. For the
B operand of a dot, N = (k-steps per tile) x (elements per thread per k-step), and L's
local order is k-step-major, so a run is a whole number of k-steps where a k-step holds
fewer than 16 bytes of a thread's codes (4 k-steps of u4 for a 64-column tile over 4
warps, 2 of u8, 16 of u3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np

from tilelang.dtypes import DType
from tilelang.ir.atoms import WARP_SIZE, WARPGROUP, MmaAtom, mma_atoms_for
from tilelang.ir.layout import (
    Layout,
    LayoutError,
    Rep,
    _positive,
    _Work,
    local,
    replicated,
    spatial,
)

__all__ = [
    "DotLayouts",
    "FragmentError",
    "dot_layout",
    "dot_layouts",
    "fragment_run",
    "load_order",
    "paired_codes",
    "permute_locals",
    "quotient_local",
]

#: The widest access a thread makes, in bits.
WORD_BITS = 128


class FragmentError(LayoutError):
    """No dot layout or load order exists for the arguments; the message says why."""


# --------------------------------------------------------------------------- dot layouts


@dataclass(frozen=True)
class DotLayouts:
    """The layouts of one mma-based dot: `warps` = (wm, wn) arranges the block's warps."""

    atom: MmaAtom
    warps: tuple[int, int]
    a: Layout
    b: Layout
    c: Layout


def dot_layouts(
    m: int,
    n: int,
    k: int,
    operand: DType,
    accumulator: DType,
    warps: int,
    *,
    split_rows: bool = False,
    warpgroups: bool = False,
) -> DotLayouts | None:
    """The mma layouts of ``[m, k] @ [k, n] + [m, n]``, or None when no atom fits.

    With `warpgroups` (a dot the warpgroup mma may compute, `lowering.wgmma`), when the
    operands are f16/bf16 into f32, the warps whole warpgroups and m a multiple of 16
    per warp: `warpgroup_layouts`.

    Among the warp grids wm × wn = `warps` with wm | m/16 and wn | n/8, the one whose
    per-warp tile (m/wm) × (n/wn) is closest to square (then fewer warp rows); with
    `split_rows`, the grid with the most warp rows (wn = 1 where m/16 allows: each warp
    owns whole rows of the result, so a dot chain keeps a row's values in one warp and
    the A operand is never replicated). With
    rm, rn, rk the atom's repeats per warp: a = ``(spatial(wm, 1) * replicated(wn)) *
    local(rm, rk) * atom.a``, b = ``(replicated(wm) * spatial(1, wn)) * local(rk, rn) *
    atom.b``, c = ``spatial(wm, wn) * local(rm, rn) * atom.c``.
    """
    for atom in mma_atoms_for(str(operand)):
        if atom.acc_dtype != str(accumulator) or m % atom.m or n % atom.n or k % atom.k:
            continue
        # The lowering's warpgroup mma multiplies f16/bf16 into f32 (`lowering.wgmma`).
        wgmma_types = atom.acc_dtype == "f32" and str(operand) in ("f16", "bf16")
        whole_groups = warps % (WARPGROUP // WARP_SIZE) == 0
        if warpgroups and wgmma_types and whole_groups and m % (atom.m * warps) == 0:
            return warpgroup_layouts(atom, m, n, k, warps)
        grid = _warp_grid(m, n, atom.m, atom.n, warps, split_rows)
        if grid is None:
            continue
        wm, wn = grid
        rm, rn, rk = m // (atom.m * wm), n // (atom.n * wn), k // atom.k
        return DotLayouts(
            atom=atom,
            warps=grid,
            a=(spatial(wm, 1) * replicated(wn, rank=2)) * local(rm, rk) * atom.a,
            b=(replicated(wm, rank=2) * spatial(1, wn)) * local(rk, rn) * atom.b,
            c=spatial(wm, wn) * local(rm, rn) * atom.c,
        )
    return None


def warpgroup_layouts(atom: MmaAtom, m: int, n: int, k: int, warps: int) -> DotLayouts:
    """Every warp owns 16 of each 16·warps rows (warp w rows 16w..16w+15 of each such
    block, the blocks an outer local digit) and all n columns: c = ``local(rm, 1) *
    spatial(warps, 1) * local(1, rn) * atom.c``, a likewise with rk, b replicated over
    the warps. Each 4 consecutive warps then hold whole m64 blocks of the warpgroup
    mma's A and D fragments (`atoms.wgmma_atom`); mma.sync computes them as well."""
    rm, rn, rk = m // (atom.m * warps), n // atom.n, k // atom.k
    rows = local(rm, 1) * spatial(warps, 1)
    return DotLayouts(
        atom=atom,
        warps=(warps, 1),
        a=rows * local(1, rk) * atom.a,
        b=replicated(warps, rank=2) * local(rk, rn) * atom.b,
        c=rows * local(1, rn) * atom.c,
    )


def _warp_grid(
    m: int, n: int, atom_m: int, atom_n: int, warps: int, split_rows: bool = False
) -> tuple[int, int] | None:
    grids = [
        (wm, warps // wm)
        for wm in range(1, warps + 1)
        if warps % wm == 0 and (m // atom_m) % wm == 0 and (n // atom_n) % (warps // wm) == 0
    ]
    if not grids:
        return None

    def squareness(grid: tuple[int, int]) -> tuple[Fraction, int]:
        rows, cols = m // grid[0], n // grid[1]
        return Fraction(max(rows, cols), min(rows, cols)), grid[0]

    if split_rows:
        return max(grids)
    return min(grids, key=squareness)


def quotient_local(table: np.ndarray, outer: np.ndarray, k: int, rows: bool) -> int | None:
    """The local of a quotient layout's `table` ([units, locals, 2] of atom blocks, a
    unit being a warp or a warpgroup) that holds block (outer[u], k) (an A operand,
    `rows`) or (k, outer[u]) (B) in every unit u, if one local does: the operand block
    an instruction of C block outer reads at k-step k."""
    inner = np.full_like(outer, k)
    want = np.stack([outer, inner] if rows else [inner, outer], -1)
    for held in range(table.shape[1]):
        if (table[:, held] == want).all():
            return held
    return None


Operand = Literal["a", "b", "c"]


def dot_layout(
    which: Operand, m: int, n: int, k: int, operand: DType, accumulator: DType, warps: int
) -> Layout:
    """The layout `infer_layouts` gives operand `which` ("a": [m, k], "b": [k, n], "c":
    the accumulator [m, n]) of ``[m, k] @ [k, n]`` accumulated in `accumulator` by a block
    of `warps` warps; `FragmentError` when no mma atom fits (the dot is then generic and
    its operands have no fragment layout)."""
    if which not in ("a", "b", "c"):
        raise FragmentError(f"the operand is 'a', 'b' or 'c', not {which!r}")
    for name, value in (("m", m), ("n", n), ("k", k), ("warps", warps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FragmentError(f"{name} must be a positive int, got {value!r}")
    plan = dot_layouts(m, n, k, operand, accumulator, warps)
    if plan is None:
        shapes = ", ".join(
            f"m{a.m}n{a.n}k{a.k} ({'/'.join(a.operand_dtypes)} -> {a.acc_dtype})"
            for a in mma_atoms_for(str(operand))
        )
        raise FragmentError(
            f"no mma atom fits [{m}, {k}] @ [{k}, {n}] of {operand} accumulated in {accumulator} "
            f"over {warps} warps (atoms for {operand}: {shapes or 'none'}; m, n, k must be "
            "multiples of the atom's, and the warps a grid wm x wn with wm | m/16, wn | n/8)"
        )
    return getattr(plan, which)


# --------------------------------------------------------------------------- load order


def fragment_run(layout: Layout, dtype: DType) -> int:
    """Elements per run of the load order of a tile of `dtype` in `layout` (module
    docstring): whole 16-byte words where they divide a thread's share, else the share."""
    share = layout.num_locals
    words = WORD_BITS // math.gcd(WORD_BITS, dtype.bits)
    if share % words == 0:
        return words
    if share * dtype.bits % 8 == 0:
        return share
    raise FragmentError(
        f"a thread of {layout} holds {share} {dtype} elements ({share * dtype.bits} bits), "
        "not a whole number of bytes: no load order reads them with byte accesses"
    )


def load_order(layout: Layout, run: int) -> Layout:
    """F, the load order of a tile in `layout` with runs of `run` elements, on the flat
    tile ``[1, layout.size]`` (module docstring): ``local(1, R) * threads * local(1, run)``
    where `threads` repeats `layout`'s thread list on the flat index."""
    canonical = layout.canonicalize()
    share = canonical.num_locals
    if isinstance(run, bool) or not isinstance(run, int) or run < 1 or share % run:
        raise FragmentError(f"a run of {run!r} elements does not divide the {share} of {layout}")
    threads = local(1, 1)
    for mode in canonical.thread_modes:
        if isinstance(mode, Rep):
            threads = threads * replicated(mode.size, rank=2)
        else:
            threads = threads * spatial(1, canonical.mode_sizes[mode])
    return (local(1, share // run) * threads * local(1, run)).canonicalize()


# --------------------------------------------------------------------------- paired codes


#: The code widths `paired_codes` pairs across word halves.
PAIRED_WIDTHS = (2, 4)


def paired_codes(layout: Layout, dtype: DType) -> Layout:
    """The layout in which a thread's `dtype` codes of a tile in `layout` are stored so
    that a conversion to 16-bit values finds each pair where it wants it: the same
    elements per thread, in another local order.

    The lowering converts two codes at a time into the two halves of a 32-bit word:
    locals 2j and 2j+1 of `layout` (the halves of one f16x2/bf16x2 register). A word of
    c = 32/b codes of b ∈ {2, 4} bits, in `layout`'s order, holds both codes of a
    pair in one half, so each pair costs a `prmt` that moves one of them. Stored in this
    order instead — the word's innermost digits (c/2, 2) swapped, so local 2j + h sits
    at code j + h·c/2 — the codes of pair j are at the same bit of the low and the high
    half: the word, or one byte-funnel of it for the upper half of the pairs, is the
    window, with no move per pair (`tilelang.lowering.dequant`). Other widths (8-bit
    codes are moved with the magic exponent anyway; 3, 5, 6, 7-bit codes straddle
    bytes; 1-bit codes would gain as much, but with them ptxas 13 spills 8 bytes of the
    example's 16x128x128 kernel on sm_80/sm_89, so they keep their order) and threads
    whose codes do not fill whole words keep `layout`."""
    if dtype.bits not in PAIRED_WIDTHS:
        return layout
    per_word = 32 // dtype.bits
    if layout.num_locals % per_word:
        return layout
    return permute_locals(layout, (per_word // 2, 2), (1, 0))


def permute_locals(layout: Layout, radices: Sequence[int], order: Sequence[int]) -> Layout:
    """The same elements per thread in another local order: the innermost
    ``prod(radices)`` locals read as digits of sizes `radices` (most significant
    first), new digit k being old digit ``order[k]``; e.g. ``((4, 2), (1, 0))`` makes
    old local 2j + h new local 4h + j. A digit is whole local modes or split off one."""
    if sorted(order) != list(range(len(radices))):
        raise LayoutError(f"permute_locals: {list(order)} is not a permutation of the digits")
    w = _Work.of(layout.canonicalize())
    digits: list[list[int]] = []  # each digit's keys, least significant digit first
    unread = len(w.locals)  # w.locals[:unread] belong to no digit yet
    for radix in map(lambda r: _positive(r, "digit size"), reversed(radices)):
        keys: list[int] = []
        while radix > 1:
            if unread == 0:
                raise LayoutError(
                    f"permute_locals: {layout} has fewer than {math.prod(radices)} locals"
                )
            size = w.size[key := w.locals[unread - 1]]
            if radix % size and size % radix:
                raise LayoutError(
                    f"permute_locals: a digit of size {radix} is neither made of whole "
                    f"local modes of {layout} nor split off one (a mode of size {size})"
                )
            keys.insert(0, key if radix % size == 0 else w.split(key, radix)[1])
            unread -= radix % size == 0
            radix = radix // size if radix % size == 0 else 1
        digits.insert(0, keys)
    w.locals = w.locals[:unread] + [k for d in order for k in digits[d]]
    return w.to_layout()
