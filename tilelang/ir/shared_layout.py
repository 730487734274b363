"""Shared-memory layouts and the bank-conflict model.

This module owns:

* ``SharedLayout`` — where each index of a tile lives in a shared-memory buffer: every
  dimension is factored into *modes* (row-major within the dimension, like register
  layouts), each mode with its own stride, plus an optional XOR ``Swizzle``;
* its text form (``str``) and parser (``parse_shared_layout``, grammar
  ``SHARED_LAYOUT_GRAMMAR``);
* the CUDA shared-memory bank model (``wavefronts``, ``bank_conflicts``) and the count of
  conflicts a warp pays when it moves a register layout to or from a shared layout
  (``warp_access_conflicts``).

Units. Offsets and strides are in **elements** of the buffer's dtype, and so is the swizzle:
it is applied to the element offset. Element units keep a layout independent of how it is
viewed (a byte-level swizzle would need the dtype at every ``offset`` call); the standard
byte-level patterns are available through ``Swizzle.for_bytes(width, dtype_bits)``, which
converts them to element units. Byte addresses appear only in the bank model.

Text form::

    shared(8:64, 64:1)                                  # row_major(8, 64)
    shared((8, 8):(512, 8), (8, 8):(64, 1))             # 64x64 as 8x8 blocks of 8x8
    shared(8:64, 64:1) ^ swizzle(3, 3, 6)               # 128-byte swizzle, 16-bit data

A dimension is ``size:stride`` or ``(size, ...):(stride, ...)`` (modes listed most
significant first). ``row_major(...)`` and ``column_major(...)`` are accepted as input too.

Bank model (documented in ``wavefronts``): 32 banks of 4 bytes; a warp's request is split
into phases of ``128 // max(access_bytes, 4)`` consecutive lanes (the whole warp for
accesses of up to 4 bytes, half-warps for 8 bytes, quarter-warps for 16 bytes); each phase
takes as many wavefronts as the largest number of *distinct* 4-byte words it touches in any
one bank (lanes touching the same word share it: broadcast). Conflicts are the wavefronts
beyond one per phase.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from lark import Lark, Transformer, UnexpectedInput

from tilelang.ir.layout import Layout
from tilelang.ir.memo import once, remembered_hash, state_without_hash

__all__ = [
    "BANK_BYTES",
    "NUM_BANKS",
    "SHARED_LAYOUT_GRAMMAR",
    "WARP_SIZE",
    "WAVEFRONT_BYTES",
    "Mode",
    "SharedLayout",
    "Swizzle",
    "bank_conflicts",
    "blocked",
    "column_major",
    "ideal_wavefronts",
    "parse_shared_layout",
    "phase_size",
    "row_major",
    "strided",
    "warp_access_addresses",
    "warp_access_conflicts",
    "wavefronts",
]

NUM_BANKS = 32
BANK_BYTES = 4
WARP_SIZE = 32
#: Bytes one wavefront can serve: one 4-byte word from each of the 32 banks.
WAVEFRONT_BYTES = NUM_BANKS * BANK_BYTES
ACCESS_BYTES = (1, 2, 4, 8, 16)


# --------------------------------------------------------------------------- swizzle


@dataclass(frozen=True)
class Swizzle:
    """XOR swizzle on an element offset.

    ``apply(o) = o ^ (((o >> shift) & ((1 << bits) - 1)) << base)``: the ``bits`` bits of
    the offset starting at bit ``shift`` are XOR-ed into the ``bits`` bits starting at bit
    ``base``. It is a bijection whenever ``shift != base`` (over GF(2) it is the identity
    plus a strictly triangular matrix), and it only changes bits below
    ``base + bits``, so it permutes every aligned block of ``2**(base + bits)`` elements.
    """

    bits: int
    base: int
    shift: int

    def __post_init__(self) -> None:
        if min(self.bits, self.base, self.shift) < 0:
            raise ValueError(f"{self}: bits, base and shift must be non-negative")
        if self.bits > 0 and self.shift == self.base:
            # o ^ (o's own bits) clears them: not a bijection.
            raise ValueError(f"{self}: shift must differ from base")

    @property
    def period(self) -> int:
        """Elements after which the pattern repeats, 2^(shift + bits) (1 without bits):
        adding a multiple of it to an offset commutes with the swizzle when `base` is
        below `shift`, and tiles starting on it see the same pattern."""
        return 1 << (self.shift + self.bits) if self.bits else 1

    @staticmethod
    def for_bytes(width: int, dtype_bits: int) -> Swizzle:
        """The standard 32/64/128-byte swizzle, expressed in elements of ``dtype_bits``.

        In byte units these patterns XOR bits 7.. of the address (which 128-byte row)
        into bits 4.. (which 16-byte chunk of the row): 3 bits for 128 B, 2 for 64 B, 1 for
        32 B — ``Swizzle(3, 4, 7)`` and so on on byte offsets. Converted to elements, the
        128-byte one for 16-bit data is ``Swizzle(3, 3, 6)``: in an 8x64 row-major tile,
        the 8-element chunk ``c`` of row ``r`` is stored at chunk ``c ^ r``.
        """
        bits = {32: 1, 64: 2, 128: 3}.get(width)
        if bits is None:
            raise ValueError(f"swizzle width must be 32, 64 or 128 bytes, got {width}")
        if dtype_bits <= 0 or dtype_bits & (dtype_bits - 1) or dtype_bits > 128:
            raise ValueError(
                f"byte swizzles need a power-of-two element size up to 128 bits, got {dtype_bits}"
            )
        chunk_elems = 128 // dtype_bits  # elements in the 16-byte unit that is permuted
        base = chunk_elems.bit_length() - 1
        return Swizzle(bits, base, base + 3)

    def apply(self, offset: Any) -> Any:
        """Swizzle an int or an integer numpy array of element offsets."""
        if self.bits == 0:
            return offset
        mask = (1 << self.bits) - 1
        return offset ^ (((offset >> self.shift) & mask) << self.base)

    def __str__(self) -> str:
        return f"swizzle({self.bits}, {self.base}, {self.shift})"


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Mode:
    """One factor of a dimension: ``size`` index values, ``stride`` elements apart."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"mode size must be >= 1, got {self.size}")
        if self.stride < 0:
            raise ValueError(f"mode stride must be >= 0, got {self.stride}")

    def __str__(self) -> str:
        return f"{self.size}:{self.stride}"


@dataclass(frozen=True)
class SharedLayout:
    """Offset (in elements) of every index of a tile in a shared buffer.

    ``dims[d]`` factors dimension ``d`` into modes, most significant first: the index
    ``i`` of a dimension with modes ``(s0, s1)`` has digits ``(i // s1, i % s1)``, and its
    offset contribution is ``(i // s1) * stride0 + (i % s1) * stride1``. The swizzle, if
    any, is applied to the summed offset.
    """

    dims: tuple[tuple[Mode, ...], ...]
    swizzle: Swizzle | None = None

    __hash__ = remembered_hash("dims", "swizzle")  # the generated hash, once
    __getstate__ = state_without_hash

    def __post_init__(self) -> None:
        if not isinstance(self.dims, tuple) or not all(
            isinstance(d, tuple) and d and all(isinstance(m, Mode) for m in d) for d in self.dims
        ):
            raise TypeError("SharedLayout.dims must be a tuple of non-empty tuples of Mode")
        if not self.dims:
            raise ValueError("a shared layout needs at least one dimension")
        if self.swizzle is not None and not isinstance(self.swizzle, Swizzle):
            raise TypeError("SharedLayout.swizzle must be a Swizzle or None")

    # ---- shape

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(math.prod(m.size for m in d) for d in self.dims)

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def num_elements(self) -> int:
        return math.prod(self.shape)

    # ---- mapping

    def unswizzled_offset(self, index: Sequence[Any]) -> Any:
        """The strided offset before the swizzle (ints or broadcasting numpy arrays)."""
        if len(index) != self.rank:
            raise ValueError(
                f"index has {len(index)} coordinates but the layout {self} has rank {self.rank}"
            )
        scalar = all(isinstance(i, (int, np.integer)) for i in index)
        total: Any = 0
        for d, (i, modes) in enumerate(zip(index, self.dims, strict=True)):
            i = np.asarray(i, dtype=np.int64)
            extent = self.shape[d]
            if i.size and (i.min() < 0 or i.max() >= extent):
                raise IndexError(
                    f"index out of range in dimension {d}: extent {extent}, "
                    f"got values in [{i.min()}, {i.max()}]"
                )
            # Peel the digits least significant mode first.
            rest = i
            for mode in reversed(modes):
                total = total + (rest % mode.size) * mode.stride
                rest = rest // mode.size
        return int(total) if scalar else np.asarray(total, dtype=np.int64)

    def offset(self, index: Sequence[Any]) -> Any:
        """Element offset of a tile index: a tuple of ints, or of numpy arrays (broadcast)."""
        raw = self.unswizzled_offset(index)
        return raw if self.swizzle is None else self.swizzle.apply(raw)

    def table(self) -> np.ndarray:
        """Offsets of the whole tile, an int64 array of the tile's shape."""
        return self._table.copy()

    @once
    def _table(self) -> np.ndarray:
        grids = np.indices(self.shape, dtype=np.int64) if self.rank else ()
        return np.asarray(self.offset(tuple(grids)), dtype=np.int64).reshape(self.shape)

    @once
    def size(self) -> int:
        """Elements the buffer must hold: the largest offset plus one."""
        return int(self._table.max()) + 1 if self._table.size else 0

    def is_injective(self) -> bool:
        """Whether no two tile indices share an offset."""
        return int(np.unique(self._table).size) == self._table.size

    # ---- builders

    def swizzled(
        self, bits: int | Swizzle, base: int | None = None, shift: int | None = None
    ) -> SharedLayout:
        """This layout with a swizzle: ``swizzled(Swizzle(...))`` or ``swizzled(b, m, s)``."""
        if isinstance(bits, Swizzle):
            if base is not None or shift is not None:
                raise TypeError("swizzled(Swizzle) takes no further arguments")
            return SharedLayout(self.dims, bits)
        if base is None or shift is None:
            raise TypeError("swizzled(bits, base, shift) needs all three numbers")
        return SharedLayout(self.dims, Swizzle(bits, base, shift))

    def permute(self, perm: Sequence[int]) -> SharedLayout:
        """The same memory with dimension `perm[i]` as dimension i (a transposed view:
        offsets and swizzle unchanged)."""
        perm = tuple(perm)
        if sorted(perm) != list(range(self.rank)):
            raise ValueError(f"perm must be a permutation of 0..{self.rank - 1}, got {list(perm)}")
        return SharedLayout(tuple(self.dims[p] for p in perm), self.swizzle)

    def unswizzled(self) -> SharedLayout:
        return SharedLayout(self.dims, None)

    # ---- text

    def __str__(self) -> str:
        def dim_text(modes: tuple[Mode, ...]) -> str:
            if len(modes) == 1:
                return str(modes[0])
            sizes = ", ".join(str(m.size) for m in modes)
            strides = ", ".join(str(m.stride) for m in modes)
            return f"({sizes}):({strides})"

        text = f"shared({', '.join(dim_text(d) for d in self.dims)})"
        return text if self.swizzle is None else f"{text} ^ {self.swizzle}"


# --------------------------------------------------------------------------- constructors


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"a shared layout needs a non-empty shape of positive sizes, got {shape}")
    return shape


def strided(shape: Sequence[int], strides: Sequence[int]) -> SharedLayout:
    """One mode per dimension with the given strides, e.g. ``strided((32, 32), (33, 1))``."""
    shape = _check_shape(shape)
    if len(strides) != len(shape):
        raise ValueError(f"{len(shape)} sizes but {len(strides)} strides")
    return SharedLayout(tuple((Mode(s, int(st)),) for s, st in zip(shape, strides, strict=True)))


def row_major(*shape: int) -> SharedLayout:
    """Dense, last dimension fastest."""
    shape = _check_shape(shape)
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    return strided(shape, strides)


def column_major(*shape: int) -> SharedLayout:
    """Dense, first dimension fastest."""
    shape = _check_shape(shape)
    strides = [math.prod(shape[:d]) for d in range(len(shape))]
    return strided(shape, strides)


def blocked(shape: Sequence[int], block: Sequence[int]) -> SharedLayout:
    """Dense blocks of shape ``block``, each row-major, the blocks themselves row-major.

    ``blocked((64, 64), (8, 8))`` stores a 64x64 tile as 8x8 blocks of 8x8 elements:
    element (r, c) is at ``((r//8)*8 + c//8) * 64 + (r%8)*8 + c%8``.
    """
    shape, block = _check_shape(shape), _check_shape(block)
    if len(shape) != len(block) or any(s % b for s, b in zip(shape, block, strict=True)):
        raise ValueError(f"block {block} does not tile shape {shape}")
    grid = tuple(s // b for s, b in zip(shape, block, strict=True))
    block_elems = math.prod(block)
    dims = []
    for d in range(len(shape)):
        outer = Mode(grid[d], math.prod(grid[d + 1 :]) * block_elems)
        inner = Mode(block[d], math.prod(block[d + 1 :]))
        dims.append((outer, inner))
    return SharedLayout(tuple(dims))


# --------------------------------------------------------------------------- text form

SHARED_LAYOUT_GRAMMAR = r"""
start: base ("^" swizzle)?

?base: "shared" "(" dim ("," dim)* ")"        -> shared
     | "row_major" "(" ints ")"                 -> row_major
     | "column_major" "(" ints ")"              -> column_major

dim: INT ":" INT                                -> simple_dim
   | "(" ints ")" ":" "(" ints ")"              -> moded_dim

ints: INT ("," INT)* ","?

swizzle: "swizzle" "(" INT "," INT "," INT ")"

%import common.INT
%import common.WS
%ignore WS
"""


class _ToLayout(Transformer):
    def ints(self, items: list[Any]) -> list[int]:
        return [int(t) for t in items]

    def simple_dim(self, items: list[Any]) -> tuple[Mode, ...]:
        return (Mode(int(items[0]), int(items[1])),)

    def moded_dim(self, items: list[Any]) -> tuple[Mode, ...]:
        sizes, strides = items
        if len(sizes) != len(strides):
            raise ValueError(f"{len(sizes)} mode sizes but {len(strides)} strides")
        return tuple(Mode(s, st) for s, st in zip(sizes, strides, strict=True))

    def shared(self, items: list[Any]) -> SharedLayout:
        return SharedLayout(tuple(items))

    def row_major(self, items: list[Any]) -> SharedLayout:
        return row_major(*items[0])

    def column_major(self, items: list[Any]) -> SharedLayout:
        return column_major(*items[0])

    def swizzle(self, items: list[Any]) -> Swizzle:
        return Swizzle(*(int(t) for t in items))

    def start(self, items: list[Any]) -> SharedLayout:
        layout = items[0]
        return layout if len(items) == 1 else layout.swizzled(items[1])


_PARSER = Lark(SHARED_LAYOUT_GRAMMAR, parser="lalr")


def parse_shared_layout(text: str) -> SharedLayout:
    """Parse the text form written by ``str(SharedLayout)``."""
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise ValueError(
            f"cannot parse shared layout {text!r} at column {e.column}:\n{e.get_context(text)}"
        ) from None
    try:
        return _ToLayout().transform(tree)
    except Exception as e:  # lark wraps transformer errors; surface the cause.
        cause = e.__context__ or e
        raise ValueError(f"invalid shared layout {text!r}: {cause}") from None


# --------------------------------------------------------------------------- bank model


def phase_size(access_bytes: int) -> int:
    """Lanes served together: a phase moves at most one wavefront's 128 bytes."""
    if access_bytes not in ACCESS_BYTES:
        raise ValueError(f"access width must be one of {ACCESS_BYTES} bytes, got {access_bytes}")
    return WAVEFRONT_BYTES // max(access_bytes, BANK_BYTES)


def _check_addresses(byte_addresses: Any, access_bytes: int) -> np.ndarray:
    phase_size(access_bytes)  # validates the width before the addresses
    addr = np.asarray(byte_addresses)
    if addr.ndim != 1 or not 1 <= addr.size <= WARP_SIZE:
        raise ValueError(f"expected 1 to {WARP_SIZE} lane addresses, got shape {addr.shape}")
    if not np.issubdtype(addr.dtype, np.integer):
        raise TypeError(f"byte addresses must be integers, got {addr.dtype}")
    addr = addr.astype(np.int64)
    if addr.min() < 0:
        raise ValueError("byte addresses must be non-negative")
    misaligned = np.nonzero(addr % access_bytes)[0]
    if misaligned.size:
        lane = int(misaligned[0])
        raise ValueError(
            f"lane {lane} address {addr[lane]} is not aligned to its {access_bytes}-byte access"
        )
    return addr


def wavefronts(byte_addresses: np.ndarray, access_bytes: int) -> int:
    """Wavefronts one warp-wide shared-memory instruction needs.

    Model (the standard one for sm_50 and later): shared memory has 32 banks of 4-byte
    words, word ``w`` in bank ``w % 32``; a wavefront serves one word per bank. Lane ``i``
    touches the ``max(1, access_bytes // 4)`` words of ``[addr_i, addr_i + access_bytes)``.
    The warp is split into phases of ``128 // max(access_bytes, 4)`` consecutive lanes
    (32 lanes for 1/2/4-byte accesses, 16 for 8-byte, 8 for 16-byte, as for ``ldmatrix``
    and ``ld.shared.v4``), served one after another; a phase needs as many wavefronts as the
    largest number of distinct words it touches in any single bank. Lanes touching the
    same word share it (broadcast), so a repeated address costs nothing.

    ``byte_addresses`` holds one address per active lane (1 to 32, lane order), each
    aligned to ``access_bytes``.
    """
    addr = _check_addresses(byte_addresses, access_bytes)
    lanes_per_phase = phase_size(access_bytes)
    words_per_lane = max(1, access_bytes // BANK_BYTES)
    total = 0
    for start in range(0, addr.size, lanes_per_phase):
        phase = addr[start : start + lanes_per_phase]
        words = (phase[:, None] // BANK_BYTES + np.arange(words_per_lane)[None, :]).ravel()
        words = np.unique(words)
        total += int(np.bincount(words % NUM_BANKS, minlength=NUM_BANKS).max())
    return total


def ideal_wavefronts(num_lanes: int, access_bytes: int) -> int:
    """Wavefronts without conflicts: one per phase."""
    return -(-num_lanes // phase_size(access_bytes))


def bank_conflicts(byte_addresses: np.ndarray, access_bytes: int) -> int:
    """Extra wavefronts caused by bank conflicts: ``wavefronts - ideal`` (0 is perfect)."""
    n = np.asarray(byte_addresses).size
    return wavefronts(byte_addresses, access_bytes) - ideal_wavefronts(n, access_bytes)


# --------------------------------------------------------------------------- warp access


def warp_access_addresses(
    register_layout: Layout,
    shared_layout: SharedLayout,
    dtype_bits: int,
    vector: int,
    warp: int = 0,
) -> tuple[np.ndarray, int]:
    """Byte addresses of the instructions a warp issues to move its locals.

    Each thread of warp ``warp`` accesses its locals ``vector`` at a time (locals
    ``k*vector .. k*vector + vector - 1`` in instruction ``k``); they must be consecutive
    in shared memory. Returns ``(addresses [instructions, lanes], access_bytes)``.
    """
    shape, sshape = tuple(register_layout.shape), shared_layout.shape
    if shape != sshape:
        raise ValueError(
            f"register layout {register_layout} has shape {shape} but shared layout "
            f"{shared_layout} has shape {sshape}"
        )
    if vector < 1:
        raise ValueError(f"vector must be >= 1, got {vector}")
    num_locals = register_layout.num_locals
    if num_locals % vector:
        raise ValueError(f"{num_locals} locals per thread do not split into vectors of {vector}")
    access_bits = vector * dtype_bits
    if access_bits % 8 or access_bits // 8 not in ACCESS_BYTES:
        raise ValueError(
            f"a vector of {vector} x {dtype_bits}-bit elements is {access_bits} bits; shared "
            f"accesses are 8, 16, 32, 64 or 128 bits"
        )
    access_bytes = access_bits // 8
    num_threads = register_layout.num_threads
    first = warp * WARP_SIZE
    if warp < 0 or first >= num_threads:
        raise ValueError(f"warp {warp} does not exist in a layout of {num_threads} threads")
    lanes = np.arange(first, min(first + WARP_SIZE, num_threads))

    table = np.asarray(register_layout.table())[lanes]  # [lanes, locals, rank]
    offsets = shared_layout.offset(tuple(table[..., d] for d in range(table.shape[-1])))
    offsets = offsets.reshape(len(lanes), num_locals // vector, vector)
    step = offsets - offsets[..., :1]
    bad = np.argwhere(step != np.arange(vector))
    if bad.size:
        lane, k = (int(x) for x in bad[0][:2])
        raise ValueError(
            f"thread {lanes[lane]}: locals {k * vector}..{k * vector + vector - 1} are at "
            f"offsets {offsets[lane, k].tolist()} in {shared_layout}, not contiguous, so they "
            f"cannot be one {access_bytes}-byte vector access"
        )
    start_bits = offsets[..., 0] * dtype_bits
    if np.any(start_bits % 8):
        raise ValueError(f"{dtype_bits}-bit vector accesses do not start on byte boundaries")
    addresses = (start_bits // 8).T  # [instructions, lanes]
    misaligned = np.argwhere(addresses % access_bytes)
    if misaligned.size:
        k, lane = (int(x) for x in misaligned[0])
        raise ValueError(
            f"thread {lanes[lane]}, instruction {k}: byte address {addresses[k, lane]} is not "
            f"aligned to the {access_bytes}-byte access"
        )
    return addresses, access_bytes


def warp_access_conflicts(
    register_layout: Layout,
    shared_layout: SharedLayout,
    dtype_bits: int,
    vector: int,
    warp: int = 0,
) -> int:
    """Bank conflicts (extra wavefronts) of a warp moving its part of a register tile.

    Sums ``bank_conflicts`` over the ``num_locals // vector`` access instructions of warp
    ``warp``; replicated threads read the same words, which the model treats as broadcast.
    """
    addresses, access_bytes = warp_access_addresses(
        register_layout, shared_layout, dtype_bits, vector, warp
    )
    return sum(bank_conflicts(row, access_bytes) for row in addresses)
