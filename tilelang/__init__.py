"""tilelang: a tile-level kernel language and compiler for low-precision GPU computation.

The public API, re-exported from the modules that own it.
"""

from tilelang.dtypes import (
    NAMED_TYPES,
    DType,
    FloatType,
    IntType,
    PackedArray,
    dtype,
    float_type,
    int_type,
    pack,
    pack_codes,
)

__version__ = "0.1.0"
