"""`tl.full`: a tile of one value. Public in `tilelang.lang.ops`; here, below it, because
`tilelang.lang.memory_ops` (which `ops` imports) makes the same tile for a scatter of
a number or scalar."""

from __future__ import annotations

from tilelang import dtypes
from tilelang.ir import nodes as ir
from tilelang.ir.types import TileType
from tilelang.lang.values import Scalar, Tile, as_dtype, as_scalar, cast, emit_result, static_shape


def full(shape, value, dtype=dtypes.f32) -> Tile:
    """A tile of `shape` and `dtype` whose every element is `value`: a number converted
    to `dtype` (checked to be representable, as any constant is), or a scalar cast."""
    dtype = as_dtype(dtype)
    dims = static_shape(shape)
    fill = as_scalar(value, dtype) if not isinstance(value, Scalar) else cast(value, dtype)
    return emit_result(ir.Full, "full", TileType(dtype, dims), fill.value)
