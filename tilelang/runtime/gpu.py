"""Running compiled kernels on an NVIDIA GPU through the CUDA driver (`cuda.bindings`).

This module owns the device side of a call:

* `driver()` loads `cuda.bindings.driver` and initializes it once; a missing driver or
  GPU is a `GpuUnavailableError` that says which, before anything else happens;
* `device_array(obj)` reads a device tensor through `__cuda_array_interface__` (torch,
  cupy, numba) or tilelang's own `DeviceBuffer`: pointer, shape, dtype, strides;
* `launch(build, pointers, scalars, grid, stream)` launches through the build's
  `Launcher`, which works out once what does not change between calls (the grid and
  the launch checks as Python functions, the parameters' `struct` in the emitted
  kernel's ABI, `tilelang.codegen.cuda.kernel_params`) so that a call checks the
  thread IR's launch conditions (`ThreadFunction.checks`) and the grid's limits
  (`tilelang.runtime.grid_limits`) before any driver call, packs
  the values and launches on `stream` — by default the caller's current stream
  (torch's or cupy's) when one of the tensors comes from there. The cubin is loaded
  once per context, the dynamic shared memory limit raised when needed;
* every driver call's result is checked and turned into `GpuError`, naming the call,
  the error's name and the driver's description.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import math
import struct
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tilelang import dtypes
from tilelang.codegen.cuda import kernel_params
from tilelang.dtypes import DType
from tilelang.runtime import device_memory, dlpack
from tilelang.runtime.grid_limits import check_grid
from tilelang.runtime.host_expr import grid_function, launch_checker
from tilelang.target import MAX_GRID

DYNAMIC_SHARED_DEFAULT = 48 * 1024
_MAX_X, _MAX_Y, _MAX_Z = MAX_GRID


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


class DeviceArray(NamedTuple):
    """A tensor in GPU memory as the launcher sees it (a named tuple: every library call
    reads a few of them, and a frozen dataclass costs a microsecond to make)."""

    pointer: int
    shape: tuple[int, ...]
    typestr: str  # numpy's array-interface type string, e.g. "<f2"
    strides: tuple[int, ...] | None  # bytes; None = C-contiguous
    stream: int | None  # the producer's stream, when it says

    @property
    def nbytes(self) -> int:
        """The bytes from `pointer` a C-contiguous array of this shape covers."""
        return math.prod(self.shape) * itemsize(self.typestr)


@functools.cache
def itemsize(typestr: str) -> int:
    """The bytes of one element of an array-interface type string (cached: every
    launch asks it of every tensor)."""
    return np.dtype(typestr).itemsize


def is_device_array(obj: object) -> bool:
    if isinstance(obj, dlpack.DeviceView):
        return True
    if dlpack.is_torch_kind(type(obj)):  # not its __cuda_array_interface__: a dict each time
        return bool(getattr(obj, "is_cuda", False))
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except (KeyError, TypeError):  # a GPU tensor whose interface has no type string
        return True  # for its dtype (torch's f8): `dlpack.imported` reads it


def device_array(obj: object) -> DeviceArray:
    if isinstance(obj, dlpack.DeviceView):  # its fields, without building its interface
        return DeviceArray(obj.pointer, obj.shape, obj.typestr, obj.strides, None)
    interface = obj.__cuda_array_interface__
    pointer, _ = interface["data"]
    strides = interface.get("strides")
    return DeviceArray(
        int(pointer),
        tuple(map(int, interface["shape"])),
        interface["typestr"],
        tuple(map(int, strides)) if strides is not None else None,
        interface.get("stream"),
    )


def typed(value: Any) -> Any:
    """`value` as a key that tells apart values Python calls equal: 32 and 32.0, True and
    1, 0.0 and -0.0 (a constexpr of each builds differently, or fails to build), inside
    tuples and lists too. A list keys as the tuple of its items (the two specialize
    alike); other unhashable values stay unhashable."""
    kind = type(value)
    how = _KEYED_AS.get(kind)
    if how is None:
        how = _KEYED_AS[kind] = (
            "items"
            if issubclass(kind, (tuple, list))
            else "bits"
            if issubclass(kind, float)
            else ""
        )
    if not how:
        return kind, value
    if how == "bits":
        return kind, value.hex()
    return tuple, tuple(typed(item) for item in value)


#: How `typed` keys a value of each type it met: "" as itself, "bits" (floats), "items"
#: (tuples and lists); worked out once per type (a call keys every constexpr).
_KEYED_AS: dict[type, str] = {}


def argument_signature(value: Any) -> tuple[object, int | None] | None:
    """(what a device call's checks depend on, the tensor's address or None for a
    scalar), or None when `value` is not something a warm call takes: the key of one
    argument of a warm call (`warm_calls`) and of a planned library call (`call_plans`).
    Per tensor its kind, dtype, shape, strides (and device, where it says); per int or
    float its type and value as `typed` keys it (0.0 is not -0.0; a NaN is itself). Host
    tensors and tensors read through DLPack (all but torch's CUDA tensors, read off the
    tensor) have none. How a type is read is worked out once per type (a call asks it
    of every argument)."""
    kind = type(value)
    if kind is int or kind is float:
        return typed(value), None
    reader = _SIGNATURE_READERS.get(kind)
    if reader is None:
        reader = _SIGNATURE_READERS[kind] = _signature_reader(kind)
    return reader(value)


def _signature_reader(kind: type) -> Callable[[Any], tuple[object, int] | None]:
    if dlpack.is_torch_kind(kind):
        return _torch_signature
    if kind is dlpack.DeviceView:
        return _view_signature
    if dlpack.speaks_dlpack(kind):
        return lambda value: None
    return _interface_signature


_SIGNATURE_READERS: dict[type, Callable[[Any], tuple[object, int] | None]] = {}


def _torch_signature(value: Any) -> tuple[object, int] | None:
    if not value.is_cuda:
        return None
    part = (type(value), value.dtype, tuple(value.shape), value.stride(), value.device)
    return part, value.data_ptr()


def _view_signature(value: Any) -> tuple[object, int]:
    return (type(value), value.dtype, value.shape, value.strides, value.device), value.pointer


def _interface_signature(value: Any) -> tuple[object, int] | None:
    try:
        interface = value.__cuda_array_interface__
    except (AttributeError, KeyError, TypeError):  # not a device array; or one read otherwise
        return None
    strides = interface.get("strides")
    part = (
        type(value),
        interface["typestr"],
        tuple(interface["shape"]),
        strides and tuple(strides),
    )
    if part[1] == "|u1":  # bytes, maybe a packed tensor's (u4 codes): its dtype, shape and
        # the dot packing they were permuted for, which the full call checks
        part += (
            getattr(value, "dtype", None),
            getattr(value, "shape", None),
            getattr(value, "packing", None),
        )
    return part, interface["data"][0]


def is_contiguous(array: DeviceArray) -> bool:
    if array.strides is None:
        return True
    expected = itemsize(array.typestr)
    for size, stride in zip(reversed(array.shape), reversed(array.strides), strict=True):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


class DeviceBuffer:
    """tilelang's own GPU buffer: `DeviceBuffer(host_array)` copies a numpy array (or a
    `PackedArray`'s bytes) to the device; `DeviceBuffer.empty(shape, dtype)` allocates
    one without a copy (an output); `.numpy()` copies it back. Its memory comes from,
    and goes back to, a cache (`device_memory`): reused only after the device has
    synchronized since it was freed, as `cuMemFree` would have made sure."""

    def __init__(self, host: Any) -> None:
        cu = driver()
        packed = isinstance(host, dtypes.PackedArray)
        # a PackedArray's bytes are uint8 ("|u1"), its tilelang dtype `self.dtype`: they
        # are copied as they are, once (gathered first only where `data` is strided)
        data = np.ascontiguousarray(host.data if packed else host)
        self._allocate(data.nbytes, host.shape, data.dtype)
        self.dtype = host.dtype if packed else None
        # codes `tl.pack_for_dot` permuted keep their packing, which a call checks
        self.packing = getattr(host, "packing", None)
        check("cuMemcpyHtoD", cu.cuMemcpyHtoD(self.pointer, data.ctypes.data, self.nbytes))

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: Any) -> DeviceBuffer:
        """An uninitialized buffer of `shape` and numpy `dtype`: allocated on the device,
        nothing copied (what an output needs)."""
        buffer = cls.__new__(cls)
        host_dtype = np.dtype(dtype)
        buffer._allocate(math.prod(shape) * host_dtype.itemsize, shape, host_dtype)
        buffer.dtype = buffer.packing = None
        return buffer

    def _allocate(self, nbytes: int, shape: tuple[int, ...], host_dtype: np.dtype) -> None:
        cu = driver()
        _context()
        self.nbytes = int(nbytes)
        self.shape = tuple(shape)
        self.host_dtype = host_dtype
        self._memory = device_memory.of(cu, check)  # a cache of freed memory
        self.pointer = self._memory.allocate(max(self.nbytes, 1))

    @property
    def __cuda_array_interface__(self) -> dict:
        shape = (self.nbytes,) if self.dtype is not None else self.shape
        return {
            "data": (self.pointer, False),
            "shape": shape,
            "typestr": self.host_dtype.str,
            "version": 3,
        }

    @staticmethod
    def release_cached() -> None:
        """Returns the memory of dropped buffers, kept for reuse, to the driver (once the
        device has synchronized): for other libraries that need it."""
        device_memory.of(driver(), check).release_cached()

    def numpy(self) -> Any:
        """The buffer's contents copied back to the host, in the host object's form."""
        cu = driver()
        out = np.empty(self.nbytes if self.dtype is not None else self.shape, self.host_dtype)
        check("cuMemcpyDtoH", cu.cuMemcpyDtoH(out.ctypes.data, self.pointer, self.nbytes))
        if self.dtype is not None:
            return dtypes.PackedArray(out, self.dtype, self.shape)
        return out

    def __del__(self) -> None:
        # Back to the cache, reused once the device has synchronized: work queued on any
        # stream may still read it (`device_memory`).
        memory = getattr(self, "_memory", None)
        if memory is not None and getattr(self, "pointer", None):
            memory.release(max(self.nbytes, 1), self.pointer)


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
#: `struct` codes of the unsigned integers a parameter's bit pattern is written as, by size.
_BIT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def scalar_bytes(value: int | float, dtype: DType) -> np.ndarray:
    """One scalar parameter as the kernel reads it (f16/bf16 as their 16-bit code)."""
    if dtype == dtypes.u1:
        return np.array([1 if value else 0], np.uint8)
    code = dtype.encode(np.asarray([value]))
    return code.astype(_SCALAR_STORAGE[dtype.bits // 8])


def scalar_bits(dtype: DType) -> Callable[[int | float], int]:
    """A function from a checked scalar argument of `dtype` to its bit pattern as an
    unsigned int: what `scalar_bytes` gives, without numpy where Python says it as
    fast (integers, and finite f32/f64 that round into range); the rest go through
    `scalar_bytes`, which owns NaN's code and saturation."""
    if dtype == dtypes.u1:
        return lambda value: 1 if value else 0
    if dtype.is_int:
        mask = (1 << dtype.bits) - 1
        return lambda value: value & mask
    if dtype in (dtypes.f32, dtypes.f64):
        to_bits = struct.Struct("<f" if dtype == dtypes.f32 else "<d").pack

        def float_bits(value: float) -> int:
            if value == value:  # NaN takes the general path
                try:
                    return int.from_bytes(to_bits(value), "little")
                except OverflowError:  # rounds past the largest finite value
                    pass
            return int(scalar_bytes(value, dtype)[0])

        return float_bits
    return lambda value: int(scalar_bytes(value, dtype)[0])


def parameter_struct(params: tuple) -> tuple[struct.Struct, tuple[int, ...]]:
    """One little-endian `struct` holding every kernel parameter at its own alignment
    (tensors as 8-byte addresses, scalars as their bit patterns), and their offsets."""
    fields, offsets, end = ["<"], [], 0
    for param in params:
        size = 8 if param.is_tensor else param.size
        padding = -end % size
        fields.append(f"{padding}x{_BIT_CODES[size]}" if padding else _BIT_CODES[size])
        offsets.append(end + padding)
        end += padding + size
    return struct.Struct("".join(fields)), tuple(offsets)


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
    get a view of the same memory. x itself when it has that shape already (a library
    call reshapes its tensors to the shapes its kernels take, which they often have)."""
    shape = tuple(shape)
    if hasattr(x, "reshape"):
        return x if getattr(x, "shape", None) == shape else x.reshape(shape)
    try:
        array = device_array(x)  # one read of its interface
    except AttributeError:
        raise TypeError(
            f"{name} must be a numpy array or a device tensor, got {type(x).__name__}"
        ) from None
    if not is_contiguous(array):
        raise ValueError(f"{name} must be C-contiguous on the GPU")
    if array.shape == shape:
        return x
    if isinstance(x, dlpack.DeviceView):  # keeps the dtype its interface cannot name
        return dataclasses.replace(
            x, shape=shape, strides=contiguous_strides(shape, x.dtype.storage.itemsize)
        )
    return ReshapedView(x, shape)


def is_torch_tensor(value: object) -> bool:
    """Whether `value` is a torch tensor (checked by its type's module: torch is an
    optional dependency, imported only where one of its tensors is already at hand)."""
    return dlpack.is_torch_kind(type(value))


def current_stream(values: list[object]) -> int:
    """The stream to launch on: torch's or cupy's current stream when a tensor comes
    from there, else the legacy default stream (0)."""
    for value in values:
        if isinstance(value, dlpack.DeviceView):
            value = value.source  # a torch tensor read directly, or a DLPack producer's
        library = _stream_library(type(value))
        # Deferred: torch and cupy are optional; one is loaded already if its tensor is here.
        if library == "torch":
            return _torch_stream(value.device)
        if library == "cupy":
            import cupy

            return int(cupy.cuda.get_current_stream().ptr)
    return 0


_STREAM_LIBRARIES: dict[type, str | None] = {}


def _stream_library(kind: type) -> str | None:
    """ "torch" or "cupy" for their tensors' types, else None (cached per type: a launch
    asks it of its tensors)."""
    if kind not in _STREAM_LIBRARIES:
        library = kind.__module__.split(".")[0]
        _STREAM_LIBRARIES[kind] = library if library in ("torch", "cupy") else None
    return _STREAM_LIBRARIES[kind]


def _torch_stream(device: Any) -> int:
    """torch's current stream on `device` (a CUDA torch.device), as a raw handle. torch's
    own raw query (what its compiled graphs launch with) where the build has it: the
    public `torch.cuda.current_stream` makes a Stream object, a few microseconds a call."""
    import torch  # deferred: optional; loaded already, a torch tensor is at hand

    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None and device.index is not None:
        return int(raw(device.index))
    return int(torch.cuda.current_stream(device).cuda_stream)


class Launcher:
    """Launching one build, with what does not change between calls worked out once: the
    grid and the launch checks as Python functions of the scalars (`host_expr`), the
    parameters' order and encodings (`kernel_params`, a walk of the thread IR), one
    `struct` that writes them all at their alignments, the pointer array the driver
    reads them through, and the loaded function. A call checks the launch conditions,
    packs the values and calls `cuLaunchKernel`: nothing else.

    The parameter buffer and its pointer array belong to the calling host thread: the
    driver copies the parameters during the call (a CUDA-graph capture as well), so the
    thread's next launch may overwrite them."""

    def __init__(self, build) -> None:
        thread = build.thread
        self.build = build
        self.grid = grid_function(thread.grid)
        self._check = launch_checker(thread.checks) if thread.checks else None
        self.threads = thread.threads
        self.shared_bytes = thread.shared_bytes
        params = kernel_params(thread)
        self._fields = tuple(
            (p.name, None if p.is_tensor else scalar_bits(p.dtype)) for p in params
        )
        self._pointer_slots = tuple(
            (i, name) for i, (name, bits) in enumerate(self._fields) if bits is None
        )
        self._struct, self._offsets = parameter_struct(params)
        self._local = threading.local()
        self._function = None
        # The scalars' encoded values for the last scalars dict packed, with that dict:
        # warm calls and call plans pass the same dict every launch (one tuple: threads
        # read and replace it whole).
        self._encoded: tuple[dict | None, list] = (None, [])

    def __call__(
        self, pointers: dict[str, int], scalars: dict[str, int | float], grid, stream: int
    ) -> None:
        if self._check is not None:
            self._check(scalars)  # before any driver call
        gx, gy, gz = (*grid, 1, 1, 1)[:3]
        if not (0 < gx <= _MAX_X and 0 < gy <= _MAX_Y and 0 < gz <= _MAX_Z):
            # Negative or above the GPU's limits: a ValueError naming the dimension.
            check_grid(self.build.thread, (gx, gy, gz))
            return  # a dimension of 0 blocks: nothing to launch (the driver refuses it)
        cu = driver()
        if self._function is None:
            build = self.build
            self._function = _function(build.cubin, build.symbol, self.shared_bytes)
        addresses = self.pack(pointers, scalars)
        block, shared = self.threads, self.shared_bytes
        outcome = cu.cuLaunchKernel(
            self._function, gx, gy, gz, block, 1, 1, shared, stream, addresses, 0
        )
        check("cuLaunchKernel", outcome)

    def pack(self, pointers: dict[str, int], scalars: dict[str, int | float]) -> int:
        """The parameters written into this thread's buffer; the address of the array
        of pointers to them (cuLaunchKernel's kernelParams)."""
        given, encoded = self._encoded
        if given is not scalars:
            encoded = [None if bits is None else bits(scalars[name]) for name, bits in self._fields]
            self._encoded = (scalars, encoded)
        values = list(encoded)
        for slot, name in self._pointer_slots:
            values[slot] = pointers[name]
        buffer, addresses = self._buffers()
        self._struct.pack_into(buffer, 0, *values)
        return addresses

    def _buffers(self) -> tuple[ctypes.Array, int]:
        local = self._local
        try:
            return local.buffer, local.addresses
        except AttributeError:
            buffer = ctypes.create_string_buffer(max(self._struct.size, 1))
            base = ctypes.addressof(buffer)
            array = (ctypes.c_void_p * max(len(self._offsets), 1))(
                *(base + offset for offset in self._offsets)
            )
            local.buffer, local.array, local.addresses = buffer, array, ctypes.addressof(array)
            return buffer, local.addresses


def launch(
    build, pointers: dict[str, int], scalars: dict[str, int | float], grid, stream: int
) -> None:
    """Launches `build` (a `CudaBuild`) over `grid` on `stream`, through its `Launcher`."""
    build.launcher(pointers, scalars, grid, stream)
