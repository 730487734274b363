"""What every module of `tilelang.kernels` shares: the kernel language under the name
`tl` (the package root cannot be imported from inside the package), the fast
activations of the Mamba kernels, and the host side of a call: reading an argument's
dtype and shape (numpy arrays for the CPU backend, device tensors for the GPU), checking
them (and flags) with errors that name the parameter, what was expected and what was
given, allocating outputs where the inputs live, and running a DSL kernel compiled or
on the reference interpreter."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType, PackedArray
from tilelang.kernel import Kernel, func
from tilelang.lang import api
from tilelang.runtime import call_plans, dlpack, gpu
from tilelang.runtime.host_tensor import numpy_dtype, values_dtype

tl = api.tl  # the kernel language, as every kernel of the package spells it

#: The input types the kernels read (and compute in f32).
FLOATS = (dtypes.f32, dtypes.f16, dtypes.bf16)
#: What a host array may hold for a parameter a kernel reads in f32 (A, D, biases,
#: weights, initial states): converted once on the host (`f32_host`). A device tensor
#: of such a parameter must be f32 (`f32_params`).
HOST_FLOATS = (dtypes.f32, dtypes.f64, dtypes.f16, dtypes.bf16)

#: log2(e) and ln(2): the attention kernels keep their softmax scores in base 2 (exp2
#: costs fewer instructions than exp) and hand their row maxima on in natural units.
LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@func
def step_softplus(x):
    """softplus(x) = max(x, 0) + log1p(e^-|x|), e^-|x| by `fast_exp2`: for step sizes.
    The exponent's rounding (-|x|·log2 e) puts a relative error of about |x|·2^-24 on
    e^-|x|, at most 2^-25 on the result; `tl.softplus` (expf's range reduction) spends
    six more instructions a value to avoid it."""
    return tl.maximum(x, 0.0) + tl.log1p(tl.fast_exp2(-tl.abs(x) * LOG2E))


@func
def silu(z):
    """z·sigmoid(z) = z / (1 + e^-z), e^-z by `fast_exp2`: a relative error of about
    |z|·2^-24 from the exponent's rounding, and one division where `tl.sigmoid` then a
    product take expf, a division and a product."""
    return z / (1.0 + tl.fast_exp2(-z * LOG2E))


def f32_params(device: bool) -> tuple[DType, ...]:
    """The dtypes `check` accepts for a parameter read in f32 (`HOST_FLOATS`)."""
    return (dtypes.f32,) if device else HOST_FLOATS


def flag(value: Any, name: str) -> bool:
    """A flag argument (dt_softplus, return_final_states, ...) as a bool: True or False
    (numpy's too, and the ints 0 and 1); anything else is a TypeError naming the
    parameter, an array or a tensor above all (an argument passed one place off)."""
    if isinstance(value, (bool, np.bool_)) or (type(value) is int and value in (0, 1)):
        return bool(value)
    shape = getattr(value, "shape", None)
    if shape is not None:
        given = f"{type(value).__name__} of shape {list(shape)} (a tensor where a flag goes)"
    else:
        given = repr(value)
    raise TypeError(f"{name} must be True or False, got {given}")


def on_gpu(x: Any) -> bool:
    return not isinstance(x, np.ndarray) and gpu.is_device_array(x)


def shape_of(x: Any, name: str) -> tuple[int, ...]:
    return _shape_and_type(x, name)[0]


def dtype_of(x: Any, name: str) -> DType | None:
    if isinstance(x, np.ndarray):
        return numpy_dtype(x.dtype)
    view = dlpack.imported(x)  # bf16 and f8 device tensors carry their dtype only there
    if isinstance(view, dlpack.DeviceView):
        return view.dtype
    return _typestr_dtype(gpu.device_array(view).typestr)


def _shape_and_type(x: Any, name: str) -> tuple[tuple[int, ...], Any]:
    """x's shape and what names its dtype (a numpy dtype, a `DType`, or an interface
    type string: `_dtype` reads each), from one read of the array or its interface (a
    library call checks every argument: this is most of what a call costs on the host
    before its launch)."""
    if isinstance(x, np.ndarray):
        return tuple(map(int, x.shape)), x.dtype
    if isinstance(x, dlpack.DeviceView):
        return tuple(map(int, x.shape)), x.dtype
    if not dlpack.speaks_dlpack(type(x)):  # a device array by its interface, or no tensor
        try:
            interface = x.__cuda_array_interface__
        except AttributeError:
            raise TypeError(_not_a_tensor(x, name)) from None
        return tuple(map(int, interface["shape"])), interface["typestr"]
    if not gpu.is_device_array(x):  # a host tensor of another library, not viewed
        raise TypeError(_not_a_tensor(x, name))
    view = dlpack.imported(x)  # bf16 and f8 device tensors carry their dtype only there
    if isinstance(view, dlpack.DeviceView):
        return tuple(map(int, view.shape)), view.dtype
    interface = view.__cuda_array_interface__
    return tuple(map(int, interface["shape"])), interface["typestr"]


def _not_a_tensor(x: Any, name: str) -> str:
    return (
        f"{name} must be a numpy array (the CPU backend) or a device tensor, got {type(x).__name__}"
    )


def _dtype(named: Any) -> DType | None:
    """The tilelang dtype `_shape_and_type`'s second value names, or None."""
    if isinstance(named, DType):
        return named
    if isinstance(named, np.dtype):
        return numpy_dtype(named)
    return _typestr_dtype(named)


#: The tilelang dtype of each interface type string met (None: none a kernel takes).
_TYPESTRS: dict[str, DType | None] = {}


def _typestr_dtype(typestr: Any) -> DType | None:
    try:
        return _TYPESTRS[typestr]
    except KeyError:
        pass
    except TypeError:  # not a string: numpy names no dtype by it
        return None
    try:
        found = numpy_dtype(np.dtype(typestr))
    except TypeError:
        found = None
    _TYPESTRS[typestr] = found
    return found


class Dim(int):
    """A size `check` read off an argument's shape, which remembers where: `where` is
    (the argument's name, the axis, what the caller calls the dimension or None), so
    that a later check expecting it can say where the expected size came from ("N = 3
    from A.shape[1]"). It is an int everywhere else; arithmetic on it gives a plain int
    (a derived size, such as W - 1, is no one dimension), and `run` hands kernels plain
    ints. Made by `_dim` (every library call makes a few: kept cheap)."""

    where: tuple[str, int, str | None]

    def describe(self) -> str:
        argument, axis, name = self.where
        value = f"{name} = {int(self)}" if name else str(int(self))
        return f"{value} from {argument}.shape[{axis}]"


def _dim(value: int, where: tuple[str, int, str | None]) -> Dim:
    dim = int.__new__(Dim, value)
    dim.where = where
    return dim


def check(
    x: Any,
    name: str,
    shape: tuple[int | None, ...],
    types: tuple[DType, ...] = FLOATS,
    names: tuple[str | None, ...] | None = None,
) -> tuple[tuple[int, ...], DType]:
    """x's shape (`Dim`s: sizes that know which argument dimension they came from) and
    dtype, after checking them against `shape` (None: any size) and `types`; a
    ValueError or TypeError names the parameter, the expectation, x's, and where each
    mismatched expected size came from. `names`: what x's dimensions are called ("N"),
    for the messages of later checks against them."""
    got, named = _shape_and_type(x, name)
    return _checked(x, name, shape, types, names, got, named)


def check_ranks(
    x: Any,
    name: str,
    forms: tuple[tuple[tuple[int | None, ...], tuple[str | None, ...] | None], ...],
    types: tuple[DType, ...] = FLOATS,
    fallback: int | None = None,
) -> tuple[int, tuple[int, ...], DType]:
    """`check` against the one of `forms` ((shape, names) pairs) of x's rank, from one
    read of x: (that form's index, x's shape, its dtype). A rank no form has is the
    ValueError of forms[fallback] or, with no fallback, one naming every form."""
    got, named = _shape_and_type(x, name)
    for i, (shape, names) in enumerate(forms):
        if len(shape) == len(got):
            return (i, *_checked(x, name, shape, types, names, got, named))
    if fallback is not None:
        shape, names = forms[fallback]
        _checked(x, name, shape, types, names, got, named)  # raises: another rank
    wanted = " or ".join(_layout(shape, names) for shape, names in forms)
    raise ValueError(f"{name} must have shape {wanted}, got shape {list(got)}")


def _layout(shape: tuple[int | None, ...], names: tuple[str | None, ...] | None) -> str:
    """ "[batch, 8, N]": a free dimension by its name where the caller gave one."""
    return (
        "["
        + ", ".join(
            str(e) if e is not None else (names and names[i]) or "?" for i, e in enumerate(shape)
        )
        + "]"
    )


def _checked(
    x: Any,
    name: str,
    shape: tuple[int | None, ...],
    types: tuple[DType, ...],
    names: tuple[str | None, ...] | None,
    got: tuple[int, ...],
    named: Any,
) -> tuple[tuple[int, ...], DType]:
    """`check`'s work on x's shape `got` and the dtype `named` names, read already."""
    if len(got) != len(shape) or any(
        [e is not None and e != g for e, g in zip(shape, got, strict=True)]
    ):
        raise ValueError(
            f"{name} must have shape {_layout(shape, names)}, got shape {list(got)}"
            f"{_origins(shape, got)}"
        )
    t = _dtype(named)
    if t not in types:
        allowed = ", ".join(dict.fromkeys(str(k) for k in types))
        # numpy's name for a host array's dtype, else ours or the interface's type string
        given = named if t is None or isinstance(x, np.ndarray) else t
        raise TypeError(f"{name} must hold one of {allowed}, got {given}")
    own = _own_dims(got, name, names)
    if shape.count(None) == len(shape):
        return own, t
    return tuple([e if type(e) is Dim else d for e, d in zip(shape, own, strict=True)]), t


#: The `Dim`s of an argument's shape, by (shape, argument name, dimension names): made
#: once per shape an argument is called at (a Dim is never changed once made).
_DIMS: dict[tuple, tuple[Dim, ...]] = {}
_MAX_DIMS = 4096


def _own_dims(got: tuple[int, ...], name: str, names: tuple[str | None, ...] | None):
    key = (got, name, names)
    try:
        return _DIMS[key]
    except KeyError:
        pass
    except TypeError:  # names given as a list: made each time
        return tuple(_dim(g, (name, i, names and names[i])) for i, g in enumerate(got))
    if len(_DIMS) >= _MAX_DIMS:
        _DIMS.clear()
    own = _DIMS[key] = tuple(_dim(g, (name, i, names and names[i])) for i, g in enumerate(got))
    return own


def _origins(shape: tuple[int | None, ...], got: tuple[int, ...]) -> str:
    """ " (N = 3 from A.shape[1])": where the expected sizes that `got` misses came from
    (all of them when the rank differs); "" when none came from an argument."""
    same_rank = len(shape) == len(got)
    missed = [
        e.describe()
        for i, e in enumerate(shape)
        if isinstance(e, Dim) and not (same_rank and e == got[i])
    ]
    return f" ({', '.join(dict.fromkeys(missed))})" if missed else ""


def same_place(values: dict[str, Any]) -> bool:
    """True when every tensor given is on the GPU, False when all are host arrays."""
    device = host = False
    for v in values.values():
        if v is None:
            continue
        if on_gpu(v):
            device = True
        else:
            host = True
    if device and host:
        given = {name: v for name, v in values.items() if v is not None}
        places = {name: on_gpu(v) for name, v in given.items()}
        host_names = sorted(n for n, p in places.items() if not p)
        device_names = sorted(n for n, p in places.items() if p)
        raise TypeError(
            f"the tensors must all be numpy arrays or all device tensors; got host "
            f"{host_names} and device {device_names}"
        )
    return device


def empty(like: Any, shape: tuple[int, ...], dtype: DType) -> Any:
    """An uninitialized output of `shape` and `dtype` where `like` lives (a numpy array,
    a torch tensor on its device, or a `tilelang.DeviceBuffer`)."""
    host_dtype = values_dtype(dtype)
    if isinstance(like, np.ndarray):
        return np.empty(shape, host_dtype)
    if gpu.is_torch_tensor(like):
        import torch  # a torch tensor was handed over, so torch is there

        make = functools.partial(
            torch.empty, shape, dtype=dlpack.torch_dtype_of(dtype), device=like.device
        )
    else:
        make = functools.partial(gpu.DeviceBuffer.empty, shape, host_dtype)
    return call_plans.allocated(make)


def f32_host(x: Any) -> Any:
    """A host array as contiguous f32 (the parameters the kernels read in f32); device
    tensors are returned as they are (checked by `check` to be f32)."""
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(x, np.float32)
    return x


#: The one-element device tensors of parameters a launch does not read, per place, rank
#: and dtype (`placeholder`).
_UNREAD: dict[tuple, Any] = {}


def placeholder(
    like: Any, rank: int = 1, dtype: DType = dtypes.f32, shape: tuple[int, ...] | None = None
) -> Any:
    """A one-element tensor of `rank` dimensions for a parameter a launch does not read,
    where `like` lives: on a device, made by the first call that needs it and kept (a
    call then allocates and fills nothing for it; no launch writes it, and one tensor may
    fill several read-only slots). With `shape`: fresh zeros of that shape (an output,
    such as the final state of no steps)."""
    host = np.zeros((1,) * rank if shape is None else shape, values_dtype(dtype))
    if isinstance(like, np.ndarray):
        return host
    if gpu.is_torch_tensor(like):
        import torch

        place: Any = str(like.device)
        make = functools.partial(
            torch.zeros, host.shape, dtype=dlpack.torch_dtype_of(dtype), device=like.device
        )
    else:
        place = "driver"  # tilelang.DeviceBuffer, for every __cuda_array_interface__ tensor
        make = functools.partial(gpu.DeviceBuffer, host)
    if shape is not None:
        return call_plans.allocated(make)
    key = (place, rank, dtype)
    if key not in _UNREAD:
        _UNREAD[key] = make()
    return call_plans.kept(_UNREAD[key])


def run(kernel: Kernel, args: list[Any], constexprs: dict[str, Any], interpret: bool) -> Any:
    """Runs `kernel` compiled (GPU or CPU backend by where the tensors are) or, with
    `interpret`, on the reference interpreter (host arrays only)."""
    args = [int(a) if type(a) is Dim else a for a in args]
    constexprs = {k: int(v) if type(v) is Dim else v for k, v in constexprs.items()}
    if interpret:
        return kernel.interpret(*args, **constexprs)
    return kernel(*args, **constexprs)


def address_and_strides(x: Any, itemsize: int) -> tuple[int, tuple[int, ...] | None]:
    """x's byte address and byte strides (None: C-contiguous): numpy, torch or any
    tensor with an array interface."""
    if isinstance(x, np.ndarray):
        return x.__array_interface__["data"][0], x.strides
    if gpu.is_torch_tensor(x):
        return x.data_ptr(), tuple(s * itemsize for s in x.stride())
    array = gpu.device_array(x)
    return array.pointer, array.strides


def span_of(x: Any, name: str, shape: tuple[int, ...], itemsize: int) -> Any:
    """The contiguous elements of `shape` in memory from x's first element on, as a
    tensor a kernel takes: a view of x's memory, never a copy (the caller makes sure
    the span stays inside x's allocation). How a kernel writes in place a view whose
    rows lie apart (a KV cache's pages, the q columns of a fused qkv): it takes the span
    and addresses the rows itself, where the GPU takes only contiguous tensors and the
    CPU backend would copy the view and write all of it back."""
    if isinstance(x, PackedArray):
        return PackedArray(x.data, x.dtype, shape)
    strides = gpu.contiguous_strides(shape, itemsize)
    if isinstance(x, np.ndarray):  # through unsigned codes: as_strided cannot name ml_dtypes
        codes = x.view(np.dtype(f"u{itemsize}"))
        return np.lib.stride_tricks.as_strided(codes, shape, strides, writeable=True).view(x.dtype)
    if gpu.is_torch_tensor(x):
        return x.as_strided(shape, tuple(s // itemsize for s in strides))
    if isinstance(x, dlpack.DeviceView):
        return dataclasses.replace(x, shape=shape, strides=strides)
    return reshaped(x, shape, name)  # other device tensors: contiguous ones only


def in_place_view(x: Any, name: str, shape: tuple[int, ...], what: tuple[str, str]) -> Any:
    """x under `shape` without a copy, for a kernel that writes x (a copy would be
    written instead): numpy and torch views, other device tensors when contiguous.
    `what`: (what the shape is, which dimensions must be evenly strided), for the
    ValueError where no view can say it."""
    if tuple(x.shape) == shape:
        return x
    if isinstance(x, np.ndarray):
        view = x.view()
        try:
            view.shape = shape  # raises where x's strides cannot express the shape
        except AttributeError:
            raise ValueError(_not_a_view(name, tuple(x.shape), shape, what)) from None
        return view
    if gpu.is_torch_tensor(x):  # view() never copies
        try:
            return x.view(shape)
        except RuntimeError:
            raise ValueError(_not_a_view(name, tuple(x.shape), shape, what)) from None
    return reshaped(x, shape, name)


def _not_a_view(name: str, given: tuple, shape: tuple, what: tuple[str, str]) -> str:
    return (
        f"{name} of shape {list(given)} is written in place and must be viewable as "
        f"{what[0]} {list(shape)} without a copy: {what[1]} must be evenly strided"
    )


def coarse_length(n: Any) -> Any:
    """A length rounded up to one of 8 steps an octave (at most 1/8 more; 4097..4608 ->
    4608): what a library call sizes a launch by where the caller's length grows step
    by step (a decode loop's max_seq_len, chunked prefill's max_seqlen_q), so that its
    calls share one call plan for hundreds of steps (`planned(coarse=...)` keys the
    argument by this value, and the call uses this value). Anything but a positive int
    is returned as is (the argument checks say what is wrong with it)."""
    if type(n) is not int or n < 1:
        return n
    step = 1 << max(0, n.bit_length() - 4)
    return -(-n // step) * step


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


reshaped = gpu.reshaped  # x under another shape, device tensors without `reshape` too
