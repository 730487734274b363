"""The facts a build is specialized on: the size facts a launch derives from its sizes
(`size_facts`: every launch path takes them from here) and what `compile(assume=...)`
states (`assumed_facts`). Value facts about tensors' elements are
`tilelang.runtime.value_facts`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tilelang.dtypes import DType
from tilelang.ir import nodes as ir
from tilelang.ir.types import TensorType
from tilelang.runtime.value_facts import FINITE, check_finite_type

Facts = tuple[tuple[str, int | str], ...]  # (size, divisor), (tensor, bound or "finite")

#: The largest divisor a size is specialized on: 16 bytes of 1-bit elements, so that
#: masks stay constant over every 16-byte run of any dtype.
MAX_SIZE_DIVISOR = 128

#: The largest divisor `assume=` may state (what `Function.assume` accepts).
MAX_ASSUMED_DIVISOR = 1 << 16

ASSUME_FORMS = (
    "'all', None or a dict of size name -> power-of-two divisor and tensor name -> "
    "power-of-two bound or 'finite'"
)


def size_facts(sizes: Mapping[str, int]) -> dict[str, int]:
    """Per size, the largest power of two up to `MAX_SIZE_DIVISOR` that divides it: what
    a launch at these sizes specializes the kernel on (every launch path derives its
    facts here: calls, `tilelang.torch` ops, the library, the CLI)."""
    facts = {}
    for name, size in sizes.items():
        divisor = MAX_SIZE_DIVISOR
        while size % divisor:
            divisor //= 2
        facts[name] = divisor
    return facts


def launch_facts(sizes: Mapping[str, int], stated: Facts) -> Facts:
    """A call's facts as its compile-cache key takes them: the size facts and the value
    facts it states, sorted."""
    return tuple(sorted((*size_facts(sizes).items(), *stated)))


def assumed_facts(function: ir.Function, assume: object) -> Facts:
    """The facts `assume=` states, checked: "all" (every size a multiple of
    `MAX_SIZE_DIVISOR`), None (nothing), or a mapping of the kernel's size names to
    powers of two and tensor names to value facts. A mapping that names no size keeps
    "all" for the sizes: value facts add to the default, they do not take the size
    facts away. Anything else is a `TypeError`/`ValueError` naming `assume`."""
    sizes = [size.name for size in function.sizes]
    tensors = [p.name for p in function.params if isinstance(p.type, TensorType)]
    if isinstance(assume, str):
        if assume != "all":
            raise ValueError(f"assume: expected {ASSUME_FORMS}, got the string {assume!r}")
        return tuple(sorted((name, MAX_SIZE_DIVISOR) for name in sizes))
    if assume is None:
        return ()
    if not isinstance(assume, Mapping):
        raise TypeError(f"assume: expected {ASSUME_FORMS}, got {type(assume).__name__} {assume!r}")
    facts = {}
    for name, divisor in assume.items():
        if name not in sizes and name not in tensors:
            raise ValueError(
                f"assume: {name!r} is not a size of {function.name}() "
                f"(its sizes: {', '.join(sizes) or 'none'}) nor a tensor (its tensors: "
                f"{', '.join(tensors) or 'none'})"
            )
        if name in tensors and isinstance(divisor, str) and divisor == FINITE:
            check_finite_type(name, _tensor_type(function, name))
            facts[name] = FINITE
            continue
        facts[name] = _power_of_two(name, divisor)
    if not any(name in sizes for name in facts):
        facts.update(dict.fromkeys(sizes, MAX_SIZE_DIVISOR))
    return tuple(sorted(facts.items()))


def _tensor_type(function: ir.Function, name: str) -> DType:
    return next(p.type.dtype for p in function.params if p.name == name)


def _power_of_two(name: str, divisor: object) -> int:
    if isinstance(divisor, (bool, np.bool_)) or not isinstance(divisor, (int, np.integer)):
        raise TypeError(
            f"assume: {name} should map to a power-of-two int, "
            f"got {type(divisor).__name__} {divisor!r}"
        )
    value = int(divisor)
    if not 1 <= value <= MAX_ASSUMED_DIVISOR or value & (value - 1):
        raise ValueError(
            f"assume: {name} should map to a power of two from 1 to {MAX_ASSUMED_DIVISOR}, "
            f"got {value}"
        )
    return value
