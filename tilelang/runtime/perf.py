"""The static performance report: what a compiled kernel should reach on a GPU, predicted
from its SASS, its resources and its block IR, with no GPU at hand.

This module owns the model and the report (`perf_report`, `PerfReport`, `occupancy`);
`tilelang.runtime.perf_loop` reads the main loop out of the IR, `tilelang.runtime.sass`
the instruction mix out of the cubin, and `tilelang.target.HARDWARE` holds the card.
`CompiledKernel.perf(**launch)` and `tilelang inspect --perf` call it. It is a
prediction, never a measurement: every number follows from the inputs below.

The model, for one launch (its sizes give the grid: B blocks of W warps):

1. **Occupancy** — resident blocks per SM r = min over four limits, as CUDA's
   occupancy calculator (`cuda_occupancy.h`) computes them: registers (a warp's
   registers rounded up to the allocation unit, 256; each of the 4 scheduler slices of
   the register file, 16K registers, holds whole warps), shared memory (the block's
   bytes plus the 1 KiB the system reserves, rounded up to 128, against the SM's
   largest carveout, which the driver's default preference allows), threads, and the
   resident-block cap. Waves = B / (r * SMs).
2. **Main loop** — the block-IR loop that loads the most global bytes per iteration
   (the first of equals); its SASS is the loop in the same place among the SASS loops
   that load global memory (`sass.loops`), or the largest backward branch
   (`sass.main_loop`) when ptxas left a different number of them; its shortest path
   (`sass.shortest_path`: every forward branch that skips instructions taken, as
   for a mask only the last block runs; a note says how many it skips). One
   iteration of the block-IR loop is that many warp instructions divided by how many
   times ptxas unrolled it (the SASS's HMMA/IMMA count over the thread IR's `Mma`s, or
   else its global accesses over the thread IR's). Each warp issues every one of them
   (predicated-off lanes or not). Instructions per element of a tensor T =
   (warp instructions per iteration * W) / (elements of T the block loads per
   iteration). Tiles are clipped to the tensor's extent (with M = 1, one row of a
   16-row tile moves; masked elements move nothing).
3. **Bytes in flight** — per block: for each global tile the loop loads, its bytes per
   iteration times its pipeline depth (`perf_loop`: 1 for a `load` consumed in its
   iteration, S - 1 for a copy or load the pipeline pass issues ahead in a `stages=S`
   loop); per SM: times r. For the
   launch, the blocks running at once are B / ceil(waves) (a grid of fewer blocks than
   fit runs them all; a last partial wave lowers the average).
4. **Bounds**, each the least time the launch can take by one resource:
   - DRAM floor: bytes of every tensor the kernel reads plus every tensor it writes,
     each once, plus the sectors uncoalesced loads waste (below), over the card's peak
     DRAM bandwidth;
   - memory latency (Little's law): the same bytes over (bytes in flight at once /
     DRAM latency), the bandwidth that many outstanding bytes sustain;
   - instruction issue: the busiest SM runs ceil(B / SMs) blocks, each issuing
     W * iterations * (warp instructions per iteration), at 4 warp instructions per
     cycle (one per scheduler) at the card's clock — or fewer when fewer warps are on
     the SM at once (min(r, ceil(B / SMs)) * W < 4): a warp issues from its own
     scheduler only;
   - special functions: the busiest SM's MUFU instructions (ex2, lg2, rcp, ...) times
     32 results each, over the SM's special-function rate (16 a cycle on sm_80 to
     sm_90, 4 per scheduler: a warp's MUFU holds its scheduler's unit for 8 cycles,
     whatever else issues meanwhile), of the schedulers that have a warp;
   - shared memory: the bytes the busiest SM's loop moves through shared memory
     (`sass.shared_bytes`: LDS/STS by width, ldmatrix by its matrices, what cp.async
     writes, the B a warpgroup mma reads, a quarter for each of its warps; whole
     128-byte wavefronts, no bank conflicts) over the SM's 128 bytes a cycle;
   - tensor cores: the flops of the HMMA/IMMA instructions executed (the tiles'
     padding included) over the peak of `mma.sync` (IMMA at twice the f16 rate): the
     data sheet's, except on H100, whose data-sheet peak needs `wgmma`
     (`tilelang.target.Hardware.mma_flops`); plus those of HGMMA (sm_90a's `wgmma`)
     over the data sheet's peak.
   The prediction is the largest of them (they are assumed to overlap perfectly):
   predicted fraction of DRAM bandwidth = (useful bytes, each tensor once) / peak
   bandwidth / predicted, and of tensor-core peak =
   executed flops / predicted time / the peak of the instruction doing most of them.
   The bound that equals the prediction binds.
   The issue budget per element of T = 4 * clock * SMs * floor / (elements of T): the
   warp instructions per element the GPU can issue while the launch runs at the floor.

5. **Coalescing** (`tilelang.runtime.perf_sectors`, counted by the lowering,
   `tilelang.lowering.coalescing`): a global access whose warp requests touch s 32-byte
   sectors where the bytes they move fit in m is listed with its source line. DRAM
   moves whole sectors: a tensor read by such a load is charged s/m times its bytes
   (its worst load; as if no later request found the rest of a sector in L1 or L2, an
   upper bound). A store's or an atomic's partial sectors are merged in L2 when the
   block writes the whole sector, so they cost L2 bandwidth only, which the model has
   no bound for: they are listed and do not change the prediction.

Not modelled: the prologue and epilogue outside the main loop, L2 hits (a tile many
blocks read, such as the activations of a matmul, is counted at DRAM latency), bank
conflicts, L2 and load-store-unit bandwidth (the sectors of uncoalesced stores),
dependency stalls within a warp (with one or two warps per scheduler the
issue bound is optimistic), launch overhead, clocks below the data sheet's. The DRAM
latency is an assumption (`tilelang.target.Hardware.dram_latency_s`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.ir.types import ScalarType
from tilelang.ir.visit import walk
from tilelang.runtime import sass as sass_text
from tilelang.runtime.cubin import Resources
from tilelang.runtime.host_expr import eval_grid
from tilelang.runtime.perf_loop import (
    MainLoop,
    PerfError,
    TileLoad,
    find_main_loop,
    tensor_shapes,
    thread_loop_counts,
    trip_count,
)
from tilelang.runtime.perf_sectors import SectorRow, extra_read_bytes, sector_rows
from tilelang.runtime.perf_text import format_report
from tilelang.target import Hardware, hardware

__all__ = ["Bound", "LoadRow", "Occupancy", "PerfError", "PerfReport", "occupancy", "perf_report"]

WARP = 32


# --------------------------------------------------------------------------- occupancy


@dataclass(frozen=True)
class Occupancy:
    """Resident blocks per SM by each limit, for blocks of `threads` threads using
    `registers` per thread and `shared_bytes` of shared memory (`shared_allocated`:
    what the SM sets aside for one, the reserve and rounding included)."""

    threads: int
    registers: int
    shared_bytes: int
    shared_allocated: int
    by_registers: int
    by_shared: int
    by_threads: int
    by_blocks: int

    @property
    def resident(self) -> int:
        return min(self.by_registers, self.by_shared, self.by_threads, self.by_blocks)

    @property
    def limiters(self) -> tuple[str, ...]:
        """The limits that decide `resident` ("registers", "shared", "threads", "blocks")."""
        limits = {
            "registers": self.by_registers,
            "shared": self.by_shared,
            "threads": self.by_threads,
            "blocks": self.by_blocks,
        }
        return tuple(name for name, value in limits.items() if value == self.resident)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(hw: Hardware, threads: int, registers: int, shared_bytes: int) -> Occupancy:
    """Resident blocks per SM of `hw` (the rules of the module docstring, step 1)."""
    warps = -(-threads // WARP)
    per_warp = _round_up(max(registers, 1) * WARP, hw.register_unit)
    # The launch check assumes every slice gets as many warps as the busiest one.
    if per_warp * _round_up(warps, hw.sub_partitions) > hw.registers_per_sm:
        by_registers = 0  # the block cannot launch at all
    else:
        slice_warps = (hw.registers_per_sm // hw.sub_partitions) // per_warp
        by_registers = slice_warps * hw.sub_partitions // warps
    allocated = _round_up(shared_bytes + hw.shared_reserved, hw.shared_unit)
    return Occupancy(
        threads=threads,
        registers=registers,
        shared_bytes=shared_bytes,
        shared_allocated=allocated,
        by_registers=by_registers,
        by_shared=hw.shared_bytes_per_sm // allocated,
        by_threads=hw.max_threads_per_sm // (warps * WARP),
        by_blocks=hw.max_blocks_per_sm,
    )


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class LoadRow:
    """One global tile the main loop loads per iteration, at this launch: its bytes and
    elements clipped to the tensor's extent, how many iterations ahead it is issued,
    the bytes it keeps in flight per block, and the instructions per element of its
    tensor (all of that tensor's loads in the loop together)."""

    tensor: str
    kind: str
    tile: tuple[int, ...]
    dtype: str
    elements: int
    bytes: float
    clipped: bool
    ahead: int
    depth: int
    in_flight: float
    instructions_per_element: float
    loc: str


@dataclass(frozen=True)
class Bound:
    """The least time the launch can take by one resource, and the fraction of DRAM
    bandwidth that leaves (floor / seconds, at most 1); `detail` shows the arithmetic."""

    name: str
    seconds: float
    fraction: float
    detail: str


@dataclass(frozen=True)
class PerfReport:
    """The static performance report of one kernel at one launch (module docstring).

    `str(report)` is the text the CLI prints; `report.to_dict()` the same as plain data.
    """

    kernel: str
    target: str
    card: str
    launch: dict[str, int | float]
    grid: tuple[int, ...]
    blocks: int
    warps: int
    occupancy: Occupancy
    waves: float
    loop: str
    iterations: int
    unroll: int
    instructions_per_iteration: float
    mix: dict[str, dict[str, float]]
    loads: tuple[LoadRow, ...]
    per: str | None
    instructions_per_element: float | None
    issue_budget_per_element: float | None
    in_flight_block: float
    in_flight_sm: float
    concurrent_blocks: float
    in_flight: float
    latency_s: float
    little_bandwidth: float
    peak_bandwidth: float
    bytes_total: int
    dram_bytes: float
    sectors: tuple[SectorRow, ...]
    mma_flops: float
    bounds: tuple[Bound, ...]
    predicted_seconds: float
    dram_fraction: float
    tensor_fraction: float
    binds: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["occupancy"]["resident"] = self.occupancy.resident
        data["occupancy"]["limiters"] = list(self.occupancy.limiters)
        return data

    def __str__(self) -> str:
        return format_report(self)


def _check_launch(fn: ir.Function, launch: Mapping[str, Any]) -> tuple[dict, dict]:
    """(sizes, scalars) of the launch, checked against the kernel's names and the size
    facts it was compiled for."""
    size_names = [v.name for v in fn.sizes]
    scalar_names = [p.name for p in fn.params if isinstance(p.type, ScalarType)]
    unknown = sorted(set(launch) - set(size_names) - set(scalar_names))
    if unknown:
        raise PerfError(
            f"{fn.name}: {', '.join(unknown)} is not a size or scalar parameter "
            f"(sizes: {', '.join(size_names) or 'none'}; scalars: "
            f"{', '.join(scalar_names) or 'none'})"
        )
    missing = [n for n in size_names if n not in launch]
    if missing:
        raise PerfError(f"{fn.name}: a report needs every size; missing {', '.join(missing)}")
    sizes = {}
    for name in size_names:
        value = launch[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PerfError(f"{fn.name}: size {name} must be an int >= 0, got {value!r}")
        sizes[name] = value
    for name, divisor in fn.assume:
        if name in sizes and sizes[name] % divisor:  # (a tensor's value fact: not a size)
            raise PerfError(
                f"{fn.name}: {name}={sizes[name]} is not a multiple of {divisor}, which this "
                f"kernel was compiled to assume; compile with assume={{{name!r}: ...}} "
                "matching the launch"
            )
    return sizes, {n: launch[n] for n in scalar_names if n in launch}


def _tensor_bytes(fn: ir.Function, shapes: dict[str, tuple[int, ...]]) -> int:
    """Bytes of every tensor the kernel reads plus every tensor it writes, each once
    (gathers, scatters, scalar loads and atomic additions included: a gathered pool
    counts whole, an upper bound on what the kernel reads of it)."""
    dtypes = {p.name: p.type.dtype for p in fn.params if p.name in shapes}
    reads = ir.Load | ir.CopyAsync | ir.Gather | ir.GatherAsync | ir.LoadScalar
    # An atomic addition reads what it adds to and writes it back.
    adds = ir.AtomicAdd | ir.ScatterAdd
    read = {i.tensor.name for i in walk(fn) if isinstance(i, reads | adds)}
    writes = ir.Store | ir.Scatter | adds
    written = {i.tensor.name for i in walk(fn) if isinstance(i, writes)}

    def nbytes(name: str) -> int:
        return -(-math.prod(shapes[name]) * dtypes[name].bits // 8)

    return sum(nbytes(n) for n in read) + sum(nbytes(n) for n in written)


def _unroll(loop_ops: dict[str, int], thread_counts: tuple[int, int], notes: list[str]) -> int:
    """How many block-IR iterations one pass of the SASS loop holds."""
    mma = sum(n for op, n in loop_ops.items() if sass_text.mma_flops(op) is not None)
    memory = sum(n for op, n in loop_ops.items() if sass_text.global_load_bytes(op))
    for found, expected, what in (
        (mma, thread_counts[0], "tensor-core instructions"),
        (memory, thread_counts[1], "global loads"),
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


def _load_rows(
    loads: tuple[TileLoad, ...],
    shapes: dict[str, tuple[int, ...]],
    warp_instructions: float,
) -> tuple[LoadRow, ...]:
    clipped = []
    for load in loads:
        extent = shapes[load.tensor]
        kept = tuple(min(a, b) for a, b in zip(load.shape, extent, strict=True))
        clipped.append((load, kept))
    per_tensor: dict[str, int] = {}
    for load, kept in clipped:
        per_tensor[load.tensor] = per_tensor.get(load.tensor, 0) + math.prod(kept)
    rows = []
    for load, kept in clipped:
        elements = math.prod(kept)
        nbytes = elements * load.dtype.bits / 8
        total = per_tensor[load.tensor]
        rows.append(
            LoadRow(
                tensor=load.tensor,
                kind=load.kind,
                tile=load.shape,
                dtype=load.dtype.name,
                elements=elements,
                bytes=nbytes,
                clipped=kept != load.shape,
                ahead=load.ahead,
                depth=load.depth,
                in_flight=nbytes * load.depth,
                instructions_per_element=warp_instructions / total if total else math.inf,
                loc=load.loc,
            )
        )
    return tuple(rows)


def _check_per(fn: ir.Function, per: str | None, main: MainLoop) -> None:
    if per is None:
        return
    tensors = [p.name for p in fn.params if not isinstance(p.type, ScalarType)]
    if per not in tensors:
        raise PerfError(
            f"per: {per!r} is not a tensor of {fn.name} (its tensors: {', '.join(tensors)})"
        )
    loaded = sorted({load.tensor for load in main.loads})
    if per not in loaded:
        where = "its main loop" if main.loop is not None else "it"
        raise PerfError(
            f"per: {fn.name} does not load tensor {per!r} in {where} ({main.where}); "
            f"it loads {', '.join(loaded) or 'no tensor'} there"
        )


def perf_report(
    *,
    function: ir.Function,
    thread: t.ThreadFunction,
    cubin: bytes,
    resources: Resources,
    target: str,
    launch: Mapping[str, Any],
    per: str | None = None,
    latency_ns: float | None = None,
    iterations: int | None = None,
) -> PerfReport:
    """The report for `function` (the planned block IR), lowered to `thread` and compiled
    to `cubin` for `target`, at the launch whose sizes and scalars are `launch`.

    `per` names the tensor whose elements the headline counts instructions per (it must
    be loaded in the main loop); `latency_ns` replaces the card's assumed DRAM latency;
    `iterations` is the main loop's trip count per block where its bounds are read from
    tensors at run time (otherwise they are evaluated at the launch).
    Raises `PerfError` (a ValueError) for a launch or `per` that does not fit the kernel,
    a target without hardware facts, or a grid with no block, and
    `sass.SassUnavailableError` when no disassembler is installed.
    """
    hw = _hardware(target)
    if latency_ns is not None and not latency_ns > 0:
        raise PerfError(
            f"latency_ns: expected a positive number of nanoseconds, got {latency_ns!r}"
        )
    sizes, scalars = _check_launch(function, launch)
    main = find_main_loop(function, per)
    _check_per(function, per, main)
    grid = _grid(thread, {**scalars, **sizes})
    blocks = math.prod(grid)
    warps = thread.threads // WARP
    occ = occupancy(hw, thread.threads, resources.registers, _shared(thread, resources))
    if occ.resident == 0:
        raise PerfError(
            f"{function.name}: no block fits on an SM of {hw.card} "
            f"(blocks per SM by registers {occ.by_registers}, shared {occ.by_shared})"
        )
    notes: list[str] = []
    iterations = trip_count(function, main, {**scalars, **sizes}, iterations)
    loop_ops, unroll = _loop_sass(function.name, cubin, thread, main, iterations, notes)
    per_iteration = sum(loop_ops.values()) / unroll
    shapes = tensor_shapes(function, sizes)
    rows = _load_rows(main.loads, shapes, per_iteration * warps)
    in_flight_block = sum(r.in_flight for r in rows)
    waves = blocks / (occ.resident * hw.sms)
    concurrent = blocks / math.ceil(waves)
    latency = latency_ns * 1e-9 if latency_ns is not None else hw.dram_latency_s
    little = concurrent * in_flight_block / latency
    bytes_total = _tensor_bytes(function, shapes)
    sectors = sector_rows(thread.stats)
    dram_bytes = bytes_total + extra_read_bytes(function, shapes, sectors)
    sync, warpgroup = (f * warps * iterations * blocks for f in _mma_flops(loop_ops, unroll))
    flops = sync + warpgroup
    special = sum(n for op, n in loop_ops.items() if op.startswith("MUFU")) / unroll
    shared = sum(n * (sass_text.shared_bytes(op) or 0) for op, n in loop_ops.items()) / unroll
    schedulers = min(hw.sub_partitions, _warps_at_once(hw, occ, blocks, warps))
    context = _Context(
        hw,
        blocks,
        warps,
        iterations,
        per_iteration,
        bytes_total,
        dram_bytes,
        little,
        sync,
        warpgroup,
        special,
        schedulers,
        shared,
    )
    bounds = _bounds(context, latency, concurrent * in_flight_block)
    predicted = max(b.seconds for b in bounds)
    _add_notes(notes, main, hw, occ, blocks, warps, bytes_total, resources)
    per_element = _per_element(rows, per)
    return PerfReport(
        kernel=function.name,
        target=target,
        card=hw.card,
        launch=dict(launch),
        grid=grid,
        blocks=blocks,
        warps=warps,
        occupancy=occ,
        waves=waves,
        loop=main.where,
        iterations=iterations,
        unroll=unroll,
        instructions_per_iteration=per_iteration,
        mix={
            name: {op: n / unroll for op, n in ops.items()}
            for name, ops in sass_text.instruction_mix(loop_ops).items()
        },
        loads=rows,
        per=per,
        instructions_per_element=per_element,
        issue_budget_per_element=_issue_budget(hw, bounds[0].seconds, shapes, per),
        in_flight_block=in_flight_block,
        in_flight_sm=in_flight_block * occ.resident,
        concurrent_blocks=concurrent,
        in_flight=concurrent * in_flight_block,
        latency_s=latency,
        little_bandwidth=little,
        peak_bandwidth=hw.dram_bytes_per_s,
        bytes_total=bytes_total,
        dram_bytes=dram_bytes,
        sectors=sectors,
        mma_flops=flops,
        bounds=bounds,
        predicted_seconds=predicted,
        dram_fraction=bytes_total / hw.dram_bytes_per_s / predicted if predicted else 0.0,
        tensor_fraction=flops / predicted / _tensor_peak(hw, sync, warpgroup) if predicted else 0.0,
        binds=next(b.name for b in bounds if b.seconds == predicted),
        notes=tuple(notes),
    )


def _hardware(target: str) -> Hardware:
    try:
        return hardware(target)
    except ValueError as error:
        raise PerfError(str(error)) from None


def _grid(thread: t.ThreadFunction, scalars: Mapping[str, Any]) -> tuple[int, ...]:
    try:
        grid = eval_grid(thread.grid, scalars)
    except ValueError as error:
        raise PerfError(f"{thread.name}: the grid at this launch: {error}") from None
    if math.prod(grid) <= 0:
        raise PerfError(f"{thread.name}: the grid {grid} has no block at this launch")
    return grid


def _shared(thread: t.ThreadFunction, resources: Resources) -> int:
    """Shared bytes per block: tilelang's dynamic shared memory plus any static."""
    return thread.shared_bytes + resources.shared_bytes


def _loop_sass(
    name: str,
    cubin: bytes,
    thread: t.ThreadFunction,
    main: MainLoop,
    iterations: int,
    notes: list[str],
) -> tuple[dict[str, int], int]:
    """The opcodes of the SASS main loop (of the whole kernel without one) and how many
    block-IR iterations one pass of it holds."""
    try:
        text = sass_text.disassemble(cubin)
    except sass_text.SassUnavailableError as error:
        raise sass_text.SassUnavailableError(
            f"{name}: a performance report counts the kernel's SASS instructions: {error}"
        ) from None
    if main.loop is None:
        return dict(sass_text.opcodes(sass_text.kernel_body(text))), 1
    loop = _sass_of(main, text)
    if loop is None:
        notes.append("the SASS has no loop (ptxas unrolled it fully): the whole kernel counted")
        return dict(sass_text.opcodes(text)), max(iterations, 1)
    ops = dict(sass_text.opcodes(sass_text.shortest_path(loop)))
    skipped = sum(sass_text.opcodes(loop).values()) - sum(ops.values())
    if skipped:
        notes.append(
            f"branches in the main loop skip up to {skipped} of its SASS instructions "
            "(a mask on the last block, a rare path): the report counts the shortest path "
            "through it, as most iterations run"
        )
    return ops, _unroll(ops, thread_loop_counts(thread), notes)


def _sass_of(main: MainLoop, text: str) -> str | None:
    """The SASS loop of the block-IR main loop: of the SASS loops that load global
    memory, the one in the same place in program order when there are as many of them
    as block-IR loops that load (ptxas kept every loop); else the largest loop."""
    loading = [loop for loop in sass_text.loops(text) if sass_text.loads_global(loop)]
    if main.loops_with_loads > 1 and len(loading) == main.loops_with_loads:
        return loading[main.rank]
    return sass_text.main_loop(text)


def _mma_flops(ops: Mapping[str, int], unroll: int) -> tuple[float, float]:
    """Tensor-core flops one warp executes per iteration: (by mma.sync, IMMA counted at
    half weight as the int8 peak is twice the f16 one; by the warpgroup mma)."""
    sync = warpgroup = 0.0
    for opcode, count in ops.items():
        flops = sass_text.mma_flops(opcode)
        if flops is None:
            continue
        if sass_text.is_warpgroup_mma(opcode):
            warpgroup += flops * count
        else:
            sync += flops * count / (2 if opcode.startswith("IMMA") else 1)
    return sync / unroll, warpgroup / unroll


@dataclass(frozen=True)
class _Context:
    """What the bounds are computed from (`little`: bytes/s the bytes in flight sustain)."""

    hw: Hardware
    blocks: int
    warps: int
    iterations: int
    per_iteration: float
    bytes_total: int  # every tensor read and written once
    dram_bytes: float  # and the whole sectors of uncoalesced loads (perf_sectors)
    little: float
    sync_flops: float  # executed by mma.sync (IMMA at half weight)
    warpgroup_flops: float  # executed by the warpgroup mma (at the data sheet's peak)
    special: float  # MUFU warp instructions per iteration
    schedulers: int  # schedulers of the busiest SM that have a warp at once
    shared: float  # bytes through shared memory per warp and iteration


def _bounds(c: _Context, latency: float, in_flight: float) -> tuple[Bound, ...]:
    """The six bounds of the module docstring, the DRAM floor first."""
    hw = c.hw
    floor = c.bytes_total / hw.dram_bytes_per_s  # the useful bytes: what fractions are of
    latency_s = c.dram_bytes / c.little if c.little else 0.0  # nothing loaded: no bound
    sectors = c.dram_bytes - c.bytes_total
    wasted = f" + {_mb(sectors)} whole sectors of uncoalesced loads" if sectors else ""
    busiest = -(-c.blocks // hw.sms)
    warp_iterations = busiest * c.warps * c.iterations  # on the busiest SM
    share = c.schedulers / hw.sub_partitions  # of the SM's schedulers and their units
    issue_s = warp_iterations * c.per_iteration / (hw.issue_per_s * share)
    special_s = warp_iterations * c.special * WARP / (hw.special_per_s * share)
    few = f", {c.schedulers} of {hw.sub_partitions} schedulers with a warp" if share < 1 else ""
    shared_s = warp_iterations * c.shared / (hw.shared_bytes_per_cycle * hw.clock_hz)
    tensor_s = c.sync_flops / hw.mma_flops + c.warpgroup_flops / hw.tensor_flops

    def bound(name: str, seconds: float, detail: str) -> Bound:
        fraction = min(1.0, floor / seconds) if seconds else 1.0
        return Bound(name, seconds, fraction, detail)

    return (
        bound(
            "DRAM floor",
            c.dram_bytes / hw.dram_bytes_per_s,
            f"{_mb(c.bytes_total)}{wasted} / {_tbs(hw.dram_bytes_per_s)}",
        ),
        bound(
            "memory latency",
            latency_s,
            f"{_mb(in_flight)} in flight / {latency * 1e9:.0f} ns = {_tbs(c.little)}",
        ),
        bound(
            "instruction issue",
            issue_s,
            f"{busiest} block(s) x {c.warps} warps x {c.iterations} it x "
            f"{c.per_iteration:.4g} instr / ({hw.issue_per_cycle * share:g} x "
            f"{hw.clock_hz / 1e6:.0f} MHz){few}",
        ),
        bound(
            "special functions",
            special_s,
            f"{busiest} block(s) x {c.warps} warps x {c.iterations} it x {c.special:.4g} MUFU "
            f"x {WARP} / ({hw.sfu_per_cycle * share:g} x {hw.clock_hz / 1e6:.0f} MHz){few}"
            if c.special
            else "no MUFU in the loop",
        ),
        bound(
            "shared memory",
            shared_s,
            f"{busiest} block(s) x {c.warps} warps x {c.iterations} it x {c.shared / 1e3:.4g} KB / "
            f"({hw.shared_bytes_per_cycle} B x {hw.clock_hz / 1e6:.0f} MHz)"
            if c.shared
            else "no shared-memory access in the loop",
        ),
        bound(
            "tensor cores",
            tensor_s,
            _tensor_detail(c.sync_flops, c.warpgroup_flops, hw),
        ),
    )


def _tensor_detail(sync: float, warpgroup: float, hw: Hardware) -> str:
    if not sync + warpgroup:
        return "no HMMA/IMMA/HGMMA in the loop"
    parts = []
    if sync:
        peak = hw.mma_flops / 1e12
        parts.append(f"{sync / 1e9:.4g} GFLOP / {peak:.4g} TFLOPS (mma.sync)")
    if warpgroup:
        peak = hw.tensor_flops / 1e12
        parts.append(f"{warpgroup / 1e9:.4g} GFLOP / {peak:.4g} TFLOPS (wgmma)")
    return " + ".join(parts) + " executed (tile padding included)"


def _tensor_peak(hw: Hardware, sync: float, warpgroup: float) -> float:
    """The peak a kernel's tensor fraction is of: the data sheet's where the warpgroup
    mma does most of the work, else mma.sync's."""
    return hw.tensor_flops if warpgroup > sync else hw.mma_flops


def _per_element(rows: tuple[LoadRow, ...], per: str | None) -> float | None:
    if per is None:
        return None
    return next(r.instructions_per_element for r in rows if r.tensor == per)


def _issue_budget(
    hw: Hardware, floor: float, shapes: dict[str, tuple[int, ...]], per: str | None
) -> float | None:
    """Warp instructions per element of `per` the whole GPU can issue while the launch
    runs at the DRAM floor: what the main loop may spend for issue not to bind."""
    if per is None or not math.prod(shapes[per]):
        return None
    return hw.issue_per_s * hw.sms * floor / math.prod(shapes[per])


def _add_notes(
    notes: list[str],
    main: MainLoop,
    hw: Hardware,
    occ: Occupancy,
    blocks: int,
    warps: int,
    bytes_total: int,
    resources: Resources,
) -> None:
    if main.loop is None:
        notes.append("no loop loads global memory: the whole kernel is one iteration")
    if main.loops_with_loads > 1:
        notes.append(
            f"{main.loops_with_loads} loops load global memory; the report models the one "
            f"at {main.where}, which loads the most per iteration"
        )
    if main.enclosing:
        notes.append(f"the main loop is nested in {len(main.enclosing)} loop(s)")
    for load in main.loads:
        if load.unpipelined:
            notes.append(f"{load.tensor} ({load.loc}) is not pipelined: {load.unpipelined}")
    per_scheduler = _warps_at_once(hw, occ, blocks, warps) / hw.sub_partitions
    if per_scheduler < 2:
        notes.append(
            f"{per_scheduler:.3g} warps per scheduler on the busiest SM: one warp cannot "
            "issue every cycle (dependent instructions wait), so the issue bound is optimistic"
        )
    if bytes_total <= hw.l2_bytes:
        notes.append(
            f"the tensors ({_mb(bytes_total)}) fit in the {_mb(hw.l2_bytes)} L2: repeated "
            "launches on the same data may run from L2, faster than this DRAM model"
        )
    if resources.local_bytes or resources.spills:
        notes.append(f"local memory: {resources.local_bytes} B stack, spills {resources.spills} B")


def _warps_at_once(hw: Hardware, occ: Occupancy, blocks: int, warps: int) -> int:
    """Warps on the busiest SM at once: its resident blocks, or all it runs if fewer."""
    return min(occ.resident, -(-blocks // hw.sms)) * warps


def _mb(nbytes: float) -> str:
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.4g} MB"
    if nbytes >= 1e3:
        return f"{nbytes / 1e3:.4g} KB"
    return f"{nbytes:.4g} B"


def _tbs(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e12:.3g} TB/s"
