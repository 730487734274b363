"""Pass `vectorize`: the memory run of every global access, and its alignment.

Assumes a verified function whose register tiles have layouts (after `infer_layouts`;
a tile without one is accessed one element at a time). Global tensors are row-major,
contiguous, densely packed (element i of the flat tensor holds bits [i·b, (i+1)·b)),
their base pointers 16-byte aligned; accesses are masked per element.

Guarantees: every `Load`, `Gather`, `Store`, `Scatter`, `Atomic`, `ScatterAtomic` and
`CopyAsync` gets three attributes, and nothing else changes:

- ``elems=r``: each thread accesses its elements in *runs* of r consecutive elements
  of the last dimension (a power of two; 1 when nothing better is proven);
- ``vector=B``: the bytes of one run, ``r·bits/8`` — a whole number of bytes, not
  necessarily a power of two (16 u3 values are one 6-byte run), at most 16 except for
  the longer runs (b) allows; ``vector=0`` when a run is not a whole number of bytes
  (sub-byte elements in runs too short): the lowering then accesses the bytes holding
  each element (stores must merge bits);
- ``align=A``: the largest power of two ≤ 16 dividing the byte address of every run
  start; ``align=0`` when some run start is not on a byte boundary (sub-byte types).
  The lowering splits a run into accesses of ``min(align, ...)`` bytes that tile it.

How r is chosen (register tiles: `Load`'s result, `Store`'s and `Atomic`'s value):

1. The layout's *run*: in its canonical form, when the innermost local mode (the least
   significant digit of the local index) is the innermost mode of the last dimension,
   consecutive local indices hold consecutive elements of a row, whose memory is
   contiguous; its size is v. Otherwise v = 1.
2. r is the largest power of two dividing v (so runs of r tile the thread's runs of v;
   v itself when v is a power of two) such that
   (a) the mask is constant over every run: the tensor's last dimension D and the last
       offset are multiples of r (D by `assume` for sizes, exactly for literals; the
       offset by `analyze`). Run starts are multiples of r in the tile, so no run
       straddles the end of a row. Without `assume`, D is only known to be a multiple
       of 1, so r = 1: an f16 load is then 2-byte accesses;
   (b) a run fits one access, ``r·bits ≤ 128`` (16 bytes); or, for a `Load` or a
       `Store`, the run is longer but a whole number of bytes (a fragment's load order
       gives each thread 20 bytes of u5 codes: five 4-byte accesses, where runs of 16
       codes, 10 bytes, would only be 2-byte aligned). `Atomic` and `ScatterAtomic`
       keep one access per run (a masked run is skipped only when none of it is
       selected).
   Then ``vector = r·bits/8`` when that is whole, else 0. A user's `mask` operand
   may vary within a run; the lowering then writes that run element by element.

How `align` is computed: the element offset of a run start is
``Σ_d (offset_d + s_d)·stride_d``, with s_d the tile index of the run start and
``stride_d`` the product of the sizes of the dims after d. A power of two divides it
when it divides every term: ``min(div(offset_d), step_d)·div(stride_d)``, where
``step_d`` is the largest power of two dividing the tile index of every run start along
d (read off the layout's table), ``div(stride_d)`` the product of the sizes' divisors.
The bit offset is ``bits`` times that; `align` is its power-of-two factor over 8, capped
at 16 (the base pointer is 16-byte aligned).

`CopyAsync` (global -> shared) has no register layout: the lowering distributes runs
over threads itself. r is the largest power of two dividing the tile's last dimension
that also satisfies (a) and (b) and for which every run is contiguous in the shared
tile's layout (for a shared tile without a layout, the one `plan_shared` will choose);
for a copy, (b) also admits the fewest whole 16-byte words of codes whose width does
not divide 128 (128 codes of 3, 5 or 7 bits, 64 of 6 bits) when the tile holds at
least one such run per thread, so such codes move in 16-byte copies rather than in
runs of 12, 10, 12 or 14 bytes (10 and 14 are only 2-byte aligned: too narrow for
cp.async) without leaving threads idle. A masked copy moves its mask's layout's runs
instead (each thread the elements whose mask bits it holds): r divides that layout's
run, and the global `align` is a register access's in that layout.
Its `align` is the smaller of the global one (run starts at multiples of r along the
last dim, anywhere along the others) and the shared one (the shared element offset of
every run start, times bits/8; `plan_shared` places tiles 16-byte aligned). cp.async
moves 4, 8 or 16 bytes; runs or alignments below 4 bytes need the lowering's fallback
(a load and a shared store).
"""

from __future__ import annotations

import math

import numpy as np

from tilelang.analysis.layout_runs import layout_run
from tilelang.dtypes import DType
from tilelang.ir.layout import Layout
from tilelang.ir.nodes import (
    Atomic,
    CopyAsync,
    Function,
    Gather,
    Instr,
    Load,
    Scatter,
    ScatterAtomic,
    Store,
    Value,
)
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.types import SharedType, TensorType, TileType
from tilelang.ir.visit import Rewriter
from tilelang.passes import plan_shared
from tilelang.passes.analyze import CAP, Facts, analyze, pow2_factor, shape_divisor
from tilelang.target import CPU, Target

#: The widest access a thread makes: 16 bytes.
MAX_ACCESS_BITS = 128


def run(fn: Function, target: Target = CPU) -> Function:
    return _Vectorize(fn, analyze(fn)).rewrite_function(fn)


def copy_async_runs(
    fn: Function,
    facts: Facts,
    tensor: TensorType,
    offsets: tuple[Value, ...],
    shared: SharedType,
    moves: Layout | None = None,
) -> tuple[int, int, int]:
    """(elems, vector, align) that this pass would record on a `copy_async` of the box at
    `offsets` of a tensor of type `tensor` into a shared tile of type `shared` (masked:
    `moves` is its mask's layout), in `fn` with `facts` (`analyze(fn)`): what
    `software_pipeline` asks before choosing one."""
    r, align = _Vectorize(fn, facts).copy_runs(tensor, offsets, shared, moves)
    bits = r * shared.dtype.bits
    return r, bits // 8 if bits % 8 == 0 else 0, align


def load_runs(fn: Function, facts: Facts, load: Load) -> tuple[int, int, int]:
    """(elems, vector, align) that this pass would record on `load` (an instruction of
    `fn`, `facts` = `analyze(fn)`): what `software_pipeline` asks before choosing."""
    annotated = _Vectorize(fn, facts)._register_access(load, load.result.type)
    elems, vector, align = (int(annotated.attr(name)) for name in ("elems", "vector", "align"))
    return elems, vector, align


def gather_runs(fn: Function, facts: Facts, gather: Gather) -> tuple[int, int, int]:
    """(elems, vector, align) that this pass would record on `gather` (its result and
    index may have the layouts of a copy rather than `fn`'s, `facts` = `analyze(fn)`):
    what `software_pipeline` asks before copying a gather's rows with cp.async."""
    tile = gather.result.type
    assert isinstance(tile, TileType)
    annotated = _Vectorize(fn, facts)._indexed_access(gather, tile)
    elems, vector, align = (int(annotated.attr(name)) for name in ("elems", "vector", "align"))
    return elems, vector, align


# -- register-tile runs --------------------------------------------------------------------


def run_start_steps(layout: Layout | None, shape: tuple[int, ...], r: int) -> tuple[int, ...]:
    """Per dim, the largest power of two dividing the tile index of every run start."""
    if layout is None:  # one element per run: every index is a run start
        return tuple(CAP if size == 1 else 1 for size in shape)
    starts = layout.table()[:, ::r, :].reshape(-1, layout.rank)
    return tuple(_gcd_pow2(starts[:, d]) for d in range(layout.rank))


def _gcd_pow2(values: np.ndarray) -> int:
    g = int(np.gcd.reduce(values)) if values.size else 0
    return pow2_factor(g)


# -- the pass --------------------------------------------------------------------------------


class _Vectorize(Rewriter):
    def __init__(self, fn: Function, facts: Facts) -> None:
        super().__init__()
        self.fn = fn
        self.facts = facts

    def visit_Load(self, instr: Load) -> Instr:
        return self._register_access(self.generic(instr), instr.result.type)

    def visit_Store(self, instr: Store) -> Instr:
        return self._register_access(self.generic(instr), instr.value.type)

    def visit_Atomic(self, instr: Atomic) -> Instr:
        return self._register_access(self.generic(instr), instr.value.type)

    def visit_Gather(self, instr: Gather) -> Instr:
        return self._indexed_access(self.generic(instr), instr.result.type)

    def visit_Scatter(self, instr: Scatter) -> Instr:
        return self._indexed_access(self.generic(instr), instr.value.type)

    def visit_ScatterAtomic(self, instr: ScatterAtomic) -> Instr:
        return self._indexed_access(self.generic(instr), instr.value.type, "atomic")

    def _indexed_access(
        self, new: Gather | Scatter | ScatterAtomic, tile: TileType, kind: str = "register"
    ) -> Instr:
        """As a load's (store's, atomic addition's) runs, where each run lies in one
        gathered row: the index must be constant along the last dim (a size-1 index dim,
        not the gathered axis); the gathered coordinate may be any integer, so it
        divides nothing."""
        instr, index = new, new.index.type
        last = tile.rank - 1
        r = 1
        if instr.axis != last and index.shape[last] == 1:
            for candidate in _powers_of_two_down(pow2_factor(layout_run(tile.layout))):
                if self._legal(candidate, instr.tensor.type, new.offsets, kind):
                    r = candidate
                    break
        steps = list(run_start_steps(tile.layout, tile.shape, r))
        steps[instr.axis] = 1
        align = self._global_align(instr.tensor.type, new.offsets, tuple(steps))
        return _annotate(new, r, tile.dtype, align)

    def visit_CopyAsync(self, instr: CopyAsync) -> Instr:
        new = self.generic(instr)
        tensor, shared = instr.tensor.type, instr.shared.type
        assert isinstance(tensor, TensorType) and isinstance(shared, SharedType)
        moves = instr.mask.type.layout if instr.mask is not None else None
        r, align = self.copy_runs(tensor, instr.offsets, shared, moves)
        return _annotate(new, r, shared.dtype, align)

    def copy_runs(
        self,
        tensor: TensorType,
        offsets: tuple[Value, ...],
        shared: SharedType,
        moves: Layout | None = None,
    ) -> tuple[int, int]:
        """(r, align) of a copy of the box at `offsets` into `shared` (module docstring);
        a masked copy moves the runs of its mask's layout, `moves`."""
        layout = shared.layout or plan_shared.default_layout(shared.dtype, shared.shape)
        bound = pow2_factor(shared.shape[-1]) if shared.shape else 1
        if moves is not None:
            bound = pow2_factor(layout_run(moves))
        r = 1
        elements, threads = math.prod(shared.shape), self.fn.warps * 32
        for candidate in _powers_of_two_down(bound):
            # a run longer than one access only where every thread gets one: none idles
            kind = "copy" if elements >= threads * candidate else "access"
            if self._legal(candidate, tensor, offsets, kind) and _contiguous(layout, candidate):
                r = candidate
                break
        steps = tuple(
            (r if size > r else CAP) if d == len(shared.shape) - 1 else (1 if size > 1 else CAP)
            for d, size in enumerate(shared.shape)
        )
        if moves is not None:
            steps = run_start_steps(moves, tuple(shared.shape), r)
        align = min(
            self._global_align(tensor, offsets, steps),
            _byte_align(_shared_start_divisor(layout, r), shared.dtype),
        )
        return r, align

    def _register_access(self, new: Load | Store | Atomic, tile: TileType) -> Instr:
        tensor = new.tensor.type
        assert isinstance(tensor, TensorType)
        kind = "atomic" if isinstance(new, Atomic) else "register"
        r = 1
        for candidate in _powers_of_two_down(pow2_factor(layout_run(tile.layout))):
            if self._legal(candidate, tensor, new.offsets, kind):
                r = candidate
                break
        steps = run_start_steps(tile.layout, tile.shape, r)
        align = self._global_align(tensor, new.offsets, steps)
        return _annotate(new, r, tile.dtype, align)

    def _legal(self, r: int, tensor: TensorType, offsets: tuple[Value, ...], kind: str) -> bool:
        """(a) the mask is constant over runs of r and (b) the run's accesses are as wide
        as they can be (`_fits`)."""
        if not _fits(r, tensor.dtype.bits, kind):
            return False
        if r == 1 or not tensor.shape:
            return r == 1
        last = shape_divisor(self.fn, tensor.shape[-1])
        return last % r == 0 and self.facts.divisor(offsets[-1]) % r == 0

    def _global_align(
        self, tensor: TensorType, offsets: tuple[Value, ...], steps: tuple[int, ...]
    ) -> int:
        divisor = CAP
        stride = 1  # divisor of the product of the sizes after dim d
        for d in reversed(range(tensor.rank)):
            index = min(self.facts.divisor(offsets[d]), steps[d])
            divisor = min(divisor, index * stride)
            stride = min(stride * shape_divisor(self.fn, tensor.shape[d]), CAP)
        return _byte_align(min(divisor, CAP), tensor.dtype)


def _fits(r: int, bits: int, kind: str) -> bool:
    """(b) of the module docstring: a run of at most one 16-byte access; longer, a run of a
    `register` load or store that is a whole number of bytes (the lowering cuts it into
    the widest aligned accesses: 20 bytes of u5 in five 4-byte ones rather than ten
    2-byte ones), or the run of a `copy` that is the fewest whole 16-byte words of
    codes whose width does not divide 128 (128 u3 codes: three words). Other kinds
    ("access", "atomic") keep one access per run."""
    if r * bits <= MAX_ACCESS_BITS:
        return True
    if kind == "register":
        return r * bits % 8 == 0
    return kind == "copy" and r == MAX_ACCESS_BITS // math.gcd(MAX_ACCESS_BITS, bits)


def _powers_of_two_down(n: int) -> list[int]:
    """n, n/2, ..., 1 for a power of two n."""
    return [1 << k for k in reversed(range(n.bit_length()))]


def _byte_align(element_divisor: int, dtype: DType) -> int:
    """Bytes (≤ 16) dividing an address whose element offset `element_divisor` divides."""
    bit_divisor = element_divisor * pow2_factor(dtype.bits)
    return min(bit_divisor // 8, 16) if bit_divisor >= 8 else 0


def _annotate(instr: Instr, r: int, dtype: DType, align: int) -> Instr:
    bits = r * dtype.bits
    vector = bits // 8 if bits % 8 == 0 else 0
    return instr.with_attrs(elems=r, vector=vector, align=align)


# -- shared side of copy_async -------------------------------------------------------------


def _runs(layout: SharedLayout, r: int) -> np.ndarray:
    """Shared offsets of the tile, the last dim split into (runs, r)."""
    table = layout.table()
    return table.reshape(*table.shape[:-1], table.shape[-1] // r, r)


def _contiguous(layout: SharedLayout, r: int) -> bool:
    """Whether every run of r elements of a row is r consecutive shared offsets."""
    if r == 1:
        return True
    runs = _runs(layout, r)
    return bool(np.all(runs - runs[..., :1] == np.arange(r)))


def _shared_start_divisor(layout: SharedLayout, r: int) -> int:
    """The largest power of two dividing the shared element offset of every run start."""
    starts = _runs(layout, r)[..., 0].reshape(-1)
    return _gcd_pow2(starts) if starts.size else CAP


__all__ = [
    "MAX_ACCESS_BITS",
    "copy_async_runs",
    "gather_runs",
    "layout_run",
    "load_runs",
    "run",
    "run_start_steps",
]
