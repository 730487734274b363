"""What a launch costs the host: examples/vector_add.py at n = 1024 called on torch CUDA
tensors, against the same cubin launched by a bare `cuLaunchKernel` (cuda-python, its
parameters packed once: the floor of a launch from Python), with torch's own
`torch.add(x, y, out=...)` and the `tilelang.torch` op of the kernel beside them, all in
the same run (issue 13: at most 10 us over the bare launch). Then two library calls of a
decode step on torch CUDA tensors, `tilelang.kernels.rms_norm` ([1, 4096] f16) and
`tilelang.quant.matmul` (u4 g128, m = 1, k = n = 4096, its default kernel), each with
its call plan (`tilelang.runtime.call_plans`: replayed from the third call) and without
(`call_plans.ENABLED` off: the full call), beside torch's own call for the same job
(`torch.nn.functional.rms_norm`; `torch.matmul` of the f16 weights) and the bare launch.

Each number is the host clock per call over a loop of calls, the loops of the four
alternating round by round, with the GPU held busy (`torch.cuda._sleep`) through each
loop so that no call waits for the device: what the caller's thread spends, not what the
GPU does.

    python3 benchmarks/gpu_launch.py
"""

from __future__ import annotations

import ctypes
import statistics
import time
from collections.abc import Callable
from typing import Any

from gpu_common import (
    Case,
    CheckFailed,
    Context,
    Timing,
    _sleep_cycles_per_second,
    benchmark_record,
    load_example,
    measurement,
)

N = 1024
CALLS = 200  # a loop: well under the driver's queue of pending launches
ROUNDS = 15
TARGET_OVER_BARE_S = 10e-6
HIDDEN = 4096  # the library case's hidden size: rms_norm [1, H], quant.matmul k = n = H


def bare_launch(torch, build, pointers: dict[str, int], n: int) -> Callable[[], Any]:
    """`cuLaunchKernel` of `build`'s cubin, loaded here, with its parameters packed once
    in ctypes from the kernel's ABI (`kernel_params`): nothing of tilelang's call path."""
    from cuda.bindings import driver as cu

    from tilelang.codegen.cuda import kernel_params

    def checked(outcome):
        result, *values = outcome
        if result != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"the bare launch's driver call failed: {result}")
        return values[0] if values else None

    module = checked(cu.cuModuleLoadData(build.cubin))
    function = checked(cu.cuModuleGetFunction(module, build.symbol.encode()))
    scalar_types = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_int32, 8: ctypes.c_int64}
    values = [
        ctypes.c_uint64(pointers[p.name]) if p.is_tensor else scalar_types[p.size](n)
        for p in kernel_params(build.thread)
    ]
    array = (ctypes.c_void_p * len(values))(*(ctypes.addressof(v) for v in values))
    (blocks,) = build.launcher.grid({"N": n})  # once, before any timing
    threads, shared = build.thread.threads, build.thread.shared_bytes
    stream = torch.cuda.current_stream().cuda_stream
    address = ctypes.addressof(array)

    def launch() -> None:
        cu.cuLaunchKernel(function, blocks, 1, 1, threads, 1, 1, shared, stream, address, 0)

    launch.keep = (module, values, array)  # alive as long as the closure
    return launch


def host_seconds_per_call(torch, launches: dict[str, Callable[[], Any]]) -> dict[str, list]:
    """Per launch form, the host seconds per call of each round's loop, the forms taking
    turns; before each loop the GPU is given a sleep longer than the loop takes."""
    cycles_per_s = _sleep_cycles_per_second(torch)
    samples: dict[str, list[float]] = {name: [] for name in launches}
    sleep_s = 0.02
    for _ in range(ROUNDS):
        for name, launch in launches.items():
            torch.cuda._sleep(int(sleep_s * cycles_per_s))
            start = time.perf_counter()
            for _ in range(CALLS):
                launch()
            elapsed = time.perf_counter() - start
            torch.cuda.synchronize()
            samples[name].append(elapsed / CALLS)
            sleep_s = max(sleep_s, 2 * elapsed)  # the next loop's sleep outlasts it
    return samples


def host_timings(
    samples: dict[str, list], first: float
) -> tuple[dict[str, float], Callable[[str], Timing]]:
    """The median host seconds per call of each form, and each form's `Timing`."""
    median = {name: statistics.median(values) for name, values in samples.items()}

    def timing(name: str) -> Timing:
        values = samples[name]
        how = f"host clock per call, loops of {CALLS} taking turns, GPU held busy"
        return Timing(median[name], min(values), len(values), first, median[name], how)

    return median, timing


def bare_floor(seconds: float) -> dict:
    return measurement("bare cuLaunchKernel (cuda-python)", seconds, bound="host launch")


def launch_overhead_case() -> Case:
    def run(context: Context) -> dict[str, Any]:
        torch = context.torch
        import tilelang.torch as tt
        from tilelang.runtime import gpu

        kernel = load_example("vector_add").vector_add
        generator = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(N, device="cuda", generator=generator)
        y = torch.randn(N, device="cuda", generator=generator)
        out, expected, bare_out = (torch.empty_like(x) for _ in range(3))
        start = time.perf_counter()
        kernel(x, y, out)
        torch.cuda.synchronize()
        first = time.perf_counter() - start
        op = tt.op(kernel, "tilelang_gpu_check::vector_add")
        build = kernel.compile(target=gpu.device_arch()).cuda
        pointers = {"x": x.data_ptr(), "y": y.data_ptr(), "out": bare_out.data_ptr()}
        launches = {
            "tilelang": lambda: kernel(x, y, out),
            "bare": bare_launch(torch, build, pointers, N),
            "torch": lambda: torch.add(x, y, out=expected),
            "op": lambda: op(x, y),
            "stream": lambda: torch.cuda.current_stream().cuda_stream,
        }
        samples = host_seconds_per_call(torch, launches)
        for name, result in (("vector_add", out), ("the bare launch", bare_out)):
            if not torch.equal(result.view(torch.int32), (x + y).view(torch.int32)):
                raise CheckFailed(f"{name} differs from torch x + y after the loops")
        median, timing = host_timings(samples, first)
        over = median["tilelang"] - median["bare"]
        verdict = "within" if over <= TARGET_OVER_BARE_S else "over"
        return benchmark_record(
            shape=f"vector_add n={N}: host time per launch (torch CUDA tensors)",
            ours=measurement("tilelang vector_add(x, y, out)", median["tilelang"]),
            baseline=measurement("torch.add(x, y, out=out)", median["torch"]),
            floor=bare_floor(median["bare"]),
            timing=timing("tilelang"),
            baseline_timing=timing("torch"),
            check="vector_add and the bare launch bit-exact with torch x + y after the loops",
            notes=(
                f"over the bare launch: {over * 1e6:.1f} us, {verdict} issue 13's 10 us; "
                f"the tilelang.torch op (allocates its output): {median['op'] * 1e6:.1f} us, "
                f"{(median['op'] - median['bare']) * 1e6:.1f} us over the bare launch; "
                f"torch.cuda.current_stream() alone: {median['stream'] * 1e6:.1f} us"
            ),
        )

    return Case(
        f"launch overhead vector_add n={N}",
        8.0,
        run,
        "host time per launch: tilelang vs torch.add vs a bare cuLaunchKernel",
    )


def library_calls_case() -> Case:
    def run(context: Context) -> dict[str, Any]:
        torch = context.torch
        import numpy as np

        import tilelang.kernels as K
        from tilelang import quant
        from tilelang.runtime import call_plans, gpu

        generator = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(1, HIDDEN, device="cuda", generator=generator).half()
        w = torch.randn(HIDDEN, device="cuda", generator=generator).half()
        weights = np.random.default_rng(0).standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
        qw = quant.quantize(weights, "u4", group_size=128)
        exact = torch.from_numpy(qw.dequantize().astype(np.float32)).to(x.device)
        dense = exact.half()  # torch's own call: cuBLAS on the f16 weights
        start = time.perf_counter()
        K.rms_norm(x, w)
        quant.matmul(x, qw, tune=False)
        torch.cuda.synchronize()
        first = time.perf_counter() - start

        def full(fn: Callable[[], Any]) -> Callable[[], Any]:
            def call() -> Any:
                call_plans.ENABLED = False
                try:
                    return fn()
                finally:
                    call_plans.ENABLED = True

            return call

        norm = lambda: K.rms_norm(x, w)  # noqa: E731
        matmul = lambda: quant.matmul(x, qw, tune=False)  # noqa: E731
        vector_add = load_example("vector_add").vector_add
        a, b, c = (torch.zeros(N, device=x.device) for _ in range(3))
        vector_add(a, b, c)
        pointers = {"x": a.data_ptr(), "y": b.data_ptr(), "out": c.data_ptr()}
        build = vector_add.compile(target=gpu.device_arch()).cuda
        launches = {
            "rms_norm": norm,
            "rms_norm full": full(norm),
            "torch rms_norm": lambda: torch.nn.functional.rms_norm(x, (HIDDEN,), w, 1e-6),
            "quant.matmul": matmul,
            "quant.matmul full": full(matmul),
            "torch matmul": lambda: torch.matmul(x, dense),
            "bare": bare_launch(torch, build, pointers, N),
        }
        samples = host_seconds_per_call(torch, launches)
        _check_library_results(torch, x, w, norm(), exact, matmul())
        median, timing = host_timings(samples, first)
        us = {name: value * 1e6 for name, value in median.items()}
        return benchmark_record(
            shape="library calls of a decode step: host time per call (torch CUDA tensors)",
            ours=measurement(
                f"tilelang.kernels.rms_norm [1, {HIDDEN}], planned", median["rms_norm"]
            ),
            baseline=measurement("torch.nn.functional.rms_norm", median["torch rms_norm"]),
            floor=bare_floor(median["bare"]),
            timing=timing("rms_norm"),
            baseline_timing=timing("torch rms_norm"),
            check="rms_norm and quant.matmul against float32 torch references after the loops",
            notes=(
                f"rms_norm full call (no plan): {us['rms_norm full']:.1f} us; "
                f"quant.matmul u4 m=1 k=n={HIDDEN}: planned {us['quant.matmul']:.1f} us, "
                f"full {us['quant.matmul full']:.1f} us, torch.matmul of the f16 weights "
                f"{us['torch matmul']:.1f} us; the bare launch {us['bare']:.1f} us"
            ),
        )

    return Case(
        "library calls rms_norm, quant.matmul",
        8.0,
        run,
        "host time per library call, planned and full, vs torch's and a bare launch",
    )


def _check_library_results(torch, x, w, y_norm, weights, y_matmul) -> None:
    """The calls' results against float32 torch computations of the same formulas
    (`weights`: the quantized weights as the kernels see them, f32)."""
    xf = x.float()
    want = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + 1e-6) * w.float()
    if not torch.allclose(y_norm.float(), want, rtol=2e-3, atol=2e-3):
        raise CheckFailed("rms_norm differs from its float32 formula beyond f16 rounding")
    want = xf @ weights
    error = (y_matmul.float() - want).abs().max().item()
    if not error <= 1e-3 * want.abs().max().item() + 1e-3:
        raise CheckFailed(f"quant.matmul differs from x @ its dequantized weights by {error}")


def cases() -> list[Case]:
    return [launch_overhead_case(), library_calls_case()]


if __name__ == "__main__":
    import sys

    from gpu_common import run_standalone

    sys.exit(run_standalone(cases()))
