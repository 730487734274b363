"""The checks of a static performance report's arguments (`tilelang.runtime.perf`):
this module owns whether a launch's sizes and scalars fit the kernel and the size facts
it was compiled for, and whether `per` names a tensor its main loop loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tilelang.ir import nodes as ir
from tilelang.ir.types import ScalarType
from tilelang.runtime.perf_loop import MainLoop, PerfError

__all__ = ["check_launch", "check_per"]


def check_launch(fn: ir.Function, launch: Mapping[str, Any]) -> tuple[dict, dict]:
    """(sizes, scalars) of the launch, checked against the kernel's names and the size
    facts it was compiled for."""
    size_names = [v.name for v in fn.sizes]
    scalar_names = [p.name for p in fn.params if isinstance(p.type, ScalarType)]
    unknown = sorted(set(launch) - set(size_names) - set(scalar_names))
    if unknown:
        raise PerfError(
            f"{fn.name}: {', '.join(unknown)} is not a size or scalar parameter "
            f"(sizes: {', '.join(size_names) or 'none'}; scalars: "
            f"{', '.join(scalar_names) or 'none'})"
        )
    missing = [n for n in size_names if n not in launch]
    if missing:
        raise PerfError(f"{fn.name}: a report needs every size; missing {', '.join(missing)}")
    sizes = {}
    for name in size_names:
        value = launch[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PerfError(f"{fn.name}: size {name} must be an int >= 0, got {value!r}")
        sizes[name] = value
    for name, divisor in fn.assume:
        if name in sizes and sizes[name] % divisor:  # (a tensor's value fact: not a size)
            raise PerfError(
                f"{fn.name}: {name}={sizes[name]} is not a multiple of {divisor}, which this "
                f"kernel was compiled to assume; compile with assume={{{name!r}: ...}} "
                "matching the launch"
            )
    return sizes, {n: launch[n] for n in scalar_names if n in launch}


def check_per(fn: ir.Function, per: str | None, main: MainLoop) -> None:
    if per is None:
        return
    tensors = [p.name for p in fn.params if not isinstance(p.type, ScalarType)]
    if per not in tensors:
        raise PerfError(
            f"per: {per!r} is not a tensor of {fn.name} (its tensors: {', '.join(tensors)})"
        )
    loaded = sorted({load.tensor for load in main.loads})
    if per not in loaded:
        where = "its main loop" if main.loop is not None else "it"
        raise PerfError(
            f"per: {fn.name} does not load tensor {per!r} in {where} ({main.where}); "
            f"it loads {', '.join(loaded) or 'no tensor'} there"
        )
