"""Inputs of `tilelang.quant` as numpy arrays, whether the caller passes numpy arrays or
torch tensors. torch is never imported here unless the caller hands over a tensor (so
`import tilelang.quant` works without it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tilelang import dtypes
from tilelang.dtypes import DType
from tilelang.runtime.gpu import is_torch_tensor

from .formats import SCALE_DTYPES


def _host(x: Any) -> Any:
    """A torch tensor detached and on the CPU; anything else unchanged."""
    return x.detach().cpu() if is_torch_tensor(x) else x


def float_matrix(x: Any, what: str = "w") -> np.ndarray:
    """A 2-D array of finite real numbers as a numpy float array: f16, f32 and f64 as
    they are, bf16 as f32 and integers as f64 (every value exact)."""
    x = _host(x)
    if is_torch_tensor(x):
        x = x.float().numpy() if str(x.dtype) == "torch.bfloat16" else x.numpy()
    array = np.asarray(x)
    if array.dtype.kind in "iub" or array.dtype.name == "bfloat16":
        array = array.astype(np.float64 if array.dtype.kind in "iub" else np.float32)
    if array.dtype.kind != "f":
        raise TypeError(f"{what} must be an array of real numbers, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D [K, N] matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{what} holds {array[bad]} at {bad}: only finite weights quantize")
    return array


def int_array(x: Any, what: str, ndim: int) -> np.ndarray:
    """An integer array of `ndim` dimensions, as it is (int32 words stay int32)."""
    x = _host(x)
    array = np.asarray(x.numpy() if is_torch_tensor(x) else x)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{what} must be an integer array, got {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {array.shape}")
    return array


def words32(x: Any, what: str) -> np.ndarray:
    """A 2-D array of 32-bit words (int32 or uint32 checkpoint tensors) as uint32."""
    array = int_array(x, what, 2)
    if array.dtype.itemsize != 4:
        raise TypeError(f"{what} must hold 32-bit words (int32), got {array.dtype}")
    return np.ascontiguousarray(array).view(np.uint32)


def float_codes(x: Any, what: str) -> tuple[np.ndarray, DType]:
    """A 2-D array of f16, bf16 or f32 numbers -> (its codes, its type), bit for bit."""
    x = _host(x)
    if is_torch_tensor(x):
        if str(x.dtype) == "torch.bfloat16":
            import torch  # a bf16 tensor was handed over, so torch is there

            return x.view(torch.int16).numpy().view(np.uint16), dtypes.bf16
        x = x.numpy()
    array = np.asarray(x)
    try:
        t = dtypes.dtype(array.dtype)
    except (TypeError, ValueError):
        t = None
    if t not in SCALE_DTYPES:
        names = ", ".join(map(str, SCALE_DTYPES))
        raise TypeError(f"{what} must be an array of {names}, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got shape {array.shape}")
    return np.ascontiguousarray(array).view(t.storage), t
