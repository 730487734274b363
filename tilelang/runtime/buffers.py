"""Host tensors as the byte buffers compiled kernels address.

A compiled kernel sees each tensor as its dense row-major bytes: element i of a b-bit
type at bits [i·b, (i+1)·b) (`tilelang.dtypes.pack_bits`). Two kinds of host object
already are that buffer and are passed in place, so the kernel reads and writes the
caller's memory and a warm call costs no copy: a C-contiguous array of codes of a
whole-byte type, and a `PackedArray`'s `data` (any type: its bytes are `pack_bits`'
stream) while its codes were never unpacked (`HostTensor.packed_bytes`). Either one
must also start on a 16-byte boundary. Anything else — a strided or misaligned array
or `data`, or codes a reader unpacked — is copied into an aligned buffer of those bytes
(a packed copy for sub-byte codes) and, for tensors the kernel stores to, written back
after the launch; a PackedArray's bytes are copied as bytes, never unpacked.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from tilelang.dtypes import pack_bits, unpack_bits
from tilelang.runtime.host_tensor import HostTensor

ALIGNMENT = 16


def byte_buffers(
    tensors: dict[str, HostTensor], stored: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], Callable[[], None]]:
    """The buffers to launch with, and a function that writes stores back afterwards."""
    buffers: dict[str, np.ndarray] = {}
    write_backs: list[Callable[[], None]] = []
    for name, tensor in tensors.items():
        buffer, write_back = _buffer(tensor)
        buffers[name] = buffer
        if name in stored:
            tensor.dirty = True
            if write_back is not None:
                write_backs.append(write_back)

    def finish() -> None:
        for write_back in write_backs:
            write_back()

    return buffers, finish


def _buffer(tensor: HostTensor) -> tuple[np.ndarray, Callable[[], None] | None]:
    data = tensor.packed_bytes()
    if data is not None:
        return _in_place(data)
    codes = tensor.codes
    bits = tensor.dtype.bits
    if bits % 8 == 0:
        return _in_place(codes)
    packed = pack_bits(codes, bits)
    buffer = _aligned_empty(max(packed.size, 1))[: packed.size]
    buffer[...] = packed

    def unpack() -> None:
        codes[...] = unpack_bits(buffer, bits, codes.size).reshape(codes.shape)

    return buffer, unpack


def _in_place(array: np.ndarray) -> tuple[np.ndarray, Callable[[], None] | None]:
    """`array` itself when its bytes are one aligned block, else an aligned copy of it
    and the function that copies the copy back."""
    if array.flags.c_contiguous and _aligned(array):
        return array, None
    copy = _aligned_empty(array.nbytes).view(array.dtype).reshape(array.shape)
    copy[...] = array

    def back() -> None:
        array[...] = copy

    return copy, back


def address(array: np.ndarray) -> int:
    """The address of `array`'s first element. Through a ctypes view of its buffer where
    numpy lends a writeable one (a third of `array.ctypes.data`'s microseconds, which
    every warm launch pays per tensor), else through `.ctypes`."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):  # read-only, empty, or not one block
        return array.ctypes.data


def _aligned(array: np.ndarray) -> bool:
    return address(array) % ALIGNMENT == 0


def _aligned_empty(nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes]
