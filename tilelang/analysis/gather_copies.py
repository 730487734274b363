"""The layout a `gather_async` copies its rows with: which thread copies which elements
of the shared tile, and so which gathered row numbers (index elements) it must hold.

`software_pipeline` puts the index in this layout (reduced over its size-1 dims) before
it issues the copies; the lowering (`tilelang.lowering.indirect`) distributes the copies
by it. It is the tile's blocked layout with the widest run along a row that a cp.async
can take (16 bytes, or the largest power of two elements dividing the row): unlike a
register tile, a copy gains nothing from spreading a small tile over more threads, and
threads left over only replicate (one replica copies)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tilelang.analysis.layout_policy import blocked_layout
from tilelang.dtypes import DType
from tilelang.ir.layout import Layout
from tilelang.ir.types import SharedType

#: The widest cp.async, in bits.
WIDEST_BITS = 128


def copy_vector(row: int, dtype: DType) -> int:
    """Elements per run: the largest power of two dividing `row` of at most 16 bytes."""
    vec = 1
    while (vec * 2) * dtype.bits <= WIDEST_BITS and row % (vec * 2) == 0:
        vec *= 2
    return vec


def gather_copy_layout(shape: Sequence[int], dtype: DType, threads: int) -> Layout:
    """The register layout whose elements each thread copies (see the module docstring)."""
    shape = tuple(shape)
    return blocked_layout(shape, dtype, threads, min_vec=copy_vector(shape[-1], dtype))


def gathered_rows(shared: SharedType, axis: int, threads: int) -> np.ndarray:
    """[threads, copies]: the position along `axis` (a row the index gives at run time)
    each of a thread's copies of a gathered `shared` tile comes from."""
    layout = gather_copy_layout(shared.shape, shared.dtype, threads)
    return layout.table()[:, :: copy_vector(shared.shape[-1], shared.dtype), axis]


__all__ = ["copy_vector", "gather_copy_layout", "gathered_rows"]
