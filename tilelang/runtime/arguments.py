"""Checking a kernel's arguments against its parameters, before anything runs.

`bind_arguments` takes the caller's values by parameter name and returns them bound:
each tensor checked (type, dtype, rank, packed byte size, strides, writability when the
kernel stores to it), the size symbols of the tensors' shapes bound consistently (and
every size expression checked), every runtime scalar checked against its dtype's range.
A mistake is a `TypeError` (wrong kind or dtype) or `ValueError` (wrong size) naming
the parameter, what was expected and what was given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.ir import nodes as ir
from tilelang.ir.shape_expr import Lit, Sym, evaluate, symbols
from tilelang.ir.types import TensorType
from tilelang.ir.visit import walk
from tilelang.runtime.host_tensor import HostTensor


@dataclass(frozen=True)
class BoundArguments:
    tensors: dict[str, HostTensor]
    scalars: dict[str, int | float]
    sizes: dict[str, int]
    stored: tuple[str, ...]  # tensor parameters the kernel writes, in parameter order


def stored_tensors(fn: ir.Function) -> tuple[str, ...]:
    written = {i.tensor.name for i in walk(fn) if isinstance(i, ir.Store)}
    return tuple(p.name for p in fn.params if p.name in written)


def bind_arguments(fn: ir.Function, values: dict[str, object]) -> BoundArguments:
    stored = stored_tensors(fn)
    tensors: dict[str, HostTensor] = {}
    scalars: dict[str, int | float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for param in fn.params:
        value = values[param.name]
        if isinstance(param.type, TensorType):
            tensor, shape = _check_tensor(fn, param, value, param.name in stored)
            tensors[param.name], shapes[param.name] = tensor, shape
        else:
            scalars[param.name] = _check_scalar(fn, param, value)
    sizes = _bind_sizes(fn, shapes)
    return BoundArguments(tensors, scalars, sizes, stored)


@dataclass(frozen=True)
class BoundDeviceArguments:
    pointers: dict[str, int]
    scalars: dict[str, int | float]
    sizes: dict[str, int]
    stored: tuple[str, ...]


def bind_device_arguments(fn: ir.Function, values: dict[str, object]) -> BoundDeviceArguments:
    """The GPU form of `bind_arguments`: every tensor a device array (torch, cupy,
    `tilelang.DeviceBuffer`) of the parameter's dtype, C-contiguous and 16-byte aligned;
    the same size binding and scalar checks. Nothing is copied."""
    pointers: dict[str, int] = {}
    scalars: dict[str, int | float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for param in fn.params:
        value = values[param.name]
        if isinstance(param.type, TensorType):
            pointers[param.name], shapes[param.name] = _check_device_tensor(fn, param, value)
        else:
            scalars[param.name] = _check_scalar(fn, param, value)
    return BoundDeviceArguments(pointers, scalars, _bind_sizes(fn, shapes), stored_tensors(fn))


def _check_device_tensor(
    fn: ir.Function, param: ir.Var, value: object
) -> tuple[int, tuple[int, ...]]:
    from tilelang.runtime import gpu

    want: TensorType = param.type
    where = _where(fn, param.name)
    if not gpu.is_device_array(value):
        raise TypeError(
            f"{where}: the other tensors are on the GPU, but this one is a {type(value).__name__}; "
            "pass every tensor on the same device"
        )
    array = gpu.device_array(value)
    if isinstance(value, gpu.DeviceBuffer) and value.dtype is not None:
        if value.dtype != want.dtype:
            raise TypeError(
                f"{where} expects a tensor of {want.dtype}, got a packed {value.dtype} buffer"
            )
        shape = value.shape
    else:
        try:
            given = dtypes.dtype(np.dtype(array.typestr))
        except (ValueError, TypeError):
            given = None
        if given != want.dtype:
            hint = "; pass tilelang.DeviceBuffer(tilelang.pack(...))" if want.dtype.bits < 8 else ""
            raise TypeError(
                f"{where} expects a tensor of {want.dtype}, got a device array of {array.typestr}{hint}"
            )
        shape = array.shape
        if not gpu.is_contiguous(array):
            raise ValueError(f"{where} must be C-contiguous on the GPU (call .contiguous())")
    if array.pointer % 16:
        raise ValueError(
            f"{where} must start on a 16-byte boundary, its address is {array.pointer:#x}"
        )
    if len(shape) != want.rank:
        dims = ", ".join(str(d) for d in want.shape)
        raise ValueError(
            f"{where} expects {want.rank} dimensions [{dims}], got shape {list(shape)}"
        )
    return array.pointer, tuple(shape)


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
        shape = tuple(value.shape)
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


def _check_numpy_dtype(where: str, want: DType, array: np.ndarray) -> None:
    try:
        given = dtypes.dtype(array.dtype)
    except (ValueError, TypeError):
        given = None
    if given == want:
        return
    hint = ""
    if want.bits < 8 or given is None:
        hint = f"; pass tilelang.pack(values, tilelang.{want.name})"
    raise TypeError(f"{where} expects a tensor of {want}, got a numpy {array.dtype} array{hint}")


def _check_scalar(fn: ir.Function, param: ir.Var, value: object) -> int | float:
    want: DType = param.type.dtype
    where = _where(fn, param.name)
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


def _bind_sizes(fn: ir.Function, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    origin: dict[str, str] = {}
    for param in fn.params:
        if param.name not in shapes:
            continue
        for axis, (expr, actual) in enumerate(
            zip(param.type.shape, shapes[param.name], strict=True)
        ):
            if isinstance(expr, Sym) and expr.name not in sizes:
                sizes[expr.name], origin[expr.name] = actual, f"{param.name}.shape[{axis}]"
    for param in fn.params:
        if param.name not in shapes:
            continue
        for axis, (expr, actual) in enumerate(
            zip(param.type.shape, shapes[param.name], strict=True)
        ):
            expected = evaluate(expr, sizes)
            if expected != actual:
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
            raise ValueError(f"{fn.name}(): size {size.name} = {value} does not fit in i32")
    return sizes


def _size_mismatch(fn, param, axis, expr, expected, actual, sizes, origin) -> str:
    dims = ", ".join(str(d) for d in param.type.shape)
    bound = ", ".join(f"{s} = {sizes[s]} (from {origin[s]})" for s in symbols(expr))
    text = f"{_where(fn, param.name)}: dimension {axis} should be {expr}"
    if not isinstance(expr, Lit):
        text += f" = {expected}" + (f" with {bound}" if bound else "")
    return f"{text}, got {actual} (expected shape [{dims}])"
