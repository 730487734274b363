"""The static performance report: what a compiled kernel should reach on a GPU, predicted
from its SASS, its resources and its block IR, with no GPU at hand.

This module owns the model and the report (`perf_report`, `PerfReport`, `occupancy`);
`tilelang.runtime.perf_loop` reads the loops out of the IR, `perf_trips` counts their
iterations (`perf_guards`: in the blocks that take their `if`s), `perf_match` finds
their SASS loops, `perf_parts` gathers each loop's work, `tilelang.runtime.sass` the
instruction mix, `perf_bounds` computes the bounds, `perf_traffic`, `perf_sectors`,
`perf_shared` and `perf_atomics` the DRAM bytes, uncoalesced accesses, bank conflicts
and atomics, and `tilelang.target.HARDWARE` holds the card.
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
2. **Loops** — the *main loop* is the innermost block-IR loop under no `if` that loads
   the most global bytes per iteration (the first of equals); the report's tiles, bytes
   in flight, instruction mix and per-element counts are its. Where every loop that
   loads is under an `if` and the kernel loads tiles outside them, there is none: the
   code outside the loops, once per block, heads the report. A kernel with several
   loops that load is modelled as the sum of them (`perf_loop.MainLoop.modelled`; one
   whose bounds are read at run time, other than the main loop, is left out): each
   block runs each loop's iterations (its trip count at the launch times those of the
   loops around it, 0 in a block that does not take the `if`s around it, `perf_trips`
   and `perf_guards`: an inner loop runs whole in every iteration of an outer one,
   whose own work is its body without the loops inside it); the mean over the grid and
   the most of one block are kept. Each loop's SASS is found by `perf_match` (the cubin
   has no line information: by program order, global loads, mma, MUFU and body size
   against its thread-IR loop; where two SASS loops fit, the costlier, and where that
   fails, the main loop alone, and a note says which SASS loop was used); its shortest
   path (`sass.shortest_path`: every forward branch that skips
   instructions taken, as for a mask only the last block runs; a note says how many
   it skips). One iteration of a block-IR loop is that many warp instructions divided
   by how many times ptxas unrolled it (the SASS's HMMA/IMMA count over the thread
   IR's `Mma`s, or else its global accesses over the thread IR's). Each warp issues
   every one of them (predicated-off lanes or not). Instructions per element of a
   tensor T = (the main loop's warp instructions per iteration * W) / (elements of T
   the block loads per iteration). Tiles are clipped to the tensor's extent (with
   M = 1, one row of a 16-row tile moves; masked elements move nothing).
3. **Bytes in flight** — per block: for each global tile a loop loads, its bytes per
   iteration times its pipeline depth (`perf_loop`: 1 for a `load` consumed in its
   iteration, S - 1 for a copy or load the pipeline pass issues ahead in a `stages=S`
   loop); per SM: times r. For the launch, the blocks running at once are
   B / ceil(waves) (a grid of fewer blocks than fit runs them all; a last partial wave
   lowers the average).
4. **Bounds** (`perf_bounds`), each the least time the launch can take by one resource:
   - DRAM floor: bytes of every tensor the kernel reads plus every tensor it writes,
     each once (a tensor only the modelled loops' tiles, or tiles outside loops, read:
     at most blocks x its tiles' bytes x their mean trip counts, `perf_traffic.read_caps`;
     each tensor's bytes are listed with the global tiles), plus the sectors uncoalesced loads waste (below), plus what a later
     loop reads again of a tensor an earlier loop read where the L2 cannot hold it
     between the two reads (`perf_traffic`), over the card's peak DRAM bandwidth;
   - memory latency (Little's law): each loop's DRAM bytes (a loop other than the main
     one: the tensors it reads first and its re-reads; the main loop: the rest) over
     (its bytes in flight at once / DRAM latency), the bandwidth that many outstanding
     bytes sustain, times max(1, the slowest block's iterations / (the mean *
     ceil(waves))), added up;
   - instruction issue: the busiest SM runs ceil(B / SMs) blocks, issuing
     W * Σ over loops (max(ceil(B / SMs) * mean iterations, the slowest block's
     iterations) * warp instructions per iteration: a wave takes as long as its
     slowest block, and a loop only some blocks run costs the SM that runs one its
     whole trip count), at 4 warp
     instructions per cycle (one per scheduler) at the card's clock — or fewer when
     fewer warps are on the SM at once (min(r, ceil(B / SMs)) * W < 4): a warp issues
     from its own scheduler only;
   - special functions: the busiest SM's MUFU instructions (ex2, lg2, rcp, ...) times
     32 results each, over the SM's special-function rate (16 a cycle on sm_80 to
     sm_90, 4 per scheduler: a warp's MUFU holds its scheduler's unit for 8 cycles,
     whatever else issues meanwhile), of the schedulers that have a warp;
   - shared memory: the bytes the busiest SM's loops move through shared memory
     (`sass.shared_bytes`: LDS/STS by width, ldmatrix by its matrices, what cp.async
     writes, the B a warpgroup mma reads, a quarter for each of its warps; whole
     128-byte wavefronts) plus 128 bytes for each wavefront a bank conflict adds
     (`perf_shared`, from the IR's layouts), over the SM's 128 bytes a cycle;
   - tensor cores: the flops of the HMMA instructions executed (the tiles' padding
     included) over the peak of `mma.sync`: the data sheet's, except on H100, whose
     data-sheet peak needs `wgmma` (`tilelang.target.Hardware.mma_flops`); plus those
     of HGMMA (sm_90a's `wgmma`) over the data sheet's peak; plus the integer ops of
     IMMA over the card's i8 peak (`perf_bounds.I8_OPS`, at mma.sync's share); each
     loop at max(B * mean, min(B, SMs) * the slowest block's iterations); never less
     than the block IR's dots at their trip counts over the data sheet's peaks
     (`perf_trips.dot_ops`), a floor whatever SASS was matched;
   - atomics on one address: a tensor of E elements receiving U element updates from
     global atomics (`perf_atomics`) has an address that receives U / E of them, which
     the L2 applies one a clock (an assumption: the Kepler GK110 whitepaper's figure).
   The prediction is the largest of them (they are assumed to overlap perfectly):
   predicted fraction of DRAM bandwidth = (useful bytes, each tensor once) / peak
   bandwidth / predicted, and of tensor-core peak =
   executed flops / predicted time / the peak of the instruction doing most of them
   (`wgmma`'s or `mma.sync`'s, which the report names; integer ops over the i8 peak
   where IMMA does most of the work).
   The bound that equals the prediction binds.
   The issue budget per element of T = 4 * clock * SMs * floor / (elements of T): the
   warp instructions per element the GPU can issue while the launch runs at the floor.

5. **Coalescing** (`tilelang.runtime.perf_sectors`, counted by the lowering,
   `tilelang.lowering.coalescing`): a global access whose warp requests touch s 32-byte
   sectors where the bytes they move fit in m is listed with its source line. DRAM
   moves whole sectors: a tensor read by such a load is charged s/m' times its bytes,
   m' the fewest sectors the box's own footprint allows (its worst load; as if no
   later request found the rest of a sector in L1 or L2, an upper bound); a box whose
   rows are shorter than a sector wastes sectors whatever its layout, which is listed
   and not charged. A store's or an atomic's partial sectors are merged in L2 when the
   block writes the whole sector, so they cost L2 bandwidth only, which the model has
   no bound for: they are listed and do not change the prediction.

Not modelled: the code outside the loops (a kernel with a main loop), that the blocks
taking a `tl.arrive` count's `if` start only after the others of their group arrived
(their loop is overlapped with the others' work: optimistic), L2 hits
other than a later loop's re-reads (a tile many blocks read, such as the activations
of a matmul, is counted at DRAM latency), L2 and load-store-unit bandwidth (the
sectors of uncoalesced stores), dependency stalls within a warp (with one or two warps
per scheduler, `LOW_OCCUPANCY`, the issue bound is optimistic and a note says so),
launch overhead, clocks below the data sheet's. The DRAM latency is an assumption
(`tilelang.target.Hardware.dram_latency_s`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.ir import nodes as ir
from tilelang.ir import thread as t
from tilelang.runtime import sass as sass_text
from tilelang.runtime.cubin import Resources
from tilelang.runtime.host_expr import eval_grid
from tilelang.runtime.perf_atomics import atomic_counts
from tilelang.runtime.perf_bounds import Bound, Context, tensor_fraction, tensor_peak_name
from tilelang.runtime.perf_bounds import bounds as compute_bounds
from tilelang.runtime.perf_bounds import mb as _mb
from tilelang.runtime.perf_launch import check_launch, check_per
from tilelang.runtime.perf_loop import MainLoop, PerfError, find_main_loop, tensor_shapes
from tilelang.runtime.perf_parts import LoadRow, LoopRow, Part, parts, phases
from tilelang.runtime.perf_sectors import SectorRow, boxes, extra_read_bytes, sector_rows
from tilelang.runtime.perf_shared import Conflict
from tilelang.runtime.perf_text import format_report
from tilelang.runtime.perf_traffic import (
    LoopTraffic,
    Reread,
    nbytes,
    partial_reads,
    read_caps,
    rereads,
    tensor_traffic,
)
from tilelang.runtime.perf_trips import dot_ops, main_trips
from tilelang.target import Hardware, hardware

__all__ = [
    "Bound",
    "LoadRow",
    "LoopRow",
    "Occupancy",
    "PerfError",
    "PerfReport",
    "occupancy",
    "perf_report",
]

WARP = 32
#: Warps per scheduler at or below which the issue bound is noted as optimistic: a
#: dependent ALU instruction issues about 4 cycles after its producer (sm_70 to sm_90),
#: so a scheduler with w warps issues every cycle only if each has 4 / w independent
#: instructions in a row: 2 with two warps, 4 with one; from three warps on, the
#: 1.33 a loop body almost always has.
LOW_OCCUPANCY = 2


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
    iterations: float
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
    sector_bytes: float
    rereads: tuple[Reread, ...]
    conflicts: tuple[Conflict, ...]
    loops: tuple[LoopRow, ...]
    mma_flops: float
    bounds: tuple[Bound, ...]
    predicted_seconds: float
    dram_fraction: float
    tensor_fraction: float
    binds: str
    notes: tuple[str, ...]
    tensor_peak: str = "mma.sync peak"  # what `tensor_fraction` is of, in words
    #: each tensor read or written: how, and its bytes in the DRAM floor (`perf_traffic`)
    tensors: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    mma_int_ops: float = 0.0  # integer ops of the IMMA executed (`mma_flops`: floats')

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["occupancy"]["resident"] = self.occupancy.resident
        data["occupancy"]["limiters"] = list(self.occupancy.limiters)
        return data

    def __str__(self) -> str:
        return format_report(self)


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
    sizes, scalars = check_launch(function, launch)
    main = find_main_loop(function, per)
    check_per(function, per, main)
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
    values = {**scalars, **sizes}
    first_trips = main_trips(function, main, values, iterations, notes)
    shapes = tensor_shapes(function, sizes)
    found = parts(function, thread, cubin, main, values, first_trips, shapes, notes)
    first = found[0]  # the main loop (or the code outside the loops)
    rows = first.rows
    in_flight_block = sum(r.in_flight for r in rows)
    waves = blocks / (occ.resident * hw.sms)
    concurrent = blocks / math.ceil(waves)
    latency = latency_ns * 1e-9 if latency_ns is not None else hw.dram_latency_s
    loops = {id(main.loops[x.index].loop): (x.iterations, x.tiles()) for x in found if x.index >= 0}
    caps = read_caps(function, shapes, blocks, loops)
    notes.extend(partial_reads(function, shapes, caps))
    by_tensor = tensor_traffic(function, shapes, caps)
    bytes_total = sum(b for _, b in by_tensor.values())
    sectors = sector_rows(thread.stats, boxes(function))
    sector_bytes = extra_read_bytes(function, shapes, sectors)
    ordered = sorted(found, key=lambda x: x.index)
    roots = [main.loops[x.nest].where if x.nest >= 0 else x.where for x in ordered]
    traffic = [
        LoopTraffic(x.where, x.iterations, x.tiles(), r)
        for x, r in zip(ordered, roots, strict=True)
    ]
    tensors = {n: nbytes(function, shapes, n) for n in shapes}
    again = rereads(traffic, tensors, blocks, concurrent, hw.l2_bytes)
    reread_bytes = sum(r.charged for r in again)
    dram_bytes = bytes_total + sector_bytes + reread_bytes
    memory = phases(found, again, tensors, dram_bytes, concurrent, latency, math.ceil(waves))
    schedulers = min(hw.sub_partitions, _warps_at_once(hw, occ, blocks, warps))
    dots = dot_ops(function, values, main, iterations)
    context = Context(
        hw=hw,
        blocks=blocks,
        warps=warps,
        work=tuple(x.work() for x in found),
        bytes_total=bytes_total,
        dram_bytes=dram_bytes,
        sector_bytes=sector_bytes,
        reread_bytes=reread_bytes,
        phases=memory,
        latency=latency,
        schedulers=schedulers,
        dot_flops=dots[0] * blocks,
        dot_int_ops=dots[1] * blocks,
        atomics=atomic_counts(function, shapes, values, blocks),
    )
    bounds = compute_bounds(context)
    predicted = max(b.seconds for b in bounds)
    executed = context.executed()
    _add_notes(notes, main, found, hw, occ, blocks, warps, bytes_total, resources)
    unroll = first.code.unroll
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
        iterations=first_trips.value,
        unroll=unroll,
        instructions_per_iteration=first.work().instructions,
        mix={
            name: {op: n / unroll for op, n in ops.items()}
            for name, ops in sass_text.instruction_mix(first.code.ops, first.dequantizes).items()
        },
        loads=rows,
        per=per,
        instructions_per_element=_per_element(rows, per),
        issue_budget_per_element=_issue_budget(hw, bounds[0].seconds, shapes, per),
        in_flight_block=in_flight_block,
        in_flight_sm=in_flight_block * occ.resident,
        concurrent_blocks=concurrent,
        in_flight=concurrent * in_flight_block,
        latency_s=latency,
        little_bandwidth=memory[0].little,
        peak_bandwidth=hw.dram_bytes_per_s,
        bytes_total=bytes_total,
        dram_bytes=dram_bytes,
        sectors=sectors,
        sector_bytes=sector_bytes,
        rereads=again,
        conflicts=tuple(c for x in ordered for c in x.conflicts),
        loops=tuple(x.row(p.dram_bytes) for x, p in zip(found, memory, strict=True)),
        mma_flops=executed[0] + executed[1],
        bounds=bounds,
        predicted_seconds=predicted,
        dram_fraction=bytes_total / hw.dram_bytes_per_s / predicted if predicted else 0.0,
        tensor_fraction=tensor_fraction(hw, executed, predicted),
        binds=next(b.name for b in bounds if b.seconds == predicted),
        notes=tuple(dict.fromkeys(notes)),  # a nest's loops share their ifs' notes
        tensor_peak=tensor_peak_name(hw, *executed),
        tensors=by_tensor,
        mma_int_ops=executed[2],
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
    parts: list[Part],
    hw: Hardware,
    occ: Occupancy,
    blocks: int,
    warps: int,
    bytes_total: int,
    resources: Resources,
) -> None:
    if not main.loops:
        notes.append("no loop loads global memory: the whole kernel is one iteration")
    elif main.loop is None:
        notes.append(
            "every loop that loads global memory runs under an if: the tiles, bytes in "
            "flight, instruction mix and per-element counts are those of the code outside "
            "the loops, once per block; the loops add to it in the blocks that take their ifs"
        )
    if len(parts) > 1 and main.loop is not None:
        wheres = ", ".join(x.where for x in sorted(parts, key=lambda x: x.index))
        notes.append(
            f"{main.loops_with_loads} loops load global memory; the report adds up the "
            f"{len(parts)} at {wheres}; the tiles, bytes in flight, instruction mix and "
            f"per-element counts are those of the main loop at {main.where}, which loads "
            "the most per iteration"
        )
    elif main.loops_with_loads > 1:
        notes.append(
            f"{main.loops_with_loads} loops load global memory; the report models the one "
            f"at {main.where}, which loads the most per iteration"
        )
    if main.enclosing:
        notes.append(f"the main loop is nested in {len(main.enclosing)} loop(s)")
    busiest = -(-blocks // hw.sms)
    for x in parts:
        work = x.work()
        if work.most > busiest * work.iterations:
            notes.append(
                f"the loop at {x.where}: its slowest block runs {work.most:.6g} iterations, "
                f"more than the busiest SM's {busiest} block(s) at the mean "
                f"({busiest * work.iterations:.4g}): the issue, special-function, "
                "shared-memory and tensor-core bounds count the slowest block (the SM that "
                "runs it runs all of its work; a wave takes as long as its slowest block)"
            )
    for load in main.loads:
        if load.unpipelined:
            notes.append(f"{load.tensor} ({load.loc}) is not pipelined: {load.unpipelined}")
    per_scheduler = _warps_at_once(hw, occ, blocks, warps) / hw.sub_partitions
    if per_scheduler <= LOW_OCCUPANCY:
        notes.append(
            f"{per_scheduler:.3g} warps per scheduler on the busiest SM: a dependent "
            "instruction issues some 4 cycles after the one it waits on, so each warp needs "
            "2 to 4 independent instructions in a row to issue every cycle: the issue "
            "bound is optimistic"
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
