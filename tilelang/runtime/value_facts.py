"""Value facts at a call: `kernel(..., assume={"s": 64})` states that every element of
the tensor s is +0 or positive (sign bit clear) and below 64, which the kernel is then
specialized on (`Function.assume`, `tilelang.analysis.value_bounds`: the lowering folds
a group scale into the dequantization recipe only under such a fact). Before anything
runs, each stated fact is checked on the argument's values: a value that breaks it is
a `ValueError` naming the tensor, the fact, the value and its index.

Host arrays are read in place; a device array is copied to the host for the check
(once per call: a group-scale tensor is about 1/64 of a u4 weight at G = 128), unless
its owner recorded the fact when it filled the array (`record`: `tilelang.quant`
does, for the scales it copies to the device once per weight). A call that stores
into an array forgets what was recorded about it. Sizes are not stated here: a call
derives its size facts from the arrays' sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tilelang import dtypes

Facts = tuple[tuple[str, int], ...]


def value_facts(kernel_name: str, tensors: tuple[str, ...], assume: object) -> Facts:
    """The value facts a call states, checked for form: a mapping of tensor names to
    powers of two from 1 to 65536."""
    if assume is None:
        return ()
    if not isinstance(assume, Mapping):
        raise TypeError(
            f"assume: expected a dict of tensor name -> power-of-two bound, got "
            f"{type(assume).__name__} {assume!r}"
        )
    facts = []
    for name, bound in assume.items():
        if name not in tensors:
            raise ValueError(
                f"assume: {name!r} is not a tensor of {kernel_name}() (its tensors: "
                f"{', '.join(tensors) or 'none'}; a call derives size facts from the arrays)"
            )
        if isinstance(bound, bool | np.bool_) or not isinstance(bound, int | np.integer):
            raise TypeError(
                f"assume: {name} should map to a power-of-two int bound, got "
                f"{type(bound).__name__} {bound!r}"
            )
        value = int(bound)
        if not 1 <= value <= 1 << 16 or value & (value - 1):
            raise ValueError(
                f"assume: {name} should map to a power of two from 1 to 65536, got {value}"
            )
        facts.append((name, value))
    return tuple(sorted(facts))


#: id(array) -> (a weak reference to it, the bound its owner recorded).
_RECORDED: dict[int, tuple[weakref.ref, int]] = {}


def bound_of(values: np.ndarray) -> int | None:
    """The least power of two (1 to 65536) above every value, when every value is +0 or
    positive (sign bit clear) and finite; else None."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return 1
    if np.signbit(values).any() or not np.isfinite(values).all():
        return None
    bound = 1
    while bound <= 1 << 16 and not (values < bound).all():
        bound *= 2
    return bound if bound <= 1 << 16 else None


def record(array: Any, bound: int) -> None:
    """Note that every value of `array` is +0 or positive and below `bound`: its owner
    filled it from values it checked (`bound_of`), so calls need not read it back."""
    key = id(array)
    _RECORDED[key] = (weakref.ref(array, lambda _: _RECORDED.pop(key, None)), bound)


def forget(arrays: Iterable[Any]) -> None:
    """Drop what was recorded about arrays a call may have written."""
    for array in arrays:
        _RECORDED.pop(id(array), None)


def _recorded_within(array: Any, bound: int) -> bool:
    found = _RECORDED.get(id(array))
    return found is not None and found[0]() is array and found[1] <= bound


def check_values(facts: Facts, arguments: Mapping[str, Any]) -> None:
    """Raise a `ValueError` unless every element of each tensor is +0 or positive and
    below its bound (NaN breaks every fact)."""
    for name, bound in facts:
        if _recorded_within(arguments[name], bound):
            continue
        values = host_values(arguments[name], name)
        bad = np.signbit(values) | ~(values < bound)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: the kernel was asked to assume 0 <= {name} < {bound} (sign bit "
                f"clear), but {name}{list(index)} = {float(values[index])!r}; pass "
                f"assume without {name!r} for any values"
            )


def host_values(value: Any, name: str) -> np.ndarray:
    """The values of an argument as a float64 numpy array (device arrays copied)."""
    if isinstance(value, dtypes.PackedArray):
        return np.asarray(value.unpack(), np.float64)
    if hasattr(value, "detach"):  # torch, on any device (bf16 has no numpy dtype)
        value = value.detach().float().cpu().numpy()
    elif hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        value = value.get()  # cupy
    elif hasattr(value, "__cuda_array_interface__") and hasattr(value, "numpy"):
        value = value.numpy()  # tilelang.DeviceBuffer
    try:
        return np.asarray(value).astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: a value fact needs an array whose values can be read, got "
            f"{type(value).__name__}"
        ) from None
