"""Tensors of other libraries through DLPack: torch, JAX, cupy, numpy — zero-copy.

This module owns reading a `__dlpack__` capsule (the DLPack C structs, read with
ctypes: no library of the producer is imported) into what the rest of the runtime
takes:

- memory on the CPU (`kDLCPU`, `kDLCUDAHost`, `kDLCUDAManaged`) becomes a `HostView`:
  a numpy array of the dtype's *codes* (its unsigned storage: uint16 for f16 and bf16,
  uint8 for the f8 types) over the producer's memory, strides kept, with the tilelang
  dtype the producer declared. That is how bf16 and f8 reach the CPU backend, which
  numpy cannot name: as their bit patterns, checked against the kernel's dtype by the
  producer's type code, never reinterpreted silently;
- memory on a GPU (`kDLCUDA`) becomes a `DeviceView`, which speaks
  `__cuda_array_interface__` (pointer, shape, byte strides) and carries the dtype, so
  the GPU path checks and launches it like a torch or cupy array.

The producer's memory stays alive, and its deleter runs once, when the last view of it
is gone (`_Owner`). Types the kernel language has no dtype for (complex, bool, float
formats without a tilelang dtype, vector lanes) are a `TypeError` that names them.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType

__all__ = ["DeviceView", "HostView", "imported", "is_dlpack"]

CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
_HOST_DEVICES = (CPU, CUDA_HOST, CUDA_MANAGED)


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _Device),
        ("ndim", ctypes.c_int32),
        ("dtype", _DataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _Managed(ctypes.Structure):
    pass


_Managed._fields_ = [
    ("dl_tensor", _Tensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(_Managed))),
]

# (type code, bits) -> tilelang dtype name, from dlpack.h's DLDataTypeCode.
_TYPES = {
    **{(0, b): f"i{b}" for b in (8, 16, 32, 64)},
    **{(1, b): f"u{b}" for b in (8, 16, 32, 64)},
    (2, 16): "f16",
    (2, 32): "f32",
    (2, 64): "f64",
    (4, 16): "bf16",
    (10, 8): "f8e4m3",  # kDLFloat8_e4m3fn: no infinities, one NaN pattern
    (12, 8): "f8e5m2",
    (14, 8): "e8m0",  # kDLFloat8_e8m0fnu
}
_CODE_NAMES = {
    0: "int", 1: "uint", 2: "float", 3: "opaque handle", 4: "bfloat", 5: "complex",
    6: "bool", 7: "float8_e3m4", 8: "float8_e4m3", 9: "float8_e4m3b11fnuz",
    10: "float8_e4m3fn", 11: "float8_e4m3fnuz", 12: "float8_e5m2", 13: "float8_e5m2fnuz",
    14: "float8_e8m0fnu", 15: "float6_e2m3fn", 16: "float6_e3m2fn", 17: "float4_e2m1fn",
}  # fmt: skip

_api = ctypes.pythonapi
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Owner:
    """Holds one consumed DLManagedTensor; calls its deleter when garbage-collected (the
    numpy view, or the DeviceView, keeps this alive as long as it is used)."""

    def __init__(self, managed: ctypes.POINTER(_Managed), producer: object) -> None:
        self.managed, self.producer = managed, producer

    def __del__(self) -> None:
        deleter = self.managed.contents.deleter
        if deleter:
            deleter(self.managed)


@dataclass(frozen=True, eq=False)
class HostView:
    """A tensor in host memory: `codes` (a numpy view of the dtype's storage over the
    producer's memory) and its tilelang `dtype`; `source` is the producer's object."""

    codes: np.ndarray
    dtype: DType
    source: object

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codes.shape


@dataclass(frozen=True, eq=False)
class DeviceView:
    """A tensor in GPU memory, as `__cuda_array_interface__` plus its tilelang `dtype`."""

    pointer: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # bytes
    dtype: DType
    device: int
    source: object
    owner: _Owner

    @property
    def __cuda_array_interface__(self) -> dict:
        typestr = f"<u{self.dtype.storage.itemsize}"  # codes; `dtype` says what they are
        return {
            "data": (self.pointer, False),
            "shape": self.shape,
            "strides": self.strides,
            "typestr": typestr,
            "version": 3,
        }


def is_dlpack(value: object) -> bool:
    """Whether `value` is another library's tensor this module imports: it speaks
    DLPack, and it is not one tilelang takes directly (numpy arrays, PackedArrays, and
    device arrays that speak `__cuda_array_interface__`)."""
    if isinstance(value, (np.ndarray, dtypes.PackedArray, HostView, DeviceView)):
        return False
    if hasattr(value, "__cuda_array_interface__"):
        return False
    return hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__")


def imported(value: Any) -> Any:
    """`value` as a `HostView` or `DeviceView` when it is a DLPack tensor (`is_dlpack`),
    else `value` itself."""
    if not is_dlpack(value):
        return value
    device_type, _ = value.__dlpack_device__()
    # A CUDA producer is asked not to synchronize (stream -1): the launch goes on the
    # producer's current stream when it says which (torch), else the default stream.
    capsule = value.__dlpack__(stream=-1) if device_type == CUDA else value.__dlpack__()
    managed = _consume(capsule)
    owner = _Owner(managed, value)
    tensor = managed.contents.dl_tensor
    dtype = _dtype(tensor.dtype)
    shape = tuple(int(tensor.shape[i]) for i in range(tensor.ndim))
    itemsize = dtype.storage.itemsize
    strides = _element_strides(tensor, shape)
    pointer = int(tensor.data or 0) + int(tensor.byte_offset)
    if tensor.device.device_type in _HOST_DEVICES:
        codes = _host_array(pointer, shape, strides, dtype.storage, owner)
        return HostView(codes, dtype, value)
    if tensor.device.device_type == CUDA:
        byte_strides = tuple(s * itemsize for s in strides)
        return DeviceView(
            pointer, shape, byte_strides, dtype, tensor.device.device_id, value, owner
        )
    raise TypeError(
        f"a {type(value).__name__} on DLPack device type {tensor.device.device_type}: tilelang "
        "runs kernels on the CPU and on CUDA GPUs"
    )


def _consume(capsule: object) -> ctypes.POINTER(_Managed):
    if not _api.PyCapsule_IsValid(capsule, b"dltensor"):
        raise TypeError("__dlpack__ did not return an unused 'dltensor' capsule")
    address = _api.PyCapsule_GetPointer(capsule, b"dltensor")
    # Renamed, the capsule's own destructor no longer frees the tensor: `_Owner` does.
    _api.PyCapsule_SetName(capsule, b"used_dltensor")
    return ctypes.cast(address, ctypes.POINTER(_Managed))


def _dtype(dl: _DataType) -> DType:
    key = (int(dl.code), int(dl.bits))
    name = _TYPES.get(key)
    if name is None or dl.lanes != 1:
        what = f"{_CODE_NAMES.get(key[0], f'type code {key[0]}')} of {key[1]} bits"
        lanes = f" x {dl.lanes} lanes" if dl.lanes != 1 else ""
        raise TypeError(f"DLPack tensors of {what}{lanes} have no tilelang dtype")
    return dtypes.dtype(name)


def _element_strides(tensor: _Tensor, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Strides in elements; a null strides pointer means C-contiguous (DLPack < 1.0)."""
    if tensor.strides:
        return tuple(int(tensor.strides[i]) for i in range(len(shape)))
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _host_array(
    pointer: int, shape: tuple[int, ...], strides: tuple[int, ...], storage: np.dtype, owner: _Owner
) -> np.ndarray:
    """A numpy view of `storage` codes over [pointer, ...) that keeps `owner` alive."""
    itemsize = storage.itemsize
    if math.prod(shape) == 0:
        return np.zeros(shape, storage)
    low = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s < 0)
    high = sum((n - 1) * s for n, s in zip(shape, strides, strict=True) if s > 0)
    span = (high - low + 1) * itemsize
    buffer = (ctypes.c_char * span).from_address(pointer + low * itemsize)
    buffer._owner = owner  # the producer's memory lives as long as this buffer
    flat = np.frombuffer(buffer, dtype=storage)
    return np.lib.stride_tricks.as_strided(
        flat[-low:], shape=shape, strides=tuple(s * itemsize for s in strides)
    )
