"""What each call path loads and repeats: a warm disk-cache hit in a fresh process loads
neither NVRTC nor LLVM and runs no pass; the GPU launch path never loads the CPU
backend; a second compile in one process does not touch the disk; a warm CPU call does
not emit LLVM again but still checks every argument."""

from pathlib import Path

import numpy as np
import pytest
from conftest import load_example, run_python

import tilelang as tl
from tilelang.runtime import cache as cache_module
from tilelang.runtime import cpu

ROOT = Path(__file__).resolve().parent.parent


WARM_HIT = """
    import json
    import tilelang
    from vector_add import vector_add

    def no_pass(*args, **kwargs):
        raise AssertionError("a pass ran on a warm disk-cache hit")

    if FORBID_PASSES:
        # the module: `tilelang.kernel` is the decorator the package exports
        kernel_module = sys.modules["tilelang.kernel"]
        kernel_module.run_pipeline = no_pass
        kernel_module.lower_function = no_pass
    compiled = vector_add.compile(target="sm_80")
    print(json.dumps({
        "cached": compiled.cuda.cached,
        "cubin": compiled.cubin[:4].hex(),
        "loaded": sorted(m for m in ("cuda.bindings.nvrtc", "llvmlite",
                                     "tilelang.runtime.cpu") if m in sys.modules),
    }))
"""


def test_a_warm_disk_hit_in_a_fresh_process_loads_no_compiler(tmp_path):
    cold = run_python(WARM_HIT, tmp_path, FORBID_PASSES=False)
    assert not cold["cached"]
    warm = run_python(WARM_HIT, tmp_path, FORBID_PASSES=True)
    assert warm == {"cached": True, "cubin": b"\x7fELF".hex(), "loaded": []}


GPU_CALL = """
    import json
    import numpy as np
    from tilelang.runtime import gpu
    from vector_add import vector_add

    class FakeDeviceArray:
        def __init__(self, pointer):
            self.__cuda_array_interface__ = {
                "data": (pointer, False), "shape": (5000,), "typestr": "<f4", "version": 3,
            }

    launches = []
    gpu.device_arch = lambda: "sm_80"
    gpu.current_stream = lambda tensors: 7
    gpu.launch = lambda build, pointers, scalars, grid, stream: launches.append(
        [build.symbol, pointers, scalars, list(grid), stream])
    x, y, out = (FakeDeviceArray(0x10000 * (i + 1)) for i in range(3))
    assert vector_add(x, y, out) is out
    vector_add(x, y, out)
    print(json.dumps({
        "launches": launches,
        "loaded": sorted(m for m in ("llvmlite", "tilelang.codegen.llvm",
                                     "tilelang.runtime.cpu") if m in sys.modules),
    }))
"""


def test_the_gpu_call_path_never_loads_the_cpu_backend(tmp_path):
    result = run_python(GPU_CALL, tmp_path)
    pointers = {"x": 0x10000, "y": 0x20000, "out": 0x30000}
    launch = ["vector_add", pointers, {"N": 5000}, [5], 7]  # cdiv(5000, 1024) blocks
    assert result == {"launches": [launch, launch], "loaded": []}


def test_a_second_compile_in_a_process_does_not_touch_the_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    kernel = tl.kernel(load_example("vector_add").vector_add.fn)
    first = kernel.compile(target="sm_80")

    def no_disk(*args, **kwargs):
        raise AssertionError("the disk cache was used again")

    for name in ("get", "put", "discard"):
        monkeypatch.setattr(cache_module.DiskCache, name, no_disk)
    monkeypatch.setattr(cache_module, "source_hash", no_disk)
    assert kernel.compile(target="sm_80") is first
    assert kernel.compile(target=tl.target.target("sm_80"), assume="all") is first


def test_a_warm_cpu_call_emits_no_llvm_and_still_checks_arguments(monkeypatch):
    kernel = tl.kernel(load_example("vector_add").vector_add.fn)
    x = np.arange(3000, dtype=np.float32)
    assert np.array_equal(kernel(x, x + 1, np.zeros_like(x)), 2 * x + 1)

    def no_llvm(*args, **kwargs):
        raise AssertionError("LLVM IR was emitted or compiled again")

    monkeypatch.setattr(cpu, "lower_to_llvm", no_llvm)
    monkeypatch.setattr(cpu, "compile_llvm_ir", no_llvm)
    y = np.full(3000, 0.5, np.float32)
    assert np.array_equal(kernel(x, y, np.zeros_like(x)), x + y)
    with pytest.raises(TypeError, match="parameter 'y' expects a tensor of f32, got a numpy"):
        kernel(x, y.astype(np.float64), np.zeros_like(x))
    with pytest.raises(ValueError, match="dimension 0 should be N = 3000"):
        kernel(x, y[:10], np.zeros_like(x))
    with pytest.raises(ValueError, match="parameters 'x' and 'out' are the same array"):
        kernel(x, y, x)
    read_only = np.zeros_like(x)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="is written by the kernel, but the array given is read"):
        kernel(x, y, read_only)
