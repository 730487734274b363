"""What the GPU self-check (`benchmarks/gpu_check.py`) and the GPU benchmarks
(`benchmarks/gpu_*.py`) share: cases, comparisons, the physical floors, timing on a GPU.

Only the standard library is imported at the top: the driver lists every case (and says
there is no GPU) with a Python that has neither numpy nor torch. numpy and torch are
imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# --------------------------------------------------------------------------- cases


class Skip(Exception):
    """A case that cannot run here; the message says why (it is reported, not failed)."""


class CheckFailed(AssertionError):
    """A result that differs from its reference by more than allowed."""


@dataclass(frozen=True)
class Case:
    """One thing the self-check runs: `run(context)` returns the numbers to report, raises
    `CheckFailed` when a result is wrong and `Skip` when it cannot run here."""

    name: str
    budget_s: float  # what it may take on an H100, compile and first launch included
    run: Callable[[Context], dict[str, Any]]
    about: str = ""


def load_example(stem: str):
    """The module examples/<stem>.py, imported without running its __main__ part."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(stem)


def example_stems() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Comparison:
    """How an array compares with its reference.

    mode "exact": every element has the same bits (floats compared as their codes, so
    -0.0 differs from 0.0 and NaNs must match bit for bit). mode "abs": |a - b| <=
    tolerance everywhere. mode "rel": max |a - b| <= tolerance * max |b| (the examples'
    relative error: against the largest magnitude, not element by element)."""

    ok: bool
    mode: str
    tolerance: float
    bit_exact: bool
    max_abs: float
    max_rel: float  # max |a - b| / max |b|
    mismatches: int  # elements over the tolerance (differing bits for "exact")
    detail: str

    def describe(self) -> str:
        if self.bit_exact:
            return "bit-exact"
        if self.mode == "exact":
            return f"NOT bit-exact: {self.detail}"
        bound = f"{self.tolerance:.3g}" + (" x max|ref|" if self.mode == "rel" else "")
        verdict = "within" if self.ok else "OVER"
        return (
            f"max abs diff {self.max_abs:.3g} (relative {self.max_rel:.3g}), {verdict} "
            f"{bound}; {self.detail}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "mode": self.mode,
            "tolerance": self.tolerance,
            "bit_exact": self.bit_exact,
            "max_abs": self.max_abs,
            "max_rel": self.max_rel,
            "mismatches": self.mismatches,
            "summary": self.describe(),
        }


def _bits(array):
    import numpy as np

    if array.dtype.kind in "fc" or array.dtype.kind == "V":
        return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")
    return array


def compare(actual: Any, expected: Any, mode: str = "exact", tolerance: float = 0.0) -> Comparison:
    """Compare two host arrays (numpy, or anything np.asarray takes); see `Comparison`."""
    import numpy as np

    if mode not in ("exact", "abs", "rel"):
        raise ValueError(f"unknown comparison mode {mode!r}: exact, abs or rel")
    a, b = np.asarray(actual), np.asarray(expected)
    if a.shape != b.shape:
        return Comparison(
            False, mode, tolerance, False, math.inf, math.inf, -1, f"shape {a.shape} != {b.shape}"
        )
    same_type = a.dtype == b.dtype
    bit_exact = same_type and bool(np.array_equal(_bits(a), _bits(b)))
    if mode == "exact" and not same_type:
        return Comparison(
            False, mode, tolerance, False, math.inf, math.inf, -1, f"dtype {a.dtype} != {b.dtype}"
        )
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    with np.errstate(invalid="ignore", over="ignore"):
        both_inf = np.isinf(a64) & np.isinf(b64) & (a64 == b64)
        diff = np.where(nan_a & nan_b, 0.0, np.abs(a64 - b64))
        diff = np.where(both_inf, 0.0, diff)
    diff = np.where(nan_a != nan_b, np.inf, diff)
    finite_b = b64[np.isfinite(b64)]
    scale = float(np.abs(finite_b).max()) if finite_b.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    if mode == "exact":
        over = _bits(a).ravel() != _bits(b).ravel()
        ok = bit_exact
    elif mode == "abs":
        over = (diff > tolerance).ravel()
        ok = not over.any()
    else:
        over = (diff > tolerance * scale).ravel()
        ok = not over.any()
    mismatches = int(over.sum())
    if mismatches:
        first = int(np.flatnonzero(over)[0])
        where = np.unravel_index(first, a.shape) if a.ndim else ()
        detail = (
            f"{mismatches} of {a.size} elements differ, first at {tuple(int(i) for i in where)}: "
            f"{a.ravel()[first]!r} vs {b.ravel()[first]!r}"
        )
    elif bit_exact:
        detail = "bit-exact"
    else:
        detail = f"all {a.size} elements within the tolerance"
    return Comparison(ok, mode, tolerance, bit_exact, max_abs, max_rel, mismatches, detail)


def require(comparison: Comparison, what: str) -> Comparison:
    """`comparison`, or `CheckFailed` naming `what` when it is not ok."""
    if not comparison.ok:
        raise CheckFailed(f"{what}: {comparison.describe()}")
    return comparison


# --------------------------------------------------------------------------- floors

TB = 1e12


@dataclass(frozen=True)
class Peak:
    """A card's data-sheet peaks: DRAM bandwidth and dense f16 tensor-core throughput
    (f32 accumulation, no sparsity)."""

    card: str
    dram_bytes_per_s: float
    f16_flops_per_s: float | None
    source: str


# Matched in order against the upper-cased device name; every needle must occur. A MIG
# slice or a Grace-Hopper module is not in the table: its bandwidth is then measured.
PEAKS: tuple[tuple[tuple[str, ...], Peak], ...] = (
    (("H100", "PCIE"), Peak("H100 PCIe", 2.0 * TB, 756 * TB, "NVIDIA H100 data sheet")),
    (("H100", "NVL"), Peak("H100 NVL", 3.9 * TB, 835 * TB, "NVIDIA H100 data sheet")),
    (("H100", "HBM3"), Peak("H100 SXM", 3.35 * TB, 989 * TB, "NVIDIA H100 data sheet")),
    (("H100", "SXM"), Peak("H100 SXM", 3.35 * TB, 989 * TB, "NVIDIA H100 data sheet")),
    (("H200", "NVL"), Peak("H200 NVL", 4.8 * TB, 835 * TB, "NVIDIA H200 data sheet")),
    (("H200",), Peak("H200 SXM", 4.8 * TB, 989 * TB, "NVIDIA H200 data sheet")),
    (
        ("A100", "80GB", "PCIE"),
        Peak("A100 80GB PCIe", 1.935 * TB, 312 * TB, "NVIDIA A100 data sheet"),
    ),
    (("A100", "80GB"), Peak("A100 80GB SXM", 2.039 * TB, 312 * TB, "NVIDIA A100 data sheet")),
    (("A100",), Peak("A100 40GB", 1.555 * TB, 312 * TB, "NVIDIA A100 data sheet")),
)


def card_peak(device_name: str) -> Peak | None:
    """The data-sheet peaks of the card called `device_name` (torch's
    `get_device_name`, e.g. "NVIDIA H100 80GB HBM3"), or None when it is not in the table
    (then measure: `measure_copy_bandwidth`)."""
    name = device_name.upper()
    if "MIG" in name or "GH200" in name:
        return None
    for needles, peak in PEAKS:
        if all(needle in name for needle in needles):
            return peak
    return None


def floor_seconds(
    nbytes: float, bandwidth: float, flops: float = 0.0, flops_per_s: float | None = None
) -> float:
    """The least time the work can take: its bytes at `bandwidth`, its flops at
    `flops_per_s` (when known), whichever is longer."""
    seconds = nbytes / bandwidth
    if flops and flops_per_s:
        seconds = max(seconds, flops / flops_per_s)
    return seconds


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Device time of one call (median of `samples`, CUDA events around each launch with
    the L2 cache flushed before it), the first call (compile + launch, host clock), and the
    host clock per call of a loop of calls without synchronizing (the launch overhead
    when it exceeds the device time)."""

    median_s: float
    min_s: float
    samples: int
    first_call_s: float
    loop_s: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "samples": self.samples,
            "first_call_s": self.first_call_s,
            "loop_s": self.loop_s,
            "method": self.method,
        }


L2_FLUSH_BYTES = 256 << 20  # larger than any L2 of the table's cards (H100: 50 MB)


@functools.cache
def _sleep_cycles_per_second(torch) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cycles = 10_000_000
    torch.cuda._sleep(1000)
    start.record()
    torch.cuda._sleep(cycles)
    end.record()
    end.synchronize()
    return cycles / (start.elapsed_time(end) / 1e3)


@functools.cache
def _flush_buffer(torch):
    return torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device="cuda")


def time_gpu(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> Timing:
    """Times `fn` (which launches work on torch's current stream) on the GPU.

    Before each timed launch the L2 cache is overwritten and the GPU is kept busy
    (`torch.cuda._sleep`) long enough for the host to enqueue the start event, the launch
    and the end event: the events then time the kernel, not the Python that launches it.
    If the start event has already passed once the end event is enqueued, the sleep was
    too short; it doubles and the samples are taken again."""
    import torch

    start_first = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - start_first
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    loops = 20
    start_loop = time.perf_counter()
    for _ in range(loops):
        fn()
    torch.cuda.synchronize()
    loop = (time.perf_counter() - start_loop) / loops
    flush = _flush_buffer(torch)
    has_sleep = hasattr(torch.cuda, "_sleep")
    sleep_s = max(2 * loop, 200e-6)
    method = "CUDA events, L2 flushed, GPU held busy while the host launches"
    for _ in range(6):
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        covered = True
        for start, end in events:
            flush.zero_()
            if has_sleep:
                torch.cuda._sleep(int(sleep_s * _sleep_cycles_per_second(torch)))
            start.record()
            fn()
            end.record()
            covered = covered and not start.query()
        torch.cuda.synchronize()
        if covered or not has_sleep:
            break
        sleep_s *= 2
    else:
        method += " (the host outran every sleep: times may include launch gaps)"
    if not has_sleep:
        method = "CUDA events, L2 flushed (no torch.cuda._sleep: times include launch gaps)"
    times = [start.elapsed_time(end) / 1e3 for start, end in events]
    return Timing(statistics.median(times), min(times), len(times), first, loop, method)


def measure_copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes per second (read + write) of a large torch device-to-device copy."""
    import torch

    source = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    timing = time_gpu(lambda: target.copy_(source), repeats=10, warmup=2)
    return 2 * nbytes / timing.median_s


# --------------------------------------------------------------------------- context


class Context:
    """What a case needs from the machine, found once per process."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline

    def time_left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()

    @functools.cached_property
    def torch(self):
        try:
            import torch
        except ImportError as error:
            raise Skip(f"torch is not installed ({error})") from None
        if not torch.cuda.is_available():
            raise Skip("torch sees no CUDA device")
        return torch

    @functools.cached_property
    def device_name(self) -> str:
        return self.torch.cuda.get_device_name(0)

    @functools.cached_property
    def peak(self) -> Peak | None:
        return card_peak(self.device_name)

    @functools.cached_property
    def measured_copy(self) -> float:
        return measure_copy_bandwidth()

    def bandwidth(self) -> tuple[float, str]:
        """(bytes/s, what it is): the data-sheet peak when the card is in the table, else
        the measured torch copy, called the achievable floor."""
        if self.peak is not None:
            return self.peak.dram_bytes_per_s, (
                f"peak DRAM {rate_text(self.peak.dram_bytes_per_s)} ({self.peak.card}, "
                f"{self.peak.source})"
            )
        return self.measured_copy, (
            f"achievable DRAM {rate_text(self.measured_copy)} (measured torch 1 GiB "
            f"device copy: {self.device_name} is not in the peak table)"
        )

    def f16_flops(self) -> tuple[float | None, str]:
        if self.peak is not None and self.peak.f16_flops_per_s:
            return self.peak.f16_flops_per_s, (
                f"peak f16 tensor {self.peak.f16_flops_per_s / TB:.0f} TFLOP/s ({self.peak.card})"
            )
        return None, "no f16 peak known for this card: the floor counts bytes only"


# --------------------------------------------------------------------------- records


def rate_text(bytes_per_s: float) -> str:
    if bytes_per_s >= 1e12:
        return f"{bytes_per_s / 1e12:.2f} TB/s"
    return f"{bytes_per_s / 1e9:.1f} GB/s"


def time_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    if seconds >= 10e-6:
        return f"{seconds * 1e6:.1f} us"
    if seconds >= 1e-6:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e9:.0f} ns"


def measurement(
    label: str, seconds: float, nbytes: float = 0.0, flops: float = 0.0, bound: str = ""
) -> dict:
    """One timed thing with its rates; for a floor, `bound` says what limits it."""
    out: dict[str, Any] = {"label": label, "time_s": seconds}
    if bound:
        out["bound"] = bound
    if nbytes:
        out["bytes"] = nbytes
        out["gb_per_s"] = nbytes / seconds / 1e9
    if flops:
        out["flops"] = flops
        out["tflop_per_s"] = flops / seconds / 1e12
    return out


def benchmark_record(
    *,
    shape: str,
    ours: dict,
    baseline: dict,
    floor: dict,
    timing: Timing,
    baseline_timing: Timing,
    check: str,
    notes: str = "",
) -> dict[str, Any]:
    """A benchmark's result: our time beside the same-run baseline and the floor."""
    return {
        "kind": "benchmark",
        "shape": shape,
        "ours": ours,
        "baseline": baseline,
        "floor": floor,
        "ours_over_baseline": ours["time_s"] / baseline["time_s"],
        "fraction_of_floor": floor["time_s"] / ours["time_s"],
        "timing": timing.as_dict(),
        "baseline_timing": baseline_timing.as_dict(),
        "check": check,
        "notes": notes,
    }


def run_standalone(cases: list[Case]) -> int:
    """Runs `cases` in this process and prints each result (python benchmarks/gpu_X.py)."""
    import json

    context = Context()
    failed = 0
    for case in cases:
        start = time.monotonic()
        try:
            data = case.run(context)
            status = "pass"
        except Skip as reason:
            data, status = {"reason": str(reason)}, "skip"
        except Exception as error:
            data, status = {"error": f"{type(error).__name__}: {error}"}, "fail"
            failed += 1
        print(f"{status:5} {case.name} ({time.monotonic() - start:.1f} s)")
        print("      " + json.dumps(data, default=str))
    return 1 if failed else 0


def mma_sync_build(timed: Callable[[], Any]) -> Any:
    """On an sm_90a device, `timed()` with the kernels built for sm_90 instead: mma.sync
    where sm_90a's build takes the warpgroup mma (`tilelang.lowering.wgmma`), so one run
    measures both. None on other devices."""
    from unittest import mock

    from tilelang.runtime import gpu

    if gpu.device_arch() != "sm_90a":
        return None
    with mock.patch.object(gpu, "device_arch", lambda: "sm_90"):
        return timed()


def target_record(fraction: float, target: float, what: str) -> dict[str, Any]:
    """The issue's speed target beside what was measured (reported, not a failure: a
    wrong result fails a case, a slow one is a number to read)."""
    return {"what": what, "target": target, "measured": fraction, "met": fraction >= target}


@contextlib.contextmanager
def kept_if_failing(seconds: float | None, what: str):
    """A `CheckFailed` raised inside names what else ran in the same case and its time
    (`seconds`, when it ran), so the failure's report keeps that number."""
    try:
        yield
    except CheckFailed as failure:
        if seconds is None:
            raise
        raise CheckFailed(
            f"{failure} ({what} passed its check: {seconds * 1e6:.1f} us)"
        ) from failure
