"""Instructions that rearrange a tile's elements or reinterpret its bits: views,
relayouts, reshapes, transposes, broadcasts, slices and concatenations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tilelang.ir.checks import Checker
from tilelang.ir.core import NOWHERE, Instr, Loc, Value, Var
from tilelang.ir.text import print_type
from tilelang.ir.types import ScalarType, TileType


@dataclass(frozen=True)
class View(Instr):
    """Reinterprets the bits of a tile as another dtype and shape.

    With both layouts known, each thread's register bits are reinterpreted in place.
    Without layouts, the tile's row-major bit stream is reinterpreted: the last
    dimension scales by the ratio of the bit widths, the other dimensions stay.
    """

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "view {value}"
    LAYOUT: ClassVar = "view"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        result = v.result_tile(self.result)
        if source.layout is not None and result.layout is not None:
            _check_view_layouts(v, source, result)
            return
        ok = (
            source.rank == result.rank >= 1
            and source.shape[:-1] == result.shape[:-1]
            and source.shape[-1] * source.dtype.bits == result.shape[-1] * result.dtype.bits
        )
        v.expect(
            ok,
            "expected (without layouts) the same rank and leading dims and the same bits per "
            f"row (last dim x dtype bits), found {print_type(source)} -> {print_type(result)}",
        )


def _check_view_layouts(v: Checker, source: TileType, result: TileType) -> None:
    threads = (source.layout.num_threads, result.layout.num_threads)
    v.expect(
        threads[0] == threads[1],
        f"expected equal thread counts, found {threads[0]} -> {threads[1]}",
    )
    bits = (
        source.layout.num_locals * source.dtype.bits,
        result.layout.num_locals * result.dtype.bits,
    )
    v.expect(bits[0] == bits[1], f"expected equal bits per thread, found {bits[0]} -> {bits[1]}")


@dataclass(frozen=True)
class Item(Instr):
    """The one element of a rank-0 tile as a block-uniform scalar (every thread holds
    the element: a rank-0 tile's layout replicates it over the block)."""

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "item {value}"
    LAYOUT: ClassVar = "none"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        result = v.scalar(self.result, "the result")
        v.expect(
            source.rank == 0 and result.dtype == source.dtype,
            f"expected a rank-0 tile and a scalar of its dtype, found {print_type(source)} -> "
            f"{print_type(result)}",
        )


@dataclass(frozen=True)
class Relayout(Instr):
    """The same tile in another register layout (data moves between threads)."""

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "relayout {value}"
    LAYOUT: ClassVar = "source.default"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        result = v.result_tile(self.result)
        v.expect(
            (source.dtype, source.shape) == (result.dtype, result.shape),
            f"expected a result of the value's dtype and shape, found {print_type(source)} -> "
            f"{print_type(result)}",
        )


@dataclass(frozen=True)
class Reshape(Instr):
    """Same elements in row-major order, another shape."""

    result: Var
    value: Var
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "reshape {value}"
    LAYOUT: ClassVar = "reshape"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        result = v.result_tile(self.result)
        v.expect(
            source.numel == result.numel,
            f"expected a result of {source.numel} elements, found {print_type(result)}",
        )
        v.same_dtype(result.dtype, source.dtype, "a result")


@dataclass(frozen=True)
class Slice(Instr):
    """The box ``[starts[d], stops[d])`` of the value in every dimension d (compile-time
    bounds, step 1): result[i] = value[i + starts]."""

    result: Var
    value: Var
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "slice {value}, starts=[{starts}], stops=[{stops}]"
    LAYOUT: ClassVar = "slice"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        starts, stops = tuple(self.starts), tuple(self.stops)
        v.expect(
            len(starts) == len(stops) == source.rank,
            f"expected {source.rank} starts and stops, found {list(starts)} and {list(stops)}",
        )
        v.expect(
            all(0 <= a < b <= n for a, b, n in zip(starts, stops, source.shape, strict=False)),
            f"expected 0 <= start < stop <= size in every dimension of {print_type(source)}, "
            f"found starts {list(starts)} and stops {list(stops)}",
        )
        result = v.result_tile(self.result)
        shape = tuple(b - a for a, b in zip(starts, stops, strict=False))
        v.expect(
            tuple(result.shape) == shape,
            f"expected a result of shape [{', '.join(map(str, shape))}], found "
            f"{print_type(result)}",
        )
        v.same_dtype(result.dtype, source.dtype, "a result")


@dataclass(frozen=True)
class Concat(Instr):
    """The values laid end to end along `axis` (numpy's concatenate): value k fills
    positions [o_k, o_k + n_k) of that axis, o_k the sizes of the values before it; the
    other dimensions and the dtype are the values' own, which all share them."""

    result: Var
    values: tuple[Value, ...]
    axis: int
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("values",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "concat {values} axis({axis})"
    LAYOUT: ClassVar = "concat"

    def check(self, v: Checker) -> None:
        v.expect(len(self.values) >= 1, "expected at least one value to concatenate")
        tiles = [v.tile(value, f"value {k}") for k, value in enumerate(self.values)]
        first = tiles[0]
        v.expect(
            0 <= self.axis < first.rank,
            f"expected an axis in 0..{first.rank - 1} (the values' rank is {first.rank}), "
            f"found {self.axis}",
        )
        for k, tile in enumerate(tiles):
            v.same_dtype(tile.dtype, first.dtype, f"value {k}")
            others = [n for d, n in enumerate(tile.shape) if d != self.axis]
            v.expect(
                tile.rank == first.rank
                and others == [n for d, n in enumerate(first.shape) if d != self.axis],
                f"expected every value of value 0's shape except along axis {self.axis}, "
                f"found value 0 {print_type(first)} and value {k} {print_type(tile)}",
            )
        result = v.result_tile(self.result)
        shape = list(first.shape)
        shape[self.axis] = sum(tile.shape[self.axis] for tile in tiles)
        v.expect(
            list(result.shape) == shape,
            f"expected a result of shape [{', '.join(map(str, shape))}], found "
            f"{print_type(result)}",
        )
        v.same_dtype(result.dtype, first.dtype, "a result")


@dataclass(frozen=True)
class Transpose(Instr):
    """Dimension `perm[i]` of the value becomes dimension i of the result."""

    result: Var
    value: Var
    perm: tuple[int, ...]
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "transpose {value}, perm=[{perm}]"
    LAYOUT: ClassVar = "transpose"

    def check(self, v: Checker) -> None:
        source = v.tile(self.value, "the value")
        perm = tuple(self.perm)
        v.expect(
            sorted(perm) == list(range(source.rank)),
            f"expected a permutation of 0..{source.rank - 1}, found {list(perm)}",
        )
        result = v.result_tile(self.result)
        shape = tuple(source.shape[p] for p in perm)
        v.expect(
            tuple(result.shape) == shape,
            f"expected a result of shape [{', '.join(map(str, shape))}], found "
            f"{print_type(result)}",
        )
        v.same_dtype(result.dtype, source.dtype, "a result")


@dataclass(frozen=True)
class Broadcast(Instr):
    """Repeats size-1 dimensions (numpy rules, same rank) to the result's shape; a scalar
    value fills the whole tile."""

    result: Var
    value: Value
    loc: Loc = field(default=NOWHERE, kw_only=True)
    OPERANDS: ClassVar = ("value",)
    RESULTS: ClassVar = ("result",)
    SYNTAX: ClassVar = "broadcast {value}"
    LAYOUT: ClassVar = "broadcast"

    def check(self, v: Checker) -> None:
        source = v.scalar_or_tile(self.value, "the value")
        result = v.result_tile(self.result)
        v.same_dtype(result.dtype, source.dtype, "a result")
        if isinstance(source, ScalarType):
            return
        ok = source.rank == result.rank and all(
            s in (1, r) for s, r in zip(source.shape, result.shape, strict=True)
        )
        v.expect(
            ok,
            "expected a result of the same rank whose dims equal the value's or extend a 1, "
            f"found {print_type(source)} -> {print_type(result)}",
        )


__all__ = ["Broadcast", "Concat", "Item", "Relayout", "Reshape", "Slice", "Transpose", "View"]
