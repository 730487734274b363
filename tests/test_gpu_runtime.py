"""GPU targets: compile for an architecture without a GPU, the disk cache in front of it,
device-argument checks, parameter packing, and (marked `gpu`) runs on a real device."""

import ctypes
import gc
import sys

import numpy as np
import pytest
from conftest import load_example

import tilelang as tl
from tilelang import dtypes, pipeline
from tilelang.codegen.cuda import kernel_params
from tilelang.kernels import common
from tilelang.runtime import gpu
from tilelang.runtime.arguments import ArgumentBinder, ranges_overlap


def gpu_available() -> bool:
    try:
        gpu.driver()
    except gpu.GpuUnavailableError:
        return False
    return True


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_compile_for_a_gpu_without_one(cache_dir):
    compiled = load_example("matmul").matmul.compile(target="sm_90a")
    assert compiled.target == "sm_90a"
    assert 'extern "C" __global__' in compiled.source
    assert ".target sm_90a" in compiled.ptx
    assert compiled.cubin[:4] == b"\x7fELF"
    assert compiled.resources.spills == 0 and 0 < compiled.resources.registers <= 255
    with pytest.raises(ValueError, match="exists for a GPU target"):
        _ = load_example("matmul").matmul.compile().ptx


def test_a_warm_compile_skips_every_pass(cache_dir, monkeypatch):
    source = load_example("vector_add")
    # A kernel object of its own: the example's may hold other tests' builds in memory.
    first = tl.kernel(source.vector_add.fn, warps=source.vector_add.warps).compile(target="sm_80")
    assert not first.cuda.cached

    def no_passes(*args, **kwargs):
        raise AssertionError("a pass ran on a cache hit")

    monkeypatch.setattr(pipeline, "lower", no_passes)
    monkeypatch.setattr(sys.modules["tilelang.kernel"], "run_pipeline", no_passes)
    fresh = tl.kernel(source.vector_add.fn, warps=source.vector_add.warps)  # no memory cache
    warm = fresh.compile(target="sm_80")
    assert warm.cuda.cached and warm.cubin == first.cubin and warm.source == first.source


def _read_back(launcher, addresses: int) -> list[bytes]:
    """Every parameter's bytes, read as the driver reads them: through the pointer array."""
    params = kernel_params(launcher.build.thread)
    pointers = (ctypes.c_void_p * len(params)).from_address(addresses)
    return [ctypes.string_at(pointers[i], p.size) for i, p in enumerate(params)]


def test_parameters_are_packed_in_the_kernels_abi():
    compiled = load_example("quant_matmul").quant_matmul.compile(target="sm_80")
    thread = compiled.thread
    pointers = {p.name: 0x1000 * (i + 1) for i, p in enumerate(thread.params) if p.is_tensor}
    scalars = {p.name: 7 + i for i, p in enumerate(thread.params) if not p.is_tensor}
    launcher = gpu.Launcher(compiled.cuda)
    held = _read_back(launcher, launcher.pack(pointers, scalars))
    assert len(held) == len(kernel_params(thread)) == len(thread.params)
    for param, raw in zip(kernel_params(thread), held, strict=True):
        expected = pointers[param.name] if param.is_tensor else scalars[param.name]
        assert int.from_bytes(raw, "little") == expected and len(raw) == param.size
    assert gpu.scalar_bytes(1.5, tl.f16).tobytes() == np.float16(1.5).tobytes()


SCALAR_VALUES = {
    "int": [0, 1, -1, 5, -128, 127, 255, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), 2**64 - 1],
    "float": [0.0, -0.0, 1.5, -2.25, 1e-40, 3.4028235e38, 3.40282356e38, 1e39, -1e39,
              float("inf"), float("-inf"), float("nan"), 1.0000000596046448, 65504.0, 1e5,
              2.0**-24, 1e300],
}  # fmt: skip


@pytest.mark.parametrize(
    "name", ["u1", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "f16", "bf16", "f32",
             "f64", "f8e4m3", "f8e5m2", "e8m0"],
)  # fmt: skip
def test_a_scalars_bits_are_what_its_dtype_encodes(name):
    """The launcher's scalar encoding (Python's struct where it can) gives the bytes the
    dtype's own encoder gives, at the edges: NaN, infinities, overflow, rounding, sign."""
    dtype = dtypes.dtype(name)
    bits = gpu.scalar_bits(dtype)
    if dtype.is_int or dtype == tl.u1:
        values = [v for v in SCALAR_VALUES["int"] if dtype.min <= v <= dtype.max]
    else:
        values = SCALAR_VALUES["float"]
    for value in values:
        expected = gpu.scalar_bytes(value, dtype).tobytes()
        assert bits(value).to_bytes(len(expected), "little") == expected, (name, value)


def test_scalars_are_packed_at_their_alignment_between_pointers():
    @tl.kernel
    def mixed(out: tl.Tensor[tl.f32, 4], a: tl.u8, b: tl.f64, c: tl.i16, d: tl.f16):
        total = a.to(tl.f32) + b.to(tl.f32) + c.to(tl.f32) + d.to(tl.f32)
        tl.store(out, [0], tl.zeros([4], tl.f32) + total)

    compiled = mixed.compile(target="sm_80")
    launcher = gpu.Launcher(compiled.cuda)
    names = [p.name for p in kernel_params(compiled.thread)]
    values = {"out": 0x7F0000001230, "a": 200, "b": -2.5, "c": -3, "d": 0.333}
    held = dict(zip(names, _read_back(launcher, launcher.pack(values, values)), strict=True))
    assert held["out"] == (0x7F0000001230).to_bytes(8, "little")
    assert held["a"] == bytes([200]) and held["b"] == np.float64(-2.5).tobytes()
    assert held["c"] == np.int16(-3).tobytes() and held["d"] == np.float16(0.333).tobytes()
    params = (ctypes.c_void_p * len(names)).from_address(launcher.pack(values, values))
    for i, param in enumerate(kernel_params(compiled.thread)):
        assert params[i] % param.size == 0  # each value at its own alignment


class FakeDeviceArray:
    """Something that says it lives on a GPU (what torch and cupy tensors say)."""

    def __init__(self, shape, typestr, pointer=0x7F0000000000):
        self.__cuda_array_interface__ = {
            "data": (pointer, False),
            "shape": shape,
            "typestr": typestr,
            "version": 3,
        }


def test_device_arguments_are_checked_before_any_driver_call():
    vector_add = load_example("vector_add").vector_add
    x = FakeDeviceArray((100,), "<f4")
    with pytest.raises(
        TypeError, match="parameter 'y' expects a tensor of f32, got a device array of <f2"
    ):
        vector_add(x, FakeDeviceArray((100,), "<f2"), x)
    with pytest.raises(TypeError, match="this one is a ndarray"):
        vector_add(x, np.zeros(100, np.float32), x)
    with pytest.raises(ValueError, match="16-byte boundary"):
        vector_add(x, FakeDeviceArray((100,), "<f4", pointer=0x7F0000000004), x)


@pytest.mark.skipif(gpu_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_the_call_says_so():
    vector_add = load_example("vector_add").vector_add
    x, y = FakeDeviceArray((100,), "<f4"), FakeDeviceArray((100,), "<f4", 0x7F0000001000)
    out = FakeDeviceArray((100,), "<f4", 0x7F0000002000)
    with pytest.raises(gpu.GpuUnavailableError, match=r"driver|GPU"):
        vector_add(x, y, out)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("weight_type", [tl.u4, tl.i4, tl.u3, tl.u8, tl.f4e2m1, tl.f8e4m3])
def test_quant_matmul_on_the_gpu_equals_the_cpu_backend(weight_type):
    qm = load_example("quant_matmul")
    x, w, s = qm.make_inputs(16, 512, 192, weight_type, 128)
    w = qm.pack_weights(w)
    y_cpu = qm.quant_matmul(x, w, s, np.zeros((16, 192), np.float16), WT=weight_type)
    y = gpu.DeviceBuffer(np.zeros((16, 192), np.float16))
    qm.quant_matmul(
        gpu.DeviceBuffer(x), gpu.DeviceBuffer(w), gpu.DeviceBuffer(s), y, WT=weight_type
    )
    y_gpu = y.numpy()
    scale = np.abs(y_cpu.astype(np.float32)).max()
    assert (
        np.abs(y_gpu.astype(np.float32) - y_cpu.astype(np.float32)).max()
        <= qm.tolerance(512) * scale
    )


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device")
def test_integer_examples_on_the_gpu_are_bit_exact():
    row_sum = load_example("row_sum").row_sum
    x = np.random.default_rng(0).integers(-1000, 1000, (50, 333)).astype(np.int32)
    y = gpu.DeviceBuffer(np.zeros(50, np.int32))
    row_sum(gpu.DeviceBuffer(x), y, T=tl.i32)
    assert np.array_equal(y.numpy(), x.sum(axis=1))
    vector_add = load_example("vector_add").vector_add
    a = np.random.default_rng(1).standard_normal(10000).astype(np.float32)
    out = gpu.DeviceBuffer(np.zeros(10000, np.float32))
    vector_add(gpu.DeviceBuffer(a), gpu.DeviceBuffer(a), out)
    assert np.array_equal(out.numpy(), a + a)


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ((0x1000, 400), (0x1000, 400), True),  # the same range
        ((0x1000, 400), (0x1000 + 399, 1), True),  # the last byte
        ((0x1000, 400), (0x1000 + 400, 400), False),  # adjacent
        ((0x2000, 16), (0x1000, 0x1001), True),  # b ends inside a
        ((0x2000, 16), (0x1000, 0x1000), False),  # b ends where a starts
        ((0x1000, 0), (0x1000, 400), False),  # an empty range shares nothing
    ],
)
def test_pointer_ranges_overlap_when_they_share_a_byte(a, b, overlap):
    assert ranges_overlap(*a, *b) is overlap
    assert ranges_overlap(*b, *a) is overlap


def test_device_arrays_overlapping_an_output_are_an_error_before_any_driver_call():
    binder = ArgumentBinder(load_example("vector_add").vector_add.specialize())
    x, y = FakeDeviceArray((100,), "<f4"), FakeDeviceArray((100,), "<f4", 0x7F0000001000)
    with pytest.raises(ValueError, match="parameters 'x' and 'out' are the same array"):
        binder.bind_device({"x": x, "y": y, "out": x})
    inside = FakeDeviceArray((50,), "<f4", 0x7F0000001000 + 192)  # y's bytes 192..391
    with pytest.raises(ValueError, match="parameters 'y' and 'out' overlap in memory"):
        binder.bind_device({"x": x, "y": y, "out": FakeDeviceArray((100,), "<f4", 0x7F00000010C0)})
    with pytest.raises(ValueError, match="dimension 0 should be N = 100"):
        binder.bind_device({"x": x, "y": y, "out": inside})  # sizes are checked first
    after = FakeDeviceArray((100,), "<f4", 0x7F0000001000 + 400)  # right after y: fine
    bound = binder.bind_device({"x": x, "y": y, "out": after})
    assert bound.pointers == {"x": 0x7F0000000000, "y": 0x7F0000001000, "out": 0x7F0000001190}


@tl.kernel(warps=1)
def stepped(out: tl.Tensor[tl.i32, "N"], step: tl.i32):
    count = 0
    for _ in tl.range(0, N, step):
        count = count + 1
    tl.store(out, [0], tl.full([1], count, tl.i32))


def test_a_launch_check_fails_before_the_kernel_is_loaded(cache_dir, monkeypatch):
    compiled = stepped.compile(target="sm_80", assume=None)
    assert compiled.thread.checks  # the step must not be zero: checked on the host

    def no_driver():
        raise AssertionError("the driver was used")

    monkeypatch.setattr(gpu, "driver", no_driver)
    pointers = {"out": 0x7F0000000000}
    with pytest.raises(ValueError, match=r"test_gpu_runtime\.py:\d+:\d+: the loop step is 0"):
        gpu.launch(compiled.cuda, pointers, {"step": 0, "N": 64}, (1,), 0)
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")  # the call path, no GPU needed
    with pytest.raises(ValueError, match="the loop step is 0"):
        stepped(FakeDeviceArray((64,), "<i4"), 0)


class FakeDriver:
    """The CUDA driver calls `DeviceBuffer` makes, over host memory: device memory is a
    dict of bytearrays by pointer, and every call is recorded."""

    class CUresult:
        CUDA_SUCCESS = 0

    def __init__(self):
        self.memory: dict[int, bytearray] = {}
        self.calls: list[tuple[str, int]] = []

    def cuMemAlloc(self, size):
        pointer = 0x7F0000000000 + 0x100000 * len(self.memory)
        self.memory[pointer] = bytearray(size)
        self.calls.append(("cuMemAlloc", size))
        return 0, pointer

    def cuMemcpyHtoD(self, pointer, source, size):
        self.memory[pointer][:size] = (ctypes.c_ubyte * size).from_address(source)
        self.calls.append(("cuMemcpyHtoD", size))
        return (0,)

    def cuMemcpyDtoH(self, target, pointer, size):
        ctypes.memmove(target, bytes(self.memory[pointer][:size]), size)
        self.calls.append(("cuMemcpyDtoH", size))
        return (0,)

    def cuMemFree(self, pointer):
        return (0,)


@pytest.fixture
def fake_driver(monkeypatch):
    fake = FakeDriver()
    monkeypatch.setattr(gpu, "driver", lambda: fake)
    monkeypatch.setattr(gpu, "_context", lambda: None)
    yield fake
    gc.collect()  # buffers made in the test are freed while the fake is in place


def test_an_output_buffer_is_allocated_without_a_copy(fake_driver):
    out = gpu.DeviceBuffer.empty((3, 5), np.float16)
    assert fake_driver.calls == [("cuMemAlloc", 30)]
    interface = out.__cuda_array_interface__
    assert (interface["shape"], interface["typestr"]) == ((3, 5), "<f2")
    assert out.numpy().shape == (3, 5) and out.numpy().dtype == np.float16
    # What the library kernels allocate for their outputs on the GPU.
    made = common.empty(out, (2, 4), tl.f32)
    assert fake_driver.calls[-1] == ("cuMemAlloc", 32)
    assert made.__cuda_array_interface__["typestr"] == "<f4"


def test_a_buffer_made_from_a_host_array_holds_its_values(fake_driver):
    host = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = gpu.DeviceBuffer(host[:, ::2])  # copied contiguous
    assert fake_driver.calls == [("cuMemAlloc", 24), ("cuMemcpyHtoD", 24)]
    np.testing.assert_array_equal(buffer.numpy(), host[:, ::2])
    codes = dtypes.pack_codes(np.arange(10) % 8, tl.u3)
    packed = gpu.DeviceBuffer(codes)
    assert packed.__cuda_array_interface__["shape"] == (codes.data.nbytes,)
    back = packed.numpy()
    assert back.shape == codes.shape and back.dtype == tl.u3
    np.testing.assert_array_equal(dtypes.unpack_bits(back.data, 3, 10), np.arange(10) % 8)


@tl.kernel(warps=1)
def _copy_bf16(x: tl.Tensor[tl.bf16, "N"], y: tl.Tensor[tl.bf16, "N"]):
    tl.store(y, [0], tl.load(x, [0], [64]))


@tl.kernel(warps=1)
def _copy_f16(x: tl.Tensor[tl.f16, "N"], y: tl.Tensor[tl.f16, "N"]):
    tl.store(y, [0], tl.load(x, [0], [64]))


def test_a_buffer_of_bf16_values_is_a_bf16_tensor(fake_driver, monkeypatch):
    """numpy has no bf16: a buffer made from an ml_dtypes bf16 array speaks typestr
    "<V2", so its type comes from the array it was made from, not from the interface."""
    import ml_dtypes

    launched = []
    monkeypatch.setattr(gpu, "device_arch", lambda: "sm_80")
    monkeypatch.setattr(gpu, "launch", lambda build, pointers, *rest: launched.append(pointers))
    host = np.arange(64, dtype=np.float32).astype(ml_dtypes.bfloat16)
    x, y = gpu.DeviceBuffer(host), gpu.DeviceBuffer.empty((64,), ml_dtypes.bfloat16)
    assert x.__cuda_array_interface__["typestr"] == "<V2"
    _copy_bf16(x, y)
    assert launched == [{"x": x.pointer, "y": y.pointer}]
    with pytest.raises(TypeError, match="expects a tensor of f16, got a device array of bf16"):
        _copy_f16(x, y)
