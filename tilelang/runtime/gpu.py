"""Running compiled kernels on an NVIDIA GPU through the CUDA driver (`cuda.bindings`).

This module owns the device side of a call:

* `driver()` loads `cuda.bindings.driver` and initializes it once; a missing driver or
  GPU is a `GpuUnavailableError` that says which, before anything else happens;
* `device_array(obj)` reads a device tensor through `__cuda_array_interface__` (torch,
  cupy, numba) or tilelang's own `DeviceBuffer`: pointer, shape, dtype, strides;
* `launch(build, tensors, scalars, grid, stream)` checks the thread IR's launch
  conditions (`ThreadFunction.checks`) before any driver call, loads the cubin once per
  context, raises the dynamic shared memory limit when needed, packs the parameters in
  the emitted kernel's ABI (`tilelang.codegen.cuda.kernel_params`) and launches on
  `stream` — by default the caller's current stream (torch's or cupy's) when one of the
  tensors comes from there;
* every driver call's result is checked and turned into `GpuError`, naming the call,
  the error's name and the driver's description.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.codegen.cuda import kernel_params
from tilelang.dtypes import DType
from tilelang.runtime import dlpack
from tilelang.runtime.host_expr import check_launch

DYNAMIC_SHARED_DEFAULT = 48 * 1024


class GpuUnavailableError(RuntimeError):
    """No usable CUDA driver or device."""


class GpuError(RuntimeError):
    """A CUDA driver call failed."""


@functools.cache
def driver():
    try:
        # Deferred: cuda-python is heavy and optional until something runs on a GPU.
        from cuda.bindings import driver as cu
    except ImportError as error:
        raise GpuUnavailableError(
            f"cuda-python's driver bindings cannot be imported ({error}); "
            "install tilelang with its dependencies (pip install -e .)"
        ) from None
    try:
        (result,) = cu.cuInit(0)
    except Exception as error:  # the bindings raise when libcuda itself is missing
        raise GpuUnavailableError(f"no CUDA driver (libcuda) on this machine: {error}") from None
    if result != cu.CUresult.CUDA_SUCCESS:
        raise GpuUnavailableError(f"the CUDA driver did not initialize: {_describe(cu, result)}")
    result, count = cu.cuDeviceGetCount()
    if result != cu.CUresult.CUDA_SUCCESS or count == 0:
        raise GpuUnavailableError("the CUDA driver found no GPU")
    return cu


def gpu_available() -> bool:
    """Whether a CUDA driver and a GPU are there to run kernels on."""
    try:
        driver()
    except GpuUnavailableError:
        return False
    return True


def _describe(cu, result) -> str:
    _, name = cu.cuGetErrorName(result)
    _, text = cu.cuGetErrorString(result)
    decode = lambda b: b.decode() if isinstance(b, bytes) else str(b)  # noqa: E731
    return f"{decode(name)}: {decode(text)}"


def check(call: str, outcome: tuple | Any) -> Any:
    """The values a driver call returned after its result code, or `GpuError`."""
    cu = driver()
    result, *values = outcome if isinstance(outcome, tuple) else (outcome,)
    if result != cu.CUresult.CUDA_SUCCESS:
        raise GpuError(f"{call} failed: {_describe(cu, result)}")
    return values[0] if len(values) == 1 else tuple(values)


# --------------------------------------------------------------------------- device tensors


@dataclass(frozen=True)
class DeviceArray:
    """A tensor in GPU memory as the launcher sees it."""

    pointer: int
    shape: tuple[int, ...]
    typestr: str  # numpy's array-interface type string, e.g. "<f2"
    strides: tuple[int, ...] | None  # bytes; None = C-contiguous
    stream: int | None  # the producer's stream, when it says

    @property
    def nbytes(self) -> int:
        """The bytes from `pointer` a C-contiguous array of this shape covers."""
        return math.prod(self.shape) * np.dtype(self.typestr).itemsize


def is_device_array(obj: object) -> bool:
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except (KeyError, TypeError):  # a GPU tensor whose interface has no type string
        return True  # for its dtype (torch's f8): `dlpack.imported` reads it


def device_array(obj: object) -> DeviceArray:
    interface = obj.__cuda_array_interface__
    pointer, _ = interface["data"]
    strides = interface.get("strides")
    return DeviceArray(
        pointer=int(pointer),
        shape=tuple(int(s) for s in interface["shape"]),
        typestr=interface["typestr"],
        strides=tuple(int(s) for s in strides) if strides is not None else None,
        stream=interface.get("stream"),
    )


def is_contiguous(array: DeviceArray) -> bool:
    if array.strides is None:
        return True
    expected = np.dtype(array.typestr).itemsize
    for size, stride in zip(reversed(array.shape), reversed(array.strides), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


class DeviceBuffer:
    """tilelang's own GPU buffer: `DeviceBuffer(host_array)` copies a numpy array (or a
    `PackedArray`'s bytes) to the device; `DeviceBuffer.empty(shape, dtype)` allocates
    one without a copy (an output); `.numpy()` copies it back."""

    def __init__(self, host: Any) -> None:
        cu = driver()
        data = host.data if isinstance(host, dtypes.PackedArray) else np.ascontiguousarray(host)
        # a PackedArray's bytes are uint8 ("|u1"), its tilelang dtype `self.dtype`
        self._allocate(data.nbytes, host.shape, data.dtype)
        self.dtype = host.dtype if isinstance(host, dtypes.PackedArray) else None
        check("cuMemcpyHtoD", cu.cuMemcpyHtoD(self.pointer, data.ctypes.data, self.nbytes))

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any) -> DeviceBuffer:
        """An uninitialized buffer of `shape` and numpy `dtype`: allocated on the device,
        nothing copied (what an output needs)."""
        buffer = cls.__new__(cls)
        host_dtype = np.dtype(dtype)
        buffer._allocate(math.prod(shape) * host_dtype.itemsize, shape, host_dtype)
        buffer.dtype = None
        return buffer

    def _allocate(self, nbytes: int, shape: tuple[int, ...], host_dtype: np.dtype) -> None:
        cu = driver()
        _context()
        self.nbytes = int(nbytes)
        self.shape = tuple(shape)
        self.host_dtype = host_dtype
        self.pointer = int(check("cuMemAlloc", cu.cuMemAlloc(max(self.nbytes, 1))))

    @property
    def __cuda_array_interface__(self) -> dict:
        shape = (self.nbytes,) if self.dtype is not None else self.shape
        return {
            "data": (self.pointer, False),
            "shape": shape,
            "typestr": self.host_dtype.str,
            "version": 3,
        }

    def numpy(self) -> Any:
        """The buffer's contents copied back to the host, in the host object's form."""
        cu = driver()
        out = np.empty(self.nbytes if self.dtype is not None else self.shape, self.host_dtype)
        check("cuMemcpyDtoH", cu.cuMemcpyDtoH(out.ctypes.data, self.pointer, self.nbytes))
        if self.dtype is not None:
            return dtypes.PackedArray(out, self.dtype, self.shape)
        return out

    def __del__(self) -> None:
        if getattr(self, "pointer", None) and "cuda" in sys.modules:
            cu = driver()
            cu.cuMemFree(self.pointer)


# --------------------------------------------------------------------------- launching


@functools.cache
def _context() -> object:
    """The primary context of device 0 made current (shared with torch and cupy)."""
    cu = driver()
    device = check("cuDeviceGet", cu.cuDeviceGet(0))
    context = check("cuDevicePrimaryCtxRetain", cu.cuDevicePrimaryCtxRetain(device))
    check("cuCtxSetCurrent", cu.cuCtxSetCurrent(context))
    return context


@functools.cache
def device_arch() -> str:
    """The architecture of device 0, e.g. "sm_90a" for an H100 (a-features included);
    asked of the driver once per process."""
    cu = driver()
    device = check("cuDeviceGet", cu.cuDeviceGet(0))
    attribute = cu.CUdevice_attribute
    major = check(
        "cuDeviceGetAttribute",
        cu.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device),
    )
    minor = check(
        "cuDeviceGetAttribute",
        cu.cuDeviceGetAttribute(attribute.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device),
    )
    return f"sm_{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")


_FUNCTIONS: dict[tuple[bytes, str], object] = {}


def _function(cubin: bytes, symbol: str, shared_bytes: int) -> object:
    key = (cubin, symbol)
    if key not in _FUNCTIONS:
        cu = driver()
        _context()
        module = check("cuModuleLoadData", cu.cuModuleLoadData(cubin))
        function = check("cuModuleGetFunction", cu.cuModuleGetFunction(module, symbol.encode()))
        if shared_bytes > DYNAMIC_SHARED_DEFAULT:
            attribute = cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            check("cuFuncSetAttribute", cu.cuFuncSetAttribute(function, attribute, shared_bytes))
        _FUNCTIONS[key] = function
    return _FUNCTIONS[key]


_SCALAR_STORAGE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def scalar_bytes(value: int | float, dtype: DType) -> np.ndarray:
    """One scalar parameter as the kernel reads it (f16/bf16 as their 16-bit code)."""
    if dtype == dtypes.u1:
        return np.array([1 if value else 0], np.uint8)
    code = dtype.encode(np.asarray([value]))
    return code.astype(_SCALAR_STORAGE[dtype.bits // 8])


def pack_parameters(thread, pointers: dict[str, int], scalars: dict[str, int | float]) -> tuple:
    """(pointer array for cuLaunchKernel's kernelParams, the storage it points into)."""
    storage = []
    for param in kernel_params(thread):
        if param.is_tensor:
            storage.append(np.array([pointers[param.name]], np.uint64))
        else:
            storage.append(scalar_bytes(scalars[param.name], param.dtype))
    addresses = np.array([s.ctypes.data for s in storage], np.uint64)
    return addresses, storage


class ReshapedView:
    """A contiguous device tensor under another shape (for device arrays without
    `reshape`, such as `tilelang.DeviceBuffer`); it keeps its base alive."""

    def __init__(self, base: Any, shape: tuple[int, ...]) -> None:
        self.base = base
        self.shape = shape
        self._interface = {**base.__cuda_array_interface__, "shape": shape, "strides": None}

    @property
    def __cuda_array_interface__(self) -> dict:
        return self._interface


def contiguous_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """The byte strides of a C-contiguous array of `shape`."""
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def reshaped(x: Any, shape: tuple[int, ...], name: str = "the tensor") -> Any:
    """x (contiguous) under `shape`: numpy, torch and cupy reshape; other device tensors
    get a view of the same memory."""
    if hasattr(x, "reshape"):
        return x.reshape(shape)
    if is_device_array(x):
        if not is_contiguous(device_array(x)):
            raise ValueError(f"{name} must be C-contiguous on the GPU")
        if isinstance(x, dlpack.DeviceView):  # keeps the dtype its interface cannot name
            return dataclasses.replace(
                x, shape=tuple(shape), strides=contiguous_strides(shape, x.dtype.storage.itemsize)
            )
        return ReshapedView(x, tuple(shape))
    raise TypeError(f"{name} must be a numpy array or a device tensor, got {type(x).__name__}")


def is_torch_tensor(value: object) -> bool:
    """Whether `value` is a torch tensor (checked by its type's module: torch is an
    optional dependency, imported only where one of its tensors is already at hand)."""
    return type(value).__module__.split(".")[0] == "torch"


def current_stream(values: list[object]) -> int:
    """The stream to launch on: torch's or cupy's current stream when a tensor comes
    from there, else the legacy default stream (0)."""
    for value in values:
        module = type(value).__module__.split(".")[0]
        # Deferred: torch and cupy are optional; one is loaded already if its tensor is here.
        if is_torch_tensor(value):
            import torch

            return int(torch.cuda.current_stream(value.device).cuda_stream)
        if module == "cupy":
            import cupy

            return int(cupy.cuda.get_current_stream().ptr)
    return 0


def launch(
    build, pointers: dict[str, int], scalars: dict[str, int | float], grid, stream: int
) -> None:
    thread = build.thread
    check_launch(thread.checks, scalars)  # before any driver call
    cu = driver()
    function = _function(build.cubin, build.symbol, thread.shared_bytes)
    addresses, storage = pack_parameters(thread, pointers, scalars)
    gx, gy, gz = (*grid, 1, 1, 1)[:3]
    check(
        "cuLaunchKernel",
        cu.cuLaunchKernel(
            function,
            gx,
            gy,
            gz,
            thread.threads,
            1,
            1,
            thread.shared_bytes,
            stream,
            addresses.ctypes.data,
            0,
        ),
    )
    del storage  # the driver copied the parameters during the call
