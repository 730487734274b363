"""Numeric details of the reference interpreter (`tilelang.runtime.interpreter`): what a
load's unread elements hold, the NaN codes a value keeps from a load to a `View`, and
the ufuncs and zero signs of float reductions and scans.

The interpreter holds values, not codes (`tilelang.runtime.interpreter`), but compiled
code moves a loaded NaN's bits as they are, and a view reinterprets them: an integer
result such as ``tl.view(x_f16, tl.u16) >> 15`` (the sign bit) would otherwise depend on
payloads being lost. So a NaN is held as follows:

- a NaN the interpreter computes is its type's canonical NaN (`canonical_nan` for f32
  and f64, `dtypes.quantize` for the others, whose float32 value is 0x7FC00000), as
  compiled arithmetic makes it;
- a loaded NaN code keeps its code (`decode`): an f32 or f64 value is its own bits; a
  narrower type's NaN code other than the canonical one is the float32 NaN with the
  `HELD` bits set and the code in its low 16 bits. Moves (reshape, where, slices,
  shared memory) copy values' bits, so `view_codes` finds the code again, for a view
  and for a store.
"""

from __future__ import annotations

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir.ops import zero_sign

__all__ = [
    "HELD",
    "REDUCE_UFUNCS",
    "canonical_nan",
    "decode",
    "fill_value",
    "view_codes",
    "zero_bytes",
    "zero_signs",
]

#: The float32 bits (sign, exponent, quiet bit and bit 21) of a NaN value that holds a
#: narrower type's NaN code in its low 16 bits; quantize's NaN, 0x7FC00000, lacks bit 21.
HELD = 0x7FE00000


def fill_value(fill, dtype: DType) -> np.ndarray:
    """What an element a load does not read holds: its fill (0 if None) converted to the
    tile's dtype as a cast converts, so e8m0's default fill is NaN (it has no zero: 0
    converts to NaN), as compiled code's conversion of the 0 gives."""
    return dtypes.quantize(0 if fill is None else fill, dtype)


def zero_bytes(dtype: DType) -> np.ndarray:
    """The value of the all-zero code, what cp.async's zero fill leaves: 0, except e8m0's
    2^-127."""
    return dtype.decode(np.zeros((), dtype.storage))


def _keeps_payloads(dtype: DType) -> bool:
    return dtype.is_float and dtype.has_nan and dtype != dtypes.e8m0  # e8m0: one NaN code


def canonical_nan(values: np.ndarray, dtype: DType) -> np.ndarray:
    """f32/f64 values with every NaN the canonical one: numpy keeps an operand's payload
    or makes 0x7FC00000, compiled arithmetic makes the canonical NaN."""
    nan = np.isnan(values)
    return np.where(nan, dtype.decode(dtype.nan_code), values) if nan.any() else values


def decode(dtype: DType, codes: np.ndarray) -> np.ndarray:
    """The values of loaded codes, a NaN code other than the canonical one kept in its
    value (f32, f64: the value's bits; narrower types: `HELD`)."""
    values = dtype.decode(codes)
    if not _keeps_payloads(dtype) or dtype.bits >= 32:
        return values
    held = np.isnan(values) & (codes != dtype.nan_code)
    if not held.any():
        return values
    marked = (np.asarray(codes, np.uint32) | np.uint32(HELD)).view(np.float32)
    return np.where(held, marked, values)


def view_codes(dtype: DType, values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """The codes a view reinterprets: `codes` (the values encoded, every NaN canonical),
    except where a NaN value holds the code it was loaded with."""
    if not _keeps_payloads(dtype):
        return codes
    nan = np.isnan(values)
    if dtype.bits >= 32:
        return np.where(nan, values.view(dtype.storage), codes).astype(dtype.storage)
    bits = values.view(np.uint32)
    held = nan & ((bits & np.uint32(0xFFE00000)) == HELD)
    return np.where(held, bits & np.uint32(dtype.code_mask), codes).astype(dtype.storage)


#: (op, is_float) -> the ufunc of a reduction or scan: float max/min ignore NaN, as PTX
#: max.f32/min.f32 do.
REDUCE_UFUNCS: dict[tuple[str, bool], np.ufunc] = {
    ("sum", True): np.add,
    ("sum", False): np.add,
    ("prod", True): np.multiply,
    ("prod", False): np.multiply,
    ("max", True): np.fmax,
    ("max", False): np.maximum,
    ("min", True): np.fmin,
    ("min", False): np.minimum,
    ("and", False): np.bitwise_and,
    ("or", False): np.bitwise_or,
    ("xor", False): np.bitwise_xor,
}


def zero_signs(op: str, result, values, axis: int, accumulate: bool) -> np.ndarray:
    """Zero signs of float reductions (`accumulate`: scans) along `axis`: min/max order -0
    below +0; a sum is -0 exactly when every term is (IEEE, in any order), where numpy's
    pairwise sum starts from +0."""
    if op not in ("min", "max", "sum"):
        return result
    if op == "sum":
        marks = (values == 0) & np.signbit(values)
        combine = np.logical_and
    elif op == "min":
        marks = (values == 0) & np.signbit(values)
        combine = np.logical_or
    else:
        marks = ~((values == 0) & ~np.signbit(values))  # no +0 seen: a zero result is -0
        combine = np.logical_and
    seen = combine.accumulate(marks, axis=axis) if accumulate else combine.reduce(marks, axis=axis)
    return zero_sign(result, seen)
