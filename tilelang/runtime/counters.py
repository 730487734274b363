"""Zeroed i32 counters for `tl.arrive`, kept per place and shape.

A kernel whose last block to arrive sets the counter back to zero leaves its counters
as it found them, so one set serves every launch of that shape on a device: made by
the first call (zeros on the tensor's torch device, or a `tilelang.DeviceBuffer`) and
never zeroed again, so a call adds no zeroing launch and a CUDA graph replays the
kernel alone. Launches on one stream run in order; two launches of one shape on two
streams at once would share the counters, which they must not. Host arrays (the CPU
backend, the interpreter) get new zeros every call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilelang.runtime import call_plans, gpu

_KEPT: dict[tuple, Any] = {}


def arrive_counters(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeroed i32 counters of `shape` where `like` lives (module docstring)."""
    shape = tuple(shape)
    if isinstance(like, np.ndarray):
        return np.zeros(shape, np.int32)
    torch_device = str(like.device) if gpu.is_torch_tensor(like) else None
    key = (torch_device, shape)
    if key not in _KEPT:
        if torch_device is not None:
            import torch  # deferred: optional; a torch tensor is at hand

            _KEPT[key] = torch.zeros(shape, dtype=torch.int32, device=like.device)
        else:
            _KEPT[key] = gpu.DeviceBuffer(np.zeros(shape, np.int32))
    return call_plans.kept(_KEPT[key])
