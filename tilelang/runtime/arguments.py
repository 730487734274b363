"""Checking a kernel's arguments against its parameters, before anything runs.

`bind_arguments` takes the caller's values by parameter name and returns them bound:
each tensor checked (type, dtype, rank, packed byte size, strides, writability when the
kernel stores to it), the size symbols of the tensors' shapes bound consistently (and
every size expression checked), every runtime scalar checked against its dtype's range,
and no tensor the kernel stores to overlapping another tensor argument in memory;
weights packed by `tl.pack_for_dot` (a `DotPackedArray`) must be read by the kernel's
`tl.load_fragment` as packed (`fragment_reads`, `tilelang.packing.DotPacking.reads_as`).
`bind_device_arguments` is the same for GPU arrays (overlap by pointer ranges).
A mistake is a `TypeError` (wrong kind or dtype) or `ValueError` (wrong size, overlap)
naming the parameter, what was expected and what was given.

Why overlap is an error: the interpreter runs the block program in order, the compiled
backends run blocks and threads in any order (and copy strided or packed tensors before
writing them back), so a kernel that reads memory it also writes through another
parameter has no single answer. Passing the same object twice counts as overlap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.ir import nodes as ir
from tilelang.ir.layout import Layout
from tilelang.ir.shape_expr import Lit, Sym, evaluate, symbols
from tilelang.ir.types import TensorType
from tilelang.ir.visit import walk
from tilelang.runtime import dlpack, gpu
from tilelang.runtime.host_tensor import HostTensor, numpy_dtype

#: How hard `np.shares_memory` may work to prove two strided views disjoint; past it,
#: views whose bounds overlap are treated as overlapping.
SHARES_MEMORY_WORK = 10_000

# numpy moved it to numpy.exceptions in 1.25 (and dropped the old name in 2.0).
_TOO_HARD = np.exceptions.TooHardError if hasattr(np, "exceptions") else np.TooHardError


@dataclass(frozen=True)
class BoundArguments:
    tensors: dict[str, HostTensor]
    scalars: dict[str, int | float]
    sizes: dict[str, int]
    stored: tuple[str, ...]  # tensor parameters the kernel writes, in parameter order


@dataclass(frozen=True)
class BoundDeviceArguments:
    pointers: dict[str, int]
    scalars: dict[str, int | float]
    sizes: dict[str, int]
    stored: tuple[str, ...]


def stored_tensors(fn: ir.Function) -> tuple[str, ...]:
    """The tensor parameters `fn` writes (stores, atomic additions), in parameter order (a
    walk of the whole function: callers that launch often compute it once, in an
    `ArgumentBinder`)."""
    written = {v.name for i in walk(fn) for v in i.writes()}
    return tuple(p.name for p in fn.params if p.name in written)


class ArgumentBinder:
    """The argument checks of one function, prepared once: which parameters are tensors
    and which of them it stores to, where each size is read from and which dimensions
    must be checked against it. `bind` checks host arrays, `bind_device` GPU arrays;
    both check everything, every call — only the walk of the function is saved."""

    def __init__(self, fn: ir.Function, stored: tuple[str, ...] | None = None) -> None:
        self.fn = fn
        self.stored = stored_tensors(fn) if stored is None else stored
        self.params = tuple((p, isinstance(p.type, TensorType)) for p in fn.params)
        self.fragment_reads = fragment_reads(fn)
        # A size is read from the first dimension that is exactly its name; every other
        # dimension is checked against the sizes (a literal, a name, or an expression).
        self._reads: dict[str, tuple[str, int]] = {}
        for param, is_tensor in self.params:
            for axis, expr in enumerate(param.type.shape if is_tensor else ()):
                if isinstance(expr, Sym) and expr.name not in self._reads:
                    self._reads[expr.name] = (param.name, axis)
        read_at = {site: name for name, site in self._reads.items()}
        self._checks = tuple(
            (param, axis, expr)
            for param, is_tensor in self.params
            for axis, expr in enumerate(param.type.shape if is_tensor else ())
            if (param.name, axis) not in read_at
        )

    def bind(self, values: dict[str, object]) -> BoundArguments:
        """`values` (by parameter name) checked and bound, for the host."""
        fn, stored = self.fn, self.stored
        tensors: dict[str, HostTensor] = {}
        scalars: dict[str, int | float] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for param, is_tensor in self.params:
            value = values[param.name]
            if is_tensor:
                tensor, shape = _check_tensor(fn, param, value, param.name in stored)
                tensors[param.name], shapes[param.name] = tensor, shape
                packing = getattr(value, "packing", None) if type(value) is not np.ndarray else None
                if packing is not None:  # a tilelang.DotPackedArray
                    self._check_packing(param.name, packing)
            else:
                scalars[param.name] = _check_scalar(fn, param, value)
        sizes = self._sizes(shapes)
        given = {name: values[name] for name in tensors}
        _check_overlap(fn, stored, given, lambda a, b: _host_overlap(given[a], given[b]))
        return BoundArguments(tensors, scalars, sizes, stored)

    def bind_device(self, values: dict[str, object]) -> BoundDeviceArguments:
        """The GPU form of `bind`: every tensor a device array (torch, cupy,
        `tilelang.DeviceBuffer`) of the parameter's dtype, C-contiguous and 16-byte
        aligned; the same size, scalar and overlap checks. Nothing is copied."""
        fn = self.fn
        pointers: dict[str, int] = {}
        extents: dict[str, tuple[int, int]] = {}
        scalars: dict[str, int | float] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        for param, is_tensor in self.params:
            value = values[param.name]
            if is_tensor:
                written = param.name in self.stored
                array, shapes[param.name] = _check_device_tensor(fn, param, value, written)
                packing = getattr(value, "packing", None)  # a DeviceBuffer of dot-packed codes
                if packing is not None:
                    self._check_packing(param.name, packing)
                pointers[param.name] = array.pointer
                extents[param.name] = (array.pointer, array.nbytes)
            else:
                scalars[param.name] = _check_scalar(fn, param, value)
        sizes = self._sizes(shapes)
        given = {name: values[name] for name in extents}
        _check_overlap(
            fn, self.stored, given, lambda a, b: ranges_overlap(*extents[a], *extents[b])
        )
        return BoundDeviceArguments(pointers, scalars, sizes, self.stored)

    def _check_packing(self, name: str, packing) -> None:
        """Codes packed by `tl.pack_for_dot` are read as the dot they were packed for, or
        not at all: a `ValueError` naming both packings otherwise. A plain `PackedArray`
        (or numpy array) of bytes is taken as it is: already permuted bytes are a
        legitimate argument, and nothing tells them from row-major codes."""
        reads, plain = self.fragment_reads.get(name, ((), None))
        where = _where(self.fn, name)
        for read in reads:
            if not packing.reads_as(read):
                raise ValueError(packing.mismatch(where, name, read))
        if not reads and plain is not None:
            raise ValueError(packing.plain_read(where, name, plain))

    def _sizes(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
        """The sizes read from the tensors' shapes, every other dimension checked."""
        fn = self.fn
        sizes = {name: shapes[param][axis] for name, (param, axis) in self._reads.items()}
        for param, axis, expr in self._checks:
            actual = shapes[param.name][axis]
            if isinstance(expr, Sym):
                expected = sizes[expr.name]
            elif isinstance(expr, Lit):
                expected = expr.value
            else:
                expected = evaluate(expr, sizes)
            if expected != actual:
                origin = {name: f"{p}.shape[{a}]" for name, (p, a) in self._reads.items()}
                raise ValueError(
                    _size_mismatch(fn, param, axis, expr, expected, actual, sizes, origin)
                )
        for size in fn.sizes:
            value = sizes.get(size.name)
            if value is None:
                raise ValueError(
                    f"{fn.name}(): size {size.name} is not the whole size of any tensor dimension"
                )
            if value > dtypes.i32.max:
                param, axis = self._reads[size.name]
                raise ValueError(
                    f"{fn.name}(): size {size.name} = {value} (from {param}.shape[{axis}]) "
                    f"does not fit in i32, the type of sizes: a dimension may have at most "
                    f"{dtypes.i32.max} elements (offsets are 64-bit, so give a long flat "
                    f"tensor as two dims, e.g. [{size.name} // 1024, 1024])"
                )
        return sizes


@dataclass(frozen=True)
class FragmentRead:
    """A kernel's `tl.load_fragment` of a parameter, as its block IR holds it: [BK, BN]
    tiles (`tile`), each one run loaded in the flat order `flat` and viewed in place as
    `stored`, then used as `layout` (the layout given to `tl.load_fragment`) in a block
    of `warps` warps; `loc` is the user's line. `tilelang.packing.DotPacking.reads_as`
    compares it with a packing (runtime does not import `tilelang.packing`)."""

    tile: tuple[int, int]
    stored: Layout
    flat: Layout
    layout: Layout
    warps: int
    loc: str


def fragment_reads(fn: ir.Function) -> dict[str, tuple[tuple[FragmentRead, ...], str | None]]:
    """Per tensor parameter, its `tl.load_fragment` reads in `fn` (a load viewed in
    place as a rank-2 tile, in the layout the view's user relabels it to) and the line
    of its first other use (None when every use is such a read): what a tensor packed by
    `tl.pack_for_dot` is checked against when it is bound."""
    tensors = {p.name for p in fn.params if isinstance(p.type, TensorType)}
    loads: dict[str, ir.Load] = {}  # result name -> a load of a parameter
    views: dict[str, tuple[ir.Load, ir.View, Layout]] = {}  # view result -> (load, view, L)
    uses: list[tuple[str, ir.Instr]] = []
    for instr in walk(fn):
        if isinstance(instr, ir.Load) and instr.tensor.name in tensors:
            loads[instr.result.name] = instr
        elif isinstance(instr, ir.View) and instr.value.name in loads:
            load, result = loads[instr.value.name], instr.result.type
            flat = load.result.type.layout
            if flat is not None and result.layout is not None and result.rank == 2:
                views[instr.result.name] = (load, instr, result.layout)
        elif isinstance(instr, ir.Relayout) and instr.value.name in views:
            load, view, _ = views[instr.value.name]
            views[instr.value.name] = (load, view, instr.result.type.layout)
        uses += [(v.name, instr) for v in instr.uses() if getattr(v, "name", None) in tensors]
    reads: dict[str, list[FragmentRead]] = {name: [] for name in tensors}
    fragment_loads = set()
    for load, view, layout in views.values():
        stored = view.result.type.layout
        read = FragmentRead(
            tuple(stored.shape), stored, load.result.type.layout, layout, fn.warps, str(load.loc)
        )
        reads[load.tensor.name].append(read)
        fragment_loads.add(id(load))
    plain: dict[str, str] = {}
    for name, instr in uses:
        # A staged copy (a pipelined load, after `software_pipeline`) moves the bytes as
        # they are; how its shared tile is read is past what this follows: not plain.
        if id(instr) not in fragment_loads and not isinstance(instr, ir.CopyAsync):
            plain.setdefault(name, str(instr.loc))
    return {name: (tuple(dict.fromkeys(reads[name])), plain.get(name)) for name in tensors}


def bind_arguments(
    fn: ir.Function, values: dict[str, object], stored: tuple[str, ...] | None = None
) -> BoundArguments:
    """`values` checked and bound for the host (`ArgumentBinder(fn, stored).bind`)."""
    return ArgumentBinder(fn, stored).bind(values)


def bind_device_arguments(
    fn: ir.Function, values: dict[str, object], stored: tuple[str, ...] | None = None
) -> BoundDeviceArguments:
    """`values` checked and bound for the GPU (`ArgumentBinder(fn, stored).bind_device`)."""
    return ArgumentBinder(fn, stored).bind_device(values)


def dtype_constexpr_note(
    annotated: dict[str, str],
    values: dict[str, object],
    expected: dict[str, DType],
    given: dict[str, object],
) -> str:
    """What a dtype error adds when a dtype constexpr set the dtype a tensor missed
    (`annotated`: tensor parameter -> the constexpr its annotation names; `expected`: the
    specialization's tensor dtypes; `given`: the constexprs the call passed): the value,
    whether the call gave it or it is the default, and, when every tensor annotated with
    it has one dtype, the constexpr to pass. "" when no such tensor has another dtype."""
    for constexpr in dict.fromkeys(annotated.values()):
        names = [n for n, c in annotated.items() if c == constexpr and n in values]
        found = {n: _dtype_of(values[n]) for n in names}
        if not names or all(found[n] in (None, expected[n]) for n in names):
            continue
        used = expected[names[0]]
        how = "given to the call" if constexpr in given else f"the default of {constexpr}"
        text = f" ({constexpr}={used}, {how}, is the dtype of {', '.join(map(repr, names))}"
        kinds = set(found.values())
        if len(kinds) == 1 and None not in kinds:
            text += f"; these are all {kinds.pop()}: pass {constexpr}=tl.{found[names[0]]}"
        return text + ")"
    return ""


def _dtype_of(value: object) -> DType | None:
    """The tilelang dtype of a tensor argument as a call imports it, None if unknown."""
    try:
        value = dlpack.imported(value)
    except TypeError:
        return None
    dtype = getattr(value, "dtype", None)
    if isinstance(dtype, DType):
        return dtype
    return numpy_dtype(dtype) if isinstance(dtype, np.dtype) else None


# --------------------------------------------------------------------------- overlap


def ranges_overlap(start_a: int, nbytes_a: int, start_b: int, nbytes_b: int) -> bool:
    """Whether the byte ranges [start, start + nbytes) share a byte (empty ones never do)."""
    if nbytes_a <= 0 or nbytes_b <= 0:
        return False
    return start_a < start_b + nbytes_b and start_b < start_a + nbytes_a


def _host_overlap(a: object, b: object) -> bool:
    memory_a, memory_b = _host_memory(a), _host_memory(b)
    if memory_a is None or memory_b is None:
        return False
    if not np.may_share_memory(memory_a, memory_b):
        return False  # disjoint bounds: the common case, and cheap
    try:
        return bool(np.shares_memory(memory_a, memory_b, max_work=SHARES_MEMORY_WORK))
    except _TOO_HARD:
        return True


def _host_memory(value: object) -> np.ndarray | None:
    if isinstance(value, PackedArray):
        return value.data
    if isinstance(value, dlpack.HostView):
        return value.codes
    return value if isinstance(value, np.ndarray) else None


def _check_overlap(
    fn: ir.Function,
    stored: tuple[str, ...],
    tensors: dict[str, object],
    overlap: Callable[[str, str], bool],
) -> None:
    """A `ValueError` naming both parameters when a tensor the kernel stores to is the
    same object as another tensor argument (`tensors`: the caller's values by name),
    or overlaps it in memory (`overlap(name_a, name_b)` decides)."""
    if not stored:
        return
    names = list(tensors)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            if a not in stored and b not in stored:
                continue
            same = tensors[a] is tensors[b]
            if same or overlap(a, b):
                raise ValueError(_overlap_message(fn, stored, a, b, same))


def _overlap_message(fn: ir.Function, stored: tuple[str, ...], a: str, b: str, same: bool) -> str:
    written = " and ".join(repr(n) for n in (a, b) if n in stored)
    read = [n for n in (a, b) if n not in stored]
    copy = read[0] if read else b
    how = "are the same array" if same else "overlap in memory"
    return (
        f"{fn.name}(): parameters {a!r} and {b!r} {how}, and the kernel stores to "
        f"{written}; pass arrays that do not overlap (e.g. a copy for {copy!r})"
    )


def _check_device_tensor(
    fn: ir.Function, param: ir.Var, value: object, written: bool = False
) -> tuple[gpu.DeviceArray, tuple[int, ...]]:
    want: TensorType = param.type
    if not gpu.is_device_array(value):
        raise TypeError(
            f"{_where(fn, param.name)}: the other tensors are on the GPU, but this one is a "
            f"{type(value).__name__}; pass every tensor on the same device"
        )
    array = gpu.device_array(value)
    if isinstance(value, dlpack.DeviceView):
        if value.dtype != want.dtype:
            raise TypeError(
                f"{_where(fn, param.name)} expects a tensor of {want.dtype}, got a "
                f"{type(value.source).__name__} of {value.dtype}"
            )
        if value.device != 0:  # its address means nothing in device 0's context
            raise ValueError(
                f"{_where(fn, param.name)} is on CUDA device {value.device}; tilelang "
                "launches on device 0 (its primary context)"
            )
        shape = value.shape
    elif isinstance(value, gpu.DeviceBuffer) and value.dtype is not None:
        if value.dtype != want.dtype:
            raise TypeError(
                f"{_where(fn, param.name)} expects a tensor of {want.dtype}, "
                f"got a packed {value.dtype} buffer"
            )
        shape = value.shape
    else:
        held, what = _typestr_dtype(array.typestr), array.typestr
        host = getattr(value, "host_dtype", None)
        if held is None and host is not None:
            # a DeviceBuffer of an ml_dtypes type (bf16, f8) speaks typestr "<V2" or
            # "|V1": the array it was made from says what it holds
            held = _host_dtype(host)
            what = what if held is None else held
        if held != want.dtype:
            hint = "; pass tilelang.DeviceBuffer(tilelang.pack(...))" if want.dtype.bits < 8 else ""
            raise TypeError(
                f"{_where(fn, param.name)} expects a tensor of {want.dtype}, "
                f"got a device array of {what}{hint}"
            )
        shape = array.shape
    if array.strides is not None and not gpu.is_contiguous(array):
        # a copy of a tensor the kernel writes would take the results, not the tensor
        fix = (
            "the kernel writes it, so a .contiguous() copy would get the results: pass "
            "the contiguous tensor itself"
            if written
            else "call .contiguous()"
        )
        raise ValueError(f"{_where(fn, param.name)} must be C-contiguous on the GPU ({fix})")
    if array.pointer % 16:
        raise ValueError(
            f"{_where(fn, param.name)} must start on a 16-byte boundary, "
            f"its address is {array.pointer:#x}"
        )
    if len(shape) != want.rank:
        dims = ", ".join(str(d) for d in want.shape)
        raise ValueError(
            f"{_where(fn, param.name)} expects {want.rank} dimensions [{dims}], "
            f"got shape {list(shape)}"
        )
    return array, tuple(shape)


@functools.cache
def _typestr_dtype(typestr: str) -> DType | None:
    """The tilelang dtype of an array-interface type string, None for one without
    (cached: every GPU call asks it of every tensor)."""
    return _host_dtype(np.dtype(typestr))


def _host_dtype(host: np.dtype) -> DType | None:
    """The tilelang dtype of a numpy (or ml_dtypes) dtype, None for one without."""
    try:
        return numpy_dtype(host)
    except TypeError:
        return None


def _where(fn: ir.Function, name: str) -> str:
    return f"{fn.name}(): parameter {name!r}"


def _check_tensor(
    fn: ir.Function, param: ir.Var, value: object, written: bool
) -> tuple[HostTensor, tuple[int, ...]]:
    want: TensorType = param.type
    where = _where(fn, param.name)
    if isinstance(value, PackedArray):
        if value.dtype != want.dtype:
            raise TypeError(
                f"{where} expects a tensor of {want.dtype}, got a PackedArray of {value.dtype}"
            )
        _check_writable(where, value.data, written)  # a kernel stores into these bytes
        shape = tuple(value.shape)
    elif isinstance(value, dlpack.HostView):
        if value.dtype != want.dtype:
            raise TypeError(
                f"{where} expects a tensor of {want.dtype}, got a "
                f"{type(value.source).__name__} of {value.dtype} (through DLPack)"
            )
        _check_writable(where, value.codes, written)
        return HostTensor(value.codes, value.dtype), _checked_rank(where, want, value.shape)
    elif isinstance(value, np.ndarray):
        _check_numpy_dtype(where, want.dtype, value)
        if written and not value.flags.writeable:
            raise ValueError(f"{where} is written by the kernel, but the array given is read-only")
        if written and 0 in value.strides and value.size > 1:
            raise ValueError(
                f"{where} is written by the kernel, but the array given has a zero stride"
            )
        shape = value.shape
    else:
        raise TypeError(
            f"{where} expects a tensor of {want.dtype} (a numpy array or tilelang.PackedArray), "
            f"got {type(value).__name__}"
        )
    if len(shape) != want.rank:
        dims = ", ".join(str(d) for d in want.shape)
        raise ValueError(
            f"{where} expects {want.rank} dimensions [{dims}], got shape {list(shape)}"
        )
    return HostTensor.wrap(value, want.dtype), shape


def _check_writable(where: str, codes: np.ndarray, written: bool) -> None:
    if written and not codes.flags.writeable:
        raise ValueError(f"{where} is written by the kernel, but the array given is read-only")
    if written and 0 in codes.strides and codes.size > 1:
        raise ValueError(f"{where} is written by the kernel, but the array given has a zero stride")


def _checked_rank(where: str, want: TensorType, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) != want.rank:
        dims = ", ".join(str(d) for d in want.shape)
        raise ValueError(
            f"{where} expects {want.rank} dimensions [{dims}], got shape {list(shape)}"
        )
    return tuple(shape)


def _check_numpy_dtype(where: str, want: DType, array: np.ndarray) -> None:
    given = numpy_dtype(array.dtype)
    if given == want:
        return
    hint = ""
    if want.bits < 8 or given is None:
        hint = f"; pass tilelang.pack(values, tilelang.{want.name})"
    raise TypeError(f"{where} expects a tensor of {want}, got a numpy {array.dtype} array{hint}")


def _check_scalar(fn: ir.Function, param: ir.Var, value: object) -> int | float:
    want: DType = param.type.dtype
    where = _where(fn, param.name)
    if want == dtypes.u1 and isinstance(value, (bool, np.bool_)):
        return int(value)  # a u1 is a flag: True and False are its values (and 1 and 0)
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{where} expects a {want} scalar, got {type(value).__name__} {value!r}")
    if want.is_float:
        return float(value)
    if isinstance(value, (float, np.floating)):
        raise TypeError(f"{where} expects an integer ({want}), got the float {value!r}")
    if not want.min <= int(value) <= want.max:
        raise ValueError(f"{where} expects a {want} in [{want.min}, {want.max}], got {value}")
    return int(value)


def _size_mismatch(fn, param, axis, expr, expected, actual, sizes, origin) -> str:
    where = _where(fn, param.name)
    return size_mismatch(where, axis, expr, expected, actual, sizes, origin, param.type.shape)


def size_mismatch(where, axis, expr, expected, actual, sizes, origin, shape) -> str:
    """The message of a tensor dimension `actual` that is not its size expression `expr`
    (= `expected` at `sizes`): each size's value and the argument dimension it was read
    from (`origin`: size name -> "q.shape[1]"), and the parameter's declared `shape`.
    One builder for the kernel's own call and the torch operator (`tilelang.torch`)."""
    dims = ", ".join(str(d) for d in shape)
    bound = ", ".join(f"{s} = {sizes[s]} (from {origin[s]})" for s in symbols(expr) if s in origin)
    text = f"{where}: dimension {axis} should be {expr}"
    if isinstance(expr, Sym) and expr.name in origin:  # "N = 4 (from x.shape[0])", once
        text += f" = {expected} (from {origin[expr.name]})"
    elif not isinstance(expr, Lit):
        text += f" = {expected}" + (f" with {bound}" if bound else "")
    return f"{text}, got {actual} (expected shape [{dims}])"
