"""Tensors of other libraries through DLPack: torch, JAX, cupy, numpy — zero-copy.

This module owns reading a `__dlpack__` capsule into what the rest of the runtime
takes (no library of the producer is imported):

- memory on the CPU (`kDLCPU`, `kDLCUDAHost`, `kDLCUDAManaged`) becomes a `HostView`:
  a numpy array of the dtype's *codes* (its unsigned storage: uint16 for f16 and bf16,
  uint8 for the f8 types) over the producer's memory, strides kept, with the tilelang
  dtype the producer declared. That is how bf16 and f8 reach the CPU backend, which
  numpy cannot name: as their bit patterns, checked against the kernel's dtype by the
  producer's type code, never reinterpreted silently;
- memory on a GPU (`kDLCUDA`) becomes a `DeviceView`, which speaks
  `__cuda_array_interface__` (pointer, shape, byte strides) and carries the dtype, so
  the GPU path checks and launches it like a torch or cupy array.

How a tensor is read, cheaply (a few microseconds; a warm call pays it per tensor):
the producer is asked for a DLPack 1.0 capsule (`max_version=(1, 0)`; a producer that
does not take the argument, for a legacy one), whose header is read in one
`struct.unpack`. Host memory in a 1.0 capsule: its type code is rewritten to the
unsigned integer of the same width — the consumer owns the managed tensor once it
holds the capsule, and a deleter frees through `manager_ctx`, never through the
header — and numpy's own importer (`np.from_dlpack`, in C) makes the view of codes:
strides, byte offset, the producer's read-only flag and its deleter (run once, when the
last view is gone) are numpy's DLPack handling. A legacy capsule has no read-only flag
(numpy would make its view read-only), so it is consumed here and viewed through
`__array_interface__`, writeable as the protocol before 1.0 meant (so is a 1.0 capsule
under numpy < 2.1, which reads only legacy ones, its read-only flag kept); its deleter,
and a GPU tensor's, runs when `_Owner` is collected.

A CUDA torch tensor of a dtype tilelang names skips the capsule: its pointer, shape and
strides are read off the tensor (`_torch_device_view`, under a microsecond a tensor,
where a capsule or `__cuda_array_interface__` costs several on every call), the dtype
from `torch_dtypes`. torch is never imported here before one of its tensors arrives.

Types the kernel language has no dtype for (complex, bool, float formats without a
tilelang dtype, vector lanes) are a `TypeError` that names them.
"""

from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType

__all__ = ["TORCH_DTYPES", "DeviceView", "HostView", "imported", "is_dlpack", "torch_dtypes"]

CPU, CUDA, CUDA_HOST, CUDA_MANAGED = 1, 2, 3, 13
_HOST_DEVICES = (CPU, CUDA_HOST, CUDA_MANAGED)


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
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_SetName.restype = ctypes.c_int
_api.PyCapsule_SetName.argtypes = [ctypes.py_object, ctypes.c_char_p]
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
# A capsule keeps the pointer to its name, not a copy: these names live as long as the
# process.
_USED = {b"dltensor": b"used_dltensor", b"dltensor_versioned": b"used_dltensor_versioned"}


class _Owner:
    """Holds one consumed managed tensor (by address) and calls its deleter when
    garbage-collected (the view of its memory keeps this alive as long as it is used)."""

    def __init__(self, address: int, deleter: int, producer: object) -> None:
        self.address, self.deleter, self.producer = address, deleter, producer

    def __del__(self) -> None:
        if self.deleter:
            _DELETER(self.deleter)(self.address)


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
    def typestr(self) -> str:
        """The interface's type string: the codes' (`dtype` says what they are)."""
        return _CODE_TYPESTRS[self.dtype.bits // 8]  # whole-byte types only come here

    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "data": (self.pointer, False),
            "shape": self.shape,
            "strides": self.strides,
            "typestr": self.typestr,
            "version": 3,
        }


_CODE_TYPESTRS = {size: f"<u{size}" for size in (1, 2, 4, 8)}


def is_dlpack(value: object) -> bool:
    """Whether `value` is another library's tensor this module imports: it speaks
    DLPack, and it is not one tilelang takes directly (numpy arrays, PackedArrays, and
    device arrays that speak `__cuda_array_interface__`)."""
    if not speaks_dlpack(type(value)):
        return False
    return not names_its_dtype(value)


def names_its_dtype(value: object) -> bool:
    """Whether `value` speaks `__cuda_array_interface__` with a type string numpy reads
    as a number type. torch's says "<V2" (raw bytes) for bf16 and raises for its f8
    types; DLPack carries those dtypes, so such tensors are imported through it."""
    try:
        interface = value.__cuda_array_interface__
    except (AttributeError, KeyError, TypeError):
        return False
    return np.dtype(interface["typestr"]).kind != "V"


def imported(value: Any) -> Any:
    """`value` as a `HostView` or `DeviceView` when it is a DLPack tensor (`is_dlpack`),
    else `value` itself."""
    kind = type(value)
    if not speaks_dlpack(kind):
        return value
    if is_torch_kind(kind) and value.is_cuda:
        dtype = torch_dtypes().get(value.dtype)
        if dtype is not None:
            return _torch_device_view(value, dtype)
    device_type, _ = value.__dlpack_device__()
    # A CPU tensor cannot be a device array; asking for the interface of a torch CPU
    # tensor raises inside torch, a microsecond the common case does without.
    if device_type != CPU and names_its_dtype(value):
        return value
    # A CUDA producer is asked not to synchronize (stream -1): the launch goes on the
    # producer's current stream when it says which (torch), else the default stream.
    stream = {"stream": -1} if device_type == CUDA else {}
    if _VERSIONED.get(kind, True):
        try:
            capsule = value.__dlpack__(max_version=_MAX_VERSION, **stream)
            _VERSIONED[kind] = True
        except TypeError:
            if kind in _VERSIONED:
                raise
            _VERSIONED[kind] = False  # a producer from before DLPack 1.0
            capsule = value.__dlpack__(**stream)
    else:
        capsule = value.__dlpack__(**stream)
    header = _header(value, capsule)
    if header.device_type in _HOST_DEVICES:
        return _host_view(value, capsule, header)
    if header.device_type == CUDA:
        return _device_view(value, capsule, header)
    raise TypeError(_device_message(value, header.device_type))


#: torch's whole-byte dtypes (attribute names of the torch module) -> tilelang's; the
#: torch bridge's dtype table (`tilelang.torch.dtypes`) is made from this one.
TORCH_DTYPES = {
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "float8_e4m3fn": "f8e4m3",  # the OCP "fn" form: no infinities
    "float8_e5m2": "f8e5m2",
    "float8_e8m0fnu": "e8m0",
}


def _torch_device_view(value: Any, dtype: DType) -> DeviceView:
    """A CUDA torch tensor's memory as a `DeviceView` of `dtype`, read off the tensor
    (data_ptr, shape, stride). The tensor is the view's source and owner: it keeps the
    memory alive."""
    itemsize = value.element_size()
    strides = tuple(s * itemsize for s in value.stride())
    device = value.device.index or 0
    return DeviceView(
        int(value.data_ptr()), tuple(value.shape), strides, dtype, device, value, value
    )


_TORCH_KINDS: dict[type, bool] = {}


def is_torch_kind(kind: type) -> bool:
    """Whether `kind` is torch's (its module's: torch is optional and never imported to
    ask; cached per type, as every GPU call asks it of every argument)."""
    found = _TORCH_KINDS.get(kind)
    if found is None:
        found = _TORCH_KINDS[kind] = kind.__module__.split(".")[0] == "torch"
    return found


@functools.cache
def torch_dtypes() -> dict[Any, DType]:
    """torch's dtypes -> tilelang's, for the whole-byte types `TORCH_DTYPES` names (torch
    is imported at the first call: only once one of its tensors is at hand)."""
    import torch  # deferred: optional, and loaded already once one of its tensors is here

    return {
        getattr(torch, name): dtypes.dtype(tl)
        for name, tl in TORCH_DTYPES.items()
        if hasattr(torch, name)
    }


@functools.cache
def torch_dtype_of(dtype: DType) -> Any:
    """torch's dtype for a whole-byte tilelang `dtype` (`torch_dtypes` the other way; a
    KeyError for a type torch has none of)."""
    return {ours: theirs for theirs, ours in torch_dtypes().items()}[dtype]


#: Whether numpy's importer takes DLPack 1.0 capsules (numpy >= 2.1); before, they
#: are viewed as legacy ones are, their read-only flag kept.
NUMPY_READS_DLPACK_1 = np.lib.NumpyVersion(np.__version__) >= "2.1.0"

_KINDS: dict[type, bool] = {}
_VERSIONED: dict[type, bool] = {}  # whether the type's __dlpack__ takes max_version
_MAX_VERSION = (1, 0)


def speaks_dlpack(kind: type) -> bool:
    """Whether instances of `kind` are imported (cached per type: a warm call asks it
    of every tensor argument)."""
    found = _KINDS.get(kind)
    if found is None:
        direct = issubclass(kind, (np.ndarray, dtypes.PackedArray, HostView, DeviceView))
        found = not direct and hasattr(kind, "__dlpack__") and hasattr(kind, "__dlpack_device__")
        _KINDS[kind] = found
    return found


# What dlpack.h lays out, as `struct` formats. DLTensor: data, device (type, id), ndim,
# dtype (code, bits, lanes), shape, strides, byte_offset. A legacy DLManagedTensor is
# the DLTensor, then manager_ctx and deleter; a DLManagedTensorVersioned is version
# (major, minor), manager_ctx, deleter and flags, then the DLTensor.
_TENSOR = "PiiiBBHPPQ"
_LEGACY = struct.Struct("@" + _TENSOR + "PP")
_VERSIONED_HEAD = struct.Struct("@IIPPQ" + _TENSOR)
_VERSIONED_TENSOR_AT = struct.calcsize("@IIPPQ")  # where its DLTensor starts
_CODE_AT = struct.calcsize("@Piii")  # the dtype's code byte within the DLTensor
_UNSIGNED = 1  # kDLUInt
_READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY


class _Header(NamedTuple):
    """What a capsule's managed tensor says (a tuple: built on every import)."""

    name: bytes  # the capsule's: b"dltensor" (legacy) or b"dltensor_versioned"
    address: int  # of the managed tensor
    deleter: int
    tensor: int  # the address of its DLTensor
    data: int  # data + byte_offset
    device_type: int
    device_id: int
    dtype: DType
    ndim: int
    shape_at: int  # int64[ndim]
    strides_at: int  # int64[ndim] in elements, or 0: C-contiguous
    read_only: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return _int64s(self.shape_at, self.ndim)

    @property
    def strides(self) -> tuple[int, ...] | None:
        return _int64s(self.strides_at, self.ndim) if self.strides_at else None


def _header(value: object, capsule: object) -> _Header:
    """The managed tensor a fresh capsule holds, read (nothing consumed yet)."""
    try:
        name = _api.PyCapsule_GetName(capsule)
        if name not in _USED:
            raise ValueError(name)
        address = _api.PyCapsule_GetPointer(capsule, name)
    except ValueError:
        raise TypeError(
            f"{type(value).__name__}.__dlpack__ did not return an unused 'dltensor' capsule"
        ) from None
    if name == b"dltensor":
        (data, device_type, device_id, ndim, code, bits, lanes, shape_at, strides_at, offset,
         _, deleter) = _LEGACY.unpack(ctypes.string_at(address, _LEGACY.size))  # fmt: skip
        tensor, read_only = address, False
    else:
        (major, _, _, deleter, flags, data, device_type, device_id, ndim, code, bits, lanes,
         shape_at, strides_at, offset) = _VERSIONED_HEAD.unpack(
            ctypes.string_at(address, _VERSIONED_HEAD.size)
        )  # fmt: skip
        if major != 1:
            raise TypeError(
                f"{type(value).__name__}.__dlpack__ returned a DLPack {major}.x tensor; "
                "tilelang reads DLPack 1.x"
            )
        tensor, read_only = address + _VERSIONED_TENSOR_AT, bool(flags & _READ_ONLY)
    dtype = _dtype(code, bits, lanes)
    return _Header(
        name, address, deleter, tensor, data + offset, device_type, device_id, dtype, ndim,
        shape_at, strides_at or 0, read_only,
    )  # fmt: skip


def _int64s(address: int, count: int) -> tuple[int, ...]:
    if count == 0:
        return ()
    return struct.unpack(f"@{count}q", ctypes.string_at(address, 8 * count))


class _Exported:
    """A capsule in the form `np.from_dlpack` takes (an object that hands it out)."""

    __slots__ = ("capsule", "device")

    def __init__(self, capsule: object, device: tuple[int, int]) -> None:
        self.capsule, self.device = capsule, device

    def __dlpack__(self, **_: Any) -> object:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device


class _Interface:
    """Memory as `__array_interface__`; the array made of it keeps this, and `owner`."""

    __slots__ = ("__array_interface__", "owner")


def _host_view(value: object, capsule: object, header: _Header) -> HostView:
    """The codes of a host tensor (see the module docstring)."""
    if header.name == b"dltensor_versioned" and NUMPY_READS_DLPACK_1:
        # Codes: the same bits as the unsigned integer of the dtype's storage width.
        ctypes.memset(header.tensor + _CODE_AT, _UNSIGNED, 1)
        exported = _Exported(capsule, (header.device_type, header.device_id))
        return HostView(np.from_dlpack(exported), header.dtype, value)
    storage = header.dtype.storage
    strides = header.strides
    memory = _Interface()
    memory.owner = _consumed(value, capsule, header)
    memory.__array_interface__ = {
        "data": (header.data, header.read_only),
        "shape": header.shape,
        "strides": None if strides is None else tuple(s * storage.itemsize for s in strides),
        "typestr": storage.str,
        "version": 3,
    }
    return HostView(np.asarray(memory), header.dtype, value)


def _consumed(value: object, capsule: object, header: _Header) -> _Owner:
    # Renamed, the capsule's own destructor no longer frees the tensor: `_Owner` does.
    _api.PyCapsule_SetName(capsule, _USED[header.name])
    return _Owner(header.address, header.deleter, value)


def _device_view(value: object, capsule: object, header: _Header) -> DeviceView:
    owner = _consumed(value, capsule, header)
    itemsize = header.dtype.storage.itemsize
    strides = header.strides or _contiguous(header.shape)
    byte_strides = tuple(s * itemsize for s in strides)
    return DeviceView(
        header.data, header.shape, byte_strides, header.dtype, header.device_id, value, owner
    )


def _device_message(value: object, device_type: int) -> str:
    return (
        f"a {type(value).__name__} on DLPack device type {device_type}: tilelang runs "
        "kernels on the CPU and on CUDA GPUs"
    )


@functools.cache
def _dtype(code: int, bits: int, lanes: int) -> DType:
    name = _TYPES.get((code, bits))
    if name is None or lanes != 1:
        what = f"{_CODE_NAMES.get(code, f'type code {code}')} of {bits} bits"
        how_many = f" x {lanes} lanes" if lanes != 1 else ""
        raise TypeError(f"DLPack tensors of {what}{how_many} have no tilelang dtype")
    return dtypes.dtype(name)


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    """C-contiguous strides in elements."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
