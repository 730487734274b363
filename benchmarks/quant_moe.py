"""tilelang.quant.moe_matmul's grouped GEMM at Mixtral-8x7B's expert shapes: the static
report of the kernel each call launches (a prediction from the SASS, not a
measurement; no GPU is needed, and the GPU path has not been measured).

    .venv/bin/python benchmarks/quant_moe.py --static [--types u4,u8,mxfp4]
        [--tokens 1,16,64,512] [--arch sm_90a] [--experts 8] [--top-k 2]
        [--k 4096] [--n 14336]

For each case the experts are one stacked [E·K, N] weight of random codes (packed as
the kernels read them; the report depends on shapes and types only, and quantizing
E·K·N floats would dominate the run), T tokens are routed to top-k of E experts at
random (seed 0), and `tilelang.quant.moe.plan_moe` gives the launches. The report is
of `moe_gemm` at the blocks that routing fills (NB: blocks past the used ones exit at
their first load, so they are left out) with the main loop's K / BK iterations (its
bound depends on the block's expert, read at run time). Columns: the experts the
routing uses, the blocks of 16 rows, the predicted time, the DRAM floor (each used
expert's codes, scales and zero points read once, x's rows read and the [T·k, N]
products written once, at the card's bandwidth), its fraction of the prediction,
what binds, registers and spills. The align and sum kernels are not in the time.
Needs NVRTC and nvdisasm (the nvidia-cuda-nvrtc and nvidia-cuda-nvdisasm wheels).
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quant_matmul import parse_list, weight

from tilelang.quant import moe
from tilelang.target import HARDWARE
from tilelang.target import target as find_target


def routing(tokens: int, experts: int, top_k: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.choice(experts, top_k, replace=False) for _ in range(tokens)])


def row(name: str, experts: int, k: int, n: int, tokens: int, top_k: int, arch: str) -> str:
    qe = moe.QuantizedExperts(weight(name, experts * k, n), experts)
    plan = moe.plan_moe(qe, tokens, top_k, arch=arch)
    gemm = plan.gemm
    counts = np.bincount(routing(tokens, experts, top_k).reshape(-1), minlength=experts)
    blocks = int(sum(math.ceil(c / moe.BLOCK_M) for c in counts))
    compiled = gemm.compile(arch)
    sizes = {**gemm.sizes, "NB": blocks}
    iterations = k // gemm.constexprs["BK"]
    report = compiled.perf(per="w", iterations=iterations, **sizes)
    used = int((counts > 0).sum())
    ops = plan.ops  # what the kernel reads: packed codes, its scales, its zero points
    stacked = ops.weight.codes.nbytes + ops.scales.nbytes
    weight_bytes = (stacked + (0 if ops.zeros is None else ops.zeros.nbytes)) / experts * used
    io_bytes = tokens * k * 2 + tokens * top_k * n * 4
    hw = HARDWARE[find_target(arch).name]
    floor = (weight_bytes + io_bytes) / hw.dram_bytes_per_s
    res = compiled.resources
    predicted = report.predicted_seconds
    return (
        f"| {tokens} | {name} | {used} | {blocks} | {predicted * 1e6:.1f} | {floor * 1e6:.1f} | "
        f"{floor / predicted:.0%} | {report.binds} | {res.registers} | {res.spill_store_bytes} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--static", action="store_true", help="static reports (the only mode)")
    parser.add_argument("--types", default="u4,u8,mxfp4")
    parser.add_argument("--tokens", default="1,16,64,512")
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=14336)
    args = parser.parse_args()
    types = parse_list(args.types, str, "types")
    tokens = parse_list(args.tokens, int, "tokens")
    print(
        f"moe_gemm static reports for {args.arch}, E={args.experts}, K={args.k}, N={args.n}, "
        f"top-{args.top_k}: predictions, not measurements\n"
    )
    print(
        "| T | type | experts used | blocks | predicted us | DRAM floor us | floor/predicted "
        "| binds | regs | spills |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    for name in types:
        for t in tokens:
            print(row(name, args.experts, args.k, args.n, t, args.top_k, args.arch), flush=True)


if __name__ == "__main__":
    main()
