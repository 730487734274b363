"""What the reference interpreter's atomic updates (`Atomic`, `ScatterAtomic`: add, max,
min) compute, apart from how it reads and writes tensors (`interpreter._atomic`).

- Additions happen in program order, the elements of one instruction in row-major
  order, blocks in grid order (row-major over the grid), each rounded once to the
  tensor's dtype; compiled backends add in the order their threads and blocks happen
  to run, so float sums agree within a tolerance.
- A max (min) replaces the element by the elementwise `max` (`min`) of it and the
  value (`tilelang.ir.ops`: floats ignore a NaN and order -0 below +0; two NaNs give
  NaN). That is commutative and associative on values, so every order gives the same
  values and the compiled backends agree bit for bit (a NaN result compares as NaN: the
  interpreter keeps one NaN, not its bits).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tilelang.dtypes import DType
from tilelang.ir.ops import ELEMENTWISE


def combined(op: str, dtype: DType, old: np.ndarray, term: np.ndarray) -> np.ndarray:
    """old ⊕ term (`op`: add, max or min), exact (float64 or wide integers), before the
    caller rounds it to `dtype`."""
    wide = np.float64 if dtype.is_float else dtype.value_dtype
    old, term = old.astype(wide), term.astype(wide)
    if op == "add":
        return old + term
    row = ELEMENTWISE[op]
    return row.reference(old, term) if dtype.is_float else row.int_reference(dtype, old, term)


def turns(picked: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> Iterator[tuple]:
    """(coordinates, which terms) of each turn of the updates at the coordinates
    `picked` (one per term) of a tensor of `shape`: turn k updates, at once, the k-th
    term sent to every element (distinct places), so the updates of one element happen
    one after the other, in the terms' order."""
    flat = np.ravel_multi_index(picked, shape)
    order = np.argsort(flat, kind="stable")
    turn = np.empty_like(flat)
    turn[order] = np.arange(flat.size) - np.searchsorted(flat[order], flat[order])
    for k in range(int(turn.max(initial=-1)) + 1):
        yield tuple(c[turn == k] for c in picked), turn == k
