"""Library functions called with other libraries' host tensors.

`tilelang.kernels` and `tilelang.quant.matmul` run on the CPU backend for numpy arrays
and on the GPU for device tensors. A CPU tensor of another library — torch's, or any
host tensor that speaks DLPack — reaches them through `accepts_host_tensors`: each
such argument becomes a numpy view of its memory (zero-copy, strides kept; bf16 and
the f8 types as ml_dtypes arrays), so an in-place update (a state, `out=`) lands in
the caller's tensor. What the function returns comes back as the caller gave it: an
argument as the caller's object, a new array as a torch tensor over the same memory
when a torch tensor was among the arguments (else as the numpy array).

Under torch.compile a function taking host tensors is traced as its torch operator (the
function of the same name in `tilelang.torch.kernels`, which registers itself here when
imported: `register_torch_form`), which the graph keeps whole; without one the call is
a TypeError that names what to call or import instead.

The kernels are forward-only: no gradient flows through a call, whatever the device.
With torch's grad mode on and a torch argument that requires grad, the first such call
of each function (and of each `tilelang.torch.op` operator, `warn_no_gradient`) warns
with `NoGradientWarning` at the caller's line, the first frame outside tilelang and
torch. The check is two attribute reads, and none once the function has warned.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.runtime import dlpack
from tilelang.runtime.host_tensor import values_dtype

#: Argument types passed through untouched, checked first (the common case).
_PLAIN = (bool, int, float, str, type(None), np.ndarray)


class NoGradientWarning(UserWarning):
    """A tilelang kernel was called on a torch tensor that requires grad, with grad mode
    on: no gradient flows through the call (the kernels are forward-only)."""


#: The functions and operators that have warned (`warn_no_gradient`): once each.
WARNED: set[str] = set()

#: Frames from these folders are not the caller a warning points at.
_INTERNAL = (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)


def warn_no_gradient(name: str, values: Iterable[Any]) -> None:
    """Warns once for `name` when grad mode is on and one of the torch tensors among
    `values` requires grad (`tilelang.torch.op`'s operators). Free after the warning."""
    if name in WARNED:
        return
    for value in values:
        if getattr(value, "requires_grad", False) is True:
            _warn(name)
            return


def _warn(name: str) -> None:
    import torch  # an argument that requires grad is a torch tensor

    if not torch.is_grad_enabled():
        return
    WARNED.add(name)
    warnings.warn(
        f"{name}: no gradient flows through it (tilelang kernels are forward-only), but an "
        "input requires grad; detach it or call under torch.no_grad() to say so",
        NoGradientWarning,
        stacklevel=_caller_level(torch),
    )


def _caller_level(torch: Any) -> int:
    """The stacklevel, for `_warn`'s warnings.warn, of the first frame outside tilelang
    and torch (the wrappers, call plans and torch's dispatch between it and the user)."""
    internal = (*_INTERNAL, os.path.dirname(os.path.abspath(torch.__file__)) + os.sep)
    frame, level = sys._getframe(1), 1  # level 1: `_warn` itself
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


def _host_view(value: Any) -> np.ndarray | None:
    """A numpy view of `value`'s values when it is a host tensor of another library."""
    kind = type(value)
    if kind in _PLAIN or not dlpack.speaks_dlpack(kind):
        return None
    if dlpack.is_torch_kind(kind):
        if value.is_cuda:
            return None
        value = value.detach()  # torch exports no tensor that requires grad
    try:
        found = dlpack.imported(value)
    except TypeError:
        return None  # the function names what is wrong with it
    if not isinstance(found, dlpack.HostView):
        return None
    return found.codes.view(values_dtype(found.dtype))


def _returned(result: Any, given: dict[int, Any], to_torch: bool) -> Any:
    if isinstance(result, tuple):
        return tuple(_returned(part, given, to_torch) for part in result)
    original = given.get(id(result))
    if original is not None:
        return original[1]
    if to_torch and isinstance(result, np.ndarray):
        return _as_torch(result)
    return result


def _as_torch(array: np.ndarray) -> Any:
    """`array` as a torch CPU tensor over its memory (bf16 and f8 through an integer view
    of their width)."""
    import torch  # a torch tensor was among the arguments

    if array.dtype.kind != "V":
        return torch.from_numpy(array)
    width = {1: np.uint8, 2: np.int16, 4: np.int32}[array.dtype.itemsize]
    wanted = dlpack.torch_dtype_of(dtypes.dtype(array.dtype))
    return torch.from_numpy(array.view(width)).view(wanted)


def accepts_host_tensors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` taking other libraries' host tensors as numpy views (the module docstring)."""
    name = f"{fn.__module__}.{fn.__qualname__}()"

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        given: dict[int, Any] = {}  # id(view) -> (view, the caller's object)
        to_torch = grad = False  # a torch tensor came in; one requires grad

        def viewed(value: Any) -> Any:
            nonlocal to_torch, grad
            kind = type(value)
            if kind in _PLAIN:
                return value
            is_torch = dlpack.is_torch_kind(kind)
            if is_torch:
                grad = grad or value.requires_grad  # device tensors too
            elif not dlpack.speaks_dlpack(kind):
                return value  # a device array (`__cuda_array_interface__`), or no tensor
            view = _host_view(value)
            if view is None:
                return value
            given[id(view)] = (view, value)
            to_torch = to_torch or is_torch
            return view

        args = tuple(viewed(a) for a in args)
        kwargs = {key: viewed(v) for key, v in kwargs.items()}
        if grad and name not in WARNED:
            _warn(name)
        result = fn(*args, **kwargs)
        return _returned(result, given, to_torch) if given else result

    # torch.compile's tracer (dynamo) traces a function's `_torchdynamo_inline` in its
    # place (what torch.jit.script's wrappers use; functools.wraps carries it to an
    # outer decorator such as `planned`). Nothing in eager calls reads it.
    call._torchdynamo_inline = _traced_form(fn, name)
    return call


#: Keywords of library functions that choose how to run, not what: no operator takes them.
_HOST_ONLY = ("interpret", "tune", "method")

#: The torch operator form of a library function, by its qualified name: what
#: torch.compile traces in its place (filled by `tilelang.torch.kernels` when imported).
TORCH_FORMS: dict[str, Callable[..., Any]] = {}


def register_torch_form(fn: Callable[..., Any], form: Callable[..., Any]) -> None:
    """Makes `form` (a torch operator's Python function) what torch.compile traces for
    the library function `fn` (one decorated with `accepts_host_tensors`)."""
    TORCH_FORMS[f"{fn.__module__}.{fn.__qualname__}"] = form


def _traced_form(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """What torch.compile traces for `fn`: its torch operator form (`TORCH_FORMS`),
    which the graph keeps whole; without one, or with a keyword no operator takes, a
    TypeError that says what to call. (Traced as is, `fn` would read the tensors
    through DLPack, which dynamo cannot follow.)"""
    key = f"{fn.__module__}.{fn.__qualname__}"
    short = fn.__name__
    if fn.__module__.startswith("tilelang.kernels."):
        instead = (
            "import tilelang.torch.kernels, and the call is traced as its operator "
            f"tilelang.torch.kernels.{short}"
        )
    else:
        instead = "call its torch operator (tilelang.torch.QuantLinear for a quantized matmul)"

    def traced(*args: Any, **kwargs: Any) -> Any:
        form = TORCH_FORMS.get(key)
        host_only = [k for k in _HOST_ONLY if k in kwargs]
        if form is not None and not host_only:
            return form(*args, **kwargs)
        if form is not None:
            raise TypeError(
                f"{name}: under torch.compile the call runs as its torch operator, "
                f"tilelang.torch.kernels.{short}, which takes no {host_only[0]}="
            )
        raise TypeError(f"{name} cannot be traced by torch.compile: {instead}")

    return traced
