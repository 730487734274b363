"""Host tensors as arrays of codes, the form the reference interpreter reads and writes.

This module owns `HostTensor`: one global tensor argument seen as a numpy array of
*codes* of its tilelang dtype (the dtype's unsigned `storage`, the logical shape).

- A numpy array whose elements already are codes (its numpy dtype is the tilelang
  dtype, e.g. float16 for f16, int32 for i32, ml_dtypes bfloat16 for bf16, or an
  unsigned array of the storage width, e.g. uint8 holding u4 codes) is viewed in place
  with `.view(storage)`: stores land in the caller's array, including when it is a view
  into a larger buffer.
- A `PackedArray` keeps its packed bytes (`packed`): they are what a compiled kernel
  addresses (`tilelang.runtime.buffers` passes them in place, so its stores land in the
  caller's bytes and nothing is unpacked or repacked). Only a reader of `codes` (the
  interpreter) unpacks them, once, on first use; `finish()` then packs the codes back
  into its `data` buffer in place if anything was stored.
- Any other numpy array (e.g. int8 holding i4 values, float32 holding f4e2m1 values) is
  a *value* array: it is encoded once and, if stored to, decoded back by `finish()`.

`numpy_dtype(np_dtype)` is the tilelang dtype a numpy dtype names (or None), cached:
every call of a kernel asks it for every tensor, and parsing the name each time would
cost more than the rest of a warm call's argument checks. `values_dtype(dtype)` goes the
other way for the whole-byte types: the numpy (or ml_dtypes) dtype of their values.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tilelang.dtypes import DType, PackedArray, dtype, pack_bits


class HostTensor:
    """A global tensor as codes; `finish()` writes stores back where they are not in place."""

    def __init__(
        self,
        codes: np.ndarray | None,
        dtype_: DType,
        write_back: Any = None,
        packed: PackedArray | None = None,
    ) -> None:
        self._codes = codes  # None: not unpacked from `packed` yet
        self.dtype = dtype_
        self.dirty = False
        self._write_back = write_back
        self.packed = packed

    @property
    def codes(self) -> np.ndarray:
        """The codes (the dtype's storage, the logical shape). A PackedArray's are
        unpacked on first use; from then on they, not its bytes, are the tensor."""
        if self._codes is None:
            self._codes = self.packed.codes()
        return self._codes

    def packed_bytes(self) -> np.ndarray | None:
        """The caller's packed bytes (a PackedArray's `data`, any strides) while they
        are the tensor's contents, i.e. its codes were never unpacked; else None."""
        return self.packed.data if self._codes is None and self.packed is not None else None

    @classmethod
    def wrap(cls, array: Any, dtype_: DType | str | None = None) -> HostTensor:
        """A HostTensor over `array` (numpy array, PackedArray or HostTensor)."""
        if isinstance(array, HostTensor):
            return array
        if isinstance(array, PackedArray):
            target = array.dtype if dtype_ is None else dtype(dtype_)
            if target != array.dtype:
                raise TypeError(
                    f"a packed {array.dtype} tensor was passed where {target} is expected"
                )
            return cls(None, target, write_back=array, packed=array)
        array = np.asarray(array)
        target = _dtype_of_array(array) if dtype_ is None else dtype(dtype_)
        if _holds_codes(array.dtype, target):
            return cls(array.view(target.storage), target)
        # A value array: keep our own codes, decode them back on finish().
        return cls(target.encode(array), target, write_back=array)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.packed.shape if self._codes is None else self._codes.shape

    def values(self) -> np.ndarray:
        """The logical values (decoded codes)."""
        return self.dtype.decode(self.codes)

    def finish(self) -> None:
        """Write the stored codes back to the caller's object when they are not shared."""
        if not self.dirty or self._write_back is None or self._codes is None:
            self.dirty = False  # (never unpacked: any store went to the packed bytes)
            return
        target = self._write_back
        if isinstance(target, PackedArray):
            target.data[...] = pack_bits(self.codes, self.dtype.bits)
        else:
            target[...] = self.dtype.decode(self.codes).astype(target.dtype)
        self.dirty = False


@functools.lru_cache(maxsize=256)
def numpy_dtype(np_dtype: np.dtype) -> DType | None:
    """The tilelang dtype a numpy dtype is (float16 -> f16, ml_dtypes bfloat16 -> bf16),
    or None when it is none of them."""
    try:
        return dtype(np_dtype)
    except (ValueError, TypeError):
        return None


#: tilelang dtype -> the numpy (or ml_dtypes) name of its values, where the name differs.
_VALUE_NAMES = {
    "f16": "float16", "f32": "float32", "f64": "float64", "bf16": "bfloat16",
    "f8e4m3": "float8_e4m3fn", "f8e5m2": "float8_e5m2", "e8m0": "float8_e8m0fnu",
}  # fmt: skip


@functools.cache
def values_dtype(dtype: DType) -> np.dtype:
    """The numpy dtype of a whole-byte `dtype`'s values: numpy's own, or ml_dtypes' (bf16,
    f8, e8m0); integers as themselves."""
    name = _VALUE_NAMES.get(dtype.name)
    if name is None:
        return np.dtype(f"{'int' if dtype.signed else 'uint'}{dtype.bits}")
    if hasattr(np, name):
        return np.dtype(name)
    import ml_dtypes  # bf16 and the f8 types: numpy has no name for them

    return np.dtype(getattr(ml_dtypes, name))


def _dtype_of_array(array: np.ndarray) -> DType:
    found = numpy_dtype(array.dtype)
    if found is None:
        raise TypeError(f"cannot tell the tilelang dtype of a numpy {array.dtype} array")
    return found


@functools.lru_cache(maxsize=256)
def _holds_codes(np_dtype: np.dtype, target: DType) -> bool:
    """True when an array's bytes are exactly the codes of `target`, element by element."""
    if np_dtype.itemsize != target.storage.itemsize:
        return False
    if np_dtype.kind == "u":
        return True  # unsigned storage: codes as they are (u4 codes in a uint8 array)
    return numpy_dtype(np_dtype) == target
