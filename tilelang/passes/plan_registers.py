"""Pass `plan_registers`: per-thread register estimate, and the 255-register limit.

Assumes a verified function whose register tiles have layouts (after `infer_layouts`; a
tile without one is spread evenly over the threads). It runs after `vectorize` and
`plan_shared`; the pipelining pass asks for the estimate before them too (accesses are
then as wide as the layout allows, shared tiles without a layout have no addresses).

The estimate, in 32-bit registers ("words") per thread, is the peak over the program
points (`tilelang.analysis.liveness.Program`) of what the lowering emits and ptxas keeps
in registers there:

**Values.** A live register tile holds ``ceil(num_locals · bits / 32)`` words (8 u4 codes
are one word); scalars and tensors none (they are the same in every thread: ptxas keeps
them in uniform registers or the constant bank). A result shares words with an operand
dying at its instruction when it can be written over it (elementwise `compute`, `cast`,
`view`, `reshape`, `transpose`, `broadcast`, `relayout` — through shared memory, it
stores the operand before reading the result —, `concat` over all its dying values and
`dot` over its accumulator), and a
loop's carried value with its initial value. A move each thread makes alone (`broadcast`,
`reshape`, `transpose`, `relayout`, `view`) renames its operand's registers; a zero tile
used only as dot accumulators holds none (the first mma reads the zero register).

**Addresses** (`addresses`). A global access needs a 64-bit address, 2 words, per row its
vector accesses touch (accesses in one row reach each other with immediate offsets, rows a
runtime stride apart cannot); a shared access (shared tiles, ldmatrix, the scratch area
of relayouts and reductions) 1 word per *address class*: accesses whose addresses differ
by the same amount in every thread share a register (a swizzle XORs a thread-dependent
phase into the column). They are live at the access, and in straight-line code at the
global access before it (ptxas computes them while that one's loads are in flight). In a
loop the per-thread part is the same in every iteration: ptxas computes it before the
outermost loop and holds it through the loop (a pointer per row); in straight-line code,
rows equally far apart in every thread share one (a row's part of a byte offset is a
term of its own); a gathered cp.async's rows are run-time values, a pointer each. A
cp.async's shared destination (blocked layout, uniform stage) is
recomputed. An innermost loop not pipelined (nor ``unroll=1``) adds `UNROLL_WORDS`:
ptxas unrolls it and overlaps the copies (counters, loads and addresses of the next).

**The thread.** `THREAD_WORDS`: its index, the lane and warp digits derived from it, the
stack pointer.

Calibrated on ptxas for sm_80 and sm_90: within `TOLERANCE` (15%, or 8 registers for
small kernels) of its count on every case of benchmarks/register_estimates.py. ptxas does not
always reach the classes (it gives each row of a reduction's reads registers of its own)
and under pressure recomputes addresses rather than holding them.

Guarantees: `estimate(fn)` returns the `RegisterPlan`. `run(fn, target)` raises
`RegisterBudgetError` when the estimate exceeds the budget (`register_budget`: 255, less
under min_blocks or for blocks over 8 warps) by more than its error (`refusal_limit`;
ptxas surely cannot fit the kernel) — naming the kernel, the budget and what sets it,
the estimate's parts, the source line of the peak and the largest live tiles — says
nothing when it exceeds it by less (ptxas may still fit it: the estimate is often above
ptxas's count), and returns `fn` with ``registers=<estimate>`` on its `blocks`. For a
GPU target it leaves a `SpillNote` to the build lowering it (`spill_verdict`), which
warns `RegisterSpillWarning` when ptxas spills.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from tilelang import dtypes
from tilelang.analysis.gather_copies import gathered_rows
from tilelang.analysis.layout_policy import blocked_layout
from tilelang.analysis.layout_runs import layout_run
from tilelang.analysis.liveness import Point, Program
from tilelang.analysis.replication import odd_size_advice, pipelining_advice, warn_replicated
from tilelang.analysis.streaming import first_needed, streamed_words
from tilelang.dtypes import DType
from tilelang.ir.atoms import LDMATRIX_CANDIDATES
from tilelang.ir.layout import Layout, Rep
from tilelang.ir.nodes import (
    Atomic,
    Block,
    Blocks,
    Broadcast,
    Cast,
    Compute,
    Concat,
    Const,
    CopyAsync,
    Dot,
    For,
    Full,
    Function,
    GatherAsync,
    Instr,
    Load,
    Loc,
    Reduce,
    Relayout,
    Reshape,
    Scan,
    SharedLoad,
    SharedStore,
    Slice,
    Store,
    Transpose,
    Var,
    View,
)
from tilelang.ir.shape_expr import Lit
from tilelang.ir.shared_access import contiguous_elements
from tilelang.ir.shared_layout import SharedLayout
from tilelang.ir.text import print_type
from tilelang.ir.thread import REGISTER_DTYPES
from tilelang.ir.types import SharedType, TensorType, TileType, Type
from tilelang.ir.visit import walk
from tilelang.passes.register_budget import RegisterBudget
from tilelang.passes.register_moves import (
    layout_table,
    move_indices,
    move_tiles,
    stays_in_registers,
    wanted,
)
from tilelang.spill_verdict import RegisterSpillWarning, SpillNote, defer
from tilelang.target import CPU, Target

#: The most registers a thread can have on every supported target (`tilelang.target`).
MAX_REGISTERS = 255
#: Words every thread holds: its index, the lane and warp digits, the stack pointer.
THREAD_WORDS = 8
#: Words of a 64-bit global address.
POINTER_WORDS = 2
#: Words an unrolled loop's overlapping copies add (counters, loads and addresses of the
#: next iterations); calibrated on ptxas, which unrolls such loops 2-4 times.
UNROLL_WORDS = 12
#: The widest access a thread makes, in bytes.
MAX_ACCESS = 16
WARP_SIZE = 32

TOLERANCE = 0.15  #: within this of ptxas on every case of benchmarks/register_estimates.py
SLACK = 8  #: or within this many registers (small kernels, same cases)

#: Instructions whose result may overwrite an operand dying there.
_IN_PLACE = (Compute, Cast, View, Reshape, Transpose, Broadcast, Relayout, Slice, Concat)
#: Moves between layouts: in registers, or through the scratch area.
_MOVES = (Relayout, Transpose, Reshape, Broadcast, Slice)


class RegisterBudgetError(ValueError):
    """The kernel cannot fit the registers a thread has; the message says what to change."""


# -- words per value -----------------------------------------------------------------------


def words(type_: Type, warps: int) -> int:
    """32-bit registers per thread that a value of `type_` occupies (tiles only: scalars
    and tensors are block-uniform, shared tiles are addresses)."""
    if not isinstance(type_, TileType):
        return 0
    if type_.layout is not None:
        count = type_.layout.num_locals
    else:
        count = math.ceil(type_.numel / (warps * WARP_SIZE)) if warps > 0 else type_.numel
    return math.ceil(count * type_.dtype.bits / 32)


# -- the estimate ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterPlan:
    """The estimate: `peak` words per thread at the point `at`, of which `value_words`
    hold live values and `address_words` addresses (the rest is `THREAD_WORDS`).

    `live` lists the values live there as (name, words), largest first; `values` holds
    the same values' Vars, in the same order.
    """

    peak: int
    at: Loc
    live: tuple[tuple[str, int], ...]
    values: tuple[Var, ...] = field(default=(), repr=False)
    value_words: int = 0
    address_words: int = 0


def estimate(fn: Function) -> RegisterPlan:
    """The peak over the program points of `fn` of live value words, address words and
    `THREAD_WORDS`."""
    program = Program.of(fn)
    if not program.points:
        return RegisterPlan(THREAD_WORDS, fn.loc, ())
    needed = first_needed(program)
    values, sizes, stop = _value_pressure(program, fn.warps, needed)
    held = address_words_by_point(program, fn.warps)
    total = [v + a for v, a in zip(values, held, strict=True)]
    peak = max(range(len(total)), key=lambda index: (total[index], -index))
    live = [v for v, first in needed.items() if sizes[v] and first <= peak <= stop[v]]
    live.sort(key=lambda v: (-sizes[v], v.name))
    return RegisterPlan(
        total[peak] + THREAD_WORDS,
        program.points[peak].instr.loc,
        tuple((v.name, sizes[v]) for v in live),
        tuple(live),
        values[peak],
        held[peak],
    )


def pressure_by_point(program: Program, warps: int) -> list[int]:
    """Words of the values live at every program point, in-place reuse applied."""
    return _value_pressure(program, warps, first_needed(program))[0]


def _value_pressure(
    program: Program, warps: int, needed: dict[Var, int]
) -> tuple[list[int], dict[Var, int], dict[Var, int]]:
    """`pressure_by_point`, with each value's words and last point (see `_sizes`);
    `needed`: `first_needed(program)`."""
    sizes, stop, root = _sizes(program, warps)
    count = len(program.points)
    delta = [0] * (count + 1)
    for var, first in needed.items():
        last = stop[var]
        if last < 0 or not sizes[var]:
            continue
        delta[max(first, 0)] += sizes[var]
        delta[last + 1] -= sizes[var]
    pressure, running = [], 0
    for point in program.points:
        running += delta[point.index]
        pressure.append(running - _reuse(program, point, sizes, stop, root))
    return pressure, sizes, stop


def _sizes(program: Program, warps: int) -> tuple[dict[Var, int], dict[Var, int], dict[Var, Var]]:
    """Each value's words and the last point its registers are needed at: a zero tile
    that only feeds dot accumulators holds none (the first mma reads the zero register);
    a move that stays in registers (a broadcast, a reshape, a transpose, a relayout or a
    view each thread can do alone) renames its operand's registers, which then live as
    long as either does (`root` maps such a result to the value that owns them)."""
    sizes = {var: words(var.type, warps) for var in program.start}
    stop = dict(program.stop)
    for var in _free_zeros(program):
        sizes[var] = 0
    sizes.update(streamed_words(program, sizes))
    root: dict[Var, Var] = {}
    for point in program.points:
        source = _renamed(point.instr) if not point.end else None
        if source is None:
            continue
        (result,) = point.instr.defs()
        base = root.get(source, source)
        root[result] = base
        stop[base] = max(stop[base], stop[result])
        sizes[result] = 0
    return sizes, stop, root


def _renamed(instr: Instr) -> Var | None:
    """The operand whose registers `instr`'s result takes, if it moves nothing."""
    move = move_tiles(instr) if isinstance(instr, (*_MOVES, View)) else None
    if move is None:
        return None
    value, source, result = move
    assert source.layout is not None and result.layout is not None
    if isinstance(instr, View):
        same = source.layout.num_locals * source.dtype.bits == (
            result.layout.num_locals * result.dtype.bits
        )
        return value if same else None
    same = source.dtype == result.dtype
    return value if same and stays_in_registers(instr, source, result) else None


def _reuse(
    program: Program,
    point: Point,
    sizes: dict[Var, int],
    stop: dict[Var, int],
    root: dict[Var, Var],
) -> int:
    """Words a result of `point` shares with an operand that dies there (a loop's
    initial values become its carried values in place)."""
    instr = point.instr
    if isinstance(instr, For) and not point.end:
        pairs = zip(instr.inits, instr.carried, strict=True)
        return sum(
            min(sizes[root.get(init, init)], sizes[carried])
            for init, carried in pairs
            if isinstance(init, Var) and stop[root.get(init, init)] == point.index
        )
    if point.end or not isinstance(instr, (*_IN_PLACE, Dot)):
        return 0
    candidates = (instr.acc,) if isinstance(instr, Dot) else instr.uses()
    candidates = tuple(root.get(v, v) if isinstance(v, Var) else v for v in candidates)
    dying = [
        sizes[v]
        for v in dict.fromkeys(candidates)
        if isinstance(v, Var)
        and isinstance(v.type, TileType)
        and stop[v] == point.index
        and program.start[v] < point.index
    ]
    results = [sizes[v] for v in instr.defs()]
    if not dying or not results:
        return 0
    if isinstance(instr, Concat):  # its parts side by side: every dying value's words
        return min(sum(dying), max(results))
    return min(max(dying), max(results))


def _free_zeros(program: Program) -> set[Var]:
    """Zero tiles whose only uses are the accumulators of dots."""
    zeros = {
        p.instr.result
        for p in program.points
        if isinstance(p.instr, Full)
        and isinstance(p.instr.value, Const)
        and p.instr.value.value == 0
    }
    for point in program.points:
        for operand in point.instr.uses():
            if operand in zeros and not (
                isinstance(point.instr, Dot) and point.instr.acc is operand
            ):
                zeros.discard(operand)
    return zeros


def address_words_by_point(program: Program, warps: int) -> list[int]:
    """Address words at every program point: those of the instruction there (and, in
    straight-line code, of the next global access), those held over the loops around
    it, and the allowance of an unrolled loop (see the module docstring)."""
    count = len(program.points)
    delta = [0] * (count + 1)
    straight = [not program.within[p.index] for p in program.points]
    found = [0 if p.end else addresses(p.instr, warps, straight[p.index]) for p in program.points]
    here = [0] * count
    for point in program.points:
        loops, index = program.within[point.index], point.index
        if loops:  # hoisted before the outermost loop, held to its back edge
            delta[loops[0]] += found[index]
            delta[program.loops[loops[0]] + 1] -= found[index]
        elif isinstance(point.instr, _GLOBAL) and not point.end:
            here[index] = found[index] + _next_global(program, index, found)
        else:
            here[index] = found[index]
        if _unrolled(point):
            delta[index] += UNROLL_WORDS
            delta[program.loops[index] + 1] -= UNROLL_WORDS
    out, running = [], 0
    for index in range(count):
        running += delta[index]
        out.append(running + here[index])
    return out


def _unrolled(point: Point) -> bool:
    """Whether `point` heads a loop ptxas unrolls and overlaps: an innermost loop neither
    pipelined (``stages`` of 2 or more: it has its own schedule) nor ``unroll=1``."""
    loop = point.instr
    if point.end or not isinstance(loop, For) or (loop.stages or 1) > 1 or loop.unroll == 1:
        return False
    return not any(isinstance(inner, For) for inner in walk(loop.body))


_GLOBAL = (Load, Store, Atomic, CopyAsync, GatherAsync)


def _next_global(program: Program, index: int, found: list[int]) -> int:
    """The address words of the next global access after point `index` in straight-line
    code (none past a loop or a branch)."""
    for point in program.points[index + 1 :]:
        if point.end or point.instr.BODIES:
            return 0
        if isinstance(point.instr, _GLOBAL):
            return found[point.index]
    return 0


# -- per-thread addresses --------------------------------------------------------------------


def addresses(instr: Instr, warps: int, straight: bool = False) -> int:
    """Words of the per-thread addresses of `instr`'s memory accesses (`warps` warps), in
    a loop or in `straight`-line code."""
    found = _ADDRESSES.get(type(instr))
    if found is None:
        return 0
    key = (_access_key(instr), warps, straight)
    words = _ADDRESS_WORDS.get(key)
    if words is None:
        if len(_ADDRESS_WORDS) >= 4096:
            _ADDRESS_WORDS.clear()
        words = _ADDRESS_WORDS[key] = found(instr, warps * WARP_SIZE, straight)
    return words


#: `addresses` of the accesses met lately, by `_access_key`: a kernel repeats its
#: accesses, both estimates of a build see most of them, and each target's build again.
_ADDRESS_WORDS: dict[tuple, int] = {}


def _access_key(instr: Instr) -> tuple:
    """All that `instr`'s `_ADDRESSES` function reads of it: its class, the types of its
    operands and result, and its fields that choose the accesses."""
    if isinstance(instr, Load | Store | Atomic):
        tile = instr.result if isinstance(instr, Load) else instr.value
        return (type(instr), tile.type, instr.tensor.type, instr.attr("elems"))
    if isinstance(instr, CopyAsync):
        return (CopyAsync, instr.shared.type, instr.tensor.type, instr.attr("elems"))
    if isinstance(instr, GatherAsync):
        return (GatherAsync, instr.shared.type, instr.axis)
    if isinstance(instr, SharedLoad | SharedStore):
        tile = instr.result if isinstance(instr, SharedLoad) else instr.value
        return (type(instr), instr.shared.type, tile.type)
    if isinstance(instr, Reduce | Scan):
        return (type(instr), instr.axis, instr.value.type, instr.result.type)
    value = instr.uses()[0]  # a move (`move_tiles`)
    moved = value.type if isinstance(value, Var) else value
    return (type(instr), move_indices(instr), moved, instr.defs()[0].type)


def address_classes(addresses: np.ndarray) -> int:
    """Registers that hold the per-thread parts of byte addresses [threads, accesses]:
    two accesses share one when their difference is the same in every thread."""
    if addresses.size == 0:
        return 0
    return _distinct_columns(addresses - addresses[:1])


def _distinct_columns(array: np.ndarray) -> int:
    """How many different columns a [rows, columns] array has."""
    columns = np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
    return len({column.tobytes() for column in columns})


def _global_access(instr: Instr, threads: int, straight: bool) -> int:
    """A load, store or atomic add: a pointer per row its vector accesses touch."""
    assert isinstance(instr, Load | Store | Atomic)
    tile = (instr.result if isinstance(instr, Load) else instr.value).type
    tensor = instr.tensor.type
    if not isinstance(tile, TileType) or not isinstance(tensor, TensorType):
        return 0
    if tile.layout is None:  # one access per element, each its own address
        return POINTER_WORDS * math.ceil(tile.numel / threads)
    elems = instr.attr("elems")
    if not isinstance(elems, int) or elems < 1:  # before vectorize: what the layout allows
        most = min(layout_run(tile.layout), MAX_ACCESS * 8 // tile.dtype.bits)
        elems = 1 << (most.bit_length() - 1) if most > 0 else 1
    index = layout_table(tile.layout)[:, :: max(elems, 1)]
    return POINTER_WORDS * _row_classes(tensor, index, tile.dtype.bits, straight)


def _row_classes(tensor: TensorType, index: np.ndarray, bits: int, straight: bool) -> int:
    """64-bit addresses a thread needs for accesses at tile indices [threads, accesses,
    rank]: accesses share one when they differ by a constant number of bytes — the same
    row of a tensor whose row stride is only known at run time, any rows when the
    strides are literals — or, in `straight`-line code, by rows the same in every thread."""
    offset = index[..., -1] * bits  # in bits: sub-byte rows may start inside a byte
    stride: int | None = bits
    rows = []
    for d in reversed(range(tensor.rank - 1)):
        size = tensor.shape[d + 1]
        stride = stride * size.value if isinstance(size, Lit) and stride is not None else None
        if stride is None:
            rows.append(index[..., d] - index[:1, ..., d] if straight else index[..., d])
        else:
            offset = offset + index[..., d] * stride
    offset //= 8
    key = np.stack([offset - offset[:1], *rows], axis=1)  # [threads, parts, accesses]
    return _distinct_columns(key.reshape(-1, key.shape[-1]))


def _copy_async(instr: Instr, threads: int, straight: bool) -> int:
    """A cp.async: its source pointers (each thread copies the runs of the blocked layout,
    as the lowering does; its shared destinations hold nothing, see the module docstring)."""
    assert isinstance(instr, CopyAsync)
    shared, tensor = instr.shared.type, instr.tensor.type
    assert isinstance(shared, SharedType) and isinstance(tensor, TensorType)
    elems = instr.attr("elems")
    elems = elems if isinstance(elems, int) and elems > 0 and shared.shape[-1] % elems == 0 else 1
    layout = blocked_layout(shared.shape, shared.dtype, threads, min_vec=elems)
    index = layout_table(layout)[:, ::elems]
    return POINTER_WORDS * _row_classes(tensor, index, shared.dtype.bits, straight)


def _gather_async(instr: Instr, threads: int, _straight: bool = False) -> int:
    """A gathered cp.async: a source pointer per run-time row its copies come from."""
    assert isinstance(instr, GatherAsync) and isinstance(instr.shared.type, SharedType)
    return POINTER_WORDS * _distinct_columns(gathered_rows(instr.shared.type, instr.axis, threads))


def _shared_access(instr: Instr, threads: int, _straight: bool = False) -> int:
    """A shared load (with ldmatrix where the lowering uses it) or store, in runs."""
    assert isinstance(instr, SharedLoad | SharedStore)
    shared = instr.shared.type
    tile = (instr.result if isinstance(instr, SharedLoad) else instr.value).type
    if not isinstance(tile, TileType) or not isinstance(shared, SharedType):
        return 0
    if tile.layout is None or shared.layout is None:
        return 0
    offsets = _tile_offsets(shared.layout)
    reads = None
    if isinstance(instr, SharedLoad) and contiguous_elements(shared.layout) % 8 == 0:
        reads = _ldmatrix_starts(tile, offsets)
    starts = reads if reads is not None else _run_starts(tile.layout, offsets, tile.dtype.bits)
    return address_classes(starts)


def _move(instr: Instr, threads: int, _straight: bool = False) -> int:
    """A move between layouts: in registers when every thread holds its sources, else
    stored to the scratch area and read back (with ldmatrix where a relayout allows)."""
    move = move_tiles(instr)
    if move is None:
        return 0
    _, source, result = move
    if stays_in_registers(instr, source, result):
        return 0
    elem = 4 if _packed(source.dtype) else _element_bytes(source.dtype)
    shape = tuple(source.shape)
    reads = None
    if isinstance(instr, Relayout):  # ldmatrix addresses 16-bit elements of the scratch
        reads = _ldmatrix_starts(result, lambda index: _scratch_bytes(shape, 2, index) // 2)
    if reads is None:
        index = wanted(instr, source, result)
        reads = _scratch_bytes(shape, elem, index).reshape(index.shape[0], -1)
    return address_classes(_scratch_writes(source, elem)) + address_classes(reads)


def _fold(instr: Instr, threads: int, _straight: bool = False) -> int:
    """A reduction or scan the warps cannot do with shuffles: the tile goes to the
    scratch area, and each thread reads the whole axis of every element it produces."""
    assert isinstance(instr, Reduce | Scan)
    source, result = instr.value.type, instr.result.type
    if not (isinstance(source, TileType) and isinstance(result, TileType)):
        return 0
    if source.layout is None or result.layout is None or _in_lanes(instr, source, result):
        return 0
    elem = _element_bytes(source.dtype)
    out = layout_table(result.layout)  # [threads, locals, rank of the result]
    length = source.shape[instr.axis]
    index = np.zeros((*out.shape[:2], length, source.layout.rank), np.int64)
    kept = [d for d in range(source.layout.rank) if d != instr.axis]
    columns = kept if isinstance(instr, Reduce) else list(range(source.layout.rank))
    index[..., columns] = out[:, :, None, : len(columns)]
    index[..., instr.axis] = np.arange(length)
    reads = _scratch_bytes(tuple(source.shape), elem, index).reshape(out.shape[0], -1)
    return address_classes(_scratch_writes(source, elem)) + address_classes(reads)


#: The address words of each instruction class that accesses memory.
_ADDRESSES: dict[type[Instr], Callable[[Instr, int, bool], int]] = {
    **dict.fromkeys((Load, Store, Atomic), _global_access),
    CopyAsync: _copy_async,
    GatherAsync: _gather_async,
    **dict.fromkeys((SharedLoad, SharedStore), _shared_access),
    **dict.fromkeys(_MOVES, _move),
    **dict.fromkeys((Reduce, Scan), _fold),
}


# -- what the lowering addresses -------------------------------------------------------------


def _tile_offsets(layout: SharedLayout) -> Callable[[np.ndarray], np.ndarray]:
    """Tile indices [..., rank] -> element offsets in a shared tile."""
    offsets = _shared_table(layout)
    return lambda index: offsets[tuple(np.moveaxis(index, -1, 0))]


@functools.lru_cache(maxsize=512)
def _shared_table(layout: SharedLayout) -> np.ndarray:
    return layout.table()  # kept: callers only read it


def _scratch_bytes(shape: tuple[int, ...], elem: int, index: np.ndarray) -> np.ndarray:
    """Byte offsets of tile indices [..., rank] in the row-major scratch tile: rows of a
    multiple of 128 bytes XOR their 16-byte chunks with the row (as the lowering does)."""
    if not shape:
        return np.zeros(index.shape[:-1], np.int64)
    row_bytes = shape[-1] * elem
    row = np.zeros(index.shape[:-1], np.int64)
    for d, size in enumerate(shape[:-1]):
        row = row * size + index[..., d]
    column = index[..., -1] * elem
    if row_bytes % 128 == 0:
        column = ((column // 16) ^ (row % 8)) * 16 + column % 16
    return row * row_bytes + column


def _scratch_writes(tile: TileType, elem: int) -> np.ndarray:
    """Byte addresses [threads, stores] of writing `tile` to the scratch area."""
    assert tile.layout is not None
    run = 1 if _packed(tile.dtype) else layout_run(tile.layout)
    run &= -run
    while run > 1 and (run * elem > MAX_ACCESS or tile.layout.num_locals % run):
        run //= 2
    index = layout_table(tile.layout)[:, ::run]
    return _scratch_bytes(tuple(tile.shape), elem, index)


def _run_starts(
    layout: Layout, offsets: Callable[[np.ndarray], np.ndarray], bits: int, most: int = 0
) -> np.ndarray:
    """Byte addresses [threads, accesses] of moving `layout`'s locals in runs: the longest
    power-of-two runs (at most `most` elements when given, 16 bytes) consecutive in the
    shared tile."""
    placed = offsets(layout_table(layout))  # [threads, locals]
    count = layout.num_locals
    run = 1
    while (
        count % (run * 2) == 0
        and run * 2 * bits <= MAX_ACCESS * 8
        and (not most or run * 2 <= most)
    ):
        run *= 2
    while run > 1:
        runs = placed.reshape(placed.shape[0], count // run, run)
        if np.all(runs - runs[..., :1] == np.arange(run)) and run * bits % 8 == 0:
            break
        run //= 2
    return placed[:, ::run] * bits // 8


def _ldmatrix_starts(
    tile: TileType, offsets: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray | None:
    """Byte addresses [threads, ldmatrix] of reading `tile` with ldmatrix (each lane gives
    the start of one 16-byte row), or None when the lowering would not use it."""
    layout = tile.layout
    if tile.dtype.bits != 16 or _packed(tile.dtype) or layout is None or layout.rank != 2:
        return None
    if layout.shape[-1] * 2 % 16:
        return None
    index = _ldmatrix_rows(layout)
    return None if index is None else offsets(index) * 2


@functools.lru_cache(maxsize=512)
def _ldmatrix_rows(layout: Layout) -> np.ndarray | None:
    """The tile index [threads, ldmatrix, 2] whose row each lane gives each ldmatrix of a
    tile of `layout` (None: no ldmatrix atom divides it). Callers only read it."""
    atom = next((a for a in LDMATRIX_CANDIDATES if layout.divisible_by(a.layout)), None)
    if atom is None:
        return None
    quotient = layout_table(layout / atom.layout)  # [warps, blocks, 2]
    threads = layout.num_threads
    lane = np.arange(threads) % WARP_SIZE
    rows = atom.grid[0]
    matrix = (lane // 8) % atom.num
    inside = np.stack([(matrix % rows) * 8 + lane % 8, (matrix // rows) * 8], axis=-1)
    size = np.array(atom.layout.shape)
    blocks = quotient[np.arange(threads) // WARP_SIZE % quotient.shape[0]]  # [threads, blocks, 2]
    return blocks * size + inside[:, None, :]


def _in_lanes(instr: Reduce | Scan, source: TileType, result: TileType) -> bool:
    """Whether the lowering folds the axis with shuffles (its elements in the thread's
    registers and in lanes of one warp) rather than through shared memory."""
    value = _value_dtype(source.dtype)
    if value not in (dtypes.f32, dtypes.i32, dtypes.u32) or _value_dtype(result.dtype) != value:
        return False
    layout = source.layout
    assert layout is not None
    stride = 1
    for mode in reversed(layout.thread_modes):
        size = mode.size if isinstance(mode, Rep) else layout.mode_sizes[mode]
        spans = not isinstance(mode, Rep) and layout.mode_dims[mode] == instr.axis and size > 1
        if spans and (stride * size > WARP_SIZE or size & (size - 1)):
            return False
        stride *= size
    return True


def _packed(dtype: DType) -> bool:
    return dtype not in REGISTER_DTYPES or dtype == dtypes.u1


def _value_dtype(dtype: DType) -> DType:
    if not _packed(dtype) or dtype == dtypes.u1:
        return dtype
    if dtype.is_float:
        return dtypes.f32
    return dtypes.i32 if dtype.signed else dtypes.u32


def _element_bytes(dtype: DType) -> int:
    value = _value_dtype(dtype)
    return 1 if value == dtypes.u1 else value.bits // 8


# -- the pass --------------------------------------------------------------------------------


def run(fn: Function, target: Target = CPU) -> Function:
    plan = estimate(fn)
    budget = RegisterBudget.of(fn, target)
    if plan.peak > refusal_limit(budget.limit):
        raise RegisterBudgetError(budget_message(fn, plan, budget))
    if target.is_gpu:
        warn_replicated(fn)
    if target.is_gpu:
        # ptxas, not the estimate, says whether the kernel spills: the build warns.
        defer(spill_note(fn, plan, budget))
    return _record(fn, plan.peak)


def refusal_limit(limit: int = MAX_REGISTERS) -> int:
    """The largest estimate a kernel may have: `limit` registers plus the estimate's
    error (`TOLERANCE`, at least `SLACK`): below it ptxas may still fit `limit`."""
    return max(math.floor(limit * (1 + TOLERANCE)), limit + SLACK)


def budget_message(fn: Function, plan: RegisterPlan, budget: RegisterBudget) -> str:
    return (
        f"kernel {fn.name} needs about {plan.peak} registers per thread ({_parts(plan)}), "
        f"more than {budget} even if the estimate is {TOLERANCE:.0%} high. "
        f"{_advice(fn, plan, budget)}"
    )


def spill_note(fn: Function, plan: RegisterPlan, budget: RegisterBudget) -> SpillNote:
    """What a spill warning about `fn` says, for the estimate's or ptxas's verdict."""
    return SpillNote(
        kernel=fn.name,
        where=str(fn.loc),
        file=fn.loc.file,
        line=fn.loc.line,
        estimate=plan.peak,
        parts=_parts(plan),
        limit=budget.limit,
        said=str(budget),
        advice=_advice(fn, plan, budget),
        threads=fn.warps * WARP_SIZE,
        min_blocks=budget.min_blocks,
    )


def _parts(plan: RegisterPlan) -> str:
    return (
        f"an estimate: {plan.value_words} for the values live at its peak, "
        f"{plan.address_words} for addresses, {THREAD_WORDS} for the thread"
    )


def _advice(fn: Function, plan: RegisterPlan, budget: RegisterBudget) -> str:
    tiles = [v for v in plan.values if isinstance(v.type, TileType)][:3]
    largest = "; ".join(
        f"%{v.name}: {print_type(v.type)}, {words(v.type, fn.warps)} registers per thread"
        for v in tiles
    )
    sizes = [f"{n}={v}" for n, v in fn.constexprs if type(v) is int and v > 1]
    named = f" (this build's {', '.join(sizes)})" if sizes else ""
    smaller = f"smaller tiles{named} {budget.advice()}."
    pipelining = pipelining_advice(fn, {v.name for v in tiles})
    advice = f"{pipelining}; or use {smaller}" if pipelining else f"Use {smaller}"
    odd = odd_size_advice(tiles)
    advice = f"{odd}. Or: {advice[0].lower()}{advice[1:]}" if odd else advice
    return f"At {plan.at} the largest live tiles are {largest or 'none'}. {advice}"


def _record(fn: Function, peak: int) -> Function:
    instrs = tuple(
        instr.with_attrs(registers=peak) if isinstance(instr, Blocks) else instr
        for instr in fn.body.instrs
    )
    return replace(fn, body=Block(instrs))


def registers(fn: Function) -> int | None:
    """The estimate `run` recorded on the `blocks` instruction (None before it ran)."""
    for instr in fn.body.instrs:
        if isinstance(instr, Blocks):
            value = instr.attr("registers")
            return value if isinstance(value, int) else None
    return None


__all__ = [
    "LDMATRIX_CANDIDATES",
    "MAX_REGISTERS",
    "SLACK",
    "THREAD_WORDS",
    "TOLERANCE",
    "UNROLL_WORDS",
    "RegisterBudgetError",
    "RegisterPlan",
    "RegisterSpillWarning",
    "address_classes",
    "address_words_by_point",
    "addresses",
    "budget_message",
    "estimate",
    "pressure_by_point",
    "refusal_limit",
    "registers",
    "run",
    "spill_note",
    "words",
]
