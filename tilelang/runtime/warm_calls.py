"""Warm GPU calls: a kernel called again on device tensors like the last ones reads
their addresses and launches, and nothing else.

Everything a GPU call works out before its launch but the tensors' addresses depends
only on what each argument *is* and on the scalars: the argument checks (dtype, rank,
contiguity, the size rules, the scalars' ranges), the specialization, the compile-cache
lookup, the sizes and the grid. `WarmCalls.signature` keys a call by exactly that
(`gpu.argument_signature`) — per tensor its kind, dtype, shape, strides (and device,
where it says); the scalars, the constexprs and the value facts as given, each with
its type and, for floats, its bits (`gpu.typed`: 32.0 is not 32, -0.0 is not 0.0) — and
reads each tensor's address on the way. A full call that launched leaves a `WarmCall` under its key. A warm call checks what depends on addresses (16-byte
alignment; a tensor the kernel writes overlapping another one), that every value fact
it states is still on record for its tensor, and launches.

What it cannot key goes the full way: host arrays; tensors the full call reads through
DLPack (every library's that speaks it, but torch's CUDA tensors, which are read off the
tensor); runtime arguments by keyword; unhashable constexprs or facts. So does a warm
call whose address checks fail: the full call raises the error a user should see.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.runtime import call_plans, gpu, value_facts
from tilelang.runtime.arguments import BoundDeviceArguments, ranges_overlap
from tilelang.runtime.gpu import typed

#: Keys kept per kernel (a kernel called at many shapes). A new key beyond this drops the
#: oldest one only, as call plans do: one new shape no longer costs every other shape its
#: next call (a hit does not refresh a key; that would cost every warm call a re-insert).
MAX_WARM_CALLS = 64


#: Above this many (written, other) tensor pairs, a warm call first sorts the extents and
#: looks for any overlap at all (paged decode's split kernel has 14 tensors, 5 of them
#: written: 55 pairs), and checks the pairs only when it finds one.
PAIRS_CHECKED_ONE_BY_ONE = 8


def _some_overlap(extents: list[tuple[int, int]]) -> bool:
    """Whether any two of the byte ranges share a byte or start at the same address (the
    same tensor twice, empty ones too, which count as one byte here): a sweep over them
    sorted. False: no pair needs checking."""
    end = -1
    for start, nbytes in sorted(extents):
        if start < end:
            return True
        end = max(end, start + max(nbytes, 1))
    return False


@dataclass(frozen=True)
class WarmCall:
    """What a full call worked out for one signature: the build and its launch values,
    and the positions of the tensors (in the runtime arguments) with their byte sizes."""

    build: Any  # CudaBuild
    scalars: dict[str, int | float]  # scalars and sizes, as the launch takes them
    grid: tuple[int, ...]
    tensors: tuple[tuple[str, int, int], ...]  # (name, position, bytes) per tensor
    overlapping: tuple[tuple[int, int], ...]  # tensor index pairs with a written one
    facts: tuple[tuple[int, Any], ...]  # (position, fact) per value fact stated
    written: tuple[int, ...]  # indices in `tensors` of those the kernel writes

    @functools.cached_property
    def stored(self) -> tuple[int, ...]:
        """The positions of the tensors the kernel writes (what the call returns)."""
        return tuple(self.tensors[i][1] for i in self.written)

    @functools.cached_property
    def written_names(self) -> tuple[str, ...]:
        return tuple(self.tensors[i][0] for i in self.written)

    @functools.cached_property
    def read(self) -> tuple[int, ...]:
        """The indices in `tensors` of those the kernel only reads."""
        return tuple(i for i in range(len(self.tensors)) if i not in self.written)

    def _may_overlap(self, extents: list[tuple[int, int]]) -> bool:
        """Whether a written tensor may overlap another: the sweep over the written
        extents and the read-only ones, each read-only range once (a tensor that fills
        several read-only slots is no overlap)."""
        read = {extents[i] for i in self.read}
        return _some_overlap([*(extents[i] for i in self.written), *read])

    def __call__(self, args: tuple, addresses: list[int | None]) -> tuple[bool, Any]:
        """(launched, what the call returns); nothing launched when an address check or
        a value fact needs the full call."""
        pointers, extents = {}, []
        for name, position, nbytes in self.tensors:
            address = addresses[position]
            if address % 16:
                return False, None
            pointers[name] = address
            extents.append((address, nbytes))
        if len(self.overlapping) <= PAIRS_CHECKED_ONE_BY_ONE or self._may_overlap(extents):
            for a, b in self.overlapping:
                same = args[self.tensors[a][1]] is args[self.tensors[b][1]]
                if same or ranges_overlap(*extents[a], *extents[b]):
                    return False, None
        for position, fact in self.facts:
            if not value_facts.recorded_within(args[position], fact):
                return False, None
        outputs = tuple([args[position] for position in self.stored])
        value_facts.forget(outputs)
        stream = gpu.current_stream([args[position] for _, position, _ in self.tensors])
        call_plans.launch(self.build, pointers, self.scalars, self.grid, stream, self.written_names)
        return True, outputs[0] if len(outputs) == 1 else (outputs or None)


class WarmCalls:
    """One kernel's warm calls, by signature."""

    def __init__(self, runtime: tuple[str, ...]) -> None:
        self.runtime = runtime
        self._names = frozenset(runtime)
        self._calls: dict[tuple, WarmCall] = {}

    def signature(
        self, args: tuple, kwargs: Mapping[str, Any], assume: Mapping[str, Any] | None
    ) -> tuple[tuple, list[int | None]] | None:
        """(the call's key, each argument's address) or None when it cannot be keyed."""
        if len(args) != len(self.runtime) or not self._names.isdisjoint(kwargs):
            return None
        if assume is not None and not isinstance(assume, Mapping):
            return None  # the full call says what is wrong with it
        parts, addresses = [], []
        for value in args:
            found = gpu.argument_signature(value)
            if found is None:
                return None
            part, address = found
            parts.append(part)
            addresses.append(address)
        constexprs = tuple([(name, typed(value)) for name, value in kwargs.items()])
        key = (tuple(parts), constexprs, assume and tuple((n, typed(v)) for n, v in assume.items()))
        return key, addresses

    def get(self, key: tuple) -> WarmCall | None:
        try:
            return self._calls.get(key)
        except TypeError:  # an unhashable constexpr or fact: never kept
            return None

    def remember(self, key: tuple, call: WarmCall) -> None:
        calls = self._calls
        with contextlib.suppress(TypeError):  # an unhashable constexpr or fact
            calls.pop(key, None)  # re-inserted last: the newest
            if len(calls) >= MAX_WARM_CALLS:
                del calls[next(iter(calls))]
            calls[key] = call


def warm_call(
    runtime: tuple[str, ...],
    build: Any,
    values: Mapping[str, Any],
    bound: BoundDeviceArguments,
    scalars: dict[str, int | float],
    grid: tuple[int, ...],
    facts: tuple[tuple[str, Any], ...],
) -> WarmCall:
    """The `WarmCall` of a full call that launched `build` on `values` (as bound)."""
    names = tuple(bound.pointers)
    tensors = tuple(
        (name, runtime.index(name), gpu.device_array(values[name]).nbytes) for name in names
    )
    written = set(bound.stored)
    overlapping = tuple(
        (a, b)
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if names[a] in written or names[b] in written
    )
    stated = tuple((runtime.index(name), fact) for name, fact in facts)
    writes = tuple(i for i, name in enumerate(names) if name in written)
    return WarmCall(build, scalars, tuple(grid), tensors, overlapping, stated, writes)
