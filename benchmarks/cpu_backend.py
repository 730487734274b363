"""CPU backend speed: the quantized matmul through the LLVM backend, the reference
interpreter and numpy (dequantize, then matmul). A measurement, never a test.

    .venv/bin/python benchmarks/cpu_backend.py [--m 16 --k 4096 --n 4096]

Prints the median of a few runs of each, the ratios, and the floor: the bytes the
kernel must move (x, packed weights, scales, y) over this machine's copy bandwidth,
measured in the same run with a large numpy copy. numpy dequantizes to f32 and
multiplies with BLAS.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import quant_matmul as qm

import tilelang as tl


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 28) -> float:
    """Bytes per second (read + write) of a large numpy copy on this machine."""
    source = np.ones(nbytes // 8)
    target = np.empty_like(source)
    seconds = median_seconds(lambda: np.copyto(target, source), 3)
    return 2 * source.nbytes / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    m, k, n, group = args.m, args.k, args.n, args.group
    x, w, s = qm.make_inputs(m, k, n, tl.u4, group)
    y = np.zeros((m, n), np.float16)
    kernel = qm.quant_matmul

    start = time.perf_counter()
    kernel(x, w, s, y, WT=tl.u4, G=group)  # compiles (passes, lowering, LLVM) and runs
    first = time.perf_counter() - start
    llvm = median_seconds(lambda: kernel(x, w, s, y, WT=tl.u4, G=group), args.repeat)
    interp = median_seconds(lambda: kernel.interpret(x, w, s, y, WT=tl.u4, G=group), 1)

    def numpy_version():
        scales = np.repeat(s.astype(np.float32), group, axis=0)[:k]
        return x.astype(np.float32) @ (w.unpack().astype(np.float32) * scales)

    numpy_time = median_seconds(numpy_version, args.repeat)
    nbytes = x.nbytes + w.data.nbytes + s.nbytes + y.nbytes
    bandwidth = copy_bandwidth()
    floor = nbytes / bandwidth
    print(f"quant_matmul u4 g{group}: m={m} k={k} n={n} ({nbytes / 1e6:.1f} MB moved)")
    print(f"  floor (bytes / {bandwidth / 1e9:.1f} GB/s copy bandwidth): {floor * 1e3:8.3f} ms")
    print(f"  first call (compile + run): {first:8.3f} s")
    print(f"  LLVM backend              : {llvm:8.3f} s  ({llvm / floor:.0f}x the floor)")
    print(f"  reference interpreter     : {interp:8.3f} s  (LLVM is {interp / llvm:.2f}x faster)")
    print(
        f"  numpy dequant + matmul    : {numpy_time:8.3f} s  (LLVM / numpy = {llvm / numpy_time:.2f})"
    )


if __name__ == "__main__":
    main()
