"""How every tilelang dtype travels as a torch tensor (the bridge's one dtype table).

Whole-byte types have a torch dtype of the same bits, so a torch tensor of that dtype
*is* the kernel's tensor, element for element:

======================  ==========================  ===============================
tilelang                torch                       note
======================  ==========================  ===============================
f16, bf16, f32, f64     float16, bfloat16, float32, float64
i8, i16, i32, i64       int8, int16, int32, int64
u8, u16, u32, u64       uint8, uint16, uint32, uint64  (torch's u16+ have few ops)
f8e4m3, f8e5m2          float8_e4m3fn, float8_e5m2  (the OCP "fn" form: no inf)
e8m0                    float8_e8m0fnu
======================  ==========================  ===============================

Sub-byte types (u1..u7, i1..i7, f3e1m1, f4e2m1, f6e2m3, f6e3m2) travel *packed* in a
torch.uint8 tensor, in tilelang's dense bit order (`tilelang.dtypes.pack_bits`: element
i of the row-major flattening at bits [i·b, (i+1)·b) of the little-endian stream; a u4
tensor's element 0 is the low nibble of byte 0). The packed tensor has the logical
shape with the last dimension in bytes: logical [..., L] of b bits is uint8
[..., L·b/8], so L·b must be a multiple of 8 (then rows never share a byte and a
row-major uint8 tensor is exactly the dense packing). `tilelang.pack(values, dtype)`
makes such bytes on the host (`torch.from_numpy(packed.data).view(shape)`).

Nothing else (bool, complex, torch's fp4/fnuz float8 variants) has a tilelang dtype; a
tensor of it is refused with an error naming the parameter.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.runtime.dlpack import TORCH_DTYPES, torch_dtypes
from tilelang.runtime.host_tensor import values_dtype

_WHOLE_BYTE = {tl: getattr(torch, name) for name, tl in TORCH_DTYPES.items()}
# The torch integer type of each width, through which a CPU tensor becomes a numpy view.
_SAME_WIDTH = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def is_packed(dtype: DType) -> bool:
    """Whether `dtype` travels packed in torch.uint8 (fewer than 8 bits per element)."""
    return dtype.bits < 8


def torch_dtype(dtype: DType) -> torch.dtype:
    """The torch dtype a tensor of `dtype` travels as (uint8 for packed types)."""
    if is_packed(dtype):
        return torch.uint8
    found = _WHOLE_BYTE.get(dtype.name)
    if found is None:  # a whole-byte width without a torch dtype (e.g. i24): none exist now
        raise TypeError(f"tilelang dtype {dtype} has no torch dtype")
    return found


def tilelang_dtype(dtype: torch.dtype) -> DType | None:
    """The tilelang dtype a torch dtype *is* (uint8 is u8), or None when there is none."""
    return torch_dtypes().get(dtype)


@functools.cache
def numpy_dtype(dtype: DType) -> np.dtype:
    """The numpy dtype a whole-byte `dtype`'s values have (bf16 and the f8 types:
    ml_dtypes'), so the kernel's call reads a view of them as that dtype."""
    torch_dtype(dtype)  # a TypeError for types torch cannot carry
    return values_dtype(dtype)


def host_array(tensor: torch.Tensor, dtype: DType) -> np.ndarray:
    """A numpy view (no copy, strides kept) of a CPU `tensor` of whole-byte `dtype`:
    through a torch integer view of the same width, since numpy cannot take bf16 or
    f8 tensors directly; the view keeps the tensor's memory alive."""
    width = _SAME_WIDTH[dtype.bits // 8]
    return tensor.view(width).numpy().view(numpy_dtype(dtype))


@functools.cache
def table() -> tuple[tuple[str, str], ...]:
    """(tilelang name, torch form) for every named tilelang dtype: the mapping above."""
    rows = []
    for t in dtypes.NAMED_TYPES:
        form = "uint8, packed" if is_packed(t) else str(torch_dtype(t)).removeprefix("torch.")
        rows.append((t.name, form))
    return tuple(rows)


def packed_shape(dtype: DType, shape: tuple, where: str) -> tuple:
    """The torch.uint8 shape a packed `dtype` tensor of logical `shape` travels as
    (shape entries may be torch SymInts); a `ValueError` naming `where` when its last
    dimension does not fill whole bytes."""
    if not shape:
        raise ValueError(f"{where}: a packed {dtype} tensor needs at least one dimension")
    last = shape[-1]
    if isinstance(last, int):
        if last * dtype.bits % 8:
            raise ValueError(_whole_bytes(dtype, shape, where))
    else:  # a symbolic size under torch.compile: a guard instead of a test
        torch._check(last * dtype.bits % 8 == 0, lambda: _whole_bytes(dtype, shape, where))
    return (*shape[:-1], last * dtype.bits // 8)


def logical_shape(dtype: DType, shape: tuple, where: str) -> tuple:
    """The logical shape of a packed `dtype` tensor given as torch.uint8 of `shape`."""
    if not shape:
        raise ValueError(
            f"{where}: a packed {dtype} tensor travels as a torch.uint8 tensor of at least "
            "one dimension, got a 0-dimensional tensor"
        )
    nbytes = shape[-1]
    if isinstance(nbytes, int) and nbytes * 8 % dtype.bits:
        raise ValueError(
            f"{where}: a torch.uint8 tensor of shape {list(shape)} does not hold whole "
            f"{dtype} elements in its last dimension ({nbytes} bytes = {nbytes * 8} bits)"
        )
    return (*shape[:-1], nbytes * 8 // dtype.bits)


def _whole_bytes(dtype: DType, shape: tuple, where: str) -> str:
    return (
        f"{where}: a packed {dtype} tensor travels as torch.uint8 with its last dimension in "
        f"bytes, so that dimension × {dtype.bits} bits must be a multiple of 8; got logical "
        f"shape {list(shape)}"
    )
