"""The bounds of the static performance report: the least time a launch can take by
each resource (`tilelang.runtime.perf`'s module docstring, step 4, has the model).

This module owns the arithmetic of the seven bounds and the text that shows it
(`Bound.detail`), from what `perf_report` gathered (`Context`): the launch's DRAM
bytes, the bytes in flight of each modelled loop, its global atomics, and per loop its
iterations (the mean over the grid and the most of one block) and per iteration its
warp instructions, MUFU, shared-memory bytes and tensor-core work. A kernel of several
loops costs their sum (each loop runs its iterations, one after the other, in every
block that runs it).

**The busiest SM** runs ceil(B / SMs) blocks; a loop costs it that many blocks at the
loop's mean trip count, or its slowest block's trip count where that is more
(`on_busiest`): where the blocks run as one wave (a persistent kernel, grid = SMs) the
wave takes as long as its slowest block, and a loop only a few blocks run (under an
`if`) costs the SM that runs it all of its iterations; where many waves overlap, the
blocks' work spreads over the SMs and the mean holds. The tensor cores likewise: the
launch's mean work, or the slowest block's on each SM that runs a block where more
(min(B, SMs) x its work: a grid of uniform trip counts keeps the launch's work over
the whole card's peak). The memory-latency
bound of a loop is stretched by its slowest block's trip count over the mean times the
rounds of resident blocks (`stretch`).

**Tensor cores** count floating-point mma in flops against the f16 peak (`mma.sync`'s
or `wgmma`'s) and integer mma (IMMA) in integer ops against the card's 8-bit integer
peak (`I8_OPS`, the data sheet's; `mma.sync` reaching the same share of it as of the f16
peak). The bound is never below the floor of the dots the block IR asks for
(`perf_trips.dot_ops`, the whole launch's, at the data sheet's peaks): SASS matched to
the wrong loop cannot take the kernel's mma away.

**Atomics on one address**: the L2 applies the atomics to one address one after another
(NVIDIA's Nsight documentation: a warp's lanes on one address are serialized); the
Kepler GK110 whitepaper gives one atomic a clock on a common address, the only
published per-address figure, assumed here for later cards at the SM clock. A tensor
that receives U element updates (`perf_atomics`) over its E elements has an address
that receives at least U / E of them: U / E clocks at least."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tilelang.runtime import sass as sass_text
from tilelang.runtime.perf_atomics import AtomicCount
from tilelang.target import Hardware

__all__ = [
    "I8_OPS",
    "Bound",
    "Context",
    "Phase",
    "Work",
    "bounds",
    "i8_mma_peak",
    "i8_peak",
    "mb",
    "mma_flops",
    "tensor_fraction",
    "tensor_peak_name",
]

WARP = 32


@dataclass(frozen=True)
class Bound:
    """The least time the launch can take by one resource, and the fraction of DRAM
    bandwidth that leaves (floor / seconds, at most 1); `detail` shows the arithmetic."""

    name: str
    seconds: float
    fraction: float
    detail: str


@dataclass(frozen=True)
class Work:
    """One modelled loop's work per warp: iterations per block (the mean over the grid,
    and the most of one block: `peak`), and per iteration its warp instructions, MUFU
    instructions, bytes through shared memory and tensor-core work (`mma`: flops by
    mma.sync, by the warpgroup mma, integer ops by IMMA)."""

    iterations: float  # the mean over the grid
    instructions: float
    special: float
    shared: float
    peak: float = -1.0  # the slowest block's iterations; -1: the mean
    mma: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def most(self) -> float:
        """The slowest block's iterations."""
        return self.iterations if self.peak < 0 else max(self.peak, self.iterations)

    def on_busiest(self, busiest: int) -> float:
        """Block-iterations the busiest SM runs of this loop (module docstring)."""
        return max(busiest * self.iterations, self.most)

    def stretch(self, rounds: int) -> float:
        """How much longer than the mean the slowest block keeps the loop's memory
        latency: its iterations over the mean's `rounds` (rounds of resident blocks)."""
        if not self.iterations:
            return 1.0
        return max(1.0, self.most / (self.iterations * rounds))


@dataclass(frozen=True)
class Phase:
    """One modelled loop's DRAM bytes, at the bandwidth its bytes in flight sustain
    (`little`, bytes/s: in flight / latency); `in_flight`: the launch's bytes in flight."""

    where: str
    dram_bytes: float
    in_flight: float
    little: float
    stretch: float = 1.0  # the slowest block's share (`Work.stretch`)


@dataclass(frozen=True)
class Context:
    """What the bounds are computed from."""

    hw: Hardware
    blocks: int
    warps: int
    work: tuple[Work, ...]  # the modelled loops, the main loop's first
    bytes_total: int  # every tensor read and written once
    dram_bytes: float  # and the sectors uncoalesced loads waste and the re-reads
    sector_bytes: float  # of which: whole sectors of uncoalesced loads (perf_sectors)
    reread_bytes: float  # of which: later loops' re-reads L2 does not hold (perf_traffic)
    phases: tuple[Phase, ...]  # the DRAM bytes by loop, the main loop's first
    latency: float  # seconds
    schedulers: int  # schedulers of the busiest SM that have a warp at once
    dot_flops: float = 0.0  # the block IR's float dots at their trip counts, every block
    dot_int_ops: float = 0.0  # and its integer dots' ops
    atomics: tuple[AtomicCount, ...] = ()  # global atomics by tensor (perf_atomics)

    def executed(self) -> tuple[float, float, float]:
        """The launch's tensor-core work: (mma.sync flops, warpgroup flops, IMMA ops),
        every block at its loops' mean trip counts."""
        return tuple(  # type: ignore[return-value]
            sum(w.iterations * w.mma[k] for w in self.work) * self.warps * self.blocks
            for k in range(3)
        )


#: Dense 8-bit integer tensor-core peaks (ops/s) of the cards `tilelang.target` names,
#: from their data sheets and whitepapers: A100 SXM4 624 TOPS (A100 data sheet), RTX 3090
#: 284 (GA102 whitepaper), RTX 4090 660.6 (Ada whitepaper), H100 SXM5 1979 (H100 data
#: sheet; with wgmma). The GeForce cards run i8 at 4x their f32-accumulate f16 rate,
#: the others at 2x: no one ratio to the f16 peak fits.
I8_OPS = {
    "A100 SXM4 80GB": 624e12,
    "GeForce RTX 3090": 284e12,
    "GeForce RTX 4090": 660.6e12,
    "H100 SXM5 80GB": 1979e12,
}


def i8_peak(hw: Hardware) -> float:
    """The card's 8-bit integer tensor-core peak (`I8_OPS`; twice the f16 peak for a
    card it does not list)."""
    return I8_OPS.get(hw.card, 2 * hw.tensor_flops)


def i8_mma_peak(hw: Hardware) -> float:
    """What `mma.sync` reaches of it: the share it reaches of the f16 peak (on H100 the
    FlashAttention-3 paper's 2/3, measured on f16 and assumed for i8)."""
    return i8_peak(hw) * hw.mma_flops / hw.tensor_flops


def mma_flops(ops: Mapping[str, int], unroll: int) -> tuple[float, float, float]:
    """Tensor-core work one warp executes per iteration: (flops by mma.sync, flops by
    the warpgroup mma, integer ops by IMMA)."""
    sync = warpgroup = integer = 0.0
    for opcode, count in ops.items():
        flops = sass_text.mma_flops(opcode)
        if flops is None:
            continue
        if sass_text.is_warpgroup_mma(opcode):
            warpgroup += flops * count
        elif opcode.startswith("IMMA"):
            integer += flops * count
        else:
            sync += flops * count
    return sync / unroll, warpgroup / unroll, integer / unroll


def _sum(work: tuple[Work, ...], field: str, busiest: int) -> tuple[float, str]:
    """Σ iterations x `field` over the loops, the iterations a block's share of the
    busiest SM's (`Work.on_busiest`), and the text: "64 it x 268" for one loop,
    "(64 it x 268 + 64 it x 30)" for several."""
    iterations = [w.on_busiest(busiest) / busiest for w in work]
    total = sum(n * getattr(w, field) for n, w in zip(iterations, work, strict=True))
    unit = 1e3 if field == "shared" else 1
    terms = [
        f"{n:.6g} it x {getattr(w, field) / unit:.4g}"
        for n, w in zip(iterations, work, strict=True)
    ]
    return total, terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


def bounds(c: Context) -> tuple[Bound, ...]:
    """The seven bounds of the model, the DRAM floor first."""
    hw = c.hw
    floor = c.bytes_total / hw.dram_bytes_per_s  # the useful bytes: what fractions are of
    main = c.phases[0]
    # Each loop's bytes at the bandwidth its own bytes in flight sustain; nothing
    # loaded: no bound.
    latency_s = sum(p.dram_bytes / p.little * p.stretch for p in c.phases if p.little)
    wasted = f" + {mb(c.sector_bytes)} whole sectors of uncoalesced loads" if c.sector_bytes else ""
    if c.reread_bytes:
        wasted += f" + {mb(c.reread_bytes)} re-read by later loops"
    busiest = -(-c.blocks // hw.sms)
    share = c.schedulers / hw.sub_partitions  # of the SM's schedulers and their units
    instructions, issue_terms = _sum(c.work, "instructions", busiest)
    special, special_terms = _sum(c.work, "special", busiest)
    shared, shared_terms = _sum(c.work, "shared", busiest)
    warps = busiest * c.warps  # on the busiest SM
    issue_s = warps * instructions / (hw.issue_per_s * share)
    special_s = warps * special * WARP / (hw.special_per_s * share)
    few = f", {c.schedulers} of {hw.sub_partitions} schedulers with a warp" if share < 1 else ""
    shared_s = warps * shared / (hw.shared_bytes_per_cycle * hw.clock_hz)
    tensor_s, tensor_detail = _tensor(c)
    head = f"{busiest} block(s) x {c.warps} warps x"
    mhz = f"{hw.clock_hz / 1e6:.0f} MHz"
    latency_detail = (
        f"{mb(main.in_flight)} in flight / {c.latency * 1e9:.0f} ns = {_tbs(main.little)}"
    )
    for p in c.phases[1:]:
        latency_detail += f"; loop at {p.where}: {mb(p.dram_bytes)} at {_tbs(p.little)}"
    stretched = [p for p in c.phases if p.stretch > 1 and p.dram_bytes]
    if stretched:
        latency_detail += "; " + ", ".join(
            f"x{p.stretch:.3g} for the slowest block at {p.where}" for p in stretched
        )
    atomic_s, atomic_detail = _atomics(c)

    def bound(name: str, seconds: float, detail: str) -> Bound:
        fraction = min(1.0, floor / seconds) if seconds else 1.0
        return Bound(name, seconds, fraction, detail)

    return (
        bound(
            "DRAM floor",
            c.dram_bytes / hw.dram_bytes_per_s,
            f"{mb(c.bytes_total)}{wasted} / {_tbs(hw.dram_bytes_per_s)}",
        ),
        bound("memory latency", latency_s, latency_detail),
        bound(
            "instruction issue",
            issue_s,
            f"{head} {issue_terms} instr / ({hw.issue_per_cycle * share:g} x {mhz}){few}",
        ),
        bound(
            "special functions",
            special_s,
            f"{head} {special_terms} MUFU x {WARP} / ({hw.sfu_per_cycle * share:g} x {mhz}){few}"
            if special
            else "no MUFU in the loop",
        ),
        bound(
            "shared memory",
            shared_s,
            f"{head} {shared_terms} KB / ({hw.shared_bytes_per_cycle} B x {mhz})"
            if shared
            else "no shared-memory access in the loop",
        ),
        bound("tensor cores", tensor_s, tensor_detail),
        bound("atomics on one address", atomic_s, atomic_detail),
    )


def _peaks(hw: Hardware) -> tuple[float, float, float]:
    """The peaks of mma.sync (flops), the warpgroup mma (flops) and IMMA (ops)."""
    return hw.mma_flops, hw.tensor_flops, i8_mma_peak(hw)


def _tensor(c: Context) -> tuple[float, str]:
    """The tensor-core bound and its text (module docstring)."""
    hw = c.hw
    peaks = _peaks(hw)
    executed = c.executed()
    mean_s = sum(w / p for w, p in zip(executed, peaks, strict=True))
    # the launch's mean work, or each SM's share of the slowest block's (module docstring)
    on_gpu = [max(c.blocks * w.iterations, min(c.blocks, hw.sms) * w.most) for w in c.work]
    executed_s = c.warps * sum(
        n * w.mma[k] / peaks[k] for n, w in zip(on_gpu, c.work, strict=True) for k in range(3)
    )
    detail = _tensor_detail(*executed, hw)
    if executed_s > mean_s * (1 + 1e-9):
        detail += f", x{executed_s / mean_s:.3g} for the slowest blocks"
    floor_s = c.dot_flops / hw.tensor_flops + c.dot_int_ops / i8_peak(hw)
    if floor_s <= executed_s:
        return executed_s, detail
    dots = [f"{c.dot_flops / 1e9:.4g} GFLOP / {hw.tensor_flops / 1e12:.4g} TFLOPS"] * bool(
        c.dot_flops
    )
    if c.dot_int_ops:
        dots.append(f"{c.dot_int_ops / 1e9:.4g} GOP / {i8_peak(hw) / 1e12:.4g} TOPS i8")
    return floor_s, f"{' + '.join(dots)} of the block IR's dots (floor; the SASS counted: {detail})"


def _atomics(c: Context) -> tuple[float, str]:
    """The bound of the busiest address of a tensor that receives atomics, and its
    text (module docstring)."""
    if not c.atomics:
        return 0.0, "no global atomic outside an if"
    worst = max(c.atomics, key=lambda a: a.per_address)
    masked = "; masked lanes counted" if worst.masked else ""
    detail = (
        f"{worst.updates:.4g} updates to {worst.tensor}'s {worst.elements} elements: "
        f"{worst.per_address:.4g} an address at 1 a clock ({c.hw.clock_hz / 1e6:.0f} MHz, "
        f"assumed){masked}"
    )
    return worst.per_address / c.hw.clock_hz, detail


def _tensor_detail(sync: float, warpgroup: float, integer: float, hw: Hardware) -> str:
    if not sync + warpgroup + integer:
        return "no HMMA/IMMA/HGMMA in the loop"
    parts = []
    if sync:
        peak = hw.mma_flops / 1e12
        parts.append(f"{sync / 1e9:.4g} GFLOP / {peak:.4g} TFLOPS (mma.sync)")
    if warpgroup:
        peak = hw.tensor_flops / 1e12
        parts.append(f"{warpgroup / 1e9:.4g} GFLOP / {peak:.4g} TFLOPS (wgmma)")
    if integer:
        peak = i8_mma_peak(hw) / 1e12
        parts.append(f"{integer / 1e9:.4g} GOP / {peak:.4g} TOPS (mma.sync i8)")
    return " + ".join(parts) + " executed (tile padding included)"


def _dominant(sync: float, warpgroup: float, integer: float) -> int:
    """Which kind does most of the work: 0 mma.sync, 1 the warpgroup mma, 2 IMMA."""
    if integer > sync + warpgroup:
        return 2
    return 1 if warpgroup > sync else 0


def tensor_fraction(hw: Hardware, executed: tuple[float, float, float], seconds: float) -> float:
    """The fraction of the peak the kernel's tensor-core work reaches in `seconds`: its
    floating-point flops over the f16 peak of the instruction doing most of them, or,
    where integer mma does most of the work, its ops over the i8 peak of mma.sync."""
    if not seconds:
        return 0.0
    sync, warpgroup, integer = executed
    kind = _dominant(sync, warpgroup, integer)
    work = integer if kind == 2 else sync + warpgroup
    return work / seconds / _peaks(hw)[kind]


def tensor_peak_name(hw: Hardware, sync: float, warpgroup: float, integer: float = 0.0) -> str:
    """The peak `tensor_fraction` is of, in words: which instruction's, and its rate."""
    kind = _dominant(sync, warpgroup, integer)
    rate = _peaks(hw)[kind] / 1e12
    if kind == 2:
        return f"mma.sync i8 peak ({rate:.4g} TOPS)"
    return f"{('mma.sync', 'wgmma')[kind]} peak ({rate:.4g} TFLOPS f16)"


def mb(nbytes: float) -> str:
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.4g} MB"
    if nbytes >= 1e3:
        return f"{nbytes / 1e3:.4g} KB"
    return f"{nbytes:.4g} B"


def _tbs(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e12:.3g} TB/s"
