"""The dense matmul example (examples/matmul.py, f16 in, f32 accumulation, f16 out) on the
GPU, beside torch's f16 matmul (cuBLAS, measured in the same run) and the floor: the
longer of the flops at the card's peak f16 tensor-core rate and the bytes (A, B, C once
each) at its DRAM bandwidth. Every result is checked against a float32 torch matmul
within the example's tolerance.

    python3 benchmarks/gpu_matmul.py
"""

from __future__ import annotations

from typing import Any

from gpu_common import (
    Case,
    Context,
    benchmark_record,
    compare,
    floor_seconds,
    load_example,
    measurement,
    require,
    time_gpu,
)

SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (1024, 1024, 1024), (16, 4096, 4096))
TILES = ({}, {"BM": 128, "BN": 64, "BK": 32})  # the example's 64x64x32, then a taller tile


def matmul_case(m: int, n: int, k: int, tiles: dict[str, int]) -> Case:
    tile_text = " ".join(f"{key}={value}" for key, value in tiles.items()) or "example tiles"

    def run(context: Context) -> dict[str, Any]:
        torch = context.torch
        mm = load_example("matmul")
        generator = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn(m, k, device="cuda", generator=generator).to(torch.float16)
        b = torch.randn(k, n, device="cuda", generator=generator).to(torch.float16)
        c = torch.empty(m, n, device="cuda", dtype=torch.float16)
        c_torch = torch.empty_like(c)
        ours = time_gpu(lambda: mm.matmul(a, b, c, **tiles), repeats=10)
        theirs = time_gpu(lambda: torch.matmul(a, b, out=c_torch), repeats=10)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            reference = (a.float() @ b.float()).half().cpu().numpy()
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        tolerance = mm.tolerance(k)
        check = require(compare(c.cpu().numpy(), reference, "rel", tolerance), "tilelang result")
        torch_check = compare(c_torch.cpu().numpy(), reference, "rel", tolerance)
        flops = 2.0 * m * n * k
        nbytes = a.nbytes + b.nbytes + c.nbytes
        bandwidth, bandwidth_text = context.bandwidth()
        peak, peak_text = context.f16_flops()
        floor = floor_seconds(nbytes, bandwidth, flops, peak)
        bound = "DRAM" if floor == nbytes / bandwidth else "tensor cores"
        return benchmark_record(
            shape=f"{m}x{k} @ {k}x{n} f16, {tile_text}",
            ours=measurement("tilelang matmul", ours.median_s, nbytes, flops),
            baseline=measurement("torch f16 matmul", theirs.median_s, nbytes, flops),
            floor=measurement(f"{peak_text}; {bandwidth_text}", floor, nbytes, flops, bound),
            timing=ours,
            baseline_timing=theirs,
            check=f"vs f32 reference: {check.describe()}",
            notes=f"torch vs f32 reference: {torch_check.describe()}",
        )

    budget = 12.0 if m * n * k >= 8192**3 else 6.0
    return Case(
        f"matmul f16 {m}x{k} @ {k}x{n} {tile_text}",
        budget,
        run,
        "tilelang vs torch f16 matmul vs flop/bandwidth floor",
    )


def cases() -> list[Case]:
    return [matmul_case(m, n, k, tiles) for tiles in TILES for m, n, k in SHAPES]


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
