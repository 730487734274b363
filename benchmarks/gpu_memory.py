"""A memory-bound kernel on the GPU: examples/vector_add.py in GB/s, beside torch's own
`x + y` (measured in the same run) and the card's DRAM bandwidth floor (the data-sheet
peak for a card in gpu_common.PEAKS, else a measured 1 GiB torch copy, called the
achievable floor). A torch device-to-device copy is measured in the same run too.

    python3 benchmarks/gpu_memory.py
"""

from __future__ import annotations

from typing import Any

from gpu_common import (
    Case,
    CheckFailed,
    Context,
    benchmark_record,
    floor_seconds,
    load_example,
    measurement,
    rate_text,
    time_gpu,
)

SIZES = (1 << 28, (1 << 24) + 3, 1 << 20)  # f32 elements: 1 GiB per tensor, a ragged tail, small


def vector_add_case(n: int) -> Case:
    def run(context: Context) -> dict[str, Any]:
        torch = context.torch
        kernel = load_example("vector_add").vector_add
        generator = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(n, device="cuda", dtype=torch.float32, generator=generator)
        y = torch.randn(n, device="cuda", dtype=torch.float32, generator=generator)
        out = torch.empty_like(x)
        expected = torch.empty_like(x)
        ours = time_gpu(lambda: kernel(x, y, out))
        theirs = time_gpu(lambda: torch.add(x, y, out=expected))
        if not torch.equal(out.view(torch.int32), expected.view(torch.int32)):
            wrong = int((out.view(torch.int32) != expected.view(torch.int32)).sum())
            raise CheckFailed(f"vector_add differs from torch x + y in {wrong} of {n} elements")
        nbytes = 3 * n * 4
        bandwidth, what = context.bandwidth()
        copy = context.measured_copy
        return benchmark_record(
            shape=f"n={n} f32 ({nbytes / 1e9:.3f} GB moved)",
            ours=measurement("tilelang vector_add", ours.median_s, nbytes),
            baseline=measurement("torch x + y", theirs.median_s, nbytes),
            floor=measurement(what, floor_seconds(nbytes, bandwidth), nbytes, bound="DRAM"),
            timing=ours,
            baseline_timing=theirs,
            check="bit-exact with torch x + y",
            notes=f"torch 1 GiB device copy in the same run: {rate_text(copy)}",
        )

    return Case(
        f"vector_add f32 n={n}",
        10.0,
        run,
        "tilelang vs torch x + y vs DRAM floor (GB/s)",
    )


def cases() -> list[Case]:
    return [vector_add_case(n) for n in SIZES]


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
