"""The bounds of the static performance report: the least time a launch can take by
each resource (`tilelang.runtime.perf`'s module docstring, step 4, has the model).

This module owns the arithmetic of the six bounds and the text that shows it
(`Bound.detail`), from what `perf_report` gathered (`Context`): the launch's DRAM
bytes, the bytes in flight of each modelled loop, and per loop its iterations and per
iteration its warp instructions, MUFU, shared-memory bytes and tensor-core flops. A
kernel of several loops costs their sum (each loop runs its iterations, one after the
other, in every block). The tensor-core bound is never below the floor of the dots the
block IR asks for (`perf_loop.dot_flops`, the whole launch's, at the data sheet's
peak): SASS matched to the wrong loop cannot take the kernel's mma away."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tilelang.runtime import sass as sass_text
from tilelang.target import Hardware

__all__ = [
    "Bound",
    "Context",
    "Phase",
    "Work",
    "bounds",
    "mb",
    "mma_flops",
    "tensor_peak",
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
    """One modelled loop's work per warp: iterations per block, and per iteration its
    warp instructions, MUFU instructions and bytes through shared memory."""

    iterations: float  # the mean over the grid
    instructions: float
    special: float
    shared: float


@dataclass(frozen=True)
class Phase:
    """One modelled loop's DRAM bytes, at the bandwidth its bytes in flight sustain
    (`little`, bytes/s: in flight / latency); `in_flight`: the launch's bytes in flight."""

    where: str
    dram_bytes: float
    in_flight: float
    little: float


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
    sync_flops: float  # executed by mma.sync (IMMA at half weight)
    warpgroup_flops: float  # executed by the warpgroup mma (at the data sheet's peak)
    schedulers: int  # schedulers of the busiest SM that have a warp at once
    dot_flops: float = 0.0  # the block IR's dots at their trip counts, every block


def mma_flops(ops: Mapping[str, int], unroll: int) -> tuple[float, float]:
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


def _sum(work: tuple[Work, ...], field: str) -> tuple[float, str]:
    """Σ iterations x `field` over the loops, and the text: "64 it x 268" for one loop,
    "(64 it x 268 + 64 it x 30)" for several."""
    total = sum(w.iterations * getattr(w, field) for w in work)
    unit = 1e3 if field == "shared" else 1
    terms = [f"{w.iterations:.6g} it x {getattr(w, field) / unit:.4g}" for w in work]
    return total, terms[0] if len(terms) == 1 else "(" + " + ".join(terms) + ")"


def bounds(c: Context) -> tuple[Bound, ...]:
    """The six bounds of the model, the DRAM floor first."""
    hw = c.hw
    floor = c.bytes_total / hw.dram_bytes_per_s  # the useful bytes: what fractions are of
    main = c.phases[0]
    # Each loop's bytes at the bandwidth its own bytes in flight sustain; nothing
    # loaded: no bound.
    latency_s = sum(p.dram_bytes / p.little for p in c.phases if p.little)
    wasted = f" + {mb(c.sector_bytes)} whole sectors of uncoalesced loads" if c.sector_bytes else ""
    if c.reread_bytes:
        wasted += f" + {mb(c.reread_bytes)} re-read by later loops"
    busiest = -(-c.blocks // hw.sms)
    share = c.schedulers / hw.sub_partitions  # of the SM's schedulers and their units
    instructions, issue_terms = _sum(c.work, "instructions")
    special, special_terms = _sum(c.work, "special")
    shared, shared_terms = _sum(c.work, "shared")
    warps = busiest * c.warps  # on the busiest SM
    issue_s = warps * instructions / (hw.issue_per_s * share)
    special_s = warps * special * WARP / (hw.special_per_s * share)
    few = f", {c.schedulers} of {hw.sub_partitions} schedulers with a warp" if share < 1 else ""
    shared_s = warps * shared / (hw.shared_bytes_per_cycle * hw.clock_hz)
    executed_s = c.sync_flops / hw.mma_flops + c.warpgroup_flops / hw.tensor_flops
    tensor_s = max(executed_s, c.dot_flops / hw.tensor_flops)
    tensor_detail = _tensor_detail(c.sync_flops, c.warpgroup_flops, hw)
    if tensor_s > executed_s:
        tensor_detail = (
            f"{c.dot_flops / 1e9:.4g} GFLOP of the block IR's dots / "
            f"{hw.tensor_flops / 1e12:.4g} TFLOPS (floor; the SASS counted: {tensor_detail})"
        )
    head = f"{busiest} block(s) x {c.warps} warps x"
    mhz = f"{hw.clock_hz / 1e6:.0f} MHz"
    latency_detail = (
        f"{mb(main.in_flight)} in flight / {c.latency * 1e9:.0f} ns = {_tbs(main.little)}"
    )
    for p in c.phases[1:]:
        latency_detail += f"; loop at {p.where}: {mb(p.dram_bytes)} at {_tbs(p.little)}"

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


def tensor_peak(hw: Hardware, sync: float, warpgroup: float) -> float:
    """The peak a kernel's tensor fraction is of: the data sheet's where the warpgroup
    mma does most of the work, else mma.sync's."""
    return hw.tensor_flops if warpgroup > sync else hw.mma_flops


def tensor_peak_name(hw: Hardware, sync: float, warpgroup: float) -> str:
    """`tensor_peak` in words: which instruction's peak, and its TFLOPS."""
    name = "wgmma" if warpgroup > sync else "mma.sync"
    return f"{name} peak ({tensor_peak(hw, sync, warpgroup) / 1e12:.4g} TFLOPS f16)"


def mb(nbytes: float) -> str:
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.4g} MB"
    if nbytes >= 1e3:
        return f"{nbytes / 1e3:.4g} KB"
    return f"{nbytes:.4g} B"


def _tbs(bytes_per_s: float) -> str:
    return f"{bytes_per_s / 1e12:.3g} TB/s"
