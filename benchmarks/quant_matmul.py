"""tilelang.quant.matmul at Llama-3-8B/70B layer shapes: the kernels each call chooses,
and what they do.

    .venv/bin/python benchmarks/quant_matmul.py [--shapes 4096x4096,8192x28672]
        [--types u4,i4-asym,u3,u8,mxfp4,nvfp4] [--m 1,16,64,4096] [--arch sm_90a]
        [--latency-ns 600] [--gpu | --static]

Shapes are k x n (4096x4096, 4096x14336, 14336x4096, 8192x8192, 8192x28672,
28672x8192), m the rows of x. Types: u4 and u3 and u8 (also u5, u6, u7) symmetric
(the constant zero point 2^(b-1), which the kernels read as signed codes), i4 with
zero points (asymmetric), each with one f16 scale per 128 rows; MXFP4 (f4e2m1, an e8m0
scale per 32 rows; also mxfp6_e2m3, mxfp6_e3m2, mxfp8_e4m3, mxfp8_e5m2) and NVFP4
(f4e2m1, an f8e4m3 scale per 16 rows, an f32 tensor scale).

Without a GPU (or with --static): for each case, `tilelang.quant.plan` compiles the
kernels a call would launch for --arch (NVRTC; no GPU) and prints the static report of
each (`CompiledKernel.perf`, `tilelang.runtime.perf`): a prediction from the SASS, not
a measurement. Columns: the path and tile the call chooses, split-K, the predicted time
of the main kernel and the DRAM floor (weights, scales, x and y read or written once at
the card's bandwidth), the split-K workspace's bytes (the f32 partial products written
and read back, and the tiles' counters: DRAM traffic the report's own floor adds, the
useful floor does not), the fraction of DRAM bandwidth the useful bytes reach in the
predicted time and what binds,
instructions per weight (the main loop's warp instructions per weight element, times
32: what each thread issues per weight it owns), bytes in flight per SM, registers and
spills. Split-K is one launch (the last block of a tile adds the slices' products), so
its addition is in the predicted time.
Needs NVRTC and nvdisasm (the nvidia-cuda-nvrtc and nvidia-cuda-nvdisasm wheels).

With a GPU (torch and a CUDA device; not run where this was written, so this path is
untested): the measured time of `tilelang.quant.matmul` (benchmarks/gpu_common.time_gpu:
CUDA events, L2 flushed), its GB/s (weights, scales, x and y once) and percent of the
same run's device-to-device copy bandwidth, beside torch's f16 matmul of f16 weights of
the same shape (cuBLAS) and, when triton imports, the plain Triton W4A16 kernel of
benchmarks/triton_w4a16.py (GPTQ-style int32 packing along K, one f16 scale per 128 rows; written for this
comparison, untuned: a floor for "what a plain Triton kernel gets", not a library's
number). u4 only for Triton.

The weights are random codes (every byte pattern, except the inf/NaN codes of f8
types, which quantize never makes) already packed for the kernels, built without
quantizing floats: the static report depends on shapes and types only (and on the
"finite" fact f8 weights get), and a 28672 x 8192 quantize would dominate the run.
"""

from __future__ import annotations

import argparse
import datetime
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import tilelang as tl  # noqa: E402
from tilelang import quant  # noqa: E402
from tilelang.quant import QuantizedWeight, operands  # noqa: E402

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (8192, 28672), (28672, 8192))
TYPES = ("u4", "i4-asym", "u3", "u8", "mxfp4", "nvfp4")
#: Also accepted by --types (not run by default): the other widths and MX formats.
MORE_TYPES = ("u5", "u6", "u7", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2")
MS = (1, 16, 64, 4096)
GROUP = 128


def weight(name: str, k: int, n: int, seed: int = 0) -> QuantizedWeight:
    """A weight of type `name` [k, n] with random codes, packed as the kernels read them."""
    rng = np.random.default_rng(seed)
    fmt, element, group, zeros, tensor_scale = "scaled", None, GROUP, None, None
    if name in ("u3", "u4", "u5", "u6", "u7", "u8"):
        element = tl.dtype(name)
        zeros = np.full((k // group, n), 1 << (element.bits - 1), np.int32)
        scales, scale_dtype = _f16_scales(rng, (k // group, n)), tl.f16
    elif name == "i4-asym":
        element = tl.i4
        zeros = rng.integers(-8, 8, (k // group, n)).astype(np.int32)
        scales, scale_dtype = _f16_scales(rng, (k // group, n)), tl.f16
    elif name.startswith("mxfp"):
        fmt, group, scale_dtype = name, 32, tl.e8m0
        element = {"mxfp4": tl.f4e2m1, "mxfp6_e2m3": tl.f6e2m3, "mxfp6_e3m2": tl.f6e3m2,
                   "mxfp8_e4m3": tl.f8e4m3, "mxfp8_e5m2": tl.f8e5m2}[name]  # fmt: skip
        scales = rng.integers(118, 126, (k // group, n)).astype(np.uint8)  # 2^-9 .. 2^-2
    elif name == "nvfp4":
        fmt, element, group, scale_dtype = "nvfp4", tl.f4e2m1, 16, tl.f8e4m3
        scales = tl.f8e4m3.encode(rng.uniform(16, 448, (k // group, n)))
        tensor_scale = float(np.float32(1 / 2688))
    else:
        raise ValueError(f"unknown type {name!r}; the types: {', '.join(TYPES + MORE_TYPES)}")
    plain = QuantizedWeight(
        _codes(element, k, n),
        scales,
        scale_dtype,
        group,
        format=fmt,
        zeros=zeros,
        tensor_scale=tensor_scale,
    )
    packing = operands.kernel_packing(plain)
    nbytes = math.ceil(math.prod(packing.packed_shape) * element.bits / 8)
    data = rng.integers(0, 256, nbytes, dtype=np.uint8)
    if element.bits == 8:  # no inf/NaN code, as quantize makes (the kernels' "finite" fact)
        data[~np.isfinite(element.decode(data))] = 0
    codes = tl.DotPackedArray(data, element, packing.packed_shape, packing)
    return QuantizedWeight(
        codes, scales, scale_dtype, group, fmt, zeros, tensor_scale, packing=packing
    )


def _codes(element: tl.DType, k: int, n: int) -> tl.PackedArray:
    """Placeholder plain codes (zeros) of the right shape; only the packed ones are used."""
    return tl.PackedArray(np.zeros(math.ceil(k * n * element.bits / 8), np.uint8), element, (k, n))


def _f16_scales(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.uniform(0.002, 0.02, shape).astype(np.float16).view(np.uint16)


def parse_list(text: str, convert, what: str) -> tuple:
    try:
        return tuple(convert(part) for part in text.split(",") if part)
    except ValueError:
        raise SystemExit(f"--{what}: cannot read {text!r}") from None


def parse_shape(text: str) -> tuple[int, int]:
    k, sep, n = text.lower().partition("x")
    if not sep:
        raise ValueError(text)
    return int(k), int(n)


# ------------------------------------------------------------------ static reports


def static_row(name: str, k: int, n: int, m: int, arch: str, latency_ns: float | None) -> str:
    qw = weight(name, k, n)
    p = quant.plan(qw, m, arch)
    main = p.launches[0]
    r = main.perf(latency_ns=latency_ns)
    c = p.choice
    res = main.compiled.resources
    workspace = sum(r.tensors.get(t, ("", 0))[1] for t in WORKSPACE)
    useful = sum(b for t, (_, b) in r.tensors.items() if t not in WORKSPACE)
    floor = useful / r.peak_bandwidth
    return (
        f"| {k}x{n} | {m} | {name} | {c.path} {c.bm}x{c.bn}x{c.bk}/{c.warps}w | {c.split_k} | "
        f"{r.predicted_seconds * 1e6:.1f} | {floor * 1e6:.1f} | {workspace / 1e6:.2f} | "
        f"{floor / r.predicted_seconds:.0%} | {r.binds} | {r.instructions_per_element * 32:.2f} | "
        f"{r.in_flight_sm / 1e3:.1f} KB | {res.registers} | {res.spill_store_bytes} |"
    )


STATIC_HEADER = (
    "| k x n | m | type | path, tile BMxBNxBK/warps | split | predicted us | "
    "DRAM floor us | workspace MB | of DRAM bw | binds | instr/weight | in flight/SM | "
    "regs | spills |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
#: The split-K kernel's workspace tensors (`tilelang.quant.kernels.quant_matmul_split_k`).
WORKSPACE = ("partials", "counts")


# ------------------------------------------------------------------ GPU measurements


def gpu_rows(names, shapes, ms) -> list[str]:
    import torch
    from gpu_common import measure_copy_bandwidth, time_gpu

    copy = measure_copy_bandwidth()
    from triton_w4a16 import make_kernel

    triton_run = make_kernel()
    rows = []
    for k, n in shapes:
        w16 = torch.randn(k, n, dtype=torch.float16, device="cuda") / 64
        words = torch.randint(-(2**31), 2**31 - 1, (k // 8, n), dtype=torch.int32, device="cuda")
        s16 = torch.rand(k // 128, n, dtype=torch.float16, device="cuda") / 64
        for name in names:
            qw = weight(name, k, n)
            weight_bytes = qw.nbytes
            for m in ms:
                x = torch.randn(m, k, dtype=torch.float16, device="cuda") / 4
                out = torch.empty(m, n, dtype=torch.float16, device="cuda")
                ours = time_gpu(lambda: quant.matmul(x, qw, out=out))  # noqa: B023
                moved = weight_bytes + 2 * m * (k + n)
                cublas = time_gpu(lambda: x @ w16)  # noqa: B023
                triton_us = "-"
                if triton_run is not None and name == "u4":
                    y = torch.empty(m, n, dtype=torch.float16, device="cuda")
                    triton_us = (
                        f"{time_gpu(lambda: triton_run(x, words, s16, y)).median_s * 1e6:.1f}"  # noqa: B023
                    )
                rate = moved / ours.median_s
                rows.append(
                    f"| {k}x{n} | {m} | {name} | {ours.median_s * 1e6:.1f} | {rate / 1e9:.0f} | "
                    f"{rate / copy:.0%} | {cublas.median_s * 1e6:.1f} | {triton_us} |"
                )
                print(rows[-1], flush=True)
    print(f"\ncopy bandwidth (device to device, read + write): {copy / 1e9:.0f} GB/s")
    return rows


GPU_HEADER = (
    "| k x n | m | type | tilelang us | GB/s | of copy bw | torch f16 us | Triton W4A16 us |\n"
    "|---|---|---|---|---|---|---|---|"
)


# ------------------------------------------------------------------ main


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True
        ).stdout.strip()
        return head + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES))
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--m", default=",".join(map(str, MS)))
    parser.add_argument(
        "--arch", default="sm_90a", help="the static reports' target (default: an H100's build)"
    )
    parser.add_argument("--latency-ns", type=float, default=None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="measure (needs torch and a GPU)")
    mode.add_argument("--static", action="store_true", help="static reports even on a GPU")
    args = parser.parse_args()
    shapes = parse_list(args.shapes, parse_shape, "shapes")
    names = parse_list(args.types, str, "types")
    unknown = sorted(set(names) - set(TYPES + MORE_TYPES))
    if unknown:
        known = ", ".join(TYPES + MORE_TYPES)
        raise SystemExit(f"--types: unknown {', '.join(unknown)}; the types: {known}")
    ms = parse_list(args.m, int, "m")
    on_gpu = args.gpu or (not args.static and tl.gpu_available())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"{command}\n{now}, commit {_commit()}")
    if on_gpu:
        print(f"measured on {tl.gpu_arch()}\n\n{GPU_HEADER}")
        gpu_rows(names, shapes, ms)
        return 0
    from tilelang.runtime.nvrtc import nvrtc_version

    major, minor = nvrtc_version()
    print(f"static reports for {args.arch}, NVRTC {major}.{minor}: predictions, not measurements\n")
    print(STATIC_HEADER, flush=True)
    failed = 0
    start = time.perf_counter()
    for k, n in shapes:
        for name in names:
            for m in ms:
                try:
                    print(static_row(name, k, n, m, args.arch, args.latency_ns), flush=True)
                except Exception as error:  # a benchmark reports a case it cannot build
                    print(f"| {k}x{n} | {m} | {name} | failed: {type(error).__name__}: {error} |")
                    failed += 1
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
