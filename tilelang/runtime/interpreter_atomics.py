"""What the reference interpreter's atomic updates (`Atomic`, `ScatterAtomic`: add, max,
min, xchg, cas) compute, apart from how it reads and writes tensors (`interpreter._atomic`).

- Additions happen in program order, the elements of one instruction in row-major
  order, blocks in grid order (row-major over the grid), each rounded once to the
  tensor's dtype; compiled backends add in the order their threads and blocks happen
  to run, so float sums agree within a tolerance.
- A max (min) replaces the element by the elementwise `max` (`min`) of it and the
  value (`tilelang.ir.ops`: floats ignore a NaN and order -0 below +0; two NaNs give
  NaN). That is commutative and associative on values, so every order gives the same
  values and the compiled backends agree bit for bit (a NaN result compares as NaN: the
  interpreter keeps one NaN, not its bits).
- An exchange or compare-and-swap, and every old value an update returns, depend on
  the order where blocks (or a scatter's elements) meet at one element: the
  interpreter's order is one the compiled backends may take, so compare what every
  order agrees on (the set of slots a fetch-add hands out, the one winner of a cas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from tilelang.dtypes import DType
from tilelang.ir.ops import ELEMENTWISE


def combined(
    op: str, dtype: DType, old: np.ndarray, term: np.ndarray, expected: np.ndarray | None = None
) -> np.ndarray:
    """old ⊕ term (`op`: add, max or min), exact (float64 or wide integers), before the
    caller rounds it to `dtype`; xchg gives the term, cas the term where old equals
    `expected` (integers only: values are their bits) and old elsewhere."""
    wide = np.float64 if dtype.is_float else dtype.value_dtype
    old, term = old.astype(wide), term.astype(wide)
    if op == "xchg":
        return term
    if op == "cas":
        return np.where(old == np.asarray(expected).astype(wide), term, old)
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


def update(
    op: str,
    dtype: DType,
    codes: np.ndarray,
    picked: tuple[np.ndarray, ...],
    terms: np.ndarray,
    expected: np.ndarray | None,
    encode: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """Updates `codes` (a tensor's) at the coordinates `picked` with the `terms` (and a
    cas's `expected`), one after the other (`turns`); `encode` rounds exact values to
    codes. Returns each term's element value just before its update."""
    before = np.zeros(terms.shape, dtype=dtype.value_dtype)
    for at, turn in turns(picked, codes.shape):
        old = dtype.decode(codes[at])
        before[turn] = old
        compare = None if expected is None else expected[turn]
        codes[at] = encode(combined(op, dtype, old, terms[turn], compare))
    return before


def placed(before: np.ndarray, updated: np.ndarray) -> np.ndarray:
    """The result tile of an update: the old values where `updated` (a bool tile) holds,
    in row-major order as `update` returned them, 0 elsewhere."""
    result = np.zeros(updated.shape, dtype=before.dtype)
    result[updated] = before
    return result
