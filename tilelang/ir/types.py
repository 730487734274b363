"""Types of block-IR values: scalars, register tiles, shared tiles, global tensors.

A block-IR value is one of:

- a block-uniform scalar (`ScalarType`): kernel scalars and sizes, block indices, loop
  variables and arithmetic on them — every thread of the block agrees on it;
- a register tile (`TileType`): a tile spread over the block's threads by a register
  layout, or with `layout=None` while the layout is still to be inferred;
- a shared tile (`SharedType`): a tile in the block's shared memory;
- a global tensor (`TensorType`): a kernel parameter whose sizes are symbolic.

Types are frozen dataclasses and compare structurally; each remembers its hash
(`tilelang.ir.memo`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tilelang.dtypes import DType
from tilelang.ir.layout import Layout
from tilelang.ir.memo import remembered_hash, state_without_hash
from tilelang.ir.shape_expr import ShapeExpr
from tilelang.ir.shared_layout import SharedLayout


@dataclass(frozen=True)
class ScalarType:
    dtype: DType

    __hash__ = remembered_hash("dtype")  # the generated hash, once
    __getstate__ = state_without_hash

    def __str__(self) -> str:
        return str(self.dtype)


@dataclass(frozen=True)
class TileType:
    dtype: DType
    shape: tuple[int, ...]
    layout: Layout | None = None

    __hash__ = remembered_hash("dtype", "shape", "layout")  # the generated hash, once
    __getstate__ = state_without_hash

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    def with_dtype(self, dtype: DType) -> TileType:
        return TileType(dtype, self.shape, None)

    def __str__(self) -> str:
        text = f"tile<{self.dtype}, {list(self.shape)}"
        return text + (f", {self.layout}>" if self.layout is not None else ">")


@dataclass(frozen=True)
class SharedType:
    dtype: DType
    shape: tuple[int, ...]
    layout: SharedLayout | None = None

    __hash__ = remembered_hash("dtype", "shape", "layout")  # the generated hash, once
    __getstate__ = state_without_hash

    def __str__(self) -> str:
        text = f"shared<{self.dtype}, {list(self.shape)}"
        return text + (f", {self.layout}>" if self.layout is not None else ">")


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[ShapeExpr, ...]

    __hash__ = remembered_hash("dtype", "shape")  # the generated hash, once
    __getstate__ = state_without_hash

    @property
    def rank(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ", ".join(str(dim) for dim in self.shape)
        return f"tensor<{self.dtype}, [{dims}]>"


Type = ScalarType | TileType | SharedType | TensorType
