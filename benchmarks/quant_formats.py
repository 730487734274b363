"""Every weight format of `tilelang.quant` at one decode shape, side by side: the static
report of the kernel `tq.matmul` would launch (`tq.plan`) at m = 1, K = N = 4096, with
its DRAM floor. A prediction from the cubin, never a measurement and never a test.

    .venv/bin/python benchmarks/quant_formats.py [--arch sm_90a] [--m 1]

What it answers: how far each format's kernel is from streaming its own bytes (the
floor counts the codes, scales, zero points and tables it reads), and what binds the
ones that are not there (instruction issue for codebooks: a shared-memory lookup per
weight).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

os.environ.setdefault("TILELANG_AUTOTUNE", "off")  # the default tile, as a first call runs

import tilelang.quant as tq

K = N = 4096

#: (label, quantize's arguments)
FORMATS = (
    ("u4 g128", dict(dtype="u4", group_size=128)),
    ("u4 g64 zero points", dict(dtype="u4", group_size=64, zero_point=True)),
    ("u8 g128", dict(dtype="u8", group_size=128)),
    ("f4e2m1 g32", dict(dtype="f4e2m1", group_size=32)),
    ("MXFP4", dict(format="mxfp4")),
    ("NVFP4", dict(format="nvfp4")),
    ("NF4 g64", dict(format="nf4")),
    ("bnb FP4 g64", dict(format="fp4_bnb")),
)


def row(label: str, options: dict, m: int, arch: str) -> str:
    weights = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32) * 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MX scale range notes: the report is the point
        qw = tq.quantize(weights, **options)
        plan = tq.plan(qw, m, arch)
    total = sum(launch.perf().predicted_seconds for launch in plan.launches)
    first = plan.launches[0].perf()
    floor = first.bounds[0].seconds
    resources = plan.launches[0].compiled.resources
    return (
        f"| {label} | {plan.path} | {total * 1e6:.2f} us | {floor * 1e6:.2f} us | "
        f"{first.dram_fraction:.0%} | {first.binds} | {resources.registers} / "
        f"{resources.spill_store_bytes} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90a")
    parser.add_argument("--m", type=int, default=1)
    args = parser.parse_args()
    print(f"tq.plan(qw, m={args.m}, {args.arch!r}) at K = N = {K} (a prediction)\n")
    print("| format | path | predicted | DRAM floor | of DRAM bw | binds | registers / spill |")
    print("|---|---|---|---|---|---|---|")
    for label, options in FORMATS:
        print(row(label, options, args.m, args.arch), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
