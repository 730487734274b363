"""Register layouts: how a tile is spread over the threads of a block.

This module owns the register-layout algebra of docs/design.md §4: the `Layout` value, its
constructors, composition (`*`), division (`/`, `left_divide`), reduce, permute,
reshape, canonical form and equality, the numpy mapping `table()`, and the text form
(printer and lark parser).

A layout is a function ``(thread, local) -> tile index``, total over the tile.

Representation
--------------
Every dimension of the tile is factored into *modes*; within a dimension the modes are
row-major (the first mode is the most significant digit of the index). Every mode is
either a digit of the *thread* index or a digit of the *local* index: the ordered
``thread_modes`` list is read as a mixed-radix number (first = most significant) and so
is ``local_modes``. The thread list may also hold replication factors ``Rep(r)``: r
threads that differ only in that digit hold the same elements.

Modes are numbered dimension-major: the modes of dim 0 are ``0 .. len(mode_shape[0])-1``,
then those of dim 1, and so on. Example, the C fragment of ``mma.m16n8k16``::

    local(2, 1).spatial(8, 4).local(1, 2)
    == Layout(shape=(16, 8), mode_shape=((2, 8), (4, 2)),
              thread_modes=(1, 2), local_modes=(0, 3))

i.e. row = 8·l₀ + t₁, col = 2·t₂ + l₃ with lane = 4·t₁ + t₂ and local = 2·l₀ + l₃.

Algebra
-------
* ``A * B`` (composition, a Kronecker product; associative, not commutative):
  shape_i = A_i·B_i, index_i = a_i·B_i + b_i, thread = t_A·T_B + t_B, local = l_A·N_B + l_B.
  Method chaining is composition: ``local(2, 1).spatial(8, 4) == local(2, 1) * spatial(8, 4)``.
* ``L / B`` is the Q with ``Q * B == L``: it exists exactly when B's digits are the
  innermost digits of L's, per dim and in the thread and local lists (L's modes are split
  as needed, e.g. a size-8 mode gives up an inner 2). ``left_divide(L, B)`` is the Q with
  ``B * Q == L`` (outermost digits). Otherwise `LayoutDivisionError` names the dim or the
  digit that does not match. Division is the instruction-selection test.

Decisions
---------
* ``replicated(n, rank=1)`` is n threads holding the same single element; chained, as in
  ``spatial(8, 4).replicated(2)``, it takes the rank of its receiver.
* ``reduce(dims, keepdims=True)`` keeps reduced dims with size 1 by default (easier for
  broadcasting); the thread modes of a reduced dim become replication, its local modes
  vanish.
* Equality and hashing are by canonical form (size-1 modes dropped, adjacent modes merged),
  which is unique for a given mapping, so ``local(2, 1).local(1, 2) == local(2, 2)``.
* ``str(layout)`` prints a constructor chain when the layout is one (found by peeling
  constructor factors off the inside of the canonical form), else the general form
  ``layout(shape=[..], modes=[[..], ..], threads=[..], locals=[..])`` whose mode ids are
  those of the canonical form and whose replication factors are written ``rep(r)``.

The text form is read back by `tilelang.ir.layout_parser`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tilelang.ir.memo import once, remembered_hash_of, state_without_hash

__all__ = [
    "Layout",
    "LayoutDivisionError",
    "LayoutError",
    "Rep",
    "column_local",
    "column_spatial",
    "format_layout",
    "left_divide",
    "local",
    "replicated",
    "spatial",
]


# --------------------------------------------------------------------------- errors


class LayoutError(ValueError):
    """An invalid layout or an operation a layout does not allow."""


class LayoutDivisionError(LayoutError):
    """A layout is not divisible by another; the message says which dim or mode fails."""


# --------------------------------------------------------------------------- the value


@dataclass(frozen=True)
class Rep:
    """A replication factor in a thread list: `size` threads hold the same elements."""

    size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _positive(self.size, "replication factor"))

    def __str__(self) -> str:
        return f"rep({self.size})"


ThreadMode = int | Rep  # an entry of a thread list: a mode id or a replication factor


def _positive(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LayoutError(f"{what} must be an int, got {value!r}")
    if value < 1:
        raise LayoutError(f"{what} must be positive, got {value}")
    return int(value)


def _positives(values: Sequence[object], what: str) -> tuple[int, ...]:
    values = tuple(values)  # exact positive ints, the usual case, are checked quickly
    ok = all(type(v) is int and v > 0 for v in values)
    return values if ok else tuple(_positive(v, what) for v in values)


def _mode_size(mode: ThreadMode, sizes: Sequence[int]) -> int:
    return mode.size if isinstance(mode, Rep) else sizes[mode]


@dataclass(frozen=True, eq=False)
class Layout:
    """A register layout; see the module docstring for the representation.

    Fields: `shape` (tile shape), `mode_shape` (per dim, its mode sizes, most significant
    first), `thread_modes` (mode ids and `Rep` factors, most significant first) and
    `local_modes` (mode ids, most significant first). Every mode id appears exactly once
    in `thread_modes` or `local_modes`.
    """

    shape: tuple[int, ...]
    mode_shape: tuple[tuple[int, ...], ...]
    thread_modes: tuple[ThreadMode, ...]
    local_modes: tuple[int, ...]

    def __post_init__(self) -> None:
        shape = _positives(self.shape, "tile size")
        mode_shape = tuple(_positives(dim, "mode size") for dim in self.mode_shape)
        if len(mode_shape) != len(shape):
            raise LayoutError(
                f"shape {list(shape)} has {len(shape)} dims but modes for {len(mode_shape)}"
            )
        for d, (size, modes) in enumerate(zip(shape, mode_shape, strict=True)):
            if math.prod(modes) != size:
                raise LayoutError(
                    f"dim {d} has size {size} but its modes {list(modes)} multiply to {math.prod(modes)}"
                )
        num_modes = sum(len(m) for m in mode_shape)
        threads = tuple(
            m if isinstance(m, Rep) else self._mode_id(m, num_modes) for m in self.thread_modes
        )
        locals_ = tuple(self._mode_id(m, num_modes) for m in self.local_modes)
        used = [m for m in threads if not isinstance(m, Rep)] + list(locals_)
        for mode in range(num_modes):
            if used.count(mode) != 1:
                where = "neither threads nor locals" if mode not in used else "more than once"
                raise LayoutError(
                    f"mode {mode} appears in {where}; every mode must appear exactly once"
                )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "mode_shape", mode_shape)
        object.__setattr__(self, "thread_modes", threads)
        object.__setattr__(self, "local_modes", locals_)

    @staticmethod
    def _mode_id(mode: object, num_modes: int) -> int:
        if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)):
            raise LayoutError(f"a mode id must be an int, got {mode!r}")
        if not 0 <= mode < num_modes:
            raise LayoutError(f"mode id {mode} is out of range: there are {num_modes} modes")
        return int(mode)

    # ----------------------------------------------------------------- counts

    @property
    def rank(self) -> int:
        return len(self.shape)

    @once  # a Layout is frozen: computed on first use (`tilelang.ir.memo`)
    def size(self) -> int:
        """Number of tile elements."""
        return math.prod(self.shape)

    @once
    def num_modes(self) -> int:
        """Number of modes (replication factors not counted)."""
        return sum(len(m) for m in self.mode_shape)

    @once
    def mode_sizes(self) -> tuple[int, ...]:
        """Size of each mode, by mode id."""
        return tuple(s for dim in self.mode_shape for s in dim)

    @once
    def mode_dims(self) -> tuple[int, ...]:
        """The dim of each mode, by mode id."""
        return tuple(d for d, dim in enumerate(self.mode_shape) for _ in dim)

    @once
    def num_threads(self) -> int:
        """Threads the layout spans, replication included."""
        return math.prod(_mode_size(m, self.mode_sizes) for m in self.thread_modes)

    @once
    def num_locals(self) -> int:
        """Elements each thread holds."""
        return math.prod(self.mode_sizes[m] for m in self.local_modes)

    @once
    def replication(self) -> int:
        """How many (thread, local) pairs hold each element."""
        return math.prod(m.size for m in self.thread_modes if isinstance(m, Rep))

    # ----------------------------------------------------------------- chaining constructors

    def local(self, *shape: int) -> Layout:
        """``self * local(*shape)``."""
        return self * local(*shape)

    def spatial(self, *shape: int) -> Layout:
        """``self * spatial(*shape)``."""
        return self * spatial(*shape)

    def column_local(self, *shape: int) -> Layout:
        """``self * column_local(*shape)``."""
        return self * column_local(*shape)

    def column_spatial(self, *shape: int) -> Layout:
        """``self * column_spatial(*shape)``."""
        return self * column_spatial(*shape)

    def replicated(self, n: int) -> Layout:
        """``self * replicated(n, rank=self.rank)``."""
        return self * replicated(n, rank=self.rank)

    # ----------------------------------------------------------------- algebra

    def __mul__(self, other: object) -> Layout:
        """Composition (Kronecker product): ``self`` is the outer, ``other`` the inner factor.

        shape_i = A_i·B_i, index_i = a_i·B_i + b_i, thread = t_A·T_B + t_B,
        local = l_A·N_B + l_B.
        """
        if not isinstance(other, Layout):
            return NotImplemented
        if self.rank != other.rank:
            raise LayoutError(
                f"cannot compose {self} (rank {self.rank}) with {other} (rank {other.rank}): ranks must match"
            )
        outer, inner = _Work.of(self), _Work.of(other, first_key=self.num_modes)
        outer.shape = [a * b for a, b in zip(outer.shape, inner.shape, strict=True)]
        outer.dims = [a + b for a, b in zip(outer.dims, inner.dims, strict=True)]
        outer.size.update(inner.size)
        outer.dim.update(inner.dim)
        outer.threads += inner.threads
        outer.locals += inner.locals
        return outer.to_layout()

    def __truediv__(self, other: object) -> Layout:
        """Right division: the Q with ``Q * other == self``; `LayoutDivisionError` if none."""
        if not isinstance(other, Layout):
            return NotImplemented
        return _divide(self, other, side="suffix")

    def left_divide(self, other: Layout) -> Layout:
        """Left division: the Q with ``other * Q == self``; `LayoutDivisionError` if none."""
        return _divide(self, other, side="prefix")

    def divisible_by(self, other: Layout) -> bool:
        """Whether ``self / other`` exists (the instruction-selection test)."""
        try:
            _divide(self, other, side="suffix")
        except LayoutDivisionError:
            return False
        return True

    def reduce(self, dims: int | Iterable[int], keepdims: bool = True) -> Layout:
        """The layout of the result of reducing `dims`.

        Thread modes of a reduced dim become replication (those threads now hold the same
        value), its local modes vanish. With `keepdims` the dims stay with size 1.
        """
        reduced = self._normalize_dims([dims] if isinstance(dims, int) else dims)
        w = _Work.of(self)
        for d in reduced:
            for key in w.dims[d]:
                if key in w.locals:
                    w.locals.remove(key)
                else:
                    w.threads[w.threads.index(key)] = Rep(w.size[key])
            w.dims[d], w.shape[d] = [], 1
        if not keepdims:
            w.dims = [keys for d, keys in enumerate(w.dims) if d not in reduced]
            w.shape = [s for d, s in enumerate(w.shape) if d not in reduced]
        return w.to_layout()

    def permute(self, perm: Sequence[int]) -> Layout:
        """Reorder the tile's dims: new dim k is old dim ``perm[k]`` (numpy transpose)."""
        perm = list(perm)
        if sorted(perm) != list(range(self.rank)):
            raise LayoutError(f"permute: {perm} is not a permutation of the {self.rank} dims")
        w = _Work.of(self)
        w.dims = [w.dims[p] for p in perm]
        w.shape = [w.shape[p] for p in perm]
        return w.to_layout()

    def reshape(self, new_shape: Sequence[int]) -> Layout:
        """The same (thread, local) -> row-major flat index mapping on a tile of `new_shape`.

        Possible when every boundary between new dims falls between modes, or inside a
        mode whose size the boundary's factor divides; otherwise `LayoutError`.
        """
        new_shape = [_positive(s, "reshape size") for s in new_shape]
        if math.prod(new_shape) != self.size:
            raise LayoutError(f"cannot reshape {list(self.shape)} to {new_shape}: sizes differ")
        w = _Work.of(self.canonicalize())
        old_dim = dict(w.dim)  # for error messages; a split keeps the key of the high digit
        # Flatten (row-major over dims) and merge again: a mode may span old dims now.
        w.dims, w.shape = [[k for keys in w.dims for k in keys]], [self.size]
        w.rebuild_dim_map()
        w.canonicalize()
        flat = w.dims[0]
        new_dims: list[list[int]] = []
        for d in reversed(range(len(new_shape))):  # innermost new dim first
            taken: list[int] = []
            need = new_shape[d]  # the factor new dim d still lacks
            while need > 1:
                key = flat[-1]
                size = w.size[key]
                if need % size == 0:  # the whole mode fits
                    need //= size
                elif size % need == 0:  # split off the mode's low digit
                    w.split(key, need)
                    need = 1
                else:
                    raise LayoutError(
                        f"cannot reshape {list(self.shape)} to {new_shape}: new dim {d} needs an "
                        f"inner factor of {need}, but the next digit is a size-{size} mode of "
                        f"dim {old_dim[key]} ({w.origin_of(key)}) and {need} does not divide {size}"
                    )
                taken.append(flat.pop())
            new_dims.append(taken[::-1])
        w.dims, w.shape = new_dims[::-1], list(new_shape)
        w.rebuild_dim_map()
        return w.to_layout()

    def canonicalize(self) -> Layout:
        """The canonical form: size-1 modes dropped, adjacent same-kind modes merged.

        Two modes merge when they are consecutive in their dim and consecutive (same
        order) in the thread or local list: their digits then read the same in both.
        Adjacent replication factors merge too.
        """
        return self._canonical

    @once
    def _canonical(self) -> Layout:
        w = _Work.of(self)
        w.canonicalize()
        return w.to_layout()

    @once
    def _key(self) -> tuple[object, ...]:
        c = self._canonical
        return (c.shape, c.mode_shape, c.thread_modes, c.local_modes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self._key == other._key

    __hash__ = remembered_hash_of("_key")  # hash(self._key), once: types hash layouts often
    __getstate__ = state_without_hash

    def _normalize_dims(self, dims: Iterable[int]) -> list[int]:
        out = []
        for d in dims:
            if not -self.rank <= d < self.rank:
                raise LayoutError(f"dim {d} is out of range for rank {self.rank}")
            out.append(d % self.rank)
        return sorted(set(out))

    # ----------------------------------------------------------------- the mapping

    def table(self) -> np.ndarray:
        """int64 array [num_threads, num_locals, rank]: the tile index each pair holds."""
        sizes = self.mode_sizes
        coord: dict[int, np.ndarray] = {}
        for modes, index in (
            (self.thread_modes, np.arange(self.num_threads, dtype=np.int64)[:, None]),
            (self.local_modes, np.arange(self.num_locals, dtype=np.int64)[None, :]),
        ):
            stride = 1
            for mode in reversed(modes):
                size = _mode_size(mode, sizes)
                if not isinstance(mode, Rep):
                    coord[mode] = (index // stride) % size
                stride *= size
        out = np.zeros((self.num_threads, self.num_locals, self.rank), dtype=np.int64)
        mode = 0
        for d, modes in enumerate(self.mode_shape):
            index = np.zeros((1, 1), dtype=np.int64)
            for size in modes:
                index = index * size + coord[mode]
                mode += 1
            out[:, :, d] = index
        return out

    def owners(self) -> np.ndarray:
        """int64 array [*shape, replication, 2]: the (thread, local) pairs holding each element.

        Pairs of one element are in increasing (thread, local) order.
        """
        table = self.table().reshape(-1, self.rank)
        if self.rank:
            flat = np.ravel_multi_index(tuple(table.T), self.shape)
        else:
            flat = np.zeros(len(table), dtype=np.int64)
        order = np.argsort(flat, kind="stable")
        pairs = np.stack([order // self.num_locals, order % self.num_locals], axis=-1)
        return pairs.reshape(*self.shape, self.replication, 2)

    def is_bijective(self) -> bool:
        """Whether every element is held by exactly one (thread, local) pair (checked on the table)."""
        if self.num_threads * self.num_locals != self.size:
            return False
        table = self.table().reshape(-1, self.rank)
        if not self.rank:
            return True
        flat = np.ravel_multi_index(tuple(table.T), self.shape)
        return len(np.unique(flat)) == self.size

    # ----------------------------------------------------------------- text

    @once
    def _text(self) -> str:  # formatted once: messages and printers format layouts often
        return format_layout(self)

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


# --------------------------------------------------------------------------- constructors


def _single(shape: Sequence[int], *, threads: bool, row_major: bool) -> Layout:
    sizes = tuple(_positive(s, "layout size") for s in shape)
    order = tuple(range(len(sizes))) if row_major else tuple(reversed(range(len(sizes))))
    return Layout(
        shape=sizes,
        mode_shape=tuple((s,) for s in sizes),
        thread_modes=order if threads else (),
        local_modes=() if threads else order,
    )


def local(*shape: int) -> Layout:
    """One thread holds the whole tile; local index = row-major index."""
    return _single(shape, threads=False, row_major=True)


def spatial(*shape: int) -> Layout:
    """One element per thread; thread index = row-major index."""
    return _single(shape, threads=True, row_major=True)


def column_local(*shape: int) -> Layout:
    """One thread holds the whole tile; local index = column-major index (dim 0 fastest)."""
    return _single(shape, threads=False, row_major=False)


def column_spatial(*shape: int) -> Layout:
    """One element per thread; thread index = column-major index (dim 0 fastest)."""
    return _single(shape, threads=True, row_major=False)


def replicated(n: int, rank: int = 1) -> Layout:
    """n threads holding the same single element: a tile of shape (1,)*rank."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise LayoutError(f"rank must be a non-negative int, got {rank!r}")
    return Layout(
        shape=(1,) * rank, mode_shape=((),) * rank, thread_modes=(Rep(n),), local_modes=()
    )


def left_divide(layout: Layout, divisor: Layout) -> Layout:
    """The Q with ``divisor * Q == layout``; `LayoutDivisionError` if none."""
    return _divide(layout, divisor, side="prefix")


# --------------------------------------------------------------------------- working form


@dataclass
class _Work:
    """A mutable layout whose modes are keyed by arbitrary ints, for the algorithms.

    Keys are stable under splitting (the high part keeps the key), so callers can hold
    on to them; `to_layout` renumbers dim-major.
    """

    shape: list[int]
    dims: list[list[int]]
    size: dict[int, int]
    dim: dict[int, int]
    threads: list[ThreadMode]
    locals: list[int]

    @classmethod
    def of(cls, layout: Layout, first_key: int = 0) -> _Work:
        dims, size, dim = [], {}, {}
        key = first_key
        for d, modes in enumerate(layout.mode_shape):
            keys = []
            for s in modes:
                size[key], dim[key] = s, d
                keys.append(key)
                key += 1
            dims.append(keys)
        return cls(
            shape=list(layout.shape),
            dims=dims,
            size=size,
            dim=dim,
            threads=[m if isinstance(m, Rep) else m + first_key for m in layout.thread_modes],
            locals=[m + first_key for m in layout.local_modes],
        )

    def to_layout(self) -> Layout:
        ids: dict[int, int] = {}
        mode_shape = []
        for keys in self.dims:
            for key in keys:
                ids[key] = len(ids)
            mode_shape.append(tuple(self.size[k] for k in keys))
        return Layout(
            shape=tuple(self.shape),
            mode_shape=tuple(mode_shape),
            thread_modes=tuple(m if isinstance(m, Rep) else ids[m] for m in self.threads),
            local_modes=tuple(ids[k] for k in self.locals),
        )

    def rebuild_dim_map(self) -> None:
        self.dim = {k: d for d, keys in enumerate(self.dims) for k in keys}

    def list_of(self, key: int) -> list:
        return self.locals if key in self.locals else self.threads

    def origin_of(self, key: int) -> str:
        return "held in locals" if key in self.locals else "held by threads"

    def split(self, key: int, low: int) -> tuple[int, int]:
        """Split mode `key` into (high, low) digits with the low one of size `low`."""
        size = self.size[key]
        assert size % low == 0, (size, low)
        new = max(self.size) + 1
        self.size[key], self.size[new], self.dim[new] = size // low, low, self.dim[key]
        for seq in (self.dims[self.dim[key]], self.list_of(key)):
            seq.insert(seq.index(key) + 1, new)
        return key, new

    def reverse(self) -> None:
        """Reverse every digit order: turns prefix questions into suffix questions."""
        for keys in self.dims:
            keys.reverse()
        self.threads.reverse()
        self.locals.reverse()

    def mergeable(self, a: ThreadMode, b: ThreadMode) -> bool:
        if isinstance(a, Rep) or isinstance(b, Rep) or self.dim[a] != self.dim[b]:
            return False
        keys = self.dims[self.dim[a]]
        return keys.index(a) + 1 == keys.index(b)

    def canonicalize(self) -> None:
        for keys in self.dims:
            keys[:] = [k for k in keys if self.size[k] != 1]
        self.threads = [m for m in self.threads if _mode_size(m, self.size) != 1]  # type: ignore[arg-type]
        self.locals = [k for k in self.locals if self.size[k] != 1]
        merged: list[ThreadMode] = []
        for m in self.threads:
            if merged and isinstance(m, Rep) and isinstance(merged[-1], Rep):
                merged[-1] = Rep(merged[-1].size * m.size)
            else:
                merged.append(m)
        self.threads = merged
        # One pass per list suffices: merging (a, b) changes only a's successors.
        for seq in (self.threads, self.locals):
            i = 0
            while i + 1 < len(seq):
                a, b = seq[i], seq[i + 1]
                if self.mergeable(a, b):
                    self.size[a] *= self.size[b]  # type: ignore[index]
                    del seq[i + 1]
                    self.dims[self.dim[b]].remove(b)  # type: ignore[index]
                else:
                    i += 1


def _describe(w: _Work, mode: ThreadMode) -> str:
    if isinstance(mode, Rep):
        return f"replication x{mode.size}"
    return f"a size-{w.size[mode]} mode of dim {w.dim[mode]}"


def _describe_dim(w: _Work, d: int, keys: list[int]) -> str:
    parts = [f"{w.size[k]} ({'local' if k in w.locals else 'thread'})" for k in keys]
    return "[" + ", ".join(parts) + "]" if parts else "[] (size 1)"


# --------------------------------------------------------------------------- division


def _divide(layout: Layout, divisor: Layout, side: Literal["suffix", "prefix"]) -> Layout:
    """Q with Q * divisor == layout (suffix) or divisor * Q == layout (prefix).

    Both sides are canonical, so matching is forced: the divisor's innermost thread
    (local) digit must be the low part of the layout's innermost thread (local) digit,
    and so on outwards, splitting layout modes where the divisor's size divides them.
    Then in every dim the matched modes must be exactly the innermost ones. The prefix
    case reverses every digit order and reuses the suffix algorithm.
    """
    verb = "divide" if side == "suffix" else "left-divide"
    inner = "innermost" if side == "suffix" else "outermost"

    def fail(reason: str) -> LayoutDivisionError:
        return LayoutDivisionError(f"cannot {verb} {layout} by {divisor}: {reason}")

    if layout.rank != divisor.rank:
        raise fail(f"ranks differ ({layout.rank} vs {divisor.rank})")
    for d, (a, b) in enumerate(zip(layout.shape, divisor.shape, strict=True)):
        if a % b:
            raise fail(f"dim {d} has size {a}, not a multiple of the divisor's {b}")
    for what, a, b in (
        ("threads", layout.num_threads, divisor.num_threads),
        ("locals", layout.num_locals, divisor.num_locals),
    ):
        if a % b:
            raise fail(f"{a} {what} is not a multiple of the divisor's {b} {what}")

    lw, bw = _Work.of(layout.canonicalize()), _Work.of(divisor.canonicalize())
    if side == "prefix":
        lw.reverse()
        bw.reverse()
    image: dict[int, int] = {}
    matched = {}
    for kind in ("thread", "local"):
        llist = lw.threads if kind == "thread" else lw.locals
        blist = bw.threads if kind == "thread" else bw.locals
        pos = len(llist)  # llist[pos:] is matched
        for nth, b in enumerate(reversed(blist), start=1):
            where = f"{kind} digit {nth} from the {inner} side"
            if pos == 0:
                raise fail(
                    f"{where}: the divisor has {_describe(bw, b)}, the layout has no {kind} digit left"
                )
            i = pos - 1
            have = llist[i]
            if isinstance(b, Rep):
                if not isinstance(have, Rep):
                    raise fail(
                        f"{where}: the divisor has {_describe(bw, b)}, the layout has {_describe(lw, have)}"
                    )
                if have.size % b.size:
                    raise fail(
                        f"{where}: the divisor's replication x{b.size} does not divide the layout's x{have.size}"
                    )
                if have.size != b.size:
                    llist[i : i + 1] = [Rep(have.size // b.size), Rep(b.size)]
                    i += 1
            else:
                if isinstance(have, Rep) or lw.dim[have] != bw.dim[b]:
                    raise fail(
                        f"{where}: the divisor has {_describe(bw, b)}, the layout has {_describe(lw, have)}"
                    )
                if lw.size[have] % bw.size[b]:
                    raise fail(
                        f"{where}: the divisor's size-{bw.size[b]} mode of dim {bw.dim[b]} does not divide "
                        f"the layout's size-{lw.size[have]} mode"
                    )
                if lw.size[have] != bw.size[b]:
                    _, have = lw.split(have, bw.size[b])
                    i += 1
                image[b] = have
            pos = i
        matched[kind] = len(llist) - pos

    quotient_dims = []
    for d in range(layout.rank):
        want = [image[k] for k in bw.dims[d]]
        have_keys = lw.dims[d]
        cut = len(have_keys) - len(want)
        if have_keys[cut:] != want:
            shown = have_keys[::-1] if side == "prefix" else have_keys
            wanted = bw.dims[d][::-1] if side == "prefix" else bw.dims[d]
            raise fail(
                f"dim {d}: the divisor's modes {_describe_dim(bw, d, wanted)} must be the {inner} "
                f"modes of the layout's dim {d}, which splits as {_describe_dim(lw, d, shown)}"
            )
        quotient_dims.append(have_keys[:cut])

    lw.dims = quotient_dims
    lw.shape = [a // b for a, b in zip(layout.shape, divisor.shape, strict=True)]
    lw.threads = lw.threads[: len(lw.threads) - matched["thread"]]
    lw.locals = lw.locals[: len(lw.locals) - matched["local"]]
    if side == "prefix":
        lw.reverse()
    return lw.to_layout().canonicalize()


# --------------------------------------------------------------------------- printing

_Factor = tuple[str, tuple[int, ...]]  # (constructor name, sizes) or ("replicated", (n,))


def _peel_block(w: _Work, seq: list) -> list[int]:
    """The longest suffix of `seq` one local/spatial constructor can produce.

    Each digit must be the innermost mode of its dim, and their dims must run in one
    direction (increasing: row-major; decreasing: column-major).
    """
    block: list[int] = []
    for mode in reversed(seq):
        if isinstance(mode, Rep) or w.dims[w.dim[mode]][-1] != mode:
            break
        if block:
            increasing = w.dim[mode] < w.dim[block[0]]
            if len(block) >= 2 and increasing != (w.dim[block[0]] < w.dim[block[1]]):
                break
        block.insert(0, mode)
    return block


def _chain_factors(layout: Layout) -> list[_Factor] | None:
    """Constructor factors whose product is `layout`, outermost first; None if none exist.

    Peels the innermost factor off the canonical form until nothing is left: a trailing
    replication factor, else the longest local block, else the longest thread block.
    Peeling the longest block is safe: the digits it takes from an outer factor commute
    past the factors in between (they touch other dims or other lists).
    """
    w = _Work.of(layout.canonicalize())
    factors: list[_Factor] = []
    while w.threads or w.locals:
        if w.threads and isinstance(w.threads[-1], Rep):
            factors.append(("replicated", (w.threads.pop().size,)))  # type: ignore[union-attr]
            continue
        kind, seq = "local", w.locals
        block = _peel_block(w, seq)
        if not block:
            kind, seq = "spatial", w.threads
            block = _peel_block(w, seq)
        if not block:
            return None  # neither list ends in a constructor's digits
        sizes = [1] * layout.rank
        for key in block:
            sizes[w.dim[key]] = w.size[key]
            w.dims[w.dim[key]].pop()
        del seq[len(seq) - len(block) :]
        if len(block) >= 2 and w.dim[block[0]] > w.dim[block[1]]:
            kind = "column_" + kind
        factors.append((kind, tuple(sizes)))
    return factors[::-1]


def _ints(values: Iterable[object]) -> str:
    return ", ".join(str(v) for v in values)


def format_layout(layout: Layout) -> str:
    """The text form: a constructor chain when the layout is one, else the general form."""
    factors = _chain_factors(layout)
    if factors is None:
        c = layout.canonicalize()
        modes = ", ".join(f"[{_ints(m)}]" for m in c.mode_shape)
        return (
            f"layout(shape=[{_ints(c.shape)}], modes=[{modes}], "
            f"threads=[{_ints(c.thread_modes)}], locals=[{_ints(c.local_modes)}])"
        )
    if not factors:
        return f"local({_ints(layout.shape)})"
    parts = []
    for i, (kind, sizes) in enumerate(factors):
        if kind == "replicated":
            rank = f", rank={layout.rank}" if i == 0 and layout.rank != 1 else ""
            parts.append(f"replicated({sizes[0]}{rank})")
        else:
            parts.append(f"{kind}({_ints(sizes)})")
    return ".".join(parts)
