"""Call plans: a library function called again on device tensors like the last ones
allocates its outputs and launches its kernels, and does nothing else.

A `tilelang.kernels` function checks its arguments, chooses tiles, allocates outputs
and scratch, views tensors under other shapes and calls one or more kernels: tens of
microseconds of Python before the first launch, for a decode step whose kernels may
take less. All of it but the tensors' addresses depends only on what each argument
*is*, the same key as a kernel's warm calls (`gpu.argument_signature`: kind,
dtype, shape, strides, device), on the plain values (numbers, flags, strings, None,
and tuples and lists of them: `window_size=(16, 0)`), and on which tensor arguments
are the same memory. So a function decorated with `planned` is recorded the second
time it is called with a key, once everything it compiles or tunes is in place: each
launch (build, scalars, grid, stream) and, for each of its pointers, where it came
from —

* a tensor argument, at an offset (a view of it);
* an allocation made during the call (`allocated`, with the function that makes it);
* a buffer the library keeps between calls (`kept`: `tl.arrive` counters, the
  placeholders of parameters a launch does not read).

From the third call on, the plan is replayed: the arguments' addresses are read, a
16-byte alignment check and an overlap check of every tensor a launch writes are made,
value facts about written tensors are forgotten, the allocations are made again, and
the launches go out on the stream the arguments' library names. A pointer of unknown
origin, a result that is not an argument or an allocation, or launches on another
stream leave the key unplanned: it always runs in full. A call to be recorded whose
arguments are misaligned or overlap runs in full unrecorded (the next may be recorded).
So does any call that cannot be keyed (a host array, a numpy scalar) and any replay
whose address checks fail: the full call then raises what a user should see.

`tilelang.quant.matmul` keeps a `CallPlans` on each weight (the weight is then not an
argument of what is keyed, and its device tensors are kept buffers).

What a plan may not see, a planned function must not do: read a device tensor's
values on the host, or do device work other than kernel launches and the allocations
it reports. `TILELANG_CALL_PLANS=off` (read at import; `ENABLED`) turns plans off.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tilelang.runtime import dlpack, gpu, value_facts
from tilelang.runtime.arguments import ranges_overlap

#: Whether planned functions record and replay (`TILELANG_CALL_PLANS=off`: never).
ENABLED = os.environ.get("TILELANG_CALL_PLANS", "").lower() != "off"

#: Keys kept per function; past it the oldest goes (a decode step's shapes change as its
#: batch and its sequences grow: a new key costs two full calls, then it replays).
MAX_PLANS = 64

#: Argument types keyed by value (`bool` before `int`: True is not 1 here).
_PLAIN = (bool, int, float, str, type(None))
_SEQUENCES = (tuple, list)

# What a key's entry holds before it has a plan: seen once (record at the next call),
# or found unplannable (always run in full).
_SEEN, _UNPLANNABLE = "seen", "unplannable"

_local = threading.local()

#: How many threads are recording a call now: a launch reports itself only then (the
#: check costs a module attribute read; the report, a call).
recording = 0
_recording_lock = threading.Lock()


# --------------------------------------------------------------------------- recording


@dataclass
class _Recording:
    """What one call did on the device, in order."""

    allocations: list[tuple[Any, Callable[[], Any]]]
    kept: list[Any]
    launches: list[tuple[Any, dict[str, int], dict[str, Any], tuple[int, ...], int, tuple]]


def launch(
    build: Any,
    pointers: dict[str, int],
    scalars: dict[str, Any],
    grid: tuple[int, ...],
    stream: int,
    written: tuple[str, ...],
) -> None:
    """`gpu.launch`, reported to the call this thread is recording, if any: how a
    kernel's call launches (`Kernel`'s GPU call and its warm path). `written`: the
    pointer names the kernel writes through. A plan's replay launches with
    `gpu.launch` itself."""
    gpu.launch(build, pointers, scalars, grid, stream)
    if recording:
        launched(build, pointers, scalars, grid, stream, written)


def launched(
    build: Any,
    pointers: dict[str, int],
    scalars: dict[str, Any],
    grid: tuple[int, ...],
    stream: int,
    written: tuple[str, ...],
) -> None:
    """Reports a kernel launch to the call this thread is recording, if any: its build,
    pointers, scalars, grid, stream and the pointer names it writes through."""
    recording = getattr(_local, "recording", None)
    if recording is not None:
        recording.launches.append((build, dict(pointers), scalars, tuple(grid), stream, written))


def allocated(make: Callable[[], Any]) -> Any:
    """`make()`, a fresh device tensor, reported to the call being recorded: a replay
    calls `make` again (it must hold no argument of the call, which a plan would keep
    alive)."""
    tensor = make()
    recording = getattr(_local, "recording", None)
    if recording is not None:
        recording.allocations.append((tensor, make))
    return tensor


def kept(tensor: Any) -> Any:
    """`tensor`, a device buffer the library keeps between calls, reported to the call
    being recorded: a plan launches with it as it is (and keeps it alive)."""
    recording = getattr(_local, "recording", None)
    if recording is not None:
        recording.kept.append(tensor)
    return tensor


# --------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class _Source:
    """Where a launch's pointer comes from: ("input", i) the i-th tensor argument,
    ("allocation", i) the i-th allocation, ("kept", address) a kept buffer; plus the
    byte offset from its start."""

    kind: str
    index: int
    offset: int


@dataclass(frozen=True)
class _Launch:
    build: Any
    sources: tuple[tuple[str, _Source], ...]
    scalars: dict[str, Any]
    grid: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """One key's recorded call: what to allocate, what to launch, what to return.

    Tensor arguments are numbered in the order the call takes them (positional, then
    keywords); `spans` are their byte extents from their addresses; `written` the
    numbers of those a launch writes; `checked` the pairs (written, other) that must
    not overlap. `result` mirrors what the call returned: ("input", i),
    ("allocation", i), ("none",) or ("tuple", parts)."""

    makes: tuple[Callable[[], Any], ...]
    kept: tuple[Any, ...]  # held so that their addresses stay valid
    launches: tuple[_Launch, ...]
    spans: tuple[int, ...]
    written: tuple[int, ...]
    checked: tuple[tuple[int, int], ...]
    result: tuple

    def replay(self, tensors: list[Any], addresses: list[int]) -> tuple[bool, Any]:
        """(replayed, the result); nothing done when an address check fails."""
        for address in addresses:
            if address % 16:
                return False, None
        for a, b in self.checked:
            if ranges_overlap(addresses[a], self.spans[a], addresses[b], self.spans[b]):
                return False, None
        value_facts.forget(tensors[i] for i in self.written)
        made = [make() for make in self.makes]
        bases = {"input": addresses, "allocation": [_address(t) for t in made]}
        stream = gpu.current_stream(tensors)
        for launch in self.launches:
            pointers = {
                name: (source.index if source.kind == "kept" else bases[source.kind][source.index])
                + source.offset
                for name, source in launch.sources
            }
            gpu.launch(launch.build, pointers, launch.scalars, launch.grid, stream)
        return True, _rebuilt(self.result, tensors, made)


def _rebuilt(shape: tuple, tensors: list[Any], made: list[Any]) -> Any:
    kind = shape[0]
    if kind == "input":
        return tensors[shape[1]]
    if kind == "allocation":
        return made[shape[1]]
    if kind == "none":
        return None
    return tuple(_rebuilt(part, tensors, made) for part in shape[1])


def _address(tensor: Any) -> int:
    """The address of a device tensor the library made (torch's, or one that speaks
    `__cuda_array_interface__`: `tilelang.DeviceBuffer`)."""
    if dlpack.is_torch_kind(type(tensor)):
        return tensor.data_ptr()
    return tensor.__cuda_array_interface__["data"][0]


def _span(tensor: Any) -> int:
    """The bytes from `tensor`'s address to the end of its last element."""
    array = gpu.device_array(dlpack.imported(tensor))
    if 0 in array.shape:
        return 0
    itemsize = gpu.itemsize(array.typestr)
    strides = array.strides or gpu.contiguous_strides(array.shape, itemsize)
    return itemsize + sum((n - 1) * s for n, s in zip(array.shape, strides, strict=True))


def _spans_if_apart(tensors: list[Any], addresses: list[int]) -> list[int] | None:
    """The tensors' byte spans, when every address is 16-byte aligned and no two tensors
    at different addresses overlap (a pointer into both could not be told apart); else
    None: this call's addresses cannot be recorded (another call of the key may be)."""
    if any(address % 16 for address in addresses):
        return None
    spans = [_span(t) for t in tensors]
    for a in range(len(tensors)):
        for b in range(a + 1, len(tensors)):
            if addresses[a] != addresses[b] and ranges_overlap(
                addresses[a], spans[a], addresses[b], spans[b]
            ):
                return None
    return spans


def _plan(recording: _Recording, tensors: list[Any], addresses: list[int], spans, result: Any):
    """The plan of a recorded call, or None when something in it has no known origin."""
    made = [tensor for tensor, _ in recording.allocations]
    regions = [("input", i, addresses[i], spans[i]) for i in range(len(tensors))]
    for i, tensor in reversed(list(enumerate(made))):  # the latest allocation first
        regions.append(("allocation", i, _address(tensor), _span(tensor)))
    for tensor in recording.kept:
        regions.append(("kept", _address(tensor), _address(tensor), _span(tensor)))
    stream = gpu.current_stream(tensors)
    launches, written = [], set()
    for build, pointers, scalars, grid, launch_stream, writes in recording.launches:
        if launch_stream != stream:
            return None
        sources = []
        for name, pointer in pointers.items():
            source = _source(regions, pointer)
            if source is None:
                return None
            if name in writes and source.kind == "input":
                written.add(source.index)
            sources.append((name, source))
        launches.append(_Launch(build, tuple(sources), dict(scalars), grid))
    shape = _result_shape(result, tensors, made)
    if shape is None:
        return None
    checked = tuple(
        (w, o)
        for w in sorted(written)
        for o in range(len(tensors))
        if o != w and addresses[o] != addresses[w]
    )
    return Plan(
        tuple(make for _, make in recording.allocations),
        tuple(recording.kept),
        tuple(launches),
        tuple(spans),
        tuple(sorted(written)),
        checked,
        shape,
    )


def _source(regions: list[tuple[str, int, int, int]], pointer: int) -> _Source | None:
    for kind, index, base, span in regions:
        if base <= pointer < base + span or pointer == base:
            return _Source(kind, index, pointer - base)
    return None


def _result_shape(result: Any, tensors: list[Any], made: list[Any]) -> tuple | None:
    if result is None:
        return ("none",)
    if isinstance(result, tuple):
        parts = [_result_shape(part, tensors, made) for part in result]
        return None if None in parts else ("tuple", tuple(parts))
    for i, tensor in enumerate(made):
        if result is tensor:
            return ("allocation", i)
    for i, tensor in enumerate(tensors):
        if result is tensor:
            return ("input", i)
    return None


# --------------------------------------------------------------------------- the decorator


def _signature(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, list[Any], list[int]] | None:
    """(the call's key, its tensor arguments, their addresses), or None when a value
    cannot be keyed. The key says, per tensor, which earlier tensor has its address."""
    parts: list[Any] = []
    tensors: list[Any] = []
    addresses: list[int] = []
    for value in (*args, *kwargs.values()):
        kind = type(value)
        if kind in _PLAIN:
            parts.append(gpu.typed(value))  # 0.0 is not -0.0; a NaN is itself
            continue
        if kind in _SEQUENCES and _plain(value):  # a list is not a tuple to the function
            parts.append((kind, gpu.typed(value)))
            continue
        found = gpu.argument_signature(value)
        if found is None or found[1] is None:
            return None
        part, address = found
        same = addresses.index(address) if address in addresses else -1
        parts.append((part, same))
        tensors.append(value)
        addresses.append(address)
    return (tuple(parts), tuple(kwargs)), tensors, addresses


def _plain(value: Any) -> bool:
    """Whether `value` keys by value: a plain value, or a tuple or list of them (nested
    too); a tensor inside one would be keyed without its address, so it is not."""
    kind = type(value)
    return kind in _PLAIN or (kind in _SEQUENCES and all(_plain(item) for item in value))


def _recorded(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]):
    """(fn's result, what it did on the device), fn called with this thread recording."""
    global recording
    _local.recording = recorded = _Recording([], [], [])
    with _recording_lock:
        recording += 1
    try:
        return fn(*args, **kwargs), recorded
    finally:
        _local.recording = None
        with _recording_lock:
            recording -= 1


class CallPlans:
    """One function's plans, by key (the module docstring)."""

    def __init__(
        self, fn: Callable[..., Any], coarse: Mapping[str, Callable[[Any], Any]] | None = None
    ) -> None:
        self.fn = fn
        self.coarse = dict(coarse or {})
        self._entries: dict[tuple, Plan | str] = {}
        _ALL.add(self)

    def __call__(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        fn = self.fn
        if not ENABLED or getattr(_local, "recording", None) is not None:
            return fn(*args, **kwargs)  # a call inside one being recorded: its launches count
        signed = _signature(args, self._keyed(kwargs))
        if signed is None:
            return fn(*args, **kwargs)
        key, tensors, addresses = signed
        try:
            entry = self._entries.get(key)
        except TypeError:  # an unhashable part (a float NaN hashes; a list does not)
            return fn(*args, **kwargs)
        if isinstance(entry, Plan):
            replayed, result = entry.replay(tensors, addresses)
            return result if replayed else fn(*args, **kwargs)
        if entry is None:
            result = fn(*args, **kwargs)  # compiles and tunes what it needs
            self._remember(key, _SEEN)
            return result
        spans = None if entry == _UNPLANNABLE else _spans_if_apart(tensors, addresses)
        if spans is None:
            return fn(*args, **kwargs)
        result, recorded = _recorded(fn, args, kwargs)
        plan = _plan(recorded, tensors, addresses, spans, result)
        self._remember(key, plan or _UNPLANNABLE)
        return result

    def plan(self, args: tuple, kwargs: dict[str, Any] | None = None) -> Plan | None:
        """The plan these arguments would replay, if there is one (for tests and tools)."""
        signed = _signature(args, self._keyed(kwargs or {}))
        entry = signed and self._entries.get(signed[0])
        return entry if isinstance(entry, Plan) else None

    def _keyed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """kwargs as they key: each `coarse` argument by its function's value."""
        coarse = self.coarse
        if not coarse or not coarse.keys() & kwargs.keys():
            return kwargs
        return {name: coarse[name](v) if name in coarse else v for name, v in kwargs.items()}

    def clear(self) -> None:
        self._entries.clear()

    def _remember(self, key: tuple, entry: Plan | str) -> None:
        entries = self._entries
        entries.pop(key, None)  # re-inserted last: the newest
        if len(entries) >= MAX_PLANS:
            del entries[next(iter(entries))]
        entries[key] = entry


#: Every `CallPlans` alive (for `clear_all`).
_ALL: weakref.WeakSet[CallPlans] = weakref.WeakSet()


def planned(
    fn: Callable[..., Any] | None = None,
    *,
    coarse: Mapping[str, Callable[[Any], Any]] | None = None,
) -> Any:
    """`fn` with call plans (the module docstring); `.plans` is its `CallPlans`.

    `coarse` names keyword arguments whose value reaches the device only through a
    function of it, which `fn` applies itself (a length rounded up to a bucket): such an
    argument keys by that function's value, so the calls of a decode loop whose
    `max_seq_len` grows by one a step share a plan while its bucket lasts."""
    if fn is None:
        return functools.partial(planned, coarse=coarse)
    plans = CallPlans(fn, coarse)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return plans(args, kwargs)

    call.plans = plans
    return call


def clear_all() -> None:
    """Forgets every function's plans (tests that change the world between calls)."""
    for plans in _ALL:
        plans.clear()
