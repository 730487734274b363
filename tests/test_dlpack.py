"""Tensors of other libraries through DLPack (`tilelang.runtime.dlpack`), zero-copy.

The producers here are written from the DLPack spec (dlpack.h): numpy's own
`__dlpack__`, and a producer built with ctypes that exports any buffer under any type
code (bf16, f8, a CUDA device pointer), counting its deleter calls — so the tests need
neither torch nor JAX nor a GPU.
"""

import ctypes
import gc

import ml_dtypes
import numpy as np
import pytest

import tilelang as tl
from tilelang.runtime import arguments, dlpack


class NumpyProducer:
    """A library tensor that speaks only DLPack (as a JAX array does), over numpy."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", DELETER),
]

_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class CtypesProducer:
    """Exports `address` (a buffer it keeps alive, or a raw device pointer) as a DLPack
    tensor of (type code, bits) on `device_type`; counts deleter calls."""

    def __init__(self, buffer, shape, code, bits, device_type=1, strides=None, address=None):
        self.buffer, self.shape, self.code, self.bits = buffer, shape, code, bits
        self.device_type, self.strides = device_type, strides
        self.address = address if address is not None else buffer.ctypes.data
        self.deleted = 0
        self._keep = []

    def __dlpack_device__(self):
        return (self.device_type, 0)

    def __dlpack__(self, stream=None):
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * ndim)(*self.shape)
        strides = (ctypes.c_int64 * ndim)(*self.strides) if self.strides else None
        managed = DLManagedTensor()
        managed.dl_tensor.data = self.address
        managed.dl_tensor.device = DLDevice(self.device_type, 0)
        managed.dl_tensor.ndim = ndim
        managed.dl_tensor.dtype = DLDataType(self.code, self.bits, 1)
        managed.dl_tensor.shape = shape
        managed.dl_tensor.strides = strides
        managed.dl_tensor.byte_offset = 0

        def deleter(_):
            self.deleted += 1

        managed.deleter = DELETER(deleter)
        self._keep += [shape, strides, managed, managed.deleter]
        return _new_capsule(ctypes.addressof(managed), b"dltensor", None)


@tl.kernel(warps=1)
def double(x: tl.Tensor["T", "N"], y: tl.Tensor[tl.f32, "N"], T: tl.constexpr = tl.f32):
    v = tl.load(x, [0], [64])
    tl.store(y, [0], v.to(tl.f32) * 2.0)


def test_a_dlpack_tensor_is_read_and_written_in_place():
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    producer = NumpyProducer(y)
    out = double(NumpyProducer(x), producer)
    assert out is producer  # the caller's object comes back
    assert np.array_equal(y, x * 2)  # stored into the producer's memory, no copy back
    y[:] = 0
    double.interpret(NumpyProducer(x), NumpyProducer(y))
    assert np.array_equal(y, x * 2)


@pytest.mark.parametrize(
    ("code", "bits", "dtype", "numpy_type"),
    [
        (4, 16, tl.bf16, ml_dtypes.bfloat16),
        (10, 8, tl.f8e4m3, ml_dtypes.float8_e4m3fn),
        (12, 8, tl.f8e5m2, ml_dtypes.float8_e5m2),
        (2, 16, tl.f16, np.float16),
    ],
    ids=str,
)
def test_types_numpy_cannot_name_arrive_with_their_real_dtype(code, bits, dtype, numpy_type):
    """bf16 and f8 reach the CPU backend as their bit patterns, typed by the producer's
    DLPack type code (numpy has no bf16: the values below come from ml_dtypes)."""
    values = np.linspace(-3, 3, 64).astype(numpy_type)
    source = CtypesProducer(values, (64,), code, bits)
    y = np.zeros(64, np.float32)
    double(source, y, T=dtype)
    assert np.array_equal(y, values.astype(np.float32) * 2)
    with pytest.raises(
        TypeError, match=f"expects a tensor of f32, got a CtypesProducer of {dtype}"
    ):
        double(CtypesProducer(values, (64,), code, bits), y)


def test_strided_tensors_follow_the_stride_rules():
    base = np.arange(128, dtype=np.float32)
    strided = CtypesProducer(base, (64,), 2, 32, strides=(2,))  # every other element
    y = np.zeros(64, np.float32)
    double(strided, y)
    assert np.array_equal(y, base[::2] * 2)


def test_the_producers_deleter_runs_once_after_the_call():
    values = np.ones(64, np.float32)
    source = CtypesProducer(values, (64,), 2, 32)
    double(source, np.zeros(64, np.float32))
    gc.collect()
    assert source.deleted == 1


def test_types_without_a_tilelang_dtype_are_refused_by_name():
    with pytest.raises(TypeError, match="complex of 64 bits have no tilelang dtype"):
        double(CtypesProducer(np.zeros(64, np.complex64), (64,), 5, 64), np.zeros(64, np.float32))


def test_a_cuda_dlpack_tensor_binds_for_the_gpu_without_a_copy():
    """A kDLCUDA producer becomes a device array (pointer, shape, byte strides) with its
    dtype: the GPU path's checks accept it where its dtype and alignment are right —
    checked here without a GPU (nothing launches)."""
    pointer = 0x7F00_0000_0000  # a device address; nothing dereferences it here
    x = dlpack.imported(CtypesProducer(None, (64,), 4, 16, device_type=2, address=pointer))
    y = dlpack.imported(CtypesProducer(None, (64,), 2, 32, device_type=2, address=pointer + 4096))
    assert isinstance(x, dlpack.DeviceView) and x.dtype == tl.bf16
    assert x.__cuda_array_interface__["strides"] == (2,)
    fn = double.specialize(T=tl.bf16)
    bound = arguments.bind_device_arguments(fn, {"x": x, "y": y})
    assert bound.pointers == {"x": pointer, "y": pointer + 4096}
    with pytest.raises(TypeError, match="expects a tensor of f16, got a CtypesProducer of bf16"):
        arguments.bind_device_arguments(double.specialize(T=tl.f16), {"x": x, "y": y})


class TorchLikeCudaTensor(CtypesProducer):
    """A GPU tensor that speaks both protocols as torch's does for the types numpy cannot
    name: its `__cuda_array_interface__` says "<V2" (raw bytes) for bf16 and raises for
    the f8 types, while its DLPack export carries the real type code."""

    @property
    def __cuda_array_interface__(self):
        if self.bits == 8:
            raise KeyError("float8_e4m3fn")
        return {"data": (self.address, False), "shape": self.shape, "typestr": "<V2",
                "strides": None, "version": 2}  # fmt: skip


@pytest.mark.parametrize(("code", "bits", "dtype"), [(4, 16, tl.bf16), (10, 8, tl.f8e4m3)], ids=str)
def test_a_gpu_tensor_whose_array_interface_cannot_name_its_dtype_comes_through_dlpack(
    code, bits, dtype
):
    from tilelang.kernels import common

    pointer = 0x7F00_0000_0000  # a device address; nothing dereferences it here
    x = TorchLikeCudaTensor(None, (4, 16), code, bits, device_type=2, address=pointer)
    view = dlpack.imported(x)
    assert isinstance(view, dlpack.DeviceView) and view.dtype == dtype
    assert view.pointer == pointer and view.shape == (4, 16)
    # the library's argument checks (tilelang.kernels) see the same
    assert common.on_gpu(x) and common.shape_of(x, "x") == (4, 16)
    assert common.dtype_of(x, "x") == dtype
    assert common.check(x, "x", (4, None), (dtype,)) == ((4, 16), dtype)
    with pytest.raises(TypeError, match=f"x must hold one of f32, got {dtype}"):
        common.check(x, "x", (4, None), (tl.f32,))


# DLPack 1.0: the versioned managed tensor, with flags (dlpack.h).
class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


VERSIONED_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))
DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", VERSIONED_DELETER),
    ("flags", ctypes.c_uint64),
    ("dl_tensor", DLTensor),
]
READ_ONLY = 1  # DLPACK_FLAG_BITMASK_READ_ONLY


class VersionedProducer(CtypesProducer):
    """A producer of DLPack 1.0 capsules ("dltensor_versioned") when asked with
    `max_version`, legacy ones otherwise; `flags` go into the managed tensor."""

    def __init__(self, *args, flags=0, major=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.flags, self.major, self.asked = flags, major, []

    def __dlpack__(self, stream=None, max_version=None):
        self.asked.append(max_version)
        if max_version is None:
            return super().__dlpack__(stream)
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * ndim)(*self.shape)
        strides = (ctypes.c_int64 * ndim)(*self.strides) if self.strides else None
        managed = DLManagedTensorVersioned()
        managed.version = DLPackVersion(self.major, 0)
        managed.flags = self.flags
        tensor = managed.dl_tensor
        tensor.data, tensor.device = self.address, DLDevice(self.device_type, 0)
        tensor.ndim, tensor.dtype = ndim, DLDataType(self.code, self.bits, 1)
        tensor.shape, tensor.strides, tensor.byte_offset = shape, strides, 0

        def deleter(_):
            self.deleted += 1

        managed.deleter = VERSIONED_DELETER(deleter)
        self._keep += [shape, strides, managed, managed.deleter]
        return _new_capsule(ctypes.addressof(managed), b"dltensor_versioned", None)


@pytest.fixture(params=[True, False], ids=["numpy-importer", "array-interface"])
def numpy_reads_dlpack_1(request, monkeypatch):
    """Both ways a DLPack 1.0 host tensor is viewed: numpy's importer (numpy >= 2.1),
    and `__array_interface__` (what older numpy gets)."""
    monkeypatch.setattr(dlpack, "NUMPY_READS_DLPACK_1", request.param)


@pytest.mark.usefixtures("numpy_reads_dlpack_1")
def test_a_dlpack_1_0_tensor_is_viewed_in_place_with_its_type_and_strides():
    base = np.linspace(-3, 3, 128).astype(ml_dtypes.bfloat16)
    source = VersionedProducer(base, (64,), 4, 16, strides=(2,))
    view = dlpack.imported(source)
    assert source.asked == [(1, 0)]  # asked for a DLPack 1.0 capsule
    assert view.dtype == tl.bf16 and view.codes.dtype == np.uint16
    assert view.codes.ctypes.data == base.ctypes.data  # no copy
    assert view.codes.strides == (4,)
    assert np.array_equal(view.codes, base[::2].view(np.uint16))
    y = np.zeros(64, np.float32)
    double(VersionedProducer(base, (64,), 4, 16, strides=(2,)), y, T=tl.bf16)
    assert np.array_equal(y, base[::2].astype(np.float32) * 2)


@pytest.mark.usefixtures("numpy_reads_dlpack_1")
def test_a_dlpack_1_0_tensor_is_written_in_place_and_its_deleter_runs_once():
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    out = VersionedProducer(y, (64,), 2, 32)
    assert double(x, out) is out
    assert np.array_equal(y, x * 2)
    gc.collect()
    assert out.deleted == 1


@pytest.mark.usefixtures("numpy_reads_dlpack_1")
def test_a_read_only_dlpack_1_0_tensor_is_read_but_never_stored_to():
    x, y = np.arange(64, dtype=np.float32), np.zeros(64, np.float32)
    double(VersionedProducer(x, (64,), 2, 32, flags=READ_ONLY), y)  # read: fine
    assert np.array_equal(y, x * 2)
    with pytest.raises(
        ValueError, match=r"parameter 'y' is written by the kernel, but .* read-only"
    ):
        double(x, VersionedProducer(y, (64,), 2, 32, flags=READ_ONLY))


def test_a_legacy_tensor_stays_writeable_and_is_freed_once():
    """Before DLPack 1.0 there was no read-only flag: a legacy capsule's memory is
    writeable, as the protocol meant (numpy's own importer would make it read-only)."""
    y = np.zeros(64, np.float32)
    out = CtypesProducer(y, (64,), 2, 32)
    double(np.ones(64, np.float32), out)
    assert np.array_equal(y, np.full(64, 2, np.float32))
    gc.collect()
    assert out.deleted == 1


def test_a_dlpack_major_version_other_than_1_is_refused_by_name():
    source = VersionedProducer(np.zeros(64, np.float32), (64,), 2, 32, major=2)
    with pytest.raises(TypeError, match=r"VersionedProducer\.__dlpack__ returned a DLPack 2\.x"):
        dlpack.imported(source)


def test_a_cuda_dlpack_1_0_tensor_becomes_a_device_view_and_is_freed_once():
    pointer = 0x7F00_0000_0000  # a device address; nothing dereferences it here
    source = VersionedProducer(None, (4, 8), 2, 32, device_type=2, address=pointer)
    view = dlpack.imported(source)
    assert isinstance(view, dlpack.DeviceView)
    assert (view.pointer, view.shape, view.strides) == (pointer, (4, 8), (32, 4))
    del view
    gc.collect()
    assert source.deleted == 1


def test_a_zero_size_tensor_imports_as_an_empty_view():
    view = dlpack.imported(VersionedProducer(np.zeros(1, np.float32), (0, 3), 2, 32))
    assert view.codes.shape == (0, 3) and view.dtype == tl.f32
