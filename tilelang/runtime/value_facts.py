"""Value facts at a call: `kernel(..., assume={"s": 64})` states that every element of
the tensor s is +0 or positive (sign bit clear) and below 64, and
`assume={"w": "finite"}` (`FINITE`) that every element of the float tensor w is a
finite value (no inf or NaN code). The kernel is then specialized on them
(`Function.assume`, `tilelang.analysis.value_bounds`: the lowering folds a group scale
into the dequantization recipe only under a bound, and leaves out the recipes'
special-value steps for codes proven finite). Before anything runs, each stated fact
is checked on the argument's values: a value that breaks it is a `ValueError` naming
the tensor, the fact, the value (and its code) and its index.

Host arrays are read in place; a device array is copied to the host for the check
(once per call: a group-scale tensor is about 1/64 of a u4 weight at G = 128), unless
its owner recorded the fact when it filled the array (`record`: `tilelang.quant`
does, for the scales and the weight codes it copies to the device once per weight). A
call that stores into an array forgets what was recorded about it. A bound implies
finiteness: a recorded bound satisfies a stated "finite". Sizes are not stated here: a
call derives its size facts from the arrays' sizes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tilelang import dtypes

#: The fact "every element is a finite value": `assume={"w": FINITE}`.
FINITE = "finite"

#: One tensor's fact: a power-of-two bound b (+0 <= x < b), or `FINITE`.
Fact = int | str
Facts = tuple[tuple[str, Fact], ...]


def value_facts(
    kernel_name: str,
    tensors: tuple[str, ...],
    assume: object,
    types: Mapping[str, Any] | None = None,
) -> Facts:
    """The value facts a call states, checked for form: a mapping of tensor names to
    powers of two from 1 to 65536, or to `FINITE` for tensors of float types (`types`:
    the tensors' dtypes, when known, by name)."""
    if assume is None:
        return ()
    if not isinstance(assume, Mapping):
        raise TypeError(
            f"assume: expected a dict of tensor name -> power-of-two bound or "
            f"{FINITE!r}, got {type(assume).__name__} {assume!r}"
        )
    facts = []
    for name, bound in assume.items():
        if name not in tensors:
            raise ValueError(
                f"assume: {name!r} is not a tensor of {kernel_name}() (its tensors: "
                f"{', '.join(tensors) or 'none'}; a call derives size facts from the arrays)"
            )
        if isinstance(bound, str) and bound == FINITE:
            if types is not None:
                check_finite_type(name, types[name])
            facts.append((name, FINITE))
            continue
        if isinstance(bound, bool | np.bool_) or not isinstance(bound, int | np.integer):
            raise TypeError(
                f"assume: {name} should map to a power-of-two int bound, got "
                f"{type(bound).__name__} {bound!r} (or to {FINITE!r}: no inf or NaN)"
            )
        value = int(bound)
        if not 1 <= value <= 1 << 16 or value & (value - 1):
            raise ValueError(
                f"assume: {name} should map to a power of two from 1 to 65536, got {value}"
            )
        facts.append((name, value))
    return tuple(sorted(facts))


def check_finite_type(name: str, dtype: Any) -> None:
    """A `ValueError` unless `dtype` is a float type (or e8m0), whose codes a "finite"
    fact can rule out: integers are finite by themselves, and a kernel that views
    integer codes as a float type should take the tensor as that type instead."""
    if not isinstance(dtype, dtypes.FloatType | dtypes.ExponentType):
        raise ValueError(
            f"assume: {name} holds {dtype} values, which are all finite; {FINITE!r} applies "
            f"to tensors of float types (pass codes a kernel reads as a float type as that "
            f"type)"
        )


def implies(known: Fact, stated: Fact) -> bool:
    """Whether the fact `known` about a tensor implies the fact `stated` (a bound
    implies finiteness and every wider bound; finiteness implies no bound)."""
    if stated == FINITE:
        return True
    return known != FINITE and int(known) <= int(stated)


#: id(array) -> (a weak reference to it, the fact its owner recorded).
_RECORDED: dict[int, tuple[weakref.ref, Fact]] = {}


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


def record(array: Any, fact: Fact) -> None:
    """Note that every value of `array` is +0 or positive and below the bound `fact`
    (or, for `FINITE`, a finite value): its owner filled it from values it checked
    (`bound_of`, `all_finite`), so calls need not read it back. A bound recorded
    before is kept when it implies `fact`."""
    key = id(array)
    known = _recorded_fact(array)
    if known is not None and implies(known, fact):
        return
    _RECORDED[key] = (weakref.ref(array, lambda _: _RECORDED.pop(key, None)), fact)


def vouch(array: Any, fact: Fact) -> None:
    """Public (`tilelang.vouch`): the caller guarantees `fact` of `array` — every value
    +0 or positive and below the power of two `fact`, or `"finite"` — so calls that
    state it (`assume={name: fact}`) skip their check, which reads a device array back
    to the host on every call. Nothing verifies it: a false fact gives wrong results.
    A kernel call that writes the array forgets it."""
    try:
        (_, checked), *_ = value_facts("vouch", ("fact",), {"fact": fact})
    except (TypeError, ValueError) as error:  # the message of assume=, for this call
        raise type(error)(str(error).replace("assume: fact", "tl.vouch: the fact", 1)) from None
    record(array, checked)


def forget(arrays: Iterable[Any]) -> None:
    """Drop what was recorded about arrays a call may have written."""
    for array in arrays:
        _RECORDED.pop(id(array), None)


def _recorded_fact(array: Any) -> Fact | None:
    found = _RECORDED.get(id(array))
    return found[1] if found is not None and found[0]() is array else None


def recorded_within(array: Any, fact: Fact) -> bool:
    """Whether what was recorded about `array` implies `fact`."""
    known = _recorded_fact(array)
    return known is not None and implies(known, fact)


def check_values(facts: Facts, arguments: Mapping[str, Any]) -> None:
    """Raise a `ValueError` unless every element of each tensor is +0 or positive and
    below its bound, or, for `FINITE`, no element is inf or NaN (NaN breaks every
    fact)."""
    for name, bound in facts:
        if recorded_within(arguments[name], bound):
            continue
        if bound == FINITE:
            _check_finite(name, arguments[name])
            continue
        bound = int(bound)
        values = host_values(arguments[name], name)
        bad = np.signbit(values) | ~(values < bound)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: the kernel was asked to assume 0 <= {name} < {bound} (sign bit "
                f"clear), but {name}{list(index)} = {float(values[index])!r}; pass "
                f"assume without {name!r} for any values"
            )


def _check_finite(name: str, value: Any) -> None:
    """The `FINITE` check: the first element that is inf or NaN is a `ValueError` that
    names it, its index and, for packed codes, its code."""
    value = _on_host(value)  # once: a device array is copied here
    special = _special_elements(value, name)
    if not special.any():
        return
    index = tuple(int(i) for i in np.argwhere(special)[0])
    if isinstance(value, dtypes.PackedArray):
        code, t = int(value.codes()[index]), value.dtype
        shown = f"code 0x{code:0{(t.bits + 3) // 4}x} of {t} ({float(t.decode(code))!r})"
    else:
        shown = repr(float(host_values(value, name)[index]))
    raise ValueError(
        f"{name}: the kernel was asked to assume every element of {name} is finite (no "
        f"inf or NaN), but {name}{list(index)} = {shown}; pass assume without {name!r} "
        "for any values"
    )


def _special_elements(value: Any, name: str) -> np.ndarray:
    """Where `value` holds inf or NaN: packed codes through a table of their type's
    codes (no decoding of the whole tensor), other arrays through their values."""
    value = _on_host(value)
    if isinstance(value, dtypes.PackedArray) and value.dtype.bits <= 16:
        special = ~all_finite_codes(value.dtype)
        if not special.any():
            return np.zeros(value.shape, bool)
        return special[value.codes().astype(np.int64)]
    return ~np.isfinite(host_values(value, name))


def all_finite_codes(dtype: Any) -> np.ndarray:
    """Per code of `dtype` (at most 16 bits), whether it is a finite value."""
    return np.isfinite(np.asarray(dtype.decode(np.arange(1 << dtype.bits)), np.float64))


def all_finite(value: Any, name: str = "array") -> bool:
    """Whether no element of `value` (an array a call could take) is inf or NaN: what
    an owner checks before it records `FINITE` (`record`)."""
    return not _special_elements(value, name).any()


def host_values(value: Any, name: str) -> np.ndarray:
    """The values of an argument as a float64 numpy array (device arrays copied)."""
    value = _on_host(value)
    if isinstance(value, dtypes.PackedArray):
        return np.asarray(value.unpack(), np.float64)
    try:
        return np.asarray(value).astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}: a value fact needs an array whose values can be read, got "
            f"{type(value).__name__}"
        ) from None


def _on_host(value: Any) -> Any:
    """A host array of an argument's values: device arrays copied (a
    `tilelang.DeviceBuffer` of packed codes comes back as a `PackedArray`), torch
    tensors as float32 numpy arrays (bf16 and f8 have no numpy dtype)."""
    if hasattr(value, "detach"):  # torch, on any device
        return value.detach().float().cpu().numpy()
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        return value.get()  # cupy
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "numpy"):
        return value.numpy()  # tilelang.DeviceBuffer
    return value
