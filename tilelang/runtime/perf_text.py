"""The text of a static performance report (`tilelang.runtime.perf.PerfReport`): the
tables `tilelang inspect --perf` prints. This module owns layout only; every number
comes from the report."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tilelang.runtime.perf_parts import OUTSIDE
from tilelang.runtime.perf_sectors import format_sectors
from tilelang.runtime.perf_shared import format_conflicts
from tilelang.target import Hardware, hardware

if TYPE_CHECKING:
    from tilelang.runtime.perf import PerfReport

__all__ = ["format_report"]


def _bytes(nbytes: float) -> str:
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:.4g} MB"
    if nbytes >= 1e3:
        return f"{nbytes / 1e3:.4g} KB"
    return f"{nbytes:.4g} B"


def _seconds(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g} ms"
    return f"{seconds * 1e6:.4g} us"


def _count(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.3g}"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    """Aligned columns: `right` holds the indices of right-aligned ones."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def _header(r: PerfReport) -> list[str]:
    hw = hardware(r.target)
    launch = " ".join(f"{k}={v}" for k, v in r.launch.items())
    grid = " x ".join(str(g) for g in r.grid)
    occ = r.occupancy
    limits = (
        f"registers {occ.by_registers}, shared {occ.by_shared}, threads {occ.by_threads}, "
        f"cap {occ.by_blocks}"
    )
    return [
        f"==== static performance report: {r.kernel} on {r.target} ({r.card}) ====",
        "  a prediction from the SASS, the resources and the block IR, not a measurement",
        f"  card       {hw.sms} SMs, {hw.dram_bytes_per_s / 1e12:.3g} TB/s DRAM, "
        f"{_bytes(hw.l2_bytes)} L2, {hw.clock_hz / 1e6:.0f} MHz, "
        f"{_peaks(hw)}, DRAM latency {r.latency_s * 1e9:.0f} ns (assumed)",
        f"  launch     {launch}: grid {grid} = {r.blocks} blocks x {occ.threads} threads "
        f"({r.warps} warps)",
        f"  occupancy  {occ.registers} registers/thread, {occ.shared_bytes} B shared/block "
        f"({occ.shared_allocated} B allocated with the reserve)",
        f"             blocks per SM: {limits} -> {occ.resident} resident "
        f"({', '.join(occ.limiters)} bind)",
        f"             waves: {r.blocks} / ({occ.resident} x {hw.sms} SMs) = {r.waves:.3g}",
    ]


def _loop(r: PerfReport) -> list[str]:
    unrolled = "not unrolled" if r.unroll == 1 else f"unrolled x{r.unroll} by ptxas"
    if r.loop == "no loop" and r.loops[0].where == OUTSIDE:
        head = (
            "  main loop  none (every loop that loads runs under an if): the code outside "
            f"the loops, once per block ({r.loops[0].sass}); the loops below add to it"
        )
    elif r.loop == "no loop":
        head = "  main loop  none (no loop loads global memory): the whole kernel, once per block"
    else:
        head = (
            f"  main loop  {r.loop}: {r.iterations:.6g} iterations per block, SASS {unrolled} "
            f"({r.loops[0].sass})"
        )
    lines = [
        head,
        f"             {_count(r.instructions_per_iteration)} warp instructions per iteration",
        "",
    ]
    rows = [("instruction class", "per iteration", "detail")]
    for name, ops in r.mix.items():
        detail = ", ".join(f"{op} x{_count(n)}" for op, n in ops.items())
        rows.append((name, _count(sum(ops.values())), detail))
    rows.append(("total", _count(r.instructions_per_iteration), ""))
    return lines + _table(rows, {1}) + _other_loops(r)


def _other_loops(r: PerfReport) -> list[str]:
    """The loops the report adds up, when there are several."""
    if len(r.loops) < 2:
        return []
    head = ("loop", "iterations", "slowest", "SASS", "unroll", "instr/it", "MUFU/it")
    rows = [(*head, "shared/it", "DRAM")]
    for x in r.loops:
        rows.append(
            (
                x.where,
                f"{x.iterations:.6g}",
                f"{max(x.most, x.iterations):.6g}",
                x.sass,
                f"x{x.unroll}",
                _count(x.instructions_per_iteration),
                _count(x.special_per_iteration),
                _bytes(x.shared_per_iteration),
                _bytes(x.dram_bytes),
            )
        )
    title = "  loops added up, per block: the mean over the grid, the slowest block's (the main loop first)"
    return ["", title] + _table(rows, {1, 2, 4, 5, 6, 7, 8})


def _rereads(r: PerfReport) -> list[str]:
    if not r.rereads:
        return []
    lines = ["", "  re-reads: a later loop reads a tensor an earlier one read (perf_traffic)"]
    l2 = hardware(r.target).l2_bytes
    for x in r.rereads:
        over = x.distance > l2
        cost = f"+{_bytes(x.charged)} from DRAM" if x.charged else "no DRAM bytes"
        lines.append(
            f"    {x.tensor} at {x.where} (read before at {x.first}): the blocks at once load "
            f"{_bytes(x.distance)} between the two reads, {'over' if over else 'within'} the "
            f"{_bytes(l2)} L2: {cost}{'' if over else ' (served from L2)'}"
        )
    return lines


def _loads(r: PerfReport) -> list[str]:
    if not r.loads and not r.tensors:
        return ["", "  no global tile is loaded per iteration"]
    rows = [("tensor", "kind", "tile", "bytes/iter", "ahead", "in flight", "instr/element", "DRAM")]
    listed: set[str] = set()
    for row in r.loads:
        tile = "x".join(str(n) for n in row.tile) + f" {row.dtype}"
        mark = "*" if row.clipped else ""
        moved = r.tensors.get(row.tensor)
        rows.append(
            (
                row.tensor + (" <" if row.tensor == r.per else ""),
                row.kind,
                tile,
                _bytes(row.bytes) + mark,
                str(row.ahead),
                _bytes(row.in_flight),
                f"{row.instructions_per_element:.3g}",
                _bytes(moved[1]) if moved and row.tensor not in listed else "",
            )
        )
        listed.add(row.tensor)
    for name, (access, moved) in r.tensors.items():
        if name not in listed:  # stored, or read outside the main loop (a workspace)
            rows.append((name, access, "-", "-", "-", "-", "-", _bytes(moved)))
    lines = [
        "",
        "  global tiles per iteration per block (* clipped to the tensor's extent); DRAM: "
        "each tensor's bytes in the DRAM floor, its reads and writes once; the tensors the "
        "main loop does not load below its tiles",
    ]
    lines += _table(rows, {3, 4, 5, 6, 7})
    lines += [
        "",
        f"  in flight  {_bytes(r.in_flight_block)} per block, {_bytes(r.in_flight_sm)} per SM "
        f"at {r.occupancy.resident} blocks; this launch: {r.concurrent_blocks:.4g} blocks at "
        f"once, {_bytes(r.in_flight)}",
    ]
    if r.per is not None:
        budget = r.issue_budget_per_element
        lines.append(
            f"  per {r.per:<6} {r.instructions_per_element:.3g} warp instructions per element "
            f"(the GPU issues {budget:.3g} per element in the DRAM floor's time)"
        )
    return lines


def _bounds(r: PerfReport) -> list[str]:
    rows = [("bound", "time", "of DRAM bw", "how")]
    for b in r.bounds:
        mark = "  <- binds" if b.name == r.binds else ""
        fraction = f"{b.fraction:.0%}" if b.seconds else "-"
        rows.append((b.name, _seconds(b.seconds), fraction, b.detail + mark))
    lines = [""] + _table(rows, {1, 2})
    lines += [
        "",
        f"  predicted  {_seconds(r.predicted_seconds)}: {r.dram_fraction:.0%} of DRAM bandwidth "
        f"({_bytes(r.bytes_total)} at {r.bytes_total / r.predicted_seconds / 1e12:.3g} TB/s), "
        f"{r.tensor_fraction:.2%} of the {r.tensor_peak}; {r.binds} binds",
    ]
    lines += [f"  note: {note}" for note in r.notes]
    return lines


def format_report(r: PerfReport) -> str:
    """The report as the text the CLI prints."""
    sectors = format_sectors(r.sectors, r.sector_bytes)
    memory = sectors + format_conflicts(r.conflicts) + _rereads(r)
    return "\n".join(_header(r) + _loop(r) + _loads(r) + memory + _bounds(r))


def _peaks(hw: Hardware) -> str:
    """The card's f16 tensor-core peak, and mma.sync's where it is below it."""
    peak = f"{hw.tensor_flops / 1e12:.4g} TFLOPS f16 mma"
    if hw.mma_flops < hw.tensor_flops:
        peak += f" ({hw.mma_flops / 1e12:.4g} with mma.sync)"
    return peak
