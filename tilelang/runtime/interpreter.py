"""The reference interpreter: the executable semantics of the block IR.

This module owns what every block-IR instruction *means*. It executes a `Function`
block by block over its grid with numpy, one vectorized step per instruction; each
instruction class has one small function below, registered by `@semantics(Class)`, so
this file reads
as the specification the backends are tested against.

Representation of values (while a block runs):

- a tile or a scalar is a numpy array (0-d for scalars) of *values*: floats as float32
  (float64 for f64), always exactly representable in their dtype; integers as int64
  (uint64 for u64), always within their dtype's range;
- a global tensor is a `HostTensor` (an array of dtype *codes*, see `host_tensor.py`);
- a shared tile is a `_Shared` buffer of values, mutated in place.

Arithmetic (exactly `tilelang.ir.ops`): integers wrap at their width, `div`/`rem`
truncate toward zero (x / 0 is all ones, x % 0 is x), shifts clamp; floats
are computed in float64 and rounded once (RNE, `dtypes.quantize`) to the result dtype
after every operation. For +, -, *, /, sqrt on f32 and narrower this is the correctly
rounded IEEE result (float64 has more than 2p+2 bits), so it is what the GPU computes;
e8m0, computed in f32 by compiled code, is rounded to f32 first (its products and
quotients can leave f32's range: inf or 0, NaN in e8m0). Transcendental functions are float64 `numpy` rounded once: the reference, not a model
of the GPU's approximations.

Decisions the IR leaves to the interpreter:

- `Dot` computes a @ b + acc in float64 (products of inputs up to 26 significant bits
  are exact; sums are float64) or int64, and rounds once to the accumulator dtype; int
  accumulators wrap at their width.
- `Reduce`/`Scan` `sum` and `prod` of floats are float64 (numpy's order, not exact)
  and rounded once per output element (a sum of only -0 is -0); the GPU sums in the
  accumulator dtype in a tree, so compare float reductions with a tolerance. `max`/`min` ignore NaN (IEEE minNum/maxNum, PTX `min.f32`); so do
  the elementwise `min`/`max`.
- `AssociativeScan` applies its combine body element by element, sequentially from the
  start of the axis (from the end when reversed): acc = x_0, then acc = acc ⊕ x_i, each
  operation of the body rounded as any scalar operation is. The body runs once per
  position, on every other index at once (its scalars hold one value per scan lane).
  Compiled backends associate the terms in a tree (within a thread, across lanes,
  across warps), never reordering them, so integer results agree exactly and float
  results within a tolerance, as the float scans' do.
- Rounding after arithmetic is the dtype codec's: f16/bf16/f32/f64 overflow to inf
  (IEEE); arithmetic directly on f8 and smaller floats saturates, as their casts do.
- Integer shift amounts are read as unsigned (as PTX does): a negative signed amount
  is a huge one, so `shl` gives 0 and `shr` the sign fill.
- `Full`, `Arange` and loop variables convert with the cast policy (saturating).
- `Atomic` and `ScatterAtomic` update one element after the other, in row-major order,
  blocks in grid order (`interpreter_atomics` says why add, max and min agree with the
  compiled backends as they do, and what the old values they return depend on).
- Shared tiles start as zeros; `CopyAsync` completes at once (commit/wait/sync are
  no-ops in a sequential interpreter). The prelude before `Blocks` must be scalar work:
  `grid()` evaluates it without tensors; each block then runs it again.
- Float values are values, not bit patterns: a computed NaN is the canonical NaN and a
  store writes that, but a loaded NaN keeps its code through moves to a `View`
  (`interpreter_numerics`). Every non-NaN code, -0.0 included, survives views bit-exactly.
"""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.instructions.control import require_message, zero_step_message
from tilelang.ir.ops import ELEMENTWISE, REDUCTIONS, SCANS, Result, flushed
from tilelang.ir.shape_expr import Sym
from tilelang.ir.types import SharedType, TensorType, TileType
from tilelang.ir.verify import is_launch_arithmetic
from tilelang.ir.visit import walk
from tilelang.runtime import interpreter_atomics as atomics
from tilelang.runtime import interpreter_numerics as numerics
from tilelang.runtime.bit_views import ViewError, view_per_thread, view_row_major
from tilelang.runtime.host_tensor import HostTensor

__all__ = ["InterpreterError", "grid", "run"]

PrintFn = Callable[[str], Any]


Semantics = Callable[["_State", Any], "tuple[Any, ...] | None"]

#: What each instruction class means: one function per class.
SEMANTICS: ir.ByClass[Semantics] = ir.ByClass("semantics")
semantics = SEMANTICS.register


class InterpreterError(RuntimeError):
    """A fault while interpreting, reported at the instruction's source location."""

    def __init__(self, message: str, loc: ir.Loc = ir.NOWHERE) -> None:
        self.message = message
        self.loc = loc
        super().__init__(f"{loc}: {message}")


class _Fault(Exception):
    """Raised inside a handler; the dispatcher turns it into an InterpreterError at the loc."""


class _GridReached(Exception):
    """Raised by `Blocks` while `grid()` evaluates the prelude: carries the grid sizes."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__(sizes)
        self.sizes = sizes


@dataclass
class _Shared:
    """A shared tile: a mutable buffer of values."""

    values: np.ndarray


@dataclass
class _State:
    """What one block's execution sees: bound values, its block index, the print hook."""

    env: dict[str, Any]
    block: tuple[int, ...] | None  # None while grid() evaluates the prelude
    print_fn: PrintFn = builtins.print
    consts: dict[tuple[DType, str], np.ndarray] = field(default_factory=dict)

    def value(self, v: ir.Value) -> Any:
        if isinstance(v, ir.Const):
            # Keyed by the text of the number: Const(-0.0) == Const(0.0) as dataclasses.
            key = (v.dtype, repr(v.value))
            if key not in self.consts:
                self.consts[key] = dtypes.quantize(v.value, v.dtype)
            return self.consts[key]
        try:
            return self.env[v.name]
        except KeyError:
            raise _Fault(f"%{v.name} is used before it is defined") from None

    def int(self, v: ir.Value) -> int:
        return int(self.value(v))

    def bind(self, var: ir.Var, value: Any) -> None:
        self.env[var.name] = value

    def tensor(self, v: ir.Var) -> HostTensor:
        if self.block is None:
            raise _Fault(
                f"%{v.name} is a tensor, but the grid is computed before tensors are bound: "
                "only scalar work may precede Blocks"
            )
        tensor = self.value(v)
        if not isinstance(tensor, HostTensor):
            raise _Fault(f"%{v.name} is not a global tensor (no tensor was bound to it)")
        return tensor


# --- public entry points --------------------------------------------------------------


def run(
    fn: ir.Function,
    tensors: Mapping[str, Any],
    scalars: Mapping[str, int | float] | None = None,
    sizes: Mapping[str, int] | None = None,
    *,
    print_fn: PrintFn | None = None,
) -> None:
    """Execute `fn` over its whole grid, storing into the tensors in place.

    `tensors` maps each tensor parameter's name to a numpy array, a `PackedArray` or a
    `HostTensor`; `scalars` the scalar parameters; `sizes` the size symbols (a size
    missing there is read from a tensor dimension that is exactly that symbol).
    Arguments are assumed validated by the caller. `print_fn` receives `Print` lines.
    """
    hosts = {
        p.name: HostTensor.wrap(tensors[p.name], p.type.dtype)
        for p in fn.params
        if isinstance(p.type, TensorType)
    }
    env = _bind_arguments(fn, hosts, scalars or {}, sizes or {})
    check_launch(fn, env)
    hook = builtins.print if print_fn is None else print_fn
    consts: dict[tuple[DType, str], np.ndarray] = {}  # converted once, for every block
    try:
        for index in itertools.product(*(range(n) for n in _grid(fn, env))):
            _exec_block(fn.body, _State(dict(env), index, hook, consts))
    finally:
        for host in hosts.values():
            host.finish()


def grid(
    fn: ir.Function,
    scalars: Mapping[str, int | float] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> tuple[int, ...]:
    """The launch grid: the `Blocks` sizes after the scalar prelude; (1,) without `Blocks`."""
    return _grid(fn, _bind_arguments(fn, {}, scalars or {}, sizes or {}))


def _grid(fn: ir.Function, env: dict[str, Any]) -> tuple[int, ...]:
    if not any(isinstance(instr, ir.Blocks) for instr in fn.body.instrs):
        return (1,)
    # The prelude runs once more per block; here it must not touch tensors or print.
    scalars = {name: v for name, v in env.items() if not isinstance(v, HostTensor)}
    state = _State(scalars, None, print_fn=lambda _text: None)
    try:
        _exec_block(fn.body, state)
    except _GridReached as reached:
        return tuple(max(n, 0) for n in reached.sizes)
    raise AssertionError("unreachable: a top-level Blocks always stops the prelude")


def check_launch(fn: ir.Function, env: Mapping[str, Any]) -> None:
    """Before any block runs: every loop step, which the arguments decide (the verifier
    makes it arithmetic on scalar parameters and sizes), is nonzero, as Python's range()
    requires. A `ValueError` naming the loop's source line otherwise."""
    state = _State({k: v for k, v in env.items() if not isinstance(v, HostTensor)}, None)
    for instr in walk(fn):
        if is_launch_arithmetic(instr, set(state.env)):
            SEMANTICS.get(type(instr))(state, instr)
        elif isinstance(instr, ir.For) and _known(state, instr.step) and state.int(instr.step) == 0:
            raise ValueError(zero_step_message(instr))
        elif isinstance(instr, ir.Require) and _requirement_fails(state, instr):
            raise ValueError(require_message(instr))


def _requirement_fails(state: _State, instr: ir.Require) -> bool:
    return _known(state, instr.cond) and not state.value(instr.cond)


def _known(state: _State, value: ir.Value) -> bool:
    # Verified IR steps only by known values; unverified text may not (then `range`
    # itself rejects a zero step, at the loop's location).
    return isinstance(value, ir.Const) or value.name in state.env


def _bind_arguments(
    fn: ir.Function,
    hosts: Mapping[str, HostTensor],
    scalars: Mapping[str, int | float],
    sizes: Mapping[str, int],
) -> dict[str, Any]:
    env: dict[str, Any] = dict(hosts)
    for param in fn.params:
        if param.name in scalars:
            env[param.name] = dtypes.quantize(scalars[param.name], param.type.dtype)
    known = dict(sizes)
    for param in fn.params:  # a size not given: the tensor dimension that is that symbol
        if isinstance(param.type, TensorType) and param.name in hosts:
            for dim, extent in zip(param.type.shape, hosts[param.name].shape, strict=True):
                if isinstance(dim, Sym):
                    known.setdefault(dim.name, extent)
    for size in fn.sizes:
        if size.name in known:
            env[size.name] = dtypes.quantize(known[size.name], size.type.dtype)
    return env


# --- execution ------------------------------------------------------------------------


def _exec_block(block: ir.Block, state: _State) -> tuple[Any, ...] | None:
    """Run the instructions of `block`; return the values of its `Yield`, if it has one."""
    for instr in block.instrs:
        handler = SEMANTICS.get(type(instr))
        if handler is None:
            raise InterpreterError(f"no semantics for {type(instr).__name__}", instr.loc)
        try:
            yielded = handler(state, instr)
        except (InterpreterError, _GridReached):
            raise
        except _Fault as fault:
            raise InterpreterError(f"{type(instr).__name__}: {fault}", instr.loc) from None
        except Exception as error:  # a numpy error etc.: still say where it happened
            message = f"{type(instr).__name__}: {type(error).__name__}: {error}"
            raise InterpreterError(message, instr.loc) from error
        if yielded is not None:
            return yielded
    return None


def _shape(var: ir.Var) -> tuple[int, ...]:
    return tuple(var.type.shape) if isinstance(var.type, (TileType, SharedType)) else ()


def _dtype(v: ir.Value) -> DType:
    return v.dtype if isinstance(v, ir.Const) else v.type.dtype


def _fill(shape: tuple[int, ...], value: Any, dtype: DType) -> np.ndarray:
    return np.full(shape, value, dtype=dtype.value_dtype)


def _wrap(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Integers modulo 2^bits into the dtype's range (two's complement for signed)."""
    if dtype.bits == 64:
        return np.asarray(values).astype(dtype.value_dtype)
    masked = np.asarray(values).astype(np.int64) & dtype.code_mask
    if dtype.signed:
        masked = masked - (((masked >> (dtype.bits - 1)) & 1) << dtype.bits)
    return masked


def _round(values: np.ndarray, dtype: DType) -> np.ndarray:
    """An exact (float64 or wide int) result to the dtype: RNE for floats, wrap for ints."""
    if not dtype.is_float:
        return _wrap(values, dtype)
    if dtype.bits == 64:
        return numerics.canonical_nan(np.asarray(values, dtype=np.float64), dtype)
    if dtype == dtypes.f32:  # the hardware's float64 -> float32 conversion is IEEE RNE
        rounded = np.asarray(values, dtype=np.float64).astype(np.float32)
        return numerics.canonical_nan(rounded, dtype)
    return dtypes.quantize(np.asarray(values, dtype=np.float64), dtype)


def _box(
    offsets: tuple[int, ...], shape: tuple[int, ...], extent: tuple[int, ...]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Slices of the in-bounds part of a box: (in the tensor, in the tile), or None."""
    if len(offsets) != len(extent) or len(shape) != len(extent):
        raise _Fault(
            f"a box of rank {len(shape)} at {len(offsets)} offsets does not fit a tensor "
            f"of rank {len(extent)}"
        )
    outer, inner = [], []
    for off, n, size in zip(offsets, shape, extent, strict=True):
        lo, hi = max(off, 0), min(off + n, size)
        if hi <= lo:
            return None
        outer.append(slice(lo, hi))
        inner.append(slice(lo - off, hi - off))
    return tuple(outer), tuple(inner)


def _masked_load(
    tensor: HostTensor, offsets: tuple[int, ...], shape: tuple[int, ...], fill: Any, dtype: DType
) -> np.ndarray:
    tile = _fill(shape, fill, dtype)
    box = _box(offsets, shape, tensor.shape)
    if box is not None:
        outer, inner = box
        values = numerics.decode(tensor.dtype, tensor.codes[outer])
        tile[inner] = values if tensor.dtype == dtype else dtypes.quantize(values, dtype)
    return tile


# --- creation ---------------------------------------------------------------------------


@semantics(ir.Blocks)
def _blocks(state: _State, instr: ir.Blocks) -> None:
    if state.block is None:
        raise _GridReached(tuple(state.int(size) for size in instr.sizes))
    for var, index in zip(instr.results, state.block, strict=True):
        state.bind(var, dtypes.quantize(index, var.type.dtype))


@semantics(ir.Full)
def _full(state: _State, instr: ir.Full) -> None:
    dtype, shape = instr.result.type.dtype, _shape(instr.result)
    value = dtypes.quantize(state.value(instr.value), dtype)
    # A scalar result keeps the value's lanes (one per scan lane in a combine body).
    state.bind(instr.result, _fill(shape, value, dtype) if shape else np.asarray(value))


@semantics(ir.Arange)
def _arange(state: _State, instr: ir.Arange) -> None:
    (length,) = _shape(instr.result)
    values = np.arange(instr.start, instr.start + length, dtype=np.int64)
    state.bind(instr.result, dtypes.quantize(values, instr.result.type.dtype))


@semantics(ir.SharedAlloc)
def _shared_alloc(state: _State, instr: ir.SharedAlloc) -> None:
    state.bind(instr.result, _Shared(_fill(_shape(instr.result), 0, instr.result.type.dtype)))


# --- data movement ----------------------------------------------------------------------


@semantics(ir.Load, ir.LoadScalar)  # a scalar load reads a box of one element
def _load(state: _State, instr: ir.Load | ir.LoadScalar) -> None:
    if getattr(instr, "mask", None) is not None:  # element by element, as a gather
        return _gather(state, instr)
    dtype = instr.result.type.dtype
    fill = numerics.fill_value(None if instr.fill is None else state.value(instr.fill), dtype)
    offsets = tuple(state.int(off) for off in instr.offsets)
    shape = _shape(instr.result) or (1,) * len(offsets)
    tile = _masked_load(state.tensor(instr.tensor), offsets, shape, fill, dtype)
    state.bind(instr.result, tile.reshape(_shape(instr.result)))


def _indexed(state: _State, instr: ir.Instr, shape: tuple[int, ...]):
    """(tensor, coordinates per dim, accessed) of the elements of a tile of `shape` that
    an access (a box, a gather's or a scatter's) touches: the box's e_d + offsets[d],
    except offsets[axis] + index[e] along a gather's axis; accessed where inside the
    tensor and where a `mask` holds."""
    tensor = state.tensor(instr.tensor)
    index = getattr(instr, "index", None)
    box = np.indices(shape, dtype=np.int64)
    if index is not None:
        box[instr.axis] = np.broadcast_to(np.asarray(state.value(index), dtype=np.int64), shape)
    coords = [state.int(o) + box[d] for d, o in enumerate(instr.offsets)]
    inside = np.ones(shape, dtype=bool)
    if getattr(instr, "mask", None) is not None:
        inside &= np.asarray(state.value(instr.mask)).astype(bool)
    for coord, size in zip(coords, tensor.shape, strict=True):
        inside &= (coord >= 0) & (coord < size)
    return tensor, tuple(c[inside] for c in coords), inside


@semantics(ir.Gather)
def _gather(state: _State, instr: ir.Gather | ir.Load) -> None:
    """Coordinates outside the tensor, and elements masked out, read the fill."""
    dtype, shape = instr.result.type.dtype, _shape(instr.result)
    fill = numerics.fill_value(None if instr.fill is None else state.value(instr.fill), dtype)
    tensor, picked, inside = _indexed(state, instr, shape)
    tile = _fill(shape, fill, dtype)
    tile[inside] = numerics.decode(tensor.dtype, tensor.codes[picked])
    state.bind(instr.result, tile)


@semantics(ir.Store, ir.Scatter)
def _store(state: _State, instr: ir.Store | ir.Scatter) -> None:
    """Elements outside the tensor or masked out are not touched; of two elements a
    scatter sends to one place the last (in row-major order) is written (numpy's fancy
    assignment)."""
    tile = np.asarray(state.value(instr.value))
    if isinstance(instr, ir.Store) and instr.mask is None:  # the common case, by slices
        tensor = state.tensor(instr.tensor)
        box = _box(tuple(state.int(o) for o in instr.offsets), tile.shape, tensor.shape)
        if box is not None:
            tensor.codes[box[0]] = _encode_tile(tensor.dtype, tile[box[1]])
            tensor.dirty = True
        return
    tensor, picked, written = _indexed(state, instr, tile.shape)
    tensor.codes[picked] = _encode_tile(tensor.dtype, tile[written])
    tensor.dirty = True


@semantics(ir.Atomic, ir.ScatterAtomic)
def _atomic(state: _State, instr: ir.Atomic | ir.ScatterAtomic) -> None:
    """Each element inside the tensor where the mask holds: the tensor's value ⊕ the
    tile's (`instr.op`), rounded once in the tensor's dtype (integers wrap), one after
    the other (elements a scatter sends to one place all combine). A result holds
    each element's value before its own update, 0 where none was made."""
    tile = np.asarray(state.value(instr.value))
    tensor, picked, added = _indexed(state, instr, tile.shape)
    dtype, terms = tensor.dtype, tile[added]
    compare = None if instr.expected is None else np.asarray(state.value(instr.expected))[added]
    codes = tensor.codes if picked else tensor.codes.reshape(1)  # rank 0: one place
    picked = picked or (np.zeros(terms.size, np.int64),)
    encode = lambda values: _encode_tile(dtype, _round(values, dtype))  # noqa: E731
    before = atomics.update(instr.op, dtype, codes, picked, terms, compare, encode)
    tensor.dirty = True
    if instr.result is not None:
        state.bind(instr.result, atomics.placed(before, added))


@semantics(ir.Arrive)
def _arrive(state: _State, instr: ir.Arrive) -> None:
    """Blocks run one after another here, so a block's arrival follows every earlier
    block's whole run: its count and its stores."""
    tensor = state.tensor(instr.tensor)
    offsets = tuple(state.int(off) for off in instr.offsets)
    box = _box(offsets, (1,) * len(offsets), tensor.shape)
    if box is None:
        state.bind(instr.result, np.asarray(-1, np.int32))
        return
    outer, _ = box
    before = tensor.dtype.decode(tensor.codes[outer])
    tensor.codes[outer] = tensor.dtype.encode(_round(before.astype(np.int64) + 1, tensor.dtype))
    tensor.dirty = True
    state.bind(instr.result, np.asarray(before.reshape(()), np.int32))


def _encode_tile(dtype: DType, values: np.ndarray) -> np.ndarray:
    """Codes of a tile's values. The values already are values of `dtype`, so an
    infinity the type has is stored as itself (casting would saturate it), and a NaN
    that holds the code it was loaded with is stored as that code (a copy moves bits)."""
    codes = numerics.view_codes(dtype, values, dtype.encode(values))
    if dtype.is_float and dtype.has_inf and dtype.bits < 16:
        sign = dtype.storage.type(1 << (dtype.bits - 1))
        infinity = dtype.storage.type(dtype.inf_code)
        codes = np.where(np.isposinf(values), infinity, codes)
        codes = np.where(np.isneginf(values), infinity | sign, codes).astype(dtype.storage)
    return codes


@semantics(ir.CopyAsync)
def _copy_async(state: _State, instr: ir.CopyAsync) -> None:
    # Sequential interpreter: the copy completes now; commit/wait have nothing to do.
    if instr.mask is not None:  # zero bytes where it fails, as a gather_async's
        _gather_async(state, instr)
        return
    shared: _Shared = state.value(instr.shared)
    dtype = instr.shared.type.dtype
    offsets = tuple(state.int(off) for off in instr.offsets)
    shared.values[...] = _masked_load(
        state.tensor(instr.tensor), offsets, shared.values.shape, numerics.zero_bytes(dtype), dtype
    )


@semantics(ir.GatherAsync)
def _gather_async(state: _State, instr: ir.GatherAsync | ir.CopyAsync) -> None:
    # Completes now, as a copy_async does: a gather's values, zero bytes outside the tensor.
    shared: _Shared = state.value(instr.shared)
    tensor, picked, inside = _indexed(state, instr, shared.values.shape)
    dtype = instr.shared.type.dtype
    values = _fill(shared.values.shape, numerics.zero_bytes(dtype), dtype)
    values[inside] = numerics.decode(tensor.dtype, tensor.codes[picked])
    shared.values[...] = values


@semantics(ir.AsyncCommit, ir.AsyncWait, ir.Sync)
def _nothing(state: _State, instr: ir.Instr) -> None:
    """AsyncCommit, AsyncWait, Sync: ordering only, and one block runs sequentially."""


@semantics(ir.SharedSlice)
def _shared_slice(state: _State, instr: ir.SharedSlice) -> None:
    shared: _Shared = state.value(instr.shared)
    state.bind(instr.result, _Shared(shared.values[state.int(instr.index)]))  # a view


@semantics(ir.SharedTranspose)
def _shared_transpose(state: _State, instr: ir.SharedTranspose) -> None:
    shared: _Shared = state.value(instr.shared)
    state.bind(instr.result, _Shared(shared.values.transpose(instr.perm)))  # a view


@semantics(ir.SharedLoad)
def _shared_load(state: _State, instr: ir.SharedLoad) -> None:
    shared: _Shared = state.value(instr.shared)
    state.bind(instr.result, shared.values.copy())


@semantics(ir.SharedStore)
def _shared_store(state: _State, instr: ir.SharedStore) -> None:
    shared: _Shared = state.value(instr.shared)
    shared.values[...] = state.value(instr.value)


@semantics(ir.Lookup)
def _lookup(state: _State, instr: ir.Lookup) -> None:
    """`table[index]` elementwise; an index outside the table reads zero."""
    table = state.value(instr.table)
    table = np.asarray(table.values if isinstance(table, _Shared) else table)
    index = np.asarray(state.value(instr.index)).astype(np.int64)
    inside = (index >= 0) & (index < table.shape[0])
    state.bind(
        instr.result, np.where(inside, table[np.where(inside, index, 0)], table.dtype.type(0))
    )


# --- elementwise ------------------------------------------------------------------------


@semantics(ir.Compute)
def _compute(state: _State, instr: ir.Compute) -> None:
    op = ELEMENTWISE.get(instr.op)
    if op is None:
        raise _Fault(f"unknown elementwise operator {instr.op!r}")
    if len(instr.args) != op.arity:
        raise _Fault(f"{instr.op} takes {op.arity} operands, got {len(instr.args)}")
    operand_dtype = _dtype(instr.args[op.value_operand])
    result_dtype = instr.result.type.dtype
    # Operands in one numpy dtype: mixing int64 with uint64 would silently go to float64.
    wide = np.float64 if operand_dtype.is_float else operand_dtype.value_dtype
    args = [np.asarray(state.value(a)) for a in instr.args]
    # Overflow wraps, x/0 is inf: both are the semantics; and widening a signalling NaN
    # is no error either.
    with np.errstate(all="ignore"):
        if op.name != "where":
            args = [a.astype(wide) for a in args]
        if operand_dtype.is_float and op.typed_reference is not None:
            result = op.typed_reference(operand_dtype, *args)
        elif operand_dtype.is_float or op.int_reference is None:
            result = op.reference(*args)
            if op.flush:
                result = flushed(result)
        else:
            result = op.int_reference(operand_dtype, *args)
        if op.result is Result.BOOL:
            result = np.asarray(result).astype(np.int64)
        elif op.name != "where":
            if operand_dtype == dtypes.e8m0:
                # As compiled code, in f32: e8m0 products and quotients can leave
                # f32's range (inf, or 0 below 2^-149: both NaN in e8m0).
                result = np.asarray(result).astype(np.float32)
            result = _round(result, result_dtype)
    result = np.asarray(result, dtype=result_dtype.value_dtype)
    shape = _shape(instr.result)
    if result.ndim < len(shape):  # e.g. a tile result of scalar operands
        result = np.broadcast_to(result, shape).copy()
    state.bind(instr.result, result)


@semantics(ir.Cast)
def _cast(state: _State, instr: ir.Cast) -> None:
    # dtypes.quantize is the cast policy: RNE + saturate (IEEE types overflow to inf).
    state.bind(instr.result, dtypes.quantize(state.value(instr.value), instr.result.type.dtype))


# --- view: reinterpreting bits ------------------------------------------------------------


@semantics(ir.View)
def _view(state: _State, instr: ir.View) -> None:
    src, dst = instr.value.type, instr.result.type
    values = np.asarray(state.value(instr.value))
    codes = _encode_tile(src.dtype, values)  # a loaded NaN's code included
    try:
        if getattr(src, "layout", None) is not None and getattr(dst, "layout", None) is not None:
            out = view_per_thread(codes, src, dst)
        else:
            out = view_row_major(codes, src, dst)
    except ViewError as error:
        raise _Fault(str(error)) from None
    state.bind(instr.result, numerics.decode(dst.dtype, out))


# --- dot, reductions, scans, shape changes ----------------------------------------------


@semantics(ir.Dot)
def _dot(state: _State, instr: ir.Dot) -> None:
    acc_dtype = instr.acc.type.dtype
    # Products of f16/bf16/f8 inputs are exact in float64; ints wrap mod 2^64, then at
    # the accumulator's width, which is the same residue.
    wide = np.dtype(np.float64) if acc_dtype.is_float else acc_dtype.value_dtype
    with np.errstate(all="ignore"):  # widening a signalling NaN is no error
        a, b, acc = (np.asarray(state.value(v)).astype(wide) for v in (instr.a, instr.b, instr.acc))
        result = np.matmul(a, b) + acc
    state.bind(instr.result, _round(result, instr.result.type.dtype))


@semantics(ir.Reduce)
def _reduce(state: _State, instr: ir.Reduce) -> None:
    if instr.op not in REDUCTIONS:
        raise _Fault(f"unknown reduction {instr.op!r}")
    dtype = instr.value.type.dtype
    ufunc = _reduce_ufunc(instr.op, dtype)
    with np.errstate(all="ignore"):  # widening a signalling NaN is no error
        values = _widen(np.asarray(state.value(instr.value)), dtype)
        result = ufunc.reduce(values, axis=instr.axis)
        if dtype.is_float:
            result = numerics.zero_signs(instr.op, result, values, instr.axis, accumulate=False)
    state.bind(instr.result, _round(result, instr.result.type.dtype))


@semantics(ir.Scan)
def _scan(state: _State, instr: ir.Scan) -> None:
    if instr.op not in SCANS:
        raise _Fault(f"unknown scan {instr.op!r}")
    dtype = instr.value.type.dtype
    ufunc = _reduce_ufunc(instr.op, dtype)
    with np.errstate(all="ignore"):  # widening a signalling NaN is no error
        values = _widen(np.asarray(state.value(instr.value)), dtype)
        if instr.reverse:
            values = np.flip(values, axis=instr.axis)
        result = ufunc.accumulate(values, axis=instr.axis)
        if dtype.is_float:
            result = numerics.zero_signs(instr.op, result, values, instr.axis, accumulate=True)
    if instr.reverse:
        result = np.flip(result, axis=instr.axis)
    state.bind(instr.result, _round(result, instr.result.type.dtype))


@semantics(ir.AssociativeScan)
def _associative_scan(state: _State, instr: ir.AssociativeScan) -> None:
    # Sequential from the start of the axis (the end when reversed), every other index
    # at once: the combine body's scalars hold one value per scan lane.
    values = [np.asarray(state.value(v)) for v in instr.values]
    axis, count = instr.axis, len(instr.values)
    results = [np.empty_like(v) for v in values]
    positions = range(values[0].shape[axis])
    acc: tuple[np.ndarray, ...] | None = None
    for i in reversed(positions) if instr.reverse else positions:
        element = tuple(np.take(v, i, axis=axis) for v in values)
        if acc is None:
            acc = element
        else:
            for var, value in zip((*instr.lhs, *instr.rhs), (*acc, *element), strict=True):
                state.bind(var, value)
            yielded = _body_yield(instr.body, state, count)
            pairs = zip(yielded, element, strict=True)
            acc = tuple(np.broadcast_to(y, np.shape(e)).copy() for y, e in pairs)
        for result, value in zip(results, acc, strict=True):
            result[(slice(None),) * axis + (i,)] = value
    for var, result in zip(instr.results, results, strict=True):
        state.bind(var, result)


def _widen(values: np.ndarray, dtype: DType) -> np.ndarray:
    return values.astype(np.float64 if dtype.is_float else dtype.value_dtype)


def _reduce_ufunc(op: str, dtype: DType) -> np.ufunc:
    ufunc = numerics.REDUCE_UFUNCS.get((op, dtype.is_float))
    if ufunc is None:
        raise _Fault(f"{op} does not apply to {dtype}")
    return ufunc


@semantics(ir.Reshape, ir.Item)  # an item: the rank-0 tile's value as a scalar
def _reshape(state: _State, instr: ir.Reshape) -> None:
    state.bind(instr.result, np.reshape(state.value(instr.value), _shape(instr.result)).copy())


@semantics(ir.Relayout)
def _relayout(state: _State, instr: ir.Relayout) -> None:
    state.bind(instr.result, state.value(instr.value))


@semantics(ir.Slice)
def _slice(state: _State, instr: ir.Slice) -> None:
    box = tuple(slice(a, b) for a, b in zip(instr.starts, instr.stops, strict=True))
    state.bind(instr.result, np.asarray(state.value(instr.value))[box].copy())


@semantics(ir.Concat)
def _concat(state: _State, instr: ir.Concat) -> None:
    values = [np.asarray(state.value(v)) for v in instr.values]
    state.bind(instr.result, np.concatenate(values, axis=instr.axis))


@semantics(ir.Transpose)
def _transpose(state: _State, instr: ir.Transpose) -> None:
    state.bind(instr.result, np.transpose(state.value(instr.value), instr.perm).copy())


@semantics(ir.Broadcast)
def _broadcast(state: _State, instr: ir.Broadcast) -> None:
    value = np.asarray(state.value(instr.value))
    state.bind(instr.result, np.broadcast_to(value, _shape(instr.result)).copy())


@semantics(ir.Require)
def _require(state: _State, instr: ir.Require) -> None:
    """Checked before any block runs (`check_launch`); nothing to do in a block."""


@semantics(ir.Print)
def _print(state: _State, instr: ir.Print) -> None:
    value = state.value(instr.value)
    text = np.array2string(np.asarray(value), threshold=1 << 20, max_line_width=120)
    state.print_fn(f"{instr.label} block={state.block}: {text}")


# --- control flow -------------------------------------------------------------------------


@semantics(ir.Yield)
def _yield(state: _State, instr: ir.Yield) -> tuple[Any, ...]:
    return tuple(state.value(v) for v in instr.values)


@semantics(ir.For)
def _for(state: _State, instr: ir.For) -> None:
    start, stop, step = (state.int(v) for v in (instr.start, instr.stop, instr.step))
    values = tuple(state.value(v) for v in instr.inits)
    for i in range(start, stop, step):
        state.bind(instr.var, dtypes.quantize(i, instr.var.type.dtype))
        for var, value in zip(instr.carried, values, strict=True):
            state.bind(var, value)
        values = _body_yield(instr.body, state, len(instr.carried))
    for var, value in zip(instr.results, values, strict=True):
        state.bind(var, value)


@semantics(ir.If)
def _if(state: _State, instr: ir.If) -> None:
    body = instr.then_body if state.value(instr.cond) != 0 else instr.else_body
    for var, value in zip(instr.results, _body_yield(body, state, len(instr.results)), strict=True):
        state.bind(var, value)


def _body_yield(body: ir.Block, state: _State, count: int) -> tuple[Any, ...]:
    yielded = _exec_block(body, state)
    yielded = () if yielded is None else yielded
    if len(yielded) != count:
        raise _Fault(f"the body yields {len(yielded)} values, {count} expected")
    return yielded
