"""What a call costs beyond the kernel's own work: warm CPU calls of vector_add, warm
compiles in one process, and a warm disk-cache hit in a fresh process; numpy's and
Triton's equivalents beside them. A measurement, never a test.

    .venv/bin/python benchmarks/call_overhead.py [--sizes 1024 4096 65536 1048576]

Warm CPU call (every number a median over many calls, microseconds):

* `call`: `vector_add(x, y, out)`, its arguments checked, the compiled kernel looked
  up, the launch prepared and run; once on one thread (TILELANG_CPU_THREADS=1) and once
  with the default thread count;
* `kernel`: the kernel's own work: its JIT-compiled entry called directly through
  ctypes with prepared pointers, over every block, on the calling thread (what the
  machine code takes, plus one ctypes call of about a microsecond);
* `overhead` = one-thread `call` - `kernel`: what tilelang adds to a call;
* `numpy`: numpy's own `x + y` on the same arrays (its whole call, allocation included).

Compiles: `compile(target="sm_90")` and `compile()` a second time in the same process
(the in-memory cache), and, in fresh processes (a subprocess each) whose disk cache
already holds the kernel, the `compile(target="sm_90")` call itself, reported apart
from `import tilelang` and the frontend's build of the block IR before it.

torch op (when torch is installed; `--torch-only` runs just this part): the same kernel
as a `tilelang.torch.op` operator called on CPU torch tensors (`op(x, y)`, which
allocates its output with torch.empty) against the direct kernel call on numpy views of
the same tensors (`vector_add(x.numpy(), ...)`), timed in alternation, one thread;
`added` = the median of op - direct in CPU time: what the torch dispatcher and the bridge add
(target: at most 20 us; the op allocates its output, the direct call reuses one); and the
direct call on the torch tensors themselves (`vector_add(x, y, out)`, each imported
through DLPack), timed in alternation with the numpy call the same way: `DLPack` = its
median difference, for three tensors, and `empty` = what the op's torch.empty costs.

GPU call path (`--gpu-path-only` runs just this part; last in a full run, since it stubs
the driver): `vector_add(x, y, out)` at N = 1024 on device tensors, as
`__cuda_array_interface__` objects and as stand-ins for CUDA torch tensors, with the
CUDA driver's `cuLaunchKernel` a no-op and torch's current-stream query left out: the
host work tilelang does up to the launch, on any machine (process time, alternating
with the stubbed launch alone). The GPU check measures the real launch beside a bare
`cuLaunchKernel` (benchmarks/gpu_launch.py).

Triton: when triton, torch and a GPU are there, the same vector add in Triton: its warm
launch (host time per call) and, in fresh processes, its first call with a warm Triton
cache (what a warm disk-cache hit costs Triton: cache lookup and module load, no
compile) — measured in the same run. Otherwise a note says why there is no column.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

from vector_add import vector_add  # noqa: E402

import tilelang as tl  # noqa: E402
from tilelang.runtime.host_expr import eval_grid  # noqa: E402
from tilelang.runtime.nvrtc import NvrtcUnavailableError  # noqa: E402

ARCH = "sm_90"


def per_call_us(fn: Callable[[], object], seconds: float = 0.3, samples: int = 11) -> float:
    """Median over `samples` of the mean time of one call (microseconds), each sample
    running `fn` in a loop for about `seconds / samples`."""
    fn()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        fn()
        calls += 1
    per_sample = max(1, int(calls * seconds / samples / 0.02))
    results = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(per_sample):
            fn()
        results.append((time.perf_counter() - start) / per_sample)
    return 1e6 * statistics.median(results)


def with_threads(threads: str | None, fn: Callable[[], float]) -> float:
    """`fn()` with TILELANG_CPU_THREADS set to `threads` (None: unset)."""
    saved = os.environ.pop("TILELANG_CPU_THREADS", None)
    if threads is not None:
        os.environ["TILELANG_CPU_THREADS"] = threads
    try:
        return fn()
    finally:
        os.environ.pop("TILELANG_CPU_THREADS", None)
        if saved is not None:
            os.environ["TILELANG_CPU_THREADS"] = saved


def machine_code(n: int, x: np.ndarray, y: np.ndarray, out: np.ndarray) -> Callable[[], None]:
    """The kernel's JIT-compiled entry over every block, with prepared arguments."""
    compiled = vector_add.compile(assume={"N": _divisor(n)})
    kernel = compiled.cpu
    (blocks,) = eval_grid(compiled.thread.grid, {"N": n})
    pointers = (ctypes.c_void_p * 3)(x.ctypes.data, y.ctypes.data, out.ctypes.data)
    scalars = np.array([n], dtype="<u8")
    raw = np.zeros(kernel.lowered.workspace_bytes + 64, np.uint8)
    workspace = raw.ctypes.data + (-raw.ctypes.data % 64)
    entry, address = kernel.compiled.entry, ctypes.addressof(pointers)

    def run() -> None:
        entry(address, scalars.ctypes.data, blocks, 1, 1, 0, blocks, workspace)

    run.keep = (pointers, scalars, raw)  # alive as long as the closure
    return run


def _divisor(n: int) -> int:
    divisor = 128
    while n % divisor:
        divisor //= 2
    return divisor


def cpu_calls(sizes: list[int]) -> None:
    print("warm CPU call of vector_add (f32), microseconds per call (median)")
    header = ("N", "call 1 thread", "kernel", "overhead", "call default", "numpy x + y")
    print("  " + "".join(f"{h:>15}" for h in header))
    for n in sizes:
        rng = np.random.default_rng(n)
        x, y = rng.standard_normal((2, n), dtype=np.float32)
        out = np.empty_like(x)
        vector_add(x, y, out)
        assert np.array_equal(out, x + y), "vector_add differs from numpy"
        one = with_threads(
            "1", lambda x=x, y=y, out=out: per_call_us(lambda: vector_add(x, y, out))
        )
        default = with_threads(
            None, lambda x=x, y=y, out=out: per_call_us(lambda: vector_add(x, y, out))
        )
        kernel = per_call_us(machine_code(n, x, y, out))
        numpy = per_call_us(lambda x=x, y=y: x + y)
        row = (one, kernel, one - kernel, default, numpy)
        print(f"  {n:>15}" + "".join(f"{v:15.1f}" for v in row))


def in_process_compiles() -> None:
    print("warm compile in one process (the in-memory cache), microseconds per call")
    vector_add.compile(target=ARCH)
    vector_add.compile()
    gpu = per_call_us(lambda: vector_add.compile(target=ARCH))
    cpu = per_call_us(lambda: vector_add.compile())
    print(f"  compile(target={ARCH!r}) {gpu:8.1f}    compile() {cpu:8.1f}")


FRESH = """
import json, sys, time
start = time.perf_counter()
import tilelang
imported = time.perf_counter()
sys.path.insert(0, {examples!r})
from vector_add import vector_add
vector_add.specialize()
built = time.perf_counter()
compiled = vector_add.compile(target={arch!r})
done = time.perf_counter()
print(json.dumps({{"import": imported - start, "frontend": built - imported,
                  "compile": done - built, "cached": compiled.cuda.cached,
                  "nvrtc_loaded": "cuda.bindings.nvrtc" in sys.modules}}))
"""


PARTS = """
import json, sys, time
import tilelang
from tilelang.runtime.cache import DiskCache, cache_key, source_hash
from tilelang.runtime.nvrtc import nvrtc_identity
sys.path.insert(0, {examples!r})
from vector_add import vector_add
spec = vector_add.specialization()
clock = [time.perf_counter()]

def lap():
    clock.append(time.perf_counter())
    return clock[-1] - clock[-2]

source_hash(); sources = lap()
identity = nvrtc_identity(DiskCache()); nvrtc = lap()
text = spec.key_text((("N", 128),)); printing = lap()
blobs = DiskCache().get(cache_key(text, {arch!r}, identity)); entry = lap()
assert blobs is not None
print(json.dumps({{"source hash": sources, "NVRTC identity": nvrtc, "IR text": printing,
                  "entry read": entry}}))
"""


def fresh_process(code: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_cache_hits(processes: int) -> None:
    print(f"warm disk-cache hit in a fresh process, {processes} processes, median ms")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("  (PYTHONDONTWRITEBYTECODE is set: `import` compiles every module from source)")
    code = FRESH.format(examples=str(ROOT / "examples"), arch=ARCH)
    parts_code = PARTS.format(examples=str(ROOT / "examples"), arch=ARCH)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TILELANG_CACHE_DIR": cache}
        cold = fresh_process(code, env)
        runs = [fresh_process(code, env) for _ in range(processes)]
        parts = [fresh_process(parts_code, env) for _ in range(processes)]
    if cold["cached"] or not all(r["cached"] for r in runs):
        sys.exit("a fresh process missed the disk cache: did tilelang's source change meanwhile?")
    median = {
        k: 1e3 * statistics.median(r[k] for r in runs) for k in ("import", "frontend", "compile")
    }
    slowest = 1e3 * max(r["compile"] for r in runs)
    print(
        f"  import tilelang {median['import']:8.1f}   frontend {median['frontend']:6.2f}   "
        f"compile {median['compile']:6.3f} (slowest {slowest:.3f}; cold {1e3 * cold['compile']:.1f})"
        f"   NVRTC loaded on a hit: {any(r['nvrtc_loaded'] for r in runs)}"
    )
    shares = ", ".join(f"{k} {1e3 * statistics.median(p[k] for p in parts):.3f}" for k in parts[0])
    print(f"  the hit's parts, each first in a fresh process (ms): {shares}")


TRITON_KERNEL = """
import triton
import triton.language as tl

@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(out_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + tl.load(y_ptr + offsets, mask=mask), mask=mask)
"""

TRITON_FRESH = """
import json, sys, time, importlib.util
import torch
spec = importlib.util.spec_from_file_location("triton_add", {path!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
x = torch.ones(4096, device="cuda"); out = torch.empty_like(x)
torch.cuda.synchronize()
start = time.perf_counter()
module.add_kernel[(4,)](x, x, out, 4096, BLOCK=1024)
first = time.perf_counter() - start
print(json.dumps({{"first_call": first}}))
"""


def triton_comparison(processes: int) -> None:
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as error:
        print(f"Triton: not measured ({error.name} is not installed)")
        return
    if not torch.cuda.is_available():
        print("Triton: not measured (no GPU)")
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "triton_add.py"
        path.write_text(textwrap.dedent(TRITON_KERNEL))
        env = {**os.environ, "TRITON_CACHE_DIR": str(Path(folder) / "cache")}
        code = TRITON_FRESH.format(path=str(path))
        fresh_process(code, env)  # compiles into the Triton cache
        firsts = [fresh_process(code, env)["first_call"] for _ in range(processes)]
        sys.path.insert(0, folder)
        import triton_add

    x = torch.ones(4096, device="cuda")
    out = torch.empty_like(x)

    def triton_launch() -> None:
        triton_add.add_kernel[(4,)](x, x, out, 4096, BLOCK=1024)

    def tilelang_launch() -> None:
        vector_add(x, x, out)

    triton_us = per_call_us(triton_launch)
    tilelang_us = per_call_us(tilelang_launch)
    torch.cuda.synchronize()
    print("warm GPU launch of vector add, 4096 f32, host microseconds per call (median)")
    print(f"  tilelang {tilelang_us:8.1f}   Triton {triton_us:8.1f}")
    print(
        f"Triton's first call in a fresh process with a warm Triton cache: "
        f"{1e3 * statistics.median(firsts):.3f} ms (median of {processes})"
    )


def paired_us(first: Callable[[], object], second: Callable[[], object], rounds: int = 41):
    """Medians (microseconds per call) of `first`, `second` and their difference, timed
    in alternation round by round in this process's CPU time (`time.process_time`: the
    work the calls do, which other processes' load on a shared machine does not inflate
    the way it does wall time)."""
    first(), second()
    start, calls = time.process_time(), 0
    while time.process_time() - start < 0.01:
        first()
        calls += 1
    per_round = max(1, calls)
    a, b = [], []
    for _ in range(rounds):
        for fn, into in ((first, a), (second, b)):
            start = time.process_time()
            for _ in range(per_round):
                fn()
            into.append(1e6 * (time.process_time() - start) / per_round)
    differences = [x - y for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(differences)


def torch_op_calls(sizes: list[int]) -> None:
    try:
        import torch

        import tilelang.torch as tt
    except ImportError as error:
        print(f"torch op: not measured ({error})")
        return
    op = tt.op(vector_add, "tilelang_bench::vector_add")
    print(f"torch {torch.__version__}: tilelang.torch.op vs the direct call, CPU, 1 thread, us")
    header = ("N", "op(x, y)", "direct numpy", "added", "direct torch", "DLPack", "empty")
    print("  " + "".join(f"{h:>15}" for h in header))
    for n in sizes:
        x, y = torch.randn(n), torch.randn(n)
        out = torch.empty_like(x)
        xn, yn, outn = x.numpy(), y.numpy(), out.numpy()
        assert torch.equal(op(x, y), x + y), "the op differs from torch"

        def measure(x=x, y=y, xn=xn, yn=yn, outn=outn) -> tuple[float, float, float]:
            return paired_us(lambda: op(x, y), lambda: vector_add(xn, yn, outn))

        via_op, direct, added = with_threads("1", measure)

        def dlpack(x=x, y=y, out=out, xn=xn, yn=yn, outn=outn) -> tuple[float, float, float]:
            return paired_us(lambda: vector_add(x, y, out), lambda: vector_add(xn, yn, outn))

        direct_torch, _, through_dlpack = with_threads("1", dlpack)
        empty, _, _ = paired_us(lambda n=n: torch.empty((n,)), lambda: None)
        row = (via_op, direct, added, direct_torch, through_dlpack, empty)
        print(f"  {n:>15}" + "".join(f"{v:15.1f}" for v in row))


class _ArrayInterfaceTensor:
    """A GPU tensor as `__cuda_array_interface__` describes it (cupy's, numba's)."""

    def __init__(self, pointer: int, n: int) -> None:
        self.__cuda_array_interface__ = {
            "data": (pointer, False), "shape": (n,), "typestr": "<f4", "version": 3,
        }  # fmt: skip


class _TorchCudaTensor:
    """What the call path reads of a CUDA torch tensor, over a CPU tensor's memory (its
    type's module is torch; its pointer, shape, strides and dtype come from the CPU
    tensor's own methods, as a CUDA tensor's would)."""

    __module__ = "torch"
    is_cuda = True

    def __init__(self, base) -> None:
        import torch

        self.base, self.dtype, self.shape = base, base.dtype, base.shape
        self.device = torch.device("cuda", 0)
        self.element_size, self.stride, self.data_ptr = (
            base.element_size,
            base.stride,
            base.data_ptr,
        )

    def __dlpack__(self, **kwargs):  # what makes it a tensor of another library
        raise AssertionError("read off the tensor, never through a capsule")

    def __dlpack_device__(self):
        raise AssertionError("read off the tensor, never through DLPack")


def stub_driver(arch: str):
    """The CUDA driver stubbed for the rest of the process: `cuLaunchKernel` a no-op, no
    module loaded, the device `arch`, every launch on stream 0 (torch's stream query
    needs CUDA: not included). Returns the stub."""
    from tilelang.runtime import gpu

    class Driver:
        class CUresult:
            CUDA_SUCCESS = 0

        def cuLaunchKernel(self, *args):
            return (0,)

    driver = Driver()
    gpu.driver, gpu._function = (lambda: driver), (lambda *args: object())
    gpu.device_arch = lambda: arch
    gpu.current_stream = lambda tensors: 0
    return driver


def gpu_call_path() -> None:
    """The GPU call path's host work with the CUDA driver stubbed: everything
    `vector_add(x, y, out)` does on device tensors up to `cuLaunchKernel`, whose own
    cost (the GPU check measures it beside ours) is a no-op here."""
    driver = stub_driver(ARCH)
    n = 1024
    interface = [_ArrayInterfaceTensor(0x7F0000000000 + i * 0x10000, n) for i in range(3)]
    rows = [("__cuda_array_interface__ tensors", interface)]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        rows.append(
            ("torch CUDA tensors (stand-ins)", [_TorchCudaTensor(torch.empty(n)) for _ in range(3)])
        )
    bare = lambda: driver.cuLaunchKernel(None, 1, 1, 1, 128, 1, 1, 0, 0, 0, 0)  # noqa: E731
    print(f"GPU call path on the host ({ARCH}, driver stubbed), vector_add n={n}, us per call")
    for what, (x, y, out) in rows:
        call, stub, added = paired_us(lambda x=x, y=y, out=out: vector_add(x, y, out), bare)
        print(
            f"  {what:>34}: call {call:.1f}, stubbed cuLaunchKernel {stub:.2f}, added {added:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 65536, 1 << 20])
    parser.add_argument("--processes", type=int, default=9)
    parser.add_argument("--torch-only", action="store_true", help="only the torch op part")
    parser.add_argument(
        "--gpu-path-only", action="store_true", help="only the GPU call path, driver stubbed"
    )
    args = parser.parse_args()
    print(f"tilelang {tl.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    if args.torch_only:
        torch_op_calls(args.sizes)
        return
    if args.gpu_path_only:
        gpu_call_path()
        return
    cpu_calls(args.sizes)
    try:
        vector_add.compile(target=ARCH)
    except NvrtcUnavailableError as error:
        print(f"compiles: not measured (no NVRTC: {error})")
    else:
        in_process_compiles()
        disk_cache_hits(args.processes)
    torch_op_calls(args.sizes)
    triton_comparison(args.processes)
    gpu_call_path()  # last: it stubs the driver for the rest of the process


if __name__ == "__main__":
    main()
