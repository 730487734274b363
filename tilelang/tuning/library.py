"""How library calls (`tilelang.quant`, `tilelang.kernels`) use the autotuner.

A library function has hand-written default tiles; they stay its FIRST config, so that
`TILELANG_AUTOTUNE=off`, ``tune=False`` and every host call keep today's tiles and
speed. A call on device tensors (``tune=None``, the default) tunes: the first call per
key evaluates each config without a disk record (`records.py`), later calls look the
decision up. A host call tunes only when asked (``tune=True``: ranked by the static
performance report of a GPU, a prediction), because timing GPU tiles on the CPU backend
would measure the wrong machine. `method_for` is that rule; `call` runs a kernel with
it through one `Autotuned` per (kernel, config list, key).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tilelang.kernel import Kernel
from tilelang.tuning.tuner import Autotuned

#: What a library call's `tune=` may be; "model" only where the library can rank a
#: device call by the static model (`tilelang.quant.matmul`).
TUNE_VALUES = (None, False, True, "model")


def method_for(tune: Any, on_device: bool, allowed: Sequence[Any] = TUNE_VALUES) -> str | None:
    """The method, "gpu" or "model", a call with this `tune=` tunes by (on device
    tensors or host arrays), or None: it runs the default tiles and evaluates nothing."""
    if not any(tune is value or (isinstance(tune, str) and tune == value) for value in allowed):
        raise ValueError(
            "tune must be None (tune device calls), True (tune: measured on a GPU, "
            "the static model's prediction for host arrays), False (the default tiles)"
            + (" or 'model' (rank by the static model)" if "model" in allowed else "")
            + f", got {tune!r}"
        )
    if tune is False or os.environ.get("TILELANG_AUTOTUNE", "").lower() == "off":
        return None
    if tune == "model":
        return "model"
    if on_device:
        return "gpu"
    return "model" if tune is True else None


_TUNERS: dict[tuple, Autotuned] = {}


def tuner(kernel: Kernel, configs: Sequence[dict[str, Any]], key: Sequence[str]) -> Autotuned:
    """The `Autotuned` of `kernel` over `configs` (remembered: its in-memory decisions
    serve warm calls; its disk records are per config, shared by every list)."""
    memo = (id(kernel), repr(list(configs)), tuple(key))
    found = _TUNERS.get(memo)
    if found is None:
        found = _TUNERS[memo] = Autotuned(kernel, list(configs), tuple(key), progress=False)
    return found


def call(
    kernel: Kernel,
    args: Sequence[Any],
    fixed: dict[str, Any],
    configs: Sequence[dict[str, Any]],
    key: Sequence[str],
    tune: Any,
    on_device: bool,
) -> Any:
    """`kernel(*args, **fixed, **config)` with the config `method_for` asks for: the
    first (the library's default) or the tuned one."""
    if method_for(tune, on_device, (None, False, True)) is None:
        return kernel(*args, **fixed, **configs[0])
    return tuner(kernel, configs, key)(*args, **fixed)


__all__ = ["TUNE_VALUES", "call", "method_for", "tuner"]
